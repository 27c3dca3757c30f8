/*
 * fileset.h: a set of files in one directory replaced together, for
 * `lanyard-agent api watch -write DIR` and `api fetch x509 -write DIR`.
 *
 * File sets (ly_fileset): the files of one update are each written to a
 * temporary file in DIR (".tmp-NAME.<random>", lib/atomicfile.h: created 0600 with O_EXCL, then
 * given its mode by fchmod, so a key file is never readable by others, not
 * even for an instant), written and fsync'd (ly_fileset_add); then all are
 * renamed over their names and DIR is fsync'd (ly_fileset_commit). When
 * staging fails nothing is renamed: the previous files stay as they were.
 * A commit also removes the files the previous commit of the same set wrote
 * and this one did not (an SVID fewer than before), so DIR never mixes two
 * updates' SVIDs. Renames within one directory do not fail for lack of
 * space; if one still fails (DIR changed under us), the rest of that update
 * is dropped and the error returned: the next update writes every file
 * again.
 *
 * Ownership: struct ly_fileset is caller-owned (init/cleanup); it holds
 * DIR's descriptor and the names it staged and committed. Data passed to
 * ly_fileset_add is the caller's (wipe it after: a key). Messages never
 * contain file contents.
 */
#ifndef LANYARD_AGENT_FILESET_H
#define LANYARD_AGENT_FILESET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/atomicfile.h"
#include "lib/caps.h"
#include "lib/error.h"

/* LY_FILESET_NAME_MAX and LY_WRITE_FILES_MAX: lib/caps.h. */

struct ly_fileset_entry {
	char name[LY_FILESET_NAME_MAX + 1];
	char tmp[LY_FILESET_NAME_MAX + LY_ATOMICFILE_TMP_EXTRA]; /* ".tmp-NAME.<16 hex>", empty once renamed */
};

struct ly_fileset {
	int dirfd;
	struct ly_fileset_entry *staged; /* this update's files, at most LY_WRITE_FILES_MAX */
	size_t n_staged;
	char (*live)[LY_FILESET_NAME_MAX + 1]; /* names the last commit wrote */
	size_t n_live;
};

/*
 * Opens the directory `dir` (must exist and be a directory: LY_E_IO with
 * the reason otherwise). On failure `fs` needs no cleanup but
 * ly_fileset_cleanup is harmless.
 */
ly_status ly_fileset_init(struct ly_fileset *fs, const char *dir, struct ly_error *err) LY_MUST_CHECK;

/*
 * Stages DIR/`name` with `len` bytes of `data` and `mode` (permission bits
 * only, e.g. 0600 or 0644): written to a temporary file, fsync'd, not yet
 * visible under `name`. A name staged twice in one update, an invalid
 * name (LY_E_INVALID), more than LY_WRITE_FILES_MAX files (LY_E_LIMIT),
 * a write that fails (LY_E_IO): the caller then calls ly_fileset_abort.
 */
ly_status ly_fileset_add(struct ly_fileset *fs, const char *name, const uint8_t *data, size_t len, unsigned mode,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Renames every staged file over its name, fsyncs DIR, then removes the
 * files of the previous commit that this one did not write. *removed (may
 * be NULL) receives how many were removed. On failure the files not yet
 * renamed are unlinked. Either way nothing stays staged.
 */
ly_status ly_fileset_commit(struct ly_fileset *fs, size_t *removed, struct ly_error *err) LY_MUST_CHECK;

/* Unlinks the staged temporary files; the previous files stay. */
void ly_fileset_abort(struct ly_fileset *fs);

/* ly_fileset_abort, then closes DIR and frees the lists. */
void ly_fileset_cleanup(struct ly_fileset *fs);

#endif /* LANYARD_AGENT_FILESET_H */
