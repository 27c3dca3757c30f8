/*
 * pbpack.h: a protobuf-c message packed into a buffer of its own, under a
 * size cap (lib/caps.h): the agent's response encoders (workload_msg.c,
 * sds_msg.c) share this one copy (issue 17, "one copy of each primitive").
 *
 * No state, any thread.
 */
#ifndef LANYARD_PBPACK_H
#define LANYARD_PBPACK_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "buf.h"
#include "error.h"

/*
 * Packs `m` into a new malloc'd buffer that *out adopts (ly_buf_adopt:
 * whatever *out held is not freed; the caller frees it, with
 * ly_buf_free_secret when the message carries a key). Errors: LY_E_LIMIT
 * when the packed size is over `max` ("<type> of N bytes: over the M-byte
 * message cap"), LY_E_NOMEM, LY_E_INTERNAL when protobuf-c packs another
 * size than it announced (the partial bytes are wiped first).
 */
ly_status ly_pbpack(const ProtobufCMessage *m, size_t max, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

#endif
