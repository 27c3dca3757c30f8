/*
 * datastore_async.h: the datastore off the event loop.
 *
 * Why: a datastore call blocks (SQLite's fsync, PostgreSQL's round trips;
 * a PostgreSQL host that stops answering holds a libpq call for as long as
 * TCP keeps the connection). On the loop thread that froze every agent
 * stream. Here one worker thread owns the struct ly_datastore and runs the
 * calls; the loop thread submits them and hears the outcome in a callback.
 *
 * Why a worker thread and not libpq's async API on the loop (uv_poll on
 * PQsocket): the operations are written once over both back ends
 * (datastore_engine.h) as sequences of blocking statements inside one
 * transaction, and SQLite has no async API at all. A worker keeps every
 * back end and the engine as they are, and one PostgreSQL connection (or
 * one SQLite handle) is serial anyway, so one worker loses nothing. libpq's
 * own connect (PQreset) also runs there, off the loop.
 *
 * Threads and ownership:
 *  - ly_dsa_new takes the datastore; from then on only the worker touches
 *    it (every back-end call, the back end's change hook, ly_datastore_close
 *    at the end). The loop must not keep or use the pointer.
 *  - Everything else here (submission, callbacks, hooks, deadlines,
 *    statistics) is the loop thread's. The two meet in a mutex-guarded pair
 *    of queues and one uv_async.
 *  - A call is `work(ds, ctx, err)` on the worker, then `done(ctx, status,
 *    err)` on the loop, exactly once for every call ly_dsa_submit accepted
 *    (an error return from ly_dsa_submit means neither runs), then
 *    `release(ctx)`, exactly once, on the loop, once the worker has let go
 *    of ctx too (a call that timed out may still be running).
 *    `work` may touch only ctx and the datastore: no loop state, no uv_*.
 *  - Calls run one at a time in submission order, so their results come
 *    back in that order (a call that times out hears it early).
 *
 * Deadlines: each call has one (LY_DSA_DEADLINE_MS by default). When it
 * passes, `done` runs with LY_E_IO "datastore: no answer within N ms (...)".
 * A call still waiting in the queue then never runs: "(not started:
 * nothing applied)". The call already running cannot be taken back from
 * the back end: "(the call was running: a change may still be applied when
 * the datastore answers)"; if it commits later, its changes still reach
 * the hooks. The back end hears that its caller gave up
 * (ly_datastore_gave_up): PostgreSQL, which may spend long reconnecting,
 * then never begins the transaction, so only a write that had begun before
 * the deadline can still commit.
 *
 * Reachability: the datastore is "unreachable" from a call's timeout or a
 * call's LY_E_IO until a later call completes without LY_E_IO. While the
 * worker is held by a call past its deadline, ly_dsa_submit refuses new
 * calls at once (LY_E_IO "datastore unreachable: ..."), so nothing piles up
 * behind a stalled database; the held call returning is the recovery.
 * ly_dsa_reachable says which, with the reason (no host names: a back end's
 * message goes to the log, not to /ready).
 *
 * Change hook: the back end's hook (datastore.h) runs on the worker inside
 * the write; here it only records the change in the call. On the loop,
 * before that call's `done`, every callback registered with
 * ly_dsa_on_change hears the recorded changes, in order: callbacks always
 * run on the loop thread and may submit calls but never read the store
 * synchronously. ly_dsa_changed feeds a change from elsewhere (another
 * server's notification) the same way.
 *
 * Adding a call (the shape every caller in server/ follows):
 *
 *     struct prune_call { struct srv_main *m; int64_t now; size_t removed; };
 *     static ly_status prune_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
 *     {   struct prune_call *p = ctx;   // worker: ctx and ds only
 *         return ly_datastore_token_prune(ds, p->now, &p->removed, err); }
 *     static void prune_done(void *ctx, ly_status st, const struct ly_error *err)
 *     {   ... on the loop: read p->removed only when st == LY_OK ... }
 *     ...
 *     if (ly_dsa_submit(srv->dsa, prune_work, prune_done, NULL, p, 0, &e) != LY_OK)
 *         free(p);  // refused: neither callback runs, p is still ours
 *
 * Outputs the worker writes are read in `done` only when st == LY_OK (a
 * call that timed out may still be writing them); a step that continues
 * with a second call moves its state into a new ctx from `done`
 * (agent_api_enrol.c: enrol_op_move). Owners that may go away before
 * `done` (the agent API) keep a list of their calls and detach them.
 *
 * Shutdown: ly_dsa_close, on the loop: every call not yet done hears
 * LY_E_IO "datastore: closing" at once (synchronously, from inside
 * ly_dsa_close), queued ones never run; the worker finishes the call it is
 * running, closes the datastore and exits. If it does not within
 * LY_DSA_CLOSE_WAIT_MS (a call stuck in the back end), it is left detached
 * and frees the store and the shared state itself when the call returns;
 * that call's `release` then runs on the worker thread, so `release` must
 * only free memory.
 */
