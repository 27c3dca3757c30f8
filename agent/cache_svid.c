/*
 * cache_svid.c: the X.509-SVIDs of the agent's cache (cache.h): setting a
 * record's SVID (its chain split, the intermediates interned, the leaf
 * kept in the chain's own buffer, shrunk), marking it stale, dropping it,
 * expiring and filtering the SVIDs held.
 *
 * Ownership: ly_cache_set_svid moves the chain and key buffers into the
 * record on success (the buffers left empty); on failure they stay the
 * caller's. A dropped SVID's key is wiped (cache_svid_release).
 */
#include "agent/cache_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- X.509-SVIDs ---- */

ly_status
ly_cache_set_svid(struct ly_cache *c, const char *entry_id, const char *spiffe_id, struct ly_buf *chain,
    struct ly_buf *key, int64_t not_before, int64_t not_after, int64_t renew_at_ms, struct ly_cache_changes *cs,
    struct ly_error *err)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t count = 0;

	struct cache_rec *r = entry_id != NULL ? cache_find_rec(c, entry_id) : NULL;
	if (r == NULL || r->entry->node)
		return ly_error_set(err, LY_E_NOT_FOUND, "cache: no workload entry %.64s for this SVID",
		    entry_id != NULL ? entry_id : "(none)");
	if (spiffe_id == NULL || strcmp(spiffe_id, r->entry->spiffe_id) != 0)
		return ly_error_set(err, LY_E_INVALID, "cache: the SVID's SPIFFE ID is no longer entry %s's (%s)",
		    entry_id, r->entry->spiffe_id);
	if (key->data == NULL || key->len == 0)
		return ly_error_set(err, LY_E_INVALID, "cache: SVID without a key");
	if (key->len > LY_KEY_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "cache: key over %d bytes", LY_KEY_DER_MAX);
	if (not_before >= not_after)
		return ly_error_set(err, LY_E_INVALID, "cache: SVID validity window is empty");
	if (not_before < -INT64_MAX / 1000 || not_after > INT64_MAX / 1000 || renew_at_ms < not_before * 1000 ||
	    renew_at_ms > not_after * 1000)
		return ly_error_set(err, LY_E_INVALID, "cache: renewal time outside the SVID's validity window");
	if (chain->data == NULL)
		return ly_error_set(err, LY_E_INVALID, "cache: SVID without a chain");
	ly_status rc = ly_der_split(chain->data, chain->len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &count, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "cache: SVID chain");

	struct cache_tail *t = NULL;
	size_t leaf_len = spans[0].len;
	if (count > 1) {
		t = cache_tail_get(c, chain->data + spans[1].off, chain->len - spans[1].off, err);
		if (t == NULL)
			return ly_error_wrap(err, LY_E_NOMEM, "cache: SVID chain");
	}
	/* The leaf comes first: keep its bytes in place, giving back the rest. */
	uint8_t *leaf = chain->data;
	if (leaf_len < chain->len) {
		uint8_t *shrunk = realloc(leaf, leaf_len);
		if (shrunk != NULL)
			leaf = shrunk;
	}
	cache_svid_release(c, r);
	r->leaf = leaf;
	r->leaf_len = leaf_len;
	r->tail = t;
	r->key = key->data;
	r->key_len = key->len;
	r->not_before = not_before;
	r->not_after = not_after;
	r->renew_at_ms = renew_at_ms;
	r->has_svid = true;
	r->stale = false;
	c->nsvids++;
	ly_buf_init(chain, 0, false);
	ly_buf_init(key, 0, false);
	cache_record(cs, LY_CACHE_SVID_SET, r->entry, false, NULL, 0);
	cache_finish(c, true, cs);
	return LY_OK;
}

bool
ly_cache_mark_stale(struct ly_cache *c, const char *entry_id)
{
	struct cache_rec *r = cache_find_rec(c, entry_id);
	if (r == NULL || !r->has_svid)
		return false;
	r->stale = true;
	return true;
}

bool
ly_cache_drop_svid(struct ly_cache *c, const char *entry_id, struct ly_cache_changes *cs)
{
	struct cache_rec *r = cache_find_rec(c, entry_id);
	if (r == NULL || !r->has_svid)
		return false;
	cache_svid_release(c, r);
	cache_record(cs, LY_CACHE_SVID_DROPPED, r->entry, true, NULL, 0);
	cache_finish(c, true, cs);
	return true;
}

size_t
ly_cache_expire(struct ly_cache *c, int64_t now, struct ly_cache_changes *cs)
{
	size_t n = 0;
	for (size_t i = 0; i < c->nrecs; i++) {
		struct cache_rec *r = c->recs[i];
		if (r->has_svid && r->not_after <= now) {
			cache_svid_release(c, r);
			cache_record(cs, LY_CACHE_SVID_DROPPED, r->entry, true, NULL, 0);
			n++;
		}
	}
	cache_finish(c, n > 0, cs);
	return n;
}

int64_t
ly_cache_next_expiry(const struct ly_cache *c)
{
	int64_t t = INT64_MAX;
	for (size_t i = 0; i < c->nrecs; i++) {
		const struct cache_rec *r = c->recs[i];
		if (r->has_svid && r->not_after < t)
			t = r->not_after;
	}
	return t;
}

size_t
ly_cache_filter_svids(struct ly_cache *c, bool (*keep)(const struct ly_cache_item *item, void *arg), void *arg,
    struct ly_cache_changes *cs)
{
	size_t n = 0;
	for (size_t i = 0; i < c->nrecs; i++) {
		struct cache_rec *r = c->recs[i];
		struct ly_cache_item item;
		if (!r->has_svid)
			continue;
		cache_fill_item(r, &item);
		if (keep(&item, arg))
			continue;
		cache_svid_release(c, r);
		cache_record(cs, LY_CACHE_SVID_DROPPED, r->entry, true, NULL, 0);
		n++;
	}
	cache_finish(c, n > 0, cs);
	return n;
}
