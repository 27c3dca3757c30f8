/*
 * test_sockpath.c: lib/sockpath.h on a real temporary directory: the
 * private socket directory is created 0700 under 0755 parents, reused
 * when it is ours and closed, refused when it is open to others, a link
 * or another user's; a stale socket is replaced and anything else at the
 * socket path is refused and left in place; malformed paths are refused;
 * a parent another user made or may write is refused before anything is
 * made under it. The peer check against real listeners (child processes,
 * as us or as uid 65534): believed in a safe directory, refused when a
 * parent is open or when another user squatted a directory under /tmp,
 * believed when root gave the user its directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/sockpath.h"
#include "testutil_skip.h"

struct fixture {
	char base[64];
	char dir[128];  /* base/a/b: the socket's directory */
	char sock[160]; /* base/a/b/api.sock */
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	(void)umask(022);
	(void)snprintf(f->base, sizeof(f->base), "/tmp/ly-sockpath-XXXXXX");
	if (mkdtemp(f->base) == NULL)
		return -1;
	(void)snprintf(f->dir, sizeof(f->dir), "%s/a/b", f->base);
	(void)snprintf(f->sock, sizeof(f->sock), "%s/api.sock", f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->base);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static mode_t
mode_of(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode;
}

/* Binds a socket at path and closes it: the file stays, as after a crash. */
static void
leave_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_true(S_ISSOCK(mode_of(path)));
}

static void
test_creates_private_dir(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	char parent[160];

	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	(void)snprintf(parent, sizeof(parent), "%s/a", f->base);
	assert_int_equal(mode_of(parent) & 07777, 0755);
	assert_true(S_ISDIR(mode_of(f->dir)));
	assert_int_equal(mode_of(f->dir) & 07777, 0700);
	/* Nothing is made at the socket path itself. */
	assert_int_equal(access(f->sock, F_OK), -1);
	/* Again: the directory exists, is ours and closed. */
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
}

static void
test_stale_socket_replaced(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;

	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	leave_socket(f->sock);
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	assert_int_equal(access(f->sock, F_OK), -1);
	/* Nothing there is fine too. */
	assert_int_equal(ly_sockpath_replace_stale(f->sock, &e), LY_OK);
}

static void
test_other_file_refused_and_kept(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	FILE *fp;

	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	fp = fopen(f->sock, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "exists and is not a socket"));
	assert_true(S_ISREG(mode_of(f->sock)));
	assert_int_equal(unlink(f->sock), 0);

	assert_int_equal(mkdir(f->sock, 0700), 0);
	assert_int_equal(ly_sockpath_replace_stale(f->sock, &e), LY_E_INVALID);
	assert_true(S_ISDIR(mode_of(f->sock)));
}

static void
test_open_dir_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;

	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	leave_socket(f->sock);
	for (unsigned i = 0; i < 2; i++) {
		mode_t m = i == 0 ? 0750 : 0701;
		assert_int_equal(chmod(f->dir, m), 0);
		assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_E_INVALID);
		assert_non_null(strstr(e.msg, "must be a directory of ours with mode 0700"));
		assert_non_null(strstr(e.msg, f->dir));
		/* Refused before the stale socket is touched. */
		assert_true(S_ISSOCK(mode_of(f->sock)));
	}
	/* Never loosened or mended by us: still as the operator left it. */
	assert_int_equal(mode_of(f->dir) & 07777, 0701);
}

static void
test_link_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	char real[160], lpath[160], lsock[192];

	/* A 0700 directory of ours, reached through a link: refused (the link could be re-pointed). */
	(void)snprintf(real, sizeof(real), "%s/real", f->base);
	(void)snprintf(lpath, sizeof(lpath), "%s/link", f->base);
	(void)snprintf(lsock, sizeof(lsock), "%s/api.sock", lpath);
	assert_int_equal(mkdir(real, 0700), 0);
	assert_int_equal(symlink(real, lpath), 0);
	assert_int_equal(ly_sockpath_private_prepare(lsock, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "is a link"));
}

static void
test_not_a_dir(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	char file[160], under[192], deeper[224];
	FILE *fp;

	(void)snprintf(file, sizeof(file), "%s/file", f->base);
	fp = fopen(file, "w");
	assert_non_null(fp);
	fclose(fp);
	/* The socket's directory is a file. */
	(void)snprintf(under, sizeof(under), "%s/api.sock", file);
	assert_int_equal(ly_sockpath_private_prepare(under, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "not a directory"));
	/* A parent is a file: refused by the walk, named. */
	(void)snprintf(deeper, sizeof(deeper), "%s/x/api.sock", file);
	assert_int_equal(ly_sockpath_private_prepare(deeper, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "is a file, not a directory"));
}

