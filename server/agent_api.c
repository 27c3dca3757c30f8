/*
 * agent_api.c: the Agent service (proto/agent.proto, lanyard.agent.v1) on
 * the server's TCP+TLS listener: node attestation, the agents' own SVIDs,
 * the entry watch, workload X.509-SVIDs and JWT-SVIDs, the bundle.
 * docs/agent-api.md is the protocol's description; this comment is the
 * implementation's.
 *
 * Requests are decoded and checked by server/agentapi_msg.c (pure, fuzzed
 * as it ships) before a handler touches any state; handlers decide. The
 * module is split along its seams behind agent_api_internal.h (the entry
 * replica, pending attestations, watchers, caller authentication,
 * enrolment); this file keeps the state, its timers and the public API.
 *
 * Everything runs on the loop thread (server.h), handlers included. The
 * blocking steps run elsewhere and are continued on the loop: k8s_psat's
 * TokenReview on uv_queue_work, every datastore call on the datastore's
 * worker (datastore_async.h; agent_api_op.c keeps the list of them, which
 * ly_agent_api_free detaches).
 *
 * While the datastore does not answer, the agent API keeps signing from
 * what it holds: the entry replica (left as it was), and the records of
 * the agents it has read (agent_api_auth.c: used without a read for
 * KNOWN_FRESH_MS when they name the presented SVID, and at any age while
 * the datastore is unreachable). What needs the store (attestation, an
 * agent's own renewal, an agent never read) fails UNAVAILABLE.
 *
 * State kept here, all bounded:
 *  - an in-memory copy of every registration entry (sorted by ID) and an
 *    authz index over it (authz.h), brought up to date from the
 *    datastore's change log when its change hook says so (datastore.h)
 *    (next loop iteration) and every POLL_TICKS seconds anyway (a store
 *    shared with another server, a missed notification);
 *  - the open watch streams (struct watcher), at most LY_AGENTAPI_WATCHERS_MAX and
 *    WATCHERS_PER_AGENT per agent (a newer watch replaces the oldest);
 *  - pending attestations (LY_AGENTAPI_PENDING_MAX): x509pop challenges (at most
 *    PENDING_PER_LEAF per leaf certificate) and enrolment tickets, each
 *    single use and valid PENDING_TTL seconds;
 *  - the previous SVID serial of each agent that renewed, until that
 *    SVID expires (connections opened with it stay usable meanwhile);
 *  - k8s_psat attestations in flight (LY_AGENTAPI_PSAT_INFLIGHT_MAX).
 *
 * Authentication after enrolment: gRPC verified the client certificate
 * against the listener's client roots (the bundle's X.509 roots;
 * server_tls.c rotates them with the bundle). rpc/ exposes only the verified leaf, so
 * each call re-checks that leaf against the present, not the handshake's
 * past: X.509-SVID leaf rules (lib/x509svid), the SPIFFE ID gRPC read, our
 * trust domain, the validity window now (a connection outlives the
 * certificate it was opened with), then the agent's record (a known one or
 * the datastore's, above): present (not evicted), not banned, and the
 * serial the record holds (or the previous one, for an agent that just
 * renewed). Serials are 128 random bits our CA
 * chose and recorded, so the serial check binds the call to the exact
 * SVID we issued to that agent.
 *
 * Secrets: join tokens and service-account tokens are wiped from the
 * unpacked request before it is freed and never logged; JWT-SVID replies
 * are sent with LY_RPC_WIPE; tickets and nonces are compared with
 * CRYPTO_memcmp.
 */
#include "server/agent_api_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "lib/caps.h"
#include "lib/log.h"
#include "lib/pbview.h"
#include "lib/queue.h"
#include "lib/spiffeid.h"
#include "rpc/uvtimer.h"
#include "server/bundle_pb.h"
#include "server/ca.h"

#define METHOD(name) "/lanyard.agent.v1.Agent/" name

/* ---- counts (server.h: the metrics' gauges) ---- */

