/*
 * spiffeid.c: SPIFFE ID and trust domain parsing, see spiffeid.h.
 *
 * The grammar is the SPIFFE-ID standard's, applied byte by byte:
 *
 *   id     = "spiffe://" td [ path ]            (lower-case scheme only)
 *   td     = 1*255( a-z / 0-9 / "." / "-" / "_" )          (§2.1, §2.3)
 *   path   = 1*( "/" segment )                              (§2.2)
 *   segment= 1*( a-z / A-Z / 0-9 / "." / "-" / "_" ), not "." or ".."
 *
 * so there is no room for a port, userinfo, query, fragment or a
 * percent-encoded byte, and nothing is ever decoded or case-folded: an ID
 * that is not already in canonical form is refused. Offsets in messages are
 * byte offsets into the whole input.
 */
#include "spiffeid.h"

#include <string.h>
#include <strings.h>

#define SCHEME "spiffe://"
#define SCHEME_LEN (sizeof(SCHEME) - 1)

static bool
td_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool
path_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	    c == '-' || c == '_';
}

/* Renders a byte for a message: 'c' when printable, else 0xNN. */
static void
show_byte(unsigned char c, char out[8])
{
	static const char hex[] = "0123456789abcdef";
	if (c >= 0x21 && c <= 0x7e) {
		out[0] = '\'';
		out[1] = (char)c;
		out[2] = '\'';
		out[3] = '\0';
	} else {
		out[0] = '0';
		out[1] = 'x';
		out[2] = hex[c >> 4];
		out[3] = hex[c & 0x0f];
		out[4] = '\0';
	}
}

/*
 * Names the rule a byte outside the allowed set breaks, in `where` ("trust
 * domain" or "path"). The URI delimiters get their own rule so the message
 * says what the input was trying to be.
 */
static ly_status
bad_char(struct ly_error *err, const char *where, unsigned char c, size_t off)
{
	char shown[8];
	show_byte(c, shown);
	switch (c) {
	case '%':
		return ly_error_set(err, LY_E_INVALID, "%s contains percent-encoding ('%%') at offset %zu",
		    where, off);
	case '?':
		return ly_error_set(err, LY_E_INVALID, "%s contains a query ('?') at offset %zu", where, off);
	case '#':
		return ly_error_set(err, LY_E_INVALID, "%s contains a fragment ('#') at offset %zu", where,
		    off);
	default:
		break;
	}
	if (strcmp(where, "trust domain") == 0) {
		if (c == ':')
			return ly_error_set(err, LY_E_INVALID,
			    "trust domain contains a port (':') at offset %zu", off);
		if (c == '@')
			return ly_error_set(err, LY_E_INVALID,
			    "trust domain contains userinfo ('@') at offset %zu", off);
		if (c >= 'A' && c <= 'Z')
			return ly_error_set(err, LY_E_INVALID,
			    "trust domain contains upper-case character %s at offset %zu", shown, off);
	}
	return ly_error_set(err, LY_E_INVALID, "%s contains invalid character %s at offset %zu", where,
	    shown, off);
}

/*
 * Checks the trust domain name at s[start, end) (offsets into the whole
 * input for messages). Length first: a cap is checked before any work.
 */
static ly_status
check_td(const char *s, size_t start, size_t end, struct ly_error *err)
{
	size_t n = end - start;
	if (n == 0)
		return ly_error_set(err, LY_E_INVALID, "trust domain is empty");
	if (n > LY_TRUST_DOMAIN_MAX)
		return ly_error_set(err, LY_E_LIMIT, "trust domain is longer than %d bytes",
		    LY_TRUST_DOMAIN_MAX);
	for (size_t i = start; i < end; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!td_char_ok(c))
			return bad_char(err, "trust domain", c, i);
	}
	return LY_OK;
}

/* Checks the path at s[start, end): empty, or "/seg" repeated. */
static ly_status
check_path(const char *s, size_t start, size_t end, struct ly_error *err)
{
	size_t i = start;
	if (i < end && s[i] != '/')
		return ly_error_set(err, LY_E_INVALID, "path does not start with '/' at offset %zu", i);
	while (i < end) {
		/* s[i] == '/' here. */
		size_t seg = i + 1;
		size_t j = seg;
		while (j < end && s[j] != '/') {
			unsigned char c = (unsigned char)s[j];
			if (!path_char_ok(c))
				return bad_char(err, "path", c, j);
			j++;
		}
		size_t seglen = j - seg;
		if (seglen == 0) {
			if (j == end)
				return ly_error_set(err, LY_E_INVALID, "path has a trailing '/'");
			return ly_error_set(err, LY_E_INVALID,
			    "path contains an empty segment ('//') at offset %zu", i);
		}
		if (seglen == 1 && s[seg] == '.')
			return ly_error_set(err, LY_E_INVALID, "path segment is '.' at offset %zu", seg);
		if (seglen == 2 && s[seg] == '.' && s[seg + 1] == '.')
			return ly_error_set(err, LY_E_INVALID, "path segment is '..' at offset %zu", seg);
		i = j;
	}
	return LY_OK;
}

