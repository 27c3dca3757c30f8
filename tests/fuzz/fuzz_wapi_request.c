/*
 * fuzz_wapi_request.c: the Workload API requests as the agent decodes them
 * (agent/workload_msg.h, called by agent/wapi.c before anything else).
 * The first byte picks the method: 0 FetchX509SVID, 1 FetchX509Bundles,
 * 2 FetchJWTBundles (empty requests), 3 FetchJWTSVID; the rest is the
 * request. Whatever the decoder accepts must hold to its documented rules.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/workload_msg.h"
#include "lib/caps.h"
#include "lib/spiffeid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
jwtsvid(const uint8_t *d, size_t n)
{
	struct ly_wmsg_jwt_request m;
	struct ly_spiffe_id id;

	if (ly_wmsg_parse_jwtsvid_request(d, n, &m, NULL) != LY_OK)
		return;
	if (n > LY_WORKLOAD_REQUEST_MAX || m.n_audience == 0 || m.n_audience > LY_JWT_AUDIENCES_MAX)
		abort();
	for (size_t i = 0; i < m.n_audience; i++) {
		size_t len = strlen(m.audience[i]);
		if (len == 0 || len > LY_JWT_AUDIENCE_MAX)
			abort();
	}
	if (m.spiffe_id != NULL && (ly_spiffe_id_parse_str(m.spiffe_id, &id, NULL) != LY_OK ||
	    ly_spiffe_id_is_trust_domain_id(&id)))
		abort(); /* a named identity is a valid SPIFFE ID with a path */
	ly_wmsg_jwt_request_cleanup(&m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum ly_wmsg_empty_kind kinds[] = { LY_WMSG_X509SVID_REQUEST, LY_WMSG_X509BUNDLES_REQUEST,
		LY_WMSG_JWTBUNDLES_REQUEST };

	if (size < 1)
		return 0;
	if (data[0] % 4 == 3) {
		jwtsvid(data + 1, size - 1);
	} else if (ly_wmsg_parse_empty_request(kinds[data[0] % 4], data + 1, size - 1, NULL) == LY_OK &&
	    size - 1 > LY_WORKLOAD_REQUEST_MAX) {
		abort();
	}
	return 0;
}
