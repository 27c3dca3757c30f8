/*
 * datastore_audit.c: the shared audit trail over the datastore's dialect
 * (datastore_audit.h): append, list, prune, and the row that commits with
 * a call's first write.
 */
#include "server/datastore_audit.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "server/datastore_internal.h"

/* The longest stored value of each text column (ly_audit_clean's caps). */
#define COL_CAP(field) (sizeof(((struct ly_audit_clean *)0)->field) - 1)

void
ly_ds_audit_list_cleanup(struct ly_ds_audit_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++) {
		struct ly_ds_audit_row *r = &list->items[i];
		free(r->server);
		free(r->caller);
		free(r->action);
		free(r->entry_id);
		free(r->spiffe_id);
		free(r->trust_domain);
		free(r->result);
		free(r->detail);
	}
	free(list->items);
	list->items = NULL;
	list->n = 0;
}

static ly_status
check_server(const char *server, struct ly_error *err)
{
	size_t n = server != NULL ? strnlen(server, LY_DS_AUDIT_SERVER_MAX + 1) : 0;

	if (n == 0 || n > LY_DS_AUDIT_SERVER_MAX)
		return ly_error_set(err, LY_E_INVALID, "audit row: the server name is empty or over %d bytes",
		    LY_DS_AUDIT_SERVER_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)server[i];
		if (c < 0x21 || c >= 0x7f)
			return ly_error_set(err, LY_E_INVALID, "audit row: the server name is not printable ASCII");
	}
	return LY_OK;
}

