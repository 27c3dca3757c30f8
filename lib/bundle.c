/* bundle.c: see bundle.h. */
#include "bundle.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "b64.h"
#include "json.h"
#include "jwk.h"
#include "spiffeid.h"

struct jwt_authority {
	char *kid;
	EVP_PKEY *key; /* public only */
};

struct ly_bundle {
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_buf *x509;
	size_t nx509;
	size_t capx509;
	struct jwt_authority *jwt;
	size_t njwt;
	size_t capjwt;
	uint64_t sequence;
	uint64_t refresh_hint;
};

struct ly_bundle_set {
	struct ly_bundle **v;
	size_t n;
	size_t cap;
};

#define JWT_AUTHORITIES_MAX LY_JWKS_KEYS_MAX

/*
 * Grows the array whose pointer is at `arrp` (elements of `size` bytes,
 * `*cap` of them) to hold `need`. The pointer is moved with memcpy so one
 * helper serves every element type without type punning.
 */
static ly_status
grow(void *arrp, size_t *cap, size_t need, size_t size, struct ly_error *err)
{
	if (need <= *cap)
		return LY_OK;
	size_t ncap = *cap == 0 ? 4 : *cap * 2;
	if (ncap < need)
		ncap = need;
	void *old;
	memcpy(&old, arrp, sizeof(old));
	void *p = realloc(old, ncap * size);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle: allocating %zu entries", ncap);
	memcpy(arrp, &p, sizeof(p));
	*cap = ncap;
	return LY_OK;
}

ly_status
ly_bundle_new(const char *td, struct ly_bundle **out, struct ly_error *err)
{
	*out = NULL;
	struct ly_bundle *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle: allocating");
	ly_status rc = ly_trust_domain_parse(td, false, b->td, err);
	if (rc != LY_OK) {
		free(b);
		return ly_error_wrap(err, rc, "bundle");
	}
	*out = b;
	return LY_OK;
}

void
ly_bundle_free(struct ly_bundle *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->nx509; i++)
		ly_buf_free(&b->x509[i]);
	free(b->x509);
	for (size_t i = 0; i < b->njwt; i++) {
		free(b->jwt[i].kid);
		EVP_PKEY_free(b->jwt[i].key);
	}
	free(b->jwt);
	free(b);
}

ly_status
ly_bundle_clone(const struct ly_bundle *b, struct ly_bundle **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_bundle *c = NULL;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle: allocating");
	memcpy(c->td, b->td, sizeof(c->td));
	c->sequence = b->sequence;
	c->refresh_hint = b->refresh_hint;
	rc = grow(&c->x509, &c->capx509, b->nx509, sizeof(*c->x509), err);
	if (rc == LY_OK)
		rc = grow(&c->jwt, &c->capjwt, b->njwt, sizeof(*c->jwt), err);
	if (rc != LY_OK)
		goto out;
	for (size_t i = 0; i < b->nx509; i++) {
		rc = ly_buf_set(&c->x509[i], b->x509[i].data, b->x509[i].len, err);
		if (rc != LY_OK)
			goto out;
		c->nx509++;
	}
	for (size_t i = 0; i < b->njwt; i++) {
		char *kid = strdup(b->jwt[i].kid);
		if (kid == NULL || EVP_PKEY_up_ref(b->jwt[i].key) != 1) {
			free(kid);
			rc = ly_error_set(err, LY_E_NOMEM, "bundle: copying a JWT authority");
			goto out;
		}
		c->jwt[i].kid = kid;
		c->jwt[i].key = b->jwt[i].key;
		c->njwt++;
	}
	*out = c;
	c = NULL;
out:
	ly_bundle_free(c);
	return rc;
}

bool
ly_bundle_equal(const struct ly_bundle *a, const struct ly_bundle *b)
{
	if (strcmp(a->td, b->td) != 0 || a->sequence != b->sequence || a->refresh_hint != b->refresh_hint ||
	    a->nx509 != b->nx509 || a->njwt != b->njwt)
		return false;
	for (size_t i = 0; i < a->nx509; i++)
		if (a->x509[i].len != b->x509[i].len || memcmp(a->x509[i].data, b->x509[i].data, a->x509[i].len) != 0)
			return false;
	for (size_t i = 0; i < a->njwt; i++) {
		if (strcmp(a->jwt[i].kid, b->jwt[i].kid) != 0)
			return false;
		if (EVP_PKEY_eq(a->jwt[i].key, b->jwt[i].key) != 1) {
			ERR_clear_error();
			return false;
		}
	}
	return true;
}

