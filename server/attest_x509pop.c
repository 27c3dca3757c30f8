/*
 * attest_x509pop.c: x509pop node attestation on the server (SPEC §6), see
 * attest.h for the rules and lib/x509pop.h for the proof.
 *
 * Order of checks: the chain is parsed within its caps, then the cheap
 * rules on the leaf (key usage, key type), then one X509_verify_cert, then
 * the signature. Selectors are built from the verified path only, so a
 * certificate the agent sent but the path did not use names nothing.
 */
#include "server/attest.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/x509v3.h>

#include "lib/caps.h"
#include "lib/der.h"
#include "lib/keys.h"
#include "lib/x509svid.h"

#define X509POP_PATH LY_AGENT_ID_PATH "x509pop/"
#define SHA1_HEX_LEN 40

struct ly_attest_x509pop {
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
	X509_STORE *store; /* read-only once built: shared by concurrent verifications */
};

void
ly_attest_x509pop_free(struct ly_attest_x509pop *cfg)
{
	if (cfg == NULL)
		return;
	X509_STORE_free(cfg->store);
	free(cfg);
}

ly_status
ly_attest_x509pop_new_der(const char *trust_domain, const uint8_t *ca_der, size_t ca_len,
    struct ly_attest_x509pop **out, struct ly_error *err)
{
	struct ly_attest_x509pop *cfg = NULL;
	STACK_OF(X509) *cas = NULL;
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "x509pop: no output");
	*out = NULL;
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL)
		return ly_error_set(err, LY_E_NOMEM, "x509pop: out of memory");
	rc = ly_trust_domain_parse(trust_domain, false, cfg->trust_domain, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "x509pop");
		goto out;
	}
	rc = ly_der_parse_bundle(ca_der, ca_len, &cas, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "x509pop CA bundle");
		goto out;
	}
	cfg->store = X509_STORE_new();
	if (cfg->store == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "x509pop: allocating a trust store");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(cas); i++) {
		X509 *ca = sk_X509_value(cas, i);
		uint32_t flags = X509_get_extension_flags(ca);
		if ((flags & EXFLAG_INVALID) != 0) {
			rc = ly_error_set(err, LY_E_INVALID, "x509pop CA bundle: certificate %d: malformed extensions", i);
			goto out;
		}
		/* Only an explicit CA: no v1 certificate or keyUsage-only guess (X509_check_ca's other answers). */
		if ((flags & EXFLAG_BCONS) == 0 || (flags & EXFLAG_CA) == 0) {
			rc = ly_error_set(err, LY_E_INVALID,
			    "x509pop CA bundle: certificate %d is not a CA (basicConstraints cA must be true)", i);
			goto out;
		}
		rc = ly_key_check_acceptable(X509_get0_pubkey(ca), err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "x509pop CA bundle: certificate %d", i);
			goto out;
		}
		if (X509_STORE_add_cert(cfg->store, ca) != 1) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "x509pop CA bundle: certificate %d: adding to the store", i);
			goto out;
		}
	}
	*out = cfg;
	cfg = NULL;
	rc = LY_OK;
out:
	sk_X509_pop_free(cas, X509_free);
	ly_attest_x509pop_free(cfg);
	return rc;
}

ly_status
ly_attest_x509pop_new(const char *trust_domain, const char *ca_bundle_path, struct ly_attest_x509pop **out,
    struct ly_error *err)
{
	struct ly_buf der = LY_BUF_INIT;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "x509pop: no output");
	*out = NULL;
	if (ca_bundle_path == NULL || ca_bundle_path[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "x509pop: a CA bundle file is required");
	ly_status rc = ly_pem_file_to_der_certs(ca_bundle_path, LY_BUNDLE_CERTS_MAX, LY_BUNDLE_DER_MAX, &der, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "x509pop CA bundle %s", ca_bundle_path);
	rc = ly_attest_x509pop_new_der(trust_domain, der.data, der.len, out, err);
	ly_buf_free(&der);
	return rc;
}

/* The leaf rules that need no signature check. */
static ly_status
check_leaf(X509 *leaf, struct ly_error *err)
{
	uint32_t flags = X509_get_extension_flags(leaf);
	if ((flags & EXFLAG_INVALID) != 0)
		return ly_error_set(err, LY_E_INVALID, "leaf: malformed or duplicated extensions");
	if ((flags & EXFLAG_KUSAGE) == 0)
		return ly_error_set(err, LY_E_INVALID, "leaf: no key usage extension (digitalSignature is required)");
	if ((X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE) == 0)
		return ly_error_set(err, LY_E_INVALID, "leaf: key usage lacks digitalSignature");
	ly_status rc = ly_key_check_acceptable(X509_get0_pubkey(leaf), err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "leaf");
	return LY_OK;
}

/*
 * Parses and verifies `chain_der` at `now`; on success *leaf_out is the
 * leaf and *path_out the verified path, leaf to anchor (both the caller's).
 */
