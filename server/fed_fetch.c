/* fed_fetch.c: the bundle endpoint client (see fed_fetch.h). */
#include "server/fed_fetch.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "lib/x509svid.h"

/* ---- the blocking fetch (thread pool) ------------------------------------------------- */

static uint64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int
left_ms(uint64_t deadline)
{
	uint64_t now = mono_ms();
	return now >= deadline ? 0 : (int)(deadline - now);
}

/* Connects to one of host:port's addresses before `deadline`; -1 with *why on failure. */
static int
connect_to(const struct ly_fed_url *u, uint64_t deadline, enum ly_fed_refusal *why, struct ly_error *err)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG }, *res = NULL;
	char port[8];
	int fd = -1;

	snprintf(port, sizeof(port), "%u", (unsigned)u->port);
	if (u->host_is_ip)
		hints.ai_flags |= AI_NUMERICHOST;
	int g = getaddrinfo(u->host, port, &hints, &res);
	if (g != 0) {
		*why = LY_FED_R_CONNECT;
		ly_error_set(err, LY_E_IO, "%s: %s", u->host, gai_strerror(g));
		return -1;
	}
	*why = LY_FED_R_CONNECT;
	ly_error_set(err, LY_E_IO, "%s:%u: no address", u->host, (unsigned)u->port);
	for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
		if (fd < 0)
			continue;
		int r = connect(fd, a->ai_addr, a->ai_addrlen);
		if (r != 0 && errno == EINPROGRESS) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			int pr = poll(&p, 1, left_ms(deadline));
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			if (pr == 0) {
				*why = LY_FED_R_TIMEOUT;
				ly_error_set(err, LY_E_IO, "%s:%u: connect timed out", u->host, (unsigned)u->port);
			} else if (pr > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
				r = 0;
			} else {
				ly_error_set(err, LY_E_IO, "%s:%u: %s", u->host, (unsigned)u->port,
				    strerror(soerr != 0 ? soerr : errno));
			}
		} else if (r != 0) {
			ly_error_set(err, LY_E_IO, "%s:%u: %s", u->host, (unsigned)u->port, strerror(errno));
		}
		if (r == 0)
			break;
		close(fd);
		fd = -1;
		if (left_ms(deadline) == 0)
			break;
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		/* Blocking from here, each call bounded by the time left (set before each). */
		int fl = fcntl(fd, F_GETFL);
		(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	}
	return fd;
}

static void
set_io_timeout(int fd, uint64_t deadline)
{
	int ms = left_ms(deadline);
	if (ms < 1)
		ms = 1;
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* https_spiffe: the peer's chain verifies against `anchors` and its leaf is exactly `want`. */
static ly_status
check_spiffe_peer(SSL *ssl, const struct ly_spiffe_id *want, const uint8_t *anchors, size_t alen, struct ly_error *err)
{
	X509_STORE *store = NULL;
	STACK_OF(X509) *inter = NULL;
	struct ly_x509svid_info info;
	ly_status rc;

	X509 *leaf = SSL_get0_peer_certificate(ssl);
	STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl); /* client side: leaf included */
	if (leaf == NULL)
		return ly_error_set(err, LY_E_UNTRUSTED, "the endpoint presented no certificate");
	if ((rc = ly_x509_store_new(anchors, alen, &store, err)) != LY_OK)
		return ly_error_wrap(err, rc, "trust bundle of %s", want->trust_domain);
	inter = sk_X509_new_null();
	if (inter == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
		goto out;
	}
	for (int i = 1; chain != NULL && i < sk_X509_num(chain); i++)
		if (!sk_X509_push(inter, sk_X509_value(chain, i))) {
			rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto out;
		}
	if ((rc = ly_x509svid_verify_x509(leaf, inter, store, want->trust_domain, time(NULL), NULL, &info, err)) !=
	    LY_OK) {
		ly_error_wrap(err, rc, "endpoint certificate");
		goto out;
	}
	if (!ly_spiffe_id_equal(&info.id, want))
		rc = ly_error_set(err, LY_E_UNTRUSTED, "the endpoint is %s, not %s", info.id.id, want->id);
out:
	sk_X509_free(inter);
	X509_STORE_free(store);
	return rc;
}

