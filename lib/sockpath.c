/* sockpath.c: see sockpath.h. */
#include "sockpath.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "fsperm.h"

#define SUN_PATH_SIZE sizeof(((struct sockaddr_un *)NULL)->sun_path)

ly_status
ly_sockpath_replace_stale(const char *path, struct ly_error *err)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return LY_OK;
		return ly_error_set(err, LY_E_IO, "stat %s: %s", path, strerror(errno));
	}
	if (!S_ISSOCK(st.st_mode))
		return ly_error_set(err, LY_E_INVALID, "%s: exists and is not a socket", path);
	if (unlink(path) != 0)
		return ly_error_set(err, LY_E_IO, "unlink %s: %s", path, strerror(errno));
	return LY_OK;
}

/* The directory part of `path` (checked by ly_config_check_socket_path) into `dir`. */
static void
dir_of(const char *path, char dir[SUN_PATH_SIZE])
{
	size_t dlen = (size_t)(strrchr(path, '/') - path);

	memcpy(dir, path, dlen);
	dir[dlen] = '\0';
}

ly_status
ly_sockpath_private_prepare(const char *path, struct ly_error *err)
{
	char dir[SUN_PATH_SIZE];
	struct ly_fsperm_chain chain;
	const struct stat *st = &chain.leaf;

	/* Absolute, inside a directory, within sun_path: the rule the config files already apply. */
	LY_TRY(ly_config_check_socket_path(path, err));
	dir_of(path, dir);
	/* Parents 0755, the directory 0700, each root's or ours and closed to others (fsperm.h). */
	LY_TRY(ly_fsperm_dir_chain(dir, geteuid(), LY_FSPERM_CREATE | LY_FSPERM_LEAF_NOFOLLOW, 0700, &chain, err));
	if (st->st_uid != geteuid() || (st->st_mode & 077) != 0)
		return ly_error_set(err, LY_E_INVALID,
		    "%s: must be a directory of ours with mode 0700 (is %03o, uid %u)", dir,
		    (unsigned)(st->st_mode & 0777), (unsigned)st->st_uid);
	return ly_sockpath_replace_stale(path, err);
}

/*
 * The rule both checks share (sockpath.h): `dir` is safe for `uid` (only
 * root and uid can change it), and uid is root, us, or was given its
 * directory by root. `who` starts the refusal ("it runs as", "its
 * directory belongs to").
 */
static ly_status
judge(const char *dir, uid_t uid, const char *who, struct ly_error *err)
{
	struct ly_fsperm_chain chain;
	ly_status rc;

	/* 1: only root and uid can change what is in `dir`. */
	if ((rc = ly_fsperm_dir_chain(dir, uid, 0, 0, &chain, err)) != LY_OK)
		return ly_error_wrap(err, rc == LY_E_NOT_FOUND ? LY_E_IO : rc, "unsafe path (%s uid %u)", who,
		    (unsigned)uid);
	/* 2: uid is one we trust by itself, or root gave it its directory. */
	if (uid != 0 && uid != geteuid() && !chain.given_by_root)
		return ly_error_set(err, LY_E_UNTRUSTED,
		    "%s uid %u, not root or us (uid %u), and root did not give it %s (its first directory not root's "
		    "is not in one only root may write)", who, (unsigned)uid, (unsigned)geteuid(), dir);
	return LY_OK;
}

ly_status
ly_sockpath_peer_check(const char *path, uid_t *peer_uid, int *fd_out, struct ly_error *err)
{
	char dir[SUN_PATH_SIZE];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	ly_status rc;
	int fd = -1;

	if (fd_out != NULL)
		*fd_out = -1;
	LY_TRY(ly_config_check_socket_path(path, err));
	dir_of(path, dir);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ly_error_set(err, LY_E_IO, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s", strerror(errno));
		goto out;
	}
	/* The listener's credentials, fixed when it called listen(); nothing is sent before they are judged. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		rc = ly_error_set(err, LY_E_IO, "SO_PEERCRED: %s", strerror(errno));
		goto out;
	}
	if (peer_uid != NULL)
		*peer_uid = cred.uid;
	if ((rc = judge(dir, cred.uid, "it runs as", err)) != LY_OK)
		goto out;
	if (fd_out != NULL) {
		*fd_out = fd;
		fd = -1;
	}
	rc = LY_OK;
out:
	if (fd >= 0)
		(void)close(fd);
	return rc;
}

ly_status
ly_sockpath_owner_check(const char *path, uid_t *owner_uid, struct ly_error *err)
{
	char dir[SUN_PATH_SIZE];
	struct stat st;

	LY_TRY(ly_config_check_socket_path(path, err));
	dir_of(path, dir);
	/* Whose directory it is (through links: judge walks them all again, with this owner). */
	if (stat(dir, &st) != 0)
		return ly_error_set(err, errno == ENOENT ? LY_E_NOT_FOUND : LY_E_IO, "%s: %s", dir, strerror(errno));
	if (owner_uid != NULL)
		*owner_uid = st.st_uid;
	return judge(dir, st.st_uid, "its directory belongs to", err);
}
