/*
 * entry.c: selectors and registration entries, see entry.h.
 *
 * Parsing is table-driven: each selector type lists its keys and the kind
 * of argument each key takes; each kind has one checker that works on
 * (pointer, length) and names its rule. Checkers never echo the argument
 * (a join token is a secret); the caller wraps the message with a
 * sanitized, bounded rendering of the selector instead.
 */
#include "entry.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "spiffeid.h"

enum kind {
	K_UINT32,
	K_POSIX_NAME,
	K_ABS_PATH,
	K_SHA256,
	K_DNS_LABEL,
	K_DNS_SUBDOMAIN,
	K_UUID,
	K_K8S_LABEL,
	K_IMAGE,
	K_CLUSTER,
	K_CN,
	K_FINGERPRINT,
	K_SERIAL,
	K_HOSTNAME,
	K_TOKEN,
};

struct sel_key {
	const char *key;
	enum kind kind;
};

struct sel_type {
	const char *type;
	bool node;
	const struct sel_key *keys; /* NULL: the value is one argument of `bare` kind */
	size_t n_keys;
	enum kind bare;
	const char *known; /* the keys, for messages */
};

/* SPEC §5: workload selectors. */
static const struct sel_key unix_keys[] = {
	{ "uid", K_UINT32 },
	{ "gid", K_UINT32 },
	{ "user", K_POSIX_NAME },
	{ "group", K_POSIX_NAME },
	{ "path", K_ABS_PATH },
	{ "sha256", K_SHA256 },
};

static const struct sel_key k8s_keys[] = {
	{ "ns", K_DNS_LABEL },
	{ "sa", K_DNS_SUBDOMAIN },
	{ "pod-name", K_DNS_SUBDOMAIN },
	{ "pod-uid", K_UUID },
	{ "pod-label", K_K8S_LABEL },
	{ "container-name", K_DNS_LABEL },
	{ "container-image", K_IMAGE },
	{ "node-name", K_DNS_SUBDOMAIN },
};

/* SPEC §6: node selectors. */
static const struct sel_key psat_keys[] = {
	{ "cluster", K_CLUSTER },
	{ "agent_ns", K_DNS_LABEL },
	{ "agent_sa", K_DNS_SUBDOMAIN },
	{ "agent_node_name", K_DNS_SUBDOMAIN },
	{ "agent_node_uid", K_UUID },
};

static const struct sel_key x509pop_keys[] = {
	{ "subject:cn", K_CN },
	{ "ca:fingerprint", K_FINGERPRINT },
	{ "serialnumber", K_SERIAL },
	{ "san:dns", K_HOSTNAME },
};

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

static const struct sel_type sel_types[] = {
	{ "unix", false, unix_keys, NKEYS(unix_keys), K_TOKEN, "uid, gid, user, group, path, sha256" },
	{ "k8s", false, k8s_keys, NKEYS(k8s_keys), K_TOKEN,
	    "ns, sa, pod-name, pod-uid, pod-label, container-name, container-image, node-name" },
	{ "k8s_psat", true, psat_keys, NKEYS(psat_keys), K_TOKEN,
	    "cluster, agent_ns, agent_sa, agent_node_name, agent_node_uid" },
	{ "x509pop", true, x509pop_keys, NKEYS(x509pop_keys), K_TOKEN,
	    "subject:cn, ca:fingerprint, serialnumber, san:dns" },
	{ "join_token", true, NULL, 0, K_TOKEN, "" },
};

#define KNOWN_TYPES "unix, k8s, k8s_psat, x509pop, join_token"

/* Per-kind lengths that come from the producing system: lib/caps.h, "selector values". */

static const struct sel_type *
find_type(const char *t, size_t n)
{
	for (size_t i = 0; i < NKEYS(sel_types); i++) {
		if (strlen(sel_types[i].type) == n && memcmp(sel_types[i].type, t, n) == 0)
			return &sel_types[i];
	}
	return NULL;
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_lower_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f');
}

static bool
is_lower_alnum(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z');
}

static bool
is_alnum(unsigned char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* [A-Za-z0-9._-]: POSIX portable filename characters. */
static bool
is_portable(unsigned char c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '-';
}

/*
 * Finds the first byte that is not valid UTF-8 or is a control character
 * (C0, DEL or C1). Returns true when all is well; else sets *off and
 * *control (true: a control character, false: bad UTF-8).
 */
static bool
text_ok(const unsigned char *s, size_t n, size_t *off, bool *control)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		*off = i;
		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f) {
				*control = true;
				return false;
			}
			i++;
			continue;
		}
		*control = false;
		size_t need;
		uint32_t cp;
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1fu;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0fu;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07u;
		} else {
			return false;
		}
		if (n - i - 1 < need)
			return false;
		for (size_t k = 1; k <= need; k++) {
			unsigned char cc = s[i + k];
			if ((cc & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (cc & 0x3fu);
		}
		/* Overlong forms, surrogates, beyond U+10FFFF. */
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) ||
		    cp > 0x10ffff)
			return false;
		if (cp >= 0x80 && cp <= 0x9f) {
			*control = true;
			return false;
		}
		i += need + 1;
	}
	return true;
}

/* ---- one checker per kind: `what` is "type:key" for messages ---- */

static ly_status
check_uint32(const char *what, const char *a, size_t n, struct ly_error *err)
{
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)a[i]))
			return ly_error_set(err, LY_E_INVALID,
			    "%s must be a decimal number (digits only, no sign)", what);
	}
	if (n > 1 && a[0] == '0')
		return ly_error_set(err, LY_E_INVALID, "%s must not have leading zeros", what);
	uint64_t v = 0;
	for (size_t i = 0; i < n && v <= UINT32_MAX; i++)
		v = v * 10 + (uint64_t)(a[i] - '0');
	if (n > 10 || v > UINT32_MAX)
		return ly_error_set(err, LY_E_INVALID, "%s is out of range (0..4294967295)", what);
	return LY_OK;
}

