/*
 * ca_csr.c: the CA's PKCS#10 parser (RFC 2986), strict DER, and the check
 * of the CSR's self-signature (ca_internal.h; rules in ca.h).
 *
 * Why not lib/csr.c's ly_csr_parse: it goes through d2i_X509_REQ and
 * X509_REQ_get0_pubkey, whose OpenSSL 3.0 decoder costs ~200 us a CSR,
 * more than the signature check itself. Here the structure is walked
 * once, by hand, with every length checked (ca_dr_next), and the key is
 * imported as a raw point into a duplicate of a per-curve template. The
 * rules are those of ly_csr_parse (tests/fuzz/fuzz_ca_csr.c checks that
 * this parser never accepts a CSR ly_csr_parse refuses), plus: an EC
 * point must be uncompressed (Go's x509 parser refuses compressed points,
 * and the point is copied into the leaf), and the SAN's URI must be
 * exactly the ID the caller expects, compared by the caller.
 */
#include "server/ca_internal.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "lib/caps.h"
#include "lib/keys.h"

static const uint8_t OID_EC_PUBLIC_KEY[] = { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01 };
static const uint8_t OID_RSA_ENCRYPTION[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01 };
static const uint8_t OID_P256[] = { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t OID_P384[] = { 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t OID_P521[] = { 0x2b, 0x81, 0x04, 0x00, 0x23 };
/* ecdsa-with-SHA256/384/512 (RFC 5758 §3.2): the last octet is 2, 3 or 4. */
static const uint8_t OID_ECDSA_SHA2[] = { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03 };
/* sha256/384/512WithRSAEncryption (RFC 4055 §5): the last octet is 11, 12 or 13. */
static const uint8_t OID_RSA_SHA2[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01 };
static const uint8_t OID_EXTENSION_REQUEST[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e };
static const uint8_t OID_SAN[] = { 0x55, 0x1d, 0x11 };


static ly_status
malformed(struct ly_error *err, const char *what)
{
	return ly_error_set(err, LY_E_INVALID, "CSR: %s malformed (strict DER)", what);
}

/* Name ::= SEQUENCE OF SET OF AttributeTypeAndValue { type OID, value ANY } */
static bool
name_ok(struct ca_dr name)
{
	while (name.n > 0) {
		struct ca_dr rdn, atv, v;
		uint8_t tag;
		if (!ca_dr_expect(&name, 0x31, &rdn, NULL) || rdn.n == 0)
			return false;
		while (rdn.n > 0) {
			if (!ca_dr_expect(&rdn, 0x30, &atv, NULL) || !ca_dr_expect(&atv, 0x06, &v, NULL) || v.n == 0 ||
			    !ca_dr_next(&atv, &tag, &v, NULL) || atv.n != 0)
				return false;
		}
	}
	return true;
}

/* A run of whole TLVs, nothing else. */
static bool
tlvs_ok(struct ca_dr in)
{
	while (in.n > 0) {
		struct ca_dr v;
		uint8_t tag;
		if (!ca_dr_next(&in, &tag, &v, NULL))
			return false;
	}
	return true;
}

static ly_status
parse_spki(struct ca_dr *cri, struct ca_csr *out, struct ly_error *err)
{
	struct ca_dr spki, alg, oid, param, bits;
	uint8_t tag;

	if (!ca_dr_expect(cri, 0x30, &spki, &out->spki) || !ca_dr_expect(&spki, 0x30, &alg, NULL) ||
	    !ca_dr_expect(&alg, 0x06, &oid, NULL) || !ca_dr_expect(&spki, 0x03, &bits, NULL) || spki.n != 0 ||
	    bits.n < 1 || bits.p[0] != 0)
		return malformed(err, "public key");

	if (ca_dr_equal(&oid, OID_EC_PUBLIC_KEY, sizeof(OID_EC_PUBLIC_KEY))) {
		if (!ca_dr_next(&alg, &tag, &param, NULL) || alg.n != 0)
			return malformed(err, "EC key parameters");
		if (tag != 0x06)
			return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: EC key without a named curve refused");
		size_t field;
		if (ca_dr_equal(&param, OID_P256, sizeof(OID_P256))) {
			out->key_alg = CA_KEY_P256;
			field = 32;
		} else if (ca_dr_equal(&param, OID_P384, sizeof(OID_P384))) {
			out->key_alg = CA_KEY_P384;
			field = 48;
		} else if (ca_dr_equal(&param, OID_P521, sizeof(OID_P521))) {
			out->key_alg = CA_KEY_P521;
			field = 66;
		} else {
			return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: EC curve not accepted (P-256, P-384 or P-521)");
		}
		const uint8_t *pt = bits.p + 1;
		size_t ptlen = bits.n - 1;
		if (ptlen > 0 && (pt[0] == 0x02 || pt[0] == 0x03))
			return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: compressed EC point refused");
		if (ptlen != 1 + 2 * field || pt[0] != 0x04)
			return ly_error_set(err, LY_E_INVALID, "CSR: EC point of %zu bytes, expected %zu uncompressed",
			    ptlen, 1 + 2 * field);
		out->point.p = pt;
		out->point.n = ptlen;
		return LY_OK;
	}
	if (ca_dr_equal(&oid, OID_RSA_ENCRYPTION, sizeof(OID_RSA_ENCRYPTION))) {
		/* RFC 3279 §2.3.1: the parameters MUST be NULL. */
		if (!ca_dr_expect(&alg, 0x05, &param, NULL) || param.n != 0 || alg.n != 0)
			return malformed(err, "RSA key parameters");
		out->key_alg = CA_KEY_RSA;
		return LY_OK;
	}
	return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: key algorithm not accepted (EC P-256/384/521 or RSA)");
}

/* GeneralNames (RFC 5280 §4.2.1.6): counts URIs and DNS names, keeps the first URI. */
static ly_status
parse_san(struct ca_dr val, struct ca_csr *out, struct ly_error *err)
{
	/* Per [n] tag number: whether the choice is constructed (explicit, or a SEQUENCE type). */
	static const bool constructed[9] = { true, false, false, true, true, true, false, false, false };
	struct ca_dr names, v;
	size_t uris = 0, dns = 0;
	uint8_t tag;

	if (!ca_dr_expect(&val, 0x30, &names, NULL) || val.n != 0)
		return malformed(err, "subject alternative name");
	if (names.n == 0)
		return ly_error_set(err, LY_E_INVALID, "CSR: empty subject alternative name");
	while (names.n > 0) {
		if (!ca_dr_next(&names, &tag, &v, NULL))
			return malformed(err, "subject alternative name");
		unsigned num = tag & 0x1f;
		if ((tag & 0xc0) != 0x80 || num > 8 || ((tag & 0x20) != 0) != constructed[num])
			return malformed(err, "subject alternative name entry");
		if (num == 6) {
			if (uris++ == 0) {
				out->uri.p = v.p;
				out->uri.n = v.n;
			}
		} else if (num == 2) {
			dns++;
		}
	}
	if (uris == 0)
		return ly_error_set(err, LY_E_INVALID, "CSR: no URI SAN: the SPIFFE ID is required");
	if (uris > 1)
		return ly_error_set(err, LY_E_INVALID, "CSR: %zu URI SANs: exactly one is allowed (X509-SVID §2)", uris);
	if (dns > LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "CSR: %zu DNS SANs, at most %d", dns, LY_DNS_NAMES_MAX);
	out->dns_count = dns;
	return LY_OK;
}

/* Extensions ::= SEQUENCE OF Extension { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
static ly_status
parse_extensions(struct ca_dr exts, struct ca_csr *out, struct ly_error *err)
{
	struct ca_dr seen[LY_CSR_EXTS_MAX];
	size_t nseen = 0;
	bool san = false;

	while (exts.n > 0) {
		struct ca_dr ext, oid, b, val;
		if (!ca_dr_expect(&exts, 0x30, &ext, NULL) || !ca_dr_expect(&ext, 0x06, &oid, NULL) || oid.n == 0)
			return malformed(err, "extension");
		if (ca_dr_expect(&ext, 0x01, &b, NULL) && (b.n != 1 || (b.p[0] != 0x00 && b.p[0] != 0xff)))
			return malformed(err, "extension criticality");
		if (!ca_dr_expect(&ext, 0x04, &val, NULL) || ext.n != 0)
			return malformed(err, "extension");
		if (nseen == LY_CSR_EXTS_MAX)
			return ly_error_set(err, LY_E_LIMIT, "CSR: more than %d extensions", LY_CSR_EXTS_MAX);
		for (size_t i = 0; i < nseen; i++) {
			if (ca_dr_equal(&seen[i], oid.p, oid.n))
				return ly_error_set(err, LY_E_INVALID, "CSR: an extension appears twice (RFC 5280 §4.2)");
		}
		seen[nseen++] = oid;
		if (ca_dr_equal(&oid, OID_SAN, sizeof(OID_SAN))) {
			LY_TRY(parse_san(val, out, err));
			san = true;
		}
	}
	if (!san)
		return ly_error_set(err, LY_E_INVALID, "CSR: no subject alternative name: a URI SAN with the SPIFFE ID "
		    "is required");
	return LY_OK;
}

/* attributes [0] IMPLICIT SET OF Attribute { type OID, values SET OF ANY } */
static ly_status
parse_attributes(struct ca_dr attrs, struct ca_csr *out, struct ly_error *err)
{
	bool found = false;

	while (attrs.n > 0) {
		struct ca_dr attr, oid, vals, exts;
		if (!ca_dr_expect(&attrs, 0x30, &attr, NULL) || !ca_dr_expect(&attr, 0x06, &oid, NULL) || oid.n == 0 ||
		    !ca_dr_expect(&attr, 0x31, &vals, NULL) || attr.n != 0)
			return malformed(err, "attribute");
		if (!ca_dr_equal(&oid, OID_EXTENSION_REQUEST, sizeof(OID_EXTENSION_REQUEST))) {
			if (!tlvs_ok(vals))
				return malformed(err, "attribute");
			continue;
		}
		if (found)
			return ly_error_set(err, LY_E_INVALID, "CSR: more than one extension request");
		found = true;
		/* PKCS#9 §5.4.2: one value, the Extensions. */
		if (!ca_dr_expect(&vals, 0x30, &exts, NULL) || vals.n != 0)
			return malformed(err, "extension request");
		LY_TRY(parse_extensions(exts, out, err));
	}
	if (!found)
		return ly_error_set(err, LY_E_INVALID, "CSR: no extension request: a URI SAN with the SPIFFE ID is "
		    "required");
	return LY_OK;
}

static ly_status
parse_sig_alg(const struct ca_crypto *c, struct ca_dr alg, struct ca_csr *out, struct ly_error *err)
{
	struct ca_dr oid, param;
	bool ec = false;
	uint8_t last = 0;

	if (!ca_dr_expect(&alg, 0x06, &oid, NULL))
		return malformed(err, "signature algorithm");
	if (oid.n == sizeof(OID_ECDSA_SHA2) + 1 && memcmp(oid.p, OID_ECDSA_SHA2, sizeof(OID_ECDSA_SHA2)) == 0) {
		ec = true;
		last = oid.p[oid.n - 1];
		/* RFC 5758 §3.2: the parameters MUST be absent. */
		if (alg.n != 0)
			return malformed(err, "ECDSA signature algorithm parameters");
		out->md = last == 2 ? c->sha256 : last == 3 ? c->sha384 : last == 4 ? c->sha512 : NULL;
	} else if (oid.n == sizeof(OID_RSA_SHA2) + 1 && memcmp(oid.p, OID_RSA_SHA2, sizeof(OID_RSA_SHA2)) == 0) {
		last = oid.p[oid.n - 1];
		/* RFC 4055 §5: NULL, and absent must be accepted too. */
		if (alg.n != 0 && (!ca_dr_expect(&alg, 0x05, &param, NULL) || param.n != 0 || alg.n != 0))
			return malformed(err, "RSA signature algorithm parameters");
		out->md = last == 11 ? c->sha256 : last == 12 ? c->sha384 : last == 13 ? c->sha512 : NULL;
	}
	if (out->md == NULL)
		return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: signature algorithm not accepted (ECDSA or RSA PKCS#1 "
		    "v1.5 with SHA-256, SHA-384 or SHA-512)");
	if (ec != (out->key_alg != CA_KEY_RSA))
		return ly_error_set(err, LY_E_UNSUPPORTED, "CSR: signature algorithm does not match the key type");
	return LY_OK;
}

ly_status
ca_csr_parse(const struct ca_crypto *c, const uint8_t *der, size_t len, struct ca_csr *out, struct ly_error *err)
{
	static const uint8_t v1[] = { 0x00 };
	struct ca_dr in = { der, len }, csr, cri, v;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	if (der == NULL || len == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: empty");
	} else if (len > LY_CSR_DER_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "CSR: %zu bytes, over the cap of %d", len, LY_CSR_DER_MAX);
	} else if (!ca_dr_expect(&in, 0x30, &csr, NULL)) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: not a DER PKCS#10 request");
	} else if (in.n != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: %zu trailing bytes", in.n);
	} else if (!ca_dr_expect(&csr, 0x30, &cri, &out->tbs)) {
		rc = malformed(err, "certificationRequestInfo");
	} else if (!ca_dr_expect(&cri, 0x02, &v, NULL) || !ca_dr_equal(&v, v1, 1)) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: only version 1 (0) exists");
	} else if (!ca_dr_expect(&cri, 0x30, &v, NULL) || !name_ok(v)) {
		rc = malformed(err, "subject");
	} else {
		rc = LY_OK;
	}
	if (rc != LY_OK)
		goto out;
	rc = parse_spki(&cri, out, err);
	if (rc != LY_OK)
		goto out;
	if (!ca_dr_expect(&cri, 0xa0, &v, NULL)) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: no attributes: a URI SAN with the SPIFFE ID is required");
		goto out;
	}
	if (cri.n != 0) {
		rc = malformed(err, "certificationRequestInfo");
		goto out;
	}
	rc = parse_attributes(v, out, err);
	if (rc != LY_OK)
		goto out;
	if (!ca_dr_expect(&csr, 0x30, &v, NULL)) {
		rc = malformed(err, "signature algorithm");
		goto out;
	}
	rc = parse_sig_alg(c, v, out, err);
	if (rc != LY_OK)
		goto out;
	if (!ca_dr_expect(&csr, 0x03, &v, NULL) || v.n < 2 || v.p[0] != 0 || csr.n != 0) {
		rc = malformed(err, "signature");
		goto out;
	}
	out->sig.p = v.p + 1;
	out->sig.n = v.n - 1;
