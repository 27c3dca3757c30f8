/*
 * pbview.h: borrowed data handed to protobuf-c. Its generated structs take
 * `char *` and `uint8_t *` for fields it only reads while packing; these
 * give it our const data without a cast that drops the qualifier (which
 * -Wcast-qual rightly flags). One copy for every module that packs
 * (issue 17, "one copy of each primitive").
 *
 * Hazard: the result still points at the caller's memory, which protobuf-c
 * must never write or free: use it only in messages that are packed, never
 * in ones freed with *__free_unpacked.
 */
#ifndef LANYARD_PBVIEW_H
#define LANYARD_PBVIEW_H

#include <stdint.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

static inline char *
ly_pbview_str(const char *s)
{
	char *p;
	memcpy(&p, &s, sizeof(p));
	return p;
}

/* The same, with NULL read as "" (protobuf-c's own empty string): a string field must not be NULL. */
static inline char *
ly_pbview_str_or_empty(const char *s)
{
	return ly_pbview_str(s != NULL ? s : protobuf_c_empty_string);
}

static inline uint8_t *
ly_pbview_bytes(const uint8_t *b)
{
	uint8_t *p;
	memcpy(&p, &b, sizeof(p));
	return p;
}

#endif