static ly_status
check_posix_name(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n > LY_SEL_POSIX_NAME_MAX)
		return ly_error_set(err, LY_E_INVALID, "%s is longer than %d bytes", what, LY_SEL_POSIX_NAME_MAX);
	if (a[0] == '-')
		return ly_error_set(err, LY_E_INVALID, "%s must not start with '-'", what);
	for (size_t i = 0; i < n; i++) {
		if (!is_portable((unsigned char)a[i]))
			return ly_error_set(err, LY_E_INVALID,
			    "%s must use POSIX portable name characters [A-Za-z0-9._-]", what);
	}
	return LY_OK;
}

/* An absolute, canonical path: what readlink(/proc/PID/exe) returns. */
static ly_status
check_abs_path(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (a[0] != '/')
		return ly_error_set(err, LY_E_INVALID, "%s must be an absolute path", what);
	if (n > LY_SELECTOR_PATH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s is longer than %d bytes", what, LY_SELECTOR_PATH_MAX);
	if (a[n - 1] == '/')
		return ly_error_set(err, LY_E_INVALID, "%s must not end with '/'", what);
	size_t i = 0;
	while (i < n) {
		size_t seg = i + 1;
		size_t j = seg;
		while (j < n && a[j] != '/')
			j++;
		size_t len = j - seg;
		if (len == 0)
			return ly_error_set(err, LY_E_INVALID, "%s contains an empty segment ('//')", what);
		if (len == 1 && a[seg] == '.')
			return ly_error_set(err, LY_E_INVALID, "%s contains a '.' segment", what);
		if (len == 2 && a[seg] == '.' && a[seg + 1] == '.')
			return ly_error_set(err, LY_E_INVALID, "%s contains a '..' segment", what);
		i = j;
	}
	return LY_OK;
}

static bool
all_lower_hex(const char *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!is_lower_hex((unsigned char)a[i]))
			return false;
	}
	return true;
}

static ly_status
check_sha256(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n != 64 || !all_lower_hex(a, n))
		return ly_error_set(err, LY_E_INVALID, "%s must be 64 lower-case hex digits", what);
	return LY_OK;
}

/* [a-z0-9]([-a-z0-9]*[a-z0-9])? of any length (the caller bounds it). */
static bool
dns1123_label_ok(const char *a, size_t n)
{
	if (n == 0 || !is_lower_alnum((unsigned char)a[0]) || !is_lower_alnum((unsigned char)a[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		if (!is_lower_alnum(c) && c != '-')
			return false;
	}
	return true;
}

static ly_status
check_dns_label(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n > LY_SEL_DNS_LABEL_MAX)
		return ly_error_set(err, LY_E_INVALID, "%s is longer than %d bytes (DNS-1123 label)", what,
		    LY_SEL_DNS_LABEL_MAX);
	if (!dns1123_label_ok(a, n))
		return ly_error_set(err, LY_E_INVALID,
		    "%s must be a DNS-1123 label: [a-z0-9-], starting and ending with [a-z0-9]", what);
	return LY_OK;
}

static bool
dns1123_subdomain_ok(const char *a, size_t n)
{
	size_t i = 0;
	for (;;) {
		size_t j = i;
		while (j < n && a[j] != '.')
			j++;
		if (!dns1123_label_ok(a + i, j - i))
			return false;
		if (j == n)
			return true;
		i = j + 1;
	}
}

static ly_status
check_dns_subdomain(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n > LY_SEL_DNS_SUBDOMAIN_MAX)
		return ly_error_set(err, LY_E_INVALID, "%s is longer than %d bytes (DNS-1123 subdomain)", what,
		    LY_SEL_DNS_SUBDOMAIN_MAX);
	if (!dns1123_subdomain_ok(a, n))
		return ly_error_set(err, LY_E_INVALID,
		    "%s must be a DNS-1123 subdomain: dot-separated [a-z0-9-] labels starting and ending "
		    "with [a-z0-9]",
		    what);
	return LY_OK;
}

static ly_status
check_uuid(const char *what, const char *a, size_t n, struct ly_error *err)
{
	bool ok = n == LY_UUID_LEN;
	for (size_t i = 0; ok && i < n; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			ok = a[i] == '-';
		else
			ok = is_lower_hex((unsigned char)a[i]);
	}
	if (!ok)
		return ly_error_set(err, LY_E_INVALID, "%s must be a UUID (lower-case hex, 8-4-4-4-12)", what);
	return LY_OK;
}

