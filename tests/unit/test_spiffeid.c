/*
 * test_spiffeid.c: SPIFFE ID and trust domain rules (SPIFFE-ID standard §2).
 * One test per rule, each with values that must be refused and a message
 * that must name the rule, beside accepted edge cases.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/spiffeid.h"

/* Parses `s` (NUL-terminated) and expects `code` with `needle` in the message. */
static void
refuse_n(const char *s, size_t len, ly_status code, const char *needle)
{
	struct ly_spiffe_id id;
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_spiffe_id_parse(s, len, &id, &err);
	if (rc != code || strstr(err.msg, needle) == NULL)
		fail_msg("'%.*s': got %d '%s', want %d '%s'", (int)(len > 80 ? 80 : len), s, rc, err.msg,
		    code, needle);
	assert_int_equal(err.code, code);
	/* A refused parse leaves nothing usable behind. */
	assert_string_equal(id.id, "");
	assert_string_equal(id.trust_domain, "");
}

static void
refuse(const char *s, ly_status code, const char *needle)
{
	refuse_n(s, strlen(s), code, needle);
}

static void
accept(const char *s, const char *td, const char *path)
{
	struct ly_spiffe_id id;
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_spiffe_id_parse_str(s, &id, &err);
	if (rc != LY_OK)
		fail_msg("'%.80s' refused: %s", s, err.msg);
	assert_string_equal(id.id, s);
	assert_string_equal(id.trust_domain, td);
	assert_string_equal(ly_spiffe_id_path(&id), path);
}

/* Fills `buf` with "spiffe://" + a trust domain of `tdlen` bytes + "/" + path bytes to total `total`. */
static void
make_id(char *buf, size_t tdlen, size_t total)
{
	memcpy(buf, "spiffe://", 9);
	memset(buf + 9, 'a', tdlen);
	size_t o = 9 + tdlen;
	if (total > o) {
		buf[o++] = '/';
		while (o < total)
			buf[o++] = 'P';
	}
	buf[total] = '\0';
}

static void
test_accepts_ordinary(void **state)
{
	accept("spiffe://example.org/ns/prod/sa/web", "example.org", "/ns/prod/sa/web");
	accept("spiffe://k8s-west.example.com/ns/staging/sa/default", "k8s-west.example.com",
	    "/ns/staging/sa/default");
	accept("spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453", "example.com",
	    "/9eebccd2-12bf-40a6-b262-65fe0487d453");
}

static void
test_accepts_all_chars(void **state)
{
	accept("spiffe://abcdefghijklmnopqrstuvwxyz0123456789.-_/"
	       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_",
	    "abcdefghijklmnopqrstuvwxyz0123456789.-_",
	    "/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_");
	accept("spiffe://td/.../a..b/.x/x./-/_", "td", "/.../a..b/.x/x./-/_");
}

static void
test_trust_domain_id(void **state)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://td", &id, NULL), LY_OK);
	assert_string_equal(id.trust_domain, "td");
	assert_string_equal(ly_spiffe_id_path(&id), "");
	assert_true(ly_spiffe_id_is_trust_domain_id(&id));
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://td/a", &id, NULL), LY_OK);
	assert_false(ly_spiffe_id_is_trust_domain_id(&id));
}

static void
test_scheme(void **state)
{
	refuse("SPIFFE://example.org/a", LY_E_INVALID, "lower-case 'spiffe://'");
	refuse("Spiffe://example.org", LY_E_INVALID, "lower-case 'spiffe://'");
	refuse("https://example.org/a", LY_E_INVALID, "scheme is not 'spiffe://'");
	refuse("spiffe:/example.org/a", LY_E_INVALID, "scheme is not 'spiffe://'");
	refuse("spiffe:example.org", LY_E_INVALID, "scheme is not 'spiffe://'");
	refuse("example.org/a", LY_E_INVALID, "scheme is not 'spiffe://'");
	refuse(" spiffe://example.org", LY_E_INVALID, "scheme is not 'spiffe://'");
	refuse("", LY_E_INVALID, "scheme is not 'spiffe://'");
	refuse("spiffe", LY_E_INVALID, "scheme is not 'spiffe://'");
}

static void
test_trust_domain_empty(void **state)
{
	refuse("spiffe://", LY_E_INVALID, "trust domain is empty");
	refuse("spiffe:///path", LY_E_INVALID, "trust domain is empty");
}

