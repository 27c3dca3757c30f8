/*
 * admin_op.h: one call of the Admin service (admin_api.c, admin_api_fed.c)
 * from start to answer, written once: the caller's check (SO_PEERCRED, a
 * uid of the server's or root's), the gRPC status of a failure, the audit
 * line and shared audit row of a change, the reply, and the run of a
 * call's datastore part on the datastore's worker (datastore_async.h).
 * Not for other modules.
 *
 * A call with a datastore part is described by a struct admin_job and run
 * by admin_op_run; its handler is one line:
 *   loop    admin_op_new: the call's struct (job->size bytes, struct
 *           admin_op first) allocated and zeroed, the caller checked
 *           (refused: the call ends, audited for changes), job->init;
 *   loop    job->prep: decode and check the request into the struct
 *           (admin_msg.h); it ends the call itself on a refusal
 *           (admin_op_ok) and returns false;
 *   worker  job->work: the datastore part; touches only the struct. For
 *           a change (job->action set) it runs with the change's row of
 *           the shared audit trail armed, so that the row commits with
 *           its write (admin_audit.h);
 *   loop    job->reply: only when work succeeded; answers with
 *           admin_op_reply (or admin_op_fail). A failure of work, or a
 *           refusal to queue it (the message then ends "(not applied)"),
 *           is answered here: admin_op_fail_st.
 *   loop    job->release: frees the struct and everything it holds, once
 *           the loop and the worker let go (a call past its deadline may
 *           still run on the worker after its answer was sent).
 *
 * Ownership: the strings an op's audit line names (entry_id, spiffe_id,
 * trust_domain, note, secret) are borrowed, usually from the decoded
 * request in the same struct, and must live until the answer. Threads:
 * the loop thread, except job->work.
 */
#ifndef LANYARD_SERVER_ADMIN_OP_H
#define LANYARD_SERVER_ADMIN_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/error.h"
#include "rpc/rpc.h"
#include "server/datastore_async.h"
#include "server/datastore_audit.h"
#include "server/server.h"

struct admin_job;

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
	const struct admin_job *job; /* admin_op_new's calls: what they run */
	/* The shared trail's row, committed with the change (admin_audit.h): the worker's until `done`. */
	struct ly_ds_audit_txn txn;
	ly_dsa_work_fn *work;     /* the change's own work, under the audited work (admin_op_run) */
};

typedef bool admin_prep_fn(void *ctx, const uint8_t *req, size_t len);
typedef void admin_reply_fn(void *ctx);

/* A call with a datastore part (above). Static and const: every call of the method shares it. */
struct admin_job {
	const char *action;          /* the audit line's action; NULL for reads */
	bool variant;                /* for a prep that serves two methods (update, ban) */
	size_t size;                 /* of the call's struct, whose first member is struct admin_op */
	void (*init)(void *ctx);     /* once the caller passed; may be NULL */
	admin_prep_fn *prep;         /* NULL: the request is not read */
	ly_dsa_work_fn *work;
	admin_reply_fn *reply;
	ly_dsa_release_fn *release;
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

/* true when st is LY_OK; else ends the call (admin_op_fail_st with e) and returns false. For job->prep. */
bool admin_op_ok(struct admin_op *op, ly_status st, const struct ly_error *e);

/* Packs `m`, audits success, and replies (flags: rpc.h, LY_RPC_WIPE for secrets). */
void admin_op_reply(struct admin_op *op, const ProtobufCMessage *m, unsigned flags);

/* job's struct for `call`, begun (admin_op_begin); NULL with the call ended (refused caller, stopping, no memory). */
void *admin_op_new(const struct admin_job *job, struct ly_rpc_call *call, void *arg);

/* The whole call, as described above: a method's handler. */
void admin_op_run(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg, const struct admin_job *job);

#endif /* LANYARD_SERVER_ADMIN_OP_H */
