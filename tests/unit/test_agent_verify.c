/*
 * test_agent_verify.c: what the agent checks before an SVID enters its
 * cache (SPEC §4): a baseline that passes, and for each rule an SVID made
 * to break it (tampered chain, wrong SAN, two SANs, key mismatch, expired,
 * not yet valid, foreign CA, wrong trust domain, CA flags), each refused
 * with its own reason and counted; one trust store per bundle version;
 * JWT-SVIDs; re-checking the cache after a bundle change.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agent/verify.h"
#include "lib/der.h"
#include "lib/jwt.h"
#include "lib/log.h"
#include "testutil_agent.h"

#define LEAF_ID "spiffe://example.org/ns/prod/sa/web"
#define NOW ((int64_t)TU_NOW)

struct fixture {
	struct tu_pki pki;
	struct ly_bundle *bundle;
	struct ly_verifier *v;
};

static struct ly_bundle *
bundle_of(const struct ly_buf *root_der, uint64_t seq)
{
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, root_der->data, root_der->len, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, seq, NULL), LY_OK);
	return b;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_pki_init(&f->pki);
	f->bundle = bundle_of(&f->pki.root_der, 1);
	assert_int_equal(ly_verifier_new(TA_TD, &f->v, NULL), LY_OK);
	bool rebuilt = false;
	assert_int_equal(ly_verifier_set_bundle(f->v, f->bundle, &rebuilt, NULL), LY_OK);
	assert_true(rebuilt);
	ly_log_set_level(LY_LOG_ERROR);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	ly_verifier_free(f->v);
	ly_bundle_free(f->bundle);
	tu_pki_free(&f->pki);
	free(f);
	return 0;
}

static uint64_t
count(struct fixture *f, enum ly_verify_fail why)
{
	struct ly_verify_counters c;
	ly_verifier_counters(f->v, &c);
	return c.x509[why];
}

/* Verifies `chain` for `id` with `key`; expects `want` (and its counter to move). */
static void
expect(struct fixture *f, const struct ly_buf *chain, EVP_PKEY *key, const char *id, int64_t now,
    enum ly_verify_fail want, ly_status want_rc)
{
	enum ly_verify_fail why = LY_VERIFY_FAIL_COUNT;
	struct ly_error err;
	uint64_t before = count(f, want);
	ly_error_clear(&err);
	ly_status rc = ly_verify_x509svid(f->v, chain->data, chain->len, key, id, now, NULL, &why, &err);
	if (why != want || rc != want_rc)
		fail_msg("want %s/%s, got %s/%s: %s", ly_verify_fail_str(want), ly_status_str(want_rc),
		    ly_verify_fail_str(why), ly_status_str(rc), err.msg);
	assert_int_equal(count(f, want), before + 1);
}

static void
leaf_chain(struct fixture *f, const struct tu_spec *spec, struct ly_buf *out)
{
	tu_pki_chain(&f->pki, spec, out);
}

static void
test_valid(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	leaf_chain(f, &s, &chain);
	struct ly_x509svid_info info;
	enum ly_verify_fail why;
	assert_int_equal(ly_verify_x509svid(f->v, chain.data, chain.len, f->pki.leaf_key, LEAF_ID, NOW, &info, &why,
	    NULL), LY_OK);
	assert_int_equal(why, LY_VERIFY_OK);
	assert_string_equal(info.id.id, LEAF_ID);
	assert_int_equal(info.not_after, TU_NOW + 3600);
	assert_int_equal(count(f, LY_VERIFY_OK), 1);

	/* The same with the key as PKCS#8 DER. */
	struct ly_buf key = LY_BUF_INIT;
	assert_int_equal(ly_key_to_pkcs8_der(f->pki.leaf_key, &key, NULL), LY_OK);
	assert_int_equal(ly_verify_x509svid_key_der(f->v, chain.data, chain.len, key.data, key.len, LEAF_ID, NOW,
	    NULL, &why, NULL), LY_OK);
	/* A key that does not decode. */
	key.data[key.len / 2] ^= 0xff;
	assert_int_not_equal(ly_verify_x509svid_key_der(f->v, chain.data, chain.len, key.data, key.len, LEAF_ID, NOW,
	    NULL, &why, NULL), LY_OK);
	assert_int_equal(why, LY_VERIFY_MALFORMED);
	ly_buf_free_secret(&key);
	ly_buf_free(&chain);
}

