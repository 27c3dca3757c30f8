/*
 * health_http.h: the health and metrics HTTP/1.1 listener of both daemons,
 * on the daemon's libuv loop (never blocks it, never another thread).
 *
 *   GET <live_path>  -> 200 "ok"            (answered from the loop thread:
 *                                            an answer proves the loop turns)
 *   GET <ready_path> -> 200 "ready" or 503 "<one-line reason>"
 *   GET /metrics     -> 200 text/plain; version=0.0.4 (Prometheus text)
 *   other paths 404, other methods 405, malformed head 400, head over
 *   LY_HTTP_REQUEST_MAX 431. Every answer carries "Connection: close" and the
 *   connection is closed after it (lingering: half-close, then discard what
 *   the client still sends until its EOF or LY_HEALTH_LINGER_MS).
 *
 * Bounds: a request head is parsed by lib/httpmini.h (LY_HTTP_REQUEST_MAX
 * bytes, LY_HTTP_HEADERS_MAX headers); a connection that has not sent a full
 * head within LY_HEALTH_READ_TIMEOUT_MS is closed (slowloris); at most
 * LY_HEALTH_CONNS_MAX connections are open at once: when full, a new one
 * closes the oldest connection that has sent nothing yet (or is closed
 * itself when there is none), so idle connections cannot keep a probe out
 * (issue 19).
 *
 * Ownership: ly_health_http_start returns a listener owned by the caller;
 * ly_health_http_stop closes every handle and frees it once libuv has run
 * the close callbacks (run the loop after stop). Config strings are copied.
 * The callbacks are called on the loop thread; `metrics` fills a buffer the
 * listener frees.
 */
#ifndef LANYARD_RPC_HEALTH_HTTP_H
#define LANYARD_RPC_HEALTH_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "lib/buf.h"
#include "lib/caps.h"
#include "lib/error.h"

#define LY_HEALTH_READ_TIMEOUT_MS 5000
#define LY_HEALTH_LINGER_MS 1000

/* true when ready; otherwise writes a one-line reason into `reason`. */
typedef bool (*ly_health_ready_fn)(void *arg, char *reason, size_t reason_len);
/* Renders the metrics text into `out` (the listener frees it). */
typedef ly_status (*ly_health_metrics_fn)(void *arg, struct ly_buf *out, struct ly_error *err);

struct ly_health_http_config {
	const char *bind_address; /* IPv4 or IPv6 literal, e.g. "127.0.0.1" */
	uint16_t bind_port;       /* 0: pick a free port (see ly_health_http_port) */
	const char *live_path;    /* "/live" */
	const char *ready_path;   /* "/ready" */
	ly_health_ready_fn ready;
	ly_health_metrics_fn metrics;
	void *arg;
};

struct ly_health_http;

/* Binds and listens; LY_E_IO when the address cannot be bound. */
ly_status ly_health_http_start(uv_loop_t *loop, const struct ly_health_http_config *cfg,
			       struct ly_health_http **out, struct ly_error *err) LY_MUST_CHECK;
/*
 * ly_health_http_start as both daemons start theirs: an error wrapped
 * "health_checks" (their config section), and one log line with the
 * address and the bound port once it listens.
 */
ly_status ly_health_http_start_logged(uv_loop_t *loop, const struct ly_health_http_config *cfg,
			       struct ly_health_http **out, struct ly_error *err) LY_MUST_CHECK;
/* The bound port. */
uint16_t ly_health_http_port(const struct ly_health_http *h);
/* Closes the listener and every open connection; frees `h` asynchronously. */
void ly_health_http_stop(struct ly_health_http *h);

#endif /* LANYARD_RPC_HEALTH_HTTP_H */
