/*
 * cache_jwt.c: the JWT-SVIDs of the agent's cache (cache.h): the key of a
 * (SPIFFE ID, audience set), lookup of a token still within the first
 * half of its lifetime, insertion with eviction at LY_AGENT_JWT_CACHE_MAX.
 *
 * Ownership: a cached record owns its key bytes, its entry ID and a copy
 * of its token (a bearer secret, wiped when it is replaced or released,
 * cache_jwt_release). ly_cache_jwt_get lends the token until the next
 * mutating call.
 */
#include "agent/cache_internal.h"

#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

/* ---- JWT-SVIDs ---- */

static int
str_ptr_cmp(const void *pa, const void *pb)
{
	const char *const *a = pa, *const *b = pb;
	return strcmp(*a, *b);
}

static void
put_u32(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * The cache key of (spiffe_id, audience set): every string length-prefixed
 * (so no two sets share a key, whatever bytes an audience holds), the
 * audiences sorted and deduplicated. NULL on a bad argument or no memory.
 */
static uint8_t *
jwt_key(const char *spiffe_id, const char *const *aud, size_t naud, size_t *len)
{
	const char *sorted[LY_JWT_AUDIENCES_MAX];
	if (spiffe_id == NULL || aud == NULL || naud == 0 || naud > LY_JWT_AUDIENCES_MAX)
		return NULL;
	size_t total = 4 + strlen(spiffe_id);
	for (size_t i = 0; i < naud; i++) {
		if (aud[i] == NULL)
			return NULL;
		sorted[i] = aud[i];
	}
	qsort(sorted, naud, sizeof(sorted[0]), str_ptr_cmp);
	for (size_t i = 0; i < naud; i++)
		if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0)
			total += 4 + strlen(sorted[i]);
	uint8_t *k = malloc(total);
	if (k == NULL)
		return NULL;
	size_t off = 0, n = strlen(spiffe_id);
	put_u32(k, n);
	memcpy(k + 4, spiffe_id, n);
	off = 4 + n;
	for (size_t i = 0; i < naud; i++) {
		if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
			continue;
		n = strlen(sorted[i]);
		put_u32(k + off, n);
		memcpy(k + off + 4, sorted[i], n);
		off += 4 + n;
	}
	*len = total;
	return k;
}

/* Reusable while less than half of the lifetime has passed. */
static bool
jwt_fresh(const struct cache_jwt *j, int64_t now)
{
	return now < j->issued_at + (j->expires_at - j->issued_at) / 2;
}

const char *
ly_cache_jwt_get(const struct ly_cache *c, const char *spiffe_id, const char *const *aud, size_t naud, int64_t now)
{
	size_t klen = 0;
	uint8_t *k = jwt_key(spiffe_id, aud, naud, &klen);
	if (k == NULL)
		return NULL;
	struct ly_keymap_node *n = ly_keymap_find(&c->jwts, k, klen);
	free(k);
	if (n == NULL)
		return NULL;
	const struct cache_jwt *j = LY_KEYMAP_ENTRY(n, struct cache_jwt, node);
	return jwt_fresh(j, now) ? j->token : NULL;
}

ly_status
ly_cache_jwt_put(struct ly_cache *c, const char *entry_id, const char *spiffe_id, const char *const *aud,
    size_t naud, const char *token, int64_t issued_at, int64_t expires_at, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct cache_jwt *j = NULL;
	char *tok = NULL;

	if (entry_id == NULL || spiffe_id == NULL || token == NULL)
		return ly_error_set(err, LY_E_INVALID, "JWT cache: entry, SPIFFE ID and token are required");
	if (naud == 0 || naud > LY_JWT_AUDIENCES_MAX)
		return ly_error_set(err, naud == 0 ? LY_E_INVALID : LY_E_LIMIT,
		    "JWT cache: 1 to %d audiences", LY_JWT_AUDIENCES_MAX);
	if (issued_at >= expires_at)
		return ly_error_set(err, LY_E_INVALID, "JWT cache: token expires before it is issued");
	if (cache_find_rec(c, entry_id) == NULL)
		return ly_error_set(err, LY_E_NOT_FOUND, "JWT cache: no entry %.64s", entry_id);
	tok = strdup(token);
	if (tok == NULL)
		return ly_error_set(err, LY_E_NOMEM, "JWT cache: copying the token");
	size_t klen = 0;
	uint8_t *k = jwt_key(spiffe_id, aud, naud, &klen);
	if (k == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "JWT cache: building the key");
		goto out;
	}
	struct ly_keymap_node *n = ly_keymap_find(&c->jwts, k, klen);
	if (n != NULL) {
		/* Same key: replace the token in place. */
		struct cache_jwt *old = LY_KEYMAP_ENTRY(n, struct cache_jwt, node);
		char *eid = strdup(entry_id);
		if (eid == NULL) {
			free(k);
			rc = ly_error_set(err, LY_E_NOMEM, "JWT cache: copying the entry ID");
			goto out;
		}
		free(old->entry_id);
		old->entry_id = eid;
		ly_free_secret_str(old->token);
		old->token = tok;
		tok = NULL;
		old->issued_at = issued_at;
		old->expires_at = expires_at;
		free(k);
		goto out;
	}
	if (c->njwt >= LY_AGENT_JWT_CACHE_MAX) {
		for (size_t i = c->njwt; i > 0; i--)
			if (!jwt_fresh(c->jwtv[i - 1], issued_at))
				cache_jwt_release(c, c->jwtv[i - 1]);
		if (c->njwt >= LY_AGENT_JWT_CACHE_MAX) {
			size_t oldest = 0;
			for (size_t i = 1; i < c->njwt; i++)
				if (c->jwtv[i]->issued_at < c->jwtv[oldest]->issued_at)
					oldest = i;
			cache_jwt_release(c, c->jwtv[oldest]);
		}
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL || (j->entry_id = strdup(entry_id)) == NULL ||
	    !cache_grow_ptrs(&c->jwtv, &c->capjwt, c->njwt + 1, sizeof(*c->jwtv))) {
		free(k);
		rc = ly_error_set(err, LY_E_NOMEM, "JWT cache: allocating");
		goto out;
	}
	j->kbytes = k;
	j->klen = klen;
	j->node.key = k;
	j->node.key_len = klen;
	rc = ly_keymap_insert(&c->jwts, &j->node, err);
	if (rc != LY_OK)
		goto out;
	j->token = tok;
	tok = NULL;
	j->issued_at = issued_at;
	j->expires_at = expires_at;
	j->slot = c->njwt;
	c->jwtv[c->njwt++] = j;
	j = NULL;
out:
	if (j != NULL) {
		free(j->kbytes);
		free(j->entry_id);
		free(j);
	}
	ly_free_secret_str(tok);
	return rc;
}

size_t
ly_cache_jwt_count(const struct ly_cache *c)
{
	return c->njwt;
}
