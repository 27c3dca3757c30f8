/*
 * admin_msg_fed.h: the Admin service's federation requests (proto/admin.proto,
 * SPEC §9) decoded and checked before the datastore, like admin_msg.h:
 *   SetFederatedBundle  a trust domain ("b.test" or "spiffe://b.test"),
 *                not ours; a bundle in format "pem" or "spiffe" (empty
 *                format: pem) that parses (lib/bundle.h), holds at least
 *                one authority, and whose CA certificates, when they name
 *                a SPIFFE ID, name that trust domain (a bundle for another
 *                trust domain is refused, never stored under this one).
 *   ListFederatedBundles  an optional trust domain.
 *   DeleteFederatedBundle  a trust domain and a mode (restrict when empty).
 *   Create/UpdateFederationRelationship  a trust domain not ours, an
 *                https URL, a profile, an endpoint SPIFFE ID for
 *                https_spiffe only (ly_ds_fed_rel_check), an optional
 *                bootstrap bundle checked as SetFederatedBundle's.
 *   Get/DeleteFederationRelationship, RefreshBundle  a trust domain.
 *   CountFederatedBundles, ListFederationRelationships  read nothing.
 * Failures are LY_E_INVALID / LY_E_LIMIT with a one-line message (the
 * handler answers INVALID_ARGUMENT).
 *
 * Ownership: each decoded struct holds the unpacked message (`msg`) its
 * strings borrow from, freed by its _cleanup (safe on a zeroed or failed
 * struct); a bundle returned by a check is the caller's (ly_bundle_free).
 * Pure: no I/O, no global state; any thread. Fuzzed
 * (tests/fuzz/fuzz_admin_request.c).
 */
#ifndef LANYARD_SERVER_ADMIN_MSG_FED_H
#define LANYARD_SERVER_ADMIN_MSG_FED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/error.h"
#include "server/datastore.h"

/* A request naming a trust domain (TrustDomain, or the first field of the others). */
struct ly_admin_msg_td {
	const char *trust_domain; /* as sent; NULL when empty */
	void *msg;
};

ly_status ly_admin_msg_td_decode(const uint8_t *data, size_t len, struct ly_admin_msg_td *out, struct ly_error *err)
    LY_MUST_CHECK;
void ly_admin_msg_td_cleanup(struct ly_admin_msg_td *req);

/*
 * A trust domain as sent ("b.test" or "spiffe://b.test") into its bare name
 * (`out`, LY_TRUST_DOMAIN_MAX + 1 bytes); refused when missing, malformed,
 * or `own_td` (non-NULL).
 */
ly_status ly_admin_msg_td_check(const char *sent, const char *own_td, char *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Parses a bundle given as `format` ("pem", "spiffe"; NULL or "" is pem)
 * and `data` for trust domain `td` (bare), and checks it as the header
 * says. *out is the caller's.
 */
ly_status ly_admin_msg_bundle_parse(const char *td, const char *format, const uint8_t *data, size_t len,
    struct ly_bundle **out, struct ly_error *err) LY_MUST_CHECK;

/* A SetFederatedBundle request. */
struct ly_admin_msg_bundle_set {
	const char *trust_domain; /* as sent; NULL when empty */
	void *msg;
};

ly_status ly_admin_msg_bundle_set_decode(const uint8_t *data, size_t len, struct ly_admin_msg_bundle_set *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_admin_msg_bundle_set_check(const struct ly_admin_msg_bundle_set *req, const char *own_td,
    struct ly_bundle **out, struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_bundle_set_cleanup(struct ly_admin_msg_bundle_set *req);

/* A DeleteFederatedBundle request. */
struct ly_admin_msg_bundle_delete {
	const char *trust_domain; /* as sent; NULL when empty */
	const char *mode;         /* NULL when empty */
	void *msg;
};

ly_status ly_admin_msg_bundle_delete_decode(const uint8_t *data, size_t len, struct ly_admin_msg_bundle_delete *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_admin_msg_bundle_delete_check(const struct ly_admin_msg_bundle_delete *req, const char *own_td,
    char *td, enum ly_fed_delete_mode *mode, struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_bundle_delete_cleanup(struct ly_admin_msg_bundle_delete *req);

/* Requests with nothing to read: `what` "count" (CountFederatedBundles), else ListFederationRelationships. */
ly_status ly_admin_msg_empty_decode(const char *what, const uint8_t *data, size_t len, struct ly_error *err)
    LY_MUST_CHECK;

/* A Create/UpdateFederationRelationship request. */
struct ly_admin_msg_rel {
	const char *trust_domain; /* as sent; NULL when empty */
	void *msg;
};

/* The relationship the request asks for; its strings borrow from `req` and `td`. */
struct ly_admin_msg_rel_checked {
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_ds_fed_rel rel;  /* rel.trust_domain points to td */
	struct ly_bundle *bundle;  /* the bootstrap bundle, or NULL; owned */
};

ly_status ly_admin_msg_rel_decode(const uint8_t *data, size_t len, struct ly_admin_msg_rel *out, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_admin_msg_rel_check(const struct ly_admin_msg_rel *req, const char *own_td,
    struct ly_admin_msg_rel_checked *out, struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_rel_checked_cleanup(struct ly_admin_msg_rel_checked *c);
void ly_admin_msg_rel_cleanup(struct ly_admin_msg_rel *req);

#endif /* LANYARD_SERVER_ADMIN_MSG_FED_H */
