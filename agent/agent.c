/*
 * agent.c: `lanyard-agent run` (SPEC §2): configuration (the flags over
 * the YAML file's `agent:` section), start-up, signals and an orderly
 * shutdown. Owns every field of struct ly_agent (agent_ctx.h), and wires
 * sync (sync.h) and the Workload API (wapi.h) to each other.
 *
 * Configuration: every value is checked here, before anything is opened,
 * so that a mistake is one line, "file:line: key K: why" or "flag -F: why",
 * and exit code 2. Unknown keys are refused (a typo fails loudly). The
 * keys are listed in docs/agent.md.
 *
 * Start-up, in order; the first failure ends the run with exit code 1 and
 * one line on stderr saying what and why:
 *   data dir (0700, ours) -> event loop -> gRPC (rpc/) -> sync (the server
 *   side: persisted state, node attestation or resumption, the entry
 *   watch) -> Workload API (wapi.c: the socket, then serving).
 * Everything the agent creates in its data dir is ours alone (umask 077);
 * the Workload API socket is the exception, made 0777 by wapi.c on purpose.
 *
 * Signals:
 *   SIGTERM, SIGINT  stop accepting, end open Workload API streams
 *                    (UNAVAILABLE: clients reconnect to the next agent),
 *                    ly_sync_stop (persists the state), then close gRPC and
 *                    free everything: exit 0. A shutdown that takes more
 *                    than STOP_GRACE_MS is cut short (exit 1).
 *   SIGHUP           re-read agent.log_level from the config file (a
 *                    -logLevel flag keeps winning).
 *   SIGPIPE          ignored (a workload that hangs up is not a reason to die).
 * Under systemd (Type=notify, lib/sdnotify.h): READY=1 once the Workload API
 * serves SVIDs (polled every READY_POLL_MS), STOPPING=1 when a stop begins.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "agent/agent.h"
#include "agent/cache.h"
#include "agent/servers.h"
#include "agent/sync.h"
#include "agent/wapi.h"
#include "lib/config.h"
#include "lib/daemon.h"
#include "lib/flags.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/sdnotify.h"
#include "agent/verify.h"
#include "lib/spiffeid.h"
#include "rpc/health_http.h"
#include "rpc/rpc.h"

/* A shutdown that takes longer than this is cut short. */
#define STOP_GRACE_MS (15 * 1000)
/* How often start-up asks whether the Workload API serves yet (READY=1 to systemd). */
#define READY_POLL_MS 100
/*
 * agent.ratelimit.workload_api's default: Workload API calls a second per
 * selector set (docs/operations.md §13). A workload opens one X.509
 * stream and fetches JWT-SVIDs (go-spiffe's JWTSource asks the agent on
 * every use), and the replicas of a service on one node share a set:
 * 2,000/s leaves busy services alone (docs/benchmarks.md drives 1,000
 * calls/s), while a runaway loop, which alone could take all of the
 * agent's ~5,000 calls/s a core (~200 µs each), is held to less than half
 * of it and leaves the rest to the other workloads.
 */
#define LY_AGENT_WAPI_RATE_DEFAULT 2000
/* agent.sync_interval bounds, seconds. */
#define SYNC_INTERVAL_MIN 1
#define SYNC_INTERVAL_MAX 3600
/* SPIRE's defaults for the k8s workload attestor and the PSAT node attestor. */
#define K8S_NODE_NAME_ENV_DEFAULT "MY_NODE_NAME"
#define KUBELET_CA_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
#define KUBELET_TOKEN_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount/token"
#define PSAT_TOKEN_DEFAULT "/var/run/secrets/tokens/lanyard-agent"

#define K "agent."
#define X509POP K "node_attestor.x509pop."
#define PSAT K "node_attestor.k8s_psat."
#define WL_UNIX K "workload_attestors.unix."
#define WL_K8S K "workload_attestors.k8s"

static const char *const known_keys[] = {
	K "trust_domain",
	K "server_address",
	K "server_port",
	K "socket_path",
	K "data_dir",
	K "join_token",
	K "trust_bundle_path",
	K "insecure_bootstrap",
	K "log_level",
	K "log_format",
	K "sync_interval",
	K "ratelimit.workload_api",
	X509POP "certificate_path",
	X509POP "private_key_path",
	PSAT "cluster",
	PSAT "token_path",
	WL_UNIX "max_exe_hash_bytes",
	WL_K8S ".node_name",
	WL_K8S ".node_name_env",
	WL_K8S ".kubelet_url",
	WL_K8S ".kubelet_ca_path",
	WL_K8S ".token_path",
	WL_K8S ".skip_kubelet_verification",
	K "proc_root",
	K "health_checks.listener_enabled",
	K "health_checks.bind_address",
	K "health_checks.bind_port",
	K "health_checks.live_path",
	K "health_checks.ready_path",
	K "sds.default_svid_name",
	K "sds.default_bundle_name",
	K "sds.default_all_bundles_name",
	K "sds.disable_spiffe_cert_validation",
	K "workload_api.max_response_bytes",
	NULL,
};

/* What the command line said; NULL / -1 / false when a flag was not given. */
struct agent_flags {
	const char *config_path;
	const char *trust_domain;
	const char *server_address;
	int64_t server_port;
	const char *socket_path;
	const char *data_dir;
	const char *join_token;
	char *env_join_token; /* LY_AGENT_JOIN_TOKEN_ENV's value, taken (wiped at exit) */
	const char *trust_bundle;
	bool insecure_bootstrap;
	bool insecure_bootstrap_seen;
	const char *log_level;
};

