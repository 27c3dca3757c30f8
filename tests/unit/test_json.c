/* test_json.c: lib/json.h, the one strict JSON reader: caps, depth, duplicates, trailing bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "lib/caps.h"
#include "lib/json.h"

static void
test_json_strict(void **state)
{
	json_t *j = NULL;
	struct ly_error err;
	const char *ok = "{\"a\":[1,2,{\"b\":\"}]\"}]}";
	assert_int_equal(ly_json_parse_strict("json", ok, strlen(ok), 100, LY_JSON_DEPTH_MAX, &j, NULL), LY_OK);
	json_decref(j);

	const char *dup = "{\"a\":1,\"a\":2}";
	assert_int_equal(ly_json_parse_strict("json", dup, strlen(dup), 100, LY_JSON_DEPTH_MAX, &j, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "duplicate"));
	assert_null(j);

	assert_int_equal(ly_json_parse_strict("json", ok, strlen(ok), strlen(ok) - 1, LY_JSON_DEPTH_MAX, &j, &err),
	    LY_E_LIMIT);

	const char *trailing = "{\"a\":1} x";
	assert_int_equal(ly_json_parse_strict("json", trailing, strlen(trailing), 100, LY_JSON_DEPTH_MAX, &j, &err),
	    LY_E_INVALID);
	const char *scalar = "12";
	assert_int_equal(ly_json_parse_strict("json", scalar, strlen(scalar), 100, LY_JSON_DEPTH_MAX, &j, &err), LY_E_INVALID);
	const char *nul = "{\"a\":\"x\\u0000y\"}";
	assert_int_equal(ly_json_parse_strict("json", nul, strlen(nul), 100, LY_JSON_DEPTH_MAX, &j, &err), LY_E_INVALID);
	const char *embedded = "{\"a\":1}\0";
	assert_int_equal(ly_json_parse_strict("json", embedded, 8, 100, LY_JSON_DEPTH_MAX, &j, &err), LY_E_INVALID);

	/* Depth: LY_JSON_DEPTH_MAX levels pass, one more is refused; brackets in strings do not count. */
	char deep[2 * (LY_JSON_DEPTH_MAX + 1) + 16];
	size_t o = 0;
	for (int i = 0; i < LY_JSON_DEPTH_MAX; i++)
		deep[o++] = '[';
	for (int i = 0; i < LY_JSON_DEPTH_MAX; i++)
		deep[o++] = ']';
	assert_int_equal(ly_json_parse_strict("json", deep, o, sizeof(deep), LY_JSON_DEPTH_MAX, &j, NULL), LY_OK);
	json_decref(j);
	o = 0;
	for (int i = 0; i <= LY_JSON_DEPTH_MAX; i++)
		deep[o++] = '[';
	for (int i = 0; i <= LY_JSON_DEPTH_MAX; i++)
		deep[o++] = ']';
	assert_int_equal(ly_json_parse_strict("json", deep, o, sizeof(deep), LY_JSON_DEPTH_MAX, &j, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "nested deeper"));
	const char *instr = "[\"[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[[\"]";
	assert_int_equal(ly_json_parse_strict("json", instr, strlen(instr), 100, LY_JSON_DEPTH_MAX, &j, NULL), LY_OK);
	json_decref(j);
}

/* Hostile: the cap exactly, stray closers, another depth and the caller's label. */
static void
test_json_caps_and_label(void **state)
{
	json_t *j = NULL;
	struct ly_error err;
	const char *ok = "{\"a\":[1]}";

	(void)state;
	assert_int_equal(ly_json_parse_strict("x", ok, strlen(ok), strlen(ok), 2, &j, NULL), LY_OK);
	json_decref(j);
	assert_int_equal(ly_json_parse_strict("pod list", ok, strlen(ok), strlen(ok), 1, &j, &err), LY_E_LIMIT);
	assert_string_equal(err.msg, "pod list: nested deeper than 1 levels");
	assert_null(j);
	/* Closers first do not buy depth: the count never goes below zero. */
	const char *stray = "]]]]{\"a\":[[1]]}";
	assert_int_equal(ly_json_parse_strict("x", stray, strlen(stray), 100, 2, &j, &err), LY_E_LIMIT);
	const char *bad = "{\"a\":";
	assert_int_equal(ly_json_parse_strict("Pod", bad, strlen(bad), 100, 4, &j, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "Pod: not JSON: line 1"));
	assert_int_equal(ly_json_parse_strict("x", NULL, 0, 100, 4, &j, &err), LY_E_INVALID);
	assert_int_equal(ly_json_parse_strict("x", ok, strlen(ok), strlen(ok) - 1, 4, &j, &err), LY_E_LIMIT);
	assert_string_equal(err.msg, "x: 9 bytes, at most 8 accepted");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_strict),
		cmocka_unit_test(test_json_caps_and_label),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
