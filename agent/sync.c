/*
 * sync.c: the agent's server side (sync.h): node attestation and the
 * agent's own SVID, the entry watch with resync and backoff, workload SVID
 * issuance and rotation in batches, JWT-SVIDs on demand, the trust bundle,
 * and the persisted state. Protocol: proto/agent.proto, docs/agent-api.md.
 * This file holds the life cycle and the steps table that wires the
 * parts together; each part is a file of its own (sync_chan.c,
 * sync_persist.c, sync_watch.c, sync_enrol.c, sync_issue.c, sync_jwt.c,
 * and what they share in sync_base.c: who owns what in sync_internal.h),
 * and the server's messages are decoded in agentapi_msg.c.
 *
 * Everything here runs on the agent's loop thread, except three kinds of
 * work handed to libuv's thread pool (uv_queue_work), each of which gets
 * copies or objects no one else touches while it runs: key generation and
 * CSRs for a batch, verification of a batch's answers (the verifier is
 * thread-safe for verification; its bundle is only swapped between
 * batches, see ly_sync_watch_bundle_install), and writing the state files. The TLS check
 * of the server's certificate runs on gRPC's threads and reads only a
 * struct tls_check, immutable once made.
 *
 * Phases:
 *   ATTEST    no usable SVID of our own: AttestAgent over server-
 *             authenticated TLS (the bootstrap bundle, or our last bundle
 *             when we are attesting again), retried with backoff. Cached
 *             workload SVIDs are served meanwhile.
 *   ENROLLED  an mTLS channel with our SVID; the watch is open (or being
 *             reopened), batches are issued, our SVID is renewed at its
 *             drawn time in [45%, 55%] of its life (rotation.h).
 * A channel is never changed in place: after our SVID rotates or the
 * bundle changes, a new channel is made (new credentials: no connection of
 * the old one is reused) and the old one is retired: freed once its last
 * call ended (its watch is cancelled when the new watch's first update
 * arrived, so there is no gap).
 *
 * Enrolment (SPEC §6, docs/agent-api.md "AttestAgent"): join_token (one
 * round trip when the token makes the default ID, else the ticket step),
 * x509pop (challenge, then the proof with a CSR for the ID predicted from
 * the certificate), k8s_psat (no CSR: always the ticket step). The server
 * must prove spiffe://<td>/lanyard/server against the bootstrap bundle
 * (-trustBundle; our last bundle when we attest again). With
 * -insecureBootstrap and no bundle, a TLS probe takes the CA certificates
 * the server shows as roots (trust on first use, logged as a warning); the
 * bundle then comes from the answer. Our SVID is verified (chain to the
 * bundle of the answer, SAN = the ID we asked for, our key) before use,
 * and persisted with the bundle (state.h: 0600 files, atomic) so that a
 * restart with a still-valid SVID skips attestation.
 *
 * Timing:
 *   - reconnection backoff: full jitter in [0, 1 s doubling to 30 s]
 *     (servers.h); reset by the first update of a watch. A failure moves
 *     to another address of the server list when there is one (SPEC §10:
 *     a list, or a DNS name with several addresses), so an agent whose
 *     server died is served by another within about a second;
 *   - resync: every sync_interval (5 s) a new watch is opened next to the
 *     current one with our revision; its first message (the changes since
 *     it, or a snapshot when the server's change log no longer reaches
 *     back that far, or after an attestation) brings the state up to date
 *     and the old watch is cancelled. A watch still silent one interval after it was opened
 *     means the connection is dead (rpc/ sets no keepalive): both are
 *     dropped and a new channel (new connection) is made;
 *   - deletions reach the cache_changed callback (sync.h) in the same
 *     loop iteration as the update that carries them;
 *   - issuance: one BatchNewX509SVID of at most 500 CSRs in flight; new
 *     entries are due at once, renewals at their drawn time, those due
 *     within 100 ms of each other in one batch (rotation.h); a failed item
 *     is retried after 1 s doubling to 30 s, per entry; an SVID still
 *     valid is served meanwhile, one that failed verification never;
 *   - the workload SVID cache is persisted at most once a second
 *     (debounced), the agent file at once after our SVID or bundle changed.
 *
 * The bundle: every watch update carries the bundle's sequence; a higher
 * one than ours triggers GetBundle. The new bundle comes over mTLS from a
 * server that proved its ID with our current bundle, and must also
 * validate our own SVID (a server drops a root only once nothing under it
 * is valid, so a bundle that does not is wrong): otherwise refused and
 * logged. Installing it re-checks every cached SVID against it (dropped
 * ones are issued again) and makes a new channel when the roots changed.
 *
 * Refusals: PERMISSION_DENIED "agent must attest again" (evicted) ->
 * attest again with x509pop or k8s_psat; a join token works once, so an
 * agent that already used its token (or was restarted without one) logs
 * an error, keeps serving its cached SVIDs while they are valid, and asks
 * the server again every 30 s (a restart with a new -joinToken is the
 * way back). Banned: the same, without attesting. UNAUTHENTICATED: a new
 * channel, or attestation if our SVID expired.
 *
 * JWT-SVIDs: from the cache when less than half of the token's life has
 * passed (cache.h), else NewJWTSVID, then verified for every audience
 * asked for with sub = the entry's SPIFFE ID (verify.h) before it is
 * cached and handed out. A cache hit is answered from the next loop
 * iteration, never from inside ly_sync_jwt_fetch.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "agent/agentapi_msg.h"
#include "agent/cache.h"
#include "agent/keymap.h"
#include "agent/rotation.h"
#include "agent/state.h"
#include "agent/sync.h"
#include "agent/sync_internal.h"
#include "agent/verify.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/jwt.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"
#include "rpc/uvtimer.h"

/* ---- the steps table (sync_base.h) ------------------------------------------------------------- */

