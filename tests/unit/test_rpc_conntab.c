/*
 * test_rpc_conntab.c: the fd -> connection table of handed-over Workload API
 * connections: reuse of an fd number replaces the dead entry, a late
 * hang-up of the dead one never removes its successor, bounds, and the
 * strict parse of gRPC's "fd:<N>" peer string.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/caps.h"
#include "rpc/conntab.h"

static int a, b, c;

static void
test_put_get_remove(void **state)
{
	struct ly_conntab t = LY_CONNTAB_INIT;
	void *displaced;

	assert_null(ly_conntab_get(&t, 5));
	assert_int_equal(ly_conntab_put(&t, 5, &a, &displaced, NULL), LY_OK);
	assert_null(displaced);
	assert_int_equal(ly_conntab_put(&t, 700, &b, &displaced, NULL), LY_OK); /* grows */
	assert_ptr_equal(ly_conntab_get(&t, 5), &a);
	assert_ptr_equal(ly_conntab_get(&t, 700), &b);
	assert_null(ly_conntab_get(&t, 6));
	assert_null(ly_conntab_get(&t, -1));
	assert_null(ly_conntab_get(&t, 100000));
	assert_int_equal(t.count, 2);
	assert_true(ly_conntab_remove(&t, 5, &a));
	assert_null(ly_conntab_get(&t, 5));
	assert_false(ly_conntab_remove(&t, 5, &a)); /* twice */
	assert_int_equal(t.count, 1);
	ly_conntab_cleanup(&t);
	assert_null(ly_conntab_get(&t, 700));
}

static void
test_reuse_replaces_and_late_hangup_keeps_successor(void **state)
{
	struct ly_conntab t = LY_CONNTAB_INIT;
	void *displaced;

	assert_int_equal(ly_conntab_put(&t, 9, &a, &displaced, NULL), LY_OK);
	/* gRPC closed 9, the kernel gave 9 to the next accept: a is dead. */
	assert_int_equal(ly_conntab_put(&t, 9, &b, &displaced, NULL), LY_OK);
	assert_ptr_equal(displaced, &a);
	assert_int_equal(t.count, 1);
	/* a's hang-up arrives late: b stays. */
	assert_false(ly_conntab_remove(&t, 9, &a));
	assert_ptr_equal(ly_conntab_get(&t, 9), &b);
	/* And once more. */
	assert_int_equal(ly_conntab_put(&t, 9, &c, &displaced, NULL), LY_OK);
	assert_ptr_equal(displaced, &b);
	assert_true(ly_conntab_remove(&t, 9, &c));
	assert_int_equal(t.count, 0);
	ly_conntab_cleanup(&t);
}

static void
test_bounds(void **state)
{
	struct ly_conntab t = LY_CONNTAB_INIT;
	struct ly_error e;
	void *displaced;

	assert_int_equal(ly_conntab_put(&t, -1, &a, &displaced, &e), LY_E_LIMIT);
	assert_int_equal(ly_conntab_put(&t, LY_RPC_FD_MAX, &a, &displaced, &e), LY_E_LIMIT);
	assert_int_equal(ly_conntab_put(&t, LY_RPC_FD_MAX - 1, &a, &displaced, &e), LY_OK);
	assert_ptr_equal(ly_conntab_get(&t, LY_RPC_FD_MAX - 1), &a);
	assert_int_equal(ly_conntab_put(&t, 0, NULL, &displaced, &e), LY_E_INTERNAL);
	assert_int_equal(ly_conntab_put(&t, 0, &b, &displaced, &e), LY_OK);
	assert_ptr_equal(ly_conntab_get(&t, 0), &b);
	ly_conntab_cleanup(&t);
}

static void
test_parse_fd_peer(void **state)
{
	struct ly_error e;
	int fd = -1;

	assert_int_equal(ly_rpc_parse_fd_peer("fd:0", &fd, &e), LY_OK);
	assert_int_equal(fd, 0);
	assert_int_equal(ly_rpc_parse_fd_peer("fd:12", &fd, &e), LY_OK);
	assert_int_equal(fd, 12);
	assert_int_equal(ly_rpc_parse_fd_peer("fd:65535", &fd, &e), LY_OK);
	assert_int_equal(fd, 65535);

	const char *bad[] = {
		"unix:", "ipv4:127.0.0.1:5000", "fd:", "fd:007", "fd:1x", "fd:-1", "fd: 1",
		"fd:+1", "FD:1", "fd", "", "fd:1 ",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fd = -7;
		assert_int_equal(ly_rpc_parse_fd_peer(bad[i], &fd, &e), LY_E_INVALID);
		assert_int_equal(fd, -7);
	}
	assert_int_equal(ly_rpc_parse_fd_peer(NULL, &fd, &e), LY_E_INVALID);
	/* One past the table, and a number that would overflow an int. */
	assert_int_equal(ly_rpc_parse_fd_peer("fd:65536", &fd, &e), LY_E_LIMIT);
	assert_int_equal(ly_rpc_parse_fd_peer("fd:99999999999999999999", &fd, &e), LY_E_LIMIT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_remove),
		cmocka_unit_test(test_reuse_replaces_and_late_hangup_keeps_successor),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_parse_fd_peer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
