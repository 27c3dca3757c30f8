/*
 * fuzz_workload_x509.c: arbitrary bytes as an X509SVIDResponse through the
 * workload library's parse-and-check path (lib/workload/x509ctx.c), at the
 * fixtures' fixed time so seeds made around it stay valid. Whatever is
 * accepted must hold its promises: at least one SVID, each key matching
 * its leaf, each SVID's trust domain with a trust store. Seeds
 * (corpus/workload_x509/): responses packed as test_workload_util.h's
 * twl_pack does, certificates valid around that time, throwaway keys
 * (tu_fixed_ec_key): two valid ones and one per refusal rule.
 */
#include <stdint.h>
#include <stdlib.h>

#include "lib/workload/wl_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW ((time_t)1700000000) /* TU_NOW of tests/unit/testutil_x509.h */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lanyard_x509_context *ctx = NULL;

	if (wl_x509_context_parse(data, size, FUZZ_NOW, &ctx, NULL) != LY_OK)
		return 0;
	if (ctx->n_svids == 0)
		abort();
	for (size_t i = 0; i < ctx->n_svids; i++) {
		const struct lanyard_x509_svid *s = &ctx->svids[i];
		if (X509_check_private_key(s->leaf, s->key) != 1 ||
		    lanyard_x509_context_trust_store(ctx, s->id.trust_domain) == NULL)
			abort();
	}
	lanyard_x509_context_free(ctx);
	return 0;
}
