/*
 * x509svid.h: X.509-SVID validation, per the SPIFFE X509-SVID standard
 * (spiffe/spiffe standards/X509-SVID.md) and SPEC §1 and §4.
 *
 * Rules, and where they come from:
 *  - leaf (ly_x509svid_check_leaf):
 *      exactly one URI SAN, a SPIFFE ID with a non-empty path (§2, §3.1,
 *      §5.2); a critical SAN when the subject is empty (§3.1);
 *      basicConstraints cA false or absent (§4.1, §5.2); keyUsage present
 *      and critical (§4.3) with digitalSignature and without keyCertSign
 *      or cRLSign (§4.3, §5.2); extendedKeyUsage, when present, with both
 *      serverAuth and clientAuth (§4.4; SPEC §1 makes it a MUST).
 *  - signing certificate (ly_x509svid_check_signing): basicConstraints
 *    with cA true and keyUsage with keyCertSign (§3.2, §4.1, §4.3); a URI
 *    SAN, when present, is exactly one SPIFFE ID with no path (§3.2).
 *  - path (ly_x509svid_verify): RFC 5280 path validation by
 *    X509_verify_cert (§5.1) at the caller's time, with
 *    X509_V_FLAG_X509_STRICT, at most LY_VERIFY_DEPTH_MAX certificates
 *    from leaf to trust anchor, plus the rules above on the leaf and on
 *    every other certificate of the presented chain, and the leaf's
 *    SPIFFE ID in the expected trust domain.
 * Every certificate checked must also be X.509 v3, have no malformed or
 * duplicated extension, and carry a key ly_key_check_acceptable() accepts
 * (LY_E_UNSUPPORTED otherwise); path validation runs at security level 2,
 * so no SHA-1 signature or RSA key under 2048 bits anywhere in the path.
 *
 * Errors name the certificate and the rule: "certificate 0 (leaf): key
 * usage not critical", "certificate 1: not a CA", "chain: certificate 0:
 * certificate has expired". Rule violations are LY_E_INVALID, a chain that
 * does not verify LY_E_UNTRUSTED, outside the validity window
 * LY_E_EXPIRED, over a cap LY_E_LIMIT.
 *
 * Cost: build the X509_STORE once per bundle version and share it (it is
 * safe for concurrent verifications once built, read-only); one
 * verification parses each DER certificate once and runs one
 * X509_verify_cert.
 *
 * Ownership: the X509_STORE from ly_x509_store_new() belongs to the caller
 * (X509_STORE_free, or X509_STORE_up_ref to share it). The verify
 * functions borrow everything they are given and return plain values.
 */
#ifndef LANYARD_X509SVID_H
#define LANYARD_X509SVID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "error.h"
#include "spiffeid.h"

/* What a successful verification learnt about the SVID. */
struct ly_x509svid_info {
	struct ly_spiffe_id id; /* the leaf's SPIFFE ID */
	time_t not_before;      /* the leaf's validity window */
	time_t not_after;
	/* The earliest notAfter in the verified path, leaf to trust anchor. */
	time_t chain_not_after;
};

/*
 * Builds a trust store from the trust domain's X.509 authorities:
 * `len` bytes of concatenated DER CA certificates (a bundle, at most
 * LY_BUNDLE_CERTS_MAX / LY_BUNDLE_DER_MAX). Each authority must pass
 * ly_x509svid_check_signing (the store is built once, so checked once).
 * *out: caller frees with X509_STORE_free.
 */
ly_status ly_x509_store_new(const uint8_t *authorities_der, size_t len, X509_STORE **out, struct ly_error *err)
    LY_MUST_CHECK;

/* The leaf rules above. `out_id` (may be NULL) gets the SPIFFE ID. */
ly_status ly_x509svid_check_leaf(X509 *leaf, struct ly_spiffe_id *out_id, struct ly_error *err) LY_MUST_CHECK;

/* The signing-certificate rules above. */
ly_status ly_x509svid_check_signing(X509 *cert, struct ly_error *err) LY_MUST_CHECK;

/*
 * Verifies an X.509-SVID chain: `chain_len` bytes of concatenated DER,
 * leaf first, then intermediates (the trust anchor may be included or
 * not), against `store`, at time `now` (pass time(NULL) for the present),
 * and checks the leaf's SPIFFE ID is in `trust_domain` (a bare name,
 * "example.org"). `out_id` (may be NULL) gets the SPIFFE ID.
 */
ly_status ly_x509svid_verify(const uint8_t *chain_der, size_t chain_len, X509_STORE *store,
    const char *trust_domain, time_t now, struct ly_spiffe_id *out_id, struct ly_error *err) LY_MUST_CHECK;

/*
 * ly_x509svid_verify(), and when `expect_key` is not NULL, also checks the
 * leaf certifies that key (its public half): what a holder of the private
 * key checks before serving the SVID with it. `info` (may be NULL) gets
 * the ID and validity times.
 */
ly_status ly_x509svid_verify_ex(const uint8_t *chain_der, size_t chain_len, X509_STORE *store,
    const char *trust_domain, time_t now, const EVP_PKEY *expect_key, struct ly_x509svid_info *info,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * The same on parsed certificates: `leaf`, and `intermediates` (may be
 * NULL or empty) in presentation order. Borrowed, not modified.
 */
ly_status ly_x509svid_verify_x509(X509 *leaf, STACK_OF(X509) *intermediates, X509_STORE *store,
    const char *trust_domain, time_t now, const EVP_PKEY *expect_key, struct ly_x509svid_info *info,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * RFC 5280 path validation of `leaf` (with `untrusted`, may be NULL)
 * against `store` at `now`, with the policy every chain check here shares:
 * at most LY_VERIFY_DEPTH_MAX certificates from leaf to anchor, security
 * level 2 (no SHA-1 signature, no RSA under 2048 bits), plus `flags`
 * (X509_V_FLAG_*: X509_STRICT for SVIDs, PARTIAL_CHAIN where every
 * configured CA is an anchor). A path that does not verify is
 * "chain: certificate N: <OpenSSL's reason>": LY_E_EXPIRED outside a
 * validity window, LY_E_LIMIT too long, else LY_E_UNTRUSTED. Only the
 * X.509 rules: the SPIFFE ones (ly_x509svid_check_*) are the caller's.
 * On success *ctx_out holds the context, for the verified path
 * (X509_STORE_CTX_get0_chain); the caller frees it (X509_STORE_CTX_free).
 */
ly_status ly_x509_verify_path(X509_STORE *store, X509 *leaf, STACK_OF(X509) *untrusted, time_t now,
    unsigned long flags, X509_STORE_CTX **ctx_out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Looks through a SAN's names: *found tells whether there is a URI; with
 * one it is parsed as a SPIFFE ID into `out`. More than one URI, or a URI
 * that is not a SPIFFE ID, is LY_E_INVALID (X509-SVID §2). `dns_count`
 * (may be NULL) gets the number of DNS names. Shared with csr.c.
 */
ly_status ly_san_spiffe_id(const GENERAL_NAMES *gens, bool *found, struct ly_spiffe_id *out, size_t *dns_count,
    struct ly_error *err) LY_MUST_CHECK;

/* Converts an ASN1_TIME to time_t (UTC). */
ly_status ly_asn1_time_to_time(const ASN1_TIME *t, time_t *out, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_X509SVID_H */
