/* health_http.c: health and metrics HTTP listener on libuv (see health_http.h). */
#include "health_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "lib/httpmini.h"
#include "lib/log.h"
#include "lib/queue.h"

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	struct ly_health_http *h;
	struct ly_queue link; /* on h->conns */
	int closing;  /* handles still to be closed */
	bool answered;
	bool got_data;        /* a byte of its request has arrived */
	uint64_t accepted_ms; /* uv_now at accept */
	size_t len;
	char in[LY_HTTP_REQUEST_MAX];
	char *out;
};

struct ly_health_http {
	uv_tcp_t listener;
	uv_loop_t *loop;
	char *live_path, *ready_path;
	ly_health_ready_fn ready;
	ly_health_metrics_fn metrics;
	void *arg;
	uint16_t port;
	size_t nconns;   /* in the list, closing ones included */
	size_t nclosing; /* closed, waiting for their close callbacks */
	struct ly_queue conns;
	bool stopping;
	bool listener_closed;
};

static void
maybe_free(struct ly_health_http *h)
{
	if (h->stopping && h->listener_closed && ly_queue_empty(&h->conns)) {
		free(h->live_path);
		free(h->ready_path);
		free(h);
	}
}

static void
conn_closed_cb(uv_handle_t *handle)
{
	struct conn *c = handle->data;
	if (--c->closing > 0)
		return;
	struct ly_health_http *h = c->h;
	ly_queue_remove(&c->link);
	h->nconns--;
	h->nclosing--;
	free(c->out);
	free(c);
	maybe_free(h);
}

static void
conn_close(struct conn *c)
{
	if (c->closing > 0)
		return;
	c->closing = 2;
	c->h->nclosing++;
	uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
	uv_close((uv_handle_t *)&c->timer, conn_closed_cb);
}

static void
timeout_cb(uv_timer_t *timer)
{
	conn_close(timer->data);
}

static void
shutdown_cb(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status; /* the read of EOF, or the linger timer, closes */
}

/*
 * Lingering close: after the answer, half-close and read (discarding) until
 * the peer's EOF or LY_HEALTH_LINGER_MS. Closing with unread bytes (an
 * oversized head) would send a reset that can destroy the answer in flight.
 */
static void
write_cb(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	if (status != 0 || c->closing > 0 ||
	    uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, shutdown_cb) != 0 ||
	    uv_timer_start(&c->timer, timeout_cb, LY_HEALTH_LINGER_MS, 0) != 0)
		conn_close(c);
}

static void
answer(struct conn *c, int code, const char *reason, const char *ctype, const char *body, size_t body_len)
{
	c->answered = true;
	uv_timer_stop(&c->timer);
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 code, reason, ctype, body_len);
	if (n < 0 || (size_t)n >= sizeof(head)) {
		conn_close(c);
		return;
	}
	c->out = malloc((size_t)n + body_len);
	if (c->out == NULL) {
		conn_close(c);
		return;
	}
	memcpy(c->out, head, (size_t)n);
	if (body_len > 0)
		memcpy(c->out + n, body, body_len);
	uv_buf_t b = uv_buf_init(c->out, (unsigned int)((size_t)n + body_len));
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0)
		conn_close(c);
}

static void
answer_text(struct conn *c, int code, const char *reason, const char *body)
{
	answer(c, code, reason, "text/plain; charset=utf-8", body, strlen(body));
}