static const struct ly_sync_steps steps = {
	.connect = ly_sync_watch_connect,
	.watch_open = ly_sync_watch_open,
	.watch_drop_all = ly_sync_watch_drop_all,
	.bundle_install = ly_sync_watch_bundle_install,
	.verifier_release = ly_sync_watch_verifier_release,
	.federated_fetch = ly_sync_watch_federated_fetch,
	.federated_install = ly_sync_watch_federated_install,
	.attest = ly_sync_enrol_begin,
	.attest_again = ly_sync_enrol_again,
	.renew = ly_sync_enrol_renew,
	.renew_due_ms = ly_sync_enrol_renew_due_ms,
	.issue_kick = ly_sync_issue_kick,
	.tick_arm = ly_sync_issue_tick_arm,
	.persist_cache_dirty = ly_sync_persist_cache_dirty,
	.persist_agent_dirty = ly_sync_persist_agent_dirty,
};

/* ---- life cycle ------------------------------------------------------------------------------ */

ly_status
ly_sync_new(struct ly_agent *agent, const struct ly_sync_changes *changes, struct ly_sync **out,
    struct ly_error *err)
{
	struct ly_sync *s = NULL;
	const struct ly_agent_config *cfg = &agent->cfg;
	ly_status rc;

	*out = NULL;
	struct ly_server_names names;
	if (ly_servers_parse(cfg->server_address, cfg->server_port, &names, err) != LY_OK)
		return ly_error_wrap(err, LY_E_INVALID, "sync");
	if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "sync: no data directory");
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "sync: out of memory");
	s->agent = agent;
	s->steps = &steps;
	if (changes != NULL)
		s->changes = *changes;
	s->loop = agent->loop;
	ly_queue_init(&s->chans);
	ly_queue_init(&s->jwt_ready);
	/* One part per core, within libuv's pool (4 threads unless UV_THREADPOOL_SIZE says otherwise). */
	s->verify_parts = uv_available_parallelism();
	if (s->verify_parts > ISSUE_VERIFY_PARTS)
		s->verify_parts = ISSUE_VERIFY_PARTS;
	if (s->verify_parts == 0)
		s->verify_parts = 1;
	(void)snprintf(s->td, sizeof(s->td), "%s", cfg->trust_domain);
	(void)snprintf(s->server_id, sizeof(s->server_id), "spiffe://%s%s", s->td, SERVER_ID_PATH);
	/* The server list (servers.h): IP addresses known at once, DNS names resolved at start. */
	if ((s->servers = calloc(1, sizeof(*s->servers))) == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "sync: out of memory");
		goto fail;
	}
	ly_servers_init(s->servers, &names);
	ly_servers_describe(s->servers, s->target, sizeof(s->target));
	if (cfg->join_token != NULL && cfg->join_token[0] != '\0')
		s->method = METHOD_JOIN_TOKEN;
	else if (cfg->x509pop_cert_path != NULL && cfg->x509pop_key_path != NULL)
		s->method = METHOD_X509POP;
	else if (cfg->psat_cluster != NULL && cfg->psat_cluster[0] != '\0')
		s->method = METHOD_K8S_PSAT;
	if ((rc = ly_keymap_init(&s->retries, err)) != LY_OK)
		goto fail;
	if ((rc = ly_cache_new(s->td, &s->cache, err)) != LY_OK ||
	    (rc = ly_rotation_sched_new(&s->sched, err)) != LY_OK ||
	    (rc = ly_verifier_new(s->td, &s->verifier, err)) != LY_OK ||
	    (rc = ly_rotation_rng_seed_random(&s->rng, err)) != LY_OK)
		goto fail;
	*out = s;
	return LY_OK;
