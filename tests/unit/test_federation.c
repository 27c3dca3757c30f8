/*
 * test_federation.c: the pure parts of server federation (server/federation.h):
 * server.federation config (both profiles, relationships keyed by trust
 * domain, every refusal with its key), bundle_endpoint_url parsing, the
 * refresh schedule's bounds and jitter, the checks of a fetched answer
 * (status, head, Content-Length, size caps, a bundle of another trust
 * domain, sequence going back) and the endpoint's routing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "server/federation.h"
#include "testutil_x509.h"

/* ---- config ---- */

static ly_status
load_fed(const char *yaml, struct ly_fed_config *out, struct ly_config **file, struct ly_error *e)
{
	ly_error_clear(e);
	*file = NULL;
	if (ly_config_load_buf("t.yaml", yaml, strlen(yaml), file, e) != LY_OK)
		return LY_E_INVALID;
	ly_status rc = ly_config_check_known(*file, ly_fed_config_keys, e);
	if (rc == LY_OK)
		rc = ly_fed_config_load(*file, "a.test", out, e);
	return rc;
}

static void
refused(const char *yaml, const char *part)
{
	struct ly_fed_config c;
	struct ly_config *f;
	struct ly_error e;
	ly_status rc = load_fed(yaml, &c, &f, &e);
	if (rc == LY_OK || strstr(e.msg, part) == NULL)
		fail_msg("expected a refusal with \"%s\", got %d \"%s\"", part, rc, e.msg);
	ly_config_free(f);
}

static void
test_config_defaults(void **state)
{
	struct ly_fed_config c;
	struct ly_config *f;
	struct ly_error e;
	assert_int_equal(load_fed("server:\n  log_level: info\n", &c, &f, &e), LY_E_INVALID); /* not ours */
	ly_config_free(f);
	assert_int_equal(load_fed("server: {}\n", &c, &f, &e), LY_OK);
	assert_false(c.endpoint.enabled);
	assert_int_equal(c.n_rels, 0);
	assert_string_equal(c.web_ca_file, LY_FED_SYSTEM_CA_FILE);
	ly_fed_config_cleanup(&c);
	ly_config_free(f);

	assert_int_equal(load_fed("server:\n  federation:\n    bundle_endpoint: {}\n", &c, &f, &e), LY_OK);
	assert_true(c.endpoint.enabled);
	assert_int_equal(c.endpoint.profile, LY_FED_PROFILE_HTTPS_SPIFFE);
	assert_int_equal(c.endpoint.port, 8443);
	assert_string_equal(c.endpoint.address, "0.0.0.0");
	assert_int_equal(c.endpoint.refresh_hint, LY_FED_REFRESH_HINT_DEFAULT);
	ly_fed_config_cleanup(&c);
	ly_config_free(f);
}

static const char full[] =
    "server:\n"
    "  federation:\n"
    "    bundle_endpoint:\n"
    "      address: 127.0.0.1\n"
    "      port: 9443\n"
    "      refresh_hint: 1m\n"
    "      profile:\n"
    "        https_web:\n"
    "          serving_cert_file:\n"
    "            cert_file_path: /x/cert.pem\n"
    "            key_file_path: /x/key.pem\n"
    "    https_web_ca_file: /x/ca.pem\n"
    "    federates_with:\n"
    "      \"b.test\":\n"
    "        bundle_endpoint_url: https://127.0.0.1:8443\n"
    "        bundle_endpoint_profile:\n"
    "          https_spiffe:\n"
    "            endpoint_spiffe_id: spiffe://b.test/lanyard/server\n"
    "      \"c.example.org\":\n"
    "        bundle_endpoint_url: https://bundles.example.org/c\n"
    "        bundle_endpoint_profile:\n"
    "          https_web: {}\n";