struct agent_main {
	struct ly_agent agent; /* first: parts get &agent */
	struct ly_sync *sync;
	struct ly_wapi *wapi;
	time_t started_at;
	bool stopping;
	struct agent_flags flags;
	struct ly_config *file;
	uv_loop_t loop;
	bool loop_ready;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t stop_timer;
	uv_timer_t ready_timer; /* polls until the Workload API serves, then tells systemd */
	bool handles_ready;
	bool sync_started;
	bool rpc_closing;
	int exit_code;
	struct ly_health_http *health;
	struct agent_metrics *metrics; /* with the health listener only */
};

/*
 * The wiring of sync and the Workload API (neither knows the other): sync's
 * change callbacks go to wapi, wapi's source reads sync. wapi is made after
 * sync, so a change reported before it exists goes nowhere (sync reports
 * none before it starts anyway).
 */
static void
wire_cache_changed(void *arg)
{
	struct agent_main *m = arg;
	if (m->wapi != NULL)
		ly_wapi_cache_changed(m->wapi);
}

static void
wire_bundle_changed(void *arg)
{
	struct agent_main *m = arg;
	if (m->wapi != NULL)
		ly_wapi_bundle_changed(m->wapi);
}

static struct ly_cache *
wire_cache(void *arg)
{
	struct agent_main *m = arg;
	return m->sync != NULL ? ly_sync_cache(m->sync) : NULL;
}

static bool
wire_ready(void *arg)
{
	struct agent_main *m = arg;
	return m->sync != NULL && ly_sync_wapi_ready(m->sync);
}

static ly_status
wire_fetch_jwt(void *arg, const char *entry_id, const char *const *audiences, size_t naud, ly_wapi_jwt_cb cb,
    void *cb_arg, struct ly_error *err)
{
	struct agent_main *m = arg;
	if (m->sync == NULL)
		return ly_error_set(err, LY_E_IO, "JWT-SVID: not started");
	return ly_sync_fetch_jwt(m->sync, entry_id, audiences, naud, cb, cb_arg, err);
}

static void
wire_memory_burst(void *arg)
{
	struct agent_main *m = arg;
	ly_sync_memory_burst(m->sync);
}

/* ---- configuration ------------------------------------------------------------- */

/* An optional path key of the file (NULL when absent). */
static ly_status
get_path(const struct ly_config *file, const char *key, const char *def, const char **out, struct ly_error *err)
{
	LY_TRY(ly_config_get_string(file, key, def, out, err));
	if (*out != NULL && ly_config_check_path(*out, "path", err) != LY_OK)
		return ly_config_wrap(file, key, err, LY_E_INVALID);
	return LY_OK;
}

/* A host: an IPv4 or IPv6 literal, or a DNS host name (RFC 1123 labels): agent/servers.h. */
static ly_status
check_host(const char *s, struct ly_error *err)
{
	return ly_servers_host_check(s, err);
}

/* "https://HOST[:PORT][/]": the kubelet's secure port (wapi.c splits it the same way). */
static ly_status
check_kubelet_url(const char *url, struct ly_error *err)
{
	char host[LY_DNS_NAME_MAX + 1];
	const char *h, *end, *colon, *hend;

	if (strncmp(url, "https://", 8) != 0)
		return ly_error_set(err, LY_E_INVALID, "must be an https:// URL (the kubelet's secure port)");
	h = url + 8;
	end = h + strlen(h);
	if (end > h && end[-1] == '/')
		end--;
	if (*h == '[') {
		const char *close = memchr(h, ']', (size_t)(end - h));
		if (close == NULL)
			return ly_error_set(err, LY_E_INVALID, "unclosed [ in the host");
		colon = close + 1 < end ? close + 1 : NULL;
		if (colon != NULL && *colon != ':')
			return ly_error_set(err, LY_E_INVALID, "must be https://HOST[:PORT] (no path)");
		h++;
		hend = close;
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		hend = colon != NULL ? colon : end;
	}
	if ((size_t)(hend - h) >= sizeof(host) || hend == h)
		return ly_error_set(err, LY_E_INVALID, "must be https://HOST[:PORT] with a host of 1 to %d bytes",
		    LY_DNS_NAME_MAX);
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	if (memchr(host, '/', strlen(host)) != NULL)
		return ly_error_set(err, LY_E_INVALID, "must be https://HOST[:PORT] (no path)");
	LY_TRY(check_host(host, err));
	if (colon != NULL) {
		unsigned long port = 0;
		const char *q = colon + 1;
		for (; q < end && *q >= '0' && *q <= '9' && port <= 65535; q++)
			port = port * 10 + (unsigned long)(*q - '0');
		if (q != end || q == colon + 1 || port == 0 || port > 65535)
			return ly_error_set(err, LY_E_INVALID, "must be https://HOST[:PORT] with a port of 1 to 65535");
	}
	return LY_OK;
}

/* A join token as `token generate` makes them: printable, no spaces, capped. Never echoed. */
static ly_status
check_join_token(const char *t, struct ly_error *err)
{
	size_t len = strlen(t);

	if (len == 0)
		return ly_error_set(err, LY_E_INVALID, "join token is empty");
	if (len > LY_JOIN_TOKEN_MAX)
		return ly_error_set(err, LY_E_LIMIT, "join token is over %d bytes", LY_JOIN_TOKEN_MAX);
	for (size_t i = 0; i < len; i++) {
		if (t[i] <= ' ' || t[i] > '~')
			return ly_error_set(err, LY_E_INVALID, "join token has a byte that is not printable ASCII");
	}
	return LY_OK;
}

