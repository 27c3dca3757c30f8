/*
 * test_entry.c: selector and registration entry rules (SPEC §1, §5, §6).
 * For each rule a value that must be refused, with the message naming the
 * rule, beside accepted edge values; then matching and duplicate logic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/entry.h"

/* ---- selectors ---- */

static void
sel_refuse_n(const char *s, size_t len, ly_status code, const char *needle)
{
	static char junk[] = "junk";
	struct ly_selector sel = { junk, junk }; /* a refused parse must reset it */
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_selector_parse(s, len, &sel, &err);
	if (rc != code || strstr(err.msg, needle) == NULL)
		fail_msg("'%.*s': got %d '%s', want %d '%s'", (int)(len > 80 ? 80 : len), s, rc, err.msg, code,
		    needle);
	assert_int_equal(err.code, code);
	assert_null(sel.type);
	assert_null(sel.value);
}

static void
sel_refuse(const char *s, ly_status code, const char *needle)
{
	sel_refuse_n(s, strlen(s), code, needle);
}

static void
sel_accept(const char *s, const char *type, const char *value)
{
	struct ly_selector sel;
	struct ly_error err;
	ly_error_clear(&err);
	if (ly_selector_parse_str(s, &sel, &err) != LY_OK)
		fail_msg("'%.80s' refused: %s", s, err.msg);
	assert_string_equal(sel.type, type);
	assert_string_equal(sel.value, value);
	/* The split parts validate alone too. */
	assert_int_equal(ly_selector_check(type, value, NULL), LY_OK);
	ly_selector_cleanup(&sel);
	assert_null(sel.type);
}

/* Accepts "prefix" + arg and refuses "prefix" + each bad arg with `needle`. */
static void
sel_arg(const char *prefix, const char *arg, bool ok, const char *needle)
{
	char buf[2048];
	snprintf(buf, sizeof(buf), "%s%s", prefix, arg);
	if (ok) {
		const char *colon = strchr(buf, ':');
		char type[32];
		snprintf(type, sizeof(type), "%.*s", (int)(colon - buf), buf);
		sel_accept(buf, type, colon + 1);
	} else {
		sel_refuse(buf, LY_E_INVALID, needle);
	}
}

static char *
repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void
test_selector_shape(void **state)
{
	sel_accept("unix:uid:1000", "unix", "uid:1000");
	/* The value keeps its colons: split at the first one only. */
	sel_accept("k8s:pod-label:app:web", "k8s", "pod-label:app:web");
	sel_refuse("unix", LY_E_INVALID, "not type:value");
	sel_refuse("", LY_E_INVALID, "not type:value");
	sel_refuse(":uid:1", LY_E_INVALID, "empty type");
	sel_refuse("unix:", LY_E_INVALID, "empty value");
	sel_refuse_n("unix:uid:1\0" "0", 12, LY_E_INVALID, "NUL byte at offset 10");
	struct ly_selector sel;
	assert_int_equal(ly_selector_parse(NULL, 0, &sel, NULL), LY_E_INVALID);
	assert_int_equal(ly_selector_parse_str(NULL, &sel, NULL), LY_E_INVALID);
	assert_int_equal(ly_selector_check(NULL, "uid:1", NULL), LY_E_INVALID);
	assert_int_equal(ly_selector_check("unix", NULL, NULL), LY_E_INVALID);
}

static void
test_selector_length_cap(void **state)
{
	/* "unix:path:/" is 11 bytes: fill to exactly LY_SELECTOR_MAX, then one more. */
	char *tail = repeat('a', LY_SELECTOR_MAX - 11);
	char *s = malloc(LY_SELECTOR_MAX + 2);
	assert_non_null(s);
	snprintf(s, LY_SELECTOR_MAX + 2, "unix:path:/%s", tail);
	assert_int_equal(strlen(s), LY_SELECTOR_MAX);
	struct ly_selector sel;
	assert_int_equal(ly_selector_parse_str(s, &sel, NULL), LY_OK);
	ly_selector_cleanup(&sel);
	snprintf(s, LY_SELECTOR_MAX + 2, "unix:path:/%sb", tail);
	sel_refuse(s, LY_E_LIMIT, "over the 1024-byte limit");
	/* The split form enforces the same cap. */
	struct ly_error err;
	assert_int_equal(ly_selector_check("unix", s + 5, &err), LY_E_LIMIT);
	free(s);
	free(tail);
}

static void
test_selector_unknown(void **state)
{
	sel_refuse("foo:bar", LY_E_INVALID, "unknown selector type \"foo\" (known: unix, k8s, k8s_psat");
	/* Types are case-sensitive. */
	sel_refuse("UNIX:uid:1", LY_E_INVALID, "unknown selector type \"UNIX\"");
	sel_refuse("unix:pid:1", LY_E_INVALID, "unknown unix selector key \"pid\" (known: uid, gid");
	sel_refuse("unix:uidx:1", LY_E_INVALID, "unknown unix selector key \"uidx\"");
	sel_refuse("k8s:namespace:prod", LY_E_INVALID, "unknown k8s selector key \"namespace\"");
	sel_refuse("k8s_psat:agent_pod:x", LY_E_INVALID, "unknown k8s_psat selector key \"agent_pod\"");
	sel_refuse("x509pop:subject:o:acme", LY_E_INVALID, "unknown x509pop selector key \"subject\"");
	/* A control character in an unknown type is not echoed raw. */
	struct ly_selector sel;
	struct ly_error err;
	assert_int_equal(ly_selector_parse_str("fo\no:x", &sel, &err), LY_E_INVALID);
	assert_null(strchr(err.msg, '\n'));
	assert_non_null(strstr(err.msg, "\"fo?o\""));
}

static void
test_selector_empty_argument(void **state)
{
	sel_refuse("unix:uid:", LY_E_INVALID, "unix:uid has an empty value");
	sel_refuse("unix:uid", LY_E_INVALID, "unix:uid has an empty value");
	sel_refuse("k8s:ns:", LY_E_INVALID, "k8s:ns has an empty value");
	sel_refuse("x509pop:subject:cn:", LY_E_INVALID, "x509pop:subject:cn has an empty value");
	sel_refuse("join_token:", LY_E_INVALID, "empty value");
}

