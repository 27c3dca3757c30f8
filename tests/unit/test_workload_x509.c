/*
 * test_workload_x509.c: X509SVIDResponse -> checked context
 * (lib/workload/x509ctx.c), with certificates made at test time. One
 * accepted response, one of 1,300 SVIDs in ~5 MB (over the 1,024 SVIDs
 * and the 4 MiB the library once took: it now takes what the agent may
 * send, lib/caps.h LY_WL_RESPONSE_MAX and LY_WL_SVIDS_MAX), then one response
 * per rule that must be refused, the caps counted on the wire among them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/workload/wl_internal.h"
#include "tests/unit/test_workload_util.h"

#define ID_WEB "spiffe://example.org/web"
#define ID_DB "spiffe://example.org/db"

struct fx {
	struct twl_pki pki, other;
	EVP_PKEY *key, *key2;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	twl_pki_init(&f->pki, "example.org", TU_NOW);
	twl_pki_init(&f->other, "other.org", TU_NOW);
	f->key = tu_key(LY_KEY_EC_P256);
	f->key2 = tu_key(LY_KEY_EC_P256);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	twl_pki_free(&f->pki);
	twl_pki_free(&f->other);
	EVP_PKEY_free(f->key);
	EVP_PKEY_free(f->key2);
	free(f);
	return 0;
}

/* A good item for `id` with key f->key. */
static void
good_item(struct fx *f, struct twl_item *it, const char *id)
{
	struct tu_spec s = twl_leaf_spec(&f->pki, id);
	twl_item_make(it, &f->pki, id, &s, f->key);
}

/* Parses the packed items; returns the status and frees everything. */
static ly_status
parse_items(struct twl_item *items, size_t n, const char *const *fk, const struct ly_buf *fv, size_t nf, time_t now,
    struct ly_error *e)
{
	struct ly_buf msg = LY_BUF_INIT;
	lanyard_x509_context *ctx = NULL;
	twl_pack(items, n, fk, fv, nf, &msg);
	ly_status rc = wl_x509_context_parse(msg.data, msg.len, now, &ctx, e);
	if (rc == LY_OK)
		assert_non_null(ctx);
	else
		assert_null(ctx);
	lanyard_x509_context_free(ctx);
	ly_buf_free(&msg);
	for (size_t i = 0; i < n; i++)
		twl_item_free(&items[i]);
	return rc;
}

