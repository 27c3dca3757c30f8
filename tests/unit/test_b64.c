/* test_b64.c: strict base64url (JWS) and base64 (x5c): one spelling per value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lib/b64.h"

/* RFC 4648 §10 test vectors, as base64url without padding and as padded base64. */
static const struct {
	const char *plain;
	const char *url;
	const char *std;
} vectors[] = {
	{ "", "", "" },
	{ "f", "Zg", "Zg==" },
	{ "fo", "Zm8", "Zm8=" },
	{ "foo", "Zm9v", "Zm9v" },
	{ "foob", "Zm9vYg", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy", "Zm9vYmFy" },
};

static void
test_vectors(void **state)
{
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const char *p = vectors[i].plain;
		char *s = NULL;
		assert_int_equal(ly_b64url_encode((const uint8_t *)p, strlen(p), &s, NULL), LY_OK);
		assert_string_equal(s, vectors[i].url);
		assert_int_equal(strlen(s), ly_b64url_encoded_len(strlen(p)));
		free(s);
		assert_int_equal(ly_b64_encode((const uint8_t *)p, strlen(p), &s, NULL), LY_OK);
		assert_string_equal(s, vectors[i].std);
		assert_int_equal(strlen(s), ly_b64_encoded_len(strlen(p)));
		free(s);

		struct ly_buf b = LY_BUF_INIT;
		assert_int_equal(ly_b64url_decode(vectors[i].url, strlen(vectors[i].url), &b, NULL), LY_OK);
		assert_int_equal(b.len, strlen(p));
		assert_memory_equal(b.data, p, b.len);
		ly_buf_free(&b);
		assert_int_equal(ly_b64_decode(vectors[i].std, strlen(vectors[i].std), &b, NULL), LY_OK);
		assert_int_equal(b.len, strlen(p));
		assert_memory_equal(b.data, p, b.len);
		ly_buf_free(&b);
	}
}

