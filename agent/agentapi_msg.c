/*
 * agentapi_msg.c: the Agent service's answers as the agent takes them
 * (agentapi_msg.h). Unpack, check, convert; no state.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "agent/agentapi_msg.h"
#include "lib/caps.h"
#include "lib/spiffeid.h"

/*
 * Entry.federates_with into `e` (its spiffe_id set): each a valid trust
 * domain name (bare, or "spiffe://td": stored bare), not the entry's own
 * trust domain, none twice, at most LY_ENTRY_FEDERATES_WITH_MAX.
 */
static ly_status
federates_from_pb(const Lanyard__Agent__V1__Entry *m, struct ly_entry *e, struct ly_error *err)
{
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_spiffe_id id;
	ly_status rc;

	if (m->n_federates_with == 0)
		return LY_OK;
	if (m->n_federates_with > LY_ENTRY_FEDERATES_WITH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry: federates with more than %d trust domains",
		    LY_ENTRY_FEDERATES_WITH_MAX);
	/* Our own trust domain is never federated: the entry's SPIFFE ID names it. */
	if (e->spiffe_id == NULL || ly_spiffe_id_parse_str(e->spiffe_id, &id, NULL) != LY_OK)
		return ly_error_set(err, LY_E_INVALID, "entry: federates_with without a valid SPIFFE ID");
	for (size_t i = 0; i < m->n_federates_with; i++) {
		if (m->federates_with[i] == NULL)
			return ly_error_set(err, LY_E_INVALID, "entry: federated trust domain %zu empty", i);
		if ((rc = ly_trust_domain_parse(m->federates_with[i], true, td, err)) != LY_OK)
			return ly_error_wrap(err, rc, "entry: federated trust domain %zu", i);
		if (strcmp(td, id.trust_domain) == 0)
			return ly_error_set(err, LY_E_INVALID, "entry: federates with its own trust domain %s", td);
		for (size_t j = 0; j < e->n_federates_with; j++)
			if (strcmp(e->federates_with[j], td) == 0)
				return ly_error_set(err, LY_E_INVALID, "entry: federates with %s twice", td);
		LY_TRY(ly_entry_add_federates_with(e, td, err));
	}
	return LY_OK;
}

ly_status
ly_agentapi_entry_from_pb(const Lanyard__Agent__V1__Entry *m, struct ly_entry **out, struct ly_error *err)
{
	struct ly_entry *e = NULL;
	ly_status rc;

	*out = NULL;
	if (m == NULL)
		return ly_error_set(err, LY_E_INVALID, "entry: empty");
	if (m->n_selectors > LY_SELECTORS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry: more than %d selectors", LY_SELECTORS_MAX);
	if (m->n_dns_names > LY_DNS_NAMES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "entry: more than %d DNS names", LY_DNS_NAMES_MAX);
	LY_TRY(ly_entry_new(&e, err));
	if ((rc = ly_entry_set_string(&e->entry_id, m->entry_id, err)) != LY_OK ||
	    (rc = ly_entry_set_string(&e->spiffe_id, m->spiffe_id, err)) != LY_OK ||
	    (rc = ly_entry_set_string(&e->parent_id, m->parent_id, err)) != LY_OK)
		goto out;
	if (m->hint != NULL && m->hint[0] != '\0' && (rc = ly_entry_set_string(&e->hint, m->hint, err)) != LY_OK)
		goto out;
	if (m->n_selectors > 0) {
		if ((e->selectors = calloc(m->n_selectors, sizeof(*e->selectors))) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "entry: out of memory");
			goto out;
		}
		for (size_t i = 0; i < m->n_selectors; i++) {
			const Lanyard__Agent__V1__Selector *sel = m->selectors[i];
			if (sel == NULL || sel->type == NULL || sel->value == NULL) {
				rc = ly_error_set(err, LY_E_INVALID, "entry: selector %zu empty", i);
				goto out;
			}
			if ((rc = ly_selector_set(&e->selectors[i], sel->type, sel->value, err)) != LY_OK) {
				(void)ly_error_wrap(err, rc, "entry: selector %zu", i);
				goto out;
			}
			e->n_selectors = i + 1;
		}
	}
	for (size_t i = 0; i < m->n_dns_names; i++) {
		if (m->dns_names[i] == NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "entry: DNS name %zu empty", i);
			goto out;
		}
		if ((rc = ly_entry_add_dns_name(e, m->dns_names[i], err)) != LY_OK)
			goto out;
	}
	e->x509_svid_ttl = m->x509_svid_ttl;
	e->jwt_svid_ttl = m->jwt_svid_ttl;
	e->node = m->node != 0;
	e->admin = m->admin != 0;
	e->downstream = m->downstream != 0;
	e->revision = m->revision;
	e->created_at = m->created_at;
	if ((rc = federates_from_pb(m, e, err)) != LY_OK)
		goto out;
	*out = e;
	e = NULL;
	rc = LY_OK;
