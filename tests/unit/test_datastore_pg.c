/*
 * test_datastore_pg.c: the PostgreSQL datastore against a real PostgreSQL
 * started by the test in a temp directory (testutil_pg.h), a fresh
 * database per test. The contract cases every back end runs (entry CRUD,
 * duplicates refused with nothing stored, the revision monotonic across
 * reopen, the change log with deletions and resync, join tokens single use
 * / expiry / stored as SHA-256 only, agents ban and evict, CA state with
 * binary bytes, a newer schema refused, two processes writing at once
 * serialized on the revision, an acknowledged write surviving kill -9) are
 * in datastore_contract.h; here are PostgreSQL's side of them (raw reads
 * through a second libpq connection, the token's bytes absent from the
 * cluster's files, PostgreSQL itself crashing after the kill -9) and what
 * only a server back end has: a malformed or wrong connection string
 * refused without echoing its password, the statement timeout, and a lost
 * connection (LY_E_IO) recovered after PostgreSQL restarts; and several
 * servers on one database (schema 2): the shared bundle published and read
 * through two handles, and the triggers' NOTIFY payloads.
 *
 * No PostgreSQL binaries is a failure: CI installs them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/caps.h"
#include "lib/entry.h"
#include "server/datastore.h"
#include "testutil_pg.h"

static struct tpg g_pg;
static int g_db_counter;

struct fixture {
	struct ly_datastore *ds;
	const struct ds_backend *be;
	char db[32];
	char conninfo[256];
	PGconn *raw; /* a second, raw connection to the test's database */
};

#include "datastore_contract.h"
#include "datastore_fed_contract.h"
#include "datastore_audit_contract.h"

/* ---- the back end's side of the contract ---- */

static ly_status
pg_open_store(struct fixture *f, struct ly_datastore **out, struct ly_error *err)
{
	return ly_datastore_pg_open(f->conninfo, out, err);
}

static void
open_ds(struct fixture *f)
{
	struct ly_error err;
	ly_error_clear(&err);
	if (ly_datastore_pg_open(f->conninfo, &f->ds, &err) != LY_OK)
		fail_msg("open %s: %s", f->db, err.msg);
}

static PGconn *
raw(struct fixture *f)
{
	if (f->raw != NULL && PQstatus(f->raw) == CONNECTION_OK)
		return f->raw;
	if (f->raw != NULL)
		PQfinish(f->raw);
	f->raw = PQconnectdb(f->conninfo);
	if (PQstatus(f->raw) != CONNECTION_OK)
		fail_msg("raw connection: %s", PQerrorMessage(f->raw));
	return f->raw;
}

static long long
pg_query_int(struct fixture *f, const char *sql)
{
	return tpg_query_int(raw(f), sql);
}

static void
pg_exec(struct fixture *f, const char *sql)
{
	assert_int_equal(tpg_exec(raw(f), sql), 0);
}

static void
pg_check_session(struct fixture *f)
{
	/* The session names itself (fallback_application_name). */
	assert_int_equal(rows_in(f, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
	                            "'lanyard-server' AND datname = current_database()"),
	    1);
}

static const char *
pg_named_in_errors(struct fixture *f)
{
	(void)f;
	return NULL;
}

/* True when some file under `dir` holds `needle`. */
static bool
tree_contains(const char *dir, const char *needle)
{
	DIR *d = opendir(dir);
	bool found = false;
	if (d == NULL)
		return false;
	struct dirent *de;
	while (!found && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char p[1024];
		int pn = snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		struct stat st;
		if (pn < 0 || (size_t)pn >= sizeof(p) || lstat(p, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			found = tree_contains(p, needle);
			continue;
		}
		if (!S_ISREG(st.st_mode) || st.st_size == 0)
			continue;
		FILE *fp = fopen(p, "rb");
		if (fp == NULL)
			continue;
		char *buf = malloc((size_t)st.st_size);
		assert_non_null(buf);
		size_t n = fread(buf, 1, (size_t)st.st_size, fp);
		fclose(fp);
		found = memmem(buf, n, needle, strlen(needle)) != NULL;
		free(buf);
	}
	closedir(d);
	return found;
}

/* The row holds SHA-256(token), and no file of the cluster the token. */
static void
pg_check_token_digest_only(struct fixture *f, const char *token, const char *used)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM join_tokens WHERE token_sha256 = sha256('%s'::bytea)",
	    token);
	assert_int_equal(rows_in(f, sql), 1);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM join_tokens WHERE length(token_sha256) <> 32"), 0);
	assert_int_equal(tpg_exec(tpg_admin(&g_pg), "CHECKPOINT"), 0);
	assert_false(tree_contains(g_pg.data, token));
	assert_false(tree_contains(g_pg.data, used));
	/* The search works: the SPIFFE ID granted is in the files. */
	assert_true(tree_contains(g_pg.data, "/lanyard/agent/join_token/a2"));
}

