/*
 * test_rlimit.c: lib/rlimit.h. The soft open-files limit goes up to the
 * hard one (or the cap), never down, never past the hard limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/resource.h>

#include "lib/rlimit.h"
#include "testutil_skip.h"

static void
test_raise(void **state)
{
	(void)state;
	struct rlimit orig, rl;
	uint64_t now = 0;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &orig), 0);
	if (orig.rlim_max != RLIM_INFINITY && orig.rlim_max < 512)
		LY_SKIP("the hard RLIMIT_NOFILE is under 512");
	/* A low soft limit, the hard one as it was. */
	rl.rlim_cur = 256;
	rl.rlim_max = orig.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);

	/* Capped: up to the cap only. */
	assert_int_equal(ly_rlimit_raise_nofile(300, &now, NULL), LY_OK);
	assert_int_equal(now, 300);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_int_equal(rl.rlim_cur, 300);
	/* A cap below the current limit never lowers it. */
	assert_int_equal(ly_rlimit_raise_nofile(100, &now, NULL), LY_OK);
	assert_int_equal(now, 300);
	/* Uncapped: to the hard limit. */
	assert_int_equal(ly_rlimit_raise_nofile(0, &now, NULL), LY_OK);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_true(rl.rlim_cur == orig.rlim_max);
	assert_true(rl.rlim_max == orig.rlim_max);

	assert_int_equal(setrlimit(RLIMIT_NOFILE, &orig), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_raise),
	};
	return ly_test_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
