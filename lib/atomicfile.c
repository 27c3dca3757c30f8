/* atomicfile.c: crash-safe file replacement through a directory descriptor (see atomicfile.h). */
#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

static ly_status
write_all(int fd, const unsigned char *p, size_t n, const char *shown, struct ly_error *err)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return ly_error_set(err, LY_E_IO, "%s: write: %s", shown, w < 0 ? strerror(errno) : "no progress");
		p += w;
		n -= (size_t)w;
	}
	return LY_OK;
}

static ly_status
name_check(const char *name, mode_t mode, struct ly_error *err)
{
	if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return ly_error_set(err, LY_E_INVALID, "\"%.64s\": not a file name", name != NULL ? name : "");
	if ((mode & ~(mode_t)0777) != 0)
		return ly_error_set(err, LY_E_INVALID, "%s: mode %o has more than permission bits", name, (unsigned)mode);
	return LY_OK;
}

ly_status
ly_atomicfile_stage(int dirfd, const char *name, const void *data, size_t len, mode_t mode, char *tmp,
    size_t tmp_size, struct ly_error *err)
{
	unsigned char rnd[8];
	int fd = -1;
	ly_status rc;

	LY_TRY(name_check(name, mode, err));
	if (data == NULL && len > 0)
		return ly_error_set(err, LY_E_INVALID, "%s: no data", name);
	if (RAND_bytes(rnd, (int)sizeof(rnd)) != 1)
		return ly_error_set(err, LY_E_CRYPTO, "%s: no random bytes for a temporary name", name);
	int n = snprintf(tmp, tmp_size, LY_ATOMICFILE_TMP_PREFIX "%s.%02x%02x%02x%02x%02x%02x%02x%02x", name, rnd[0],
	    rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	if (n < 0 || (size_t)n >= tmp_size) {
		if (tmp_size > 0)
			tmp[0] = '\0';
		return ly_error_set(err, LY_E_LIMIT, "%s: name too long", name);
	}
	/* Born 0600 (O_EXCL: ours, new), then exactly `mode` before any byte is written. */
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = ly_error_set(err, LY_E_IO, "%s: create: %s", tmp, strerror(errno));
		tmp[0] = '\0';
		return rc;
	}
	if (fchmod(fd, mode) != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s: chmod: %s", tmp, strerror(errno));
		goto fail;
	}
	if ((rc = write_all(fd, data, len, tmp, err)) != LY_OK)
		goto fail;
	if (fsync(fd) != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s: fsync: %s", tmp, strerror(errno));
		goto fail;
	}
	int c = close(fd);
	fd = -1;
	if (c != 0) {
		rc = ly_error_set(err, LY_E_IO, "%s: close: %s", tmp, strerror(errno));
		goto fail;
	}
	return LY_OK;
fail:
	if (fd >= 0)
		(void)close(fd);
	(void)unlinkat(dirfd, tmp, 0);
	tmp[0] = '\0';
	return rc;
}

ly_status
ly_atomicfile_write(int dirfd, const char *name, const void *data, size_t len, mode_t mode, struct ly_error *err)
{
	char tmp[256 + LY_ATOMICFILE_TMP_EXTRA];

	LY_TRY(ly_atomicfile_stage(dirfd, name, data, len, mode, tmp, sizeof(tmp), err));
	if (renameat(dirfd, tmp, dirfd, name) != 0) {
		ly_status rc = ly_error_set(err, LY_E_IO, "%s: rename: %s", name, strerror(errno));
		(void)unlinkat(dirfd, tmp, 0);
		return rc;
	}
	/* The rename is durable once the directory is. */
	if (fsync(dirfd) != 0)
		return ly_error_set(err, LY_E_IO, "%s: fsync of the directory: %s", name, strerror(errno));
	return LY_OK;
}

bool
ly_atomicfile_is_temp(const char *name)
{
	return name != NULL && strncmp(name, LY_ATOMICFILE_TMP_PREFIX, strlen(LY_ATOMICFILE_TMP_PREFIX)) == 0;
}
