/* x509svid.c: X.509-SVID rules and chain verification, see x509svid.h. */
#include "x509svid.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include "caps.h"
#include "der.h"
#include "keys.h"

ly_status
ly_san_spiffe_id(const GENERAL_NAMES *gens, bool *found, struct ly_spiffe_id *out, size_t *dns_count,
    struct ly_error *err)
{
	const ASN1_IA5STRING *uri = NULL;
	size_t uris = 0, dns = 0;
	int n = sk_GENERAL_NAME_num(gens);

	*found = false;
	for (int i = 0; i < n; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		int type = 0;
		const void *value = GENERAL_NAME_get0_value(gn, &type);
		if (type == GEN_URI) {
			if (uris == 0)
				uri = value;
			uris++;
		} else if (type == GEN_DNS) {
			dns++;
		}
	}
	if (dns_count != NULL)
		*dns_count = dns;
	if (uris == 0)
		return LY_OK;
	if (uris > 1)
		return ly_error_set(err, LY_E_INVALID, "%zu URI SANs: exactly one is allowed (X509-SVID §2)", uris);
	int len = ASN1_STRING_length(uri);
	ly_status rc = ly_spiffe_id_parse((const char *)ASN1_STRING_get0_data(uri), len > 0 ? (size_t)len : 0, out,
	    err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "URI SAN is not a valid SPIFFE ID");
	*found = true;
	return LY_OK;
}

/*
 * The certificate's URI SAN as a SPIFFE ID (*found false when none), and
 * whether the SAN extension is critical.
 */
static ly_status
cert_spiffe_id(X509 *x, bool *found, struct ly_spiffe_id *id, bool *san_critical, struct ly_error *err)
{
	int crit = -1;
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);

	*found = false;
	*san_critical = crit == 1;
	if (gens == NULL) {
		/* Unreachable after the EXFLAG_INVALID check; kept for direct callers. */
		if (crit == -2)
			return ly_error_set(err, LY_E_INVALID, "more than one SAN extension");
		if (crit >= 0)
			return ly_error_openssl(err, LY_E_INVALID, "malformed SAN extension");
		return LY_OK;
	}
	ly_status rc = ly_san_spiffe_id(gens, found, id, NULL, err);
	GENERAL_NAMES_free(gens);
	return rc;
}

static bool
ext_critical(X509 *x, int nid)
{
	int idx = X509_get_ext_by_NID(x, nid, -1);
	return idx >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, idx)) == 1;
}

/* Rules every certificate we accept meets, leaf or CA. */
static ly_status
check_common(X509 *x, uint32_t flags, struct ly_error *err)
{
	if ((flags & EXFLAG_INVALID) != 0)
		return ly_error_set(err, LY_E_INVALID, "malformed or duplicated extension");
	if (X509_get_version(x) != X509_VERSION_3)
		return ly_error_set(err, LY_E_INVALID, "not an X.509 version 3 certificate");
	EVP_PKEY *key = X509_get0_pubkey(x);
	if (key == NULL)
		return ly_error_openssl(err, LY_E_UNSUPPORTED, "public key cannot be decoded");
	return ly_key_check_acceptable(key, err);
}

ly_status
ly_x509svid_check_leaf(X509 *leaf, struct ly_spiffe_id *out_id, struct ly_error *err)
{
	struct ly_spiffe_id id;
	bool found = false, san_critical = false;

	if (leaf == NULL)
		return ly_error_set(err, LY_E_INVALID, "no certificate");
	uint32_t flags = X509_get_extension_flags(leaf);
	LY_TRY(check_common(leaf, flags, err));
	LY_TRY(cert_spiffe_id(leaf, &found, &id, &san_critical, err));
	if (!found)
		return ly_error_set(err, LY_E_INVALID, "no URI SAN: an SVID has exactly one SPIFFE ID (X509-SVID §2)");
	if (ly_spiffe_id_is_trust_domain_id(&id))
		return ly_error_set(err, LY_E_INVALID, "SPIFFE ID %s has no path: a leaf's must have one "
		    "(X509-SVID §3.1)", id.id);
	if (X509_NAME_entry_count(X509_get_subject_name(leaf)) == 0 && !san_critical)
		return ly_error_set(err, LY_E_INVALID, "empty subject and a non-critical SAN (X509-SVID §3.1)");
	if ((flags & EXFLAG_CA) != 0)
		return ly_error_set(err, LY_E_INVALID, "basic constraints cA is true: a leaf is not a CA "
		    "(X509-SVID §4.1)");
	if ((flags & EXFLAG_KUSAGE) == 0)
		return ly_error_set(err, LY_E_INVALID, "no key usage extension (X509-SVID §4.3)");
	if (!ext_critical(leaf, NID_key_usage))
		return ly_error_set(err, LY_E_INVALID, "key usage not critical (X509-SVID §4.3)");
	uint32_t ku = X509_get_key_usage(leaf);
	if ((ku & KU_DIGITAL_SIGNATURE) == 0)
		return ly_error_set(err, LY_E_INVALID, "key usage lacks digitalSignature (X509-SVID §4.3)");
	if ((ku & KU_KEY_CERT_SIGN) != 0)
		return ly_error_set(err, LY_E_INVALID, "key usage has keyCertSign: not allowed on a leaf "
		    "(X509-SVID §4.3)");
	if ((ku & KU_CRL_SIGN) != 0)
		return ly_error_set(err, LY_E_INVALID, "key usage has cRLSign: not allowed on a leaf (X509-SVID §4.3)");
	if ((flags & EXFLAG_XKUSAGE) != 0) {
		uint32_t xku = X509_get_extended_key_usage(leaf);
		if ((xku & XKU_SSL_SERVER) == 0 || (xku & XKU_SSL_CLIENT) == 0)
			return ly_error_set(err, LY_E_INVALID, "extended key usage without both serverAuth and "
			    "clientAuth (X509-SVID §4.4)");
	}
	if (out_id != NULL)
		*out_id = id;
	return LY_OK;
}

