/*
 * test_x509pop.c: the x509pop proof of possession (lib/x509pop.h): the
 * signed message (context prefix + nonce), the algorithm per key type
 * (ECDSA SHA-256; RSA-PSS SHA-256, MGF1-SHA-256, salt 32), nonce length,
 * signature caps, key policy. Each rule has a value that must be refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "lib/caps.h"
#include "lib/x509pop.h"
#include "tests/unit/testutil_x509.h"

static EVP_PKEY *rsa_key; /* one RSA-2048 key for the whole file: generation is slow */

static int
group_setup(void **state)
{
	rsa_key = tu_key(LY_KEY_RSA_2048);
	return 0;
}

static int
group_teardown(void **state)
{
	EVP_PKEY_free(rsa_key);
	return 0;
}

static void
nonce(uint8_t n[LY_X509POP_NONCE_LEN])
{
	assert_int_equal(ly_x509pop_nonce_new(n, NULL), LY_OK);
}

/* A signature over an arbitrary message with explicit parameters, to forge near misses. */
static void
raw_sign(EVP_PKEY *key, const char *md, int padding, int saltlen, const uint8_t *msg, size_t len, struct ly_buf *out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	assert_non_null(ctx);
	assert_int_equal(EVP_DigestSignInit_ex(ctx, &pctx, md, NULL, NULL, key, NULL), 1);
	if (padding != 0) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, padding), 1);
		if (padding == RSA_PKCS1_PSS_PADDING)
			assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen), 1);
	}
	size_t sl = 0;
	assert_int_equal(EVP_DigestSign(ctx, NULL, &sl, msg, len), 1);
	out->data = malloc(sl);
	assert_non_null(out->data);
	assert_int_equal(EVP_DigestSign(ctx, out->data, &sl, msg, len), 1);
	out->len = sl;
	EVP_MD_CTX_free(ctx);
}

/* "lanyard x509pop v1" || nonce */
static size_t
message(const uint8_t n[LY_X509POP_NONCE_LEN], uint8_t *out)
{
	size_t cl = strlen(LY_X509POP_CONTEXT);
	memcpy(out, LY_X509POP_CONTEXT, cl);
	memcpy(out + cl, n, LY_X509POP_NONCE_LEN);
	return cl + LY_X509POP_NONCE_LEN;
}

static void
roundtrip(EVP_PKEY *key)
{
	uint8_t n[LY_X509POP_NONCE_LEN];
	struct ly_buf sig = LY_BUF_INIT;
	struct ly_error err;
	nonce(n);
	assert_int_equal(ly_x509pop_sign(key, n, sizeof(n), &sig, &err), LY_OK);
	assert_true(sig.len > 0 && sig.len <= LY_X509POP_SIG_MAX);
	assert_int_equal(ly_x509pop_verify_key(key, n, sizeof(n), sig.data, sig.len, &err), LY_OK);
	/* One flipped bit anywhere in the signature breaks it. */
	sig.data[sig.len / 2] ^= 0x01;
	assert_int_equal(ly_x509pop_verify_key(key, n, sizeof(n), sig.data, sig.len, &err), LY_E_UNTRUSTED);
	ly_buf_free(&sig);
}

static void
test_sign_verify_ec_p256(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	roundtrip(k);
	EVP_PKEY_free(k);
}

static void
test_sign_verify_ec_p384(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P384);
	roundtrip(k);
	EVP_PKEY_free(k);
}

static void
test_sign_verify_rsa(void **state)
{
	roundtrip(rsa_key);
}

/* The leaf certificate's key is the one checked. */
static void
test_verify_with_certificate(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	EVP_PKEY *other = tu_key(LY_KEY_EC_P256);
	struct tu_spec spec = tu_leaf_spec(NULL);
	X509 *leaf = tu_make(&spec, k, NULL, NULL);
	X509 *other_leaf = tu_make(&spec, other, NULL, NULL);
	uint8_t n[LY_X509POP_NONCE_LEN];
	struct ly_buf sig = LY_BUF_INIT;
	struct ly_error err;
	nonce(n);
	assert_int_equal(ly_x509pop_sign(k, n, sizeof(n), &sig, NULL), LY_OK);
	assert_int_equal(ly_x509pop_verify(leaf, n, sizeof(n), sig.data, sig.len, &err), LY_OK);
	assert_int_equal(ly_x509pop_verify(other_leaf, n, sizeof(n), sig.data, sig.len, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "does not verify"));
	assert_int_equal(ly_x509pop_verify(NULL, n, sizeof(n), sig.data, sig.len, &err), LY_E_INVALID);
	ly_buf_free(&sig);
	X509_free(leaf);
	X509_free(other_leaf);
	EVP_PKEY_free(k);
	EVP_PKEY_free(other);
}

