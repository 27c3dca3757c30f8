/* fsperm.c: see fsperm.h. */
#include "fsperm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* As the kernel's own limit on links in one lookup. */
#define LINKS_MAX 40

static const char *
kind_of(mode_t m)
{
	return S_ISDIR(m) ? "a directory" : S_ISLNK(m) ? "a link" : S_ISREG(m) ? "a file" : "not a directory";
}

/*
 * One step of the walk: `st` is what lstat found at `at`. Links and
 * directories alike must be root's or uid's; a directory may be open to
 * others only when sticky and not the last.
 */
static ly_status
check_step(const char *at, const struct stat *st, uid_t uid, bool last, struct ly_error *err)
{
	if (st->st_uid != 0 && st->st_uid != uid)
		return ly_error_set(err, LY_E_UNTRUSTED,
		    "%s is owned by uid %u: only root or uid %u may own a directory on this path", at,
		    (unsigned)st->st_uid, (unsigned)uid);
	if (S_ISDIR(st->st_mode) && (st->st_mode & 022) != 0 && (last || (st->st_mode & S_ISVTX) == 0))
		return ly_error_set(err, LY_E_UNTRUSTED, "%s is writable by %s (mode %04o, uid %u)", at,
		    (st->st_mode & 002) != 0 ? "others" : "its group", (unsigned)(st->st_mode & 07777),
		    (unsigned)st->st_uid);
	return LY_OK;
}

/* mkdir `at` with exactly `mode` (a directory nobody else can use yet: chmod after mkdir is safe). */
static ly_status
make_dir(const char *at, mode_t mode, struct ly_error *err)
{
	if (mkdir(at, mode) != 0) {
		if (errno == EEXIST)
			return LY_OK; /* made meanwhile: judged below like any other */
		return ly_error_set(err, LY_E_IO, "mkdir %s: %s", at, strerror(errno));
	}
	if (chmod(at, mode) != 0)
		return ly_error_set(err, LY_E_IO, "chmod %s: %s", at, strerror(errno));
	return LY_OK;
}

/* Whether nothing but slashes and "." is left in `p`. */
static bool
rest_is_empty(const char *p)
{
	for (;;) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			return true;
		if (p[0] == '.' && (p[1] == '/' || p[1] == '\0')) {
			p++;
			continue;
		}
		return false;
	}
}

ly_status
ly_fsperm_dir_chain(const char *dir, uid_t uid, unsigned flags, mode_t leaf_mode, struct ly_fsperm_chain *out,
    struct ly_error *err)
{
	/* todo: what is left to walk; cur: the directory reached so far, without links ("" is /). */
	char todo[PATH_MAX], cur[PATH_MAX], target[PATH_MAX];
	struct ly_fsperm_chain res = { .given_by_root = true };
	bool seen_other = false; /* a directory not root's was passed */
	struct stat st;
	unsigned links = 0;

	if (dir == NULL || dir[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "%s: not an absolute path", dir != NULL ? dir : "(null)");
	if (strlen(dir) >= sizeof(todo))
		return ly_error_set(err, LY_E_LIMIT, "%.64s...: path too long", dir);
	memcpy(todo, dir, strlen(dir) + 1);
	cur[0] = '\0';
	if (lstat("/", &st) != 0)
		return ly_error_set(err, LY_E_IO, "stat /: %s", strerror(errno));
	LY_TRY(check_step("/", &st, uid, rest_is_empty(todo), err));
	res.leaf = st;
	char *p = todo;
	for (;;) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		char *end = strchr(p, '/');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
		char *rest = p + n;
		if (n == 1 && p[0] == '.') {
			p = rest;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			char *slash = strrchr(cur, '/');
			if (slash != NULL)
				*slash = '\0';
			p = rest;
			if (seen_other)
				res.given_by_root = false; /* back above it: not worth judging */
			if (lstat(cur[0] != '\0' ? cur : "/", &res.leaf) != 0)
				return ly_error_set(err, LY_E_IO, "stat %s: %s", cur[0] != '\0' ? cur : "/", strerror(errno));
			continue;
		}
		size_t clen = strlen(cur);
		if (clen + 1 + n >= sizeof(cur))
			return ly_error_set(err, LY_E_LIMIT, "%.64s...: path too long", dir);
		cur[clen] = '/';
		memcpy(cur + clen + 1, p, n);
		cur[clen + 1 + n] = '\0';
		bool last = rest_is_empty(rest);
		if (lstat(cur, &st) != 0) {
			if (errno != ENOENT)
				return ly_error_set(err, LY_E_IO, "stat %s: %s", cur, strerror(errno));
			if ((flags & LY_FSPERM_CREATE) == 0)
				return ly_error_set(err, LY_E_NOT_FOUND, "%s: %s", cur, strerror(ENOENT));
			LY_TRY(make_dir(cur, last ? leaf_mode : 0755, err));
			if (lstat(cur, &st) != 0)
				return ly_error_set(err, LY_E_IO, "stat %s: %s", cur, strerror(errno));
		}
		LY_TRY(check_step(cur, &st, uid, last, err));
		if (S_ISLNK(st.st_mode)) {
			if (last && (flags & LY_FSPERM_LEAF_NOFOLLOW) != 0)
				return ly_error_set(err, LY_E_INVALID, "%s is a link", cur);
			if (++links > LINKS_MAX)
				return ly_error_set(err, LY_E_LIMIT, "%s: too many links", dir);
			ssize_t tn = readlink(cur, target, sizeof(target));
			if (tn < 0)
				return ly_error_set(err, LY_E_IO, "readlink %s: %s", cur, strerror(errno));
			if ((size_t)tn + 1 + strlen(rest) >= sizeof(todo))
				return ly_error_set(err, LY_E_LIMIT, "%.64s...: path too long", dir);
			/* The link is replaced by its target: todo = target + rest. */
			size_t rlen = strlen(rest);
			memmove(todo + tn, rest, rlen + 1);
			memcpy(todo, target, (size_t)tn);
			p = todo;
			cur[clen] = '\0'; /* back to the link's directory */
			if (target[0] == '/') {
				cur[0] = '\0';
				if (lstat("/", &res.leaf) != 0)
					return ly_error_set(err, LY_E_IO, "stat /: %s", strerror(errno));
			}
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			return ly_error_set(err, LY_E_INVALID, "%s is %s, not a directory", cur, kind_of(st.st_mode));
		if (!seen_other && st.st_uid != 0) {
			/* res.leaf is still the directory that holds this one. */
			seen_other = true;
			res.given_by_root = res.leaf.st_uid == 0 && (res.leaf.st_mode & 022) == 0;
		}
		res.leaf = st;
		p = rest;
	}
	/* A walk that ended on ".." ends on a directory judged as one above the last: judge it as the last. */
	LY_TRY(check_step(cur[0] != '\0' ? cur : "/", &res.leaf, uid, true, err));
	if (out != NULL)
		*out = res;
	return LY_OK;
}

ly_status
ly_fsperm_check_file(int fd, const char *shown, unsigned flags, struct ly_error *err)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return ly_error_set(err, LY_E_IO, "%s: stat: %s", shown, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return ly_error_set(err, LY_E_INVALID, "%s: not a regular file", shown);
	if (st.st_uid != geteuid())
		return ly_error_set(err, LY_E_INVALID, "%s: owned by uid %u, not by us (uid %u)", shown,
		    (unsigned)st.st_uid, (unsigned)geteuid());
	if ((st.st_mode & 077) == 0)
		return LY_OK;
	if ((flags & LY_FSPERM_TIGHTEN) == 0)
		return ly_error_set(err, LY_E_INVALID, "%s: mode %04o, not 0600: group or others may use it", shown,
		    (unsigned)(st.st_mode & 07777));
	if (fchmod(fd, st.st_mode & 0700) != 0)
		return ly_error_set(err, LY_E_IO, "%s: chmod: %s", shown, strerror(errno));
	return LY_OK;
}

ly_status
ly_fsperm_openat(int at, const char *name, const char *shown, int oflags, unsigned flags, int *out,
    struct ly_error *err)
{
	ly_status rc;

