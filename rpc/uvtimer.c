/* uvtimer.c: heap one-shot timers on a libuv loop (see uvtimer.h). */
#include "uvtimer.h"

#include <stdlib.h>

ly_status
ly_uvtimer_new(uv_loop_t *loop, void *data, bool unref, uv_timer_t **out, struct ly_error *err)
{
	uv_timer_t *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (t == NULL)
		return ly_error_set(err, LY_E_NOMEM, "timer: out of memory");
	if (uv_timer_init(loop, t) != 0) {
		free(t);
		return ly_error_set(err, LY_E_INTERNAL, "timer: libuv refused");
	}
	t->data = data;
	if (unref)
		uv_unref((uv_handle_t *)t);
	*out = t;
	return LY_OK;
}

void
ly_uvtimer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t ms)
{
	if (t != NULL)
		(void)uv_timer_start(t, cb, ms, 0);
}

static void
on_closed(uv_handle_t *h)
{
	free(h);
}

void
ly_uvtimer_close(uv_timer_t **t)
{
	if (t == NULL || *t == NULL)
		return;
	(void)uv_timer_stop(*t);
	(*t)->data = NULL;
	uv_close((uv_handle_t *)*t, on_closed);
	*t = NULL;
}
