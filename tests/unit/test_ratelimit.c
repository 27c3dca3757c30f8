/*
 * test_ratelimit.c: lib/ratelimit.h with a fake clock (the module reads
 * none): a bucket's burst, refill, partial takes, a clock going back; a
 * keyed limiter's keys apart, its bounded memory (LRU eviction), its
 * refusal count and its once-an-interval log line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "lib/ratelimit.h"

static void
test_bucket_burst_then_refill(void **state)
{
	(void)state;
	struct ly_tbucket b = { 0 };
	int64_t t = 1000000;

	/* Starts full: `burst` calls pass, the next is refused. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(ly_tbucket_take(&b, 1, 5, 1, false, t), 1);
	assert_int_equal(ly_tbucket_take(&b, 1, 5, 1, false, t), 0);
	/* 999 ms later still nothing (1 token a second), at 1000 ms one. */
	assert_int_equal(ly_tbucket_take(&b, 1, 5, 1, false, t + 999), 0);
	assert_int_equal(ly_tbucket_wait_ms(&b, 1, 5, 1, t + 999), 1);
	assert_int_equal(ly_tbucket_take(&b, 1, 5, 1, false, t + 1000), 1);
	assert_int_equal(ly_tbucket_take(&b, 1, 5, 1, false, t + 1000), 0);
	/* A long quiet refills to the burst, never past it. */
	t += 3600 * 1000;
	for (int i = 0; i < 5; i++)
		assert_int_equal(ly_tbucket_take(&b, 1, 5, 1, false, t), 1);
	assert_int_equal(ly_tbucket_take(&b, 1, 5, 1, false, t), 0);
}

static void
test_bucket_rate_500(void **state)
{
	(void)state;
	struct ly_tbucket b = { 0 };
	int64_t t = 0;
	uint64_t granted = 0;

	/* 500/s, burst 500, asked 100 a tick of 10 ms for 10 s: 500 + 500 * 10 at most. */
	for (int i = 0; i < 1000; i++, t += 10)
		granted += ly_tbucket_take(&b, 500, 500, 100, true, t);
	assert_true(granted <= 500 + 500 * 10);
	assert_true(granted >= 500 + 500 * 10 - 100);
}

static void
test_bucket_partial_and_all_or_nothing(void **state)
{
	(void)state;
	struct ly_tbucket b = { 0 };

	assert_int_equal(ly_tbucket_take(&b, 10, 10, 7, false, 0), 7);
	/* 3 left: all-or-nothing refuses 5, partial gives 3. */
	assert_int_equal(ly_tbucket_take(&b, 10, 10, 5, false, 0), 0);
	assert_int_equal(ly_tbucket_take(&b, 10, 10, 5, true, 0), 3);
	assert_int_equal(ly_tbucket_take(&b, 10, 10, 1, true, 0), 0);
	/* More than the burst never passes whole, and never waits to. */
	assert_int_equal(ly_tbucket_wait_ms(&b, 10, 10, 11, 0), INT64_MAX);
	assert_int_equal(ly_tbucket_take(&b, 10, 10, 11, false, 100000), 0);
	assert_int_equal(ly_tbucket_take(&b, 10, 10, 11, true, 100000), 10);
	/* Burst 0 refuses everything; rate 0 never refills. */
	struct ly_tbucket z = { 0 };
	assert_int_equal(ly_tbucket_take(&z, 1, 0, 1, true, 0), 0);
	struct ly_tbucket r0 = { 0 };
	assert_int_equal(ly_tbucket_take(&r0, 0, 2, 2, false, 0), 2);
	assert_int_equal(ly_tbucket_take(&r0, 0, 2, 1, false, 1000000), 0);
	assert_int_equal(ly_tbucket_wait_ms(&r0, 0, 2, 1, 1000000), INT64_MAX);
}

static void
test_bucket_clock_back(void **state)
{
	(void)state;
	struct ly_tbucket b = { 0 };

	assert_int_equal(ly_tbucket_take(&b, 1, 1, 1, false, 5000), 1);
	/* The clock jumps back an hour: no token appears. */
	assert_int_equal(ly_tbucket_take(&b, 1, 1, 1, false, 5000 - 3600 * 1000), 0);
	/* Forward again from the old mark: one second after it, one token. */
	assert_int_equal(ly_tbucket_take(&b, 1, 1, 1, false, 5999), 0);
	assert_int_equal(ly_tbucket_take(&b, 1, 1, 1, false, 6000), 1);
}

static void
test_keyed_apart(void **state)
{
	(void)state;
	struct ly_ratelimit_config c = { "signing", 500, 500, 16 };
	struct ly_ratelimit *rl = NULL;

	assert_int_equal(ly_ratelimit_new(&c, &rl, NULL), LY_OK);
	/* Agent A floods: 500 pass, the rest is refused. */
	assert_int_equal(ly_ratelimit_take(rl, "spiffe://td/a", 400, true, 0), 400);
	assert_int_equal(ly_ratelimit_take(rl, "spiffe://td/a", 400, true, 0), 100);
	assert_int_equal(ly_ratelimit_take(rl, "spiffe://td/a", 1, false, 0), 0);
	/* Agent B is not touched by it. */
	assert_int_equal(ly_ratelimit_take(rl, "spiffe://td/b", 500, false, 0), 500);
	assert_int_equal(ly_ratelimit_keys(rl), 2);
	assert_int_equal(ly_ratelimit_refused(rl), 301);
	/* 100 ms later A has 50 again. */
	assert_int_equal(ly_ratelimit_take(rl, "spiffe://td/a", 100, true, 100), 50);
	assert_string_equal(ly_ratelimit_name(rl), "signing");
	assert_int_equal(ly_ratelimit_rate(rl), 500);
	assert_int_equal(ly_ratelimit_burst(rl), 500);
	ly_ratelimit_free(rl);
}

