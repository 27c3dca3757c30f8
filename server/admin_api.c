/*
 * admin_api.c: the Admin service (proto/admin.proto, lanyard.admin.v1.Admin)
 * on the server's Unix socket: what the CLI verbs of SPEC §2 call.
 *
 * Every handler runs on the loop thread (rpc.h), decodes one request and
 * checks it completely (server/admin_msg.c) before touching the
 * datastore; the datastore part runs on its worker (datastore_async.h: a
 * `*_work` function over the call's struct aop, which owns the request;
 * the steps of such a call are admin_op.h's, run by admin_op_run), and the
 * answer is sent from its completion on the loop, with a gRPC status from
 * the standard set and a one-line message:
 *   INVALID_ARGUMENT   malformed request, invalid entry, bad TTL, foreign
 *                      trust domain (ly_entry_validate, SPIFFE-ID §2)
 *   ALREADY_EXISTS     an entry with the same identity or entry ID
 *   NOT_FOUND          unknown entry ID or agent
 *   PERMISSION_DENIED  a caller of another uid (server.h ly_admin_peer)
 *   FAILED_PRECONDITION join tokens asked for with join_token disabled
 *   UNAVAILABLE        the datastore failed or did not answer within its
 *                      deadline (LY_DSA_DEADLINE_MS); the message says
 *                      whether a change may still be applied
 *                      (datastore_async.h: a write already running when
 *                      the deadline passed may commit later; one still
 *                      queued never runs)
 *   INTERNAL           a bug, or an encoding failure
 * Each change (create, update, delete, token, evict, ban; federation:
 * bundle.set, bundle.delete, federation.create|update|delete|refresh),
 * accepted or refused, writes one audit line (audit.h) before the answer
 * is sent, and one row of the shared audit trail in the datastore
 * (admin_audit.h): committed with the change itself when the change is a
 * datastore write, a write of its own otherwise (refusals). The caller's
 * check, the status, the audit line and row, and the reply of every call
 * are admin_op.c's. Federation's methods (SPEC §9) are
 * admin_api_fed.c's (admin_api_fed.h); this file lists them in the
 * method table.
 * Accepted entry and agent changes reach the agent side through the
 * datastore's change hook (datastore.h): this file does not call it.
 * Reads (ListEntries, GetBundle, ListAgents, Health, the federation
 * lists, count and show, ListAuditLines) are not audited.
 * No token, key or SVID ever reaches a log or audit line.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/log.h"
#include "lib/pbview.h"
#include "lib/spiffeid.h"
#include "rpc/rpc.h"
#include "server/admin_audit.h"
#include "server/admin_msg.h"
#include "server/admin_msg_audit.h"
#include "server/admin_api_fed.h"
#include "server/admin_op.h"
#include "server/attest.h"
#include "server/bundle_pb.h"
#include "server/ca.h"
#include "server/datastore.h"
#include "server/datastore_async.h"
#include "server/entry_pb.h"
#include "server/server.h"

/* Bytes of randomness in a join token; it is sent as lower-case hex. */
#define TOKEN_BYTES 32

/* ---- entries <-> protobuf: server/entry_pb.h ------------------------------ */

static void
reply_entry(struct admin_op *op, const struct ly_entry *e)
{
	struct ly_entries_pb pb;
	struct ly_error err;
	ly_status st = ly_entries_pb_make(&e, 1, &pb, &err);

	if (st != LY_OK) {
		admin_op_fail_st(op, st, &err);
		return;
	}
	admin_op_reply(op, &pb.msgs[0].base, 0);
	ly_entries_pb_cleanup(&pb);
}

/* ---- calls on the datastore's worker (admin_op.h) ---------------------------- */

/*
 * One admin call with a datastore part: `op` (its audit line borrows
 * strings from the request below), the decoded request, and what the
 * worker reads or writes. Freed by aop_release once both the loop and the
 * worker are done with it (datastore_async.h).
 */
