/* http_uv.c: see http_uv.h. */
#include "agent/http_uv.h"

#include <stdbool.h>
#include <stdlib.h>

#include "lib/queue.h"

/* One transfer lent to the multi handle. */
struct xfer {
	CURL *easy;
	ly_http_uv_done_cb cb;
	void *arg;
	struct ly_queue link; /* on h->xfers */
};

/* One socket libcurl asked us to watch. */
struct sock {
	uv_poll_t poll;
	curl_socket_t fd;
	struct ly_http_uv *h;
	struct ly_queue link; /* on h->socks */
};

struct ly_http_uv {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	struct ly_queue xfers; /* struct xfer, newest first */
	struct ly_queue socks; /* struct sock, newest first */
	size_t pending_closes; /* uv_close calls whose callback has not run */
	bool closing;
};

static void
maybe_free(struct ly_http_uv *h)
{
	if (h->closing && h->pending_closes == 0)
		free(h);
}

static void
handle_closed(uv_handle_t *handle)
{
	struct ly_http_uv *h = handle->data;
	h->pending_closes--;
	maybe_free(h);
}

static void
sock_closed(uv_handle_t *handle)
{
	struct sock *s = handle->data;
	struct ly_http_uv *h = s->h;
	free(s);
	h->pending_closes--;
	maybe_free(h);
}

static void
sock_close(struct sock *s)
{
	struct ly_http_uv *h = s->h;
	ly_queue_remove(&s->link);
	h->pending_closes++;
	uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static void
xfer_unlink(struct ly_http_uv *h, struct xfer *x)
{
	ly_queue_remove(&x->link);
}

/* Reports every finished transfer. Stops when a callback closed `h`. */
static void
check_done(struct ly_http_uv *h)
{
	CURLMsg *m;
	int left;

	while (!h->closing && (m = curl_multi_info_read(h->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *easy = m->easy_handle;
		CURLcode result = m->data.result;
		char *priv = NULL;
		(void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		struct xfer *x = (struct xfer *)(void *)priv;
		(void)curl_multi_remove_handle(h->multi, easy); /* invalidates m */
		if (x == NULL)
			continue;
		xfer_unlink(h, x);
		ly_http_uv_done_cb cb = x->cb;
		void *arg = x->arg;
		free(x);
		cb(arg, easy, result);
	}
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = p->data;
	struct ly_http_uv *h = s->h;
	int flags = 0;
	int running = 0;

	if (h->closing)
		return;
	if (status < 0) {
		flags = CURL_CSELECT_ERR;
	} else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	/* `s` may be closed inside (CURL_POLL_REMOVE): not used after this call. */
	(void)curl_multi_socket_action(h->multi, s->fd, flags, &running);
	check_done(h);
}

static void
on_timeout(uv_timer_t *t)
{
	struct ly_http_uv *h = t->data;
	int running = 0;

	if (h->closing)
		return;
	(void)curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(h);
}

/* CURLMOPT_SOCKETFUNCTION */
static int
socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct ly_http_uv *h = userp;
	struct sock *s = socketp;
	(void)easy;

	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			(void)curl_multi_assign(h->multi, fd, NULL);
			sock_close(s);
		}
		return 0;
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return -1;
		if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		s->fd = fd;
		s->h = h;
		s->poll.data = s;
		ly_queue_insert_head(&h->socks, &s->link);
		(void)curl_multi_assign(h->multi, fd, s);
	}
	int events = 0;
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	if (uv_poll_start(&s->poll, events, on_poll) != 0)
		return -1;
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: never calls back into libcurl from here (its rule). */
static int
timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
	struct ly_http_uv *h = userp;
	(void)multi;

	if (timeout_ms < 0) {
		(void)uv_timer_stop(&h->timer);
		return 0;
	}
	return uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

ly_status
ly_http_uv_new(uv_loop_t *loop, struct ly_http_uv **out, struct ly_error *err)
{
	*out = NULL;
	struct ly_http_uv *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return ly_error_set(err, LY_E_NOMEM, "http: out of memory");
	ly_queue_init(&h->xfers);
	ly_queue_init(&h->socks);
	h->loop = loop;
	h->multi = curl_multi_init();
	if (h->multi == NULL) {
		free(h);
		return ly_error_set(err, LY_E_INTERNAL, "http: curl_multi_init failed");
	}
	if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_fn) != CURLM_OK ||
	    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
	    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_fn) != CURLM_OK ||
	    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK) {
		curl_multi_cleanup(h->multi);
		free(h);
		return ly_error_set(err, LY_E_INTERNAL, "http: setting up libcurl's multi handle failed");
	}
	int e = uv_timer_init(loop, &h->timer);
	if (e != 0) {
		curl_multi_cleanup(h->multi);
		free(h);
		return ly_error_set(err, LY_E_INTERNAL, "http: uv_timer_init: %s", uv_strerror(e));
	}
	h->timer.data = h;
	*out = h;
	return LY_OK;
}

ly_status
ly_http_uv_add(struct ly_http_uv *h, CURL *easy, ly_http_uv_done_cb cb, void *arg, struct ly_error *err)
{
	if (h->closing)
		return ly_error_set(err, LY_E_INTERNAL, "http: closing");
	struct xfer *x = calloc(1, sizeof(*x));
	if (x == NULL)
		return ly_error_set(err, LY_E_NOMEM, "http: out of memory");
	x->easy = easy;
	x->cb = cb;
	x->arg = arg;
	if (curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)x) != CURLE_OK) {
		free(x);
		return ly_error_set(err, LY_E_INTERNAL, "http: CURLOPT_PRIVATE failed");
	}
	/* Only arms the timer: the transfer starts on a later loop iteration. */
	CURLMcode mc = curl_multi_add_handle(h->multi, easy);
	if (mc != CURLM_OK) {
		free(x);
		return ly_error_set(err, LY_E_INTERNAL, "http: curl_multi_add_handle: %s", curl_multi_strerror(mc));
	}
	ly_queue_insert_head(&h->xfers, &x->link);
	return LY_OK;
}

void
ly_http_uv_cancel(struct ly_http_uv *h, CURL *easy)
{
	char *priv = NULL;

	if (h == NULL || easy == NULL || h->closing)
		return;
	(void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
	struct xfer *x = (struct xfer *)(void *)priv;
	(void)curl_multi_remove_handle(h->multi, easy);
	(void)curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
	if (x != NULL) {
		xfer_unlink(h, x);
		free(x);
	}
}

void
ly_http_uv_close(struct ly_http_uv *h)
{
	if (h == NULL || h->closing)
		return;
	struct ly_queue *q;
	while ((q = ly_queue_head(&h->xfers)) != NULL) {
		struct xfer *x = LY_QUEUE_DATA(q, struct xfer, link);
		(void)curl_multi_remove_handle(h->multi, x->easy);
		(void)curl_easy_setopt(x->easy, CURLOPT_PRIVATE, NULL);
		xfer_unlink(h, x);
		free(x);
	}
	h->closing = true;
	/* From here libcurl must not call back: every watched socket is closed by us. */
	(void)curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, NULL);
	(void)curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, NULL);
	while ((q = ly_queue_head(&h->socks)) != NULL)
		sock_close(LY_QUEUE_DATA(q, struct sock, link));
	curl_multi_cleanup(h->multi);
	h->multi = NULL;
	h->pending_closes++;
	uv_close((uv_handle_t *)&h->timer, handle_closed);
}
