/*
 * sync_issue.c: workload SVID issuance (sync_internal.h): due entries
 * taken from the rotation scheduler in batches (BatchNewX509SVID), keys
 * and CSRs made on the pool, the answers paired (agentapi_msg.h) and
 * verified on the pool, retries per entry with backoff; and the tick that
 * drives expiry, our renewal and issuance.
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
#include "rpc/uvtimer.h"

/* ---- workload SVID issuance ------------------------------------------------------------------ */

struct issue_item {
	char *entry_id;
	char *spiffe_id;
	char **dns;
	size_t n_dns;
	EVP_PKEY *key;
	struct ly_buf csr;
	bool prepared, ok;
	bool dropped; /* answered, but its entry was deleted or changed meanwhile */
	bool limited; /* refused by the server's signing rate limit (RESOURCE_EXHAUSTED) */
	char msg[192]; /* why it failed */
	struct ly_buf chain, key_der;
	int64_t not_before, not_after;
};

#define ISSUE_VERIFY_PART_MIN 16 /* items: below this a part costs more than it saves */

struct issue_part {
	uv_work_t w;
	struct issue_job *j;
	size_t lo, hi; /* items [lo, hi) */
};

struct issue_job {
	struct ccall base; /* the BatchNewX509SVID call */
	uv_work_t w;
	struct ly_sync *s;
	struct issue_item *items;
	size_t n;
	Lanyard__Agent__V1__BatchNewX509SVIDResponse *resp;
	const Lanyard__Agent__V1__X509SVIDResult **answer; /* [n]: item i's result, or NULL */
	struct issue_part parts[ISSUE_VERIFY_PARTS];
	unsigned parts_pending;
	bool parts_cancelled;
	int64_t now;
};

static void
issue_job_free(struct issue_job *j)
{
	for (size_t i = 0; j->items != NULL && i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		free(it->entry_id);
		free(it->spiffe_id);
		for (size_t k = 0; k < it->n_dns; k++)
			free(it->dns[k]);
		free(it->dns);
		EVP_PKEY_free(it->key);
		ly_buf_free(&it->csr);
		ly_buf_free(&it->chain);
		ly_buf_free_secret(&it->key_der);
	}
	free(j->items);
	free(j->answer);
	ly_agentapi_batch_free(j->resp);
	ly_sync_chan_call_cleanup(&j->base);
	free(j);
}

/* Puts the failed items of `j` back in the scheduler, each after its own backoff. */
static void
issue_reschedule_failed(struct ly_sync *s, struct issue_job *j, bool all)
{
	int64_t now = ly_sync_base_now_ms();
	struct ly_error e;
	struct ly_cache_item ci;

	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if ((it->ok && !all) || it->dropped)
			continue;
		if (!ly_cache_get(s->cache, it->entry_id, &ci) || ci.entry->node)
			continue; /* gone meanwhile */
		int64_t due;
		if (it->limited) {
			/*
			 * The server's signing limit (500/s per agent, SPEC §11): its
			 * bucket refills within a second, so the item is asked again
			 * after 1 to 2 s (spread), without growing its backoff: it
			 * did not fail.
			 */
			ly_sync_base_retry_forget(s, it->entry_id);
			due = now + 1000 + (int64_t)(ly_sync_base_rand32() % 1000u);
		} else {
			unsigned n = ly_sync_base_retry_count(s, it->entry_id);
			due = ly_rotation_retry_ms(now, n > 0 ? n - 1 : 0);
		}
		/* An SVID that is still valid keeps being served until the retry succeeds. */
		if (ly_rotation_sched_put(s->sched, it->entry_id, due, now, &e) != LY_OK)
			log_error("entry %s: not rescheduled: %s", it->entry_id, e.msg);
	}
}

/* The batch is over (whatever happened): the next one may start. */
static void
issue_end(struct ly_sync *s, struct issue_job *j)
{
	issue_job_free(j);
	s->issue_inflight--;
	ly_sync_base_memory_burst(s);
	if (s->phase == PH_ENROLLED) {
		ly_sync_issue_kick(s);
		ly_sync_issue_tick_arm(s);
	}
}

