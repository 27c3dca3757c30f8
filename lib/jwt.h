/*
 * jwt.h: JWT-SVIDs (spiffe/spiffe standards/JWT-SVID.md): signing, and
 * validation against trust bundles.
 *
 * Validation (ly_jwt_validate) refuses, each with a message naming the rule:
 *   - a token over LY_JWT_MAX bytes (LY_E_LIMIT), with a NUL byte, or that
 *     is not exactly three non-empty base64url segments (JWS Compact
 *     Serialization, JWT-SVID §5.1; strict base64url, see b64.h);
 *   - a header that is not a JSON object (decoded size at most
 *     LY_JWT_HEADER_MAX), whose `alg` is not one of RS256/384/512,
 *     ES256/384/512, PS256/384/512 (JWT-SVID §2.1: never "none", never
 *     HS*), without a `kid` (Lanyard SPEC §1 makes it required; the
 *     standard's §2.2 leaves it optional) of at most LY_JWT_KID_MAX
 *     printable ASCII bytes, with a `typ` other than "JWT" or "JOSE" (§2.3),
 *     or with any other member: JWT-SVID §2 says "Any header not described
 *     here ... MUST NOT be included", and the dangerous ones (crit, jku,
 *     x5u, x5c, jwk: keys or key locations taken from the token) are named
 *     in the message;
 *   - claims that are not a JSON object, or a `sub` that is not a SPIFFE ID
 *     with a path (§3.1); the bundle is chosen by the trust domain of this
 *     (not yet verified) sub, and the token is refused when the set has no
 *     bundle for it (LY_E_NOT_FOUND) or that bundle has no key with the
 *     token's kid (LY_E_NOT_FOUND);
 *   - an `alg` that does not fit the key exactly: ES256/P-256, ES384/P-384,
 *     ES512/P-521, RS* and PS* for RSA keys (LY_E_INVALID). The key picks
 *     the verifier; `alg` only picks the hash and the RSA padding;
 *   - a signature that does not verify (LY_E_UNTRUSTED); ECDSA signatures
 *     must be exactly 2 x the curve's field size (raw r||s, RFC 7518 §3.4),
 *     RSA signatures exactly the modulus size; PSS salt = hash size (§3.5);
 *   - then, on the verified claims: `aud` missing, empty, not a string or an
 *     array of strings, more than LY_JWT_AUDIENCES_MAX values, or without
 *     `audience` (§3.2); `exp` missing or not a number (§3.3), or
 *     now >= exp + LY_JWT_LEEWAY_SECONDS (LY_E_EXPIRED); `nbf` or `iat`
 *     present and not a number, or later than now + leeway (LY_E_EXPIRED).
 * All JSON is parsed by ly_json_parse_strict (duplicate keys refused,
 * nesting capped).
 *
 * Ownership: ly_jwt_sign returns a token (a bearer secret) the caller frees
 * with ly_free_secret_str(). ly_jwt_validate returns the claims as a new
 * json_t object the caller releases with json_decref(), and the subject in a
 * caller-owned struct ly_spiffe_id. Nothing is kept; both functions are
 * reentrant (a bundle set not being changed may be shared by threads).
 */
#ifndef LANYARD_JWT_H
#define LANYARD_JWT_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "bundle.h"
#include "caps.h"
#include "error.h"
#include "spiffeid.h"

/* JWT-SVID §2.1: the only algorithms there are. */
enum ly_jwt_alg {
	LY_JWT_RS256,
	LY_JWT_RS384,
	LY_JWT_RS512,
	LY_JWT_ES256,
	LY_JWT_ES384,
	LY_JWT_ES512,
	LY_JWT_PS256,
	LY_JWT_PS384,
	LY_JWT_PS512,
};

/* "RS256" for LY_JWT_RS256, ... */
const char *ly_jwt_alg_name(enum ly_jwt_alg alg);
/* Parses an `alg` value from the allow-list; anything else is refused (LY_E_UNSUPPORTED). */
ly_status ly_jwt_alg_parse(const char *name, size_t len, enum ly_jwt_alg *out, struct ly_error *err) LY_MUST_CHECK;
/*
 * Checks that `alg` fits `key` exactly (ES256 with P-256, ..., RS and PS with
 * RSA of at least LY_JWK_RSA_BITS_MIN bits). The single place that ties
 * algorithms to key types, for signing and for validation.
 */
ly_status ly_jwt_alg_check_key(enum ly_jwt_alg alg, const EVP_PKEY *key, struct ly_error *err) LY_MUST_CHECK;

/* A parsed, checked JOSE header. */
struct ly_jwt_header {
	enum ly_jwt_alg alg;
	char kid[LY_JWT_KID_MAX + 1];
};

/* Parses and checks the JSON of a JOSE header (the header rules above). */
ly_status ly_jwt_header_parse(const char *json, size_t len, struct ly_jwt_header *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Signs a JWT-SVID: header {"alg","kid","typ":"JWT"}, claims {"sub","aud",
 * "exp","iat"} (`aud` a string when naud == 1, else an array).
 *   - `alg` NULL: derived from the key (P-256 ES256, P-384 ES384, P-521
 *     ES512, RSA RS256); otherwise one of the allow-list that fits the key
 *     (ly_jwt_alg_check_key);
 *   - `sub` must have a path; 1..LY_JWT_AUDIENCES_MAX non-empty audiences;
 *     `kid` as ly_jwk_kid_check; iat >= 0, exp > iat;
 *   - the token must fit LY_JWT_MAX (so that it can be validated).
 */
ly_status ly_jwt_sign(EVP_PKEY *key, const char *kid, const char *alg, const struct ly_spiffe_id *sub,
    const char *const *aud, size_t naud, time_t iat, time_t exp, char **token_out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Validates the `len` bytes at `token` (need not be NUL-terminated) for
 * `audience` at time `now`, with the keys of `bundles` (the rules above).
 * On success fills `sub_out` (may be NULL) and `*claims_out` (may be NULL).
 * On failure `*claims_out` is NULL and `sub_out` is zeroed.
 */
ly_status ly_jwt_validate(const char *token, size_t len, const char *audience,
    const struct ly_bundle_set *bundles, time_t now, struct ly_spiffe_id *sub_out, json_t **claims_out,
    struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_JWT_H */
