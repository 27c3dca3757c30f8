/*
 * fuzz_x509svid.c: verify arbitrary bytes as an X.509-SVID chain (leaf
 * first) against a trust store made once, at start-up, from a root whose
 * key is fixed (tu_fixed_ec_key(1)) so the seed corpus can chain to it.
 */
#include <stdint.h>
#include <stdlib.h>

#include "lib/x509svid.h"
#include "tests/unit/testutil_x509.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static X509_STORE *store;

static void
init(void)
{
	EVP_PKEY *key = tu_fixed_ec_key(1);
	struct tu_spec spec = tu_ca_spec("spiffe://example.org");
	spec.cn = "fuzz root";
	X509 *root = tu_make(&spec, key, NULL, NULL);
	struct ly_buf der = LY_BUF_INIT;
	tu_der(root, &der);
	if (ly_x509_store_new(der.data, der.len, &store, NULL) != LY_OK)
		abort();
	ly_buf_free(&der);
	X509_free(root);
	EVP_PKEY_free(key);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (store == NULL)
		init();
	struct ly_x509svid_info info;
	if (ly_x509svid_verify_ex(data, size, store, "example.org", TU_NOW, NULL, &info, NULL) == LY_OK &&
	    (!ly_spiffe_id_member_of(&info.id, "example.org") || info.not_after < TU_NOW))
		abort();
	return 0;
}
