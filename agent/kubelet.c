/* kubelet.c: see kubelet.h. */
#include "agent/kubelet.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/curl_dl.h"
#include <openssl/crypto.h>

#include "agent/http_uv.h"
#include "agent/k8s_podlist.h"
#include "lib/buf.h"
#include "lib/caps.h"
#include "lib/log.h"

#define URL_MAX (LY_DNS_NAME_MAX + 32)
#define AUTH_PREFIX "Authorization: Bearer "

enum stage {
	STAGE_TOKEN, /* worker: reading the token file */
	STAGE_HTTP,  /* loop: libcurl multi */
	STAGE_PARSE, /* worker: parsing the answer */
};

/* The one fetch in flight. */
struct fetch {
	struct ly_kubelet *k;
	uint64_t gen;
	enum stage stage;
	bool abandoned; /* the kubelet closed while a worker ran */
	uv_work_t work;
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
	char *auth; /* "Authorization: Bearer <token>", wiped */
	size_t auth_size;
	struct curl_slist hdr_auth, hdr_accept; /* our own nodes: libcurl only reads them */
	struct ly_buf_sink body; /* the answer, capped at LY_K8S_PODLIST_MAX */
	/* results */
	ly_status rc;
	struct ly_error err;
	json_t *pods;
};

struct ly_kubelet {
	uv_loop_t *loop;
	char *url;
	char *token_file;
	char *ca_file;
	bool skip_verify;
	uint64_t timeout_ms;
	uint64_t cache_ms;
	struct ly_http_uv *http;
	uv_timer_t dispatch; /* serves waiters on a later loop turn */
	json_t *cached;
	uint64_t cached_gen;
	uint64_t cached_at; /* uv_now */
	uint64_t last_gen;  /* generation of the latest fetch started */
	struct fetch *inflight;
	struct ly_queue waiters; /* struct ly_kubelet_wait, newest first */
	struct ly_kubelet_stats stats;
	size_t pending; /* uv handles and workers that still point here */
	bool closing;
	bool curl_initialized;
};

static void dispatch_soon(struct ly_kubelet *k);

/* ---- lifetime ---- */

static void
kubelet_free(struct ly_kubelet *k)
{
	json_decref(k->cached);
	free(k->url);
	free(k->token_file);
	free(k->ca_file);
	if (k->curl_initialized)
		curl_global_cleanup();
	free(k);
}

static void
maybe_free(struct ly_kubelet *k)
{
	if (k->closing && k->pending == 0)
		kubelet_free(k);
}

static void
fetch_free(struct fetch *f)
{
	if (f == NULL)
		return;
	if (f->easy != NULL)
		curl_easy_cleanup(f->easy);
	if (f->auth != NULL)
		OPENSSL_clear_free(f->auth, f->auth_size);
	ly_buf_free(&f->body.buf);
	json_decref(f->pods);
	free(f);
}

/* ---- checks ---- */

static bool
host_ok(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > LY_DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		    c == '-' || c == ':'))
			return false;
	}
	return true;
}

ly_status
ly_kubelet_new(uv_loop_t *loop, const struct ly_kubelet_config *cfg, struct ly_kubelet **out,
    struct ly_error *err)
{
	struct ly_kubelet *k = NULL;
	ly_status rc;
	unsigned port = cfg->port != 0 ? cfg->port : LY_KUBELET_PORT_DEFAULT;