void
ly_agent_api_counts(const struct ly_agent_api *api, size_t *watchers, size_t *entries)
{
	*watchers = api != NULL ? api->n_watchers : 0;
	*entries = api != NULL ? api->n_entries : 0;
}

/* ---- protobuf views of our objects ---------------------------------------------------- */

/* Entries as proto messages: server/entry_pb.h. */

/* ---- BatchNewX509SVID ------------------------------------------------------------------------------ */

/* Per-item messages (protobuf-c wants char *). */
static char msg_entry_id_malformed[] = "entry_id malformed";
static char msg_not_authorized[] = "entry not authorized for this agent";
static char msg_csr_size[] = "csr required, within its size cap";
static char msg_entry_id_unreadable[] = "entry SPIFFE ID unreadable";
static char msg_rate_limited[] = "rate limit: x509_signing over its rate for this agent; retry later";
static char msg_reserved_id[] = "entry SPIFFE ID is in Lanyard's reserved namespace: not issued";

static void
batch_authed(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    struct agent_api_caller *cp, time_t now)
{
	struct ly_agentapi_batch_request rq = { NULL, 0, NULL };
	Lanyard__Agent__V1__X509SVIDResult *results = NULL, **rptrs = NULL;
	struct ly_ca_sign_req *reqs = NULL;
	struct ly_ca_sign_res *res = NULL;
	struct ly_spiffe_id *ids = NULL;
	size_t *map = NULL, k = 0, signed_ok = 0;
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	const struct agent_api_caller *c = cp;
	struct ly_error e;
	ly_status rc;

	if ((rc = ly_agentapi_batch_decode(req, len, &rq, &e)) != LY_OK) {
		agent_api_reply_finish(call, rc == LY_E_NOMEM ? LY_RPC_RESOURCE_EXHAUSTED : LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		goto out;
	}
	struct ly_authz_agent agent = { c->rec->spiffe_id, c->rec->selectors, c->rec->n_selectors };
	if (agent_api_replica_ensure(api, &e) != LY_OK || ly_authz_authorized(api->index, &agent, &set, &e) != LY_OK) {
		log_error("batch of %s: %s", c->rec->spiffe_id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "entries unavailable, retry later");
		goto out;
	}
	size_t n = rq.n_params;
	results = calloc(n, sizeof(*results));
	rptrs = calloc(n, sizeof(*rptrs));
	reqs = calloc(n, sizeof(*reqs));
	res = calloc(n, sizeof(*res));
	ids = calloc(n, sizeof(*ids));
	map = calloc(n, sizeof(*map));
	if (results == NULL || rptrs == NULL || reqs == NULL || res == NULL || ids == NULL || map == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct ly_agentapi_x509_param *p = &rq.params[i];
		Lanyard__Agent__V1__X509SVIDResult *r = &results[i];
		const struct ly_entry *ent;
		lanyard__agent__v1__x509_svidresult__init(r);
		rptrs[i] = r;
		r->entry_id = ly_pbview_str(p->entry_id);
		if (!p->entry_id_ok) {
			r->entry_id = NULL; /* not echoed: it broke the rules */
			r->status_code = LY_RPC_INVALID_ARGUMENT;
			r->status_message = msg_entry_id_malformed;
		} else if ((ent = ly_authz_set_find(&set, p->entry_id)) == NULL) {
			/* The same answer for "absent" and "not yours": no probing of IDs. */
			r->status_code = LY_RPC_PERMISSION_DENIED;
			r->status_message = msg_not_authorized;
		} else if (!p->csr_size_ok) {
			r->status_code = LY_RPC_INVALID_ARGUMENT;
			r->status_message = msg_csr_size;
		} else if (ly_spiffe_id_parse_str(ent->spiffe_id, &ids[k], NULL) != LY_OK) {
			r->status_code = LY_RPC_INTERNAL;
			r->status_message = msg_entry_id_unreadable;
		} else if (ly_spiffe_id_check_use(&ids[k], LY_ID_GRANTED, NULL) != LY_OK) {
			/* An entry stored before the reserved-ID rule (lib/spiffeid.h). */
			r->status_code = LY_RPC_PERMISSION_DENIED;
			r->status_message = msg_reserved_id;
		} else {
			r->spiffe_id = ent->spiffe_id;
			reqs[k].csr_der = p->csr;
			reqs[k].csr_len = p->csr_len;
			reqs[k].id = &ids[k];
			reqs[k].dns = (const char *const *)ent->dns_names;
			reqs[k].ndns = ent->n_dns_names;
			reqs[k].ttl_or_0 = ly_svid_ttl_floored(ent->x509_svid_ttl, LY_X509_SVID_TTL_MIN);
			map[k++] = i;
		}
	}
	/*
	 * The agent's X.509 signing limit (agent_api_limit.c): the first
	 * `granted` CSRs are signed, the others refused one by one, and the
	 * whole call when none is granted.
	 */
	size_t granted = agent_api_limit_take(api, AGENT_API_LIMIT_X509, c->rec->spiffe_id, (uint32_t)k, true);
	if (granted == 0 && k > 0) {
		char details[192];
		agent_api_limit_details(AGENT_API_LIMIT_X509, api, details, sizeof(details));
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, details);
		goto out;
	}
	for (size_t j = granted; j < k; j++) {
		results[map[j]].spiffe_id = NULL;
		results[map[j]].status_code = LY_RPC_RESOURCE_EXHAUSTED;
		results[map[j]].status_message = msg_rate_limited;
	}
	k = granted;
	if (k > 0 && ly_ca_sign_batch(api->srv->ca, reqs, k, now, res, &e) != LY_OK)
		log_error("batch of %s: %s", c->rec->spiffe_id, e.msg);
	for (size_t j = 0; j < k; j++) {
		Lanyard__Agent__V1__X509SVIDResult *r = &results[map[j]];
		if (res[j].status == LY_OK) {
			r->status_code = 0;
			r->cert_chain.data = res[j].chain.data;
			r->cert_chain.len = res[j].chain.len;
			r->expires_at = (int64_t)res[j].expires_at;
			signed_ok++;
		} else {
			r->status_code = (int32_t)agent_api_reply_sign_code(res[j].status);
			r->status_message = res[j].err.msg;
		}
	}
	log_debug("batch of %s: %zu requests, %zu signed", c->rec->spiffe_id, n, signed_ok);
	agent_api_reply_metric(api, MX_X509_WORKLOAD, NULL, (double)signed_ok);
	Lanyard__Agent__V1__BatchNewX509SVIDResponse resp;
	lanyard__agent__v1__batch_new_x509_svidresponse__init(&resp);
	resp.n_results = n;
	resp.results = rptrs;
	agent_api_reply_send(call, &resp.base, false);
out:
	if (res != NULL)
		ly_ca_sign_res_cleanup(res, k);
	free(res);
	free(reqs);
	free(ids);
	free(map);
	free(results);
	free(rptrs);
	ly_authz_set_cleanup(&set);
	ly_agentapi_batch_cleanup(&rq);
}

