/*
 * pbstrict.c: strict protobuf unpacking and the one wire reader, see
 * pbstrict.h.
 */
#include "pbstrict.h"

#include <stdbool.h>
#include <string.h>

static const uint8_t empty_input[1];

ly_status
ly_pb_unpack_strict(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, size_t max,
    void (*release)(ProtobufCMessage *), ProtobufCMessage **out, struct ly_error *err)
{
	*out = NULL;
	if (len > max)
		return ly_error_set(err, LY_E_LIMIT, "%s over %zu bytes", desc->name, max);
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data != NULL ? data : empty_input);
	if (m == NULL)
		return ly_error_set(err, LY_E_INVALID, "not a valid %s", desc->name);
	if (protobuf_c_message_get_packed_size(m) != len) {
		if (release != NULL)
			release(m);
		else
			protobuf_c_message_free_unpacked(m, NULL);
		return ly_error_set(err, LY_E_INVALID, "%s: a string with a NUL byte, or a field sent twice",
		    desc->name);
	}
	*out = m;
	return LY_OK;
}

/* Reads one base-128 varint of at most 10 bytes; false when truncated or too long. */
static bool
read_varint(const uint8_t *p, size_t len, size_t *off, uint64_t *out)
{
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 70; shift += 7) {
		if (*off >= len)
			return false;
		uint8_t b = p[(*off)++];
		v |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0) {
			*out = v;
			return true;
		}
	}
	return false;
}

/* The largest field number protobuf allows. */
#define PB_FIELD_MAX 536870911u

bool
ly_pb_field_next(const uint8_t *data, size_t len, size_t *pos, struct ly_pb_field *f, const char **why)
{
	uint64_t tag, v;

	memset(f, 0, sizeof(*f));
	if (!read_varint(data, len, pos, &tag) || (tag >> 3) == 0 || (tag >> 3) > PB_FIELD_MAX) {
		*why = "a bad field tag";
		return false;
	}
	f->number = (uint32_t)(tag >> 3);
	f->wire = (unsigned)(tag & 7);
	switch (f->wire) {
	case 0:
		if (!read_varint(data, len, pos, &f->varint)) {
			*why = "a truncated varint";
			return false;
		}
		return true;
	case 1:
	case 5:
		v = f->wire == 1 ? 8 : 4;
		break;
	case 2:
		if (!read_varint(data, len, pos, &v)) {
			*why = "a truncated length";
			return false;
		}
		break;
	default:
		*why = "a group or an unknown wire type";
		return false;
	}
	if (v > len - *pos) {
		*why = "a value past the end";
		return false;
	}
	f->data = data + *pos;
	f->len = (size_t)v;
	*pos += (size_t)v;
	return true;
}

ly_status
ly_pb_count_field(const uint8_t *data, size_t len, uint32_t field, size_t max, const char *what, size_t *count,
    struct ly_error *err)
{
	size_t pos = 0, n = 0;

	*count = 0;
	while (pos < len) {
		struct ly_pb_field f;
		const char *why = "";
		if (!ly_pb_field_next(data, len, &pos, &f, &why))
			return ly_error_set(err, LY_E_INVALID, "%s: malformed protobuf (%s)", what, why);
		if (f.number == field && f.wire == 2 && ++n > max)
			return ly_error_set(err, LY_E_LIMIT, "%s: more than %zu", what, max);
	}
	*count = n;
	return LY_OK;
}