static void
test_unix_uid_gid(void **state)
{
	const char *good[] = { "0", "1000", "4294967295" };
	for (size_t i = 0; i < 3; i++) {
		sel_arg("unix:uid:", good[i], true, NULL);
		sel_arg("unix:gid:", good[i], true, NULL);
	}
	sel_arg("unix:uid:", "-1", false, "unix:uid must be a decimal number");
	sel_arg("unix:uid:", "+1", false, "no sign");
	sel_arg("unix:uid:", "12a", false, "digits only");
	sel_arg("unix:uid:", " 1", false, "digits only");
	sel_arg("unix:uid:", "01000", false, "leading zeros");
	sel_arg("unix:gid:", "00", false, "leading zeros");
	sel_arg("unix:uid:", "4294967296", false, "out of range");
	sel_arg("unix:gid:", "99999999999999999999999", false, "out of range");
}

static void
test_unix_user_group(void **state)
{
	sel_arg("unix:user:", "root", true, NULL);
	sel_arg("unix:group:", "_www-data.1", true, NULL);
	char *n32 = repeat('u', 32), *n33 = repeat('u', 33);
	sel_arg("unix:user:", n32, true, NULL);
	sel_arg("unix:user:", n33, false, "unix:user is longer than 32 bytes");
	free(n32);
	free(n33);
	sel_arg("unix:user:", "-root", false, "must not start with '-'");
	sel_arg("unix:group:", "wheel group", false, "POSIX portable name characters");
	sel_arg("unix:user:", "a:b", false, "POSIX portable");
	sel_arg("unix:user:", "r\xc3\xa9mi", false, "POSIX portable");
}

static void
test_unix_path(void **state)
{
	sel_arg("unix:path:", "/usr/bin/python3", true, NULL);
	sel_arg("unix:path:", "/opt/.hidden/..x/a..b", true, NULL);
	sel_arg("unix:path:", "/opt/app:v2/bin", true, NULL);
	sel_arg("unix:path:", "/opt/caf\xc3\xa9", true, NULL);
	sel_arg("unix:path:", "usr/bin/x", false, "must be an absolute path");
	sel_arg("unix:path:", "/", false, "must not end with '/'");
	sel_arg("unix:path:", "/usr/bin/", false, "must not end with '/'");
	sel_arg("unix:path:", "/usr//bin", false, "empty segment");
	sel_arg("unix:path:", "/usr/./bin", false, "'.' segment");
	sel_arg("unix:path:", "/usr/bin/.", false, "'.' segment");
	sel_arg("unix:path:", "/usr/../bin", false, "'..' segment");
	sel_arg("unix:path:", "/usr/bin/..", false, "'..' segment");
	sel_arg("unix:path:", "/usr/b\tin", false, "control character");
}

