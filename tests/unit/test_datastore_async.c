/*
 * test_datastore_async.c: server/datastore_async.h over a fake back end:
 * calls run in order on the worker and complete in order on the loop
 * thread; change hooks run on the loop before the call's done; a call that
 * never returns times out, the one queued behind it never runs, new calls
 * are refused while the worker is held, and the held call's late answer
 * brings the store back (the back end could tell its caller gave up:
 * ly_datastore_gave_up); the queue's cap; close with calls running and
 * queued (the worker joined, or left detached when stuck).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/datastore_async.h"

/* ---- a fake back end: only close is called by the module ---- */

static int fake_closed;

static void
fake_close(struct ly_datastore *ds)
{
	__atomic_add_fetch(&fake_closed, 1, __ATOMIC_SEQ_CST);
	free(ds);
}

static const struct ly_datastore_ops fake_ops = { .name = "fake", .close = fake_close };

static struct ly_datastore *
fake_open(void)
{
	struct ly_datastore *ds = calloc(1, sizeof(*ds));
	assert_non_null(ds);
	ds->ops = &fake_ops;
	return ds;
}

/* ---- calls ---- */

static pthread_t loop_thread;
static int work_order[64], done_order[64];
static int n_work, n_done, n_release, n_hook;
static ly_status done_st[64];
static char done_msg[64][LY_ERROR_MSG_MAX];
/* A gate the blocking work waits on. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;

struct call {
	int id;
	bool block;      /* wait for the gate */
	bool change;     /* report an entry change */
	ly_status result;
};
/* What a blocked call's work saw of ly_datastore_gave_up once let through (-1: not yet). */
static int gave_up_seen = -1;
/* n_hook as done of a changing call saw it. */
static int hook_at_done = -1;

static int
atomic_get(int *p)
{
	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static ly_status
work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct call *c = ctx;

	assert_false(pthread_equal(pthread_self(), loop_thread));
	if (c->block) {
		pthread_mutex_lock(&gate_mu);
		while (!gate_open)
			pthread_cond_wait(&gate_cv, &gate_mu);
		pthread_mutex_unlock(&gate_mu);
	}
	if (c->block)
		__atomic_store_n(&gave_up_seen, ly_datastore_gave_up(ds) ? 1 : 0, __ATOMIC_SEQ_CST);
	int i = __atomic_fetch_add(&n_work, 1, __ATOMIC_SEQ_CST);
	work_order[i] = c->id;
	if (c->change) {
		/* Borrowed for the hook's call only: the worker must copy it (trust_domain too: federation's). */
		char *td = strdup("b.test");
		assert_non_null(td);
		struct ly_datastore_change ch = { .kind = LY_DATASTORE_ENTRY_CREATED, .revision = 7, .entry_id = "entry-1",
			.trust_domain = td };
		ly_datastore_changed(ds, &ch);
		memset(td, 'x', strlen(td));
		free(td);
	}
	if (c->result != LY_OK)
		return ly_error_set(err, c->result, "fake failure %d", c->id);
	return LY_OK;
}

static void
done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct call *c = ctx;

	assert_true(pthread_equal(pthread_self(), loop_thread));
	if (c->change)
		hook_at_done = n_hook;
	done_order[n_done] = c->id;
	done_st[n_done] = st;
	(void)snprintf(done_msg[n_done], sizeof(done_msg[0]), "%s", st != LY_OK ? err->msg : "");
	n_done++;
}

static void
release(void *ctx)
{
	__atomic_add_fetch(&n_release, 1, __ATOMIC_SEQ_CST);
	free(ctx);
}

static void
hook(void *arg, const struct ly_datastore_change *change)
{
	assert_true(pthread_equal(pthread_self(), loop_thread));
	assert_int_equal(change->kind, LY_DATASTORE_ENTRY_CREATED);
	assert_int_equal(change->revision, 7);
	assert_string_equal(change->entry_id, "entry-1");
	assert_non_null(change->trust_domain);
	assert_string_equal(change->trust_domain, "b.test");
	(*(int *)arg)++;
}