/* The node attestors other than join_token (SPEC §6). */
static ly_status
load_node_attestors(const struct ly_config *file, struct ly_agent_config *cfg, struct ly_error *err)
{
	LY_TRY(get_path(file, X509POP "certificate_path", NULL, &cfg->x509pop_cert_path, err));
	LY_TRY(get_path(file, X509POP "private_key_path", NULL, &cfg->x509pop_key_path, err));
	if ((cfg->x509pop_cert_path == NULL) != (cfg->x509pop_key_path == NULL)) {
		const char *given = cfg->x509pop_cert_path != NULL ? X509POP "certificate_path" :
								      X509POP "private_key_path";
		ly_error_set(err, LY_E_INVALID, "x509pop needs both certificate_path and private_key_path");
		return ly_config_wrap(file, given, err, LY_E_INVALID);
	}
	if (ly_config_has(file, K "node_attestor.k8s_psat")) {
		LY_TRY(ly_config_get_string(file, PSAT "cluster", NULL, &cfg->psat_cluster, err));
		if (cfg->psat_cluster == NULL || cfg->psat_cluster[0] == '\0') {
			ly_error_set(err, LY_E_INVALID, "k8s_psat needs a cluster name (cluster: NAME)");
			return ly_config_wrap(file, K "node_attestor.k8s_psat", err, LY_E_INVALID);
		}
		LY_TRY(get_path(file, PSAT "token_path", PSAT_TOKEN_DEFAULT, &cfg->psat_token_path, err));
	}
	if (cfg->x509pop_cert_path != NULL && cfg->psat_cluster != NULL) {
		ly_error_set(err, LY_E_INVALID, "configure one node attestor: x509pop or k8s_psat, not both");
		return ly_config_wrap(file, K "node_attestor", err, LY_E_INVALID);
	}
	return LY_OK;
}

/* The workload attestors (SPEC §5): unix always, k8s when its section is written. */
static ly_status
load_workload_attestors(const struct ly_config *file, struct ly_agent_config *cfg, struct ly_error *err)
{
	uint64_t v;

	LY_TRY(ly_config_get_u64(file, WL_UNIX "max_exe_hash_bytes", LY_UNIX_EXE_HASH_MAX, &v, err));
	if (v > LY_UNIX_EXE_HASH_MAX) {
		ly_error_set(err, LY_E_LIMIT, "must be at most %llu", (unsigned long long)LY_UNIX_EXE_HASH_MAX);
		return ly_config_wrap(file, WL_UNIX "max_exe_hash_bytes", err, LY_E_LIMIT);
	}
	/* 0 would mean "the default" to the attestor: here it means "never hash". */
	cfg->unix_hash_max_bytes = v;

	cfg->k8s_enabled = ly_config_has(file, WL_K8S);
	if (!cfg->k8s_enabled)
		return LY_OK;
	const char *env_name = NULL;
	LY_TRY(ly_config_get_string(file, WL_K8S ".node_name", NULL, &cfg->k8s_node_name, err));
	LY_TRY(ly_config_get_string(file, WL_K8S ".node_name_env", K8S_NODE_NAME_ENV_DEFAULT, &env_name, err));
	if (cfg->k8s_node_name == NULL) {
		cfg->k8s_node_name = getenv(env_name);
		if (cfg->k8s_node_name == NULL || cfg->k8s_node_name[0] == '\0') {
			ly_error_set(err, LY_E_INVALID,
			    "the k8s workload attestor needs the node's name: set node_name, or the environment variable %s",
			    env_name);
			return ly_config_wrap(file, WL_K8S, err, LY_E_INVALID);
		}
	}
	if (check_host(cfg->k8s_node_name, err) != LY_OK)
		return ly_config_wrap(file, WL_K8S ".node_name", err, LY_E_INVALID);
	/* Absent: https://<node_name>:10250, the name the kubelet's certificate carries. */
	LY_TRY(get_path(file, WL_K8S ".kubelet_url", NULL, &cfg->kubelet_url, err));
	if (cfg->kubelet_url != NULL && check_kubelet_url(cfg->kubelet_url, err) != LY_OK)
		return ly_config_wrap(file, WL_K8S ".kubelet_url", err, LY_E_INVALID);
	LY_TRY(get_path(file, WL_K8S ".kubelet_ca_path", KUBELET_CA_DEFAULT, &cfg->kubelet_ca_path, err));
	LY_TRY(get_path(file, WL_K8S ".token_path", KUBELET_TOKEN_DEFAULT, &cfg->kubelet_token_path, err));
	LY_TRY(ly_config_get_bool(file, WL_K8S ".skip_kubelet_verification", false, &cfg->kubelet_skip_verify, err));
	return LY_OK;
}

static ly_status
config_load(const struct agent_flags *flags, const struct ly_config *file, struct ly_agent_config *cfg,
    struct ly_error *err)
{
	uint64_t secs;

	memset(cfg, 0, sizeof(*cfg));
	LY_TRY(ly_config_check_known(file, known_keys, err));

	/* No default: it names everything the agent serves. */
	LY_TRY(ly_daemon_setting_trust_domain(file, K "trust_domain", flags->trust_domain, cfg->trust_domain, err));

