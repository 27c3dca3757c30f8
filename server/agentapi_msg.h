/*
 * agentapi_msg.h: the Agent service's requests (proto/agent.proto,
 * lanyard.agent.v1.Agent) as the server receives them, decoded and checked
 * before any state is touched: unpack, size caps, IDs, CSRs, the x509pop
 * chain's first certificate; converted to plain structs the handlers
 * (server/agent_api.c) decide on.
 *
 * The checks, in the order the handlers apply them (each failure is the
 * caller's INVALID_ARGUMENT unless said otherwise):
 *   AttestAgent   the message parses; a CSR, when present, is within
 *                 LY_CSR_DER_MAX and parses (lib/csr.h: it names the
 *                 agent ID it asks for); an attestation is present. Then,
 *                 once the handler has found that attestor enabled:
 *                   x509pop    a chain of 1..LY_CHAIN_DER_MAX bytes whose
 *                              first certificate splits off (lib/der.h),
 *                              its SHA-256 (LY_E_CRYPTO: the server's
 *                              INTERNAL); a proof carries a nonce of
 *                              LY_X509POP_NONCE_LEN and a signature of
 *                              1..LY_X509POP_SIG_MAX bytes;
 *                   k8s_psat   cluster 1..LY_K8S_CLUSTER_NAME_MAX and
 *                              token 1..LY_K8S_TOKEN_MAX bytes;
 *                   ticket     LY_AGENTAPI_TICKET_LEN bytes, and a CSR;
 *                   join_token nothing here (the attestor judges it).
 *   RenewAgent    parses; a CSR of 1..LY_CSR_DER_MAX bytes (the CA parses it).
 *   WatchEntries  parses; since_revision >= 0.
 *   BatchNewX509SVID parses; 1..LY_CA_BATCH_MAX params. Each param is
 *                 judged apart (its own result, not the call's): the
 *                 entry ID's syntax (lib/entry.h) and the CSR's size, kept
 *                 as flags so that the handler answers in its order
 *                 (malformed ID, then not authorized, then CSR size).
 *   NewJWTSVID    strict (lib/pbstrict.h: an audience with a NUL would be
 *                 signed cut at the NUL); the entry ID; 1..LY_JWT_AUDIENCES_MAX
 *                 audiences, each text of 1..LY_JWT_AUDIENCE_MAX bytes
 *                 (lib/text.h), together at most LY_JWT_MAX bytes.
 *   GetBundle     parses.
 * On failure err->msg is the one-line detail the handler sends, "what" or
 * "what: cause" (the cause cut so that the line stays under 300 bytes).
 *
 * Secrets: join and service-account tokens and tickets are borrowed from
 * the message; ly_agentapi_attest_cleanup wipes them before freeing it.
 * Ownership: decoded structs hold the unpacked message (`msg`) their
 * pointers borrow from; each has a _cleanup (safe on a zeroed or failed
 * struct). Pure: no I/O, no global state, no libuv, gRPC or datastore; any
 * thread.
 */
#ifndef LANYARD_SERVER_AGENTAPI_MSG_H
#define LANYARD_SERVER_AGENTAPI_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"
#include "lib/spiffeid.h"

/* An enrolment ticket (random bytes the server hands out). */
#define LY_AGENTAPI_TICKET_LEN 32

enum ly_agentapi_attestation {
	LY_AGENTAPI_JOIN_TOKEN,
	LY_AGENTAPI_X509POP,
	LY_AGENTAPI_K8S_PSAT,
	LY_AGENTAPI_TICKET,
};

#define LY_AGENTAPI_KEY_SHA256_LEN 32