fail:
	ly_sync_free(s);
	return rc;
}

ly_status
ly_sync_start(struct ly_sync *s, struct ly_error *err)
{
	struct ly_error e;

	if (s->phase != PH_NEW)
		return ly_error_set(err, LY_E_INVALID, "sync: already started");
	if (s->agent->rpc == NULL || s->loop == NULL)
		return ly_error_set(err, LY_E_INVALID, "sync: no loop or rpc");
	LY_TRY(ly_state_dir_prepare(s->agent->cfg.data_dir, err));
	uv_timer_t **timers[] = { &s->t_reconnect, &s->t_resync, &s->t_tick, &s->t_persist, &s->t_defer, &s->t_trim,
		&s->t_fed };
	for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
		ly_status rc = ly_uvtimer_new(s->loop, s, false, timers[i], err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "sync");
	}
	ly_sync_persist_load(s);
	if (!s->ident.valid) {
		if (s->method == METHOD_NONE)
			return ly_error_set(err, LY_E_INVALID,
			    "no SVID of its own in %s and no way to attest: give -joinToken (or configure x509pop or "
			    "k8s_psat)",
			    s->agent->cfg.data_dir);
		LY_TRY(ly_sync_enrol_bootstrap(s, err));
	}
	/* Nothing can fail from here on (a resolution in flight must not outlive a failed start). */
	ly_sync_chan_resolve_all(s);
	if (ly_rotation_schedule_all(s->sched, s->cache, ly_sync_base_now_ms(), &e) != LY_OK)
		log_error("rotation schedule: %s", e.msg);
	int64_t iv = s->agent->cfg.sync_interval > 0 ? s->agent->cfg.sync_interval : LY_AGENT_SYNC_INTERVAL_DEFAULT;
	uv_timer_start(s->t_resync, ly_sync_watch_on_resync, (uint64_t)iv * 1000u, (uint64_t)iv * 1000u);
	if (s->ident.valid) {
		s->phase = PH_ENROLLED;
		log_info("resuming as %s (SVID valid until %" PRId64 "): no attestation needed", s->ident.id,
		    s->ident.not_after);
		ly_sync_watch_connect(s);
	} else {
		s->phase = PH_ATTEST;
		log_info("attesting to %s with %s", s->target,
		    s->method == METHOD_JOIN_TOKEN ? "a join token" :
		    s->method == METHOD_X509POP    ? "x509pop" :
							"k8s_psat");
		ly_sync_enrol_begin(s);
	}
	ly_sync_issue_tick_arm(s);
	return LY_OK;
}

void
ly_sync_stop(struct ly_sync *s, void (*cb)(void *arg), void *arg)
{
	if (s == NULL || s->stop_requested)
		return;
	enum phase was = s->phase;
	s->stop_requested = true;
	s->stop_cb = cb;
	s->stop_arg = arg;
	s->phase = PH_STOPPING;
	ly_uvtimer_close(&s->t_reconnect);
	ly_uvtimer_close(&s->t_resync);
	ly_uvtimer_close(&s->t_tick);
	ly_uvtimer_close(&s->t_persist);
	ly_uvtimer_close(&s->t_trim);
	ly_uvtimer_close(&s->t_fed);
	if (s->t_defer != NULL)
		uv_timer_stop(s->t_defer);
	ly_sync_jwt_flush(s);
	ly_sync_chan_resolve_cancel(s);
	ly_sync_watch_drop_all(s);
	/* Every call ends now (each still gets its status, later). */
	struct ly_queue *q;
	while ((q = ly_queue_head(&s->chans)) != NULL) {
		struct chan *c = LY_QUEUE_DATA(q, struct chan, link);
		bool had_calls = c->ncalls > 0;
		ly_sync_chan_kill(s, c);
		/*
		 * Killed but kept until its calls are back: unlink it from the
		 * walk. Still first only if it was kept (a channel whose calls all
		 * ended in the kill is freed and off the list): c is not read.
		 */
		if (had_calls && ly_queue_head(&s->chans) == q)
			ly_queue_remove(q);
	}
	s->chan = NULL;
	/* The last word on disk: what we hold now. */
	if (was != PH_NEW) {
		if (s->ident.valid)
			s->agent_dirty = true;
		s->cache_dirty = true;
		ly_sync_persist_kick(s);
	}
	ly_sync_base_stop_maybe_done(s);
}

