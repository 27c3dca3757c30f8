/*
 * test_workload_tls.c: the SSL_CTXs of lib/workload/tls.c in memory (a
 * BIO pair, no sockets, no agent): sources fixed to contexts parsed from
 * responses made at test time, valid now. Mutual authentication, refusal
 * by the authorizer on either side, a peer from another CA, an SVID
 * rotated without a new SSL_CTX, a bundle rotated away, the peer-ID
 * helper, and TLS 1.2 still accepted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lib/workload/wl_internal.h"
#include "tests/unit/test_workload_util.h"

#define ID_SRV "spiffe://example.org/server"
#define ID_CLI "spiffe://example.org/client"

struct fx {
	struct twl_pki pki, rogue;
	EVP_PKEY *key;
	time_t now;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->now = time(NULL);
	twl_pki_init(&f->pki, "example.org", f->now);
	twl_pki_init(&f->rogue, "example.org", f->now);
	f->key = tu_key(LY_KEY_EC_P256);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	twl_pki_free(&f->pki);
	twl_pki_free(&f->rogue);
	EVP_PKEY_free(f->key);
	free(f);
	return 0;
}

/* A context holding one SVID for `id` issued by `issuer`, with `bundle_of`'s root as bundle. */
static lanyard_x509_context *
make_ctx(struct fx *f, struct twl_pki *issuer, struct twl_pki *bundle_of, const char *id)
{
	struct twl_item it;
	struct ly_buf msg = LY_BUF_INIT;
	lanyard_x509_context *ctx = NULL;
	struct ly_error e;
	struct tu_spec s = twl_leaf_spec(issuer, id);

	twl_item_make(&it, issuer, id, &s, f->key);
	ly_buf_free(&it.bundle);
	assert_true(ly_buf_set(&it.bundle, bundle_of->root_der.data, bundle_of->root_der.len, NULL) == LY_OK);
	twl_pack(&it, 1, NULL, NULL, 0, &msg);
	/* A rogue-issued SVID does not verify to the real bundle: parse it against its own issuer. */
	if (wl_x509_context_parse(msg.data, msg.len, f->now, &ctx, &e) != LY_OK) {
		ly_buf_free(&msg);
		ly_buf_free(&it.bundle);
		assert_true(ly_buf_set(&it.bundle, issuer->root_der.data, issuer->root_der.len, NULL) == LY_OK);
		twl_pack(&it, 1, NULL, NULL, 0, &msg);
		assert_int_equal(wl_x509_context_parse(msg.data, msg.len, f->now, &ctx, &e), LY_OK);
	}
	ly_buf_free(&msg);
	twl_item_free(&it);
	return ctx;
}

static lanyard_x509_source *
fixed_source(lanyard_x509_context *ctx)
{
	lanyard_x509_source *s = NULL;
	struct ly_error e;
	assert_int_equal(wl_x509_source_new_fixed(ctx, &s, &e), LY_OK);
	lanyard_x509_context_free(ctx); /* the source holds its own reference */
	return s;
}

static SSL_CTX *
tls_ctx(bool server, lanyard_x509_source *src, const char *peer)
{
	lanyard_authorizer *a = NULL;
	SSL_CTX *c = NULL;
	struct lanyard_error err;
	assert_int_equal(lanyard_authorize_id(peer, &a, &err), LANYARD_OK);
	if (server)
		assert_int_equal(lanyard_tls_server_ctx(src, a, &c, &err), LANYARD_OK);
	else
		assert_int_equal(lanyard_tls_client_ctx(src, a, &c, &err), LANYARD_OK);
	lanyard_authorizer_free(a); /* the SSL_CTX keeps a copy */
	return c;
}

struct conn {
	SSL *s, *c;
	bool ok;
};