struct aop {
	struct admin_op op; /* first: admin_op_run and its audited work find it at ctx */
	bool update, ban;
	struct ly_admin_msg_entry entry_rq;
	struct ly_admin_msg_entry_id id_rq;
	struct ly_admin_msg_filter filter_rq;
	struct ly_admin_msg_token token_rq;
	struct ly_admin_msg_agent_id agent_rq;
	bool has_entry_rq, has_id_rq, has_filter_rq, has_token_rq, has_agent_rq;
	struct ly_entry *entry;           /* create/update: in and out; delete: the deleted one */
	struct ly_entry *before;          /* delete: the entry read first, for the audit row */
	struct ly_entry_list list;
	struct ly_ds_agent_list agents;
	struct ly_ds_agent *agent;
	char token[2 * TOKEN_BYTES + 1];  /* wiped */
	struct ly_spiffe_id id;
	int64_t expires_at;
	int64_t revision;
};

_Static_assert(offsetof(struct aop, op) == 0, "admin_op_run finds the op at ctx");

static void
aop_init(void *ctx)
{
	struct aop *a = ctx;

	a->list = (struct ly_entry_list)LY_ENTRY_LIST_INIT;
	a->agents = (struct ly_ds_agent_list)LY_DS_AGENT_LIST_INIT;
}

static void
aop_release(void *ctx)
{
	struct aop *a = ctx;

	if (a->has_entry_rq)
		ly_admin_msg_entry_cleanup(&a->entry_rq);
	if (a->has_id_rq)
		ly_admin_msg_entry_id_cleanup(&a->id_rq);
	if (a->has_filter_rq)
		ly_admin_msg_filter_cleanup(&a->filter_rq);
	if (a->has_token_rq)
		ly_admin_msg_token_cleanup(&a->token_rq);
	if (a->has_agent_rq)
		ly_admin_msg_agent_id_cleanup(&a->agent_rq);
	ly_entry_free(a->entry);
	ly_entry_free(a->before);
	ly_entry_list_cleanup(&a->list);
	ly_ds_agent_list_cleanup(&a->agents);
	ly_ds_agent_free(a->agent);
	OPENSSL_cleanse(a->token, sizeof(a->token));
	OPENSSL_cleanse(&a->id, sizeof(a->id));
	free(a);
}

/* A method of this file: its audit action, variant (update, ban) and steps (admin_op.h). */
#define AOP_JOB(action_, variant_, prep_, work_, reply_)                                                           \
	{ .action = (action_), .variant = (variant_), .size = sizeof(struct aop), .init = aop_init, .prep = (prep_), \
		.work = (work_), .reply = (reply_), .release = aop_release }

/* ---- entries --------------------------------------------------------------- */

/* CreateEntry and UpdateEntry: the same checks (admin_msg.h), then the datastore. */
static bool
put_entry_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct aop *a = ctx;
	struct ly_error e;

	a->update = a->op.job->variant;
	if (!admin_op_ok(&a->op, ly_admin_msg_entry_decode(req, len, &a->entry_rq, &e), &e))
		return false;
	a->has_entry_rq = true;
	a->op.entry_id = a->entry_rq.entry_id;
	a->op.spiffe_id = a->entry_rq.spiffe_id;
	if (!admin_op_ok(&a->op,
		ly_admin_msg_entry_check(&a->entry_rq, a->update, a->op.srv->cfg.trust_domain, &a->entry, &e), &e))
		return false;
	/* A created entry's generated ID, for the audit row that commits with it. */
	a->op.txn.entry_id_ref = &a->entry->entry_id;
	return true;
}

static ly_status
put_entry_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct aop *a = ctx;

	return a->update ? ly_datastore_entry_update(ds, a->entry, err) : ly_datastore_entry_create(ds, a->entry, err);
}

static void
put_entry_reply(void *ctx)
{
	struct aop *a = ctx;

	a->op.entry_id = a->entry->entry_id;
	reply_entry(&a->op, a->entry);
}

static void
h_create_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB("entry.create", false, put_entry_prep, put_entry_work,
	    put_entry_reply);
	admin_op_run(call, req, len, arg, &job);
}

static void
h_update_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB("entry.update", true, put_entry_prep, put_entry_work,
	    put_entry_reply);
	admin_op_run(call, req, len, arg, &job);
}

static bool
delete_entry_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct aop *a = ctx;
	struct ly_error e;

	if (!admin_op_ok(&a->op, ly_admin_msg_entry_id_decode(req, len, &a->id_rq, &e), &e))
		return false;
	a->has_id_rq = true;
	a->op.entry_id = a->id_rq.entry_id;
	return admin_op_ok(&a->op, ly_admin_msg_delete_check(&a->id_rq, &e), &e);
}

