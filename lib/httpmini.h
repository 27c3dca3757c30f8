/*
 * httpmini.h: a strict, bounded, non-allocating parser for the request line
 * and headers of an HTTP/1.x request (RFC 9112 §3, §5), for the health and
 * metrics listener. Pure: no I/O, no allocation, safe on any bytes.
 *
 *   struct ly_http_request req;
 *   if (ly_http_parse_request(buf, len, &req, &err) != LY_OK) -> answer 400/431
 *   else if (!req.complete) -> read more (up to LY_HTTP_REQUEST_MAX)
 *   else -> dispatch on req.method and req.path
 *
 * Accepted: METHOD SP origin-form SP "HTTP/1.0"|"HTTP/1.1" CRLF, then up to
 * LY_HTTP_HEADERS_MAX "name: value" CRLF lines, then CRLF. Refused: bare LF,
 * obsolete line folding (RFC 9112 §5.2), control bytes, a target that is not
 * origin-form (RFC 9112 §3.2.1), a header name that is not a token
 * (RFC 9110 §5.1), more than LY_HTTP_REQUEST_MAX bytes before the end of the
 * headers (LY_E_LIMIT). A request body is never read: the listener only
 * serves GET and closes after each answer.
 *
 * Ownership: struct ly_http_request is caller-owned and holds copies (no
 * pointers into the input).
 */
#ifndef LANYARD_HTTPMINI_H
#define LANYARD_HTTPMINI_H

#include <stdbool.h>
#include <stddef.h>

#include "caps.h"
#include "error.h"

struct ly_http_request {
	bool complete;                       /* the empty line ending the headers was seen */
	char method[LY_HTTP_METHOD_MAX + 1]; /* "GET" */
	char path[LY_HTTP_PATH_MAX + 1];     /* origin-form path, query removed */
	int version_minor;                   /* 0 or 1 */
	size_t header_count;
	size_t consumed; /* bytes up to and including the final CRLF when complete */
};

/*
 * Parses `len` bytes received so far. LY_OK with req->complete == false
 * means "well-formed so far, send more"; LY_OK with complete == true means a
 * whole request head. LY_E_INVALID for a malformed request, LY_E_LIMIT when
 * the head is, or would have to be, longer than LY_HTTP_REQUEST_MAX bytes or
 * has more than LY_HTTP_HEADERS_MAX headers.
 */
ly_status ly_http_parse_request(const char *buf, size_t len, struct ly_http_request *req,
				struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_HTTPMINI_H */
