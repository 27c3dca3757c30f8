/*
 * sync_watch.c: the entry watch and the bundle it announces
 * (sync_internal.h): WatchEntries streams (snapshots and deltas applied
 * to the cache, decoded by agentapi_msg.h), the resync every
 * sync_interval with its replacement watch, GetBundle when an update
 * names a newer bundle sequence, and the install of a new bundle.
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
#include "agent/fedset.h"
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
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"

/* ---- the bundle ----------------------------------------------------------------------------- */

/*
 * Makes `b` (taken) our bundle. The verifier's trust store must not change
 * under a batch being verified on the pool: then it waits in
 * bundle_pending until that batch is back. SVIDs that no longer chain to
 * the new bundle are dropped (and issued again); streams get the bundle; a
 * new channel is made when the roots changed (gRPC keeps the roots of a
 * channel for its whole life).
 */
void
ly_sync_watch_bundle_install(struct ly_sync *s, struct ly_bundle *b)
{
	struct ly_bundle_set *set = NULL;
	struct ly_cache_changes cs;
	struct ly_error e;

	if (s->verify_busy > 0) {
		ly_bundle_free(s->bundle_pending);
		s->bundle_pending = b;
		return;
	}
	bool roots_changed = !ly_sync_base_same_roots(ly_cache_bundle(s->cache), b);
	uint64_t seq = ly_bundle_sequence(b);
	ly_cache_changes_init(&cs);
	if (ly_verifier_set_bundle(s->verifier, b, NULL, &e) != LY_OK) {
		log_error("bundle sequence %" PRIu64 " refused: %s", seq, e.msg);
		ly_bundle_free(b);
		return;
	}
	/* Ours replaced, the federated ones kept (fedset.h). */
	if (ly_fedset_replace_own(ly_cache_bundles(s->cache), b, &set, &e) != LY_OK) {
		log_error("bundle sequence %" PRIu64 " not installed: %s", seq, e.msg);
		return;
	}
	b = NULL;
	if (ly_cache_set_bundles(s->cache, set, &cs, &e) != LY_OK) {
		log_error("bundle sequence %" PRIu64 " not installed: %s", seq, e.msg);
		ly_bundle_set_free(set);
		ly_cache_changes_cleanup(&cs);
		return;
	}
	size_t dropped = ly_verify_recheck_cache(s->verifier, s->cache, ly_sync_base_now_s(), &cs);
	log_info("trust bundle sequence %" PRIu64 " installed (%zu X.509, %zu JWT authorities)", seq,
	    ly_bundle_x509_authority_count(ly_cache_bundle(s->cache)),
	    ly_bundle_jwt_authority_count(ly_cache_bundle(s->cache)));
	if (dropped > 0)
		log_warn("%zu cached SVIDs no longer verify with the new bundle: dropped, to be issued again", dropped);
	ly_sync_base_changes_publish(s, &cs);
	s->steps->persist_agent_dirty(s);
	if (roots_changed && s->phase == PH_ENROLLED && s->chan != NULL) {
		log_debug("bundle roots changed: new channel");
		ly_sync_chan_retire(s, s->chan);
		ly_sync_watch_open(s);
	}
}

/* The pool is done with the verifier: a bundle that waited goes in now. */
void
ly_sync_watch_verifier_release(struct ly_sync *s)
{
	s->verify_busy--;
	if (s->verify_busy == 0 && s->bundle_pending != NULL) {
		struct ly_bundle *b = s->bundle_pending;
		s->bundle_pending = NULL;
		ly_sync_watch_bundle_install(s, b);
	}
}

static void
bundle_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct ly_sync *s = c->s;
	struct ly_bundle *b = NULL;
	struct ly_error e;

	s->bundle_busy = false;
	if (s->phase != PH_ENROLLED)
		goto out;
	if (code != LY_RPC_OK) {
		log_warn("GetBundle: %s %s", ly_rpc_code_str(code), details);
		goto out;
	}
	if (ly_agentapi_bundle_parse(c->resp.data, c->resp.len, s->td, &b, &e) != LY_OK) {
		log_error("GetBundle: %s", e.msg);
		goto out;
	}
	if (ly_bundle_sequence(b) <= ly_sync_base_bundle_seq(s)) {
		log_debug("GetBundle: sequence %" PRIu64 " is not newer than ours", ly_bundle_sequence(b));
		goto out;
	}
	/*
	 * The bundle comes over mTLS from a server whose certificate verified
	 * to our current bundle. We also want it to vouch for our own SVID: a
	 * server drops a root only once nothing under it is valid any more, so
	 * a bundle that does not is wrong, and installing it would cut us off.
	 */
	if (s->ident.valid && ly_sync_base_verify_with_bundle(s, b, s->ident.chain.data, s->ident.chain.len, s->ident.key,
				  s->ident.id, NULL, &e) != LY_OK) {
		log_error("GetBundle: bundle sequence %" PRIu64 " refused: it does not validate our own SVID: %s",
		    ly_bundle_sequence(b), e.msg);
		goto out;
	}
	s->stats.bundles_fetched++;
	ly_sync_watch_bundle_install(s, b);
	b = NULL;
