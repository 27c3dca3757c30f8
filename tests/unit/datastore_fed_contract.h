/*
 * datastore_fed_contract.h: the federation part of the datastore contract
 * (server/datastore.h, SPEC §9), run on every back end like
 * datastore_contract.h (include it after that one; main() lists
 * DS_FED_CONTRACT_TESTS(setup, teardown)): federated bundles stored and
 * read back whole, our own trust domain refused, entries' federates_with
 * refused without a bundle and kept through update, the three delete
 * modes with the change log they leave, relationships with their checks,
 * and the change hook.
 */
#ifndef LANYARD_TESTS_DATASTORE_FED_CONTRACT_H
#define LANYARD_TESTS_DATASTORE_FED_CONTRACT_H

#include "lib/bundle.h"
#include "testutil_x509.h"

#define OWN_TD "example.org"

/* Writable copies of the names the relationship structs point to (-Wwrite-strings). */
static char fed_b[] = "b.test", fed_c[] = "c.test", fed_own[] = OWN_TD, fed_upper[] = "B.TEST";
static char fed_url[] = "https://b.test:8443/bundle", fed_url_web[] = "https://web.b.test/";
static char fed_url_http[] = "http://b.test/bundle", fed_url_user[] = "https://user@b.test/";
static char fed_url_nohost[] = "https:///x", fed_url_root[] = "https://b.test/";
static char fed_server_id[] = "spiffe://b.test/lanyard/server";

/* A bundle for `td` with one CA certificate, a sequence and a refresh hint. */
static struct ly_bundle *
fed_bundle_of(const char *td, uint64_t seq)
{
	char uri[300];
	struct ly_bundle *b = NULL;
	struct ly_buf der;
	EVP_PKEY *key = tu_fixed_ec_key((unsigned char)(td[0] + seq));

	(void)snprintf(uri, sizeof(uri), "spiffe://%s", td);
	struct tu_spec spec = tu_ca_spec(uri);
	X509 *ca = tu_make(&spec, key, NULL, NULL);
	ly_buf_init(&der, 0, false);
	tu_der(ca, &der);
	assert_int_equal(ly_bundle_new(td, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, der.data, der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, seq, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_refresh_hint(b, 300, NULL), LY_OK);
	ly_buf_free(&der);
	X509_free(ca);
	EVP_PKEY_free(key);
	return b;
}

static void
fed_init(struct fixture *f)
{
	assert_int_equal(ly_datastore_set_trust_domain(f->ds, OWN_TD, NULL), LY_OK);
}

static void
fed_put(struct fixture *f, const char *td, uint64_t seq)
{
	struct ly_error err;
	struct ly_bundle *b = fed_bundle_of(td, seq);
	ly_error_clear(&err);
	if (ly_datastore_fed_bundle_put(f->ds, b, NULL, &err) != LY_OK)
		fail_msg("put %s: %s", td, err.msg);
	ly_bundle_free(b);
}

static size_t
fed_count(struct fixture *f)
{
	size_t n = 99;
	assert_int_equal(ly_datastore_fed_bundle_count(f->ds, &n, NULL), LY_OK);
	return n;
}

/* Put, get (whole and equal), list in byte order, count, replace, delete, reopen. */
static void
test_fed_bundle_crud(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_bundle *b = fed_bundle_of("b.test", 3);
	struct ly_ds_fed_bundle *got = NULL;
	int64_t rev = 0;

	/* Without our own trust domain the store refuses. */
	assert_int_equal(ly_datastore_fed_bundle_put(f->ds, b, NULL, &err), LY_E_INTERNAL);
	fed_init(f);
	assert_int_equal(fed_count(f), 0);
	int64_t before = revision(f);
	int64_t fed_rev = -1;
	assert_int_equal(ly_datastore_fed_revision(f->ds, &fed_rev, &err), LY_OK);
	assert_int_equal(fed_rev, 0);
	assert_int_equal(ly_datastore_fed_bundle_put(f->ds, b, &rev, &err), LY_OK);
	assert_int_equal(rev, before + 1);
	assert_int_equal(revision(f), rev);
	assert_int_equal(ly_datastore_fed_revision(f->ds, &fed_rev, &err), LY_OK);
	assert_int_equal(fed_rev, rev);
	assert_int_equal(ly_datastore_fed_bundle_get(f->ds, "b.test", &got, &err), LY_OK);
	assert_true(ly_bundle_equal(got->bundle, b));
	assert_int_equal(ly_bundle_sequence(got->bundle), 3);
	assert_int_equal(ly_bundle_refresh_hint(got->bundle), 300);
	assert_int_equal(got->revision, rev);
	assert_true(got->updated_at > 0);
	ly_ds_fed_bundle_free(got);
	got = NULL;
	ly_bundle_free(b);

	/* Our own trust domain, a name that is not bare, a missing one. */
	b = fed_bundle_of(OWN_TD, 1);
	ly_error_clear(&err);
	assert_int_equal(ly_datastore_fed_bundle_put(f->ds, b, NULL, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "our own trust domain"));
	ly_bundle_free(b);
	assert_int_equal(ly_datastore_fed_bundle_get(f->ds, "spiffe://b.test", &got, &err), LY_E_INVALID);
	assert_int_equal(ly_datastore_fed_bundle_get(f->ds, "c.test", &got, &err), LY_E_NOT_FOUND);
	assert_null(got);
	assert_int_equal(revision(f), rev);

	/* A second one, listed in byte order; a replacement moves its revision. */
	fed_put(f, "a-z.test", 1);
	fed_put(f, "b.test", 4);
	struct ly_ds_fed_bundle_list l = LY_DS_FED_BUNDLE_LIST_INIT;
	assert_int_equal(ly_datastore_fed_bundle_list(f->ds, &l, &err), LY_OK);
	assert_int_equal(l.n, 2);
	assert_string_equal(ly_bundle_trust_domain(l.items[0]->bundle), "a-z.test");
	assert_string_equal(ly_bundle_trust_domain(l.items[1]->bundle), "b.test");
	assert_int_equal(ly_bundle_sequence(l.items[1]->bundle), 4);
	assert_int_equal(l.items[1]->revision, revision(f));
	ly_ds_fed_bundle_list_cleanup(&l);
	assert_int_equal(fed_count(f), 2);

	/* Durable. */
	reopen(f);
	fed_init(f);
	assert_int_equal(fed_count(f), 2);
	/* Another write leaves fed_revision; a delete moves it. */
	free(create(f, entry_of(TD "/other", AGENT1, "unix:uid:1000", NULL)));
	assert_int_equal(ly_datastore_fed_revision(f->ds, &fed_rev, &err), LY_OK);
	assert_true(fed_rev < revision(f));
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "a-z.test", LY_FED_DELETE_RESTRICT, &rev, &err), LY_OK);
	assert_int_equal(rev, revision(f));
	assert_int_equal(ly_datastore_fed_revision(f->ds, &fed_rev, &err), LY_OK);
	assert_int_equal(fed_rev, rev);
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "a-z.test", LY_FED_DELETE_RESTRICT, NULL, &err),
	    LY_E_NOT_FOUND);
	assert_int_equal(revision(f), rev);
	assert_int_equal(fed_count(f), 1);
}

