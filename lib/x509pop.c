/*
 * x509pop.c: the x509pop proof of possession, see x509pop.h.
 */
#include "x509pop.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "caps.h"
#include "keys.h"

#define CONTEXT_LEN (sizeof(LY_X509POP_CONTEXT) - 1)
#define MESSAGE_LEN (CONTEXT_LEN + LY_X509POP_NONCE_LEN)

ly_status
ly_x509pop_nonce_new(uint8_t out[LY_X509POP_NONCE_LEN], struct ly_error *err)
{
	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "x509pop nonce: no output");
	if (RAND_bytes(out, LY_X509POP_NONCE_LEN) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "x509pop nonce: RAND_bytes");
	return LY_OK;
}

/* "lanyard x509pop v1" || nonce into `msg`. */
static ly_status
build_message(const uint8_t *nonce, size_t nonce_len, uint8_t msg[MESSAGE_LEN], struct ly_error *err)
{
	if (nonce == NULL || nonce_len != LY_X509POP_NONCE_LEN)
		return ly_error_set(err, LY_E_INVALID, "x509pop: the challenge must be exactly %d bytes",
		    LY_X509POP_NONCE_LEN);
	memcpy(msg, LY_X509POP_CONTEXT, CONTEXT_LEN);
	memcpy(msg + CONTEXT_LEN, nonce, LY_X509POP_NONCE_LEN);
	return LY_OK;
}

/*
 * Sets up `ctx` to sign or verify with `key` by the rules of x509pop.h:
 * SHA-256, ECDSA for EC keys, PSS (MGF1-SHA-256, salt 32) for RSA keys.
 */
static ly_status
init_ctx(EVP_MD_CTX *ctx, EVP_PKEY *key, int sign, struct ly_error *err)
{
	EVP_PKEY_CTX *pctx = NULL;

	LY_TRY(ly_key_check_acceptable(key, err));
	int id = EVP_PKEY_get_base_id(key);
	if (id != EVP_PKEY_EC && id != EVP_PKEY_RSA)
		return ly_error_set(err, LY_E_UNSUPPORTED, "x509pop: key must be EC or RSA");
	int ok = sign ? EVP_DigestSignInit_ex(ctx, &pctx, "SHA256", NULL, NULL, key, NULL)
		      : EVP_DigestVerifyInit_ex(ctx, &pctx, "SHA256", NULL, NULL, key, NULL);
	if (ok != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "x509pop: setting up the %s", sign ? "signature" : "check");
	if (id == EVP_PKEY_RSA &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
		EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", NULL) != 1))
		return ly_error_openssl(err, LY_E_CRYPTO, "x509pop: setting up RSA-PSS");
	return LY_OK;
}

ly_status
ly_x509pop_sign(EVP_PKEY *key, const uint8_t *nonce, size_t nonce_len, struct ly_buf *sig, struct ly_error *err)
{
	uint8_t msg[MESSAGE_LEN];
	EVP_MD_CTX *ctx = NULL;
	uint8_t *out = NULL;
	size_t out_len = 0;
	ly_status rc;

	if (key == NULL || sig == NULL || sig->data != NULL)
		return ly_error_set(err, LY_E_INTERNAL, "x509pop sign: a key and an empty output are required");
	LY_TRY(build_message(nonce, nonce_len, msg, err));
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		return ly_error_openssl(err, LY_E_NOMEM, "x509pop sign: allocating a context");
	rc = init_ctx(ctx, key, 1, err);
	if (rc != LY_OK)
		goto out;
	if (EVP_DigestSign(ctx, NULL, &out_len, msg, sizeof(msg)) != 1 || out_len == 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "x509pop sign: signature size");
		goto out;
	}
	out = malloc(out_len);
	if (out == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "x509pop sign: out of memory");
		goto out;
	}
	if (EVP_DigestSign(ctx, out, &out_len, msg, sizeof(msg)) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "x509pop sign: signing");
		goto out;
	}
	ly_buf_adopt(sig, out, out_len);
	out = NULL;
	rc = LY_OK;
out:
	free(out);
	EVP_MD_CTX_free(ctx);
	return rc;
}

ly_status
ly_x509pop_verify_key(EVP_PKEY *pub, const uint8_t *nonce, size_t nonce_len, const uint8_t *sig, size_t sig_len,
    struct ly_error *err)
{
	uint8_t msg[MESSAGE_LEN];
	EVP_MD_CTX *ctx = NULL;
	ly_status rc;

	if (pub == NULL)
		return ly_error_set(err, LY_E_INVALID, "x509pop: no public key");
	if (sig == NULL || sig_len == 0)
		return ly_error_set(err, LY_E_INVALID, "x509pop: the proof signature is empty");
	if (sig_len > LY_X509POP_SIG_MAX)
		return ly_error_set(err, LY_E_LIMIT, "x509pop: the proof signature is over %d bytes",
		    LY_X509POP_SIG_MAX);
	LY_TRY(build_message(nonce, nonce_len, msg, err));
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		return ly_error_openssl(err, LY_E_NOMEM, "x509pop verify: allocating a context");
	rc = init_ctx(ctx, pub, 0, err);
	if (rc != LY_OK)
		goto out;
	/* 0 is a wrong signature, < 0 a malformed one: both are refusals. */
	if (EVP_DigestVerify(ctx, sig, sig_len, msg, sizeof(msg)) != 1) {
		ERR_clear_error();
		rc = ly_error_set(err, LY_E_UNTRUSTED,
		    "x509pop: the proof signature does not verify with the certificate's key");
		goto out;
	}
	rc = LY_OK;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

ly_status
ly_x509pop_verify(X509 *leaf, const uint8_t *nonce, size_t nonce_len, const uint8_t *sig, size_t sig_len,
    struct ly_error *err)
{
	if (leaf == NULL)
		return ly_error_set(err, LY_E_INVALID, "x509pop: no certificate");
	EVP_PKEY *pub = X509_get0_pubkey(leaf);
	if (pub == NULL)
		return ly_error_openssl(err, LY_E_INVALID, "x509pop: the certificate's public key cannot be decoded");
	return ly_x509pop_verify_key(pub, nonce, nonce_len, sig, sig_len, err);
}
