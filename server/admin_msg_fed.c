/* admin_msg_fed.c: see admin_msg_fed.h. */
#include "server/admin_msg_fed.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/spiffeid.h"

static ly_status
malformed(struct ly_error *err)
{
	return ly_error_set(err, LY_E_INVALID, "malformed request");
}

static const char *
or_null(const char *s)
{
	return s != NULL && s[0] != '\0' ? s : NULL;
}

/* ---- trust domains ---- */

ly_status
ly_admin_msg_td_decode(const uint8_t *data, size_t len, struct ly_admin_msg_td *out, struct ly_error *err)
{
	Lanyard__Admin__V1__TrustDomain *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__trust_domain__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->trust_domain = or_null(m->trust_domain);
	return LY_OK;
}

void
ly_admin_msg_td_cleanup(struct ly_admin_msg_td *req)
{
	if (req->msg != NULL)
		lanyard__admin__v1__trust_domain__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

ly_status
ly_admin_msg_td_check(const char *sent, const char *own_td, char *out, struct ly_error *err)
{
	if (sent == NULL || sent[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "a trust domain is required");
	ly_status rc = ly_trust_domain_parse(sent, true, out, err);
	if (rc != LY_OK)
		return rc;
	if (own_td != NULL && strcmp(out, own_td) == 0)
		return ly_error_set(err, LY_E_INVALID,
		    "%s is our own trust domain: federation is with other trust domains", out);
	return LY_OK;
}

/* ---- bundles ---- */

/*
 * The trust domain a CA certificate's SPIFFE ID names (X509-SVID §3: a
 * signing certificate may carry one, a trust domain ID); "" when it names
 * none. `out` is LY_TRUST_DOMAIN_MAX + 1 bytes.
 */
static ly_status
cert_trust_domain(const struct ly_buf *der, char *out, struct ly_error *err)
{
	const unsigned char *p = der->data;
	X509 *x = d2i_X509(NULL, &p, (long)der->len);
	GENERAL_NAMES *names = NULL;
	ly_status rc = LY_OK;

	out[0] = '\0';
	if (x == NULL)
		return ly_error_set(err, LY_E_INVALID, "unreadable CA certificate");
	names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type != GEN_URI)
			continue;
		const unsigned char *u = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		int n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
		if (n < 9 || memcmp(u, "spiffe://", 9) != 0)
			continue;
		char uri[LY_SPIFFE_ID_MAX + 1];
		struct ly_spiffe_id id;
		if (n > LY_SPIFFE_ID_MAX || memchr(u, '\0', (size_t)n) != NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "a CA certificate's SPIFFE ID is malformed");
			break;
		}
		memcpy(uri, u, (size_t)n);
		uri[n] = '\0';
		if (ly_spiffe_id_parse_str(uri, &id, NULL) != LY_OK) {
			rc = ly_error_set(err, LY_E_INVALID, "a CA certificate's SPIFFE ID is malformed");
			break;
		}
		if (out[0] != '\0' && strcmp(out, id.trust_domain) != 0) {
			rc = ly_error_set(err, LY_E_INVALID, "a CA certificate names two trust domains");
			break;
		}
		memcpy(out, id.trust_domain, sizeof(id.trust_domain));
	}
	GENERAL_NAMES_free(names);
	X509_free(x);
	return rc;
}

ly_status
ly_admin_msg_bundle_parse(const char *td, const char *format, const uint8_t *data, size_t len,
    struct ly_bundle **out, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	ly_status rc;
	bool spiffe;

	*out = NULL;
	if (format == NULL || format[0] == '\0' || strcmp(format, "pem") == 0)
		spiffe = false;
	else if (strcmp(format, "spiffe") == 0)
		spiffe = true;
	else
		return ly_error_set(err, LY_E_INVALID, "bundle format must be pem or spiffe");
	if (data == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "the bundle for %s is empty", td);
	if (len > (spiffe ? (size_t)LY_JWKS_MAX : (size_t)LY_PEM_FILE_MAX))
		return ly_error_set(err, LY_E_LIMIT, "the bundle for %s is over %d bytes", td,
		    spiffe ? LY_JWKS_MAX : LY_PEM_FILE_MAX);
	if (memchr(data, '\0', len) != NULL)
		return ly_error_set(err, LY_E_INVALID, "the bundle for %s holds a NUL byte", td);
	rc = spiffe ? ly_bundle_parse_jwks(td, (const char *)data, len, &b, err) :
		      ly_bundle_parse_pem(td, (const char *)data, len, &b, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "bundle for %s (%s)", td, spiffe ? "spiffe" : "pem");
	if (ly_bundle_x509_authority_count(b) == 0 && ly_bundle_jwt_authority_count(b) == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "the bundle for %s holds no authority", td);
		goto out;
	}
	/* Never store one trust domain's authorities under another's name. */
	for (size_t i = 0; i < ly_bundle_x509_authority_count(b); i++) {
		char named[LY_TRUST_DOMAIN_MAX + 1];
		rc = cert_trust_domain(ly_bundle_x509_authority(b, i), named, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "bundle for %s, authority %zu", td, i + 1);
			goto out;
		}
		if (named[0] != '\0' && strcmp(named, td) != 0) {
			rc = ly_error_set(err, LY_E_INVALID,
			    "the bundle for %s holds a CA certificate of trust domain %s (authority %zu): refused", td,
			    named, i + 1);
			goto out;
		}
	}
	*out = b;
	b = NULL;