static ly_status
delete_entry_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct aop *a = ctx;

	/* Its SPIFFE ID for the audit row that commits with the delete (not found: the delete says so). */
	if (ly_datastore_entry_get(ds, a->id_rq.entry_id, &a->before, NULL) == LY_OK)
		a->op.txn.rec.spiffe_id = a->before->spiffe_id;
	return ly_datastore_entry_delete(ds, a->id_rq.entry_id, &a->entry, err);
}

static void
delete_entry_reply(void *ctx)
{
	struct aop *a = ctx;

	a->op.spiffe_id = a->entry->spiffe_id;
	reply_entry(&a->op, a->entry);
}

static void
h_delete_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB("entry.delete", false, delete_entry_prep, delete_entry_work,
	    delete_entry_reply);
	admin_op_run(call, req, len, arg, &job);
}

static bool
list_entries_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct aop *a = ctx;
	struct ly_error e;

	if (!admin_op_ok(&a->op, ly_admin_msg_filter_decode(req, len, &a->filter_rq, &e), &e))
		return false;
	a->has_filter_rq = true;
	return true;
}

static ly_status
list_entries_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct aop *a = ctx;
	struct ly_entry *one = NULL;
	ly_status st;

	if (a->filter_rq.entry_id == NULL)
		return ly_datastore_entry_list(ds, &a->filter_rq.filter, &a->list, err);
	LY_TRY(ly_datastore_entry_get(ds, a->filter_rq.entry_id, &one, err));
	if ((st = ly_entry_list_append(&a->list, one, err)) != LY_OK)
		ly_entry_free(one);
	return st;
}

static void
list_entries_reply(void *ctx)
{
	struct aop *a = ctx;
	struct ly_entries_pb pbs;
	Lanyard__Admin__V1__EntryList out;
	struct ly_error e;
	ly_status st;

	memset(&pbs, 0, sizeof(pbs));
	if ((st = ly_entries_pb_make((const struct ly_entry *const *)a->list.items, a->list.n, &pbs, &e)) != LY_OK) {
		admin_op_fail_st(&a->op, st, &e);
		goto out;
	}
	lanyard__admin__v1__entry_list__init(&out);
	out.n_entries = pbs.n;
	out.entries = pbs.ptrs;
	admin_op_reply(&a->op, &out.base, 0);
out:
	ly_entries_pb_cleanup(&pbs);
}

static void
h_list_entries(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB(NULL, false, list_entries_prep, list_entries_work,
	    list_entries_reply);
	admin_op_run(call, req, len, arg, &job);
}

/* ---- join tokens ------------------------------------------------------------ */

static bool
token_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct aop *a = ctx;
	struct ly_error e;
	uint8_t rnd[TOKEN_BYTES];
	int64_t ttl;

	if (!admin_op_ok(&a->op, ly_admin_msg_token_decode(req, len, &a->token_rq, &e), &e))
		return false;
	a->has_token_rq = true;
	a->op.spiffe_id = a->token_rq.spiffe_id;
	if (!a->op.srv->cfg.join_token_enabled) {
		admin_op_fail(&a->op, LY_RPC_FAILED_PRECONDITION, "join_token node attestation is not enabled on this server");
		return false;
	}
	if (!admin_op_ok(&a->op, ly_admin_msg_token_ttl(&a->token_rq, &ttl, &e), &e))
		return false;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		admin_op_fail(&a->op, LY_RPC_INTERNAL, "no random bytes for a token");
		return false;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		(void)snprintf(a->token + 2 * i, 3, "%02x", rnd[i]);
	OPENSSL_cleanse(rnd, sizeof(rnd));
	a->op.secret = a->token;
	if (!admin_op_ok(&a->op, ly_admin_msg_token_id(&a->token_rq, a->op.srv->cfg.trust_domain, a->token, &a->id, &e),
		&e))
		return false;
	a->op.spiffe_id = a->id.id;
	a->expires_at = (int64_t)ly_server_now() + ttl;
	return true;
}

static ly_status
token_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct aop *a = ctx;

	return ly_datastore_token_create(ds, a->token, a->id.id, a->expires_at, err);
}

