/*
 * wl_internal.h: the inside of the workload client library
 * (include/lanyard/workload.h). Not installed.
 *
 * Modules:
 *   common.c  errors (ly_status -> lanyard_status), the endpoint address
 *             (Workload Endpoint §4), authorizers;
 *   x509ctx.c X509SVIDResponse -> checked lanyard_x509_context (pure: no
 *             gRPC, so it is unit-tested and fuzzed alone);
 *   rpc.c     gRPC core calls on a per-call completion queue (no libuv),
 *             JWT-SVIDs, JWT bundles, ValidateJWTSVID;
 *   source.c  the watcher thread;
 *   tls.c     SSL_CTX callbacks.
 *
 * Internal functions follow the tree's conventions (ly_status, struct
 * ly_error); the public ones convert at the boundary with wl_export().
 */
#ifndef LANYARD_WL_INTERNAL_H
#define LANYARD_WL_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "lanyard/workload.h"
#include "lib/buf.h"
#include "lib/caps.h"
#include "lib/error.h"
#include "lib/spiffeid.h"

/* One checked X.509-SVID (public: lanyard_x509_svid). */
struct lanyard_x509_svid {
	struct ly_spiffe_id id;
	char *hint;                   /* "" when none */
	X509 *leaf;
	STACK_OF(X509) *intermediates; /* may be empty, never NULL */
	EVP_PKEY *key;
	time_t not_after;
};

/* One trust domain's X.509 authorities and the store built from them once. */
struct wl_bundle {
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_buf der;    /* the authorities as received (to compare) */
	STACK_OF(X509) *certs;
	X509_STORE *store;
};

struct lanyard_x509_context {
	atomic_uint refs;
	size_t n_svids;
	struct lanyard_x509_svid *svids;
	size_t n_bundles;
	struct wl_bundle *bundles;
};

enum wl_authz_kind { WL_AUTHZ_ID, WL_AUTHZ_ONE_OF, WL_AUTHZ_MEMBER_OF };

struct lanyard_authorizer {
	enum wl_authz_kind kind;
	size_t n;                 /* ids (ID: 1, ONE_OF: n) */
	struct ly_spiffe_id *ids;
	char td[LY_TRUST_DOMAIN_MAX + 1];
};

/*
 * Fills the public error from an internal status and detail; `rpc_code`
 * (0: none) is the gRPC status the agent answered with, which decides
 * between LANYARD_E_UNAVAILABLE, LANYARD_E_DENIED and LANYARD_E_RPC.
 * Returns the public status.
 */
lanyard_status wl_export(struct lanyard_error *out, ly_status rc, const struct ly_error *e, int rpc_code);

/* The endpoint parser on internal errors (lanyard_endpoint_parse). */
ly_status wl_endpoint_parse(const char *addr, char *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * The repeated fields of an X509SVIDResponse counted on the wire, before
 * protobuf-c unpacks it (lib/caps.h): more than LY_WL_SVIDS_MAX SVIDs or
 * LY_BUNDLE_SET_MAX CRLs or federated bundles is LY_E_LIMIT, wire damage
 * LY_E_INVALID. For every reader of the response (wl_x509_context_parse,
 * agent/cli.c).
 */
ly_status wl_x509_response_count(const uint8_t *msg, size_t len, struct ly_error *err) LY_MUST_CHECK;

/* Parses a response into a new context (lanyard_x509_context_parse). */
ly_status wl_x509_context_parse(const uint8_t *msg, size_t len, time_t now, lanyard_x509_context **out,
    struct ly_error *err) LY_MUST_CHECK;

/* lanyard_x509_context_verify on internal errors; `id_out` may be NULL. */
ly_status wl_x509_context_verify(const lanyard_x509_context *ctx, X509 *leaf, STACK_OF(X509) *intermediates,
    time_t now, struct ly_spiffe_id *id_out, struct ly_error *err) LY_MUST_CHECK;

/* An authorizer's decision on a parsed ID. */
ly_status wl_authorizer_check(const lanyard_authorizer *a, const struct ly_spiffe_id *id, struct ly_error *err)
    LY_MUST_CHECK;
/* A deep copy. */
ly_status wl_authorizer_clone(const lanyard_authorizer *a, lanyard_authorizer **out, struct ly_error *err)
    LY_MUST_CHECK;

/* ---- rpc.c ---- */

/*
 * A message handler: return 0 to read on (streams), 1 to stop with
 * success (a stream is then cancelled), -1 to stop with the failure the
 * handler put into `err`.
 */
typedef int (*wl_msg_fn)(void *arg, const uint8_t *msg, size_t len, struct ly_error *err);

/* How a call ended, as the agent said it (for callers that word their own errors: agent/cli.c). */
struct wl_call_status {
	bool got;                       /* a status came (else the call failed on our side) */
	int code;                       /* its gRPC status code */
	char details[LY_ERROR_MSG_MAX]; /* its message, "" when none */
};

struct wl_call {
	const char *method;      /* "/SpiffeWorkloadAPI/FetchX509SVID" */
	const uint8_t *req;      /* packed request (copied; wiped after) */
	size_t req_len;
	bool stream;
	unsigned timeout_ms;     /* 0: no deadline */
	wl_msg_fn on_msg;
	void *arg;
	const atomic_bool *stop; /* may be NULL; polled every 100 ms, cancels the call */
	bool bare;               /* no `workload.spiffe.io` metadata (grpc.health.v1 Check) */
	struct wl_call_status *status; /* may be NULL; filled however the call ends */
};

/*
 * Runs one call to completion on its own completion queue. *rpc_code
 * gets the gRPC status when the agent answered with an error (else 0).
 * A stream that ends without the handler stopping it is LY_E_IO.
 */
ly_status wl_rpc_call(lanyard_client *c, const struct wl_call *call, int *rpc_code, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * A client whose one channel runs over `fd`, a Unix socket connected to
 * `path` and already judged by the caller with ly_sockpath_peer_check
 * (SO_PEERCRED over that very connection: agent/cli.c). Its calls do not
 * judge the path again (the listener was judged, and nothing reconnects:
 * when that connection ends, every later call fails UNAVAILABLE; make a
 * new client). Takes `fd` in every case (closed on failure).
 * Free with lanyard_client_free.
 */
ly_status wl_client_new_fd(const char *path, int fd, lanyard_client **out, struct ly_error *err) LY_MUST_CHECK;

/* ---- source.c ---- */

/* Backoff of the watcher (ms): first wait, cap. */
#define WL_BACKOFF_MIN_MS 200
#define WL_BACKOFF_MAX_MS 30000

/*
 * A source with no watcher and no agent, holding `ctx` (a new reference;
 * NULL: none yet): for tests of the TLS callbacks, and for programs that
 * got their context elsewhere. wl_x509_source_set makes `ctx` current
 * (taking a reference), as the watcher does on an update.
 */
ly_status wl_x509_source_new_fixed(lanyard_x509_context *ctx, lanyard_x509_source **out, struct ly_error *err)
    LY_MUST_CHECK;
void wl_x509_source_set(lanyard_x509_source *s, lanyard_x509_context *ctx);

#endif /* LANYARD_WL_INTERNAL_H */
