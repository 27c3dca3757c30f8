/*
 * testutil_ca.h: the fixture and helpers the CA tests share
 * (test_ca_issue.c, test_ca_rotation.c, test_ca_upstream.c): a CA over a
 * mkdtemp data directory (struct fx, fx_setup/fx_teardown: the directory,
 * the CA and a workload's P-256 key, all freed by the teardown), CSRs as an
 * agent makes them, signing and verifying as the server and an agent do,
 * and readers of the certificates in a chain.
 *
 * Static inline, as testutil_x509.h: a test compiles in what it uses, and
 * the short names stay local to each test. Failures are cmocka assertions
 * (a fixture that cannot be made is a broken test). Everything returned is
 * the caller's: ly_buf_free for the buffers, X509_free for chain_cert.
 * Time is passed explicitly (T0 is testutil_x509.h's TU_NOW).
 */
#ifndef LANYARD_TESTUTIL_CA_H
#define LANYARD_TESTUTIL_CA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/x509.h>

#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/keys.h"
#include "lib/x509svid.h"
#include "server/ca.h"
#include "testutil_x509.h"

#define TD "example.org"
#define WL "spiffe://example.org/ns/prod/sa/web"
#define T0 TU_NOW
#define DAY (24 * 60 * 60)

struct fx {
	char dir[64];
	struct ly_ca *ca;
	EVP_PKEY *key; /* a workload's P-256 key */
};

static inline int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline int
fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/lanyard-test-ca-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->key = tu_key(LY_KEY_EC_P256);
	*state = f;
	return 0;
}

static inline int
fx_teardown(void **state)
{
	struct fx *f = *state;
	ly_ca_free(f->ca);
	EVP_PKEY_free(f->key);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static inline struct ly_ca_config
config(const struct fx *f)
{
	struct ly_ca_config c;
	memset(&c, 0, sizeof(c));
	c.trust_domain = TD;
	c.data_dir = f->dir;
	return c;
}

static inline void
open_ca(struct fx *f, time_t now)
{
	struct ly_ca_config c = config(f);
	struct ly_error err;
	ly_status rc = ly_ca_open(&c, now, &f->ca, &err);
	if (rc != LY_OK)
		fail_msg("ly_ca_open: %s", err.msg);
}

static inline struct ly_spiffe_id
sid(const char *s)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str(s, &id, NULL), LY_OK);
	return id;
}

/* A CSR made by lib/csr.c, the way an agent makes one. */
static inline void
lib_csr(EVP_PKEY *key, const char *id, struct ly_buf *out)
{
	struct ly_spiffe_id s = sid(id);
	assert_int_equal(ly_csr_build(key, &s, NULL, 0, out, NULL), LY_OK);
}

static inline ly_status
sign(struct fx *f, const struct ly_buf *csr, const char *id, time_t now, struct ly_buf *chain, struct ly_error *err)
{
	struct ly_spiffe_id s = sid(id);
	return ly_ca_sign_x509_svid(f->ca, csr->data, csr->len, &s, NULL, 0, 0, now, chain, NULL, err);
}

/* Verifies `chain` against the X.509 authorities of `b` at `now`, as an agent does. */
static inline ly_status
verify(const struct ly_bundle *b, const struct ly_buf *chain, time_t now, EVP_PKEY *key, struct ly_error *err)
{
	struct ly_buf roots = LY_BUF_INIT;
	X509_STORE *store = NULL;
	struct ly_x509svid_info info;

	assert_int_equal(ly_bundle_x509_authorities_der(b, &roots, NULL), LY_OK);
	assert_int_equal(ly_x509_store_new(roots.data, roots.len, &store, NULL), LY_OK);
	ly_status rc = ly_x509svid_verify_ex(chain->data, chain->len, store, TD, now, key, &info, err);
	X509_STORE_free(store);
	ly_buf_free(&roots);
	return rc;
}

static inline size_t
chain_split(const struct ly_buf *chain, struct ly_der_span *spans)
{
	size_t n = 0;
	assert_int_equal(ly_der_split(chain->data, chain->len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &n, NULL),
	    LY_OK);
	return n;
}

static inline X509 *
chain_cert(const struct ly_buf *chain, size_t i)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t n = chain_split(chain, spans);
	assert_true(i < n);
	X509 *x = NULL;
	assert_int_equal(ly_der_parse_one(chain->data + spans[i].off, spans[i].len, &x, NULL), LY_OK);
	return x;
}

/* The DER of certificate `i` of `chain`, copied. */
static inline void
chain_der(const struct ly_buf *chain, size_t i, struct ly_buf *out)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t n = chain_split(chain, spans);
	assert_true(i < n);
	assert_int_equal(ly_buf_set(out, chain->data + spans[i].off, spans[i].len, NULL), LY_OK);
}

static inline time_t
cert_time(const ASN1_TIME *t)
{
	time_t v = 0;
	assert_int_equal(ly_asn1_time_to_time(t, &v, NULL), LY_OK);
	return v;
}

static inline bool
bufs_equal(const struct ly_buf *a, const struct ly_buf *b)
{
	return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

#endif
