/*
 * test_jwt.c: JWT-SVID signing and validation. Every algorithm both ways,
 * and tokens crafted by an independent signer in this file (so a bug shared
 * by ly_jwt_sign and the verifier cannot hide), one refusal per rule, each
 * checked by its message so that it fails if the rule is removed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "lib/b64.h"
#include "lib/bundle.h"
#include "lib/jwk.h"
#include "lib/jwt.h"

#define NOW ((time_t)1700000000)
#define SUB "spiffe://example.org/ns/prod/sa/web"

static EVP_PKEY *ec256;
static EVP_PKEY *ec384;
static EVP_PKEY *ec521;
static EVP_PKEY *rsa;
static EVP_PKEY *other;  /* other.org's key, kid "shared" there */
static EVP_PKEY *shared; /* example.org's key with kid "shared" */
static struct ly_bundle_set *set;
static struct ly_spiffe_id sub;

static int
setup(void **state)
{
	ec256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	ec521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
	rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	shared = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!ec256 || !ec384 || !ec521 || !rsa || !other || !shared)
		return -1;
	struct ly_bundle *b = NULL;
	struct ly_bundle *o = NULL;
	if (ly_bundle_set_new(&set, NULL) != LY_OK || ly_bundle_new("example.org", &b, NULL) != LY_OK ||
	    ly_bundle_new("other.org", &o, NULL) != LY_OK)
		return -1;
	if (ly_bundle_add_jwt_authority(b, "ec256", ec256, NULL) != LY_OK ||
	    ly_bundle_add_jwt_authority(b, "ec384", ec384, NULL) != LY_OK ||
	    ly_bundle_add_jwt_authority(b, "ec521", ec521, NULL) != LY_OK ||
	    ly_bundle_add_jwt_authority(b, "rsa", rsa, NULL) != LY_OK ||
	    ly_bundle_add_jwt_authority(b, "shared", shared, NULL) != LY_OK ||
	    ly_bundle_add_jwt_authority(o, "shared", other, NULL) != LY_OK)
		return -1;
	if (ly_bundle_set_put(set, b, NULL) != LY_OK || ly_bundle_set_put(set, o, NULL) != LY_OK)
		return -1;
	return ly_spiffe_id_parse_str(SUB, &sub, NULL) == LY_OK ? 0 : -1;
}

static int
teardown(void **state)
{
	ly_bundle_set_free(set);
	EVP_PKEY_free(ec256);
	EVP_PKEY_free(ec384);
	EVP_PKEY_free(ec521);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(other);
	EVP_PKEY_free(shared);
	return 0;
}

/* ---- an independent signer ---- */

enum mode { PKCS1, PSS, PSS_MAX_SALT, ECDSA, HMAC_SHA256 };

static char *
b64u(const void *data, size_t len)
{
	char *s = NULL;
	assert_int_equal(ly_b64url_encode(data, len, &s, NULL), LY_OK);
	return s;
}

/* Signs `msg` as JWS would, by hand: no library code under test involved. */
static struct ly_buf
test_sign(EVP_PKEY *key, const char *md, enum mode mode, const uint8_t *hmac_key, size_t hmac_len,
    const char *msg)
{
	struct ly_buf out = LY_BUF_INIT;
	if (mode == HMAC_SHA256) {
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int n = 0;
		assert_non_null(HMAC(EVP_sha256(), hmac_key, (int)hmac_len, (const unsigned char *)msg, strlen(msg),
		    mac, &n));
		assert_int_equal(ly_buf_set(&out, mac, n, NULL), LY_OK);
		return out;
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	assert_int_equal(EVP_DigestSignInit_ex(ctx, &pctx, md, NULL, NULL, key, NULL), 1);
	if (mode == PSS || mode == PSS_MAX_SALT) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx,
		    mode == PSS ? RSA_PSS_SALTLEN_DIGEST : RSA_PSS_SALTLEN_MAX), 1);
	}
	size_t n = 0;
	assert_int_equal(EVP_DigestSign(ctx, NULL, &n, (const unsigned char *)msg, strlen(msg)), 1);
	unsigned char *sig = malloc(n);
	assert_int_equal(EVP_DigestSign(ctx, sig, &n, (const unsigned char *)msg, strlen(msg)), 1);
	EVP_MD_CTX_free(ctx);
	if (mode != ECDSA) {
		out.data = sig;
		out.len = n;
		return out;
	}
	size_t width = ((size_t)EVP_PKEY_get_bits(key) + 7) / 8;
	const unsigned char *p = sig;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
	assert_non_null(es);
	out.data = malloc(2 * width);
	out.len = 2 * width;
	BN_bn2binpad(ECDSA_SIG_get0_r(es), out.data, (int)width);
	BN_bn2binpad(ECDSA_SIG_get0_s(es), out.data + width, (int)width);
	ECDSA_SIG_free(es);
	free(sig);
	return out;
}