const char *
ly_bundle_trust_domain(const struct ly_bundle *b)
{
	return b->td;
}

uint64_t
ly_bundle_sequence(const struct ly_bundle *b)
{
	return b->sequence;
}

uint64_t
ly_bundle_refresh_hint(const struct ly_bundle *b)
{
	return b->refresh_hint;
}

ly_status
ly_bundle_update_sequence(struct ly_bundle *b, uint64_t seq, struct ly_error *err)
{
	if (seq > INT64_MAX)
		return ly_error_set(err, LY_E_LIMIT, "bundle: spiffe_sequence above %lld", (long long)INT64_MAX);
	b->sequence = seq;
	return LY_OK;
}

ly_status
ly_bundle_update_refresh_hint(struct ly_bundle *b, uint64_t seconds, struct ly_error *err)
{
	if (seconds > INT64_MAX)
		return ly_error_set(err, LY_E_LIMIT, "bundle: spiffe_refresh_hint above %lld", (long long)INT64_MAX);
	b->refresh_hint = seconds;
	return LY_OK;
}

/*
 * Parses `der` as exactly one CA certificate whose key we can publish as a
 * JWK. Returns the parsed certificate in `*out` when `out` is non-NULL.
 */
static ly_status
check_ca_der(const uint8_t *der, size_t len, X509 **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	X509 *x = NULL;

	if (out != NULL)
		*out = NULL;
	if (len == 0)
		return ly_error_set(err, LY_E_INVALID, "certificate: empty");
	if (len > LY_CERT_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "certificate: %zu bytes, at most %d accepted", len,
		    LY_CERT_DER_MAX);
	const unsigned char *p = der;
	x = d2i_X509(NULL, &p, (long)len);
	if (x == NULL) {
		rc = ly_error_openssl(err, LY_E_INVALID, "certificate: not DER X.509");
		goto out;
	}
	if (p != der + len) {
		rc = ly_error_set(err, LY_E_INVALID, "certificate: %zu trailing bytes after the DER",
		    (size_t)(der + len - p));
		goto out;
	}
	/* X509-SVID §6.1: bundles carry CA certificates. */
	if (X509_check_ca(x) == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "certificate: not a CA (X509-SVID §6.1)");
		goto out;
	}
	EVP_PKEY *pk = X509_get0_pubkey(x);
	if (pk == NULL) {
		rc = ly_error_openssl(err, LY_E_UNSUPPORTED, "certificate: unreadable public key");
		goto out;
	}
	rc = ly_jwk_check_pkey(pk, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "certificate");
		goto out;
	}
	if (out != NULL) {
		*out = x;
		x = NULL;
	}
out:
	X509_free(x);
	ERR_clear_error();
	return rc;
}

static ssize_t
find_x509(const struct ly_bundle *b, const uint8_t *der, size_t len)
{
	for (size_t i = 0; i < b->nx509; i++)
		if (b->x509[i].len == len && memcmp(b->x509[i].data, der, len) == 0)
			return (ssize_t)i;
	return -1;
}

/* Appends a checked certificate unless already present. */
static ly_status
add_x509_checked(struct ly_bundle *b, const uint8_t *der, size_t len, struct ly_error *err)
{
	if (find_x509(b, der, len) >= 0)
		return LY_OK;
	if (b->nx509 >= LY_BUNDLE_CERTS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "more than %d X.509 authorities", LY_BUNDLE_CERTS_MAX);
	LY_TRY(grow(&b->x509, &b->capx509, b->nx509 + 1, sizeof(*b->x509), err));
	LY_TRY(ly_buf_set(&b->x509[b->nx509], der, len, err));
	b->nx509++;
	return LY_OK;
}

