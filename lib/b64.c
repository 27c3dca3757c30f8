/* b64.c: see b64.h. */
#include "b64.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of `c` in the chosen alphabet, or -1. */
static int
b64_value(unsigned char c, int url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (url) {
		if (c == '-')
			return 62;
		if (c == '_')
			return 63;
	} else {
		if (c == '+')
			return 62;
		if (c == '/')
			return 63;
	}
	return -1;
}

size_t
ly_b64url_encoded_len(size_t len)
{
	if (len > (SIZE_MAX - 4) / 4 * 3)
		return 0;
	size_t rem = len % 3;
	return len / 3 * 4 + (rem == 0 ? 0 : rem + 1);
}

size_t
ly_b64_encoded_len(size_t len)
{
	if (len > (SIZE_MAX - 4) / 4 * 3)
		return 0;
	return (len + 2) / 3 * 4;
}

/* Encodes with `alphabet`, padding with '=' when `pad`; NUL-terminates. */
static size_t
encode(const uint8_t *in, size_t len, char *dst, const char *alphabet, int pad)
{
	size_t o = 0;
	size_t i = 0;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		dst[o++] = alphabet[(v >> 18) & 63];
		dst[o++] = alphabet[(v >> 12) & 63];
		dst[o++] = alphabet[(v >> 6) & 63];
		dst[o++] = alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		dst[o++] = alphabet[(v >> 18) & 63];
		dst[o++] = alphabet[(v >> 12) & 63];
		if (pad) {
			dst[o++] = '=';
			dst[o++] = '=';
		}
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		dst[o++] = alphabet[(v >> 18) & 63];
		dst[o++] = alphabet[(v >> 12) & 63];
		dst[o++] = alphabet[(v >> 6) & 63];
		if (pad)
			dst[o++] = '=';
	}
	dst[o] = '\0';
	return o;
}

size_t
ly_b64url_encode_into(const uint8_t *in, size_t len, char *dst)
{
	return encode(in, len, dst, b64url_alphabet, 0);
}

static ly_status
encode_alloc(const uint8_t *in, size_t len, char **out, int url, struct ly_error *err)
{
	*out = NULL;
	size_t n = url ? ly_b64url_encoded_len(len) : ly_b64_encoded_len(len);
	if (n == 0 && len != 0)
		return ly_error_set(err, LY_E_LIMIT, "base64: %zu bytes is too large to encode", len);
	char *s = malloc(n + 1);
	if (s == NULL)
		return ly_error_set(err, LY_E_NOMEM, "base64: allocating %zu bytes", n + 1);
	(void)encode(in, len, s, url ? b64url_alphabet : b64_alphabet, !url);
	*out = s;
	return LY_OK;
}

ly_status
ly_b64url_encode(const uint8_t *in, size_t len, char **out, struct ly_error *err)
{
	return encode_alloc(in, len, out, 1, err);
}

ly_status
ly_b64_encode(const uint8_t *in, size_t len, char **out, struct ly_error *err)
{
	return encode_alloc(in, len, out, 0, err);
}

/*
 * Decodes `len` alphabet characters (no padding left in them) into a new
 * buffer. `name` is the encoding's name for messages.
 */
static ly_status
decode(const char *in, size_t len, int url, struct ly_buf *out, struct ly_error *err)
{
	const char *name = url ? "base64url" : "base64";
	ly_status rc = LY_OK;
	uint8_t *p = NULL;

	/* 4n+1 characters cannot be whole bytes: refused after the alphabet check. */
	size_t outlen = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
	p = malloc(outlen > 0 ? outlen : 1);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: allocating %zu bytes", name, outlen);

	size_t o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	int last = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		int v = b64_value(c, url);
		if (v < 0) {
			if (c == '=')
				rc = ly_error_set(err, LY_E_INVALID, "%s: padding '=' not allowed at offset %zu",
				    name, i);
			else
				rc = ly_error_set(err, LY_E_INVALID, "%s: character 0x%02x at offset %zu not in the alphabet",
				    name, c, i);
			goto out;
		}
		last = v;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			p[o++] = (uint8_t)(acc >> bits);
		}
	}
	if (len % 4 == 1) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: length %zu is not a whole number of bytes", name, len);
		goto out;
	}
	/* RFC 4648 §3.5: the unused low bits of the last character must be 0. */
	if (bits > 0 && (last & ((1 << bits) - 1)) != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: non-canonical trailing bits", name);
		goto out;
	}
	if (o != outlen) {
		rc = ly_error_set(err, LY_E_INTERNAL, "%s: decoded %zu bytes, expected %zu", name, o, outlen);
		goto out;
	}
	ly_buf_adopt(out, p, outlen);
	p = NULL;
out:
	if (p != NULL) {
		OPENSSL_cleanse(p, outlen);
		free(p);
	}
	return rc;
}

ly_status
ly_b64url_decode(const char *in, size_t len, struct ly_buf *out, struct ly_error *err)
{
	ly_buf_adopt(out, NULL, 0);
	return decode(in, len, 1, out, err);
}

ly_status
ly_b64_decode(const char *in, size_t len, struct ly_buf *out, struct ly_error *err)
{
	ly_buf_adopt(out, NULL, 0);
	if (len % 4 != 0)
		return ly_error_set(err, LY_E_INVALID, "base64: length %zu is not a multiple of 4 (padding required)",
		    len);
	/* Padding: at most two '=', only at the very end. */
	size_t body = len;
	if (body > 0 && in[body - 1] == '=')
		body--;
	if (body > 0 && in[body - 1] == '=')
		body--;
	if (len - body > 0 && body % 4 < 2)
		return ly_error_set(err, LY_E_INVALID, "base64: too much padding");
	return decode(in, body, 0, out, err);
}