static void
h_batch_new_x509_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);

	if (!agent_api_reply_serving(api, call, true))
		return;
	agent_api_auth_then(api, call, req, len, ly_server_now(), batch_authed);
}

/* ---- NewJWTSVID ------------------------------------------------------------------------------------ */

static void
jwt_authed(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    struct agent_api_caller *cp, time_t now)
{
	struct ly_agentapi_jwt_request rq = { NULL, NULL, 0, NULL };
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	const struct ly_entry *ent;
	struct ly_spiffe_id sub;
	const struct agent_api_caller *c = cp;
	struct ly_error e;
	char *token = NULL;
	time_t exp = 0;
	ly_status rc;

	if (ly_agentapi_jwt_decode(req, len, &rq, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		goto out;
	}
	if (agent_api_limit_take(api, AGENT_API_LIMIT_JWT, c->rec->spiffe_id, 1, false) != 1) {
		char details[192];
		agent_api_limit_details(AGENT_API_LIMIT_JWT, api, details, sizeof(details));
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, details);
		goto out;
	}
	struct ly_authz_agent agent = { c->rec->spiffe_id, c->rec->selectors, c->rec->n_selectors };
	if (agent_api_replica_ensure(api, &e) != LY_OK || ly_authz_authorized(api->index, &agent, &set, &e) != LY_OK) {
		log_error("JWT-SVID for %s: %s", c->rec->spiffe_id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "entries unavailable, retry later");
		goto out;
	}
	if ((ent = ly_authz_set_find(&set, rq.entry_id)) == NULL) {
		ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, "entry not authorized for this agent");
		goto out;
	}
	if (ly_spiffe_id_parse_str(ent->spiffe_id, &sub, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INTERNAL, "entry SPIFFE ID", e.msg);
		goto out;
	}
	if (ly_spiffe_id_check_use(&sub, LY_ID_GRANTED, NULL) != LY_OK) {
		ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, msg_reserved_id);
		goto out;
	}
	rc = ly_ca_mint_jwt_svid(api->srv->ca, &sub, rq.audience, rq.n_audience,
	    ly_svid_ttl_floored(ent->jwt_svid_ttl, LY_JWT_SVID_TTL_MIN), now, &token, &exp, &e);
	if (rc != LY_OK) {
		if (agent_api_reply_sign_code(rc) != LY_RPC_INVALID_ARGUMENT)
			log_error("JWT-SVID for %s: %s", ent->spiffe_id, e.msg);
		agent_api_reply_finish(call, agent_api_reply_sign_code(rc), "JWT-SVID refused", e.msg);
		goto out;
	}
	Lanyard__Agent__V1__NewJWTSVIDResponse resp;
	lanyard__agent__v1__new_jwtsvidresponse__init(&resp);
	resp.token = token;
	resp.issued_at = (int64_t)now;
	resp.expires_at = (int64_t)exp;
	log_debug("JWT-SVID for %s (entry %s, agent %s) until %lld", ent->spiffe_id, ent->entry_id, c->rec->spiffe_id,
	    (long long)exp);
	agent_api_reply_metric(api, MX_JWT, NULL, 1);
	agent_api_reply_send(call, &resp.base, true);