static struct ly_entry *
fed_entry(const char *spiffe_id, const char *sel, const char *td1, const char *td2)
{
	struct ly_entry *e = entry_of(spiffe_id, AGENT1, sel, NULL);
	if (td1 != NULL)
		assert_int_equal(ly_entry_add_federates_with(e, td1, NULL), LY_OK);
	if (td2 != NULL)
		assert_int_equal(ly_entry_add_federates_with(e, td2, NULL), LY_OK);
	return e;
}

/* The change log's latest op for `entry_id` after `since` (0 when absent). */
static int
fed_op_since(struct fixture *f, int64_t since, const char *entry_id)
{
	struct ly_entry_changes ch = LY_ENTRY_CHANGES_INIT;
	int op = 0;
	assert_int_equal(ly_datastore_entry_changes_since(f->ds, since, &ch, NULL), LY_OK);
	for (size_t i = 0; i < ch.n; i++) {
		if (strcmp(ch.items[i].entry_id, entry_id) == 0)
			op = (int)ch.items[i].op;
	}
	ly_entry_changes_cleanup(&ch);
	return op;
}

/* federates_with needs a bundle; it is stored, sorted, replaced by update; the delete modes. */
static void
test_fed_entries(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_entry *e, *got = NULL;

	fed_init(f);
	e = fed_entry(TD "/web", "unix:uid:1000", "spiffe://c.test", "b.test");
	int64_t before = revision(f);
	ly_error_clear(&err);
	assert_int_equal(ly_datastore_entry_create(f->ds, e, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "no bundle for trust domain b.test"));
	assert_int_equal(count_entries(f), 0);
	assert_int_equal(revision(f), before);
	fed_put(f, "b.test", 1);
	fed_put(f, "c.test", 1);
	assert_int_equal(ly_datastore_entry_create(f->ds, e, &err), LY_OK);
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &got, &err), LY_OK);
	assert_int_equal(got->n_federates_with, 2);
	assert_string_equal(got->federates_with[0], "b.test");
	assert_string_equal(got->federates_with[1], "c.test");
	ly_entry_free(got);
	got = NULL;
	/* The list and the change log carry it too. */
	struct ly_entry_list l = LY_ENTRY_LIST_INIT;
	assert_int_equal(ly_datastore_entry_list(f->ds, NULL, &l, &err), LY_OK);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.items[0]->n_federates_with, 2);
	ly_entry_list_cleanup(&l);

	/* Update: a trust domain without a bundle is refused, nothing changes. */
	assert_int_equal(ly_entry_add_federates_with(e, "d.test", NULL), LY_OK);
	int64_t r0 = revision(f);
	ly_error_clear(&err);
	assert_int_equal(ly_datastore_entry_update(f->ds, e, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "no bundle for trust domain d.test"));
	assert_int_equal(revision(f), r0);
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &got, &err), LY_OK);
	assert_int_equal(got->n_federates_with, 2);
	ly_entry_free(got);
	got = NULL;
	/* An update to only c.test. */
	free(e->federates_with[0]);
	free(e->federates_with[1]);
	free(e->federates_with[2]);
	e->n_federates_with = 0;
	assert_int_equal(ly_entry_add_federates_with(e, "c.test", NULL), LY_OK);
	assert_int_equal(ly_datastore_entry_update(f->ds, e, &err), LY_OK);
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &got, &err), LY_OK);
	assert_int_equal(got->n_federates_with, 1);
	assert_string_equal(got->federates_with[0], "c.test");
	ly_entry_free(got);
	got = NULL;

	/* restrict: refused while used; b.test (now unused) goes. */
	r0 = revision(f);
	ly_error_clear(&err);
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "c.test", LY_FED_DELETE_RESTRICT, NULL, &err),
	    LY_E_INVALID);
	assert_non_null(strstr(err.msg, "used by 1 entry"));
	assert_int_equal(revision(f), r0);
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "b.test", LY_FED_DELETE_RESTRICT, NULL, &err), LY_OK);

	/* dissociate: the entry stays without c.test, logged as updated. */
	r0 = revision(f);
	int64_t rev = 0;
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "c.test", LY_FED_DELETE_DISSOCIATE, &rev, &err), LY_OK);
	assert_int_equal(rev, revision(f));
	assert_int_equal(rev, r0 + 2); /* one for the entry, one for the bundle */
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &got, &err), LY_OK);
	assert_int_equal(got->n_federates_with, 0);
	assert_true(got->revision > r0);
	ly_entry_free(got);
	got = NULL;
	assert_int_equal(fed_op_since(f, r0, e->entry_id), LY_ENTRY_UPDATED);
	assert_int_equal(fed_count(f), 0);

	/* delete: the entries go with the bundle, logged as deleted. */
	fed_put(f, "c.test", 2);
	struct ly_entry *keep = fed_entry(TD "/db", "unix:uid:1001", NULL, NULL);
	char *keep_id = create(f, keep);
	assert_int_equal(ly_datastore_entry_update(f->ds, e, &err), LY_OK);
	r0 = revision(f);
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "c.test", LY_FED_DELETE_ENTRIES, NULL, &err), LY_OK);
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &got, &err), LY_E_NOT_FOUND);
	assert_int_equal(fed_op_since(f, r0, e->entry_id), LY_ENTRY_DELETED);
	assert_int_equal(count_entries(f), 1);
	free(keep_id);

	/* Our own trust domain in federates_with: refused by validation. */
	struct ly_entry *own = fed_entry(TD "/own", "unix:uid:1002", OWN_TD, NULL);
	assert_int_equal(ly_datastore_entry_create(f->ds, own, &err), LY_E_INVALID);
	ly_entry_free(own);
	ly_entry_free(e);
}