	LY_TRY(ly_config_setting_string(file, K "server_address", flags->server_address, NULL, &cfg->server_address, err));
	if (cfg->server_address == NULL)
		return ly_error_set(err, LY_E_INVALID,
		    "no server address: give -serverAddress or agent.server_address in the config file");
	if (flags->server_port >= 0)
		cfg->server_port = (uint16_t)flags->server_port; /* 1..65535 by the flag's range */
	else
		LY_TRY(ly_config_get_port(file, K "server_port", LY_AGENT_SERVER_PORT_DEFAULT, &cfg->server_port, err));
	/* A list of host[:port] (SPEC §10, agent/servers.h); the port defaults to server_port. */
	struct ly_server_names names;
	if (ly_servers_parse(cfg->server_address, cfg->server_port, &names, err) != LY_OK)
		return ly_config_setting_wrap(file, K "server_address", flags->server_address, "serverAddress", err,
		    LY_E_INVALID);

	LY_TRY(ly_daemon_setting_socket_path(file, K "socket_path", flags->socket_path, LY_AGENT_SOCKET_DEFAULT, &cfg->socket_path,
	    err));

	LY_TRY(ly_daemon_setting_data_dir(file, K "data_dir", flags->data_dir, LY_AGENT_DATA_DIR_DEFAULT, &cfg->data_dir, err));

	/* -joinToken, else the environment (read once, agent.h), else the file. */
	const char *jt = flags->join_token != NULL ? flags->join_token : flags->env_join_token;
	LY_TRY(ly_config_setting_string(file, K "join_token", jt, NULL, &cfg->join_token, err));
	if (cfg->join_token != NULL && check_join_token(cfg->join_token, err) != LY_OK) {
		if (flags->join_token == NULL && flags->env_join_token != NULL)
			return ly_error_wrap(err, LY_E_INVALID, "environment variable " LY_AGENT_JOIN_TOKEN_ENV);
		return ly_config_setting_wrap(file, K "join_token", flags->join_token, "joinToken", err, LY_E_INVALID);
	}

	LY_TRY(ly_config_setting_string(file, K "trust_bundle_path", flags->trust_bundle, NULL, &cfg->trust_bundle_path,
	    err));
	if (cfg->trust_bundle_path != NULL &&
	    ly_config_check_path(cfg->trust_bundle_path, "trust bundle path", err) != LY_OK)
		return ly_config_setting_wrap(file, K "trust_bundle_path", flags->trust_bundle, "trustBundle", err,
		    LY_E_INVALID);
	if (flags->insecure_bootstrap_seen)
		cfg->insecure_bootstrap = flags->insecure_bootstrap;
	else
		LY_TRY(ly_config_get_bool(file, K "insecure_bootstrap", false, &cfg->insecure_bootstrap, err));
	/* SPIRE's rule: one way to trust the server the first time. */
	if (cfg->insecure_bootstrap && cfg->trust_bundle_path != NULL)
		return ly_error_set(err, LY_E_INVALID,
		    "a trust bundle and insecure bootstrap exclude each other: give one of -trustBundle, "
		    "-insecureBootstrap");

	LY_TRY(ly_daemon_setting_log_level(file, K "log_level", flags->log_level, &cfg->log_level, err));
	LY_TRY(ly_daemon_setting_log_format(file, K "log_format", &cfg->log_format, err));

	LY_TRY(ly_config_get_duration(file, K "sync_interval", LY_AGENT_SYNC_INTERVAL_DEFAULT, &secs, err));
	if (secs < SYNC_INTERVAL_MIN || secs > SYNC_INTERVAL_MAX) {
		ly_error_set(err, LY_E_INVALID, "must be between %d and %d seconds", SYNC_INTERVAL_MIN, SYNC_INTERVAL_MAX);
		return ly_config_wrap(file, K "sync_interval", err, LY_E_INVALID);
	}
	cfg->sync_interval = (int64_t)secs;

	uint64_t wrate = 0;
	LY_TRY(ly_config_get_u64(file, K "ratelimit.workload_api", LY_AGENT_WAPI_RATE_DEFAULT, &wrate, err));
	if (wrate > LY_RATELIMIT_BURST_MAX) {
		ly_error_set(err, LY_E_INVALID, "must be 0 (off) to %d calls a second", LY_RATELIMIT_BURST_MAX);
		return ly_config_wrap(file, K "ratelimit.workload_api", err, LY_E_INVALID);
	}
	cfg->ratelimit_workload_api = (uint32_t)wrate;

	LY_TRY(ly_config_get_bool(file, K "health_checks.listener_enabled", false, &cfg->health_enabled, err));
	LY_TRY(ly_config_get_string(file, K "health_checks.bind_address", "127.0.0.1", &cfg->health_bind_address,
	    err));
	LY_TRY(ly_daemon_setting_health(file, K "health_checks", &cfg->health_bind_port, &cfg->health_live_path,
	    &cfg->health_ready_path, err));

	/* Envoy SDS v3: SPIRE's names and defaults (agent/sds.h). */
	LY_TRY(ly_config_get_string(file, K "sds.default_svid_name", "default", &cfg->sds_default_svid_name, err));
	LY_TRY(ly_config_get_string(file, K "sds.default_bundle_name", "ROOTCA", &cfg->sds_default_bundle_name, err));
	LY_TRY(ly_config_get_string(file, K "sds.default_all_bundles_name", "ALL", &cfg->sds_default_all_bundles_name,
	    err));
	LY_TRY(ly_config_get_bool(file, K "sds.disable_spiffe_cert_validation", false,
	    &cfg->sds_disable_spiffe_cert_validation, err));
	if (cfg->sds_default_svid_name[0] == '\0' || cfg->sds_default_bundle_name[0] == '\0' ||
	    cfg->sds_default_all_bundles_name[0] == '\0') {
		ly_error_set(err, LY_E_INVALID, "the SDS resource names must not be empty");
		return ly_config_wrap(file, K "sds", err, LY_E_INVALID);
	}

