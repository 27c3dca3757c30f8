/*
 * agent.h: the state of a running lanyard-agent, shared by its parts.
 *
 * Threads: one libuv loop thread owns everything here (the cache, the
 * bundle, the streams, the timers). rpc/ delivers Workload API calls and
 * the answers of the agent's own calls to the server on that thread.
 * Blocking work (hashing executables, kubelet HTTP through libcurl multi,
 * writing the persisted state, generating keys in bulk) runs on
 * uv_queue_work or libcurl's multi interface and hands results back to the
 * loop.
 *
 * Parts and who owns what:
 *   agent.c       config (flags over the YAML file), start-up, signals,
 *                 shutdown; owns every field below.
 *   sync.c        the server side: node attestation and the agent's own
 *                 SVID, the entry watch, periodic resync with backoff,
 *                 workload SVID issuance and rotation (batched), JWT-SVID
 *                 minting on demand, the bundle, state persistence.
 *   wapi.c        the Workload API: the Unix socket, peer credentials and
 *                 pidfd, workload attestation, the five RPCs, open streams.
 *   sds.c         Envoy SDS v3 on wapi.c's socket and attestation (sds.h):
 *                 its streams follow the same cache changes.
 *   cli.c         `api fetch|validate|watch`, `healthcheck`: Workload API
 *                 clients like any other.
 *   cache.c, rotation.c, verify.c, state.c, workload_msg.c, sds_msg.c: pure modules.
 *   attest_unix.c, attest_k8s.c, cgroup.c, kubelet.c: workload attestors.
 *
 * sync.c tells wapi.c about changes through ly_wapi_* calls; wapi.c asks
 * sync.c for JWT-SVIDs through ly_sync_*. None of these block.
 */
#ifndef LANYARD_AGENT_AGENT_H
#define LANYARD_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/caps.h"
#include "lib/error.h"

struct uv_loop_s;
struct ly_rpc;
struct ly_bundle;
struct ly_sync;
struct ly_wapi;
struct ly_cache;
struct ly_metric;

/* SPEC §2 and §7 defaults. */
#define LY_AGENT_SOCKET_DEFAULT "/tmp/lanyard-agent/public/api.sock"
#define LY_AGENT_DATA_DIR_DEFAULT "./.lanyard-agent"
/*
 * A join token from the environment, for `run` without -joinToken (which
 * every local user can read in /proc/<pid>/cmdline until the agent is
 * gone): read once at start, then wiped in place and unset, so that
 * /proc/<pid>/environ (our uid and root only) no longer holds it either.
 */
#define LY_AGENT_JOIN_TOKEN_ENV "LANYARD_JOIN_TOKEN"
#define LY_AGENT_SERVER_PORT_DEFAULT 8081
#define LY_AGENT_SYNC_INTERVAL_DEFAULT 5 /* seconds */

struct ly_agent_config {
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
	const char *server_address;
	uint16_t server_port;
	const char *socket_path;
	const char *data_dir;
	const char *join_token;          /* a secret: never logged */
	const char *trust_bundle_path;   /* bootstrap bundle (PEM) */
	bool insecure_bootstrap;         /* first contact without a bundle */
	const char *log_level;
	const char *log_format;
	int64_t sync_interval;           /* seconds */
	/* Node attestation other than join_token. */
	const char *x509pop_cert_path;
	const char *x509pop_key_path;
	const char *psat_cluster;
	const char *psat_token_path;
	/* Workload attestation. */
	uint64_t unix_hash_max_bytes;    /* executables hashed up to this size */
	bool k8s_enabled;
	const char *k8s_node_name;
	const char *kubelet_url;         /* https://<node>:10250 */
	const char *kubelet_ca_path;
	const char *kubelet_token_path;
	bool kubelet_skip_verify;
	const char *proc_root;           /* "/proc"; tests point it at fixtures */
	/* Health and metrics listener (rpc/health_http.h), off by default. */
	bool health_enabled;
	const char *health_bind_address; /* "127.0.0.1" */
	uint16_t health_bind_port;       /* 8080 */
	const char *health_live_path;    /* "/live" */
	const char *health_ready_path;   /* "/ready" */
	/* Envoy SDS v3 (agent/sds.h): SPIRE's `sds` settings. */
	const char *sds_default_svid_name;        /* "default" */
	const char *sds_default_bundle_name;      /* "ROOTCA" */
	const char *sds_default_all_bundles_name; /* "ALL" */
	bool sds_disable_spiffe_cert_validation;
};

