/*
 * test_config.c: the configuration file parser. Every refusal has a test
 * that fails if its rule is removed, and every getter is tested at its
 * bounds and with values of the wrong kind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/config.h"

static const char example[] =
    "# lanyard-server.yaml\n"                              /* 1 */
    "server:\n"                                            /* 2 */
    "  trust_domain: example.org\n"                        /* 3 */
    "  bind_address: 127.0.0.1\n"                          /* 4 */
    "  server_port: 8081\n"                                /* 5 */
    "  data_dir: /var/lib/lanyard/server\n"                /* 6 */
    "  log_level: info\n"                                  /* 7 */
    "  ca_ttl: 24h\n"                                      /* 8 */
    "  ca_key_type: ec-p256\n"                             /* 9 */
    "  node_attestors:\n"                                  /* 10 */
    "    join_token: {}\n"                                 /* 11 */
    "    k8s_psat:\n"                                      /* 12 */
    "      cluster: demo\n"                                /* 13 */
    "      service_account_allow_list: [\"lanyard:lanyard-agent\"]\n" /* 14 */
    "      audiences:\n"                                   /* 15 */
    "        - lanyard-server\n"                           /* 16 */
    "        - 'other'\n";                                 /* 17 */

static struct ly_config *
load(const char *yaml)
{
	struct ly_config *cfg = NULL;
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_config_load_buf("t.yaml", yaml, strlen(yaml), &cfg, &err);
	if (rc != LY_OK)
		fail_msg("load refused: %s", err.msg);
	assert_non_null(cfg);
	return cfg;
}

static void
refuse_n(const char *yaml, size_t len, ly_status code, const char *needle)
{
	struct ly_config *cfg = (struct ly_config *)0x1;
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_config_load_buf("t.yaml", yaml, len, &cfg, &err);
	if (rc != code || strstr(err.msg, needle) == NULL)
		fail_msg("'%.60s': got %d '%s', want %d '%s'", yaml, rc, err.msg, code, needle);
	assert_null(cfg);
}

static void
refuse(const char *yaml, ly_status code, const char *needle)
{
	refuse_n(yaml, strlen(yaml), code, needle);
}

/* Loads a one-key document "k: <value>" and returns the config. */
static struct ly_config *
load_value(const char *value)
{
	char doc[256];
	snprintf(doc, sizeof(doc), "k: %s\n", value);
	return load(doc);
}

/* ---- loading ---- */

static void
test_example(void **state)
{
	struct ly_config *cfg = load(example);
	struct ly_error err;
	const char *s;
	uint16_t port;
	uint64_t ttl;
	const char *const *list;
	size_t n;

	assert_string_equal(ly_config_name(cfg), "t.yaml");
	assert_int_equal(ly_config_get_string(cfg, "server.trust_domain", NULL, &s, &err), LY_OK);
	assert_string_equal(s, "example.org");
	assert_int_equal(ly_config_line(cfg, "server.trust_domain"), 3);
	assert_int_equal(ly_config_get_port(cfg, "server.server_port", 1, &port, &err), LY_OK);
	assert_int_equal(port, 8081);
	assert_int_equal(ly_config_get_duration(cfg, "server.ca_ttl", 0, &ttl, &err), LY_OK);
	assert_int_equal(ttl, 24 * 3600);
	assert_int_equal(ly_config_get_string(cfg, "server.node_attestors.k8s_psat.cluster", NULL, &s, &err), LY_OK);
	assert_string_equal(s, "demo");
	assert_int_equal(ly_config_line(cfg, "server.node_attestors.k8s_psat.cluster"), 13);
	assert_int_equal(ly_config_get_list(cfg, "server.node_attestors.k8s_psat.service_account_allow_list", &list,
	                     &n, &err),
	    LY_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0], "lanyard:lanyard-agent");
	assert_null(list[1]);
	assert_int_equal(ly_config_get_list(cfg, "server.node_attestors.k8s_psat.audiences", &list, &n, &err), LY_OK);
	assert_int_equal(n, 2);
	assert_string_equal(list[0], "lanyard-server");
	assert_string_equal(list[1], "other");
	assert_null(list[2]);
	/* Mappings are keys too, in file order; an empty one is still present. */
	assert_true(ly_config_has(cfg, "server"));
	assert_true(ly_config_has(cfg, "server.node_attestors.join_token"));
	assert_false(ly_config_has(cfg, "server.node_attestors.x509pop"));
	assert_string_equal(ly_config_key_at(cfg, 0), "server");
	assert_string_equal(ly_config_key_at(cfg, 1), "server.trust_domain");
	assert_int_equal(ly_config_count(cfg), 14);
	assert_null(ly_config_key_at(cfg, 14));
	ly_config_free(cfg);
}

