/*
 * datastore_engine.c: the datastore operations written once, over a back
 * end's dialect (datastore_engine.h). Each is one transaction: begin,
 * statements, commit; on any failure the one cleanup path rolls back.
 */
#include "server/datastore_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/caps.h"
#include "server/datastore_internal.h"

/* ---- the revision and the change log ---- */

ly_status
ly_ds_engine_revision(struct ly_datastore *ds, int64_t *out, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "revision: no output");
	LY_TRY(ds->dialect->begin(ds, LY_DS_TX_NONE, NULL, err));
	return ly_ds_engine_read_int64(ds, LY_DS_REVISION, NULL, 0, "read meta", "revision", out, err);
}

ly_status
ly_ds_engine_entry_changes_prune(struct ly_datastore *ds, int64_t up_to, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t meta[2] = { 0, 0 };

	rc = d->begin(ds, LY_DS_TX_LOCK, meta, err);
	if (rc != LY_OK)
		goto out;
	if (up_to > meta[0])
		up_to = meta[0];
	if (up_to <= meta[1]) {
		rc = d->commit(ds, err);
		goto out;
	}
	const struct ly_ds_param p[] = { LY_DS_INT(up_to) };
	rc = d->exec(ds, LY_DS_CHANGES_PRUNE, p, LY_DS_NELEM(p), "prune changes", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	/* History only: the revision does not move. */
	rc = d->exec(ds, LY_DS_PRUNED_SET, p, LY_DS_NELEM(p), "write meta", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
out:
	d->rollback(ds);
	return rc;
}

/* ---- entries ---- */

/* The change log's row for a write of entry `entry_id` at revision `rev`. */
static ly_status
record_change(struct ly_datastore *ds, int64_t rev, const char *entry_id, enum ly_entry_op op, struct ly_error *err)
{
	const struct ly_ds_param p[] = { LY_DS_INT(rev), LY_DS_TEXT(entry_id), LY_DS_INT(op) };
	return ds->dialect->exec(ds, LY_DS_CHANGE_INSERT, p, LY_DS_NELEM(p), "record change", NULL, NULL, err);
}

/*
 * Runs statement `id`, which returns exactly one row holding a row id (an
 * INSERT or upsert ... RETURNING id), to its end; the id to *out.
 */
static ly_status
returning_id(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n, const char *what,
    int64_t *out, struct ly_error *err)
{
	size_t k = 0;

	/* To its end: SQLite finishes the statement's write there; a second row is refused below. */
	LY_TRY(ly_ds_engine_rows(ds, id, p, n, what, ly_ds_engine_int64_row, out, &k, err));
	if (k == 0)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: %s returned no row", what);
	if (k > 1)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: %s returned more than one row", what);
	return LY_OK;
}

/* What entry_lookup wants of the entry's row: its row id and created_at (each when non-NULL). */
struct entry_found {
	int64_t *rowid;
	int64_t *created_at;
};

static ly_status
lookup_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct entry_found *f = arg;
	if (f->rowid != NULL)
		LY_TRY(ds->dialect->col_int64(rows, 0, f->rowid, err));
	if (f->created_at != NULL)
		LY_TRY(ds->dialect->col_int64(rows, 1, f->created_at, err));
	return LY_OK;
}

/* Looks up entry `entry_id`: *found, and its row id and created_at when found. */
static ly_status
entry_lookup(struct ly_datastore *ds, const char *entry_id, bool *found, int64_t *rowid, int64_t *created_at,
    struct ly_error *err)
{
	struct entry_found f = { .rowid = rowid, .created_at = created_at };
	const struct ly_ds_param p[] = { LY_DS_TEXT(entry_id) };
	size_t k = 0;

	*found = false;
	LY_TRY(ly_ds_engine_rows(ds, LY_DS_ENTRY_LOOKUP, p, LY_DS_NELEM(p), "look up entry", lookup_row, &f, &k, err));
	*found = k > 0;
	return LY_OK;
}

struct dup_find {
	const struct ly_entry *e;
	int64_t exclude;
	char *dup; /* LY_ENTRY_ID_MAX + 1 bytes */
};

/* One candidate of find_duplicate; once one is found, the rows after it are not decoded. */
static ly_status
dup_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct dup_find *f = arg;
	struct ly_entry *cand = NULL;
	int64_t id = 0;
	ly_status rc;

	if (f->dup[0] != '\0')
		return LY_OK;
	rc = ds->dialect->read_entry(rows, 0, &id, &cand, err);
	if (rc == LY_OK && id != f->exclude && ly_entry_same_identity(f->e, cand))
		(void)snprintf(f->dup, LY_ENTRY_ID_MAX + 1, "%s", cand->entry_id);
	ly_entry_free(cand);
	return rc;
}

