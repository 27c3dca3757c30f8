/* csr.c: PKCS#10 requests with a SPIFFE ID, see csr.h. */
#include "csr.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "caps.h"
#include "keys.h"
#include "x509svid.h"

/* The digest to sign with for `key`: as strong as the curve. */
static const EVP_MD *
csr_digest(const EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "EC")) {
		int bits = EVP_PKEY_get_bits(key);
		if (bits > 384)
			return EVP_sha512();
		if (bits > 256)
			return EVP_sha384();
	}
	return EVP_sha256();
}

static bool
dns_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	    c == '-' || c == '_' || c == '*';
}

/* Appends a URI or DNS name to `gens`, built as an object (never via a config string). */
static ly_status
add_name(GENERAL_NAMES *gens, int type, const char *value, size_t len, struct ly_error *err)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	if (gn == NULL || s == NULL || !ASN1_STRING_set(s, value, (int)len)) {
		GENERAL_NAME_free(gn);
		ASN1_IA5STRING_free(s);
		return ly_error_openssl(err, LY_E_NOMEM, "CSR: building a SAN");
	}
	GENERAL_NAME_set0_value(gn, type, s);
	if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
		GENERAL_NAME_free(gn);
		return ly_error_openssl(err, LY_E_NOMEM, "CSR: building a SAN");
	}
	return LY_OK;
}

ly_status
ly_csr_build(EVP_PKEY *key, const struct ly_spiffe_id *id, const char *const *dns, size_t n_dns,
    struct ly_buf *out, struct ly_error *err)
{
	X509_REQ *req = NULL;
	GENERAL_NAMES *gens = NULL;
	X509_EXTENSION *ext = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	uint8_t *der = NULL;
	ly_status rc;

	if (key == NULL || id == NULL || id->id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "CSR: a key and a SPIFFE ID are required");
	LY_TRY(ly_key_check_acceptable(key, err));
	if (n_dns > LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "CSR: %zu DNS names, at most %d", n_dns, LY_DNS_NAMES_MAX);
	for (size_t i = 0; i < n_dns; i++) {
		size_t l = dns[i] != NULL ? strnlen(dns[i], LY_DNS_NAME_MAX + 1) : 0;
		if (l == 0 || l > LY_DNS_NAME_MAX)
			return ly_error_set(err, LY_E_INVALID, "CSR: DNS name %zu: length must be 1..%d", i,
			    LY_DNS_NAME_MAX);
		for (size_t j = 0; j < l; j++) {
			if (!dns_char_ok((unsigned char)dns[i][j]))
				return ly_error_set(err, LY_E_INVALID, "CSR: DNS name %zu: bad character at offset %zu",
				    i, j);
		}
	}

	req = X509_REQ_new();
	gens = sk_GENERAL_NAME_new_null();
	exts = sk_X509_EXTENSION_new_null();
	if (req == NULL || gens == NULL || exts == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "CSR: allocating");
		goto out;
	}
	if (!X509_REQ_set_version(req, X509_REQ_VERSION_1)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: setting the version");
		goto out;
	}
	/* EC: the raw point, skipping OpenSSL 3.0's encoder (~200 us); RSA: the usual way. */
	rc = ly_key_set_x509_pubkey(X509_REQ_get_X509_PUBKEY(req), key, NULL);
	if (rc == LY_E_UNSUPPORTED && X509_REQ_set_pubkey(req, key))
		rc = LY_OK;
	if (rc != LY_OK) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: setting the public key");
		goto out;
	}
	rc = add_name(gens, GEN_URI, id->id, strlen(id->id), err);
	for (size_t i = 0; rc == LY_OK && i < n_dns; i++)
		rc = add_name(gens, GEN_DNS, dns[i], strlen(dns[i]), err);
	if (rc != LY_OK)
		goto out;
	/* The subject is empty, so the SAN is critical (RFC 5280 4.1.2.6, X509-SVID §3.1). */
	ext = X509V3_EXT_i2d(NID_subject_alt_name, 1, gens);
	if (ext == NULL || !sk_X509_EXTENSION_push(exts, ext)) {
		X509_EXTENSION_free(ext);
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: encoding the SAN extension");
		goto out;
	}
	if (!X509_REQ_add_extensions(req, exts)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: adding the extension request");
		goto out;
	}
	if (X509_REQ_sign(req, key, csr_digest(key)) <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: signing");
		goto out;
	}
	int len = i2d_X509_REQ(req, &der);
	if (len <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: DER encoding");
		goto out;
	}
	rc = ly_buf_set(out, der, (size_t)len, err);