static void
test_empty_and_comments(void **state)
{
	struct ly_config *cfg = load("");
	assert_int_equal(ly_config_count(cfg), 0);
	ly_config_free(cfg);
	cfg = load("# nothing here\n\n   # still nothing\n");
	assert_int_equal(ly_config_count(cfg), 0);
	ly_config_free(cfg);
	cfg = load("{}");
	assert_int_equal(ly_config_count(cfg), 0);
	ly_config_free(cfg);
	struct ly_config *c2 = NULL;
	assert_int_equal(ly_config_load_buf("t.yaml", NULL, 0, &c2, NULL), LY_OK);
	ly_config_free(c2);
	assert_int_equal(ly_config_load_buf("t.yaml", NULL, 1, &c2, NULL), LY_E_INVALID);
}

static void
test_root_not_mapping(void **state)
{
	refuse("just a string\n", LY_E_INVALID, "t.yaml:1: the document is not a mapping of keys");
	refuse("- a\n- b\n", LY_E_INVALID, "not a mapping");
	refuse("---\n", LY_E_INVALID, "not a mapping");
	refuse("---\n...\n", LY_E_INVALID, "not a mapping");
}

static void
test_syntax_error(void **state)
{
	refuse("a: 1\nb: [1, 2\nc: 3\n", LY_E_INVALID, "YAML syntax error");
	refuse("a: 1\n b: 2\n", LY_E_INVALID, "t.yaml:2: YAML syntax error");
	refuse("a: 'unterminated\n", LY_E_INVALID, "YAML syntax error");
	/* Invalid UTF-8 and control characters are refused by the reader. */
	refuse("a: \xff\xfe\xfd\n", LY_E_INVALID, "t.yaml: byte offset");
	refuse_n("a: b\0c\n", 7, LY_E_INVALID, "t.yaml: byte offset");
}

static void
test_duplicate_key(void **state)
{
	refuse("server:\n  server_port: 1\n  log_level: info\n  server_port: 2\n", LY_E_INVALID,
	    "t.yaml:4: key server.server_port: duplicate key (first at line 2)");
	refuse("a: 1\na: 1\n", LY_E_INVALID, "key a: duplicate key");
	refuse("a: {x: 1}\na: {y: 1}\n", LY_E_INVALID, "key a: duplicate key");
	refuse("a: {x: 1, x: 2}\n", LY_E_INVALID, "key a.x: duplicate key");
	/* The same name under different parents is fine. */
	struct ly_config *cfg = load("a: {x: 1}\nb: {x: 2}\n");
	ly_config_free(cfg);
}

static void
test_anchors_aliases(void **state)
{
	refuse("a: &x 1\nb: 2\n", LY_E_INVALID, "t.yaml:1: anchors ('&') are not allowed");
	refuse("a: 1\nb: *x\n", LY_E_INVALID, "t.yaml:2: aliases ('*') are not allowed");
	refuse("a: &l [1, 2]\n", LY_E_INVALID, "anchors");
	refuse("a: &m {x: 1}\n", LY_E_INVALID, "anchors");
	refuse("&k a: 1\n", LY_E_INVALID, "anchors");
	/* Billion laughs: refused at the first anchor, nothing expanded. */
	refuse("a: &a [\"lol\",\"lol\",\"lol\"]\n"
	       "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
	       "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
	    LY_E_INVALID, "anchors");
	refuse("a: [1, *x]\n", LY_E_INVALID, "aliases");
	refuse("a:\n  <<: *base\n", LY_E_INVALID, "key '<<': invalid character"); /* merge keys */
}

static void
test_tags(void **state)
{
	refuse("a: !!str 1\n", LY_E_INVALID, "t.yaml:1: tags ('!') are not allowed");
	refuse("a: !custom x\n", LY_E_INVALID, "tags");
	refuse("a: !!seq [1]\n", LY_E_INVALID, "tags");
	refuse("a: !!map {x: 1}\n", LY_E_INVALID, "tags");
	refuse("!!str a: 1\n", LY_E_INVALID, "tags");
	refuse("%TAG !e! tag:example.com,2000:\n---\na: 1\n", LY_E_INVALID, "tags");
}

static void
test_multi_document(void **state)
{
	refuse("a: 1\n---\nb: 2\n", LY_E_INVALID, "t.yaml:2: more than one document");
	refuse("---\na: 1\n...\n---\na: 1\n", LY_E_INVALID, "more than one document");
	struct ly_config *cfg = load("---\na: 1\n...\n");
	ly_config_free(cfg);
}

static void
test_non_scalar_keys(void **state)
{
	refuse("? [a, b]\n: 1\n", LY_E_INVALID, "t.yaml:1: a key must be a name, not a list");
	refuse("{a: 1}: 2\n", LY_E_INVALID, "a key must be a name, not a mapping");
	refuse("s:\n  ? {x: 1}\n  : 2\n", LY_E_INVALID, "t.yaml:2: s: a key must be a name");
}

