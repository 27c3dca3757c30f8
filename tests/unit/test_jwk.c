/* test_jwk.c: public JWKs both ways, every refusal, kid rules, the strict JSON loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "lib/b64.h"
#include "lib/jwk.h"

static EVP_PKEY *rsa2048;

static int
setup(void **state)
{
	rsa2048 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	return rsa2048 == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	EVP_PKEY_free(rsa2048);
	return 0;
}

static EVP_PKEY *
gen_ec(const char *group)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", group);
	assert_non_null(k);
	return k;
}

/* The public JWK of `key`, which must be accepted. */
static json_t *
jwk_of(EVP_PKEY *key)
{
	json_t *j = NULL;
	assert_int_equal(ly_jwk_from_pkey(key, &j, NULL), LY_OK);
	assert_non_null(j);
	return j;
}

/* Expects ly_jwk_to_pkey(j) to fail with `code` and a message containing `msg`. */
static void
expect_refused(const json_t *j, ly_status code, const char *msg)
{
	EVP_PKEY *k = NULL;
	struct ly_error err;
	ly_status rc = ly_jwk_to_pkey(j, &k, &err);
	if (rc != code || strstr(err.msg, msg) == NULL)
		fail_msg("expected %d '%s', got %d '%s'", code, msg, rc, err.msg);
	assert_null(k);
}

static void
set_b64url(json_t *j, const char *name, const uint8_t *data, size_t len)
{
	char *s = NULL;
	assert_int_equal(ly_b64url_encode(data, len, &s, NULL), LY_OK);
	assert_int_equal(json_object_set_new(j, name, json_string(s)), 0);
	free(s);
}

static struct ly_buf
get_b64url(const json_t *j, const char *name)
{
	struct ly_buf b = LY_BUF_INIT;
	const json_t *v = json_object_get(j, name);
	assert_non_null(v);
	assert_int_equal(ly_b64url_decode(json_string_value(v), json_string_length(v), &b, NULL), LY_OK);
	return b;
}

static void
test_ec_round_trip(void **state)
{
	static const struct {
		const char *group;
		const char *crv;
		size_t width;
	} cases[] = { { "P-256", "P-256", 32 }, { "P-384", "P-384", 48 }, { "P-521", "P-521", 66 } };
	for (size_t i = 0; i < 3; i++) {
		EVP_PKEY *key = gen_ec(cases[i].group);
		json_t *j = jwk_of(key);
		assert_string_equal(json_string_value(json_object_get(j, "kty")), "EC");
		assert_string_equal(json_string_value(json_object_get(j, "crv")), cases[i].crv);
		/* The private key never leaves. */
		assert_null(json_object_get(j, "d"));
		struct ly_buf x = get_b64url(j, "x");
		assert_int_equal(x.len, cases[i].width);
		ly_buf_free(&x);
		size_t width = 0;
		assert_string_equal(ly_jwk_ec_crv(key, &width), cases[i].crv);
		assert_int_equal(width, cases[i].width);

		EVP_PKEY *back = NULL;
		assert_int_equal(ly_jwk_to_pkey(j, &back, NULL), LY_OK);
		assert_int_equal(EVP_PKEY_eq(back, key), 1);
		/* Public only: no private scalar came back. */
		BIGNUM *d = NULL;
		assert_int_equal(EVP_PKEY_get_bn_param(back, OSSL_PKEY_PARAM_PRIV_KEY, &d), 0);
		EVP_PKEY_free(back);
		json_decref(j);
		EVP_PKEY_free(key);
	}
}

static void
test_rsa_round_trip(void **state)
{
	json_t *j = jwk_of(rsa2048);
	assert_string_equal(json_string_value(json_object_get(j, "kty")), "RSA");
	assert_string_equal(json_string_value(json_object_get(j, "e")), "AQAB");
	assert_null(json_object_get(j, "d"));
	assert_null(json_object_get(j, "p"));
	struct ly_buf n = get_b64url(j, "n");
	assert_int_equal(n.len, 256);
	ly_buf_free(&n);
	EVP_PKEY *back = NULL;
	assert_int_equal(ly_jwk_to_pkey(j, &back, NULL), LY_OK);
	assert_int_equal(EVP_PKEY_eq(back, rsa2048), 1);
	EVP_PKEY_free(back);
	assert_null(ly_jwk_ec_crv(rsa2048, NULL));
	json_decref(j);
}

/* A public JWK carrying a private member is refused, whatever else it has (RFC 7517 §9.2). */
static void
test_refuses_private_members(void **state)
{
	EVP_PKEY *ec = gen_ec("P-256");
	json_t *base_ec = jwk_of(ec);
	json_t *base_rsa = jwk_of(rsa2048);
	const char *members[] = { "d", "p", "q", "dp", "dq", "qi", "oth", "k" };
	for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
		json_t *j = json_deep_copy(i == 0 ? base_ec : base_rsa);
		assert_int_equal(json_object_set_new(j, members[i], json_string("AQAB")), 0);
		char want[64];
		snprintf(want, sizeof(want), "private member '%s'", members[i]);
		expect_refused(j, LY_E_INVALID, want);
		json_decref(j);
	}
	json_decref(base_ec);
	json_decref(base_rsa);
	EVP_PKEY_free(ec);
}

