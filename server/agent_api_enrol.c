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
 * Signs an agent SVID from `csr` for `agent_id`, records the agent and
 * replies AgentSVID. `old` is the record before (renewal: its serial stays
 * acceptable until it expires; attestation: it no longer is).
 */
static void
enrol(struct ly_agent_api *api, struct ly_rpc_call *call, const char *agent_id, const char *type,
    const struct ly_selector *sels, size_t n_sels, const uint8_t *csr, size_t csr_len, const struct ly_ds_agent *old,
    bool renewal, time_t now)
{
	struct ly_spiffe_id sid;
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_bundle_pb pbb;
	struct ly_selector *sel_copy = NULL;
	char serial[LY_DS_AGENT_SERIAL_MAX + 1], type_buf[32];
	time_t exp = 0;
	struct ly_error e;
	ly_status rc;

	memset(&pbb, 0, sizeof(pbb));
	if (ly_spiffe_id_parse_str(agent_id, &sid, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INTERNAL, "agent ID", e.msg);
		return;
	}
	if ((rc = ly_ca_sign_agent_svid(api->srv->ca, csr, csr_len, &sid, 0, now, &chain, &exp, &e)) != LY_OK) {
		if (agent_api_reply_sign_code(rc) != LY_RPC_INVALID_ARGUMENT)
			log_error("agent %s: cannot sign its SVID: %s", agent_id, e.msg);
		agent_api_reply_finish(call, agent_api_reply_sign_code(rc), "CSR refused", e.msg);
		goto out;
	}
	if (agent_api_auth_chain_serial(&chain, serial, &e) != LY_OK) {
		log_error("agent %s: issued SVID unreadable: %s", agent_id, e.msg);
		agent_api_reply_finish(call, LY_RPC_INTERNAL, "issued SVID unreadable", NULL);
		goto out;
	}
	(void)snprintf(type_buf, sizeof(type_buf), "%s", type);
	if (ly_selectors_copy(sels, n_sels, &sel_copy, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		goto out;
	}
	struct ly_ds_agent rec = {
		.spiffe_id = sid.id,
		.attestation_type = type_buf,
		.serial_number = serial,
		.svid_expires_at = (int64_t)exp,
		.banned = false,
		.selectors = sel_copy,
		.n_selectors = n_sels,
	};
	if ((rc = ly_datastore_agent_upsert(api->srv->ds, &rec, &e)) != LY_OK) {
		log_error("agent %s: cannot record it: %s", agent_id, e.msg);
		agent_api_reply_finish(call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		goto out;
	}
	if (renewal && old != NULL)
		agent_api_auth_prev_set(api, agent_id, old->serial_number, (time_t)old->svid_expires_at, now);
	else
		agent_api_auth_prev_remove(api, agent_id);
	agent_api_watch_agent_updated(api, agent_id, serial, sels, n_sels, now);
	log_info("agent %s %s (%s): SVID serial %s valid until %lld", agent_id, renewal ? "renewed" : "attested",
	    type, serial, (long long)exp);
	agent_api_reply_metric(api, MX_X509_AGENT, NULL, 1);
	if (!renewal)
		agent_api_reply_metric(api, MX_ATTEST_OK, type_buf, 1);

	if (ly_bundle_pb_make(ly_server_bundle(api->srv), &pbb, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INTERNAL, "bundle", e.msg);
		goto out;
	}
	Lanyard__Agent__V1__AgentSVID svid;
	lanyard__agent__v1__agent_svid__init(&svid);
	svid.spiffe_id = sid.id;
	svid.cert_chain.data = chain.data;
	svid.cert_chain.len = chain.len;
	svid.expires_at = (int64_t)exp;
	svid.bundle = &pbb.msg;
	if (renewal) {
		agent_api_reply_send(call, &svid.base, false);
	} else {
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.svid = &svid;
		agent_api_reply_send(call, &resp.base, false);
	}
out:
	ly_selectors_free(sel_copy, n_sels);
	ly_bundle_pb_cleanup(&pbb);
	ly_buf_free(&chain);
}

/*
 * The agent was admitted (`res`): refuse a banned one, then either sign
 * its SVID (the CSR names its ID) or hand out a ticket. `csr_id` is the
 * CSR's URI SAN, NULL without a CSR.
 */
static void
attest_done(struct ly_agent_api *api, struct ly_rpc_call *call, struct ly_attest_result *res, const uint8_t *csr,
    size_t csr_len, const char *csr_id, bool from_ticket, time_t now)
{
	struct ly_ds_agent *old = NULL;
	struct ly_error e;
	ly_status rc;

	rc = ly_datastore_agent_get(api->srv->ds, res->agent_id, &old, &e);
	if (rc != LY_OK && rc != LY_E_NOT_FOUND) {
		log_error("agent %s: %s", res->agent_id, e.msg);
		agent_api_reply_finish(call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		goto out;
	}
	if (old != NULL && old->banned) {
		log_info("agent %s refused: banned", res->agent_id);
		agent_api_reply_finish(call, LY_RPC_PERMISSION_DENIED, "agent is banned", NULL);
		goto out;
	}
	if (csr_id == NULL || strcmp(csr_id, res->agent_id) != 0) {
		if (from_ticket) {
			agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, "CSR must name the agent ID", res->agent_id);
			goto out;
		}
		uint8_t ticket[TICKET_LEN];
		char id[LY_SPIFFE_ID_MAX + 1];
		(void)snprintf(id, sizeof(id), "%s", res->agent_id);
		if ((rc = agent_api_pending_add_ticket(api, res, now, ticket, &e)) != LY_OK) {
			agent_api_reply_finish(call, rc == LY_E_LIMIT ? LY_RPC_UNAVAILABLE : LY_RPC_INTERNAL, e.msg, NULL);
			goto out;
		}
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.agent_id = id;
		resp.ticket.data = ticket;
		resp.ticket.len = TICKET_LEN;
		log_info("agent %s admitted: ticket issued for its CSR", id);
		agent_api_reply_send(call, &resp.base, true);
		OPENSSL_cleanse(ticket, sizeof(ticket));
		goto out;
	}
	enrol(api, call, res->agent_id, res->type, res->selectors, res->n_selectors, csr, csr_len, old, false, now);
out:
	ly_ds_agent_free(old);
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

static void
attest_join_token(struct ly_agent_api *api, struct ly_rpc_call *call, const struct ly_agentapi_attest_request *rq,
    time_t now)
{
	struct ly_attest_result res = LY_ATTEST_RESULT_INIT;
	struct ly_error e;
	ly_status rc;

	if (!api->srv->cfg.join_token_enabled) {
		agent_api_reply_finish(call, LY_RPC_FAILED_PRECONDITION, "join_token attestation is not enabled", NULL);
		return;
	}
	rc = ly_attest_join_token(api->srv->ds, api->srv->cfg.trust_domain, rq->token, now, &res, &e);
	if (rc != LY_OK) {
		/* The message names the rule, never the token (attest.h). */
		log_info("join_token attestation refused: %s", e.msg);
		agent_api_reply_metric(api, MX_ATTEST_REFUSED, "join_token", 1);
		agent_api_reply_finish(call, attest_code(rc),
		    rc == LY_E_IO ? "attestation unavailable, retry later" : "attestation refused",
		    rc == LY_E_IO ? NULL : e.msg);
		return;
	}
	attest_done(api, call, &res, rq->csr, rq->csr_len, rq->csr_id, false, now);
	ly_attest_result_cleanup(&res);
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
	uint64_t t0 = uv_hrtime();
	switch (rq.kind) {
	case LY_AGENTAPI_JOIN_TOKEN:
		attest_join_token(api, call, &rq, now);
		agent_api_reply_metric(api, MX_ATTEST_SECONDS, "join_token", (double)(uv_hrtime() - t0) / 1e9);
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

void
agent_api_enrol_renew(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);
	struct ly_agentapi_renew_request rq;
	struct agent_api_caller c;
	struct ly_error e;
	time_t now = ly_server_now();

	if (!agent_api_reply_serving(api, call, true))
		return;
	if (!agent_api_auth_caller(api, call, now, &c))
		return;
	if (ly_agentapi_renew_decode(req, len, &rq, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
	} else {
		enrol(api, call, c.rec->spiffe_id, c.rec->attestation_type, c.rec->selectors, c.rec->n_selectors,
		    rq.csr, rq.csr_len, c.rec, true, now);
		ly_agentapi_renew_cleanup(&rq);
	}
	agent_api_auth_caller_cleanup(&c);
}