/* A decoded AttestAgentRequest; every pointer borrows from `msg`. */
struct ly_agentapi_attest_request {
	enum ly_agentapi_attestation kind;
	const uint8_t *csr;   /* csr_len 0: no CSR */
	size_t csr_len;
	const char *csr_id;   /* the CSR's URI SAN (points into csr_id_buf), NULL without a CSR */
	char csr_id_buf[LY_SPIFFE_ID_MAX + 1];
	/* SHA-256 of the CSR's SubjectPublicKeyInfo DER (has_csr_key: a CSR was given); a join token's
	 * use is bound to it (a lost answer retried with the same key: server/datastore.h) */
	uint8_t csr_key_sha256[LY_AGENTAPI_KEY_SHA256_LEN];
	bool has_csr_key;
	const char *token;    /* join_token, k8s_psat: a secret */
	const char *cluster;  /* k8s_psat */
	const uint8_t *chain; /* x509pop */
	size_t chain_len;
	const uint8_t *nonce; /* x509pop's proof */
	size_t nonce_len;
	const uint8_t *signature;
	size_t signature_len;
	const uint8_t *ticket; /* ticket: a secret */
	size_t ticket_len;
	void *msg;
};

ly_status ly_agentapi_attest_decode(const uint8_t *data, size_t len, struct ly_agentapi_attest_request *out,
    struct ly_error *err) LY_MUST_CHECK;
/* Wipes the tokens and ticket, frees the message. */
void ly_agentapi_attest_cleanup(struct ly_agentapi_attest_request *req);

/* What an x509pop attestation is, once checked. */
struct ly_agentapi_x509pop {
	uint8_t leaf_hash[32]; /* SHA-256 of the chain's first certificate */
	bool proof;            /* false: asks for a challenge; true: answers one */
};

ly_status ly_agentapi_x509pop_check(const struct ly_agentapi_attest_request *req, struct ly_agentapi_x509pop *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_agentapi_psat_check(const struct ly_agentapi_attest_request *req, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_agentapi_ticket_check(const struct ly_agentapi_attest_request *req, struct ly_error *err)
    LY_MUST_CHECK;

/* A decoded RenewAgentRequest. */
struct ly_agentapi_renew_request {
	const uint8_t *csr; /* 1..LY_CSR_DER_MAX bytes */
	size_t csr_len;
	void *msg;
};

ly_status ly_agentapi_renew_decode(const uint8_t *data, size_t len, struct ly_agentapi_renew_request *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_agentapi_renew_cleanup(struct ly_agentapi_renew_request *req);

/* A WatchEntriesRequest: its since_revision (>= 0). */
ly_status ly_agentapi_watch_decode(const uint8_t *data, size_t len, int64_t *since_revision, struct ly_error *err)
    LY_MUST_CHECK;

/* One X509SVIDParams of a batch. */
struct ly_agentapi_x509_param {
	const char *entry_id; /* as sent */
	bool entry_id_ok;     /* lib/entry.h's syntax */
	const uint8_t *csr;
	size_t csr_len;
	bool csr_size_ok;     /* 1..LY_CSR_DER_MAX bytes */
};

/* A decoded BatchNewX509SVIDRequest: 1..LY_CA_BATCH_MAX params. */
struct ly_agentapi_batch_request {
	struct ly_agentapi_x509_param *params;
	size_t n_params;
	void *msg;
};

ly_status ly_agentapi_batch_decode(const uint8_t *data, size_t len, struct ly_agentapi_batch_request *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_agentapi_batch_cleanup(struct ly_agentapi_batch_request *req);

/* A decoded NewJWTSVIDRequest. */
struct ly_agentapi_jwt_request {
	const char *entry_id;
	const char *const *audience; /* n_audience of them */
	size_t n_audience;
	void *msg;
};

ly_status ly_agentapi_jwt_decode(const uint8_t *data, size_t len, struct ly_agentapi_jwt_request *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_agentapi_jwt_cleanup(struct ly_agentapi_jwt_request *req);

/* A GetBundleRequest (it carries nothing we read). */
ly_status ly_agentapi_bundle_decode(const uint8_t *data, size_t len, struct ly_error *err) LY_MUST_CHECK;

/* A GetFederatedBundlesRequest (it carries nothing we read). */
ly_status ly_agentapi_fed_bundles_decode(const uint8_t *data, size_t len, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SERVER_AGENTAPI_MSG_H */
