/* metrics.c: Prometheus metric registry and text rendering (see metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"

struct series {
	char *values[LY_METRIC_LABELS_MAX];
	double value;      /* counter, gauge */
	double sum;        /* histogram */
	uint64_t count;    /* histogram */
	uint64_t *buckets; /* histogram: nbuckets + 1 (the last is +Inf), not cumulative */
};

struct ly_metric {
	enum ly_metric_type type;
	char *name;
	char *help;
	size_t nlabels;
	char *labels[LY_METRIC_LABELS_MAX];
	size_t nbuckets;
	double bounds[LY_METRIC_BUCKETS_MAX];
	size_t nseries;
	struct series series[LY_METRIC_SERIES_MAX];
	struct ly_metric *next;
};

struct ly_metrics {
	struct ly_metric *head, *tail;
};

ly_status
ly_metrics_new(struct ly_metrics **out, struct ly_error *err)
{
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
	return LY_OK;
}

static void
family_free(struct ly_metric *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < f->nseries; i++) {
		for (size_t j = 0; j < f->nlabels; j++)
			free(f->series[i].values[j]);
		free(f->series[i].buckets);
	}
	for (size_t j = 0; j < f->nlabels; j++)
		free(f->labels[j]);
	free(f->name);
	free(f->help);
	free(f);
}

void
ly_metrics_free(struct ly_metrics *m)
{
	if (m == NULL)
		return;
	struct ly_metric *f = m->head;
	while (f != NULL) {
		struct ly_metric *next = f->next;
		family_free(f);
		f = next;
	}
	free(m);
}

bool
ly_metric_name_valid(const char *name, bool label)
{
	if (name == NULL || name[0] == '\0' || strlen(name) > LY_METRIC_NAME_MAX)
		return false;
	if (label && name[0] == '_' && name[1] == '_')
		return false; /* reserved for internal use */
	for (size_t i = 0; name[i] != '\0'; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			  (!label && c == ':') || (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return false;
	}
	return true;
}

ly_status
ly_metrics_add(struct ly_metrics *m, enum ly_metric_type type, const char *name, const char *help,
	       const char *const *label_names, const double *buckets, size_t nbuckets, struct ly_metric **out,
	       struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_metric *f = NULL;

	if (!ly_metric_name_valid(name, false)) {
		rc = ly_error_set(err, LY_E_INVALID, "metrics: invalid metric name");
		goto out;
	}
	for (struct ly_metric *g = m->head; g != NULL; g = g->next) {
		if (strcmp(g->name, name) == 0) {
			rc = ly_error_set(err, LY_E_INVALID, "metrics: %s declared twice", name);
			goto out;
		}
	}
	if (type == LY_METRIC_HISTOGRAM) {
		if (nbuckets == 0 || nbuckets > LY_METRIC_BUCKETS_MAX || buckets == NULL) {
			rc = ly_error_set(err, LY_E_LIMIT, "metrics: %s: histogram needs 1..%d buckets", name,
					  LY_METRIC_BUCKETS_MAX);
			goto out;
		}
		for (size_t i = 0; i < nbuckets; i++) {
			if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
				rc = ly_error_set(err, LY_E_INVALID,
						  "metrics: %s: bucket bounds must be finite and increasing", name);
				goto out;
			}
		}
	} else if (nbuckets != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "metrics: %s: buckets on a non-histogram", name);
		goto out;
	}
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
		goto out;
	}
	f->type = type;
	f->name = strdup(name);
	f->help = strdup(help != NULL ? help : "");
	if (f->name == NULL || f->help == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
		goto out;
	}
	for (size_t i = 0; label_names != NULL && label_names[i] != NULL; i++) {
		if (i == LY_METRIC_LABELS_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "metrics: %s: more than %d labels", name,
					  LY_METRIC_LABELS_MAX);
			goto out;
		}
		if (!ly_metric_name_valid(label_names[i], true) ||
		    (type == LY_METRIC_HISTOGRAM && strcmp(label_names[i], "le") == 0)) {
			rc = ly_error_set(err, LY_E_INVALID, "metrics: %s: invalid label name", name);
			goto out;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(label_names[j], label_names[i]) == 0) {
				rc = ly_error_set(err, LY_E_INVALID, "metrics: %s: label name repeated", name);
				goto out;
			}
		}
		f->labels[i] = strdup(label_names[i]);
		f->nlabels = i + 1;
		if (f->labels[i] == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
			goto out;
		}
	}
	f->nbuckets = nbuckets;
	if (nbuckets != 0)
		memcpy(f->bounds, buckets, nbuckets * sizeof(double));
	if (m->tail != NULL)
		m->tail->next = f;
	else
		m->head = f;
	m->tail = f;
	*out = f;
	f = NULL;
