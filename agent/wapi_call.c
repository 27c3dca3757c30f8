/*
 * wapi_call.c: the Workload API's calls (wapi.c tells the whole story):
 * the checks every call starts with, the streams (FetchX509SVID,
 * FetchX509Bundles, FetchJWTBundles) and their passes, FetchJWTSVID,
 * ValidateJWTSVID and the health check. The connections they run on are
 * wapi_conn.c's; the service's wiring is wapi.c's (wapi_internal.h).
 *
 * Threads: the loop thread only.
 */
#include "agent/wapi_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <uv.h>

#include "agent/cache.h"
#include "agent/fedset.h"
#include "agent/sds.h" /* SDS hook */
#include "agent/workload_msg.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/jwt.h"
#include "lib/log.h"
#include "lib/ratelimit.h"
#include "lib/spiffeid.h"
#include "rpc/rpc.h"

/* ---- readiness and the caller ------------------------------------------------------------- */

struct ly_cache *
ly_wapi_cache(struct ly_wapi *w)
{
	return w->src.cache != NULL ? w->src.cache(w->src.arg) : NULL;
}

/*
 * SPEC §3: UNAVAILABLE while starting (until the entries are known too: before the server's first snapshot
 * every caller would look entitled to nothing), unless something cached can be served already.
 */
bool
ly_wapi_ready(struct ly_wapi *w)
{
	if (w->src.ready == NULL || ly_wapi_cache(w) == NULL)
		return false;
	return w->src.ready(w->src.arg);
}

/*
 * The caller is still the process attested at accept (procfs.h). Once not,
 * never again: the connection is refused from then on.
 */
bool
ly_wapi_conn_verify(struct wconn *c)
{
	struct ly_error e;

	if (c->refuse != LY_RPC_OK)
		return false;
	if (ly_unix_peer_verify(c->w->agent->cfg.proc_root, &c->peer, &e) != LY_OK) {
		log_info("workload api: conn %" PRIu64 " (pid %d): caller gone or replaced, refusing it: %s", c->id,
		    (int)c->peer.pid, e.msg);
		c->refuse = LY_RPC_PERMISSION_DENIED;
		c->refuse_msg = "could not verify existence of the original caller";
		return false;
	}
	return true;
}

/* The bundles to serve: the cache's set (ours and federated). */
const struct ly_bundle_set *
ly_wapi_bundles(struct ly_wapi *w)
{
	struct ly_cache *c = ly_wapi_cache(w);
	return c != NULL ? ly_cache_bundles(c) : NULL;
}

/* ---- the rate limit per selector set ---------------------------------------------------------- */

/*
 * agent.ratelimit.workload_api: false when the caller's selector set is
 * over its rate; the call is then answered UNAVAILABLE (SPIRE's agent
 * answers its experimental limit so, and every client retries it with
 * backoff; SPEC §3 keeps UNAVAILABLE for "not now"), counted, and logged
 * at most once a second.
 */
static bool
call_rate_ok(struct ly_wapi *w, struct ly_rpc_call *call, struct wconn *c)
{
	uint64_t n = 0;
	char details[160];

	if (w->limit == NULL || ly_ratelimit_take(w->limit, c->selkey, 1, false, (int64_t)uv_now(w->agent->loop)) == 1)
		return true;
	w->rate_limited++;
	if (ly_ratelimit_log_due(w->limit, (int64_t)uv_now(w->agent->loop), 1000, &n))
		log_warn("workload api: rate limit (%u/s per selector set): %" PRIu64 " calls refused in the last second, "
			 "latest from pid %d uid %u",
		    ly_ratelimit_rate(w->limit), n, (int)c->peer.pid, (unsigned)c->peer.uid);
	(void)snprintf(details, sizeof(details),
	    "rate limit: Workload API calls over %u/s for this workload's selectors; retry later",
	    ly_ratelimit_rate(w->limit));
	ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, details);
	return false;
}

/* ---- answering -------------------------------------------------------------------------- */

