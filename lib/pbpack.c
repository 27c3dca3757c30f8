/*
 * pbpack.c: a message packed under a cap (pbpack.h).
 */
#include "lib/pbpack.h"

#include <stdint.h>
#include <stdlib.h>

#include <openssl/crypto.h>

ly_status
ly_pbpack(const ProtobufCMessage *m, size_t max, struct ly_buf *out, struct ly_error *err)
{
	size_t size = protobuf_c_message_get_packed_size(m);
	if (size > max)
		return ly_error_set(err, LY_E_LIMIT, "%s of %zu bytes: over the %zu-byte message cap", m->descriptor->name,
		    size, max);
	uint8_t *p = malloc(size > 0 ? size : 1);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: allocating %zu bytes", m->descriptor->name, size);
	if (protobuf_c_message_pack(m, p) != size) {
		OPENSSL_clear_free(p, size > 0 ? size : 1);
		return ly_error_set(err, LY_E_INTERNAL, "%s: packing", m->descriptor->name);
	}
	ly_buf_adopt(out, p, size);
	return LY_OK;
}
