/*
 * server.c: `lanyard-server run` (SPEC §2): configuration, the start-up
 * sequence, the admin socket, the prune timer (expired join tokens, the
 * shared audit trail's retention), signals, and an orderly shutdown. Owns
 * struct srv_main (server_internal.h, which lists the other files of the
 * daemon and their jobs) and every field of struct ly_server (server.h);
 * calls go down to the other parts, never back.
 *
 * Start-up, in order; the first failure ends the run with exit code 1 and
 * one line on stderr saying what and why:
 *   data dir (0700) -> datastore (<dataDir>/datastore.sqlite3, or PostgreSQL) -> CA
 *   (<dataDir>/ca) -> audit log -> node attestors -> gRPC -> agent API on
 *   bindAddress:serverPort (TLS, server_tls.c; client certificates
 *   requested, verified against the bundle when given) -> admin API on
 *   -socketPath -> health listener (server_metrics.c) -> federation
 *   (server_fed.c) -> the timers -> LISTEN with PostgreSQL (server_bundle.c).
 *
 * The admin socket is accepted by libuv, not by gRPC, so that each
 * connection's peer credentials (SO_PEERCRED) can be read and handed to
 * admin_api.c (struct ly_admin_peer): gRPC's own Unix listener gives none.
 * The socket is made 0600 inside a 0700 directory of ours, created before
 * the socket, so no other user can ever reach it.
 *
 * The datastore runs on its own worker thread (datastore_async.h), opened
 * before the loop and handed to the worker once the loop exists; the loop
 * only submits calls.
 *
 * Signals: SIGTERM and SIGINT stop accepting, end the agents' streams
 * (ly_agent_api_stop), let gRPC release every call, then close the
 * datastore (its calls still in flight hear "closing") and the CA: exit 0.
 * SIGHUP re-reads the log level from the config file (a -logLevel flag
 * keeps winning) and an https_web bundle endpoint's certificate files.
 * Under systemd (Type=notify, lib/sdnotify.h): READY=1 once the CA signs
 * and both APIs listen, STOPPING=1 when a stop begins.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "lib/bundle.h"
#include "lib/config.h"
#include "lib/daemon.h"
#include "lib/flags.h"
#include "lib/log.h"
#include "lib/sdnotify.h"
#include "lib/sockpath.h"
#include "rpc/health_http.h"
#include "rpc/rpc.h"
#include "server/admin_audit.h"
#include "server/attest.h"
#include "server/audit.h"
#include "server/ca.h"
#include "server/datastore.h"
#include "server/datastore_async.h"
#include "server/fed_endpoint.h"
#include "server/fed_fetch.h"
#include "server/pg_notify.h"
#include "server/server.h"
#include "server/server_internal.h"
#include "server/server_shared.h"

/* Join tokens that expired are deleted this often. */
#define PRUNE_MS (10 * 60 * 1000)
/* A shutdown that takes longer than this is cut short. */
#define STOP_GRACE_MS (15 * 1000)

/* Join tokens that expired, deleted on the datastore's worker. */
struct prune_call {
	struct srv_main *m;
	int64_t now;
	size_t removed;
};

static ly_status
prune_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct prune_call *p = ctx;

	return ly_datastore_token_prune(ds, p->now, &p->removed, err);
}

static void
prune_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct prune_call *p = ctx;

	p->m->prune_inflight = false;
	if (st != LY_OK)
		log_warn("join token pruning failed: %s", err->msg);
	else if (p->removed > 0)
		log_info("%zu expired join tokens deleted", p->removed);
}

static void
on_prune(uv_timer_t *t)
{
	struct srv_main *m = t->data;
	struct prune_call *p;
	struct ly_error e;

	if (m->srv.stopping || m->prune_inflight)
		return;
	ly_admin_audit_prune(&m->srv, ly_server_now());
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		log_warn("join token pruning skipped: out of memory");
		return;
	}
	p->m = m;
	p->now = (int64_t)ly_server_now();
	if (ly_dsa_submit(m->srv.dsa, prune_work, prune_done, NULL, p, 0, &e) != LY_OK) {
		log_warn("join token pruning skipped: %s", e.msg);
		free(p);
		return;
	}
	m->prune_inflight = true;
}

