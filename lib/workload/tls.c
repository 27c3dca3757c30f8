/*
 * tls.c: SSL_CTXs for mutual TLS by X.509-SVID (X509-SVID standard §5:
 * validation; the go-spiffe tlsconfig shape).
 *
 *  - cert callback (SSL_CTX_set_cert_cb): per handshake, the source's
 *    current context (a reference taken under the source's mutex), its
 *    default SVID's leaf, intermediates and key set on the SSL
 *    (SSL_use_cert_and_key copies references), the context released;
 *  - verify callback (SSL_CTX_set_cert_verify_callback): replaces
 *    OpenSSL's chain building: the peer's leaf must be an X509-SVID, its
 *    chain must verify to the store of its trust domain in the current
 *    context (built once per response, x509ctx.c), then the authorizer
 *    decides on its SPIFFE ID. Why a peer was refused is kept on the SSL
 *    (lanyard_tls_verify_error);
 *  - TLS 1.2 minimum; no session resumption, so every handshake is
 *    verified against the bundle of its time.
 * The SSL_CTX holds a `struct wl_tls` in its ex_data, freed with it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lib/x509svid.h"
#include "wl_internal.h"

struct wl_tls {
	lanyard_x509_source *src;
	lanyard_authorizer *authz;
};

static int ctx_idx = -1, ssl_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static void
free_tls(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct wl_tls *t = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (t == NULL)
		return;
	lanyard_x509_source_free(t->src);
	lanyard_authorizer_free(t->authz);
	free(t);
}

static void
free_msg(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

static void
init_idx(void)
{
	ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_tls);
	ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_msg);
}

/* Keeps why the peer was refused on the SSL (replacing an earlier message). */
static void
set_verify_error(SSL *ssl, const char *msg)
{
	if (ssl == NULL || ssl_idx < 0)
		return;
	free(SSL_get_ex_data(ssl, ssl_idx));
	char *copy = strdup(msg);
	if (SSL_set_ex_data(ssl, ssl_idx, copy) != 1)
		free(copy);
}

const char *
lanyard_tls_verify_error(const SSL *ssl)
{
	if (ssl == NULL || ssl_idx < 0)
		return NULL;
	return SSL_get_ex_data(ssl, ssl_idx);
}

static int
cert_cb(SSL *ssl, void *arg)
{
	struct wl_tls *t = arg;
	lanyard_x509_context *ctx = lanyard_x509_source_get(t->src);
	int ok = 0;

	if (ctx == NULL) {
		set_verify_error(ssl, "no X.509-SVID to present yet");
		return 0;
	}
	const struct lanyard_x509_svid *s = &ctx->svids[0];
	if (SSL_use_cert_and_key(ssl, s->leaf, s->key, s->intermediates, 1) == 1)
		ok = 1;
	else
		set_verify_error(ssl, "cannot present the X.509-SVID");
	ERR_clear_error();
	lanyard_x509_context_free(ctx);
	return ok;
}

static int
verify_cb(X509_STORE_CTX *xs, void *arg)
{
	struct wl_tls *t = arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	STACK_OF(X509) *untrusted = X509_STORE_CTX_get0_untrusted(xs);
	STACK_OF(X509) *inter = sk_X509_new_null();
	lanyard_x509_context *ctx = lanyard_x509_source_get(t->src);
	struct ly_spiffe_id id;
	struct ly_error e;
	ly_status rc;

	ly_error_clear(&e);
	if (leaf == NULL) {
		rc = ly_error_set(&e, LY_E_INVALID, "peer sent no certificate");
		goto out;
	}
	if (inter == NULL) {
		rc = ly_error_set(&e, LY_E_NOMEM, "out of memory");
		goto out;
	}
	if (ctx == NULL) {
		rc = ly_error_set(&e, LY_E_NOT_FOUND, "no trust bundle yet");
		goto out;
	}
	/* The presented chain after the leaf (OpenSSL passes the leaf too). */
	for (int i = 0; untrusted != NULL && i < sk_X509_num(untrusted); i++) {
		X509 *c = sk_X509_value(untrusted, i);
		if (X509_cmp(c, leaf) == 0)
			continue;
		if (!sk_X509_push(inter, c)) {
			rc = ly_error_set(&e, LY_E_NOMEM, "out of memory");
			goto out;
		}
	}
	if ((rc = wl_x509_context_verify(ctx, leaf, inter, time(NULL), &id, &e)) != LY_OK)
		goto out;
	rc = wl_authorizer_check(t->authz, &id, &e);
out:
	sk_X509_free(inter); /* borrowed certificates */
	lanyard_x509_context_free(ctx);
	ERR_clear_error();
	if (rc != LY_OK) {
		set_verify_error(ssl, e.msg);
		X509_STORE_CTX_set_error(xs, rc == LY_E_EXPIRED ? X509_V_ERR_CERT_HAS_EXPIRED : X509_V_ERR_CERT_REJECTED);
		return 0;
	}
	X509_STORE_CTX_set_error(xs, X509_V_OK);
	return 1;
}

