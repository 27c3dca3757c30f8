/*
 * datastore_engine_fed.c: the federation operations of datastore.h
 * (SPEC §9), written once over a back end's dialect (datastore_engine.h).
 * Each is one transaction: begin, statements, commit; on any failure the
 * one cleanup path rolls back.
 *
 * A federated bundle is stored as its SPIFFE bundle JSON (lib/bundle.h,
 * compact, with spiffe_sequence and spiffe_refresh_hint) and read back
 * with the same strict parser, so a row that does not parse is reported
 * as corrupt rather than half-trusted.
 */
#include "server/datastore_engine.h"

#include <stdlib.h>
#include <string.h>

#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/spiffeid.h"
#include "server/datastore_internal.h"

/* A trust domain name given to an operation: a valid bare name. */
static ly_status
check_td(const char *td, struct ly_error *err)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];

	if (td == NULL || td[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "trust domain is missing");
	LY_TRY(ly_trust_domain_parse(td, false, name, err));
	if (strcmp(name, td) != 0)
		return ly_error_set(err, LY_E_INVALID, "trust domain %s is not a bare name", td);
	return LY_OK;
}

/* Our own trust domain must be known and must differ from `td`. */
static ly_status
check_not_ours(const struct ly_datastore *ds, const char *td, const char *what, struct ly_error *err)
{
	if (ds->trust_domain[0] == '\0')
		return ly_error_set(err, LY_E_INTERNAL, "datastore: trust domain not set");
	if (strcmp(ds->trust_domain, td) == 0)
		return ly_error_set(err, LY_E_INVALID, "%s for our own trust domain %s refused", what, td);
	return LY_OK;
}

/* ---- federated bundles ---- */

/* Records `rev` as the last federated bundle change (meta fed_revision), in the open write transaction. */
static ly_status
fed_revision_set(struct ly_datastore *ds, int64_t rev, struct ly_error *err)
{
	const struct ly_ds_param p[] = { LY_DS_INT(rev) };
	return ds->dialect->exec(ds, LY_DS_FED_REVISION_SET, p, LY_DS_NELEM(p), "write meta", NULL, NULL, err);
}

ly_status
ly_ds_engine_fed_revision(struct ly_datastore *ds, int64_t *out, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federated revision: no output");
	LY_TRY(ds->dialect->begin(ds, LY_DS_TX_NONE, NULL, err));
	return ly_ds_engine_read_int64(ds, LY_DS_FED_REVISION_GET, NULL, 0, "read meta", "fed_revision", out, err);
}

/* Writes `bundle` as the federated bundle of its trust domain, in the open write transaction at `rev`. */
static ly_status
bundle_write(struct ly_datastore *ds, const struct ly_bundle *bundle, int64_t rev, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	char *json = NULL;
	const char *td = ly_bundle_trust_domain(bundle);

	rc = ly_bundle_write_jwks(bundle, 0, &json, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "bundle for %s", td);
		goto out;
	}
	if (strlen(json) > LY_JWKS_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "bundle for %s is larger than %d bytes as JSON", td, LY_JWKS_MAX);
		goto out;
	}
	const struct ly_ds_param p[] = { LY_DS_TEXT(td), LY_DS_TEXT(json), LY_DS_INT((int64_t)ly_bundle_sequence(bundle)),
		LY_DS_INT(rev), LY_DS_INT(ly_ds_now()) };
	rc = d->exec(ds, LY_DS_FEDB_PUT, p, LY_DS_NELEM(p), "store federated bundle", NULL, NULL, err);
	if (rc == LY_OK)
		rc = fed_revision_set(ds, rev, err);
out:
	free(json);
	return rc;
}

