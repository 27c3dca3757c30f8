/*
 * test_bundle.c: trust bundles: authorities, the SPIFFE bundle (JWKS)
 * format both ways and each of its refusals, PEM both ways, bundle sets.
 * Certificates and keys are made at test time.
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
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/b64.h"
#include "lib/bundle.h"
#include "lib/jwk.h"

static EVP_PKEY *rsa2048;
static EVP_PKEY *ec256;     /* CA A */
static EVP_PKEY *ec384;     /* CA B, and a JWT key */
static struct ly_buf ca_a;  /* EC P-256 CA */
static struct ly_buf ca_b;  /* EC P-384 CA */
static struct ly_buf ca_rsa;
static struct ly_buf leaf;  /* not a CA */

static void
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A self-signed certificate for `td` with `key`, a CA when `ca`, as DER. */
static struct ly_buf
make_cert(EVP_PKEY *key, const char *td, int ca, long serial)
{
	X509 *x = X509_new();
	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)td, -1, -1, 0);
	assert_int_equal(X509_set_issuer_name(x, name), 1);
	assert_int_equal(X509_set_pubkey(x, key), 1);
	add_ext(x, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	add_ext(x, NID_key_usage, ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	char uri[300];
	snprintf(uri, sizeof(uri), "URI:spiffe://%s%s", td, ca ? "" : "/w");
	add_ext(x, NID_subject_alt_name, uri);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	assert_true(len > 0);
	struct ly_buf b = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&b, der, (size_t)len, NULL), LY_OK);
	OPENSSL_free(der);
	X509_free(x);
	return b;
}

static int
setup(void **state)
{
	rsa2048 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	ec256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	if (rsa2048 == NULL || ec256 == NULL || ec384 == NULL)
		return -1;
	ca_a = make_cert(ec256, "example.org", 1, 1);
	ca_b = make_cert(ec384, "example.org", 1, 2);
	ca_rsa = make_cert(rsa2048, "example.org", 1, 3);
	leaf = make_cert(ec256, "example.org", 0, 4);
	return 0;
}

static int
teardown(void **state)
{
	ly_buf_free(&ca_a);
	ly_buf_free(&ca_b);
	ly_buf_free(&ca_rsa);
	ly_buf_free(&leaf);
	EVP_PKEY_free(rsa2048);
	EVP_PKEY_free(ec256);
	EVP_PKEY_free(ec384);
	return 0;
}

static struct ly_bundle *
new_bundle(void)
{
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_new("example.org", &b, NULL), LY_OK);
	return b;
}

#define EXPECT(expr, code, want)                                                               \
	do {                                                                                   \
		struct ly_error e_;                                                            \
		e_.msg[0] = '\0';                                                              \
		ly_status rc_ = (expr);                                                        \
		if (rc_ != (code) || strstr(e_.msg, (want)) == NULL)                           \
			fail_msg("%s: expected %d '%s', got %d '%s'", #expr, (code), (want), rc_, \
			    e_.msg);                                                           \
	} while (0)

/* ---- authorities ---- */

static void
test_new_refuses_bad_trust_domain(void **state)
{
	struct ly_bundle *b = NULL;
	struct ly_error err;
	assert_int_not_equal(ly_bundle_new("Example.org", &b, &err), LY_OK);
	assert_null(b);
	assert_int_not_equal(ly_bundle_new("", &b, &err), LY_OK);
	assert_int_not_equal(ly_bundle_new("spiffe://example.org", &b, &err), LY_OK);
	b = new_bundle();
	assert_string_equal(ly_bundle_trust_domain(b), "example.org");
	assert_int_equal(ly_bundle_sequence(b), 0);
	ly_bundle_free(b);
}