static void
test_accepts_good_response(void **state)
{
	struct fx *f = *state;
	struct twl_item it[2];
	struct ly_buf msg = LY_BUF_INIT;
	lanyard_x509_context *ctx = NULL;
	struct lanyard_error err;
	const char *fk[1] = { "spiffe://other.org" };

	good_item(f, &it[0], ID_WEB);
	strcpy(it[0].hint, "web");
	struct tu_spec s = twl_leaf_spec(&f->pki, ID_DB);
	twl_item_make(&it[1], &f->pki, ID_DB, &s, f->key2);
	strcpy(it[1].hint, "db");
	twl_pack(it, 2, fk, &f->other.root_der, 1, &msg);
	assert_int_equal(lanyard_x509_context_parse(msg.data, msg.len, TU_NOW, &ctx, &err), LANYARD_OK);

	assert_int_equal(lanyard_x509_context_svid_count(ctx), 2);
	const lanyard_x509_svid *sv = lanyard_x509_context_svid(ctx, 0);
	assert_string_equal(lanyard_x509_svid_id(sv), ID_WEB);
	assert_string_equal(lanyard_x509_svid_hint(sv), "web");
	assert_int_equal(sk_X509_num(lanyard_x509_svid_intermediates(sv)), 1);
	assert_int_equal(X509_check_private_key(lanyard_x509_svid_leaf(sv), lanyard_x509_svid_key(sv)), 1);
	assert_int_equal(lanyard_x509_svid_not_after(sv), TU_NOW + 3600);
	assert_null(lanyard_x509_context_svid(ctx, 2));
	assert_string_equal(lanyard_x509_svid_id(lanyard_x509_context_svid_by_hint(ctx, "db")), ID_DB);
	assert_null(lanyard_x509_context_svid_by_hint(ctx, "nope"));

	assert_int_equal(lanyard_x509_context_bundle_count(ctx), 2);
	assert_string_equal(lanyard_x509_context_bundle_td(ctx, 0), "example.org");
	assert_string_equal(lanyard_x509_context_bundle_td(ctx, 1), "other.org");
	assert_int_equal(sk_X509_num(lanyard_x509_context_bundle_certs(ctx, 0)), 1);
	assert_non_null(lanyard_x509_context_trust_store(ctx, "example.org"));
	assert_non_null(lanyard_x509_context_trust_store(ctx, "spiffe://other.org"));
	assert_null(lanyard_x509_context_trust_store(ctx, "third.org"));

	/* The context verifies a peer of either trust domain, and names it. */
	char id[LANYARD_SPIFFE_ID_MAX + 1];
	struct tu_spec ps = twl_leaf_spec(&f->other, "spiffe://other.org/peer");
	X509 *peer = tu_make(&ps, f->key2, f->other.inter, f->other.int_key);
	STACK_OF(X509) *inter = sk_X509_new_null();
	sk_X509_push(inter, f->other.inter);
	assert_int_equal(lanyard_x509_context_verify(ctx, peer, inter, TU_NOW, id, &err), LANYARD_OK);
	assert_string_equal(id, "spiffe://other.org/peer");
	/* Without its intermediate it does not chain. */
	assert_int_equal(lanyard_x509_context_verify(ctx, peer, NULL, TU_NOW, id, &err), LANYARD_E_UNTRUSTED);
	/* Expired at a later time. */
	assert_int_equal(lanyard_x509_context_verify(ctx, peer, inter, TU_NOW + 7200, id, &err), LANYARD_E_EXPIRED);
	sk_X509_free(inter);
	X509_free(peer);

	/* A reference outlives the first free. */
	lanyard_x509_context *ref = lanyard_x509_context_ref(ctx);
	lanyard_x509_context_free(ctx);
	assert_string_equal(lanyard_x509_svid_id(lanyard_x509_context_svid(ref, 0)), ID_WEB);
	lanyard_x509_context_free(ref);
	ly_buf_free(&msg);
	twl_item_free(&it[0]);
	twl_item_free(&it[1]);
}

static void
test_refuses_malformed(void **state)
{
	struct ly_error e;
	lanyard_x509_context *ctx = NULL;
	static const uint8_t garbage[] = { 0x0a, 0x05, 0x01 };

	assert_int_equal(wl_x509_context_parse(garbage, sizeof(garbage), TU_NOW, &ctx, &e), LY_E_INVALID);
	assert_null(ctx);
	/* An empty message is a response with no SVID. */
	assert_int_equal(wl_x509_context_parse(garbage, 0, TU_NOW, &ctx, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "no SVID"));
	/* One byte over LY_WL_RESPONSE_MAX, before anything is read. */
	uint8_t *big = calloc(1, (size_t)LY_WL_RESPONSE_MAX + 1);
	assert_non_null(big);
	assert_int_equal(wl_x509_context_parse(big, (size_t)LY_WL_RESPONSE_MAX + 1, TU_NOW, &ctx, &e), LY_E_LIMIT);
	assert_non_null(strstr(e.msg, "at most 67108864"));
	/* Over the old cap (4 MiB) but under the new one: read, and refused as what it is (tag 0). */
	assert_int_equal(wl_x509_context_parse(big, (size_t)4 * 1024 * 1024 + 1, TU_NOW, &ctx, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "malformed protobuf"));
	free(big);
}

static void
test_refuses_id_mismatch(void **state)
{
	struct fx *f = *state;
	struct twl_item it;
	struct ly_error e;

	good_item(f, &it, ID_WEB);
	strcpy(it.id, ID_DB); /* the agent names another ID than the certificate's */
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "does not match"));

	good_item(f, &it, ID_WEB);
	strcpy(it.id, "not an id");
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
}

static void
test_refuses_wrong_key(void **state)
{
	struct fx *f = *state;
	struct twl_item it;
	struct ly_error e;

	good_item(f, &it, ID_WEB);
	ly_buf_free_secret(&it.key);
	assert_true(ly_key_to_pkcs8_der(f->key2, &it.key, NULL) == LY_OK);
	assert_int_not_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_OK);

	good_item(f, &it, ID_WEB);
	it.key.data[it.key.len / 2] ^= 0xff; /* garbage */
	assert_int_not_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_OK);
	assert_non_null(strstr(e.msg, "x509_svid_key"));
}

