/*
 * fuzz_sds_request.c: an Envoy SDS v3 DiscoveryRequest as the agent decodes
 * it (agent/sds_msg.h, called by agent/sds.c on every StreamSecrets and
 * FetchSecrets message before anything else). The whole input is the
 * request. Whatever the decoder accepts must hold to its documented rules,
 * and selecting secrets for it with nothing cached must answer an empty
 * response (no name asked for) or LY_E_NOT_FOUND (some name asked for).
 * Seeds: tests/fuzz/make_sds_seeds.py.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/sds_msg.h"
#include "lib/caps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_sds_request req;
	struct ly_sds_names names = { "default", "ROOTCA", "ALL" };
	struct ly_buf out = LY_BUF_INIT;
	size_t n = 0;

	if (ly_sds_parse_request(data, size, &req, NULL) != LY_OK)
		return 0;
	if (size > LY_SDS_REQUEST_MAX || req.n_names > LY_SDS_NAMES_MAX)
		abort();
	for (size_t i = 0; i < req.n_names; i++) {
		size_t len = strlen(req.names[i]);
		if (len == 0 || len > LY_SDS_NAME_MAX)
			abort();
	}
	if (strlen(req.version_info) > LY_SDS_VERSION_MAX || strlen(req.response_nonce) > LY_SDS_VERSION_MAX)
		abort();
	if (!req.nack && req.error_message[0] != '\0')
		abort();
	if (!ly_sds_names_equal(&req, &req))
		abort();
	(void)ly_sds_use_spiffe_validator(&req, false);
	ly_status rc = ly_sds_response(&req, &names, true, NULL, NULL, "example.org", "1", "abcd", &out, &n, NULL, NULL);
	if (req.n_names == 0 ? (rc != LY_OK || n != 0) : rc != LY_E_NOT_FOUND)
		abort();
	ly_buf_free_secret(&out);
	ly_sds_request_cleanup(&req);
	return 0;
}