/* Checks a bundle given to put or to a relationship (for `td` when non-NULL). */
static ly_status
check_bundle(const struct ly_datastore *ds, const struct ly_bundle *bundle, const char *td, struct ly_error *err)
{
	if (bundle == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federated bundle: no bundle");
	const char *btd = ly_bundle_trust_domain(bundle);
	LY_TRY(check_td(btd, err));
	if (td != NULL && strcmp(td, btd) != 0)
		return ly_error_set(err, LY_E_INVALID, "bundle is for trust domain %s, not %s", btd, td);
	return check_not_ours(ds, btd, "bundle", err);
}

ly_status
ly_ds_engine_fed_bundle_put(struct ly_datastore *ds, const struct ly_bundle *bundle, int64_t *revision,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0;

	LY_TRY(check_bundle(ds, bundle, NULL, err));
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = bundle_write(ds, bundle, rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
	if (rc == LY_OK && revision != NULL)
		*revision = rev;
out:
	d->rollback(ds);
	return rc;
}

/*
 * The federated bundle on the current row (trust_domain, bundle, revision,
 * updated_at) to *(struct ly_ds_fed_bundle **)arg.
 */
static ly_status
read_bundle(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	struct ly_ds_fed_bundle **out = arg;
	ly_status rc;
	char *td = NULL, *json = NULL;
	struct ly_ds_fed_bundle *b = calloc(1, sizeof(*b));

	*out = NULL;
	if (b == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	if ((rc = d->col_text(rows, 0, LY_TRUST_DOMAIN_MAX, false, &td, err)) != LY_OK ||
	    (rc = d->col_text(rows, 1, LY_JWKS_MAX, false, &json, err)) != LY_OK ||
	    (rc = d->col_int64(rows, 2, &b->revision, err)) != LY_OK ||
	    (rc = d->col_int64(rows, 3, &b->updated_at, err)) != LY_OK)
		goto out;
	if (ly_bundle_parse_jwks(td, json, strlen(json), &b->bundle, NULL) != LY_OK) {
		rc = ly_ds_corrupt("federated bundle", err);
		goto out;
	}
	*out = b;
	b = NULL;
out:
	free(td);
	free(json);
	ly_ds_fed_bundle_free(b);
	return rc;
}

/* One bundle of fed_bundle_list appended to the list, up to LY_BUNDLE_SET_MAX. */
static ly_status
bundles_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct ly_ds_fill *fill = arg;
	struct ly_ds_fed_bundle *b = NULL;
	ly_status rc;

	if (*fill->n >= LY_BUNDLE_SET_MAX)
		return ly_error_set(err, LY_E_LIMIT, "datastore holds more than %d federated bundles",
		    LY_BUNDLE_SET_MAX);
	rc = read_bundle(ds, rows, &b, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_push(arg, b, "federated bundle list", err);
	if (rc != LY_OK)
		ly_ds_fed_bundle_free(b);
	return rc;
}

ly_status
ly_ds_engine_fed_bundle_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_bundle **out,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_fed_bundle *b = NULL;
	const struct ly_ds_param p[] = { LY_DS_TEXT(td) };
	bool found = false;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federated bundle get: no output");
	*out = NULL;
	LY_TRY(check_td(td, err));
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_row(ds, LY_DS_FEDB_GET, p, LY_DS_NELEM(p), "get federated bundle", read_bundle, &b,
		    &found, err);
	if (rc == LY_OK && !found)
		rc = ly_error_set(err, LY_E_NOT_FOUND, "no bundle for trust domain %s", td);
	if (rc == LY_OK)
		rc = d->commit(ds, err);
	if (rc == LY_OK) {
		*out = b;
		b = NULL;
	}
	d->rollback(ds);
	ly_ds_fed_bundle_free(b);
	return rc;
}

ly_status
ly_ds_engine_fed_bundle_list(struct ly_datastore *ds, struct ly_ds_fed_bundle_list *out, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	struct ly_ds_fed_bundle_list got = LY_DS_FED_BUNDLE_LIST_INIT;
	struct ly_ds_fill fill = LY_DS_FILL(&got);

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federated bundle list: no output");
	rc = d->begin(ds, LY_DS_TX_READ, NULL, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_rows(ds, LY_DS_FEDB_LIST, NULL, 0, "list federated bundles", bundles_row, &fill, NULL,
		    err);
	if (rc == LY_OK)
		rc = d->commit(ds, err);
	if (rc != LY_OK)
		goto out;
	if (out->n == 0 && out->items == NULL) {
		*out = got;
		got = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	} else {
		struct ly_ds_fed_bundle **grown = realloc(out->items, (out->n + got.n + 1) * sizeof(*grown));
		if (grown == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "federated bundle list: out of memory");
			goto out;
		}
		memcpy(grown + out->n, got.items, got.n * sizeof(*grown));
		out->items = grown;
		out->n += got.n;
		free(got.items);
		got = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	}
out:
	d->rollback(ds);
	ly_ds_fed_bundle_list_cleanup(&got);
	return rc;
}

ly_status
ly_ds_engine_fed_bundle_count(struct ly_datastore *ds, size_t *out, struct ly_error *err)
{
	int64_t n = 0;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federated bundle count: no output");
	LY_TRY(ds->dialect->begin(ds, LY_DS_TX_NONE, NULL, err));
	LY_TRY(ly_ds_engine_read_int64(ds, LY_DS_FEDB_COUNT, NULL, 0, "count federated bundles",
	    "federated bundle count", &n, err));
	if (n < 0)
		return ly_ds_corrupt("federated bundle count", err);
	*out = (size_t)n;
	return LY_OK;
}

/* An entry that federates with a trust domain being deleted. */
struct fed_user {
	int64_t rowid;
	char *entry_id;
};

static void
fed_users_free(struct fed_user *u, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(u[i].entry_id);
	free(u);
}

struct fed_users_got {
	struct fed_user *u;
	size_t n, cap;
};

/* One entry of fed_users appended to the array. */
static ly_status
fed_user_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct fed_users_got *g = arg;

	LY_TRY(ly_ds_engine_grow(&g->u, g->n, &g->cap, sizeof(*g->u), 8, "datastore", err));
	struct fed_user *u = &g->u[g->n++];
	u->entry_id = NULL;
	LY_TRY(ds->dialect->col_int64(rows, 0, &u->rowid, err));
	return ds->dialect->col_text(rows, 1, LY_ENTRY_ID_MAX, false, &u->entry_id, err);
}

/* The entries federating with `td`, in the open transaction. */
static ly_status
fed_users(struct ly_datastore *ds, const char *td, struct fed_user **out, size_t *n_out, struct ly_error *err)
{
	struct fed_users_got g = { .u = NULL, .n = 0, .cap = 0 };
	const struct ly_ds_param p[] = { LY_DS_TEXT(td) };
	ly_status rc;

	*out = NULL;
	*n_out = 0;
	rc = ly_ds_engine_rows(ds, LY_DS_FEDB_ENTRIES, p, LY_DS_NELEM(p), "find federating entries", fed_user_row, &g,
	    NULL, err);
	if (rc != LY_OK) {
		fed_users_free(g.u, g.n);
		return rc;
	}
	*out = g.u;
	*n_out = g.n;
	return LY_OK;
}

ly_status
ly_ds_engine_fed_bundle_delete(struct ly_datastore *ds, const char *td, enum ly_fed_delete_mode mode,
    int64_t *revision, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, n = 0;
	struct fed_user *users = NULL;
	size_t n_users = 0;
	const struct ly_ds_param p[] = { LY_DS_TEXT(td) };

	LY_TRY(check_td(td, err));
	if (mode != LY_FED_DELETE_RESTRICT && mode != LY_FED_DELETE_DISSOCIATE && mode != LY_FED_DELETE_ENTRIES)
		return ly_error_set(err, LY_E_INVALID, "bundle delete mode must be restrict, dissociate or delete");
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = fed_users(ds, td, &users, &n_users, err);
	if (rc != LY_OK)
		goto out;
	if (n_users > 0 && mode == LY_FED_DELETE_RESTRICT) {
		rc = ly_error_set(err, LY_E_INVALID,
		    "bundle for %s is used by %zu entr%s (entry %s first): use -mode dissociate or delete", td, n_users,
		    n_users == 1 ? "y" : "ies", users[0].entry_id);
		goto out;
	}
	if (n_users > 0 && mode == LY_FED_DELETE_DISSOCIATE) {
		rc = d->exec(ds, LY_DS_FEDW_DELETE_TD, p, LY_DS_NELEM(p), "dissociate entries", NULL, NULL, err);
		if (rc != LY_OK)
			goto out;
	}
	/*
	 * The change log holds one change per revision: each entry touched
	 * takes a revision of its own (the rule "one write, one revision"
	 * bends here, to N + 1).
	 */
	for (size_t i = 0; i < n_users; i++) {
		rc = ly_ds_engine_read_int64(ds, LY_DS_REV_BUMP, NULL, 0, "bump revision", "revision", &rev, err);
		if (rc != LY_OK)
			goto out;
		enum ly_entry_op op;
		if (mode == LY_FED_DELETE_DISSOCIATE) {
			const struct ly_ds_param up[] = { LY_DS_INT(users[i].rowid), LY_DS_INT(rev) };
			rc = d->exec(ds, LY_DS_ENTRY_SET_REVISION, up, LY_DS_NELEM(up), "update entry", NULL, NULL, err);
			op = LY_ENTRY_UPDATED;
		} else {
			const struct ly_ds_param del[] = { LY_DS_INT(users[i].rowid) };
			rc = d->exec(ds, LY_DS_ENTRY_DELETE, del, LY_DS_NELEM(del), "delete entry", NULL, NULL, err);
			op = LY_ENTRY_DELETED;
		}
		if (rc != LY_OK)
			goto out;
		const struct ly_ds_param change[] = { LY_DS_INT(rev), LY_DS_TEXT(users[i].entry_id), LY_DS_INT(op) };
		rc = d->exec(ds, LY_DS_CHANGE_INSERT, change, LY_DS_NELEM(change), "record change", NULL, NULL, err);
		if (rc != LY_OK)
			goto out;
	}
	rc = d->exec(ds, LY_DS_FEDB_DELETE, p, LY_DS_NELEM(p), "delete federated bundle", NULL, &n, err);
	if (rc != LY_OK)
		goto out;
	if (n == 0) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "no bundle for trust domain %s", td);
		goto out;
	}
	rc = fed_revision_set(ds, rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->commit(ds, err);
	if (rc == LY_OK && revision != NULL)
		*revision = rev;
out:
	d->rollback(ds);
	fed_users_free(users, n_users);
	return rc;
}

