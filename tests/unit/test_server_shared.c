/*
 * test_server_shared.c: server/server_shared.h's publish and reload on the
 * datastore's worker (ly_server_shared_update), over a fake shared back end
 * whose calls wait at a gate: while the datastore stalls the loop keeps
 * turning (a timer keeps firing), the CA hears ly_ca_set_published only
 * once the publish committed (never after a failed one), requests made
 * meanwhile coalesce into one more job, a failed read keeps the rows last
 * read and our own authorities (and is tried once more), and a shutdown
 * with a job in flight drops it cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/bundle.h"
#include "server/ca.h"
#include "server/datastore_async.h"
#include "server/server_core.h"
#include "server/server_shared.h"

#define TD "example.org"
#define T0 ((time_t)1800000000)
#define OTHER_ID "00000000-0000-4000-8000-000000000002"

/* ---- a fake shared back end: publish and read wait at the gate ---- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int n_publish, n_read;
static ly_status publish_result, read_result;
/* What the read returns: another server's authorities (read-only once the test starts). */
static struct ly_shared_authorities foreign = LY_SHARED_AUTHORITIES_INIT;

static void
gate_set(bool open)
{
	pthread_mutex_lock(&gate_mu);
	gate_open = open;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

static void
gate_wait(void)
{
	pthread_mutex_lock(&gate_mu);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
}

static ly_status
fake_publish(struct ly_datastore *ds, const char *server_id, const struct ly_shared_authorities *mine, int64_t now,
    uint64_t min_sequence, uint64_t *sequence, struct ly_error *err)
{
	(void)ds;
	(void)server_id;
	(void)mine;
	(void)now;
	gate_wait();
	__atomic_add_fetch(&n_publish, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&publish_result, __ATOMIC_SEQ_CST) != LY_OK)
		return ly_error_set(err, LY_E_IO, "fake: publish failed");
	*sequence = min_sequence + 1;
	return LY_OK;
}

static ly_status
fake_read(struct ly_datastore *ds, int64_t now, struct ly_shared_authorities *out, struct ly_error *err)
{
	(void)ds;
	(void)now;
	gate_wait();
	__atomic_add_fetch(&n_read, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&read_result, __ATOMIC_SEQ_CST) != LY_OK)
		return ly_error_set(err, LY_E_IO, "fake: read failed");
	for (size_t i = 0; i < foreign.n; i++) {
		const struct ly_shared_authority *a = &foreign.items[i];
		LY_TRY(ly_shared_authorities_add(out, a->server_id, a->jwt, a->kid, a->der.data, a->der.len,
		    a->not_after, err));
	}
	out->sequence = 5;
	return LY_OK;
}

static void
fake_close(struct ly_datastore *ds)
{
	free(ds);
}

static const struct ly_datastore_ops fake_ops = {
	.name = "fake", .close = fake_close, .bundle_publish = fake_publish, .bundle_read = fake_read,
};

/* ---- the fixture: a CA, the worker, a timer on the loop ---- */

struct fx {
	char dir[64], other_dir[64];
	uv_loop_t loop;
	struct ly_server srv;
	uv_timer_t ticker;
	int ticks;
	int outcomes;
	struct ly_shared_outcome last;
	char publish_msg[LY_ERROR_MSG_MAX], reload_msg[LY_ERROR_MSG_MAX];
	time_t published_at_done; /* ly_ca_published_upto when the outcome came */
};

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int64_t
jwt_expiry(void *arg, const char *kid)
{
	return (int64_t)ly_ca_jwt_not_after(arg, kid);
}

static struct ly_ca *
open_ca(const char *dir)
{
	struct ly_ca_config c;
	struct ly_ca *ca = NULL;
	struct ly_error err;

	memset(&c, 0, sizeof(c));
	c.trust_domain = TD;
	c.data_dir = dir;
	if (ly_ca_open(&c, T0, &ca, &err) != LY_OK)
		fail_msg("ly_ca_open: %s", err.msg);
	return ca;
}

static void
on_outcome(void *arg, const struct ly_shared_outcome *o)
{
	struct fx *f = arg;

	f->outcomes++;
	f->last = *o;
	(void)snprintf(f->publish_msg, sizeof(f->publish_msg), "%s", o->publish_rc != LY_OK ? o->publish_msg : "");
	(void)snprintf(f->reload_msg, sizeof(f->reload_msg), "%s", o->reload_rc != LY_OK ? o->reload_msg : "");
	f->published_at_done = ly_ca_published_upto(f->srv.ca);
}

