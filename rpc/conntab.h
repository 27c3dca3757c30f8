/*
 * conntab.h: which connection a call on a handed-over fd came from.
 *
 * lanyard-agent accepts Workload API connections itself (to read
 * SO_PEERCRED), then hands a duplicate fd N to gRPC core. Every call on that
 * connection reports the peer "fd:N" and nothing else, and gRPC closes N
 * itself, silently, so N is reused by the next accept. The table maps N to
 * the connection most recently registered under it:
 *
 *  - ly_conntab_put replaces an older entry under the same N and hands it
 *    back: the kernel only reuses N once gRPC closed it, so that older
 *    connection is dead and no call on it can ever be answered;
 *  - ly_conntab_remove removes an entry only if it is still the current one
 *    for N (a late hang-up of a dead connection never removes its
 *    successor).
 *
 * Entries are opaque pointers the caller owns; the table only stores them.
 * ly_conntab_cleanup frees the table's own array, not the entries.
 * Pure: no gRPC, no libuv.
 */
#ifndef LANYARD_RPC_CONNTAB_H
#define LANYARD_RPC_CONNTAB_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/error.h"

struct ly_conntab {
	void **slots;  /* indexed by fd */
	size_t size;   /* slots allocated */
	size_t count;  /* non-NULL slots */
};

#define LY_CONNTAB_INIT { NULL, 0, 0 }

void ly_conntab_init(struct ly_conntab *t);
void ly_conntab_cleanup(struct ly_conntab *t);

/*
 * Registers `conn` (non-NULL) under `fd`, which must be in
 * [0, LY_RPC_FD_MAX) (LY_E_LIMIT otherwise). *displaced receives the entry
 * it replaced, or NULL.
 */
ly_status ly_conntab_put(struct ly_conntab *t, int fd, void *conn, void **displaced,
    struct ly_error *err) LY_MUST_CHECK;

/* The current entry for `fd`, or NULL. */
void *ly_conntab_get(const struct ly_conntab *t, int fd);

/* Removes `conn` from `fd` if it is the current entry; returns whether it was. */
bool ly_conntab_remove(struct ly_conntab *t, int fd, const void *conn);

/*
 * Parses gRPC's peer string for a handed-over fd, exactly "fd:<N>" with N
 * in decimal, no sign, no leading zero, below LY_RPC_FD_MAX. Anything else
 * ("unix:", "ipv4:...", "fd:", "fd:007", "fd:1x") is LY_E_INVALID.
 */
ly_status ly_rpc_parse_fd_peer(const char *peer, int *fd, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_RPC_CONNTAB_H */
