/* state.c: see state.h. */
#include "agent/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "lib/atomicfile.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/fileread.h"
#include "lib/fsperm.h"
#include "lib/spiffeid.h"

#define MAGIC "LYSTATE\0"
#define MAGIC_LEN 8
#define HEADER_LEN 16
#define DIGEST_LEN 32

enum {
	REC_META = 0x01,
	REC_AGENT = 0x02,
	REC_BUNDLE = 0x03,
	REC_ENTRY = 0x10,
	REC_ENTRY_FED = 0x11, /* REC_ENTRY with federates_with after the DNS names */
};

enum {
	FLAG_NODE = 1,
	FLAG_ADMIN = 2,
	FLAG_DOWNSTREAM = 4,
	FLAGS_ALL = FLAG_NODE | FLAG_ADMIN | FLAG_DOWNSTREAM,
};

/* ---- agent state ---- */

void
ly_agent_state_init(struct ly_agent_state *st)
{
	memset(st, 0, sizeof(*st));
}

void
ly_agent_state_cleanup(struct ly_agent_state *st)
{
	if (st == NULL)
		return;
	ly_buf_free(&st->chain);
	ly_buf_free_secret(&st->key);
	ly_bundle_set_free(st->bundles);
	ly_agent_state_init(st);
}

/* ---- writing: two passes, the first (p == NULL) only measures ---- */

struct wr {
	uint8_t *p;
	size_t off;
	bool bad; /* a field over what the format (or its reader) takes */
};

static void
put(struct wr *w, const void *d, size_t n)
{
	if (w->p != NULL && n > 0)
		memcpy(w->p + w->off, d, n);
	w->off += n;
}

static void
put_be(struct wr *w, uint64_t v, size_t n)
{
	uint8_t b[8];
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	put(w, b, n);
}

static void
put_u8(struct wr *w, unsigned v)
{
	put_be(w, v, 1);
}

static void
put_i32(struct wr *w, int32_t v)
{
	put_be(w, (uint32_t)v, 4);
}

static void
put_i64(struct wr *w, int64_t v)
{
	put_be(w, (uint64_t)v, 8);
}

/* A str field: at most `cap` bytes (what the reader accepts for it). */
static void
put_str(struct wr *w, const char *s, size_t cap)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n > cap || n > UINT16_MAX) {
		w->bad = true;
		n = 0;
	}
	put_be(w, n, 2);
	put(w, s, n);
}

static void
put_blob(struct wr *w, const uint8_t *d, size_t n, size_t cap)
{
	if (n > cap) {
		w->bad = true;
		n = 0;
	}
	put_be(w, n, 4);
	put(w, d, n);
}

static size_t
rec_begin(struct wr *w, unsigned type)
{
	put_u8(w, type);
	size_t at = w->off;
	put_be(w, 0, 4);
	return at;
}

static void
rec_end(struct wr *w, size_t at)
{
	size_t len = w->off - at - 4;
	if (len > UINT32_MAX)
		w->bad = true;
	if (w->p != NULL) {
		struct wr patch = { w->p, at, false };
		put_be(&patch, len, 4);
	}
}

static void
put_meta(struct wr *w, int64_t now, int64_t revision, const char *td)
{
	size_t at = rec_begin(w, REC_META);
	put_i64(w, now);
	put_i64(w, revision);
	put_str(w, td, LY_TRUST_DOMAIN_MAX);
	rec_end(w, at);
}

/* Header, then `body` runs over the writer, then the digest. */
typedef void (*body_fn)(struct wr *w, const void *arg);

static ly_status
encode(enum ly_state_kind kind, body_fn body, const void *arg, struct ly_buf *out, struct ly_error *err)
{
	struct wr w = { NULL, HEADER_LEN, false };

	body(&w, arg);
	size_t body_len = w.off - HEADER_LEN;
	if (w.bad)
		return ly_error_set(err, LY_E_LIMIT, "state: a field is over its cap");
	if (body_len > LY_AGENT_STATE_FILE_MAX - HEADER_LEN - DIGEST_LEN)
		return ly_error_set(err, LY_E_LIMIT, "state: over %d bytes", LY_AGENT_STATE_FILE_MAX);
	size_t total = HEADER_LEN + body_len + DIGEST_LEN;
	uint8_t *p = calloc(1, total);
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "state: allocating %zu bytes", total);
	w.p = p;
	w.off = 0;
	put(&w, MAGIC, MAGIC_LEN);
	put_be(&w, LY_STATE_VERSION, 2);
	put_be(&w, (uint64_t)kind, 2);
	put_be(&w, body_len, 4);
	body(&w, arg);
	if (w.off != HEADER_LEN + body_len || w.bad) {
		OPENSSL_clear_free(p, total);
		return ly_error_set(err, LY_E_INTERNAL, "state: the two encoding passes differ");
	}
	unsigned int dlen = 0;
	if (EVP_Digest(p, HEADER_LEN + body_len, p + HEADER_LEN + body_len, &dlen, EVP_sha256(), NULL) != 1 ||
	    dlen != DIGEST_LEN) {
		OPENSSL_clear_free(p, total);
		return ly_error_openssl(err, LY_E_CRYPTO, "state: digest");
	}
	ly_buf_adopt(out, p, total);
	return LY_OK;
}

