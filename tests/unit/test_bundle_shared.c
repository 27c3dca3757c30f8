/*
 * test_bundle_shared.c: server/bundle_shared.h, the bundle of several
 * servers on one database: a CA's bundle to published rows (X.509 expiry
 * from notAfter, JWT expiry from the CA, unknown JWT expiry left out), the
 * union of two servers' rows (each authority once, the expired ones pruned,
 * the next expiry, a row that does not parse skipped and counted), the
 * sequence and hint given, row checks (empty, over the caps, no expiry),
 * and authority-set comparison in any order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/keys.h"
#include "server/bundle_shared.h"
#include "testutil_x509.h"

#define SRV_A "11111111-1111-4111-8111-111111111111"
#define SRV_B "22222222-2222-4222-8222-222222222222"

struct fx {
	EVP_PKEY *ka, *kb, *ja, *jb;
	struct ly_buf ra, rb; /* roots of servers A and B, DER */
	int64_t ra_not_after;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->ka = tu_key(LY_KEY_EC_P256);
	f->kb = tu_key(LY_KEY_EC_P256);
	f->ja = tu_key(LY_KEY_EC_P256);
	f->jb = tu_key(LY_KEY_EC_P256);
	struct tu_spec s = tu_ca_spec("spiffe://example.org");
	X509 *a = tu_make(&s, f->ka, NULL, NULL);
	X509 *b = tu_make(&s, f->kb, NULL, NULL);
	tu_der(a, &f->ra);
	tu_der(b, &f->rb);
	struct tm tm;
	assert_int_equal(ASN1_TIME_to_tm(X509_get0_notAfter(a), &tm), 1);
	f->ra_not_after = (int64_t)timegm(&tm);
	X509_free(a);
	X509_free(b);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	EVP_PKEY_free(f->ka);
	EVP_PKEY_free(f->kb);
	EVP_PKEY_free(f->ja);
	EVP_PKEY_free(f->jb);
	ly_buf_free(&f->ra);
	ly_buf_free(&f->rb);
	free(f);
	return 0;
}

static int64_t
expiry_of(void *arg, const char *kid)
{
	(void)arg;
	if (strcmp(kid, "kid-a") == 0)
		return 5000;
	return 0; /* unknown to the CA: not published */
}

static struct ly_bundle *
bundle_of(const struct ly_buf *root, const char *kid, EVP_PKEY *jwt, const char *kid2, EVP_PKEY *jwt2)
{
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_new("example.org", &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, root->data, root->len, NULL), LY_OK);
	if (kid != NULL)
		assert_int_equal(ly_bundle_add_jwt_authority(b, kid, jwt, NULL), LY_OK);
	if (kid2 != NULL)
		assert_int_equal(ly_bundle_add_jwt_authority(b, kid2, jwt2, NULL), LY_OK);
	return b;
}

static void
test_from_bundle(void **state)
{
	struct fx *f = *state;
	struct ly_shared_authorities rows = LY_SHARED_AUTHORITIES_INIT;
	struct ly_bundle *b = bundle_of(&f->ra, "kid-a", f->ja, "kid-unknown", f->jb);

	assert_int_equal(ly_shared_authorities_from_bundle(b, SRV_A, expiry_of, NULL, &rows, NULL), LY_OK);
	/* The root, and the one JWT key whose expiry the CA knows. */
	assert_int_equal(rows.n, 2);
	assert_false(rows.items[0].jwt);
	assert_string_equal(rows.items[0].server_id, SRV_A);
	assert_int_equal(strlen(rows.items[0].kid), 64); /* hex SHA-256 of the DER */
	assert_int_equal(rows.items[0].not_after, f->ra_not_after);
	assert_int_equal(rows.items[0].der.len, f->ra.len);
	assert_memory_equal(rows.items[0].der.data, f->ra.data, f->ra.len);
	assert_true(rows.items[1].jwt);
	assert_string_equal(rows.items[1].kid, "kid-a");
	assert_int_equal(rows.items[1].not_after, 5000);
	ly_shared_authorities_cleanup(&rows);
	assert_int_equal(rows.n, 0);
	ly_bundle_free(b);
}