/* Kubernetes label name and value: ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], <= 63. */
static bool
k8s_label_name_ok(const char *a, size_t n)
{
	if (n == 0 || n > LY_SEL_K8S_LABEL_NAME_MAX || !is_alnum((unsigned char)a[0]) ||
	    !is_alnum((unsigned char)a[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_portable((unsigned char)a[i]))
			return false;
	}
	return true;
}

static ly_status
check_k8s_label(const char *what, const char *a, size_t n, struct ly_error *err)
{
	const char *colon = memchr(a, ':', n);
	if (colon == NULL)
		return ly_error_set(err, LY_E_INVALID, "%s needs KEY:VALUE", what);
	size_t klen = (size_t)(colon - a);
	const char *v = colon + 1;
	size_t vlen = n - klen - 1;
	const char *slash = memchr(a, '/', klen);
	const char *name = a;
	size_t nlen = klen;
	if (slash != NULL) {
		size_t plen = (size_t)(slash - a);
		if (plen > LY_SEL_DNS_SUBDOMAIN_MAX || !dns1123_subdomain_ok(a, plen))
			return ly_error_set(err, LY_E_INVALID,
			    "%s key prefix must be a DNS-1123 subdomain of at most %d bytes", what,
			    LY_SEL_DNS_SUBDOMAIN_MAX);
		name = slash + 1;
		nlen = klen - plen - 1;
	}
	if (!k8s_label_name_ok(name, nlen))
		return ly_error_set(err, LY_E_INVALID,
		    "%s key name must be 1..63 of [A-Za-z0-9._-], starting and ending with [A-Za-z0-9]", what);
	/* Kubernetes allows an empty label value. */
	if (vlen > 0 && !k8s_label_name_ok(v, vlen))
		return ly_error_set(err, LY_E_INVALID,
		    "%s value must be 0..63 of [A-Za-z0-9._-], starting and ending with [A-Za-z0-9]", what);
	return LY_OK;
}

static ly_status
check_image(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n > LY_SEL_IMAGE_MAX)
		return ly_error_set(err, LY_E_INVALID, "%s is longer than %d bytes", what, LY_SEL_IMAGE_MAX);
	bool ok = is_alnum((unsigned char)a[0]);
	for (size_t i = 0; ok && i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		ok = is_portable(c) || c == '/' || c == ':' || c == '@';
	}
	if (!ok)
		return ly_error_set(err, LY_E_INVALID,
		    "%s must be an image reference: [A-Za-z0-9._/:@-], starting with [A-Za-z0-9]", what);
	return LY_OK;
}

static ly_status
check_cluster(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n > LY_K8S_CLUSTER_NAME_MAX)
		return ly_error_set(err, LY_E_INVALID, "%s is longer than %d bytes", what, LY_K8S_CLUSTER_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!is_portable((unsigned char)a[i]))
			return ly_error_set(err, LY_E_INVALID, "%s must use [A-Za-z0-9._-]", what);
	}
	return LY_OK;
}

/* UTF-8 and control characters were checked for the whole value already. */
static ly_status
check_cn(const char *what, const char *a, size_t n, struct ly_error *err)
{
	size_t chars = 0;
	for (size_t i = 0; i < n; i++) {
		if (((unsigned char)a[i] & 0xc0) != 0x80)
			chars++;
	}
	if (chars > LY_SEL_CN_MAX)
		return ly_error_set(err, LY_E_INVALID, "%s is longer than %d characters (X.520 ub-common-name)",
		    what, LY_SEL_CN_MAX);
	return LY_OK;
}

static ly_status
check_fingerprint(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if ((n != 40 && n != 64) || !all_lower_hex(a, n))
		return ly_error_set(err, LY_E_INVALID,
		    "%s must be 40 or 64 lower-case hex digits (SHA-1 or SHA-256)", what);
	return LY_OK;
}

static ly_status
check_serial(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n > LY_SEL_SERIAL_HEX_MAX || !all_lower_hex(a, n))
		return ly_error_set(err, LY_E_INVALID, "%s must be 1..%d lower-case hex digits", what,
		    LY_SEL_SERIAL_HEX_MAX);
	if (n > 1 && a[0] == '0')
		return ly_error_set(err, LY_E_INVALID, "%s must not have leading zeros", what);
	return LY_OK;
}

/* RFC 1123 §2.1 host name, with an optional leading "*." wildcard label. */
static ly_status
check_hostname(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n == 0)
		return ly_error_set(err, LY_E_INVALID, "%s is empty", what);
	if (n > LY_DNS_NAME_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s is longer than %d bytes", what, LY_DNS_NAME_MAX);
	size_t i = 0;
	if (n >= 2 && a[0] == '*' && a[1] == '.')
		i = 2;
	for (;;) {
		size_t j = i;
		while (j < n && a[j] != '.')
			j++;
		size_t len = j - i;
		if (len == 0)
			return ly_error_set(err, LY_E_INVALID, "%s has an empty label", what);
		if (len > LY_SEL_DNS_LABEL_MAX)
			return ly_error_set(err, LY_E_INVALID, "%s has a label longer than %d bytes", what,
			    LY_SEL_DNS_LABEL_MAX);
		if (a[i] == '-' || a[j - 1] == '-')
			return ly_error_set(err, LY_E_INVALID, "%s has a label starting or ending with '-'", what);
		for (size_t k = i; k < j; k++) {
			unsigned char c = (unsigned char)a[k];
			if (c == '*')
				return ly_error_set(err, LY_E_INVALID,
				    "%s may hold '*' only as the whole leftmost label", what);
			if (!is_alnum(c) && c != '-')
				return ly_error_set(err, LY_E_INVALID,
				    "%s must use letters, digits and '-' (LDH) in dot-separated labels", what);
		}
		if (j == n)
			return LY_OK;
		i = j + 1;
	}
}

static ly_status
check_token(const char *what, const char *a, size_t n, struct ly_error *err)
{
	if (n > LY_JOIN_TOKEN_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s is longer than %d bytes", what, LY_JOIN_TOKEN_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!is_portable((unsigned char)a[i]))
			return ly_error_set(err, LY_E_INVALID, "%s must use [A-Za-z0-9._-]", what);
	}
	if ((n == 1 && a[0] == '.') || (n == 2 && a[0] == '.' && a[1] == '.'))
		return ly_error_set(err, LY_E_INVALID, "%s must not be '.' or '..'", what);
	return LY_OK;
}

