/*
 * agent_api_replica.c: the agent API's entry replica (agent_api_internal.h):
 * every entry, sorted by ID, and the authz index over it, loaded once and
 * then brought up to date from the datastore's change log. The reads run on
 * the datastore's worker (one at a time), where this server's writes run
 * too, so a revision and the list read after it agree; they are applied on
 * the loop. While the datastore does not answer, the replica stays as it
 * was: the SVIDs of the entries it holds keep being signed.
 */
#include "server/agent_api_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- the entry cache -------------------------------------------------------------------- */

static int
cmp_entry_ptr(const void *a, const void *b)
{
	const struct ly_entry *const *x = a, *const *y = b;
	return strcmp((*x)->entry_id, (*y)->entry_id);
}

static int
cmp_change_ptr(const void *a, const void *b)
{
	const struct ly_entry_change *const *x = a, *const *y = b;
	return strcmp((*x)->entry_id, (*y)->entry_id);
}

static void
entries_free(struct ly_entry **v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		ly_entry_free(v[i]);
	free(v);
}

/* ---- the change log ------------------------------------------------------------------------ */

static void
log_clear(struct ly_agent_api *api, int64_t from)
{
	for (size_t i = 0; api->log != NULL && i < api->log_n; i++) {
		struct agent_api_change *c = &api->log[(api->log_head + i) % CHANGE_LOG_MAX];
		free(c->entry_id);
		c->entry_id = NULL;
	}
	api->log_head = api->log_n = 0;
	api->log_from = from;
}

/* Appends a change; the oldest goes when full (the log then starts at its revision). */
static void
log_add(struct ly_agent_api *api, int64_t revision, const char *entry_id, bool structural)
{
	char *id = strdup(entry_id);
	if (api->log == NULL)
		api->log = calloc(CHANGE_LOG_MAX, sizeof(*api->log));
	if (api->log == NULL || id == NULL) {
		/* Out of memory: forget everything, every resuming watch gets a snapshot. */
		free(id);
		log_clear(api, INT64_MAX);
		return;
	}
	if (api->log_n == CHANGE_LOG_MAX) {
		struct agent_api_change *old = &api->log[api->log_head];
		api->log_from = old->revision;
		free(old->entry_id);
		old->entry_id = NULL;
		api->log_head = (api->log_head + 1) % CHANGE_LOG_MAX;
		api->log_n--;
	}
	struct agent_api_change *c = &api->log[(api->log_head + api->log_n) % CHANGE_LOG_MAX];
	c->revision = revision;
	c->entry_id = id;
	c->structural = structural;
	api->log_n++;
}

ly_status
agent_api_replica_changed_since(const struct ly_agent_api *api, int64_t since, const char ***ids, size_t *n,
    bool *ok, struct ly_error *err)
{
	*ids = NULL;
	*n = 0;
	*ok = false;
	if (!api->loaded || since < api->log_from || since > api->revision)
		return LY_OK;
	const char **v = calloc(api->log_n + 1, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "change log: out of memory");
	size_t k = 0;
	for (size_t i = 0; i < api->log_n; i++) {
		const struct agent_api_change *c = &api->log[(api->log_head + i) % CHANGE_LOG_MAX];
		if (c->revision <= since)
			continue;
		if (c->structural) {
			free(v);
			return LY_OK;
		}
		v[k++] = c->entry_id;
	}
	*ids = v;
	*n = k;
	*ok = true;
	return LY_OK;
}

/* Whether some entry of `v` names `spiffe_id` as its parent. */
static bool
is_parent(struct ly_entry *const *v, size_t n, const char *spiffe_id)
{
	for (size_t i = 0; spiffe_id != NULL && i < n; i++) {
		if (v[i] != NULL && strcmp(v[i]->parent_id, spiffe_id) == 0)
			return true;
	}
	return false;
}

/* ---- the entry cache -------------------------------------------------------------------- */

/* Replaces the cache with `v` (n entries, ownership taken on success). */
static ly_status
cache_install(struct ly_agent_api *api, struct ly_entry **v, size_t n, int64_t revision, struct ly_error *err)
{
	struct ly_authz_index *idx = NULL;

	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_entry_ptr);
	LY_TRY(ly_authz_index_new(v, n, &idx, err));
	ly_authz_index_free(api->index);
	entries_free(api->entries, api->n_entries);
	api->index = idx;
	api->entries = v;
	api->n_entries = n;
	api->revision = revision;
	api->loaded = true;
	log_clear(api, revision);
	return LY_OK;
}