/* header.payload.signature from JSON texts; the caller frees. */
static char *
craft_mac(const char *header, const char *payload, EVP_PKEY *key, const char *md, enum mode mode,
    const uint8_t *hmac_key, size_t hmac_len)
{
	char *h = b64u(header, strlen(header));
	char *p = b64u(payload, strlen(payload));
	size_t cap = strlen(h) + strlen(p) + 2048;
	char *tok = malloc(cap);
	snprintf(tok, cap, "%s.%s", h, p);
	struct ly_buf sig = test_sign(key, md, mode, hmac_key, hmac_len, tok);
	char *s = b64u(sig.data, sig.len);
	strcat(tok, ".");
	strcat(tok, s);
	free(s);
	ly_buf_free(&sig);
	free(h);
	free(p);
	return tok;
}

static char *
craft(const char *header, const char *payload, EVP_PKEY *key, const char *md, enum mode mode)
{
	return craft_mac(header, payload, key, md, mode, NULL, 0);
}

/* The usual claims, with `extra` (JSON members, may be "") appended. */
static char *
claims(const char *aud, long long exp, const char *extra)
{
	char *s = malloc(4096 + strlen(extra));
	sprintf(s, "{\"sub\":\"" SUB "\",\"aud\":%s,\"exp\":%lld,\"iat\":%lld%s%s}", aud, exp, (long long)NOW,
	    extra[0] ? "," : "", extra);
	return s;
}

static const char *const good_claims_fmt = "\"web\"";

/* Validates for audience "web" at NOW. */
static ly_status
validate(const char *tok, struct ly_error *err)
{
	struct ly_spiffe_id got;
	json_t *c = NULL;
	ly_status rc = ly_jwt_validate(tok, strlen(tok), "web", set, NOW, &got, &c, err);
	if (rc == LY_OK) {
		assert_string_equal(got.id, SUB);
		assert_non_null(c);
		json_decref(c);
	} else {
		assert_null(c);
		assert_string_equal(got.id, "");
	}
	return rc;
}

#define EXPECT(tok, code, want)                                                                   \
	do {                                                                                      \
		struct ly_error e_;                                                               \
		e_.msg[0] = '\0';                                                                 \
		ly_status rc_ = validate((tok), &e_);                                             \
		if (rc_ != (code) || strstr(e_.msg, (want)) == NULL)                              \
			fail_msg("line %d: expected %d '%s', got %d '%s'", __LINE__, (code), (want), rc_, \
			    e_.msg);                                                              \
	} while (0)

/* Crafts with `header` and the usual claims, expects refusal, frees. */
static void
expect_header_refused(const char *header, EVP_PKEY *key, const char *md, enum mode mode, ly_status code,
    const char *want)
{
	char *c = claims(good_claims_fmt, NOW + 300, "");
	char *tok = craft(header, c, key, md, mode);
	EXPECT(tok, code, want);
	free(tok);
	free(c);
}

/* ---- sign + validate, every algorithm ---- */

static const struct {
	const char *alg; /* NULL: default for the key */
	const char *want_alg;
	EVP_PKEY **key;
	const char *kid;
	const char *md;
	enum mode mode;
	size_t sig_len;
} algs[] = {
	{ NULL, "ES256", &ec256, "ec256", "SHA256", ECDSA, 64 },
	{ "ES384", "ES384", &ec384, "ec384", "SHA384", ECDSA, 96 },
	{ NULL, "ES512", &ec521, "ec521", "SHA512", ECDSA, 132 },
	{ NULL, "RS256", &rsa, "rsa", "SHA256", PKCS1, 256 },
	{ "RS384", "RS384", &rsa, "rsa", "SHA384", PKCS1, 256 },
	{ "RS512", "RS512", &rsa, "rsa", "SHA512", PKCS1, 256 },
	{ "PS256", "PS256", &rsa, "rsa", "SHA256", PSS, 256 },
	{ "PS384", "PS384", &rsa, "rsa", "SHA384", PSS, 256 },
	{ "PS512", "PS512", &rsa, "rsa", "SHA512", PSS, 256 },
};

static void
test_sign_validate_every_alg(void **state)
{
	const char *aud[] = { "web", "db" };
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		char *tok = NULL;
		struct ly_error err;
		ly_status rc = ly_jwt_sign(*algs[i].key, algs[i].kid, algs[i].alg, &sub, aud, 1 + i % 2, NOW, NOW + 300,
		    &tok, &err);
		if (rc != LY_OK)
			fail_msg("%s: %s", algs[i].want_alg, err.msg);

		/* The header says what it should; the signature has the JWS size. */
		const char *dot1 = strchr(tok, '.');
		const char *dot2 = strchr(dot1 + 1, '.');
		struct ly_buf h = LY_BUF_INIT;
		struct ly_buf s = LY_BUF_INIT;
		assert_int_equal(ly_b64url_decode(tok, (size_t)(dot1 - tok), &h, NULL), LY_OK);
		char want[128];
		snprintf(want, sizeof(want), "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}", algs[i].want_alg,
		    algs[i].kid);
		assert_int_equal(h.len, strlen(want));
		assert_memory_equal(h.data, want, h.len);
		assert_int_equal(ly_b64url_decode(dot2 + 1, strlen(dot2 + 1), &s, NULL), LY_OK);
		assert_int_equal(s.len, algs[i].sig_len);
		ly_buf_free(&h);
		ly_buf_free(&s);

		struct ly_spiffe_id got;
		json_t *c = NULL;
		rc = ly_jwt_validate(tok, strlen(tok), "web", set, NOW, &got, &c, &err);
		if (rc != LY_OK)
			fail_msg("%s: %s", algs[i].want_alg, err.msg);
		assert_string_equal(got.id, SUB);
		assert_int_equal(json_integer_value(json_object_get(c, "exp")), NOW + 300);
		assert_int_equal(json_integer_value(json_object_get(c, "iat")), NOW);
		json_decref(c);
		/* With two audiences, the second one is accepted too. */
		if (i % 2 == 1)
			assert_int_equal(ly_jwt_validate(tok, strlen(tok), "db", set, NOW, NULL, NULL, NULL), LY_OK);
		ly_free_secret_str(tok);
	}
}