	/* Lower than LY_RPC_RESPONSE_MAX to bound memory (and in tests); a larger answer is RESOURCE_EXHAUSTED. */
	LY_TRY(ly_config_get_u64(file, K "workload_api.max_response_bytes", LY_RPC_RESPONSE_MAX,
	    &cfg->workload_response_max, err));
	if (cfg->workload_response_max < LY_WORKLOAD_RESPONSE_MIN || cfg->workload_response_max > LY_RPC_RESPONSE_MAX) {
		ly_error_set(err, LY_E_LIMIT, "must be between %d and %d", LY_WORKLOAD_RESPONSE_MIN, LY_RPC_RESPONSE_MAX);
		return ly_config_wrap(file, K "workload_api.max_response_bytes", err, LY_E_LIMIT);
	}

	LY_TRY(load_node_attestors(file, cfg, err));
	LY_TRY(load_workload_attestors(file, cfg, err));
	LY_TRY(get_path(file, K "proc_root", "/proc", &cfg->proc_root, err));
	return LY_OK;
}

/* ---- shutdown ------------------------------------------------------------------ */

static void
on_stop_timer(uv_timer_t *t)
{
	(void)t;
	log_error("shutdown took more than %d s: exiting now", STOP_GRACE_MS / 1000);
	_exit(1);
}

/* Every gRPC call and connection is released: nothing refers to the parts any more. */
static void
on_rpc_closed(void *arg)
{
	struct agent_main *m = arg;

	m->agent.rpc = NULL;
	ly_wapi_free(m->wapi);
	m->wapi = NULL;
	ly_sync_free(m->sync);
	m->sync = NULL;
	if (m->handles_ready) {
		uv_timer_stop(&m->stop_timer);
		uv_close((uv_handle_t *)&m->stop_timer, NULL);
	}
}

static void
close_rpc(struct agent_main *m)
{
	if (m->rpc_closing)
		return;
	m->rpc_closing = true;
	if (m->agent.rpc != NULL) {
		ly_rpc_close(m->agent.rpc, on_rpc_closed, m);
		return;
	}
	on_rpc_closed(m);
}

/* The state is persisted and the calls to the server are over. */
static void
on_sync_stopped(void *arg)
{
	struct agent_main *m = arg;

	log_debug("sync stopped");
	close_rpc(m);
}

/* systemd's Type=notify (lib/sdnotify.h): a failure is logged, never fatal. */
static void
notify_systemd(const char *state)
{
	struct ly_error e;
	if (ly_sd_notify(state, &e) != LY_OK)
		log_warn("%s", e.msg);
}

/*
 * READY=1 once the Workload API really serves SVIDs (ly_sync_wapi_ready:
 * attested with entries known, or SVIDs cached from an earlier run), not
 * when the socket merely listens: units ordered after lanyard-agent.service
 * then get an identity at once.
 */
static void
on_ready_timer(uv_timer_t *t)
{
	struct agent_main *m = t->data;
	if (!ly_sync_wapi_ready(m->sync))
		return;
	uv_timer_stop(t);
	notify_systemd("READY=1\nSTATUS=serving the Workload API");
}

/* Stops accepting, ends the streams, persists, then lets the loop run dry. */
static void
begin_stop(struct agent_main *m)
{
	if (m->stopping)
		return;
	m->stopping = true;
	if (m->handles_ready) {
		uv_close((uv_handle_t *)&m->sig_term, NULL);
		uv_close((uv_handle_t *)&m->sig_int, NULL);
		uv_close((uv_handle_t *)&m->sig_hup, NULL);
		uv_close((uv_handle_t *)&m->ready_timer, NULL);
		notify_systemd("STOPPING=1");
		/* Unreferenced: it cuts a stuck shutdown short, it does not keep the loop. */
		uv_timer_start(&m->stop_timer, on_stop_timer, STOP_GRACE_MS, 0);
		uv_unref((uv_handle_t *)&m->stop_timer);
	}
	ly_health_http_stop(m->health);
	m->health = NULL;
	m->agent.m_attest_seconds = NULL; /* the registry itself goes in teardown */
	if (m->wapi != NULL)
		ly_wapi_stop(m->wapi);
	if (m->sync != NULL && m->sync_started) {
		ly_sync_stop(m->sync, on_sync_stopped, m);
		return;
	}
	close_rpc(m);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	struct agent_main *m = h->data;

	if (ly_daemon_on_signal(signum, m->flags.log_level, m->flags.config_path, K "log_level"))
		begin_stop(m);
}

/* ---- start-up ------------------------------------------------------------------ */

static void
main_handles_init(struct agent_main *m)
{
	uv_timer_init(&m->loop, &m->stop_timer);
	uv_timer_init(&m->loop, &m->ready_timer);
	m->ready_timer.data = m;
	uv_timer_start(&m->ready_timer, on_ready_timer, READY_POLL_MS, READY_POLL_MS);
	uv_signal_init(&m->loop, &m->sig_term);
	uv_signal_init(&m->loop, &m->sig_int);
	uv_signal_init(&m->loop, &m->sig_hup);
	m->stop_timer.data = m;
	m->sig_term.data = m->sig_int.data = m->sig_hup.data = m;
	m->handles_ready = true;
	uv_signal_start(&m->sig_term, on_signal, SIGTERM);
	uv_signal_start(&m->sig_int, on_signal, SIGINT);
	uv_signal_start(&m->sig_hup, on_signal, SIGHUP);
}

/* ---- health and metrics ------------------------------------------------------------ */

