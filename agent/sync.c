/*
 * sync.c: the agent's server side (sync.h): node attestation and the
 * agent's own SVID, the entry watch with resync and backoff, workload SVID
 * issuance and rotation in batches, JWT-SVIDs on demand, the trust bundle,
 * and the persisted state. Protocol: proto/agent.proto, docs/agent-api.md.
 * This file holds the life cycle and what the parts share; each part is a
 * file of its own (sync_chan.c, sync_persist.c, sync_watch.c,
 * sync_enrol.c, sync_issue.c, sync_jwt.c: who owns what in
 * sync_internal.h), and the server's messages are decoded in
 * agentapi_msg.c.
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
 *   - reconnection backoff: 200 ms doubling to 30 s (each step jittered
 *     in its upper half); reset by the first update of a watch;
 *   - resync: every sync_interval (5 s) a new watch is opened next to the
 *     current one; its snapshot replaces the state and the old watch is
 *     cancelled. A watch still silent one interval after it was opened
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
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"

/* ---- the clock -------------------------------------------------------------------------------- */

int64_t
ly_sync_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
ly_sync_now_s(void)
{
	return (int64_t)ly_agent_now();
}

uint32_t
ly_sync_rand32(void)
{
	uint32_t r = 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)ly_sync_now_ms();
	return r;
}

/* ---- timers --------------------------------------------------------------------------------- */

static void
timer_closed(uv_handle_t *h)
{
	free(h);
}

static ly_status
timer_new(struct ly_sync *s, uv_timer_t **out, struct ly_error *err)
{
	uv_timer_t *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (t == NULL)
		return ly_error_set(err, LY_E_NOMEM, "sync: out of memory");
	if (uv_timer_init(s->loop, t) != 0) {
		free(t);
		return ly_error_set(err, LY_E_INTERNAL, "sync: timer");
	}
	t->data = s;
	*out = t;
	return LY_OK;
}

static void
timer_close(uv_timer_t **t)
{
	if (*t == NULL)
		return;
	uv_timer_stop(*t);
	(*t)->data = NULL;
	uv_close((uv_handle_t *)*t, timer_closed);
	*t = NULL;
}

void
ly_sync_timer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t ms)
{
	if (t != NULL)
		uv_timer_start(t, cb, ms, 0);
}

/*
 * glibc keeps the memory freed after a burst (a storm's keys, CSRs and
 * answers on the pool threads' arenas; a thousand connections) and VmRSS
 * stays at the peak: 51 MiB after a 10,000-SVID storm with 17 MB in use
 * (docs/benchmarks.md). A quarter of a second after the last burst
 * activity the loop hands it back (a burst that goes on keeps pushing the
 * trim back). malloc_trim walks the heap (2-5 ms at 10,000 SVIDs), so it
 * runs at most once per quiet period, never on a path a client waits on;
 * a 10,000-entry agent's resync (every 5 s) is such a burst.
 */
#define TRIM_DELAY_MS 250

/* Resident pages of this process (KiB), 0 when /proc says nothing. */
static unsigned long
rss_kib(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	(void)fclose(f);
	return resident * (unsigned long)(sysconf(_SC_PAGESIZE) / 1024);
}

static void
on_trim_timer(uv_timer_t *t)
{
	(void)t;
#ifdef __GLIBC__
	unsigned long before = ly_log_get_level() >= LY_LOG_DEBUG ? rss_kib() : 0;
	uint64_t t0 = uv_hrtime();
	(void)malloc_trim(0);
	if (before != 0) {
		struct mallinfo2 mi = mallinfo2();
		log_debug("memory: trimmed after a burst in %.2f ms, VmRSS %lu -> %lu KiB (heap in use %zu KiB)",
		    (double)(uv_hrtime() - t0) / 1e6, before, rss_kib(), (mi.uordblks + mi.hblkhd) / 1024);
	}
#endif
}

void
ly_sync_memory_burst(struct ly_sync *s)
{
	if (s != NULL && s->t_trim != NULL)
		ly_sync_timer_arm(s->t_trim, on_trim_timer, TRIM_DELAY_MS);
}

/* Our user's change callbacks (sync.h); none while we load what was persisted. */
static void
wapi_cache_changed(struct ly_sync *s)
{
	if (s->changes.cache_changed != NULL && s->phase != PH_NEW)
		s->changes.cache_changed(s->changes.arg);
}

static void
wapi_bundle_changed(struct ly_sync *s)
{
	if (s->changes.bundle_changed != NULL && s->phase != PH_NEW)
		s->changes.bundle_changed(s->changes.arg);
}

/* ---- our identity --------------------------------------------------------------------------- */

static void
ident_clear(struct ident *id)
{
	EVP_PKEY_free(id->key);
	ly_buf_free_secret(&id->key_der);
	ly_buf_free(&id->chain);
	memset(id, 0, sizeof(*id));
}

