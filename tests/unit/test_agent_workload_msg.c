/*
 * test_agent_workload_msg.c: Workload API messages (SPEC §3) built from the
 * cache, packed, then decoded back with protoc-c's own unpackers and
 * checked field by field; claims as google.protobuf.Struct; and the
 * requests workloads send, each rule broken on purpose.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "agent/workload_msg.h"
#include "lib/caps.h"
#include "lib/log.h"
#include "testutil_agent.h"
#include "workload.pb-c.h"

#define NOW ((int64_t)TU_NOW)

struct fixture {
	struct tu_pki pki, other;
	struct ly_cache *c;
	struct ly_bundle_set *set;
	EVP_PKEY *jk;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_pki_init(&f->pki);
	tu_pki_init(&f->other);
	ly_log_set_level(LY_LOG_ERROR);
	assert_int_equal(ly_cache_new(TA_TD, &f->c, NULL), LY_OK);
	struct ly_entry *es[3] = {
		ta_entry("a", "spiffe://example.org/a", 10, NULL, "unix:uid:1", NULL),
		ta_entry("b", "spiffe://example.org/b", 5, "db", "unix:uid:1", NULL),
		ta_entry("c", "spiffe://example.org/c", 20, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, true, 1, es, 3, NULL, 0, NULL);
	ta_set_svid(f->c, &f->pki, "a", -60, 3600, NULL);
	ta_set_svid(f->c, &f->pki, "b", -60, 3600, NULL);

	/* Bundles: ours (X.509 + JWT), other.org (X.509), jwt.org (JWT only). */
	struct ly_bundle *b = NULL;
	f->jk = tu_key(LY_KEY_EC_P256);
	assert_int_equal(ly_bundle_set_new(&f->set, NULL), LY_OK);
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "kid-1", f->jk, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, 3, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(f->set, b, NULL), LY_OK);
	assert_int_equal(ly_bundle_new("other.org", &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->other.root_der.data, f->other.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(f->set, b, NULL), LY_OK);
	assert_int_equal(ly_bundle_new("jwt.org", &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "kid-j", f->jk, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(f->set, b, NULL), LY_OK);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	ly_cache_free(f->c);
	ly_bundle_set_free(f->set);
	EVP_PKEY_free(f->jk);
	tu_pki_free(&f->pki);
	tu_pki_free(&f->other);
	free(f);
	return 0;
}

static void
query_uid1(struct fixture *f, unsigned flags, struct ly_cache_identities *ids)
{
	size_t n;
	struct ly_selector *have = ta_selectors(&n, "unix:uid:1", NULL);
	assert_int_equal(ly_cache_query(f->c, have, n, flags, NOW, ids, NULL), LY_OK);
	ly_selectors_free(have, n);
}

static void
test_x509svid_response(void **state)
{
	struct fixture *f = *state;
	struct ly_cache_identities ids;
	struct ly_buf out = LY_BUF_INIT;
	ly_cache_identities_init(&ids);
	query_uid1(f, LY_CACHE_QUERY_X509, &ids);
	assert_int_equal(ids.n, 2);
	const struct ly_bundle *own = ly_bundle_set_find(f->set, TA_TD);
	assert_int_equal(ly_wmsg_x509svid_response(&ids, own, f->set, &out, NULL), LY_OK);

	X509SVIDResponse *r = x509_svidresponse__unpack(NULL, out.len, out.data);
	assert_non_null(r);
	assert_int_equal(r->n_svids, 2);
	/* b is older: the default identity, first. */
	assert_string_equal(r->svids[0]->spiffe_id, "spiffe://example.org/b");
	assert_string_equal(r->svids[0]->hint, "db");
	assert_string_equal(r->svids[1]->spiffe_id, "spiffe://example.org/a");
	assert_string_equal(r->svids[1]->hint, "");
	for (size_t i = 0; i < 2; i++) {
		const struct ly_cache_item *it = &ids.v[i];
		X509SVID *s = r->svids[i];
		assert_int_equal(s->x509_svid.len, it->leaf.len + it->intermediates.len);
		assert_memory_equal(s->x509_svid.data, it->leaf.der, it->leaf.len);
		assert_memory_equal(s->x509_svid.data + it->leaf.len, it->intermediates.der, it->intermediates.len);
		assert_int_equal(s->x509_svid_key.len, it->key.len);
		assert_memory_equal(s->x509_svid_key.data, it->key.der, it->key.len);
		assert_int_equal(s->bundle.len, f->pki.root_der.len);
		assert_memory_equal(s->bundle.data, f->pki.root_der.data, f->pki.root_der.len);
		/* The key decodes to the key the chain's leaf certifies. */
		EVP_PKEY *k = NULL;
		assert_int_equal(ly_key_from_pkcs8_der(s->x509_svid_key.data, s->x509_svid_key.len, &k, NULL), LY_OK);
		assert_true(ly_key_public_equal(k, f->pki.leaf_key));
		EVP_PKEY_free(k);
	}
	/* Federated: other.org only (ours is not federated; jwt.org has no X.509 authority). */
	assert_int_equal(r->n_federated_bundles, 1);
	assert_string_equal(r->federated_bundles[0]->key, "spiffe://other.org");
	assert_int_equal(r->federated_bundles[0]->value.len, f->other.root_der.len);
	assert_memory_equal(r->federated_bundles[0]->value.data, f->other.root_der.data, f->other.root_der.len);
	assert_int_equal(r->n_crl, 0);
	x509_svidresponse__free_unpacked(r, NULL);
	ly_buf_free_secret(&out);

	/* Without federated bundles. */
	assert_int_equal(ly_wmsg_x509svid_response(&ids, own, NULL, &out, NULL), LY_OK);
	r = x509_svidresponse__unpack(NULL, out.len, out.data);
	assert_non_null(r);
	assert_int_equal(r->n_federated_bundles, 0);
	x509_svidresponse__free_unpacked(r, NULL);
	ly_buf_free_secret(&out);

	/* Refused: no bundle, a bundle without X.509 authorities, no identity, an identity without SVID. */
	assert_int_equal(ly_wmsg_x509svid_response(&ids, NULL, NULL, &out, NULL), LY_E_INVALID);
	assert_int_equal(ly_wmsg_x509svid_response(&ids, ly_bundle_set_find(f->set, "jwt.org"), NULL, &out, NULL),
	    LY_E_INVALID);
	query_uid1(f, 0, &ids);
	assert_int_equal(ids.n, 3);
	assert_int_equal(ly_wmsg_x509svid_response(&ids, own, NULL, &out, NULL), LY_E_INVALID);
	ids.n = 0;
	assert_int_equal(ly_wmsg_x509svid_response(&ids, own, NULL, &out, NULL), LY_E_INVALID);
	assert_null(out.data);
	ly_cache_identities_cleanup(&ids);
}

static void
test_bundle_responses(void **state)
{
	struct fixture *f = *state;
	struct ly_buf out = LY_BUF_INIT;
	assert_int_equal(ly_wmsg_x509bundles_response(f->set, &out, NULL), LY_OK);
	X509BundlesResponse *xb = x509_bundles_response__unpack(NULL, out.len, out.data);
	assert_non_null(xb);
	assert_int_equal(xb->n_bundles, 2);
	assert_string_equal(xb->bundles[0]->key, "spiffe://example.org");
	assert_memory_equal(xb->bundles[0]->value.data, f->pki.root_der.data, f->pki.root_der.len);
	assert_string_equal(xb->bundles[1]->key, "spiffe://other.org");
	assert_memory_equal(xb->bundles[1]->value.data, f->other.root_der.data, f->other.root_der.len);
	x509_bundles_response__free_unpacked(xb, NULL);
	ly_buf_free(&out);

	assert_int_equal(ly_wmsg_jwtbundles_response(f->set, &out, NULL), LY_OK);
	JWTBundlesResponse *jb = jwtbundles_response__unpack(NULL, out.len, out.data);
	assert_non_null(jb);
	assert_int_equal(jb->n_bundles, 3);
	const char *want[3] = { "spiffe://example.org", "spiffe://jwt.org", "spiffe://other.org" };
	size_t want_keys[3] = { 1, 1, 0 };
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(jb->bundles[i]->key, want[i]);
		json_error_t je;
		json_t *doc = json_loadb((const char *)jb->bundles[i]->value.data, jb->bundles[i]->value.len, 0, &je);
		assert_non_null(doc);
		json_t *keys = json_object_get(doc, "keys");
		assert_true(json_is_array(keys));
		assert_int_equal(json_array_size(keys), want_keys[i]);
		/* A plain JWKS of JWT authorities: every key has a kid, no x5c-only keys, no spiffe_* members. */
		for (size_t k = 0; k < json_array_size(keys); k++)
			assert_true(json_is_string(json_object_get(json_array_get(keys, k), "kid")));
		assert_null(json_object_get(doc, "spiffe_sequence"));
		json_decref(doc);
	}
	jwtbundles_response__free_unpacked(jb, NULL);
	ly_buf_free(&out);

	/* No bundles at all: empty maps. */
	assert_int_equal(ly_wmsg_x509bundles_response(NULL, &out, NULL), LY_OK);
	assert_int_equal(out.len, 0);
	ly_buf_free(&out);
	assert_int_equal(ly_wmsg_jwtbundles_response(NULL, &out, NULL), LY_OK);
	ly_buf_free(&out);
}

