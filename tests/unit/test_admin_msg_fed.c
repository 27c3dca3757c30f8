/*
 * test_admin_msg_fed.c: server/admin_msg_fed.h, the Admin API's federation
 * requests as the server decodes and checks them: malformed bytes, trust
 * domains in both forms and our own refused, bundles in both formats,
 * empty, oversized, garbage, with a NUL, or holding another trust domain's
 * CA; delete modes; relationships (URL, profile, endpoint ID, bootstrap
 * bundle); the messages the CLI shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "admin.pb-c.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "server/admin_msg_fed.h"
#include "testutil_x509.h"

#define TD "example.org"

static uint8_t *
pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(protobuf_c_message_pack(m, b), *len);
	return b;
}

/* A CA certificate for `td` (its URI SAN spiffe://td, or none when td is NULL) as PEM; free(). */
static char *
ca_pem(const char *td, unsigned char seed)
{
	char uri[300];
	EVP_PKEY *key = tu_fixed_ec_key(seed);
	if (td != NULL)
		(void)snprintf(uri, sizeof(uri), "spiffe://%s", td);
	struct tu_spec spec = tu_ca_spec(td != NULL ? uri : NULL);
	X509 *x = tu_make(&spec, key, NULL, NULL);
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	assert_non_null(b);
	assert_int_equal(PEM_write_bio_X509(b, x), 1);
	long n = BIO_get_mem_data(b, &data);
	char *out = strndup(data, (size_t)n);
	assert_non_null(out);
	BIO_free(b);
	X509_free(x);
	EVP_PKEY_free(key);
	return out;
}

static char s_pem[] = "pem", s_spiffe[] = "spiffe", s_der[] = "der", s_empty[] = "";

static ly_status
set_check(const char *td, char *format, const void *data, size_t dlen, struct ly_bundle **out, struct ly_error *e)
{
	Lanyard__Admin__V1__SetFederatedBundleRequest m;
	Lanyard__Admin__V1__BundleData bd;
	struct ly_admin_msg_bundle_set rq;
	size_t len;

	lanyard__admin__v1__set_federated_bundle_request__init(&m);
	lanyard__admin__v1__bundle_data__init(&bd);
	m.trust_domain = (char *)(uintptr_t)td;
	bd.format = format;
	bd.data.data = (uint8_t *)(uintptr_t)data;
	bd.data.len = dlen;
	m.bundle = data != NULL ? &bd : NULL;
	uint8_t *b = pack(&m.base, &len);
	ly_status rc = ly_admin_msg_bundle_set_decode(b, len, &rq, e);
	*out = NULL;
	if (rc == LY_OK)
		rc = ly_admin_msg_bundle_set_check(&rq, TD, out, e);
	ly_admin_msg_bundle_set_cleanup(&rq);
	free(b);
	return rc;
}

static void
refuse_set(const char *td, char *format, const void *data, size_t dlen, ly_status want, const char *needle)
{
	struct ly_bundle *b = NULL;
	struct ly_error e;
	ly_error_clear(&e);
	ly_status rc = set_check(td, format, data, dlen, &b, &e);
	if (rc != want || strstr(e.msg, needle) == NULL || strchr(e.msg, '\n') != NULL)
		fail_msg("got %d '%s', want %d '%s'", rc, e.msg, want, needle);
	assert_null(b);
}