/* ---- entries' federates_with ---- */

ly_status
ly_ds_engine_entry_federates_write(struct ly_datastore *ds, int64_t rowid, const struct ly_entry *e,
    struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	int64_t n = 0;
	const struct ly_ds_param del[] = { LY_DS_INT(rowid) };

	LY_TRY(d->exec(ds, LY_DS_FEDW_DELETE_ENTRY, del, LY_DS_NELEM(del), "delete federates_with", NULL, NULL, err));
	for (size_t i = 0; i < e->n_federates_with; i++) {
		const struct ly_ds_param p[] = { LY_DS_INT(rowid), LY_DS_TEXT(e->federates_with[i]) };
		LY_TRY(d->exec(ds, LY_DS_FEDW_INSERT, p, LY_DS_NELEM(p), "insert federates_with", NULL, &n, err));
		if (n == 0)
			return ly_error_set(err, LY_E_INVALID, "no bundle for trust domain %s: set one first (bundle set)",
			    e->federates_with[i]);
	}
	return LY_OK;
}

/* ---- relationships ---- */

/* create or update: one statement, and the bootstrap bundle in the same transaction. */
static ly_status
rel_write(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle, bool create,
    int64_t *revision, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, n = 0, now = ly_ds_now();

	if (rel == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federation relationship: no input");
	if (ds->trust_domain[0] == '\0')
		return ly_error_set(err, LY_E_INTERNAL, "datastore: trust domain not set");
	LY_TRY(ly_ds_fed_rel_check(rel, ds->trust_domain, err));
	if (bundle != NULL)
		LY_TRY(check_bundle(ds, bundle, rel->trust_domain, err));
	const char *sid = rel->profile == LY_FED_PROFILE_HTTPS_SPIFFE ? rel->endpoint_spiffe_id : NULL;
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	if (create) {
		const struct ly_ds_param g[] = { LY_DS_TEXT(rel->trust_domain) };
		bool found = false;
		rc = ly_ds_engine_row(ds, LY_DS_FEDR_GET, g, LY_DS_NELEM(g), "get federation relationship", NULL, NULL,
		    &found, err);
		if (rc != LY_OK)
			goto out;
		if (found) {
			rc = ly_error_set(err, LY_E_INVALID, "federation relationship with %s already exists",
			    rel->trust_domain);
			goto out;
		}
		const struct ly_ds_param p[] = { LY_DS_TEXT(rel->trust_domain), LY_DS_TEXT(rel->bundle_endpoint_url),
			LY_DS_INT(rel->profile), LY_DS_TEXT(sid), LY_DS_INT(now), LY_DS_INT(now) };
		rc = d->exec(ds, LY_DS_FEDR_INSERT, p, LY_DS_NELEM(p), "create federation relationship", NULL, NULL, err);
	} else {
		const struct ly_ds_param p[] = { LY_DS_TEXT(rel->trust_domain), LY_DS_TEXT(rel->bundle_endpoint_url),
			LY_DS_INT(rel->profile), LY_DS_TEXT(sid), LY_DS_INT(now) };
		rc = d->exec(ds, LY_DS_FEDR_UPDATE, p, LY_DS_NELEM(p), "update federation relationship", NULL, &n, err);
		if (rc == LY_OK && n == 0)
			rc = ly_error_set(err, LY_E_NOT_FOUND, "no federation relationship with %s", rel->trust_domain);
	}
	if (rc != LY_OK)
		goto out;
	if (bundle != NULL) {
		rc = bundle_write(ds, bundle, rev, err);
		if (rc != LY_OK)
			goto out;
	}
	rc = d->commit(ds, err);
	if (rc == LY_OK && revision != NULL)
		*revision = rev;
out:
	d->rollback(ds);
	return rc;
}

ly_status
ly_ds_engine_fed_rel_create(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err)
{
	return rel_write(ds, rel, bundle, true, revision, err);
}

ly_status
ly_ds_engine_fed_rel_update(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err)
{
	return rel_write(ds, rel, bundle, false, revision, err);
}

/*
 * The relationship on the current row (trust_domain, url, profile,
 * endpoint_spiffe_id, created_at, updated_at) to *(struct ly_ds_fed_rel **)arg.
 */
static ly_status
read_rel(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	struct ly_ds_fed_rel **out = arg;
	ly_status rc;
	int64_t profile = 0;
	struct ly_ds_fed_rel *r = calloc(1, sizeof(*r));

	*out = NULL;
	if (r == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	if ((rc = d->col_text(rows, 0, LY_TRUST_DOMAIN_MAX, false, &r->trust_domain, err)) != LY_OK ||
	    (rc = d->col_text(rows, 1, LY_FED_URL_MAX, false, &r->bundle_endpoint_url, err)) != LY_OK ||
	    (rc = d->col_int64(rows, 2, &profile, err)) != LY_OK ||
	    (rc = d->col_text(rows, 3, LY_SPIFFE_ID_MAX, true, &r->endpoint_spiffe_id, err)) != LY_OK ||
	    (rc = d->col_int64(rows, 4, &r->created_at, err)) != LY_OK ||
	    (rc = d->col_int64(rows, 5, &r->updated_at, err)) != LY_OK)
		goto out;
	if (profile != LY_FED_PROFILE_HTTPS_SPIFFE && profile != LY_FED_PROFILE_HTTPS_WEB) {
		rc = ly_ds_corrupt("federation relationship profile", err);
		goto out;
	}
	r->profile = (enum ly_fed_profile)profile;
	*out = r;
	r = NULL;
out:
	ly_ds_fed_rel_free(r);
	return rc;
}

/* One relationship of fed_rel_list appended to the list. */
static ly_status
rels_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
{
	struct ly_ds_fed_rel *r = NULL;
	ly_status rc = read_rel(ds, rows, &r, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_push(arg, r, "federation relationship list", err);
	if (rc != LY_OK)
		ly_ds_fed_rel_free(r);
	return rc;
}

ly_status
ly_ds_engine_fed_rel_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_rel **out, struct ly_error *err)
{
	const struct ly_ds_param p[] = { LY_DS_TEXT(td) };
	bool found = false;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federation relationship get: no output");
	*out = NULL;
	LY_TRY(check_td(td, err));
	LY_TRY(ds->dialect->begin(ds, LY_DS_TX_NONE, NULL, err));
	LY_TRY(ly_ds_engine_row(ds, LY_DS_FEDR_GET, p, LY_DS_NELEM(p), "get federation relationship", read_rel, out,
	    &found, err));
	if (!found)
		return ly_error_set(err, LY_E_NOT_FOUND, "no federation relationship with %s", td);
	return LY_OK;
}

ly_status
ly_ds_engine_fed_rel_list(struct ly_datastore *ds, struct ly_ds_fed_rel_list *out, struct ly_error *err)
{
	ly_status rc;
	struct ly_ds_fed_rel_list got = LY_DS_FED_REL_LIST_INIT;
	struct ly_ds_fill fill = LY_DS_FILL(&got);

	if (out == NULL || out->n != 0 || out->items != NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federation relationship list: output must be empty");
	rc = ds->dialect->begin(ds, LY_DS_TX_NONE, NULL, err);
	if (rc == LY_OK)
		rc = ly_ds_engine_rows(ds, LY_DS_FEDR_LIST, NULL, 0, "list federation relationships", rels_row, &fill,
		    NULL, err);
	if (rc == LY_OK) {
		*out = got;
		got = (struct ly_ds_fed_rel_list)LY_DS_FED_REL_LIST_INIT;
	}
	ly_ds_fed_rel_list_cleanup(&got);
	return rc;
}

ly_status
ly_ds_engine_fed_rel_delete(struct ly_datastore *ds, const char *td, int64_t *revision, struct ly_error *err)
{
	const struct ly_ds_dialect *d = ds->dialect;
	ly_status rc;
	int64_t rev = 0, n = 0;
	const struct ly_ds_param p[] = { LY_DS_TEXT(td) };

	LY_TRY(check_td(td, err));
	rc = d->begin(ds, LY_DS_TX_WRITE, &rev, err);
	if (rc != LY_OK)
		goto out;
	rc = d->exec(ds, LY_DS_FEDR_DELETE, p, LY_DS_NELEM(p), "delete federation relationship", NULL, &n, err);
	if (rc != LY_OK)
		goto out;
	if (n == 0) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "no federation relationship with %s", td);
		goto out;
	}
	rc = d->commit(ds, err);
	if (rc == LY_OK && revision != NULL)
		*revision = rev;
out:
	d->rollback(ds);
	return rc;
}