/*
 * Refuses `e` when another entry (row id != exclude) has its identity
 * (ly_ds_entry_duplicate names that entry).
 */
static ly_status
refuse_duplicate(struct ly_datastore *ds, const struct ly_entry *e, const unsigned char hash[LY_DS_HASH_LEN],
    int64_t exclude, struct ly_error *err)
{
	char dup[LY_ENTRY_ID_MAX + 1] = "";
	struct dup_find f = { .e = e, .exclude = exclude, .dup = dup };
	const struct ly_ds_param p[] = { LY_DS_BYTES(hash, LY_DS_HASH_LEN) };

	LY_TRY(ly_ds_engine_rows(ds, LY_DS_ENTRY_BY_IDENTITY, p, LY_DS_NELEM(p), "find duplicate", dup_row, &f, NULL,
	    err));
	if (dup[0] != '\0')
		return ly_ds_entry_duplicate(dup, err);
	return LY_OK;
}

/*
 * The parameters of LY_DS_ENTRY_UPDATE: `first` (the row id), then the
 * entry's fields; LY_DS_ENTRY_INSERT has the same after its entry_id and
 * created_at after them. Returns how many were written to `p`.
 */
#define ENTRY_PARAMS_MAX 12
static size_t
entry_params(struct ly_ds_param *p, struct ly_ds_param first, const struct ly_entry *e,
    const unsigned char hash[LY_DS_HASH_LEN], int64_t rev)
{
	size_t n = 0;
	p[n++] = first;
	p[n++] = (struct ly_ds_param)LY_DS_TEXT(e->spiffe_id);
	p[n++] = (struct ly_ds_param)LY_DS_TEXT(e->parent_id);
	p[n++] = (struct ly_ds_param)LY_DS_BYTES(hash, LY_DS_HASH_LEN);
	p[n++] = (struct ly_ds_param)LY_DS_INT(e->x509_svid_ttl);
	p[n++] = (struct ly_ds_param)LY_DS_INT(e->jwt_svid_ttl);
	p[n++] = (struct ly_ds_param)LY_DS_BOOL(e->node);
	p[n++] = (struct ly_ds_param)LY_DS_BOOL(e->admin);
	p[n++] = (struct ly_ds_param)LY_DS_BOOL(e->downstream);
	p[n++] = (struct ly_ds_param)LY_DS_TEXT(e->hint); /* NULL: SQL NULL */
	p[n++] = (struct ly_ds_param)LY_DS_INT(rev);
	return n;
}

/* Writes the selectors, DNS names and federates_with of entry row `id` (it has no selectors or names yet). */
static ly_status
entry_children_write(struct ly_datastore *ds, int64_t id, const struct ly_entry *e, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	if (e->n_selectors > 0)
		LY_TRY(d->insert_selectors(ds, LY_DS_ENTRY_SEL_INSERT, id, e->selectors, e->n_selectors, err));
	if (e->n_dns_names > 0)
		LY_TRY(d->insert_dns_names(ds, id, e->dns_names, e->n_dns_names, err));
	/* Replaces its federates_with rows; a trust domain without a bundle is refused (datastore_engine_fed.c). */
	return ly_ds_engine_entry_federates_write(ds, id, e, err);
}

/* The end of an entry's create or update at revision `rev`: its lists, the change log's row, commit. */
static ly_status
entry_write_end(struct ly_datastore *ds, int64_t id, const struct ly_entry *e, int64_t rev, enum ly_entry_op op,
    struct ly_error *err)
{
	LY_TRY(entry_children_write(ds, id, e, err));
	LY_TRY(record_change(ds, rev, e->entry_id, op, err));
	return ds->dialect->commit(ds, err);
}

