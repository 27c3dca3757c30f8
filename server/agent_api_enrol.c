/*
 * agent_api_enrol.c: enrolment on the agent API (agent_api_internal.h):
 * AttestAgent by join_token, x509pop (challenge, then proof), k8s_psat (the
 * TokenReview on the thread pool, LY_AGENTAPI_PSAT_INFLIGHT_MAX at once) or a ticket,
 * and RenewAgent; both sign the agent's SVID and record the agent.
 */
#include "server/agent_api_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "lib/caps.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "lib/spiffeid.h"
#include "server/bundle_pb.h"
#include "server/ca.h"

/* What a refused attestation is, as a gRPC code. */
static enum ly_rpc_code
attest_code(ly_status rc)
{
	switch (rc) {
	case LY_E_INVALID:
	case LY_E_LIMIT:
	case LY_E_UNSUPPORTED:
		return LY_RPC_INVALID_ARGUMENT;
	case LY_E_UNTRUSTED:
	case LY_E_NOT_FOUND:
	case LY_E_EXPIRED:
		return LY_RPC_PERMISSION_DENIED;
	case LY_E_IO:
		return LY_RPC_UNAVAILABLE;
	case LY_E_NOMEM:
		return LY_RPC_RESOURCE_EXHAUSTED;
	default:
		return LY_RPC_INTERNAL;
	}
}

/* ---- enrolment ---------------------------------------------------------------------------------- */

/*
 * One enrolment in progress, across its datastore calls: the admitted
 * agent (or, for a renewal, its record), its CSR, and what signing made.
 * Steps: [join_token: the token used up, on the worker] -> the agent's
 * record before (worker) -> banned? ticket? -> sign (loop) -> record the
 * agent (worker) -> reply (loop).
 */
struct enrol_op {
	struct agent_api_op op;
	struct ly_rpc_call *call;
	time_t now;
	bool renewal, from_ticket;
	uint64_t t0_ns;
	/* join_token only: the token (wiped), and the attestation's own outcome. */
	char *token;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	uint8_t key_sha256[LY_AGENTAPI_KEY_SHA256_LEN]; /* of the CSR's key, when has_key */
	bool has_key, again;                           /* again: a retry by that key (its answer was lost) */
	ly_status attest_rc;
	struct ly_error attest_err;
	/* The agent: admitted (attestation) or recorded (renewal). */
	struct ly_attest_result res;
	struct ly_buf csr;
	bool has_csr_id;
	char csr_id[LY_SPIFFE_ID_MAX + 1];
	struct ly_ds_agent *old; /* the record before; NULL when new */
	/* Signed. */
	char agent_id[LY_SPIFFE_ID_MAX + 1];
	char type[32];
	struct ly_selector *sels;
	size_t n_sels;
	struct ly_buf chain;
	time_t exp;
	char serial[LY_DS_AGENT_SERIAL_MAX + 1];
	struct ly_ds_agent rec; /* points into the fields above */
};

static void
enrol_release(void *ctx)
{
	struct enrol_op *o = ctx;

	if (o->token != NULL)
		ly_free_secret_str(o->token);
	ly_attest_result_cleanup(&o->res);
	ly_buf_free(&o->csr);
	ly_ds_agent_free(o->old);
	ly_selectors_free(o->sels, o->n_sels);
	ly_buf_free(&o->chain);
	free(o);
}

static struct enrol_op *
enrol_op_new(struct ly_rpc_call *call, const uint8_t *csr, size_t csr_len, const char *csr_id, time_t now)
{
	struct enrol_op *o = calloc(1, sizeof(*o));

	if (o == NULL)
		return NULL;
	o->call = call;
	o->now = now;
	o->t0_ns = uv_hrtime();
	o->res = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	if (csr_len > 0 && ly_buf_set(&o->csr, csr, csr_len, NULL) != LY_OK) {
		enrol_release(o);
		return NULL;
	}
	if (csr_id != NULL) {
		o->has_csr_id = true;
		/* Within LY_SPIFFE_ID_MAX: agentapi_msg.h. */
		(void)snprintf(o->csr_id, sizeof(o->csr_id), "%s", csr_id);
	}
	return o;
}