static void
test_keyed_bounded(void **state)
{
	(void)state;
	struct ly_ratelimit_config c = { "attestation", 1, 2, 4 };
	struct ly_ratelimit *rl = NULL;
	char key[32];

	assert_int_equal(ly_ratelimit_new(&c, &rl, NULL), LY_OK);
	/* "ip0" spends its burst, then 100 other IPs come: memory stays at 4 keys. */
	assert_int_equal(ly_ratelimit_take(rl, "ip0", 2, false, 0), 2);
	assert_int_equal(ly_ratelimit_take(rl, "ip0", 1, false, 0), 0);
	for (int i = 1; i <= 100; i++) {
		(void)snprintf(key, sizeof(key), "ip%d", i);
		assert_int_equal(ly_ratelimit_take(rl, key, 1, false, 0), 1);
		assert_true(ly_ratelimit_keys(rl) <= 4);
	}
	assert_int_equal(ly_ratelimit_keys(rl), 4);
	/* The most recent keys are the ones kept: ip100 still has 1 of 2 left. */
	assert_int_equal(ly_ratelimit_take(rl, "ip100", 1, false, 0), 1);
	assert_int_equal(ly_ratelimit_take(rl, "ip100", 1, false, 0), 0);
	/* A key in use is kept while others come and go (it is touched each round). */
	for (int i = 200; i < 300; i++) {
		(void)snprintf(key, sizeof(key), "ip%d", i);
		(void)ly_ratelimit_take(rl, key, 1, false, 0);
		assert_int_equal(ly_ratelimit_take(rl, "ip100", 1, false, 0), 0);
	}
	ly_ratelimit_free(rl);
}

static void
test_keyed_long_key(void **state)
{
	(void)state;
	struct ly_ratelimit_config c = { "x", 1, 1, 4 };
	struct ly_ratelimit *rl = NULL;
	static char a[LY_RATELIMIT_KEY_MAX + 100], b[LY_RATELIMIT_KEY_MAX + 100];

	memset(a, 'a', sizeof(a) - 1);
	memcpy(b, a, sizeof(b));
	b[LY_RATELIMIT_KEY_MAX + 50] = 'b'; /* differs only past the cap: the same key */
	assert_int_equal(ly_ratelimit_new(&c, &rl, NULL), LY_OK);
	assert_int_equal(ly_ratelimit_take(rl, a, 1, false, 0), 1);
	assert_int_equal(ly_ratelimit_take(rl, b, 1, false, 0), 0);
	assert_int_equal(ly_ratelimit_keys(rl), 1);
	/* Keys that are prefixes of each other are apart. */
	assert_int_equal(ly_ratelimit_take(rl, "aa", 1, false, 0), 1);
	assert_int_equal(ly_ratelimit_take(rl, "a", 1, false, 0), 1);
	assert_int_equal(ly_ratelimit_keys(rl), 3);
	ly_ratelimit_free(rl);
}

static void
test_config_refused(void **state)
{
	(void)state;
	struct ly_ratelimit *rl = NULL;
	struct ly_error e;
	struct ly_ratelimit_config bad[] = {
		{ "r0", 0, 1, 1 },
		{ "b0", 1, 0, 1 },
		{ "k0", 1, 1, 0 },
		{ "kmax", 1, 1, LY_RATELIMIT_KEYS_MAX + 1 },
		{ "bmax", 1, LY_RATELIMIT_BURST_MAX + 1, 1 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ly_ratelimit_new(&bad[i], &rl, &e), LY_E_INVALID);
		assert_null(rl);
		assert_non_null(strstr(e.msg, bad[i].name));
	}
	ly_ratelimit_free(NULL);
}

static void
test_log_once_a_second(void **state)
{
	(void)state;
	struct ly_ratelimit_config c = { "jwt signing", 1, 1, 4 };
	struct ly_ratelimit *rl = NULL;
	uint64_t n = 0;
	int lines = 0;

	assert_int_equal(ly_ratelimit_new(&c, &rl, NULL), LY_OK);
	/* Nothing refused: no line. */
	assert_false(ly_ratelimit_log_due(rl, 0, 1000, &n));
	/* A flood of 10 ms ticks for 3 s: a line at once, then one a second. */
	uint64_t total = 0;
	for (int64_t t = 0; t < 3000; t += 10) {
		(void)ly_ratelimit_take(rl, "agent", 5, false, t);
		if (ly_ratelimit_log_due(rl, t, 1000, &n)) {
			lines++;
			total += n;
		}
	}
	assert_int_equal(lines, 3);
	/* Every refusal is in some line but those of the last, unlogged, second. */
	assert_true(total <= ly_ratelimit_refused(rl));
	assert_true(total >= ly_ratelimit_refused(rl) - 5 * 100);
	ly_ratelimit_free(rl);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_burst_then_refill),
		cmocka_unit_test(test_bucket_rate_500),
		cmocka_unit_test(test_bucket_partial_and_all_or_nothing),
		cmocka_unit_test(test_bucket_clock_back),
		cmocka_unit_test(test_keyed_apart),
		cmocka_unit_test(test_keyed_bounded),
		cmocka_unit_test(test_keyed_long_key),
		cmocka_unit_test(test_config_refused),
		cmocka_unit_test(test_log_once_a_second),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
