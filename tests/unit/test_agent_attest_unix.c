/*
 * test_agent_attest_unix.c: the unix workload attestor (agent/attest_unix.h)
 * and the /proc reading and PID reuse guard under it (agent/procfs.h):
 * against this test process itself (uid, gid, names, path, sha256 checked
 * against sha256sum), a child whose executable was deleted, and a fake
 * proc root standing in for /proc/<pid>/ (start time changes, cache hits,
 * size cap).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "agent/attest_unix.h"
#include "agent/procfs.h"
#include "lib/caps.h"
#include "testutil_skip.h"

#define HELLO_SHA256 "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define FAKE_PID 4242

static int
pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0U);
}

/*
 * Skips the calling test where the pidfd_open syscall does not exist
 * (valgrind 3.19 answers ENOSYS): those tests check real pidfds, and run
 * in the plain and ASan passes.
 */
#define REQUIRE_PIDFD()                                                        \
	do {                                                                   \
		int probe_ = pidfd_open_(getpid());                            \
		if (probe_ < 0 && errno == ENOSYS) {                           \
			LY_SKIP("no pidfd_open syscall here (ENOSYS)");        \
			return;                                                \
		}                                                              \
		if (probe_ >= 0)                                               \
			close(probe_);                                         \
	} while (0)

static bool
has_sel(const struct ly_selector *s, size_t n, const char *type, const char *value)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s[i].type, type) == 0 && strcmp(s[i].value, value) == 0)
			return true;
	}
	return false;
}

static bool
has_key(const struct ly_selector *s, size_t n, const char *prefix)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s[i].type, "unix") == 0 && strncmp(s[i].value, prefix, strlen(prefix)) == 0)
			return true;
	}
	return false;
}

/* A stat line with `comm` and field 22 = `start`, as the kernel writes it. */
static int
stat_line(char *buf, size_t size, const char *comm, const char *start)
{
	return snprintf(buf, size,
	    "%d (%s) S 1 %d %d 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 %s 12345678 300 18446744073709551615 1 1 0 0 "
	    "0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
	    FAKE_PID, comm, FAKE_PID, FAKE_PID, start);
}

/* ---- procfs: field 22 of stat ---- */

static void
test_parse_start_time(void **state)
{
	(void)state;
	char buf[512];
	uint64_t v = 0;
	struct ly_error err;

	stat_line(buf, sizeof(buf), "bash", "987654");
	assert_int_equal(ly_proc_parse_start_time(buf, strlen(buf), &v, &err), LY_OK);
	assert_int_equal(v, 987654);
	/* comm with spaces, parentheses, and a fake tail of fields: the LAST ')' ends it. */
	stat_line(buf, sizeof(buf), "a) b (c", "42");
	assert_int_equal(ly_proc_parse_start_time(buf, strlen(buf), &v, &err), LY_OK);
	assert_int_equal(v, 42);
	stat_line(buf, sizeof(buf), ") S 1 1 1 0 -1 1 1 0 0 0 1 1 0 0 20 0 1 0 111 1", "777");
	assert_int_equal(ly_proc_parse_start_time(buf, strlen(buf), &v, &err), LY_OK);
	assert_int_equal(v, 777);
	stat_line(buf, sizeof(buf), "", "0");
	assert_int_equal(ly_proc_parse_start_time(buf, strlen(buf), &v, &err), LY_OK);
	assert_int_equal(v, 0);
	stat_line(buf, sizeof(buf), "x", "18446744073709551615");
	assert_int_equal(ly_proc_parse_start_time(buf, strlen(buf), &v, &err), LY_OK);
	assert_true(v == UINT64_MAX);
	/* Exactly 22 fields, no newline. */
	const char *min = "7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 31337";
	assert_int_equal(ly_proc_parse_start_time(min, strlen(min), &v, &err), LY_OK);
	assert_int_equal(v, 31337);
}

static void
test_parse_start_time_refused(void **state)
{
	(void)state;
	char buf[512];
	uint64_t v = 0;
	struct ly_error err;
	const char *bad[] = {
		"",
		"(x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 31337",           /* no pid */
		"7x (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 31337",         /* pid not decimal */
		"7 x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 31337",           /* no " (" */
		"7 (x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 31337",           /* comm not closed */
		"7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18",                /* 21 fields */
		"7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17  18 31337",         /* empty field */
		"7 (x)S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 31337",           /* no space after ')' */
		"7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5",             /* sign */
		"7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12a",            /* not decimal */
		"7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 18446744073709551616", /* 2^64 */
		"12345678901 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 31337", /* pid too long */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ly_proc_parse_start_time(bad[i], strlen(bad[i]), &v, &err) != LY_E_INVALID)
			fail_msg("accepted: \"%s\"", bad[i]);
	}
	/* Only `len` bytes count: the start time cut short is another number, a missing one refused. */
	stat_line(buf, sizeof(buf), "bash", "987654");
	size_t cut = (size_t)(strstr(buf, "987654") - buf);
	assert_int_equal(ly_proc_parse_start_time(buf, cut + 3, &v, &err), LY_OK);
	assert_int_equal(v, 987);
	assert_int_equal(ly_proc_parse_start_time(buf, cut - 1, &v, &err), LY_E_INVALID);
}