struct agent_body {
	const struct ly_agent_state *st;
	int64_t now;
	char **jwks; /* one per bundle, rendered once */
	size_t njwks;
};

static void
agent_body(struct wr *w, const void *arg)
{
	const struct agent_body *a = arg;
	const struct ly_agent_state *st = a->st;

	put_meta(w, a->now, 0, st->trust_domain);
	if (st->has_svid) {
		size_t at = rec_begin(w, REC_AGENT);
		put_str(w, st->spiffe_id, LY_SPIFFE_ID_MAX);
		put_blob(w, st->chain.data, st->chain.len, LY_CHAIN_DER_MAX);
		put_blob(w, st->key.data, st->key.len, LY_KEY_DER_MAX);
		put_i64(w, st->not_before);
		put_i64(w, st->not_after);
		put_i64(w, st->renew_at_ms);
		rec_end(w, at);
	}
	for (size_t i = 0; i < a->njwks; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(st->bundles, i);
		size_t at = rec_begin(w, REC_BUNDLE);
		put_str(w, ly_bundle_trust_domain(b), LY_TRUST_DOMAIN_MAX);
		put_blob(w, (const uint8_t *)a->jwks[i], strlen(a->jwks[i]), LY_JWKS_MAX);
		rec_end(w, at);
	}
}

ly_status
ly_state_encode_agent(const struct ly_agent_state *st, int64_t now, struct ly_buf *out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct agent_body a = { st, now, NULL, 0 };
	char td[LY_TRUST_DOMAIN_MAX + 1];

	rc = ly_trust_domain_parse(st->trust_domain, false, td, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "state");
	if (st->has_svid && (st->chain.len == 0 || st->key.len == 0))
		return ly_error_set(err, LY_E_INVALID, "state: the agent's SVID has no chain or no key");
	size_t n = st->bundles != NULL ? ly_bundle_set_count(st->bundles) : 0;
	if (n > 0) {
		a.jwks = calloc(n, sizeof(*a.jwks));
		if (a.jwks == NULL)
			return ly_error_set(err, LY_E_NOMEM, "state: allocating");
	}
	for (size_t i = 0; i < n; i++) {
		rc = ly_bundle_write_jwks(ly_bundle_set_at(st->bundles, i), 0, &a.jwks[i], err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "state: bundle %zu", i);
			goto out;
		}
		a.njwks++;
	}
	rc = encode(LY_STATE_KIND_AGENT, agent_body, &a, out, err);
out:
	for (size_t i = 0; i < a.njwks; i++)
		free(a.jwks[i]);
	free(a.jwks);
	return rc;
}

struct cache_body {
	const struct ly_cache *c;
	int64_t now;
};

static void
cache_body(struct wr *w, const void *arg)
{
	const struct cache_body *a = arg;

	put_meta(w, a->now, ly_cache_revision(a->c), ly_cache_trust_domain(a->c));
	for (size_t i = 0; i < ly_cache_count(a->c); i++) {
		struct ly_cache_item it;
		ly_cache_item_at(a->c, i, &it);
		const struct ly_entry *e = it.entry;
		size_t at = rec_begin(w, e->n_federates_with > 0 ? REC_ENTRY_FED : REC_ENTRY);
		put_str(w, e->entry_id, LY_ENTRY_ID_MAX);
		put_str(w, e->spiffe_id, LY_SPIFFE_ID_MAX);
		put_str(w, e->parent_id, LY_SPIFFE_ID_MAX);
		put_str(w, e->hint, LY_ENTRY_HINT_MAX);
		put_i32(w, e->x509_svid_ttl);
		put_i32(w, e->jwt_svid_ttl);
		put_u8(w, (e->node ? FLAG_NODE : 0u) | (e->admin ? FLAG_ADMIN : 0u) |
		    (e->downstream ? FLAG_DOWNSTREAM : 0u));
		put_i64(w, e->revision);
		put_i64(w, e->created_at);
		put_be(w, e->n_selectors, 2);
		for (size_t k = 0; k < e->n_selectors; k++) {
			put_str(w, e->selectors[k].type, LY_SELECTOR_MAX);
			put_str(w, e->selectors[k].value, LY_SELECTOR_MAX);
		}
		put_be(w, e->n_dns_names, 2);
		for (size_t k = 0; k < e->n_dns_names; k++)
			put_str(w, e->dns_names[k], LY_DNS_NAME_MAX);
		if (e->n_federates_with > 0) {
			put_be(w, e->n_federates_with, 2);
			for (size_t k = 0; k < e->n_federates_with; k++)
				put_str(w, e->federates_with[k], LY_TRUST_DOMAIN_MAX);
		}
		put_u8(w, it.has_svid ? 1 : 0);
		if (it.has_svid) {
			put_blob(w, it.leaf.der, it.leaf.len, LY_CERT_DER_MAX);
			put_blob(w, it.intermediates.der, it.intermediates.len, LY_CHAIN_DER_MAX);
			put_blob(w, it.key.der, it.key.len, LY_KEY_DER_MAX);
			put_i64(w, it.not_before);
			put_i64(w, it.not_after);
			put_i64(w, it.renew_at_ms);
			put_u8(w, it.stale ? 1 : 0);
		}
		rec_end(w, at);
	}
}