static void
test_x509_authorities(void **state)
{
	struct ly_bundle *b = new_bundle();
	assert_int_equal(ly_bundle_add_x509_authority(b, ca_a.data, ca_a.len, NULL), LY_OK);
	/* The same certificate again is a no-op. */
	assert_int_equal(ly_bundle_add_x509_authority(b, ca_a.data, ca_a.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, ca_b.data, ca_b.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(b), 2);
	assert_memory_equal(ly_bundle_x509_authority(b, 1)->data, ca_b.data, ca_b.len);
	assert_null(ly_bundle_x509_authority(b, 2));

	/* Concatenated DER, in order: the Workload API `bundle` field. */
	struct ly_buf all = LY_BUF_INIT;
	assert_int_equal(ly_bundle_x509_authorities_der(b, &all, NULL), LY_OK);
	assert_int_equal(all.len, ca_a.len + ca_b.len);
	assert_memory_equal(all.data, ca_a.data, ca_a.len);
	assert_memory_equal(all.data + ca_a.len, ca_b.data, ca_b.len);
	ly_buf_free(&all);

	/* Refusals: not a CA, trailing bytes, not DER, empty. */
	EXPECT(ly_bundle_add_x509_authority(b, leaf.data, leaf.len, &e_), LY_E_INVALID, "not a CA");
	uint8_t *longer = malloc(ca_a.len + 1);
	memcpy(longer, ca_a.data, ca_a.len);
	longer[ca_a.len] = 0;
	EXPECT(ly_bundle_add_x509_authority(b, longer, ca_a.len + 1, &e_), LY_E_INVALID, "trailing");
	free(longer);
	EXPECT(ly_bundle_add_x509_authority(b, ca_a.data, ca_a.len - 1, &e_), LY_E_INVALID, "not DER");
	EXPECT(ly_bundle_add_x509_authority(b, ca_a.data, 0, &e_), LY_E_INVALID, "empty");
	assert_int_equal(ly_bundle_x509_authority_count(b), 2);

	assert_int_equal(ly_bundle_remove_x509_authority(b, ca_a.data, ca_a.len, NULL), LY_OK);
	EXPECT(ly_bundle_remove_x509_authority(b, ca_a.data, ca_a.len, &e_), LY_E_NOT_FOUND, "no such");
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	ly_bundle_free(b);
}

static void
test_jwt_authorities(void **state)
{
	struct ly_bundle *b = new_bundle();
	assert_int_equal(ly_bundle_add_jwt_authority(b, "k1", ec256, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "k2", rsa2048, NULL), LY_OK);
	EXPECT(ly_bundle_add_jwt_authority(b, "k1", ec384, &e_), LY_E_INVALID, "duplicate kid 'k1'");
	EXPECT(ly_bundle_add_jwt_authority(b, "", ec384, &e_), LY_E_INVALID, "kid is empty");
	EXPECT(ly_bundle_add_jwt_authority(b, "a b", ec384, &e_), LY_E_INVALID, "printable");
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	EXPECT(ly_bundle_add_jwt_authority(b, "k3", small, &e_), LY_E_UNSUPPORTED, "at least 2048");
	EVP_PKEY_free(small);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 2);

	EVP_PKEY *k = ly_bundle_find_jwt_authority(b, "k1");
	assert_non_null(k);
	assert_int_equal(EVP_PKEY_eq(k, ec256), 1);
	/* The bundle keeps the public key only. */
	BIGNUM *d = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &d), 0);
	assert_null(ly_bundle_find_jwt_authority(b, "K1"));
	assert_null(ly_bundle_find_jwt_authority(b, "k"));
	assert_string_equal(ly_bundle_jwt_authority_kid(b, 1), "k2");

	assert_int_equal(ly_bundle_remove_jwt_authority(b, "k1", NULL), LY_OK);
	EXPECT(ly_bundle_remove_jwt_authority(b, "k1", &e_), LY_E_NOT_FOUND, "no JWT authority");
	assert_null(ly_bundle_find_jwt_authority(b, "k1"));
	assert_non_null(ly_bundle_find_jwt_authority(b, "k2"));
	ly_bundle_free(b);
}

