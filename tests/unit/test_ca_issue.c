/*
 * test_ca_issue.c: issuance by the server's CA (server/ca.h) on real files
 * in a mkdtemp directory (testutil_ca.h): X509-SVIDs checked by lib's
 * X.509-SVID verifier against the CA's own bundle, every key type, every
 * CSR refusal, agent SVIDs and batches, and a leaf's lifetime capped by
 * its CA's. Opening, persistence and rotation are test_ca_rotation.c's,
 * the upstream CA test_ca_upstream.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/log.h"
#include "testutil_ca.h"

/* A CSR made with OpenSSL directly, so that it can break every rule. */
static void
make_csr(EVP_PKEY *key, const char *san, const EVP_MD *md, struct ly_buf *out)
{
	X509_REQ *req = X509_REQ_new();
	assert_non_null(req);
	assert_true(X509_REQ_set_version(req, X509_REQ_VERSION_1));
	assert_true(X509_REQ_set_pubkey(req, key));
	if (san != NULL) {
		STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
		assert_non_null(e);
		assert_true(sk_X509_EXTENSION_push(exts, e) > 0);
		assert_true(X509_REQ_add_extensions(req, exts));
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	}
	assert_true(X509_REQ_sign(req, key, md) > 0);
	uint8_t *der = NULL;
	int n = i2d_X509_REQ(req, &der);
	assert_true(n > 0);
	assert_int_equal(ly_buf_set(out, der, (size_t)n, NULL), LY_OK);
	OPENSSL_free(der);
	X509_REQ_free(req);
}

static void
test_issue_leaf(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, chain2 = LY_BUF_INIT;
	struct ly_error err;
	time_t exp = 0;
	const char *dns[] = { "web.example.org", "api.example.org" };
	struct ly_spiffe_id id = sid(WL);

	open_ca(f, T0);
	lib_csr(f->key, WL, &csr);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, dns, 2, 0, T0 + 5, &chain, &exp, &err),
	    LY_OK);
	assert_int_equal(exp, T0 + 5 + 3600);
	if (verify(ly_ca_bundle(f->ca), &chain, T0 + 5, f->key, &err) != LY_OK)
		fail_msg("verify: %s", err.msg);
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	assert_int_equal(chain_split(&chain, spans), 2);

	X509 *leaf = chain_cert(&chain, 0), *ca = chain_cert(&chain, 1);
	assert_int_equal(X509_get_version(leaf), X509_VERSION_3);
	assert_int_equal(cert_time(X509_get0_notBefore(leaf)), T0 + 5 - LY_SVID_BACKDATE(3600));
	assert_int_equal(LY_SVID_BACKDATE(3600), 300);
	assert_int_equal(LY_SVID_BACKDATE(20), 10);
	assert_int_equal(LY_SVID_BACKDATE(120), 30);
	assert_int_equal(cert_time(X509_get0_notAfter(leaf)), T0 + 5 + 3600);
	uint32_t fl = X509_get_extension_flags(leaf);
	assert_true((fl & EXFLAG_BCONS) != 0);
	assert_true((fl & EXFLAG_CA) == 0);
	assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
	assert_int_equal(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, X509_get_ext_by_NID(leaf, NID_basic_constraints,
	    -1))), 1);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, X509_get_ext_by_NID(leaf, NID_key_usage, -1))),
	    1);
	/* Subject CN = the first DNS name; the SAN then is not critical. */
	char cn[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn)) > 0);
	assert_string_equal(cn, "web.example.org");
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, X509_get_ext_by_NID(leaf,
	    NID_subject_alt_name, -1))), 0);
	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 3);
	GENERAL_NAMES_free(gens);
	assert_int_equal(X509_check_private_key(leaf, f->key), 1);
	/* Key identifiers chain: the leaf's AKID is the signing CA's SKID. */
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(ca)), 0);
	assert_non_null(X509_get0_subject_key_id(leaf));
	/* A random serial of up to 128 bits, different each time. */
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
	assert_true(BN_num_bits(bn) > 64 && BN_num_bits(bn) <= 128);
	BN_free(bn);

	/* Without DNS names: an empty subject and a critical SAN (X509-SVID §3.1). */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 600, T0 + 5, &chain2, &exp, &err),
	    LY_OK);
	assert_int_equal(exp, T0 + 5 + 600);
	X509 *leaf2 = chain_cert(&chain2, 0);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(leaf2)), 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf2, X509_get_ext_by_NID(leaf2,
	    NID_subject_alt_name, -1))), 1);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(leaf2)), 0);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain2, T0 + 5, f->key, NULL), LY_OK);
	/* Verified against a bundle without our root: refused. */
	struct tu_pki pki;
	tu_pki_init(&pki);
	X509_STORE *store = NULL;
	assert_int_equal(ly_x509_store_new(pki.root_der.data, pki.root_der.len, &store, NULL), LY_OK);
	assert_int_not_equal(ly_x509svid_verify(chain2.data, chain2.len, store, TD, T0 + 5, NULL, NULL), LY_OK);
	X509_STORE_free(store);
	tu_pki_free(&pki);

	X509_free(leaf);
	X509_free(leaf2);
	X509_free(ca);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	ly_buf_free(&chain2);
}