static ly_status
check_kind(enum kind k, const char *what, const char *a, size_t n, struct ly_error *err)
{
	switch (k) {
	case K_UINT32: return check_uint32(what, a, n, err);
	case K_POSIX_NAME: return check_posix_name(what, a, n, err);
	case K_ABS_PATH: return check_abs_path(what, a, n, err);
	case K_SHA256: return check_sha256(what, a, n, err);
	case K_DNS_LABEL: return check_dns_label(what, a, n, err);
	case K_DNS_SUBDOMAIN: return check_dns_subdomain(what, a, n, err);
	case K_UUID: return check_uuid(what, a, n, err);
	case K_K8S_LABEL: return check_k8s_label(what, a, n, err);
	case K_IMAGE: return check_image(what, a, n, err);
	case K_CLUSTER: return check_cluster(what, a, n, err);
	case K_CN: return check_cn(what, a, n, err);
	case K_FINGERPRINT: return check_fingerprint(what, a, n, err);
	case K_SERIAL: return check_serial(what, a, n, err);
	case K_HOSTNAME: return check_hostname(what, a, n, err);
	case K_TOKEN: return check_token(what, a, n, err);
	}
	return ly_error_set(err, LY_E_INTERNAL, "%s: unknown value kind", what);
}

/*
 * Renders at most 96 bytes of `s` for a message, each byte outside
 * printable ASCII (and '"') shown as '?', "..." when cut.
 */
static void
show(const char *s, size_t n, char out[104])
{
	size_t o = 0;
	for (size_t i = 0; i < n && o < 96; i++) {
		unsigned char c = (unsigned char)s[i];
		out[o++] = (c >= 0x20 && c <= 0x7e && c != '"') ? (char)c : '?';
	}
	if (n > 96) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* The key part of an unknown key, for a message: up to the colon after the first segment. */
static size_t
key_span(const char *v, size_t n)
{
	const char *c = memchr(v, ':', n);
	return c == NULL ? n : (size_t)(c - v);
}

static ly_status
check_value(const struct sel_type *st, const char *v, size_t vn, struct ly_error *err)
{
	char what[64];

	if (st->keys == NULL)
		return check_kind(st->bare, st->type, v, vn, err);
	for (size_t i = 0; i < st->n_keys; i++) {
		const struct sel_key *k = &st->keys[i];
		size_t kl = strlen(k->key);
		if (vn < kl || memcmp(v, k->key, kl) != 0 || (vn > kl && v[kl] != ':'))
			continue;
		(void)snprintf(what, sizeof(what), "%s:%s", st->type, k->key);
		if (vn <= kl + 1)
			return ly_error_set(err, LY_E_INVALID, "%s has an empty value (%s:VALUE)", what, what);
		return check_kind(k->kind, what, v + kl + 1, vn - kl - 1, err);
	}
	char shown[104];
	show(v, key_span(v, vn), shown);
	return ly_error_set(err, LY_E_INVALID, "unknown %s selector key \"%s\" (known: %s)", st->type, shown,
	    st->known);
}

/* Checks type t[0..tn) and value v[0..vn), neither containing NUL. */
static ly_status
check_selector(const char *t, size_t tn, const char *v, size_t vn, struct ly_error *err)
{
	char shown[104];
	ly_status rc;

	/* tn and vn are at most LY_SELECTOR_MAX + 1 (strnlen): no overflow. */
	if (tn > LY_SELECTOR_MAX || vn > LY_SELECTOR_MAX || tn + 1 + vn > LY_SELECTOR_MAX)
		return ly_error_set(err, LY_E_LIMIT, "selector is over the %d-byte limit", LY_SELECTOR_MAX);
	if (tn == 0)
		return ly_error_set(err, LY_E_INVALID, "selector has an empty type (want type:value)");
	const struct sel_type *st = find_type(t, tn);
	if (st == NULL) {
		show(t, tn, shown);
		return ly_error_set(err, LY_E_INVALID, "unknown selector type \"%s\" (known: %s)", shown,
		    KNOWN_TYPES);
	}
	if (vn == 0)
		return ly_error_set(err, LY_E_INVALID, "selector of type %s has an empty value", st->type);
	size_t off = 0;
	bool control = false;
	if (!text_ok((const unsigned char *)v, vn, &off, &control)) {
		rc = ly_error_set(err, LY_E_INVALID, "value %s at offset %zu",
		    control ? "contains a control character" : "is not valid UTF-8", off);
	} else {
		rc = check_value(st, v, vn, err);
	}
	if (rc == LY_OK)
		return LY_OK;
	/* A join token is a secret: name the type, never the value. */
	if (strcmp(st->type, "join_token") == 0)
		return ly_error_wrap(err, rc, "selector \"join_token:[redacted]\"");
	show(v, vn, shown);
	return ly_error_wrap(err, rc, "selector \"%s:%s\"", st->type, shown);
}

ly_status
ly_selector_parse(const char *s, size_t len, struct ly_selector *out, struct ly_error *err)
{
	ly_status rc;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "selector: no output");
	out->type = NULL;
	out->value = NULL;
	if (s == NULL)
		return ly_error_set(err, LY_E_INVALID, "selector is missing");
	if (len > LY_SELECTOR_MAX)
		return ly_error_set(err, LY_E_LIMIT, "selector is %zu bytes, over the %d-byte limit", len,
		    LY_SELECTOR_MAX);
	const char *nul = memchr(s, '\0', len);
	if (nul != NULL)
		return ly_error_set(err, LY_E_INVALID, "selector contains a NUL byte at offset %zu",
		    (size_t)(nul - s));
	const char *colon = memchr(s, ':', len);
	/* Not echoed: it could be a bare join token pasted in the wrong place. */
	if (colon == NULL)
		return ly_error_set(err, LY_E_INVALID, "selector is not type:value (no ':')");
	size_t tn = (size_t)(colon - s);
	rc = check_selector(s, tn, colon + 1, len - tn - 1, err);
	if (rc != LY_OK)
		return rc;
	out->type = strndup(s, tn);
	out->value = strndup(colon + 1, len - tn - 1);
	if (out->type == NULL || out->value == NULL) {
		ly_selector_cleanup(out);
		return ly_error_set(err, LY_E_NOMEM, "selector: out of memory");
	}
	return LY_OK;
}