	*out = NULL;
	if (cfg->host == NULL || !host_ok(cfg->host))
		return ly_error_set(err, LY_E_INVALID,
		    "kubelet: host must be a node name or IP address ([A-Za-z0-9.:-], 1..%d bytes)", LY_DNS_NAME_MAX);
	if (port > 65535)
		return ly_error_set(err, LY_E_INVALID, "kubelet: port must be 1..65535");
	if (cfg->token_file == NULL || cfg->token_file[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "kubelet: a token file is required");
	if (!cfg->skip_verify && (cfg->ca_file == NULL || cfg->ca_file[0] == '\0'))
		return ly_error_set(err, LY_E_INVALID,
		    "kubelet: a CA file is required to verify the kubelet (or skip verification explicitly)");
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return ly_error_set(err, LY_E_NOMEM, "kubelet: out of memory");
	ly_queue_init(&k->waiters);
	k->loop = loop;
	k->skip_verify = cfg->skip_verify;
	k->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : LY_KUBELET_TIMEOUT_MS_DEFAULT;
	k->cache_ms = cfg->cache_ms != 0 ? cfg->cache_ms : LY_KUBELET_CACHE_MS_DEFAULT;
	k->url = malloc(URL_MAX);
	k->token_file = strdup(cfg->token_file);
	k->ca_file = cfg->ca_file != NULL ? strdup(cfg->ca_file) : NULL;
	if (k->url == NULL || k->token_file == NULL || (cfg->ca_file != NULL && k->ca_file == NULL)) {
		rc = ly_error_set(err, LY_E_NOMEM, "kubelet: out of memory");
		goto fail;
	}
	/* An IPv6 literal goes in brackets (RFC 3986 §3.2.2). */
	bool v6 = strchr(cfg->host, ':') != NULL;
	(void)snprintf(k->url, URL_MAX, "https://%s%s%s:%u/pods", v6 ? "[" : "", cfg->host, v6 ? "]" : "", port);
	/* Loaded now, by the agents that need it (curl_dl.h). */
	if ((rc = ly_curl_load(err)) != LY_OK) {
		rc = ly_error_wrap(err, rc, "kubelet");
		goto fail;
	}
	/* Reference-counted by libcurl: balanced in kubelet_free. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		rc = ly_error_set(err, LY_E_INTERNAL, "kubelet: libcurl initialisation failed");
		goto fail;
	}
	k->curl_initialized = true;
	rc = ly_http_uv_new(loop, &k->http, err);
	if (rc != LY_OK)
		goto fail;
	int e = uv_timer_init(loop, &k->dispatch);
	if (e != 0) {
		ly_http_uv_close(k->http);
		rc = ly_error_set(err, LY_E_INTERNAL, "kubelet: uv_timer_init: %s", uv_strerror(e));
		goto fail;
	}
	k->dispatch.data = k;
	if (k->skip_verify)
		log_warn("kubelet %s: certificate verification is OFF (skip_verify): anyone on the path can serve "
		    "pod lists",
		    k->url);
	*out = k;
	return LY_OK;
fail:
	kubelet_free(k);
	return rc;
}

/* ---- waiters ---- */

static void
wait_unlink(struct ly_kubelet *k, struct ly_kubelet_wait *w)
{
	if (!w->linked)
		return;
	ly_queue_remove(&w->link);
	w->linked = false;
}

ly_status
ly_kubelet_get_pods(struct ly_kubelet *k, uint64_t min_gen, struct ly_kubelet_wait *w, ly_kubelet_pods_cb cb,
    void *arg, struct ly_error *err)
{
	if (k->closing)
		return ly_error_set(err, LY_E_INTERNAL, "kubelet: closing");
	if (w->linked)
		return ly_error_set(err, LY_E_INTERNAL, "kubelet: this lookup is already waiting");
	w->cb = cb;
	w->arg = arg;
	w->min_gen = min_gen;
	ly_queue_insert_head(&k->waiters, &w->link);
	w->linked = true;
	dispatch_soon(k);
	return LY_OK;
}

void
ly_kubelet_wait_cancel(struct ly_kubelet *k, struct ly_kubelet_wait *w)
{
	if (k != NULL && w != NULL)
		wait_unlink(k, w);
}

void
ly_kubelet_stats(const struct ly_kubelet *k, struct ly_kubelet_stats *out)
{
	*out = k->stats;
}

/*
 * Calls, one at a time, every waiter that `pods` (generation `gen`) or the
 * failure `rc` answers. Restarts from the head after each call: a callback
 * may add or cancel waiters, or close the kubelet.
 */
static void
serve(struct ly_kubelet *k, ly_status rc, const struct ly_error *err, const json_t *pods, uint64_t gen,
    bool from_cache)
{
	for (;;) {
		struct ly_kubelet_wait *w = NULL;
		struct ly_queue *q;
		LY_QUEUE_FOREACH(q, &k->waiters) {
			struct ly_kubelet_wait *c = LY_QUEUE_DATA(q, struct ly_kubelet_wait, link);
			if (c->min_gen <= gen) {
				w = c;
				break;
			}
		}
		if (w == NULL || k->closing)
			return;
		wait_unlink(k, w);
		if (from_cache)
			k->stats.cache_hits++;
		w->cb(w->arg, rc, rc == LY_OK ? NULL : err, pods, gen);
	}
}

static bool
cache_fresh(const struct ly_kubelet *k)
{
	return k->cached != NULL && uv_now(k->loop) - k->cached_at < k->cache_ms;
}

/* ---- one fetch ---- */

static void fetch_start(struct ly_kubelet *k);

static void
fetch_complete(struct fetch *f)
{
	struct ly_kubelet *k = f->k;

	k->inflight = NULL;
	if (f->rc == LY_OK) {
		json_decref(k->cached);
		k->cached = f->pods;
		f->pods = NULL;
		k->cached_gen = f->gen;
		k->cached_at = uv_now(k->loop);
	} else {
		k->stats.failures++;
		log_warn("pod list fetch %llu failed: %s", (unsigned long long)f->gen, f->err.msg);
	}
	/* Keep the list alive through the callbacks even if a later fetch replaces the cache. */
	json_t *pods = f->rc == LY_OK ? json_incref(k->cached) : NULL;
	serve(k, f->rc, &f->err, pods, f->gen, false);
	json_decref(pods);
	fetch_free(f);
	if (!k->closing && !ly_queue_empty(&k->waiters))
		dispatch_soon(k);
}

/* Worker: parse the answer. */
static void
parse_work(uv_work_t *w)
{
	struct fetch *f = w->data;
	f->rc = ly_k8s_podlist_parse(f->body.buf.data != NULL ? (const char *)f->body.buf.data : "", f->body.buf.len,
	    &f->pods, &f->err);
}

/*
 * A fetch's thread-pool job is back on the loop. False when the fetch was
 * abandoned meanwhile: it is freed then (and the kubelet client, when it
 * waited only for this). A job the pool cancelled fails the fetch with
 * `cancelled` unless it failed already.
 */
static bool
work_returned(struct fetch *f, int status, const char *cancelled)
{
	struct ly_kubelet *k = f->k;

	k->pending--;
	if (f->abandoned) {
		fetch_free(f);
		maybe_free(k);
		return false;
	}
	if (status == UV_ECANCELED && f->rc == LY_OK)
		f->rc = ly_error_set(&f->err, LY_E_INTERNAL, "%s", cancelled);
	return true;
}

static void
after_parse(uv_work_t *w, int status)
{
	struct fetch *f = w->data;

	if (work_returned(f, status, "pod list: parsing cancelled"))
		fetch_complete(f);
}

static ly_status
curl_failure(const struct fetch *f, CURLcode cc, struct ly_error *err)
{
	const struct ly_kubelet *k = f->k;
	const char *detail = f->errbuf[0] != '\0' ? f->errbuf : curl_easy_strerror(cc);

	if (f->body.over || cc == CURLE_FILESIZE_EXCEEDED)
		return ly_error_set(err, LY_E_LIMIT, "kubelet %s: answer is over %d bytes", k->url, LY_K8S_PODLIST_MAX);
	if (f->body.nomem)
		return ly_error_set(err, LY_E_NOMEM, "kubelet %s: out of memory", k->url);
	switch (cc) {
	case CURLE_PEER_FAILED_VERIFICATION:
		return ly_error_set(err, LY_E_IO, "kubelet %s: TLS certificate not trusted by CA file %s: %s", k->url,
		    k->ca_file != NULL ? k->ca_file : "(none)", detail);
	case CURLE_SSL_CACERT_BADFILE:
		return ly_error_set(err, LY_E_IO, "kubelet %s: CA file %s cannot be used: %s", k->url,
		    k->ca_file != NULL ? k->ca_file : "(none)", detail);
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
		return ly_error_set(err, LY_E_IO, "kubelet %s unreachable: %s", k->url, detail);
	case CURLE_OPERATION_TIMEDOUT:
		return ly_error_set(err, LY_E_IO, "kubelet %s timed out after %llu ms: %s", k->url,
		    (unsigned long long)k->timeout_ms, detail);
	default:
		return ly_error_set(err, LY_E_IO, "kubelet %s: request failed: %s", k->url, detail);
	}
}

static void
http_done(void *arg, CURL *easy, CURLcode cc)
{
	struct fetch *f = arg;
	struct ly_kubelet *k = f->k;
	long status = 0;

	/* The token is no longer needed. */
	OPENSSL_clear_free(f->auth, f->auth_size);
	f->auth = NULL;
	if (cc != CURLE_OK) {
		f->rc = curl_failure(f, cc, &f->err);
		fetch_complete(f);
		return;
	}
	(void)curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	if (status == 401 || status == 403) {
		f->rc = ly_error_set(&f->err, LY_E_IO,
		    "kubelet %s refused the agent's token (HTTP %ld): check the token file and RBAC (get nodes/proxy, "
		    "pods)",
		    k->url, status);
		fetch_complete(f);
		return;
	}
	if (status != 200) {
		f->rc = ly_error_set(&f->err, LY_E_IO, "kubelet %s answered HTTP %ld", k->url, status);
		fetch_complete(f);
		return;
	}
	curl_easy_cleanup(f->easy);
	f->easy = NULL;
	f->stage = STAGE_PARSE;
	f->work.data = f;
	int e = uv_queue_work(k->loop, &f->work, parse_work, after_parse);
	if (e != 0) {
		f->rc = ly_error_set(&f->err, LY_E_INTERNAL, "pod list: uv_queue_work: %s", uv_strerror(e));
		fetch_complete(f);
		return;
	}
	k->pending++;
}

static bool
set_options(struct fetch *f)
{
	struct ly_kubelet *k = f->k;
	CURL *c = f->easy;
	long verify = k->skip_verify ? 0L : 1L;

	f->hdr_auth.data = f->auth;
	f->hdr_auth.next = &f->hdr_accept;
	f->hdr_accept.data = (char *)(uintptr_t)"Accept: application/json";
	f->hdr_accept.next = NULL;
	return curl_easy_setopt(c, CURLOPT_URL, k->url) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, f->errbuf) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
	    /* The kubelet is reached directly: no proxy from the environment. */
	    curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)k->timeout_ms) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)k->timeout_ms) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, verify) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, verify * 2) == CURLE_OK &&
	    (k->ca_file == NULL || curl_easy_setopt(c, CURLOPT_CAINFO, k->ca_file) == CURLE_OK) &&
	    curl_easy_setopt(c, CURLOPT_CAPATH, NULL) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_USERAGENT, "lanyard-agent") == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_HTTPHEADER, &f->hdr_auth) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)LY_K8S_PODLIST_MAX) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ly_buf_sink_write) == CURLE_OK &&
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, &f->body) == CURLE_OK;
}

