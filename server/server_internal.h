/*
 * server_internal.h: what the files of `lanyard-server run` share, not for
 * other modules. The daemon is split by role, calls going one way only
 * (top to bottom):
 *  - server.c: `run`, configuration, the start-up sequence, the admin
 *    socket, the prune timer (join tokens, the shared audit trail),
 *    signals, shutdown and teardown; owns struct srv_main and every field
 *    of struct ly_server (server_core.h);
 *  - server_bundle.c: what keeps the served trust bundle current: the CA
 *    rotation timer, several servers on one PostgreSQL (the shared
 *    bundle's publishing and reloading, pg_notify.h's notices fed to the
 *    datastore's change hook) and the certificate renewals that follow;
 *  - server_fed.c: federation's wiring (federation.h): the bundle
 *    endpoint, the fetcher's datastore (struct ly_fed_ops over a copy kept
 *    on the loop), `federation refresh`, the federated bundle changes;
 *  - server_tls.c: the server's own certificate (the agent listener's, and
 *    the https_spiffe bundle endpoint's);
 *  - server_metrics.c: the metric families, the health listener's
 *    /ready and /metrics, and what feeds them from the datastore's worker
 *    (every call's outcome, the ping).
 *
 * Ownership and lifetimes: struct srv_main is calloc'd by ly_server_run
 * and freed when it returns, after teardown; every handle in it is closed
 * on the loop (begin_stop) before the loop is closed. The parts keep no
 * state of their own outside it.
 *
 * Threads: everything here runs on the loop thread, except the `*_work`
 * functions the parts hand to the datastore's worker (datastore_async.h),
 * which touch only their own call's struct.
 */
#ifndef LANYARD_SERVER_SERVER_INTERNAL_H
#define LANYARD_SERVER_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <uv.h>

#include "lib/config.h"
#include "lib/error.h"
#include "server/datastore.h"
#include "server/datastore_async.h"
#include "server/server.h"

struct ly_health_http;
struct ly_fed_endpoint;
struct ly_fed_fetcher;
struct ly_pg_notify;

struct srv_main {
	struct ly_server srv; /* first: handlers get &srv */
	struct ly_server_flags flags;
	struct ly_config *file;
	uv_loop_t loop;
	bool loop_ready;
	uv_timer_t tick_timer, prune_timer, stop_timer, ds_ping_timer;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_pipe_t admin_listener;
	bool handles_ready, admin_listening, admin_bound;
	char agent_addr[128];
	int agent_port;
	bool agent_listening;
	time_t svid_renew_at;
	bool rpc_closing;
	int exit_code;
	struct ly_health_http *health;
	/* Opened by open_state, handed to the worker by open_rpc (the loop exists then). */
	struct ly_datastore *ds_opened;
	/* The datastore ping: one at a time; the last agent count, and the revision it was made at. */
	bool ds_ping_inflight, prune_inflight;
	size_t ds_agents;
	int64_t ds_counted_at;
	size_t ds_fed_bundles; /* the last count of federated bundles the ping read */
	/* Federation (issue 15): the bundle endpoint (NULL when not configured) and the fetcher. */
	struct ly_fed_endpoint *fed_ep;
	struct ly_fed_fetcher *fetcher;
	/* What the fetcher reads (ly_fed_ops): a copy of the store's, read again on the worker. */
	struct fed_cache {
		struct ly_ds_fed_rel_list rels;
		struct ly_ds_fed_bundle_list bundles;
		bool inflight, again, applying, failing;
		bool first_pending; /* start-up's read is on the worker: the fetcher starts when it completes */
	} fedc;
	/* Several servers on one PostgreSQL (server_shared.h, pg_notify.h). */
	struct ly_pg_notify *notify;
	bool publish_pending;      /* the CA's bundle changed and is not in the database yet */
	int64_t shared_next_expiry; /* an authority of the shared bundle expires then: rebuild */
};

/* ---- server_bundle.c ---- */

/*
 * (Re)arms the rotation timer for the next CA event, the server
 * certificate's renewal or the shared bundle's next expiry, whichever
 * comes first (at most 10 minutes away); `retry_ms` > 0 brings it closer.
 * m->tick_timer must be initialised.
 */
void server_bundle_tick_arm(struct srv_main *m, uint64_t retry_ms);

/*
 * PostgreSQL shared by several servers (m->srv.ds_shared): LISTEN for
 * their changes on a connection of its own (pg_notify.h; m->notify,
 * stopped by begin_stop). Nothing with SQLite.
 */
ly_status server_bundle_notify_start(struct srv_main *m, struct ly_error *err) LY_MUST_CHECK;

/* ---- server_fed.c ---- */

/*
 * The datastore worker's change callback (ly_dsa_on_change, arg: the
 * struct ly_server) for every federated bundle change: one log line and
 * the counter.
 */
void server_fed_on_change(void *arg, const struct ly_datastore_change *c);

/*
 * Starts the bundle endpoint when configured and submits the first read of
 * the relationships on the worker (the loop does not wait: the fetcher
 * starts when it completes), and sets srv->fed_refresh. Both are stopped by begin_stop; the copy the fetcher
 * reads (m->fedc) is freed by teardown.
 */
ly_status server_fed_start(struct srv_main *m, struct ly_error *err) LY_MUST_CHECK;

/* Gives the bundle endpoint (if any) the bundle served now; logs a failure (the previous one stays). */
void server_fed_publish(struct srv_main *m);

/* ---- server_tls.c ---- */

/*
 * Makes a fresh key and server certificate and listens on m->agent_addr
 * with it (the first time) or rotates the agent listener's and the
 * https_spiffe bundle endpoint's certificate; sets m->svid_renew_at.
 * The key is never written anywhere and wiped once gRPC has it.
 */
ly_status server_tls_refresh(struct srv_main *m, time_t now, struct ly_error *err) LY_MUST_CHECK;

/* ---- server_metrics.c ---- */

/* The datastore worker's observer (struct ly_dsa_config; arg: the struct srv_main). */
void server_metrics_observe(void *arg, enum ly_dsa_outcome outcome, double seconds);

/* With health_checks on: makes srv->metrics and starts the listener (m->health, stopped by begin_stop). */
ly_status server_metrics_start(struct srv_main *m, struct ly_error *err) LY_MUST_CHECK;

/* Starts the datastore ping on m->ds_ping_timer (initialised by the caller, closed by begin_stop). */
void server_metrics_ping_start(struct srv_main *m);

/* Frees srv->metrics' registry (NULL: nothing). */
void server_metrics_free(struct ly_server_metrics *sm);

#endif /* LANYARD_SERVER_SERVER_INTERNAL_H */