static void
test_wrong_nonce_refused(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	uint8_t n[LY_X509POP_NONCE_LEN], m[LY_X509POP_NONCE_LEN];
	struct ly_buf sig = LY_BUF_INIT;
	nonce(n);
	memcpy(m, n, sizeof(m));
	m[LY_X509POP_NONCE_LEN - 1] ^= 0x80;
	assert_int_equal(ly_x509pop_sign(k, n, sizeof(n), &sig, NULL), LY_OK);
	assert_int_equal(ly_x509pop_verify_key(k, m, sizeof(m), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	ly_buf_free(&sig);
	EVP_PKEY_free(k);
}

static void
test_other_key_refused(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	EVP_PKEY *other = tu_key(LY_KEY_EC_P256);
	uint8_t n[LY_X509POP_NONCE_LEN];
	struct ly_buf sig = LY_BUF_INIT;
	nonce(n);
	assert_int_equal(ly_x509pop_sign(other, n, sizeof(n), &sig, NULL), LY_OK);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	/* An EC signature checked against an RSA key: refused, not crashed. */
	assert_int_equal(ly_x509pop_verify_key(rsa_key, n, sizeof(n), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	ly_buf_free(&sig);
	EVP_PKEY_free(k);
	EVP_PKEY_free(other);
}

/* Domain separation: a signature over the bare nonce, or under another prefix, proves nothing. */
static void
test_context_prefix_required(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	uint8_t n[LY_X509POP_NONCE_LEN];
	uint8_t msg[64];
	struct ly_buf sig = LY_BUF_INIT;
	nonce(n);

	raw_sign(k, "SHA256", 0, 0, n, sizeof(n), &sig);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	ly_buf_free(&sig);

	size_t len = message(n, msg);
	msg[0] = 'L';
	raw_sign(k, "SHA256", 0, 0, msg, len, &sig);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	ly_buf_free(&sig);

	/* The exact message signed by hand verifies: the test above failed for the prefix only. */
	msg[0] = 'l';
	raw_sign(k, "SHA256", 0, 0, msg, len, &sig);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), sig.data, sig.len, NULL), LY_OK);
	ly_buf_free(&sig);
	EVP_PKEY_free(k);
}

/* The digest is SHA-256: the right message hashed with SHA-384 is refused. */
static void
test_digest_is_sha256(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	uint8_t n[LY_X509POP_NONCE_LEN], msg[64];
	struct ly_buf sig = LY_BUF_INIT;
	nonce(n);
	size_t len = message(n, msg);
	raw_sign(k, "SHA384", 0, 0, msg, len, &sig);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	ly_buf_free(&sig);
	EVP_PKEY_free(k);
}

/* RSA: PSS with salt 32 only; PKCS#1 v1.5 and other salt lengths are refused. */
static void
test_rsa_pss_only(void **state)
{
	uint8_t n[LY_X509POP_NONCE_LEN], msg[64];
	struct ly_buf sig = LY_BUF_INIT;
	nonce(n);
	size_t len = message(n, msg);

	raw_sign(rsa_key, "SHA256", RSA_PKCS1_PADDING, 0, msg, len, &sig);
	assert_int_equal(ly_x509pop_verify_key(rsa_key, n, sizeof(n), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	ly_buf_free(&sig);

	raw_sign(rsa_key, "SHA256", RSA_PKCS1_PSS_PADDING, 20, msg, len, &sig);
	assert_int_equal(ly_x509pop_verify_key(rsa_key, n, sizeof(n), sig.data, sig.len, NULL), LY_E_UNTRUSTED);
	ly_buf_free(&sig);

	raw_sign(rsa_key, "SHA256", RSA_PKCS1_PSS_PADDING, 32, msg, len, &sig);
	assert_int_equal(ly_x509pop_verify_key(rsa_key, n, sizeof(n), sig.data, sig.len, NULL), LY_OK);
	ly_buf_free(&sig);
}

static void
test_nonce_length(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	uint8_t n[LY_X509POP_NONCE_LEN + 1];
	struct ly_buf sig = LY_BUF_INIT;
	struct ly_error err;
	memset(n, 7, sizeof(n));
	assert_int_equal(ly_x509pop_sign(k, n, LY_X509POP_NONCE_LEN - 1, &sig, &err), LY_E_INVALID);
	assert_null(sig.data);
	assert_int_equal(ly_x509pop_sign(k, n, LY_X509POP_NONCE_LEN + 1, &sig, &err), LY_E_INVALID);
	assert_int_equal(ly_x509pop_sign(k, NULL, LY_X509POP_NONCE_LEN, &sig, &err), LY_E_INVALID);
	assert_int_equal(ly_x509pop_sign(k, n, LY_X509POP_NONCE_LEN, &sig, &err), LY_OK);
	assert_int_equal(ly_x509pop_verify_key(k, n, LY_X509POP_NONCE_LEN - 1, sig.data, sig.len, &err), LY_E_INVALID);
	assert_int_equal(ly_x509pop_verify_key(k, n, LY_X509POP_NONCE_LEN, sig.data, sig.len, &err), LY_OK);
	/* A non-empty output buffer is a caller bug, refused. */
	assert_int_equal(ly_x509pop_sign(k, n, LY_X509POP_NONCE_LEN, &sig, &err), LY_E_INTERNAL);
	ly_buf_free(&sig);
	EVP_PKEY_free(k);
}

static void
test_signature_size(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	uint8_t n[LY_X509POP_NONCE_LEN];
	static uint8_t big[LY_X509POP_SIG_MAX + 1];
	nonce(n);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), big, sizeof(big), NULL), LY_E_LIMIT);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), big, sizeof(big) - 1, NULL), LY_E_UNTRUSTED);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), big, 0, NULL), LY_E_INVALID);
	assert_int_equal(ly_x509pop_verify_key(k, n, sizeof(n), NULL, 10, NULL), LY_E_INVALID);
	EVP_PKEY_free(k);
}

