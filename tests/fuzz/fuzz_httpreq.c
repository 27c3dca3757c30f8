/*
 * fuzz_httpreq.c: parses arbitrary bytes as an HTTP/1.x request head and,
 * when accepted, checks the invariants the health listener relies on.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/httpmini.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_http_request req;
	struct ly_error err;

	if (ly_http_parse_request((const char *)data, size, &req, &err) != LY_OK) {
		if (err.msg[0] == '\0')
			abort();
		return 0;
	}
	if (!req.complete)
		return 0;
	if (req.consumed > size || req.consumed > LY_HTTP_REQUEST_MAX || req.consumed < 4 ||
	    memcmp(data + req.consumed - 4, "\r\n\r\n", 4) != 0 || req.path[0] != '/' || req.method[0] == '\0' ||
	    strlen(req.path) > LY_HTTP_PATH_MAX || (req.version_minor != 0 && req.version_minor != 1) ||
	    req.header_count > LY_HTTP_HEADERS_MAX || strchr(req.path, '?') != NULL)
		abort();
	/* The same head parses the same way on its own. */
	struct ly_http_request again;
	if (ly_http_parse_request((const char *)data, req.consumed, &again, NULL) != LY_OK || !again.complete ||
	    again.consumed != req.consumed || strcmp(again.path, req.path) != 0)
		abort();
	return 0;
}
