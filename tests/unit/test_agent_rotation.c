/*
 * test_agent_rotation.c: renewal times (SPEC §4: at 50% of the lifetime,
 * never before 45%, never after 55%, a burst spread inside the window) and
 * the scheduler (min-heap, batches coalesced within a window and capped,
 * never before an item's earliest time, removal, cache glue).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/rotation.h"
#include "lib/log.h"
#include "testutil_agent.h"

static int
cmp_i64(const void *pa, const void *pb)
{
	int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
	return a < b ? -1 : a > b;
}

/* xorshift64*, only to pick test lifetimes. */
static uint64_t
next_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

/* SPEC §4: every draw in [45%, 55%], over many lifetimes and start times. */
static void
test_draw_always_in_window(void **state)
{
	(void)state;
	struct ly_rotation_rng r;
	ly_rotation_rng_seed(&r, 42);
	uint64_t s = 7;
	double sum = 0;
	const int n = 200000;
	for (int i = 0; i < n; i++) {
		int64_t nb = 1600000000 + (int64_t)(next_rand(&s) % 100000000);
		int64_t life = 1 + (int64_t)(next_rand(&s) % (30 * 86400));
		int64_t na = nb + life;
		int64_t t = ly_rotation_draw(&r, nb, na);
		int64_t lo = ly_rotation_earliest_ms(nb, na), hi = ly_rotation_latest_ms(nb, na);
		assert_true(lo <= t && t <= hi);
		/* In exact arithmetic: 45 * life * 1000 <= 100 * (t - nb * 1000) <= 55 * life * 1000. */
		int64_t pos = t - nb * 1000;
		assert_true(100 * pos >= 45 * life * 1000);
		assert_true(100 * pos <= 55 * life * 1000);
		sum += (double)pos / ((double)life * 1000.0);
	}
	/* Centred on 50%. */
	double mean = sum / n;
	assert_true(mean > 0.499 && mean < 0.501);
}

static void
test_draw_edges(void **state)
{
	(void)state;
	struct ly_rotation_rng r;
	ly_rotation_rng_seed(&r, 1);
	/* One second: 450..550 ms. */
	for (int i = 0; i < 1000; i++) {
		int64_t t = ly_rotation_draw(&r, 100, 101);
		assert_true(t >= 100450 && t <= 100550);
	}
	/* An empty or inverted window: at once (not_before). */
	assert_int_equal(ly_rotation_draw(&r, 100, 100), 100000);
	assert_int_equal(ly_rotation_draw(&r, 100, 50), 100000);
	assert_int_equal(ly_rotation_earliest_ms(0, 3600), 1620000);
	assert_int_equal(ly_rotation_latest_ms(0, 3600), 1980000);
	/* Absurd times are clamped, not overflowed. */
	int64_t t = ly_rotation_draw(&r, INT64_MIN, INT64_MAX);
	assert_true(t >= ly_rotation_earliest_ms(INT64_MIN, INT64_MAX));
	assert_true(t <= ly_rotation_latest_ms(INT64_MIN, INT64_MAX));
}

static void
test_seeded(void **state)
{
	(void)state;
	struct ly_rotation_rng a, b, c;
	ly_rotation_rng_seed(&a, 99);
	ly_rotation_rng_seed(&b, 99);
	ly_rotation_rng_seed(&c, 100);
	int same = 0;
	for (int i = 0; i < 100; i++) {
		int64_t x = ly_rotation_draw(&a, 0, 3600), y = ly_rotation_draw(&b, 0, 3600);
		int64_t z = ly_rotation_draw(&c, 0, 3600);
		assert_int_equal(x, y);
		same += x == z;
	}
	assert_true(same < 5);
	struct ly_rotation_rng d;
	assert_int_equal(ly_rotation_rng_seed_random(&d, NULL), LY_OK);
}

/*
 * SPEC §4: a burst is spread inside the window. 10,000 SVIDs issued in one
 * second (1 h TTL): renewal times cover the window evenly, no clump, no hole.
 */
