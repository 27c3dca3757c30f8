/*
 * server.c: `lanyard-server run` (SPEC §2): configuration, start-up, the
 * CA rotation timer and the server's own TLS certificate, signals, and an
 * orderly shutdown. Owns every field of struct ly_server (server.h).
 *
 * Start-up, in order; the first failure ends the run with exit code 1 and
 * one line on stderr saying what and why:
 *   data dir (0700) -> datastore (<dataDir>/datastore.sqlite3, or PostgreSQL) -> CA
 *   (<dataDir>/ca) -> audit log -> node attestors -> gRPC -> agent API on
 *   bindAddress:serverPort (TLS; client certificates requested, verified
 *   against the bundle when given) -> admin API on -socketPath.
 * The server's TLS certificate is an X.509-SVID for
 * spiffe://<td>/lanyard/server signed by our CA, with a key made here and
 * never written anywhere; it is renewed at 50% of its life and whenever the
 * bundle changes (so that the client roots follow the bundle).
 *
 * The admin socket is accepted by libuv, not by gRPC, so that each
 * connection's peer credentials (SO_PEERCRED) can be read and handed to
 * admin_api.c (struct ly_admin_peer): gRPC's own Unix listener gives none.
 * The socket is made 0600 inside a 0700 directory of ours, created before
 * the socket, so no other user can ever reach it.
 *
 * The datastore runs on its own worker thread (datastore_async.h), opened
 * before the loop and handed to the worker once the loop exists; the loop
 * only submits calls. A ping every DS_PING_MS keeps its reachability (the
 * ready gauge, /ready, lanyard_server_datastore_reachable) current.
 *
 * Signals: SIGTERM and SIGINT stop accepting, end the agents' streams
 * (ly_agent_api_stop), let gRPC release every call, then close the
 * datastore (its calls still in flight hear "closing") and the CA: exit 0.
 * SIGHUP re-reads the log level from the config file (a -logLevel flag
 * keeps winning) and an https_web bundle endpoint's certificate files.
 *
 * Federation (federation.h): after the health listener, the bundle
 * endpoint (when configured; https_spiffe serves the agent listener's
 * certificate, handed over at each renewal) and the fetcher, which reaches
 * the datastore through the ly_fed_ops below and hears relationship and
 * bundle changes through the datastore worker's change callbacks.
 * Under systemd (Type=notify, lib/sdnotify.h): READY=1 once the CA signs
 * and both APIs listen, STOPPING=1 when a stop begins.
 */
#include <errno.h>
#include <fcntl.h>
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
#include "lib/csr.h"
#include "lib/daemon.h"
#include "lib/der.h"
#include "lib/flags.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/sdnotify.h"
#include "lib/sockpath.h"
#include "lib/spiffeid.h"
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
#include "server/server_shared.h"

/* Retry a failed CA tick or certificate renewal after this long. */
#define RETRY_MS (30 * 1000)
/* Longest sleep of the rotation timer, so a clock jump is noticed. */
#define TICK_MAX_MS (10 * 60 * 1000)
/* Join tokens that expired are deleted this often. */
#define PRUNE_MS (10 * 60 * 1000)
/* A shutdown that takes longer than this is cut short. */
#define STOP_GRACE_MS (15 * 1000)
/*
 * The datastore is pinged (a revision read, on its worker) this often, so
 * that /ready and the gauges follow it without a probe storm becoming a
 * query storm; when the revision moved, the agents are counted too (the
 * lanyard_server_agents gauge, at most this stale).
 */
#define DS_PING_MS 1000

#define SERVER_ID_PATH LY_SERVER_ID_PATH

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
	} fedc;
	/* Several servers on one PostgreSQL (server_shared.h, pg_notify.h). */
	struct ly_pg_notify *notify;
	bool publish_pending;      /* the CA's bundle changed and is not in the database yet */
	int64_t shared_next_expiry; /* an authority of the shared bundle expires then: rebuild */
};

/* ---- the server's own TLS certificate -------------------------------------------- */

struct tls_material {
	struct ly_buf chain_pem;
	struct ly_buf key_pem; /* secret */
	char *roots_pem;
	time_t expires_at;
};

static void
tls_material_cleanup(struct tls_material *t)
{
	ly_buf_free(&t->chain_pem);
	ly_buf_free_secret(&t->key_pem);
	free(t->roots_pem);
	t->roots_pem = NULL;
}

/* A fresh key and an X.509-SVID for spiffe://<td>/lanyard/server from our CA. */
static ly_status
tls_material_make(struct ly_server *srv, time_t now, struct tls_material *t, struct ly_error *err)
{
	EVP_PKEY *key = NULL;
	struct ly_spiffe_id id;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	ly_status rc;

	memset(t, 0, sizeof(*t));
	if ((rc = ly_spiffe_id_from_parts(srv->cfg.trust_domain, SERVER_ID_PATH, &id, err)) != LY_OK ||
	    (rc = ly_key_generate(LY_KEY_EC_P256, &key, err)) != LY_OK ||
	    (rc = ly_csr_build(key, &id, NULL, 0, &csr, err)) != LY_OK ||
	    (rc = ly_ca_sign_agent_svid(srv->ca, csr.data, csr.len, &id, 0, now, &chain, &t->expires_at, err)) !=
		LY_OK ||
	    (rc = ly_der_certs_to_pem(chain.data, chain.len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &t->chain_pem,
		err)) != LY_OK ||
	    (rc = ly_key_to_pem(key, &t->key_pem, err)) != LY_OK ||
	    (rc = ly_bundle_write_pem(ly_server_bundle(srv), &t->roots_pem, err)) != LY_OK) {
		ly_error_wrap(err, rc, "server certificate");
		tls_material_cleanup(t);
	}
	EVP_PKEY_free(key);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	return rc;
}

