/* test_keys.c: key types, generation, the key policy, PKCS#8 and PEM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>

#include "lib/caps.h"
#include "lib/keys.h"
#include "testutil_x509.h"

static void
test_type_parse_and_name(void **state)
{
	enum ly_key_type t;
	const char *names[] = { "ec-p256", "ec-p384", "rsa-2048" };
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ly_key_type_parse(names[i], &t, NULL), LY_OK);
		assert_int_equal(t, i);
		assert_string_equal(ly_key_type_name(t), names[i]);
	}
	assert_int_equal(LY_KEY_TYPE_DEFAULT, LY_KEY_EC_P256);
	struct ly_error err;
	const char *bad[] = { "EC-P256", "p256", "ec-p521", "rsa-1024", "", "ec-p256 " };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ly_key_type_parse(bad[i], &t, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "expected ec-p256"));
	assert_int_equal(ly_key_type_parse(NULL, &t, NULL), LY_E_INVALID);
	assert_string_equal(ly_key_type_name((enum ly_key_type)7), "unknown");
}

static void
test_generate_each_type(void **state)
{
	for (int i = 0; i < 3; i++) {
		EVP_PKEY *k = NULL;
		assert_int_equal(ly_key_generate((enum ly_key_type)i, &k, NULL), LY_OK);
		assert_non_null(k);
		enum ly_key_type t;
		assert_int_equal(ly_key_type_of(k, &t, NULL), LY_OK);
		assert_int_equal(t, i);
		assert_int_equal(ly_key_check_acceptable(k, NULL), LY_OK);
		EVP_PKEY_free(k);
	}
	/* The cached context gives a new key each time. */
	EVP_PKEY *a = tu_key(LY_KEY_EC_P256), *b = tu_key(LY_KEY_EC_P256);
	assert_false(ly_key_public_equal(a, b));
	assert_true(ly_key_public_equal(a, a));
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	EVP_PKEY *k = NULL;
	assert_int_equal(ly_key_generate((enum ly_key_type)3, &k, NULL), LY_E_INVALID);
	assert_null(k);
}

static void *
generate_in_thread(void *arg)
{
	EVP_PKEY *k = NULL;
	ly_status *rc = arg;
	*rc = ly_key_generate(LY_KEY_EC_P384, &k, NULL);
	EVP_PKEY_free(k);
	return NULL;
}

/* The per-thread context is freed at thread exit (LeakSanitizer checks). */
static void
test_generate_in_threads(void **state)
{
	for (int i = 0; i < 3; i++) {
		pthread_t th;
		ly_status rc = LY_E_INTERNAL;
		assert_int_equal(pthread_create(&th, NULL, generate_in_thread, &rc), 0);
		assert_int_equal(pthread_join(th, NULL), 0);
		assert_int_equal(rc, LY_OK);
	}
}

static void
test_type_of_refuses_others(void **state)
{
	struct ly_error err;
	enum ly_key_type t;
	EVP_PKEY *p521 = tu_ec_key("P-521");
	assert_int_equal(ly_key_type_of(p521, &t, &err), LY_E_UNSUPPORTED);
	/* ... though P-521 is acceptable from outside. */
	assert_int_equal(ly_key_check_acceptable(p521, NULL), LY_OK);
	EVP_PKEY_free(p521);
	assert_int_equal(ly_key_type_of(NULL, &t, NULL), LY_E_UNSUPPORTED);
}

/* Each key the policy refuses, by rule. */
static void
test_acceptable_refuses_weak(void **state)
{
	struct ly_error err;

	EVP_PKEY *rsa1024 = tu_rsa_key(1024);
	assert_int_equal(ly_key_check_acceptable(rsa1024, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "RSA key of 1024 bits"));
	EVP_PKEY_free(rsa1024);

	EVP_PKEY *k1 = tu_ec_key("secp256k1");
	assert_int_equal(ly_key_check_acceptable(k1, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "curve secp256k1"));
	EVP_PKEY_free(k1);

	EVP_PKEY *p224 = tu_ec_key("P-224");
	assert_int_equal(ly_key_check_acceptable(p224, &err), LY_E_UNSUPPORTED);
	EVP_PKEY_free(p224);

	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	assert_int_equal(ly_key_check_acceptable(ed, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "ED25519"));
	EVP_PKEY_free(ed);

	assert_int_equal(ly_key_check_acceptable(NULL, &err), LY_E_INVALID);
}

