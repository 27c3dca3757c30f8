/*
 * workload_msg.h: the Workload API's messages (SPEC §3; SPIFFE Workload
 * API standard, proto/workload.proto), built from the cache and packed
 * with protobuf-c, and the requests workloads send, decoded and checked.
 *
 * Responses (each packed into a struct ly_buf; at most LY_RPC_MSG_MAX
 * bytes, the gRPC message cap, else LY_E_LIMIT):
 *   X509SVIDResponse     svids in the query's order (the first is the
 *                        default identity), each {spiffe_id, x509_svid =
 *                        leaf + intermediates DER, x509_svid_key = PKCS#8
 *                        DER, bundle = our trust domain's X.509 authorities
 *                        DER, hint}; federated_bundles = every other
 *                        bundle of the set with X.509 authorities, keyed
 *                        "spiffe://<td>".
 *   X509BundlesResponse  bundles {"spiffe://<td>": authorities DER}, for
 *                        every bundle with X.509 authorities.
 *   JWTBundlesResponse   bundles {"spiffe://<td>": JWKS of the JWT
 *                        authorities} (ly_bundle_write_jwks with
 *                        LY_JWKS_JWT_ONLY), for every bundle.
 *   JWTSVIDResponse      svids [{spiffe_id, svid, hint}].
 *   ValidateJWTSVIDResponse {spiffe_id, claims: google.protobuf.Struct}:
 *                        JSON objects, arrays, strings, numbers (as
 *                        doubles: Struct has no integers), booleans, null.
 * Map entries are sorted by key, so equal inputs pack to equal bytes.
 *
 * Requests (each at most LY_WORKLOAD_REQUEST_MAX bytes, else LY_E_LIMIT;
 * any failure is the caller's INVALID_ARGUMENT):
 *   JWTSVIDRequest          audience: at least one (SPEC §3), at most
 *                           LY_JWT_AUDIENCES_MAX, each 1..LY_JWT_AUDIENCE_MAX
 *                           bytes of UTF-8 without control characters;
 *                           spiffe_id: empty (all identities) or a valid
 *                           SPIFFE ID with a path.
 *   ValidateJWTSVIDRequest  audience (as above) and svid (1..LY_JWT_MAX
 *                           bytes) both required.
 *   the empty requests      must parse (unknown fields are allowed, as
 *                           proto3 says).
 * A request must also re-encode to exactly its own length: protobuf-c
 * would silently cut a string at an embedded NUL, or keep the last of two
 * copies of a field; an encoding with either is refused rather than read
 * differently from what the client meant. Every real encoder passes.
 *
 * Secrets: a packed X509SVIDResponse holds private keys and a packed
 * JWTSVIDResponse bearer tokens: free every packed response with
 * ly_buf_free_secret() once sent. A decoded ValidateJWTSVIDRequest holds a
 * token: its cleanup wipes it.
 *
 * Ownership: `out` buffers must be empty on entry; the caller frees them
 * (ly_buf_free_secret). Decoded requests are caller-owned structs whose
 * strings are borrowed from the message they keep (_cleanup frees both).
 * Pure: no I/O, no global state; any thread.
 */
#ifndef LANYARD_AGENT_WORKLOAD_MSG_H
#define LANYARD_AGENT_WORKLOAD_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "agent/cache.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/error.h"

/*
 * X509SVIDResponse for the identities `ids` (a LY_CACHE_QUERY_X509 query:
 * every item must hold an SVID, else LY_E_INVALID; at least one), with our
 * trust domain's `bundle` (required, with X.509 authorities) and the
 * federated bundles of `federated` (may be NULL; `bundle`'s own trust
 * domain in it is skipped).
 */
ly_status ly_wmsg_x509svid_response(const struct ly_cache_identities *ids, const struct ly_bundle *bundle,
    const struct ly_bundle_set *federated, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/* X509BundlesResponse for every bundle of `set` holding X.509 authorities. */
ly_status ly_wmsg_x509bundles_response(const struct ly_bundle_set *set, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;

/* JWTBundlesResponse for every bundle of `set`. */
ly_status ly_wmsg_jwtbundles_response(const struct ly_bundle_set *set, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;

/* One JWT-SVID of a JWTSVIDResponse (all borrowed; hint may be NULL). */
struct ly_wmsg_jwtsvid {
	const char *spiffe_id;
	const char *token;
	const char *hint;
};

/* JWTSVIDResponse of `n` (>= 1) JWT-SVIDs, in order. */
ly_status ly_wmsg_jwtsvid_response(const struct ly_wmsg_jwtsvid *svids, size_t n, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * ValidateJWTSVIDResponse: `spiffe_id` and the validated token's `claims`
 * (a JSON object, nesting at most LY_JSON_DEPTH_MAX).
 */
ly_status ly_wmsg_validate_response(const char *spiffe_id, const json_t *claims, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;

/* A decoded JWTSVIDRequest. */
struct ly_wmsg_jwt_request {
	const char *const *audience; /* n_audience >= 1 of them, borrowed */
	size_t n_audience;
	const char *spiffe_id; /* NULL when the request names none */
	void *msg;             /* the unpacked message that owns the strings */
};

ly_status ly_wmsg_parse_jwtsvid_request(const uint8_t *data, size_t len, struct ly_wmsg_jwt_request *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_wmsg_jwt_request_cleanup(struct ly_wmsg_jwt_request *req);

/* A decoded ValidateJWTSVIDRequest. */
struct ly_wmsg_validate_request {
	const char *audience;
	const char *svid; /* a bearer token, borrowed: never log it */
	size_t svid_len;
	void *msg;
};

ly_status ly_wmsg_parse_validate_request(const uint8_t *data, size_t len, struct ly_wmsg_validate_request *out,
    struct ly_error *err) LY_MUST_CHECK;
/* Wipes the token and frees the message. */
void ly_wmsg_validate_request_cleanup(struct ly_wmsg_validate_request *req);

enum ly_wmsg_empty_kind {
	LY_WMSG_X509SVID_REQUEST,
	LY_WMSG_X509BUNDLES_REQUEST,
	LY_WMSG_JWTBUNDLES_REQUEST,
};

/* Checks that `len` bytes are a valid (empty) request of that kind. */
ly_status ly_wmsg_parse_empty_request(enum ly_wmsg_empty_kind kind, const uint8_t *data, size_t len,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * grpc.health.v1.HealthCheckRequest {string service = 1} (grpc/health/v1/
 * health.proto; no proto for it here: read by hand). *known is true for the
 * services the Workload API socket has a health for: "" (the server as a
 * whole) and "SpiffeWorkloadAPI" (proto/workload.proto has no package); any
 * other name is the caller's NOT_FOUND, as the health protocol asks. Unknown
 * fields are skipped (proto3); a truncated field, a wire type protobuf does
 * not have, `service` twice, not length-delimited, or holding a NUL is
 * LY_E_INVALID; over LY_WORKLOAD_REQUEST_MAX bytes LY_E_LIMIT.
 */
ly_status ly_wmsg_parse_health_request(const uint8_t *data, size_t len, bool *known, struct ly_error *err)
    LY_MUST_CHECK;

#endif /* LANYARD_AGENT_WORKLOAD_MSG_H */
