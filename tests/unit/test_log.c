/* test_log.c: the log redactor, level parsing, and one line per event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"

static void
redact(const char *in, char *out)
{
	ly_log_redact(in, out, 1024);
}

static void
test_redacts_jwt(void **state)
{
	char out[1024];
	redact("token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl here", out);
	assert_string_equal(out, "token [redacted] here");
	/* A JWT glued to a key name is still caught. */
	redact("svid=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.sig", out);
	assert_string_equal(out, "svid=[redacted]");
}

static void
test_redacts_pem(void **state)
{
	char out[1024];
	redact("key -----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY----- done", out);
	assert_string_equal(out, "key [redacted] done");
	/* An unterminated block is redacted to the end. */
	redact("x -----BEGIN EC PRIVATE KEY-----\nMHcCAQEE", out);
	assert_string_equal(out, "x [redacted]");
}

static void
test_redacts_long_base64(void **state)
{
	char out[1024];
	redact("der=MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgq1w2f3N7a9B0c0dE1x2y3z4 end", out);
	assert_string_equal(out, "der=[redacted] end");
}

static void
test_keeps_ordinary_text(void **state)
{
	char out[1024];
	const char *ok[] = {
		"entry created, spiffe_id=spiffe://example.org/ns/prod/sa/web",
		"selector unix:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"entry_id=1b4e28ba-2fa1-11d2-883f-0016d3cca427 revision 42",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		redact(ok[i], out);
		assert_string_equal(out, ok[i]);
	}
}

static void
test_redact_truncates_safely(void **state)
{
	char out[8];
	ly_log_redact("abcdefghijklmnop", out, sizeof(out));
	assert_string_equal(out, "abcdefg");
	ly_log_redact("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", out, sizeof(out));
	assert_string_equal(out, "[redact");
}

static void
test_level_parse(void **state)
{
	enum ly_log_level l;
	assert_int_equal(ly_log_level_parse("DEBUG", &l), LY_OK);
	assert_int_equal(l, LY_LOG_DEBUG);
	assert_int_equal(ly_log_level_parse("warning", &l), LY_OK);
	assert_int_equal(l, LY_LOG_WARN);
	assert_int_equal(ly_log_level_parse("verbose", &l), LY_E_INVALID);
	assert_int_equal(ly_log_level_parse(NULL, &l), LY_E_INVALID);
	enum ly_log_format f;
	assert_int_equal(ly_log_format_parse("json", &f), LY_OK);
	assert_int_equal(f, LY_LOG_JSON);
	assert_int_equal(ly_log_format_parse("xml", &f), LY_E_INVALID);
}

/* Logs through a pipe and returns what was written. */
static void
capture(enum ly_log_format format, const char *msg, char *out, size_t out_size)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	ly_log_set_fd(fds[1]);
	ly_log_set_format(format);
	ly_log_set_level(LY_LOG_INFO);
	log_info("%s", msg);
	log_debug("not shown at info");
	ly_log_set_fd(2);
	ly_log_set_format(LY_LOG_TEXT);
	close(fds[1]);
	ssize_t n = read(fds[0], out, out_size - 1);
	assert_true(n > 0);
	out[n] = '\0';
	close(fds[0]);
}

static void
test_one_line_per_event(void **state)
{
	char out[4096];
	capture(LY_LOG_TEXT, "two\nlines eyJhbGciOiJub25lIn0.e30.", out, sizeof(out));
	assert_non_null(strstr(out, " info "));
	assert_non_null(strstr(out, " capture: ")); /* the calling function */
	assert_non_null(strstr(out, "two lines [redacted]"));
	assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void
test_json_format(void **state)
{
	char out[4096];
	capture(LY_LOG_JSON, "say \"hi\"\n", out, sizeof(out));
	assert_non_null(strstr(out, "\"level\":\"info\""));
	assert_non_null(strstr(out, "\"msg\":\"say \\\"hi\\\"\\u000a\""));
	assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_redacts_jwt),
		cmocka_unit_test(test_redacts_pem),
		cmocka_unit_test(test_redacts_long_base64),
		cmocka_unit_test(test_keeps_ordinary_text),
		cmocka_unit_test(test_redact_truncates_safely),
		cmocka_unit_test(test_level_parse),
		cmocka_unit_test(test_one_line_per_event),
		cmocka_unit_test(test_json_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
