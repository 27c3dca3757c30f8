/*
 * test_attest.c: server node attestation (server/attest.h, SPEC §6).
 *  - join_token on a real SQLite datastore in a temporary directory:
 *    single use, expiry, the ID stored with the token, trust domain,
 *    syntax, and no token in any message;
 *  - x509pop: chain to the configured CA bundle, validity, key usage,
 *    proof over the nonce, the agent ID and every selector (each checked
 *    with ly_selector_check), configuration refusals;
 *  - k8s_psat: the TokenReview, Pod and Node parsers on canned JSON, the
 *    configuration rules, and the refusals that need no API server (the
 *    HTTP path is driven by tests/integration/fake_k8s_api.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>

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
#include "server/datastore.h"
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

/* ---- join_token ---- */

struct ds_fixture {
	char dir[64];
	char path[128];
	struct ly_datastore *ds;
};

static int
ds_setup(void **state)
{
	struct ds_fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/lanyard-test-attest-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/datastore.sqlite3", f->dir);
	assert_int_equal(ly_datastore_sqlite_open(f->path, &f->ds, NULL), LY_OK);
	*state = f;
	return 0;
}

static int
ds_teardown(void **state)
{
	struct ds_fixture *f = *state;
	char p[160];
	ly_datastore_close(f->ds);
	unlink(f->path);
	snprintf(p, sizeof(p), "%s-wal", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

#define NOW ((time_t)1700000000)

static void
make_token(struct ly_datastore *ds, const char *token, const char *id, time_t expires)
{
	struct ly_spiffe_id def;
	if (id == NULL) {
		assert_int_equal(ly_join_token_default_id(TD, token, &def, NULL), LY_OK);
		id = def.id;
	}
	assert_int_equal(ly_datastore_token_create(ds, token, id, (int64_t)expires, NULL), LY_OK);
}

static void
test_join_token_single_use(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	const char *tok = "f0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4b";

	make_token(f->ds, tok, NULL, NOW + 600);
	assert_int_equal(ly_attest_join_token(f->ds, TD, tok, NOW, NULL, &r, NULL, &err), LY_OK);
	assert_string_equal(r.agent_id, "spiffe://example.org/lanyard/agent/join_token/"
					 "f0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4b");
	assert_string_equal(r.type, "join_token");
	/* As SPIRE: the ID is the identity, no selectors. */
	assert_int_equal(r.n_selectors, 0);
	assert_null(r.selectors);
	ly_attest_result_cleanup(&r);
	assert_null(r.agent_id);

	/* Second use: refused, and the message does not carry the token. */
	assert_int_equal(ly_attest_join_token(f->ds, TD, tok, NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
	assert_null(strstr(err.msg, "f0a1b2c3"));
	assert_null(r.agent_id);
}

/* The answer to a first use lost: the same token with the same key admits the agent again, another key does not. */
static void
test_join_token_retry_same_key(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	uint8_t k1[LY_JOIN_TOKEN_KEY_LEN], k2[LY_JOIN_TOKEN_KEY_LEN];
	bool again = true;

	memset(k1, 0xa1, sizeof(k1));
	memset(k2, 0xb2, sizeof(k2));
	make_token(f->ds, "lost-answer", "spiffe://example.org/racks/r1/node-1", NOW + 600);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW, k1, &r, &again, &err), LY_OK);
	assert_false(again);
	assert_string_equal(r.agent_id, "spiffe://example.org/racks/r1/node-1");
	ly_attest_result_cleanup(&r);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW + 30, k1, &r, &again, &err), LY_OK);
	assert_true(again);
	assert_string_equal(r.agent_id, "spiffe://example.org/racks/r1/node-1");
	assert_string_equal(r.type, "join_token");
	ly_attest_result_cleanup(&r);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW + 30, k2, &r, &again, &err),
	    LY_E_NOT_FOUND);
	assert_false(again);
	assert_null(r.agent_id);
	assert_null(strstr(err.msg, "lost-answer"));
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW + LY_JOIN_TOKEN_RETRY_S, k1, &r, &again,
	    &err), LY_E_NOT_FOUND);
}

