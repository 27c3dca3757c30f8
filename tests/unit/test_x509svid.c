/*
 * test_x509svid.c: X.509-SVID rules (X509-SVID standard, SPEC §1) and
 * chain verification. Every rule has a certificate made to break it,
 * beside a baseline that passes, so removing a rule fails a test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lib/caps.h"
#include "lib/der.h"
#include "lib/x509svid.h"
#include "testutil_x509.h"

#define TD "example.org"
#define LEAF_ID "spiffe://example.org/ns/prod/sa/web"

struct fixture {
	struct tu_pki pki;
	X509_STORE *store;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_pki_init(&f->pki);
	assert_int_equal(ly_x509_store_new(f->pki.root_der.data, f->pki.root_der.len, &f->store, NULL), LY_OK);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	X509_STORE_free(f->store);
	tu_pki_free(&f->pki);
	free(f);
	return 0;
}

/* Verifies `chain` at TU_NOW; expects `want` and `msg` (if any) in the error. */
static void
expect_verify(struct fixture *f, const struct ly_buf *chain, ly_status want, const char *msg)
{
	struct ly_error err;
	struct ly_spiffe_id id;
	ly_error_clear(&err);
	ly_status rc = ly_x509svid_verify(chain->data, chain->len, f->store, TD, TU_NOW, &id, &err);
	if (rc != want)
		fail_msg("want %s, got %s: %s", ly_status_str(want), ly_status_str(rc), err.msg);
	if (msg != NULL && strstr(err.msg, msg) == NULL)
		fail_msg("want \"%s\" in \"%s\"", msg, err.msg);
	if (rc == LY_OK)
		assert_true(ly_spiffe_id_member_of(&id, TD));
}

/* A leaf made from `spec` under the intermediate, verified as leaf + intermediate. */
static void
expect_leaf(struct fixture *f, const struct tu_spec *spec, ly_status want, const char *msg)
{
	struct ly_buf chain = LY_BUF_INIT;
	tu_pki_chain(&f->pki, spec, &chain);
	expect_verify(f, &chain, want, msg);
	ly_buf_free(&chain);
}

/* A leaf under an intermediate made from `ispec`. */
static void
expect_intermediate(struct fixture *f, const struct tu_spec *ispec, ly_status want, const char *msg)
{
	EVP_PKEY *ikey = tu_key(LY_KEY_EC_P256);
	X509 *inter = tu_make(ispec, ikey, f->pki.root, f->pki.root_key);
	struct tu_spec ls = tu_leaf_spec(LEAF_ID);
	X509 *leaf = tu_make(&ls, f->pki.leaf_key, inter, ikey);
	X509 *certs[2] = { leaf, inter };
	struct ly_buf chain = LY_BUF_INIT;
	tu_chain(certs, 2, &chain);
	expect_verify(f, &chain, want, msg);
	ly_buf_free(&chain);
	X509_free(leaf);
	X509_free(inter);
	EVP_PKEY_free(ikey);
}

static void
test_valid_chain(void **state)
{
	struct fixture *f = *state;
	struct tu_spec ls = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	tu_pki_chain(&f->pki, &ls, &chain);

	struct ly_x509svid_info info;
	struct ly_error err;
	assert_int_equal(ly_x509svid_verify_ex(chain.data, chain.len, f->store, TD, TU_NOW, f->pki.leaf_key, &info,
	    &err), LY_OK);
	assert_string_equal(info.id.id, LEAF_ID);
	assert_int_equal(info.not_before, TU_NOW - 3600);
	assert_int_equal(info.not_after, TU_NOW + 3600);
	assert_int_equal(info.chain_not_after, TU_NOW + 3600);

	struct ly_spiffe_id id;
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len, f->store, TD, TU_NOW, &id, NULL), LY_OK);
	assert_string_equal(id.id, LEAF_ID);
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len, f->store, TD, TU_NOW, NULL, NULL), LY_OK);

	/* The holder's check: the leaf certifies its key, not another. */
	EVP_PKEY *other = tu_key(LY_KEY_EC_P256);
	assert_int_equal(ly_x509svid_verify_ex(chain.data, chain.len, f->store, TD, TU_NOW, other, &info, &err),
	    LY_E_INVALID);
	assert_non_null(strstr(err.msg, "expected key"));
	EVP_PKEY_free(other);

	/* The `now` given is the time verified at. */
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len, f->store, TD, TU_NOW + 3601, NULL, &err),
	    LY_E_EXPIRED);
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len, f->store, TD, TU_NOW - 3601, NULL, &err),
	    LY_E_EXPIRED);
	ly_buf_free(&chain);
}

