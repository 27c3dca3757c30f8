/* keycount.c: see keycount.h. */
#include "rpc/keycount.h"

#include <stdlib.h>
#include <string.h>

struct ly_keycount_entry {
	struct ly_keycount_entry *next;
	size_t count;
	size_t len;
	unsigned char key[];
};

static uint64_t
hash(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

void
ly_keycount_cleanup(struct ly_keycount *t)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct ly_keycount_entry *e = t->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(t->buckets);
	t->buckets = NULL;
	t->nbuckets = t->nentries = 0;
}

static struct ly_keycount_entry **
find(const struct ly_keycount *t, const void *key, size_t len)
{
	if (t->nbuckets == 0)
		return NULL;
	struct ly_keycount_entry **pp = &t->buckets[hash(key, len) & (t->nbuckets - 1)];
	for (; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->len == len && memcmp((*pp)->key, key, len) == 0)
			return pp;
	}
	return pp;
}

/* Doubles the bucket array (16 at first); on failure the table stays as it was. */
static ly_status
grow(struct ly_keycount *t, struct ly_error *err)
{
	size_t n = t->nbuckets != 0 ? t->nbuckets * 2 : 16;
	struct ly_keycount_entry **b = calloc(n, sizeof(*b));

	if (b == NULL)
		return ly_error_set(err, LY_E_NOMEM, "key count: out of memory");
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct ly_keycount_entry *e = t->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			size_t j = hash(e->key, e->len) & (n - 1);
			e->next = b[j];
			b[j] = e;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
	return LY_OK;
}

ly_status
ly_keycount_take(struct ly_keycount *t, const void *key, size_t len, size_t max,
    struct ly_error *err)
{
	if (len > LY_KEYCOUNT_KEY_MAX)
		return ly_error_set(err, LY_E_LIMIT, "key count: key over %d bytes", LY_KEYCOUNT_KEY_MAX);
	struct ly_keycount_entry **pp = find(t, key, len);
	if (pp != NULL && *pp != NULL) {
		if ((*pp)->count >= max)
			return ly_error_set(err, LY_E_LIMIT, "at the limit of %zu", max);
		(*pp)->count++;
		return LY_OK;
	}
	if (max == 0)
		return ly_error_set(err, LY_E_LIMIT, "at the limit of 0");
	if (t->nentries >= t->nbuckets) {
		LY_TRY(grow(t, err));
		pp = find(t, key, len);
	}
	struct ly_keycount_entry *e = malloc(sizeof(*e) + len);
	if (e == NULL)
		return ly_error_set(err, LY_E_NOMEM, "key count: out of memory");
	e->next = NULL;
	e->count = 1;
	e->len = len;
	if (len > 0)
		memcpy(e->key, key, len);
	*pp = e;
	t->nentries++;
	return LY_OK;
}

bool
ly_keycount_give(struct ly_keycount *t, const void *key, size_t len)
{
	struct ly_keycount_entry **pp = find(t, key, len);

	if (pp == NULL || *pp == NULL)
		return false;
	struct ly_keycount_entry *e = *pp;
	if (--e->count == 0) {
		*pp = e->next;
		free(e);
		t->nentries--;
	}
	return true;
}

size_t
ly_keycount_get(const struct ly_keycount *t, const void *key, size_t len)
{
	struct ly_keycount_entry **pp = find(t, key, len);

	return pp != NULL && *pp != NULL ? (*pp)->count : 0;
}

void
ly_keycount_peer_addr(const char *peer, size_t *len)
{
	size_t n = strlen(peer);

	*len = n;
	if (strncmp(peer, "ipv4:", 5) != 0 && strncmp(peer, "ipv6:", 5) != 0)
		return;
	const char *colon = strrchr(peer, ':');
	if (colon == NULL || colon < peer + 5)
		return;
	/* "ipv6:[::1]:5000": the port follows the bracket; "ipv6:[::1]" has none. */
	if (peer[4 + 1] == '[' && colon[-1] != ']')
		return;
	*len = (size_t)(colon - peer);
}
