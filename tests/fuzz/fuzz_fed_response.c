/*
 * fuzz_fed_response.c: arbitrary bytes as a bundle endpoint's answer
 * (server/fed_check.c, ly_fed_check_response: the code the fetcher runs on
 * what it read), for trust domain b.test. A taken bundle must be b.test's,
 * within the caps, and write back as JSON that parses to the same bundle;
 * a refusal must say why and leave nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/federation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_bundle *b = NULL, *again = NULL;
	enum ly_fed_refusal why = LY_FED_R_COUNT;
	struct ly_error err;
	char *json = NULL;

	if (ly_fed_check_response("b.test", data, size, NULL, &b, &why, &err) != LY_OK) {
		if (b != NULL || err.msg[0] == '\0' || (unsigned)why >= LY_FED_R_COUNT)
			abort();
		return 0;
	}
	if (b == NULL || strcmp(ly_bundle_trust_domain(b), "b.test") != 0 || size > LY_FED_RESPONSE_MAX ||
	    ly_bundle_x509_authority_count(b) > LY_JWKS_KEYS_MAX || ly_bundle_jwt_authority_count(b) > LY_JWKS_KEYS_MAX)
		abort();
	if (ly_bundle_write_jwks(b, 0, &json, &err) != LY_OK ||
	    ly_bundle_parse_jwks("b.test", json, strlen(json), &again, &err) != LY_OK || !ly_bundle_equal(b, again))
		abort();
	/* The same answer against what it gave is not stale. */
	struct ly_bundle *third = NULL;
	if (ly_fed_check_response("b.test", data, size, b, &third, &why, &err) != LY_OK)
		abort();
	ly_bundle_free(third);
	ly_bundle_free(again);
	ly_bundle_free(b);
	free(json);
	return 0;
}
