/*
 * lanyard/workload.h: the Lanyard client library for workloads.
 *
 * Talks to a SPIFFE Workload API endpoint (the Lanyard agent, or any
 * SPIFFE agent) over a Unix socket with gRPC, and turns what it gets into
 * OpenSSL objects and mutually authenticated TLS:
 *
 *   - fetch the caller's X.509-SVIDs and trust bundles once
 *     (lanyard_fetch_x509_context), or keep them current with a background
 *     watcher (lanyard_x509_source);
 *   - fetch JWT-SVIDs and JWT bundles, and validate a JWT-SVID through the
 *     agent (ValidateJWTSVID);
 *   - make OpenSSL SSL_CTXs that present the current SVID and accept only
 *     peers whose X.509-SVID verifies against the current bundle and whose
 *     SPIFFE ID an authorizer accepts (lanyard_tls_server_ctx,
 *     lanyard_tls_client_ctx).
 *
 * Standards: SPIFFE Workload API (spiffe/spiffe standards/
 * SPIFFE_Workload_API.md), Workload Endpoint (SPIFFE_Workload_Endpoint.md:
 * the address, §4), X509-SVID (X509-SVID.md: what a valid SVID is, §4-§5),
 * JWT-SVID (JWT-SVID.md), SPIFFE ID (SPIFFE-ID.md).
 *
 * Everything received is checked before it is handed out: each X.509-SVID
 * chain is parsed, its leaf must be an X509-SVID (exactly one URI SAN, a
 * SPIFFE ID with a path, not a CA, digitalSignature, X509-SVID §4-§5), the
 * chain must verify to the bundle of its trust domain at the present time,
 * the SPIFFE ID must equal the one the agent named, and the private key
 * must match the leaf. A response with any SVID that fails is refused
 * whole (the previous one stays current in a source). JWT bundles must be
 * valid SPIFFE bundles (JWKS).
 *
 * Limits: an X.509-SVID or JWT-SVID response may be as large as the agent
 * sends (64 MiB, ~35,000 X.509-SVIDs at ~1.8 KB each) and hold up to
 * 65,536 SVIDs; other responses up to 4 MiB; at most 1,024 federated
 * bundles. The counts are checked before the response is decoded, so
 * one of many tiny elements cannot make the library allocate many times
 * its size. A context
 * holds each SVID as OpenSSL objects (~16 KB with one intermediate): a
 * workload entitled to 30,000 SVIDs needs about 0.5 GB for it (lib/caps.h,
 * docs/client-library.md).
 *
 * Errors: every fallible function returns a lanyard_status (LANYARD_OK is
 * 0) and, when `err` is not NULL, fills it with the status and a one-line
 * message saying what and why. Messages never contain keys or tokens.
 *
 * Ownership, in one rule: a function named _new, _fetch_ or
 * lanyard_tls_*_ctx gives the caller an object it must release with the
 * matching _free (SSL_CTX_free for SSL_CTXs); getters return pointers
 * borrowed from their object, valid until that object is freed. Objects
 * marked "refcounted" have _ref to take another reference; _free drops one.
 *
 * Thread-safety: lanyard_x509_context and lanyard_authorizer are immutable
 * once made: any number of threads may read one at once. A lanyard_client
 * may be used by several threads at once (each call has its own gRPC call
 * and completion queue). A lanyard_x509_source may be read (get, wait,
 * version) from any thread while its watcher runs; its callback runs on the
 * watcher thread. SSL_CTXs made here may be shared between threads as
 * usual with OpenSSL (one SSL per connection).
 *
 * Link with `pkg-config --cflags --libs lanyard-workload`. Needs OpenSSL 3.
 */
#ifndef LANYARD_WORKLOAD_H
#define LANYARD_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LANYARD_MUST_CHECK __attribute__((warn_unused_result))
#else
#define LANYARD_MUST_CHECK
#endif

#define LANYARD_WORKLOAD_VERSION "0.1.0"
/* The version of the library linked in (LANYARD_WORKLOAD_VERSION when it was built). */
const char *lanyard_version(void);

/* ---- errors ------------------------------------------------------------ */

