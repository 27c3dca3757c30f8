/*
 * test_agentapi_msg.c: server/agentapi_msg.h, the Agent API's requests as
 * the server decodes and checks them. Each cap is tried at its limit and
 * one past it; wrong wire types and wrong oneof cases are refused; the
 * messages are the one-line details the handlers send.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "agent.pb-c.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/x509pop.h"
#include "server/agentapi_msg.h"
#include "testutil_x509.h"

/* Packs `m` into a malloc'ed buffer. */
static uint8_t *
pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(protobuf_c_message_pack(m, b), *len);
	return b;
}

static void
make_csr(const char *id, struct ly_buf *out)
{
	struct ly_spiffe_id sid;
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	assert_int_equal(ly_spiffe_id_parse_str(id, &sid, NULL), LY_OK);
	assert_int_equal(ly_csr_build(k, &sid, NULL, 0, out, NULL), LY_OK);
	EVP_PKEY_free(k);
}

/* An AttestAgentRequest with `att` set by the caller's callback, and a CSR. */
static ly_status
attest(Lanyard__Agent__V1__AttestAgentRequest *m, struct ly_agentapi_attest_request *out, struct ly_error *err)
{
	size_t len;
	uint8_t *b = pack(&m->base, &len);
	ly_status rc = ly_agentapi_attest_decode(b, len, out, err);
	free(b);
	return rc;
}

