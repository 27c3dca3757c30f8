/*
 * b64.h: strict base64url (RFC 4648 §5, no padding, as JWS uses it: RFC 7515
 * §2 "Base64url Encoding") and strict standard base64 (RFC 4648 §4, padded,
 * as a JWK's `x5c` uses it: RFC 7517 §4.7).
 *
 * Decoding is strict: one input has exactly one accepted spelling. Refused
 * with LY_E_INVALID and a message naming the rule:
 *   - any byte outside the alphabet (whitespace and line breaks included);
 *   - for base64url, any '=' (padding is not allowed in JWS);
 *   - for base64, a length that is not a multiple of 4, or '=' anywhere but
 *     the last one or two places;
 *   - a length that cannot be the encoding of whole bytes (4n+1 characters);
 *   - non-canonical trailing bits (the unused low bits of the last
 *     character must be zero: "QQ" decodes to "A", "QR" is refused), so a
 *     token cannot be altered without changing its bytes.
 *
 * Decoders do not cap their input: the caller checks the length against a
 * cap in caps.h first (the decoded size is at most 3/4 of the input).
 *
 * Ownership: encoders return a malloc'd NUL-terminated string the caller
 * frees with free() (or ly_free_secret_str() when it carries a secret);
 * decoders fill an empty struct ly_buf the caller frees with ly_buf_free()
 * (or ly_buf_free_secret()). On failure nothing is returned and the output
 * is left empty.
 */
#ifndef LANYARD_B64_H
#define LANYARD_B64_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

/*
 * Number of characters (without the NUL) that encoding `len` bytes gives,
 * or 0 with `len` too large to encode. ly_b64url: no padding; ly_b64: padded.
 */
size_t ly_b64url_encoded_len(size_t len);
size_t ly_b64_encoded_len(size_t len);

/*
 * Encodes into `dst`, which has room for ly_b64url_encoded_len(len) + 1
 * bytes; writes the NUL and returns the number of characters written.
 */
size_t ly_b64url_encode_into(const uint8_t *in, size_t len, char *dst);

/* Encodes `len` bytes into a new string (caller frees). */
ly_status ly_b64url_encode(const uint8_t *in, size_t len, char **out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_b64_encode(const uint8_t *in, size_t len, char **out, struct ly_error *err) LY_MUST_CHECK;

/* Decodes `len` characters at `in` (need not be NUL-terminated) into `out`, which must be empty. */
ly_status ly_b64url_decode(const char *in, size_t len, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_b64_decode(const char *in, size_t len, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_B64_H */
