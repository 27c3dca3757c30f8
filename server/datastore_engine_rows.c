/*
 * datastore_engine_rows.c: reading rows, once for every operation
 * (datastore_engine.h: ly_ds_engine_rows and the readers built on it, and
 * the list growth the readers fill). Below both users, datastore_engine.c
 * and datastore_engine_fed.c, so that neither calls the other for them.
 * Owns nothing: the cursor lives for one call, the lists are the caller's.
 */
#include "server/datastore_engine.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/datastore_internal.h"

ly_status
ly_ds_engine_rows(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n,
    const char *what, ly_ds_row_fn on_row, void *arg, size_t *count, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_rows rows = { 0 };
	size_t k = 0;
	bool row = false;

	if (count != NULL)
		*count = 0;
	LY_TRY(d->exec(ds, id, p, n, what, &rows, NULL, err));
	for (;;) {
		rc = d->next(&rows, &row, what, err);
		if (rc != LY_OK || !row)
			break;
		k++;
		if (on_row != NULL && (rc = on_row(ds, &rows, arg, err)) != LY_OK)
			break;
	}
	d->rows_free(&rows);
	if (count != NULL)
		*count = k;
	return rc;
}

ly_status
ly_ds_engine_int64_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	return ds->dialect->col_int64(rows, 0, arg, err);
}

/* ly_ds_engine_row's on_row (NULL: none), called for the first row only. */
struct first_row {
	ly_ds_row_fn on_row;
	void *arg;
	bool got;
};

static ly_status
first_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct first_row *f = arg;
	if (f->got)
		return LY_OK;
	f->got = true;
	return f->on_row != NULL ? f->on_row(ds, rows, f->arg, err) : LY_OK;
}

ly_status
ly_ds_engine_row(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n,
    const char *what, ly_ds_row_fn on_row, void *arg, bool *found, struct ly_error *err)
{
	struct first_row f = { .on_row = on_row, .arg = arg, .got = false };

	*found = false;
	LY_TRY(ly_ds_engine_rows(ds, id, p, n, what, first_row, &f, NULL, err));
	*found = f.got;
	return LY_OK;
}

ly_status
ly_ds_engine_read_int64(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n,
    const char *what, const char *name, int64_t *out, struct ly_error *err)
{
	bool found = false;

	LY_TRY(ly_ds_engine_row(ds, id, p, n, what, ly_ds_engine_int64_row, out, &found, err));
	if (!found)
		return ly_ds_corrupt(name, err);
	return LY_OK;
}

ly_status
ly_ds_engine_grow(void *items, size_t n, size_t *cap, size_t size, size_t first, const char *what,
    struct ly_error *err)
{
	void *cur = NULL, *grown = NULL;

	if (n < *cap)
		return LY_OK;
	size_t ncap = *cap == 0 ? first : *cap * 2;
	if (ncap < *cap || ncap > SIZE_MAX / size)
		return ly_error_set(err, LY_E_NOMEM, "%s: out of memory", what);
	/* items is a T **: its pointer is read and written as bytes, whatever T is. */
	memcpy(&cur, items, sizeof(cur));
	grown = realloc(cur, ncap * size);
	if (grown == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: out of memory", what);
	memcpy(items, &grown, sizeof(grown));
	*cap = ncap;
	return LY_OK;
}

ly_status
ly_ds_engine_push(struct ly_ds_fill *f, void *item, const char *what, struct ly_error *err)
{
	char *arr = NULL;

	/* An array of T * is one of void *: every object pointer has its size and form on our platforms. */
	LY_TRY(ly_ds_engine_grow(f->items, *f->n, &f->cap, sizeof(item), 8, what, err));
	memcpy(&arr, f->items, sizeof(arr));
	memcpy(arr + *f->n * sizeof(item), &item, sizeof(item));
	(*f->n)++;
	return LY_OK;
}