/* Relationships: checks, create/get/list/update/delete, the bootstrap bundle in the same write. */
static void
test_fed_relationships(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_ds_fed_rel rel = {
		.trust_domain = fed_b,
		.bundle_endpoint_url = fed_url,
		.profile = LY_FED_PROFILE_HTTPS_SPIFFE,
		.endpoint_spiffe_id = fed_server_id,
	};
	struct ly_ds_fed_rel *got = NULL;
	struct ly_bundle *boot = fed_bundle_of("b.test", 7);
	struct ly_bundle *other = fed_bundle_of("c.test", 1);

	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &rel, NULL, NULL, &err), LY_E_INTERNAL);
	fed_init(f);
	/* A bundle for another trust domain is refused, nothing stored. */
	ly_error_clear(&err);
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &rel, other, NULL, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "c.test"));
	assert_int_equal(ly_datastore_fed_rel_get(f->ds, "b.test", &got, &err), LY_E_NOT_FOUND);
	int64_t rev = 0;
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &rel, boot, &rev, &err), LY_OK);
	assert_int_equal(rev, revision(f));
	assert_int_equal(fed_count(f), 1);
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &rel, NULL, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_datastore_fed_rel_get(f->ds, "b.test", &got, &err), LY_OK);
	assert_string_equal(got->trust_domain, "b.test");
	assert_string_equal(got->bundle_endpoint_url, "https://b.test:8443/bundle");
	assert_int_equal(got->profile, LY_FED_PROFILE_HTTPS_SPIFFE);
	assert_string_equal(got->endpoint_spiffe_id, "spiffe://b.test/lanyard/server");
	assert_true(got->created_at > 0);
	ly_ds_fed_rel_free(got);
	got = NULL;

	/* Refused inputs. */
	struct ly_ds_fed_rel bad = rel;
	bad.bundle_endpoint_url = fed_url_http;
	assert_int_equal(ly_datastore_fed_rel_update(f->ds, &bad, NULL, NULL, &err), LY_E_INVALID);
	bad.bundle_endpoint_url = fed_url_user;
	assert_int_equal(ly_datastore_fed_rel_update(f->ds, &bad, NULL, NULL, &err), LY_E_INVALID);
	bad.bundle_endpoint_url = fed_url_nohost;
	assert_int_equal(ly_datastore_fed_rel_update(f->ds, &bad, NULL, NULL, &err), LY_E_INVALID);
	bad = rel;
	bad.endpoint_spiffe_id = NULL;
	assert_int_equal(ly_datastore_fed_rel_update(f->ds, &bad, NULL, NULL, &err), LY_E_INVALID);
	bad = rel;
	bad.trust_domain = fed_own;
	ly_error_clear(&err);
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &bad, NULL, NULL, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "our own trust domain"));
	bad = rel;
	bad.trust_domain = fed_upper;
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &bad, NULL, NULL, &err), LY_E_INVALID);
	bad = rel;
	bad.profile = (enum ly_fed_profile)9;
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &bad, NULL, NULL, &err), LY_E_INVALID);

	/* Update to https_web; a missing one is not found. */
	struct ly_ds_fed_rel web = { .trust_domain = fed_b, .bundle_endpoint_url = fed_url_web,
		.profile = LY_FED_PROFILE_HTTPS_WEB };
	assert_int_equal(ly_datastore_fed_rel_update(f->ds, &web, NULL, NULL, &err), LY_OK);
	web.trust_domain = fed_c;
	assert_int_equal(ly_datastore_fed_rel_update(f->ds, &web, NULL, NULL, &err), LY_E_NOT_FOUND);
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &web, other, NULL, &err), LY_OK);
	struct ly_ds_fed_rel_list l = LY_DS_FED_REL_LIST_INIT;
	assert_int_equal(ly_datastore_fed_rel_list(f->ds, &l, &err), LY_OK);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.items[0]->trust_domain, "b.test");
	assert_int_equal(l.items[0]->profile, LY_FED_PROFILE_HTTPS_WEB);
	assert_null(l.items[0]->endpoint_spiffe_id);
	assert_string_equal(l.items[0]->bundle_endpoint_url, "https://web.b.test/");
	assert_string_equal(l.items[1]->trust_domain, "c.test");
	ly_ds_fed_rel_list_cleanup(&l);

	/* Delete: the bundle stays. */
	assert_int_equal(ly_datastore_fed_rel_delete(f->ds, "b.test", NULL, &err), LY_OK);
	assert_int_equal(ly_datastore_fed_rel_delete(f->ds, "b.test", NULL, &err), LY_E_NOT_FOUND);
	assert_int_equal(fed_count(f), 2);
	ly_bundle_free(boot);
	ly_bundle_free(other);
}

