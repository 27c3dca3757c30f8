/* test_flags.c: SPIRE-style single-dash flags. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/flags.h"

struct opts {
	const char *spiffe_id;
	int64_t ttl;
	bool node;
	struct ly_flag_list selectors;
	struct ly_flag flags[4];
};

static void
opts_init(struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->ttl = -1;
	o->flags[0] = (struct ly_flag){ "spiffeID", LY_FLAG_STRING, &o->spiffe_id, "the SPIFFE ID", 0, 0, false };
	o->flags[1] = (struct ly_flag){ "x509SVIDTTL", LY_FLAG_INT, &o->ttl, "TTL in seconds", 0, 86400, false };
	o->flags[2] = (struct ly_flag){ "node", LY_FLAG_BOOL, &o->node, "a node entry", 0, 0, false };
	o->flags[3] = (struct ly_flag){ "selector", LY_FLAG_LIST, &o->selectors, "type:value", 0, 0, false };
}

static ly_status
parse(struct opts *o, int *rest, struct ly_error *err, int argc, const char **argv)
{
	opts_init(o);
	return ly_flags_parse(o->flags, 4, argc, argv, rest, err);
}

#define ARGV(...) (const char *[]){ __VA_ARGS__ }
#define NARGS(...) ((int)(sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(const char *)))
#define PARSE(o, rest, err, ...) parse(o, rest, err, NARGS(__VA_ARGS__), ARGV(__VA_ARGS__))

static void
test_forms(void **state)
{
	struct opts o;
	struct ly_error err;
	int rest;
	assert_int_equal(PARSE(&o, &rest, &err, "-spiffeID", "spiffe://td/a", "--x509SVIDTTL=300", "-node",
	    "-selector", "unix:uid:0", "-selector=k8s:ns:a:b", "positional", "-node"), LY_OK);
	assert_string_equal(o.spiffe_id, "spiffe://td/a");
	assert_int_equal(o.ttl, 300);
	assert_true(o.node);
	assert_int_equal(o.selectors.count, 2);
	assert_string_equal(o.selectors.items[1], "k8s:ns:a:b");
	assert_int_equal(rest, 7); /* stops at the first positional argument */
	ly_flags_cleanup(o.flags, 4);
	assert_null(o.selectors.items);

	assert_int_equal(PARSE(&o, &rest, &err, "-node=false", "--", "-spiffeID"), LY_OK);
	assert_false(o.node);
	assert_int_equal(rest, 2);
	/* An empty value with '=' is a value. */
	assert_int_equal(PARSE(&o, &rest, &err, "-spiffeID="), LY_OK);
	assert_string_equal(o.spiffe_id, "");
}

static void
test_refusals(void **state)
{
	struct opts o;
	struct ly_error err;
	int rest;
	assert_int_equal(PARSE(&o, &rest, &err, "-spiffeid", "x"), LY_E_INVALID);
	assert_string_equal(err.msg, "flag provided but not defined: -spiffeid");
	assert_int_equal(PARSE(&o, &rest, &err, "-spiffeID"), LY_E_INVALID);
	assert_string_equal(err.msg, "flag needs an argument: -spiffeID");
	assert_int_equal(PARSE(&o, &rest, &err, "-x509SVIDTTL", "-5"), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "must be between 0 and 86400"));
	assert_int_equal(PARSE(&o, &rest, &err, "-x509SVIDTTL", "86401"), LY_E_INVALID);
	assert_int_equal(PARSE(&o, &rest, &err, "-x509SVIDTTL", "12s"), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not an integer"));
	assert_int_equal(PARSE(&o, &rest, &err, "-x509SVIDTTL", ""), LY_E_INVALID);
	assert_int_equal(PARSE(&o, &rest, &err, "-x509SVIDTTL", "99999999999999999999999"), LY_E_INVALID);
	assert_int_equal(PARSE(&o, &rest, &err, "-node=maybe"), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "invalid boolean"));
	assert_int_equal(PARSE(&o, &rest, &err, "-spiffeID", "a", "-spiffeID", "b"), LY_E_INVALID);
	assert_string_equal(err.msg, "flag -spiffeID given more than once");
	assert_int_equal(PARSE(&o, &rest, &err, "---node"), LY_E_INVALID);
	assert_int_equal(PARSE(&o, &rest, &err, "-=x"), LY_E_INVALID);
}

static void
test_list_cap(void **state)
{
	struct opts o;
	struct ly_error err;
	int rest;
	const char *argv[2 * (LY_FLAG_LIST_MAX + 1)];
	for (int i = 0; i < LY_FLAG_LIST_MAX + 1; i++) {
		argv[2 * i] = "-selector";
		argv[2 * i + 1] = "unix:uid:0";
	}
	assert_int_equal(parse(&o, &rest, &err, 2 * LY_FLAG_LIST_MAX, argv), LY_OK);
	assert_int_equal(o.selectors.count, LY_FLAG_LIST_MAX);
	ly_flags_cleanup(o.flags, 4);
	assert_int_equal(parse(&o, &rest, &err, 2 * (LY_FLAG_LIST_MAX + 1), argv), LY_E_LIMIT);
	ly_flags_cleanup(o.flags, 4);
}

/* A command's flags: help asked for (and not after "--"), stray arguments refused. */
static void
test_command(void **state)
{
	(void)state;
	const char *id = NULL;
	struct ly_flag flags[] = {
		{ "spiffeID", LY_FLAG_STRING, &id, "the SPIFFE ID", 0, 0, false },
	};
	struct ly_error e;
	char *text = NULL;
	size_t len = 0;
	bool help = true;

	const char *h1[] = { "-spiffeID", "spiffe://example.org/w", "-h" };
	const char *h2[] = { "--help" };
	const char *h3[] = { "-help" };
	const char *not_help[] = { "--", "-h" };
	assert_true(ly_flags_wants_help(3, h1));
	assert_true(ly_flags_wants_help(1, h2));
	assert_true(ly_flags_wants_help(1, h3));
	assert_false(ly_flags_wants_help(2, not_help));
	assert_false(ly_flags_wants_help(0, NULL));

	FILE *out = open_memstream(&text, &len);
	assert_non_null(out);
	assert_int_equal(ly_flags_parse_command("lanyard-server entry show", "Shows entries.", flags, 1, 3, h1, out,
			     &help, &e),
	    LY_OK);
	fclose(out);
	assert_true(help);
	assert_null(id); /* nothing parsed when help is asked for */
	assert_non_null(strstr(text, "Usage: lanyard-server entry show [flags]\n\nShows entries.\n\nFlags:\n"));
	assert_non_null(strstr(text, "-spiffeID string"));
	free(text);

	const char *ok[] = { "-spiffeID", "spiffe://example.org/w" };
	assert_int_equal(ly_flags_parse_command("x", "y", flags, 1, 2, ok, stdout, &help, &e), LY_OK);
	assert_false(help);
	assert_string_equal(id, "spiffe://example.org/w");
	flags[0].seen = false;

	const char *stray[] = { "-spiffeID", "spiffe://example.org/w", "extra" };
	assert_int_equal(ly_flags_parse_command("x", "y", flags, 1, 3, stray, stdout, &help, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "unexpected argument \"extra\"");
	flags[0].seen = false;

	const char *unknown[] = { "-nope" };
	assert_int_equal(ly_flags_parse_command("x", "y", flags, 1, 1, unknown, stdout, &help, &e), LY_E_INVALID);
	assert_false(help);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_list_cap),
		cmocka_unit_test(test_command),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
