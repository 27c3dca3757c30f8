/*
 * test_sockpath.c: lib/sockpath.h on a real temporary directory: the
 * private socket directory is created 0700 under 0755 parents, reused
 * when it is ours and closed, refused when it is open to others, a link
 * or another user's; a stale socket is replaced and anything else at the
 * socket path is refused and left in place; malformed paths are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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
	/* A parent is a file: mkdir fails, the system's reason is given. */
	(void)snprintf(deeper, sizeof(deeper), "%s/x/api.sock", file);
	assert_int_equal(ly_sockpath_private_prepare(deeper, &e), LY_E_IO);
	assert_non_null(strstr(e.msg, "Not a directory"));
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
	assert_int_equal(ly_sockpath_private_prepare(f->sock, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "uid 65534"));
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
		cmocka_unit_test(test_bad_paths),
	};
	return ly_test_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
