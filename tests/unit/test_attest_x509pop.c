/*
 * test_attest_x509pop.c: the server's x509pop attestor (server/attest.h,
 * SPEC §6) over a root and an intermediate made at test time
 * (testutil_x509.h): the chain to the configured CA bundle, validity, key
 * usage, serial and subject rules, DNS SANs, the proof over the nonce, the
 * agent ID and every selector (each checked with ly_selector_check, in
 * order), intermediate anchors, a CA as the leaf, chain input caps, and
 * the configuration's refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "lib/caps.h"
#include "lib/entry.h"
#include "lib/x509pop.h"
#include "server/attest.h"
#include "tests/unit/testutil_x509.h"

#define TD "example.org"

/* ---- helpers ---- */

static bool
has_selector(const struct ly_attest_result *r, const char *type, const char *value)
{
	for (size_t i = 0; i < r->n_selectors; i++) {
		if (strcmp(r->selectors[i].type, type) == 0 && strcmp(r->selectors[i].value, value) == 0)
			return true;
	}
	return false;
}

/* Every selector an attestor makes must be one lib/entry.c accepts, and a node type. */
static void
check_selectors(const struct ly_attest_result *r)
{
	struct ly_error err;
	for (size_t i = 0; i < r->n_selectors; i++) {
		if (ly_selector_check(r->selectors[i].type, r->selectors[i].value, &err) != LY_OK)
			fail_msg("selector %s:%s refused: %s", r->selectors[i].type, r->selectors[i].value, err.msg);
		assert_true(ly_selector_type_is_node(r->selectors[i].type));
		if (i > 0)
			assert_true(ly_selector_cmp(&r->selectors[i - 1], &r->selectors[i]) < 0);
	}
}