static struct call *
call_new(int id, bool block)
{
	struct call *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->id = id;
	c->block = block;
	return c;
}

/* ---- the loop, run until a condition (with a cap) ---- */

static bool (*until_fn)(void);
static uint64_t until_limit;

static void
until_cb(uv_timer_t *t)
{
	if (until_fn() || uv_now(t->loop) >= until_limit)
		uv_timer_stop(t);
}

static void
run_until(uv_loop_t *loop, bool (*fn)(void), uint64_t max_ms)
{
	uv_timer_t t;

	until_fn = fn;
	uv_update_time(loop);
	until_limit = uv_now(loop) + max_ms;
	assert_int_equal(uv_timer_init(loop, &t), 0);
	assert_int_equal(uv_timer_start(&t, until_cb, 1, 1), 0);
	(void)uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	(void)uv_run(loop, UV_RUN_NOWAIT);
}

static int want_done;
static bool
enough_done(void)
{
	return n_done >= want_done;
}
static int want_release;
static bool
enough_released(void)
{
	return atomic_get(&n_release) >= want_release;
}

static int
setup(void **state)
{
	(void)state;
	loop_thread = pthread_self();
	n_work = n_done = n_release = n_hook = 0;
	fake_closed = 0;
	hook_at_done = -1;
	gave_up_seen = -1;
	gate_open = false;
	memset(work_order, 0, sizeof(work_order));
	memset(done_order, 0, sizeof(done_order));
	return 0;
}