static void
test_config_full(void **state)
{
	struct ly_fed_config c;
	struct ly_config *f;
	struct ly_error e;
	if (load_fed(full, &c, &f, &e) != LY_OK)
		fail_msg("%s", e.msg);
	assert_true(c.endpoint.enabled);
	assert_int_equal(c.endpoint.profile, LY_FED_PROFILE_HTTPS_WEB);
	assert_int_equal(c.endpoint.port, 9443);
	assert_int_equal(c.endpoint.refresh_hint, 60);
	assert_string_equal(c.endpoint.cert_file_path, "/x/cert.pem");
	assert_string_equal(c.endpoint.key_file_path, "/x/key.pem");
	assert_string_equal(c.web_ca_file, "/x/ca.pem");
	assert_int_equal(c.n_rels, 2);
	assert_string_equal(c.rels[0].trust_domain, "b.test");
	assert_int_equal(c.rels[0].profile, LY_FED_PROFILE_HTTPS_SPIFFE);
	assert_string_equal(c.rels[0].endpoint_id.id, "spiffe://b.test/lanyard/server");
	assert_string_equal(c.rels[1].trust_domain, "c.example.org");
	assert_int_equal(c.rels[1].profile, LY_FED_PROFILE_HTTPS_WEB);
	assert_string_equal(c.rels[1].url, "https://bundles.example.org/c");
	ly_fed_config_cleanup(&c);
	ly_config_free(f);
}

static void
test_config_refusals(void **state)
{
	refused("server:\n  federation:\n    bundle_endpoint:\n      address: localhost\n",
	    "key server.federation.bundle_endpoint.address");
	refused("server:\n  federation:\n    bundle_endpoint:\n      port: 0\n", "bundle_endpoint.port");
	refused("server:\n  federation:\n    bundle_endpoint:\n      refresh_hint: 2d\n", "between 1 and 86400");
	refused("server:\n  federation:\n    bundle_endpoint:\n      profile: {}\n", "https_spiffe: {} or https_web");
	refused("server:\n  federation:\n    bundle_endpoint:\n      profile:\n        https_spiffe: {}\n"
		"        https_web: {}\n", "give one profile");
	refused("server:\n  federation:\n    bundle_endpoint:\n      profile:\n        https_web: {}\n",
	    "needs serving_cert_file");
	refused("server:\n  federation:\n    bundle_endpoint:\n      portt: 1\n", "unknown key");
	/* Relationships. */
	refused("server:\n  federation:\n    federates_with:\n      \"b.test\": {}\n", "needs bundle_endpoint_url");
	refused("server:\n  federation:\n    federates_with:\n      \"a.test\":\n        bundle_endpoint_url: https://x\n",
	    "our own trust domain");
	refused("server:\n  federation:\n    federates_with:\n      \"B.test\":\n        bundle_endpoint_url: https://x\n",
	    "federates_with.B.test");
	refused("server:\n  federation:\n    federates_with:\n      \"b.test\":\n        bundle_endpoint_url: http://x\n"
		"        bundle_endpoint_profile:\n          https_web: {}\n", "must start with https://");
	refused("server:\n  federation:\n    federates_with:\n      \"b.test\":\n        bundle_endpoint_url: https://x\n",
	    "needs bundle_endpoint_profile");
	refused("server:\n  federation:\n    federates_with:\n      \"b.test\":\n        bundle_endpoint_url: https://x\n"
		"        bundle_endpoint_profile:\n          https_spiffe: {}\n", "needs endpoint_spiffe_id");
	refused("server:\n  federation:\n    federates_with:\n      \"b.test\":\n        bundle_endpoint_url: https://x\n"
		"        bundle_endpoint_profile:\n          https_spiffe:\n            endpoint_spiffe_id: b.test\n",
	    "endpoint_spiffe_id");
	refused("server:\n  federation:\n    federates_with:\n      \"b.test\":\n        bundle_endpoint_url: https://x\n"
		"        url: https://y\n        bundle_endpoint_profile:\n          https_web: {}\n",
	    "unknown key server.federation.federates_with.b.test.url");
}

