/*
 * fileread.c: a whole small file read into memory (fileread.h).
 */
#include "lib/fileread.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

ly_status
ly_fileread_fd(int fd, const char *name, size_t cap, struct ly_buf *out, struct ly_error *err)
{
	struct stat st;
	uint8_t *data = NULL;
	size_t size = 0, got = 0;
	ly_status rc;

	if (fstat(fd, &st) != 0)
		return ly_error_set(err, LY_E_IO, "%s: cannot stat: %s", name, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return ly_error_set(err, LY_E_IO, "%s: not a regular file", name);
	if (st.st_size < 0 || (uint64_t)st.st_size > cap)
		return ly_error_set(err, LY_E_LIMIT, "%s: %lld bytes, over the cap of %zu", name, (long long)st.st_size,
		    cap);
	size = (size_t)st.st_size;
	data = malloc(size + 1);
	if (data == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: allocating %zu bytes", name, size + 1);
	/* One byte more than the size: a file that grew is refused, not cut. */
	for (;;) {
		ssize_t n = read(fd, data + got, size + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = ly_error_set(err, LY_E_IO, "%s: read failed: %s", name, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > size) {
			rc = ly_error_set(err, LY_E_IO, "%s: changed while being read", name);
			goto out;
		}
	}
	if (got != size) {
		rc = ly_error_set(err, LY_E_IO, "%s: changed while being read", name);
		goto out;
	}
	data[size] = '\0';
	ly_buf_adopt(out, data, size);
	data = NULL;
	rc = LY_OK;
out:
	if (data != NULL)
		OPENSSL_clear_free(data, size + 1);
	return rc;
}
