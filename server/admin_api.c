/*
 * admin_api.c: the Admin service (proto/admin.proto, lanyard.admin.v1.Admin)
 * on the server's Unix socket: what the CLI verbs of SPEC §2 call.
 *
 * Every handler runs on the loop thread (rpc.h), decodes one request,
 * checks it completely before touching the datastore, and answers with a
 * gRPC status from the standard set and a one-line message:
 *   INVALID_ARGUMENT   malformed request, invalid entry, bad TTL, foreign
 *                      trust domain (ly_entry_validate, SPIFFE-ID §2)
 *   ALREADY_EXISTS     an entry with the same identity or entry ID
 *   NOT_FOUND          unknown entry ID or agent
 *   PERMISSION_DENIED  a caller of another uid (server.h ly_admin_peer)
 *   FAILED_PRECONDITION join tokens asked for with join_token disabled
 *   INTERNAL           the datastore failed (its message is kept)
 * Each change (create, update, delete, token, evict, ban), accepted or
 * refused, writes one audit line (audit.h) before the answer is sent, and
 * accepted entry and agent changes are announced to the agent side
 * (ly_agent_api_*). Reads (ListEntries, GetBundle, ListAgents, Health) are
 * not audited. No token, key or SVID ever reaches a log or audit line.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "server/entry_pb.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/log.h"
#include "lib/spiffeid.h"
#include "rpc/rpc.h"
#include "server/attest.h"
#include "server/audit.h"
#include "server/ca.h"
#include "server/datastore.h"
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

static Lanyard__Agent__V1__Entry *
unpack_entry(struct op *op, const uint8_t *req, size_t len)
{
	Lanyard__Agent__V1__Entry *m = lanyard__agent__v1__entry__unpack(NULL, len, req);
	if (m == NULL)
		op_fail(op, LY_RPC_INVALID_ARGUMENT, "malformed request");
	return m;
}

/* CreateEntry and UpdateEntry: the same checks, then the datastore. */
static void
put_entry(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg, bool update)
{
	struct op op;
	struct ly_error e;
	struct ly_entry *entry = NULL;
	Lanyard__Agent__V1__Entry *m;
	ly_status st;

	if (!op_begin(&op, call, arg, update ? "entry.update" : "entry.create"))
		return;
	if ((m = unpack_entry(&op, req, len)) == NULL)
		return;
	op.entry_id = m->entry_id[0] != '\0' ? m->entry_id : NULL;
	op.spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL;
	if (update && op.entry_id == NULL) {
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, "entry update needs an entry ID");
		goto out;
	}
	st = ly_entry_from_pb(m, &entry, &e);
	/* Every rule of SPEC §1, the IDs in our trust domain (SPIFFE-ID §2). */
	if (st == LY_OK)
		st = ly_entry_validate(entry, op.srv->cfg.trust_domain, &e);
	if (st == LY_OK)
		st = ly_entry_check_ttl_floor(entry, &e);
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	st = update ? ly_datastore_entry_update(op.srv->ds, entry, &e) : ly_datastore_entry_create(op.srv->ds, entry, &e);
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.entry_id = entry->entry_id;
	if (op.srv->agent_api != NULL)
		ly_agent_api_entries_changed(op.srv->agent_api);
	reply_entry(&op, entry);