static void
test_join_token_expired(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;

	make_token(f->ds, "expiring-token", NULL, NOW + 10);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "expiring-token", NOW + 10, NULL, &r, NULL,
	    &err), LY_E_EXPIRED);
	assert_null(strstr(err.msg, "expiring-token"));
	assert_null(r.agent_id);
	/* Used up by the failed attempt too. */
	assert_int_equal(ly_attest_join_token(f->ds, TD, "expiring-token", NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);

	/* One second before expiry it still works. */
	make_token(f->ds, "fresh-token", NULL, NOW + 10);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "fresh-token", NOW + 9, NULL, &r, NULL, &err), LY_OK);
	ly_attest_result_cleanup(&r);
}

static void
test_join_token_custom_id(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;

	make_token(f->ds, "custom", "spiffe://example.org/racks/r12/node-7", NOW + 60);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "custom", NOW, NULL, &r, NULL, NULL), LY_OK);
	assert_string_equal(r.agent_id, "spiffe://example.org/racks/r12/node-7");
	assert_int_equal(r.n_selectors, 0);
	ly_attest_result_cleanup(&r);
}

/*
 * The reserved namespace (lib/spiffeid.h): a token may not grant the
 * server's ID nor another attestor's agent ID, neither when it is stored
 * nor, for a row stored before the rule, when it is used.
 */
static void
test_join_token_reserved_ids(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	static const char *const refused[] = {
		"spiffe://example.org/lanyard/server",
		"spiffe://example.org/lanyard",
		"spiffe://example.org/lanyard/x",
		"spiffe://example.org/lanyard/agent/x509pop/0123456789abcdef0123456789abcdef01234567",
		"spiffe://example.org/lanyard/agent/k8s_psat/prod/u1",
		"spiffe://example.org/lanyard/agent/join_token/another",
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		assert_int_equal(ly_datastore_token_create(f->ds, "tok", refused[i], NOW + 60, &err), LY_E_INVALID);
		assert_non_null(strstr(err.msg, "reserved namespace"));
	}
	/* The token's own default and a named agent are fine. */
	make_token(f->ds, "tok", "spiffe://example.org/lanyard/agent/join_token/tok", NOW + 60);
	make_token(f->ds, "named", "spiffe://example.org/lanyard/agent/node1", NOW + 60);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "named", NOW, NULL, &r, NULL, NULL), LY_OK);
	assert_string_equal(r.agent_id, "spiffe://example.org/lanyard/agent/node1");
	ly_attest_result_cleanup(&r);

	/* A row from before the rule: refused when used, and used up. */
	make_token(f->ds, "old", "spiffe://example.org/lanyard/agent/node2", NOW + 60);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "UPDATE join_tokens SET spiffe_id = 'spiffe://example.org/lanyard/server'",
	    NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_changes(db), 2);
	sqlite3_close(db);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "old", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "reserved namespace"));
	assert_null(strstr(err.msg, "old"));
	assert_null(r.agent_id);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "old", NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
}

/* A token made for another trust domain admits no one here (and is used up). */
static void
test_join_token_other_trust_domain(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;

	make_token(f->ds, "foreign", "spiffe://other.org/lanyard/agent/x", NOW + 60);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "foreign", NOW, NULL, &r, NULL, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "trust domain"));
	assert_null(r.agent_id);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "foreign", NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
}