static void
test_attest_malformed_and_empty(void **state)
{
	static const uint8_t junk[] = { 0x22, 0x05, 0x01 }; /* csr: 5 bytes announced, 1 sent */
	static const uint8_t wrong_type[] = { 0x20, 0x01 }; /* csr (bytes) sent as a varint */
	struct ly_agentapi_attest_request rq;
	struct ly_error e;
	Lanyard__Agent__V1__AttestAgentRequest m;

	(void)state;
	assert_int_equal(ly_agentapi_attest_decode(junk, sizeof(junk), &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "malformed AttestAgentRequest");
	assert_int_equal(ly_agentapi_attest_decode(wrong_type, sizeof(wrong_type), &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "malformed AttestAgentRequest");
	lanyard__agent__v1__attest_agent_request__init(&m);
	assert_int_equal(attest(&m, &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "no attestation in the request");
	ly_agentapi_attest_cleanup(&rq); /* safe on a failed decode */
}

static void
test_attest_csr(void **state)
{
	struct ly_agentapi_attest_request rq;
	struct ly_error e;
	struct ly_buf csr = LY_BUF_INIT;
	Lanyard__Agent__V1__AttestAgentRequest m;
	Lanyard__Agent__V1__JoinTokenAttestation jt;
	uint8_t *big = calloc(1, LY_CSR_DER_MAX + 1);

	(void)state;
	assert_non_null(big);
	lanyard__agent__v1__attest_agent_request__init(&m);
	lanyard__agent__v1__join_token_attestation__init(&jt);
	jt.token = (char[]){ "secret-token" };
	m.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN;
	m.join_token = &jt;
	/* No CSR: fine, no ID. */
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(rq.kind, LY_AGENTAPI_JOIN_TOKEN);
	assert_null(rq.csr_id);
	assert_string_equal(rq.token, "secret-token");
	ly_agentapi_attest_cleanup(&rq);
	/* One byte over the cap: refused before it is parsed (and before the attestation is looked at). */
	m.csr.data = big;
	m.csr.len = LY_CSR_DER_MAX + 1;
	assert_int_equal(attest(&m, &rq, &e), LY_E_LIMIT);
	assert_string_equal(e.msg, "CSR too large");
	m.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION__NOT_SET;
	assert_int_equal(attest(&m, &rq, &e), LY_E_LIMIT);
	/* Within the cap but not a CSR. */
	m.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN;
	m.csr.len = 100;
	assert_int_equal(attest(&m, &rq, &e), LY_E_INVALID);
	assert_true(strncmp(e.msg, "CSR refused: ", 13) == 0);
	assert_true(strlen(e.msg) < 300);
	/* A real one: its ID is read. */
	make_csr("spiffe://example.org/lanyard/agent/n1", &csr);
	m.csr.data = csr.data;
	m.csr.len = csr.len;
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_string_equal(rq.csr_id, "spiffe://example.org/lanyard/agent/n1");
	assert_int_equal(rq.csr_len, csr.len);
	ly_agentapi_attest_cleanup(&rq);
	ly_buf_free(&csr);
	free(big);
}

static void
test_attest_x509pop(void **state)
{
	struct ly_agentapi_attest_request rq;
	struct ly_agentapi_x509pop pop;
	struct ly_error e;
	struct ly_buf der = LY_BUF_INIT;
	Lanyard__Agent__V1__AttestAgentRequest m;
	Lanyard__Agent__V1__X509PopAttestation x;
	uint8_t nonce[LY_X509POP_NONCE_LEN + 1] = { 1 }, hash[32];
	uint8_t *sig = calloc(1, LY_X509POP_SIG_MAX + 1), *big = calloc(1, LY_CHAIN_DER_MAX + 1);
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct tu_spec spec = tu_leaf_spec("spiffe://example.org/node");
	X509 *leaf = tu_make(&spec, k, NULL, NULL);

	(void)state;
	assert_non_null(sig);
	assert_non_null(big);
	tu_der(leaf, &der);
	lanyard__agent__v1__attest_agent_request__init(&m);
	lanyard__agent__v1__x509_pop_attestation__init(&x);
	m.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP;
	m.x509pop = &x;

	/* No chain, a chain one byte over its cap, junk. */
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_x509pop_check(&rq, &pop, &e), LY_E_LIMIT);
	assert_string_equal(e.msg, "x509pop: certificate chain required, within its size cap");
	ly_agentapi_attest_cleanup(&rq);
	x.certificate_chain.data = big;
	x.certificate_chain.len = LY_CHAIN_DER_MAX + 1;
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_x509pop_check(&rq, &pop, &e), LY_E_LIMIT);
	ly_agentapi_attest_cleanup(&rq);
	x.certificate_chain.len = 64;
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_x509pop_check(&rq, &pop, &e), LY_E_INVALID);
	assert_true(strncmp(e.msg, "x509pop: certificate chain: ", 28) == 0);
	ly_agentapi_attest_cleanup(&rq);

	/* Step 1: a chain only; the leaf's hash is the first certificate's SHA-256. */
	x.certificate_chain.data = der.data;
	x.certificate_chain.len = der.len;
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_x509pop_check(&rq, &pop, &e), LY_OK);
	assert_false(pop.proof);
	assert_int_equal(EVP_Digest(der.data, der.len, hash, NULL, EVP_sha256(), NULL), 1);
	assert_memory_equal(pop.leaf_hash, hash, 32);
	ly_agentapi_attest_cleanup(&rq);

	/* Step 2: the nonce exactly LY_X509POP_NONCE_LEN, the signature 1..LY_X509POP_SIG_MAX. */
	static const struct {
		size_t nonce, sig;
		ly_status want;
	} cases[] = {
		{ LY_X509POP_NONCE_LEN, 1, LY_OK },
		{ LY_X509POP_NONCE_LEN, LY_X509POP_SIG_MAX, LY_OK },
		{ LY_X509POP_NONCE_LEN, LY_X509POP_SIG_MAX + 1, LY_E_INVALID },
		{ LY_X509POP_NONCE_LEN, 0, LY_E_INVALID },
		{ LY_X509POP_NONCE_LEN - 1, 64, LY_E_INVALID },
		{ LY_X509POP_NONCE_LEN + 1, 64, LY_E_INVALID },
		{ 0, 64, LY_E_INVALID },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		x.challenge_nonce.data = nonce;
		x.challenge_nonce.len = cases[i].nonce;
		x.challenge_signature.data = sig;
		x.challenge_signature.len = cases[i].sig;
		assert_int_equal(attest(&m, &rq, &e), LY_OK);
		assert_int_equal(ly_agentapi_x509pop_check(&rq, &pop, &e), cases[i].want);
		if (cases[i].want == LY_OK)
			assert_true(pop.proof);
		else
			assert_string_equal(e.msg, "x509pop: malformed challenge response");
		ly_agentapi_attest_cleanup(&rq);
	}
	/* Another attestation's check on it: a bug of the caller, said so. */
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_psat_check(&rq, &e), LY_E_INTERNAL);
	assert_int_equal(ly_agentapi_ticket_check(&rq, &e), LY_E_INTERNAL);
	ly_agentapi_attest_cleanup(&rq);

	X509_free(leaf);
	EVP_PKEY_free(k);
	ly_buf_free(&der);
	free(sig);
	free(big);
}