/* ---- the admin socket ----------------------------------------------------------------- */

static void
free_handle_cb(uv_handle_t *h)
{
	free(h);
}

static void
admin_conn_release(void *conn_ctx, void *arg)
{
	free(conn_ctx);
}

/* One CLI connection: read who it is, then hand it to gRPC. */
static void
on_admin_conn(uv_stream_t *listener, int status)
{
	struct srv_main *m = listener->data;
	struct ly_admin_peer *peer = NULL;
	struct ly_error e;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	uv_os_fd_t fd;
	uv_pipe_t *client;

	if (status < 0) {
		log_warn("admin socket: accept: %s", uv_strerror(status));
		return;
	}
	client = malloc(sizeof(*client));
	if (client == NULL)
		return;
	if (uv_pipe_init(&m->loop, client, 0) != 0) {
		free(client);
		return;
	}
	if (uv_accept(listener, (uv_stream_t *)client) != 0 || uv_fileno((uv_handle_t *)client, &fd) != 0)
		goto out;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		log_warn("admin socket: no peer credentials: %s", strerror(errno));
		goto out;
	}
	peer = malloc(sizeof(*peer));
	if (peer == NULL)
		goto out;
	peer->uid = cred.uid;
	peer->gid = cred.gid;
	peer->pid = cred.pid;
	if (m->srv.stopping || ly_rpc_server_add_fd(m->srv.admin_server, fd, peer, &e) != LY_OK) {
		if (!m->srv.stopping)
			log_warn("admin socket: connection not served: %s", e.msg);
		free(peer);
	}
out:
	/* gRPC holds its own duplicate of the fd. */
	uv_close((uv_handle_t *)client, free_handle_cb);
}

static ly_status
admin_listen(struct srv_main *m, struct ly_error *err)
{
	const char *path = m->srv.cfg.socket_path;
	ly_status st;
	int rc;

	/* The 0700 directory is the fence; SO_PEERCRED then checks each caller's uid (ly_admin_peer). */
	if ((st = ly_sockpath_private_prepare(path, err)) != LY_OK)
		return ly_error_wrap(err, st, "admin socket");
	if ((rc = uv_pipe_init(&m->loop, &m->admin_listener, 0)) != 0)
		return ly_error_set(err, LY_E_IO, "admin socket: %s", uv_strerror(rc));
	m->admin_listener.data = m;
	m->admin_listening = true;
	if ((rc = uv_pipe_bind(&m->admin_listener, path)) != 0)
		return ly_error_set(err, LY_E_IO, "cannot listen on admin socket %s: %s", path, uv_strerror(rc));
	m->admin_bound = true;
	/* Inside the 0700 directory the mode is a second fence. */
	if (chmod(path, 0600) != 0)
		return ly_error_set(err, LY_E_IO, "admin socket: chmod %s: %s", path, strerror(errno));
	if ((rc = uv_listen((uv_stream_t *)&m->admin_listener, 64, on_admin_conn)) != 0)
		return ly_error_set(err, LY_E_IO, "cannot listen on admin socket %s: %s", path, uv_strerror(rc));
	return LY_OK;
}

/* ---- shutdown ---------------------------------------------------------------------------- */

static void
on_stop_timer(uv_timer_t *t)
{
	log_error("shutdown took more than %d s: exiting now", STOP_GRACE_MS / 1000);
	_exit(1);
}

static void
on_rpc_closed(void *arg)
{
	struct srv_main *m = arg;

	/* Every call is released: the agent API holds nothing of gRPC's now. */
	if (m->srv.agent_api != NULL)
		ly_agent_api_free(m->srv.agent_api);
	m->srv.agent_api = NULL;
	m->srv.rpc = NULL;
	m->srv.agent_server = NULL;
	m->srv.admin_server = NULL;
	if (m->handles_ready) {
		uv_timer_stop(&m->stop_timer);
		uv_close((uv_handle_t *)&m->stop_timer, NULL);
	}
}