static void
test_tampered_and_malformed(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	leaf_chain(f, &s, &chain);
	struct ly_der_span spans[4];
	size_t n;
	assert_int_equal(ly_der_split(chain.data, chain.len, 4, 1 << 20, spans, &n, NULL), LY_OK);
	/* The last byte of the leaf's signature: still DER, no longer signed by the CA. */
	chain.data[spans[0].len - 1] ^= 0x01;
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_UNTRUSTED, LY_E_UNTRUSTED);
	chain.data[spans[0].len - 1] ^= 0x01;
	/* The intermediate's signature. */
	chain.data[chain.len - 1] ^= 0x01;
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_UNTRUSTED, LY_E_UNTRUSTED);
	chain.data[chain.len - 1] ^= 0x01;
	/* Not DER: one byte too many, truncated, garbage. */
	assert_int_equal(ly_buf_append(&chain, "\0", 1, 1 << 20, NULL), LY_OK);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_MALFORMED, LY_E_INVALID);
	chain.len -= 2;
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_MALFORMED, LY_E_INVALID);
	uint8_t hello[5] = { 'h', 'e', 'l', 'l', 'o' };
	struct ly_buf junk = { .data = hello, .len = sizeof(hello) };
	expect(f, &junk, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_MALFORMED, LY_E_INVALID);
	assert_int_equal(ly_verify_x509svid(f->v, NULL, 0, f->pki.leaf_key, LEAF_ID, NOW, NULL, NULL, NULL),
	    LY_E_INVALID);
	ly_buf_free(&chain);
}

/* X509-SVID §2, SPEC §4: exactly one URI SAN, equal to the entry's SPIFFE ID, in our trust domain. */
static void
test_san_rules(void **state)
{
	struct fixture *f = *state;
	struct ly_buf chain = LY_BUF_INIT;
	struct tu_spec s = tu_leaf_spec("spiffe://example.org/ns/prod/sa/other");
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_WRONG_ID, LY_E_INVALID);
	/* A prefix or a trailing slash is not equal. */
	expect(f, &chain, f->pki.leaf_key, "spiffe://example.org/ns/prod/sa/othe", NOW, LY_VERIFY_WRONG_ID,
	    LY_E_INVALID);
	ly_buf_free(&chain);

	s = tu_leaf_spec(LEAF_ID);
	s.uri2 = "spiffe://example.org/ns/prod/sa/second";
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_POLICY, LY_E_INVALID);
	ly_buf_free(&chain);

	s = tu_leaf_spec(NULL);
	s.dns = "web.example.org";
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_POLICY, LY_E_INVALID);
	ly_buf_free(&chain);

	/* Right ID string, wrong trust domain (an entry could never name it, but a server could sign it). */
	s = tu_leaf_spec("spiffe://other.org/ns/prod/sa/web");
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, "spiffe://other.org/ns/prod/sa/web", NOW, LY_VERIFY_WRONG_TRUST_DOMAIN,
	    LY_E_INVALID);
	ly_buf_free(&chain);
}

/* The leaf must certify the key the agent generated. */
static void
test_key_mismatch(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	leaf_chain(f, &s, &chain);
	EVP_PKEY *other = tu_key(LY_KEY_EC_P256);
	expect(f, &chain, other, LEAF_ID, NOW, LY_VERIFY_KEY_MISMATCH, LY_E_INVALID);
	EVP_PKEY *rsa = tu_key(LY_KEY_RSA_2048);
	expect(f, &chain, rsa, LEAF_ID, NOW, LY_VERIFY_KEY_MISMATCH, LY_E_INVALID);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(other);
	assert_int_equal(ly_verify_x509svid(f->v, chain.data, chain.len, NULL, LEAF_ID, NOW, NULL, NULL, NULL),
	    LY_E_INVALID);
	ly_buf_free(&chain);
}

