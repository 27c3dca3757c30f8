/*
 * verify.h: what the agent checks before an SVID enters its cache or is
 * served (SPEC §4: "the agent verifies every X.509-SVID chain to the trust
 * bundle ... and every JWT-SVID's signature and claims. Anything that fails
 * is not served, logged, and counted").
 *
 * X.509-SVIDs (ly_verify_x509svid), in this order, each failure with its
 * own reason (enum ly_verify_fail) and counter:
 *   1. the chain is concatenated DER, leaf first, within the chain caps
 *      (LY_VERIFY_MALFORMED);
 *   2. the leaf follows the X509-SVID rules: exactly one URI SAN, a SPIFFE
 *      ID with a path (X509-SVID §2), not a CA, key usage critical with
 *      digitalSignature, EKU if present with serverAuth and clientAuth
 *      (§4); intermediates are CAs with keyCertSign (§4.1, §4.3)
 *      (LY_VERIFY_POLICY);
 *   3. that SPIFFE ID is the entry's, byte for byte (LY_VERIFY_WRONG_ID),
 *      and in the agent's trust domain (LY_VERIFY_WRONG_TRUST_DOMAIN);
 *   4. the leaf certifies the key the agent generated for it: a server
 *      cannot hand the agent a certificate for a key it does not hold
 *      (LY_VERIFY_KEY_MISMATCH);
 *   5. now is inside the leaf's validity window (LY_VERIFY_EXPIRED);
 *   6. RFC 5280 path validation to the current bundle's X.509 authorities
 *      (X509-SVID §5; ly_x509svid_verify_x509): signatures, every
 *      certificate's validity, CA flags and key usage on the way
 *      (LY_VERIFY_UNTRUSTED, or LY_VERIFY_EXPIRED for a CA out of its
 *      window); with no bundle yet, LY_VERIFY_NO_BUNDLE.
 * JWT-SVIDs (ly_verify_jwtsvid): ly_jwt_validate against the bundles
 * (signature with a key of the subject's trust domain bound to its alg,
 * aud contains the audience, exp, nbf, iat: JWT-SVID §3, §4), then sub ==
 * the expected SPIFFE ID when one is given.
 *
 * The trust store: one X509_STORE per bundle version, built by
 * ly_verifier_set_bundle only when the bundle's sequence or X.509
 * authorities changed (NOTES-openssl.md: building it costs, reusing it is
 * free), never per verification. Step 6 for a chain with intermediates
 * takes a shortcut that gives the same answer: the intermediates (by their
 * exact bytes) are checked as signing certificates and verified to the
 * store once per store, then each leaf is verified to its issuer alone
 * (a partial-chain anchor: one signature) and the path's validity window
 * is compared with `now` (ly_verifier_signer_count). Anything that does
 * not pass the shortcut goes the long way, which names the reason.
 *
 * Every failure is logged (log_warn: the SPIFFE ID and the reason; never a
 * key or a token) and counted. Counters are atomic.
 *
 * Ownership: struct ly_verifier is a heap object (ly_verifier_new /
 * ly_verifier_free). It keeps no reference to the bundle it was given.
 * Threads: the verify functions may run on several threads at once (e.g.
 * uv_queue_work for a large batch) on one verifier; ly_verifier_set_bundle
 * must not run while any of them does (the loop thread calls it between
 * batches), and ly_verify_recheck_cache changes the cache, so it runs on
 * the loop thread.
 */
#ifndef LANYARD_AGENT_VERIFY_H
#define LANYARD_AGENT_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "agent/cache.h"
#include "lib/bundle.h"
#include "lib/error.h"
#include "lib/spiffeid.h"
#include "lib/x509svid.h"

enum ly_verify_fail {
	LY_VERIFY_OK = 0,
	LY_VERIFY_MALFORMED,           /* not parseable, over a cap, bad arguments */
	LY_VERIFY_POLICY,              /* breaks an X509-SVID rule (SAN, CA flags, key usage) */
	LY_VERIFY_WRONG_ID,            /* not the entry's SPIFFE ID */
	LY_VERIFY_WRONG_TRUST_DOMAIN,  /* not in our trust domain */
	LY_VERIFY_KEY_MISMATCH,        /* the leaf certifies another key */
	LY_VERIFY_EXPIRED,             /* outside a validity window (or JWT exp/nbf/iat) */
	LY_VERIFY_UNTRUSTED,           /* the chain or signature does not verify */
	LY_VERIFY_NO_BUNDLE,           /* no bundle (or no key) to verify against */
	LY_VERIFY_AUDIENCE,            /* JWT: the audience is not in aud */
	LY_VERIFY_FAIL_COUNT
};