/* ---- a fake proc root ---- */

struct fake {
	char root[64];
	char dir[128];
	char exe_target[192];
};

static void
write_path(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
fake_set_stat(struct fake *fk, const char *start)
{
	char path[256], line[512];
	snprintf(path, sizeof(path), "%s/stat", fk->dir);
	stat_line(line, sizeof(line), "fake worker", start);
	write_path(path, line);
}

/* Points <dir>/exe at `target` (a symlink standing in for the magic link). */
static void
fake_set_exe(struct fake *fk, const char *target)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/exe", fk->dir);
	(void)unlink(path);
	assert_int_equal(symlink(target, path), 0);
}

static void
fake_init(struct fake *fk)
{
	strcpy(fk->root, "/tmp/ly-unix-XXXXXX");
	assert_non_null(mkdtemp(fk->root));
	snprintf(fk->dir, sizeof(fk->dir), "%s/%d", fk->root, FAKE_PID);
	assert_int_equal(mkdir(fk->dir, 0755), 0);
	snprintf(fk->exe_target, sizeof(fk->exe_target), "%s/bin-worker", fk->root);
	write_path(fk->exe_target, "hello");
	fake_set_stat(fk, "5000");
	fake_set_exe(fk, fk->exe_target);
}

static void
fake_cleanup(struct fake *fk)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fk->root);
	assert_int_equal(system(cmd), 0);
}

static struct ly_unix_peer
fake_peer(uid_t uid, gid_t gid)
{
	struct ly_unix_peer p = { FAKE_PID, uid, gid, -1, true, 5000, { false, 0, 0 } };
	return p;
}

static struct ly_unix_attestor *
new_attestor(const char *root, uint64_t hash_max)
{
	struct ly_unix_attestor_config cfg = { root, hash_max, 0 };
	struct ly_unix_attestor *a = NULL;
	struct ly_error err;
	if (ly_unix_attestor_new(&cfg, &a, &err) != LY_OK)
		fail_msg("%s", err.msg);
	return a;
}

static void
test_verify_fake(void **state)
{
	(void)state;
	struct fake fk;
	struct ly_error err;
	uint64_t st = 0;

	fake_init(&fk);
	assert_int_equal(ly_proc_start_time(fk.root, FAKE_PID, &st, &err), LY_OK);
	assert_int_equal(st, 5000);
	assert_int_equal(ly_proc_verify(fk.root, FAKE_PID, -1, 5000, &err), LY_OK);
	/* The PID now names a process started later. */
	fake_set_stat(&fk, "5001");
	assert_int_equal(ly_proc_verify(fk.root, FAKE_PID, -1, 5000, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "reused"));
	/* The process is gone. */
	char path[256];
	snprintf(path, sizeof(path), "%s/stat", fk.dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(ly_proc_verify(fk.root, FAKE_PID, -1, 5000, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "exited"));
	/* A malformed stat is not a match either. */
	write_path(path, "4242 (x) S 1");
	assert_int_equal(ly_proc_verify(fk.root, FAKE_PID, -1, 5000, &err), LY_E_INVALID);
	assert_int_equal(ly_proc_verify(fk.root, 0, -1, 5000, &err), LY_E_UNSUPPORTED);
	assert_int_equal(ly_proc_verify(fk.root, -3, -1, 5000, &err), LY_E_UNSUPPORTED);
	/* An oversized stat is refused, not truncated. */
	char *big = malloc(LY_PROC_STAT_MAX + 2);
	assert_non_null(big);
	memset(big, 'x', LY_PROC_STAT_MAX + 1);
	big[LY_PROC_STAT_MAX + 1] = '\0';
	write_path(path, big);
	free(big);
	assert_int_equal(ly_proc_start_time(fk.root, FAKE_PID, &st, &err), LY_E_LIMIT);
	fake_cleanup(&fk);
}

static void
test_verify_real_processes(void **state)
{
	REQUIRE_PIDFD();
	(void)state;
	struct ly_error err;
	uint64_t st = 0;

	assert_int_equal(ly_proc_start_time(NULL, getpid(), &st, &err), LY_OK);
	int self = pidfd_open_(getpid());
	assert_true(self >= 0);
	assert_int_equal(ly_proc_verify(NULL, getpid(), self, st, &err), LY_OK);
	assert_int_equal(ly_proc_verify("/proc", getpid(), self, st + 1, &err), LY_E_UNTRUSTED);
	close(self);

	/* A child that exited and was reaped: its pidfd says so, whatever the start time. */
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		pause();
		_exit(0);
	}
	uint64_t cst = 0;
	assert_int_equal(ly_proc_start_time(NULL, child, &cst, &err), LY_OK);
	int fd = pidfd_open_(child);
	assert_true(fd >= 0);
	assert_int_equal(ly_proc_verify(NULL, child, fd, cst, &err), LY_OK);
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, NULL, 0), child);
	assert_int_equal(ly_proc_verify(NULL, child, fd, cst, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "exited"));
	/* Without a pidfd the start time alone decides: the PID is free now. */
	assert_int_equal(ly_proc_verify(NULL, child, -1, cst, &err), LY_E_UNTRUSTED);

	/* The pidfd alone decides too: a PID reused with the same start time (the fake root) is refused. */
	struct fake fk;
	fake_init(&fk);
	assert_int_equal(ly_proc_verify(fk.root, FAKE_PID, -1, 5000, &err), LY_OK);
	assert_int_equal(ly_proc_verify(fk.root, FAKE_PID, fd, 5000, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "pidfd"));
	fake_cleanup(&fk);
	close(fd);
}

