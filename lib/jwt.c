/* jwt.c: see jwt.h. */
#include "jwt.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "b64.h"
#include "buf.h"
#include "json.h"
#include "jwk.h"

enum family { FAM_RSA, FAM_PSS, FAM_EC };

struct alg_info {
	const char *name;
	enum family family;
	const char *md;      /* digest name for OpenSSL */
	const char *crv;     /* ES*: the one curve it goes with */
};

/* Indexed by enum ly_jwt_alg. */
static const struct alg_info algs[] = {
	[LY_JWT_RS256] = { "RS256", FAM_RSA, "SHA256", NULL },
	[LY_JWT_RS384] = { "RS384", FAM_RSA, "SHA384", NULL },
	[LY_JWT_RS512] = { "RS512", FAM_RSA, "SHA512", NULL },
	[LY_JWT_ES256] = { "ES256", FAM_EC, "SHA256", "P-256" },
	[LY_JWT_ES384] = { "ES384", FAM_EC, "SHA384", "P-384" },
	[LY_JWT_ES512] = { "ES512", FAM_EC, "SHA512", "P-521" },
	[LY_JWT_PS256] = { "PS256", FAM_PSS, "SHA256", NULL },
	[LY_JWT_PS384] = { "PS384", FAM_PSS, "SHA384", NULL },
	[LY_JWT_PS512] = { "PS512", FAM_PSS, "SHA512", NULL },
};
#define NALGS (sizeof(algs) / sizeof(algs[0]))