ly_status
ly_state_encode_cache(const struct ly_cache *c, int64_t now, struct ly_buf *out, struct ly_error *err)
{
	struct cache_body a = { c, now };
	return encode(LY_STATE_KIND_CACHE, cache_body, &a, out, err);
}

/* ---- reading ---- */

struct rd {
	const uint8_t *p;
	size_t len;
	size_t off;
};

static ly_status
need(struct rd *r, size_t n, struct ly_error *err)
{
	if (r->len - r->off < n)
		return ly_error_set(err, LY_E_INVALID, "truncated");
	return LY_OK;
}

static ly_status
get_be(struct rd *r, size_t n, uint64_t *v, struct ly_error *err)
{
	LY_TRY(need(r, n, err));
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++)
		x = (x << 8) | r->p[r->off + i];
	r->off += n;
	*v = x;
	return LY_OK;
}

static ly_status
get_i64(struct rd *r, int64_t *v, struct ly_error *err)
{
	uint64_t x;
	LY_TRY(get_be(r, 8, &x, err));
	*v = (int64_t)x;
	return LY_OK;
}

static ly_status
get_i32(struct rd *r, int32_t *v, struct ly_error *err)
{
	uint64_t x;
	LY_TRY(get_be(r, 4, &x, err));
	*v = (int32_t)(uint32_t)x;
	return LY_OK;
}

static ly_status
get_u8(struct rd *r, uint8_t *v, struct ly_error *err)
{
	uint64_t x;
	LY_TRY(get_be(r, 1, &x, err));
	*v = (uint8_t)x;
	return LY_OK;
}