static void
test_burst_spread(void **state)
{
	(void)state;
	enum { N = 10000, BINS = 20 };
	struct ly_rotation_rng r;
	ly_rotation_rng_seed(&r, 0x1234);
	int64_t *t = calloc(N, sizeof(*t));
	assert_non_null(t);
	int64_t nb = 1700000000, na = nb + 3600;
	for (int i = 0; i < N; i++)
		t[i] = ly_rotation_draw(&r, nb, na);
	qsort(t, N, sizeof(*t), cmp_i64);
	int64_t lo = ly_rotation_earliest_ms(nb, na), hi = ly_rotation_latest_ms(nb, na);
	double window = (double)(hi - lo), even = window / N;
	int64_t maxgap = 0;
	for (int i = 1; i < N; i++)
		if (t[i] - t[i - 1] > maxgap)
			maxgap = t[i] - t[i - 1];
	/* Three-gap theorem: the largest gap is under 3x the even spacing (independent draws: ~10x). */
	assert_true((double)maxgap < 3.0 * even);
	assert_true((double)(t[0] - lo) < 3.0 * even && (double)(hi - t[N - 1]) < 3.0 * even);
	int bins[BINS] = { 0 };
	for (int i = 0; i < N; i++) {
		int b = (int)((double)(t[i] - lo) / (window + 1) * BINS);
		bins[b]++;
	}
	for (int b = 0; b < BINS; b++)
		assert_true(bins[b] >= N / BINS - 10 && bins[b] <= N / BINS + 10);
	/* In any 100 ms, about N / window-in-ms renewals: a handful, never a pile. */
	int maxin = 0;
	for (int i = 0, j = 0; i < N; i++) {
		while (t[i] - t[j] >= 100)
			j++;
		if (i - j + 1 > maxin)
			maxin = i - j + 1;
	}
	printf("burst of %d (1 h TTL): window %.0f s, max gap %lld ms (even %.1f ms), at most %d renewals in 100 ms\n",
	    N, window / 1000, (long long)maxgap, even, maxin);
	assert_true(maxin <= 6);
	free(t);
}

static void
test_retry(void **state)
{
	(void)state;
	assert_int_equal(ly_rotation_retry_ms(1000, 0), 2000);
	assert_int_equal(ly_rotation_retry_ms(1000, 1), 3000);
	assert_int_equal(ly_rotation_retry_ms(1000, 4), 17000);
	assert_int_equal(ly_rotation_retry_ms(1000, 5), 1000 + LY_ROTATION_RETRY_MAX_MS);
	assert_int_equal(ly_rotation_retry_ms(1000, 1000), 1000 + LY_ROTATION_RETRY_MAX_MS);
}

static void
put(struct ly_rotation_sched *s, const char *k, int64_t due, int64_t earliest)
{
	assert_int_equal(ly_rotation_sched_put(s, k, due, earliest, NULL), LY_OK);
}

static void
test_sched_basics(void **state)
{
	(void)state;
	struct ly_rotation_sched *s = NULL;
	struct ly_rotation_batch b;
	ly_rotation_batch_init(&b);
	assert_int_equal(ly_rotation_sched_new(&s, NULL), LY_OK);
	assert_int_equal(ly_rotation_sched_next_ms(s), INT64_MAX);
	assert_int_equal(ly_rotation_sched_pop_due(s, 1000000, 100, 0, &b, NULL), LY_OK);
	assert_int_equal(b.n, 0);

	put(s, "c", 3000, 0);
	put(s, "a", 1000, 0);
	put(s, "b", 2000, 0);
	put(s, LY_ROTATION_AGENT_KEY, 1500, 0);
	assert_int_equal(ly_rotation_sched_count(s), 4);
	assert_int_equal(ly_rotation_sched_next_ms(s), 1000);
	int64_t due;
	assert_true(ly_rotation_sched_get(s, "b", &due));
	assert_int_equal(due, 2000);
	assert_false(ly_rotation_sched_get(s, "zz", &due));

	/* Nothing is taken before the first item is due, even with a window reaching it. */
	assert_int_equal(ly_rotation_sched_pop_due(s, 999, 100, 0, &b, NULL), LY_OK);
	assert_int_equal(b.n, 0);
	/* Due at 1000: the window (600 ms) brings the agent's own SVID at 1500 along, not b. */
	assert_int_equal(ly_rotation_sched_pop_due(s, 1000, 600, 0, &b, NULL), LY_OK);
	assert_int_equal(b.n, 2);
	assert_string_equal(b.keys[0], "a");
	assert_string_equal(b.keys[1], LY_ROTATION_AGENT_KEY);
	assert_int_equal(ly_rotation_sched_count(s), 2);

	/* Moving an item: put again. */
	put(s, "c", 500, 0);
	assert_int_equal(ly_rotation_sched_next_ms(s), 500);
	assert_true(ly_rotation_sched_remove(s, "c"));
	assert_false(ly_rotation_sched_remove(s, "c"));
	assert_int_equal(ly_rotation_sched_next_ms(s), 2000);
	assert_int_equal(ly_rotation_sched_count(s), 1);
	assert_int_equal(ly_rotation_sched_put(s, NULL, 1, 1, NULL), LY_E_INVALID);

	ly_rotation_batch_cleanup(&b);
	ly_rotation_sched_free(s);
}

