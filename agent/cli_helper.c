/*
 * cli_helper.c: signal names, pid files and atomic file sets for
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
ly_helper_signal_parse(const char *name, int *signum, struct ly_error *err)
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
ly_helper_signal_name(int signum)
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
ly_helper_pid_parse(const char *text, size_t len, pid_t *out, struct ly_error *err)
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
ly_helper_pid_file_read(const char *path, pid_t *out, struct ly_error *err)
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
	rc = ly_helper_pid_parse(buf, len, out, err);
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "%s", path);
out:
	(void)close(fd);
	return rc;
}

ly_status
ly_helper_signal_pid_file(const char *path, int signum, pid_t *sent, struct ly_error *err)
{
	pid_t pid;

	LY_TRY(ly_helper_pid_file_read(path, &pid, err));
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

/* ---- file sets ---- */

static bool
name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > LY_FILESET_NAME_MAX || name[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		    c == '_' || c == '-'))
			return false;
	}
	return true;
}

ly_status
ly_fileset_init(struct ly_fileset *fs, const char *dir, struct ly_error *err)
{
	memset(fs, 0, sizeof(*fs));
	fs->dirfd = -1;
	if (dir == NULL || dir[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "no directory given");
	fs->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fs->dirfd < 0)
		return ly_error_set(err, LY_E_IO, "directory %s: %s", dir, strerror(errno));
	return LY_OK;
}

ly_status
ly_fileset_add(struct ly_fileset *fs, const char *name, const uint8_t *data, size_t len, unsigned mode,
    struct ly_error *err)
{
	struct ly_fileset_entry *e, *grown;

	if (fs == NULL || fs->dirfd < 0 || name == NULL || (data == NULL && len > 0))
		return ly_error_set(err, LY_E_INTERNAL, "file set: not open, or no name or data");
	if (!name_ok(name))
		return ly_error_set(err, LY_E_INVALID, "file name \"%.64s\": only [A-Za-z0-9._-], not starting with "
		    "'.', at most %d bytes", name, LY_FILESET_NAME_MAX);
	if ((mode & ~0777u) != 0)
		return ly_error_set(err, LY_E_INVALID, "%s: mode %o has more than permission bits", name, mode);
	for (size_t i = 0; i < fs->n_staged; i++) {
		if (strcmp(fs->staged[i].name, name) == 0)
			return ly_error_set(err, LY_E_INVALID, "%s: staged twice in one update", name);
	}
	if (fs->n_staged >= LY_WRITE_FILES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "more than %d files in one update", LY_WRITE_FILES_MAX);
	grown = realloc(fs->staged, (fs->n_staged + 1) * sizeof(*fs->staged));
	if (grown == NULL)
		return ly_error_set(err, LY_E_NOMEM, "file set: out of memory");
	fs->staged = grown;
	e = &fs->staged[fs->n_staged];
	memset(e, 0, sizeof(*e));
	(void)snprintf(e->name, sizeof(e->name), "%s", name);
	/* Born 0600 (O_EXCL: ours, new), then exactly `mode`, written and fsync'd (lib/atomicfile.h). */
	LY_TRY(ly_atomicfile_stage(fs->dirfd, name, data, len, (mode_t)mode, e->tmp, sizeof(e->tmp), err));
	fs->n_staged++; /* from here on abort unlinks it */
	return LY_OK;
}

void
ly_fileset_abort(struct ly_fileset *fs)
{
	if (fs == NULL)
		return;
	for (size_t i = 0; i < fs->n_staged; i++) {
		if (fs->staged[i].tmp[0] != '\0' && fs->dirfd >= 0)
			(void)unlinkat(fs->dirfd, fs->staged[i].tmp, 0);
	}
	fs->n_staged = 0;
}

static bool
staged_has(const struct ly_fileset *fs, const char *name)
{
	for (size_t i = 0; i < fs->n_staged; i++) {
		if (strcmp(fs->staged[i].name, name) == 0)
			return true;
	}
	return false;
}

ly_status
ly_fileset_commit(struct ly_fileset *fs, size_t *removed, struct ly_error *err)
{
	char(*live)[LY_FILESET_NAME_MAX + 1] = NULL;
	size_t gone = 0;
	ly_status rc;

	if (removed != NULL)
		*removed = 0;
	if (fs == NULL || fs->dirfd < 0)
		return ly_error_set(err, LY_E_INTERNAL, "file set: not open");
	if (fs->n_staged > 0) {
		live = calloc(fs->n_staged, sizeof(*live));
		if (live == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "file set: out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < fs->n_staged; i++) {
		struct ly_fileset_entry *e = &fs->staged[i];
		if (renameat(fs->dirfd, e->tmp, fs->dirfd, e->name) != 0) {
			rc = ly_error_set(err, LY_E_IO, "%s: rename: %s", e->name, strerror(errno));
			goto out;
		}
		e->tmp[0] = '\0';
		memcpy(live[i], e->name, sizeof(live[i]));
	}
	/* The renames are durable once the directory is. */
	if (fsync(fs->dirfd) != 0) {
		rc = ly_error_set(err, LY_E_IO, "fsync of the directory: %s", strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < fs->n_live; i++) {
		if (!staged_has(fs, fs->live[i]) && unlinkat(fs->dirfd, fs->live[i], 0) == 0)
			gone++;
	}
	if (gone > 0)
		(void)fsync(fs->dirfd);
	free(fs->live);
	fs->live = live;
	fs->n_live = fs->n_staged;
	live = NULL;
	if (removed != NULL)
		*removed = gone;
	rc = LY_OK;
out:
	free(live);
	ly_fileset_abort(fs);
	return rc;
}

void
ly_fileset_cleanup(struct ly_fileset *fs)
{
	if (fs == NULL)
		return;
	ly_fileset_abort(fs);
	if (fs->dirfd >= 0)
		(void)close(fs->dirfd);
	fs->dirfd = -1;
	free(fs->staged);
	free(fs->live);
	fs->staged = NULL;
	fs->live = NULL;
	fs->n_live = 0;
}