/* A P-256 key whose encoding carries explicit curve parameters. */
static void
test_acceptable_refuses_explicit_params(void **state)
{
	struct ly_error err;
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(k, OSSL_PKEY_PARAM_EC_ENCODING, OSSL_PKEY_EC_ENCODING_EXPLICIT),
	    1);
	assert_int_equal(ly_key_check_acceptable(k, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "explicit"));
	/* And the same key read back from PKCS#8 DER. */
	unsigned char *der = NULL;
	PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
	assert_non_null(p8);
	int len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
	assert_true(len > 0);
	EVP_PKEY *back = NULL;
	assert_int_equal(ly_key_from_pkcs8_der(der, (size_t)len, &back, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "explicit"));
	assert_null(back);
	OPENSSL_clear_free(der, (size_t)len);
	PKCS8_PRIV_KEY_INFO_free(p8);
	EVP_PKEY_free(k);
}

static void
test_pkcs8_round_trip(void **state)
{
	EVP_PKEY *keys[] = { tu_key(LY_KEY_EC_P256), tu_key(LY_KEY_EC_P384), tu_ec_key("P-521"),
		tu_key(LY_KEY_RSA_2048) };
	for (size_t i = 0; i < 4; i++) {
		struct ly_buf der = LY_BUF_INIT;
		assert_int_equal(ly_key_to_pkcs8_der(keys[i], &der, NULL), LY_OK);
		assert_true(der.len > 0 && der.len <= LY_KEY_DER_MAX);
		EVP_PKEY *back = NULL;
		assert_int_equal(ly_key_from_pkcs8_der(der.data, der.len, &back, NULL), LY_OK);
		assert_true(ly_key_public_equal(keys[i], back));
		EVP_PKEY_free(back);
		ly_buf_free_secret(&der);
		assert_null(der.data);
		EVP_PKEY_free(keys[i]);
	}
}

static void
test_pkcs8_refusals(void **state)
{
	struct ly_error err;
	EVP_PKEY *out = NULL;
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct ly_buf der = LY_BUF_INIT;
	assert_int_equal(ly_key_to_pkcs8_der(k, &der, NULL), LY_OK);

	/* Empty. */
	assert_int_equal(ly_key_from_pkcs8_der(der.data, 0, &out, &err), LY_E_INVALID);
	assert_int_equal(ly_key_from_pkcs8_der(NULL, 10, &out, &err), LY_E_INVALID);
	/* One trailing byte. */
	uint8_t *longer = malloc(der.len + 1);
	assert_non_null(longer);
	memcpy(longer, der.data, der.len);
	longer[der.len] = 0;
	assert_int_equal(ly_key_from_pkcs8_der(longer, der.len + 1, &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "trailing"));
	assert_null(out);
	OPENSSL_cleanse(longer, der.len + 1);
	free(longer);
	/* Truncated by one byte. */
	assert_int_equal(ly_key_from_pkcs8_der(der.data, der.len - 1, &out, &err), LY_E_INVALID);
	/* Over the cap, refused before parsing. */
	uint8_t *big = calloc(1, LY_KEY_DER_MAX + 1);
	assert_non_null(big);
	assert_int_equal(ly_key_from_pkcs8_der(big, LY_KEY_DER_MAX + 1, &out, &err), LY_E_LIMIT);
	/* Garbage of a legal size. */
	assert_int_equal(ly_key_from_pkcs8_der(big, 64, &out, &err), LY_E_INVALID);
	free(big);
	ly_buf_free_secret(&der);
	EVP_PKEY_free(k);

	/* Well-formed PKCS#8 of keys the policy refuses. */
	EVP_PKEY *weak[] = { tu_rsa_key(1024), tu_ec_key("secp256k1"), EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") };
	for (size_t i = 0; i < 3; i++) {
		assert_non_null(weak[i]);
		assert_int_equal(ly_key_to_pkcs8_der(weak[i], &der, NULL), LY_OK);
		assert_int_equal(ly_key_from_pkcs8_der(der.data, der.len, &out, &err), LY_E_UNSUPPORTED);
		assert_null(out);
		ly_buf_free_secret(&der);
		EVP_PKEY_free(weak[i]);
	}
}

/* Our PKCS#8 for EC keys is byte for byte OpenSSL's, and we read OpenSSL's. */
static void
test_pkcs8_matches_openssl(void **state)
{
	EVP_PKEY *keys[] = { tu_key(LY_KEY_EC_P256), tu_key(LY_KEY_EC_P384), tu_ec_key("P-521") };
	for (size_t i = 0; i < 3; i++) {
		PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(keys[i]);
		assert_non_null(p8);
		unsigned char *ref = NULL;
		int rlen = i2d_PKCS8_PRIV_KEY_INFO(p8, &ref);
		assert_true(rlen > 0);
		struct ly_buf der = LY_BUF_INIT;
		assert_int_equal(ly_key_to_pkcs8_der(keys[i], &der, NULL), LY_OK);
		assert_int_equal(der.len, (size_t)rlen);
		assert_memory_equal(der.data, ref, der.len);
		EVP_PKEY *back = NULL;
		assert_int_equal(ly_key_from_pkcs8_der(ref, (size_t)rlen, &back, NULL), LY_OK);
		assert_true(ly_key_public_equal(back, keys[i]));
		/* The imported key signs, and its signature verifies with the original. */
		unsigned char sig[256];
		size_t siglen = sizeof(sig);
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, back), 1);
		assert_int_equal(EVP_DigestSign(md, sig, &siglen, (const unsigned char *)"msg", 3), 1);
		EVP_MD_CTX_free(md);
		md = EVP_MD_CTX_new();
		assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, keys[i]), 1);
		assert_int_equal(EVP_DigestVerify(md, sig, siglen, (const unsigned char *)"msg", 3), 1);
		EVP_MD_CTX_free(md);
		EVP_PKEY_free(back);
		ly_buf_free_secret(&der);
		OPENSSL_clear_free(ref, (size_t)rlen);
		PKCS8_PRIV_KEY_INFO_free(p8);
		EVP_PKEY_free(keys[i]);
	}
}

