/* test_csr.c: building and checking PKCS#10 requests with a SPIFFE ID. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/spiffeid.h"
#include "testutil_x509.h"

#define ID "spiffe://example.org/ns/prod/sa/web"

/*
 * A CSR made without our builder's checks: `san` is an OpenSSL SAN config
 * string ("URI:...,DNS:...") or NULL for no SAN; `dup` adds it twice.
 */
static void
raw_csr(EVP_PKEY *key, const char *san, bool dup, long version, const EVP_MD *md, struct ly_buf *out)
{
	X509_REQ *req = X509_REQ_new();
	assert_non_null(req);
	assert_true(X509_REQ_set_version(req, version));
	assert_true(X509_REQ_set_pubkey(req, key));
	if (san != NULL) {
		STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
		for (int i = 0; i < (dup ? 2 : 1); i++) {
			X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
			assert_non_null(ext);
			assert_true(sk_X509_EXTENSION_push(exts, ext) > 0);
		}
		assert_true(X509_REQ_add_extensions(req, exts));
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	}
	assert_true(X509_REQ_sign(req, key, md) > 0);
	unsigned char *der = NULL;
	int len = i2d_X509_REQ(req, &der);
	assert_true(len > 0);
	assert_int_equal(ly_buf_set(out, der, (size_t)len, NULL), LY_OK);
	OPENSSL_free(der);
	X509_REQ_free(req);
}

/* Parses `csr` and expects `want`, with `msg` in the error when given. */
static void
expect_parse(const struct ly_buf *csr, ly_status want, const char *msg)
{
	struct ly_csr out;
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_csr_parse(csr->data, csr->len, &out, &err);
	if (rc != want)
		fail_msg("want %s, got %s: %s", ly_status_str(want), ly_status_str(rc), err.msg);
	if (msg != NULL && strstr(err.msg, msg) == NULL)
		fail_msg("want \"%s\" in \"%s\"", msg, err.msg);
	if (rc != LY_OK) {
		assert_null(out.key);
		assert_null(out.spki.data);
	}
	ly_csr_cleanup(&out);
}

static void
test_build_and_parse(void **state)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str(ID, &id, NULL), LY_OK);
	EVP_PKEY *keys[] = { tu_key(LY_KEY_EC_P256), tu_key(LY_KEY_EC_P384), tu_ec_key("P-521"),
		tu_key(LY_KEY_RSA_2048) };
	const char *dns[] = { "web.example.org", "*.web.example.org" };
	for (size_t i = 0; i < 4; i++) {
		struct ly_buf der = LY_BUF_INIT;
		assert_int_equal(ly_csr_build(keys[i], &id, dns, i % 2 == 0 ? 2 : 0, &der, NULL), LY_OK);
		assert_true(der.len > 0 && der.len <= LY_CSR_DER_MAX);
		struct ly_csr csr;
		assert_int_equal(ly_csr_parse(der.data, der.len, &csr, NULL), LY_OK);
		assert_true(ly_spiffe_id_equal(&csr.id, &id));
		assert_true(ly_key_public_equal(csr.key, keys[i]));
		assert_int_equal(csr.dns_count, i % 2 == 0 ? 2 : 0);
		/* The SPKI bytes decode to the same key. */
		const unsigned char *p = csr.spki.data;
		EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)csr.spki.len);
		assert_non_null(pub);
		assert_ptr_equal(p, csr.spki.data + csr.spki.len);
		assert_true(ly_key_public_equal(pub, keys[i]));
		EVP_PKEY_free(pub);
		ly_csr_cleanup(&csr);
		ly_csr_cleanup(&csr); /* twice is safe */
		ly_buf_free(&der);
		EVP_PKEY_free(keys[i]);
	}
}

/* A trust domain ID (no path) is a valid request: a downstream CA asks for it. */
static void
test_trust_domain_id_allowed(void **state)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://example.org", &id, NULL), LY_OK);
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct ly_buf der = LY_BUF_INIT;
	assert_int_equal(ly_csr_build(k, &id, NULL, 0, &der, NULL), LY_OK);
	struct ly_csr csr;
	assert_int_equal(ly_csr_parse(der.data, der.len, &csr, NULL), LY_OK);
	assert_true(ly_spiffe_id_is_trust_domain_id(&csr.id));
	ly_csr_cleanup(&csr);
	ly_buf_free(&der);
	EVP_PKEY_free(k);
}