static void
test_issue_key_types(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	struct ly_error err;

	open_ca(f, T0);
	/* P-384 and P-521 keys, with SHA-384 and SHA-512 signatures. */
	const char *curves[] = { "P-384", "P-521" };
	for (size_t i = 0; i < 2; i++) {
		EVP_PKEY *k = tu_ec_key(curves[i]);
		make_csr(k, "URI:" WL, i == 0 ? EVP_sha384() : EVP_sha512(), &csr);
		if (sign(f, &csr, WL, T0, &chain, &err) != LY_OK)
			fail_msg("%s: %s", curves[i], err.msg);
		assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, k, NULL), LY_OK);
		ly_buf_free(&csr);
		ly_buf_free(&chain);
		EVP_PKEY_free(k);
	}
	/* RSA-2048: accepted, and the leaf also allows keyEncipherment. */
	EVP_PKEY *rsa = tu_rsa_key(2048);
	make_csr(rsa, "URI:" WL, EVP_sha256(), &csr);
	assert_int_equal(sign(f, &csr, WL, T0, &chain, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, rsa, NULL), LY_OK);
	X509 *leaf = chain_cert(&chain, 0);
	assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	X509_free(leaf);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	EVP_PKEY_free(rsa);
}

static void
expect_refused(struct fx *f, const struct ly_buf *csr, const char *id, ly_status want, const char *msg_part)
{
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_error err;
	ly_status rc = sign(f, csr, id, T0, &chain, &err);
	if (rc != want)
		fail_msg("expected %s, got %s: %s", ly_status_str(want), ly_status_str(rc), rc == LY_OK ? "" : err.msg);
	assert_null(chain.data);
	if (msg_part != NULL && strstr(err.msg, msg_part) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", err.msg, msg_part);
}

static void
test_csr_refusals(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, bad = LY_BUF_INIT;

	open_ca(f, T0);
	lib_csr(f->key, WL, &csr);

	/* Signature broken (last byte of the ECDSA s value). */
	assert_int_equal(ly_buf_set(&bad, csr.data, csr.len, NULL), LY_OK);
	bad.data[bad.len - 1] ^= 0x01;
	expect_refused(f, &bad, WL, LY_E_UNTRUSTED, "self-signature");
	ly_buf_free(&bad);

	/* The public key changed: not on the curve, refused before any signature check. */
	assert_int_equal(ly_buf_set(&bad, csr.data, csr.len, NULL), LY_OK);
	uint8_t pt[65];
	size_t ptlen = 0;
	assert_true(EVP_PKEY_get_octet_string_param(f->key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptlen));
	uint8_t *pos = memmem(bad.data, bad.len, pt, ptlen);
	assert_non_null(pos);
	pos[64] ^= 0x01;
	expect_refused(f, &bad, WL, LY_E_INVALID, "curve");
	ly_buf_free(&bad);

	/* Trailing bytes after the CSR. */
	assert_int_equal(ly_buf_set(&bad, csr.data, csr.len, NULL), LY_OK);
	assert_int_equal(ly_buf_append(&bad, "\0", 1, 1 << 20, NULL), LY_OK);
	expect_refused(f, &bad, WL, LY_E_INVALID, "trailing");
	ly_buf_free(&bad);

	/* Truncated, garbage, empty, oversized. */
	struct ly_buf cut = { .data = csr.data, .len = csr.len - 1 };
	expect_refused(f, &cut, WL, LY_E_INVALID, NULL);
	uint8_t junk[64];
	memset(junk, 0x41, sizeof(junk));
	struct ly_buf garbage = { .data = junk, .len = sizeof(junk) };
	expect_refused(f, &garbage, WL, LY_E_INVALID, NULL);
	struct ly_buf empty = { .data = junk, .len = 0 };
	expect_refused(f, &empty, WL, LY_E_INVALID, NULL);
	uint8_t *big = calloc(1, LY_CSR_DER_MAX + 1);
	assert_non_null(big);
	struct ly_buf huge = { .data = big, .len = LY_CSR_DER_MAX + 1 };
	expect_refused(f, &huge, WL, LY_E_LIMIT, NULL);
	free(big);

	/* The SAN is not the expected ID; another trust domain; no path. */
	expect_refused(f, &csr, "spiffe://example.org/ns/prod/sa/db", LY_E_INVALID, "URI SAN");
	struct ly_buf other = LY_BUF_INIT;
	lib_csr(f->key, "spiffe://other.org/ns/prod/sa/web", &other);
	expect_refused(f, &other, "spiffe://other.org/ns/prod/sa/web", LY_E_INVALID, "trust domain");
	ly_buf_free(&other);
	expect_refused(f, &csr, "spiffe://example.org", LY_E_INVALID, "path");

	/* Two URI SANs; no SAN; a DNS SAN only. */
	make_csr(f->key, "URI:" WL ",URI:spiffe://example.org/other", EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_INVALID, "2 URI SANs");
	ly_buf_free(&bad);
	make_csr(f->key, NULL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_INVALID, "no extension request");
	ly_buf_free(&bad);
	make_csr(f->key, "DNS:web.example.org", EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_INVALID, "no URI SAN");
	ly_buf_free(&bad);

	/* Weak keys and digests. */
	EVP_PKEY *rsa1024 = tu_rsa_key(1024);
	make_csr(rsa1024, "URI:" WL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "1024");
	ly_buf_free(&bad);
	EVP_PKEY_free(rsa1024);
	make_csr(f->key, "URI:" WL, EVP_sha1(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "signature algorithm");
	ly_buf_free(&bad);
	EVP_PKEY *k1 = tu_ec_key("secp256k1");
	make_csr(k1, "URI:" WL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "curve");
	ly_buf_free(&bad);
	EVP_PKEY_free(k1);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	make_csr(ed, "URI:" WL, NULL, &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "key algorithm");
	ly_buf_free(&bad);
	EVP_PKEY_free(ed);

	/* A compressed point: refused (Go clients could not parse the leaf). */
	EVP_PKEY *ck = tu_key(LY_KEY_EC_P256);
	assert_true(EVP_PKEY_set_utf8_string_param(ck, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "compressed"));
	make_csr(ck, "URI:" WL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "compressed");
	ly_buf_free(&bad);
	EVP_PKEY_free(ck);

	/* TTLs: negative, over the cap; DNS names over the caps or malformed. */
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_error err;
	struct ly_spiffe_id id = sid(WL);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, -1, T0, &chain, NULL, &err),
	    LY_E_INVALID);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, LY_X509_SVID_TTL_MAX + 1, T0,
	    &chain, NULL, &err), LY_E_LIMIT);
	const char *bad_dns[] = { "web example" };
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, bad_dns, 1, 0, T0, &chain, NULL, &err),
	    LY_E_INVALID);
	const char *many[LY_DNS_NAMES_MAX + 1];
	for (size_t i = 0; i <= LY_DNS_NAMES_MAX; i++)
		many[i] = "a.example.org";
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, many, LY_DNS_NAMES_MAX + 1, 0, T0, &chain,
	    NULL, &err), LY_E_LIMIT);
	/* A DNS name longer than a CN may be: in the SAN only, the subject empty. */
	char longname[100];
	memset(longname, 'a', 80);
	strcpy(longname + 80, ".example.org");
	const char *ld[] = { longname };
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, ld, 1, 0, T0, &chain, NULL, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, f->key, NULL), LY_OK);
	ly_buf_free(&chain);
	/* The output buffer must be empty. */
	struct ly_buf full = { .data = (uint8_t *)junk, .len = 1 };
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &full, NULL, &err),
	    LY_E_INVALID);
	ly_buf_free(&csr);
}