static ly_status
upsert_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct enrol_op *o = ctx;

	return ly_datastore_agent_upsert(ds, &o->rec, err);
}

/* The agent is recorded: the previous serial, its streams, the reply AgentSVID. */
static void
upsert_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct enrol_op *o = ctx;
	struct ly_agent_api *api = agent_api_op_end(&o->op);
	struct ly_bundle_pb pbb;
	struct ly_error e;

	memset(&pbb, 0, sizeof(pbb));
	if (api == NULL) {
		ly_rpc_call_finish(o->call, LY_RPC_UNAVAILABLE, "server stopping");
		return;
	}
	if (st != LY_OK) {
		log_error("agent %s: cannot record it: %s", o->agent_id, err->msg);
		agent_api_reply_finish(o->call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		return;
	}
	agent_api_known_put(api, &o->rec);
	if (o->renewal && o->old != NULL)
		agent_api_auth_prev_set(api, o->agent_id, o->old->serial_number, (time_t)o->old->svid_expires_at, o->now);
	else
		agent_api_auth_prev_remove(api, o->agent_id);
	agent_api_watch_agent_updated(api, o->agent_id, o->serial, o->sels, o->n_sels, o->now);
	log_info("agent %s %s (%s): SVID serial %s valid until %lld", o->agent_id, o->renewal ? "renewed" : "attested",
	    o->type, o->serial, (long long)o->exp);
	agent_api_reply_metric(api, MX_X509_AGENT, NULL, 1);
	if (!o->renewal)
		agent_api_reply_metric(api, MX_ATTEST_OK, o->type, 1);

	if (ly_bundle_pb_make(ly_server_bundle(api->srv), &pbb, &e) != LY_OK) {
		agent_api_reply_finish(o->call, LY_RPC_INTERNAL, "bundle", e.msg);
		return;
	}
	Lanyard__Agent__V1__AgentSVID svid;
	lanyard__agent__v1__agent_svid__init(&svid);
	svid.spiffe_id = o->agent_id;
	svid.cert_chain.data = o->chain.data;
	svid.cert_chain.len = o->chain.len;
	svid.expires_at = (int64_t)o->exp;
	svid.bundle = &pbb.msg;
	if (o->renewal) {
		agent_api_reply_send(o->call, &svid.base, false);
	} else {
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.svid = &svid;
		agent_api_reply_send(o->call, &resp.base, false);
	}
	ly_bundle_pb_cleanup(&pbb);
}

/*
 * Signs an agent SVID from o->csr for o->agent_id, then records the agent
 * on the worker (upsert_done replies). o->old is the record before
 * (renewal: its serial stays acceptable until it expires; attestation: it
 * no longer is). Takes `o` (released on every path).
 */
