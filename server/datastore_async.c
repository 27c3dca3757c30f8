/*
 * datastore_async.c: the datastore's worker thread and the loop's side of
 * it (datastore_async.h states the contract).
 *
 * Two structs: struct ly_dsa is the loop's (handles, the calls not yet
 * done, hooks, reachability); struct dsa_shared is what both threads
 * touch, always under its mutex (the two queues, the flags), plus the
 * datastore and the running call, which only the worker touches. The
 * shared part is counted (loop and worker): whoever lets go last frees it,
 * so a worker left stuck in the back end at close can still end cleanly.
 */
#include "server/datastore_async.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/caps.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "rpc/uvtimer.h"

enum req_state { RQ_QUEUED, RQ_RUNNING, RQ_FINISHED };

/* A change the back end's hook reported during a call (worker), replayed on the loop. */
struct dsa_change {
	struct ly_queue link;
	struct ly_datastore_change c;
	char *entry_id;
	char *agent_id;
	char *trust_domain;
};

struct dsa_req {
	struct ly_queue link; /* on sh->todo or sh->finished: under sh->mu */
	struct ly_queue live; /* on dsa->live until done ran: loop only */
	ly_dsa_work_fn *work;
	ly_dsa_done_fn *done;
	ly_dsa_release_fn *release;
	void *ctx;
	uint64_t t0_ns;
	uint64_t deadline_at; /* uv_now() milliseconds */
	uint32_t deadline_ms;
	enum req_state state; /* under sh->mu */
	bool done_called;     /* loop only */
	int gave_up;          /* atomic: the deadline passed while running (struct ly_datastore.gave_up) */
	/* Written by the worker before RQ_FINISHED, read by the loop after. */
	ly_status st;
	struct ly_error err;
	struct ly_queue changes;
};

struct dsa_shared {
	uv_mutex_t mu;
	uv_cond_t wake;   /* the worker: work or stop */
	uv_cond_t exited_cv; /* ly_dsa_close: the worker ended */
	struct ly_queue todo;
	struct ly_queue finished;
	bool stop;
	bool loop_gone; /* no uv_async_send; the worker releases what it finishes */
	bool exited;
	int refs;
	uv_async_t *async;
	/* The worker's alone. */
	struct ly_datastore *ds;
	struct dsa_req *current;
};

struct ly_dsa {
	uv_loop_t *loop;
	struct dsa_shared *sh;
	uv_async_t *async;
	uv_timer_t *timer;
	pthread_t thread;
	struct ly_queue live;
	size_t n_live;
	struct ly_datastore_hook hooks[LY_DATASTORE_HOOKS_MAX];
	size_t n_hooks;
	uint32_t deadline_ms;
	size_t queue_max;
	ly_dsa_observe_fn *observe;
	void *observe_arg;
	bool reachable;
	char why[96];
	bool held; /* the worker runs a call past its deadline */
	bool closing;
};

/* ---- both threads ----------------------------------------------------------------------------- */

static void
changes_free(struct ly_queue *head)
{
	struct ly_queue *q;

	while ((q = ly_queue_head(head)) != NULL) {
		struct dsa_change *c = LY_QUEUE_DATA(q, struct dsa_change, link);
		ly_queue_remove(q);
		free(c->entry_id);
		free(c->agent_id);
		free(c->trust_domain);
		free(c);
	}
}

static void
req_free(struct dsa_req *r)
{
	changes_free(&r->changes);
	if (r->release != NULL)
		r->release(r->ctx);
	else
		free(r->ctx);
	free(r);
}

static void
shared_unref(struct dsa_shared *sh)
{
	uv_mutex_lock(&sh->mu);
	int left = --sh->refs;
	uv_mutex_unlock(&sh->mu);
	if (left > 0)
		return;
	uv_cond_destroy(&sh->wake);
	uv_cond_destroy(&sh->exited_cv);
	uv_mutex_destroy(&sh->mu);
	free(sh);
}

/* ---- the worker ------------------------------------------------------------------------------- */