static void
token_reply(void *ctx)
{
	struct aop *a = ctx;
	Lanyard__Admin__V1__Token out;

	lanyard__admin__v1__token__init(&out);
	out.token = a->token;
	out.spiffe_id = a->id.id;
	out.expires_at = a->expires_at;
	admin_op_reply(&a->op, &out.base, LY_RPC_WIPE);
}

static void
h_generate_token(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB("token.generate", false, token_prep, token_work, token_reply);
	admin_op_run(call, req, len, arg, &job);
}

/* ---- bundle ------------------------------------------------------------------- */

static void
h_get_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct admin_op op;
	const struct ly_bundle *b;
	struct ly_bundle_pb pb;
	struct ly_error e;
	ly_status rc;

	if (!admin_op_begin(&op, call, arg, NULL))
		return;
	b = ly_server_bundle(op.srv);
	if (b == NULL) {
		admin_op_fail(&op, LY_RPC_UNAVAILABLE, "the CA has no bundle yet");
		return;
	}
	if ((rc = ly_bundle_pb_make(b, &pb, &e)) != LY_OK) {
		if (rc == LY_E_NOMEM)
			admin_op_fail(&op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		else
			admin_op_fail(&op, LY_RPC_INTERNAL, "cannot encode a JWT authority's public key");
		return;
	}
	admin_op_reply(&op, &pb.msg.base, 0);
	ly_bundle_pb_cleanup(&pb);
}

/* ---- agents -------------------------------------------------------------------- */

struct agent_pb {
	Lanyard__Admin__V1__Agent m;
	struct ly_selectors_pb sel;
};

static void
agent_pb_cleanup(struct agent_pb *pb)
{
	ly_selectors_pb_cleanup(&pb->sel);
}

static ly_status
agent_pb_init(struct agent_pb *pb, const struct ly_ds_agent *a, struct ly_error *err)
{
	memset(pb, 0, sizeof(*pb));
	lanyard__admin__v1__agent__init(&pb->m);
	LY_TRY(ly_selectors_pb_make(a->selectors, a->n_selectors, &pb->sel, err));
	pb->m.spiffe_id = ly_pbview_str_or_empty(a->spiffe_id);
	pb->m.attestation_type = ly_pbview_str_or_empty(a->attestation_type);
	pb->m.serial_number = ly_pbview_str_or_empty(a->serial_number);
	pb->m.expires_at = a->svid_expires_at;
	pb->m.banned = a->banned;
	pb->m.n_selectors = a->n_selectors;
	pb->m.selectors = pb->sel.ptrs;
	return LY_OK;
}

static ly_status
list_agents_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct aop *a = ctx;

	return ly_datastore_agent_list(ds, &a->agents, err);
}

static void
list_agents_reply(void *ctx)
{
	struct aop *a = ctx;
	struct ly_ds_agent_list *list = &a->agents;
	struct agent_pb *pbs = NULL;
	Lanyard__Admin__V1__Agent **ptrs = NULL;
	Lanyard__Admin__V1__AgentList out;
	struct ly_error e;
	size_t n_pbs = 0;
	ly_status st;

	if (list->n > 0) {
		pbs = calloc(list->n, sizeof(*pbs));
		ptrs = calloc(list->n, sizeof(*ptrs));
		if (pbs == NULL || ptrs == NULL) {
			admin_op_fail(&a->op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
			goto out;
		}
	}
	for (; n_pbs < list->n; n_pbs++) {
		if ((st = agent_pb_init(&pbs[n_pbs], list->items[n_pbs], &e)) != LY_OK) {
			admin_op_fail_st(&a->op, st, &e);
			goto out;
		}
		ptrs[n_pbs] = &pbs[n_pbs].m;
	}
	lanyard__admin__v1__agent_list__init(&out);
	out.n_agents = list->n;
	out.agents = ptrs;
	admin_op_reply(&a->op, &out.base, 0);
out:
	for (size_t i = 0; i < n_pbs; i++)
		agent_pb_cleanup(&pbs[i]);
	free(pbs);
	free(ptrs);
}

static void
h_list_agents(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB(NULL, false, NULL, list_agents_work, list_agents_reply);
	admin_op_run(call, req, len, arg, &job);
}

/* EvictAgent and BanAgent. */
static bool
remove_agent_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct aop *a = ctx;
	struct ly_error e;

	a->ban = a->op.job->variant;
	if (!admin_op_ok(&a->op, ly_admin_msg_agent_id_decode(req, len, &a->agent_rq, &e), &e))
		return false;
	a->has_agent_rq = true;
	a->op.spiffe_id = a->agent_rq.spiffe_id;
	return admin_op_ok(&a->op, ly_admin_msg_agent_id_check(&a->agent_rq, &e), &e);
}