out:
	ly_bundle_free(b);
	ly_sync_chan_call_cleanup(c);
	free(c);
}

static void
bundle_fetch(struct ly_sync *s)
{
	struct ccall *c;
	struct ly_error e;
	Lanyard__Agent__V1__GetBundleRequest req;

	/* One at a time: the next update (or the next resync) asks again if still needed. */
	if (s->bundle_busy)
		return;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->on_done = bundle_on_done;
	lanyard__agent__v1__get_bundle_request__init(&req);
	if (ly_sync_chan_call_start(s, s->chan, c, M_BUNDLE, LY_RPC_UNARY, &req.base, false, &e) != LY_OK) {
		log_warn("GetBundle: %s", e.msg);
		free(c);
		return;
	}
	s->bundle_busy = true;
}

/* ---- the federated bundles ------------------------------------------------------------------ */

/*
 * Makes `set` (taken) every federated bundle we hold; ours stays. Nothing
 * is verified with them here (they are for workloads: SPEC §9), so the
 * verifier is not involved. Streams whose view changed are pushed through
 * the change callbacks (bundle_changed); the set is persisted with our
 * SVID (state.h), so a restart with the server down serves it still.
 */
void
ly_sync_watch_federated_install(struct ly_sync *s, struct ly_bundle_set *set)
{
	struct ly_bundle_set *all = NULL;
	struct ly_cache_changes cs;
	struct ly_error e;

	ly_cache_changes_init(&cs);
	size_t n = set != NULL ? ly_bundle_set_count(set) : 0;
	if (ly_fedset_replace_federated(ly_cache_bundles(s->cache), s->td, set, &all, &e) != LY_OK) {
		log_error("federated bundles not installed: %s", e.msg);
		goto out;
	}
	if (ly_cache_set_bundles(s->cache, all, &cs, &e) != LY_OK) {
		log_error("federated bundles not installed: %s", e.msg);
		ly_bundle_set_free(all);
		goto out;
	}
	if (!cs.bundles_changed)
		goto out;
	log_info("federated bundles installed: %zu trust domains", n);
	for (size_t i = 0; i < ly_bundle_set_count(ly_cache_bundles(s->cache)); i++) {
		const struct ly_bundle *b = ly_bundle_set_at(ly_cache_bundles(s->cache), i);
		if (strcmp(ly_bundle_trust_domain(b), s->td) != 0)
			log_debug("federated bundle %s: sequence %" PRIu64 ", %zu X.509, %zu JWT authorities",
			    ly_bundle_trust_domain(b), ly_bundle_sequence(b), ly_bundle_x509_authority_count(b),
			    ly_bundle_jwt_authority_count(b));
	}
	ly_sync_base_changes_publish(s, &cs);
	s->steps->persist_agent_dirty(s);
out:
	ly_cache_changes_cleanup(&cs);
}

/* A federated bundle the server sent that did not convert: the one held stays. */
static void
federated_refused(void *arg, const char *td, const struct ly_error *why)
{
	(void)arg;
	log_warn("GetFederatedBundles: bundle of %s refused, the last good one stays: %s", td, why->msg);
}

ly_status
ly_sync_watch_federated_apply(struct ly_sync *s, const uint8_t *msg, size_t len, struct ly_error *err)
{
	struct ly_agentapi_federated fed;
	struct ly_bundle *keep = NULL;
	ly_status rc;

	if ((rc = ly_agentapi_federated_parse(msg, len, s->td, federated_refused, NULL, &fed, err)) != LY_OK)
		return rc;
	for (size_t i = 0; i < fed.n_refused; i++) {
		const struct ly_bundle *held = ly_bundle_set_find(ly_cache_bundles(s->cache), fed.refused[i]);
		if (held == NULL)
			continue;
		if ((rc = ly_bundle_clone(held, &keep, err)) != LY_OK || (rc = ly_bundle_set_put(fed.set, keep, err)) != LY_OK)
			goto out;
		keep = NULL;
	}
	s->steps->federated_install(s, fed.set);
	fed.set = NULL;
out:
	ly_bundle_free(keep);
	ly_agentapi_federated_cleanup(&fed);
	return rc;
}