/* Stops accepting and lets every call end; the loop then runs dry. */
static void
begin_stop(struct srv_main *m)
{
	if (m->rpc_closing)
		return;
	m->srv.stopping = true;
	m->rpc_closing = true;
	struct ly_error ne;
	if (ly_sd_notify("STOPPING=1", &ne) != LY_OK)
		log_warn("%s", ne.msg);
	if (m->handles_ready) {
		uv_close((uv_handle_t *)&m->sig_term, NULL);
		uv_close((uv_handle_t *)&m->sig_int, NULL);
		uv_close((uv_handle_t *)&m->sig_hup, NULL);
		uv_close((uv_handle_t *)&m->tick_timer, NULL);
		uv_close((uv_handle_t *)&m->prune_timer, NULL);
		uv_close((uv_handle_t *)&m->ds_ping_timer, NULL);
		ly_pg_notify_stop(m->notify);
		m->notify = NULL;
		/* Unreferenced: it cuts a stuck shutdown short, it does not keep the loop. */
		uv_timer_start(&m->stop_timer, on_stop_timer, STOP_GRACE_MS, 0);
		uv_unref((uv_handle_t *)&m->stop_timer);
	}
	if (m->admin_listening) {
		uv_close((uv_handle_t *)&m->admin_listener, NULL);
		m->admin_listening = false;
		if (m->admin_bound)
			(void)unlink(m->srv.cfg.socket_path);
	}
	ly_health_http_stop(m->health);
	m->health = NULL;
	ly_fed_endpoint_stop(m->fed_ep);
	m->fed_ep = NULL;
	ly_fed_fetcher_free(m->fetcher);
	m->fetcher = NULL;
	m->srv.fed_refresh.fn = NULL;
	m->srv.fed_refresh.arg = NULL;
	if (m->srv.agent_api != NULL)
		ly_agent_api_stop(m->srv.agent_api);
	if (m->srv.rpc != NULL) {
		ly_rpc_close(m->srv.rpc, on_rpc_closed, m);
	} else {
		if (m->srv.agent_api != NULL)
			ly_agent_api_free(m->srv.agent_api);
		m->srv.agent_api = NULL;
		if (m->handles_ready)
			uv_close((uv_handle_t *)&m->stop_timer, NULL);
	}
}

static void
on_signal(uv_signal_t *h, int signum)
{
	struct srv_main *m = h->data;

	if (ly_daemon_on_signal(signum, m->flags.log_level, m->flags.config_path, "server.log_level")) {
		begin_stop(m);
		return;
	}
	struct ly_error e;
	if (signum == SIGHUP && m->fed_ep != NULL && m->srv.cfg.fed.endpoint.profile == LY_FED_PROFILE_HTTPS_WEB) {
		if (ly_fed_endpoint_reload(m->fed_ep, &e) != LY_OK)
			log_error("SIGHUP: bundle endpoint certificate not reloaded (the previous stays): %s", e.msg);
		else
			log_info("SIGHUP: bundle endpoint certificate reloaded");
	}
}

