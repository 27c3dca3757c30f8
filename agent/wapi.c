/*
 * wapi.c: the SPIFFE Workload API (SPEC §3; SPIFFE Workload API and
 * Workload Endpoint standards) on the agent's Unix socket.
 *
 * The socket (SPEC §2): its directory is created 0755 (others may search
 * it; an existing one must be ours and writable by us alone, so nobody
 * else can swap the socket), and the socket is bound with umask 0 so it
 * is born 0777: every local user may connect, the API authorizes by
 * attestation, not by file mode. No chmod after bind, so no window.
 *
 * A connection (Workload Endpoint §5, SPEC §5):
 *   1. libuv accepts it; SO_PEERCRED gives pid, uid, gid. PID 0 (a caller
 *      in a PID namespace we cannot see) is refused: PERMISSION_DENIED.
 *   2. A pidfd for that process: SO_PEERPIDFD (Linux 6.5: the kernel's
 *      own reference to the process that connected, immune to PID reuse),
 *      else pidfd_open(pid); and its start time (procfs.h). Both stay with
 *      the connection.
 *   3. Workload attestation, once per connection, off the loop: unix
 *      always (attest_unix.h, on a worker), k8s when enabled
 *      (attest_k8s.h); then ly_proc_verify, so a PID reused meanwhile
 *      yields nothing.
 *   4. Only then is the connection handed to gRPC (ly_rpc_server_add_fd),
 *      its context holding the selectors. So no call can arrive before
 *      attestation has finished: the client's first bytes wait in the
 *      socket buffer, and its first call is answered as soon as
 *      attestation is done (the choice between "queue" and "UNAVAILABLE":
 *      neither is needed). A transient attestation failure (kubelet
 *      down, /proc unreadable) closes the connection: the client sees
 *      UNAVAILABLE and reconnects, and is attested afresh. A permanent
 *      one (PID 0; the process gone or its PID reused) is served with
 *      every call refused PERMISSION_DENIED, so the client learns why.
 * Before every answer (each unary reply, each stream message) the caller
 * is checked again (ly_unix_peer_verify: the pidfd still names a live
 * process, its start time is unchanged, and it runs the executable it ran
 * at accept: no exec since); once that fails the connection is
 * refused PERMISSION_DENIED for good and its streams end so: an identity
 * never goes to whoever holds the PID now.
 *
 * Calls, in this order (SPIRE's order):
 *   - metadata `workload.spiffe.io: true`, else INVALID_ARGUMENT
 *     (Workload Endpoint §6; /SpiffeWorkloadAPI/ only: Envoy's SDS, served
 *     here too by sds.c, sends none, SPEC §8);
 *   - the agent stopping: UNAVAILABLE;
 *   - the connection refused (above): PERMISSION_DENIED;
 *   - the agent not ready (the source's ready() false: no SVID of its own,
 *     bundle or entries yet, and nothing cached): UNAVAILABLE (clients
 *     retry with a backoff);
 *   - then each method's own rules (below).
 * A caller entitled to no entry gets PERMISSION_DENIED from
 * FetchX509SVID, FetchX509Bundles, FetchJWTBundles and FetchJWTSVID, as
 * SPIRE does by default (Workload API §5.2, §6.2: "not entitled to
 * receive"); ValidateJWTSVID needs no entitlement.
 *
 * Bundles (SPEC §3, §9): a caller sees our bundle and the federated
 * bundles of the trust domains its entries federate with, never another
 * workload's (fedset.h): FetchX509SVID's federated_bundles for the SVIDs in
 * the response, the bundle streams for every entry it is entitled to. A
 * caller whose entries federate with nothing gets the one shared response
 * of the pass. ValidateJWTSVID validates against the same view (the
 * caller's entries; ours alone for a caller with none), as SPIRE does.
 *
 * Streams (Workload API §4.3): the first response at once; then, on
 * ly_wapi_cache_changed / ly_wapi_bundle_changed (coalesced into one pass
 * on the next loop turn) and when an SVID on a stream expires, each
 * stream's full response is rebuilt and sent only if its SHA-256 differs
 * from the last one sent. FetchX509SVID sends only SVIDs valid now (a
 * client never sees an expired SVID; the cache holds only verified ones),
 * waits while the caller is entitled but has no SVID yet, and ends with
 * PERMISSION_DENIED once the caller's last entry is gone. Packed
 * responses hold private keys: they go out with LY_RPC_WIPE and our copy
 * is wiped.
 *
 * FetchJWTSVID: at least one audience (INVALID_ARGUMENT); the optional
 * spiffe_id must be one of the caller's (PERMISSION_DENIED); one token per
 * identity (or the one asked for) through the source's fetch_jwt, each checked
 * again before it is sent (signature, audience, expiry, subject); a
 * failure fails the call UNAVAILABLE (SPIRE). Tokens are never logged.
 * ValidateJWTSVID: audience and svid required (INVALID_ARGUMENT); lib/jwt
 * validation against the bundles (INVALID_ARGUMENT with the reason when
 * it fails); returns the SPIFFE ID and the claims as a
 * google.protobuf.Struct.
 *
 * grpc.health.v1.Health/Check (an extra service, Workload Endpoint §7):
 * SERVING when the agent is ready; what `lanyard-agent healthcheck` and
 * grpc-health-probe ask. A service name other than "" or
 * "SpiffeWorkloadAPI" is NOT_FOUND (the health protocol's rule).
 *
 * Threads: the loop thread only. Lifetimes: a connection lives until both
 * its attestation has ended and gRPC released its context (conn_release);
 * a call's connection outlives the call (rpc.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <uv.h>

#include "agent/wapi.h"
#include "agent/attest_k8s.h"
#include "agent/attest_unix.h"
#include "agent/cache.h"
#include "agent/fedset.h"
#include "agent/procfs.h"
#include "agent/sds.h" /* SDS hook */
#include "agent/workload_msg.h"
#include "lib/buf.h"
#include "lib/config.h"
#include "lib/bundle.h"
#include "lib/jwt.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/fsperm.h"
#include "lib/sockpath.h"
#include "lib/spiffeid.h"
#include "rpc/keycount.h"
#include "rpc/rpc.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