/* Worker: read the token and make the Authorization header. */
static void
token_work(uv_work_t *w)
{
	struct fetch *f = w->data;
	struct ly_kubelet *k = f->k;
	char *tok = NULL;
	size_t cap = LY_K8S_TOKEN_MAX + 2, len = 0;
	int fd = -1;

	f->rc = LY_OK;
	tok = malloc(cap);
	if (tok == NULL) {
		f->rc = ly_error_set(&f->err, LY_E_NOMEM, "kubelet token: out of memory");
		goto out;
	}
	fd = open(k->token_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		f->rc = ly_error_set(&f->err, LY_E_IO, "kubelet token file %s: %s", k->token_file, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, tok + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			f->rc = ly_error_set(&f->err, LY_E_IO, "kubelet token file %s: %s", k->token_file,
			    strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > LY_K8S_TOKEN_MAX) {
			f->rc = ly_error_set(&f->err, LY_E_LIMIT, "kubelet token file %s is longer than %d bytes",
			    k->token_file, LY_K8S_TOKEN_MAX);
			goto out;
		}
	}
	/* As written by the kubelet or by hand: trailing white space is not part of the token. */
	while (len > 0 && (tok[len - 1] == '\n' || tok[len - 1] == '\r' || tok[len - 1] == ' ' ||
	    tok[len - 1] == '\t'))
		len--;
	if (len == 0) {
		f->rc = ly_error_set(&f->err, LY_E_INVALID, "kubelet token file %s is empty", k->token_file);
		goto out;
	}
	/* Printable ASCII without space: nothing can end the header early or add another. */
	for (size_t i = 0; i < len; i++) {
		if (tok[i] <= 0x20 || tok[i] >= 0x7f) {
			f->rc = ly_error_set(&f->err, LY_E_INVALID,
			    "kubelet token file %s holds a character a bearer token may not hold", k->token_file);
			goto out;
		}
	}
	f->auth_size = sizeof(AUTH_PREFIX) + len;
	f->auth = malloc(f->auth_size);
	if (f->auth == NULL) {
		f->rc = ly_error_set(&f->err, LY_E_NOMEM, "kubelet token: out of memory");
		goto out;
	}
	memcpy(f->auth, AUTH_PREFIX, sizeof(AUTH_PREFIX) - 1);
	memcpy(f->auth + sizeof(AUTH_PREFIX) - 1, tok, len);
	f->auth[sizeof(AUTH_PREFIX) - 1 + len] = '\0';
out:
	if (fd >= 0)
		close(fd);
	if (tok != NULL)
		OPENSSL_clear_free(tok, cap);
}

static void
after_token(uv_work_t *w, int status)
{
	struct fetch *f = w->data;
	struct ly_kubelet *k = f->k;
	struct ly_error e;

	if (!work_returned(f, status, "kubelet token: reading cancelled"))
		return;
	if (f->rc != LY_OK) {
		fetch_complete(f);
		return;
	}
	f->stage = STAGE_HTTP;
	f->easy = curl_easy_init();
	if (f->easy == NULL || !set_options(f)) {
		f->rc = ly_error_set(&f->err, LY_E_INTERNAL, "kubelet: setting up libcurl failed");
		fetch_complete(f);
		return;
	}
	if (ly_http_uv_add(k->http, f->easy, http_done, f, &e) != LY_OK) {
		f->rc = e.code;
		f->err = e;
		fetch_complete(f);
	}
}

static void
fetch_start(struct ly_kubelet *k)
{
	struct fetch *f = calloc(1, sizeof(*f));
	struct ly_error e;

	k->last_gen++;
	k->stats.fetches++;
	if (f == NULL) {
		ly_error_set(&e, LY_E_NOMEM, "kubelet: out of memory");
		k->stats.failures++;
		serve(k, LY_E_NOMEM, &e, NULL, k->last_gen, false);
		return;
	}
	f->k = k;
	f->gen = k->last_gen;
	ly_buf_init(&f->body.buf, LY_K8S_PODLIST_MAX, false);
	f->stage = STAGE_TOKEN;
	f->work.data = f;
	int rc = uv_queue_work(k->loop, &f->work, token_work, after_token);
	if (rc != 0) {
		ly_error_set(&e, LY_E_INTERNAL, "kubelet: uv_queue_work: %s", uv_strerror(rc));
		free(f);
		k->stats.failures++;
		serve(k, LY_E_INTERNAL, &e, NULL, k->last_gen, false);
		return;
	}
	k->pending++;
	k->inflight = f;
}

/* ---- dispatch ---- */

static void
on_dispatch(uv_timer_t *t)
{
	struct ly_kubelet *k = t->data;

	if (k->closing)
		return;
	if (cache_fresh(k)) {
		json_t *pods = json_incref(k->cached);
		serve(k, LY_OK, NULL, pods, k->cached_gen, true);
		json_decref(pods);
	}
	if (k->closing || ly_queue_empty(&k->waiters))
		return;
	/* Waiters left want a newer list than the cache. The fetch in flight serves those it is recent enough for. */
	if (k->inflight == NULL)
		fetch_start(k);
}

static void
dispatch_soon(struct ly_kubelet *k)
{
	(void)uv_timer_start(&k->dispatch, on_dispatch, 0, 0);
}

static void
dispatch_closed(uv_handle_t *h)
{
	struct ly_kubelet *k = h->data;
	k->pending--;
	maybe_free(k);
}

void
ly_kubelet_close(struct ly_kubelet *k)
{
	if (k == NULL || k->closing)
		return;
	k->closing = true;
	struct ly_queue *q;
	while ((q = ly_queue_head(&k->waiters)) != NULL)
		wait_unlink(k, LY_QUEUE_DATA(q, struct ly_kubelet_wait, link));
	struct fetch *f = k->inflight;
	k->inflight = NULL;
	if (f != NULL) {
		if (f->stage == STAGE_HTTP) {
			ly_http_uv_cancel(k->http, f->easy);
			fetch_free(f);
		} else {
			/* A worker holds it: after_token / after_parse free it. */
			f->abandoned = true;
			(void)uv_cancel((uv_req_t *)&f->work);
		}
	}
	ly_http_uv_close(k->http);
	k->http = NULL;
	k->pending++;
	uv_close((uv_handle_t *)&k->dispatch, dispatch_closed);
}