/* Tokens from the independent signer validate: the wire format is JWS's, not ours. */
static void
test_validate_crafted_every_alg(void **state)
{
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		char header[128];
		snprintf(header, sizeof(header), "{\"typ\":\"JOSE\",\"kid\":\"%s\",\"alg\":\"%s\"}", algs[i].kid,
		    algs[i].want_alg);
		char *c = claims("[\"x\",\"web\"]", NOW + 60, "\"nbf\":1699999990,\"custom\":{\"a\":[1]}");
		char *tok = craft(header, c, *algs[i].key, algs[i].md, algs[i].mode);
		struct ly_error err;
		json_t *cl = NULL;
		if (ly_jwt_validate(tok, strlen(tok), "web", set, NOW, NULL, &cl, &err) != LY_OK)
			fail_msg("%s: %s", algs[i].want_alg, err.msg);
		/* Claims come back whole, custom ones included. */
		assert_non_null(json_object_get(json_object_get(cl, "custom"), "a"));
		json_decref(cl);
		free(tok);
		free(c);
	}
}

static void
test_sign_refusals(void **state)
{
	const char *aud[] = { "web" };
	char *tok = NULL;
	struct ly_error err;
	struct ly_spiffe_id td;
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://example.org", &td, NULL), LY_OK);

#define SIGN_REFUSED(call, code, want)                                                            \
	do {                                                                                      \
		ly_status rc_ = (call);                                                           \
		if (rc_ != (code) || strstr(err.msg, (want)) == NULL)                             \
			fail_msg("line %d: expected %d '%s', got %d '%s'", __LINE__, (code), (want), rc_, \
			    err.msg);                                                             \
		assert_null(tok);                                                                 \
	} while (0)

	SIGN_REFUSED(ly_jwt_sign(ec256, "k", "ES384", &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_INVALID,
	    "does not match the key");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", "RS256", &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_INVALID,
	    "does not match the key");
	SIGN_REFUSED(ly_jwt_sign(rsa, "k", "ES256", &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_INVALID,
	    "does not match the key");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", "HS256", &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_UNSUPPORTED,
	    "alg 'HS256' not allowed");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", "none", &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_UNSUPPORTED,
	    "alg 'none' not allowed");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", "es256", &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_UNSUPPORTED,
	    "not allowed");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", NULL, &td, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_INVALID, "path");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", NULL, &sub, aud, 0, NOW, NOW + 1, &tok, &err), LY_E_INVALID,
	    "audiences");
	const char *empty[] = { "" };
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", NULL, &sub, empty, 1, NOW, NOW + 1, &tok, &err), LY_E_INVALID,
	    "audience 0 is empty");
	const char *many[LY_JWT_AUDIENCES_MAX + 1];
	for (size_t i = 0; i <= LY_JWT_AUDIENCES_MAX; i++)
		many[i] = "a";
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", NULL, &sub, many, LY_JWT_AUDIENCES_MAX + 1, NOW, NOW + 1, &tok, &err),
	    LY_E_LIMIT, "audiences");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k", NULL, &sub, aud, 1, NOW, NOW, &tok, &err), LY_E_INVALID,
	    "exp must be after iat");
	SIGN_REFUSED(ly_jwt_sign(ec256, "k k", NULL, &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_INVALID,
	    "printable");
	SIGN_REFUSED(ly_jwt_sign(ec256, "", NULL, &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_INVALID,
	    "kid is empty");
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	SIGN_REFUSED(ly_jwt_sign(small, "k", NULL, &sub, aud, 1, NOW, NOW + 1, &tok, &err), LY_E_UNSUPPORTED,
	    "at least 2048");
	EVP_PKEY_free(small);
#undef SIGN_REFUSED
}

/* ---- the header ---- */

static void
test_refuses_alg_none(void **state)
{
	char *c = claims(good_claims_fmt, NOW + 300, "");
	const char *none = "{\"alg\":\"none\",\"kid\":\"ec256\"}";
	char *h = b64u(none, strlen(none));
	char *p = b64u(c, strlen(c));
	char tok[4096];
	/* With a signature segment (so the alg rule, not the empty segment, decides) and without. */
	snprintf(tok, sizeof(tok), "%s.%s.AA", h, p);
	EXPECT(tok, LY_E_UNSUPPORTED, "alg 'none' not allowed");
	snprintf(tok, sizeof(tok), "%s.%s.", h, p);
	EXPECT(tok, LY_E_INVALID, "empty segment");
	free(h);
	free(p);
	free(c);
	/* "None", "NONE": not on the list either. */
	expect_header_refused("{\"alg\":\"None\",\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA, LY_E_UNSUPPORTED,
	    "alg 'None' not allowed");
}

/* The classic confusion: HS256 keyed with the public key's bytes. */
static void
test_refuses_hs256_with_public_key(void **state)
{
	unsigned char *der = NULL;
	int len = i2d_PUBKEY(ec256, &der);
	assert_true(len > 0);
	char *c = claims(good_claims_fmt, NOW + 300, "");
	char *tok = craft_mac("{\"alg\":\"HS256\",\"kid\":\"ec256\",\"typ\":\"JWT\"}", c, NULL, NULL, HMAC_SHA256, der,
	    (size_t)len);
	EXPECT(tok, LY_E_UNSUPPORTED, "alg 'HS256' not allowed");
	free(tok);
	/* Keyed with the JWK's x coordinate text, same answer. */
	tok = craft_mac("{\"alg\":\"HS512\",\"kid\":\"ec256\"}", c, NULL, NULL, HMAC_SHA256, (const uint8_t *)"x", 1);
	EXPECT(tok, LY_E_UNSUPPORTED, "alg 'HS512' not allowed");
	free(tok);
	free(c);
	OPENSSL_free(der);
}

/* The key decides the verifier; alg must fit it exactly. */
static void
test_refuses_alg_key_mismatch(void **state)
{
	/* ES384 header, P-256 key: with the rule gone, SHA-384 on P-256 would verify. */
	expect_header_refused("{\"alg\":\"ES384\",\"kid\":\"ec256\"}", ec256, "SHA384", ECDSA, LY_E_INVALID,
	    "alg 'ES384' does not match the key");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec384\"}", ec384, "SHA256", ECDSA, LY_E_INVALID,
	    "alg 'ES256' does not match the key");
	expect_header_refused("{\"alg\":\"ES512\",\"kid\":\"ec384\"}", ec384, "SHA512", ECDSA, LY_E_INVALID,
	    "alg 'ES512' does not match the key");
	/* RS256 header, EC key. */
	expect_header_refused("{\"alg\":\"RS256\",\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA, LY_E_INVALID,
	    "alg 'RS256' does not match the key");
	expect_header_refused("{\"alg\":\"PS256\",\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA, LY_E_INVALID,
	    "alg 'PS256' does not match the key");
	/* ES256 header, RSA key. */
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"rsa\"}", rsa, "SHA256", PKCS1, LY_E_INVALID,
	    "alg 'ES256' does not match the key");
	/* PKCS#1 v1.5 signature under a PS256 header and the other way round: padding is part of alg. */
	expect_header_refused("{\"alg\":\"PS256\",\"kid\":\"rsa\"}", rsa, "SHA256", PKCS1, LY_E_UNTRUSTED,
	    "does not verify");
	expect_header_refused("{\"alg\":\"RS256\",\"kid\":\"rsa\"}", rsa, "SHA256", PSS, LY_E_UNTRUSTED,
	    "does not verify");
	/* RFC 7518 §3.5: the PSS salt is as long as the hash, no other length. */
	expect_header_refused("{\"alg\":\"PS256\",\"kid\":\"rsa\"}", rsa, "SHA256", PSS_MAX_SALT, LY_E_UNTRUSTED,
	    "does not verify");
	/* Hash is part of alg too. */
	expect_header_refused("{\"alg\":\"RS384\",\"kid\":\"rsa\"}", rsa, "SHA256", PKCS1, LY_E_UNTRUSTED,
	    "does not verify");
}

