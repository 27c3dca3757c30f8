/* test_httpmini.c: the strict HTTP/1.x request head parser (lib/httpmini.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/httpmini.h"

static ly_status
parse(const char *s, struct ly_http_request *req)
{
	return ly_http_parse_request(s, strlen(s), req, NULL);
}

static void
test_simple_get(void **state)
{
	struct ly_http_request req;
	const char *s = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";
	assert_int_equal(parse(s, &req), LY_OK);
	assert_true(req.complete);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.path, "/metrics");
	assert_int_equal(req.version_minor, 1);
	assert_int_equal(req.header_count, 2);
	assert_int_equal(req.consumed, strlen(s));
}

static void
test_query_stripped_and_http10(void **state)
{
	struct ly_http_request req;
	assert_int_equal(parse("HEAD /ready?x=1 HTTP/1.0\r\n\r\n", &req), LY_OK);
	assert_true(req.complete);
	assert_string_equal(req.method, "HEAD");
	assert_string_equal(req.path, "/ready");
	assert_int_equal(req.version_minor, 0);
}

static void
test_incomplete(void **state)
{
	struct ly_http_request req;
	const char *parts[] = {"", "G", "GET /live HTTP/1.1", "GET /live HTTP/1.1\r",
			       "GET /live HTTP/1.1\r\nHost: x\r\n", "GET /live HTTP/1.1\r\nHost: x\r\n\r"};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		assert_int_equal(parse(parts[i], &req), LY_OK);
		assert_false(req.complete);
	}
}

static void
test_bad_request_lines(void **state)
{
	struct ly_http_request req;
	const char *bad[] = {
	    "\r\n\r\n",                              /* empty request line */
	    "GET\r\n\r\n",                           /* no target */
	    "GET /live\r\n\r\n",                     /* no version */
	    "GET  /live HTTP/1.1\r\n\r\n",           /* two spaces */
	    "GET live HTTP/1.1\r\n\r\n",             /* not origin-form */
	    "GET http://x/live HTTP/1.1\r\n\r\n",    /* absolute-form */
	    "GET /live HTTP/2.0\r\n\r\n",            /* version */
	    "GET /live HTTP/1.2\r\n\r\n",            /* version */
	    "GET /live HTTP/1.1 \r\n\r\n",           /* trailing space */
	    "GET /li\x01ve HTTP/1.1\r\n\r\n",        /* control byte in target */
	    "GET /li\x80ve HTTP/1.1\r\n\r\n",        /* non-ASCII in target */
	    "GET /live#frag HTTP/1.1\r\n\r\n",       /* fragment */
	    "G(T /live HTTP/1.1\r\n\r\n",            /* method not a token */
	    "GETGETGETGETGETGETGET /x HTTP/1.1\r\n\r\n", /* method too long */
	    "GET /live HTTP/1.1\n\n",                /* bare LF */
	    "GET /live HTTP/1.1\rX\r\n\r\n",         /* bare CR */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ly_status rc = parse(bad[i], &req);
		if (rc == LY_OK)
			fail_msg("accepted bad request line %zu", i);
	}
}

static void
test_bad_headers(void **state)
{
	struct ly_http_request req;
	const char *bad[] = {
	    "GET / HTTP/1.1\r\nHost x\r\n\r\n",             /* no colon */
	    "GET / HTTP/1.1\r\n: x\r\n\r\n",                /* empty name */
	    "GET / HTTP/1.1\r\nHo st: x\r\n\r\n",           /* space in name */
	    "GET / HTTP/1.1\r\nHost : x\r\n\r\n",           /* space before colon */
	    "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",         /* obs-fold */
	    "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",           /* control byte in value */
	    "GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",           /* DEL in value */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &req) == LY_OK)
			fail_msg("accepted bad header %zu", i);
	}
	/* A NUL is refused, also in an unfinished line. */
	const char nul[] = "GET / HTTP/1.1\r\nA: \0b";
	assert_int_equal(ly_http_parse_request(nul, sizeof(nul) - 1, &req, NULL), LY_E_INVALID);
	/* A tab inside a value is fine. */
	assert_int_equal(parse("GET / HTTP/1.1\r\nA: b\tc\r\n\r\n", &req), LY_OK);
	assert_true(req.complete);
}

static void
test_header_count_cap(void **state)
{
	struct ly_http_request req;
	char buf[LY_HTTP_REQUEST_MAX];
	size_t n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n");
	for (int i = 0; i < LY_HTTP_HEADERS_MAX; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-%d: y\r\n", i);
	memcpy(buf + n, "\r\n", 2);
	assert_int_equal(ly_http_parse_request(buf, n + 2, &req, NULL), LY_OK);
	assert_true(req.complete);
	assert_int_equal(req.header_count, LY_HTTP_HEADERS_MAX);
	/* One more header is refused. */
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-last: y\r\n\r\n");
	assert_int_equal(ly_http_parse_request(buf, n, &req, NULL), LY_E_LIMIT);
}

static void
test_size_cap(void **state)
{
	struct ly_http_request req;
	size_t len = LY_HTTP_REQUEST_MAX + 100;
	char *buf = malloc(len);
	assert_non_null(buf);
	const char *head = "GET / HTTP/1.1\r\nX: ";
	memcpy(buf, head, strlen(head));
	memset(buf + strlen(head), 'a', len - strlen(head));
	/* Just under the cap without an end: keep reading. */
	assert_int_equal(ly_http_parse_request(buf, LY_HTTP_REQUEST_MAX - 1, &req, NULL), LY_OK);
	assert_false(req.complete);
	/* At the cap without an end: refused. */
	assert_int_equal(ly_http_parse_request(buf, LY_HTTP_REQUEST_MAX, &req, NULL), LY_E_LIMIT);
	assert_int_equal(ly_http_parse_request(buf, len, &req, NULL), LY_E_LIMIT);
	/* A head that ends exactly at the cap is accepted. */
	memcpy(buf + LY_HTTP_REQUEST_MAX - 4, "\r\n\r\n", 4);
	assert_int_equal(ly_http_parse_request(buf, LY_HTTP_REQUEST_MAX, &req, NULL), LY_OK);
	assert_true(req.complete);
	assert_int_equal(req.consumed, LY_HTTP_REQUEST_MAX);
	free(buf);
}

static void
test_path_cap(void **state)
{
	struct ly_http_request req;
	char buf[1024];
	char path[LY_HTTP_PATH_MAX + 2];
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[LY_HTTP_PATH_MAX] = '\0';
	snprintf(buf, sizeof(buf), "GET %s HTTP/1.1\r\n\r\n", path);
	assert_int_equal(parse(buf, &req), LY_OK);
	path[LY_HTTP_PATH_MAX] = 'a';
	path[LY_HTTP_PATH_MAX + 1] = '\0';
	snprintf(buf, sizeof(buf), "GET %s HTTP/1.1\r\n\r\n", path);
	assert_int_equal(parse(buf, &req), LY_E_LIMIT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_simple_get),     cmocka_unit_test(test_query_stripped_and_http10),
	    cmocka_unit_test(test_incomplete),     cmocka_unit_test(test_bad_request_lines),
	    cmocka_unit_test(test_bad_headers),    cmocka_unit_test(test_header_count_cap),
	    cmocka_unit_test(test_size_cap),       cmocka_unit_test(test_path_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
