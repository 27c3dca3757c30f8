/*
 * ca_store.c: the CA's files in <data_dir>/ca (ca_internal.h).
 *
 * Every operation goes through the directory's descriptor (openat and
 * friends, O_NOFOLLOW), so a path swapped under us after open cannot
 * redirect a key. Writes are atomic (lib/atomicfile.h): a temporary file ".tmp-<name>...."
 * in the same directory, created 0600 with O_EXCL, written, fsync'd,
 * renamed over the name, then the directory is fsync'd so the rename
 * itself survives a crash. Temporary files left by a crash are removed
 * when the directory is listed.
 */
#include "server/ca_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lib/atomicfile.h"
#include "lib/fileread.h"
#include "lib/fsperm.h"
#include "lib/log.h"

#define SLOT_SUFFIX ".slot"

/*
 * Opens directory `path` (relative to `at`), made 0700 when absent. With
 * `ours`, it must belong to us and is made 0700 when it is more open; the
 * data directory itself is left as the operator made it (it could be a
 * shared parent, and it is not where the keys are).
 */
static ly_status
open_dir_at(int at, const char *path, const char *shown, bool ours, int *out, struct ly_error *err)
{
	if (ours) {
		/* Ours, 0700 (tightened if looser), not a link: fsperm.h's one rule for data directories. */
		ly_status rc = ly_fsperm_private_dir(at, path, 0, out, err);
		return rc == LY_OK ? LY_OK : ly_error_wrap(err, rc, "%s", shown);
	}
	if (mkdirat(at, path, 0700) != 0 && errno != EEXIST)
		return ly_error_set(err, LY_E_IO, "%s: cannot create the directory: %s", shown, strerror(errno));
	int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (at == AT_FDCWD ? 0 : O_NOFOLLOW));
	if (fd < 0)
		return ly_error_set(err, LY_E_IO, "%s: cannot open the directory: %s", shown, strerror(errno));
	*out = fd;
	return LY_OK;
}

ly_status
ca_store_open(const char *data_dir, int *dirfd, struct ly_error *err)
{
	int data = -1, ca = -1;
	ly_status rc;

	*dirfd = -1;
	if (data_dir == NULL || data_dir[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "CA: a data directory is required");
	rc = open_dir_at(AT_FDCWD, data_dir, data_dir, false, &data, err);
	if (rc != LY_OK)
		goto out;
	rc = open_dir_at(data, "ca", "<dataDir>/ca", true, &ca, err);
	if (rc != LY_OK)
		goto out;
	if (flock(ca, LOCK_EX | LOCK_NB) != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s/ca: %s", data_dir,
		    errno == EWOULDBLOCK ? "in use by another CA (another server on this data dir?)" : strerror(errno));
		goto out;
	}
	*dirfd = ca;
	ca = -1;
out:
	if (ca >= 0)
		close(ca);
	if (data >= 0)
		close(data);
	return rc;
}

/* The atomic write of the tree (lib/atomicfile.h): dirfd, O_EXCL|O_NOFOLLOW, fsync of file and directory. */
ly_status
ca_store_write(int dirfd, const char *name, const void *data, size_t len, struct ly_error *err)
{
	return ly_atomicfile_write(dirfd, name, data, len, 0600, err);
}

ly_status
ca_store_read(int dirfd, const char *name, size_t cap, struct ly_buf *out, struct ly_error *err)
{
	/* A regular file of ours, 0600, not a link (fsperm.h). */
	int fd;
	LY_TRY(ly_fsperm_openat(dirfd, name, name, O_RDONLY, 0, &fd, err));
	ly_status rc = ly_fileread_fd(fd, name, cap, out, err);
	close(fd);
	return rc;
}

ly_status
ca_store_remove(int dirfd, const char *name, struct ly_error *err)
{
	if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
		return ly_error_set(err, LY_E_IO, "%s: unlink: %s", name, strerror(errno));
	if (fsync(dirfd) != 0)
		return ly_error_set(err, LY_E_IO, "%s: fsync of the directory: %s", name, strerror(errno));
	return LY_OK;
}

void
ca_store_names_free(char **names, size_t count)
{
	if (names == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

ly_status
ca_store_list(int dirfd, size_t max, char ***names, size_t *count, struct ly_error *err)
{
	char **v = NULL;
	size_t n = 0;
	DIR *d = NULL;
	ly_status rc = LY_OK;

	*names = NULL;
	*count = 0;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ly_error_set(err, LY_E_IO, "<dataDir>/ca: %s", strerror(errno));
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return ly_error_set(err, LY_E_IO, "<dataDir>/ca: %s", strerror(errno));
	}
	v = calloc(max + 1, sizeof(*v));
	if (v == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "listing <dataDir>/ca");
		goto out;
	}
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(d);
		if (e == NULL) {
			if (errno != 0)
				rc = ly_error_set(err, LY_E_IO, "<dataDir>/ca: readdir: %s", strerror(errno));
			break;
		}
		size_t len = strlen(e->d_name);
		if (ly_atomicfile_is_temp(e->d_name)) {
			/* Left by a crash between create and rename: never the only copy of anything. */
			(void)unlinkat(dirfd, e->d_name, 0);
			continue;
		}
		if (len <= strlen(SLOT_SUFFIX) || strcmp(e->d_name + len - strlen(SLOT_SUFFIX), SLOT_SUFFIX) != 0)
			continue;
		if (n == max) {
			rc = ly_error_set(err, LY_E_LIMIT, "<dataDir>/ca: more than %zu slot files", max);
			break;
		}
		v[n] = strdup(e->d_name);
		if (v[n] == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "listing <dataDir>/ca");
			break;
		}
		n++;
	}
	if (rc == LY_OK) {
		*names = v;
		*count = n;
		v = NULL;
	}
out:
	ca_store_names_free(v, n);
	closedir(d);
	return rc;
}