static void
tls_material_view(const struct tls_material *t, struct ly_rpc_tls_server *tls)
{
	tls->cert_chain_pem = (const char *)t->chain_pem.data;
	tls->key_pem = (const char *)t->key_pem.data;
	tls->client_roots_pem = t->roots_pem;
	/* Unenrolled agents attest without a certificate; enrolled ones present
	 * their SVID, verified against the bundle; the agent API decides. */
	tls->client_auth = LY_RPC_CLIENT_CERT_REQUEST;
}

static time_t
renew_time(time_t now, time_t expires_at)
{
	return expires_at > now ? now + (expires_at - now) / 2 : now;
}

/* Listens (first time) or rotates the agent listener's certificate. */
static ly_status
agent_tls_refresh(struct srv_main *m, time_t now, struct ly_error *err)
{
	struct tls_material t;
	struct ly_rpc_tls_server tls;
	ly_status rc;

	LY_TRY(tls_material_make(&m->srv, now, &t, err));
	tls_material_view(&t, &tls);
	if (!m->agent_listening) {
		rc = ly_rpc_server_listen_tls(m->srv.agent_server, m->agent_addr, &tls, &m->agent_port, err);
		if (rc != LY_OK)
			ly_error_wrap(err, rc, "cannot listen on %s", m->agent_addr);
		else
			m->agent_listening = true;
	} else {
		rc = ly_rpc_server_set_tls(m->srv.agent_server, &tls, err);
		if (rc != LY_OK)
			ly_error_wrap(err, rc, "cannot rotate the server certificate");
	}
	if (rc == LY_OK && m->fed_ep != NULL && m->srv.cfg.fed.endpoint.profile == LY_FED_PROFILE_HTTPS_SPIFFE) {
		/* https_spiffe: the bundle endpoint serves the same SVID as the agent listener. */
		rc = ly_fed_endpoint_set_identity(m->fed_ep, (const char *)t.chain_pem.data, t.chain_pem.len,
		    (const char *)t.key_pem.data, t.key_pem.len, err);
		if (rc != LY_OK)
			ly_error_wrap(err, rc, "bundle endpoint certificate");
	}
	if (rc == LY_OK) {
		m->svid_renew_at = renew_time(now, t.expires_at);
		log_debug("server certificate valid until %lld, renewal at %lld", (long long)t.expires_at,
		    (long long)m->svid_renew_at);
	}
	tls_material_cleanup(&t);
	return rc;
}

/* ---- timers ------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t);
static void fed_publish(struct srv_main *m);

static void
tick_arm(struct srv_main *m, uint64_t retry_ms)
{
	time_t now = ly_server_now(), next = ly_ca_next_event(m->srv.ca);
	uint64_t ms;

	if (m->svid_renew_at < next)
		next = m->svid_renew_at;
	if (m->shared_next_expiry > 0 && m->shared_next_expiry < next)
		next = (time_t)m->shared_next_expiry;
	ms = next <= now ? 0 : (uint64_t)(next - now) * 1000u;
	if (ms > TICK_MAX_MS)
		ms = TICK_MAX_MS;
	if (retry_ms > 0 && retry_ms < ms)
		ms = retry_ms;
	if (ms < 100)
		ms = 100; /* a due event fires after a short pause, never in a tight loop */
	uv_timer_start(&m->tick_timer, on_tick, ms, 0);
}

static void
on_tick(uv_timer_t *t)
{
	struct srv_main *m = t->data;
	struct ly_error e;
	time_t now = ly_server_now();
	bool changed = false;
	uint64_t retry_ms = 0;

	if (m->srv.stopping)
		return;
	if (ly_ca_tick(m->srv.ca, now, &changed, &e) != LY_OK) {
		log_error("CA rotation failed, retrying in %d s: %s", RETRY_MS / 1000, e.msg);
		tick_arm(m, RETRY_MS);
		return;
	}
	if (m->srv.ds_shared) {
		/* Published before the successor signs: the rotation's prepare step changed the bundle (ca.h). */
		if (changed || m->publish_pending) {
			m->publish_pending = ly_server_shared_publish(&m->srv, (int64_t)now, &e) != LY_OK;
			if (m->publish_pending) {
				log_error("%s; retrying in %d s (the other servers' agents do not trust our new "
				    "authorities yet)", e.msg, RETRY_MS / 1000);
				retry_ms = RETRY_MS;
			}
		}
		/* The union: the other servers' authorities, expired ones dropped, ours always. */
		changed = false;
		if (ly_server_shared_reload(&m->srv, (int64_t)now, &changed, &m->shared_next_expiry, &e) != LY_OK) {
			log_warn("%s; retrying in %d s", e.msg, RETRY_MS / 1000);
			retry_ms = RETRY_MS;
		}
	}
	if (changed) {
		const struct ly_bundle *b = ly_server_bundle(&m->srv);
		log_info("trust bundle changed: sequence=%" PRIu64 " x509_authorities=%zu jwt_authorities=%zu",
		    ly_bundle_sequence(b), ly_bundle_x509_authority_count(b), ly_bundle_jwt_authority_count(b));
		if (m->srv.agent_api != NULL)
			ly_agent_api_bundle_changed(m->srv.agent_api);
		fed_publish(m);
	}
	if (changed || now >= m->svid_renew_at) {
		if (agent_tls_refresh(m, now, &e) != LY_OK) {
			log_error("%s; retrying in %d s", e.msg, RETRY_MS / 1000);
			tick_arm(m, RETRY_MS);
			return;
		}
		log_info("server certificate renewed");
	}
	tick_arm(m, retry_ms);
}

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

/* ---- start-up ---------------------------------------------------------------------------- */

/*
 * Every federated bundle change, whoever made it (the admin API, the
 * fetcher, another server's write is not heard here): one log line and the
 * counter (docs/server.md, "Health and metrics").
 */
