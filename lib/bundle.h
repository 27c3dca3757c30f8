/*
 * bundle.h: SPIFFE trust bundles (SPIFFE Trust Domain and Bundle standard,
 * spiffe/spiffe standards/SPIFFE_Trust_Domain_and_Bundle.md) and sets of
 * them keyed by trust domain, for our own trust domain and federation.
 *
 * A bundle holds, for one trust domain:
 *   - X.509 authorities: CA certificates kept as DER bytes (parsed once when
 *     added, to check them; never held as OpenSSL objects);
 *   - JWT authorities: (kid, public EVP_PKEY) pairs, kids unique;
 *   - spiffe_sequence (§4.1.1) and spiffe_refresh_hint in seconds (§4.1.2);
 *     0 means "not set" for both.
 *
 * Formats:
 *   - SPIFFE bundle (a JWK Set, §4): parsed strictly, written with both kinds
 *     of keys, spiffe_sequence and spiffe_refresh_hint. Rules, from the
 *     standards and Lanyard's SPEC §1:
 *       * `keys` MUST be present and an array (§4.1.3), at most
 *         LY_JWKS_KEYS_MAX elements, the document at most LY_JWKS_MAX bytes;
 *       * every element is an object with a string `use` (§4.2.2: MUST be
 *         set) and a string `kty` (§4.2.1: MUST be set);
 *       * unknown `use` values and unknown `kty` values are ignored, the
 *         whole element skipped (§4.1.3, §4.2.1, §4.2.2: "MUST ignore");
 *         kty "oct" is not unknown: a symmetric key is refused (jwk.h);
 *       * `use: x509-svid`: exactly one `x5c` entry, standard base64 of the
 *         DER of a CA certificate, no `kid` (X509-SVID §6.1), and the JWK's
 *         public parameters equal to the certificate's key. Stricter than
 *         X509-SVID §6.2, which tells consumers to skip an entry without x5c
 *         and to ignore extra x5c values: SPEC §1 ("exactly one x5c and no
 *         kid") and go-spiffe both refuse such a bundle, and a bundle that
 *         says two things about its CA is not one we want to half-trust;
 *       * `use: jwt-svid`: a `kid` (JWT-SVID §6.1), unique in the bundle
 *         (a duplicate would make key selection ambiguous); `x5c`, if any,
 *         is ignored;
 *       * spiffe_sequence and spiffe_refresh_hint, when present,
 *         non-negative integers (jansson reads up to INT64_MAX);
 *       * other top-level members are ignored (§4.1: MAY be included).
 *   - PEM: a run of "CERTIFICATE" blocks, only whitespace around and between
 *     them; any other block type or other text is refused; at most
 *     LY_BUNDLE_CERTS_MAX certificates, LY_PEM_FILE_MAX bytes.
 *
 * Ownership: ly_bundle_new/ly_bundle_parse_* return a heap bundle freed with
 * ly_bundle_free. Accessors return pointers borrowed from the bundle, valid
 * until it is changed or freed. Writers return malloc'd strings (free()) or
 * fill an empty struct ly_buf (ly_buf_free()). ly_bundle_set owns the
 * bundles put into it.
 *
 * Thread-safety: none inside; a bundle or set that is no longer changed may
 * be read from many threads at once (every reader takes const pointers).
 */
#ifndef LANYARD_BUNDLE_H
#define LANYARD_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "buf.h"
#include "caps.h"
#include "error.h"

struct ly_bundle;
struct ly_bundle_set;

/* An empty bundle for trust domain `td` (bare name, validated). */
ly_status ly_bundle_new(const char *td, struct ly_bundle **out, struct ly_error *err) LY_MUST_CHECK;
void ly_bundle_free(struct ly_bundle *b);
/* A deep copy (keys are shared by reference count; they are immutable). */
ly_status ly_bundle_clone(const struct ly_bundle *b, struct ly_bundle **out, struct ly_error *err) LY_MUST_CHECK;
/* True when both have the same trust domain, sequence, refresh hint, and the same authorities in order. */
bool ly_bundle_equal(const struct ly_bundle *a, const struct ly_bundle *b);