static void
test_other_owner_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;

	/* Only root can give a directory away. */
	if (geteuid() != 0)
		LY_SKIP("needs root (chown to another uid)");
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	assert_int_equal(chown(f->dir, 65534, 65534), 0);
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_E_UNTRUSTED);
	assert_non_null(strstr(e.msg, "uid 65534"));
}

static void
test_squatted_parent_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	char a[96];

	/* Issue 19: another user made a parent first (as /tmp/lanyard-server): refused, nothing made under it. */
	if (geteuid() != 0)
		skip();
	(void)snprintf(a, sizeof(a), "%s/a", f->base);
	assert_int_equal(mkdir(a, 0755), 0);
	assert_int_equal(chown(a, 65534, 65534), 0);
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_E_UNTRUSTED);
	assert_non_null(strstr(e.msg, "owned by uid 65534"));
	assert_int_equal(access(f->dir, F_OK), -1);
	/* Root's, but open to all (not sticky): refused too. */
	assert_int_equal(chown(a, 0, 0), 0);
	assert_int_equal(chmod(a, 0777), 0);
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_E_UNTRUSTED);
	assert_non_null(strstr(e.msg, "writable by others"));
	assert_int_equal(access(f->dir, F_OK), -1);
}

/* A listener at `path`, as `uid` (a child process); returns its pid. */
static pid_t
listen_as(const char *path, uid_t uid)
{
	int ready[2];
	char c;

	assert_int_equal(pipe(ready), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd;
		close(ready[0]);
		if ((uid != 0 && (setgid(uid) != 0 || setuid(uid) != 0)) || (fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0)
			_exit(1);
		memcpy(sa.sun_path, path, strlen(path) + 1);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		for (;;) {
			/* Accepts and closes; nothing is ever sent. */
			int c2 = accept(fd, NULL, NULL);
			if (c2 >= 0)
				close(c2);
		}
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	return pid;
}

static void
stop(pid_t pid)
{
	int st;

	kill(pid, SIGKILL);
	(void)waitpid(pid, &st, 0);
}

static void
test_peer_check(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	uid_t uid = 1;
	char sq[96], sqsock[128];

	/* Nothing there; a stale socket nobody listens on: unreachable (LY_E_IO, the system's reason). */
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	assert_int_equal(ly_sockpath_peer_check(f->sock, &uid, NULL, &e), LY_E_IO);
	leave_socket(f->sock);
	assert_int_equal(ly_sockpath_peer_check(f->sock, &uid, NULL, &e), LY_E_IO);
	assert_non_null(strstr(e.msg, "Connection refused"));
	assert_int_equal(unlink(f->sock), 0);
	/* The daemon (us) in its own 0700 directory: believed. */
	pid_t pid = listen_as(f->sock, geteuid());
	assert_int_equal(ly_sockpath_peer_check(f->sock, &uid, NULL, &e), LY_OK);
	assert_int_equal(uid, geteuid());
	/* The judged connection itself, handed over. */
	int fd = -1;
	assert_int_equal(ly_sockpath_peer_check(f->sock, &uid, &fd, &e), LY_OK);
	assert_true(fd >= 0);
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen), 0);
	assert_int_equal(cred.uid, geteuid());
	close(fd);
	/* A parent that others may write: whoever listens, refused (the socket could be swapped). */
	char a[96];
	(void)snprintf(a, sizeof(a), "%s/a", f->base);
	assert_int_equal(chmod(a, 0777), 0);
	assert_int_equal(ly_sockpath_peer_check(f->sock, &uid, NULL, &e), LY_E_UNTRUSTED);
	assert_non_null(strstr(e.msg, "writable by others"));
	assert_int_equal(chmod(a, 0755), 0);
	stop(pid);
	if (geteuid() != 0)
		return;
	/* Issue 19: uid 65534 took a name under /tmp first and listens there: refused, uid named. */
	(void)snprintf(sq, sizeof(sq), "/tmp/ly-sockpath-squat-XXXXXX");
	assert_non_null(mkdtemp(sq));
	(void)snprintf(sqsock, sizeof(sqsock), "%s/api.sock", sq);
	assert_int_equal(chown(sq, 65534, 65534), 0);
	pid = listen_as(sqsock, 65534);
	fd = 5;
	assert_int_equal(ly_sockpath_peer_check(sqsock, &uid, &fd, &e), LY_E_UNTRUSTED);
	assert_int_equal(fd, -1);
	assert_int_equal(uid, 65534);
	assert_non_null(strstr(e.msg, "runs as uid 65534, not root or us"));
	stop(pid);
	assert_int_equal(unlink(sqsock), 0);
	assert_int_equal(rmdir(sq), 0);
}