static void
test_refuses_untrusted_and_expired(void **state)
{
	struct fx *f = *state;
	struct twl_item it;
	struct ly_error e;

	/* The bundle of another trust domain's root: refused for naming it. */
	good_item(f, &it, ID_WEB);
	ly_buf_free(&it.bundle);
	assert_true(ly_buf_set(&it.bundle, f->other.root_der.data, f->other.root_der.len, NULL) == LY_OK);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "authority of other.org"));
	/* Another root of the same trust domain: the chain does not verify. */
	struct twl_pki third;
	twl_pki_init(&third, "example.org", TU_NOW);
	good_item(f, &it, ID_WEB);
	ly_buf_free(&it.bundle);
	assert_true(ly_buf_set(&it.bundle, third.root_der.data, third.root_der.len, NULL) == LY_OK);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_UNTRUSTED);
	twl_pki_free(&third);

	good_item(f, &it, ID_WEB);
	ly_buf_free(&it.bundle);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "empty"));

	good_item(f, &it, ID_WEB);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW + 2 * 3600, &e), LY_E_EXPIRED);
	good_item(f, &it, ID_WEB);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW - 2 * 3600, &e), LY_E_EXPIRED);

	/* A chain with trailing bytes. */
	good_item(f, &it, ID_WEB);
	assert_true(ly_buf_append(&it.chain, "x", 1, 1 << 20, NULL) == LY_OK);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
	good_item(f, &it, ID_WEB);
	ly_buf_free(&it.chain);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
}

static void
test_refuses_bad_leaf(void **state)
{
	struct fx *f = *state;
	struct twl_item it;
	struct ly_error e;

	struct tu_spec s = twl_leaf_spec(&f->pki, ID_WEB);
	s.bc = TU_BC_TRUE; /* a CA as leaf */
	s.ku = "digitalSignature,keyCertSign";
	twl_item_make(&it, &f->pki, ID_WEB, &s, f->key);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);

	s = twl_leaf_spec(&f->pki, ID_WEB);
	s.uri2 = ID_DB; /* two URI SANs */
	twl_item_make(&it, &f->pki, ID_WEB, &s, f->key);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);

	s = twl_leaf_spec(&f->pki, "spiffe://other.org/web"); /* another trust domain, under our CA */
	twl_item_make(&it, &f->pki, "spiffe://other.org/web", &s, f->key);
	assert_int_equal(parse_items(&it, 1, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "authority of example.org, not of other.org"));
}

static void
test_refuses_response_rules(void **state)
{
	struct fx *f = *state;
	struct twl_item it[2];
	struct ly_error e;

	/* Duplicate hints. */
	good_item(f, &it[0], ID_WEB);
	good_item(f, &it[1], ID_DB);
	strcpy(it[0].hint, "h");
	strcpy(it[1].hint, "h");
	assert_int_equal(parse_items(it, 2, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "same hint"));
	/* Empty hints may repeat. */
	good_item(f, &it[0], ID_WEB);
	good_item(f, &it[1], ID_DB);
	assert_int_equal(parse_items(it, 2, NULL, NULL, 0, TU_NOW, &e), LY_OK);

	/* Two bundles for one trust domain. */
	good_item(f, &it[0], ID_WEB);
	good_item(f, &it[1], ID_DB);
	assert_true(ly_buf_append(&it[1].bundle, f->other.root_der.data, f->other.root_der.len, 1 << 20, NULL) == LY_OK);
	assert_int_equal(parse_items(it, 2, NULL, NULL, 0, TU_NOW, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "differs"));

	/* Federated bundles: key a trust domain ID, not our own, not twice, valid DER. */
	const char *fk_path[1] = { "spiffe://other.org/x" };
	good_item(f, &it[0], ID_WEB);
	assert_int_equal(parse_items(it, 1, fk_path, &f->other.root_der, 1, TU_NOW, &e), LY_E_INVALID);
	const char *fk_own[1] = { "spiffe://example.org" };
	good_item(f, &it[0], ID_WEB);
	assert_int_equal(parse_items(it, 1, fk_own, &f->other.root_der, 1, TU_NOW, &e), LY_E_INVALID);
	const char *fk_twice[2] = { "spiffe://other.org", "spiffe://other.org" };
	struct ly_buf two[2] = { f->other.root_der, f->other.root_der };
	good_item(f, &it[0], ID_WEB);
	assert_int_equal(parse_items(it, 1, fk_twice, two, 2, TU_NOW, &e), LY_E_INVALID);
	const char *fk_ok[1] = { "spiffe://other.org" };
	struct ly_buf junk = { .data = (uint8_t *)(uintptr_t)"junk", .len = 4 };
	good_item(f, &it[0], ID_WEB);
	assert_int_equal(parse_items(it, 1, fk_ok, &junk, 1, TU_NOW, &e), LY_E_INVALID);
	/* A leaf is not a CA: refused as a federated authority. */
	struct ly_buf leafder = LY_BUF_INIT;
	struct tu_spec s = twl_leaf_spec(&f->other, "spiffe://other.org/x");
	X509 *leaf = tu_make(&s, f->key, f->other.inter, f->other.int_key);
	tu_der(leaf, &leafder);
	good_item(f, &it[0], ID_WEB);
	assert_int_not_equal(parse_items(it, 1, fk_ok, &leafder, 1, TU_NOW, &e), LY_OK);
	X509_free(leaf);
	ly_buf_free(&leafder);
}