/* Appends tag, length, value (length < 256) at *p. */
static void
tlv(uint8_t **p, uint8_t tag, const uint8_t *v, size_t len)
{
	uint8_t *q = *p;
	*q++ = tag;
	if (len >= 0x80)
		*q++ = 0x81;
	*q++ = (uint8_t)len;
	memmove(q, v, len);
	*p = q + len;
}

/*
 * A P-256 PKCS#8 built by hand from its parts: ECPrivateKey version, d,
 * optional [0] curve OID, optional [1] point. Returns the length.
 */
static size_t
p256_pkcs8(uint8_t *out, uint8_t version, const uint8_t *d, size_t dlen, const uint8_t *curve, size_t curve_len,
    const uint8_t *point, size_t point_len)
{
	static const uint8_t algid[] = { 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
		0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	uint8_t sec1[256], *s = sec1, tmp[256], *t;
	tlv(&s, 0x02, &version, 1);
	tlv(&s, 0x04, d, dlen);
	if (curve != NULL)
		tlv(&s, 0xa0, curve, curve_len);
	if (point != NULL) {
		t = tmp;
		*t++ = 0x00;
		memcpy(t, point, point_len);
		uint8_t bits[160], *b = bits;
		tlv(&b, 0x03, tmp, point_len + 1);
		tlv(&s, 0xa1, bits, (size_t)(b - bits));
	}
	uint8_t seq[300], *q = seq;
	tlv(&q, 0x30, sec1, (size_t)(s - sec1));
	uint8_t body[400], *o = body;
	memcpy(o, "\x02\x01\x00", 3);
	o += 3;
	memcpy(o, algid, sizeof(algid));
	o += sizeof(algid);
	tlv(&o, 0x04, seq, (size_t)(q - seq));
	uint8_t *w = out;
	tlv(&w, 0x30, body, (size_t)(o - body));
	OPENSSL_cleanse(sec1, sizeof(sec1));
	OPENSSL_cleanse(seq, sizeof(seq));
	OPENSSL_cleanse(body, sizeof(body));
	return (size_t)(w - out);
}

static void
test_pkcs8_ec_encoding_rules(void **state)
{
	struct ly_error err;
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256), *other = tu_key(LY_KEY_EC_P256), *out = NULL;
	uint8_t d[32], point[65], other_point[65], der[512];
	BIGNUM *bn = NULL;
	size_t plen = 0;
	assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &bn), 1);
	assert_int_equal(BN_bn2binpad(bn, d, 32), 32);
	BN_clear_free(bn);
	assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, point, 65, &plen), 1);
	assert_int_equal(EVP_PKEY_get_octet_string_param(other, OSSL_PKEY_PARAM_PUB_KEY, other_point, 65, &plen), 1);
	static const uint8_t p256_oid[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	static const uint8_t p384_oid[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
	size_t len;

	/* Baselines: with the point, without it (RFC 5915 makes it optional), with [0]. */
	len = p256_pkcs8(der, 1, d, 32, NULL, 0, point, 65);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, NULL), LY_OK);
	assert_true(ly_key_public_equal(out, k));
	EVP_PKEY_free(out);
	len = p256_pkcs8(der, 1, d, 32, NULL, 0, NULL, 0);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, NULL), LY_OK);
	assert_true(ly_key_public_equal(out, k));
	EVP_PKEY_free(out);
	len = p256_pkcs8(der, 1, d, 32, p256_oid, sizeof(p256_oid), point, 65);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, NULL), LY_OK);
	EVP_PKEY_free(out);
	out = NULL;

	/* The point must be d*G. */
	len = p256_pkcs8(der, 1, d, 32, NULL, 0, other_point, 65);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "does not match"));
	/* A [0] naming another curve than the AlgorithmIdentifier. */
	len = p256_pkcs8(der, 1, d, 32, p384_oid, sizeof(p384_oid), point, 65);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, &err), LY_E_INVALID);
	/* ECPrivateKey version 2; d one byte short; a compressed point. */
	len = p256_pkcs8(der, 2, d, 32, NULL, 0, point, 65);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "RFC 5915"));
	len = p256_pkcs8(der, 1, d + 1, 31, NULL, 0, NULL, 0);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, &err), LY_E_INVALID);
	len = p256_pkcs8(der, 1, d, 32, NULL, 0, point, 33);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "RFC 5915"));
	/* d = 0 and d >= n. */
	uint8_t zero[32] = { 0 }, big[32];
	memset(big, 0xff, sizeof(big));
	len = p256_pkcs8(der, 1, zero, 32, NULL, 0, NULL, 0);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "out of range"));
	len = p256_pkcs8(der, 1, big, 32, NULL, 0, NULL, 0);
	assert_int_equal(ly_key_from_pkcs8_der(der, len, &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "out of range"));
	assert_null(out);

	OPENSSL_cleanse(d, sizeof(d));
	OPENSSL_cleanse(der, sizeof(der));
	EVP_PKEY_free(other);
	EVP_PKEY_free(k);
}

