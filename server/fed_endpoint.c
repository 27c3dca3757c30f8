/* fed_endpoint.c: the SPIFFE bundle endpoint over HTTPS on libuv (see fed_endpoint.h). */
#include "server/fed_endpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "lib/buf.h"
#include "lib/caps.h"
#include "lib/fileread.h"
#include "lib/log.h"
#include "lib/queue.h"

/* Linger after close_notify: discard what the client still sends, up to this long. */
#define LINGER_MS 1000
/* One libuv read at most this many bytes; TLS records are at most 16 KiB + overhead. */
#define READ_CHUNK (17 * 1024)

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t sreq;
	struct ly_fed_endpoint *ep;
	struct ly_queue link;
	struct sockaddr_storage peer;
	SSL *ssl;
	BIO *rbio; /* network -> SSL */
	BIO *wbio; /* SSL -> network */
	int closing;
	size_t writes; /* uv_writes in flight */
	bool answered, finished;
	size_t len;
	char in[LY_HTTP_REQUEST_MAX];
	char rd[READ_CHUNK];
};

struct wreq {
	uv_write_t req;
	struct conn *c;
	size_t len;
	char data[];
};

struct web_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct ly_fed_endpoint {
	uv_tcp_t listener;
	uv_timer_t web_timer;
	uv_loop_t *loop;
	SSL_CTX *ctx; /* NULL until an identity is set */
	enum ly_fed_profile profile;
	char *cert_path, *key_path;
	struct web_stamp cert_stamp, key_stamp;
	char *body; /* the published bundle */
	size_t body_len;
	ly_fed_endpoint_answer_fn on_answer;
	void *arg;
	uint16_t port;
	size_t nconns;
	struct ly_queue conns;
	int handles_open; /* listener, web_timer */
	bool stopping;
};

static void
maybe_free(struct ly_fed_endpoint *ep)
{
	if (!ep->stopping || ep->handles_open > 0 || !ly_queue_empty(&ep->conns))
		return;
	SSL_CTX_free(ep->ctx);
	free(ep->cert_path);
	free(ep->key_path);
	free(ep->body);
	free(ep);
}

static void
conn_closed_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	if (--c->closing > 0)
		return;
	struct ly_fed_endpoint *ep = c->ep;
	ly_queue_remove(&c->link);
	ep->nconns--;
	SSL_free(c->ssl); /* frees both BIOs */
	free(c);
	maybe_free(ep);
}

static void
conn_close(struct conn *c)
{
	if (c->closing > 0)
		return;
	c->closing = 2;
	uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
	uv_close((uv_handle_t *)&c->timer, conn_closed_cb);
}

static void
timeout_cb(uv_timer_t *t)
{
	conn_close(t->data);
}

static void
shutdown_cb(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status; /* EOF or the linger timer closes */
}

/* After the answer and close_notify left: half-close and linger (health_http.c does the same). */
static void
finish(struct conn *c)
{
	if (c->closing > 0 || c->finished)
		return;
	c->finished = true;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, shutdown_cb) != 0 ||
	    uv_timer_start(&c->timer, timeout_cb, LINGER_MS, 0) != 0)
		conn_close(c);
}

static void
write_cb(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct conn *c = w->c;
	free(w);
	c->writes--;
	if (status != 0) {
		conn_close(c);
		return;
	}
	if (c->answered && c->writes == 0)
		finish(c);
}

/* Sends whatever TLS wrote into wbio. */
static void
flush(struct conn *c)
{
	size_t pending;
	while (c->closing == 0 && (pending = BIO_ctrl_pending(c->wbio)) > 0) {
		struct wreq *w = malloc(sizeof(*w) + pending);
		if (w == NULL) {
			conn_close(c);
			return;
		}
		int n = BIO_read(c->wbio, w->data, (int)pending);
		if (n <= 0) {
			free(w);
			conn_close(c);
			return;
		}
		w->c = c;
		w->len = (size_t)n;
		uv_buf_t b = uv_buf_init(w->data, (unsigned int)n);
		if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
			free(w);
			conn_close(c);
			return;
		}
		c->writes++;
	}
}