out:
	ly_entry_free(e);
	return rc;
}

/*
 * A Bundle into a new bundle for `td`. Ours needs an X.509 authority (it
 * anchors our SVIDs and the server's); a federated one may have none (a
 * JWT-only federation, or every key revoked: SPIFFE Trust Domain and
 * Bundle §4.1.3).
 */
static ly_status
bundle_convert(const Lanyard__Agent__V1__Bundle *m, const char *td, bool need_x509, struct ly_bundle **out,
    struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	EVP_PKEY *pk = NULL;
	ly_status rc;

	*out = NULL;
	if (m == NULL)
		return ly_error_set(err, LY_E_INVALID, "bundle: absent");
	if (m->trust_domain == NULL || strcmp(m->trust_domain, td) != 0)
		return ly_error_set(err, LY_E_INVALID, "bundle: for another trust domain than %s", td);
	if (need_x509 && m->n_x509_authorities == 0)
		return ly_error_set(err, LY_E_INVALID, "bundle: no X.509 authority");
	if (m->n_x509_authorities > LY_BUNDLE_CERTS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "bundle: more than %d X.509 authorities", LY_BUNDLE_CERTS_MAX);
	if (m->n_jwt_authorities > LY_JWKS_KEYS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "bundle: more than %d JWT authorities", LY_JWKS_KEYS_MAX);
	if (m->sequence > INT64_MAX)
		return ly_error_set(err, LY_E_LIMIT, "bundle: sequence over INT64_MAX");
	LY_TRY(ly_bundle_new(td, &b, err));
	for (size_t i = 0; i < m->n_x509_authorities; i++) {
		rc = ly_bundle_add_x509_authority(b, m->x509_authorities[i].data, m->x509_authorities[i].len, err);
		if (rc != LY_OK) {
			(void)ly_error_wrap(err, rc, "bundle: X.509 authority %zu", i);
			goto out;
		}
	}
	for (size_t i = 0; i < m->n_jwt_authorities; i++) {
		const Lanyard__Agent__V1__JWTAuthority *j = m->jwt_authorities[i];
		if (j == NULL || j->kid == NULL || j->public_key.len == 0) {
			rc = ly_error_set(err, LY_E_INVALID, "bundle: JWT authority %zu empty", i);
			goto out;
		}
		if (j->public_key.len > LY_CERT_DER_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "bundle: JWT authority %zu over %d bytes", i, LY_CERT_DER_MAX);
			goto out;
		}
		const unsigned char *p = j->public_key.data;
		pk = d2i_PUBKEY(NULL, &p, (long)j->public_key.len);
		if (pk == NULL || p != j->public_key.data + j->public_key.len) {
			rc = ly_error_openssl(err, LY_E_INVALID, "bundle: JWT authority %zu: not one SubjectPublicKeyInfo",
			    i);
			goto out;
		}
		if ((rc = ly_bundle_add_jwt_authority(b, j->kid, pk, err)) != LY_OK) {
			(void)ly_error_wrap(err, rc, "bundle: JWT authority %zu", i);
			goto out;
		}
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	if ((rc = ly_bundle_update_sequence(b, m->sequence, err)) != LY_OK)
		goto out;
	if (m->refresh_hint > 0 && (rc = ly_bundle_update_refresh_hint(b, (uint64_t)m->refresh_hint, err)) != LY_OK)
		goto out;
	*out = b;
	b = NULL;
out:
	EVP_PKEY_free(pk);
	ly_bundle_free(b);
	return rc;
}