static ly_status
make_ctx(bool server, lanyard_x509_source *src, const lanyard_authorizer *authz, SSL_CTX **out, struct ly_error *err)
{
	struct wl_tls *t = NULL;
	SSL_CTX *c = NULL;
	ly_status rc;

	*out = NULL;
	if (src == NULL || authz == NULL)
		return ly_error_set(err, LY_E_INVALID, "tls: a source and an authorizer are needed");
	if (pthread_once(&idx_once, init_idx) != 0 || ctx_idx < 0 || ssl_idx < 0)
		return ly_error_set(err, LY_E_CRYPTO, "tls: cannot register OpenSSL ex_data");
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "tls: out of memory");
	if ((rc = wl_authorizer_clone(authz, &t->authz, err)) != LY_OK)
		goto out;
	t->src = lanyard_x509_source_ref(src);
	if ((c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method())) == NULL) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "tls: SSL_CTX_new");
		goto out;
	}
	if (SSL_CTX_set_ex_data(c, ctx_idx, t) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "tls: SSL_CTX_set_ex_data");
		goto out;
	}
	/* From here the SSL_CTX owns t (freed by free_tls). */
	t = NULL;
	struct wl_tls *tt = SSL_CTX_get_ex_data(c, ctx_idx);
	if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "tls: TLS 1.2 minimum");
		goto out;
	}
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
	SSL_CTX_set_cert_verify_callback(c, verify_cb, tt);
	SSL_CTX_set_cert_cb(c, cert_cb, tt);
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
	(void)SSL_CTX_set_num_tickets(c, 0);
	*out = c;
	c = NULL;
	rc = LY_OK;
out:
	SSL_CTX_free(c);
	if (t != NULL)
		free_tls(NULL, t, NULL, 0, 0, NULL);
	return rc;
}

lanyard_status
lanyard_tls_server_ctx(lanyard_x509_source *src, const lanyard_authorizer *authz, SSL_CTX **out,
    struct lanyard_error *err)
{
	struct ly_error e;
	ly_status rc = make_ctx(true, src, authz, out, &e);
	return wl_export(err, rc, &e, 0);
}

lanyard_status
lanyard_tls_client_ctx(lanyard_x509_source *src, const lanyard_authorizer *authz, SSL_CTX **out,
    struct lanyard_error *err)
{
	struct ly_error e;
	ly_status rc = make_ctx(false, src, authz, out, &e);
	return wl_export(err, rc, &e, 0);
}

lanyard_status
lanyard_tls_peer_id(const SSL *ssl, char *out, struct lanyard_error *err)
{
	struct ly_spiffe_id id;
	struct ly_error e;
	ly_status rc;

	X509 *peer = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
	if (peer == NULL) {
		rc = ly_error_set(&e, LY_E_NOT_FOUND, "the peer sent no certificate");
	} else if ((rc = ly_x509svid_check_leaf(peer, &id, &e)) == LY_OK) {
		memcpy(out, id.id, strlen(id.id) + 1);
	}
	return wl_export(err, rc, &e, 0);
}