static void
test_url(void **state)
{
	struct ly_fed_url u;
	struct ly_error e;
	assert_int_equal(ly_fed_url_parse("https://127.0.0.1:8443", &u, &e), LY_OK);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 8443);
	assert_string_equal(u.path, "/");
	assert_true(u.host_is_ip);
	assert_int_equal(ly_fed_url_parse("https://[::1]/b", &u, &e), LY_OK);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 443);
	assert_string_equal(u.path, "/b");
	assert_int_equal(ly_fed_url_parse("https://example.org/x/y", &u, &e), LY_OK);
	assert_false(u.host_is_ip);
	const char *bad[] = { "http://x", "https://", "https://x:0", "https://x:65536", "https://x:01",
		"https://u@x", "https://x/?q", "https://x/#f", "https://x y", "https://[::1", "https://[zz]/",
		"https://x_y", "https://x:8a", "HTTPS://x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ly_fed_url_parse(bad[i], &u, &e) == LY_OK)
			fail_msg("accepted %s", bad[i]);
}

static void
test_schedule(void **state)
{
	/* hint/4, 5 min/4 without a hint. */
	assert_int_equal(ly_fed_next_fetch_ms(300, 0), 75000);
	assert_int_equal(ly_fed_next_fetch_ms(0, 0), 75000);
	assert_int_equal(ly_fed_next_fetch_ms(8, 0), 2000);
	/* Floor and ceiling. */
	assert_int_equal(ly_fed_next_fetch_ms(1, 0), LY_FED_FETCH_MIN_S * 1000);
	assert_int_equal(ly_fed_next_fetch_ms(UINT64_MAX, 0), LY_FED_FETCH_MAX_S * 1000);
	assert_int_equal(ly_fed_next_fetch_ms(10 * 86400, 0), LY_FED_FETCH_MAX_S * 1000);
	/* Jitter only shortens, by at most LY_FED_FETCH_JITTER_PCT %. */
	assert_int_equal(ly_fed_next_fetch_ms(400, 1000), 100000 - 10000);
	assert_int_equal(ly_fed_next_fetch_ms(400, 5000), 100000 - 10000);
	assert_in_range(ly_fed_next_fetch_ms(400, 500), 90000, 100000);
}

/* ---- answers ---- */

struct pki {
	EVP_PKEY *key;
	X509 *ca;
	struct ly_buf der;
};

static void
pki_make(struct pki *p, const char *uri)
{
	struct tu_spec s = tu_ca_spec(uri);
	s.not_before = -3600;
	s.not_after = 10L * 365 * 86400; /* valid now, whatever TU_NOW is */
	p->key = tu_ec_key("P-256");
	p->ca = tu_make(&s, p->key, NULL, NULL);
	memset(&p->der, 0, sizeof(p->der));
	tu_der(p->ca, &p->der);
}

static void
pki_free(struct pki *p)
{
	EVP_PKEY_free(p->key);
	X509_free(p->ca);
	ly_buf_free(&p->der);
}

/* A bundle of trust domain `td` holding `p`'s CA, as JSON. */
static char *
bundle_json(const char *td, const struct pki *p, uint64_t seq)
{
	struct ly_bundle *b;
	struct ly_error e;
	char *json;
	assert_int_equal(ly_bundle_new(td, &b, &e), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, p->der.data, p->der.len, &e), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "kid1", p->key, &e), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, seq, &e), LY_OK);
	assert_int_equal(ly_bundle_update_refresh_hint(b, 20, &e), LY_OK);
	assert_int_equal(ly_bundle_write_jwks(b, 0, &json, &e), LY_OK);
	ly_bundle_free(b);
	return json;
}

static char *
http(const char *status, const char *extra, const char *body, long content_length)
{
	size_t n = strlen(body) + 512;
	char *out = malloc(n);
	assert_non_null(out);
	char cl[64] = "";
	if (content_length == -2)
		content_length = (long)strlen(body);
	if (content_length >= 0)
		snprintf(cl, sizeof(cl), "Content-Length: %ld\r\n", content_length);
	snprintf(out, n, "HTTP/1.1 %s\r\nContent-Type: application/json\r\n%s%s\r\n%s", status, cl, extra, body);
	return out;
}