static void
test_unix_sha256(void **state)
{
	char *h64 = repeat('a', 64), *h63 = repeat('a', 63), *h65 = repeat('a', 65);
	sel_arg("unix:sha256:", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", true, NULL);
	sel_arg("unix:sha256:", h64, true, NULL);
	sel_arg("unix:sha256:", h63, false, "64 lower-case hex digits");
	sel_arg("unix:sha256:", h65, false, "64 lower-case hex digits");
	sel_arg("unix:sha256:", "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08", false,
	    "lower-case hex");
	h64[10] = 'g';
	sel_arg("unix:sha256:", h64, false, "hex digits");
	free(h64);
	free(h63);
	free(h65);
}

static void
test_k8s_names(void **state)
{
	sel_arg("k8s:ns:", "kube-system", true, NULL);
	sel_arg("k8s:container-name:", "c0", true, NULL);
	sel_arg("k8s:ns:", "Prod", false, "DNS-1123 label");
	sel_arg("k8s:ns:", "-prod", false, "DNS-1123 label");
	sel_arg("k8s:ns:", "prod-", false, "DNS-1123 label");
	sel_arg("k8s:ns:", "a.b", false, "DNS-1123 label");
	sel_arg("k8s:container-name:", "a_b", false, "DNS-1123 label");
	char *l63 = repeat('a', 63), *l64 = repeat('a', 64);
	sel_arg("k8s:ns:", l63, true, NULL);
	sel_arg("k8s:ns:", l64, false, "longer than 63 bytes");
	free(l63);
	free(l64);

	sel_arg("k8s:sa:", "default", true, NULL);
	sel_arg("k8s:pod-name:", "web-7d4b9c.x", true, NULL);
	sel_arg("k8s:node-name:", "ip-10-0-0-1.ec2.internal", true, NULL);
	/* A subdomain's parts may be longer than 63: Kubernetes bounds only the whole. */
	char *l100 = repeat('p', 100), *l254 = repeat('p', 254);
	sel_arg("k8s:pod-name:", l100, true, NULL);
	sel_arg("k8s:pod-name:", l254, false, "longer than 253 bytes");
	free(l100);
	free(l254);
	sel_arg("k8s:sa:", "my..sa", false, "DNS-1123 subdomain");
	sel_arg("k8s:sa:", ".sa", false, "DNS-1123 subdomain");
	sel_arg("k8s:node-name:", "Node1", false, "DNS-1123 subdomain");
	sel_arg("k8s:pod-name:", "web.", false, "DNS-1123 subdomain");
}

static void
test_k8s_uid_label_image(void **state)
{
	sel_arg("k8s:pod-uid:", "2b2ffd5c-2b7d-4b0a-9a4f-64f2b27b3c1e", true, NULL);
	sel_arg("k8s:pod-uid:", "2B2FFD5C-2B7D-4B0A-9A4F-64F2B27B3C1E", false, "must be a UUID");
	sel_arg("k8s:pod-uid:", "2b2ffd5c2b7d-4b0a-9a4f-64f2b27b3c1e-", false, "8-4-4-4-12");
	sel_arg("k8s:pod-uid:", "2b2ffd5c-2b7d-4b0a-9a4f-64f2b27b3c1", false, "must be a UUID");

	sel_arg("k8s:pod-label:", "app:web", true, NULL);
	sel_arg("k8s:pod-label:", "app.kubernetes.io/name:web_1.x", true, NULL);
	/* Kubernetes allows an empty label value. */
	sel_arg("k8s:pod-label:", "tier:", true, NULL);
	sel_arg("k8s:pod-label:", "app", false, "needs KEY:VALUE");
	sel_arg("k8s:pod-label:", ":web", false, "key name must be");
	sel_arg("k8s:pod-label:", "-app:web", false, "key name must be");
	sel_arg("k8s:pod-label:", "app:web:1", false, "value must be");
	sel_arg("k8s:pod-label:", "app:-web", false, "value must be");
	sel_arg("k8s:pod-label:", "Bad_Prefix/app:web", false, "key prefix must be a DNS-1123 subdomain");
	sel_arg("k8s:pod-label:", "a/b/c:web", false, "key name must be");
	char *l64 = repeat('k', 64);
	char buf[128];
	snprintf(buf, sizeof(buf), "%s:v", l64);
	sel_arg("k8s:pod-label:", buf, false, "key name must be 1..63");
	snprintf(buf, sizeof(buf), "k:%s", l64);
	sel_arg("k8s:pod-label:", buf, false, "value must be 0..63");
	free(l64);

	sel_arg("k8s:container-image:", "docker.io/library/nginx:1.25@sha256:0123abcd", true, NULL);
	sel_arg("k8s:container-image:", "localhost:5000/app", true, NULL);
	sel_arg("k8s:container-image:", "nginx latest", false, "image reference");
	sel_arg("k8s:container-image:", "/nginx", false, "starting with [A-Za-z0-9]");
	char *img = repeat('i', 513);
	sel_arg("k8s:container-image:", img, false, "longer than 512 bytes");
	img[512] = '\0';
	sel_arg("k8s:container-image:", img, true, NULL);
	free(img);
}

static void
test_k8s_psat(void **state)
{
	sel_arg("k8s_psat:cluster:", "prod-eu.1_a", true, NULL);
	sel_arg("k8s_psat:cluster:", "prod eu", false, "must use [A-Za-z0-9._-]");
	char *c129 = repeat('c', 129);
	sel_arg("k8s_psat:cluster:", c129, false, "longer than 128 bytes");
	free(c129);
	sel_arg("k8s_psat:agent_ns:", "lanyard", true, NULL);
	sel_arg("k8s_psat:agent_ns:", "Lanyard", false, "DNS-1123 label");
	sel_arg("k8s_psat:agent_sa:", "lanyard-agent", true, NULL);
	sel_arg("k8s_psat:agent_sa:", "lanyard_agent", false, "DNS-1123 subdomain");
	sel_arg("k8s_psat:agent_node_name:", "node-1.cluster.local", true, NULL);
	sel_arg("k8s_psat:agent_node_name:", "node 1", false, "DNS-1123 subdomain");
	sel_arg("k8s_psat:agent_node_uid:", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", true, NULL);
	sel_arg("k8s_psat:agent_node_uid:", "node-1", false, "must be a UUID");
}

static void
test_x509pop(void **state)
{
	/* A CN may hold spaces and colons: everything after "subject:cn:" is the name. */
	sel_arg("x509pop:subject:cn:", "web server: 1", true, NULL);
	sel_arg("x509pop:subject:cn:", "caf\xc3\xa9", true, NULL);
	char *cn64 = repeat('n', 64), *cn65 = repeat('n', 65);
	sel_arg("x509pop:subject:cn:", cn64, true, NULL);
	sel_arg("x509pop:subject:cn:", cn65, false, "longer than 64 characters");
	free(cn64);
	free(cn65);
	/* 64 two-byte characters are 64 characters, not 128. */
	char wide[129];
	for (size_t i = 0; i < 64; i++) {
		wide[2 * i] = '\xc3';
		wide[2 * i + 1] = '\xa9';
	}
	wide[128] = '\0';
	sel_arg("x509pop:subject:cn:", wide, true, NULL);

	char *f40 = repeat('0', 40), *f64 = repeat('f', 64), *f41 = repeat('0', 41);
	sel_arg("x509pop:ca:fingerprint:", f40, true, NULL);
	sel_arg("x509pop:ca:fingerprint:", f64, true, NULL);
	sel_arg("x509pop:ca:fingerprint:", f41, false, "40 or 64 lower-case hex");
	f40[0] = 'A';
	sel_arg("x509pop:ca:fingerprint:", f40, false, "lower-case hex");
	free(f40);
	free(f64);
	free(f41);

	sel_arg("x509pop:serialnumber:", "1a2b3c", true, NULL);
	sel_arg("x509pop:serialnumber:", "0", true, NULL);
	sel_arg("x509pop:serialnumber:", "01a2", false, "leading zeros");
	sel_arg("x509pop:serialnumber:", "1A2B", false, "lower-case hex");
	sel_arg("x509pop:serialnumber:", "1a:2b", false, "lower-case hex");
	char *s41 = repeat('1', 41);
	sel_arg("x509pop:serialnumber:", s41, false, "1..40 lower-case hex");
	free(s41);

	sel_arg("x509pop:san:dns:", "*.example.org", true, NULL);
	sel_arg("x509pop:san:dns:", "Host-1.Example.org", true, NULL);
	sel_arg("x509pop:san:dns:", "a..example.org", false, "empty label");
	sel_arg("x509pop:san:dns:", "a*.example.org", false, "'*' only as the whole leftmost label");
	sel_arg("x509pop:san:dns:", "a_b.example.org", false, "LDH");
}

static void
test_join_token(void **state)
{
	sel_arg("join_token:", "5d8c3a1e-7b2f-4c9d-8e6a-1f0b2c3d4e5f", true, NULL);
	sel_arg("join_token:", "a/b", false, "must use [A-Za-z0-9._-]");
	sel_arg("join_token:", ".", false, "must not be '.' or '..'");
	sel_arg("join_token:", "..", false, "'.' or '..'");
	char *t257 = repeat('t', 257);
	char buf[300];
	snprintf(buf, sizeof(buf), "join_token:%s", t257);
	sel_refuse(buf, LY_E_LIMIT, "longer than 256 bytes");
	free(t257);
	/* A refused token is never echoed in the message. */
	struct ly_selector sel;
	struct ly_error err;
	assert_int_equal(ly_selector_parse_str("join_token:s3kr1t/value", &sel, &err), LY_E_INVALID);
	assert_null(strstr(err.msg, "s3kr1t"));
	assert_non_null(strstr(err.msg, "[redacted]"));
	assert_int_equal(ly_selector_parse_str("s3kr1t-value", &sel, &err), LY_E_INVALID);
	assert_null(strstr(err.msg, "s3kr1t"));
}

static void
test_value_text(void **state)
{
	/* Control characters (C0, DEL, C1) and malformed UTF-8 are refused everywhere. */
	sel_refuse("x509pop:subject:cn:a\nb", LY_E_INVALID, "control character at offset");
	sel_refuse("x509pop:subject:cn:a\x7f", LY_E_INVALID, "control character");
	sel_refuse("x509pop:subject:cn:a\xc2\x85", LY_E_INVALID, "control character");
	sel_refuse("x509pop:subject:cn:a\xff", LY_E_INVALID, "not valid UTF-8 at offset");
	sel_refuse("x509pop:subject:cn:\xc0\xaf", LY_E_INVALID, "not valid UTF-8");       /* overlong */
	sel_refuse("x509pop:subject:cn:\xed\xa0\x80", LY_E_INVALID, "not valid UTF-8");   /* surrogate */
	sel_refuse("x509pop:subject:cn:\xf4\x90\x80\x80", LY_E_INVALID, "not valid UTF-8"); /* > U+10FFFF */
	sel_refuse("x509pop:subject:cn:\xe2\x82", LY_E_INVALID, "not valid UTF-8");       /* truncated */
	sel_arg("x509pop:subject:cn:", "\xf0\x9f\x94\x91 key", true, NULL);
	/* The message renders a refused value without raw control bytes. */
	struct ly_selector sel;
	struct ly_error err;
	assert_int_equal(ly_selector_parse_str("unix:path:/a\nb", &sel, &err), LY_E_INVALID);
	assert_null(strchr(err.msg, '\n'));
}

static void
test_selector_set_format_cmp(void **state)
{
	struct ly_selector a, b;
	struct ly_error err;
	assert_int_equal(ly_selector_set(&a, "unix", "uid:0", &err), LY_OK);
	assert_int_equal(ly_selector_set(&b, "unix", "uid:x", &err), LY_E_INVALID);
	assert_null(b.type);
	char out[16];
	assert_int_equal(ly_selector_format(&a, out, sizeof(out), &err), LY_OK);
	assert_string_equal(out, "unix:uid:0");
	assert_int_equal(ly_selector_format(&a, out, 10, &err), LY_E_LIMIT);
	assert_string_equal(out, "");
	assert_int_equal(ly_selector_set(&b, "k8s", "ns:a", &err), LY_OK);
	assert_true(ly_selector_cmp(&b, &a) < 0);
	assert_false(ly_selector_equal(&a, &b));
	assert_true(ly_selector_type_is_node("join_token"));
	assert_true(ly_selector_type_is_node("k8s_psat"));
	assert_true(ly_selector_type_is_node("x509pop"));
	assert_false(ly_selector_type_is_node("unix"));
	assert_false(ly_selector_type_is_node("k8s"));
	assert_false(ly_selector_type_known("docker"));
	ly_selector_cleanup(&a);
	ly_selector_cleanup(&b);
}

/* Builds `n` selectors from strings (which must parse). */
static struct ly_selector *
sels(const char *const *strs, size_t n)
{
	struct ly_selector *s = calloc(n > 0 ? n : 1, sizeof(*s));
	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ly_selector_parse_str(strs[i], &s[i], NULL), LY_OK);
	return s;
}

static void
test_canonicalize(void **state)
{
	const char *in[] = { "unix:uid:1000", "k8s:ns:b", "unix:gid:5", "k8s:ns:a" };
	struct ly_selector *s = sels(in, 4);
	assert_int_equal(ly_selectors_canonicalize(s, 4, NULL), LY_OK);
	assert_string_equal(s[0].value, "ns:a");
	assert_string_equal(s[1].value, "ns:b");
	assert_string_equal(s[2].value, "gid:5");
	assert_string_equal(s[3].value, "uid:1000");
	ly_selectors_free(s, 4);

	const char *dup[] = { "unix:uid:1", "k8s:ns:a", "unix:uid:1" };
	s = sels(dup, 3);
	struct ly_error err;
	assert_int_equal(ly_selectors_canonicalize(s, 3, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "duplicate selector unix:uid:1"));
	ly_selectors_free(s, 3);
}

static void
test_match(void **state)
{
	const char *e[] = { "unix:uid:1000", "unix:gid:1000" };
	const char *have[] = { "unix:user:bob", "unix:gid:1000", "unix:uid:1000", "unix:path:/bin/sh" };
	const char *missing[] = { "unix:uid:1000", "unix:user:bob" };
	const char *prefix[] = { "unix:uid:100", "unix:gid:1000" };
	struct ly_selector *se = sels(e, 2), *sh = sels(have, 4), *sm = sels(missing, 2), *sp = sels(prefix, 2);

	assert_true(ly_selectors_match(se, 2, sh, 4));   /* subset */
	assert_true(ly_selectors_match(se, 2, se, 2));   /* equal sets */
	assert_false(ly_selectors_match(se, 2, sm, 2));  /* gid missing */
	assert_false(ly_selectors_match(sh, 4, se, 2));  /* superset is not a match */
	assert_false(ly_selectors_match(sp, 2, sh, 4));  /* exact bytes, no prefix match */
	assert_false(ly_selectors_match(se, 0, sh, 4));  /* no selector: fail closed */
	assert_false(ly_selectors_match(se, 2, NULL, 0)); /* nothing attested */
	assert_false(ly_selectors_same_set(se, 2, NULL, 0));
	assert_true(ly_selectors_same_set(NULL, 0, NULL, 0));
	ly_selectors_free(se, 2);
	ly_selectors_free(sh, 4);
	ly_selectors_free(sm, 2);
	ly_selectors_free(sp, 2);
}

/* ---- entries ---- */

static struct ly_entry *
make_entry(void)
{
	struct ly_entry *e;
	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/ns/prod/sa/web", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/agent/a1", NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(e, "unix:uid:1000", NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(e, "k8s:ns:prod", NULL), LY_OK);
	return e;
}

static void
entry_refuse(struct ly_entry *e, const char *td, ly_status code, const char *needle)
{
	struct ly_error err;
	ly_error_clear(&err);
	ly_status rc = ly_entry_validate(e, td, &err);
	if (rc != code || strstr(err.msg, needle) == NULL)
		fail_msg("got %d '%s', want %d '%s'", rc, err.msg, code, needle);
	ly_entry_free(e);
}

static void
entry_accept(struct ly_entry *e, const char *td)
{
	struct ly_error err;
	ly_error_clear(&err);
	if (ly_entry_validate(e, td, &err) != LY_OK)
		fail_msg("refused: %s", err.msg);
	ly_entry_free(e);
}

static void
test_entry_valid(void **state)
{
	struct ly_entry *e = make_entry();
	assert_int_equal(ly_entry_validate(e, "example.org", NULL), LY_OK);
	/* Selectors come out in canonical order. */
	assert_string_equal(e->selectors[0].type, "k8s");
	assert_string_equal(e->selectors[1].type, "unix");
	ly_entry_free(e);
}

static void
test_entry_id_rules(void **state)
{
	struct ly_entry *e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->entry_id, "", NULL), LY_OK);
	entry_accept(e, "example.org"); /* empty means unset */
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->entry_id, "web_1.prod-a", NULL), LY_OK);
	entry_accept(e, "example.org");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->entry_id, "web/1", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "entry ID must use [A-Za-z0-9._-]");
	char *id64 = repeat('i', 64), *id65 = repeat('i', 65);
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->entry_id, id64, NULL), LY_OK);
	entry_accept(e, "example.org");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->entry_id, id65, NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_LIMIT, "longer than 64 bytes");
	free(id64);
	free(id65);
	assert_int_equal(ly_entry_id_check("", NULL), LY_E_INVALID);
}

