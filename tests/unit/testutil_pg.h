/*
 * testutil_pg.h: a real, throw-away PostgreSQL server for tests, started
 * in a mkdtemp directory: initdb (superuser "lanyard", trust
 * authentication), Unix socket only (listen_addresses = ''), the socket in
 * the same private directory, so no port can collide with anything.
 *
 * initdb and postgres refuse to run as root: when the test runs as root
 * (CI), they run as nobody:nogroup through `setpriv --reuid --regid
 * --clear-groups`, the directory chowned to them. Children are started with
 * fork + execv (valgrind does not trace them).
 *
 * The binaries come from $LANYARD_PG_BINDIR, else the newest
 * /usr/lib/postgresql/N/bin holding initdb. Missing binaries are a failure,
 * not a skip: CI installs them (scripts/install-deps.sh).
 *
 * Static inline: a test includes what it uses. Failures return -1 with a
 * line on stderr; tpg_destroy stops the server (immediate) and removes the
 * directory.
 */
#ifndef LANYARD_TESTUTIL_PG_H
#define LANYARD_TESTUTIL_PG_H

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#define TPG_PORT 5432
#define TPG_USER "lanyard"

struct tpg {
	char bindir[256];
	char dir[64];   /* the private directory (socket directory too) */
	char data[128]; /* its data directory */
	char log[128];
	bool as_nobody;
	uid_t uid;
	gid_t gid;
	bool running;
	PGconn *admin; /* to database "postgres" */
};

static inline int
tpg_find_bindir(struct tpg *pg)
{
	char p[300];
	const char *env = getenv("LANYARD_PG_BINDIR");
	if (env != NULL && env[0] != '\0') {
		snprintf(pg->bindir, sizeof(pg->bindir), "%s", env);
		snprintf(p, sizeof(p), "%s/initdb", pg->bindir);
		return access(p, X_OK) == 0 ? 0 : -1;
	}
	for (int v = 20; v >= 10; v--) {
		snprintf(pg->bindir, sizeof(pg->bindir), "/usr/lib/postgresql/%d/bin", v);
		snprintf(p, sizeof(p), "%s/initdb", pg->bindir);
		if (access(p, X_OK) == 0)
			return 0;
	}
	pg->bindir[0] = '\0';
	return -1;
}

/* Runs bindir/prog with args (NULL-terminated) as the PostgreSQL user; returns its exit status or -1. */
static inline int
tpg_run(struct tpg *pg, const char *prog, ...)
{
	const char *argv[32];
	char path[320], uid[32], gid[32];
	int n = 0;
	snprintf(path, sizeof(path), "%s/%s", pg->bindir, prog);
	if (pg->as_nobody) {
		snprintf(uid, sizeof(uid), "--reuid=%u", (unsigned)pg->uid);
		snprintf(gid, sizeof(gid), "--regid=%u", (unsigned)pg->gid);
		argv[n++] = "setpriv";
		argv[n++] = uid;
		argv[n++] = gid;
		argv[n++] = "--clear-groups";
	}
	argv[n++] = path;
	va_list ap;
	va_start(ap, prog);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && n < 31)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* Quiet children: their output goes to the log file or nowhere. */
		FILE *devnull = freopen("/dev/null", "w", stdout);
		(void)devnull;
		if (chdir(pg->dir) != 0)
			_exit(126);
		if (pg->as_nobody)
			execvp("setpriv", (char *const *)(uintptr_t)argv);
		else
			execv(path, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* "host=DIR port=5432 user=lanyard dbname=DB" into buf. */
static inline void
tpg_conninfo(const struct tpg *pg, const char *db, char *buf, size_t size)
{
	snprintf(buf, size, "host=%s port=%d user=%s dbname=%s", pg->dir, TPG_PORT, TPG_USER, db);
}

/* Starts the initialized server (pg_ctl start -w). */
static inline int
tpg_start(struct tpg *pg)
{
	if (tpg_run(pg, "pg_ctl", "-D", pg->data, "-l", pg->log, "-w", "-t", "60", "start", NULL) != 0) {
		fprintf(stderr, "testutil_pg: pg_ctl start failed (see %s)\n", pg->log);
		return -1;
	}
	pg->running = true;
	return 0;
}

/* Stops the server at once (no checkpoint, like a crash): `pg_ctl stop -m immediate`. */
static inline int
tpg_stop(struct tpg *pg)
{
	if (pg->admin != NULL)
		PQfinish(pg->admin); /* dead after the stop: reconnected by tpg_admin */
	pg->admin = NULL;
	if (!pg->running)
		return 0;
	if (tpg_run(pg, "pg_ctl", "-D", pg->data, "-m", "immediate", "-w", "stop", NULL) != 0) {
		fprintf(stderr, "testutil_pg: pg_ctl stop failed\n");
		return -1;
	}
	pg->running = false;
	return 0;
}

static inline void
tpg_no_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/* The admin connection (database "postgres"), reconnected if the server was restarted. */
static inline PGconn *
tpg_admin(struct tpg *pg)
{
	if (pg->admin != NULL && PQstatus(pg->admin) == CONNECTION_OK)
		return pg->admin;
	if (pg->admin != NULL)
		PQfinish(pg->admin);
	char ci[256];
	tpg_conninfo(pg, "postgres", ci, sizeof(ci));
	pg->admin = PQconnectdb(ci);
	PQsetNoticeProcessor(pg->admin, tpg_no_notice, NULL);
	if (PQstatus(pg->admin) != CONNECTION_OK)
		fprintf(stderr, "testutil_pg: admin connection: %s", PQerrorMessage(pg->admin));
	return pg->admin;
}

/* Runs one command on `conn`; 0 when it succeeded. */
static inline int
tpg_exec(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(r);
	int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
	if (rc != 0)
		fprintf(stderr, "testutil_pg: %s: %s", sql, PQerrorMessage(conn));
	PQclear(r);
	return rc;
}

/* The first column of the first row of a query as a number; LLONG_MIN on failure. */
static inline long long
tpg_query_int(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	long long v = -9223372036854775807LL - 1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
		v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		fprintf(stderr, "testutil_pg: %s: %s", sql, PQerrorMessage(conn));
	PQclear(r);
	return v;
}

static inline void
tpg_rmtree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		if (d != NULL) {
			struct dirent *de;
			while ((de = readdir(d)) != NULL) {
				if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
					continue;
				char sub[1024];
				int n = snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
				if (n > 0 && (size_t)n < sizeof(sub))
					tpg_rmtree(sub);
			}
			closedir(d);
		}
		(void)rmdir(path);
	} else {
		(void)unlink(path);
	}
}