/* Runs both sides of a handshake over a BIO pair, then one byte each way (TLS 1.3 client auth ends there). */
static struct conn
handshake(SSL_CTX *sc, SSL_CTX *cc, int max_version)
{
	struct conn k = { SSL_new(sc), SSL_new(cc), false };
	BIO *b1 = NULL, *b2 = NULL;
	assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
	SSL_set_bio(k.s, b1, b1);
	SSL_set_bio(k.c, b2, b2);
	if (max_version != 0)
		assert_int_equal(SSL_set_max_proto_version(k.c, max_version), 1);
	SSL_set_accept_state(k.s);
	SSL_set_connect_state(k.c);
	int rs = 0, rcl = 0;
	for (int i = 0; i < 50 && (rs != 1 || rcl != 1); i++) {
		if (rs != 1) {
			rs = SSL_do_handshake(k.s);
			if (rs <= 0 && SSL_get_error(k.s, rs) != SSL_ERROR_WANT_READ)
				goto out;
		}
		if (rcl != 1) {
			rcl = SSL_do_handshake(k.c);
			if (rcl <= 0 && SSL_get_error(k.c, rcl) != SSL_ERROR_WANT_READ)
				goto out;
		}
	}
	char b = 'x';
	if (rs != 1 || rcl != 1 || SSL_write(k.c, &b, 1) != 1 || SSL_read(k.s, &b, 1) != 1 || SSL_write(k.s, &b, 1) != 1 ||
	    SSL_read(k.c, &b, 1) != 1)
		goto out;
	k.ok = true;
out:
	ERR_clear_error();
	return k;
}

static void
conn_free(struct conn *k)
{
	SSL_free(k->s);
	SSL_free(k->c);
}

static void
test_mutual_auth(void **state)
{
	struct fx *f = *state;
	lanyard_x509_source *ss = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_SRV));
	lanyard_x509_source *cs = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_CLI));
	SSL_CTX *sc = tls_ctx(true, ss, ID_CLI), *cc = tls_ctx(false, cs, ID_SRV);
	struct lanyard_error err;
	char id[LANYARD_SPIFFE_ID_MAX + 1];

	/* The SSL_CTXs hold the sources: dropping ours is fine. */
	lanyard_x509_source_free(ss);
	lanyard_x509_source_free(cs);
	struct conn k = handshake(sc, cc, 0);
	assert_true(k.ok);
	assert_string_equal(SSL_get_version(k.c), "TLSv1.3");
	assert_int_equal(lanyard_tls_peer_id(k.s, id, &err), LANYARD_OK);
	assert_string_equal(id, ID_CLI);
	assert_int_equal(lanyard_tls_peer_id(k.c, id, &err), LANYARD_OK);
	assert_string_equal(id, ID_SRV);
	assert_null(lanyard_tls_verify_error(k.s));
	assert_null(lanyard_tls_verify_error(k.c));
	conn_free(&k);

	/* TLS 1.2 works too. */
	k = handshake(sc, cc, TLS1_2_VERSION);
	assert_true(k.ok);
	assert_string_equal(SSL_get_version(k.c), "TLSv1.2");
	conn_free(&k);
	/* TLS 1.1 does not. */
	k = handshake(sc, cc, TLS1_1_VERSION);
	assert_false(k.ok);
	conn_free(&k);
	SSL_CTX_free(sc);
	SSL_CTX_free(cc);
}

static void
test_authorizer_refuses(void **state)
{
	struct fx *f = *state;
	lanyard_x509_source *ss = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_SRV));
	lanyard_x509_source *cs = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_CLI));

	/* The client expects another server. */
	SSL_CTX *sc = tls_ctx(true, ss, ID_CLI), *cc = tls_ctx(false, cs, "spiffe://example.org/other");
	struct conn k = handshake(sc, cc, 0);
	assert_false(k.ok);
	assert_non_null(lanyard_tls_verify_error(k.c));
	assert_non_null(strstr(lanyard_tls_verify_error(k.c), "not authorized"));
	conn_free(&k);
	SSL_CTX_free(cc);
	SSL_CTX_free(sc);

	/* The server expects another client. */
	sc = tls_ctx(true, ss, "spiffe://example.org/other");
	cc = tls_ctx(false, cs, ID_SRV);
	k = handshake(sc, cc, 0);
	assert_false(k.ok);
	assert_non_null(strstr(lanyard_tls_verify_error(k.s), "not authorized"));
	conn_free(&k);
	SSL_CTX_free(cc);
	SSL_CTX_free(sc);
	lanyard_x509_source_free(ss);
	lanyard_x509_source_free(cs);
}