static void
test_validity(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW + 3601, LY_VERIFY_EXPIRED, LY_E_EXPIRED);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW - 3601, LY_VERIFY_EXPIRED, LY_E_EXPIRED);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW + 3599, LY_VERIFY_OK, LY_OK);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW + 3600, LY_VERIFY_EXPIRED, LY_E_EXPIRED);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW - 3600, LY_VERIFY_OK, LY_OK);
	ly_buf_free(&chain);

	/* An intermediate out of its window fails path validation as expired. */
	EVP_PKEY *ikey = tu_key(LY_KEY_EC_P256);
	struct tu_spec is = tu_ca_spec("spiffe://example.org");
	is.not_after = 60;
	X509 *inter = tu_make(&is, ikey, f->pki.root, f->pki.root_key);
	X509 *leaf = tu_make(&s, f->pki.leaf_key, inter, ikey);
	X509 *certs[2] = { leaf, inter };
	tu_chain(certs, 2, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW + 120, LY_VERIFY_EXPIRED, LY_E_EXPIRED);
	ly_buf_free(&chain);
	X509_free(leaf);
	X509_free(inter);
	EVP_PKEY_free(ikey);
}

/* A chain to a CA that is not in the bundle. */
static void
test_foreign_ca(void **state)
{
	struct fixture *f = *state;
	struct tu_pki other;
	tu_pki_init(&other);
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	tu_pki_chain(&other, &s, &chain);
	expect(f, &chain, other.leaf_key, LEAF_ID, NOW, LY_VERIFY_UNTRUSTED, LY_E_UNTRUSTED);
	ly_buf_free(&chain);
	/* With its root included in the chain: still not an anchor. */
	X509 *leaf = tu_make(&s, other.leaf_key, other.inter, other.int_key);
	X509 *certs[3] = { leaf, other.inter, other.root };
	tu_chain(certs, 3, &chain);
	expect(f, &chain, other.leaf_key, LEAF_ID, NOW, LY_VERIFY_UNTRUSTED, LY_E_UNTRUSTED);
	ly_buf_free(&chain);
	X509_free(leaf);
	tu_pki_free(&other);
}

/* X509-SVID §4.1, §4.3: a leaf is not a CA; a signing certificate is one, with keyCertSign. */
static void
test_ca_flags(void **state)
{
	struct fixture *f = *state;
	struct ly_buf chain = LY_BUF_INIT;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	s.bc = TU_BC_TRUE;
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_POLICY, LY_E_INVALID);
	ly_buf_free(&chain);
	s = tu_leaf_spec(LEAF_ID);
	s.ku = "digitalSignature,keyCertSign";
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_POLICY, LY_E_INVALID);
	ly_buf_free(&chain);

	EVP_PKEY *ikey = tu_key(LY_KEY_EC_P256);
	struct tu_spec is = tu_ca_spec("spiffe://example.org");
	is.bc = TU_BC_FALSE;
	X509 *inter = tu_make(&is, ikey, f->pki.root, f->pki.root_key);
	s = tu_leaf_spec(LEAF_ID);
	X509 *leaf = tu_make(&s, f->pki.leaf_key, inter, ikey);
	X509 *certs[2] = { leaf, inter };
	tu_chain(certs, 2, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_POLICY, LY_E_INVALID);
	ly_buf_free(&chain);
	X509_free(leaf);
	X509_free(inter);
	EVP_PKEY_free(ikey);
}