static void
on_fed_change(void *arg, const struct ly_datastore_change *c)
{
	struct ly_server *srv = arg;
	const char *change;

	if (c->kind == LY_DATASTORE_FED_BUNDLE_CHANGED)
		change = "set";
	else if (c->kind == LY_DATASTORE_FED_BUNDLE_DELETED)
		change = "deleted";
	else
		return;
	const char *labels[] = { change, NULL };
	ly_server_metric_add(LY_SERVER_METRIC(srv, fed_bundle_changes), labels, 1);
	log_info("federated bundle of %s %s (revision %" PRId64 ")", c->trust_domain != NULL ? c->trust_domain : "?",
	    change, c->revision);
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

static ly_dsa_observe_fn datastore_observe;

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
	struct ly_dsa_config dc = { .observe = datastore_observe, .observe_arg = m };
	struct ly_datastore *ds = m->ds_opened;
	m->ds_opened = NULL;
	srv->ds_shared = ly_datastore_shared(ds);
	LY_TRY(ly_dsa_new(&m->loop, ds, &dc, &srv->dsa, err));
	LY_TRY(ly_dsa_on_change(srv->dsa, on_fed_change, srv, err));
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
	LY_TRY(agent_tls_refresh(m, ly_server_now(), err));

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

/* ---- health and metrics ------------------------------------------------------------ */

/* Every datastore call as it ends: the latency histogram and the outcome counter. */
static void
datastore_observe(void *arg, enum ly_dsa_outcome outcome, double seconds)
{
	static const char *const names[] = { "ok", "error", "timeout", "refused" };
	struct srv_main *m = arg;
	const char *label[] = { names[outcome], NULL };

	ly_server_metric_add(LY_SERVER_METRIC(&m->srv, ds_calls), label, 1);
	if (outcome != LY_DSA_REFUSED)
		ly_server_metric_add(LY_SERVER_METRIC(&m->srv, ds_seconds), NULL, seconds);
}

/* The datastore ping: a revision read, and an agent count when the revision moved since the last count. */
struct ds_ping {
	struct srv_main *m;
	int64_t counted_at; /* the revision of the last count; -1: none yet */
	int64_t revision;
	bool counted;
	size_t agents;
	size_t fed_bundles;
};

static ly_status
ds_ping_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct ds_ping *p = ctx;
	struct ly_ds_agent_list agents = LY_DS_AGENT_LIST_INIT;

	LY_TRY(ly_datastore_revision(ds, &p->revision, err));
	/* Federated bundles have their own revision: counted at every ping (one COUNT). */
	LY_TRY(ly_datastore_fed_bundle_count(ds, &p->fed_bundles, err));
	if (p->revision == p->counted_at)
		return LY_OK;
	LY_TRY(ly_datastore_agent_list(ds, &agents, err));
	p->agents = agents.n;
	p->counted = true;
	ly_ds_agent_list_cleanup(&agents);
	return LY_OK;
}

static void
ds_ping_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct ds_ping *p = ctx;

	/* Reachability is the worker's record (datastore_async.h); the ping only keeps it current. */
	p->m->ds_ping_inflight = false;
	if (st == LY_OK)
		p->m->ds_fed_bundles = p->fed_bundles;
	if (st == LY_OK && p->counted) {
		p->m->ds_agents = p->agents;
		p->m->ds_counted_at = p->revision;
	}
	(void)err;
}

static void
on_ds_ping(uv_timer_t *t)
{
	struct srv_main *m = t->data;
	struct ds_ping *p;

	if (m->srv.stopping || m->ds_ping_inflight || (p = calloc(1, sizeof(*p))) == NULL)
		return;
	p->m = m;
	p->counted_at = m->ds_counted_at;
	/* Refused at once while a call is held past its deadline: that call's return is the recovery. */
	if (ly_dsa_submit(m->srv.dsa, ds_ping_work, ds_ping_done, NULL, p, 0, NULL) != LY_OK) {
		free(p);
		return;
	}
	m->ds_ping_inflight = true;
}

/*
 * Ready: datastore open and answering, CA ready, agent API listening. A
 * datastore that does not answer makes the server not ready (503, the
 * reason in the body) although it keeps serving the agents it knows
 * (docs/operations.md): a load balancer sends new agents elsewhere. The
 * back end's own message stays in the log (it names hosts and users).
 */
static bool
health_ready(void *arg, char *reason, size_t len)
{
	struct srv_main *m = arg;
	const char *ds_why = NULL;
	bool ds_ok = ly_dsa_reachable(m->srv.dsa, &ds_why);
	const char *why = m->srv.stopping ? "stopping"
	    : m->srv.dsa == NULL ? "datastore not open"
	    : m->srv.ca == NULL ? "CA not ready"
	    : !m->agent_listening ? "agent API not listening"
	    : NULL;
	if (why != NULL)
		snprintf(reason, len, "%s", why);
	else if (!ds_ok)
		snprintf(reason, len, "datastore does not answer: %s", ds_why != NULL ? ds_why : "no answer");
	return why == NULL && ds_ok;
}

static void
server_metrics_free(struct ly_server_metrics *sm)
{
	if (sm == NULL)
		return;
	ly_metrics_free(sm->reg);
	free(sm);
}

/* The server's metric families (docs/server.md, "Health and metrics"), made once. */
static ly_status
server_metrics_new(struct ly_server_metrics **out, struct ly_error *err)
{
	static const double attest_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 };
	static const char *const kind_label[] = { "kind", NULL };
	static const char *const attest_labels[] = { "attestor", "result", NULL };
	static const char *const attestor_label[] = { "attestor", NULL };
	static const char *const result_label[] = { "result", NULL };
	static const double ds_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
		5, 10 };
	static const char *const limit_label[] = { "limit", NULL };
	static const char *const fed_labels[] = { "trust_domain", "reason", NULL };
	static const char *const code_label[] = { "code", NULL };
	static const char *const change_label[] = { "change", NULL };
	struct ly_server_metrics *sm = calloc(1, sizeof(*sm));
	ly_status rc;

	*out = NULL;
	if (sm == NULL)
		return ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
	if ((rc = ly_metrics_new(&sm->reg, err)) != LY_OK)
		goto out;