/* A str field into a new NUL-terminated string (NULL for empty when `empty_null`). */
static ly_status
get_str(struct rd *r, const char *what, size_t cap, bool empty_null, char **out, struct ly_error *err)
{
	uint64_t n;
	*out = NULL;
	LY_TRY(get_be(r, 2, &n, err));
	if (n > cap)
		return ly_error_set(err, LY_E_LIMIT, "%s over %zu bytes", what, cap);
	LY_TRY(need(r, (size_t)n, err));
	if (memchr(r->p + r->off, '\0', (size_t)n) != NULL)
		return ly_error_set(err, LY_E_INVALID, "%s holds a NUL byte", what);
	if (n == 0 && empty_null)
		return LY_OK;
	char *s = malloc((size_t)n + 1);
	if (s == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %s", what);
	memcpy(s, r->p + r->off, (size_t)n);
	s[n] = '\0';
	r->off += (size_t)n;
	*out = s;
	return LY_OK;
}

/* The same into a fixed buffer of cap + 1 bytes. */
static ly_status
get_str_fixed(struct rd *r, const char *what, size_t cap, char *out, struct ly_error *err)
{
	uint64_t n;
	LY_TRY(get_be(r, 2, &n, err));
	if (n > cap)
		return ly_error_set(err, LY_E_LIMIT, "%s over %zu bytes", what, cap);
	LY_TRY(need(r, (size_t)n, err));
	if (memchr(r->p + r->off, '\0', (size_t)n) != NULL)
		return ly_error_set(err, LY_E_INVALID, "%s holds a NUL byte", what);
	memcpy(out, r->p + r->off, (size_t)n);
	out[n] = '\0';
	r->off += (size_t)n;
	return LY_OK;
}

/* A blob field as a view into the input. */
static ly_status
get_blob(struct rd *r, const char *what, size_t cap, struct ly_der_view *out, struct ly_error *err)
{
	uint64_t n;
	LY_TRY(get_be(r, 4, &n, err));
	if (n > cap)
		return ly_error_set(err, LY_E_LIMIT, "%s over %zu bytes", what, cap);
	LY_TRY(need(r, (size_t)n, err));
	out->der = r->p + r->off;
	out->len = (size_t)n;
	r->off += (size_t)n;
	return LY_OK;
}

/* Checks the header and digest; `body` gets the records. */
static ly_status
open_file(const uint8_t *data, size_t len, enum ly_state_kind kind, struct rd *body, struct ly_error *err)
{
	unsigned char digest[DIGEST_LEN];

	if (data == NULL || len < HEADER_LEN + DIGEST_LEN)
		return ly_error_set(err, LY_E_INVALID, "state: %zu bytes: too short to be a state file", len);
	if (len > LY_AGENT_STATE_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "state: over %d bytes", LY_AGENT_STATE_FILE_MAX);
	if (memcmp(data, MAGIC, MAGIC_LEN) != 0)
		return ly_error_set(err, LY_E_INVALID, "state: not a Lanyard state file (magic)");
	struct rd h = { data, HEADER_LEN, MAGIC_LEN };
	uint64_t version, k, body_len;
	LY_TRY(get_be(&h, 2, &version, err));
	LY_TRY(get_be(&h, 2, &k, err));
	LY_TRY(get_be(&h, 4, &body_len, err));
	if (version != LY_STATE_VERSION)
		return ly_error_set(err, LY_E_INVALID, "state: version %llu, this agent reads %d",
		    (unsigned long long)version, LY_STATE_VERSION);
	if (k != (uint64_t)kind)
		return ly_error_set(err, LY_E_INVALID, "state: file kind %llu, expected %d", (unsigned long long)k,
		    (int)kind);
	if (body_len != len - HEADER_LEN - DIGEST_LEN)
		return ly_error_set(err, LY_E_INVALID, "state: body of %llu bytes in a file of %zu (truncated or "
		    "trailing bytes)", (unsigned long long)body_len, len);
	if (EVP_Digest(data, len - DIGEST_LEN, digest, NULL, EVP_sha256(), NULL) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "state: digest");
	if (CRYPTO_memcmp(digest, data + len - DIGEST_LEN, DIGEST_LEN) != 0)
		return ly_error_set(err, LY_E_INVALID, "state: checksum mismatch (damaged file)");
	body->p = data + HEADER_LEN;
	body->len = (size_t)body_len;
	body->off = 0;
	return LY_OK;
}

/* The next record: its type and a reader over its payload. False at the end. */
static ly_status
next_record(struct rd *body, uint8_t *type, struct rd *rec, bool *more, struct ly_error *err)
{
	uint64_t len;
	*more = body->off < body->len;
	if (!*more)
		return LY_OK;
	LY_TRY(get_u8(body, type, err));
	LY_TRY(get_be(body, 4, &len, err));
	LY_TRY(need(body, (size_t)len, err));
	rec->p = body->p + body->off;
	rec->len = (size_t)len;
	rec->off = 0;
	body->off += (size_t)len;
	return LY_OK;
}

static ly_status
end_record(const struct rd *rec, struct ly_error *err)
{
	if (rec->off != rec->len)
		return ly_error_set(err, LY_E_INVALID, "%zu bytes left over", rec->len - rec->off);
	return LY_OK;
}

struct meta {
	int64_t saved_at, revision;
	char td[LY_TRUST_DOMAIN_MAX + 1];
};

static ly_status
read_meta(struct rd *r, struct meta *m, struct ly_error *err)
{
	char td[LY_TRUST_DOMAIN_MAX + 1];
	LY_TRY(get_i64(r, &m->saved_at, err));
	LY_TRY(get_i64(r, &m->revision, err));
	LY_TRY(get_str_fixed(r, "trust domain", LY_TRUST_DOMAIN_MAX, td, err));
	LY_TRY(ly_trust_domain_parse(td, false, m->td, err));
	return end_record(r, err);
}

/* not_before < not_after and the renewal time inside the window. */
static ly_status
check_window(int64_t nb, int64_t na, int64_t renew_ms, struct ly_error *err)
{
	if (nb >= na)
		return ly_error_set(err, LY_E_INVALID, "empty validity window");
	if (nb < -INT64_MAX / 1000 || na > INT64_MAX / 1000 || renew_ms < nb * 1000 || renew_ms > na * 1000)
		return ly_error_set(err, LY_E_INVALID, "renewal time outside the validity window");
	return LY_OK;
}

static ly_status
check_key(const struct ly_der_view *key, struct ly_error *err)
{
	if (key->len == 0)
		return ly_error_set(err, LY_E_INVALID, "empty key");
	return LY_OK;
}

static ly_status
copy_view(struct ly_buf *out, const struct ly_der_view *v, struct ly_error *err)
{
	return ly_buf_set(out, v->der, v->len, err);
}

static ly_status
read_agent_svid(struct rd *r, const char *td, int64_t now, struct ly_agent_state *out, struct ly_error *err)
{
	struct ly_spiffe_id id;
	struct ly_der_view chain, key;
	int64_t nb, na, renew;
	size_t count;

	LY_TRY(get_str_fixed(r, "SPIFFE ID", LY_SPIFFE_ID_MAX, out->spiffe_id, err));
	LY_TRY(ly_spiffe_id_parse_str(out->spiffe_id, &id, err));
	if (ly_spiffe_id_is_trust_domain_id(&id) || !ly_spiffe_id_member_of(&id, td))
		return ly_error_set(err, LY_E_INVALID, "SPIFFE ID %s: not an agent ID of trust domain %s", id.id, td);
	LY_TRY(get_blob(r, "chain", LY_CHAIN_DER_MAX, &chain, err));
	LY_TRY(get_blob(r, "key", LY_KEY_DER_MAX, &key, err));
	LY_TRY(get_i64(r, &nb, err));
	LY_TRY(get_i64(r, &na, err));
	LY_TRY(get_i64(r, &renew, err));
	LY_TRY(end_record(r, err));
	LY_TRY(ly_der_split(chain.der, chain.len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, NULL, &count, err));
	LY_TRY(check_key(&key, err));
	LY_TRY(check_window(nb, na, renew, err));
	if (na <= now)
		return LY_OK; /* expired: dropped, the agent attests again */
	LY_TRY(copy_view(&out->chain, &chain, err));
	ly_status rc = copy_view(&out->key, &key, err);
	if (rc != LY_OK) {
		ly_buf_free(&out->chain);
		return rc;
	}
	out->not_before = nb;
	out->not_after = na;
	out->renew_at_ms = renew;
	out->has_svid = true;
	return LY_OK;
}

static ly_status
read_bundle(struct rd *r, struct ly_agent_state *out, struct ly_error *err)
{
	char tdraw[LY_TRUST_DOMAIN_MAX + 1], td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_der_view json;
	struct ly_bundle *b = NULL;

	LY_TRY(get_str_fixed(r, "trust domain", LY_TRUST_DOMAIN_MAX, tdraw, err));
	LY_TRY(ly_trust_domain_parse(tdraw, false, td, err));
	LY_TRY(get_blob(r, "bundle", LY_JWKS_MAX, &json, err));
	LY_TRY(end_record(r, err));
	if (out->bundles == NULL)
		LY_TRY(ly_bundle_set_new(&out->bundles, err));
	if (ly_bundle_set_find(out->bundles, td) != NULL)
		return ly_error_set(err, LY_E_INVALID, "a second bundle for %s", td);
	LY_TRY(ly_bundle_parse_jwks(td, (const char *)json.der, json.len, &b, err));
	ly_status rc = ly_bundle_set_put(out->bundles, b, err);
	if (rc != LY_OK)
		ly_bundle_free(b);
	return rc;
}

static const char *
rec_name(uint8_t type)
{
	switch (type) {
	case REC_META:
		return "meta";
	case REC_AGENT:
		return "agent SVID";
	case REC_BUNDLE:
		return "bundle";
	case REC_ENTRY:
		return "entry";
	case REC_ENTRY_FED:
		return "entry with federates_with";
	default:
		return "unknown";
	}
}

ly_status
ly_state_decode_agent(const uint8_t *data, size_t len, const char *expected_td, int64_t now,
    struct ly_agent_state *out, struct ly_error *err)
{
	ly_status rc;
	struct rd body, rec;
	struct meta meta;
	bool more = true, seen_agent = false;
	size_t index = 0;
	uint8_t type = 0;

	ly_agent_state_init(out);
	memset(&meta, 0, sizeof(meta));
	rc = open_file(data, len, LY_STATE_KIND_AGENT, &body, err);
	if (rc != LY_OK)
		return rc;
	for (index = 0;; index++) {
		rc = next_record(&body, &type, &rec, &more, err);
		if (rc != LY_OK || !more)
			break;
		if (index == 0 && type != REC_META) {
			rc = ly_error_set(err, LY_E_INVALID, "the first record is not meta");
			break;
		}
		switch (index == 0 ? REC_META : type) {
		case REC_META:
			if (index != 0) {
				rc = ly_error_set(err, LY_E_INVALID, "a second meta record");
				break;
			}
			rc = read_meta(&rec, &meta, err);
			if (rc == LY_OK && expected_td != NULL && strcmp(meta.td, expected_td) != 0)
				rc = ly_error_set(err, LY_E_INVALID, "for trust domain %s, not %s", meta.td,
				    expected_td);
			if (rc == LY_OK) {
				memcpy(out->trust_domain, meta.td, sizeof(out->trust_domain));
				out->saved_at = meta.saved_at;
			}
			break;
		case REC_AGENT:
			if (seen_agent) {
				rc = ly_error_set(err, LY_E_INVALID, "a second agent SVID");
				break;
			}
			seen_agent = true;
			rc = read_agent_svid(&rec, meta.td, now, out, err);
			break;
		case REC_BUNDLE:
			if (out->bundles != NULL && ly_bundle_set_count(out->bundles) >= LY_BUNDLE_SET_MAX) {
				rc = ly_error_set(err, LY_E_LIMIT, "more than %d bundles", LY_BUNDLE_SET_MAX);
				break;
			}
			rc = read_bundle(&rec, out, err);
			break;
		default:
			rc = ly_error_set(err, LY_E_INVALID, "unknown record type 0x%02x", type);
			break;
		}
		if (rc != LY_OK)
			break;
	}
	if (rc == LY_OK && index == 0)
		rc = ly_error_set(err, LY_E_INVALID, "no meta record");
	if (rc != LY_OK) {
		if (more)
			rc = ly_error_wrap(err, rc, "record %zu (%s)", index, rec_name(type));
		ly_agent_state_cleanup(out);
		return ly_error_wrap(err, rc, "state: agent file");
	}
	return LY_OK;
}

/* One ENTRY record: the entry, and its SVID when it has one. */
struct svid_rec {
	bool present;
	struct ly_der_view leaf, inter, key;
	int64_t nb, na, renew;
	bool stale;
};

/* A 2-byte count, at most `max`, and room for that many zeroed elements of `size` (*out NULL for none). */
static ly_status
get_counted(struct rd *r, uint64_t max, size_t size, const char *what, uint64_t *n, void **out, struct ly_error *err)
{
	*out = NULL;
	LY_TRY(get_be(r, 2, n, err));
	if (*n > max)
		return ly_error_set(err, LY_E_LIMIT, "more than %d %s", (int)max, what);
	if (*n > 0 && (*out = calloc((size_t)*n, size)) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %s", what);
	return LY_OK;
}

static ly_status
read_entry(struct rd *r, const char *td, bool fed, struct ly_entry **out, struct svid_rec *s, struct ly_error *err)
{
	ly_status rc;
	struct ly_entry *e = NULL;
	uint8_t flags, has;
	uint64_t n;
	void *p;

	memset(s, 0, sizeof(*s));
	*out = NULL;
	LY_TRY(ly_entry_new(&e, err));
	if ((rc = get_str(r, "entry ID", LY_ENTRY_ID_MAX, false, &e->entry_id, err)) != LY_OK ||
	    (rc = get_str(r, "SPIFFE ID", LY_SPIFFE_ID_MAX, false, &e->spiffe_id, err)) != LY_OK ||
	    (rc = get_str(r, "parent ID", LY_SPIFFE_ID_MAX, false, &e->parent_id, err)) != LY_OK ||
	    (rc = get_str(r, "hint", LY_ENTRY_HINT_MAX, true, &e->hint, err)) != LY_OK ||
	    (rc = get_i32(r, &e->x509_svid_ttl, err)) != LY_OK || (rc = get_i32(r, &e->jwt_svid_ttl, err)) != LY_OK ||
	    (rc = get_u8(r, &flags, err)) != LY_OK || (rc = get_i64(r, &e->revision, err)) != LY_OK ||
	    (rc = get_i64(r, &e->created_at, err)) != LY_OK)
		goto out;
	if ((flags & ~FLAGS_ALL) != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "unknown flag bits 0x%02x", flags);
		goto out;
	}
	e->node = (flags & FLAG_NODE) != 0;
	e->admin = (flags & FLAG_ADMIN) != 0;
	e->downstream = (flags & FLAG_DOWNSTREAM) != 0;
	if ((rc = get_counted(r, LY_SELECTORS_MAX, sizeof(*e->selectors), "selectors", &n, &p, err)) != LY_OK)
		goto out;
	e->selectors = p;
	for (size_t i = 0; i < n; i++) {
		char *type = NULL, *value = NULL;
		rc = get_str(r, "selector type", LY_SELECTOR_MAX, false, &type, err);
		if (rc == LY_OK)
			rc = get_str(r, "selector value", LY_SELECTOR_MAX, false, &value, err);
		if (rc == LY_OK)
			rc = ly_selector_set(&e->selectors[i], type, value, err);
		free(type);
		free(value);
		if (rc != LY_OK)
			goto out;
		e->n_selectors++;
	}
	if ((rc = get_counted(r, LY_DNS_NAMES_MAX, sizeof(*e->dns_names), "DNS names", &n, &p, err)) != LY_OK)
		goto out;
	e->dns_names = p;
	for (size_t i = 0; i < n; i++) {
		rc = get_str(r, "DNS name", LY_DNS_NAME_MAX, false, &e->dns_names[i], err);
		if (rc != LY_OK)
			goto out;
		e->n_dns_names++;
	}
	if (fed) {
		if ((rc = get_be(r, 2, &n, err)) != LY_OK)
			goto out;
		if (n == 0 || n > LY_ENTRY_FEDERATES_WITH_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "%" PRIu64 " federated trust domains (1 to %d)", n,
			    LY_ENTRY_FEDERATES_WITH_MAX);
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			char *td_name = NULL;
			if ((rc = get_str(r, "federated trust domain", LY_TRUST_DOMAIN_MAX, false, &td_name, err)) != LY_OK)
				goto out;
			rc = ly_entry_add_federates_with(e, td_name, err);
			free(td_name);
			if (rc != LY_OK)
				goto out;
		}
	}
	rc = ly_entry_id_check(e->entry_id, err);
	if (rc == LY_OK)
		rc = ly_entry_validate(e, td, err);
	if (rc != LY_OK)
		goto out;
	if ((rc = get_u8(r, &has, err)) != LY_OK)
		goto out;
	if (has > 1) {
		rc = ly_error_set(err, LY_E_INVALID, "has_svid is %u", has);
		goto out;
	}
	if (has == 1) {
		uint8_t stale;
		size_t count;
		s->present = true;
		if ((rc = get_blob(r, "leaf", LY_CERT_DER_MAX, &s->leaf, err)) != LY_OK ||
		    (rc = get_blob(r, "intermediates", LY_CHAIN_DER_MAX, &s->inter, err)) != LY_OK ||
		    (rc = get_blob(r, "key", LY_KEY_DER_MAX, &s->key, err)) != LY_OK ||
		    (rc = get_i64(r, &s->nb, err)) != LY_OK || (rc = get_i64(r, &s->na, err)) != LY_OK ||
		    (rc = get_i64(r, &s->renew, err)) != LY_OK || (rc = get_u8(r, &stale, err)) != LY_OK)
			goto out;
		if (stale > 1) {
			rc = ly_error_set(err, LY_E_INVALID, "stale is %u", stale);
			goto out;
		}
		s->stale = stale == 1;
		if (e->node) {
			rc = ly_error_set(err, LY_E_INVALID, "a node entry with an SVID");
			goto out;
		}
		rc = ly_der_split(s->leaf.der, s->leaf.len, 1, LY_CERT_DER_MAX, NULL, &count, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "leaf");
			goto out;
		}
		if (s->inter.len > 0) {
			rc = ly_der_split(s->inter.der, s->inter.len, LY_CHAIN_CERTS_MAX - 1, LY_CHAIN_DER_MAX, NULL,
			    &count, err);
			if (rc != LY_OK) {
				rc = ly_error_wrap(err, rc, "intermediates");
				goto out;
			}
		}
		if ((rc = check_key(&s->key, err)) != LY_OK ||
		    (rc = check_window(s->nb, s->na, s->renew, err)) != LY_OK)
			goto out;
	}
	rc = end_record(r, err);
	if (rc != LY_OK)
		goto out;
	*out = e;
	e = NULL;