/* ---- the attestor ---- */

static void
self_exe(char *out, size_t size)
{
	ssize_t n = readlink("/proc/self/exe", out, size - 1);
	assert_true(n > 0);
	out[n] = '\0';
}

/* sha256sum's opinion of `path`. */
static void
sha256sum(const char *path, char hex[65])
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(hex, 65, p));
	hex[64] = '\0';
	pclose(p);
}

static struct ly_unix_peer
self_peer(int *pidfd)
{
	struct ly_error err;
	struct ly_unix_peer p = { getpid(), getuid(), getgid(), -1, true, 0, { false, 0, 0 } };
	*pidfd = pidfd_open_(getpid());
	assert_true(*pidfd >= 0);
	p.pidfd = *pidfd;
	assert_int_equal(ly_proc_start_time(NULL, p.pid, &p.start_time, &err), LY_OK);
	return p;
}

static void
test_attest_self(void **state)
{
	REQUIRE_PIDFD();
	(void)state;
	struct ly_unix_attestor *a = new_attestor(NULL, 0);
	struct ly_selector *sels = NULL;
	size_t n = 0;
	struct ly_error err;
	char want[128], exe[PATH_MAX], hex[65], sel[PATH_MAX + 16];
	int pidfd;
	struct ly_unix_peer peer = self_peer(&pidfd);

	if (ly_unix_attest(a, &peer, &sels, &n, &err) != LY_OK)
		fail_msg("%s", err.msg);
	snprintf(want, sizeof(want), "uid:%lu", (unsigned long)getuid());
	assert_true(has_sel(sels, n, "unix", want));
	snprintf(want, sizeof(want), "gid:%lu", (unsigned long)getgid());
	assert_true(has_sel(sels, n, "unix", want));
	struct passwd *pw = getpwuid(getuid());
	if (pw != NULL) {
		snprintf(want, sizeof(want), "user:%s", pw->pw_name);
		assert_true(has_sel(sels, n, "unix", want));
	}
	struct group *gr = getgrgid(getgid());
	if (gr != NULL) {
		snprintf(want, sizeof(want), "group:%s", gr->gr_name);
		assert_true(has_sel(sels, n, "unix", want));
	}
	self_exe(exe, sizeof(exe));
	snprintf(sel, sizeof(sel), "path:%s", exe);
	assert_true(has_sel(sels, n, "unix", sel));
	sha256sum(exe, hex);
	snprintf(sel, sizeof(sel), "sha256:%s", hex);
	assert_true(has_sel(sels, n, "unix", sel));
	/* Every selector passes the entry rules. */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ly_selector_check(sels[i].type, sels[i].value, NULL), LY_OK);
	ly_selectors_free(sels, n);

	/* The second call is served from the cache: no rehash. */
	struct ly_unix_attestor_stats stats;
	ly_unix_attestor_stats(a, &stats);
	assert_int_equal(stats.hashes, 1);
	assert_int_equal(stats.cache_hits, 0);
	assert_int_equal(ly_unix_attest(a, &peer, &sels, &n, &err), LY_OK);
	assert_true(has_sel(sels, n, "unix", sel));
	ly_selectors_free(sels, n);
	ly_unix_attestor_stats(a, &stats);
	assert_int_equal(stats.hashes, 1);
	assert_int_equal(stats.cache_hits, 1);

	/* The start time recorded at accept is not this process's: refused, nothing returned. */
	peer.start_time++;
	assert_int_equal(ly_unix_attest(a, &peer, &sels, &n, &err), LY_E_UNTRUSTED);
	assert_null(sels);
	assert_int_equal(n, 0);
	close(pidfd);
	ly_unix_attestor_free(a);
}