static void federated_call(struct ly_sync *s);

static void
federated_on_retry(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s != NULL && s->phase == PH_ENROLLED)
		federated_call(s);
}

static void
federated_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct ly_sync *s = c->s;
	struct ly_error e;

	s->fed_busy = false;
	if (s->phase != PH_ENROLLED)
		goto out;
	if (code == LY_RPC_UNIMPLEMENTED) {
		/* A server from before federation: nothing to fetch, and no need to ask again. */
		if (!s->fed_unimplemented)
			log_info("GetFederatedBundles: the server does not federate (%s)", details);
		s->fed_unimplemented = true;
		s->fed_known = true;
		s->fed_seq = s->fed_asked;
		goto out;
	}
	ly_error_clear(&e);
	if (code != LY_RPC_OK) {
		(void)ly_error_set(&e, LY_E_IO, "%s %s", ly_rpc_code_str(code), details);
	} else if (ly_sync_watch_federated_apply(s, c->resp.data, c->resp.len, &e) == LY_OK) {
		s->stats.federated_fetched++;
		s->fed_attempt = 0;
		s->fed_known = true;
		/* The sequence that was announced when we asked: the answer is at least that recent. */
		s->fed_seq = s->fed_asked;
		if (s->fed_want != s->fed_seq)
			federated_call(s); /* announced again while we asked */
		goto out;
	}
	s->stats.federated_failed++;
	uint64_t ms = ly_sync_chan_backoff_ms(s->fed_attempt, ly_sync_base_rand32());
	if (s->fed_attempt < 32)
		s->fed_attempt++;
	log_warn("GetFederatedBundles: %s (again in %" PRIu64 " ms; the bundles held stay)", e.msg, ms);
	if (s->t_fed != NULL)
		uv_timer_start(s->t_fed, federated_on_retry, ms, 0);
out:
	ly_sync_chan_call_cleanup(c);
	free(c);
}

static void
federated_call(struct ly_sync *s)
{
	struct ccall *c;
	struct ly_error e;
	Lanyard__Agent__V1__GetFederatedBundlesRequest req;

	if (s->fed_busy || s->chan == NULL)
		return;
	if (s->t_fed != NULL && uv_is_active((uv_handle_t *)s->t_fed))
		uv_timer_stop(s->t_fed);
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->on_done = federated_on_done;
	lanyard__agent__v1__get_federated_bundles_request__init(&req);
	if (ly_sync_chan_call_start(s, s->chan, c, M_FEDERATED, LY_RPC_UNARY, &req.base, false, &e) != LY_OK) {
		log_warn("GetFederatedBundles: %s", e.msg);
		free(c);
		return;
	}
	s->fed_asked = s->fed_want;
	s->fed_busy = true;
}

/*
 * An update announced federated sequence s->fed_want: fetch when it is not
 * the one we hold (or nothing was fetched in this run yet). Coalesced: one
 * call at a time, the latest announcement wins; while a failed call waits
 * for its backoff, updates do not hurry it.
 */
void
ly_sync_watch_federated_fetch(struct ly_sync *s)
{
	if (s->fed_known && s->fed_want == s->fed_seq)
		return;
	if (s->t_fed != NULL && uv_is_active((uv_handle_t *)s->t_fed))
		return;
	federated_call(s);
}

/* ---- the watch ---------------------------------------------------------------------------- */

static void
watch_cancel(struct watch *w)
{
	if (w == NULL || w->cancelled)
		return;
	w->cancelled = true;
	if (w->base.cc != NULL)
		ly_rpc_ccall_cancel(w->base.cc);
}

void
ly_sync_watch_drop_all(struct ly_sync *s)
{
	watch_cancel(s->watch);
	watch_cancel(s->watch_next);
	s->watch = s->watch_next = NULL;
}

/* An entry of an update that did not convert: logged, the others go on. */
static void
watch_entry_refused(void *arg, const char *entry_id, const struct ly_error *why)
{
	(void)arg;
	log_warn("watch: entry %s refused: %s", entry_id, why->msg);
}

