/*
 * testutil_skip.h: a cmocka test that cannot run here says so, to the
 * reader and to ctest.
 *
 * LY_SKIP(reason) prints "SKIP <test function>: <reason>", counts the skip
 * and leaves the calling test through cmocka's skip(). The executable's
 * main ends with
 *
 *     return ly_test_exit(cmocka_run_group_tests(tests, NULL, NULL));
 *
 * which returns 1 when a test failed, else 77 (every test's
 * SKIP_RETURN_CODE, tests/CMakeLists.txt) when one was skipped, else 0: ctest
 * then reports the executable as skipped, never as passed. (cmocka's skip()
 * alone leaves the exit status 0.) Include after <cmocka.h>.
 */
#ifndef LANYARD_TESTUTIL_SKIP_H
#define LANYARD_TESTUTIL_SKIP_H

#include <stdio.h>

#define LY_TEST_SKIP_RC 77

static inline int *
ly_test_skips_(void)
{
	static int n;
	return &n;
}

#define LY_SKIP(reason)                                                        \
	do {                                                                   \
		printf("SKIP %s: %s\n", __func__, (reason));                   \
		fflush(stdout);                                                \
		(*ly_test_skips_())++;                                         \
		skip();                                                        \
	} while (0)

static inline int
ly_test_exit(int failed)
{
	if (failed != 0)
		return 1;
	if (*ly_test_skips_() > 0) {
		printf("%d test(s) SKIPPED: exit %d\n", *ly_test_skips_(), LY_TEST_SKIP_RC);
		return LY_TEST_SKIP_RC;
	}
	return 0;
}

#endif /* LANYARD_TESTUTIL_SKIP_H */
