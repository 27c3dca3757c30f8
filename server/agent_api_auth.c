/*
 * agent_api_auth.c: caller authentication on the agent API's mTLS calls
 * (the rules at the top of agent_api.c), and the previous SVID serial of
 * each agent that renewed, honoured until that SVID expires
 * (agent_api_internal.h).
 */
#include "server/agent_api_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lib/der.h"
#include "lib/log.h"
#include "lib/spiffeid.h"
#include "lib/x509svid.h"

/* A certificate's serial as lower-case hex without leading zeros ("0" for zero). */
ly_status
agent_api_auth_serial_hex(X509 *x, char out[SERIAL_HEX_MAX + 1], struct ly_error *err)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = NULL;
	ly_status rc = LY_OK;

	if (bn == NULL)
		return ly_error_openssl(err, LY_E_CRYPTO, "certificate serial");
	if (BN_is_negative(bn)) {
		rc = ly_error_set(err, LY_E_INVALID, "certificate serial is negative");
		goto out;
	}
	if ((hex = BN_bn2hex(bn)) == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "certificate serial");
		goto out;
	}
	const char *p = hex;
	while (p[0] == '0' && p[1] != '\0')
		p++;
	size_t n = strlen(p);
	if (n > SERIAL_HEX_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "certificate serial longer than %d hex digits", SERIAL_HEX_MAX);
		goto out;
	}
	for (size_t i = 0; i <= n; i++)
		out[i] = (p[i] >= 'A' && p[i] <= 'F') ? (char)(p[i] - 'A' + 'a') : p[i];
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

/* The first certificate of concatenated DER, as a span. */
static ly_status
first_cert(const uint8_t *der, size_t len, struct ly_der_span *span, struct ly_error *err)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t count = 0;

	LY_TRY(ly_der_split(der, len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &count, err));
	*span = spans[0];
	return LY_OK;
}

/* The serial of the leaf of an issued chain. */
ly_status
agent_api_auth_chain_serial(const struct ly_buf *chain, char out[SERIAL_HEX_MAX + 1], struct ly_error *err)
{
	struct ly_der_span s;
	X509 *x = NULL;

	LY_TRY(first_cert(chain->data, chain->len, &s, err));
	LY_TRY(ly_der_parse_one(chain->data + s.off, s.len, &x, err));
	ly_status rc = agent_api_auth_serial_hex(x, out, err);
	X509_free(x);
	return rc;
}

/* ---- previous serials -------------------------------------------------------------------- */

void
agent_api_auth_prev_remove(struct ly_agent_api *api, const char *agent_id)
{
	for (struct agent_api_prev_serial **pp = &api->prev; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->agent_id, agent_id) == 0) {
			struct agent_api_prev_serial *p = *pp;
			*pp = p->next;
			free(p->agent_id);
			free(p);
			return;
		}
	}
}

void
agent_api_auth_prev_set(struct ly_agent_api *api, const char *agent_id, const char *serial, time_t expires, time_t now)
{
	agent_api_auth_prev_remove(api, agent_id);
	if (serial == NULL || serial[0] == '\0' || expires <= now || strlen(serial) > SERIAL_HEX_MAX)
		return;
	struct agent_api_prev_serial *p = calloc(1, sizeof(*p));
	if (p == NULL || (p->agent_id = strdup(agent_id)) == NULL) {
		/* Only a convenience: without it the old SVID is refused a little early. */
		free(p);
		return;
	}
	memcpy(p->serial, serial, strlen(serial) + 1);
	p->expires = expires;
	p->next = api->prev;
	api->prev = p;
}

bool
agent_api_auth_prev_ok(const struct ly_agent_api *api, const char *agent_id, const char *serial, time_t now)
{
	for (const struct agent_api_prev_serial *p = api->prev; p != NULL; p = p->next) {
		if (strcmp(p->agent_id, agent_id) == 0)
			return p->expires > now && strcmp(p->serial, serial) == 0;
	}
	return false;
}

