/* keymap.c: see keymap.h. */
#include "agent/keymap.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

/* Grow when the load factor would pass 1; start at 16 buckets. */
#define KEYMAP_MIN_BUCKETS 16

ly_status
ly_keymap_init(struct ly_keymap *m, struct ly_error *err)
{
	memset(m, 0, sizeof(*m));
	if (RAND_bytes(m->sipkey, sizeof(m->sipkey)) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "keymap: drawing a hash key");
	return LY_OK;
}

void
ly_keymap_cleanup(struct ly_keymap *m)
{
	if (m == NULL)
		return;
	free(m->buckets);
	m->buckets = NULL;
	m->nbuckets = 0;
	m->count = 0;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                       \
	do {                                                           \
		v0 += v1;                                              \
		v1 = ROTL(v1, 13);                                     \
		v1 ^= v0;                                              \
		v0 = ROTL(v0, 32);                                     \
		v2 += v3;                                              \
		v3 = ROTL(v3, 16);                                     \
		v3 ^= v2;                                              \
		v0 += v3;                                              \
		v3 = ROTL(v3, 21);                                     \
		v3 ^= v0;                                              \
		v2 += v1;                                              \
		v1 = ROTL(v1, 17);                                     \
		v1 ^= v2;                                              \
		v2 = ROTL(v2, 32);                                     \
	} while (0)

static uint64_t
load64_le(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* SipHash-2-4 (Aumasson and Bernstein), the reference algorithm. */
uint64_t
ly_keymap_hash(const struct ly_keymap *m, const void *key, size_t len)
{
	const uint8_t *in = key;
	uint64_t k0 = load64_le(m->sipkey), k1 = load64_le(m->sipkey + 8);
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
	uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
	uint64_t v3 = 0x7465646279746573ULL ^ k1;
	size_t full = len - (len % 8);

	for (size_t i = 0; i < full; i += 8) {
		uint64_t mi = load64_le(in + i);
		v3 ^= mi;
		SIPROUND;
		SIPROUND;
		v0 ^= mi;
	}
	uint64_t b = ((uint64_t)len) << 56;
	for (size_t i = 0; i < len % 8; i++)
		b |= ((uint64_t)in[full + i]) << (8 * i);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static struct ly_keymap_node *
find_hashed(const struct ly_keymap *m, uint64_t h, const void *key, size_t len)
{
	if (m->nbuckets == 0)
		return NULL;
	for (struct ly_keymap_node *n = m->buckets[h & (m->nbuckets - 1)]; n != NULL; n = n->next) {
		if (n->hash == h && n->key_len == len && (len == 0 || memcmp(n->key, key, len) == 0))
			return n;
	}
	return NULL;
}

struct ly_keymap_node *
ly_keymap_find(const struct ly_keymap *m, const void *key, size_t len)
{
	if (m->count == 0)
		return NULL;
	return find_hashed(m, ly_keymap_hash(m, key, len), key, len);
}

struct ly_keymap_node *
ly_keymap_find_str(const struct ly_keymap *m, const char *key)
{
	return ly_keymap_find(m, key, strlen(key));
}

/* Rehashes every node into a table of `nb` buckets (a power of two). */
static ly_status
resize(struct ly_keymap *m, size_t nb, struct ly_error *err)
{
	struct ly_keymap_node **nbk = calloc(nb, sizeof(*nbk));
	if (nbk == NULL)
		return ly_error_set(err, LY_E_NOMEM, "keymap: allocating %zu buckets", nb);
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct ly_keymap_node *n = m->buckets[i];
		while (n != NULL) {
			struct ly_keymap_node *next = n->next;
			size_t j = n->hash & (nb - 1);
			n->next = nbk[j];
			nbk[j] = n;
			n = next;
		}
	}
	free(m->buckets);
	m->buckets = nbk;
	m->nbuckets = nb;
	return LY_OK;
}

ly_status
ly_keymap_insert(struct ly_keymap *m, struct ly_keymap_node *node, struct ly_error *err)
{
	node->hash = ly_keymap_hash(m, node->key, node->key_len);
	if (find_hashed(m, node->hash, node->key, node->key_len) != NULL)
		return ly_error_set(err, LY_E_INVALID, "keymap: duplicate key");
	if (m->count + 1 > m->nbuckets)
		LY_TRY(resize(m, m->nbuckets == 0 ? KEYMAP_MIN_BUCKETS : m->nbuckets * 2, err));
	size_t j = node->hash & (m->nbuckets - 1);
	node->next = m->buckets[j];
	m->buckets[j] = node;
	m->count++;
	return LY_OK;
}

void
ly_keymap_remove(struct ly_keymap *m, struct ly_keymap_node *node)
{
	struct ly_keymap_node **pp = &m->buckets[node->hash & (m->nbuckets - 1)];
	while (*pp != NULL) {
		if (*pp == node) {
			*pp = node->next;
			node->next = NULL;
			m->count--;
			return;
		}
		pp = &(*pp)->next;
	}
}

void
ly_keymap_rekey_same(struct ly_keymap_node *node, const uint8_t *key)
{
	node->key = key;
}