ly_status
ly_ds_engine_entry_create(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	char *given_id = NULL;
	bool assigned = false, found = false;
	unsigned char hash[LY_DS_HASH_LEN];
	int64_t rev = 0, id = 0;
	int64_t now = ly_ds_now();
	struct ly_ds_param p[ENTRY_PARAMS_MAX];

	rc = ly_ds_entry_create_prepare(entry, &given_id, &assigned, hash, err);
	if (rc != LY_OK)
		return rc;
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = entry_lookup(ds, entry->entry_id, &found, NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	if (found) {
		rc = ly_ds_entry_id_taken(entry->entry_id, err);
		goto out;
	}
	rc = refuse_duplicate(ds, entry, hash, -1, err);
	if (rc != LY_OK)
		goto out;
	size_t n = entry_params(p, (struct ly_ds_param)LY_DS_TEXT(entry->entry_id), entry, hash, rev);
	p[n++] = (struct ly_ds_param)LY_DS_INT(now);
	rc = returning_id(ds, LY_DS_ENTRY_INSERT, p, n, "insert entry", &id, err);
	if (rc != LY_OK)
		goto out;
	rc = entry_write_end(ds, id, entry, rev, LY_ENTRY_CREATED, err);
	if (rc != LY_OK)
		goto out;
	entry->revision = rev;
	entry->created_at = now;
out:
	d->rollback(ds);
	ly_ds_entry_create_finish(entry, rc, given_id, assigned);
	return rc;
}

ly_status
ly_ds_engine_entry_update(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	unsigned char hash[LY_DS_HASH_LEN];
	int64_t rev = 0, id = 0, created_at = 0;
	bool found = false;
	struct ly_ds_param p[ENTRY_PARAMS_MAX];

	LY_TRY(ly_ds_entry_update_prepare(entry, hash, err));
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = entry_lookup(ds, entry->entry_id, &found, &id, &created_at, err);
	if (rc != LY_OK)
		goto out;
	if (!found) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "entry %s not found", entry->entry_id);
		goto out;
	}
	rc = refuse_duplicate(ds, entry, hash, id, err);
	if (rc != LY_OK)
		goto out;
	size_t n = entry_params(p, (struct ly_ds_param)LY_DS_INT(id), entry, hash, rev);
	rc = d->exec(ds, LY_DS_ENTRY_UPDATE, p, n, "update entry", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	/* The selectors and DNS names are replaced whole. */
	const struct ly_ds_param owner[] = { LY_DS_INT(id) };
	rc = d->exec(ds, LY_DS_ENTRY_SEL_DELETE, owner, LY_DS_NELEM(owner), "delete selectors", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_ENTRY_DNS_DELETE, owner, LY_DS_NELEM(owner), "delete DNS names", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = entry_write_end(ds, id, entry, rev, LY_ENTRY_UPDATED, err);
	if (rc != LY_OK)
		goto out;
	entry->revision = rev;
	entry->created_at = created_at;
out:
	d->rollback(ds);
	return rc;
}

struct entry_keep {
	const struct ly_entry_filter *filter;
	struct ly_entry_list *found;
};

/* One entry of entry_list, kept when it passes the selector part of the filter. */
static ly_status
keep_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct entry_keep *k = arg;
	struct ly_entry *e = NULL;
	ly_status rc = ds->dialect->read_entry(rows, 0, NULL, &e, err);
	if (rc == LY_OK)
		rc = ly_ds_entry_list_keep(k->found, k->filter, &e, err);
	ly_entry_free(e);
	return rc;
}

