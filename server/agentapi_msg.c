/* agentapi_msg.c: see agentapi_msg.h. */
#include "server/agentapi_msg.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "agent.pb-c.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/pbstrict.h"
#include "lib/text.h"
#include "lib/x509pop.h"

/* A detail line "what: cause" stays under the 300 bytes the handlers send. */
#define WHAT_MAX 120
#define CAUSE_MAX 176

static ly_status
detail(struct ly_error *err, ly_status code, const char *what, const struct ly_error *cause)
{
	if (cause->msg[0] == '\0')
		return ly_error_set(err, code, "%.*s", WHAT_MAX, what);
	return ly_error_set(err, code, "%.*s: %.*s", WHAT_MAX, what, CAUSE_MAX, cause->msg);
}

static void
wipe_str(char *s)
{
	if (s != NULL)
		OPENSSL_cleanse(s, strlen(s));
}

/* ---- AttestAgent ---- */

void
ly_agentapi_attest_cleanup(struct ly_agentapi_attest_request *req)
{
	Lanyard__Agent__V1__AttestAgentRequest *m = req->msg;

	if (m != NULL) {
		/* Tokens and tickets are secrets: wipe protobuf-c's copies before they are freed. */
		if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN &&
		    m->join_token != NULL)
			wipe_str(m->join_token->token);
		if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_K8S_PSAT &&
		    m->k8s_psat != NULL)
			wipe_str(m->k8s_psat->token);
		if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_TICKET &&
		    m->ticket.data != NULL)
			OPENSSL_cleanse(m->ticket.data, m->ticket.len);
		lanyard__agent__v1__attest_agent_request__free_unpacked(m, NULL);
	}
	OPENSSL_cleanse(req, sizeof(*req));
}

/* The CSR of an AttestAgent request (when present): its URI SAN. */
static ly_status
attest_csr(struct ly_agentapi_attest_request *r, struct ly_error *err)
{
	struct ly_csr parsed;
	struct ly_error e;

	if (r->csr_len == 0)
		return LY_OK;
	if (r->csr_len > LY_CSR_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "CSR too large");
	ly_error_clear(&e);
	if (ly_csr_parse(r->csr, r->csr_len, &parsed, &e) != LY_OK)
		return detail(err, LY_E_INVALID, "CSR refused", &e);
	memcpy(r->csr_id_buf, parsed.id.id, strlen(parsed.id.id) + 1);
	r->csr_id = r->csr_id_buf;
	if (EVP_Digest(parsed.spki.data, parsed.spki.len, r->csr_key_sha256, NULL, EVP_sha256(), NULL) != 1) {
		ly_csr_cleanup(&parsed);
		return ly_error_openssl(err, LY_E_CRYPTO, "CSR key digest");
	}
	r->has_csr_key = true;
	ly_csr_cleanup(&parsed);
	return LY_OK;
}

ly_status
ly_agentapi_attest_decode(const uint8_t *data, size_t len, struct ly_agentapi_attest_request *out,
    struct ly_error *err)
{
	Lanyard__Agent__V1__AttestAgentRequest *m;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__agent__v1__attest_agent_request__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed AttestAgentRequest");
	out->msg = m;
	out->csr = m->csr.data;
	out->csr_len = m->csr.len;
	/* The CSR is checked before anything is used up (a join token, a challenge). */
	if ((rc = attest_csr(out, err)) != LY_OK)
		goto fail;
	switch (m->attestation_case) {
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN:
		out->kind = LY_AGENTAPI_JOIN_TOKEN;
		out->token = m->join_token->token;
		break;
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP:
		out->kind = LY_AGENTAPI_X509POP;
		out->chain = m->x509pop->certificate_chain.data;
		out->chain_len = m->x509pop->certificate_chain.len;
		out->nonce = m->x509pop->challenge_nonce.data;
		out->nonce_len = m->x509pop->challenge_nonce.len;
		out->signature = m->x509pop->challenge_signature.data;
		out->signature_len = m->x509pop->challenge_signature.len;
		break;
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_K8S_PSAT:
		out->kind = LY_AGENTAPI_K8S_PSAT;
		out->cluster = m->k8s_psat->cluster;
		out->token = m->k8s_psat->token;
		break;
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_TICKET:
		out->kind = LY_AGENTAPI_TICKET;
		out->ticket = m->ticket.data;
		out->ticket_len = m->ticket.len;
		break;
	default:
		rc = ly_error_set(err, LY_E_INVALID, "no attestation in the request");
		goto fail;
	}
	return LY_OK;
fail:
	ly_agentapi_attest_cleanup(out);
	return rc;
}

