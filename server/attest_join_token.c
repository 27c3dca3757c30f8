/*
 * attest_join_token.c: join-token node attestation (SPEC §6), see attest.h.
 *
 * The token is a bearer secret until it is used: it is checked for syntax
 * before anything else, handed to the datastore (which keeps only its
 * SHA-256 and uses it up in one transaction), and never written into a
 * message.
 */
#include "server/attest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/caps.h"

ly_status
ly_join_token_default_id(const char *trust_domain, const char *token, struct ly_spiffe_id *out,
    struct ly_error *err)
{
	char path[sizeof(LY_JOIN_TOKEN_ID_PATH) + LY_JOIN_TOKEN_MAX];

	LY_TRY(ly_datastore_token_check(token, err));
	int n = snprintf(path, sizeof(path), "%s%s", LY_JOIN_TOKEN_ID_PATH, token);
	if (n < 0 || (size_t)n >= sizeof(path))
		return ly_error_set(err, LY_E_INTERNAL, "join token: agent ID path does not fit");
	ly_status rc = ly_spiffe_id_from_parts(trust_domain, path, out, err);
	OPENSSL_cleanse(path, sizeof(path));
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "join token agent ID");
	return LY_OK;
}

ly_status
ly_attest_join_token(struct ly_datastore *ds, const char *trust_domain, const char *token, time_t now,
    const uint8_t *key_sha256, struct ly_attest_result *out, bool *again, struct ly_error *err)
{
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	char *granted = NULL;
	ly_status rc;

	if (ds == NULL || trust_domain == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "join token attestation: missing datastore, trust domain or output");
	rc = ly_datastore_token_check(token, err);
	if (rc != LY_OK)
		return rc;
	/* Used up here even when refused below: a token is tried once (or retried by the key that used it). */
	rc = ly_datastore_token_consume(ds, token, (int64_t)now, key_sha256, &granted, again, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "join token attestation");
	/* A token stored before the reserved-ID rule may grant the server's ID. */
	struct ly_spiffe_id gid;
	if ((rc = ly_spiffe_id_parse_str(granted, &gid, err)) == LY_OK)
		rc = ly_datastore_token_id_check(token, &gid, err);
	OPENSSL_cleanse(&gid, sizeof(gid));
	if (rc == LY_OK)
		rc = ly_attest_result_finish(&r, "join_token", trust_domain, granted, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "join token attestation");
		goto out;
	}
	*out = r;
	r = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	rc = LY_OK;
out:
	ly_attest_result_cleanup(&r);
	free(granted);
	return rc;
}