static ly_status
open_state(struct srv_main *m, struct ly_error *err)
{
	struct ly_server *srv = &m->srv;
	char path[LY_CONFIG_VALUE_MAX + 64];
	ly_status rc;

	LY_TRY(ly_daemon_data_dir_prepare(srv->cfg.data_dir, err));
	if (srv->cfg.datastore_type == LY_DATASTORE_POSTGRES) {
		/* The connection string may hold a password: never in a message. */
		if ((rc = ly_datastore_pg_open(srv->cfg.datastore_conninfo, &m->ds_opened, err)) != LY_OK)
			return ly_error_wrap(err, rc, "cannot open datastore (postgres)");
	} else {
		(void)snprintf(path, sizeof(path), "%s/datastore.sqlite3", srv->cfg.data_dir);
		if ((rc = ly_datastore_sqlite_open(path, &m->ds_opened, err)) != LY_OK)
			return ly_error_wrap(err, rc, "cannot open datastore %s", path);
	}
	/* Federation refuses our own trust domain (datastore.h); before the worker takes the store. */
	LY_TRY(ly_datastore_set_trust_domain(m->ds_opened, srv->cfg.trust_domain, err));

	struct ly_ca_config cc = {
		.trust_domain = srv->cfg.trust_domain,
		.data_dir = srv->cfg.data_dir,
		.key_type = srv->cfg.ca_key_type,
		.ca_ttl = srv->cfg.ca_ttl,
		.x509_svid_ttl = srv->cfg.x509_svid_ttl,
		.jwt_svid_ttl = srv->cfg.jwt_svid_ttl,
		.upstream_cert_path = srv->cfg.upstream_cert_path,
		.upstream_key_path = srv->cfg.upstream_key_path,
	};
	if ((rc = ly_ca_open(&cc, ly_server_now(), &srv->ca, err)) != LY_OK)
		return ly_error_wrap(err, rc, "cannot open the CA in %s/ca", srv->cfg.data_dir);
	LY_TRY(ly_audit_open(srv->cfg.audit_log_path, &srv->audit, err));
	if (srv->cfg.x509pop_ca_bundle_path != NULL &&
	    (rc = ly_attest_x509pop_new(srv->cfg.trust_domain, srv->cfg.x509pop_ca_bundle_path, &srv->x509pop,
		err)) != LY_OK)
		return ly_error_wrap(err, rc, "x509pop node attestor");
	if ((rc = ly_server_config_psat(m->file, srv->cfg.trust_domain, &srv->psat, err)) != LY_OK)
		return ly_error_wrap(err, rc, "k8s_psat node attestor");
	return LY_OK;
}

static ly_status
open_rpc(struct srv_main *m, struct ly_error *err)
{
	struct ly_server *srv = &m->srv;
	size_t n = 0;
	const struct ly_rpc_method *methods;
	int uvrc;

	if ((uvrc = uv_loop_init(&m->loop)) != 0)
		return ly_error_set(err, LY_E_IO, "event loop: %s", uv_strerror(uvrc));
	m->loop_ready = true;
	srv->loop = &m->loop;
	/* From here on the worker owns the datastore. */
	struct ly_dsa_config dc = { .observe = server_metrics_observe, .observe_arg = m };
	struct ly_datastore *ds = m->ds_opened;
	m->ds_opened = NULL;
	srv->ds_shared = ly_datastore_shared(ds);
	LY_TRY(ly_dsa_new(&m->loop, ds, &dc, &srv->dsa, err));
	LY_TRY(ly_dsa_on_change(srv->dsa, server_fed_on_change, srv, err));
	/* PostgreSQL: our authorities into the shared bundle, and the union of every server's. */
	LY_TRY(ly_server_shared_open(srv, (int64_t)ly_server_now(), err));
	LY_TRY(ly_rpc_new(&m->loop, &srv->rpc, err));
	LY_TRY(ly_agent_api_new(srv, &srv->agent_api, err));

	methods = ly_agent_api_methods(&n);
	/* Its answers (a WatchEntries snapshot of many entries) may pass gRPC's 4 MiB default: lib/caps.h. */
	struct ly_rpc_server_config agent_cfg = { .methods = methods, .n_methods = n, .arg = srv,
		.max_response = LY_RPC_RESPONSE_MAX };
	LY_TRY(ly_rpc_server_new(srv->rpc, &agent_cfg, &srv->agent_server, err));
	if (strchr(srv->cfg.bind_address, ':') != NULL)
		(void)snprintf(m->agent_addr, sizeof(m->agent_addr), "[%s]:%u", srv->cfg.bind_address,
		    (unsigned)srv->cfg.server_port);
	else
		(void)snprintf(m->agent_addr, sizeof(m->agent_addr), "%s:%u", srv->cfg.bind_address,
		    (unsigned)srv->cfg.server_port);
	LY_TRY(server_tls_refresh(m, ly_server_now(), err));

	methods = ly_admin_api_methods(&n);
	struct ly_rpc_server_config admin_cfg = {
		.methods = methods, .n_methods = n, .arg = srv, .max_request = LY_ADMIN_REQUEST_MAX,
		.trusted = true, /* SO_PEERCRED-checked: never shed by the memory guard */
		.conn_release = admin_conn_release,
	};
	LY_TRY(ly_rpc_server_new(srv->rpc, &admin_cfg, &srv->admin_server, err));
	LY_TRY(ly_rpc_server_start(srv->agent_server, err));
	LY_TRY(ly_rpc_server_start(srv->admin_server, err));
	return admin_listen(m, err);
}

