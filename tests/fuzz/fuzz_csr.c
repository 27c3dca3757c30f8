/* fuzz_csr.c: parse and check arbitrary bytes as a PKCS#10 CSR (csr.h). */
#include <stdint.h>
#include <stdlib.h>

#include "lib/csr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_csr csr;
	if (ly_csr_parse(data, size, &csr, NULL) == LY_OK) {
		/* Whatever passed has a key and a valid SPIFFE ID. */
		if (csr.key == NULL || csr.spki.len == 0 || csr.id.id[0] == '\0')
			abort();
	} else if (csr.key != NULL) {
		abort();
	}
	ly_csr_cleanup(&csr);
	return 0;
}
