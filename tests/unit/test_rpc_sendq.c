/*
 * test_rpc_sendq.c: the send side of a server call: one batch in flight,
 * "latest wins" while it is, initial metadata in the first batch (also when
 * that batch only carries the status), the status after the last message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "rpc/sendq.h"

static int m1, m2, m3, m4;

static void
test_first_send_starts_with_metadata(void **state)
{
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;
	void *replaced;

	assert_true(ly_sendq_push(&q, &m1, &b, &replaced));
	assert_null(replaced);
	assert_true(b.initial_metadata);
	assert_ptr_equal(b.msg, &m1);
	assert_false(b.status);
	/* Completed: nothing waits, nothing starts. */
	assert_false(ly_sendq_completed(&q, true, &b, &replaced));
	assert_null(replaced);
	/* The next send carries no metadata again. */
	assert_true(ly_sendq_push(&q, &m2, &b, &replaced));
	assert_false(b.initial_metadata);
	assert_ptr_equal(b.msg, &m2);
}

static void
test_latest_wins_while_in_flight(void **state)
{
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;
	void *replaced;

	assert_true(ly_sendq_push(&q, &m1, &b, &replaced));
	/* In flight: m2 waits, then m3 replaces it, then m4 replaces m3. */
	assert_false(ly_sendq_push(&q, &m2, &b, &replaced));
	assert_null(replaced);
	assert_false(ly_sendq_push(&q, &m3, &b, &replaced));
	assert_ptr_equal(replaced, &m2);
	assert_false(ly_sendq_push(&q, &m4, &b, &replaced));
	assert_ptr_equal(replaced, &m3);
	assert_int_equal(q.dropped, 2);
	/* Only the latest goes next. */
	assert_true(ly_sendq_completed(&q, true, &b, &replaced));
	assert_null(replaced);
	assert_ptr_equal(b.msg, &m4);
	assert_false(b.status);
	assert_false(ly_sendq_completed(&q, true, &b, &replaced));
}

static void
test_status_alone_carries_metadata(void **state)
{
	/* The trap: a status sent before initial metadata is never written. */
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;

	assert_true(ly_sendq_finish(&q, &b));
	assert_true(b.initial_metadata);
	assert_true(b.status);
	assert_null(b.msg);
	/* Idempotent, and nothing more starts. */
	assert_false(ly_sendq_finish(&q, &b));
}

static void
test_status_waits_for_in_flight_and_takes_last_message(void **state)
{
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;
	void *replaced;

	assert_true(ly_sendq_push(&q, &m1, &b, &replaced));
	assert_false(ly_sendq_push(&q, &m2, &b, &replaced));
	assert_false(ly_sendq_finish(&q, &b)); /* in flight: waits */
	/* After finish, a send is refused and handed back. */
	assert_false(ly_sendq_push(&q, &m3, &b, &replaced));
	assert_ptr_equal(replaced, &m3);
	assert_true(ly_sendq_completed(&q, true, &b, &replaced));
	assert_ptr_equal(b.msg, &m2);
	assert_true(b.status);
	assert_false(b.initial_metadata);
	assert_false(ly_sendq_completed(&q, true, &b, &replaced));
}

static void
test_push_last_is_one_batch(void **state)
{
	/* A unary reply: metadata, message and status together. */
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;
	void *replaced;

	assert_true(ly_sendq_push_last(&q, &m1, &b, &replaced));
	assert_null(replaced);
	assert_true(b.initial_metadata);
	assert_ptr_equal(b.msg, &m1);
	assert_true(b.status);
	assert_false(ly_sendq_completed(&q, true, &b, &replaced));
}

static void
test_push_last_while_in_flight(void **state)
{
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;
	void *replaced;

	assert_true(ly_sendq_push(&q, &m1, &b, &replaced));
	assert_false(ly_sendq_push(&q, &m2, &b, &replaced));
	assert_false(ly_sendq_push_last(&q, &m3, &b, &replaced));
	assert_ptr_equal(replaced, &m2);
	assert_true(ly_sendq_completed(&q, true, &b, &replaced));
	assert_ptr_equal(b.msg, &m3);
	assert_true(b.status);
	/* A second last message is refused. */
	assert_false(ly_sendq_push_last(&q, &m4, &b, &replaced));
	assert_ptr_equal(replaced, &m4);
}

static void
test_failed_batch_stops_everything(void **state)
{
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;
	void *orphan;

	assert_true(ly_sendq_push(&q, &m1, &b, &orphan));
	assert_false(ly_sendq_push(&q, &m2, &b, &orphan));
	assert_false(ly_sendq_finish(&q, &b));
	/* The client is gone: the waiting message comes back, no status goes. */
	assert_false(ly_sendq_completed(&q, false, &b, &orphan));
	assert_ptr_equal(orphan, &m2);
	assert_false(ly_sendq_push(&q, &m3, &b, &orphan));
	assert_ptr_equal(orphan, &m3);
	assert_false(ly_sendq_finish(&q, &b));
}

static void
test_abort_returns_waiting_and_blocks(void **state)
{
	struct ly_sendq q = LY_SENDQ_INIT;
	struct ly_sendq_batch b;
	void *replaced;

	assert_true(ly_sendq_push(&q, &m1, &b, &replaced));
	assert_false(ly_sendq_push(&q, &m2, &b, &replaced));
	assert_ptr_equal(ly_sendq_abort(&q), &m2);
	assert_null(ly_sendq_abort(&q));
	/* The batch in flight still completes; nothing starts after it. */
	assert_false(ly_sendq_completed(&q, true, &b, &replaced));
	assert_null(replaced);
	assert_false(ly_sendq_finish(&q, &b));
	assert_false(ly_sendq_push(&q, &m3, &b, &replaced));
	assert_ptr_equal(replaced, &m3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_send_starts_with_metadata),
		cmocka_unit_test(test_latest_wins_while_in_flight),
		cmocka_unit_test(test_status_alone_carries_metadata),
		cmocka_unit_test(test_status_waits_for_in_flight_and_takes_last_message),
		cmocka_unit_test(test_push_last_is_one_batch),
		cmocka_unit_test(test_push_last_while_in_flight),
		cmocka_unit_test(test_failed_batch_stops_everything),
		cmocka_unit_test(test_abort_returns_waiting_and_blocks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
