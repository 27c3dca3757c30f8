/*
 * fuzz_agentapi_agent.c: the Agent service's answers (proto/agent.proto)
 * as agent/sync.c takes them, beyond what fuzz_agent_sync.c covers
 * (EntriesUpdate, Bundle). The first byte picks the answer:
 * 0 AttestAgentResponse, 1 AgentSVID (RenewAgent), 2
 * BatchNewX509SVIDResponse, 3 NewJWTSVIDResponse. Each is unpacked and put
 * through the checks sync.c makes with the same caps: SVID chains through
 * the agent's verifier (agent/verify.h, with a key generated here, so a
 * chain from the input never certifies it: every step up to the key match
 * runs on input bytes), bundles through ly_sync_bundle_from_pb, JWT-SVIDs
 * through ly_verify_jwtsvid against fuzz_jwt.c's public keys.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "agent/sync_internal.h"
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

static void
svid(const Lanyard__Agent__V1__AgentSVID *m)
{
	struct ly_bundle *b = NULL;
	struct ly_x509svid_info info;
	enum ly_verify_fail why;

	if (m->spiffe_id == NULL || m->cert_chain.len == 0 || m->cert_chain.len > LY_CHAIN_DER_MAX)
		return;
	if (m->bundle != NULL && ly_sync_bundle_from_pb(m->bundle, "example.org", &b, NULL) == LY_OK &&
	    ly_bundle_x509_authority_count(b) == 0)
		abort();
	if (ly_verify_x509svid(ver, m->cert_chain.data, m->cert_chain.len, key, m->spiffe_id, 1700000000, &info, &why,
		NULL) == LY_OK)
		abort(); /* the input cannot hold a certificate for our fresh key */
	ly_bundle_free(b);
}

static void
answer(unsigned kind, const uint8_t *d, size_t n)
{
	if (kind == 0) {
		Lanyard__Agent__V1__AttestAgentResponse *m = lanyard__agent__v1__attest_agent_response__unpack(NULL, n, d);
		if (m != NULL && m->svid != NULL)
			svid(m->svid);
		if (m != NULL)
			lanyard__agent__v1__attest_agent_response__free_unpacked(m, NULL);
	} else if (kind == 1) {
		Lanyard__Agent__V1__AgentSVID *m = lanyard__agent__v1__agent_svid__unpack(NULL, n, d);
		if (m != NULL) {
			svid(m);
			lanyard__agent__v1__agent_svid__free_unpacked(m, NULL);
		}
	} else if (kind == 2) {
		Lanyard__Agent__V1__BatchNewX509SVIDResponse *m =
		    lanyard__agent__v1__batch_new_x509_svidresponse__unpack(NULL, n, d);
		for (size_t i = 0; m != NULL && i < m->n_results; i++) {
			Lanyard__Agent__V1__AgentSVID s;
			lanyard__agent__v1__agent_svid__init(&s);
			s.spiffe_id = m->results[i]->spiffe_id;
			s.cert_chain = m->results[i]->cert_chain;
			if (m->results[i]->status_code == 0)
				svid(&s);
		}
		if (m != NULL)
			lanyard__agent__v1__batch_new_x509_svidresponse__free_unpacked(m, NULL);
	} else {
		Lanyard__Agent__V1__NewJWTSVIDResponse *m = lanyard__agent__v1__new_jwtsvidresponse__unpack(NULL, n, d);
		enum ly_verify_fail why;
		json_t *claims = NULL;
		if (m != NULL && m->token != NULL && m->token[0] != '\0' && strlen(m->token) <= LY_JWT_MAX &&
		    ly_verify_jwtsvid(ver, m->token, strlen(m->token), "fuzz", NULL, set, 1700000000, NULL, &claims, &why,
			NULL) == LY_OK)
			json_decref(claims);
		if (m != NULL)
			lanyard__agent__v1__new_jwtsvidresponse__free_unpacked(m, NULL);
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
		answer(data[0] % 4u, data + 1, size - 1);
	return 0;
}