static void
test_jwtsvid_response(void **state)
{
	(void)state;
	struct ly_wmsg_jwtsvid v[2] = {
		{ "spiffe://example.org/b", "eyJ.a.b", "db" },
		{ "spiffe://example.org/a", "eyJ.c.d", NULL },
	};
	struct ly_buf out = LY_BUF_INIT;
	assert_int_equal(ly_wmsg_jwtsvid_response(v, 2, &out, NULL), LY_OK);
	JWTSVIDResponse *r = jwtsvidresponse__unpack(NULL, out.len, out.data);
	assert_non_null(r);
	assert_int_equal(r->n_svids, 2);
	assert_string_equal(r->svids[0]->spiffe_id, "spiffe://example.org/b");
	assert_string_equal(r->svids[0]->svid, "eyJ.a.b");
	assert_string_equal(r->svids[0]->hint, "db");
	assert_string_equal(r->svids[1]->hint, "");
	jwtsvidresponse__free_unpacked(r, NULL);
	ly_buf_free_secret(&out);
	assert_int_equal(ly_wmsg_jwtsvid_response(v, 0, &out, NULL), LY_E_INVALID);
	v[1].token = NULL;
	assert_int_equal(ly_wmsg_jwtsvid_response(v, 2, &out, NULL), LY_E_INVALID);
	assert_null(out.data);
}