/* And PostgreSQL itself crashes (immediate stop: no checkpoint) and recovers. */
static void
pg_crash_server(struct fixture *f)
{
	(void)f;
	assert_int_equal(tpg_stop(&g_pg), 0);
	assert_int_equal(tpg_start(&g_pg), 0);
}

static const struct ds_backend pg_backend = {
	.name = "postgres",
	.schema = LY_DATASTORE_PG_SCHEMA,
	.open = open_ds,
	.open_store = pg_open_store,
	.query_int = pg_query_int,
	.exec = pg_exec,
	.check_session = pg_check_session,
	.named_in_errors = pg_named_in_errors,
	.check_token_digest_only = pg_check_token_digest_only,
	.crash_server = pg_crash_server,
};

static int
group_setup(void **state)
{
	(void)state;
	if (tpg_create(&g_pg) != 0) {
		fprintf(stderr, "cannot start PostgreSQL: the PostgreSQL tests fail\n");
		return -1;
	}
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	tpg_destroy(&g_pg);
	return 0;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->be = &pg_backend;
	if (!g_pg.running)
		assert_int_equal(tpg_start(&g_pg), 0);
	snprintf(f->db, sizeof(f->db), "t%d", ++g_db_counter);
	char sql[96];
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->db);
	assert_int_equal(tpg_exec(tpg_admin(&g_pg), sql), 0);
	tpg_conninfo(&g_pg, f->db, f->conninfo, sizeof(f->conninfo));
	open_ds(f);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	ly_datastore_close(f->ds);
	if (f->raw != NULL)
		PQfinish(f->raw);
	if (!g_pg.running)
		assert_int_equal(tpg_start(&g_pg), 0);
	char sql[96];
	snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", f->db);
	assert_int_equal(tpg_exec(tpg_admin(&g_pg), sql), 0);
	free(f);
	return 0;
}

/* ---- opening ---- */

static void
test_bad_conninfo_refused(void **state)
{
	(void)state;
	struct ly_datastore *ds = NULL;
	struct ly_error err;
	expect(ly_datastore_pg_open("", &ds, &err), &err, LY_E_INVALID, "connection string is empty");
	expect(ly_datastore_pg_open(NULL, &ds, &err), &err, LY_E_INVALID, "connection string is empty");
	/* Malformed: refused before connecting, and the text (a password) is not echoed. */
	const char *bad[] = {
		"host=/tmp password=Sup3rSecret dbname",       /* missing "=" */
		"password=Sup3rSecret nosuchoption=1",          /* unknown keyword */
		"host=/tmp password='Sup3rSecret",              /* unterminated quote */
		"postgresql://u:Sup3rSecret@host:notaport/db",  /* bad URI port */
		"Sup3rSecret",                                  /* not key=value */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ly_error_clear(&err);
		ly_status rc = ly_datastore_pg_open(bad[i], &ds, &err);
		if (rc == LY_E_IO && strstr(err.msg, "Sup3rSecret") == NULL)
			continue; /* libpq may accept the URI's form and fail at connect */
		expect(rc, &err, LY_E_INVALID, "connection string is malformed");
		assert_null(strstr(err.msg, "Sup3rSecret"));
		assert_null(ds);
	}
	/* Well-formed, nothing listening: LY_E_IO with libpq's reason, no password. */
	expect(ly_datastore_pg_open("host=/nonexistent-lanyard-dir port=5 user=x password=Sup3rSecret dbname=y",
	           &ds, &err),
	    &err, LY_E_IO, "cannot connect to PostgreSQL");
	assert_null(strstr(err.msg, "Sup3rSecret"));
	assert_null(ds);
	/* A database that does not exist. */
	char ci[256];
	tpg_conninfo(&g_pg, "no_such_db", ci, sizeof(ci));
	expect(ly_datastore_pg_open(ci, &ds, &err), &err, LY_E_IO, "no_such_db");
	assert_null(ds);
	/* Over the cap. */
	char *big = malloc(LY_CONFIG_VALUE_MAX + 10);
	assert_non_null(big);
	memset(big, 'a', LY_CONFIG_VALUE_MAX + 9);
	big[LY_CONFIG_VALUE_MAX + 9] = '\0';
	expect(ly_datastore_pg_open(big, &ds, &err), &err, LY_E_LIMIT, "over 4096 bytes");
	free(big);
}

