/*
 * datastore.c: the back-end independent part of datastore.h (the free and
 * cleanup functions it declares) and the helpers both back ends share
 * (datastore_internal.h): input checks, the identity and join token
 * hashes, entry filtering and list moves.
 */
#include "server/datastore_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "lib/caps.h"
#include "lib/spiffeid.h"

/* ---- public free functions (datastore.h) ---- */

void
ly_entry_changes_cleanup(struct ly_entry_changes *changes)
{
	if (changes == NULL)
		return;
	for (size_t i = 0; i < changes->n; i++) {
		free(changes->items[i].entry_id);
		ly_entry_free(changes->items[i].entry);
	}
	free(changes->items);
	changes->items = NULL;
	changes->n = 0;
	changes->revision = 0;
	changes->resync = false;
}

void
ly_ds_agent_free(struct ly_ds_agent *agent)
{
	if (agent == NULL)
		return;
	free(agent->spiffe_id);
	free(agent->attestation_type);
	free(agent->serial_number);
	ly_selectors_free(agent->selectors, agent->n_selectors);
	free(agent);
}

void
ly_ds_agent_list_cleanup(struct ly_ds_agent_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++)
		ly_ds_agent_free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->n = 0;
}

/* ---- the change hook (datastore.h) ---- */

ly_status
ly_datastore_on_change(struct ly_datastore *ds, ly_datastore_change_fn *fn, void *arg, struct ly_error *err)
{
	if (ds == NULL || fn == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "datastore change hook: no store or callback");
	if (ds->n_hooks >= LY_DATASTORE_HOOKS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "datastore change hook: more than %d callbacks",
		    LY_DATASTORE_HOOKS_MAX);
	ds->hooks[ds->n_hooks].fn = fn;
	ds->hooks[ds->n_hooks].arg = arg;
	ds->n_hooks++;
	return LY_OK;
}

void
ly_datastore_off_change(struct ly_datastore *ds, ly_datastore_change_fn *fn, void *arg)
{
	if (ds == NULL)
		return;
	for (size_t i = 0; i < ds->n_hooks; i++) {
		if (ds->hooks[i].fn != fn || ds->hooks[i].arg != arg)
			continue;
		memmove(&ds->hooks[i], &ds->hooks[i + 1], (ds->n_hooks - i - 1) * sizeof(ds->hooks[0]));
		ds->n_hooks--;
		return;
	}
}

void
ly_datastore_changed(struct ly_datastore *ds, const struct ly_datastore_change *change)
{
	/* A callback may unregister itself (or another): walk a copy. */
	size_t n = ds->n_hooks;
	struct ly_datastore_hook hooks[LY_DATASTORE_HOOKS_MAX];

	memcpy(hooks, ds->hooks, n * sizeof(hooks[0]));
	for (size_t i = 0; i < n; i++)
		hooks[i].fn(hooks[i].arg, change);
}

void
ly_datastore_changed_now(struct ly_datastore *ds, enum ly_datastore_change_kind kind, const char *entry_id,
    const char *agent_id)
{
	struct ly_datastore_change c = { .kind = kind, .revision = -1, .entry_id = entry_id, .agent_id = agent_id };

	if (ds->n_hooks == 0)
		return;
	if (ds->ops->revision(ds, &c.revision, NULL) != LY_OK)
		c.revision = -1;
	ly_datastore_changed(ds, &c);
}

/* ---- shared helpers (datastore_internal.h) ---- */

int64_t
ly_ds_now(void)
{
	return (int64_t)time(NULL);
}

ly_status
ly_ds_schema_too_new(int64_t version, int supported, struct ly_error *err)
{
	return ly_error_set(err, LY_E_UNSUPPORTED,
	    "datastore schema %lld is newer than this lanyard-server (%d): upgrade", (long long)version, supported);
}

ly_status
ly_ds_corrupt(const char *what, struct ly_error *err)
{
	return ly_error_set(err, LY_E_IO, "datastore: corrupt row: %s", what);
}

/* ---- entries ---- */