static void
test_union_and_pruning(void **state)
{
	struct fx *f = *state;
	struct ly_shared_authorities rows = LY_SHARED_AUTHORITIES_INIT;
	struct ly_bundle *u = NULL;
	int64_t next = -1;
	size_t skipped = 9;
	unsigned char *ja = NULL, *jb = NULL;
	int na = i2d_PUBKEY(f->ja, &ja), nb = i2d_PUBKEY(f->jb, &jb);
	assert_true(na > 0 && nb > 0);

	/* Server A: root valid till 4000, JWT key till 3000. Server B: root till 2000, JWT key till 2500. */
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, "ra", f->ra.data, f->ra.len, 4000, NULL), LY_OK);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, true, "kid-a", ja, (size_t)na, 3000, NULL), LY_OK);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_B, false, "rb", f->rb.data, f->rb.len, 2000, NULL), LY_OK);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_B, true, "kid-b", jb, (size_t)nb, 2500, NULL), LY_OK);
	/* The same root published twice (a server restarted with a new ID, same data_dir copy): held once. */
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_B, false, "ra", f->ra.data, f->ra.len, 4000, NULL), LY_OK);

	assert_int_equal(ly_shared_bundle_union("example.org", &rows, 1000, 42, 300, &u, &next, &skipped, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(u), 2);
	assert_int_equal(ly_bundle_jwt_authority_count(u), 2);
	assert_int_equal(ly_bundle_sequence(u), 42);
	assert_int_equal(ly_bundle_refresh_hint(u), 300);
	assert_int_equal(next, 2000);
	assert_int_equal(skipped, 0);
	assert_non_null(ly_bundle_find_jwt_authority(u, "kid-b"));
	ly_bundle_free(u);

	/* At 2000, B's root is gone (not_after <= now); its JWT key is still there. */
	assert_int_equal(ly_shared_bundle_union("example.org", &rows, 2000, 43, 300, &u, &next, NULL, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(u), 1);
	assert_memory_equal(ly_bundle_x509_authority(u, 0)->data, f->ra.data, f->ra.len);
	assert_int_equal(ly_bundle_jwt_authority_count(u), 2);
	assert_int_equal(next, 2500);
	ly_bundle_free(u);

	/* B gone for longer than its CA's life: nothing of B is left. */
	assert_int_equal(ly_shared_bundle_union("example.org", &rows, 2600, 44, 300, &u, &next, NULL, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(u), 1);
	assert_int_equal(ly_bundle_jwt_authority_count(u), 1);
	assert_non_null(ly_bundle_find_jwt_authority(u, "kid-a"));
	assert_null(ly_bundle_find_jwt_authority(u, "kid-b"));
	assert_int_equal(next, 3000);
	ly_bundle_free(u);

	/* Everything expired: an empty union, no next expiry. */
	assert_int_equal(ly_shared_bundle_union("example.org", &rows, 4000, 45, 300, &u, &next, NULL, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(u) + ly_bundle_jwt_authority_count(u), 0);
	assert_int_equal(next, 0);
	ly_bundle_free(u);

	OPENSSL_free(ja);
	OPENSSL_free(jb);
	ly_shared_authorities_cleanup(&rows);
}

static void
test_bad_rows_skipped(void **state)
{
	struct fx *f = *state;
	struct ly_shared_authorities rows = LY_SHARED_AUTHORITIES_INIT;
	struct ly_bundle *u = NULL;
	size_t skipped = 0;
	const uint8_t junk[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };

	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, "ra", f->ra.data, f->ra.len, 4000, NULL), LY_OK);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_B, false, "junk", junk, sizeof(junk), 4000, NULL), LY_OK);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_B, true, "kid-junk", junk, sizeof(junk), 4000, NULL), LY_OK);
	/* One byte too many after a good certificate. */
	uint8_t *plus = malloc(f->rb.len + 1);
	assert_non_null(plus);
	memcpy(plus, f->rb.data, f->rb.len);
	plus[f->rb.len] = 0;
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_B, false, "plus", plus, f->rb.len + 1, 4000, NULL), LY_OK);
	free(plus);
	assert_int_equal(ly_shared_bundle_union("example.org", &rows, 1000, 1, 60, &u, NULL, &skipped, NULL), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(u), 1);
	assert_int_equal(ly_bundle_jwt_authority_count(u), 0);
	assert_int_equal(skipped, 3);
	ly_bundle_free(u);
	ly_shared_authorities_cleanup(&rows);
}

