/* ratelimit.c: see ratelimit.h. */
#include "lib/ratelimit.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/queue.h"

#define MILLI 1000u

/* Refills `b` to `now_ms`; a new bucket starts full. */
static void
tbucket_refill(struct ly_tbucket *b, uint32_t rate, uint32_t burst, int64_t now_ms)
{
	uint64_t cap = (uint64_t)burst * MILLI;

	if (!b->started) {
		b->started = true;
		b->milli = cap;
		b->last_ms = now_ms;
		return;
	}
	if (now_ms > b->last_ms) {
		uint64_t dt = (uint64_t)(now_ms - b->last_ms);
		/* rate tokens a second = rate milli-tokens a millisecond; capped before it can overflow. */
		uint64_t add = rate == 0 ? 0 : dt >= cap ? cap : dt * rate;
		b->milli = add >= cap - (b->milli < cap ? b->milli : cap) ? cap : b->milli + add;
		b->last_ms = now_ms;
	}
	/* A clock that went back: no time passed, and the mark stays where it was. */
	if (b->milli > cap)
		b->milli = cap;
}

uint32_t
ly_tbucket_take(struct ly_tbucket *b, uint32_t rate, uint32_t burst, uint32_t want, bool partial, int64_t now_ms)
{
	tbucket_refill(b, rate, burst, now_ms);
	uint64_t have = b->milli / MILLI;
	uint32_t got = have >= want ? want : (partial ? (uint32_t)have : 0);
	b->milli -= (uint64_t)got * MILLI;
	return got;
}

int64_t
ly_tbucket_wait_ms(const struct ly_tbucket *b, uint32_t rate, uint32_t burst, uint32_t want, int64_t now_ms)
{
	struct ly_tbucket t = *b;

	if (want > burst)
		return INT64_MAX;
	tbucket_refill(&t, rate, burst, now_ms);
	uint64_t need = (uint64_t)want * MILLI;
	if (t.milli >= need)
		return 0;
	if (rate == 0)
		return INT64_MAX;
	return (int64_t)((need - t.milli + rate - 1) / rate);
}

/* ---- keyed limiter ------------------------------------------------------------------------- */

struct rl_node {
	struct ly_queue lru;    /* on ly_ratelimit.lru, most recent first */
	struct rl_node *next;   /* hash chain */
	uint64_t hash;
	struct ly_tbucket b;
	char key[];
};

struct ly_ratelimit {
	char name[64];
	uint32_t rate, burst;
	size_t max_keys, n_keys;
	struct rl_node **table;
	size_t mask; /* table size - 1 (a power of two) */
	struct ly_queue lru;
	uint64_t refused, refused_unlogged;
	int64_t last_log_ms;
	bool logged;
};

/* FNV-1a, 64 bits: keys are not chosen to collide cheaply here (chains are short, the table bounded). */
static uint64_t
rl_hash(const char *k, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)k[i];
		h *= 1099511628211ULL;
	}
	return h;
}

ly_status
ly_ratelimit_new(const struct ly_ratelimit_config *cfg, struct ly_ratelimit **out, struct ly_error *err)
{
	struct ly_ratelimit *rl;
	size_t size = 16;

	*out = NULL;
	if (cfg == NULL || cfg->rate == 0 || cfg->burst == 0 || cfg->max_keys == 0 ||
	    cfg->max_keys > LY_RATELIMIT_KEYS_MAX || cfg->burst > LY_RATELIMIT_BURST_MAX ||
	    cfg->rate > LY_RATELIMIT_BURST_MAX)
		return ly_error_set(err, LY_E_INVALID, "rate limit %s: rate, burst and keys must be 1..%d, 1..%d, 1..%d",
		    cfg != NULL && cfg->name != NULL ? cfg->name : "?", LY_RATELIMIT_BURST_MAX, LY_RATELIMIT_BURST_MAX,
		    LY_RATELIMIT_KEYS_MAX);
	while (size < cfg->max_keys)
		size *= 2;
	if ((rl = calloc(1, sizeof(*rl))) == NULL || (rl->table = calloc(size, sizeof(*rl->table))) == NULL) {
		free(rl);
		return ly_error_set(err, LY_E_NOMEM, "rate limit: out of memory");
	}
	(void)snprintf(rl->name, sizeof(rl->name), "%s", cfg->name != NULL ? cfg->name : "");
	rl->rate = cfg->rate;
	rl->burst = cfg->burst;
	rl->max_keys = cfg->max_keys;
	rl->mask = size - 1;
	ly_queue_init(&rl->lru);
	*out = rl;
	return LY_OK;
}

