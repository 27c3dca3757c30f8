/*
 * internal.h: gRPC-only helpers of lanyard_rpc (no libuv here): messages
 * between grpc_byte_buffer and contiguous bytes, and the TLS credentials of
 * listeners and channels. Used by bridge.c; not part of the public API.
 */
#ifndef LANYARD_RPC_INTERNAL_H
#define LANYARD_RPC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "lib/error.h"
#include "rpc/rpc.h"

/* ---- messages (msg.c) ---- */

/*
 * A new byte buffer holding a copy of `data` (at most `cap` bytes, itself at
 * most LY_RPC_RESPONSE_MAX: LY_E_LIMIT). With LY_RPC_WIPE the copy is
 * ours and wiped when gRPC releases it (gRPC's own frame and TLS record
 * buffers are out of our reach). Free with grpc_byte_buffer_destroy.
 */
ly_status ly_rpc_msg_to_bb(const uint8_t *data, size_t len, size_t cap, unsigned flags,
    grpc_byte_buffer **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Copies a received message into one malloc'd buffer (*out, *len; at least
 * one byte allocated), refusing more than `cap` bytes (LY_E_LIMIT). Free
 * with ly_rpc_msg_free, which wipes it.
 */
ly_status ly_rpc_msg_from_bb(grpc_byte_buffer *bb, size_t cap, uint8_t **out, size_t *len,
    struct ly_error *err) LY_MUST_CHECK;
void ly_rpc_msg_free(uint8_t *data, size_t len);

/* ---- listener TLS (creds.c) ---- */

/*
 * A listener's certificate, key and client roots, handed to gRPC through a
 * certificate-config fetcher that gRPC calls at each new handshake, on its
 * own threads: the state is locked, and a new config is given only when
 * its generation changed.
 */
struct ly_rpc_tls_state;

ly_status ly_rpc_tls_state_new(const struct ly_rpc_tls_server *tls,
    struct ly_rpc_tls_state **out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_rpc_tls_state_set(struct ly_rpc_tls_state *st, const struct ly_rpc_tls_server *tls,
    struct ly_error *err) LY_MUST_CHECK;
void ly_rpc_tls_state_free(struct ly_rpc_tls_state *st);
/*
 * Puts `st` on `*list` instead of freeing it: gRPC gives no hook for when
 * it stops calling the fetcher (a handshake that began before the server
 * went away may still call it), so states live until after grpc_shutdown,
 * where ly_rpc_tls_state_free_list frees them.
 */
void ly_rpc_tls_state_retire(struct ly_rpc_tls_state *st, struct ly_rpc_tls_state **list);
void ly_rpc_tls_state_free_list(struct ly_rpc_tls_state *list);
/* New server credentials reading `st` (which must outlive them). */
grpc_server_credentials *ly_rpc_tls_server_creds(struct ly_rpc_tls_state *st);

/* ---- channel TLS (creds.c) ---- */

/*
 * The external verifier's state, shared by gRPC (released by its destruct
 * hook) and the channel (released by ly_rpc_verifier_disarm, after which
 * the caller's callback is never called again).
 */
struct ly_rpc_verifier;

ly_status ly_rpc_tls_client_creds(const struct ly_rpc_tls_client *tls,
    grpc_channel_credentials **creds, struct ly_rpc_verifier **verifier,
    struct ly_error *err) LY_MUST_CHECK;
void ly_rpc_verifier_disarm(struct ly_rpc_verifier *v);

#endif /* LANYARD_RPC_INTERNAL_H */
