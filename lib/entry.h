/*
 * entry.h: registration entries (SPEC §1).
 *
 * A registration entry (SPEC §1) grants spiffe_id to a workload whose
 * attested selectors include all of the entry's selectors, on an agent
 * named by parent_id. Two entries with the same spiffe_id, parent_id and
 * selector set are duplicates (SPIRE's rule) and are refused by the
 * datastore.
 *
 * Selectors, their rules and matching (ly_selectors_match) are in
 * selector.h, which this header includes.
 *
 * Ownership: struct ly_entry is a heap object (ly_entry_new /
 * ly_entry_copy, freed with ly_entry_free) that owns every string and array
 * it points to; set its strings with ly_entry_set_string so that ownership
 * stays right. struct ly_entry_list is caller-owned and owns its entries
 * (ly_entry_list_cleanup).
 * Nothing here is thread-safe beyond "one object, one thread".
 * Messages never echo a join token.
 */
#ifndef LANYARD_ENTRY_H
#define LANYARD_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caps.h"
#include "error.h"
#include "selector.h"

struct ly_entry {
	char *entry_id;  /* NULL or "" until the datastore assigns one */
	char *spiffe_id; /* "spiffe://td/path" */
	char *parent_id; /* the agent (or node entry, or server) that may hand it out */
	struct ly_selector *selectors;
	size_t n_selectors;
	int32_t x509_svid_ttl; /* seconds; 0 = server default (SPEC §7) */
	int32_t jwt_svid_ttl;  /* seconds; 0 = server default */
	char **dns_names;
	size_t n_dns_names;
	bool node;       /* a node entry: its selectors are node selectors */
	bool admin;      /* the SVID may call the server's admin API */
	bool downstream; /* the SVID may sign (a downstream SPIFFE server) */
	char *hint;      /* NULL or an operator's hint, SPEC §3 X509SVID.hint */
	/* Trust domains (bare names, "b.test") whose bundles this entry's
	 * workloads receive (SPEC §9); sorted and unique once validated. */
	char **federates_with;
	size_t n_federates_with;
	int64_t revision;   /* set by the datastore: the store revision of its last change */
	int64_t created_at; /* set by the datastore: Unix seconds */
};

/* Allocates a zeroed entry. */
ly_status ly_entry_new(struct ly_entry **out, struct ly_error *err) LY_MUST_CHECK;
/* Frees an entry and everything it owns. NULL is allowed. */
void ly_entry_free(struct ly_entry *entry);
/* Deep copy; free with ly_entry_free. */
ly_status ly_entry_copy(const struct ly_entry *src, struct ly_entry **out, struct ly_error *err) LY_MUST_CHECK;
/*
 * Replaces the owned string *field (one of entry_id, spiffe_id, parent_id,
 * hint) with a copy of `value` (NULL clears it).
 */
ly_status ly_entry_set_string(char **field, const char *value, struct ly_error *err) LY_MUST_CHECK;
/* Parses "type:value" and appends it (LY_E_LIMIT past LY_SELECTORS_MAX). */
ly_status ly_entry_add_selector(struct ly_entry *entry, const char *selector, struct ly_error *err)
    LY_MUST_CHECK;
/* Appends a copy of a DNS name (LY_E_LIMIT past LY_DNS_NAMES_MAX); checked by ly_entry_validate. */
ly_status ly_entry_add_dns_name(struct ly_entry *entry, const char *name, struct ly_error *err) LY_MUST_CHECK;
/*
 * Appends a trust domain to federates_with: `td` is "spiffe://b.test" (what
 * operators type) or "b.test", stored as the bare name. LY_E_LIMIT past
 * LY_ENTRY_FEDERATES_WITH_MAX; LY_E_INVALID for a bad name. Duplicates and
 * order are settled by ly_entry_validate.
 */
ly_status ly_entry_add_federates_with(struct ly_entry *entry, const char *td, struct ly_error *err) LY_MUST_CHECK;