/* The fast public-key setter gives the same SubjectPublicKeyInfo as OpenSSL's. */
static void
test_set_x509_pubkey(void **state)
{
	struct ly_error err;
	EVP_PKEY *keys[] = { tu_key(LY_KEY_EC_P256), tu_key(LY_KEY_EC_P384), tu_ec_key("P-521") };
	for (size_t i = 0; i < 3; i++) {
		X509_PUBKEY *fast = X509_PUBKEY_new(), *ref = NULL;
		assert_non_null(fast);
		assert_int_equal(ly_key_set_x509_pubkey(fast, keys[i], NULL), LY_OK);
		assert_int_equal(X509_PUBKEY_set(&ref, keys[i]), 1);
		unsigned char *a = NULL, *b = NULL;
		int alen = i2d_X509_PUBKEY(fast, &a), blen = i2d_X509_PUBKEY(ref, &b);
		assert_true(alen > 0);
		assert_int_equal(alen, blen);
		assert_memory_equal(a, b, (size_t)alen);
		OPENSSL_free(a);
		OPENSSL_free(b);
		X509_PUBKEY_free(fast);
		X509_PUBKEY_free(ref);
		EVP_PKEY_free(keys[i]);
	}
	X509_PUBKEY *pub = X509_PUBKEY_new();
	EVP_PKEY *rsa = tu_rsa_key(1024), *k1 = tu_ec_key("secp256k1");
	assert_int_equal(ly_key_set_x509_pubkey(pub, rsa, &err), LY_E_UNSUPPORTED);
	assert_int_equal(ly_key_set_x509_pubkey(pub, k1, &err), LY_E_UNSUPPORTED);
	assert_int_equal(ly_key_set_x509_pubkey(NULL, k1, &err), LY_E_INVALID);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(rsa);
	X509_PUBKEY_free(pub);
}

