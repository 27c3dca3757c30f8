/* attest_sels.c: see attest_sels.h. */
#include "agent/attest_sels.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"

ly_status
ly_attest_sels_add(struct ly_attest_sels *l, const char *type, const char *value, struct ly_error *err)
{
	LY_TRY(ly_selector_check(type, value, err));
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->v[i].type, type) == 0 && strcmp(l->v[i].value, value) == 0)
			return LY_OK;
	}
	if (l->n >= LY_WORKLOAD_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "a workload may get at most %d selectors",
		    LY_WORKLOAD_SELECTORS_MAX);
	if (l->n == l->cap) {
		size_t cap = l->cap != 0 ? l->cap * 2 : 16;
		if (cap > LY_WORKLOAD_SELECTORS_MAX)
			cap = LY_WORKLOAD_SELECTORS_MAX;
		struct ly_selector *v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL)
			return ly_error_set(err, LY_E_NOMEM, "selectors: out of memory");
		l->v = v;
		l->cap = cap;
	}
	struct ly_selector sel = { NULL, NULL };
	LY_TRY(ly_selector_set(&sel, type, value, err));
	l->v[l->n++] = sel;
	return LY_OK;
}

ly_status
ly_attest_sels_addf(struct ly_attest_sels *l, const char *type, struct ly_error *err, const char *fmt, ...)
{
	char value[LY_SELECTOR_MAX + 1];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(value))
		return ly_error_set(err, LY_E_INVALID, "%s selector is longer than %d bytes", type, LY_SELECTOR_MAX);
	return ly_attest_sels_add(l, type, value, err);
}

void
ly_attest_sels_take(struct ly_attest_sels *l, struct ly_selector **out, size_t *n)
{
	if (l->n == 0) {
		free(l->v);
		*out = NULL;
	} else {
		*out = l->v;
	}
	*n = l->n;
	l->v = NULL;
	l->n = 0;
	l->cap = 0;
}

void
ly_attest_sels_cleanup(struct ly_attest_sels *l)
{
	ly_selectors_free(l->v, l->n);
	l->v = NULL;
	l->n = 0;
	l->cap = 0;
}