static void
test_build_refusals(void **state)
{
	struct ly_error err;
	struct ly_spiffe_id id, empty;
	assert_int_equal(ly_spiffe_id_parse_str(ID, &id, NULL), LY_OK);
	memset(&empty, 0, sizeof(empty));
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct ly_buf der = LY_BUF_INIT;

	EVP_PKEY *weak = tu_rsa_key(1024);
	assert_int_equal(ly_csr_build(weak, &id, NULL, 0, &der, &err), LY_E_UNSUPPORTED);
	EVP_PKEY_free(weak);
	assert_int_equal(ly_csr_build(k, &empty, NULL, 0, &der, &err), LY_E_INVALID);
	assert_int_equal(ly_csr_build(NULL, &id, NULL, 0, &der, &err), LY_E_INVALID);

	const char *bad_dns[] = { "ok.example.org", "bad name" };
	assert_int_equal(ly_csr_build(k, &id, bad_dns, 2, &der, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "DNS name 1"));
	/* A comma would smuggle another SAN through a config-string builder. */
	const char *inject[] = { "a.example.org,URI:spiffe://evil.org/x" };
	assert_int_equal(ly_csr_build(k, &id, inject, 1, &der, &err), LY_E_INVALID);
	const char *empty_dns[] = { "" };
	assert_int_equal(ly_csr_build(k, &id, empty_dns, 1, &der, &err), LY_E_INVALID);
	char longname[LY_DNS_NAME_MAX + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	const char *long_dns[] = { longname };
	assert_int_equal(ly_csr_build(k, &id, long_dns, 1, &der, &err), LY_E_INVALID);
	const char *many[LY_DNS_NAMES_MAX + 1];
	for (size_t i = 0; i < LY_DNS_NAMES_MAX + 1; i++)
		many[i] = "a.example.org";
	assert_int_equal(ly_csr_build(k, &id, many, LY_DNS_NAMES_MAX + 1, &der, &err), LY_E_LIMIT);
	assert_int_equal(ly_csr_build(k, &id, many, LY_DNS_NAMES_MAX, &der, &err), LY_OK);
	ly_buf_free(&der);
	assert_null(der.data);
	EVP_PKEY_free(k);
}

/* The raw builder itself makes an acceptable CSR (so the refusals below are by rule). */
static void
test_raw_baseline(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct ly_buf der = LY_BUF_INIT;
	raw_csr(k, "URI:" ID ",DNS:web.example.org", false, X509_REQ_VERSION_1, EVP_sha256(), &der);
	expect_parse(&der, LY_OK, NULL);
	ly_buf_free(&der);
	EVP_PKEY_free(k);
}

static void
test_san_rules(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct ly_buf der = LY_BUF_INIT;
	static const struct {
		const char *san;
		bool dup;
		const char *msg;
	} cases[] = {
		{ NULL, false, "no subject alternative name" },
		{ "DNS:web.example.org", false, "no URI SAN" },
		{ "URI:" ID ",URI:spiffe://example.org/other", false, "2 URI SANs" },
		{ "URI:https://example.org/web", false, "not a valid SPIFFE ID" },
		{ "URI:spiffe://Example.org/web", false, "not a valid SPIFFE ID" },
		{ "URI:spiffe://example.org/a/../b", false, "not a valid SPIFFE ID" },
		{ "URI:" ID, true, "more than one SAN extension" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		raw_csr(k, cases[i].san, cases[i].dup, X509_REQ_VERSION_1, EVP_sha256(), &der);
		expect_parse(&der, LY_E_INVALID, cases[i].msg);
		ly_buf_free(&der);
	}
	/* DNS SANs up to the cap are fine; one more is refused. */
	char san[4096];
	size_t n = (size_t)snprintf(san, sizeof(san), "URI:%s", ID);
	for (int i = 0; i < LY_DNS_NAMES_MAX; i++)
		n += (size_t)snprintf(san + n, sizeof(san) - n, ",DNS:n%d.example.org", i);
	raw_csr(k, san, false, X509_REQ_VERSION_1, EVP_sha256(), &der);
	expect_parse(&der, LY_OK, NULL);
	ly_buf_free(&der);
	snprintf(san + n, sizeof(san) - n, ",DNS:one-more.example.org");
	raw_csr(k, san, false, X509_REQ_VERSION_1, EVP_sha256(), &der);
	expect_parse(&der, LY_E_LIMIT, "DNS SANs");
	ly_buf_free(&der);
	EVP_PKEY_free(k);
}

static void
test_key_and_digest_rules(void **state)
{
	struct ly_buf der = LY_BUF_INIT;

	EVP_PKEY *rsa1024 = tu_rsa_key(1024);
	raw_csr(rsa1024, "URI:" ID, false, X509_REQ_VERSION_1, EVP_sha256(), &der);
	expect_parse(&der, LY_E_UNSUPPORTED, "RSA key of 1024 bits");
	ly_buf_free(&der);
	EVP_PKEY_free(rsa1024);

	EVP_PKEY *k1 = tu_ec_key("secp256k1");
	raw_csr(k1, "URI:" ID, false, X509_REQ_VERSION_1, EVP_sha256(), &der);
	expect_parse(&der, LY_E_UNSUPPORTED, "secp256k1");
	ly_buf_free(&der);
	EVP_PKEY_free(k1);

	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	raw_csr(k, "URI:" ID, false, X509_REQ_VERSION_1, EVP_sha1(), &der);
	expect_parse(&der, LY_E_UNSUPPORTED, "SHA-256");
	ly_buf_free(&der);
	/* A version that does not exist. */
	raw_csr(k, "URI:" ID, false, 1, EVP_sha256(), &der);
	expect_parse(&der, LY_E_INVALID, "version");
	ly_buf_free(&der);
	EVP_PKEY_free(k);
}

static void
test_signature_rule(void **state)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str(ID, &id, NULL), LY_OK);
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct ly_buf der = LY_BUF_INIT;
	assert_int_equal(ly_csr_build(k, &id, NULL, 0, &der, NULL), LY_OK);
	expect_parse(&der, LY_OK, NULL);

	/* Change the requested ID after signing: 'w' of "web" becomes 'v'. */
	uint8_t *w = memmem(der.data, der.len, "/sa/web", 7);
	assert_non_null(w);
	w[4] = 'v';
	expect_parse(&der, LY_E_UNTRUSTED, "self-signature");
	w[4] = 'w';
	expect_parse(&der, LY_OK, NULL);

	/* Another key's signature: swap in a CSR signed by a different key for the same ID. */
	EVP_PKEY *other = tu_key(LY_KEY_EC_P256);
	struct ly_buf der2 = LY_BUF_INIT;
	assert_int_equal(ly_csr_build(other, &id, NULL, 0, &der2, NULL), LY_OK);
	/* Same layout up to the signature: swap the public key only. */
	uint8_t *pub = memmem(der.data, der.len, "\x03\x42\x00\x04", 4);
	uint8_t *pub2 = memmem(der2.data, der2.len, "\x03\x42\x00\x04", 4);
	assert_non_null(pub);
	assert_non_null(pub2);
	memcpy(pub, pub2, 68);
	expect_parse(&der, LY_E_UNTRUSTED, "self-signature");
	ly_buf_free(&der2);
	EVP_PKEY_free(other);
	ly_buf_free(&der);
	EVP_PKEY_free(k);
}

