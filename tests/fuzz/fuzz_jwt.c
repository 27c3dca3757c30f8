/*
 * fuzz_jwt.c: ly_jwt_validate over arbitrary token bytes, against a fixed
 * bundle built once (public keys only: the private keys that signed the
 * seed tokens in corpus/jwt were thrown away), and the same bytes as a JOSE
 * header. The clock is fixed so the seed tokens stay valid.
 */
#include <stdint.h>
#include <stdlib.h>

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

static struct ly_bundle_set *set;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_bundle *b = NULL;
	if (set == NULL && (ly_bundle_set_new(&set, NULL) != LY_OK ||
	    ly_bundle_parse_jwks("example.org", jwks, sizeof(jwks) - 1, &b, NULL) != LY_OK ||
	    ly_bundle_set_put(set, b, NULL) != LY_OK))
		abort();
	struct ly_spiffe_id sub;
	json_t *claims = NULL;
	if (ly_jwt_validate((const char *)data, size, "fuzz", set, (time_t)1700000000, &sub, &claims, NULL) == LY_OK)
		json_decref(claims);
	struct ly_jwt_header h;
	ly_status rc = ly_jwt_header_parse((const char *)data, size, &h, NULL);
	(void)rc;
	return 0;
}