/* Stops the server, closes the admin connection and removes the directory. */
static inline void
tpg_destroy(struct tpg *pg)
{
	if (pg->admin != NULL)
		PQfinish(pg->admin);
	pg->admin = NULL;
	(void)tpg_stop(pg);
	if (pg->dir[0] != '\0')
		tpg_rmtree(pg->dir);
	pg->dir[0] = '\0';
}

/* initdb in a fresh directory, settings appended, started. */
static inline int
tpg_create(struct tpg *pg)
{
	memset(pg, 0, sizeof(*pg));
	if (tpg_find_bindir(pg) != 0) {
		fprintf(stderr, "testutil_pg: no PostgreSQL binaries (initdb) in $LANYARD_PG_BINDIR or "
		                "/usr/lib/postgresql/N/bin: install postgresql (scripts/install-deps.sh)\n");
		return -1;
	}
	snprintf(pg->dir, sizeof(pg->dir), "/tmp/lanyard-pg-XXXXXX");
	if (mkdtemp(pg->dir) == NULL) {
		pg->dir[0] = '\0';
		return -1;
	}
	snprintf(pg->data, sizeof(pg->data), "%s/data", pg->dir);
	snprintf(pg->log, sizeof(pg->log), "%s/postgres.log", pg->dir);
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("nobody");
		if (pw == NULL) {
			fprintf(stderr, "testutil_pg: no user nobody\n");
			goto fail;
		}
		struct group *gr = getgrnam("nogroup");
		pg->as_nobody = true;
		pg->uid = pw->pw_uid;
		pg->gid = gr != NULL ? gr->gr_gid : pw->pw_gid;
		if (chown(pg->dir, pg->uid, pg->gid) != 0)
			goto fail;
	}
	if (tpg_run(pg, "initdb", "-D", pg->data, "-U", TPG_USER, "--auth=trust", "-E", "UTF8", "--locale=C",
	        "--no-sync", "--no-instructions", NULL) != 0) {
		fprintf(stderr, "testutil_pg: initdb failed\n");
		goto fail;
	}
	char conf[200];
	snprintf(conf, sizeof(conf), "%s/postgresql.conf", pg->data);
	FILE *fp = fopen(conf, "a");
	if (fp == NULL)
		goto fail;
	fprintf(fp, "\nlisten_addresses = ''\nunix_socket_directories = '%s'\nport = %d\n"
	            "max_connections = 30\nshared_buffers = 16MB\nlog_min_messages = warning\n",
	    pg->dir, TPG_PORT);
	fclose(fp);
	/* The log file is written by the server's user. */
	fp = fopen(pg->log, "a");
	if (fp != NULL)
		fclose(fp);
	if (pg->as_nobody && chown(pg->log, pg->uid, pg->gid) != 0)
		goto fail;
	if (tpg_start(pg) != 0)
		goto fail;
	if (PQstatus(tpg_admin(pg)) != CONNECTION_OK)
		goto fail;
	return 0;
fail:
	tpg_destroy(pg);
	return -1;
}

#endif /* LANYARD_TESTUTIL_PG_H */
