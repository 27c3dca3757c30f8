/*
 * ratelimit.h: token buckets, alone and keyed (one per source IP, per
 * agent, per selector set), for the rate limits of both daemons (SPEC §11,
 * docs/operations.md "Rate limits").
 *
 * A bucket holds up to `burst` tokens and gains `rate` tokens a second;
 * a call takes tokens or is refused. Arithmetic is in milli-tokens and
 * milliseconds, integers only, so the same inputs always give the same
 * answer. The clock is the caller's (`now_ms`, any monotonic origin): the
 * module reads no clock, and a unit test drives it with a fake one. A
 * clock that goes back counts as no time passed.
 *
 *   struct ly_ratelimit_config c = { "attestation", 1, 10, 4096 };
 *   struct ly_ratelimit *rl;
 *   ly_ratelimit_new(&c, &rl, &err);
 *   if (ly_ratelimit_take(rl, "192.0.2.7", 1, false, now_ms) == 0) -> refuse
 *
 * Memory: a keyed limiter holds at most `max_keys` keys; a new key past
 * that evicts the least recently used one. A key evicted comes back with a
 * full bucket, which is what it would have had after burst/rate seconds of
 * quiet anyway; under a flood of more than max_keys distinct keys the
 * limit per key leaks by at most one burst per eviction, and the memory
 * stays bounded (LY_RATELIMIT_KEYS_MAX keys of at most
 * LY_RATELIMIT_KEY_MAX bytes: caps.h).
 *
 * Logging: a limiter counts its refusals; ly_ratelimit_log_due says when
 * one line about them may be written (at most once per `interval_ms`), and
 * how many were refused since the last line, so a flood writes one line a
 * second, not one per call.
 *
 * Ownership: the limiter copies its keys. Not thread-safe: one thread (a
 * daemon's loop) uses a limiter.
 */
#ifndef LANYARD_RATELIMIT_H
#define LANYARD_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caps.h"
#include "error.h"

/* One bucket, for callers that keep their own (a single global limit). */
struct ly_tbucket {
	uint64_t milli;  /* tokens held, in thousandths */
	int64_t last_ms; /* when it was last refilled */
	bool started;
};

/*
 * Takes up to `want` tokens from `b` at `now_ms` (refilled first at `rate`
 * tokens a second up to `burst`). All or nothing unless `partial`: then as
 * many whole tokens as there are, up to `want`. Returns the tokens taken.
 * A new (zeroed) bucket starts full. `rate` 0 never refills; `burst` 0
 * refuses everything.
 */
uint32_t ly_tbucket_take(struct ly_tbucket *b, uint32_t rate, uint32_t burst, uint32_t want, bool partial,
    int64_t now_ms);

/* Milliseconds until `want` tokens are there (0: now; INT64_MAX: never, want > burst or rate 0). */
int64_t ly_tbucket_wait_ms(const struct ly_tbucket *b, uint32_t rate, uint32_t burst, uint32_t want, int64_t now_ms);

struct ly_ratelimit_config {
	const char *name; /* for log lines: "attestation", "x509 signing"; copied */
	uint32_t rate;    /* tokens a second, >= 1 */
	uint32_t burst;   /* bucket size, >= 1 */
	size_t max_keys;  /* 1..LY_RATELIMIT_KEYS_MAX */
};

struct ly_ratelimit;

/* A keyed limiter; LY_E_INVALID for a config out of range. Free with ly_ratelimit_free. */
ly_status ly_ratelimit_new(const struct ly_ratelimit_config *cfg, struct ly_ratelimit **out, struct ly_error *err)
    LY_MUST_CHECK;
void ly_ratelimit_free(struct ly_ratelimit *rl);

/*
 * ly_tbucket_take on `key`'s bucket (made full on first sight). A key
 * longer than LY_RATELIMIT_KEY_MAX is cut there (keys are IPs and SPIFFE
 * IDs: no two real ones differ only past it). When a new key cannot be
 * stored (out of memory) the call is refused: a limiter fails closed.
 * Every refused token counts (ly_ratelimit_refused, ly_ratelimit_log_due).
 */
uint32_t ly_ratelimit_take(struct ly_ratelimit *rl, const char *key, uint32_t want, bool partial, int64_t now_ms);

/* Keys held now (at most max_keys). */
size_t ly_ratelimit_keys(const struct ly_ratelimit *rl);
/* Tokens refused since the limiter was made. */
uint64_t ly_ratelimit_refused(const struct ly_ratelimit *rl);
/* The limiter's name, rate and burst (as configured). */
const char *ly_ratelimit_name(const struct ly_ratelimit *rl);
uint32_t ly_ratelimit_rate(const struct ly_ratelimit *rl);
uint32_t ly_ratelimit_burst(const struct ly_ratelimit *rl);

/*
 * True when refusals happened since the last line and the last line is at
 * least `interval_ms` old: the caller writes one line now, naming
 * *refused (the tokens refused since the last line; reset by this call).
 */
bool ly_ratelimit_log_due(struct ly_ratelimit *rl, int64_t now_ms, int64_t interval_ms, uint64_t *refused);

#endif /* LANYARD_RATELIMIT_H */
