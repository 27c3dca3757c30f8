/*
 * test_agent_cli_helper.c: the pieces of `api watch -write` (agent/cli_helper.h):
 * the signal table, strict pid-file parsing and reading, signalling through
 * a pid file, and file sets (temporary files born 0600, modes exact whatever
 * the umask, all-or-nothing staging, stale files removed on commit).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/cli_helper.h"
#include "agent/fileset.h"

/* ---- signals ---- */

static void
test_signal_table(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		int signum;
	} ok[] = {
		{ "HUP", SIGHUP }, { "SIGHUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "USR1", SIGUSR1 },
		{ "SIGUSR2", SIGUSR2 }, { "TERM", SIGTERM }, { "WINCH", SIGWINCH },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int s = -1;
		assert_int_equal(ly_cli_helper_signal_parse(ok[i].name, &s, NULL), LY_OK);
		assert_int_equal(s, ok[i].signum);
	}
	assert_string_equal(ly_cli_helper_signal_name(SIGHUP), "SIGHUP");
	assert_string_equal(ly_cli_helper_signal_name(SIGWINCH), "SIGWINCH");
	assert_string_equal(ly_cli_helper_signal_name(SIGKILL), "signal");
}

/* Names outside the table: numbers, KILL/STOP, lower case, prefixes, suffixes. */
static void
test_signal_refused(void **state)
{
	(void)state;
	static const char *const bad[] = { "", "KILL", "SIGKILL", "STOP", "SIGSTOP", "9", "1", "hup", "sighup",
		"SIG", "SIGSIGHUP", "HUP ", " HUP", "HUPX", "USR", "USR3", "SEGV", "CHLD", "SIGHUP\n" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ly_error e;
		int s = -7;
		assert_int_equal(ly_cli_helper_signal_parse(bad[i], &s, &e), LY_E_INVALID);
		assert_int_equal(s, -7);
		assert_non_null(strstr(e.msg, "must be one of HUP"));
	}
}

/* ---- pid files ---- */

static ly_status
parse(const char *text, pid_t *pid)
{
	return ly_cli_helper_pid_parse(text, strlen(text), pid, NULL);
}

static void
test_pid_parse_ok(void **state)
{
	(void)state;
	pid_t p = 0;
	assert_int_equal(parse("1234\n", &p), LY_OK);
	assert_int_equal(p, 1234);
	assert_int_equal(parse("2", &p), LY_OK);
	assert_int_equal(p, 2);
	assert_int_equal(parse("4194304\n", &p), LY_OK);
	assert_int_equal(p, 4194304);
	/* Not NUL-terminated: only `len` bytes are read. */
	assert_int_equal(ly_cli_helper_pid_parse("77\n99", 3, &p, NULL), LY_OK);
	assert_int_equal(p, 77);
}

static void
test_pid_parse_refused(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "\n", "0", "0\n", "1", "1\n", "-5\n", "+5\n", " 5\n", "5 \n", "5\n\n", "5\r\n", "05\n", "00\n",
		"12 34\n", "12\n34\n", "abc\n", "12abc", "0x10\n", "4194305\n", "99999999999999999999\n", "\n5",
		"1234 garbage\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		pid_t p = 4242;
		struct ly_error e;
		ly_status rc = ly_cli_helper_pid_parse(bad[i], strlen(bad[i]), &p, &e);
		if (rc == LY_OK)
			fail_msg("accepted pid file \"%s\"", bad[i]);
		assert_int_equal(rc, LY_E_INVALID);
		assert_int_equal(p, 4242);
	}
	/* A NUL byte inside. */
	pid_t p = 4242;
	assert_int_equal(ly_cli_helper_pid_parse("12\0" "3\n", 4, &p, NULL), LY_E_INVALID);
	/* Over the cap: LY_E_LIMIT, even if it were digits. */
	char big[LY_PID_FILE_MAX + 2];
	memset(big, '7', sizeof(big));
	assert_int_equal(ly_cli_helper_pid_parse(big, LY_PID_FILE_MAX + 1, &p, NULL), LY_E_LIMIT);
	/* Exactly the cap is parsed (and refused here for its value, not its size). */
	assert_int_equal(ly_cli_helper_pid_parse(big, LY_PID_FILE_MAX, &p, NULL), LY_E_INVALID);
	assert_int_equal(p, 4242);
}