static void
test_rogue_ca_refused(void **state)
{
	struct fx *f = *state;
	/* Same trust domain and ID, another CA the client's bundle does not hold. */
	lanyard_x509_source *ss = fixed_source(make_ctx(f, &f->rogue, &f->rogue, ID_SRV));
	lanyard_x509_source *cs = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_CLI));
	SSL_CTX *sc = tls_ctx(true, ss, ID_CLI), *cc = tls_ctx(false, cs, ID_SRV);
	struct conn k = handshake(sc, cc, 0);
	assert_false(k.ok);
	assert_non_null(lanyard_tls_verify_error(k.c));
	conn_free(&k);
	SSL_CTX_free(cc);
	SSL_CTX_free(sc);
	lanyard_x509_source_free(ss);
	lanyard_x509_source_free(cs);
}

static void
test_rotation_without_new_ctx(void **state)
{
	struct fx *f = *state;
	lanyard_x509_source *ss = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_SRV));
	lanyard_x509_source *cs = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_CLI));
	SSL_CTX *sc = tls_ctx(true, ss, ID_CLI), *cc = tls_ctx(false, cs, ID_SRV);

	struct conn k = handshake(sc, cc, 0);
	assert_true(k.ok);
	X509 *first = X509_dup(SSL_get0_peer_certificate(k.c));
	conn_free(&k);

	/* The server's SVID rotates: the next handshake presents the new one. */
	lanyard_x509_context *next = make_ctx(f, &f->pki, &f->pki, ID_SRV);
	wl_x509_source_set(ss, next);
	k = handshake(sc, cc, 0);
	assert_true(k.ok);
	assert_int_not_equal(X509_cmp(first, SSL_get0_peer_certificate(k.c)), 0);
	assert_int_equal(X509_cmp(lanyard_x509_svid_leaf(lanyard_x509_context_svid(next, 0)),
	    SSL_get0_peer_certificate(k.c)), 0);
	conn_free(&k);
	lanyard_x509_context_free(next);
	X509_free(first);

	/* The client's bundle rotates to the rogue CA only: the real server no longer verifies. */
	lanyard_x509_context *rogue = make_ctx(f, &f->rogue, &f->rogue, ID_CLI);
	wl_x509_source_set(cs, rogue);
	lanyard_x509_context_free(rogue);
	k = handshake(sc, cc, 0);
	assert_false(k.ok);
	conn_free(&k);
	SSL_CTX_free(cc);
	SSL_CTX_free(sc);
	lanyard_x509_source_free(ss);
	lanyard_x509_source_free(cs);
}

static void
test_no_svid_yet(void **state)
{
	struct fx *f = *state;
	lanyard_x509_source *ss = NULL;
	struct ly_error e;
	assert_int_equal(wl_x509_source_new_fixed(NULL, &ss, &e), LY_OK);
	assert_null(lanyard_x509_source_get(ss));
	assert_int_equal(lanyard_x509_source_version(ss), 0);
	lanyard_x509_source *cs = fixed_source(make_ctx(f, &f->pki, &f->pki, ID_CLI));
	SSL_CTX *sc = tls_ctx(true, ss, ID_CLI), *cc = tls_ctx(false, cs, ID_SRV);
	struct conn k = handshake(sc, cc, 0);
	assert_false(k.ok);
	assert_non_null(strstr(lanyard_tls_verify_error(k.s), "no X.509-SVID"));
	conn_free(&k);

	struct lanyard_error err;
	char id[LANYARD_SPIFFE_ID_MAX + 1];
	SSL *lone = SSL_new(cc);
	assert_int_equal(lanyard_tls_peer_id(lone, id, &err), LANYARD_E_NOT_FOUND);
	SSL_free(lone);
	SSL_CTX *bad = NULL;
	assert_int_equal(lanyard_tls_client_ctx(cs, NULL, &bad, &err), LANYARD_E_INVALID);
	assert_null(bad);
	SSL_CTX_free(cc);
	SSL_CTX_free(sc);
	lanyard_x509_source_free(ss);
	lanyard_x509_source_free(cs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mutual_auth),
		cmocka_unit_test(test_authorizer_refuses),
		cmocka_unit_test(test_rogue_ca_refused),
		cmocka_unit_test(test_rotation_without_new_ctx),
		cmocka_unit_test(test_no_svid_yet),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