static void
test_pem_round_trip(void **state)
{
	EVP_PKEY *k = tu_key(LY_KEY_EC_P384);
	struct ly_buf pem = LY_BUF_INIT;
	assert_int_equal(ly_key_to_pem(k, &pem, NULL), LY_OK);
	const char *text = (const char *)pem.data;
	assert_int_equal(strlen(text), pem.len);
	assert_true(strncmp(text, "-----BEGIN PRIVATE KEY-----\n", 28) == 0);
	assert_non_null(strstr(text, "\n-----END PRIVATE KEY-----\n"));
	assert_int_equal(text[pem.len - 1], '\n');
	/* 64-column lines, as OpenSSL writes them. */
	const char *line = text + 28;
	assert_int_equal(strchr(line, '\n') - line, 64);

	EVP_PKEY *back = NULL;
	assert_int_equal(ly_key_from_pem(text, pem.len, &back, NULL), LY_OK);
	assert_true(ly_key_public_equal(k, back));
	EVP_PKEY_free(back);

	/* OpenSSL reads what we wrote. */
	BIO *bio = BIO_new_mem_buf(pem.data, (int)pem.len);
	EVP_PKEY *ossl = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	assert_non_null(ossl);
	assert_true(ly_key_public_equal(k, ossl));
	EVP_PKEY_free(ossl);
	BIO_free(bio);

	/* PEM <-> DER. */
	struct ly_buf der = LY_BUF_INIT, der2 = LY_BUF_INIT, pem2 = LY_BUF_INIT;
	assert_int_equal(ly_key_pem_to_der(text, pem.len, &der, NULL), LY_OK);
	assert_int_equal(ly_key_der_to_pem(der.data, der.len, &pem2, NULL), LY_OK);
	assert_int_equal(ly_key_pem_to_der((const char *)pem2.data, pem2.len, &der2, NULL), LY_OK);
	assert_int_equal(der.len, der2.len);
	assert_memory_equal(der.data, der2.data, der.len);
	assert_int_equal(ly_key_der_to_pem(der.data, der.len - 1, &pem2, NULL) != LY_OK, 1);
	ly_buf_free_secret(&der);
	ly_buf_free_secret(&der2);
	ly_buf_free_secret(&pem2);
	ly_buf_free_secret(&pem);
	EVP_PKEY_free(k);
}

/* Writes `k` with an OpenSSL PEM writer into a NUL-terminated heap string. */
static char pem_password[] = "password";

static char *
ossl_pem(EVP_PKEY *k, int traditional, const EVP_CIPHER *enc)
{
	BIO *bio = BIO_new(BIO_s_mem());
	assert_non_null(bio);
	if (traditional)
		assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio, k, enc, NULL, 0, NULL,
		    enc != NULL ? pem_password : NULL), 1);
	else
		assert_int_equal(PEM_write_bio_PKCS8PrivateKey(bio, k, enc, NULL, 0, NULL,
		    enc != NULL ? pem_password : NULL), 1);
	char *p = NULL;
	long n = BIO_get_mem_data(bio, &p);
	char *s = strndup(p, (size_t)n);
	assert_non_null(s);
	BIO_free(bio);
	return s;
}