static void
test_refuses_key_headers(void **state)
{
	/* JWT-SVID §2: nothing but alg, kid, typ. No key from the token. */
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"crit\":[\"exp\"]}", ec256, "SHA256", ECDSA,
	    LY_E_INVALID, "header 'crit' not allowed");
	json_t *jwk = NULL;
	assert_int_equal(ly_jwk_from_pkey(ec256, &jwk, NULL), LY_OK);
	json_t *h = json_pack("{s:s, s:s, s:O}", "alg", "ES256", "kid", "ec256", "jwk", jwk);
	char *hs = json_dumps(h, JSON_COMPACT);
	expect_header_refused(hs, ec256, "SHA256", ECDSA, LY_E_INVALID, "header 'jwk' not allowed");
	free(hs);
	json_decref(h);
	json_decref(jwk);
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"jku\":\"https://evil/jwks\"}", ec256, "SHA256",
	    ECDSA, LY_E_INVALID, "header 'jku' not allowed");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"x5u\":\"https://evil/c\"}", ec256, "SHA256",
	    ECDSA, LY_E_INVALID, "header 'x5u' not allowed");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"x5c\":[\"AAAA\"]}", ec256, "SHA256", ECDSA,
	    LY_E_INVALID, "header 'x5c' not allowed");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"cty\":\"JWT\"}", ec256, "SHA256", ECDSA,
	    LY_E_INVALID, "header 'cty' not allowed");
}