/* A constant name: "ok", "malformed", "policy", "wrong_id", ... (metric labels). */
const char *ly_verify_fail_str(enum ly_verify_fail why);

/* A snapshot of the counters: [reason] counts, OK included. */
struct ly_verify_counters {
	uint64_t x509[LY_VERIFY_FAIL_COUNT];
	uint64_t jwt[LY_VERIFY_FAIL_COUNT];
};

struct ly_verifier;

/* A verifier for trust domain `trust_domain` (bare name), with no bundle yet. */
ly_status ly_verifier_new(const char *trust_domain, struct ly_verifier **out, struct ly_error *err) LY_MUST_CHECK;
void ly_verifier_free(struct ly_verifier *v);

/*
 * Takes the X.509 authorities of `bundle` (which must be for the
 * verifier's trust domain) and builds a new trust store when its sequence
 * or its authorities differ from the current store's; `*rebuilt` (may be
 * NULL) says whether it did. On failure the previous store stays.
 */
ly_status ly_verifier_set_bundle(struct ly_verifier *v, const struct ly_bundle *bundle, bool *rebuilt,
    struct ly_error *err) LY_MUST_CHECK;
/* The sequence of the bundle the store was built from (0 before any). */
uint64_t ly_verifier_bundle_sequence(const struct ly_verifier *v);

/*
 * Verifies an X.509-SVID (the checks above) for `expected_id` at `now`
 * (Unix seconds) with `key`, the key pair the agent generated for it (its
 * public half must be the leaf's). On success `info` (may be NULL) gets the
 * SPIFFE ID and validity. On failure `*why` (may be NULL) gets the reason;
 * the status is LY_E_INVALID (malformed, policy, wrong ID or trust domain,
 * key mismatch), LY_E_EXPIRED, LY_E_UNTRUSTED or LY_E_NOT_FOUND (no bundle).
 */
ly_status ly_verify_x509svid(struct ly_verifier *v, const uint8_t *chain, size_t chain_len, const EVP_PKEY *key,
    const char *expected_id, int64_t now, struct ly_x509svid_info *info, enum ly_verify_fail *why,
    struct ly_error *err) LY_MUST_CHECK;

/* The same with the key as PKCS#8 DER (decoded here; e.g. state reloaded from disk). */
ly_status ly_verify_x509svid_key_der(struct ly_verifier *v, const uint8_t *chain, size_t chain_len,
    const uint8_t *key_der, size_t key_len, const char *expected_id, int64_t now, struct ly_x509svid_info *info,
    enum ly_verify_fail *why, struct ly_error *err) LY_MUST_CHECK;

/*
 * Validates a JWT-SVID (`len` bytes at `token`) for `audience` at `now`
 * against `bundles` (ly_jwt_validate), and, when `expected_id` is not
 * NULL, checks sub equals it (LY_VERIFY_WRONG_ID, LY_E_INVALID).
 * `sub_out` and `claims_out` as ly_jwt_validate (may be NULL; the caller
 * releases the claims with json_decref).
 */
ly_status ly_verify_jwtsvid(struct ly_verifier *v, const char *token, size_t len, const char *audience,
    const char *expected_id, const struct ly_bundle_set *bundles, int64_t now, struct ly_spiffe_id *sub_out,
    json_t **claims_out, enum ly_verify_fail *why, struct ly_error *err) LY_MUST_CHECK;

/*
 * After a bundle change: drops from `cache` every SVID whose chain no
 * longer verifies to the current store at `now` (an authority removed).
 * SVIDs sharing intermediates (the cache interns them) are decided by one
 * verification per distinct intermediate chain, so this costs one
 * verification per signing CA, not per SVID; SVIDs without intermediates
 * are verified one by one. Returns how many were dropped (counted as
 * LY_VERIFY_UNTRUSTED or LY_VERIFY_EXPIRED).
 */
size_t ly_verify_recheck_cache(struct ly_verifier *v, struct ly_cache *cache, int64_t now,
    struct ly_cache_changes *changes);

/*
 * How many signing paths (a chain's intermediates, by their exact bytes)
 * the verifier holds as verified to the current store: a leaf under one
 * is verified with one signature (its issuer as a partial-chain anchor)
 * plus the path's validity window, instead of the whole path. Emptied by
 * every store rebuild; at most LY_VERIFY_SIGNERS_MAX.
 */
size_t ly_verifier_signer_count(struct ly_verifier *v);

/* Copies the counters (each read atomically). */
void ly_verifier_counters(const struct ly_verifier *v, struct ly_verify_counters *out);

#endif /* LANYARD_AGENT_VERIFY_H */