static void
open_gate(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_open = true;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

static void *
open_gate_later(void *arg)
{
	(void)arg;
	usleep(100000);
	open_gate();
	return NULL;
}

/* In order, on the loop thread, hooks first; failures keep the back end's message. */
static void
test_order_and_thread(void **state)
{
	uv_loop_t loop;
	struct ly_dsa *dsa = NULL;
	struct call *calls[10];

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_dsa_new(&loop, fake_open(), NULL, &dsa, NULL), LY_OK);
	assert_int_equal(ly_dsa_on_change(dsa, hook, &n_hook, NULL), LY_OK);
	for (int i = 0; i < 10; i++) {
		calls[i] = call_new(i, false);
		calls[i]->change = i == 3;
		calls[i]->result = i == 5 ? LY_E_NOT_FOUND : LY_OK;
		assert_int_equal(ly_dsa_submit(dsa, work, done, release, calls[i], 0, NULL), LY_OK);
	}
	assert_int_equal(ly_dsa_pending(dsa), 10);
	want_done = 10;
	run_until(&loop, enough_done, 5000);
	assert_int_equal(n_done, 10);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(work_order[i], i);
		assert_int_equal(done_order[i], i);
	}
	assert_int_equal(done_st[5], LY_E_NOT_FOUND);
	assert_string_equal(done_msg[5], "fake failure 5");
	assert_int_equal(n_hook, 1);
	assert_int_equal(n_release, 10);
	assert_int_equal(ly_dsa_pending(dsa), 0);
	/* A refusal is an answer: the store is reachable. */
	assert_true(ly_dsa_reachable(dsa, NULL));
	ly_dsa_close(dsa);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(fake_closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* The hook runs before done of the call that made the change. */
static void
test_hook_before_done(void **state)
{
	uv_loop_t loop;
	struct ly_dsa *dsa = NULL;
	struct call *c = call_new(1, false);
	int other = 0;

	(void)state;
	c->change = true;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_dsa_new(&loop, fake_open(), NULL, &dsa, NULL), LY_OK);
	assert_int_equal(ly_dsa_on_change(dsa, hook, &n_hook, NULL), LY_OK);
	assert_int_equal(ly_dsa_on_change(dsa, hook, &other, NULL), LY_OK);
	ly_dsa_off_change(dsa, hook, &other);
	assert_int_equal(ly_dsa_submit(dsa, work, done, NULL, c, 0, NULL), LY_OK);
	want_done = 1;
	run_until(&loop, enough_done, 5000);
	assert_int_equal(n_done, 1);
	assert_int_equal(n_hook, 1);
	assert_int_equal(hook_at_done, 1);
	assert_int_equal(other, 0);
	ly_dsa_close(dsa);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/*
 * A call that never returns: its caller hears "no answer" at the deadline,
 * the call queued behind it times out too and never runs, new calls are
 * refused at once; when the held call returns, the store is reachable
 * again and calls run.
 */
static void
test_timeout_and_recovery(void **state)
{
	uv_loop_t loop;
	struct ly_dsa *dsa = NULL;
	struct ly_dsa_config cfg = { .deadline_ms = 100 };
	struct ly_error e;
	const char *why = NULL;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_dsa_new(&loop, fake_open(), &cfg, &dsa, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(1, true), 0, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(2, false), 0, NULL), LY_OK);
	uint64_t t0 = uv_hrtime();
	want_done = 2;
	run_until(&loop, enough_done, 5000);
	double waited = (double)(uv_hrtime() - t0) / 1e6;
	assert_int_equal(n_done, 2);
	assert_true(waited >= 90 && waited < 3000);
	assert_int_equal(done_st[0], LY_E_IO);
	assert_string_equal(done_msg[0],
	    "datastore: no answer within 100 ms (the call was running: a change may still be applied when the "
	    "datastore answers)");
	assert_int_equal(done_st[1], LY_E_IO);
	assert_string_equal(done_msg[1], "datastore: no answer within 100 ms (not started: nothing applied)");
	/* The queued one was dropped (released at once); the held one is not released yet. */
	assert_int_equal(atomic_get(&n_release), 1);
	assert_false(ly_dsa_reachable(dsa, &why));
	assert_non_null(why);
	struct call *refused = call_new(3, false);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, refused, 0, &e), LY_E_IO);
	assert_non_null(strstr(e.msg, "datastore unreachable"));
	free(refused); /* refused: still the caller's */
	assert_int_equal(atomic_get(&n_work), 0);

	open_gate();
	want_release = 2;
	run_until(&loop, enough_released, 5000);
	assert_int_equal(atomic_get(&n_release), 2);
	assert_int_equal(atomic_get(&n_work), 1); /* only the held call ran; call 2 never did */
	assert_int_equal(work_order[0], 1);
	assert_int_equal(atomic_get(&gave_up_seen), 1); /* the back end could tell its caller gave up */
	assert_int_equal(n_done, 2);              /* no second done for the late one */
	assert_true(ly_dsa_reachable(dsa, NULL));
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(4, false), 0, NULL), LY_OK);
	want_done = 3;
	run_until(&loop, enough_done, 5000);
	assert_int_equal(done_st[2], LY_OK);
	assert_int_equal(done_order[2], 4);
	ly_dsa_close(dsa);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* A LY_E_IO answer makes the store unreachable until a later answer; the queue has a cap. */
static void
test_io_error_and_cap(void **state)
{
	uv_loop_t loop;
	struct ly_dsa *dsa = NULL;
	struct ly_dsa_config cfg = { .queue_max = 2 };
	struct ly_error e;
	struct call *c;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_dsa_new(&loop, fake_open(), &cfg, &dsa, NULL), LY_OK);
	c = call_new(1, false);
	c->result = LY_E_IO;
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, c, 0, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(2, true), 0, NULL), LY_OK);
	c = call_new(3, false);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, c, 0, &e), LY_E_LIMIT);
	free(c);
	want_done = 1;
	run_until(&loop, enough_done, 5000);
	assert_int_equal(done_st[0], LY_E_IO);
	assert_false(ly_dsa_reachable(dsa, NULL));
	open_gate();
	want_done = 2;
	run_until(&loop, enough_done, 5000);
	assert_int_equal(atomic_get(&gave_up_seen), 0); /* answered in time: nobody gave up */
	assert_true(ly_dsa_reachable(dsa, NULL));
	ly_dsa_close(dsa);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Close with one call running (it ends within the wait) and two queued: every done runs, queued work never. */