static void
test_key_names(void **state)
{
	refuse("a.b: 1\n", LY_E_INVALID, "key 'a.b': invalid character at offset 1");
	refuse("a.b: 1\n", LY_E_INVALID, "quote a trust domain: \"b.test\":");
	/* Quoted keys may hold inner dots (trust domains), never leading, trailing or doubled ones. */
	refuse("\"a..b\": 1\n", LY_E_INVALID, "invalid character at offset 2");
	refuse("\".a\": 1\n", LY_E_INVALID, "invalid character at offset 0");
	refuse("'a.': 1\n", LY_E_INVALID, "invalid character at offset 1");
	refuse("a b: 1\n", LY_E_INVALID, "invalid character");
	refuse("'': 1\n", LY_E_INVALID, "empty key");
	refuse("?\n: 1\n", LY_E_INVALID, "empty key");
	refuse("s:\n  \"\\u00e9\": 1\n", LY_E_INVALID, "invalid character");
	refuse("s:\n  x/y: 1\n", LY_E_INVALID, "t.yaml:2: key 'x/y'");
	/* Quoted names with allowed characters are fine. */
	struct ly_config *cfg = load("\"Ok_key-1\": 1\n");
	assert_true(ly_config_has(cfg, "Ok_key-1"));
	ly_config_free(cfg);
	cfg = load("s:\n  \"b.test\":\n    url: x\n");
	assert_true(ly_config_has(cfg, "s.b.test.url"));
	ly_config_free(cfg);
}

static void
test_lists_hold_scalars_only(void **state)
{
	refuse("a:\n  - x: 1\n", LY_E_INVALID, "t.yaml:2: key a: a list may hold only single values, not mappings");
	refuse("a: [[1, 2]]\n", LY_E_INVALID, "not lists");
	refuse("a: [{x: 1}]\n", LY_E_INVALID, "not mappings");
	refuse("a: [1, ~]\n", LY_E_INVALID, "key a: list item 1 has no value");
	refuse("a:\n  -\n", LY_E_INVALID, "list item 0 has no value");
	refuse("a: [\"x\\0y\"]\n", LY_E_INVALID, "NUL byte");
	/* A list as the root's direct value is fine, empty too. */
	struct ly_config *cfg = load("a: []\nb: [\"\"]\n");
	const char *const *l;
	size_t n;
	assert_int_equal(ly_config_get_list(cfg, "a", &l, &n, NULL), LY_OK);
	assert_int_equal(n, 0);
	assert_null(l[0]);
	assert_int_equal(ly_config_get_list(cfg, "b", &l, &n, NULL), LY_OK);
	assert_int_equal(n, 1);
	assert_string_equal(l[0], "");
	ly_config_free(cfg);
}

static void
test_depth(void **state)
{
	struct ly_config *cfg = load("a:\n b:\n  c:\n   d:\n    e:\n     f: 1\n");
	assert_true(ly_config_has(cfg, "a.b.c.d.e.f"));
	ly_config_free(cfg);
	cfg = load("a: {b: {c: {d: {e: {f: {g: {}}}}}}}\n");
	assert_true(ly_config_has(cfg, "a.b.c.d.e.f.g"));
	ly_config_free(cfg);
	refuse("a:\n b:\n  c:\n   d:\n    e:\n     f:\n      g:\n       h: 1\n", LY_E_LIMIT,
	    "t.yaml:8: key a.b.c.d.e.f.g.h: nested deeper than 7 levels");
	refuse("a: {b: {c: {d: {e: {f: {g: {h: {i: 1}}}}}}}}\n", LY_E_LIMIT, "nested deeper than 7");
}

static void
test_nul_in_value(void **state)
{
	refuse("a: \"x\\0y\"\n", LY_E_INVALID, "t.yaml:1: key a: value contains a NUL byte");
	refuse("a: \"\\x00\"\n", LY_E_INVALID, "NUL byte");
}