void
ly_ratelimit_free(struct ly_ratelimit *rl)
{
	struct ly_queue *q;

	if (rl == NULL)
		return;
	while ((q = ly_queue_head(&rl->lru)) != NULL) {
		ly_queue_remove(q);
		free(LY_QUEUE_DATA(q, struct rl_node, lru));
	}
	free(rl->table);
	free(rl);
}

/* Unlinks `n` from its hash chain and the LRU list, and frees it. */
static void
rl_drop(struct ly_ratelimit *rl, struct rl_node *n)
{
	struct rl_node **pp = &rl->table[n->hash & rl->mask];

	while (*pp != n)
		pp = &(*pp)->next;
	*pp = n->next;
	ly_queue_remove(&n->lru);
	free(n);
	rl->n_keys--;
}

static struct rl_node *
rl_find_or_add(struct ly_ratelimit *rl, const char *key)
{
	size_t len = strnlen(key, LY_RATELIMIT_KEY_MAX);
	uint64_t h = rl_hash(key, len);
	struct rl_node *n;

	for (n = rl->table[h & rl->mask]; n != NULL; n = n->next) {
		if (n->hash == h && strncmp(n->key, key, len) == 0 && n->key[len] == '\0') {
			ly_queue_remove(&n->lru);
			ly_queue_insert_head(&rl->lru, &n->lru);
			return n;
		}
	}
	if (rl->n_keys >= rl->max_keys) {
		struct ly_queue *old = rl->lru.prev; /* the least recently used */
		rl_drop(rl, LY_QUEUE_DATA(old, struct rl_node, lru));
	}
	if ((n = calloc(1, sizeof(*n) + len + 1)) == NULL)
		return NULL;
	memcpy(n->key, key, len);
	n->key[len] = '\0';
	n->hash = h;
	n->next = rl->table[h & rl->mask];
	rl->table[h & rl->mask] = n;
	ly_queue_insert_head(&rl->lru, &n->lru);
	rl->n_keys++;
	return n;
}

uint32_t
ly_ratelimit_take(struct ly_ratelimit *rl, const char *key, uint32_t want, bool partial, int64_t now_ms)
{
	struct rl_node *n = rl_find_or_add(rl, key != NULL ? key : "");
	uint32_t got = n != NULL ? ly_tbucket_take(&n->b, rl->rate, rl->burst, want, partial, now_ms) : 0;

	rl->refused += want - got;
	rl->refused_unlogged += want - got;
	return got;
}

size_t
ly_ratelimit_keys(const struct ly_ratelimit *rl)
{
	return rl->n_keys;
}

uint64_t
ly_ratelimit_refused(const struct ly_ratelimit *rl)
{
	return rl->refused;
}

const char *
ly_ratelimit_name(const struct ly_ratelimit *rl)
{
	return rl->name;
}

uint32_t
ly_ratelimit_rate(const struct ly_ratelimit *rl)
{
	return rl->rate;
}

uint32_t
ly_ratelimit_burst(const struct ly_ratelimit *rl)
{
	return rl->burst;
}

bool
ly_ratelimit_log_due(struct ly_ratelimit *rl, int64_t now_ms, int64_t interval_ms, uint64_t *refused)
{
	if (rl->refused_unlogged == 0)
		return false;
	if (rl->logged && now_ms >= rl->last_log_ms && now_ms - rl->last_log_ms < interval_ms)
		return false;
	rl->logged = true;
	rl->last_log_ms = now_ms;
	if (refused != NULL)
		*refused = rl->refused_unlogged;
	rl->refused_unlogged = 0;
	return true;
}