/* Weak and foreign key types are refused on both sides. */
static void
test_key_policy(void **state)
{
	uint8_t n[LY_X509POP_NONCE_LEN];
	uint8_t junk[64];
	struct ly_buf sig = LY_BUF_INIT;
	nonce(n);
	memset(junk, 1, sizeof(junk));

	EVP_PKEY *weak = tu_rsa_key(1024);
	assert_int_equal(ly_x509pop_sign(weak, n, sizeof(n), &sig, NULL), LY_E_UNSUPPORTED);
	assert_int_equal(ly_x509pop_verify_key(weak, n, sizeof(n), junk, sizeof(junk), NULL), LY_E_UNSUPPORTED);
	EVP_PKEY_free(weak);

	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	assert_int_equal(ly_x509pop_sign(ed, n, sizeof(n), &sig, NULL), LY_E_UNSUPPORTED);
	assert_int_equal(ly_x509pop_verify_key(ed, n, sizeof(n), junk, sizeof(junk), NULL), LY_E_UNSUPPORTED);
	EVP_PKEY_free(ed);

	EVP_PKEY *k1 = tu_ec_key("secp256k1");
	assert_int_equal(ly_x509pop_sign(k1, n, sizeof(n), &sig, NULL), LY_E_UNSUPPORTED);
	EVP_PKEY_free(k1);
	assert_null(sig.data);
}

static void
test_nonces_fresh(void **state)
{
	uint8_t a[LY_X509POP_NONCE_LEN], b[LY_X509POP_NONCE_LEN];
	nonce(a);
	nonce(b);
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(ly_x509pop_nonce_new(NULL, NULL), LY_E_INTERNAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sign_verify_ec_p256),
		cmocka_unit_test(test_sign_verify_ec_p384),
		cmocka_unit_test(test_sign_verify_rsa),
		cmocka_unit_test(test_verify_with_certificate),
		cmocka_unit_test(test_wrong_nonce_refused),
		cmocka_unit_test(test_other_key_refused),
		cmocka_unit_test(test_context_prefix_required),
		cmocka_unit_test(test_digest_is_sha256),
		cmocka_unit_test(test_rsa_pss_only),
		cmocka_unit_test(test_nonce_length),
		cmocka_unit_test(test_signature_size),
		cmocka_unit_test(test_key_policy),
		cmocka_unit_test(test_nonces_fresh),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