/*
 * Loop: pairs each item with its result (ly_agentapi_batch_match); a
 * refusal by the server, or no answer, is the item's message. Returns
 * false when out of memory.
 */
static bool
issue_match(struct issue_job *j)
{
	const Lanyard__Agent__V1__X509SVIDResult **refused = NULL;
	const char **ids = NULL;
	size_t n = j->n > 0 ? j->n : 1;

	j->answer = calloc(n, sizeof(*j->answer));
	refused = calloc(n, sizeof(*refused));
	ids = calloc(n, sizeof(*ids));
	if (j->answer == NULL || refused == NULL || ids == NULL) {
		free(refused);
		free(ids);
		return false;
	}
	for (size_t i = 0; i < j->n; i++)
		ids[i] = j->items[i].prepared ? j->items[i].entry_id : NULL;
	ly_agentapi_batch_match(j->resp, ids, j->n, j->answer, refused);
	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if (refused[i] != NULL && refused[i]->status_code == LY_RPC_RESOURCE_EXHAUSTED)
			it->limited = true;
		if (refused[i] != NULL)
			(void)snprintf(it->msg, sizeof(it->msg), "server: %s %s",
			    ly_rpc_code_str((enum ly_rpc_code)refused[i]->status_code),
			    refused[i]->status_message != NULL ? refused[i]->status_message : "");
		else if (it->prepared && j->answer[i] == NULL)
			(void)snprintf(it->msg, sizeof(it->msg), "no answer for it in the batch");
	}
	free(refused);
	free(ids);
	return true;
}

/* Pool: the verification of a part's answers (verify.h), keys kept as PKCS#8 for the cache. */
static void
issue_verify_run(uv_work_t *w)
{
	struct issue_part *p = w->data;
	struct issue_job *j = p->j;
	struct ly_sync *s = j->s;
	struct ly_x509svid_info info;
	enum ly_verify_fail why;
	struct ly_error e;

	for (size_t i = p->lo; i < p->hi; i++) {
		const Lanyard__Agent__V1__X509SVIDResult *res = j->answer[i];
		struct issue_item *it = &j->items[i];
		if (res == NULL)
			continue;
		if (ly_verify_x509svid(s->verifier, res->cert_chain.data, res->cert_chain.len, it->key, it->spiffe_id,
			j->now, &info, &why, &e) != LY_OK ||
		    ly_buf_set(&it->chain, res->cert_chain.data, res->cert_chain.len, &e) != LY_OK ||
		    ly_key_to_pkcs8_der(it->key, &it->key_der, &e) != LY_OK) {
			(void)snprintf(it->msg, sizeof(it->msg), "refused: %.180s", e.msg);
			ly_buf_free(&it->chain);
			continue;
		}
		it->not_before = (int64_t)info.not_before;
		it->not_after = (int64_t)info.not_after;
		it->ok = true;
	}
}

static void
issue_verify_after(uv_work_t *w, int status)
{
	struct issue_part *p = w->data;
	struct issue_job *j = p->j;
	struct ly_sync *s = j->s;
	struct ly_cache_changes cs;
	struct ly_error e;
	size_t ok = 0, failed = 0;

	s->n_works--;
	if (status != 0)
		j->parts_cancelled = true;
	if (--j->parts_pending > 0)
		return; /* the last part to finish takes the batch on */
	ly_cache_changes_init(&cs);
	if (j->parts_cancelled || s->phase != PH_ENROLLED) {
		issue_reschedule_failed(s, j, true);
		s->steps->verifier_release(s);
		issue_end(s, j);
		ly_sync_base_stop_maybe_done(s);
		return;
	}
	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if (!it->ok) {
			if (it->msg[0] != '\0') {
				failed++;
				log_warn("SVID for entry %s (%s) not issued: %s", it->entry_id, it->spiffe_id, it->msg);
			}
			continue;
		}
		int64_t renew = ly_rotation_draw(&s->rng, it->not_before, it->not_after);
		if (ly_cache_set_svid(s->cache, it->entry_id, it->spiffe_id, &it->chain, &it->key_der, it->not_before,
			it->not_after, renew, &cs, &e) != LY_OK) {
			/* Deleted or changed while being issued: dropped (the change scheduled what is needed). */
			log_debug("SVID for entry %s dropped: %s", it->entry_id, e.msg);
			it->ok = false;
			it->dropped = true;
			continue;
		}
		ly_sync_base_retry_forget(s, it->entry_id);
		ok++;
	}
	s->stats.svids_issued += ok;
	s->stats.svids_failed += failed;
	if (ok > 0)
		s->issue_fail_streak = 0;
	log_debug("batch of %zu: %zu SVIDs issued, %zu failed", j->n, ok, failed);
	issue_reschedule_failed(s, j, false);
	ly_sync_base_changes_publish(s, &cs); /* still in flight: the next batch starts in issue_end */
	s->steps->verifier_release(s);
	issue_end(s, j);
	ly_sync_base_stop_maybe_done(s);
}

