/* rotation.c: see rotation.h. */
#include "agent/rotation.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "agent/keymap.h"

/* 2^64 / golden ratio: the Weyl step with the most even spread. */
#define GOLDEN_STEP 0x9E3779B97F4A7C15ULL
/* Certificate times beyond +-31,000 years are clamped (no overflow in ms). */
#define TIME_CLAMP 1000000000000LL

void
ly_rotation_rng_seed(struct ly_rotation_rng *r, uint64_t seed)
{
	/* splitmix64's finalizer: nearby seeds start far apart. */
	uint64_t z = seed + GOLDEN_STEP;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	r->weyl = z ^ (z >> 31);
}

ly_status
ly_rotation_rng_seed_random(struct ly_rotation_rng *r, struct ly_error *err)
{
	uint8_t b[8];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "rotation: seeding");
	uint64_t v = 0;
	for (size_t i = 0; i < sizeof(b); i++)
		v = (v << 8) | b[i];
	r->weyl = v;
	return LY_OK;
}

static int64_t
clamp_time(int64_t t)
{
	if (t > TIME_CLAMP)
		return TIME_CLAMP;
	if (t < -TIME_CLAMP)
		return -TIME_CLAMP;
	return t;
}

/* not_before in ms and the lifetime in ms (0 for an empty or inverted window). */
static void
window_ms(int64_t not_before, int64_t not_after, int64_t *nb_ms, int64_t *life_ms)
{
	int64_t nb = clamp_time(not_before), na = clamp_time(not_after);
	*nb_ms = nb * 1000;
	*life_ms = na > nb ? (na - nb) * 1000 : 0;
}

int64_t
ly_rotation_earliest_ms(int64_t not_before, int64_t not_after)
{
	int64_t nb, life;
	window_ms(not_before, not_after, &nb, &life);
	/* ceil(life * 45 / 100) */
	return nb + (life * LY_ROTATION_MIN_PCT + 99) / 100;
}

int64_t
ly_rotation_latest_ms(int64_t not_before, int64_t not_after)
{
	int64_t nb, life;
	window_ms(not_before, not_after, &nb, &life);
	return nb + life * LY_ROTATION_MAX_PCT / 100;
}

int64_t
ly_rotation_draw(struct ly_rotation_rng *r, int64_t not_before, int64_t not_after)
{
	int64_t lo = ly_rotation_earliest_ms(not_before, not_after);
	int64_t hi = ly_rotation_latest_ms(not_before, not_after);
	r->weyl += GOLDEN_STEP;
	if (hi <= lo)
		return lo;
	/* u in [0, 1) as a 64-bit fraction, scaled to [0, hi - lo]. */
	uint64_t span = (uint64_t)(hi - lo) + 1;
	uint64_t off = (uint64_t)(((unsigned __int128)r->weyl * span) >> 64);
	return lo + (int64_t)off;
}

int64_t
ly_rotation_retry_ms(int64_t now_ms, unsigned attempt)
{
	int64_t d = LY_ROTATION_RETRY_MAX_MS;
	if (attempt < 15) {
		d = (int64_t)1000 << attempt;
		if (d > LY_ROTATION_RETRY_MAX_MS)
			d = LY_ROTATION_RETRY_MAX_MS;
	}
	return now_ms + d;
}

/* ---- the scheduler ---- */

struct item {
	struct ly_keymap_node node; /* key: key */
	char *key;
	int64_t due, earliest;
	uint64_t seq; /* insertion order: ties in due time go first-in first-out */
	size_t pos;   /* index in the heap */
};

struct ly_rotation_sched {
	struct ly_keymap map;
	struct item **heap;
	size_t n, cap;
	uint64_t seq;
};

void
ly_rotation_batch_init(struct ly_rotation_batch *b)
{
	memset(b, 0, sizeof(*b));
}

void
ly_rotation_batch_cleanup(struct ly_rotation_batch *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->n; i++)
		free(b->keys[i]);
	free(b->keys);
	ly_rotation_batch_init(b);
}

ly_status
ly_rotation_sched_new(struct ly_rotation_sched **out, struct ly_error *err)
{
	*out = NULL;
	struct ly_rotation_sched *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ly_error_set(err, LY_E_NOMEM, "scheduler: allocating");
	ly_status rc = ly_keymap_init(&s->map, err);
	if (rc != LY_OK) {
		free(s);
		return rc;
	}
	*out = s;
	return LY_OK;
}

