/*
 * fuzz_agent_sync.c: what the agent's sync takes from the server
 * (agent/sync_internal.h). The first byte picks the message: even, an
 * EntriesUpdate (agent.proto), its entries converted and applied to a
 * fresh cache as the watch does; odd, a Bundle, converted. Whatever an
 * update leaves in the cache must be valid entries of the trust domain.
 */
#include <stdint.h>
#include <stdlib.h>

#include "agent/cache.h"
#include "agent/sync_internal.h"
#include "lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
update(const uint8_t *d, size_t n)
{
	Lanyard__Agent__V1__EntriesUpdate *m = lanyard__agent__v1__entries_update__unpack(NULL, n, d);
	struct ly_entry **es = NULL;
	struct ly_cache *c = NULL;
	size_t k = 0;

	if (m == NULL || m->n_entries > 4096 || ly_cache_new("example.org", &c, NULL) != LY_OK)
		goto out;
	if ((es = calloc(m->n_entries + 1, sizeof(*es))) == NULL)
		goto out;
	for (size_t i = 0; i < m->n_entries; i++)
		k += ly_sync_entry_from_pb(m->entries[i], &es[k], NULL) == LY_OK;
	for (size_t i = 0; i < m->n_deleted_entry_ids; i++)
		if (m->deleted_entry_ids[i] == NULL)
			goto out;
	struct ly_cache_update u = { m->revision, m->snapshot != 0, es, k,
		(const char *const *)m->deleted_entry_ids, m->n_deleted_entry_ids };
	if (ly_cache_apply(c, &u, NULL, NULL) == LY_OK) {
		for (size_t i = 0; i < ly_cache_count(c); i++) {
			struct ly_cache_item it;
			ly_cache_item_at(c, i, &it);
			struct ly_entry *copy = NULL;
			if (ly_entry_copy(it.entry, &copy, NULL) != LY_OK)
				abort();
			if (ly_entry_validate(copy, "example.org", NULL) != LY_OK)
				abort(); /* nothing invalid enters the cache */
			ly_entry_free(copy);
		}
	}
out:
	for (size_t i = 0; es != NULL && i < k; i++)
		ly_entry_free(es[i]);
	free(es);
	ly_cache_free(c);
	if (m != NULL)
		lanyard__agent__v1__entries_update__free_unpacked(m, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ly_log_set_level(LY_LOG_ERROR);
	if (size < 1)
		return 0;
	if ((data[0] & 1) == 0) {
		update(data + 1, size - 1);
		return 0;
	}
	Lanyard__Agent__V1__Bundle *m = lanyard__agent__v1__bundle__unpack(NULL, size - 1, data + 1);
	struct ly_bundle *b = NULL;
	if (m != NULL && ly_sync_bundle_from_pb(m, "example.org", &b, NULL) == LY_OK &&
	    (ly_bundle_x509_authority_count(b) == 0 || ly_bundle_sequence(b) > INT64_MAX))
		abort();
	ly_bundle_free(b);
	if (m != NULL)
		lanyard__agent__v1__bundle__free_unpacked(m, NULL);
	return 0;
}