static void
test_entry_spiffe_id_rules(void **state)
{
	const char *fields[] = { "spiffe_id", "parent_id" };
	for (size_t f = 0; f < 2; f++) {
		struct ly_entry *e = make_entry();
		char **field = f == 0 ? &e->spiffe_id : &e->parent_id;
		assert_int_equal(ly_entry_set_string(field, NULL, NULL), LY_OK);
		char want[64];
		snprintf(want, sizeof(want), "entry has no %s", fields[f]);
		entry_refuse(e, "example.org", LY_E_INVALID, want);

		e = make_entry();
		field = f == 0 ? &e->spiffe_id : &e->parent_id;
		assert_int_equal(ly_entry_set_string(field, "spiffe://Example.org/x", NULL), LY_OK);
		snprintf(want, sizeof(want), "entry %s: trust domain contains upper-case", fields[f]);
		entry_refuse(e, "example.org", LY_E_INVALID, want);

		e = make_entry();
		field = f == 0 ? &e->spiffe_id : &e->parent_id;
		assert_int_equal(ly_entry_set_string(field, "spiffe://example.org", NULL), LY_OK);
		entry_refuse(e, "example.org", LY_E_INVALID, "has no path");

		e = make_entry();
		field = f == 0 ? &e->spiffe_id : &e->parent_id;
		assert_int_equal(ly_entry_set_string(field, "spiffe://other.org/x", NULL), LY_OK);
		entry_refuse(e, "example.org", LY_E_INVALID, "is not in trust domain example.org");

		/* Without a trust domain, membership is not checked (the datastore's view). */
		e = make_entry();
		field = f == 0 ? &e->spiffe_id : &e->parent_id;
		assert_int_equal(ly_entry_set_string(field, "spiffe://other.org/x", NULL), LY_OK);
		entry_accept(e, NULL);
	}
}

