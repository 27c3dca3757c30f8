/*
 * keymap.h: an intrusive hash table keyed by byte strings, for the agent's
 * cache (entries by entry_id, selector index, JWT-SVIDs) and the rotation
 * scheduler (items by key).
 *
 * Intrusive: the caller embeds a struct ly_keymap_node in its own record,
 * points node->key at bytes the record owns (they must not change while the
 * node is in the map), and finds the record again with container_of
 * (LY_KEYMAP_ENTRY). The map allocates only its bucket array.
 *
 * Keys come from the server and from workloads, so the hash is SipHash-2-4
 * under a per-map random key (RAND_bytes): no one can pick keys that all
 * land in one bucket. Lookups compare the whole key (memcmp), never only
 * the hash.
 *
 * Ownership: struct ly_keymap is caller-owned (_init/_cleanup); cleanup
 * frees the buckets, never the nodes (the caller owns its records and
 * frees them, before or after). Not thread-safe: one map, one thread.
 */
#ifndef LANYARD_AGENT_KEYMAP_H
#define LANYARD_AGENT_KEYMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"

struct ly_keymap_node {
	struct ly_keymap_node *next;
	uint64_t hash;
	const uint8_t *key;
	size_t key_len;
};

struct ly_keymap {
	struct ly_keymap_node **buckets;
	size_t nbuckets; /* a power of two, or 0 before the first insert */
	size_t count;
	uint8_t sipkey[16];
};

/* The record that embeds `node` as member `member`. */
#define LY_KEYMAP_ENTRY(node, type, member) ((type *)(void *)((char *)(node) - offsetof(type, member)))

/* An empty map with a fresh random hash key. LY_E_CRYPTO when RAND_bytes fails. */
ly_status ly_keymap_init(struct ly_keymap *m, struct ly_error *err) LY_MUST_CHECK;
/* Frees the bucket array; the nodes are the caller's. Leaves the map empty. */
void ly_keymap_cleanup(struct ly_keymap *m);

/* The node with this key, or NULL. */
struct ly_keymap_node *ly_keymap_find(const struct ly_keymap *m, const void *key, size_t len);
/* Same, for a NUL-terminated key (the NUL is not part of the key). */
struct ly_keymap_node *ly_keymap_find_str(const struct ly_keymap *m, const char *key);

/*
 * Inserts `node`, whose key and key_len the caller has set. Refuses a key
 * already present (LY_E_INVALID) and may grow the table (LY_E_NOMEM: then
 * nothing changed).
 */
ly_status ly_keymap_insert(struct ly_keymap *m, struct ly_keymap_node *node, struct ly_error *err) LY_MUST_CHECK;
/* Removes `node`, which must be in `m`. */
void ly_keymap_remove(struct ly_keymap *m, struct ly_keymap_node *node);
/*
 * Points `node` (in `m`) at new key bytes equal to the old ones: for a
 * record that replaces the object owning its key (same bytes, new memory).
 */
void ly_keymap_rekey_same(struct ly_keymap_node *node, const uint8_t *key);

/* SipHash-2-4 of `len` bytes under the map's key (exposed for tests). */
uint64_t ly_keymap_hash(const struct ly_keymap *m, const void *key, size_t len);

#endif /* LANYARD_AGENT_KEYMAP_H */