ly_status
ly_agentapi_bundle_from_pb(const Lanyard__Agent__V1__Bundle *m, const char *td, struct ly_bundle **out,
    struct ly_error *err)
{
	return bundle_convert(m, td, true, out, err);
}

ly_status
ly_agentapi_federated_parse(const uint8_t *data, size_t len, const char *own_td, ly_agentapi_fed_refused_fn refused,
    void *arg, struct ly_agentapi_federated *out, struct ly_error *err)
{
	Lanyard__Agent__V1__FederatedBundles *m = NULL;
	struct ly_bundle *b = NULL;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	struct ly_error e;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__agent__v1__federated_bundles__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed FederatedBundles");
	/* One slot of the agent's set is ours. */
	if (m->n_bundles >= LY_BUNDLE_SET_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "FederatedBundles: %zu bundles (at most %d)", m->n_bundles,
		    LY_BUNDLE_SET_MAX - 1);
		goto out;
	}
	if ((rc = ly_bundle_set_new(&out->set, err)) != LY_OK)
		goto out;
	for (size_t i = 0; i < m->n_bundles; i++) {
		const Lanyard__Agent__V1__Bundle *bm = m->bundles[i];
		/* What names a bundle must be right, or the answer as a whole is not trusted. */
		if (bm == NULL || bm->trust_domain == NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "FederatedBundles: bundle %zu names no trust domain", i);
			goto out;
		}
		if ((rc = ly_trust_domain_parse(bm->trust_domain, false, td, err)) != LY_OK) {
			(void)ly_error_wrap(err, rc, "FederatedBundles: bundle %zu", i);
			goto out;
		}
		if (strcmp(td, own_td) == 0) {
			rc = ly_error_set(err, LY_E_INVALID, "FederatedBundles: bundle %zu is for our own trust domain %s", i,
			    td);
			goto out;
		}
		bool dup = ly_bundle_set_find(out->set, td) != NULL;
		for (size_t j = 0; !dup && j < out->n_refused; j++)
			dup = strcmp(out->refused[j], td) == 0;
		if (dup) {
			rc = ly_error_set(err, LY_E_INVALID, "FederatedBundles: trust domain %s given twice", td);
			goto out;
		}
		/* Its content: one bad bundle is left out (reported), the others go on. */
		ly_error_clear(&e);
		if (bundle_convert(bm, td, false, &b, &e) != LY_OK) {
			if ((out->refused[out->n_refused] = strdup(td)) == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
				goto out;
			}
			out->n_refused++;
			if (refused != NULL)
				refused(arg, td, &e);
			continue;
		}
		if ((rc = ly_bundle_set_put(out->set, b, err)) != LY_OK)
			goto out;
		b = NULL;
	}
	out->sequence = m->sequence;
	rc = LY_OK;
out:
	ly_bundle_free(b);
	if (m != NULL)
		lanyard__agent__v1__federated_bundles__free_unpacked(m, NULL);
	if (rc != LY_OK)
		ly_agentapi_federated_cleanup(out);
	return rc;
}

void
ly_agentapi_federated_cleanup(struct ly_agentapi_federated *f)
{
	ly_bundle_set_free(f->set);
	for (size_t i = 0; i < f->n_refused; i++)
		free(f->refused[i]);
	memset(f, 0, sizeof(*f));
}

ly_status
ly_agentapi_bundle_parse(const uint8_t *data, size_t len, const char *td, struct ly_bundle **out,
    struct ly_error *err)
{
	Lanyard__Agent__V1__Bundle *m;
	ly_status rc;

