/*
 * agent_api_reply.c: what the agent API's handlers answer with
 * (agent_api_internal.h): one-line status details, the status code of a
 * refused signing request, packed replies under the message cap, the CA
 * bundle's sequence, and the metrics that count what was answered.
 */
#include "server/agent_api_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/caps.h"
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
	char details[LY_GRPC_DETAILS_MAX];

	/* Precisions bound the output, so it is cut rather than overflowing. */
	if (cause != NULL && cause[0] != '\0')
		(void)snprintf(details, sizeof(details), "%.*s: %.*s", 120, what, LY_GRPC_DETAILS_MAX - 124, cause);
	else
		(void)snprintf(details, sizeof(details), "%.*s", LY_GRPC_DETAILS_MAX - 1, what);
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

	if (n > LY_RPC_RESPONSE_MAX) {
		log_warn("%s: response of %zu bytes over the %d-byte cap", ly_rpc_call_method(call), n,
		    LY_RPC_RESPONSE_MAX);
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

uint64_t
agent_api_reply_bundle_sequence(const struct ly_agent_api *api)
{
	const struct ly_bundle *b = ly_server_bundle(api->srv);
	return b != NULL ? ly_bundle_sequence(b) : 0;
}

bool
agent_api_reply_serving(const struct ly_agent_api *api, struct ly_rpc_call *call, bool need_ca)
{
	if (api == NULL || api->stopped || api->srv->dsa == NULL || (need_ca && api->srv->ca == NULL)) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "server not serving");
		return false;
	}
	return true;
}