static void
test_header_rules(void **state)
{
	/* kid: required (SPEC §1), a string, capped, printable. */
	expect_header_refused("{\"alg\":\"ES256\"}", ec256, "SHA256", ECDSA, LY_E_INVALID, "'kid' missing");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":7}", ec256, "SHA256", ECDSA, LY_E_INVALID,
	    "'kid' missing or not a string");
	char h[LY_JWT_KID_MAX + 64];
	char kid[LY_JWT_KID_MAX + 2];
	memset(kid, 'k', LY_JWT_KID_MAX + 1);
	kid[LY_JWT_KID_MAX + 1] = '\0';
	snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid);
	expect_header_refused(h, ec256, "SHA256", ECDSA, LY_E_LIMIT, "kid longer than 256");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec 256\"}", ec256, "SHA256", ECDSA, LY_E_INVALID,
	    "printable");
	/* typ: JWT or JOSE only (§2.3). */
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"typ\":\"at+jwt\"}", ec256, "SHA256", ECDSA,
	    LY_E_INVALID, "'typ' must be");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"typ\":\"jwt\"}", ec256, "SHA256", ECDSA,
	    LY_E_INVALID, "'typ' must be");
	/* alg: present, a string, case-sensitive. */
	expect_header_refused("{\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA, LY_E_INVALID, "'alg' missing");
	expect_header_refused("{\"alg\":[\"ES256\"],\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA, LY_E_INVALID,
	    "'alg' missing or not a string");
	expect_header_refused("{\"alg\":\"es256\",\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA, LY_E_UNSUPPORTED,
	    "alg 'es256' not allowed");
	expect_header_refused("{\"alg\":\"EdDSA\",\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA, LY_E_UNSUPPORTED,
	    "alg 'EdDSA' not allowed");
	/* Not an object; duplicate members (the second alg must not win). */
	expect_header_refused("[\"ES256\"]", ec256, "SHA256", ECDSA, LY_E_INVALID, "header is not a JSON object");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"ec256\",\"alg\":\"none\"}", ec256, "SHA256", ECDSA,
	    LY_E_INVALID, "duplicate");
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"x\",\"kid\":\"ec256\"}", ec256, "SHA256", ECDSA,
	    LY_E_INVALID, "duplicate");

	/* Direct use of the header parser. */
	struct ly_jwt_header hdr;
	const char *ok = "{\"alg\":\"PS384\",\"kid\":\"a\",\"typ\":\"JOSE\"}";
	assert_int_equal(ly_jwt_header_parse(ok, strlen(ok), &hdr, NULL), LY_OK);
	assert_int_equal(hdr.alg, LY_JWT_PS384);
	assert_string_equal(hdr.kid, "a");
	assert_string_equal(ly_jwt_alg_name(hdr.alg), "PS384");
	char big[LY_JWT_HEADER_MAX + 64];
	memset(big, ' ', sizeof(big));
	memcpy(big, ok, strlen(ok));
	struct ly_error err;
	assert_int_equal(ly_jwt_header_parse(big, sizeof(big), &hdr, &err), LY_E_LIMIT);
}

/* ---- keys and trust domains ---- */

static void
test_refuses_unknown_kid(void **state)
{
	expect_header_refused("{\"alg\":\"ES256\",\"kid\":\"nope\"}", ec256, "SHA256", ECDSA, LY_E_NOT_FOUND,
	    "no key with kid 'nope' in bundle for example.org");
}

