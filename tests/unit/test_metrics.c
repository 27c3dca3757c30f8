/* test_metrics.c: metric registry and Prometheus text format 0.0.4 (lib/metrics.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "lib/metrics.h"

static char *
render(struct ly_metrics *m)
{
	struct ly_buf b = LY_BUF_INIT;
	assert_int_equal(ly_metrics_render(m, &b, NULL), LY_OK);
	char *s = strndup((const char *)b.data, b.len);
	assert_non_null(s);
	ly_buf_free(&b);
	return s;
}

static void
test_counter_and_gauge(void **state)
{
	struct ly_metrics *m;
	struct ly_metric *c, *g;
	assert_int_equal(ly_metrics_new(&m, NULL), LY_OK);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_COUNTER, "lanyard_a_total", "Things done.", NULL, NULL, 0, &c,
					NULL),
			 LY_OK);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "lanyard_g", "A gauge.", NULL, NULL, 0, &g, NULL), LY_OK);
	char *s = render(m);
	/* Unlabelled families show their zero value before first use. */
	assert_string_equal(s, "# HELP lanyard_a_total Things done.\n# TYPE lanyard_a_total counter\nlanyard_a_total 0\n"
			       "# HELP lanyard_g A gauge.\n# TYPE lanyard_g gauge\nlanyard_g 0\n");
	free(s);
	assert_int_equal(ly_metric_inc(c, NULL, 2, NULL), LY_OK);
	assert_int_equal(ly_metric_set(g, NULL, -1.5, NULL), LY_OK);
	assert_int_equal(ly_metric_inc(g, NULL, -1, NULL), LY_OK);
	s = render(m);
	assert_non_null(strstr(s, "\nlanyard_a_total 2\n"));
	assert_non_null(strstr(s, "\nlanyard_g -2.5\n"));
	free(s);
	/* Counters only go up. */
	assert_int_equal(ly_metric_inc(c, NULL, -1, NULL), LY_E_INVALID);
	assert_int_equal(ly_metric_set(c, NULL, 1, NULL), LY_E_INVALID);
	assert_int_equal(ly_metric_set(c, NULL, 5, NULL), LY_OK);
	assert_int_equal(ly_metric_set(c, NULL, NAN, NULL), LY_E_INVALID);
	/* Wrong operation for the type. */
	assert_int_equal(ly_metric_observe(c, NULL, 1, NULL), LY_E_INVALID);
	ly_metrics_free(m);
}

static void
test_names(void **state)
{
	assert_true(ly_metric_name_valid("lanyard_x:y_total", false));
	assert_true(ly_metric_name_valid("_x", false));
	assert_false(ly_metric_name_valid("", false));
	assert_false(ly_metric_name_valid("1abc", false));
	assert_false(ly_metric_name_valid("a-b", false));
	assert_false(ly_metric_name_valid("a b", false));
	assert_false(ly_metric_name_valid("a{b", false));
	assert_true(ly_metric_name_valid("kind", true));
	assert_false(ly_metric_name_valid("a:b", true));
	assert_false(ly_metric_name_valid("__name__", true));
	assert_false(ly_metric_name_valid("0x", true));

	struct ly_metrics *m;
	struct ly_metric *f;
	assert_int_equal(ly_metrics_new(&m, NULL), LY_OK);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "bad-name", "", NULL, NULL, 0, &f, NULL), LY_E_INVALID);
	const char *badl[] = {"ok", "b-d", NULL};
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "x", "", badl, NULL, 0, &f, NULL), LY_E_INVALID);
	const char *dup[] = {"a", "a", NULL};
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "x", "", dup, NULL, 0, &f, NULL), LY_E_INVALID);
	const char *many[LY_METRIC_LABELS_MAX + 2] = {"l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", NULL};
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "x", "", many, NULL, 0, &f, NULL), LY_E_LIMIT);
	const double b[] = {1};
	const char *le[] = {"le", NULL};
	assert_int_equal(ly_metrics_add(m, LY_METRIC_HISTOGRAM, "h", "", le, b, 1, &f, NULL), LY_E_INVALID);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "x", "", le, NULL, 0, &f, NULL), LY_OK);
	/* A name declared twice is refused. */
	assert_int_equal(ly_metrics_add(m, LY_METRIC_COUNTER, "x", "", NULL, NULL, 0, &f, NULL), LY_E_INVALID);
	ly_metrics_free(m);
}