out:
	ly_entry_free(e);
	return rc;
}

/* Empties the cache (an empty snapshot deletes every entry). */
static void
clear_cache(struct ly_cache *c)
{
	struct ly_cache_update u;
	memset(&u, 0, sizeof(u));
	u.snapshot = true;
	if (ly_cache_apply(c, &u, NULL, NULL) != LY_OK)
		return; /* an empty snapshot allocates nothing: cannot fail */
}

/* Puts one decoded entry (taken) and its SVID into the cache. */
static ly_status
restore_entry(struct ly_cache *c, struct ly_entry *e, const struct svid_rec *s, int64_t revision, int64_t now,
    struct ly_verifier *v, struct ly_error *err)
{
	ly_status rc;
	struct ly_cache_update u;
	struct ly_cache_item it;
	struct ly_buf chain = LY_BUF_INIT, key = LY_BUF_INIT;
	char *entry_id = NULL;

	if (ly_cache_get(c, e->entry_id, &it)) {
		rc = ly_error_set(err, LY_E_INVALID, "entry %s appears twice", e->entry_id);
		ly_entry_free(e);
		return rc;
	}
	entry_id = strdup(e->entry_id);
	if (entry_id == NULL) {
		ly_entry_free(e);
		return ly_error_set(err, LY_E_NOMEM, "allocating");
	}
	memset(&u, 0, sizeof(u));
	u.revision = revision;
	u.entries = &e;
	u.n_entries = 1;
	rc = ly_cache_apply(c, &u, NULL, err);
	ly_entry_free(e); /* NULL when the cache took it */
	if (rc != LY_OK)
		goto out;
	if (!ly_cache_get(c, entry_id, &it)) {
		rc = ly_error_set(err, LY_E_INVALID, "entry %s refused by the cache", entry_id);
		goto out;
	}
	if (!s->present || s->na <= now)
		goto out; /* expired SVIDs are dropped; the entry stays */
	if ((rc = ly_buf_set(&chain, s->leaf.der, s->leaf.len, err)) != LY_OK ||
	    (rc = ly_buf_append(&chain, s->inter.der, s->inter.len, LY_CHAIN_DER_MAX, err)) != LY_OK ||
	    (rc = ly_buf_set(&key, s->key.der, s->key.len, err)) != LY_OK)
		goto out;
	if (v != NULL && ly_verify_x509svid_key_der(v, chain.data, chain.len, key.data, key.len, it.entry->spiffe_id,
			     now, NULL, NULL, NULL) != LY_OK)
		goto out; /* counted and logged by the verifier; the entry stays */
	rc = ly_cache_set_svid(c, entry_id, it.entry->spiffe_id, &chain, &key, s->nb, s->na, s->renew, NULL, err);
	if (rc != LY_OK)
		goto out;
	if (s->stale)
		(void)ly_cache_mark_stale(c, entry_id);
out:
	ly_buf_free(&chain);
	ly_buf_free_secret(&key);
	free(entry_id);
	return rc;
}