static void
test_sequence_limits(void **state)
{
	struct ly_bundle *b = new_bundle();
	assert_int_equal(ly_bundle_update_sequence(b, INT64_MAX, NULL), LY_OK);
	EXPECT(ly_bundle_update_sequence(b, (uint64_t)INT64_MAX + 1, &e_), LY_E_LIMIT, "spiffe_sequence");
	EXPECT(ly_bundle_update_refresh_hint(b, UINT64_MAX, &e_), LY_E_LIMIT, "spiffe_refresh_hint");
	assert_int_equal(ly_bundle_sequence(b), INT64_MAX);
	ly_bundle_free(b);
}

/* A bundle with both kinds of authorities. */
static struct ly_bundle *
full_bundle(void)
{
	struct ly_bundle *b = new_bundle();
	assert_int_equal(ly_bundle_add_x509_authority(b, ca_a.data, ca_a.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, ca_rsa.data, ca_rsa.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "jwt-ec", ec384, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "jwt-rsa", rsa2048, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, 42, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_refresh_hint(b, 300, NULL), LY_OK);
	return b;
}

static void
test_clone_and_equal(void **state)
{
	struct ly_bundle *a = full_bundle();
	struct ly_bundle *c = NULL;
	assert_int_equal(ly_bundle_clone(a, &c, NULL), LY_OK);
	assert_true(ly_bundle_equal(a, c));
	assert_int_equal(ly_bundle_update_sequence(c, 43, NULL), LY_OK);
	assert_false(ly_bundle_equal(a, c));
	assert_int_equal(ly_bundle_update_sequence(c, 42, NULL), LY_OK);
	assert_int_equal(ly_bundle_remove_jwt_authority(c, "jwt-ec", NULL), LY_OK);
	assert_false(ly_bundle_equal(a, c));
	ly_bundle_free(c);
	ly_bundle_free(a);
}

/* ---- JWKS ---- */

static void
test_jwks_round_trip(void **state)
{
	struct ly_bundle *b = full_bundle();
	char *doc = NULL;
	assert_int_equal(ly_bundle_write_jwks(b, 0, &doc, NULL), LY_OK);

	/* The document says what the standard asks for. */
	json_t *root = json_loads(doc, 0, NULL);
	assert_non_null(root);
	assert_int_equal(json_integer_value(json_object_get(root, "spiffe_sequence")), 42);
	assert_int_equal(json_integer_value(json_object_get(root, "spiffe_refresh_hint")), 300);
	json_t *keys = json_object_get(root, "keys");
	assert_int_equal(json_array_size(keys), 4);
	json_t *k0 = json_array_get(keys, 0);
	assert_string_equal(json_string_value(json_object_get(k0, "use")), "x509-svid");
	assert_string_equal(json_string_value(json_object_get(k0, "kty")), "EC");
	assert_string_equal(json_string_value(json_object_get(k0, "crv")), "P-256");
	assert_null(json_object_get(k0, "kid"));
	assert_int_equal(json_array_size(json_object_get(k0, "x5c")), 1);
	json_t *k1 = json_array_get(keys, 1);
	assert_string_equal(json_string_value(json_object_get(k1, "kty")), "RSA");
	assert_non_null(json_object_get(k1, "n"));
	json_t *k2 = json_array_get(keys, 2);
	assert_string_equal(json_string_value(json_object_get(k2, "use")), "jwt-svid");
	assert_string_equal(json_string_value(json_object_get(k2, "kid")), "jwt-ec");
	assert_string_equal(json_string_value(json_object_get(k2, "crv")), "P-384");
	assert_null(json_object_get(k2, "d"));
	json_decref(root);

	struct ly_bundle *back = NULL;
	assert_int_equal(ly_bundle_parse_jwks("example.org", doc, strlen(doc), &back, NULL), LY_OK);
	assert_true(ly_bundle_equal(b, back));
	ly_bundle_free(back);
	free(doc);

	/* Pretty output parses to the same bundle. */
	assert_int_equal(ly_bundle_write_jwks(b, LY_JWKS_PRETTY, &doc, NULL), LY_OK);
	assert_non_null(strchr(doc, '\n'));
	assert_int_equal(ly_bundle_parse_jwks("example.org", doc, strlen(doc), &back, NULL), LY_OK);
	assert_true(ly_bundle_equal(b, back));
	ly_bundle_free(back);
	free(doc);

	/* The Workload API's JWT bundle: jwt-svid keys only, no spiffe_* members. */
	assert_int_equal(ly_bundle_write_jwks(b, LY_JWKS_JWT_ONLY, &doc, NULL), LY_OK);
	root = json_loads(doc, 0, NULL);
	assert_null(json_object_get(root, "spiffe_sequence"));
	assert_int_equal(json_array_size(json_object_get(root, "keys")), 2);
	json_decref(root);
	assert_int_equal(ly_bundle_parse_jwks("example.org", doc, strlen(doc), &back, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(back), 0);
	assert_int_equal(ly_bundle_jwt_authority_count(back), 2);
	ly_bundle_free(back);
	free(doc);
	ly_bundle_free(b);
}

/* A JWK entry for `use: x509-svid`: the params of `key`, x5c = [`der`]. */
static json_t *
x509_entry(const struct ly_buf *der, EVP_PKEY *key)
{
	json_t *j = NULL;
	assert_int_equal(ly_jwk_from_pkey(key, &j, NULL), LY_OK);
	char *s = NULL;
	assert_int_equal(ly_b64_encode(der->data, der->len, &s, NULL), LY_OK);
	json_object_set_new(j, "use", json_string("x509-svid"));
	json_object_set_new(j, "x5c", json_pack("[s]", s));
	free(s);
	return j;
}

static json_t *
jwt_entry(EVP_PKEY *key, const char *kid)
{
	json_t *j = NULL;
	assert_int_equal(ly_jwk_from_pkey(key, &j, NULL), LY_OK);
	json_object_set_new(j, "use", json_string("jwt-svid"));
	if (kid != NULL)
		json_object_set_new(j, "kid", json_string(kid));
	return j;
}

/* {"keys": [entries...]} from a NULL-terminated list (each reference taken). */
static json_t *
doc_of(json_t *first, ...)
{
	json_t *root = json_object();
	json_t *keys = json_array();
	va_list ap;
	va_start(ap, first);
	for (json_t *e = first; e != NULL; e = va_arg(ap, json_t *))
		json_array_append_new(keys, e);
	va_end(ap);
	json_object_set_new(root, "keys", keys);
	return root;
}

/* Parses `root` (released), returning the status; `*out` freed unless wanted. */
static ly_status
parse_doc(json_t *root, struct ly_bundle **out, struct ly_error *err)
{
	char *s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	struct ly_bundle *b = NULL;
	ly_status rc = ly_bundle_parse_jwks("example.org", s, strlen(s), &b, err);
	free(s);
	if (rc != LY_OK)
		assert_null(b);
	if (out != NULL)
		*out = b;
	else
		ly_bundle_free(b);
	return rc;
}

static void
test_jwks_x509_svid_rules(void **state)
{
	json_t *e;
	struct ly_bundle *b = NULL;

	/* The good case, for contrast. */
	assert_int_equal(parse_doc(doc_of(x509_entry(&ca_a, ec256), NULL), &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	ly_bundle_free(b);

	/* X509-SVID §6.1: no kid. */
	e = x509_entry(&ca_a, ec256);
	json_object_set_new(e, "kid", json_string("k"));
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "must not have a kid");

	/* Exactly one x5c: none, empty, two, not an array. */
	e = x509_entry(&ca_a, ec256);
	json_object_del(e, "x5c");
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "exactly one x5c entry (has 0)");
	e = x509_entry(&ca_a, ec256);
	json_object_set_new(e, "x5c", json_array());
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "exactly one x5c entry (has 0)");
	e = x509_entry(&ca_a, ec256);
	json_array_append(json_object_get(e, "x5c"), json_array_get(json_object_get(e, "x5c"), 0));
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "exactly one x5c entry (has 2)");
	e = x509_entry(&ca_a, ec256);
	json_object_set(e, "x5c", json_array_get(json_object_get(e, "x5c"), 0));
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "exactly one x5c");
	e = x509_entry(&ca_a, ec256);
	json_object_set_new(e, "x5c", json_pack("[i]", 1));
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "not a string");

	/* The JWK's parameters must be the certificate's key. */
	EXPECT(parse_doc(doc_of(x509_entry(&ca_a, ec384), NULL), NULL, &e_), LY_E_INVALID, "does not match");
	EXPECT(parse_doc(doc_of(x509_entry(&ca_b, ec256), NULL), NULL, &e_), LY_E_INVALID, "does not match");

	/* x5c is standard base64 (RFC 7517 §4.7), of a CA certificate. */
	char *s = NULL;
	assert_int_equal(ly_b64url_encode(ca_a.data, ca_a.len, &s, NULL), LY_OK);
	e = x509_entry(&ca_a, ec256);
	json_object_set_new(e, "x5c", json_pack("[s]", s));
	free(s);
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "x5c[0]: base64");
	EXPECT(parse_doc(doc_of(x509_entry(&leaf, ec256), NULL), NULL, &e_), LY_E_INVALID, "not a CA");
}