static void
test_attest_pid_zero_and_gone(void **state)
{
	(void)state;
	struct fake fk;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	struct ly_error err;

	fake_init(&fk);
	struct ly_unix_attestor *a = new_attestor(fk.root, 0);
	struct ly_unix_peer p = fake_peer(1000, 1000);
	p.pid = 0;
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_E_UNSUPPORTED);
	assert_null(sels);
	p.pid = FAKE_PID + 1; /* no such directory */
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_E_UNTRUSTED);
	assert_null(sels);
	ly_unix_attestor_free(a);
	fake_cleanup(&fk);
}

static void
test_attest_fake_root(void **state)
{
	(void)state;
	struct fake fk;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	struct ly_error err;
	struct ly_unix_attestor_stats stats;
	char sel[256];

	fake_init(&fk);
	struct ly_unix_attestor *a = new_attestor(fk.root, 0);
	/* A uid and gid no user database names: no user or group selector. */
	struct ly_unix_peer p = fake_peer(3999999, 3999998);
	if (ly_unix_attest(a, &p, &sels, &n, &err) != LY_OK)
		fail_msg("%s", err.msg);
	assert_true(has_sel(sels, n, "unix", "uid:3999999"));
	assert_true(has_sel(sels, n, "unix", "gid:3999998"));
	assert_false(has_key(sels, n, "user:"));
	assert_false(has_key(sels, n, "group:"));
	snprintf(sel, sizeof(sel), "path:%s", fk.exe_target);
	assert_true(has_sel(sels, n, "unix", sel));
	assert_true(has_sel(sels, n, "unix", "sha256:" HELLO_SHA256));
	assert_int_equal(n, 4);
	ly_selectors_free(sels, n);

	/* Repeated calls do not rehash. */
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	ly_selectors_free(sels, n);
	ly_unix_attestor_stats(a, &stats);
	assert_int_equal(stats.hashes, 1);
	assert_int_equal(stats.cache_hits, 1);

	/* The file changes (same size, new content): its ctime moves, so it is hashed again. */
	struct timespec pause_ = { 0, 20 * 1000 * 1000 };
	nanosleep(&pause_, NULL);
	write_path(fk.exe_target, "jello");
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_false(has_sel(sels, n, "unix", "sha256:" HELLO_SHA256));
	assert_true(has_key(sels, n, "sha256:"));
	ly_selectors_free(sels, n);
	ly_unix_attestor_stats(a, &stats);
	assert_int_equal(stats.hashes, 2);

	/* The start time changed since accept: refused. */
	fake_set_stat(&fk, "6000");
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_E_UNTRUSTED);
	assert_null(sels);
	assert_non_null(strstr(err.msg, "reused"));
	/* Without a start time from accept, the one read first is what is verified. */
	p.has_start_time = false;
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	ly_selectors_free(sels, n);
	ly_unix_attestor_free(a);
	fake_cleanup(&fk);
}

static void
test_attest_hash_cap(void **state)
{
	(void)state;
	struct fake fk;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	struct ly_error err;
	char sel[256];

	fake_init(&fk);
	/* "hello" is 5 bytes: over a 4-byte cap no sha256, at a 5-byte cap one. */
	struct ly_unix_attestor *a = new_attestor(fk.root, 4);
	struct ly_unix_peer p = fake_peer(1000, 1000);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	snprintf(sel, sizeof(sel), "path:%s", fk.exe_target);
	assert_true(has_sel(sels, n, "unix", sel));
	assert_false(has_key(sels, n, "sha256:"));
	ly_selectors_free(sels, n);
	ly_unix_attestor_free(a);
	a = new_attestor(fk.root, 5);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_true(has_sel(sels, n, "unix", "sha256:" HELLO_SHA256));
	ly_selectors_free(sels, n);
	ly_unix_attestor_free(a);
	fake_cleanup(&fk);
}