/* The back end's change hook, on the worker inside a write: noted in the running call. */
static void
worker_hook(void *arg, const struct ly_datastore_change *change)
{
	struct dsa_shared *sh = arg;
	struct dsa_req *r = sh->current;
	struct dsa_change *c;

	if (r == NULL)
		return;
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (change->entry_id != NULL && (c->entry_id = strdup(change->entry_id)) == NULL) ||
	    (change->agent_id != NULL && (c->agent_id = strdup(change->agent_id)) == NULL) ||
	    (change->trust_domain != NULL && (c->trust_domain = strdup(change->trust_domain)) == NULL)) {
		/* The agent API's poll catches up within seconds; say so. */
		log_warn("datastore change not relayed: out of memory");
		if (c != NULL) {
			free(c->entry_id);
			free(c->agent_id);
			free(c);
		}
		return;
	}
	c->c = *change;
	c->c.entry_id = c->entry_id;
	c->c.agent_id = c->agent_id;
	c->c.trust_domain = c->trust_domain;
	ly_queue_insert_tail(&r->changes, &c->link);
}

static void *
worker_main(void *arg)
{
	struct dsa_shared *sh = arg;

	uv_mutex_lock(&sh->mu);
	for (;;) {
		while (!sh->stop && ly_queue_empty(&sh->todo))
			uv_cond_wait(&sh->wake, &sh->mu);
		if (sh->stop)
			break;
		struct ly_queue *q = ly_queue_head(&sh->todo);
		struct dsa_req *r = LY_QUEUE_DATA(q, struct dsa_req, link);
		ly_queue_remove(q);
		r->state = RQ_RUNNING;
		sh->current = r;
		uv_mutex_unlock(&sh->mu);

		ly_error_clear(&r->err);
		sh->ds->gave_up = &r->gave_up;
		r->st = r->work(sh->ds, r->ctx, &r->err);
		sh->ds->gave_up = NULL;

		uv_mutex_lock(&sh->mu);
		sh->current = NULL;
		r->state = RQ_FINISHED;
		if (sh->loop_gone) {
			uv_mutex_unlock(&sh->mu);
			req_free(r);
			uv_mutex_lock(&sh->mu);
		} else {
			ly_queue_insert_tail(&sh->finished, &r->link);
			uv_async_send(sh->async);
		}
	}
	sh->exited = true;
	uv_cond_broadcast(&sh->exited_cv);
	uv_mutex_unlock(&sh->mu);
	ly_datastore_close(sh->ds);
	sh->ds = NULL;
	/* Release OpenSSL's per-thread state (libpq's TLS) before the thread ends. */
	OPENSSL_thread_stop();
	shared_unref(sh);
	return NULL;
}

/* ---- the loop --------------------------------------------------------------------------------- */

static void
set_reachable(struct ly_dsa *dsa, bool ok, const char *why, const struct ly_error *cause)
{
	if (ok) {
		if (!dsa->reachable)
			log_info("ready: datastore answers again");
		dsa->reachable = true;
		dsa->why[0] = '\0';
		return;
	}
	/* The words docs/operations.md tells operators to look for. */
	if (dsa->reachable)
		log_warn("not ready: datastore does not answer: %s%s%s", why, cause != NULL ? ": " : "",
		    cause != NULL ? cause->msg : "");
	dsa->reachable = false;
	(void)snprintf(dsa->why, sizeof(dsa->why), "%s", why);
}

static void
observe(struct ly_dsa *dsa, enum ly_dsa_outcome o, const struct dsa_req *r)
{
	if (dsa->observe != NULL)
		dsa->observe(dsa->observe_arg, o, r != NULL ? (double)(uv_hrtime() - r->t0_ns) / 1e9 : 0.0);
}

static void on_deadline(uv_timer_t *t);

/* Arms the deadline timer for the earliest deadline among the calls not yet done. */
static void
rearm(struct ly_dsa *dsa)
{
	struct ly_queue *q;
	uint64_t first = UINT64_MAX, now = uv_now(dsa->loop);

	if (dsa->timer == NULL)
		return;
	LY_QUEUE_FOREACH(q, &dsa->live) {
		const struct dsa_req *r = LY_QUEUE_DATA(q, struct dsa_req, live);
		if (r->deadline_at < first)
			first = r->deadline_at;
	}
	if (first == UINT64_MAX) {
		uv_timer_stop(dsa->timer);
		return;
	}
	ly_uvtimer_arm(dsa->timer, on_deadline, first > now ? first - now : 0);
}

