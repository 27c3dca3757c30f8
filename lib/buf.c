/* buf.c: see buf.h. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

ly_status
ly_buf_set(struct ly_buf *buf, const void *data, size_t len, struct ly_error *err)
{
	uint8_t *p = malloc(len > 0 ? len : 1);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", len);
	if (len > 0)
		memcpy(p, data, len);
	buf->data = p;
	buf->len = len;
	return LY_OK;
}

ly_status
ly_buf_append(struct ly_buf *buf, const void *data, size_t len, size_t cap, struct ly_error *err)
{
	if (len > cap || buf->len > cap - len)
		return ly_error_set(err, LY_E_LIMIT, "buffer would exceed %zu bytes", cap);
	uint8_t *p = realloc(buf->data, buf->len + len > 0 ? buf->len + len : 1);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", buf->len + len);
	if (len > 0)
		memcpy(p + buf->len, data, len);
	buf->data = p;
	buf->len += len;
	return LY_OK;
}

void
ly_buf_free(struct ly_buf *buf)
{
	if (buf == NULL)
		return;
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
}

void
ly_buf_free_secret(struct ly_buf *buf)
{
	if (buf == NULL)
		return;
	if (buf->data != NULL)
		OPENSSL_cleanse(buf->data, buf->len);
	ly_buf_free(buf);
}

void
ly_buf_take(struct ly_buf *dst, struct ly_buf *src)
{
	*dst = *src;
	src->data = NULL;
	src->len = 0;
}

void
ly_free_secret_str(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}