static void
sha1_hex(X509 *x, char out[41])
{
	unsigned char md[20];
	unsigned int len = 0;
	assert_int_equal(X509_digest(x, EVP_sha1(), md, &len), 1);
	for (unsigned int i = 0; i < len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- x509pop ---- */

struct pki {
	EVP_PKEY *root_key, *int_key, *leaf_key, *other_key;
	X509 *root, *inter;
	struct ly_buf root_der;
	struct ly_attest_x509pop *cfg;
};

static struct pki pki;

static int
pki_setup(void **state)
{
	memset(&pki, 0, sizeof(pki));
	pki.root_key = tu_key(LY_KEY_EC_P256);
	pki.int_key = tu_key(LY_KEY_EC_P256);
	pki.leaf_key = tu_key(LY_KEY_EC_P256);
	pki.other_key = tu_key(LY_KEY_EC_P256);
	struct tu_spec rs = tu_ca_spec(NULL);
	rs.cn = "x509pop root";
	pki.root = tu_make(&rs, pki.root_key, NULL, NULL);
	struct tu_spec is = tu_ca_spec(NULL);
	is.cn = "x509pop intermediate";
	pki.inter = tu_make(&is, pki.int_key, pki.root, pki.root_key);
	tu_der(pki.root, &pki.root_der);
	assert_int_equal(ly_attest_x509pop_new_der(TD, pki.root_der.data, pki.root_der.len, &pki.cfg, NULL), LY_OK);
	return 0;
}

static int
pki_teardown(void **state)
{
	ly_attest_x509pop_free(pki.cfg);
	EVP_PKEY_free(pki.root_key);
	EVP_PKEY_free(pki.int_key);
	EVP_PKEY_free(pki.leaf_key);
	EVP_PKEY_free(pki.other_key);
	X509_free(pki.root);
	X509_free(pki.inter);
	ly_buf_free(&pki.root_der);
	return 0;
}

static struct tu_spec
node_spec(void)
{
	struct tu_spec s = tu_leaf_spec(NULL);
	s.cn = "node-1";
	s.dns = "node1.example.com";
	s.ku = "digitalSignature";
	s.eku = "clientAuth";
	return s;
}

static X509 *
node_leaf(const struct tu_spec *spec)
{
	return tu_make(spec, pki.leaf_key, pki.inter, pki.int_key);
}

static void
chain2(X509 *leaf, struct ly_buf *out)
{
	X509 *certs[2] = { leaf, pki.inter };
	tu_chain(certs, 2, out);
}

/* challenge, proof by `signer`, verify at `now`. */
static ly_status
run_pop(const struct ly_attest_x509pop *cfg, const struct ly_buf *chain, EVP_PKEY *signer, time_t now,
    struct ly_attest_result *r, struct ly_error *err)
{
	uint8_t nonce[LY_X509POP_NONCE_LEN];
	struct ly_buf sig = LY_BUF_INIT;
	ly_status rc = ly_attest_x509pop_challenge(cfg, chain->data, chain->len, now, nonce, err);
	if (rc != LY_OK)
		return rc;
	assert_int_equal(ly_x509pop_sign(signer, nonce, sizeof(nonce), &sig, NULL), LY_OK);
	rc = ly_attest_x509pop_verify(cfg, chain->data, chain->len, nonce, sig.data, sig.len, now, r, err);
	ly_buf_free(&sig);
	return rc;
}

/* The same chain, verify only (skipping the challenge's early check). */
static ly_status
verify_only(const struct ly_buf *chain, EVP_PKEY *signer, time_t now, struct ly_attest_result *r,
    struct ly_error *err)
{
	uint8_t nonce[LY_X509POP_NONCE_LEN];
	struct ly_buf sig = LY_BUF_INIT;
	assert_int_equal(ly_x509pop_nonce_new(nonce, NULL), LY_OK);
	assert_int_equal(ly_x509pop_sign(signer, nonce, sizeof(nonce), &sig, NULL), LY_OK);
	ly_status rc = ly_attest_x509pop_verify(pki.cfg, chain->data, chain->len, nonce, sig.data, sig.len, now, r, err);
	ly_buf_free(&sig);
	return rc;
}

static void
test_x509pop_good(void **state)
{
	struct tu_spec s = node_spec();
	X509 *leaf = node_leaf(&s);
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	char fp[41], want[128];

	chain2(leaf, &chain);
	if (run_pop(pki.cfg, &chain, pki.leaf_key, TU_NOW, &r, &err) != LY_OK)
		fail_msg("%s", err.msg);
	sha1_hex(leaf, fp);
	snprintf(want, sizeof(want), "spiffe://example.org/lanyard/agent/x509pop/%s", fp);
	assert_string_equal(r.agent_id, want);
	assert_string_equal(r.type, "x509pop");
	check_selectors(&r);
	assert_true(has_selector(&r, "x509pop", "subject:cn:node-1"));
	assert_true(has_selector(&r, "x509pop", "san:dns:node1.example.com"));
	sha1_hex(pki.inter, fp);
	snprintf(want, sizeof(want), "ca:fingerprint:%s", fp);
	assert_true(has_selector(&r, "x509pop", want));
	sha1_hex(pki.root, fp);
	snprintf(want, sizeof(want), "ca:fingerprint:%s", fp);
	assert_true(has_selector(&r, "x509pop", want));
	/* The serial: lower-case hex, no leading zeros. */
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
	char *hex = BN_bn2hex(bn);
	const char *p = hex;
	while (*p == '0' && p[1] != '\0')
		p++;
	snprintf(want, sizeof(want), "serialnumber:%s", p);
	for (char *c = want; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	assert_true(has_selector(&r, "x509pop", want));
	OPENSSL_free(hex);
	BN_free(bn);
	assert_int_equal(r.n_selectors, 5);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);
}

/* The chain may also hold the root; the selectors are those of the verified path either way. */
static void
test_x509pop_chain_with_root(void **state)
{
	struct tu_spec s = node_spec();
	X509 *leaf = node_leaf(&s);
	X509 *certs[3] = { leaf, pki.inter, pki.root };
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	tu_chain(certs, 3, &chain);
	assert_int_equal(run_pop(pki.cfg, &chain, pki.leaf_key, TU_NOW, &r, NULL), LY_OK);
	assert_int_equal(r.n_selectors, 5);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);
}

static void
test_x509pop_rsa_leaf(void **state)
{
	EVP_PKEY *rsa = tu_key(LY_KEY_RSA_2048);
	struct tu_spec s = node_spec();
	X509 *leaf = tu_make(&s, rsa, pki.inter, pki.int_key);
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	chain2(leaf, &chain);
	if (run_pop(pki.cfg, &chain, rsa, TU_NOW, &r, &err) != LY_OK)
		fail_msg("%s", err.msg);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);
	EVP_PKEY_free(rsa);
}