/* Header members JWT-SVID §2 allows; the ones below it names in refusals. */
static const char *const named_forbidden_headers[] = { "crit", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256" };

/*
 * Copies up to 32 bytes of untrusted text for a message, printable ASCII
 * only ('?' for anything else), "..." when cut.
 */
static const char *
show(const char *s, size_t len, char out[40])
{
	size_t n = len < 32 ? len : 32;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		out[i] = c >= 0x20 && c < 0x7f && c != '\'' ? (char)c : '?';
	}
	if (n < len) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

const char *
ly_jwt_alg_name(enum ly_jwt_alg alg)
{
	return (size_t)alg < NALGS ? algs[alg].name : "?";
}

ly_status
ly_jwt_alg_parse(const char *name, size_t len, enum ly_jwt_alg *out, struct ly_error *err)
{
	char shown[40];

	for (size_t i = 0; i < NALGS; i++) {
		if (len == strlen(algs[i].name) && memcmp(name, algs[i].name, len) == 0) {
			*out = (enum ly_jwt_alg)i;
			return LY_OK;
		}
	}
	if (len == 4 && memcmp(name, "none", 4) == 0)
		return ly_error_set(err, LY_E_UNSUPPORTED, "jwt: alg 'none' not allowed (JWT-SVID §2.1)");
	if (len >= 2 && memcmp(name, "HS", 2) == 0)
		return ly_error_set(err, LY_E_UNSUPPORTED, "jwt: alg '%s' not allowed: no symmetric keys (JWT-SVID §2.1)",
		    show(name, len, shown));
	return ly_error_set(err, LY_E_UNSUPPORTED, "jwt: alg '%s' not allowed (JWT-SVID §2.1)",
	    show(name, len, shown));
}

ly_status
ly_jwt_alg_check_key(enum ly_jwt_alg alg, const EVP_PKEY *key, struct ly_error *err)
{
	if ((size_t)alg >= NALGS || key == NULL)
		return ly_error_set(err, LY_E_INVALID, "jwt: no algorithm or no key");
	const struct alg_info *a = &algs[alg];
	const char *crv = ly_jwk_ec_crv(key, NULL);
	if (a->family == FAM_EC) {
		if (crv == NULL || strcmp(crv, a->crv) != 0)
			return ly_error_set(err, LY_E_INVALID, "jwt: alg '%s' does not match the key (%s%s, %s needs %s)",
			    a->name, EVP_PKEY_get_base_id(key) == EVP_PKEY_EC ? "EC " : "not EC", crv != NULL ? crv : "",
			    a->name, a->crv);
		return LY_OK;
	}
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
		return ly_error_set(err, LY_E_INVALID, "jwt: alg '%s' does not match the key (%s, %s needs RSA)",
		    a->name, crv != NULL ? crv : "not RSA", a->name);
	ly_status rc = ly_jwk_check_pkey(key, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "jwt: alg '%s'", a->name);
	return LY_OK;
}

static bool
str_is(const json_t *v, const char *s)
{
	size_t n = strlen(s);
	return json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

ly_status
ly_jwt_header_parse(const char *json, size_t len, struct ly_jwt_header *out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *h = NULL;
	char shown[40];

	memset(out, 0, sizeof(*out));
	rc = ly_json_parse_strict("json", json, len, LY_JWT_HEADER_MAX, LY_JSON_DEPTH_MAX, &h, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: header");
		goto out;
	}
	if (!json_is_object(h)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: header is not a JSON object");
		goto out;
	}
	const json_t *alg = json_object_get(h, "alg");
	if (alg == NULL || !json_is_string(alg)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: header 'alg' missing or not a string (JWT-SVID §2.1)");
		goto out;
	}
	rc = ly_jwt_alg_parse(json_string_value(alg), json_string_length(alg), &out->alg, err);
	if (rc != LY_OK)
		goto out;
	/* No key and no key location from the token itself; nothing critical we would ignore. */
	for (size_t i = 0; i < sizeof(named_forbidden_headers) / sizeof(named_forbidden_headers[0]); i++) {
		if (json_object_get(h, named_forbidden_headers[i]) != NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "jwt: header '%s' not allowed (JWT-SVID §2)",
			    named_forbidden_headers[i]);
			goto out;
		}
	}
	const char *name;
	const json_t *v;
	json_object_foreach(h, name, v) {
		if (strcmp(name, "alg") != 0 && strcmp(name, "kid") != 0 && strcmp(name, "typ") != 0) {
			rc = ly_error_set(err, LY_E_INVALID, "jwt: header '%s' not allowed (JWT-SVID §2)",
			    show(name, strlen(name), shown));
			goto out;
		}
	}
	const json_t *kid = json_object_get(h, "kid");
	if (kid == NULL || !json_is_string(kid)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: header 'kid' missing or not a string");
		goto out;
	}
	rc = ly_jwk_kid_check(json_string_value(kid), json_string_length(kid), err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: header");
		goto out;
	}
	memcpy(out->kid, json_string_value(kid), json_string_length(kid) + 1);
	const json_t *typ = json_object_get(h, "typ");
	if (typ != NULL && !(json_is_string(typ) && (str_is(typ, "JWT") || str_is(typ, "JOSE")))) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: header 'typ' must be \"JWT\" or \"JOSE\" (JWT-SVID §2.3)");
		goto out;
	}
out:
	if (rc != LY_OK)
		memset(out, 0, sizeof(*out));
	json_decref(h);
	return rc;
}

/* Prepares a digest-sign or digest-verify context for `a` and `key`. */
static ly_status
init_ctx(const struct alg_info *a, EVP_PKEY *key, bool sign, EVP_MD_CTX **out, struct ly_error *err)
{
	EVP_PKEY_CTX *pctx = NULL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	*out = NULL;
	if (ctx == NULL)
		return ly_error_openssl(err, LY_E_NOMEM, "jwt: allocating a digest context");
	int ok = sign ? EVP_DigestSignInit_ex(ctx, &pctx, a->md, NULL, NULL, key, NULL)
		      : EVP_DigestVerifyInit_ex(ctx, &pctx, a->md, NULL, NULL, key, NULL);
	if (ok == 1 && a->family == FAM_PSS) {
		/* RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash. */
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, a->md, NULL) == 1 &&
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
	} else if (ok == 1 && a->family == FAM_RSA) {
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
	}
	if (ok != 1) {
		EVP_MD_CTX_free(ctx);
		return ly_error_openssl(err, LY_E_CRYPTO, "jwt: preparing %s", a->name);
	}
	*out = ctx;
	return LY_OK;
}