	*out = NULL;
	if ((m = lanyard__agent__v1__bundle__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed answer");
	if ((rc = ly_agentapi_bundle_from_pb(m, td, out, err)) != LY_OK)
		(void)ly_error_wrap(err, rc, "bundle refused");
	lanyard__agent__v1__bundle__free_unpacked(m, NULL);
	return rc;
}

ly_status
ly_agentapi_update_parse(const uint8_t *data, size_t len, ly_agentapi_refused_fn refused, void *arg,
    struct ly_agentapi_update *out, struct ly_error *err)
{
	Lanyard__Agent__V1__EntriesUpdate *m;
	struct ly_error e;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__agent__v1__entries_update__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed EntriesUpdate");
	out->msg = m;
	if (m->n_entries > LY_AGENT_ENTRIES_MAX || m->n_deleted_entry_ids > LY_AGENT_ENTRIES_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "update of %zu entries and %zu deletions: over %d", m->n_entries,
		    m->n_deleted_entry_ids, LY_AGENT_ENTRIES_MAX);
		goto fail;
	}
	if ((out->u.entries = calloc(m->n_entries + 1, sizeof(*out->u.entries))) == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < m->n_entries; i++) {
		if (ly_agentapi_entry_from_pb(m->entries[i], &out->u.entries[out->u.n_entries], &e) != LY_OK) {
			out->n_refused++;
			if (refused != NULL)
				refused(arg,
				    m->entries[i] != NULL && m->entries[i]->entry_id != NULL ? m->entries[i]->entry_id : "?",
				    &e);
			continue;
		}
		out->u.n_entries++;
	}
	for (size_t i = 0; i < m->n_deleted_entry_ids; i++) {
		if (m->deleted_entry_ids[i] == NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "empty deleted entry ID");
			goto fail;
		}
	}
	out->u.revision = m->revision;
	out->u.snapshot = m->snapshot != 0;
	out->u.deleted_ids = (const char *const *)m->deleted_entry_ids;
	out->u.n_deleted = m->n_deleted_entry_ids;
	out->bundle_sequence = m->bundle_sequence;
	out->federated_sequence = m->federated_sequence;
	return LY_OK;
fail:
	ly_agentapi_update_cleanup(out);
	return rc;
}

void
ly_agentapi_update_cleanup(struct ly_agentapi_update *up)
{
	for (size_t i = 0; up->u.entries != NULL && i < up->u.n_entries; i++)
		ly_entry_free(up->u.entries[i]);
	free(up->u.entries);
	if (up->msg != NULL)
		lanyard__agent__v1__entries_update__free_unpacked(up->msg, NULL);
	memset(up, 0, sizeof(*up));
}

ly_status
ly_agentapi_svid_check(const Lanyard__Agent__V1__AgentSVID *m, const char *expect_id, struct ly_error *err)
{
	if (m == NULL)
		return ly_error_set(err, LY_E_INVALID, "no SVID");
	if (m->spiffe_id == NULL || expect_id == NULL || strcmp(m->spiffe_id, expect_id) != 0)
		return ly_error_set(err, LY_E_UNTRUSTED, "the server signed an SVID for another ID than our CSR's");
	if (m->cert_chain.len == 0 || m->cert_chain.len > LY_CHAIN_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "agent SVID chain empty or over its cap");
	return LY_OK;
}