static void
test_row_checks(void **state)
{
	struct fx *f = *state;
	struct ly_shared_authorities rows = LY_SHARED_AUTHORITIES_INIT;
	struct ly_error err;
	char long_id[LY_SHARED_SERVER_ID_MAX + 2], long_kid[LY_SHARED_KID_MAX + 2];
	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	memset(long_kid, 'k', sizeof(long_kid) - 1);
	long_kid[sizeof(long_kid) - 1] = '\0';
	uint8_t *big = calloc(1, LY_CERT_DER_MAX + 1);
	assert_non_null(big);

	assert_int_equal(ly_shared_authorities_add(&rows, "", false, "k", f->ra.data, f->ra.len, 1, &err), LY_E_INVALID);
	assert_int_equal(ly_shared_authorities_add(&rows, long_id, false, "k", f->ra.data, f->ra.len, 1, &err),
	    LY_E_INVALID);
	long_id[LY_SHARED_SERVER_ID_MAX] = '\0'; /* exactly the cap: fine */
	assert_int_equal(ly_shared_authorities_add(&rows, long_id, false, "k", f->ra.data, f->ra.len, 1, &err), LY_OK);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, long_kid, f->ra.data, f->ra.len, 1, &err),
	    LY_E_INVALID);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, "a b", f->ra.data, f->ra.len, 1, &err),
	    LY_E_INVALID);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, "k", f->ra.data, 0, 1, &err), LY_E_LIMIT);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, "k", big, LY_CERT_DER_MAX + 1, 1, &err),
	    LY_E_LIMIT);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, "k", big, LY_CERT_DER_MAX, 1, &err), LY_OK);
	assert_int_equal(ly_shared_authorities_add(&rows, SRV_A, false, "k", f->ra.data, f->ra.len, 0, &err),
	    LY_E_INVALID);
	assert_non_null(strstr(err.msg, "expiry"));
	assert_int_equal(rows.n, 2);
	free(big);
	ly_shared_authorities_cleanup(&rows);
}

static void
test_same_authorities(void **state)
{
	struct fx *f = *state;
	struct ly_bundle *x = bundle_of(&f->ra, "kid-a", f->ja, NULL, NULL);
	struct ly_bundle *y = NULL;

	assert_int_equal(ly_bundle_new("example.org", &y, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_jwt_authority(y, "kid-a", f->ja, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(y, f->ra.data, f->ra.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(y, 99, NULL), LY_OK);
	assert_true(ly_shared_bundle_same_authorities(x, y)); /* sequence aside */
	assert_int_equal(ly_bundle_add_x509_authority(y, f->rb.data, f->rb.len, NULL), LY_OK);
	assert_false(ly_shared_bundle_same_authorities(x, y));
	ly_bundle_free(y);
	/* The same kid with another key is not the same. */
	y = bundle_of(&f->ra, "kid-a", f->jb, NULL, NULL);
	assert_false(ly_shared_bundle_same_authorities(x, y));
	assert_false(ly_shared_bundle_same_authorities(x, NULL));
	assert_true(ly_shared_bundle_same_authorities(NULL, NULL));
	ly_bundle_free(y);
	ly_bundle_free(x);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_from_bundle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_union_and_pruning, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_rows_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_row_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_authorities, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
