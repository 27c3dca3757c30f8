/*
 * server_bundle.c: what keeps the trust bundle this server serves current
 * (server_internal.h): the CA rotation timer (ly_ca_tick; the server
 * certificate renewed at 50% of its life and whenever the bundle
 * changes), and several servers on one PostgreSQL (SPEC §10): this CA's
 * authorities published into the shared bundle before its successor
 * signs, the union of every server's reloaded when another server
 * notifies or an authority expires, and pg_notify.h's notices fed to the
 * datastore's change hook as our own writes are. A changed bundle goes to
 * the agent API, the bundle endpoint (server_fed.c) and the agent
 * listener's client roots (server_tls.c).
 *
 * Runs on the loop thread. Owns no handle: the timer (m->tick_timer) and
 * the LISTEN connection (m->notify) are struct srv_main's, closed by
 * server.c's begin_stop.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/bundle.h"
#include "lib/log.h"
#include "server/ca.h"
#include "server/pg_notify.h"
#include "server/server_internal.h"
#include "server/server_shared.h"

/* Retry a failed CA tick, certificate renewal or shared bundle reload after this long. */
#define RETRY_MS (30 * 1000)
/* Longest sleep of the rotation timer, so a clock jump is noticed. */
#define TICK_MAX_MS (10 * 60 * 1000)

/* ---- the CA rotation timer ------------------------------------------------------------- */

static void on_tick(uv_timer_t *t);

void
server_bundle_tick_arm(struct srv_main *m, uint64_t retry_ms)
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
	bool changed = false, publish = false;
	uint64_t retry_ms = 0;

	if (m->srv.stopping)
		return;
	if (ly_ca_tick(m->srv.ca, now, &changed, &e) != LY_OK) {
		log_error("CA rotation failed, retrying in %d s: %s", RETRY_MS / 1000, e.msg);
		server_bundle_tick_arm(m, RETRY_MS);
		return;
	}
	if (m->srv.ds_shared) {
		/* Published before the successor signs: the rotation's prepare step changed the bundle (ca.h). */
		publish = changed || m->publish_pending;
		if (changed)
			m->publish_pending = true;
		/* The union served changes only when the reload completes (shared_done). */
		changed = false;
	}
	if (changed) {
		const struct ly_bundle *b = ly_server_bundle(&m->srv);
		log_info("trust bundle changed: sequence=%" PRIu64 " x509_authorities=%zu jwt_authorities=%zu",
		    ly_bundle_sequence(b), ly_bundle_x509_authority_count(b), ly_bundle_jwt_authority_count(b));
		if (m->srv.agent_api != NULL)
			ly_agent_api_bundle_changed(m->srv.agent_api);
		server_fed_publish(m);
	}
	if (changed || now >= m->svid_renew_at) {
		if (server_tls_refresh(m, now, &e) != LY_OK) {
			log_error("%s; retrying in %d s", e.msg, RETRY_MS / 1000);
			retry_ms = RETRY_MS;
		} else {
			log_info("server certificate renewed");
		}
	}
	server_bundle_tick_arm(m, retry_ms);
	/*
	 * Several servers: publish (when the CA's bundle changed) and rebuild
	 * the union (the other servers' authorities, expired ones dropped, ours
	 * always) on the datastore's worker; shared_done goes on. Last: its
	 * outcome may come at once (the datastore refused) and re-arm the timer.
	 */
	if (m->srv.ds_shared)
		ly_server_shared_update(&m->srv, publish, (int64_t)now);
}

/* ---- several servers on one PostgreSQL --------------------------------------------------- */

/* A publish and reload of the shared bundle ended (ly_server_shared_update): serve the new union. */
static void
shared_done(void *arg, const struct ly_shared_outcome *o)
{
	struct srv_main *m = arg;
	uint64_t retry_ms = 0;

	if (m->srv.stopping)
		return;
	if (o->publish_asked) {
		if (o->publish_rc == LY_OK) {
			m->publish_pending = false;
		} else {
			m->publish_pending = true;
			log_error("%s; retrying in %d s (the other servers' agents do not trust our new authorities yet)",
			    o->publish_msg, RETRY_MS / 1000);
			retry_ms = RETRY_MS;
		}
	}
	if (o->reload_rc != LY_OK) {
		log_warn("%s; retrying in %d s", o->reload_msg, RETRY_MS / 1000);
		retry_ms = RETRY_MS;
	}
	bool expiry_moved = o->next_expiry != m->shared_next_expiry;
	m->shared_next_expiry = o->next_expiry;
	if (o->changed) {
		const struct ly_bundle *b = ly_server_bundle(&m->srv);
		log_info("trust bundle changed: sequence=%" PRIu64 " x509_authorities=%zu jwt_authorities=%zu",
		    ly_bundle_sequence(b), ly_bundle_x509_authority_count(b), ly_bundle_jwt_authority_count(b));
		if (m->srv.agent_api != NULL)
			ly_agent_api_bundle_changed(m->srv.agent_api);
		server_fed_publish(m);
		/* The agent listener's client roots follow the bundle: the tick renews at once. */
		m->svid_renew_at = ly_server_now();
	}
	if (o->changed || retry_ms > 0 || expiry_moved)
		server_bundle_tick_arm(m, retry_ms);
}

/* The shared bundle may have changed (another server published, or we reconnected): reload it. */
static void
shared_refresh(struct srv_main *m)
{
	if (m->srv.stopping)
		return;
	ly_server_shared_update(&m->srv, m->publish_pending, (int64_t)ly_server_now());
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

ly_status
server_bundle_notify_start(struct srv_main *m, struct ly_error *err)
{
	if (!m->srv.ds_shared)
		return LY_OK;
	ly_server_shared_on_done(&m->srv, shared_done, m);
	struct ly_pg_notify_config nc = {
		.loop = &m->loop, .conninfo = m->srv.cfg.datastore_conninfo, .on_notice = on_notice,
		.on_listening = on_listening, .arg = m,
	};
	ly_status rc = ly_pg_notify_start(&nc, &m->notify, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "change notifications");
	return LY_OK;
}
