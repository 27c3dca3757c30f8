/* test_queue.c: lib/queue.h, the one intrusive list: order, removal while walking, idempotent removal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/queue.h"

struct item {
	int v;
	struct ly_queue link;
};

static size_t
count(const struct ly_queue *head)
{
	const struct ly_queue *q;
	size_t n = 0;

	LY_QUEUE_FOREACH(q, head)
		n++;
	return n;
}

static void
test_empty_and_order(void **state)
{
	struct ly_queue head, *q;
	struct item it[4];
	int want[] = { 3, 0, 1, 2 }, i = 0;

	(void)state;
	ly_queue_init(&head);
	assert_true(ly_queue_empty(&head));
	assert_null(ly_queue_head(&head));
	for (int k = 0; k < 3; k++) {
		it[k].v = k;
		ly_queue_insert_tail(&head, &it[k].link);
	}
	it[3].v = 3;
	ly_queue_insert_head(&head, &it[3].link);
	assert_false(ly_queue_empty(&head));
	assert_ptr_equal(LY_QUEUE_DATA(ly_queue_head(&head), struct item, link), &it[3]);
	LY_QUEUE_FOREACH(q, &head)
		assert_int_equal(LY_QUEUE_DATA(q, struct item, link)->v, want[i++]);
	assert_int_equal(i, 4);
}

/* Hostile: every element removed during the walk that visits it, and removal twice. */
static void
test_remove_while_iterating(void **state)
{
	struct ly_queue head, *q, *tmp;
	struct item it[5];
	int seen = 0;

	(void)state;
	ly_queue_init(&head);
	for (int k = 0; k < 5; k++) {
		it[k].v = k;
		ly_queue_insert_tail(&head, &it[k].link);
	}
	/* Remove the odd ones. */
	LY_QUEUE_FOREACH_SAFE(q, tmp, &head) {
		struct item *x = LY_QUEUE_DATA(q, struct item, link);
		seen++;
		if (x->v % 2 == 1)
			ly_queue_remove(q);
	}
	assert_int_equal(seen, 5);
	assert_int_equal(count(&head), 3);
	/* A removed link is a circle of one: removing it again changes nothing. */
	ly_queue_remove(&it[1].link);
	assert_ptr_equal(it[1].link.next, &it[1].link);
	assert_int_equal(count(&head), 3);
	/* Then all of them. */
	LY_QUEUE_FOREACH_SAFE(q, tmp, &head)
		ly_queue_remove(q);
	assert_true(ly_queue_empty(&head));
	assert_int_equal(count(&head), 0);
	/* A walk of an empty list does nothing. */
	LY_QUEUE_FOREACH_SAFE(q, tmp, &head)
		fail();
}

/* Draining by taking the first until empty: what a callback that removes others needs. */
static void
test_drain_from_head(void **state)
{
	struct ly_queue head, *q;
	struct item it[3];
	int n = 0;

	(void)state;
	ly_queue_init(&head);
	for (int k = 0; k < 3; k++)
		ly_queue_insert_tail(&head, &it[k].link);
	while ((q = ly_queue_head(&head)) != NULL) {
		ly_queue_remove(q);
		/* The callback also removes the last element, if still there. */
		ly_queue_remove(&it[2].link);
		n++;
	}
	assert_int_equal(n, 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_and_order),
		cmocka_unit_test(test_remove_while_iterating),
		cmocka_unit_test(test_drain_from_head),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
