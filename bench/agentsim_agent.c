/*
 * agentsim_agent.c: one simulated agent's protocol with the server
 * (docs/agent-api.md; agentsim.c says what is simulated): AttestAgent with
 * its join token, then its mTLS channel and WatchEntries stream (snapshot
 * then deltas, into agentsim_ent.c's set), BatchNewX509SVID for the
 * entries due, RenewAgent at half its SVID's life (then a new channel),
 * the resync watch, the shared bundle, and the move to the next server
 * after a backoff when a watch fails. The ends of its calls (on_msg,
 * on_status) decide what comes next; the driver only starts agents and
 * ticks them (agent_start, agent_tick).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "agentsim.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/keys.h"

#define M_ATTEST "/lanyard.agent.v1.Agent/AttestAgent"
#define M_RENEW "/lanyard.agent.v1.Agent/RenewAgent"
#define M_WATCH "/lanyard.agent.v1.Agent/WatchEntries"
#define M_BATCH "/lanyard.agent.v1.Agent/BatchNewX509SVID"
#define M_BUNDLE "/lanyard.agent.v1.Agent/GetBundle"

#define BATCH_MAX 1024
/* The share of one loop turn attesting and connecting may take (conn_timer). */
#define CONNECT_SLICE_MS 10.0

static void call_on_msg(struct ly_rpc_ccall *cc, const uint8_t *msg, size_t len, void *arg);
static void call_on_status(struct ly_rpc_ccall *cc, enum ly_rpc_code code, const char *details, void *arg);

/* call_start with this file's call ends. */
static ly_status
start(struct call *k, const ProtobufCMessage *msg, enum ly_rpc_kind kind, const char *method, unsigned flags,
    struct ly_error *err)
{
	return call_start(k, msg, kind, method, flags, call_on_msg, call_on_status, err);
}

/* ---- the bundle (shared: one trust domain) ------------------------------------------------ */

static void
bundle_take(struct sim *s, const Lanyard__Agent__V1__Bundle *b)
{
	struct ly_buf der = LY_BUF_INIT, pem = LY_BUF_INIT;
	struct ly_error e;

	if (b == NULL || b->n_x509_authorities == 0 || (s->bundle_seq != 0 && b->sequence <= s->bundle_seq))
		return;
	for (size_t i = 0; i < b->n_x509_authorities; i++)
		if (ly_buf_append(&der, b->x509_authorities[i].data, b->x509_authorities[i].len, 1 << 20, &e) != LY_OK)
			goto out;
	if (ly_der_certs_to_pem(der.data, der.len, 64, 1 << 20, &pem, &e) != LY_OK) {
		report_err(s, NULL, "bundle", 0, "%s", e.msg);
		goto out;
	}
	ly_buf_free(&s->bundle_pem);
	ly_buf_take(&s->bundle_pem, &pem);
	s->bundle_seq = b->sequence;
out:
	ly_buf_free(&der);
	ly_buf_free(&pem);
}

static void
bundle_fetch(struct sim *s, struct agent *a)
{
	Lanyard__Agent__V1__GetBundleRequest req;
	struct ly_error e;
	struct call *k;

	if (s->bundle_busy || a->chan == NULL || (k = call_new(a, a->chan, C_BUNDLE)) == NULL)
		return;
	lanyard__agent__v1__get_bundle_request__init(&req);
	if (start(k, &req.base, LY_RPC_UNARY, M_BUNDLE, 0, &e) == LY_OK)
		s->bundle_busy = true;
}

/* ---- issuance and renewal --------------------------------------------------------------- */

