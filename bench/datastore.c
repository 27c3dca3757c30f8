/*
 * datastore.c: registration entry writes and reads through the datastore
 * (server/datastore.h), SQLite or PostgreSQL, as the server does them: one
 * ly_datastore_entry_create per entry, each its own durable transaction
 * (SQLite WAL synchronous=FULL; PostgreSQL with its defaults: fsync,
 * synchronous_commit on).
 *
 * Creates N workload entries (distinct selectors, one DNS name), then lists
 * them all, reads the change log from 0 and gets each entry by ID.
 *
 * Output, one line (bench/run-datastore.sh reads it):
 *   backend=<name> n=<N> create_s=<wall> create_per_s=<rate> create_p50_us=<> create_p99_us=<>
 *   list_ms=<> changes_ms=<> get_p50_us=<>
 *
 * Usage: bench_datastore sqlite PATH [N]
 *        bench_datastore postgres CONNINFO [N]     (a fresh, empty database)
 *        bench_datastore fsync PATH [N]
 *
 * With LANYARD_BENCH_AUDIT=1 in the environment each create carries the
 * admin API's audit row (server/datastore_audit.h: armed around the call,
 * inserted in the create's own transaction), as lanyard-server does.
 *
 * `fsync` is the floor of a durable write on the same disk, measured in the
 * same run: N times a 4 KiB pwrite then fdatasync on PATH (created 0600,
 * removed after); it prints the same keys, the read ones as 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fcntl.h>
#include <unistd.h>

#include "lib/entry.h"
#include "server/datastore.h"
#include "server/datastore_audit.h"

static double
now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_double);
	size_t i = (size_t)(p * (double)(n - 1));
	return v[i];
}

/* The durable-write floor: pwrite + fdatasync of 4 KiB, n times. */
static int
fsync_floor(const char *path, size_t n)
{
	static char block[4096];
	double *lat = calloc(n, sizeof(*lat));
	int fd = -1, rc = 1;

	if (lat == NULL)
		goto out;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		perror(path);
		goto out;
	}
	memset(block, 'x', sizeof(block));
	double t0 = now_us();
	for (size_t i = 0; i < n; i++) {
		double a = now_us();
		if (pwrite(fd, block, sizeof(block), (off_t)(i % 16) * (off_t)sizeof(block)) != (ssize_t)sizeof(block) ||
		    fdatasync(fd) != 0) {
			perror(path);
			goto out;
		}
		lat[i] = now_us() - a;
	}
	double total_s = (now_us() - t0) / 1e6;
	double p50 = pct(lat, n, 0.50), p99 = pct(lat, n, 0.99);
	printf("backend=fsync n=%zu create_s=%.3f create_per_s=%.0f create_p50_us=%.0f create_p99_us=%.0f "
	       "list_ms=0 changes_ms=0 get_p50_us=0\n",
	    n, total_s, (double)n / total_s, p50, p99);
	rc = 0;
out:
	if (fd >= 0) {
		(void)close(fd);
		(void)unlink(path);
	}
	free(lat);
	return rc;
}

static int
fail(const char *what, const struct ly_error *err)
{
	fprintf(stderr, "bench_datastore: %s: %s\n", what, err->msg);
	return 1;
}