static void
answer(struct conn *c, enum ly_fed_route route)
{
	struct ly_fed_endpoint *ep = c->ep;
	int code;
	const char *reason, *ctype = "text/plain; charset=utf-8", *body;
	size_t blen;
	char head[256], small[64];

	c->answered = true;
	uv_timer_stop(&c->timer);
	ly_fed_route_status(route, &code, &reason);
	bool bundle = route == LY_FED_ROUTE_BUNDLE && ep->body != NULL;
	if (route == LY_FED_ROUTE_BUNDLE && !bundle)
		code = 503, reason = "Service Unavailable"; /* nothing published yet */
	if (bundle) {
		ctype = "application/json";
		body = ep->body;
		blen = ep->body_len;
	} else {
		snprintf(small, sizeof(small), "%s\n", reason);
		body = small;
		blen = strlen(small);
	}
	int n = snprintf(head, sizeof(head),
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
	    "Connection: close\r\n\r\n", code, reason, ctype, blen);
	if (n < 0 || (size_t)n >= sizeof(head) || SSL_write(c->ssl, head, n) != n ||
	    (blen > 0 && SSL_write(c->ssl, body, (int)blen) != (int)blen)) {
		conn_close(c);
		return;
	}
	(void)SSL_shutdown(c->ssl); /* close_notify: the body's end is authenticated */
	if (ep->on_answer != NULL)
		ep->on_answer(ep->arg, code);
	flush(c);
	if (c->closing == 0 && c->writes == 0)
		finish(c);
}

/* Drives the handshake and reads the request, after ciphertext arrived. */
static void
pump(struct conn *c)
{
	if (!SSL_is_init_finished(c->ssl)) {
		int r = SSL_do_handshake(c->ssl);
		if (r != 1) {
			int e = SSL_get_error(c->ssl, r);
			flush(c); /* a handshake flight, or an alert */
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				ERR_clear_error();
				if (c->closing == 0 && c->writes == 0)
					conn_close(c);
				else
					c->answered = true; /* close once the alert is out */
			}
			return;
		}
	}
	while (!c->answered && c->closing == 0) {
		if (c->len == sizeof(c->in)) {
			answer(c, LY_FED_ROUTE_TOO_LARGE);
			break;
		}
		int n = SSL_read(c->ssl, c->in + c->len, (int)(sizeof(c->in) - c->len));
		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);
			if (e != SSL_ERROR_WANT_READ) {
				ERR_clear_error();
				conn_close(c);
			}
			break;
		}
		c->len += (size_t)n;
		enum ly_fed_route r = ly_fed_route_request(c->in, c->len);
		if (r != LY_FED_ROUTE_NEED_MORE)
			answer(c, r);
	}
	flush(c);
}

static void
alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct conn *c = h->data;
	*buf = uv_buf_init(c->rd, sizeof(c->rd));
}

static void
read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (nread < 0) {
		conn_close(c);
		return;
	}
	if (nread == 0 || c->answered)
		return; /* after the answer: discard until EOF (linger) */
	if (BIO_ctrl_pending(c->rbio) + (size_t)nread > LY_FED_ENDPOINT_RBIO_MAX ||
	    BIO_write(c->rbio, buf->base, (int)nread) != (int)nread) {
		conn_close(c);
		return;
	}
	pump(c);
}

static bool
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr, &((const struct sockaddr_in *)b)->sin_addr,
			   sizeof(struct in_addr)) == 0;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
		   sizeof(struct in6_addr)) == 0;
}