static void
test_join_token_syntax(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	char long_tok[LY_JOIN_TOKEN_MAX + 2];

	assert_int_equal(ly_attest_join_token(f->ds, TD, "", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, NULL, NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "secret$value", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_null(strstr(err.msg, "secret"));
	assert_int_equal(ly_attest_join_token(f->ds, TD, "has space", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "a/b", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, ".", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "..", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	memset(long_tok, 'a', sizeof(long_tok));
	long_tok[LY_JOIN_TOKEN_MAX + 1] = '\0';
	assert_int_equal(ly_attest_join_token(f->ds, TD, long_tok, NOW, NULL, &r, NULL, &err), LY_E_LIMIT);
	/* Exactly at the cap: syntax passes, the store does not know it. */
	long_tok[LY_JOIN_TOKEN_MAX] = '\0';
	assert_int_equal(ly_datastore_token_check(long_tok, &err), LY_OK);
	assert_int_equal(ly_attest_join_token(f->ds, TD, long_tok, NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
	assert_null(strstr(err.msg, "aaaa"));
	assert_null(r.agent_id);
}

static void
test_join_token_default_id(void **state)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_join_token_default_id(TD, "abc", &id, NULL), LY_OK);
	assert_string_equal(id.id, "spiffe://example.org/lanyard/agent/join_token/abc");
	assert_int_equal(ly_join_token_default_id(TD, "a b", &id, NULL), LY_E_INVALID);
	assert_int_equal(ly_join_token_default_id("Example.org", "abc", &id, NULL), LY_E_INVALID);
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

/* ---- k8s_psat: parsers ---- */

#define POD_UID "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
#define NODE_UID "9d2a7c1e-5b3f-4e8a-a1c2-3d4e5f6a7b8c"

#define REVIEW_HEAD "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\","
#define USER_OK                                                                                  \
	"\"user\":{\"username\":\"system:serviceaccount:lanyard:lanyard-agent\",\"uid\":\"x\","  \
	"\"groups\":[\"system:serviceaccounts\"],\"extra\":{"                                    \
	"\"authentication.kubernetes.io/pod-name\":[\"lanyard-agent-7xk2p\"],"                   \
	"\"authentication.kubernetes.io/pod-uid\":[\"" POD_UID "\"]}}"

static ly_status
review(const char *json, struct ly_psat_review *out, struct ly_error *err)
{
	return ly_psat_parse_tokenreview(json, strlen(json), "lanyard-server", out, err);
}

static void
test_psat_review_good(void **state)
{
	struct ly_psat_review rv;
	struct ly_error err;
	const char *j = REVIEW_HEAD "\"spec\":{\"token\":\"xxxx\",\"audiences\":[\"lanyard-server\"]},"
				    "\"status\":{\"authenticated\":true,\"audiences\":[\"other\",\"lanyard-server\"]," USER_OK
				    "}}";
	if (review(j, &rv, &err) != LY_OK)
		fail_msg("%s", err.msg);
	assert_string_equal(rv.ns, "lanyard");
	assert_string_equal(rv.sa, "lanyard-agent");
	assert_string_equal(rv.pod_name, "lanyard-agent-7xk2p");
	assert_string_equal(rv.pod_uid, POD_UID);
}

static void
test_psat_review_refusals(void **state)
{
	struct ly_psat_review rv;
	struct ly_error err;
	static const struct {
		const char *json;
		ly_status want;
		const char *msg;
	} cases[] = {
		/* not authenticated: false, absent (omitempty), no status at all */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":false,\"audiences\":[\"lanyard-server\"]," USER_OK "}}",
		    LY_E_UNTRUSTED, "not authenticated" },
		{ REVIEW_HEAD "\"status\":{\"audiences\":[\"lanyard-server\"]," USER_OK "}}", LY_E_UNTRUSTED,
		    "not authenticated" },
		{ REVIEW_HEAD "\"status\":{\"error\":\"invalid bearer token\"}}", LY_E_UNTRUSTED, "not authenticated" },
		{ REVIEW_HEAD "\"spec\":{}}", LY_E_UNTRUSTED, "not authenticated" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":\"true\"," USER_OK "}}", LY_E_INVALID, "boolean" },
		{ REVIEW_HEAD "\"status\":[]}", LY_E_INVALID, "status" },
		/* audience */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"other\"]," USER_OK "}}",
		    LY_E_UNTRUSTED, "audience" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true," USER_OK "}}", LY_E_UNTRUSTED, "audience" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server-x\"]," USER_OK "}}",
		    LY_E_UNTRUSTED, "audience" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":\"lanyard-server\"," USER_OK "}}",
		    LY_E_INVALID, "audiences" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[1]," USER_OK "}}", LY_E_INVALID,
		    "audiences[0]" },
		/* user */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"alice\"}}}",
		    LY_E_UNTRUSTED, "not a service-account token" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:Bad_NS:sa\"}}}",
		    LY_E_INVALID, "DNS-1123" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:nscolonless\"}}}",
		    LY_E_INVALID, "username" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":7}}}",
		    LY_E_INVALID, "not a string" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"]}}", LY_E_INVALID,
		    "status.user" },
		/* a legacy (secret) token: no pod binding */
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\"}}}",
		    LY_E_UNTRUSTED, "not bound to a pod" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"a\",\"b\"],"
			      "\"authentication.kubernetes.io/pod-uid\":[\"" POD_UID "\"]}}}}",
		    LY_E_INVALID, "one string" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"a\"],"
			      "\"authentication.kubernetes.io/pod-uid\":[\"1B4E28BA-2FA1-41D2-883F-0016D3CCA427\"]}}}}",
		    LY_E_INVALID, "UUID" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"../../nodes/x\"],"
			      "\"authentication.kubernetes.io/pod-uid\":[\"" POD_UID "\"]}}}}",
		    LY_E_INVALID, "DNS-1123" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":{"
			      "\"authentication.kubernetes.io/pod-name\":[\"a\"]}}}}",
		    LY_E_UNTRUSTED, "pod-uid" },
		{ REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
			      "\"user\":{\"username\":\"system:serviceaccount:ns:sa\",\"extra\":[]}}}",
		    LY_E_INVALID, "extra" },
		/* the object itself */
		{ "{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}", LY_E_INVALID, "kind" },
		{ "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1beta1\"}", LY_E_INVALID, "kind" },
		{ "[]", LY_E_INVALID, "object" },
		{ "{\"kind\":\"TokenReview\"", LY_E_INVALID, "JSON" },
		{ REVIEW_HEAD "\"status\":{},\"status\":{}}", LY_E_INVALID, "JSON" },
		{ "", LY_E_INVALID, "JSON" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ly_status rc = review(cases[i].json, &rv, &err);
		if (rc != cases[i].want || strstr(err.msg, cases[i].msg) == NULL)
			fail_msg("case %zu: got %s \"%s\", want %s with \"%s\"", i, ly_status_str(rc), err.msg,
			    ly_status_str(cases[i].want), cases[i].msg);
		assert_string_equal(rv.ns, "");
	}
}

