/*
 * fuzz_der_chain.c: the DER parsers: arbitrary bytes split, parsed and
 * PEM round-tripped as a certificate chain (der.h), and decoded as a
 * PKCS#8 private key (keys.h, whose EC path is a hand-written parser).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/der.h"
#include "lib/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t count = 0, off = 0;
	if (ly_der_split(data, size, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &count, NULL) == LY_OK) {
		/* The spans tile the input exactly, and PEM round-trips to the same bytes. */
		for (size_t i = 0; i < count; off += spans[i].len, i++)
			if (spans[i].off != off || spans[i].len == 0 || spans[i].len > LY_CERT_DER_MAX)
				abort();
		if (off != size)
			abort();
		struct ly_buf pem = LY_BUF_INIT, der = LY_BUF_INIT;
		if (ly_der_certs_to_pem(data, size, count, size, &pem, NULL) != LY_OK)
			abort();
		if (ly_pem_to_der_certs((const char *)pem.data, pem.len, count, size, &der, NULL) != LY_OK ||
		    der.len != size || memcmp(der.data, data, size) != 0)
			abort();
		ly_buf_free(&der);
		ly_buf_free(&pem);
	}
	STACK_OF(X509) *certs = NULL;
	if (ly_der_parse_chain(data, size, &certs, NULL) == LY_OK)
		sk_X509_pop_free(certs, X509_free);
	EVP_PKEY *key = NULL;
	if (ly_key_from_pkcs8_der(data, size, &key, NULL) == LY_OK) {
		struct ly_buf again = LY_BUF_INIT;
		if (ly_key_to_pkcs8_der(key, &again, NULL) != LY_OK)
			abort();
		ly_buf_free_secret(&again);
		EVP_PKEY_free(key);
	}
	struct ly_buf out = LY_BUF_INIT;
	if (ly_pem_to_der_certs((const char *)data, size, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &out, NULL) == LY_OK)
		ly_buf_free(&out);
	return 0;
}
