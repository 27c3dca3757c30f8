/*
 * fuzz_wapi_validate.c: ValidateJWTSVID as the agent serves it
 * (agent/wapi.c h_validate_jwt_svid): the request decoded and checked
 * (agent/workload_msg.h), its token validated for its audience against a
 * fixed bundle (the public keys of fuzz_jwt.c, which signed the seed
 * tokens; their private keys were thrown away) at a fixed time, and for a
 * valid token the response built from its claims.
 */
#include <stdint.h>
#include <stdlib.h>

#include "agent/workload_msg.h"
#include "lib/jwt.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ly_bundle_set *set;
	struct ly_bundle *b = NULL;
	struct ly_wmsg_validate_request m;
	struct ly_spiffe_id sub;
	struct ly_buf out = LY_BUF_INIT;
	json_t *claims = NULL;

	if (set == NULL && (ly_bundle_set_new(&set, NULL) != LY_OK ||
	    ly_bundle_parse_jwks("example.org", jwks, sizeof(jwks) - 1, &b, NULL) != LY_OK ||
	    ly_bundle_set_put(set, b, NULL) != LY_OK))
		abort();
	if (ly_wmsg_parse_validate_request(data, size, &m, NULL) != LY_OK)
		return 0;
	if (m.audience == NULL || m.audience[0] == '\0' || m.svid_len == 0 || m.svid_len > LY_JWT_MAX)
		abort();
	if (ly_jwt_validate(m.svid, m.svid_len, m.audience, set, (time_t)1700000000, &sub, &claims, NULL) == LY_OK) {
		if (ly_wmsg_validate_response(sub.id, claims, &out, NULL) != LY_OK || out.len == 0)
			abort(); /* a token that validated always gets an answer */
		ly_buf_free_secret(&out);
		json_decref(claims);
	}
	ly_wmsg_validate_request_cleanup(&m);
	return 0;
}