/* The common checks of every Workload API call; false when `call` was answered. */
bool
ly_wapi_call_admit(struct ly_wapi *w, struct ly_rpc_call *call, struct wconn **out)
{
	size_t n;
	const uint8_t *v = ly_rpc_call_metadata(call, WAPI_HEADER, &n);
	struct wconn *c = ly_rpc_call_conn_ctx(call);

	w->calls++;
	*out = NULL;
	/* Workload Endpoint §6: the security header comes first (SDS hook: /SpiffeWorkloadAPI/ only, SPEC §8). */
	if (strncmp(ly_rpc_call_method(call), M(""), strlen(M(""))) == 0 && (v == NULL || n != 4 || memcmp(v, "true", 4) != 0)) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "security header missing from request");
		return false;
	}
	if (w->stopping) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "agent is shutting down");
		return false;
	}
	if (c == NULL) {
		/* Every connection comes through ly_wapi_on_connection: a bug. */
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "connection not attested");
		return false;
	}
	if (c->refuse != LY_RPC_OK) {
		w->denied++;
		ly_rpc_call_finish(call, c->refuse, c->refuse_msg);
		return false;
	}
	if (!ly_wapi_ready(w)) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "agent is not ready yet");
		return false;
	}
	if (!call_rate_ok(w, call, c))
		return false;
	*out = c;
	return true;
}

/*
 * LY_E_LIMIT: a response of `len` bytes (`n` `what`) over the agent's cap
 * (lib/caps.h LY_RPC_RESPONSE_MAX, or workload_api.max_response_bytes).
 * Its message is the status details the caller gets.
 */
static ly_status
too_large(const struct ly_wapi *w, size_t len, const char *what, size_t n, struct ly_error *err)
{
	return ly_error_set(err, LY_E_LIMIT,
	    "the response (%zu %s, %zu bytes) is over the agent's %zu-byte message cap", n, what, len,
	    w->max_response);
}

/* ---- streams ------------------------------------------------------------------------------ */

static const char *const stream_names[ST_KINDS] = { "FetchX509SVID", "FetchX509Bundles", "FetchJWTBundles" };

static void
stream_free(struct stream *st)
{
	ly_queue_remove(&st->link);
	st->w->n_streams[st->kind]--;
	free(st);
}

void
ly_wapi_stream_end(struct stream *st, enum ly_rpc_code code, const char *details)
{
	log_debug("workload api: conn %" PRIu64 ": %s stream ends %s", st->conn->id, stream_names[st->kind],
	    ly_rpc_code_str(code));
	ly_rpc_call_finish(st->call, code, details);
	stream_free(st);
}

static void
on_stream_closed(struct ly_rpc_call *call, void *arg)
{
	struct stream *st = arg;

	(void)call;
	ly_wapi_stream_end(st, LY_RPC_CANCELLED, "client went away");
}

/* What one pass shares among the streams: the bundle responses are the same for every caller. */
struct pass_ctx {
	struct ly_wapi *w;
	struct ly_cache *cache;
	const struct ly_bundle_set *set; /* every bundle held: ours and federated */
	struct ly_bundle_set *own_set;   /* ours alone (owned): the view of a caller that federates with none */
	int64_t now;
	int64_t next_expiry;
	bool built[ST_KINDS];
	ly_status rc[ST_KINDS];
	struct ly_buf msg[ST_KINDS];
	uint8_t digest[ST_KINDS][SHA256_DIGEST_LENGTH];
};

static void
pass_ctx_init(struct pass_ctx *p, struct ly_wapi *w)
{
	memset(p, 0, sizeof(*p));
	p->w = w;
	p->cache = ly_wapi_cache(w);
	p->set = ly_wapi_bundles(w);
	p->now = (int64_t)ly_agent_now();
	p->next_expiry = INT64_MAX;
	/* NULL when out of memory: the bundle streams then wait for the next pass. */
	if (p->cache != NULL && ly_fedset_for_caller(p->set, ly_cache_trust_domain(p->cache), NULL, &p->own_set, NULL,
				    NULL) != LY_OK)
		p->own_set = NULL;
}