out:
	ly_free_secret_str(token);
	ly_authz_set_cleanup(&set);
	ly_agentapi_jwt_cleanup(&rq);
}

static void
h_new_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);

	if (!agent_api_reply_serving(api, call, true))
		return;
	agent_api_auth_then(api, call, req, len, ly_server_now(), jwt_authed);
}

/* ---- GetBundle ----------------------------------------------------------------------------------------- */

static void
bundle_authed(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    struct agent_api_caller *c, time_t now)
{
	struct ly_bundle_pb pbb;
	struct ly_error e;

	(void)c;
	(void)now;
	if (ly_agentapi_bundle_decode(req, len, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
	} else if (ly_bundle_pb_make(ly_server_bundle(api->srv), &pbb, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INTERNAL, "bundle", e.msg);
	} else {
		agent_api_reply_send(call, &pbb.msg.base, false);
		ly_bundle_pb_cleanup(&pbb);
	}
}

static void
h_get_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);

	if (!agent_api_reply_serving(api, call, true))
		return;
	agent_api_auth_then(api, call, req, len, ly_server_now(), bundle_authed);
}

/* ---- GetFederatedBundles (SPEC §9: the copy and the sequence are agent_api_fed.c's) ---------------------- */

/*
 * The bundles of the trust domains the caller's authorized entries federate
 * with, and nothing else (least privilege: an agent learns no trust domain
 * its workloads do not need).
 */
