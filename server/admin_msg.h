/*
 * admin_msg.h: the Admin service's requests (proto/admin.proto,
 * lanyard.admin.v1.Admin) as the server receives them on its Unix socket,
 * decoded and checked before the datastore: unpack, IDs, selectors, TTLs,
 * entries (SPEC §1, SPIFFE-ID §2); converted to the structs the handlers
 * (server/admin_api.c) decide on.
 *
 * Each request is decoded first (a message that does not parse is
 * "malformed request"), so that the handler can name what the request
 * names in its audit line; then checked, in the handler's order:
 *   CreateEntry/UpdateEntry  an update names its entry; the entry converts
 *                (server/entry_pb.h), validates in our trust domain
 *                (ly_entry_validate) and keeps the TTL floors.
 *   DeleteEntry  an entry ID, by lib/entry.h's syntax.
 *   ListEntries  an entry ID (the other filters are then unused, SPIRE's
 *                rule), or: spiffe_id and parent_id empty or SPIFFE IDs,
 *                at most LY_SELECTORS_MAX selectors, each valid.
 *   GenerateToken  (once the handler found join tokens enabled) a TTL of
 *                1..LY_TOKEN_TTL_MAX seconds, 0 for LY_TOKEN_TTL_DEFAULT;
 *                (once it drew the token) the ID: the default one for the
 *                token, or a SPIFFE ID of our trust domain with a path,
 *                outside the reserved namespace (ly_spiffe_id_check_use).
 *   EvictAgent/BanAgent  an agent SPIFFE ID.
 *   GetBundle, ListAgents and Health read nothing from their requests.
 * Failures carry the status the handler maps to a gRPC code (LY_E_INVALID
 * and LY_E_LIMIT: INVALID_ARGUMENT; LY_E_NOMEM: RESOURCE_EXHAUSTED) and a
 * one-line message.
 *
 * Ownership: decoded structs hold the unpacked message (`msg`) their
 * strings borrow from; each has a _cleanup (safe on a zeroed or failed
 * struct). Pure: no I/O, no global state, no libuv, gRPC or datastore; any
 * thread.
 */
#ifndef LANYARD_SERVER_ADMIN_MSG_H
#define LANYARD_SERVER_ADMIN_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/entry.h"
#include "lib/error.h"
#include "lib/spiffeid.h"
#include "server/datastore.h" /* struct ly_entry_filter: the type only */

/* Join tokens: default and largest TTL, seconds. */
#define LY_TOKEN_TTL_DEFAULT 600
#define LY_TOKEN_TTL_MAX (7 * 24 * 60 * 60)

/* A CreateEntry or UpdateEntry request. */
struct ly_admin_msg_entry {
	const char *entry_id;  /* NULL when empty */
	const char *spiffe_id; /* NULL when empty */
	void *msg;
};

ly_status ly_admin_msg_entry_decode(const uint8_t *data, size_t len, struct ly_admin_msg_entry *out,
    struct ly_error *err) LY_MUST_CHECK;
/* The entry the request asks for, checked; *out is the caller's (ly_entry_free). */
ly_status ly_admin_msg_entry_check(const struct ly_admin_msg_entry *req, bool update, const char *trust_domain,
    struct ly_entry **out, struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_entry_cleanup(struct ly_admin_msg_entry *req);

/* A DeleteEntry request. */
struct ly_admin_msg_entry_id {
	const char *entry_id; /* NULL when empty */
	void *msg;
};

ly_status ly_admin_msg_entry_id_decode(const uint8_t *data, size_t len, struct ly_admin_msg_entry_id *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_admin_msg_delete_check(const struct ly_admin_msg_entry_id *req, struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_entry_id_cleanup(struct ly_admin_msg_entry_id *req);

/* A ListEntries filter, checked. */
struct ly_admin_msg_filter {
	const char *entry_id;          /* non-NULL: that one entry; `filter` unused */
	struct ly_entry_filter filter; /* LY_MATCH_SUPERSET over `sels` */
	struct ly_selector *sels;      /* owned */
	size_t n_sels;
	void *msg;
};

ly_status ly_admin_msg_filter_decode(const uint8_t *data, size_t len, struct ly_admin_msg_filter *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_filter_cleanup(struct ly_admin_msg_filter *req);

/* A GenerateToken request. */
struct ly_admin_msg_token {
	const char *spiffe_id; /* NULL when empty: the default ID */
	int64_t ttl;           /* as sent */
	void *msg;
};

ly_status ly_admin_msg_token_decode(const uint8_t *data, size_t len, struct ly_admin_msg_token *out,
    struct ly_error *err) LY_MUST_CHECK;
/* The token's lifetime in seconds. */
ly_status ly_admin_msg_token_ttl(const struct ly_admin_msg_token *req, int64_t *ttl, struct ly_error *err)
    LY_MUST_CHECK;
/* The ID the token (`token`, the hex string just drawn) will admit. */
ly_status ly_admin_msg_token_id(const struct ly_admin_msg_token *req, const char *trust_domain, const char *token,
    struct ly_spiffe_id *id, struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_token_cleanup(struct ly_admin_msg_token *req);

/* An EvictAgent or BanAgent request. */
struct ly_admin_msg_agent_id {
	const char *spiffe_id; /* NULL when empty */
	void *msg;
};

ly_status ly_admin_msg_agent_id_decode(const uint8_t *data, size_t len, struct ly_admin_msg_agent_id *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_admin_msg_agent_id_check(const struct ly_admin_msg_agent_id *req, struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_agent_id_cleanup(struct ly_admin_msg_agent_id *req);

#endif /* LANYARD_SERVER_ADMIN_MSG_H */