ly_status
ly_agentapi_agent_svid_parse(const uint8_t *data, size_t len, const char *expect_id,
    Lanyard__Agent__V1__AgentSVID **out, struct ly_error *err)
{
	Lanyard__Agent__V1__AgentSVID *m;
	ly_status rc;

	*out = NULL;
	if ((m = lanyard__agent__v1__agent_svid__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed AgentSVID");
	if ((rc = ly_agentapi_svid_check(m, expect_id, err)) != LY_OK) {
		ly_agentapi_agent_svid_free(m);
		return rc;
	}
	*out = m;
	return LY_OK;
}

void
ly_agentapi_agent_svid_free(Lanyard__Agent__V1__AgentSVID *m)
{
	if (m != NULL)
		lanyard__agent__v1__agent_svid__free_unpacked(m, NULL);
}

ly_status
ly_agentapi_attest_parse(const uint8_t *data, size_t len, Lanyard__Agent__V1__AttestAgentResponse **out,
    struct ly_error *err)
{
	if ((*out = lanyard__agent__v1__attest_agent_response__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed AttestAgentResponse");
	return LY_OK;
}

void
ly_agentapi_attest_free(Lanyard__Agent__V1__AttestAgentResponse *m)
{
	if (m == NULL)
		return;
	if (m->ticket.data != NULL)
		OPENSSL_cleanse(m->ticket.data, m->ticket.len);
	lanyard__agent__v1__attest_agent_response__free_unpacked(m, NULL);
}

bool
ly_agentapi_attest_has_challenge(const Lanyard__Agent__V1__AttestAgentResponse *m)
{
	return m->challenge_nonce.len > 0;
}

bool
ly_agentapi_attest_has_ticket(const Lanyard__Agent__V1__AttestAgentResponse *m)
{
	return m->agent_id != NULL && m->agent_id[0] != '\0' && m->ticket.len > 0;
}

ly_status
ly_agentapi_attest_ticket_id(const Lanyard__Agent__V1__AttestAgentResponse *m, char *out, size_t size,
    struct ly_error *err)
{
	size_t n = m->agent_id != NULL ? strlen(m->agent_id) : 0;

	if (size > 0)
		out[0] = '\0';
	if (n == 0)
		return ly_error_set(err, LY_E_INVALID, "no agent ID");
	if (n >= size || n > LY_SPIFFE_ID_MAX)
		return ly_error_set(err, LY_E_LIMIT, "agent ID over its cap");
	memcpy(out, m->agent_id, n + 1);
	return LY_OK;
}

ly_status
ly_agentapi_batch_parse(const uint8_t *data, size_t len, Lanyard__Agent__V1__BatchNewX509SVIDResponse **out,
    struct ly_error *err)
{
	if ((*out = lanyard__agent__v1__batch_new_x509_svidresponse__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed answer");
	return LY_OK;
}

void
ly_agentapi_batch_free(Lanyard__Agent__V1__BatchNewX509SVIDResponse *m)
{
	if (m != NULL)
		lanyard__agent__v1__batch_new_x509_svidresponse__free_unpacked(m, NULL);
}

void
ly_agentapi_batch_match(const Lanyard__Agent__V1__BatchNewX509SVIDResponse *resp, const char *const *ids, size_t n,
    const Lanyard__Agent__V1__X509SVIDResult **answer, const Lanyard__Agent__V1__X509SVIDResult **refused)
{
	for (size_t i = 0; i < n; i++)
		answer[i] = refused[i] = NULL;
	for (size_t r = 0; r < resp->n_results; r++) {
		const Lanyard__Agent__V1__X509SVIDResult *res = resp->results[r];
		size_t i = n;
		if (res == NULL || res->entry_id == NULL)
			continue;
		if (r < n && ids[r] != NULL && strcmp(ids[r], res->entry_id) == 0)
			i = r;
		for (size_t k = 0; i == n && k < n; k++) {
			if (ids[k] != NULL && strcmp(ids[k], res->entry_id) == 0)
				i = k;
		}
		if (i == n || answer[i] != NULL || refused[i] != NULL)
			continue; /* not ours, or answered twice: the first answer stands */
		if (res->status_code != 0)
			refused[i] = res;
		else
			answer[i] = res;
	}
}

ly_status
ly_agentapi_jwt_parse(const uint8_t *data, size_t len, Lanyard__Agent__V1__NewJWTSVIDResponse **out,
    struct ly_error *err)
{
	Lanyard__Agent__V1__NewJWTSVIDResponse *m;

	*out = NULL;
	m = lanyard__agent__v1__new_jwtsvidresponse__unpack(NULL, len, data);
	if (m == NULL || m->token == NULL || m->token[0] == '\0' || strlen(m->token) > LY_JWT_MAX) {
		ly_agentapi_jwt_free(m);
		return ly_error_set(err, LY_E_INVALID, "malformed answer");
	}
	*out = m;
	return LY_OK;
}

void
ly_agentapi_jwt_free(Lanyard__Agent__V1__NewJWTSVIDResponse *m)
{
	if (m == NULL)
		return;
	if (m->token != NULL)
		OPENSSL_cleanse(m->token, strlen(m->token));
	lanyard__agent__v1__new_jwtsvidresponse__free_unpacked(m, NULL);
}