static void
test_store_per_bundle_version(void **state)
{
	struct fixture *f = *state;
	bool rebuilt = true;
	/* The same bundle again: the store is kept. */
	assert_int_equal(ly_verifier_set_bundle(f->v, f->bundle, &rebuilt, NULL), LY_OK);
	assert_false(rebuilt);
	struct ly_bundle *clone = NULL;
	assert_int_equal(ly_bundle_clone(f->bundle, &clone, NULL), LY_OK);
	assert_int_equal(ly_verifier_set_bundle(f->v, clone, &rebuilt, NULL), LY_OK);
	assert_false(rebuilt);
	/* A new sequence: rebuilt. */
	assert_int_equal(ly_bundle_update_sequence(clone, 2, NULL), LY_OK);
	assert_int_equal(ly_verifier_set_bundle(f->v, clone, &rebuilt, NULL), LY_OK);
	assert_true(rebuilt);
	assert_int_equal(ly_verifier_bundle_sequence(f->v), 2);
	/* Same sequence, other authorities: rebuilt too (a bundle must not lie about its version). */
	struct tu_pki other;
	tu_pki_init(&other);
	assert_int_equal(ly_bundle_add_x509_authority(clone, other.root_der.data, other.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_verifier_set_bundle(f->v, clone, &rebuilt, NULL), LY_OK);
	assert_true(rebuilt);
	/* Now the other PKI's SVIDs verify too. */
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	tu_pki_chain(&other, &s, &chain);
	expect(f, &chain, other.leaf_key, LEAF_ID, NOW, LY_VERIFY_OK, LY_OK);
	ly_buf_free(&chain);

	/* Refused: another trust domain's bundle, no bundle, a bundle without X.509 authorities. */
	struct ly_bundle *foreign = NULL, *empty = NULL;
	assert_int_equal(ly_bundle_new("other.org", &foreign, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(foreign, other.root_der.data, other.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_verifier_set_bundle(f->v, foreign, &rebuilt, NULL), LY_E_INVALID);
	assert_int_equal(ly_verifier_set_bundle(f->v, NULL, &rebuilt, NULL), LY_E_INVALID);
	assert_int_equal(ly_bundle_new(TA_TD, &empty, NULL), LY_OK);
	assert_int_equal(ly_verifier_set_bundle(f->v, empty, &rebuilt, NULL), LY_E_INVALID);
	/* The previous store stays. */
	tu_pki_chain(&other, &s, &chain);
	expect(f, &chain, other.leaf_key, LEAF_ID, NOW, LY_VERIFY_OK, LY_OK);
	ly_buf_free(&chain);

	/* A verifier without a bundle verifies nothing. */
	struct ly_verifier *bare = NULL;
	enum ly_verify_fail why;
	assert_int_equal(ly_verifier_new(TA_TD, &bare, NULL), LY_OK);
	tu_pki_chain(&f->pki, &s, &chain);
	assert_int_equal(ly_verify_x509svid(bare, chain.data, chain.len, f->pki.leaf_key, LEAF_ID, NOW, NULL, &why,
	    NULL), LY_E_NOT_FOUND);
	assert_int_equal(why, LY_VERIFY_NO_BUNDLE);
	ly_buf_free(&chain);
	ly_verifier_free(bare);
	assert_int_equal(ly_verifier_new("Bad.TD", &bare, NULL), LY_E_INVALID);

	ly_bundle_free(foreign);
	ly_bundle_free(empty);
	ly_bundle_free(clone);
	tu_pki_free(&other);
}

/*
 * The signing-path shortcut (verify.h): the first chain under an
 * intermediate verifies the path once; leaves after it are verified to the
 * intermediate alone. It must refuse everything the long way refuses.
 */
static void
test_signer_shortcut(void **state)
{
	struct fixture *f = *state;
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_x509svid_info info;
	enum ly_verify_fail why;

	assert_int_equal(ly_verifier_signer_count(f->v), 0);
	leaf_chain(f, &s, &chain);
	expect(f, &chain, f->pki.leaf_key, LEAF_ID, NOW, LY_VERIFY_OK, LY_OK);
	assert_int_equal(ly_verifier_signer_count(f->v), 1);
	ly_buf_free(&chain);
	/* Another leaf under the same intermediate: taken by the shortcut, still one signer. */
	EVP_PKEY *k2 = tu_key(LY_KEY_EC_P256);
	X509 *leaf = tu_make(&s, k2, f->pki.inter, f->pki.int_key);
	X509 *certs[3] = { leaf, f->pki.inter, NULL };
	tu_chain(certs, 2, &chain);
	expect(f, &chain, k2, LEAF_ID, NOW, LY_VERIFY_OK, LY_OK);
	assert_int_equal(ly_verifier_signer_count(f->v), 1);
	ly_buf_free(&chain);
	X509_free(leaf);

	/* The intermediate's name, but signed by another key: the one signature checked must be this one. */
	EVP_PKEY *forger = tu_key(LY_KEY_EC_P256);
	leaf = tu_make(&s, k2, f->pki.inter, forger);
	certs[0] = leaf;
	tu_chain(certs, 2, &chain);
	expect(f, &chain, k2, LEAF_ID, NOW, LY_VERIFY_UNTRUSTED, LY_E_UNTRUSTED);
	ly_buf_free(&chain);
	X509_free(leaf);

	/* A leaf breaking the leaf rules under a known intermediate: still refused. */
	struct tu_spec bad = tu_leaf_spec(LEAF_ID);
	bad.bc = TU_BC_TRUE;
	leaf = tu_make(&bad, k2, f->pki.inter, f->pki.int_key);
	certs[0] = leaf;
	tu_chain(certs, 2, &chain);
	expect(f, &chain, k2, LEAF_ID, NOW, LY_VERIFY_POLICY, LY_E_INVALID);
	ly_buf_free(&chain);
	X509_free(leaf);

	/*
	 * An intermediate valid for 60 s: cached at NOW, then out of its window
	 * while the leaf is still in its own: refused as expired, not served
	 * from the cached path.
	 */
	EVP_PKEY *ikey = tu_key(LY_KEY_EC_P256);
	struct tu_spec is = tu_ca_spec("spiffe://example.org");
	is.not_after = 60;
	X509 *inter = tu_make(&is, ikey, f->pki.root, f->pki.root_key);
	leaf = tu_make(&s, k2, inter, ikey);
	certs[0] = leaf;
	certs[1] = inter;
	tu_chain(certs, 2, &chain);
	expect(f, &chain, k2, LEAF_ID, NOW, LY_VERIFY_OK, LY_OK);
	assert_int_equal(ly_verifier_signer_count(f->v), 2);
	expect(f, &chain, k2, LEAF_ID, NOW + 120, LY_VERIFY_EXPIRED, LY_E_EXPIRED);
	ly_buf_free(&chain);
	X509_free(leaf);
	X509_free(inter);

	/*
	 * A root (bundle authority) that ends before its intermediate and leaf:
	 * the shortcut's window includes it, and so does chain_not_after.
	 */
	EVP_PKEY *rkey = tu_key(LY_KEY_EC_P256);
	struct tu_spec rs = tu_ca_spec("spiffe://example.org");
	rs.cn = "short root";
	rs.not_after = 600;
	X509 *root = tu_make(&rs, rkey, NULL, NULL);
	struct ly_buf root_der = LY_BUF_INIT;
	tu_der(root, &root_der);
	struct ly_bundle *b2 = bundle_of(&root_der, 2);
	assert_int_equal(ly_bundle_add_x509_authority(b2, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	bool rebuilt = false;
	assert_int_equal(ly_verifier_set_bundle(f->v, b2, &rebuilt, NULL), LY_OK);
	assert_true(rebuilt);
	assert_int_equal(ly_verifier_signer_count(f->v), 0); /* a new store: no path is trusted yet */
	is = tu_ca_spec("spiffe://example.org");
	inter = tu_make(&is, ikey, root, rkey);
	leaf = tu_make(&s, k2, inter, ikey);
	certs[0] = leaf;
	certs[1] = inter;
	tu_chain(certs, 2, &chain);
	assert_int_equal(ly_verify_x509svid(f->v, chain.data, chain.len, k2, LEAF_ID, NOW, &info, &why, NULL), LY_OK);
	assert_int_equal(ly_verifier_signer_count(f->v), 1);
	assert_int_equal(ly_verify_x509svid(f->v, chain.data, chain.len, k2, LEAF_ID, NOW + 10, &info, &why, NULL),
	    LY_OK);
	assert_int_equal(info.chain_not_after, TU_NOW + 600);
	expect(f, &chain, k2, LEAF_ID, NOW + 700, LY_VERIFY_EXPIRED, LY_E_EXPIRED);

	/* That root removed from the bundle: the path is forgotten and the chain refused. */
	assert_int_equal(ly_verifier_set_bundle(f->v, f->bundle, &rebuilt, NULL), LY_OK);
	assert_true(rebuilt);
	assert_int_equal(ly_verifier_signer_count(f->v), 0);
	expect(f, &chain, k2, LEAF_ID, NOW, LY_VERIFY_UNTRUSTED, LY_E_UNTRUSTED);
	assert_int_equal(ly_verifier_signer_count(f->v), 0);
	ly_buf_free(&chain);
	X509_free(leaf);
	X509_free(inter);

	/* More intermediates than signer slots: the oldest is replaced, never more than the cap. */
	for (int i = 0; i < LY_VERIFY_SIGNERS_MAX + 3; i++) {
		inter = tu_make(&is, ikey, f->pki.root, f->pki.root_key);
		leaf = tu_make(&s, k2, inter, ikey);
		certs[0] = leaf;
		certs[1] = inter;
		tu_chain(certs, 2, &chain);
		expect(f, &chain, k2, LEAF_ID, NOW, LY_VERIFY_OK, LY_OK);
		ly_buf_free(&chain);
		X509_free(leaf);
		X509_free(inter);
	}
	assert_int_equal(ly_verifier_signer_count(f->v), LY_VERIFY_SIGNERS_MAX);

	ly_bundle_free(b2);
	ly_buf_free(&root_der);
	X509_free(root);
	EVP_PKEY_free(rkey);
	EVP_PKEY_free(ikey);
	EVP_PKEY_free(forger);
	EVP_PKEY_free(k2);
}

/* Enough to interleave the threads; small enough for valgrind (each verification is ~100x slower there). */
#define VERIFY_THREAD_ROUNDS 2

struct verify_thread {
	struct fixture *f;
	struct ly_buf chain[16];
	EVP_PKEY *key[16];
	int ok;
};

static void *
verify_thread_run(void *arg)
{
	struct verify_thread *t = arg;
	for (int round = 0; round < VERIFY_THREAD_ROUNDS; round++) {
		for (int i = 0; i < 16; i++) {
			if (ly_verify_x509svid(t->f->v, t->chain[i].data, t->chain[i].len, t->key[i], LEAF_ID, NOW, NULL,
				NULL, NULL) == LY_OK)
				t->ok++;
		}
	}
	return NULL;
}

/* Verifications on several threads at once share the signers safely (verify.h; run under TSan/ASan too). */
static void
test_threads(void **state)
{
	struct fixture *f = *state;
	struct verify_thread t[3];
	pthread_t th[3];
	struct tu_spec s = tu_leaf_spec(LEAF_ID);
	memset(t, 0, sizeof(t));
	for (int k = 0; k < 3; k++) {
		t[k].f = f;
		for (int i = 0; i < 16; i++) {
			t[k].key[i] = tu_key(LY_KEY_EC_P256);
			X509 *leaf = tu_make(&s, t[k].key[i], f->pki.inter, f->pki.int_key);
			X509 *certs[2] = { leaf, f->pki.inter };
			tu_chain(certs, 2, &t[k].chain[i]);
			X509_free(leaf);
		}
	}
	for (int k = 0; k < 3; k++)
		assert_int_equal(pthread_create(&th[k], NULL, verify_thread_run, &t[k]), 0);
	for (int k = 0; k < 3; k++)
		assert_int_equal(pthread_join(th[k], NULL), 0);
	for (int k = 0; k < 3; k++) {
		assert_int_equal(t[k].ok, VERIFY_THREAD_ROUNDS * 16);
		for (int i = 0; i < 16; i++) {
			ly_buf_free(&t[k].chain[i]);
			EVP_PKEY_free(t[k].key[i]);
		}
	}
	assert_int_equal(count(f, LY_VERIFY_OK), 3 * VERIFY_THREAD_ROUNDS * 16);
	assert_int_equal(ly_verifier_signer_count(f->v), 1);
}

/* JWT-SVIDs: ly_jwt_validate's checks, sub against the entry, each failure counted. */
static void
test_jwt(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *jk = tu_key(LY_KEY_EC_P256), *other = tu_key(LY_KEY_EC_P256);
	struct ly_bundle_set *set = NULL;
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_clone(f->bundle, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "k1", jk, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, b, NULL), LY_OK);

	struct ly_spiffe_id sub;
	assert_int_equal(ly_spiffe_id_parse_str(LEAF_ID, &sub, NULL), LY_OK);
	const char *aud[1] = { "svc" };
	char *tok = NULL, *bad = NULL, *old = NULL;
	assert_int_equal(ly_jwt_sign(jk, "k1", NULL, &sub, aud, 1, TU_NOW, TU_NOW + 300, &tok, NULL), LY_OK);
	assert_int_equal(ly_jwt_sign(other, "k1", NULL, &sub, aud, 1, TU_NOW, TU_NOW + 300, &bad, NULL), LY_OK);
	assert_int_equal(ly_jwt_sign(jk, "k1", NULL, &sub, aud, 1, TU_NOW - 600, TU_NOW - 300, &old, NULL), LY_OK);

	enum ly_verify_fail why;
	json_t *claims = NULL;
	struct ly_spiffe_id got;
	assert_int_equal(ly_verify_jwtsvid(f->v, tok, strlen(tok), "svc", LEAF_ID, set, NOW, &got, &claims, &why, NULL),
	    LY_OK);
	assert_int_equal(why, LY_VERIFY_OK);
	assert_string_equal(got.id, LEAF_ID);
	assert_non_null(claims);
	assert_string_equal(json_string_value(json_object_get(claims, "sub")), LEAF_ID);
	json_decref(claims);
	/* No expected ID: any sub (ValidateJWTSVID). */
	assert_int_equal(ly_verify_jwtsvid(f->v, tok, strlen(tok), "svc", NULL, set, NOW, NULL, NULL, &why, NULL),
	    LY_OK);

	assert_int_equal(ly_verify_jwtsvid(f->v, tok, strlen(tok), "other", LEAF_ID, set, NOW, &got, &claims, &why,
	    NULL), LY_E_INVALID);
	assert_int_equal(why, LY_VERIFY_AUDIENCE);
	assert_null(claims);
	assert_string_equal(got.id, "");
	assert_int_equal(ly_verify_jwtsvid(f->v, tok, strlen(tok), "svc", "spiffe://example.org/x", set, NOW, NULL,
	    &claims, &why, NULL), LY_E_INVALID);
	assert_int_equal(why, LY_VERIFY_WRONG_ID);
	assert_null(claims);
	assert_int_equal(ly_verify_jwtsvid(f->v, bad, strlen(bad), "svc", LEAF_ID, set, NOW, NULL, NULL, &why, NULL),
	    LY_E_UNTRUSTED);
	assert_int_equal(why, LY_VERIFY_UNTRUSTED);
	assert_int_equal(ly_verify_jwtsvid(f->v, old, strlen(old), "svc", LEAF_ID, set, NOW, NULL, NULL, &why, NULL),
	    LY_E_EXPIRED);
	assert_int_equal(why, LY_VERIFY_EXPIRED);
	assert_int_equal(ly_verify_jwtsvid(f->v, tok, strlen(tok), "svc", LEAF_ID, NULL, NOW, NULL, NULL, &why, NULL),
	    LY_E_NOT_FOUND);
	assert_int_equal(why, LY_VERIFY_NO_BUNDLE);
	assert_int_equal(ly_verify_jwtsvid(f->v, "a.b.c", 5, "svc", LEAF_ID, set, NOW, NULL, NULL, &why, NULL),
	    LY_E_INVALID);
	assert_int_equal(why, LY_VERIFY_MALFORMED);

	struct ly_verify_counters c;
	ly_verifier_counters(f->v, &c);
	assert_int_equal(c.jwt[LY_VERIFY_OK], 2);
	assert_int_equal(c.jwt[LY_VERIFY_AUDIENCE], 1);
	assert_int_equal(c.jwt[LY_VERIFY_WRONG_ID], 1);
	assert_int_equal(c.jwt[LY_VERIFY_UNTRUSTED], 1);
	assert_int_equal(c.jwt[LY_VERIFY_EXPIRED], 1);
	assert_int_equal(c.jwt[LY_VERIFY_NO_BUNDLE], 1);
	assert_int_equal(c.jwt[LY_VERIFY_MALFORMED], 1);
	assert_int_equal(c.x509[LY_VERIFY_OK], 0);
	assert_string_equal(ly_verify_fail_str(LY_VERIFY_KEY_MISMATCH), "key_mismatch");
	assert_string_equal(ly_verify_fail_str((enum ly_verify_fail)99), "unknown");

	ly_free_secret_str(tok);
	ly_free_secret_str(bad);
	ly_free_secret_str(old);
	ly_bundle_set_free(set);
	EVP_PKEY_free(jk);
	EVP_PKEY_free(other);
}

/* After a bundle change, SVIDs whose chain no longer verifies are dropped. */
static void
test_recheck_cache(void **state)
{
	struct fixture *f = *state;
	struct ly_cache *c = NULL;
	assert_int_equal(ly_cache_new(TA_TD, &c, NULL), LY_OK);
	struct ly_entry *es[4] = {
		ta_entry("a", "spiffe://example.org/a", 1, NULL, "unix:uid:1", NULL),
		ta_entry("b", "spiffe://example.org/b", 1, NULL, "unix:uid:1", NULL),
		ta_entry("c", "spiffe://example.org/c", 1, NULL, "unix:uid:1", NULL),
		ta_entry("d", "spiffe://example.org/d", 1, NULL, "unix:uid:1", NULL),
	};
	ta_apply(c, true, 1, es, 4, NULL, 0, NULL);
	ta_set_svid(c, &f->pki, "a", -10, 3600, NULL);
	ta_set_svid(c, &f->pki, "b", -10, 3600, NULL);
	/* c: a leaf straight under the root, no intermediates. */
	struct tu_spec s = tu_leaf_spec("spiffe://example.org/c");
	X509 *leaf = tu_make(&s, f->pki.leaf_key, f->pki.root, f->pki.root_key);
	struct ly_buf chain = LY_BUF_INIT, key = LY_BUF_INIT;
	tu_chain(&leaf, 1, &chain);
	X509_free(leaf);
	assert_int_equal(ly_key_to_pkcs8_der(f->pki.leaf_key, &key, NULL), LY_OK);
	assert_int_equal(ly_cache_set_svid(c, "c", "spiffe://example.org/c", &chain, &key, TU_NOW - 3600, TU_NOW + 3600,
	    TU_NOW * 1000, NULL, NULL), LY_OK);
	assert_int_equal(ly_cache_svid_count(c), 3);

	/* The same bundle: everything stays. */
	assert_int_equal(ly_verify_recheck_cache(f->v, c, NOW, NULL), 0);
	assert_int_equal(ly_cache_svid_count(c), 3);

	/* A bundle with only another root: every SVID goes. */
	struct tu_pki other;
	tu_pki_init(&other);
	struct ly_bundle *nb = bundle_of(&other.root_der, 2);
	assert_int_equal(ly_verifier_set_bundle(f->v, nb, NULL, NULL), LY_OK);
	uint64_t before = count(f, LY_VERIFY_UNTRUSTED);
	struct ly_cache_changes cs;
	ly_cache_changes_init(&cs);
	assert_int_equal(ly_verify_recheck_cache(f->v, c, NOW, &cs), 3);
	assert_int_equal(ly_cache_svid_count(c), 0);
	assert_int_equal(cs.n, 3);
	assert_int_equal(count(f, LY_VERIFY_UNTRUSTED), before + 3);
	ly_cache_changes_cleanup(&cs);

	ly_bundle_free(nb);
	tu_pki_free(&other);
	ly_cache_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_valid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered_and_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_san_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_validity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ca_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_per_bundle_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signer_shortcut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recheck_cache, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