static void
batch_kick(struct agent *a)
{
	struct sim *s = a->sim;
	Lanyard__Agent__V1__BatchNewX509SVIDRequest req;
	Lanyard__Agent__V1__X509SVIDParams *pp = NULL, **pv = NULL;
	struct ly_buf *csrs = NULL;
	struct ly_error e;
	struct call *k = NULL;
	int64_t now = now_s();
	size_t n = 0;

	if (a->batch != NULL || a->st != ST_SERVED || a->chan == NULL)
		return;
	for (size_t i = 0; i < a->n_ents && n < BATCH_MAX; i++)
		if (!a->ents[i].in_batch && a->ents[i].renew_at <= now)
			n++;
	if (n == 0)
		return;
	if ((k = call_new(a, a->chan, C_BATCH)) == NULL || (k->idx = calloc(n, sizeof(*k->idx))) == NULL ||
	    (k->ids = calloc(n, sizeof(*k->ids))) == NULL || (pp = calloc(n, sizeof(*pp))) == NULL ||
	    (pv = calloc(n, sizeof(*pv))) == NULL || (csrs = calloc(n, sizeof(*csrs))) == NULL)
		goto fail;
	for (size_t i = 0; i < a->n_ents && k->n < n; i++) {
		struct ent *en = &a->ents[i];
		struct ly_spiffe_id sid;
		if (en->in_batch || en->renew_at > now)
			continue;
		if (ly_spiffe_id_parse_str(en->sid, &sid, &e) != LY_OK ||
		    ly_csr_build(a->wkey, &sid, NULL, 0, &csrs[k->n], &e) != LY_OK) {
			report_err(s, a, "csr", 0, "%s: %s", en->sid, e.msg);
			en->renew_at = now + 3600; /* do not spin on it */
			continue;
		}
		if ((k->ids[k->n] = strdup(en->id)) == NULL)
			goto fail;
		lanyard__agent__v1__x509_svidparams__init(&pp[k->n]);
		pp[k->n].entry_id = en->id;
		pp[k->n].csr.data = csrs[k->n].data;
		pp[k->n].csr.len = csrs[k->n].len;
		pv[k->n] = &pp[k->n];
		k->idx[k->n] = i;
		k->n++;
	}
	if (k->n == 0)
		goto fail;
	lanyard__agent__v1__batch_new_x509_svidrequest__init(&req);
	req.n_params = k->n;
	req.params = pv;
	struct call *kk = k;
	k = NULL; /* call_start owns it now */
	if (start(kk, &req.base, LY_RPC_UNARY, M_BATCH, 0, &e) != LY_OK) {
		report_err(s, a, "batch", 0, "%s", e.msg);
		goto out;
	}
	for (size_t i = 0; i < kk->n; i++) {
		struct ent *en = ent_find(a, kk->ids[i]);
		if (en != NULL)
			en->in_batch = true;
	}
	a->batch = kk;
	goto out;
fail:
	call_free(k);
out:
	if (csrs != NULL)
		for (size_t i = 0; i < n; i++)
			ly_buf_free(&csrs[i]);
	free(csrs);
	free(pp);
	free(pv);
}

static void
batch_done(struct call *k, const uint8_t *msg, size_t len)
{
	struct agent *a = k->a;
	struct sim *s = a->sim;
	Lanyard__Agent__V1__BatchNewX509SVIDResponse *r =
	    lanyard__agent__v1__batch_new_x509_svidresponse__unpack(NULL, len, msg);
	int64_t now = now_s();

	if (r == NULL) {
		s->batch_errs++;
		return;
	}
	for (size_t i = 0; i < r->n_results; i++) {
		const Lanyard__Agent__V1__X509SVIDResult *res = r->results[i];
		if (res == NULL || res->entry_id == NULL)
			continue;
		struct ent *en = ent_find(a, res->entry_id);
		if (en == NULL)
			continue;
		if (res->status_code != 0 || res->cert_chain.len == 0) {
			s->refused++;
			report_err(s, a, "svid", res->status_code, "%s: %s", res->entry_id,
			    res->status_message != NULL ? res->status_message : "");
			en->renew_at = now + 30;
			continue;
		}
		if (en->renew_at == 0)
			s->issued++;
		else
			s->renewed++;
		int64_t exp = res->expires_at > k->t_req ? res->expires_at : k->t_req + 2;
		en->renew_at = k->t_req + (exp - k->t_req) / 2;
	}
	lanyard__agent__v1__batch_new_x509_svidresponse__free_unpacked(r, NULL);
}

