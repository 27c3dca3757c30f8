/* buf.c: see buf.h. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* Growth starts here, then doubles. */
#define BUF_MIN_ALLOC 64

static size_t
allocated(const struct ly_buf *buf)
{
	if (buf->data == NULL)
		return 0;
	return buf->alloc_at == buf->data && buf->alloc > buf->len ? buf->alloc : buf->len;
}

/* Frees the bytes, wiping the whole allocation first when `wipe`. */
static void
release(struct ly_buf *buf, bool wipe)
{
	if (buf->data != NULL && wipe)
		OPENSSL_cleanse(buf->data, allocated(buf));
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
	buf->alloc = 0;
	buf->alloc_at = NULL;
}

void
ly_buf_init(struct ly_buf *buf, size_t cap, bool secret)
{
	buf->data = NULL;
	buf->len = 0;
	buf->alloc = 0;
	buf->alloc_at = NULL;
	buf->cap = cap;
	buf->secret = secret;
}

void
ly_buf_adopt(struct ly_buf *buf, uint8_t *data, size_t len)
{
	ly_buf_init(buf, 0, false);
	buf->data = data;
	buf->len = data != NULL ? len : 0;
}

ly_status
ly_buf_set(struct ly_buf *buf, const void *data, size_t len, struct ly_error *err)
{
	uint8_t *p = malloc(len > 0 ? len : 1);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", len);
	if (len > 0)
		memcpy(p, data, len);
	ly_buf_adopt(buf, p, len);
	buf->alloc = len > 0 ? len : 1;
	buf->alloc_at = p;
	return LY_OK;
}

/* Makes room for `need` bytes in all (need <= limit): doubling, clipped to `limit`. */
static ly_status
grow(struct ly_buf *buf, size_t need, size_t limit, struct ly_error *err)
{
	size_t have = allocated(buf), want;
	uint8_t *p;

	if (buf->data != NULL && need <= have)
		return LY_OK;
	want = have > 0 ? have : BUF_MIN_ALLOC;
	while (want < need)
		want = want > limit / 2 ? limit : want * 2;
	if (want > limit)
		want = limit > need ? limit : need;
	if (want == 0)
		want = 1;
	if (buf->secret) {
		/* A wiping realloc: the old bytes must not stay behind in freed memory. */
		if ((p = malloc(want)) == NULL)
			return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", want);
		if (buf->len > 0)
			memcpy(p, buf->data, buf->len);
		release(buf, true);
		buf->len = 0; /* restored by the caller below */
	} else {
		if ((p = realloc(buf->data, want)) == NULL)
			return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", want);
	}
	buf->data = p;
	buf->alloc = want;
	buf->alloc_at = p;
	return LY_OK;
}

ly_status
ly_buf_append(struct ly_buf *buf, const void *data, size_t len, size_t cap, struct ly_error *err)
{
	size_t limit = buf->cap != 0 && buf->cap < cap ? buf->cap : cap;
	size_t old_len = buf->len;

	if (len > limit || buf->len > limit - len)
		return ly_error_set(err, LY_E_LIMIT, "buffer would exceed %zu bytes", limit);
	LY_TRY(grow(buf, buf->len + len, limit, err));
	buf->len = old_len;
	if (len > 0)
		memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	return LY_OK;
}

ly_status
ly_buf_add(struct ly_buf *buf, const void *data, size_t len, struct ly_error *err)
{
	return ly_buf_append(buf, data, len, buf->cap, err);
}

void
ly_buf_free(struct ly_buf *buf)
{
	if (buf == NULL)
		return;
	release(buf, buf->secret);
}

void
ly_buf_free_secret(struct ly_buf *buf)
{
	if (buf == NULL)
		return;
	release(buf, true);
}

void
ly_buf_take(struct ly_buf *dst, struct ly_buf *src)
{
	*dst = *src;
	src->data = NULL;
	src->len = 0;
	src->alloc = 0;
	src->alloc_at = NULL;
}

size_t
ly_buf_sink_write(char *data, size_t size, size_t nmemb, void *sink)
{
	struct ly_buf_sink *b = sink;

	/* libcurl passes size 1; guard the product anyway. */
	if (size != 1)
		return 0;
	ly_status rc = ly_buf_add(&b->buf, data, nmemb, NULL);
	if (rc == LY_E_LIMIT)
		b->over = true;
	else if (rc != LY_OK)
		b->nomem = true;
	return rc == LY_OK ? nmemb : 0;
}

void
ly_free_secret_str(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}