#define WAPI_HEADER "workload.spiffe.io"
#define M(name) "/SpiffeWorkloadAPI/" name
#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define LISTEN_BACKLOG 1024

/* ---- lists ------------------------------------------------------------------------ */

struct link {
	struct link *prev, *next;
};

static void
list_init(struct link *l)
{
	l->prev = l->next = l;
}

static void
list_add(struct link *head, struct link *l)
{
	l->next = head;
	l->prev = head->prev;
	head->prev->next = l;
	head->prev = l;
}

static void
list_del(struct link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = l;
}

#define container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

/* ---- state ------------------------------------------------------------------------ */

enum stream_kind {
	ST_X509_SVID = 0,
	ST_X509_BUNDLES = 1,
	ST_JWT_BUNDLES = 2,
};
#define ST_KINDS 3

struct ly_wapi {
	struct ly_agent *agent;
	struct ly_wapi_source src; /* the cache, readiness, JWT-SVIDs (wapi.h) */
	struct ly_rpc_server *srv;
	uv_pipe_t listener;
	uv_timer_t kick;   /* one pass over the streams on the next loop turn */
	uv_timer_t expiry; /* the next expiry of an SVID on a stream */
	bool handles_init, listening, bound, started, stopping, freeing;
	int open_handles; /* initialized handles whose close callback has not run */
	struct ly_unix_attestor *unix_att;
	struct ly_k8s_attestor *k8s_att;
	char *kubelet_host;
	struct link conns;    /* every live connection */
	struct link streams;  /* open streams */
	struct link jwt_reqs; /* FetchJWTSVID calls waiting for tokens */
	struct ly_sds *sds;   /* SDS hook: Envoy SDS v3 on this socket (sds.h) */
	size_t n_conns, n_attesting, n_jwt;
	struct ly_keycount uid_conns; /* open connections per uid (LY_WAPI_CONNS_PER_UID_MAX) */
	struct {
		uid_t uid;
		uint64_t until; /* uv_now; 0: free slot */
	} penalty[LY_WAPI_PENALTY_SLOTS]; /* LY_WAPI_SHED_PENALTY_MS */
	size_t n_streams[ST_KINDS];
	uint64_t next_conn_id;
	/* Counters (for metrics). */
	uint64_t accepted, refused_busy, refused_uid, refused_penalty, attest_failed, attest_denied, calls, denied, sent;
};

/* One Workload API connection (the conn_ctx of its calls). */
struct wconn {
	struct ly_wapi *w;
	struct link link;
	uint64_t id;
	int refs;       /* the attestation phase, and gRPC's context once added */
	uid_t uid;      /* counted in w->uid_conns until the connection is freed */
	uv_pipe_t *pipe; /* holds the accepted fd until attestation ends */
	struct ly_unix_peer peer;
	unsigned attesting; /* attestors still running */
	uint64_t accepted_ns; /* uv_hrtime at accept: the attestation latency metric */
	ly_status attest_rc;
	char attest_msg[LY_ERROR_MSG_MAX + 32];
	struct ly_selector *sels;
	size_t n_sels;
	/* LY_RPC_OK when attested; else every call is refused with it. */
	enum ly_rpc_code refuse;
	const char *refuse_msg;
};

struct stream {
	struct link link;
	struct ly_wapi *w;
	enum stream_kind kind;
	struct ly_rpc_call *call;
	struct wconn *conn;
	bool sent;
	uint8_t digest[SHA256_DIGEST_LENGTH];
};

struct jwt_slot {
	struct jwt_req *req;
	char *entry_id, *spiffe_id, *hint;
	char *token; /* a bearer secret: wiped */
};

struct jwt_req {
	struct link link;
	struct ly_wapi *w;
	struct ly_rpc_call *call;
	struct wconn *conn;
	char **aud;
	size_t naud;
	struct jwt_slot *slots;
	size_t n, outstanding;
	bool closed, failed;
};

static void pass_schedule(struct ly_wapi *w);

/* ---- readiness and the caller ------------------------------------------------------------- */

static struct ly_cache *
wapi_cache(struct ly_wapi *w)
{
	return w->src.cache != NULL ? w->src.cache(w->src.arg) : NULL;
}

/*
 * SPEC §3: UNAVAILABLE while starting (until the entries are known too: before the server's first snapshot
 * every caller would look entitled to nothing), unless something cached can be served already.
 */
static bool
wapi_ready(struct ly_wapi *w)
{
	if (w->src.ready == NULL || wapi_cache(w) == NULL)
		return false;
	return w->src.ready(w->src.arg);
}

/*
 * The caller is still the process attested at accept (procfs.h). Once not,
 * never again: the connection is refused from then on.
 */
static bool
conn_verify(struct wconn *c)
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
static const struct ly_bundle_set *
wapi_bundles(struct ly_wapi *w)
{
	struct ly_cache *c = wapi_cache(w);
	return c != NULL ? ly_cache_bundles(c) : NULL;
}

/* ---- answering -------------------------------------------------------------------------- */

/* The common checks of every Workload API call; false when `call` was answered. */
static bool
call_admit(struct ly_wapi *w, struct ly_rpc_call *call, struct wconn **out)
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
		/* Every connection comes through on_connection: a bug. */
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "connection not attested");
		return false;
	}
	if (c->refuse != LY_RPC_OK) {
		w->denied++;
		ly_rpc_call_finish(call, c->refuse, c->refuse_msg);
		return false;
	}
	if (!wapi_ready(w)) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "agent is not ready yet");
		return false;
	}
	*out = c;
	return true;
}

/* ---- streams ------------------------------------------------------------------------------ */