/*
 * A store of the version before federation (SQLite 1, PostgreSQL 2) is
 * brought up to date at open: its data kept, the federation tables made,
 * the version recorded.
 */
static void
test_fed_migration_from_v1(void **state)
{
	struct fixture *f = *state;

	free(create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL)));
	ly_datastore_close(f->ds);
	f->ds = NULL;
	/* What version 1 was: the same store without schema_v2's tables. */
	f->be->exec(f, "DROP TABLE entry_federates_with");
	f->be->exec(f, "DROP TABLE federated_bundles");
	f->be->exec(f, "DROP TABLE federation_relationships");
	f->be->exec(f, "DELETE FROM meta WHERE name = 'fed_revision'");
	if (strcmp(f->be->name, "postgres") == 0)
		f->be->exec(f, "DROP FUNCTION lanyard_notify_federated()");
	/* And without the later versions' tables (the shared audit trail). */
	f->be->exec(f, "DROP TABLE audit_log");
	char sql[96];
	(void)snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", f->be->schema - 2);
	f->be->exec(f, sql);
	f->be->open(f);
	assert_int_equal(rows_in(f, "SELECT version FROM schema_version"), f->be->schema);
	assert_int_equal(count_entries(f), 1);
	fed_init(f);
	fed_put(f, "b.test", 1);
	assert_int_equal(fed_count(f), 1);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM federation_relationships"), 0);
}