out:
	family_free(f);
	return rc;
}

/* Finds or creates the series for `values`. */
static ly_status
series_get(struct ly_metric *f, const char *const *values, struct series **out, struct ly_error *err)
{
	for (size_t j = 0; j < f->nlabels; j++) {
		if (values == NULL || values[j] == NULL)
			return ly_error_set(err, LY_E_INVALID, "metrics: %s: missing label value", f->name);
		if (strlen(values[j]) > LY_METRIC_LABEL_VALUE_MAX)
			return ly_error_set(err, LY_E_LIMIT, "metrics: %s: label value over %d bytes", f->name,
					    LY_METRIC_LABEL_VALUE_MAX);
	}
	for (size_t i = 0; i < f->nseries; i++) {
		size_t j = 0;
		while (j < f->nlabels && strcmp(f->series[i].values[j], values[j]) == 0)
			j++;
		if (j == f->nlabels) {
			*out = &f->series[i];
			return LY_OK;
		}
	}
	if (f->nseries == LY_METRIC_SERIES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "metrics: %s: more than %d series", f->name,
				    LY_METRIC_SERIES_MAX);
	struct series *s = &f->series[f->nseries];
	memset(s, 0, sizeof(*s));
	if (f->type == LY_METRIC_HISTOGRAM) {
		s->buckets = calloc(f->nbuckets + 1, sizeof(uint64_t));
		if (s->buckets == NULL)
			return ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
	}
	for (size_t j = 0; j < f->nlabels; j++) {
		s->values[j] = strdup(values[j]);
		if (s->values[j] == NULL) {
			for (size_t k = 0; k < j; k++)
				free(s->values[k]);
			free(s->buckets);
			memset(s, 0, sizeof(*s));
			return ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
		}
	}
	f->nseries++;
	*out = s;
	return LY_OK;
}

ly_status
ly_metric_set(struct ly_metric *f, const char *const *label_values, double v, struct ly_error *err)
{
	struct series *s;
	if (f->type == LY_METRIC_HISTOGRAM)
		return ly_error_set(err, LY_E_INVALID, "metrics: %s: set on a histogram", f->name);
	if (isnan(v))
		return ly_error_set(err, LY_E_INVALID, "metrics: %s: NaN", f->name);
	LY_TRY(series_get(f, label_values, &s, err));
	if (f->type == LY_METRIC_COUNTER && v < s->value)
		return ly_error_set(err, LY_E_INVALID, "metrics: %s: a counter only goes up", f->name);
	s->value = v;
	return LY_OK;
}

ly_status
ly_metric_inc(struct ly_metric *f, const char *const *label_values, double delta, struct ly_error *err)
{
	struct series *s;
	if (f->type == LY_METRIC_HISTOGRAM)
		return ly_error_set(err, LY_E_INVALID, "metrics: %s: inc on a histogram", f->name);
	if (isnan(delta) || (f->type == LY_METRIC_COUNTER && delta < 0))
		return ly_error_set(err, LY_E_INVALID, "metrics: %s: a counter only goes up", f->name);
	LY_TRY(series_get(f, label_values, &s, err));
	s->value += delta;
	return LY_OK;
}

ly_status
ly_metric_observe(struct ly_metric *f, const char *const *label_values, double v, struct ly_error *err)
{
	struct series *s;
	if (f->type != LY_METRIC_HISTOGRAM)
		return ly_error_set(err, LY_E_INVALID, "metrics: %s: observe on a non-histogram", f->name);
	if (isnan(v))
		return ly_error_set(err, LY_E_INVALID, "metrics: %s: NaN", f->name);
	LY_TRY(series_get(f, label_values, &s, err));
	size_t b = 0;
	while (b < f->nbuckets && v > f->bounds[b])
		b++;
	s->buckets[b]++;
	s->count++;
	s->sum += v;
	return LY_OK;
}

/* ---- rendering ---- */

struct out {
	char *p;
	size_t len, cap;
	bool failed; /* NOMEM or LIMIT: the first one is kept */
	ly_status rc;
};

