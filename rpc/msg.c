/* msg.c: see internal.h (messages). */
#include "rpc/internal.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <openssl/crypto.h>

#include "lib/caps.h"

/* Our own copy of a message that must be wiped: gRPC frees it through the slice. */
struct wiped_msg {
	size_t len;
	uint8_t data[];
};

static void
wiped_msg_free(void *p)
{
	struct wiped_msg *w = p;

	OPENSSL_cleanse(w->data, w->len);
	free(w);
}

ly_status
ly_rpc_msg_to_bb(const uint8_t *data, size_t len, size_t cap, unsigned flags, grpc_byte_buffer **out,
    struct ly_error *err)
{
	grpc_slice slice;

	*out = NULL;
	if (len > cap || len > LY_RPC_RESPONSE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "message of %zu bytes over the %zu-byte cap", len,
		    cap < LY_RPC_RESPONSE_MAX ? cap : (size_t)LY_RPC_RESPONSE_MAX);
	if ((flags & LY_RPC_WIPE) != 0) {
		struct wiped_msg *w = malloc(sizeof(*w) + (len != 0 ? len : 1));
		if (w == NULL)
			return ly_error_set(err, LY_E_NOMEM, "message: out of memory");
		w->len = len;
		if (len != 0)
			memcpy(w->data, data, len);
		slice = grpc_slice_new_with_user_data(w->data, len, wiped_msg_free, w);
	} else {
		slice = grpc_slice_from_copied_buffer((const char *)data, len);
	}
	*out = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "message: out of memory");
	return LY_OK;
}

ly_status
ly_rpc_msg_from_bb(grpc_byte_buffer *bb, size_t cap, uint8_t **out, size_t *len,
    struct ly_error *err)
{
	grpc_byte_buffer_reader reader;
	grpc_slice slice;
	size_t total = 0, off = 0;
	uint8_t *buf = NULL;
	ly_status rc = LY_OK;

	*out = NULL;
	*len = 0;
	/* Pass 1: the length, refused as soon as it passes the cap. The reader
	 * decompresses, so grpc_byte_buffer_length is not the length we copy. */
	if (!grpc_byte_buffer_reader_init(&reader, bb))
		return ly_error_set(err, LY_E_INVALID, "message: cannot be read (compression?)");
	while (grpc_byte_buffer_reader_next(&reader, &slice) != 0) {
		total += GRPC_SLICE_LENGTH(slice);
		grpc_slice_unref(slice);
		if (total > cap) {
			grpc_byte_buffer_reader_destroy(&reader);
			return ly_error_set(err, LY_E_LIMIT, "message over %zu bytes", cap);
		}
	}
	grpc_byte_buffer_reader_destroy(&reader);

	buf = malloc(total != 0 ? total : 1);
	if (buf == NULL)
		return ly_error_set(err, LY_E_NOMEM, "message: out of memory");
	/* Pass 2: the copy. */
	if (!grpc_byte_buffer_reader_init(&reader, bb)) {
		rc = ly_error_set(err, LY_E_INTERNAL, "message: reader failed on second pass");
		goto out;
	}
	while (grpc_byte_buffer_reader_next(&reader, &slice) != 0) {
		size_t n = GRPC_SLICE_LENGTH(slice);
		if (n > total - off) {
			grpc_slice_unref(slice);
			grpc_byte_buffer_reader_destroy(&reader);
			rc = ly_error_set(err, LY_E_INTERNAL, "message: length changed between passes");
			goto out;
		}
		memcpy(buf + off, GRPC_SLICE_START_PTR(slice), n);
		off += n;
		grpc_slice_unref(slice);
	}
	grpc_byte_buffer_reader_destroy(&reader);
	*out = buf;
	*len = off;
	buf = NULL;
out:
	if (buf != NULL)
		ly_rpc_msg_free(buf, total);
	return rc;
}

void
ly_rpc_msg_free(uint8_t *data, size_t len)
{
	if (data == NULL)
		return;
	OPENSSL_cleanse(data, len);
	free(data);
}