static const Google__Protobuf__Value *
field(const Google__Protobuf__Struct *s, const char *key)
{
	for (size_t i = 0; i < s->n_fields; i++)
		if (strcmp(s->fields[i]->key, key) == 0)
			return s->fields[i]->value;
	return NULL;
}

static void
test_validate_response(void **state)
{
	(void)state;
	const char *doc = "{\"sub\":\"spiffe://example.org/a\",\"aud\":[\"x\",\"y\"],\"exp\":1700000300,"
			  "\"ratio\":1.5,\"t\":true,\"f\":false,\"nil\":null,"
			  "\"nested\":{\"deep\":{\"list\":[1,\"two\",{},[]]}}}";
	json_error_t je;
	json_t *claims = json_loads(doc, 0, &je);
	assert_non_null(claims);
	struct ly_buf out = LY_BUF_INIT;
	assert_int_equal(ly_wmsg_validate_response("spiffe://example.org/a", claims, &out, NULL), LY_OK);
	ValidateJWTSVIDResponse *r = validate_jwtsvidresponse__unpack(NULL, out.len, out.data);
	assert_non_null(r);
	assert_string_equal(r->spiffe_id, "spiffe://example.org/a");
	Google__Protobuf__Struct *s = r->claims;
	assert_non_null(s);
	assert_int_equal(s->n_fields, 8);
	/* Keys sorted. */
	for (size_t i = 1; i < s->n_fields; i++)
		assert_true(strcmp(s->fields[i - 1]->key, s->fields[i]->key) < 0);
	const Google__Protobuf__Value *v = field(s, "sub");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
	assert_string_equal(v->string_value, "spiffe://example.org/a");
	v = field(s, "aud");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
	assert_int_equal(v->list_value->n_values, 2);
	assert_string_equal(v->list_value->values[1]->string_value, "y");
	v = field(s, "exp");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
	assert_true(v->number_value == 1700000300.0);
	v = field(s, "ratio");
	assert_true(v->number_value == 1.5);
	assert_int_equal(field(s, "t")->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
	assert_true(field(s, "t")->bool_value);
	assert_false(field(s, "f")->bool_value);
	assert_int_equal(field(s, "nil")->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
	v = field(s, "nested");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
	v = field(v->struct_value, "deep");
	v = field(v->struct_value, "list");
	assert_int_equal(v->list_value->n_values, 4);
	assert_true(v->list_value->values[0]->number_value == 1.0);
	assert_string_equal(v->list_value->values[1]->string_value, "two");
	assert_int_equal(v->list_value->values[2]->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
	assert_int_equal(v->list_value->values[2]->struct_value->n_fields, 0);
	assert_int_equal(v->list_value->values[3]->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
	validate_jwtsvidresponse__free_unpacked(r, NULL);
	ly_buf_free(&out);

	/* Not an object; too deep (objects and arrays alike). */
	json_t *arr = json_array();
	assert_int_equal(ly_wmsg_validate_response("spiffe://example.org/a", arr, &out, NULL), LY_E_INVALID);
	assert_int_equal(ly_wmsg_validate_response(NULL, claims, &out, NULL), LY_E_INVALID);
	json_decref(arr);
	for (int kind = 0; kind < 2; kind++) {
		json_t *deep = json_object();
		json_t *cur = deep;
		for (int i = 0; i < LY_JSON_DEPTH_MAX + 1; i++) {
			json_t *next = kind == 0 ? json_object() : json_array();
			if (json_is_object(cur))
				json_object_set_new(cur, "k", next);
			else
				json_array_append_new(cur, next);
			cur = next;
		}
		assert_int_equal(ly_wmsg_validate_response("spiffe://example.org/a", deep, &out, NULL), LY_E_LIMIT);
		json_decref(deep);
	}
	/* At the cap exactly: fine. */
	json_t *ok = json_object();
	json_t *cur = ok;
	for (int i = 0; i < LY_JSON_DEPTH_MAX - 1; i++) {
		json_t *next = json_object();
		json_object_set_new(cur, "k", next);
		cur = next;
	}
	assert_int_equal(ly_wmsg_validate_response("spiffe://example.org/a", ok, &out, NULL), LY_OK);
	ly_buf_free(&out);
	json_decref(ok);
	json_decref(claims);
}

/* Packs a JWTSVIDRequest of `n` audiences and a spiffe_id. */
static void
pack_jwt_req(char **aud, size_t n, char *spiffe_id, struct ly_buf *out)
{
	JWTSVIDRequest req;
	jwtsvidrequest__init(&req);
	req.audience = aud;
	req.n_audience = n;
	if (spiffe_id != NULL)
		req.spiffe_id = spiffe_id;
	size_t len = jwtsvidrequest__get_packed_size(&req);
	out->data = malloc(len + 1);
	assert_non_null(out->data);
	out->len = jwtsvidrequest__pack(&req, out->data);
}

static ly_status
parse_jwt(char **aud, size_t n, char *spiffe_id)
{
	struct ly_buf b = LY_BUF_INIT;
	struct ly_wmsg_jwt_request r;
	pack_jwt_req(aud, n, spiffe_id, &b);
	ly_status rc = ly_wmsg_parse_jwtsvid_request(b.data, b.len, &r, NULL);
	ly_wmsg_jwt_request_cleanup(&r);
	ly_buf_free(&b);
	return rc;
}

static void
test_jwtsvid_request(void **state)
{
	(void)state;
	char a1[] = "svc-a", a2[] = "svc-b", id[] = "spiffe://example.org/a";
	char *aud[2] = { a1, a2 };
	struct ly_buf b = LY_BUF_INIT;
	struct ly_wmsg_jwt_request r;

	pack_jwt_req(aud, 2, NULL, &b);
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(b.data, b.len, &r, NULL), LY_OK);
	assert_int_equal(r.n_audience, 2);
	assert_string_equal(r.audience[0], "svc-a");
	assert_string_equal(r.audience[1], "svc-b");
	assert_null(r.spiffe_id);
	ly_wmsg_jwt_request_cleanup(&r);
	ly_buf_free(&b);
	pack_jwt_req(aud, 1, id, &b);
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(b.data, b.len, &r, NULL), LY_OK);
	assert_string_equal(r.spiffe_id, "spiffe://example.org/a");
	ly_wmsg_jwt_request_cleanup(&r);
	ly_buf_free(&b);

	/* SPEC §3: at least one audience. */
	struct ly_error err;
	pack_jwt_req(NULL, 0, id, &b);
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(b.data, b.len, &r, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "audience is required"));
	assert_null(r.msg);
	ly_buf_free(&b);
	/* The empty message too. */
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(NULL, 0, &r, NULL), LY_E_INVALID);

	char empty[] = "";
	char *aud_empty[1] = { empty };
	assert_int_equal(parse_jwt(aud_empty, 1, NULL), LY_E_INVALID);
	/* LY_JWT_AUDIENCE_MAX bytes: fine; one more: over the cap. */
	char longa[LY_JWT_AUDIENCE_MAX + 2];
	memset(longa, 'a', sizeof(longa));
	longa[LY_JWT_AUDIENCE_MAX] = '\0';
	char *aud_long[1] = { longa };
	assert_int_equal(parse_jwt(aud_long, 1, NULL), LY_OK);
	longa[LY_JWT_AUDIENCE_MAX] = 'a';
	longa[LY_JWT_AUDIENCE_MAX + 1] = '\0';
	assert_int_equal(parse_jwt(aud_long, 1, NULL), LY_E_LIMIT);
	/* LY_JWT_AUDIENCES_MAX audiences: fine; one more: over. */
	char *many[LY_JWT_AUDIENCES_MAX + 1];
	for (size_t i = 0; i <= LY_JWT_AUDIENCES_MAX; i++)
		many[i] = a1;
	assert_int_equal(parse_jwt(many, LY_JWT_AUDIENCES_MAX, NULL), LY_OK);
	assert_int_equal(parse_jwt(many, LY_JWT_AUDIENCES_MAX + 1, NULL), LY_E_LIMIT);

	/* UTF-8 text only. */
	char ok1[] = "caf\xc3\xa9", ok2[] = "\xe6\x97\xa5\xe6\x9c\xac", ok3[] = "\xf0\x9f\x94\x91";
	char bad1[] = "\xff", bad2[] = "\xc0\xaf", bad3[] = "\xed\xa0\x80", bad4[] = "a\x01", bad5[] = "\xe6\x97",
	     bad6[] = "a\x7f", bad7[] = "\xf4\x90\x80\x80", bad8[] = "\xc2\x85";
	char *goods[3] = { ok1, ok2, ok3 };
	char *bads[8] = { bad1, bad2, bad3, bad4, bad5, bad6, bad7, bad8 };
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(parse_jwt(&goods[i], 1, NULL), LY_OK);
	for (size_t i = 0; i < 8; i++) {
		if (parse_jwt(&bads[i], 1, NULL) != LY_E_INVALID)
			fail_msg("audience %zu accepted", i);
	}

	/* spiffe_id: valid, with a path. */
	char bad_id1[] = "spiffe://Example.org/a", bad_id2[] = "spiffe://example.org", bad_id3[] = "https://x/y";
	assert_int_equal(parse_jwt(aud, 1, bad_id1), LY_E_INVALID);
	assert_int_equal(parse_jwt(aud, 1, bad_id2), LY_E_INVALID);
	assert_int_equal(parse_jwt(aud, 1, bad_id3), LY_E_INVALID);

	/* Hand-made encodings: a NUL inside a string; a field sent twice; garbage; an unknown field. */
	const uint8_t nul[] = { 0x0a, 0x03, 'a', 0x00, 'b' };
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(nul, sizeof(nul), &r, &err), LY_E_INVALID);
	const uint8_t twice[] = { 0x0a, 0x01, 'a', 0x12, 0x03, 'x', 'y', 'z', 0x12, 0x01, 'q' };
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(twice, sizeof(twice), &r, &err), LY_E_INVALID);
	const uint8_t garbage[] = { 0xff, 0xff, 0xff };
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(garbage, sizeof(garbage), &r, &err), LY_E_INVALID);
	const uint8_t unknown[] = { 0x0a, 0x01, 'a', 0x18, 0x01 };
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(unknown, sizeof(unknown), &r, &err), LY_OK);
	ly_wmsg_jwt_request_cleanup(&r);
	/* Over the request cap. */
	uint8_t *big = calloc(1, LY_WORKLOAD_REQUEST_MAX + 1);
	assert_non_null(big);
	assert_int_equal(ly_wmsg_parse_jwtsvid_request(big, LY_WORKLOAD_REQUEST_MAX + 1, &r, &err), LY_E_LIMIT);
	free(big);
}

