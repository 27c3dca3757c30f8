/* server_core.c: see server_core.h. */
#include "server/server_core.h"

#include "lib/error.h"
#include "lib/log.h"
#include "lib/metrics.h"

time_t
ly_server_now(void)
{
	return time(NULL);
}

void
ly_server_metric_add(struct ly_metric *f, const char *const *labels, double v)
{
	struct ly_error e;
	if (f == NULL)
		return;
	ly_status rc = ly_metric_observe(f, labels, v, &e);
	if (rc == LY_E_INVALID) /* not a histogram: a counter */
		rc = ly_metric_inc(f, labels, v, &e);
	if (rc != LY_OK)
		log_debug("metrics: %s", e.msg);
}