/* Heap bytes in use (glibc's count: a figure to print, not a bound to assert; 0 under valgrind). */
static size_t
heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

/*
 * A workload entitled to more SVIDs than the library once took (1,024)
 * in a response larger than it once took (4 MiB, gRPC's default): 1,300
 * SVIDs, each with its intermediate and key, and a bundle of its trust
 * domain's root and six other authorities (~4 KB a SVID), accepted whole.
 * integration.wapi_large fetches 3,000 from a real agent; here fewer, with
 * fat bundles (parsed once a response), keep the test quick under valgrind.
 */
static void
test_accepts_many_svids(void **state)
{
	struct fx *f = *state;
	enum { N = 1300, EXTRA_CAS = 6 };
	struct twl_item *it = calloc(N, sizeof(*it));
	X509SVID *sv = calloc(N, sizeof(*sv));
	X509SVID **svp = calloc(N, sizeof(*svp));
	X509SVIDResponse r;
	struct ly_buf msg = LY_BUF_INIT, extra = LY_BUF_INIT;
	lanyard_x509_context *ctx = NULL;
	struct ly_error e;
	char id[64];

	assert_non_null(it);
	assert_non_null(sv);
	assert_non_null(svp);
	/* More authorities of example.org, in every SVID's bundle. */
	for (int i = 0; i < EXTRA_CAS; i++) {
		struct ly_buf der = LY_BUF_INIT;
		EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
		struct tu_spec s = tu_ca_spec("spiffe://example.org");
		s.cn = "another root";
		s.not_before += f->pki.off;
		s.not_after += f->pki.off;
		X509 *ca = tu_make(&s, k, NULL, NULL);
		tu_der(ca, &der);
		assert_int_equal(ly_buf_append(&extra, der.data, der.len, 1 << 20, NULL), LY_OK);
		ly_buf_free(&der);
		X509_free(ca);
		EVP_PKEY_free(k);
	}
	x509_svidresponse__init(&r);
	for (size_t i = 0; i < N; i++) {
		(void)snprintf(id, sizeof(id), "spiffe://example.org/large/w%05zu", i);
		good_item(f, &it[i], id);
		assert_int_equal(ly_buf_append(&it[i].bundle, extra.data, extra.len, 1 << 20, NULL), LY_OK);
		x509_svid__init(&sv[i]);
		sv[i].spiffe_id = it[i].id;
		sv[i].hint = it[i].hint;
		sv[i].x509_svid = twl_bin(&it[i].chain);
		sv[i].x509_svid_key = twl_bin(&it[i].key);
		sv[i].bundle = twl_bin(&it[i].bundle);
		svp[i] = &sv[i];
	}
	r.n_svids = N;
	r.svids = svp;
	msg.len = x509_svidresponse__get_packed_size(&r);
	msg.data = malloc(msg.len);
	assert_non_null(msg.data);
	assert_int_equal(x509_svidresponse__pack(&r, msg.data), msg.len);
	/* Over both caps the library had: 1,024 SVIDs, 4 MiB (gRPC's default). */
	assert_true(N > 1024);
	assert_true(msg.len > 4 * 1024 * 1024);

	size_t h0 = heap_in_use();
	assert_int_equal(wl_x509_context_parse(msg.data, msg.len, TU_NOW, &ctx, &e), LY_OK);
	size_t h1 = heap_in_use();
	assert_int_equal(lanyard_x509_context_svid_count(ctx), N);
	assert_string_equal(lanyard_x509_svid_id(lanyard_x509_context_svid(ctx, 0)), "spiffe://example.org/large/w00000");
	assert_string_equal(lanyard_x509_svid_id(lanyard_x509_context_svid(ctx, N - 1)),
	    "spiffe://example.org/large/w01299");
	assert_int_equal(lanyard_x509_context_bundle_count(ctx), 1);
	assert_int_equal(sk_X509_num(lanyard_x509_context_bundle_certs(ctx, 0)), 1 + EXTRA_CAS);
	/* glibc's figure (valgrind's allocator does not report one). */
	if (h1 > h0)
		printf("%d SVIDs: a response of %zu bytes (%zu a SVID); the context holds ~%zu bytes a SVID\n", N,
		    msg.len, msg.len / N, (h1 - h0) / N);
	lanyard_x509_context_free(ctx);

	ly_buf_free_secret(&msg);
	ly_buf_free(&extra);
	for (size_t i = 0; i < N; i++)
		twl_item_free(&it[i]);
	free(svp);
	free(sv);
	free(it);
}