ly_status
ly_x509svid_check_signing(X509 *cert, struct ly_error *err)
{
	struct ly_spiffe_id id;
	bool found = false, san_critical = false;

	if (cert == NULL)
		return ly_error_set(err, LY_E_INVALID, "no certificate");
	uint32_t flags = X509_get_extension_flags(cert);
	LY_TRY(check_common(cert, flags, err));
	/* EXFLAG_CA is set only by a basicConstraints extension with cA true. */
	if ((flags & EXFLAG_CA) == 0)
		return ly_error_set(err, LY_E_INVALID, "not a CA: basic constraints cA must be true (X509-SVID §4.1)");
	if ((flags & EXFLAG_KUSAGE) == 0 || (X509_get_key_usage(cert) & KU_KEY_CERT_SIGN) == 0)
		return ly_error_set(err, LY_E_INVALID, "key usage lacks keyCertSign (X509-SVID §3.2, §4.3)");
	LY_TRY(cert_spiffe_id(cert, &found, &id, &san_critical, err));
	if (found && !ly_spiffe_id_is_trust_domain_id(&id))
		return ly_error_set(err, LY_E_INVALID, "SPIFFE ID %s has a path: a signing certificate's must not "
		    "(X509-SVID §3.2)", id.id);
	return LY_OK;
}

ly_status
ly_asn1_time_to_time(const ASN1_TIME *t, time_t *out, struct ly_error *err)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return ly_error_openssl(err, LY_E_INVALID, "malformed time");
	*out = timegm(&tm);
	return LY_OK;
}

ly_status
ly_x509_store_new(const uint8_t *authorities_der, size_t len, X509_STORE **out, struct ly_error *err)
{
	STACK_OF(X509) *certs = NULL;
	X509_STORE *store = NULL;
	ly_status rc;

	*out = NULL;
	rc = ly_der_parse_bundle(authorities_der, len, &certs, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "trust store");
	store = X509_STORE_new();
	if (store == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "trust store: allocating");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);
		rc = ly_x509svid_check_signing(x, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "trust store: authority %d", i);
			goto out;
		}
		if (!X509_STORE_add_cert(store, x)) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "trust store: adding authority %d", i);
			goto out;
		}
	}
	*out = store;
	store = NULL;
	rc = LY_OK;
out:
	X509_STORE_free(store);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

/* Status for an X509_verify_cert error code. */
static ly_status
verify_status(int e)
{
	switch (e) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return LY_E_EXPIRED;
	case X509_V_ERR_CERT_CHAIN_TOO_LONG:
		return LY_E_LIMIT;
	case X509_V_ERR_OUT_OF_MEM:
		return LY_E_NOMEM;
	default:
		return LY_E_UNTRUSTED;
	}
}

ly_status
ly_x509_verify_path(X509_STORE *store, X509 *leaf, STACK_OF(X509) *untrusted, time_t now, unsigned long flags,
    X509_STORE_CTX **ctx_out, struct ly_error *err)
{
	X509_STORE_CTX *ctx = NULL;
	ly_status rc;

	*ctx_out = NULL;
	ctx = X509_STORE_CTX_new();
	if (ctx == NULL)
		return ly_error_openssl(err, LY_E_NOMEM, "verify: allocating a context");
	/* The store is only read: X509_STORE_CTX_init takes a reference. */
	if (!X509_STORE_CTX_init(ctx, store, leaf, untrusted)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "verify: initialising the context");
		goto out;
	}
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, now);
	/* Intermediates between leaf and anchor: LY_VERIFY_DEPTH_MAX counts both. */
	X509_VERIFY_PARAM_set_depth(param, LY_VERIFY_DEPTH_MAX - 2);
	/* 112-bit security: no RSA < 2048 and no SHA-1 signatures anywhere in the path. */
	X509_VERIFY_PARAM_set_auth_level(param, 2);
	if (!X509_VERIFY_PARAM_set_flags(param, flags)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "verify: setting flags");
		goto out;
	}
	int ok = X509_verify_cert(ctx);
	if (ok != 1) {
		int e = X509_STORE_CTX_get_error(ctx);
		if (ok < 0 || e == X509_V_OK) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "chain: verification could not run");
			goto out;
		}
		rc = ly_error_set(err, verify_status(e), "chain: certificate %d: %s",
		    X509_STORE_CTX_get_error_depth(ctx), X509_verify_cert_error_string(e));
		ERR_clear_error();
		goto out;
	}
	*ctx_out = ctx;
	ctx = NULL;
	rc = LY_OK;