static void
test_agent_and_batch(void **state)
{
	struct fx *f = *state;
	struct ly_buf c1 = LY_BUF_INIT, c2 = LY_BUF_INIT, chain = LY_BUF_INIT;
	struct ly_error err;
	const char *agent = "spiffe://example.org/lanyard/agent/join_token/abc";
	struct ly_spiffe_id aid = sid(agent), wid = sid(WL);
	time_t exp = 0;

	open_ca(f, T0);
	lib_csr(f->key, agent, &c1);
	assert_int_equal(ly_ca_sign_agent_svid(f->ca, c1.data, c1.len, &aid, 0, T0, &chain, &exp, &err), LY_OK);
	assert_int_equal(exp, T0 + 3600);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, f->key, NULL), LY_OK);
	ly_buf_free(&chain);

	lib_csr(f->key, WL, &c2);
	struct ly_ca_sign_req reqs[3] = {
		{ c2.data, c2.len, &wid, NULL, 0, 0 },
		{ c1.data, c1.len, &wid, NULL, 0, 0 }, /* the SAN is the agent's: refused alone */
		{ c1.data, c1.len, &aid, NULL, 0, 120 },
	};
	struct ly_ca_sign_res res[3];
	assert_int_equal(ly_ca_sign_batch(f->ca, reqs, 3, T0, res, &err), LY_OK);
	assert_int_equal(res[0].status, LY_OK);
	assert_int_equal(res[1].status, LY_E_INVALID);
	assert_non_null(strstr(res[1].err.msg, "URI SAN"));
	assert_null(res[1].chain.data);
	assert_int_equal(res[2].status, LY_OK);
	assert_int_equal(res[2].expires_at, T0 + 120);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &res[0].chain, T0, f->key, NULL), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &res[2].chain, T0, f->key, NULL), LY_OK);
	ly_ca_sign_res_cleanup(res, 3);

	/* Over the batch cap: refused whole, each result says so. */
	struct ly_ca_sign_res *many = calloc(LY_CA_BATCH_MAX + 1, sizeof(*many));
	struct ly_ca_sign_req *mreq = calloc(LY_CA_BATCH_MAX + 1, sizeof(*mreq));
	assert_int_equal(ly_ca_sign_batch(f->ca, mreq, LY_CA_BATCH_MAX + 1, T0, many, &err), LY_E_LIMIT);
	assert_int_equal(many[LY_CA_BATCH_MAX].status, LY_E_LIMIT);
	free(many);
	free(mreq);

	/* No valid signing CA at that time (tick not called): refused. */
	assert_int_equal(ly_ca_sign_batch(f->ca, reqs, 1, T0 + 2 * DAY, res, &err), LY_E_EXPIRED);
	assert_int_equal(res[0].status, LY_E_EXPIRED);
	ly_ca_sign_res_cleanup(res, 1);
	ly_buf_free(&c1);
	ly_buf_free(&c2);
}

