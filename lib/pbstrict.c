/*
 * pbstrict.c: strict protobuf unpacking, see pbstrict.h.
 */
#include "pbstrict.h"

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
