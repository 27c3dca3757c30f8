/*
 * attest.h: node attestation on the server (SPEC §6): decides, from what
 * an agent presents, which agent SPIFFE ID it gets and which node
 * selectors describe it. Three attestors, each SPIRE's method with our
 * path prefix (SPEC §2: agent IDs live under /lanyard/agent/):
 *
 *   join_token  a single-use token from `token generate`.
 *               ID: the one stored with the token (`token generate
 *               -spiffeID`), by default spiffe://TD/lanyard/agent/join_token/TOKEN.
 *               Selectors: none (as SPIRE: the ID is the identity).
 *   x509pop     proof of possession of the key of a certificate that
 *               chains to the configured CA bundle (lib/x509pop.h has the
 *               proof itself).
 *               ID: spiffe://TD/lanyard/agent/x509pop/SHA1HEX (the SHA-1
 *               fingerprint of the leaf's DER, lower-case hex).
 *               Selectors: x509pop:subject:cn:CN (when the leaf has a CN),
 *               x509pop:ca:fingerprint:SHA1HEX for each certificate above
 *               the leaf in the verified path (intermediates and root),
 *               x509pop:serialnumber:HEX (lower case, no leading zeros),
 *               x509pop:san:dns:NAME for each DNS SAN.
 *   k8s_psat    a projected service-account token, checked with the
 *               Kubernetes TokenReview API, then the pod and its node
 *               looked up (NOTES-k8s.md).
 *               ID: spiffe://TD/lanyard/agent/k8s_psat/CLUSTER/NODE_UID.
 *               Selectors: k8s_psat:cluster:C, k8s_psat:agent_ns:NS,
 *               k8s_psat:agent_sa:SA, k8s_psat:agent_node_name:NODE,
 *               k8s_psat:agent_node_uid:UID.
 * Every selector produced passes ly_selector_check (lib/entry.h); a value
 * that would not (a CN over 64 characters, a DNS SAN that is not a host
 * name) makes the attestation fail rather than vanish silently. Selectors
 * are returned in canonical order (ly_selectors_canonicalize).
 *
 * Results: LY_OK and a filled struct ly_attest_result when the agent is
 * admitted. Refusals of what the agent presented are LY_E_INVALID
 * (malformed), LY_E_LIMIT (over a cap), LY_E_UNTRUSTED (does not verify,
 * not authenticated, not allowed), LY_E_EXPIRED, LY_E_NOT_FOUND (unknown
 * or used join token, unknown cluster, pod or node gone); LY_E_IO is a
 * failure on our side or the Kubernetes API server's (unreachable, TLS
 * failure, HTTP error): the agent may retry later. Messages never contain
 * a token (neither a join token nor a service-account token).
 *
 * Each attestor writes `out` only on success (it should be
 * LY_ATTEST_RESULT_INIT then: it is overwritten, not freed).
 *
 * Ownership: struct ly_attest_result is caller-owned; its agent_id and
 * selectors are heap-owned by it (ly_attest_result_cleanup frees them);
 * `type` is a constant string. The attestor configurations are heap
 * objects (_new / _free) that copy everything they are given.
 *
 * Threads: the x509pop and k8s_psat configurations are read-only after
 * set-up, so one may serve concurrent attestations on many threads.
 * ly_attest_k8s_psat blocks on the network for up to about 30 s (three
 * requests, each: connect 5 s, whole request 10 s): call it from a worker
 * thread, never from an event loop. ly_attest_join_token uses the
 * datastore, which is one-thread (see datastore.h).
 */
#ifndef LANYARD_SERVER_ATTEST_H
#define LANYARD_SERVER_ATTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/entry.h"
#include "lib/error.h"
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "server/datastore.h"

struct ly_attest_result {
	char *agent_id;                /* "spiffe://td/lanyard/agent/..." (heap) */
	struct ly_selector *selectors; /* node selectors, canonical order (heap) */
	size_t n_selectors;
	const char *type;              /* "join_token", "x509pop" or "k8s_psat" (constant) */
};

#define LY_ATTEST_RESULT_INIT { NULL, NULL, 0, NULL }

/* Frees what `r` owns and leaves it LY_ATTEST_RESULT_INIT. NULL is allowed. */
void ly_attest_result_cleanup(struct ly_attest_result *r);

/*
 * Helpers the attestors share. add_selector validates type:value with
 * ly_selector_set and appends it (LY_E_LIMIT past LY_SELECTORS_MAX);
 * finish sets the agent ID (which must parse as a SPIFFE ID in
 * `trust_domain`, with a path) and `type`, and puts the selectors in
 * canonical order (a duplicate is LY_E_INVALID).
 */