static void
test_pem_formats(void **state)
{
	struct ly_error err;
	EVP_PKEY *out = NULL;
	EVP_PKEY *ec = tu_key(LY_KEY_EC_P256);

	/* SEC 1 "EC PRIVATE KEY", with an "EC PARAMETERS" block and text around. */
	char *sec1 = ossl_pem(ec, 1, NULL);
	assert_non_null(strstr(sec1, "BEGIN EC PRIVATE KEY"));
	char buf[4096];
	snprintf(buf, sizeof(buf), "a comment\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
	    "-----END EC PARAMETERS-----\n%strailer\n", sec1);
	assert_int_equal(ly_key_from_pem(buf, strlen(buf), &out, &err), LY_OK);
	assert_true(ly_key_public_equal(ec, out));
	EVP_PKEY_free(out);

	/* Two keys. */
	snprintf(buf, sizeof(buf), "%s%s", sec1, sec1);
	assert_int_equal(ly_key_from_pem(buf, strlen(buf), &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "second private key"));
	assert_null(out);

	/* A certificate is not a key. */
	snprintf(buf, sizeof(buf), "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n");
	assert_int_equal(ly_key_from_pem(buf, strlen(buf), &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not a private key"));

	/* No block at all; empty; over the cap. */
	assert_int_equal(ly_key_from_pem("just text\n", 10, &out, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "no private key"));
	assert_int_equal(ly_key_from_pem("", 0, &out, &err), LY_E_INVALID);
	char *huge = malloc((size_t)LY_PEM_FILE_MAX + 1);
	assert_non_null(huge);
	memset(huge, '\n', (size_t)LY_PEM_FILE_MAX + 1);
	memcpy(huge, sec1, strlen(sec1));
	assert_int_equal(ly_key_from_pem(huge, (size_t)LY_PEM_FILE_MAX + 1, &out, &err), LY_E_LIMIT);
	assert_int_equal(ly_key_from_pem(huge, (size_t)LY_PEM_FILE_MAX, &out, &err), LY_OK);
	EVP_PKEY_free(out);
	out = NULL;
	free(huge);

	/* Encrypted PKCS#8, and encrypted SEC 1 (PEM headers). */
	char *enc8 = ossl_pem(ec, 0, EVP_aes_256_cbc());
	assert_int_equal(ly_key_from_pem(enc8, strlen(enc8), &out, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "encrypted"));
	char *enc1 = ossl_pem(ec, 1, EVP_aes_256_cbc());
	assert_non_null(strstr(enc1, "Proc-Type"));
	assert_int_equal(ly_key_from_pem(enc1, strlen(enc1), &out, &err), LY_E_INVALID);
	assert_null(out);

	/* A block cut short. */
	size_t cut = strlen(sec1) - 20;
	assert_int_equal(ly_key_from_pem(sec1, cut, &out, &err), LY_E_INVALID);

	/* PKCS#1 RSA of a refused size. */
	EVP_PKEY *rsa = tu_rsa_key(1024);
	char *pkcs1 = ossl_pem(rsa, 1, NULL);
	assert_non_null(strstr(pkcs1, "BEGIN RSA PRIVATE KEY"));
	assert_int_equal(ly_key_from_pem(pkcs1, strlen(pkcs1), &out, &err), LY_E_UNSUPPORTED);
	assert_non_null(strstr(err.msg, "1024"));

	free(pkcs1);
	EVP_PKEY_free(rsa);
	free(enc1);
	free(enc8);
	free(sec1);
	EVP_PKEY_free(ec);
}

static void
test_pem_file(void **state)
{
	struct ly_error err;
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256), *out = NULL;
	struct ly_buf pem = LY_BUF_INIT;
	assert_int_equal(ly_key_to_pem(k, &pem, NULL), LY_OK);

	char path[] = "/tmp/lanyard-test-key-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, pem.data, pem.len), (ssize_t)pem.len);
	close(fd);
	assert_int_equal(ly_key_from_pem_file(path, &out, NULL), LY_OK);
	assert_true(ly_key_public_equal(k, out));
	EVP_PKEY_free(out);
	unlink(path);

	assert_int_equal(ly_key_from_pem_file(path, &out, &err), LY_E_IO);
	assert_non_null(strstr(err.msg, path));
	assert_int_equal(ly_key_from_pem_file("/tmp", &out, &err), LY_E_IO);
	assert_null(out);

	ly_buf_free_secret(&pem);
	EVP_PKEY_free(k);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_type_parse_and_name),
		cmocka_unit_test(test_generate_each_type),
		cmocka_unit_test(test_generate_in_threads),
		cmocka_unit_test(test_type_of_refuses_others),
		cmocka_unit_test(test_acceptable_refuses_weak),
		cmocka_unit_test(test_acceptable_refuses_explicit_params),
		cmocka_unit_test(test_pkcs8_round_trip),
		cmocka_unit_test(test_pkcs8_refusals),
		cmocka_unit_test(test_pkcs8_matches_openssl),
		cmocka_unit_test(test_pkcs8_ec_encoding_rules),
		cmocka_unit_test(test_set_x509_pubkey),
		cmocka_unit_test(test_pem_round_trip),
		cmocka_unit_test(test_pem_formats),
		cmocka_unit_test(test_pem_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
