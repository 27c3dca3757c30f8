/*
 * test_workload_addr.c: the workload library's pure parts without
 * certificates: the Workload API address (Workload Endpoint §4), errors,
 * and the SPIFFE ID authorizers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lib/workload/wl_internal.h"

static void
test_endpoint_accepted(void **state)
{
	char out[LANYARD_SOCKET_PATH_MAX + 1];
	struct lanyard_error err;

	assert_int_equal(lanyard_endpoint_parse("unix:///run/agent.sock", out, &err), LANYARD_OK);
	assert_string_equal(out, "/run/agent.sock");
	assert_int_equal(lanyard_endpoint_parse("unix:/run/agent.sock", out, &err), LANYARD_OK);
	assert_string_equal(out, "/run/agent.sock");
	assert_int_equal(lanyard_endpoint_parse("/tmp/lanyard-agent/public/api.sock", out, &err), LANYARD_OK);
	assert_string_equal(out, "/tmp/lanyard-agent/public/api.sock");
}

static void
test_endpoint_refused(void **state)
{
	char out[LANYARD_SOCKET_PATH_MAX + 1];
	struct lanyard_error err;
	static const char *bad[] = {
		"",                          /* empty */
		"tcp://127.0.0.1:8081",      /* another scheme */
		"tcp:127.0.0.1:8081",
		"http://x/y",
		"unix://host/run/a.sock",    /* an authority */
		"unix://",                   /* no path */
		"unix:",
		"unix:relative.sock",        /* not absolute */
		"relative/agent.sock",
		"unix:///run/a.sock?x=1",    /* query */
		"unix:///run/a.sock#frag",   /* fragment */
		"unix:///run/a%20b.sock",    /* percent-encoding */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&err, 0, sizeof(err));
		assert_int_equal(lanyard_endpoint_parse(bad[i], out, &err), LANYARD_E_INVALID);
		assert_int_equal(err.code, LANYARD_E_INVALID);
		assert_true(err.msg[0] != '\0');
	}
	assert_int_equal(lanyard_endpoint_parse(NULL, out, &err), LANYARD_E_INVALID);
	assert_non_null(strstr(lanyard_endpoint_parse("tcp://a:1", out, &err) == LANYARD_E_INVALID ? err.msg : "",
	    "only unix:"));
}

static void
test_endpoint_length(void **state)
{
	char out[LANYARD_SOCKET_PATH_MAX + 1], addr[LANYARD_SOCKET_PATH_MAX + 16];
	struct lanyard_error err;

	/* Exactly the most a sockaddr_un takes, then one byte more. */
	addr[0] = '/';
	memset(addr + 1, 'a', LANYARD_SOCKET_PATH_MAX - 1);
	addr[LANYARD_SOCKET_PATH_MAX] = '\0';
	assert_int_equal(lanyard_endpoint_parse(addr, out, &err), LANYARD_OK);
	assert_int_equal(strlen(out), LANYARD_SOCKET_PATH_MAX);
	addr[LANYARD_SOCKET_PATH_MAX] = 'a';
	addr[LANYARD_SOCKET_PATH_MAX + 1] = '\0';
	assert_int_equal(lanyard_endpoint_parse(addr, out, &err), LANYARD_E_LIMIT);
}

static void
test_endpoint_resolve_env(void **state)
{
	char out[LANYARD_SOCKET_PATH_MAX + 1];
	struct lanyard_error err;

	unsetenv("SPIFFE_ENDPOINT_SOCKET");
	assert_int_equal(lanyard_endpoint_resolve(NULL, out, &err), LANYARD_E_NOT_FOUND);
	assert_non_null(strstr(err.msg, "SPIFFE_ENDPOINT_SOCKET"));
	setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///run/env.sock", 1);
	assert_int_equal(lanyard_endpoint_resolve(NULL, out, &err), LANYARD_OK);
	assert_string_equal(out, "/run/env.sock");
	/* The argument wins over the environment. */
	assert_int_equal(lanyard_endpoint_resolve("/run/arg.sock", out, &err), LANYARD_OK);
	assert_string_equal(out, "/run/arg.sock");
	setenv("SPIFFE_ENDPOINT_SOCKET", "tcp://127.0.0.1:1", 1);
	assert_int_equal(lanyard_endpoint_resolve(NULL, out, &err), LANYARD_E_INVALID);
	unsetenv("SPIFFE_ENDPOINT_SOCKET");
}

static void
test_export_rpc_codes(void **state)
{
	struct lanyard_error out;
	struct ly_error e;

	(void)ly_error_set(&e, LY_E_IO, "x");
	assert_int_equal(wl_export(&out, LY_E_IO, &e, 14), LANYARD_E_UNAVAILABLE);
	assert_int_equal(out.rpc_code, 14);
	assert_int_equal(wl_export(&out, LY_E_IO, &e, 7), LANYARD_E_DENIED);
	assert_int_equal(wl_export(&out, LY_E_IO, &e, 4), LANYARD_E_TIMEOUT);
	assert_int_equal(wl_export(&out, LY_E_IO, &e, 3), LANYARD_E_RPC);
	assert_int_equal(wl_export(&out, LY_E_IO, &e, 0), LANYARD_E_IO);
	assert_int_equal(wl_export(&out, LY_E_UNTRUSTED, &e, 0), LANYARD_E_UNTRUSTED);
	assert_int_equal(wl_export(&out, LY_OK, &e, 14), LANYARD_OK);
	assert_int_equal(out.rpc_code, 0);
	assert_string_equal(out.msg, "");
	assert_string_equal(lanyard_status_str(LANYARD_E_DENIED), "permission denied");
	assert_string_equal(lanyard_status_str(LANYARD_E_INVALID), "invalid");
}

