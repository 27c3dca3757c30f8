/* creds.c: see internal.h (listener and channel TLS). */
#include "rpc/internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/support/alloc.h>
#include <grpc/support/string_util.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lib/buf.h"
#include "lib/caps.h"

/* ---- PEM checks, so that a bad certificate is refused here, with a reason,
 * and not at each later handshake. ---- */

static ly_status
pem_check_len(const char *pem, const char *what, struct ly_error *err)
{
	if (pem == NULL || pem[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "%s: missing", what);
	if (strlen(pem) > LY_PEM_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s: over %d bytes", what, LY_PEM_FILE_MAX);
	return LY_OK;
}

/* At least one PEM certificate at the start of `pem`; *first gets the first. */
static ly_status
pem_check_certs(const char *pem, const char *what, X509 **first, struct ly_error *err)
{
	BIO *bio = NULL;
	X509 *x = NULL;
	size_t n = 0;
	ly_status rc = LY_OK;

	if (first != NULL)
		*first = NULL;
	LY_TRY(pem_check_len(pem, what, err));
	bio = BIO_new_mem_buf(pem, -1);
	if (bio == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "%s", what);
		goto out;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (++n > LY_BUNDLE_CERTS_MAX) {
			X509_free(x);
			rc = ly_error_set(err, LY_E_LIMIT, "%s: over %d certificates", what,
			    LY_BUNDLE_CERTS_MAX);
			goto out;
		}
		if (n == 1 && first != NULL)
			*first = x;
		else
			X509_free(x);
	}
	if (n == 0) {
		rc = ly_error_openssl(err, LY_E_INVALID, "%s: no PEM certificate", what);
		goto out;
	}
	ERR_clear_error(); /* the end of the input */
out:
	if (rc != LY_OK && first != NULL) {
		X509_free(*first);
		*first = NULL;
	}
	BIO_free(bio);
	return rc;
}

/* `key_pem` parses and is the key of the chain's leaf. */
static ly_status
pem_check_pair(const char *chain_pem, const char *key_pem, const char *what, struct ly_error *err)
{
	X509 *leaf = NULL;
	BIO *bio = NULL;
	EVP_PKEY *key = NULL;
	ly_status rc;

	rc = pem_check_certs(chain_pem, what, &leaf, err);
	if (rc != LY_OK)
		goto out;
	rc = pem_check_len(key_pem, "private key", err);
	if (rc != LY_OK)
		goto out;
	/* A read-only BIO over the caller's bytes: nothing of the key is copied
	 * into a growing buffer. */
	bio = BIO_new_mem_buf(key_pem, -1);
	if (bio == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "private key");
		goto out;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	if (key == NULL) {
		rc = ly_error_openssl(err, LY_E_INVALID, "private key: not a PEM private key");
		goto out;
	}
	if (X509_check_private_key(leaf, key) != 1) {
		rc = ly_error_openssl(err, LY_E_INVALID, "%s: key does not match the leaf", what);
		goto out;
	}
out:
	EVP_PKEY_free(key);
	BIO_free(bio);
	X509_free(leaf);
	return rc;
}

/* ---- listener ---- */

struct ly_rpc_tls_state {
	pthread_mutex_t mu;
	enum ly_rpc_client_auth client_auth;
	char *chain;
	char *key; /* wiped */
	char *roots;
	unsigned long gen;   /* bumped by each set */
	unsigned long given; /* the generation gRPC has */
	struct ly_rpc_tls_state *next; /* on a retired list */
};

static ly_status
tls_server_check(const struct ly_rpc_tls_server *tls, struct ly_error *err)
{
	if (tls->client_auth != LY_RPC_CLIENT_CERT_NONE &&
	    tls->client_auth != LY_RPC_CLIENT_CERT_REQUEST &&
	    tls->client_auth != LY_RPC_CLIENT_CERT_REQUIRE)
		return ly_error_set(err, LY_E_INVALID, "tls: unknown client_auth %d",
		    (int)tls->client_auth);
	LY_TRY(pem_check_pair(tls->cert_chain_pem, tls->key_pem, "tls: certificate chain", err));
	if (tls->client_auth != LY_RPC_CLIENT_CERT_NONE)
		LY_TRY(pem_check_certs(tls->client_roots_pem, "tls: client roots", NULL, err));
	return LY_OK;
}

static void
tls_state_clear(struct ly_rpc_tls_state *st)
{
	free(st->chain);
	ly_free_secret_str(st->key);
	free(st->roots);
	st->chain = st->key = st->roots = NULL;
}

ly_status
ly_rpc_tls_state_set(struct ly_rpc_tls_state *st, const struct ly_rpc_tls_server *tls,
    struct ly_error *err)
{
	char *chain = NULL, *key = NULL, *roots = NULL;
	ly_status rc;

	if (tls->client_auth != st->client_auth)
		return ly_error_set(err, LY_E_INVALID,
		    "tls: client_auth cannot change on a running listener");
	rc = tls_server_check(tls, err);
	if (rc != LY_OK)
		goto out;
	chain = strdup(tls->cert_chain_pem);
	key = strdup(tls->key_pem);
	if (tls->client_auth != LY_RPC_CLIENT_CERT_NONE)
		roots = strdup(tls->client_roots_pem);
	if (chain == NULL || key == NULL ||
	    (tls->client_auth != LY_RPC_CLIENT_CERT_NONE && roots == NULL)) {
		rc = ly_error_set(err, LY_E_NOMEM, "tls: out of memory");
		goto out;
	}
	pthread_mutex_lock(&st->mu);
	tls_state_clear(st);
	st->chain = chain;
	st->key = key;
	st->roots = roots;
	st->gen++;
	pthread_mutex_unlock(&st->mu);
	chain = key = roots = NULL;
out:
	free(chain);
	ly_free_secret_str(key);
	free(roots);
	return rc;
}

ly_status
ly_rpc_tls_state_new(const struct ly_rpc_tls_server *tls, struct ly_rpc_tls_state **out,
    struct ly_error *err)
{
	struct ly_rpc_tls_state *st;
	ly_status rc;

	*out = NULL;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return ly_error_set(err, LY_E_NOMEM, "tls: out of memory");
	if (pthread_mutex_init(&st->mu, NULL) != 0) {
		free(st);
		return ly_error_set(err, LY_E_INTERNAL, "tls: mutex");
	}
	st->client_auth = tls->client_auth;
	rc = ly_rpc_tls_state_set(st, tls, err);
	if (rc != LY_OK) {
		ly_rpc_tls_state_free(st);
		return rc;
	}
	*out = st;
	return LY_OK;
}

void
ly_rpc_tls_state_free(struct ly_rpc_tls_state *st)
{
	if (st == NULL)
		return;
	tls_state_clear(st);
	pthread_mutex_destroy(&st->mu);
	free(st);
}

void
ly_rpc_tls_state_retire(struct ly_rpc_tls_state *st, struct ly_rpc_tls_state **list)
{
	if (st == NULL)
		return;
	st->next = *list;
	*list = st;
}

void
ly_rpc_tls_state_free_list(struct ly_rpc_tls_state *list)
{
	while (list != NULL) {
		struct ly_rpc_tls_state *next = list->next;
		ly_rpc_tls_state_free(list);
		list = next;
	}
}

/* gRPC's certificate-config fetcher: on a gRPC thread, at each handshake. */
static grpc_ssl_certificate_config_reload_status
tls_fetch(void *user_data, grpc_ssl_server_certificate_config **config)
{
	struct ly_rpc_tls_state *st = user_data;
	grpc_ssl_certificate_config_reload_status status = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;

	pthread_mutex_lock(&st->mu);
	if (st->given != st->gen) {
		grpc_ssl_pem_key_cert_pair pair = { st->key, st->chain };
		*config = grpc_ssl_server_certificate_config_create(st->roots, &pair, 1);
		if (*config != NULL) {
			st->given = st->gen;
			status = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
		} else {
			status = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
		}
	}
	pthread_mutex_unlock(&st->mu);
	return status;
}

grpc_server_credentials *
ly_rpc_tls_server_creds(struct ly_rpc_tls_state *st)
{
	grpc_ssl_client_certificate_request_type type;

	/* No mode that takes a client certificate without verifying it: a
	 * SPIFFE ID is only read from a certificate that chained to the roots. */
	switch (st->client_auth) {
	case LY_RPC_CLIENT_CERT_REQUEST:
		type = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
		break;
	case LY_RPC_CLIENT_CERT_REQUIRE:
		type = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
		break;
	case LY_RPC_CLIENT_CERT_NONE:
	default:
		type = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
		break;
	}
	/* gRPC takes the fetch result as the initial config: make the next
	 * fetch hand it over even if it was given to an earlier listener. */
	pthread_mutex_lock(&st->mu);
	st->given = st->gen - 1;
	pthread_mutex_unlock(&st->mu);
	grpc_ssl_server_credentials_options *opts =
	    grpc_ssl_server_credentials_create_options_using_config_fetcher(type, tls_fetch, st);
	if (opts == NULL)
		return NULL;
	return grpc_ssl_server_credentials_create_with_options(opts);
}

/* ---- channel ---- */

struct ly_rpc_verifier {
	grpc_tls_certificate_verifier_external ext; /* user_data points back here */
	pthread_mutex_t mu;
	int refs;   /* gRPC's and the channel's */
	bool armed; /* false once the channel is freed */
	ly_rpc_verify_cb cb;
	void *arg;
};

static void
verifier_unref(struct ly_rpc_verifier *v)
{
	pthread_mutex_lock(&v->mu);
	int refs = --v->refs;
	pthread_mutex_unlock(&v->mu);
	if (refs == 0) {
		pthread_mutex_destroy(&v->mu);
		free(v);
	}
}

/*
 * Called by gRPC after it verified the chain to the roots, on one of its
 * threads. Synchronous: the caller's check is quick (a parse and a compare).
 * The lock makes ly_rpc_verifier_disarm wait for a check in progress.
 */
static int
verifier_verify(void *user_data, grpc_tls_custom_verification_check_request *request,
    grpc_tls_on_custom_verification_check_done_cb callback, void *callback_arg,
    grpc_status_code *sync_status, char **sync_error_details)
{
	struct ly_rpc_verifier *v = user_data;
	struct ly_error e = { LY_OK, "" };
	ly_status rc;

	(void)callback;
	(void)callback_arg;
	pthread_mutex_lock(&v->mu);
	if (!v->armed)
		rc = ly_error_set(&e, LY_E_UNTRUSTED, "channel closed");
	else if (request->peer_info.peer_cert == NULL)
		rc = ly_error_set(&e, LY_E_UNTRUSTED, "server sent no certificate");
	else
		rc = v->cb(v->arg, request->peer_info.peer_cert, request->peer_info.peer_cert_full_chain,
		    &e);
	pthread_mutex_unlock(&v->mu);
	if (rc == LY_OK) {
		*sync_status = GRPC_STATUS_OK;
		*sync_error_details = NULL;
	} else {
		*sync_status = GRPC_STATUS_UNAUTHENTICATED;
		*sync_error_details = gpr_strdup(e.msg[0] != '\0' ? e.msg : "server certificate refused");
	}
	return 1;
}

static void
verifier_cancel(void *user_data, grpc_tls_custom_verification_check_request *request)
{
	(void)user_data;
	(void)request; /* verification is synchronous: nothing to cancel */
}

static void
verifier_destruct(void *user_data)
{
	verifier_unref(user_data);
}

void
ly_rpc_verifier_disarm(struct ly_rpc_verifier *v)
{
	if (v == NULL)
		return;
	pthread_mutex_lock(&v->mu);
	v->armed = false;
	pthread_mutex_unlock(&v->mu);
	verifier_unref(v);
}

ly_status
ly_rpc_tls_client_creds(const struct ly_rpc_tls_client *tls, grpc_channel_credentials **creds,
    struct ly_rpc_verifier **verifier, struct ly_error *err)
{
	struct ly_rpc_verifier *v = NULL;
	grpc_tls_identity_pairs *pairs = NULL;
	grpc_tls_certificate_provider *provider = NULL;
	grpc_tls_certificate_verifier *gv = NULL;
	grpc_tls_credentials_options *opts;
	ly_status rc = LY_OK;

	*creds = NULL;
	*verifier = NULL;
	if (tls->verify == NULL)
		return ly_error_set(err, LY_E_INVALID, "tls: a server certificate check is required");
	LY_TRY(pem_check_certs(tls->root_pem, "tls: roots", NULL, err));
	if ((tls->cert_chain_pem == NULL) != (tls->key_pem == NULL))
		return ly_error_set(err, LY_E_INVALID, "tls: client certificate and key go together");
	if (tls->cert_chain_pem != NULL)
		LY_TRY(pem_check_pair(tls->cert_chain_pem, tls->key_pem, "tls: client certificate",
		    err));

	v = calloc(1, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "tls: out of memory");
	if (pthread_mutex_init(&v->mu, NULL) != 0) {
		free(v);
		return ly_error_set(err, LY_E_INTERNAL, "tls: mutex");
	}
	v->refs = 1; /* the channel's; gRPC's is added once it holds the verifier */
	v->armed = true;
	v->cb = tls->verify;
	v->arg = tls->verify_arg;
	v->ext.user_data = v;
	v->ext.verify = verifier_verify;
	v->ext.cancel = verifier_cancel;
	v->ext.destruct = verifier_destruct;

	if (tls->cert_chain_pem != NULL) {
		pairs = grpc_tls_identity_pairs_create();
		if (pairs == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "tls: out of memory");
			goto out;
		}
		/* gRPC copies both strings. */
		grpc_tls_identity_pairs_add_pair(pairs, tls->key_pem, tls->cert_chain_pem);
	}
	provider = grpc_tls_certificate_provider_static_data_create(tls->root_pem, pairs);
	pairs = NULL; /* owned by the provider now */
	v->refs++;    /* gRPC's, dropped by verifier_destruct */
	gv = grpc_tls_certificate_verifier_external_create(&v->ext);
	if (gv == NULL)
		v->refs--;
	if (provider == NULL || gv == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "tls: out of memory");
		goto out;
	}
	/* 1.51 has no way to free options that were never given to credentials:
	 * nothing may fail between their creation and grpc_tls_credentials_create. */
	opts = grpc_tls_credentials_options_create();
	grpc_tls_credentials_options_set_certificate_provider(opts, provider);
	grpc_tls_credentials_options_watch_root_certs(opts);
	if (tls->cert_chain_pem != NULL)
		grpc_tls_credentials_options_watch_identity_key_cert_pairs(opts);
	/* The chain is verified to the roots by gRPC; the host name is not
	 * checked (an X509-SVID may have only a URI SAN, X509-SVID standard §2):
	 * the caller's check of the SPIFFE ID replaces it. */
	grpc_tls_credentials_options_set_verify_server_cert(opts, 1);
	grpc_tls_credentials_options_set_check_call_host(opts, 0);
	grpc_tls_credentials_options_set_certificate_verifier(opts, gv);
	*creds = grpc_tls_credentials_create(opts);
	if (*creds == NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "tls: gRPC refused the credentials");
		goto out;
	}
	*verifier = v;
	v = NULL;
out:
	if (gv != NULL)
		grpc_tls_certificate_verifier_release(gv); /* may run verifier_destruct */
	if (provider != NULL)
		grpc_tls_certificate_provider_release(provider);
	if (pairs != NULL)
		grpc_tls_identity_pairs_destroy(pairs);
	if (v != NULL)
		ly_rpc_verifier_disarm(v);
	return rc;
}
