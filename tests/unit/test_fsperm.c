/*
 * test_fsperm.c: lib/fsperm.h on real temporary directories. The suite
 * runs as root, so "another user" is uid 65534 made with chown/lchown;
 * those cases skip when not root. The directory walk: created with exact
 * modes, refused at the first step another user owns or may write
 * (directories and links alike), a sticky directory allowed above the
 * last only, links followed and judged where they lie, a link as the last
 * step refused on request; files: ours, regular, not a link, 0600 or
 * tightened; private directories: made 0700, tightened, links and other
 * users' refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsperm.h"

#define OTHER 65534

struct fixture {
	char base[64]; /* /tmp/ly-fsperm-XXXXXX, ours, 0700, under sticky /tmp */
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	(void)umask(022);
	(void)snprintf(f->base, sizeof(f->base), "/tmp/ly-fsperm-XXXXXX");
	if (mkdtemp(f->base) == NULL)
		return -1;
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
	return st.st_mode & 07777;
}

static void
path_at(char *out, size_t size, const struct fixture *f, const char *rel)
{
	assert_true((size_t)snprintf(out, size, "%s/%s", f->base, rel) < size);
}

static void
make_file(const char *path, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static void
expect(ly_status got, const struct ly_error *e, ly_status want, const char *needle)
{
	if (got != want || (needle != NULL && strstr(e->msg, needle) == NULL))
		fail_msg("got %d \"%s\", want %d with \"%s\"", (int)got, e->msg, (int)want, needle != NULL ? needle : "");
}

/* ---- the directory walk ---- */

static void
test_chain_creates_with_exact_modes(void **state)
{
	struct fixture *f = *state;
	struct ly_fsperm_chain c;
	struct ly_error e;
	char dir[160], mid[160];

	path_at(dir, sizeof(dir), f, "a/b/c");
	path_at(mid, sizeof(mid), f, "a/b");
	(void)umask(077); /* the daemons' umask: modes are set whatever it is */
	expect(ly_fsperm_dir_chain(dir, geteuid(), LY_FSPERM_CREATE, 0700, &c, &e), &e, LY_OK, NULL);
	(void)umask(022);
	assert_int_equal(mode_of(mid), 0755);
	assert_int_equal(mode_of(dir), 0700);
	assert_true(S_ISDIR(c.leaf.st_mode));
	assert_int_equal(c.leaf.st_mode & 07777, 0700);
	/* Root's all the way (as root); ours under the sticky /tmp (not root): not given by root. */
	assert_int_equal(c.given_by_root, geteuid() == 0);
	/* Again, without creating: the same answer. */
	expect(ly_fsperm_dir_chain(dir, geteuid(), 0, 0, &c, &e), &e, LY_OK, NULL);
	/* Missing and not to be created. */
	path_at(dir, sizeof(dir), f, "a/nope/c");
	expect(ly_fsperm_dir_chain(dir, geteuid(), 0, 0, &c, &e), &e, LY_E_NOT_FOUND, "a/nope");
	assert_int_equal(access(dir, F_OK), -1);
}

static void
test_chain_given_by_root(void **state)
{
	(void)state;
	struct ly_fsperm_chain c;
	struct ly_error e;
	struct stat st;

	/* /etc: root's, 0755, under /: root's alone above it. */
	if (lstat("/etc", &st) != 0 || st.st_uid != 0 || (st.st_mode & 022) != 0 || lstat("/", &st) != 0 ||
	    st.st_uid != 0 || (st.st_mode & 022) != 0)
		skip();
	expect(ly_fsperm_dir_chain("/etc", OTHER, 0, 0, &c, &e), &e, LY_OK, NULL);
	assert_true(c.given_by_root);
	expect(ly_fsperm_dir_chain("/etc/.", OTHER, 0, 0, &c, &e), &e, LY_OK, NULL);
	assert_true(c.given_by_root);
}

static void
test_chain_given_to_a_user(void **state)
{
	struct fixture *f = *state;
	struct ly_fsperm_chain c;
	struct ly_error e;
	char a[160], dir[160];

	if (geteuid() != 0)
		skip();
	path_at(a, sizeof(a), f, "a");
	path_at(dir, sizeof(dir), f, "a/b");
	assert_int_equal(mkdir(a, 0755), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chown(a, OTHER, OTHER), 0);
	assert_int_equal(chown(dir, OTHER, OTHER), 0);
	/* Another user's directories in root's 0700 one: root gave them. */
	expect(ly_fsperm_dir_chain(dir, OTHER, 0, 0, &c, &e), &e, LY_OK, NULL);
	assert_true(c.given_by_root);
	/* That user's directory right under the sticky /tmp: a name anyone could have taken first. */
	assert_int_equal(chown(f->base, OTHER, OTHER), 0);
	expect(ly_fsperm_dir_chain(dir, OTHER, 0, 0, &c, &e), &e, LY_OK, NULL);
	assert_false(c.given_by_root);
	/* Root's holder, but open to its group: not given by root alone. */
	assert_int_equal(chown(f->base, 0, 0), 0);
	assert_int_equal(chmod(f->base, 01770), 0);
	expect(ly_fsperm_dir_chain(dir, OTHER, 0, 0, &c, &e), &e, LY_OK, NULL);
	assert_false(c.given_by_root);
	/* For root, that user's directories are not safe at all. */
	expect(ly_fsperm_dir_chain(dir, 0, 0, 0, &c, &e), &e, LY_E_UNTRUSTED, "owned by uid 65534");
}

static void
test_chain_other_owner_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_fsperm_chain c;
	struct ly_error e;
	char squat[160], dir[192];

	if (geteuid() != 0)
		skip();
	/* Another user made the directory first (the squat under /tmp): refused, named, whatever its mode. */
	path_at(squat, sizeof(squat), f, "lanyard-server");
	assert_int_equal(mkdir(squat, 0755), 0);
	assert_int_equal(chown(squat, OTHER, OTHER), 0);
	assert_true((size_t)snprintf(dir, sizeof(dir), "%s/private", squat) < sizeof(dir));
	expect(ly_fsperm_dir_chain(dir, 0, LY_FSPERM_CREATE, 0700, &c, &e), &e, LY_E_UNTRUSTED, "owned by uid 65534");
	assert_non_null(strstr(e.msg, squat));
	/* Refused before anything was made under it. */
	assert_int_equal(access(dir, F_OK), -1);
	/* The last directory too. */
	expect(ly_fsperm_dir_chain(squat, 0, 0, 0, &c, &e), &e, LY_E_UNTRUSTED, "owned by uid 65534");
	/* For that user itself, its own directory is fine. */
	expect(ly_fsperm_dir_chain(squat, OTHER, 0, 0, &c, &e), &e, LY_OK, NULL);
}