/* Symmetric keys are never trust anchors. */
static void
test_refuses_oct(void **state)
{
	json_t *j = json_pack("{s:s}", "kty", "oct");
	expect_refused(j, LY_E_INVALID, "kty 'oct'");
	json_decref(j);
}

static void
test_refuses_unknown_types(void **state)
{
	json_t *j = json_pack("{s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", "AAAA");
	expect_refused(j, LY_E_UNSUPPORTED, "kty not supported");
	json_decref(j);
	j = json_pack("{s:s}", "crv", "P-256");
	expect_refused(j, LY_E_INVALID, "'kty' missing");
	json_decref(j);
	j = json_pack("{s:i}", "kty", 1);
	expect_refused(j, LY_E_INVALID, "'kty' missing or not a string");
	json_decref(j);
	j = json_pack("[s]", "EC");
	expect_refused(j, LY_E_INVALID, "not a JSON object");
	json_decref(j);

	/* A key type we cannot publish or verify with. */
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	struct ly_error err;
	assert_int_equal(ly_jwk_check_pkey(ed, &err), LY_E_UNSUPPORTED);
	json_t *out = NULL;
	assert_int_equal(ly_jwk_from_pkey(ed, &out, NULL), LY_E_UNSUPPORTED);
	assert_null(out);
	EVP_PKEY_free(ed);
}

static void
test_refuses_bad_ec(void **state)
{
	EVP_PKEY *key = gen_ec("P-256");
	json_t *good = jwk_of(key);
	json_t *j;

	/* Unknown and unsupported curves. */
	j = json_deep_copy(good);
	json_object_set_new(j, "crv", json_string("secp256k1"));
	expect_refused(j, LY_E_UNSUPPORTED, "crv not P-256");
	json_decref(j);
	j = json_deep_copy(good);
	json_object_set_new(j, "crv", json_string("p-256"));
	expect_refused(j, LY_E_UNSUPPORTED, "crv not P-256");
	json_decref(j);
	j = json_deep_copy(good);
	json_object_del(j, "crv");
	expect_refused(j, LY_E_INVALID, "'crv'");
	json_decref(j);

	/* The curve must match the coordinates' size: P-384 with 32-byte coordinates. */
	j = json_deep_copy(good);
	json_object_set_new(j, "crv", json_string("P-384"));
	expect_refused(j, LY_E_INVALID, "coordinates must be 48 bytes");
	json_decref(j);

	/* Coordinates shorter than the field (leading zero dropped) are refused. */
	struct ly_buf x = get_b64url(good, "x");
	j = json_deep_copy(good);
	set_b64url(j, "x", x.data + 1, x.len - 1);
	expect_refused(j, LY_E_INVALID, "coordinates must be 32 bytes");
	json_decref(j);

	/* A point off the curve. */
	struct ly_buf y = get_b64url(good, "y");
	y.data[y.len - 1] ^= 1;
	j = json_deep_copy(good);
	set_b64url(j, "y", y.data, y.len);
	expect_refused(j, LY_E_INVALID, "not a valid");
	json_decref(j);

	/* Missing, mistyped, badly encoded. */
	j = json_deep_copy(good);
	json_object_del(j, "y");
	expect_refused(j, LY_E_INVALID, "'y' missing");
	json_decref(j);
	j = json_deep_copy(good);
	json_object_set_new(j, "x", json_integer(5));
	expect_refused(j, LY_E_INVALID, "'x' is not a string");
	json_decref(j);
	j = json_deep_copy(good);
	char padded[128];
	snprintf(padded, sizeof(padded), "%s", json_string_value(json_object_get(good, "x")));
	padded[strlen(padded) - 1] = '=';
	json_object_set_new(j, "x", json_string(padded));
	expect_refused(j, LY_E_INVALID, "padding");
	json_decref(j);

	ly_buf_free(&x);
	ly_buf_free(&y);
	json_decref(good);
	EVP_PKEY_free(key);
}

static void
test_refuses_small_rsa(void **state)
{
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	assert_non_null(small);
	struct ly_error err;
	assert_int_equal(ly_jwk_check_pkey(small, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "at least 2048"));
	json_t *out = NULL;
	assert_int_equal(ly_jwk_from_pkey(small, &out, NULL), LY_E_UNSUPPORTED);
	assert_null(out);

	/* The same key written by hand must be refused on the way in. */
	BIGNUM *n = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(small, OSSL_PKEY_PARAM_RSA_N, &n), 1);
	uint8_t nb[128];
	assert_int_equal(BN_bn2binpad(n, nb, sizeof(nb)), 128);
	json_t *j = json_pack("{s:s, s:s}", "kty", "RSA", "e", "AQAB");
	set_b64url(j, "n", nb, sizeof(nb));
	expect_refused(j, LY_E_UNSUPPORTED, "at least 2048");
	json_decref(j);
	BN_free(n);
	EVP_PKEY_free(small);
}

