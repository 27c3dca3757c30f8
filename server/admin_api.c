/*
 * admin_api.c: the Admin service (proto/admin.proto, lanyard.admin.v1.Admin)
 * on the server's Unix socket: what the CLI verbs of SPEC §2 call.
 *
 * Every handler runs on the loop thread (rpc.h), decodes one request and
 * checks it completely (server/admin_msg.c) before touching the
 * datastore, and answers with a gRPC status from the standard set and a
 * one-line message:
 *   INVALID_ARGUMENT   malformed request, invalid entry, bad TTL, foreign
 *                      trust domain (ly_entry_validate, SPIFFE-ID §2)
 *   ALREADY_EXISTS     an entry with the same identity or entry ID
 *   NOT_FOUND          unknown entry ID or agent
 *   PERMISSION_DENIED  a caller of another uid (server.h ly_admin_peer)
 *   FAILED_PRECONDITION join tokens asked for with join_token disabled
 *   INTERNAL           the datastore failed (its message is kept)
 * Each change (create, update, delete, token, evict, ban), accepted or
 * refused, writes one audit line (audit.h) before the answer is sent.
 * Accepted entry and agent changes reach the agent side through the
 * datastore's change hook (datastore.h): this file does not call it.
 * Reads (ListEntries, GetBundle, ListAgents, Health) are not audited.
 * No token, key or SVID ever reaches a log or audit line.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/log.h"
#include "lib/spiffeid.h"
#include "rpc/rpc.h"
#include "server/admin_msg.h"
#include "server/attest.h"
#include "server/audit.h"
#include "server/bundle_pb.h"
#include "server/ca.h"
#include "server/datastore.h"
#include "server/entry_pb.h"
#include "server/server.h"

/* Bytes of randomness in a join token; it is sent as lower-case hex. */
#define TOKEN_BYTES 32

static char empty_str[] = "";

/* protobuf-c wants char * for strings it only reads when packing. */
static char *
unconst(const char *s)
{
	return s != NULL ? (char *)(uintptr_t)s : empty_str;
}

/* One admin call in progress: what its audit line will say. */
struct op {
	struct ly_server *srv;
	struct ly_rpc_call *call;
	const char *action;      /* NULL for reads: not audited */
	char caller[32];
	const char *entry_id;    /* borrowed, may be NULL */
	const char *spiffe_id;   /* borrowed, may be NULL */
	const char *secret;      /* scrubbed from the audit line */
};

static enum ly_rpc_code
code_of(ly_status st, const struct ly_error *e)
{
	switch (st) {
	case LY_OK:
		return LY_RPC_OK;
	case LY_E_INVALID:
		/* The datastore's refusal of a duplicate (datastore.h). */
		if (e != NULL && strncmp(e->msg, "entry already exists", 20) == 0)
			return LY_RPC_ALREADY_EXISTS;
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
	default:
		return LY_RPC_INTERNAL;
	}
}

static void
op_audit(struct op *op, const char *result, const char *detail)
{
	struct ly_error e;

	if (op->action == NULL || op->srv->audit == NULL)
		return;
	struct ly_audit_record rec = {
		.caller = op->caller,
		.action = op->action,
		.entry_id = op->entry_id,
		.spiffe_id = op->spiffe_id,
		.result = result,
		.detail = detail,
		.secret = op->secret,
	};
	if (ly_audit_write(op->srv->audit, &rec, ly_server_now(), &e) != LY_OK)
		log_error("audit line for %s not written: %s", op->action, e.msg);
}

/* Ends the call with an error; audited for changes. */
static void
op_fail(struct op *op, enum ly_rpc_code code, const char *msg)
{
	char clean[LY_ERROR_MSG_MAX];

	op_audit(op, ly_rpc_code_str(code), msg);
	if (op->action != NULL) {
		ly_audit_scrub(msg, op->secret, clean, sizeof(clean));
		log_debug("admin %s by %s refused: %s: %s", op->action, op->caller, ly_rpc_code_str(code), clean);
	}
	ly_rpc_call_finish(op->call, code, msg);
}

