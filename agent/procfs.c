/* procfs.c: see procfs.h. */
#include "agent/procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/caps.h"

/* Field 22 (starttime) is the 20th space-separated field after ") ". */
#define STAT_STARTTIME_FIELD 22
#define STAT_FIELDS_BEFORE_COMM_END 2

ly_status
ly_proc_path(const char *proc_root, pid_t pid, const char *name, char *buf, size_t size, struct ly_error *err)
{
	if (pid <= 0)
		return ly_error_set(err, LY_E_UNSUPPORTED,
		    "pid %ld: a caller in a PID namespace the agent cannot see is refused", (long)pid);
	if (proc_root == NULL || proc_root[0] == '\0')
		proc_root = LY_PROC_ROOT_DEFAULT;
	int n = snprintf(buf, size, "%s/%ld/%s", proc_root, (long)pid, name);
	if (n < 0 || (size_t)n >= size)
		return ly_error_set(err, LY_E_LIMIT, "path under proc root %s is longer than %zu bytes", proc_root,
		    size - 1);
	return LY_OK;
}

static ly_status
open_errno(int e, const char *path, const char *what, struct ly_error *err)
{
	if (e == ENOENT || e == ESRCH)
		return ly_error_set(err, LY_E_NOT_FOUND, "%s %s: the process is gone", what, path);
	return ly_error_set(err, LY_E_IO, "%s %s: %s", what, path, strerror(e));
}

ly_status
ly_proc_read_file(const char *proc_root, pid_t pid, const char *name, size_t cap, char **out, size_t *len,
    struct ly_error *err)
{
	char path[PATH_MAX];
	char *buf = NULL;
	size_t used = 0, size = 0;
	int fd = -1;
	ly_status rc;

	*out = NULL;
	*len = 0;
	rc = ly_proc_path(proc_root, pid, name, path, sizeof(path), err);
	if (rc != LY_OK)
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return open_errno(errno, path, "open", err);
	/* procfs reports size 0: read until EOF, growing up to cap + 1 to detect an oversized file. */
	for (;;) {
		if (used == size) {
			if (size > cap) {
				rc = ly_error_set(err, LY_E_LIMIT, "%s is longer than %zu bytes", path, cap);
				goto out;
			}
			size_t nsize = size != 0 ? size * 2 : 4096;
			if (nsize > cap + 1)
				nsize = cap + 1;
			if (nsize <= size)
				nsize = size + 1;
			char *p = realloc(buf, nsize + 1);
			if (p == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "reading %s: out of memory", path);
				goto out;
			}
			buf = p;
			size = nsize;
		}
		ssize_t r = read(fd, buf + used, size - used);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = open_errno(errno, path, "read", err);
			goto out;
		}
		if (r == 0)
			break;
		used += (size_t)r;
		if (used > cap) {
			rc = ly_error_set(err, LY_E_LIMIT, "%s is longer than %zu bytes", path, cap);
			goto out;
		}
	}
	if (buf == NULL) {
		buf = malloc(1);
		if (buf == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "reading %s: out of memory", path);
			goto out;
		}
	}
	buf[used] = '\0';
	*out = buf;
	*len = used;
	buf = NULL;
	rc = LY_OK;
out:
	free(buf);
	close(fd);
	return rc;
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

ly_status
ly_proc_parse_start_time(const char *stat, size_t len, uint64_t *out, struct ly_error *err)
{
	size_t i = 0;

	*out = 0;
	/* Field 1: the PID, then " (" opening the command name. */
	while (i < len && is_digit(stat[i]))
		i++;
	if (i == 0 || i > 10 || i + 2 > len || stat[i] != ' ' || stat[i + 1] != '(')
		return ly_error_set(err, LY_E_INVALID, "stat: does not start with \"PID (\"");
	/* Field 2: the command name may hold ')' and spaces: it ends at the LAST ')'. */
	const char *close = memrchr(stat + i + 2, ')', len - i - 2);
	if (close == NULL)
		return ly_error_set(err, LY_E_INVALID, "stat: the command name is not closed by ')'");
	size_t p = (size_t)(close - stat) + 1;
	/* Fields 3..22, each preceded by exactly one space. */
	for (int field = STAT_FIELDS_BEFORE_COMM_END + 1; field <= STAT_STARTTIME_FIELD; field++) {
		if (p >= len || stat[p] != ' ')
			return ly_error_set(err, LY_E_INVALID, "stat: field %d is missing", field);
		p++;
		size_t start = p;
		while (p < len && stat[p] != ' ' && stat[p] != '\n')
			p++;
		if (p == start)
			return ly_error_set(err, LY_E_INVALID, "stat: field %d is empty", field);
		if (field != STAT_STARTTIME_FIELD)
			continue;
		uint64_t v = 0;
		for (size_t k = start; k < p; k++) {
			if (!is_digit(stat[k]))
				return ly_error_set(err, LY_E_INVALID, "stat: starttime is not a decimal number");
			uint64_t d = (uint64_t)(stat[k] - '0');
			if (v > (UINT64_MAX - d) / 10)
				return ly_error_set(err, LY_E_INVALID, "stat: starttime does not fit in 64 bits");
			v = v * 10 + d;
		}
		*out = v;
	}
	return LY_OK;
}

