/*
 * server.h: the state of a running lanyard-server, shared by its parts.
 *
 * Threads: one libuv loop thread owns everything here (the datastore, the
 * CA, the entry cache, the watchers, the timers); rpc/ delivers every gRPC
 * call to handlers on that thread. Blocking work (the Kubernetes
 * TokenReview of k8s_psat) runs on uv_queue_work and hands its result back
 * to the loop; nothing else blocks the loop but datastore writes (SQLite,
 * synchronous=FULL: a change is acknowledged only once durable).
 *
 * Parts and who owns what:
 *   server.c     start-up, signals, the CA rotation timer, the server's
 *                TLS certificate, shutdown; owns every field below.
 *   server_config.c  the `run` configuration (flags over the YAML file).
 *   admin_api.c  the Admin service on the Unix socket (CLI verbs).
 *   agent_api.c  the Agent service on TCP+TLS (node attestation, SVIDs,
 *                the entry watch).
 *   authz.c      which entries an agent is authorized for (pure).
 *   audit.c      one audit line per admin change.
 *   cli.c        the admin verbs as a client of admin_api.
 *
 * The admin side tells the agent side about changes through the
 * ly_agent_api_* calls below; they only schedule work on the loop and
 * never fail.
 */
#ifndef LANYARD_SERVER_SERVER_H
#define LANYARD_SERVER_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "lib/caps.h"
#include "lib/error.h"
#include "lib/keys.h"

struct uv_loop_s;
struct ly_rpc;
struct ly_rpc_server;
struct ly_datastore;
struct ly_ca;
struct ly_attest_x509pop;
struct ly_attest_k8s_psat;
struct ly_agent_api;
struct ly_audit;

/* SPEC §2 defaults. */
#define LY_SERVER_SOCKET_DEFAULT "/tmp/lanyard-server/private/api.sock"
#define LY_SERVER_DATA_DIR_DEFAULT "./.lanyard-server"
#define LY_SERVER_BIND_DEFAULT "0.0.0.0"
#define LY_SERVER_PORT_DEFAULT 8081
/* Join tokens' TTLs: server/admin_msg.h. */

/* server.datastore.database_type (SPIRE's names). */
enum ly_datastore_type {
	LY_DATASTORE_SQLITE3 = 0, /* <data_dir>/datastore.sqlite3, the default */
	LY_DATASTORE_POSTGRES,    /* server.datastore.connection_string */
};

struct ly_server_config {
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
	const char *bind_address;
	uint16_t server_port;
	const char *socket_path;
	const char *data_dir;
	enum ly_datastore_type datastore_type;
	/* postgres only: the libpq connection string. It may hold a password:
	 * never log it or put it in an error. */
	const char *datastore_conninfo;
	const char *log_level;
	const char *log_format;
	enum ly_key_type ca_key_type;
	int64_t ca_ttl;
	int64_t x509_svid_ttl;
	int64_t jwt_svid_ttl;
	const char *upstream_cert_path;
	const char *upstream_key_path;
	const char *audit_log_path;  /* NULL: audit lines go to the log */
	bool join_token_enabled;
	const char *x509pop_ca_bundle_path; /* NULL: x509pop off */
	/* Health and metrics listener (rpc/health_http.h), off by default. */
	bool health_enabled;
	const char *health_bind_address; /* "127.0.0.1" */
	uint16_t health_bind_port;       /* 8080 */
	const char *health_live_path;    /* "/live" */
	const char *health_ready_path;   /* "/ready" */
	/* k8s_psat: clusters are configured in the YAML file only. */
};

struct ly_server {
	struct uv_loop_s *loop;
	struct ly_server_config cfg;
	struct ly_rpc *rpc;
	struct ly_rpc_server *agent_server;  /* TCP + TLS */
	struct ly_rpc_server *admin_server;  /* Unix socket */
	struct ly_datastore *ds;
	struct ly_ca *ca;
	struct ly_attest_x509pop *x509pop;   /* NULL when not configured */
	struct ly_attest_k8s_psat *psat;     /* NULL when not configured */
	struct ly_agent_api *agent_api;
	struct ly_audit *audit;
	struct ly_server_metrics *metrics;   /* NULL without the health listener */
	time_t started_at;
	bool stopping;
};

/*
 * server_config.c: the `run` configuration, flags over the YAML file (SPEC
 * §2: flags override the file; a file is optional). Keys are documented
 * in docs/server.md.
 */
struct ly_config;

