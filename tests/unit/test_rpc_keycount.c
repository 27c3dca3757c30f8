/*
 * test_rpc_keycount.c: per-key counts with a cap (rpc/keycount.h): take up
 * to the cap and no further, give back, entries gone at zero, growth over
 * many keys, hostile key lengths, and the address part of gRPC peer strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "rpc/keycount.h"

static void
test_take_to_cap_and_give(void **state)
{
	struct ly_keycount t = LY_KEYCOUNT_INIT;

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(ly_keycount_take(&t, "a", 1, 3, NULL), LY_OK);
	assert_int_equal(ly_keycount_take(&t, "a", 1, 3, NULL), LY_E_LIMIT); /* one too many */
	assert_int_equal(ly_keycount_get(&t, "a", 1), 3);
	assert_int_equal(ly_keycount_take(&t, "b", 1, 3, NULL), LY_OK); /* another key is apart */
	assert_int_equal(ly_keycount_get(&t, "ab", 2), 0);
	assert_true(ly_keycount_give(&t, "a", 1));
	assert_int_equal(ly_keycount_take(&t, "a", 1, 3, NULL), LY_OK);
	for (int i = 0; i < 3; i++)
		assert_true(ly_keycount_give(&t, "a", 1));
	assert_false(ly_keycount_give(&t, "a", 1)); /* gone at zero */
	assert_int_equal(t.nentries, 1);
	assert_int_equal(ly_keycount_take(&t, "c", 1, 0, NULL), LY_E_LIMIT); /* cap 0 */
	assert_int_equal(t.nentries, 1);
	ly_keycount_cleanup(&t);
	assert_int_equal(t.nentries, 0);
	assert_false(ly_keycount_give(&t, "b", 1));
}

static void
test_many_keys_grow(void **state)
{
	struct ly_keycount t = LY_KEYCOUNT_INIT;
	char k[32];

	(void)state;
	for (int i = 0; i < 5000; i++) {
		int n = snprintf(k, sizeof(k), "ipv4:10.0.%d.%d", i / 256, i % 256);
		assert_int_equal(ly_keycount_take(&t, k, (size_t)n, 2, NULL), LY_OK);
	}
	assert_int_equal(t.nentries, 5000);
	assert_true(t.nbuckets >= 5000);
	for (int i = 0; i < 5000; i++) {
		int n = snprintf(k, sizeof(k), "ipv4:10.0.%d.%d", i / 256, i % 256);
		assert_int_equal(ly_keycount_get(&t, k, (size_t)n), 1);
		assert_true(ly_keycount_give(&t, k, (size_t)n));
	}
	assert_int_equal(t.nentries, 0);
	ly_keycount_cleanup(&t);
}

static void
test_key_lengths(void **state)
{
	struct ly_keycount t = LY_KEYCOUNT_INIT;
	char big[LY_KEYCOUNT_KEY_MAX + 1];
	uint32_t uid = 0;

	(void)state;
	memset(big, 'x', sizeof(big));
	assert_int_equal(ly_keycount_take(&t, big, LY_KEYCOUNT_KEY_MAX, 1, NULL), LY_OK);
	assert_int_equal(ly_keycount_take(&t, big, LY_KEYCOUNT_KEY_MAX + 1, 1, NULL), LY_E_LIMIT);
	assert_int_equal(ly_keycount_take(&t, "", 0, 1, NULL), LY_OK); /* the empty key is a key */
	assert_int_equal(ly_keycount_take(&t, &uid, sizeof(uid), 1, NULL), LY_OK); /* binary */
	assert_int_equal(ly_keycount_take(&t, &uid, sizeof(uid), 1, NULL), LY_E_LIMIT);
	ly_keycount_cleanup(&t);
}

static void
check_addr(const char *peer, const char *want)
{
	size_t len;

	ly_keycount_peer_addr(peer, &len);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(peer, want, len);
}

static void
test_peer_addr(void **state)
{
	(void)state;
	check_addr("ipv4:10.0.0.1:5000", "ipv4:10.0.0.1");
	check_addr("ipv6:[::1]:5000", "ipv6:[::1]");
	check_addr("ipv6:[fe80::1%eth0]:443", "ipv6:[fe80::1%eth0]");
	check_addr("ipv6:[::1]", "ipv6:[::1]");
	check_addr("fd:12", "fd:12");
	check_addr("unix:", "unix:");
	check_addr("ipv4:", "ipv4:");
	check_addr("", "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_take_to_cap_and_give),
		cmocka_unit_test(test_many_keys_grow),
		cmocka_unit_test(test_key_lengths),
		cmocka_unit_test(test_peer_addr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
