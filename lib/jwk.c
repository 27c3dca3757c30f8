/* jwk.c: see jwk.h. */
#include "jwk.h"

#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>

#include "b64.h"
#include "buf.h"

/* The curves JWT-SVID allows (RFC 7518 §3.4) and their JWK names (§6.2.1.1). */
struct curve {
	int nid;
	const char *crv;     /* JWK name */
	const char *ossl;    /* OpenSSL group name */
	size_t width;        /* coordinate size in bytes */
};

static const struct curve curves[] = {
	{ NID_X9_62_prime256v1, "P-256", "prime256v1", 32 },
	{ NID_secp384r1, "P-384", "secp384r1", 48 },
	{ NID_secp521r1, "P-521", "secp521r1", 66 },
};

/* Members that only a private (or symmetric) JWK has: RFC 7518 §6.2.2, §6.3.2, §6.4. */
static const char *const private_members[] = { "d", "p", "q", "dp", "dq", "qi", "oth", "k" };

static const struct curve *
curve_of_key(const EVP_PKEY *key)
{
	char name[64];
	size_t len = 0;

	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
		return NULL;
	if (EVP_PKEY_get_group_name(key, name, sizeof(name), &len) != 1) {
		ERR_clear_error();
		return NULL;
	}
	int nid = OBJ_sn2nid(name);
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (curves[i].nid == nid)
			return &curves[i];
	return NULL;
}

const char *
ly_jwk_ec_crv(const EVP_PKEY *key, size_t *width)
{
	const struct curve *c = key != NULL ? curve_of_key(key) : NULL;
	if (c == NULL)
		return NULL;
	if (width != NULL)
		*width = c->width;
	return c->crv;
}

ly_status
ly_jwk_check_pkey(const EVP_PKEY *key, struct ly_error *err)
{
	if (key == NULL)
		return ly_error_set(err, LY_E_INVALID, "jwk: no key");
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_EC:
		if (curve_of_key(key) == NULL)
			return ly_error_set(err, LY_E_UNSUPPORTED, "jwk: EC key not on P-256, P-384 or P-521");
		return LY_OK;
	case EVP_PKEY_RSA: {
		int bits = EVP_PKEY_get_bits(key);
		if (bits < LY_JWK_RSA_BITS_MIN)
			return ly_error_set(err, LY_E_UNSUPPORTED, "jwk: RSA key of %d bits, at least %d required",
			    bits, LY_JWK_RSA_BITS_MIN);
		if (bits > LY_RSA_BITS_MAX)
			return ly_error_set(err, LY_E_LIMIT, "jwk: RSA key of %d bits, at most %d accepted", bits,
			    LY_RSA_BITS_MAX);
		return LY_OK;
	}
	default:
		return ly_error_set(err, LY_E_UNSUPPORTED, "jwk: key type %d not supported (EC or RSA only)",
		    EVP_PKEY_get_base_id(key));
	}
}

/* Sets obj[name] to the base64url of `len` bytes. */
static ly_status
set_b64url(json_t *obj, const char *name, const uint8_t *data, size_t len, struct ly_error *err)
{
	char *s = NULL;
	LY_TRY(ly_b64url_encode(data, len, &s, err));
	int rc = json_object_set_new(obj, name, json_string(s));
	free(s);
	if (rc != 0)
		return ly_error_set(err, LY_E_NOMEM, "jwk: adding '%s'", name);
	return LY_OK;
}

/* Sets obj[name] to the base64url of `bn`, left-padded to `width` bytes (0: minimal). */
static ly_status
set_bn(json_t *obj, const char *name, const BIGNUM *bn, size_t width, struct ly_error *err)
{
	ly_status rc = LY_OK;
	size_t len = width > 0 ? width : (size_t)BN_num_bytes(bn);
	uint8_t *bytes = NULL;

	if (len == 0 || len > LY_RSA_BITS_MAX / 8) {
		rc = ly_error_set(err, LY_E_INVALID, "jwk: '%s' of %zu bytes", name, len);
		goto out;
	}
	bytes = malloc(len);
	if (bytes == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "jwk: allocating %zu bytes", len);
		goto out;
	}
	if (BN_bn2binpad(bn, bytes, (int)len) != (int)len) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "jwk: encoding '%s'", name);
		goto out;
	}
	rc = set_b64url(obj, name, bytes, len, err);
out:
	free(bytes);
	return rc;
}