/* Ban: the flag, then the record; evict: the record, then its deletion (the hook ends its streams). */
static ly_status
remove_agent_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct aop *a = ctx;
	const char *id = a->agent_rq.spiffe_id;

	if (a->ban) {
		LY_TRY(ly_datastore_agent_set_banned(ds, id, true, err));
		return ly_datastore_agent_get(ds, id, &a->agent, err);
	}
	LY_TRY(ly_datastore_agent_get(ds, id, &a->agent, err));
	return ly_datastore_agent_delete(ds, id, err);
}

static void
remove_agent_reply(void *ctx)
{
	struct aop *a = ctx;
	struct agent_pb pb;
	struct ly_error e;
	ly_status st;

	if ((st = agent_pb_init(&pb, a->agent, &e)) != LY_OK) {
		admin_op_fail_st(&a->op, st, &e);
		return;
	}
	admin_op_reply(&a->op, &pb.m.base, 0);
	agent_pb_cleanup(&pb);
}

static void
h_evict_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB("agent.evict", false, remove_agent_prep, remove_agent_work,
	    remove_agent_reply);
	admin_op_run(call, req, len, arg, &job);
}

static void
h_ban_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB("agent.ban", true, remove_agent_prep, remove_agent_work,
	    remove_agent_reply);
	admin_op_run(call, req, len, arg, &job);
}

/* ---- health ---------------------------------------------------------------------- */

static ly_status
health_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct aop *a = ctx;

	return ly_datastore_revision(ds, &a->revision, err);
}

/* The answer; `ds_err` NULL when the datastore answered. */
static void
health_reply(struct admin_op *op, const struct ly_error *ds_err)
{
	Lanyard__Admin__V1__HealthResponse out;
	char detail[LY_ERROR_MSG_MAX + 32];

	lanyard__admin__v1__health_response__init(&out);
	out.serving = false;
	if (op->srv->stopping) {
		(void)snprintf(detail, sizeof(detail), "shutting down");
	} else if (ds_err != NULL) {
		(void)snprintf(detail, sizeof(detail), "datastore: %s", ds_err->msg);
	} else if (op->srv->ca == NULL || ly_server_bundle(op->srv) == NULL) {
		(void)snprintf(detail, sizeof(detail), "CA not ready");
	} else {
		out.serving = true;
		(void)snprintf(detail, sizeof(detail), "ok");
	}
	out.detail = detail;
	admin_op_reply(op, &out.base, 0);
}

static void
health_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct aop *a = ctx;

	health_reply(&a->op, st != LY_OK ? err : NULL);
}

/* Not admin_op_run: a datastore that fails or refuses is part of the answer, not the call's failure. */
static void
h_health(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = AOP_JOB(NULL, false, NULL, health_work, NULL);
	struct aop *a;
	struct ly_error e;

	if ((a = admin_op_new(&job, call, arg)) == NULL)
		return;
	if (ly_dsa_submit(a->op.srv->dsa, health_work, health_done, aop_release, a, 0, &e) != LY_OK) {
		health_reply(&a->op, &e);
		aop_release(a);
	}
}

/* ---- the shared audit trail (admin_audit.h) ---------------------------------------- */

/*
 * Not admin_op_run: a refusal to queue the read is answered with the
 * datastore's message alone (a read applies nothing).
 */
struct audit_op {
	struct admin_op op; /* a read: not audited itself */
	struct ly_admin_msg_audit_list rq;
	struct ly_ds_audit_list rows; /* the worker's: read on the loop only when the call succeeded */
};

static void
audit_op_release(void *ctx)
{
	struct audit_op *q = ctx;

	ly_ds_audit_list_cleanup(&q->rows);
	free(q);
}

static ly_status
list_audit_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct audit_op *q = ctx;

	return ly_datastore_audit_list(ds, q->rq.since, q->rq.limit, &q->rows, err);
}