static ly_status
parse_validate(char *aud, char *svid)
{
	ValidateJWTSVIDRequest req;
	validate_jwtsvidrequest__init(&req);
	if (aud != NULL)
		req.audience = aud;
	if (svid != NULL)
		req.svid = svid;
	size_t len = validate_jwtsvidrequest__get_packed_size(&req);
	uint8_t *buf = malloc(len + 1);
	assert_non_null(buf);
	assert_int_equal(validate_jwtsvidrequest__pack(&req, buf), len);
	struct ly_wmsg_validate_request r;
	ly_status rc = ly_wmsg_parse_validate_request(buf, len, &r, NULL);
	if (rc == LY_OK) {
		assert_string_equal(r.audience, aud);
		assert_string_equal(r.svid, svid);
		assert_int_equal(r.svid_len, strlen(svid));
	}
	ly_wmsg_validate_request_cleanup(&r);
	free(buf);
	return rc;
}

static void
test_validate_request(void **state)
{
	(void)state;
	char aud[] = "svc", tok[] = "eyJ.x.y";
	assert_int_equal(parse_validate(aud, tok), LY_OK);
	assert_int_equal(parse_validate(NULL, tok), LY_E_INVALID);
	assert_int_equal(parse_validate(aud, NULL), LY_E_INVALID);
	char bad[] = "\xff";
	assert_int_equal(parse_validate(bad, tok), LY_E_INVALID);
	/* A token with a NUL inside: refused (and the refused copy wiped, ASan-clean). */
	const uint8_t nul[] = { 0x0a, 0x01, 'a', 0x12, 0x03, 'x', 0x00, 'y' };
	struct ly_wmsg_validate_request r;
	assert_int_equal(ly_wmsg_parse_validate_request(nul, sizeof(nul), &r, NULL), LY_E_INVALID);
	assert_null(r.msg);
	char *longtok = malloc(LY_JWT_MAX + 2);
	assert_non_null(longtok);
	memset(longtok, 'a', LY_JWT_MAX + 1);
	longtok[LY_JWT_MAX] = '\0';
	assert_int_equal(parse_validate(aud, longtok), LY_OK);
	longtok[LY_JWT_MAX] = 'a';
	longtok[LY_JWT_MAX + 1] = '\0';
	assert_int_equal(parse_validate(aud, longtok), LY_E_LIMIT);
	free(longtok);
}