static ly_status
verify_chain(const struct ly_attest_x509pop *cfg, const uint8_t *chain_der, size_t chain_len, time_t now,
    X509 **leaf_out, STACK_OF(X509) **path_out, struct ly_error *err)
{
	STACK_OF(X509) *certs = NULL;
	X509_STORE_CTX *ctx = NULL;
	X509 *leaf = NULL;
	ly_status rc;

	/* Capped at the verify depth: a longer chain is refused before any parsing. */
	rc = ly_der_parse_certs(chain_der, chain_len, LY_VERIFY_DEPTH_MAX, LY_CHAIN_DER_MAX, &certs, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "chain");
	leaf = sk_X509_shift(certs);
	rc = check_leaf(leaf, err);
	if (rc != LY_OK)
		goto out;
	/* Every configured CA is an anchor, root or not (see attest.h). */
	rc = ly_x509_verify_path(cfg->store, leaf, certs, now, X509_V_FLAG_PARTIAL_CHAIN, &ctx, err);
	if (rc != LY_OK)
		goto out;
	STACK_OF(X509) *path = X509_STORE_CTX_get1_chain(ctx);
	if (path == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "verify: copying the verified path");
		goto out;
	}
	/* A configured CA presented as the leaf proves no agent identity. */
	if (sk_X509_num(path) < 2) {
		sk_X509_pop_free(path, X509_free);
		rc = ly_error_set(err, LY_E_UNTRUSTED, "chain: the leaf is itself a configured CA");
		goto out;
	}
	*path_out = path;
	*leaf_out = leaf;
	leaf = NULL;
	rc = LY_OK;
out:
	X509_STORE_CTX_free(ctx);
	X509_free(leaf);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

static ly_status
sha1_hex(X509 *x, char out[SHA1_HEX_LEN + 1], struct ly_error *err)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	static const char hex[] = "0123456789abcdef";

	if (X509_digest(x, EVP_sha1(), md, &len) != 1 || len * 2 != SHA1_HEX_LEN)
		return ly_error_openssl(err, LY_E_CRYPTO, "SHA-1 fingerprint");
	for (unsigned int i = 0; i < len; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0x0f];
	}
	out[SHA1_HEX_LEN] = '\0';
	return LY_OK;
}

/* x509pop:subject:cn:CN when the subject has one CN; two CNs are ambiguous and refused. */
static ly_status
add_cn(struct ly_attest_result *r, X509 *leaf, struct ly_error *err)
{
	const X509_NAME *subject = X509_get_subject_name(leaf);
	unsigned char *utf8 = NULL;
	char value[LY_SELECTOR_MAX + 1];
	ly_status rc;

	int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if (idx < 0)
		return LY_OK;
	if (X509_NAME_get_index_by_NID(subject, NID_commonName, idx) >= 0)
		return ly_error_set(err, LY_E_INVALID, "leaf: the subject has more than one CN");
	const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
	int n = ASN1_STRING_to_UTF8(&utf8, cn);
	if (n < 0)
		return ly_error_openssl(err, LY_E_INVALID, "leaf: the subject CN cannot be decoded");
	if (memchr(utf8, '\0', (size_t)n) != NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "leaf: the subject CN contains a NUL byte");
		goto out;
	}
	if (snprintf(value, sizeof(value), "subject:cn:%s", (const char *)utf8) >= (int)sizeof(value)) {
		rc = ly_error_set(err, LY_E_LIMIT, "leaf: the subject CN is over the selector limit");
		goto out;
	}
	rc = ly_attest_result_add_selector(r, "x509pop", value, err);
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "leaf subject CN");
out:
	OPENSSL_free(utf8);
	return rc;
}

/* x509pop:serialnumber:HEX, lower case without leading zeros (RFC 5280 §4.1.2.2: positive). */
static ly_status
add_serial(struct ly_attest_result *r, X509 *leaf, struct ly_error *err)
{
	char value[64];
	ly_status rc;

	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
	if (bn == NULL)
		return ly_error_openssl(err, LY_E_INVALID, "leaf: the serial number cannot be decoded");
	char *hex = NULL;
	if (BN_is_negative(bn)) {
		rc = ly_error_set(err, LY_E_INVALID, "leaf: the serial number is negative (RFC 5280 §4.1.2.2)");
		goto out;
	}
	hex = BN_bn2hex(bn);
	if (hex == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "leaf: serial number to hex");
		goto out;
	}
	const char *p = hex;
	while (p[0] == '0' && p[1] != '\0')
		p++;
	if (snprintf(value, sizeof(value), "serialnumber:%s", p) >= (int)sizeof(value)) {
		rc = ly_error_set(err, LY_E_INVALID, "leaf: the serial number is over 20 octets (RFC 5280 §4.1.2.2)");
		goto out;
	}
	for (char *c = value; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
	rc = ly_attest_result_add_selector(r, "x509pop", value, err);
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "leaf serial number");
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

static bool
has_selector(const struct ly_attest_result *r, const char *value)
{
	for (size_t i = 0; i < r->n_selectors; i++) {
		if (strcmp(r->selectors[i].value, value) == 0)
			return true;
	}
	return false;
}

