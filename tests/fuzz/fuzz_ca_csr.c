/*
 * fuzz_ca_csr.c: the CA's own strict CSR parser (server/ca_csr.c) on
 * arbitrary bytes, against OpenSSL's reading of the same bytes: whatever
 * the CA accepts and verifies must, when d2i_X509_REQ reads it too, carry
 * the same key, a self-signature OpenSSL verifies, and the same single URI.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "server/ca_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_openssl_agrees(const uint8_t *data, size_t size, const struct ca_csr *csr, EVP_PKEY *key)
{
	const unsigned char *p = data;
	X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)size);
	if (req == NULL || p != data + size) /* OpenSSL stricter here: nothing to compare */
		goto out;
	EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
	if (pk == NULL || EVP_PKEY_eq(pk, key) != 1 || X509_REQ_verify(req, pk) != 1)
		abort();
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *gens = exts != NULL ? X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL) : NULL;
	int uris = 0;
	for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		int type = 0;
		const ASN1_IA5STRING *v = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, i), &type);
		if (type != GEN_URI)
			continue;
		uris++;
		if ((size_t)ASN1_STRING_length(v) != csr->uri.n || memcmp(ASN1_STRING_get0_data(v), csr->uri.p, csr->uri.n) != 0)
			abort();
	}
	if (gens != NULL && uris != 1)
		abort();
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
out:
	X509_REQ_free(req);
	ERR_clear_error();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ca_crypto c;
	static EVP_MD_CTX *md;
	struct ca_csr csr;
	EVP_PKEY *key = NULL;

	if (md == NULL && (ca_crypto_init(&c, NULL) != LY_OK || (md = EVP_MD_CTX_new()) == NULL))
		abort();
	if (ca_csr_parse(&c, data, size, &csr, NULL) != LY_OK)
		return 0;
	if (csr.tbs.n == 0 || csr.uri.n == 0 || csr.sig.n == 0 || csr.md == NULL)
		abort();
	if (ca_csr_verify(&c, md, &csr, &key, NULL) == LY_OK)
		check_openssl_agrees(data, size, &csr, key);
	EVP_PKEY_free(key);
	return 0;
}