static void
dispatch(struct conn *c, const struct ly_http_request *req)
{
	struct ly_health_http *h = c->h;
	bool known = strcmp(req->path, h->live_path) == 0 || strcmp(req->path, h->ready_path) == 0 ||
		     strcmp(req->path, "/metrics") == 0;
	if (!known) {
		answer_text(c, 404, "Not Found", "not found\n");
		return;
	}
	if (strcmp(req->method, "GET") != 0) {
		answer_text(c, 405, "Method Not Allowed", "method not allowed\n");
		return;
	}
	if (strcmp(req->path, h->live_path) == 0) {
		answer_text(c, 200, "OK", "ok\n");
	} else if (strcmp(req->path, h->ready_path) == 0) {
		char reason[200] = "not ready";
		if (h->ready != NULL && h->ready(h->arg, reason, sizeof(reason) - 1)) {
			answer_text(c, 200, "OK", "ready\n");
		} else {
			char body[256];
			reason[sizeof(reason) - 1] = '\0';
			/* One line: cut at the first newline. */
			reason[strcspn(reason, "\r\n")] = '\0';
			snprintf(body, sizeof(body), "%s\n", reason);
			answer_text(c, 503, "Service Unavailable", body);
		}
	} else {
		struct ly_buf b = LY_BUF_INIT;
		if (h->metrics == NULL || h->metrics(h->arg, &b, NULL) != LY_OK) {
			answer_text(c, 500, "Internal Server Error", "metrics unavailable\n");
		} else {
			answer(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", (const char *)b.data, b.len);
		}
		ly_buf_free(&b);
	}
}

static void
alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct conn *c = handle->data;
	size_t room = sizeof(c->in) - c->len;
	/* Full buffer: a scratch buffer, so the read reports data and we refuse (or, after
	 * the answer, discard). Its content is never looked at. */
	static char scratch[4096];
	if (room == 0 || c->answered)
		*buf = uv_buf_init(scratch, sizeof(scratch));
	else
		*buf = uv_buf_init(c->in + c->len, (unsigned int)room);
}

static void
read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = stream->data;
	if (nread < 0) {
		conn_close(c);
		return;
	}
	if (nread == 0 || c->answered)
		return;
	c->got_data = true;
	if (c->len == sizeof(c->in) || buf->base != c->in + c->len) {
		answer_text(c, 431, "Request Header Fields Too Large", "request too large\n");
		return;
	}
	c->len += (size_t)nread;
	struct ly_http_request req;
	ly_status rc = ly_http_parse_request(c->in, c->len, &req, NULL);
	if (rc == LY_E_LIMIT)
		answer_text(c, 431, "Request Header Fields Too Large", "request too large\n");
	else if (rc != LY_OK)
		answer_text(c, 400, "Bad Request", "bad request\n");
	else if (req.complete)
		dispatch(c, &req);
}


/*
 * Makes room for `fresh` (issue 19: 70 idle connections used to starve
 * every probe): closes the oldest other connection that has sent nothing
 * yet, preferring one at least LY_HEALTH_EVICT_AGE_MS old (the list is
 * newest first). A probe sends its request at once, so it is not idle, and
 * an idle connection only ever takes the slot of another idle one. No
 * candidate: false (`fresh` is the one to close).
 */
static bool
evict_idle(struct ly_health_http *h, const struct conn *fresh)
{
	struct conn *oldest = NULL, *old_enough = NULL;
	uint64_t now = uv_now(h->loop);
	struct ly_queue *q;

	LY_QUEUE_FOREACH(q, &h->conns) {
		struct conn *c = LY_QUEUE_DATA(q, struct conn, link);
		if (c == fresh || c->closing != 0 || c->answered || c->got_data)
			continue;
		oldest = c;
		if (now - c->accepted_ms >= LY_HEALTH_EVICT_AGE_MS)
			old_enough = c;
	}
	struct conn *victim = old_enough != NULL ? old_enough : oldest;
	if (victim == NULL)
		return false;
	conn_close(victim);
	return true;
}

/* Whether the peer already sent something (a probe's request usually has arrived by accept). */
static bool
has_data(struct conn *c)
{
	uv_os_fd_t fd;
	char b;

	return uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static void
connection_cb(uv_stream_t *server, int status)
{
	struct ly_health_http *h = server->data;
	if (status < 0 || h->stopping)
		return;
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return; /* the pending connection is retried by libuv on the next turn */
	c->h = h;
	c->accepted_ms = uv_now(h->loop);
	c->tcp.data = c;
	c->timer.data = c;
	if (uv_tcp_init(h->loop, &c->tcp) != 0) {
		free(c);
		return;
	}
	/* uv_timer_init cannot fail on a live loop (libuv src/timer.c). */
	(void)uv_timer_init(h->loop, &c->timer);
	ly_queue_insert_head(&h->conns, &c->link);
	h->nconns++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c);
		return;
	}
	c->got_data = has_data(c);
	/* Full: an idle connection makes room, or this one goes (evict_idle). */
	if (h->nconns - h->nclosing > LY_HEALTH_CONNS_MAX && !evict_idle(h, c)) {
		conn_close(c);
		return;
	}
	if (uv_timer_start(&c->timer, timeout_cb, LY_HEALTH_READ_TIMEOUT_MS, 0) != 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
		conn_close(c);
}

