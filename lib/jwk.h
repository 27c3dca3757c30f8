/*
 * jwk.h: public keys as JSON Web Keys (RFC 7517, parameters from RFC 7518
 * §6), for SPIFFE bundles (SPIFFE Trust Domain and Bundle standard §4.2) and
 * JWT-SVID verification; and the one strict JSON loader every JSON parser in
 * lib/ uses.
 *
 * Accepted keys (anything else is refused):
 *   - "EC" on P-256, P-384, P-521 (`crv`), `x` and `y` base64url of exactly
 *     the field size (32/48/66 bytes, RFC 7518 §6.2.1.2-3), the point on the
 *     curve;
 *   - "RSA" with `n` and `e` base64urlUInt (minimal: no leading zero byte,
 *     RFC 7518 §2), n odd, LY_JWK_RSA_BITS_MIN <= bits <= LY_RSA_BITS_MAX,
 *     e odd, > 1, at most LY_JWK_RSA_E_MAX bytes.
 * Refused on purpose:
 *   - "oct" (a symmetric key: a bundle that publishes one invites HMAC
 *     forgery with the "public" key);
 *   - any private member ("d", "p", "q", "dp", "dq", "qi", "oth", "k") even
 *     alongside valid public ones: a public JWK that carries a private key
 *     is a leak, and we never want to hold it (RFC 7517 §9.2).
 * Other members (use, kid, alg, x5c, key_ops, ...) are ignored here; the
 * bundle module checks the ones the SPIFFE standards define.
 *
 * Ownership: ly_jwk_to_pkey returns a new public-only EVP_PKEY the caller
 * frees with EVP_PKEY_free; ly_jwk_from_pkey returns a new json_t object
 * the caller releases with json_decref (strict JSON parsing is lib/json.h).
 * Nothing is kept.
 */
#ifndef LANYARD_JWK_H
#define LANYARD_JWK_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "caps.h"
#include "error.h"

/* Smallest RSA modulus accepted anywhere a JWK or JWT is involved. */
#define LY_JWK_RSA_BITS_MIN 2048

/*
 * Checks that `key` is one we can express as a JWK and use for JWT-SVIDs:
 * EC P-256/P-384/P-521 or RSA of LY_JWK_RSA_BITS_MIN..LY_RSA_BITS_MAX bits.
 * LY_E_UNSUPPORTED otherwise.
 */
ly_status ly_jwk_check_pkey(const EVP_PKEY *key, struct ly_error *err) LY_MUST_CHECK;

/*
 * For an EC key on P-256, P-384 or P-521: its JWK `crv` name ("P-256") and,
 * in `*width` (may be NULL), the field size in bytes (32, 48, 66). NULL for
 * any other key.
 */
const char *ly_jwk_ec_crv(const EVP_PKEY *key, size_t *width);

/*
 * Writes the public parameters of `key` as a new JWK object:
 * {"kty":"EC","crv":"P-256","x":..,"y":..} or {"kty":"RSA","n":..,"e":..}.
 * Never writes private members, even when `key` holds a private key.
 */
ly_status ly_jwk_from_pkey(const EVP_PKEY *key, json_t **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Reads a public JWK object into a new EVP_PKEY, enforcing every rule in the
 * comment above. kty "oct" and private members: LY_E_INVALID; an unknown kty
 * or curve: LY_E_UNSUPPORTED; RSA too small or too large: LY_E_LIMIT
 * (too large) or LY_E_UNSUPPORTED (too small).
 */
ly_status ly_jwk_to_pkey(const json_t *jwk, EVP_PKEY **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Key IDs: 1..LY_JWT_KID_MAX bytes of printable ASCII (0x21..0x7e). RFC 7517
 * allows any string; we narrow it so that a kid can be named in an error
 * message or a log line without escaping (SPIRE's kids are base62).
 */
ly_status ly_jwk_kid_check(const char *kid, size_t len, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_JWK_H */