#define FAMILY(field, type, name, help, labels, buckets, nb)                                                        \
	if ((rc = ly_metrics_add(sm->reg, type, name, help, labels, buckets, nb, &sm->field, err)) != LY_OK)        \
		goto out
	FAMILY(start_time, LY_METRIC_GAUGE, "process_start_time_seconds",
	    "Start time of the process since the Unix epoch.", NULL, NULL, 0);
	FAMILY(ready, LY_METRIC_GAUGE, "lanyard_server_ready",
	    "1 when the datastore answers, the CA is ready and the agent API listening.", NULL, NULL, 0);
	FAMILY(x509_issued, LY_METRIC_COUNTER, "lanyard_server_x509_svids_issued_total",
	    "X.509-SVIDs signed (kind workload or agent).", kind_label, NULL, 0);
	FAMILY(jwt_issued, LY_METRIC_COUNTER, "lanyard_server_jwt_svids_issued_total", "JWT-SVIDs minted.", NULL, NULL,
	    0);
	FAMILY(attestations, LY_METRIC_COUNTER, "lanyard_server_node_attestations_total",
	    "Node attestations by attestor and result (ok or refused).", attest_labels, NULL, 0);
	FAMILY(attest_seconds, LY_METRIC_HISTOGRAM, "lanyard_server_node_attestation_seconds",
	    "Time the server spent on an AttestAgent call (k8s_psat: its TokenReview included).", attestor_label,
	    attest_buckets, sizeof(attest_buckets) / sizeof(attest_buckets[0]));
	FAMILY(watchers, LY_METRIC_GAUGE, "lanyard_server_agent_watch_streams", "Open WatchEntries streams.", NULL,
	    NULL, 0);
	FAMILY(entries, LY_METRIC_GAUGE, "lanyard_server_entries", "Registration entries.", NULL, NULL, 0);
	FAMILY(agents, LY_METRIC_GAUGE, "lanyard_server_agents", "Attested agents known to the datastore.", NULL, NULL,
	    0);
	FAMILY(ca_expiry, LY_METRIC_GAUGE, "lanyard_server_ca_signing_expiry_timestamp_seconds",
	    "notAfter of the active X.509 signing CA.", NULL, NULL, 0);
	FAMILY(ds_reachable, LY_METRIC_GAUGE, "lanyard_server_datastore_reachable",
	    "1 when the datastore answers within its deadline, 0 when it fails or does not answer.", NULL, NULL, 0);
	FAMILY(ds_pending, LY_METRIC_GAUGE, "lanyard_server_datastore_calls_pending",
	    "Datastore calls queued or running on the datastore's worker.", NULL, NULL, 0);
	FAMILY(ds_calls, LY_METRIC_COUNTER, "lanyard_server_datastore_calls_total",
	    "Datastore calls by outcome: ok (answered), error (the back end failed), timeout (no answer within the "
	    "deadline), refused (not run: datastore unreachable or queue full).", result_label, NULL, 0);
	FAMILY(ds_seconds, LY_METRIC_HISTOGRAM, "lanyard_server_datastore_call_seconds",
	    "Time from submitting a datastore call to its answer or its timeout.", NULL, ds_buckets,
	    sizeof(ds_buckets) / sizeof(ds_buckets[0]));
	FAMILY(rate_limited, LY_METRIC_COUNTER, "lanyard_server_rate_limited_total",
	    "Calls (attestation) or SVIDs (x509_signing, jwt_signing) refused RESOURCE_EXHAUSTED by a rate limit.",
	    limit_label, NULL, 0);
	FAMILY(notify_listening, LY_METRIC_GAUGE, "lanyard_server_change_notifications_listening",
	    "PostgreSQL: 1 while LISTEN for the other servers' changes is up (always 0 with SQLite).", NULL, NULL, 0);
	FAMILY(bundle_authorities, LY_METRIC_GAUGE, "lanyard_server_bundle_authorities",
	    "Authorities in the trust bundle served (kind x509 or jwt; every server's with PostgreSQL).", kind_label,
	    NULL, 0);
	FAMILY(fed_bundle_changes, LY_METRIC_COUNTER, "lanyard_server_federated_bundle_changes_total",
	    "Federated bundles stored (change set) or deleted (change deleted), by the admin API or the fetcher.",
	    change_label, NULL, 0);
	FAMILY(fed_bundles, LY_METRIC_GAUGE, "lanyard_server_federated_bundles", "Federated bundles stored.", NULL,
	    NULL, 0);
	FAMILY(fed_refusals, LY_METRIC_COUNTER, "lanyard_server_federation_refusals_total",
	    "Fetched federated bundles not taken, by trust domain and reason (the bundle held stays).", fed_labels,
	    NULL, 0);
	FAMILY(fed_endpoint_answers, LY_METRIC_COUNTER, "lanyard_server_bundle_endpoint_answers_total",
	    "Answers of the bundle endpoint by HTTP status code.", code_label, NULL, 0);
#undef FAMILY
	*out = sm;
	sm = NULL;
	rc = LY_OK;
out:
	server_metrics_free(sm);
	return rc;
}