/*
 * Checks every rule of an entry and puts its selectors in canonical order
 * (in place, even when a later rule fails):
 *  - entry_id, if set: [A-Za-z0-9._-], 1..LY_ENTRY_ID_MAX;
 *  - spiffe_id and parent_id: valid SPIFFE IDs (SPIFFE-ID standard §2) with
 *    a path (a trust domain ID names no workload, agent or server) and, when
 *    `trust_domain` is non-NULL, in that trust domain (bare name); spiffe_id
 *    never in Lanyard's reserved namespace, parent_id in it only as the
 *    server's or an agent's ID (ly_spiffe_id_check_use, lib/spiffeid.h:
 *    LY_ID_GRANTED, LY_ID_PARENT), so an agent refuses such an entry too;
 *  - 1..LY_SELECTORS_MAX selectors, each valid, no duplicate, node types
 *    only in a node entry and workload types only in a workload entry;
 *  - x509_svid_ttl 0 or 1..LY_X509_SVID_TTL_MAX, jwt_svid_ttl 0 or
 *    1..LY_JWT_SVID_TTL_MAX (negative refused);
 *  - up to LY_DNS_NAMES_MAX DNS names, each an LDH hostname (RFC 1123):
 *    <= 253 bytes, labels 1..63 not starting or ending with '-', an optional
 *    leading "*." wildcard label; no duplicate (case-insensitive);
 *  - hint, if set: at most LY_ENTRY_HINT_MAX printable ASCII bytes;
 *  - up to LY_ENTRY_FEDERATES_WITH_MAX federates_with trust domains, each a
 *    valid bare name, none equal to `trust_domain` (when non-NULL) nor to
 *    spiffe_id's trust domain; sorted in place; a duplicate is refused.
 * revision and created_at are the datastore's and are not checked.
 */
ly_status ly_entry_validate(struct ly_entry *entry, const char *trust_domain, struct ly_error *err)
    LY_MUST_CHECK;
/*
 * The TTL floor, for an entry being created or updated (the admin API, the
 * datastore's create and update): x509_svid_ttl 0 or at least
 * LY_X509_SVID_TTL_MIN, jwt_svid_ttl 0 or at least LY_JWT_SVID_TTL_MIN
 * (lib/caps.h says why). Not part of ly_entry_validate, so that an entry
 * stored before the floor still reaches agents; the server signs its SVIDs
 * with ly_svid_ttl_floored.
 */
ly_status ly_entry_check_ttl_floor(const struct ly_entry *entry, struct ly_error *err) LY_MUST_CHECK;
/* `ttl_or_0` raised to `floor` when it is set (non-zero) and below it. */
int32_t ly_svid_ttl_floored(int32_t ttl_or_0, int32_t floor);
/* Checks one DNS name by the rule above. */
ly_status ly_dns_name_check(const char *name, struct ly_error *err) LY_MUST_CHECK;
/* Checks an entry ID by the rule above. */
ly_status ly_entry_id_check(const char *id, struct ly_error *err) LY_MUST_CHECK;

/*
 * Writes a random (RAND_bytes) version 4 UUID, lower case, into `out`
 * (LY_UUID_LEN + 1 bytes, NUL-terminated).
 */
ly_status ly_entry_generate_id(char out[LY_UUID_LEN + 1], struct ly_error *err) LY_MUST_CHECK;

/* True when the two entries match on spiffe_id, parent_id and the selector set. */
bool ly_entry_same_identity(const struct ly_entry *a, const struct ly_entry *b);

/* A growable list of heap entries, owned by the list. Initialize with LY_ENTRY_LIST_INIT. */
struct ly_entry_list {
	struct ly_entry **items;
	size_t n;
	size_t cap;
};

#define LY_ENTRY_LIST_INIT { NULL, 0, 0 }

/* Appends `entry`, taking ownership on success only. */
ly_status ly_entry_list_append(struct ly_entry_list *list, struct ly_entry *entry, struct ly_error *err)
    LY_MUST_CHECK;
/* Frees every entry and the array; leaves the list empty. */
void ly_entry_list_cleanup(struct ly_entry_list *list);

#endif /* LANYARD_ENTRY_H */