ly_status
ly_agentapi_x509pop_check(const struct ly_agentapi_attest_request *req, struct ly_agentapi_x509pop *out,
    struct ly_error *err)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t count = 0;
	struct ly_error e;

	memset(out, 0, sizeof(*out));
	if (req->kind != LY_AGENTAPI_X509POP)
		return ly_error_set(err, LY_E_INTERNAL, "x509pop: not an x509pop attestation");
	if (req->chain_len == 0 || req->chain_len > LY_CHAIN_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "x509pop: certificate chain required, within its size cap");
	ly_error_clear(&e);
	if (ly_der_split(req->chain, req->chain_len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &count, &e) != LY_OK)
		return detail(err, LY_E_INVALID, "x509pop: certificate chain", &e);
	if (count == 0)
		return ly_error_set(err, LY_E_INVALID, "x509pop: certificate chain");
	if (EVP_Digest(req->chain + spans[0].off, spans[0].len, out->leaf_hash, NULL, EVP_sha256(), NULL) != 1)
		return ly_error_set(err, LY_E_CRYPTO, "x509pop: digest");
	if (req->nonce_len == 0 && req->signature_len == 0)
		return LY_OK; /* step 1: asks for a challenge */
	if (req->nonce_len != LY_X509POP_NONCE_LEN || req->signature_len == 0 ||
	    req->signature_len > LY_X509POP_SIG_MAX)
		return ly_error_set(err, LY_E_INVALID, "x509pop: malformed challenge response");
	out->proof = true;
	return LY_OK;
}

ly_status
ly_agentapi_psat_check(const struct ly_agentapi_attest_request *req, struct ly_error *err)
{
	size_t clen = req->cluster != NULL ? strnlen(req->cluster, LY_K8S_CLUSTER_NAME_MAX + 1) : 0;
	size_t tlen = req->token != NULL ? strnlen(req->token, LY_K8S_TOKEN_MAX + 1) : 0;

	if (req->kind != LY_AGENTAPI_K8S_PSAT)
		return ly_error_set(err, LY_E_INTERNAL, "k8s_psat: not a k8s_psat attestation");
	if (clen == 0 || clen > LY_K8S_CLUSTER_NAME_MAX || tlen == 0 || tlen > LY_K8S_TOKEN_MAX)
		return ly_error_set(err, LY_E_INVALID, "k8s_psat: cluster and token required, within their size caps");
	return LY_OK;
}

ly_status
ly_agentapi_ticket_check(const struct ly_agentapi_attest_request *req, struct ly_error *err)
{
	if (req->kind != LY_AGENTAPI_TICKET)
		return ly_error_set(err, LY_E_INTERNAL, "ticket: not a ticket");
	if (req->ticket_len != LY_AGENTAPI_TICKET_LEN || req->csr_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "ticket: a ticket and a CSR for the agent ID required");
	return LY_OK;
}

/* ---- RenewAgent, WatchEntries, GetBundle ---- */

ly_status
ly_agentapi_renew_decode(const uint8_t *data, size_t len, struct ly_agentapi_renew_request *out,
    struct ly_error *err)
{
	Lanyard__Agent__V1__RenewAgentRequest *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__agent__v1__renew_agent_request__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed RenewAgentRequest");
	if (m->csr.len == 0 || m->csr.len > LY_CSR_DER_MAX) {
		lanyard__agent__v1__renew_agent_request__free_unpacked(m, NULL);
		return ly_error_set(err, LY_E_INVALID, "csr required, within its size cap");
	}
	out->csr = m->csr.data;
	out->csr_len = m->csr.len;
	out->msg = m;
	return LY_OK;
}