ly_status
ly_state_decode_cache(const uint8_t *data, size_t len, int64_t now, struct ly_verifier *v, struct ly_cache *c,
    struct ly_error *err)
{
	ly_status rc;
	struct rd body, rec;
	struct meta meta;
	bool more = true;
	size_t index;
	uint8_t type = 0;

	if (ly_cache_count(c) != 0)
		return ly_error_set(err, LY_E_INVALID, "state: loading into a cache that is not empty");
	rc = open_file(data, len, LY_STATE_KIND_CACHE, &body, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "state: cache file");
	memset(&meta, 0, sizeof(meta));
	for (index = 0;; index++) {
		rc = next_record(&body, &type, &rec, &more, err);
		if (rc != LY_OK || !more)
			break;
		if (index == 0) {
			if (type != REC_META) {
				rc = ly_error_set(err, LY_E_INVALID, "the first record is not meta");
				break;
			}
			rc = read_meta(&rec, &meta, err);
			if (rc == LY_OK && strcmp(meta.td, ly_cache_trust_domain(c)) != 0)
				rc = ly_error_set(err, LY_E_INVALID, "for trust domain %s, not %s", meta.td,
				    ly_cache_trust_domain(c));
		} else if (type == REC_ENTRY || type == REC_ENTRY_FED) {
			struct ly_entry *e = NULL;
			struct svid_rec s;
			if (index > LY_AGENT_ENTRIES_MAX) {
				rc = ly_error_set(err, LY_E_LIMIT, "more than %d entries", LY_AGENT_ENTRIES_MAX);
				break;
			}
			rc = read_entry(&rec, meta.td, type == REC_ENTRY_FED, &e, &s, err);
			if (rc == LY_OK)
				rc = restore_entry(c, e, &s, meta.revision, now, v, err);
		} else {
			rc = ly_error_set(err, LY_E_INVALID, "%s record in a cache file (type 0x%02x)",
			    type == REC_META ? "a second meta" : "an unexpected", type);
		}
		if (rc != LY_OK)
			break;
	}
	if (rc == LY_OK && index == 0)
		rc = ly_error_set(err, LY_E_INVALID, "no meta record");
	if (rc == LY_OK) {
		/* The revision, also when there is no entry. */
		struct ly_cache_update u;
		memset(&u, 0, sizeof(u));
		u.revision = meta.revision;
		rc = ly_cache_apply(c, &u, NULL, err);
	}
	if (rc != LY_OK) {
		if (more)
			rc = ly_error_wrap(err, rc, "record %zu (%s)", index, rec_name(type));
		clear_cache(c);
		return ly_error_wrap(err, rc, "state: cache file");
	}
	return LY_OK;
}