static void
test_label_escaping(void **state)
{
	struct ly_metrics *m;
	struct ly_metric *f;
	const char *names[] = {"kind", "reason", NULL};
	assert_int_equal(ly_metrics_new(&m, NULL), LY_OK);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_COUNTER, "lanyard_fail_total", "Line one\nback\\slash \"q\"",
					names, NULL, 0, &f, NULL),
			 LY_OK);
	/* A labelled family with no series shows only HELP and TYPE. */
	char *s = render(m);
	assert_string_equal(s, "# HELP lanyard_fail_total Line one\\nback\\\\slash \"q\"\n"
			       "# TYPE lanyard_fail_total counter\n");
	free(s);
	const char *v1[] = {"x509", "a\"b\\c\nd"};
	const char *v2[] = {"jwt", "expired"};
	assert_int_equal(ly_metric_inc(f, v1, 1, NULL), LY_OK);
	assert_int_equal(ly_metric_inc(f, v2, 1, NULL), LY_OK);
	assert_int_equal(ly_metric_inc(f, v2, 1, NULL), LY_OK);
	s = render(m);
	assert_non_null(strstr(s, "\nlanyard_fail_total{kind=\"x509\",reason=\"a\\\"b\\\\c\\nd\"} 1\n"));
	assert_non_null(strstr(s, "\nlanyard_fail_total{kind=\"jwt\",reason=\"expired\"} 2\n"));
	free(s);
	/* Missing and oversized label values are refused. */
	const char *missing[] = {"x509", NULL};
	assert_int_equal(ly_metric_inc(f, missing, 1, NULL), LY_E_INVALID);
	assert_int_equal(ly_metric_inc(f, NULL, 1, NULL), LY_E_INVALID);
	char big[LY_METRIC_LABEL_VALUE_MAX + 2];
	memset(big, 'a', sizeof(big));
	big[LY_METRIC_LABEL_VALUE_MAX + 1] = '\0';
	const char *vbig[] = {"x509", big};
	assert_int_equal(ly_metric_inc(f, vbig, 1, NULL), LY_E_LIMIT);
	ly_metrics_free(m);
}

static void
test_series_cap(void **state)
{
	struct ly_metrics *m;
	struct ly_metric *f;
	const char *names[] = {"n", NULL};
	char v[32];
	const char *vals[] = {v};
	assert_int_equal(ly_metrics_new(&m, NULL), LY_OK);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "g", "", names, NULL, 0, &f, NULL), LY_OK);
	for (int i = 0; i < LY_METRIC_SERIES_MAX; i++) {
		snprintf(v, sizeof(v), "%d", i);
		assert_int_equal(ly_metric_set(f, vals, i, NULL), LY_OK);
	}
	snprintf(v, sizeof(v), "new");
	assert_int_equal(ly_metric_set(f, vals, 1, NULL), LY_E_LIMIT);
	snprintf(v, sizeof(v), "3");
	assert_int_equal(ly_metric_set(f, vals, 1, NULL), LY_OK); /* existing series still fine */
	ly_metrics_free(m);
}

