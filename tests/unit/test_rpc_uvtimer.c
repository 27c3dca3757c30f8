/* test_rpc_uvtimer.c: rpc/uvtimer.h: fires once, a closed timer never fires, close frees (ASan/valgrind). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "rpc/uvtimer.h"

static int fired;

static void
on_fire(uv_timer_t *t)
{
	fired++;
	assert_non_null(t->data);
}

static void
test_fires_once(void **state)
{
	uv_loop_t loop;
	uv_timer_t *t = NULL;
	int owner = 0;

	(void)state;
	fired = 0;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_uvtimer_new(&loop, &owner, false, &t, NULL), LY_OK);
	assert_ptr_equal(t->data, &owner);
	ly_uvtimer_arm(t, on_fire, 1);
	(void)uv_run(&loop, UV_RUN_DEFAULT); /* returns: one-shot */
	assert_int_equal(fired, 1);
	ly_uvtimer_arm(t, on_fire, 1); /* re-armed */
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(fired, 2);
	ly_uvtimer_close(&t);
	assert_null(t);
	(void)uv_run(&loop, UV_RUN_DEFAULT); /* the close callback frees it */
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Hostile: closed while armed: the callback never runs; NULLs are fine. */
static void
test_close_armed_and_null(void **state)
{
	uv_loop_t loop;
	uv_timer_t *t = NULL;
	int owner = 0;

	(void)state;
	fired = 0;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_uvtimer_new(&loop, &owner, false, &t, NULL), LY_OK);
	ly_uvtimer_arm(t, on_fire, 0);
	ly_uvtimer_close(&t);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(fired, 0);
	ly_uvtimer_close(&t);
	ly_uvtimer_close(NULL);
	ly_uvtimer_arm(NULL, on_fire, 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* An unref'd timer does not keep the loop running. */
static void
test_unref(void **state)
{
	uv_loop_t loop;
	uv_timer_t *t = NULL;

	(void)state;
	fired = 0;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_uvtimer_new(&loop, &loop, true, &t, NULL), LY_OK);
	ly_uvtimer_arm(t, on_fire, 60000);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns at once */
	assert_int_equal(fired, 0);
	ly_uvtimer_close(&t);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fires_once),
		cmocka_unit_test(test_close_armed_and_null),
		cmocka_unit_test(test_unref),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
