/*
 * datastore_contract.h: the datastore contract (server/datastore.h), written
 * once and run on every back end: entry CRUD, duplicates refused with
 * nothing stored, the revision (monotonic, survives reopen), entry list
 * filters, the change log with deletions and resync, join tokens (single
 * use, expiry, stored as SHA-256 only), agents (ban, evict, byte order),
 * CA state with binary bytes, the schema version recorded and a newer one
 * refused, two processes writing at once (every write its own revision,
 * none lost), and an acknowledged write surviving kill -9.
 *
 * Not a test executable of its own (tests/CMakeLists.txt builds only
 * tests/unit/test_*.c): test_datastore_sqlite.c and test_datastore_pg.c
 * include it. Before including it, a test defines
 *
 *     struct fixture {
 *             struct ly_datastore *ds;            the handle under test
 *             const struct ds_backend *be;        what differs, below
 *             ...                                 the back end's own state
 *     };
 *
 * and its setup (a fresh, empty store per test, opened into f->ds) sets
 * f->be; its teardown closes f->ds. main() lists DS_CONTRACT_TESTS(setup,
 * teardown) beside the back end's own cases, so every back end runs every
 * contract case.
 *
 * Static functions only: each test file gets its own copy. Ownership is
 * the datastore's (server/datastore.h); the helpers free what they make.
 */
#ifndef LANYARD_TESTS_DATASTORE_CONTRACT_H
#define LANYARD_TESTS_DATASTORE_CONTRACT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/caps.h"
#include "lib/entry.h"
#include "server/datastore.h"

#define TD "spiffe://example.org"
#define AGENT1 TD "/lanyard/agent/join_token/a1"
#define AGENT2 TD "/lanyard/agent/join_token/a2"
/* Agents a token names (a token may not grant another token's default ID). */
#define TOKEN_AGENT1 TD "/lanyard/agent/n1"
#define TOKEN_AGENT2 TD "/lanyard/agent/n2"

/* What differs between back ends; every member is required unless said. */
struct ds_backend {
	const char *name; /* the ops table's name: "sqlite", "postgres" */
	int schema;       /* the schema version this build writes */
	/* Opens the fixture's store into f->ds, or fails the test. */
	void (*open)(struct fixture *f);
	/* Opens another handle on the fixture's store (no test assertions: a
	 * forked child calls it too). */
	ly_status (*open_store)(struct fixture *f, struct ly_datastore **out, struct ly_error *err);
	/* The first column of the first row of `sql`, read through a second,
	 * raw connection to the store (the table names are the same in both
	 * schemas). */
	long long (*query_int)(struct fixture *f, const char *sql);
	/* Runs one SQL command through a raw connection, or fails the test. */
	void (*exec)(struct fixture *f, const char *sql);
	/* What the back end's open sets on each session, checked on f->ds. */
	void (*check_session)(struct fixture *f);
	/* Text an open refusal must name (the SQLite path); NULL: none. */
	const char *(*named_in_errors)(struct fixture *f);
	/* Asserts that `token` (created, unused) and `used` (consumed) are not
	 * stored in clear, only a digest; f->ds may be closed and reopened. */
	void (*check_token_digest_only)(struct fixture *f, const char *token, const char *used);
	/* Crashes the database server itself after a client's kill -9 and
	 * brings it back; NULL when there is no server (SQLite). */
	void (*crash_server)(struct fixture *f);
};

/* ---- helpers ---- */

static void
reopen(struct fixture *f)
{
	ly_datastore_close(f->ds);
	f->ds = NULL;
	f->be->open(f);
}

static long long
rows_in(struct fixture *f, const char *sql)
{
	return f->be->query_int(f, sql);
}

/* A workload entry with the given IDs and selectors (NULL-terminated). */
static struct ly_entry *
entry_of(const char *spiffe_id, const char *parent_id, ...)
{
	struct ly_entry *e;
	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, spiffe_id, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, parent_id, NULL), LY_OK);
	va_list ap;
	va_start(ap, parent_id);
	const char *s;
	while ((s = va_arg(ap, const char *)) != NULL)
		assert_int_equal(ly_entry_add_selector(e, s, NULL), LY_OK);
	va_end(ap);
	return e;
}

static int64_t
revision(struct fixture *f)
{
	int64_t r = -1;
	assert_int_equal(ly_datastore_revision(f->ds, &r, NULL), LY_OK);
	return r;
}

static size_t
count_entries(struct fixture *f)
{
	struct ly_entry_list l = LY_ENTRY_LIST_INIT;
	assert_int_equal(ly_datastore_entry_list(f->ds, NULL, &l, NULL), LY_OK);
	size_t n = l.n;
	ly_entry_list_cleanup(&l);
	return n;
}

/* Creates and returns the stored entry ID (caller frees). */
static char *
create(struct fixture *f, struct ly_entry *e)
{
	struct ly_error err;
	ly_error_clear(&err);
	if (ly_datastore_entry_create(f->ds, e, &err) != LY_OK)
		fail_msg("create: %s", err.msg);
	char *id = strdup(e->entry_id);
	assert_non_null(id);
	ly_entry_free(e);
	return id;
}

static void
expect(ly_status got, const struct ly_error *err, ly_status want, const char *needle)
{
	if (got != want || strstr(err->msg, needle) == NULL)
		fail_msg("got %d '%s', want %d '%s'", got, err->msg, want, needle);
}

static struct ly_ds_agent *
agent_of(const char *id, const char *serial, ...)
{
	struct ly_ds_agent *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	a->spiffe_id = strdup(id);
	a->attestation_type = strdup("k8s_psat");
	a->serial_number = strdup(serial);
	a->svid_expires_at = 4000;
	a->selectors = calloc(8, sizeof(*a->selectors));
	assert_non_null(a->selectors);
	va_list ap;
	va_start(ap, serial);
	const char *s;
	while ((s = va_arg(ap, const char *)) != NULL)
		assert_int_equal(ly_selector_parse_str(s, &a->selectors[a->n_selectors++], NULL), LY_OK);
	va_end(ap);
	return a;
}

/* ---- opening ---- */

static void
test_schema_version_recorded(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(rows_in(f, "SELECT version FROM schema_version"), f->be->schema);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM schema_version"), 1);
	/* Reopening an up-to-date store migrates nothing and keeps its data. */
	free(create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL)));
	reopen(f);
	assert_int_equal(count_entries(f), 1);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM schema_version"), 1);
	assert_string_equal(f->ds->ops->name, f->be->name);
	f->be->check_session(f);
}

