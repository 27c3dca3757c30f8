/*
 * test_bundle_pb.c: server/bundle_pb.h, the one bundle-to-protobuf
 * conversion of the admin and agent APIs: every field survives pack and
 * unpack, the X.509 DER is borrowed, the JWT key is its SubjectPublicKeyInfo,
 * expires_at is 0, an empty bundle is fine, and cleanup frees what the view
 * owns (ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "lib/bundle.h"
#include "lib/keys.h"
#include "server/bundle_pb.h"
#include "testutil_x509.h"

static void
test_round_trip(void **state)
{
	(void)state;
	struct ly_bundle *b = NULL;
	EVP_PKEY *ca_key = tu_key(LY_KEY_EC_P256), *jwt_key = tu_key(LY_KEY_EC_P256);
	struct tu_spec spec = tu_ca_spec("spiffe://example.org");
	X509 *ca = tu_make(&spec, ca_key, NULL, NULL);
	struct ly_buf der = LY_BUF_INIT;
	tu_der(ca, &der);
	assert_int_equal(ly_bundle_new("example.org", &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, der.data, der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(b, "k1", jwt_key, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, 7, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_refresh_hint(b, 300, NULL), LY_OK);

	struct ly_bundle_pb pb;
	assert_int_equal(ly_bundle_pb_make(b, &pb, NULL), LY_OK);
	/* The X.509 DER is the bundle's own, borrowed. */
	assert_ptr_equal(pb.msg.x509_authorities[0].data, ly_bundle_x509_authority(b, 0)->data);

	size_t n = protobuf_c_message_get_packed_size(&pb.msg.base);
	uint8_t *packed = malloc(n + 1);
	assert_non_null(packed);
	assert_int_equal(protobuf_c_message_pack(&pb.msg.base, packed), n);
	ly_bundle_pb_cleanup(&pb);

	Lanyard__Agent__V1__Bundle *m = lanyard__agent__v1__bundle__unpack(NULL, n, packed);
	assert_non_null(m);
	assert_string_equal(m->trust_domain, "example.org");
	assert_int_equal(m->n_x509_authorities, 1);
	assert_int_equal(m->x509_authorities[0].len, der.len);
	assert_memory_equal(m->x509_authorities[0].data, der.data, der.len);
	assert_int_equal(m->n_jwt_authorities, 1);
	assert_string_equal(m->jwt_authorities[0]->kid, "k1");
	assert_int_equal(m->jwt_authorities[0]->expires_at, 0);
	const unsigned char *p = m->jwt_authorities[0]->public_key.data;
	EVP_PKEY *got = d2i_PUBKEY(NULL, &p, (long)m->jwt_authorities[0]->public_key.len);
	assert_non_null(got);
	assert_int_equal(EVP_PKEY_eq(got, jwt_key), 1);
	assert_int_equal(m->sequence, 7);
	assert_int_equal(m->refresh_hint, 300);

	EVP_PKEY_free(got);
	lanyard__agent__v1__bundle__free_unpacked(m, NULL);
	free(packed);
	ly_buf_free(&der);
	ly_bundle_free(b);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(jwt_key);
}

static void
test_empty(void **state)
{
	(void)state;
	struct ly_bundle *b = NULL;
	struct ly_bundle_pb pb;

	assert_int_equal(ly_bundle_new("example.org", &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_pb_make(b, &pb, NULL), LY_OK);
	assert_string_equal(pb.msg.trust_domain, "example.org");
	assert_int_equal(pb.msg.n_x509_authorities, 0);
	assert_int_equal(pb.msg.n_jwt_authorities, 0);
	ly_bundle_pb_cleanup(&pb);
	ly_bundle_pb_cleanup(&pb); /* a cleaned-up view is fine */
	ly_bundle_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
