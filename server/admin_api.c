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
 * Each change (create, update, delete, token, evict, ban; federation:
 * bundle.set, bundle.delete, federation.create|update|delete|refresh),
 * accepted or refused, writes one audit line (audit.h) before the answer
 * is sent. Federation (SPEC §9) is in the last part of this file: the
 * requests are checked by server/admin_msg_fed.c.
 * Accepted entry and agent changes reach the agent side through the
 * datastore's change hook (datastore.h): this file does not call it.
 * Reads (ListEntries, GetBundle, ListAgents, Health, the federation
 * lists, count and show) are not audited.
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
#include "server/admin_msg_fed.h"
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
	const char *trust_domain; /* borrowed, may be NULL: federation */
	const char *note;        /* borrowed, may be NULL: the audit detail of a success */
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
		.trust_domain = op->trust_domain,
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

/* ---- federation (SPEC §9) ---------------------------------------------------------- */

/* Bundle messages for a list; pbs[i] made for each non-NULL bundle. */
struct bundles_pb {
	struct ly_bundle_pb *pbs;
	Lanyard__Agent__V1__Bundle **ptrs;
	size_t n;
};

static void
bundles_pb_cleanup(struct bundles_pb *p)
{
	for (size_t i = 0; i < p->n; i++)
		ly_bundle_pb_cleanup(&p->pbs[i]);
	free(p->pbs);
	free(p->ptrs);
	memset(p, 0, sizeof(*p));
}

static ly_status
bundles_pb_make(const struct ly_ds_fed_bundle *const *b, size_t n, struct bundles_pb *p, struct ly_error *err)
{
	memset(p, 0, sizeof(*p));
	p->pbs = calloc(n + 1, sizeof(*p->pbs));
	p->ptrs = calloc(n + 1, sizeof(*p->ptrs));
	if (p->pbs == NULL || p->ptrs == NULL) {
		bundles_pb_cleanup(p);
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	}
	for (; p->n < n; p->n++) {
		ly_status rc = ly_bundle_pb_make(b[p->n]->bundle, &p->pbs[p->n], err);
		if (rc != LY_OK) {
			bundles_pb_cleanup(p);
			return rc;
		}
		p->ptrs[p->n] = &p->pbs[p->n].msg;
	}
	return LY_OK;
}