static void
test_newer_schema_refused(void **state)
{
	struct fixture *f = *state;
	ly_datastore_close(f->ds);
	f->ds = NULL;
	char sql[96], want[128];
	int newer = f->be->schema + 1;
	(void)snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", newer);
	f->be->exec(f, sql);
	struct ly_error err;
	(void)snprintf(want, sizeof(want), "datastore schema %d is newer than this lanyard-server (%d): upgrade", newer,
	    f->be->schema);
	expect(f->be->open_store(f, &f->ds, &err), &err, LY_E_UNSUPPORTED, want);
	assert_null(f->ds);
	const char *named = f->be->named_in_errors(f);
	if (named != NULL)
		assert_non_null(strstr(err.msg, named));
	/* The refusal changed nothing: the version is still the newer one. */
	assert_int_equal(rows_in(f, "SELECT version FROM schema_version"), newer);
	(void)snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", f->be->schema);
	f->be->exec(f, sql);
	f->be->open(f);
}

/* ---- entries ---- */

static void
test_entry_crud(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	assert_int_equal(revision(f), 0);

	struct ly_entry *e = entry_of(TD "/ns/prod/sa/web", AGENT1, "unix:uid:1000", "k8s:ns:prod", NULL);
	assert_int_equal(ly_entry_add_dns_name(e, "web.example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_add_dns_name(e, "api.example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->hint, "web \"quoted\" \\ 'x'", NULL), LY_OK);
	e->x509_svid_ttl = 600;
	e->jwt_svid_ttl = 60;
	e->admin = true;
	e->downstream = true;
	assert_int_equal(ly_datastore_entry_create(f->ds, e, &err), LY_OK);
	/* An ID was assigned (a UUID), with the revision and creation time. */
	assert_non_null(e->entry_id);
	assert_int_equal(strlen(e->entry_id), LY_UUID_LEN);
	assert_int_equal(e->revision, 1);
	assert_true(e->created_at > 1600000000);
	assert_int_equal(revision(f), 1);

	struct ly_entry *got = NULL;
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &got, &err), LY_OK);
	assert_string_equal(got->entry_id, e->entry_id);
	assert_string_equal(got->spiffe_id, TD "/ns/prod/sa/web");
	assert_string_equal(got->parent_id, AGENT1);
	assert_int_equal(got->n_selectors, 2);
	assert_string_equal(got->selectors[0].type, "k8s"); /* canonical order */
	assert_string_equal(got->selectors[1].value, "uid:1000");
	assert_int_equal(got->n_dns_names, 2);
	assert_string_equal(got->dns_names[0], "web.example.org"); /* order kept: the first is the CN */
	assert_string_equal(got->dns_names[1], "api.example.org");
	assert_string_equal(got->hint, "web \"quoted\" \\ 'x'");
	assert_int_equal(got->x509_svid_ttl, 600);
	assert_int_equal(got->jwt_svid_ttl, 60);
	assert_true(got->admin);
	assert_true(got->downstream);
	assert_false(got->node);
	assert_int_equal(got->revision, 1);
	assert_int_equal(got->created_at, e->created_at);

	/* Update replaces every field, bumps the revision, keeps created_at. */
	got->x509_svid_ttl = 0;
	got->admin = false;
	assert_int_equal(ly_entry_set_string(&got->hint, NULL, NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(got, "unix:gid:1000", NULL), LY_OK);
	got->created_at = 0;
	assert_int_equal(ly_datastore_entry_update(f->ds, got, &err), LY_OK);
	assert_int_equal(got->revision, 2);
	assert_int_equal(got->created_at, e->created_at);
	struct ly_entry *again = NULL;
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &again, &err), LY_OK);
	assert_int_equal(again->n_selectors, 3);
	assert_int_equal(again->n_dns_names, 2);
	assert_int_equal(again->x509_svid_ttl, 0);
	assert_false(again->admin);
	assert_null(again->hint);
	assert_int_equal(again->revision, 2);
	ly_entry_free(again);

	/* Delete returns what was deleted; then it is gone. */
	struct ly_entry *deleted = NULL;
	assert_int_equal(ly_datastore_entry_delete(f->ds, e->entry_id, &deleted, &err), LY_OK);
	assert_non_null(deleted);
	assert_string_equal(deleted->entry_id, e->entry_id);
	assert_int_equal(deleted->n_selectors, 3);
	assert_int_equal(revision(f), 3);
	expect(ly_datastore_entry_get(f->ds, e->entry_id, &again, &err), &err, LY_E_NOT_FOUND, "not found");
	assert_null(again);
	expect(ly_datastore_entry_delete(f->ds, e->entry_id, NULL, &err), &err, LY_E_NOT_FOUND, "not found");
	expect(ly_datastore_entry_update(f->ds, got, &err), &err, LY_E_NOT_FOUND, "not found");
	/* Refusals roll the revision back. */
	assert_int_equal(revision(f), 3);
	/* Selectors and DNS names went with the entry (foreign keys cascade). */
	assert_int_equal(count_entries(f), 0);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM entry_selectors"), 0);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM entry_dns_names"), 0);
	ly_entry_free(deleted);
	ly_entry_free(got);
	ly_entry_free(e);

	expect(ly_datastore_entry_get(f->ds, "", &again, &err), &err, LY_E_INVALID, "empty");
	char long_id[80];
	memset(long_id, 'x', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	expect(ly_datastore_entry_get(f->ds, long_id, &again, &err), &err, LY_E_LIMIT, "longer than 64");
	/* SQL in an ID is data, not SQL (bound parameters). */
	expect(ly_datastore_entry_get(f->ds, "x' OR '1'='1", &again, &err), &err, LY_E_NOT_FOUND, "not found");
}

static void
test_duplicates_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	char *a = create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", "unix:gid:1000", NULL));
	int64_t rev = revision(f);

	/* Same identity, selectors in another order: refused, nothing stored, no ID left behind. */
	struct ly_entry *dup = entry_of(TD "/web", AGENT1, "unix:gid:1000", "unix:uid:1000", NULL);
	dup->x509_svid_ttl = 99; /* other fields do not make it different */
	expect(ly_datastore_entry_create(f->ds, dup, &err), &err, LY_E_INVALID, "entry already exists");
	assert_non_null(strstr(err.msg, a));
	assert_null(dup->entry_id);
	assert_int_equal(revision(f), rev);
	assert_int_equal(count_entries(f), 1);
	ly_entry_free(dup);

	/* The same entry ID, even for another identity. */
	dup = entry_of(TD "/other", AGENT1, "unix:uid:1", NULL);
	assert_int_equal(ly_entry_set_string(&dup->entry_id, a, NULL), LY_OK);
	expect(ly_datastore_entry_create(f->ds, dup, &err), &err, LY_E_INVALID, "entry already exists");
	assert_string_equal(dup->entry_id, a);
	assert_int_equal(revision(f), rev);
	assert_int_equal(count_entries(f), 1);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM entry_changes"), 1);
	ly_entry_free(dup);

	/* A different parent, SPIFFE ID or selector set is not a duplicate. */
	char *b = create(f, entry_of(TD "/web", AGENT2, "unix:uid:1000", "unix:gid:1000", NULL));
	char *c = create(f, entry_of(TD "/web2", AGENT1, "unix:uid:1000", "unix:gid:1000", NULL));
	char *d = create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL));
	assert_int_equal(count_entries(f), 4);

	/* An update may not turn one entry into a duplicate of another. */
	rev = revision(f);
	struct ly_entry *upd = entry_of(TD "/web", AGENT1, "unix:uid:1000", "unix:gid:1000", NULL);
	assert_int_equal(ly_entry_set_string(&upd->entry_id, d, NULL), LY_OK);
	expect(ly_datastore_entry_update(f->ds, upd, &err), &err, LY_E_INVALID, "entry already exists");
	assert_int_equal(revision(f), rev);
	struct ly_entry *still = NULL;
	assert_int_equal(ly_datastore_entry_get(f->ds, d, &still, NULL), LY_OK);
	assert_int_equal(still->n_selectors, 1);
	/* Updating an entry to its own identity is fine. */
	still->jwt_svid_ttl = 30;
	assert_int_equal(ly_datastore_entry_update(f->ds, still, &err), LY_OK);
	ly_entry_free(still);
	ly_entry_free(upd);

	/* An invalid entry is refused before anything is written. */
	rev = revision(f);
	struct ly_entry *bad = entry_of(TD "/web3", AGENT1, NULL);
	expect(ly_datastore_entry_create(f->ds, bad, &err), &err, LY_E_INVALID, "at least one selector");
	assert_null(bad->entry_id);
	ly_entry_free(bad);
	bad = entry_of(TD "/web3", AGENT1, "unix:uid:1", NULL);
	assert_int_equal(ly_entry_set_string(&bad->entry_id, "bad id", NULL), LY_OK);
	expect(ly_datastore_entry_create(f->ds, bad, &err), &err, LY_E_INVALID, "entry ID must use");
	ly_entry_free(bad);
	assert_int_equal(revision(f), rev);
	assert_int_equal(count_entries(f), 4);
	free(a);
	free(b);
	free(c);
	free(d);
}

