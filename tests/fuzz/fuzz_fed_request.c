/*
 * fuzz_fed_request.c: arbitrary bytes as a request to the bundle endpoint
 * (server/fed_check.c, ly_fed_route_request: what fed_endpoint.c decides
 * on each read). Every prefix of a routed head that is still incomplete
 * must ask for more, and the answer's status must be one we send.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/federation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum ly_fed_route r = ly_fed_route_request((const char *)data, size);
	int code = 0;
	const char *reason = NULL;

	if (r == LY_FED_ROUTE_NEED_MORE)
		return 0;
	ly_fed_route_status(r, &code, &reason);
	if (reason == NULL || (code != 200 && code != 400 && code != 404 && code != 405 && code != 431))
		abort();
	if (r == LY_FED_ROUTE_BUNDLE && (size < 18 || memcmp(data, "GET /", 5) != 0))
		abort();
	/* A routed request decides the same with one more byte after it (the head's end was found). */
	if (r == LY_FED_ROUTE_BUNDLE && size < LY_HTTP_REQUEST_MAX) {
		uint8_t *more = malloc(size + 1);
		if (more == NULL)
			return 0;
		memcpy(more, data, size);
		more[size] = 'x';
		if (ly_fed_route_request((const char *)more, size + 1) != LY_FED_ROUTE_BUNDLE)
			abort();
		free(more);
	}
	return 0;
}