static void
test_authorize_id(void **state)
{
	lanyard_authorizer *a = NULL;
	struct lanyard_error err;

	assert_int_equal(lanyard_authorize_id("spiffe://example.org/web", &a, &err), LANYARD_OK);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org/web", &err), LANYARD_OK);
	/* Exact: no prefix, no case folding, no other trust domain. */
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org/web/x", &err), LANYARD_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "not authorized"));
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org/we", &err), LANYARD_E_UNTRUSTED);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://other.org/web", &err), LANYARD_E_UNTRUSTED);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org/Web", &err), LANYARD_E_UNTRUSTED);
	/* Not an ID at all. */
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://EXAMPLE.org/web", &err), LANYARD_E_INVALID);
	assert_int_equal(lanyard_authorizer_check(a, NULL, &err), LANYARD_E_INVALID);
	lanyard_authorizer_free(a);

	assert_int_equal(lanyard_authorize_id("spiffe://example.org/a/../b", &a, &err), LANYARD_E_INVALID);
	assert_null(a);
	assert_int_equal(lanyard_authorize_id("https://example.org/web", &a, &err), LANYARD_E_INVALID);
	assert_int_equal(lanyard_authorize_id(NULL, &a, &err), LANYARD_E_INVALID);
}

static void
test_authorize_one_of(void **state)
{
	const char *ids[] = { "spiffe://example.org/a", "spiffe://example.org/b", "spiffe://other.org/c" };
	lanyard_authorizer *a = NULL;
	struct lanyard_error err;

	assert_int_equal(lanyard_authorize_one_of(ids, 3, &a, &err), LANYARD_OK);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(lanyard_authorizer_check(a, ids[i], &err), LANYARD_OK);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org/c", &err), LANYARD_E_UNTRUSTED);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://other.org/a", &err), LANYARD_E_UNTRUSTED);
	lanyard_authorizer_free(a);

	assert_int_equal(lanyard_authorize_one_of(ids, 0, &a, &err), LANYARD_E_INVALID);
	const char *bad[] = { "spiffe://example.org/a", "spiffe://example.org/" };
	assert_int_equal(lanyard_authorize_one_of(bad, 2, &a, &err), LANYARD_E_INVALID);
	assert_null(a);
	assert_non_null(strstr(err.msg, "SPIFFE ID 1"));
	assert_int_equal(lanyard_authorize_one_of(ids, LY_WL_SVIDS_MAX + 1, &a, &err), LANYARD_E_LIMIT);
}

static void
test_authorize_member_of(void **state)
{
	lanyard_authorizer *a = NULL, *b = NULL;
	struct lanyard_error err;
	struct ly_error e;

	assert_int_equal(lanyard_authorize_member_of("example.org", &a, &err), LANYARD_OK);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org/any/workload", &err), LANYARD_OK);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org.evil/x", &err), LANYARD_E_UNTRUSTED);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://sub.example.org/x", &err), LANYARD_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "not a member of trust domain example.org"));
	/* A clone decides the same. */
	assert_int_equal(wl_authorizer_clone(a, &b, &e), LY_OK);
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str("spiffe://other.org/x", &id, &e), LY_OK);
	assert_int_equal(wl_authorizer_check(b, &id, &e), LY_E_UNTRUSTED);
	lanyard_authorizer_free(a);
	lanyard_authorizer_free(b);

	assert_int_equal(lanyard_authorize_member_of("spiffe://example.org", &a, &err), LANYARD_OK);
	assert_int_equal(lanyard_authorizer_check(a, "spiffe://example.org/x", &err), LANYARD_OK);
	lanyard_authorizer_free(a);
	assert_int_equal(lanyard_authorize_member_of("Example.org", &a, &err), LANYARD_E_INVALID);
	assert_int_equal(lanyard_authorize_member_of("spiffe://example.org/path", &a, &err), LANYARD_E_INVALID);
	assert_int_equal(lanyard_authorize_member_of("", &a, &err), LANYARD_E_INVALID);
	assert_null(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_endpoint_accepted),
		cmocka_unit_test(test_endpoint_refused),
		cmocka_unit_test(test_endpoint_length),
		cmocka_unit_test(test_endpoint_resolve_env),
		cmocka_unit_test(test_export_rpc_codes),
		cmocka_unit_test(test_authorize_id),
		cmocka_unit_test(test_authorize_one_of),
		cmocka_unit_test(test_authorize_member_of),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