out:
	ly_entry_free(entry);
	lanyard__agent__v1__entry__free_unpacked(m, NULL);
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
	Lanyard__Admin__V1__EntryID *m;
	ly_status st;

	if (!op_begin(&op, call, arg, "entry.delete"))
		return;
	m = lanyard__admin__v1__entry_id__unpack(NULL, len, req);
	if (m == NULL) {
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, "malformed request");
		return;
	}
	op.entry_id = m->entry_id[0] != '\0' ? m->entry_id : NULL;
	if (op.entry_id == NULL) {
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, "entry delete needs an entry ID");
		goto out;
	}
	if ((st = ly_entry_id_check(m->entry_id, &e)) != LY_OK ||
	    (st = ly_datastore_entry_delete(op.srv->ds, m->entry_id, &deleted, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op.spiffe_id = deleted->spiffe_id;
	if (op.srv->agent_api != NULL)
		ly_agent_api_entries_changed(op.srv->agent_api);
	reply_entry(&op, deleted);
out:
	ly_entry_free(deleted);
	lanyard__admin__v1__entry_id__free_unpacked(m, NULL);
}

static ly_status
check_filter_id(const char *s, const char *what, struct ly_error *err)
{
	struct ly_spiffe_id id;
	if (s[0] == '\0')
		return LY_OK;
	if (ly_spiffe_id_parse_str(s, &id, err) != LY_OK)
		return ly_error_wrap(err, LY_E_INVALID, "%s", what);
	return LY_OK;
}

static void
h_list_entries(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	struct ly_error e;
	struct ly_entry_list list = LY_ENTRY_LIST_INIT;
	struct ly_selector *sels = NULL;
	struct ly_entries_pb pbs;
	Lanyard__Admin__V1__EntryList out;
	Lanyard__Admin__V1__EntryFilter *m;
	size_t n_sels = 0;
	ly_status st;

	memset(&pbs, 0, sizeof(pbs));
	if (!op_begin(&op, call, arg, NULL))
		return;
	m = lanyard__admin__v1__entry_filter__unpack(NULL, len, req);
	if (m == NULL) {
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, "malformed request");
		return;
	}
	if (m->entry_id[0] != '\0') {
		/* SPIRE's rule: an entry ID names one entry; the other filters are not used. */
		struct ly_entry *one = NULL;
		if ((st = ly_entry_id_check(m->entry_id, &e)) != LY_OK ||
		    (st = ly_datastore_entry_get(op.srv->ds, m->entry_id, &one, &e)) != LY_OK) {
			op_fail_st(&op, st, &e);
			goto out;
		}
		if ((st = ly_entry_list_append(&list, one, &e)) != LY_OK) {
			ly_entry_free(one);
			op_fail_st(&op, st, &e);
			goto out;
		}
	} else {
		if ((st = check_filter_id(m->spiffe_id, "spiffe_id", &e)) != LY_OK ||
		    (st = check_filter_id(m->parent_id, "parent_id", &e)) != LY_OK) {
			op_fail_st(&op, st, &e);
			goto out;
		}
		if (m->n_selectors > LY_SELECTORS_MAX) {
			op_fail(&op, LY_RPC_INVALID_ARGUMENT, "filter has too many selectors");
			goto out;
		}
		if (m->n_selectors > 0 && (sels = calloc(m->n_selectors, sizeof(*sels))) == NULL) {
			op_fail(&op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
			goto out;
		}
		for (; n_sels < m->n_selectors; n_sels++) {
			st = ly_selector_set(&sels[n_sels], m->selectors[n_sels]->type, m->selectors[n_sels]->value, &e);
			if (st != LY_OK) {
				ly_error_wrap(&e, st, "selector %zu", n_sels + 1);
				op_fail_st(&op, st, &e);
				goto out;
			}
		}
		struct ly_entry_filter f = {
			.spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL,
			.parent_id = m->parent_id[0] != '\0' ? m->parent_id : NULL,
			.selectors = sels,
			.n_selectors = n_sels,
			.match = LY_MATCH_SUPERSET,
		};
		if ((st = ly_datastore_entry_list(op.srv->ds, &f, &list, &e)) != LY_OK) {
			op_fail_st(&op, st, &e);
			goto out;
		}
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
	ly_selectors_free(sels, n_sels);
	ly_entry_list_cleanup(&list);
	lanyard__admin__v1__entry_filter__free_unpacked(m, NULL);
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
	Lanyard__Admin__V1__TokenRequest *m;
	Lanyard__Admin__V1__Token out;
	int64_t ttl, now;
	ly_status st;

	if (!op_begin(&op, call, arg, "token.generate"))
		return;
	m = lanyard__admin__v1__token_request__unpack(NULL, len, req);
	if (m == NULL) {
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, "malformed request");
		return;
	}
	token[0] = '\0';
	op.spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL;
	if (!op.srv->cfg.join_token_enabled) {
		op_fail(&op, LY_RPC_FAILED_PRECONDITION, "join_token node attestation is not enabled on this server");
		goto out;
	}
	ttl = m->ttl == 0 ? LY_TOKEN_TTL_DEFAULT : m->ttl;
	if (ttl < 1 || ttl > LY_TOKEN_TTL_MAX) {
		char msg[96];
		(void)snprintf(msg, sizeof(msg), "token TTL must be between 1 and %d seconds", LY_TOKEN_TTL_MAX);
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, msg);
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
	if (op.spiffe_id == NULL) {
		st = ly_join_token_default_id(op.srv->cfg.trust_domain, token, &id, &e);
	} else {
		st = ly_spiffe_id_parse_str(m->spiffe_id, &id, &e);
		if (st == LY_OK && !ly_spiffe_id_member_of(&id, op.srv->cfg.trust_domain))
			st = ly_error_set(&e, LY_E_INVALID, "SPIFFE ID %s is not in trust domain %s", id.id,
			    op.srv->cfg.trust_domain);
		if (st == LY_OK && ly_spiffe_id_is_trust_domain_id(&id))
			st = ly_error_set(&e, LY_E_INVALID, "SPIFFE ID %s has no path: it would name the trust domain",
			    id.id);
		if (st == LY_OK && (st = ly_spiffe_id_check_use(&id, LY_ID_JOIN_TOKEN, &e)) != LY_OK)
			ly_error_wrap(&e, st, "SPIFFE ID %s", id.id);
	}
	if (st != LY_OK) {
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
	lanyard__admin__v1__token_request__free_unpacked(m, NULL);
}

/* ---- bundle ------------------------------------------------------------------- */

static void
h_get_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct op op;
	const struct ly_bundle *b;
	Lanyard__Agent__V1__Bundle out;
	ProtobufCBinaryData *x509 = NULL;
	Lanyard__Agent__V1__JWTAuthority *jwt = NULL, **jwtp = NULL;
	size_t nx, nj, done_j = 0;

	if (!op_begin(&op, call, arg, NULL))
		return;
	b = op.srv->ca != NULL ? ly_ca_bundle(op.srv->ca) : NULL;
	if (b == NULL) {
		op_fail(&op, LY_RPC_UNAVAILABLE, "the CA has no bundle yet");
		return;
	}
	nx = ly_bundle_x509_authority_count(b);
	nj = ly_bundle_jwt_authority_count(b);
	if ((nx > 0 && (x509 = calloc(nx, sizeof(*x509))) == NULL) ||
	    (nj > 0 && ((jwt = calloc(nj, sizeof(*jwt))) == NULL || (jwtp = calloc(nj, sizeof(*jwtp))) == NULL))) {
		op_fail(&op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nx; i++) {
		const struct ly_buf *der = ly_bundle_x509_authority(b, i);
		x509[i].data = der->data;
		x509[i].len = der->len;
	}
	for (; done_j < nj; done_j++) {
		Lanyard__Agent__V1__JWTAuthority *a = &jwt[done_j];
		unsigned char *spki = NULL;
		lanyard__agent__v1__jwtauthority__init(a);
		int n = i2d_PUBKEY(ly_bundle_jwt_authority_key(b, done_j), &spki);
		if (n <= 0) {
			op_fail(&op, LY_RPC_INTERNAL, "cannot encode a JWT authority's public key");
			goto out;
		}
		a->kid = unconst(ly_bundle_jwt_authority_kid(b, done_j));
		a->public_key.data = spki;
		a->public_key.len = (size_t)n;
		jwtp[done_j] = a;
	}
	lanyard__agent__v1__bundle__init(&out);
	out.trust_domain = unconst(ly_bundle_trust_domain(b));
	out.n_x509_authorities = nx;
	out.x509_authorities = x509;
	out.n_jwt_authorities = nj;
	out.jwt_authorities = jwtp;
	out.sequence = ly_bundle_sequence(b);
	out.refresh_hint = (int64_t)ly_bundle_refresh_hint(b);
	op_reply(&op, &out.base, 0);
out:
	for (size_t i = 0; i < done_j; i++)
		OPENSSL_free(jwt[i].public_key.data);
	free(jwt);
	free(jwtp);
	free(x509);
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
agent_pb_init(struct agent_pb *pb, const struct ly_agent *a, struct ly_error *err)
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
	struct ly_agent_list list = LY_AGENT_LIST_INIT;
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
	ly_agent_list_cleanup(&list);
}

/* EvictAgent and BanAgent. */
static void
remove_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg, bool ban)
{
	struct op op;
	struct ly_error e;
	struct ly_agent *agent = NULL;
	struct agent_pb pb;
	Lanyard__Admin__V1__AgentID *m;
	ly_status st;

	if (!op_begin(&op, call, arg, ban ? "agent.ban" : "agent.evict"))
		return;
	m = lanyard__admin__v1__agent_id__unpack(NULL, len, req);
	if (m == NULL) {
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, "malformed request");
		return;
	}
	op.spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL;
	if (op.spiffe_id == NULL) {
		op_fail(&op, LY_RPC_INVALID_ARGUMENT, "an agent SPIFFE ID is required");
		goto out;
	}
	if (ban)
		st = ly_datastore_agent_set_banned(op.srv->ds, m->spiffe_id, true, &e);
	else
		st = ly_datastore_agent_get(op.srv->ds, m->spiffe_id, &agent, &e);
	if (st == LY_OK) {
		if (ban)
			st = ly_datastore_agent_get(op.srv->ds, m->spiffe_id, &agent, &e);
		else
			st = ly_datastore_agent_delete(op.srv->ds, m->spiffe_id, &e);
	}
	if (st != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	/* Its streams end and its SVID is no longer honoured (SPEC §4). */
	if (op.srv->agent_api != NULL)
		ly_agent_api_agent_removed(op.srv->agent_api, m->spiffe_id);
	if ((st = agent_pb_init(&pb, agent, &e)) != LY_OK) {
		op_fail_st(&op, st, &e);
		goto out;
	}
	op_reply(&op, &pb.m.base, 0);
	agent_pb_cleanup(&pb);
out:
	ly_agent_free(agent);
	lanyard__admin__v1__agent_id__free_unpacked(m, NULL);
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
	} else if (op.srv->ca == NULL || ly_ca_bundle(op.srv->ca) == NULL) {
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
