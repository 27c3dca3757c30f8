/* cache.c: see cache.h. */
#include "agent/cache.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "agent/keymap.h"
#include "lib/caps.h"
#include "lib/log.h"
#include "lib/spiffeid.h"

/* Intermediates shared by the SVIDs one signing CA issued. */
struct tail {
	struct ly_keymap_node node; /* key: der */
	size_t refs;
	size_t len;
	uint8_t der[];
};

/*
 * The selector index: each workload entry is filed under one of its
 * selectors (see index_add). An entry can only match a caller holding all
 * its selectors, so the entries filed under the caller's own selectors are
 * all the candidates there are.
 */
struct selbucket {
	struct ly_keymap_node node; /* key: name */
	struct rec **recs;
	size_t n, cap;
	size_t name_len;
	char name[]; /* "type:value" */
};

struct rec {
	struct ly_keymap_node node; /* key: entry->entry_id */
	struct ly_entry *entry;
	size_t slot;               /* index in cache->recs */
	struct selbucket *bucket;  /* NULL for node entries */
	size_t bucket_slot;
	uint8_t *leaf;
	size_t leaf_len;
	uint8_t *key; /* PKCS#8, wiped on release */
	size_t key_len;
	struct tail *tail; /* NULL when the chain is the leaf alone */
	int64_t not_before, not_after, renew_at_ms;
	uint64_t mark;
	bool has_svid, stale;
};

struct jwtrec {
	struct ly_keymap_node node; /* key: kbytes */
	uint8_t *kbytes;
	size_t klen;
	size_t slot;
	char *entry_id;
	char *token; /* bearer secret, wiped on release */
	int64_t issued_at, expires_at;
};

struct ly_cache {
	char td[LY_TRUST_DOMAIN_MAX + 1];
	uint64_t generation;
	int64_t revision;
	uint64_t mark;
	struct ly_keymap byid;
	struct rec **recs;
	size_t nrecs, caprecs;
	size_t nsvids;
	struct ly_keymap bysel;
	struct ly_keymap tails;
	struct ly_keymap jwts;
	struct jwtrec **jwtv;
	size_t njwt, capjwt;
	struct ly_bundle_set *bundles;
};

/* Grows an array of pointers to hold `need`. */
static bool
grow_ptrs(void *arrp, size_t *cap, size_t need, size_t elem)
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

static const char *
or_empty(const char *s)
{
	return s != NULL ? s : "";
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
static void
record(struct ly_cache_changes *cs, enum ly_cache_change_kind kind, const struct ly_entry *e, bool needs_svid,
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
	ch.entry_id = strdup(or_empty(e->entry_id));
	ch.spiffe_id = strdup(or_empty(e->spiffe_id));
	ch.old_selectors = old_sels;
	ch.n_old_selectors = n_old;
	if (ch.entry_id == NULL || ch.spiffe_id == NULL || !grow_ptrs(&cs->v, &cs->cap, cs->n + 1, sizeof(*cs->v))) {
		free(ch.entry_id);
		free(ch.spiffe_id);
		ly_selectors_free(old_sels, n_old);
		cs->all = true;
		return;
	}
	cs->v[cs->n++] = ch;
}

/* ---- interned intermediates ---- */

static struct tail *
tail_get(struct ly_cache *c, const uint8_t *der, size_t len, struct ly_error *err)
{
	struct ly_keymap_node *n = ly_keymap_find(&c->tails, der, len);
	if (n != NULL) {
		struct tail *t = LY_KEYMAP_ENTRY(n, struct tail, node);
		t->refs++;
		return t;
	}
	struct tail *t = malloc(sizeof(*t) + len);
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

static void
tail_put(struct ly_cache *c, struct tail *t)
{
	if (t == NULL || --t->refs > 0)
		return;
	ly_keymap_remove(&c->tails, &t->node);
	free(t);
}

/* ---- records ---- */

static struct rec *
find_rec(const struct ly_cache *c, const char *entry_id)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&c->byid, entry_id);
	return n != NULL ? LY_KEYMAP_ENTRY(n, struct rec, node) : NULL;
}