static void
test_revision_survives_reopen(void **state)
{
	struct fixture *f = *state;
	char *a = create(f, entry_of(TD "/a", AGENT1, "unix:uid:1", NULL));
	char *b = create(f, entry_of(TD "/b", AGENT1, "unix:uid:2", NULL));
	assert_int_equal(ly_datastore_entry_delete(f->ds, b, NULL, NULL), LY_OK);
	assert_int_equal(revision(f), 3);
	reopen(f);
	assert_int_equal(revision(f), 3);
	/* Monotonic: a delete never lowers it, and the next write goes on from there. */
	struct ly_entry *c = entry_of(TD "/c", AGENT1, "unix:uid:3", NULL);
	assert_int_equal(ly_datastore_entry_create(f->ds, c, NULL), LY_OK);
	assert_int_equal(c->revision, 4);
	ly_entry_free(c);
	/* Other kinds of writes move it too. */
	assert_int_equal(ly_datastore_ca_state_put(f->ds, "x", (const uint8_t *)"1", 1, NULL), LY_OK);
	assert_int_equal(revision(f), 5);
	free(a);
	free(b);
}

static void
test_list_filters(void **state)
{
	struct fixture *f = *state;
	char *web = create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL));
	char *web_g = create(f, entry_of(TD "/web-g", AGENT1, "unix:uid:1000", "unix:gid:50", NULL));
	char *db = create(f, entry_of(TD "/db", AGENT1, "unix:uid:2000", NULL));
	char *web2 = create(f, entry_of(TD "/web", AGENT2, "unix:uid:1000", NULL));
	struct ly_entry_list l = LY_ENTRY_LIST_INIT;
	struct ly_entry_filter flt;

	assert_int_equal(ly_datastore_entry_list(f->ds, NULL, &l, NULL), LY_OK);
	assert_int_equal(l.n, 4);
	assert_string_equal(l.items[0]->entry_id, web); /* creation order */
	assert_string_equal(l.items[3]->entry_id, web2);
	ly_entry_list_cleanup(&l);

	memset(&flt, 0, sizeof(flt));
	flt.spiffe_id = TD "/web";
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(l.n, 2);
	ly_entry_list_cleanup(&l);
	flt.parent_id = AGENT2;
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.items[0]->entry_id, web2);
	ly_entry_list_cleanup(&l);
	flt.spiffe_id = NULL;
	flt.parent_id = AGENT1;
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(l.n, 3);
	ly_entry_list_cleanup(&l);

	/* Subset: what a workload with these selectors under AGENT1 is entitled to. */
	struct ly_selector have[2];
	assert_int_equal(ly_selector_parse_str("unix:uid:1000", &have[0], NULL), LY_OK);
	assert_int_equal(ly_selector_parse_str("unix:user:www", &have[1], NULL), LY_OK);
	flt.selectors = have;
	flt.n_selectors = 2;
	flt.match = LY_MATCH_SUBSET;
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.items[0]->entry_id, web);
	ly_entry_list_cleanup(&l);

	/* Superset: entries holding uid:1000 (and maybe more), any parent. */
	flt.parent_id = NULL;
	flt.n_selectors = 1;
	flt.match = LY_MATCH_SUPERSET;
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(l.n, 3);
	ly_entry_list_cleanup(&l);

	/* Exact. */
	flt.match = LY_MATCH_EXACT;
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(l.n, 2); /* web and web2, not web-g */
	ly_entry_list_cleanup(&l);

	/* Results are appended to what the list holds. */
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(ly_datastore_entry_list(f->ds, &flt, &l, NULL), LY_OK);
	assert_int_equal(l.n, 4);
	ly_entry_list_cleanup(&l);
	ly_selector_cleanup(&have[0]);
	ly_selector_cleanup(&have[1]);
	free(web);
	free(web_g);
	free(db);
	free(web2);
}