ly_status
ly_jwk_from_pkey(const EVP_PKEY *key, json_t **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *obj = NULL;
	BIGNUM *a = NULL;
	BIGNUM *b = NULL;

	*out = NULL;
	rc = ly_jwk_check_pkey(key, err);
	if (rc != LY_OK)
		goto out;
	obj = json_object();
	if (obj == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "jwk: allocating an object");
		goto out;
	}
	const struct curve *c = curve_of_key(key);
	if (c != NULL) {
		if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &a) != 1 ||
		    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &b) != 1) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "jwk: reading the EC public point");
			goto out;
		}
		if (json_object_set_new(obj, "kty", json_string("EC")) != 0 ||
		    json_object_set_new(obj, "crv", json_string(c->crv)) != 0) {
			rc = ly_error_set(err, LY_E_NOMEM, "jwk: building an EC key");
			goto out;
		}
		rc = set_bn(obj, "x", a, c->width, err);
		if (rc == LY_OK)
			rc = set_bn(obj, "y", b, c->width, err);
	} else {
		if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &a) != 1 ||
		    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &b) != 1) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "jwk: reading the RSA public key");
			goto out;
		}
		if (json_object_set_new(obj, "kty", json_string("RSA")) != 0) {
			rc = ly_error_set(err, LY_E_NOMEM, "jwk: building an RSA key");
			goto out;
		}
		rc = set_bn(obj, "n", a, 0, err);
		if (rc == LY_OK)
			rc = set_bn(obj, "e", b, 0, err);
	}
	if (rc != LY_OK)
		goto out;
	*out = obj;
	obj = NULL;
out:
	json_decref(obj);
	BN_free(a);
	BN_free(b);
	return rc;
}

/*
 * Decodes the base64url string member `name` of `jwk` into `out`, refusing
 * a missing or non-string member and more than `max` decoded bytes.
 */
static ly_status
get_b64url(const json_t *jwk, const char *name, size_t max, struct ly_buf *out, struct ly_error *err)
{
	const json_t *v = json_object_get(jwk, name);
	if (v == NULL)
		return ly_error_set(err, LY_E_INVALID, "jwk: '%s' missing", name);
	if (!json_is_string(v))
		return ly_error_set(err, LY_E_INVALID, "jwk: '%s' is not a string", name);
	size_t len = json_string_length(v);
	if (len > ly_b64url_encoded_len(max))
		return ly_error_set(err, LY_E_LIMIT, "jwk: '%s' longer than %zu bytes", name, max);
	ly_status rc = ly_b64url_decode(json_string_value(v), len, out, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "jwk: '%s'", name);
	return LY_OK;
}

/* Runs EVP_PKEY_fromdata for a public key of type `type` from `bld`'s params. */
static ly_status
pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld, EVP_PKEY **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);

	if (params == NULL || ctx == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "jwk: preparing a %s key", type);
		goto out;
	}
	if (EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		rc = ly_error_openssl(err, LY_E_INVALID, "jwk: not a valid %s public key", type);
		goto out;
	}
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return rc;
}

static ly_status
ec_to_pkey(const json_t *jwk, EVP_PKEY **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_buf x = LY_BUF_INIT;
	struct ly_buf y = LY_BUF_INIT;
	uint8_t *point = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY_CTX *check = NULL;
	const struct curve *c = NULL;

	const json_t *crv = json_object_get(jwk, "crv");
	if (crv == NULL || !json_is_string(crv)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwk: EC key without a string 'crv'");
		goto out;
	}
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (strcmp(json_string_value(crv), curves[i].crv) == 0 &&
		    json_string_length(crv) == strlen(curves[i].crv))
			c = &curves[i];
	if (c == NULL) {
		rc = ly_error_set(err, LY_E_UNSUPPORTED, "jwk: crv not P-256, P-384 or P-521");
		goto out;
	}
	rc = get_b64url(jwk, "x", c->width, &x, err);
	if (rc == LY_OK)
		rc = get_b64url(jwk, "y", c->width, &y, err);
	if (rc != LY_OK)
		goto out;
	/* RFC 7518 §6.2.1.2: "MUST be the full size of a coordinate". */
	if (x.len != c->width || y.len != c->width) {
		rc = ly_error_set(err, LY_E_INVALID, "jwk: %s coordinates must be %zu bytes (got %zu, %zu)", c->crv,
		    c->width, x.len, y.len);
		goto out;
	}
	point = malloc(1 + 2 * c->width);
	if (point == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "jwk: allocating a point");
		goto out;
	}
	point[0] = 0x04; /* uncompressed (SEC 1 §2.3.3) */
	memcpy(point + 1, x.data, c->width);
	memcpy(point + 1 + c->width, y.data, c->width);
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL ||
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, c->ossl, 0) != 1 ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * c->width) != 1) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "jwk: preparing an EC key");
		goto out;
	}
	rc = pkey_fromdata("EC", bld, out, err);
	if (rc != LY_OK)
		goto out;
	/* On the curve, not the point at infinity, in the prime-order group. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL);
	if (check == NULL || EVP_PKEY_public_check(check) != 1) {
		rc = ly_error_openssl(err, LY_E_INVALID, "jwk: EC point is not a valid %s public key", c->crv);
		EVP_PKEY_free(*out);
		*out = NULL;
		goto out;
	}
out:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_BLD_free(bld);
	free(point);
	ly_buf_free(&x);
	ly_buf_free(&y);
	return rc;
}

/* Number of significant bits in a big-endian unsigned integer without leading zeros. */
static size_t
be_bits(const struct ly_buf *b)
{
	unsigned top = b->data[0];
	size_t bits = (b->len - 1) * 8;
	while (top != 0) {
		bits++;
		top >>= 1;
	}
	return bits;
}