static void
pass_ctx_cleanup(struct pass_ctx *p)
{
	for (int i = 0; i < ST_KINDS; i++)
		ly_buf_free(&p->msg[i]);
	ly_bundle_set_free(p->own_set);
}

/* A bundle response of `kind` for `set`. */
static ly_status
bundles_msg(enum stream_kind kind, const struct ly_bundle_set *set, struct ly_buf *out, struct ly_error *err)
{
	if (kind == ST_X509_BUNDLES)
		return ly_wmsg_x509bundles_response(set, out, err);
	return ly_wmsg_jwtbundles_response(set, out, err);
}

/*
 * The bundle response of `kind` for a caller that federates with no trust
 * domain (our bundle alone: the same for every such caller), built once per
 * pass.
 */
static ly_status
shared_msg(struct pass_ctx *p, enum stream_kind kind, struct ly_error *err)
{
	if (!p->built[kind]) {
		p->built[kind] = true;
		p->rc[kind] = p->own_set != NULL ? bundles_msg(kind, p->own_set, &p->msg[kind], err) : LY_E_NOMEM;
		if (p->rc[kind] == LY_OK)
			SHA256(p->msg[kind].data, p->msg[kind].len, p->digest[kind]);
	}
	if (p->rc[kind] != LY_OK && err != NULL && err->code == LY_OK)
		ly_error_set(err, p->rc[kind], "bundle response could not be built");
	return p->rc[kind];
}

static void
stream_send(struct stream *st, const struct ly_buf *msg, const uint8_t *digest, unsigned flags)
{
	struct ly_error e;

	if (st->sent && CRYPTO_memcmp(st->digest, digest, SHA256_DIGEST_LENGTH) == 0)
		return; /* nothing changed for this caller */
	if (ly_rpc_call_send(st->call, msg->data, msg->len, flags, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": %s: %s", st->conn->id, stream_names[st->kind], e.msg);
		return;
	}
	memcpy(st->digest, digest, SHA256_DIGEST_LENGTH);
	st->sent = true;
	st->w->sent++;
}

/*
 * Brings one stream up to date: ends it (PERMISSION_DENIED) when its caller
 * is no longer the process attested, or no longer entitled to anything;
 * otherwise sends the full response if it differs from the last one.
 */