static void
op_fail_st(struct op *op, ly_status st, const struct ly_error *e)
{
	op_fail(op, code_of(st, e), e->msg);
}

/* Packs `m`, audits success, and replies. */
static void
op_reply(struct op *op, const ProtobufCMessage *m, unsigned flags)
{
	struct ly_error e;
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf;

	if (n > LY_RPC_MSG_MAX) {
		/* Only a list can be this big; nothing was changed. */
		op_fail(op, LY_RPC_RESOURCE_EXHAUSTED, "response over the message size cap: narrow the filter");
		return;
	}
	buf = malloc(n > 0 ? n : 1);
	if (buf == NULL) {
		op_fail(op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	(void)protobuf_c_message_pack(m, buf);
	op_audit(op, "ok", NULL);
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
static bool
op_begin(struct op *op, struct ly_rpc_call *call, void *arg, const char *action)
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
		op_fail(op, LY_RPC_PERMISSION_DENIED, msg);
		return false;
	}
	if (op->srv->stopping) {
		op_fail(op, LY_RPC_UNAVAILABLE, "server is shutting down");
		return false;
	}
	return true;
}

/* ---- entries <-> protobuf: server/entry_pb.h ------------------------------ */

static void
reply_entry(struct op *op, const struct ly_entry *e)
{
	struct ly_entries_pb pb;
	struct ly_error err;
	ly_status st = ly_entries_pb_make(&e, 1, &pb, &err);

	if (st != LY_OK) {
		op_fail_st(op, st, &err);
		return;
	}
	op_reply(op, &pb.msgs[0].base, 0);
	ly_entries_pb_cleanup(&pb);
}

/* ---- entries --------------------------------------------------------------- */

/* CreateEntry and UpdateEntry: the same checks (admin_msg.h), then the datastore. */
static void
put_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg, bool update)
{
	struct op op;
	struct ly_error e;
	struct ly_entry *entry = NULL;
	struct ly_admin_msg_entry rq;
	ly_status st;

	if (!op_begin(&op, call, arg, update ? "entry.update" : "entry.create"))
		return;
	if ((st = ly_admin_msg_entry_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	op.entry_id = rq.entry_id;
	op.spiffe_id = rq.spiffe_id;
	if ((st = ly_admin_msg_entry_check(&rq, update, op.srv->cfg.trust_domain, &entry, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	st = update ? ly_datastore_entry_update(op.srv->ds, entry, &e) : ly_datastore_entry_create(op.srv->ds, entry, &e);
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.entry_id = entry->entry_id;
	reply_entry(&op, entry);
out:
	ly_entry_free(entry);
	ly_admin_msg_entry_cleanup(&rq);
}

static void
h_create_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	put_entry(call, req, len, arg, false);
}

static void
h_update_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	put_entry(call, req, len, arg, true);
}

static void
h_delete_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_entry *deleted = NULL;
	struct ly_admin_msg_entry_id rq;
	ly_status st;

	if (!op_begin(&op, call, arg, "entry.delete"))
		return;
	if ((st = ly_admin_msg_entry_id_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	op.entry_id = rq.entry_id;
	if ((st = ly_admin_msg_delete_check(&rq, &e)) != LY_OK ||
	    (st = ly_datastore_entry_delete(op.srv->ds, rq.entry_id, &deleted, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.spiffe_id = deleted->spiffe_id;
	reply_entry(&op, deleted);
out:
	ly_entry_free(deleted);
	ly_admin_msg_entry_id_cleanup(&rq);
}

static void
h_list_entries(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_entry_list list = LY_ENTRY_LIST_INIT;
	struct ly_entries_pb pbs;
	Lanyard__Admin__V1__EntryList out;
	struct ly_admin_msg_filter rq;
	ly_status st;

	memset(&pbs, 0, sizeof(pbs));
	if (!op_begin(&op, call, arg, NULL))
		return;
	if ((st = ly_admin_msg_filter_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	if (rq.entry_id != NULL) {
		struct ly_entry *one = NULL;
		if ((st = ly_datastore_entry_get(op.srv->ds, rq.entry_id, &one, &e)) != LY_OK) {
			op_fail_st(&op, st, &e);
			goto out;
		}
		if ((st = ly_entry_list_append(&list, one, &e)) != LY_OK) {
			ly_entry_free(one);
			op_fail_st(&op, st, &e);
			goto out;
		}
	} else if ((st = ly_datastore_entry_list(op.srv->ds, &rq.filter, &list, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	if ((st = ly_entries_pb_make((const struct ly_entry *const *)list.items, list.n, &pbs, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	lanyard__admin__v1__entry_list__init(&out);
	out.n_entries = pbs.n;
	out.entries = pbs.ptrs;
	op_reply(&op, &out.base, 0);
out:
	ly_entries_pb_cleanup(&pbs);
	ly_entry_list_cleanup(&list);
	ly_admin_msg_filter_cleanup(&rq);
}

/* ---- join tokens ------------------------------------------------------------ */

static void
h_generate_token(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_spiffe_id id;
	uint8_t rnd[TOKEN_BYTES];
	char token[2 * TOKEN_BYTES + 1];
	struct ly_admin_msg_token rq;
	Lanyard__Admin__V1__Token out;
	int64_t ttl, now;
	ly_status st;

	if (!op_begin(&op, call, arg, "token.generate"))
		return;
	if ((st = ly_admin_msg_token_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	token[0] = '\0';
	memset(&id, 0, sizeof(id));
	op.spiffe_id = rq.spiffe_id;
	if (!op.srv->cfg.join_token_enabled) {
		op_fail(&op, LY_RPC_FAILED_PRECONDITION, "join_token node attestation is not enabled on this server");
		goto out;
	}
	if ((st = ly_admin_msg_token_ttl(&rq, &ttl, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		op_fail(&op, LY_RPC_INTERNAL, "no random bytes for a token");
		goto out;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		(void)snprintf(token + 2 * i, 3, "%02x", rnd[i]);
	OPENSSL_cleanse(rnd, sizeof(rnd));
	op.secret = token;
	if ((st = ly_admin_msg_token_id(&rq, op.srv->cfg.trust_domain, token, &id, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.spiffe_id = id.id;
	now = (int64_t)ly_server_now();
	st = ly_datastore_token_create(op.srv->ds, token, id.id, now + ttl, &e);
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	lanyard__admin__v1__token__init(&out);
	out.token = token;
	out.spiffe_id = id.id;
	out.expires_at = now + ttl;
	op_reply(&op, &out.base, LY_RPC_WIPE);
out:
	OPENSSL_cleanse(token, sizeof(token));
	OPENSSL_cleanse(&id, sizeof(id));
	ly_admin_msg_token_cleanup(&rq);
}

/* ---- bundle ------------------------------------------------------------------- */

static void
h_get_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	const struct ly_bundle *b;
	struct ly_bundle_pb pb;
	struct ly_error e;
	ly_status rc;

	if (!op_begin(&op, call, arg, NULL))
		return;
	b = ly_server_bundle(op.srv);
	if (b == NULL) {
		op_fail(&op, LY_RPC_UNAVAILABLE, "the CA has no bundle yet");
		return;
	}
	if ((rc = ly_bundle_pb_make(b, &pb, &e)) != LY_OK) {
		if (rc == LY_E_NOMEM)
			op_fail(&op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		else
			op_fail(&op, LY_RPC_INTERNAL, "cannot encode a JWT authority's public key");
		return;
	}
	op_reply(&op, &pb.msg.base, 0);
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
	pb->m.spiffe_id = unconst(a->spiffe_id);
	pb->m.attestation_type = unconst(a->attestation_type);
	pb->m.serial_number = unconst(a->serial_number);
	pb->m.expires_at = a->svid_expires_at;
	pb->m.banned = a->banned;
	pb->m.n_selectors = a->n_selectors;
	pb->m.selectors = pb->sel.ptrs;
	return LY_OK;
}

static void
h_list_agents(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_ds_agent_list list = LY_DS_AGENT_LIST_INIT;
	struct agent_pb *pbs = NULL;
	Lanyard__Admin__V1__Agent **ptrs = NULL;
	Lanyard__Admin__V1__AgentList out;
	size_t n_pbs = 0;
	ly_status st;

	if (!op_begin(&op, call, arg, NULL))
		return;
	if ((st = ly_datastore_agent_list(op.srv->ds, &list, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	if (list.n > 0) {
		pbs = calloc(list.n, sizeof(*pbs));
		ptrs = calloc(list.n, sizeof(*ptrs));
		if (pbs == NULL || ptrs == NULL) {
			op_fail(&op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
			goto out;
		}
	}
	for (; n_pbs < list.n; n_pbs++) {
		if ((st = agent_pb_init(&pbs[n_pbs], list.items[n_pbs], &e)) != LY_OK) {
			op_fail_st(&op, st, &e);
			goto out;
		}
		ptrs[n_pbs] = &pbs[n_pbs].m;
	}
	lanyard__admin__v1__agent_list__init(&out);
	out.n_agents = list.n;
	out.agents = ptrs;
	op_reply(&op, &out.base, 0);
out:
	for (size_t i = 0; i < n_pbs; i++)
		agent_pb_cleanup(&pbs[i]);
	free(pbs);
	free(ptrs);
	ly_ds_agent_list_cleanup(&list);
}

/* EvictAgent and BanAgent. */
static void
remove_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg, bool ban)
{
	struct op op;
	struct ly_error e;
	struct ly_ds_agent *agent = NULL;
	struct agent_pb pb;
	struct ly_admin_msg_agent_id rq;
	ly_status st;

	if (!op_begin(&op, call, arg, ban ? "agent.ban" : "agent.evict"))
		return;
	if ((st = ly_admin_msg_agent_id_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	op.spiffe_id = rq.spiffe_id;
	if ((st = ly_admin_msg_agent_id_check(&rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	if (ban)
		st = ly_datastore_agent_set_banned(op.srv->ds, rq.spiffe_id, true, &e);
	else
		st = ly_datastore_agent_get(op.srv->ds, rq.spiffe_id, &agent, &e);
	if (st == LY_OK) {
		if (ban)
			st = ly_datastore_agent_get(op.srv->ds, rq.spiffe_id, &agent, &e);
		else
			st = ly_datastore_agent_delete(op.srv->ds, rq.spiffe_id, &e);
	}
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	if ((st = agent_pb_init(&pb, agent, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op_reply(&op, &pb.m.base, 0);
	agent_pb_cleanup(&pb);
out:
	ly_ds_agent_free(agent);
	ly_admin_msg_agent_id_cleanup(&rq);
}

static void
h_evict_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	remove_agent(call, req, len, arg, false);
}

static void
h_ban_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	remove_agent(call, req, len, arg, true);
}

/* ---- health ---------------------------------------------------------------------- */

static void
h_health(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	Lanyard__Admin__V1__HealthResponse out;
	int64_t rev;
	char detail[LY_ERROR_MSG_MAX + 32];

	if (!op_begin(&op, call, arg, NULL))
		return;
	lanyard__admin__v1__health_response__init(&out);
	out.serving = false;
	if (op.srv->stopping) {
		(void)snprintf(detail, sizeof(detail), "shutting down");
	} else if (ly_datastore_revision(op.srv->ds, &rev, &e) != LY_OK) {
		(void)snprintf(detail, sizeof(detail), "datastore: %s", e.msg);
	} else if (op.srv->ca == NULL || ly_server_bundle(op.srv) == NULL) {
		(void)snprintf(detail, sizeof(detail), "CA not ready");
	} else {
		out.serving = true;
		(void)snprintf(detail, sizeof(detail), "ok");
	}
	out.detail = detail;
	op_reply(&op, &out.base, 0);
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
};

const struct ly_rpc_method *
ly_admin_api_methods(size_t *n)
{
	*n = sizeof(admin_methods) / sizeof(admin_methods[0]);
	return admin_methods;
}