static void
test_x509pop_wrong_nonce(void **state)
{
	struct tu_spec s = node_spec();
	X509 *leaf = node_leaf(&s);
	struct ly_buf chain, sig = LY_BUF_INIT;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	uint8_t nonce[LY_X509POP_NONCE_LEN], other[LY_X509POP_NONCE_LEN];

	chain2(leaf, &chain);
	assert_int_equal(ly_attest_x509pop_challenge(pki.cfg, chain.data, chain.len, TU_NOW, nonce, NULL), LY_OK);
	assert_int_equal(ly_attest_x509pop_challenge(pki.cfg, chain.data, chain.len, TU_NOW, other, NULL), LY_OK);
	assert_memory_not_equal(nonce, other, sizeof(nonce));
	/* A proof over an earlier nonce does not answer this challenge. */
	assert_int_equal(ly_x509pop_sign(pki.leaf_key, other, sizeof(other), &sig, NULL), LY_OK);
	assert_int_equal(ly_attest_x509pop_verify(pki.cfg, chain.data, chain.len, nonce, sig.data, sig.len, TU_NOW, &r,
			     &err),
	    LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "x509pop attestation"));
	assert_null(r.agent_id);
	ly_buf_free(&sig);
	ly_buf_free(&chain);
	X509_free(leaf);
}

static void
test_x509pop_other_key(void **state)
{
	struct tu_spec s = node_spec();
	X509 *leaf = node_leaf(&s);
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	chain2(leaf, &chain);
	assert_int_equal(run_pop(pki.cfg, &chain, pki.other_key, TU_NOW, &r, NULL), LY_E_UNTRUSTED);
	assert_null(r.agent_id);
	ly_buf_free(&chain);
	X509_free(leaf);
}

/* A chain from a CA that is not configured, even one named the same. */
static void
test_x509pop_foreign_ca(void **state)
{
	EVP_PKEY *fk = tu_key(LY_KEY_EC_P256);
	struct tu_spec rs = tu_ca_spec(NULL);
	rs.cn = "x509pop root";
	X509 *froot = tu_make(&rs, fk, NULL, NULL);
	struct tu_spec s = node_spec();
	X509 *leaf = tu_make(&s, pki.leaf_key, froot, fk);
	X509 *certs[2] = { leaf, froot };
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	uint8_t nonce[LY_X509POP_NONCE_LEN];
	tu_chain(certs, 2, &chain);
	assert_int_equal(ly_attest_x509pop_challenge(pki.cfg, chain.data, chain.len, TU_NOW, nonce, &err),
	    LY_E_UNTRUSTED);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_UNTRUSTED);
	assert_null(r.agent_id);
	ly_buf_free(&chain);
	X509_free(leaf);
	X509_free(froot);
	EVP_PKEY_free(fk);
}

static void
test_x509pop_expired(void **state)
{
	struct tu_spec s = node_spec();
	s.not_before = -7200;
	s.not_after = -60;
	X509 *leaf = node_leaf(&s);
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	chain2(leaf, &chain);
	assert_int_equal(run_pop(pki.cfg, &chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_EXPIRED);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_EXPIRED);
	/* The same chain was good while it was valid: `now` is honoured. */
	assert_int_equal(run_pop(pki.cfg, &chain, pki.leaf_key, TU_NOW - 3600, &r, &err), LY_OK);
	ly_attest_result_cleanup(&r);
	/* Not yet valid. */
	assert_int_equal(run_pop(pki.cfg, &chain, pki.leaf_key, TU_NOW - 8000, &r, &err), LY_E_EXPIRED);
	ly_buf_free(&chain);
	X509_free(leaf);
}