/* Inserts the row of `rec` (cleaned here) through dialect `d`, in whatever transaction is open. */
static ly_status
insert_row(struct ly_datastore *ds, const struct ly_ds_dialect *d, const struct ly_audit_record *rec,
    const char *server, int64_t time, struct ly_error *err)
{
	struct ly_audit_clean *c;
	ly_status rc;

	if (rec->action == NULL || rec->result == NULL)
		return ly_error_set(err, LY_E_INVALID, "audit row: a record needs an action and a result");
	LY_TRY(check_server(server, err));
	if ((c = malloc(sizeof(*c))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	ly_audit_clean(rec, c);
	const struct ly_ds_param p[] = {
		LY_DS_INT(time),
		LY_DS_TEXT(server),
		LY_DS_TEXT(c->rec.caller),
		LY_DS_TEXT(c->rec.action),
		LY_DS_TEXT(c->rec.entry_id),
		LY_DS_TEXT(c->rec.spiffe_id),
		LY_DS_TEXT(c->rec.trust_domain),
		LY_DS_TEXT(c->rec.result),
		LY_DS_TEXT(c->rec.detail),
	};
	rc = d->exec(ds, LY_DS_AUDIT_INSERT, p, LY_DS_NELEM(p), "store audit row", NULL, NULL, err);
	free(c);
	return rc;
}

/* ---- the row committed with a call's first write ---- */

static struct ly_ds_audit_txn *
txn_of(struct ly_datastore *ds)
{
	return (struct ly_ds_audit_txn *)(void *)((char *)(uintptr_t)ds->dialect - offsetof(struct ly_ds_audit_txn, shim));
}

static ly_status
shim_begin(struct ly_datastore *ds, enum ly_ds_tx mode, int64_t *rev, struct ly_error *err)
{
	struct ly_ds_audit_txn *t = txn_of(ds);

	t->mode = mode;
	return t->orig->begin(ds, mode, rev, err);
}

/*
 * A write transaction's commit: the row first, in it. When the row is
 * refused the transaction rolls back (commit's contract: on failure it is
 * rolled back), so the change is not made without its row.
 */
static ly_status
shim_commit(struct ly_datastore *ds, struct ly_error *err)
{
	struct ly_ds_audit_txn *t = txn_of(ds);
	bool with_row = t->mode == LY_DS_TX_WRITE && !t->stored;
	ly_status rc;

	t->mode = LY_DS_TX_NONE;
	if (with_row) {
		struct ly_audit_record rec = t->rec;
		if ((rec.entry_id == NULL || rec.entry_id[0] == '\0') && t->entry_id_ref != NULL)
			rec.entry_id = *t->entry_id_ref;
		rc = insert_row(ds, t->orig, &rec, t->server, t->time, err);
		if (rc != LY_OK) {
			t->orig->rollback(ds);
			return ly_error_wrap(err, rc, "audit row not stored, change not applied");
		}
	}
	LY_TRY(t->orig->commit(ds, err));
	if (with_row)
		__atomic_store_n(&t->stored, true, __ATOMIC_RELEASE);
	return LY_OK;
}

void
ly_datastore_audit_arm(struct ly_datastore *ds, struct ly_ds_audit_txn *t)
{
	__atomic_store_n(&t->stored, false, __ATOMIC_RELEASE);
	if (ds->dialect == NULL)
		return; /* a store without the engine (a test's fake): nothing to interpose on */
	t->orig = ds->dialect;
	t->shim = *ds->dialect;
	t->shim.begin = shim_begin;
	t->shim.commit = shim_commit;
	t->mode = LY_DS_TX_NONE;
	ds->dialect = &t->shim;
}

void
ly_datastore_audit_disarm(struct ly_datastore *ds, struct ly_ds_audit_txn *t)
{
	if (ds->dialect == &t->shim)
		ds->dialect = t->orig;
}

/* ---- append, list, prune ---- */

static ly_status
no_engine(const struct ly_datastore *ds, struct ly_error *err)
{
	return ly_error_set(err, LY_E_UNSUPPORTED, "datastore %s holds no audit trail", ds->ops->name);
}

ly_status
ly_datastore_audit_append(struct ly_datastore *ds, const struct ly_audit_record *rec, const char *server,
    int64_t time, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;

	if (d == NULL)
		return no_engine(ds, err);
	/* One statement: atomic and durable on its own (autocommit). */
	LY_TRY(d->begin(ds, LY_DS_TX_NONE, NULL, err));
	return insert_row(ds, d, rec, server, time, err);
}

/* One row of LY_DS_AUDIT_LIST into the next item of `arg`, a struct ly_ds_audit_list with room for `limit`. */
struct audit_read {
	struct ly_ds_audit_list *list;
	size_t limit;
};

static ly_status
audit_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	struct audit_read *a = arg;

	if (a->list->n == a->limit)
		return ly_ds_corrupt("audit rows over the limit", err);
	/* Counted first: the list's cleanup frees what a failed read left. */
	struct ly_ds_audit_row *r = &a->list->items[a->list->n++];
	LY_TRY(d->col_int64(rows, 0, &r->id, err));
	LY_TRY(d->col_int64(rows, 1, &r->time, err));
	LY_TRY(d->col_text(rows, 2, LY_DS_AUDIT_SERVER_MAX, false, &r->server, err));
	LY_TRY(d->col_text(rows, 3, COL_CAP(caller), true, &r->caller, err));
	LY_TRY(d->col_text(rows, 4, COL_CAP(action), false, &r->action, err));
	LY_TRY(d->col_text(rows, 5, COL_CAP(entry_id), true, &r->entry_id, err));
	LY_TRY(d->col_text(rows, 6, COL_CAP(spiffe_id), true, &r->spiffe_id, err));
	LY_TRY(d->col_text(rows, 7, COL_CAP(trust_domain), true, &r->trust_domain, err));
	LY_TRY(d->col_text(rows, 8, COL_CAP(result), false, &r->result, err));
	return d->col_text(rows, 9, COL_CAP(detail), true, &r->detail, err);
}

ly_status
ly_datastore_audit_list(struct ly_datastore *ds, int64_t since, size_t limit, struct ly_ds_audit_list *out,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	struct ly_ds_audit_list got = LY_DS_AUDIT_LIST_INIT;
	struct audit_read read = { &got, limit };
	ly_status rc;

	if (d == NULL)
		return no_engine(ds, err);
	if (limit == 0 || limit > LY_DS_AUDIT_LIST_MAX)
		return ly_error_set(err, LY_E_LIMIT, "audit list: the limit must be 1..%d", LY_DS_AUDIT_LIST_MAX);
	if ((got.items = calloc(limit, sizeof(*got.items))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	const struct ly_ds_param p[] = { LY_DS_INT(since), LY_DS_INT((int64_t)limit) };
	if ((rc = d->begin(ds, LY_DS_TX_NONE, NULL, err)) != LY_OK)
		goto out;
	rc = ly_ds_engine_rows(ds, LY_DS_AUDIT_LIST, p, LY_DS_NELEM(p), "list audit rows", audit_row, &read, NULL, err);
	if (rc != LY_OK)
		goto out;
	/* Newest first from the store; oldest first to the caller. */
	for (size_t i = 0; i < got.n / 2; i++) {
		struct ly_ds_audit_row tmp = got.items[i];
		got.items[i] = got.items[got.n - 1 - i];
		got.items[got.n - 1 - i] = tmp;
	}
	if (out->n == 0 && out->items == NULL) {
		*out = got;
		got = (struct ly_ds_audit_list)LY_DS_AUDIT_LIST_INIT;
	} else {
		struct ly_ds_audit_row *grown = realloc(out->items, (out->n + got.n + 1) * sizeof(*grown));
		if (grown == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
		out->items = grown;
		memcpy(out->items + out->n, got.items, got.n * sizeof(*got.items));
		out->n += got.n;
		got.n = 0;
	}
out:
	d->rollback(ds);
	ly_ds_audit_list_cleanup(&got);
	return rc;
}

ly_status
ly_datastore_audit_prune(struct ly_datastore *ds, int64_t before, int64_t keep, size_t *removed,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	int64_t n_old = 0, n_over = 0;

	if (removed != NULL)
		*removed = 0;
	if (d == NULL)
		return no_engine(ds, err);
	if (keep < 0)
		return ly_error_set(err, LY_E_INVALID, "audit prune: a negative row count");
	const struct ly_ds_param old[] = { LY_DS_INT(before) };
	const struct ly_ds_param over[] = { LY_DS_INT(keep) };
	/* Two statements, each whole on its own: a crash between them leaves a trail that is still correct. */
	LY_TRY(d->begin(ds, LY_DS_TX_NONE, NULL, err));
	LY_TRY(d->exec(ds, LY_DS_AUDIT_PRUNE_OLD, old, LY_DS_NELEM(old), "prune audit rows", NULL, &n_old, err));
	if (keep > 0)
		LY_TRY(d->exec(ds, LY_DS_AUDIT_PRUNE_KEEP, over, LY_DS_NELEM(over), "prune audit rows", NULL, &n_over,
		    err));
	if (removed != NULL)
		*removed = (size_t)(n_old + n_over);
	return LY_OK;
}