static SSL_CTX *
client_ctx(enum ly_fed_profile profile, const char *ca_file, struct ly_error *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		ly_error_set(err, LY_E_NOMEM, "SSL_CTX_new failed");
		return NULL;
	}
	(void)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* A missing close_notify reads as the end; Content-Length guards truncation (fed_check.c). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
	if (profile == LY_FED_PROFILE_HTTPS_WEB) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			ly_error_set(err, LY_E_IO, "cannot load the https_web trust anchors from %s", ca_file);
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		/* Checked after the handshake, before a byte is sent (check_spiffe_peer). */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
}

ly_status
ly_fed_fetch_blocking(const char *url, enum ly_fed_profile profile, const struct ly_spiffe_id *endpoint_id,
    const uint8_t *anchors_der, size_t anchors_len, const char *ca_file, uint64_t timeout_ms, struct ly_buf *resp,
    enum ly_fed_refusal *why, struct ly_error *err)
{
	uint64_t deadline = mono_ms() + timeout_ms;
	struct ly_fed_url u;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	int fd = -1;
	ly_status rc = LY_OK;
	char req[LY_HTTP_PATH_MAX + 512], chunk[16384];

	ly_buf_init(resp, LY_FED_RESPONSE_MAX + 1, false);
	*why = LY_FED_R_HTTP;
	if ((rc = ly_fed_url_parse(url, &u, err)) != LY_OK)
		return rc;
	*why = LY_FED_R_TLS;
	if ((ctx = client_ctx(profile, ca_file, err)) == NULL)
		return LY_E_IO;
	if ((fd = connect_to(&u, deadline, why, err)) < 0) {
		rc = LY_E_IO;
		goto out;
	}
	*why = LY_FED_R_TLS;
	ssl = SSL_new(ctx);
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
		rc = ly_error_set(err, LY_E_NOMEM, "SSL_new failed");
		goto out;
	}
	if (!u.host_is_ip)
		(void)SSL_set_tlsext_host_name(ssl, u.host);
	if (profile == LY_FED_PROFILE_HTTPS_WEB) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
		int ok = u.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, u.host) : X509_VERIFY_PARAM_set1_host(vp, u.host, 0);
		if (ok != 1) {
			rc = ly_error_set(err, LY_E_INTERNAL, "cannot set the expected host");
			goto out;
		}
	}
	set_io_timeout(fd, deadline);
	if (SSL_connect(ssl) != 1) {
		unsigned long e = ERR_peek_last_error();
		long vr = SSL_get_verify_result(ssl);
		if (left_ms(deadline) == 0)
			*why = LY_FED_R_TIMEOUT;
		if (vr != X509_V_OK)
			rc = ly_error_set(err, LY_E_UNTRUSTED, "TLS: %s", X509_verify_cert_error_string(vr));
		else
			rc = ly_error_set(err, LY_E_IO, "TLS handshake: %s",
			    e != 0 ? ERR_reason_error_string(e) : "connection closed");
		goto out;
	}
	if (profile == LY_FED_PROFILE_HTTPS_SPIFFE &&
	    (rc = check_spiffe_peer(ssl, endpoint_id, anchors_der, anchors_len, err)) != LY_OK)
		goto out;
	int n = snprintf(req, sizeof(req),
	    "GET %s HTTP/1.1\r\nHost: %s%s%s\r\nAccept: application/json\r\nUser-Agent: lanyard-server\r\n"
	    "Connection: close\r\n\r\n", u.path, strchr(u.host, ':') != NULL ? "[" : "", u.host,
	    strchr(u.host, ':') != NULL ? "]" : "");
	set_io_timeout(fd, deadline);
	*why = LY_FED_R_CONNECT;
	if (n < 0 || (size_t)n >= sizeof(req) || SSL_write(ssl, req, n) != n) {
		rc = ly_error_set(err, LY_E_IO, "cannot send the request");
		goto out;
	}
	for (;;) {
		if (left_ms(deadline) == 0) {
			*why = LY_FED_R_TIMEOUT;
			rc = ly_error_set(err, LY_E_IO, "no whole answer within %llu ms", (unsigned long long)timeout_ms);
			goto out;
		}
		set_io_timeout(fd, deadline);
		int r = SSL_read(ssl, chunk, sizeof(chunk));
		if (r > 0) {
			if (ly_buf_add(resp, chunk, (size_t)r, NULL) != LY_OK) {
				*why = LY_FED_R_OVERSIZED;
				rc = ly_error_set(err, LY_E_LIMIT, "answer over %d bytes", LY_FED_RESPONSE_MAX);
				goto out;
			}
			continue;
		}
		int e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_ZERO_RETURN)
			break;
		/* SO_RCVTIMEO ends a blocked read with EAGAIN, which OpenSSL reports as WANT_READ. */
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE || left_ms(deadline) == 0 ||
		    (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))) {
			*why = LY_FED_R_TIMEOUT;
			rc = ly_error_set(err, LY_E_IO, "no whole answer within %llu ms", (unsigned long long)timeout_ms);
		} else {
			*why = LY_FED_R_HTTP;
			rc = ly_error_set(err, LY_E_IO, "reading the answer failed");
		}
		goto out;
	}
	if (resp->len == 0) {
		*why = LY_FED_R_HTTP;
		rc = ly_error_set(err, LY_E_INVALID, "empty answer");
	}