static void
test_x509pop_key_usage(void **state)
{
	struct tu_spec s = node_spec();
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;

	s.ku = "keyEncipherment";
	X509 *leaf = node_leaf(&s);
	chain2(leaf, &chain);
	assert_int_equal(run_pop(pki.cfg, &chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "digitalSignature"));
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_INVALID);
	ly_buf_free(&chain);
	X509_free(leaf);

	s.ku = NULL;
	leaf = node_leaf(&s);
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "key usage"));
	assert_null(r.agent_id);
	ly_buf_free(&chain);
	X509_free(leaf);
}

/*
 * A node leaf edited, then signed again under the intermediate: `keep_cn`
 * false empties the subject, `raw_cn` adds a CN without OpenSSL's length
 * and character checks, `set_serial` replaces the serial number.
 */
static X509 *
node_leaf_edit(bool keep_cn, const char *raw_cn, long serial, bool set_serial)
{
	struct tu_spec s = node_spec();
	if (!keep_cn)
		s.cn = NULL;
	X509 *leaf = node_leaf(&s);
	if (raw_cn != NULL)
		assert_true(X509_NAME_add_entry_by_NID(X509_get_subject_name(leaf), NID_commonName, V_ASN1_UTF8STRING,
		    (const unsigned char *)raw_cn, (int)strlen(raw_cn), -1, 0));
	if (set_serial)
		assert_true(ASN1_INTEGER_set(X509_get_serialNumber(leaf), serial));
	assert_true(X509_sign(leaf, pki.int_key, EVP_sha256()) > 0);
	return leaf;
}

static void
test_x509pop_serial_format(void **state)
{
	X509 *leaf = node_leaf_edit(true, NULL, 0x0abc, true);
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, NULL), LY_OK);
	assert_true(has_selector(&r, "x509pop", "serialnumber:abc"));
	check_selectors(&r);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);

	leaf = node_leaf_edit(true, NULL, -5, true);
	chain2(leaf, &chain);
	struct ly_error err;
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "negative"));
	ly_buf_free(&chain);
	X509_free(leaf);
}

static void
test_x509pop_subject_rules(void **state)
{
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;

	/* Two CNs are ambiguous. */
	X509 *leaf = node_leaf_edit(true, "node-2", 0, false);
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "more than one CN"));
	ly_buf_free(&chain);
	X509_free(leaf);

	/* A CN that cannot be a selector is refused, not dropped: over 64 characters, a control character. */
	char cn[66];
	memset(cn, 'c', 65);
	cn[65] = '\0';
	const char *bad_cns[] = { cn, "bad\x01cn" };
	for (size_t i = 0; i < 2; i++) {
		leaf = node_leaf_edit(false, bad_cns[i], 0, false);
		chain2(leaf, &chain);
		assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_INVALID);
		assert_non_null(strstr(err.msg, "CN"));
		ly_buf_free(&chain);
		X509_free(leaf);
	}
	/* Exactly 64 characters is a good CN. */
	cn[64] = '\0';
	leaf = node_leaf_edit(false, cn, 0, false);
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_OK);
	check_selectors(&r);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);
	/* No subject at all: no CN selector, the rest as usual. */
	struct tu_spec s = node_spec();
	s.cn = NULL;
	leaf = node_leaf(&s);
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_OK);
	assert_int_equal(r.n_selectors, 4);
	check_selectors(&r);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);
}

static void
test_x509pop_dns_sans(void **state)
{
	struct tu_spec s = node_spec();
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;

	s.dns = "a.example.com,DNS:b.example.com,DNS:a.example.com";
	X509 *leaf = node_leaf(&s);
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_OK);
	assert_true(has_selector(&r, "x509pop", "san:dns:a.example.com"));
	assert_true(has_selector(&r, "x509pop", "san:dns:b.example.com"));
	assert_int_equal(r.n_selectors, 6); /* cn, 2 CAs, serial, 2 distinct names */
	check_selectors(&r);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);

	s.dns = "bad_name.example.com";
	leaf = node_leaf(&s);
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "DNS SAN"));
	ly_buf_free(&chain);
	X509_free(leaf);

	/* More DNS SANs than a selector set can hold. */
	char many[LY_DNS_NAMES_MAX * 24];
	size_t o = 0;
	for (int i = 0; i <= LY_DNS_NAMES_MAX; i++)
		o += (size_t)snprintf(many + o, sizeof(many) - o, "%sn%d.example", i ? ",DNS:" : "", i);
	s.dns = many;
	leaf = node_leaf(&s);
	chain2(leaf, &chain);
	assert_int_equal(verify_only(&chain, pki.leaf_key, TU_NOW, &r, &err), LY_E_LIMIT);
	ly_buf_free(&chain);
	X509_free(leaf);
}

