/*
 * keycount.h: how many live things each key holds, each key capped.
 *
 * The connection limits of rpc/ and agent/wapi.c count per key: calls per
 * peer connection and per peer address (gRPC's peer string), Workload API
 * connections per uid. A key is opaque bytes (at most LY_KEYCOUNT_KEY_MAX);
 * an entry exists while its count is above zero, so the table holds at most
 * one entry per live thing counted.
 *
 *   ly_keycount_take(t, key, len, max): count + 1, unless the key already
 *       holds `max` (LY_E_LIMIT, nothing changes) or memory runs out
 *       (LY_E_NOMEM);
 *   ly_keycount_give(t, key, len): count - 1; the entry goes at zero. A give
 *       without a take is a bug (logged by the caller: returns false).
 *
 * Chained hash table with FNV-1a, doubled when it holds more entries than
 * buckets. Pure: no gRPC, no libuv; one thread (the loop's).
 * ly_keycount_cleanup frees every entry.
 */
#ifndef LANYARD_RPC_KEYCOUNT_H
#define LANYARD_RPC_KEYCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"

#define LY_KEYCOUNT_KEY_MAX 128

struct ly_keycount_entry;

struct ly_keycount {
	struct ly_keycount_entry **buckets;
	size_t nbuckets; /* 0 or a power of two */
	size_t nentries;
};

#define LY_KEYCOUNT_INIT { NULL, 0, 0 }

void ly_keycount_cleanup(struct ly_keycount *t);

ly_status ly_keycount_take(struct ly_keycount *t, const void *key, size_t len, size_t max,
    struct ly_error *err) LY_MUST_CHECK;

bool ly_keycount_give(struct ly_keycount *t, const void *key, size_t len);

/* The key's count (0 when absent). */
size_t ly_keycount_get(const struct ly_keycount *t, const void *key, size_t len);

/*
 * The address part of gRPC's peer string, the key for per-address limits:
 * "ipv4:10.0.0.1:5000" -> "ipv4:10.0.0.1", "ipv6:[::1]:5000" -> "ipv6:[::1]";
 * anything else (no port: "unix:", "fd:12") is the whole string. *len is the
 * key's length within `peer`.
 */
void ly_keycount_peer_addr(const char *peer, size_t *len);

#endif /* LANYARD_RPC_KEYCOUNT_H */