static void
test_trust_domain_upper_case(void **state)
{
	refuse("spiffe://Example.org/a", LY_E_INVALID, "trust domain contains upper-case character 'E' at offset 9");
	refuse("spiffe://example.orG", LY_E_INVALID, "upper-case character 'G' at offset 19");
}

static void
test_trust_domain_port(void **state)
{
	refuse("spiffe://example.org:8080/a", LY_E_INVALID, "trust domain contains a port (':') at offset 20");
	refuse("spiffe://example.org:", LY_E_INVALID, "port");
}

static void
test_trust_domain_userinfo(void **state)
{
	refuse("spiffe://user@example.org/a", LY_E_INVALID, "trust domain contains userinfo ('@') at offset 13");
	refuse("spiffe://user:pw@example.org", LY_E_INVALID, "port"); /* the ':' comes first */
}

static void
test_trust_domain_bad_chars(void **state)
{
	refuse("spiffe://exa mple.org", LY_E_INVALID, "trust domain contains invalid character 0x20 at offset 12");
	refuse("spiffe://ex+ample.org", LY_E_INVALID, "trust domain contains invalid character '+'");
	refuse("spiffe://ex\xc3\xa9.org", LY_E_INVALID, "invalid character 0xc3 at offset 11");
	refuse("spiffe://ex%41mple.org", LY_E_INVALID, "trust domain contains percent-encoding");
	refuse("spiffe://example.org?x=1", LY_E_INVALID, "trust domain contains a query ('?')");
	refuse("spiffe://example.org#frag", LY_E_INVALID, "trust domain contains a fragment ('#')");
	refuse("spiffe://[::1]/a", LY_E_INVALID, "invalid character '['");
	refuse("spiffe://a\\b/c", LY_E_INVALID, "invalid character '\\'");
}

static void
test_trust_domain_length(void **state)
{
	char buf[LY_SPIFFE_ID_MAX + 2];
	make_id(buf, 255, 9 + 255);
	accept(buf, buf + 9, "");
	make_id(buf, 255, 9 + 255 + 5);
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str(buf, &id, NULL), LY_OK);
	assert_int_equal(strlen(id.trust_domain), 255);
	make_id(buf, 256, 9 + 256);
	refuse(buf, LY_E_LIMIT, "trust domain is longer than 255 bytes");
	make_id(buf, 256, 9 + 256 + 4);
	refuse(buf, LY_E_LIMIT, "trust domain is longer than 255 bytes");
}

static void
test_id_length(void **state)
{
	char buf[LY_SPIFFE_ID_MAX + 2];
	make_id(buf, 20, LY_SPIFFE_ID_MAX);
	struct ly_spiffe_id id;
	assert_int_equal(strlen(buf), 2048);
	assert_int_equal(ly_spiffe_id_parse_str(buf, &id, NULL), LY_OK);
	assert_int_equal(strlen(id.id), 2048);
	assert_string_equal(id.id, buf);
	make_id(buf, 20, LY_SPIFFE_ID_MAX + 1);
	refuse(buf, LY_E_LIMIT, "over the 2048-byte limit");
	struct ly_error err;
	assert_int_equal(ly_spiffe_id_parse_str(buf, &id, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "2048-byte limit"));
}

static void
test_path_empty_segment(void **state)
{
	refuse("spiffe://td//a", LY_E_INVALID, "path contains an empty segment ('//') at offset 11");
	refuse("spiffe://td/a//b", LY_E_INVALID, "empty segment");
}

static void
test_path_trailing_slash(void **state)
{
	refuse("spiffe://td/", LY_E_INVALID, "path has a trailing '/'");
	refuse("spiffe://td/a/b/", LY_E_INVALID, "path has a trailing '/'");
}

static void
test_path_dot_segments(void **state)
{
	refuse("spiffe://td/.", LY_E_INVALID, "path segment is '.'");
	refuse("spiffe://td/a/./b", LY_E_INVALID, "path segment is '.' at offset 14");
	refuse("spiffe://td/..", LY_E_INVALID, "path segment is '..'");
	refuse("spiffe://td/a/../b", LY_E_INVALID, "path segment is '..' at offset 14");
}

static void
test_path_percent_encoding(void **state)
{
	refuse("spiffe://td/a%20b", LY_E_INVALID, "path contains percent-encoding ('%') at offset 13");
	refuse("spiffe://td/%2e%2e", LY_E_INVALID, "percent-encoding");
}

static void
test_path_query_fragment(void **state)
{
	refuse("spiffe://td/a?x=1", LY_E_INVALID, "path contains a query ('?') at offset 13");
	refuse("spiffe://td/a#frag", LY_E_INVALID, "path contains a fragment ('#') at offset 13");
}