/* ---- failures ---- */

static void
test_connection_lost_and_recovered(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	char *a = create(f, entry_of(TD "/before", AGENT1, "unix:uid:1", NULL));
	assert_int_equal(tpg_stop(&g_pg), 0);

	/* The operation in flight fails: LY_E_IO, "connection lost", nothing half-done. */
	struct ly_entry *e = entry_of(TD "/during", AGENT1, "unix:uid:2", NULL);
	expect(ly_datastore_entry_create(f->ds, e, &err), &err, LY_E_IO, "datastore: connection lost");
	assert_null(e->entry_id);
	/* While PostgreSQL is away every operation fails the same way (each tries to reconnect). */
	int64_t r = 0;
	expect(ly_datastore_revision(f->ds, &r, &err), &err, LY_E_IO, "connection lost");
	struct ly_entry_list l = LY_ENTRY_LIST_INIT;
	expect(ly_datastore_entry_list(f->ds, NULL, &l, &err), &err, LY_E_IO, "connection lost");
	assert_int_equal(l.n, 0);
	char *id = NULL;
	expect(ly_datastore_token_consume(f->ds, "tok", 1, &id, &err), &err, LY_E_IO, "connection lost");

	/* Back: the next operation reconnects by itself. */
	assert_int_equal(tpg_start(&g_pg), 0);
	assert_int_equal(ly_datastore_entry_create(f->ds, e, &err), LY_OK);
	assert_int_equal(e->revision, 2);
	assert_int_equal(count_entries(f), 2);
	/* The session settings came back with it. */
	struct ly_entry *got = NULL;
	assert_int_equal(ly_datastore_entry_get(f->ds, a, &got, NULL), LY_OK);
	ly_entry_free(got);

	/* Lost between operations (the server restarted while idle): the next one fails, the one after works. */
	assert_int_equal(tpg_stop(&g_pg), 0);
	assert_int_equal(tpg_start(&g_pg), 0);
	ly_status rc = ly_datastore_revision(f->ds, &r, &err);
	if (rc != LY_OK)
		expect(rc, &err, LY_E_IO, "connection lost");
	assert_int_equal(ly_datastore_revision(f->ds, &r, &err), LY_OK);
	assert_int_equal(r, 2);
	ly_entry_free(e);
	free(a);
}

/* A lock held elsewhere does not hang the store: the statement times out (LY_E_IO). */
static void
test_statement_timeout(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	assert_int_equal(tpg_exec(raw(f), "BEGIN"), 0);
	assert_int_equal(tpg_exec(raw(f), "SELECT value FROM meta WHERE name = 'revision' FOR UPDATE"), 0);
	struct ly_entry *e = entry_of(TD "/locked", AGENT1, "unix:uid:2", NULL);
	time_t t0 = time(NULL);
	expect(ly_datastore_entry_create(f->ds, e, &err), &err, LY_E_IO, "statement timeout");
	time_t dt = time(NULL) - t0;
	assert_true(dt >= 4 && dt <= 30);
	assert_int_equal(tpg_exec(raw(f), "ROLLBACK"), 0);
	/* The handle is usable again at once. */
	assert_int_equal(ly_datastore_entry_create(f->ds, e, &err), LY_OK);
	assert_int_equal(e->revision, 1);
	ly_entry_free(e);
}

/* ---- several servers on one database (schema 2) ---- */

static void
add_row(struct ly_shared_authorities *a, const char *server, bool jwt, const char *kid, int64_t not_after)
{
	const uint8_t der[] = { 0x30, 0x03, 0x02, 0x01, (uint8_t)(not_after & 0x7f) };
	assert_int_equal(ly_shared_authorities_add(a, server, jwt, kid, der, sizeof(der), not_after, NULL), LY_OK);
}

