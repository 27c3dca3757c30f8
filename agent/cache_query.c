/*
 * cache_query.c: what a caller of the Workload API sees in the agent's
 * cache (cache.h): its identities, found through the selector index
 * (cache_rec.c), sorted in default-identity order with hints unique; and
 * whether a set of changes reaches it (ly_cache_changes_affect).
 *
 * Ownership: struct ly_cache_identities owns its array of views; the
 * views are borrowed from the cache until its next mutating call.
 */
#include "agent/cache_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- queries ---- */

void
ly_cache_identities_init(struct ly_cache_identities *ids)
{
	memset(ids, 0, sizeof(*ids));
}

void
ly_cache_identities_cleanup(struct ly_cache_identities *ids)
{
	if (ids == NULL)
		return;
	free(ids->v);
	ly_cache_identities_init(ids);
}

/* Default-identity order: created_at ascending, then entry_id. */
static int
identity_cmp(const void *pa, const void *pb)
{
	const struct ly_cache_item *a = pa, *b = pb;
	if (a->entry->created_at != b->entry->created_at)
		return a->entry->created_at < b->entry->created_at ? -1 : 1;
	return strcmp(a->entry->entry_id, b->entry->entry_id);
}

static bool
usable(const struct ly_cache_item *it, unsigned flags, int64_t now)
{
	if ((flags & LY_CACHE_QUERY_X509) == 0)
		return true;
	return it->has_svid && it->not_before <= now && now < it->not_after;
}

ly_status
ly_cache_query(const struct ly_cache *c, const struct ly_selector *have, size_t m, unsigned flags, int64_t now,
    struct ly_cache_identities *out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	const struct cache_bucket **seen = NULL;
	size_t nseen = 0;

	out->n = 0;
	out->n_entitled = 0;
	out->n_hint_duplicates = 0;
	out->generation = c->generation;
	if (m > LY_WORKLOAD_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "cache query: more than %d selectors", LY_WORKLOAD_SELECTORS_MAX);
	if (m == 0 || c->bysel.count == 0)
		return LY_OK;
	seen = calloc(m, sizeof(*seen));
	if (seen == NULL)
		return ly_error_set(err, LY_E_NOMEM, "cache query: allocating");

	for (size_t i = 0; i < m; i++) {
		char name[LY_SELECTOR_MAX + 1];
		if (have[i].type == NULL || have[i].value == NULL ||
		    ly_selector_format(&have[i], name, sizeof(name), NULL) != LY_OK)
			continue; /* too long to be any entry's selector */
		struct ly_keymap_node *n = ly_keymap_find(&c->bysel, name, strlen(name));
		if (n == NULL)
			continue;
		const struct cache_bucket *b = LY_KEYMAP_ENTRY(n, struct cache_bucket, node);
		bool dup = false;
		for (size_t k = 0; k < nseen && !dup; k++)
			dup = seen[k] == b;
		if (dup)
			continue;
		seen[nseen++] = b;
		for (size_t k = 0; k < b->n; k++) {
			const struct cache_rec *r = b->recs[k];
			if (!ly_selectors_match(r->entry->selectors, r->entry->n_selectors, have, m))
				continue;
			out->n_entitled++;
			struct ly_cache_item it;
			cache_fill_item(r, &it);
			if (!usable(&it, flags, now))
				continue;
			if (!cache_grow_ptrs(&out->v, &out->cap, out->n + 1, sizeof(*out->v))) {
				rc = ly_error_set(err, LY_E_NOMEM, "cache query: growing the result");
				goto out;
			}
			out->v[out->n++] = it;
		}
	}
	if (out->n > 1)
		qsort(out->v, out->n, sizeof(*out->v), identity_cmp);
	/* Hints unique: keep the first of each (SPEC §3). */
	size_t w = 0;
	for (size_t i = 0; i < out->n; i++) {
		const char *h = out->v[i].entry->hint;
		bool dup = false;
		if (h != NULL && h[0] != '\0') {
			for (size_t k = 0; k < w && !dup; k++) {
				const char *hk = out->v[k].entry->hint;
				dup = hk != NULL && strcmp(hk, h) == 0;
			}
		}
		if (dup) {
			out->n_hint_duplicates++;
			if ((flags & LY_CACHE_QUERY_ALL_HINTS) == 0)
				continue;
		}
		out->v[w++] = out->v[i];
	}
	out->n = w;
out:
	if (rc != LY_OK)
		out->n = 0;
	free(seen);
	return rc;
}

bool
ly_cache_changes_affect(const struct ly_cache *c, const struct ly_cache_changes *cs, const struct ly_selector *have,
    size_t m)
{
	if (cs->all || cs->bundles_changed)
		return true;
	for (size_t i = 0; i < cs->n; i++) {
		const struct ly_cache_change *ch = &cs->v[i];
		if (ch->n_old_selectors > 0 && ly_selectors_match(ch->old_selectors, ch->n_old_selectors, have, m))
			return true;
		const struct cache_rec *r = cache_find_rec(c, ch->entry_id);
		if (r != NULL && !r->entry->node &&
		    ly_selectors_match(r->entry->selectors, r->entry->n_selectors, have, m))
			return true;
	}
	return false;
}