static void
test_close_in_flight_joined(void **state)
{
	uv_loop_t loop;
	struct ly_dsa *dsa = NULL;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_dsa_new(&loop, fake_open(), NULL, &dsa, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(1, true), 0, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(2, false), 0, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(3, false), 0, NULL), LY_OK);
	usleep(20000); /* the worker takes call 1 and waits at the gate */
	/* Open the gate from another thread shortly after close starts waiting. */
	pthread_t opener;
	assert_int_equal(pthread_create(&opener, NULL, open_gate_later, NULL), 0);
	ly_dsa_close(dsa);
	pthread_join(opener, NULL);
	assert_int_equal(n_done, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(done_st[i], LY_E_IO);
		assert_string_equal(done_msg[i], "datastore: closing");
	}
	assert_int_equal(atomic_get(&n_work), 1);
	assert_int_equal(atomic_get(&gave_up_seen), 1); /* closing: its caller heard "closing" */
	assert_int_equal(atomic_get(&n_release), 3);
	assert_int_equal(atomic_get(&fake_closed), 1);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* Close with a call stuck in the back end: close returns after its wait; the worker ends on its own later. */
static void
test_close_stuck_detached(void **state)
{
	uv_loop_t loop;
	struct ly_dsa *dsa = NULL;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_dsa_new(&loop, fake_open(), NULL, &dsa, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(1, true), 0, NULL), LY_OK);
	usleep(20000);
	uint64_t t0 = uv_hrtime();
	ly_dsa_close(dsa);
	double waited = (double)(uv_hrtime() - t0) / 1e6;
	assert_true(waited >= LY_DSA_CLOSE_WAIT_MS - 50 && waited < LY_DSA_CLOSE_WAIT_MS + 3000);
	assert_int_equal(n_done, 1);
	assert_string_equal(done_msg[0], "datastore: closing");
	assert_int_equal(atomic_get(&n_release), 0);
	assert_int_equal(atomic_get(&fake_closed), 0);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	/* The call returns: the worker releases it, closes the store and frees the rest (ASan: no leak). */
	open_gate();
	for (int i = 0; i < 500 && atomic_get(&fake_closed) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_get(&n_release), 1);
	assert_int_equal(atomic_get(&fake_closed), 1);
	usleep(20000); /* its last unref */
}

static ly_status
sync_work_fn(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	(void)ds;
	int *v = ctx;
	assert_false(pthread_equal(pthread_self(), loop_thread));
	*v = 42;
	return *v == 42 && n_work == 2 ? LY_OK : ly_error_set(err, LY_E_IO, "out of order");
}

/* ly_dsa_call_sync: the calls queued before it complete first (their done from inside it), then its result. */
static void
test_call_sync(void **state)
{
	uv_loop_t loop;
	struct ly_dsa *dsa = NULL;
	int v = 0;

	(void)state;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(ly_dsa_new(&loop, fake_open(), NULL, &dsa, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(1, false), 0, NULL), LY_OK);
	assert_int_equal(ly_dsa_submit(dsa, work, done, release, call_new(2, false), 0, NULL), LY_OK);
	assert_int_equal(ly_dsa_call_sync(dsa, sync_work_fn, &v, NULL), LY_OK);
	assert_int_equal(v, 42);
	assert_int_equal(n_done, 2);
	assert_int_equal(done_order[0], 1);
	assert_int_equal(done_order[1], 2);
	assert_int_equal(ly_dsa_pending(dsa), 0);
	ly_dsa_close(dsa);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_order_and_thread, setup),
		cmocka_unit_test_setup(test_hook_before_done, setup),
		cmocka_unit_test_setup(test_timeout_and_recovery, setup),
		cmocka_unit_test_setup(test_io_error_and_cap, setup),
		cmocka_unit_test_setup(test_close_in_flight_joined, setup),
		cmocka_unit_test_setup(test_close_stuck_detached, setup),
		cmocka_unit_test_setup(test_call_sync, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
