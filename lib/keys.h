/*
 * keys.h: private and public keys: the key types Lanyard issues, key
 * generation, PKCS#8 DER and PEM import/export, and the policy on which
 * public keys are acceptable in a CSR or certificate.
 *
 * Key types (SPEC §7): EC P-256 (default), EC P-384, RSA-2048. Keys read
 * from outside may also be EC P-521 or RSA of 2048..LY_RSA_BITS_MAX bits;
 * everything else (RSA < 2048, other curves, explicit EC parameters,
 * RSA-PSS, Ed25519, DSA, ...) is refused with LY_E_UNSUPPORTED.
 *
 * Secrets: private key bytes only ever sit in buffers that are wiped
 * before they are freed. Every struct ly_buf filled with private key
 * material by this module (PKCS#8 DER, PEM) must be released with
 * ly_buf_free_secret(). Keys are decoded from caller memory without
 * copying it into growable buffers (d2i on const bytes, read-only BIOs).
 *
 * Ownership: an EVP_PKEY returned through `EVP_PKEY **out` belongs to the
 * caller, who frees it with EVP_PKEY_free() (which wipes OpenSSL's copy).
 * On failure *out is left NULL.
 *
 * Cost: EC keys are encoded to and decoded from PKCS#8 by hand (RFC 5208,
 * RFC 5915) and imported with EVP_PKEY_fromdata: OpenSSL 3.0's generic
 * encoder/decoder path costs ~90 us to export and ~550 us to import a
 * P-256 key; this one ~5 and ~40 us (measured here, -O2). The output is
 * byte for byte what OpenSSL writes. RSA keys take OpenSSL's path.
 *
 * Thread-safety: all functions may be called from any thread.
 * ly_key_generate() keeps one generation context per key type per thread
 * (reusing it is ~2x cheaper for EC: ~12 us vs ~25 us for P-256); the
 * contexts are freed when the thread exits.
 */
#ifndef LANYARD_KEYS_H
#define LANYARD_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "buf.h"
#include "error.h"

enum ly_key_type {
	LY_KEY_EC_P256 = 0, /* the default (SPEC §7) */
	LY_KEY_EC_P384,
	LY_KEY_RSA_2048,
};

#define LY_KEY_TYPE_DEFAULT LY_KEY_EC_P256

/* Parses "ec-p256", "ec-p384" or "rsa-2048" (exact, lower case). */
ly_status ly_key_type_parse(const char *name, enum ly_key_type *out, struct ly_error *err) LY_MUST_CHECK;
/* The name ly_key_type_parse() accepts, or "unknown". Constant string. */
const char *ly_key_type_name(enum ly_key_type type);

/*
 * Which of the three issued types `key` is. LY_E_UNSUPPORTED for any other
 * key (P-521, RSA-3072, ...), even one ly_key_check_acceptable() accepts.
 */
ly_status ly_key_type_of(const EVP_PKEY *key, enum ly_key_type *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * The key policy for anything we sign over or trust: EC on P-256, P-384 or
 * P-521 (named curve), or RSA with 2048..LY_RSA_BITS_MAX bits. Anything
 * else is "weak" or unknown: LY_E_UNSUPPORTED with a message naming the
 * key ("RSA key of 1024 bits: at least 2048 required"). Works on public
 * and private keys alike.
 */
ly_status ly_key_check_acceptable(const EVP_PKEY *key, struct ly_error *err) LY_MUST_CHECK;

/* Generates a fresh key of `type`. *out: caller frees with EVP_PKEY_free. */
ly_status ly_key_generate(enum ly_key_type type, EVP_PKEY **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Encodes the private key as unencrypted PKCS#8 DER (PrivateKeyInfo, what
 * the Workload API's x509_svid_key carries). `out` must be empty; on
 * success it owns the bytes: free with ly_buf_free_secret().
 */
ly_status ly_key_to_pkcs8_der(const EVP_PKEY *key, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Decodes unencrypted PKCS#8 DER. Refuses more than LY_KEY_DER_MAX bytes
 * (LY_E_LIMIT), anything but exactly one PrivateKeyInfo (trailing bytes
 * included: LY_E_INVALID), and keys ly_key_check_acceptable() refuses.
 */
ly_status ly_key_from_pkcs8_der(const uint8_t *der, size_t len, EVP_PKEY **out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * Encodes the private key as a PEM "PRIVATE KEY" block (PKCS#8), built
 * in one exact-size allocation so no unwiped copy is left behind. `out`
 * must be empty; it receives the text, NUL-terminated (len excludes the
 * NUL). Free with ly_buf_free_secret().
 */
ly_status ly_key_to_pem(const EVP_PKEY *key, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Decodes a PEM private key: exactly one "PRIVATE KEY" (PKCS#8),
 * "EC PRIVATE KEY" (SEC 1) or "RSA PRIVATE KEY" (PKCS#1) block; an
 * "EC PARAMETERS" block (openssl ecparam -genkey) and text outside blocks
 * are skipped. Refused: encrypted keys, PEM headers, any other block, a
 * second key, more than LY_PEM_FILE_MAX bytes, and keys
 * ly_key_check_acceptable() refuses. `pem` need not be NUL-terminated.
 */
ly_status ly_key_from_pem(const char *pem, size_t len, EVP_PKEY **out, struct ly_error *err) LY_MUST_CHECK;

/* ly_key_from_pem() on the contents of file `path` (wiped after reading). */
ly_status ly_key_from_pem_file(const char *path, EVP_PKEY **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Converts PEM (as ly_key_from_pem accepts it) to PKCS#8 DER, and back.
 * Outputs are secrets: free with ly_buf_free_secret().
 */
ly_status ly_key_pem_to_der(const char *pem, size_t len, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_key_der_to_pem(const uint8_t *der, size_t len, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * Sets `pub` (X509_get_X509_PUBKEY(cert) or X509_REQ_get_X509_PUBKEY(req))
 * to an EC key's public point directly, without OpenSSL 3.0's encoder
 * (X509_set_pubkey costs ~200 us, this ~5 us). Then sign the object as
 * usual; note X509_get0_pubkey() on it returns NULL until it is re-parsed.
 * (Building a P-256 CSR this way: ~35 us instead of ~340 us.)
 * LY_E_UNSUPPORTED for non-EC keys: use X509_set_pubkey for those.
 */
ly_status ly_key_set_x509_pubkey(X509_PUBKEY *pub, const EVP_PKEY *key, struct ly_error *err) LY_MUST_CHECK;

/*
 * True when `a` and `b` are the same public key (e.g. a certificate's key
 * and the private key it was issued for).
 */
bool ly_key_public_equal(const EVP_PKEY *a, const EVP_PKEY *b);

#endif /* LANYARD_KEYS_H */
