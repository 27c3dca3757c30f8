/*
 * testutil_agent.h: test-only fixtures for the agent's pure modules
 * (cache, rotation, verify, state, workload messages): registration
 * entries, updates, and X.509-SVIDs made at test time with OpenSSL
 * (testutil_x509.h). Static inline; failures abort() (a fixture that cannot
 * be made is a broken test). Everything returned is the caller's.
 */
#ifndef LANYARD_TESTUTIL_AGENT_H
#define LANYARD_TESTUTIL_AGENT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "agent/cache.h"
#include "lib/entry.h"
#include "lib/keys.h"
#include "testutil_x509.h"

#define TA_TD "example.org"
#define TA_PARENT "spiffe://example.org/lanyard/agent/join_token/abc"

/*
 * A workload entry `id` for `spiffe_id`, created at `created_at`, with
 * `hint` (may be NULL) and the selectors that follow (NULL-terminated).
 */
static inline struct ly_entry *
ta_entry(const char *id, const char *spiffe_id, int64_t created_at, const char *hint, ...)
{
	struct ly_entry *e = NULL;
	va_list ap;
	TU_CHECK(ly_entry_new(&e, NULL) == LY_OK);
	TU_CHECK(ly_entry_set_string(&e->entry_id, id, NULL) == LY_OK);
	TU_CHECK(ly_entry_set_string(&e->spiffe_id, spiffe_id, NULL) == LY_OK);
	TU_CHECK(ly_entry_set_string(&e->parent_id, TA_PARENT, NULL) == LY_OK);
	TU_CHECK(ly_entry_set_string(&e->hint, hint, NULL) == LY_OK);
	e->created_at = created_at;
	e->revision = 1;
	va_start(ap, hint);
	for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *))
		TU_CHECK(ly_entry_add_selector(e, s, NULL) == LY_OK);
	va_end(ap);
	return e;
}

/* Applies one update of `n` entries (taken) and `ndel` deletions; frees what the cache left. */
static inline void
ta_apply(struct ly_cache *c, bool snapshot, int64_t revision, struct ly_entry **es, size_t n,
    const char *const *del, size_t ndel, struct ly_cache_changes *cs)
{
	struct ly_cache_update u;
	memset(&u, 0, sizeof(u));
	u.snapshot = snapshot;
	u.revision = revision;
	u.entries = es;
	u.n_entries = n;
	u.deleted_ids = del;
	u.n_deleted = ndel;
	struct ly_error err;
	ly_status rc = ly_cache_apply(c, &u, cs, &err);
	if (rc != LY_OK) {
		fprintf(stderr, "ta_apply: %s\n", err.msg);
		abort();
	}
	for (size_t i = 0; i < n; i++)
		ly_entry_free(es[i]);
}

/* Upserts one entry (delta). */
static inline void
ta_put(struct ly_cache *c, struct ly_entry *e, struct ly_cache_changes *cs)
{
	ta_apply(c, false, e->revision, &e, 1, NULL, 0, cs);
}

/* Deletes one entry (delta). */
static inline void
ta_del(struct ly_cache *c, const char *id, struct ly_cache_changes *cs)
{
	ta_apply(c, false, 0, NULL, 0, &id, 1, cs);
}

/*
 * An X.509-SVID for `spiffe_id` with key `key`, issued by the PKI's
 * intermediate, valid [TU_NOW + nb, TU_NOW + na]: the chain (leaf +
 * intermediate) and the key's PKCS#8 DER.
 */
struct ta_svid {
	struct ly_buf chain;
	struct ly_buf key;
	int64_t nb, na;
};

static inline void
ta_svid_make(struct tu_pki *pki, EVP_PKEY *key, const char *spiffe_id, long nb, long na, struct ta_svid *out)
{
	struct tu_spec s = tu_leaf_spec(spiffe_id);
	s.not_before = nb;
	s.not_after = na;
	X509 *leaf = tu_make(&s, key, pki->inter, pki->int_key);
	X509 *certs[2] = { leaf, pki->inter };
	tu_chain(certs, 2, &out->chain);
	X509_free(leaf);
	ly_buf_init(&out->key, 0, false);
	TU_CHECK(ly_key_to_pkcs8_der(key, &out->key, NULL) == LY_OK);
	out->nb = TU_NOW + nb;
	out->na = TU_NOW + na;
}

static inline void
ta_svid_free(struct ta_svid *s)
{
	ly_buf_free(&s->chain);
	ly_buf_free_secret(&s->key);
}

/* Gives entry `id` an SVID for its SPIFFE ID (renewal at 50%). */
static inline void
ta_set_svid(struct ly_cache *c, struct tu_pki *pki, const char *id, long nb, long na, struct ly_cache_changes *cs)
{
	struct ly_cache_item it;
	struct ta_svid s;
	struct ly_error err;
	TU_CHECK(ly_cache_get(c, id, &it));
	ta_svid_make(pki, pki->leaf_key, it.entry->spiffe_id, nb, na, &s);
	int64_t renew = (s.nb * 1000 + s.na * 1000) / 2;
	if (ly_cache_set_svid(c, id, it.entry->spiffe_id, &s.chain, &s.key, s.nb, s.na, renew, cs, &err) != LY_OK) {
		fprintf(stderr, "ta_set_svid: %s\n", err.msg);
		abort();
	}
	ta_svid_free(&s);
}

/* Parses NULL-terminated selector strings into an array (free with ly_selectors_free). */
static inline struct ly_selector *
ta_selectors(size_t *n, ...)
{
	struct ly_selector *v = NULL;
	va_list ap;
	*n = 0;
	va_start(ap, n);
	for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
		v = realloc(v, (*n + 1) * sizeof(*v));
		TU_CHECK(v != NULL);
		TU_CHECK(ly_selector_parse_str(s, &v[*n], NULL) == LY_OK);
		(*n)++;
	}
	va_end(ap);
	return v;
}

#endif /* LANYARD_TESTUTIL_AGENT_H */
