/*
 * datastore_engine.c: the datastore operations written once, over a back
 * end's dialect (datastore_engine.h). Each is one transaction: begin,
 * statements, commit; on any failure the one cleanup path rolls back.
 */
#include "server/datastore_engine.h"

#include <stdlib.h>

#include <openssl/crypto.h>

#include "lib/caps.h"
#include "server/datastore_internal.h"

/* ---- the revision and the change log ---- */

ly_status
ly_ds_engine_revision(struct ly_datastore *ds, int64_t *out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_rows rows = { 0 };
	bool open = false, row = false;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "revision: no output");
	rc = d->begin(ds, LY_DS_TX_NONE, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_REVISION, NULL, 0, "read meta", &rows, NULL, err);
	if (rc != LY_OK)
		goto out;
	open = true;
	rc = d->next(&rows, &row, "read meta", err);
	if (rc != LY_OK)
		goto out;
	if (!row) {
		rc = ly_ds_corrupt("revision", err);
		goto out;
	}
	rc = d->col_int64(&rows, 0, out, err);
out:
	if (open)
		d->rows_free(&rows);
	return rc;
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

/* Entry `entry_id` read in the open transaction (LY_E_NOT_FOUND without it); its row id to *rowid. */
static ly_status
entry_read(struct ly_datastore *ds, const char *entry_id, int64_t *rowid, struct ly_entry **out,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_rows rows = { 0 };
	bool row = false;
	const struct ly_ds_param p[] = { LY_DS_TEXT(entry_id) };

	LY_TRY(d->exec(ds, LY_DS_ENTRY_BY_ID, p, LY_DS_NELEM(p), "get entry", &rows, NULL, err));
	rc = d->next(&rows, &row, "get entry", err);
	if (rc == LY_OK && !row)
		rc = ly_error_set(err, LY_E_NOT_FOUND, "entry %s not found", entry_id);
	if (rc == LY_OK)
		rc = d->read_entry(&rows, rowid, out, err);
	d->rows_free(&rows);
	return rc;
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
	const struct ly_ds_param change[] = { LY_DS_INT(rev), LY_DS_TEXT(entry_id), LY_DS_INT(LY_ENTRY_DELETED) };
	rc = d->exec(ds, LY_DS_CHANGE_INSERT, change, LY_DS_NELEM(change), "record change", NULL, NULL, err);
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

ly_status
ly_ds_engine_token_consume(struct ly_datastore *ds, const char *token, int64_t now, char **spiffe_id,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	unsigned char hash[LY_DS_HASH_LEN];
	struct ly_ds_rows rows = { 0 };
	bool open = false, row = false;
	char *granted = NULL;
	int64_t expires_at = 0, rev = 0;

	if (spiffe_id == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "join token: no output");
	*spiffe_id = NULL;
	LY_TRY(ly_datastore_token_check(token, err));
	LY_TRY(ly_ds_token_hash(token, hash, err));
	const struct ly_ds_param p[] = { LY_DS_BYTES(hash, sizeof(hash)) };
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	/* One statement finds and deletes it: two consumers cannot both get it. */
	rc = d->exec(ds, LY_DS_TOKEN_TAKE, p, LY_DS_NELEM(p), "use join token", &rows, NULL, err);
	if (rc != LY_OK)
		goto out;
	open = true;
	rc = d->next(&rows, &row, "use join token", err);
	if (rc != LY_OK)
		goto out;
	if (!row) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "join token unknown or already used");
		goto out;
	}
	if ((rc = d->col_text(&rows, 0, LY_SPIFFE_ID_MAX, false, &granted, err)) != LY_OK ||
	    (rc = d->col_int64(&rows, 1, &expires_at, err)) != LY_OK)
		goto out;
	rc = d->next(&rows, &row, "use join token", err);
	if (rc != LY_OK)
		goto out;
	if (row) {
		rc = ly_ds_corrupt("join token", err);
		goto out;
	}
	d->rows_free(&rows);
	open = false;
	/* Committed even when expired: an expired token is used up too. */
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	if (now >= expires_at) {
		rc = ly_error_set(err, LY_E_EXPIRED, "join token expired");
		goto out;
	}
	*spiffe_id = granted;
	granted = NULL;
out:
	if (open)
		d->rows_free(&rows);
	d->rollback(ds);
	free(granted);
	OPENSSL_cleanse(hash, sizeof(hash));
	return rc;
}