/* An intermediate configured alone is an anchor (as with SPIRE): one fingerprint. */
static void
test_x509pop_intermediate_anchor(void **state)
{
	struct ly_attest_x509pop *cfg = NULL;
	struct ly_buf inter = LY_BUF_INIT, chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	char fp[41], want[64];
	tu_der(pki.inter, &inter);
	assert_int_equal(ly_attest_x509pop_new_der(TD, inter.data, inter.len, &cfg, NULL), LY_OK);
	struct tu_spec s = node_spec();
	X509 *leaf = node_leaf(&s);
	chain2(leaf, &chain);
	assert_int_equal(run_pop(cfg, &chain, pki.leaf_key, TU_NOW, &r, NULL), LY_OK);
	sha1_hex(pki.inter, fp);
	snprintf(want, sizeof(want), "ca:fingerprint:%s", fp);
	assert_true(has_selector(&r, "x509pop", want));
	assert_int_equal(r.n_selectors, 4);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	ly_buf_free(&inter);
	X509_free(leaf);
	ly_attest_x509pop_free(cfg);
}

/* A configured CA presented as the leaf proves no agent identity. */
static void
test_x509pop_ca_as_leaf(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct tu_spec cs = tu_ca_spec(NULL);
	cs.ku = "digitalSignature,keyCertSign";
	X509 *ca = tu_make(&cs, k, NULL, NULL);
	struct ly_buf der = LY_BUF_INIT;
	struct ly_attest_x509pop *cfg = NULL;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	tu_der(ca, &der);
	assert_int_equal(ly_attest_x509pop_new_der(TD, der.data, der.len, &cfg, NULL), LY_OK);
	assert_int_equal(run_pop(cfg, &der, k, TU_NOW, &r, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "itself a configured CA"));
	ly_attest_x509pop_free(cfg);
	ly_buf_free(&der);
	X509_free(ca);
	EVP_PKEY_free(k);
}

static void
test_x509pop_chain_input(void **state)
{
	struct tu_spec s = node_spec();
	X509 *leaf = node_leaf(&s);
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	uint8_t nonce[LY_X509POP_NONCE_LEN] = { 0 };
	uint8_t sig[8] = { 0 };

	chain2(leaf, &chain);
	/* Trailing garbage after the last certificate. */
	struct ly_buf longer = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&longer, chain.data, chain.len, NULL), LY_OK);
	assert_int_equal(ly_buf_append(&longer, "\x00", 1, 1 << 20, NULL), LY_OK);
	assert_int_equal(ly_attest_x509pop_challenge(pki.cfg, longer.data, longer.len, TU_NOW, nonce, &err),
	    LY_E_INVALID);
	ly_buf_free(&longer);
	/* Empty and garbage. */
	assert_int_equal(ly_attest_x509pop_challenge(pki.cfg, NULL, 0, TU_NOW, nonce, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_x509pop_challenge(pki.cfg, (const uint8_t *)"junk", 4, TU_NOW, nonce, &err),
	    LY_E_INVALID);
	/* More certificates than the verify depth. */
	X509 *many[LY_VERIFY_DEPTH_MAX + 1];
	for (int i = 0; i <= LY_VERIFY_DEPTH_MAX; i++)
		many[i] = i == 0 ? leaf : pki.inter;
	struct ly_buf deep;
	tu_chain(many, LY_VERIFY_DEPTH_MAX + 1, &deep);
	assert_int_equal(ly_attest_x509pop_challenge(pki.cfg, deep.data, deep.len, TU_NOW, nonce, &err), LY_E_LIMIT);
	ly_buf_free(&deep);
	/* Proof signature: empty, over the cap. */
	assert_int_equal(ly_attest_x509pop_verify(pki.cfg, chain.data, chain.len, nonce, sig, 0, TU_NOW, &r, &err),
	    LY_E_INVALID);
	assert_int_equal(ly_attest_x509pop_verify(pki.cfg, chain.data, chain.len, nonce, sig, LY_X509POP_SIG_MAX + 1,
			     TU_NOW, &r, &err),
	    LY_E_LIMIT);
	assert_int_equal(ly_attest_x509pop_verify(pki.cfg, chain.data, chain.len, nonce, sig, sizeof(sig), TU_NOW, &r,
			     &err),
	    LY_E_UNTRUSTED);
	assert_null(r.agent_id);
	ly_buf_free(&chain);
	X509_free(leaf);
}