/* Applies one EntriesUpdate (idempotent upserts and deletions, docs/agent-api.md). */
void
ly_sync_watch_apply(struct ly_sync *s, const uint8_t *msg, size_t len)
{
	struct ly_agentapi_update up;
	struct ly_cache_changes cs;
	struct ly_error e;
	uint64_t t0 = uv_hrtime();

	ly_cache_changes_init(&cs);
	if (ly_agentapi_update_parse(msg, len, watch_entry_refused, NULL, &up, &e) != LY_OK) {
		log_error("watch: %s: update ignored (the next resync repairs)", e.msg);
		goto out;
	}
	if (ly_cache_apply(s->cache, &up.u, &cs, &e) != LY_OK) {
		log_error("watch: update (revision %" PRId64 ") not applied: %s", up.u.revision, e.msg);
		/* Possibly half applied: ly_sync_base_changes_publish still runs with what changed. */
	}
	if (up.u.snapshot) {
		s->entries_known = true; /* the Workload API may now tell a caller it is entitled to nothing */
		s->want_snapshot = false;
	}
	s->stats.watch_updates++;
	s->last_sync = (time_t)ly_sync_base_now_s();
	size_t nchanges = cs.n;
	ly_sync_base_changes_publish(s, &cs);
	log_debug("watch: %s revision %" PRId64 ": %zu entries, %zu deletions, %zu changes, bundle %" PRIu64
		  " (%zu bytes, applied in %.1f ms)",
	    up.u.snapshot ? "snapshot" : "delta", up.u.revision, up.u.n_entries, up.u.n_deleted, nchanges,
	    up.bundle_sequence, len, (double)(uv_hrtime() - t0) / 1e6);
	if (up.bundle_sequence > ly_sync_base_bundle_seq(s))
		bundle_fetch(s);
	/* Any change of the federated sequence (not only an increase: it is the server's, not ours to order). */
	s->fed_want = up.federated_sequence;
	if (!s->fed_unimplemented && (!s->fed_known || s->fed_want != s->fed_seq))
		s->steps->federated_fetch(s);
out:
	/* A large update (every resync of a big node is one) leaves thousands of small blocks freed. */
	if (len >= LY_AGENT_WATCH_BURST_BYTES)
		ly_sync_base_memory_burst(s);
	ly_agentapi_update_cleanup(&up);
	ly_cache_changes_cleanup(&cs);
}

static void
watch_on_msg(struct ccall *c, const uint8_t *msg, size_t len)
{
	struct watch *w = (struct watch *)c;
	struct ly_sync *s = c->s;

	if (w->cancelled || s->phase != PH_ENROLLED)
		return;
	if (w == s->watch_next) {
		/* The replacement speaks: it becomes the watch, the old one goes. */
		watch_cancel(s->watch);
		s->watch = w;
		s->watch_next = NULL;
	} else if (w != s->watch) {
		return;
	}
	bool first = !w->got_update;
	if (first) {
		w->got_update = true;
		if (s->backoff_attempt > 0 || s->denied)
			log_info("watch: connected to the server again");
		s->backoff_attempt = 0;
		s->denied = false;
	}
	ly_sync_watch_apply(s, msg, len);
	if (first) {
		/* Issuance and renewal may have waited for a working connection. */
		s->steps->issue_kick(s);
		s->steps->tick_arm(s);
	}
}

static void
watch_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct watch *w = (struct watch *)c;
	struct ly_sync *s = c->s;
	bool mine = w == s->watch || w == s->watch_next;
	bool cancelled = w->cancelled;
	bool current_chan = c->chan == s->chan;

	if (w == s->watch)
		s->watch = NULL;
	if (w == s->watch_next)
		s->watch_next = NULL;
	ly_sync_chan_call_cleanup(c);
	free(w);
	if (cancelled || !mine || s->phase != PH_ENROLLED)
		return;
	/* A watch of a retired channel (old credentials) ended while a newer one is open: that one goes on. */
	if (!current_chan && (s->watch != NULL || s->watch_next != NULL)) {
		log_debug("watch on a retired channel ended: %s %s", ly_rpc_code_str(code), details);
		return;
	}
	switch (code) {
	case LY_RPC_OK:
		/* "watch rebased": up to date, reopen at once. */
		log_debug("watch ended: %s", details);
		if (s->watch == NULL && s->watch_next == NULL)
			ly_sync_watch_open(s);
		return;
	case LY_RPC_PERMISSION_DENIED:
		ly_sync_watch_drop_all(s);
		if (strstr(details, "banned") != NULL) {
			log_error("the server refuses this agent (%s): serving cached SVIDs, asking again every %d s",
			    details, LY_SYNC_BACKOFF_MAX_MS / 1000);
			s->denied = true;
			s->backoff_attempt = 32;
			ly_sync_chan_reconnect_later(s, "banned");
			return;
		}
		s->steps->attest_again(s, details);
		return;
	case LY_RPC_UNAUTHENTICATED:
		ly_sync_watch_drop_all(s);
		if (ly_sync_base_ident_expired(s, ly_sync_base_now_s())) {
			s->steps->attest_again(s, "our SVID expired");
			return;
		}
		/* Our SVID was superseded or the connection predates it: a new channel. */
		ly_sync_chan_retire(s, s->chan);
		ly_sync_chan_reconnect_later(s, details);
		return;
	case LY_RPC_ABORTED:
		/* A newer watch of ours replaced this one (the server keeps 4). */
		if (s->watch == NULL && s->watch_next == NULL)
			ly_sync_chan_reconnect_later(s, details);
		return;
	default:
		log_warn("watch ended: %s %s", ly_rpc_code_str(code), details);
		ly_sync_watch_drop_all(s);
		ly_sync_chan_retire(s, s->chan);
		ly_sync_chan_reconnect_later(s, ly_rpc_code_str(code));
		return;
	}
}