out:
	OPENSSL_free(der);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	X509_REQ_free(req);
	return rc;
}

/* Only SHA-2 with ECDSA or RSA PKCS#1 v1.5: nothing SHA-1, MD5 or PSS. */
static ly_status
check_signature_alg(const X509_REQ *req, const EVP_PKEY *key, struct ly_error *err)
{
	int md = NID_undef, pk = NID_undef;
	int sig = X509_REQ_get_signature_nid(req);

	if (!OBJ_find_sigid_algs(sig, &md, &pk))
		return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: unknown signature algorithm");
	if (md != NID_sha256 && md != NID_sha384 && md != NID_sha512)
		return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: signature digest %s: SHA-256, SHA-384 or SHA-512 "
		    "required", md != NID_undef ? OBJ_nid2sn(md) : "undefined");
	if ((pk == NID_X9_62_id_ecPublicKey && !EVP_PKEY_is_a(key, "EC")) ||
	    (pk == NID_rsaEncryption && !EVP_PKEY_is_a(key, "RSA")) ||
	    (pk != NID_X9_62_id_ecPublicKey && pk != NID_rsaEncryption))
		return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: signature algorithm does not match the key type");
	return LY_OK;
}

ly_status
ly_csr_parse(const uint8_t *der, size_t len, struct ly_csr *out, struct ly_error *err)
{
	X509_REQ *req = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	uint8_t *spki = NULL;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	if (der == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "CSR: empty");
	if (len > LY_CSR_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "CSR: %zu bytes, over the cap of %d", len, LY_CSR_DER_MAX);

	const unsigned char *p = der;
	req = d2i_X509_REQ(NULL, &p, (long)len);
	if (req == NULL)
		return ly_error_openssl(err, LY_E_INVALID, "CSR: not a valid PKCS#10 request");
	if ((size_t)(p - der) != len) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: %zu trailing bytes", len - (size_t)(p - der));
		goto out;
	}
	if (X509_REQ_get_version(req) != X509_REQ_VERSION_1) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: version %ld, only version 1 (0) exists",
		    X509_REQ_get_version(req));
		goto out;
	}
	EVP_PKEY *key = X509_REQ_get0_pubkey(req);
	if (key == NULL) {
		rc = ly_error_openssl(err, LY_E_UNSUPPORTED, "CSR: public key cannot be decoded");
		goto out;
	}
	/* Cheap checks before the signature: a huge key makes verifying slow. */
	rc = ly_key_check_acceptable(key, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "CSR");
		goto out;
	}
	rc = check_signature_alg(req, key, err);
	if (rc != LY_OK)
		goto out;
	if (X509_REQ_verify(req, key) != 1) {
		rc = ly_error_openssl(err, LY_E_UNTRUSTED, "CSR: self-signature does not verify");
		goto out;
	}

	exts = X509_REQ_get_extensions(req);
	int crit = -1;
	if (exts != NULL)
		gens = X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL);
	if (gens == NULL) {
		rc = crit == -2 ? ly_error_set(err, LY_E_INVALID, "CSR: more than one SAN extension")
		                : ly_error_set(err, LY_E_INVALID, "CSR: no subject alternative name: a URI SAN with "
		                               "the SPIFFE ID is required");
		goto out;
	}
	bool found = false;
	size_t dns = 0;
	rc = ly_san_spiffe_id(gens, &found, &out->id, &dns, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "CSR");
		goto out;
	}
	if (!found) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: no URI SAN: the SPIFFE ID is required");
		goto out;
	}
	if (dns > LY_DNS_NAMES_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "CSR: %zu DNS SANs, at most %d", dns, LY_DNS_NAMES_MAX);
		goto out;
	}

	int slen = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &spki);
	if (slen <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: encoding the public key");
		goto out;
	}
	rc = ly_buf_set(&out->spki, spki, (size_t)slen, err);
	if (rc != LY_OK)
		goto out;
	if (!EVP_PKEY_up_ref(key)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: keeping the public key");
		goto out;
	}
	out->key = key;
	out->dns_count = dns;
	rc = LY_OK;
out:
	if (rc != LY_OK)
		ly_csr_cleanup(out);
	OPENSSL_free(spki);
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	return rc;
}

void
ly_csr_cleanup(struct ly_csr *csr)
{
	if (csr == NULL)
		return;
	EVP_PKEY_free(csr->key);
	ly_buf_free(&csr->spki);
	memset(csr, 0, sizeof(*csr));
}
