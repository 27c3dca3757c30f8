/*
 * sds.h: Envoy SDS v3 on the Workload API socket (SPEC §8, issue 14), with
 * SPIRE's behaviour (pkg/agent/endpoints/sdsv3):
 * envoy.service.secret.v3.SecretDiscoveryService
 *   StreamSecrets  state of the world, one stream per Envoy: a version_info
 *                  counter per stream and a random 4-byte hex nonce per
 *                  response; a request whose response_nonce is not the last
 *                  one sent is stale and ignored; a NACK (error_detail) is
 *                  logged and still processed; an ACK (same names) gets no
 *                  reply; a response goes out when the names asked for
 *                  change, or when what they resolve to changes (rotation,
 *                  bundle change, revocation: ly_sds_changed, called on the
 *                  same cache notifications as the Workload API streams).
 *   FetchSecrets   unary: the same resources, no version, no nonce.
 *   DeltaSecrets   UNIMPLEMENTED (SPIRE's answer; Envoy then needs
 *                  `api_type: GRPC`).
 * The caller is attested by wapi.c like any workload (the header rule of
 * /SpiffeWorkloadAPI/ does not apply: Envoy sends none). Its resources are
 * those of its identities (a LY_CACHE_QUERY_X509 query) and the cache's
 * bundle set, chosen and encoded by sds_msg.h. Statuses: a caller entitled
 * to nothing: PERMISSION_DENIED "no identity issued" (as the Workload API);
 * entitled but no SVID yet: the stream waits (FetchSecrets: UNAVAILABLE); a
 * name it may not have: INVALID_ARGUMENT "workload is not authorized for the
 * requested identities [...]" (SPIRE), the stream ends; a request that does
 * not decode: INVALID_ARGUMENT. Responses hold private keys: sent with
 * LY_RPC_WIPE, our copy wiped.
 *
 * Threads: the loop thread only.
 */
#ifndef LANYARD_AGENT_SDS_H
#define LANYARD_AGENT_SDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/cache.h"
#include "agent/sds_msg.h"
#include "lib/entry.h"
#include "lib/error.h"
#include "rpc/rpc.h"

#define LY_SDS_SERVICE "/envoy.service.secret.v3.SecretDiscoveryService/"

/* What SDS needs from the Workload API's connection layer (wapi.c); a test may fake it. */
struct ly_sds_host {
	void *arg;
	/*
	 * The checks every call passes (agent stopping, connection refused,
	 * agent not ready): the caller's connection, or NULL once `call` was
	 * answered (finished) with why.
	 */
	void *(*admit)(void *arg, struct ly_rpc_call *call);
	/* The caller is still the process attested; else the status to end with. */
	bool (*verify)(void *arg, void *conn, enum ly_rpc_code *code, const char **details);
	/* The connection's attested selectors and its id (for logs). */
	void (*caller)(void *conn, const struct ly_selector **sels, size_t *n, uint64_t *id);
	/* The cache to serve from (NULL while there is none). */
	struct ly_cache *(*cache)(void *arg);
};

struct ly_sds_config {
	struct ly_sds_names names;          /* borrowed: must outlive the handler */
	bool disable_spiffe_cert_validation; /* trusted_ca for every Envoy */
	/* The largest response (0: LY_RPC_RESPONSE_MAX); a larger one is answered RESOURCE_EXHAUSTED. */
	size_t max_response;
};

struct ly_sds;

ly_status ly_sds_new(const struct ly_sds_host *host, const struct ly_sds_config *cfg, struct ly_sds **out,
    struct ly_error *err) LY_MUST_CHECK;
/* Ends every open stream UNAVAILABLE (the agent stopping). */
void ly_sds_stop(struct ly_sds *s);
/* Frees the handler; every call was released (after ly_rpc_close). NULL is allowed. */
void ly_sds_free(struct ly_sds *s);

/* Brings every stream up to date with the cache (a no-op for those with nothing new). */
void ly_sds_changed(struct ly_sds *s);

/* Open streams, and responses sent so far. */
void ly_sds_counts(const struct ly_sds *s, size_t *streams, uint64_t *sent);

/* The method handlers; wapi.c's methods table hands them its `arg`, they take the handler. */
void ly_sds_stream_secrets(struct ly_sds *s, struct ly_rpc_call *call, const uint8_t *req, size_t len);
void ly_sds_fetch_secrets(struct ly_sds *s, struct ly_rpc_call *call, const uint8_t *req, size_t len);
void ly_sds_delta_secrets(struct ly_sds *s, struct ly_rpc_call *call, const uint8_t *req, size_t len);

#endif /* LANYARD_AGENT_SDS_H */