static void
fill_item(const struct rec *r, struct ly_cache_item *out)
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
static void
svid_release(struct ly_cache *c, struct rec *r)
{
	if (!r->has_svid)
		return;
	OPENSSL_clear_free(r->key, r->key_len);
	free(r->leaf);
	tail_put(c, r->tail);
	r->key = r->leaf = NULL;
	r->key_len = r->leaf_len = 0;
	r->tail = NULL;
	r->not_before = r->not_after = r->renew_at_ms = 0;
	r->has_svid = false;
	r->stale = false;
	c->nsvids--;
}

static ly_status
index_add(struct ly_cache *c, struct rec *r, struct ly_error *err)
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
	struct selbucket *b = NULL;
	for (size_t i = 0; i < e->n_selectors && best_n > 0; i++) {
		ly_status rc = ly_selector_format(&e->selectors[i], name, sizeof(name), err);
		if (rc != LY_OK)
			return rc;
		struct ly_keymap_node *n = ly_keymap_find(&c->bysel, name, strlen(name));
		struct selbucket *cand = n != NULL ? LY_KEYMAP_ENTRY(n, struct selbucket, node) : NULL;
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
	if (!grow_ptrs(&b->recs, &b->cap, b->n + 1, sizeof(*b->recs))) {
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

static void
index_remove(struct ly_cache *c, struct rec *r)
{
	struct selbucket *b = r->bucket;
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

static void
jwt_release(struct ly_cache *c, struct jwtrec *j)
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

static void
jwt_drop_entry(struct ly_cache *c, const char *entry_id)
{
	for (size_t i = c->njwt; i > 0; i--) {
		if (strcmp(c->jwtv[i - 1]->entry_id, entry_id) == 0)
			jwt_release(c, c->jwtv[i - 1]);
	}
}

/* Removes and frees `r` entirely (the caller records the change). */
static void
rec_destroy(struct ly_cache *c, struct rec *r)
{
	svid_release(c, r);
	index_remove(c, r);
	jwt_drop_entry(c, r->entry->entry_id);
	ly_keymap_remove(&c->byid, &r->node);
	c->nrecs--;
	if (r->slot != c->nrecs) {
		c->recs[r->slot] = c->recs[c->nrecs];
		c->recs[r->slot]->slot = r->slot;
	}
	ly_entry_free(r->entry);
	free(r);
}

/* Moves the selectors out of `e` (for a change record). */
static void
steal_selectors(struct ly_entry *e, struct ly_selector **out, size_t *n)
{
	*out = e->selectors;
	*n = e->n_selectors;
	e->selectors = NULL;
	e->n_selectors = 0;
}

static void
rec_delete(struct ly_cache *c, struct rec *r, struct ly_cache_changes *cs)
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
	record(cs, LY_CACHE_DELETED, e, false, old, nold);
	rec_destroy(c, r);
}

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
		rec_destroy(c, c->recs[c->nrecs - 1]);
	while (c->njwt > 0)
		jwt_release(c, c->jwtv[c->njwt - 1]);
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
	fill_item(c->recs[i], out);
}

bool
ly_cache_get(const struct ly_cache *c, const char *entry_id, struct ly_cache_item *out)
{
	struct rec *r = find_rec(c, entry_id);
	if (r == NULL)
		return false;
	fill_item(r, out);
	return true;
}

/* Bumps the generation when `cs` (or the local flag) says something changed. */
static void
finish(struct ly_cache *c, bool changed, struct ly_cache_changes *cs)
{
	if (changed)
		c->generation++;
	if (cs != NULL)
		cs->generation = c->generation;
}

/* ---- entries ---- */

static bool
str_eq(const char *a, const char *b)
{
	return strcmp(or_empty(a), or_empty(b)) == 0;
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
	struct rec *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return ly_error_set(err, LY_E_NOMEM, "cache: allocating an entry");
	if (!grow_ptrs(&c->recs, &c->caprecs, c->nrecs + 1, sizeof(*c->recs))) {
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
	rc = index_add(c, r, err);
	if (rc != LY_OK) {
		ly_keymap_remove(&c->byid, &r->node);
		free(r);
		return rc;
	}
	r->slot = c->nrecs;
	c->recs[c->nrecs++] = r;
	record(cs, LY_CACHE_CREATED, e, !e->node, NULL, 0);
	return LY_OK;
}

/* Replaces the entry of `r` by `e` (different content). Takes `e` on success. */
static ly_status
rec_update(struct ly_cache *c, struct rec *r, struct ly_entry *e, struct ly_cache_changes *cs,
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
		index_remove(c, r);
		r->entry = e;
		ly_status rc = index_add(c, r, err);
		if (rc != LY_OK) {
			/* Put it back under its old entry: nothing changed. */
			r->entry = old;
			if (index_add(c, r, NULL) != LY_OK)
				log_error("cache: entry %s left out of the selector index (out of memory)",
				    old->entry_id);
			return rc;
		}
	}
	r->entry = e;
	ly_keymap_rekey_same(&r->node, (const uint8_t *)e->entry_id);
	if (e->node) {
		svid_release(c, r);
	} else if (id_changed || old->node) {
		/* A new ID, or a node entry turned workload entry: issue one now. */
		svid_release(c, r);
		needs_svid = true;
	} else if (r->has_svid && params_changed) {
		r->stale = true;
		needs_svid = true;
	}
	if (jwt_changed)
		jwt_drop_entry(c, e->entry_id);
	struct ly_selector *old_sels = NULL;
	size_t n_old = 0;
	if (sels_changed)
		steal_selectors(old, &old_sels, &n_old);
	record(cs, LY_CACHE_UPDATED, e, needs_svid, old_sels, n_old);
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
		if (e != NULL && e->entry_id != NULL && find_rec(c, e->entry_id) == NULL)
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
		struct rec *r = find_rec(c, e->entry_id);
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
			struct rec *r = c->recs[i - 1];
			if (r->mark != mark) {
				rec_delete(c, r, cs);
				changed = true;
			}
		}
	} else {
		for (size_t i = 0; i < u->n_deleted; i++) {
			if (u->deleted_ids == NULL || u->deleted_ids[i] == NULL)
				continue;
			struct rec *r = find_rec(c, u->deleted_ids[i]);
			if (r != NULL) {
				rec_delete(c, r, cs);
				changed = true;
			}
		}
	}
	if (u->snapshot || u->revision > c->revision)
		c->revision = u->revision;