ly_status
ly_ds_engine_entry_list(struct ly_datastore *ds, const struct ly_entry_filter *filter, struct ly_entry_list *out,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_entry_list found = LY_ENTRY_LIST_INIT;
	struct entry_keep keep = { .filter = filter, .found = &found };
	enum ly_ds_stmt id = LY_DS_ENTRY_LIST_ALL;
	struct ly_ds_param p[2];
	size_t n = 0;

	LY_TRY(ly_ds_check_entry_filter(filter, out, err));
	const char *sid = filter != NULL ? filter->spiffe_id : NULL;
	const char *pid = filter != NULL ? filter->parent_id : NULL;
	if (sid != NULL) {
		id = LY_DS_ENTRY_LIST_BY_SPIFFE_ID;
		p[n++] = (struct ly_ds_param)LY_DS_TEXT(sid);
		p[n++] = (struct ly_ds_param)LY_DS_TEXT(pid);
	} else if (pid != NULL) {
		id = LY_DS_ENTRY_LIST_BY_PARENT_ID;
		p[n++] = (struct ly_ds_param)LY_DS_TEXT(pid);
	}
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_rows(ds, id, p, n, "list entries", keep_row, &keep, NULL, err);
	if (rc == LY_OK)
		rc = d->commit(ds, err);
	if (rc == LY_OK)
		rc = ly_ds_entry_list_move(out, &found, err);
	d->rollback(ds);
	ly_entry_list_cleanup(&found);
	return rc;
}

/* The row of LY_DS_META_GET to v[0], v[1]. */
static ly_status
meta_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	int64_t *v = arg;
	LY_TRY(ds->dialect->col_int64(rows, 0, &v[0], err));
	return ds->dialect->col_int64(rows, 1, &v[1], err);
}

/* The revision and the change-log horizon, read in the open transaction. */
static ly_status
meta_read(struct ly_datastore *ds, int64_t *revision, int64_t *pruned, struct ly_error *err)
{
	int64_t v[2] = { 0, 0 };
	size_t k = 0;

	LY_TRY(ly_ds_engine_rows(ds, LY_DS_META_GET, NULL, 0, "read meta", meta_row, v, &k, err));
	if (k == 0)
		return ly_ds_corrupt("meta", err);
	*revision = v[0];
	*pruned = v[1];
	return LY_OK;
}

/* The changes read so far, and the room allocated for them. */
struct changes_got {
	struct ly_entry_changes *got;
	size_t cap;
};

/* One row of LY_DS_CHANGES_SINCE appended to the list; the entry read whole unless it was deleted. */
static ly_status
change_read(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	struct changes_got *g = arg;
	int64_t op = 0;

	LY_TRY(ly_ds_engine_grow(&g->got->items, g->got->n, &g->cap, sizeof(*g->got->items), 16, "entry changes", err));
	struct ly_entry_change *c = &g->got->items[g->got->n++];
	memset(c, 0, sizeof(*c));
	LY_TRY(d->col_text(rows, 0, LY_ENTRY_ID_MAX, false, &c->entry_id, err));
	LY_TRY(d->col_int64(rows, 1, &c->revision, err));
	LY_TRY(d->col_int64(rows, 2, &op, err));
	if (op != LY_ENTRY_CREATED && op != LY_ENTRY_UPDATED && op != LY_ENTRY_DELETED)
		return ly_ds_corrupt("change op", err);
	c->op = (enum ly_entry_op)op;
	if (c->op == LY_ENTRY_DELETED)
		return LY_OK;
	if (d->col_is_null(rows, 3))
		return ly_ds_corrupt("change log names a missing entry", err);
	return d->read_entry(rows, 3, NULL, &c->entry, err);
}

/* Each entry's latest change after `since` appended to `got`, in the open transaction. */
static ly_status
changes_read(struct ly_datastore *ds, int64_t since, struct ly_entry_changes *got, struct ly_error *err)
{
	struct changes_got g = { .got = got, .cap = 0 };
	const struct ly_ds_param p[] = { LY_DS_INT(since) };

	return ly_ds_engine_rows(ds, LY_DS_CHANGES_SINCE, p, LY_DS_NELEM(p), "read changes", change_read, &g, NULL,
	    err);
}