/* Verifies `sig` over `msg` (JWS signing input) with `key` for `a`. */
static ly_status
verify(const struct alg_info *a, EVP_PKEY *key, const char *msg, size_t msglen, const struct ly_buf *sig,
    struct ly_error *err)
{
	ly_status rc = LY_OK;
	EVP_MD_CTX *ctx = NULL;
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL;
	BIGNUM *s = NULL;
	unsigned char *der = NULL;
	const unsigned char *check = sig->data;
	size_t check_len = sig->len;

	if (a->family == FAM_EC) {
		/* The width comes from the key, not from alg (which was matched to it). */
		size_t width = 0;
		if (ly_jwk_ec_crv(key, &width) == NULL) {
			rc = ly_error_set(err, LY_E_INTERNAL, "jwt: EC key on no known curve");
			goto out;
		}
		if (sig->len != 2 * width) {
			rc = ly_error_set(err, LY_E_UNTRUSTED, "jwt: %s signature of %zu bytes, expected %zu (raw r||s)",
			    a->name, sig->len, 2 * width);
			goto out;
		}
		r = BN_bin2bn(sig->data, (int)width, NULL);
		s = BN_bin2bn(sig->data + width, (int)width, NULL);
		es = ECDSA_SIG_new();
		if (r == NULL || s == NULL || es == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
			rc = ly_error_openssl(err, LY_E_NOMEM, "jwt: building an ECDSA signature");
			goto out;
		}
		r = s = NULL;
		int n = i2d_ECDSA_SIG(es, &der);
		if (n <= 0) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "jwt: encoding an ECDSA signature");
			goto out;
		}
		check = der;
		check_len = (size_t)n;
	} else if (sig->len != (size_t)EVP_PKEY_get_size(key)) {
		rc = ly_error_set(err, LY_E_UNTRUSTED, "jwt: %s signature of %zu bytes, the key needs %d", a->name,
		    sig->len, EVP_PKEY_get_size(key));
		goto out;
	}
	rc = init_ctx(a, key, false, &ctx, err);
	if (rc != LY_OK)
		goto out;
	if (EVP_DigestVerify(ctx, check, check_len, (const unsigned char *)msg, msglen) != 1) {
		ERR_clear_error();
		rc = ly_error_set(err, LY_E_UNTRUSTED, "jwt: %s signature does not verify", a->name);
		goto out;
	}
out:
	EVP_MD_CTX_free(ctx);
	ECDSA_SIG_free(es);
	BN_free(r);
	BN_free(s);
	OPENSSL_free(der);
	return rc;
}

/* Signs `msg` with `key` for `a` into a new JWS signature (raw r||s for ECDSA). */
static ly_status
sign(const struct alg_info *a, EVP_PKEY *key, const char *msg, size_t msglen, struct ly_buf *out,
    struct ly_error *err)
{
	ly_status rc = LY_OK;
	EVP_MD_CTX *ctx = NULL;
	unsigned char *raw = NULL;
	size_t raw_len = 0;
	ECDSA_SIG *es = NULL;
	uint8_t *jws = NULL;

