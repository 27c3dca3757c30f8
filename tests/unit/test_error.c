/* test_error.c: error values keep their cause; buffers keep their caps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/evp.h>
#include <openssl/err.h>

#include "lib/buf.h"
#include "lib/error.h"

static void
test_set_and_wrap_keep_cause(void **state)
{
	struct ly_error err;
	ly_error_clear(&err);
	assert_int_equal(ly_error_set(&err, LY_E_EXPIRED, "certificate %d expired", 2), LY_E_EXPIRED);
	assert_int_equal(ly_error_wrap(&err, err.code, "load bundle %s", "b.pem"), LY_E_EXPIRED);
	assert_int_equal(err.code, LY_E_EXPIRED);
	assert_string_equal(err.msg, "load bundle b.pem: certificate 2 expired");
}

/* error.h's contract: the code given is the one kept and returned, and an empty cause gets no ": ". */
static void
test_wrap_sets_given_code(void **state)
{
	struct ly_error err;
	ly_error_clear(&err);
	(void)ly_error_set(&err, LY_E_UNTRUSTED, "directory is others'");
	assert_int_equal(ly_error_wrap(&err, LY_E_IO, "agent at %s unavailable", "/s"), LY_E_IO);
	assert_int_equal(err.code, LY_E_IO);
	assert_string_equal(err.msg, "agent at /s unavailable: directory is others'");
	ly_error_clear(&err);
	assert_int_equal(ly_error_wrap(&err, LY_E_INVALID, "context"), LY_E_INVALID);
	assert_string_equal(err.msg, "context");
}

static void
test_null_error_is_allowed(void **state)
{
	assert_int_equal(ly_error_set(NULL, LY_E_INVALID, "x"), LY_E_INVALID);
	assert_int_equal(ly_error_wrap(NULL, LY_E_IO, "y"), LY_E_IO);
	assert_int_equal(ly_error_openssl(NULL, LY_E_CRYPTO, "z"), LY_E_CRYPTO);
	ly_error_clear(NULL);
}

static void
test_wrap_truncates_without_overflow(void **state)
{
	struct ly_error err;
	char big[LY_ERROR_MSG_MAX * 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	(void)ly_error_set(&err, LY_E_INVALID, "%s", big);
	assert_int_equal(strlen(err.msg), LY_ERROR_MSG_MAX - 1);
	(void)ly_error_wrap(&err, LY_E_INVALID, "%s", big);
	assert_int_equal(strlen(err.msg), LY_ERROR_MSG_MAX - 1);
	assert_int_equal(err.code, LY_E_INVALID);
}

static void
test_openssl_reason_appended_and_queue_cleared(void **state)
{
	struct ly_error err;
	/* Provoke an OpenSSL error: an unknown digest name. */
	EVP_MD *md = EVP_MD_fetch(NULL, "NO-SUCH-DIGEST", NULL);
	assert_null(md);
	(void)ly_error_openssl(&err, LY_E_CRYPTO, "fetch digest");
	assert_int_equal(err.code, LY_E_CRYPTO);
	assert_true(strncmp(err.msg, "fetch digest: ", 14) == 0);
	assert_true(strlen(err.msg) > 14);
	assert_int_equal(ERR_peek_error(), 0);
}

static void
test_status_strings(void **state)
{
	assert_string_equal(ly_status_str(LY_OK), "ok");
	assert_string_equal(ly_status_str(LY_E_LIMIT), "limit exceeded");
	assert_string_equal(ly_status_str((ly_status)999), "unknown");
}

static void
test_buf_append_cap(void **state)
{
	struct ly_buf b = LY_BUF_INIT;
	struct ly_error err;
	assert_int_equal(ly_buf_append(&b, "abcd", 4, 8, &err), LY_OK);
	assert_int_equal(ly_buf_append(&b, "efgh", 4, 8, &err), LY_OK);
	assert_int_equal(b.len, 8);
	/* One byte over the cap is refused and the buffer is unchanged. */
	assert_int_equal(ly_buf_append(&b, "i", 1, 8, &err), LY_E_LIMIT);
	assert_int_equal(b.len, 8);
	assert_memory_equal(b.data, "abcdefgh", 8);
	/* A length that would wrap around is refused too. */
	assert_int_equal(ly_buf_append(&b, "i", SIZE_MAX, SIZE_MAX, &err), LY_E_LIMIT);
	ly_buf_free_secret(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void
test_buf_take_and_set(void **state)
{
	struct ly_buf a = LY_BUF_INIT, b = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&a, "key", 3, NULL), LY_OK);
	ly_buf_take(&b, &a);
	assert_null(a.data);
	assert_int_equal(a.len, 0);
	assert_memory_equal(b.data, "key", 3);
	ly_buf_free(&b);
	ly_buf_free(&b); /* idempotent */
	assert_int_equal(ly_buf_set(&a, NULL, 0, NULL), LY_OK);
	assert_non_null(a.data);
	ly_buf_free(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_and_wrap_keep_cause),
		cmocka_unit_test(test_wrap_sets_given_code),
		cmocka_unit_test(test_null_error_is_allowed),
		cmocka_unit_test(test_wrap_truncates_without_overflow),
		cmocka_unit_test(test_openssl_reason_appended_and_queue_cleared),
		cmocka_unit_test(test_status_strings),
		cmocka_unit_test(test_buf_append_cap),
		cmocka_unit_test(test_buf_take_and_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