static void
fed_get_authed(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    struct agent_api_caller *c, time_t now)
{
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	struct ly_bundle_pb *pbs = NULL;
	Lanyard__Agent__V1__Bundle **ptrs = NULL;
	const char **tds = NULL;
	size_t n_tds = 0, n = 0;
	struct ly_error e;

	(void)now;
	if (ly_agentapi_fed_bundles_decode(req, len, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		goto out;
	}
	struct ly_authz_agent agent = { c->rec->spiffe_id, c->rec->selectors, c->rec->n_selectors };
	if (agent_api_replica_ensure(api, &e) != LY_OK || agent_api_replica_fed_ensure(api, &e) != LY_OK ||
	    ly_authz_authorized(api->index, &agent, &set, &e) != LY_OK ||
	    agent_api_fed_tds(&set, &tds, &n_tds, &e) != LY_OK) {
		log_error("federated bundles for %s: %s", c->rec->spiffe_id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "federated bundles unavailable, retry later");
		goto out;
	}
	pbs = calloc(n_tds + 1, sizeof(*pbs));
	ptrs = calloc(n_tds + 1, sizeof(*ptrs));
	if (pbs == NULL || ptrs == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_tds; i++) {
		const struct ly_ds_fed_bundle *b = agent_api_fed_find(api, tds[i]);
		if (b == NULL)
			continue; /* deleted since: the next update says so */
		if (ly_bundle_pb_make(b->bundle, &pbs[n], &e) != LY_OK) {
			agent_api_reply_finish(call, LY_RPC_INTERNAL, "federated bundle", e.msg);
			goto out;
		}
		ptrs[n] = &pbs[n].msg;
		n++;
	}
	Lanyard__Agent__V1__FederatedBundles resp;
	lanyard__agent__v1__federated_bundles__init(&resp);
	resp.n_bundles = n;
	resp.bundles = ptrs;
	resp.sequence = agent_api_fed_sequence(api, &set);
	log_debug("federated bundles for %s: %zu, sequence=%llu", c->rec->spiffe_id, n,
	    (unsigned long long)resp.sequence);
	agent_api_reply_send(call, &resp.base, false);
out:
	for (size_t i = 0; pbs != NULL && i < n; i++)
		ly_bundle_pb_cleanup(&pbs[i]);
	free(pbs);
	free(ptrs);
	free(tds);
	ly_authz_set_cleanup(&set);
}

void
agent_api_fed_get(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);

	if (!agent_api_reply_serving(api, call, false))
		return;
	agent_api_auth_then(api, call, req, len, ly_server_now(), fed_get_authed);
}

/* ---- timers ------------------------------------------------------------------------------------------------ */

static void on_refresh(uv_timer_t *t);

/* api->refreshed: the end of a refresh of the replica (agent_api_replica.c). */
static void
on_refreshed(struct ly_agent_api *api, ly_status rc, bool changed, const struct ly_error *err)
{
	if (rc == LY_OK && changed)
		agent_api_watch_send_all(api, false);
	if (rc == LY_OK && api->refresh_failing) {
		log_info("entries refreshed again");
		api->refresh_failing_logged = false;
	}
	api->refresh_failing = rc != LY_OK;
	if (rc != LY_OK) {
		/* Once per outage at warn: the datastore's own line says why (datastore_async.c). */
		if (!api->refresh_failing_logged)
			log_warn("entries not refreshed, retrying every %d ms; the SVIDs of the %zu entries held keep "
			    "being signed: %s", REFRESH_RETRY_MS, api->n_entries, err->msg);
		else
			log_debug("entries not refreshed, retrying in %d ms: %s", REFRESH_RETRY_MS, err->msg);
		api->refresh_failing_logged = true;
		if (api->refresh_timer != NULL)
			ly_uvtimer_arm(api->refresh_timer, on_refresh, REFRESH_RETRY_MS);
	}
}

static void
on_refresh(uv_timer_t *t)
{
	struct ly_agent_api *api = t->data;

	if (api != NULL)
		(void)agent_api_replica_refresh_now(api);
}

static void
on_sweep(uv_timer_t *t)
{
	struct ly_agent_api *api = t->data;
	struct ly_queue *q, *tmp;

	if (api == NULL || api->stopped)
		return;
	time_t now = ly_server_now();
	agent_api_pending_sweep(api, now);
	agent_api_auth_prev_sweep(api, now);
	LY_QUEUE_FOREACH_SAFE(q, tmp, &api->watchers) {
		struct agent_api_watcher *w = LY_QUEUE_DATA(q, struct agent_api_watcher, link);
		if (w->svid_expires <= now)
			agent_api_watch_end(w, LY_RPC_UNAUTHENTICATED, "agent SVID expired: reconnect with a renewed one");
	}
	if (++api->sweep_ticks >= POLL_TICKS) {
		api->sweep_ticks = 0;
		if (api->loaded)
			(void)agent_api_replica_refresh_now(api);
	}
}

