/*
 * ca_openssl_verify.c: writes chains issued by the server's CA
 * (server/ca.h) and its trust bundles as PEM files into a directory, for
 * ca_openssl_verify.sh to check with the openssl command line: an
 * implementation other than ours says whether they are valid.
 *
 *   ca_openssl_verify DIR
 *
 * For each CA key type (ec-p256, ec-p384, rsa-2048): <kt>-leaf.pem,
 * <kt>-intermediates.pem (signing CA), <kt>-bundle.pem (roots). Then a
 * rotation with the P-256 CA, placed in time so that everything is valid
 * at the real "now": rot-old-leaf.pem / rot-old-intermediates.pem signed
 * before the successor activated, rot-new-*.pem after, rot-bundle.pem with
 * both roots and rot-new-root.pem with only the successor's root.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lib/csr.h"
#include "lib/der.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "server/ca.h"

#define ID "spiffe://example.org/ns/prod/sa/web"

static const char *dir;

static void
die(const char *what, const struct ly_error *err)
{
	fprintf(stderr, "ca_openssl_verify: %s: %s\n", what, err != NULL ? err->msg : "");
	exit(1);
}

static void
write_text(const char *name, const char *text, size_t len)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *fp = fopen(path, "w");
	if (fp == NULL || fwrite(text, 1, len, fp) != len || fclose(fp) != 0)
		die(path, NULL);
}

/* Writes certificates [from, to) of a DER chain as PEM. */
static void
write_certs(const char *name, const struct ly_buf *chain, size_t from, size_t to)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	struct ly_buf pem = LY_BUF_INIT;
	struct ly_error err;
	size_t n = 0;

	if (ly_der_split(chain->data, chain->len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &n, &err) != LY_OK)
		die("split", &err);
	if (to > n)
		to = n;
	size_t off = spans[from].off, len = spans[to - 1].off + spans[to - 1].len - off;
	if (ly_der_certs_to_pem(chain->data + off, len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &pem, &err) != LY_OK)
		die("PEM", &err);
	write_text(name, (const char *)pem.data, pem.len);
	ly_buf_free(&pem);
}

static void
write_bundle(const char *name, const struct ly_bundle *b)
{
	char *pem = NULL;
	struct ly_error err;
	if (ly_bundle_write_pem(b, &pem, &err) != LY_OK)
		die("bundle PEM", &err);
	write_text(name, pem, strlen(pem));
	free(pem);
}

static void
open_ca(const char *sub, enum ly_key_type kt, time_t now, struct ly_ca **ca)
{
	char data[1024];
	struct ly_ca_config cfg;
	struct ly_error err;

	snprintf(data, sizeof(data), "%s/%s", dir, sub);
	memset(&cfg, 0, sizeof(cfg));
	cfg.trust_domain = "example.org";
	cfg.data_dir = data;
	cfg.key_type = kt;
	if (ly_ca_open(&cfg, now, ca, &err) != LY_OK)
		die("ly_ca_open", &err);
}

static void
sign(struct ly_ca *ca, EVP_PKEY *key, time_t now, struct ly_buf *chain)
{
	static const char *const dns[] = { "web.example.org", "web.prod.svc" };
	struct ly_spiffe_id id;
	struct ly_buf csr = LY_BUF_INIT;
	struct ly_error err;

	if (ly_spiffe_id_parse_str(ID, &id, &err) != LY_OK || ly_csr_build(key, &id, NULL, 0, &csr, &err) != LY_OK)
		die("CSR", &err);
	if (ly_ca_sign_x509_svid(ca, csr.data, csr.len, &id, dns, 2, 0, now, chain, NULL, &err) != LY_OK)
		die("sign", &err);
	ly_buf_free(&csr);
}

int
main(int argc, char **argv)
{
	static const enum ly_key_type types[] = { LY_KEY_EC_P256, LY_KEY_EC_P384, LY_KEY_RSA_2048 };
	struct ly_error err;
	EVP_PKEY *key = NULL;
	char name[256];

	if (argc != 2) {
		fprintf(stderr, "usage: ca_openssl_verify DIR\n");
		return 2;
	}
	dir = argv[1];
	ly_log_set_level(LY_LOG_WARN);
	if (ly_key_generate(LY_KEY_EC_P256, &key, &err) != LY_OK)
		die("key", &err);
	time_t now = time(NULL);

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		const char *kt = ly_key_type_name(types[i]);
		struct ly_ca *ca = NULL;
		struct ly_buf chain = LY_BUF_INIT;
		open_ca(kt, types[i], now, &ca);
		sign(ca, key, now, &chain);
		snprintf(name, sizeof(name), "%s-leaf.pem", kt);
		write_certs(name, &chain, 0, 1);
		snprintf(name, sizeof(name), "%s-intermediates.pem", kt);
		write_certs(name, &chain, 1, LY_CHAIN_CERTS_MAX);
		snprintf(name, sizeof(name), "%s-bundle.pem", kt);
		write_bundle(name, ly_ca_bundle(ca));
		ly_buf_free(&chain);
		ly_ca_free(ca);
	}

	/*
	 * Rotation, ending now: made half a CA TTL and 700 s ago, the
	 * successor published 700 s ago and signing since 100 s ago (default
	 * propagation delay: 600 s).
	 */
	const time_t t0 = now - LY_CA_TTL_DEFAULT / 2 - 700;
	struct ly_ca *ca = NULL;
	struct ly_buf old_chain = LY_BUF_INIT, new_chain = LY_BUF_INIT;
	bool changed = false;
	open_ca("rotation", LY_KEY_EC_P256, t0, &ca);
	if (ly_ca_tick(ca, t0 + LY_CA_TTL_DEFAULT / 2, &changed, &err) != LY_OK || !changed)
		die("publishing the successor", &err);
	sign(ca, key, now - 650, &old_chain);
	if (ly_ca_tick(ca, now - 100, &changed, &err) != LY_OK)
		die("activating the successor", &err);
	sign(ca, key, now - 50, &new_chain);
	write_certs("rot-old-leaf.pem", &old_chain, 0, 1);
	write_certs("rot-old-intermediates.pem", &old_chain, 1, LY_CHAIN_CERTS_MAX);
	write_certs("rot-new-leaf.pem", &new_chain, 0, 1);
	write_certs("rot-new-intermediates.pem", &new_chain, 1, LY_CHAIN_CERTS_MAX);
	const struct ly_bundle *b = ly_ca_bundle(ca);
	if (ly_bundle_x509_authority_count(b) != 2)
		die("the bundle should hold two roots", NULL);
	write_bundle("rot-bundle.pem", b);
	/* Roots are in the order they were made: the second is the successor's. */
	const struct ly_buf *r = ly_bundle_x509_authority(b, 1);
	struct ly_buf one = { .data = r->data, .len = r->len };
	write_certs("rot-new-root.pem", &one, 0, 1);
	ly_buf_free(&old_chain);
	ly_buf_free(&new_chain);
	ly_ca_free(ca);
	EVP_PKEY_free(key);
	return 0;
}