static void
test_leaf_capped_by_ca(void **state)
{
	struct fx *f = *state;
	struct ly_ca_config c = config(f);
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	struct ly_error err;
	struct ly_spiffe_id id = sid(WL);
	time_t exp = 0;

	c.ca_ttl = 7200;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	lib_csr(f->key, WL, &csr);
	/* 1 h asked at T0 + 1000: the signing CA (until T0 + 7200) outlives it... */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 3600, T0 + 1000, &chain, &exp,
	    &err), LY_OK);
	assert_int_equal(exp, T0 + 1000 + 3600);
	ly_buf_free(&chain);
	/* ...5000 s asked at T0 + 3000 (before rotation at 50%) ends with the signing CA. */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 5000, T0 + 3000, &chain, &exp,
	    &err), LY_OK);
	assert_int_equal(exp, T0 + 7200);
	X509 *leaf = chain_cert(&chain, 0), *ca = chain_cert(&chain, 1);
	assert_int_equal(cert_time(X509_get0_notAfter(leaf)), cert_time(X509_get0_notAfter(ca)));
	/* 4,200 s left ahead: backdated its full 300 s (a quarter of that would be 1,050 s). */
	assert_int_equal(cert_time(X509_get0_notBefore(leaf)), T0 + 3000 - 300);
	X509_free(leaf);
	X509_free(ca);
	ly_buf_free(&chain);
	/*
	 * Clipped to 200 s by the CA's end: backdated a quarter of that (50 s),
	 * not 300 s, so its 50% renewal mark (T0 + 7075) comes after issuance
	 * (T0 + 7000) instead of before it (an agent would renew it forever).
	 */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 3600, T0 + 7000, &chain, &exp,
	    &err), LY_OK);
	leaf = chain_cert(&chain, 0);
	assert_int_equal(cert_time(X509_get0_notAfter(leaf)), T0 + 7200);
	assert_int_equal(cert_time(X509_get0_notBefore(leaf)), T0 + 7000 - 50);
	assert_true((cert_time(X509_get0_notBefore(leaf)) + cert_time(X509_get0_notAfter(leaf))) / 2 > T0 + 7000);
	X509_free(leaf);
	ly_buf_free(&chain);
	ly_buf_free(&csr);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_issue_leaf, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_issue_key_types, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_csr_refusals, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_agent_and_batch, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_leaf_capped_by_ca, fx_setup, fx_teardown),
	};
	ly_log_set_level(LY_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