static void
item_free(struct item *it)
{
	if (it == NULL)
		return;
	free(it->key);
	free(it);
}

void
ly_rotation_sched_free(struct ly_rotation_sched *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++)
		item_free(s->heap[i]);
	free(s->heap);
	ly_keymap_cleanup(&s->map);
	free(s);
}

static bool
before(const struct item *a, const struct item *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void
place(struct ly_rotation_sched *s, struct item *it, size_t pos)
{
	s->heap[pos] = it;
	it->pos = pos;
}

static void
sift_up(struct ly_rotation_sched *s, size_t pos)
{
	struct item *it = s->heap[pos];
	while (pos > 0) {
		size_t parent = (pos - 1) / 2;
		if (!before(it, s->heap[parent]))
			break;
		place(s, s->heap[parent], pos);
		pos = parent;
	}
	place(s, it, pos);
}

static void
sift_down(struct ly_rotation_sched *s, size_t pos)
{
	struct item *it = s->heap[pos];
	for (;;) {
		size_t l = 2 * pos + 1, best = pos;
		const struct item *bi = it;
		if (l < s->n && before(s->heap[l], bi)) {
			best = l;
			bi = s->heap[l];
		}
		if (l + 1 < s->n && before(s->heap[l + 1], bi))
			best = l + 1;
		if (best == pos)
			break;
		place(s, s->heap[best], pos);
		pos = best;
	}
	place(s, it, pos);
}

/* Takes `it` out of the heap and the map (not freed). */
static void
detach(struct ly_rotation_sched *s, struct item *it)
{
	size_t pos = it->pos;
	ly_keymap_remove(&s->map, &it->node);
	s->n--;
	if (pos != s->n) {
		struct item *moved = s->heap[s->n];
		place(s, moved, pos);
		sift_down(s, pos);
		sift_up(s, moved->pos);
	}
}

/* Puts a detached item back (capacity is there: it was in before). */
static ly_status
attach(struct ly_rotation_sched *s, struct item *it, struct ly_error *err)
{
	ly_status rc = ly_keymap_insert(&s->map, &it->node, err);
	if (rc != LY_OK)
		return rc;
	place(s, it, s->n++);
	sift_up(s, it->pos);
	return LY_OK;
}

ly_status
ly_rotation_sched_put(struct ly_rotation_sched *s, const char *key, int64_t due_ms, int64_t earliest_ms,
    struct ly_error *err)
{
	if (key == NULL)
		return ly_error_set(err, LY_E_INVALID, "scheduler: no key");
	if (earliest_ms > due_ms)
		earliest_ms = due_ms;
	struct ly_keymap_node *n = ly_keymap_find_str(&s->map, key);
	if (n != NULL) {
		struct item *it = LY_KEYMAP_ENTRY(n, struct item, node);
		it->due = due_ms;
		it->earliest = earliest_ms;
		it->seq = ++s->seq;
		sift_down(s, it->pos);
		sift_up(s, it->pos);
		return LY_OK;
	}
	if (s->n == s->cap) {
		size_t ncap = s->cap == 0 ? 16 : s->cap * 2;
		struct item **h = realloc(s->heap, ncap * sizeof(*h));
		if (h == NULL)
			return ly_error_set(err, LY_E_NOMEM, "scheduler: growing");
		s->heap = h;
		s->cap = ncap;
	}
	struct item *it = calloc(1, sizeof(*it));
	if (it == NULL || (it->key = strdup(key)) == NULL) {
		item_free(it);
		return ly_error_set(err, LY_E_NOMEM, "scheduler: allocating an item");
	}
	it->node.key = (const uint8_t *)it->key;
	it->node.key_len = strlen(it->key);
	it->due = due_ms;
	it->earliest = earliest_ms;
	it->seq = ++s->seq;
	ly_status rc = attach(s, it, err);
	if (rc != LY_OK)
		item_free(it);
	return rc;
}

bool
ly_rotation_sched_remove(struct ly_rotation_sched *s, const char *key)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&s->map, key);
	if (n == NULL)
		return false;
	struct item *it = LY_KEYMAP_ENTRY(n, struct item, node);
	detach(s, it);
	item_free(it);
	return true;
}

bool
ly_rotation_sched_get(const struct ly_rotation_sched *s, const char *key, int64_t *due_ms)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&s->map, key);
	if (n == NULL)
		return false;
	*due_ms = LY_KEYMAP_ENTRY(n, struct item, node)->due;
	return true;
}

size_t
ly_rotation_sched_count(const struct ly_rotation_sched *s)
{
	return s->n;
}

