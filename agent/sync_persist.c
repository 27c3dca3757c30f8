/*
 * sync_persist.c: sync's persisted state (sync_internal.h, state.h): the
 * workload SVID cache written at most once a second (debounced), the agent
 * file (our SVID and bundle) at once after either changed, both on the
 * pool; and the load of what the last run left, at start.
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
#include "rpc/uvtimer.h"

/* ---- persistence ------------------------------------------------------------------------------ */

struct persist_job {
	uv_work_t w;
	struct ly_sync *s;
	char *dir;
	struct ly_buf agent, cache; /* encoded; secrets */
	ly_status rc_agent, rc_cache;
	struct ly_error e_agent, e_cache;
};

static void on_persist_timer(uv_timer_t *t);

static void
persist_job_free(struct persist_job *j)
{
	ly_buf_free_secret(&j->agent);
	ly_buf_free_secret(&j->cache);
	free(j->dir);
	free(j);
}

static void
persist_run(uv_work_t *w)
{
	struct persist_job *j = w->data;

	j->rc_agent = j->rc_cache = LY_OK;
	if (j->agent.data != NULL)
		j->rc_agent = ly_state_write_file(j->dir, LY_STATE_AGENT_FILE, j->agent.data, j->agent.len, &j->e_agent);
	if (j->cache.data != NULL)
		j->rc_cache = ly_state_write_file(j->dir, LY_STATE_CACHE_FILE, j->cache.data, j->cache.len, &j->e_cache);
}

static void
persist_after(uv_work_t *w, int status)
{
	struct persist_job *j = w->data;
	struct ly_sync *s = j->s;

	bool failed = status != 0;
	if (status != 0) {
		log_error("state not written: the work was cancelled");
		s->agent_dirty = s->agent_dirty || j->agent.data != NULL;
		s->cache_dirty = s->cache_dirty || j->cache.data != NULL;
	}
	if (j->agent.data != NULL && j->rc_agent != LY_OK) {
		log_error("agent state not written to %s: %s", j->dir, j->e_agent.msg);
		s->agent_dirty = true;
		failed = true;
	}
	if (j->cache.data != NULL && j->rc_cache != LY_OK) {
		log_error("SVID cache not written to %s: %s", j->dir, j->e_cache.msg);
		s->cache_dirty = true;
		failed = true;
	}
	persist_job_free(j);
	s->persist_busy = false;
	s->n_works--;
	if (s->phase != PH_STOPPING) {
		if (s->agent_dirty || s->cache_dirty)
			ly_uvtimer_arm(s->t_persist, on_persist_timer,
			    failed ? 10 * PERSIST_DEBOUNCE_MS : PERSIST_DEBOUNCE_MS);
	} else if (!failed) {
		ly_sync_persist_kick(s); /* what changed while this was written (nothing, usually) */
	} else {
		s->agent_dirty = s->cache_dirty = false; /* stopping: no retry, the stop must end */
	}
	ly_sync_base_stop_maybe_done(s);
}

/* Our identity and bundles as state.h wants them (borrowing nothing: copies). */
static ly_status
agent_state_make(struct ly_sync *s, struct ly_agent_state *st, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	const struct ly_bundle_set *cur = ly_cache_bundles(s->cache);

	(void)snprintf(st->trust_domain, sizeof(st->trust_domain), "%s", s->td);
	if (s->ident.valid) {
		st->has_svid = true;
		(void)snprintf(st->spiffe_id, sizeof(st->spiffe_id), "%s", s->ident.id);
		LY_TRY(ly_buf_set(&st->chain, s->ident.chain.data, s->ident.chain.len, err));
		LY_TRY(ly_buf_set(&st->key, s->ident.key_der.data, s->ident.key_der.len, err));
		st->not_before = s->ident.not_before;
		st->not_after = s->ident.not_after;
		st->renew_at_ms = s->ident.renew_at_ms;
	}
	/* Ours and the federated ones: a restart with the server down still serves them (SPEC §9). */
	if (cur != NULL && ly_bundle_set_find(cur, s->td) != NULL) {
		LY_TRY(ly_bundle_set_new(&st->bundles, err));
		for (size_t i = 0; i < ly_bundle_set_count(cur); i++) {
			LY_TRY(ly_bundle_clone(ly_bundle_set_at(cur, i), &b, err));
			if (ly_bundle_set_put(st->bundles, b, err) != LY_OK) {
				ly_bundle_free(b);
				return LY_E_NOMEM;
			}
		}
	}
	return LY_OK;
}

/* Encodes what is dirty on the loop and writes it on the pool. */
void
ly_sync_persist_kick(struct ly_sync *s)
{
	struct persist_job *j = NULL;
	struct ly_agent_state st;
	struct ly_error e;
	int64_t now = ly_sync_base_now_s();

	if (s->persist_busy || (!s->agent_dirty && !s->cache_dirty))
		return;
	ly_agent_state_init(&st);
	if ((j = calloc(1, sizeof(*j))) == NULL || (j->dir = strdup(s->agent->cfg.data_dir)) == NULL) {
		log_error("state not written: out of memory");
		goto fail;
	}
	j->s = s;
	j->w.data = j;
	if (s->agent_dirty) {
		if (agent_state_make(s, &st, &e) != LY_OK || ly_state_encode_agent(&st, now, &j->agent, &e) != LY_OK) {
			log_error("agent state not encoded: %s", e.msg);
			goto fail;
		}
	}
	if (s->cache_dirty && ly_state_encode_cache(s->cache, now, &j->cache, &e) != LY_OK) {
		log_error("SVID cache not encoded: %s", e.msg);
		goto fail;
	}
	if (uv_queue_work(s->loop, &j->w, persist_run, persist_after) != 0) {
		log_error("state not written: cannot queue the work");
		goto fail;
	}
	s->agent_dirty = s->cache_dirty = false;
	s->persist_busy = true;
	s->n_works++;
	ly_agent_state_cleanup(&st);
	return;
fail:
	ly_agent_state_cleanup(&st);
	if (j != NULL)
		persist_job_free(j);
	if (s->phase != PH_STOPPING)
		ly_uvtimer_arm(s->t_persist, on_persist_timer, 10 * PERSIST_DEBOUNCE_MS);
	else
		s->agent_dirty = s->cache_dirty = false; /* give up: the stop must end */
}

