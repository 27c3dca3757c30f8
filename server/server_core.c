/* server_core.c: see server_core.h. */
#include "server/server_core.h"

#include "lib/error.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "server/ca.h"

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

const struct ly_bundle *
ly_server_bundle(const struct ly_server *srv)
{
	if (srv == NULL)
		return NULL;
	if (srv->shared_bundle != NULL)
		return srv->shared_bundle;
	return srv->ca != NULL ? ly_ca_bundle(srv->ca) : NULL;
}
