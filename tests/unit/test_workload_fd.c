/*
 * test_workload_fd.c: wl_client_new_fd, the client on a connection the
 * caller judged (agent/cli.c): its calls skip the by-path directory check
 * (the listener was judged by SO_PEERCRED over that very fd), report the
 * agent's status to callers that word their own errors, and never
 * reconnect by path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/workload/wl_internal.h"

static int
never(void *arg, const uint8_t *msg, size_t len, struct ly_error *err)
{
	(void)arg;
	(void)msg;
	(void)len;
	(void)err;
	return 1;
}

static void
test_no_fd(void **state)
{
	lanyard_client *c = NULL;
	struct ly_error e;

	(void)state;
	assert_int_equal(wl_client_new_fd("/run/x.sock", -1, &c, &e), LY_E_INVALID);
	assert_null(c);
}

/*
 * A directory others may write: the by-path client refuses before sending
 * anything; the judged-fd client does not look at the path, and its call
 * ends with the status of the connection (here: the peer closed it).
 */
static void
test_fd_skips_path_check(void **state)
{
	char dir[] = "/tmp/ly-wlfd-XXXXXX", path[64];
	struct lanyard_error perr;
	struct ly_error e;
	lanyard_client *c = NULL;
	lanyard_jwt_bundles *b = NULL;
	int sv[2];

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0777), 0);
	(void)snprintf(path, sizeof(path), "%s/api.sock", dir);

	assert_int_equal(lanyard_client_new(path, &c, &perr), LANYARD_OK);
	assert_int_equal(lanyard_fetch_jwt_bundles(c, &b, &perr), LANYARD_E_UNTRUSTED);
	assert_non_null(strstr(perr.msg, "refusing"));
	lanyard_client_free(c);
	c = NULL;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(wl_client_new_fd(path, sv[0], &c, &e), LY_OK);
	(void)close(sv[1]); /* the "agent" hangs up */
	struct wl_call_status st;
	int code = 0;
	struct wl_call call = { .method = "/SpiffeWorkloadAPI/FetchJWTBundles", .req = (const uint8_t *)"",
		.req_len = 0, .stream = true, .timeout_ms = 5000, .on_msg = never, .arg = NULL, .status = &st };
	assert_int_not_equal(wl_rpc_call(c, &call, &code, &e), LY_OK);
	assert_null(strstr(e.msg, "refusing"));
	assert_true(st.got);
	assert_int_equal(st.code, 14); /* UNAVAILABLE: the one connection is gone, nothing reconnects */
	assert_int_equal(code, 14);
	/* A second call on the same client: still no path check, still unavailable. */
	assert_int_not_equal(wl_rpc_call(c, &call, &code, &e), LY_OK);
	assert_true(st.got);
	assert_int_equal(st.code, 14);
	lanyard_client_free(c);
	assert_int_equal(rmdir(dir), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_fd),
		cmocka_unit_test(test_fd_skips_path_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
