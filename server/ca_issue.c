/*
 * ca_issue.c: SVID issuance under the active X.509 and JWT slots (ca.h
 * ly_ca_sign_*, ly_ca_mint_jwt_svid): the checks of a request, then the
 * leaf certificate on the prepared signer. Split from ca.c along its seam
 * (ca_internal.h).
 */
#include "server/ca.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "lib/jwt.h"
#include "server/ca_internal.h"

/* ---- issuance ---- */

static ly_status
check_svid_id(const struct ly_ca *ca, const struct ly_spiffe_id *id, struct ly_error *err)
{
	if (id == NULL || strnlen(id->id, sizeof(id->id)) == sizeof(id->id) || id->id[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "no SPIFFE ID");
	if (!ly_spiffe_id_member_of(id, ca->td))
		return ly_error_set(err, LY_E_INVALID, "%s is not in trust domain %s", id->id, ca->td);
	if (ly_spiffe_id_is_trust_domain_id(id))
		return ly_error_set(err, LY_E_INVALID, "%s has no path: an SVID's ID needs one (X509-SVID §2)", id->id);
	return LY_OK;
}

static ly_status
check_dns(const char *const *dns, size_t ndns, struct ly_error *err)
{
	if (ndns > LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%zu DNS names, at most %d", ndns, LY_DNS_NAMES_MAX);
	for (size_t i = 0; i < ndns; i++) {
		size_t l = dns != NULL && dns[i] != NULL ? strnlen(dns[i], LY_DNS_NAME_MAX + 1) : 0;
		if (l == 0 || l > LY_DNS_NAME_MAX)
			return ly_error_set(err, LY_E_INVALID, "DNS name %zu: length must be 1..%d", i, LY_DNS_NAME_MAX);
		for (size_t j = 0; j < l; j++) {
			unsigned char c = (unsigned char)dns[i][j];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			        c == '-' || c == '_' || c == '*'))
				return ly_error_set(err, LY_E_INVALID, "DNS name %zu: bad character at offset %zu", i, j);
		}
	}
	return LY_OK;
}

static ly_status
check_ttl(int32_t ttl_or_0, int64_t dflt, int64_t max, int64_t *out, struct ly_error *err)
{
	if (ttl_or_0 < 0)
		return ly_error_set(err, LY_E_INVALID, "TTL %d: negative", (int)ttl_or_0);
	if (ttl_or_0 > max)
		return ly_error_set(err, LY_E_LIMIT, "TTL %d s: at most %lld", (int)ttl_or_0, (long long)max);
	*out = ttl_or_0 == 0 ? dflt : ttl_or_0;
	return LY_OK;
}

/* Is there a signing CA to sign with at `now`? */
static ly_status
check_signer(const struct ly_ca *ca, time_t now, struct ly_error *err)
{
	if (ca->x509_active == NULL || ca->signer.slot != ca->x509_active || ca->signer.not_after <= now ||
	    ca->x509_active->not_after <= now)
		return ly_error_set(err, LY_E_EXPIRED, "no valid signing CA at %lld (ly_ca_tick not called?)",
		    (long long)now);
	return LY_OK;
}

/* One leaf: the CSR checked, the certificate written and signed, the chain returned. */
static ly_status
issue_one(struct ly_ca *ca, const struct ly_ca_sign_req *r, time_t now, struct ly_buf *chain, time_t *expires_at,
    struct ly_error *err)
{
	const struct ca_signer *g = &ca->signer;
	struct ca_csr csr;
	struct ly_buf rsa_spki = LY_BUF_INIT;
	EVP_PKEY *key = NULL;
	struct ca_cert_spec spec;
	uint8_t serial[16], skid[20];
	int64_t ttl = 0;
	ly_status rc;

