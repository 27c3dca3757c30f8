/*
 * metrics.h: a small registry of counters, gauges and histograms with
 * labels, rendered in the Prometheus text exposition format 0.0.4.
 *
 *   struct ly_metrics *m; struct ly_metric *req;
 *   ly_metrics_new(&m, &err);
 *   const char *labels[] = {"kind", "reason", NULL};
 *   ly_metrics_add(m, LY_METRIC_COUNTER, "lanyard_x_total", "Help.", labels, NULL, 0, &req, &err);
 *   const char *vals[] = {"x509", "expired"};
 *   ly_metric_inc(req, vals, 1, &err);
 *   ly_metrics_render(m, &buf, &err);   -> "# HELP ...\n# TYPE ...\nlanyard_x_total{...} 1\n"
 *
 * Rules (Prometheus data model and exposition format 0.0.4): metric names
 * match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and
 * must not start with "__"; "le" is reserved for histograms. Label values
 * are any UTF-8 text, escaped on output (\\, \" and \n); HELP text escapes
 * \\ and \n. Counters only go up. Histogram bucket bounds are finite and
 * strictly increasing; "+Inf" is added. Each family holds at most
 * LY_METRIC_SERIES_MAX label sets (LY_E_LIMIT past that).
 *
 * Ownership: the registry owns its families (struct ly_metric pointers stay
 * valid until ly_metrics_free). Names, help and label names are copied.
 * Not thread-safe: use from one thread (the daemon's loop).
 */
#ifndef LANYARD_METRICS_H
#define LANYARD_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "caps.h"
#include "error.h"

enum ly_metric_type {
	LY_METRIC_COUNTER,
	LY_METRIC_GAUGE,
	LY_METRIC_HISTOGRAM,
};

struct ly_metrics;
struct ly_metric;

/* LY_METRIC_*_MAX: caps.h. */
#define LY_METRICS_TEXT_MAX (1024 * 1024)

ly_status ly_metrics_new(struct ly_metrics **out, struct ly_error *err) LY_MUST_CHECK;
void ly_metrics_free(struct ly_metrics *m);

/* true when `name` is a valid metric name (or label name when `label`). */
bool ly_metric_name_valid(const char *name, bool label);

/*
 * Declares a family. `label_names` is NULL or NULL-terminated (at most
 * LY_METRIC_LABELS_MAX); `buckets` (histograms only, nbuckets <=
 * LY_METRIC_BUCKETS_MAX) are upper bounds. A name declared twice is refused.
 * *out is owned by `m`.
 */
ly_status ly_metrics_add(struct ly_metrics *m, enum ly_metric_type type, const char *name, const char *help,
			 const char *const *label_names, const double *buckets, size_t nbuckets,
			 struct ly_metric **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * `label_values` holds one value per declared label name (NULL when the
 * family has none). ly_metric_set: counters and gauges (a counter may not be
 * set lower than it is: counters only go up). ly_metric_inc: counters
 * (delta >= 0) and gauges. ly_metric_observe: histograms.
 */
ly_status ly_metric_set(struct ly_metric *f, const char *const *label_values, double v,
			struct ly_error *err) LY_MUST_CHECK;
ly_status ly_metric_inc(struct ly_metric *f, const char *const *label_values, double delta,
			struct ly_error *err) LY_MUST_CHECK;
ly_status ly_metric_observe(struct ly_metric *f, const char *const *label_values, double v,
			    struct ly_error *err) LY_MUST_CHECK;

/*
 * Renders every family in declaration order into `out` (replacing its
 * content; free with ly_buf_free). LY_E_LIMIT past LY_METRICS_TEXT_MAX.
 */
ly_status ly_metrics_render(const struct ly_metrics *m, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_METRICS_H */