static void
stream_update(struct stream *st, struct pass_ctx *p)
{
	struct ly_cache_identities ids;
	struct ly_buf msg = LY_BUF_INIT;
	struct ly_bundle_set *view = NULL;
	size_t nfed = 0;
	uint8_t digest[SHA256_DIGEST_LENGTH];
	struct ly_error e;
	struct wconn *c = st->conn;

	if (!ly_wapi_conn_verify(c)) {
		st->w->denied++;
		ly_wapi_stream_end(st, c->refuse, c->refuse_msg);
		return;
	}
	if (p->cache == NULL)
		return;
	ly_cache_identities_init(&ids);
	/* Bundle streams: every entry's federations count, a duplicate hint's too (fedset.h). */
	unsigned flags = st->kind == ST_X509_SVID ? LY_CACHE_QUERY_X509 : LY_CACHE_QUERY_ALL_HINTS;
	if (ly_cache_query(p->cache, c->sels, c->n_sels, flags, p->now, &ids, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": %s: %s", c->id, stream_names[st->kind], e.msg);
		goto out;
	}
	if (ids.n_entitled == 0) {
		st->w->denied++;
		ly_wapi_stream_end(st, LY_RPC_PERMISSION_DENIED, "no identity issued");
		goto out;
	}
	if (st->kind != ST_X509_SVID) {
		/*
		 * Our bundle and the federated ones of every entry the caller is
		 * entitled to (fedset.h); a caller federating with none shares the
		 * pass's one response.
		 */
		ly_error_clear(&e);
		if (ly_fedset_any(&ids) &&
		    ly_fedset_for_caller(p->set, ly_cache_trust_domain(p->cache), &ids, &view, &nfed, &e) != LY_OK) {
			log_warn("workload api: %s: %s", stream_names[st->kind], e.msg);
			goto out;
		}
		const struct ly_buf *bmsg = &msg;
		const uint8_t *bdigest = digest;
		ly_status rc;
		if (nfed == 0) {
			rc = shared_msg(p, st->kind, &e);
			bmsg = &p->msg[st->kind];
			bdigest = p->digest[st->kind];
		} else {
			rc = bundles_msg(st->kind, view, &msg, &e);
			if (rc == LY_OK)
				SHA256(msg.data, msg.len, digest);
		}
		if (rc == LY_OK && bmsg->len > st->w->max_response)
			rc = too_large(st->w, bmsg->len, "bundles", view != NULL ? ly_bundle_set_count(view) : 1, &e);
		if (rc == LY_E_LIMIT) {
			log_warn("workload api: conn %" PRIu64 ": %s: %s", c->id, stream_names[st->kind], e.msg);
			ly_wapi_stream_end(st, LY_RPC_RESOURCE_EXHAUSTED, e.msg);
			goto out;
		}
		if (rc != LY_OK) {
			log_warn("workload api: %s: %s", stream_names[st->kind], e.msg);
			goto out;
		}
		stream_send(st, bmsg, bdigest, 0);
		goto out;
	}
	/* Entitled, but no valid SVID yet (being issued): the stream waits. */
	if (ids.n == 0)
		goto out;
	for (size_t i = 0; i < ids.n; i++) {
		if (ids.v[i].not_after < p->next_expiry)
			p->next_expiry = ids.v[i].not_after;
	}
	const struct ly_bundle *own = p->set != NULL ? ly_bundle_set_find(p->set, ly_cache_trust_domain(p->cache)) : NULL;
	if (own == NULL) {
		log_warn("workload api: conn %" PRIu64 ": FetchX509SVID: no bundle for our trust domain yet", c->id);
		goto out;
	}
	/* federated_bundles: those of the trust domains the SVIDs' entries federate with (fedset.h). */
	if (ly_fedset_any(&ids) &&
	    ly_fedset_for_caller(p->set, ly_cache_trust_domain(p->cache), &ids, &view, NULL, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": FetchX509SVID: %s", c->id, e.msg);
		goto out;
	}
	ly_status rc = ly_wmsg_x509svid_response(&ids, own, view, &msg, &e);
	if (rc == LY_OK && msg.len > st->w->max_response)
		rc = too_large(st->w, msg.len, "X.509-SVIDs", ids.n, &e);
	if (rc == LY_E_LIMIT) {
		/* Not nothing at all: the caller is told why, and what to change. */
		log_warn("workload api: conn %" PRIu64 ": FetchX509SVID: %s", c->id, e.msg);
		ly_wapi_stream_end(st, LY_RPC_RESOURCE_EXHAUSTED, e.msg);
		goto out;
	}
	if (rc != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": FetchX509SVID: %s", c->id, e.msg);
		goto out;
	}
	SHA256(msg.data, msg.len, digest);
	stream_send(st, &msg, digest, LY_RPC_WIPE);
	OPENSSL_cleanse(digest, sizeof(digest));
out:
	ly_buf_free_secret(&msg);
	ly_bundle_set_free(view);
	ly_cache_identities_cleanup(&ids);
}

static void on_expiry(uv_timer_t *t);

/* One pass over every open stream. */
static void
pass_run(struct ly_wapi *w)
{
	struct pass_ctx p;
	struct ly_queue *l, *next;

	if (w->stopping)
		return;
	pass_ctx_init(&p, w);
	LY_QUEUE_FOREACH_SAFE(l, next, &w->streams) {
		stream_update(LY_QUEUE_DATA(l, struct stream, link), &p);
	}
	ly_sds_changed(w->sds); /* SDS hook: SDS streams are subscribers of the same cache */
	/* Wake up when an SVID on a stream expires, to take it off (SPEC §3). */
	uv_timer_stop(&w->expiry);
	if (p.next_expiry != INT64_MAX) {
		int64_t secs = p.next_expiry - p.now;
		uint64_t ms = secs <= 0 ? 0 : (uint64_t)secs * 1000u;
		uv_timer_start(&w->expiry, on_expiry, ms, 0);
	}
	pass_ctx_cleanup(&p);
}