/* `n` copies of the 2-byte field {tag, 0} (an empty element of a repeated field). */
static uint8_t *
repeated_empty(uint8_t tag, size_t n, size_t *len)
{
	uint8_t *b = malloc(2 * n);
	assert_non_null(b);
	for (size_t i = 0; i < n; i++) {
		b[2 * i] = tag;
		b[2 * i + 1] = 0;
	}
	*len = 2 * n;
	return b;
}

/* The caps, checked before anything is unpacked or verified. */
static void
test_refuses_over_caps(void **state)
{
	(void)state;
	lanyard_x509_context *ctx = NULL;
	struct ly_error e;
	size_t len;
	uint8_t *b;

	/* LY_WL_SVIDS_MAX empty SVIDs pass the count (and fail as SVIDs); one more does not. */
	b = repeated_empty(0x0a, LY_WL_SVIDS_MAX, &len);
	assert_int_equal(wl_x509_context_parse(b, len, TU_NOW, &ctx, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "SVID 0"));
	free(b);
	b = repeated_empty(0x0a, LY_WL_SVIDS_MAX + 1, &len);
	assert_int_equal(wl_x509_context_parse(b, len, TU_NOW, &ctx, &e), LY_E_LIMIT);
	assert_string_equal(e.msg, "X509SVIDResponse: SVIDs: more than 65536");
	assert_null(ctx);
	free(b);

	/* CRLs (ignored) and federated bundles: at most LY_BUNDLE_SET_MAX each. */
	b = repeated_empty(0x12, LY_BUNDLE_SET_MAX + 1, &len);
	assert_int_equal(wl_x509_context_parse(b, len, TU_NOW, &ctx, &e), LY_E_LIMIT);
	assert_non_null(strstr(e.msg, "CRLs: more than"));
	free(b);
	b = repeated_empty(0x1a, LY_BUNDLE_SET_MAX + 1, &len);
	assert_int_equal(wl_x509_context_parse(b, len, TU_NOW, &ctx, &e), LY_E_LIMIT);
	assert_non_null(strstr(e.msg, "federated bundles: more than"));
	free(b);

	/* Wire damage in a later element: refused before anything is unpacked. */
	static const uint8_t cut[] = { 0x0a, 0x00, 0x0a, 0x05, 0x0a };
	assert_int_equal(wl_x509_context_parse(cut, sizeof(cut), TU_NOW, &ctx, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "malformed protobuf"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accepts_good_response),
		cmocka_unit_test(test_accepts_many_svids),
		cmocka_unit_test(test_refuses_over_caps),
		cmocka_unit_test(test_refuses_malformed),
		cmocka_unit_test(test_refuses_id_mismatch),
		cmocka_unit_test(test_refuses_wrong_key),
		cmocka_unit_test(test_refuses_untrusted_and_expired),
		cmocka_unit_test(test_refuses_bad_leaf),
		cmocka_unit_test(test_refuses_response_rules),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