ly_status
ly_ds_engine_entry_changes_since(struct ly_datastore *ds, int64_t since, struct ly_entry_changes *out,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_entry_changes got = LY_ENTRY_CHANGES_INIT;
	int64_t current = 0, pruned = 0;

	if (out == NULL || out->n != 0 || out->items != NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry changes: output must be empty");
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = meta_read(ds, &current, &pruned, err);
	if (rc != LY_OK)
		goto out;
	got.revision = current;
	/* Older than the retained log, or newer than this store: the caller reloads. */
	if (since < pruned || since > current)
		got.resync = true;
	else
		rc = changes_read(ds, since, &got, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	*out = got;
	got = (struct ly_entry_changes)LY_ENTRY_CHANGES_INIT;
out:
	d->rollback(ds);
	ly_entry_changes_cleanup(&got);
	return rc;
}

struct entry_one {
	int64_t *rowid;
	struct ly_entry **out;
};

/* The entry on the row to *one->out, its row id to *one->rowid. */
static ly_status
entry_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct entry_one *one = arg;
	return ds->dialect->read_entry(rows, 0, one->rowid, one->out, err);
}

/* Entry `entry_id` read in the open transaction (LY_E_NOT_FOUND without it); its row id to *rowid. */
static ly_status
entry_read(struct ly_datastore *ds, const char *entry_id, int64_t *rowid, struct ly_entry **out,
    struct ly_error *err)
{
	struct entry_one one = { .rowid = rowid, .out = out };
	const struct ly_ds_param p[] = { LY_DS_TEXT(entry_id) };
	bool found = false;

	LY_TRY(ly_ds_engine_row(ds, LY_DS_ENTRY_BY_ID, p, LY_DS_NELEM(p), "get entry", entry_row, &one, &found, err));
	if (!found)
		return ly_error_set(err, LY_E_NOT_FOUND, "entry %s not found", entry_id);
	return LY_OK;
}

ly_status
ly_ds_engine_entry_get(struct ly_datastore *ds, const char *entry_id, struct ly_entry **out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry get: no output");
	*out = NULL;
	LY_TRY(ly_ds_check_entry_id(entry_id, err));
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = entry_read(ds, entry_id, NULL, out, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
	if (rc != LY_OK) {
		ly_entry_free(*out);
		*out = NULL;
	}
out:
	d->rollback(ds);
	return rc;
}

ly_status
ly_ds_engine_entry_delete(struct ly_datastore *ds, const char *entry_id, struct ly_entry **deleted,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_entry *e = NULL;
	int64_t id = 0, rev = 0;

	if (deleted != NULL)
		*deleted = NULL;
	LY_TRY(ly_ds_check_entry_id(entry_id, err));
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = entry_read(ds, entry_id, &id, &e, err);
	if (rc != LY_OK)
		goto out;
	/* Selectors and DNS names go with it (ON DELETE CASCADE). */
	const struct ly_ds_param del[] = { LY_DS_INT(id) };
	rc = d->exec(ds, LY_DS_ENTRY_DELETE, del, LY_DS_NELEM(del), "delete entry", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = record_change(ds, rev, entry_id, LY_ENTRY_DELETED, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	if (deleted != NULL) {
		*deleted = e;
		e = NULL;
	}
out:
	d->rollback(ds);
	ly_entry_free(e);
	return rc;
}

/* ---- join tokens ---- */

ly_status
ly_ds_engine_token_create(struct ly_datastore *ds, const char *token, const char *spiffe_id, int64_t expires_at,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	unsigned char hash[LY_DS_HASH_LEN];
	int64_t rev = 0;

	LY_TRY(ly_ds_check_token_create(token, spiffe_id, expires_at, err));
	LY_TRY(ly_ds_token_hash(token, hash, err));
	const struct ly_ds_param p[] = {
		LY_DS_BYTES(hash, sizeof(hash)),
		LY_DS_TEXT(spiffe_id),
		LY_DS_INT(expires_at),
		LY_DS_INT(ly_ds_now()),
	};
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_TOKEN_INSERT, p, LY_DS_NELEM(p), "store join token", NULL, NULL, err);
	if (rc == LY_E_INVALID)
		rc = ly_error_set(err, LY_E_INVALID, "join token already exists");
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
out:
	d->rollback(ds);
	OPENSSL_cleanse(hash, sizeof(hash));
	return rc;
}

/* The ID on the row of LY_DS_TOKEN_USE_GET to *(char **)arg (token_sha256 is the key: one row at most). */
static ly_status
use_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	char **granted = arg;
	if (*granted != NULL)
		return LY_OK;
	return ds->dialect->col_text(rows, 0, LY_SPIFFE_ID_MAX, false, granted, err);
}

/*
 * No stored token: a retry by the key that used it, within its retry time?
 * (datastore.h). *granted: the ID it was given, or NULL when there is none.
 */
static ly_status
token_use_get(struct ly_datastore *ds, const unsigned char *hash, const uint8_t *key_sha256, int64_t now,
    char **granted, struct ly_error *err)
{
	ly_status rc;
	const struct ly_ds_param p[] = {
		LY_DS_BYTES(hash, LY_DS_HASH_LEN),
		LY_DS_BYTES(key_sha256, LY_JOIN_TOKEN_KEY_LEN),
		LY_DS_INT(now),
	};

	*granted = NULL;
	rc = ly_ds_engine_rows(ds, LY_DS_TOKEN_USE_GET, p, LY_DS_NELEM(p), "use join token again", use_row, granted,
	    NULL, err);
	if (rc != LY_OK) {
		free(*granted);
		*granted = NULL;
	}
	return rc;
}

struct token_taken {
	char *granted;
	int64_t expires_at;
};

/* The row of LY_DS_TOKEN_TAKE; a second one is corrupt (token_sha256 is the key). */
static ly_status
token_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct token_taken *t = arg;
	if (t->granted != NULL)
		return ly_ds_corrupt("join token", err);
	LY_TRY(ds->dialect->col_text(rows, 0, LY_SPIFFE_ID_MAX, false, &t->granted, err));
	return ds->dialect->col_int64(rows, 1, &t->expires_at, err);
}

ly_status
ly_ds_engine_token_consume(struct ly_datastore *ds, const char *token, int64_t now, const uint8_t *key_sha256,
    char **spiffe_id, bool *again, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	unsigned char hash[LY_DS_HASH_LEN];
	struct token_taken t = { .granted = NULL, .expires_at = 0 };
	int64_t rev = 0;
	size_t k = 0;

	if (spiffe_id == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "join token: no output");
	*spiffe_id = NULL;
	if (again != NULL)
		*again = false;
	LY_TRY(ly_datastore_token_check(token, err));
	LY_TRY(ly_ds_token_hash(token, hash, err));
	const struct ly_ds_param p[] = { LY_DS_BYTES(hash, sizeof(hash)) };
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	/* One statement finds and deletes it: two consumers cannot both get it. */
	rc = ly_ds_engine_rows(ds, LY_DS_TOKEN_TAKE, p, LY_DS_NELEM(p), "use join token", token_row, &t, &k, err);
	if (rc != LY_OK)
		goto out;
	if (k == 0) {
		/* Used already: answered again only for the key that used it (its answer was lost). */
		if (key_sha256 != NULL && (rc = token_use_get(ds, hash, key_sha256, now, &t.granted, err)) != LY_OK)
			goto out;
		if (t.granted == NULL) {
			rc = ly_error_set(err, LY_E_NOT_FOUND, "join token unknown or already used");
			goto out;
		}
		if (again != NULL)
			*again = true;
		*spiffe_id = t.granted;
		t.granted = NULL;
		rc = LY_OK; /* nothing written: rolled back below */
		goto out;
	}
	if (now < t.expires_at && key_sha256 != NULL) {
		const struct ly_ds_param u[] = {
			LY_DS_BYTES(hash, sizeof(hash)),
			LY_DS_TEXT(t.granted),
			LY_DS_BYTES(key_sha256, LY_JOIN_TOKEN_KEY_LEN),
			LY_DS_INT(now),
			LY_DS_INT(now + LY_JOIN_TOKEN_RETRY_S),
		};
		rc = d->exec(ds, LY_DS_TOKEN_USE_INSERT, u, LY_DS_NELEM(u), "record join token use", NULL, NULL, err);
		if (rc != LY_OK)
			goto out;
	}
	/* Committed even when expired: an expired token is used up too. */
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	if (now >= t.expires_at) {
		rc = ly_error_set(err, LY_E_EXPIRED, "join token expired");
		goto out;
	}
	*spiffe_id = t.granted;
	t.granted = NULL;
out:
	d->rollback(ds);
	free(t.granted);
	OPENSSL_cleanse(hash, sizeof(hash));
	return rc;
}

ly_status
ly_ds_engine_token_prune(struct ly_datastore *ds, int64_t now, size_t *removed, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, n = 0, uses = 0;
	const struct ly_ds_param p[] = { LY_DS_INT(now) };

	if (removed != NULL)
		*removed = 0;
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_TOKEN_PRUNE, p, LY_DS_NELEM(p), "prune join tokens", NULL, &n, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_TOKEN_USE_PRUNE, p, LY_DS_NELEM(p), "prune join token uses", NULL, &uses, err);
	if (rc != LY_OK)
		goto out;
	/* Nothing removed: roll back, so the revision does not move. */
	if (n > 0 || uses > 0)
		rc = d->commit(ds, err);
	if (rc == LY_OK && removed != NULL)
		*removed = (size_t)n;
out:
	d->rollback(ds);
	return rc;
}