static void
test_attest_exe_edge_cases(void **state)
{
	(void)state;
	struct fake fk;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	struct ly_error err;
	char target[256], sel[300];

	fake_init(&fk);
	struct ly_unix_attestor *a = new_attestor(fk.root, 0);
	struct ly_unix_peer p = fake_peer(3999999, 3999998);

	/* The link reads "... (deleted)" (the file that stands there now is not what runs): nothing. */
	snprintf(target, sizeof(target), "%s (deleted)", fk.exe_target);
	write_path(target, "hello");
	fake_set_exe(&fk, target);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_false(has_key(sels, n, "path:"));
	assert_false(has_key(sels, n, "sha256:"));
	assert_int_equal(n, 2);
	ly_selectors_free(sels, n);

	/* A dangling link (not readable): no path, no sha256, no failure. */
	snprintf(target, sizeof(target), "%s/missing", fk.root);
	fake_set_exe(&fk, target);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_false(has_key(sels, n, "path:"));
	assert_false(has_key(sels, n, "sha256:"));
	ly_selectors_free(sels, n);

	/* A path that is not canonical gives no path selector; the content is still hashed. */
	snprintf(target, sizeof(target), "%s//bin-worker", fk.root);
	fake_set_exe(&fk, target);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_false(has_key(sels, n, "path:"));
	assert_true(has_sel(sels, n, "unix", "sha256:" HELLO_SHA256));
	ly_selectors_free(sels, n);

	/* Not a regular file. */
	fake_set_exe(&fk, fk.root);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_false(has_key(sels, n, "path:"));
	assert_false(has_key(sels, n, "sha256:"));
	ly_selectors_free(sels, n);

	/* The path is read from the link, the content through it: replacing the file is seen. */
	fake_set_exe(&fk, fk.exe_target);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	snprintf(sel, sizeof(sel), "path:%s", fk.exe_target);
	assert_true(has_sel(sels, n, "unix", sel));
	ly_selectors_free(sels, n);
	ly_unix_attestor_free(a);
	fake_cleanup(&fk);
}

/* A child running a copy of sleep(1) whose file is then deleted: no path and no sha256. */
static void
test_attest_deleted_binary(void **state)
{
	REQUIRE_PIDFD();
	(void)state;
	char dir[] = "/tmp/ly-unix-del-XXXXXX";
	char bin[128], cmd[512], link[64], seen[PATH_MAX];
	struct ly_selector *sels = NULL;
	size_t n = 0;
	struct ly_error err;

	assert_non_null(mkdtemp(dir));
	snprintf(bin, sizeof(bin), "%s/sleeper", dir);
	snprintf(cmd, sizeof(cmd), "cp \"$(command -v sleep)\" '%s'", bin);
	assert_int_equal(system(cmd), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		execl(bin, "sleeper", "30", (char *)NULL);
		_exit(127);
	}
	/* Wait until the child runs the copy. */
	snprintf(link, sizeof(link), "/proc/%ld/exe", (long)child);
	for (int i = 0; i < 500; i++) {
		ssize_t r = readlink(link, seen, sizeof(seen) - 1);
		if (r > 0) {
			seen[r] = '\0';
			if (strcmp(seen, bin) == 0)
				break;
		}
		struct timespec t = { 0, 10 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	assert_string_equal(seen, bin);

	struct ly_unix_attestor *a = new_attestor(NULL, 0);
	struct ly_unix_peer p = { child, getuid(), getgid(), pidfd_open_(child), false, 0, { false, 0, 0 } };
	assert_true(p.pidfd >= 0);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	snprintf(cmd, sizeof(cmd), "path:%s", bin);
	assert_true(has_sel(sels, n, "unix", cmd));
	assert_true(has_key(sels, n, "sha256:"));
	ly_selectors_free(sels, n);

	assert_int_equal(unlink(bin), 0);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_false(has_key(sels, n, "path:"));
	assert_false(has_key(sels, n, "sha256:"));
	assert_true(has_key(sels, n, "uid:"));
	ly_selectors_free(sels, n);

	/* Once it exits, its pidfd refuses the call. */
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, NULL, 0), child);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_E_UNTRUSTED);
	close(p.pidfd);
	ly_unix_attestor_free(a);
	assert_int_equal(rmdir(dir), 0);
}

