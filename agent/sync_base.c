/*
 * sync_base.c: what the parts of the agent's sync share (sync_base.h):
 * the clock, the timers, memory handed back after bursts, the change
 * callbacks (sync.h), our identity, the cache changes every part
 * publishes, per-entry retries, and the end of a stop. It calls no part:
 * what must happen next goes through the steps table (struct
 * ly_sync_steps) that sync.c fills.
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
#include "agent/sync_base.h"
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
#include "lib/procmem.h"
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"
#include "rpc/uvtimer.h"

/* ---- the clock -------------------------------------------------------------------------------- */

int64_t
ly_sync_base_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
ly_sync_base_now_s(void)
{
	return (int64_t)ly_agent_now();
}

uint32_t
ly_sync_base_rand32(void)
{
	uint32_t r = 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)ly_sync_base_now_ms();
	return r;
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

static void
on_trim_timer(uv_timer_t *t)
{
	(void)t;
#ifdef __GLIBC__
	uint64_t before = ly_log_get_level() >= LY_LOG_DEBUG ? ly_procmem_rss_bytes() / 1024 : 0;
	uint64_t t0 = uv_hrtime();
	(void)malloc_trim(0);
	if (before != 0) {
		struct mallinfo2 mi = mallinfo2();
		log_debug("memory: trimmed after a burst in %.2f ms, VmRSS %" PRIu64 " -> %" PRIu64
			  " KiB (heap in use %zu KiB)",
		    (double)(uv_hrtime() - t0) / 1e6, before, ly_procmem_rss_bytes() / 1024,
		    (mi.uordblks + mi.hblkhd) / 1024);
	}
#endif
}

void
ly_sync_base_memory_burst(struct ly_sync *s)
{
	if (s != NULL && s->t_trim != NULL)
		ly_uvtimer_arm(s->t_trim, on_trim_timer, TRIM_DELAY_MS);
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

void
ly_sync_base_ident_clear(struct ident *id)
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
ly_sync_base_ident_set(struct ly_sync *s, const char *spiffe_id, EVP_PKEY **key, struct ly_buf *chain,
    int64_t not_before, int64_t not_after, int64_t renew_at_ms, struct ly_error *err)
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
	ly_sync_base_ident_clear(&s->ident);
	s->ident = n;
	s->renew_attempt = 0;
	s->renew_retry_ms = 0;
	return LY_OK;
}

bool
ly_sync_base_ident_expired(const struct ly_sync *s, int64_t now)
{
	return !s->ident.valid || now >= s->ident.not_after;
}

/* A fresh verifier holding `b` only: for checks that must not disturb the shared one. */
ly_status
ly_sync_base_verify_with_bundle(struct ly_sync *s, const struct ly_bundle *b, const uint8_t *chain, size_t chain_len,
    const EVP_PKEY *key, const char *expected_id, struct ly_x509svid_info *info, struct ly_error *err)
{
	struct ly_verifier *v = NULL;
	ly_status rc;

	if ((rc = ly_verifier_new(s->td, &v, err)) == LY_OK && (rc = ly_verifier_set_bundle(v, b, NULL, err)) == LY_OK)
		rc = ly_verify_x509svid(v, chain, chain_len, key, expected_id, ly_sync_base_now_s(), info, NULL, err);
	ly_verifier_free(v);
	return rc;
}

/* True when both bundles hold the same X.509 authorities (so a channel made with one fits the other). */
bool
ly_sync_base_same_roots(const struct ly_bundle *a, const struct ly_bundle *b)
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
ly_sync_base_bundle_seq(const struct ly_sync *s)
{
	const struct ly_bundle *b = s->bundle_pending != NULL ? s->bundle_pending : ly_cache_bundle(s->cache);
	return b != NULL ? ly_bundle_sequence(b) : 0;
}

/* ---- cache changes ------------------------------------------------------------------------ */

void
ly_sync_base_retry_forget(struct ly_sync *s, const char *key)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&s->retries, key);
	if (n == NULL)
		return;
	ly_keymap_remove(&s->retries, n);
	free(LY_KEYMAP_ENTRY(n, struct retry_rec, node));
}

/* The number of failures so far for `key`, after counting one more. */
unsigned
ly_sync_base_retry_count(struct ly_sync *s, const char *key)
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

void
ly_sync_base_retries_clear(struct ly_sync *s)
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
ly_sync_base_changes_publish(struct ly_sync *s, struct ly_cache_changes *cs)
{
	struct ly_error e;

	if (ly_cache_changes_empty(cs)) {
		ly_cache_changes_cleanup(cs);
		return;
	}
	if (ly_rotation_apply_changes(s->sched, s->cache, cs, ly_sync_base_now_ms(), &e) != LY_OK) {
		/* Only memory: schedule everything again from the cache. */
		log_error("rotation schedule: %s", e.msg);
		if (ly_rotation_schedule_all(s->sched, s->cache, ly_sync_base_now_ms(), &e) != LY_OK)
			log_error("rotation schedule: %s", e.msg);
	}
	bool entries = false;
	for (size_t i = 0; i < cs->n; i++) {
		const struct ly_cache_change *c = &cs->v[i];
		if (c->kind == LY_CACHE_DELETED)
			ly_sync_base_retry_forget(s, c->entry_id);
		if (c->kind != LY_CACHE_SVID_SET)
			log_debug("entry %s (%s): %s", c->entry_id, c->spiffe_id != NULL ? c->spiffe_id : "",
			    change_kind_str(c->kind));
		entries = true;
	}
	if (entries)
		wapi_cache_changed(s);
	if (cs->bundles_changed)
		wapi_bundle_changed(s);
	s->steps->persist_cache_dirty(s);
	ly_cache_changes_cleanup(cs);
	s->steps->issue_kick(s);
	s->steps->tick_arm(s);
}

/* ---- the stop ------------------------------------------------------------------------------- */

static void
on_stop_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s == NULL || s->stop_cb == NULL)
		return;
	void (*cb)(void *) = s->stop_cb;
	s->stop_cb = NULL;
	ly_uvtimer_close(&s->t_defer);
	cb(s->stop_arg);
}

/* Once no call, no pool job and no write is left, the stop callback runs (from the loop). */
void
ly_sync_base_stop_maybe_done(struct ly_sync *s)
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
		ly_uvtimer_arm(s->t_defer, on_stop_timer, 0);
}