static void
test_path_bad_chars(void **state)
{
	refuse("spiffe://td/a b", LY_E_INVALID, "path contains invalid character 0x20 at offset 13");
	refuse("spiffe://td/a:b", LY_E_INVALID, "path contains invalid character ':'");
	refuse("spiffe://td/a@b", LY_E_INVALID, "path contains invalid character '@'");
	refuse("spiffe://td/caf\xc3\xa9", LY_E_INVALID, "invalid character 0xc3");
	refuse("spiffe://td/a\\b", LY_E_INVALID, "invalid character '\\'");
	refuse("spiffe://td/a\nb", LY_E_INVALID, "invalid character 0x0a");
	refuse("spiffe://td/a~b", LY_E_INVALID, "invalid character '~'");
}

static void
test_embedded_nul(void **state)
{
	refuse_n("spiffe://td/a\0b", 15, LY_E_INVALID, "NUL byte at offset 13");
	refuse_n("spiffe://td\0", 12, LY_E_INVALID, "NUL byte at offset 11");
	/* The length given is the whole input: no stop at a NUL. */
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse("spiffe://td/a", 13, &id, NULL), LY_OK);
	/* And a length shorter than the string parses only that prefix. */
	assert_int_equal(ly_spiffe_id_parse("spiffe://td/ab", 13, &id, NULL), LY_OK);
	assert_string_equal(id.id, "spiffe://td/a");
}

static void
test_null_inputs(void **state)
{
	struct ly_spiffe_id id;
	struct ly_error err;
	assert_int_equal(ly_spiffe_id_parse(NULL, 0, &id, &err), LY_E_INVALID);
	assert_int_equal(ly_spiffe_id_parse_str(NULL, &id, &err), LY_E_INVALID);
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://td", NULL, &err), LY_E_INTERNAL);
	char td[LY_TRUST_DOMAIN_MAX + 1];
	assert_int_equal(ly_trust_domain_parse(NULL, true, td, &err), LY_E_INVALID);
}

static void
test_reparse_in_place(void **state)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://td/a/b", &id, NULL), LY_OK);
	assert_int_equal(ly_spiffe_id_parse(id.id, strlen(id.id), &id, NULL), LY_OK);
	assert_string_equal(id.id, "spiffe://td/a/b");
	assert_string_equal(id.trust_domain, "td");
	assert_string_equal(ly_spiffe_id_path(&id), "/a/b");
}

static void
test_membership_and_equal(void **state)
{
	struct ly_spiffe_id a, b, c;
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://example.org/web", &a, NULL), LY_OK);
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://example.org/web", &b, NULL), LY_OK);
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://example.org/Web", &c, NULL), LY_OK);
	assert_true(ly_spiffe_id_member_of(&a, "example.org"));
	assert_false(ly_spiffe_id_member_of(&a, "example.or"));
	assert_false(ly_spiffe_id_member_of(&a, "example.org.evil"));
	assert_false(ly_spiffe_id_member_of(&a, "Example.org"));
	assert_false(ly_spiffe_id_member_of(&a, "spiffe://example.org"));
	assert_false(ly_spiffe_id_member_of(&a, ""));
	assert_false(ly_spiffe_id_member_of(&a, NULL));
	assert_true(ly_spiffe_id_equal(&a, &b));
	assert_false(ly_spiffe_id_equal(&a, &c)); /* paths are case-sensitive */
	/* A refused parse is a member of nothing and equal to nothing. */
	struct ly_spiffe_id bad1, bad2;
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://x/..", &bad1, NULL), LY_E_INVALID);
	assert_int_equal(ly_spiffe_id_parse_str("nope", &bad2, NULL), LY_E_INVALID);
	assert_false(ly_spiffe_id_member_of(&bad1, ""));
	assert_false(ly_spiffe_id_equal(&bad1, &bad2));
}

