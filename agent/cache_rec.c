/*
 * cache_rec.c: the lower layer of the agent's cache (cache_internal.h):
 * the records, one per entry (lookup, borrowed views, removal), the
 * selector index they are filed in, the intermediates their SVIDs share,
 * the release of an SVID (key wiped) and of JWT-SVIDs (tokens wiped),
 * change sets (cache.h) and the generation. It calls none of the cache's
 * other files.
 *
 * Ownership: a record owns its entry, leaf and key and holds one reference
 * to its tail; a bucket owns its array of record pointers; a change record
 * owns its IDs and old selectors (freed by ly_cache_changes_cleanup).
 * cache_rec_destroy frees everything a record owns and takes it out of
 * every map and array first.
 */
#include "agent/cache_internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/buf.h"
#include "lib/log.h"

/* Grows an array of pointers to hold `need`. */
bool
cache_grow_ptrs(void *arrp, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return true;
	size_t ncap = *cap == 0 ? 2 : *cap * 2;
	if (ncap < need)
		ncap = need;
	void *old;
	memcpy(&old, arrp, sizeof(old));
	void *p = realloc(old, ncap * elem);
	if (p == NULL)
		return false;
	memcpy(arrp, &p, sizeof(p));
	*cap = ncap;
	return true;
}

/* ---- change sets ---- */

void
ly_cache_changes_init(struct ly_cache_changes *cs)
{
	memset(cs, 0, sizeof(*cs));
}

void
ly_cache_changes_cleanup(struct ly_cache_changes *cs)
{
	if (cs == NULL)
		return;
	for (size_t i = 0; i < cs->n; i++) {
		free(cs->v[i].entry_id);
		free(cs->v[i].spiffe_id);
		ly_selectors_free(cs->v[i].old_selectors, cs->v[i].n_old_selectors);
	}
	free(cs->v);
	ly_cache_changes_init(cs);
}

bool
ly_cache_changes_empty(const struct ly_cache_changes *cs)
{
	return cs->n == 0 && !cs->bundles_changed && !cs->all;
}

/*
 * Records a change. Takes `old_sels` in every case. A change that cannot
 * be recorded (out of memory) sets cs->all, so that every stream is
 * treated as affected rather than one missing an update.
 */
void
cache_record(struct ly_cache_changes *cs, enum ly_cache_change_kind kind, const struct ly_entry *e, bool needs_svid,
    struct ly_selector *old_sels, size_t n_old)
{
	if (cs == NULL) {
		ly_selectors_free(old_sels, n_old);
		return;
	}
	struct ly_cache_change ch;
	memset(&ch, 0, sizeof(ch));
	ch.kind = kind;
	ch.needs_svid = needs_svid;
	ch.entry_id = strdup(cache_or_empty(e->entry_id));
	ch.spiffe_id = strdup(cache_or_empty(e->spiffe_id));
	ch.old_selectors = old_sels;
	ch.n_old_selectors = n_old;
	if (ch.entry_id == NULL || ch.spiffe_id == NULL || !cache_grow_ptrs(&cs->v, &cs->cap, cs->n + 1, sizeof(*cs->v))) {
		free(ch.entry_id);
		free(ch.spiffe_id);
		ly_selectors_free(old_sels, n_old);
		cs->all = true;
		return;
	}
	cs->v[cs->n++] = ch;
}

/* Bumps the generation when `cs` (or the local flag) says something changed. */
void
cache_finish(struct ly_cache *c, bool changed, struct ly_cache_changes *cs)
{
	if (changed)
		c->generation++;
	if (cs != NULL)
		cs->generation = c->generation;
}

/* ---- interned intermediates ---- */

struct cache_tail *
cache_tail_get(struct ly_cache *c, const uint8_t *der, size_t len, struct ly_error *err)
{
	struct ly_keymap_node *n = ly_keymap_find(&c->tails, der, len);
	if (n != NULL) {
		struct cache_tail *t = LY_KEYMAP_ENTRY(n, struct cache_tail, node);
		t->refs++;
		return t;
	}
	struct cache_tail *t = malloc(sizeof(*t) + len);
	if (t == NULL) {
		(void)ly_error_set(err, LY_E_NOMEM, "cache: allocating intermediates");
		return NULL;
	}
	memset(t, 0, sizeof(*t));
	memcpy(t->der, der, len);
	t->len = len;
	t->refs = 1;
	t->node.key = t->der;
	t->node.key_len = len;
	if (ly_keymap_insert(&c->tails, &t->node, err) != LY_OK) {
		free(t);
		return NULL;
	}
	return t;
}

void
cache_tail_put(struct ly_cache *c, struct cache_tail *t)
{
	if (t == NULL || --t->refs > 0)
		return;
	ly_keymap_remove(&c->tails, &t->node);
	free(t);
}

/* ---- records ---- */

struct cache_rec *
cache_find_rec(const struct ly_cache *c, const char *entry_id)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&c->byid, entry_id);
	return n != NULL ? LY_KEYMAP_ENTRY(n, struct cache_rec, node) : NULL;
}

void
cache_fill_item(const struct cache_rec *r, struct ly_cache_item *out)
{
	memset(out, 0, sizeof(*out));
	out->entry = r->entry;
	out->has_svid = r->has_svid;
	out->stale = r->stale;
	if (r->has_svid) {
		out->leaf.der = r->leaf;
		out->leaf.len = r->leaf_len;
		if (r->tail != NULL) {
			out->intermediates.der = r->tail->der;
			out->intermediates.len = r->tail->len;
		}
		out->key.der = r->key;
		out->key.len = r->key_len;
		out->not_before = r->not_before;
		out->not_after = r->not_after;
		out->renew_at_ms = r->renew_at_ms;
	}
}

