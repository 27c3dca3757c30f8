/*
 * agent_api_pending.c: the agent API's pending attestations
 * (agent_api_internal.h): x509pop challenges (at most PENDING_PER_LEAF per
 * leaf certificate) and enrolment tickets, PENDING_MAX slots in all, each
 * single use and valid PENDING_TTL seconds; keys compared with
 * CRYPTO_memcmp, slots wiped when freed.
 */
#include "server/agent_api_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

/* ---- pending attestations ------------------------------------------------------------------- */

void
agent_api_pending_clear(struct agent_api_pending *p)
{
	ly_attest_result_cleanup(&p->result);
	OPENSSL_cleanse(p, sizeof(*p));
	p->result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
}

void
agent_api_pending_sweep(struct ly_agent_api *api, time_t now)
{
	for (size_t i = 0; i < PENDING_MAX; i++) {
		if (api->pending[i].used && api->pending[i].expires <= now)
			agent_api_pending_clear(&api->pending[i]);
	}
}

static struct agent_api_pending *
pending_free_slot(struct ly_agent_api *api, time_t now)
{
	agent_api_pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		if (!api->pending[i].used)
			return &api->pending[i];
	}
	return NULL;
}

/* Stores an x509pop challenge; a leaf with PENDING_PER_LEAF already loses its oldest. */
ly_status
agent_api_pending_add_challenge(struct ly_agent_api *api, const uint8_t leaf_hash[32], const uint8_t *nonce, time_t now,
    struct ly_error *err)
{
	struct agent_api_pending *oldest = NULL, *slot = NULL;
	size_t same = 0;

	agent_api_pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct agent_api_pending *p = &api->pending[i];
		if (!p->used || p->is_ticket || CRYPTO_memcmp(p->leaf_hash, leaf_hash, 32) != 0)
			continue;
		same++;
		if (oldest == NULL || p->created < oldest->created)
			oldest = p;
	}
	if (same >= PENDING_PER_LEAF && oldest != NULL) {
		agent_api_pending_clear(oldest);
		slot = oldest;
	} else if ((slot = pending_free_slot(api, now)) == NULL) {
		return ly_error_set(err, LY_E_LIMIT, "too many attestations in progress");
	}
	slot->used = true;
	slot->is_ticket = false;
	memcpy(slot->key, nonce, LY_X509POP_NONCE_LEN);
	memcpy(slot->leaf_hash, leaf_hash, 32);
	slot->created = now;
	slot->expires = now + PENDING_TTL;
	return LY_OK;
}

/* Finds and removes the challenge for (leaf, nonce); false when none. */
bool
agent_api_pending_take_challenge(struct ly_agent_api *api, const uint8_t leaf_hash[32], const uint8_t *nonce,
    time_t now)
{
	bool found = false;

	agent_api_pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct agent_api_pending *p = &api->pending[i];
		if (!p->used || p->is_ticket)
			continue;
		/* Both compared in full, in constant time. */
		int a = CRYPTO_memcmp(p->key, nonce, LY_X509POP_NONCE_LEN);
		int b = CRYPTO_memcmp(p->leaf_hash, leaf_hash, 32);
		if ((a | b) == 0) {
			agent_api_pending_clear(p);
			found = true;
		}
	}
	return found;
}

/* Stores an admitted agent under a new ticket (the result is moved in). */
ly_status
agent_api_pending_add_ticket(struct ly_agent_api *api, struct ly_attest_result *res, time_t now,
    uint8_t ticket[TICKET_LEN], struct ly_error *err)
{
	struct agent_api_pending *slot = pending_free_slot(api, now);

	if (slot == NULL)
		return ly_error_set(err, LY_E_LIMIT, "too many attestations in progress");
	if (RAND_bytes(ticket, TICKET_LEN) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "ticket");
	slot->used = true;
	slot->is_ticket = true;
	memcpy(slot->key, ticket, TICKET_LEN);
	slot->created = now;
	slot->expires = now + PENDING_TTL;
	slot->result = *res;
	*res = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	return LY_OK;
}

bool
agent_api_pending_take_ticket(struct ly_agent_api *api, const uint8_t *ticket, time_t now, struct ly_attest_result *out)
{
	bool found = false;

	agent_api_pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct agent_api_pending *p = &api->pending[i];
		if (!p->used || !p->is_ticket || CRYPTO_memcmp(p->key, ticket, TICKET_LEN) != 0 || found)
			continue;
		*out = p->result;
		p->result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
		agent_api_pending_clear(p);
		found = true;
	}
	return found;
}

/* Drops the tickets of an agent that was evicted or banned. */
void
agent_api_pending_drop_agent(struct ly_agent_api *api, const char *agent_id)
{
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct agent_api_pending *p = &api->pending[i];
		if (p->used && p->is_ticket && p->result.agent_id != NULL && strcmp(p->result.agent_id, agent_id) == 0)
			agent_api_pending_clear(p);
	}
}