static void
test_histogram(void **state)
{
	struct ly_metrics *m;
	struct ly_metric *h;
	const double b[] = {0.005, 0.1, 1};
	assert_int_equal(ly_metrics_new(&m, NULL), LY_OK);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_HISTOGRAM, "lanyard_s", "Seconds.", NULL, b, 3, &h, NULL), LY_OK);
	assert_int_equal(ly_metric_observe(h, NULL, 0.001, NULL), LY_OK);
	assert_int_equal(ly_metric_observe(h, NULL, 0.1, NULL), LY_OK); /* le is inclusive */
	assert_int_equal(ly_metric_observe(h, NULL, 0.5, NULL), LY_OK);
	assert_int_equal(ly_metric_observe(h, NULL, 7, NULL), LY_OK);
	assert_int_equal(ly_metric_observe(h, NULL, NAN, NULL), LY_E_INVALID);
	assert_int_equal(ly_metric_set(h, NULL, 1, NULL), LY_E_INVALID);
	char *s = render(m);
	assert_string_equal(s, "# HELP lanyard_s Seconds.\n# TYPE lanyard_s histogram\n"
			       "lanyard_s_bucket{le=\"0.005\"} 1\n"
			       "lanyard_s_bucket{le=\"0.1\"} 2\n"
			       "lanyard_s_bucket{le=\"1\"} 3\n"
			       "lanyard_s_bucket{le=\"+Inf\"} 4\n"
			       "lanyard_s_sum 7.601\n"
			       "lanyard_s_count 4\n");
	free(s);
	/* Bounds must be increasing and finite, 1..LY_METRIC_BUCKETS_MAX of them. */
	const double dec[] = {1, 1};
	const double inf[] = {1, INFINITY};
	assert_int_equal(ly_metrics_add(m, LY_METRIC_HISTOGRAM, "h2", "", NULL, dec, 2, &h, NULL), LY_E_INVALID);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_HISTOGRAM, "h2", "", NULL, inf, 2, &h, NULL), LY_E_INVALID);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_HISTOGRAM, "h2", "", NULL, b, 0, &h, NULL), LY_E_LIMIT);
	double many[LY_METRIC_BUCKETS_MAX + 1];
	for (int i = 0; i <= LY_METRIC_BUCKETS_MAX; i++)
		many[i] = i;
	assert_int_equal(ly_metrics_add(m, LY_METRIC_HISTOGRAM, "h2", "", NULL, many, LY_METRIC_BUCKETS_MAX + 1, &h,
					NULL),
			 LY_E_LIMIT);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, "h2", "", NULL, b, 3, &h, NULL), LY_E_INVALID);
	ly_metrics_free(m);
}

static void
test_histogram_labels(void **state)
{
	struct ly_metrics *m;
	struct ly_metric *h;
	const double b[] = {1};
	const char *names[] = {"attestor", NULL};
	const char *vals[] = {"join_token"};
	assert_int_equal(ly_metrics_new(&m, NULL), LY_OK);
	assert_int_equal(ly_metrics_add(m, LY_METRIC_HISTOGRAM, "h", "", names, b, 1, &h, NULL), LY_OK);
	assert_int_equal(ly_metric_observe(h, vals, 2, NULL), LY_OK);
	char *s = render(m);
	assert_non_null(strstr(s, "\nh_bucket{attestor=\"join_token\",le=\"1\"} 0\n"));
	assert_non_null(strstr(s, "\nh_bucket{attestor=\"join_token\",le=\"+Inf\"} 1\n"));
	assert_non_null(strstr(s, "\nh_sum{attestor=\"join_token\"} 2\n"));
	free(s);
	ly_metrics_free(m);
}

static void
test_text_cap(void **state)
{
	struct ly_metrics *m;
	struct ly_metric *f;
	const char *names[] = {"v", NULL};
	char v[LY_METRIC_LABEL_VALUE_MAX + 1];
	const char *vals[] = {v};
	char name[32];
	assert_int_equal(ly_metrics_new(&m, NULL), LY_OK);
	/* 20 families x 256 series x ~270 bytes > 1 MiB. */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "g%d", i);
		assert_int_equal(ly_metrics_add(m, LY_METRIC_GAUGE, name, "", names, NULL, 0, &f, NULL), LY_OK);
		for (int j = 0; j < LY_METRIC_SERIES_MAX; j++) {
			memset(v, 'a', LY_METRIC_LABEL_VALUE_MAX);
			snprintf(v, 16, "%d", j);
			v[strlen(v)] = 'a';
			v[LY_METRIC_LABEL_VALUE_MAX] = '\0';
			assert_int_equal(ly_metric_set(f, vals, 1, NULL), LY_OK);
		}
	}
	struct ly_buf b = LY_BUF_INIT;
	assert_int_equal(ly_metrics_render(m, &b, NULL), LY_E_LIMIT);
	assert_null(b.data);
	ly_metrics_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counter_and_gauge), cmocka_unit_test(test_names),
	    cmocka_unit_test(test_label_escaping),    cmocka_unit_test(test_series_cap),
	    cmocka_unit_test(test_histogram),         cmocka_unit_test(test_histogram_labels),
	    cmocka_unit_test(test_text_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