static void
on_persist_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s != NULL)
		ly_sync_persist_kick(s);
}

/* The workload SVID cache changed: written within PERSIST_DEBOUNCE_MS. */
void
ly_sync_persist_cache_dirty(struct ly_sync *s)
{
	s->cache_dirty = true;
	if (s->t_persist != NULL && !s->persist_busy && !uv_is_active((uv_handle_t *)s->t_persist))
		ly_uvtimer_arm(s->t_persist, on_persist_timer, PERSIST_DEBOUNCE_MS);
}

/* Our SVID or the bundle changed: written at once (with the cache if it is dirty too). */
void
ly_sync_persist_agent_dirty(struct ly_sync *s)
{
	s->agent_dirty = true;
	if (s->t_persist != NULL && !s->persist_busy)
		ly_uvtimer_arm(s->t_persist, on_persist_timer, 0);
}

static bool
keep_none(const struct ly_cache_item *item, void *arg)
{
	(void)item;
	(void)arg;
	return false;
}

/*
 * Loads what the last run left in -dataDir: the cache first (it must be
 * empty to load), then our SVID and bundle. Damaged files are reported and
 * ignored (the agent then starts empty: attestation, then a snapshot).
 */
void
ly_sync_persist_load(struct ly_sync *s)
{
	const char *dir = s->agent->cfg.data_dir;
	struct ly_agent_state st;
	struct ly_cache_changes cs;
	struct ly_error e;
	ly_status rc;
	int64_t now = ly_sync_base_now_s();

	ly_agent_state_init(&st);
	ly_cache_changes_init(&cs);
	rc = ly_state_load_cache(dir, now, NULL, s->cache, &e);
	if (rc == LY_OK)
		s->entries_known = true;
	else if (rc != LY_E_NOT_FOUND)
		log_warn("SVID cache in %s ignored: %s", dir, e.msg);
	rc = ly_state_load_agent(dir, s->td, now, &st, &e);
	if (rc != LY_OK) {
		if (rc != LY_E_NOT_FOUND)
			log_warn("agent state in %s ignored: %s", dir, e.msg);
		goto out;
	}
	const struct ly_bundle *ob = st.bundles != NULL ? ly_bundle_set_find(st.bundles, s->td) : NULL;
	struct ly_bundle *b = NULL;
	if (ob == NULL || ly_bundle_clone(ob, &b, &e) != LY_OK) {
		log_warn("agent state in %s has no bundle for %s: ignored", dir, s->td);
		goto out;
	}
	s->steps->bundle_install(s, b);
	/* The federated bundles of the last run: served until the server says otherwise (fed_known false). */
	if (ly_bundle_set_count(st.bundles) > 1) {
		struct ly_bundle_set *fed = NULL;
		ly_status frc = ly_fedset_replace_federated(NULL, s->td, st.bundles, &fed, &e); /* takes st.bundles */
		st.bundles = NULL;
		if (frc == LY_OK)
			s->steps->federated_install(s, fed);
		else
			log_warn("federated bundles in %s not loaded: %s", dir, e.msg);
	}
	if (st.has_svid) {
		EVP_PKEY *key = NULL;
		struct ly_x509svid_info info;
		if (ly_key_from_pkcs8_der(st.key.data, st.key.len, &key, &e) != LY_OK ||
		    ly_verify_x509svid(s->verifier, st.chain.data, st.chain.len, key, st.spiffe_id, now, &info, NULL, &e) !=
			LY_OK ||
		    ly_sync_base_ident_set(s, st.spiffe_id, &key, &st.chain, info.not_before, info.not_after, st.renew_at_ms,
			&e) != LY_OK)
			log_warn("our SVID in %s not used: %s", dir, e.msg);
		EVP_PKEY_free(key);
	}
out:
	/* The SVIDs loaded are checked to the bundle we have now (one check per signing CA). */
	if (ly_cache_bundle(s->cache) != NULL) {
		size_t dropped = ly_verify_recheck_cache(s->verifier, s->cache, now, &cs);
		if (dropped > 0)
			log_warn("%zu persisted SVIDs do not verify to the persisted bundle: dropped", dropped);
	} else if (ly_cache_svid_count(s->cache) > 0) {
		/* No bundle to check them with: not served. */
		size_t n = ly_cache_filter_svids(s->cache, keep_none, NULL, &cs);
		log_warn("%zu persisted SVIDs dropped: no persisted bundle to verify them with", n);
	}
	ly_cache_changes_cleanup(&cs);
	ly_agent_state_cleanup(&st);
	if (ly_cache_count(s->cache) > 0 || s->ident.valid)
		log_info("state loaded from %s: %s, %zu entries, %zu SVIDs still valid", dir,
		    s->ident.valid ? s->ident.id : "no SVID of our own", ly_cache_count(s->cache),
		    ly_cache_svid_count(s->cache));
}