static void
test_attest_psat(void **state)
{
	struct ly_agentapi_attest_request rq;
	struct ly_agentapi_x509pop pop;
	struct ly_error e;
	Lanyard__Agent__V1__AttestAgentRequest m;
	Lanyard__Agent__V1__K8sPsatAttestation p;
	char *cluster = malloc(LY_AGENTAPI_PSAT_CLUSTER_MAX + 2), *token = malloc(LY_K8S_TOKEN_MAX + 2);

	(void)state;
	assert_non_null(cluster);
	assert_non_null(token);
	memset(cluster, 'c', LY_AGENTAPI_PSAT_CLUSTER_MAX + 1);
	memset(token, 't', LY_K8S_TOKEN_MAX + 1);
	lanyard__agent__v1__attest_agent_request__init(&m);
	lanyard__agent__v1__k8s_psat_attestation__init(&p);
	m.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_K8S_PSAT;
	m.k8s_psat = &p;
	static const struct {
		size_t cluster, token;
		ly_status want;
	} cases[] = {
		{ 1, 1, LY_OK },
		{ LY_AGENTAPI_PSAT_CLUSTER_MAX, LY_K8S_TOKEN_MAX, LY_OK },
		{ LY_AGENTAPI_PSAT_CLUSTER_MAX + 1, 1, LY_E_INVALID },
		{ 1, LY_K8S_TOKEN_MAX + 1, LY_E_INVALID },
		{ 0, 1, LY_E_INVALID },
		{ 1, 0, LY_E_INVALID },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cluster[cases[i].cluster] = '\0';
		token[cases[i].token] = '\0';
		p.cluster = cluster;
		p.token = token;
		assert_int_equal(attest(&m, &rq, &e), LY_OK);
		assert_int_equal(ly_agentapi_psat_check(&rq, &e), cases[i].want);
		if (cases[i].want != LY_OK)
			assert_string_equal(e.msg, "k8s_psat: cluster and token required, within their size caps");
		assert_int_equal(ly_agentapi_x509pop_check(&rq, &pop, &e), LY_E_INTERNAL);
		ly_agentapi_attest_cleanup(&rq);
		cluster[cases[i].cluster] = 'c';
		token[cases[i].token] = 't';
	}
	free(cluster);
	free(token);
}