static void
on_tick(uv_timer_t *t)
{
	struct fx *f = t->data;
	f->ticks++;
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct ly_error err;

	assert_non_null(f);
	strcpy(f->dir, "/tmp/lanyard-test-shared-XXXXXX");
	strcpy(f->other_dir, "/tmp/lanyard-test-shared-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_non_null(mkdtemp(f->other_dir));
	assert_int_equal(uv_loop_init(&f->loop), 0);
	f->srv.loop = &f->loop;
	strcpy(f->srv.cfg.trust_domain, TD);
	f->srv.ca = open_ca(f->dir);
	strcpy(f->srv.server_id, "00000000-0000-4000-8000-000000000001");
	/* Another server's authorities, what the read returns. */
	struct ly_ca *other = open_ca(f->other_dir);
	foreign = (struct ly_shared_authorities)LY_SHARED_AUTHORITIES_INIT;
	assert_int_equal(ly_shared_authorities_from_bundle(ly_ca_bundle(other), OTHER_ID, jwt_expiry, other, &foreign,
	    &err), LY_OK);
	ly_ca_free(other);
	struct ly_datastore *ds = calloc(1, sizeof(*ds));
	assert_non_null(ds);
	ds->ops = &fake_ops;
	f->srv.ds_shared = ly_datastore_shared(ds);
	assert_true(f->srv.ds_shared);
	struct ly_dsa_config dc = { .deadline_ms = 10000 };
	assert_int_equal(ly_dsa_new(&f->loop, ds, &dc, &f->srv.dsa, &err), LY_OK);
	ly_server_shared_on_done(&f->srv, on_outcome, f);
	gate_set(false);
	n_publish = n_read = 0;
	publish_result = read_result = LY_OK;
	uv_timer_init(&f->loop, &f->ticker);
	f->ticker.data = f;
	uv_timer_start(&f->ticker, on_tick, 2, 2);
	*state = f;
	return 0;
}

static void *
open_later(void *arg)
{
	(void)arg;
	usleep(50 * 1000);
	gate_set(true);
	return NULL;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	pthread_t th;

	/* A job still in flight: dropped (stopping), its calls released once the worker lets go. */
	f->srv.stopping = true;
	assert_int_equal(pthread_create(&th, NULL, open_later, NULL), 0);
	ly_dsa_close(f->srv.dsa);
	f->srv.dsa = NULL;
	uv_close((uv_handle_t *)&f->ticker, NULL);
	(void)uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	pthread_join(th, NULL);
	ly_server_shared_close(&f->srv);
	ly_ca_free(f->srv.ca);
	ly_shared_authorities_cleanup(&foreign);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	nftw(f->other_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Runs the loop until `n` outcomes came (or about 5 s passed). */
static void
run_until_outcomes(struct fx *f, int n)
{
	for (int i = 0; i < 5000 && f->outcomes < n; i++)
		(void)uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(f->outcomes, n);
}

/* Runs the loop for `n` more ticks of the timer. */
static void
run_ticks(struct fx *f, int n)
{
	int until = f->ticks + n;
	while (f->ticks < until)
		(void)uv_run(&f->loop, UV_RUN_ONCE);
}

/* The publish stalls: the loop keeps turning, and the CA may sign with the new authority only once it committed. */
static void
test_publish_stalled_loop_turns(void **state)
{
	struct fx *f = *state;

	assert_int_equal(ly_ca_published_upto(f->srv.ca), 0);
	ly_server_shared_update(&f->srv, true, (int64_t)T0 + 10);
	run_ticks(f, 20); /* 20 timer turns while the worker waits at the gate */
	assert_int_equal(f->outcomes, 0);
	assert_int_equal(__atomic_load_n(&n_publish, __ATOMIC_SEQ_CST), 0);
	assert_int_equal(ly_ca_published_upto(f->srv.ca), 0); /* not committed: not published */
	assert_null(f->srv.shared_bundle);
	gate_set(true);
	run_until_outcomes(f, 1);
	assert_true(f->last.publish_asked);
	assert_int_equal(f->last.publish_rc, LY_OK);
	assert_int_equal(f->last.reload_rc, LY_OK);
	assert_true(f->last.changed);
	assert_int_equal(f->published_at_done, T0 + 10);
	assert_int_equal(n_publish, 1);
	assert_int_equal(n_read, 1);
	/* The union: the other server's authorities and ours. */
	const struct ly_bundle *b = f->srv.shared_bundle;
	assert_non_null(b);
	assert_int_equal(ly_bundle_x509_authority_count(b),
	    2 * ly_bundle_x509_authority_count(ly_ca_bundle(f->srv.ca)));
}

/* A failed publish: the CA never hears it was published; the reload still serves our own authorities. */
static void
test_publish_failed_not_published(void **state)
{
	struct fx *f = *state;

	publish_result = LY_E_IO;
	gate_set(true);
	ly_server_shared_update(&f->srv, true, (int64_t)T0 + 10);
	run_until_outcomes(f, 1);
	assert_int_not_equal(f->last.publish_rc, LY_OK);
	assert_non_null(strstr(f->publish_msg, "fake: publish failed"));
	assert_int_equal(ly_ca_published_upto(f->srv.ca), 0);
	assert_int_equal(f->last.reload_rc, LY_OK);
	assert_true(f->last.changed);
}

/* Requests while a job is in flight: one more job after it, publishing if any asked to. */
static void
test_requests_coalesce(void **state)
{
	struct fx *f = *state;

	ly_server_shared_update(&f->srv, false, (int64_t)T0 + 1);
	ly_server_shared_update(&f->srv, false, (int64_t)T0 + 2);
	ly_server_shared_update(&f->srv, true, (int64_t)T0 + 3);
	ly_server_shared_update(&f->srv, false, (int64_t)T0 + 4);
	run_ticks(f, 5);
	assert_int_equal(f->outcomes, 0);
	gate_set(true);
	run_until_outcomes(f, 1);
	assert_false(f->last.publish_asked);
	run_until_outcomes(f, 2);
	assert_true(f->last.publish_asked);
	assert_int_equal(f->last.publish_rc, LY_OK);
	assert_int_equal(f->published_at_done, T0 + 4); /* the latest `now` asked */
	run_ticks(f, 20);
	assert_int_equal(f->outcomes, 2);
	assert_int_equal(n_read, 2);
	assert_int_equal(n_publish, 1);
}

/* A failed read: tried once more, then the rows last read stay, and ours are always in. */
static void
test_read_failed_keeps_rows(void **state)
{
	struct fx *f = *state;

	gate_set(true);
	ly_server_shared_update(&f->srv, false, (int64_t)T0);
	run_until_outcomes(f, 1);
	size_t both = ly_bundle_x509_authority_count(f->srv.shared_bundle);
	uint64_t seq = ly_bundle_sequence(f->srv.shared_bundle);
	assert_int_equal(both, 2 * ly_bundle_x509_authority_count(ly_ca_bundle(f->srv.ca)));

	read_result = LY_E_IO;
	ly_server_shared_update(&f->srv, false, (int64_t)T0 + 1);
	run_until_outcomes(f, 2);
	assert_int_equal(n_read, 3); /* 1 + the failed one + its second try */
	assert_int_not_equal(f->last.reload_rc, LY_OK);
	assert_non_null(strstr(f->reload_msg, "fake: read failed"));
	assert_false(f->last.changed);
	assert_int_equal(ly_bundle_x509_authority_count(f->srv.shared_bundle), both);
	assert_int_equal(ly_bundle_sequence(f->srv.shared_bundle), seq);
}

/*
 * The database stalls past the deadline: the read times out (its second
 * try refused: the worker is held), then a request is refused at once and
 * its outcome comes before update returns; after shutdown began nothing
 * is asked or told.
 */
static void
test_stalled_past_deadline(void **state)
{
	struct fx *f = *state;
	struct ly_error err;

	ly_dsa_close(f->srv.dsa);
	(void)uv_run(&f->loop, UV_RUN_NOWAIT);
	struct ly_datastore *ds = calloc(1, sizeof(*ds));
	assert_non_null(ds);
	ds->ops = &fake_ops;
	struct ly_dsa_config dc = { .deadline_ms = 30 };
	assert_int_equal(ly_dsa_new(&f->loop, ds, &dc, &f->srv.dsa, &err), LY_OK);

	ly_server_shared_update(&f->srv, true, (int64_t)T0);
	run_until_outcomes(f, 1);
	assert_int_not_equal(f->last.publish_rc, LY_OK);
	assert_int_not_equal(f->last.reload_rc, LY_OK);
	assert_non_null(strstr(f->reload_msg, "no answer within"));
	assert_true(f->last.changed); /* our own authorities served all the same */
	assert_int_equal(ly_bundle_x509_authority_count(f->srv.shared_bundle),
	    ly_bundle_x509_authority_count(ly_ca_bundle(f->srv.ca)));
	assert_int_equal(ly_ca_published_upto(f->srv.ca), 0);

	ly_server_shared_update(&f->srv, true, (int64_t)T0 + 1);
	assert_int_equal(f->outcomes, 2); /* refused: told at once */
	assert_non_null(strstr(f->reload_msg, "unreachable"));
	assert_int_not_equal(f->last.publish_rc, LY_OK);
	assert_false(f->last.changed);

	f->srv.stopping = true;
	ly_server_shared_update(&f->srv, true, (int64_t)T0 + 2);
	assert_int_equal(f->outcomes, 2);
	assert_int_equal(ly_ca_published_upto(f->srv.ca), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_publish_stalled_loop_turns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_failed_not_published, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requests_coalesce, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_failed_keeps_rows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stalled_past_deadline, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
