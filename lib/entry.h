/*
 * entry.h: registration entries and selectors (SPEC §1, §5, §6).
 *
 * A selector is "type:value", e.g. "unix:uid:1000" or "k8s:ns:prod"; the
 * value may itself contain colons, so it splits at the first colon only.
 * Only known types with known keys are accepted, each key's argument is
 * checked by the rule of the system that produces it (POSIX for unix,
 * Kubernetes' DNS-1123 and label rules for k8s, X.509 for x509pop), and
 * every selector is in canonical form: attestors emit exactly the same
 * bytes, so matching is an exact byte comparison and a selector that could
 * never match is refused up front rather than silently never matching.
 *
 *   type        keys (value = KEY:ARG)                      kind
 *   unix        uid, gid        decimal 0..4294967295, no sign, no leading 0
 *               user, group     POSIX portable name [A-Za-z0-9._-], 1..32,
 *                               not starting with '-'
 *               path            absolute, canonical: no "//", "/./", "/../",
 *                               no trailing '/', at most 4096 bytes
 *               sha256          64 lower-case hex digits
 *   k8s         ns, container-name            DNS-1123 label (<= 63)
 *               sa, pod-name, node-name       DNS-1123 subdomain (<= 253)
 *               pod-uid                       UUID, lower-case hex
 *               pod-label:KEY:VALUE           Kubernetes label syntax
 *                                             (VALUE may be empty, as in k8s)
 *               container-image               image reference chars, <= 512
 *   k8s_psat    cluster                       [A-Za-z0-9._-], 1..128
 *               agent_ns                      DNS-1123 label
 *               agent_sa, agent_node_name     DNS-1123 subdomain
 *               agent_node_uid                UUID, lower-case hex
 *   x509pop     subject:cn:NAME               1..64 bytes UTF-8, no control
 *               ca:fingerprint:HEX            40 or 64 lower-case hex (SHA-1
 *                                             or SHA-256 of the CA's DER)
 *               serialnumber:HEX              lower-case hex, no leading 0,
 *                                             1..40 digits
 *               san:dns:NAME                  a DNS name (as dns_names)
 *   join_token  TOKEN (no key)                [A-Za-z0-9._-], 1..256, not
 *                                             "." or ".." (it becomes an ID
 *                                             path segment, SPEC §2)
 *
 * Every value is valid UTF-8 without control characters (so it prints, logs
 * and encodes as JSON safely), and "type:value" is at most LY_SELECTOR_MAX
 * bytes (which bounds unix:path below its own 4096). unix and k8s are
 * workload selector types (SPEC §5); k8s_psat, x509pop and join_token are
 * node selector types (SPEC §6): node entries take only node types and
 * workload entries only workload types.
 *
 * A registration entry (SPEC §1) grants spiffe_id to a workload whose
 * attested selectors include all of the entry's selectors, on an agent
 * named by parent_id. Two entries with the same spiffe_id, parent_id and
 * selector set are duplicates (SPIRE's rule) and are refused by the
 * datastore.
 *
 * Ownership: struct ly_selector is a caller-owned value whose two strings
 * are heap-owned by it (ly_selector_cleanup frees them). An array of
 * selectors is freed with ly_selectors_free(array, n). struct ly_entry is a
 * heap object (ly_entry_new / ly_entry_copy, freed with ly_entry_free) that
 * owns every string and array it points to; set its strings with
 * ly_entry_set_string so that ownership stays right. struct ly_entry_list
 * is caller-owned and owns its entries (ly_entry_list_cleanup).
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

/* Length of a textual UUID, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx". */
#define LY_UUID_LEN 36

struct ly_selector {
	char *type;  /* "unix" */
	char *value; /* "uid:1000" */
};

/*
 * Parses `len` bytes at `s` ("type:value"; need not be NUL-terminated, an
 * embedded NUL is refused) into `out`, validated as in the table above.
 * On failure `out` is left {NULL, NULL}. Free with ly_selector_cleanup.
 */
ly_status ly_selector_parse(const char *s, size_t len, struct ly_selector *out, struct ly_error *err)
    LY_MUST_CHECK;
/* Same, for a NUL-terminated string. */
ly_status ly_selector_parse_str(const char *s, struct ly_selector *out, struct ly_error *err) LY_MUST_CHECK;
/* Validates an already split selector (type and value NUL-terminated). */
ly_status ly_selector_check(const char *type, const char *value, struct ly_error *err) LY_MUST_CHECK;
/* Validates, then copies type and value into `out` (left {NULL, NULL} on failure). */
ly_status ly_selector_set(struct ly_selector *out, const char *type, const char *value,
    struct ly_error *err) LY_MUST_CHECK;
/* Frees the strings of `sel` and leaves it {NULL, NULL}. NULL is allowed. */
void ly_selector_cleanup(struct ly_selector *sel);
/*
 * Writes "type:value" into `out` (size `size`, always NUL-terminated);
 * LY_E_LIMIT when it does not fit. A join_token value is written as is:
 * never log the result for a join_token selector.
 */
ly_status ly_selector_format(const struct ly_selector *sel, char *out, size_t size, struct ly_error *err)
    LY_MUST_CHECK;
/* Canonical order: by type, then by value, byte-wise (strcmp). */
int ly_selector_cmp(const struct ly_selector *a, const struct ly_selector *b);
bool ly_selector_equal(const struct ly_selector *a, const struct ly_selector *b);
/* True for "k8s_psat", "x509pop", "join_token" (SPEC §6). */
bool ly_selector_type_is_node(const char *type);
/* True for any type of the table above. */
bool ly_selector_type_known(const char *type);

/*
 * Deep-copies `n` selectors into a new array in *out (NULL when n == 0),
 * without validating them (they were validated when made). Free with
 * ly_selectors_free(*out, n).
 */
ly_status ly_selectors_copy(const struct ly_selector *src, size_t n, struct ly_selector **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Cleans up `n` selectors and frees the array. NULL is allowed. */
void ly_selectors_free(struct ly_selector *sels, size_t n);
/*
 * Sorts `n` selectors into canonical order in place and refuses a
 * duplicate (LY_E_INVALID, naming it).
 */
ly_status ly_selectors_canonicalize(struct ly_selector *sels, size_t n, struct ly_error *err) LY_MUST_CHECK;
/*
 * True when every one of the `n` entry selectors is among the `m` selectors
 * a workload or agent has (`have`; any order, duplicates harmless): exact
 * byte comparison, SPEC §1. An empty entry selector set matches nothing
 * (fail closed: an entry with no selector is invalid anyway).
 */
bool ly_selectors_match(const struct ly_selector *entry_sels, size_t n, const struct ly_selector *have,
    size_t m);
/* True when both hold the same set of selectors (order ignored). */
bool ly_selectors_same_set(const struct ly_selector *a, size_t n, const struct ly_selector *b, size_t m);

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