static void
test_attest_ticket(void **state)
{
	struct ly_agentapi_attest_request rq;
	struct ly_error e;
	struct ly_buf csr = LY_BUF_INIT;
	Lanyard__Agent__V1__AttestAgentRequest m;
	uint8_t ticket[LY_AGENTAPI_TICKET_LEN + 1];

	(void)state;
	memset(ticket, 7, sizeof(ticket));
	make_csr("spiffe://example.org/lanyard/agent/n1", &csr);
	lanyard__agent__v1__attest_agent_request__init(&m);
	m.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_TICKET;
	m.ticket.data = ticket;
	m.ticket.len = LY_AGENTAPI_TICKET_LEN;
	/* Without a CSR: refused. */
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_ticket_check(&rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "ticket: a ticket and a CSR for the agent ID required");
	ly_agentapi_attest_cleanup(&rq);
	m.csr.data = csr.data;
	m.csr.len = csr.len;
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_ticket_check(&rq, &e), LY_OK);
	assert_int_equal(rq.ticket_len, LY_AGENTAPI_TICKET_LEN);
	ly_agentapi_attest_cleanup(&rq);
	/* One byte short, one too many. */
	m.ticket.len = LY_AGENTAPI_TICKET_LEN - 1;
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_ticket_check(&rq, &e), LY_E_INVALID);
	ly_agentapi_attest_cleanup(&rq);
	m.ticket.len = LY_AGENTAPI_TICKET_LEN + 1;
	assert_int_equal(attest(&m, &rq, &e), LY_OK);
	assert_int_equal(ly_agentapi_ticket_check(&rq, &e), LY_E_INVALID);
	ly_agentapi_attest_cleanup(&rq);
	ly_buf_free(&csr);
}

