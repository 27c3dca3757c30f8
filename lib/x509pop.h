/*
 * x509pop.h: the cryptography of x509pop node attestation (SPEC §6), the
 * part both ends share: the server's challenge nonce, the agent's proof
 * that it holds the private key of the certificate it presented, and the
 * server's check of that proof. Chain validation and selectors are the
 * server's (server/attest.h); this module only signs and verifies.
 *
 * The proof (our protocol, in the spirit of SPIRE's x509pop plugin):
 *   1. the agent sends its certificate chain (DER, leaf first);
 *   2. the server answers with LY_X509POP_NONCE_LEN random bytes;
 *   3. the agent signs  "lanyard x509pop v1" || nonce  (the 18 ASCII bytes
 *      of LY_X509POP_CONTEXT, no terminator, then the nonce) with the
 *      leaf's key, SHA-256:
 *        EC key:  ECDSA, DER-encoded Ecdsa-Sig-Value (RFC 3279 §2.2.3);
 *        RSA key: RSASSA-PSS (RFC 8017 §8.1), MGF1 with SHA-256, salt
 *                 length 32 (the digest length);
 *   4. the server verifies it with the leaf's public key.
 * The context string separates this signature from every other use of the
 * same key (a TLS handshake, a CSR): a signature made here proves nothing
 * anywhere else, and no other signature passes here. The nonce is fresh
 * per attempt, so a proof cannot be replayed.
 *
 * Keys: EC (P-256, P-384, P-521) or RSA of 2048..LY_RSA_BITS_MAX bits, as
 * ly_key_check_acceptable() says; anything else is LY_E_UNSUPPORTED.
 *
 * Ownership: a signature is written into a caller-owned struct ly_buf
 * (empty on entry, left empty on failure; free with ly_buf_free: it is not
 * secret). Keys and certificates are borrowed, never kept.
 * Thread-safety: every function may be called from any thread.
 */
#ifndef LANYARD_X509POP_H
#define LANYARD_X509POP_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "buf.h"
#include "error.h"

/* The challenge length, fixed by the protocol. */
#define LY_X509POP_NONCE_LEN 32
/* The domain-separation prefix of the signed message. */
#define LY_X509POP_CONTEXT "lanyard x509pop v1"

/* Fills `out` with LY_X509POP_NONCE_LEN bytes from the CSPRNG (RAND_bytes). */
ly_status ly_x509pop_nonce_new(uint8_t out[LY_X509POP_NONCE_LEN], struct ly_error *err) LY_MUST_CHECK;

/*
 * Signs the challenge `nonce` (exactly LY_X509POP_NONCE_LEN bytes, else
 * LY_E_INVALID) with the private `key` as step 3 above; the signature goes
 * to `sig` (must be empty).
 */
ly_status ly_x509pop_sign(EVP_PKEY *key, const uint8_t *nonce, size_t nonce_len, struct ly_buf *sig,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Checks that `sig` (1..LY_X509POP_SIG_MAX bytes, else LY_E_LIMIT) is the
 * proof over `nonce` by the key `leaf` certifies. Only the signature is
 * checked here: the caller verifies the certificate itself. A signature
 * that does not verify is LY_E_UNTRUSTED; a key of the wrong kind
 * LY_E_UNSUPPORTED.
 */
ly_status ly_x509pop_verify(X509 *leaf, const uint8_t *nonce, size_t nonce_len, const uint8_t *sig,
    size_t sig_len, struct ly_error *err) LY_MUST_CHECK;

/* The same with the public key itself. */
ly_status ly_x509pop_verify_key(EVP_PKEY *pub, const uint8_t *nonce, size_t nonce_len, const uint8_t *sig,
    size_t sig_len, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_X509POP_H */