static void
on_kick(uv_timer_t *t)
{
	pass_run(t->data);
}

static void
on_expiry(uv_timer_t *t)
{
	pass_run(t->data);
}

/* Many changes in one loop turn become one pass. */
void
ly_wapi_pass_schedule(struct ly_wapi *w)
{
	if (!w->handles_init || w->stopping)
		return;
	if (!uv_is_active((uv_handle_t *)&w->kick))
		uv_timer_start(&w->kick, on_kick, 0, 0);
}

/* Starts a stream of `kind` and sends its first response at once (§4.3). */
static void
stream_start(struct ly_wapi *w, struct ly_rpc_call *call, enum stream_kind kind, enum ly_wmsg_empty_kind req_kind,
    const uint8_t *req, size_t len)
{
	struct wconn *c;
	struct stream *st;
	struct pass_ctx p;
	struct ly_error e;
	char details[LY_ERROR_MSG_MAX + 32];

	if (!ly_wapi_call_admit(w, call, &c))
		return;
	/* The requests have no field; unknown ones are allowed (proto3). */
	if (ly_wmsg_parse_empty_request(req_kind, req, len, &e) != LY_OK) {
		(void)snprintf(details, sizeof(details), "invalid request: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		return;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
		return;
	}
	st->w = w;
	st->kind = kind;
	st->call = call;
	st->conn = c;
	ly_queue_insert_tail(&w->streams, &st->link);
	w->n_streams[kind]++;
	ly_rpc_call_set_closed_cb(call, on_stream_closed, st);
	pass_ctx_init(&p, w);
	stream_update(st, &p);
	/* A new SVID stream may hold the earliest expiry: let a pass re-arm the timer. */
	if (kind == ST_X509_SVID && p.next_expiry != INT64_MAX && w->handles_init) {
		uint64_t due = uv_timer_get_due_in(&w->expiry);
		int64_t secs = p.next_expiry - p.now;
		uint64_t ms = secs <= 0 ? 0 : (uint64_t)secs * 1000u;
		if (!uv_is_active((uv_handle_t *)&w->expiry) || ms < due) {
			uv_timer_stop(&w->expiry);
			uv_timer_start(&w->expiry, on_expiry, ms, 0);
		}
	}
	pass_ctx_cleanup(&p);
}

void
ly_wapi_fetch_x509_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	stream_start(arg, call, ST_X509_SVID, LY_WMSG_X509SVID_REQUEST, req, len);
}

void
ly_wapi_fetch_x509_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	stream_start(arg, call, ST_X509_BUNDLES, LY_WMSG_X509BUNDLES_REQUEST, req, len);
}

void
ly_wapi_fetch_jwt_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	stream_start(arg, call, ST_JWT_BUNDLES, LY_WMSG_JWTBUNDLES_REQUEST, req, len);
}

/* ---- FetchJWTSVID ---------------------------------------------------------------------------- */

void
ly_wapi_jwt_req_free(struct jwt_req *r)
{
	ly_queue_remove(&r->link);
	r->w->n_jwt--;
	for (size_t i = 0; i < r->n; i++) {
		free(r->slots[i].entry_id);
		free(r->slots[i].spiffe_id);
		free(r->slots[i].hint);
		ly_free_secret_str(r->slots[i].token);
	}
	free(r->slots);
	for (size_t i = 0; i < r->naud; i++)
		free(r->aud[i]);
	free(r->aud);
	free(r);
}

/* Each token checked once more before it leaves (SPEC §3: never an unverified SVID). */
static ly_status
jwt_check(struct ly_wapi *w, const struct jwt_slot *s, const char *audience, struct ly_error *err)
{
	struct ly_spiffe_id sub;
	json_t *claims = NULL;
	int64_t now = (int64_t)ly_agent_now();
	ly_status rc;

	rc = ly_jwt_validate(s->token, strlen(s->token), audience, ly_wapi_bundles(w), (time_t)now, &sub, &claims, err);
	if (rc != LY_OK)
		return rc;
	json_t *exp = json_object_get(claims, "exp");
	if (strcmp(sub.id, s->spiffe_id) != 0)
		rc = ly_error_set(err, LY_E_INVALID, "token subject is not %s", s->spiffe_id);
	else if (!json_is_number(exp) || json_number_value(exp) <= (double)now)
		rc = ly_error_set(err, LY_E_EXPIRED, "token has expired");
	json_decref(claims);
	return rc;
}