/* Shapes of a valid chain: the anchor included, or a leaf straight under the root. */
static void
test_valid_shapes(void **state)
{
	struct fixture *f = *state;
	struct tu_spec ls = tu_leaf_spec(LEAF_ID);
	X509 *leaf = tu_make(&ls, f->pki.leaf_key, f->pki.inter, f->pki.int_key);
	X509 *with_root[3] = { leaf, f->pki.inter, f->pki.root };
	struct ly_buf chain = LY_BUF_INIT;
	tu_chain(with_root, 3, &chain);
	expect_verify(f, &chain, LY_OK, NULL);
	ly_buf_free(&chain);
	X509_free(leaf);

	leaf = tu_make(&ls, f->pki.leaf_key, f->pki.root, f->pki.root_key);
	tu_chain(&leaf, 1, &chain);
	expect_verify(f, &chain, LY_OK, NULL);
	ly_buf_free(&chain);
	X509_free(leaf);

	/* Optional parts of a leaf: no EKU, no basic constraints, DNS SANs, RSA and P-384 keys. */
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	s.eku = NULL;
	expect_leaf(f, &s, LY_OK, NULL);
	s = tu_leaf_spec(LEAF_ID);
	s.bc = TU_BC_ABSENT;
	expect_leaf(f, &s, LY_OK, NULL);
	s = tu_leaf_spec(LEAF_ID);
	s.dns = "web.example.org";
	s.ku = "digitalSignature";
	expect_leaf(f, &s, LY_OK, NULL);
	s = tu_leaf_spec(LEAF_ID);
	s.cn = NULL;
	s.san_critical = true;
	expect_leaf(f, &s, LY_OK, NULL);
}

static void
test_leaf_san_rules(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s;

	s = tu_leaf_spec(NULL);
	s.dns = "web.example.org";
	expect_leaf(f, &s, LY_E_INVALID, "certificate 0 (leaf): no URI SAN");
	s = tu_leaf_spec(NULL);
	expect_leaf(f, &s, LY_E_INVALID, "no URI SAN");
	s = tu_leaf_spec(LEAF_ID);
	s.uri2 = "spiffe://example.org/other";
	expect_leaf(f, &s, LY_E_INVALID, "2 URI SANs");
	s = tu_leaf_spec("https://example.org/web");
	expect_leaf(f, &s, LY_E_INVALID, "not a valid SPIFFE ID");
	s = tu_leaf_spec("spiffe://example.org/web/");
	expect_leaf(f, &s, LY_E_INVALID, "not a valid SPIFFE ID");
	s = tu_leaf_spec("spiffe://example.org");
	expect_leaf(f, &s, LY_E_INVALID, "has no path");
	s = tu_leaf_spec(LEAF_ID);
	s.v1 = true;
	expect_leaf(f, &s, LY_E_INVALID, "not an X.509 version 3");
	s = tu_leaf_spec(LEAF_ID);
	s.dup_san = true;
	expect_leaf(f, &s, LY_E_INVALID, "duplicated extension");
	/* X509-SVID §3.1: no subject needs a critical SAN. */
	s = tu_leaf_spec(LEAF_ID);
	s.cn = NULL;
	expect_leaf(f, &s, LY_E_INVALID, "non-critical SAN");
}

static void
test_leaf_ca_and_key_usage_rules(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s;

	s = tu_leaf_spec(LEAF_ID);
	s.bc = TU_BC_TRUE;
	expect_leaf(f, &s, LY_E_INVALID, "certificate 0 (leaf): basic constraints cA is true");
	s = tu_leaf_spec(LEAF_ID);
	s.ku = NULL;
	expect_leaf(f, &s, LY_E_INVALID, "no key usage");
	s = tu_leaf_spec(LEAF_ID);
	s.ku_noncritical = true;
	expect_leaf(f, &s, LY_E_INVALID, "certificate 0 (leaf): key usage not critical");
	s = tu_leaf_spec(LEAF_ID);
	s.ku = "keyEncipherment,keyAgreement";
	expect_leaf(f, &s, LY_E_INVALID, "lacks digitalSignature");
	s = tu_leaf_spec(LEAF_ID);
	s.ku = "digitalSignature,keyCertSign";
	expect_leaf(f, &s, LY_E_INVALID, "has keyCertSign");
	s = tu_leaf_spec(LEAF_ID);
	s.ku = "digitalSignature,cRLSign";
	expect_leaf(f, &s, LY_E_INVALID, "has cRLSign");
}