static void
renew_agent(struct agent *a)
{
	Lanyard__Agent__V1__RenewAgentRequest req;
	struct ly_buf csr = LY_BUF_INIT;
	struct ly_error e;
	struct call *k;
	EVP_PKEY *key = NULL;

	if (a->renew != NULL || a->st != ST_SERVED || a->chan == NULL)
		return;
	if (ly_key_generate(LY_KEY_EC_P256, &key, &e) != LY_OK || ly_csr_build(key, &a->id, NULL, 0, &csr, &e) != LY_OK) {
		report_err(a->sim, a, "renew", 0, "%s", e.msg);
		EVP_PKEY_free(key);
		return;
	}
	if ((k = call_new(a, a->chan, C_RENEW)) == NULL) {
		EVP_PKEY_free(key);
		ly_buf_free(&csr);
		return;
	}
	k->newkey = key;
	lanyard__agent__v1__renew_agent_request__init(&req);
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (start(k, &req.base, LY_RPC_UNARY, M_RENEW, 0, &e) != LY_OK)
		report_err(a->sim, a, "renew", 0, "%s", e.msg);
	else
		a->renew = k;
	ly_buf_free(&csr);
}

/* An AgentSVID: our certificate (PEM) and its renewal time; `key` becomes ours. */
static ly_status
svid_take(struct agent *a, const Lanyard__Agent__V1__AgentSVID *sv, EVP_PKEY *key, int64_t t_req,
    struct ly_error *err)
{
	struct ly_buf pem = LY_BUF_INIT, kpem = LY_BUF_INIT;

	if (sv == NULL || sv->spiffe_id == NULL || strcmp(sv->spiffe_id, a->id.id) != 0 || sv->cert_chain.len == 0)
		return ly_error_set(err, LY_E_INVALID, "agent SVID: missing, or not for %s", a->id.id);
	LY_TRY(ly_der_certs_to_pem(sv->cert_chain.data, sv->cert_chain.len, 16, 1 << 16, &pem, err));
	if (ly_key_to_pem(key, &kpem, err) != LY_OK) {
		ly_buf_free(&pem);
		return err->code;
	}
	ly_buf_free(&a->cert_pem);
	ly_buf_free_secret(&a->key_pem);
	ly_buf_take(&a->cert_pem, &pem);
	ly_buf_take(&a->key_pem, &kpem);
	int64_t exp = sv->expires_at > t_req ? sv->expires_at : t_req + 2;
	a->svid_renew_at = t_req + (exp - t_req) / 2;
	bundle_take(a->sim, sv->bundle);
	return LY_OK;
}

/* ---- connection: attest, watch, move ------------------------------------------------------ */

static void conn_timer(uv_timer_t *t);

static void
set_timer(struct agent *a, uint64_t ms)
{
	uv_timer_start(&a->timer, conn_timer, ms, 0);
}

static uint64_t
backoff_ms(struct sim *s, unsigned attempt)
{
	uint64_t step = (uint64_t)s->backoff_min;
	uint32_t rnd;

	for (unsigned i = 0; i < attempt && step < (uint64_t)s->backoff_max; i++)
		step *= 2;
	if (step > (uint64_t)s->backoff_max)
		step = (uint64_t)s->backoff_max;
	if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
		rnd = (uint32_t)random();
	uint64_t half = step / 2;
	return step - half + rnd % (half + 1);
}

/* Drops the channel and its calls, then tries the next server after a backoff. */
static void
lose(struct agent *a, const char *why, enum ly_rpc_code code, const char *details)
{
	struct sim *s = a->sim;

	if (a->st == ST_SERVED) {
		a->t_lost = now_ns();
		a->lost_from = a->addr;
	}
	if (a->st == ST_SERVED || a->st == ST_CONNECTING)
		report_err(s, a, why, (int)code, "%s (%s)", details, s->addrs[a->addr]);
	call_cancel(a->w);
	call_cancel(a->wnext);
	call_cancel(a->batch);
	call_cancel(a->renew);
	a->w = a->wnext = a->batch = a->renew = NULL;
	chan_kill(a->chan);
	a->chan = NULL;
	for (size_t i = 0; i < a->n_ents; i++)
		a->ents[i].in_batch = false;
	a->st = ST_BACKOFF;
	a->addr = (a->addr + 1) % s->n_addrs;
	set_timer(a, backoff_ms(s, a->attempt++));
}

