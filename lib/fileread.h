/*
 * fileread.h: a whole small file read into memory, for files that may hold
 * keys: the one copy (issue 17, "one copy of each primitive") behind the
 * PEM loader (der.c), the CA's store (server/ca_store.c) and the agent's
 * state files (agent/state.c). Opening stays with the caller, which knows
 * what to check first (fsperm.h's ly_fsperm_openat for files of ours).
 *
 * No state, any thread.
 */
#ifndef LANYARD_FILEREAD_H
#define LANYARD_FILEREAD_H

#include <stddef.h>

#include "buf.h"
#include "error.h"

/*
 * Reads the whole regular file open on `fd` (the caller closes it): at most
 * `cap` bytes by fstat; one byte more is asked for, so a file that grew
 * meanwhile is refused, and so is one that shrank. *out adopts the bytes
 * (ly_buf_adopt, whatever it held is not freed), followed by a NUL that
 * `len` does not count. Bytes read before a failure are wiped. Messages
 * begin with `name`: LY_E_IO ("cannot stat", "not a regular file", "read
 * failed", "changed while being read"), LY_E_LIMIT ("N bytes, over the cap
 * of M"), LY_E_NOMEM.
 */
ly_status ly_fileread_fd(int fd, const char *name, size_t cap, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;

#endif