	rc = init_ctx(a, key, true, &ctx, err);
	if (rc != LY_OK)
		goto out;
	if (EVP_DigestSign(ctx, NULL, &raw_len, (const unsigned char *)msg, msglen) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "jwt: signing with %s", a->name);
		goto out;
	}
	raw = malloc(raw_len);
	if (raw == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "jwt: allocating a signature");
		goto out;
	}
	if (EVP_DigestSign(ctx, raw, &raw_len, (const unsigned char *)msg, msglen) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "jwt: signing with %s", a->name);
		goto out;
	}
	if (a->family != FAM_EC) {
		ly_buf_adopt(out, raw, raw_len);
		raw = NULL;
		goto out;
	}
	/* RFC 7518 §3.4: ECDSA as r||s, each left-padded to the field size. */
	size_t width = 0;
	(void)ly_jwk_ec_crv(key, &width);
	const unsigned char *p = raw;
	es = d2i_ECDSA_SIG(NULL, &p, (long)raw_len);
	if (es == NULL || p != raw + raw_len || width == 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "jwt: decoding our own ECDSA signature");
		goto out;
	}
	jws = malloc(2 * width);
	if (jws == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "jwt: allocating a signature");
		goto out;
	}
	if (BN_bn2binpad(ECDSA_SIG_get0_r(es), jws, (int)width) != (int)width ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(es), jws + width, (int)width) != (int)width) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "jwt: encoding an ECDSA signature");
		goto out;
	}
	ly_buf_adopt(out, jws, 2 * width);
	jws = NULL;
out:
	free(jws);
	free(raw);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(ctx);
	return rc;
}

ly_status
ly_jwt_sign(EVP_PKEY *key, const char *kid, const char *alg, const struct ly_spiffe_id *sub,
    const char *const *aud, size_t naud, time_t iat, time_t exp, char **token_out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *header = NULL;
	json_t *claims = NULL;
	char *hjson = NULL;
	char *cjson = NULL;
	char *token = NULL;
	size_t token_cap = 0;
	struct ly_buf sig = LY_BUF_INIT;
	enum ly_jwt_alg a;

	*token_out = NULL;
	if (key == NULL || kid == NULL || sub == NULL || (aud == NULL && naud > 0)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: sign: missing key, kid, sub or audiences");
		goto out;
	}
	if (alg == NULL) {
		const char *crv = ly_jwk_ec_crv(key, NULL);
		if (crv != NULL && strcmp(crv, "P-256") == 0)
			a = LY_JWT_ES256;
		else if (crv != NULL && strcmp(crv, "P-384") == 0)
			a = LY_JWT_ES384;
		else if (crv != NULL && strcmp(crv, "P-521") == 0)
			a = LY_JWT_ES512;
		else
			a = LY_JWT_RS256;
	} else {
		rc = ly_jwt_alg_parse(alg, strlen(alg), &a, err);
		if (rc != LY_OK)
			goto out;
	}
	rc = ly_jwt_alg_check_key(a, key, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_jwk_kid_check(kid, strlen(kid), err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: sign");
		goto out;
	}
	if (ly_spiffe_id_is_trust_domain_id(sub)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: sign: sub must be a SPIFFE ID with a path");
		goto out;
	}
	if (naud == 0 || naud > LY_JWT_AUDIENCES_MAX) {
		rc = ly_error_set(err, naud == 0 ? LY_E_INVALID : LY_E_LIMIT,
		    "jwt: sign: %zu audiences, 1 to %d required (JWT-SVID §3.2)", naud, LY_JWT_AUDIENCES_MAX);
		goto out;
	}
	if (iat < 0 || exp <= iat) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: sign: exp must be after iat (JWT-SVID §3.3)");
		goto out;
	}

	header = json_object();
	claims = json_object();
	json_t *aud_json = naud == 1 ? NULL : json_array();
	if (header == NULL || claims == NULL || (naud > 1 && aud_json == NULL)) {
		json_decref(aud_json);
		rc = ly_error_set(err, LY_E_NOMEM, "jwt: sign: building JSON");
		goto out;
	}
	for (size_t i = 0; i < naud; i++) {
		if (aud[i] == NULL || aud[i][0] == '\0') {
			json_decref(aud_json);
			rc = ly_error_set(err, LY_E_INVALID, "jwt: sign: audience %zu is empty", i);
			goto out;
		}
		if (naud == 1)
			aud_json = json_string(aud[i]);
		else if (json_array_append_new(aud_json, json_string(aud[i])) != 0) {
			json_decref(aud_json);
			rc = ly_error_set(err, LY_E_INVALID, "jwt: sign: audience %zu is not UTF-8", i);
			goto out;
		}
	}
	if (json_object_set_new(header, "alg", json_string(algs[a].name)) != 0 ||
	    json_object_set_new(header, "kid", json_string(kid)) != 0 ||
	    json_object_set_new(header, "typ", json_string("JWT")) != 0 ||
	    json_object_set_new(claims, "sub", json_string(sub->id)) != 0 ||
	    json_object_set_new(claims, "aud", aud_json) != 0 ||
	    json_object_set_new(claims, "exp", json_integer((json_int_t)exp)) != 0 ||
	    json_object_set_new(claims, "iat", json_integer((json_int_t)iat)) != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: sign: building JSON (not UTF-8, or out of memory)");
		goto out;
	}
	hjson = json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER);
	cjson = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (hjson == NULL || cjson == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "jwt: sign: serializing JSON");
		goto out;
	}
	size_t hlen = ly_b64url_encoded_len(strlen(hjson));
	size_t clen = ly_b64url_encoded_len(strlen(cjson));
	if (hlen + 1 + clen > LY_JWT_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "jwt: sign: token would exceed %d bytes", LY_JWT_MAX);
		goto out;
	}
	/* Room for the largest signature: RSA at LY_RSA_BITS_MAX. */
	token_cap = hlen + 1 + clen + 1 + ly_b64url_encoded_len(LY_RSA_BITS_MAX / 8) + 1;
	token = malloc(token_cap);
	if (token == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "jwt: sign: allocating the token");
		goto out;
	}
	size_t n = ly_b64url_encode_into((const uint8_t *)hjson, strlen(hjson), token);
	token[n++] = '.';
	n += ly_b64url_encode_into((const uint8_t *)cjson, strlen(cjson), token + n);
	rc = sign(&algs[a], key, token, n, &sig, err);
	if (rc != LY_OK)
		goto out;
	if (ly_b64url_encoded_len(sig.len) > token_cap - n - 2) {
		rc = ly_error_set(err, LY_E_INTERNAL, "jwt: sign: signature of %zu bytes does not fit", sig.len);
		goto out;
	}
	token[n++] = '.';
	n += ly_b64url_encode_into(sig.data, sig.len, token + n);
	if (n > LY_JWT_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "jwt: sign: token of %zu bytes exceeds %d", n, LY_JWT_MAX);
		goto out;
	}
	*token_out = token;
	token = NULL;