static void
test_sub_rules(void **state)
{
	const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec256\"}";
	const struct {
		const char *payload;
		ly_status code;
		const char *want;
	} cases[] = {
		{ "{\"aud\":\"web\",\"exp\":1700000300}", LY_E_INVALID, "'sub' missing" },
		{ "{\"sub\":5,\"aud\":\"web\",\"exp\":1700000300}", LY_E_INVALID, "'sub' missing or not a string" },
		{ "{\"sub\":\"spiffe://Example.org/w\",\"aud\":\"web\",\"exp\":1700000300}", LY_E_INVALID, "jwt: 'sub'" },
		{ "{\"sub\":\"https://example.org/w\",\"aud\":\"web\",\"exp\":1700000300}", LY_E_INVALID, "jwt: 'sub'" },
		{ "{\"sub\":\"spiffe://example.org/a/../b\",\"aud\":\"web\",\"exp\":1700000300}", LY_E_INVALID,
		    "jwt: 'sub'" },
		{ "{\"sub\":\"spiffe://example.org\",\"aud\":\"web\",\"exp\":1700000300}", LY_E_INVALID, "has no path" },
		{ "{\"sub\":\"spiffe://unknown.org/w\",\"aud\":\"web\",\"exp\":1700000300}", LY_E_NOT_FOUND,
		    "no bundle for trust domain unknown.org" },
		/* Signed by example.org's ec256, claiming other.org: other.org has no such kid. */
		{ "{\"sub\":\"spiffe://other.org/w\",\"aud\":\"web\",\"exp\":1700000300}", LY_E_NOT_FOUND,
		    "no key with kid 'ec256' in bundle for other.org" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *tok = craft(hdr, cases[i].payload, ec256, "SHA256", ECDSA);
		EXPECT(tok, cases[i].code, cases[i].want);
		free(tok);
	}
	/* Duplicate sub: refused, never "the last one wins". */
	char *tok = craft(hdr,
	    "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":1700000300,\"sub\":\"spiffe://other.org/w\"}", ec256, "SHA256",
	    ECDSA);
	EXPECT(tok, LY_E_INVALID, "duplicate");
	free(tok);

	/*
	 * The trust domain of sub picks the bundle: a kid both trust domains use
	 * resolves in the sub's own. Signed by example.org's "shared" key but
	 * claiming other.org: verified against other.org's "shared", fails.
	 */
	const char *sh = "{\"alg\":\"ES256\",\"kid\":\"shared\"}";
	tok = craft(sh, "{\"sub\":\"spiffe://other.org/w\",\"aud\":\"web\",\"exp\":1700000300}", shared, "SHA256",
	    ECDSA);
	struct ly_error err;
	assert_int_equal(ly_jwt_validate(tok, strlen(tok), "web", set, NOW, NULL, NULL, &err), LY_E_UNTRUSTED);
	free(tok);
	tok = craft(sh, "{\"sub\":\"spiffe://other.org/w\",\"aud\":\"web\",\"exp\":1700000300}", other, "SHA256",
	    ECDSA);
	assert_int_equal(ly_jwt_validate(tok, strlen(tok), "web", set, NOW, NULL, NULL, &err), LY_OK);
	free(tok);
}

/* ---- signature ---- */

static void
test_refuses_tampering(void **state)
{
	const char *aud[] = { "web" };
	char *tok = NULL;
	assert_int_equal(ly_jwt_sign(ec256, "ec256", NULL, &sub, aud, 1, NOW, NOW + 300, &tok, NULL), LY_OK);
	char *dot1 = strchr(tok, '.');
	char *dot2 = strchr(dot1 + 1, '.');

	/* Payload swapped for another one (a longer exp), signature kept. */
	char *c = claims("\"web\"", NOW + 999999, "");
	char *p = b64u(c, strlen(c));
	char forged[4096];
	snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(dot1 - tok), tok, p, dot2);
	EXPECT(forged, LY_E_UNTRUSTED, "signature does not verify");
	free(p);
	free(c);

	/* One bit of the signature flipped. */
	struct ly_buf sig = LY_BUF_INIT;
	assert_int_equal(ly_b64url_decode(dot2 + 1, strlen(dot2 + 1), &sig, NULL), LY_OK);
	sig.data[10] ^= 0x01;
	char *s = b64u(sig.data, sig.len);
	snprintf(forged, sizeof(forged), "%.*s.%s", (int)(dot2 - tok), tok, s);
	EXPECT(forged, LY_E_UNTRUSTED, "signature does not verify");
	free(s);
	/* One byte more, one byte less: exact length. */
	uint8_t longer[65];
	memcpy(longer, sig.data, 64);
	longer[64] = 0;
	s = b64u(longer, 65);
	snprintf(forged, sizeof(forged), "%.*s.%s", (int)(dot2 - tok), tok, s);
	EXPECT(forged, LY_E_UNTRUSTED, "65 bytes, expected 64");
	free(s);
	s = b64u(sig.data, 63);
	snprintf(forged, sizeof(forged), "%.*s.%s", (int)(dot2 - tok), tok, s);
	EXPECT(forged, LY_E_UNTRUSTED, "63 bytes, expected 64");
	free(s);
	/* A DER signature (what OpenSSL emits) is not a JWS signature. */
	ly_buf_free(&sig);
	ly_free_secret_str(tok);

	/* RSA: the signature is exactly the modulus size, no shorter. */
	assert_int_equal(ly_jwt_sign(rsa, "rsa", NULL, &sub, aud, 1, NOW, NOW + 300, &tok, NULL), LY_OK);
	dot2 = strrchr(tok, '.');
	assert_int_equal(ly_b64url_decode(dot2 + 1, strlen(dot2 + 1), &sig, NULL), LY_OK);
	assert_int_equal(sig.len, 256);
	s = b64u(sig.data + 1, 255);
	snprintf(forged, sizeof(forged), "%.*s.%s", (int)(dot2 - tok), tok, s);
	EXPECT(forged, LY_E_UNTRUSTED, "255 bytes, the key needs 256");
	free(s);
	ly_buf_free(&sig);
	ly_free_secret_str(tok);
}

/* ---- claims ---- */

static void
test_exp_rules(void **state)
{
	const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec256\"}";
	char *c;
	char *tok;
	const struct {
		long long exp;
		ly_status code;
	} window[] = {
		{ NOW + 1, LY_OK },
		{ NOW, LY_OK },                               /* within the leeway */
		{ NOW - LY_JWT_LEEWAY_SECONDS + 1, LY_OK },
		{ NOW - LY_JWT_LEEWAY_SECONDS, LY_E_EXPIRED }, /* now == exp + leeway */
		{ NOW - 3600, LY_E_EXPIRED },
	};
	for (size_t i = 0; i < sizeof(window) / sizeof(window[0]); i++) {
		c = claims("\"web\"", window[i].exp, "");
		tok = craft(hdr, c, ec256, "SHA256", ECDSA);
		EXPECT(tok, window[i].code, window[i].code == LY_OK ? "" : "expired");
		free(tok);
		free(c);
	}
	/* Missing, not a number, a real (rounded down). */
	tok = craft(hdr, "{\"sub\":\"" SUB "\",\"aud\":\"web\"}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_INVALID, "'exp' missing");
	free(tok);
	tok = craft(hdr, "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":\"1800000000\"}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_INVALID, "'exp' is not a number");
	free(tok);
	tok = craft(hdr, "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":null}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_INVALID, "'exp' is not a number");
	free(tok);
	tok = craft(hdr, "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":1699999970.9}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_EXPIRED, "expired");
	free(tok);
	tok = craft(hdr, "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":1700000100.5}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_OK, "");
	free(tok);
	/* Far future: no overflow into the past. */
	tok = craft(hdr, "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":9223372036854775807}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_OK, "");
	free(tok);
	tok = craft(hdr, "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":1e300}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_INVALID, "'exp' out of range");
	free(tok);
}