static ly_status
health_metrics(void *arg, struct ly_buf *out, struct ly_error *err)
{
	struct srv_main *m = arg;
	struct ly_server_metrics *sm = m->srv.metrics;
	size_t watchers = 0, entries = 0;
	char reason[64];
	ly_status rc;

	if (sm == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "metrics: no registry");
	ly_agent_api_counts(m->srv.agent_api, &watchers, &entries);
	/* Agents: the last count the ping read (the loop never waits for the datastore). */
	if ((rc = ly_metric_set(sm->start_time, NULL, (double)m->srv.started_at, err)) != LY_OK ||
	    (rc = ly_metric_set(sm->ready, NULL, health_ready(m, reason, sizeof(reason)) ? 1 : 0, err)) != LY_OK ||
	    (rc = ly_metric_set(sm->watchers, NULL, (double)watchers, err)) != LY_OK ||
	    (rc = ly_metric_set(sm->entries, NULL, (double)entries, err)) != LY_OK ||
	    (rc = ly_metric_set(sm->agents, NULL, (double)m->ds_agents, err)) != LY_OK ||
	    (rc = ly_metric_set(sm->ca_expiry, NULL, (double)ly_ca_signing_not_after(m->srv.ca), err)) != LY_OK ||
	    (rc = ly_metric_set(sm->ds_reachable, NULL, ly_dsa_reachable(m->srv.dsa, NULL) ? 1 : 0, err)) != LY_OK ||
	    (rc = ly_metric_set(sm->ds_pending, NULL, (double)ly_dsa_pending(m->srv.dsa), err)) != LY_OK ||
	    (rc = ly_metric_set(sm->notify_listening, NULL, ly_pg_notify_listening(m->notify) ? 1 : 0, err)) != LY_OK)
		return rc;
	const struct ly_bundle *b = ly_server_bundle(&m->srv);
	static const char *const x509_label[] = { "x509", NULL }, *const jwt_label[] = { "jwt", NULL };
	if (b != NULL &&
	    ((rc = ly_metric_set(sm->bundle_authorities, x509_label, (double)ly_bundle_x509_authority_count(b), err)) !=
		    LY_OK ||
		(rc = ly_metric_set(sm->bundle_authorities, jwt_label, (double)ly_bundle_jwt_authority_count(b), err)) !=
		    LY_OK))
		return rc;
	/* Federated bundles: the last count the ping read, like the agents. */
	if ((rc = ly_metric_set(sm->fed_bundles, NULL, (double)m->ds_fed_bundles, err)) != LY_OK)
		return rc;
	return ly_metrics_render(sm->reg, out, err);
}

static ly_status
health_start(struct srv_main *m, struct ly_error *err)
{
	const struct ly_server_config *c = &m->srv.cfg;
	if (!c->health_enabled)
		return LY_OK;
	LY_TRY(server_metrics_new(&m->srv.metrics, err));
	struct ly_health_http_config hc = {
		.bind_address = c->health_bind_address, .bind_port = c->health_bind_port,
		.live_path = c->health_live_path, .ready_path = c->health_ready_path,
		.ready = health_ready, .metrics = health_metrics, .arg = m,
	};
	return ly_health_http_start_logged(&m->loop, &hc, &m->health, err);
}

/* ---- federation (issue 15, federation.h) ---------------------------------------------- */

/*
 * Gives the bundle endpoint our bundle as it is now (the one the agents
 * get: with PostgreSQL, every server's authorities), with the configured
 * refresh hint.
 */
static void
fed_publish(struct srv_main *m)
{
	struct ly_bundle *b = NULL;
	struct ly_error e;
	char *json = NULL;

	if (m->fed_ep == NULL)
		return;
	if (ly_bundle_clone(ly_server_bundle(&m->srv), &b, &e) != LY_OK ||
	    ly_bundle_update_refresh_hint(b, m->srv.cfg.fed.endpoint.refresh_hint, &e) != LY_OK ||
	    ly_bundle_write_jwks(b, 0, &json, &e) != LY_OK ||
	    ly_fed_endpoint_set_bundle(m->fed_ep, json, strlen(json), &e) != LY_OK)
		log_error("bundle endpoint: the new bundle is not served (the previous stays): %s", e.msg);
	free(json);
	ly_bundle_free(b);
}

static void
fed_on_answer(void *arg, int status)
{
	struct srv_main *m = arg;
	char code[8];
	(void)snprintf(code, sizeof(code), "%d", status);
	const char *labels[] = { code, NULL };
	ly_server_metric_add(LY_SERVER_METRIC(&m->srv, fed_endpoint_answers), labels, 1);
}

/*
 * The fetcher's datastore (ly_fed_ops) without waiting on the loop: its
 * calls are synchronous, so they answer from a copy of the relationships
 * and federated bundles kept here (struct fed_cache), which the worker
 * reads again whenever the fetcher lists the relationships (every
 * LY_FED_SYNC_MS), after every federation change heard through the hook,
 * and before a `federation refresh`. A fetched bundle goes into the copy
 * at once and to the datastore on the worker (fed_store). The copy is read
 * once on the worker at start-up, before the fetcher starts (waited for:
 * ly_dsa_call_sync, as start-up may).
 */
struct fed_read {
	struct srv_main *m;
	struct ly_ds_fed_rel_list rels;
	struct ly_ds_fed_bundle_list bundles;
	/* `federation refresh` waiting for this read (fed_refresh). */
	char refresh_td[LY_TRUST_DOMAIN_MAX + 1];
	ly_fed_refresh_done_fn *refresh_done;
	void *refresh_arg;
};

static ly_status
fed_read_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fed_read *r = ctx;
	LY_TRY(ly_datastore_fed_rel_list(ds, &r->rels, err));
	return ly_datastore_fed_bundle_list(ds, &r->bundles, err);
}

static void
fed_read_release(void *ctx)
{
	struct fed_read *r = ctx;
	ly_ds_fed_rel_list_cleanup(&r->rels);
	ly_ds_fed_bundle_list_cleanup(&r->bundles);
	free(r);
}

static struct ly_ds_fed_bundle *
fed_cache_find(const struct ly_ds_fed_bundle_list *l, const char *td)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(ly_bundle_trust_domain(l->items[i]->bundle), td) == 0)
			return l->items[i];
	}
	return NULL;
}

static void fed_cache_read(struct srv_main *m, ly_fed_refresh_done_fn *done, void *done_arg, const char *td);