out:
	if (rc != LY_OK)
		memset(out, 0, sizeof(*out));
	return rc;
}

ly_status
ca_csr_verify(const struct ca_crypto *c, EVP_MD_CTX *mdctx, const struct ca_csr *csr, EVP_PKEY **key_out,
    struct ly_error *err)
{
	EVP_PKEY *key = NULL;
	EVP_PKEY_CTX *vctx = NULL;
	uint8_t digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	ly_status rc;

	if (key_out != NULL)
		*key_out = NULL;
	if (csr->key_alg == CA_KEY_RSA) {
		const unsigned char *p = csr->spki.p;
		key = d2i_PUBKEY(NULL, &p, (long)csr->spki.n);
		if (key == NULL || p != csr->spki.p + csr->spki.n) {
			rc = ly_error_openssl(err, LY_E_INVALID, "CSR: RSA public key malformed");
			goto out;
		}
		rc = ly_key_check_acceptable(key, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "CSR");
			goto out;
		}
	} else {
		key = EVP_PKEY_dup(c->ec_tmpl[csr->key_alg]);
		if (key == NULL) {
			rc = ly_error_openssl(err, LY_E_NOMEM, "CSR: importing the key");
			goto out;
		}
		if (EVP_PKEY_set1_encoded_public_key(key, csr->point.p, csr->point.n) != 1) {
			rc = ly_error_openssl(err, LY_E_INVALID, "CSR: EC public key is not a point on its curve");
			goto out;
		}
	}
	if (EVP_DigestInit_ex(mdctx, csr->md, NULL) != 1 || EVP_DigestUpdate(mdctx, csr->tbs.p, csr->tbs.n) != 1 ||
	    EVP_DigestFinal_ex(mdctx, digest, &dlen) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: hashing");
		goto out;
	}
	vctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	if (vctx == NULL || EVP_PKEY_verify_init(vctx) <= 0 || EVP_PKEY_CTX_set_signature_md(vctx, csr->md) <= 0 ||
	    (csr->key_alg == CA_KEY_RSA && EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PADDING) <= 0)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CSR: preparing the signature check");
		goto out;
	}
	if (EVP_PKEY_verify(vctx, csr->sig.p, csr->sig.n, digest, dlen) != 1) {
		rc = ly_error_openssl(err, LY_E_UNTRUSTED, "CSR: self-signature does not verify");
		goto out;
	}
	if (key_out != NULL) {
		*key_out = key;
		key = NULL;
	}
	rc = LY_OK;
out:
	EVP_PKEY_CTX_free(vctx);
	EVP_PKEY_free(key);
	return rc;
}