/* ---- agents ---- */

ly_status
ly_ds_engine_agent_upsert(struct ly_datastore *ds, const struct ly_ds_agent *agent, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, id = 0;

	LY_TRY(ly_ds_check_agent(agent, err));
	const struct ly_ds_param p[] = {
		LY_DS_TEXT(agent->spiffe_id),
		LY_DS_TEXT(agent->attestation_type),
		LY_DS_TEXT(agent->serial_number != NULL ? agent->serial_number : ""),
		LY_DS_INT(agent->svid_expires_at),
		LY_DS_BOOL(agent->banned),
		LY_DS_INT(ly_ds_now()),
	};
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = returning_id(ds, LY_DS_AGENT_UPSERT, p, LY_DS_NELEM(p), "store agent", &id, err);
	if (rc != LY_OK)
		goto out;
	/* The selectors are replaced whole. */
	const struct ly_ds_param owner[] = { LY_DS_INT(id) };
	rc = d->exec(ds, LY_DS_AGENT_SEL_DELETE, owner, LY_DS_NELEM(owner), "replace agent selectors", NULL, NULL,
	    err);
	if (rc != LY_OK)
		goto out;
	if (agent->n_selectors > 0) {
		rc = d->insert_selectors(ds, LY_DS_AGENT_SEL_INSERT, id, agent->selectors, agent->n_selectors, err);
		if (rc != LY_OK)
			goto out;
	}
	rc = d->commit(ds, err);
out:
	d->rollback(ds);
	return rc;
}

