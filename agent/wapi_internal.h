/*
 * wapi_internal.h: what the parts of the Workload API (wapi.h) share, not
 * for other modules:
 *   wapi.c       the service's wiring: its state's life cycle, the socket,
 *                the method table, the SDS hook (sds.h), the public
 *                functions of wapi.h;
 *   wapi_conn.c  the connections: accept and its caps, peer credentials
 *                and the pidfd, workload attestation, the hand-over to
 *                gRPC and the connection's end (rpc.h's conn callbacks);
 *   wapi_call.c  the calls: the checks every call starts with, the streams
 *                and their passes, FetchJWTSVID, ValidateJWTSVID, health.
 * Calls only go down: wapi.c -> wapi_conn.c -> wapi_call.c (wapi_conn.c
 * reaches wapi.c's end of life through the maybe_free hook). The Workload
 * API's messages are decoded and built by workload_msg.h; the calls only
 * decide.
 *
 * Threads: the loop thread only. Ownership: struct ly_wapi owns the
 * connections (until conn_release and the end of attestation), the
 * streams and the JWT requests (until their call ends).
 */
#ifndef LANYARD_AGENT_WAPI_INTERNAL_H
#define LANYARD_AGENT_WAPI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/sha.h>
#include <uv.h>

#include "agent/agent_ctx.h"
#include "agent/attest_unix.h"
#include "agent/wapi.h"
#include "lib/caps.h"
#include "lib/error.h"
#include "lib/queue.h"
#include "rpc/keycount.h"
#include "rpc/rpc.h"

#define WAPI_HEADER "workload.spiffe.io"
#define M(name) "/SpiffeWorkloadAPI/" name

/* ---- state ------------------------------------------------------------------------ */

enum stream_kind {
	ST_X509_SVID = 0,
	ST_X509_BUNDLES = 1,
	ST_JWT_BUNDLES = 2,
};
#define ST_KINDS 3

/* The hex SHA-256 key of a caller's selector set (agent.ratelimit.workload_api). */
#define WAPI_SELKEY_LEN 64

struct ly_ratelimit;

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
	struct ly_queue conns;    /* every live connection */
	struct ly_queue streams;  /* open streams */
	struct ly_queue jwt_reqs; /* FetchJWTSVID calls waiting for tokens */
	struct ly_sds *sds;   /* SDS hook: Envoy SDS v3 on this socket (sds.h) */
	size_t n_conns, n_attesting, n_jwt;
	struct ly_keycount uid_conns; /* open connections per uid (LY_WAPI_CONNS_PER_UID_MAX) */
	struct {
		uid_t uid;
		uint64_t until; /* uv_now; 0: free slot */
	} penalty[LY_WAPI_PENALTY_SLOTS]; /* LY_WAPI_SHED_PENALTY_MS */
	size_t n_streams[ST_KINDS];
	size_t max_response; /* the largest response sent (agent config; rpc.h max_response) */
	/*
	 * wapi.c's last step of ly_wapi_free, which wapi_conn.c runs when a
	 * connection ends (it frees `w` once nothing is left): a hook, so that
	 * calls between the parts only go down (wapi.c -> wapi_conn.c ->
	 * wapi_call.c).
	 */
	void (*maybe_free)(struct ly_wapi *w);
	uint64_t next_conn_id;
	/* agent.ratelimit.workload_api: calls per selector set (NULL: off), and the calls it refused. */
	struct ly_ratelimit *limit;
	uint64_t rate_limited;
	/* Counters (for metrics). */
	uint64_t accepted, refused_busy, refused_uid, refused_penalty, refused_handover, attest_failed, attest_denied,
	    calls, denied, sent;
};

/* One Workload API connection (the conn_ctx of its calls). */
struct wconn {
	struct ly_wapi *w;
	struct ly_queue link;
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
	char selkey[WAPI_SELKEY_LEN + 1]; /* the selector set's key for the rate limit (wapi_conn.c) */
	/* LY_RPC_OK when attested; else every call is refused with it. */
	enum ly_rpc_code refuse;
	const char *refuse_msg;
};

struct stream {
	struct ly_queue link;
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
	struct ly_queue link;
	struct ly_wapi *w;
	struct ly_rpc_call *call;
	struct wconn *conn;
	char **aud;
	size_t naud;
	struct jwt_slot *slots;
	size_t n, outstanding;
	bool closed, failed;
};

/* ---- wapi_conn.c ---- */

/* The listener's connection callback (uv_listen). */
void ly_wapi_on_connection(uv_stream_t *listener, int status);
/* rpc.h's conn_release, conn_keep and conn_shed for the Workload API's server. */
void ly_wapi_conn_release(void *conn_ctx, void *arg);
bool ly_wapi_conn_keep(void *conn_ctx, void *arg);
void ly_wapi_conn_shed(void *conn_ctx, void *arg);

/* ---- wapi_call.c ---- */

/* The source's cache (borrowed), NULL while there is none. */
struct ly_cache *ly_wapi_cache(struct ly_wapi *w);
/* Whether the Workload API may answer (SPEC §3). */
bool ly_wapi_ready(struct ly_wapi *w);
/* The bundles to serve (the cache's set), NULL while there is none. */
const struct ly_bundle_set *ly_wapi_bundles(struct ly_wapi *w);
/* The caller is still the process attested at accept; once not, the connection is refused for good. */
bool ly_wapi_conn_verify(struct wconn *c);
/* The common checks of every Workload API call; false when `call` was answered. *out: its connection. */
bool ly_wapi_call_admit(struct ly_wapi *w, struct ly_rpc_call *call, struct wconn **out);
/* Finishes a stream's call with `code` and frees the stream. */
void ly_wapi_stream_end(struct stream *st, enum ly_rpc_code code, const char *details);
/* A pass over the open streams on the next loop turn (many changes in one turn: one pass). */
void ly_wapi_pass_schedule(struct ly_wapi *w);
/* Frees a FetchJWTSVID request (its call already finished). */
void ly_wapi_jwt_req_free(struct jwt_req *r);
/* The methods' handlers (rpc.h ly_rpc_handler; `arg` is the struct ly_wapi). */
void ly_wapi_fetch_x509_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void ly_wapi_fetch_x509_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void ly_wapi_fetch_jwt_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void ly_wapi_fetch_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void ly_wapi_validate_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void ly_wapi_health_check(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);

#endif /* LANYARD_AGENT_WAPI_INTERNAL_H */