static void
test_nbf_iat_rules(void **state)
{
	const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec256\"}";
	char extra[128];
	const struct {
		const char *name;
		long long t;
		ly_status code;
	} cases[] = {
		{ "nbf", NOW + LY_JWT_LEEWAY_SECONDS, LY_OK },
		{ "nbf", NOW + LY_JWT_LEEWAY_SECONDS + 1, LY_E_EXPIRED },
		{ "nbf", NOW - 100, LY_OK },
		{ "iat", NOW + LY_JWT_LEEWAY_SECONDS + 1, LY_E_EXPIRED },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(extra, sizeof(extra), "\"%s\":%lld", cases[i].name, cases[i].t);
		char *c = malloc(4096);
		/* claims() writes iat itself: write these by hand. */
		sprintf(c, "{\"sub\":\"" SUB "\",\"aud\":\"web\",\"exp\":%lld,%s}", (long long)NOW + 300, extra);
		char *tok = craft(hdr, c, ec256, "SHA256", ECDSA);
		char want[32];
		snprintf(want, sizeof(want), "'%s'", cases[i].name);
		EXPECT(tok, cases[i].code, cases[i].code == LY_OK ? "" : want);
		free(tok);
		free(c);
	}
	char *c = claims("\"web\"", NOW + 300, "\"nbf\":\"soon\"");
	char *tok = craft(hdr, c, ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_INVALID, "'nbf' is not a number");
	free(tok);
	free(c);
}

