/*
 * fuzz_jwks.c: ly_bundle_parse_jwks over arbitrary bytes; whatever parses
 * must write back and re-parse to an equal bundle (abort otherwise). The
 * same bytes are also tried as a PEM bundle, with the same round trip.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
round_trip(const struct ly_bundle *b, int pem)
{
	char *doc = NULL;
	struct ly_bundle *again = NULL;
	if ((pem ? ly_bundle_write_pem(b, &doc, NULL) : ly_bundle_write_jwks(b, 0, &doc, NULL)) != LY_OK)
		abort();
	ly_status rc = pem ? ly_bundle_parse_pem("example.org", doc, strlen(doc), &again, NULL)
			   : ly_bundle_parse_jwks("example.org", doc, strlen(doc), &again, NULL);
	if (rc != LY_OK || !ly_bundle_equal(b, again))
		abort();
	ly_bundle_free(again);
	free(doc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_bundle *b = NULL;
	if (ly_bundle_parse_jwks("example.org", (const char *)data, size, &b, NULL) == LY_OK) {
		round_trip(b, 0);
		ly_bundle_free(b);
	}
	if (ly_bundle_parse_pem("example.org", (const char *)data, size, &b, NULL) == LY_OK) {
		round_trip(b, 1);
		ly_bundle_free(b);
	}
	return 0;
}