int
main(int argc, char **argv)
{
	struct ly_datastore *ds = NULL;
	struct ly_error err;
	size_t n = 1000;
	int rc = 1;

	ly_error_clear(&err);
	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: bench_datastore sqlite PATH [N] | postgres CONNINFO [N] | fsync PATH [N]\n");
		return 2;
	}
	if (argc == 4)
		n = (size_t)strtoul(argv[3], NULL, 10);
	if (n == 0 || n > 1000000)
		return 2;
	if (strcmp(argv[1], "fsync") == 0)
		return fsync_floor(argv[2], n);
	ly_status st;
	if (strcmp(argv[1], "sqlite") == 0)
		st = ly_datastore_sqlite_open(argv[2], &ds, &err);
	else if (strcmp(argv[1], "postgres") == 0)
		st = ly_datastore_pg_open(argv[2], &ds, &err);
	else
		return 2;
	if (st != LY_OK)
		return fail("open", &err);

	double *lat = calloc(n, sizeof(*lat));
	char **ids = calloc(n, sizeof(*ids));
	if (lat == NULL || ids == NULL)
		goto out;
	const char *audit_env = getenv("LANYARD_BENCH_AUDIT");
	bool audited = audit_env != NULL && strcmp(audit_env, "1") == 0;
	struct ly_ds_audit_txn txn;
	memset(&txn, 0, sizeof(txn));
	txn.rec = (struct ly_audit_record){ .caller = "uid:1000", .action = "entry.create", .result = "ok" };
	txn.server = "bench";
	double t0 = now_us();
	for (size_t i = 0; i < n; i++) {
		struct ly_entry *e = NULL;
		char sel[64], id[64];
		(void)snprintf(sel, sizeof(sel), "unix:uid:%zu", 10000 + i);
		(void)snprintf(id, sizeof(id), "spiffe://example.org/bench/w%zu", i);
		if (ly_entry_new(&e, &err) != LY_OK || ly_entry_set_string(&e->spiffe_id, id, &err) != LY_OK ||
		    ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/agent/bench", &err) != LY_OK ||
		    ly_entry_add_selector(e, sel, &err) != LY_OK ||
		    ly_entry_add_dns_name(e, "w.example.org", &err) != LY_OK) {
			ly_entry_free(e);
			rc = fail("entry", &err);
			goto out;
		}
		double a = now_us();
		txn.rec.spiffe_id = e->spiffe_id;
		txn.entry_id_ref = &e->entry_id;
		txn.time = (int64_t)time(NULL);
		if (audited)
			ly_datastore_audit_arm(ds, &txn);
		st = ly_datastore_entry_create(ds, e, &err);
		if (audited)
			ly_datastore_audit_disarm(ds, &txn);
		if (st != LY_OK || (audited && !txn.stored)) {
			ly_entry_free(e);
			rc = fail("create", &err);
			goto out;
		}
		lat[i] = now_us() - a;
		ids[i] = strdup(e->entry_id);
		ly_entry_free(e);
		if (ids[i] == NULL)
			goto out;
	}
	double create_s = (now_us() - t0) / 1e6;
	double p50 = pct(lat, n, 0.50), p99 = pct(lat, n, 0.99);

	struct ly_entry_list l = LY_ENTRY_LIST_INIT;
	double a = now_us();
	if (ly_datastore_entry_list(ds, NULL, &l, &err) != LY_OK) {
		rc = fail("list", &err);
		goto out;
	}
	double list_ms = (now_us() - a) / 1e3;
	size_t listed = l.n;
	ly_entry_list_cleanup(&l);

	struct ly_entry_changes ch = LY_ENTRY_CHANGES_INIT;
	a = now_us();
	if (ly_datastore_entry_changes_since(ds, 0, &ch, &err) != LY_OK) {
		rc = fail("changes", &err);
		goto out;
	}
	double changes_ms = (now_us() - a) / 1e3;
	size_t changed = ch.n;
	ly_entry_changes_cleanup(&ch);

	for (size_t i = 0; i < n; i++) {
		struct ly_entry *e = NULL;
		a = now_us();
		if (ly_datastore_entry_get(ds, ids[i], &e, &err) != LY_OK) {
			rc = fail("get", &err);
			goto out;
		}
		lat[i] = now_us() - a;
		ly_entry_free(e);
	}
	double get_p50 = pct(lat, n, 0.50);
	if (listed != n || changed != n) {
		fprintf(stderr, "bench_datastore: listed %zu, changes %zu, want %zu (not an empty store?)\n", listed,
		    changed, n);
		goto out;
	}
	printf("backend=%s n=%zu create_s=%.3f create_per_s=%.0f create_p50_us=%.0f create_p99_us=%.0f "
	       "list_ms=%.1f changes_ms=%.1f get_p50_us=%.0f\n",
	    argv[1], n, create_s, (double)n / create_s, p50, p99, list_ms, changes_ms, get_p50);
	rc = 0;
out:
	if (ids != NULL) {
		for (size_t i = 0; i < n; i++)
			free(ids[i]);
	}
	free(ids);
	free(lat);
	ly_datastore_close(ds);
	return rc;
}
