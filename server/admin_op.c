/*
 * admin_op.c: one Admin call from start to answer (admin_op.h): the
 * caller's check, the status of a failure, the audit line, the reply, and
 * the run of a call's datastore part on the worker. Everything here runs
 * on the loop thread; it owns nothing beyond the call it is given.
 */
#include "server/admin_op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/log.h"
#include "server/admin_audit.h"
#include "server/audit.h"

enum ly_rpc_code
admin_op_code(ly_status st, const struct ly_error *e)
{
	switch (st) {
	case LY_OK:
		return LY_RPC_OK;
	case LY_E_INVALID:
		/* The datastore's refusal of a duplicate (datastore.h). */
		if (e != NULL && strncmp(e->msg, "entry already exists", 20) == 0)
			return LY_RPC_ALREADY_EXISTS;
		if (e != NULL && strncmp(e->msg, "federation relationship with ", 29) == 0 &&
		    strstr(e->msg, " already exists") != NULL)
			return LY_RPC_ALREADY_EXISTS;
		/* A bundle in use (bundle delete -mode restrict). */
		if (e != NULL && strstr(e->msg, "use -mode dissociate or delete") != NULL)
			return LY_RPC_FAILED_PRECONDITION;
		return LY_RPC_INVALID_ARGUMENT;
	case LY_E_LIMIT:
	case LY_E_UNSUPPORTED:
	case LY_E_UNTRUSTED:
		return LY_RPC_INVALID_ARGUMENT;
	case LY_E_NOT_FOUND:
		return LY_RPC_NOT_FOUND;
	case LY_E_EXPIRED:
		return LY_RPC_FAILED_PRECONDITION;
	case LY_E_NOMEM:
		return LY_RPC_RESOURCE_EXHAUSTED;
	case LY_E_IO:
		return LY_RPC_UNAVAILABLE;
	default:
		return LY_RPC_INTERNAL;
	}
}

static void
op_audit(struct admin_op *op, const char *result, const char *detail)
{
	struct ly_error e;

	if (op->action == NULL)
		return;
	struct ly_audit_record rec = {
		.caller = op->caller,
		.action = op->action,
		.entry_id = op->entry_id,
		.spiffe_id = op->spiffe_id,
		.trust_domain = op->trust_domain,
		.result = result,
		.detail = detail,
		.secret = op->secret,
	};
	if (op->srv->audit != NULL && ly_audit_write(op->srv->audit, &rec, ly_server_now(), &e) != LY_OK)
		log_error("audit line for %s not written: %s", op->action, e.msg);
	/* Not committed with a change (a refusal, or no datastore write): a row of its own. */
	if (!__atomic_load_n(&op->txn.stored, __ATOMIC_ACQUIRE))
		ly_admin_audit_store(op->srv, &rec, ly_server_now());
}

/* Worker: a change's work with its shared audit row armed, so that the row commits with the write. */
static ly_status
audited_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct admin_op *op = ctx; /* the first member of the call's struct */

	op->txn.rec = (struct ly_audit_record){ .caller = op->caller, .action = op->action, .entry_id = op->entry_id,
		.spiffe_id = op->spiffe_id, .trust_domain = op->trust_domain, .result = "ok", .detail = op->note,
		.secret = op->secret };
	return ly_admin_audit_run(&op->txn, op->work, ds, ctx, err);
}

/* The work to submit for `op`: a change's under audited_work, a read's as it is. Loop thread. */
static ly_dsa_work_fn *
op_audited(struct admin_op *op, ly_dsa_work_fn *work)
{
	if (op->action == NULL)
		return work;
	op->work = work;
	op->txn.server = ly_admin_audit_server(op->srv);
	op->txn.time = (int64_t)ly_server_now();
	return audited_work;
}

/* Ends the call with an error; audited for changes. */
void
admin_op_fail(struct admin_op *op, enum ly_rpc_code code, const char *msg)
{
	char clean[LY_ERROR_MSG_MAX];

	op_audit(op, ly_rpc_code_str(code), msg);
	if (op->action != NULL) {
		ly_audit_scrub(msg, op->secret, clean, sizeof(clean));
		log_debug("admin %s by %s refused: %s: %s", op->action, op->caller, ly_rpc_code_str(code), clean);
	}
	ly_rpc_call_finish(op->call, code, msg);
}

