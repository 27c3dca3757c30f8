/*
 * fuzz_x509pop.c: x509pop node attestation (server/attest.h) on arbitrary
 * input: a 2-byte big-endian chain length, the chain (DER, leaf first),
 * then the proof signature over a fixed nonce (32 bytes of 0x11). The CA
 * bundle is a root made at start-up from a fixed key (tu_fixed_ec_key(1))
 * so that the seed corpus chains to it. Whatever is admitted must carry
 * an x509pop agent ID and selectors lib/entry.c accepts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/attest.h"
#include "tests/unit/testutil_x509.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ly_attest_x509pop *cfg;
static uint8_t nonce[LY_X509POP_NONCE_LEN];

static void
init(void)
{
	EVP_PKEY *key = tu_fixed_ec_key(1);
	struct tu_spec spec = tu_ca_spec(NULL);
	spec.cn = "fuzz x509pop root";
	X509 *root = tu_make(&spec, key, NULL, NULL);
	struct ly_buf der = LY_BUF_INIT;
	tu_der(root, &der);
	if (ly_attest_x509pop_new_der("example.org", der.data, der.len, &cfg, NULL) != LY_OK)
		abort();
	memset(nonce, 0x11, sizeof(nonce));
	ly_buf_free(&der);
	X509_free(root);
	EVP_PKEY_free(key);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char prefix[] = "spiffe://example.org/lanyard/agent/x509pop/";
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	if (cfg == NULL)
		init();
	if (size < 2)
		return 0;
	size_t n = (size_t)data[0] << 8 | data[1];
	if (n > size - 2)
		n = size - 2;
	if (ly_attest_x509pop_verify(cfg, data + 2, n, nonce, data + 2 + n, size - 2 - n, TU_NOW, &r, NULL) != LY_OK)
		return 0;
	if (strncmp(r.agent_id, prefix, sizeof(prefix) - 1) != 0 || strlen(r.agent_id) != sizeof(prefix) - 1 + 40)
		abort();
	for (size_t i = 0; i < r.n_selectors; i++) {
		if (ly_selector_check(r.selectors[i].type, r.selectors[i].value, NULL) != LY_OK)
			abort();
	}
	ly_attest_result_cleanup(&r);
	return 0;
}