static void
test_leaf_eku_rules(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s;

	s = tu_leaf_spec(LEAF_ID);
	s.eku = "serverAuth";
	expect_leaf(f, &s, LY_E_INVALID, "serverAuth and clientAuth");
	s = tu_leaf_spec(LEAF_ID);
	s.eku = "clientAuth";
	expect_leaf(f, &s, LY_E_INVALID, "serverAuth and clientAuth");
	s = tu_leaf_spec(LEAF_ID);
	s.eku = "codeSigning";
	expect_leaf(f, &s, LY_E_INVALID, "serverAuth and clientAuth");
	s = tu_leaf_spec(LEAF_ID);
	s.eku = "serverAuth,clientAuth,codeSigning";
	expect_leaf(f, &s, LY_OK, NULL);
}

static void
test_leaf_key_rule(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	EVP_PKEY *weak = tu_rsa_key(1024);
	X509 *leaf = tu_make(&s, weak, f->pki.inter, f->pki.int_key);
	X509 *certs[2] = { leaf, f->pki.inter };
	struct ly_buf chain = LY_BUF_INIT;
	tu_chain(certs, 2, &chain);
	expect_verify(f, &chain, LY_E_UNSUPPORTED, "RSA key of 1024 bits");
	ly_buf_free(&chain);
	X509_free(leaf);
	EVP_PKEY_free(weak);
}

static void
test_trust_domain_rule(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec("spiffe://other.org/ns/prod/sa/web");
	expect_leaf(f, &s, LY_E_UNTRUSTED, "not in trust domain example.org");
	/* A prefix of the trust domain is not the trust domain. */
	s = tu_leaf_spec("spiffe://example.org.evil/web");
	expect_leaf(f, &s, LY_E_UNTRUSTED, "not in trust domain");
}

static void
test_signing_rules(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s;

	s = tu_ca_spec("spiffe://example.org");
	expect_intermediate(f, &s, LY_OK, NULL);
	s = tu_ca_spec(NULL); /* the SPIFFE ID of a signing certificate is optional */
	expect_intermediate(f, &s, LY_OK, NULL);

	s = tu_ca_spec("spiffe://example.org");
	s.bc = TU_BC_FALSE;
	expect_intermediate(f, &s, LY_E_INVALID, "certificate 1: not a CA");
	s = tu_ca_spec("spiffe://example.org");
	s.bc = TU_BC_ABSENT;
	expect_intermediate(f, &s, LY_E_INVALID, "certificate 1: not a CA");
	s = tu_ca_spec("spiffe://example.org");
	s.ku = "cRLSign,digitalSignature";
	expect_intermediate(f, &s, LY_E_INVALID, "certificate 1: key usage lacks keyCertSign");
	s = tu_ca_spec("spiffe://example.org");
	s.ku = NULL;
	expect_intermediate(f, &s, LY_E_INVALID, "lacks keyCertSign");
	s = tu_ca_spec("spiffe://example.org/intermediate");
	expect_intermediate(f, &s, LY_E_INVALID, "has a path");
	s = tu_ca_spec("https://ca.example.org");
	expect_intermediate(f, &s, LY_E_INVALID, "not a valid SPIFFE ID");
	s = tu_ca_spec("spiffe://example.org");
	s.v1 = true;
	expect_intermediate(f, &s, LY_E_INVALID, "certificate 1: not an X.509 version 3");
	s = tu_ca_spec("spiffe://example.org");
	s.uri2 = "spiffe://other.org";
	expect_intermediate(f, &s, LY_E_INVALID, "2 URI SANs");
}

/* What OpenSSL's path validation must catch, with the certificate named. */
static void
test_chain_rules(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s;

	s = tu_leaf_spec(LEAF_ID);
	s.not_after = -1;
	expect_leaf(f, &s, LY_E_EXPIRED, "chain: certificate 0: certificate has expired");
	s = tu_leaf_spec(LEAF_ID);
	s.not_before = 60;
	expect_leaf(f, &s, LY_E_EXPIRED, "certificate is not yet valid");

	s = tu_ca_spec("spiffe://example.org");
	s.not_after = -1;
	expect_intermediate(f, &s, LY_E_EXPIRED, "chain: certificate 1: certificate has expired");

	/* X509_V_FLAG_X509_STRICT is on: a leaf without an authority key ID is refused. */
	s = tu_leaf_spec(LEAF_ID);
	s.no_akid = true;
	expect_leaf(f, &s, LY_E_UNTRUSTED, "Authority Key Identifier");

	/* SHA-1 signatures are below the security level. */
	s = tu_leaf_spec(LEAF_ID);
	s.md = EVP_sha1();
	expect_leaf(f, &s, LY_E_UNTRUSTED, "chain: certificate 0");
}