ly_status
ly_bundle_add_x509_authority(struct ly_bundle *b, const uint8_t *der, size_t len, struct ly_error *err)
{
	ly_status rc = check_ca_der(der, len, NULL, err);
	if (rc == LY_OK)
		rc = add_x509_checked(b, der, len, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "bundle %s: X.509 authority", b->td);
	return LY_OK;
}

ly_status
ly_bundle_remove_x509_authority(struct ly_bundle *b, const uint8_t *der, size_t len, struct ly_error *err)
{
	ssize_t i = find_x509(b, der, len);
	if (i < 0)
		return ly_error_set(err, LY_E_NOT_FOUND, "bundle %s: no such X.509 authority", b->td);
	ly_buf_free(&b->x509[i]);
	memmove(&b->x509[i], &b->x509[i + 1], (b->nx509 - (size_t)i - 1) * sizeof(*b->x509));
	b->nx509--;
	return LY_OK;
}

size_t
ly_bundle_x509_authority_count(const struct ly_bundle *b)
{
	return b->nx509;
}

const struct ly_buf *
ly_bundle_x509_authority(const struct ly_bundle *b, size_t i)
{
	return i < b->nx509 ? &b->x509[i] : NULL;
}

ly_status
ly_bundle_x509_authorities_der(const struct ly_bundle *b, struct ly_buf *out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_buf all = LY_BUF_INIT;

	rc = ly_buf_set(&all, NULL, 0, err);
	for (size_t i = 0; rc == LY_OK && i < b->nx509; i++)
		rc = ly_buf_append(&all, b->x509[i].data, b->x509[i].len, LY_BUNDLE_DER_MAX, err);
	if (rc != LY_OK) {
		ly_buf_free(&all);
		return rc;
	}
	ly_buf_take(out, &all);
	return LY_OK;
}

static ssize_t
find_jwt(const struct ly_bundle *b, const char *kid)
{
	for (size_t i = 0; i < b->njwt; i++)
		if (strcmp(b->jwt[i].kid, kid) == 0)
			return (ssize_t)i;
	return -1;
}

/* Adds (kid, key), taking `*key` (public only, already checked) on success. */
static ly_status
add_jwt_take(struct ly_bundle *b, const char *kid, size_t kid_len, EVP_PKEY **key, struct ly_error *err)
{
	LY_TRY(ly_jwk_kid_check(kid, kid_len, err));
	if (find_jwt(b, kid) >= 0)
		return ly_error_set(err, LY_E_INVALID, "duplicate kid '%s'", kid);
	if (b->njwt >= JWT_AUTHORITIES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "more than %d JWT authorities", JWT_AUTHORITIES_MAX);
	LY_TRY(grow(&b->jwt, &b->capjwt, b->njwt + 1, sizeof(*b->jwt), err));
	char *copy = strndup(kid, kid_len);
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle: copying a kid");
	b->jwt[b->njwt].kid = copy;
	b->jwt[b->njwt].key = *key;
	*key = NULL;
	b->njwt++;
	return LY_OK;
}

/* A public-only copy of `key` (a private key is never kept in a bundle). */
static ly_status
public_copy(const EVP_PKEY *key, EVP_PKEY **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	unsigned char *der = NULL;

	*out = NULL;
	int len = i2d_PUBKEY(key, &der);
	if (len <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "bundle: encoding a public key");
		goto out;
	}
	const unsigned char *p = der;
	*out = d2i_PUBKEY(NULL, &p, len);
	if (*out == NULL)
		rc = ly_error_openssl(err, LY_E_CRYPTO, "bundle: decoding a public key");
out:
	OPENSSL_free(der);
	return rc;
}

ly_status
ly_bundle_add_jwt_authority(struct ly_bundle *b, const char *kid, const EVP_PKEY *key, struct ly_error *err)
{
	ly_status rc = LY_OK;
	EVP_PKEY *pub = NULL;

	if (kid == NULL)
		return ly_error_set(err, LY_E_INVALID, "bundle %s: JWT authority without a kid", b->td);
	rc = ly_jwk_kid_check(kid, strlen(kid), err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "bundle %s: JWT authority", b->td);
	rc = ly_jwk_check_pkey(key, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "bundle %s: JWT authority '%s'", b->td, kid);
	rc = public_copy(key, &pub, err);
	if (rc == LY_OK)
		rc = add_jwt_take(b, kid, strlen(kid), &pub, err);
	EVP_PKEY_free(pub);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "bundle %s: JWT authority", b->td);
	return LY_OK;
}