static void
test_bundle_set(void **state)
{
	static const uint8_t wrong_type[] = { 0x0a, 0x05, 'a' };
	struct ly_admin_msg_bundle_set rq;
	struct ly_bundle *b = NULL;
	struct ly_error e;
	char *b_pem = ca_pem("b.test", 1), *c_pem = ca_pem("c.test", 2), *none_pem = ca_pem(NULL, 3);

	assert_int_equal(ly_admin_msg_bundle_set_decode(wrong_type, sizeof(wrong_type), &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "malformed request");
	ly_admin_msg_bundle_set_cleanup(&rq);

	/* Both forms of the trust domain; PEM by default. */
	assert_int_equal(set_check("spiffe://b.test", s_empty, b_pem, strlen(b_pem), &b, &e), LY_OK);
	assert_string_equal(ly_bundle_trust_domain(b), "b.test");
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	/* The SPIFFE format, written from that bundle, reads back the same. */
	assert_int_equal(ly_bundle_update_sequence(b, 9, NULL), LY_OK);
	char *json = NULL;
	assert_int_equal(ly_bundle_write_jwks(b, 0, &json, NULL), LY_OK);
	struct ly_bundle *b2 = NULL;
	assert_int_equal(set_check("b.test", s_spiffe, json, strlen(json), &b2, &e), LY_OK);
	assert_true(ly_bundle_equal(b, b2));
	free(json);
	ly_bundle_free(b2);
	ly_bundle_free(b);
	b = NULL;
	/* A CA without a SPIFFE ID is taken (nothing says it is another trust domain's). */
	assert_int_equal(set_check("b.test", s_pem, none_pem, strlen(none_pem), &b, &e), LY_OK);
	ly_bundle_free(b);

	refuse_set(TD, s_pem, b_pem, strlen(b_pem), LY_E_INVALID, "our own trust domain");
	refuse_set("spiffe://" TD, s_pem, b_pem, strlen(b_pem), LY_E_INVALID, "our own trust domain");
	refuse_set("", s_pem, b_pem, strlen(b_pem), LY_E_INVALID, "a trust domain is required");
	refuse_set("B.test", s_pem, b_pem, strlen(b_pem), LY_E_INVALID, "");
	refuse_set("spiffe://b.test/path", s_pem, b_pem, strlen(b_pem), LY_E_INVALID, "");
	refuse_set("b.test", s_pem, c_pem, strlen(c_pem), LY_E_INVALID, "holds a CA certificate of trust domain c.test");
	refuse_set("b.test", s_der, b_pem, strlen(b_pem), LY_E_INVALID, "format must be pem or spiffe");
	refuse_set("b.test", s_pem, NULL, 0, LY_E_INVALID, "is missing");
	refuse_set("b.test", s_pem, "", 0, LY_E_INVALID, "is empty");
	refuse_set("b.test", s_pem, "garbage\n", 8, LY_E_INVALID, "bundle for b.test (pem)");
	refuse_set("b.test", s_spiffe, "{\"keys\":3}", 10, LY_E_INVALID, "bundle for b.test (spiffe)");
	refuse_set("b.test", s_spiffe, "{\"keys\":[]}", 11, LY_E_INVALID, "holds no authority");
	char nul[] = "-----BEGIN\0CERTIFICATE-----";
	refuse_set("b.test", s_pem, nul, sizeof(nul), LY_E_INVALID, "NUL");
	/* One byte over the JSON cap. */
	size_t big = (size_t)LY_JWKS_MAX + 1;
	char *huge = malloc(big);
	assert_non_null(huge);
	memset(huge, ' ', big);
	refuse_set("b.test", s_spiffe, huge, big, LY_E_LIMIT, "over");
	free(huge);
	free(b_pem);
	free(c_pem);
	free(none_pem);
	(void)state;
}

static void
test_td_and_delete(void **state)
{
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_error e;
	Lanyard__Admin__V1__DeleteFederatedBundleRequest m;
	struct ly_admin_msg_bundle_delete rq;
	enum ly_fed_delete_mode mode;
	size_t len;

	assert_int_equal(ly_admin_msg_td_check("spiffe://b.test", TD, td, &e), LY_OK);
	assert_string_equal(td, "b.test");
	assert_int_equal(ly_admin_msg_td_check(NULL, TD, td, &e), LY_E_INVALID);
	assert_int_equal(ly_admin_msg_td_check(TD, TD, td, &e), LY_E_INVALID);

	lanyard__admin__v1__delete_federated_bundle_request__init(&m);
	m.trust_domain = (char *)(uintptr_t)"b.test";
	uint8_t *b = pack(&m.base, &len);
	assert_int_equal(ly_admin_msg_bundle_delete_decode(b, len, &rq, &e), LY_OK);
	assert_int_equal(ly_admin_msg_bundle_delete_check(&rq, TD, td, &mode, &e), LY_OK);
	assert_int_equal(mode, LY_FED_DELETE_RESTRICT);
	ly_admin_msg_bundle_delete_cleanup(&rq);
	free(b);
	const char *modes[] = { "restrict", "dissociate", "delete" };
	for (int i = 0; i < 3; i++) {
		m.mode = (char *)(uintptr_t)modes[i];
		b = pack(&m.base, &len);
		assert_int_equal(ly_admin_msg_bundle_delete_decode(b, len, &rq, &e), LY_OK);
		assert_int_equal(ly_admin_msg_bundle_delete_check(&rq, TD, td, &mode, &e), LY_OK);
		assert_int_equal(mode, (enum ly_fed_delete_mode)i);
		assert_string_equal(ly_fed_delete_mode_name(mode), modes[i]);
		ly_admin_msg_bundle_delete_cleanup(&rq);
		free(b);
	}
	m.mode = (char *)(uintptr_t)"all";
	b = pack(&m.base, &len);
	assert_int_equal(ly_admin_msg_bundle_delete_decode(b, len, &rq, &e), LY_OK);
	assert_int_equal(ly_admin_msg_bundle_delete_check(&rq, TD, td, &mode, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "bundle delete mode must be restrict, dissociate or delete");
	ly_admin_msg_bundle_delete_cleanup(&rq);
	free(b);

	static const uint8_t bad[] = { 0xff };
	assert_int_equal(ly_admin_msg_empty_decode("count", bad, sizeof(bad), &e), LY_E_INVALID);
	assert_int_equal(ly_admin_msg_empty_decode("relationships", NULL, 0, &e), LY_OK);
	(void)state;
}

static ly_status
rel_check(const char *td, const char *url, const char *profile, const char *sid, const char *bundle_pem,
    struct ly_admin_msg_rel_checked *out, struct ly_error *e)
{
	Lanyard__Admin__V1__FederationRelationship m;
	Lanyard__Admin__V1__BundleData bd;
	struct ly_admin_msg_rel rq;
	size_t len;

	lanyard__admin__v1__federation_relationship__init(&m);
	lanyard__admin__v1__bundle_data__init(&bd);
	m.trust_domain = (char *)(uintptr_t)td;
	m.bundle_endpoint_url = (char *)(uintptr_t)url;
	m.bundle_endpoint_profile = (char *)(uintptr_t)profile;
	m.endpoint_spiffe_id = (char *)(uintptr_t)sid;
	if (bundle_pem != NULL) {
		bd.format = s_pem;
		bd.data.data = (uint8_t *)(uintptr_t)bundle_pem;
		bd.data.len = strlen(bundle_pem);
		m.trust_domain_bundle = &bd;
	}
	uint8_t *b = pack(&m.base, &len);
	ly_status rc = ly_admin_msg_rel_decode(b, len, &rq, e);
	if (rc == LY_OK)
		rc = ly_admin_msg_rel_check(&rq, TD, out, e);
	ly_admin_msg_rel_cleanup(&rq);
	free(b);
	return rc;
}

static void
refuse_rel(const char *td, const char *url, const char *profile, const char *sid, const char *bundle_pem,
    const char *needle)
{
	struct ly_admin_msg_rel_checked c;
	struct ly_error e;
	ly_error_clear(&e);
	ly_status rc = rel_check(td, url, profile, sid, bundle_pem, &c, &e);
	if (rc == LY_OK || strstr(e.msg, needle) == NULL)
		fail_msg("got %d '%s', want a refusal with '%s'", rc, e.msg, needle);
	ly_admin_msg_rel_checked_cleanup(&c);
}

static void
test_relationship(void **state)
{
	struct ly_admin_msg_rel_checked c;
	struct ly_error e;
	char *b_pem = ca_pem("b.test", 4), *c_pem = ca_pem("c.test", 5);

	assert_int_equal(rel_check("spiffe://b.test", "https://b.test:8443/bundle", "https_spiffe",
	    "spiffe://b.test/lanyard/server", b_pem, &c, &e), LY_OK);
	assert_string_equal(c.rel.trust_domain, "b.test");
	assert_int_equal(c.rel.profile, LY_FED_PROFILE_HTTPS_SPIFFE);
	assert_non_null(c.bundle);
	ly_admin_msg_rel_checked_cleanup(&c);
	assert_int_equal(rel_check("b.test", "https://b.test/", "https_web", "", NULL, &c, &e), LY_OK);
	assert_null(c.rel.endpoint_spiffe_id);
	assert_null(c.bundle);
	ly_admin_msg_rel_checked_cleanup(&c);

	refuse_rel(TD, "https://x/", "https_web", "", NULL, "our own trust domain");
	refuse_rel("b.test", "http://b.test/", "https_web", "", NULL, "must start with https://");
	refuse_rel("b.test", "", "https_web", "", NULL, "URL is missing");
	refuse_rel("b.test", "https://", "https_web", "", NULL, "no host");
	refuse_rel("b.test", "https://u:p@b.test/", "https_web", "", NULL, "user info");
	refuse_rel("b.test", "https://b.test/#x", "https_web", "", NULL, "fragment");
	refuse_rel("b.test", "https://b.test/a b", "https_web", "", NULL, "printable ASCII");
	refuse_rel("b.test", "https://b.test/", "", "", NULL, "profile is required");
	refuse_rel("b.test", "https://b.test/", "https", "", NULL, "https_spiffe or https_web");
	refuse_rel("b.test", "https://b.test/", "https_spiffe", "", NULL, "needs an endpoint SPIFFE ID");
	refuse_rel("b.test", "https://b.test/", "https_spiffe", "spiffe://B.test/x", NULL, "endpoint SPIFFE ID");
	refuse_rel("b.test", "https://b.test/", "https_web", "spiffe://b.test/x", NULL, "takes no endpoint SPIFFE ID");
	refuse_rel("b.test", "https://b.test/", "https_web", "", c_pem, "trust domain c.test");
	char *long_url = malloc(LY_FED_URL_MAX + 2);
	assert_non_null(long_url);
	memcpy(long_url, "https://b.test/", 15);
	memset(long_url + 15, 'a', LY_FED_URL_MAX + 1 - 15);
	long_url[LY_FED_URL_MAX + 1] = '\0';
	refuse_rel("b.test", long_url, "https_web", "", NULL, "longer than");
	long_url[LY_FED_URL_MAX] = '\0'; /* at the cap: taken */
	assert_int_equal(rel_check("b.test", long_url, "https_web", "", NULL, &c, &e), LY_OK);
	ly_admin_msg_rel_checked_cleanup(&c);
	free(long_url);
	free(b_pem);
	free(c_pem);
	(void)state;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bundle_set),
		cmocka_unit_test(test_td_and_delete),
		cmocka_unit_test(test_relationship),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