struct tmpdir {
	char path[64];
};

static void
tmpdir_make_in(struct tmpdir *t, const char *base)
{
	(void)snprintf(t->path, sizeof(t->path), "%s/ly-cli-helper-XXXXXX", base);
	assert_non_null(mkdtemp(t->path));
}

static void
tmpdir_make(struct tmpdir *t)
{
	tmpdir_make_in(t, "/tmp");
}

static void
tmpdir_remove(struct tmpdir *t)
{
	DIR *d = opendir(t->path);
	struct dirent *de;
	char p[512];

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		(void)snprintf(p, sizeof(p), "%s/%s", t->path, de->d_name);
		(void)unlink(p);
	}
	closedir(d);
	(void)rmdir(t->path);
}

static void
write_file(const char *dir, const char *name, const char *text, size_t len)
{
	char p[512];
	(void)snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	fclose(f);
}

static void
test_pid_file_read(void **state)
{
	(void)state;
	struct tmpdir t;
	char p[512];
	pid_t pid = 0;
	struct ly_error e;

	tmpdir_make(&t);
	write_file(t.path, "ok.pid", "4321\n", 5);
	(void)snprintf(p, sizeof(p), "%s/ok.pid", t.path);
	assert_int_equal(ly_cli_helper_pid_file_read(p, &pid, &e), LY_OK);
	assert_int_equal(pid, 4321);

	write_file(t.path, "bad.pid", "4321 x\n", 7);
	(void)snprintf(p, sizeof(p), "%s/bad.pid", t.path);
	assert_int_equal(ly_cli_helper_pid_file_read(p, &pid, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "bad.pid"));

	/* A big file: refused by size, whatever it holds. */
	char big[4096];
	memset(big, '5', sizeof(big));
	write_file(t.path, "big.pid", big, sizeof(big));
	(void)snprintf(p, sizeof(p), "%s/big.pid", t.path);
	assert_int_equal(ly_cli_helper_pid_file_read(p, &pid, &e), LY_E_LIMIT);

	(void)snprintf(p, sizeof(p), "%s/absent.pid", t.path);
	assert_int_equal(ly_cli_helper_pid_file_read(p, &pid, &e), LY_E_NOT_FOUND);

	/* A directory and a FIFO are not pid files (and the FIFO does not block us). */
	assert_int_equal(ly_cli_helper_pid_file_read(t.path, &pid, &e), LY_E_INVALID);
	(void)snprintf(p, sizeof(p), "%s/fifo", t.path);
	assert_int_equal(mkfifo(p, 0600), 0);
	assert_int_equal(ly_cli_helper_pid_file_read(p, &pid, &e), LY_E_INVALID);
	assert_int_equal(pid, 4321);
	tmpdir_remove(&t);
}