/* Never before an item's earliest time (its 45% mark), even inside a batch window. */
static void
test_sched_earliest(void **state)
{
	(void)state;
	struct ly_rotation_sched *s = NULL;
	struct ly_rotation_batch b;
	ly_rotation_batch_init(&b);
	assert_int_equal(ly_rotation_sched_new(&s, NULL), LY_OK);
	put(s, "a", 1000, 0);
	put(s, "early-ok", 1050, 900);
	put(s, "too-early", 1060, 1055);
	put(s, "later", 1080, 1000);
	assert_int_equal(ly_rotation_sched_pop_due(s, 1000, 100, 0, &b, NULL), LY_OK);
	assert_int_equal(b.n, 3);
	assert_string_equal(b.keys[0], "a");
	assert_string_equal(b.keys[1], "early-ok");
	assert_string_equal(b.keys[2], "later");
	assert_int_equal(ly_rotation_sched_count(s), 1);
	assert_int_equal(ly_rotation_sched_next_ms(s), 1060);
	assert_int_equal(ly_rotation_sched_pop_due(s, 1060, 100, 0, &b, NULL), LY_OK);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.keys[0], "too-early");
	/* earliest after due is clamped to due: never stuck. */
	put(s, "x", 2000, 5000);
	assert_int_equal(ly_rotation_sched_pop_due(s, 2000, 0, 0, &b, NULL), LY_OK);
	assert_int_equal(b.n, 1);
	ly_rotation_batch_cleanup(&b);
	ly_rotation_sched_free(s);
}

/* Batches are capped: 1,200 due at once go out as 500, 500, 200, in due order. */
static void
test_sched_batch_cap(void **state)
{
	(void)state;
	struct ly_rotation_sched *s = NULL;
	struct ly_rotation_batch b;
	ly_rotation_batch_init(&b);
	assert_int_equal(ly_rotation_sched_new(&s, NULL), LY_OK);
	for (int i = 0; i < 1200; i++) {
		char k[32];
		snprintf(k, sizeof(k), "e%04d", i);
		put(s, k, 1000 + (i * 7919) % 1200 / 100, 0);
	}
	size_t sizes[3] = { 500, 500, 200 }, total = 0;
	for (int round = 0; round < 3; round++) {
		assert_int_equal(ly_rotation_sched_pop_due(s, 1100, 0, 0, &b, NULL), LY_OK);
		assert_int_equal(b.n, sizes[round]);
		total += b.n;
	}
	assert_int_equal(total, 1200);
	assert_int_equal(ly_rotation_sched_count(s), 0);
	put(s, "a", 1, 0);
	put(s, "b", 1, 0);
	put(s, "c", 1, 0);
	assert_int_equal(ly_rotation_sched_pop_due(s, 1, 0, 2, &b, NULL), LY_OK);
	assert_int_equal(b.n, 2);
	/* Ties go first in, first out. */
	assert_string_equal(b.keys[0], "a");
	assert_string_equal(b.keys[1], "b");
	ly_rotation_batch_cleanup(&b);
	ly_rotation_sched_free(s);
}

/* The heap against a plain model, over random puts, moves, removals and pops. */
static void
test_sched_model(void **state)
{
	(void)state;
	enum { K = 300 };
	int64_t model[K];
	bool in[K];
	memset(in, 0, sizeof(in));
	struct ly_rotation_sched *s = NULL;
	struct ly_rotation_batch b;
	ly_rotation_batch_init(&b);
	assert_int_equal(ly_rotation_sched_new(&s, NULL), LY_OK);
	uint64_t rs = 12345;
	int64_t now = 0;
	for (int step = 0; step < 20000; step++) {
		int k = (int)(next_rand(&rs) % K);
		char key[16];
		snprintf(key, sizeof(key), "k%d", k);
		switch (next_rand(&rs) % 4) {
		case 0:
		case 1:
			model[k] = now + (int64_t)(next_rand(&rs) % 5000);
			in[k] = true;
			put(s, key, model[k], 0);
			break;
		case 2:
			assert_int_equal(ly_rotation_sched_remove(s, key), in[k]);
			in[k] = false;
			break;
		default: {
			now += (int64_t)(next_rand(&rs) % 300);
			assert_int_equal(ly_rotation_sched_pop_due(s, now, 0, 1000, &b, NULL), LY_OK);
			int64_t prev = INT64_MIN;
			for (size_t i = 0; i < b.n; i++) {
				int j = atoi(b.keys[i] + 1);
				assert_true(in[j]);
				assert_true(model[j] <= now);
				assert_true(model[j] >= prev);
				prev = model[j];
				in[j] = false;
			}
			for (int j = 0; j < K; j++)
				assert_false(in[j] && model[j] <= now);
			break;
		}
		}
		size_t cnt = 0;
		int64_t min = INT64_MAX;
		for (int j = 0; j < K; j++) {
			if (in[j]) {
				cnt++;
				if (model[j] < min)
					min = model[j];
			}
		}
		assert_int_equal(ly_rotation_sched_count(s), cnt);
		assert_int_equal(ly_rotation_sched_next_ms(s), min);
	}
	ly_rotation_batch_cleanup(&b);
	ly_rotation_sched_free(s);
}