static void
test_refuses_bad_rsa(void **state)
{
	json_t *good = jwk_of(rsa2048);
	struct ly_buf n = get_b64url(good, "n");
	json_t *j;

	/* Over LY_RSA_BITS_MAX. */
	uint8_t *big = malloc(LY_RSA_BITS_MAX / 8 + 1);
	memset(big, 0xab, LY_RSA_BITS_MAX / 8 + 1);
	j = json_deep_copy(good);
	set_b64url(j, "n", big, LY_RSA_BITS_MAX / 8 + 1);
	expect_refused(j, LY_E_LIMIT, "over 8192 bits");
	json_decref(j);
	free(big);

	/* Not minimal (RFC 7518 §2). */
	uint8_t *padded = malloc(n.len + 1);
	padded[0] = 0;
	memcpy(padded + 1, n.data, n.len);
	j = json_deep_copy(good);
	set_b64url(j, "n", padded, n.len + 1);
	expect_refused(j, LY_E_INVALID, "minimal");
	json_decref(j);
	free(padded);
	j = json_deep_copy(good);
	json_object_set_new(j, "e", json_string("AAEAAQ"));
	expect_refused(j, LY_E_INVALID, "minimal");
	json_decref(j);

	/* Even modulus; even exponent; exponent 1; exponent too long. */
	n.data[n.len - 1] &= 0xfe;
	j = json_deep_copy(good);
	set_b64url(j, "n", n.data, n.len);
	expect_refused(j, LY_E_INVALID, "modulus is even");
	json_decref(j);
	j = json_deep_copy(good);
	json_object_set_new(j, "e", json_string("AQAC"));
	expect_refused(j, LY_E_INVALID, "odd and greater than 1");
	json_decref(j);
	j = json_deep_copy(good);
	json_object_set_new(j, "e", json_string("AQ"));
	expect_refused(j, LY_E_INVALID, "odd and greater than 1");
	json_decref(j);
	j = json_deep_copy(good);
	json_object_set_new(j, "e", json_string("AQAAAAAAAAAB"));
	expect_refused(j, LY_E_LIMIT, "'e' longer than 8 bytes");
	json_decref(j);
	j = json_deep_copy(good);
	json_object_del(j, "e");
	expect_refused(j, LY_E_INVALID, "'e' missing");
	json_decref(j);

	ly_buf_free(&n);
	json_decref(good);
}

/* Unknown public members are ignored: use, kid, alg, key_ops... */
static void
test_ignores_other_members(void **state)
{
	EVP_PKEY *key = gen_ec("P-384");
	json_t *j = jwk_of(key);
	json_object_set_new(j, "use", json_string("jwt-svid"));
	json_object_set_new(j, "kid", json_string("abc"));
	json_object_set_new(j, "alg", json_string("ES384"));
	json_object_set_new(j, "x-vendor", json_pack("{s:b}", "a", 1));
	EVP_PKEY *back = NULL;
	assert_int_equal(ly_jwk_to_pkey(j, &back, NULL), LY_OK);
	assert_int_equal(EVP_PKEY_eq(back, key), 1);
	EVP_PKEY_free(back);
	json_decref(j);
	EVP_PKEY_free(key);
}

static void
test_kid_rules(void **state)
{
	struct ly_error err;
	assert_int_equal(ly_jwk_kid_check("Ab0-_.~!", 8, NULL), LY_OK);
	assert_int_equal(ly_jwk_kid_check("", 0, &err), LY_E_INVALID);
	assert_int_equal(ly_jwk_kid_check(NULL, 0, &err), LY_E_INVALID);
	assert_int_equal(ly_jwk_kid_check("a b", 3, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "0x20"));
	assert_int_equal(ly_jwk_kid_check("a\nb", 3, &err), LY_E_INVALID);
	assert_int_equal(ly_jwk_kid_check("caf\xc3\xa9", 5, &err), LY_E_INVALID);
	char kid[LY_JWT_KID_MAX + 2];
	memset(kid, 'k', sizeof(kid));
	assert_int_equal(ly_jwk_kid_check(kid, LY_JWT_KID_MAX, NULL), LY_OK);
	assert_int_equal(ly_jwk_kid_check(kid, LY_JWT_KID_MAX + 1, &err), LY_E_LIMIT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ec_round_trip),
		cmocka_unit_test(test_rsa_round_trip),
		cmocka_unit_test(test_refuses_private_members),
		cmocka_unit_test(test_refuses_oct),
		cmocka_unit_test(test_refuses_unknown_types),
		cmocka_unit_test(test_refuses_bad_ec),
		cmocka_unit_test(test_refuses_small_rsa),
		cmocka_unit_test(test_refuses_bad_rsa),
		cmocka_unit_test(test_ignores_other_members),
		cmocka_unit_test(test_kid_rules),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