static void
handles_init(struct srv_main *m)
{
	uv_timer_init(&m->loop, &m->tick_timer);
	uv_timer_init(&m->loop, &m->prune_timer);
	uv_timer_init(&m->loop, &m->stop_timer);
	uv_timer_init(&m->loop, &m->ds_ping_timer);
	uv_signal_init(&m->loop, &m->sig_term);
	uv_signal_init(&m->loop, &m->sig_int);
	uv_signal_init(&m->loop, &m->sig_hup);
	m->tick_timer.data = m->prune_timer.data = m->stop_timer.data = m->ds_ping_timer.data = m;
	m->sig_term.data = m->sig_int.data = m->sig_hup.data = m;
	m->handles_ready = true;
	uv_signal_start(&m->sig_term, on_signal, SIGTERM);
	uv_signal_start(&m->sig_int, on_signal, SIGINT);
	uv_signal_start(&m->sig_hup, on_signal, SIGHUP);
}

static ly_status
start(struct srv_main *m, struct ly_error *err)
{
	LY_TRY(open_state(m, err));
	LY_TRY(open_rpc(m, err));
	handles_init(m);
	LY_TRY(server_metrics_start(m, err));
	LY_TRY(server_fed_start(m, err));
	server_bundle_tick_arm(m, 0);
	uv_timer_start(&m->prune_timer, on_prune, PRUNE_MS, PRUNE_MS);
	server_metrics_ping_start(m);

	LY_TRY(server_bundle_notify_start(m, err));

	const struct ly_bundle *b = ly_server_bundle(&m->srv);
	char attestors[64] = "";
	const char *names[] = { m->srv.cfg.join_token_enabled ? "join_token" : NULL,
		m->srv.x509pop != NULL ? "x509pop" : NULL, m->srv.psat != NULL ? "k8s_psat" : NULL };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (names[i] == NULL)
			continue;
		size_t used = strlen(attestors);
		(void)snprintf(attestors + used, sizeof(attestors) - used, "%s%s", used > 0 ? "," : "", names[i]);
	}
	bool v6 = strchr(m->srv.cfg.bind_address, ':') != NULL;
	/* The back end by name only: a connection string may hold a password. */
	log_info("lanyard-server started: trust_domain=%s agent_api=%s%s%s:%d admin_socket=%s data_dir=%s "
	    "datastore=%s%s%s bundle_sequence=%" PRIu64 " x509_authorities=%zu jwt_authorities=%zu node_attestors=%s",
	    m->srv.cfg.trust_domain, v6 ? "[" : "", m->srv.cfg.bind_address, v6 ? "]" : "", m->agent_port,
	    m->srv.cfg.socket_path, m->srv.cfg.data_dir,
	    m->srv.cfg.datastore_type == LY_DATASTORE_POSTGRES ? "postgres" : "sqlite3",
	    m->srv.server_id[0] != '\0' ? " server_id=" : "", m->srv.server_id, ly_bundle_sequence(b),
	    ly_bundle_x509_authority_count(b),
	    ly_bundle_jwt_authority_count(b), attestors[0] != '\0' ? attestors : "none");
	/* systemd's Type=notify (lib/sdnotify.h): the CA signs, both APIs listen. */
	struct ly_error ne;
	if (ly_sd_notify("READY=1\nSTATUS=serving", &ne) != LY_OK)
		log_warn("%s", ne.msg);
	return LY_OK;
}