void
ly_agentapi_renew_cleanup(struct ly_agentapi_renew_request *req)
{
	if (req->msg != NULL)
		lanyard__agent__v1__renew_agent_request__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

ly_status
ly_agentapi_watch_decode(const uint8_t *data, size_t len, int64_t *since_revision, struct ly_error *err)
{
	Lanyard__Agent__V1__WatchEntriesRequest *m = lanyard__agent__v1__watch_entries_request__unpack(NULL, len, data);
	ly_status rc = LY_OK;

	*since_revision = 0;
	if (m == NULL || m->since_revision < 0)
		rc = ly_error_set(err, LY_E_INVALID, "malformed WatchEntriesRequest");
	else
		*since_revision = m->since_revision;
	if (m != NULL)
		lanyard__agent__v1__watch_entries_request__free_unpacked(m, NULL);
	return rc;
}

ly_status
ly_agentapi_bundle_decode(const uint8_t *data, size_t len, struct ly_error *err)
{
	Lanyard__Agent__V1__GetBundleRequest *m = lanyard__agent__v1__get_bundle_request__unpack(NULL, len, data);

	if (m == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed GetBundleRequest");
	lanyard__agent__v1__get_bundle_request__free_unpacked(m, NULL);
	return LY_OK;
}

ly_status
ly_agentapi_fed_bundles_decode(const uint8_t *data, size_t len, struct ly_error *err)
{
	Lanyard__Agent__V1__GetFederatedBundlesRequest *m =
	    lanyard__agent__v1__get_federated_bundles_request__unpack(NULL, len, data);

	if (m == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed GetFederatedBundlesRequest");
	lanyard__agent__v1__get_federated_bundles_request__free_unpacked(m, NULL);
	return LY_OK;
}

/* ---- BatchNewX509SVID ---- */

ly_status
ly_agentapi_batch_decode(const uint8_t *data, size_t len, struct ly_agentapi_batch_request *out,
    struct ly_error *err)
{
	Lanyard__Agent__V1__BatchNewX509SVIDRequest *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__agent__v1__batch_new_x509_svidrequest__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed BatchNewX509SVIDRequest");
	out->msg = m;
	if (m->n_params == 0 || m->n_params > LY_CA_BATCH_MAX) {
		ly_agentapi_batch_cleanup(out);
		return ly_error_set(err, LY_E_INVALID, "params: 1 to %d requests per batch", LY_CA_BATCH_MAX);
	}
	if ((out->params = calloc(m->n_params, sizeof(*out->params))) == NULL) {
		ly_agentapi_batch_cleanup(out);
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	}
	out->n_params = m->n_params;
	for (size_t i = 0; i < m->n_params; i++) {
		const Lanyard__Agent__V1__X509SVIDParams *p = m->params[i];
		struct ly_agentapi_x509_param *q = &out->params[i];
		q->entry_id = p->entry_id;
		q->entry_id_ok = ly_entry_id_check(p->entry_id, NULL) == LY_OK;
		q->csr = p->csr.data;
		q->csr_len = p->csr.len;
		q->csr_size_ok = p->csr.len > 0 && p->csr.len <= LY_CSR_DER_MAX;
	}
	return LY_OK;
}

void
ly_agentapi_batch_cleanup(struct ly_agentapi_batch_request *req)
{
	free(req->params);
	if (req->msg != NULL)
		lanyard__agent__v1__batch_new_x509_svidrequest__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

/* ---- NewJWTSVID ---- */

ly_status
ly_agentapi_jwt_decode(const uint8_t *data, size_t len, struct ly_agentapi_jwt_request *out, struct ly_error *err)
{
	Lanyard__Agent__V1__NewJWTSVIDRequest *m;
	ProtobufCMessage *pm = NULL;
	struct ly_error e;
	size_t total = 0;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	ly_error_clear(&e);
	/* Strict, as the Workload API: an audience with a NUL would be signed cut at the NUL. */
	if (ly_pb_unpack_strict(&lanyard__agent__v1__new_jwtsvidrequest__descriptor, data, len, LY_RPC_MSG_MAX, NULL,
	    &pm, &e) != LY_OK)
		return detail(err, LY_E_INVALID, "malformed NewJWTSVIDRequest", &e);
	m = (Lanyard__Agent__V1__NewJWTSVIDRequest *)(void *)pm;
	out->msg = m;
	if (ly_entry_id_check(m->entry_id, &e) != LY_OK) {
		rc = detail(err, LY_E_INVALID, "entry_id", &e);
		goto fail;
	}
	if (m->n_audience == 0 || m->n_audience > LY_JWT_AUDIENCES_MAX) {
		rc = ly_error_set(err, LY_E_INVALID, "audience: 1 to %d values", LY_JWT_AUDIENCES_MAX);
		goto fail;
	}
	for (size_t i = 0; i < m->n_audience; i++) {
		if (ly_text_check("audience", m->audience[i], LY_JWT_AUDIENCE_MAX, &e) != LY_OK) {
			rc = detail(err, LY_E_INVALID, "NewJWTSVIDRequest", &e);
			goto fail;
		}
		total += strlen(m->audience[i]);
	}
	if (total > LY_JWT_MAX) {
		rc = ly_error_set(err, LY_E_INVALID, "audience: too long for a JWT-SVID");
		goto fail;
	}
	out->entry_id = m->entry_id;
	out->audience = (const char *const *)m->audience;
	out->n_audience = m->n_audience;
	return LY_OK;
fail:
	ly_agentapi_jwt_cleanup(out);
	return rc;
}

void
ly_agentapi_jwt_cleanup(struct ly_agentapi_jwt_request *req)
{
	if (req->msg != NULL)
		lanyard__agent__v1__new_jwtsvidrequest__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}