out:
	ERR_clear_error();
	if (ssl != NULL)
		SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	SSL_CTX_free(ctx);
	if (rc != LY_OK)
		ly_buf_free(resp);
	return rc;
}

/* ---- the schedule (loop thread) --------------------------------------------------------- */

/* `federation refresh` callers waiting for a fetch (fed_fetch.h). */
struct waiter {
	ly_fed_refresh_done_cb fn;
	void *arg;
};
struct waiters {
	struct waiter *v;
	size_t n;
};

/* Calls and forgets every waiter (the list is emptied first: a callback may add to another). */
static void
waiters_fire(struct waiters *w, ly_status rc, const char *msg)
{
	struct waiters now = *w;
	w->v = NULL;
	w->n = 0;
	for (size_t i = 0; i < now.n; i++)
		now.v[i].fn(now.v[i].arg, rc, msg);
	free(now.v);
}

struct rel {
	struct ly_fed_fetcher *f;
	struct waiters pending; /* for the next fetch to start */
	ly_status last_rc;      /* the last fetch's outcome, and why when not LY_OK */
	char last_msg[LY_ERROR_MSG_MAX + LY_TRUST_DOMAIN_MAX + 64];
	struct ly_queue link;
	struct ly_fed_relationship r;
	bool is_static, seen, in_flight, removed, refresh_again;
	bool has_refusal;
	enum ly_fed_refusal last_refusal;
	uv_timer_t timer;
	bool timer_closed;
};

struct job {
	uv_work_t work;
	struct rel *rel;
	struct waiters w; /* refresh callers of this fetch */
	struct ly_fed_relationship r;
	uint8_t *anchors;
	size_t anchors_len;
	struct ly_buf resp;
	enum ly_fed_refusal why;
	ly_status rc;
	struct ly_error err;
};

struct ly_fed_fetcher {
	uv_loop_t *loop;
	const struct ly_fed_ops *ops;
	void *arg;
	struct ly_fed_relationship *statics;
	size_t n_statics;
	char *ca_file;
	struct ly_queue rels;
	uv_timer_t sync_timer;
	bool stopping, sync_closed;
	bool list_failing; /* the last ops->list failed (logged once) */
	size_t jobs;
};

static void rel_arm(struct rel *r, uint64_t ms);

static void
maybe_free(struct ly_fed_fetcher *f)
{
	if (!f->stopping || !f->sync_closed || f->jobs > 0 || !ly_queue_empty(&f->rels))
		return;
	free(f->statics);
	free(f->ca_file);
	free(f);
}