struct fed_heard {
	int kind[8];
	int64_t revision[8];
	char td[8][64];
	size_t n;
};

static void
fed_hear(void *arg, const struct ly_datastore_change *c)
{
	struct fed_heard *h = arg;
	assert_true(h->n < 8);
	h->kind[h->n] = c->kind;
	h->revision[h->n] = c->revision;
	(void)snprintf(h->td[h->n], sizeof(h->td[0]), "%s", c->trust_domain != NULL ? c->trust_domain : "");
	h->n++;
}

/* Every committed federation write is heard with its trust domain; refusals are not. */
static void
test_fed_change_hook(void **state)
{
	struct fixture *f = *state;
	struct fed_heard h;
	struct ly_error err;

	memset(&h, 0, sizeof(h));
	fed_init(f);
	assert_int_equal(ly_datastore_on_change(f->ds, fed_hear, &h, &err), LY_OK);
	fed_put(f, "b.test", 1);
	assert_int_equal(h.n, 1);
	assert_int_equal(h.kind[0], LY_DATASTORE_FED_BUNDLE_CHANGED);
	assert_string_equal(h.td[0], "b.test");
	assert_int_equal(h.revision[0], revision(f));
	struct ly_bundle *own = fed_bundle_of(OWN_TD, 1);
	assert_int_equal(ly_datastore_fed_bundle_put(f->ds, own, NULL, &err), LY_E_INVALID);
	ly_bundle_free(own);
	assert_int_equal(h.n, 1);
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "b.test", LY_FED_DELETE_RESTRICT, NULL, &err), LY_OK);
	assert_int_equal(h.kind[1], LY_DATASTORE_FED_BUNDLE_DELETED);
	assert_string_equal(h.td[1], "b.test");
	struct ly_ds_fed_rel rel = { .trust_domain = fed_b, .bundle_endpoint_url = fed_url_root,
		.profile = LY_FED_PROFILE_HTTPS_WEB };
	assert_int_equal(ly_datastore_fed_rel_create(f->ds, &rel, NULL, NULL, &err), LY_OK);
	assert_int_equal(h.kind[2], LY_DATASTORE_FED_REL_CHANGED);
	assert_int_equal(h.n, 3);
	ly_datastore_off_change(f->ds, fed_hear, &h);
}

#define DS_FED_CONTRACT_TESTS(setup, teardown)                                      \
	cmocka_unit_test_setup_teardown(test_fed_bundle_crud, setup, teardown),     \
	    cmocka_unit_test_setup_teardown(test_fed_entries, setup, teardown),     \
	    cmocka_unit_test_setup_teardown(test_fed_relationships, setup, teardown), \
	    cmocka_unit_test_setup_teardown(test_fed_change_hook, setup, teardown),  \
	    cmocka_unit_test_setup_teardown(test_fed_migration_from_v1, setup, teardown)

#endif /* LANYARD_TESTS_DATASTORE_FED_CONTRACT_H */