	*out = -1;
	/* O_NONBLOCK: a FIFO planted at `name` must not block the open; dropped again below. */
	int fd = openat(at, name, oflags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0600);
	if (fd < 0) {
		if (errno == ENOENT && (oflags & O_CREAT) == 0)
			return ly_error_set(err, LY_E_NOT_FOUND, "%s: absent", shown);
		if (errno == ELOOP)
			return ly_error_set(err, LY_E_INVALID, "%s: is a symbolic link", shown);
		return ly_error_set(err, LY_E_IO, "%s: open: %s", shown, strerror(errno));
	}
	if ((rc = ly_fsperm_check_file(fd, shown, flags, err)) != LY_OK) {
		(void)close(fd);
		return rc;
	}
	if ((oflags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s: fcntl: %s", shown, strerror(errno));
		(void)close(fd);
		return rc;
	}
	*out = fd;
	return LY_OK;
}

/* mkdir -p of the parents of `path` (relative to `at`), 0755 less the umask; existing ones are left alone. */
static ly_status
make_parents(int at, const char *path, struct ly_error *err)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return ly_error_set(err, LY_E_LIMIT, "%.64s...: path too long", path);
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdirat(at, buf, 0755) != 0 && errno != EEXIST)
			return ly_error_set(err, LY_E_IO, "mkdir %s: %s", buf, strerror(errno));
		*p = '/';
	}
	return LY_OK;
}

ly_status
ly_fsperm_private_dir(int at, const char *path, unsigned flags, int *out, struct ly_error *err)
{
	struct stat st;
	ly_status rc = LY_OK;
	int fd = -1;

	if (out != NULL)
		*out = -1;
	if (path == NULL || path[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "no directory given");
	if ((flags & LY_FSPERM_PARENTS) != 0)
		LY_TRY(make_parents(at, path, err));
	if (mkdirat(at, path, 0700) != 0 && errno != EEXIST)
		return ly_error_set(err, LY_E_IO, "%s: cannot create the directory: %s", path, strerror(errno));
	fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		/* O_DIRECTORY|O_NOFOLLOW on a link: ENOTDIR (or ELOOP); tell which. */
		int e = errno;
		if ((e == ENOTDIR || e == ELOOP) && fstatat(at, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return ly_error_set(err, LY_E_INVALID, "%s is %s, not a directory (links are refused)", path,
			    kind_of(st.st_mode));
		return ly_error_set(err, LY_E_IO, "%s: cannot open the directory: %s", path, strerror(e));
	}
	if (fstat(fd, &st) != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s: stat: %s", path, strerror(errno));
		goto out;
	}
	if (st.st_uid != geteuid()) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: owned by uid %u, not by us (uid %u)", path,
		    (unsigned)st.st_uid, (unsigned)geteuid());
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		if (fchmod(fd, 0700) != 0) {
			rc = ly_error_set(err, LY_E_IO, "%s: mode %04o and cannot make it 0700: %s", path,
			    (unsigned)(st.st_mode & 07777), strerror(errno));
			goto out;
		}
		log_warn("%s: mode was %04o, made 0700", path, (unsigned)(st.st_mode & 07777));
	}
	if (out != NULL) {
		*out = fd;
		fd = -1;
	}
out:
	if (fd >= 0)
		(void)close(fd);
	return rc;
}