static void
list_audit_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct audit_op *q = ctx;
	struct ly_admin_msg_audit_reply r;
	struct ly_error e;

	if (st != LY_OK) {
		admin_op_fail_st(&q->op, st, err);
		return;
	}
	if ((st = ly_admin_msg_audit_reply(&q->rows, &r, &e)) != LY_OK) {
		admin_op_fail_st(&q->op, st, &e);
		return;
	}
	admin_op_reply(&q->op, &r.msg.base, 0);
	ly_admin_msg_audit_reply_cleanup(&r);
}

static void
h_list_audit(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct audit_op *q = calloc(1, sizeof(*q));
	struct ly_error e;
	ly_status st;

	if (q == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	if (!admin_op_begin(&q->op, call, arg, NULL)) {
		free(q);
		return;
	}
	q->rows = (struct ly_ds_audit_list)LY_DS_AUDIT_LIST_INIT;
	if ((st = ly_admin_msg_audit_list_decode(req, len, &q->rq, &e)) != LY_OK) {
		admin_op_fail_st(&q->op, st, &e);
		free(q);
		return;
	}
	if ((st = ly_dsa_submit(q->op.srv->dsa, list_audit_work, list_audit_done, audit_op_release, q, 0, &e)) !=
	    LY_OK) {
		admin_op_fail(&q->op, st == LY_E_LIMIT ? LY_RPC_RESOURCE_EXHAUSTED : admin_op_code(st, &e), e.msg);
		free(q);
	}
}

static const struct ly_rpc_method admin_methods[] = {
	{ "/lanyard.admin.v1.Admin/CreateEntry", LY_RPC_UNARY, h_create_entry },
	{ "/lanyard.admin.v1.Admin/UpdateEntry", LY_RPC_UNARY, h_update_entry },
	{ "/lanyard.admin.v1.Admin/DeleteEntry", LY_RPC_UNARY, h_delete_entry },
	{ "/lanyard.admin.v1.Admin/ListEntries", LY_RPC_UNARY, h_list_entries },
	{ "/lanyard.admin.v1.Admin/GenerateToken", LY_RPC_UNARY, h_generate_token },
	{ "/lanyard.admin.v1.Admin/GetBundle", LY_RPC_UNARY, h_get_bundle },
	{ "/lanyard.admin.v1.Admin/ListAgents", LY_RPC_UNARY, h_list_agents },
	{ "/lanyard.admin.v1.Admin/EvictAgent", LY_RPC_UNARY, h_evict_agent },
	{ "/lanyard.admin.v1.Admin/BanAgent", LY_RPC_UNARY, h_ban_agent },
	{ "/lanyard.admin.v1.Admin/Health", LY_RPC_UNARY, h_health },
	{ "/lanyard.admin.v1.Admin/SetFederatedBundle", LY_RPC_UNARY, admin_api_fed_set_bundle },
	{ "/lanyard.admin.v1.Admin/ListFederatedBundles", LY_RPC_UNARY, admin_api_fed_list_bundles },
	{ "/lanyard.admin.v1.Admin/DeleteFederatedBundle", LY_RPC_UNARY, admin_api_fed_delete_bundle },
	{ "/lanyard.admin.v1.Admin/CountFederatedBundles", LY_RPC_UNARY, admin_api_fed_count_bundles },
	{ "/lanyard.admin.v1.Admin/CreateFederationRelationship", LY_RPC_UNARY, admin_api_fed_create_rel },
	{ "/lanyard.admin.v1.Admin/UpdateFederationRelationship", LY_RPC_UNARY, admin_api_fed_update_rel },
	{ "/lanyard.admin.v1.Admin/ListFederationRelationships", LY_RPC_UNARY, admin_api_fed_list_rels },
	{ "/lanyard.admin.v1.Admin/GetFederationRelationship", LY_RPC_UNARY, admin_api_fed_get_rel },
	{ "/lanyard.admin.v1.Admin/DeleteFederationRelationship", LY_RPC_UNARY, admin_api_fed_delete_rel },
	{ "/lanyard.admin.v1.Admin/RefreshBundle", LY_RPC_UNARY, admin_api_fed_refresh },
	{ "/lanyard.admin.v1.Admin/ListAuditLines", LY_RPC_UNARY, h_list_audit },
};

const struct ly_rpc_method *
ly_admin_api_methods(size_t *n)
{
	*n = sizeof(admin_methods) / sizeof(admin_methods[0]);
	return admin_methods;
}