/* Installs what the worker read; tells the fetcher what changed. */
static void
fed_read_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct fed_read *r = ctx;
	struct srv_main *m = r->m;
	struct ly_ds_fed_bundle_list old = m->fedc.bundles;

	if (r->refresh_done == NULL)
		m->fedc.inflight = false;
	if (st != LY_OK) {
		if (!m->fedc.failing)
			log_warn("federation: cannot read the relationships and bundles (keeping those known): %s",
			    err->msg);
		m->fedc.failing = true;
		if (r->refresh_done != NULL)
			r->refresh_done(r->refresh_arg, st, err->msg);
		return;
	}
	m->fedc.failing = false;
	ly_ds_fed_rel_list_cleanup(&m->fedc.rels);
	m->fedc.rels = r->rels;
	r->rels = (struct ly_ds_fed_rel_list)LY_DS_FED_REL_LIST_INIT;
	m->fedc.bundles = r->bundles;
	r->bundles = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	if (m->fetcher != NULL && !m->srv.stopping) {
		m->fedc.applying = true;
		ly_fed_fetcher_sync(m->fetcher);
		/* A bundle new or stored again: a relationship waiting for it to authenticate its endpoint goes now. */
		for (size_t i = 0; i < m->fedc.bundles.n; i++) {
			const struct ly_ds_fed_bundle *nb = m->fedc.bundles.items[i];
			const char *td = ly_bundle_trust_domain(nb->bundle);
			const struct ly_ds_fed_bundle *ob = fed_cache_find(&old, td);
			if (ob == NULL || ob->revision != nb->revision)
				ly_fed_fetcher_trust_changed(m->fetcher, td);
		}
		m->fedc.applying = false;
	}
	ly_ds_fed_bundle_list_cleanup(&old);
	if (r->refresh_done != NULL) {
		struct ly_error e;
		if (m->fetcher == NULL || m->srv.stopping)
			r->refresh_done(r->refresh_arg, LY_E_NOT_FOUND, "no federation relationship");
		else if (ly_fed_fetcher_refresh(m->fetcher, r->refresh_td, r->refresh_done, r->refresh_arg, &e) != LY_OK)
			r->refresh_done(r->refresh_arg, LY_E_NOT_FOUND, e.msg);
	}
	if (m->fedc.again && !m->fedc.inflight) {
		m->fedc.again = false;
		fed_cache_read(m, NULL, NULL, NULL);
	}
}

/* Reads the copy again on the worker (one at a time, plus one more when asked meanwhile; a refresh: its own). */
static void
fed_cache_read(struct srv_main *m, ly_fed_refresh_done_fn *done, void *done_arg, const char *td)
{
	struct fed_read *r;
	struct ly_error e;

	if (m->srv.stopping || m->srv.dsa == NULL)
		return;
	if (done == NULL && m->fedc.inflight) {
		m->fedc.again = true;
		return;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		if (done != NULL)
			done(done_arg, LY_E_NOMEM, "out of memory");
		return;
	}
	r->m = m;
	r->rels = (struct ly_ds_fed_rel_list)LY_DS_FED_REL_LIST_INIT;
	r->bundles = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	r->refresh_done = done;
	r->refresh_arg = done_arg;
	if (td != NULL)
		(void)snprintf(r->refresh_td, sizeof(r->refresh_td), "%s", td);
	if (ly_dsa_submit(m->srv.dsa, fed_read_work, fed_read_done, fed_read_release, r, 0, &e) != LY_OK) {
		fed_read_release(r);
		if (done != NULL)
			done(done_arg, e.code, e.msg);
		return;
	}
	if (done == NULL)
		m->fedc.inflight = true;
}

static ly_status
fed_load(void *arg, const char *td, struct ly_bundle **out, struct ly_error *err)
{
	struct srv_main *m = arg;
	const struct ly_ds_fed_bundle *fb = fed_cache_find(&m->fedc.bundles, td);

	*out = NULL;
	if (fb == NULL)
		return ly_error_set(err, LY_E_NOT_FOUND, "no federated bundle of %s", td);
	return ly_bundle_clone(fb->bundle, out, err);
}

/* A fetched bundle's write, on the worker; its audit line once it committed. */
struct fed_put {
	struct srv_main *m;
	struct ly_bundle *b; /* owned */
	char detail[256];
};

static ly_status
fed_put_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fed_put *p = ctx;
	return ly_datastore_fed_bundle_put(ds, p->b, NULL, err);
}

static void
fed_put_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct fed_put *p = ctx;
	const char *td = ly_bundle_trust_domain(p->b);
	struct ly_audit_record rec = { .caller = "federation", .action = "bundle.refresh", .trust_domain = td,
		.result = st == LY_OK ? "ok" : "UNAVAILABLE", .detail = st == LY_OK ? p->detail : err->msg };
	struct ly_error ae;

	if (ly_audit_write(p->m->srv.audit, &rec, ly_server_now(), &ae) != LY_OK)
		log_error("audit: %s", ae.msg);
	ly_admin_audit_store(&p->m->srv, &rec, ly_server_now());
	if (st == LY_OK) {
		log_info("federation: bundle of %s stored: %s", td, p->detail);
	} else {
		/* The copy holds a bundle the store does not: read it again, the next fetch stores it. */
		log_error("federation: bundle of %s not stored: %s", td, err->msg);
		fed_cache_read(p->m, NULL, NULL, NULL);
	}
}

static void
fed_put_release(void *ctx)
{
	struct fed_put *p = ctx;
	ly_bundle_free(p->b);
	free(p);
}