static void
test_renew_watch_bundle(void **state)
{
	struct ly_agentapi_renew_request rq;
	struct ly_error e;
	Lanyard__Agent__V1__RenewAgentRequest r;
	Lanyard__Agent__V1__WatchEntriesRequest w;
	uint8_t *big = calloc(1, LY_CSR_DER_MAX + 1), *b;
	size_t len;
	int64_t since = 1;
	static const uint8_t junk[] = { 0x0a, 0x7f };

	(void)state;
	assert_non_null(big);
	lanyard__agent__v1__renew_agent_request__init(&r);
	b = pack(&r.base, &len);
	assert_int_equal(ly_agentapi_renew_decode(b, len, &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "csr required, within its size cap");
	free(b);
	r.csr.data = big;
	r.csr.len = LY_CSR_DER_MAX + 1;
	b = pack(&r.base, &len);
	assert_int_equal(ly_agentapi_renew_decode(b, len, &rq, &e), LY_E_INVALID);
	free(b);
	r.csr.len = LY_CSR_DER_MAX;
	b = pack(&r.base, &len);
	assert_int_equal(ly_agentapi_renew_decode(b, len, &rq, &e), LY_OK);
	assert_int_equal(rq.csr_len, LY_CSR_DER_MAX);
	ly_agentapi_renew_cleanup(&rq);
	free(b);
	assert_int_equal(ly_agentapi_renew_decode(junk, sizeof(junk), &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "malformed RenewAgentRequest");

	lanyard__agent__v1__watch_entries_request__init(&w);
	w.since_revision = -1;
	b = pack(&w.base, &len);
	assert_int_equal(ly_agentapi_watch_decode(b, len, &since, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "malformed WatchEntriesRequest");
	free(b);
	w.since_revision = 42;
	b = pack(&w.base, &len);
	assert_int_equal(ly_agentapi_watch_decode(b, len, &since, &e), LY_OK);
	assert_int_equal(since, 42);
	free(b);
	assert_int_equal(ly_agentapi_watch_decode(NULL, 0, &since, &e), LY_OK);
	assert_int_equal(since, 0);

	assert_int_equal(ly_agentapi_bundle_decode(NULL, 0, &e), LY_OK);
	assert_int_equal(ly_agentapi_bundle_decode(junk, sizeof(junk), &e), LY_E_INVALID);
	assert_string_equal(e.msg, "malformed GetBundleRequest");
	free(big);
}

static void
test_batch(void **state)
{
	struct ly_agentapi_batch_request rq;
	struct ly_error e;
	Lanyard__Agent__V1__BatchNewX509SVIDRequest m;
	Lanyard__Agent__V1__X509SVIDParams *params = calloc(LY_CA_BATCH_MAX + 1, sizeof(*params));
	Lanyard__Agent__V1__X509SVIDParams **ptrs = calloc(LY_CA_BATCH_MAX + 1, sizeof(*ptrs));
	uint8_t *csr = calloc(1, LY_CSR_DER_MAX + 1), *b;
	static char e1[] = "e1";
	size_t len;

	(void)state;
	assert_non_null(params);
	assert_non_null(ptrs);
	assert_non_null(csr);
	for (size_t i = 0; i <= LY_CA_BATCH_MAX; i++) {
		lanyard__agent__v1__x509_svidparams__init(&params[i]);
		params[i].entry_id = e1;
		params[i].csr.data = csr;
		params[i].csr.len = 10;
		ptrs[i] = &params[i];
	}
	lanyard__agent__v1__batch_new_x509_svidrequest__init(&m);
	m.params = ptrs;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_batch_decode(b, len, &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "params: 1 to 1024 requests per batch");
	free(b);
	m.n_params = LY_CA_BATCH_MAX + 1;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_batch_decode(b, len, &rq, &e), LY_E_INVALID);
	free(b);
	/* Per param: its own verdicts, the call goes on. */
	params[1].entry_id = (char[]){ "bad id/with slash" };
	params[2].csr.len = 0;
	params[3].csr.len = LY_CSR_DER_MAX + 1;
	params[4].csr.len = LY_CSR_DER_MAX;
	m.n_params = 5;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_batch_decode(b, len, &rq, &e), LY_OK);
	assert_int_equal(rq.n_params, 5);
	assert_true(rq.params[0].entry_id_ok && rq.params[0].csr_size_ok);
	assert_string_equal(rq.params[0].entry_id, "e1");
	assert_false(rq.params[1].entry_id_ok);
	assert_true(rq.params[1].csr_size_ok);
	assert_true(rq.params[2].entry_id_ok);
	assert_false(rq.params[2].csr_size_ok);
	assert_false(rq.params[3].csr_size_ok);
	assert_true(rq.params[4].csr_size_ok);
	ly_agentapi_batch_cleanup(&rq);
	free(b);
	m.n_params = LY_CA_BATCH_MAX;
	params[1].entry_id = params[0].entry_id;
	b = pack(&m.base, &len);
	assert_int_equal(ly_agentapi_batch_decode(b, len, &rq, &e), LY_OK);
	assert_int_equal(rq.n_params, LY_CA_BATCH_MAX);
	ly_agentapi_batch_cleanup(&rq);
	free(b);
	free(params);
	free(ptrs);
	free(csr);
}

static ly_status
jwt(Lanyard__Agent__V1__NewJWTSVIDRequest *m, struct ly_agentapi_jwt_request *rq, struct ly_error *e)
{
	size_t len;
	uint8_t *b = pack(&m->base, &len);
	ly_status rc = ly_agentapi_jwt_decode(b, len, rq, e);
	free(b);
	return rc;
}

static void
test_jwt(void **state)
{
	struct ly_agentapi_jwt_request rq;
	struct ly_error e;
	Lanyard__Agent__V1__NewJWTSVIDRequest m;
	char *aud[LY_JWT_AUDIENCES_MAX + 1];
	char *longest = malloc(LY_JWT_AUDIENCE_MAX + 2);

	(void)state;
	assert_non_null(longest);
	memset(longest, 'a', LY_JWT_AUDIENCE_MAX + 1);
	longest[LY_JWT_AUDIENCE_MAX] = '\0';
	static char aud_s[] = "aud";
	for (size_t i = 0; i <= LY_JWT_AUDIENCES_MAX; i++)
		aud[i] = aud_s;
	lanyard__agent__v1__new_jwtsvidrequest__init(&m);
	m.entry_id = (char[]){ "e1" };
	m.audience = aud;
	m.n_audience = 1;
	assert_int_equal(jwt(&m, &rq, &e), LY_OK);
	assert_string_equal(rq.entry_id, "e1");
	assert_int_equal(rq.n_audience, 1);
	assert_string_equal(rq.audience[0], "aud");
	ly_agentapi_jwt_cleanup(&rq);
	/* Audiences: none, the most, one too many. */
	m.n_audience = 0;
	assert_int_equal(jwt(&m, &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "audience: 1 to 32 values");
	m.n_audience = LY_JWT_AUDIENCES_MAX;
	assert_int_equal(jwt(&m, &rq, &e), LY_OK);
	ly_agentapi_jwt_cleanup(&rq);
	m.n_audience = LY_JWT_AUDIENCES_MAX + 1;
	assert_int_equal(jwt(&m, &rq, &e), LY_E_INVALID);
	/* One audience at its cap, one byte over; a control character. */
	m.n_audience = 1;
	aud[0] = longest;
	assert_int_equal(jwt(&m, &rq, &e), LY_OK);
	ly_agentapi_jwt_cleanup(&rq);
	longest[LY_JWT_AUDIENCE_MAX] = 'a';
	longest[LY_JWT_AUDIENCE_MAX + 1] = '\0';
	assert_int_equal(jwt(&m, &rq, &e), LY_E_INVALID);
	assert_true(strncmp(e.msg, "NewJWTSVIDRequest: ", 19) == 0);
	aud[0] = (char[]){ "a\tb" };
	assert_int_equal(jwt(&m, &rq, &e), LY_E_INVALID);
	/* Together over LY_JWT_MAX: 17 audiences of 1,024 bytes. */
	longest[LY_JWT_AUDIENCE_MAX] = '\0';
	for (size_t i = 0; i < 17; i++)
		aud[i] = longest;
	m.n_audience = 17;
	assert_int_equal(jwt(&m, &rq, &e), LY_E_INVALID);
	assert_string_equal(e.msg, "audience: too long for a JWT-SVID");
	/* A bad entry ID. */
	aud[0] = (char[]){ "aud" };
	m.n_audience = 1;
	m.entry_id = (char[]){ "" };
	assert_int_equal(jwt(&m, &rq, &e), LY_E_INVALID);
	assert_true(strncmp(e.msg, "entry_id: ", 10) == 0);
	free(longest);
}

static void
test_jwt_strict(void **state)
{
	/* entry_id "e1", audience "a\0b": protobuf-c would read "a". */
	static const uint8_t nul[] = { 0x0a, 0x02, 'e', '1', 0x12, 0x03, 'a', 0x00, 'b' };
	/* audience as a varint: the wrong wire type. */
	static const uint8_t wrong[] = { 0x0a, 0x02, 'e', '1', 0x10, 0x01 };
	/* entry_id twice: protobuf-c keeps the last. */
	static const uint8_t twice[] = { 0x0a, 0x01, 'x', 0x0a, 0x02, 'e', '1', 0x12, 0x01, 'a' };
	struct ly_agentapi_jwt_request rq;
	struct ly_error e;

	(void)state;
	assert_int_equal(ly_agentapi_jwt_decode(nul, sizeof(nul), &rq, &e), LY_E_INVALID);
	assert_true(strncmp(e.msg, "malformed NewJWTSVIDRequest: ", 29) == 0);
	assert_int_equal(ly_agentapi_jwt_decode(wrong, sizeof(wrong), &rq, &e), LY_E_INVALID);
	assert_int_equal(ly_agentapi_jwt_decode(twice, sizeof(twice), &rq, &e), LY_E_INVALID);
	ly_agentapi_jwt_cleanup(&rq);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_attest_malformed_and_empty),
		cmocka_unit_test(test_attest_csr),
		cmocka_unit_test(test_attest_x509pop),
		cmocka_unit_test(test_attest_psat),
		cmocka_unit_test(test_attest_ticket),
		cmocka_unit_test(test_renew_watch_bundle),
		cmocka_unit_test(test_batch),
		cmocka_unit_test(test_jwt),
		cmocka_unit_test(test_jwt_strict),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