static void
rel_timer_closed(uv_handle_t *h)
{
	struct rel *r = h->data;
	r->timer_closed = true;
	if (!r->in_flight) {
		struct ly_fed_fetcher *f = r->f;
		ly_queue_remove(&r->link);
		free(r);
		maybe_free(f);
	}
}

/* Drops a relationship: its timer closes, and it is freed when no fetch of it runs. */
static void
rel_drop(struct rel *r)
{
	if (r->removed)
		return;
	r->removed = true;
	waiters_fire(&r->pending, LY_E_NOT_FOUND,
	    r->f->stopping ? "the server is stopping" : "the relationship was deleted");
	uv_close((uv_handle_t *)&r->timer, rel_timer_closed);
}

static void
refused(struct rel *r, enum ly_fed_refusal why, const struct ly_error *e)
{
	struct ly_fed_fetcher *f = r->f;
	if (!r->has_refusal || r->last_refusal != why)
		log_warn("federation: bundle of %s from %s not taken (%s): %s; the bundle held stays", r->r.trust_domain,
		    r->r.url, ly_fed_refusal_name(why), e->msg);
	else
		log_debug("federation: bundle of %s not taken again (%s): %s", r->r.trust_domain,
		    ly_fed_refusal_name(why), e->msg);
	r->has_refusal = true;
	r->last_refusal = why;
	r->last_rc = why == LY_FED_R_TLS || why == LY_FED_R_DOMAIN || why == LY_FED_R_NO_TRUST ? LY_E_UNTRUSTED
	    : why == LY_FED_R_CONNECT || why == LY_FED_R_TIMEOUT || why == LY_FED_R_STORE   ? LY_E_IO
											       : LY_E_INVALID;
	(void)snprintf(r->last_msg, sizeof(r->last_msg), "bundle of %s not taken (%s): %s", r->r.trust_domain,
	    ly_fed_refusal_name(why), e->msg);
	if (f->ops->refused != NULL)
		f->ops->refused(f->arg, r->r.trust_domain, why, e->msg);
}

static void
work_cb(uv_work_t *w)
{
	struct job *j = (struct job *)w;
	j->rc = ly_fed_fetch_blocking(j->r.url, j->r.profile, &j->r.endpoint_id, j->anchors, j->anchors_len,
	    j->rel->f->ca_file, LY_FED_FETCH_TIMEOUT_MS, &j->resp, &j->why, &j->err);
}

static unsigned
jitter(void)
{
	uint16_t v = 0;
	if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
		return 500;
	return v % 1001u;
}

/* What to do with a fetched answer: check, compare, store. Returns the hint to schedule by. */
static uint64_t
take(struct rel *r, struct job *j)
{
	struct ly_fed_fetcher *f = r->f;
	struct ly_bundle *prev = NULL, *b = NULL;
	struct ly_error e;
	enum ly_fed_refusal why;
	uint64_t hint = 0;

	if (f->ops->load(f->arg, r->r.trust_domain, &prev, &e) != LY_OK)
		prev = NULL;
	if (prev != NULL)
		hint = ly_bundle_refresh_hint(prev);
	if (ly_fed_check_response(r->r.trust_domain, j->resp.data, j->resp.len, prev, &b, &why, &e) != LY_OK) {
		refused(r, why, &e);
		goto out;
	}
	hint = ly_bundle_refresh_hint(b);
	r->last_rc = LY_OK;
	r->last_msg[0] = '\0';
	if (r->has_refusal)
		log_info("federation: bundle endpoint of %s answers again", r->r.trust_domain);
	r->has_refusal = false;
	if (prev != NULL && ly_bundle_equal(prev, b))
		goto out;
	if (f->ops->store(f->arg, b, prev, &e) != LY_OK) {
		refused(r, LY_FED_R_STORE, &e);
		goto out;
	}
out:
	ly_bundle_free(prev);
	ly_bundle_free(b);
	return hint;
}

