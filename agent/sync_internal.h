/*
 * sync_internal.h: what the parts of the agent's sync share, and the pure
 * functions its unit tests reach. Not a public interface: sync.h is.
 *
 * Parts and who owns what (one loop thread for all of them, agent.h):
 *   sync.c          struct ly_sync's life cycle (new, start, stop, free)
 *                   and the steps table that wires the parts together.
 *   sync_base.c     what they share (sync_base.h): the clock, timers, our
 *                   identity (struct ident), cache changes and the change
 *                   callbacks (sync.h), per-entry retries, the stop's end.
 *   sync_chan.c     the server channel: TLS credentials and the check of
 *                   the server's certificate, channels and calls,
 *                   reconnection with backoff.
 *   sync_persist.c  the state on disk: debounced writes on the pool, the
 *                   load at start.
 *   sync_watch.c    the entry watch (apply, resync, replacement), the
 *                   bundle (GetBundle, install), the federated bundles
 *                   (GetFederatedBundles, install).
 *   sync_enrol.c    node attestation (with the bootstrap TLS probe),
 *                   attesting again, our SVID's renewal.
 *   sync_issue.c    workload SVID batches (CSRs on the pool, answers
 *                   verified on the pool), the tick.
 *   sync_jwt.c      JWT-SVIDs on demand.
 * The server's messages are decoded and checked in agentapi_msg.h; the
 * parts only decide. The parts do not call each other: they start each
 * other's work through the steps table (sync_base.h).
 *
 * Pure helpers, for the unit tests:
 * - ly_sync_chan_backoff_ms: the reconnection delay after `attempt`
 *   failures in a row: servers.h's "full jitter", uniform in [0, 1 s
 *   doubling up to 30 s], so that agents that lost the same server do
 *   not come back in step.
 * - ly_sync_chan_check_server: the check of the server's TLS certificate
 *   (X509-SVID §5: path validation to our bundle, then the SPIFFE ID
 *   spiffe://<td>/lanyard/server); called on gRPC's threads, so it
 *   touches nothing but its arguments.
 */
#ifndef LANYARD_AGENT_SYNC_INTERNAL_H
#define LANYARD_AGENT_SYNC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "agent/sync_base.h"

/* The delay before retry number `attempt` (0: the first), jittered by `rnd` (any 32 random bits). */
uint64_t ly_sync_chan_backoff_ms(unsigned attempt, uint32_t rnd);

/*
 * Checks the server's certificate: `leaf_pem` (one certificate) and
 * `chain_pem` (as presented, may be NULL) verify to `store` at `now` and
 * the leaf is an X.509-SVID for `server_id` in trust domain `td`. With
 * `store` NULL (insecure bootstrap) only the leaf's rules and ID are
 * checked. LY_E_UNTRUSTED for another ID.
 */
ly_status ly_sync_chan_check_server(X509_STORE *store, const char *td, const char *server_id, const char *leaf_pem,
    const char *chain_pem, time_t now, struct ly_error *err) LY_MUST_CHECK;

/*
 * ly_sync_wapi_ready's rule (sync.h): `ready` (our SVID and the bundle),
 * `entries_known` (a snapshot applied, or persisted entries loaded),
 * `cached_svids` (SVIDs held now).
 */
bool ly_sync_wapi_ready_rule(bool ready, bool entries_known, size_t cached_svids);

/* ---- sync_chan.c: the server channel ---- */

void ly_sync_chan_tls_check_free(struct tls_check *tc);
void ly_sync_chan_retire(struct ly_sync *s, struct chan *c);
void ly_sync_chan_kill(struct ly_sync *s, struct chan *c);
ly_status ly_sync_chan_new(struct ly_sync *s, bool mtls, struct chan **out, struct ly_error *err);
void ly_sync_chan_call_cleanup(struct ccall *c);
ly_status ly_sync_chan_call_start(struct ly_sync *s, struct chan *ch, struct ccall *c, const char *method,
    enum ly_rpc_kind kind, const ProtobufCMessage *req, bool secret, struct ly_error *err);
/*
 * Tries again after the backoff delay (one pending retry at a time): the
 * address in use is marked failed (servers.h), the next one picked (another
 * server when there is one), a DNS name re-resolved.
 */
void ly_sync_chan_reconnect_later(struct ly_sync *s, const char *why);
/* Resolves every DNS name of the server list whose resolution is not in flight (uv_getaddrinfo, on the loop). */
void ly_sync_chan_resolve_all(struct ly_sync *s);
/* Cancels the resolutions in flight (stop): their callbacks still run, and count in n_works until then. */
void ly_sync_chan_resolve_cancel(struct ly_sync *s);
/* The address to connect to now (picked when none is in use); NULL when no address is known yet. */
const struct ly_server_ep *ly_sync_chan_endpoint(struct ly_sync *s);

/* ---- sync_persist.c: persistence ---- */

void ly_sync_persist_kick(struct ly_sync *s);
void ly_sync_persist_cache_dirty(struct ly_sync *s);
void ly_sync_persist_agent_dirty(struct ly_sync *s);
void ly_sync_persist_load(struct ly_sync *s);

/* ---- sync_watch.c: the entry watch and the bundle ---- */

void ly_sync_watch_bundle_install(struct ly_sync *s, struct ly_bundle *b);
void ly_sync_watch_verifier_release(struct ly_sync *s);
void ly_sync_watch_drop_all(struct ly_sync *s);
void ly_sync_watch_open(struct ly_sync *s);
void ly_sync_watch_connect(struct ly_sync *s);
void ly_sync_watch_on_resync(uv_timer_t *t);
void ly_sync_watch_apply(struct ly_sync *s, const uint8_t *msg, size_t len);
void ly_sync_watch_federated_fetch(struct ly_sync *s);
void ly_sync_watch_federated_install(struct ly_sync *s, struct ly_bundle_set *set);
/*
 * Applies a GetFederatedBundles answer (agentapi_msg.h): its bundles
 * replace the federated ones held, except that a trust domain whose bundle
 * was refused keeps the one held (the last good). LY_E_INVALID, LY_E_LIMIT
 * when the answer is refused as a whole: nothing changes.
 */
ly_status ly_sync_watch_federated_apply(struct ly_sync *s, const uint8_t *msg, size_t len, struct ly_error *err);

/* ---- sync_enrol.c: enrolment and our SVID's renewal ---- */

void ly_sync_enrol_begin(struct ly_sync *s);
void ly_sync_enrol_again(struct ly_sync *s, const char *why);
int64_t ly_sync_enrol_renew_due_ms(const struct ly_sync *s);
void ly_sync_enrol_renew(struct ly_sync *s);
ly_status ly_sync_enrol_bootstrap(struct ly_sync *s, struct ly_error *err);

/* ---- sync_issue.c: issuance and the tick ---- */

void ly_sync_issue_kick(struct ly_sync *s);
void ly_sync_issue_tick_arm(struct ly_sync *s);

/* ---- sync_jwt.c: JWT-SVIDs ---- */

/* Answers every op of the ready list (the deferred callbacks of cache hits). */
void ly_sync_jwt_flush(struct ly_sync *s);
/* Frees the ready list without calling back (nobody waits any more). */
void ly_sync_jwt_drop_ready(struct ly_sync *s);
ly_status ly_sync_jwt_fetch(struct ly_sync *s, const char *entry_id, const char *const *audiences, size_t naud,
    ly_sync_jwt_cb cb, void *arg, struct ly_error *err);

#endif /* LANYARD_AGENT_SYNC_INTERNAL_H */
