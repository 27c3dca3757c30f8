/*
 * server_fed.c: federation's wiring in the daemon (issue 15,
 * federation.h; server_internal.h): the bundle endpoint (fed_endpoint.h,
 * when configured; https_spiffe serves the agent listener's certificate,
 * handed over by server_tls.c at each renewal) and the fetcher
 * (fed_fetch.h), which reaches the datastore through the ly_fed_ops
 * below; `federation refresh` for the admin API (srv->fed_refresh); and
 * every federated bundle change heard through the datastore worker's
 * change callbacks (a log line, the counter, the fetcher told).
 *
 * Ownership: the endpoint and the fetcher (m->fed_ep, m->fetcher) are
 * stopped and freed by server.c's begin_stop; the copy of the
 * relationships and federated bundles the fetcher reads (m->fedc) is
 * freed by teardown. Each datastore call's struct (fed_read, fed_put) is
 * freed by its release once the loop and the worker let go.
 *
 * Threads: the loop thread, except the `*_work` functions on the
 * datastore's worker, which touch only their own call's struct.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bundle.h"
#include "lib/log.h"
#include "lib/spiffeid.h"
#include "server/admin_audit.h"
#include "server/audit.h"
#include "server/fed_endpoint.h"
#include "server/fed_fetch.h"
#include "server/server_internal.h"

/*
 * Every federated bundle change, whoever made it (the admin API, the
 * fetcher, another server's write is not heard here): one log line and the
 * counter (docs/server.md, "Health and metrics").
 */
void
server_fed_on_change(void *arg, const struct ly_datastore_change *c)
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

/*
 * Gives the bundle endpoint our bundle as it is now (the one the agents
 * get: with PostgreSQL, every server's authorities), with the configured
 * refresh hint.
 */
void
server_fed_publish(struct srv_main *m)
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
 * at once and to the datastore on the worker (fed_store). The fetcher
 * starts only once the first read of the copy completed (never on
 * relationships not read yet): the loop does not wait for it, and until
 * then nothing is fetched, not even the static relationships, whose
 * https_spiffe trust bundles come with that read. If that read fails the
 * fetcher starts anyway, with the static relationships, and the copy is
 * read again at its next sync.
 */
struct fed_read {
	struct srv_main *m;
	struct ly_ds_fed_rel_list rels;
	struct ly_ds_fed_bundle_list bundles;
	/* `federation refresh` waiting for this read (fed_refresh). */
	char refresh_td[LY_TRUST_DOMAIN_MAX + 1];
	ly_fed_refresh_done_fn *refresh_done;
	void *refresh_arg;
	bool first; /* start-up's read: the fetcher starts when it completes */
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
static void fed_fetcher_begin(struct srv_main *m);

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
		if (r->first)
			fed_fetcher_begin(m);
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
	if (r->first)
		fed_fetcher_begin(m);
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
	/* Before the first read completed: this read follows it, and the fetcher is there by then. */
	if (m->fetcher == NULL && !m->fedc.first_pending)
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

/* The first read of the copy completed (or failed): the fetcher starts, listing the copy as read. */
static void
fed_fetcher_begin(struct srv_main *m)
{
	struct ly_error e;

	m->fedc.first_pending = false;
	if (m->srv.stopping || m->fetcher != NULL)
		return;
	m->fedc.applying = true; /* its first list is the copy just read */
	ly_status rc = ly_fed_fetcher_new(&m->loop, &m->srv.cfg.fed, &fed_ops, m, &m->fetcher, &e);
	m->fedc.applying = false;
	if (rc != LY_OK)
		log_error("federation: the bundle fetcher does not start: %s", e.msg);
}

ly_status
server_fed_start(struct srv_main *m, struct ly_error *err)
{
	const struct ly_fed_config *fc = &m->srv.cfg.fed;
	ly_status rc;

	if (fc->endpoint.enabled) {
		if ((rc = ly_fed_endpoint_start(&m->loop, &fc->endpoint, fed_on_answer, m, &m->fed_ep, err)) != LY_OK)
			return rc;
		server_fed_publish(m);
		/* https_spiffe: the server certificate, made again now that the endpoint takes it too. */
		if (fc->endpoint.profile == LY_FED_PROFILE_HTTPS_SPIFFE)
			LY_TRY(server_tls_refresh(m, ly_server_now(), err));
		log_info("bundle endpoint on %s:%u (%s, refresh_hint %" PRIu64 " s)", fc->endpoint.address,
		    (unsigned)ly_fed_endpoint_port(m->fed_ep),
		    fc->endpoint.profile == LY_FED_PROFILE_HTTPS_WEB ? "https_web" : "https_spiffe",
		    fc->endpoint.refresh_hint);
	}
	LY_TRY(ly_dsa_on_change(m->srv.dsa, fed_on_store_change, m, err));
	/* The copy the fetcher reads, on the worker; the fetcher starts when it completes (fed_fetcher_begin). */
	struct fed_read *first = calloc(1, sizeof(*first));
	if (first == NULL)
		return ly_error_set(err, LY_E_NOMEM, "federation: out of memory");
	first->m = m;
	first->rels = (struct ly_ds_fed_rel_list)LY_DS_FED_REL_LIST_INIT;
	first->bundles = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	first->first = true;
	if ((rc = ly_dsa_submit(m->srv.dsa, fed_read_work, fed_read_done, fed_read_release, first, 0, err)) != LY_OK) {
		fed_read_release(first);
		return ly_error_wrap(err, rc, "federation: reading the relationships");
	}
	m->fedc.inflight = true;
	m->fedc.first_pending = true;
	m->srv.fed_refresh.fn = fed_refresh;
	m->srv.fed_refresh.arg = m;
	return LY_OK;
}