ly_status ly_attest_result_add_selector(struct ly_attest_result *r, const char *type, const char *value,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_attest_result_finish(struct ly_attest_result *r, const char *type, const char *trust_domain,
    const char *agent_id, struct ly_error *err) LY_MUST_CHECK;

/* ---- join_token ---- */

/*
 * The default agent ID for a join token,
 * spiffe://<trust_domain>/lanyard/agent/join_token/<token> (SPEC §2), for
 * `token generate` to store with the token when no -spiffeID is given.
 */
ly_status ly_join_token_default_id(const char *trust_domain, const char *token, struct ly_spiffe_id *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Attests an agent by join token: checks the syntax first, then uses the
 * token up in `ds` (atomically, ly_datastore_token_consume: a second use
 * is LY_E_NOT_FOUND, an expired token LY_E_EXPIRED and used up too). The
 * agent ID is the SPIFFE ID stored with the token, which must be in
 * `trust_domain` (bare name) and have a path (LY_E_UNTRUSTED otherwise:
 * a token made for another trust domain admits no one here). No selectors.
 * `now` is Unix seconds. `key_sha256` (LY_JOIN_TOKEN_KEY_LEN bytes, or
 * NULL) is the SHA-256 of the agent's public key (its CSR's
 * SubjectPublicKeyInfo): the same token with the same key within
 * LY_JOIN_TOKEN_RETRY_S of its use admits the agent again (its first
 * answer was lost; *again = true, `again` may be NULL); another key is
 * refused as a second use.
 */
ly_status ly_attest_join_token(struct ly_datastore *ds, const char *trust_domain, const char *token, time_t now,
    const uint8_t *key_sha256, struct ly_attest_result *out, bool *again, struct ly_error *err) LY_MUST_CHECK;

/* ---- x509pop ---- */

/*
 * The x509pop configuration: the trust domain and a trust store holding
 * the configured CA bundle (built once: NOTES-openssl.md). Every
 * certificate of the bundle must be a CA (basicConstraints cA true) and
 * is a trust anchor on its own: an intermediate may be configured alone
 * (as with SPIRE, whose Go verifier treats every configured root so).
 */
struct ly_attest_x509pop;

/*
 * Reads the CA bundle from the PEM file `ca_bundle_path` (only CERTIFICATE
 * blocks, at most LY_BUNDLE_CERTS_MAX). *out: free with ly_attest_x509pop_free.
 */
ly_status ly_attest_x509pop_new(const char *trust_domain, const char *ca_bundle_path,
    struct ly_attest_x509pop **out, struct ly_error *err) LY_MUST_CHECK;
/* The same from concatenated DER certificates. */
ly_status ly_attest_x509pop_new_der(const char *trust_domain, const uint8_t *ca_der, size_t ca_len,
    struct ly_attest_x509pop **out, struct ly_error *err) LY_MUST_CHECK;
void ly_attest_x509pop_free(struct ly_attest_x509pop *cfg);

/*
 * First step: checks the presented chain (`chain_len` bytes of DER, leaf
 * first, at most LY_CHAIN_CERTS_MAX certificates) as
 * ly_attest_x509pop_verify does, so a bad chain is refused before a round
 * trip, then writes a fresh nonce to send to the agent. The caller keeps
 * the nonce (never reuses it) and the chain for the second step.
 */
ly_status ly_attest_x509pop_challenge(const struct ly_attest_x509pop *cfg, const uint8_t *chain_der,
    size_t chain_len, time_t now, uint8_t nonce[LY_X509POP_NONCE_LEN], struct ly_error *err) LY_MUST_CHECK;

/*
 * Second step: verifies everything again (the chain may have been
 * re-sent): the chain verifies to the CA bundle with X509_verify_cert at
 * `now` (RFC 5280 path validation, at most LY_VERIFY_DEPTH_MAX
 * certificates, security level 2: no SHA-1 signatures, no RSA under 2048
 * bits), the leaf is not itself a configured anchor, the leaf has a key
 * usage extension with digitalSignature and a key ly_key_check_acceptable
 * accepts, and `sig` is the proof over `nonce` by the leaf's key
 * (ly_x509pop_verify). Then fills `out` (see the table at the top).
 */
ly_status ly_attest_x509pop_verify(const struct ly_attest_x509pop *cfg, const uint8_t *chain_der, size_t chain_len,
    const uint8_t nonce[LY_X509POP_NONCE_LEN], const uint8_t *sig, size_t sig_len, time_t now,
    struct ly_attest_result *out, struct ly_error *err) LY_MUST_CHECK;

/* ---- k8s_psat ---- */

#define LY_PSAT_DEFAULT_AUDIENCE "lanyard-server"
#define LY_PSAT_DEFAULT_API_URL "https://kubernetes.default.svc"
#define LY_PSAT_DEFAULT_CA_FILE "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
#define LY_PSAT_DEFAULT_TOKEN_FILE "/var/run/secrets/kubernetes.io/serviceaccount/token"

/* One cluster's settings, as given to ly_attest_k8s_psat_add_cluster (borrowed). */
struct ly_psat_cluster_config {
	const char *name;              /* [A-Za-z0-9._-], 1..128, not "." or ".." */
	const char *const *allow;      /* service accounts admitted: "namespace:name" */
	size_t n_allow;                /* 1..LY_K8S_ALLOW_MAX */
	const char *audience;          /* NULL: LY_PSAT_DEFAULT_AUDIENCE */
	const char *api_url;           /* NULL: LY_PSAT_DEFAULT_API_URL; https:// only */
	const char *ca_file;           /* NULL: LY_PSAT_DEFAULT_CA_FILE (the only CAs trusted) */
	const char *token_file;        /* NULL: LY_PSAT_DEFAULT_TOKEN_FILE (re-read per attestation) */
};

struct ly_attest_k8s_psat;

/*
 * A configuration with no cluster yet. Initializes libcurl (the first
 * call must happen before other threads use libcurl: at start-up).
 * *out: free with ly_attest_k8s_psat_free.
 */
ly_status ly_attest_k8s_psat_new(const char *trust_domain, struct ly_attest_k8s_psat **out, struct ly_error *err)
    LY_MUST_CHECK;
/*
 * Adds a cluster (copied). Refused (LY_E_INVALID): a bad or duplicate
 * name, an empty allow list or an entry that is not "ns:sa" (DNS-1123
 * label and subdomain), an audience outside [A-Za-z0-9._:/-] (1..256), an
 * API URL that is not https://host[:port] with an optional path, empty
 * file names. Past LY_K8S_CLUSTERS_MAX clusters: LY_E_LIMIT.
 */
ly_status ly_attest_k8s_psat_add_cluster(struct ly_attest_k8s_psat *cfg, const struct ly_psat_cluster_config *c,
    struct ly_error *err) LY_MUST_CHECK;
void ly_attest_k8s_psat_free(struct ly_attest_k8s_psat *cfg);

/*
 * Attests an agent of `cluster` by its projected service-account token
 * (a JWT: 1..LY_K8S_TOKEN_MAX bytes of [A-Za-z0-9._-]). An unknown cluster
 * is LY_E_NOT_FOUND. Then, against that cluster's API server, with TLS
 * verified against its CA file only, the server's own token as bearer:
 *  1. POST /apis/authentication.k8s.io/v1/tokenreviews with the token and
 *     the cluster's audience: status.authenticated must be true, the
 *     audience in status.audiences, the username
 *     "system:serviceaccount:NS:SA" with NS:SA on the allow list, and
 *     status.user.extra carry exactly one pod name and one pod UID;
 *  2. GET /api/v1/namespaces/NS/pods/POD: metadata.uid must be the pod
 *     UID of the token (a pod recreated under the same name is refused);
 *     spec.nodeName gives the node;
 *  3. GET /api/v1/nodes/NODE: metadata.uid gives the node UID.
 * `now` is not used: the API server judges the token's validity window.
 */
ly_status ly_attest_k8s_psat(const struct ly_attest_k8s_psat *cfg, const char *cluster, const char *token,
    time_t now, struct ly_attest_result *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * The response parsers ly_attest_k8s_psat uses, apart from the HTTP so
 * that they can be tested and fuzzed alone. Each takes `len` bytes of
 * JSON (at most LY_K8S_RESPONSE_MAX, nesting at most
 * LY_K8S_JSON_DEPTH_MAX; duplicate keys refused), checks `kind` and the
 * type of every field it reads, and validates every name it returns by
 * Kubernetes' rules (DNS-1123) so it can go into a URL path and a
 * selector as is.
 */
#define LY_K8S_NS_MAX 63       /* DNS-1123 label */
#define LY_K8S_NAME_MAX 253    /* DNS-1123 subdomain */

struct ly_psat_review {
	char ns[LY_K8S_NS_MAX + 1];
	char sa[LY_K8S_NAME_MAX + 1];
	char pod_name[LY_K8S_NAME_MAX + 1];
	char pod_uid[LY_UUID_LEN + 1];
};

/*
 * A TokenReview response: authenticated, `audience` among the audiences,
 * a service-account username, one pod name and one pod UID in the extras.
 * Not authenticated and audience missing are LY_E_UNTRUSTED; malformed
 * LY_E_INVALID. The allow list is the caller's business.
 */
ly_status ly_psat_parse_tokenreview(const char *json, size_t len, const char *audience, struct ly_psat_review *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * A Pod: metadata.namespace and metadata.name must be `ns` and `name`,
 * metadata.uid must be `uid` (LY_E_UNTRUSTED otherwise); spec.nodeName
 * (DNS-1123 subdomain) goes to `node_name`.
 */
ly_status ly_psat_parse_pod(const char *json, size_t len, const char *ns, const char *name, const char *uid,
    char node_name[LY_K8S_NAME_MAX + 1], struct ly_error *err) LY_MUST_CHECK;

/* A Node: metadata.name must be `name`; metadata.uid (a UUID) goes to `node_uid`. */
ly_status ly_psat_parse_node(const char *json, size_t len, const char *name, char node_uid[LY_UUID_LEN + 1],
    struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SERVER_ATTEST_H */
