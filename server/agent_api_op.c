/*
 * agent_api_op.c: the agent API's datastore calls in flight
 * (agent_api_internal.h), below every other part: each part submits its
 * calls here, and ly_agent_api_free detaches the ones still running, so
 * that their `done` sees op.api NULL and only ends its call. It calls no
 * other part of the agent API.
 */
#include "server/agent_api_internal.h"

#include <stddef.h>

#include "lib/queue.h"

ly_status
agent_api_op_submit(struct ly_agent_api *api, struct agent_api_op *op, ly_dsa_work_fn *work, ly_dsa_done_fn *done,
    ly_dsa_release_fn *release, struct ly_error *err)
{
	if (api->stopped)
		return ly_error_set(err, LY_E_IO, "server stopping");
	op->api = api;
	ly_queue_insert_tail(&api->ops, &op->link);
	ly_status rc = ly_dsa_submit(api->srv->dsa, work, done, release, op, 0, err);
	if (rc != LY_OK) {
		ly_queue_remove(&op->link);
		op->api = NULL;
	}
	return rc;
}

struct ly_agent_api *
agent_api_op_end(struct agent_api_op *op)
{
	struct ly_agent_api *api = op->api;

	if (api == NULL)
		return NULL;
	ly_queue_remove(&op->link);
	op->api = NULL;
	return api->stopped ? NULL : api;
}

void
agent_api_op_detach_all(struct ly_agent_api *api)
{
	struct ly_queue *q, *tmp;

	LY_QUEUE_FOREACH_SAFE(q, tmp, &api->ops) {
		LY_QUEUE_DATA(q, struct agent_api_op, link)->api = NULL;
		ly_queue_remove(q);
	}
}