#ifndef LANYARD_SERVER_DATASTORE_ASYNC_H
#define LANYARD_SERVER_DATASTORE_ASYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "lib/error.h"
#include "server/datastore.h"

/* How long ly_dsa_close waits for the worker to end its current call. */
#define LY_DSA_CLOSE_WAIT_MS 2000

struct ly_dsa;

/* The worker's half of a call: the datastore and the call's own context only. */
typedef ly_status ly_dsa_work_fn(struct ly_datastore *ds, void *ctx, struct ly_error *err);
/* The loop's half: `err` is borrowed for the call and set when st != LY_OK. */
typedef void ly_dsa_done_fn(void *ctx, ly_status st, const struct ly_error *err);
/* Frees ctx (its outputs included); see "Shutdown" above. */
typedef void ly_dsa_release_fn(void *ctx);

/* How a finished call went, for the metrics. */
enum ly_dsa_outcome {
	LY_DSA_OK = 0,      /* LY_OK, or a refusal the back end answered (not found, invalid, ...) */
	LY_DSA_ERROR,       /* LY_E_IO: the back end failed */
	LY_DSA_TIMEOUT,     /* no answer within the deadline */
	LY_DSA_REFUSED,     /* not run: queue full, datastore unreachable, closing */
};

/* Called on the loop for every call as it ends: its outcome and the seconds from submission. */
typedef void ly_dsa_observe_fn(void *arg, enum ly_dsa_outcome outcome, double seconds);

struct ly_dsa_config {
	uint32_t deadline_ms;   /* 0: LY_DSA_DEADLINE_MS */
	size_t queue_max;       /* 0: LY_DSA_QUEUE_MAX */
	ly_dsa_observe_fn *observe; /* NULL: none */
	void *observe_arg;
};

/*
 * Starts the worker on `ds`, which is taken whatever the outcome (closed on
 * failure). `cfg` may be NULL. *out: ly_dsa_close. LY_E_NOMEM, or
 * LY_E_INTERNAL when libuv or the thread refuse.
 */
ly_status ly_dsa_new(uv_loop_t *loop, struct ly_datastore *ds, const struct ly_dsa_config *cfg, struct ly_dsa **out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Queues a call (see the top). `deadline_ms` 0 takes the configured one.
 * `release` NULL means free(). Refused (neither callback runs): the
 * datastore unreachable with the worker held (LY_E_IO), the queue at its
 * cap (LY_E_LIMIT), closing (LY_E_IO).
 */
ly_status ly_dsa_submit(struct ly_dsa *dsa, ly_dsa_work_fn *work, ly_dsa_done_fn *done, ly_dsa_release_fn *release,
    void *ctx, uint32_t deadline_ms, struct ly_error *err) LY_MUST_CHECK;

/*
 * Runs `work(ds, ctx, err)` on the worker and waits for it, blocking the
 * loop (after the calls queued before it, whose callbacks run from here):
 * for start-up only, before the loop serves anything (the listeners not
 * open yet): the shared bundle's first publish and read
 * (ly_server_shared_open). Once agents are served every call goes
 * through ly_dsa_submit. The back ends' own timeouts bound the wait
 * (SQLite's 5 s busy timeout; PostgreSQL's 7 s without a byte and 10 s
 * connect_timeout); refused like ly_dsa_submit. The result is `work`'s.
 */
ly_status ly_dsa_call_sync(struct ly_dsa *dsa, ly_dsa_work_fn *work, void *ctx, struct ly_error *err)
    LY_MUST_CHECK;

/* Whether the datastore answers; when not, *why (may be NULL) gets a short reason without host or user names. */
bool ly_dsa_reachable(const struct ly_dsa *dsa, const char **why);

/* Calls queued or running whose `done` has not run yet. */
size_t ly_dsa_pending(const struct ly_dsa *dsa);

/* Change callbacks on the loop (see the top); LY_E_LIMIT over LY_DATASTORE_HOOKS_MAX. */
ly_status ly_dsa_on_change(struct ly_dsa *dsa, ly_datastore_change_fn *fn, void *arg, struct ly_error *err)
    LY_MUST_CHECK;
void ly_dsa_off_change(struct ly_dsa *dsa, ly_datastore_change_fn *fn, void *arg);
/* Calls every registered callback with `change` now (loop thread). */
void ly_dsa_changed(struct ly_dsa *dsa, const struct ly_datastore_change *change);

/*
 * Ends everything (see "Shutdown"); NULL is allowed. Never from one of this
 * module's callbacks. The loop must run once more to free the handles. The
 * worker's handles do not keep the loop alive (uv_unref): the owners of
 * the calls do.
 */
void ly_dsa_close(struct ly_dsa *dsa);

#endif /* LANYARD_SERVER_DATASTORE_ASYNC_H */