static void
test_jwks_jwt_svid_rules(void **state)
{
	struct ly_bundle *b = NULL;
	assert_int_equal(parse_doc(doc_of(jwt_entry(ec256, "a"), jwt_entry(rsa2048, "b"), NULL), &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 2);
	assert_int_equal(EVP_PKEY_eq(ly_bundle_find_jwt_authority(b, "b"), rsa2048), 1);
	ly_bundle_free(b);

	/* JWT-SVID §6.1: a kid, unique. */
	EXPECT(parse_doc(doc_of(jwt_entry(ec256, NULL), NULL), NULL, &e_), LY_E_INVALID, "must have a string kid");
	json_t *e = jwt_entry(ec256, NULL);
	json_object_set_new(e, "kid", json_integer(7));
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "must have a string kid");
	EXPECT(parse_doc(doc_of(jwt_entry(ec256, "a"), jwt_entry(ec384, "a"), NULL), NULL, &e_), LY_E_INVALID,
	    "duplicate kid 'a'");
	EXPECT(parse_doc(doc_of(jwt_entry(ec256, "a\tb"), NULL), NULL, &e_), LY_E_INVALID, "printable");

	/* Symmetric keys and private members are refused, not skipped. */
	e = json_pack("{s:s, s:s, s:s, s:s}", "kty", "oct", "use", "jwt-svid", "kid", "h", "alg", "HS256");
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "kty 'oct'");
	e = jwt_entry(ec256, "a");
	json_object_set_new(e, "d", json_string("AAAA"));
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_INVALID, "private member 'd'");
	/* A known key type with a bad curve is an error, not an unknown type. */
	e = jwt_entry(ec256, "a");
	json_object_set_new(e, "crv", json_string("P-192"));
	EXPECT(parse_doc(doc_of(e, NULL), NULL, &e_), LY_E_UNSUPPORTED, "crv not P-256");
}