ly_status
ly_selector_parse_str(const char *s, struct ly_selector *out, struct ly_error *err)
{
	if (s == NULL)
		return ly_selector_parse(NULL, 0, out, err);
	return ly_selector_parse(s, strnlen(s, LY_SELECTOR_MAX + 1), out, err);
}

ly_status
ly_selector_check(const char *type, const char *value, struct ly_error *err)
{
	if (type == NULL || value == NULL)
		return ly_error_set(err, LY_E_INVALID, "selector is missing its %s", type == NULL ? "type" : "value");
	size_t tn = strnlen(type, LY_SELECTOR_MAX + 1);
	size_t vn = strnlen(value, LY_SELECTOR_MAX + 1);
	return check_selector(type, tn, value, vn, err);
}

ly_status
ly_selector_set(struct ly_selector *out, const char *type, const char *value, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "selector: no output");
	out->type = NULL;
	out->value = NULL;
	LY_TRY(ly_selector_check(type, value, err));
	out->type = strdup(type);
	out->value = strdup(value);
	if (out->type == NULL || out->value == NULL) {
		ly_selector_cleanup(out);
		return ly_error_set(err, LY_E_NOMEM, "selector: out of memory");
	}
	return LY_OK;
}

void
ly_selector_cleanup(struct ly_selector *sel)
{
	if (sel == NULL)
		return;
	free(sel->type);
	free(sel->value);
	sel->type = NULL;
	sel->value = NULL;
}

ly_status
ly_selector_format(const struct ly_selector *sel, char *out, size_t size, struct ly_error *err)
{
	if (out == NULL || size == 0)
		return ly_error_set(err, LY_E_INTERNAL, "selector format: no output");
	out[0] = '\0';
	if (sel == NULL || sel->type == NULL || sel->value == NULL)
		return ly_error_set(err, LY_E_INVALID, "selector is missing");
	int n = snprintf(out, size, "%s:%s", sel->type, sel->value);
	if (n < 0 || (size_t)n >= size) {
		out[0] = '\0';
		return ly_error_set(err, LY_E_LIMIT, "selector does not fit in %zu bytes", size);
	}
	return LY_OK;
}

static const char *
or_empty(const char *s)
{
	return s == NULL ? "" : s;
}

int
ly_selector_cmp(const struct ly_selector *a, const struct ly_selector *b)
{
	int c = strcmp(or_empty(a->type), or_empty(b->type));
	if (c != 0)
		return c;
	return strcmp(or_empty(a->value), or_empty(b->value));
}

bool
ly_selector_equal(const struct ly_selector *a, const struct ly_selector *b)
{
	return ly_selector_cmp(a, b) == 0;
}

bool
ly_selector_type_is_node(const char *type)
{
	if (type == NULL)
		return false;
	const struct sel_type *st = find_type(type, strnlen(type, 32));
	return st != NULL && st->node;
}

bool
ly_selector_type_known(const char *type)
{
	return type != NULL && find_type(type, strnlen(type, 32)) != NULL;
}

ly_status
ly_selectors_copy(const struct ly_selector *src, size_t n, struct ly_selector **out, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "selectors copy: no output");
	*out = NULL;
	if (n == 0)
		return LY_OK;
	if (src == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "selectors copy: no input");
	struct ly_selector *sels = calloc(n, sizeof(*sels));
	if (sels == NULL)
		return ly_error_set(err, LY_E_NOMEM, "selectors copy: out of memory");
	for (size_t i = 0; i < n; i++) {
		sels[i].type = strdup(or_empty(src[i].type));
		sels[i].value = strdup(or_empty(src[i].value));
		if (sels[i].type == NULL || sels[i].value == NULL) {
			ly_selectors_free(sels, n);
			return ly_error_set(err, LY_E_NOMEM, "selectors copy: out of memory");
		}
	}
	*out = sels;
	return LY_OK;
}

void
ly_selectors_free(struct ly_selector *sels, size_t n)
{
	if (sels == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		ly_selector_cleanup(&sels[i]);
	free(sels);
}

static int
selector_qsort_cmp(const void *a, const void *b)
{
	return ly_selector_cmp(a, b);
}

ly_status
ly_selectors_canonicalize(struct ly_selector *sels, size_t n, struct ly_error *err)
{
	if (n == 0)
		return LY_OK;
	if (sels == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "selectors: no input");
	qsort(sels, n, sizeof(*sels), selector_qsort_cmp);
	for (size_t i = 1; i < n; i++) {
		if (ly_selector_equal(&sels[i - 1], &sels[i])) {
			if (strcmp(or_empty(sels[i].type), "join_token") == 0)
				return ly_error_set(err, LY_E_INVALID, "duplicate selector join_token:[redacted]");
			char shown[104];
			show(or_empty(sels[i].value), strlen(or_empty(sels[i].value)), shown);
			return ly_error_set(err, LY_E_INVALID, "duplicate selector %s:%s", sels[i].type, shown);
		}
	}
	return LY_OK;
}

static bool
contains(const struct ly_selector *have, size_t m, const struct ly_selector *s)
{
	for (size_t j = 0; j < m; j++) {
		if (ly_selector_equal(&have[j], s))
			return true;
	}
	return false;
}

bool
ly_selectors_match(const struct ly_selector *entry_sels, size_t n, const struct ly_selector *have, size_t m)
{
	if (n == 0 || entry_sels == NULL || (m > 0 && have == NULL))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!contains(have, m, &entry_sels[i]))
			return false;
	}
	return true;
}

