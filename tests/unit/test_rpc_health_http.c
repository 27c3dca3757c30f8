/*
 * test_rpc_health_http.c: the health listener (rpc/health_http.h) on a real
 * libuv loop, with a blocking client in a second thread: /live, /ready 503
 * then 200, /metrics, 404, 405, 400, 431 for an oversized head, and a
 * slowloris connection closed by the read timeout without harming the next
 * request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "lib/caps.h"
#include "rpc/health_http.h"

static bool g_ready;
static uint16_t g_port;
static int g_failures;
static uv_async_t g_done;

static bool
ready_fn(void *arg, char *reason, size_t len)
{
	(void)arg;
	if (!g_ready)
		snprintf(reason, len, "no SVID yet\nsecond line");
	return g_ready;
}

static ly_status
metrics_fn(void *arg, struct ly_buf *out, struct ly_error *err)
{
	(void)arg;
	static const char text[] = "# TYPE x counter\nx 1\n";
	return ly_buf_set(out, text, sizeof(text) - 1, err);
}

static int
dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(g_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sends `req`, reads to EOF; returns the response (static buffer). */
static const char *
roundtrip(const char *req, size_t len)
{
	static char resp[16384];
	int fd = dial();
	if (fd < 0)
		return "";
	size_t off = 0;
	while (off < len) {
		ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	size_t got = 0;
	for (;;) {
		ssize_t n = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	resp[got] = '\0';
	close(fd);
	return resp;
}

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			g_failures++;                                        \
		}                                                            \
	} while (0)

static const char *
get(const char *method, const char *path)
{
	char req[512];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", method, path);
	return roundtrip(req, (size_t)n);
}

static void *
client(void *arg)
{
	(void)arg;
	const char *r = get("GET", "/live");
	CHECK(strncmp(r, "HTTP/1.1 200 ", 13) == 0 && strstr(r, "\r\n\r\nok\n") != NULL);
	CHECK(strstr(r, "Connection: close\r\n") != NULL);
	r = get("GET", "/ready");
	CHECK(strncmp(r, "HTTP/1.1 503 ", 13) == 0 && strstr(r, "\r\n\r\nno SVID yet\n") != NULL);
	CHECK(strstr(r, "second line") == NULL);
	g_ready = true;
	r = get("GET", "/ready?verbose");
	CHECK(strncmp(r, "HTTP/1.1 200 ", 13) == 0);
	r = get("GET", "/metrics");
	CHECK(strncmp(r, "HTTP/1.1 200 ", 13) == 0 && strstr(r, "text/plain; version=0.0.4") != NULL &&
	      strstr(r, "\r\n\r\n# TYPE x counter\nx 1\n") != NULL);
	r = get("GET", "/nope");
	CHECK(strncmp(r, "HTTP/1.1 404 ", 13) == 0);
	r = get("POST", "/live");
	CHECK(strncmp(r, "HTTP/1.1 405 ", 13) == 0);
	r = roundtrip("GET /live HTTP/1.1\n\n", 20);
	CHECK(strncmp(r, "HTTP/1.1 400 ", 13) == 0);
	/* Oversized head. */
	size_t big = LY_HTTP_REQUEST_MAX + 1024;
	char *b = malloc(big);
	memcpy(b, "GET /live HTTP/1.1\r\nX: ", 23);
	memset(b + 23, 'a', big - 23);
	r = roundtrip(b, big);
	CHECK(strncmp(r, "HTTP/1.1 431 ", 13) == 0);
	free(b);
	/* Slowloris: half a request, then silence; the server closes it. */
	int slow = dial();
	CHECK(send(slow, "GET /li", 7, MSG_NOSIGNAL) == 7);
	r = get("GET", "/live"); /* others are still served meanwhile */
	CHECK(strncmp(r, "HTTP/1.1 200 ", 13) == 0);
	char c;
	struct timeval t0, t1;
	gettimeofday(&t0, NULL);
	ssize_t n = recv(slow, &c, 1, 0);
	gettimeofday(&t1, NULL);
	CHECK(n == 0);
	double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
	CHECK(waited > 3.0 && waited < 8.0);
	close(slow);
	r = get("GET", "/live");
	CHECK(strncmp(r, "HTTP/1.1 200 ", 13) == 0);
	/* Connection cap: with LY_HEALTH_CONNS_MAX idle ones held, a probe is
	 * still answered (issue 19), and it is the oldest idle one that goes. */
	int idle[LY_HEALTH_CONNS_MAX];
	for (int i = 0; i < LY_HEALTH_CONNS_MAX; i++) {
		idle[i] = dial();
		usleep(2000); /* accepted in this order */
	}
	usleep(200000);
	for (int k = 0; k < 3; k++) {
		r = get("GET", "/live");
		CHECK(strncmp(r, "HTTP/1.1 200 ", 13) == 0);
	}
	/* Evicted: the oldest one (and one more per probe while the listener is
	 * full); the newest idle one stays. */
	struct timeval brief = { 0, 200000 }; /* well within LY_HEALTH_READ_TIMEOUT_MS */
	for (int i = 0; i < LY_HEALTH_CONNS_MAX; i++)
		setsockopt(idle[i], SOL_SOCKET, SO_RCVTIMEO, &brief, sizeof(brief));
	CHECK(recv(idle[0], &c, 1, 0) == 0);
	CHECK(recv(idle[LY_HEALTH_CONNS_MAX - 1], &c, 1, 0) < 0);
	for (int i = 0; i < LY_HEALTH_CONNS_MAX; i++)
		close(idle[i]);
	usleep(200000);
	r = get("GET", "/live");
	CHECK(strncmp(r, "HTTP/1.1 200 ", 13) == 0);
	uv_async_send(&g_done);
	return NULL;
}

static struct ly_health_http *g_h;

static void
done_cb(uv_async_t *a)
{
	ly_health_http_stop(g_h);
	uv_close((uv_handle_t *)a, NULL);
}

static void
test_listener(void **state)
{
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct ly_health_http_config cfg = {
	    .bind_address = "127.0.0.1", .bind_port = 0, .live_path = "/live", .ready_path = "/ready",
	    .ready = ready_fn, .metrics = metrics_fn,
	};
	struct ly_error err;
	assert_int_equal(ly_health_http_start(&loop, &cfg, &g_h, &err), LY_OK);
	g_port = ly_health_http_port(g_h);
	assert_true(g_port != 0);
	/* The same port cannot be bound twice. */
	struct ly_health_http *h2;
	cfg.bind_port = g_port;
	assert_int_equal(ly_health_http_start(&loop, &cfg, &h2, &err), LY_E_IO);
	assert_null(h2);
	/* The daemons' way names their config section. */
	assert_int_equal(ly_health_http_start_logged(&loop, &cfg, &h2, &err), LY_E_IO);
	assert_true(strncmp(err.msg, "health_checks: ", 15) == 0);
	cfg.bind_address = "localhost";
	assert_int_equal(ly_health_http_start(&loop, &cfg, &h2, &err), LY_E_INVALID);
	assert_int_equal(uv_async_init(&loop, &g_done, done_cb), 0);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, client, NULL), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	pthread_join(t, NULL);
	assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed, listener freed */
	assert_int_equal(g_failures, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_listener),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