void
admin_op_fail_st(struct admin_op *op, ly_status st, const struct ly_error *e)
{
	admin_op_fail(op, admin_op_code(st, e), e->msg);
}

/* Packs `m`, audits success, and replies. */
void
admin_op_reply(struct admin_op *op, const ProtobufCMessage *m, unsigned flags)
{
	struct ly_error e;
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf;

	if (n > LY_RPC_MSG_MAX) {
		/* Only a list can be this big; nothing was changed. */
		admin_op_fail(op, LY_RPC_RESOURCE_EXHAUSTED, "response over the message size cap: narrow the filter");
		return;
	}
	buf = malloc(n > 0 ? n : 1);
	if (buf == NULL) {
		admin_op_fail(op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	(void)protobuf_c_message_pack(m, buf);
	op_audit(op, "ok", op->note);
	if (op->action != NULL)
		log_debug("admin %s by %s: ok%s%s", op->action, op->caller, op->entry_id != NULL ? ", entry_id=" : "",
		    op->entry_id != NULL ? op->entry_id : "");
	if (ly_rpc_call_reply(op->call, buf, n, flags, &e) != LY_OK)
		log_warn("admin %s: reply not sent: %s", ly_rpc_call_method(op->call), e.msg);
	if ((flags & LY_RPC_WIPE) != 0)
		OPENSSL_cleanse(buf, n);
	free(buf);
}

/*
 * Starts an op: names the caller and refuses anyone but the server's own
 * uid and root (root passes file modes anyway; refusing it would protect
 * nothing). Without peer credentials the socket's 0700 directory is the
 * only control and the caller is "admin-socket".
 */
bool
admin_op_begin(struct admin_op *op, struct ly_rpc_call *call, void *arg, const char *action)
{
	const struct ly_admin_peer *peer = ly_rpc_call_conn_ctx(call);

	memset(op, 0, sizeof(*op));
	op->srv = arg;
	op->call = call;
	op->action = action;
	if (peer == NULL) {
		(void)snprintf(op->caller, sizeof(op->caller), "admin-socket");
		return true;
	}
	(void)snprintf(op->caller, sizeof(op->caller), "uid:%u", (unsigned)peer->uid);
	if (peer->uid != geteuid() && peer->uid != 0) {
		char msg[128];
		(void)snprintf(msg, sizeof(msg), "uid %u may not use the admin API of a server running as uid %u",
		    (unsigned)peer->uid, (unsigned)geteuid());
		admin_op_fail(op, LY_RPC_PERMISSION_DENIED, msg);
		return false;
	}
	if (op->srv->stopping) {
		admin_op_fail(op, LY_RPC_UNAVAILABLE, "server is shutting down");
		return false;
	}
	return true;
}

bool
admin_op_ok(struct admin_op *op, ly_status st, const struct ly_error *e)
{
	if (st == LY_OK)
		return true;
	admin_op_fail_st(op, st, e);
	return false;
}

void *
admin_op_new(const struct admin_job *job, struct ly_rpc_call *call, void *arg)
{
	struct admin_op *op = calloc(1, job->size);

	if (op == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return NULL;
	}
	if (!admin_op_begin(op, call, arg, job->action)) {
		free(op);
		return NULL;
	}
	op->job = job;
	if (job->init != NULL)
		job->init(op);
	return op;
}

/* The worker's answer: a failure answered here, a success by the job. */
static void
op_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct admin_op *op = ctx;

	if (st != LY_OK) {
		admin_op_fail_st(op, st, err);
		return;
	}
	op->job->reply(ctx);
}

void
admin_op_run(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg, const struct admin_job *job)
{
	struct admin_op *op = admin_op_new(job, call, arg);
	struct ly_error e;
	ly_status st;

	if (op == NULL)
		return;
	if (job->prep != NULL && !job->prep(op, req, len)) {
		job->release(op);
		return;
	}
	if ((st = ly_dsa_submit(op->srv->dsa, op_audited(op, job->work), op_done, job->release, op, 0, &e)) != LY_OK) {
		/* Nothing was sent to the datastore: nothing applied, and the message says so. */
		struct ly_error e2;
		(void)ly_error_set(&e2, st, "%s (not applied)", e.msg);
		/* A full queue is the server's load, not the request's fault. */
		admin_op_fail(op, st == LY_E_LIMIT ? LY_RPC_RESOURCE_EXHAUSTED : admin_op_code(st, &e2), e2.msg);
		job->release(op);
	}
}