/* The executable recorded at accept (procfs.h struct ly_proc_exe), with the fake root. */
static void
test_exe_changed_fake(void **state)
{
	(void)state;
	struct fake fk;
	struct ly_error err;
	struct ly_proc_exe exe, none = { false, 0, 0 };
	struct ly_selector *sels = NULL;
	size_t n = 0;
	char other[256];

	fake_init(&fk);
	assert_int_equal(ly_proc_exe_id(fk.root, FAKE_PID, &exe, &err), LY_OK);
	assert_true(exe.known);
	assert_int_equal(ly_proc_verify_exe(fk.root, FAKE_PID, &exe, &err), LY_OK);
	struct ly_unix_peer p = fake_peer(getuid(), getgid());
	p.exe = exe;
	struct ly_unix_attestor *a = new_attestor(fk.root, 0);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	ly_selectors_free(sels, n);
	assert_int_equal(ly_unix_peer_verify(fk.root, &p, &err), LY_OK);

	/* An exec: the link now names another file. */
	snprintf(other, sizeof(other), "%s/bin-other", fk.root);
	write_path(other, "other");
	fake_set_exe(&fk, other);
	assert_int_equal(ly_proc_verify_exe(fk.root, FAKE_PID, &exe, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "another executable"));
	assert_int_equal(ly_unix_peer_verify(fk.root, &p, &err), LY_E_UNTRUSTED);
	/* Exec'd before attestation: no selector at all. */
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_E_UNTRUSTED);
	assert_null(sels);
	assert_non_null(strstr(err.msg, "exec before attestation"));
	/* Nothing recorded (unreadable at accept): not checked. */
	assert_int_equal(ly_proc_verify_exe(fk.root, FAKE_PID, &none, &err), LY_OK);
	assert_int_equal(ly_proc_verify_exe(fk.root, FAKE_PID, NULL, &err), LY_OK);
	/* Gone: the caller exited. */
	char path[256];
	snprintf(path, sizeof(path), "%s/exe", fk.dir);
	assert_int_equal(unlink(path), 0);
	fake_cleanup(&fk);
	assert_int_equal(ly_proc_exe_id(fk.root, FAKE_PID, &exe, &err), LY_E_NOT_FOUND);
	ly_unix_attestor_free(a);
}

/* Waits until /proc/<pid>/exe reads `want`; false after 5 s. */
static bool
wait_exe(pid_t pid, const char *want)
{
	char link[64], seen[PATH_MAX];
	snprintf(link, sizeof(link), "/proc/%ld/exe", (long)pid);
	for (int i = 0; i < 500; i++) {
		ssize_t r = readlink(link, seen, sizeof(seen) - 1);
		if (r > 0) {
			seen[r] = '\0';
			if (strcmp(seen, want) == 0)
				return true;
		}
		struct timespec t = { 0, 10 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	return false;
}

/*
 * A real process attested as the binary it runs, that then execs another:
 * ly_unix_peer_verify (run before every Workload API answer) refuses it.
 */
static void
test_exec_after_attestation(void **state)
{
	REQUIRE_PIDFD();
	(void)state;
	int go[2];
	char sleep_path[PATH_MAX], self[PATH_MAX];
	struct ly_error err;
	struct ly_selector *sels = NULL;
	size_t n = 0;

	FILE *f = popen("command -v sleep", "r");
	assert_non_null(f);
	assert_non_null(fgets(sleep_path, sizeof(sleep_path), f));
	pclose(f);
	sleep_path[strcspn(sleep_path, "\n")] = '\0';
	assert_non_null(realpath(sleep_path, self));
	snprintf(sleep_path, sizeof(sleep_path), "%s", self);
	ssize_t r = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(r > 0);
	self[r] = '\0';

	assert_int_equal(pipe(go), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) == 1)
			execl(sleep_path, "sleep", "30", (char *)NULL);
		_exit(127);
	}
	close(go[0]);
	struct ly_unix_peer p = { child, getuid(), getgid(), pidfd_open_(child), true, 0, { false, 0, 0 } };
	assert_true(p.pidfd >= 0);
	assert_int_equal(ly_proc_start_time(NULL, child, &p.start_time, &err), LY_OK);
	assert_int_equal(ly_proc_exe_id(NULL, child, &p.exe, &err), LY_OK);
	assert_true(p.exe.known);
	struct ly_unix_attestor *a = new_attestor(NULL, 0);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	char sel[PATH_MAX + 8];
	snprintf(sel, sizeof(sel), "path:%s", self);
	assert_true(has_sel(sels, n, "unix", sel));
	ly_selectors_free(sels, n);
	assert_int_equal(ly_unix_peer_verify(NULL, &p, &err), LY_OK);

	/* Same PID, same start time, same pidfd: only the executable tells. */
	assert_int_equal(write(go[1], "x", 1), 1);
	assert_true(wait_exe(child, sleep_path));
	assert_int_equal(ly_proc_verify(NULL, child, p.pidfd, p.start_time, &err), LY_OK);
	assert_int_equal(ly_unix_peer_verify(NULL, &p, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "another executable"));
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_E_UNTRUSTED);

	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, NULL, 0), child);
	close(go[1]);
	close(p.pidfd);
	ly_unix_attestor_free(a);
}