/*
 * Two servers publish into one bundle: each publish replaces that server's
 * rows only, prunes every server's expired rows, raises the sequence above
 * both the stored one and the publisher's own; a read returns the valid
 * rows in order with the sequence; a row of another server refused; the
 * same through a second handle (another server's connection).
 */
static void
test_shared_bundle(void **state)
{
	struct fixture *f = *state;
	struct ly_shared_authorities a = LY_SHARED_AUTHORITIES_INIT, b = LY_SHARED_AUTHORITIES_INIT;
	struct ly_shared_authorities got = LY_SHARED_AUTHORITIES_INIT;
	struct ly_datastore *other = NULL;
	struct ly_error err;
	uint64_t seq = 0;
	int64_t rev0 = 0, rev1 = 0;

	assert_true(ly_datastore_shared(f->ds));
	assert_int_equal(ly_datastore_revision(f->ds, &rev0, NULL), LY_OK);
	add_row(&a, "server-a", false, "ra1", 5000);
	add_row(&a, "server-a", true, "ka1", 3000);
	assert_int_equal(ly_datastore_bundle_publish(f->ds, "server-a", &a, 1000, 7, &seq, &err), LY_OK);
	assert_int_equal(seq, 8); /* above the publisher's own sequence */
	assert_int_equal(ly_datastore_revision(f->ds, &rev1, NULL), LY_OK);
	assert_int_equal(rev1, rev0 + 1);

	assert_int_equal(ly_datastore_pg_open(f->conninfo, &other, &err), LY_OK);
	add_row(&b, "server-b", false, "rb1", 1500);
	assert_int_equal(ly_datastore_bundle_publish(other, "server-b", &b, 1000, 2, &seq, &err), LY_OK);
	assert_int_equal(seq, 9); /* above the stored one */

	assert_int_equal(ly_datastore_bundle_read(f->ds, 1000, &got, &err), LY_OK);
	assert_int_equal(got.sequence, 9);
	assert_int_equal(got.n, 3);
	/* Ordered by kind (X.509 first), server, key ID. */
	assert_false(got.items[0].jwt);
	assert_string_equal(got.items[0].server_id, "server-a");
	assert_string_equal(got.items[1].server_id, "server-b");
	assert_true(got.items[2].jwt);
	assert_string_equal(got.items[2].kid, "ka1");
	assert_int_equal(got.items[2].not_after, 3000);
	assert_int_equal(got.items[0].der.len, 5);

	/* Read at 1500: server-b's root has expired (not_after <= now): not returned, though still stored. */
	assert_int_equal(ly_datastore_bundle_read(other, 1500, &got, &err), LY_OK);
	assert_int_equal(got.n, 2);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM bundle_authorities"), 3);

	/* A's next publish replaces A's rows and prunes B's expired one. */
	ly_shared_authorities_cleanup(&a);
	add_row(&a, "server-a", false, "ra2", 6000);
	assert_int_equal(ly_datastore_bundle_publish(f->ds, "server-a", &a, 1600, 0, &seq, &err), LY_OK);
	assert_int_equal(seq, 10);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM bundle_authorities"), 1);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM bundle_authorities WHERE kid = 'ra2'"), 1);

	/* A row of another server in a publish: refused, nothing changed. */
	add_row(&a, "server-b", false, "rb9", 9000);
	expect(ly_datastore_bundle_publish(f->ds, "server-a", &a, 1600, 0, &seq, &err), &err, LY_E_INTERNAL,
	    "another server");
	assert_int_equal(rows_in(f, "SELECT count(*) FROM bundle_authorities"), 1);
	/* No CA key, no CA state: the table holds public authorities only. */
	assert_int_equal(rows_in(f, "SELECT count(*) FROM ca_state"), 0);

	ly_datastore_close(other);
	ly_shared_authorities_cleanup(&a);
	ly_shared_authorities_cleanup(&b);
	ly_shared_authorities_cleanup(&got);
}

