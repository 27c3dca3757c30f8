/*
 * text.c: checking and escaping outside text, see text.h.
 */
#include "text.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/*
 * Decodes one UTF-8 sequence at p[0..n) (n >= 1) into *cp: its length, or
 * 0 when it is not the shortest form of a scalar value (overlong, a
 * surrogate, past U+10FFFF, cut short, a stray continuation byte).
 */
static size_t
utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
	unsigned c = p[0];
	size_t k;
	uint32_t v, min;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if ((c & 0xe0) == 0xc0) {
		k = 2, v = c & 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		k = 3, v = c & 0x0f, min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		k = 4, v = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < k)
		return 0;
	for (size_t j = 1; j < k; j++) {
		if ((p[j] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (p[j] & 0x3fu);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return k;
}

ly_status
ly_text_check(const char *what, const char *s, size_t cap, struct ly_error *err)
{
	if (s == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s is missing", what);
	size_t n = strnlen(s, cap + 1);
	if (n == 0)
		return ly_error_set(err, LY_E_INVALID, "%s is empty", what);
	if (n > cap)
		return ly_error_set(err, LY_E_LIMIT, "%s is over %zu bytes", what, cap);
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t k = utf8_decode(p + i, n - i, &cp);
		if (k == 0)
			return ly_error_set(err, LY_E_INVALID, "%s is not UTF-8", what);
		if (cp < 0x20 || cp == 0x7f)
			return ly_error_set(err, LY_E_INVALID, "%s holds a control character", what);
		if (cp >= 0x80 && cp < 0xa0)
			return ly_error_set(err, LY_E_INVALID, "%s is not UTF-8 text", what);
		i += k;
	}
	return LY_OK;
}

/* Code points a terminal would act on rather than show (text.h). */
static bool
escape_cp(uint32_t cp)
{
	return (cp >= 0x80 && cp < 0xa0) || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* The escaped form of the character at p[i..n) into `piece`; returns the bytes it takes. */
static size_t
escape_one(const unsigned char *p, size_t n, size_t i, char piece[16])
{
	uint32_t cp = 0;
	size_t k = utf8_decode(p + i, n - i, &cp);

	if (k == 0) {
		(void)snprintf(piece, 16, "\\x%02x", p[i]);
		return 1;
	}
	if (k > 1) {
		if (escape_cp(cp)) {
			(void)snprintf(piece, 16, "\\u%04x", (unsigned)cp);
		} else {
			memcpy(piece, p + i, k);
			piece[k] = '\0';
		}
		return k;
	}
	switch (cp) {
	case '\a': (void)snprintf(piece, 16, "\\a"); break;
	case '\b': (void)snprintf(piece, 16, "\\b"); break;
	case '\f': (void)snprintf(piece, 16, "\\f"); break;
	case '\n': (void)snprintf(piece, 16, "\\n"); break;
	case '\r': (void)snprintf(piece, 16, "\\r"); break;
	case '\t': (void)snprintf(piece, 16, "\\t"); break;
	case '\v': (void)snprintf(piece, 16, "\\v"); break;
	case '\\': (void)snprintf(piece, 16, "\\\\"); break;
	default:
		if (cp < 0x20 || cp == 0x7f)
			(void)snprintf(piece, 16, "\\x%02x", (unsigned)cp);
		else
			(void)snprintf(piece, 16, "%c", (char)cp);
		break;
	}
	return 1;
}

size_t
ly_text_escape(const char *s, char *out, size_t size)
{
	static const char dots[] = "...";
	const size_t ndots = sizeof(dots) - 1;
	char piece[16];
	size_t o = 0, total = 0;

	if (out == NULL || size == 0)
		return 0;
	out[0] = '\0';
	if (s == NULL)
		return 0;
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		i += escape_one(p, n, i, piece);
		total += strlen(piece);
	}
	/* When it does not all fit, keep room for the dots. */
	size_t room = total < size ? size - 1 : (size > ndots ? size - 1 - ndots : 0);
	for (size_t i = 0; i < n;) {
		size_t k = escape_one(p, n, i, piece);
		size_t len = strlen(piece);
		if (o + len > room)
			break;
		memcpy(out + o, piece, len);
		o += len;
		i += k;
	}
	if (total >= size && size > ndots) {
		memcpy(out + o, dots, ndots);
		o += ndots;
	}
	out[o] = '\0';
	return o;
}