out:
	if (token != NULL) {
		OPENSSL_cleanse(token, token_cap);
		free(token);
	}
	ly_buf_free(&sig);
	free(hjson);
	free(cjson);
	json_decref(header);
	json_decref(claims);
	return rc;
}

/*
 * Reads an optional NumericDate claim (RFC 7519 §2): an integer, or a
 * finite real rounded in the direction that makes the check stricter
 * (`round_up` for nbf/iat, down for exp).
 */
static ly_status
get_date(const json_t *claims, const char *name, bool round_up, bool *present, long long *out,
    struct ly_error *err)
{
	const json_t *v = json_object_get(claims, name);
	*present = false;
	*out = 0;
	if (v == NULL)
		return LY_OK;
	if (json_is_integer(v)) {
		*out = (long long)json_integer_value(v);
	} else if (json_is_real(v)) {
		double d = json_real_value(v);
		/* 9.2e18 fits in a long long; anything beyond is not a date. */
		if (!isfinite(d) || d < -9.2e18 || d > 9.2e18)
			return ly_error_set(err, LY_E_INVALID, "jwt: '%s' out of range", name);
		/* Truncated toward zero, then rounded (no libm in lanyard_core). */
		long long t = (long long)d;
		if (round_up && (double)t < d)
			t++;
		else if (!round_up && (double)t > d)
			t--;
		*out = t;
	} else {
		return ly_error_set(err, LY_E_INVALID, "jwt: '%s' is not a number", name);
	}
	*present = true;
	return LY_OK;
}