/* A bundle changed: into the copy now, to the store on the worker (counted by the change hook). */
static ly_status
fed_store(void *arg, const struct ly_bundle *b, const struct ly_bundle *previous, struct ly_error *err)
{
	struct srv_main *m = arg;
	const char *td = ly_bundle_trust_domain(b);
	struct ly_ds_fed_bundle *held = fed_cache_find(&m->fedc.bundles, td);
	struct ly_bundle *copy = NULL;
	struct fed_put *p = calloc(1, sizeof(*p));
	ly_status rc;

	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "federation: out of memory");
	p->m = m;
	if ((rc = ly_bundle_clone(b, &p->b, err)) != LY_OK || (rc = ly_bundle_clone(b, &copy, err)) != LY_OK) {
		fed_put_release(p);
		return rc;
	}
	(void)snprintf(p->detail, sizeof(p->detail),
	    "fetched from the bundle endpoint: sequence %" PRIu64 " -> %" PRIu64 ", x509_authorities=%zu "
	    "jwt_authorities=%zu refresh_hint=%" PRIu64, previous != NULL ? ly_bundle_sequence(previous) : 0,
	    ly_bundle_sequence(b), ly_bundle_x509_authority_count(b), ly_bundle_jwt_authority_count(b),
	    ly_bundle_refresh_hint(b));
	if ((rc = ly_dsa_submit(m->srv.dsa, fed_put_work, fed_put_done, fed_put_release, p, 0, err)) != LY_OK) {
		ly_bundle_free(copy);
		fed_put_release(p);
		return rc;
	}
	if (held != NULL) {
		ly_bundle_free(held->bundle);
		held->bundle = copy;
		held->revision = -1; /* the next read of the copy brings the store's */
	} else {
		struct ly_ds_fed_bundle **v = realloc(m->fedc.bundles.items, (m->fedc.bundles.n + 1) * sizeof(*v));
		struct ly_ds_fed_bundle *nb = calloc(1, sizeof(*nb));
		if (v != NULL)
			m->fedc.bundles.items = v;
		if (v == NULL || nb == NULL) {
			free(nb);
			ly_bundle_free(copy); /* the copy lacks it until the next read: only a fetch more */
		} else {
			nb->bundle = copy;
			nb->revision = -1;
			m->fedc.bundles.items[m->fedc.bundles.n++] = nb;
		}
	}
	return LY_OK;
}