/* Ready once the agent holds its SVID and bundle; the Workload API serves before the listener starts. */
static bool
health_ready(void *arg, char *reason, size_t len)
{
	struct agent_main *m = arg;
	if (m->stopping) {
		snprintf(reason, len, "stopping");
		return false;
	}
	if (!ly_sync_ready(m->sync)) {
		snprintf(reason, len, "not attested yet: no agent SVID or trust bundle");
		return false;
	}
	return true;
}

/*
 * The agent's metrics (docs/agent.md, "Health and metrics"): one registry
 * for the process's life, its families made once; a scrape copies the
 * current values in and renders. The attestation histogram is fed by
 * wapi.c as connections are attested (ly_agent.m_attest_seconds).
 */
struct agent_metrics {
	struct ly_metrics *reg;
	struct ly_metric *start_time, *issued, *rotations, *jwt_minted, *cached, *ready, *verify_failures,
	    *attest_seconds, *connections, *streams, *sync_lag, *last_sync, *reachable, *issue_failures, *wapi_limited,
	    *fed_bundles, *fed_failures;
};

static void
agent_metrics_free(struct agent_metrics *am)
{
	if (am == NULL)
		return;
	ly_metrics_free(am->reg);
	free(am);
}

static ly_status
agent_metrics_new(struct agent_metrics **out, struct ly_error *err)
{
	static const double attest_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
		2.5 };
	static const char *const verify_labels[] = { "kind", "reason", NULL };
	struct agent_metrics *am = calloc(1, sizeof(*am));
	ly_status rc;

	*out = NULL;
	if (am == NULL)
		return ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
	if ((rc = ly_metrics_new(&am->reg, err)) != LY_OK)
		goto out;
#define FAMILY(field, type, name, help, labels, buckets, nb)                                                        \
	if ((rc = ly_metrics_add(am->reg, type, name, help, labels, buckets, nb, &am->field, err)) != LY_OK)        \
		goto out
	FAMILY(start_time, LY_METRIC_GAUGE, "process_start_time_seconds",
	    "Start time of the process since the Unix epoch.", NULL, NULL, 0);
	FAMILY(issued, LY_METRIC_COUNTER, "lanyard_agent_svids_issued_total",
	    "X.509-SVIDs issued to this agent's workloads and verified (first issues and renewals).", NULL, NULL, 0);
	FAMILY(rotations, LY_METRIC_COUNTER, "lanyard_agent_svid_rotations_total", "Renewals of the agent's own SVID.",
	    NULL, NULL, 0);
	FAMILY(jwt_minted, LY_METRIC_COUNTER, "lanyard_agent_jwt_svids_minted_total",
	    "JWT-SVIDs minted by the server for workloads.", NULL, NULL, 0);
	FAMILY(cached, LY_METRIC_GAUGE, "lanyard_agent_cached_svids", "X.509-SVIDs held in the agent's cache.", NULL,
	    NULL, 0);
	FAMILY(ready, LY_METRIC_GAUGE, "lanyard_agent_ready", "1 when the agent holds its SVID and trust bundle.", NULL,
	    NULL, 0);
	FAMILY(verify_failures, LY_METRIC_COUNTER, "lanyard_agent_svid_verification_failures_total",
	    "SVIDs from the server refused by the agent's verification, never served (kind x509 or jwt).",
	    verify_labels, NULL, 0);
	FAMILY(attest_seconds, LY_METRIC_HISTOGRAM, "lanyard_agent_workload_attestation_seconds",
	    "Time from accepting a Workload API connection to its attestation's end.", NULL, attest_buckets,
	    sizeof(attest_buckets) / sizeof(attest_buckets[0]));
	FAMILY(connections, LY_METRIC_GAUGE, "lanyard_agent_workload_api_connections",
	    "Open Workload API connections.", NULL, NULL, 0);
	FAMILY(streams, LY_METRIC_GAUGE, "lanyard_agent_workload_api_open_streams",
	    "Open Workload API streams (X.509-SVID, X.509 and JWT bundles).", NULL, NULL, 0);
	FAMILY(sync_lag, LY_METRIC_GAUGE, "lanyard_agent_sync_lag_seconds",
	    "Seconds since the last update from the server's entry watch (-1: none yet).", NULL, NULL, 0);
	FAMILY(last_sync, LY_METRIC_GAUGE, "lanyard_agent_last_sync_timestamp_seconds",
	    "Wall time of the last update from the server's entry watch (0: none yet).", NULL, NULL, 0);
	FAMILY(reachable, LY_METRIC_GAUGE, "lanyard_agent_server_reachable",
	    "1 when the agent is connected and the server answered within two sync intervals.", NULL, NULL, 0);
	FAMILY(issue_failures, LY_METRIC_COUNTER, "lanyard_agent_svid_issue_failures_total",
	    "Workload X.509-SVIDs not issued or renewed at a try (refused, unanswered, rate limited): each retried.",
	    NULL, NULL, 0);
	FAMILY(wapi_limited, LY_METRIC_COUNTER, "lanyard_agent_workload_api_rate_limited_total",
	    "Workload API calls refused by agent.ratelimit.workload_api (per selector set).", NULL, NULL, 0);
	FAMILY(fed_bundles, LY_METRIC_GAUGE, "lanyard_agent_federated_bundles",
	    "Federated trust domains whose bundles the agent holds for its workloads.", NULL, NULL, 0);
	FAMILY(fed_failures, LY_METRIC_COUNTER, "lanyard_agent_federated_bundle_fetch_failures_total",
	    "GetFederatedBundles calls that failed or whose answer was refused (the bundles held stay).", NULL, NULL,
	    0);