/* The agent on the row to *(struct ly_ds_agent **)arg. */
static ly_status
agent_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	return ds->dialect->read_agent(rows, arg, err);
}

ly_status
ly_ds_engine_agent_get(struct ly_datastore *ds, const char *spiffe_id, struct ly_ds_agent **out,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_agent *a = NULL;
	const struct ly_ds_param p[] = { LY_DS_TEXT(spiffe_id) };
	bool found = false;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent get: no output");
	*out = NULL;
	LY_TRY(ly_ds_check_agent_id(spiffe_id, err));
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_row(ds, LY_DS_AGENT_GET, p, LY_DS_NELEM(p), "get agent", agent_row, &a, &found, err);
	if (rc == LY_OK && !found)
		rc = ly_error_set(err, LY_E_NOT_FOUND, "agent %s not found", spiffe_id);
	if (rc == LY_OK)
		rc = d->commit(ds, err);
	if (rc == LY_OK) {
		*out = a;
		a = NULL;
	}
	d->rollback(ds);
	ly_ds_agent_free(a);
	return rc;
}

/* One agent of agent_list appended to the list. */
static ly_status
agents_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct ly_ds_agent *a = NULL;
	ly_status rc = ds->dialect->read_agent(rows, &a, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_push(arg, a, "agent list", err);
	if (rc != LY_OK)
		ly_ds_agent_free(a);
	return rc;
}

ly_status
ly_ds_engine_agent_list(struct ly_datastore *ds, struct ly_ds_agent_list *out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_agent_list got = LY_DS_AGENT_LIST_INIT;
	struct ly_ds_fill fill = LY_DS_FILL(&got);

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent list: no output");
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_rows(ds, LY_DS_AGENT_LIST, NULL, 0, "list agents", agents_row, &fill, NULL, err);
	if (rc == LY_OK)
		rc = d->commit(ds, err);
	/* Hand over, appending to what the caller holds. */
	if (rc == LY_OK)
		rc = ly_ds_agent_list_move(out, &got, err);
	d->rollback(ds);
	ly_ds_agent_list_cleanup(&got);
	return rc;
}