ly_status
ly_bundle_remove_jwt_authority(struct ly_bundle *b, const char *kid, struct ly_error *err)
{
	ssize_t i = kid != NULL ? find_jwt(b, kid) : -1;
	if (i < 0)
		return ly_error_set(err, LY_E_NOT_FOUND, "bundle %s: no JWT authority with that kid", b->td);
	free(b->jwt[i].kid);
	EVP_PKEY_free(b->jwt[i].key);
	memmove(&b->jwt[i], &b->jwt[i + 1], (b->njwt - (size_t)i - 1) * sizeof(*b->jwt));
	b->njwt--;
	return LY_OK;
}

EVP_PKEY *
ly_bundle_find_jwt_authority(const struct ly_bundle *b, const char *kid)
{
	ssize_t i = find_jwt(b, kid);
	return i >= 0 ? b->jwt[i].key : NULL;
}

size_t
ly_bundle_jwt_authority_count(const struct ly_bundle *b)
{
	return b->njwt;
}

const char *
ly_bundle_jwt_authority_kid(const struct ly_bundle *b, size_t i)
{
	return i < b->njwt ? b->jwt[i].kid : NULL;
}

EVP_PKEY *
ly_bundle_jwt_authority_key(const struct ly_bundle *b, size_t i)
{
	return i < b->njwt ? b->jwt[i].key : NULL;
}

/* ---- SPIFFE bundle (JWKS) ---- */

static bool
str_is(const json_t *v, const char *s)
{
	size_t n = strlen(s);
	return json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

/* Reads an optional non-negative integer member. */
static ly_status
get_uint(const json_t *root, const char *name, uint64_t *out, struct ly_error *err)
{
	const json_t *v = json_object_get(root, name);
	*out = 0;
	if (v == NULL)
		return LY_OK;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return ly_error_set(err, LY_E_INVALID, "bundle: '%s' must be a non-negative integer", name);
	*out = (uint64_t)json_integer_value(v);
	return LY_OK;
}

/* One `use: x509-svid` element (X509-SVID §6.1). */
static ly_status
parse_x509_svid_key(struct ly_bundle *b, const json_t *jwk, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_buf der = LY_BUF_INIT;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;

	if (json_object_get(jwk, "kid") != NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "x509-svid key must not have a kid (X509-SVID §6.1)");
		goto out;
	}
	const json_t *x5c = json_object_get(jwk, "x5c");
	if (x5c == NULL || !json_is_array(x5c) || json_array_size(x5c) != 1) {
		rc = ly_error_set(err, LY_E_INVALID, "x509-svid key must have exactly one x5c entry (has %zu)",
		    json_is_array(x5c) ? json_array_size(x5c) : 0);
		goto out;
	}
	const json_t *s = json_array_get(x5c, 0);
	if (!json_is_string(s)) {
		rc = ly_error_set(err, LY_E_INVALID, "x5c[0] is not a string");
		goto out;
	}
	if (json_string_length(s) > ly_b64_encoded_len(LY_CERT_DER_MAX)) {
		rc = ly_error_set(err, LY_E_LIMIT, "x5c[0] longer than %d bytes of DER", LY_CERT_DER_MAX);
		goto out;
	}
	rc = ly_b64_decode(json_string_value(s), json_string_length(s), &der, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "x5c[0]");
		goto out;
	}
	rc = check_ca_der(der.data, der.len, &cert, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "x5c[0]");
		goto out;
	}
	rc = ly_jwk_to_pkey(jwk, &key, err);
	if (rc != LY_OK)
		goto out;
	if (EVP_PKEY_eq(key, X509_get0_pubkey(cert)) != 1) {
		ERR_clear_error();
		rc = ly_error_set(err, LY_E_INVALID, "x5c certificate's key does not match the JWK parameters");
		goto out;
	}
	rc = add_x509_checked(b, der.data, der.len, err);
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	ly_buf_free(&der);
	return rc;
}