/*
 * Opens a watch on the current channel (made first if needed). With one
 * open already it becomes the replacement (watch_next), which takes over
 * when its first update (a snapshot) arrives.
 */
void
ly_sync_watch_open(struct ly_sync *s)
{
	struct watch *w = NULL;
	struct ly_error e;
	Lanyard__Agent__V1__WatchEntriesRequest req;

	if (s->phase != PH_ENROLLED || s->reconnect_armed)
		return;
	if (s->watch_next != NULL) {
		if (s->watch_next->base.chan == s->chan)
			return;
		watch_cancel(s->watch_next); /* on a retired channel: start again on the new one */
		s->watch_next = NULL;
	}
	if (s->chan == NULL && ly_sync_chan_new(s, true, &s->chan, &e) != LY_OK) {
		log_error("channel to %s: %s", s->target, e.msg);
		ly_sync_chan_reconnect_later(s, "no channel");
		return;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		ly_sync_chan_reconnect_later(s, "out of memory");
		return;
	}
	w->base.on_msg = watch_on_msg;
	w->base.on_done = watch_on_done;
	w->serial = ++s->watch_serial;
	lanyard__agent__v1__watch_entries_request__init(&req);
	/*
	 * Our revision: the server answers the changes since it (a full
	 * snapshot only when its change log no longer reaches back that far),
	 * so the periodic replacement watch costs a few bytes, not the whole
	 * set. After an attestation, a snapshot: our selectors may be new.
	 */
	req.since_revision = s->want_snapshot ? 0 : ly_cache_revision(s->cache);
	if (ly_sync_chan_call_start(s, s->chan, &w->base, M_WATCH, LY_RPC_SERVER_STREAM, &req.base, false, &e) != LY_OK) {
		log_warn("watch: %s", e.msg);
		free(w);
		ly_sync_chan_reconnect_later(s, "watch not started");
		return;
	}
	s->stats.watch_opened++;
	if (s->watch == NULL)
		s->watch = w;
	else
		s->watch_next = w;
}

/* Enrolled: a channel and a watch; issuance and renewal follow from there. */
void
ly_sync_watch_connect(struct ly_sync *s)
{
	if (s->phase != PH_ENROLLED)
		return;
	if (s->watch == NULL)
		ly_sync_watch_open(s);
	s->steps->issue_kick(s);
	s->steps->tick_arm(s);
}

/*
 * Every sync_interval: a fresh watch next to the current one, opened
 * with our revision: its first message, the changes since then (usually
 * none: a few bytes), brings the state up to date whatever the current
 * stream lost, and proves the connection alive (a lost or stuck stream is
 * covered). A
 * replacement still silent one interval later means the connection is
 * dead: a new channel.
 */
void
ly_sync_watch_on_resync(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s == NULL || s->phase != PH_ENROLLED || s->reconnect_armed)
		return;
	/* Watches with a serial up to `mark` were open at the previous tick: a whole interval ago. */
	uint64_t mark = s->resync_mark;
	struct watch *silent = NULL;
	if (s->watch_next != NULL && s->watch_next->serial <= mark)
		silent = s->watch_next;
	else if (s->watch != NULL && !s->watch->got_update && s->watch->serial <= mark)
		silent = s->watch;
	if (silent != NULL) {
		log_warn("watch: no answer from %s within %" PRId64 " s: new connection", s->target,
		    s->agent->cfg.sync_interval);
		ly_sync_watch_drop_all(s);
		ly_sync_chan_retire(s, s->chan);
		ly_sync_chan_reconnect_later(s, "no answer");
	} else if (s->watch_next == NULL && (s->watch == NULL || s->watch->got_update)) {
		ly_sync_watch_open(s);
	}
	s->resync_mark = s->watch_serial;
}

