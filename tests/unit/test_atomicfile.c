/* test_atomicfile.c: lib/atomicfile.h: replaces whole, exact mode, nothing left on failure, links refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/atomicfile.h"

struct dir {
	char path[64];
	int fd;
};

static int
setup(void **state)
{
	struct dir *d = calloc(1, sizeof(*d));
	(void)snprintf(d->path, sizeof(d->path), "/tmp/ly-atomicfile-XXXXXX");
	assert_non_null(mkdtemp(d->path));
	d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(d->fd >= 0);
	*state = d;
	return 0;
}

static int
teardown(void **state)
{
	struct dir *d = *state;
	DIR *dd = fdopendir(d->fd);
	struct dirent *de;
	while ((de = readdir(dd)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			(void)unlinkat(dirfd(dd), de->d_name, 0);
	}
	closedir(dd);
	(void)rmdir(d->path);
	free(d);
	return 0;
}

/* Entries other than . and .. */
static size_t
entries(int fd)
{
	DIR *dd = fdopendir(dup(fd));
	struct dirent *de;
	size_t n = 0;
	rewinddir(dd);
	while ((de = readdir(dd)) != NULL)
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(dd);
	return n;
}

static void
read_back(int dfd, const char *name, char *out, size_t size, mode_t *mode)
{
	struct stat st;
	int fd = openat(dfd, name, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, out, size - 1);
	assert_true(n >= 0);
	out[n] = '\0';
	assert_int_equal(fstat(fd, &st), 0);
	*mode = st.st_mode & 07777;
	close(fd);
}

static void
test_write_and_replace(void **state)
{
	struct dir *d = *state;
	char buf[64];
	mode_t mode;
	mode_t old = umask(077); /* the mode is exact whatever the umask */

	assert_int_equal(ly_atomicfile_write(d->fd, "a.pem", "one", 3, 0644, NULL), LY_OK);
	read_back(d->fd, "a.pem", buf, sizeof(buf), &mode);
	assert_string_equal(buf, "one");
	assert_int_equal(mode, 0644);
	assert_int_equal(ly_atomicfile_write(d->fd, "a.pem", "second", 6, 0600, NULL), LY_OK);
	read_back(d->fd, "a.pem", buf, sizeof(buf), &mode);
	assert_string_equal(buf, "second");
	assert_int_equal(mode, 0600);
	assert_int_equal(ly_atomicfile_write(d->fd, "empty", NULL, 0, 0600, NULL), LY_OK);
	assert_int_equal(entries(d->fd), 2); /* no temporary file left */
	umask(old);
}

/* Hostile: bad names and modes, a name too long, a failed rename: nothing left, the old file intact. */
static void
test_refusals_leave_nothing(void **state)
{
	struct dir *d = *state;
	struct ly_error err;
	char buf[64], lng[300];
	mode_t mode;

	assert_int_equal(ly_atomicfile_write(d->fd, "keep", "old", 3, 0600, NULL), LY_OK);
	assert_int_equal(ly_atomicfile_write(d->fd, "a/b", "x", 1, 0600, &err), LY_E_INVALID);
	assert_int_equal(ly_atomicfile_write(d->fd, "..", "x", 1, 0600, &err), LY_E_INVALID);
	assert_int_equal(ly_atomicfile_write(d->fd, "", "x", 1, 0600, &err), LY_E_INVALID);
	assert_int_equal(ly_atomicfile_write(d->fd, "m", "x", 1, 04755, &err), LY_E_INVALID);
	assert_int_equal(ly_atomicfile_write(d->fd, "n", NULL, 1, 0600, &err), LY_E_INVALID);
	memset(lng, 'x', sizeof(lng) - 1);
	lng[sizeof(lng) - 1] = '\0';
	assert_int_equal(ly_atomicfile_write(d->fd, lng, "x", 1, 0600, &err), LY_E_LIMIT);
	/* The rename fails (the name is a directory that is not empty): the temporary file goes. */
	assert_int_equal(mkdirat(d->fd, "dir", 0700), 0);
	assert_int_equal(mkdirat(d->fd, "dir/sub", 0700), 0);
	assert_int_equal(ly_atomicfile_write(d->fd, "dir", "x", 1, 0600, &err), LY_E_IO);
	assert_non_null(strstr(err.msg, "dir: rename"));
	assert_int_equal(unlinkat(d->fd, "dir/sub", AT_REMOVEDIR), 0);
	assert_int_equal(unlinkat(d->fd, "dir", AT_REMOVEDIR), 0);
	assert_int_equal(entries(d->fd), 1);
	read_back(d->fd, "keep", buf, sizeof(buf), &mode);
	assert_string_equal(buf, "old");
}

/* A link at the name is replaced, never written through; a planted temporary name is not reused. */
static void
test_link_replaced_not_followed(void **state)
{
	struct dir *d = *state;
	char buf[64];
	mode_t mode;
	struct stat st;

	assert_int_equal(ly_atomicfile_write(d->fd, "target", "secret", 6, 0600, NULL), LY_OK);
	assert_int_equal(symlinkat("target", d->fd, "link"), 0);
	assert_int_equal(ly_atomicfile_write(d->fd, "link", "new", 3, 0600, NULL), LY_OK);
	assert_int_equal(fstatat(d->fd, "link", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	read_back(d->fd, "target", buf, sizeof(buf), &mode);
	assert_string_equal(buf, "secret");
}

static void
test_stage_and_is_temp(void **state)
{
	struct dir *d = *state;
	char tmp[8 + LY_ATOMICFILE_TMP_EXTRA], small[8];
	struct ly_error err;

	assert_int_equal(ly_atomicfile_stage(d->fd, "svid.pem", "x", 1, 0644, tmp, sizeof(tmp), NULL), LY_OK);
	assert_true(ly_atomicfile_is_temp(tmp));
	assert_false(ly_atomicfile_is_temp("svid.pem"));
	assert_int_equal(entries(d->fd), 1);
	assert_int_equal(unlinkat(d->fd, tmp, 0), 0);
	assert_int_equal(ly_atomicfile_stage(d->fd, "svid.pem", "x", 1, 0644, small, sizeof(small), &err), LY_E_LIMIT);
	assert_int_equal(entries(d->fd), 0);
	/* A directory that is not one: every step fails cleanly. */
	assert_int_equal(ly_atomicfile_write(-1, "x", "x", 1, 0600, &err), LY_E_IO);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_and_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals_leave_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_replaced_not_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stage_and_is_temp, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