static void
test_empty_requests(void **state)
{
	(void)state;
	enum ly_wmsg_empty_kind kinds[3] = { LY_WMSG_X509SVID_REQUEST, LY_WMSG_X509BUNDLES_REQUEST,
		LY_WMSG_JWTBUNDLES_REQUEST };
	const uint8_t unknown[] = { 0x08, 0x01 };
	const uint8_t garbage[] = { 0x0a, 0x05, 'a' };
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(ly_wmsg_parse_empty_request(kinds[i], NULL, 0, NULL), LY_OK);
		assert_int_equal(ly_wmsg_parse_empty_request(kinds[i], unknown, sizeof(unknown), NULL), LY_OK);
		assert_int_equal(ly_wmsg_parse_empty_request(kinds[i], garbage, sizeof(garbage), NULL), LY_E_INVALID);
		assert_int_equal(ly_wmsg_parse_empty_request(kinds[i], garbage, LY_WORKLOAD_REQUEST_MAX + 1, NULL),
		    LY_E_LIMIT);
	}
	assert_int_equal(ly_wmsg_parse_empty_request((enum ly_wmsg_empty_kind)7, NULL, 0, NULL), LY_E_INTERNAL);
}

/*
 * grpc.health.v1 (grpc/health/v1/health.proto): "If the requested service is
 * unknown, the call will fail with status NOT_FOUND": the parser tells the
 * agent's own names ("" and "SpiffeWorkloadAPI") from any other, so a probe
 * (grpc-health-probe -service, a Kubernetes grpc probe) with a wrong name
 * fails instead of passing.
 */