void
ly_sync_free(struct ly_sync *s)
{
	if (s == NULL)
		return;
	ly_uvtimer_close(&s->t_reconnect);
	ly_uvtimer_close(&s->t_resync);
	ly_uvtimer_close(&s->t_tick);
	ly_uvtimer_close(&s->t_persist);
	ly_uvtimer_close(&s->t_defer);
	ly_uvtimer_close(&s->t_trim);
	ly_uvtimer_close(&s->t_fed);
	/* Answers nobody waits for any more (wapi is gone): dropped without a call. */
	ly_sync_jwt_drop_ready(s);
	/* Channels left (a failed start): rpc/ frees gRPC's side on ly_rpc_close. */
	struct ly_queue *q;
	while ((q = ly_queue_head(&s->chans)) != NULL) {
		struct chan *c = LY_QUEUE_DATA(q, struct chan, link);
		ly_queue_remove(q);
		ly_sync_chan_tls_check_free(c->tc);
		free(c);
	}
	EVP_PKEY_free(s->att_key);
	ly_sync_base_ident_clear(&s->ident);
	ly_bundle_free(s->bootstrap);
	ly_bundle_free(s->bundle_pending);
	free(s->probe_roots_pem);
	ly_sync_base_retries_clear(s);
	ly_verifier_free(s->verifier);
	ly_rotation_sched_free(s->sched);
	ly_cache_free(s->cache);
	free(s->servers);
	OPENSSL_cleanse(s->att_expect, sizeof(s->att_expect));
	free(s);
}

bool
ly_sync_ready(const struct ly_sync *s)
{
	return s != NULL && s->ident.valid && ly_cache_bundle(s->cache) != NULL;
}

bool
ly_sync_wapi_ready_rule(bool ready, bool entries_known, size_t cached_svids)
{
	return (ready && entries_known) || cached_svids > 0;
}

bool
ly_sync_wapi_ready(const struct ly_sync *s)
{
	if (s == NULL)
		return false;
	return ly_sync_wapi_ready_rule(ly_sync_ready(s), s->entries_known, ly_cache_svid_count(s->cache));
}

struct ly_cache *
ly_sync_cache(struct ly_sync *s)
{
	return s->cache;
}

const struct ly_bundle *
ly_sync_bundle(const struct ly_sync *s)
{
	return ly_cache_bundle(s->cache);
}

void
ly_sync_stats_get(const struct ly_sync *s, struct ly_sync_stats *out)
{
	out->svids_issued = s->stats.svids_issued;
	out->renewals = s->stats.renewals;
	out->jwt_minted = s->stats.jwt_minted;
	out->svids_failed = s->stats.svids_failed;
	out->last_sync = s->last_sync;
	const struct ly_bundle_set *set = ly_cache_bundles(s->cache);
	size_t n = set != NULL ? ly_bundle_set_count(set) : 0;
	out->federated_bundles = n > 0 && ly_bundle_set_find(set, s->td) != NULL ? n - 1 : n;
	out->federated_failed = s->stats.federated_failed;
	out->reachable = s->phase == PH_ENROLLED && s->chan != NULL && !s->reconnect_armed && s->last_sync != 0 &&
	    ly_sync_base_now_s() - (int64_t)s->last_sync <= 2 * s->agent->cfg.sync_interval + 1;
}

void
ly_sync_verify_counters(const struct ly_sync *s, struct ly_verify_counters *out)
{
	if (s->verifier != NULL)
		ly_verifier_counters(s->verifier, out);
	else
		memset(out, 0, sizeof(*out));
}

ly_status
ly_sync_fetch_jwt(struct ly_sync *s, const char *entry_id, const char *const *audiences, size_t naud, ly_sync_jwt_cb cb,
    void *arg, struct ly_error *err)
{
	return ly_sync_jwt_fetch(s, entry_id, audiences, naud, cb, arg, err);
}

void
ly_sync_memory_burst(struct ly_sync *s)
{
	ly_sync_base_memory_burst(s);
}