static void
watch_open(struct agent *a)
{
	Lanyard__Agent__V1__WatchEntriesRequest req;
	struct ly_error e;
	struct call *k;

	if (a->chan == NULL || a->wnext != NULL || (k = call_new(a, a->chan, C_WATCH)) == NULL)
		return;
	lanyard__agent__v1__watch_entries_request__init(&req);
	req.since_revision = a->revision;
	if (start(k, &req.base, LY_RPC_SERVER_STREAM, M_WATCH, 0, &e) != LY_OK) {
		lose(a, "watch", 0, e.msg);
		return;
	}
	a->sim->watch_opened++;
	if (a->w == NULL)
		a->w = k;
	else
		a->wnext = k;
}

static void
connect_agent(struct agent *a)
{
	struct ly_error e;

	if ((a->chan = chan_new(a, true, &e)) == NULL) {
		lose(a, "channel", 0, e.msg);
		return;
	}
	if (a->st != ST_BACKOFF && a->st != ST_ATTEST)
		a->t_lost = 0;
	a->st = ST_CONNECTING;
	watch_open(a);
}

static void
attest(struct agent *a)
{
	struct sim *s = a->sim;
	Lanyard__Agent__V1__AttestAgentRequest req;
	Lanyard__Agent__V1__JoinTokenAttestation jt;
	struct ly_buf csr = LY_BUF_INIT;
	struct ly_error e;
	struct call *k;
	EVP_PKEY *key = NULL;

	a->st = ST_ATTEST;
	if ((a->akey == NULL && ly_key_generate(LY_KEY_EC_P256, &a->akey, &e) != LY_OK) ||
	    ly_csr_build(a->akey, &a->id, NULL, 0, &csr, &e) != LY_OK) {
		report_err(s, a, "attest", 0, "%s", e.msg);
		a->st = ST_FAILED;
		return;
	}
	if (EVP_PKEY_up_ref(a->akey) != 1) {
		report_err(s, a, "attest", 0, "key reference");
		ly_buf_free(&csr);
		a->st = ST_FAILED;
		return;
	}
	key = a->akey; /* the call's reference */
	if ((a->chan = chan_new(a, false, &e)) == NULL || (k = call_new(a, a->chan, C_ATTEST)) == NULL) {
		EVP_PKEY_free(key);
		ly_buf_free(&csr);
		lose(a, "attest", 0, "no channel");
		return;
	}
	k->newkey = key;
	lanyard__agent__v1__attest_agent_request__init(&req);
	lanyard__agent__v1__join_token_attestation__init(&jt);
	jt.token = a->token;
	req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN;
	req.join_token = &jt;
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (start(k, &req.base, LY_RPC_UNARY, M_ATTEST, LY_RPC_WIPE, &e) != LY_OK)
		lose(a, "attest", 0, e.msg);
	ly_buf_free(&csr);
}

static void
conn_timer(uv_timer_t *t)
{
	struct agent *a = t->data;
	struct sim *s = a->sim;

	/*
	 * At most CONNECT_SLICE_MS of one loop turn goes to attesting and
	 * connecting: a channel costs this thread milliseconds (its credentials,
	 * then gRPC's TLS context on its first call), and the backoffs of the
	 * hundreds of agents of a killed server end together: connected in one
	 * timer phase, none of them read an answer before the last channel was
	 * made, and the move was measured as the whole batch (docs/benchmarks.md,
	 * "Re-run on main"). The rest wait for the next turn, after its I/O.
	 */
	uint64_t turn = uv_now(s->loop);
	if (turn != s->slice_turn) {
		s->slice_turn = turn;
		s->slice_t0 = mono_ms();
	} else if (mono_ms() - s->slice_t0 >= CONNECT_SLICE_MS) {
		s->deferred++;
		set_timer(a, 1);
		return;
	}
	if (a->cert_pem.len == 0)
		attest(a);
	else
		connect_agent(a);
}