ly_status
ly_proc_start_time(const char *proc_root, pid_t pid, uint64_t *out, struct ly_error *err)
{
	char *text = NULL;
	size_t len = 0;

	*out = 0;
	LY_TRY(ly_proc_read_file(proc_root, pid, "stat", LY_PROC_STAT_MAX, &text, &len, err));
	ly_status rc = ly_proc_parse_start_time(text, len, out, err);
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "pid %ld", (long)pid);
	free(text);
	return rc;
}

ly_status
ly_proc_verify(const char *proc_root, pid_t pid, int pidfd, uint64_t start_time, struct ly_error *err)
{
	uint64_t now = 0;

	if (pid <= 0)
		return ly_error_set(err, LY_E_UNSUPPORTED,
		    "pid %ld: a caller in a PID namespace the agent cannot see is refused", (long)pid);
	if (pidfd >= 0) {
		/* Signal 0 sends nothing: it only checks that the process is alive. */
		long r = syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0U);
		if (r != 0 && errno == ENOSYS) {
			/*
			 * pidfd_send_signal unavailable where pidfd_open worked (a
			 * seccomp filter, valgrind): a pidfd polls readable once its
			 * process has exited, which answers the same question.
			 */
			struct pollfd pfd = { .fd = pidfd, .events = POLLIN, .revents = 0 };
			int n = poll(&pfd, 1, 0);
			if (n != 0)
				return ly_error_set(err, LY_E_UNTRUSTED, "pid %ld: the caller exited (pidfd: %s)", (long)pid,
				    n > 0 ? "readable" : strerror(errno));
		} else if (r != 0 && errno != EPERM) {
			return ly_error_set(err, LY_E_UNTRUSTED, "pid %ld: the caller exited (pidfd: %s)", (long)pid,
			    strerror(errno));
		}
	}
	ly_status rc = ly_proc_start_time(proc_root, pid, &now, err);
	if (rc == LY_E_NOT_FOUND)
		return ly_error_wrap(err, LY_E_UNTRUSTED, "pid %ld: the caller exited", (long)pid);
	if (rc != LY_OK)
		return rc;
	if (now != start_time)
		return ly_error_set(err, LY_E_UNTRUSTED,
		    "pid %ld now names another process (start time %llu, the caller's was %llu): PID reused",
		    (long)pid, (unsigned long long)now, (unsigned long long)start_time);
	return LY_OK;
}

ly_status
ly_proc_exe_id(const char *proc_root, pid_t pid, struct ly_proc_exe *out, struct ly_error *err)
{
	char link[PATH_MAX];
	struct stat st;

	memset(out, 0, sizeof(*out));
	LY_TRY(ly_proc_path(proc_root, pid, "exe", link, sizeof(link), err));
	if (stat(link, &st) == 0) {
		out->known = true;
		out->dev = st.st_dev;
		out->ino = st.st_ino;
		return LY_OK;
	}
	int e = errno;
	if (e == EACCES || e == EPERM)
		return LY_OK;
	if (e == ENOENT || e == ESRCH) {
		/* A live process without an executable (a kernel thread), or one gone. */
		char dir[PATH_MAX];
		LY_TRY(ly_proc_path(proc_root, pid, "", dir, sizeof(dir), err));
		if (e == ENOENT && stat(dir, &st) == 0)
			return LY_OK;
		return ly_error_set(err, LY_E_NOT_FOUND, "pid %ld: the process is gone", (long)pid);
	}
	return ly_error_set(err, LY_E_IO, "pid %ld: stat of its executable: %s", (long)pid, strerror(e));
}

ly_status
ly_proc_verify_exe(const char *proc_root, pid_t pid, const struct ly_proc_exe *exe, struct ly_error *err)
{
	struct ly_proc_exe now;

	if (exe == NULL || !exe->known)
		return LY_OK;
	ly_status rc = ly_proc_exe_id(proc_root, pid, &now, err);
	if (rc == LY_E_NOT_FOUND)
		return ly_error_wrap(err, LY_E_UNTRUSTED, "pid %ld: the caller exited", (long)pid);
	if (rc != LY_OK)
		return rc;
	if (!now.known || now.dev != exe->dev || now.ino != exe->ino)
		return ly_error_set(err, LY_E_UNTRUSTED,
		    "pid %ld runs another executable than when it connected (exec): refused", (long)pid);
	return LY_OK;
}