static void
test_foreign_ca(void **state)
{
	struct fixture *f = *state;
	struct tu_pki other;
	tu_pki_init(&other);
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	/* Same names, same trust domain, another root. */
	tu_pki_chain(&other, &s, &chain);
	expect_verify(f, &chain, LY_E_UNTRUSTED, "chain: certificate 1");
	ly_buf_free(&chain);

	/* The foreign intermediate with our leaf key signed by our intermediate: the wrong issuer key. */
	X509 *leaf = tu_make(&s, f->pki.leaf_key, other.inter, f->pki.int_key);
	X509 *certs[2] = { leaf, other.inter };
	tu_chain(certs, 2, &chain);
	expect_verify(f, &chain, LY_E_UNTRUSTED, "chain:");
	ly_buf_free(&chain);
	X509_free(leaf);

	/* A chain that leaves out the intermediate. */
	leaf = tu_make(&s, f->pki.leaf_key, f->pki.inter, f->pki.int_key);
	tu_chain(&leaf, 1, &chain);
	expect_verify(f, &chain, LY_E_UNTRUSTED, "unable to get local issuer certificate");
	ly_buf_free(&chain);
	X509_free(leaf);
	tu_pki_free(&other);
}

static void
test_signature_tampered(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	tu_pki_chain(&f->pki, &s, &chain);
	/* Change a byte of the leaf's SPIFFE ID ("web" -> "wec"), keeping the signature. */
	uint8_t *w = memmem(chain.data, chain.len, "/sa/web", 7);
	assert_non_null(w);
	w[6] = 'c';
	expect_verify(f, &chain, LY_E_UNTRUSTED, "signature failure");
	ly_buf_free(&chain);
}

static void
test_path_length(void **state)
{
	struct fixture *f = *state;
	/* A root with pathlen 0 cannot have an intermediate under it. */
	EVP_PKEY *rkey = tu_key(LY_KEY_EC_P256), *ikey = tu_key(LY_KEY_EC_P256);
	struct tu_spec rs = tu_ca_spec("spiffe://example.org");
	rs.pathlen = 0;
	X509 *root = tu_make(&rs, rkey, NULL, NULL);
	struct tu_spec is = tu_ca_spec("spiffe://example.org");
	/* A different name: a self-issued intermediate would not count (RFC 5280 4.2.1.9). */
	is.cn = "intermediate";
	X509 *inter = tu_make(&is, ikey, root, rkey);
	struct tu_spec ls = tu_leaf_spec(LEAF_ID);
	X509 *leaf = tu_make(&ls, f->pki.leaf_key, inter, ikey);

	struct ly_buf root_der = LY_BUF_INIT, chain = LY_BUF_INIT;
	tu_der(root, &root_der);
	X509_STORE *store = NULL;
	assert_int_equal(ly_x509_store_new(root_der.data, root_der.len, &store, NULL), LY_OK);
	X509 *certs[2] = { leaf, inter };
	tu_chain(certs, 2, &chain);
	struct ly_error err;
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len, store, TD, TU_NOW, NULL, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "path length constraint exceeded"));
	/* The same leaf straight under that root is fine. */
	X509 *leaf2 = tu_make(&ls, f->pki.leaf_key, root, rkey);
	ly_buf_free(&chain);
	tu_chain(&leaf2, 1, &chain);
	if (ly_x509svid_verify(chain.data, chain.len, store, TD, TU_NOW, NULL, &err) != LY_OK)
		fail_msg("%s", err.msg);

	X509_free(leaf2);
	ly_buf_free(&chain);
	ly_buf_free(&root_der);
	X509_STORE_free(store);
	X509_free(leaf);
	X509_free(inter);
	X509_free(root);
	EVP_PKEY_free(ikey);
	EVP_PKEY_free(rkey);
}

/*
 * Depth: leaf + n intermediates under the fixture root. LY_VERIFY_DEPTH_MAX
 * counts leaf to anchor, so LY_VERIFY_DEPTH_MAX - 2 intermediates pass and
 * one more fails in path validation; a chain of more than
 * LY_VERIFY_DEPTH_MAX certificates is refused before parsing.
 */