static ly_status
check(const char *td, const char *resp, const struct ly_bundle *prev, struct ly_bundle **out,
    enum ly_fed_refusal *why, struct ly_error *e)
{
	return ly_fed_check_response(td, (const uint8_t *)resp, strlen(resp), prev, out, why, e);
}

static void
expect_refusal(const char *td, const char *resp, const struct ly_bundle *prev, enum ly_fed_refusal want)
{
	struct ly_bundle *b = NULL;
	enum ly_fed_refusal why;
	struct ly_error e;
	if (check(td, resp, prev, &b, &why, &e) == LY_OK)
		fail_msg("accepted: %.80s", resp);
	assert_null(b);
	if (why != want)
		fail_msg("refused as %s, not %s: %s", ly_fed_refusal_name(why), ly_fed_refusal_name(want), e.msg);
	assert_true(e.msg[0] != '\0');
}

static void
test_response(void **state)
{
	struct pki b, c, plain;
	pki_make(&b, "spiffe://b.test");
	pki_make(&c, "spiffe://c.test");
	pki_make(&plain, NULL);
	char *jb = bundle_json("b.test", &b, 5), *jc = bundle_json("b.test", &c, 5), *jp = bundle_json("b.test", &plain, 5);
	struct ly_bundle *got = NULL;
	enum ly_fed_refusal why;
	struct ly_error e;

	/* Good: with and without Content-Length; a CA without a SPIFFE ID is accepted. */
	char *r = http("200 OK", "", jb, -2);
	assert_int_equal(check("b.test", r, NULL, &got, &why, &e), LY_OK);
	assert_string_equal(ly_bundle_trust_domain(got), "b.test");
	assert_int_equal(ly_bundle_sequence(got), 5);
	assert_int_equal(ly_bundle_refresh_hint(got), 20);
	assert_int_equal(ly_bundle_x509_authority_count(got), 1);
	assert_int_equal(ly_bundle_jwt_authority_count(got), 1);
	/* The same sequence again is fine; a lower one is stale. */
	struct ly_bundle *again = NULL;
	assert_int_equal(check("b.test", r, got, &again, &why, &e), LY_OK);
	ly_bundle_free(again);
	free(r);
	r = http("200 OK", "", jp, -1);
	assert_int_equal(check("b.test", r, NULL, &again, &why, &e), LY_OK);
	ly_bundle_free(again);
	free(r);
	char *j4 = bundle_json("b.test", &b, 4);
	r = http("200 OK", "", j4, -2);
	expect_refusal("b.test", r, got, LY_FED_R_STALE);
	free(r);
	free(j4);

	/* Another domain's CA served as b.test's: never merged. */
	r = http("200 OK", "", jc, -2);
	expect_refusal("b.test", r, NULL, LY_FED_R_DOMAIN);
	free(r);

	/* HTTP. */
	r = http("500 Internal Server Error", "", jb, -2);
	expect_refusal("b.test", r, NULL, LY_FED_R_HTTP);
	free(r);
	r = http("200 OK", "", jb, 3);
	expect_refusal("b.test", r, NULL, LY_FED_R_HTTP);
	free(r);
	r = http("200 OK", "Transfer-Encoding: chunked\r\n", jb, -1);
	expect_refusal("b.test", r, NULL, LY_FED_R_HTTP);
	free(r);
	r = http("200 OK", "Content-Length: 1\r\n", jb, -2);
	expect_refusal("b.test", r, NULL, LY_FED_R_HTTP);
	free(r);
	expect_refusal("b.test", "", NULL, LY_FED_R_HTTP);
	expect_refusal("b.test", "HTTP/1.1 200 OK\r\n", NULL, LY_FED_R_HTTP);
	expect_refusal("b.test", "HTTP/1.1 200 OK\nContent-Length: 2\n\n{}", NULL, LY_FED_R_HTTP);
	expect_refusal("b.test", "HTTP/2 200 OK\r\n\r\n{}", NULL, LY_FED_R_HTTP);
	expect_refusal("b.test", "HTTP/1.1 2000 OK\r\n\r\n{\"keys\":[]}", NULL, LY_FED_R_HTTP);
	struct ly_bundle *bare = NULL;
	assert_int_equal(check("b.test", "HTTP/1.1 200\r\n\r\n{\"keys\":[]}", NULL, &bare, &why, &e), LY_OK);
	ly_bundle_free(bare);
	expect_refusal("b.test", "HTTP/1.1 200 OK\r\n bad: x\r\n\r\n{}", NULL, LY_FED_R_HTTP);

	/* Garbage bodies. */
	r = http("200 OK", "", "<html>hello</html>", -2);
	expect_refusal("b.test", r, NULL, LY_FED_R_BUNDLE);
	free(r);
	r = http("200 OK", "", "{\"keys\":[{\"kty\":\"oct\",\"use\":\"jwt-svid\",\"kid\":\"a\",\"k\":\"AAAA\"}]}", -2);
	expect_refusal("b.test", r, NULL, LY_FED_R_BUNDLE);
	free(r);

	/* Oversized: a body over LY_JWKS_MAX, an answer over LY_FED_RESPONSE_MAX. */
	size_t big = LY_JWKS_MAX + 10;
	char *pad = malloc(big + 1);
	assert_non_null(pad);
	memset(pad, ' ', big);
	pad[0] = '{';
	memcpy(pad + big - 11, "\"keys\":[]}", 10);
	pad[big - 1] = ' ';
	pad[big] = '\0';
	r = http("200 OK", "", pad, -2);
	expect_refusal("b.test", r, NULL, LY_FED_R_OVERSIZED);
	free(r);
	enum ly_fed_refusal w;
	assert_int_not_equal(ly_fed_check_response("b.test", (const uint8_t *)pad, LY_FED_RESPONSE_MAX + 1, NULL, &again,
				 &w, &e), LY_OK);
	assert_int_equal(w, LY_FED_R_OVERSIZED);
	free(pad);

	ly_bundle_free(got);
	free(jb);
	free(jc);
	free(jp);
	pki_free(&b);
	pki_free(&c);
	pki_free(&plain);
}

