/*
 * fuzz_agentapi_server.c: the Agent service's requests (proto/agent.proto)
 * through the checks server/agent_api.c ships (server/agentapi_msg.h),
 * in the handlers' order, before any state is touched. The first byte
 * picks the method: 0 AttestAgent, 1 RenewAgent, 2 WatchEntries, 3
 * BatchNewX509SVID, 4 NewJWTSVID, 5 GetBundle. What passes must keep the
 * module's promises (caps, NUL-free audiences, a CSR's agent ID). The CA's
 * own CSR parser is fuzz_ca_csr.c; x509pop's proof is fuzz_x509pop.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "lib/x509pop.h"
#include "server/agentapi_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
attest(const uint8_t *d, size_t n)
{
	struct ly_agentapi_attest_request rq;
	struct ly_agentapi_x509pop pop;

	if (ly_agentapi_attest_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (rq.csr_len > LY_CSR_DER_MAX || (rq.csr_len > 0) != (rq.csr_id != NULL) ||
	    (rq.csr_id != NULL && rq.csr_id[0] == '\0'))
		abort();
	switch (rq.kind) {
	case LY_AGENTAPI_X509POP:
		if (ly_agentapi_x509pop_check(&rq, &pop, NULL) == LY_OK &&
		    (rq.chain_len == 0 || rq.chain_len > LY_CHAIN_DER_MAX ||
		    (pop.proof && rq.nonce_len != LY_X509POP_NONCE_LEN)))
			abort();
		break;
	case LY_AGENTAPI_K8S_PSAT:
		if (ly_agentapi_psat_check(&rq, NULL) == LY_OK &&
		    (strlen(rq.cluster) > LY_AGENTAPI_PSAT_CLUSTER_MAX || strlen(rq.token) > LY_K8S_TOKEN_MAX))
			abort();
		break;
	case LY_AGENTAPI_TICKET:
		if (ly_agentapi_ticket_check(&rq, NULL) == LY_OK && rq.ticket_len != LY_AGENTAPI_TICKET_LEN)
			abort();
		break;
	case LY_AGENTAPI_JOIN_TOKEN:
		if (rq.token == NULL)
			abort();
		break;
	}
	ly_agentapi_attest_cleanup(&rq);
}

static void
batch(const uint8_t *d, size_t n)
{
	struct ly_agentapi_batch_request rq;

	if (ly_agentapi_batch_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (rq.n_params == 0 || rq.n_params > LY_CA_BATCH_MAX)
		abort();
	for (size_t i = 0; i < rq.n_params; i++) {
		if (rq.params[i].csr_size_ok && (rq.params[i].csr_len == 0 || rq.params[i].csr_len > LY_CSR_DER_MAX))
			abort();
	}
	ly_agentapi_batch_cleanup(&rq);
}

static void
jwt(const uint8_t *d, size_t n)
{
	struct ly_agentapi_jwt_request rq;
	size_t total = 0;

	if (ly_agentapi_jwt_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (rq.n_audience == 0 || rq.n_audience > LY_JWT_AUDIENCES_MAX)
		abort();
	for (size_t i = 0; i < rq.n_audience; i++)
		total += strlen(rq.audience[i]);
	if (total > LY_JWT_MAX)
		abort();
	ly_agentapi_jwt_cleanup(&rq);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_agentapi_renew_request renew;
	int64_t since = 0;

	if (size < 1)
		return 0;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
	switch (data[0] % 6) {
	case 0:
		attest(d, n);
		break;
	case 1:
		if (ly_agentapi_renew_decode(d, n, &renew, NULL) == LY_OK) {
			if (renew.csr_len == 0 || renew.csr_len > LY_CSR_DER_MAX)
				abort();
			ly_agentapi_renew_cleanup(&renew);
		}
		break;
	case 2:
		if (ly_agentapi_watch_decode(d, n, &since, NULL) == LY_OK && since < 0)
			abort();
		break;
	case 3:
		batch(d, n);
		break;
	case 4:
		jwt(d, n);
		break;
	default:
		if (ly_agentapi_bundle_decode(d, n, NULL) != LY_OK)
			break;
		break;
	}
	return 0;
}
