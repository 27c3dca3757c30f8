/* sockpath.c: see sockpath.h. */
#include "sockpath.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"

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

ly_status
ly_sockpath_private_prepare(const char *path, struct ly_error *err)
{
	char dir[SUN_PATH_SIZE];
	struct stat st;

	/* Absolute, inside a directory, within sun_path: the rule the config files already apply. */
	LY_TRY(ly_config_check_socket_path(path, err));
	size_t dlen = (size_t)(strrchr(path, '/') - path);
	memcpy(dir, path, dlen);
	dir[dlen] = '\0';
	/* mkdir -p of the parents; one that exists is left as it is. */
	for (char *p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			return ly_error_set(err, LY_E_IO, "mkdir %s: %s", dir, strerror(errno));
		*p = '/';
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return ly_error_set(err, LY_E_IO, "mkdir %s: %s", dir, strerror(errno));
	if (lstat(dir, &st) != 0)
		return ly_error_set(err, LY_E_IO, "stat %s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0)
		return ly_error_set(err, LY_E_INVALID,
		    "%s: must be a directory of ours with mode 0700 (is %s %03o, uid %u)", dir,
		    S_ISDIR(st.st_mode) ? "a directory" : S_ISLNK(st.st_mode) ? "a link" : "not a directory",
		    (unsigned)(st.st_mode & 0777), (unsigned)st.st_uid);
	return ly_sockpath_replace_stale(path, err);
}