static void
enrol(struct ly_agent_api *api, struct enrol_op *o)
{
	struct ly_spiffe_id sid;
	struct ly_error e;
	ly_status rc;

	if (ly_spiffe_id_parse_str(o->agent_id, &sid, &e) != LY_OK) {
		agent_api_reply_finish(o->call, LY_RPC_INTERNAL, "agent ID", e.msg);
		goto fail;
	}
	if ((rc = ly_ca_sign_agent_svid(api->srv->ca, o->csr.data, o->csr.len, &sid, 0, o->now, &o->chain, &o->exp,
	    &e)) != LY_OK) {
		if (agent_api_reply_sign_code(rc) != LY_RPC_INVALID_ARGUMENT)
			log_error("agent %s: cannot sign its SVID: %s", o->agent_id, e.msg);
		agent_api_reply_finish(o->call, agent_api_reply_sign_code(rc), "CSR refused", e.msg);
		goto fail;
	}
	if (agent_api_auth_chain_serial(&o->chain, o->serial, &e) != LY_OK) {
		log_error("agent %s: issued SVID unreadable: %s", o->agent_id, e.msg);
		agent_api_reply_finish(o->call, LY_RPC_INTERNAL, "issued SVID unreadable", NULL);
		goto fail;
	}
	o->rec = (struct ly_ds_agent){
		.spiffe_id = o->agent_id,
		.attestation_type = o->type,
		.serial_number = o->serial,
		.svid_expires_at = (int64_t)o->exp,
		.banned = false,
		.selectors = o->sels,
		.n_selectors = o->n_sels,
	};
	if ((rc = agent_api_op_submit(api, &o->op, upsert_work, upsert_done, enrol_release, &e)) != LY_OK) {
		log_error("agent %s: cannot record it: %s", o->agent_id, e.msg);
		agent_api_reply_finish(o->call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		goto fail;
	}
	return;
fail:
	enrol_release(o);
}

/* Copies the agent's ID, type and selectors from the admitted result into o's own fields. */
static ly_status
enrol_take_identity(struct enrol_op *o, const char *agent_id, const char *type, const struct ly_selector *sels,
    size_t n_sels, struct ly_error *err)
{
	(void)snprintf(o->agent_id, sizeof(o->agent_id), "%s", agent_id);
	(void)snprintf(o->type, sizeof(o->type), "%s", type);
	LY_TRY(ly_selectors_copy(sels, n_sels, &o->sels, err));
	o->n_sels = n_sels;
	return LY_OK;
}

/*
 * The agent was admitted (o->res) and its record before read (o->old):
 * refuse a banned one, then either sign its SVID (the CSR names its ID) or
 * hand out a ticket. Takes `o`.
 */
static void
admitted(struct ly_agent_api *api, struct enrol_op *o)
{
	struct ly_attest_result *res = &o->res;
	struct ly_error e;
	ly_status rc;

	if (o->old != NULL && o->old->banned) {
		log_info("agent %s refused: banned", res->agent_id);
		agent_api_reply_finish(o->call, LY_RPC_PERMISSION_DENIED, "agent is banned", NULL);
		goto out;
	}
	if (!o->has_csr_id || strcmp(o->csr_id, res->agent_id) != 0) {
		if (o->from_ticket) {
			agent_api_reply_finish(o->call, LY_RPC_INVALID_ARGUMENT, "CSR must name the agent ID", res->agent_id);
			goto out;
		}
		uint8_t ticket[TICKET_LEN];
		char id[LY_SPIFFE_ID_MAX + 1];
		(void)snprintf(id, sizeof(id), "%s", res->agent_id);
		if ((rc = agent_api_pending_add_ticket(api, res, o->now, ticket, &e)) != LY_OK) {
			agent_api_reply_finish(o->call, rc == LY_E_LIMIT ? LY_RPC_UNAVAILABLE : LY_RPC_INTERNAL, e.msg, NULL);
			goto out;
		}
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.agent_id = id;
		resp.ticket.data = ticket;
		resp.ticket.len = TICKET_LEN;
		log_info("agent %s admitted: ticket issued for its CSR", id);
		agent_api_reply_send(o->call, &resp.base, true);
		OPENSSL_cleanse(ticket, sizeof(ticket));
		goto out;
	}
	if (enrol_take_identity(o, res->agent_id, res->type, res->selectors, res->n_selectors, &e) != LY_OK) {
		agent_api_reply_finish(o->call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		goto out;
	}
	enrol(api, o);
	return;
out:
	enrol_release(o);
}

/* Reads the admitted agent's record before (o->res.agent_id); not found is a new agent. */
static ly_status
get_old(struct ly_datastore *ds, struct enrol_op *o, struct ly_error *err)
{
	ly_status rc = ly_datastore_agent_get(ds, o->res.agent_id, &o->old, err);

	if (rc == LY_E_NOT_FOUND) {
		o->old = NULL;
		return LY_OK;
	}
	return rc;
}

static ly_status
get_old_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	return get_old(ds, ctx, err);
}

/*
 * The next step's op: o's contents moved into a new one (o keeps nothing
 * its release would free). Only from a done with LY_OK: the worker has let
 * go of o then; a call that timed out may still be writing into it.
 */
static struct enrol_op *
enrol_op_move(struct enrol_op *o)
{
	struct enrol_op *n = malloc(sizeof(*n));

	if (n == NULL)
		return NULL;
	*n = *o;
	memset(&n->op, 0, sizeof(n->op));
	memset(o, 0, sizeof(*o));
	o->res = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	return n;
}

static void
get_old_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct enrol_op *o = ctx;
	struct ly_agent_api *api = agent_api_op_end(&o->op);

	if (api == NULL) {
		ly_rpc_call_finish(o->call, LY_RPC_UNAVAILABLE, "server stopping");
		return;
	}
	if (st != LY_OK) {
		log_error("agent %s: %s", o->res.agent_id, err->msg);
		agent_api_reply_finish(o->call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		return;
	}
	struct enrol_op *n = enrol_op_move(o);
	if (n == NULL) {
		agent_api_reply_finish(o->call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	admitted(api, n);
}

/* Starts an enrolment of the admitted agent `res` (moved out of it): its record before, on the worker. */
static void
attest_done(struct ly_agent_api *api, struct ly_rpc_call *call, struct ly_attest_result *res, const uint8_t *csr,
    size_t csr_len, const char *csr_id, bool from_ticket, time_t now)
{
	struct enrol_op *o = enrol_op_new(call, csr, csr_len, csr_id, now);
	struct ly_error e;

	if (o == NULL) {
		agent_api_reply_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	o->from_ticket = from_ticket;
	o->res = *res;
	*res = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	if (agent_api_op_submit(api, &o->op, get_old_work, get_old_done, enrol_release, &e) != LY_OK) {
		log_error("agent %s: %s", o->res.agent_id, e.msg);
		agent_api_reply_finish(call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		enrol_release(o);
	}
}

/* ---- k8s_psat on the thread pool ------------------------------------------------------------- */

static void
psat_work_free(struct agent_api_psat_work *pw)
{
	if (pw->token != NULL) {
		ly_free_secret_str(pw->token);
		pw->token = NULL;
	}
	ly_buf_free(&pw->csr);
	ly_attest_result_cleanup(&pw->result);
	free(pw);
}

static void
psat_run(uv_work_t *req)
{
	struct agent_api_psat_work *pw = req->data;

	pw->rc = ly_attest_k8s_psat(pw->cfg, pw->cluster, pw->token, pw->now, &pw->result, &pw->err);
	ly_free_secret_str(pw->token);
	pw->token = NULL;
	/* libuv's pool threads live until exit: release OpenSSL's per-thread
	 * state (error queue, DRBGs) now rather than never; it is made again
	 * on the next use, and attestations are rare. */
	OPENSSL_thread_stop();
}

static void
psat_after(uv_work_t *req, int status)
{
	struct agent_api_psat_work *pw = req->data;
	struct ly_agent_api *api = pw->api;

	if (api != NULL) {
		ly_queue_remove(&pw->link);
		api->n_psat--;
	}
	if (status != 0 || api == NULL || api->stopped) {
		ly_rpc_call_finish(pw->call, LY_RPC_UNAVAILABLE, "server stopping");
	} else if (pw->rc != LY_OK) {
		log_info("k8s_psat attestation refused: %s", pw->err.msg);
		agent_api_reply_metric(api, MX_ATTEST_REFUSED, "k8s_psat", 1);
		agent_api_reply_finish(pw->call, attest_code(pw->rc),
		    pw->rc == LY_E_IO ? "attestation unavailable, retry later" : "attestation refused",
		    pw->rc == LY_E_IO ? NULL : pw->err.msg);
	} else {
		attest_done(api, pw->call, &pw->result, pw->csr.data, pw->csr.len, pw->has_csr_id ? pw->csr_id : NULL,
		    false, ly_server_now());
	}
	if (api != NULL)
		agent_api_reply_metric(api, MX_ATTEST_SECONDS, "k8s_psat", (double)(uv_hrtime() - pw->started_ns) / 1e9);
	psat_work_free(pw);
}

static void
psat_start(struct ly_agent_api *api, struct ly_rpc_call *call, const struct ly_agentapi_attest_request *rq, time_t now)
{
	struct agent_api_psat_work *pw = NULL;
	struct ly_error e;

	if (api->srv->psat == NULL) {
		agent_api_reply_finish(call, LY_RPC_FAILED_PRECONDITION, "k8s_psat attestation is not enabled", NULL);
		return;
	}
	if (ly_agentapi_psat_check(rq, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		return;
	}
	if (api->n_psat >= LY_AGENTAPI_PSAT_INFLIGHT_MAX) {
		agent_api_reply_finish(call, LY_RPC_UNAVAILABLE, "too many attestations in progress, retry later", NULL);
		return;
	}
	if ((pw = calloc(1, sizeof(*pw))) == NULL || (pw->token = strdup(rq->token)) == NULL ||
	    (rq->csr_len > 0 && ly_buf_set(&pw->csr, rq->csr, rq->csr_len, NULL) != LY_OK)) {
		if (pw != NULL)
			psat_work_free(pw);
		agent_api_reply_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	ly_queue_init(&pw->link);
	pw->req.data = pw;
	pw->api = api;
	pw->call = call;
	pw->cfg = api->srv->psat;
	/* Within LY_K8S_CLUSTER_NAME_MAX: ly_agentapi_psat_check. */
	memcpy(pw->cluster, rq->cluster, strlen(rq->cluster) + 1);
	if (rq->csr_id != NULL) {
		pw->has_csr_id = true;
		memcpy(pw->csr_id, rq->csr_id, strlen(rq->csr_id) + 1);
	}
	pw->now = now;
	pw->started_ns = uv_hrtime();
	pw->result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	int uvrc = uv_queue_work(api->srv->loop, &pw->req, psat_run, psat_after);
	if (uvrc != 0) {
		log_error("k8s_psat: cannot queue the attestation: %s", uv_strerror(uvrc));
		psat_work_free(pw);
		agent_api_reply_finish(call, LY_RPC_UNAVAILABLE, "attestation unavailable, retry later", NULL);
		return;
	}
	ly_queue_insert_head(&api->psat, &pw->link);
	api->n_psat++;
}

/* ---- AttestAgent ------------------------------------------------------------------------------- */

static void
attest_x509pop(struct ly_agent_api *api, struct ly_rpc_call *call, const struct ly_agentapi_attest_request *rq,
    time_t now)
{
	struct ly_attest_result res = LY_ATTEST_RESULT_INIT;
	struct ly_agentapi_x509pop pop;
	uint8_t nonce[LY_X509POP_NONCE_LEN];
	struct ly_error e;
	ly_status rc;

	if (api->srv->x509pop == NULL) {
		agent_api_reply_finish(call, LY_RPC_FAILED_PRECONDITION, "x509pop attestation is not enabled", NULL);
		return;
	}
	if ((rc = ly_agentapi_x509pop_check(rq, &pop, &e)) != LY_OK) {
		agent_api_reply_finish(call, rc == LY_E_CRYPTO ? LY_RPC_INTERNAL : LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		return;
	}
	if (!pop.proof) {
		/* Step 1: a challenge (the chain is checked first: no round trip for a bad one). */
		rc = ly_attest_x509pop_challenge(api->srv->x509pop, rq->chain, rq->chain_len, now, nonce, &e);
		if (rc != LY_OK) {
			log_info("x509pop attestation refused: %s", e.msg);
			agent_api_reply_metric(api, MX_ATTEST_REFUSED, "x509pop", 1);
			agent_api_reply_finish(call, attest_code(rc), "attestation refused", e.msg);
			return;
		}
		if ((rc = agent_api_pending_add_challenge(api, pop.leaf_hash, nonce, now, &e)) != LY_OK) {
			agent_api_reply_finish(call, LY_RPC_UNAVAILABLE, e.msg, NULL);
			return;
		}
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.challenge_nonce.data = nonce;
		resp.challenge_nonce.len = sizeof(nonce);
		agent_api_reply_send(call, &resp.base, false);
		return;
	}
	/* Step 2: the proof. */
	if (!agent_api_pending_take_challenge(api, pop.leaf_hash, rq->nonce, now)) {
		agent_api_reply_finish(call, LY_RPC_PERMISSION_DENIED, "x509pop: unknown or expired challenge, ask for a new one", NULL);
		return;
	}
	rc = ly_attest_x509pop_verify(api->srv->x509pop, rq->chain, rq->chain_len, rq->nonce, rq->signature,
	    rq->signature_len, now, &res, &e);
	if (rc != LY_OK) {
		log_info("x509pop attestation refused: %s", e.msg);
		agent_api_reply_metric(api, MX_ATTEST_REFUSED, "x509pop", 1);
		agent_api_reply_finish(call, attest_code(rc), "attestation refused", e.msg);
		return;
	}
	attest_done(api, call, &res, rq->csr, rq->csr_len, rq->csr_id, false, now);
	ly_attest_result_cleanup(&res);
}

/* join_token on the worker: the token used up (attest.h), then the agent's record before. */
static ly_status
join_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct enrol_op *o = ctx;

	o->attest_rc = ly_attest_join_token(ds, o->td, o->token, o->now, o->has_key ? o->key_sha256 : NULL, &o->res,
	    &o->again, &o->attest_err);
	ly_free_secret_str(o->token);
	o->token = NULL;
	if (o->attest_rc == LY_E_IO) /* the datastore failed, not the token */
		return ly_error_set(err, LY_E_IO, "%s", o->attest_err.msg);
	if (o->attest_rc != LY_OK)
		return LY_OK;
	return get_old(ds, o, err);
}

static void
join_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct enrol_op *o = ctx;
	struct ly_agent_api *api = agent_api_op_end(&o->op);

	if (api == NULL) {
		ly_rpc_call_finish(o->call, LY_RPC_UNAVAILABLE, "server stopping");
		return;
	}
	agent_api_reply_metric(api, MX_ATTEST_SECONDS, "join_token", (double)(uv_hrtime() - o->t0_ns) / 1e9);
	if (st != LY_OK) {
		log_info("join_token attestation failed: %s", err->msg);
		agent_api_reply_finish(o->call, LY_RPC_UNAVAILABLE, "attestation unavailable, retry later", NULL);
		return;
	}
	if (o->attest_rc != LY_OK) {
		/* The message names the rule, never the token (attest.h). */
		log_info("join_token attestation refused: %s", o->attest_err.msg);
		agent_api_reply_metric(api, MX_ATTEST_REFUSED, "join_token", 1);
		agent_api_reply_finish(o->call, attest_code(o->attest_rc), "attestation refused", o->attest_err.msg);
		return;
	}
	if (o->again)
		log_info("join_token: agent %s admitted again: the token's use is retried by the key that used it "
			 "(the first answer was lost)", o->res.agent_id);
	struct enrol_op *n = enrol_op_move(o);
	if (n == NULL) {
		agent_api_reply_finish(o->call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	admitted(api, n);
}

static void
attest_join_token(struct ly_agent_api *api, struct ly_rpc_call *call, const struct ly_agentapi_attest_request *rq,
    time_t now)
{
	struct enrol_op *o = NULL;
	struct ly_error e;

	if (!api->srv->cfg.join_token_enabled) {
		agent_api_reply_finish(call, LY_RPC_FAILED_PRECONDITION, "join_token attestation is not enabled", NULL);
		return;
	}
	/* The token's syntax at once (no datastore call for a malformed one). */
	if (ly_datastore_token_check(rq->token, &e) != LY_OK) {
		log_info("join_token attestation refused: %s", e.msg);
		agent_api_reply_metric(api, MX_ATTEST_REFUSED, "join_token", 1);
		agent_api_reply_finish(call, attest_code(e.code), "attestation refused", e.msg);
		return;
	}
	if ((o = enrol_op_new(call, rq->csr, rq->csr_len, rq->csr_id, now)) == NULL ||
	    (o->token = strdup(rq->token)) == NULL) {
		if (o != NULL)
			enrol_release(o);
		agent_api_reply_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	(void)snprintf(o->td, sizeof(o->td), "%s", api->srv->cfg.trust_domain);
	if (rq->has_csr_key) {
		_Static_assert(sizeof(o->key_sha256) == LY_JOIN_TOKEN_KEY_LEN, "the key digest the datastore keeps");
		memcpy(o->key_sha256, rq->csr_key_sha256, sizeof(o->key_sha256));
		o->has_key = true;
	}
	if (agent_api_op_submit(api, &o->op, join_work, join_done, enrol_release, &e) != LY_OK) {
		log_info("join_token attestation not started: %s", e.msg);
		agent_api_reply_finish(call, LY_RPC_UNAVAILABLE, "attestation unavailable, retry later", NULL);
		enrol_release(o);
	}
}

static void
attest_ticket(struct ly_agent_api *api, struct ly_rpc_call *call, const struct ly_agentapi_attest_request *rq,
    time_t now)
{
	struct ly_attest_result res = LY_ATTEST_RESULT_INIT;
	struct ly_error e;

	if (ly_agentapi_ticket_check(rq, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		return;
	}
	if (!agent_api_pending_take_ticket(api, rq->ticket, now, &res)) {
		agent_api_reply_finish(call, LY_RPC_PERMISSION_DENIED, "unknown or expired ticket: attest again", NULL);
		return;
	}
	attest_done(api, call, &res, rq->csr, rq->csr_len, rq->csr_id, true, now);
	ly_attest_result_cleanup(&res);
}

void
agent_api_enrol_attest(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);
	struct ly_agentapi_attest_request rq;
	struct ly_error e;
	time_t now = ly_server_now();

	if (!agent_api_reply_serving(api, call, true))
		return;
	/* Decoded and checked (the CSR before anything is used up: agentapi_msg.h). */
	if (ly_agentapi_attest_decode(req, len, &rq, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		return;
	}
	/* Per source IP (agent_api_limit.c); a ticket only finishes an attestation already counted. */
	if (rq.kind != LY_AGENTAPI_TICKET && !agent_api_limit_attest(api, call)) {
		ly_agentapi_attest_cleanup(&rq);
		return;
	}
	uint64_t t0 = uv_hrtime();
	switch (rq.kind) {
	case LY_AGENTAPI_JOIN_TOKEN:
		attest_join_token(api, call, &rq, now); /* its time: join_done */
		break;
	case LY_AGENTAPI_X509POP:
		attest_x509pop(api, call, &rq, now);
		agent_api_reply_metric(api, MX_ATTEST_SECONDS, "x509pop", (double)(uv_hrtime() - t0) / 1e9);
		break;
	case LY_AGENTAPI_K8S_PSAT:
		psat_start(api, call, &rq, now);
		break;
	case LY_AGENTAPI_TICKET:
		attest_ticket(api, call, &rq, now);
		break;
	}
	/* Tokens are secrets: wiped before they are freed. */
	ly_agentapi_attest_cleanup(&rq);
}

/* ---- RenewAgent --------------------------------------------------------------------------------- */

static void
renew_authed(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    struct agent_api_caller *c, time_t now)
{
	struct ly_agentapi_renew_request rq;
	struct enrol_op *o = NULL;
	struct ly_error e;

	if (ly_agentapi_renew_decode(req, len, &rq, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		return;
	}
	if ((o = enrol_op_new(call, rq.csr, rq.csr_len, NULL, now)) == NULL ||
	    enrol_take_identity(o, c->rec->spiffe_id, c->rec->attestation_type, c->rec->selectors, c->rec->n_selectors,
		&e) != LY_OK) {
		if (o != NULL)
			enrol_release(o);
		agent_api_reply_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		goto out;
	}
	o->renewal = true;
	o->old = c->rec; /* taken */
	c->rec = NULL;
	enrol(api, o);
out:
	ly_agentapi_renew_cleanup(&rq);
}

void
agent_api_enrol_renew(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);

	if (!agent_api_reply_serving(api, call, true))
		return;
	agent_api_auth_then(api, call, req, len, ly_server_now(), renew_authed);
}
