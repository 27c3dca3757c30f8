/*
 * http_uv.h: libcurl's multi interface driven by a libuv loop, so that HTTP
 * requests (the kubelet's /pods) never block the agent's loop (DESIGN
 * "Threads and ownership in the agent").
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one
 * uv_poll_t per socket) and when to wake it (CURLMOPT_TIMERFUNCTION: one
 * uv_timer_t); socket readiness and timer expiry go back to
 * curl_multi_socket_action, and finished transfers are reported through
 * each request's callback. Name resolution must not block either: Debian's
 * libcurl uses its threaded resolver (AsynchDNS).
 *
 * Ownership: the caller creates and owns each CURL easy handle (with its
 * options, header list and write buffer); ly_http_uv_add lends it to the
 * multi handle until the done callback runs or ly_http_uv_cancel returns.
 * struct ly_http_uv is a heap object on one loop: ly_http_uv_close
 * abandons every transfer still running (their callbacks never run), closes
 * its libuv handles and frees itself from their close callbacks, so the
 * loop must run once more after close. Loop thread only.
 *
 * Hazard (libuv's rule): a callback may add or cancel requests and may
 * call ly_http_uv_close; after close it must not touch the object again.
 */
#ifndef LANYARD_AGENT_HTTP_UV_H
#define LANYARD_AGENT_HTTP_UV_H

#include "agent/curl_dl.h"
#include <uv.h>

#include "lib/error.h"

struct ly_http_uv;

/* A transfer finished: `result` is libcurl's code; read the status with curl_easy_getinfo. */
typedef void (*ly_http_uv_done_cb)(void *arg, CURL *easy, CURLcode result);

/* Creates the multi handle and its timer on `loop` (curl_global_init is the caller's). */
ly_status ly_http_uv_new(uv_loop_t *loop, struct ly_http_uv **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Starts `easy`. On LY_OK `cb` runs exactly once when it finishes (never
 * from inside this call), unless it is cancelled or the object closed.
 * The easy handle's CURLOPT_PRIVATE is used by this module.
 */
ly_status ly_http_uv_add(struct ly_http_uv *h, CURL *easy, ly_http_uv_done_cb cb, void *arg, struct ly_error *err)
    LY_MUST_CHECK;

/* Stops `easy` (added and not finished); its callback will not run. The caller may then free it. */
void ly_http_uv_cancel(struct ly_http_uv *h, CURL *easy);

/* Closes as above. NULL is allowed. */
void ly_http_uv_close(struct ly_http_uv *h);

#endif /* LANYARD_AGENT_HTTP_UV_H */
