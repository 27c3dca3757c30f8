/*
 * fuzz_agent_sync.c: what the agent's sync takes from the server
 * (agent/agentapi_msg.h, as the watch and GetBundle call it). The first
 * byte picks the message: even, an EntriesUpdate (agent.proto), decoded
 * and applied to a fresh cache as the watch does; odd, a Bundle, decoded.
 * Whatever an update leaves in the cache must be valid entries of the
 * trust domain.
 */
#include <stdint.h>
#include <stdlib.h>

#include "agent/cache.h"
#include "agent/agentapi_msg.h"
#include "lib/caps.h"
#include "lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
update(const uint8_t *d, size_t n)
{
	struct ly_agentapi_update up;
	struct ly_cache *c = NULL;

	if (ly_agentapi_update_parse(d, n, NULL, NULL, &up, NULL) != LY_OK)
		return;
	if (up.u.n_entries + up.n_refused != up.msg->n_entries || up.u.n_entries > LY_AGENT_ENTRIES_MAX ||
	    up.u.n_deleted > LY_AGENT_ENTRIES_MAX)
		abort();
	if (ly_cache_new("example.org", &c, NULL) != LY_OK)
		goto out;
	if (ly_cache_apply(c, &up.u, NULL, NULL) == LY_OK) {
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
	ly_cache_free(c);
	ly_agentapi_update_cleanup(&up);
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
	struct ly_bundle *b = NULL;
	if (ly_agentapi_bundle_parse(data + 1, size - 1, "example.org", &b, NULL) == LY_OK &&
	    (ly_bundle_x509_authority_count(b) == 0 || ly_bundle_sequence(b) > INT64_MAX))
		abort();
	ly_bundle_free(b);
	return 0;
}
