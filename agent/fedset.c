/*
 * fedset.c: the bundles one Workload API caller may see (fedset.h).
 */
#include <string.h>

#include "agent/fedset.h"

#define TD_ID_PREFIX "spiffe://"

bool
ly_fedset_entry_federates(const struct ly_entry *entry, const char *td)
{
	if (entry == NULL || td == NULL)
		return false;
	for (size_t i = 0; i < entry->n_federates_with; i++) {
		const char *name = entry->federates_with[i];
		if (name == NULL)
			continue;
		if (strncmp(name, TD_ID_PREFIX, strlen(TD_ID_PREFIX)) == 0)
			name += strlen(TD_ID_PREFIX);
		if (strcmp(name, td) == 0)
			return true;
	}
	return false;
}

bool
ly_fedset_any(const struct ly_cache_identities *ids)
{
	for (size_t i = 0; ids != NULL && i < ids->n; i++)
		if (ids->v[i].entry != NULL && ids->v[i].entry->n_federates_with > 0)
			return true;
	return false;
}

/* Puts a clone of `b` into `set`. */
static ly_status
put_clone(struct ly_bundle_set *set, const struct ly_bundle *b, struct ly_error *err)
{
	struct ly_bundle *c = NULL;

	LY_TRY(ly_bundle_clone(b, &c, err));
	ly_status rc = ly_bundle_set_put(set, c, err);
	if (rc != LY_OK)
		ly_bundle_free(c);
	return rc;
}

ly_status
ly_fedset_for_caller(const struct ly_bundle_set *all, const char *own_td, const struct ly_cache_identities *ids,
    struct ly_bundle_set **out, size_t *n_federated, struct ly_error *err)
{
	struct ly_bundle_set *set = NULL;
	size_t nfed = 0;
	ly_status rc;

	*out = NULL;
	if (n_federated != NULL)
		*n_federated = 0;
	if ((rc = ly_bundle_set_new(&set, err)) != LY_OK)
		return rc;
	size_t n = all != NULL ? ly_bundle_set_count(all) : 0;
	for (size_t i = 0; i < n; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(all, i);
		const char *td = ly_bundle_trust_domain(b);
		bool want = strcmp(td, own_td) == 0;
		bool fed = false;
		for (size_t j = 0; !want && ids != NULL && j < ids->n; j++)
			fed = want = ly_fedset_entry_federates(ids->v[j].entry, td);
		if (!want)
			continue;
		if ((rc = put_clone(set, b, err)) != LY_OK)
			goto fail;
		if (fed)
			nfed++;
	}
	*out = set;
	if (n_federated != NULL)
		*n_federated = nfed;
	return LY_OK;
fail:
	ly_bundle_set_free(set);
	return rc;
}

ly_status
ly_fedset_replace_federated(const struct ly_bundle_set *all, const char *own_td, struct ly_bundle_set *federated,
    struct ly_bundle_set **out, struct ly_error *err)
{
	struct ly_bundle_set *set = NULL;
	const struct ly_bundle *own = all != NULL ? ly_bundle_set_find(all, own_td) : NULL;
	ly_status rc;

	*out = NULL;
	if ((rc = ly_bundle_set_new(&set, err)) != LY_OK)
		goto out;
	if (own != NULL && (rc = put_clone(set, own, err)) != LY_OK)
		goto out;
	size_t n = federated != NULL ? ly_bundle_set_count(federated) : 0;
	for (size_t i = 0; i < n; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(federated, i);
		if (strcmp(ly_bundle_trust_domain(b), own_td) == 0)
			continue; /* never "federated" with ourselves (agentapi_msg.h refuses it before) */
		if ((rc = put_clone(set, b, err)) != LY_OK)
			goto out;
	}
	*out = set;
	set = NULL;
out:
	ly_bundle_set_free(set);
	ly_bundle_set_free(federated);
	return rc;
}

ly_status
ly_fedset_replace_own(const struct ly_bundle_set *all, struct ly_bundle *own, struct ly_bundle_set **out,
    struct ly_error *err)
{
	struct ly_bundle_set *set = NULL;
	const char *own_td = ly_bundle_trust_domain(own);
	ly_status rc;

	*out = NULL;
	if ((rc = ly_bundle_set_new(&set, err)) != LY_OK)
		goto out;
	size_t n = all != NULL ? ly_bundle_set_count(all) : 0;
	for (size_t i = 0; i < n; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(all, i);
		if (strcmp(ly_bundle_trust_domain(b), own_td) == 0)
			continue;
		if ((rc = put_clone(set, b, err)) != LY_OK)
			goto out;
	}
	if ((rc = ly_bundle_set_put(set, own, err)) != LY_OK)
		goto out;
	own = NULL;
	*out = set;
	set = NULL;
out:
	ly_bundle_free(own);
	ly_bundle_set_free(set);
	return rc;
}
