/*
 * spiffeid.h: SPIFFE IDs and trust domains, exactly per the SPIFFE-ID
 * standard (spiffe/spiffe standards/SPIFFE-ID.md). Parsed by the standard's
 * character sets, not with a URI library: nothing is folded, decoded or
 * guessed. Anything not allowed is refused with LY_E_INVALID (or LY_E_LIMIT
 * for length) and a message that names the rule.
 *
 * Ownership: struct ly_spiffe_id is a caller-owned value with fixed storage;
 * no heap, nothing to free. Strings returned through it live as long as it.
 */
#ifndef LANYARD_SPIFFEID_H
#define LANYARD_SPIFFEID_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "caps.h"

struct ly_spiffe_id {
	/* The whole ID, "spiffe://td/path", NUL-terminated. */
	char id[LY_SPIFFE_ID_MAX + 1];
	/* Length of "spiffe://" + trust domain; id + td_end is the path. */
	size_t td_end;
	/* The trust domain name alone, NUL-terminated. */
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
};

/*
 * Parses `len` bytes at `s` (need not be NUL-terminated; an embedded NUL is
 * refused) as a SPIFFE ID. The path may be empty ("spiffe://td" is the ID
 * of the trust domain itself).
 */
ly_status ly_spiffe_id_parse(const char *s, size_t len, struct ly_spiffe_id *out,
    struct ly_error *err) LY_MUST_CHECK;
/* Same, for a NUL-terminated string. */
ly_status ly_spiffe_id_parse_str(const char *s, struct ly_spiffe_id *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Validates a trust domain name: 1..255 bytes of [a-z0-9.-_]. Accepts
 * "spiffe://td" too when `allow_id_form` is set (what operators type).
 * Writes the bare name into `out` (LY_TRUST_DOMAIN_MAX + 1 bytes).
 */
ly_status ly_trust_domain_parse(const char *s, bool allow_id_form, char *out, struct ly_error *err) LY_MUST_CHECK;

/* The path part ("" or "/a/b"). */
const char *ly_spiffe_id_path(const struct ly_spiffe_id *id);
/* True when `id` has an empty path (it names a trust domain). */
bool ly_spiffe_id_is_trust_domain_id(const struct ly_spiffe_id *id);
/* True when `id` is in trust domain `td` (bare name, exact match). */
bool ly_spiffe_id_member_of(const struct ly_spiffe_id *id, const char *td);
/* Exact comparison of two IDs. */
bool ly_spiffe_id_equal(const struct ly_spiffe_id *a, const struct ly_spiffe_id *b);

/*
 * Builds "spiffe://td" + path into `out` after validating both; `path` may
 * be "" or start with '/'.
 */
ly_status ly_spiffe_id_from_parts(const char *td, const char *path, struct ly_spiffe_id *out,
    struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SPIFFEID_H */