/* Every token is in (or one failed): answer. */
static void
jwt_req_complete(struct jwt_req *r)
{
	struct ly_wapi *w = r->w;
	struct ly_wmsg_jwtsvid *svids = NULL;
	struct ly_buf out = LY_BUF_INIT;
	struct ly_error e;

	if (r->closed) {
		ly_rpc_call_finish(r->call, LY_RPC_CANCELLED, "client went away");
		goto done;
	}
	if (w->stopping) {
		ly_rpc_call_finish(r->call, LY_RPC_UNAVAILABLE, "agent is shutting down");
		goto done;
	}
	if (r->failed) {
		ly_rpc_call_finish(r->call, LY_RPC_UNAVAILABLE, "could not fetch JWT-SVID");
		goto done;
	}
	if (!ly_wapi_conn_verify(r->conn)) {
		w->denied++;
		ly_rpc_call_finish(r->call, r->conn->refuse, r->conn->refuse_msg);
		goto done;
	}
	svids = calloc(r->n, sizeof(*svids));
	if (svids == NULL) {
		ly_rpc_call_finish(r->call, LY_RPC_UNAVAILABLE, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < r->n; i++) {
		if (jwt_check(w, &r->slots[i], r->aud[0], &e) != LY_OK) {
			log_warn("workload api: conn %" PRIu64 ": JWT-SVID for %s not served: %s", r->conn->id,
			    r->slots[i].spiffe_id, e.msg);
			ly_rpc_call_finish(r->call, LY_RPC_UNAVAILABLE, "could not fetch JWT-SVID");
			goto done;
		}
		svids[i].spiffe_id = r->slots[i].spiffe_id;
		svids[i].token = r->slots[i].token;
		svids[i].hint = r->slots[i].hint;
	}
	ly_status rc = ly_wmsg_jwtsvid_response(svids, r->n, &out, &e);
	if (rc == LY_OK && out.len > w->max_response)
		rc = too_large(w, out.len, "JWT-SVIDs", r->n, &e);
	if (rc != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": FetchJWTSVID: %s", r->conn->id, e.msg);
		if (rc == LY_E_LIMIT)
			ly_rpc_call_finish(r->call, LY_RPC_RESOURCE_EXHAUSTED, e.msg);
		else
			ly_rpc_call_finish(r->call, LY_RPC_UNAVAILABLE, "response could not be built");
		goto done;
	}
	if (ly_rpc_call_reply(r->call, out.data, out.len, LY_RPC_WIPE, &e) != LY_OK)
		log_warn("workload api: conn %" PRIu64 ": FetchJWTSVID: %s", r->conn->id, e.msg);
	log_debug("workload api: conn %" PRIu64 ": FetchJWTSVID: %zu token(s)", r->conn->id, r->n);
done:
	ly_buf_free_secret(&out);
	free(svids);
	ly_wapi_jwt_req_free(r);
}

static void
on_jwt(void *arg, const char *token, const struct ly_error *err)
{
	struct jwt_slot *s = arg;
	struct jwt_req *r = s->req;

	if (token == NULL || (s->token = strdup(token)) == NULL) {
		if (!r->failed)
			log_warn("workload api: conn %" PRIu64 ": JWT-SVID for %s: %s", r->conn->id, s->spiffe_id,
			    err != NULL ? err->msg : "out of memory");
		r->failed = true;
	}
	if (--r->outstanding == 0)
		jwt_req_complete(r);
}

static void
on_jwt_closed(struct ly_rpc_call *call, void *arg)
{
	struct jwt_req *r = arg;

	(void)call;
	/* The tokens still come (sync cannot be told): the call is released then. */
	r->closed = true;
}

