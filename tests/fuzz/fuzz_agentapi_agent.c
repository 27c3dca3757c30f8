/*
 * fuzz_agentapi_agent.c: the Agent service's answers (proto/agent.proto)
 * through the functions the agent's sync ships (agent/agentapi_msg.h),
 * beyond what fuzz_agent_sync.c covers (EntriesUpdate, Bundle). The first
 * byte picks the answer: 0 AttestAgentResponse, 1 AgentSVID (RenewAgent),
 * 2 BatchNewX509SVIDResponse, 3 NewJWTSVIDResponse (any other byte: its
 * value modulo 4), except 4: FederatedBundles (GetFederatedBundles, for
 * trust domain example.org). What the module
 * accepts then goes where sync sends it: SVID chains through the agent's
 * verifier (agent/verify.h, with a key generated here, so a chain from the
 * input never certifies it: every step up to the key match runs on input
 * bytes), JWT-SVIDs through ly_verify_jwtsvid against fuzz_jwt.c's public
 * keys. Invariants the module promises are checked (abort() otherwise).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "agent/agentapi_msg.h"
#include "agent/verify.h"
#include "lib/caps.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/x509svid.h"

static const char jwks[] =
	"{\"keys\":["
	"{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"KLoRATDZwrSHV093u9MA6G4_-3eBLkzSkUuzo7qYFr4\",\"y\":"
	"\"lQP5vclLBQytVhFUC784pKioWYQoo_LAo9FCF-wXiJU\",\"use\":\"jwt-svid\",\"kid\":\"fz-ec\"},"
	"{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AKQyGYHV5DLKvnWNQ4cPE648WrohRB3cVbh2i7g0oztcT1a7Z"
	"kw48_q4rupKUlA6mKe6QhlcTq869CdMCLafwWaB\",\"y\":\"AVKmJlRl9xcwBKygsKzfTbxnXPYUtuie6Y"
	"QvLt36v-f761lM2UQaK2nb89ZVNKue-pQoUXbuOLJCQ72nt1_f7WhB\",\"use\":\"jwt-svid\",\"kid\":\""
	"fz-521\"},"
	"{\"kty\":\"RSA\",\"n\":\"rZDxlCxmFiF8BzZicG-izitw1JpwMg1luHdTyCSAg8jM4QeNBx0dNiEPoIHyxI"
	"zveHrRaT35z8qg28Loa8LurrkUpDAyn49SjEnWxIc2WgsfYxxccKwOtUSFi2ayV4vJk-YaoInEGV19QB"
	"tq7Zikhpxy6BWaJrYoNQu6wjHvB51_2cAsi7yGtXrITPDWFmOSL7IGIbh0-eD0CHiGLcEp9s2UIPM3UO"
	"S_fiW_--1RidkScq8tCzC98h32nbACwjznel0rrOFo9XlOfAg_TF4BKRIL-8ifM3XvE5Ach2G_omP7Yh"
	"P-BZuwAn8FEWshyZBGBsPryyRoVXmakabbaMht1Q\",\"e\":\"AQAB\",\"use\":\"jwt-svid\",\"kid\":\"fz-"
	"rsa\"}"
	"]}";

static struct ly_verifier *ver;
static struct ly_bundle_set *set;
static EVP_PKEY *key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An AgentSVID the module passed: its promises hold, then the verifier gets it. */
static void
svid(const Lanyard__Agent__V1__AgentSVID *m)
{
	struct ly_bundle *b = NULL;
	struct ly_x509svid_info info;
	enum ly_verify_fail why;

	/* The handlers check against the ID they asked for; here, against the answer's own. */
	const char *expect = m->spiffe_id != NULL ? m->spiffe_id : "spiffe://example.org/agent";
	if (ly_agentapi_svid_check(m, expect, NULL) != LY_OK)
		return;
	if (m->spiffe_id == NULL || m->cert_chain.len == 0 || m->cert_chain.len > LY_CHAIN_DER_MAX)
		abort();
	if (m->bundle != NULL && ly_agentapi_bundle_from_pb(m->bundle, "example.org", &b, NULL) == LY_OK &&
	    ly_bundle_x509_authority_count(b) == 0)
		abort();
	if (ly_verify_x509svid(ver, m->cert_chain.data, m->cert_chain.len, key, m->spiffe_id, 1700000000, &info, &why,
		NULL) == LY_OK)
		abort(); /* the input cannot hold a certificate for our fresh key */
	ly_bundle_free(b);
}

static void
attest(const uint8_t *d, size_t n)
{
	Lanyard__Agent__V1__AttestAgentResponse *m = NULL;
	char id[LY_SPIFFE_ID_MAX + 1];

	if (ly_agentapi_attest_parse(d, n, &m, NULL) != LY_OK)
		return;
	if (m->svid != NULL)
		svid(m->svid);
	if (ly_agentapi_attest_has_challenge(m) && m->challenge_nonce.len == 0)
		abort();
	if (ly_agentapi_attest_has_ticket(m) && ly_agentapi_attest_ticket_id(m, id, sizeof(id), NULL) == LY_OK &&
	    (strcmp(id, m->agent_id) != 0 || m->ticket.len == 0))
		abort();
	ly_agentapi_attest_free(m);
}