static void
test_health_request(void **state)
{
	(void)state;
	bool known = true;
	const uint8_t empty_svc[] = { 0x0a, 0x00 };
	const uint8_t wapi[] = { 0x0a, 0x11, 'S', 'p', 'i', 'f', 'f', 'e', 'W', 'o', 'r', 'k', 'l', 'o', 'a', 'd', 'A',
		'P', 'I' };
	const uint8_t other[] = { 0x0a, 0x03, 'f', 'o', 'o' };
	const uint8_t prefix[] = { 0x0a, 0x08, 'S', 'p', 'i', 'f', 'f', 'e', 'W', 'o' };
	const uint8_t unknown_fields[] = { 0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4, 0x22, 0x01,
		'x' };
	const uint8_t twice[] = { 0x0a, 0x00, 0x0a, 0x00 };
	const uint8_t not_string[] = { 0x08, 0x01 };
	const uint8_t truncated[] = { 0x0a, 0x05, 'a' };
	const uint8_t bad_wire[] = { 0x0b };
	const uint8_t field0[] = { 0x02, 0x00 };
	const uint8_t long_varint[] = { 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	const uint8_t nul[] = { 0x0a, 0x02, 'a', 0x00 };
	struct ly_error err;

	assert_int_equal(ly_wmsg_parse_health_request(NULL, 0, &known, &err), LY_OK);
	assert_true(known);
	assert_int_equal(ly_wmsg_parse_health_request(empty_svc, sizeof(empty_svc), &known, &err), LY_OK);
	assert_true(known);
	assert_int_equal(ly_wmsg_parse_health_request(wapi, sizeof(wapi), &known, &err), LY_OK);
	assert_true(known);
	assert_int_equal(ly_wmsg_parse_health_request(other, sizeof(other), &known, &err), LY_OK);
	assert_false(known);
	assert_int_equal(ly_wmsg_parse_health_request(prefix, sizeof(prefix), &known, &err), LY_OK);
	assert_false(known);
	assert_int_equal(ly_wmsg_parse_health_request(unknown_fields, sizeof(unknown_fields), &known, &err), LY_OK);
	assert_true(known);
	assert_int_equal(ly_wmsg_parse_health_request(twice, sizeof(twice), &known, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "twice"));
	assert_int_equal(ly_wmsg_parse_health_request(not_string, sizeof(not_string), &known, &err), LY_E_INVALID);
	assert_int_equal(ly_wmsg_parse_health_request(truncated, sizeof(truncated), &known, &err), LY_E_INVALID);
	assert_int_equal(ly_wmsg_parse_health_request(bad_wire, sizeof(bad_wire), &known, &err), LY_E_INVALID);
	assert_int_equal(ly_wmsg_parse_health_request(field0, sizeof(field0), &known, &err), LY_E_INVALID);
	assert_int_equal(ly_wmsg_parse_health_request(long_varint, sizeof(long_varint), &known, &err), LY_E_INVALID);
	assert_int_equal(ly_wmsg_parse_health_request(nul, sizeof(nul), &known, &err), LY_E_INVALID);
	assert_false(known);
	assert_int_equal(ly_wmsg_parse_health_request(other, LY_WORKLOAD_REQUEST_MAX + 1, &known, &err), LY_E_LIMIT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_x509svid_response, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bundle_responses, setup, teardown),
		cmocka_unit_test(test_jwtsvid_response),
		cmocka_unit_test(test_validate_response),
		cmocka_unit_test(test_jwtsvid_request),
		cmocka_unit_test(test_validate_request),
		cmocka_unit_test(test_empty_requests),
		cmocka_unit_test(test_health_request),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
