/*
 * test_workload_source.c: the workload library's gRPC side with no agent
 * behind the socket: a call fails as UNAVAILABLE within its deadline, a
 * source keeps retrying and its wait times out saying why, and freeing a
 * source stops its watcher promptly; a socket in a directory another user
 * took first under /tmp is refused before any call (sockpath.h). (The
 * happy paths run against a real agent in tests/integration/client_mtls.py.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/workload/wl_internal.h"

#define NO_AGENT "unix:///nonexistent/lanyard-test/api.sock"

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
test_client_unavailable(void **state)
{
	lanyard_client *c = NULL;
	lanyard_x509_context *ctx = NULL;
	lanyard_jwt_bundles *jb = NULL;
	struct lanyard_error err;

	assert_int_equal(lanyard_client_new(NO_AGENT, &c, &err), LANYARD_OK);
	lanyard_client_set_timeout(c, 2000);
	double t0 = now_s();
	lanyard_status st = lanyard_fetch_x509_context(c, &ctx, &err);
	assert_true(st == LANYARD_E_UNAVAILABLE || st == LANYARD_E_TIMEOUT);
	assert_true(now_s() - t0 < 5.0);
	assert_null(ctx);
	assert_true(err.rpc_code != 0);
	assert_non_null(strstr(err.msg, "FetchX509SVID"));
	st = lanyard_fetch_jwt_bundles(c, &jb, &err);
	assert_true(st == LANYARD_E_UNAVAILABLE || st == LANYARD_E_TIMEOUT);
	assert_null(jb);
	lanyard_client_free(c);
}

static void
test_client_squatted_refused(void **state)
{
	lanyard_client *c = NULL;
	lanyard_x509_context *ctx = NULL;
	struct lanyard_error err;
	char dir[64], addr[128];

	/* Issue 19: uid 65534 made the agent's directory under /tmp first (a fake agent could listen there). */
	if (geteuid() != 0)
		skip();
	(void)snprintf(dir, sizeof(dir), "/tmp/ly-wl-squat-XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chown(dir, 65534, 65534), 0);
	(void)snprintf(addr, sizeof(addr), "unix://%s/api.sock", dir);
	assert_int_equal(lanyard_client_new(addr, &c, &err), LANYARD_OK);
	lanyard_client_set_timeout(c, 2000);
	assert_int_equal(lanyard_fetch_x509_context(c, &ctx, &err), LANYARD_E_UNTRUSTED);
	assert_null(ctx);
	assert_non_null(strstr(err.msg, "refusing the agent"));
	assert_non_null(strstr(err.msg, "uid 65534"));
	lanyard_client_free(c);
	assert_int_equal(rmdir(dir), 0);
}

static void
test_client_bad_arguments(void **state)
{
	lanyard_client *c = NULL;
	lanyard_jwt_svids *js = NULL;
	struct lanyard_error err;
	const char *aud[1] = { "" };

	assert_int_equal(lanyard_client_new("tcp://127.0.0.1:1", &c, &err), LANYARD_E_INVALID);
	assert_null(c);
	assert_int_equal(lanyard_client_new(NO_AGENT, &c, &err), LANYARD_OK);
	/* Refused before anything is sent. */
	assert_int_equal(lanyard_fetch_jwt_svids(c, aud, 0, NULL, &js, &err), LANYARD_E_INVALID);
	assert_int_equal(lanyard_fetch_jwt_svids(c, aud, 1, NULL, &js, &err), LANYARD_E_INVALID);
	const char *ok[1] = { "db" };
	assert_int_equal(lanyard_fetch_jwt_svids(c, ok, 1, "not-an-id", &js, &err), LANYARD_E_INVALID);
	assert_null(js);
	assert_int_equal(lanyard_validate_jwt_svid(c, "", "db", NULL, NULL, &err), LANYARD_E_INVALID);
	assert_int_equal(lanyard_validate_jwt_svid(c, "a.b.c", "", NULL, NULL, &err), LANYARD_E_INVALID);
	lanyard_client_free(c);
}

static int updates;

static void
on_update(lanyard_x509_context *ctx, void *arg)
{
	(void)ctx;
	(void)arg;
	updates++;
}

static void
test_source_waits_and_stops(void **state)
{
	lanyard_x509_source *s = NULL;
	struct lanyard_error err;

	assert_int_equal(lanyard_x509_source_new(NO_AGENT, on_update, NULL, &s, &err), LANYARD_OK);
	double t0 = now_s();
	assert_int_equal(lanyard_x509_source_wait(s, 700, &err), LANYARD_E_TIMEOUT);
	double waited = now_s() - t0;
	assert_true(waited >= 0.6 && waited < 3.0);
	assert_non_null(strstr(err.msg, "no X.509-SVID within 700 ms"));
	assert_int_equal(lanyard_x509_source_version(s), 0);
	assert_null(lanyard_x509_source_get(s));
	assert_int_equal(updates, 0);
	/* Another reference keeps it running; the last one stops it promptly. */
	lanyard_x509_source *ref = lanyard_x509_source_ref(s);
	lanyard_x509_source_free(s);
	assert_int_equal(lanyard_x509_source_wait(ref, 10, &err), LANYARD_E_TIMEOUT);
	t0 = now_s();
	lanyard_x509_source_free(ref);
	assert_true(now_s() - t0 < 1.5);

	assert_int_equal(lanyard_x509_source_new("relative.sock", NULL, NULL, &s, &err), LANYARD_E_INVALID);
	assert_null(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_unavailable),
		cmocka_unit_test(test_client_squatted_refused),
		cmocka_unit_test(test_client_bad_arguments),
		cmocka_unit_test(test_source_waits_and_stops),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