static void
after_work_cb(uv_work_t *w, int status)
{
	struct job *j = (struct job *)w;
	struct rel *r = j->rel;
	struct ly_fed_fetcher *f = r->f;
	uint64_t hint = 0;

	f->jobs--;
	r->in_flight = false;
	if (!f->stopping && !r->removed) {
		if (status != 0) {
			struct ly_error e;
			ly_error_set(&e, LY_E_INTERNAL, "fetch cancelled");
			refused(r, LY_FED_R_CONNECT, &e);
		} else if (j->rc != LY_OK) {
			refused(r, j->why, &j->err);
		} else {
			hint = take(r, j);
		}
		if (hint == 0) {
			struct ly_bundle *held = NULL;
			struct ly_error e;
			if (f->ops->load(f->arg, r->r.trust_domain, &held, &e) == LY_OK)
				hint = ly_bundle_refresh_hint(held);
			ly_bundle_free(held);
		}
		if (r->refresh_again) {
			r->refresh_again = false;
			rel_arm(r, 0);
		} else {
			rel_arm(r, ly_fed_next_fetch_ms(hint, jitter()));
		}
	}
	if (f->stopping || r->removed)
		waiters_fire(&j->w, LY_E_NOT_FOUND, f->stopping ? "the server is stopping" : "the relationship was deleted");
	else
		waiters_fire(&j->w, r->last_rc, r->last_msg);
	ly_buf_free(&j->resp);
	free(j->anchors);
	free(j);
	if (r->removed && r->timer_closed) {
		ly_queue_remove(&r->link);
		free(r);
	}
	maybe_free(f);
}

static void
rel_fetch(struct rel *r)
{
	struct ly_fed_fetcher *f = r->f;
	struct ly_error e;

	if (r->in_flight || r->removed || f->stopping)
		return;
	if (f->jobs >= LY_FED_FETCH_CONCURRENT_MAX) {
		/* Slow endpoints must not take every pool thread (k8s_psat attestation needs one): wait a turn. */
		rel_arm(r, 200 + jitter() / 2);
		return;
	}
	struct job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		waiters_fire(&r->pending, LY_E_NOMEM, "out of memory");
		rel_arm(r, ly_fed_next_fetch_ms(0, jitter()));
		return;
	}
	j->rel = r;
	j->r = r->r;
	j->w = r->pending;
	r->pending.v = NULL;
	r->pending.n = 0;
	if (r->r.profile == LY_FED_PROFILE_HTTPS_SPIFFE) {
		struct ly_bundle *trust = NULL;
		struct ly_buf der = LY_BUF_INIT;
		if (f->ops->load(f->arg, r->r.endpoint_id.trust_domain, &trust, &e) != LY_OK ||
		    ly_bundle_x509_authority_count(trust) == 0 || ly_bundle_x509_authorities_der(trust, &der, &e) != LY_OK) {
			ly_error_set(&e, LY_E_NOT_FOUND,
			    "no X.509 authorities of %s to authenticate %s: set them with `bundle set` or "
			    "`federation create -trustDomainBundlePath`", r->r.endpoint_id.trust_domain, r->r.endpoint_id.id);
			ly_bundle_free(trust);
			ly_buf_free(&der);
			refused(r, LY_FED_R_NO_TRUST, &e);
			waiters_fire(&j->w, r->last_rc, r->last_msg);
			free(j);
			rel_arm(r, ly_fed_next_fetch_ms(0, jitter()));
			return;
		}
		ly_bundle_free(trust);
		j->anchors = malloc(der.len);
		if (j->anchors != NULL)
			memcpy(j->anchors, der.data, der.len);
		j->anchors_len = der.len;
		ly_buf_free(&der);
		if (j->anchors == NULL) {
			waiters_fire(&j->w, LY_E_NOMEM, "out of memory");
			free(j);
			rel_arm(r, ly_fed_next_fetch_ms(0, jitter()));
			return;
		}
	}
	if (uv_queue_work(f->loop, &j->work, work_cb, after_work_cb) != 0) {
		waiters_fire(&j->w, LY_E_INTERNAL, "cannot queue the fetch");
		free(j->anchors);
		free(j);
		rel_arm(r, ly_fed_next_fetch_ms(0, jitter()));
		return;
	}
	r->in_flight = true;
	f->jobs++;
}

