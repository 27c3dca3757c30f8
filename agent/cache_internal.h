/*
 * cache_internal.h: what the parts of the agent's cache (cache.h) share,
 * not for other modules. Two layers; calls only go down:
 *   cache.c        the cache's life cycle and accessors, the bundle set;
 *   cache_apply.c  entries: an update from the server applied as upserts
 *                  and deletions (ly_cache_apply);
 *   cache_svid.c   X.509-SVIDs: setting, dropping, expiring, filtering;
 *   cache_query.c  a caller's identities in default-identity order, and
 *                  which changes reach a caller;
 *   cache_jwt.c    the cached JWT-SVIDs: their keys, lookup, insertion
 *                  and eviction;
 * all over
 *   cache_rec.c    the records and what hangs off them: one record per
 *                  entry (lookup, views, removal with its SVID, index
 *                  place and JWT-SVIDs), the selector index, the interned
 *                  intermediates, change sets and the generation.
 * cache_rec.c calls none of the files above it.
 *
 * Ownership and lifetimes: struct ly_cache owns every record, bucket,
 * tail and JWT record below, and frees them in ly_cache_free. A record
 * (struct cache_rec) owns its entry (moved in by ly_cache_apply), its leaf
 * and its key (PKCS#8, wiped on release); it holds one reference to its
 * tail. A bucket owns its array, never the records in it. A key of a
 * keymap node points into the record that holds the node (keymap.h), so a
 * record leaves its maps before it is freed. Views (struct ly_cache_item)
 * are borrowed: valid until the next call that mutates the cache.
 * Threads: none; the agent's loop thread owns the cache.
 */
#ifndef LANYARD_AGENT_CACHE_INTERNAL_H
#define LANYARD_AGENT_CACHE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/cache.h"
#include "agent/keymap.h"
#include "lib/caps.h"
#include "lib/entry.h"
#include "lib/error.h"

/* Intermediates shared by the SVIDs one signing CA issued (refcounted, in c->tails). */
struct cache_tail {
	struct ly_keymap_node node; /* key: der */
	size_t refs;
	size_t len;
	uint8_t der[];
};

/*
 * The selector index: each workload entry is filed under one of its
 * selectors (see cache_index_add). An entry can only match a caller
 * holding all its selectors, so the entries filed under the caller's own
 * selectors are all the candidates there are.
 */
struct cache_bucket {
	struct ly_keymap_node node; /* key: name */
	struct cache_rec **recs;    /* owned array; the records are the cache's */
	size_t n, cap;
	size_t name_len;
	char name[]; /* "type:value" */
};

/* One entry and its current X.509-SVID. */
struct cache_rec {
	struct ly_keymap_node node;  /* key: entry->entry_id */
	struct ly_entry *entry;      /* owned */
	size_t slot;                 /* index in cache->recs */
	struct cache_bucket *bucket; /* NULL for node entries */
	size_t bucket_slot;
	uint8_t *leaf; /* owned */
	size_t leaf_len;
	uint8_t *key; /* owned: PKCS#8, wiped on release */
	size_t key_len;
	struct cache_tail *tail; /* one reference; NULL when the chain is the leaf alone */
	int64_t not_before, not_after, renew_at_ms;
	uint64_t mark; /* the last update that named it (a snapshot deletes the others) */
	bool has_svid, stale;
};

/* One cached JWT-SVID. */
struct cache_jwt {
	struct ly_keymap_node node; /* key: kbytes */
	uint8_t *kbytes;            /* owned */
	size_t klen;
	size_t slot;    /* index in cache->jwtv */
	char *entry_id; /* owned: dropped with this entry */
	char *token;    /* owned: a bearer secret, wiped on release */
	int64_t issued_at, expires_at;
};

struct ly_cache {
	char td[LY_TRUST_DOMAIN_MAX + 1];
	uint64_t generation;
	int64_t revision;
	uint64_t mark;
	struct ly_keymap byid; /* records by entry_id */
	struct cache_rec **recs;
	size_t nrecs, caprecs;
	size_t nsvids;
	struct ly_keymap bysel; /* buckets by selector (cache_query.c) */
	struct ly_keymap tails; /* interned intermediates (cache_svid.c) */
	struct ly_keymap jwts;  /* JWT-SVIDs by key (cache_jwt.c) */
	struct cache_jwt **jwtv;
	size_t njwt, capjwt;
	struct ly_bundle_set *bundles; /* owned; NULL before the first */
};

static inline const char *
cache_or_empty(const char *s)
{
	return s != NULL ? s : "";
}

/* ---- cache_rec.c ---- */

/*
 * Grows the array of `elem`-sized items at *arrp (a pointer to the array
 * pointer) to hold `need`, doubling. False (array unchanged) when out of
 * memory.
 */
bool cache_grow_ptrs(void *arrp, size_t *cap, size_t need, size_t elem);
/*
 * Records a change of entry `e` in `cs` (may be NULL). Takes `old_sels`
 * in every case. A change that cannot be recorded (out of memory) sets
 * cs->all, so that every stream is treated as affected rather than one
 * missing an update.
 */
void cache_record(struct ly_cache_changes *cs, enum ly_cache_change_kind kind, const struct ly_entry *e,
    bool needs_svid, struct ly_selector *old_sels, size_t n_old);
/* Bumps the generation when `changed`; tells `cs` (may be NULL) the generation. */
void cache_finish(struct ly_cache *c, bool changed, struct ly_cache_changes *cs);

/* The record of `entry_id`, borrowed; NULL when absent. */
struct cache_rec *cache_find_rec(const struct ly_cache *c, const char *entry_id);
/* A borrowed view of `r` into `out`. */
void cache_fill_item(const struct cache_rec *r, struct ly_cache_item *out);
/* Removes and frees `r` entirely: SVID, index place, JWT-SVIDs, entry (the caller records the change). */
void cache_rec_destroy(struct ly_cache *c, struct cache_rec *r);
/* Records `r`'s deletion in `cs` (with its selectors), then destroys it. */
void cache_rec_delete(struct ly_cache *c, struct cache_rec *r, struct ly_cache_changes *cs);

/*
 * Files workload entry `r` in the selector index under one of its
 * selectors (node entries and entries without selectors are not filed).
 * On failure nothing is filed.
 */
ly_status cache_index_add(struct ly_cache *c, struct cache_rec *r, struct ly_error *err) LY_MUST_CHECK;
/* Takes `r` out of the selector index (freeing a bucket left empty); unfiled is a no-op. */
void cache_index_remove(struct ly_cache *c, struct cache_rec *r);

/*
 * The interned copy of the intermediates `der` (len bytes), one reference
 * more (the caller's); NULL when out of memory. Released by cache_tail_put.
 */
struct cache_tail *cache_tail_get(struct ly_cache *c, const uint8_t *der, size_t len, struct ly_error *err);
/* Drops one reference, freeing the copy with the last. NULL is allowed. */
void cache_tail_put(struct ly_cache *c, struct cache_tail *t);
/* Releases the SVID of `r` (key wiped, tail reference dropped); none is a no-op. */
void cache_svid_release(struct ly_cache *c, struct cache_rec *r);

/* Removes and frees one cached JWT-SVID (token wiped). */
void cache_jwt_release(struct ly_cache *c, struct cache_jwt *j);
/* Drops every cached JWT-SVID minted for entry `entry_id`. */
void cache_jwt_drop_entry(struct ly_cache *c, const char *entry_id);

#endif /* LANYARD_AGENT_CACHE_INTERNAL_H */