static void
test_changes_since(void **state)
{
	struct fixture *f = *state;
	struct ly_entry_changes ch = LY_ENTRY_CHANGES_INIT;
	char *a = create(f, entry_of(TD "/a", AGENT1, "unix:uid:1", NULL)); /* r1 */
	char *b = create(f, entry_of(TD "/b", AGENT1, "unix:uid:2", NULL)); /* r2 */
	struct ly_entry *ea = NULL;
	assert_int_equal(ly_datastore_entry_get(f->ds, a, &ea, NULL), LY_OK);
	ea->jwt_svid_ttl = 45;
	assert_int_equal(ly_datastore_entry_update(f->ds, ea, NULL), LY_OK); /* r3 */
	ly_entry_free(ea);
	assert_int_equal(ly_datastore_entry_delete(f->ds, b, NULL, NULL), LY_OK); /* r4 */
	char *c = create(f, entry_of(TD "/c", AGENT1, "unix:uid:3", NULL)); /* r5 */
	assert_int_equal(ly_datastore_token_create(f->ds, "tok", TOKEN_AGENT1, 4102444800, NULL), LY_OK); /* r6 */

	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 0, &ch, NULL), LY_OK);
	assert_false(ch.resync);
	assert_int_equal(ch.revision, 6);
	assert_int_equal(ch.n, 3); /* one per entry: its latest change */
	assert_string_equal(ch.items[0].entry_id, a);
	assert_int_equal(ch.items[0].op, LY_ENTRY_UPDATED);
	assert_int_equal(ch.items[0].revision, 3);
	assert_non_null(ch.items[0].entry);
	assert_int_equal(ch.items[0].entry->jwt_svid_ttl, 45);
	assert_string_equal(ch.items[1].entry_id, b); /* the deletion is visible */
	assert_int_equal(ch.items[1].op, LY_ENTRY_DELETED);
	assert_int_equal(ch.items[1].revision, 4);
	assert_null(ch.items[1].entry);
	assert_string_equal(ch.items[2].entry_id, c);
	assert_int_equal(ch.items[2].op, LY_ENTRY_CREATED);
	assert_string_equal(ch.items[2].entry->selectors[0].value, "uid:3");
	ly_entry_changes_cleanup(&ch);

	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 3, &ch, NULL), LY_OK);
	assert_int_equal(ch.n, 2);
	assert_int_equal(ch.items[0].op, LY_ENTRY_DELETED);
	ly_entry_changes_cleanup(&ch);
	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 6, &ch, NULL), LY_OK);
	assert_int_equal(ch.n, 0);
	assert_false(ch.resync);
	ly_entry_changes_cleanup(&ch);
	/* From the future (another or a restored database): reload everything. */
	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 7, &ch, NULL), LY_OK);
	assert_true(ch.resync);
	assert_int_equal(ch.n, 0);
	ly_entry_changes_cleanup(&ch);

	/* The log survives a restart. */
	reopen(f);
	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 3, &ch, NULL), LY_OK);
	assert_int_equal(ch.n, 2);
	ly_entry_changes_cleanup(&ch);

	/* After pruning, a watcher older than the horizon must resync; newer ones are served. */
	assert_int_equal(ly_datastore_entry_changes_prune(f->ds, 3, NULL), LY_OK);
	assert_int_equal(revision(f), 6);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM entry_changes"), 2);
	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 2, &ch, NULL), LY_OK);
	assert_true(ch.resync);
	ly_entry_changes_cleanup(&ch);
	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 3, &ch, NULL), LY_OK);
	assert_false(ch.resync);
	assert_int_equal(ch.n, 2);
	ly_entry_changes_cleanup(&ch);
	/* Pruning below the horizon (or past the revision) changes nothing. */
	assert_int_equal(ly_datastore_entry_changes_prune(f->ds, 1, NULL), LY_OK);
	assert_int_equal(ly_datastore_entry_changes_prune(f->ds, 100, NULL), LY_OK);
	assert_int_equal(revision(f), 6);
	assert_int_equal(rows_in(f, "SELECT value FROM meta WHERE name = 'changes_pruned'"), 6);
	/* A stale output is refused rather than leaked. */
	ch.n = 1;
	assert_int_equal(ly_datastore_entry_changes_since(f->ds, 3, &ch, NULL), LY_E_INTERNAL);
	free(a);
	free(b);
	free(c);
}

/* ---- join tokens ---- */