int64_t
ly_rotation_sched_next_ms(const struct ly_rotation_sched *s)
{
	return s->n > 0 ? s->heap[0]->due : INT64_MAX;
}

ly_status
ly_rotation_sched_pop_due(struct ly_rotation_sched *s, int64_t now_ms, int64_t window_ms, size_t max_batch,
    struct ly_rotation_batch *out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct item **skipped = NULL;
	size_t nskipped = 0;

	for (size_t i = 0; i < out->n; i++)
		free(out->keys[i]);
	out->n = 0;
	if (max_batch == 0)
		max_batch = LY_ROTATION_BATCH_MAX;
	if (window_ms < 0)
		window_ms = 0;
	if (s->n == 0 || s->heap[0]->due > now_ms)
		return LY_OK;
	size_t want = max_batch < s->n ? max_batch : s->n;
	if (out->cap < want) {
		char **k = realloc(out->keys, want * sizeof(*k));
		if (k == NULL)
			return ly_error_set(err, LY_E_NOMEM, "scheduler: allocating a batch");
		out->keys = k;
		out->cap = want;
	}
	/* Items inside the window whose earliest time is still ahead wait (set aside, put back). */
	size_t capskipped = 0;
	int64_t horizon = now_ms > INT64_MAX - window_ms ? INT64_MAX : now_ms + window_ms;
	while (out->n < max_batch && s->n > 0 && s->heap[0]->due <= horizon) {
		struct item *it = s->heap[0];
		if (it->earliest > now_ms) {
			if (nskipped == capskipped) {
				size_t ncap = capskipped == 0 ? 8 : capskipped * 2;
				struct item **g = realloc(skipped, ncap * sizeof(*g));
				if (g == NULL)
					break; /* the batch so far is good; the rest waits */
				skipped = g;
				capskipped = ncap;
			}
			detach(s, it);
			skipped[nskipped++] = it;
			continue;
		}
		detach(s, it);
		out->keys[out->n++] = it->key;
		it->key = NULL;
		item_free(it);
	}
	for (size_t i = 0; i < nskipped; i++) {
		/* Re-attaching cannot need memory: the map and heap held it a moment ago. */
		ly_status arc = attach(s, skipped[i], err);
		if (arc != LY_OK) {
			item_free(skipped[i]);
			rc = arc;
		}
	}
	free(skipped);
	return rc;
}

/* ---- glue with the cache ---- */

static ly_status
schedule_item(struct ly_rotation_sched *s, const struct ly_cache_item *it, int64_t now_ms, struct ly_error *err)
{
	if (it->entry->node) {
		(void)ly_rotation_sched_remove(s, it->entry->entry_id);
		return LY_OK;
	}
	if (!it->has_svid || it->stale)
		return ly_rotation_sched_put(s, it->entry->entry_id, now_ms, now_ms, err);
	return ly_rotation_sched_put(s, it->entry->entry_id, it->renew_at_ms,
	    ly_rotation_earliest_ms(it->not_before, it->not_after), err);
}

ly_status
ly_rotation_schedule_all(struct ly_rotation_sched *s, const struct ly_cache *c, int64_t now_ms, struct ly_error *err)
{
	for (size_t i = 0; i < ly_cache_count(c); i++) {
		struct ly_cache_item it;
		ly_cache_item_at(c, i, &it);
		LY_TRY(schedule_item(s, &it, now_ms, err));
	}
	return LY_OK;
}

ly_status
ly_rotation_apply_changes(struct ly_rotation_sched *s, const struct ly_cache *c, const struct ly_cache_changes *cs,
    int64_t now_ms, struct ly_error *err)
{
	if (cs->all)
		return ly_rotation_schedule_all(s, c, now_ms, err);
	for (size_t i = 0; i < cs->n; i++) {
		const struct ly_cache_change *ch = &cs->v[i];
		struct ly_cache_item it;
		if (!ly_cache_get(c, ch->entry_id, &it) || it.entry->node) {
			/* Deleted (now or by a later change of the same set), or a node entry. */
			(void)ly_rotation_sched_remove(s, ch->entry_id);
			continue;
		}
		/*
		 * Other updates leave the schedule alone: the item may be out in
		 * a renewal right now, and putting it back would renew it twice.
		 */
		if (ch->kind == LY_CACHE_SVID_SET || ch->needs_svid)
			LY_TRY(schedule_item(s, &it, now_ms, err));
	}
	return LY_OK;
}
