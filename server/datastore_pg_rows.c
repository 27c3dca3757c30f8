/*
 * datastore_pg_rows.c: PostgreSQL result rows decoded into the datastore's
 * values, and the lists written as JSON parameters
 * (datastore_pg_internal.h). Pure: no connection, no transaction; it reads
 * a PGresult it is given and builds what the caller asked for.
 *
 * The database is ours, but a damaged row is refused, not trusted: every
 * column is checked against its cap and type (text without NUL, a number
 * that parses whole, 't' or 'f'), the JSON lists (selectors, DNS names,
 * federates_with) against their counts and lengths from lib/caps.h, and a
 * value that fails is LY_E_IO "datastore: corrupt row: <column>".
 *
 * Ownership: the PGresult is borrowed and left as it was; what a reader
 * returns (*out) is a heap value the caller frees with its type's free
 * (free, ly_entry_free, ly_ds_agent_free); on failure *out is NULL and
 * nothing is left allocated. A JSON parameter is a heap string the caller
 * frees with free().
 */
#include "server/datastore_pg_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "lib/caps.h"

static const char *
col_name(const PGresult *res, int col)
{
	const char *n = PQfname(res, col);
	return n != NULL ? n : "column";
}

ly_status
ly_ds_pg_col_text(const PGresult *res, int row, int col, size_t cap, bool nullable, char **out, struct ly_error *err)
{
	*out = NULL;
	if (PQgetisnull(res, row, col)) {
		if (nullable)
			return LY_OK;
		return ly_ds_corrupt(col_name(res, col), err);
	}
	const char *v = PQgetvalue(res, row, col);
	int n = PQgetlength(res, row, col);
	if (v == NULL || n < 0 || (size_t)n > cap || strlen(v) != (size_t)n)
		return ly_ds_corrupt(col_name(res, col), err);
	*out = strndup(v, (size_t)n);
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	return LY_OK;
}

ly_status
ly_ds_pg_col_int64(const PGresult *res, int row, int col, int64_t *out, struct ly_error *err)
{
	if (PQgetisnull(res, row, col))
		return ly_ds_corrupt(col_name(res, col), err);
	const char *v = PQgetvalue(res, row, col);
	char *end = NULL;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0')
		return ly_ds_corrupt(col_name(res, col), err);
	*out = (int64_t)x;
	return LY_OK;
}

static ly_status
col_int32(const PGresult *res, int row, int col, int32_t *out, struct ly_error *err)
{
	int64_t v = 0;
	LY_TRY(ly_ds_pg_col_int64(res, row, col, &v, err));
	if (v < INT32_MIN || v > INT32_MAX)
		return ly_ds_corrupt(col_name(res, col), err);
	*out = (int32_t)v;
	return LY_OK;
}

static ly_status
col_bool(const PGresult *res, int row, int col, bool *out, struct ly_error *err)
{
	const char *v = PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
	if (v == NULL || (strcmp(v, "t") != 0 && strcmp(v, "f") != 0))
		return ly_ds_corrupt(col_name(res, col), err);
	*out = v[0] == 't';
	return LY_OK;
}

