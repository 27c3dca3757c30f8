/*
 * test_text.c: outside text checked (ly_text_check: the audience rule of
 * both the Workload API and the server's agent API) and escaped for one
 * line of CLI error (ly_text_escape).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lib/text.h"

static void
check_ok(const char *s, size_t cap)
{
	struct ly_error err;
	if (ly_text_check("audience", s, cap, &err) != LY_OK)
		fail_msg("'%s' refused: %s", s, err.msg);
}

static void
check_refused(const char *s, size_t cap, ly_status code, const char *needle)
{
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_text_check("audience", s, cap, &err);
	if (rc != code || strstr(err.msg, needle) == NULL)
		fail_msg("got %d '%s', want %d '%s'", rc, err.msg, code, needle);
}

static void
test_check(void **state)
{
	(void)state;
	check_ok("spiffe://example.org/web", 1024);
	check_ok("a", 1);
	check_ok("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 1024);
	check_ok("\xc2\xa0", 8); /* U+00A0: the first after C1 */
	check_refused("", 1024, LY_E_INVALID, "audience is empty");
	check_refused(NULL, 1024, LY_E_INVALID, "missing");
	check_refused("ab", 1, LY_E_LIMIT, "audience is over 1 bytes");
	check_refused("a\nb", 1024, LY_E_INVALID, "control character");
	check_refused("a\tb", 1024, LY_E_INVALID, "control character");
	check_refused("\x7f", 1024, LY_E_INVALID, "control character");
	check_refused("\x1b[31m", 1024, LY_E_INVALID, "control character");
	check_refused("\xc2\x85", 1024, LY_E_INVALID, "not UTF-8 text"); /* C1 NEL */
	check_refused("\xc2\x9b", 1024, LY_E_INVALID, "not UTF-8 text"); /* C1 CSI */
	check_refused("\xc0\xaf", 1024, LY_E_INVALID, "not UTF-8");      /* overlong */
	check_refused("\xe0\x80\xaf", 1024, LY_E_INVALID, "not UTF-8");  /* overlong */
	check_refused("\xed\xa0\x80", 1024, LY_E_INVALID, "not UTF-8");  /* surrogate */
	check_refused("\xf4\x90\x80\x80", 1024, LY_E_INVALID, "not UTF-8"); /* > U+10FFFF */
	check_refused("\x80", 1024, LY_E_INVALID, "not UTF-8");
	check_refused("a\xe2\x82", 1024, LY_E_INVALID, "not UTF-8"); /* cut short */
	check_refused("\xff", 1024, LY_E_INVALID, "not UTF-8");
	/* A sequence cut by the cap is refused, not read past it. */
	check_refused("ab\xe2\x82\xac", 3, LY_E_LIMIT, "over 3 bytes");
}

static void
escapes(const char *in, const char *want)
{
	char out[256];
	size_t n = ly_text_escape(in, out, sizeof(out));
	if (strcmp(out, want) != 0)
		fail_msg("'%s': got '%s', want '%s'", in, out, want);
	assert_int_equal(n, strlen(want));
}

static void
test_escape(void **state)
{
	(void)state;
	escapes("plain text: \"quoted\" 'x'", "plain text: \"quoted\" 'x'");
	escapes("a\nb", "a\\nb");
	escapes("a\r\nError: forged", "a\\r\\nError: forged");
	escapes("\t\v\f\a\b", "\\t\\v\\f\\a\\b");
	escapes("back\\slash", "back\\\\slash");
	escapes("\x1b[2J\x01\x7f", "\\x1b[2J\\x01\\x7f");
	escapes("caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac");
	escapes("\xff\xfe", "\\xff\\xfe");
	escapes("\xc0\xaf", "\\xc0\\xaf");
	escapes("a\xe2\x82", "a\\xe2\\x82");
	escapes("\xc2\x9b" "31m", "\\u009b31m");
	escapes("\xe2\x80\xa8|\xe2\x80\xae|\xe2\x81\xa6", "\\u2028|\\u202e|\\u2066");
	escapes("", "");
	escapes(NULL, "");
	/* Never a raw control byte or a newline out, whatever comes in. */
	char all[256], out[2048];
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	ly_text_escape(all, out, sizeof(out));
	for (const unsigned char *p = (const unsigned char *)out; *p != '\0'; p++)
		assert_true(*p >= 0x20 && *p != 0x7f);
	assert_null(strchr(out, '\n'));
}

static void
test_escape_truncates(void **state)
{
	(void)state;
	char out[8];
	/* Fits exactly. */
	assert_int_equal(ly_text_escape("abcdefg", out, sizeof(out)), 7);
	assert_string_equal(out, "abcdefg");
	/* Cut, with dots, never inside an escape or a UTF-8 sequence. */
	ly_text_escape("abcdefgh", out, sizeof(out));
	assert_string_equal(out, "abcd...");
	ly_text_escape("ab\n\n\n\n", out, sizeof(out));
	assert_string_equal(out, "ab\\n...");
	ly_text_escape("\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", out, sizeof(out));
	assert_string_equal(out, "\xe2\x82\xac...");
	char tiny[3];
	ly_text_escape("abcdef", tiny, sizeof(tiny));
	assert_string_equal(tiny, "");
	assert_int_equal(ly_text_escape("x", out, 0), 0);
	assert_int_equal(ly_text_escape("x", NULL, 8), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_escape_truncates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
