/*
 * datastore_bundle.c: the shared bundle of several servers on one database
 * (datastore.h, ly_datastore_bundle_publish / _read; bundle_shared.h),
 * written once over a back end's dialect (datastore_engine.h). Values
 * travel as base64 text, so every column is text or a number in any
 * dialect.
 */
#include "server/datastore_engine.h"

#include <stdlib.h>
#include <string.h>

#include "lib/b64.h"
#include "lib/caps.h"
#include "server/datastore_internal.h"

/* base64 of LY_CERT_DER_MAX bytes. */
#define VALUE_B64_MAX (4 * ((LY_CERT_DER_MAX + 2) / 3))

ly_status
ly_ds_engine_bundle_publish(struct ly_datastore *ds, const char *server_id, const struct ly_shared_authorities *mine,
    int64_t now, uint64_t min_sequence, uint64_t *sequence, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	char *b64 = NULL;
	int64_t rev = 0, seq = 0;
	ly_status rc;

	if (mine == NULL || sequence == NULL || server_id == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "bundle publish: missing argument");
	if (mine->n > LY_SHARED_AUTHORITIES_PER_SERVER)
		return ly_error_set(err, LY_E_LIMIT, "bundle publish: %zu authorities, over %d", mine->n,
		    LY_SHARED_AUTHORITIES_PER_SERVER);
	if (min_sequence > INT64_MAX - 1)
		return ly_error_set(err, LY_E_LIMIT, "bundle publish: sequence out of range");
	for (size_t i = 0; i < mine->n; i++) {
		if (strcmp(mine->items[i].server_id, server_id) != 0)
			return ly_error_set(err, LY_E_INTERNAL, "bundle publish: a row of another server");
	}
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	const struct ly_ds_param clear[] = { LY_DS_TEXT(server_id) };
	rc = d->exec(ds, LY_DS_BUNDLE_CLEAR, clear, LY_DS_NELEM(clear), "publish bundle", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	for (size_t i = 0; i < mine->n; i++) {
		const struct ly_shared_authority *a = &mine->items[i];
		if ((rc = ly_b64_encode(a->der.data, a->der.len, &b64, err)) != LY_OK)
			goto out;
		const struct ly_ds_param p[] = {
			LY_DS_TEXT(server_id), LY_DS_INT(a->jwt ? 2 : 1), LY_DS_TEXT(a->kid), LY_DS_TEXT(b64),
			LY_DS_INT(a->not_after), LY_DS_INT(now),
		};
		rc = d->exec(ds, LY_DS_BUNDLE_INSERT, p, LY_DS_NELEM(p), "publish bundle", NULL, NULL, err);
		free(b64);
		b64 = NULL;
		if (rc != LY_OK)
			goto out;
	}
	/* A server gone longer than its CA's lifetime leaves only expired rows: they go. */
	const struct ly_ds_param prune[] = { LY_DS_INT(now) };
	rc = d->exec(ds, LY_DS_BUNDLE_PRUNE, prune, LY_DS_NELEM(prune), "prune bundle", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	const struct ly_ds_param bump[] = { LY_DS_INT((int64_t)min_sequence) };
	rc = ly_ds_engine_read_int64(ds, LY_DS_BUNDLE_SEQ_BUMP, bump, LY_DS_NELEM(bump), "bundle sequence",
	    "bundle sequence", &seq, err);
	if (rc != LY_OK)
		goto out;
	if (seq <= 0) {
		rc = ly_ds_corrupt("bundle sequence", err);
		goto out;
	}
	rc = d->commit(ds, err);
	if (rc == LY_OK)
		*sequence = (uint64_t)seq;
out:
	d->rollback(ds);
	return rc;
}

/* One row of LY_DS_BUNDLE_LIST appended to the struct ly_shared_authorities `arg`. */
static ly_status
read_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	struct ly_shared_authorities *out = arg;
	char *server_id = NULL, *kid = NULL, *value = NULL;
	struct ly_buf der = LY_BUF_INIT;
	int64_t kind = 0, not_after = 0;
	ly_status rc;

	if ((rc = d->col_text(rows, 0, LY_SHARED_SERVER_ID_MAX, false, &server_id, err)) != LY_OK ||
	    (rc = d->col_int64(rows, 1, &kind, err)) != LY_OK ||
	    (rc = d->col_text(rows, 2, LY_SHARED_KID_MAX, false, &kid, err)) != LY_OK ||
	    (rc = d->col_text(rows, 3, VALUE_B64_MAX, false, &value, err)) != LY_OK ||
	    (rc = d->col_int64(rows, 4, &not_after, err)) != LY_OK)
		goto out;
	if ((kind != 1 && kind != 2) || ly_b64_decode(value, strlen(value), &der, NULL) != LY_OK) {
		rc = ly_ds_corrupt("bundle authority", err);
		goto out;
	}
	rc = ly_shared_authorities_add(out, server_id, kind == 2, kid, der.data, der.len, not_after, err);
	if (rc != LY_OK && rc != LY_E_NOMEM)
		rc = ly_ds_corrupt("bundle authority", err);
out:
	free(server_id);
	free(kid);
	free(value);
	ly_buf_free(&der);
	return rc;
}

ly_status
ly_ds_engine_bundle_read(struct ly_datastore *ds, int64_t now, struct ly_shared_authorities *out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	struct ly_shared_authorities got = LY_SHARED_AUTHORITIES_INIT;
	int64_t seq = 0;
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "bundle read: no output");
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_ds_engine_read_int64(ds, LY_DS_BUNDLE_SEQ_GET, NULL, 0, "read bundle", "bundle sequence", &seq, err);
	if (rc != LY_OK)
		goto out;
	if (seq < 0) {
		rc = ly_ds_corrupt("bundle sequence", err);
		goto out;
	}
	const struct ly_ds_param p[] = { LY_DS_INT(now) };
	rc = ly_ds_engine_rows(ds, LY_DS_BUNDLE_LIST, p, LY_DS_NELEM(p), "read bundle", read_row, &got, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	ly_shared_authorities_cleanup(out);
	*out = got;
	out->sequence = (uint64_t)seq;
	got = (struct ly_shared_authorities)LY_SHARED_AUTHORITIES_INIT;
out:
	d->rollback(ds);
	ly_shared_authorities_cleanup(&got);
	return rc;
}
