/* test_cmdline.c: the command-line tools' shared parts (lib/cmdline.h): the error line and a command's flags. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/cmdline.h"

/* Runs `fn` with stderr sent to a pipe; returns what it wrote. */
static int
capture_stderr(char *out, size_t size, int (*fn)(void))
{
	int fds[2], saved, rc;
	ssize_t n;

	assert_int_equal(pipe(fds), 0);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fds[1], 2), 2);
	rc = fn();
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	close(fds[1]);
	n = read(fds[0], out, size - 1);
	close(fds[0]);
	out[n > 0 ? n : 0] = '\0';
	return rc;
}

static int
call_fail(void)
{
	return ly_cmdline_fail(LY_CMDLINE_EXIT_RUNTIME, "entry show: %s", "bad\nvalue");
}

static void
test_fail(void **state)
{
	char out[256];
	(void)state;
	assert_int_equal(capture_stderr(out, sizeof(out), call_fail), LY_CMDLINE_EXIT_RUNTIME);
	/* One line, "Error: ...", the newline in the value not passed through. */
	assert_true(strncmp(out, "Error: entry show: bad", 22) == 0);
	assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static const char *flag_value;

static int
parse(int argc, char **argv)
{
	struct ly_flag flags[] = {
		{ "socketPath", LY_FLAG_STRING, &flag_value, "the socket", 0, 0, false },
	};
	int rc = ly_cmdline_parse_flags("lanyard-test", "thing show", "Shows a thing.", flags, 1, argc, argv);
	return rc;
}

static char bad_flag[] = "-nope";

static int
parse_bad(void)
{
	char *argv[] = { bad_flag };
	return parse(1, argv);
}

static void
test_parse_flags(void **state)
{
	char flag[] = "-socketPath", value[] = "/run/x.sock";
	char *ok[] = { flag, value };
	char out[512];
	(void)state;

	flag_value = NULL;
	assert_int_equal(parse(2, ok), -1);
	assert_string_equal(flag_value, "/run/x.sock");
	/* A bad flag: the usage exit code and one error line naming the command. */
	assert_int_equal(capture_stderr(out, sizeof(out), parse_bad), LY_CMDLINE_EXIT_USAGE);
	assert_non_null(strstr(out, "Error: thing show: "));
	assert_non_null(strstr(out, "nope"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fail),
		cmocka_unit_test(test_parse_flags),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
