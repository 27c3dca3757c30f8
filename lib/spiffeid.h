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

/*
 * Lanyard's reserved namespace (SPEC §2), as SPIRE reserves "/spire": every
 * path that is "/lanyard" or starts with "/lanyard/". Lanyard names in it
 * the server and the agents, and nothing else:
 *   LY_SERVER_ID_PATH                      the server (its TLS SVID)
 *   LY_AGENT_ID_PATH + "join_token/TOKEN"  a join-token agent, by default
 *   LY_AGENT_ID_PATH + "x509pop/SHA1"      an x509pop agent
 *   LY_AGENT_ID_PATH + "k8s_psat/C/UID"    a k8s_psat agent
 *   LY_AGENT_ID_PATH + "NAME..."           an agent named by `token
 *                                          generate -spiffeID` (any other
 *                                          first segment)
 * Segments compare whole: "/lanyardx" is not reserved.
 */
#define LY_RESERVED_PATH "/lanyard"
#define LY_SERVER_ID_PATH "/lanyard/server"
#define LY_AGENT_ID_PATH "/lanyard/agent/"
#define LY_JOIN_TOKEN_ID_PATH "/lanyard/agent/join_token/"

/*
 * What an ID is used as where it enters (an entry, a token, a flag), and
 * so which reserved IDs it may be. The one rule for all of them:
 *   LY_ID_GRANTED     an entry's spiffe_id (workload or node entry): never
 *                     in the reserved namespace. An entry granting the
 *                     server's or an agent's ID would let a workload pose
 *                     as the server to a new agent, or as that agent.
 *   LY_ID_PARENT      an entry's parent_id: outside the namespace, the
 *                     server's ID (node entries) or an agent's ID
 *                     (LY_AGENT_ID_PATH + at least one segment); any other
 *                     reserved path names nothing that could hand the
 *                     entry out.
 *   LY_ID_JOIN_TOKEN  the ID `token generate -spiffeID` gives an agent:
 *                     outside the namespace (SPIRE's rule), or an agent
 *                     ID LY_AGENT_ID_PATH + NAME... whose first segment is
 *                     not an attestor's own (join_token, x509pop,
 *                     k8s_psat): those name other nodes, which a token
 *                     must not take over. Never the server's ID.
 *   LY_ID_AGENT       an ID attestation gives an agent: outside the
 *                     namespace or an agent ID (never the server's).
 * Refusals are LY_E_INVALID; the message names the rule, not the ID (an
 * agent ID may hold a join token): callers add the ID where it is safe.
 */
enum ly_id_use {
	LY_ID_GRANTED,
	LY_ID_PARENT,
	LY_ID_JOIN_TOKEN,
	LY_ID_AGENT,
};

/* True when `id`'s path is LY_RESERVED_PATH or below it. */
bool ly_spiffe_id_is_reserved(const struct ly_spiffe_id *id);
/* Checks `id` (parsed, with a path) for `use` by the rule above. */
ly_status ly_spiffe_id_check_use(const struct ly_spiffe_id *id, enum ly_id_use use, struct ly_error *err)
    LY_MUST_CHECK;

#endif /* LANYARD_SPIFFEID_H */
