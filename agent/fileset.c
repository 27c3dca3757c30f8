/* fileset.c: files in one directory replaced together (see fileset.h for the rules). */
#include "agent/fileset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