static void
id_clear(struct ly_spiffe_id *out)
{
	out->id[0] = '\0';
	out->td_end = 0;
	out->trust_domain[0] = '\0';
}

ly_status
ly_spiffe_id_parse(const char *s, size_t len, struct ly_spiffe_id *out, struct ly_error *err)
{
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "SPIFFE ID: no output");
	if (s == NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "SPIFFE ID is missing");
		goto out;
	}
	/* §2.3: all components count, "spiffe://" included. */
	if (len > LY_SPIFFE_ID_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "SPIFFE ID is %zu bytes, over the %d-byte limit", len,
		    LY_SPIFFE_ID_MAX);
		goto out;
	}
	const char *nul = memchr(s, '\0', len);
	if (nul != NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "SPIFFE ID contains a NUL byte at offset %zu",
		    (size_t)(nul - s));
		goto out;
	}
	/* §2: the scheme is "spiffe"; we accept only its canonical lower case. */
	if (len < SCHEME_LEN || memcmp(s, SCHEME, SCHEME_LEN) != 0) {
		if (len >= SCHEME_LEN && strncasecmp(s, SCHEME, SCHEME_LEN) == 0)
			rc = ly_error_set(err, LY_E_INVALID, "scheme is not lower-case 'spiffe://'");
		else
			rc = ly_error_set(err, LY_E_INVALID, "scheme is not 'spiffe://'");
		goto out;
	}
	size_t td_end = SCHEME_LEN;
	while (td_end < len && s[td_end] != '/')
		td_end++;
	rc = check_td(s, SCHEME_LEN, td_end, err);
	if (rc != LY_OK)
		goto out;
	rc = check_path(s, td_end, len, err);
	if (rc != LY_OK)
		goto out;

	/* memmove: callers may re-parse out->id into the same struct. */
	size_t tdlen = td_end - SCHEME_LEN;
	memmove(out->trust_domain, s + SCHEME_LEN, tdlen);
	out->trust_domain[tdlen] = '\0';
	memmove(out->id, s, len);
	out->id[len] = '\0';
	out->td_end = td_end;
	return LY_OK;
out:
	id_clear(out);
	return rc;
}

ly_status
ly_spiffe_id_parse_str(const char *s, struct ly_spiffe_id *out, struct ly_error *err)
{
	/* Bounded scan: one byte over the cap is enough to refuse. */
	size_t len = s != NULL ? strnlen(s, LY_SPIFFE_ID_MAX + 1) : 0;
	if (s != NULL && len > LY_SPIFFE_ID_MAX) {
		if (out != NULL)
			id_clear(out);
		return ly_error_set(err, LY_E_LIMIT, "SPIFFE ID is over the %d-byte limit", LY_SPIFFE_ID_MAX);
	}
	return ly_spiffe_id_parse(s, len, out, err);
}

ly_status
ly_trust_domain_parse(const char *s, bool allow_id_form, char *out, struct ly_error *err)
{
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "trust domain: no output");
	out[0] = '\0';
	if (s == NULL)
		return ly_error_set(err, LY_E_INVALID, "trust domain is missing");

	if (strncasecmp(s, SCHEME, SCHEME_LEN) == 0) {
		if (!allow_id_form)
			return ly_error_set(err, LY_E_INVALID,
			    "trust domain must be a bare name, not a 'spiffe://' ID");
		struct ly_spiffe_id id;
		rc = ly_spiffe_id_parse_str(s, &id, err);
		if (rc != LY_OK)
			return rc;
		if (!ly_spiffe_id_is_trust_domain_id(&id))
			return ly_error_set(err, LY_E_INVALID, "trust domain ID has a path ('%s')",
			    ly_spiffe_id_path(&id));
		memcpy(out, id.trust_domain, strlen(id.trust_domain) + 1);
		return LY_OK;
	}
	size_t len = strnlen(s, LY_TRUST_DOMAIN_MAX + 1);
	rc = check_td(s, 0, len, err);
	if (rc != LY_OK)
		return rc;
	memcpy(out, s, len);
	out[len] = '\0';
	return LY_OK;
}

const char *
ly_spiffe_id_path(const struct ly_spiffe_id *id)
{
	return id->id + id->td_end;
}

bool
ly_spiffe_id_is_trust_domain_id(const struct ly_spiffe_id *id)
{
	return id->id[id->td_end] == '\0';
}