/* A Node object holding `arrays` nested arrays. */
static char *
nested(int arrays)
{
	static const char head[] = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"s\":\"[[[[[[[[\",\"x\":";
	char *out = malloc(sizeof(head) + 2 * (size_t)arrays + 8);
	assert_non_null(out);
	size_t o = strlen(head);
	memcpy(out, head, o);
	for (int i = 0; i < arrays; i++)
		out[o++] = '[';
	if (arrays == 0)
		out[o++] = '0';
	for (int i = 0; i < arrays; i++)
		out[o++] = ']';
	out[o++] = '}';
	out[o] = '\0';
	return out;
}

static void
test_psat_json_caps(void **state)
{
	struct ly_psat_review rv;
	struct ly_error err;
	char node_uid[LY_UUID_LEN + 1];

	/* Nesting: the object itself is one level; LY_K8S_JSON_DEPTH_MAX - 1 arrays inside are parsed
	 * (and refused for their content), one more is refused up front. */
	char *deep = nested(LY_K8S_JSON_DEPTH_MAX);
	assert_int_equal(ly_psat_parse_node(deep, strlen(deep), "n", node_uid, &err), LY_E_LIMIT);
	free(deep);
	deep = nested(LY_K8S_JSON_DEPTH_MAX - 1);
	assert_int_equal(ly_psat_parse_node(deep, strlen(deep), "n", node_uid, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "metadata"));
	free(deep);
	/* Size. */
	size_t big = (size_t)LY_K8S_RESPONSE_MAX + 1;
	char *b = malloc(big);
	assert_non_null(b);
	memset(b, ' ', big);
	assert_int_equal(ly_psat_parse_tokenreview(b, big, "aud", &rv, &err), LY_E_LIMIT);
	free(b);
	/* An embedded NUL in a string. */
	const char nul[] = REVIEW_HEAD "\"status\":{\"authenticated\":true,\"audiences\":[\"lanyard-server\"],"
				       "\"user\":{\"username\":\"system:serviceaccount:ns:sa\\u0000x\"}}}";
	assert_int_equal(review(nul, &rv, &err), LY_E_INVALID);
	assert_int_equal(ly_psat_parse_tokenreview(NULL, 0, "aud", &rv, &err), LY_E_INVALID);
}

#define POD_HEAD "{\"kind\":\"Pod\",\"apiVersion\":\"v1\","

static ly_status
pod(const char *json, char node[LY_K8S_NAME_MAX + 1], struct ly_error *err)
{
	return ly_psat_parse_pod(json, strlen(json), "lanyard", "lanyard-agent-7xk2p", POD_UID, node, err);
}