/* Releases what outlives the loop, once the loop ran dry. */
static void
teardown(struct srv_main *m)
{
	struct ly_server *srv = &m->srv;

	if (m->loop_ready) {
		begin_stop(m);
		(void)uv_run(&m->loop, UV_RUN_DEFAULT);
		/* Calls still in flight hear "closing"; the worker's handles close on the next turn. */
		ly_dsa_close(srv->dsa);
		srv->dsa = NULL;
		(void)uv_run(&m->loop, UV_RUN_DEFAULT);
		int rc = uv_loop_close(&m->loop);
		if (rc != 0)
			log_warn("event loop closed with handles open: %s", uv_strerror(rc));
	} else if (srv->agent_api != NULL) {
		ly_agent_api_free(srv->agent_api);
		srv->agent_api = NULL;
	}
	ly_attest_k8s_psat_free(srv->psat);
	ly_attest_x509pop_free(srv->x509pop);
	ly_audit_close(srv->audit);
	ly_server_shared_close(srv);
	ly_ca_free(srv->ca);
	ly_datastore_close(m->ds_opened);
	m->ds_opened = NULL;
	ly_fed_config_cleanup(&srv->cfg.fed);
	ly_ds_fed_rel_list_cleanup(&m->fedc.rels);
	ly_ds_fed_bundle_list_cleanup(&m->fedc.bundles);
	ly_config_free(m->file);
	server_metrics_free(srv->metrics);
	srv->metrics = NULL;
	srv->psat = NULL;
	srv->x509pop = NULL;
	srv->audit = NULL;
	srv->ca = NULL;
	m->file = NULL;
}

/* ---- `run` ------------------------------------------------------------------------------------ */

/* `run -h`: what the command does (lib/daemon.h prints it with the flags). */
#define RUN_ABOUT "Runs the server (a config file is optional: flags alone are enough)."

int
ly_server_run(int argc, char **argv)
{
	struct srv_main *m;
	struct ly_error e;
	int code;

	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		fprintf(stderr, "lanyard-server: out of memory\n");
		return 1;
	}
	m->flags = (struct ly_server_flags)LY_SERVER_FLAGS_INIT;
	m->ds_counted_at = -1;
	struct ly_flag flags[] = {
		{ "config", LY_FLAG_STRING, &m->flags.config_path, "path to a YAML config file (optional)", 0, 0, false },
		{ "trustDomain", LY_FLAG_STRING, &m->flags.trust_domain, "the trust domain, e.g. example.org", 0, 0,
		    false },
		{ "bindAddress", LY_FLAG_STRING, &m->flags.bind_address, "IP address of the agent API (default "
		    LY_SERVER_BIND_DEFAULT ")", 0, 0, false },
		{ "serverPort", LY_FLAG_INT, &m->flags.server_port, "TCP port of the agent API (default 8081; 0: any "
		    "free port)", 0, 65535, false },
		{ "socketPath", LY_FLAG_STRING, &m->flags.socket_path, "admin API socket (default "
		    LY_SERVER_SOCKET_DEFAULT ")", 0, 0, false },
		{ "dataDir", LY_FLAG_STRING, &m->flags.data_dir, "data directory (default " LY_SERVER_DATA_DIR_DEFAULT
		    ")", 0, 0, false },
		{ "logLevel", LY_FLAG_STRING, &m->flags.log_level, "error, warn, info or debug (default info)", 0, 0,
		    false },
	};
	const size_t nflags = sizeof(flags) / sizeof(flags[0]);

	if ((code = ly_daemon_run_flags("lanyard-server", RUN_ABOUT, flags, nflags, argc, argv)) >= 0)
		goto out;
	ly_status st = ly_server_config_load(&m->flags, &m->srv.cfg, &m->file, &e);
	if (st != LY_OK) {
		fprintf(stderr, "lanyard-server: %s\n", e.msg);
		code = st == LY_E_IO ? 1 : 2;
		goto out;
	}
	/* Both were checked by ly_server_config_load. */
	ly_daemon_log_apply(m->srv.cfg.log_level, m->srv.cfg.log_format);

	/* Everything we create (data dir, sockets, files) is ours alone. */
	(void)umask(077);
	(void)signal(SIGPIPE, SIG_IGN);
	m->srv.started_at = ly_server_now();
	if (start(m, &e) != LY_OK) {
		fprintf(stderr, "lanyard-server: %s\n", e.msg);
		code = 1;
		teardown(m);
		goto out;
	}
	(void)uv_run(&m->loop, UV_RUN_DEFAULT);
	teardown(m);
	log_info("lanyard-server stopped");
	code = m->exit_code;
out:
	ly_config_free(m->file);
	ly_flags_cleanup(flags, nflags);
	free(m);
	return code;
}