/* The claim rules applied after the signature verified. */
static ly_status
check_claims(const json_t *claims, const char *audience, time_t now, struct ly_error *err)
{
	char shown[40];
	bool present;
	long long t;
	long long lnow = (long long)now;

	/* JWT-SVID §3.2 */
	const json_t *aud = json_object_get(claims, "aud");
	if (aud == NULL)
		return ly_error_set(err, LY_E_INVALID, "jwt: 'aud' missing (JWT-SVID §3.2)");
	bool found = false;
	if (json_is_string(aud)) {
		found = str_is(aud, audience);
	} else if (json_is_array(aud)) {
		if (json_array_size(aud) == 0)
			return ly_error_set(err, LY_E_INVALID, "jwt: 'aud' is empty (JWT-SVID §3.2)");
		if (json_array_size(aud) > LY_JWT_AUDIENCES_MAX)
			return ly_error_set(err, LY_E_LIMIT, "jwt: 'aud' has %zu values, at most %d accepted",
			    json_array_size(aud), LY_JWT_AUDIENCES_MAX);
		for (size_t i = 0; i < json_array_size(aud); i++) {
			const json_t *e = json_array_get(aud, i);
			if (!json_is_string(e))
				return ly_error_set(err, LY_E_INVALID, "jwt: 'aud' value %zu is not a string", i);
			if (str_is(e, audience))
				found = true;
		}
	} else {
		return ly_error_set(err, LY_E_INVALID, "jwt: 'aud' must be a string or an array of strings");
	}
	if (!found)
		return ly_error_set(err, LY_E_INVALID, "jwt: audience '%s' not in 'aud' (JWT-SVID §3.2)",
		    show(audience, strlen(audience), shown));

	/* JWT-SVID §3.3: exp required, not in the past beyond the leeway. */
	LY_TRY(get_date(claims, "exp", false, &present, &t, err));
	if (!present)
		return ly_error_set(err, LY_E_INVALID, "jwt: 'exp' missing (JWT-SVID §3.3)");
	long long limit;
	if (__builtin_add_overflow(t, (long long)LY_JWT_LEEWAY_SECONDS, &limit))
		limit = LLONG_MAX;
	if (lnow >= limit)
		return ly_error_set(err, LY_E_EXPIRED, "jwt: expired (exp %lld, now %lld, leeway %d s)", t, lnow,
		    LY_JWT_LEEWAY_SECONDS);

	/* RFC 7519 §4.1.5, §4.1.6: not before, issued at; neither in the future. */
	static const char *const not_future[] = { "nbf", "iat" };
	for (size_t i = 0; i < 2; i++) {
		LY_TRY(get_date(claims, not_future[i], true, &present, &t, err));
		if (!present)
			continue;
		long long earliest;
		if (__builtin_sub_overflow(t, (long long)LY_JWT_LEEWAY_SECONDS, &earliest))
			earliest = LLONG_MIN;
		if (earliest > lnow)
			return ly_error_set(err, LY_E_EXPIRED, "jwt: '%s' %lld is in the future (now %lld, leeway %d s)",
			    not_future[i], t, lnow, LY_JWT_LEEWAY_SECONDS);
	}
	return LY_OK;
}