/* The signal reaches the process the pid file names, and nothing else. */
static void
test_signal_pid_file(void **state)
{
	(void)state;
	struct tmpdir t;
	char p[512], text[32];
	sigset_t set, old;
	struct ly_error e;
	pid_t child, sent = 0;
	int status;

	tmpdir_make(&t);
	(void)snprintf(p, sizeof(p), "%s/child.pid", t.path);
	/* The child waits for SIGUSR1 (blocked, then sigwait: no race with its start). */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	assert_int_equal(sigprocmask(SIG_BLOCK, &set, &old), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int sig = 0;
		alarm(10);
		_exit(sigwait(&set, &sig) == 0 && sig == SIGUSR1 ? 0 : 3);
	}
	assert_int_equal(sigprocmask(SIG_SETMASK, &old, NULL), 0);
	int n = snprintf(text, sizeof(text), "%d\n", (int)child);
	write_file(t.path, "child.pid", text, (size_t)n);
	assert_int_equal(ly_cli_helper_signal_pid_file(p, SIGUSR1, &sent, &e), LY_OK);
	assert_int_equal(sent, child);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* Now stale: the process is gone. */
	sent = 0;
	assert_int_equal(ly_cli_helper_signal_pid_file(p, SIGUSR1, &sent, &e), LY_E_NOT_FOUND);
	assert_non_null(strstr(e.msg, "no process"));
	assert_int_equal(sent, 0);

	/* Our own pid is refused (a signal to ourselves would end the helper). */
	n = snprintf(text, sizeof(text), "%d\n", (int)getpid());
	write_file(t.path, "child.pid", text, (size_t)n);
	assert_int_equal(ly_cli_helper_signal_pid_file(p, SIGUSR1, &sent, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "this process"));

	/* pid 0 would be our process group: refused before kill(). */
	write_file(t.path, "child.pid", "0\n", 2);
	assert_int_equal(ly_cli_helper_signal_pid_file(p, SIGUSR1, &sent, &e), LY_E_INVALID);
	assert_int_equal(sent, 0);
	tmpdir_remove(&t);
}

/* ---- file sets ---- */

static unsigned
mode_of(const char *dir, const char *name)
{
	char p[512];
	struct stat st;
	(void)snprintf(p, sizeof(p), "%s/%s", dir, name);
	if (stat(p, &st) != 0)
		return 01000; /* absent */
	return (unsigned)(st.st_mode & 07777);
}

static char *
read_text(const char *dir, const char *name)
{
	static char buf[256];
	char p[512];
	(void)snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "r");
	if (f == NULL)
		return NULL;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Entries of the directory other than . and .., and how many start with '.'. */
static size_t
count_entries(const char *dir, size_t *hidden)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	*hidden = 0;
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		n++;
		if (de->d_name[0] == '.')
			(*hidden)++;
	}
	closedir(d);
	return n;
}

#define ADD(fs, name, text, mode) ly_fileset_add((fs), (name), (const uint8_t *)(text), strlen(text), (mode), NULL)

static void
test_fileset_commit(void **state)
{
	(void)state;
	struct tmpdir t;
	struct ly_fileset fs;
	size_t hidden, removed = 99;
	mode_t um = umask(0); /* modes must be exact whatever the umask */

	tmpdir_make(&t);
	assert_int_equal(ly_fileset_init(&fs, t.path, NULL), LY_OK);
	assert_int_equal(ADD(&fs, "svid.0.pem", "cert-1", 0644), LY_OK);
	assert_int_equal(ADD(&fs, "svid.0.key", "key-1", 0600), LY_OK);
	assert_int_equal(ADD(&fs, "svid.1.pem", "cert-b", 0644), LY_OK);
	/* Staged: only temporary (hidden) files, the key's born 0600. */
	assert_int_equal(count_entries(t.path, &hidden), 3);
	assert_int_equal(hidden, 3);
	assert_int_equal(mode_of(t.path, fs.staged[1].tmp), 0600);
	assert_int_equal(mode_of(t.path, "svid.0.pem"), 01000);
	assert_int_equal(ly_fileset_commit(&fs, &removed, NULL), LY_OK);
	assert_int_equal(removed, 0);
	assert_int_equal(count_entries(t.path, &hidden), 3);
	assert_int_equal(hidden, 0);
	assert_int_equal(mode_of(t.path, "svid.0.pem"), 0644);
	assert_int_equal(mode_of(t.path, "svid.0.key"), 0600);
	assert_string_equal(read_text(t.path, "svid.0.key"), "key-1");

	/* The next update has one SVID fewer: svid.1.pem goes. */
	assert_int_equal(ADD(&fs, "svid.0.pem", "cert-2", 0644), LY_OK);
	assert_int_equal(ADD(&fs, "svid.0.key", "key-2", 0600), LY_OK);
	assert_int_equal(ly_fileset_commit(&fs, &removed, NULL), LY_OK);
	assert_int_equal(removed, 1);
	assert_int_equal(mode_of(t.path, "svid.1.pem"), 01000);
	assert_string_equal(read_text(t.path, "svid.0.pem"), "cert-2");
	assert_string_equal(read_text(t.path, "svid.0.key"), "key-2");

	/* A file of another program in the directory is never touched. */
	write_file(t.path, "nginx.conf", "x", 1);
	assert_int_equal(ADD(&fs, "svid.0.pem", "cert-3", 0644), LY_OK);
	assert_int_equal(ly_fileset_commit(&fs, &removed, NULL), LY_OK);
	assert_int_equal(removed, 1); /* svid.0.key, which this update did not write */
	assert_string_equal(read_text(t.path, "nginx.conf"), "x");
	ly_fileset_cleanup(&fs);
	(void)umask(um);
	tmpdir_remove(&t);
}