/* The two alphabets differ in 62 and 63: each decoder takes only its own. */
static void
test_alphabets(void **state)
{
	const uint8_t bytes[] = { 0xfb, 0xff, 0xbf };
	char *s = NULL;
	assert_int_equal(ly_b64url_encode(bytes, 3, &s, NULL), LY_OK);
	assert_string_equal(s, "-_-_");
	free(s);
	assert_int_equal(ly_b64_encode(bytes, 3, &s, NULL), LY_OK);
	assert_string_equal(s, "+/+/");
	free(s);

	struct ly_buf b = LY_BUF_INIT;
	struct ly_error err;
	assert_int_equal(ly_b64url_decode("+/+/", 4, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not in the alphabet"));
	assert_null(b.data);
	assert_int_equal(ly_b64_decode("-_-_", 4, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not in the alphabet"));
	assert_int_equal(ly_b64url_decode("-_-_", 4, &b, NULL), LY_OK);
	assert_memory_equal(b.data, bytes, 3);
	ly_buf_free(&b);
}

/* base64url in JWS has no padding (RFC 7515 §2). */
static void
test_url_refuses_padding(void **state)
{
	struct ly_buf b = LY_BUF_INIT;
	struct ly_error err;
	assert_int_equal(ly_b64url_decode("Zg==", 4, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "padding"));
	assert_int_equal(ly_b64url_decode("Zm8=", 4, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "padding"));
	assert_null(b.data);
}

static void
test_refuses_whitespace_and_junk(void **state)
{
	const char *bad[] = { "Zm9v YmFy", "Zm9v\nYmFy", "Zm9v\r\n", " Zm9v", "Zm9v\t", "Zm9v.", "Zm\x80v", "Zm9v!" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ly_buf b = LY_BUF_INIT;
		struct ly_error err;
		assert_int_equal(ly_b64url_decode(bad[i], strlen(bad[i]), &b, &err), LY_E_INVALID);
		assert_non_null(strstr(err.msg, "not in the alphabet"));
		assert_null(b.data);
		assert_int_not_equal(ly_b64_decode(bad[i], strlen(bad[i]), &b, NULL), LY_OK);
	}
	/* An embedded NUL is a byte like any other: refused, not a terminator. */
	struct ly_buf b = LY_BUF_INIT;
	assert_int_equal(ly_b64url_decode("Zm\0v", 4, &b, NULL), LY_E_INVALID);
}

/* 4n+1 characters cannot encode whole bytes. */
static void
test_refuses_impossible_length(void **state)
{
	struct ly_buf b = LY_BUF_INIT;
	struct ly_error err;
	assert_int_equal(ly_b64url_decode("Z", 1, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "whole number of bytes"));
	assert_int_equal(ly_b64url_decode("Zm9vY", 5, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "whole number of bytes"));
}

/* Unused low bits must be zero: "Zg" is "f", "Zh" would also be "f". */
static void
test_refuses_noncanonical_bits(void **state)
{
	struct ly_buf b = LY_BUF_INIT;
	struct ly_error err;
	assert_int_equal(ly_b64url_decode("Zh", 2, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "non-canonical"));
	assert_int_equal(ly_b64url_decode("Zm9", 3, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "non-canonical"));
	assert_int_equal(ly_b64_decode("Zh==", 4, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "non-canonical"));
	assert_int_equal(ly_b64_decode("Zm9=", 4, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "non-canonical"));
	assert_null(b.data);
	/* The canonical spellings of the same bytes pass. */
	assert_int_equal(ly_b64url_decode("Zg", 2, &b, NULL), LY_OK);
	ly_buf_free(&b);
	assert_int_equal(ly_b64url_decode("Zm8", 3, &b, NULL), LY_OK);
	ly_buf_free(&b);
}

/* Standard base64 (x5c) must be padded, and padded only at the end. */
static void
test_std_padding_rules(void **state)
{
	struct ly_buf b = LY_BUF_INIT;
	struct ly_error err;
	assert_int_equal(ly_b64_decode("Zg", 2, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "multiple of 4"));
	assert_int_equal(ly_b64_decode("Zm8", 3, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "multiple of 4"));
	assert_int_equal(ly_b64_decode("Z===", 4, &b, &err), LY_E_INVALID);
	assert_int_equal(ly_b64_decode("====", 4, &b, &err), LY_E_INVALID);
	assert_int_equal(ly_b64_decode("Zg==Zm9v", 8, &b, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "padding"));
	assert_int_equal(ly_b64_decode("Z=g=", 4, &b, &err), LY_E_INVALID);
	assert_null(b.data);
}

static void
test_round_trip_all_lengths(void **state)
{
	uint8_t data[300];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 3);
	for (size_t len = 0; len <= sizeof(data); len += 1) {
		char *s = NULL;
		struct ly_buf b = LY_BUF_INIT;
		assert_int_equal(ly_b64url_encode(data, len, &s, NULL), LY_OK);
		assert_int_equal(ly_b64url_decode(s, strlen(s), &b, NULL), LY_OK);
		assert_int_equal(b.len, len);
		assert_memory_equal(b.data, data, len);
		ly_buf_free(&b);
		free(s);
		assert_int_equal(ly_b64_encode(data, len, &s, NULL), LY_OK);
		assert_int_equal(ly_b64_decode(s, strlen(s), &b, NULL), LY_OK);
		assert_int_equal(b.len, len);
		assert_memory_equal(b.data, data, len);
		ly_buf_free(&b);
		free(s);
	}
	char into[8];
	assert_int_equal(ly_b64url_encode_into((const uint8_t *)"foob", 4, into), 6);
	assert_string_equal(into, "Zm9vYg");
	assert_int_equal(ly_b64url_encoded_len(SIZE_MAX), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_alphabets),
		cmocka_unit_test(test_url_refuses_padding),
		cmocka_unit_test(test_refuses_whitespace_and_junk),
		cmocka_unit_test(test_refuses_impossible_length),
		cmocka_unit_test(test_refuses_noncanonical_bits),
		cmocka_unit_test(test_std_padding_rules),
		cmocka_unit_test(test_round_trip_all_lengths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