/* Glue: cache changes drive the schedule. */
static void
test_apply_changes(void **state)
{
	(void)state;
	struct tu_pki pki;
	struct ly_cache *c = NULL;
	struct ly_rotation_sched *s = NULL;
	struct ly_cache_changes cs;
	int64_t due;
	tu_pki_init(&pki);
	ly_log_set_level(LY_LOG_ERROR);
	assert_int_equal(ly_cache_new(TA_TD, &c, NULL), LY_OK);
	assert_int_equal(ly_rotation_sched_new(&s, NULL), LY_OK);
	ly_cache_changes_init(&cs);

	struct ly_entry *es[2] = {
		ta_entry("a", "spiffe://example.org/a", 1, NULL, "unix:uid:1", NULL),
		ta_entry("b", "spiffe://example.org/b", 1, NULL, "unix:uid:1", NULL),
	};
	ta_apply(c, true, 1, es, 2, NULL, 0, &cs);
	assert_int_equal(ly_rotation_apply_changes(s, c, &cs, 5000, NULL), LY_OK);
	assert_int_equal(ly_rotation_sched_count(s), 2);
	assert_true(ly_rotation_sched_get(s, "a", &due));
	assert_int_equal(due, 5000); /* needs an SVID now */
	ly_cache_changes_cleanup(&cs);

	/* An SVID: due at its drawn renewal time. */
	ta_set_svid(c, &pki, "a", 0, 3600, &cs);
	assert_int_equal(ly_rotation_apply_changes(s, c, &cs, 5000, NULL), LY_OK);
	struct ly_cache_item it;
	assert_true(ly_cache_get(c, "a", &it));
	assert_true(ly_rotation_sched_get(s, "a", &due));
	assert_int_equal(due, it.renew_at_ms);
	ly_cache_changes_cleanup(&cs);

	/* An update that needs no new SVID leaves the schedule alone (the item may be in flight). */
	struct ly_rotation_batch b;
	ly_rotation_batch_init(&b);
	assert_int_equal(ly_rotation_sched_pop_due(s, 5000, 0, 0, &b, NULL), LY_OK);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.keys[0], "b");
	struct ly_entry *e = ta_entry("b", "spiffe://example.org/b", 1, "hint", "unix:uid:1", NULL);
	e->revision = 2;
	ta_put(c, e, &cs);
	assert_int_equal(ly_rotation_apply_changes(s, c, &cs, 6000, NULL), LY_OK);
	assert_false(ly_rotation_sched_get(s, "b", &due));
	ly_cache_changes_cleanup(&cs);

	/* Deleted: unscheduled. */
	ta_del(c, "a", &cs);
	assert_int_equal(ly_rotation_apply_changes(s, c, &cs, 6000, NULL), LY_OK);
	assert_false(ly_rotation_sched_get(s, "a", &due));
	ly_cache_changes_cleanup(&cs);

	/* After a restart: everything scheduled from the cache. */
	ta_put(c, ta_entry("a", "spiffe://example.org/a", 1, NULL, "unix:uid:1", NULL), NULL);
	ta_set_svid(c, &pki, "a", 0, 3600, NULL);
	struct ly_rotation_sched *s2 = NULL;
	assert_int_equal(ly_rotation_sched_new(&s2, NULL), LY_OK);
	assert_int_equal(ly_rotation_schedule_all(s2, c, 7000, NULL), LY_OK);
	assert_int_equal(ly_rotation_sched_count(s2), 2);
	assert_true(ly_rotation_sched_get(s2, "b", &due));
	assert_int_equal(due, 7000);
	assert_true(ly_cache_get(c, "a", &it));
	assert_true(ly_rotation_sched_get(s2, "a", &due));
	assert_int_equal(due, it.renew_at_ms);

	ly_rotation_batch_cleanup(&b);
	ly_rotation_sched_free(s);
	ly_rotation_sched_free(s2);
	ly_cache_free(c);
	tu_pki_free(&pki);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_draw_always_in_window),
		cmocka_unit_test(test_draw_edges),
		cmocka_unit_test(test_seeded),
		cmocka_unit_test(test_burst_spread),
		cmocka_unit_test(test_retry),
		cmocka_unit_test(test_sched_basics),
		cmocka_unit_test(test_sched_earliest),
		cmocka_unit_test(test_sched_batch_cap),
		cmocka_unit_test(test_sched_model),
		cmocka_unit_test(test_apply_changes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
