/*
 * agent_api_reply.c: what the agent API's handlers answer with
 * (agent_api_internal.h): one-line status details, the status code of a
 * refused signing request, packed replies under the message cap, the CA's
 * bundle as a proto Bundle, and the metrics that count what was answered.
 */
#include "server/agent_api_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "lib/log.h"
#include "server/ca.h"

struct ly_agent_api *
agent_api_reply_api(void *arg)
{
	struct ly_server *srv = arg;
	return srv != NULL ? srv->agent_api : NULL;
}

/* Adds to one of the server's metrics; nothing without the health listener. */
void
agent_api_reply_metric(const struct ly_agent_api *api, enum agent_api_metric which, const char *attestor, double v)
{
	const struct ly_server *srv = api != NULL ? api->srv : NULL;
	const char *labels[2] = { attestor, NULL };
	if (srv == NULL || srv->metrics == NULL)
		return;
	switch (which) {
	case MX_X509_WORKLOAD:
		labels[0] = "workload";
		ly_server_metric_add(srv->metrics->x509_issued, labels, v);
		break;
	case MX_X509_AGENT:
		labels[0] = "agent";
		ly_server_metric_add(srv->metrics->x509_issued, labels, v);
		break;
	case MX_JWT:
		ly_server_metric_add(srv->metrics->jwt_issued, NULL, v);
		break;
	case MX_ATTEST_OK:
	case MX_ATTEST_REFUSED:
		labels[1] = which == MX_ATTEST_OK ? "ok" : "refused";
		ly_server_metric_add(srv->metrics->attestations, labels, v);
		break;
	case MX_ATTEST_SECONDS:
		ly_server_metric_add(srv->metrics->attest_seconds, labels, v);
		break;
	}
}

/* Ends a call with `code` and "what: cause" (one line, capped). */
void
agent_api_reply_finish(struct ly_rpc_call *call, enum ly_rpc_code code, const char *what, const char *cause)
{
	char details[DETAILS_MAX];

	/* Precisions bound the output, so it is cut rather than overflowing. */
	if (cause != NULL && cause[0] != '\0')
		(void)snprintf(details, sizeof(details), "%.*s: %.*s", 120, what, DETAILS_MAX - 124, cause);
	else
		(void)snprintf(details, sizeof(details), "%.*s", DETAILS_MAX - 1, what);
	ly_rpc_call_finish(call, code, details);
}

/* What a refused signing request is: the CSR's fault, or ours (no valid CA). */
enum ly_rpc_code
agent_api_reply_sign_code(ly_status rc)
{
	switch (rc) {
	case LY_E_INVALID:
	case LY_E_LIMIT:
	case LY_E_UNSUPPORTED:
	case LY_E_UNTRUSTED:
		return LY_RPC_INVALID_ARGUMENT;
	case LY_E_EXPIRED:
	case LY_E_IO:
		return LY_RPC_UNAVAILABLE;
	case LY_E_NOMEM:
		return LY_RPC_RESOURCE_EXHAUSTED;
	default:
		return LY_RPC_INTERNAL;
	}
}

/* Packs `m` and sends it as the call's reply (LY_RPC_WIPE when `secret`). */
void
agent_api_reply_send(struct ly_rpc_call *call, const ProtobufCMessage *m, bool secret)
{
	struct ly_error e;
	size_t n = protobuf_c_message_get_packed_size(m);

	if (n > LY_RPC_MSG_MAX) {
		log_warn("%s: response of %zu bytes over the %d-byte cap", ly_rpc_call_method(call), n,
		    LY_RPC_MSG_MAX);
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "response over the message size cap");
		return;
	}
	uint8_t *buf = malloc(n > 0 ? n : 1);
	if (buf == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	size_t packed = protobuf_c_message_pack(m, buf);
	if (ly_rpc_call_reply(call, buf, packed, secret ? LY_RPC_WIPE : 0, &e) != LY_OK)
		log_warn("%s: reply: %s", ly_rpc_call_method(call), e.msg);
	if (secret)
		OPENSSL_cleanse(buf, n);
	free(buf);
}

void
agent_api_reply_bundle_cleanup(struct agent_api_reply_bundle *p)
{
	for (size_t i = 0; p->jwt != NULL && i < p->n_jwt; i++) {
		free(p->jwt[i].kid);
		OPENSSL_free(p->jwt[i].public_key.data);
	}
	free(p->x509);
	free(p->jwt);
	free(p->jwt_ptrs);
	memset(p, 0, sizeof(*p));
}

ly_status
agent_api_reply_bundle_make(const struct ly_bundle *b, struct agent_api_reply_bundle *p, struct ly_error *err)
{
	size_t nx = ly_bundle_x509_authority_count(b), nj = ly_bundle_jwt_authority_count(b);
	ly_status rc = LY_OK;

	memset(p, 0, sizeof(*p));
	lanyard__agent__v1__bundle__init(&p->msg);
	(void)snprintf(p->td, sizeof(p->td), "%s", ly_bundle_trust_domain(b));
	p->x509 = calloc(nx + 1, sizeof(*p->x509));
	p->jwt = calloc(nj + 1, sizeof(*p->jwt));
	p->jwt_ptrs = calloc(nj + 1, sizeof(*p->jwt_ptrs));
	if (p->x509 == NULL || p->jwt == NULL || p->jwt_ptrs == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: out of memory");
		goto out;
	}
	for (size_t i = 0; i < nx; i++) {
		const struct ly_buf *der = ly_bundle_x509_authority(b, i);
		p->x509[i].data = der->data;
		p->x509[i].len = der->len;
	}
	for (size_t i = 0; i < nj; i++) {
		Lanyard__Agent__V1__JWTAuthority *j = &p->jwt[i];
		unsigned char *spki = NULL;
		lanyard__agent__v1__jwtauthority__init(j);
		p->n_jwt = i + 1;
		int len = i2d_PUBKEY(ly_bundle_jwt_authority_key(b, i), &spki);
		if (len <= 0) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "bundle: JWT authority %zu", i);
			goto out;
		}
		j->public_key.data = spki;
		j->public_key.len = (size_t)len;
		if ((j->kid = strdup(ly_bundle_jwt_authority_kid(b, i))) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "bundle: out of memory");
			goto out;
		}
		/* The bundle does not carry key expiry: 0 means "not said". */
		j->expires_at = 0;
		p->jwt_ptrs[i] = j;
	}
	p->msg.trust_domain = p->td;
	p->msg.n_x509_authorities = nx;
	p->msg.x509_authorities = p->x509;
	p->msg.n_jwt_authorities = nj;
	p->msg.jwt_authorities = p->jwt_ptrs;
	p->msg.sequence = ly_bundle_sequence(b);
	p->msg.refresh_hint = ly_bundle_refresh_hint(b) > INT64_MAX ? INT64_MAX : (int64_t)ly_bundle_refresh_hint(b);
out:
	if (rc != LY_OK)
		agent_api_reply_bundle_cleanup(p);
	return rc;
}

uint64_t
agent_api_reply_bundle_sequence(const struct ly_agent_api *api)
{
	const struct ly_bundle *b = api->srv->ca != NULL ? ly_ca_bundle(api->srv->ca) : NULL;
	return b != NULL ? ly_bundle_sequence(b) : 0;
}