static void
test_framing_rules(void **state)
{
	struct ly_spiffe_id id;
	struct ly_error err;
	struct ly_csr csr;
	assert_int_equal(ly_spiffe_id_parse_str(ID, &id, NULL), LY_OK);
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct ly_buf der = LY_BUF_INIT;
	assert_int_equal(ly_csr_build(k, &id, NULL, 0, &der, NULL), LY_OK);

	uint8_t *p = malloc(der.len + 1);
	assert_non_null(p);
	memcpy(p, der.data, der.len);
	p[der.len] = 0;
	assert_int_equal(ly_csr_parse(p, der.len + 1, &csr, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "trailing"));
	assert_int_equal(ly_csr_parse(p, der.len - 1, &csr, &err), LY_E_INVALID);
	assert_int_equal(ly_csr_parse(p, 0, &csr, &err), LY_E_INVALID);
	assert_int_equal(ly_csr_parse(NULL, 10, &csr, &err), LY_E_INVALID);
	free(p);
	uint8_t *big = calloc(1, LY_CSR_DER_MAX + 1);
	assert_non_null(big);
	assert_int_equal(ly_csr_parse(big, LY_CSR_DER_MAX + 1, &csr, &err), LY_E_LIMIT);
	assert_int_equal(ly_csr_parse(big, 100, &csr, &err), LY_E_INVALID);
	free(big);
	assert_null(csr.key);
	ly_buf_free(&der);
	EVP_PKEY_free(k);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_and_parse),
		cmocka_unit_test(test_trust_domain_id_allowed),
		cmocka_unit_test(test_build_refusals),
		cmocka_unit_test(test_raw_baseline),
		cmocka_unit_test(test_san_rules),
		cmocka_unit_test(test_key_and_digest_rules),
		cmocka_unit_test(test_signature_rule),
		cmocka_unit_test(test_framing_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