static void
build_deep_chain(struct fixture *f, int n, bool with_root, struct ly_buf *out)
{
	X509 *certs[LY_VERIFY_DEPTH_MAX + 4];
	EVP_PKEY *keys[LY_VERIFY_DEPTH_MAX + 4];
	assert_true(n + 2 <= LY_VERIFY_DEPTH_MAX + 4);
	X509 *issuer = f->pki.root;
	EVP_PKEY *issuer_key = f->pki.root_key;
	/* certs[1..n] intermediates, top one first built. */
	for (int i = n; i >= 1; i--) {
		keys[i] = tu_key(LY_KEY_EC_P256);
		struct tu_spec s = tu_ca_spec("spiffe://example.org");
		certs[i] = tu_make(&s, keys[i], issuer, issuer_key);
		issuer = certs[i];
		issuer_key = keys[i];
	}
	struct tu_spec ls = tu_leaf_spec(LEAF_ID);
	certs[0] = tu_make(&ls, f->pki.leaf_key, issuer, issuer_key);
	size_t count = (size_t)n + 1;
	if (with_root)
		certs[count++] = f->pki.root;
	tu_chain(certs, count, out);
	for (int i = 0; i <= n; i++)
		X509_free(certs[i]);
	for (int i = 1; i <= n; i++)
		EVP_PKEY_free(keys[i]);
}

static void
test_depth(void **state)
{
	struct fixture *f = *state;
	struct ly_buf chain = LY_BUF_INIT;

	build_deep_chain(f, LY_VERIFY_DEPTH_MAX - 2, false, &chain);
	expect_verify(f, &chain, LY_OK, NULL);
	ly_buf_free(&chain);
	/* The same with the root in the chain: LY_VERIFY_DEPTH_MAX certificates. */
	build_deep_chain(f, LY_VERIFY_DEPTH_MAX - 2, true, &chain);
	expect_verify(f, &chain, LY_OK, NULL);
	ly_buf_free(&chain);

	build_deep_chain(f, LY_VERIFY_DEPTH_MAX - 1, false, &chain);
	expect_verify(f, &chain, LY_E_LIMIT, "certificate chain too long");
	ly_buf_free(&chain);

	build_deep_chain(f, LY_VERIFY_DEPTH_MAX, false, &chain);
	expect_verify(f, &chain, LY_E_LIMIT, "more than 8 certificates");
	/* Refused by count before parsing: a 9th element that is not a certificate changes nothing. */
	struct ly_der_span spans[LY_VERIFY_DEPTH_MAX + 1];
	size_t count = 0;
	assert_int_equal(ly_der_split(chain.data, chain.len, LY_VERIFY_DEPTH_MAX + 1, LY_CHAIN_DER_MAX, spans, &count,
	    NULL), LY_OK);
	chain.len = spans[count - 1].off;
	assert_int_equal(ly_buf_append(&chain, "\x30\x03\x02\x01\x00", 5, (size_t)1 << 20, NULL), LY_OK);
	expect_verify(f, &chain, LY_E_LIMIT, "more than 8 certificates");
	ly_buf_free(&chain);

	/* The parsed-object entry point has the same cap. */
	STACK_OF(X509) *inter = sk_X509_new_null();
	assert_non_null(inter);
	for (int i = 0; i < LY_VERIFY_DEPTH_MAX; i++)
		assert_true(sk_X509_push(inter, f->pki.inter) > 0);
	struct ly_error err;
	assert_int_equal(ly_x509svid_verify_x509(f->pki.inter, inter, f->store, TD, TU_NOW, NULL, NULL, &err), LY_E_LIMIT);
	sk_X509_free(inter);
}

static void
test_framing(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	tu_pki_chain(&f->pki, &s, &chain);
	assert_int_equal(ly_buf_append(&chain, "\x00", 1, (size_t)1 << 20, NULL), LY_OK);
	expect_verify(f, &chain, LY_E_INVALID, "chain: certificate 2");
	assert_int_equal(ly_x509svid_verify(chain.data, 0, f->store, TD, TU_NOW, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len - 1, NULL, TD, TU_NOW, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len - 1, f->store, NULL, TU_NOW, NULL, &err),
	    LY_E_INVALID);
	ly_buf_free(&chain);
}