static void
test_caps(void **state)
{
	/* File size. */
	size_t big = LY_CONFIG_FILE_MAX + 1;
	char *doc = malloc(big + 1);
	assert_non_null(doc);
	memset(doc, '#', big);
	doc[big] = '\0';
	refuse_n(doc, big, LY_E_LIMIT, "over the 1048576-byte limit");
	/* Exactly the cap is read (a comment-only file). */
	struct ly_config *cfg = NULL;
	assert_int_equal(ly_config_load_buf("t.yaml", doc, big - 1, &cfg, NULL), LY_OK);
	ly_config_free(cfg);

	/* Keys and list items: LY_CONFIG_ENTRIES_MAX in all. */
	size_t o = 0;
	size_t sz = big;
	for (int i = 0; i < LY_CONFIG_ENTRIES_MAX; i++)
		o += (size_t)snprintf(doc + o, sz - o, "k%d: %d\n", i, i);
	cfg = load(doc);
	assert_int_equal(ly_config_count(cfg), LY_CONFIG_ENTRIES_MAX);
	ly_config_free(cfg);
	snprintf(doc + o, sz - o, "one_more: 1\n");
	refuse(doc, LY_E_LIMIT, "t.yaml:1025: more than 1024 keys and list items");
	o = (size_t)snprintf(doc, sz, "l: [");
	for (int i = 0; i < LY_CONFIG_ENTRIES_MAX; i++)
		o += (size_t)snprintf(doc + o, sz - o, "%d, ", i);
	snprintf(doc + o, sz - o, "x]\n");
	refuse(doc, LY_E_LIMIT, "more than 1024 keys and list items");

	/* Value size. */
	o = (size_t)snprintf(doc, sz, "v: ");
	memset(doc + o, 'x', LY_CONFIG_VALUE_MAX);
	doc[o + LY_CONFIG_VALUE_MAX] = '\0';
	cfg = load(doc);
	const char *s;
	assert_int_equal(ly_config_get_string(cfg, "v", NULL, &s, NULL), LY_OK);
	assert_int_equal(strlen(s), LY_CONFIG_VALUE_MAX);
	ly_config_free(cfg);
	doc[o + LY_CONFIG_VALUE_MAX] = 'x';
	doc[o + LY_CONFIG_VALUE_MAX + 1] = '\0';
	refuse(doc, LY_E_LIMIT, "t.yaml:1: key v: value longer than 4096 bytes");
	memcpy(doc, "v: [", 4);
	strcat(doc, "xx]");
	refuse(doc, LY_E_LIMIT, "value longer than 4096 bytes");

	/* Key size: the dotted path. */
	memset(doc, 'k', LY_CONFIG_KEY_MAX);
	strcpy(doc + LY_CONFIG_KEY_MAX, ": 1\n");
	cfg = load(doc);
	ly_config_free(cfg);
	memset(doc, 'k', LY_CONFIG_KEY_MAX + 1);
	strcpy(doc + LY_CONFIG_KEY_MAX + 1, ": 1\n");
	refuse(doc, LY_E_LIMIT, "key longer than 256 bytes");
	o = (size_t)snprintf(doc, sz, "a:\n  ");
	memset(doc + o, 'k', LY_CONFIG_KEY_MAX - 1);
	strcpy(doc + o + LY_CONFIG_KEY_MAX - 1, ": 1\n");
	refuse(doc, LY_E_LIMIT, "t.yaml:2: key longer than 256 bytes");
	free(doc);
}

/* ---- getters ---- */