static void
test_owner_check(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	uid_t uid = 1;
	char sq[64], sqsock[96];

	/* Absent: nothing to talk to yet. */
	assert_int_equal(ly_sockpath_owner_check(f->sock, &uid, &e), LY_E_NOT_FOUND);
	/* Ours, in directories of ours: fine, whether anything listens or not. */
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_OK);
	assert_int_equal(ly_sockpath_owner_check(f->sock, &uid, &e), LY_OK);
	assert_int_equal(uid, geteuid());
	/* A parent open to all: refused. */
	char a[96];
	(void)snprintf(a, sizeof(a), "%s/a", f->base);
	assert_int_equal(chmod(a, 0777), 0);
	assert_int_equal(ly_sockpath_owner_check(f->sock, &uid, &e), LY_E_UNTRUSTED);
	assert_non_null(strstr(e.msg, "writable by others"));
	if (geteuid() != 0)
		return;
	/* Another user's directory right under /tmp: refused, named. */
	(void)snprintf(sq, sizeof(sq), "/tmp/ly-sockpath-squat-XXXXXX");
	assert_non_null(mkdtemp(sq));
	(void)snprintf(sqsock, sizeof(sqsock), "%s/api.sock", sq);
	assert_int_equal(chown(sq, 65534, 65534), 0);
	assert_int_equal(ly_sockpath_owner_check(sqsock, &uid, &e), LY_E_UNTRUSTED);
	assert_int_equal(uid, 65534);
	assert_non_null(strstr(e.msg, "its directory belongs to uid 65534, not root or us"));
	assert_int_equal(rmdir(sq), 0);
}

static void
test_peer_check_given_by_root(void **state)
{
	(void)state;
	struct ly_error e;
	char base[64], dir[96], sock[128], cmd[96];
	uid_t uid = 1;

	/* A service user's directory that root made in a directory only root may write (/run/lanyard/). */
	if (geteuid() != 0)
		skip();
	(void)snprintf(base, sizeof(base), "/run/ly-sockpath-XXXXXX");
	if (mkdtemp(base) == NULL)
		skip();
	assert_int_equal(chmod(base, 0755), 0);
	(void)snprintf(dir, sizeof(dir), "%s/server", base);
	(void)snprintf(sock, sizeof(sock), "%s/api.sock", dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chown(dir, 65534, 65534), 0);
	pid_t pid = listen_as(sock, 65534);
	assert_int_equal(ly_sockpath_peer_check(sock, &uid, NULL, &e), LY_OK);
	assert_int_equal(uid, 65534);
	uid = 1;
	assert_int_equal(ly_sockpath_owner_check(sock, &uid, &e), LY_OK);
	assert_int_equal(uid, 65534);
	/* The same user's directory made group-writable: refused. */
	assert_int_equal(chmod(dir, 0770), 0);
	assert_int_equal(ly_sockpath_peer_check(sock, &uid, NULL, &e), LY_E_UNTRUSTED);
	assert_non_null(strstr(e.msg, "writable by its group"));
	stop(pid);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	assert_int_equal(system(cmd), 0);
}

static void
test_bad_paths(void **state)
{
	(void)state;
	struct ly_error e;
	char longp[sizeof(((struct sockaddr_un *)NULL)->sun_path) + 8];
	const struct {
		const char *path, *why;
	} bad[] = {
		{ "", "socket path is empty" },
		{ "api.sock", "is not absolute" },
		{ "rel/api.sock", "is not absolute" },
		{ "/api.sock", "must name a socket inside a directory" },
		{ "/tmp/", "must name a socket inside a directory" },
		{ "/", "must name a socket inside a directory" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ly_sockpath_private_prepare(bad[i].path, &e), LY_E_INVALID);
		assert_non_null(strstr(e.msg, bad[i].why));
	}
	/* One byte over what sockaddr_un holds (with its NUL). */
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[5] = '/';
	longp[sizeof(((struct sockaddr_un *)NULL)->sun_path)] = '\0';
	assert_int_equal(ly_sockpath_private_prepare(longp, &e), LY_E_LIMIT);
	/* No directory was made for it. */
	longp[5] = '\0';
	assert_int_equal(access(longp, F_OK), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_creates_private_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_socket_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_file_refused_and_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_dir_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_owner_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_squatted_parent_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owner_check, setup, teardown),
		cmocka_unit_test(test_peer_check_given_by_root),
		cmocka_unit_test(test_bad_paths),
	};
	return ly_test_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