/* One read of the datastore for the replica, on the worker. */
struct replica_read {
	struct agent_api_op op;
	bool load;     /* everything (revision + entries), not the change log */
	int64_t since;
	int64_t revision;
	struct ly_entry_list list;
	struct ly_entry_changes ch;
	uint64_t t0_ns;
	/* The federated bundles (agent_api_fed.c), read after the entries in the same call. */
	int64_t fed_since; /* the copy's fed_revision; -1: never read */
	bool fed_stale;    /* the hook said one changed: read them whatever the revision */
	struct agent_api_fed_read fed;
};

static ly_status
read_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct replica_read *r = ctx;
	ly_status rc;

	if (!r->load) {
		if ((rc = ly_datastore_entry_changes_since(ds, r->since, &r->ch, err)) != LY_OK)
			return ly_error_wrap(err, rc, "entry changes");
		if (!r->ch.resync)
			return agent_api_fed_read_work(ds, r->fed_since, r->fed_stale, &r->fed, err);
		ly_entry_changes_cleanup(&r->ch);
		r->load = true;
	}
	if ((rc = ly_datastore_revision(ds, &r->revision, err)) != LY_OK ||
	    (rc = ly_datastore_entry_list(ds, NULL, &r->list, err)) != LY_OK)
		return ly_error_wrap(err, rc, "load entries");
	return agent_api_fed_read_work(ds, r->fed_since, r->fed_stale, &r->fed, err);
}

static void
read_release(void *ctx)
{
	struct replica_read *r = ctx;

	ly_entry_list_cleanup(&r->list);
	ly_entry_changes_cleanup(&r->ch);
	ly_ds_fed_bundle_list_cleanup(&r->fed.list);
	free(r);
}

/* Applies a change log read at the replica's revision; *changed tells whether any entry changed. */
static ly_status
apply_changes(struct ly_agent_api *api, struct ly_entry_changes *chp, bool *changed, struct ly_error *err)
{
	struct ly_entry_changes ch = *chp;
	struct ly_entry_change **byid = NULL;
	struct ly_entry **nv = NULL;
	bool *drop = NULL;
	size_t nn = 0;
	ly_status rc = LY_OK;

	*chp = (struct ly_entry_changes)LY_ENTRY_CHANGES_INIT;
	*changed = false;
	if (ch.n == 0) {
		api->revision = ch.revision;
		ly_entry_changes_cleanup(&ch);
		return LY_OK;
	}
	byid = calloc(ch.n, sizeof(*byid));
	nv = calloc(api->n_entries + ch.n + 1, sizeof(*nv));
	drop = calloc(api->n_entries + 1, sizeof(*drop));
	if (byid == NULL || nv == NULL || drop == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "entry changes: out of memory");
		goto out;
	}
	for (size_t i = 0; i < ch.n; i++)
		byid[i] = &ch.items[i];
	qsort(byid, ch.n, sizeof(*byid), cmp_change_ptr);
	/* Keep every cached entry no change names; then add what the changes hold now. */
	for (size_t i = 0; i < api->n_entries; i++) {
		struct ly_entry_change key = { 0, LY_ENTRY_CREATED, api->entries[i]->entry_id, NULL };
		const struct ly_entry_change *kp = &key;
		drop[i] = bsearch(&kp, byid, ch.n, sizeof(*byid), cmp_change_ptr) != NULL;
		if (!drop[i])
			nv[nn++] = api->entries[i];
	}
	for (size_t i = 0; i < ch.n; i++) {
		if (ch.items[i].entry != NULL)
			nv[nn++] = ch.items[i].entry;
	}
	if (nn > 1)
		qsort(nv, nn, sizeof(*nv), cmp_entry_ptr);
	struct ly_authz_index *idx = NULL;
	if ((rc = ly_authz_index_new(nv, nn, &idx, err)) != LY_OK) {
		/* Inconsistent (a bug, or a store changed under us): reload next time. */
		api->loaded = false;
		goto out;
	}
	/* The change log, before the old entries go: what each change was before and after. */
	for (size_t i = 0; i < ch.n; i++) {
		const struct ly_entry *after = ch.items[i].entry, *before = NULL;
		struct ly_entry key_e = { 0 };
		key_e.entry_id = ch.items[i].entry_id;
		struct ly_entry *kp = &key_e;
		struct ly_entry **hit = api->n_entries == 0 ? NULL
		    : bsearch(&kp, api->entries, api->n_entries, sizeof(*api->entries), cmp_entry_ptr);
		if (hit != NULL)
			before = *hit;
		bool structural = ch.n > CHANGE_SCAN_MAX || (before != NULL && before->node) ||
		    (after != NULL && after->node);
		if (!structural && before != NULL)
			structural = is_parent(api->entries, api->n_entries, before->spiffe_id) ||
			    is_parent(nv, nn, before->spiffe_id);
		if (!structural && after != NULL)
			structural = is_parent(api->entries, api->n_entries, after->spiffe_id) ||
			    is_parent(nv, nn, after->spiffe_id);
		log_add(api, ch.items[i].revision, ch.items[i].entry_id, structural);
	}
	/* Committed: the cache owns the new entries, drops the replaced ones. */
	for (size_t i = 0; i < ch.n; i++)
		ch.items[i].entry = NULL;
	for (size_t i = 0; i < api->n_entries; i++) {
		if (drop[i])
			ly_entry_free(api->entries[i]);
	}
	free(api->entries);
	ly_authz_index_free(api->index);
	api->entries = nv;
	api->n_entries = nn;
	api->index = idx;
	api->revision = ch.revision;
	nv = NULL;
	*changed = true;