static void
test_from_parts(void **state)
{
	struct ly_spiffe_id id;
	struct ly_error err;
	assert_int_equal(ly_spiffe_id_from_parts("example.org", "/ns/prod", &id, &err), LY_OK);
	assert_string_equal(id.id, "spiffe://example.org/ns/prod");
	assert_string_equal(id.trust_domain, "example.org");
	assert_int_equal(ly_spiffe_id_from_parts("example.org", "", &id, &err), LY_OK);
	assert_string_equal(id.id, "spiffe://example.org");
	assert_true(ly_spiffe_id_is_trust_domain_id(&id));
	assert_int_equal(ly_spiffe_id_from_parts("example.org", NULL, &id, &err), LY_OK);
	assert_string_equal(id.id, "spiffe://example.org");

	assert_int_equal(ly_spiffe_id_from_parts("example.org", "ns/prod", &id, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "does not start with '/'"));
	assert_int_equal(ly_spiffe_id_from_parts("example.org", "/a/", &id, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "trailing"));
	assert_int_equal(ly_spiffe_id_from_parts("example.org", "/a/../b", &id, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "'..'"));
	assert_int_equal(ly_spiffe_id_from_parts("Example.org", "/a", &id, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "upper-case"));
	assert_int_equal(ly_spiffe_id_from_parts("", "/a", &id, &err), LY_E_INVALID);
	assert_int_equal(ly_spiffe_id_from_parts("spiffe://example.org", "/a", &id, &err), LY_E_INVALID);
	assert_int_equal(ly_spiffe_id_from_parts(NULL, "/a", &id, &err), LY_E_INVALID);

	/* Length: exactly 2048 accepted, 2049 refused. */
	char path[LY_SPIFFE_ID_MAX + 2];
	size_t plen = LY_SPIFFE_ID_MAX - 9 - 2; /* "spiffe://" + "td" */
	path[0] = '/';
	memset(path + 1, 'x', plen - 1);
	path[plen] = '\0';
	assert_int_equal(ly_spiffe_id_from_parts("td", path, &id, &err), LY_OK);
	assert_int_equal(strlen(id.id), LY_SPIFFE_ID_MAX);
	path[plen] = 'x';
	path[plen + 1] = '\0';
	assert_int_equal(ly_spiffe_id_from_parts("td", path, &id, &err), LY_E_LIMIT);
}

static void
test_trust_domain_parse(void **state)
{
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_error err;
	assert_int_equal(ly_trust_domain_parse("example.org", false, td, &err), LY_OK);
	assert_string_equal(td, "example.org");
	assert_int_equal(ly_trust_domain_parse("example.org", true, td, &err), LY_OK);
	assert_string_equal(td, "example.org");
	/* The ID form, only when allowed, and only without a path. */
	assert_int_equal(ly_trust_domain_parse("spiffe://example.org", true, td, &err), LY_OK);
	assert_string_equal(td, "example.org");
	assert_int_equal(ly_trust_domain_parse("spiffe://example.org", false, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "bare name"));
	assert_string_equal(td, "");
	assert_int_equal(ly_trust_domain_parse("spiffe://example.org/a", true, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "has a path"));
	assert_int_equal(ly_trust_domain_parse("spiffe://example.org/", true, td, &err), LY_E_INVALID);
	assert_int_equal(ly_trust_domain_parse("SPIFFE://example.org", true, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "lower-case"));
	assert_int_equal(ly_trust_domain_parse("spiffe://Example.org", true, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "upper-case character 'E' at offset 9"));

	/* Bare-name rules. */
	assert_int_equal(ly_trust_domain_parse("", false, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "empty"));
	assert_int_equal(ly_trust_domain_parse("Example.org", false, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "upper-case character 'E' at offset 0"));
	assert_int_equal(ly_trust_domain_parse("example.org:443", false, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "port"));
	assert_int_equal(ly_trust_domain_parse("example.org/a", false, td, &err), LY_E_INVALID);
	assert_int_equal(ly_trust_domain_parse("u@example.org", false, td, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "userinfo"));

	char big[LY_TRUST_DOMAIN_MAX + 2];
	memset(big, 'a', 255);
	big[255] = '\0';
	assert_int_equal(ly_trust_domain_parse(big, false, td, &err), LY_OK);
	assert_int_equal(strlen(td), 255);
	big[255] = 'a';
	big[256] = '\0';
	assert_int_equal(ly_trust_domain_parse(big, false, td, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "longer than 255"));
}

/* Checks `s` for `use`: LY_OK, or LY_E_INVALID with `needle` in the message. */
static void
use_case(const char *s, enum ly_id_use use, bool ok, const char *needle)
{
	struct ly_spiffe_id id;
	struct ly_error err;
	ly_error_clear(&err);
	assert_int_equal(ly_spiffe_id_parse_str(s, &id, NULL), LY_OK);
	ly_status rc = ly_spiffe_id_check_use(&id, use, &err);
	if (ok && rc != LY_OK)
		fail_msg("'%s' use %d: refused: %s", s, (int)use, err.msg);
	if (!ok && (rc != LY_E_INVALID || strstr(err.msg, needle) == NULL))
		fail_msg("'%s' use %d: got %d '%s', want refused with '%s'", s, (int)use, rc, err.msg, needle);
	/* The message never shows the ID (it may hold a join token). */
	if (!ok)
		assert_null(strstr(err.msg, "spiffe://"));
}