static ly_status
rsa_to_pkey(const json_t *jwk, EVP_PKEY **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_buf n = LY_BUF_INIT;
	struct ly_buf e = LY_BUF_INIT;
	BIGNUM *bn_n = NULL;
	BIGNUM *bn_e = NULL;
	OSSL_PARAM_BLD *bld = NULL;

	rc = get_b64url(jwk, "n", LY_RSA_BITS_MAX / 8, &n, err);
	if (rc == LY_E_LIMIT) {
		rc = ly_error_set(err, LY_E_LIMIT, "jwk: RSA modulus over %d bits", LY_RSA_BITS_MAX);
		goto out;
	}
	if (rc == LY_OK)
		rc = get_b64url(jwk, "e", LY_JWK_RSA_E_MAX, &e, err);
	if (rc != LY_OK)
		goto out;
	/* RFC 7518 §2 (Base64urlUInt): the minimum number of octets. */
	if (n.len == 0 || n.data[0] == 0 || e.len == 0 || e.data[0] == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "jwk: RSA 'n' and 'e' must be minimal non-zero integers");
		goto out;
	}
	size_t bits = be_bits(&n);
	if (bits < LY_JWK_RSA_BITS_MIN) {
		rc = ly_error_set(err, LY_E_UNSUPPORTED, "jwk: RSA key of %zu bits, at least %d required", bits,
		    LY_JWK_RSA_BITS_MIN);
		goto out;
	}
	if ((n.data[n.len - 1] & 1) == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "jwk: RSA modulus is even");
		goto out;
	}
	if ((e.data[e.len - 1] & 1) == 0 || (e.len == 1 && e.data[0] == 1)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwk: RSA exponent must be odd and greater than 1");
		goto out;
	}
	bn_n = BN_bin2bn(n.data, (int)n.len, NULL);
	bn_e = BN_bin2bn(e.data, (int)e.len, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (bn_n == NULL || bn_e == NULL || bld == NULL ||
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "jwk: preparing an RSA key");
		goto out;
	}
	rc = pkey_fromdata("RSA", bld, out, err);
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	ly_buf_free(&n);
	ly_buf_free(&e);
	return rc;
}

ly_status
ly_jwk_to_pkey(const json_t *jwk, EVP_PKEY **out, struct ly_error *err)
{
	*out = NULL;
	if (!json_is_object(jwk))
		return ly_error_set(err, LY_E_INVALID, "jwk: not a JSON object");
	for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
		if (json_object_get(jwk, private_members[i]) != NULL)
			return ly_error_set(err, LY_E_INVALID,
			    "jwk: private member '%s' not allowed in a public key", private_members[i]);
	const json_t *kty = json_object_get(jwk, "kty");
	if (kty == NULL || !json_is_string(kty))
		return ly_error_set(err, LY_E_INVALID, "jwk: 'kty' missing or not a string");
	const char *t = json_string_value(kty);
	size_t tlen = json_string_length(kty);
	if (tlen == 2 && memcmp(t, "EC", 2) == 0)
		return ec_to_pkey(jwk, out, err);
	if (tlen == 3 && memcmp(t, "RSA", 3) == 0)
		return rsa_to_pkey(jwk, out, err);
	if (tlen == 3 && memcmp(t, "oct", 3) == 0)
		return ly_error_set(err, LY_E_INVALID, "jwk: kty 'oct' (symmetric key) not allowed");
	return ly_error_set(err, LY_E_UNSUPPORTED, "jwk: kty not supported (EC or RSA only)");
}

ly_status
ly_jwk_kid_check(const char *kid, size_t len, struct ly_error *err)
{
	if (kid == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "kid is empty");
	if (len > LY_JWT_KID_MAX)
		return ly_error_set(err, LY_E_LIMIT, "kid longer than %d bytes", LY_JWT_KID_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)kid[i];
		if (c < 0x21 || c > 0x7e)
			return ly_error_set(err, LY_E_INVALID, "kid has byte 0x%02x at offset %zu (printable ASCII only)",
			    c, i);
	}
	return LY_OK;
}