static ly_status
fed_list(void *arg, struct ly_fed_relationship **out, size_t *n, struct ly_error *err)
{
	struct srv_main *m = arg;
	const struct ly_ds_fed_rel_list *list = &m->fedc.rels;
	struct ly_fed_relationship *rels = NULL;
	size_t k = 0;

	*out = NULL;
	*n = 0;
	/* The copy now; read again on the worker for the next time (not from the read's own completion). */
	if (!m->fedc.applying)
		fed_cache_read(m, NULL, NULL, NULL);
	if (m->fedc.failing)
		return ly_error_set(err, LY_E_IO, "the datastore does not answer");
	if (list->n > 0 && (rels = calloc(list->n, sizeof(*rels))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "federation: out of memory");
	for (size_t i = 0; i < list->n; i++) {
		const struct ly_ds_fed_rel *d = list->items[i];
		struct ly_fed_relationship *r = &rels[k];
		struct ly_error e;
		if (strlen(d->trust_domain) > LY_TRUST_DOMAIN_MAX || strlen(d->bundle_endpoint_url) > LY_FED_URL_MAX ||
		    (d->profile == LY_FED_PROFILE_HTTPS_SPIFFE &&
			(d->endpoint_spiffe_id == NULL || ly_spiffe_id_parse_str(d->endpoint_spiffe_id, &r->endpoint_id,
			    &e) != LY_OK))) {
			log_warn("federation: relationship with %s skipped: unusable", d->trust_domain);
			continue;
		}
		(void)snprintf(r->trust_domain, sizeof(r->trust_domain), "%s", d->trust_domain);
		(void)snprintf(r->url, sizeof(r->url), "%s", d->bundle_endpoint_url);
		r->profile = d->profile;
		k++;
	}
	*out = rels;
	*n = k;
	return LY_OK;
}

static void
fed_refused(void *arg, const char *td, enum ly_fed_refusal why, const char *detail)
{
	struct srv_main *m = arg;
	(void)detail; /* logged by the fetcher */
	const char *labels[] = { td, ly_fed_refusal_name(why), NULL };
	ly_server_metric_add(LY_SERVER_METRIC(&m->srv, fed_refusals), labels, 1);
}

static const struct ly_fed_ops fed_ops = {
	.load = fed_load, .store = fed_store, .list = fed_list, .refused = fed_refused,
};

/* srv->fed_refresh (server_core.h), for the admin API's `federation refresh`. */
static ly_status
fed_refresh(void *arg, const char *td, ly_fed_refresh_done_fn *done, void *done_arg, struct ly_error *err)
{
	struct srv_main *m = arg;
	if (m->fetcher == NULL)
		return ly_error_set(err, LY_E_NOT_FOUND, "no federation relationship with %s", td);
	/* The relationships as stored now (one just created through another call included), then the fetch. */
	fed_cache_read(m, done, done_arg, td);
	return LY_OK;
}

/*
 * A relationship created, updated or deleted through this server: the
 * fetcher re-reads them; a bundle set: a relationship waiting for it to
 * authenticate its endpoint goes now.
 */
static void
fed_on_store_change(void *arg, const struct ly_datastore_change *c)
{
	struct srv_main *m = arg;
	if (m->fetcher == NULL)
		return;
	/* Read the copy again; its completion syncs the fetcher and wakes who waited for a bundle. */
	if (c->kind == LY_DATASTORE_FED_REL_CHANGED || c->kind == LY_DATASTORE_FED_BUNDLE_CHANGED ||
	    c->kind == LY_DATASTORE_FED_BUNDLE_DELETED)
		fed_cache_read(m, NULL, NULL, NULL);
}

static ly_status
fed_start(struct srv_main *m, struct ly_error *err)
{
	const struct ly_fed_config *fc = &m->srv.cfg.fed;
	ly_status rc;

	if (fc->endpoint.enabled) {
		if ((rc = ly_fed_endpoint_start(&m->loop, &fc->endpoint, fed_on_answer, m, &m->fed_ep, err)) != LY_OK)
			return rc;
		fed_publish(m);
		/* https_spiffe: the server certificate, made again now that the endpoint takes it too. */
		if (fc->endpoint.profile == LY_FED_PROFILE_HTTPS_SPIFFE)
			LY_TRY(agent_tls_refresh(m, ly_server_now(), err));
		log_info("bundle endpoint on %s:%u (%s, refresh_hint %" PRIu64 " s)", fc->endpoint.address,
		    (unsigned)ly_fed_endpoint_port(m->fed_ep),
		    fc->endpoint.profile == LY_FED_PROFILE_HTTPS_WEB ? "https_web" : "https_spiffe",
		    fc->endpoint.refresh_hint);
	}
	LY_TRY(ly_dsa_on_change(m->srv.dsa, fed_on_store_change, m, err));
	/* The copy the fetcher reads, once before it starts (start-up may wait). */
	struct fed_read first = { .m = m, .rels = LY_DS_FED_REL_LIST_INIT, .bundles = LY_DS_FED_BUNDLE_LIST_INIT };
	if ((rc = ly_dsa_call_sync(m->srv.dsa, fed_read_work, &first, err)) != LY_OK) {
		ly_ds_fed_rel_list_cleanup(&first.rels);
		ly_ds_fed_bundle_list_cleanup(&first.bundles);
		return ly_error_wrap(err, rc, "federation");
	}
	m->fedc.rels = first.rels;
	m->fedc.bundles = first.bundles;
	m->fedc.applying = true; /* the first list is the copy just read */
	rc = ly_fed_fetcher_new(&m->loop, fc, &fed_ops, m, &m->fetcher, err);
	m->fedc.applying = false;
	LY_TRY(rc);
	m->srv.fed_refresh.fn = fed_refresh;
	m->srv.fed_refresh.arg = m;
	return LY_OK;
}

/* ---- several servers on one PostgreSQL --------------------------------------------------- */

/* The shared bundle may have changed (another server published, or we reconnected): serve the new one. */
static void
shared_refresh(struct srv_main *m)
{
	struct ly_error e;
	bool changed = false;

	if (m->srv.stopping)
		return;
	/* Right after PostgreSQL came back the first call finds its session gone; the next one reconnects. */
	ly_status rc = ly_server_shared_reload(&m->srv, (int64_t)ly_server_now(), &changed, &m->shared_next_expiry, &e);
	if (rc != LY_OK) {
		bool again = false;
		rc = ly_server_shared_reload(&m->srv, (int64_t)ly_server_now(), &again, &m->shared_next_expiry, &e);
		changed = changed || again;
	}
	if (rc != LY_OK) {
		log_warn("%s; retrying in %d s", e.msg, RETRY_MS / 1000);
		tick_arm(m, RETRY_MS);
	}
	if (!changed)
		return;
	if (m->srv.agent_api != NULL)
		ly_agent_api_bundle_changed(m->srv.agent_api);
	fed_publish(m);
	/* The agent listener's client roots follow the bundle: the tick renews at once. */
	m->svid_renew_at = ly_server_now();
	tick_arm(m, 0);
}

/* Another server's write (or ours, echoed): fed to the change hook as our own writes are. */
static void
on_notice(void *arg, const struct ly_pg_notice *n)
{
	struct srv_main *m = arg;
	struct ly_datastore_change c = { .kind = 0, .revision = -1 };

	if (m->srv.stopping || m->srv.dsa == NULL)
		return;
	switch (n->kind) {
	case LY_PG_NOTICE_ENTRIES:
		c.kind = LY_DATASTORE_ENTRY_UPDATED;
		c.revision = n->revision;
		break;
	case LY_PG_NOTICE_AGENT_EVICTED:
		c.kind = LY_DATASTORE_AGENT_EVICTED;
		c.agent_id = n->agent_id;
		break;
	case LY_PG_NOTICE_AGENT_BANNED:
		c.kind = LY_DATASTORE_AGENT_BANNED;
		c.agent_id = n->agent_id;
		break;
	case LY_PG_NOTICE_BUNDLE:
		shared_refresh(m);
		return;
	}
	ly_dsa_changed(m->srv.dsa, &c);
}

/* LISTEN (again): what was notified while no one listened is caught up from the change log. */
static void
on_listening(void *arg)
{
	struct srv_main *m = arg;
	struct ly_datastore_change c = { .kind = LY_DATASTORE_ENTRY_UPDATED, .revision = -1 };

	if (m->srv.stopping || m->srv.dsa == NULL)
		return;
	ly_dsa_changed(m->srv.dsa, &c);
	/* Evictions and bans notified while no one listened: their streams end now. */
	struct ly_error e;
	/* A datastore call right after PostgreSQL came back finds its session gone; the next one reconnects. */
	if (ly_agent_api_recheck_agents(m->srv.agent_api, &e) != LY_OK &&
	    ly_agent_api_recheck_agents(m->srv.agent_api, &e) != LY_OK)
		log_warn("change notifications: agents not re-checked: %s", e.msg);
	shared_refresh(m);
}

static ly_status
notify_start(struct srv_main *m, struct ly_error *err)
{
	if (!m->srv.ds_shared)
		return LY_OK;
	struct ly_pg_notify_config nc = {
		.loop = &m->loop, .conninfo = m->srv.cfg.datastore_conninfo, .on_notice = on_notice,
		.on_listening = on_listening, .arg = m,
	};
	ly_status rc = ly_pg_notify_start(&nc, &m->notify, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "change notifications");
	return LY_OK;
}

static ly_status
start(struct srv_main *m, struct ly_error *err)
{
	LY_TRY(open_state(m, err));
	LY_TRY(open_rpc(m, err));
	handles_init(m);
	LY_TRY(health_start(m, err));
	LY_TRY(fed_start(m, err));
	tick_arm(m, 0);
	uv_timer_start(&m->prune_timer, on_prune, PRUNE_MS, PRUNE_MS);
	uv_timer_start(&m->ds_ping_timer, on_ds_ping, 0, DS_PING_MS);

	LY_TRY(notify_start(m, err));

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