static void
test_aud_rules(void **state)
{
	const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec256\"}";
	char many[1024] = "[";
	for (int i = 0; i <= LY_JWT_AUDIENCES_MAX; i++)
		strcat(many, i == 0 ? "\"web\"" : ",\"x\"");
	strcat(many, "]");
	const struct {
		const char *aud;
		ly_status code;
		const char *want;
	} cases[] = {
		{ "\"web\"", LY_OK, "" },
		{ "[\"a\",\"web\"]", LY_OK, "" },
		{ "\"db\"", LY_E_INVALID, "audience 'web' not in 'aud'" },
		{ "[\"db\",\"web2\",\"we\"]", LY_E_INVALID, "audience 'web' not in 'aud'" },
		{ "\"WEB\"", LY_E_INVALID, "not in 'aud'" },
		{ "[]", LY_E_INVALID, "'aud' is empty" },
		{ "[\"web\",1]", LY_E_INVALID, "'aud' value 1 is not a string" },
		{ "{\"web\":1}", LY_E_INVALID, "'aud' must be a string or an array" },
		{ "null", LY_E_INVALID, "'aud' must be" },
		{ many, LY_E_LIMIT, "at most 32" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *c = claims(cases[i].aud, NOW + 300, "");
		char *tok = craft(hdr, c, ec256, "SHA256", ECDSA);
		EXPECT(tok, cases[i].code, cases[i].want);
		free(tok);
		free(c);
	}
	char *tok = craft(hdr, "{\"sub\":\"" SUB "\",\"exp\":1700000300}", ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_INVALID, "'aud' missing");
	free(tok);
	/* The validator's own audience must be given. */
	char *c = claims("\"web\"", NOW + 300, "");
	tok = craft(hdr, c, ec256, "SHA256", ECDSA);
	struct ly_error err;
	assert_int_equal(ly_jwt_validate(tok, strlen(tok), "", set, NOW, NULL, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_jwt_validate(tok, strlen(tok), NULL, set, NOW, NULL, NULL, &err), LY_E_INVALID);
	free(tok);
	free(c);
}

/* ---- shape ---- */

static void
test_refuses_bad_shape(void **state)
{
	const char *aud[] = { "web" };
	char *tok = NULL;
	assert_int_equal(ly_jwt_sign(ec256, "ec256", NULL, &sub, aud, 1, NOW, NOW + 300, &tok, NULL), LY_OK);
	EXPECT(tok, LY_OK, "");
	size_t len = strlen(tok);
	char *dot1 = strchr(tok, '.');
	char *dot2 = strchr(dot1 + 1, '.');
	char buf[8192];

	/* Segment count. */
	snprintf(buf, sizeof(buf), "%.*s", (int)(dot2 - tok), tok);
	EXPECT(buf, LY_E_INVALID, "2 segments");
	snprintf(buf, sizeof(buf), "%s.AA", tok);
	EXPECT(buf, LY_E_INVALID, "more than 3 segments");
	snprintf(buf, sizeof(buf), "%s.", tok);
	EXPECT(buf, LY_E_INVALID, "more than 3 segments");
	EXPECT("abc", LY_E_INVALID, "1 segments");
	EXPECT("..", LY_E_INVALID, "empty segment");
	snprintf(buf, sizeof(buf), ".%s", dot1 + 1);
	EXPECT(buf, LY_E_INVALID, "empty segment");

	/* Bad base64url in each segment: padding, '+', whitespace, non-canonical bits. */
	snprintf(buf, sizeof(buf), "%.*s=%s", (int)(dot1 - tok), tok, dot1);
	EXPECT(buf, LY_E_INVALID, "jwt: header: base64url");
	snprintf(buf, sizeof(buf), "%.*s+%s", (int)(dot2 - tok), tok, dot2);
	EXPECT(buf, LY_E_INVALID, "jwt: payload: base64url");
	snprintf(buf, sizeof(buf), "%.*s %s", (int)(dot2 - tok), tok, dot2);
	EXPECT(buf, LY_E_INVALID, "jwt: payload: base64url");
	snprintf(buf, sizeof(buf), "%s==", tok);
	EXPECT(buf, LY_E_INVALID, "jwt: signature: base64url");
	snprintf(buf, sizeof(buf), "%s\n", tok);
	EXPECT(buf, LY_E_INVALID, "jwt: signature: base64url");
	/* 64 bytes of ECDSA signature are 86 characters with 4 unused bits: set one. */
	snprintf(buf, sizeof(buf), "%s", tok);
	char *last = buf + len - 1;
	const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	*last = alpha[(strchr(alpha, *last) - alpha) | 1];
	EXPECT(buf, LY_E_INVALID, "non-canonical");

	/* NUL inside. */
	memcpy(buf, tok, len + 1);
	buf[5] = '\0';
	struct ly_error err;
	assert_int_equal(ly_jwt_validate(buf, len, "web", set, NOW, NULL, NULL, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "NUL"));

	/* Claims not an object; not JSON. */
	char *t2 = craft("{\"alg\":\"ES256\",\"kid\":\"ec256\"}", "[1]", ec256, "SHA256", ECDSA);
	EXPECT(t2, LY_E_INVALID, "claims are not a JSON object");
	free(t2);
	t2 = craft("{\"alg\":\"ES256\",\"kid\":\"ec256\"}", "{\"sub\":", ec256, "SHA256", ECDSA);
	EXPECT(t2, LY_E_INVALID, "jwt: claims: json");
	free(t2);
	t2 = craft("{\"alg\":\"ES256\",\"kid\":\"ec256\"", "{}", ec256, "SHA256", ECDSA);
	EXPECT(t2, LY_E_INVALID, "jwt: header: json");
	free(t2);
	ly_free_secret_str(tok);
}

static void
test_size_limits(void **state)
{
	const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec256\"}";
	/* A big but legal token passes; LY_JWT_MAX + 1 bytes never reach the parser. */
	size_t pad = 10000;
	char *extra = malloc(pad + 32);
	strcpy(extra, "\"pad\":\"");
	memset(extra + 7, 'p', pad);
	strcpy(extra + 7 + pad, "\"");
	char *c = claims("\"web\"", NOW + 300, extra);
	char *tok = craft(hdr, c, ec256, "SHA256", ECDSA);
	assert_true(strlen(tok) < LY_JWT_MAX);
	EXPECT(tok, LY_OK, "");
	free(tok);
	free(c);
	free(extra);

	char *big = malloc(LY_JWT_MAX + 2);
	memset(big, 'A', LY_JWT_MAX + 1);
	big[LY_JWT_MAX + 1] = '\0';
	big[10] = '.';
	big[20] = '.';
	EXPECT(big, LY_E_LIMIT, "at most 16384");
	free(big);

	/* A header longer than LY_JWT_HEADER_MAX is refused before decoding. */
	char *longhdr = malloc(LY_JWT_HEADER_MAX + 128);
	sprintf(longhdr, "{\"alg\":\"ES256\",\"kid\":\"ec256\",\"typ\":\"JWT\"%*s}", LY_JWT_HEADER_MAX, "");
	c = claims("\"web\"", NOW + 300, "");
	tok = craft(longhdr, c, ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_LIMIT, "header over 2048");
	free(tok);
	free(c);
	free(longhdr);

	/* Claims nested too deep. */
	char deep[256] = "\"x\":";
	for (int i = 0; i <= LY_JSON_DEPTH_MAX; i++)
		strcat(deep, "[");
	for (int i = 0; i <= LY_JSON_DEPTH_MAX; i++)
		strcat(deep, "]");
	c = claims("\"web\"", NOW + 300, deep);
	tok = craft(hdr, c, ec256, "SHA256", ECDSA);
	EXPECT(tok, LY_E_LIMIT, "nested deeper");
	free(tok);
	free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sign_validate_every_alg),
		cmocka_unit_test(test_validate_crafted_every_alg),
		cmocka_unit_test(test_sign_refusals),
		cmocka_unit_test(test_refuses_alg_none),
		cmocka_unit_test(test_refuses_hs256_with_public_key),
		cmocka_unit_test(test_refuses_alg_key_mismatch),
		cmocka_unit_test(test_refuses_key_headers),
		cmocka_unit_test(test_header_rules),
		cmocka_unit_test(test_refuses_unknown_kid),
		cmocka_unit_test(test_sub_rules),
		cmocka_unit_test(test_refuses_tampering),
		cmocka_unit_test(test_exp_rules),
		cmocka_unit_test(test_nbf_iat_rules),
		cmocka_unit_test(test_aud_rules),
		cmocka_unit_test(test_refuses_bad_shape),
		cmocka_unit_test(test_size_limits),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