/*
 * Takes a verified SVID of ours: `key` and `chain` are moved in (left
 * NULL / empty) on success. The renewal time is drawn here, once.
 */
ly_status
ly_sync_ident_set(struct ly_sync *s, const char *spiffe_id, EVP_PKEY **key, struct ly_buf *chain, int64_t not_before,
    int64_t not_after, int64_t renew_at_ms, struct ly_error *err)
{
	struct ident n;

	memset(&n, 0, sizeof(n));
	LY_TRY(ly_key_to_pkcs8_der(*key, &n.key_der, err));
	(void)snprintf(n.id, sizeof(n.id), "%s", spiffe_id);
	n.key = *key;
	*key = NULL;
	ly_buf_take(&n.chain, chain);
	n.not_before = not_before;
	n.not_after = not_after;
	if (renew_at_ms < ly_rotation_earliest_ms(not_before, not_after) ||
	    renew_at_ms > ly_rotation_latest_ms(not_before, not_after))
		renew_at_ms = ly_rotation_draw(&s->rng, not_before, not_after);
	n.renew_at_ms = renew_at_ms;
	n.valid = true;
	ident_clear(&s->ident);
	s->ident = n;
	s->renew_attempt = 0;
	s->renew_retry_ms = 0;
	return LY_OK;
}

bool
ly_sync_ident_expired(const struct ly_sync *s, int64_t now)
{
	return !s->ident.valid || now >= s->ident.not_after;
}

/* A fresh verifier holding `b` only: for checks that must not disturb the shared one. */
ly_status
ly_sync_verify_with_bundle(struct ly_sync *s, const struct ly_bundle *b, const uint8_t *chain, size_t chain_len,
    const EVP_PKEY *key, const char *expected_id, struct ly_x509svid_info *info, struct ly_error *err)
{
	struct ly_verifier *v = NULL;
	ly_status rc;

	if ((rc = ly_verifier_new(s->td, &v, err)) == LY_OK && (rc = ly_verifier_set_bundle(v, b, NULL, err)) == LY_OK)
		rc = ly_verify_x509svid(v, chain, chain_len, key, expected_id, ly_sync_now_s(), info, NULL, err);
	ly_verifier_free(v);
	return rc;
}

/* True when both bundles hold the same X.509 authorities (so a channel made with one fits the other). */
bool
ly_sync_same_roots(const struct ly_bundle *a, const struct ly_bundle *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	size_t n = ly_bundle_x509_authority_count(a);
	if (n != ly_bundle_x509_authority_count(b))
		return false;
	for (size_t i = 0; i < n; i++) {
		const struct ly_buf *x = ly_bundle_x509_authority(a, i), *y = ly_bundle_x509_authority(b, i);
		if (x->len != y->len || memcmp(x->data, y->data, x->len) != 0)
			return false;
	}
	return true;
}

uint64_t
ly_sync_bundle_seq(const struct ly_sync *s)
{
	const struct ly_bundle *b = s->bundle_pending != NULL ? s->bundle_pending : ly_cache_bundle(s->cache);
	return b != NULL ? ly_bundle_sequence(b) : 0;
}

/* ---- cache changes ------------------------------------------------------------------------ */

void
ly_sync_retry_forget(struct ly_sync *s, const char *key)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&s->retries, key);
	if (n == NULL)
		return;
	ly_keymap_remove(&s->retries, n);
	free(LY_KEYMAP_ENTRY(n, struct retry_rec, node));
}

/* The number of failures so far for `key`, after counting one more. */
unsigned
ly_sync_retry_count(struct ly_sync *s, const char *key)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&s->retries, key);
	if (n != NULL)
		return ++LY_KEYMAP_ENTRY(n, struct retry_rec, node)->attempts;
	size_t len = strlen(key);
	struct retry_rec *r = calloc(1, sizeof(*r) + len + 1);
	if (r == NULL)
		return 1;
	memcpy(r->key, key, len + 1);
	r->node.key = (const uint8_t *)r->key;
	r->node.key_len = len;
	r->attempts = 1;
	if (ly_keymap_insert(&s->retries, &r->node, NULL) != LY_OK) {
		free(r);
		return 1;
	}
	return 1;
}

static void
retries_clear(struct ly_sync *s)
{
	for (size_t i = 0; i < s->retries.nbuckets; i++) {
		struct ly_keymap_node *n = s->retries.buckets[i];
		while (n != NULL) {
			struct ly_keymap_node *next = n->next;
			free(LY_KEYMAP_ENTRY(n, struct retry_rec, node));
			n = next;
		}
	}
	ly_keymap_cleanup(&s->retries);
}

