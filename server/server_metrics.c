/*
 * server_metrics.c: the server's metric families (docs/server.md, "Health
 * and metrics"; struct ly_server_metrics in server_core.h) and the health
 * listener's two answers (rpc/health_http.h): /ready and /metrics
 * (server_internal.h). What they read from the datastore comes from its
 * worker without the loop ever waiting: every call's outcome and latency
 * (the worker's observer) and a ping every DS_PING_MS (a revision read,
 * with the agents counted again when it moved), which also keeps the
 * worker's record of reachability current.
 *
 * Ownership: srv->metrics is made by server_metrics_start and freed by
 * teardown (server_metrics_free); the listener (m->health) is stopped by
 * begin_stop; a ping's struct is freed by the worker's completion.
 * Threads: the loop thread, except ds_ping_work on the datastore's worker.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/metrics.h"
#include "rpc/health_http.h"
#include "server/ca.h"
#include "server/pg_notify.h"
#include "server/server_internal.h"

/*
 * The datastore is pinged (a revision read, on its worker) this often, so
 * that /ready and the gauges follow it without a probe storm becoming a
 * query storm; when the revision moved, the agents are counted too (the
 * lanyard_server_agents gauge, at most this stale).
 */
#define DS_PING_MS 1000

/* Every datastore call as it ends: the latency histogram and the outcome counter. */
void
server_metrics_observe(void *arg, enum ly_dsa_outcome outcome, double seconds)
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

void
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

ly_status
server_metrics_start(struct srv_main *m, struct ly_error *err)
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

void
server_metrics_ping_start(struct srv_main *m)
{
	uv_timer_start(&m->ds_ping_timer, on_ds_ping, 0, DS_PING_MS);
}
