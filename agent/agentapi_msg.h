/*
 * agentapi_msg.h: the Agent service's answers (proto/agent.proto,
 * docs/agent-api.md) as the agent takes them from the server: unpacked,
 * checked against the caps of lib/caps.h, and converted into our objects.
 * The handlers of sync (agent/sync*.c) only decide what to do with the
 * result; every rule about what a well-formed answer is lives here, and
 * the fuzz targets (fuzz_agentapi_agent.c, fuzz_agent_sync.c) run it as
 * it ships.
 *
 *   Entry            -> struct ly_entry: at most LY_SELECTORS_MAX selectors
 *                       and LY_DNS_NAMES_MAX DNS names, none NULL; not
 *                       validated further (the cache does: ly_cache_apply).
 *   Bundle           -> struct ly_bundle: names our trust domain; 1 to
 *                       LY_BUNDLE_CERTS_MAX X.509 authorities, at most
 *                       LY_JWKS_KEYS_MAX JWT authorities (each a kid and one
 *                       SubjectPublicKeyInfo of at most LY_CERT_DER_MAX bytes,
 *                       nothing after it); sequence at most INT64_MAX.
 *                       federates_with: each a valid trust domain name
 *                       (bare or "spiffe://td"; kept bare), not the
 *                       entry's own, none twice, at most
 *                       LY_ENTRY_FEDERATES_WITH_MAX.
 *   FederatedBundles (GetFederatedBundles) fewer than LY_BUNDLE_SET_MAX
 *                       bundles, each naming a valid trust domain (bare)
 *                       that is not ours and appears once, else the whole
 *                       answer is refused (it is not to be trusted). A
 *                       bundle whose content does not convert (as Bundle
 *                       above, but X.509 authorities may be none: a
 *                       JWT-only federation, or all revoked) is left out
 *                       and named in `refused`, so that sync keeps the
 *                       last good one for that trust domain.
 *   EntriesUpdate    at most LY_AGENT_ENTRIES_MAX entries and as many
 *                       deletions, no deleted ID NULL. An entry that does
 *                       not convert is left out (reported through the
 *                       `refused` callback) and the others go on: one bad
 *                       entry does not block an update (as ly_cache_apply).
 *   AgentSVID        (AttestAgent, RenewAgent): the SPIFFE ID we asked for,
 *                       a chain of 1 to LY_CHAIN_DER_MAX bytes (verified
 *                       later, against a bundle: verify.h).
 *   AttestAgentResponse an SVID, or a challenge nonce (x509pop), or an
 *                       agent ID (at most LY_SPIFFE_ID_MAX bytes) with a
 *                       ticket; which one is used is the handler's choice.
 *   BatchNewX509SVIDResponse results paired with the entries asked for
 *                       (ly_agentapi_batch_match).
 *   NewJWTSVIDResponse a token of 1 to LY_JWT_MAX bytes (verified later).
 *
 * Secrets: an AttestAgentResponse may hold a ticket and a
 * NewJWTSVIDResponse a bearer token: free them with their _free function,
 * which wipes them. Error messages never quote a ticket or a token.
 *
 * Ownership: unpacked messages returned through `out` are the caller's
 * (their _free function); converted entries and bundles likewise
 * (ly_entry_free, ly_bundle_free). Pure: no I/O, no state, no loop, no
 * gRPC; any thread.
 */
#ifndef LANYARD_AGENT_AGENTAPI_MSG_H
#define LANYARD_AGENT_AGENTAPI_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent.pb-c.h"
#include "agent/cache.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/error.h"

/* An Entry message into a new ly_entry (not validated: the cache does that). */
ly_status ly_agentapi_entry_from_pb(const Lanyard__Agent__V1__Entry *m, struct ly_entry **out, struct ly_error *err)
    LY_MUST_CHECK;

/* A Bundle message for trust domain `td` (bare name; the message must name it) into a new bundle. */
ly_status ly_agentapi_bundle_from_pb(const Lanyard__Agent__V1__Bundle *m, const char *td, struct ly_bundle **out,
    struct ly_error *err) LY_MUST_CHECK;

/* A GetBundle answer (a packed Bundle) for trust domain `td` into a new bundle. */
ly_status ly_agentapi_bundle_parse(const uint8_t *data, size_t len, const char *td, struct ly_bundle **out,
    struct ly_error *err) LY_MUST_CHECK;

/* An entry of an update that did not convert: its ID ("?" when it has none) and why. */
typedef void (*ly_agentapi_refused_fn)(void *arg, const char *entry_id, const struct ly_error *why);

/* A decoded EntriesUpdate. */
struct ly_agentapi_update {
	/* Ready for ly_cache_apply: entries owned here, deleted IDs borrowed from `msg`. */
	struct ly_cache_update u;
	uint64_t bundle_sequence; /* the server's bundle sequence when it sent the update */
	uint64_t federated_sequence; /* the server's federated bundles' sequence then */
	size_t n_refused;         /* entries left out */
	Lanyard__Agent__V1__EntriesUpdate *msg;
};

/*
 * Decodes one EntriesUpdate of `len` bytes into `out` (zeroed first);
 * `refused` (may be NULL) is told about each entry left out. Errors:
 * LY_E_INVALID (not an EntriesUpdate, a NULL deleted ID), LY_E_LIMIT (too
 * many entries or deletions), LY_E_NOMEM; `out` is then empty.
 */