typedef enum lanyard_status {
	LANYARD_OK = 0,
	LANYARD_E_INVALID = 1,      /* bad argument, or a malformed or refused answer */
	LANYARD_E_LIMIT = 2,        /* something larger than the library accepts */
	LANYARD_E_NOMEM = 3,        /* out of memory */
	LANYARD_E_CRYPTO = 4,       /* OpenSSL failed */
	LANYARD_E_UNTRUSTED = 5,    /* a chain or signature does not verify; or the agent's socket directory is not safe */
	LANYARD_E_EXPIRED = 6,      /* outside its validity window */
	LANYARD_E_NOT_FOUND = 7,    /* no such SVID, bundle or trust domain */
	LANYARD_E_IO = 8,           /* the system refused (socket, thread) */
	LANYARD_E_UNSUPPORTED = 9,  /* well-formed but not accepted (key type) */
	LANYARD_E_INTERNAL = 10,    /* a bug */
	LANYARD_E_UNAVAILABLE = 11, /* the agent cannot be reached or is busy (retry) */
	LANYARD_E_DENIED = 12,      /* the agent gives this caller no identity (PERMISSION_DENIED) */
	LANYARD_E_RPC = 13,         /* the agent answered with another gRPC error (rpc_code) */
	LANYARD_E_TIMEOUT = 14,     /* nothing came in time */
} lanyard_status;

#define LANYARD_ERROR_MSG_MAX 512

/* A caller-owned value; no heap. */
struct lanyard_error {
	lanyard_status code;
	int rpc_code; /* the gRPC status code when the agent answered with an error, else 0 */
	char msg[LANYARD_ERROR_MSG_MAX];
};

/* A constant name for a status: "invalid", "unavailable", ... */
const char *lanyard_status_str(lanyard_status code);

/* ---- the Workload API address (Workload Endpoint §4) ---------------------- */

/* Longest socket path (struct sockaddr_un's sun_path less its NUL). */
#define LANYARD_SOCKET_PATH_MAX 107

/*
 * Parses a Workload API address into the socket's path. Accepted:
 * "unix:///abs/path" (empty authority), "unix:/abs/path", and a bare
 * "/abs/path" (what -socketPath flags take). Refused (LANYARD_E_INVALID):
 * any other scheme (tcp: is not supported), an authority
 * ("unix://host/p"), a relative or empty path, a query or fragment, a NUL;
 * a path over LANYARD_SOCKET_PATH_MAX bytes is LANYARD_E_LIMIT.
 * `out` must hold LANYARD_SOCKET_PATH_MAX + 1 bytes.
 */
lanyard_status lanyard_endpoint_parse(const char *addr, char *out, struct lanyard_error *err) LANYARD_MUST_CHECK;

/*
 * The address to use: `addr` when not NULL, else $SPIFFE_ENDPOINT_SOCKET
 * (LANYARD_E_NOT_FOUND when unset or empty), parsed as above into `out`.
 */
lanyard_status lanyard_endpoint_resolve(const char *addr, char *out, struct lanyard_error *err) LANYARD_MUST_CHECK;

/* ---- the client ----------------------------------------------------------- */

/*
 * A gRPC channel to the Workload API. lanyard_client_new does not connect:
 * the first call does (and reconnects as needed). Every call carries the
 * `workload.spiffe.io: true` metadata the standard requires.
 *
 * Before each call the socket's directory is judged (docs/security.md,
 * "Paths, files and who a client talks to"): when another user could have
 * put the socket there (a directory taken first under /tmp, a parent
 * others may write), the call fails LANYARD_E_UNTRUSTED and sends nothing.
 *
 * `addr`: as lanyard_endpoint_resolve (NULL: $SPIFFE_ENDPOINT_SOCKET).
 * Free with lanyard_client_free, after every call on it has returned.
 */
typedef struct lanyard_client lanyard_client;

lanyard_status lanyard_client_new(const char *addr, lanyard_client **out, struct lanyard_error *err)
    LANYARD_MUST_CHECK;
void lanyard_client_free(lanyard_client *c);
/* Deadline of each unary call and of the first message of a fetch; default 5000 ms. Not thread-safe: set it before use. */
void lanyard_client_set_timeout(lanyard_client *c, unsigned timeout_ms);

/* ---- X.509-SVIDs and bundles ------------------------------------------------ */