static void
test_psat_pod(void **state)
{
	char node[LY_K8S_NAME_MAX + 1];
	struct ly_error err;
	const char *good = POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
				    "\"uid\":\"" POD_UID "\",\"labels\":{\"app\":\"lanyard-agent\"}},"
				    "\"spec\":{\"nodeName\":\"node-a.cluster.local\",\"serviceAccountName\":\"lanyard-agent\"},"
				    "\"status\":{\"phase\":\"Running\"}}";
	if (pod(good, node, &err) != LY_OK)
		fail_msg("%s", err.msg);
	assert_string_equal(node, "node-a.cluster.local");

	static const struct {
		const char *json;
		ly_status want;
		const char *msg;
	} cases[] = {
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"00000000-0000-4000-8000-000000000000\"},\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_UNTRUSTED, "UID" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"other\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_UNTRUSTED, "namespace" },
		{ POD_HEAD "\"metadata\":{\"name\":\"other\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_UNTRUSTED, "name" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\"},"
			   "\"spec\":{\"nodeName\":\"n\"}}",
		    LY_E_INVALID, "uid is missing" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{}}",
		    LY_E_INVALID, "not scheduled" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":42}}",
		    LY_E_INVALID, "not a string" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"Node_A\"}}",
		    LY_E_INVALID, "DNS-1123" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"},\"spec\":{\"nodeName\":\"a/../b\"}}",
		    LY_E_INVALID, "DNS-1123" },
		{ POD_HEAD "\"metadata\":[],\"spec\":{\"nodeName\":\"n\"}}", LY_E_INVALID, "metadata" },
		{ POD_HEAD "\"metadata\":{\"name\":\"lanyard-agent-7xk2p\",\"namespace\":\"lanyard\","
			   "\"uid\":\"" POD_UID "\"}}",
		    LY_E_INVALID, "spec" },
		{ "{\"kind\":\"Node\",\"apiVersion\":\"v1\"}", LY_E_INVALID, "kind" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ly_status rc = pod(cases[i].json, node, &err);
		if (rc != cases[i].want || strstr(err.msg, cases[i].msg) == NULL)
			fail_msg("case %zu: got %s \"%s\", want %s with \"%s\"", i, ly_status_str(rc), err.msg,
			    ly_status_str(cases[i].want), cases[i].msg);
		assert_string_equal(node, "");
	}
}

static void
test_psat_node(void **state)
{
	char uid[LY_UUID_LEN + 1];
	struct ly_error err;
	const char *good = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\","
			   "\"uid\":\"" NODE_UID "\"},\"status\":{\"images\":[]}}";
	assert_int_equal(ly_psat_parse_node(good, strlen(good), "node-a", uid, &err), LY_OK);
	assert_string_equal(uid, NODE_UID);

	assert_int_equal(ly_psat_parse_node(good, strlen(good), "node-b", uid, &err), LY_E_UNTRUSTED);
	assert_string_equal(uid, "");
	const char *bad_uid = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\","
			      "\"uid\":\"not-a-uuid\"}}";
	assert_int_equal(ly_psat_parse_node(bad_uid, strlen(bad_uid), "node-a", uid, &err), LY_E_INVALID);
	const char *no_uid = "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\"}}";
	assert_int_equal(ly_psat_parse_node(no_uid, strlen(no_uid), "node-a", uid, &err), LY_E_INVALID);
	const char *pod_kind = "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-a\","
			       "\"uid\":\"" NODE_UID "\"}}";
	assert_int_equal(ly_psat_parse_node(pod_kind, strlen(pod_kind), "node-a", uid, &err), LY_E_INVALID);
}

/* ---- k8s_psat: configuration and refusals before any request ---- */

