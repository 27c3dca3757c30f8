/*
 * rotation.h: when each SVID is renewed, and the scheduler that hands the
 * due ones out in batches (SPEC §4, §7; DESIGN "Rotation").
 *
 * The rule (SPEC §4): every SVID the agent holds, its own and each
 * workload's, is renewed at the 50% mark of its lifetime (not_before to
 * not_after), never before 45% and never after 55%.
 *
 * The draw: each SVID's renewal time is drawn ONCE, when it enters the
 * cache (and kept with it, persisted too), in [45%, 55%] of its lifetime
 * at millisecond resolution. Draws follow a golden-ratio (Weyl) sequence
 * from a random start: u_k = frac(u_0 + k * 0.618...). Each draw alone is
 * uniform in the window (u_0 is random), and any run of consecutive draws
 * (a burst: 10,000 SVIDs issued in one go) is spread evenly over the
 * window, with gaps within a factor ~2.6 of window/n (three-gap theorem),
 * instead of the clumps and holes of independent uniform draws. The seed
 * is fixed in tests (ly_rotation_rng_seed) and random in the agent.
 *
 * The scheduler: a min-heap of keyed items by due time (milliseconds),
 * with an earliest allowed time per item (the 45% mark). ly_rotation_sched_pop_due
 * takes every item due within a short window after `now` whose earliest
 * time has come (renewals due together become one batched server call,
 * agent.proto BatchNewX509SVID), up to a batch cap: nothing is ever taken
 * before its 45% mark, and the window only ever brings renewals forward,
 * never later than drawn. Keys are entry IDs; the agent's own SVID uses
 * LY_ROTATION_AGENT_KEY (not a valid entry ID, so never a clash).
 *
 * Ownership: struct ly_rotation_sched is a heap object (ly_rotation_sched_new / _free); it
 * copies keys. struct ly_rotation_batch is caller-owned (_init/_cleanup) and
 * owns the keys popped into it. Not thread-safe: the agent's loop thread
 * owns the scheduler.
 */
#ifndef LANYARD_AGENT_ROTATION_H
#define LANYARD_AGENT_ROTATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/cache.h"
#include "lib/error.h"

/* SPEC §4: the window, in percent of the lifetime. */
#define LY_ROTATION_MIN_PCT 45
#define LY_ROTATION_MAX_PCT 55
/* Renewals due within this much of the first due one join its batch. */
#define LY_ROTATION_COALESCE_MS 100
/* At most this many SVIDs in one batch (one BatchNewX509SVID call). */
#define LY_ROTATION_BATCH_MAX 500
/* Retry after a failed renewal: 1 s doubling up to this. */
#define LY_ROTATION_RETRY_MAX_MS 30000
/* The scheduler key of the agent's own SVID. */
#define LY_ROTATION_AGENT_KEY "@agent"

/* ---- the draw ---- */

struct ly_rotation_rng {
	uint64_t weyl; /* the sequence's current point, a 64-bit fraction */
};

/* A fixed start (tests). */
void ly_rotation_rng_seed(struct ly_rotation_rng *r, uint64_t seed);
/* A random start (RAND_bytes); LY_E_CRYPTO when it fails. */
ly_status ly_rotation_rng_seed_random(struct ly_rotation_rng *r, struct ly_error *err) LY_MUST_CHECK;

/*
 * The 45% and 55% marks of [not_before, not_after] (Unix seconds) in Unix
 * milliseconds: earliest rounded up, latest rounded down, so both are
 * inside the window. For an empty or inverted window both are
 * not_before's (renew at once).
 */
int64_t ly_rotation_earliest_ms(int64_t not_before, int64_t not_after);
int64_t ly_rotation_latest_ms(int64_t not_before, int64_t not_after);

/*
 * Draws the renewal time (Unix ms) of an SVID valid [not_before,
 * not_after]: in [earliest, latest] above, always. Advances the sequence.
 */
int64_t ly_rotation_draw(struct ly_rotation_rng *r, int64_t not_before, int64_t not_after);

