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
 *   server.c     config (flags over the YAML file), start-up, signals,
 *                the CA rotation timer, shutdown; owns every field below.
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
/* Join tokens: default and largest TTL, seconds. */
#define LY_TOKEN_TTL_DEFAULT 600
#define LY_TOKEN_TTL_MAX (7 * 24 * 60 * 60)

struct ly_server_config {
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
	const char *bind_address;
	uint16_t server_port;
	const char *socket_path;
	const char *data_dir;
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
	time_t started_at;
	bool stopping;
};

/* The server's clock (wall time, seconds); one place so tests can reason about it. */
time_t ly_server_now(void);

/*
 * agent_api.c. ly_agent_api_new registers nothing by itself: the server
 * passes ly_agent_api_methods() to ly_rpc_server_new for the TCP listener.
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

/* admin_api.c: the Admin service methods for the Unix-socket listener. */
const struct ly_rpc_method *ly_admin_api_methods(size_t *n);

#endif /* LANYARD_SERVER_SERVER_H */
