/*
 * cli_helper.c: signal names and pid files for
 * `lanyard-agent api watch -write` (see cli_helper.h for the rules).
 */
#include "agent/cli_helper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


/* ---- signals ---- */

static const struct {
	const char *name; /* without "SIG" */
	int signum;
} signals[] = {
	{ "HUP", SIGHUP },
	{ "INT", SIGINT },
	{ "QUIT", SIGQUIT },
	{ "USR1", SIGUSR1 },
	{ "USR2", SIGUSR2 },
	{ "TERM", SIGTERM },
	{ "WINCH", SIGWINCH },
};

#define NSIGNALS (sizeof(signals) / sizeof(signals[0]))

ly_status
ly_cli_helper_signal_parse(const char *name, int *signum, struct ly_error *err)
{
	const char *bare = name;

	if (name == NULL || signum == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "signal: no name or output");
	if (strncmp(bare, "SIG", 3) == 0)
		bare += 3;
	for (size_t i = 0; i < NSIGNALS; i++) {
		if (strcmp(bare, signals[i].name) == 0) {
			*signum = signals[i].signum;
			return LY_OK;
		}
	}
	return ly_error_set(err, LY_E_INVALID,
	    "unknown signal \"%.64s\": must be one of HUP, INT, QUIT, USR1, USR2, TERM, WINCH", name);
}

const char *
ly_cli_helper_signal_name(int signum)
{
	static const char *const full[] = { "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM",
		"SIGWINCH" };

	for (size_t i = 0; i < NSIGNALS; i++) {
		if (signals[i].signum == signum)
			return full[i];
	}
	return "signal";
}

/* ---- pid files ---- */

ly_status
ly_cli_helper_pid_parse(const char *text, size_t len, pid_t *out, struct ly_error *err)
{
	size_t digits = len;
	long v = 0;

	if (text == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "pid file: no text or output");
	if (len > LY_PID_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "pid file: over %d bytes: not a pid file", LY_PID_FILE_MAX);
	if (len > 0 && text[len - 1] == '\n')
		digits--;
	if (digits == 0)
		return ly_error_set(err, LY_E_INVALID, "pid file: empty");
	for (size_t i = 0; i < digits; i++) {
		if (text[i] < '0' || text[i] > '9')
			return ly_error_set(err, LY_E_INVALID,
			    "pid file: byte %zu is not a digit: the file must hold one decimal pid and a newline", i);
		v = v * 10 + (text[i] - '0');
		if (v > LY_PID_VALUE_MAX)
			return ly_error_set(err, LY_E_INVALID, "pid file: pid over %d", LY_PID_VALUE_MAX);
	}
	if (digits > 1 && text[0] == '0')
		return ly_error_set(err, LY_E_INVALID, "pid file: leading zero");
	if (v == 0)
		return ly_error_set(err, LY_E_INVALID, "pid file: pid 0 names no single process");
	if (v == 1)
		return ly_error_set(err, LY_E_INVALID, "pid file: pid 1 (init) is never signalled");
	*out = (pid_t)v;
	return LY_OK;
}

ly_status
ly_cli_helper_pid_file_read(const char *path, pid_t *out, struct ly_error *err)
{
	char buf[LY_PID_FILE_MAX + 1];
	size_t len = 0;
	struct stat st;
	ly_status rc;
	int fd;

	if (path == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "pid file: no path or output");
	/* O_NONBLOCK: a FIFO planted at the path must not hang us before fstat refuses it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return ly_error_set(err, errno == ENOENT ? LY_E_NOT_FOUND : LY_E_IO, "pid file %s: %s", path,
		    strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = ly_error_set(err, LY_E_IO, "pid file %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = ly_error_set(err, LY_E_INVALID, "pid file %s: not a regular file", path);
		goto out;
	}
	/* One byte over the cap tells "too long" from "exactly the cap". */
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = ly_error_set(err, LY_E_IO, "pid file %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	rc = ly_cli_helper_pid_parse(buf, len, out, err);
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "%s", path);
out:
	(void)close(fd);
	return rc;
}

ly_status
ly_cli_helper_signal_pid_file(const char *path, int signum, pid_t *sent, struct ly_error *err)
{
	pid_t pid;

	LY_TRY(ly_cli_helper_pid_file_read(path, &pid, err));
	if (pid == getpid())
		return ly_error_set(err, LY_E_INVALID, "pid file %s names this process (%d): nothing sent", path,
		    (int)pid);
	if (kill(pid, signum) != 0) {
		if (errno == ESRCH)
			return ly_error_set(err, LY_E_NOT_FOUND, "pid file %s: no process %d (a stale pid file?)", path,
			    (int)pid);
		return ly_error_set(err, LY_E_IO, "pid file %s: cannot signal process %d: %s", path, (int)pid,
		    strerror(errno));
	}
	if (sent != NULL)
		*sent = pid;
	return LY_OK;
}
