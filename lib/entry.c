/*
 * entry.c: registration entries, see entry.h (selectors: selector.c).
 */
#include "entry.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "selector_internal.h"
#include "spiffeid.h"

/* ---- entries ---- */

ly_status
ly_entry_new(struct ly_entry **out, struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no output");
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	return LY_OK;
}

static void
strings_free(char **v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void
ly_entry_free(struct ly_entry *entry)
{
	if (entry == NULL)
		return;
	free(entry->entry_id);
	free(entry->spiffe_id);
	free(entry->parent_id);
	ly_selectors_free(entry->selectors, entry->n_selectors);
	strings_free(entry->dns_names, entry->n_dns_names);
	strings_free(entry->federates_with, entry->n_federates_with);
	free(entry->hint);
	free(entry);
}

/* strdup that keeps NULL as NULL; false on allocation failure. */
static bool
dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return true;
	*out = strdup(s);
	return *out != NULL;
}

/* Copies `n` strings into a new array (*out NULL when n == 0); *out_n set on success only. */
static ly_status
strings_copy(char *const *src, size_t n, char ***out, size_t *out_n, struct ly_error *err)
{
	char **v = NULL;

	*out = NULL;
	if (n == 0)
		return LY_OK;
	if (src == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry copy: strings missing");
	v = calloc(n, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
	for (size_t i = 0; i < n; i++) {
		v[i] = strdup(ly_sel_or_empty(src[i]));
		if (v[i] == NULL) {
			strings_free(v, n);
			return ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
		}
	}
	*out = v;
	*out_n = n;
	return LY_OK;
}

ly_status
ly_entry_copy(const struct ly_entry *src, struct ly_entry **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_entry *e = NULL;

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry copy: no output");
	*out = NULL;
	if (src == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry copy: no input");
	rc = ly_entry_new(&e, err);
	if (rc != LY_OK)
		goto out;
	*e = *src;
	e->entry_id = e->spiffe_id = e->parent_id = e->hint = NULL;
	e->selectors = NULL;
	e->n_selectors = 0;
	e->dns_names = NULL;
	e->n_dns_names = 0;
	e->federates_with = NULL;
	e->n_federates_with = 0;
	if (!dup_opt(src->entry_id, &e->entry_id) || !dup_opt(src->spiffe_id, &e->spiffe_id) ||
	    !dup_opt(src->parent_id, &e->parent_id) || !dup_opt(src->hint, &e->hint)) {
		rc = ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
		goto out;
	}
	rc = ly_selectors_copy(src->selectors, src->n_selectors, &e->selectors, err);
	if (rc != LY_OK)
		goto out;
	e->n_selectors = src->n_selectors;
	if (src->n_dns_names > 0) {
		if (src->dns_names == NULL) {
			rc = ly_error_set(err, LY_E_INTERNAL, "entry copy: DNS names missing");
			goto out;
		}
		e->dns_names = calloc(src->n_dns_names, sizeof(*e->dns_names));
		if (e->dns_names == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
			goto out;
		}
		e->n_dns_names = src->n_dns_names;
		for (size_t i = 0; i < src->n_dns_names; i++) {
			e->dns_names[i] = strdup(ly_sel_or_empty(src->dns_names[i]));
			if (e->dns_names[i] == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "entry copy: out of memory");
				goto out;
			}
		}
	}
	rc = strings_copy(src->federates_with, src->n_federates_with, &e->federates_with, &e->n_federates_with, err);
	if (rc != LY_OK)
		goto out;
	*out = e;
	e = NULL;
out:
	ly_entry_free(e);
	return rc;
}

ly_status
ly_entry_set_string(char **field, const char *value, struct ly_error *err)
{
	if (field == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no field");
	char *copy = NULL;
	if (!dup_opt(value, &copy))
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	free(*field);
	*field = copy;
	return LY_OK;
}

ly_status
ly_entry_add_selector(struct ly_entry *entry, const char *selector, struct ly_error *err)
{
	struct ly_selector sel;

	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry");
	if (entry->n_selectors >= LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has more than %d selectors", LY_SELECTORS_MAX);
	LY_TRY(ly_selector_parse_str(selector, &sel, err));
	struct ly_selector *grown = realloc(entry->selectors, (entry->n_selectors + 1) * sizeof(*grown));
	if (grown == NULL) {
		ly_selector_cleanup(&sel);
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	}
	grown[entry->n_selectors++] = sel;
	entry->selectors = grown;
	return LY_OK;
}

ly_status
ly_entry_add_dns_name(struct ly_entry *entry, const char *name, struct ly_error *err)
{
	if (entry == NULL || name == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry or DNS name");
	if (entry->n_dns_names >= LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has more than %d DNS names", LY_DNS_NAMES_MAX);
	if (strnlen(name, LY_DNS_NAME_MAX + 1) > LY_DNS_NAME_MAX)
		return ly_error_set(err, LY_E_LIMIT, "DNS name is longer than %d bytes", LY_DNS_NAME_MAX);
	char *copy = strdup(name);
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	char **grown = realloc(entry->dns_names, (entry->n_dns_names + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(copy);
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	}
	grown[entry->n_dns_names++] = copy;
	entry->dns_names = grown;
	return LY_OK;
}

ly_status
ly_entry_add_federates_with(struct ly_entry *entry, const char *td, struct ly_error *err)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];

	if (entry == NULL || td == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry or trust domain");
	if (entry->n_federates_with >= LY_ENTRY_FEDERATES_WITH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry federates with more than %d trust domains",
		    LY_ENTRY_FEDERATES_WITH_MAX);
	ly_status rc = ly_trust_domain_parse(td, true, name, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "entry federates_with");
	char *copy = strdup(name);
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	char **grown = realloc(entry->federates_with, (entry->n_federates_with + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(copy);
		return ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
	}
	grown[entry->n_federates_with++] = copy;
	entry->federates_with = grown;
	return LY_OK;
}

ly_status
ly_dns_name_check(const char *name, struct ly_error *err)
{
	if (name == NULL)
		return ly_error_set(err, LY_E_INVALID, "DNS name is missing");
	return ly_sel_check_hostname("DNS name", name, strnlen(name, LY_DNS_NAME_MAX + 1), err);
}

ly_status
ly_entry_id_check(const char *id, struct ly_error *err)
{
	if (id == NULL || id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "entry ID is empty");
	size_t n = strnlen(id, LY_ENTRY_ID_MAX + 1);
	if (n > LY_ENTRY_ID_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry ID is longer than %d bytes", LY_ENTRY_ID_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!ly_sel_is_portable((unsigned char)id[i]))
			return ly_error_set(err, LY_E_INVALID, "entry ID must use [A-Za-z0-9._-]");
	}
	return LY_OK;
}

/*
 * A SPIFFE ID field of an entry: valid, with a path, in `td` when given,
 * and allowed for `use` by the reserved-namespace rule (spiffeid.h).
 */
static ly_status
check_id_field(const char *name, const char *s, const char *td, enum ly_id_use use, struct ly_error *err)
{
	struct ly_spiffe_id id;

	if (s == NULL || s[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "entry has no %s", name);
	ly_status rc = ly_spiffe_id_parse_str(s, &id, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "entry %s", name);
	if (ly_spiffe_id_is_trust_domain_id(&id))
		return ly_error_set(err, LY_E_INVALID, "entry %s %s has no path (a trust domain ID names no workload)",
		    name, id.id);
	if (td != NULL && !ly_spiffe_id_member_of(&id, td))
		return ly_error_set(err, LY_E_INVALID, "entry %s %s is not in trust domain %s", name, id.id, td);
	if (ly_spiffe_id_check_use(&id, use, err) != LY_OK)
		return ly_error_wrap(err, LY_E_INVALID, "entry %s %s", name, id.id);
	return LY_OK;
}

static ly_status
check_ttl(const char *name, int32_t ttl, int32_t max, struct ly_error *err)
{
	if (ttl < 0)
		return ly_error_set(err, LY_E_INVALID, "entry %s %d is negative", name, (int)ttl);
	if (ttl > max)
		return ly_error_set(err, LY_E_LIMIT, "entry %s %d is over the %d-second limit", name, (int)ttl,
		    (int)max);
	return LY_OK;
}

static ly_status
check_selectors(struct ly_entry *e, struct ly_error *err)
{
	if (e->n_selectors == 0)
		return ly_error_set(err, LY_E_INVALID, "entry needs at least one selector");
	if (e->n_selectors > LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has %zu selectors, over the limit of %d", e->n_selectors,
		    LY_SELECTORS_MAX);
	if (e->selectors == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry selectors missing");
	for (size_t i = 0; i < e->n_selectors; i++) {
		const struct ly_selector *s = &e->selectors[i];
		ly_status rc = ly_selector_check(s->type, s->value, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry selector %zu", i + 1);
		bool node_type = ly_selector_type_is_node(s->type);
		if (e->node && !node_type)
			return ly_error_set(err, LY_E_INVALID,
			    "node entry selector %zu has workload selector type %s (node entries take k8s_psat, "
			    "x509pop, join_token)",
			    i + 1, s->type);
		if (!e->node && node_type)
			return ly_error_set(err, LY_E_INVALID,
			    "workload entry selector %zu has node selector type %s (workload entries take unix, "
			    "k8s; mark node entries as such)",
			    i + 1, s->type);
	}
	ly_status rc = ly_selectors_canonicalize(e->selectors, e->n_selectors, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "entry");
	return LY_OK;
}

static ly_status
check_dns_names(const struct ly_entry *e, struct ly_error *err)
{
	if (e->n_dns_names > LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry has %zu DNS names, over the limit of %d", e->n_dns_names,
		    LY_DNS_NAMES_MAX);
	if (e->n_dns_names > 0 && e->dns_names == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry DNS names missing");
	for (size_t i = 0; i < e->n_dns_names; i++) {
		ly_status rc = ly_dns_name_check(e->dns_names[i], err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry DNS name %zu", i + 1);
		for (size_t j = 0; j < i; j++) {
			if (strcasecmp(e->dns_names[i], e->dns_names[j]) == 0)
				return ly_error_set(err, LY_E_INVALID, "entry DNS name %zu duplicates DNS name %zu (%s)",
				    i + 1, j + 1, e->dns_names[j]);
		}
	}
	return LY_OK;
}

static ly_status
check_hint(const char *hint, struct ly_error *err)
{
	if (hint == NULL)
		return LY_OK;
	size_t n = strnlen(hint, LY_ENTRY_HINT_MAX + 1);
	if (n > LY_ENTRY_HINT_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry hint is longer than %d bytes", LY_ENTRY_HINT_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)hint[i];
		if (c < 0x20 || c > 0x7e)
			return ly_error_set(err, LY_E_INVALID, "entry hint must be printable ASCII (byte %zu is not)",
			    i);
	}
	return LY_OK;
}

static int
string_qsort_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * federates_with: bare trust domain names (SPIFFE-ID §2.1), never the
 * entry's own trust domain (our bundle is not a federated one), sorted and
 * unique so that every copy of an entry compares and encodes the same.
 */
static ly_status
check_federates_with(struct ly_entry *e, const char *trust_domain, struct ly_error *err)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_spiffe_id id;

	if (e->n_federates_with > LY_ENTRY_FEDERATES_WITH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry federates with %zu trust domains, over the limit of %d",
		    e->n_federates_with, LY_ENTRY_FEDERATES_WITH_MAX);
	if (e->n_federates_with == 0)
		return LY_OK;
	if (e->federates_with == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry federates_with missing");
	for (size_t i = 0; i < e->n_federates_with; i++) {
		if (e->federates_with[i] == NULL)
			return ly_error_set(err, LY_E_INTERNAL, "entry federates_with %zu missing", i + 1);
		ly_status rc = ly_trust_domain_parse(e->federates_with[i], false, name, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry federates_with %zu", i + 1);
		if (trust_domain != NULL && strcmp(name, trust_domain) == 0)
			return ly_error_set(err, LY_E_INVALID,
			    "entry federates_with names its own trust domain %s (only other trust domains federate)",
			    name);
		if (e->spiffe_id != NULL && ly_spiffe_id_parse_str(e->spiffe_id, &id, NULL) == LY_OK &&
		    strcmp(id.trust_domain, name) == 0)
			return ly_error_set(err, LY_E_INVALID,
			    "entry federates_with names its own trust domain %s (only other trust domains federate)",
			    name);
	}
	qsort(e->federates_with, e->n_federates_with, sizeof(*e->federates_with), string_qsort_cmp);
	for (size_t i = 1; i < e->n_federates_with; i++) {
		if (strcmp(e->federates_with[i - 1], e->federates_with[i]) == 0)
			return ly_error_set(err, LY_E_INVALID, "entry federates_with names %s twice",
			    e->federates_with[i]);
	}
	return LY_OK;
}

ly_status
ly_entry_validate(struct ly_entry *entry, const char *trust_domain, struct ly_error *err)
{
	ly_status rc;

	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry");
	if (entry->entry_id != NULL && entry->entry_id[0] != '\0') {
		rc = ly_entry_id_check(entry->entry_id, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "entry");
	}
	LY_TRY(check_id_field("spiffe_id", entry->spiffe_id, trust_domain, LY_ID_GRANTED, err));
	LY_TRY(check_id_field("parent_id", entry->parent_id, trust_domain, LY_ID_PARENT, err));
	LY_TRY(check_selectors(entry, err));
	LY_TRY(check_ttl("x509_svid_ttl", entry->x509_svid_ttl, LY_X509_SVID_TTL_MAX, err));
	LY_TRY(check_ttl("jwt_svid_ttl", entry->jwt_svid_ttl, LY_JWT_SVID_TTL_MAX, err));
	LY_TRY(check_dns_names(entry, err));
	LY_TRY(check_hint(entry->hint, err));
	LY_TRY(check_federates_with(entry, trust_domain, err));
	return LY_OK;
}

ly_status
ly_entry_check_ttl_floor(const struct ly_entry *entry, struct ly_error *err)
{
	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry: no entry");
	if (entry->x509_svid_ttl > 0 && entry->x509_svid_ttl < LY_X509_SVID_TTL_MIN)
		return ly_error_set(err, LY_E_INVALID,
		    "entry x509_svid_ttl %d is under the %d-second floor (shorter SVIDs are renewed every few "
		    "seconds, at 1 s without end; 0 means the server default)",
		    (int)entry->x509_svid_ttl, LY_X509_SVID_TTL_MIN);
	if (entry->jwt_svid_ttl > 0 && entry->jwt_svid_ttl < LY_JWT_SVID_TTL_MIN)
		return ly_error_set(err, LY_E_INVALID,
		    "entry jwt_svid_ttl %d is under the %d-second floor (validators accept a JWT-SVID %d s "
		    "past its expiry anyway; 0 means the server default)",
		    (int)entry->jwt_svid_ttl, LY_JWT_SVID_TTL_MIN, LY_JWT_LEEWAY_SECONDS);
	return LY_OK;
}

int32_t
ly_svid_ttl_floored(int32_t ttl_or_0, int32_t floor)
{
	return ttl_or_0 > 0 && ttl_or_0 < floor ? floor : ttl_or_0;
}

ly_status
ly_entry_generate_id(char out[LY_UUID_LEN + 1], struct ly_error *err)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[16];

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry ID: no output");
	out[0] = '\0';
	if (RAND_bytes(b, (int)sizeof(b)) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "generate entry ID");
	/* RFC 9562 §5.4: version 4, variant 10. */
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	size_t o = 0;
	for (size_t i = 0; i < sizeof(b); i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 0x0f];
	}
	out[o] = '\0';
	return LY_OK;
}

bool
ly_entry_same_identity(const struct ly_entry *a, const struct ly_entry *b)
{
	if (a == NULL || b == NULL)
		return false;
	return strcmp(ly_sel_or_empty(a->spiffe_id), ly_sel_or_empty(b->spiffe_id)) == 0 &&
	    strcmp(ly_sel_or_empty(a->parent_id), ly_sel_or_empty(b->parent_id)) == 0 &&
	    ly_selectors_same_set(a->selectors, a->n_selectors, b->selectors, b->n_selectors);
}

ly_status
ly_entry_list_append(struct ly_entry_list *list, struct ly_entry *entry, struct ly_error *err)
{
	if (list == NULL || entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry list: no list or entry");
	if (list->n == list->cap) {
		size_t cap = list->cap == 0 ? 16 : list->cap * 2;
		if (cap > SIZE_MAX / sizeof(*list->items))
			return ly_error_set(err, LY_E_NOMEM, "entry list: too large");
		struct ly_entry **grown = realloc(list->items, cap * sizeof(*grown));
		if (grown == NULL)
			return ly_error_set(err, LY_E_NOMEM, "entry list: out of memory");
		list->items = grown;
		list->cap = cap;
	}
	list->items[list->n++] = entry;
	return LY_OK;
}

void
ly_entry_list_cleanup(struct ly_entry_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++)
		ly_entry_free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->n = 0;
	list->cap = 0;
}
