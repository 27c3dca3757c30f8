/*
 * pbstrict.h: unpacking a protobuf message from a peer, strictly.
 *
 * protobuf-c copies a string field up to its wire length and ends it with
 * a NUL, so a string that holds a NUL byte reads as its prefix: an
 * audience "a\0b" would be signed as "a". Nor does it say when a field
 * came twice (it keeps the last). A message that does not re-encode to
 * exactly its own length had one or the other, and no real encoder sends
 * either: it is refused rather than read differently from what the peer
 * meant. Unknown fields are kept and re-encoded, so they pass (proto3).
 *
 * Used by the agent's Workload API (agent/workload_msg.c) and the server's
 * agent API (NewJWTSVID): one check for both. ly_pb_count_field bounds a
 * repeated field before unpacking (the workload client library's
 * responses, lib/workload).
 */
#ifndef LANYARD_PBSTRICT_H
#define LANYARD_PBSTRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "error.h"

/*
 * Unpacks `len` bytes at `data` (NULL with len 0 is the empty message) as
 * `desc`, refusing more than `max` bytes (LY_E_LIMIT), what does not parse
 * and what does not re-encode to `len` (LY_E_INVALID, naming the message
 * type). A refused message is released with `release` (NULL: plain
 * protobuf_c_message_free_unpacked), which wipes what must be wiped. On
 * success *out is the caller's, freed with protobuf_c_message_free_unpacked.
 */
ly_status ly_pb_unpack_strict(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, size_t max,
    void (*release)(ProtobufCMessage *), ProtobufCMessage **out, struct ly_error *err) LY_MUST_CHECK;

/* One top-level field of a packed message, as ly_pb_field_next read it. */
struct ly_pb_field {
	uint32_t number;     /* 1 .. 2^29 - 1 */
	unsigned wire;       /* 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit */
	uint64_t varint;     /* wire 0: the value */
	const uint8_t *data; /* wires 1, 2, 5: the value's bytes, borrowed from the message */
	size_t len;
};

/*
 * The one protobuf wire reader: reads the field at data[*pos] (*pos <
 * len) into *f and moves *pos past it. False on wire damage, with *why (a
 * static phrase) saying what: a tag or varint truncated or over 10 bytes,
 * field number 0 or over 2^29 - 1, a value past the end, a group or an
 * unknown wire type (3, 4, 6, 7: not in proto3). Nothing is allocated.
 */
bool ly_pb_field_next(const uint8_t *data, size_t len, size_t *pos, struct ly_pb_field *f, const char **why)
    LY_MUST_CHECK;

/*
 * Counts the top-level occurrences of length-delimited field `field` (a
 * repeated message, string or bytes field, or a map) in the packed message
 * at `data`, walking the wire format only (nothing allocated), so that a
 * count can be refused before protobuf-c unpacks: protobuf-c allocates a
 * struct for every element, and a message of tiny elements would otherwise
 * cost many times its size. More than `max`: LY_E_LIMIT (naming `what`),
 * as soon as the count passes it. Wire damage (a truncated tag, length or
 * value, a group, an unknown wire type, field number 0): LY_E_INVALID.
 * Other fields are skipped. On success *count is the count.
 */
ly_status ly_pb_count_field(const uint8_t *data, size_t len, uint32_t field, size_t max, const char *what,
    size_t *count, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_PBSTRICT_H */