static void
watch_msg(struct call *k, const uint8_t *msg, size_t len)
{
	struct agent *a = k->a;
	struct sim *s = a->sim;
	Lanyard__Agent__V1__EntriesUpdate *m = lanyard__agent__v1__entries_update__unpack(NULL, len, msg);
	int64_t t = now_ns();

	if (m == NULL) {
		report_err(s, a, "watch", 0, "an update that does not unpack");
		return;
	}
	if (k == a->wnext) {
		/* The replacement's first update: it takes over. */
		call_cancel(a->w);
		a->w = a->wnext;
		a->wnext = NULL;
	}
	if (k != a->w)
		goto out;
	bool first = !k->got;
	k->got = true;
	if (m->snapshot) {
		s->snapshots++;
		ent_snapshot(a, m);
	} else {
		s->deltas++;
		for (size_t i = 0; i < m->n_entries; i++)
			if (m->entries[i] != NULL && m->entries[i]->entry_id != NULL && m->entries[i]->spiffe_id != NULL)
				ent_upsert(a, m->entries[i]->entry_id, m->entries[i]->spiffe_id);
		for (size_t i = 0; i < m->n_deleted_entry_ids; i++)
			if (m->deleted_entry_ids[i] != NULL)
				ent_delete(a, m->deleted_entry_ids[i]);
	}
	if (m->revision > 0)
		a->revision = m->revision;
	if (s->mark != NULL) {
		bool has = ent_find(a, s->mark) != NULL;
		if (a->has_mark && !has) {
			s->revoked++;
			report_revoked(s, a, t);
		}
		a->has_mark = has;
	}
	if (first && a->st != ST_SERVED) {
		if (a->t_lost != 0) {
			s->moves++;
			report_moved(s, a, t);
			a->t_lost = 0;
		}
		a->st = ST_SERVED;
		a->attempt = 0;
	}
	if (m->bundle_sequence > s->bundle_seq)
		bundle_fetch(s, a);
	batch_kick(a);
out:
	lanyard__agent__v1__entries_update__free_unpacked(m, NULL);
}

static void
call_on_msg(struct ly_rpc_ccall *cc, const uint8_t *msg, size_t len, void *arg)
{
	struct call *k = arg;
	struct ly_error e;

	(void)cc;
	if (k->cancelled)
		return;
	switch (k->kind) {
	case C_ATTEST: {
		Lanyard__Agent__V1__AttestAgentResponse *r = lanyard__agent__v1__attest_agent_response__unpack(NULL, len, msg);
		if (r == NULL || svid_take(k->a, r->svid, k->newkey, k->t_req, &e) != LY_OK)
			report_err(k->a->sim, k->a, "attest", 0, "%s", r == NULL ? "answer does not unpack" : e.msg);
		else
			k->newkey = NULL;
		if (r != NULL)
			lanyard__agent__v1__attest_agent_response__free_unpacked(r, NULL);
		break;
	}
	case C_RENEW: {
		Lanyard__Agent__V1__AgentSVID *r = lanyard__agent__v1__agent_svid__unpack(NULL, len, msg);
		if (r == NULL || svid_take(k->a, r, k->newkey, k->t_req, &e) != LY_OK) {
			report_err(k->a->sim, k->a, "renew", 0, "%s", r == NULL ? "answer does not unpack" : e.msg);
		} else {
			k->newkey = NULL;
			k->a->sim->agent_renewed++;
		}
		if (r != NULL)
			lanyard__agent__v1__agent_svid__free_unpacked(r, NULL);
		break;
	}
	case C_WATCH:
		watch_msg(k, msg, len);
		break;
	case C_BATCH:
		batch_done(k, msg, len);
		break;
	case C_BUNDLE: {
		Lanyard__Agent__V1__Bundle *b = lanyard__agent__v1__bundle__unpack(NULL, len, msg);
		if (b != NULL) {
			bundle_take(k->a->sim, b);
			lanyard__agent__v1__bundle__free_unpacked(b, NULL);
		}
		break;
	}
	}
}