	rc = check_ttl(r->ttl_or_0, ca->x509_ttl, LY_X509_SVID_TTL_MAX, &ttl, err);
	if (rc == LY_OK)
		rc = check_svid_id(ca, r->id, err);
	if (rc == LY_OK)
		rc = check_dns(r->dns, r->ndns, err);
	if (rc == LY_OK)
		rc = check_signer(ca, now, err);
	if (rc == LY_OK)
		rc = ca_csr_parse(&ca->crypto, r->csr_der, r->csr_len, &csr, err);
	if (rc != LY_OK)
		goto out;
	/* X509-SVID §2: the one URI SAN is the ID the caller decided on, byte for byte. */
	size_t idlen = strlen(r->id->id);
	if (csr.uri.n != idlen || memcmp(csr.uri.p, r->id->id, idlen) != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "CSR: the URI SAN is not %s", r->id->id);
		goto out;
	}
	rc = ca_csr_verify(&ca->crypto, ca->mdctx, &csr, csr.key_alg == CA_KEY_RSA ? &key : NULL, err);
	if (rc != LY_OK)
		goto out;
	struct ca_span spki = csr.spki;
	if (key != NULL) {
		/* RSA: re-encoded, so that the leaf holds canonical DER whatever the CSR held. */
		rc = ca_spki_of(key, &rsa_spki, err);
		if (rc != LY_OK)
			goto out;
		spki = (struct ca_span){ rsa_spki.data, rsa_spki.len };
	}

	rc = ca_random_serial(serial, err);
	if (rc == LY_OK)
		rc = ca_key_id(&ca->crypto, ca->mdctx, spki, skid, err);
	if (rc != LY_OK)
		goto out;
	struct ca_dw v;
	ca_dw_init(&v, ca->var_buf, LY_CERT_DER_MAX);
	size_t cn_len = r->ndns > 0 ? strlen(r->dns[0]) : 0;
	bool has_cn = cn_len > 0 && cn_len <= 64; /* ub-common-name (RFC 5280 Appendix A) */
	if (has_cn) {
		ca_name_cn(&v, r->dns[0], cn_len);
	} else {
		static const uint8_t empty_name[] = { 0x30, 0x00 };
		ca_dw_raw(&v, empty_name, sizeof(empty_name));
	}
	size_t subject_end = v.len;
	ca_ext_skid(&v, skid, sizeof(skid));
	/* An empty subject makes the SAN critical (RFC 5280 §4.2.1.6, X509-SVID §3.1). */
	ca_ext_san(&v, !has_cn, r->id->id, idlen, r->dns, r->ndns);
	if (v.overflow) {
		rc = ly_error_set(err, LY_E_LIMIT, "SVID fields larger than %d bytes", LY_CERT_DER_MAX);
		goto out;
	}

	memset(&spec, 0, sizeof(spec));
	spec.serial = serial;
	spec.alg = (struct ca_span){ g->alg, g->alg_len };
	spec.issuer = (struct ca_span){ g->issuer.data, g->issuer.len };
	spec.subject = (struct ca_span){ v.p, subject_end };
	spec.spki = spki;
	spec.not_after = now + (time_t)ttl > g->not_after ? g->not_after : now + (time_t)ttl;
	/*
	 * Backdated for clock skew (ca.h), but never by more than a quarter of
	 * the life left ahead: an SVID clipped by its signing CA's end (a short
	 * CA TTL) would otherwise reach its 50% renewal mark before it is even
	 * issued, and its agent would renew it again at once, forever.
	 */
	time_t backdate = (time_t)LY_SVID_BACKDATE((int64_t)ttl);
	if (spec.not_after > now && backdate > (spec.not_after - now) / 4)
		backdate = (spec.not_after - now) / 4;
	spec.not_before = now - backdate < g->not_before ? g->not_before : now - backdate;
	if (spec.not_after <= spec.not_before || spec.not_after <= now) {
		rc = ly_error_set(err, LY_E_EXPIRED, "no validity window left under the signing CA at %lld", (long long)now);
		goto out;
	}
	spec.exts[0] = key != NULL ? (struct ca_span){ g->ext_rsa, g->ext_rsa_len }
	                           : (struct ca_span){ g->ext_ec, g->ext_ec_len };
	spec.exts[1] = (struct ca_span){ v.p + subject_end, v.len - subject_end };
	spec.nexts = 2;
	struct ca_dw w;
	ca_dw_init(&w, ca->cert_buf, LY_CERT_DER_MAX);
	rc = ca_cert_write(&spec, g->sctx, ca->mdctx, g->md, &w, err);
	if (rc != LY_OK)
		goto out;
	chain->data = malloc(w.len + g->tail.len);
	if (chain->data == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "allocating a chain of %zu bytes", w.len + g->tail.len);
		goto out;
	}
	memcpy(chain->data, w.p, w.len);
	memcpy(chain->data + w.len, g->tail.data, g->tail.len);
	chain->len = w.len + g->tail.len;
	if (expires_at != NULL)
		*expires_at = spec.not_after;
	rc = LY_OK;