ly_status
ly_ds_identity_hash(const struct ly_entry *e, unsigned char out[LY_DS_HASH_LEN], struct ly_error *err)
{
	ly_status rc = LY_OK;
	const struct ly_selector **sorted = NULL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int len = 0;

	if (ctx == NULL)
		return ly_error_openssl(err, LY_E_NOMEM, "datastore: identity hash");
	sorted = calloc(e->n_selectors > 0 ? e->n_selectors : 1, sizeof(*sorted));
	if (sorted == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
		goto out;
	}
	/* Validated entries are sorted already; insertion sort keeps this independent of that. */
	for (size_t i = 0; i < e->n_selectors; i++) {
		size_t j = i;
		while (j > 0 && ly_selector_cmp(sorted[j - 1], &e->selectors[i]) > 0) {
			sorted[j] = sorted[j - 1];
			j--;
		}
		sorted[j] = &e->selectors[i];
	}
	int ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	    EVP_DigestUpdate(ctx, e->spiffe_id, strlen(e->spiffe_id) + 1) &&
	    EVP_DigestUpdate(ctx, e->parent_id, strlen(e->parent_id) + 1);
	for (size_t i = 0; ok && i < e->n_selectors; i++) {
		ok = EVP_DigestUpdate(ctx, sorted[i]->type, strlen(sorted[i]->type) + 1) &&
		    EVP_DigestUpdate(ctx, sorted[i]->value, strlen(sorted[i]->value) + 1);
	}
	if (!ok || !EVP_DigestFinal_ex(ctx, out, &len) || len != LY_DS_HASH_LEN)
		rc = ly_error_openssl(err, LY_E_CRYPTO, "datastore: identity hash");
out:
	free(sorted);
	EVP_MD_CTX_free(ctx);
	return rc;
}