out:
	ly_bundle_free(b);
	return rc;
}

ly_status
ly_admin_msg_bundle_set_decode(const uint8_t *data, size_t len, struct ly_admin_msg_bundle_set *out,
    struct ly_error *err)
{
	Lanyard__Admin__V1__SetFederatedBundleRequest *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__set_federated_bundle_request__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->trust_domain = or_null(m->trust_domain);
	return LY_OK;
}

ly_status
ly_admin_msg_bundle_set_check(const struct ly_admin_msg_bundle_set *req, const char *own_td, struct ly_bundle **out,
    struct ly_error *err)
{
	const Lanyard__Admin__V1__SetFederatedBundleRequest *m = req->msg;
	char td[LY_TRUST_DOMAIN_MAX + 1];

	*out = NULL;
	LY_TRY(ly_admin_msg_td_check(req->trust_domain, own_td, td, err));
	if (m->bundle == NULL)
		return ly_error_set(err, LY_E_INVALID, "the bundle for %s is missing", td);
	return ly_admin_msg_bundle_parse(td, m->bundle->format, m->bundle->data.data, m->bundle->data.len, out, err);
}

void
ly_admin_msg_bundle_set_cleanup(struct ly_admin_msg_bundle_set *req)
{
	if (req->msg != NULL)
		lanyard__admin__v1__set_federated_bundle_request__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

ly_status
ly_admin_msg_bundle_delete_decode(const uint8_t *data, size_t len, struct ly_admin_msg_bundle_delete *out,
    struct ly_error *err)
{
	Lanyard__Admin__V1__DeleteFederatedBundleRequest *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__delete_federated_bundle_request__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->trust_domain = or_null(m->trust_domain);
	out->mode = or_null(m->mode);
	return LY_OK;
}

ly_status
ly_admin_msg_bundle_delete_check(const struct ly_admin_msg_bundle_delete *req, const char *own_td, char *td,
    enum ly_fed_delete_mode *mode, struct ly_error *err)
{
	LY_TRY(ly_admin_msg_td_check(req->trust_domain, own_td, td, err));
	*mode = LY_FED_DELETE_RESTRICT;
	if (req->mode != NULL)
		LY_TRY(ly_fed_delete_mode_parse(req->mode, mode, err));
	return LY_OK;
}

void
ly_admin_msg_bundle_delete_cleanup(struct ly_admin_msg_bundle_delete *req)
{
	if (req->msg != NULL)
		lanyard__admin__v1__delete_federated_bundle_request__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

ly_status
ly_admin_msg_empty_decode(const char *what, const uint8_t *data, size_t len, struct ly_error *err)
{
	if (strcmp(what, "count") == 0) {
		Lanyard__Admin__V1__CountFederatedBundlesRequest *m =
		    lanyard__admin__v1__count_federated_bundles_request__unpack(NULL, len, data);
		if (m == NULL)
			return malformed(err);
		lanyard__admin__v1__count_federated_bundles_request__free_unpacked(m, NULL);
	} else {
		Lanyard__Admin__V1__ListFederationRelationshipsRequest *m =
		    lanyard__admin__v1__list_federation_relationships_request__unpack(NULL, len, data);
		if (m == NULL)
			return malformed(err);
		lanyard__admin__v1__list_federation_relationships_request__free_unpacked(m, NULL);
	}
	return LY_OK;
}

/* ---- relationships ---- */

ly_status
ly_admin_msg_rel_decode(const uint8_t *data, size_t len, struct ly_admin_msg_rel *out, struct ly_error *err)
{
	Lanyard__Admin__V1__FederationRelationship *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__federation_relationship__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->trust_domain = or_null(m->trust_domain);
	return LY_OK;
}

ly_status
ly_admin_msg_rel_check(const struct ly_admin_msg_rel *req, const char *own_td, struct ly_admin_msg_rel_checked *out,
    struct ly_error *err)
{
	const Lanyard__Admin__V1__FederationRelationship *m = req->msg;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	LY_TRY(ly_admin_msg_td_check(req->trust_domain, own_td, out->td, err));
	out->rel.trust_domain = out->td;
	out->rel.bundle_endpoint_url = (char *)(uintptr_t)or_null(m->bundle_endpoint_url);
	out->rel.endpoint_spiffe_id = (char *)(uintptr_t)or_null(m->endpoint_spiffe_id);
	if (or_null(m->bundle_endpoint_profile) == NULL)
		return ly_error_set(err, LY_E_INVALID, "federation relationship with %s: a bundle endpoint profile is "
		    "required (https_spiffe or https_web)", out->td);
	LY_TRY(ly_fed_profile_parse(m->bundle_endpoint_profile, &out->rel.profile, err));
	LY_TRY(ly_ds_fed_rel_check(&out->rel, own_td, err));
	if (m->trust_domain_bundle != NULL) {
		rc = ly_admin_msg_bundle_parse(out->td, m->trust_domain_bundle->format, m->trust_domain_bundle->data.data,
		    m->trust_domain_bundle->data.len, &out->bundle, err);
		if (rc != LY_OK)
			return rc;
	}
	return LY_OK;
}

void
ly_admin_msg_rel_checked_cleanup(struct ly_admin_msg_rel_checked *c)
{
	ly_bundle_free(c->bundle);
	memset(c, 0, sizeof(*c));
}

void
ly_admin_msg_rel_cleanup(struct ly_admin_msg_rel *req)
{
	if (req->msg != NULL)
		lanyard__admin__v1__federation_relationship__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}