/*
 * When to retry a failed renewal: now + 1 s * 2^attempt, at most
 * LY_ROTATION_RETRY_MAX_MS after now (attempt 0 is the first retry).
 */
int64_t ly_rotation_retry_ms(int64_t now_ms, unsigned attempt);

/* ---- the scheduler ---- */

struct ly_rotation_sched;

struct ly_rotation_batch {
	char **keys; /* owned, in due order */
	size_t n, cap;
};

void ly_rotation_batch_init(struct ly_rotation_batch *b);
void ly_rotation_batch_cleanup(struct ly_rotation_batch *b);

ly_status ly_rotation_sched_new(struct ly_rotation_sched **out, struct ly_error *err) LY_MUST_CHECK;
void ly_rotation_sched_free(struct ly_rotation_sched *s);

/*
 * Schedules `key` (NUL-terminated, copied) due at `due_ms`, not to be taken
 * before `earliest_ms` (clamped to at most due_ms); replaces any earlier
 * schedule of the same key.
 */
ly_status ly_rotation_sched_put(struct ly_rotation_sched *s, const char *key, int64_t due_ms, int64_t earliest_ms,
    struct ly_error *err) LY_MUST_CHECK;
/* Unschedules `key` (an entry was deleted). False when it was not scheduled. */
bool ly_rotation_sched_remove(struct ly_rotation_sched *s, const char *key);
/* The due time of `key` into *due_ms; false when not scheduled. */
bool ly_rotation_sched_get(const struct ly_rotation_sched *s, const char *key, int64_t *due_ms);
size_t ly_rotation_sched_count(const struct ly_rotation_sched *s);
/* The earliest due time, INT64_MAX when empty: arm the loop's timer for it. */
int64_t ly_rotation_sched_next_ms(const struct ly_rotation_sched *s);

/*
 * Moves into `out` (reset first) the items, in due order, with due_ms <=
 * now_ms + window_ms and earliest_ms <= now_ms, at most `max_batch` (0
 * means LY_ROTATION_BATCH_MAX). Nothing is taken unless at least one item
 * is due (due_ms <= now_ms): the window only gathers companions of a due
 * item. Taken items leave the scheduler; the caller puts them back after
 * the renewal (its new SVID's draw) or a failure (ly_rotation_retry_ms).
 * Call again while it returns a full batch.
 */
ly_status ly_rotation_sched_pop_due(struct ly_rotation_sched *s, int64_t now_ms, int64_t window_ms, size_t max_batch,
    struct ly_rotation_batch *out, struct ly_error *err) LY_MUST_CHECK;

/* ---- glue with the cache ---- */

/*
 * Brings the scheduler in line with a cache change set: deleted entries
 * are unscheduled, entries that need an SVID are due at `now_ms`, new
 * SVIDs are due at their drawn renewal time (earliest: their 45% mark).
 */
ly_status ly_rotation_apply_changes(struct ly_rotation_sched *s, const struct ly_cache *c,
    const struct ly_cache_changes *cs, int64_t now_ms, struct ly_error *err) LY_MUST_CHECK;

/*
 * Schedules every workload entry of `c` (after loading persisted state):
 * at its SVID's renewal time (now if stale), or now when it has none.
 */
ly_status ly_rotation_schedule_all(struct ly_rotation_sched *s, const struct ly_cache *c, int64_t now_ms,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * The old names, for agent/sync.c only until its split into agent/sync_*.c
 * lands (issue 17); the split converts them and this block goes.
 */
#define ly_sched ly_rotation_sched
#define ly_sched_batch ly_rotation_batch
#define ly_sched_batch_cleanup ly_rotation_batch_cleanup
#define ly_sched_batch_init ly_rotation_batch_init
#define ly_sched_free ly_rotation_sched_free
#define ly_sched_new ly_rotation_sched_new
#define ly_sched_next_ms ly_rotation_sched_next_ms
#define ly_sched_pop_due ly_rotation_sched_pop_due
#define ly_sched_put ly_rotation_sched_put

#endif /* LANYARD_AGENT_ROTATION_H */
