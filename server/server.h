/*
 * server.h: the state of a running lanyard-server, shared by its parts.
 *
 * Threads: one libuv loop thread owns everything here (the CA, the entry
 * cache, the watchers, the timers); rpc/ delivers every gRPC call to
 * handlers on that thread. The datastore is owned by its own worker
 * thread (datastore_async.h): handlers and timers submit calls and go on
 * in their completions, on the loop, so a database that hangs never
 * blocks the loop. Other blocking work (the Kubernetes TokenReview of
 * k8s_psat) runs on uv_queue_work and hands its result back to the loop.
 *
 * Parts and who owns what:
 *   server.c     start-up, the admin socket, signals, shutdown; owns
 *                every field of struct ly_server (server_core.h); its
 *                parts behind server_internal.h: server_bundle.c (the
 *                CA rotation timer, the shared bundle), server_fed.c
 *                (federation's wiring), server_tls.c (the server's TLS
 *                certificate), server_metrics.c (metrics and health).
 *   server_core.c  the state below (struct ly_server), clock, metrics.
 *   server_config.c  the `run` configuration (flags over the YAML file).
 *   admin_api.c  the Admin service on the Unix socket (CLI verbs);
 *                its federation methods in admin_api_fed.c, every
 *                call's start and answer in admin_op.c; its requests
 *                decoded and checked by admin_msg.c, admin_msg_fed.c.
 *   agent_api*.c the Agent service on TCP+TLS (node attestation, SVIDs,
 *                the entry watch), split behind agent_api_internal.h;
 *                its requests decoded and checked by agentapi_msg.c.
 *   authz.c      which entries an agent is authorized for (pure).
 *   audit.c      one audit line per admin change.
 *   cli.c        the admin verbs as a client of admin_api.
 *
 * The state every part reads (struct ly_server, the clock, the metrics,
 * the admin peer) is in server_core.h, below all of them. The admin side
 * does not call the agent side: its writes reach the agent API through
 * the datastore's change hook (datastore.h), which the agent API
 * registers at start-up.
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
#include "server/server_core.h"

struct ly_rpc_method;

/* SPEC §2 defaults. */
#define LY_SERVER_SOCKET_DEFAULT "/tmp/lanyard-server/private/api.sock"
#define LY_SERVER_DATA_DIR_DEFAULT "./.lanyard-server"
#define LY_SERVER_BIND_DEFAULT "0.0.0.0"
#define LY_SERVER_PORT_DEFAULT 8081
/* Join tokens' TTLs: server/admin_msg.h. */


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


/*
 * agent_api.c. ly_agent_api_new registers nothing by itself: the server
 * passes ly_agent_api_methods() to ly_rpc_server_new for the TCP listener.
 * Handlers of both services get the struct ly_server * as their `arg`
 * (ly_rpc_server_config.arg); srv->agent_api is set before the listeners
 * start. Shutdown (server.c): ly_agent_api_stop, then ly_rpc_close, then,
 * from the close callback (on the loop, every call released),
 * ly_agent_api_free; the datastore and the CA are closed after that.
 * ly_agent_api_new registers with the datastore's change hook (through
 * ly_dsa_on_change: on the loop; entries created, updated, deleted; agents
 * evicted, banned: their streams end) and starts loading the entry
 * replica; ly_agent_api_free unregisters and detaches its datastore calls
 * still in flight (they end their gRPC calls UNAVAILABLE).
 */
ly_status ly_agent_api_new(struct ly_server *srv, struct ly_agent_api **out, struct ly_error *err) LY_MUST_CHECK;
void ly_agent_api_free(struct ly_agent_api *api);
const struct ly_rpc_method *ly_agent_api_methods(size_t *n);
/* The CA's bundle changed: every watcher and enrolled agent sees it. */
void ly_agent_api_bundle_changed(struct ly_agent_api *api);
/* Ends every open stream (shutdown). */
void ly_agent_api_stop(struct ly_agent_api *api);
/*
 * Re-reads every agent record (one datastore list, on the datastore's
 * worker; applied when it answers, an error return means not started) and
 * ends the streams of
 * agents evicted or banned meanwhile: after a lost notification channel
 * (pg_notify.h), whose missed evictions and bans no change hook reported.
 */
ly_status ly_agent_api_recheck_agents(struct ly_agent_api *api, struct ly_error *err) LY_MUST_CHECK;
/* Open WatchEntries streams and the entries cached for them (the metrics' gauges). */
void ly_agent_api_counts(const struct ly_agent_api *api, size_t *watchers, size_t *entries);


/* admin_api.c: the Admin service methods for the Unix-socket listener. */
const struct ly_rpc_method *ly_admin_api_methods(size_t *n);


#endif /* LANYARD_SERVER_SERVER_H */
