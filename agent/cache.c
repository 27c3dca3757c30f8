/*
 * cache.c: the agent's cache (cache.h): its life cycle, its accessors and
 * the bundle set. The parts are listed in cache_internal.h.
 *
 * Ownership: ly_cache_new returns a cache the caller frees with
 * ly_cache_free, which destroys every record (keys wiped) and JWT-SVID
 * (tokens wiped) through cache_rec.c. ly_cache_set_bundles takes the set;
 * ly_cache_bundles and ly_cache_bundle lend it until the next set.
 */
#include "agent/cache_internal.h"

#include <stdlib.h>
#include <string.h>

#include "lib/spiffeid.h"

/* ---- the cache ---- */

ly_status
ly_cache_new(const char *trust_domain, struct ly_cache **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_cache *c = NULL;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return ly_error_set(err, LY_E_NOMEM, "cache: allocating");
	rc = ly_trust_domain_parse(trust_domain, false, c->td, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "cache");
		goto out;
	}
	if ((rc = ly_keymap_init(&c->byid, err)) != LY_OK || (rc = ly_keymap_init(&c->bysel, err)) != LY_OK ||
	    (rc = ly_keymap_init(&c->tails, err)) != LY_OK || (rc = ly_keymap_init(&c->jwts, err)) != LY_OK)
		goto out;
	*out = c;
	c = NULL;
	rc = LY_OK;
out:
	ly_cache_free(c);
	return rc;
}

void
ly_cache_free(struct ly_cache *c)
{
	if (c == NULL)
		return;
	while (c->nrecs > 0)
		cache_rec_destroy(c, c->recs[c->nrecs - 1]);
	while (c->njwt > 0)
		cache_jwt_release(c, c->jwtv[c->njwt - 1]);
	free(c->recs);
	free(c->jwtv);
	ly_keymap_cleanup(&c->byid);
	ly_keymap_cleanup(&c->bysel);
	ly_keymap_cleanup(&c->tails);
	ly_keymap_cleanup(&c->jwts);
	ly_bundle_set_free(c->bundles);
	free(c);
}

const char *
ly_cache_trust_domain(const struct ly_cache *c)
{
	return c->td;
}

uint64_t
ly_cache_generation(const struct ly_cache *c)
{
	return c->generation;
}

int64_t
ly_cache_revision(const struct ly_cache *c)
{
	return c->revision;
}

size_t
ly_cache_count(const struct ly_cache *c)
{
	return c->nrecs;
}

size_t
ly_cache_svid_count(const struct ly_cache *c)
{
	return c->nsvids;
}

void
ly_cache_item_at(const struct ly_cache *c, size_t i, struct ly_cache_item *out)
{
	cache_fill_item(c->recs[i], out);
}

bool
ly_cache_get(const struct ly_cache *c, const char *entry_id, struct ly_cache_item *out)
{
	struct cache_rec *r = cache_find_rec(c, entry_id);
	if (r == NULL)
		return false;
	cache_fill_item(r, out);
	return true;
}

/* ---- bundles ---- */

static bool
sets_equal(const struct ly_bundle_set *a, const struct ly_bundle_set *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	if (ly_bundle_set_count(a) != ly_bundle_set_count(b))
		return false;
	for (size_t i = 0; i < ly_bundle_set_count(a); i++) {
		const struct ly_bundle *x = ly_bundle_set_at(a, i);
		const struct ly_bundle *y = ly_bundle_set_find(b, ly_bundle_trust_domain(x));
		if (y == NULL || !ly_bundle_equal(x, y))
			return false;
	}
	return true;
}

ly_status
ly_cache_set_bundles(struct ly_cache *c, struct ly_bundle_set *set, struct ly_cache_changes *cs,
    struct ly_error *err)
{
	if (set == NULL)
		return ly_error_set(err, LY_E_INVALID, "cache: no bundle set");
	bool changed = !sets_equal(c->bundles, set);
	ly_bundle_set_free(c->bundles);
	c->bundles = set;
	if (changed && cs != NULL)
		cs->bundles_changed = true;
	cache_finish(c, changed, cs);
	return LY_OK;
}

const struct ly_bundle_set *
ly_cache_bundles(const struct ly_cache *c)
{
	return c->bundles;
}

const struct ly_bundle *
ly_cache_bundle(const struct ly_cache *c)
{
	return c->bundles != NULL ? ly_bundle_set_find(c->bundles, c->td) : NULL;
}