struct ly_agent {
	struct uv_loop_s *loop;
	struct ly_agent_config cfg;
	struct ly_rpc *rpc;
	struct ly_sync *sync;
	struct ly_wapi *wapi;
	time_t started_at;
	bool stopping;
	/* The workload attestation latency histogram (agent.c's metrics), NULL without the listener. */
	struct ly_metric *m_attest_seconds;
};

/* The agent's clock (wall time, seconds). */
time_t ly_agent_now(void);

/* agent.c: `lanyard-agent run ARGS` (argv[0] is the first flag); returns the exit code. */
int ly_agent_run(int argc, char **argv);
/* cli.c: every other verb; returns the exit code. */
int ly_agent_cli_main(int argc, char **argv);

/* sync.c */
ly_status ly_sync_new(struct ly_agent *agent, struct ly_sync **out, struct ly_error *err) LY_MUST_CHECK;
/* Loads persisted state, attests or resumes, opens the watch. */
ly_status ly_sync_start(struct ly_sync *s, struct ly_error *err) LY_MUST_CHECK;
/* Persists state and ends calls to the server; `cb` runs once all are done. */
void ly_sync_stop(struct ly_sync *s, void (*cb)(void *arg), void *arg);
void ly_sync_free(struct ly_sync *s);
/* True once the agent holds an SVID of its own and the server's bundle. */
bool ly_sync_ready(const struct ly_sync *s);
/*
 * True when the Workload API may answer (SPEC §3): ready as above AND the
 * entries known (the server's first snapshot of this run applied, or the
 * persisted SVID cache loaded), or some SVID cached to serve. Before the
 * entries are known every caller would look entitled to nothing and be told
 * PERMISSION_DENIED for good; until then it gets UNAVAILABLE and retries.
 */
bool ly_sync_wapi_ready(const struct ly_sync *s);
/* Counters of the sync engine since start, for /metrics (a copy). */
struct ly_sync_stats {
	uint64_t svids_issued, renewals, jwt_minted;
	time_t last_sync;  /* wall time of the last update from the server's watch; 0: none yet */
	bool reachable;    /* connected, and the watch answered within two sync intervals */
};
void ly_sync_stats_get(const struct ly_sync *s, struct ly_sync_stats *out);
/* The verifier's counters (verify.h: struct ly_verify_counters), by kind and reason. */
struct ly_verify_counters;
void ly_sync_verify_counters(const struct ly_sync *s, struct ly_verify_counters *out);
/* The cache and bundle wapi.c serves from (borrowed; valid until ly_sync_free). */
struct ly_cache *ly_sync_cache(struct ly_sync *s);
const struct ly_bundle *ly_sync_bundle(const struct ly_sync *s);
/*
 * A JWT-SVID for `entry_id` and `audiences`: from the cache when one is
 * still fresh, else minted by the server (NewJWTSVID), verified, cached.
 * `cb` runs once, on the loop, with the token (borrowed during the call)
 * or an error; never from inside this call.
 */
typedef void (*ly_sync_jwt_cb)(void *arg, const char *token, const struct ly_error *err);
ly_status ly_sync_fetch_jwt(struct ly_sync *s, const char *entry_id, const char *const *audiences, size_t naud,
    ly_sync_jwt_cb cb, void *arg, struct ly_error *err) LY_MUST_CHECK;

/*
 * A burst of allocations just ended (a batch of SVIDs, a connection
 * closed): freed memory is handed back to the system once the agent has
 * been quiet for 250 ms (malloc_trim). Cheap; call it freely.
 */
void ly_sync_memory_burst(struct ly_sync *s);

/* wapi.c */
ly_status ly_wapi_new(struct ly_agent *agent, struct ly_wapi **out, struct ly_error *err) LY_MUST_CHECK;
/* Creates the socket (directory first, right modes) and starts serving. */
ly_status ly_wapi_start(struct ly_wapi *w, struct ly_error *err) LY_MUST_CHECK;
/* Stops accepting and ends open streams (shutdown). */
void ly_wapi_stop(struct ly_wapi *w);
void ly_wapi_free(struct ly_wapi *w);
/*
 * The cache changed (entries, SVIDs): every open stream whose response
 * would differ gets a new full response; a stream whose caller has no
 * identity left ends with PERMISSION_DENIED.
 */
void ly_wapi_cache_changed(struct ly_wapi *w);
/* The bundle changed: bundle streams and X.509-SVID streams get it. */
void ly_wapi_bundle_changed(struct ly_wapi *w);
/* Open connections and open streams (every kind), for the metrics. */
void ly_wapi_counts(const struct ly_wapi *w, size_t *conns, size_t *streams);

#endif /* LANYARD_AGENT_AGENT_H */