/*
 * One checked X.509-SVID, borrowed from its context: the pointers (and the
 * OpenSSL objects; do not free them, up_ref them to keep them longer) live
 * as long as the context.
 */
typedef struct lanyard_x509_svid lanyard_x509_svid;

/*
 * What one FetchX509SVID response held, checked: the SVIDs (the first is
 * the default identity) and the X.509 bundles of the caller's trust domain
 * and of federated ones, each with a trust store built once. Immutable,
 * refcounted.
 */
typedef struct lanyard_x509_context lanyard_x509_context;

/* Fetches the first response of the X.509-SVID stream, checked. *out: lanyard_x509_context_free. */
lanyard_status lanyard_fetch_x509_context(lanyard_client *c, lanyard_x509_context **out, struct lanyard_error *err)
    LANYARD_MUST_CHECK;

/* Takes another reference and returns `ctx`. */
lanyard_x509_context *lanyard_x509_context_ref(lanyard_x509_context *ctx);
/* Drops a reference; the last one frees the context (and wipes its keys). NULL is fine. */
void lanyard_x509_context_free(lanyard_x509_context *ctx);

/* SVIDs: at least one; index 0 is the default. */
size_t lanyard_x509_context_svid_count(const lanyard_x509_context *ctx);
const lanyard_x509_svid *lanyard_x509_context_svid(const lanyard_x509_context *ctx, size_t i);
/* The SVID whose hint is `hint`, or NULL. */
const lanyard_x509_svid *lanyard_x509_context_svid_by_hint(const lanyard_x509_context *ctx, const char *hint);

const char *lanyard_x509_svid_id(const lanyard_x509_svid *s);   /* "spiffe://td/path" */
const char *lanyard_x509_svid_hint(const lanyard_x509_svid *s); /* "" when none */
X509 *lanyard_x509_svid_leaf(const lanyard_x509_svid *s);
/* The intermediates after the leaf (possibly empty), in presentation order. */
STACK_OF(X509) *lanyard_x509_svid_intermediates(const lanyard_x509_svid *s);
/* The private key for the leaf. Never log or copy it out of process memory. */
EVP_PKEY *lanyard_x509_svid_key(const lanyard_x509_svid *s);
time_t lanyard_x509_svid_not_after(const lanyard_x509_svid *s);

/* Bundles: the caller's trust domain first, then federated ones. */
size_t lanyard_x509_context_bundle_count(const lanyard_x509_context *ctx);
/* Trust domain name (bare: "example.org") of bundle `i`. */
const char *lanyard_x509_context_bundle_td(const lanyard_x509_context *ctx, size_t i);
/* The CA certificates of bundle `i`. */
STACK_OF(X509) *lanyard_x509_context_bundle_certs(const lanyard_x509_context *ctx, size_t i);
/* The trust store for trust domain `td` (bare name), or NULL. Read-only: share, never modify. */
X509_STORE *lanyard_x509_context_trust_store(const lanyard_x509_context *ctx, const char *td);

/*
 * Verifies a peer's X.509-SVID against this context's bundle for the
 * peer's trust domain, at time `now`: `leaf` and its `intermediates` (may
 * be NULL) as presented. `id_out` (may be NULL) must hold
 * LANYARD_SPIFFE_ID_MAX + 1 bytes and gets the peer's SPIFFE ID.
 */
#define LANYARD_SPIFFE_ID_MAX 2048
lanyard_status lanyard_x509_context_verify(const lanyard_x509_context *ctx, X509 *leaf,
    STACK_OF(X509) *intermediates, time_t now, char *id_out, struct lanyard_error *err) LANYARD_MUST_CHECK;

/*
 * Parses and checks one X509SVIDResponse message (protobuf bytes), with
 * `now` as the present time: what the library does with every response.
 * Refused: over 64 MiB, more than 65,536 SVIDs or 1,024 federated
 * bundles (LANYARD_E_LIMIT, counted before anything is decoded), any rule
 * above. Exposed for tools and tests. *out: lanyard_x509_context_free.
 */
lanyard_status lanyard_x509_context_parse(const uint8_t *msg, size_t len, time_t now, lanyard_x509_context **out,
    struct lanyard_error *err) LANYARD_MUST_CHECK;

