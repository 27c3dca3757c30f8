/*
 * pbstrict.c: strict protobuf unpacking, see pbstrict.h.
 */
#include "pbstrict.h"

#include <stdbool.h>

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
	for (unsigned shift = 0; shift < 64; shift += 7) {
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

ly_status
ly_pb_count_field(const uint8_t *data, size_t len, uint32_t field, size_t max, const char *what, size_t *count,
    struct ly_error *err)
{
	size_t off = 0, n = 0;

	*count = 0;
	while (off < len) {
		uint64_t tag, v;
		if (!read_varint(data, len, &off, &tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
			return ly_error_set(err, LY_E_INVALID, "%s: malformed protobuf (a bad tag at byte %zu)", what, off);
		switch (tag & 7) {
		case 0: /* varint */
			if (!read_varint(data, len, &off, &v))
				return ly_error_set(err, LY_E_INVALID, "%s: malformed protobuf (a truncated varint)", what);
			break;
		case 1: /* 64-bit */
		case 5: /* 32-bit */ {
			size_t w = (tag & 7) == 1 ? 8 : 4;
			if (len - off < w)
				return ly_error_set(err, LY_E_INVALID, "%s: malformed protobuf (a truncated value)", what);
			off += w;
			break;
		}
		case 2: /* length-delimited */
			if (!read_varint(data, len, &off, &v) || v > len - off)
				return ly_error_set(err, LY_E_INVALID, "%s: malformed protobuf (a truncated field)", what);
			off += (size_t)v;
			if ((tag >> 3) == field && ++n > max)
				return ly_error_set(err, LY_E_LIMIT, "%s: more than %zu", what, max);
			break;
		default: /* groups (3, 4), and 6, 7: not in proto3 */
			return ly_error_set(err, LY_E_INVALID, "%s: malformed protobuf (wire type %u)", what,
			    (unsigned)(tag & 7));
		}
	}
	*count = n;
	return LY_OK;
}