bool
ly_spiffe_id_member_of(const struct ly_spiffe_id *id, const char *td)
{
	if (id == NULL || td == NULL || id->trust_domain[0] == '\0')
		return false;
	return strcmp(id->trust_domain, td) == 0;
}

bool
ly_spiffe_id_equal(const struct ly_spiffe_id *a, const struct ly_spiffe_id *b)
{
	if (a == NULL || b == NULL || a->id[0] == '\0')
		return false;
	return strcmp(a->id, b->id) == 0;
}

ly_status
ly_spiffe_id_from_parts(const char *td, const char *path, struct ly_spiffe_id *out, struct ly_error *err)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];
	char buf[LY_SPIFFE_ID_MAX + 1];
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "SPIFFE ID: no output");
	id_clear(out);
	rc = ly_trust_domain_parse(td, false, name, err);
	if (rc != LY_OK)
		return rc;
	if (path == NULL)
		path = "";
	size_t tdlen = strlen(name);
	size_t plen = strnlen(path, LY_SPIFFE_ID_MAX + 1);
	if (SCHEME_LEN + tdlen + plen > LY_SPIFFE_ID_MAX)
		return ly_error_set(err, LY_E_LIMIT, "SPIFFE ID would be over the %d-byte limit",
		    LY_SPIFFE_ID_MAX);
	if (plen > 0 && path[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "path does not start with '/'");
	memcpy(buf, SCHEME, SCHEME_LEN);
	memcpy(buf + SCHEME_LEN, name, tdlen);
	memcpy(buf + SCHEME_LEN + tdlen, path, plen);
	return ly_spiffe_id_parse(buf, SCHEME_LEN + tdlen + plen, out, err);
}

/* True when `path` is `dir` (no trailing '/') or below it, segment-wise. */
static bool
path_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

bool
ly_spiffe_id_is_reserved(const struct ly_spiffe_id *id)
{
	return id != NULL && path_under(ly_spiffe_id_path(id), LY_RESERVED_PATH);
}

/* An agent ID: LY_AGENT_ID_PATH and at least one segment after it. */
static bool
is_agent_path(const char *path)
{
	size_t n = strlen(LY_AGENT_ID_PATH);
	return strncmp(path, LY_AGENT_ID_PATH, n) == 0 && path[n] != '\0';
}

/* Below one of the attestors' own agent namespaces (server/attest.h). */
static bool
is_attestor_path(const char *path)
{
	static const char *const attestors[] = { "join_token", "x509pop", "k8s_psat" };
	const char *rest = path + strlen(LY_AGENT_ID_PATH);

	for (size_t i = 0; i < sizeof(attestors) / sizeof(attestors[0]); i++) {
		if (path_under(rest, attestors[i]))
			return true;
	}
	return false;
}

ly_status
ly_spiffe_id_check_use(const struct ly_spiffe_id *id, enum ly_id_use use, struct ly_error *err)
{
	if (id == NULL || id->id[0] == '\0')
		return ly_error_set(err, LY_E_INTERNAL, "SPIFFE ID: nothing to check");
	if (!ly_spiffe_id_is_reserved(id))
		return LY_OK;
	const char *path = ly_spiffe_id_path(id);
	bool server = strcmp(path, LY_SERVER_ID_PATH) == 0;
	bool agent = is_agent_path(path);
	switch (use) {
	case LY_ID_GRANTED:
		return ly_error_set(err, LY_E_INVALID,
		    "the path is in Lanyard's reserved namespace %s/ (the server's and the agents' own IDs): an "
		    "entry may not grant it",
		    LY_RESERVED_PATH);
	case LY_ID_PARENT:
		if (server || agent)
			return LY_OK;
		return ly_error_set(err, LY_E_INVALID,
		    "the path is in Lanyard's reserved namespace %s/ but names neither the server (%s) nor an "
		    "agent (%s...)",
		    LY_RESERVED_PATH, LY_SERVER_ID_PATH, LY_AGENT_ID_PATH);
	case LY_ID_JOIN_TOKEN:
		if (agent && !is_attestor_path(path))
			return LY_OK;
		return ly_error_set(err, LY_E_INVALID,
		    "the path is in Lanyard's reserved namespace %s/: a join token's agent may be named %sNAME, "
		    "but not the server nor an ID of the join_token, x509pop or k8s_psat attestors",
		    LY_RESERVED_PATH, LY_AGENT_ID_PATH);
	case LY_ID_AGENT:
		if (agent)
			return LY_OK;
		return ly_error_set(err, LY_E_INVALID,
		    "the path is in Lanyard's reserved namespace %s/ but is not an agent's (%s...)", LY_RESERVED_PATH,
		    LY_AGENT_ID_PATH);
	}
	return ly_error_set(err, LY_E_INTERNAL, "SPIFFE ID: unknown use %d", (int)use);
}
