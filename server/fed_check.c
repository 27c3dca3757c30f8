/*
 * fed_check.c: the pure checks of federation (federation.h): refresh
 * schedule, a bundle endpoint's answer, the endpoint's request routing.
 * No I/O; safe on any bytes (fuzzed: tests/fuzz/fuzz_fed_response.c,
 * fuzz_fed_request.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/httpmini.h"
#include "lib/x509svid.h"
#include "server/federation.h"

uint64_t
ly_fed_next_fetch_ms(uint64_t hint_s, unsigned jitter_permille)
{
	uint64_t hint = hint_s == 0 ? LY_FED_REFRESH_HINT_DEFAULT : hint_s;
	uint64_t ms = hint > UINT64_MAX / 1000 ? UINT64_MAX : hint * 1000;
	ms /= LY_FED_FETCH_ATTEMPTS_PER_HINT;
	if (ms < (uint64_t)LY_FED_FETCH_MIN_S * 1000)
		ms = (uint64_t)LY_FED_FETCH_MIN_S * 1000;
	if (ms > (uint64_t)LY_FED_FETCH_MAX_S * 1000)
		ms = (uint64_t)LY_FED_FETCH_MAX_S * 1000;
	if (jitter_permille > 1000)
		jitter_permille = 1000;
	/* Jitter only shortens: the hint is a most, never a least (Federation §4.1.2 via the bundle's hint). */
	uint64_t cut = ms / 100 * LY_FED_FETCH_JITTER_PCT / 1000 * jitter_permille;
	return ms - cut;
}

const char *
ly_fed_refusal_name(enum ly_fed_refusal r)
{
	static const char *const names[LY_FED_R_COUNT] = {
		[LY_FED_R_CONNECT] = "connect", [LY_FED_R_TIMEOUT] = "timeout", [LY_FED_R_TLS] = "tls",
		[LY_FED_R_HTTP] = "http", [LY_FED_R_OVERSIZED] = "oversized", [LY_FED_R_BUNDLE] = "bad_bundle",
		[LY_FED_R_DOMAIN] = "wrong_trust_domain", [LY_FED_R_STALE] = "stale_sequence",
		[LY_FED_R_STORE] = "store", [LY_FED_R_NO_TRUST] = "no_trust_bundle",
	};
	return (unsigned)r < LY_FED_R_COUNT ? names[r] : "unknown";
}

/* Case-insensitive ASCII compare of a header name. */
static bool
name_is(const char *p, size_t n, const char *want)
{
	size_t wl = strlen(want);
	if (n != wl)
		return false;
	for (size_t i = 0; i < n; i++) {
		char a = p[i], b = want[i];
		if (a >= 'A' && a <= 'Z')
			a = (char)(a - 'A' + 'a');
		if (a != b)
			return false;
	}
	return true;
}

/*
 * Splits an HTTP/1.x answer into status and body. Only what a bundle
 * endpoint's answer needs: "HTTP/1.0|1.1 DDD reason" CRLF, header lines
 * "name: value" CRLF, CRLF; Content-Length checked against the body.
 */
static ly_status
split_response(const uint8_t *buf, size_t len, int *status, size_t *body_off, struct ly_error *err)
{
	const char *s = (const char *)buf;
	size_t i = 0, line_end;
	bool have_cl = false;
	unsigned long long cl = 0;

	if (len < 13 || (memcmp(s, "HTTP/1.1 ", 9) != 0 && memcmp(s, "HTTP/1.0 ", 9) != 0))
		return ly_error_set(err, LY_E_INVALID, "not an HTTP/1.x status line");
	if (s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
	    (s[12] != ' ' && s[12] != '\r'))
		return ly_error_set(err, LY_E_INVALID, "malformed status code");
	*status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	for (size_t lines = 0;; lines++) {
		/* Find CRLF from i; refuse bare CR/LF and control bytes in the head. */
		line_end = i;
		while (line_end + 1 < len && !(s[line_end] == '\r' && s[line_end + 1] == '\n')) {
			unsigned char c = (unsigned char)s[line_end];
			if (c == '\r' || c == '\n' || (c < 0x20 && c != '\t') || c == 0x7f)
				return ly_error_set(err, LY_E_INVALID, "control byte in the answer's head");
			line_end++;
		}
		if (line_end + 1 >= len)
			return ly_error_set(err, LY_E_INVALID, "the answer's head does not end");
		if (line_end - i > LY_HTTP_REQUEST_MAX || lines > LY_HTTP_HEADERS_MAX)
			return ly_error_set(err, LY_E_LIMIT, "the answer's head is too large");
		if (lines > 0) {
			if (line_end == i) {
				*body_off = line_end + 2;
				break;
			}
			const char *colon = memchr(s + i, ':', line_end - i);
			if (colon == NULL || colon == s + i || s[i] == ' ' || s[i] == '\t')
				return ly_error_set(err, LY_E_INVALID, "malformed header line");
			size_t nlen = (size_t)(colon - (s + i));
			const char *v = colon + 1;
			while (v < s + line_end && (*v == ' ' || *v == '\t'))
				v++;
			size_t vlen = (size_t)(s + line_end - v);
			if (name_is(s + i, nlen, "transfer-encoding"))
				return ly_error_set(err, LY_E_INVALID, "Transfer-Encoding is not accepted");
			if (name_is(s + i, nlen, "content-length")) {
				if (have_cl)
					return ly_error_set(err, LY_E_INVALID, "two Content-Length headers");
				have_cl = true;
				cl = 0;
				size_t d = 0;
				while (d < vlen && v[d] >= '0' && v[d] <= '9' && d < 12)
					cl = cl * 10 + (unsigned long long)(v[d++] - '0');
				while (d < vlen && (v[d] == ' ' || v[d] == '\t'))
					d++;
				if (d == 0 || d != vlen)
					return ly_error_set(err, LY_E_INVALID, "malformed Content-Length");
			}
		}
		i = line_end + 2;
	}
	if (have_cl && cl != len - *body_off)
		return ly_error_set(err, LY_E_INVALID, "Content-Length %llu but %zu bytes of body", cl, len - *body_off);
	return LY_OK;
}