static void
test_route(void **state)
{
#define R(s) ly_fed_route_request(s, strlen(s))
	assert_int_equal(R("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), LY_FED_ROUTE_BUNDLE);
	assert_int_equal(R("GET / HTTP/1.0\r\n\r\n"), LY_FED_ROUTE_BUNDLE);
	assert_int_equal(R("GET / HTTP/1.1\r\nHost: x\r\n"), LY_FED_ROUTE_NEED_MORE);
	assert_int_equal(R("GET /x HTTP/1.1\r\n\r\n"), LY_FED_ROUTE_NOT_FOUND);
	assert_int_equal(R("POST / HTTP/1.1\r\n\r\n"), LY_FED_ROUTE_METHOD);
	assert_int_equal(R("GET / HTTP/1.1\nHost: x\n\n"), LY_FED_ROUTE_BAD_REQUEST);
	assert_int_equal(R("GET http://x/ HTTP/1.1\r\n\r\n"), LY_FED_ROUTE_BAD_REQUEST);
#undef R
	char big[LY_HTTP_REQUEST_MAX + 64];
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
	assert_int_equal(ly_fed_route_request(big, sizeof(big)), LY_FED_ROUTE_TOO_LARGE);
	int code;
	const char *reason;
	ly_fed_route_status(LY_FED_ROUTE_METHOD, &code, &reason);
	assert_int_equal(code, 405);
	ly_fed_route_status(LY_FED_ROUTE_TOO_LARGE, &code, &reason);
	assert_int_equal(code, 431);
	for (int i = 0; i < LY_FED_R_COUNT; i++)
		assert_string_not_equal(ly_fed_refusal_name((enum ly_fed_refusal)i), "unknown");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_defaults),
		cmocka_unit_test(test_config_full),
		cmocka_unit_test(test_config_refusals),
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_schedule),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_route),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