static void
test_store_rules(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	X509_STORE *store = NULL;

	assert_int_equal(ly_x509_store_new(NULL, 0, &store, &err), LY_E_INVALID);
	assert_int_equal(ly_x509_store_new((const uint8_t *)"\x30\x03\x02\x01\x00", 5, &store, &err), LY_E_INVALID);
	assert_null(store);

	/* A bundle of two roots; a leaf is not an authority; nor a CA without keyCertSign. */
	struct tu_pki other;
	tu_pki_init(&other);
	struct tu_spec ls = tu_leaf_spec(LEAF_ID);
	X509 *leaf = tu_make(&ls, f->pki.leaf_key, f->pki.inter, f->pki.int_key);
	struct tu_spec bad = tu_ca_spec("spiffe://example.org");
	bad.ku = "digitalSignature";
	X509 *noks = tu_make(&bad, other.int_key, NULL, NULL);
	struct ly_buf bundle = LY_BUF_INIT;
	X509 *two[3] = { f->pki.root, other.root, leaf };
	tu_chain(two, 2, &bundle);
	assert_int_equal(ly_x509_store_new(bundle.data, bundle.len, &store, NULL), LY_OK);
	/* Both roots are trusted. */
	struct ly_buf chain = LY_BUF_INIT;
	tu_pki_chain(&other, &ls, &chain);
	assert_int_equal(ly_x509svid_verify(chain.data, chain.len, store, TD, TU_NOW, NULL, NULL), LY_OK);
	ly_buf_free(&chain);
	X509_STORE_free(store);
	store = NULL;
	ly_buf_free(&bundle);

	tu_chain(two, 3, &bundle);
	assert_int_equal(ly_x509_store_new(bundle.data, bundle.len, &store, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "authority 2: not a CA"));
	ly_buf_free(&bundle);
	tu_chain(&noks, 1, &bundle);
	assert_int_equal(ly_x509_store_new(bundle.data, bundle.len, &store, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "keyCertSign"));
	assert_null(store);
	ly_buf_free(&bundle);

	X509_free(noks);
	X509_free(leaf);
	tu_pki_free(&other);
}

/* The check functions on their own, and on the wrong kind of certificate. */
static void
test_check_functions(void **state)
{
	struct fixture *f = *state;
	struct ly_spiffe_id id;
	struct tu_spec ls = tu_leaf_spec(LEAF_ID);
	X509 *leaf = tu_make(&ls, f->pki.leaf_key, f->pki.inter, f->pki.int_key);
	assert_int_equal(ly_x509svid_check_leaf(leaf, &id, NULL), LY_OK);
	assert_string_equal(id.id, LEAF_ID);
	assert_int_equal(ly_x509svid_check_signing(leaf, NULL), LY_E_INVALID);
	assert_int_equal(ly_x509svid_check_signing(f->pki.inter, NULL), LY_OK);
	assert_int_equal(ly_x509svid_check_leaf(f->pki.inter, &id, NULL), LY_E_INVALID);
	assert_int_equal(ly_x509svid_check_leaf(NULL, &id, NULL), LY_E_INVALID);

	/* The parsed-object entry point gives the same answer. */
	STACK_OF(X509) *inter = sk_X509_new_null();
	assert_non_null(inter);
	assert_true(sk_X509_push(inter, f->pki.inter) > 0);
	struct ly_x509svid_info info;
	assert_int_equal(ly_x509svid_verify_x509(leaf, inter, f->store, TD, TU_NOW, NULL, &info, NULL), LY_OK);
	assert_int_equal(info.chain_not_after, TU_NOW + 3600);
	assert_int_equal(ly_x509svid_verify_x509(leaf, NULL, f->store, TD, TU_NOW, NULL, &info, NULL),
	    LY_E_UNTRUSTED);
	sk_X509_free(inter);
	X509_free(leaf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_chain),
		cmocka_unit_test(test_valid_shapes),
		cmocka_unit_test(test_leaf_san_rules),
		cmocka_unit_test(test_leaf_ca_and_key_usage_rules),
		cmocka_unit_test(test_leaf_eku_rules),
		cmocka_unit_test(test_leaf_key_rule),
		cmocka_unit_test(test_trust_domain_rule),
		cmocka_unit_test(test_signing_rules),
		cmocka_unit_test(test_chain_rules),
		cmocka_unit_test(test_foreign_ca),
		cmocka_unit_test(test_signature_tampered),
		cmocka_unit_test(test_path_length),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_store_rules),
		cmocka_unit_test(test_check_functions),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