/* A failed update leaves the previous files as they were, and no temporary. */
static void
test_fileset_abort_keeps_previous(void **state)
{
	(void)state;
	struct tmpdir t;
	struct ly_fileset fs;
	struct ly_error e;
	size_t hidden;

	tmpdir_make(&t);
	assert_int_equal(ly_fileset_init(&fs, t.path, NULL), LY_OK);
	assert_int_equal(ADD(&fs, "svid.0.pem", "old-cert", 0644), LY_OK);
	assert_int_equal(ADD(&fs, "svid.0.key", "old-key", 0600), LY_OK);
	assert_int_equal(ly_fileset_commit(&fs, NULL, NULL), LY_OK);

	assert_int_equal(ADD(&fs, "svid.0.pem", "new-cert", 0644), LY_OK);
	/* The same name twice in one update is refused... */
	assert_int_equal(ly_fileset_add(&fs, "svid.0.pem", (const uint8_t *)"x", 1, 0644, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "twice"));
	ly_fileset_abort(&fs);
	assert_string_equal(read_text(t.path, "svid.0.pem"), "old-cert");
	assert_string_equal(read_text(t.path, "svid.0.key"), "old-key");
	assert_int_equal(count_entries(t.path, &hidden), 2);
	assert_int_equal(hidden, 0);
	/* ...and after an abort the next commit still knows the live files. */
	assert_int_equal(ADD(&fs, "svid.0.pem", "cert-3", 0644), LY_OK);
	assert_int_equal(ADD(&fs, "svid.0.key", "key-3", 0600), LY_OK);
	assert_int_equal(ly_fileset_commit(&fs, NULL, NULL), LY_OK);
	assert_string_equal(read_text(t.path, "svid.0.key"), "key-3");
	ly_fileset_cleanup(&fs);
	tmpdir_remove(&t);
}

static void
test_fileset_refusals(void **state)
{
	(void)state;
	struct tmpdir t;
	struct ly_fileset fs;
	struct ly_error e;
	char p[512];
	static const char *const bad_names[] = { "", ".hidden", "a/b", "../x", "..", ".", "a b", "a\nb", "x*",
		"é" };

	tmpdir_make(&t);
	assert_int_equal(ly_fileset_init(&fs, t.path, NULL), LY_OK);
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
		assert_int_equal(ly_fileset_add(&fs, bad_names[i], (const uint8_t *)"x", 1, 0644, NULL), LY_E_INVALID);
	char longname[LY_FILESET_NAME_MAX + 2];
	memset(longname, 'a', sizeof(longname));
	longname[LY_FILESET_NAME_MAX + 1] = '\0';
	assert_int_equal(ly_fileset_add(&fs, longname, (const uint8_t *)"x", 1, 0644, NULL), LY_E_INVALID);
	longname[LY_FILESET_NAME_MAX] = '\0';
	assert_int_equal(ly_fileset_add(&fs, longname, (const uint8_t *)"x", 1, 0644, NULL), LY_OK);
	/* Modes beyond the permission bits (setuid, sticky) are refused. */
	assert_int_equal(ly_fileset_add(&fs, "s", (const uint8_t *)"x", 1, 04755, &e), LY_E_INVALID);
	ly_fileset_abort(&fs);
	ly_fileset_cleanup(&fs);

	/* Not a directory, or absent. */
	(void)snprintf(p, sizeof(p), "%s/file", t.path);
	write_file(t.path, "file", "x", 1);
	assert_int_equal(ly_fileset_init(&fs, p, &e), LY_E_IO);
	assert_non_null(strstr(e.msg, "Not a directory"));
	ly_fileset_cleanup(&fs);
	(void)snprintf(p, sizeof(p), "%s/absent", t.path);
	assert_int_equal(ly_fileset_init(&fs, p, &e), LY_E_IO);
	ly_fileset_cleanup(&fs);
	assert_int_equal(ly_fileset_init(&fs, "", &e), LY_E_INVALID);
	ly_fileset_cleanup(&fs);
	tmpdir_remove(&t);
}