/* One agent row changed by statement `id` (a delete or a ban); LY_E_NOT_FOUND when there is none. */
static ly_status
agent_write(struct ly_datastore *ds, enum ly_ds_stmt id, const char *spiffe_id, bool banned, const char *what,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, n = 0;
	const struct ly_ds_param p[] = { LY_DS_TEXT(spiffe_id), LY_DS_BOOL(banned), LY_DS_INT(ly_ds_now()) };

	LY_TRY(ly_ds_check_agent_id(spiffe_id, err));
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, id, p, id == LY_DS_AGENT_BAN ? LY_DS_NELEM(p) : 1, what, NULL, &n, err);
	if (rc != LY_OK)
		goto out;
	if (n == 0) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "agent %s not found", spiffe_id);
		goto out;
	}
	/* Evicted: it must attest again, and a join token it used no longer answers its key. */
	if (id == LY_DS_AGENT_DELETE &&
	    (rc = d->exec(ds, LY_DS_TOKEN_USE_FORGET, p, 1, "forget join token uses", NULL, NULL, err)) != LY_OK)
		goto out;
	rc = d->commit(ds, err);
out:
	d->rollback(ds);
	return rc;
}

ly_status
ly_ds_engine_agent_delete(struct ly_datastore *ds, const char *spiffe_id, struct ly_error *err)
{
	return agent_write(ds, LY_DS_AGENT_DELETE, spiffe_id, false, "evict agent", err);
}

ly_status
ly_ds_engine_agent_set_banned(struct ly_datastore *ds, const char *spiffe_id, bool banned, struct ly_error *err)
{
	return agent_write(ds, LY_DS_AGENT_BAN, spiffe_id, banned, "ban agent", err);
}

/* ---- CA state ---- */

ly_status
ly_ds_engine_ca_state_put(struct ly_datastore *ds, const char *name, const uint8_t *data, size_t len,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0;

	LY_TRY(ly_ds_check_ca_state_put(name, data, len, err));
	const struct ly_ds_param p[] = { LY_DS_TEXT(name), LY_DS_BYTES(data, len), LY_DS_INT(ly_ds_now()) };
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_CA_PUT, p, LY_DS_NELEM(p), "store CA state", NULL, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
out:
	d->rollback(ds);
	return rc;
}

struct ca_value {
	struct ly_buf got;
	bool seen;
};

/* The value on the row of LY_DS_CA_GET; a second row is corrupt (name is the key). */
static ly_status
ca_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct ca_value *v = arg;
	if (v->seen)
		return ly_ds_corrupt("CA state value", err);
	v->seen = true;
	return ds->dialect->col_bytes(rows, 0, LY_CA_STATE_MAX, "CA state value", &v->got, err);
}

ly_status
ly_ds_engine_ca_state_get(struct ly_datastore *ds, const char *name, struct ly_buf *out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ca_value v = { .got = LY_BUF_INIT, .seen = false };
	const struct ly_ds_param p[] = { LY_DS_TEXT(name) };
	size_t k = 0;

	if (out == NULL || out->data != NULL)
		return ly_error_set(err, LY_E_INTERNAL, "CA state get: output must be empty");
	LY_TRY(ly_ds_check_ca_name(name, err));
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_rows(ds, LY_DS_CA_GET, p, LY_DS_NELEM(p), "read CA state", ca_row, &v, &k, err);
	if (rc == LY_OK && k == 0)
		rc = ly_error_set(err, LY_E_NOT_FOUND, "CA state %s not found", name);
	if (rc == LY_OK)
		rc = d->commit(ds, err);
	if (rc == LY_OK)
		ly_buf_take(out, &v.got);
	d->rollback(ds);
	ly_buf_free_secret(&v.got);
	return rc;
}

ly_status
ly_ds_engine_ca_state_delete(struct ly_datastore *ds, const char *name, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, n = 0;
	const struct ly_ds_param p[] = { LY_DS_TEXT(name) };

	LY_TRY(ly_ds_check_ca_name(name, err));
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_CA_DELETE, p, LY_DS_NELEM(p), "delete CA state", NULL, &n, err);
	if (rc != LY_OK)
		goto out;
	if (n == 0) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "CA state %s not found", name);
		goto out;
	}
	rc = d->commit(ds, err);
out:
	d->rollback(ds);
	return rc;
}
