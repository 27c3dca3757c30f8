/*
 * fuzz_flags.c: command lines (lib/flags). The input is cut at NUL bytes
 * into up to MAX_ARGS arguments, parsed against a table with one flag of
 * each kind, then again as a command (ly_flags_parse_command, help to
 * /dev/null). On success every value must point into the argument vector,
 * every number lie within its bounds, a list hold at most LY_FLAG_LIST_MAX
 * items and `rest` lie within [0, argc]; on failure the message must be
 * set. abort() otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/flags.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64

static bool
in_argv(const char *p, const char *buf, size_t size)
{
	return p >= buf && p < buf + size + 1;
}

static void
check(const char *buf, size_t size, int argc, const char *const *argv, bool as_command)
{
	const char *str = NULL;
	int64_t num = 0;
	bool flag = false;
	struct ly_flag_list list = { 0 };
	struct ly_flag flags[] = {
		{ .name = "spiffeID", .kind = LY_FLAG_STRING, .dst = &str, .usage = "a string" },
		{ .name = "ttl", .kind = LY_FLAG_INT, .dst = &num, .usage = "a number", .min = -5, .max = 86400 },
		{ .name = "node", .kind = LY_FLAG_BOOL, .dst = &flag, .usage = "a boolean" },
		{ .name = "selector", .kind = LY_FLAG_LIST, .dst = &list, .usage = "a list" },
	};
	const size_t n = sizeof(flags) / sizeof(flags[0]);
	struct ly_error err = { 0 };
	ly_status rc;
	int rest = -1;
	bool help = false;

	if (as_command) {
		FILE *devnull = fopen("/dev/null", "w");
		if (devnull == NULL)
			return;
		rc = ly_flags_parse_command("fuzz", "synopsis", flags, n, argc, argv, devnull, &help, &err);
		(void)fclose(devnull);
		if (help && (rc != LY_OK || !ly_flags_wants_help(argc, argv)))
			abort();
	} else {
		rc = ly_flags_parse(flags, n, argc, argv, &rest, &err);
		if (rc == LY_OK && (rest < 0 || rest > argc))
			abort();
	}
	if (rc != LY_OK) {
		if (err.msg[0] == '\0')
			abort();
	} else {
		if (str != NULL && !in_argv(str, buf, size))
			abort();
		if (num < -5 || num > 86400)
			abort();
		if (list.count > LY_FLAG_LIST_MAX || (list.count > 0 && list.items == NULL))
			abort();
		for (size_t i = 0; i < list.count; i++)
			if (list.items[i] == NULL || !in_argv(list.items[i], buf, size))
				abort();
	}
	ly_flags_cleanup(flags, n);
	if (list.items != NULL || list.count != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *argv[MAX_ARGS + 1];
	int argc = 0;

	char *buf = malloc(size + 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	for (size_t start = 0; start <= size && argc < MAX_ARGS;) {
		argv[argc++] = buf + start;
		start += strlen(buf + start) + 1;
	}
	argv[argc] = NULL;
	check(buf, size, argc, argv, false);
	check(buf, size, argc, argv, true);
	free(buf);
	return 0;
}