static void
listener_closed_cb(uv_handle_t *handle)
{
	struct ly_health_http *h = handle->data;
	h->listener_closed = true;
	maybe_free(h);
}

ly_status
ly_health_http_start(uv_loop_t *loop, const struct ly_health_http_config *cfg, struct ly_health_http **out,
		     struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct sockaddr_storage ss;
	int r;

	*out = NULL;
	const char *addr = cfg->bind_address != NULL ? cfg->bind_address : "127.0.0.1";
	if (uv_ip4_addr(addr, cfg->bind_port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(addr, cfg->bind_port, (struct sockaddr_in6 *)&ss) != 0)
		return ly_error_set(err, LY_E_INVALID, "health: bind_address %s is not an IP literal", addr);
	struct ly_health_http *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return ly_error_set(err, LY_E_NOMEM, "health: out of memory");
	ly_queue_init(&h->conns);
	h->loop = loop;
	h->live_path = strdup(cfg->live_path != NULL ? cfg->live_path : "/live");
	h->ready_path = strdup(cfg->ready_path != NULL ? cfg->ready_path : "/ready");
	h->ready = cfg->ready;
	h->metrics = cfg->metrics;
	h->arg = cfg->arg;
	h->listener.data = h;
	if (h->live_path == NULL || h->ready_path == NULL) {
		free(h->live_path);
		free(h->ready_path);
		free(h);
		return ly_error_set(err, LY_E_NOMEM, "health: out of memory");
	}
	r = uv_tcp_init(loop, &h->listener);
	if (r != 0) {
		free(h->live_path);
		free(h->ready_path);
		free(h);
		return ly_error_set(err, LY_E_IO, "health: tcp init: %s", uv_strerror(r));
	}
	/* From here the listener handle must be closed: stop() frees asynchronously. */
	r = uv_tcp_bind(&h->listener, (const struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&h->listener, LY_HEALTH_BACKLOG, connection_cb);
	if (r != 0) {
		rc = ly_error_set(err, LY_E_IO, "health: listen on %s:%u: %s", addr, (unsigned)cfg->bind_port,
				  uv_strerror(r));
		goto out;
	}
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	r = uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen);
	if (r != 0) {
		rc = ly_error_set(err, LY_E_IO, "health: getsockname: %s", uv_strerror(r));
		goto out;
	}
	h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
						    : ((struct sockaddr_in *)&bound)->sin_port);
	*out = h;
	h = NULL;
out:
	if (h != NULL)
		ly_health_http_stop(h);
	return rc;
}

uint16_t
ly_health_http_port(const struct ly_health_http *h)
{
	return h->port;
}

void
ly_health_http_stop(struct ly_health_http *h)
{
	if (h == NULL || h->stopping)
		return;
	h->stopping = true;
	struct ly_queue *q, *tmp;
	LY_QUEUE_FOREACH_SAFE(q, tmp, &h->conns)
		conn_close(LY_QUEUE_DATA(q, struct conn, link));
	uv_close((uv_handle_t *)&h->listener, listener_closed_cb);
}

ly_status
ly_health_http_start_logged(uv_loop_t *loop, const struct ly_health_http_config *cfg, struct ly_health_http **out,
			    struct ly_error *err)
{
	ly_status rc = ly_health_http_start(loop, cfg, out, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "health_checks");
	log_info("health listener on %s:%u", cfg->bind_address, (unsigned)ly_health_http_port(*out));
	return LY_OK;
}