static size_t
conns_from(struct ly_fed_endpoint *ep, const struct conn *fresh)
{
	size_t n = 0;
	struct ly_queue *q;
	LY_QUEUE_FOREACH(q, &ep->conns) {
		struct conn *c = LY_QUEUE_DATA(q, struct conn, link);
		if (c != fresh && c->closing == 0 && same_addr(&c->peer, &fresh->peer))
			n++;
	}
	return n;
}

static void
connection_cb(uv_stream_t *server, int status)
{
	struct ly_fed_endpoint *ep = server->data;
	if (status < 0 || ep->stopping)
		return;
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return;
	c->ep = ep;
	c->tcp.data = c;
	c->timer.data = c;
	if (uv_tcp_init(ep->loop, &c->tcp) != 0) {
		free(c);
		return;
	}
	(void)uv_timer_init(ep->loop, &c->timer);
	ly_queue_insert_head(&ep->conns, &c->link);
	ep->nconns++;
	int plen = sizeof(c->peer);
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
	    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &plen) != 0 || ep->ctx == NULL ||
	    ep->nconns > LY_FED_ENDPOINT_CONNS_MAX || conns_from(ep, c) >= LY_FED_ENDPOINT_CONNS_PER_ADDR_MAX) {
		conn_close(c);
		return;
	}
	c->ssl = SSL_new(ep->ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		conn_close(c);
		return;
	}
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_accept_state(c->ssl);
	/* Small flights (handshake, answer): Nagle against the peer's delayed ACK costs 40 ms each. */
	(void)uv_tcp_nodelay(&c->tcp, 1);
	if (uv_timer_start(&c->timer, timeout_cb, LY_FED_ENDPOINT_TIMEOUT_MS, 0) != 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
		conn_close(c);
}

/* ---- certificates ------------------------------------------------------------------- */

