/*
 * fuzz_agentapi_server.c: the Agent service's requests (proto/agent.proto)
 * as server/agent_api.c decodes and checks them before any state is
 * touched. The first byte picks the method: 0 AttestAgent, 1 RenewAgent,
 * 2 WatchEntries, 3 BatchNewX509SVID, 4 NewJWTSVID, 5 GetBundle.
 * The handlers' checks are inline and mixed with the loop's state (the
 * datastore, pending challenges, the CA), so this target runs protobuf-c's
 * unpack and the pure library parsers the handlers call on what came in:
 * the CSR (lib/csr.h), the x509pop chain split (lib/der.h), entry IDs
 * (lib/entry.h), NewJWTSVID's strict unpack and audience check
 * (lib/pbstrict.h, lib/text.h), with the same size caps in the same order. The CA's own
 * CSR parser is fuzz_ca_csr.c; x509pop's proof is fuzz_x509pop.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/pbstrict.h"
#include "lib/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* agent_api.c attest_csr / RenewAgent / BatchNewX509SVID: a CSR within its cap, parsed strictly. */
static void
csr(const ProtobufCBinaryData *c)
{
	struct ly_csr parsed;

	if (c->len == 0 || c->len > LY_CSR_DER_MAX || ly_csr_parse(c->data, c->len, &parsed, NULL) != LY_OK)
		return;
	if (parsed.key == NULL || parsed.id.id[0] == '\0')
		abort();
	ly_csr_cleanup(&parsed);
}

static void
attest(const uint8_t *d, size_t n)
{
	Lanyard__Agent__V1__AttestAgentRequest *m = lanyard__agent__v1__attest_agent_request__unpack(NULL, n, d);
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t count = 0;

	if (m == NULL)
		return;
	csr(&m->csr);
	if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP &&
	    m->x509pop->certificate_chain.len > 0 && m->x509pop->certificate_chain.len <= LY_CHAIN_DER_MAX &&
	    ly_der_split(m->x509pop->certificate_chain.data, m->x509pop->certificate_chain.len, LY_CHAIN_CERTS_MAX,
		LY_CHAIN_DER_MAX, spans, &count, NULL) == LY_OK &&
	    (count == 0 || spans[0].off + spans[0].len > m->x509pop->certificate_chain.len))
		abort();
	if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN &&
	    m->join_token->token == NULL)
		abort();
	lanyard__agent__v1__attest_agent_request__free_unpacked(m, NULL);
}

static void
batch(const uint8_t *d, size_t n)
{
	Lanyard__Agent__V1__BatchNewX509SVIDRequest *m = lanyard__agent__v1__batch_new_x509_svidrequest__unpack(NULL, n, d);

	for (size_t i = 0; m != NULL && m->n_params <= LY_CA_BATCH_MAX && i < m->n_params; i++) {
		if (ly_entry_id_check(m->params[i]->entry_id, NULL) == LY_OK)
			csr(&m->params[i]->csr);
	}
	if (m != NULL)
		lanyard__agent__v1__batch_new_x509_svidrequest__free_unpacked(m, NULL);
}

/* agent_api.c NewJWTSVID: the strict unpack (lib/pbstrict.h), the entry ID, each audience (lib/text.h). */
static void
jwt(const uint8_t *d, size_t n)
{
	ProtobufCMessage *pm = NULL;
	size_t total = 0;

	if (ly_pb_unpack_strict(&lanyard__agent__v1__new_jwtsvidrequest__descriptor, d, n, LY_RPC_MSG_MAX, NULL, &pm,
	    NULL) != LY_OK)
		return;
	Lanyard__Agent__V1__NewJWTSVIDRequest *m = (Lanyard__Agent__V1__NewJWTSVIDRequest *)(void *)pm;
	if (ly_entry_id_check(m->entry_id, NULL) == LY_OK && m->n_audience > 0 && m->n_audience <= LY_JWT_AUDIENCES_MAX)
		for (size_t i = 0; i < m->n_audience; i++) {
			if (ly_text_check("audience", m->audience[i], LY_JWT_AUDIENCE_MAX, NULL) != LY_OK)
				break;
			total += strlen(m->audience[i]);
		}
	(void)total;
	lanyard__agent__v1__new_jwtsvidrequest__free_unpacked(m, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
	switch (data[0] % 6) {
	case 0:
		attest(d, n);
		break;
	case 1: {
		Lanyard__Agent__V1__RenewAgentRequest *m = lanyard__agent__v1__renew_agent_request__unpack(NULL, n, d);
		if (m != NULL) {
			csr(&m->csr);
			lanyard__agent__v1__renew_agent_request__free_unpacked(m, NULL);
		}
		break;
	}
	case 2: {
		Lanyard__Agent__V1__WatchEntriesRequest *m = lanyard__agent__v1__watch_entries_request__unpack(NULL, n, d);
		if (m != NULL)
			lanyard__agent__v1__watch_entries_request__free_unpacked(m, NULL);
		break;
	}
	case 3:
		batch(d, n);
		break;
	case 4:
		jwt(d, n);
		break;
	default: {
		Lanyard__Agent__V1__GetBundleRequest *m = lanyard__agent__v1__get_bundle_request__unpack(NULL, n, d);
		if (m != NULL)
			lanyard__agent__v1__get_bundle_request__free_unpacked(m, NULL);
		break;
	}
	}
	return 0;
}