out:
	finish(c, changed, cs);
	return rc;
}

/* ---- X.509-SVIDs ---- */

ly_status
ly_cache_set_svid(struct ly_cache *c, const char *entry_id, const char *spiffe_id, struct ly_buf *chain,
    struct ly_buf *key, int64_t not_before, int64_t not_after, int64_t renew_at_ms, struct ly_cache_changes *cs,
    struct ly_error *err)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t count = 0;

	struct rec *r = entry_id != NULL ? find_rec(c, entry_id) : NULL;
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

	struct tail *t = NULL;
	size_t leaf_len = spans[0].len;
	if (count > 1) {
		t = tail_get(c, chain->data + spans[1].off, chain->len - spans[1].off, err);
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
	svid_release(c, r);
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
	record(cs, LY_CACHE_SVID_SET, r->entry, false, NULL, 0);
	finish(c, true, cs);
	return LY_OK;
}

bool
ly_cache_mark_stale(struct ly_cache *c, const char *entry_id)
{
	struct rec *r = find_rec(c, entry_id);
	if (r == NULL || !r->has_svid)
		return false;
	r->stale = true;
	return true;
}

bool
ly_cache_drop_svid(struct ly_cache *c, const char *entry_id, struct ly_cache_changes *cs)
{
	struct rec *r = find_rec(c, entry_id);
	if (r == NULL || !r->has_svid)
		return false;
	svid_release(c, r);
	record(cs, LY_CACHE_SVID_DROPPED, r->entry, true, NULL, 0);
	finish(c, true, cs);
	return true;
}

size_t
ly_cache_expire(struct ly_cache *c, int64_t now, struct ly_cache_changes *cs)
{
	size_t n = 0;
	for (size_t i = 0; i < c->nrecs; i++) {
		struct rec *r = c->recs[i];
		if (r->has_svid && r->not_after <= now) {
			svid_release(c, r);
			record(cs, LY_CACHE_SVID_DROPPED, r->entry, true, NULL, 0);
			n++;
		}
	}
	finish(c, n > 0, cs);
	return n;
}