ly_status
ly_ds_check_entry_id(const char *entry_id, struct ly_error *err)
{
	if (entry_id == NULL || entry_id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "entry ID is empty");
	if (strnlen(entry_id, LY_ENTRY_ID_MAX + 1) > LY_ENTRY_ID_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry ID is longer than %d bytes", LY_ENTRY_ID_MAX);
	return LY_OK;
}

ly_status
ly_ds_entry_create_prepare(struct ly_entry *entry, char **given_id, bool *assigned,
    unsigned char hash[LY_DS_HASH_LEN], struct ly_error *err)
{
	ly_status rc;

	*given_id = NULL;
	*assigned = false;
	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry create: no entry");
	rc = ly_entry_validate(entry, NULL, err);
	if (rc == LY_OK)
		rc = ly_entry_check_ttl_floor(entry, err);
	if (rc != LY_OK)
		return rc;
	if (entry->entry_id == NULL || entry->entry_id[0] == '\0') {
		char id[LY_UUID_LEN + 1];
		rc = ly_entry_generate_id(id, err);
		if (rc != LY_OK)
			return rc;
		char *copy = strdup(id);
		if (copy == NULL)
			return ly_error_set(err, LY_E_NOMEM, "entry create: out of memory");
		*given_id = entry->entry_id;
		entry->entry_id = copy;
		*assigned = true;
	}
	rc = ly_ds_identity_hash(entry, hash, err);
	if (rc != LY_OK) {
		ly_ds_entry_create_finish(entry, rc, *given_id, *assigned);
		*given_id = NULL;
		*assigned = false;
	}
	return rc;
}

void
ly_ds_entry_create_finish(struct ly_entry *entry, ly_status rc, char *given_id, bool assigned)
{
	if (rc != LY_OK && assigned) {
		free(entry->entry_id);
		entry->entry_id = given_id;
	} else {
		free(given_id);
	}
}

ly_status
ly_ds_entry_update_prepare(struct ly_entry *entry, unsigned char hash[LY_DS_HASH_LEN], struct ly_error *err)
{
	if (entry == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry update: no entry");
	if (entry->entry_id == NULL || entry->entry_id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "entry update needs an entry ID");
	LY_TRY(ly_entry_validate(entry, NULL, err));
	LY_TRY(ly_entry_check_ttl_floor(entry, err));
	return ly_ds_identity_hash(entry, hash, err);
}

ly_status
ly_ds_entry_id_taken(const char *entry_id, struct ly_error *err)
{
	return ly_error_set(err, LY_E_INVALID, "entry already exists: entry ID %s is taken", entry_id);
}

ly_status
ly_ds_entry_duplicate(const char *dup, struct ly_error *err)
{
	return ly_error_set(err, LY_E_INVALID,
	    "entry already exists: entry %s has the same spiffe_id, parent_id and selectors", dup);
}

ly_status
ly_ds_check_entry_filter(const struct ly_entry_filter *filter, const struct ly_entry_list *out,
    struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry list: no output");
	if (filter != NULL && filter->n_selectors > 0 && filter->selectors == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "entry list: filter selectors missing");
	const char *sid = filter != NULL ? filter->spiffe_id : NULL;
	const char *pid = filter != NULL ? filter->parent_id : NULL;
	if ((sid != NULL && strnlen(sid, LY_SPIFFE_ID_MAX + 1) > LY_SPIFFE_ID_MAX) ||
	    (pid != NULL && strnlen(pid, LY_SPIFFE_ID_MAX + 1) > LY_SPIFFE_ID_MAX))
		return ly_error_set(err, LY_E_LIMIT, "entry list: SPIFFE ID filter over %d bytes", LY_SPIFFE_ID_MAX);
	return LY_OK;
}

/* Whether entry `e` passes the selector part of `f` (NULL or no selectors: yes). */
static bool
filter_selectors(const struct ly_entry_filter *f, const struct ly_entry *e)
{
	if (f == NULL || f->n_selectors == 0)
		return true;
	switch (f->match) {
	case LY_MATCH_SUBSET: return ly_selectors_match(e->selectors, e->n_selectors, f->selectors, f->n_selectors);
	case LY_MATCH_SUPERSET: return ly_selectors_match(f->selectors, f->n_selectors, e->selectors, e->n_selectors);
	case LY_MATCH_EXACT: return ly_selectors_same_set(e->selectors, e->n_selectors, f->selectors, f->n_selectors);
	}
	return false;
}

ly_status
ly_ds_entry_list_keep(struct ly_entry_list *found, const struct ly_entry_filter *filter, struct ly_entry **e,
    struct ly_error *err)
{
	ly_status rc = LY_OK;

	if (filter_selectors(filter, *e)) {
		rc = ly_entry_list_append(found, *e, err);
		if (rc == LY_OK)
			*e = NULL;
	}
	ly_entry_free(*e);
	*e = NULL;
	return rc;
}

ly_status
ly_ds_entry_list_move(struct ly_entry_list *to, struct ly_entry_list *from, struct ly_error *err)
{
	if (from->n == 0)
		return LY_OK;
	if (to->n + from->n > to->cap) {
		size_t cap = to->n + from->n;
		if (cap > SIZE_MAX / sizeof(*to->items))
			return ly_error_set(err, LY_E_NOMEM, "entry list: too large");
		struct ly_entry **grown = realloc(to->items, cap * sizeof(*grown));
		if (grown == NULL)
			return ly_error_set(err, LY_E_NOMEM, "entry list: out of memory");
		to->items = grown;
		to->cap = cap;
	}
	memcpy(to->items + to->n, from->items, from->n * sizeof(*from->items));
	to->n += from->n;
	free(from->items);
	from->items = NULL;
	from->n = from->cap = 0;
	return LY_OK;
}

ly_status
ly_ds_agent_list_move(struct ly_ds_agent_list *to, struct ly_ds_agent_list *from, struct ly_error *err)
{
	if (from->n == 0)
		return LY_OK;
	struct ly_ds_agent **grown = realloc(to->items, (to->n + from->n) * sizeof(*grown));
	if (grown == NULL)
		return ly_error_set(err, LY_E_NOMEM, "agent list: out of memory");
	memcpy(grown + to->n, from->items, from->n * sizeof(*grown));
	to->items = grown;
	to->n += from->n;
	free(from->items);
	from->items = NULL;
	from->n = 0;
	return LY_OK;
}

/* ---- join tokens ---- */

ly_status
ly_datastore_token_check(const char *token, struct ly_error *err)
{
	if (token == NULL || token[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "join token is empty");
	size_t n = strnlen(token, LY_JOIN_TOKEN_MAX + 1);
	if (n > LY_JOIN_TOKEN_MAX)
		return ly_error_set(err, LY_E_LIMIT, "join token is longer than %d bytes", LY_JOIN_TOKEN_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)token[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		    c == '_' || c == '-';
		if (!ok)
			return ly_error_set(err, LY_E_INVALID, "join token must use [A-Za-z0-9._-]");
	}
	if (strcmp(token, ".") == 0 || strcmp(token, "..") == 0)
		return ly_error_set(err, LY_E_INVALID, "join token must not be '.' or '..'");
	return LY_OK;
}

ly_status
ly_datastore_token_id_check(const char *token, const struct ly_spiffe_id *id, struct ly_error *err)
{
	const char *path = ly_spiffe_id_path(id);
	size_t n = strlen(LY_JOIN_TOKEN_ID_PATH);

	/* The default, made by the server: the token's own ID. */
	if (token != NULL && strncmp(path, LY_JOIN_TOKEN_ID_PATH, n) == 0 && strcmp(path + n, token) == 0)
		return LY_OK;
	ly_status rc = ly_spiffe_id_check_use(id, LY_ID_JOIN_TOKEN, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "join token SPIFFE ID");
	return LY_OK;
}

ly_status
ly_ds_check_token_create(const char *token, const char *spiffe_id, int64_t expires_at, struct ly_error *err)
{
	struct ly_spiffe_id id;

	LY_TRY(ly_datastore_token_check(token, err));
	if (spiffe_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "join token: SPIFFE ID is missing");
	ly_status rc = ly_spiffe_id_parse_str(spiffe_id, &id, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "join token SPIFFE ID");
	LY_TRY(ly_datastore_token_id_check(token, &id, err));
	if (expires_at <= 0)
		return ly_error_set(err, LY_E_INVALID, "join token needs an expiry time");
	return LY_OK;
}

ly_status
ly_ds_token_hash(const char *token, unsigned char out[LY_DS_HASH_LEN], struct ly_error *err)
{
	unsigned int len = 0;
	if (!EVP_Digest(token, strlen(token), out, &len, EVP_sha256(), NULL) || len != LY_DS_HASH_LEN)
		return ly_error_openssl(err, LY_E_CRYPTO, "join token hash");
	return LY_OK;
}

/* ---- agents ---- */

ly_status
ly_ds_check_agent(const struct ly_ds_agent *a, struct ly_error *err)
{
	struct ly_spiffe_id id;

	if (a == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent: no agent");
	if (a->spiffe_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "agent has no SPIFFE ID");
	ly_status rc = ly_spiffe_id_parse_str(a->spiffe_id, &id, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "agent SPIFFE ID");
	if (a->attestation_type == NULL || a->attestation_type[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "agent has no attestation type");
	size_t n = strnlen(a->attestation_type, LY_DS_AGENT_TYPE_MAX + 1);
	if (n > LY_DS_AGENT_TYPE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "agent attestation type is longer than %d bytes",
		    LY_DS_AGENT_TYPE_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a->attestation_type[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return ly_error_set(err, LY_E_INVALID, "agent attestation type must use [a-z0-9_]");
	}
	if (a->serial_number != NULL) {
		n = strnlen(a->serial_number, LY_DS_AGENT_SERIAL_MAX + 1);
		if (n > LY_DS_AGENT_SERIAL_MAX)
			return ly_error_set(err, LY_E_LIMIT, "agent serial number is longer than %d bytes",
			    LY_DS_AGENT_SERIAL_MAX);
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)a->serial_number[i];
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
				return ly_error_set(err, LY_E_INVALID, "agent serial number must be lower-case hex");
		}
	}
	if (a->n_selectors > LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "agent has %zu selectors, over the limit of %d", a->n_selectors,
		    LY_SELECTORS_MAX);
	if (a->n_selectors > 0 && a->selectors == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent selectors missing");
	for (size_t i = 0; i < a->n_selectors; i++) {
		rc = ly_selector_check(a->selectors[i].type, a->selectors[i].value, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "agent selector %zu", i + 1);
		if (!ly_selector_type_is_node(a->selectors[i].type))
			return ly_error_set(err, LY_E_INVALID, "agent selector %zu has workload selector type %s",
			    i + 1, a->selectors[i].type);
	}
	return LY_OK;
}

ly_status
ly_ds_check_agent_id(const char *spiffe_id, struct ly_error *err)
{
	if (spiffe_id == NULL || spiffe_id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "agent SPIFFE ID is empty");
	if (strnlen(spiffe_id, LY_SPIFFE_ID_MAX + 1) > LY_SPIFFE_ID_MAX)
		return ly_error_set(err, LY_E_LIMIT, "agent SPIFFE ID is longer than %d bytes", LY_SPIFFE_ID_MAX);
	return LY_OK;
}

/* ---- CA state ---- */

ly_status
ly_ds_check_ca_name(const char *name, struct ly_error *err)
{
	if (name == NULL || name[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "CA state name is empty");
	size_t n = strnlen(name, LY_CA_STATE_NAME_MAX + 1);
	if (n > LY_CA_STATE_NAME_MAX)
		return ly_error_set(err, LY_E_LIMIT, "CA state name is longer than %d bytes", LY_CA_STATE_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		    c == '_' || c == '-';
		if (!ok)
			return ly_error_set(err, LY_E_INVALID, "CA state name must use [A-Za-z0-9._-]");
	}
	return LY_OK;
}

ly_status
ly_ds_check_ca_state_put(const char *name, const uint8_t *data, size_t len, struct ly_error *err)
{
	LY_TRY(ly_ds_check_ca_name(name, err));
	if (len > LY_CA_STATE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "CA state %s is %zu bytes, over the %d-byte limit", name, len,
		    LY_CA_STATE_MAX);
	if (len > 0 && data == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "CA state: no data");
	return LY_OK;
}