out:
	ERR_clear_error();
	EVP_PKEY_free(key);
	ly_buf_free(&rsa_spki);
	return rc;
}

ly_status
ly_ca_sign_batch(struct ly_ca *ca, const struct ly_ca_sign_req *reqs, size_t n, time_t now,
    struct ly_ca_sign_res *res, struct ly_error *err)
{
	struct ly_error e;
	ly_status rc;

	if (ca == NULL || (n > 0 && (reqs == NULL || res == NULL)))
		return ly_error_set(err, LY_E_INVALID, "sign batch: missing arguments");
	if (n == 0)
		return LY_OK;
	memset(res, 0, n * sizeof(res[0]));
	if (n > LY_CA_BATCH_MAX)
		rc = ly_error_set(&e, LY_E_LIMIT, "sign batch: %zu requests, at most %d", n, LY_CA_BATCH_MAX);
	else
		rc = check_signer(ca, now, &e);
	if (rc != LY_OK) {
		for (size_t i = 0; i < n; i++) {
			res[i].status = rc;
			res[i].err = e;
		}
		if (err != NULL)
			*err = e;
		return rc;
	}
	for (size_t i = 0; i < n; i++)
		res[i].status = issue_one(ca, &reqs[i], now, &res[i].chain, &res[i].expires_at, &res[i].err);
	return LY_OK;
}

void
ly_ca_sign_res_cleanup(struct ly_ca_sign_res *res, size_t n)
{
	for (size_t i = 0; res != NULL && i < n; i++)
		ly_buf_free(&res[i].chain);
}

ly_status
ly_ca_sign_x509_svid(struct ly_ca *ca, const uint8_t *csr_der, size_t csr_len, const struct ly_spiffe_id *expected_id,
    const char *const *dns, size_t ndns, int32_t ttl_or_0, time_t now, struct ly_buf *chain_out, time_t *expires_at,
    struct ly_error *err)
{
	const struct ly_ca_sign_req req = { csr_der, csr_len, expected_id, dns, ndns, ttl_or_0 };

	if (ca == NULL || chain_out == NULL || chain_out->data != NULL)
		return ly_error_set(err, LY_E_INVALID, "sign X.509-SVID: missing arguments or non-empty output");
	return issue_one(ca, &req, now, chain_out, expires_at, err);
}

ly_status
ly_ca_sign_agent_svid(struct ly_ca *ca, const uint8_t *csr_der, size_t csr_len, const struct ly_spiffe_id *agent_id,
    int32_t ttl_or_0, time_t now, struct ly_buf *chain_out, time_t *expires_at, struct ly_error *err)
{
	return ly_ca_sign_x509_svid(ca, csr_der, csr_len, agent_id, NULL, 0, ttl_or_0, now, chain_out, expires_at, err);
}

ly_status
ly_ca_mint_jwt_svid(struct ly_ca *ca, const struct ly_spiffe_id *sub, const char *const *aud, size_t naud,
    int32_t ttl_or_0, time_t now, char **token, time_t *exp, struct ly_error *err)
{
	int64_t ttl = 0;

	if (token != NULL)
		*token = NULL;
	if (ca == NULL || token == NULL)
		return ly_error_set(err, LY_E_INVALID, "mint JWT-SVID: missing arguments");
	LY_TRY(check_ttl(ttl_or_0, ca->jwt_ttl, LY_JWT_SVID_TTL_MAX, &ttl, err));
	LY_TRY(check_svid_id(ca, sub, err));
	const struct ca_slot *s = ca->jwt_active;
	if (s == NULL || s->retired || s->not_after <= now)
		return ly_error_set(err, LY_E_EXPIRED, "no valid JWT key at %lld (ly_ca_tick not called?)", (long long)now);
	time_t e = now + (time_t)ttl > s->not_after ? s->not_after : now + (time_t)ttl;
	LY_TRY(ly_jwt_sign(s->jwt_key, s->kid, NULL, sub, aud, naud, now, e, token, err));
	if (exp != NULL)
		*exp = e;
	return LY_OK;
}
