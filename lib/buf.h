/*
 * buf.h: an owned byte buffer, and wiping helpers for secrets.
 *
 * struct ly_buf owns `data` (heap, malloc'd). ly_buf_free() releases it;
 * ly_buf_free_secret() wipes it with OPENSSL_cleanse first, for key bytes,
 * packed responses that carry a key, and tokens. Both leave {NULL, 0}.
 * ly_buf_take() hands the bytes over and leaves the source empty.
 */
#ifndef LANYARD_BUF_H
#define LANYARD_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct ly_buf {
	uint8_t *data;
	size_t len;
};

#define LY_BUF_INIT { NULL, 0 }

/* Copies `len` bytes into a new buffer (len 0 gives a 1-byte allocation). */
ly_status ly_buf_set(struct ly_buf *buf, const void *data, size_t len, struct ly_error *err) LY_MUST_CHECK;
/* Appends `len` bytes, refusing to grow past `cap` bytes in all (LY_E_LIMIT). */
ly_status ly_buf_append(struct ly_buf *buf, const void *data, size_t len, size_t cap,
    struct ly_error *err) LY_MUST_CHECK;
void ly_buf_free(struct ly_buf *buf);
void ly_buf_free_secret(struct ly_buf *buf);
/* Moves *src into *dst (dst must be empty), leaving src empty. */
void ly_buf_take(struct ly_buf *dst, struct ly_buf *src);

/* Wipes and frees a NUL-terminated heap string (tokens, PEM keys). */
void ly_free_secret_str(char *s);

#endif /* LANYARD_BUF_H */
