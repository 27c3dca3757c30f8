/*
 * cache_apply.c: an update from the server applied to the agent's cache
 * (ly_cache_apply, cache.h): entries validated, then inserted, updated
 * (re-indexed, their SVID kept, marked stale or dropped, their JWT-SVIDs
 * dropped as the change requires) or deleted, each change recorded.
 *
 * Ownership: an entry the cache keeps is moved out of the update (its slot
 * set to NULL); on an update the old entry is freed, its selectors moved
 * into the change record when they changed. Everything left in the update
 * stays the caller's.
 */
#include "agent/cache_internal.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

/* ---- entries ---- */

/* Moves the selectors out of `e` (for a change record). */
static void
steal_selectors(struct ly_entry *e, struct ly_selector **out, size_t *n)
{
	*out = e->selectors;
	*n = e->n_selectors;
	e->selectors = NULL;
	e->n_selectors = 0;
}

static bool
str_eq(const char *a, const char *b)
{
	return strcmp(cache_or_empty(a), cache_or_empty(b)) == 0;
}

static bool
dns_equal(const struct ly_entry *a, const struct ly_entry *b)
{
	if (a->n_dns_names != b->n_dns_names)
		return false;
	for (size_t i = 0; i < a->n_dns_names; i++)
		if (!str_eq(a->dns_names[i], b->dns_names[i]))
			return false;
	return true;
}

static bool
selectors_equal(const struct ly_entry *a, const struct ly_entry *b)
{
	/* Both canonical (validated): equal sets are equal arrays. */
	if (a->n_selectors != b->n_selectors)
		return false;
	for (size_t i = 0; i < a->n_selectors; i++)
		if (!ly_selector_equal(&a->selectors[i], &b->selectors[i]))
			return false;
	return true;
}

/* The same federated trust domains, in the same order (the server sends them sorted). */
static bool
federates_equal(const struct ly_entry *a, const struct ly_entry *b)
{
	if (a->n_federates_with != b->n_federates_with)
		return false;
	for (size_t i = 0; i < a->n_federates_with; i++)
		if (!str_eq(a->federates_with[i], b->federates_with[i]))
			return false;
	return true;
}

/* Equal in everything but the revision. */
static bool
content_equal(const struct ly_entry *a, const struct ly_entry *b)
{
	return str_eq(a->spiffe_id, b->spiffe_id) && str_eq(a->parent_id, b->parent_id) && selectors_equal(a, b) &&
	    a->x509_svid_ttl == b->x509_svid_ttl && a->jwt_svid_ttl == b->jwt_svid_ttl && dns_equal(a, b) &&
	    a->node == b->node && a->admin == b->admin && a->downstream == b->downstream && str_eq(a->hint, b->hint) &&
	    a->created_at == b->created_at && federates_equal(a, b);
}

static ly_status
rec_insert(struct ly_cache *c, struct ly_entry *e, uint64_t mark, struct ly_cache_changes *cs,
    struct ly_error *err)
{
	struct cache_rec *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return ly_error_set(err, LY_E_NOMEM, "cache: allocating an entry");
	if (!cache_grow_ptrs(&c->recs, &c->caprecs, c->nrecs + 1, sizeof(*c->recs))) {
		free(r);
		return ly_error_set(err, LY_E_NOMEM, "cache: growing the entry table");
	}
	r->entry = e;
	r->mark = mark;
	r->node.key = (const uint8_t *)e->entry_id;
	r->node.key_len = strlen(e->entry_id);
	ly_status rc = ly_keymap_insert(&c->byid, &r->node, err);
	if (rc != LY_OK) {
		free(r);
		return rc;
	}
	rc = cache_index_add(c, r, err);
	if (rc != LY_OK) {
		ly_keymap_remove(&c->byid, &r->node);
		free(r);
		return rc;
	}
	r->slot = c->nrecs;
	c->recs[c->nrecs++] = r;
	cache_record(cs, LY_CACHE_CREATED, e, !e->node, NULL, 0);
	return LY_OK;
}

/* Replaces the entry of `r` by `e` (different content). Takes `e` on success. */
static ly_status
rec_update(struct ly_cache *c, struct cache_rec *r, struct ly_entry *e, struct ly_cache_changes *cs,
    struct ly_error *err)
{
	struct ly_entry *old = r->entry;
	bool id_changed = !str_eq(old->spiffe_id, e->spiffe_id);
	bool sels_changed = !selectors_equal(old, e);
	bool reindex = sels_changed || old->node != e->node;
	bool params_changed = !dns_equal(old, e) || old->x509_svid_ttl != e->x509_svid_ttl;
	bool jwt_changed = id_changed || old->jwt_svid_ttl != e->jwt_svid_ttl || old->node != e->node;
	bool needs_svid = false;

