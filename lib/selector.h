/*
 * selector.h: selectors (SPEC §1, §5, §6).
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
 * Ownership: struct ly_selector is a caller-owned value whose two strings
 * are heap-owned by it (ly_selector_cleanup frees them). An array of
 * selectors is freed with ly_selectors_free(array, n).
 * Nothing here is thread-safe beyond "one object, one thread".
 * Messages never echo a join token.
 */
#ifndef LANYARD_SELECTOR_H
#define LANYARD_SELECTOR_H

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

#endif /* LANYARD_SELECTOR_H */