static void
test_tokens(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	char *id = NULL;
	const char *tok = "b6c1a7e2-3f4d-4e5a-9b8c-7d6e5f4a3b2c";

	assert_int_equal(ly_datastore_token_create(f->ds, tok, TOKEN_AGENT1, 2000, &err), LY_OK);
	int64_t rev = revision(f);
	expect(ly_datastore_token_create(f->ds, tok, TOKEN_AGENT2, 2000, &err), &err, LY_E_INVALID, "already exists");
	assert_int_equal(revision(f), rev);
	assert_int_equal(ly_datastore_token_consume(f->ds, tok, 1999, NULL, &id, NULL, &err), LY_OK);
	assert_string_equal(id, TOKEN_AGENT1);
	free(id);
	id = NULL;
	/* Single use. */
	expect(ly_datastore_token_consume(f->ds, tok, 1999, NULL, &id, NULL, &err), &err, LY_E_NOT_FOUND,
	    "unknown or already used");
	assert_null(id);

	/* Expired at expires_at; an expired token is used up too. */
	assert_int_equal(ly_datastore_token_create(f->ds, "tok2", TOKEN_AGENT2, 2000, &err), LY_OK);
	expect(ly_datastore_token_consume(f->ds, "tok2", 2000, NULL, &id, NULL, &err), &err, LY_E_EXPIRED,
	    "expired");
	assert_null(id);
	expect(ly_datastore_token_consume(f->ds, "tok2", 10, NULL, &id, NULL, &err), &err, LY_E_NOT_FOUND,
	    "already used");

	/* Prune removes only expired tokens. */
	assert_int_equal(ly_datastore_token_create(f->ds, "old", TOKEN_AGENT1, 100, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_create(f->ds, "new", TOKEN_AGENT1, 5000, NULL), LY_OK);
	size_t removed = 99;
	rev = revision(f);
	assert_int_equal(ly_datastore_token_prune(f->ds, 1000, &removed, NULL), LY_OK);
	assert_int_equal(removed, 1);
	assert_int_equal(revision(f), rev + 1);
	/* A prune that finds nothing leaves the revision. */
	assert_int_equal(ly_datastore_token_prune(f->ds, 1000, &removed, NULL), LY_OK);
	assert_int_equal(removed, 0);
	assert_int_equal(revision(f), rev + 1);
	expect(ly_datastore_token_consume(f->ds, "old", 50, NULL, &id, NULL, &err), &err, LY_E_NOT_FOUND,
	    "unknown");
	assert_int_equal(ly_datastore_token_consume(f->ds, "new", 1000, NULL, &id, NULL, NULL), LY_OK);
	free(id);
	id = NULL;

	/* Shape checks. */
	expect(ly_datastore_token_create(f->ds, "", TOKEN_AGENT1, 100, &err), &err, LY_E_INVALID, "empty");
	expect(ly_datastore_token_create(f->ds, "a b", TOKEN_AGENT1, 100, &err), &err, LY_E_INVALID, "[A-Za-z0-9._-]");
	/* "." and ".." would become an agent ID path segment: never stored. */
	expect(ly_datastore_token_create(f->ds, "..", TOKEN_AGENT1, 100, &err), &err, LY_E_INVALID, "'.' or '..'");
	char big[300];
	memset(big, 't', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	expect(ly_datastore_token_create(f->ds, big, TOKEN_AGENT1, 100, &err), &err, LY_E_LIMIT, "longer than 256");
	expect(ly_datastore_token_create(f->ds, "t3", "spiffe://Bad/x", 100, &err), &err, LY_E_INVALID,
	    "join token SPIFFE ID");
	expect(ly_datastore_token_create(f->ds, "t3", TOKEN_AGENT1, 0, &err), &err, LY_E_INVALID, "expiry");
	expect(ly_datastore_token_consume(f->ds, "a/b", 0, NULL, &id, NULL, &err), &err, LY_E_INVALID,
	    "[A-Za-z0-9._-]");

	/* Only a digest is stored: neither token's bytes are anywhere in the store's files. */
	const char *secret = "Zq9xSECRETtokenVALUE7Lm2";
	assert_int_equal(ly_datastore_token_create(f->ds, secret, TOKEN_AGENT2, 5000, NULL), LY_OK);
	f->be->check_token_digest_only(f, secret, tok);
	assert_int_equal(ly_datastore_token_consume(f->ds, secret, 10, NULL, &id, NULL, NULL), LY_OK);
	free(id);
}

/*
 * A lost answer (datastore.h): the token used with key K answers K again
 * within LY_JOIN_TOKEN_RETRY_S, through any handle (another server), and
 * nobody else: another key, no key, later, after the agent's eviction.
 */
static void
test_token_retry_same_key(void **state)
{
	struct fixture *f = *state;
	struct ly_datastore *other = NULL;
	struct ly_error err;
	char *id = NULL;
	bool again = true;
	uint8_t k1[LY_JOIN_TOKEN_KEY_LEN], k2[LY_JOIN_TOKEN_KEY_LEN];
	const int64_t t0 = 1000;

	memset(k1, 0x11, sizeof(k1));
	memset(k2, 0x22, sizeof(k2));
	assert_int_equal(f->be->open_store(f, &other, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_create(f->ds, "retry", TOKEN_AGENT1, 5000, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_consume(f->ds, "retry", t0, k1, &id, &again, &err), LY_OK);
	assert_string_equal(id, TOKEN_AGENT1);
	assert_false(again);
	free(id);
	id = NULL;
	/* The same key again, here and through the other handle: the same ID, nothing written. */
	int64_t rev = revision(f);
	assert_int_equal(ly_datastore_token_consume(f->ds, "retry", t0 + 10, k1, &id, &again, &err), LY_OK);
	assert_string_equal(id, TOKEN_AGENT1);
	assert_true(again);
	free(id);
	id = NULL;
	assert_int_equal(ly_datastore_token_consume(other, "retry", t0 + LY_JOIN_TOKEN_RETRY_S - 1, k1, &id, &again,
	    &err), LY_OK);
	assert_string_equal(id, TOKEN_AGENT1);
	assert_true(again);
	free(id);
	id = NULL;
	assert_int_equal(revision(f), rev);
	/* Another key, no key: a second use. */
	expect(ly_datastore_token_consume(other, "retry", t0 + 10, k2, &id, &again, &err), &err, LY_E_NOT_FOUND,
	    "already used");
	assert_null(id);
	assert_false(again);
	expect(ly_datastore_token_consume(f->ds, "retry", t0 + 10, NULL, &id, &again, &err), &err, LY_E_NOT_FOUND,
	    "already used");
	/* Past the retry time, and pruned then. */
	expect(ly_datastore_token_consume(f->ds, "retry", t0 + LY_JOIN_TOKEN_RETRY_S, k1, &id, &again, &err), &err,
	    LY_E_NOT_FOUND, "already used");
	size_t removed = 99;
	assert_int_equal(ly_datastore_token_prune(f->ds, t0 + LY_JOIN_TOKEN_RETRY_S, &removed, NULL), LY_OK);
	assert_int_equal(removed, 0);
	assert_true(revision(f) > rev);
	expect(ly_datastore_token_consume(f->ds, "retry", t0 + 10, k1, &id, &again, &err), &err, LY_E_NOT_FOUND,
	    "already used");

	/* A first use without a key, or of an expired token, leaves nothing to retry. */
	assert_int_equal(ly_datastore_token_create(f->ds, "nokey", TOKEN_AGENT1, 5000, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_consume(f->ds, "nokey", t0, NULL, &id, NULL, &err), LY_OK);
	free(id);
	id = NULL;
	expect(ly_datastore_token_consume(f->ds, "nokey", t0, k1, &id, NULL, &err), &err, LY_E_NOT_FOUND,
	    "already used");
	assert_int_equal(ly_datastore_token_create(f->ds, "late", TOKEN_AGENT1, 900, NULL), LY_OK);
	expect(ly_datastore_token_consume(f->ds, "late", t0, k1, &id, NULL, &err), &err, LY_E_EXPIRED, "expired");
	expect(ly_datastore_token_consume(f->ds, "late", t0, k1, &id, NULL, &err), &err, LY_E_NOT_FOUND,
	    "already used");

	/* The same token made again after its use, and used by another key: the latest use counts. */
	assert_int_equal(ly_datastore_token_create(f->ds, "nokey", TOKEN_AGENT2, 5000, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_consume(f->ds, "nokey", t0, k2, &id, NULL, &err), LY_OK);
	free(id);
	id = NULL;
	assert_int_equal(ly_datastore_token_create(f->ds, "nokey", TOKEN_AGENT1, 5000, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_consume(f->ds, "nokey", t0, k1, &id, NULL, &err), LY_OK);
	free(id);
	id = NULL;
	assert_int_equal(ly_datastore_token_consume(other, "nokey", t0 + 1, k1, &id, &again, &err), LY_OK);
	assert_string_equal(id, TOKEN_AGENT1);
	assert_true(again);
	free(id);
	id = NULL;
	expect(ly_datastore_token_consume(f->ds, "nokey", t0 + 1, k2, &id, NULL, &err), &err, LY_E_NOT_FOUND,
	    "already used");

	/* Evicted: the agent must attest again, and its token no longer answers its key. */
	assert_int_equal(ly_datastore_token_create(f->ds, "evict", TOKEN_AGENT2, 5000, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_consume(f->ds, "evict", t0, k2, &id, NULL, &err), LY_OK);
	free(id);
	id = NULL;
	struct ly_ds_agent *a = agent_of(TOKEN_AGENT2, "2b", NULL);
	assert_int_equal(ly_datastore_agent_upsert(f->ds, a, &err), LY_OK);
	ly_ds_agent_free(a);
	assert_int_equal(ly_datastore_token_consume(other, "evict", t0 + 1, k2, &id, NULL, &err), LY_OK);
	free(id);
	id = NULL;
	assert_int_equal(ly_datastore_agent_delete(other, TOKEN_AGENT2, &err), LY_OK);
	expect(ly_datastore_token_consume(f->ds, "evict", t0 + 2, k2, &id, NULL, &err), &err, LY_E_NOT_FOUND,
	    "already used");
	ly_datastore_close(other);
}

/* A store of the version before join token uses (SQLite 3, PostgreSQL 4) gets the table at open. */
static void
test_token_uses_migration(void **state)
{
	struct fixture *f = *state;
	uint8_t k[LY_JOIN_TOKEN_KEY_LEN];
	char *id = NULL;

	memset(k, 0x33, sizeof(k));
	assert_int_equal(ly_datastore_token_create(f->ds, "kept", TOKEN_AGENT1, 5000, NULL), LY_OK);
	ly_datastore_close(f->ds);
	f->ds = NULL;
	f->be->exec(f, "DROP TABLE join_token_uses");
	char sql[96];
	(void)snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", f->be->schema - 1);
	f->be->exec(f, sql);
	f->be->open(f);
	assert_int_equal(rows_in(f, "SELECT version FROM schema_version"), f->be->schema);
	assert_int_equal(ly_datastore_token_consume(f->ds, "kept", 10, k, &id, NULL, NULL), LY_OK);
	free(id);
	id = NULL;
	assert_int_equal(ly_datastore_token_consume(f->ds, "kept", 11, k, &id, NULL, NULL), LY_OK);
	free(id);
}

static void
test_token_single_use_across_handles(void **state)
{
	struct fixture *f = *state;
	struct ly_datastore *other = NULL;
	char *id = NULL;
	assert_int_equal(f->be->open_store(f, &other, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_create(f->ds, "shared", TOKEN_AGENT1, 5000, NULL), LY_OK);
	assert_int_equal(ly_datastore_token_consume(other, "shared", 10, NULL, &id, NULL, NULL), LY_OK);
	free(id);
	id = NULL;
	assert_int_equal(ly_datastore_token_consume(f->ds, "shared", 10, NULL, &id, NULL, NULL), LY_E_NOT_FOUND);
	/* Both handles see one revision. */
	int64_t r1, r2;
	assert_int_equal(ly_datastore_revision(f->ds, &r1, NULL), LY_OK);
	assert_int_equal(ly_datastore_revision(other, &r2, NULL), LY_OK);
	assert_int_equal(r1, r2);
	/* A duplicate made through the other handle is seen and refused. */
	free(create(f, entry_of(TD "/web", AGENT1, "unix:uid:1", NULL)));
	struct ly_entry *dup = entry_of(TD "/web", AGENT1, "unix:uid:1", NULL);
	struct ly_error err;
	expect(ly_datastore_entry_create(other, dup, &err), &err, LY_E_INVALID, "entry already exists");
	ly_entry_free(dup);
	ly_datastore_close(other);
}

/* ---- concurrency ---- */

/* Two processes writing at once: every write gets its own revision, none is lost. */
static void
test_concurrent_writers(void **state)
{
	struct fixture *f = *state;
	enum { PER_CHILD = 40 };
	pid_t pids[2];
	for (int c = 0; c < 2; c++) {
		pids[c] = fork();
		assert_true(pids[c] >= 0);
		if (pids[c] == 0) {
			struct ly_datastore *ds = NULL;
			if (f->be->open_store(f, &ds, NULL) != LY_OK)
				_exit(1);
			for (int i = 0; i < PER_CHILD; i++) {
				char sel[32];
				snprintf(sel, sizeof(sel), "unix:uid:%d", c * 1000 + i);
				struct ly_entry *e = entry_of(TD "/w", AGENT1, sel, NULL);
				/* Both try the same duplicate too: exactly one wins. */
				struct ly_entry *d = entry_of(TD "/dup", AGENT1, "unix:uid:77", NULL);
				if (ly_datastore_entry_create(ds, e, NULL) != LY_OK)
					_exit(2);
				ly_status drc = ly_datastore_entry_create(ds, d, NULL);
				if (drc != LY_OK && drc != LY_E_INVALID)
					_exit(3);
				ly_entry_free(e);
				ly_entry_free(d);
			}
			ly_datastore_close(ds);
			_exit(0);
		}
	}
	for (int c = 0; c < 2; c++) {
		int status = 0;
		assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(count_entries(f), 2 * PER_CHILD + 1);
	assert_int_equal(revision(f), 2 * PER_CHILD + 1);
	assert_int_equal(rows_in(f, "SELECT count(DISTINCT revision) FROM entries"), 2 * PER_CHILD + 1);
	assert_int_equal(rows_in(f, "SELECT max(revision) FROM entry_changes"), 2 * PER_CHILD + 1);
}

/* ---- agents ---- */

static void
test_agents(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_ds_agent *a = agent_of(AGENT1, "1a", "k8s_psat:cluster:prod", "k8s_psat:agent_ns:lanyard", NULL);
	struct ly_ds_agent *got = NULL;
	assert_int_equal(ly_datastore_agent_upsert(f->ds, a, &err), LY_OK);
	assert_int_equal(ly_datastore_agent_get(f->ds, AGENT1, &got, &err), LY_OK);
	assert_string_equal(got->spiffe_id, AGENT1);
	assert_string_equal(got->attestation_type, "k8s_psat");
	assert_string_equal(got->serial_number, "1a");
	assert_int_equal(got->svid_expires_at, 4000);
	assert_false(got->banned);
	assert_int_equal(got->n_selectors, 2);
	assert_string_equal(got->selectors[1].value, "agent_ns:lanyard");
	int64_t created = got->created_at;
	assert_true(created > 0);
	ly_ds_agent_free(got);

	struct ly_ds_agent *b = agent_of(AGENT2, "", NULL);
	assert_int_equal(ly_datastore_agent_upsert(f->ds, b, &err), LY_OK);
	/* Byte order whatever the collation: "Z" sorts before "a". */
	struct ly_ds_agent *z = agent_of(TD "/lanyard/agent/join_token/Z", "", NULL);
	assert_int_equal(ly_datastore_agent_upsert(f->ds, z, &err), LY_OK);
	struct ly_ds_agent_list l = LY_DS_AGENT_LIST_INIT;
	assert_int_equal(ly_datastore_agent_list(f->ds, &l, &err), LY_OK);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.items[0]->spiffe_id, TD "/lanyard/agent/join_token/Z");
	assert_string_equal(l.items[1]->spiffe_id, AGENT1);
	assert_string_equal(l.items[2]->spiffe_id, AGENT2);
	assert_int_equal(l.items[2]->n_selectors, 0);
	ly_ds_agent_list_cleanup(&l);
	assert_int_equal(ly_datastore_agent_delete(f->ds, z->spiffe_id, &err), LY_OK);
	ly_ds_agent_free(z);

	/* Ban; a later upsert (renewal) neither lifts it nor resets created_at. */
	int64_t rev = revision(f);
	assert_int_equal(ly_datastore_agent_set_banned(f->ds, AGENT1, true, &err), LY_OK);
	assert_int_equal(revision(f), rev + 1);
	free(a->serial_number);
	a->serial_number = strdup("2b");
	a->n_selectors = 1;
	ly_selector_cleanup(&a->selectors[1]);
	a->banned = false;
	assert_int_equal(ly_datastore_agent_upsert(f->ds, a, &err), LY_OK);
	assert_int_equal(ly_datastore_agent_get(f->ds, AGENT1, &got, &err), LY_OK);
	assert_true(got->banned);
	assert_string_equal(got->serial_number, "2b");
	assert_int_equal(got->n_selectors, 1); /* selectors replaced */
	assert_int_equal(got->created_at, created);
	ly_ds_agent_free(got);
	assert_int_equal(ly_datastore_agent_set_banned(f->ds, AGENT1, false, &err), LY_OK);
	assert_int_equal(ly_datastore_agent_get(f->ds, AGENT1, &got, &err), LY_OK);
	assert_false(got->banned);
	ly_ds_agent_free(got);

	/* Evict deletes the record and its selectors. */
	assert_int_equal(rows_in(f, "SELECT count(*) FROM agent_selectors"), 1);
	assert_int_equal(ly_datastore_agent_delete(f->ds, AGENT1, &err), LY_OK);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM agent_selectors"), 0);
	expect(ly_datastore_agent_get(f->ds, AGENT1, &got, &err), &err, LY_E_NOT_FOUND, "not found");
	assert_null(got);
	rev = revision(f);
	expect(ly_datastore_agent_delete(f->ds, AGENT1, &err), &err, LY_E_NOT_FOUND, "not found");
	expect(ly_datastore_agent_set_banned(f->ds, AGENT1, true, &err), &err, LY_E_NOT_FOUND, "not found");
	assert_int_equal(revision(f), rev);

	/* Refused shapes. */
	struct ly_ds_agent *bad = agent_of(AGENT1, "1a", "unix:uid:0", NULL);
	expect(ly_datastore_agent_upsert(f->ds, bad, &err), &err, LY_E_INVALID, "workload selector type unix");
	ly_ds_agent_free(bad);
	bad = agent_of(AGENT1, "XYZ", NULL);
	expect(ly_datastore_agent_upsert(f->ds, bad, &err), &err, LY_E_INVALID, "lower-case hex");
	ly_ds_agent_free(bad);
	bad = agent_of("spiffe://example.org/a//b", "1", NULL);
	expect(ly_datastore_agent_upsert(f->ds, bad, &err), &err, LY_E_INVALID, "agent SPIFFE ID");
	ly_ds_agent_free(bad);
	bad = agent_of(AGENT1, "1", NULL);
	free(bad->attestation_type);
	bad->attestation_type = strdup("Join Token");
	expect(ly_datastore_agent_upsert(f->ds, bad, &err), &err, LY_E_INVALID, "[a-z0-9_]");
	ly_ds_agent_free(bad);
	assert_int_equal(revision(f), rev);
	ly_ds_agent_free(a);
	ly_ds_agent_free(b);
}

/* ---- CA state ---- */

static void
test_ca_state(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct ly_buf buf = LY_BUF_INIT;
	const uint8_t v1[] = { 0x00, 0x01, 0xff, 0x00, '\\', 'x', '\'' };
	const uint8_t v2[] = { 0x42 };

	assert_int_equal(ly_datastore_ca_state_put(f->ds, "x509-ca.current", v1, sizeof(v1), &err), LY_OK);
	assert_int_equal(ly_datastore_ca_state_get(f->ds, "x509-ca.current", &buf, &err), LY_OK);
	assert_int_equal(buf.len, sizeof(v1));
	assert_memory_equal(buf.data, v1, sizeof(v1));
	assert_int_equal(rows_in(f, "SELECT length(value) FROM ca_state WHERE name = 'x509-ca.current'"), sizeof(v1));
	/* A non-empty output is refused rather than leaked. */
	assert_int_equal(ly_datastore_ca_state_get(f->ds, "x509-ca.current", &buf, &err), LY_E_INTERNAL);
	ly_buf_free_secret(&buf);
	assert_int_equal(ly_datastore_ca_state_put(f->ds, "x509-ca.current", v2, sizeof(v2), &err), LY_OK);
	assert_int_equal(ly_datastore_ca_state_get(f->ds, "x509-ca.current", &buf, &err), LY_OK);
	assert_int_equal(buf.len, 1);
	assert_int_equal(buf.data[0], 0x42);
	ly_buf_free_secret(&buf);
	/* An empty value is a value, not a missing one. */
	assert_int_equal(ly_datastore_ca_state_put(f->ds, "empty", NULL, 0, &err), LY_OK);
	assert_int_equal(ly_datastore_ca_state_get(f->ds, "empty", &buf, &err), LY_OK);
	assert_int_equal(buf.len, 0);
	ly_buf_free_secret(&buf);
	int64_t rev = revision(f);
	assert_int_equal(ly_datastore_ca_state_delete(f->ds, "empty", &err), LY_OK);
	assert_int_equal(revision(f), rev + 1);
	expect(ly_datastore_ca_state_get(f->ds, "empty", &buf, &err), &err, LY_E_NOT_FOUND, "not found");
	expect(ly_datastore_ca_state_delete(f->ds, "empty", &err), &err, LY_E_NOT_FOUND, "not found");
	assert_int_equal(revision(f), rev + 1);

	/* Every byte value, and the largest value allowed. */
	uint8_t *big = calloc(1, LY_CA_STATE_MAX + 1);
	assert_non_null(big);
	for (size_t i = 0; i < LY_CA_STATE_MAX; i++)
		big[i] = (uint8_t)(i * 31 + 7);
	assert_int_equal(ly_datastore_ca_state_put(f->ds, "big", big, LY_CA_STATE_MAX, &err), LY_OK);
	assert_int_equal(ly_datastore_ca_state_get(f->ds, "big", &buf, &err), LY_OK);
	assert_int_equal(buf.len, LY_CA_STATE_MAX);
	assert_memory_equal(buf.data, big, LY_CA_STATE_MAX);
	ly_buf_free_secret(&buf);
	expect(ly_datastore_ca_state_put(f->ds, "big", big, LY_CA_STATE_MAX + 1, &err), &err, LY_E_LIMIT,
	    "over the 1048576-byte limit");
	free(big);
	expect(ly_datastore_ca_state_put(f->ds, "a/b", v2, 1, &err), &err, LY_E_INVALID, "[A-Za-z0-9._-]");
	expect(ly_datastore_ca_state_put(f->ds, "", v2, 1, &err), &err, LY_E_INVALID, "empty");
	expect(ly_datastore_ca_state_get(f->ds, "x'; DROP TABLE ca_state; --", &buf, &err), &err, LY_E_INVALID,
	    "[A-Za-z0-9._-]");
	reopen(f);
	assert_int_equal(ly_datastore_ca_state_get(f->ds, "x509-ca.current", &buf, &err), LY_OK);
	assert_int_equal(buf.data[0], 0x42);
	ly_buf_free_secret(&buf);
}

/* ---- durability ---- */

static void
test_kill9_after_ack(void **state)
{
	struct fixture *f = *state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Child: its own connection, one write, acknowledge, then wait to be killed. */
		struct ly_datastore *ds = NULL;
		struct ly_entry *e = entry_of(TD "/durable", AGENT1, "unix:uid:4242", NULL);
		if (ly_entry_set_string(&e->entry_id, "durable-1", NULL) != LY_OK ||
		    f->be->open_store(f, &ds, NULL) != LY_OK || ly_datastore_entry_create(ds, e, NULL) != LY_OK)
			_exit(1);
		if (write(p[1], "k", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	char c = 0;
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	assert_int_equal(kill(pid, SIGKILL), 0);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	if (f->be->crash_server != NULL)
		f->be->crash_server(f);
	reopen(f);
	struct ly_entry *got = NULL;
	assert_int_equal(ly_datastore_entry_get(f->ds, "durable-1", &got, NULL), LY_OK);
	assert_string_equal(got->selectors[0].value, "uid:4242");
	ly_entry_free(got);
	assert_int_equal(revision(f), 1);
}

/* The contract cases, for a back end's main(): every one with the back end's fixture. */
/* ---- the change hook ---- */

struct heard {
	size_t n;
	enum ly_datastore_change_kind kind[8];
	int64_t revision[8];
	char id[8][LY_SPIFFE_ID_MAX + 1];
};

static void
hear(void *arg, const struct ly_datastore_change *c)
{
	struct heard *h = arg;
	assert_true(h->n < 8);
	h->kind[h->n] = c->kind;
	h->revision[h->n] = c->revision;
	(void)snprintf(h->id[h->n], sizeof(h->id[0]), "%s", c->entry_id != NULL ? c->entry_id : c->agent_id);
	h->n++;
}

/*
 * Committed writes reach every registered callback with what changed and
 * the store's revision; refused writes and reads do not; a removed
 * callback hears nothing more.
 */
static void
test_change_hook(void **state)
{
	struct fixture *f = *state;
	struct heard h, other;
	struct ly_error err;
	struct ly_entry *e, *got = NULL;

	memset(&h, 0, sizeof(h));
	memset(&other, 0, sizeof(other));
	assert_int_equal(ly_datastore_on_change(f->ds, hear, &h, &err), LY_OK);
	assert_int_equal(ly_datastore_on_change(f->ds, hear, &other, &err), LY_OK);
	e = entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL);
	assert_int_equal(ly_datastore_entry_create(f->ds, e, &err), LY_OK);
	assert_int_equal(h.n, 1);
	assert_int_equal(h.kind[0], LY_DATASTORE_ENTRY_CREATED);
	assert_int_equal(h.revision[0], revision(f));
	assert_string_equal(h.id[0], e->entry_id);
	assert_int_equal(other.n, 1);
	/* A refused write (a duplicate) and a read: nothing. */
	struct ly_entry *dup = entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL);
	assert_int_equal(ly_datastore_entry_create(f->ds, dup, &err), LY_E_INVALID);
	ly_entry_free(dup);
	assert_int_equal(ly_datastore_entry_get(f->ds, e->entry_id, &got, &err), LY_OK);
	ly_entry_free(got);
	assert_int_equal(h.n, 1);
	ly_datastore_off_change(f->ds, hear, &other);
	e->x509_svid_ttl = 600;
	assert_int_equal(ly_datastore_entry_update(f->ds, e, &err), LY_OK);
	assert_int_equal(h.kind[1], LY_DATASTORE_ENTRY_UPDATED);
	assert_int_equal(h.revision[1], revision(f));
	assert_true(h.revision[1] > h.revision[0]);
	assert_int_equal(ly_datastore_entry_delete(f->ds, e->entry_id, NULL, &err), LY_OK);
	assert_int_equal(h.kind[2], LY_DATASTORE_ENTRY_DELETED);
	assert_int_equal(h.revision[2], revision(f));
	assert_string_equal(h.id[2], e->entry_id);
	assert_int_equal(other.n, 1);
	ly_entry_free(e);
	/* Agents: a ban and an eviction; lifting a ban is not a removal. */
	struct ly_ds_agent *a = agent_of(TOKEN_AGENT1, "0a", "k8s_psat:cluster:c1", NULL);
	assert_int_equal(ly_datastore_agent_upsert(f->ds, a, &err), LY_OK);
	ly_ds_agent_free(a);
	assert_int_equal(h.n, 3);
	assert_int_equal(ly_datastore_agent_set_banned(f->ds, TOKEN_AGENT1, true, &err), LY_OK);
	assert_int_equal(h.kind[3], LY_DATASTORE_AGENT_BANNED);
	assert_string_equal(h.id[3], TOKEN_AGENT1);
	assert_int_equal(ly_datastore_agent_set_banned(f->ds, TOKEN_AGENT1, false, &err), LY_OK);
	assert_int_equal(h.n, 4);
	assert_int_equal(ly_datastore_agent_delete(f->ds, TOKEN_AGENT1, &err), LY_OK);
	assert_int_equal(h.kind[4], LY_DATASTORE_AGENT_EVICTED);
	assert_int_equal(h.revision[4], revision(f));
	assert_int_equal(ly_datastore_agent_delete(f->ds, TOKEN_AGENT1, &err), LY_E_NOT_FOUND);
	assert_int_equal(h.n, 5);
	/* The feed another server would use; and the cap on registrations. */
	struct ly_datastore_change c = { .kind = LY_DATASTORE_BUNDLE_CHANGED, .revision = 77, .agent_id = "x" };
	ly_datastore_changed(f->ds, &c);
	assert_int_equal(h.kind[5], LY_DATASTORE_BUNDLE_CHANGED);
	assert_int_equal(h.revision[5], 77);
	for (size_t i = 1; i < LY_DATASTORE_HOOKS_MAX; i++)
		assert_int_equal(ly_datastore_on_change(f->ds, hear, &other, &err), LY_OK);
	assert_int_equal(ly_datastore_on_change(f->ds, hear, &other, &err), LY_E_LIMIT);
	for (size_t i = 1; i < LY_DATASTORE_HOOKS_MAX; i++)
		ly_datastore_off_change(f->ds, hear, &other);
	ly_datastore_off_change(f->ds, hear, &h);
	ly_datastore_changed(f->ds, &c);
	assert_int_equal(h.n, 6);
	assert_int_equal(other.n, 1);
}

#define DS_CONTRACT_TESTS(setup, teardown)                                                     \
	cmocka_unit_test_setup_teardown(test_schema_version_recorded, setup, teardown),          \
	    cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),         \
	    cmocka_unit_test_setup_teardown(test_entry_crud, setup, teardown),                   \
	    cmocka_unit_test_setup_teardown(test_duplicates_refused, setup, teardown),           \
	    cmocka_unit_test_setup_teardown(test_revision_survives_reopen, setup, teardown),     \
	    cmocka_unit_test_setup_teardown(test_list_filters, setup, teardown),                 \
	    cmocka_unit_test_setup_teardown(test_changes_since, setup, teardown),                \
	    cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),                       \
	    cmocka_unit_test_setup_teardown(test_token_single_use_across_handles, setup, teardown), \
	    cmocka_unit_test_setup_teardown(test_token_retry_same_key, setup, teardown),         \
	    cmocka_unit_test_setup_teardown(test_token_uses_migration, setup, teardown),         \
	    cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),           \
	    cmocka_unit_test_setup_teardown(test_agents, setup, teardown),                       \
	    cmocka_unit_test_setup_teardown(test_ca_state, setup, teardown),                     \
	    cmocka_unit_test_setup_teardown(test_kill9_after_ack, setup, teardown),              \
	    cmocka_unit_test_setup_teardown(test_change_hook, setup, teardown)

#endif /* LANYARD_TESTS_DATASTORE_CONTRACT_H */
