/* httpmini.c: strict HTTP/1.x request head parser (see httpmini.h). */
#include "httpmini.h"

#include <string.h>

/* RFC 9110 §5.6.2 tchar. */
static bool
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Finds the next CRLF at or after `pos`; refuses a bare LF or CR. Returns
 * the index of '\r', or `len` when no complete line is there yet. */
static ly_status
find_eol(const char *buf, size_t len, size_t pos, size_t *eol, struct ly_error *err)
{
	for (size_t i = pos; i < len; i++) {
		if (buf[i] == '\n')
			return ly_error_set(err, LY_E_INVALID, "http: bare LF (RFC 9112 §2.2)");
		if (buf[i] == '\r') {
			if (i + 1 == len)
				break;
			if (buf[i + 1] != '\n')
				return ly_error_set(err, LY_E_INVALID, "http: bare CR (RFC 9112 §2.2)");
			*eol = i;
			return LY_OK;
		}
	}
	*eol = len;
	return LY_OK;
}

static ly_status
parse_request_line(const char *p, size_t n, struct ly_http_request *req, struct ly_error *err)
{
	size_t i = 0, m = 0;
	while (i < n && p[i] != ' ') {
		if (!is_tchar((unsigned char)p[i]))
			return ly_error_set(err, LY_E_INVALID, "http: method is not a token (RFC 9110 §9.1)");
		if (m == LY_HTTP_METHOD_MAX)
			return ly_error_set(err, LY_E_INVALID, "http: method longer than %d", LY_HTTP_METHOD_MAX);
		req->method[m++] = p[i++];
	}
	req->method[m] = '\0';
	if (m == 0 || i == n)
		return ly_error_set(err, LY_E_INVALID, "http: request line needs method SP target SP version");
	i++;
	if (i == n || p[i] != '/')
		return ly_error_set(err, LY_E_INVALID, "http: target must be origin-form (RFC 9112 §3.2.1)");
	size_t t = 0;
	bool in_query = false;
	while (i < n && p[i] != ' ') {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x21 || c > 0x7e)
			return ly_error_set(err, LY_E_INVALID, "http: target has a byte outside visible ASCII");
		if (c == '#')
			return ly_error_set(err, LY_E_INVALID, "http: target has a fragment");
		if (c == '?')
			in_query = true;
		if (!in_query) {
			if (t == LY_HTTP_PATH_MAX)
				return ly_error_set(err, LY_E_LIMIT, "http: path longer than %d", LY_HTTP_PATH_MAX);
			req->path[t++] = (char)c;
		}
		i++;
	}
	req->path[t] = '\0';
	if (i == n)
		return ly_error_set(err, LY_E_INVALID, "http: request line needs method SP target SP version");
	i++;
	static const char vpfx[] = "HTTP/1.";
	if (n - i != sizeof(vpfx) || memcmp(p + i, vpfx, sizeof(vpfx) - 1) != 0 ||
	    (p[n - 1] != '0' && p[n - 1] != '1'))
		return ly_error_set(err, LY_E_INVALID, "http: version must be HTTP/1.0 or HTTP/1.1");
	req->version_minor = p[n - 1] - '0';
	return LY_OK;
}

static ly_status
check_header(const char *p, size_t n, struct ly_error *err)
{
	if (p[0] == ' ' || p[0] == '\t')
		return ly_error_set(err, LY_E_INVALID, "http: obsolete line folding (RFC 9112 §5.2)");
	size_t i = 0;
	while (i < n && p[i] != ':') {
		if (!is_tchar((unsigned char)p[i]))
			return ly_error_set(err, LY_E_INVALID, "http: header name is not a token (RFC 9110 §5.1)");
		i++;
	}
	if (i == 0 || i == n)
		return ly_error_set(err, LY_E_INVALID, "http: header line needs name \":\" value");
	for (i++; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return ly_error_set(err, LY_E_INVALID, "http: header value has a control byte (RFC 9110 §5.5)");
	}
	return LY_OK;
}

ly_status
ly_http_parse_request(const char *buf, size_t len, struct ly_http_request *req, struct ly_error *err)
{
	memset(req, 0, sizeof(*req));
	if (buf == NULL && len != 0)
		return ly_error_set(err, LY_E_INVALID, "http: no buffer");
	size_t scan = len > LY_HTTP_REQUEST_MAX ? LY_HTTP_REQUEST_MAX : len;
	size_t pos = 0, eol = 0;
	bool first = true;
	for (;;) {
		LY_TRY(find_eol(buf, scan, pos, &eol, err));
		if (eol == scan) {
			/* No full line yet: more may come unless the cap is reached. */
			if (scan == LY_HTTP_REQUEST_MAX)
				return ly_error_set(err, LY_E_LIMIT, "http: request head over %d bytes",
						    LY_HTTP_REQUEST_MAX);
			/* A NUL never belongs in a head: refuse it before waiting for more. */
			if (memchr(buf + pos, '\0', scan - pos) != NULL)
				return ly_error_set(err, LY_E_INVALID, "http: NUL byte in request head");
			return LY_OK;
		}
		if (first) {
			if (eol == pos)
				return ly_error_set(err, LY_E_INVALID, "http: empty request line");
			LY_TRY(parse_request_line(buf + pos, eol - pos, req, err));
			first = false;
		} else if (eol == pos) {
			req->complete = true;
			req->consumed = eol + 2;
			return LY_OK;
		} else {
			if (req->header_count == LY_HTTP_HEADERS_MAX)
				return ly_error_set(err, LY_E_LIMIT, "http: more than %d headers", LY_HTTP_HEADERS_MAX);
			LY_TRY(check_header(buf + pos, eol - pos, err));
			req->header_count++;
		}
		pos = eol + 2;
	}
}
