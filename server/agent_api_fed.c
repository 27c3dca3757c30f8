/*
 * agent_api_fed.c: federated bundles on the agent API (agent_api_internal.h,
 * SPEC §9): the agent API's copy of the datastore's federated bundles (read
 * on the worker with the replica's entries, installed on the loop), the
 * trust domains an agent's entries federate with, and the
 * federated_sequence every EntriesUpdate carries. Below the replica
 * (agent_api_replica.c reads and installs the copy; a part that needs it
 * loaded asks the replica, agent_api_replica_fed_ensure), it calls no other
 * part; GetFederatedBundles, which answers an agent with the bundles of the
 * trust domains its authorized entries federate with and nothing else
 * (least privilege), is agent_api.c's.
 */
#include "server/agent_api_internal.h"

#include <stdlib.h>
#include <string.h>

static int
cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
cmp_td_bundle(const void *key, const void *elem)
{
	const struct ly_ds_fed_bundle *const *b = elem;
	return strcmp(key, ly_bundle_trust_domain((*b)->bundle));
}

const struct ly_ds_fed_bundle *
agent_api_fed_find(const struct ly_agent_api *api, const char *td)
{
	if (api->fed.n == 0)
		return NULL;
	struct ly_ds_fed_bundle **hit = bsearch(td, api->fed.items, api->fed.n, sizeof(*api->fed.items), cmp_td_bundle);
	return hit != NULL ? *hit : NULL;
}

ly_status
agent_api_fed_tds(const struct ly_authz_set *set, const char ***out, size_t *n_out, struct ly_error *err)
{
	size_t total = 0, n = 0;
	const char **v;

	*out = NULL;
	*n_out = 0;
	for (size_t i = 0; i < set->n; i++)
		total += set->items[i]->n_federates_with;
	if (total == 0)
		return LY_OK;
	v = calloc(total, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "federated bundles: out of memory");
	for (size_t i = 0; i < set->n; i++) {
		for (size_t j = 0; j < set->items[i]->n_federates_with; j++)
			v[n++] = set->items[i]->federates_with[j];
	}
	qsort(v, n, sizeof(*v), cmp_str_ptr);
	size_t u = 0;
	for (size_t i = 0; i < n; i++) {
		if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
			v[u++] = v[i];
	}
	*out = v;
	*n_out = u;
	return LY_OK;
}

/* FNV-1a, 64 bits: a digest, not a MAC (the agent only compares it). */
static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 1099511628211ULL;
	}
	return h;
}

uint64_t
agent_api_fed_sequence(const struct ly_agent_api *api, const struct ly_authz_set *set)
{
	const char **tds = NULL;
	size_t n = 0;
	uint64_t h = 14695981039346656037ULL;

	if (agent_api_fed_tds(set, &tds, &n, NULL) != LY_OK)
		return 1; /* out of memory: a value that differs from 0, so the agent asks */
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		const struct ly_ds_fed_bundle *b = agent_api_fed_find(api, tds[i]);
		int64_t rev = b != NULL ? b->revision : -1;
		unsigned char r[8];
		for (int k = 0; k < 8; k++)
			r[k] = (unsigned char)((uint64_t)rev >> (8 * k));
		h = fnv(h, tds[i], strlen(tds[i]) + 1);
		h = fnv(h, r, sizeof(r));
	}
	free(tds);
	return h != 0 ? h : 1;
}

/* True when both lists hold the same trust domains at the same revisions. */
static bool
fed_same(const struct ly_ds_fed_bundle_list *a, const struct ly_ds_fed_bundle_list *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		if (a->items[i]->revision != b->items[i]->revision ||
		    strcmp(ly_bundle_trust_domain(a->items[i]->bundle), ly_bundle_trust_domain(b->items[i]->bundle)) != 0)
			return false;
	}
	return true;
}

ly_status
agent_api_fed_read_work(struct ly_datastore *ds, int64_t since, bool stale, struct agent_api_fed_read *out,
    struct ly_error *err)
{
	ly_status rc;

	out->read = false;
	if ((rc = ly_datastore_fed_revision(ds, &out->revision, err)) != LY_OK)
		return ly_error_wrap(err, rc, "federated bundles");
	if (!stale && since >= 0 && since == out->revision)
		return LY_OK;
	if ((rc = ly_datastore_fed_bundle_list(ds, &out->list, err)) != LY_OK)
		return ly_error_wrap(err, rc, "federated bundles");
	out->read = true;
	return LY_OK;
}

bool
agent_api_fed_apply(struct ly_agent_api *api, struct agent_api_fed_read *r)
{
	if (!r->read)
		return false;
	bool changed = api->fed_revision < 0 || !fed_same(&api->fed, &r->list);
	ly_ds_fed_bundle_list_cleanup(&api->fed);
	api->fed = r->list;
	r->list = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	r->read = false;
	api->fed_revision = r->revision;
	return changed;
}

void
agent_api_fed_clear(struct ly_agent_api *api)
{
	ly_ds_fed_bundle_list_cleanup(&api->fed);
	api->fed_revision = -1;
}