/* ---- the public API (server.h) ---------------------------------------------------------------------------- */

static const struct ly_rpc_method agent_methods[] = {
	{ METHOD("AttestAgent"), LY_RPC_UNARY, agent_api_enrol_attest },
	{ METHOD("RenewAgent"), LY_RPC_UNARY, agent_api_enrol_renew },
	{ METHOD("WatchEntries"), LY_RPC_SERVER_STREAM, agent_api_watch_open },
	{ METHOD("BatchNewX509SVID"), LY_RPC_UNARY, h_batch_new_x509_svid },
	{ METHOD("NewJWTSVID"), LY_RPC_UNARY, h_new_jwt_svid },
	{ METHOD("GetBundle"), LY_RPC_UNARY, h_get_bundle },
	{ METHOD("GetFederatedBundles"), LY_RPC_UNARY, agent_api_fed_get },
};

const struct ly_rpc_method *
ly_agent_api_methods(size_t *n)
{
	if (n != NULL)
		*n = sizeof(agent_methods) / sizeof(agent_methods[0]);
	return agent_methods;
}

static ly_datastore_change_fn on_store_change;

ly_status
ly_agent_api_new(struct ly_server *srv, struct ly_agent_api **out, struct ly_error *err)
{
	struct ly_agent_api *api = NULL;
	ly_status rc;

	if (srv == NULL || srv->loop == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent API: missing server, loop or output");
	*out = NULL;
	if ((api = calloc(1, sizeof(*api))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "agent API: out of memory");
	api->srv = srv;
	api->refreshed = on_refreshed;
	api->fed_revision = -1;
	ly_queue_init(&api->watchers);
	ly_queue_init(&api->prev);
	ly_queue_init(&api->psat);
	ly_queue_init(&api->ops);
	for (size_t i = 0; i < LY_AGENTAPI_PENDING_MAX; i++)
		api->pending[i].result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	if ((rc = ly_uvtimer_new(srv->loop, api, true, &api->refresh_timer, err)) != LY_OK ||
	    (rc = ly_uvtimer_new(srv->loop, api, true, &api->sweep_timer, err)) != LY_OK) {
		ly_agent_api_free(api);
		return ly_error_wrap(err, rc, "agent API: timers");
	}
	if ((rc = agent_api_limit_init(api, srv->cfg.ratelimit_attestation, srv->cfg.ratelimit_signing, err)) != LY_OK) {
		ly_agent_api_free(api);
		return ly_error_wrap(err, rc, "agent API");
	}
	if (srv->dsa != NULL && (rc = ly_dsa_on_change(srv->dsa, on_store_change, api, err)) != LY_OK) {
		ly_agent_api_free(api);
		return ly_error_wrap(err, rc, "agent API");
	}
	uv_timer_start(api->sweep_timer, on_sweep, SWEEP_MS, SWEEP_MS);
	/* The replica loads in the background; calls before it is loaded are told to retry. */
	(void)agent_api_replica_refresh_now(api);
	*out = api;
	return LY_OK;
}

/* An entry was created, updated or deleted: watchers get their deltas. */
static void
entries_changed(struct ly_agent_api *api)
{
	if (api == NULL || api->stopped || api->refresh_timer == NULL)
		return;
	/*
	 * Coalesced: one refresh for a burst of changes, on the next loop
	 * iteration when the server is idle. A refresh re-indexes every entry
	 * and diffs every watcher's set (~5 ms at 10,000 entries), so under a
	 * stream of changes the next one waits twice the last one's cost after
	 * it ended: the loop spends at most a third of its time refreshing,
	 * and entry creation no longer slows with the table (1,099/s for the
	 * first 1,000 entries, 172/s at 10,000 before). Revocation stays
	 * within a few milliseconds (docs/benchmarks.md).
	 */
	uint64_t now = uv_hrtime(), ready = api->refresh_end_ns + 2 * api->refresh_cost_ns;
	uint64_t delay_ms = now >= ready ? 0 : (ready - now + 999999) / 1000000;
	if (uv_is_active((uv_handle_t *)api->refresh_timer) && uv_timer_get_due_in(api->refresh_timer) <= delay_ms)
		return; /* already due no later */
	ly_uvtimer_arm(api->refresh_timer, on_refresh, delay_ms);
}

void
ly_agent_api_bundle_changed(struct ly_agent_api *api)
{
	if (api == NULL || api->stopped)
		return;
	/* Every update carries bundle_sequence: the agents re-fetch with GetBundle. */
	agent_api_watch_send_all(api, true);
}

/* An agent was evicted or banned: its open streams end (PERMISSION_DENIED), its SVID is no longer honoured. */
static void
agent_removed(struct ly_agent_api *api, const char *agent_id, bool banned)
{
	struct ly_queue *q, *tmp;
	const char *why = banned ? "agent is banned" : "agent was evicted: it must attest again";

	if (api == NULL || agent_id == NULL || api->stopped)
		return;
	agent_api_auth_prev_remove(api, agent_id);
	agent_api_pending_drop_agent(api, agent_id);
	agent_api_known_drop(api, agent_id);
	LY_QUEUE_FOREACH_SAFE(q, tmp, &api->watchers) {
		struct agent_api_watcher *w = LY_QUEUE_DATA(q, struct agent_api_watcher, link);
		if (strcmp(w->agent_id, agent_id) == 0) {
			log_info("watch of %s ended: %s", agent_id, why);
			agent_api_watch_end(w, LY_RPC_PERMISSION_DENIED, why);
		}
	}
}

/*
 * The datastore's change hook (datastore.h): what an admin change (or,
 * later, another server) committed reaches the watchers from here.
 */
static void
on_store_change(void *arg, const struct ly_datastore_change *change)
{
	struct ly_agent_api *api = arg;

	switch (change->kind) {
	case LY_DATASTORE_ENTRY_CREATED:
	case LY_DATASTORE_ENTRY_UPDATED:
	case LY_DATASTORE_ENTRY_DELETED:
		entries_changed(api);
		break;
	case LY_DATASTORE_AGENT_EVICTED:
	case LY_DATASTORE_AGENT_BANNED:
		agent_removed(api, change->agent_id, change->kind == LY_DATASTORE_AGENT_BANNED);
		break;
	case LY_DATASTORE_BUNDLE_CHANGED:
		ly_agent_api_bundle_changed(api);
		break;
	case LY_DATASTORE_FED_BUNDLE_CHANGED:
	case LY_DATASTORE_FED_BUNDLE_DELETED:
		/* The refresh re-reads the bundles (and the entries a delete in
		 * mode dissociate or delete changed); watchers whose
		 * federated_sequence moved get an update. */
		api->fed_stale = true;
		entries_changed(api);
		break;
	case LY_DATASTORE_FED_REL_CHANGED:
		break; /* the fetcher's business; agents see bundles only */
	}
}

static int
cmp_agent_id(const void *key, const void *elem)
{
	const struct ly_ds_agent *const *a = elem;
	return strcmp(key, (*a)->spiffe_id);
}

static int
cmp_agent_ptr(const void *x, const void *y)
{
	const struct ly_ds_agent *const *a = x, *const *b = y;
	return strcmp((*a)->spiffe_id, (*b)->spiffe_id);
}

/* The agents' re-check: every agent read on the datastore's worker, then applied on the loop. */
struct recheck_op {
	struct agent_api_op op;
	struct ly_ds_agent_list agents;
};

static ly_status
recheck_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct recheck_op *r = ctx;

	return ly_datastore_agent_list(ds, &r->agents, err);
}

static void
recheck_release(void *ctx)
{
	struct recheck_op *r = ctx;

	ly_ds_agent_list_cleanup(&r->agents);
	free(r);
}

static void
recheck_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct recheck_op *r = ctx;
	struct ly_agent_api *api = agent_api_op_end(&r->op);
	struct ly_ds_agent_list *agents = &r->agents;
	struct ly_queue *q;

	if (api == NULL)
		return;
	if (st != LY_OK) {
		log_warn("agents not re-checked: %s", err->msg);
		return;
	}
	/* The list's order is the database's byte order; strcmp's is what bsearch needs here. */
	if (agents->n > 1)
		qsort(agents->items, agents->n, sizeof(*agents->items), cmp_agent_ptr);
	/* Ending an agent's streams frees watchers under the walk: start it again after each. */
	for (bool again = true; again;) {
		again = false;
		LY_QUEUE_FOREACH(q, &api->watchers) {
			struct agent_api_watcher *w = LY_QUEUE_DATA(q, struct agent_api_watcher, link);
			struct ly_ds_agent **hit = agents->n == 0 ? NULL
			    : bsearch(w->agent_id, agents->items, agents->n, sizeof(*agents->items), cmp_agent_id);
			if (hit != NULL && !(*hit)->banned)
				continue;
			char *id = strdup(w->agent_id); /* the watcher goes with its stream */
			if (id == NULL) {
				log_warn("agents not re-checked: out of memory");
				return;
			}
			agent_removed(api, id, hit != NULL);
			free(id);
			again = true;
			break;
		}
	}
}

