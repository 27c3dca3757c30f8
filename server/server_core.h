/*
 * server_core.h: what every part of a running lanyard-server reads: the
 * server's state (struct ly_server, filled and owned by server.c), its
 * clock, its metric families, the admin socket's peer. Below server.c,
 * admin_api.c and agent_api.c, so that they reach it without reaching
 * each other (server.h lists the parts and who owns what).
 *
 * Threads: the loop thread owns everything here (server.h).
 */
#ifndef LANYARD_SERVER_SERVER_CORE_H
#define LANYARD_SERVER_SERVER_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "lib/caps.h"
#include "lib/keys.h"
#include "server/federation.h"

struct uv_loop_s;
struct ly_rpc;
struct ly_rpc_server;
struct ly_dsa;
struct ly_ca;
struct ly_attest_x509pop;
struct ly_attest_k8s_psat;
struct ly_agent_api;
struct ly_audit;
struct ly_bundle;
struct ly_shared_authorities;

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
	int64_t audit_retention;     /* seconds the shared audit trail keeps a line (datastore_audit.h) */
	bool join_token_enabled;
	/* server.ratelimit (SPEC §11, SPIRE's names): both on by default. */
	bool ratelimit_attestation; /* AttestAgent per source IP */
	bool ratelimit_signing;     /* X.509 and JWT signing per agent */
	const char *x509pop_ca_bundle_path; /* NULL: x509pop off */
	/* Health and metrics listener (rpc/health_http.h), off by default. */
	bool health_enabled;
	const char *health_bind_address; /* "127.0.0.1" */
	uint16_t health_bind_port;       /* 8080 */
	const char *health_live_path;    /* "/live" */
	const char *health_ready_path;   /* "/ready" */
	/* k8s_psat: clusters are configured in the YAML file only. */
	/* server.federation (federation.h): the bundle endpoint and static relationships. */
	struct ly_fed_config fed;
};

/*
 * `federation refresh` (SPEC §9): fetch relationship `td`'s bundle now.
 * Runs on the loop thread and returns at once; `done(done_arg, rc, msg)`
 * then runs exactly once, later, on the loop, when the fetch ended (msg:
 * one line saying why when rc is not LY_OK). An error return means `done`
 * never runs.
 */
typedef void ly_fed_refresh_done_fn(void *done_arg, ly_status rc, const char *msg);
typedef ly_status ly_fed_refresh_fn(void *arg, const char *td, ly_fed_refresh_done_fn *done, void *done_arg,
    struct ly_error *err);

struct ly_shared_outcome; /* server_shared.h */

struct ly_server {
	struct uv_loop_s *loop;
	struct ly_server_config cfg;
	struct ly_rpc *rpc;
	struct ly_rpc_server *agent_server;  /* TCP + TLS */
	struct ly_rpc_server *admin_server;  /* Unix socket */
	/* The datastore, on its worker thread (datastore_async.h): every call
	 * goes through ly_dsa_submit; the loop never holds the store itself. */
	struct ly_dsa *dsa;
	/* Whether the datastore is one several servers share (ly_datastore_shared), read once at start-up. */
	bool ds_shared;
	struct ly_ca *ca;
	struct ly_attest_x509pop *x509pop;   /* NULL when not configured */
	struct ly_attest_k8s_psat *psat;     /* NULL when not configured */
	struct ly_agent_api *agent_api;
	struct ly_audit *audit;
	struct ly_server_metrics *metrics;   /* NULL without the health listener */
	/*
	 * Several servers on one PostgreSQL (SPEC §10): the union of every
	 * server's published authorities and this CA's own (bundle_shared.h),
	 * served instead of the CA's bundle; NULL with SQLite. server_shared.c
	 * keeps it; read it through ly_server_bundle.
	 */
	struct ly_bundle *shared_bundle;
	struct ly_shared_authorities *shared_rows; /* the last rows read from the database */
	char server_id[36 + 1];               /* a UUID, <data_dir>/server-id; "" with SQLite */
	/*
	 * server_shared.c's publish and reload on the datastore's worker
	 * (ly_server_shared_update): one job at a time, one more asked
	 * meanwhile; the outcome goes to done(arg, ...) on the loop.
	 */
	struct {
		bool inflight, again, again_publish;
		int64_t again_now;           /* the latest `now` asked meanwhile */
		bool publish_asked;          /* the job in flight publishes first */
		struct ly_error publish_err; /* its publish's outcome (code LY_OK: published) */
		void (*done)(void *arg, const struct ly_shared_outcome *o);
		void *arg;
	} shared_job;
	time_t started_at;
	bool stopping;
	/* The federation bundle fetcher's refresh (set by the fetcher when it
	 * starts); fn NULL: `federation refresh` answers UNIMPLEMENTED. */
	struct {
		ly_fed_refresh_fn *fn;
		void *arg;
	} fed_refresh;
};

/*
 * The trust bundle this server serves (GetBundle, the watch's
 * bundle_sequence, the agent listener's client roots, `bundle show`): the
 * shared bundle when several servers share the store, else the CA's.
 * Borrowed; NULL before the CA is open.
 */
const struct ly_bundle *ly_server_bundle(const struct ly_server *srv);

/* The server's clock (wall time, seconds); one place so tests can reason about it. */
time_t ly_server_now(void);

/*
 * The server's metric families (server_metrics.c makes them with the
 * health listener; NULL without it). The agent API adds to them as it works;
 * ly_server_metric_add ignores a NULL family, so callers need not check.
 */
struct ly_metric;
struct ly_server_metrics {
	struct ly_metrics *reg;
	struct ly_metric *start_time, *ready, *x509_issued, *jwt_issued, *attestations, *attest_seconds, *watchers,
	    *entries, *agents, *ca_expiry, *rate_limited, *notify_listening, *bundle_authorities, *ds_reachable,
	    *ds_pending, *ds_calls, *ds_seconds, *fed_bundle_changes, *fed_bundles;
	/* Federation's fetcher and endpoint: refused fetches {trust_domain, reason}, endpoint answers {code}. */
	struct ly_metric *fed_refusals, *fed_endpoint_answers;
};
#define LY_SERVER_METRIC(srv, field) ((srv)->metrics != NULL ? (srv)->metrics->field : NULL)
/* Adds `v` to counter `f`, or observes `v` when `f` is a histogram; NULL `f`: nothing. Never fails loudly. */
void ly_server_metric_add(struct ly_metric *f, const char *const *labels, double v);

/*
 * The connection context of an admin-socket connection: server.c accepts
 * each connection itself, reads SO_PEERCRED, and hands the socket to gRPC
 * (ly_rpc_server_add_fd) with this; admin_op.c refuses a caller whose uid
 * is neither the server's nor root's and names the uid in the audit log.
 */
struct ly_admin_peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

#endif /* LANYARD_SERVER_SERVER_CORE_H */
