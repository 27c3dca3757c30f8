/*
 * lib_probe.c: a thin command-line face on lib/ so that interop.py can check
 * our library against independent implementations (the openssl CLI, Python's
 * cryptography and PyJWT). Each verb prints one line and exits 0 when the
 * library accepted, 1 when it refused (the message names the rule), 2 on
 * usage errors.
 *
 *   lib_probe verify-x509 CHAIN.der BUNDLE.pem TD NOW   -> spiffe ID
 *   lib_probe jwt-validate BUNDLE.jwks TD AUD NOW TOKEN  -> sub
 *   lib_probe jwt-sign KEY.pem KID SUB AUD EXP [ALG]     -> token
 *   lib_probe jwks-to-pem BUNDLE.jwks TD                 -> PEM of the X.509 authorities
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/der.h"
#include "lib/jwt.h"
#include "lib/keys.h"
#include "lib/spiffeid.h"
#include "lib/x509svid.h"

static int
read_file(const char *path, struct ly_buf *out)
{
	struct ly_error err;
	if (ly_pem_read_file(path, out, &err) != LY_OK) {
		fprintf(stderr, "lib_probe: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int
refuse(const struct ly_error *err)
{
	printf("refused: %s\n", err->msg);
	return 1;
}

static int
verify_x509(const char *chain_path, const char *bundle_path, const char *td, const char *now_s)
{
	struct ly_buf chain = LY_BUF_INIT, pem = LY_BUF_INIT, roots = LY_BUF_INIT;
	X509_STORE *store = NULL;
	struct ly_error err;
	struct ly_spiffe_id id;
	int rc = 2;

	if (read_file(chain_path, &chain) != 0 || read_file(bundle_path, &pem) != 0)
		goto out;
	rc = 1;
	if (ly_pem_to_der_certs((const char *)pem.data, pem.len, LY_BUNDLE_CERTS_MAX, LY_BUNDLE_DER_MAX, &roots,
	        &err) != LY_OK ||
	    ly_x509_store_new(roots.data, roots.len, &store, &err) != LY_OK ||
	    ly_x509svid_verify(chain.data, chain.len, store, td, (time_t)strtoll(now_s, NULL, 10), &id, &err) !=
	        LY_OK) {
		rc = refuse(&err);
		goto out;
	}
	printf("%s\n", id.id);
	rc = 0;
out:
	X509_STORE_free(store);
	ly_buf_free(&chain);
	ly_buf_free(&pem);
	ly_buf_free(&roots);
	return rc;
}

static int
load_bundle_set(const char *path, const char *td, struct ly_bundle_set **set, struct ly_error *err)
{
	struct ly_buf doc = LY_BUF_INIT;
	struct ly_bundle *b = NULL;
	int rc = 2;

	if (read_file(path, &doc) != 0)
		goto out;
	rc = 1;
	if (ly_bundle_parse_jwks(td, (const char *)doc.data, doc.len, &b, err) != LY_OK)
		goto out;
	if (ly_bundle_set_new(set, err) != LY_OK)
		goto out;
	if (ly_bundle_set_put(*set, b, err) != LY_OK)
		goto out;
	b = NULL;
	rc = 0;
out:
	ly_bundle_free(b);
	ly_buf_free(&doc);
	return rc;
}

static int
jwt_validate(const char *jwks, const char *td, const char *aud, const char *now_s, const char *token)
{
	struct ly_bundle_set *set = NULL;
	struct ly_error err;
	struct ly_spiffe_id sub;
	json_t *claims = NULL;
	int rc = load_bundle_set(jwks, td, &set, &err);

	if (rc == 1)
		rc = refuse(&err);
	if (rc != 0)
		goto out;
	if (ly_jwt_validate(token, strlen(token), aud, set, (time_t)strtoll(now_s, NULL, 10), &sub, &claims,
	        &err) != LY_OK) {
		rc = refuse(&err);
		goto out;
	}
	printf("%s\n", sub.id);
out:
	json_decref(claims);
	ly_bundle_set_free(set);
	return rc;
}

static int
jwt_sign(const char *key_path, const char *kid, const char *sub_s, const char *aud, const char *exp_s,
    const char *alg)
{
	EVP_PKEY *key = NULL;
	struct ly_error err;
	struct ly_spiffe_id sub;
	char *token = NULL;
	int rc = 1;
	const char *auds[] = { aud };
	time_t exp = (time_t)strtoll(exp_s, NULL, 10);

	if (ly_key_from_pem_file(key_path, &key, &err) != LY_OK ||
	    ly_spiffe_id_parse_str(sub_s, &sub, &err) != LY_OK ||
	    ly_jwt_sign(key, kid, alg, &sub, auds, 1, exp - 300, exp, &token, &err) != LY_OK) {
		rc = refuse(&err);
		goto out;
	}
	printf("%s\n", token);
	rc = 0;
out:
	ly_free_secret_str(token);
	EVP_PKEY_free(key);
	return rc;
}

static int
jwks_to_pem(const char *jwks, const char *td)
{
	struct ly_bundle_set *set = NULL;
	struct ly_error err;
	char *pem = NULL;
	int rc = load_bundle_set(jwks, td, &set, &err);

	if (rc == 1)
		rc = refuse(&err);
	if (rc != 0)
		goto out;
	if (ly_bundle_write_pem(ly_bundle_set_find(set, td), &pem, &err) != LY_OK) {
		rc = refuse(&err);
		goto out;
	}
	fputs(pem, stdout);
out:
	free(pem);
	ly_bundle_set_free(set);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "verify-x509") == 0)
		return verify_x509(argv[2], argv[3], argv[4], argv[5]);
	if (argc == 7 && strcmp(argv[1], "jwt-validate") == 0)
		return jwt_validate(argv[2], argv[3], argv[4], argv[5], argv[6]);
	if ((argc == 7 || argc == 8) && strcmp(argv[1], "jwt-sign") == 0)
		return jwt_sign(argv[2], argv[3], argv[4], argv[5], argv[6], argc == 8 ? argv[7] : NULL);
	if (argc == 4 && strcmp(argv[1], "jwks-to-pem") == 0)
		return jwks_to_pem(argv[2], argv[3]);
	fprintf(stderr, "usage: lib_probe verify-x509|jwt-validate|jwt-sign|jwks-to-pem ...\n");
	return 2;
}