/* ---- the X.509 source: a watcher that keeps the context current ------------- */

/*
 * A background thread holds the FetchX509SVID stream open; each response
 * is checked and, when good, becomes the current context (its version
 * goes up by one), and `cb` (may be NULL) is called with it on the watcher
 * thread (borrowed for the call: lanyard_x509_context_ref to keep it).
 * When the stream ends or fails, the thread reconnects with exponential
 * backoff (200 ms doubling to 30 s, plus up to 25% jitter), keeping the
 * last good context. A response that fails the checks is skipped: the
 * current context stays, and the failure is what lanyard_x509_source_wait
 * reports if no context ever came.
 *
 * The callback must not call lanyard_x509_source_free on its own source.
 *
 * Refcounted: every SSL_CTX made from a source holds a reference, so the
 * watcher runs until the last of lanyard_x509_source_free and SSL_CTX_free.
 */
typedef struct lanyard_x509_source lanyard_x509_source;
typedef void (*lanyard_x509_update_cb)(lanyard_x509_context *ctx, void *arg);

/*
 * Starts the watcher on its own client for `addr` (as lanyard_client_new).
 * Returns at once; use lanyard_x509_source_wait for the first context.
 */
lanyard_status lanyard_x509_source_new(const char *addr, lanyard_x509_update_cb cb, void *arg,
    lanyard_x509_source **out, struct lanyard_error *err) LANYARD_MUST_CHECK;
/* Waits up to `timeout_ms` for a first context. LANYARD_E_TIMEOUT, with the last failure in the message. */
lanyard_status lanyard_x509_source_wait(lanyard_x509_source *src, unsigned timeout_ms, struct lanyard_error *err)
    LANYARD_MUST_CHECK;
/* The current context (a new reference: lanyard_x509_context_free), or NULL before the first one. */
lanyard_x509_context *lanyard_x509_source_get(lanyard_x509_source *src);
/* How many contexts have become current (0 before the first). */
uint64_t lanyard_x509_source_version(lanyard_x509_source *src);
lanyard_x509_source *lanyard_x509_source_ref(lanyard_x509_source *src);
/* Drops a reference; the last one stops the watcher (joins its thread) and frees everything. */
void lanyard_x509_source_free(lanyard_x509_source *src);

/* ---- JWT-SVIDs and JWT bundles ------------------------------------------------ */

typedef struct lanyard_jwt_svids lanyard_jwt_svids;

/*
 * FetchJWTSVID for `naud` (>= 1) audiences; `spiffe_id` NULL for one token
 * per identity, else only that one. Tokens are checked for shape (compact
 * JWS, at most 16 KiB) and each SPIFFE ID parsed. *out:
 * lanyard_jwt_svids_free (wipes the tokens).
 */
lanyard_status lanyard_fetch_jwt_svids(lanyard_client *c, const char *const *audiences, size_t naud,
    const char *spiffe_id, lanyard_jwt_svids **out, struct lanyard_error *err) LANYARD_MUST_CHECK;
size_t lanyard_jwt_svids_count(const lanyard_jwt_svids *s);
const char *lanyard_jwt_svids_id(const lanyard_jwt_svids *s, size_t i);
/* The token: a bearer secret. Never log it. */
const char *lanyard_jwt_svids_token(const lanyard_jwt_svids *s, size_t i);
const char *lanyard_jwt_svids_hint(const lanyard_jwt_svids *s, size_t i);
void lanyard_jwt_svids_free(lanyard_jwt_svids *s);

typedef struct lanyard_jwt_bundles lanyard_jwt_bundles;

/* The first response of FetchJWTBundles; each bundle checked as a SPIFFE bundle. *out: lanyard_jwt_bundles_free. */
lanyard_status lanyard_fetch_jwt_bundles(lanyard_client *c, lanyard_jwt_bundles **out, struct lanyard_error *err)
    LANYARD_MUST_CHECK;
size_t lanyard_jwt_bundles_count(const lanyard_jwt_bundles *b);
/* Trust domain ID of bundle `i`, as the agent keyed it ("spiffe://example.org"). */
const char *lanyard_jwt_bundles_td(const lanyard_jwt_bundles *b, size_t i);
/* Its JWKS document, NUL-terminated JSON. */
const char *lanyard_jwt_bundles_jwks(const lanyard_jwt_bundles *b, size_t i);
void lanyard_jwt_bundles_free(lanyard_jwt_bundles *b);