ly_status
ly_agent_api_recheck_agents(struct ly_agent_api *api, struct ly_error *err)
{
	struct recheck_op *r;
	ly_status rc;

	if (api == NULL || api->stopped || api->srv->dsa == NULL || api->n_watchers == 0)
		return LY_OK;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "agent recheck: out of memory");
	r->agents = (struct ly_ds_agent_list)LY_DS_AGENT_LIST_INIT;
	if ((rc = agent_api_op_submit(api, &r->op, recheck_work, recheck_done, recheck_release, err)) != LY_OK)
		recheck_release(r);
	return rc;
}

void
ly_agent_api_stop(struct ly_agent_api *api)
{
	if (api == NULL || api->stopped)
		return;
	api->stopped = true;
	struct ly_queue *q;
	while ((q = ly_queue_head(&api->watchers)) != NULL)
		agent_api_watch_end(LY_QUEUE_DATA(q, struct agent_api_watcher, link), LY_RPC_UNAVAILABLE,
		    "server shutting down");
	/* Queued attestations are cancelled (their calls end in psat_after);
	 * running ones finish on their own (at most the attestor's timeouts). */
	LY_QUEUE_FOREACH(q, &api->psat)
		(void)uv_cancel((uv_req_t *)&LY_QUEUE_DATA(q, struct agent_api_psat_work, link)->req);
	ly_uvtimer_close(&api->refresh_timer);
	ly_uvtimer_close(&api->sweep_timer);
}

void
ly_agent_api_free(struct ly_agent_api *api)
{
	if (api == NULL)
		return;
	ly_agent_api_stop(api);
	if (api->srv->dsa != NULL)
		ly_dsa_off_change(api->srv->dsa, on_store_change, api);
	/* Work still in flight outlives us: it ends its call by itself. */
	agent_api_op_detach_all(api);
	struct ly_queue *q, *tmp;
	LY_QUEUE_FOREACH_SAFE(q, tmp, &api->psat) {
		LY_QUEUE_DATA(q, struct agent_api_psat_work, link)->api = NULL;
		ly_queue_remove(q);
	}
	for (size_t i = 0; i < LY_AGENTAPI_PENDING_MAX; i++)
		agent_api_pending_clear(&api->pending[i]);
	while ((q = ly_queue_head(&api->prev)) != NULL)
		agent_api_auth_prev_remove(api, LY_QUEUE_DATA(q, struct agent_api_prev_serial, link)->agent_id);
	agent_api_replica_clear(api);
	agent_api_known_clear(api);
	agent_api_limit_free(api);
	agent_api_fed_clear(api);
	free(api);
}