ly_status
ly_fed_read_pem_file(const char *path, bool secret, struct ly_buf *out, struct ly_error *err)
{
	struct stat st;
	ly_status rc = LY_OK;
	/* Links are followed (certbot's live/ names are links); the file they reach is what is checked. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	*out = (struct ly_buf)LY_BUF_INIT;
	if (fd < 0)
		return ly_error_set(err, LY_E_IO, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: not a regular file", path);
		goto out;
	}
	if (secret && (st.st_mode & 077) != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: mode %03o gives access to others: make it 0600", path,
		    (unsigned)(st.st_mode & 0777));
		goto out;
	}
	if (secret && st.st_uid != geteuid() && st.st_uid != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: owned by uid %u, neither ours nor root's", path,
		    (unsigned)st.st_uid);
		goto out;
	}
	rc = ly_fileread_fd(fd, path, LY_PEM_FILE_MAX, out, err);
out:
	close(fd);
	return rc;
}

/* A server SSL_CTX serving `chain_pem` (leaf first) with `key_pem`. */
static ly_status
ctx_new(const char *chain_pem, size_t chain_len, const char *key_pem, size_t key_len, SSL_CTX **out,
    struct ly_error *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	BIO *cb = NULL, *kb = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	ly_status rc = LY_OK;

	*out = NULL;
	if (ctx == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle endpoint: SSL_CTX_new failed");
	(void)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	(void)SSL_CTX_set_num_tickets(ctx, 0); /* one request per connection: no resumption */
	cb = BIO_new_mem_buf(chain_pem, (int)chain_len);
	kb = BIO_new_mem_buf(key_pem, (int)key_len); /* read-only: nothing of the key copied around */
	if (cb == NULL || kb == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "bundle endpoint: out of memory");
		goto out;
	}
	x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
	if (x == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
		rc = ly_error_set(err, LY_E_INVALID, "bundle endpoint: no usable certificate in the chain");
		goto out;
	}
	X509_free(x);
	x = NULL;
	for (int i = 0; i < LY_CHAIN_CERTS_MAX; i++) {
		X509 *extra = PEM_read_bio_X509(cb, NULL, NULL, NULL);
		if (extra == NULL)
			break;
		if (SSL_CTX_add_extra_chain_cert(ctx, extra) != 1) {
			X509_free(extra);
			rc = ly_error_set(err, LY_E_CRYPTO, "bundle endpoint: cannot add a chain certificate");
			goto out;
		}
	}
	key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
	if (key == NULL || SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		rc = ly_error_set(err, LY_E_INVALID, "bundle endpoint: the key does not parse or does not match the certificate");
		goto out;
	}
	*out = ctx;
	ctx = NULL;
out:
	ERR_clear_error();
	EVP_PKEY_free(key);
	X509_free(x);
	BIO_free(cb);
	BIO_free(kb);
	SSL_CTX_free(ctx);
	return rc;
}

static void
ctx_swap(struct ly_fed_endpoint *ep, SSL_CTX *ctx)
{
	/* Open connections hold their own reference (SSL_new). */
	SSL_CTX_free(ep->ctx);
	ep->ctx = ctx;
}

ly_status
ly_fed_endpoint_set_identity(struct ly_fed_endpoint *ep, const char *chain_pem, size_t chain_len, const char *key_pem,
    size_t key_len, struct ly_error *err)
{
	SSL_CTX *ctx;
	LY_TRY(ctx_new(chain_pem, chain_len, key_pem, key_len, &ctx, err));
	ctx_swap(ep, ctx);
	return LY_OK;
}

static void
stamp_of(const char *path, struct web_stamp *s)
{
	struct stat st;
	memset(s, 0, sizeof(*s));
	if (stat(path, &st) == 0) {
		s->dev = st.st_dev;
		s->ino = st.st_ino;
		s->size = st.st_size;
		s->mtime = st.st_mtim;
	}
}

ly_status
ly_fed_endpoint_reload(struct ly_fed_endpoint *ep, struct ly_error *err)
{
	struct ly_buf cert = LY_BUF_INIT, key = LY_BUF_INIT;
	SSL_CTX *ctx = NULL;
	ly_status rc;

	if (ep->profile != LY_FED_PROFILE_HTTPS_WEB)
		return LY_OK;
	stamp_of(ep->cert_path, &ep->cert_stamp);
	stamp_of(ep->key_path, &ep->key_stamp);
	if ((rc = ly_fed_read_pem_file(ep->cert_path, false, &cert, err)) == LY_OK &&
	    (rc = ly_fed_read_pem_file(ep->key_path, true, &key, err)) == LY_OK &&
	    (rc = ctx_new((const char *)cert.data, cert.len, (const char *)key.data, key.len, &ctx, err)) ==
		LY_OK)
		ctx_swap(ep, ctx);
	ly_buf_free(&cert);
	ly_buf_free_secret(&key);
	return rc;
}

static bool
stamp_eq(const struct web_stamp *a, const struct web_stamp *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	    a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static void
web_timer_cb(uv_timer_t *t)
{
	struct ly_fed_endpoint *ep = t->data;
	struct web_stamp c, k;
	struct ly_error e;

	stamp_of(ep->cert_path, &c);
	stamp_of(ep->key_path, &k);
	if (stamp_eq(&c, &ep->cert_stamp) && stamp_eq(&k, &ep->key_stamp))
		return;
	if (ly_fed_endpoint_reload(ep, &e) != LY_OK)
		log_warn("bundle endpoint: certificate files changed but not reloaded (the previous stay in use): %s",
		    e.msg);
	else
		log_info("bundle endpoint: certificate reloaded from %s", ep->cert_path);
}

ly_status
ly_fed_endpoint_set_bundle(struct ly_fed_endpoint *ep, const char *json, size_t len, struct ly_error *err)
{
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle endpoint: out of memory");
	memcpy(copy, json, len);
	copy[len] = '\0';
	free(ep->body);
	ep->body = copy;
	ep->body_len = len;
	return LY_OK;
}

/* ---- life ---------------------------------------------------------------------------- */

static void
handle_closed_cb(uv_handle_t *h)
{
	struct ly_fed_endpoint *ep = h->data;
	ep->handles_open--;
	maybe_free(ep);
}

ly_status
ly_fed_endpoint_start(uv_loop_t *loop, const struct ly_fed_endpoint_config *cfg, ly_fed_endpoint_answer_fn on_answer,
    void *arg, struct ly_fed_endpoint **out, struct ly_error *err)
{
	struct sockaddr_storage ss;
	ly_status rc = LY_OK;
	int r;

	*out = NULL;
	if (uv_ip4_addr(cfg->address, cfg->port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(cfg->address, cfg->port, (struct sockaddr_in6 *)&ss) != 0)
		return ly_error_set(err, LY_E_INVALID, "bundle endpoint: address %s is not an IP literal", cfg->address);
	struct ly_fed_endpoint *ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundle endpoint: out of memory");
	ly_queue_init(&ep->conns);
	ep->loop = loop;
	ep->profile = cfg->profile;
	ep->on_answer = on_answer;
	ep->arg = arg;
	ep->listener.data = ep;
	ep->web_timer.data = ep;
	if (cfg->profile == LY_FED_PROFILE_HTTPS_WEB) {
		ep->cert_path = strdup(cfg->cert_file_path);
		ep->key_path = strdup(cfg->key_file_path);
		if (ep->cert_path == NULL || ep->key_path == NULL) {
			free(ep->cert_path);
			free(ep->key_path);
			free(ep);
			return ly_error_set(err, LY_E_NOMEM, "bundle endpoint: out of memory");
		}
	}
	(void)uv_timer_init(loop, &ep->web_timer);
	ep->handles_open++;
	r = uv_tcp_init(loop, &ep->listener);
	if (r != 0) {
		rc = ly_error_set(err, LY_E_IO, "bundle endpoint: tcp init: %s", uv_strerror(r));
		goto out;
	}
	ep->handles_open++;
	if (cfg->profile == LY_FED_PROFILE_HTTPS_WEB) {
		if ((rc = ly_fed_endpoint_reload(ep, err)) != LY_OK) {
			ly_error_wrap(err, rc, "bundle endpoint https_web");
			goto out;
		}
		uv_timer_start(&ep->web_timer, web_timer_cb, LY_FED_WEB_CHECK_MS, LY_FED_WEB_CHECK_MS);
		uv_unref((uv_handle_t *)&ep->web_timer);
	}
	r = uv_tcp_bind(&ep->listener, (const struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&ep->listener, 256, connection_cb);
	if (r != 0) {
		rc = ly_error_set(err, LY_E_IO, "bundle endpoint: listen on %s:%u: %s", cfg->address,
		    (unsigned)cfg->port, uv_strerror(r));
		goto out;
	}
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	if (uv_tcp_getsockname(&ep->listener, (struct sockaddr *)&bound, &blen) == 0)
		ep->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
							     : ((struct sockaddr_in *)&bound)->sin_port);
	*out = ep;
	ep = NULL;
out:
	if (ep != NULL) {
		ep->stopping = true;
		uv_close((uv_handle_t *)&ep->web_timer, handle_closed_cb);
		if (ep->handles_open == 2)
			uv_close((uv_handle_t *)&ep->listener, handle_closed_cb);
	}
	return rc;
}

uint16_t
ly_fed_endpoint_port(const struct ly_fed_endpoint *ep)
{
	return ep->port;
}

void
ly_fed_endpoint_stop(struct ly_fed_endpoint *ep)
{
	if (ep == NULL || ep->stopping)
		return;
	ep->stopping = true;
	struct ly_queue *q, *tmp;
	LY_QUEUE_FOREACH_SAFE(q, tmp, &ep->conns)
		conn_close(LY_QUEUE_DATA(q, struct conn, link));
	uv_close((uv_handle_t *)&ep->web_timer, handle_closed_cb);
	uv_close((uv_handle_t *)&ep->listener, handle_closed_cb);
}