static void
out_put(struct out *o, const char *s, size_t n)
{
	if (o->failed)
		return;
	if (n > LY_METRICS_TEXT_MAX - o->len) {
		o->failed = true;
		o->rc = LY_E_LIMIT;
		return;
	}
	if (o->len + n > o->cap) {
		size_t cap = o->cap == 0 ? 4096 : o->cap;
		while (cap < o->len + n)
			cap *= 2;
		char *p = realloc(o->p, cap);
		if (p == NULL) {
			o->failed = true;
			o->rc = LY_E_NOMEM;
			return;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void
out_str(struct out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

/* Escapes \ and newline (HELP), plus " in label values. */
static void
out_escaped(struct out *o, const char *s, bool quote)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			out_put(o, "\\\\", 2);
		else if (*s == '\n')
			out_put(o, "\\n", 2);
		else if (quote && *s == '"')
			out_put(o, "\\\"", 2);
		else
			out_put(o, s, 1);
	}
}

/* Shortest of %.15g / %.17g that reads back exactly; +Inf, -Inf, NaN. */
static void
out_double(struct out *o, double v)
{
	char tmp[64];
	if (isnan(v)) {
		out_str(o, "NaN");
		return;
	}
	if (isinf(v)) {
		out_str(o, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	snprintf(tmp, sizeof(tmp), "%.15g", v);
	if (strtod(tmp, NULL) != v)
		snprintf(tmp, sizeof(tmp), "%.17g", v);
	out_str(o, tmp);
}

static void
out_u64(struct out *o, uint64_t v)
{
	char tmp[32];
	snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
	out_str(o, tmp);
}

/* name[suffix]{labels[,le="x"]} */
static void
out_series_name(struct out *o, const struct ly_metric *f, const struct series *s, const char *suffix,
		const double *le)
{
	out_str(o, f->name);
	out_str(o, suffix);
	if (f->nlabels == 0 && le == NULL)
		return;
	out_put(o, "{", 1);
	for (size_t j = 0; j < f->nlabels; j++) {
		if (j > 0)
			out_put(o, ",", 1);
		out_str(o, f->labels[j]);
		out_put(o, "=\"", 2);
		out_escaped(o, s->values[j], true);
		out_put(o, "\"", 1);
	}
	if (le != NULL) {
		if (f->nlabels > 0)
			out_put(o, ",", 1);
		out_str(o, "le=\"");
		out_double(o, *le);
		out_put(o, "\"", 1);
	}
	out_put(o, "}", 1);
}

static const char *
type_str(enum ly_metric_type t)
{
	switch (t) {
	case LY_METRIC_COUNTER:
		return "counter";
	case LY_METRIC_GAUGE:
		return "gauge";
	case LY_METRIC_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

ly_status
ly_metrics_render(const struct ly_metrics *m, struct ly_buf *buf, struct ly_error *err)
{
	struct out o = {0};
	for (const struct ly_metric *f = m->head; f != NULL; f = f->next) {
		out_str(&o, "# HELP ");
		out_str(&o, f->name);
		out_put(&o, " ", 1);
		out_escaped(&o, f->help, false);
		out_str(&o, "\n# TYPE ");
		out_str(&o, f->name);
		out_put(&o, " ", 1);
		out_str(&o, type_str(f->type));
		out_put(&o, "\n", 1);
		/* A family without labels shows its zero value before first use. */
		static const struct series zero;
		size_t n = f->nseries;
		const struct series *ss = f->series;
		if (n == 0 && f->nlabels == 0 && f->type != LY_METRIC_HISTOGRAM) {
			n = 1;
			ss = &zero;
		}
		for (size_t i = 0; i < n; i++) {
			const struct series *s = &ss[i];
			if (f->type != LY_METRIC_HISTOGRAM) {
				out_series_name(&o, f, s, "", NULL);
				out_put(&o, " ", 1);
				out_double(&o, s->value);
				out_put(&o, "\n", 1);
				continue;
			}
			uint64_t cum = 0;
			for (size_t b = 0; b <= f->nbuckets; b++) {
				double le = b < f->nbuckets ? f->bounds[b] : INFINITY;
				cum += s->buckets[b];
				out_series_name(&o, f, s, "_bucket", &le);
				out_put(&o, " ", 1);
				out_u64(&o, cum);
				out_put(&o, "\n", 1);
			}
			out_series_name(&o, f, s, "_sum", NULL);
			out_put(&o, " ", 1);
			out_double(&o, s->sum);
			out_put(&o, "\n", 1);
			out_series_name(&o, f, s, "_count", NULL);
			out_put(&o, " ", 1);
			out_u64(&o, s->count);
			out_put(&o, "\n", 1);
		}
	}
	if (o.failed) {
		free(o.p);
		if (o.rc == LY_E_LIMIT)
			return ly_error_set(err, LY_E_LIMIT, "metrics: text over %d bytes", LY_METRICS_TEXT_MAX);
		return ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
	}
	ly_buf_free(buf);
	if (o.p == NULL) {
		o.p = malloc(1);
		if (o.p == NULL)
			return ly_error_set(err, LY_E_NOMEM, "metrics: out of memory");
	}
	buf->data = (uint8_t *)o.p;
	buf->len = o.len;
	return LY_OK;
}