/* Copies the identities to ask tokens for (the cache's views do not outlive a mutation). */
static ly_status
jwt_req_slots(struct jwt_req *r, const struct ly_cache_identities *ids, const char *want, struct ly_error *err)
{
	size_t n = 0;

	for (size_t i = 0; i < ids->n; i++) {
		if (want == NULL || strcmp(ids->v[i].entry->spiffe_id, want) == 0)
			n++;
		if (want != NULL && n == 1)
			break; /* one token for the ID asked for */
	}
	if (n == 0)
		return LY_E_NOT_FOUND;
	r->slots = calloc(n, sizeof(*r->slots));
	if (r->slots == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	for (size_t i = 0; i < ids->n && r->n < n; i++) {
		const struct ly_entry *en = ids->v[i].entry;
		if (want != NULL && strcmp(en->spiffe_id, want) != 0)
			continue;
		struct jwt_slot *s = &r->slots[r->n++];
		s->req = r;
		s->entry_id = strdup(en->entry_id);
		s->spiffe_id = strdup(en->spiffe_id);
		s->hint = strdup(en->hint != NULL ? en->hint : "");
		if (s->entry_id == NULL || s->spiffe_id == NULL || s->hint == NULL)
			return ly_error_set(err, LY_E_NOMEM, "out of memory");
	}
	return LY_OK;
}

void
ly_wapi_fetch_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_wapi *w = arg;
	struct wconn *c;
	struct ly_wmsg_jwt_request m;
	struct ly_cache_identities ids;
	struct jwt_req *r = NULL;
	struct ly_error e;
	char details[LY_ERROR_MSG_MAX + 32];

	memset(&m, 0, sizeof(m));
	ly_cache_identities_init(&ids);
	if (!ly_wapi_call_admit(w, call, &c))
		goto out;
	if (ly_wmsg_parse_jwtsvid_request(req, len, &m, &e) != LY_OK) {
		(void)snprintf(details, sizeof(details), "invalid request: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		goto out;
	}
	if (ly_cache_query(ly_wapi_cache(w), c->sels, c->n_sels, 0, (int64_t)ly_agent_now(), &ids, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": FetchJWTSVID: %s", c->id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "identities could not be read");
		goto out;
	}
	if (ids.n_entitled == 0 || ids.n == 0) {
		w->denied++;
		ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, "no identity issued");
		goto out;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
		goto out;
	}
	r->w = w;
	r->call = call;
	r->conn = c;
	ly_queue_insert_tail(&w->jwt_reqs, &r->link);
	w->n_jwt++;
	ly_status rc = jwt_req_slots(r, &ids, m.spiffe_id, &e);
	if (rc == LY_E_NOT_FOUND) {
		w->denied++;
		ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, "no identity issued for the requested SPIFFE ID");
		ly_wapi_jwt_req_free(r);
		goto out;
	}
	r->aud = calloc(m.n_audience, sizeof(*r->aud));
	if (rc != LY_OK || r->aud == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
		ly_wapi_jwt_req_free(r);
		goto out;
	}
	for (size_t i = 0; i < m.n_audience; i++) {
		if ((r->aud[i] = strdup(m.audience[i])) == NULL) {
			ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
			ly_wapi_jwt_req_free(r);
			goto out;
		}
		r->naud++;
	}
	ly_rpc_call_set_closed_cb(call, on_jwt_closed, r);
	/* outstanding counts started fetches; +1 holds the request while they start. */
	r->outstanding = 1;
	for (size_t i = 0; i < r->n; i++) {
		struct jwt_slot *s = &r->slots[i];
		r->outstanding++;
		if (w->src.fetch_jwt(w->src.arg, s->entry_id, (const char *const *)r->aud, r->naud, on_jwt, s, &e) !=
		    LY_OK) {
			r->outstanding--;
			log_warn("workload api: conn %" PRIu64 ": JWT-SVID for %s: %s", c->id, s->spiffe_id, e.msg);
			r->failed = true;
			break;
		}
	}
	if (--r->outstanding == 0)
		jwt_req_complete(r);