void
agent_api_auth_prev_sweep(struct ly_agent_api *api, time_t now)
{
	struct agent_api_prev_serial **pp = &api->prev;

	while (*pp != NULL) {
		struct agent_api_prev_serial *p = *pp;
		if (p->expires <= now) {
			*pp = p->next;
			free(p->agent_id);
			free(p);
		} else {
			pp = &p->next;
		}
	}
}

/* ---- authentication (mTLS calls) -------------------------------------------------------------- */

void
agent_api_auth_caller_cleanup(struct agent_api_caller *c)
{
	ly_agent_free(c->rec);
	c->rec = NULL;
}

/*
 * Checks the caller is an enrolled agent presenting its current SVID (the
 * rules at the top of this file). On failure the call is finished and
 * false returned.
 */
bool
agent_api_auth_caller(struct ly_agent_api *api, struct ly_rpc_call *call, time_t now, struct agent_api_caller *c)
{
	const char *peer_id = ly_rpc_call_peer_spiffe_id(call);
	const char *pem = ly_rpc_call_peer_cert_pem(call);
	struct ly_spiffe_id sid;
	struct ly_error e;
	X509 *leaf = NULL;
	BIO *bio = NULL;
	time_t nb = 0;
	enum ly_rpc_code code = LY_RPC_UNAUTHENTICATED;
	const char *why = NULL, *cause = NULL;
	ly_status rc;

	memset(c, 0, sizeof(*c));
	if (peer_id == NULL || pem == NULL) {
		why = "agent SVID required (mTLS)";
		goto fail;
	}
	size_t len = strnlen(pem, LEAF_PEM_MAX + 1);
	if (len > LEAF_PEM_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL ||
	    (leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
		why = "agent SVID unreadable";
		goto fail;
	}
	if (ly_x509svid_check_leaf(leaf, &sid, &e) != LY_OK) {
		why = "agent SVID refused";
		cause = e.msg;
		goto fail;
	}
	if (strcmp(sid.id, peer_id) != 0) {
		why = "agent SVID: SPIFFE ID mismatch";
		goto fail;
	}
	if (!ly_spiffe_id_member_of(&sid, api->srv->cfg.trust_domain)) {
		code = LY_RPC_PERMISSION_DENIED;
		why = "agent SVID is not of this trust domain";
		goto fail;
	}
	if (ly_asn1_time_to_time(X509_get0_notBefore(leaf), &nb, &e) != LY_OK ||
	    ly_asn1_time_to_time(X509_get0_notAfter(leaf), &c->not_after, &e) != LY_OK) {
		why = "agent SVID validity unreadable";
		goto fail;
	}
	if (now < nb || now >= c->not_after) {
		why = "agent SVID expired or not yet valid: renew it, or attest again";
		goto fail;
	}
	if (agent_api_auth_serial_hex(leaf, c->serial, &e) != LY_OK) {
		why = "agent SVID serial refused";
		cause = e.msg;
		goto fail;
	}
	rc = ly_datastore_agent_get(api->srv->ds, sid.id, &c->rec, &e);
	if (rc == LY_E_NOT_FOUND) {
		code = LY_RPC_PERMISSION_DENIED;
		why = "agent must attest again";
		goto fail;
	}
	if (rc != LY_OK) {
		log_error("agent %s: %s", sid.id, e.msg);
		code = LY_RPC_UNAVAILABLE;
		why = "datastore unavailable";
		goto fail;
	}
	if (c->rec->banned) {
		code = LY_RPC_PERMISSION_DENIED;
		why = "agent is banned";
		goto fail;
	}
	if (strcmp(c->serial, c->rec->serial_number) != 0 && !agent_api_auth_prev_ok(api, sid.id, c->serial, now)) {
		why = "agent SVID superseded: use the current one, or attest again";
		goto fail;
	}
	X509_free(leaf);
	BIO_free(bio);
	return true;
fail:
	log_debug("%s from %s refused: %s%s%s", ly_rpc_call_method(call), peer_id != NULL ? peer_id : "(no SVID)", why,
	    cause != NULL ? ": " : "", cause != NULL ? cause : "");
	X509_free(leaf);
	BIO_free(bio);
	agent_api_auth_caller_cleanup(c);
	agent_api_reply_finish(call, code, why, cause);
	return false;
}