static void
test_entry_selector_rules(void **state)
{
	struct ly_entry *e = make_entry();
	ly_selectors_free(e->selectors, e->n_selectors);
	e->selectors = NULL;
	e->n_selectors = 0;
	entry_refuse(e, "example.org", LY_E_INVALID, "at least one selector");

	/* A duplicate selector in one entry. */
	e = make_entry();
	assert_int_equal(ly_entry_add_selector(e, "unix:uid:1000", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "duplicate selector unix:uid:1000");

	/* A selector that was set without parsing is still checked. */
	e = make_entry();
	free(e->selectors[0].value);
	e->selectors[0].value = strdup("uid:x");
	entry_refuse(e, "example.org", LY_E_INVALID, "entry selector 1: selector \"unix:uid:x\"");

	/* Node selector types in a workload entry and the reverse. */
	e = make_entry();
	assert_int_equal(ly_entry_add_selector(e, "join_token:abc", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "has node selector type join_token");
	e = make_entry();
	e->node = true;
	entry_refuse(e, "example.org", LY_E_INVALID, "has workload selector type");
	e = make_entry();
	e->node = true;
	ly_selectors_free(e->selectors, e->n_selectors);
	e->selectors = NULL;
	e->n_selectors = 0;
	assert_int_equal(ly_entry_add_selector(e, "k8s_psat:cluster:prod", NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(e, "x509pop:subject:cn:node1", NULL), LY_OK);
	entry_accept(e, "example.org");

	/* At most LY_SELECTORS_MAX: add refuses the next one, validate refuses more. */
	e = make_entry();
	struct ly_error err;
	for (size_t i = e->n_selectors; i < LY_SELECTORS_MAX; i++) {
		char s[32];
		snprintf(s, sizeof(s), "unix:gid:%zu", i);
		assert_int_equal(ly_entry_add_selector(e, s, NULL), LY_OK);
	}
	struct ly_entry *full;
	assert_int_equal(ly_entry_copy(e, &full, NULL), LY_OK);
	entry_accept(full, "example.org");
	assert_int_equal(ly_entry_add_selector(e, "unix:gid:99999", &err), LY_E_LIMIT);
	struct ly_selector *grown = realloc(e->selectors, (LY_SELECTORS_MAX + 1) * sizeof(*grown));
	assert_non_null(grown);
	e->selectors = grown;
	assert_int_equal(ly_selector_set(&e->selectors[LY_SELECTORS_MAX], "unix", "gid:99999", NULL), LY_OK);
	e->n_selectors = LY_SELECTORS_MAX + 1;
	entry_refuse(e, "example.org", LY_E_LIMIT, "over the limit of 64");
}

static void
test_entry_ttl_rules(void **state)
{
	struct ly_entry *e = make_entry();
	e->x509_svid_ttl = LY_X509_SVID_TTL_MAX;
	e->jwt_svid_ttl = LY_JWT_SVID_TTL_MAX;
	entry_accept(e, "example.org");
	e = make_entry();
	e->x509_svid_ttl = -1;
	entry_refuse(e, "example.org", LY_E_INVALID, "x509_svid_ttl -1 is negative");
	e = make_entry();
	e->jwt_svid_ttl = -5;
	entry_refuse(e, "example.org", LY_E_INVALID, "jwt_svid_ttl -5 is negative");
	e = make_entry();
	e->x509_svid_ttl = LY_X509_SVID_TTL_MAX + 1;
	entry_refuse(e, "example.org", LY_E_LIMIT, "x509_svid_ttl 2592001 is over the 2592000-second limit");
	e = make_entry();
	e->jwt_svid_ttl = LY_JWT_SVID_TTL_MAX + 1;
	entry_refuse(e, "example.org", LY_E_LIMIT, "jwt_svid_ttl 86401 is over");
}

/* The TTL floor (lib/caps.h): for entries being created or updated only. */
static void
test_entry_ttl_floor(void **state)
{
	struct ly_entry *e = make_entry();
	struct ly_error err;
	static const int32_t ok[][2] = {
		{ 0, 0 }, { LY_X509_SVID_TTL_MIN, LY_JWT_SVID_TTL_MIN }, { 3600, 300 },
		{ LY_X509_SVID_TTL_MAX, LY_JWT_SVID_TTL_MAX },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		e->x509_svid_ttl = ok[i][0];
		e->jwt_svid_ttl = ok[i][1];
		if (ly_entry_check_ttl_floor(e, &err) != LY_OK)
			fail_msg("%d/%d refused: %s", ok[i][0], ok[i][1], err.msg);
	}
	e->jwt_svid_ttl = 0;
	for (int32_t t = 1; t < LY_X509_SVID_TTL_MIN; t++) {
		e->x509_svid_ttl = t;
		assert_int_equal(ly_entry_check_ttl_floor(e, &err), LY_E_INVALID);
		assert_non_null(strstr(err.msg, "x509_svid_ttl"));
		assert_non_null(strstr(err.msg, "under the 20-second floor"));
	}
	e->x509_svid_ttl = 0;
	e->jwt_svid_ttl = 1;
	assert_int_equal(ly_entry_check_ttl_floor(e, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "jwt_svid_ttl 1 is under the 30-second floor"));
	e->jwt_svid_ttl = LY_JWT_SVID_TTL_MIN - 1;
	assert_int_equal(ly_entry_check_ttl_floor(e, &err), LY_E_INVALID);
	/* One line, whatever the value. */
	assert_null(strchr(err.msg, '\n'));
	/* Not part of validate: a stored entry under the floor still loads. */
	e->x509_svid_ttl = 1;
	e->jwt_svid_ttl = 1;
	assert_int_equal(ly_entry_validate(e, "example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_check_ttl_floor(NULL, &err), LY_E_INTERNAL);
	ly_entry_free(e);

	/* And signed with the floor instead. */
	assert_int_equal(ly_svid_ttl_floored(0, 20), 0);
	assert_int_equal(ly_svid_ttl_floored(1, 20), 20);
	assert_int_equal(ly_svid_ttl_floored(19, 20), 20);
	assert_int_equal(ly_svid_ttl_floored(20, 20), 20);
	assert_int_equal(ly_svid_ttl_floored(3600, 20), 3600);
	assert_int_equal(ly_svid_ttl_floored(-1, 20), -1);
}

/* Reserved IDs (lib/spiffeid.h): never granted, parents only as server or agent. */
static void
test_entry_reserved_ids(void **state)
{
	struct ly_entry *e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/lanyard/server", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID,
	    "entry spiffe_id spiffe://example.org/lanyard/server: the path is in Lanyard's reserved namespace");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/lanyard/agent/a2", NULL), LY_OK);
	entry_refuse(e, NULL, LY_E_INVALID, "an entry may not grant it");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/lanyard", NULL), LY_OK);
	entry_refuse(e, NULL, LY_E_INVALID, "reserved namespace");
	/* A node entry may not take one either. */
	e = make_entry();
	e->node = true;
	ly_selectors_free(e->selectors, e->n_selectors);
	e->selectors = NULL;
	e->n_selectors = 0;
	assert_int_equal(ly_entry_add_selector(e, "k8s_psat:cluster:prod", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/lanyard/server", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/server", NULL), LY_OK);
	entry_refuse(e, NULL, LY_E_INVALID, "entry spiffe_id");
	/* Parents: the server and agents yes, anything else reserved no. */
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/server", NULL), LY_OK);
	entry_accept(e, "example.org");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/agent/join_token/t1", NULL),
	    LY_OK);
	entry_accept(e, "example.org");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/agents/x", NULL), LY_OK);
	entry_refuse(e, NULL, LY_E_INVALID, "entry parent_id spiffe://example.org/lanyard/agents/x: the path");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->parent_id, "spiffe://example.org/lanyard/agent", NULL), LY_OK);
	entry_refuse(e, NULL, LY_E_INVALID, "names neither the server");
	/* Near misses are ordinary IDs. */
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/lanyardx/server", NULL), LY_OK);
	entry_accept(e, "example.org");
}

static void
test_entry_dns_rules(void **state)
{
	struct ly_entry *e = make_entry();
	assert_int_equal(ly_entry_add_dns_name(e, "web.example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_add_dns_name(e, "*.web.example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_add_dns_name(e, "localhost", NULL), LY_OK);
	entry_accept(e, "example.org");

	const char *bad[][2] = {
		{ "web_1.example.org", "LDH" },
		{ "-web.example.org", "starting or ending with '-'" },
		{ "web-.example.org", "starting or ending with '-'" },
		{ "web..example.org", "empty label" },
		{ "web.example.org.", "empty label" },
		{ "", "is empty" },
		{ "w*b.example.org", "'*' only as the whole leftmost label" },
		{ "web.*.example.org", "'*' only as the whole leftmost label" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e = make_entry();
		assert_int_equal(ly_entry_add_dns_name(e, bad[i][0], NULL), LY_OK);
		entry_refuse(e, "example.org", LY_E_INVALID, bad[i][1]);
	}
	char *l63 = repeat('a', 63), *l64 = repeat('a', 64);
	char name[300];
	snprintf(name, sizeof(name), "%s.org", l63);
	assert_int_equal(ly_dns_name_check(name, NULL), LY_OK);
	snprintf(name, sizeof(name), "%s.org", l64);
	assert_int_equal(ly_dns_name_check(name, NULL), LY_E_INVALID);
	free(l63);
	free(l64);
	/* 253 bytes accepted, 254 over the cap. */
	memset(name, 0, sizeof(name));
	for (size_t i = 0; i < 253; i++)
		name[i] = (i % 2 == 1) ? '.' : 'a';
	assert_int_equal(ly_dns_name_check(name, NULL), LY_OK);
	name[253] = '.';
	name[254] = 'a';
	assert_int_equal(ly_dns_name_check(name, NULL), LY_E_LIMIT);
	e = make_entry();
	assert_int_equal(ly_entry_add_dns_name(e, name, NULL), LY_E_LIMIT);
	ly_entry_free(e);

	/* Duplicates, case-insensitively (DNS names are). */
	e = make_entry();
	assert_int_equal(ly_entry_add_dns_name(e, "web.example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_add_dns_name(e, "WEB.example.org", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "DNS name 2 duplicates DNS name 1");

	/* Count cap. */
	e = make_entry();
	for (size_t i = 0; i < LY_DNS_NAMES_MAX; i++) {
		snprintf(name, sizeof(name), "h%zu.example.org", i);
		assert_int_equal(ly_entry_add_dns_name(e, name, NULL), LY_OK);
	}
	assert_int_equal(ly_entry_add_dns_name(e, "one-more.example.org", NULL), LY_E_LIMIT);
	/* A 33rd set without ly_entry_add_dns_name: validate refuses it by count. */
	char **more = realloc(e->dns_names, (LY_DNS_NAMES_MAX + 1) * sizeof(*more));
	assert_non_null(more);
	e->dns_names = more;
	e->dns_names[LY_DNS_NAMES_MAX] = strdup("h99.example.org");
	assert_non_null(e->dns_names[LY_DNS_NAMES_MAX]);
	e->n_dns_names++;
	entry_refuse(e, "example.org", LY_E_LIMIT, "DNS names, over the limit of 32");
}

static void
test_entry_hint_rules(void **state)
{
	char *h255 = repeat('h', 255), *h256 = repeat('h', 256);
	struct ly_entry *e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->hint, h255, NULL), LY_OK);
	entry_accept(e, "example.org");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->hint, h256, NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_LIMIT, "hint is longer than 255 bytes");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->hint, "line\nbreak", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "hint must be printable ASCII (byte 4");
	e = make_entry();
	assert_int_equal(ly_entry_set_string(&e->hint, "caf\xc3\xa9", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "printable ASCII");
	free(h255);
	free(h256);
}

/* federates_with (SPEC §9): bare names, either form in, sorted, unique, capped, never our own. */
static void
test_entry_federates_with_rules(void **state)
{
	struct ly_entry *e = make_entry();
	struct ly_error err;
	assert_int_equal(ly_entry_add_federates_with(e, "spiffe://c.test", NULL), LY_OK);
	assert_int_equal(ly_entry_add_federates_with(e, "b.test", NULL), LY_OK);
	assert_int_equal(ly_entry_validate(e, "example.org", &err), LY_OK);
	assert_string_equal(e->federates_with[0], "b.test");
	assert_string_equal(e->federates_with[1], "c.test");
	struct ly_entry *c = NULL;
	assert_int_equal(ly_entry_copy(e, &c, NULL), LY_OK);
	assert_int_equal(c->n_federates_with, 2);
	assert_ptr_not_equal(c->federates_with[0], e->federates_with[0]);
	assert_string_equal(c->federates_with[1], "c.test");
	ly_entry_free(c);
	ly_entry_free(e);
	/* Malformed names are refused when added. */
	e = make_entry();
	assert_int_equal(ly_entry_add_federates_with(e, "spiffe://B.test", &err), LY_E_INVALID);
	assert_int_not_equal(ly_entry_add_federates_with(e, "spiffe://b.test/path", &err), LY_OK);
	assert_int_not_equal(ly_entry_add_federates_with(e, "", &err), LY_OK);
	assert_int_equal(e->n_federates_with, 0);
	/* The cap. */
	for (int i = 0; i < LY_ENTRY_FEDERATES_WITH_MAX; i++) {
		char td[32];
		(void)snprintf(td, sizeof(td), "td%d.test", i);
		assert_int_equal(ly_entry_add_federates_with(e, td, NULL), LY_OK);
	}
	assert_int_equal(ly_entry_add_federates_with(e, "one-more.test", &err), LY_E_LIMIT);
	entry_accept(e, "example.org");
	/* A duplicate, our own trust domain (given, or the SPIFFE ID's). */
	e = make_entry();
	assert_int_equal(ly_entry_add_federates_with(e, "b.test", NULL), LY_OK);
	assert_int_equal(ly_entry_add_federates_with(e, "spiffe://b.test", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "names b.test twice");
	e = make_entry();
	assert_int_equal(ly_entry_add_federates_with(e, "example.org", NULL), LY_OK);
	entry_refuse(e, "example.org", LY_E_INVALID, "its own trust domain example.org");
	e = make_entry();
	assert_int_equal(ly_entry_add_federates_with(e, "example.org", NULL), LY_OK);
	entry_refuse(e, NULL, LY_E_INVALID, "its own trust domain example.org");
	/* A name set by hand that is not bare. */
	e = make_entry();
	assert_int_equal(ly_entry_add_federates_with(e, "b.test", NULL), LY_OK);
	free(e->federates_with[0]);
	e->federates_with[0] = strdup("spiffe://b.test");
	assert_non_null(e->federates_with[0]);
	entry_refuse(e, "example.org", LY_E_INVALID, "federates_with 1");
	(void)state;
}

static void
test_entry_copy_and_identity(void **state)
{
	struct ly_entry *a = make_entry();
	assert_int_equal(ly_entry_set_string(&a->hint, "web", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&a->entry_id, "e1", NULL), LY_OK);
	assert_int_equal(ly_entry_add_dns_name(a, "web.example.org", NULL), LY_OK);
	a->x509_svid_ttl = 60;
	a->admin = true;
	struct ly_entry *b;
	assert_int_equal(ly_entry_copy(a, &b, NULL), LY_OK);
	assert_ptr_not_equal(a->spiffe_id, b->spiffe_id);
	assert_ptr_not_equal(a->selectors, b->selectors);
	assert_string_equal(b->dns_names[0], "web.example.org");
	assert_string_equal(b->hint, "web");
	assert_int_equal(b->x509_svid_ttl, 60);
	assert_true(b->admin);
	assert_true(ly_entry_same_identity(a, b));

	/* Order of selectors does not matter; other fields do not count. */
	assert_int_equal(ly_entry_validate(b, "example.org", NULL), LY_OK);
	b->x509_svid_ttl = 0;
	assert_int_equal(ly_entry_set_string(&b->entry_id, "e2", NULL), LY_OK);
	assert_true(ly_entry_same_identity(a, b));

	/* A different spiffe_id, parent_id or selector set is another identity. */
	struct ly_entry *c;
	assert_int_equal(ly_entry_copy(a, &c, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&c->spiffe_id, "spiffe://example.org/other", NULL), LY_OK);
	assert_false(ly_entry_same_identity(a, c));
	ly_entry_free(c);
	assert_int_equal(ly_entry_copy(a, &c, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&c->parent_id, "spiffe://example.org/lanyard/agent/a2", NULL), LY_OK);
	assert_false(ly_entry_same_identity(a, c));
	ly_entry_free(c);
	assert_int_equal(ly_entry_copy(a, &c, NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(c, "unix:gid:1", NULL), LY_OK);
	assert_false(ly_entry_same_identity(a, c)); /* superset */
	assert_false(ly_entry_same_identity(c, a)); /* subset */
	ly_entry_free(c);
	assert_false(ly_entry_same_identity(a, NULL));
	ly_entry_free(a);
	ly_entry_free(b);
}

static void
test_generate_id(void **state)
{
	char a[LY_UUID_LEN + 1], b[LY_UUID_LEN + 1];
	assert_int_equal(ly_entry_generate_id(a, NULL), LY_OK);
	assert_int_equal(ly_entry_generate_id(b, NULL), LY_OK);
	assert_int_equal(strlen(a), LY_UUID_LEN);
	assert_string_not_equal(a, b);
	assert_int_equal(a[14], '4');
	assert_non_null(strchr("89ab", a[19]));
	/* A generated ID is a valid entry ID and a valid k8s-style UUID. */
	assert_int_equal(ly_entry_id_check(a, NULL), LY_OK);
	char sel[64];
	snprintf(sel, sizeof(sel), "k8s:pod-uid:%s", a);
	struct ly_selector s;
	assert_int_equal(ly_selector_parse_str(sel, &s, NULL), LY_OK);
	ly_selector_cleanup(&s);
}

static void
test_entry_list(void **state)
{
	struct ly_entry_list list = LY_ENTRY_LIST_INIT;
	for (int i = 0; i < 40; i++)
		assert_int_equal(ly_entry_list_append(&list, make_entry(), NULL), LY_OK);
	assert_int_equal(list.n, 40);
	assert_int_equal(ly_entry_list_append(&list, NULL, NULL), LY_E_INTERNAL);
	ly_entry_list_cleanup(&list);
	assert_int_equal(list.n, 0);
	assert_null(list.items);
	ly_entry_list_cleanup(&list);
	ly_entry_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_selector_shape),
		cmocka_unit_test(test_selector_length_cap),
		cmocka_unit_test(test_selector_unknown),
		cmocka_unit_test(test_selector_empty_argument),
		cmocka_unit_test(test_unix_uid_gid),
		cmocka_unit_test(test_unix_user_group),
		cmocka_unit_test(test_unix_path),
		cmocka_unit_test(test_unix_sha256),
		cmocka_unit_test(test_k8s_names),
		cmocka_unit_test(test_k8s_uid_label_image),
		cmocka_unit_test(test_k8s_psat),
		cmocka_unit_test(test_x509pop),
		cmocka_unit_test(test_join_token),
		cmocka_unit_test(test_value_text),
		cmocka_unit_test(test_selector_set_format_cmp),
		cmocka_unit_test(test_canonicalize),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_entry_valid),
		cmocka_unit_test(test_entry_id_rules),
		cmocka_unit_test(test_entry_spiffe_id_rules),
		cmocka_unit_test(test_entry_selector_rules),
		cmocka_unit_test(test_entry_ttl_rules),
		cmocka_unit_test(test_entry_ttl_floor),
		cmocka_unit_test(test_entry_reserved_ids),
		cmocka_unit_test(test_entry_dns_rules),
		cmocka_unit_test(test_entry_hint_rules),
		cmocka_unit_test(test_entry_federates_with_rules),
		cmocka_unit_test(test_entry_copy_and_identity),
		cmocka_unit_test(test_generate_id),
		cmocka_unit_test(test_entry_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