static const char *const stream_names[ST_KINDS] = { "FetchX509SVID", "FetchX509Bundles", "FetchJWTBundles" };

static void
stream_free(struct stream *st)
{
	list_del(&st->link);
	st->w->n_streams[st->kind]--;
	free(st);
}

static void
stream_end(struct stream *st, enum ly_rpc_code code, const char *details)
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
	stream_end(st, LY_RPC_CANCELLED, "client went away");
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
	p->cache = wapi_cache(w);
	p->set = wapi_bundles(w);
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

	if (!conn_verify(c)) {
		st->w->denied++;
		stream_end(st, c->refuse, c->refuse_msg);
		return;
	}
	if (p->cache == NULL)
		return;
	ly_cache_identities_init(&ids);
	unsigned flags = st->kind == ST_X509_SVID ? LY_CACHE_QUERY_X509 : 0;
	if (ly_cache_query(p->cache, c->sels, c->n_sels, flags, p->now, &ids, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": %s: %s", c->id, stream_names[st->kind], e.msg);
		goto out;
	}
	if (ids.n_entitled == 0) {
		st->w->denied++;
		stream_end(st, LY_RPC_PERMISSION_DENIED, "no identity issued");
		goto out;
	}
	if (st->kind != ST_X509_SVID) {
		/* Our bundle and the federated ones of every entry the caller is entitled to (fedset.h). */
		ly_error_clear(&e);
		if (ly_fedset_for_caller(p->set, ly_cache_trust_domain(p->cache), &ids, &view, &nfed, &e) != LY_OK) {
			log_warn("workload api: %s: %s", stream_names[st->kind], e.msg);
			goto out;
		}
		if (nfed == 0) {
			if (shared_msg(p, st->kind, &e) != LY_OK) {
				log_warn("workload api: %s: %s", stream_names[st->kind], e.msg);
				goto out;
			}
			stream_send(st, &p->msg[st->kind], p->digest[st->kind], 0);
			goto out;
		}
		if (bundles_msg(st->kind, view, &msg, &e) != LY_OK) {
			log_warn("workload api: conn %" PRIu64 ": %s: %s", c->id, stream_names[st->kind], e.msg);
			goto out;
		}
		SHA256(msg.data, msg.len, digest);
		stream_send(st, &msg, digest, 0);
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
	if (ly_fedset_for_caller(p->set, ly_cache_trust_domain(p->cache), &ids, &view, NULL, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": FetchX509SVID: %s", c->id, e.msg);
		goto out;
	}
	if (ly_wmsg_x509svid_response(&ids, own, view, &msg, &e) != LY_OK) {
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
	struct link *l, *next;

	if (w->stopping)
		return;
	pass_ctx_init(&p, w);
	for (l = w->streams.next; l != &w->streams; l = next) {
		next = l->next;
		stream_update(container_of(l, struct stream, link), &p);
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
static void
pass_schedule(struct ly_wapi *w)
{
	if (!w->handles_init || w->stopping)
		return;
	if (!uv_is_active((uv_handle_t *)&w->kick))
		uv_timer_start(&w->kick, on_kick, 0, 0);
}

void
ly_wapi_cache_changed(struct ly_wapi *w)
{
	if (w != NULL)
		pass_schedule(w);
}

void
ly_wapi_counts(const struct ly_wapi *w, size_t *conns, size_t *streams)
{
	*conns = 0;
	*streams = 0;
	if (w == NULL)
		return;
	*conns = w->n_conns;
	for (size_t k = 0; k < sizeof(w->n_streams) / sizeof(w->n_streams[0]); k++)
		*streams += w->n_streams[k];
	size_t sds_streams; /* SDS hook: Envoy's StreamSecrets count too */
	uint64_t sds_sent;
	ly_sds_counts(w->sds, &sds_streams, &sds_sent);
	*streams += sds_streams;
}

void
ly_wapi_bundle_changed(struct ly_wapi *w)
{
	if (w != NULL)
		pass_schedule(w);
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

	if (!call_admit(w, call, &c))
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
	list_add(&w->streams, &st->link);
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

static void
h_fetch_x509_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	stream_start(arg, call, ST_X509_SVID, LY_WMSG_X509SVID_REQUEST, req, len);
}

static void
h_fetch_x509_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	stream_start(arg, call, ST_X509_BUNDLES, LY_WMSG_X509BUNDLES_REQUEST, req, len);
}

static void
h_fetch_jwt_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	stream_start(arg, call, ST_JWT_BUNDLES, LY_WMSG_JWTBUNDLES_REQUEST, req, len);
}

/* ---- FetchJWTSVID ---------------------------------------------------------------------------- */

static void
jwt_req_free(struct jwt_req *r)
{
	list_del(&r->link);
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

	rc = ly_jwt_validate(s->token, strlen(s->token), audience, wapi_bundles(w), (time_t)now, &sub, &claims, err);
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
	if (!conn_verify(r->conn)) {
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
	if (ly_wmsg_jwtsvid_response(svids, r->n, &out, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": FetchJWTSVID: %s", r->conn->id, e.msg);
		ly_rpc_call_finish(r->call, LY_RPC_UNAVAILABLE, "response could not be built");
		goto done;
	}
	if (ly_rpc_call_reply(r->call, out.data, out.len, LY_RPC_WIPE, &e) != LY_OK)
		log_warn("workload api: conn %" PRIu64 ": FetchJWTSVID: %s", r->conn->id, e.msg);
	log_debug("workload api: conn %" PRIu64 ": FetchJWTSVID: %zu token(s)", r->conn->id, r->n);
done:
	ly_buf_free_secret(&out);
	free(svids);
	jwt_req_free(r);
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

static void
h_fetch_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
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
	if (!call_admit(w, call, &c))
		goto out;
	if (ly_wmsg_parse_jwtsvid_request(req, len, &m, &e) != LY_OK) {
		(void)snprintf(details, sizeof(details), "invalid request: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		goto out;
	}
	if (ly_cache_query(wapi_cache(w), c->sels, c->n_sels, 0, (int64_t)ly_agent_now(), &ids, &e) != LY_OK) {
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
	list_add(&w->jwt_reqs, &r->link);
	w->n_jwt++;
	ly_status rc = jwt_req_slots(r, &ids, m.spiffe_id, &e);
	if (rc == LY_E_NOT_FOUND) {
		w->denied++;
		ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, "no identity issued for the requested SPIFFE ID");
		jwt_req_free(r);
		goto out;
	}
	r->aud = calloc(m.n_audience, sizeof(*r->aud));
	if (rc != LY_OK || r->aud == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
		jwt_req_free(r);
		goto out;
	}
	for (size_t i = 0; i < m.n_audience; i++) {
		if ((r->aud[i] = strdup(m.audience[i])) == NULL) {
			ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
			jwt_req_free(r);
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

static void
h_validate_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
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
	if (!call_admit(w, call, &c))
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
	struct ly_cache *cache = wapi_cache(w);
	if (ly_cache_query(cache, c->sels, c->n_sels, 0, (int64_t)ly_agent_now(), &ids, &e) != LY_OK ||
	    ly_fedset_for_caller(wapi_bundles(w), ly_cache_trust_domain(cache), &ids, &view, NULL, &e) != LY_OK) {
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
	if (!conn_verify(c)) {
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
static void
h_health_check(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
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
	if (w->stopping || !wapi_ready(w))
		resp[1] = 0x02;
	if (ly_rpc_call_reply(call, resp, sizeof(resp), 0, &e) != LY_OK)
		log_warn("workload api: health: %s", e.msg);
}

/* ---- SDS hook: Envoy SDS v3 (sds.h) on this socket, attested like any workload ---- */

static void *
sds_admit(void *arg, struct ly_rpc_call *call)
{
	struct wconn *c;
	return call_admit(arg, call, &c) ? c : NULL;
}

static bool
sds_verify(void *arg, void *conn, enum ly_rpc_code *code, const char **details)
{
	struct wconn *c = conn;
	(void)arg;
	if (conn_verify(c))
		return true;
	c->w->denied++;
	*code = c->refuse;
	*details = c->refuse_msg;
	return false;
}

static void
sds_caller(void *conn, const struct ly_selector **sels, size_t *n, uint64_t *id)
{
	const struct wconn *c = conn;
	*sels = c->sels;
	*n = c->n_sels;
	*id = c->id;
}

static struct ly_cache *
sds_cache(void *arg)
{
	return wapi_cache(arg);
}

static void
h_sds_stream(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	ly_sds_stream_secrets(((struct ly_wapi *)arg)->sds, call, req, len);
}

static void
h_sds_fetch(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	ly_sds_fetch_secrets(((struct ly_wapi *)arg)->sds, call, req, len);
}

static void
h_sds_delta(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	ly_sds_delta_secrets(((struct ly_wapi *)arg)->sds, call, req, len);
}

static const struct ly_rpc_method methods[] = {
	{ M("FetchX509SVID"), LY_RPC_SERVER_STREAM, h_fetch_x509_svid },
	{ M("FetchX509Bundles"), LY_RPC_SERVER_STREAM, h_fetch_x509_bundles },
	{ M("FetchJWTSVID"), LY_RPC_UNARY, h_fetch_jwt_svid },
	{ M("FetchJWTBundles"), LY_RPC_SERVER_STREAM, h_fetch_jwt_bundles },
	{ M("ValidateJWTSVID"), LY_RPC_UNARY, h_validate_jwt_svid },
	{ HEALTH_CHECK, LY_RPC_UNARY, h_health_check },
	/* SDS hook */
	{ LY_SDS_SERVICE "StreamSecrets", LY_RPC_BIDI_STREAM, h_sds_stream },
	{ LY_SDS_SERVICE "FetchSecrets", LY_RPC_UNARY, h_sds_fetch },
	{ LY_SDS_SERVICE "DeltaSecrets", LY_RPC_BIDI_STREAM, h_sds_delta },
};

/* ---- connections ------------------------------------------------------------------------------- */

static void wapi_maybe_free(struct ly_wapi *w);

static void
free_handle_cb(uv_handle_t *h)
{
	free(h);
}

static void
conn_unref(struct wconn *c)
{
	if (--c->refs > 0)
		return;
	struct ly_wapi *w = c->w;
	list_del(&c->link);
	w->n_conns--;
	(void)ly_keycount_give(&w->uid_conns, &c->uid, sizeof(c->uid));
	if (w->src.memory_burst != NULL)
		w->src.memory_burst(w->src.arg); /* a thousand connections leave freed memory behind */
	if (c->peer.pidfd >= 0)
		(void)close(c->peer.pidfd);
	ly_selectors_free(c->sels, c->n_sels);
	free(c);
	wapi_maybe_free(w);
}

/*
 * rpc.h conn_keep: under the memory guard, a connection whose caller is
 * entitled to an identity is kept (a real workload, even while its call is
 * slow to arrive); one entitled to nothing (the floods of issue 19 came
 * from such a user) is shed.
 */
static bool
conn_keep(void *conn_ctx, void *arg)
{
	struct wconn *c = conn_ctx;
	struct ly_wapi *w = arg;
	struct ly_cache_identities ids;
	bool keep = false;

	if (c->refuse != LY_RPC_OK || c->n_sels == 0 || wapi_cache(w) == NULL)
		return false;
	ly_cache_identities_init(&ids);
	if (ly_cache_query(wapi_cache(w), c->sels, c->n_sels, 0, (int64_t)ly_agent_now(), &ids, NULL) == LY_OK)
		keep = ids.n_entitled > 0;
	ly_cache_identities_cleanup(&ids);
	return keep;
}

/* Whether `uid` is in its LY_WAPI_SHED_PENALTY_MS. */
static bool
uid_penalized(const struct ly_wapi *w, uid_t uid, uint64_t now)
{
	for (size_t i = 0; i < LY_WAPI_PENALTY_SLOTS; i++) {
		if (w->penalty[i].until > now && w->penalty[i].uid == uid)
			return true;
	}
	return false;
}

/* rpc.h conn_shed: the caller's uid gets LY_WAPI_SHED_PENALTY_MS (its slot, a free one, or the oldest). */
static void
conn_shed(void *conn_ctx, void *arg)
{
	struct wconn *c = conn_ctx;
	struct ly_wapi *w = arg;
	uint64_t now = uv_now(w->agent->loop);
	size_t slot = 0;

	for (size_t i = 0; i < LY_WAPI_PENALTY_SLOTS; i++) {
		if (w->penalty[i].uid == c->uid && w->penalty[i].until != 0) {
			slot = i;
			break;
		}
		if (w->penalty[i].until < w->penalty[slot].until)
			slot = i;
	}
	if (w->penalty[slot].until <= now || w->penalty[slot].uid != c->uid)
		log_warn("workload api: uid %u: connections shed under memory pressure; its new ones are refused "
			 "for %d s", (unsigned)c->uid, LY_WAPI_SHED_PENALTY_MS / 1000);
	w->penalty[slot].uid = c->uid;
	w->penalty[slot].until = now + LY_WAPI_SHED_PENALTY_MS;
}

/* gRPC is done with the connection (rpc.h conn_release). */
static void
conn_release(void *conn_ctx, void *arg)
{
	(void)arg;
	conn_unref(conn_ctx);
}

/* Appends `sels` to the connection's selectors (taking them). */
static ly_status
conn_add_selectors(struct wconn *c, struct ly_selector *sels, size_t n)
{
	if (n == 0) {
		free(sels);
		return LY_OK;
	}
	if (c->n_sels == 0) {
		c->sels = sels;
		c->n_sels = n;
		return LY_OK;
	}
	if (c->n_sels + n > LY_WORKLOAD_SELECTORS_MAX) {
		ly_selectors_free(sels, n);
		return LY_E_LIMIT;
	}
	struct ly_selector *all = realloc(c->sels, (c->n_sels + n) * sizeof(*all));
	if (all == NULL) {
		ly_selectors_free(sels, n);
		return LY_E_NOMEM;
	}
	memcpy(all + c->n_sels, sels, n * sizeof(*sels));
	free(sels); /* the strings moved into `all` */
	c->sels = all;
	c->n_sels += n;
	return LY_OK;
}

/* Records an attestor's failure; the first one is kept. */
static void
conn_attest_failed(struct wconn *c, ly_status rc, const struct ly_error *err, const char *who)
{
	if (c->attest_rc != LY_OK)
		return;
	c->attest_rc = rc;
	(void)snprintf(c->attest_msg, sizeof(c->attest_msg), "%s: %s", who, err != NULL ? err->msg : "failed");
}

/* Every attestor has answered: hand the connection to gRPC, or close it. */
static void
conn_attested(struct wconn *c)
{
	struct ly_wapi *w = c->w;
	struct ly_error e;
	uv_os_fd_t fd;

	w->n_attesting--;
	if (w->agent->m_attest_seconds != NULL &&
	    ly_metric_observe(w->agent->m_attest_seconds, NULL, (double)(uv_hrtime() - c->accepted_ns) / 1e9, &e) !=
		LY_OK)
		log_debug("workload api: attestation metric: %s", e.msg);
	if (w->stopping)
		goto close;
	if (c->attest_rc == LY_OK &&
	    ly_unix_peer_verify(w->agent->cfg.proc_root, &c->peer, &e) != LY_OK)
		conn_attest_failed(c, e.code, &e, "after attestation");
	if (c->attest_rc == LY_E_UNTRUSTED || c->attest_rc == LY_E_UNSUPPORTED) {
		/* Permanent: serve the connection to tell the client why. */
		w->attest_denied++;
		log_info("workload api: conn %" PRIu64 " (pid %d uid %u): refused: %s", c->id, (int)c->peer.pid,
		    (unsigned)c->peer.uid, c->attest_msg);
		c->refuse = LY_RPC_PERMISSION_DENIED;
		c->refuse_msg = "workload attestation failed: the caller could not be identified";
		ly_selectors_free(c->sels, c->n_sels);
		c->sels = NULL;
		c->n_sels = 0;
	} else if (c->attest_rc != LY_OK) {
		/* Transient: close; the client reconnects and is attested again. */
		w->attest_failed++;
		log_warn("workload api: conn %" PRIu64 " (pid %d uid %u): attestation failed, closing: %s", c->id,
		    (int)c->peer.pid, (unsigned)c->peer.uid, c->attest_msg);
		goto close;
	} else {
		log_debug("workload api: conn %" PRIu64 " (pid %d uid %u): attested, %zu selectors", c->id,
		    (int)c->peer.pid, (unsigned)c->peer.uid, c->n_sels);
	}
	if (uv_fileno((uv_handle_t *)c->pipe, &fd) != 0) {
		log_warn("workload api: conn %" PRIu64 ": connection lost", c->id);
		goto close;
	}
	if (ly_rpc_server_add_fd(w->srv, fd, c, &e) != LY_OK) {
		log_warn("workload api: conn %" PRIu64 ": not served: %s", c->id, e.msg);
		goto close;
	}
	c->refs++; /* gRPC's, until conn_release */
close:
	/* libuv cannot let go of an fd: close its handle, gRPC holds a duplicate. */
	uv_close((uv_handle_t *)c->pipe, free_handle_cb);
	c->pipe = NULL;
	conn_unref(c);
}

static void
on_unix_attested(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	struct wconn *c = arg;

	if (rc != LY_OK)
		conn_attest_failed(c, rc, err, "unix");
	else if (c->attest_rc == LY_OK && conn_add_selectors(c, sels, n) != LY_OK)
		conn_attest_failed(c, LY_E_LIMIT, NULL, "unix: too many selectors");
	else if (c->attest_rc != LY_OK)
		ly_selectors_free(sels, n);
	if (--c->attesting == 0)
		conn_attested(c);
}

static void
on_k8s_attested(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	struct wconn *c = arg;

	if (rc != LY_OK)
		conn_attest_failed(c, rc, err, "k8s");
	else if (c->attest_rc == LY_OK && conn_add_selectors(c, sels, n) != LY_OK)
		conn_attest_failed(c, LY_E_LIMIT, NULL, "k8s: too many selectors");
	else if (c->attest_rc != LY_OK)
		ly_selectors_free(sels, n);
	if (--c->attesting == 0)
		conn_attested(c);
}

/* A pidfd for the caller: the kernel's (SO_PEERPIDFD), else pidfd_open; -1 where neither works. */
static int
peer_pidfd(int fd, pid_t pid)
{
	int pidfd = -1;
	socklen_t len = sizeof(pidfd);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && len == sizeof(pidfd) && pidfd >= 0)
		return pidfd;
	long r = syscall(SYS_pidfd_open, pid, 0);
	return r >= 0 ? (int)r : -1;
}

/*
 * Reads who connected and starts attesting. Returns false when the
 * connection is to be closed at once (nothing else was started).
 */
static bool
conn_start(struct wconn *c, int fd)
{
	struct ly_wapi *w = c->w;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct ly_error e;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		log_warn("workload api: no peer credentials: %s", strerror(errno));
		return false;
	}
	c->peer.pid = cred.pid;
	c->peer.uid = cred.uid;
	c->peer.gid = cred.gid;
	c->peer.pidfd = -1;
	c->accepted_ns = uv_hrtime();
	w->n_attesting++;
	c->attesting = 1; /* held while the attestors start */
	if (cred.pid <= 0) {
		ly_error_set(&e, LY_E_UNSUPPORTED, "the caller's PID is not visible to the agent (another PID namespace; "
		    "in Kubernetes the agent needs hostPID)");
		conn_attest_failed(c, LY_E_UNSUPPORTED, &e, "peer");
		goto started;
	}
	/* The pidfd first, then the start time: the pair names the process that connected. */
	c->peer.pidfd = peer_pidfd(fd, cred.pid);
	if (ly_proc_start_time(w->agent->cfg.proc_root, cred.pid, &c->peer.start_time, &e) != LY_OK) {
		conn_attest_failed(c, LY_E_UNTRUSTED, &e, "peer");
		goto started;
	}
	c->peer.has_start_time = true;
	/* And what it runs: an exec after this is refused (procfs.h struct ly_proc_exe). */
	if (ly_proc_exe_id(w->agent->cfg.proc_root, cred.pid, &c->peer.exe, &e) != LY_OK) {
		conn_attest_failed(c, LY_E_UNTRUSTED, &e, "peer");
		goto started;
	}
	c->attesting++;
	if (ly_unix_attest_start(w->agent->loop, w->unix_att, &c->peer, on_unix_attested, c, NULL, &e) != LY_OK) {
		c->attesting--;
		conn_attest_failed(c, e.code, &e, "unix");
		goto started;
	}
	if (w->k8s_att != NULL) {
		c->attesting++;
		if (ly_k8s_attest_start(w->k8s_att, cred.pid, w->agent->cfg.proc_root, on_k8s_attested, c, NULL, &e) !=
		    LY_OK) {
			c->attesting--;
			conn_attest_failed(c, e.code, &e, "k8s");
		}
	}
started:
	if (--c->attesting == 0)
		conn_attested(c);
	return true;
}

static void
on_connection(uv_stream_t *listener, int status)
{
	struct ly_wapi *w = listener->data;
	struct wconn *c = NULL;
	uv_pipe_t *pipe;
	uv_os_fd_t fd;

	if (status < 0) {
		log_warn("workload api: accept: %s", uv_strerror(status));
		return;
	}
	pipe = malloc(sizeof(*pipe));
	if (pipe == NULL)
		return;
	if (uv_pipe_init(w->agent->loop, pipe, 0) != 0) {
		free(pipe);
		return;
	}
	if (uv_accept(listener, (uv_stream_t *)pipe) != 0 || uv_fileno((uv_handle_t *)pipe, &fd) != 0)
		goto close;
	w->accepted++;
	if (w->stopping)
		goto close;
	/* Load shedding: the client sees UNAVAILABLE and retries (Workload Endpoint §6). */
	if (w->n_conns >= LY_WAPI_CONNS_MAX) {
		if (w->refused_busy++ % 1000 == 0)
			log_warn("workload api: %zu connections open: refusing new ones", w->n_conns);
		goto close;
	}
	/* One local user cannot take the others' share (issue 19): at most
	 * LY_WAPI_CONNS_PER_UID_MAX connections per uid; past it the client sees
	 * UNAVAILABLE and retries, like the global cap above. */
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		log_warn("workload api: no peer credentials: %s", strerror(errno));
		goto close;
	}
	if (uid_penalized(w, cred.uid, uv_now(w->agent->loop))) {
		if (w->refused_penalty++ % 1000 == 0)
			log_info("workload api: uid %u: connection refused (memory guard penalty)", (unsigned)cred.uid);
		goto close;
	}
	if (ly_keycount_take(&w->uid_conns, &cred.uid, sizeof(cred.uid), LY_WAPI_CONNS_PER_UID_MAX,
		NULL) != LY_OK) {
		if (w->refused_uid++ % 1000 == 0)
			log_warn("workload api: uid %u holds %d connections: refusing its new ones",
			    (unsigned)cred.uid, LY_WAPI_CONNS_PER_UID_MAX);
		goto close;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		(void)ly_keycount_give(&w->uid_conns, &cred.uid, sizeof(cred.uid));
		goto close;
	}
	c->uid = cred.uid;
	c->w = w;
	c->id = ++w->next_conn_id;
	c->refs = 1; /* the attestation phase */
	c->pipe = pipe;
	c->peer.pidfd = -1;
	list_add(&w->conns, &c->link);
	w->n_conns++;
	if (conn_start(c, fd))
		return;
	c->pipe = NULL;
	conn_unref(c);
close:
	uv_close((uv_handle_t *)pipe, free_handle_cb);
}

/* ---- the socket ---------------------------------------------------------------------------------- */

/*
 * The socket's directory: created (parents 0755, itself 0755) when
 * missing; it and every directory above it must be root's or ours and
 * writable by no one else (a sticky /tmp allowed above it), not a link
 * itself (ly_fsperm_dir_chain), else someone could replace our socket or
 * squat the directory before we start. A stale socket at `path` is
 * removed; anything else there is refused.
 */
static ly_status
socket_dir_prepare(const char *path, struct ly_error *err)
{
	char dir[sizeof(((struct sockaddr_un *)NULL)->sun_path)];
	struct ly_fsperm_chain chain;
	ly_status rc;

	/* Checked at config load too; here for any other caller. */
	LY_TRY(ly_config_check_socket_path(path, err));
	size_t dlen = (size_t)(strrchr(path, '/') - path);
	memcpy(dir, path, dlen);
	dir[dlen] = '\0';
	rc = ly_fsperm_dir_chain(dir, geteuid(), LY_FSPERM_CREATE | LY_FSPERM_LEAF_NOFOLLOW, 0755, &chain, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "socket directory %s", dir);
	if ((chain.leaf.st_mode & 001) == 0)
		log_warn("socket directory %s is not searchable by others (mode %03o): other users cannot reach the "
		    "Workload API", dir, (unsigned)(chain.leaf.st_mode & 0777));
	if ((rc = ly_sockpath_replace_stale(path, err)) != LY_OK)
		return ly_error_wrap(err, rc, "socket");
	return LY_OK;
}

static ly_status
socket_listen(struct ly_wapi *w, struct ly_error *err)
{
	const char *path = w->agent->cfg.socket_path;
	int rc;

	LY_TRY(socket_dir_prepare(path, err));
	if ((rc = uv_pipe_init(w->agent->loop, &w->listener, 0)) != 0)
		return ly_error_set(err, LY_E_IO, "Workload API socket: %s", uv_strerror(rc));
	w->listener.data = w;
	w->listening = true;
	w->open_handles++;
	/* Born 0777 (SPEC §2): every local user may connect, attestation decides. */
	mode_t old = umask(0);
	rc = uv_pipe_bind(&w->listener, path);
	(void)umask(old);
	if (rc != 0)
		return ly_error_set(err, LY_E_IO, "cannot listen on Workload API socket %s: %s", path, uv_strerror(rc));
	w->bound = true;
	if ((rc = uv_listen((uv_stream_t *)&w->listener, LISTEN_BACKLOG, on_connection)) != 0)
		return ly_error_set(err, LY_E_IO, "cannot listen on Workload API socket %s: %s", path, uv_strerror(rc));
	return LY_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

/* "https://HOST[:PORT][/]" (agent.c checked the form) into the kubelet's host and port. */
static ly_status
kubelet_target(const char *url, char **host, unsigned *port, struct ly_error *err)
{
	const char *h = url + strlen("https://"), *end = h + strlen(h);
	const char *colon;

	*host = NULL;
	*port = 0;
	if (strncmp(url, "https://", 8) != 0)
		return ly_error_set(err, LY_E_INVALID, "kubelet URL must start with https://");
	if (end > h && end[-1] == '/')
		end--;
	if (*h == '[') {
		const char *close = memchr(h, ']', (size_t)(end - h));
		if (close == NULL)
			return ly_error_set(err, LY_E_INVALID, "kubelet URL: unclosed [");
		colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
		*host = strndup(h + 1, (size_t)(close - h - 1));
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		*host = strndup(h, (size_t)((colon != NULL ? colon : end) - h));
	}
	if (*host == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	if (colon != NULL) {
		unsigned long p = 0;
		const char *q = colon + 1;
		for (; q < end && *q >= '0' && *q <= '9' && p <= 65535; q++)
			p = p * 10 + (unsigned long)(*q - '0');
		if (q != end || q == colon + 1 || p == 0 || p > 65535) {
			free(*host);
			*host = NULL;
			return ly_error_set(err, LY_E_INVALID, "kubelet URL: bad port");
		}
		*port = (unsigned)p;
	}
	return LY_OK;
}

ly_status
ly_wapi_new(struct ly_agent *agent, const struct ly_wapi_source *src, struct ly_wapi **out, struct ly_error *err)
{
	struct ly_wapi *w = calloc(1, sizeof(*w));
	const struct ly_agent_config *cfg = &agent->cfg;
	ly_status rc;

	*out = NULL;
	if (w == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	w->agent = agent;
	w->src = *src;
	list_init(&w->conns);
	list_init(&w->streams);
	list_init(&w->jwt_reqs);
	/* 0 means "never hash" in our config, "default" to the attestor: 1 byte hashes nothing real. */
	struct ly_unix_attestor_config uc = {
		.proc_root = cfg->proc_root,
		.hash_max = cfg->unix_hash_max_bytes > 0 ? cfg->unix_hash_max_bytes : 1,
	};
	if ((rc = ly_unix_attestor_new(&uc, &w->unix_att, err)) != LY_OK) {
		ly_error_wrap(err, rc, "unix workload attestor");
		goto fail;
	}
	if (cfg->k8s_enabled) {
		struct ly_k8s_attestor_config kc;
		memset(&kc, 0, sizeof(kc));
		if (cfg->kubelet_url != NULL) {
			if ((rc = kubelet_target(cfg->kubelet_url, &w->kubelet_host, &kc.kubelet.port, err)) != LY_OK)
				goto fail;
		} else if ((w->kubelet_host = strdup(cfg->k8s_node_name != NULL ? cfg->k8s_node_name : "")) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto fail;
		}
		kc.kubelet.host = w->kubelet_host;
		kc.kubelet.token_file = cfg->kubelet_token_path;
		kc.kubelet.ca_file = cfg->kubelet_ca_path;
		kc.kubelet.skip_verify = cfg->kubelet_skip_verify;
		if ((rc = ly_k8s_attestor_new(agent->loop, &kc, &w->k8s_att, err)) != LY_OK) {
			ly_error_wrap(err, rc, "k8s workload attestor");
			goto fail;
		}
	}
	/* SDS hook */
	struct ly_sds_host sh = { .arg = w, .admit = sds_admit, .verify = sds_verify, .caller = sds_caller,
		.cache = sds_cache };
	struct ly_sds_config sdc = {
		.names = { cfg->sds_default_svid_name, cfg->sds_default_bundle_name, cfg->sds_default_all_bundles_name },
		.disable_spiffe_cert_validation = cfg->sds_disable_spiffe_cert_validation,
	};
	if ((rc = ly_sds_new(&sh, &sdc, &w->sds, err)) != LY_OK)
		goto fail;
	struct ly_rpc_server_config sc = {
		.methods = methods,
		.n_methods = sizeof(methods) / sizeof(methods[0]),
		.arg = w,
		.max_request = LY_WORKLOAD_REQUEST_MAX,
		/* SDS hook: Envoy's Node lists its extensions (tens of KB). */
		.large_service = LY_SDS_SERVICE,
		.large_max_request = LY_SDS_REQUEST_MAX,
		.conn_release = conn_release,
		.conn_keep = conn_keep,
		.conn_shed = conn_shed,
	};
	if ((rc = ly_rpc_server_new(agent->rpc, &sc, &w->srv, err)) != LY_OK)
		goto fail;
	uv_timer_init(agent->loop, &w->kick);
	uv_timer_init(agent->loop, &w->expiry);
	w->kick.data = w->expiry.data = w;
	w->handles_init = true;
	w->open_handles += 2;
	*out = w;
	return LY_OK;
fail:
	/* No handle was made yet: free at once (the k8s attestor closes itself asynchronously). */
	ly_k8s_attestor_close(w->k8s_att);
	ly_unix_attestor_free(w->unix_att);
	ly_sds_free(w->sds); /* SDS hook */
	free(w->kubelet_host);
	free(w);
	return rc;
}

ly_status
ly_wapi_start(struct ly_wapi *w, struct ly_error *err)
{
	struct stat st;

	LY_TRY(ly_rpc_server_start(w->srv, err));
	LY_TRY(socket_listen(w, err));
	w->started = true;
	if (stat(w->agent->cfg.socket_path, &st) == 0 && (st.st_mode & 0777) != 0777)
		log_warn("Workload API socket %s is %03o, not 0777", w->agent->cfg.socket_path,
		    (unsigned)(st.st_mode & 0777));
	log_info("Workload API listening on %s", w->agent->cfg.socket_path);
	return LY_OK;
}

/* Handles embedded in struct ly_wapi: it is freed once the last one is closed. */
static void
handle_closed_cb(uv_handle_t *h)
{
	struct ly_wapi *w = h->data;

	w->open_handles--;
	wapi_maybe_free(w);
}

void
ly_wapi_stop(struct ly_wapi *w)
{
	struct link *l, *next;

	if (w == NULL || w->stopping)
		return;
	w->stopping = true;
	if (w->listening) {
		uv_close((uv_handle_t *)&w->listener, handle_closed_cb);
		w->listening = false;
		if (w->bound)
			(void)unlink(w->agent->cfg.socket_path);
	}
	if (w->handles_init) {
		uv_timer_stop(&w->kick);
		uv_timer_stop(&w->expiry);
	}
	/* Open streams end now; clients reconnect (to the next agent). */
	for (l = w->streams.next; l != &w->streams; l = next) {
		next = l->next;
		stream_end(container_of(l, struct stream, link), LY_RPC_UNAVAILABLE, "agent is shutting down");
	}
	ly_sds_stop(w->sds); /* SDS hook */
	/* k8s attestations still running end from inside close (LY_E_IO): their
	 * connections are closed. Unix ones end on their own (their workers
	 * cannot be stopped midway); the connection closes then. */
	ly_k8s_attestor_close(w->k8s_att);
	w->k8s_att = NULL;
	log_info("Workload API stopped: %" PRIu64 " connections accepted, %" PRIu64 " calls, %" PRIu64
	    " responses streamed, %" PRIu64 " refused", w->accepted, w->calls, w->sent, w->denied + w->attest_denied);
}

/* The last step of ly_wapi_free, once no attestation is running. */
static void
wapi_maybe_free(struct ly_wapi *w)
{
	if (!w->freeing || w->open_handles > 0 || w->n_attesting > 0 || w->n_conns > 0)
		return;
	ly_unix_attestor_free(w->unix_att);
	ly_sds_free(w->sds); /* SDS hook */
	free(w->kubelet_host);
	ly_keycount_cleanup(&w->uid_conns);
	free(w);
}

void
ly_wapi_free(struct ly_wapi *w)
{
	struct link *l, *next;

	if (w == NULL)
		return;
	ly_wapi_stop(w);
	w->freeing = true;
	/* After ly_rpc_close: every call was released, so no stream or JWT request is left. */
	for (l = w->jwt_reqs.next; l != &w->jwt_reqs; l = next) {
		next = l->next;
		log_error("workload api: a FetchJWTSVID call outlived gRPC");
		jwt_req_free(container_of(l, struct jwt_req, link));
	}
	if (w->handles_init) {
		w->handles_init = false;
		uv_close((uv_handle_t *)&w->kick, handle_closed_cb);
		uv_close((uv_handle_t *)&w->expiry, handle_closed_cb);
		return;
	}
	wapi_maybe_free(w);
}