/* ---- files ---- */

static ly_status
join_path(const char *dir, const char *name, char *out, size_t size, struct ly_error *err)
{
	if (dir == NULL || name == NULL || name[0] == '\0' || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return ly_error_set(err, LY_E_INVALID, "state: bad directory or file name");
	int n = snprintf(out, size, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= size)
		return ly_error_set(err, LY_E_LIMIT, "state: path too long");
	return LY_OK;
}

/* lib/atomicfile.h's temporary files, and the ".<name>.tmp.XXXXXX" ones of earlier versions. */
static bool
is_temp_name(const char *name)
{
	return ly_atomicfile_is_temp(name) || (name[0] == '.' && strstr(name, ".tmp.") != NULL);
}

ly_status
ly_state_dir_prepare(const char *dir, struct ly_error *err)
{
	if (dir == NULL || dir[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "state: no data directory");
	/* Ours, 0700, not a link (fsperm.h): the one rule for every data directory. */
	ly_status rc = ly_fsperm_private_dir(AT_FDCWD, dir, 0, NULL, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "state");
	DIR *d = opendir(dir);
	if (d == NULL)
		return ly_error_set(err, LY_E_IO, "state: reading %s: %s", dir, strerror(errno));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (is_temp_name(de->d_name))
			(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	return LY_OK;
}

ly_status
ly_state_write_file(const char *dir, const char *name, const uint8_t *data, size_t len, struct ly_error *err)
{
	char final[PATH_MAX];
	ly_status rc;

	LY_TRY(join_path(dir, name, final, sizeof(final), err));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ly_error_set(err, LY_E_IO, "state: opening %s: %s", dir, strerror(errno));
	rc = ly_atomicfile_write(dfd, name, data, len, 0600, err);
	(void)close(dfd);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "state: %s", dir);
	return LY_OK;
}

ly_status
ly_state_read_file(const char *dir, const char *name, struct ly_buf *out, struct ly_error *err)
{
	ly_status rc;
	char path[PATH_MAX];

	LY_TRY(join_path(dir, name, path, sizeof(path), err));
	/* A regular file of ours, 0600, not through a link (fsperm.h). */
	int fd;
	if ((rc = ly_fsperm_openat(AT_FDCWD, path, path, O_RDONLY, 0, &fd, err)) != LY_OK)
		return ly_error_wrap(err, rc, "state");
	rc = ly_fileread_fd(fd, path, LY_AGENT_STATE_FILE_MAX, out, err);
	close(fd);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "state");
	return LY_OK;
}

ly_status
ly_state_save_agent(const char *dir, const struct ly_agent_state *st, int64_t now, struct ly_error *err)
{
	struct ly_buf b = LY_BUF_INIT;
	LY_TRY(ly_state_encode_agent(st, now, &b, err));
	ly_status rc = ly_state_write_file(dir, LY_STATE_AGENT_FILE, b.data, b.len, err);
	ly_buf_free_secret(&b);
	return rc;
}

ly_status
ly_state_load_agent(const char *dir, const char *expected_td, int64_t now, struct ly_agent_state *out,
    struct ly_error *err)
{
	struct ly_buf b = LY_BUF_INIT;
	ly_agent_state_init(out);
	LY_TRY(ly_state_read_file(dir, LY_STATE_AGENT_FILE, &b, err));
	ly_status rc = ly_state_decode_agent(b.data, b.len, expected_td, now, out, err);
	ly_buf_free_secret(&b);
	return rc;
}

ly_status
ly_state_save_cache(const char *dir, const struct ly_cache *c, int64_t now, struct ly_error *err)
{
	struct ly_buf b = LY_BUF_INIT;
	LY_TRY(ly_state_encode_cache(c, now, &b, err));
	ly_status rc = ly_state_write_file(dir, LY_STATE_CACHE_FILE, b.data, b.len, err);
	ly_buf_free_secret(&b);
	return rc;
}

ly_status
ly_state_load_cache(const char *dir, int64_t now, struct ly_verifier *v, struct ly_cache *c, struct ly_error *err)
{
	struct ly_buf b = LY_BUF_INIT;
	LY_TRY(ly_state_read_file(dir, LY_STATE_CACHE_FILE, &b, err));
	ly_status rc = ly_state_decode_cache(b.data, b.len, now, v, c, err);
	ly_buf_free_secret(&b);
	return rc;
}