/* One `use: jwt-svid` element (JWT-SVID §6.1). */
static ly_status
parse_jwt_svid_key(struct ly_bundle *b, const json_t *jwk, struct ly_error *err)
{
	ly_status rc = LY_OK;
	EVP_PKEY *key = NULL;

	const json_t *kid = json_object_get(jwk, "kid");
	if (kid == NULL || !json_is_string(kid)) {
		rc = ly_error_set(err, LY_E_INVALID, "jwt-svid key must have a string kid (JWT-SVID §6.1)");
		goto out;
	}
	rc = ly_jwk_kid_check(json_string_value(kid), json_string_length(kid), err);
	if (rc != LY_OK)
		goto out;
	rc = ly_jwk_to_pkey(jwk, &key, err);
	if (rc != LY_OK)
		goto out;
	rc = add_jwt_take(b, json_string_value(kid), json_string_length(kid), &key, err);
out:
	EVP_PKEY_free(key);
	return rc;
}

/* One element of `keys`; unknown uses and key types are skipped (standard §4.1.3). */
static ly_status
parse_key(struct ly_bundle *b, const json_t *jwk, struct ly_error *err)
{
	if (!json_is_object(jwk))
		return ly_error_set(err, LY_E_INVALID, "not a JSON object");
	const json_t *use = json_object_get(jwk, "use");
	if (use == NULL || !json_is_string(use))
		return ly_error_set(err, LY_E_INVALID, "'use' missing or not a string (standard §4.2.2)");
	const json_t *kty = json_object_get(jwk, "kty");
	if (kty == NULL || !json_is_string(kty))
		return ly_error_set(err, LY_E_INVALID, "'kty' missing or not a string (standard §4.2.1)");
	if (!str_is(kty, "EC") && !str_is(kty, "RSA") && !str_is(kty, "oct"))
		return LY_OK; /* §4.2.1: unknown key type, ignored */
	if (str_is(use, "x509-svid"))
		return parse_x509_svid_key(b, jwk, err);
	if (str_is(use, "jwt-svid"))
		return parse_jwt_svid_key(b, jwk, err);
	return LY_OK; /* §4.2.2: unknown use, ignored */
}

ly_status
ly_bundle_parse_jwks(const char *td, const char *json, size_t len, struct ly_bundle **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *root = NULL;
	struct ly_bundle *b = NULL;
	uint64_t seq = 0;
	uint64_t hint = 0;

	*out = NULL;
	rc = ly_bundle_new(td, &b, err);
	if (rc != LY_OK)
		goto out;
	rc = ly_json_parse_strict("json", json, len, LY_JWKS_MAX, LY_JSON_DEPTH_MAX, &root, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "bundle %s", td);
		goto out;
	}
	if (!json_is_object(root)) {
		rc = ly_error_set(err, LY_E_INVALID, "bundle %s: not a JSON object", td);
		goto out;
	}
	const json_t *keys = json_object_get(root, "keys");
	if (keys == NULL || !json_is_array(keys)) {
		rc = ly_error_set(err, LY_E_INVALID, "bundle %s: 'keys' missing or not an array (standard §4.1.3)", td);
		goto out;
	}
	if (json_array_size(keys) > LY_JWKS_KEYS_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "bundle %s: %zu keys, at most %d accepted", td,
		    json_array_size(keys), LY_JWKS_KEYS_MAX);
		goto out;
	}
	rc = get_uint(root, "spiffe_sequence", &seq, err);
	if (rc == LY_OK)
		rc = get_uint(root, "spiffe_refresh_hint", &hint, err);
	if (rc != LY_OK)
		goto out;
	b->sequence = seq;
	b->refresh_hint = hint;
	for (size_t i = 0; i < json_array_size(keys); i++) {
		rc = parse_key(b, json_array_get(keys, i), err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "bundle %s: keys[%zu]", td, i);
			goto out;
		}
	}
	*out = b;
	b = NULL;
out:
	json_decref(root);
	ly_bundle_free(b);
	return rc;
}