static void
replay_changes(struct ly_dsa *dsa, struct dsa_req *r)
{
	struct ly_queue *q;

	if (dsa->closing)
		return;
	LY_QUEUE_FOREACH(q, &r->changes)
		ly_dsa_changed(dsa, &LY_QUEUE_DATA(q, struct dsa_change, link)->c);
}

/* Calls the worker finished, in order: hooks, then done, then release. */
static void
on_async(uv_async_t *h)
{
	struct ly_dsa *dsa = h->data;
	struct ly_queue done_list, *q;

	if (dsa == NULL)
		return;
	ly_queue_init(&done_list);
	uv_mutex_lock(&dsa->sh->mu);
	while ((q = ly_queue_head(&dsa->sh->finished)) != NULL) {
		ly_queue_remove(q);
		ly_queue_insert_tail(&done_list, q);
	}
	uv_mutex_unlock(&dsa->sh->mu);
	while ((q = ly_queue_head(&done_list)) != NULL) {
		struct dsa_req *r = LY_QUEUE_DATA(q, struct dsa_req, link);
		ly_queue_remove(q);
		/* Any answer frees the worker; LY_E_IO says the store fails. */
		dsa->held = false;
		set_reachable(dsa, r->st != LY_E_IO, "a call failed", &r->err);
		replay_changes(dsa, r);
		if (!r->done_called) {
			ly_queue_remove(&r->live);
			dsa->n_live--;
			r->done_called = true;
			observe(dsa, r->st == LY_E_IO ? LY_DSA_ERROR : LY_DSA_OK, r);
			r->done(r->ctx, r->st, &r->err);
		}
		req_free(r);
	}
	rearm(dsa);
}

/* Calls past their deadline hear it now; a queued one is dropped, a running one left to finish. */
static void
on_deadline(uv_timer_t *t)
{
	struct ly_dsa *dsa = t->data;
	struct ly_queue *q, *tmp;
	struct ly_error e;

	if (dsa == NULL)
		return;
	uint64_t now = uv_now(dsa->loop);
	LY_QUEUE_FOREACH_SAFE(q, tmp, &dsa->live) {
		struct dsa_req *r = LY_QUEUE_DATA(q, struct dsa_req, live);
		bool dropped = false;
		if (r->deadline_at > now)
			continue;
		uv_mutex_lock(&dsa->sh->mu);
		if (r->state == RQ_QUEUED) {
			ly_queue_remove(&r->link);
			dropped = true;
		} else if (r->state == RQ_RUNNING) {
			dsa->held = true;
			__atomic_store_n(&r->gave_up, 1, __ATOMIC_RELEASE);
		}
		bool finished = r->state == RQ_FINISHED;
		uv_mutex_unlock(&dsa->sh->mu);
		if (finished)
			continue; /* on_async delivers it */
		ly_queue_remove(&r->live);
		dsa->n_live--;
		r->done_called = true;
		(void)ly_error_set(&e, LY_E_IO, "datastore: no answer within %u ms%s", (unsigned)r->deadline_ms,
		    dropped ? " (not started: nothing applied)"
			    : " (the call was running: a change may still be applied when the datastore answers)");
		set_reachable(dsa, false, "a call timed out", NULL);
		observe(dsa, LY_DSA_TIMEOUT, r);
		r->done(r->ctx, LY_E_IO, &e);
		if (dropped)
			req_free(r);
	}
	rearm(dsa);
}

static void
free_handle(uv_handle_t *h)
{
	free(h);
}

ly_status
ly_dsa_new(uv_loop_t *loop, struct ly_datastore *ds, const struct ly_dsa_config *cfg, struct ly_dsa **out,
    struct ly_error *err)
{
	struct ly_dsa *dsa = NULL;
	struct dsa_shared *sh = NULL;
	ly_status rc;

