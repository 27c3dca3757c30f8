/*
 * test_datastore_sqlite.c: the SQLite datastore on a real file in a fresh
 * mkdtemp directory per test. The contract cases every back end runs
 * (entry CRUD, duplicates, the revision, the change log, join tokens,
 * agents, CA state, schema version, two writers at once, kill -9) are in
 * datastore_contract.h; here are SQLite's side of them (raw reads through
 * a second sqlite3 connection, the WAL journal, the token's bytes absent
 * from the database and WAL files) and what only a file back end has:
 * file mode 0600, a symlink refused, a corrupt file refused.
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
#include <unistd.h>

#include <sqlite3.h>

#include "lib/entry.h"
#include "server/datastore.h"

struct fixture {
	struct ly_datastore *ds;
	const struct ds_backend *be;
	char dir[64];
	char path[128];
};

#include "datastore_contract.h"
#include "datastore_fed_contract.h"
#include "datastore_audit_contract.h"

/* ---- the back end's side of the contract ---- */

static ly_status
sqlite_open_store(struct fixture *f, struct ly_datastore **out, struct ly_error *err)
{
	return ly_datastore_sqlite_open(f->path, out, err);
}

static void
open_ds(struct fixture *f)
{
	struct ly_error err;
	ly_error_clear(&err);
	if (ly_datastore_sqlite_open(f->path, &f->ds, &err) != LY_OK)
		fail_msg("open %s: %s", f->path, err.msg);
}

/* The first column of the first row of a query, through a second, raw connection. */
static long long
sqlite_query_int(struct fixture *f, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	long long n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static void
sqlite_exec(struct fixture *f, const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void
sqlite_check_session(struct fixture *f)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static const char *
sqlite_named_in_errors(struct fixture *f)
{
	return f->path;
}

/* The tokens' bytes are nowhere in the database or its WAL. */
static void
sqlite_check_token_digest_only(struct fixture *f, const char *token, const char *used)
{
	ly_datastore_close(f->ds);
	f->ds = NULL;
	const char *suffixes[] = { "", "-wal" };
	for (size_t s = 0; s < 2; s++) {
		char p[200];
		snprintf(p, sizeof(p), "%s%s", f->path, suffixes[s]);
		FILE *fp = fopen(p, "rb");
		if (fp == NULL)
			continue;
		static char content[4 * 1024 * 1024];
		size_t n = fread(content, 1, sizeof(content), fp);
		fclose(fp);
		assert_null(memmem(content, n, token, strlen(token)));
		assert_null(memmem(content, n, used, strlen(used)));
	}
	open_ds(f);
}

static const struct ds_backend sqlite_backend = {
	.name = "sqlite",
	.schema = LY_DATASTORE_SQLITE_SCHEMA,
	.open = open_ds,
	.open_store = sqlite_open_store,
	.query_int = sqlite_query_int,
	.exec = sqlite_exec,
	.check_session = sqlite_check_session,
	.named_in_errors = sqlite_named_in_errors,
	.check_token_digest_only = sqlite_check_token_digest_only,
	.crash_server = NULL,
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->be = &sqlite_backend;
	snprintf(f->dir, sizeof(f->dir), "/tmp/lanyard-ds-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/datastore.sqlite3", f->dir);
	open_ds(f);
	*state = f;
	return 0;
}

static void
rm(const char *dir, const char *name)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	(void)unlink(p);
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	ly_datastore_close(f->ds);
	const char *names[] = { "datastore.sqlite3", "datastore.sqlite3-wal", "datastore.sqlite3-shm", "other",
		"other-wal", "other-shm", "link", "garbage", "wide" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		rm(f->dir, names[i]);
	assert_int_equal(rmdir(f->dir), 0);
	free(f);
	return 0;
}

/* ---- files ---- */
static mode_t
mode_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void
test_file_mode(void **state)
{
	struct fixture *f = *state;
	/* Whatever the umask, the database and its WAL are 0600. */
	mode_t old = umask(0);
	reopen(f);
	assert_int_equal(mode_of(f->path), 0600);
	free(create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL)));
	char wal[160];
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	assert_int_equal(mode_of(wal), 0600);

	/* An existing file with group/other bits is tightened. */
	char other[160];
	snprintf(other, sizeof(other), "%s/other", f->dir);
	int fd = open(other, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(mode_of(other), 0644);
	struct ly_datastore *ds2 = NULL;
	assert_int_equal(ly_datastore_sqlite_open(other, &ds2, NULL), LY_OK);
	assert_int_equal(mode_of(other), 0600);
	ly_datastore_close(ds2);
	umask(old);
}

static void
test_refuses_symlink(void **state)
{
	struct fixture *f = *state;
	char link[160];
	snprintf(link, sizeof(link), "%s/link", f->dir);
	assert_int_equal(symlink(f->path, link), 0);
	struct ly_datastore *ds2 = NULL;
	struct ly_error err;
	expect(ly_datastore_sqlite_open(link, &ds2, &err), &err, LY_E_INVALID, "is a symbolic link");
	assert_null(ds2);
	expect(ly_datastore_sqlite_open("", &ds2, &err), &err, LY_E_INVALID, "path is empty");
}

static void
test_corrupt_file_refused(void **state)
{
	struct fixture *f = *state;
	char garbage[160];
	snprintf(garbage, sizeof(garbage), "%s/garbage", f->dir);
	int fd = open(garbage, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	char junk[4096];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 7 + 3);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	struct ly_datastore *ds2 = NULL;
	struct ly_error err;
	expect(ly_datastore_sqlite_open(garbage, &ds2, &err), &err, LY_E_IO, "file is not a database");
	assert_null(ds2);
	assert_non_null(strstr(err.msg, garbage));

	/* A real database whose pages after the first were overwritten. */
	for (int i = 0; i < 20; i++) {
		char sel[32];
		snprintf(sel, sizeof(sel), "unix:uid:%d", i);
		free(create(f, entry_of(TD "/web", AGENT1, sel, NULL)));
	}
	ly_datastore_close(f->ds); /* checkpoints the WAL into the file */
	f->ds = NULL;
	fd = open(f->path, O_WRONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(st.st_size > 8192);
	for (off_t o = 4096; o + (off_t)sizeof(junk) <= st.st_size; o += (off_t)sizeof(junk))
		assert_int_equal(pwrite(fd, junk, sizeof(junk), o), (ssize_t)sizeof(junk));
	close(fd);
	ly_error_clear(&err);
	ly_status rc = ly_datastore_sqlite_open(f->path, &f->ds, &err);
	if (rc == LY_OK) {
		/* Not noticed at open: the first read must refuse it. */
		struct ly_entry_list l = LY_ENTRY_LIST_INIT;
		rc = ly_datastore_entry_list(f->ds, NULL, &l, &err);
		ly_entry_list_cleanup(&l);
	}
	expect(rc, &err, LY_E_IO, "malformed");
	ly_datastore_close(f->ds);
	f->ds = NULL;
	unlink(f->path);
	open_ds(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		DS_CONTRACT_TESTS(setup, teardown),
		DS_FED_CONTRACT_TESTS(setup, teardown),
		DS_AUDIT_CONTRACT_TESTS(setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuses_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_file_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