/* Appends the JWK of an X.509 authority to `arr`. */
static ly_status
write_x509_key(const struct ly_buf *der, json_t *arr, struct ly_error *err)
{
	ly_status rc = LY_OK;
	X509 *cert = NULL;
	json_t *jwk = NULL;
	char *b64 = NULL;

	rc = check_ca_der(der->data, der->len, &cert, err);
	if (rc == LY_OK)
		rc = ly_jwk_from_pkey(X509_get0_pubkey(cert), &jwk, err);
	if (rc == LY_OK)
		rc = ly_b64_encode(der->data, der->len, &b64, err);
	if (rc != LY_OK)
		goto out;
	json_t *x5c = json_array();
	if (x5c == NULL || json_array_append_new(x5c, json_string(b64)) != 0 ||
	    json_object_set_new(jwk, "x5c", x5c) != 0 ||
	    json_object_set_new(jwk, "use", json_string("x509-svid")) != 0 ||
	    json_array_append(arr, jwk) != 0) {
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: building an x509-svid key");
		goto out;
	}
out:
	free(b64);
	json_decref(jwk);
	X509_free(cert);
	return rc;
}

static ly_status
write_jwt_key(const struct jwt_authority *a, json_t *arr, struct ly_error *err)
{
	json_t *jwk = NULL;
	LY_TRY(ly_jwk_from_pkey(a->key, &jwk, err));
	ly_status rc = LY_OK;
	if (json_object_set_new(jwk, "use", json_string("jwt-svid")) != 0 ||
	    json_object_set_new(jwk, "kid", json_string(a->kid)) != 0 || json_array_append(arr, jwk) != 0)
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: building a jwt-svid key");
	json_decref(jwk);
	return rc;
}

ly_status
ly_bundle_write_jwks(const struct ly_bundle *b, unsigned flags, char **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *root = json_object();
	json_t *keys = json_array();

	*out = NULL;
	if (root == NULL || keys == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: building JSON");
		goto out;
	}
	if (!(flags & LY_JWKS_JWT_ONLY)) {
		if (json_object_set_new(root, "spiffe_sequence", json_integer((json_int_t)b->sequence)) != 0 ||
		    json_object_set_new(root, "spiffe_refresh_hint", json_integer((json_int_t)b->refresh_hint)) != 0) {
			rc = ly_error_set(err, LY_E_NOMEM, "bundle: building JSON");
			goto out;
		}
		for (size_t i = 0; i < b->nx509; i++) {
			rc = write_x509_key(&b->x509[i], keys, err);
			if (rc != LY_OK) {
				rc = ly_error_wrap(err, rc, "bundle %s: X.509 authority %zu", b->td, i);
				goto out;
			}
		}
	}
	for (size_t i = 0; i < b->njwt; i++) {
		rc = write_jwt_key(&b->jwt[i], keys, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "bundle %s: JWT authority '%s'", b->td, b->jwt[i].kid);
			goto out;
		}
	}
	if (json_object_set(root, "keys", keys) != 0) {
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: building JSON");
		goto out;
	}
	size_t jflags = JSON_PRESERVE_ORDER | ((flags & LY_JWKS_PRETTY) ? JSON_INDENT(4) : JSON_COMPACT);
	*out = json_dumps(root, jflags);
	if (*out == NULL)
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: serializing JSON");
out:
	json_decref(keys);
	json_decref(root);
	return rc;
}

/* ---- PEM ---- */

static const char pem_begin[] = "-----BEGIN ";
static const char pem_end[] = "-----END ";
static const char pem_dashes[] = "-----";
static const char pem_label[] = "CERTIFICATE";

static bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool
has_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && memcmp(s, prefix, n) == 0;
}

/*
 * Reads a "-----BEGIN <label>-----" or "-----END <label>-----" line at
 * pem[*pos] (`marker` is the prefix), requires the label to be CERTIFICATE,
 * and moves *pos past it.
 */