ly_status
ly_ds_engine_token_prune(struct ly_datastore *ds, int64_t now, size_t *removed, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, n = 0;
	const struct ly_ds_param p[] = { LY_DS_INT(now) };

	if (removed != NULL)
		*removed = 0;
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_TOKEN_PRUNE, p, LY_DS_NELEM(p), "prune join tokens", NULL, &n, err);
	if (rc != LY_OK)
		goto out;
	/* Nothing removed: roll back, so the revision does not move. */
	if (n > 0)
		rc = d->commit(ds, err);
	if (rc == LY_OK && removed != NULL)
		*removed = (size_t)n;
out:
	d->rollback(ds);
	return rc;
}

/* ---- agents ---- */

ly_status
ly_ds_engine_agent_get(struct ly_datastore *ds, const char *spiffe_id, struct ly_ds_agent **out,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_rows rows = { 0 };
	struct ly_ds_agent *a = NULL;
	bool open = false, row = false;
	const struct ly_ds_param p[] = { LY_DS_TEXT(spiffe_id) };

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent get: no output");
	*out = NULL;
	LY_TRY(ly_ds_check_agent_id(spiffe_id, err));
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_AGENT_GET, p, LY_DS_NELEM(p), "get agent", &rows, NULL, err);
	if (rc != LY_OK)
		goto out;
	open = true;
	rc = d->next(&rows, &row, "get agent", err);
	if (rc != LY_OK)
		goto out;
	if (!row) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "agent %s not found", spiffe_id);
		goto out;
	}
	rc = d->read_agent(&rows, &a, err);
	if (rc != LY_OK)
		goto out;
	d->rows_free(&rows);
	open = false;
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	*out = a;
	a = NULL;
out:
	if (open)
		d->rows_free(&rows);
	d->rollback(ds);
	ly_ds_agent_free(a);
	return rc;
}

ly_status
ly_ds_engine_agent_list(struct ly_datastore *ds, struct ly_ds_agent_list *out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_rows rows = { 0 };
	struct ly_ds_agent_list got = LY_DS_AGENT_LIST_INIT;
	struct ly_ds_agent *a = NULL;
	size_t cap = 0;
	bool open = false, row = false;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent list: no output");
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_AGENT_LIST, NULL, 0, "list agents", &rows, NULL, err);
	if (rc != LY_OK)
		goto out;
	open = true;
	for (;;) {
		rc = d->next(&rows, &row, "list agents", err);
		if (rc != LY_OK || !row)
			break;
		rc = d->read_agent(&rows, &a, err);
		if (rc != LY_OK)
			break;
		if (got.n == cap) {
			size_t ncap = cap == 0 ? 16 : cap * 2;
			struct ly_ds_agent **grown = realloc(got.items, ncap * sizeof(*grown));
			if (grown == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "agent list: out of memory");
				break;
			}
			got.items = grown;
			cap = ncap;
		}
		got.items[got.n++] = a;
		a = NULL;
	}
	if (rc != LY_OK)
		goto out;
	d->rows_free(&rows);
	open = false;
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	/* Hand over, appending to what the caller holds. */
	rc = ly_ds_agent_list_move(out, &got, err);
out:
	if (open)
		d->rows_free(&rows);
	d->rollback(ds);
	ly_ds_agent_free(a);
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

ly_status
ly_ds_engine_ca_state_get(struct ly_datastore *ds, const char *name, struct ly_buf *out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_rows rows = { 0 };
	struct ly_buf got = LY_BUF_INIT;
	bool open = false, row = false;
	const struct ly_ds_param p[] = { LY_DS_TEXT(name) };

	if (out == NULL || out->data != NULL)
		return ly_error_set(err, LY_E_INTERNAL, "CA state get: output must be empty");
	LY_TRY(ly_ds_check_ca_name(name, err));
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_CA_GET, p, LY_DS_NELEM(p), "read CA state", &rows, NULL, err);
	if (rc != LY_OK)
		goto out;
	open = true;
	rc = d->next(&rows, &row, "read CA state", err);
	if (rc != LY_OK)
		goto out;
	if (!row) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "CA state %s not found", name);
		goto out;
	}
	rc = d->col_bytes(&rows, 0, LY_CA_STATE_MAX, "CA state value", &got, err);
	if (rc != LY_OK)
		goto out;
	rc = d->next(&rows, &row, "read CA state", err);
	if (rc != LY_OK)
		goto out;
	if (row) {
		rc = ly_ds_corrupt("CA state value", err);
		goto out;
	}
	d->rows_free(&rows);
	open = false;
	rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	ly_buf_take(out, &got);
out:
	if (open)
		d->rows_free(&rows);
	d->rollback(ds);
	ly_buf_free_secret(&got);
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