ly_status
ly_jwt_validate(const char *token, size_t len, const char *audience, const struct ly_bundle_set *bundles,
    time_t now, struct ly_spiffe_id *sub_out, json_t **claims_out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_buf hbuf = LY_BUF_INIT;
	struct ly_buf pbuf = LY_BUF_INIT;
	struct ly_buf sig = LY_BUF_INIT;
	json_t *claims = NULL;
	struct ly_jwt_header hdr;
	struct ly_spiffe_id sub;

	if (sub_out != NULL)
		memset(sub_out, 0, sizeof(*sub_out));
	if (claims_out != NULL)
		*claims_out = NULL;
	if (token == NULL || audience == NULL || audience[0] == '\0' || bundles == NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: validate: missing token, audience or bundles");
		goto out;
	}
	if (len > LY_JWT_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "jwt: token of %zu bytes, at most %d accepted", len, LY_JWT_MAX);
		goto out;
	}
	if (memchr(token, '\0', len) != NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: NUL byte in token");
		goto out;
	}
	/* JWT-SVID §5.1: JWS Compact Serialization, header.payload.signature. */
	size_t dots[2];
	size_t ndots = 0;
	for (size_t i = 0; i < len; i++) {
		if (token[i] != '.')
			continue;
		if (ndots == 2) {
			ndots = 3;
			break;
		}
		dots[ndots++] = i;
	}
	if (ndots != 2) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: %s segments, a compact JWS has exactly 3",
		    ndots < 2 ? (ndots == 0 ? "1" : "2") : "more than 3");
		goto out;
	}
	if (dots[0] == 0 || dots[1] == dots[0] + 1 || dots[1] + 1 == len) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: empty segment");
		goto out;
	}
	if (dots[0] > ly_b64url_encoded_len(LY_JWT_HEADER_MAX)) {
		rc = ly_error_set(err, LY_E_LIMIT, "jwt: header over %d bytes", LY_JWT_HEADER_MAX);
		goto out;
	}
	rc = ly_b64url_decode(token, dots[0], &hbuf, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: header");
		goto out;
	}
	rc = ly_jwt_header_parse((const char *)hbuf.data, hbuf.len, &hdr, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_b64url_decode(token + dots[0] + 1, dots[1] - dots[0] - 1, &pbuf, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: payload");
		goto out;
	}
	rc = ly_json_parse_strict("json", (const char *)pbuf.data, pbuf.len, LY_JWT_MAX, LY_JSON_DEPTH_MAX, &claims, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: claims");
		goto out;
	}
	if (!json_is_object(claims)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: claims are not a JSON object");
		goto out;
	}

	/* JWT-SVID §3.1; its trust domain only picks the bundle, verified next. */
	const json_t *jsub = json_object_get(claims, "sub");
	if (jsub == NULL || !json_is_string(jsub)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: 'sub' missing or not a string (JWT-SVID §3.1)");
		goto out;
	}
	rc = ly_spiffe_id_parse(json_string_value(jsub), json_string_length(jsub), &sub, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: 'sub'");
		goto out;
	}
	if (ly_spiffe_id_is_trust_domain_id(&sub)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt: 'sub' %s has no path (JWT-SVID §3.1)", sub.id);
		goto out;
	}
	const struct ly_bundle *bundle = ly_bundle_set_find(bundles, sub.trust_domain);
	if (bundle == NULL) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "jwt: no bundle for trust domain %s", sub.trust_domain);
		goto out;
	}
	EVP_PKEY *key = ly_bundle_find_jwt_authority(bundle, hdr.kid);
	if (key == NULL) {
		rc = ly_error_set(err, LY_E_NOT_FOUND, "jwt: no key with kid '%s' in bundle for %s", hdr.kid,
		    sub.trust_domain);
		goto out;
	}
	rc = ly_jwt_alg_check_key(hdr.alg, key, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_b64url_decode(token + dots[1] + 1, len - dots[1] - 1, &sig, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "jwt: signature");
		goto out;
	}
	/* RFC 7515 §5.2: the signing input is the first two segments as sent. */
	rc = verify(&algs[hdr.alg], key, token, dots[1], &sig, err);
	if (rc != LY_OK)
		goto out;
	rc = check_claims(claims, audience, now, err);
	if (rc != LY_OK)
		goto out;

	if (sub_out != NULL)
		*sub_out = sub;
	if (claims_out != NULL) {
		*claims_out = claims;
		claims = NULL;
	}
out:
	json_decref(claims);
	ly_buf_free(&hbuf);
	ly_buf_free(&pbuf);
	ly_buf_free(&sig);
	return rc;
}