static const char *
change_kind_str(enum ly_cache_change_kind k)
{
	switch (k) {
	case LY_CACHE_CREATED:
		return "created";
	case LY_CACHE_UPDATED:
		return "updated";
	case LY_CACHE_DELETED:
		return "deleted";
	case LY_CACHE_SVID_SET:
		return "SVID set";
	case LY_CACHE_SVID_DROPPED:
		return "SVID dropped";
	}
	return "?";
}

/*
 * After any change of the cache: the scheduler follows (new entries due
 * now, deleted ones gone, new SVIDs at their drawn time), open streams are
 * told at once, the cache is persisted soon, issuance runs. Cleans `cs`.
 */
void
ly_sync_changes_publish(struct ly_sync *s, struct ly_cache_changes *cs)
{
	struct ly_error e;

	if (ly_cache_changes_empty(cs)) {
		ly_cache_changes_cleanup(cs);
		return;
	}
	if (ly_rotation_apply_changes(s->sched, s->cache, cs, ly_sync_now_ms(), &e) != LY_OK) {
		/* Only memory: schedule everything again from the cache. */
		log_error("rotation schedule: %s", e.msg);
		if (ly_rotation_schedule_all(s->sched, s->cache, ly_sync_now_ms(), &e) != LY_OK)
			log_error("rotation schedule: %s", e.msg);
	}
	bool entries = false;
	for (size_t i = 0; i < cs->n; i++) {
		const struct ly_cache_change *c = &cs->v[i];
		if (c->kind == LY_CACHE_DELETED)
			ly_sync_retry_forget(s, c->entry_id);
		if (c->kind != LY_CACHE_SVID_SET)
			log_debug("entry %s (%s): %s", c->entry_id, c->spiffe_id != NULL ? c->spiffe_id : "",
			    change_kind_str(c->kind));
		entries = true;
	}
	if (entries)
		wapi_cache_changed(s);
	if (cs->bundles_changed)
		wapi_bundle_changed(s);
	ly_sync_persist_cache_dirty(s);
	ly_cache_changes_cleanup(cs);
	ly_sync_issue_kick(s);
	ly_sync_issue_tick_arm(s);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

ly_status
ly_sync_new(struct ly_agent *agent, const struct ly_sync_changes *changes, struct ly_sync **out,
    struct ly_error *err)
{
	struct ly_sync *s = NULL;
	const struct ly_agent_config *cfg = &agent->cfg;
	ly_status rc;

	*out = NULL;
	if (cfg->server_address == NULL || cfg->server_address[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "sync: no server address");
	if (strlen(cfg->server_address) > LY_CONFIG_VALUE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "sync: server address over %d bytes", LY_CONFIG_VALUE_MAX);
	if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "sync: no data directory");
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "sync: out of memory");
	s->agent = agent;
	if (changes != NULL)
		s->changes = *changes;
	s->loop = agent->loop;
	/* One part per core, within libuv's pool (4 threads unless UV_THREADPOOL_SIZE says otherwise). */
	s->verify_parts = uv_available_parallelism();
	if (s->verify_parts > ISSUE_VERIFY_PARTS)
		s->verify_parts = ISSUE_VERIFY_PARTS;
	if (s->verify_parts == 0)
		s->verify_parts = 1;
	(void)snprintf(s->td, sizeof(s->td), "%s", cfg->trust_domain);
	(void)snprintf(s->server_id, sizeof(s->server_id), "spiffe://%s%s", s->td, SERVER_ID_PATH);
	/* An IPv6 literal goes in brackets. */
	bool v6 = strchr(cfg->server_address, ':') != NULL && cfg->server_address[0] != '[';
	(void)snprintf(s->target, sizeof(s->target), v6 ? "[%s]:%u" : "%s:%u", cfg->server_address,
	    (unsigned)cfg->server_port);
	if (cfg->join_token != NULL && cfg->join_token[0] != '\0')
		s->method = METHOD_JOIN_TOKEN;
	else if (cfg->x509pop_cert_path != NULL && cfg->x509pop_key_path != NULL)
		s->method = METHOD_X509POP;
	else if (cfg->psat_cluster != NULL && cfg->psat_cluster[0] != '\0')
		s->method = METHOD_K8S_PSAT;
	if ((rc = ly_keymap_init(&s->retries, err)) != LY_OK)
		goto fail;
	if ((rc = ly_cache_new(s->td, &s->cache, err)) != LY_OK || (rc = ly_sched_new(&s->sched, err)) != LY_OK ||
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
	ly_status rc;

	if (s->phase != PH_NEW)
		return ly_error_set(err, LY_E_INVALID, "sync: already started");
	if (s->agent->rpc == NULL || s->loop == NULL)
		return ly_error_set(err, LY_E_INVALID, "sync: no loop or rpc");
	LY_TRY(ly_state_dir_prepare(s->agent->cfg.data_dir, err));
	if ((rc = timer_new(s, &s->t_reconnect, err)) != LY_OK || (rc = timer_new(s, &s->t_resync, err)) != LY_OK ||
	    (rc = timer_new(s, &s->t_tick, err)) != LY_OK || (rc = timer_new(s, &s->t_persist, err)) != LY_OK ||
	    (rc = timer_new(s, &s->t_defer, err)) != LY_OK || (rc = timer_new(s, &s->t_trim, err)) != LY_OK)
		return rc;
	ly_sync_persist_load(s);
	if (!s->ident.valid) {
		if (s->method == METHOD_NONE)
			return ly_error_set(err, LY_E_INVALID,
			    "no SVID of its own in %s and no way to attest: give -joinToken (or configure x509pop or "
			    "k8s_psat)",
			    s->agent->cfg.data_dir);
		LY_TRY(ly_sync_enrol_bootstrap(s, err));
	}
	/* Nothing can fail from here on. */
	if (ly_rotation_schedule_all(s->sched, s->cache, ly_sync_now_ms(), &e) != LY_OK)
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

static void
on_stop_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s == NULL || s->stop_cb == NULL)
		return;
	void (*cb)(void *) = s->stop_cb;
	s->stop_cb = NULL;
	timer_close(&s->t_defer);
	cb(s->stop_arg);
}

