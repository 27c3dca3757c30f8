/*
 * agent_ctx.h: what agent.c hands every part of a running lanyard-agent
 * at start-up: the loop, the configuration, the gRPC runtime, the
 * metrics it registered. Plain data, no code: the parts read it, only
 * agent.c writes it (and outlives them all).
 *
 * The parts do not reach each other through it: sync (sync.h) tells the
 * Workload API about changes through its change callbacks, and the
 * Workload API (wapi.h) reads sync through its source interface; agent.c
 * wires both at start-up.
 *
 * Threads: the loop thread only (agent.h).
 */
#ifndef LANYARD_AGENT_AGENT_CTX_H
#define LANYARD_AGENT_AGENT_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/caps.h"

struct uv_loop_s;
struct ly_rpc;
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
	/* agent.ratelimit.workload_api: Workload API calls a second per selector set (burst the same); 0: off. */
	uint32_t ratelimit_workload_api;
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
	/* The largest Workload API or SDS response, bytes (workload_api.max_response_bytes; LY_RPC_RESPONSE_MAX). */
	uint64_t workload_response_max;
};

struct ly_agent {
	struct uv_loop_s *loop;
	struct ly_agent_config cfg;
	struct ly_rpc *rpc;
	/* The workload attestation latency histogram (agent.c's metrics), NULL without the listener. */
	struct ly_metric *m_attest_seconds;
};

/* The agent's clock (wall time, seconds). */
static inline time_t
ly_agent_now(void)
{
	return time(NULL);
}

#endif /* LANYARD_AGENT_AGENT_CTX_H */