/* Standard §4.1.3, §4.2.1, §4.2.2: unknown uses and key types are ignored. */
static void
test_jwks_ignores_unknown(void **state)
{
	struct ly_bundle *b = NULL;
	json_t *odd_use = jwt_entry(ec256, "x");
	json_object_set_new(odd_use, "use", json_string("JWT-SVID")); /* values are case sensitive */
	json_t *odd_kty = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", "AAAA", "use",
	    "jwt-svid", "kid", "ed");
	json_t *sig = jwt_entry(ec256, "y");
	json_object_set_new(sig, "use", json_string("sig"));
	json_t *root = doc_of(odd_use, odd_kty, sig, jwt_entry(ec384, "kept"), NULL);
	json_object_set_new(root, "x-vendor", json_string("ignored"));
	assert_int_equal(parse_doc(root, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 1);
	assert_string_equal(ly_bundle_jwt_authority_kid(b, 0), "kept");
	ly_bundle_free(b);
}

static void
test_jwks_document_rules(void **state)
{
	struct ly_bundle *b = NULL;
	const char *bad_json[] = { "", "not json", "{\"keys\":[]", "{\"keys\":[]} {}", "[]", "\"keys\"" };
	for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
		struct ly_error err;
		assert_int_equal(ly_bundle_parse_jwks("example.org", bad_json[i], strlen(bad_json[i]), &b, &err),
		    LY_E_INVALID);
		assert_null(b);
	}
	const char *dup = "{\"keys\":[],\"keys\":[]}";
	EXPECT(ly_bundle_parse_jwks("example.org", dup, strlen(dup), &b, &e_), LY_E_INVALID, "duplicate");

	json_t *root = json_object();
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "'keys' missing");
	root = json_pack("{s:{}}", "keys");
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "not an array");
	root = json_pack("{s:[], s:i}", "keys", "spiffe_sequence", -1);
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "'spiffe_sequence' must be a non-negative integer");
	root = json_pack("{s:[], s:s}", "keys", "spiffe_sequence", "1");
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "'spiffe_sequence'");
	root = json_pack("{s:[], s:f}", "keys", "spiffe_refresh_hint", 1.5);
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "'spiffe_refresh_hint'");
	root = json_pack("{s:[i]}", "keys", 1);
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "keys[0]: not a JSON object");
	root = json_pack("{s:[{s:s}]}", "keys", "kty", "EC");
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "'use' missing");
	root = json_pack("{s:[{s:i, s:s}]}", "keys", "use", 1, "kty", "EC");
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "'use' missing or not a string");
	root = json_pack("{s:[{s:s}]}", "keys", "use", "jwt-svid");
	EXPECT(parse_doc(root, NULL, &e_), LY_E_INVALID, "'kty' missing");

	/* Sequence and hint read; big integers up to INT64_MAX. */
	root = json_pack("{s:[], s:I, s:i}", "keys", "spiffe_sequence", (json_int_t)INT64_MAX,
	    "spiffe_refresh_hint", 60);
	assert_int_equal(parse_doc(root, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_sequence(b), INT64_MAX);
	assert_int_equal(ly_bundle_refresh_hint(b), 60);
	ly_bundle_free(b);

	/* The trust domain comes from the caller and is validated. */
	EXPECT(ly_bundle_parse_jwks("EXAMPLE", "{\"keys\":[]}", 11, &b, &e_), LY_E_INVALID, "");
}