	*out = NULL;
	if (loop == NULL || ds == NULL) {
		ly_datastore_close(ds);
		return ly_error_set(err, LY_E_INTERNAL, "datastore worker: no loop or datastore");
	}
	if ((dsa = calloc(1, sizeof(*dsa))) == NULL || (sh = calloc(1, sizeof(*sh))) == NULL ||
	    (dsa->async = calloc(1, sizeof(*dsa->async))) == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "datastore worker: out of memory");
		goto fail_nosync;
	}
	dsa->loop = loop;
	dsa->sh = sh;
	dsa->reachable = true;
	ly_queue_init(&dsa->live);
	dsa->deadline_ms = cfg != NULL && cfg->deadline_ms > 0 ? cfg->deadline_ms : LY_DSA_DEADLINE_MS;
	dsa->queue_max = cfg != NULL && cfg->queue_max > 0 ? cfg->queue_max : LY_DSA_QUEUE_MAX;
	dsa->observe = cfg != NULL ? cfg->observe : NULL;
	dsa->observe_arg = cfg != NULL ? cfg->observe_arg : NULL;
	ly_queue_init(&sh->todo);
	ly_queue_init(&sh->finished);
	sh->ds = ds;
	ds = NULL;
	sh->refs = 1;
	if (uv_mutex_init(&sh->mu) != 0 || uv_cond_init(&sh->wake) != 0 || uv_cond_init(&sh->exited_cv) != 0) {
		/* Linux never fails these without memory pressure; nothing to unwind but memory. */
		rc = ly_error_set(err, LY_E_INTERNAL, "datastore worker: mutex");
		goto fail_nosync;
	}
	/* The back end's hook feeds the running call (worker); ours run on the loop. */
	if ((rc = ly_datastore_on_change(sh->ds, worker_hook, sh, err)) != LY_OK)
		goto fail;
	if ((rc = ly_uvtimer_new(loop, dsa, true, &dsa->timer, err)) != LY_OK)
		goto fail;
	if (uv_async_init(loop, dsa->async, on_async) != 0) {
		rc = ly_error_set(err, LY_E_INTERNAL, "datastore worker: uv_async_init failed");
		goto fail;
	}
	dsa->async->data = dsa;
	/* The calls' owners keep the loop alive, not the worker's doorbell. */
	uv_unref((uv_handle_t *)dsa->async);
	sh->async = dsa->async;
	sh->refs = 2;
	if (pthread_create(&dsa->thread, NULL, worker_main, sh) != 0) {
		sh->refs = 1;
		uv_close((uv_handle_t *)dsa->async, free_handle);
		dsa->async = NULL;
		rc = ly_error_set(err, LY_E_INTERNAL, "datastore worker: cannot start its thread");
		goto fail;
	}
	*out = dsa;
	return LY_OK;
fail:
	if (sh != NULL) {
		ly_datastore_close(sh->ds);
		sh->ds = NULL;
		shared_unref(sh);
		sh = NULL;
	}
fail_nosync:
	if (sh != NULL) {
		ly_datastore_close(sh->ds);
		free(sh);
	}
	ly_datastore_close(ds);
	if (dsa != NULL) {
		ly_uvtimer_close(&dsa->timer);
		free(dsa->async);
		free(dsa);
	}
	return rc;
}

ly_status
ly_dsa_submit(struct ly_dsa *dsa, ly_dsa_work_fn *work, ly_dsa_done_fn *done, ly_dsa_release_fn *release, void *ctx,
    uint32_t deadline_ms, struct ly_error *err)
{
	struct dsa_req *r;

	if (dsa == NULL || work == NULL || done == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "datastore call: no worker or callback");
	if (dsa->closing)
		return ly_error_set(err, LY_E_IO, "datastore: closing");
	if (dsa->held) {
		observe(dsa, LY_DSA_REFUSED, NULL);
		return ly_error_set(err, LY_E_IO, "datastore unreachable: a call is still waiting for its answer past its "
		    "deadline");
	}
	if (dsa->n_live >= dsa->queue_max) {
		observe(dsa, LY_DSA_REFUSED, NULL);
		return ly_error_set(err, LY_E_LIMIT, "datastore: %zu calls waiting already", dsa->n_live);
	}
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore call: out of memory");
	r->work = work;
	r->done = done;
	r->release = release;
	r->ctx = ctx;
	r->t0_ns = uv_hrtime();
	r->deadline_ms = deadline_ms > 0 ? deadline_ms : dsa->deadline_ms;
	/* uv_now is the loop's cached clock: refreshed so a call made late in a long turn gets its whole time. */
	uv_update_time(dsa->loop);
	r->deadline_at = uv_now(dsa->loop) + r->deadline_ms;
	r->state = RQ_QUEUED;
	ly_queue_init(&r->changes);
	uv_mutex_lock(&dsa->sh->mu);
	ly_queue_insert_tail(&dsa->sh->todo, &r->link);
	uv_cond_signal(&dsa->sh->wake);
	uv_mutex_unlock(&dsa->sh->mu);
	ly_queue_insert_tail(&dsa->live, &r->live);
	dsa->n_live++;
	rearm(dsa);
	return LY_OK;
}