/* x509pop:san:dns:NAME for each DNS SAN (a repeated name once). */
static ly_status
add_dns_sans(struct ly_attest_result *r, X509 *leaf, struct ly_error *err)
{
	char value[sizeof("san:dns:") + LY_DNS_NAME_MAX];
	size_t count = 0;
	ly_status rc = LY_OK;
	int crit = 0;

	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
	if (gens == NULL) {
		/* -1: absent; anything else is a malformed or repeated extension. */
		if (crit != -1)
			return ly_error_set(err, LY_E_INVALID, "leaf: malformed subjectAltName");
		return LY_OK;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_DNS)
			continue;
		if (++count > LY_DNS_NAMES_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "leaf: more than %d DNS SANs", LY_DNS_NAMES_MAX);
			goto out;
		}
		const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
		int n = ASN1_STRING_length(g->d.dNSName);
		if (n <= 0 || memchr(d, '\0', (size_t)n) != NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "leaf: DNS SAN %zu is empty or holds a NUL byte", count);
			goto out;
		}
		if ((size_t)n > LY_DNS_NAME_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "leaf: DNS SAN %zu is longer than %d bytes", count,
			    LY_DNS_NAME_MAX);
			goto out;
		}
		(void)snprintf(value, sizeof(value), "san:dns:%.*s", n, (const char *)d);
		if (has_selector(r, value))
			continue;
		rc = ly_attest_result_add_selector(r, "x509pop", value, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "leaf DNS SAN %zu", count);
			goto out;
		}
	}
out:
	GENERAL_NAMES_free(gens);
	return rc;
}

static ly_status
build_result(const struct ly_attest_x509pop *cfg, X509 *leaf, STACK_OF(X509) *path, struct ly_attest_result *r,
    struct ly_error *err)
{
	char fp[SHA1_HEX_LEN + 1];
	char value[sizeof("ca:fingerprint:") + SHA1_HEX_LEN];
	char id[sizeof("spiffe://") + LY_TRUST_DOMAIN_MAX + sizeof(X509POP_PATH) + SHA1_HEX_LEN];

	LY_TRY(add_cn(r, leaf, err));
	for (int i = 1; i < sk_X509_num(path); i++) {
		LY_TRY(sha1_hex(sk_X509_value(path, i), fp, err));
		(void)snprintf(value, sizeof(value), "ca:fingerprint:%s", fp);
		if (!has_selector(r, value))
			LY_TRY(ly_attest_result_add_selector(r, "x509pop", value, err));
	}
	LY_TRY(add_serial(r, leaf, err));
	LY_TRY(add_dns_sans(r, leaf, err));
	LY_TRY(sha1_hex(leaf, fp, err));
	(void)snprintf(id, sizeof(id), "spiffe://%s%s%s", cfg->trust_domain, X509POP_PATH, fp);
	return ly_attest_result_finish(r, "x509pop", cfg->trust_domain, id, err);
}

ly_status
ly_attest_x509pop_challenge(const struct ly_attest_x509pop *cfg, const uint8_t *chain_der, size_t chain_len,
    time_t now, uint8_t nonce[LY_X509POP_NONCE_LEN], struct ly_error *err)
{
	X509 *leaf = NULL;
	STACK_OF(X509) *path = NULL;

	if (cfg == NULL || nonce == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "x509pop challenge: no configuration or output");
	ly_status rc = verify_chain(cfg, chain_der, chain_len, now, &leaf, &path, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "x509pop attestation");
	X509_free(leaf);
	sk_X509_pop_free(path, X509_free);
	return ly_x509pop_nonce_new(nonce, err);
}

ly_status
ly_attest_x509pop_verify(const struct ly_attest_x509pop *cfg, const uint8_t *chain_der, size_t chain_len,
    const uint8_t nonce[LY_X509POP_NONCE_LEN], const uint8_t *sig, size_t sig_len, time_t now,
    struct ly_attest_result *out, struct ly_error *err)
{
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	X509 *leaf = NULL;
	STACK_OF(X509) *path = NULL;
	ly_status rc;

	if (cfg == NULL || nonce == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "x509pop verify: no configuration, nonce or output");
	/* Cheap refusals first: no chain work for an absent or oversized proof. */
	if (sig == NULL || sig_len == 0)
		return ly_error_set(err, LY_E_INVALID, "x509pop attestation: the proof signature is empty");
	if (sig_len > LY_X509POP_SIG_MAX)
		return ly_error_set(err, LY_E_LIMIT, "x509pop attestation: the proof signature is over %d bytes",
		    LY_X509POP_SIG_MAX);
	rc = verify_chain(cfg, chain_der, chain_len, now, &leaf, &path, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_x509pop_verify(leaf, nonce, LY_X509POP_NONCE_LEN, sig, sig_len, err);
	if (rc != LY_OK)
		goto out;
	rc = build_result(cfg, leaf, path, &r, err);
	if (rc != LY_OK)
		goto out;
	*out = r;
	r = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	rc = LY_OK;
out:
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "x509pop attestation");
	ly_attest_result_cleanup(&r);
	X509_free(leaf);
	sk_X509_pop_free(path, X509_free);
	return rc;
}