static void
test_jwks_limits(void **state)
{
	struct ly_bundle *b = NULL;

	/* LY_JWKS_KEYS_MAX keys pass (all ignored here), one more does not. */
	json_t *keys = json_array();
	for (int i = 0; i < LY_JWKS_KEYS_MAX; i++)
		json_array_append_new(keys, json_pack("{s:s, s:s}", "use", "other", "kty", "EC"));
	json_t *root = json_object();
	json_object_set(root, "keys", keys);
	assert_int_equal(parse_doc(json_deep_copy(root), NULL, NULL), LY_OK);
	json_array_append_new(keys, json_pack("{s:s, s:s}", "use", "other", "kty", "EC"));
	json_decref(keys);
	EXPECT(parse_doc(root, NULL, &e_), LY_E_LIMIT, "at most 256");

	/* The document size. */
	size_t n = LY_JWKS_MAX + 1;
	char *big = malloc(n);
	memset(big, ' ', n);
	memcpy(big, "{\"keys\":[]}", 11);
	EXPECT(ly_bundle_parse_jwks("example.org", big, n, &b, &e_), LY_E_LIMIT, "at most");
	assert_int_equal(ly_bundle_parse_jwks("example.org", big, n - 1, &b, NULL), LY_OK);
	ly_bundle_free(b);
	free(big);

	/* Nesting. */
	char deep[128] = "{\"keys\":[],\"x\":";
	size_t o = strlen(deep);
	for (int i = 0; i < LY_JSON_DEPTH_MAX; i++)
		deep[o++] = '[';
	for (int i = 0; i < LY_JSON_DEPTH_MAX; i++)
		deep[o++] = ']';
	deep[o++] = '}';
	EXPECT(ly_bundle_parse_jwks("example.org", deep, o, &b, &e_), LY_E_LIMIT, "nested");
}