static void
renewal(const uint8_t *d, size_t n)
{
	Lanyard__Agent__V1__AgentSVID *m = lanyard__agent__v1__agent_svid__unpack(NULL, n, d);
	const char *expect = m != NULL && m->spiffe_id != NULL ? m->spiffe_id : "spiffe://example.org/agent";
	Lanyard__Agent__V1__AgentSVID *got = NULL;

	if (ly_agentapi_agent_svid_parse(d, n, expect, &got, NULL) == LY_OK) {
		if (got == NULL)
			abort();
		svid(got);
	}
	ly_agentapi_agent_svid_free(got);
	if (m != NULL)
		lanyard__agent__v1__agent_svid__free_unpacked(m, NULL);
}

#define BATCH_IDS 8

static void
batch(const uint8_t *d, size_t n)
{
	Lanyard__Agent__V1__BatchNewX509SVIDResponse *m = NULL;
	const Lanyard__Agent__V1__X509SVIDResult *answer[BATCH_IDS], *refused[BATCH_IDS];
	const char *ids[BATCH_IDS] = { "a", "b", NULL, "c" };
	size_t nids = 4;

	if (ly_agentapi_batch_parse(d, n, &m, NULL) != LY_OK)
		return;
	/* Asked for: a few fixed IDs, and those the answer names (so that some match). */
	for (size_t r = 0; r < m->n_results && nids < BATCH_IDS; r++)
		if (m->results[r] != NULL)
			ids[nids++] = m->results[r]->entry_id;
	ly_agentapi_batch_match(m, ids, nids, answer, refused);
	for (size_t i = 0; i < nids; i++) {
		if (answer[i] != NULL && refused[i] != NULL)
			abort();
		const Lanyard__Agent__V1__X509SVIDResult *res = answer[i] != NULL ? answer[i] : refused[i];
		if (res != NULL && (ids[i] == NULL || res->entry_id == NULL || strcmp(ids[i], res->entry_id) != 0))
			abort();
		if (answer[i] != NULL && answer[i]->status_code != 0)
			abort();
		if (answer[i] == NULL)
			continue;
		Lanyard__Agent__V1__AgentSVID s;
		lanyard__agent__v1__agent_svid__init(&s);
		s.spiffe_id = answer[i]->spiffe_id;
		s.cert_chain = answer[i]->cert_chain;
		svid(&s);
	}
	ly_agentapi_batch_free(m);
}

static void
jwt(const uint8_t *d, size_t n)
{
	Lanyard__Agent__V1__NewJWTSVIDResponse *m = NULL;
	enum ly_verify_fail why;
	json_t *claims = NULL;

	if (ly_agentapi_jwt_parse(d, n, &m, NULL) != LY_OK)
		return;
	size_t len = strlen(m->token);
	if (len == 0 || len > LY_JWT_MAX)
		abort();
	if (ly_verify_jwtsvid(ver, m->token, len, "fuzz", NULL, set, 1700000000, NULL, &claims, &why, NULL) == LY_OK)
		json_decref(claims);
	ly_agentapi_jwt_free(m);
}

/* A FederatedBundles answer: what passes is a set of other trust domains' bundles, each once. */
static void
federated(const uint8_t *d, size_t n)
{
	struct ly_agentapi_federated fed;

	if (ly_agentapi_federated_parse(d, n, "example.org", NULL, NULL, &fed, NULL) != LY_OK) {
		if (fed.set != NULL || fed.n_refused != 0)
			abort(); /* a refused answer leaves nothing behind */
		return;
	}
	size_t count = ly_bundle_set_count(fed.set);
	if (count + fed.n_refused >= LY_BUNDLE_SET_MAX)
		abort();
	if (ly_bundle_set_find(fed.set, "example.org") != NULL)
		abort(); /* never our own trust domain */
	for (size_t i = 0; i < fed.n_refused; i++)
		if (ly_bundle_set_find(fed.set, fed.refused[i]) != NULL)
			abort(); /* a refused trust domain is not in the set as well */
	for (size_t i = 0; i < count; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(fed.set, i);
		char *json = NULL;
		/* What a workload is sent: each bundle writes as JWKS. */
		if (ly_bundle_write_jwks(b, 0, &json, NULL) == LY_OK)
			free(json);
	}
	ly_agentapi_federated_cleanup(&fed);
}

static void
answer(unsigned kind, const uint8_t *d, size_t n)
{
	switch (kind) {
	case 0:
		attest(d, n);
		break;
	case 1:
		renewal(d, n);
		break;
	case 2:
		batch(d, n);
		break;
	case 4:
		federated(d, n);
		break;
	default:
		jwt(d, n);
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_bundle *b = NULL;

	if (ver == NULL) {
		ly_log_set_level(LY_LOG_ERROR);
		if (ly_verifier_new("example.org", &ver, NULL) != LY_OK || ly_bundle_set_new(&set, NULL) != LY_OK ||
		    ly_bundle_parse_jwks("example.org", jwks, sizeof(jwks) - 1, &b, NULL) != LY_OK ||
		    ly_bundle_set_put(set, b, NULL) != LY_OK || ly_key_generate(LY_KEY_TYPE_DEFAULT, &key, NULL) != LY_OK)
			abort();
	}
	if (size >= 1)
		answer(data[0] == 4 ? 4u : data[0] % 4u, data + 1, size - 1);
	return 0;
}
