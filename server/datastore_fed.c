/*
 * datastore_fed.c: the back-end independent part of the federation API of
 * datastore.h (SPEC §9): names of delete modes and profiles, the
 * relationship check, the free functions, and the store's own trust domain.
 */
#include "server/datastore_internal.h"

#include <stdlib.h>
#include <string.h>

#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/spiffeid.h"

void
ly_ds_fed_bundle_free(struct ly_ds_fed_bundle *b)
{
	if (b == NULL)
		return;
	ly_bundle_free(b->bundle);
	free(b);
}

void
ly_ds_fed_bundle_list_cleanup(struct ly_ds_fed_bundle_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++)
		ly_ds_fed_bundle_free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->n = 0;
}

void
ly_ds_fed_rel_free(struct ly_ds_fed_rel *rel)
{
	if (rel == NULL)
		return;
	free(rel->trust_domain);
	free(rel->bundle_endpoint_url);
	free(rel->endpoint_spiffe_id);
	free(rel);
}

void
ly_ds_fed_rel_list_cleanup(struct ly_ds_fed_rel_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++)
		ly_ds_fed_rel_free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->n = 0;
}

static const char *const delete_mode_names[] = {
	[LY_FED_DELETE_RESTRICT] = "restrict",
	[LY_FED_DELETE_DISSOCIATE] = "dissociate",
	[LY_FED_DELETE_ENTRIES] = "delete",
};

ly_status
ly_fed_delete_mode_parse(const char *s, enum ly_fed_delete_mode *out, struct ly_error *err)
{
	if (s == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "bundle delete mode: no input");
	for (size_t i = 0; i < LY_DS_NELEM(delete_mode_names); i++) {
		if (strcmp(s, delete_mode_names[i]) == 0) {
			*out = (enum ly_fed_delete_mode)i;
			return LY_OK;
		}
	}
	return ly_error_set(err, LY_E_INVALID, "bundle delete mode must be restrict, dissociate or delete");
}

const char *
ly_fed_delete_mode_name(enum ly_fed_delete_mode mode)
{
	if ((size_t)mode >= LY_DS_NELEM(delete_mode_names))
		return "?";
	return delete_mode_names[mode];
}

ly_status
ly_fed_profile_parse(const char *s, enum ly_fed_profile *out, struct ly_error *err)
{
	if (s == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "bundle endpoint profile: no input");
	if (strcmp(s, "https_spiffe") == 0)
		*out = LY_FED_PROFILE_HTTPS_SPIFFE;
	else if (strcmp(s, "https_web") == 0)
		*out = LY_FED_PROFILE_HTTPS_WEB;
	else
		return ly_error_set(err, LY_E_INVALID, "bundle endpoint profile must be https_spiffe or https_web");
	return LY_OK;
}

const char *
ly_fed_profile_name(enum ly_fed_profile profile)
{
	switch (profile) {
	case LY_FED_PROFILE_HTTPS_SPIFFE:
		return "https_spiffe";
	case LY_FED_PROFILE_HTTPS_WEB:
		return "https_web";
	}
	return "?";
}

/*
 * A bundle endpoint URL (SPIFFE Federation §4: the endpoint is served over
 * HTTPS): "https://" then a non-empty authority without user info, then an
 * optional path/query; printable ASCII without spaces, no fragment.
 */
static ly_status
check_url(const char *url, struct ly_error *err)
{
	static const char scheme[] = "https://";

	if (url == NULL || url[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "bundle endpoint URL is missing");
	size_t n = strnlen(url, LY_FED_URL_MAX + 1);
	if (n > LY_FED_URL_MAX)
		return ly_error_set(err, LY_E_LIMIT, "bundle endpoint URL is longer than %d bytes", LY_FED_URL_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)url[i];
		if (c <= 0x20 || c > 0x7e)
			return ly_error_set(err, LY_E_INVALID,
			    "bundle endpoint URL must be printable ASCII without spaces (byte %zu is not)", i);
	}
	if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
		return ly_error_set(err, LY_E_INVALID, "bundle endpoint URL must start with https:// (got %.40s)", url);
	const char *host = url + sizeof(scheme) - 1;
	size_t hlen = strcspn(host, "/?#");
	if (hlen == 0)
		return ly_error_set(err, LY_E_INVALID, "bundle endpoint URL has no host");
	if (memchr(host, '@', hlen) != NULL)
		return ly_error_set(err, LY_E_INVALID, "bundle endpoint URL must not carry user info");
	if (strchr(url, '#') != NULL)
		return ly_error_set(err, LY_E_INVALID, "bundle endpoint URL must not carry a fragment");
	return LY_OK;
}

ly_status
ly_ds_fed_rel_check(const struct ly_ds_fed_rel *rel, const char *own_td, struct ly_error *err)
{
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_spiffe_id id;
	ly_status rc;

	if (rel == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "federation relationship: no input");
	if (rel->trust_domain == NULL || rel->trust_domain[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "federation relationship: trust domain is missing");
	rc = ly_trust_domain_parse(rel->trust_domain, false, td, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "federation relationship");
	if (own_td != NULL && strcmp(td, own_td) == 0)
		return ly_error_set(err, LY_E_INVALID,
		    "federation relationship with our own trust domain %s refused", td);
	rc = check_url(rel->bundle_endpoint_url, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "federation relationship with %s", td);
	switch (rel->profile) {
	case LY_FED_PROFILE_HTTPS_SPIFFE:
		if (rel->endpoint_spiffe_id == NULL || rel->endpoint_spiffe_id[0] == '\0')
			return ly_error_set(err, LY_E_INVALID,
			    "federation relationship with %s: profile https_spiffe needs an endpoint SPIFFE ID", td);
		rc = ly_spiffe_id_parse_str(rel->endpoint_spiffe_id, &id, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "federation relationship with %s: endpoint SPIFFE ID", td);
		break;
	case LY_FED_PROFILE_HTTPS_WEB:
		if (rel->endpoint_spiffe_id != NULL && rel->endpoint_spiffe_id[0] != '\0')
			return ly_error_set(err, LY_E_INVALID,
			    "federation relationship with %s: profile https_web takes no endpoint SPIFFE ID", td);
		break;
	default:
		return ly_error_set(err, LY_E_INVALID,
		    "federation relationship with %s: bundle endpoint profile must be https_spiffe or https_web", td);
	}
	return LY_OK;
}

ly_status
ly_datastore_set_trust_domain(struct ly_datastore *ds, const char *td, struct ly_error *err)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];

	if (ds == NULL || td == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: no store or trust domain");
	ly_status rc = ly_trust_domain_parse(td, false, name, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "datastore");
	memcpy(ds->trust_domain, name, sizeof(name));
	return LY_OK;
}