	if (reindex) {
		cache_index_remove(c, r);
		r->entry = e;
		ly_status rc = cache_index_add(c, r, err);
		if (rc != LY_OK) {
			/* Put it back under its old entry: nothing changed. */
			r->entry = old;
			if (cache_index_add(c, r, NULL) != LY_OK)
				log_error("cache: entry %s left out of the selector index (out of memory)",
				    old->entry_id);
			return rc;
		}
	}
	r->entry = e;
	ly_keymap_rekey_same(&r->node, (const uint8_t *)e->entry_id);
	if (e->node) {
		cache_svid_release(c, r);
	} else if (id_changed || old->node) {
		/* A new ID, or a node entry turned workload entry: issue one now. */
		cache_svid_release(c, r);
		needs_svid = true;
	} else if (r->has_svid && params_changed) {
		r->stale = true;
		needs_svid = true;
	}
	if (jwt_changed)
		cache_jwt_drop_entry(c, e->entry_id);
	struct ly_selector *old_sels = NULL;
	size_t n_old = 0;
	if (sels_changed)
		steal_selectors(old, &old_sels, &n_old);
	cache_record(cs, LY_CACHE_UPDATED, e, needs_svid, old_sels, n_old);
	ly_entry_free(old);
	return LY_OK;
}

/* Counts the entries of `u` not yet in the cache (an upper bound of growth). */
static size_t
count_new(const struct ly_cache *c, const struct ly_cache_update *u)
{
	size_t n = 0;
	for (size_t i = 0; i < u->n_entries; i++) {
		const struct ly_entry *e = u->entries[i];
		if (e != NULL && e->entry_id != NULL && cache_find_rec(c, e->entry_id) == NULL)
			n++;
	}
	return n;
}

ly_status
ly_cache_apply(struct ly_cache *c, struct ly_cache_update *u, struct ly_cache_changes *cs, struct ly_error *err)
{
	ly_status rc = LY_OK;
	bool changed = false;

	if (u->n_entries > LY_AGENT_ENTRIES_MAX ||
	    (!u->snapshot && c->nrecs + count_new(c, u) > LY_AGENT_ENTRIES_MAX))
		return ly_error_set(err, LY_E_LIMIT, "cache: more than %d entries", LY_AGENT_ENTRIES_MAX);
	if (u->n_entries > 0 && u->entries == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "cache: entries missing");
	uint64_t mark = ++c->mark;

	for (size_t i = 0; i < u->n_entries; i++) {
		struct ly_entry *e = u->entries[i];
		struct ly_error verr;
		if (e == NULL)
			continue;
		ly_error_clear(&verr);
		if (ly_entry_id_check(e->entry_id, &verr) != LY_OK) {
			log_warn("cache: an entry refused: %s", verr.msg);
			if (cs != NULL)
				cs->n_rejected++;
			continue;
		}
		if (ly_entry_validate(e, c->td, &verr) != LY_OK) {
			log_warn("cache: entry %s refused: %s", e->entry_id, verr.msg);
			if (cs != NULL)
				cs->n_rejected++;
			continue;
		}
		struct cache_rec *r = cache_find_rec(c, e->entry_id);
		if (r == NULL) {
			rc = rec_insert(c, e, mark, cs, err);
			if (rc != LY_OK)
				goto out;
			u->entries[i] = NULL;
			changed = true;
			continue;
		}
		r->mark = mark;
		if (!u->snapshot && e->revision < r->entry->revision)
			continue; /* older than what we hold */
		if (content_equal(r->entry, e)) {
			r->entry->revision = e->revision;
			continue;
		}
		rc = rec_update(c, r, e, cs, err);
		if (rc != LY_OK)
			goto out;
		u->entries[i] = NULL;
		changed = true;
	}
	if (u->snapshot) {
		for (size_t i = c->nrecs; i > 0; i--) {
			struct cache_rec *r = c->recs[i - 1];
			if (r->mark != mark) {
				cache_rec_delete(c, r, cs);
				changed = true;
			}
		}
	} else {
		for (size_t i = 0; i < u->n_deleted; i++) {
			if (u->deleted_ids == NULL || u->deleted_ids[i] == NULL)
				continue;
			struct cache_rec *r = cache_find_rec(c, u->deleted_ids[i]);
			if (r != NULL) {
				cache_rec_delete(c, r, cs);
				changed = true;
			}
		}
	}
	if (u->snapshot || u->revision > c->revision)
		c->revision = u->revision;
out:
	cache_finish(c, changed, cs);
	return rc;
}