const char *ly_bundle_trust_domain(const struct ly_bundle *b);
uint64_t ly_bundle_sequence(const struct ly_bundle *b);
uint64_t ly_bundle_refresh_hint(const struct ly_bundle *b);
/* Values above INT64_MAX are refused (LY_E_LIMIT): JSON readers cap there. */
ly_status ly_bundle_update_sequence(struct ly_bundle *b, uint64_t seq, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_bundle_update_refresh_hint(struct ly_bundle *b, uint64_t seconds, struct ly_error *err) LY_MUST_CHECK;

/*
 * X.509 authorities. Adding checks that `der` is exactly one certificate (no
 * trailing bytes, at most LY_CERT_DER_MAX), a CA, with a key ly_jwk_check_pkey
 * accepts; adding a certificate already present is a no-op (LY_OK).
 * Removing one that is absent: LY_E_NOT_FOUND.
 */
ly_status ly_bundle_add_x509_authority(struct ly_bundle *b, const uint8_t *der, size_t len,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_bundle_remove_x509_authority(struct ly_bundle *b, const uint8_t *der, size_t len,
    struct ly_error *err) LY_MUST_CHECK;
size_t ly_bundle_x509_authority_count(const struct ly_bundle *b);
/* The DER of authority `i` (< count), borrowed. */
const struct ly_buf *ly_bundle_x509_authority(const struct ly_bundle *b, size_t i);
/* All X.509 authorities as concatenated DER (Workload API `bundle` field); `out` must be empty. */
ly_status ly_bundle_x509_authorities_der(const struct ly_bundle *b, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * JWT authorities. Adding stores a public-only copy of `key` (a private key
 * is never kept), checks the kid (ly_jwk_kid_check) and the key
 * (ly_jwk_check_pkey), and refuses a kid already present (LY_E_INVALID).
 */
ly_status ly_bundle_add_jwt_authority(struct ly_bundle *b, const char *kid, const EVP_PKEY *key,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_bundle_remove_jwt_authority(struct ly_bundle *b, const char *kid, struct ly_error *err) LY_MUST_CHECK;
/* The key for `kid` (exact match), borrowed; NULL when absent. */
EVP_PKEY *ly_bundle_find_jwt_authority(const struct ly_bundle *b, const char *kid);
size_t ly_bundle_jwt_authority_count(const struct ly_bundle *b);
/* kid and key of authority `i` (< count), borrowed. */
const char *ly_bundle_jwt_authority_kid(const struct ly_bundle *b, size_t i);
EVP_PKEY *ly_bundle_jwt_authority_key(const struct ly_bundle *b, size_t i);

/* Flags for ly_bundle_write_jwks. */
enum {
	/* Indented output for people (default: compact). */
	LY_JWKS_PRETTY = 1 << 0,
	/*
	 * Only the JWT authorities, and no spiffe_* members: the plain JWKS the
	 * Workload API's FetchJWTBundles returns (what go-spiffe's jwtbundle
	 * parses, which wants a kid on every key).
	 */
	LY_JWKS_JWT_ONLY = 1 << 1,
};

/*
 * Parses a SPIFFE bundle (JWKS) for trust domain `td` (the document does
 * not name its trust domain: the caller knows it, standard §3).
 */
ly_status ly_bundle_parse_jwks(const char *td, const char *json, size_t len, struct ly_bundle **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Writes `b` as a SPIFFE bundle; `*out` is a NUL-terminated string the caller frees with free(). */
ly_status ly_bundle_write_jwks(const struct ly_bundle *b, unsigned flags, char **out,
    struct ly_error *err) LY_MUST_CHECK;

/* Parses PEM text into a new bundle for `td` with those X.509 authorities (at least one). */
ly_status ly_bundle_parse_pem(const char *td, const char *pem, size_t len, struct ly_bundle **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Adds the certificates of PEM text to `b` (all or none). */
ly_status ly_bundle_add_pem(struct ly_bundle *b, const char *pem, size_t len, struct ly_error *err) LY_MUST_CHECK;
/* Writes every X.509 authority as a PEM CERTIFICATE block; caller frees `*out` with free(). */
ly_status ly_bundle_write_pem(const struct ly_bundle *b, char **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * A set of bundles, at most one per trust domain, at most LY_BUNDLE_SET_MAX.
 * ly_bundle_set_put takes ownership of `b` on success (replacing and freeing
 * a bundle of the same trust domain); on failure the caller still owns it.
 */
ly_status ly_bundle_set_new(struct ly_bundle_set **out, struct ly_error *err) LY_MUST_CHECK;
void ly_bundle_set_free(struct ly_bundle_set *set);
ly_status ly_bundle_set_put(struct ly_bundle_set *set, struct ly_bundle *b, struct ly_error *err) LY_MUST_CHECK;
/* Borrowed; NULL when no bundle for `td`. */
const struct ly_bundle *ly_bundle_set_find(const struct ly_bundle_set *set, const char *td);
ly_status ly_bundle_set_remove(struct ly_bundle_set *set, const char *td, struct ly_error *err) LY_MUST_CHECK;
size_t ly_bundle_set_count(const struct ly_bundle_set *set);
/* Bundle `i` (< count), in no particular order, borrowed. */
const struct ly_bundle *ly_bundle_set_at(const struct ly_bundle_set *set, size_t i);

#endif /* LANYARD_BUNDLE_H */