/* ---- PEM ---- */

static char *
pem_of(const struct ly_buf *der)
{
	struct ly_bundle *b = new_bundle();
	assert_int_equal(ly_bundle_add_x509_authority(b, der->data, der->len, NULL), LY_OK);
	char *pem = NULL;
	assert_int_equal(ly_bundle_write_pem(b, &pem, NULL), LY_OK);
	ly_bundle_free(b);
	return pem;
}

static void
test_pem_round_trip(void **state)
{
	struct ly_bundle *b = full_bundle();
	char *pem = NULL;
	assert_int_equal(ly_bundle_write_pem(b, &pem, NULL), LY_OK);
	assert_int_equal(strncmp(pem, "-----BEGIN CERTIFICATE-----\n", 28), 0);
	/* 64-column lines (RFC 7468). */
	assert_int_equal(strchr(pem + 28, '\n') - (pem + 28), 64);

	/* Parsed back by us and by OpenSSL. */
	struct ly_bundle *back = NULL;
	assert_int_equal(ly_bundle_parse_pem("example.org", pem, strlen(pem), &back, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(back), 2);
	assert_memory_equal(ly_bundle_x509_authority(back, 1)->data, ca_rsa.data, ca_rsa.len);
	ly_bundle_free(back);
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(x);
	X509_free(x);
	BIO_free(bio);
	free(pem);
	ly_bundle_free(b);

	/* CRLF line ends, blank lines and indentation between blocks are whitespace. */
	char *a = pem_of(&ca_a);
	char *c = pem_of(&ca_b);
	size_t cap = 2 * (strlen(a) + strlen(c)) + 64;
	char *text = malloc(cap);
	size_t o = 0;
	text[o++] = '\n';
	for (const char *p = a; *p; p++) {
		if (*p == '\n')
			text[o++] = '\r';
		text[o++] = *p;
	}
	memcpy(text + o, "\n  \t\n", 5);
	o += 5;
	memcpy(text + o, c, strlen(c));
	o += strlen(c);
	assert_int_equal(ly_bundle_parse_pem("example.org", text, o, &back, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(back), 2);
	ly_bundle_free(back);
	free(text);
	free(a);
	free(c);
}

static void
test_pem_refusals(void **state)
{
	struct ly_bundle *b = NULL;
	char *a = pem_of(&ca_a);
	char *c = pem_of(&ca_b);
	char text[16384];

	/* Junk before, between and after blocks. */
	snprintf(text, sizeof(text), "subject=O=example.org\n%s", a);
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID, "text outside");
	snprintf(text, sizeof(text), "%sjunk\n%s", a, c);
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID, "text outside");
	snprintf(text, sizeof(text), "%s.", a);
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID, "text outside");

	/* Other block types. */
	snprintf(text, sizeof(text), "%s-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", a);
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID,
	    "block 'PRIVATE KEY' is not a CERTIFICATE");
	snprintf(text, sizeof(text), "-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED CERTIFICATE-----\n");
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID, "not a CERTIFICATE");
	/* BEGIN CERTIFICATE closed by another END. */
	snprintf(text, sizeof(text), "%s", a);
	memcpy(strstr(text, "-----END CERTIFICATE"), "-----END CERTIFICATX", 20);
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID, "not a CERTIFICATE");

	/* No END line; headers inside; bad base64; empty input; a leaf. */
	snprintf(text, sizeof(text), "%s", a);
	*strstr(text, "-----END") = '\0';
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID, "no END line");
	snprintf(text, sizeof(text), "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n%s", a + 28);
	EXPECT(ly_bundle_parse_pem("example.org", text, strlen(text), &b, &e_), LY_E_INVALID, "base64");
	EXPECT(ly_bundle_parse_pem("example.org", " \n", 2, &b, &e_), LY_E_INVALID, "no CERTIFICATE block");
	char *l = NULL;
	{
		/* A leaf written as PEM by hand: the bundle writer would refuse it. */
		char *s = NULL;
		assert_int_equal(ly_b64_encode(leaf.data, leaf.len, &s, NULL), LY_OK);
		l = malloc(strlen(s) + 64);
		sprintf(l, "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n", s);
		free(s);
	}
	EXPECT(ly_bundle_parse_pem("example.org", l, strlen(l), &b, &e_), LY_E_INVALID, "not a CA");
	free(l);

	/* LY_BUNDLE_CERTS_MAX certificates at most (counted before duplicates fold). */
	size_t one = strlen(a);
	char *many = malloc(one * (LY_BUNDLE_CERTS_MAX + 1) + 1);
	for (int i = 0; i <= LY_BUNDLE_CERTS_MAX; i++)
		memcpy(many + (size_t)i * one, a, one);
	EXPECT(ly_bundle_parse_pem("example.org", many, one * (LY_BUNDLE_CERTS_MAX + 1), &b, &e_), LY_E_LIMIT,
	    "more than 256");
	assert_int_equal(ly_bundle_parse_pem("example.org", many, one * LY_BUNDLE_CERTS_MAX, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	ly_bundle_free(b);
	free(many);
	EXPECT(ly_bundle_parse_pem("example.org", a, (size_t)LY_PEM_FILE_MAX + 1, &b, &e_), LY_E_LIMIT, "at most");

	/* ly_bundle_add_pem is all or none. */
	b = new_bundle();
	snprintf(text, sizeof(text), "%s%sjunk", a, c);
	EXPECT(ly_bundle_add_pem(b, text, strlen(text), &e_), LY_E_INVALID, "text outside");
	assert_int_equal(ly_bundle_x509_authority_count(b), 0);
	ly_bundle_free(b);
	free(a);
	free(c);
}

/* ---- sets ---- */

static void
test_bundle_set(void **state)
{
	struct ly_bundle_set *set = NULL;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	struct ly_bundle *a = new_bundle();
	struct ly_bundle *f = NULL;
	assert_int_equal(ly_bundle_new("federated.test", &f, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, a, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, f, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(set), 2);
	assert_ptr_equal(ly_bundle_set_find(set, "example.org"), a);
	assert_ptr_equal(ly_bundle_set_find(set, "federated.test"), f);
	assert_null(ly_bundle_set_find(set, "example.com"));
	assert_null(ly_bundle_set_find(set, "example"));

	/* Putting a bundle of the same trust domain replaces (and frees) the old one. */
	struct ly_bundle *a2 = full_bundle();
	assert_int_equal(ly_bundle_set_put(set, a2, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(set), 2);
	assert_ptr_equal(ly_bundle_set_find(set, "example.org"), a2);

	assert_int_equal(ly_bundle_set_remove(set, "federated.test", NULL), LY_OK);
	EXPECT(ly_bundle_set_remove(set, "federated.test", &e_), LY_E_NOT_FOUND, "no bundle");
	assert_int_equal(ly_bundle_set_count(set), 1);
	assert_ptr_equal(ly_bundle_set_at(set, 0), a2);
	assert_null(ly_bundle_set_at(set, 1));
	ly_bundle_set_free(set);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_refuses_bad_trust_domain),
		cmocka_unit_test(test_x509_authorities),
		cmocka_unit_test(test_jwt_authorities),
		cmocka_unit_test(test_sequence_limits),
		cmocka_unit_test(test_clone_and_equal),
		cmocka_unit_test(test_jwks_round_trip),
		cmocka_unit_test(test_jwks_x509_svid_rules),
		cmocka_unit_test(test_jwks_jwt_svid_rules),
		cmocka_unit_test(test_jwks_ignores_unknown),
		cmocka_unit_test(test_jwks_document_rules),
		cmocka_unit_test(test_jwks_limits),
		cmocka_unit_test(test_pem_round_trip),
		cmocka_unit_test(test_pem_refusals),
		cmocka_unit_test(test_bundle_set),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