/*
 * A caller that bind-mounts another binary over a path in its own mount
 * namespace and runs it: /proc/<pid>/exe reads that path, but the agent's
 * stat of the path is another inode, so no unix:path (its sha256 still
 * names what runs). Needs CAP_SYS_ADMIN for the namespace: skipped without.
 */
static void
test_bind_mounted_binary(void **state)
{
	REQUIRE_PIDFD();
	(void)state;
	char dir[] = "/tmp/ly-unix-bind-XXXXXX";
	char trusted[128], mine[128], cmd[512];
	int ready[2];
	struct ly_error err;
	struct ly_selector *sels = NULL;
	size_t n = 0;

	assert_non_null(mkdtemp(dir));
	snprintf(trusted, sizeof(trusted), "%s/trusted", dir);
	snprintf(mine, sizeof(mine), "%s/mine", dir);
	snprintf(cmd, sizeof(cmd), "cp \"$(command -v sleep)\" '%s' && cp \"$(command -v sleep)\" '%s' && "
	    "printf x >> '%s'", trusted, mine, mine);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(pipe(ready), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		close(ready[0]);
		char ok = 'n';
		if (unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
		    mount(mine, trusted, NULL, MS_BIND, NULL) == 0)
			ok = 'y';
		if (write(ready[1], &ok, 1) != 1 || ok != 'y')
			_exit(0);
		execl(trusted, "sleep", "30", (char *)NULL);
		_exit(127);
	}
	close(ready[1]);
	char ok = 'n';
	assert_int_equal(read(ready[0], &ok, 1), 1);
	close(ready[0]);
	if (ok != 'y') {
		waitpid(child, NULL, 0);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
		skip();
		return;
	}
	assert_true(wait_exe(child, trusted));
	struct ly_unix_peer p = { child, getuid(), getgid(), pidfd_open_(child), true, 0, { false, 0, 0 } };
	assert_int_equal(ly_proc_start_time(NULL, child, &p.start_time, &err), LY_OK);
	assert_int_equal(ly_proc_exe_id(NULL, child, &p.exe, &err), LY_OK);
	struct ly_unix_attestor *a = new_attestor(NULL, 0);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	assert_false(has_key(sels, n, "path:"));
	assert_true(has_key(sels, n, "sha256:"));
	ly_selectors_free(sels, n);

	/* The real file at that path still gets its path selector. */
	pid_t honest = fork();
	assert_true(honest >= 0);
	if (honest == 0) {
		execl(trusted, "sleep", "30", (char *)NULL);
		_exit(127);
	}
	assert_true(wait_exe(honest, trusted));
	struct ly_unix_peer h = { honest, getuid(), getgid(), pidfd_open_(honest), true, 0, { false, 0, 0 } };
	assert_int_equal(ly_proc_start_time(NULL, honest, &h.start_time, &err), LY_OK);
	assert_int_equal(ly_proc_exe_id(NULL, honest, &h.exe, &err), LY_OK);
	assert_int_equal(ly_unix_attest(a, &h, &sels, &n, &err), LY_OK);
	snprintf(cmd, sizeof(cmd), "path:%s", trusted);
	assert_true(has_sel(sels, n, "unix", cmd));
	ly_selectors_free(sels, n);

	kill(child, SIGKILL);
	kill(honest, SIGKILL);
	assert_int_equal(waitpid(child, NULL, 0), child);
	assert_int_equal(waitpid(honest, NULL, 0), honest);
	close(p.pidfd);
	close(h.pidfd);
	ly_unix_attestor_free(a);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void
test_config_refused(void **state)
{
	(void)state;
	struct ly_unix_attestor *a = NULL;
	struct ly_error err;
	struct ly_unix_attestor_config cfg = { NULL, LY_UNIX_EXE_HASH_MAX + 1, 0 };
	assert_int_equal(ly_unix_attestor_new(&cfg, &a, &err), LY_E_LIMIT);
	assert_null(a);
	cfg.hash_max = LY_UNIX_EXE_HASH_MAX;
	cfg.cache_max = LY_UNIX_HASH_CACHE_MAX + 1;
	assert_int_equal(ly_unix_attestor_new(&cfg, &a, &err), LY_E_LIMIT);
	cfg.cache_max = 0;
	cfg.proc_root = "proc";
	assert_int_equal(ly_unix_attestor_new(&cfg, &a, &err), LY_E_INVALID);
	assert_int_equal(ly_unix_attestor_new(NULL, &a, &err), LY_OK);
	ly_unix_attestor_free(a);
	ly_unix_attestor_free(NULL);
}

static void
test_cache_lru(void **state)
{
	(void)state;
	struct fake fk;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	struct ly_error err;
	struct ly_unix_attestor_stats stats;
	char b[256];

	fake_init(&fk);
	struct ly_unix_attestor_config cfg = { fk.root, 0, 1 };
	struct ly_unix_attestor *a = NULL;
	assert_int_equal(ly_unix_attestor_new(&cfg, &a, &err), LY_OK);
	struct ly_unix_peer p = fake_peer(1000, 1000);
	snprintf(b, sizeof(b), "%s/other", fk.root);
	write_path(b, "other");
	/* One entry: A, B, A hashes three times; A, A once. */
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	ly_selectors_free(sels, n);
	fake_set_exe(&fk, b);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	ly_selectors_free(sels, n);
	fake_set_exe(&fk, fk.exe_target);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	ly_selectors_free(sels, n);
	assert_int_equal(ly_unix_attest(a, &p, &sels, &n, &err), LY_OK);
	ly_selectors_free(sels, n);
	ly_unix_attestor_stats(a, &stats);
	assert_int_equal(stats.hashes, 3);
	assert_int_equal(stats.cache_hits, 1);
	ly_unix_attestor_free(a);
	fake_cleanup(&fk);
}

/* ---- on a libuv loop ---- */

struct async_result {
	int calls;
	ly_status rc;
	size_t n;
	char sha[80];
};

static void
on_attested(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	struct async_result *r = arg;
	r->calls++;
	r->rc = rc;
	r->n = n;
	if (rc != LY_OK)
		assert_non_null(err);
	for (size_t i = 0; i < n; i++) {
		if (strncmp(sels[i].value, "sha256:", 7) == 0)
			snprintf(r->sha, sizeof(r->sha), "%s", sels[i].value);
	}
	ly_selectors_free(sels, n);
}

static void
test_async(void **state)
{
	REQUIRE_PIDFD();
	(void)state;
	uv_loop_t loop;
	struct ly_error err;
	struct async_result res[8];
	struct async_result cancelled;
	struct ly_unix_attest_req *req = NULL;
	int pidfd;

	memset(res, 0, sizeof(res));
	memset(&cancelled, 0, sizeof(cancelled));
	assert_int_equal(uv_loop_init(&loop), 0);
	struct ly_unix_attestor *a = new_attestor(NULL, 0);
	struct ly_unix_peer peer = self_peer(&pidfd);
	/* Several at once, on several worker threads, share one cache. */
	for (int i = 0; i < 8; i++) {
		assert_int_equal(ly_unix_attest_start(&loop, a, &peer, on_attested, &res[i], NULL, &err), LY_OK);
		assert_int_equal(res[i].calls, 0); /* never from inside start */
	}
	assert_int_equal(ly_unix_attest_start(&loop, a, &peer, on_attested, &cancelled, &req, &err), LY_OK);
	ly_unix_attest_cancel(req);
	/* PID 0 fails in the worker and reports through the callback. */
	struct async_result zero;
	memset(&zero, 0, sizeof(zero));
	struct ly_unix_peer z = peer;
	z.pid = 0;
	assert_int_equal(ly_unix_attest_start(&loop, a, &z, on_attested, &zero, NULL, &err), LY_OK);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(res[i].calls, 1);
		assert_int_equal(res[i].rc, LY_OK);
		assert_string_equal(res[i].sha, res[0].sha);
	}
	assert_int_equal(cancelled.calls, 0);
	assert_int_equal(zero.calls, 1);
	assert_int_equal(zero.rc, LY_E_UNSUPPORTED);
	struct ly_unix_attestor_stats stats;
	ly_unix_attestor_stats(a, &stats);
	assert_true(stats.hashes >= 1 && stats.hashes + stats.cache_hits >= 8);
	assert_int_equal(uv_loop_close(&loop), 0);
	close(pidfd);
	ly_unix_attestor_free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_start_time),
		cmocka_unit_test(test_parse_start_time_refused),
		cmocka_unit_test(test_verify_fake),
		cmocka_unit_test(test_verify_real_processes),
		cmocka_unit_test(test_attest_self),
		cmocka_unit_test(test_attest_pid_zero_and_gone),
		cmocka_unit_test(test_attest_fake_root),
		cmocka_unit_test(test_attest_hash_cap),
		cmocka_unit_test(test_attest_exe_edge_cases),
		cmocka_unit_test(test_attest_deleted_binary),
		cmocka_unit_test(test_exe_changed_fake),
		cmocka_unit_test(test_exec_after_attestation),
		cmocka_unit_test(test_bind_mounted_binary),
		cmocka_unit_test(test_config_refused),
		cmocka_unit_test(test_cache_lru),
		cmocka_unit_test(test_async),
	};
	return ly_test_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