/* Releases the SVID of `r`, wiping its key. */
void
cache_svid_release(struct ly_cache *c, struct cache_rec *r)
{
	if (!r->has_svid)
		return;
	OPENSSL_clear_free(r->key, r->key_len);
	free(r->leaf);
	cache_tail_put(c, r->tail);
	r->key = r->leaf = NULL;
	r->key_len = r->leaf_len = 0;
	r->tail = NULL;
	r->not_before = r->not_after = r->renew_at_ms = 0;
	r->has_svid = false;
	r->stale = false;
	c->nsvids--;
}

/* ---- the selector index ---- */

ly_status
cache_index_add(struct ly_cache *c, struct cache_rec *r, struct ly_error *err)
{
	const struct ly_entry *e = r->entry;
	if (e->node || e->n_selectors == 0)
		return LY_OK;
	/*
	 * Any one of the entry's selectors is a correct place to file it (a
	 * caller must hold them all); the one whose bucket is smallest now
	 * keeps buckets short when many entries share a selector (a common
	 * unix:gid or k8s:ns beside a distinct one).
	 */
	char name[LY_SELECTOR_MAX + 1], best[LY_SELECTOR_MAX + 1];
	size_t best_n = SIZE_MAX;
	struct cache_bucket *b = NULL;
	for (size_t i = 0; i < e->n_selectors && best_n > 0; i++) {
		ly_status rc = ly_selector_format(&e->selectors[i], name, sizeof(name), err);
		if (rc != LY_OK)
			return rc;
		struct ly_keymap_node *n = ly_keymap_find(&c->bysel, name, strlen(name));
		struct cache_bucket *cand = n != NULL ? LY_KEYMAP_ENTRY(n, struct cache_bucket, node) : NULL;
		size_t cn = cand != NULL ? cand->n : 0;
		if (cn < best_n) {
			best_n = cn;
			b = cand;
			memcpy(best, name, strlen(name) + 1);
		}
	}
	if (b == NULL) {
		size_t len = strlen(best);
		b = calloc(1, sizeof(*b) + len + 1);
		if (b == NULL)
			return ly_error_set(err, LY_E_NOMEM, "cache: allocating the selector index");
		memcpy(b->name, best, len + 1);
		b->name_len = len;
		b->node.key = (const uint8_t *)b->name;
		b->node.key_len = len;
		ly_status rc = ly_keymap_insert(&c->bysel, &b->node, err);
		if (rc != LY_OK) {
			free(b);
			return rc;
		}
	}
	if (!cache_grow_ptrs(&b->recs, &b->cap, b->n + 1, sizeof(*b->recs))) {
		if (b->n == 0) {
			ly_keymap_remove(&c->bysel, &b->node);
			free(b->recs);
			free(b);
		}
		return ly_error_set(err, LY_E_NOMEM, "cache: growing the selector index");
	}
	r->bucket = b;
	r->bucket_slot = b->n;
	b->recs[b->n++] = r;
	return LY_OK;
}

void
cache_index_remove(struct ly_cache *c, struct cache_rec *r)
{
	struct cache_bucket *b = r->bucket;
	if (b == NULL)
		return;
	b->n--;
	if (r->bucket_slot != b->n) {
		b->recs[r->bucket_slot] = b->recs[b->n];
		b->recs[r->bucket_slot]->bucket_slot = r->bucket_slot;
	}
	r->bucket = NULL;
	r->bucket_slot = 0;
	if (b->n == 0) {
		ly_keymap_remove(&c->bysel, &b->node);
		free(b->recs);
		free(b);
	}
}

/* ---- JWT-SVIDs and removal ---- */

void
cache_jwt_release(struct ly_cache *c, struct cache_jwt *j)
{
	ly_keymap_remove(&c->jwts, &j->node);
	c->njwt--;
	if (j->slot != c->njwt) {
		c->jwtv[j->slot] = c->jwtv[c->njwt];
		c->jwtv[j->slot]->slot = j->slot;
	}
	free(j->kbytes);
	free(j->entry_id);
	ly_free_secret_str(j->token);
	free(j);
}

void
cache_jwt_drop_entry(struct ly_cache *c, const char *entry_id)
{
	for (size_t i = c->njwt; i > 0; i--) {
		if (strcmp(c->jwtv[i - 1]->entry_id, entry_id) == 0)
			cache_jwt_release(c, c->jwtv[i - 1]);
	}
}

/* Removes and frees `r` entirely (the caller records the change). */
void
cache_rec_destroy(struct ly_cache *c, struct cache_rec *r)
{
	cache_svid_release(c, r);
	cache_index_remove(c, r);
	cache_jwt_drop_entry(c, r->entry->entry_id);
	ly_keymap_remove(&c->byid, &r->node);
	c->nrecs--;
	if (r->slot != c->nrecs) {
		c->recs[r->slot] = c->recs[c->nrecs];
		c->recs[r->slot]->slot = r->slot;
	}
	ly_entry_free(r->entry);
	free(r);
}

void
cache_rec_delete(struct ly_cache *c, struct cache_rec *r, struct ly_cache_changes *cs)
{
	struct ly_selector *old = NULL;
	size_t nold = 0;
	/* Record first: the record copies the IDs it needs from the entry. */
	struct ly_entry *e = r->entry;
	if (cs != NULL) {
		/* Copy rather than steal: rec_destroy still needs the entry whole. */
		if (ly_selectors_copy(e->selectors, e->n_selectors, &old, NULL) == LY_OK)
			nold = e->n_selectors;
		else
			cs->all = true;
	}
	cache_record(cs, LY_CACHE_DELETED, e, false, old, nold);
	cache_rec_destroy(c, r);
}