bool
ly_dsa_reachable(const struct ly_dsa *dsa, const char **why)
{
	if (dsa == NULL) {
		if (why != NULL)
			*why = "datastore not open";
		return false;
	}
	if (why != NULL)
		*why = dsa->reachable ? NULL : dsa->why;
	return dsa->reachable;
}

size_t
ly_dsa_pending(const struct ly_dsa *dsa)
{
	return dsa != NULL ? dsa->n_live : 0;
}

ly_status
ly_dsa_on_change(struct ly_dsa *dsa, ly_datastore_change_fn *fn, void *arg, struct ly_error *err)
{
	if (dsa == NULL || fn == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "datastore change hook: no worker or callback");
	if (dsa->n_hooks >= LY_DATASTORE_HOOKS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "datastore change hook: more than %d callbacks",
		    LY_DATASTORE_HOOKS_MAX);
	dsa->hooks[dsa->n_hooks].fn = fn;
	dsa->hooks[dsa->n_hooks].arg = arg;
	dsa->n_hooks++;
	return LY_OK;
}

void
ly_dsa_off_change(struct ly_dsa *dsa, ly_datastore_change_fn *fn, void *arg)
{
	if (dsa == NULL)
		return;
	for (size_t i = 0; i < dsa->n_hooks; i++) {
		if (dsa->hooks[i].fn != fn || dsa->hooks[i].arg != arg)
			continue;
		memmove(&dsa->hooks[i], &dsa->hooks[i + 1], (dsa->n_hooks - i - 1) * sizeof(dsa->hooks[0]));
		dsa->n_hooks--;
		return;
	}
}

void
ly_dsa_changed(struct ly_dsa *dsa, const struct ly_datastore_change *change)
{
	/* A callback may unregister itself (or another): walk a copy. */
	struct ly_datastore_hook hooks[LY_DATASTORE_HOOKS_MAX];
	size_t n;

	if (dsa == NULL)
		return;
	n = dsa->n_hooks;
	memcpy(hooks, dsa->hooks, n * sizeof(hooks[0]));
	for (size_t i = 0; i < n; i++)
		hooks[i].fn(hooks[i].arg, change);
}

/* ---- a call the loop waits for (ly_dsa_call_sync) ---- */

struct sync_call {
	ly_dsa_work_fn *work;
	void *ctx;
	uv_mutex_t mu;
	uv_cond_t cv;
	bool worked;    /* the worker returned from work (under mu) */
	bool delivered; /* done ran (loop) */
	bool released;  /* the module let go (loop) */
	ly_status st;
	struct ly_error err;
};

static ly_status
sync_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct sync_call *sc = ctx;
	ly_status st = sc->work(ds, sc->ctx, err);

	uv_mutex_lock(&sc->mu);
	sc->worked = true;
	uv_cond_signal(&sc->cv);
	uv_mutex_unlock(&sc->mu);
	return st;
}

static void
sync_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct sync_call *sc = ctx;

	sc->delivered = true;
	sc->st = st;
	if (st != LY_OK)
		sc->err = *err;
}

/* The module lets go of sc (right after sync_done, in on_async); ly_dsa_call_sync frees it. */
static void
sync_release(void *ctx)
{
	struct sync_call *sc = ctx;

	sc->released = true;
}