#undef FAMILY
	*out = am;
	am = NULL;
	rc = LY_OK;
out:
	agent_metrics_free(am);
	return rc;
}

static ly_status
health_metrics(void *arg, struct ly_buf *out, struct ly_error *err)
{
	struct agent_main *m = arg;
	struct agent_metrics *am = m->metrics;
	struct ly_sync_stats st;
	struct ly_verify_counters vc;
	size_t conns, streams;
	ly_status rc = LY_OK;
	time_t now = ly_agent_now();

	if (am == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "metrics: no registry");
	ly_sync_stats_get(m->sync, &st);
	ly_sync_verify_counters(m->sync, &vc);
	ly_wapi_counts(m->wapi, &conns, &streams);
#define SET(field, v)                                                                                               \
	if ((rc = ly_metric_set(am->field, NULL, (double)(v), err)) != LY_OK)                                       \
		return rc
	SET(start_time, m->started_at);
	SET(issued, st.svids_issued);
	SET(rotations, st.renewals);
	SET(jwt_minted, st.jwt_minted);
	SET(cached, ly_cache_svid_count(ly_sync_cache(m->sync)));
	SET(ready, ly_sync_ready(m->sync) ? 1 : 0);
	SET(connections, conns);
	SET(streams, streams);
	SET(sync_lag, st.last_sync != 0 ? (double)(now - st.last_sync) : -1.0);
	SET(last_sync, st.last_sync);
	SET(reachable, st.reachable ? 1 : 0);
	SET(issue_failures, st.svids_failed);
	SET(wapi_limited, ly_wapi_rate_limited(m->wapi));
	SET(fed_bundles, st.federated_bundles);
	SET(fed_failures, st.federated_failed);
#undef SET
	for (int why = LY_VERIFY_OK + 1; why < LY_VERIFY_FAIL_COUNT; why++) {
		const char *x509_labels[] = { "x509", ly_verify_fail_str((enum ly_verify_fail)why) };
		const char *jwt_labels[] = { "jwt", ly_verify_fail_str((enum ly_verify_fail)why) };
		if ((rc = ly_metric_set(am->verify_failures, x509_labels, (double)vc.x509[why], err)) != LY_OK ||
		    (rc = ly_metric_set(am->verify_failures, jwt_labels, (double)vc.jwt[why], err)) != LY_OK)
			return rc;
	}
	return ly_metrics_render(am->reg, out, err);
}

static ly_status
health_start(struct agent_main *m, struct ly_error *err)
{
	const struct ly_agent_config *c = &m->agent.cfg;
	if (!c->health_enabled)
		return LY_OK;
	LY_TRY(agent_metrics_new(&m->metrics, err));
	m->agent.m_attest_seconds = m->metrics->attest_seconds;
	struct ly_health_http_config hc = {
		.bind_address = c->health_bind_address, .bind_port = c->health_bind_port,
		.live_path = c->health_live_path, .ready_path = c->health_ready_path,
		.ready = health_ready, .metrics = health_metrics, .arg = m,
	};
	return ly_health_http_start_logged(&m->loop, &hc, &m->health, err);
}

static ly_status
start(struct agent_main *m, struct ly_error *err)
{
	struct ly_agent *a = &m->agent;
	ly_status rc;
	int uvrc;

	LY_TRY(ly_daemon_data_dir_prepare(a->cfg.data_dir, err));
	if ((uvrc = uv_loop_init(&m->loop)) != 0)
		return ly_error_set(err, LY_E_IO, "event loop: %s", uv_strerror(uvrc));
	m->loop_ready = true;
	a->loop = &m->loop;
	/* Signals first: a SIGTERM during start-up is an orderly stop, not a kill. */
	main_handles_init(m);
	LY_TRY(ly_rpc_new(&m->loop, &a->rpc, err));
	const struct ly_sync_changes changes = {
		.arg = m,
		.cache_changed = wire_cache_changed,
		.bundle_changed = wire_bundle_changed,
	};
	const struct ly_wapi_source src = {
		.arg = m,
		.cache = wire_cache,
		.ready = wire_ready,
		.fetch_jwt = wire_fetch_jwt,
		.memory_burst = wire_memory_burst,
	};
	if ((rc = ly_sync_new(a, &changes, &m->sync, err)) != LY_OK)
		return ly_error_wrap(err, rc, "sync");
	if ((rc = ly_wapi_new(a, &src, &m->wapi, err)) != LY_OK)
		return ly_error_wrap(err, rc, "Workload API");
	if ((rc = ly_sync_start(m->sync, err)) != LY_OK)
		return rc;
	m->sync_started = true;
	if ((rc = ly_wapi_start(m->wapi, err)) != LY_OK)
		return rc;
	if ((rc = health_start(m, err)) != LY_OK)
		return rc;
	log_info("lanyard-agent started: trust_domain=%s server=%s:%u socket=%s data_dir=%s sync_interval=%" PRId64
	    "s workload_attestors=unix%s", a->cfg.trust_domain, a->cfg.server_address, (unsigned)a->cfg.server_port,
	    a->cfg.socket_path, a->cfg.data_dir, a->cfg.sync_interval, a->cfg.k8s_enabled ? ",k8s" : "");
	return LY_OK;
}

