/*
 * test_ca_upstream.c: the server's CA (server/ca.h) under an upstream CA
 * (a PKI made at test time, testutil_x509.h, written as the operator's
 * certificate, key and chain files; testutil_ca.h's fixture): the upstream
 * root signs the signing CA, which ends with it, leaves verified against
 * the bundle holding only the upstream root, rotation under a longer-lived
 * root, an upstream intermediate in the chain, and the refusals (a key not
 * the certificate's, a chain without its root, an expired upstream).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>

#include "lib/log.h"
#include "testutil_ca.h"

/* ---- upstream CA ---- */

static void
write_file(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	fclose(fp);
	chmod(path, 0600);
}

static void
write_pem_certs(const char *path, X509 *const *certs, size_t n)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	for (size_t i = 0; i < n; i++)
		assert_true(PEM_write_X509(fp, certs[i]));
	fclose(fp);
}

static void
write_key(const char *path, EVP_PKEY *key)
{
	struct ly_buf pem = LY_BUF_INIT;
	assert_int_equal(ly_key_to_pem(key, &pem, NULL), LY_OK);
	write_file(path, pem.data, pem.len);
	ly_buf_free_secret(&pem);
}

static void
test_upstream(void **state)
{
	struct fx *f = *state;
	struct tu_pki pki;
	char cert_path[256], key_path[256], chain_path[256];
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, root_der = LY_BUF_INIT;
	struct ly_error err;
	time_t exp;

	tu_pki_init(&pki); /* root (valid T0 +- 1 day) and an intermediate under it */
	snprintf(cert_path, sizeof(cert_path), "%s/root.pem", f->dir);
	snprintf(chain_path, sizeof(chain_path), "%s/chain.pem", f->dir);
	snprintf(key_path, sizeof(key_path), "%s/up.key", f->dir);
	write_pem_certs(cert_path, &pki.root, 1);
	write_key(key_path, pki.root_key);
	X509 *both[2] = { pki.inter, pki.root };
	write_pem_certs(chain_path, both, 2);
	tu_der(pki.root, &root_der);
	lib_csr(f->key, WL, &csr);
	struct ly_spiffe_id id = sid(WL);

	/* The upstream root signs our signing CA: chain leaf + signing CA; the bundle holds its root. */
	struct ly_ca_config c = config(f);
	c.upstream_cert_path = cert_path;
	c.upstream_key_path = key_path;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	const struct ly_bundle *b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(b, 0), &root_der));
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &chain, &exp, &err), LY_OK);
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	assert_int_equal(chain_split(&chain, spans), 2);
	if (verify(b, &chain, T0, f->key, &err) != LY_OK)
		fail_msg("upstream chain: %s", err.msg);
	/* The signing CA ends with the upstream root (T0 + 1 day), and so do leaves near it. */
	X509 *sca = chain_cert(&chain, 1);
	assert_int_equal(cert_time(X509_get0_notAfter(sca)), T0 + DAY);
	X509_free(sca);
	ly_buf_free(&chain);

	/*
	 * The upstream CA ends at T0 + 1 day, as the signing CA does: no
	 * successor can outlive it, so none is made, and the next event is the
	 * expiry (the operator must renew the upstream CA; logged as an error).
	 */
	bool changed = false;
	ly_log_set_fd(-1);
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY / 2, &changed, &err), LY_OK);
	ly_log_set_fd(2);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0 + DAY - 100, &chain, &exp,
	    &err), LY_OK);
	assert_int_equal(exp, T0 + DAY);
	ly_buf_free(&chain);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* A longer-lived upstream root: the signing CA rotates under it; the bundle keeps the one root. */
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	struct tu_spec ls = tu_ca_spec("spiffe://example.org");
	ls.not_after = 10 * DAY;
	EVP_PKEY *lkey = tu_key(LY_KEY_EC_P384);
	X509 *lroot = tu_make(&ls, lkey, NULL, NULL);
	struct ly_buf lroot_der = LY_BUF_INIT, first = LY_BUF_INIT, second = LY_BUF_INIT;
	tu_der(lroot, &lroot_der);
	write_pem_certs(cert_path, &lroot, 1);
	write_key(key_path, lkey);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &chain, &exp, &err), LY_OK);
	chain_der(&chain, 1, &first);
	ly_buf_free(&chain);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY / 2);
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY / 2, &changed, &err), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0), &lroot_der));
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY / 2 + 600, &changed, &err), LY_OK);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0 + DAY / 2 + 600, &chain, &exp,
	    &err), LY_OK);
	chain_der(&chain, 1, &second);
	assert_false(bufs_equal(&first, &second));
	if (verify(ly_ca_bundle(f->ca), &chain, T0 + DAY / 2 + 600, f->key, &err) != LY_OK)
		fail_msg("rotated upstream chain: %s", err.msg);
	ly_buf_free(&chain);
	ly_buf_free(&first);
	ly_buf_free(&second);
	ly_buf_free(&lroot_der);
	X509_free(lroot);
	EVP_PKEY_free(lkey);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* With an intermediate: chain leaf + signing CA + intermediate, to the same root. */
	ly_buf_free(&csr);
	lib_csr(f->key, WL, &csr);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	write_pem_certs(chain_path, both, 2);
	write_key(key_path, pki.int_key);
	c.upstream_cert_path = chain_path;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(b, 0), &root_der));
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &chain, &exp, &err), LY_OK);
	assert_int_equal(chain_split(&chain, spans), 3);
	if (verify(b, &chain, T0, f->key, &err) != LY_OK)
		fail_msg("upstream chain with intermediate: %s", err.msg);
	ly_buf_free(&chain);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* Refused: a key that is not the certificate's; a chain without its root; expired. */
	write_key(key_path, pki.root_key);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "does not match"));
	write_pem_certs(chain_path, both, 1);
	write_key(key_path, pki.int_key);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "self-signed root"));
	c.upstream_cert_path = cert_path;
	write_pem_certs(cert_path, &pki.root, 1);
	write_key(key_path, pki.root_key);
	ly_status rc = ly_ca_open(&c, T0 + 2 * DAY, &f->ca, &err);
	if (rc != LY_E_EXPIRED)
		fail_msg("expired upstream: %s: %s", ly_status_str(rc), err.msg);
	assert_null(f->ca);

	ly_buf_free(&csr);
	ly_buf_free(&root_der);
	tu_pki_free(&pki);
}


int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_upstream, fx_setup, fx_teardown),
	};
	ly_log_set_level(LY_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
