/* sendq.c: see sendq.h. */
#include "rpc/sendq.h"

#include <stddef.h>

/* Fills *start from the queue's state when nothing is in flight. */
static bool
sendq_next(struct ly_sendq *q, struct ly_sendq_batch *start)
{
	start->initial_metadata = false;
	start->msg = NULL;
	start->status = false;
	if (q->in_flight || q->done)
		return false;
	if (q->pending == NULL && !q->finishing)
		return false;
	start->msg = q->pending;
	q->pending = NULL;
	if (q->finishing) {
		start->status = true;
		q->done = true;
	}
	if (!q->md_sent) {
		start->initial_metadata = true;
		q->md_sent = true;
	}
	q->in_flight = true;
	return true;
}

/* Makes `msg` the waiting message; false when the queue refuses it. */
static bool
sendq_queue(struct ly_sendq *q, void *msg, void **replaced)
{
	*replaced = NULL;
	if (q->finishing || q->done) {
		*replaced = msg;
		return false;
	}
	if (q->pending != NULL) {
		*replaced = q->pending;
		q->dropped++;
	}
	q->pending = msg;
	return true;
}

bool
ly_sendq_push(struct ly_sendq *q, void *msg, struct ly_sendq_batch *start, void **replaced)
{
	(void)sendq_queue(q, msg, replaced);
	return sendq_next(q, start);
}

bool
ly_sendq_push_last(struct ly_sendq *q, void *msg, struct ly_sendq_batch *start, void **replaced)
{
	if (sendq_queue(q, msg, replaced))
		q->finishing = true;
	return sendq_next(q, start);
}

bool
ly_sendq_finish(struct ly_sendq *q, struct ly_sendq_batch *start)
{
	if (!q->done)
		q->finishing = true;
	return sendq_next(q, start);
}

bool
ly_sendq_completed(struct ly_sendq *q, bool ok, struct ly_sendq_batch *start, void **orphan)
{
	*orphan = NULL;
	q->in_flight = false;
	if (!ok)
		*orphan = ly_sendq_abort(q);
	return sendq_next(q, start);
}

void *
ly_sendq_abort(struct ly_sendq *q)
{
	void *msg = q->pending;

	q->pending = NULL;
	q->done = true;
	return msg;
}
