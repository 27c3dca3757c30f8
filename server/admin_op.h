/*
 * admin_op.h: one call of the Admin service (admin_api.c)
 * from start to answer, written once: the caller's check (SO_PEERCRED, a
 * uid of the server's or root's), the gRPC status of a failure, the audit
 * line of a change and the reply. Not for other modules.
 *
 * Ownership: the strings an op's audit line names (entry_id, spiffe_id,
 * trust_domain, note, secret) are borrowed, usually from the decoded
 * request in the same struct, and must live until the answer. Threads:
 * the loop thread.
 */
#ifndef LANYARD_SERVER_ADMIN_OP_H
#define LANYARD_SERVER_ADMIN_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/error.h"
#include "rpc/rpc.h"
#include "server/server.h"

/* One admin call in progress: what its audit line will say. */
struct admin_op {
	struct ly_server *srv;
	struct ly_rpc_call *call;
	const char *action;       /* NULL for reads: not audited */
	char caller[32];
	const char *entry_id;     /* borrowed, may be NULL */
	const char *spiffe_id;    /* borrowed, may be NULL */
	const char *trust_domain; /* borrowed, may be NULL: federation */
	const char *note;         /* borrowed, may be NULL: the audit detail of a success */
	const char *secret;       /* scrubbed from the audit line */
};

/*
 * Starts `op` for `call`: names the caller and refuses anyone but the
 * server's own uid and root, and every call while the server stops. false:
 * the call has ended (audited for changes).
 */
bool admin_op_begin(struct admin_op *op, struct ly_rpc_call *call, void *arg, const char *action);

/* The gRPC status of a failure `st` (the datastore's refusals by their message, datastore.h). */
enum ly_rpc_code admin_op_code(ly_status st, const struct ly_error *e);

/* Ends the call with an error; audited for changes. */
void admin_op_fail(struct admin_op *op, enum ly_rpc_code code, const char *msg);
void admin_op_fail_st(struct admin_op *op, ly_status st, const struct ly_error *e);

/* Packs `m`, audits success, and replies (flags: rpc.h, LY_RPC_WIPE for secrets). */
void admin_op_reply(struct admin_op *op, const ProtobufCMessage *m, unsigned flags);

#endif /* LANYARD_SERVER_ADMIN_OP_H */