static ly_status
pem_marker(const char *pem, size_t len, size_t *pos, const char *marker, struct ly_error *err)
{
	size_t p = *pos + strlen(marker);
	size_t start = p;
	while (p < len && pem[p] != '-' && pem[p] != '\n' && p - start <= 64)
		p++;
	if (!has_prefix(pem + p, len - p, pem_dashes))
		return ly_error_set(err, LY_E_INVALID, "pem: malformed '%s' line at offset %zu", marker, *pos);
	size_t label_len = p - start;
	if (label_len != strlen(pem_label) || memcmp(pem + start, pem_label, label_len) != 0) {
		char shown[65];
		size_t n = label_len < 64 ? label_len : 64;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)pem[start + i];
			shown[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
		}
		shown[n] = '\0';
		return ly_error_set(err, LY_E_INVALID, "pem: block '%s' is not a CERTIFICATE", shown);
	}
	*pos = p + strlen(pem_dashes);
	return LY_OK;
}

/* Adds every certificate of `pem` to `b`, or none. */
static ly_status
add_pem(struct ly_bundle *b, const char *pem, size_t len, struct ly_error *err)
{
	ly_status rc = LY_OK;
	char *body = NULL;
	struct ly_buf der = LY_BUF_INIT;
	size_t count = 0;
	size_t nx509_before = b->nx509;

	if (len > LY_PEM_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "pem: %zu bytes, at most %d accepted", len, LY_PEM_FILE_MAX);
	body = malloc(len + 1);
	if (body == NULL)
		return ly_error_set(err, LY_E_NOMEM, "pem: allocating %zu bytes", len + 1);

	size_t pos = 0;
	for (;;) {
		while (pos < len && is_space(pem[pos]))
			pos++;
		if (pos == len)
			break;
		if (!has_prefix(pem + pos, len - pos, pem_begin)) {
			rc = ly_error_set(err, LY_E_INVALID, "pem: text outside a CERTIFICATE block at offset %zu", pos);
			goto out;
		}
		rc = pem_marker(pem, len, &pos, pem_begin, err);
		if (rc != LY_OK)
			goto out;
		/* The body: base64 lines up to the END marker; whitespace dropped. */
		size_t blen = 0;
		while (pos < len && !has_prefix(pem + pos, len - pos, pem_end)) {
			if (!is_space(pem[pos]))
				body[blen++] = pem[pos];
			pos++;
		}
		if (pos == len) {
			rc = ly_error_set(err, LY_E_INVALID, "pem: certificate %zu has no END line", count + 1);
			goto out;
		}
		rc = pem_marker(pem, len, &pos, pem_end, err);
		if (rc != LY_OK)
			goto out;
		if (++count > LY_BUNDLE_CERTS_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "pem: more than %d certificates", LY_BUNDLE_CERTS_MAX);
			goto out;
		}
		if (blen > ly_b64_encoded_len(LY_CERT_DER_MAX)) {
			rc = ly_error_set(err, LY_E_LIMIT, "pem: certificate %zu over %d bytes", count, LY_CERT_DER_MAX);
			goto out;
		}
		rc = ly_b64_decode(body, blen, &der, err);
		if (rc == LY_OK)
			rc = check_ca_der(der.data, der.len, NULL, err);
		if (rc == LY_OK)
			rc = add_x509_checked(b, der.data, der.len, err);
		ly_buf_free(&der);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "pem: certificate %zu", count);
			goto out;
		}
	}
	if (count == 0)
		rc = ly_error_set(err, LY_E_INVALID, "pem: no CERTIFICATE block");
out:
	if (rc != LY_OK) {
		/* All or none: drop what this call added. */
		while (b->nx509 > nx509_before)
			ly_buf_free(&b->x509[--b->nx509]);
	}
	free(body);
	return rc;
}

ly_status
ly_bundle_add_pem(struct ly_bundle *b, const char *pem, size_t len, struct ly_error *err)
{
	return add_pem(b, pem, len, err);
}

ly_status
ly_bundle_parse_pem(const char *td, const char *pem, size_t len, struct ly_bundle **out, struct ly_error *err)
{
	struct ly_bundle *b = NULL;

	*out = NULL;
	LY_TRY(ly_bundle_new(td, &b, err));
	ly_status rc = add_pem(b, pem, len, err);
	if (rc != LY_OK) {
		ly_bundle_free(b);
		return rc;
	}
	*out = b;
	return LY_OK;
}