static void
test_x509pop_config(void **state)
{
	struct ly_attest_x509pop *cfg = NULL;
	struct ly_error err;
	char dir[] = "/tmp/lanyard-test-x509pop-XXXXXX";
	char path[96];

	/* A PEM file with the root: the same as the DER configuration. */
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ca.pem", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, pki.root), 1);
	fclose(f);
	assert_int_equal(ly_attest_x509pop_new(TD, path, &cfg, &err), LY_OK);
	struct tu_spec s = node_spec();
	X509 *leaf = node_leaf(&s);
	struct ly_buf chain;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	chain2(leaf, &chain);
	assert_int_equal(run_pop(cfg, &chain, pki.leaf_key, TU_NOW, &r, NULL), LY_OK);
	ly_attest_result_cleanup(&r);
	ly_buf_free(&chain);
	X509_free(leaf);
	ly_attest_x509pop_free(cfg);
	cfg = NULL;

	/* A file that is not there, a file with no certificate. */
	assert_int_equal(ly_attest_x509pop_new(TD, "/nonexistent/ca.pem", &cfg, &err), LY_E_IO);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("not a certificate\n", f);
	fclose(f);
	assert_int_not_equal(ly_attest_x509pop_new(TD, path, &cfg, &err), LY_OK);
	assert_null(cfg);
	assert_int_equal(ly_attest_x509pop_new(TD, "", &cfg, &err), LY_E_INVALID);
	unlink(path);
	rmdir(dir);

	/* A bundle certificate that is not a CA. */
	s = node_spec();
	leaf = node_leaf(&s);
	struct ly_buf der = LY_BUF_INIT;
	tu_der(leaf, &der);
	assert_int_equal(ly_attest_x509pop_new_der(TD, der.data, der.len, &cfg, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not a CA"));
	ly_buf_free(&der);
	X509_free(leaf);

	/* A bad trust domain. */
	assert_int_equal(ly_attest_x509pop_new_der("Bad TD", pki.root_der.data, pki.root_der.len, &cfg, &err),
	    LY_E_INVALID);
	assert_null(cfg);
}

int
main(void)
{
	const struct CMUnitTest pop[] = {
		cmocka_unit_test(test_x509pop_good),
		cmocka_unit_test(test_x509pop_chain_with_root),
		cmocka_unit_test(test_x509pop_rsa_leaf),
		cmocka_unit_test(test_x509pop_wrong_nonce),
		cmocka_unit_test(test_x509pop_other_key),
		cmocka_unit_test(test_x509pop_foreign_ca),
		cmocka_unit_test(test_x509pop_expired),
		cmocka_unit_test(test_x509pop_key_usage),
		cmocka_unit_test(test_x509pop_serial_format),
		cmocka_unit_test(test_x509pop_subject_rules),
		cmocka_unit_test(test_x509pop_dns_sans),
		cmocka_unit_test(test_x509pop_intermediate_anchor),
		cmocka_unit_test(test_x509pop_ca_as_leaf),
		cmocka_unit_test(test_x509pop_chain_input),
		cmocka_unit_test(test_x509pop_config),
	};
	return cmocka_run_group_tests_name("x509pop", pop, pki_setup, pki_teardown);
}