/* Releases everything, once the loop ran dry (also after a failed start). */
static void
teardown(struct agent_main *m)
{
	if (m->loop_ready) {
		begin_stop(m);
		(void)uv_run(&m->loop, UV_RUN_DEFAULT);
		int rc = uv_loop_close(&m->loop);
		if (rc != 0)
			log_warn("event loop closed with handles open: %s", uv_strerror(rc));
	}
	agent_metrics_free(m->metrics);
	m->metrics = NULL;
	/* Without a loop nothing was made but the config. */
	ly_config_free(m->file);
	m->file = NULL;
}

/* ---- `run` ------------------------------------------------------------------------ */

/*
 * Takes LY_AGENT_JOIN_TOKEN_ENV out of our environment: returns a copy
 * (NULL when unset; *nomem on allocation failure), the original bytes
 * wiped in place (they are what /proc/<pid>/environ shows) and unset.
 */
static char *
take_env_join_token(bool *nomem)
{
	char *v = getenv(LY_AGENT_JOIN_TOKEN_ENV);

	*nomem = false;
	if (v == NULL)
		return NULL;
	char *copy = strdup(v);
	explicit_bzero(v, strlen(v));
	(void)unsetenv(LY_AGENT_JOIN_TOKEN_ENV);
	*nomem = copy == NULL;
	return copy;
}

/* `run -h`: what the command does (lib/daemon.h prints it with the flags). */
#define RUN_ABOUT                                                                              \
	"Runs the agent: serves the Workload API on a Unix socket (a config file is optional: flags " \
	"alone are enough)."

int
ly_agent_run(int argc, char **argv)
{
	struct agent_main *m;
	struct ly_error e;
	int code;

	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		fprintf(stderr, "lanyard-agent: out of memory\n");
		return 1;
	}
	m->flags.server_port = -1;
	struct ly_flag flags[] = {
		{ "config", LY_FLAG_STRING, &m->flags.config_path, "path to a YAML config file (optional)", 0, 0, false },
		{ "trustDomain", LY_FLAG_STRING, &m->flags.trust_domain, "the trust domain, e.g. example.org", 0, 0, false },
		{ "serverAddress", LY_FLAG_STRING, &m->flags.server_address, "the servers: a comma-separated list of host[:port] (a DNS name may give several)", 0, 0,
		    false },
		{ "serverPort", LY_FLAG_INT, &m->flags.server_port, "the server's agent API port (default 8081)", 1, 65535,
		    false },
		{ "socketPath", LY_FLAG_STRING, &m->flags.socket_path,
		    "Workload API socket (default " LY_AGENT_SOCKET_DEFAULT ")", 0, 0, false },
		{ "dataDir", LY_FLAG_STRING, &m->flags.data_dir, "data directory (default " LY_AGENT_DATA_DIR_DEFAULT ")", 0,
		    0, false },
		{ "joinToken", LY_FLAG_STRING, &m->flags.join_token,
		    "a join token from `lanyard-server token generate` (visible to every local user in /proc: prefer $"
		    LY_AGENT_JOIN_TOKEN_ENV " or join_token in the config file)", 0, 0, false },
		{ "trustBundle", LY_FLAG_STRING, &m->flags.trust_bundle,
		    "PEM file with the server's bundle, to trust it the first time", 0, 0, false },
		{ "insecureBootstrap", LY_FLAG_BOOL, &m->flags.insecure_bootstrap,
		    "trust the server the first time without a bundle (tests only)", 0, 0, false },
		{ "logLevel", LY_FLAG_STRING, &m->flags.log_level, "error, warn, info or debug (default info)", 0, 0,
		    false },
	};
	const size_t nflags = sizeof(flags) / sizeof(flags[0]);

	if ((code = ly_daemon_run_flags("lanyard-agent", RUN_ABOUT, flags, nflags, argc, argv)) >= 0)
		goto out;
	for (size_t i = 0; i < nflags; i++) {
		if (flags[i].dst == &m->flags.insecure_bootstrap)
			m->flags.insecure_bootstrap_seen = flags[i].seen;
	}
	bool nomem;
	m->flags.env_join_token = take_env_join_token(&nomem);
	if (nomem) {
		fprintf(stderr, "lanyard-agent: out of memory\n");
		code = 1;
		goto out;
	}
	if (m->flags.config_path != NULL) {
		ly_status st = ly_config_load_file(m->flags.config_path, &m->file, &e);
		if (st != LY_OK) {
			fprintf(stderr, "lanyard-agent: %s\n", e.msg);
			code = st == LY_E_IO ? 1 : 2;
			goto out;
		}
	}
	if (config_load(&m->flags, m->file, &m->agent.cfg, &e) != LY_OK) {
		fprintf(stderr, "lanyard-agent: %s\n", e.msg);
		code = 2;
		goto out;
	}
	/* Both were checked by config_load. */
	ly_daemon_log_apply(m->agent.cfg.log_level, m->agent.cfg.log_format);

	/* Everything we create is ours alone; wapi.c opens the socket to all on purpose. */
	(void)umask(077);
	(void)signal(SIGPIPE, SIG_IGN);
	m->started_at = ly_agent_now();
	if (start(m, &e) != LY_OK) {
		fprintf(stderr, "lanyard-agent: %s\n", e.msg);
		code = 1;
		teardown(m);
		goto out;
	}
	(void)uv_run(&m->loop, UV_RUN_DEFAULT);
	teardown(m);
	log_info("lanyard-agent stopped");
	code = m->exit_code;
out:
	ly_config_free(m->file);
	ly_flags_cleanup(flags, nflags);
	if (m->flags.env_join_token != NULL) {
		explicit_bzero(m->flags.env_join_token, strlen(m->flags.env_join_token));
		free(m->flags.env_join_token);
	}
	free(m);
	return code;
}