static void
rel_timer_cb(uv_timer_t *t)
{
	rel_fetch(t->data);
}

static void
rel_arm(struct rel *r, uint64_t ms)
{
	if (r->removed || r->f->stopping)
		return;
	uv_timer_start(&r->timer, rel_timer_cb, ms, 0);
}

static struct rel *
rel_find(struct ly_fed_fetcher *f, const char *td)
{
	struct ly_queue *q;
	LY_QUEUE_FOREACH(q, &f->rels) {
		struct rel *r = LY_QUEUE_DATA(q, struct rel, link);
		if (!r->removed && strcmp(r->r.trust_domain, td) == 0)
			return r;
	}
	return NULL;
}

static bool
rel_same(const struct ly_fed_relationship *a, const struct ly_fed_relationship *b)
{
	return strcmp(a->url, b->url) == 0 && a->profile == b->profile &&
	    (a->profile != LY_FED_PROFILE_HTTPS_SPIFFE || strcmp(a->endpoint_id.id, b->endpoint_id.id) == 0);
}

/* Adds or updates one relationship during a sync. */
static void
rel_upsert(struct ly_fed_fetcher *f, const struct ly_fed_relationship *src, bool is_static)
{
	struct rel *r = rel_find(f, src->trust_domain);
	if (r != NULL) {
		if (r->seen)
			return; /* static first: a dynamic one of the same domain loses */
		r->seen = true;
		if (!rel_same(&r->r, src)) {
			log_info("federation: relationship with %s changed: %s", src->trust_domain, src->url);
			r->r = *src;
			r->is_static = is_static;
			r->has_refusal = false;
			rel_arm(r, 0);
		}
		return;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return;
	r->f = f;
	r->r = *src;
	r->is_static = is_static;
	r->seen = true;
	r->timer.data = r;
	(void)uv_timer_init(f->loop, &r->timer);
	ly_queue_insert_tail(&f->rels, &r->link);
	log_info("federation: relationship with %s (%s, %s)%s", src->trust_domain, src->url,
	    src->profile == LY_FED_PROFILE_HTTPS_WEB ? "https_web" : "https_spiffe", is_static ? " from the config" : "");
	rel_arm(r, 0);
}

void
ly_fed_fetcher_sync(struct ly_fed_fetcher *f)
{
	struct ly_fed_relationship *dyn = NULL;
	size_t ndyn = 0;
	struct ly_error e;
	struct ly_queue *q, *tmp;
	bool listed = true;

	if (f->stopping)
		return;
	if (f->ops->list != NULL && f->ops->list(f->arg, &dyn, &ndyn, &e) != LY_OK) {
		if (!f->list_failing)
			log_warn("federation: cannot read the relationships (keeping those known): %s", e.msg);
		f->list_failing = true;
		listed = false; /* keep the dynamic ones we have */
	} else if (f->list_failing) {
		log_info("federation: the relationships are readable again");
		f->list_failing = false;
	}
	LY_QUEUE_FOREACH(q, &f->rels)
		LY_QUEUE_DATA(q, struct rel, link)->seen = false;
	for (size_t i = 0; i < f->n_statics; i++)
		rel_upsert(f, &f->statics[i], true);
	for (size_t i = 0; i < ndyn; i++)
		rel_upsert(f, &dyn[i], false);
	LY_QUEUE_FOREACH_SAFE(q, tmp, &f->rels) {
		struct rel *r = LY_QUEUE_DATA(q, struct rel, link);
		if (!r->seen && !r->removed && (listed || r->is_static)) {
			log_info("federation: relationship with %s deleted", r->r.trust_domain);
			rel_drop(r);
		}
	}
	free(dyn);
}

static void
sync_timer_cb(uv_timer_t *t)
{
	ly_fed_fetcher_sync(t->data);
}

ly_status
ly_fed_fetcher_refresh(struct ly_fed_fetcher *f, const char *td, ly_fed_refresh_done_cb done, void *done_arg,
    struct ly_error *err)
{
	if (f->stopping)
		return ly_error_set(err, LY_E_NOT_FOUND, "the server is stopping");
	ly_fed_fetcher_sync(f);
	struct rel *r = rel_find(f, td);
	if (r == NULL)
		return ly_error_set(err, LY_E_NOT_FOUND, "no federation relationship with %s", td);
	if (done != NULL) {
		struct waiter *v = realloc(r->pending.v, (r->pending.n + 1) * sizeof(*v));
		if (v == NULL)
			return ly_error_set(err, LY_E_NOMEM, "out of memory");
		v[r->pending.n].fn = done;
		v[r->pending.n].arg = done_arg;
		r->pending.v = v;
		r->pending.n++;
	}
	if (r->in_flight)
		r->refresh_again = true; /* the fetch running began before the request */
	else
		rel_arm(r, 0);
	return LY_OK;
}

void
ly_fed_fetcher_trust_changed(struct ly_fed_fetcher *f, const char *td)
{
	struct ly_queue *q;
	if (f->stopping)
		return;
	LY_QUEUE_FOREACH(q, &f->rels) {
		struct rel *r = LY_QUEUE_DATA(q, struct rel, link);
		if (!r->removed && !r->in_flight && r->has_refusal && r->last_refusal == LY_FED_R_NO_TRUST &&
		    strcmp(r->r.endpoint_id.trust_domain, td) == 0)
			rel_arm(r, 0);
	}
}

size_t
ly_fed_fetcher_count(const struct ly_fed_fetcher *f)
{
	size_t n = 0;
	for (const struct ly_queue *q = f->rels.next; q != &f->rels; q = q->next) {
		const struct rel *r = (const struct rel *)((const char *)q - offsetof(struct rel, link));
		n += !r->removed;
	}
	return n;
}

ly_status
ly_fed_fetcher_new(uv_loop_t *loop, const struct ly_fed_config *cfg, const struct ly_fed_ops *ops, void *arg,
    struct ly_fed_fetcher **out, struct ly_error *err)
{
	*out = NULL;
	struct ly_fed_fetcher *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return ly_error_set(err, LY_E_NOMEM, "federation: out of memory");
	f->loop = loop;
	f->ops = ops;
	f->arg = arg;
	ly_queue_init(&f->rels);
	f->ca_file = strdup(cfg->web_ca_file != NULL ? cfg->web_ca_file : LY_FED_SYSTEM_CA_FILE);
	if (cfg->n_rels > 0) {
		f->statics = malloc(cfg->n_rels * sizeof(*f->statics));
		if (f->statics != NULL)
			memcpy(f->statics, cfg->rels, cfg->n_rels * sizeof(*f->statics));
	}
	if (f->ca_file == NULL || (cfg->n_rels > 0 && f->statics == NULL)) {
		free(f->ca_file);
		free(f->statics);
		free(f);
		return ly_error_set(err, LY_E_NOMEM, "federation: out of memory");
	}
	f->n_statics = cfg->n_rels;
	f->sync_timer.data = f;
	(void)uv_timer_init(loop, &f->sync_timer);
	uv_timer_start(&f->sync_timer, sync_timer_cb, LY_FED_SYNC_MS, LY_FED_SYNC_MS);
	ly_fed_fetcher_sync(f);
	*out = f;
	return LY_OK;
}

static void
sync_closed_cb(uv_handle_t *h)
{
	struct ly_fed_fetcher *f = h->data;
	f->sync_closed = true;
	maybe_free(f);
}

void
ly_fed_fetcher_free(struct ly_fed_fetcher *f)
{
	if (f == NULL || f->stopping)
		return;
	f->stopping = true;
	struct ly_queue *q, *tmp;
	LY_QUEUE_FOREACH_SAFE(q, tmp, &f->rels)
		rel_drop(LY_QUEUE_DATA(q, struct rel, link));
	uv_close((uv_handle_t *)&f->sync_timer, sync_closed_cb);
}