static void
test_chain_writable_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_fsperm_chain c;
	struct ly_error e;
	char open_dir[160], dir[192];

	path_at(open_dir, sizeof(open_dir), f, "open");
	assert_true((size_t)snprintf(dir, sizeof(dir), "%s/sock", open_dir) < sizeof(dir));
	assert_int_equal(mkdir(open_dir, 0700), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	const struct {
		mode_t mode;
		ly_status want;
		const char *why;
	} cases[] = {
		{ 0777, LY_E_UNTRUSTED, "writable by others" },
		{ 0775, LY_E_UNTRUSTED, "writable by its group" },
		{ 0757, LY_E_UNTRUSTED, "writable by others" },
		{ 01777, LY_OK, NULL }, /* sticky, above the last: as /tmp */
		{ 0755, LY_OK, NULL },
		{ 0711, LY_OK, NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(chmod(open_dir, cases[i].mode), 0);
		expect(ly_fsperm_dir_chain(dir, geteuid(), 0, 0, &c, &e), &e, cases[i].want, cases[i].why);
	}
	/* Nor when the last one is reached by "..". */
	assert_int_equal(chmod(open_dir, 01777), 0);
	char up[224];
	assert_true((size_t)snprintf(up, sizeof(up), "%s/..", dir) < sizeof(up));
	expect(ly_fsperm_dir_chain(up, geteuid(), 0, 0, &c, &e), &e, LY_E_UNTRUSTED, "writable by others");
	/* A sticky directory is not enough as the last one. */
	assert_int_equal(chmod(open_dir, 0755), 0);
	assert_int_equal(chmod(dir, 01777), 0);
	expect(ly_fsperm_dir_chain(dir, geteuid(), 0, 0, &c, &e), &e, LY_E_UNTRUSTED, "writable by others");
	assert_int_equal(chmod(dir, 01770), 0);
	expect(ly_fsperm_dir_chain(dir, geteuid(), 0, 0, &c, &e), &e, LY_E_UNTRUSTED, "writable by its group");
}

static void
test_chain_links(void **state)
{
	struct fixture *f = *state;
	struct ly_fsperm_chain c;
	struct ly_error e;
	char real[160], sub[192], link[160], via[192], rel[160], loop[160], via_loop[192];

	path_at(real, sizeof(real), f, "real");
	assert_true((size_t)snprintf(sub, sizeof(sub), "%s/sub", real) < sizeof(sub));
	path_at(link, sizeof(link), f, "link");
	assert_true((size_t)snprintf(via, sizeof(via), "%s/sub", link) < sizeof(via));
	assert_int_equal(mkdir(real, 0755), 0);
	assert_int_equal(mkdir(sub, 0700), 0);
	/* An absolute link of ours to a safe directory: followed. */
	assert_int_equal(symlink(real, link), 0);
	expect(ly_fsperm_dir_chain(via, geteuid(), 0, 0, &c, &e), &e, LY_OK, NULL);
	assert_int_equal(c.leaf.st_mode & 07777, 0700);
	/* As the last step: followed, or refused on request. */
	expect(ly_fsperm_dir_chain(link, geteuid(), 0, 0, &c, &e), &e, LY_OK, NULL);
	expect(ly_fsperm_dir_chain(link, geteuid(), LY_FSPERM_LEAF_NOFOLLOW, 0, &c, &e), &e, LY_E_INVALID,
	    "is a link");
	/* A relative link with "..": resolved on the walked path. */
	path_at(rel, sizeof(rel), f, "real/rel");
	assert_int_equal(symlink("../real/sub", rel), 0);
	expect(ly_fsperm_dir_chain(rel, geteuid(), 0, 0, &c, &e), &e, LY_OK, NULL);
	assert_int_equal(c.leaf.st_mode & 07777, 0700);
	/* The target's directories are judged: an open one on the far side is refused. */
	assert_int_equal(chmod(real, 0777), 0);
	expect(ly_fsperm_dir_chain(via, geteuid(), 0, 0, &c, &e), &e, LY_E_UNTRUSTED, "writable by others");
	assert_non_null(strstr(e.msg, real));
	assert_int_equal(chmod(real, 0755), 0);
	/* A loop: bounded. */
	path_at(loop, sizeof(loop), f, "loop");
	assert_int_equal(symlink("loop", loop), 0);
	assert_true((size_t)snprintf(via_loop, sizeof(via_loop), "%s/x", loop) < sizeof(via_loop));
	expect(ly_fsperm_dir_chain(via_loop, geteuid(), 0, 0, &c, &e), &e, LY_E_LIMIT, "too many links");
	/* A link another user owns, in a sticky directory: they could re-point it, so refused. */
	if (geteuid() != 0)
		return;
	assert_int_equal(unlink(link), 0);
	assert_int_equal(symlink(real, link), 0);
	assert_int_equal(lchown(link, OTHER, OTHER), 0);
	expect(ly_fsperm_dir_chain(via, geteuid(), 0, 0, &c, &e), &e, LY_E_UNTRUSTED, "owned by uid 65534");
}

static void
test_chain_bad_input(void **state)
{
	struct fixture *f = *state;
	struct ly_fsperm_chain c;
	struct ly_error e;
	char file[160], under[192];

	expect(ly_fsperm_dir_chain("relative/dir", 0, 0, 0, &c, &e), &e, LY_E_INVALID, "not an absolute path");
	expect(ly_fsperm_dir_chain("", 0, 0, 0, &c, &e), &e, LY_E_INVALID, "not an absolute path");
	path_at(file, sizeof(file), f, "file");
	make_file(file, 0600);
	assert_true((size_t)snprintf(under, sizeof(under), "%s/x", file) < sizeof(under));
	expect(ly_fsperm_dir_chain(file, geteuid(), 0, 0, &c, &e), &e, LY_E_INVALID, "is a file, not a directory");
	expect(ly_fsperm_dir_chain(under, geteuid(), LY_FSPERM_CREATE, 0700, &c, &e), &e, LY_E_INVALID,
	    "not a directory");
}

/* ---- files ---- */

static void
test_openat_files(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	char file[160], link[160], fifo[160], sub[160];
	int fd;

	path_at(file, sizeof(file), f, "db");
	/* Created 0600 whatever the umask. */
	(void)umask(0);
	expect(ly_fsperm_openat(AT_FDCWD, file, "db", O_RDWR | O_CREAT, 0, &fd, &e), &e, LY_OK, NULL);
	(void)umask(022);
	close(fd);
	assert_int_equal(mode_of(file), 0600);
	/* Absent, not created. */
	path_at(sub, sizeof(sub), f, "absent");
	expect(ly_fsperm_openat(AT_FDCWD, sub, "absent", O_RDONLY, 0, &fd, &e), &e, LY_E_NOT_FOUND, "absent");
	assert_int_equal(fd, -1);
	/* Open to others: refused, or tightened on request (group and other bits only). */
	assert_int_equal(chmod(file, 0644), 0);
	expect(ly_fsperm_openat(AT_FDCWD, file, "db", O_RDONLY, 0, &fd, &e), &e, LY_E_INVALID, "mode 0644, not 0600");
	expect(ly_fsperm_openat(AT_FDCWD, file, "db", O_RDONLY, LY_FSPERM_TIGHTEN, &fd, &e), &e, LY_OK, NULL);
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	close(fd);
	assert_int_equal(mode_of(file), 0600);
	/* A link to it: refused, not followed. */
	path_at(link, sizeof(link), f, "link");
	assert_int_equal(symlink(file, link), 0);
	expect(ly_fsperm_openat(AT_FDCWD, link, "link", O_RDWR | O_CREAT, 0, &fd, &e), &e, LY_E_INVALID,
	    "symbolic link");
	/* Through a directory descriptor too. */
	int dfd = open(f->base, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	expect(ly_fsperm_openat(dfd, "link", "link", O_RDONLY, 0, &fd, &e), &e, LY_E_INVALID, "symbolic link");
	expect(ly_fsperm_openat(dfd, "db", "db", O_RDONLY, 0, &fd, &e), &e, LY_OK, NULL);
	close(fd);
	close(dfd);
	/* Not a regular file: a FIFO (must not block) and a directory. */
	path_at(fifo, sizeof(fifo), f, "fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	expect(ly_fsperm_openat(AT_FDCWD, fifo, "fifo", O_RDONLY, 0, &fd, &e), &e, LY_E_INVALID, "not a regular file");
	expect(ly_fsperm_openat(AT_FDCWD, f->base, "dir", O_RDONLY, 0, &fd, &e), &e, LY_E_INVALID,
	    "not a regular file");
}

static void
test_openat_other_owner(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	char file[160];
	int fd;

	if (geteuid() != 0)
		skip();
	/* Planted before the first start: 0600, regular, but another user's. Refused even with TIGHTEN. */
	path_at(file, sizeof(file), f, "datastore.sqlite3");
	make_file(file, 0600);
	assert_int_equal(chown(file, OTHER, OTHER), 0);
	expect(ly_fsperm_openat(AT_FDCWD, file, "datastore", O_RDWR | O_CREAT, LY_FSPERM_TIGHTEN, &fd, &e), &e,
	    LY_E_INVALID, "owned by uid 65534");
	assert_int_equal(fd, -1);
	/* Left as it was. */
	assert_int_equal(mode_of(file), 0600);
}

/* ---- private directories ---- */

static void
test_private_dir(void **state)
{
	struct fixture *f = *state;
	struct ly_error e;
	char dir[160], link[160], file[160];
	int fd;

	path_at(dir, sizeof(dir), f, "p/q/data");
	/* Without PARENTS a missing parent is an error; with it, made. */
	expect(ly_fsperm_private_dir(AT_FDCWD, dir, 0, NULL, &e), &e, LY_E_IO, "No such file");
	(void)umask(0);
	expect(ly_fsperm_private_dir(AT_FDCWD, dir, LY_FSPERM_PARENTS, &fd, &e), &e, LY_OK, NULL);
	(void)umask(022);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(mode_of(dir), 0700);
	/* Too open: made 0700. */
	assert_int_equal(chmod(dir, 0755), 0);
	expect(ly_fsperm_private_dir(AT_FDCWD, dir, 0, NULL, &e), &e, LY_OK, NULL);
	assert_int_equal(mode_of(dir), 0700);
	/* A link to a directory of ours: refused, and its target left as it was. */
	path_at(link, sizeof(link), f, "linkdir");
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(symlink(dir, link), 0);
	expect(ly_fsperm_private_dir(AT_FDCWD, link, LY_FSPERM_PARENTS, NULL, &e), &e, LY_E_INVALID, "is a link");
	assert_int_equal(mode_of(dir), 0755);
	/* A file. */
	path_at(file, sizeof(file), f, "file");
	make_file(file, 0600);
	expect(ly_fsperm_private_dir(AT_FDCWD, file, 0, NULL, &e), &e, LY_E_INVALID, "is a file");
	/* Relative to a directory descriptor (the CA's ca/). */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	expect(ly_fsperm_private_dir(dfd, "ca", 0, &fd, &e), &e, LY_OK, NULL);
	close(fd);
	assert_int_equal(symlinkat(dir, dfd, "ca2"), 0);
	expect(ly_fsperm_private_dir(dfd, "ca2", 0, &fd, &e), &e, LY_E_INVALID, "is a link");
	assert_int_equal(fd, -1);
	close(dfd);
	/* Another user's: refused, not chmod-ed. */
	if (geteuid() != 0)
		return;
	assert_int_equal(chown(dir, OTHER, OTHER), 0);
	expect(ly_fsperm_private_dir(AT_FDCWD, dir, 0, NULL, &e), &e, LY_E_INVALID, "owned by uid 65534");
	assert_int_equal(mode_of(dir), 0755);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chain_creates_with_exact_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_given_by_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_given_to_a_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_other_owner_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_writable_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_links, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_openat_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_openat_other_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_private_dir, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