ly_status
ly_bundle_write_pem(const struct ly_bundle *b, char **out, struct ly_error *err)
{
	static const char head[] = "-----BEGIN CERTIFICATE-----\n";
	static const char tail[] = "-----END CERTIFICATE-----\n";
	ly_status rc = LY_OK;
	struct ly_buf pem = LY_BUF_INIT;
	char *b64 = NULL;

	*out = NULL;
	rc = ly_buf_set(&pem, NULL, 0, err);
	for (size_t i = 0; rc == LY_OK && i < b->nx509; i++) {
		rc = ly_b64_encode(b->x509[i].data, b->x509[i].len, &b64, err);
		if (rc != LY_OK)
			break;
		rc = ly_buf_append(&pem, head, sizeof(head) - 1, LY_PEM_FILE_MAX, err);
		size_t n = strlen(b64);
		for (size_t off = 0; rc == LY_OK && off < n; off += 64) {
			size_t line = n - off < 64 ? n - off : 64;
			rc = ly_buf_append(&pem, b64 + off, line, LY_PEM_FILE_MAX, err);
			if (rc == LY_OK)
				rc = ly_buf_append(&pem, "\n", 1, LY_PEM_FILE_MAX, err);
		}
		if (rc == LY_OK)
			rc = ly_buf_append(&pem, tail, sizeof(tail) - 1, LY_PEM_FILE_MAX, err);
		free(b64);
		b64 = NULL;
	}
	if (rc == LY_OK)
		rc = ly_buf_append(&pem, "", 1, LY_PEM_FILE_MAX + 1, err);
	if (rc != LY_OK) {
		ly_buf_free(&pem);
		return rc;
	}
	*out = (char *)pem.data;
	return LY_OK;
}

/* ---- sets ---- */

ly_status
ly_bundle_set_new(struct ly_bundle_set **out, struct ly_error *err)
{
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle set: allocating");
	return LY_OK;
}

void
ly_bundle_set_free(struct ly_bundle_set *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->n; i++)
		ly_bundle_free(set->v[i]);
	free(set->v);
	free(set);
}

static ssize_t
set_index(const struct ly_bundle_set *set, const char *td)
{
	for (size_t i = 0; i < set->n; i++)
		if (strcmp(set->v[i]->td, td) == 0)
			return (ssize_t)i;
	return -1;
}

ly_status
ly_bundle_set_put(struct ly_bundle_set *set, struct ly_bundle *b, struct ly_error *err)
{
	ssize_t i = set_index(set, b->td);
	if (i >= 0) {
		if (set->v[i] != b)
			ly_bundle_free(set->v[i]);
		set->v[i] = b;
		return LY_OK;
	}
	if (set->n >= LY_BUNDLE_SET_MAX)
		return ly_error_set(err, LY_E_LIMIT, "bundle set: more than %d trust domains", LY_BUNDLE_SET_MAX);
	LY_TRY(grow(&set->v, &set->cap, set->n + 1, sizeof(*set->v), err));
	set->v[set->n++] = b;
	return LY_OK;
}

const struct ly_bundle *
ly_bundle_set_find(const struct ly_bundle_set *set, const char *td)
{
	ssize_t i = td != NULL ? set_index(set, td) : -1;
	return i >= 0 ? set->v[i] : NULL;
}

ly_status
ly_bundle_set_remove(struct ly_bundle_set *set, const char *td, struct ly_error *err)
{
	ssize_t i = td != NULL ? set_index(set, td) : -1;
	if (i < 0)
		return ly_error_set(err, LY_E_NOT_FOUND, "bundle set: no bundle for trust domain");
	ly_bundle_free(set->v[i]);
	memmove(&set->v[i], &set->v[i + 1], (set->n - (size_t)i - 1) * sizeof(*set->v));
	set->n--;
	return LY_OK;
}

size_t
ly_bundle_set_count(const struct ly_bundle_set *set)
{
	return set->n;
}

const struct ly_bundle *
ly_bundle_set_at(const struct ly_bundle_set *set, size_t i)
{
	return i < set->n ? set->v[i] : NULL;
}