/*
 * Lanyard's reserved namespace (SPEC §2, lib/spiffeid.h): which reserved
 * IDs each use takes. The table is the rule: every reserved ID the code
 * makes (server, join_token default, x509pop, k8s_psat, a named agent)
 * against every place an ID enters.
 */
static void
test_reserved_namespace(void **state)
{
	(void)state;
	static const struct {
		const char *id;
		bool granted, parent, token, agent;
	} t[] = {
		/*                                                   entry  parent token  agent */
		{ "spiffe://td/lanyard/server", false, true, false, false },
		{ "spiffe://td/lanyard", false, false, false, false },
		{ "spiffe://td/lanyard/agent", false, false, false, false },
		{ "spiffe://td/lanyard/other", false, false, false, false },
		{ "spiffe://td/lanyard/server/x", false, false, false, false },
		{ "spiffe://td/lanyard/agent/join_token/abc", false, true, false, true },
		{ "spiffe://td/lanyard/agent/join_token", false, true, false, true },
		{ "spiffe://td/lanyard/agent/x509pop/0123abcd", false, true, false, true },
		{ "spiffe://td/lanyard/agent/k8s_psat/prod/uid", false, true, false, true },
		{ "spiffe://td/lanyard/agent/node1", false, true, true, true },
		{ "spiffe://td/lanyard/agent/x509popx", false, true, true, true },
		{ "spiffe://td/lanyard/agent/node1/a/b", false, true, true, true },
		/* Outside: segment-wise, so a longer first segment is not reserved. */
		{ "spiffe://td/lanyardx", true, true, true, true },
		{ "spiffe://td/lanyardserver", true, true, true, true },
		{ "spiffe://td/web/lanyard/server", true, true, true, true },
		{ "spiffe://td/Lanyard/server", true, true, true, true },
		{ "spiffe://td/web", true, true, true, true },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct ly_spiffe_id id;
		assert_int_equal(ly_spiffe_id_parse_str(t[i].id, &id, NULL), LY_OK);
		bool reserved = !(t[i].granted);
		if (ly_spiffe_id_is_reserved(&id) != reserved)
			fail_msg("'%s': is_reserved %d", t[i].id, !reserved);
		use_case(t[i].id, LY_ID_GRANTED, t[i].granted, "an entry may not grant it");
		use_case(t[i].id, LY_ID_PARENT, t[i].parent, "names neither the server");
		use_case(t[i].id, LY_ID_JOIN_TOKEN, t[i].token, "join token");
		use_case(t[i].id, LY_ID_AGENT, t[i].agent, "is not an agent's");
	}
	struct ly_error err;
	assert_int_equal(ly_spiffe_id_check_use(NULL, LY_ID_GRANTED, &err), LY_E_INTERNAL);
	assert_false(ly_spiffe_id_is_reserved(NULL));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accepts_ordinary),
		cmocka_unit_test(test_accepts_all_chars),
		cmocka_unit_test(test_trust_domain_id),
		cmocka_unit_test(test_scheme),
		cmocka_unit_test(test_trust_domain_empty),
		cmocka_unit_test(test_trust_domain_upper_case),
		cmocka_unit_test(test_trust_domain_port),
		cmocka_unit_test(test_trust_domain_userinfo),
		cmocka_unit_test(test_trust_domain_bad_chars),
		cmocka_unit_test(test_trust_domain_length),
		cmocka_unit_test(test_id_length),
		cmocka_unit_test(test_path_empty_segment),
		cmocka_unit_test(test_path_trailing_slash),
		cmocka_unit_test(test_path_dot_segments),
		cmocka_unit_test(test_path_percent_encoding),
		cmocka_unit_test(test_path_query_fragment),
		cmocka_unit_test(test_path_bad_chars),
		cmocka_unit_test(test_embedded_nul),
		cmocka_unit_test(test_null_inputs),
		cmocka_unit_test(test_reparse_in_place),
		cmocka_unit_test(test_membership_and_equal),
		cmocka_unit_test(test_from_parts),
		cmocka_unit_test(test_trust_domain_parse),
		cmocka_unit_test(test_reserved_namespace),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