out:
	X509_STORE_CTX_free(ctx);
	return rc;
}

/* Fills `info` from the leaf and the verified path. */
static ly_status
fill_info(X509 *leaf, X509_STORE_CTX *ctx, const struct ly_spiffe_id *id, struct ly_x509svid_info *info,
    struct ly_error *err)
{
	info->id = *id;
	LY_TRY(ly_asn1_time_to_time(X509_get0_notBefore(leaf), &info->not_before, err));
	LY_TRY(ly_asn1_time_to_time(X509_get0_notAfter(leaf), &info->not_after, err));
	info->chain_not_after = info->not_after;
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
	for (int i = 1; i < sk_X509_num(chain); i++) {
		time_t t;
		LY_TRY(ly_asn1_time_to_time(X509_get0_notAfter(sk_X509_value(chain, i)), &t, err));
		if (t < info->chain_not_after)
			info->chain_not_after = t;
	}
	return LY_OK;
}

ly_status
ly_x509svid_verify_x509(X509 *leaf, STACK_OF(X509) *intermediates, X509_STORE *store, const char *trust_domain,
    time_t now, const EVP_PKEY *expect_key, struct ly_x509svid_info *info, struct ly_error *err)
{
	struct ly_spiffe_id id;
	X509_STORE_CTX *ctx = NULL;
	ly_status rc;

	if (leaf == NULL || store == NULL || trust_domain == NULL)
		return ly_error_set(err, LY_E_INVALID, "verify: a leaf, a trust store and a trust domain are required");
	int n = intermediates != NULL ? sk_X509_num(intermediates) : 0;
	if (n < 0 || n > LY_VERIFY_DEPTH_MAX - 1)
		return ly_error_set(err, LY_E_LIMIT, "chain: more than %d certificates", LY_VERIFY_DEPTH_MAX);

	/* The cheap rules first: no signature is checked for a broken SVID. */
	rc = ly_x509svid_check_leaf(leaf, &id, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "certificate 0 (leaf)");
	if (!ly_spiffe_id_member_of(&id, trust_domain))
		return ly_error_set(err, LY_E_UNTRUSTED, "certificate 0 (leaf): SPIFFE ID %s is not in trust domain %s",
		    id.id, trust_domain);
	if (expect_key != NULL && !ly_key_public_equal(X509_get0_pubkey(leaf), expect_key))
		return ly_error_set(err, LY_E_INVALID, "certificate 0 (leaf): its public key is not the expected key");
	for (int i = 0; i < n; i++) {
		rc = ly_x509svid_check_signing(sk_X509_value(intermediates, i), err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "certificate %d", i + 1);
	}

	rc = ly_x509_verify_path(store, leaf, intermediates, now, X509_V_FLAG_X509_STRICT, &ctx, err);
	if (rc != LY_OK)
		goto out;
	if (info != NULL) {
		rc = fill_info(leaf, ctx, &id, info, err);
		if (rc != LY_OK)
			goto out;
	}
	rc = LY_OK;
out:
	X509_STORE_CTX_free(ctx);
	return rc;
}

ly_status
ly_x509svid_verify_ex(const uint8_t *chain_der, size_t chain_len, X509_STORE *store, const char *trust_domain,
    time_t now, const EVP_PKEY *expect_key, struct ly_x509svid_info *info, struct ly_error *err)
{
	STACK_OF(X509) *certs = NULL;

	/* Capped at the verify depth: a longer chain is refused before any parsing. */
	ly_status rc = ly_der_parse_certs(chain_der, chain_len, LY_VERIFY_DEPTH_MAX, LY_CHAIN_DER_MAX, &certs, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "chain");
	X509 *leaf = sk_X509_shift(certs);
	rc = ly_x509svid_verify_x509(leaf, certs, store, trust_domain, now, expect_key, info, err);
	X509_free(leaf);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

ly_status
ly_x509svid_verify(const uint8_t *chain_der, size_t chain_len, X509_STORE *store, const char *trust_domain,
    time_t now, struct ly_spiffe_id *out_id, struct ly_error *err)
{
	struct ly_x509svid_info info;

	LY_TRY(ly_x509svid_verify_ex(chain_der, chain_len, store, trust_domain, now, NULL,
	    out_id != NULL ? &info : NULL, err));
	if (out_id != NULL)
		*out_id = info.id;
	return LY_OK;
}