static void
sync_free(struct sync_call *sc)
{
	uv_cond_destroy(&sc->cv);
	uv_mutex_destroy(&sc->mu);
	free(sc);
}

ly_status
ly_dsa_call_sync(struct ly_dsa *dsa, ly_dsa_work_fn *work, void *ctx, struct ly_error *err)
{
	struct sync_call *sc = calloc(1, sizeof(*sc));
	ly_status rc;

	if (sc == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore call: out of memory");
	sc->work = work;
	sc->ctx = ctx;
	if (uv_mutex_init(&sc->mu) != 0 || uv_cond_init(&sc->cv) != 0) {
		free(sc); /* Linux: only without memory; nothing else to undo */
		return ly_error_set(err, LY_E_INTERNAL, "datastore call: mutex");
	}
	if ((rc = ly_dsa_submit(dsa, sync_work, sync_done, sync_release, sc, 0, err)) != LY_OK) {
		sync_free(sc);
		return rc;
	}
	/* The worker's answer, however long the back end takes (its own timeouts bound it). */
	uv_mutex_lock(&sc->mu);
	while (!sc->worked)
		uv_cond_wait(&sc->cv, &sc->mu);
	uv_mutex_unlock(&sc->mu);
	/* Delivered in order with the calls before it; the worker queues it right after `worked`. */
	while (!sc->released) {
		on_async(dsa->async);
		if (!sc->released)
			uv_sleep(1);
	}
	rc = sc->st;
	if (rc != LY_OK && err != NULL)
		*err = sc->err;
	sync_free(sc);
	return rc;
}

void
ly_dsa_close(struct ly_dsa *dsa)
{
	struct ly_queue q_done, *q, *tmp;
	struct ly_error e;

	if (dsa == NULL)
		return;
	struct dsa_shared *sh = dsa->sh;
	dsa->closing = true;
	ly_uvtimer_close(&dsa->timer);
	(void)ly_error_set(&e, LY_E_IO, "datastore: closing");
	/* Every call not done hears it now; the queued ones never run. */
	LY_QUEUE_FOREACH_SAFE(q, tmp, &dsa->live) {
		struct dsa_req *r = LY_QUEUE_DATA(q, struct dsa_req, live);
		uv_mutex_lock(&sh->mu);
		bool dropped = r->state == RQ_QUEUED;
		if (dropped)
			ly_queue_remove(&r->link);
		else if (r->state == RQ_RUNNING)
			__atomic_store_n(&r->gave_up, 1, __ATOMIC_RELEASE);
		uv_mutex_unlock(&sh->mu);
		ly_queue_remove(&r->live);
		dsa->n_live--;
		r->done_called = true;
		r->done(r->ctx, LY_E_IO, &e);
		if (dropped)
			req_free(r);
	}
	/* The worker ends after its current call; wait a little for it. */
	uv_mutex_lock(&sh->mu);
	sh->stop = true;
	uv_cond_signal(&sh->wake);
	uint64_t until = uv_hrtime() + (uint64_t)LY_DSA_CLOSE_WAIT_MS * 1000000u;
	while (!sh->exited) {
		uint64_t now = uv_hrtime();
		if (now >= until || uv_cond_timedwait(&sh->exited_cv, &sh->mu, until - now) != 0)
			break;
	}
	bool exited = sh->exited;
	if (!exited)
		sh->loop_gone = true;
	ly_queue_init(&q_done);
	while ((q = ly_queue_head(&sh->finished)) != NULL) {
		ly_queue_remove(q);
		ly_queue_insert_tail(&q_done, q);
	}
	uv_mutex_unlock(&sh->mu);
	while ((q = ly_queue_head(&q_done)) != NULL) {
		ly_queue_remove(q);
		req_free(LY_QUEUE_DATA(q, struct dsa_req, link));
	}
	if (exited) {
		(void)pthread_join(dsa->thread, NULL);
	} else {
		log_warn("datastore worker still in a call after %d ms: left to end by itself", LY_DSA_CLOSE_WAIT_MS);
		(void)pthread_detach(dsa->thread);
	}
	dsa->async->data = NULL;
	uv_close((uv_handle_t *)dsa->async, free_handle);
	shared_unref(sh);
	free(dsa);
}