/* Parses a JSON column: an array of [type, value] pairs (selectors). */
static ly_status
col_selectors(const PGresult *res, int row, int col, struct ly_selector **out, size_t *n_out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	json_error_t jerr;
	json_t *arr = NULL;

	*out = NULL;
	*n_out = 0;
	if (PQgetisnull(res, row, col))
		return ly_ds_corrupt(col_name(res, col), err);
	arr = json_loadb(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), 0, &jerr);
	if (arr == NULL || !json_is_array(arr) || json_array_size(arr) > LY_SELECTORS_MAX) {
		rc = ly_ds_corrupt("selectors", err);
		goto out;
	}
	if (json_array_size(arr) > 0) {
		sels = calloc(json_array_size(arr), sizeof(*sels));
		if (sels == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *pair = json_array_get(arr, i);
		const json_t *t = json_array_get(pair, 0);
		const json_t *v = json_array_get(pair, 1);
		if (!json_is_array(pair) || json_array_size(pair) != 2 || !json_is_string(t) || !json_is_string(v) ||
		    json_string_length(t) > LY_SELECTOR_MAX || json_string_length(v) > LY_SELECTOR_MAX ||
		    strlen(json_string_value(t)) != json_string_length(t) ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			rc = ly_ds_corrupt("selectors", err);
			goto out;
		}
		sels[n].type = strdup(json_string_value(t));
		sels[n].value = strdup(json_string_value(v));
		n++;
		if (sels[n - 1].type == NULL || sels[n - 1].value == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
	}
	*out = sels;
	*n_out = n;
	sels = NULL;
out:
	ly_selectors_free(sels, n);
	json_decref(arr);
	return rc;
}

/* Parses a JSON column: an array of at most max_n strings of at most max_len bytes, into *v and *n. */
static ly_status
col_names(const PGresult *res, int row, int col, size_t max_n, size_t max_len, const char *what, char ***v,
    size_t *n, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_error_t jerr;
	json_t *arr = NULL;

	if (PQgetisnull(res, row, col))
		return ly_ds_corrupt(col_name(res, col), err);
	arr = json_loadb(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), 0, &jerr);
	if (arr == NULL || !json_is_array(arr) || json_array_size(arr) > max_n) {
		rc = ly_ds_corrupt(what, err);
		goto out;
	}
	if (json_array_size(arr) > 0) {
		*v = calloc(max_n, sizeof(**v));
		if (*v == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *s = json_array_get(arr, i);
		if (!json_is_string(s) || json_string_length(s) > max_len ||
		    strlen(json_string_value(s)) != json_string_length(s)) {
			rc = ly_ds_corrupt(what, err);
			goto out;
		}
		(*v)[*n] = strdup(json_string_value(s));
		if ((*v)[*n] == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
		(*n)++;
	}
out:
	json_decref(arr);
	return rc;
}

/* Reads the entry at row `row` of `res`, whose ENTRY_COLS start at column `c`; its row id to *rowid. */
ly_status
ly_ds_pg_read_entry(const PGresult *res, int row, int c, int64_t *rowid, struct ly_entry **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_entry *e = NULL;
	int64_t id = 0;

	*out = NULL;
	if (PQnfields(res) < c + LY_DS_PG_ENTRY_NCOLS)
		return ly_ds_corrupt("entry columns", err);
	rc = ly_entry_new(&e, err);
	if (rc != LY_OK)
		goto out;
	if ((rc = ly_ds_pg_col_int64(res, row, c + 0, &id, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_text(res, row, c + 1, LY_ENTRY_ID_MAX, false, &e->entry_id, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_text(res, row, c + 2, LY_SPIFFE_ID_MAX, false, &e->spiffe_id, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_text(res, row, c + 3, LY_SPIFFE_ID_MAX, false, &e->parent_id, err)) != LY_OK ||
	    (rc = col_int32(res, row, c + 4, &e->x509_svid_ttl, err)) != LY_OK ||
	    (rc = col_int32(res, row, c + 5, &e->jwt_svid_ttl, err)) != LY_OK ||
	    (rc = col_bool(res, row, c + 6, &e->node, err)) != LY_OK ||
	    (rc = col_bool(res, row, c + 7, &e->admin, err)) != LY_OK ||
	    (rc = col_bool(res, row, c + 8, &e->downstream, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_text(res, row, c + 9, LY_ENTRY_HINT_MAX, true, &e->hint, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_int64(res, row, c + 10, &e->revision, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_int64(res, row, c + 11, &e->created_at, err)) != LY_OK ||
	    (rc = col_selectors(res, row, c + 12, &e->selectors, &e->n_selectors, err)) != LY_OK ||
	    (rc = col_names(res, row, c + 13, LY_DNS_NAMES_MAX, LY_DNS_NAME_MAX, "DNS names", &e->dns_names,
		 &e->n_dns_names, err)) != LY_OK ||
	    (rc = col_names(res, row, c + 14, LY_ENTRY_FEDERATES_WITH_MAX, LY_TRUST_DOMAIN_MAX, "federates_with",
		 &e->federates_with, &e->n_federates_with, err)) != LY_OK)
		goto out;
	if (rowid != NULL)
		*rowid = id;
	*out = e;
	e = NULL;
out:
	ly_entry_free(e);
	return rc;
}

/* ---- JSON parameters: selectors and DNS names written in one statement ---- */

/*
 * The `n` items of `list` as a JSON array, item i made by item(list, i)
 * (NULL: it cannot be JSON, LY_E_INVALID "datastore: <what> <i+1> cannot
 * be stored<hint>").
 */
static ly_status
list_json(const void *list, size_t n, json_t *(*item)(const void *list, size_t i), const char *what, const char *hint,
    char **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *arr = json_array();

	*out = NULL;
	if (arr == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	for (size_t i = 0; i < n; i++) {
		/* json_array_append_new takes the item, NULL or not, and frees it when it fails. */
		if (json_array_append_new(arr, item(list, i)) != 0) {
			rc = ly_error_set(err, LY_E_INVALID, "datastore: %s %zu cannot be stored%s", what, i + 1, hint);
			goto out;
		}
	}
	*out = json_dumps(arr, JSON_COMPACT);
	if (*out == NULL)
		rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
out:
	json_decref(arr);
	return rc;
}

/* A selector as [type, value]. */
static json_t *
selector_json(const void *list, size_t i)
{
	const struct ly_selector *s = &((const struct ly_selector *)list)[i];
	return json_pack("[ss]", s->type, s->value);
}

ly_status
ly_ds_pg_selectors_json(const struct ly_selector *sels, size_t n, char **out, struct ly_error *err)
{
	return list_json(sels, n, selector_json, "selector", " (not UTF-8?)", out, err);
}

/* A DNS name as a string. */
static json_t *
name_json(const void *list, size_t i)
{
	return json_string(((char *const *)list)[i]);
}

ly_status
ly_ds_pg_dns_json(char *const *names, size_t n, char **out, struct ly_error *err)
{
	return list_json(names, n, name_json, "DNS name", "", out, err);
}

/* ---- agents ---- */

ly_status
ly_ds_pg_read_agent(const PGresult *res, int row, struct ly_ds_agent **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_ds_agent *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	if (PQnfields(res) < 8) {
		rc = ly_ds_corrupt("agent columns", err);
		goto out;
	}
	if ((rc = ly_ds_pg_col_text(res, row, 0, LY_SPIFFE_ID_MAX, false, &a->spiffe_id, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_text(res, row, 1, LY_DS_AGENT_TYPE_MAX, false, &a->attestation_type, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_text(res, row, 2, LY_DS_AGENT_SERIAL_MAX, false, &a->serial_number, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_int64(res, row, 3, &a->svid_expires_at, err)) != LY_OK ||
	    (rc = col_bool(res, row, 4, &a->banned, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_int64(res, row, 5, &a->created_at, err)) != LY_OK ||
	    (rc = ly_ds_pg_col_int64(res, row, 6, &a->updated_at, err)) != LY_OK ||
	    (rc = col_selectors(res, row, 7, &a->selectors, &a->n_selectors, err)) != LY_OK)
		goto out;
	*out = a;
	a = NULL;
out:
	ly_ds_agent_free(a);
	return rc;
}