bool
ly_selectors_same_set(const struct ly_selector *a, size_t n, const struct ly_selector *b, size_t m)
{
	if (n == 0 && m == 0)
		return true;
	return ly_selectors_match(a, n, b, m) && ly_selectors_match(b, m, a, n);
}

/* ---- entries ---- */

ly_status
ly_entry_new(struct ly_entry **out, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no output");
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	return LY_OK;
}

static void
strings_free(char **v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void
ly_entry_free(struct ly_entry *entry)
{
	if (entry == NULL)
		return;
	free(entry->entry_id);
	free(entry->spiffe_id);
	free(entry->parent_id);
	ly_selectors_free(entry->selectors, entry->n_selectors);
	strings_free(entry->dns_names, entry->n_dns_names);
	strings_free(entry->federates_with, entry->n_federates_with);
	free(entry->hint);
	free(entry);
}

/* strdup that keeps NULL as NULL; false on allocation failure. */
static bool
dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return true;
	*out = strdup(s);
	return *out != NULL;
}

/* Copies `n` strings into a new array (*out NULL when n == 0); *out_n set on success only. */
static ly_status
strings_copy(char *const *src, size_t n, char ***out, size_t *out_n, struct ly_error *err)
{
	char **v = NULL;

	*out = NULL;
	if (n == 0)
		return LY_OK;
	if (src == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry copy: strings missing");
	v = calloc(n, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
	for (size_t i = 0; i < n; i++) {
		v[i] = strdup(or_empty(src[i]));
		if (v[i] == NULL) {
			strings_free(v, n);
			return ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
		}
	}
	*out = v;
	*out_n = n;
	return LY_OK;
}

ly_status
ly_entry_copy(const struct ly_entry *src, struct ly_entry **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_entry *e = NULL;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry copy: no output");
	*out = NULL;
	if (src == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry copy: no input");
	rc = ly_entry_new(&e, err);
	if (rc != LY_OK)
		goto out;
	*e = *src;
	e->entry_id = e->spiffe_id = e->parent_id = e->hint = NULL;
	e->selectors = NULL;
	e->n_selectors = 0;
	e->dns_names = NULL;
	e->n_dns_names = 0;
	e->federates_with = NULL;
	e->n_federates_with = 0;
	if (!dup_opt(src->entry_id, &e->entry_id) || !dup_opt(src->spiffe_id, &e->spiffe_id) ||
	    !dup_opt(src->parent_id, &e->parent_id) || !dup_opt(src->hint, &e->hint)) {
		rc = ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
		goto out;
	}
	rc = ly_selectors_copy(src->selectors, src->n_selectors, &e->selectors, err);
	if (rc != LY_OK)
		goto out;
	e->n_selectors = src->n_selectors;
	if (src->n_dns_names > 0) {
		if (src->dns_names == NULL) {
			rc = ly_error_set(err, LY_E_INTERNAL, "entry copy: DNS names missing");
			goto out;
		}
		e->dns_names = calloc(src->n_dns_names, sizeof(*e->dns_names));
		if (e->dns_names == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
			goto out;
		}
		e->n_dns_names = src->n_dns_names;
		for (size_t i = 0; i < src->n_dns_names; i++) {
			e->dns_names[i] = strdup(or_empty(src->dns_names[i]));
			if (e->dns_names[i] == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
				goto out;
			}
		}
	}
	rc = strings_copy(src->federates_with, src->n_federates_with, &e->federates_with, &e->n_federates_with, err);
	if (rc != LY_OK)
		goto out;
	*out = e;
	e = NULL;
out:
	ly_entry_free(e);
	return rc;
}

ly_status
ly_entry_set_string(char **field, const char *value, struct ly_error *err)
{
	if (field == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no field");
	char *copy = NULL;
	if (!dup_opt(value, &copy))
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	free(*field);
	*field = copy;
	return LY_OK;
}

ly_status
ly_entry_add_selector(struct ly_entry *entry, const char *selector, struct ly_error *err)
{
	struct ly_selector sel;

	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry");
	if (entry->n_selectors >= LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has more than %d selectors", LY_SELECTORS_MAX);
	LY_TRY(ly_selector_parse_str(selector, &sel, err));
	struct ly_selector *grown = realloc(entry->selectors, (entry->n_selectors + 1) * sizeof(*grown));
	if (grown == NULL) {
		ly_selector_cleanup(&sel);
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	}
	grown[entry->n_selectors++] = sel;
	entry->selectors = grown;
	return LY_OK;
}

ly_status
ly_entry_add_dns_name(struct ly_entry *entry, const char *name, struct ly_error *err)
{
	if (entry == NULL || name == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry or DNS name");
	if (entry->n_dns_names >= LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has more than %d DNS names", LY_DNS_NAMES_MAX);
	if (strnlen(name, LY_DNS_NAME_MAX + 1) > LY_DNS_NAME_MAX)
		return ly_error_set(err, LY_E_LIMIT, "DNS name is longer than %d bytes", LY_DNS_NAME_MAX);
	char *copy = strdup(name);
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	char **grown = realloc(entry->dns_names, (entry->n_dns_names + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(copy);
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	}
	grown[entry->n_dns_names++] = copy;
	entry->dns_names = grown;
	return LY_OK;
}

ly_status
ly_entry_add_federates_with(struct ly_entry *entry, const char *td, struct ly_error *err)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];

	if (entry == NULL || td == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry or trust domain");
	if (entry->n_federates_with >= LY_ENTRY_FEDERATES_WITH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry federates with more than %d trust domains",
		    LY_ENTRY_FEDERATES_WITH_MAX);
	ly_status rc = ly_trust_domain_parse(td, true, name, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "entry federates_with");
	char *copy = strdup(name);
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	char **grown = realloc(entry->federates_with, (entry->n_federates_with + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(copy);
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	}
	grown[entry->n_federates_with++] = copy;
	entry->federates_with = grown;
	return LY_OK;
}

ly_status
ly_dns_name_check(const char *name, struct ly_error *err)
{
	if (name == NULL)
		return ly_error_set(err, LY_E_INVALID, "DNS name is missing");
	return check_hostname("DNS name", name, strnlen(name, LY_DNS_NAME_MAX + 1), err);
}

ly_status
ly_entry_id_check(const char *id, struct ly_error *err)
{
	if (id == NULL || id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "entry ID is empty");
	size_t n = strnlen(id, LY_ENTRY_ID_MAX + 1);
	if (n > LY_ENTRY_ID_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry ID is longer than %d bytes", LY_ENTRY_ID_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!is_portable((unsigned char)id[i]))
			return ly_error_set(err, LY_E_INVALID, "entry ID must use [A-Za-z0-9._-]");
	}
	return LY_OK;
}

/*
 * A SPIFFE ID field of an entry: valid, with a path, in `td` when given,
 * and allowed for `use` by the reserved-namespace rule (spiffeid.h).
 */
static ly_status
check_id_field(const char *name, const char *s, const char *td, enum ly_id_use use, struct ly_error *err)
{
	struct ly_spiffe_id id;

	if (s == NULL || s[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "entry has no %s", name);
	ly_status rc = ly_spiffe_id_parse_str(s, &id, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "entry %s", name);
	if (ly_spiffe_id_is_trust_domain_id(&id))
		return ly_error_set(err, LY_E_INVALID, "entry %s %s has no path (a trust domain ID names no workload)",
		    name, id.id);
	if (td != NULL && !ly_spiffe_id_member_of(&id, td))
		return ly_error_set(err, LY_E_INVALID, "entry %s %s is not in trust domain %s", name, id.id, td);
	if (ly_spiffe_id_check_use(&id, use, err) != LY_OK)
		return ly_error_wrap(err, LY_E_INVALID, "entry %s %s", name, id.id);
	return LY_OK;
}

static ly_status
check_ttl(const char *name, int32_t ttl, int32_t max, struct ly_error *err)
{
	if (ttl < 0)
		return ly_error_set(err, LY_E_INVALID, "entry %s %d is negative", name, (int)ttl);
	if (ttl > max)
		return ly_error_set(err, LY_E_LIMIT, "entry %s %d is over the %d-second limit", name, (int)ttl,
		    (int)max);
	return LY_OK;
}

static ly_status
check_selectors(struct ly_entry *e, struct ly_error *err)
{
	if (e->n_selectors == 0)
		return ly_error_set(err, LY_E_INVALID, "entry needs at least one selector");
	if (e->n_selectors > LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has %zu selectors, over the limit of %d", e->n_selectors,
		    LY_SELECTORS_MAX);
	if (e->selectors == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry selectors missing");
	for (size_t i = 0; i < e->n_selectors; i++) {
		const struct ly_selector *s = &e->selectors[i];
		ly_status rc = ly_selector_check(s->type, s->value, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry selector %zu", i + 1);
		bool node_type = ly_selector_type_is_node(s->type);
		if (e->node && !node_type)
			return ly_error_set(err, LY_E_INVALID,
			    "node entry selector %zu has workload selector type %s (node entries take k8s_psat, "
			    "x509pop, join_token)",
			    i + 1, s->type);
		if (!e->node && node_type)
			return ly_error_set(err, LY_E_INVALID,
			    "workload entry selector %zu has node selector type %s (workload entries take unix, "
			    "k8s; mark node entries as such)",
			    i + 1, s->type);
	}
	ly_status rc = ly_selectors_canonicalize(e->selectors, e->n_selectors, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "entry");
	return LY_OK;
}

static ly_status
check_dns_names(const struct ly_entry *e, struct ly_error *err)
{
	if (e->n_dns_names > LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has %zu DNS names, over the limit of %d", e->n_dns_names,
		    LY_DNS_NAMES_MAX);
	if (e->n_dns_names > 0 && e->dns_names == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry DNS names missing");
	for (size_t i = 0; i < e->n_dns_names; i++) {
		ly_status rc = ly_dns_name_check(e->dns_names[i], err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry DNS name %zu", i + 1);
		for (size_t j = 0; j < i; j++) {
			if (strcasecmp(e->dns_names[i], e->dns_names[j]) == 0)
				return ly_error_set(err, LY_E_INVALID, "entry DNS name %zu duplicates DNS name %zu (%s)",
				    i + 1, j + 1, e->dns_names[j]);
		}
	}
	return LY_OK;
}

static ly_status
check_hint(const char *hint, struct ly_error *err)
{
	if (hint == NULL)
		return LY_OK;
	size_t n = strnlen(hint, LY_ENTRY_HINT_MAX + 1);
	if (n > LY_ENTRY_HINT_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry hint is longer than %d bytes", LY_ENTRY_HINT_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)hint[i];
		if (c < 0x20 || c > 0x7e)
			return ly_error_set(err, LY_E_INVALID, "entry hint must be printable ASCII (byte %zu is not)",
			    i);
	}
	return LY_OK;
}

static int
string_qsort_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * federates_with: bare trust domain names (SPIFFE-ID §2.1), never the
 * entry's own trust domain (our bundle is not a federated one), sorted and
 * unique so that every copy of an entry compares and encodes the same.
 */
static ly_status
check_federates_with(struct ly_entry *e, const char *trust_domain, struct ly_error *err)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_spiffe_id id;

	if (e->n_federates_with > LY_ENTRY_FEDERATES_WITH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry federates with %zu trust domains, over the limit of %d",
		    e->n_federates_with, LY_ENTRY_FEDERATES_WITH_MAX);
	if (e->n_federates_with == 0)
		return LY_OK;
	if (e->federates_with == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry federates_with missing");
	for (size_t i = 0; i < e->n_federates_with; i++) {
		if (e->federates_with[i] == NULL)
			return ly_error_set(err, LY_E_INTERNAL, "entry federates_with %zu missing", i + 1);
		ly_status rc = ly_trust_domain_parse(e->federates_with[i], false, name, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry federates_with %zu", i + 1);
		if (trust_domain != NULL && strcmp(name, trust_domain) == 0)
			return ly_error_set(err, LY_E_INVALID,
			    "entry federates_with names its own trust domain %s (only other trust domains federate)",
			    name);
		if (e->spiffe_id != NULL && ly_spiffe_id_parse_str(e->spiffe_id, &id, NULL) == LY_OK &&
		    strcmp(id.trust_domain, name) == 0)
			return ly_error_set(err, LY_E_INVALID,
			    "entry federates_with names its own trust domain %s (only other trust domains federate)",
			    name);
	}
	qsort(e->federates_with, e->n_federates_with, sizeof(*e->federates_with), string_qsort_cmp);
	for (size_t i = 1; i < e->n_federates_with; i++) {
		if (strcmp(e->federates_with[i - 1], e->federates_with[i]) == 0)
			return ly_error_set(err, LY_E_INVALID, "entry federates_with names %s twice",
			    e->federates_with[i]);
	}
	return LY_OK;
}

ly_status
ly_entry_validate(struct ly_entry *entry, const char *trust_domain, struct ly_error *err)
{
	ly_status rc;

	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry");
	if (entry->entry_id != NULL && entry->entry_id[0] != '\0') {
		rc = ly_entry_id_check(entry->entry_id, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry");
	}
	LY_TRY(check_id_field("spiffe_id", entry->spiffe_id, trust_domain, LY_ID_GRANTED, err));
	LY_TRY(check_id_field("parent_id", entry->parent_id, trust_domain, LY_ID_PARENT, err));
	LY_TRY(check_selectors(entry, err));
	LY_TRY(check_ttl("x509_svid_ttl", entry->x509_svid_ttl, LY_X509_SVID_TTL_MAX, err));
	LY_TRY(check_ttl("jwt_svid_ttl", entry->jwt_svid_ttl, LY_JWT_SVID_TTL_MAX, err));
	LY_TRY(check_dns_names(entry, err));
	LY_TRY(check_hint(entry->hint, err));
	LY_TRY(check_federates_with(entry, trust_domain, err));
	return LY_OK;
}

ly_status
ly_entry_check_ttl_floor(const struct ly_entry *entry, struct ly_error *err)
{
	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry");
	if (entry->x509_svid_ttl > 0 && entry->x509_svid_ttl < LY_X509_SVID_TTL_MIN)
		return ly_error_set(err, LY_E_INVALID,
		    "entry x509_svid_ttl %d is under the %d-second floor (shorter SVIDs are renewed every few "
		    "seconds, at 1 s without end; 0 means the server default)",
		    (int)entry->x509_svid_ttl, LY_X509_SVID_TTL_MIN);
	if (entry->jwt_svid_ttl > 0 && entry->jwt_svid_ttl < LY_JWT_SVID_TTL_MIN)
		return ly_error_set(err, LY_E_INVALID,
		    "entry jwt_svid_ttl %d is under the %d-second floor (validators accept a JWT-SVID %d s "
		    "past its expiry anyway; 0 means the server default)",
		    (int)entry->jwt_svid_ttl, LY_JWT_SVID_TTL_MIN, LY_JWT_LEEWAY_SECONDS);
	return LY_OK;
}

int32_t
ly_svid_ttl_floored(int32_t ttl_or_0, int32_t floor)
{
	return ttl_or_0 > 0 && ttl_or_0 < floor ? floor : ttl_or_0;
}

ly_status
ly_entry_generate_id(char out[LY_UUID_LEN + 1], struct ly_error *err)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[16];

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry ID: no output");
	out[0] = '\0';
	if (RAND_bytes(b, (int)sizeof(b)) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "generate entry ID");
	/* RFC 9562 §5.4: version 4, variant 10. */
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	size_t o = 0;
	for (size_t i = 0; i < sizeof(b); i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 0x0f];
	}
	out[o] = '\0';
	return LY_OK;
}

bool
ly_entry_same_identity(const struct ly_entry *a, const struct ly_entry *b)
{
	if (a == NULL || b == NULL)
		return false;
	return strcmp(or_empty(a->spiffe_id), or_empty(b->spiffe_id)) == 0 &&
	    strcmp(or_empty(a->parent_id), or_empty(b->parent_id)) == 0 &&
	    ly_selectors_same_set(a->selectors, a->n_selectors, b->selectors, b->n_selectors);
}

ly_status
ly_entry_list_append(struct ly_entry_list *list, struct ly_entry *entry, struct ly_error *err)
{
	if (list == NULL || entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry list: no list or entry");
	if (list->n == list->cap) {
		size_t cap = list->cap == 0 ? 16 : list->cap * 2;
		if (cap > SIZE_MAX / sizeof(*list->items))
			return ly_error_set(err, LY_E_NOMEM, "entry list: too large");
		struct ly_entry **grown = realloc(list->items, cap * sizeof(*grown));
		if (grown == NULL)
			return ly_error_set(err, LY_E_NOMEM, "entry list: out of memory");
		list->items = grown;
		list->cap = cap;
	}
	list->items[list->n++] = entry;
	return LY_OK;
}

void
ly_entry_list_cleanup(struct ly_entry_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++)
		ly_entry_free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->n = 0;
	list->cap = 0;
}