int64_t
ly_cache_next_expiry(const struct ly_cache *c)
{
	int64_t t = INT64_MAX;
	for (size_t i = 0; i < c->nrecs; i++) {
		const struct rec *r = c->recs[i];
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
		struct rec *r = c->recs[i];
		struct ly_cache_item item;
		if (!r->has_svid)
			continue;
		fill_item(r, &item);
		if (keep(&item, arg))
			continue;
		svid_release(c, r);
		record(cs, LY_CACHE_SVID_DROPPED, r->entry, true, NULL, 0);
		n++;
	}
	finish(c, n > 0, cs);
	return n;
}

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
	const struct selbucket **seen = NULL;
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
		const struct selbucket *b = LY_KEYMAP_ENTRY(n, struct selbucket, node);
		bool dup = false;
		for (size_t k = 0; k < nseen && !dup; k++)
			dup = seen[k] == b;
		if (dup)
			continue;
		seen[nseen++] = b;
		for (size_t k = 0; k < b->n; k++) {
			const struct rec *r = b->recs[k];
			if (!ly_selectors_match(r->entry->selectors, r->entry->n_selectors, have, m))
				continue;
			out->n_entitled++;
			struct ly_cache_item it;
			fill_item(r, &it);
			if (!usable(&it, flags, now))
				continue;
			if (!grow_ptrs(&out->v, &out->cap, out->n + 1, sizeof(*out->v))) {
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
		const struct rec *r = find_rec(c, ch->entry_id);
		if (r != NULL && !r->entry->node &&
		    ly_selectors_match(r->entry->selectors, r->entry->n_selectors, have, m))
			return true;
	}
	return false;
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
	finish(c, changed, cs);
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

/* ---- JWT-SVIDs ---- */

static int
str_ptr_cmp(const void *pa, const void *pb)
{
	const char *const *a = pa, *const *b = pb;
	return strcmp(*a, *b);
}

static void
put_u32(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * The cache key of (spiffe_id, audience set): every string length-prefixed
 * (so no two sets share a key, whatever bytes an audience holds), the
 * audiences sorted and deduplicated. NULL on a bad argument or no memory.
 */
static uint8_t *
jwt_key(const char *spiffe_id, const char *const *aud, size_t naud, size_t *len)
{
	const char *sorted[LY_JWT_AUDIENCES_MAX];
	if (spiffe_id == NULL || aud == NULL || naud == 0 || naud > LY_JWT_AUDIENCES_MAX)
		return NULL;
	size_t total = 4 + strlen(spiffe_id);
	for (size_t i = 0; i < naud; i++) {
		if (aud[i] == NULL)
			return NULL;
		sorted[i] = aud[i];
	}
	qsort(sorted, naud, sizeof(sorted[0]), str_ptr_cmp);
	for (size_t i = 0; i < naud; i++)
		if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0)
			total += 4 + strlen(sorted[i]);
	uint8_t *k = malloc(total);
	if (k == NULL)
		return NULL;
	size_t off = 0, n = strlen(spiffe_id);
	put_u32(k, n);
	memcpy(k + 4, spiffe_id, n);
	off = 4 + n;
	for (size_t i = 0; i < naud; i++) {
		if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
			continue;
		n = strlen(sorted[i]);
		put_u32(k + off, n);
		memcpy(k + off + 4, sorted[i], n);
		off += 4 + n;
	}
	*len = total;
	return k;
}

/* Reusable while less than half of the lifetime has passed. */
static bool
jwt_fresh(const struct jwtrec *j, int64_t now)
{
	return now < j->issued_at + (j->expires_at - j->issued_at) / 2;
}

const char *
ly_cache_jwt_get(const struct ly_cache *c, const char *spiffe_id, const char *const *aud, size_t naud, int64_t now)
{
	size_t klen = 0;
	uint8_t *k = jwt_key(spiffe_id, aud, naud, &klen);
	if (k == NULL)
		return NULL;
	struct ly_keymap_node *n = ly_keymap_find(&c->jwts, k, klen);
	free(k);
	if (n == NULL)
		return NULL;
	const struct jwtrec *j = LY_KEYMAP_ENTRY(n, struct jwtrec, node);
	return jwt_fresh(j, now) ? j->token : NULL;
}

ly_status
ly_cache_jwt_put(struct ly_cache *c, const char *entry_id, const char *spiffe_id, const char *const *aud,
    size_t naud, const char *token, int64_t issued_at, int64_t expires_at, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct jwtrec *j = NULL;
	char *tok = NULL;

	if (entry_id == NULL || spiffe_id == NULL || token == NULL)
		return ly_error_set(err, LY_E_INVALID, "JWT cache: entry, SPIFFE ID and token are required");
	if (naud == 0 || naud > LY_JWT_AUDIENCES_MAX)
		return ly_error_set(err, naud == 0 ? LY_E_INVALID : LY_E_LIMIT,
		    "JWT cache: 1 to %d audiences", LY_JWT_AUDIENCES_MAX);
	if (issued_at >= expires_at)
		return ly_error_set(err, LY_E_INVALID, "JWT cache: token expires before it is issued");
	if (find_rec(c, entry_id) == NULL)
		return ly_error_set(err, LY_E_NOT_FOUND, "JWT cache: no entry %.64s", entry_id);
	tok = strdup(token);
	if (tok == NULL)
		return ly_error_set(err, LY_E_NOMEM, "JWT cache: copying the token");
	size_t klen = 0;
	uint8_t *k = jwt_key(spiffe_id, aud, naud, &klen);
	if (k == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "JWT cache: building the key");
		goto out;
	}
	struct ly_keymap_node *n = ly_keymap_find(&c->jwts, k, klen);
	if (n != NULL) {
		/* Same key: replace the token in place. */
		struct jwtrec *old = LY_KEYMAP_ENTRY(n, struct jwtrec, node);
		char *eid = strdup(entry_id);
		if (eid == NULL) {
			free(k);
			rc = ly_error_set(err, LY_E_NOMEM, "JWT cache: copying the entry ID");
			goto out;
		}
		free(old->entry_id);
		old->entry_id = eid;
		ly_free_secret_str(old->token);
		old->token = tok;
		tok = NULL;
		old->issued_at = issued_at;
		old->expires_at = expires_at;
		free(k);
		goto out;
	}
	if (c->njwt >= LY_AGENT_JWT_CACHE_MAX) {
		for (size_t i = c->njwt; i > 0; i--)
			if (!jwt_fresh(c->jwtv[i - 1], issued_at))
				jwt_release(c, c->jwtv[i - 1]);
		if (c->njwt >= LY_AGENT_JWT_CACHE_MAX) {
			size_t oldest = 0;
			for (size_t i = 1; i < c->njwt; i++)
				if (c->jwtv[i]->issued_at < c->jwtv[oldest]->issued_at)
					oldest = i;
			jwt_release(c, c->jwtv[oldest]);
		}
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL || (j->entry_id = strdup(entry_id)) == NULL ||
	    !grow_ptrs(&c->jwtv, &c->capjwt, c->njwt + 1, sizeof(*c->jwtv))) {
		free(k);
		rc = ly_error_set(err, LY_E_NOMEM, "JWT cache: allocating");
		goto out;
	}
	j->kbytes = k;
	j->klen = klen;
	j->node.key = k;
	j->node.key_len = klen;
	rc = ly_keymap_insert(&c->jwts, &j->node, err);
	if (rc != LY_OK)
		goto out;
	j->token = tok;
	tok = NULL;
	j->issued_at = issued_at;
	j->expires_at = expires_at;
	j->slot = c->njwt;
	c->jwtv[c->njwt++] = j;
	j = NULL;
out:
	if (j != NULL) {
		free(j->kbytes);
		free(j->entry_id);
		free(j);
	}
	ly_free_secret_str(tok);
	return rc;
}

size_t
ly_cache_jwt_count(const struct ly_cache *c)
{
	return c->njwt;
}