static void
issue_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct issue_job *j = (struct issue_job *)c;
	struct ly_sync *s = c->s;
	struct ly_error e;
	ly_status rc;

	if (s->phase != PH_ENROLLED) {
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	if (code != LY_RPC_OK) {
		s->issue_fail_streak++;
		log_warn("BatchNewX509SVID of %zu: %s %s", j->n, ly_rpc_code_str(code), details);
		s->stats.svids_failed += j->n;
		for (size_t i = 0; code == LY_RPC_RESOURCE_EXHAUSTED && i < j->n; i++)
			j->items[i].limited = true;
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	rc = ly_agentapi_batch_parse(c->resp.data, c->resp.len, &j->resp, &e);
	ly_buf_free_secret(&c->resp);
	if (rc != LY_OK) {
		log_error("BatchNewX509SVID: %s", e.msg);
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	if (!issue_match(j)) {
		log_error("BatchNewX509SVID: out of memory matching the answers");
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	j->now = ly_sync_base_now_s();
	size_t nparts = (j->n + ISSUE_VERIFY_PART_MIN - 1) / ISSUE_VERIFY_PART_MIN;
	if (nparts > s->verify_parts)
		nparts = s->verify_parts;
	if (nparts == 0)
		nparts = 1;
	s->verify_busy++; /* once for the batch: steps->verifier_release when its last part is done */
	for (size_t k = 0; k < nparts; k++) {
		struct issue_part *p = &j->parts[k];
		p->j = j;
		p->lo = j->n * k / nparts;
		p->hi = j->n * (k + 1) / nparts;
		p->w.data = p;
		if (uv_queue_work(s->loop, &p->w, issue_verify_run, issue_verify_after) != 0) {
			/* The parts already queued finish the batch; this one's items fail and are retried. */
			log_error("BatchNewX509SVID: cannot queue the verification");
			for (size_t i = p->lo; i < j->n; i++) {
				j->answer[i] = NULL;
				if (j->items[i].msg[0] == '\0')
					(void)snprintf(j->items[i].msg, sizeof(j->items[i].msg), "not verified: no worker");
			}
			break;
		}
		j->parts_pending++;
		s->n_works++;
	}
	if (j->parts_pending == 0) {
		s->steps->verifier_release(s);
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
	}
}

/* Pool: a key and a CSR per item (key generation off the loop). */
static void
issue_prepare_run(uv_work_t *w)
{
	struct issue_job *j = w->data;
	struct ly_spiffe_id sid;
	struct ly_error e;

	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if (ly_spiffe_id_parse_str(it->spiffe_id, &sid, &e) != LY_OK ||
		    ly_key_generate(LY_KEY_TYPE_DEFAULT, &it->key, &e) != LY_OK ||
		    ly_csr_build(it->key, &sid, (const char *const *)it->dns, it->n_dns, &it->csr, &e) != LY_OK) {
			(void)snprintf(it->msg, sizeof(it->msg), "CSR: %.180s", e.msg);
			continue;
		}
		it->prepared = true;
	}
}

static void
issue_prepare_after(uv_work_t *w, int status)
{
	struct issue_job *j = w->data;
	struct ly_sync *s = j->s;
	Lanyard__Agent__V1__BatchNewX509SVIDRequest req;
	Lanyard__Agent__V1__X509SVIDParams *params = NULL, **ptrs = NULL;
	struct ly_error e;
	size_t k = 0;

	s->n_works--;
	if (status != 0 || s->phase != PH_ENROLLED) {
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		ly_sync_base_stop_maybe_done(s);
		return;
	}
	if ((params = calloc(j->n + 1, sizeof(*params))) == NULL || (ptrs = calloc(j->n + 1, sizeof(*ptrs))) == NULL) {
		log_error("BatchNewX509SVID: out of memory");
		goto fail;
	}
	for (size_t i = 0; i < j->n; i++) {
		if (!j->items[i].prepared)
			continue;
		lanyard__agent__v1__x509_svidparams__init(&params[k]);
		params[k].entry_id = j->items[i].entry_id;
		params[k].csr.data = j->items[i].csr.data;
		params[k].csr.len = j->items[i].csr.len;
		ptrs[k] = &params[k];
		k++;
	}
	if (k == 0)
		goto fail;
	lanyard__agent__v1__batch_new_x509_svidrequest__init(&req);
	req.n_params = k;
	req.params = ptrs;
	j->base.on_done = issue_on_done;
	if (ly_sync_chan_call_start(s, s->chan, &j->base, M_BATCH, LY_RPC_UNARY, &req.base, false, &e) != LY_OK) {
		log_warn("BatchNewX509SVID: %s", e.msg);
		goto fail;
	}
	s->stats.batches++;
	log_debug("BatchNewX509SVID: %zu CSRs sent", k);
	free(params);
	free(ptrs);
	return;
fail:
	free(params);
	free(ptrs);
	issue_reschedule_failed(s, j, true);
	issue_end(s, j);
}

/* Copies what the pool needs of one cached entry into `it`. */
static ly_status
issue_item_fill(struct issue_item *it, const struct ly_entry *en)
{
	if ((it->entry_id = strdup(en->entry_id)) == NULL || (it->spiffe_id = strdup(en->spiffe_id)) == NULL)
		return LY_E_NOMEM;
	if (en->n_dns_names > 0) {
		if ((it->dns = calloc(en->n_dns_names, sizeof(*it->dns))) == NULL)
			return LY_E_NOMEM;
		for (size_t k = 0; k < en->n_dns_names; k++) {
			if ((it->dns[k] = strdup(en->dns_names[k])) == NULL)
				return LY_E_NOMEM;
			it->n_dns = k + 1;
		}
	}
	return LY_OK;
}

/*
 * Takes the due entries (new ones, and renewals due within the coalescing
 * window: rotation.h) as one batch of at most LY_ROTATION_BATCH_MAX, keys
 * and CSRs made on the pool. One batch at a time; the next starts as soon
 * as this one is in the cache.
 */
void
ly_sync_issue_kick(struct ly_sync *s)
{
	struct ly_rotation_batch batch;
	struct issue_job *j = NULL;
	struct ly_cache_item ci;
	struct ly_error e;

	if (s->phase != PH_ENROLLED || s->issue_inflight >= LY_AGENT_ISSUE_INFLIGHT_MAX || s->chan == NULL ||
	    s->reconnect_armed || s->denied)
		return;
	ly_rotation_batch_init(&batch);
	for (;;) {
		if (ly_rotation_sched_pop_due(s->sched, ly_sync_base_now_ms(), LY_ROTATION_COALESCE_MS,
			LY_ROTATION_BATCH_MAX, &batch, &e) != LY_OK) {
			log_error("rotation: %s", e.msg);
			break;
		}
		if (batch.n == 0)
			break;
		if ((j = calloc(1, sizeof(*j))) == NULL || (j->items = calloc(batch.n, sizeof(*j->items))) == NULL) {
			log_error("issuance: out of memory");
			free(j);
			j = NULL;
			/* Put them back a little later. */
			for (size_t i = 0; i < batch.n; i++) {
				int64_t now = ly_sync_base_now_ms();
				if (ly_rotation_sched_put(s->sched, batch.keys[i], now + 1000, now, NULL) != LY_OK)
					log_error("entry %s: not rescheduled", batch.keys[i]);
			}
			break;
		}
		j->s = s;
		for (size_t i = 0; i < batch.n; i++) {
			if (!ly_cache_get(s->cache, batch.keys[i], &ci) || ci.entry->node) {
				ly_sync_base_retry_forget(s, batch.keys[i]);
				continue;
			}
			if (issue_item_fill(&j->items[j->n], ci.entry) != LY_OK) {
				j->n++;
				log_error("issuance: out of memory");
				issue_job_free(j);
				j = NULL;
				break;
			}
			j->n++;
		}
		if (j == NULL)
			break;
		if (j->n == 0) {
			issue_job_free(j);
			j = NULL;
			continue; /* all gone: take the next due ones */
		}
		j->w.data = j;
		if (uv_queue_work(s->loop, &j->w, issue_prepare_run, issue_prepare_after) != 0) {
			log_error("issuance: cannot queue the work");
			issue_reschedule_failed(s, j, true);
			issue_job_free(j);
			j = NULL;
			break;
		}
		s->issue_inflight++;
		s->n_works++;
		j = NULL;
		if (s->issue_inflight >= LY_AGENT_ISSUE_INFLIGHT_MAX)
			break;
		ly_rotation_batch_cleanup(&batch); /* the next one, if more are due */
		ly_rotation_batch_init(&batch);
	}
	ly_rotation_batch_cleanup(&batch);
}

/* ---- the tick: expiry, our renewal, issuance ------------------------------------------------- */

static void
on_tick(uv_timer_t *t)
{
	struct ly_sync *s = t->data;
	struct ly_cache_changes cs;

	if (s == NULL || s->phase == PH_STOPPING || s->phase == PH_NEW)
		return;
	ly_cache_changes_init(&cs);
	size_t expired = ly_cache_expire(s->cache, ly_sync_base_now_s(), &cs);
	if (expired > 0)
		log_warn("%zu cached SVIDs expired before they could be renewed: no longer served", expired);
	ly_sync_base_changes_publish(s, &cs);
	if (s->phase == PH_ENROLLED && s->ident.valid) {
		if (ly_sync_base_ident_expired(s, ly_sync_base_now_s())) {
			if (!s->denied)
				s->steps->attest_again(s, "our SVID expired");
		} else if (ly_sync_base_now_ms() >= s->steps->renew_due_ms(s)) {
			s->steps->renew(s);
		}
	}
	ly_sync_issue_kick(s);
	ly_sync_issue_tick_arm(s);
}

void
ly_sync_issue_tick_arm(struct ly_sync *s)
{
	int64_t now = ly_sync_base_now_ms(), next = INT64_MAX;

	if (s->t_tick == NULL || s->phase == PH_STOPPING || s->phase == PH_NEW)
		return;
	bool connected = s->phase == PH_ENROLLED && s->chan != NULL && !s->reconnect_armed && !s->denied;
	if (connected && s->issue_inflight < LY_AGENT_ISSUE_INFLIGHT_MAX) {
		int64_t n = ly_rotation_sched_next_ms(s->sched);
		if (n < next)
			next = n;
	}
	int64_t exp = ly_cache_next_expiry(s->cache);
	if (exp != INT64_MAX && exp < INT64_MAX / 1000 && exp * 1000 < next)
		next = exp * 1000;
	if (s->phase == PH_ENROLLED && s->ident.valid) {
		if (s->ident.not_after * 1000 > now && s->ident.not_after * 1000 < next)
			next = s->ident.not_after * 1000;
		if (connected && !s->renew_busy && s->steps->renew_due_ms(s) < next)
			next = s->steps->renew_due_ms(s);
	}
	int64_t ms = next <= now ? 0 : (next - now > TICK_MAX_MS ? TICK_MAX_MS : next - now);
	if (ms < 5)
		ms = 5; /* a due event fires after a short pause, never in a tight loop */
	ly_uvtimer_arm(s->t_tick, on_tick, (uint64_t)ms);
}

