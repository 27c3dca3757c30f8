/*
 * atomicfile.h: the one way the tree replaces a file so that a crash at
 * any point leaves either the old contents or the new, whole (the CA's
 * slots and sequence, the agent's state, `api fetch x509 -write`).
 *
 * Everything goes through the directory's descriptor: the data is written
 * to a new temporary file in the same directory, created with O_EXCL and
 * O_NOFOLLOW (so it is ours and new, never something planted there, and
 * born 0600 so a key is never readable by others, even for an instant),
 * set to exactly `mode` whatever the umask before any byte is written,
 * written, fsync'd and closed; then renamed over the name, and the
 * directory fsync'd so the rename itself is durable. Whether the
 * directory may be trusted is the caller's (lib/fsperm.h:
 * ly_fsperm_private_dir, ly_fsperm_dir_chain).
 *
 * Temporary names are LY_ATOMICFILE_TMP_PREFIX "<name>.<16 hex>": a
 * directory scan removes the ones a crash left (ly_atomicfile_is_temp).
 */
#ifndef LANYARD_ATOMICFILE_H
#define LANYARD_ATOMICFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

#define LY_ATOMICFILE_TMP_PREFIX ".tmp-"
/* What a temporary name adds to its final name's length, its NUL included. */
#define LY_ATOMICFILE_TMP_EXTRA (sizeof(LY_ATOMICFILE_TMP_PREFIX) - 1 + 1 + 16 + 1)

/*
 * Writes `len` bytes as `name` (one component: no '/', not "." or "..")
 * in the directory `dirfd`, with permission bits `mode`, atomically and
 * durably (above). On failure the temporary file is removed and `name` is
 * as it was. Messages name the file and the step ("x.pem: fsync: ...").
 * LY_E_INVALID for a bad name or mode, LY_E_LIMIT for too long a name,
 * LY_E_CRYPTO without random bytes, LY_E_IO when the system refuses.
 */
ly_status ly_atomicfile_write(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * The first half, for a caller that renames several files together
 * (agent/cli_helper.c's file set): the temporary file, written, fsync'd
 * and closed, its name in `tmp` (`tmp_size` at least strlen(name) +
 * LY_ATOMICFILE_TMP_EXTRA). On failure nothing is left. The caller then
 * renameat()s `tmp` over `name` (or unlinkat()s it) and fsyncs `dirfd`.
 */
ly_status ly_atomicfile_stage(int dirfd, const char *name, const void *data, size_t len, mode_t mode, char *tmp,
    size_t tmp_size, struct ly_error *err) LY_MUST_CHECK;

/* Whether a directory entry is a temporary file of this module (left by a crash when found at start). */
bool ly_atomicfile_is_temp(const char *name);

#endif /* LANYARD_ATOMICFILE_H */