static void
call_on_status(struct ly_rpc_ccall *cc, enum ly_rpc_code code, const char *details, void *arg)
{
	struct call *k = arg;
	struct agent *a = k->a;
	struct sim *s = a->sim;
	struct chan *c = k->c;
	bool live = !k->cancelled && !c->retired;

	(void)cc;
	/* This call still counts on `c` until the end, so nothing below frees `c`. */
	if (k->kind == C_BUNDLE)
		s->bundle_busy = false;
	if (a->w == k)
		a->w = NULL;
	if (a->wnext == k)
		a->wnext = NULL;
	if (a->renew == k)
		a->renew = NULL;
	if (a->batch == k) {
		a->batch = NULL;
		for (size_t i = 0; i < k->n; i++) {
			struct ent *en = ent_find(a, k->ids[i]);
			if (en != NULL)
				en->in_batch = false;
		}
	}
	if (!live)
		goto out;
	switch (k->kind) {
	case C_ATTEST:
		chan_kill(a->chan);
		a->chan = NULL;
		if (code == LY_RPC_OK && a->cert_pem.len > 0) {
			a->attempt = 0;
			connect_agent(a);
		} else if (code == LY_RPC_UNAVAILABLE || code == LY_RPC_RESOURCE_EXHAUSTED ||
		    code == LY_RPC_DEADLINE_EXCEEDED) {
			s->attest_errs++;
			report_err(s, a, "attest", (int)code, "%s (retrying)", details);
			a->st = ST_BACKOFF;
			a->addr = (a->addr + 1) % s->n_addrs;
			set_timer(a, backoff_ms(s, a->attempt++));
		} else {
			s->attest_errs++;
			report_err(s, a, "attest", (int)code, "%s (giving up)", details);
			a->st = ST_FAILED;
		}
		break;
	case C_RENEW:
		if (code != LY_RPC_OK) {
			report_err(s, a, "renew", (int)code, "%s", details);
			a->svid_renew_at = now_s() + 5;
			break;
		}
		/* A new channel with the new SVID; its watch's snapshot retires the old one. */
		{
			struct ly_error e;
			struct chan *nc = chan_new(a, true, &e);
			if (nc == NULL) {
				lose(a, "channel", 0, e.msg);
				break;
			}
			call_cancel(a->wnext);
			a->wnext = NULL;
			struct chan *old = a->chan;
			a->chan = nc;
			watch_open(a);
			if (old != NULL) {
				/* Its calls (the old watch) go on until the new snapshot. */
				old->retired = true;
				if (old->ncalls == 0)
					chan_destroy(old);
			}
		}
		break;
	case C_WATCH:
		if (code == LY_RPC_OK) {
			/* "watch rebased": reopen now. */
			watch_open(a);
			break;
		}
		s->watch_errs++;
		lose(a, "watch", code, details);
		break;
	case C_BATCH:
		if (code != LY_RPC_OK) {
			s->batch_errs++;
			report_err(s, a, "batch", (int)code, "%s", details);
			break;
		}
		batch_kick(a);
		break;
	case C_BUNDLE:
		break;
	}
out:
	c->ncalls--;
	if (c->retired && c->ncalls == 0)
		chan_destroy(c);
	call_free(k);
}

/* ---- the driver's ------------------------------------------------------------------------ */

void
agent_start(struct agent *a)
{
	set_timer(a, 0);
}

void
agent_tick(struct agent *a, int64_t now)
{
	struct sim *s = a->sim;

	if (a->st != ST_SERVED)
		return;
	if (a->svid_renew_at != 0 && now >= a->svid_renew_at)
		renew_agent(a);
	if (s->resync_s > 0 && now >= a->next_resync) {
		a->next_resync = now + s->resync_s;
		if (a->wnext == NULL)
			watch_open(a);
	}
	batch_kick(a);
}