out:
	free(nv);
	free(drop);
	free(byid);
	ly_entry_changes_cleanup(&ch);
	return rc;
}

/* The end of a refresh, through the hook agent_api.c set. */
static void
refreshed(struct ly_agent_api *api, ly_status rc, bool changed, const struct ly_error *err)
{
	if (api->refreshed != NULL)
		api->refreshed(api, rc, changed, err);
}

static void
read_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct replica_read *r = ctx;
	struct ly_agent_api *api = agent_api_op_end(&r->op);
	struct ly_error e;
	bool changed = false;
	ly_status rc = st;

	if (api == NULL)
		return;
	api->refresh_inflight = false;
	if (st != LY_OK) {
		e = *err;
		if (r->fed_stale)
			api->fed_stale = true; /* not read: the next refresh reads them */
	} else if (r->load) {
		rc = cache_install(api, r->list.items, r->list.n, r->revision, &e);
		if (rc == LY_OK) {
			r->list.items = NULL;
			r->list.n = 0;
			changed = true;
		}
	} else if (r->since != api->revision) {
		/* Loaded again meanwhile (cannot happen with one read at a time): read again. */
		api->refresh_again = true;
	} else {
		rc = apply_changes(api, &r->ch, &changed, &e);
	}
	if (st == LY_OK && agent_api_fed_apply(api, &r->fed))
		changed = true;
	api->refresh_end_ns = uv_hrtime();
	api->refresh_cost_ns = api->refresh_end_ns - r->t0_ns;
	refreshed(api, rc, changed, &e);
	if (api->refresh_again && !api->stopped) {
		api->refresh_again = false;
		agent_api_replica_refresh(api);
	}
}

void
agent_api_replica_refresh(struct ly_agent_api *api)
{
	struct replica_read *r;
	struct ly_error e;

	if (api->stopped || api->srv->dsa == NULL)
		return;
	if (api->refresh_inflight) {
		api->refresh_again = true;
		return;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		(void)ly_error_set(&e, LY_E_NOMEM, "entries: out of memory");
		refreshed(api, LY_E_NOMEM, false, &e);
		return;
	}
	r->load = !api->loaded;
	r->since = api->revision;
	r->list = (struct ly_entry_list)LY_ENTRY_LIST_INIT;
	r->ch = (struct ly_entry_changes)LY_ENTRY_CHANGES_INIT;
	r->t0_ns = uv_hrtime();
	r->fed_since = api->fed_revision;
	r->fed_stale = api->fed_stale;
	r->fed.list = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	api->fed_stale = false;
	if (agent_api_op_submit(api, &r->op, read_work, read_done, read_release, &e) != LY_OK) {
		api->fed_stale = r->fed_stale;
		read_release(r);
		refreshed(api, LY_E_IO, false, &e);
		return;
	}
	api->refresh_inflight = true;
}

bool
agent_api_replica_refresh_now(struct ly_agent_api *api)
{
	if (api->stopped || api->srv->dsa == NULL)
		return false;
	/* Read on the datastore's worker; api->refreshed follows what changed. */
	agent_api_replica_refresh(api);
	return true;
}

ly_status
agent_api_replica_ensure(struct ly_agent_api *api, struct ly_error *err)
{
	if (api->loaded)
		return LY_OK;
	agent_api_replica_refresh(api);
	return ly_error_set(err, LY_E_IO, "entries not loaded yet");
}

ly_status
agent_api_replica_fed_ensure(struct ly_agent_api *api, struct ly_error *err)
{
	if (api->fed_revision >= 0)
		return LY_OK;
	agent_api_replica_refresh(api);
	return ly_error_set(err, LY_E_IO, "federated bundles not loaded yet");
}

void
agent_api_replica_clear(struct ly_agent_api *api)
{
	ly_authz_index_free(api->index);
	entries_free(api->entries, api->n_entries);
	api->index = NULL;
	api->entries = NULL;
	api->n_entries = 0;
	api->loaded = false;
	log_clear(api, INT64_MAX);
	free(api->log);
	api->log = NULL;
}
