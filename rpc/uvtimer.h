/*
 * uvtimer.h: the one heap-allocated one-shot libuv timer helper of the
 * daemons (agent and server), replacing per-module copies.
 *
 * The timer is calloc'd, so its owner can close it at any time without
 * waiting: ly_uvtimer_close stops it, clears its data (a callback that
 * already ran cannot see a freed owner through it, and none runs after
 * close: libuv never calls a stopped timer's callback), and frees it in
 * the close callback, on a later loop turn. The loop must therefore run
 * once more after the last close before uv_loop_close (libuv's rule:
 * close before free).
 *
 * Threads: the loop's thread only, as every libuv handle.
 */
#ifndef LANYARD_RPC_UVTIMER_H
#define LANYARD_RPC_UVTIMER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "lib/error.h"

/*
 * A new stopped timer on `loop` with `data` in its data field. With
 * `unref`, it does not keep the loop alive (uv_unref: housekeeping timers).
 * *out: ly_uvtimer_close. LY_E_NOMEM, or LY_E_INTERNAL when libuv refuses.
 */
ly_status ly_uvtimer_new(uv_loop_t *loop, void *data, bool unref, uv_timer_t **out, struct ly_error *err)
    LY_MUST_CHECK;

/* Starts (or restarts) `t` to fire once after `ms`; NULL is ignored. */
void ly_uvtimer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t ms);

/* Stops and closes *t (freed on a later loop turn); *t becomes NULL. NULL or *t NULL is fine. */
void ly_uvtimer_close(uv_timer_t **t);

#endif /* LANYARD_RPC_UVTIMER_H */