/* At most LY_WRITE_FILES_MAX files in one update. */
static void
test_fileset_cap(void **state)
{
	(void)state;
	struct tmpdir t;
	struct ly_fileset fs;
	char name[32];
	struct stat st;

	/* 4,096 fsyncs: on tmpfs when there is one. */
	tmpdir_make_in(&t, stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp");
	assert_int_equal(ly_fileset_init(&fs, t.path, NULL), LY_OK);
	for (int i = 0; i < LY_WRITE_FILES_MAX; i++) {
		(void)snprintf(name, sizeof(name), "f.%d", i);
		assert_int_equal(ly_fileset_add(&fs, name, NULL, 0, 0644, NULL), LY_OK);
	}
	assert_int_equal(ly_fileset_add(&fs, "one.more", NULL, 0, 0644, NULL), LY_E_LIMIT);
	ly_fileset_cleanup(&fs); /* aborts: every temporary unlinked */
	size_t hidden;
	assert_int_equal(count_entries(t.path, &hidden), 0);
	tmpdir_remove(&t);
}

/* 0 when adding a file to `dir` fails with LY_E_IO, else 1 (2: the set cannot even start). */
static int
fileset_add_refused(const char *dir)
{
	struct ly_fileset fs;

	if (ly_fileset_init(&fs, dir, NULL) != LY_OK)
		return 2;
	ly_status st = ADD(&fs, "svid.0.pem", "c", 0644);
	ly_fileset_cleanup(&fs);
	return st == LY_E_IO ? 0 : 1;
}

/*
 * A directory we cannot write in: the add fails, nothing is left. Root
 * writes anywhere, so as root the add runs in a child that has become uid
 * and gid 65534 (the directory stays root's, 0555).
 */
static void
test_fileset_unwritable(void **state)
{
	(void)state;
	struct tmpdir t;
	size_t hidden;

	tmpdir_make(&t);
	assert_int_equal(chmod(t.path, 0555), 0);
	if (geteuid() != 0) {
		assert_int_equal(fileset_add_refused(t.path), 0);
	} else {
		pid_t child = fork();
		int status = 0;
		assert_true(child >= 0);
		if (child == 0) {
			if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
			    setresuid(65534, 65534, 65534) != 0)
				_exit(3);
			_exit(fileset_add_refused(t.path));
		}
		assert_int_equal(waitpid(child, &status, 0), child);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(count_entries(t.path, &hidden), 0);
	assert_int_equal(chmod(t.path, 0700), 0);
	tmpdir_remove(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signal_table),
		cmocka_unit_test(test_signal_refused),
		cmocka_unit_test(test_pid_parse_ok),
		cmocka_unit_test(test_pid_parse_refused),
		cmocka_unit_test(test_pid_file_read),
		cmocka_unit_test(test_signal_pid_file),
		cmocka_unit_test(test_fileset_commit),
		cmocka_unit_test(test_fileset_abort_keeps_previous),
		cmocka_unit_test(test_fileset_refusals),
		cmocka_unit_test(test_fileset_cap),
		cmocka_unit_test(test_fileset_unwritable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