static void
h_set_fed_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_admin_msg_bundle_set rq;
	struct ly_bundle *b = NULL;
	struct ly_bundle_pb pb;
	ly_status st;

	if (!op_begin(&op, call, arg, "bundle.set"))
		return;
	if ((st = ly_admin_msg_bundle_set_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	op.trust_domain = rq.trust_domain;
	if ((st = ly_admin_msg_bundle_set_check(&rq, op.srv->cfg.trust_domain, &b, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.trust_domain = ly_bundle_trust_domain(b);
	if ((st = ly_datastore_fed_bundle_put(op.srv->ds, b, NULL, &e)) != LY_OK ||
	    (st = ly_bundle_pb_make(b, &pb, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op_reply(&op, &pb.msg.base, 0);
	ly_bundle_pb_cleanup(&pb);
out:
	ly_bundle_free(b);
	ly_admin_msg_bundle_set_cleanup(&rq);
}

static void
h_list_fed_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	/* ListFederatedBundlesRequest is TrustDomain on the wire (field 1, the trust domain). */
	struct ly_admin_msg_td rq;
	struct ly_ds_fed_bundle_list list = LY_DS_FED_BUNDLE_LIST_INIT;
	struct ly_ds_fed_bundle *one = NULL;
	struct bundles_pb pbs;
	Lanyard__Admin__V1__FederatedBundleList out;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	ly_status st;

	memset(&pbs, 0, sizeof(pbs));
	if (!op_begin(&op, call, arg, NULL))
		return;
	if ((st = ly_admin_msg_td_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	if (rq.trust_domain != NULL) {
		if ((st = ly_admin_msg_td_check(rq.trust_domain, op.srv->cfg.trust_domain, td, &e)) != LY_OK ||
		    (st = ly_datastore_fed_bundle_get(op.srv->ds, td, &one, &e)) != LY_OK) {
			op_fail_st(&op, st, &e);
			goto out;
		}
		const struct ly_ds_fed_bundle *v[1] = { one };
		st = bundles_pb_make(v, 1, &pbs, &e);
	} else if ((st = ly_datastore_fed_bundle_list(op.srv->ds, &list, &e)) == LY_OK) {
		st = bundles_pb_make((const struct ly_ds_fed_bundle *const *)list.items, list.n, &pbs, &e);
	}
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	lanyard__admin__v1__federated_bundle_list__init(&out);
	out.n_bundles = pbs.n;
	out.bundles = pbs.ptrs;
	op_reply(&op, &out.base, 0);
out:
	bundles_pb_cleanup(&pbs);
	ly_ds_fed_bundle_free(one);
	ly_ds_fed_bundle_list_cleanup(&list);
	ly_admin_msg_td_cleanup(&rq);
}

static void
h_delete_fed_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_admin_msg_bundle_delete rq;
	Lanyard__Admin__V1__TrustDomain out;
	enum ly_fed_delete_mode mode = LY_FED_DELETE_RESTRICT;
	char td[LY_TRUST_DOMAIN_MAX + 1], note[32];
	ly_status st;

	if (!op_begin(&op, call, arg, "bundle.delete"))
		return;
	if ((st = ly_admin_msg_bundle_delete_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	op.trust_domain = rq.trust_domain;
	if ((st = ly_admin_msg_bundle_delete_check(&rq, op.srv->cfg.trust_domain, td, &mode, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.trust_domain = td;
	(void)snprintf(note, sizeof(note), "mode %s", ly_fed_delete_mode_name(mode));
	op.note = note;
	if ((st = ly_datastore_fed_bundle_delete(op.srv->ds, td, mode, NULL, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	lanyard__admin__v1__trust_domain__init(&out);
	out.trust_domain = td;
	op_reply(&op, &out.base, 0);
out:
	ly_admin_msg_bundle_delete_cleanup(&rq);
}

static void
h_count_fed_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	Lanyard__Admin__V1__Count out;
	size_t n = 0;
	ly_status st;

	if (!op_begin(&op, call, arg, NULL))
		return;
	if ((st = ly_admin_msg_empty_decode("count", req, len, &e)) != LY_OK ||
	    (st = ly_datastore_fed_bundle_count(op.srv->ds, &n, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	lanyard__admin__v1__count__init(&out);
	out.count = n;
	op_reply(&op, &out.base, 0);
}

/* A relationship as its message; with `bundle`, the stored bundle too. */
struct rel_pb {
	Lanyard__Admin__V1__FederationRelationship m;
	struct ly_bundle_pb bundle;
	bool has_bundle;
};

static ly_status
rel_pb_make(const struct ly_ds_fed_rel *r, const struct ly_ds_fed_bundle *b, struct rel_pb *p, struct ly_error *err)
{
	memset(p, 0, sizeof(*p));
	lanyard__admin__v1__federation_relationship__init(&p->m);
	p->m.trust_domain = unconst(r->trust_domain);
	p->m.bundle_endpoint_url = unconst(r->bundle_endpoint_url);
	p->m.bundle_endpoint_profile = unconst(ly_fed_profile_name(r->profile));
	p->m.endpoint_spiffe_id = unconst(r->endpoint_spiffe_id);
	p->m.created_at = r->created_at;
	p->m.updated_at = r->updated_at;
	if (b != NULL) {
		LY_TRY(ly_bundle_pb_make(b->bundle, &p->bundle, err));
		p->has_bundle = true;
		p->m.bundle = &p->bundle.msg;
	}
	return LY_OK;
}

static void
rel_pb_cleanup(struct rel_pb *p)
{
	if (p->has_bundle)
		ly_bundle_pb_cleanup(&p->bundle);
	memset(p, 0, sizeof(*p));
}

/* Replies with relationship `td` as stored now, with its bundle if one is stored. */
static void
reply_rel(struct op *op, const char *td)
{
	struct ly_error e;
	struct ly_ds_fed_rel *r = NULL;
	struct ly_ds_fed_bundle *b = NULL;
	struct rel_pb pb;
	ly_status st;

	memset(&pb, 0, sizeof(pb));
	if ((st = ly_datastore_fed_rel_get(op->srv->ds, td, &r, &e)) != LY_OK) {
		op_fail_st(op, st, &e);
		return;
	}
	st = ly_datastore_fed_bundle_get(op->srv->ds, td, &b, &e);
	if (st == LY_E_NOT_FOUND)
		st = LY_OK;
	if (st == LY_OK)
		st = rel_pb_make(r, b, &pb, &e);
	if (st != LY_OK)
		op_fail_st(op, st, &e);
	else
		op_reply(op, &pb.m.base, 0);
	rel_pb_cleanup(&pb);
	ly_ds_fed_bundle_free(b);
	ly_ds_fed_rel_free(r);
}

/* CreateFederationRelationship and UpdateFederationRelationship. */
static void
put_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg, bool update)
{
	struct op op;
	struct ly_error e;
	struct ly_admin_msg_rel rq;
	struct ly_admin_msg_rel_checked c;
	ly_status st;

	memset(&c, 0, sizeof(c));
	if (!op_begin(&op, call, arg, update ? "federation.update" : "federation.create"))
		return;
	if ((st = ly_admin_msg_rel_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	op.trust_domain = rq.trust_domain;
	if ((st = ly_admin_msg_rel_check(&rq, op.srv->cfg.trust_domain, &c, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.trust_domain = c.td;
	st = update ? ly_datastore_fed_rel_update(op.srv->ds, &c.rel, c.bundle, NULL, &e) :
		      ly_datastore_fed_rel_create(op.srv->ds, &c.rel, c.bundle, NULL, &e);
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	reply_rel(&op, c.td);
out:
	ly_admin_msg_rel_checked_cleanup(&c);
	ly_admin_msg_rel_cleanup(&rq);
}

static void
h_create_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	put_rel(call, req, len, arg, false);
}

static void
h_update_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	put_rel(call, req, len, arg, true);
}

static void
h_list_rels(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_ds_fed_rel_list list = LY_DS_FED_REL_LIST_INIT;
	struct rel_pb *pbs = NULL;
	Lanyard__Admin__V1__FederationRelationship **ptrs = NULL;
	Lanyard__Admin__V1__FederationRelationshipList out;
	size_t n = 0;
	ly_status st;

	if (!op_begin(&op, call, arg, NULL))
		return;
	if ((st = ly_admin_msg_empty_decode("relationships", req, len, &e)) != LY_OK ||
	    (st = ly_datastore_fed_rel_list(op.srv->ds, &list, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	pbs = calloc(list.n + 1, sizeof(*pbs));
	ptrs = calloc(list.n + 1, sizeof(*ptrs));
	if (pbs == NULL || ptrs == NULL) {
		op_fail(&op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (; n < list.n; n++) {
		/* No bundles in a list (`federation show` has the one). */
		(void)rel_pb_make(list.items[n], NULL, &pbs[n], NULL);
		ptrs[n] = &pbs[n].m;
	}
	lanyard__admin__v1__federation_relationship_list__init(&out);
	out.n_relationships = n;
	out.relationships = ptrs;
	op_reply(&op, &out.base, 0);
out:
	for (size_t i = 0; i < n; i++)
		rel_pb_cleanup(&pbs[i]);
	free(pbs);
	free(ptrs);
	ly_ds_fed_rel_list_cleanup(&list);
}

static void
h_get_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_admin_msg_td rq;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	ly_status st;

	if (!op_begin(&op, call, arg, NULL))
		return;
	if ((st = ly_admin_msg_td_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	if ((st = ly_admin_msg_td_check(rq.trust_domain, op.srv->cfg.trust_domain, td, &e)) != LY_OK)
		op_fail_st(&op, st, &e);
	else
		reply_rel(&op, td);
	ly_admin_msg_td_cleanup(&rq);
}

static void
h_delete_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_admin_msg_td rq;
	Lanyard__Admin__V1__TrustDomain out;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	ly_status st;

	if (!op_begin(&op, call, arg, "federation.delete"))
		return;
	if ((st = ly_admin_msg_td_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		return;
	}
	op.trust_domain = rq.trust_domain;
	if ((st = ly_admin_msg_td_check(rq.trust_domain, op.srv->cfg.trust_domain, td, &e)) != LY_OK ||
	    (op.trust_domain = td, st = ly_datastore_fed_rel_delete(op.srv->ds, td, NULL, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	lanyard__admin__v1__trust_domain__init(&out);
	out.trust_domain = td;
	op_reply(&op, &out.base, 0);
out:
	ly_admin_msg_td_cleanup(&rq);
}

/* A `federation refresh` waiting for the fetcher (server_core.h: the refresh hook). */
struct refresh_op {
	struct op op;
	char td[LY_TRUST_DOMAIN_MAX + 1];
};

static void
refresh_done(void *arg, ly_status rc, const char *msg)
{
	struct refresh_op *r = arg;
	Lanyard__Admin__V1__TrustDomain out;

	if (rc != LY_OK) {
		op_fail(&r->op, code_of(rc, NULL), msg != NULL && msg[0] != '\0' ? msg : "bundle refresh failed");
	} else {
		lanyard__admin__v1__trust_domain__init(&out);
		out.trust_domain = r->td;
		op_reply(&r->op, &out.base, 0);
	}
	free(r);
}

static void
h_refresh_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct refresh_op *r = calloc(1, sizeof(*r));
	struct ly_admin_msg_td rq;
	struct ly_error e;
	ly_status st;

	if (r == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	if (!op_begin(&r->op, call, arg, "federation.refresh")) {
		free(r);
		return;
	}
	if ((st = ly_admin_msg_td_decode(req, len, &rq, &e)) != LY_OK) {
		op_fail_st(&r->op, st, &e);
		free(r);
		return;
	}
	r->op.trust_domain = rq.trust_domain;
	if ((st = ly_admin_msg_td_check(rq.trust_domain, r->op.srv->cfg.trust_domain, r->td, &e)) != LY_OK) {
		op_fail_st(&r->op, st, &e);
		goto fail;
	}
	/* No datastore lookup: the fetcher knows the config's relationships too (NOT_FOUND for neither). */
	r->op.trust_domain = r->td;
	if (r->op.srv->fed_refresh.fn == NULL) {
		op_fail(&r->op, LY_RPC_UNIMPLEMENTED,
		    "federation refresh is not available: this server has no bundle fetcher yet");
		goto fail;
	}
	if ((st = r->op.srv->fed_refresh.fn(r->op.srv->fed_refresh.arg, r->td, refresh_done, r, &e)) != LY_OK) {
		op_fail_st(&r->op, st, &e);
		goto fail;
	}
	/* refresh_done answers and frees r. */
	ly_admin_msg_td_cleanup(&rq);
	return;
fail:
	ly_admin_msg_td_cleanup(&rq);
	free(r);
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
	{ "/lanyard.admin.v1.Admin/SetFederatedBundle", LY_RPC_UNARY, h_set_fed_bundle },
	{ "/lanyard.admin.v1.Admin/ListFederatedBundles", LY_RPC_UNARY, h_list_fed_bundles },
	{ "/lanyard.admin.v1.Admin/DeleteFederatedBundle", LY_RPC_UNARY, h_delete_fed_bundle },
	{ "/lanyard.admin.v1.Admin/CountFederatedBundles", LY_RPC_UNARY, h_count_fed_bundles },
	{ "/lanyard.admin.v1.Admin/CreateFederationRelationship", LY_RPC_UNARY, h_create_rel },
	{ "/lanyard.admin.v1.Admin/UpdateFederationRelationship", LY_RPC_UNARY, h_update_rel },
	{ "/lanyard.admin.v1.Admin/ListFederationRelationships", LY_RPC_UNARY, h_list_rels },
	{ "/lanyard.admin.v1.Admin/GetFederationRelationship", LY_RPC_UNARY, h_get_rel },
	{ "/lanyard.admin.v1.Admin/DeleteFederationRelationship", LY_RPC_UNARY, h_delete_rel },
	{ "/lanyard.admin.v1.Admin/RefreshBundle", LY_RPC_UNARY, h_refresh_bundle },
};

const struct ly_rpc_method *
ly_admin_api_methods(size_t *n)
{
	*n = sizeof(admin_methods) / sizeof(admin_methods[0]);
	return admin_methods;
}