/* The triggers NOTIFY every committed entry change, eviction, ban and bundle publish, whoever wrote. */
static void
test_change_notifications(void **state)
{
	struct fixture *f = *state;
	struct ly_shared_authorities a = LY_SHARED_AUTHORITIES_INIT;
	uint64_t seq = 0;
	PGresult *r = PQexec(raw(f), "LISTEN lanyard_changes");
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);

	struct ly_entry *e = entry_of(TD "/n1", AGENT1, "unix:uid:1", NULL);
	assert_int_equal(ly_datastore_entry_create(f->ds, e, NULL), LY_OK);
	int64_t rev = e->revision;
	assert_int_equal(ly_datastore_entry_delete(f->ds, e->entry_id, NULL, NULL), LY_OK);
	struct ly_ds_agent *ag = agent_of(AGENT1, "ab", NULL);
	assert_int_equal(ly_datastore_agent_upsert(f->ds, ag, NULL), LY_OK);
	assert_int_equal(ly_datastore_agent_set_banned(f->ds, AGENT1, true, NULL), LY_OK);
	assert_int_equal(ly_datastore_agent_set_banned(f->ds, AGENT1, true, NULL), LY_OK); /* already banned: nothing */
	assert_int_equal(ly_datastore_agent_delete(f->ds, AGENT1, NULL), LY_OK);
	add_row(&a, "server-a", false, "ra1", INT32_MAX);
	assert_int_equal(ly_datastore_bundle_publish(f->ds, "server-a", &a, 1000, 0, &seq, NULL), LY_OK);
	/* A refused write (an unknown token) notifies nothing: it rolled back. */
	ly_status rc = ly_datastore_token_consume(f->ds, "nosuchtoken", 1, &(char *){ NULL }, NULL);
	assert_int_equal(rc, LY_E_NOT_FOUND);

	char want[6][128];
	snprintf(want[0], sizeof(want[0]), "e %lld", (long long)rev);
	snprintf(want[1], sizeof(want[1]), "e %lld", (long long)rev + 1);
	snprintf(want[2], sizeof(want[2]), "a banned %s", AGENT1);
	snprintf(want[3], sizeof(want[3]), "a evicted %s", AGENT1);
	snprintf(want[4], sizeof(want[4]), "b");
	size_t n = 0;
	for (int tries = 0; tries < 100 && n < 5; tries++) {
		assert_int_equal(PQconsumeInput(raw(f)), 1);
		PGnotify *pn;
		while ((pn = PQnotifies(raw(f))) != NULL) {
			assert_string_equal(pn->relname, "lanyard_changes");
			if (n < 5)
				assert_string_equal(pn->extra, want[n]);
			n++;
			PQfreemem(pn);
		}
		if (n < 5)
			usleep(10000);
	}
	assert_int_equal(n, 5);
	ly_entry_free(e);
	ly_ds_agent_free(ag);
	ly_shared_authorities_cleanup(&a);
}

/*
 * A federated bundle set or deleted is notified to the other servers as an
 * entries change at its revision ("e <revision>"): their refresh re-reads
 * the federated bundles (fed_revision moved). Nothing for a refused put.
 */
static void
test_fed_notifications(void **state)
{
	struct fixture *f = *state;
	int64_t r1 = 0, r2 = 0;
	PGresult *r = PQexec(raw(f), "LISTEN lanyard_changes");
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);

	fed_init(f);
	struct ly_bundle *own = fed_bundle_of(OWN_TD, 1), *b = fed_bundle_of("b.test", 1);
	assert_int_equal(ly_datastore_fed_bundle_put(f->ds, own, NULL, NULL), LY_E_INVALID);
	assert_int_equal(ly_datastore_fed_bundle_put(f->ds, b, &r1, NULL), LY_OK);
	assert_int_equal(ly_datastore_fed_bundle_delete(f->ds, "b.test", LY_FED_DELETE_RESTRICT, &r2, NULL), LY_OK);
	ly_bundle_free(own);
	ly_bundle_free(b);

	char want[2][64];
	snprintf(want[0], sizeof(want[0]), "e %lld", (long long)r1);
	snprintf(want[1], sizeof(want[1]), "e %lld", (long long)r2);
	size_t n = 0;
	for (int tries = 0; tries < 100 && n < 2; tries++) {
		assert_int_equal(PQconsumeInput(raw(f)), 1);
		PGnotify *pn;
		while ((pn = PQnotifies(raw(f))) != NULL) {
			if (n < 2)
				assert_string_equal(pn->extra, want[n]);
			n++;
			PQfreemem(pn);
		}
		if (n < 2)
			usleep(10000);
	}
	assert_int_equal(n, 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		DS_CONTRACT_TESTS(setup, teardown),
		DS_FED_CONTRACT_TESTS(setup, teardown),
		DS_AUDIT_CONTRACT_TESTS(setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_conninfo_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_lost_and_recovered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_statement_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_bundle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_change_notifications, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fed_notifications, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
