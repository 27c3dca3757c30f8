/*
 * csr.h: PKCS#10 certificate signing requests carrying a SPIFFE ID.
 *
 * An agent (or a downstream server) proves possession of a key by sending
 * a CSR signed with it; the URI SAN carries the SPIFFE ID it asks for
 * (X509-SVID §2: exactly one URI SAN). ly_csr_build() makes one;
 * ly_csr_parse() is what the server runs on one from the network: it
 * caps the size, refuses trailing bytes, refuses weak keys
 * (ly_key_check_acceptable) and weak signature digests (only SHA-256,
 * SHA-384, SHA-512 with ECDSA or RSA PKCS#1 v1.5), verifies the
 * self-signature, and extracts the single URI SAN as a validated SPIFFE ID.
 * It does not decide whether the requester is entitled to that ID, nor
 * whether an ID without a path is acceptable (a downstream CA asks for
 * the trust domain ID): that is the caller's policy.
 *
 * Ownership: struct ly_csr is a caller-owned value: ly_csr_parse() fills
 * it, ly_csr_cleanup() releases what it holds (safe to call twice and on
 * a zeroed or failed-to-parse struct). ly_csr_build() output: caller
 * frees with ly_buf_free (a CSR holds no secret).
 */
#ifndef LANYARD_CSR_H
#define LANYARD_CSR_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "buf.h"
#include "error.h"
#include "spiffeid.h"

struct ly_csr {
	/* The requester's public key (owned; freed by ly_csr_cleanup). */
	EVP_PKEY *key;
	/*
	 * The key's SubjectPublicKeyInfo DER as it was in the CSR (owned), for
	 * signers that set a certificate's key from bytes (the fast path, see
	 * NOTES-openssl.md) instead of through an EVP_PKEY.
	 */
	struct ly_buf spki;
	/* The one URI SAN, validated as a SPIFFE ID (path may be empty). */
	struct ly_spiffe_id id;
	/* Number of DNS SANs in the request (their values are not kept). */
	size_t dns_count;
};

/*
 * Builds a CSR for `key` (private: it signs the request) with an empty
 * subject and one critical SAN extension holding the URI `id` and then
 * `n_dns` DNS names (each 1..LY_DNS_NAME_MAX bytes of [A-Za-z0-9.-_*],
 * at most LY_DNS_NAMES_MAX). Signed with SHA-256, or SHA-384 for P-384
 * and SHA-512 for P-521 keys. `out` must be empty; DER on success.
 */
ly_status ly_csr_build(EVP_PKEY *key, const struct ly_spiffe_id *id, const char *const *dns, size_t n_dns,
    struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Parses and checks a DER CSR (at most LY_CSR_DER_MAX bytes, nothing
 * after it). Refused: malformed or trailing bytes (LY_E_INVALID), too big
 * (LY_E_LIMIT), weak or unknown key or digest (LY_E_UNSUPPORTED), a bad
 * self-signature (LY_E_UNTRUSTED), no SAN, no URI SAN, more than one URI
 * SAN, a URI SAN that is not a SPIFFE ID, more than LY_DNS_NAMES_MAX DNS
 * SANs (LY_E_INVALID/LY_E_LIMIT). On failure *out is left zeroed.
 */
ly_status ly_csr_parse(const uint8_t *der, size_t len, struct ly_csr *out, struct ly_error *err) LY_MUST_CHECK;

/* Releases what ly_csr_parse() put in `csr` and zeroes it. */
void ly_csr_cleanup(struct ly_csr *csr);

#endif /* LANYARD_CSR_H */