static void
test_psat_config(void **state)
{
	struct ly_attest_k8s_psat *cfg = NULL;
	struct ly_error err;
	const char *allow[] = { "lanyard:lanyard-agent" };
	struct ly_psat_cluster_config c = { "prod", allow, 1, NULL, NULL, NULL, NULL };

	assert_int_equal(ly_attest_k8s_psat_new("Bad TD", &cfg, &err), LY_E_INVALID);
	assert_null(cfg);
	assert_int_equal(ly_attest_k8s_psat_new(TD, &cfg, &err), LY_OK);
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &c, &err), LY_OK);
	/* Duplicate name. */
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &c, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "twice"));

	struct ly_psat_cluster_config b = c;
	static const char *bad_names[] = { "", ".", "..", "has space", "a/b" };
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		b.name = bad_names[i];
		assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	}
	char long_name[130];
	memset(long_name, 'c', 129);
	long_name[129] = '\0';
	b.name = long_name;
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);

	b = c;
	b.name = "b";
	b.n_allow = 0;
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	static const char *bad_allow[] = { "nocolon", "Bad:sa", "ns:Bad_SA", ":sa", "ns:", "ns:sa:x" };
	for (size_t i = 0; i < sizeof(bad_allow) / sizeof(bad_allow[0]); i++) {
		const char *one[] = { bad_allow[i] };
		b.allow = one;
		b.n_allow = 1;
		if (ly_attest_k8s_psat_add_cluster(cfg, &b, &err) != LY_E_INVALID)
			fail_msg("allow entry \"%s\" accepted", bad_allow[i]);
	}
	b = c;
	b.name = "b";
	b.api_url = "http://kubernetes.default.svc";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://user@host";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://host/?q";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = "https://host/\r\nX-Evil: 1";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.api_url = NULL;
	b.audience = "has space";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.audience = "quote\"";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.audience = "";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);
	b.audience = NULL;
	b.ca_file = "";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_INVALID);

	/* Good variants: IPv6 host, port, a trailing slash. */
	b = c;
	b.name = "b";
	b.api_url = "https://[::1]:6443/";
	b.audience = "spiffe://example.org/server";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_OK);

	/* Cluster cap. */
	char name[16];
	for (int i = 2; i < LY_K8S_CLUSTERS_MAX; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		b.name = name;
		assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_OK);
	}
	b.name = "one-too-many";
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &b, &err), LY_E_LIMIT);
	ly_attest_k8s_psat_free(cfg);
}

static void
test_psat_refusals_before_http(void **state)
{
	struct ly_attest_k8s_psat *cfg = NULL;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	const char *allow[] = { "lanyard:lanyard-agent" };
	/* Port 1 on loopback: nothing listens; the token file is missing. */
	struct ly_psat_cluster_config c = { "prod", allow, 1, NULL, "https://127.0.0.1:1", "/nonexistent/ca.crt",
		"/nonexistent/token" };
	assert_int_equal(ly_attest_k8s_psat_new(TD, &cfg, NULL), LY_OK);
	assert_int_equal(ly_attest_k8s_psat_add_cluster(cfg, &c, NULL), LY_OK);

	assert_int_equal(ly_attest_k8s_psat(cfg, "staging", "eyJhbGciOiJSUzI1NiJ9.e30.sig", 0, &r, &err),
	    LY_E_NOT_FOUND);
	assert_non_null(strstr(err.msg, "unknown cluster"));
	assert_int_equal(ly_attest_k8s_psat(cfg, "bad cluster", "abc", 0, &r, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "", 0, &r, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", NULL, 0, &r, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "tok\"en", 0, &r, &err), LY_E_INVALID);
	assert_null(strstr(err.msg, "tok\"en"));
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "tok\r\nX: y", 0, &r, &err), LY_E_INVALID);
	char *big = malloc(LY_K8S_TOKEN_MAX + 2);
	assert_non_null(big);
	memset(big, 'a', LY_K8S_TOKEN_MAX + 1);
	big[LY_K8S_TOKEN_MAX + 1] = '\0';
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", big, 0, &r, &err), LY_E_LIMIT);
	free(big);
	/* A good-looking token, but the server's own token file is missing. */
	assert_int_equal(ly_attest_k8s_psat(cfg, "prod", "secret.token.value", 0, &r, &err), LY_E_IO);
	assert_non_null(strstr(err.msg, "token file"));
	assert_null(strstr(err.msg, "secret.token.value"));
	assert_null(r.agent_id);
	ly_attest_k8s_psat_free(cfg);
}

int
main(void)
{
	const struct CMUnitTest join[] = {
		cmocka_unit_test_setup_teardown(test_join_token_single_use, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_retry_same_key, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_expired, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_custom_id, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_other_trust_domain, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_reserved_ids, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_syntax, ds_setup, ds_teardown),
		cmocka_unit_test(test_join_token_default_id),
	};
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
	const struct CMUnitTest psat[] = {
		cmocka_unit_test(test_psat_review_good),
		cmocka_unit_test(test_psat_review_refusals),
		cmocka_unit_test(test_psat_json_caps),
		cmocka_unit_test(test_psat_pod),
		cmocka_unit_test(test_psat_node),
		cmocka_unit_test(test_psat_config),
		cmocka_unit_test(test_psat_refusals_before_http),
	};
	int failed = cmocka_run_group_tests_name("join_token", join, NULL, NULL);
	failed += cmocka_run_group_tests_name("x509pop", pop, pki_setup, pki_teardown);
	failed += cmocka_run_group_tests_name("k8s_psat", psat, NULL, NULL);
	return failed;
}