/* Once no call, no pool job and no write is left, the stop callback runs (from the loop). */
void
ly_sync_stop_maybe_done(struct ly_sync *s)
{
	if (s->phase != PH_STOPPING || !s->stop_requested || s->stop_cb_done)
		return;
	if (s->n_calls != 0 || s->n_works != 0 || s->persist_busy)
		return;
	s->stop_cb_done = true;
	log_debug("sync stopped: %" PRIu64 " SVIDs issued (%" PRIu64 " failed) in %" PRIu64 " batches, %" PRIu64
		  " watch updates, %" PRIu64 " renewals, %" PRIu64 " JWT-SVIDs minted",
	    s->stats.svids_issued, s->stats.svids_failed, s->stats.batches, s->stats.watch_updates, s->stats.renewals,
	    s->stats.jwt_minted);
	if (s->t_defer != NULL)
		ly_sync_timer_arm(s->t_defer, on_stop_timer, 0);
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
	timer_close(&s->t_reconnect);
	timer_close(&s->t_resync);
	timer_close(&s->t_tick);
	timer_close(&s->t_persist);
	timer_close(&s->t_trim);
	if (s->t_defer != NULL)
		uv_timer_stop(s->t_defer);
	ly_sync_jwt_flush(s);
	ly_sync_watch_drop_all(s);
	/* Every call ends now (each still gets its status, later). */
	while (s->chans != NULL) {
		struct chan *c = s->chans;
		bool had_calls = c->ncalls > 0;
		ly_sync_chan_kill(s, c);
		if (had_calls) {
			/* Killed but kept until its calls are back: unlink it from the walk. */
			for (struct chan **p = &s->chans; *p != NULL; p = &(*p)->next) {
				if (*p == c) {
					*p = c->next;
					c->next = NULL;
					break;
				}
			}
		}
	}
	s->chan = NULL;
	/* The last word on disk: what we hold now. */
	if (was != PH_NEW) {
		if (s->ident.valid)
			s->agent_dirty = true;
		s->cache_dirty = true;
		ly_sync_persist_kick(s);
	}
	ly_sync_stop_maybe_done(s);
}

void
ly_sync_free(struct ly_sync *s)
{
	if (s == NULL)
		return;
	timer_close(&s->t_reconnect);
	timer_close(&s->t_resync);
	timer_close(&s->t_tick);
	timer_close(&s->t_persist);
	timer_close(&s->t_defer);
	timer_close(&s->t_trim);
	/* Answers nobody waits for any more (wapi is gone): dropped without a call. */
	ly_sync_jwt_drop_ready(s);
	/* Channels left (a failed start): rpc/ frees gRPC's side on ly_rpc_close. */
	while (s->chans != NULL) {
		struct chan *c = s->chans;
		s->chans = c->next;
		ly_sync_chan_tls_check_free(c->tc);
		free(c);
	}
	EVP_PKEY_free(s->att_key);
	ident_clear(&s->ident);
	ly_bundle_free(s->bootstrap);
	ly_bundle_free(s->bundle_pending);
	free(s->probe_roots_pem);
	retries_clear(s);
	ly_verifier_free(s->verifier);
	ly_sched_free(s->sched);
	ly_cache_free(s->cache);
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
	out->last_sync = s->last_sync;
	out->reachable = s->phase == PH_ENROLLED && s->chan != NULL && !s->reconnect_armed && s->last_sync != 0 &&
	    ly_sync_now_s() - (int64_t)s->last_sync <= 2 * s->agent->cfg.sync_interval + 1;
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
