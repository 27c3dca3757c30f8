/*
 * sync_internal.h: the parts of sync.c that its unit tests reach, and
 * nothing else. Not a public interface: agent.h is.
 *
 * - ly_sync_backoff_ms: the reconnection delay after `attempt` failures
 *   in a row: 200 ms doubling up to 30 s, with "equal jitter" (the upper
 *   half of the step is random), so that agents that lost the same server
 *   do not come back in step.
 * - ly_sync_check_server: the check of the server's TLS certificate
 *   (X509-SVID §5: path validation to our bundle, then the SPIFFE ID
 *   spiffe://<td>/lanyard/server); called on gRPC's threads, so it
 *   touches nothing but its arguments.
 *
 * The server's messages are decoded and checked in agentapi_msg.h.
 */
#ifndef LANYARD_AGENT_SYNC_INTERNAL_H
#define LANYARD_AGENT_SYNC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "agent.pb-c.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/error.h"

/* Reconnection backoff bounds (milliseconds). */
#define LY_SYNC_BACKOFF_MIN_MS 200
#define LY_SYNC_BACKOFF_MAX_MS 30000

/* The delay before retry number `attempt` (0: the first), jittered by `rnd` (any 32 random bits). */
uint64_t ly_sync_backoff_ms(unsigned attempt, uint32_t rnd);

/*
 * Checks the server's certificate: `leaf_pem` (one certificate) and
 * `chain_pem` (as presented, may be NULL) verify to `store` at `now` and
 * the leaf is an X.509-SVID for `server_id` in trust domain `td`. With
 * `store` NULL (insecure bootstrap) only the leaf's rules and ID are
 * checked. LY_E_UNTRUSTED for another ID.
 */
ly_status ly_sync_check_server(X509_STORE *store, const char *td, const char *server_id, const char *leaf_pem,
    const char *chain_pem, time_t now, struct ly_error *err) LY_MUST_CHECK;

/*
 * ly_sync_wapi_ready's rule (agent.h): `ready` (our SVID and the bundle),
 * `entries_known` (a snapshot applied, or persisted entries loaded),
 * `cached_svids` (SVIDs held now).
 */
bool ly_sync_wapi_ready_rule(bool ready, bool entries_known, size_t cached_svids);

#endif /* LANYARD_AGENT_SYNC_INTERNAL_H */