/* The `run` flags; NULL (or -1 for the port) when not given. Borrowed. */
struct ly_server_flags {
	const char *config_path;  /* -config */
	const char *trust_domain; /* -trustDomain */
	const char *bind_address; /* -bindAddress */
	int64_t server_port;      /* -serverPort; 0 asks for any free port */
	const char *socket_path;  /* -socketPath */
	const char *data_dir;     /* -dataDir */
	const char *log_level;    /* -logLevel */
};

#define LY_SERVER_FLAGS_INIT { NULL, NULL, NULL, -1, NULL, NULL, NULL }

/*
 * Fills `cfg` from the flags and, when flags->config_path is set, the YAML
 * file, which *file receives (NULL without one; free with ly_config_free
 * after the last use of `cfg`: its strings point into the file or argv).
 * Refused: unknown keys (file:line), values of the wrong form or out of
 * range, a missing trust domain (LY_E_INVALID); an unreadable file
 * (LY_E_IO). On failure *file is NULL.
 */
ly_status ly_server_config_load(const struct ly_server_flags *flags, struct ly_server_config *cfg,
    struct ly_config **file, struct ly_error *err) LY_MUST_CHECK;

/*
 * The k8s_psat attestor from the file's
 * server.node_attestors.k8s_psat.clusters; *out is NULL when none is
 * configured. Free with ly_attest_k8s_psat_free.
 */
ly_status ly_server_config_psat(const struct ly_config *file, const char *trust_domain,
    struct ly_attest_k8s_psat **out, struct ly_error *err) LY_MUST_CHECK;

/* server.c: `lanyard-server run ARGS` (argv[0] is the first flag); returns the exit code. */
int ly_server_run(int argc, char **argv);

/* The server's clock (wall time, seconds); one place so tests can reason about it. */
time_t ly_server_now(void);

/*
 * agent_api.c. ly_agent_api_new registers nothing by itself: the server
 * passes ly_agent_api_methods() to ly_rpc_server_new for the TCP listener.
 * Handlers of both services get the struct ly_server * as their `arg`
 * (ly_rpc_server_config.arg); srv->agent_api is set before the listeners
 * start. Shutdown (server.c): ly_agent_api_stop, then ly_rpc_close, then,
 * from the close callback (on the loop, every call released),
 * ly_agent_api_free; the datastore and the CA are closed after that.
 */
ly_status ly_agent_api_new(struct ly_server *srv, struct ly_agent_api **out, struct ly_error *err) LY_MUST_CHECK;
void ly_agent_api_free(struct ly_agent_api *api);
const struct ly_rpc_method *ly_agent_api_methods(size_t *n);
/* An entry was created, updated or deleted: watchers get their deltas. */
void ly_agent_api_entries_changed(struct ly_agent_api *api);
/* The CA's bundle changed: every watcher and enrolled agent sees it. */
void ly_agent_api_bundle_changed(struct ly_agent_api *api);
/* An agent was evicted or banned: its open streams end (PERMISSION_DENIED). */
void ly_agent_api_agent_removed(struct ly_agent_api *api, const char *agent_id);
/* Ends every open stream (shutdown). */
void ly_agent_api_stop(struct ly_agent_api *api);
/* Open WatchEntries streams and the entries cached for them (the metrics' gauges). */
void ly_agent_api_counts(const struct ly_agent_api *api, size_t *watchers, size_t *entries);

/*
 * The server's metric families (server.c makes them with the health
 * listener; NULL without it). The agent API adds to them as it works;
 * ly_server_metric_add ignores a NULL family, so callers need not check.
 */
struct ly_metric;
struct ly_server_metrics {
	struct ly_metrics *reg;
	struct ly_metric *start_time, *ready, *x509_issued, *jwt_issued, *attestations, *attest_seconds, *watchers,
	    *entries, *agents, *ca_expiry;
};
#define LY_SERVER_METRIC(srv, field) ((srv)->metrics != NULL ? (srv)->metrics->field : NULL)
/* Adds `v` to counter `f`, or observes `v` when `f` is a histogram; NULL `f`: nothing. Never fails loudly. */
void ly_server_metric_add(struct ly_metric *f, const char *const *labels, double v);

/* admin_api.c: the Admin service methods for the Unix-socket listener. */
const struct ly_rpc_method *ly_admin_api_methods(size_t *n);

/*
 * The connection context of an admin-socket connection: server.c accepts
 * each connection itself, reads SO_PEERCRED, and hands the socket to gRPC
 * (ly_rpc_server_add_fd) with this; admin_api.c refuses a caller whose uid
 * is neither the server's nor root's and names the uid in the audit log.
 */
struct ly_admin_peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

#endif /* LANYARD_SERVER_SERVER_H */