out:
	ly_wmsg_jwt_request_cleanup(&m);
	ly_cache_identities_cleanup(&ids);
}

/* ---- ValidateJWTSVID --------------------------------------------------------------------------- */

void
ly_wapi_validate_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_wapi *w = arg;
	struct wconn *c;
	struct ly_wmsg_validate_request m;
	struct ly_spiffe_id sub;
	json_t *claims = NULL;
	struct ly_buf out = LY_BUF_INIT;
	struct ly_cache_identities ids;
	struct ly_bundle_set *view = NULL;
	struct ly_error e;
	char details[LY_ERROR_MSG_MAX + 32];

	memset(&m, 0, sizeof(m));
	ly_cache_identities_init(&ids);
	if (!ly_wapi_call_admit(w, call, &c))
		goto out;
	if (ly_wmsg_parse_validate_request(req, len, &m, &e) != LY_OK) {
		(void)snprintf(details, sizeof(details), "invalid request: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		goto out;
	}
	/*
	 * The bundles this caller may see (SPIRE's getWorkloadBundles): ours,
	 * and the federated ones of its entries; a caller with no entry
	 * validates against ours alone.
	 */
	struct ly_cache *cache = ly_wapi_cache(w);
	if (ly_cache_query(cache, c->sels, c->n_sels, LY_CACHE_QUERY_ALL_HINTS, (int64_t)ly_agent_now(), &ids, &e) !=
		LY_OK ||
	    ly_fedset_for_caller(ly_wapi_bundles(w), ly_cache_trust_domain(cache), &ids, &view, NULL, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": ValidateJWTSVID: %s", c->id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "bundles could not be read");
		goto out;
	}
	if (ly_jwt_validate(m.svid, m.svid_len, m.audience, view, ly_agent_now(), &sub, &claims, &e) != LY_OK) {
		/* lib/jwt never puts the token in its messages. */
		log_debug("workload api: conn %" PRIu64 ": ValidateJWTSVID refused: %s", c->id, e.msg);
		(void)snprintf(details, sizeof(details), "invalid JWT-SVID: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		goto out;
	}
	if (!ly_wapi_conn_verify(c)) {
		w->denied++;
		ly_rpc_call_finish(call, c->refuse, c->refuse_msg);
		goto out;
	}
	if (ly_wmsg_validate_response(sub.id, claims, &out, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": ValidateJWTSVID: %s", c->id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "claims could not be encoded");
		goto out;
	}
	if (ly_rpc_call_reply(call, out.data, out.len, 0, &e) != LY_OK)
		log_warn("workload api: conn %" PRIu64 ": ValidateJWTSVID: %s", c->id, e.msg);
out:
	json_decref(claims);
	ly_buf_free(&out);
	ly_bundle_set_free(view);
	ly_cache_identities_cleanup(&ids);
	ly_wmsg_validate_request_cleanup(&m);
}

/* ---- health ------------------------------------------------------------------------------------- */

/*
 * grpc.health.v1.Health/Check: HealthCheckResponse{status = 1 (SERVING) or
 * 2 (NOT_SERVING)}, field 1 varint, written by hand (no proto for it here).
 * The agent has one health, for "" and "SpiffeWorkloadAPI"; another service
 * is NOT_FOUND, as grpc/health/v1/health.proto asks (a probe with a wrong
 * name must not pass); a malformed request INVALID_ARGUMENT.
 */
void
ly_wapi_health_check(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_wapi *w = arg;
	uint8_t resp[2] = { 0x08, 0x01 };
	struct ly_error e;
	bool known;

	if (ly_wmsg_parse_health_request(req, len, &known, &e) != LY_OK) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg);
		return;
	}
	if (!known) {
		ly_rpc_call_finish(call, LY_RPC_NOT_FOUND, "unknown service");
		return;
	}
	if (w->stopping || !ly_wapi_ready(w))
		resp[1] = 0x02;
	if (ly_rpc_call_reply(call, resp, sizeof(resp), 0, &e) != LY_OK)
		log_warn("workload api: health: %s", e.msg);
}
