/*
 * agent_api_replica.c: the agent API's entry replica (agent_api_internal.h):
 * every entry, sorted by ID, and the authz index over it, loaded once and
 * then brought up to date from the datastore's change log. Writes happen on
 * the loop thread only, so a revision and the list read after it agree.
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

/* Loads every entry. Writes happen on this thread only, so revision and list agree. */
static ly_status
cache_load(struct ly_agent_api *api, struct ly_error *err)
{
	struct ly_entry_list list = LY_ENTRY_LIST_INIT;
	int64_t rev = 0;
	ly_status rc;

	if (api->srv->ds == NULL)
		return ly_error_set(err, LY_E_IO, "no datastore");
	if ((rc = ly_datastore_revision(api->srv->ds, &rev, err)) != LY_OK ||
	    (rc = ly_datastore_entry_list(api->srv->ds, NULL, &list, err)) != LY_OK)
		return ly_error_wrap(err, rc, "load entries");
	rc = cache_install(api, list.items, list.n, rev, err);
	if (rc == LY_OK)
		list.items = NULL, list.n = 0;
	ly_entry_list_cleanup(&list);
	return rc;
}

/* Applies the change log since the cache's revision; *changed tells whether any entry changed. */
ly_status
agent_api_replica_refresh(struct ly_agent_api *api, bool *changed, struct ly_error *err)
{
	struct ly_entry_changes ch = LY_ENTRY_CHANGES_INIT;
	struct ly_entry_change **byid = NULL;
	struct ly_entry **nv = NULL;
	bool *drop = NULL;
	size_t nn = 0;
	ly_status rc;

	*changed = false;
	if (!api->loaded) {
		LY_TRY(cache_load(api, err));
		*changed = true;
		return LY_OK;
	}
	if ((rc = ly_datastore_entry_changes_since(api->srv->ds, api->revision, &ch, err)) != LY_OK)
		return ly_error_wrap(err, rc, "entry changes");
	if (ch.resync) {
		ly_entry_changes_cleanup(&ch);
		LY_TRY(cache_load(api, err));
		*changed = true;
		return LY_OK;
	}
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

ly_status
agent_api_replica_ensure(struct ly_agent_api *api, struct ly_error *err)
{
	return api->loaded ? LY_OK : cache_load(api, err);
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