ly_status ly_agentapi_update_parse(const uint8_t *data, size_t len, ly_agentapi_refused_fn refused, void *arg,
    struct ly_agentapi_update *out, struct ly_error *err) LY_MUST_CHECK;
/* Frees what is left of the entries (ly_cache_apply takes those it keeps) and the message. */
void ly_agentapi_update_cleanup(struct ly_agentapi_update *up);

/* A federated bundle that was left out: its trust domain and why. */
typedef void (*ly_agentapi_fed_refused_fn)(void *arg, const char *td, const struct ly_error *why);

/* A decoded FederatedBundles answer. */
struct ly_agentapi_federated {
	struct ly_bundle_set *set; /* owned: the bundles that converted */
	uint64_t sequence;         /* the server's federated sequence they are as of */
	char *refused[LY_BUNDLE_SET_MAX]; /* owned: trust domains whose bundle was left out */
	size_t n_refused;
};

/*
 * Decodes a GetFederatedBundles answer of `len` bytes for an agent of
 * trust domain `own_td` into `out` (zeroed first; see the rules above);
 * `refused` (may be NULL) is told about each bundle left out. Errors:
 * LY_E_INVALID, LY_E_LIMIT, LY_E_NOMEM; `out` is then empty.
 */
ly_status ly_agentapi_federated_parse(const uint8_t *data, size_t len, const char *own_td,
    ly_agentapi_fed_refused_fn refused, void *arg, struct ly_agentapi_federated *out, struct ly_error *err)
    LY_MUST_CHECK;
void ly_agentapi_federated_cleanup(struct ly_agentapi_federated *f);

/*
 * An AgentSVID for `expect_id`: its SPIFFE ID is that one (LY_E_UNTRUSTED
 * otherwise), its chain 1 to LY_CHAIN_DER_MAX bytes (LY_E_LIMIT).
 */
ly_status ly_agentapi_svid_check(const Lanyard__Agent__V1__AgentSVID *m, const char *expect_id, struct ly_error *err)
    LY_MUST_CHECK;

/* A RenewAgent answer (a packed AgentSVID) for `expect_id`: unpacked, then ly_agentapi_svid_check. */
ly_status ly_agentapi_agent_svid_parse(const uint8_t *data, size_t len, const char *expect_id,
    Lanyard__Agent__V1__AgentSVID **out, struct ly_error *err) LY_MUST_CHECK;
void ly_agentapi_agent_svid_free(Lanyard__Agent__V1__AgentSVID *m);

/* An AttestAgent answer, unpacked (what it carries is read with the three functions below). */
ly_status ly_agentapi_attest_parse(const uint8_t *data, size_t len, Lanyard__Agent__V1__AttestAgentResponse **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Wipes the ticket and frees the message (NULL: nothing). */
void ly_agentapi_attest_free(Lanyard__Agent__V1__AttestAgentResponse *m);
/* An x509pop challenge: a nonce to sign. */
bool ly_agentapi_attest_has_challenge(const Lanyard__Agent__V1__AttestAgentResponse *m);
/* Admitted under an ID we may not have predicted: an agent ID and a ticket to redeem with a CSR for it. */
bool ly_agentapi_attest_has_ticket(const Lanyard__Agent__V1__AttestAgentResponse *m);
/* The ticket's agent ID copied into `out` (`size` > LY_SPIFFE_ID_MAX); LY_E_LIMIT when it does not fit. */
ly_status ly_agentapi_attest_ticket_id(const Lanyard__Agent__V1__AttestAgentResponse *m, char *out, size_t size,
    struct ly_error *err) LY_MUST_CHECK;

/* A BatchNewX509SVID answer, unpacked. */
ly_status ly_agentapi_batch_parse(const uint8_t *data, size_t len,
    Lanyard__Agent__V1__BatchNewX509SVIDResponse **out, struct ly_error *err) LY_MUST_CHECK;
void ly_agentapi_batch_free(Lanyard__Agent__V1__BatchNewX509SVIDResponse *m);

/*
 * Pairs the results of `resp` with the `n` entries asked for (`ids[i]`;
 * NULL for an entry not in the request). Results come in request order
 * and are searched otherwise. A result for an ID we did not ask for is
 * ignored, and so is a second result for an entry (the first stands).
 * For each entry: `answer[i]` the successful result (status_code 0), or
 * `refused[i]` the server's refusal of it, or neither (no answer). Both
 * arrays have `n` slots, set here; results are borrowed from `resp`.
 */
void ly_agentapi_batch_match(const Lanyard__Agent__V1__BatchNewX509SVIDResponse *resp, const char *const *ids,
    size_t n, const Lanyard__Agent__V1__X509SVIDResult **answer, const Lanyard__Agent__V1__X509SVIDResult **refused);

/* A NewJWTSVID answer: unpacked, with a token of 1 to LY_JWT_MAX bytes (else LY_E_INVALID). */
ly_status ly_agentapi_jwt_parse(const uint8_t *data, size_t len, Lanyard__Agent__V1__NewJWTSVIDResponse **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Wipes the token and frees the message (NULL: nothing). */
void ly_agentapi_jwt_free(Lanyard__Agent__V1__NewJWTSVIDResponse *m);

#endif /* LANYARD_AGENT_AGENTAPI_MSG_H */