static void
test_null_values(void **state)
{
	struct ly_config *cfg = load("a:\nb: ~\nc: null\nd: ''\ne: \"null\"\n");
	const char *s;
	struct ly_error err;
	uint64_t u;
	const char *const *l;
	size_t n;
	assert_int_equal(ly_config_get_string(cfg, "a", "def", &s, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:1: key a: has no value");
	assert_int_equal(ly_config_get_string(cfg, "b", "def", &s, &err), LY_E_INVALID);
	assert_int_equal(ly_config_get_u64(cfg, "c", 1, &u, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "t.yaml:3: key c: has no value"));
	assert_int_equal(ly_config_get_list(cfg, "a", &l, &n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "write [] for an empty list"));
	/* Quoted, they are strings. */
	assert_int_equal(ly_config_get_string(cfg, "d", "def", &s, &err), LY_OK);
	assert_string_equal(s, "");
	assert_int_equal(ly_config_get_string(cfg, "e", "def", &s, &err), LY_OK);
	assert_string_equal(s, "null");
	assert_true(ly_config_has(cfg, "a"));
	ly_config_free(cfg);
}

static void
test_get_string(void **state)
{
	struct ly_config *cfg = load("s: hello world\nl: [a]\nm: {x: y}\nq: \"  spaced  \"\n");
	const char *s = NULL;
	struct ly_error err;
	assert_int_equal(ly_config_get_string(cfg, "s", NULL, &s, &err), LY_OK);
	assert_string_equal(s, "hello world");
	assert_int_equal(ly_config_get_string(cfg, "q", NULL, &s, &err), LY_OK);
	assert_string_equal(s, "  spaced  ");
	assert_int_equal(ly_config_get_string(cfg, "absent", "dflt", &s, &err), LY_OK);
	assert_string_equal(s, "dflt");
	assert_int_equal(ly_config_get_string(cfg, "absent", NULL, &s, &err), LY_OK);
	assert_null(s);
	s = "unchanged";
	assert_int_equal(ly_config_get_string(cfg, "l", NULL, &s, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:2: key l: is a list, not a single value");
	assert_string_equal(s, "unchanged");
	assert_int_equal(ly_config_get_string(cfg, "m", NULL, &s, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:3: key m: is a mapping, not a single value");
	ly_config_free(cfg);
}

static void
expect_u64(const char *value, ly_status code, uint64_t want, const char *needle)
{
	struct ly_config *cfg = load_value(value);
	struct ly_error err;
	ly_error_clear(&err);
	uint64_t u = 7;
	ly_status rc = ly_config_get_u64(cfg, "k", 0, &u, &err);
	if (rc != code || (code == LY_OK && u != want) || (code != LY_OK && strstr(err.msg, needle) == NULL))
		fail_msg("u64 '%s': got %d %llu '%s'", value, rc, (unsigned long long)u, err.msg);
	if (code != LY_OK)
		assert_int_equal(u, 7);
	ly_config_free(cfg);
}

static void
test_get_u64(void **state)
{
	expect_u64("0", LY_OK, 0, NULL);
	expect_u64("42", LY_OK, 42, NULL);
	expect_u64("'42'", LY_OK, 42, NULL);
	expect_u64("18446744073709551615", LY_OK, UINT64_MAX, NULL);
	expect_u64("18446744073709551616", LY_E_INVALID, 0, "t.yaml:1: key k: '18446744073709551616' is too large");
	expect_u64("99999999999999999999999", LY_E_INVALID, 0, "is too large");
	expect_u64("-1", LY_E_INVALID, 0, "'-1' is negative");
	expect_u64("+1", LY_E_INVALID, 0, "is not a decimal number");
	expect_u64("0x10", LY_E_INVALID, 0, "is not a decimal number");
	expect_u64("010", LY_E_INVALID, 0, "has a leading zero");
	expect_u64("1.5", LY_E_INVALID, 0, "is not a decimal number");
	expect_u64("1e3", LY_E_INVALID, 0, "is not a decimal number");
	expect_u64("' 1'", LY_E_INVALID, 0, "is not a decimal number");
	expect_u64("'1 '", LY_E_INVALID, 0, "is not a decimal number");
	expect_u64("''", LY_E_INVALID, 0, "'' is not a number");
	expect_u64("1_000", LY_E_INVALID, 0, "is not a decimal number");
	expect_u64("[1]", LY_E_INVALID, 0, "is a list");
	/* Absent: the default. */
	uint64_t u;
	assert_int_equal(ly_config_get_u64(NULL, "k", 99, &u, NULL), LY_OK);
	assert_int_equal(u, 99);
}

static void
expect_port(const char *value, ly_status code, uint16_t want, const char *needle)
{
	struct ly_config *cfg = load_value(value);
	struct ly_error err;
	ly_error_clear(&err);
	uint16_t p = 7;
	ly_status rc = ly_config_get_port(cfg, "k", 1, &p, &err);
	if (rc != code || (code == LY_OK && p != want) || (code != LY_OK && strstr(err.msg, needle) == NULL))
		fail_msg("port '%s': got %d %u '%s'", value, rc, p, err.msg);
	if (code != LY_OK)
		assert_int_equal(p, 7);
	ly_config_free(cfg);
}

static void
test_get_port(void **state)
{
	expect_port("1", LY_OK, 1, NULL);
	expect_port("8081", LY_OK, 8081, NULL);
	expect_port("65535", LY_OK, 65535, NULL);
	expect_port("0", LY_E_INVALID, 0, "t.yaml:1: key k: '0' is not a port (1..65535)");
	expect_port("65536", LY_E_INVALID, 0, "is not a port (1..65535)");
	expect_port("4294967297", LY_E_INVALID, 0, "is not a port"); /* 2^32 + 1 must not wrap to 1 */
	expect_port("-80", LY_E_INVALID, 0, "is negative");
	expect_port("http", LY_E_INVALID, 0, "is not a decimal number");
	expect_port("{a: 1}", LY_E_INVALID, 0, "is a mapping");
	uint16_t p;
	assert_int_equal(ly_config_get_port(NULL, "k", 8081, &p, NULL), LY_OK);
	assert_int_equal(p, 8081);
}

static void
expect_bool(const char *value, ly_status code, bool want)
{
	struct ly_config *cfg = load_value(value);
	struct ly_error err;
	ly_error_clear(&err);
	bool b = !want;
	ly_status rc = ly_config_get_bool(cfg, "k", !want, &b, &err);
	if (rc != code || (code == LY_OK && b != want))
		fail_msg("bool '%s': got %d %d '%s'", value, rc, b, err.msg);
	if (code != LY_OK)
		assert_non_null(strstr(err.msg, "is not true or false"));
	ly_config_free(cfg);
}

static void
test_get_bool(void **state)
{
	expect_bool("true", LY_OK, true);
	expect_bool("false", LY_OK, false);
	expect_bool("\"true\"", LY_OK, true);
	expect_bool("True", LY_E_INVALID, false);
	expect_bool("TRUE", LY_E_INVALID, false);
	expect_bool("yes", LY_E_INVALID, false);
	expect_bool("no", LY_E_INVALID, false);
	expect_bool("on", LY_E_INVALID, false);
	expect_bool("1", LY_E_INVALID, false);
	expect_bool("0", LY_E_INVALID, false);
	expect_bool("'true '", LY_E_INVALID, false);
	bool b = false;
	assert_int_equal(ly_config_get_bool(NULL, "k", true, &b, NULL), LY_OK);
	assert_true(b);
}

static void
expect_duration(const char *value, ly_status code, uint64_t want, const char *needle)
{
	struct ly_config *cfg = load_value(value);
	struct ly_error err;
	ly_error_clear(&err);
	uint64_t d = 7;
	ly_status rc = ly_config_get_duration(cfg, "k", 0, &d, &err);
	if (rc != code || (code == LY_OK && d != want) || (code != LY_OK && strstr(err.msg, needle) == NULL))
		fail_msg("duration '%s': got %d %llu '%s'", value, rc, (unsigned long long)d, err.msg);
	if (code != LY_OK)
		assert_int_equal(d, 7);
	ly_config_free(cfg);
}

static void
test_get_duration(void **state)
{
	const char *bad = "is not a duration";
	expect_duration("300", LY_OK, 300, NULL);
	expect_duration("300s", LY_OK, 300, NULL);
	expect_duration("5m", LY_OK, 300, NULL);
	expect_duration("2h", LY_OK, 7200, NULL);
	expect_duration("1d", LY_OK, 86400, NULL);
	expect_duration("0", LY_OK, 0, NULL);
	expect_duration("0s", LY_OK, 0, NULL);
	expect_duration("1h30m", LY_OK, 5400, NULL);
	expect_duration("1d2h3m4s", LY_OK, 93784, NULL);
	expect_duration("1h05m", LY_OK, 3900, NULL);
	expect_duration("18446744073709551615", LY_OK, UINT64_MAX, NULL);
	expect_duration("213503982334601d", LY_OK, 213503982334601ULL * 86400, NULL);
	expect_duration("213503982334602d", LY_E_INVALID, 0, "is too large");
	expect_duration("213503982334601d25600s", LY_E_INVALID, 0, "is too large"); /* the sum overflows */
	expect_duration("18446744073709551616s", LY_E_INVALID, 0, "is too large");
	expect_duration("-5m", LY_E_INVALID, 0, "t.yaml:1: key k: '-5m' is negative");
	expect_duration("-300", LY_E_INVALID, 0, "is negative");
	expect_duration("5x", LY_E_INVALID, 0, bad);
	expect_duration("5ms", LY_E_INVALID, 0, bad);
	expect_duration("m", LY_E_INVALID, 0, bad);
	expect_duration("1h30", LY_E_INVALID, 0, bad);
	expect_duration("1m1h", LY_E_INVALID, 0, bad);
	expect_duration("1h1h", LY_E_INVALID, 0, bad);
	expect_duration("'5 m'", LY_E_INVALID, 0, bad);
	expect_duration("5M", LY_E_INVALID, 0, bad);
	expect_duration("1.5h", LY_E_INVALID, 0, bad);
	expect_duration("''", LY_E_INVALID, 0, bad);
	expect_duration("0300", LY_E_INVALID, 0, "leading zero");
	expect_duration("[5m]", LY_E_INVALID, 0, "is a list");
	uint64_t d;
	assert_int_equal(ly_config_get_duration(NULL, "k", 3600, &d, NULL), LY_OK);
	assert_int_equal(d, 3600);
}

static void
test_get_list(void **state)
{
	struct ly_config *cfg = load("l:\n  - a\n  - \"b c\"\ns: single\nn:\nm: {x: 1}\n");
	const char *const *l = NULL;
	size_t n = 99;
	struct ly_error err;
	assert_int_equal(ly_config_get_list(cfg, "l", &l, &n, &err), LY_OK);
	assert_int_equal(n, 2);
	assert_string_equal(l[0], "a");
	assert_string_equal(l[1], "b c");
	assert_null(l[2]);
	assert_int_equal(ly_config_get_list(cfg, "absent", &l, &n, &err), LY_OK);
	assert_int_equal(n, 0);
	assert_non_null(l);
	assert_null(l[0]);
	assert_int_equal(ly_config_get_list(cfg, "s", &l, &n, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:4: key s: is a single value, not a list (write [value])");
	assert_int_equal(ly_config_get_list(cfg, "n", &l, &n, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "t.yaml:5: key n: has no value"));
	assert_int_equal(ly_config_get_list(cfg, "m", &l, &n, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:6: key m: is a mapping, not a list");
	assert_int_equal(ly_config_get_list(NULL, "l", &l, &n, &err), LY_OK);
	assert_int_equal(n, 0);
	ly_config_free(cfg);
}

/* ---- unknown keys ---- */

static void
test_check_known(void **state)
{
	static const char *const known[] = {
		"server.trust_domain",
		"server.server_port",
		"server.node_attestors.join_token",
		"server.node_attestors.k8s_psat.*",
		NULL,
	};
	struct ly_error err;
	struct ly_config *cfg = load("server:\n  trust_domain: a\n  server_port: 1\n  node_attestors:\n"
	                             "    join_token: {}\n    k8s_psat:\n      cluster: c\n      x: [1]\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_OK);
	ly_config_free(cfg);

	/* A typo, with a suggestion. */
	cfg = load("server:\n  server_port: 1\n  # comment\n  trust_domian: example.org\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_E_INVALID);
	assert_string_equal(err.msg,
	    "t.yaml:4: unknown key server.trust_domian (did you mean server.trust_domain?)");
	ly_config_free(cfg);

	/* Far from anything: no suggestion. */
	cfg = load("server:\n  color: blue\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:2: unknown key server.color");
	ly_config_free(cfg);

	/* A mapping is known only on the way to a known key. */
	cfg = load("other: {}\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:1: unknown key other");
	ly_config_free(cfg);
	/* A scalar at a mapping's name is not a mapping. */
	cfg = load("server: x\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_E_INVALID);
	ly_config_free(cfg);
	/* Below a known scalar key is unknown. */
	cfg = load("server:\n  trust_domain: {a: 1}\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "unknown key server.trust_domain.a"));
	ly_config_free(cfg);
	/* The wildcard does not reach a sibling with a longer name. */
	cfg = load("server:\n  node_attestors:\n    k8s_psat2: {}\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "unknown key server.node_attestors.k8s_psat2"));
	ly_config_free(cfg);
	/* Prefix match needs a whole name: "server.trust" is not below "server.trust_domain". */
	cfg = load("server:\n  trust: {}\n");
	assert_int_equal(ly_config_check_known(cfg, known, &err), LY_E_INVALID);
	ly_config_free(cfg);

	/* An empty list refuses everything; a NULL config has nothing unknown. */
	static const char *const none[] = { NULL };
	cfg = load("a: 1\n");
	assert_int_equal(ly_config_check_known(cfg, none, &err), LY_E_INVALID);
	assert_int_equal(ly_config_check_known(cfg, NULL, &err), LY_E_INVALID);
	ly_config_free(cfg);
	assert_int_equal(ly_config_check_known(NULL, known, &err), LY_OK);
}

static void
test_wrap(void **state)
{
	struct ly_config *cfg = load("a: 1\nl:\n  - x\n  - y\n");
	struct ly_error err;
	ly_error_set(&err, LY_E_INVALID, "trust domain is empty");
	assert_int_equal(ly_config_wrap(cfg, "a", &err, LY_E_INVALID), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:1: key a: trust domain is empty");
	ly_error_set(&err, LY_E_INVALID, "bad selector");
	assert_int_equal(ly_config_wrap_item(cfg, "l", 1, &err, LY_E_INVALID), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml:4: key l[1]: bad selector");
	ly_error_set(&err, LY_E_INVALID, "why");
	assert_int_equal(ly_config_wrap(cfg, "absent", &err, LY_E_INVALID), LY_E_INVALID);
	assert_string_equal(err.msg, "t.yaml: key absent: why");
	ly_error_set(&err, LY_E_INVALID, "why");
	assert_int_equal(ly_config_wrap(NULL, "k", &err, LY_E_INVALID), LY_E_INVALID);
	assert_string_equal(err.msg, "key k: why");
	ly_config_free(cfg);
}

/* Flag over file over default, and errors that say where the value came from. */
static void
test_settings(void **state)
{
	struct ly_config *cfg = load("dir: /from/file\n");
	struct ly_error err;
	const char *v = NULL;
	(void)state;

	assert_int_equal(ly_config_setting_string(cfg, "dir", "/from/flag", "/def", &v, &err), LY_OK);
	assert_string_equal(v, "/from/flag");
	assert_int_equal(ly_config_setting_string(cfg, "dir", NULL, "/def", &v, &err), LY_OK);
	assert_string_equal(v, "/from/file");
	assert_int_equal(ly_config_setting_string(cfg, "other", NULL, "/def", &v, &err), LY_OK);
	assert_string_equal(v, "/def");
	assert_int_equal(ly_config_setting_string(NULL, "dir", NULL, NULL, &v, &err), LY_OK);
	assert_null(v);

	ly_error_set(&err, LY_E_INVALID, "why");
	assert_int_equal(ly_config_setting_wrap(cfg, "dir", "/x", "dataDir", &err, LY_E_INVALID), LY_E_INVALID);
	assert_string_equal(err.msg, "flag -dataDir: why");
	ly_error_set(&err, LY_E_INVALID, "why");
	assert_int_equal(ly_config_setting_wrap(cfg, "dir", NULL, "dataDir", &err, LY_E_LIMIT), LY_E_LIMIT);
	assert_string_equal(err.msg, "t.yaml:1: key dir: why");
	ly_config_free(cfg);
}

static void
test_check_paths(void **state)
{
	struct ly_error err;
	char big[LY_CONFIG_VALUE_MAX + 2];
	char sock[200];
	(void)state;

	assert_int_equal(ly_config_check_path("/var/lib/lanyard", "data directory", &err), LY_OK);
	assert_int_equal(ly_config_check_path("", "data directory", &err), LY_E_INVALID);
	assert_string_equal(err.msg, "data directory is empty");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(ly_config_check_path(big, "path", &err), LY_E_LIMIT);
	big[LY_CONFIG_VALUE_MAX] = '\0';
	assert_int_equal(ly_config_check_path(big, "path", &err), LY_OK);

	assert_int_equal(ly_config_check_socket_path("/tmp/lanyard-agent/public/api.sock", &err), LY_OK);
	assert_int_equal(ly_config_check_socket_path("/run/x.sock", &err), LY_OK);
	assert_int_equal(ly_config_check_socket_path("", &err), LY_E_INVALID);
	assert_int_equal(ly_config_check_socket_path("run/x.sock", &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not absolute"));
	assert_int_equal(ly_config_check_socket_path("/x.sock", &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "inside a directory"));
	assert_int_equal(ly_config_check_socket_path("/run/dir/", &err), LY_E_INVALID);
	assert_int_equal(ly_config_check_socket_path("/", &err), LY_E_INVALID);
	/* sun_path holds 107 bytes and the NUL. */
	memset(sock, 'a', sizeof(sock));
	sock[0] = '/';
	sock[1] = 'd';
	sock[2] = '/';
	sock[107] = '\0';
	assert_int_equal(ly_config_check_socket_path(sock, &err), LY_OK);
	sock[107] = 'a';
	sock[108] = '\0';
	assert_int_equal(ly_config_check_socket_path(sock, &err), LY_E_LIMIT);
	assert_string_equal(err.msg, "socket path is over 107 bytes");
}

static void
test_null_config(void **state)
{
	const char *s;
	assert_int_equal(ly_config_get_string(NULL, "x", "d", &s, NULL), LY_OK);
	assert_string_equal(s, "d");
	assert_int_equal(ly_config_count(NULL), 0);
	assert_null(ly_config_key_at(NULL, 0));
	assert_false(ly_config_has(NULL, "x"));
	assert_int_equal(ly_config_line(NULL, "x"), 0);
	ly_config_free(NULL);
}

/* ---- files ---- */

struct tmp {
	char dir[64];
	char path[128];
};

static int
tmp_setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -1;
	strcpy(t->dir, "/tmp/test_config.XXXXXX");
	if (mkdtemp(t->dir) == NULL)
		return -1;
	*state = t;
	return 0;
}

static int
tmp_teardown(void **state)
{
	struct tmp *t = *state;
	const char *names[] = { "ok.yaml", "link.yaml", "big.yaml", "fifo", "sub" };
	char p[256];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", t->dir, names[i]);
		if (unlink(p) != 0)
			(void)rmdir(p);
	}
	rmdir(t->dir);
	free(t);
	return 0;
}

static void
write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void
test_load_file(void **state)
{
	struct tmp *t = *state;
	struct ly_config *cfg = NULL;
	struct ly_error err;
	char ok[128], link[128], p[128];
	snprintf(ok, sizeof(ok), "%s/ok.yaml", t->dir);
	snprintf(link, sizeof(link), "%s/link.yaml", t->dir);

	write_file(ok, example, strlen(example));
	assert_int_equal(ly_config_load_file(ok, &cfg, &err), LY_OK);
	assert_string_equal(ly_config_name(cfg), ok);
	ly_config_free(cfg);

	/* Errors name the file as given. */
	write_file(ok, "a: 1\na: 2\n", 10);
	assert_int_equal(ly_config_load_file(ok, &cfg, &err), LY_E_INVALID);
	assert_null(cfg);
	char want[256];
	snprintf(want, sizeof(want), "%s:2: key a: duplicate key", ok);
	assert_non_null(strstr(err.msg, want));

	/* A symlink to a regular file is followed (ConfigMap mounts). */
	write_file(ok, "a: 1\n", 5);
	assert_int_equal(symlink(ok, link), 0);
	assert_int_equal(ly_config_load_file(link, &cfg, &err), LY_OK);
	ly_config_free(cfg);
	cfg = NULL;

	/* Not a regular file: a directory, a FIFO (must not hang). */
	snprintf(p, sizeof(p), "%s/sub", t->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_not_equal(ly_config_load_file(p, &cfg, &err), LY_OK);
	snprintf(p, sizeof(p), "%s/fifo", t->dir);
	assert_int_equal(mkfifo(p, 0600), 0);
	assert_int_equal(ly_config_load_file(p, &cfg, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "not a regular file"));

	/* Missing, empty name. */
	snprintf(p, sizeof(p), "%s/missing.yaml", t->dir);
	assert_int_equal(ly_config_load_file(p, &cfg, &err), LY_E_IO);
	assert_non_null(strstr(err.msg, "cannot open"));
	assert_int_equal(ly_config_load_file("", &cfg, &err), LY_E_INVALID);
	assert_int_equal(ly_config_load_file(NULL, &cfg, &err), LY_E_INVALID);

	/* Over the size cap, checked before reading. */
	snprintf(p, sizeof(p), "%s/big.yaml", t->dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, LY_CONFIG_FILE_MAX + 1), 0);
	close(fd);
	assert_int_equal(ly_config_load_file(p, &cfg, &err), LY_E_LIMIT);
	assert_non_null(strstr(err.msg, "over the 1048576-byte limit"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example),
		cmocka_unit_test(test_empty_and_comments),
		cmocka_unit_test(test_root_not_mapping),
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_duplicate_key),
		cmocka_unit_test(test_anchors_aliases),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_multi_document),
		cmocka_unit_test(test_non_scalar_keys),
		cmocka_unit_test(test_key_names),
		cmocka_unit_test(test_lists_hold_scalars_only),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_nul_in_value),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_null_values),
		cmocka_unit_test(test_get_string),
		cmocka_unit_test(test_get_u64),
		cmocka_unit_test(test_get_port),
		cmocka_unit_test(test_get_bool),
		cmocka_unit_test(test_get_duration),
		cmocka_unit_test(test_get_list),
		cmocka_unit_test(test_check_known),
		cmocka_unit_test(test_wrap),
		cmocka_unit_test(test_settings),
		cmocka_unit_test(test_check_paths),
		cmocka_unit_test(test_null_config),
		cmocka_unit_test_setup_teardown(test_load_file, tmp_setup, tmp_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