/*
 * ValidateJWTSVID: the agent checks `token` for `audience`. On success,
 * `id_out` (may be NULL; LANYARD_SPIFFE_ID_MAX + 1 bytes) gets the subject
 * and `*claims_json` (may be NULL) a malloc'd JSON object of the claims
 * (free()).
 */
lanyard_status lanyard_validate_jwt_svid(lanyard_client *c, const char *token, const char *audience, char *id_out,
    char **claims_json, struct lanyard_error *err) LANYARD_MUST_CHECK;

/* ---- authorizers ------------------------------------------------------------------ */

/* Decides whether a peer's SPIFFE ID is acceptable. Immutable; lanyard_authorizer_free. */
typedef struct lanyard_authorizer lanyard_authorizer;

/* Exactly this SPIFFE ID. */
lanyard_status lanyard_authorize_id(const char *id, lanyard_authorizer **out, struct lanyard_error *err)
    LANYARD_MUST_CHECK;
/* Any one of `n` (1..1,024) SPIFFE IDs. */
lanyard_status lanyard_authorize_one_of(const char *const *ids, size_t n, lanyard_authorizer **out,
    struct lanyard_error *err) LANYARD_MUST_CHECK;
/* Any SPIFFE ID in trust domain `td` ("example.org" or "spiffe://example.org"). */
lanyard_status lanyard_authorize_member_of(const char *td, lanyard_authorizer **out, struct lanyard_error *err)
    LANYARD_MUST_CHECK;
/* LANYARD_OK when `id` is acceptable, else LANYARD_E_UNTRUSTED saying why (or LANYARD_E_INVALID: not an ID). */
lanyard_status lanyard_authorizer_check(const lanyard_authorizer *a, const char *id, struct lanyard_error *err)
    LANYARD_MUST_CHECK;
void lanyard_authorizer_free(lanyard_authorizer *a);

/* ---- mTLS with OpenSSL ------------------------------------------------------------- */

/*
 * New SSL_CTXs for mutual TLS by X.509-SVID (TLS 1.2 and 1.3; 1.3
 * preferred). Each handshake presents the source's CURRENT SVID (leaf,
 * intermediates and key, chosen in a cert callback), and verifies the
 * peer's chain against the CURRENT bundle of the peer's trust domain (a
 * verify callback using the context's trust store, built once per bundle
 * version), then asks `authz` about the peer's SPIFFE ID (exactly one URI
 * SAN). Rotated SVIDs and bundles are used from the next handshake on,
 * without a restart. The server context requires a client certificate.
 * Session resumption is off (every handshake is verified in full).
 *
 * The SSL_CTX takes a reference on `src` and a copy of `authz`: the caller
 * may free both at once. Free the SSL_CTX with SSL_CTX_free. Do not
 * replace its verify or cert callbacks.
 */
lanyard_status lanyard_tls_server_ctx(lanyard_x509_source *src, const lanyard_authorizer *authz, SSL_CTX **out,
    struct lanyard_error *err) LANYARD_MUST_CHECK;
lanyard_status lanyard_tls_client_ctx(lanyard_x509_source *src, const lanyard_authorizer *authz, SSL_CTX **out,
    struct lanyard_error *err) LANYARD_MUST_CHECK;

/*
 * The SPIFFE ID of the peer of a completed handshake on `ssl` (its leaf's
 * one URI SAN) into `out` (LANYARD_SPIFFE_ID_MAX + 1 bytes).
 * LANYARD_E_NOT_FOUND when the peer sent no certificate.
 */
lanyard_status lanyard_tls_peer_id(const SSL *ssl, char *out, struct lanyard_error *err) LANYARD_MUST_CHECK;

/*
 * Why this library refused the peer of `ssl` (or could not present an
 * SVID) in its last handshake, one line; NULL when it did not. Borrowed
 * from the SSL, valid until SSL_free or the next handshake on it.
 */
const char *lanyard_tls_verify_error(const SSL *ssl);

#ifdef __cplusplus
}
#endif

#endif /* LANYARD_WORKLOAD_H */