/* Every X.509 authority that names a SPIFFE ID names `td` (never take another domain's CA as this one's). */
static ly_status
check_domain(const struct ly_bundle *b, const char *td, struct ly_error *err)
{
	for (size_t i = 0; i < ly_bundle_x509_authority_count(b); i++) {
		const struct ly_buf *der = ly_bundle_x509_authority(b, i);
		const unsigned char *p = der->data;
		X509 *x = d2i_X509(NULL, &p, (long)der->len);
		if (x == NULL)
			return ly_error_set(err, LY_E_INVALID, "authority %zu does not parse", i);
		GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
		bool found = false;
		struct ly_spiffe_id id;
		ly_status rc = LY_OK;
		if (gens != NULL)
			rc = ly_san_spiffe_id(gens, &found, &id, NULL, err);
		GENERAL_NAMES_free(gens);
		X509_free(x);
		if (rc != LY_OK)
			return ly_error_wrap(err, LY_E_INVALID, "authority %zu", i);
		if (found && strcmp(id.trust_domain, td) != 0)
			return ly_error_set(err, LY_E_UNTRUSTED, "authority %zu belongs to trust domain %s, not %s", i,
			    id.trust_domain, td);
	}
	return LY_OK;
}

ly_status
ly_fed_check_response(const char *td, const uint8_t *buf, size_t len, const struct ly_bundle *previous,
    struct ly_bundle **out, enum ly_fed_refusal *why, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	int status = 0;
	size_t body = 0;
	ly_status rc;

	*out = NULL;
	*why = LY_FED_R_HTTP;
	if (len > LY_FED_RESPONSE_MAX) {
		*why = LY_FED_R_OVERSIZED;
		return ly_error_set(err, LY_E_LIMIT, "answer over %d bytes", LY_FED_RESPONSE_MAX);
	}
	if ((rc = split_response(buf, len, &status, &body, err)) != LY_OK) {
		if (rc == LY_E_LIMIT)
			*why = LY_FED_R_OVERSIZED;
		return rc;
	}
	if (status != 200)
		return ly_error_set(err, LY_E_INVALID, "HTTP status %d", status);
	if (len - body > LY_JWKS_MAX) {
		*why = LY_FED_R_OVERSIZED;
		return ly_error_set(err, LY_E_LIMIT, "bundle over %d bytes", LY_JWKS_MAX);
	}
	*why = LY_FED_R_BUNDLE;
	if ((rc = ly_bundle_parse_jwks(td, (const char *)buf + body, len - body, &b, err)) != LY_OK)
		return rc;
	if ((rc = check_domain(b, td, err)) != LY_OK) {
		*why = rc == LY_E_UNTRUSTED ? LY_FED_R_DOMAIN : LY_FED_R_BUNDLE;
		ly_bundle_free(b);
		return rc;
	}
	if (previous != NULL && ly_bundle_sequence(b) != 0 && ly_bundle_sequence(b) < ly_bundle_sequence(previous)) {
		*why = LY_FED_R_STALE;
		rc = ly_error_set(err, LY_E_INVALID, "spiffe_sequence %llu is below the %llu we hold",
		    (unsigned long long)ly_bundle_sequence(b), (unsigned long long)ly_bundle_sequence(previous));
		ly_bundle_free(b);
		return rc;
	}
	*out = b;
	return LY_OK;
}

enum ly_fed_route
ly_fed_route_request(const char *buf, size_t len)
{
	struct ly_http_request req;
	ly_status rc = ly_http_parse_request(buf, len, &req, NULL);
	if (rc == LY_E_LIMIT)
		return LY_FED_ROUTE_TOO_LARGE;
	if (rc != LY_OK)
		return LY_FED_ROUTE_BAD_REQUEST;
	if (!req.complete)
		return LY_FED_ROUTE_NEED_MORE;
	if (strcmp(req.path, "/") != 0)
		return LY_FED_ROUTE_NOT_FOUND;
	if (strcmp(req.method, "GET") != 0)
		return LY_FED_ROUTE_METHOD;
	return LY_FED_ROUTE_BUNDLE;
}

void
ly_fed_route_status(enum ly_fed_route r, int *code, const char **reason)
{
	switch (r) {
	case LY_FED_ROUTE_BUNDLE:
		*code = 200, *reason = "OK";
		break;
	case LY_FED_ROUTE_NOT_FOUND:
		*code = 404, *reason = "Not Found";
		break;
	case LY_FED_ROUTE_METHOD:
		*code = 405, *reason = "Method Not Allowed";
		break;
	case LY_FED_ROUTE_TOO_LARGE:
		*code = 431, *reason = "Request Header Fields Too Large";
		break;
	case LY_FED_ROUTE_BAD_REQUEST:
	case LY_FED_ROUTE_NEED_MORE:
	default:
		*code = 400, *reason = "Bad Request";
		break;
	}
}
