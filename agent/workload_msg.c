/* workload_msg.c: see workload_msg.h. */
#include "agent/workload_msg.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/caps.h"
#include "lib/pbstrict.h"
#include "lib/pbstruct.h"
#include "lib/pbpack.h"
#include "lib/pbview.h"
#include "lib/spiffeid.h"
#include "lib/text.h"
#include "workload.pb-c.h"

static ly_status
pack_msg(const ProtobufCMessage *m, struct ly_buf *out, struct ly_error *err)
{
	return ly_pbpack(m, LY_RPC_RESPONSE_MAX, out, err);
}

/* ---- bundles as (trust domain ID, bytes), sorted by ID ---- */

struct bent {
	char id[sizeof("spiffe://") + LY_TRUST_DOMAIN_MAX];
	struct ly_buf val;
};

static void
bents_free(struct bent *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ly_buf_free(&v[i].val);
	free(v);
}

static int
bent_cmp(const void *pa, const void *pb)
{
	const struct bent *a = pa, *b = pb;
	return strcmp(a->id, b->id);
}

enum bent_kind { BENT_X509, BENT_JWKS };

/*
 * One entry per bundle of `set` (NULL: none): X.509 authorities DER (only
 * bundles that have some) or the JWT-only JWKS. `skip_td` (may be NULL) is
 * left out.
 */
static ly_status
collect(const struct ly_bundle_set *set, enum bent_kind kind, const char *skip_td, struct bent **out, size_t *nout,
    struct ly_error *err)
{
	ly_status rc = LY_OK;
	size_t total = set != NULL ? ly_bundle_set_count(set) : 0, n = 0;
	struct bent *v = NULL;

	*out = NULL;
	*nout = 0;
	if (total == 0)
		return LY_OK;
	v = calloc(total, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "bundles: allocating");
	for (size_t i = 0; i < total; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(set, i);
		const char *td = ly_bundle_trust_domain(b);
		if (skip_td != NULL && strcmp(td, skip_td) == 0)
			continue;
		if (kind == BENT_X509 && ly_bundle_x509_authority_count(b) == 0)
			continue;
		snprintf(v[n].id, sizeof(v[n].id), "spiffe://%s", td);
		if (kind == BENT_X509) {
			rc = ly_bundle_x509_authorities_der(b, &v[n].val, err);
		} else {
			char *json = NULL;
			rc = ly_bundle_write_jwks(b, LY_JWKS_JWT_ONLY, &json, err);
			if (rc == LY_OK) {
				v[n].val.data = (uint8_t *)json;
				v[n].val.len = strlen(json);
			}
		}
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "bundle for %s", td);
			goto out;
		}
		n++;
	}
	qsort(v, n, sizeof(*v), bent_cmp);
	*out = v;
	*nout = n;
	v = NULL;
out:
	if (v != NULL)
		bents_free(v, n);
	return rc;
}

/* ---- X509SVIDResponse ---- */

/*
 * Fills a map<string, bytes> field (a trust domain ID to its bundle) from
 * v. The protocol has three (X509SVIDResponse.federated_bundles and the two
 * bundle responses' bundles), each with its own generated entry type of the
 * same shape: one body fills any of them through the entry's descriptor, as
 * protobuf-c itself reaches fields (by their offsets). The entries borrow
 * v's strings and bytes. *ents and *ptrs (n each) are the caller's to free;
 * both NULL when n is 0.
 */
static ly_status
bundle_map(const struct bent *v, size_t n, const ProtobufCMessageDescriptor *desc, const char *what, void **ents,
    ProtobufCMessage ***ptrs, struct ly_error *err)
{
	unsigned char *e;
	ProtobufCMessage **p;

	*ents = NULL;
	*ptrs = NULL;
	if (n == 0)
		return LY_OK;
	if (desc->n_fields != 2 || desc->fields[0].type != PROTOBUF_C_TYPE_STRING ||
	    desc->fields[1].type != PROTOBUF_C_TYPE_BYTES)
		return ly_error_set(err, LY_E_INTERNAL, "%s: %s is not a map<string, bytes> entry", what, desc->name);
	e = calloc(n, desc->sizeof_message);
	p = calloc(n, sizeof(*p));
	if (e == NULL || p == NULL) {
		free(e);
		free(p);
		return ly_error_set(err, LY_E_NOMEM, "%s: allocating", what);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char *m = e + i * desc->sizeof_message;
		char *key = ly_pbview_str(v[i].id);
		ProtobufCBinaryData value = { .len = v[i].val.len, .data = v[i].val.data };

		protobuf_c_message_init(desc, m);
		memcpy(m + desc->fields[0].offset, &key, sizeof(key));
		memcpy(m + desc->fields[1].offset, &value, sizeof(value));
		p[i] = (ProtobufCMessage *)(void *)m;
	}
	*ents = e;
	*ptrs = p;
	return LY_OK;
}

ly_status
ly_wmsg_x509svid_response(const struct ly_cache_identities *ids, const struct ly_bundle *bundle,
    const struct ly_bundle_set *federated, struct ly_buf *out, struct ly_error *err)
{
	ly_status rc;
	X509SVIDResponse resp = X509_SVIDRESPONSE__INIT;
	X509SVID *items = NULL;
	X509SVID **ptrs = NULL;
	struct ly_buf *chains = NULL;
	struct ly_buf own = LY_BUF_INIT;
	struct bent *fed = NULL;
	size_t nfed = 0, n = ids != NULL ? ids->n : 0;
	void *fents = NULL;
	ProtobufCMessage **fptrs = NULL;

	if (n == 0)
		return ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: no identity");
	if (bundle == NULL)
		return ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: no trust bundle");
	for (size_t i = 0; i < n; i++) {
		if (!ids->v[i].has_svid)
			return ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: identity %s has no SVID",
			    ids->v[i].entry->spiffe_id);
	}
	rc = ly_bundle_x509_authorities_der(bundle, &own, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "X509SVIDResponse");
	if (own.len == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: the bundle has no X.509 authority");
		goto out;
	}
	items = calloc(n, sizeof(*items));
	ptrs = calloc(n, sizeof(*ptrs));
	chains = calloc(n, sizeof(*chains));
	if (items == NULL || ptrs == NULL || chains == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "X509SVIDResponse: allocating");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct ly_cache_item *it = &ids->v[i];
		X509SVID *s = &items[i];
		x509_svid__init(s);
		if ((rc = ly_buf_set(&chains[i], it->leaf.der, it->leaf.len, err)) != LY_OK ||
		    (rc = ly_buf_append(&chains[i], it->intermediates.der, it->intermediates.len, LY_CHAIN_DER_MAX,
			 err)) != LY_OK)
			goto out;
		s->spiffe_id = ly_pbview_str(it->entry->spiffe_id);
		s->x509_svid.data = chains[i].data;
		s->x509_svid.len = chains[i].len;
		s->x509_svid_key.data = ly_pbview_bytes(it->key.der);
		s->x509_svid_key.len = it->key.len;
		s->bundle.data = own.data;
		s->bundle.len = own.len;
		if (it->entry->hint != NULL)
			s->hint = ly_pbview_str(it->entry->hint);
		ptrs[i] = s;
	}
	resp.n_svids = n;
	resp.svids = ptrs;
	rc = collect(federated, BENT_X509, ly_bundle_trust_domain(bundle), &fed, &nfed, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "X509SVIDResponse");
		goto out;
	}
	rc = bundle_map(fed, nfed, &x509_svidresponse__federated_bundles_entry__descriptor, "X509SVIDResponse", &fents,
	    &fptrs, err);
	if (rc != LY_OK)
		goto out;
	resp.n_federated_bundles = nfed;
	resp.federated_bundles = (X509SVIDResponse__FederatedBundlesEntry **)fptrs;
	rc = pack_msg(&resp.base, out, err);
out:
	if (chains != NULL) {
		for (size_t i = 0; i < n; i++)
			ly_buf_free(&chains[i]);
	}
	free(chains);
	free(ptrs);
	free(items);
	free(fents);
	free(fptrs);
	bents_free(fed, nfed);
	ly_buf_free(&own);
	return rc;
}

/* ---- bundle responses ---- */

ly_status
ly_wmsg_x509bundles_response(const struct ly_bundle_set *set, struct ly_buf *out, struct ly_error *err)
{
	ly_status rc;
	X509BundlesResponse resp = X509_BUNDLES_RESPONSE__INIT;
	void *ents = NULL;
	ProtobufCMessage **ptrs = NULL;
	struct bent *v = NULL;
	size_t n = 0;

	rc = collect(set, BENT_X509, NULL, &v, &n, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "X509BundlesResponse");
	rc = bundle_map(v, n, &x509_bundles_response__bundles_entry__descriptor, "X509BundlesResponse", &ents, &ptrs,
	    err);
	if (rc != LY_OK)
		goto out;
	resp.n_bundles = n;
	resp.bundles = (X509BundlesResponse__BundlesEntry **)ptrs;
	rc = pack_msg(&resp.base, out, err);
out:
	free(ents);
	free(ptrs);
	bents_free(v, n);
	return rc;
}

ly_status
ly_wmsg_jwtbundles_response(const struct ly_bundle_set *set, struct ly_buf *out, struct ly_error *err)
{
	ly_status rc;
	JWTBundlesResponse resp = JWTBUNDLES_RESPONSE__INIT;
	void *ents = NULL;
	ProtobufCMessage **ptrs = NULL;
	struct bent *v = NULL;
	size_t n = 0;

	rc = collect(set, BENT_JWKS, NULL, &v, &n, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "JWTBundlesResponse");
	rc = bundle_map(v, n, &jwtbundles_response__bundles_entry__descriptor, "JWTBundlesResponse", &ents, &ptrs, err);
	if (rc != LY_OK)
		goto out;
	resp.n_bundles = n;
	resp.bundles = (JWTBundlesResponse__BundlesEntry **)ptrs;
	rc = pack_msg(&resp.base, out, err);
out:
	free(ents);
	free(ptrs);
	bents_free(v, n);
	return rc;
}

/* ---- JWT-SVIDs ---- */

ly_status
ly_wmsg_jwtsvid_response(const struct ly_wmsg_jwtsvid *svids, size_t n, struct ly_buf *out, struct ly_error *err)
{
	ly_status rc;
	JWTSVIDResponse resp = JWTSVIDRESPONSE__INIT;
	JWTSVID *items = NULL, **ptrs = NULL;

	if (n == 0 || svids == NULL)
		return ly_error_set(err, LY_E_INVALID, "JWTSVIDResponse: no JWT-SVID");
	items = calloc(n, sizeof(*items));
	ptrs = calloc(n, sizeof(*ptrs));
	if (items == NULL || ptrs == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "JWTSVIDResponse: allocating");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (svids[i].spiffe_id == NULL || svids[i].token == NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "JWTSVIDResponse: JWT-SVID %zu lacks an ID or a token", i);
			goto out;
		}
		jwtsvid__init(&items[i]);
		items[i].spiffe_id = ly_pbview_str(svids[i].spiffe_id);
		items[i].svid = ly_pbview_str(svids[i].token);
		if (svids[i].hint != NULL)
			items[i].hint = ly_pbview_str(svids[i].hint);
		ptrs[i] = &items[i];
	}
	resp.n_svids = n;
	resp.svids = ptrs;
	rc = pack_msg(&resp.base, out, err);
out:
	free(items);
	free(ptrs);
	return rc;
}

ly_status
ly_wmsg_validate_response(const char *spiffe_id, const json_t *claims, struct ly_buf *out, struct ly_error *err)
{
	ValidateJWTSVIDResponse resp;
	Google__Protobuf__Struct *s = NULL;

	/* The __init function: the INIT macro casts a const string (-Wcast-qual). */
	validate_jwtsvidresponse__init(&resp);
	if (spiffe_id == NULL || claims == NULL)
		return ly_error_set(err, LY_E_INVALID, "ValidateJWTSVIDResponse: a SPIFFE ID and claims are required");
	ly_status rc = ly_pbstruct_from_json(claims, &s, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "ValidateJWTSVIDResponse");
	resp.spiffe_id = ly_pbview_str(spiffe_id);
	resp.claims = s;
	rc = pack_msg(&resp.base, out, err);
	ly_pbstruct_free(s);
	return rc;
}

/* ---- requests ---- */

static const uint8_t empty_input[1];

static void
plain_free(ProtobufCMessage *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
}

/* lib/pbstrict.h: the one strict unpack (a NUL in a string, a field twice). */
static ly_status
unpack_strict(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
    void (*release)(ProtobufCMessage *), ProtobufCMessage **out, struct ly_error *err)
{
	return ly_pb_unpack_strict(desc, data, len, LY_WORKLOAD_REQUEST_MAX, release, out, err);
}

void
ly_wmsg_jwt_request_cleanup(struct ly_wmsg_jwt_request *req)
{
	if (req == NULL)
		return;
	if (req->msg != NULL)
		protobuf_c_message_free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

ly_status
ly_wmsg_parse_jwtsvid_request(const uint8_t *data, size_t len, struct ly_wmsg_jwt_request *out,
    struct ly_error *err)
{
	ProtobufCMessage *m = NULL;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	LY_TRY(unpack_strict(&jwtsvidrequest__descriptor, data, len, plain_free, &m, err));
	JWTSVIDRequest *req = (JWTSVIDRequest *)(void *)m;
	if (req->n_audience == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "JWTSVIDRequest: audience is required");
		goto out;
	}
	if (req->n_audience > LY_JWT_AUDIENCES_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "JWTSVIDRequest: more than %d audiences", LY_JWT_AUDIENCES_MAX);
		goto out;
	}
	for (size_t i = 0; i < req->n_audience; i++) {
		rc = ly_text_check("audience", req->audience[i], LY_JWT_AUDIENCE_MAX, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "JWTSVIDRequest: audience %zu", i);
			goto out;
		}
	}
	if (req->spiffe_id != NULL && req->spiffe_id[0] != '\0') {
		struct ly_spiffe_id id;
		rc = ly_spiffe_id_parse_str(req->spiffe_id, &id, err);
		if (rc == LY_OK && ly_spiffe_id_is_trust_domain_id(&id))
			rc = ly_error_set(err, LY_E_INVALID, "%s has no path: it names no workload", id.id);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "JWTSVIDRequest: spiffe_id");
			goto out;
		}
		out->spiffe_id = req->spiffe_id;
	}
	out->audience = (const char *const *)req->audience;
	out->n_audience = req->n_audience;
	out->msg = m;
	m = NULL;
	rc = LY_OK;
out:
	if (m != NULL) {
		protobuf_c_message_free_unpacked(m, NULL);
		memset(out, 0, sizeof(*out));
	}
	return rc;
}

static void
validate_msg_free(ProtobufCMessage *m)
{
	if (m == NULL)
		return;
	ValidateJWTSVIDRequest *req = (ValidateJWTSVIDRequest *)(void *)m;
	/*
	 * The whole allocation, not strlen: a token with an embedded NUL (a
	 * refused request) has bytes after it. Absent, the field points at
	 * protobuf-c's constant empty string, which is not ours to write.
	 */
	if (req->svid != NULL && req->svid != protobuf_c_empty_string)
		OPENSSL_cleanse(req->svid, malloc_usable_size(req->svid));
	protobuf_c_message_free_unpacked(m, NULL);
}

void
ly_wmsg_validate_request_cleanup(struct ly_wmsg_validate_request *req)
{
	if (req == NULL)
		return;
	validate_msg_free(req->msg);
	memset(req, 0, sizeof(*req));
}

ly_status
ly_wmsg_parse_validate_request(const uint8_t *data, size_t len, struct ly_wmsg_validate_request *out,
    struct ly_error *err)
{
	ProtobufCMessage *m = NULL;
	ly_status rc;

	memset(out, 0, sizeof(*out));
	LY_TRY(unpack_strict(&validate_jwtsvidrequest__descriptor, data, len, validate_msg_free, &m, err));
	ValidateJWTSVIDRequest *req = (ValidateJWTSVIDRequest *)(void *)m;
	rc = ly_text_check("audience", req->audience, LY_JWT_AUDIENCE_MAX, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "ValidateJWTSVIDRequest");
		goto out;
	}
	size_t n = strnlen(req->svid, LY_JWT_MAX + 1);
	if (n == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "ValidateJWTSVIDRequest: svid is required");
		goto out;
	}
	if (n > LY_JWT_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "ValidateJWTSVIDRequest: svid over %d bytes", LY_JWT_MAX);
		goto out;
	}
	out->audience = req->audience;
	out->svid = req->svid;
	out->svid_len = n;
	out->msg = m;
	m = NULL;
	rc = LY_OK;
out:
	validate_msg_free(m);
	return rc;
}

ly_status
ly_wmsg_parse_empty_request(enum ly_wmsg_empty_kind kind, const uint8_t *data, size_t len, struct ly_error *err)
{
	const ProtobufCMessageDescriptor *desc;
	switch (kind) {
	case LY_WMSG_X509SVID_REQUEST:
		desc = &x509_svidrequest__descriptor;
		break;
	case LY_WMSG_X509BUNDLES_REQUEST:
		desc = &x509_bundles_request__descriptor;
		break;
	case LY_WMSG_JWTBUNDLES_REQUEST:
		desc = &jwtbundles_request__descriptor;
		break;
	default:
		return ly_error_set(err, LY_E_INTERNAL, "unknown request kind");
	}
	if (len > LY_WORKLOAD_REQUEST_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s over %d bytes", desc->name, LY_WORKLOAD_REQUEST_MAX);
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data != NULL ? data : empty_input);
	if (m == NULL)
		return ly_error_set(err, LY_E_INVALID, "not a valid %s", desc->name);
	protobuf_c_message_free_unpacked(m, NULL);
	return LY_OK;
}

/* ---- grpc.health.v1.HealthCheckRequest ---------------------------------------------------------- */

ly_status
ly_wmsg_parse_health_request(const uint8_t *data, size_t len, bool *known, struct ly_error *err)
{
	static const char *const services[] = { "", "SpiffeWorkloadAPI" };
	const char *svc = "";
	size_t svc_len = 0, pos = 0;
	bool seen = false;

	*known = false;
	if (len > LY_WORKLOAD_REQUEST_MAX)
		return ly_error_set(err, LY_E_LIMIT, "HealthCheckRequest over %d bytes", LY_WORKLOAD_REQUEST_MAX);
	while (pos < len) {
		struct ly_pb_field f;
		const char *why = "";
		if (!ly_pb_field_next(data, len, &pos, &f, &why))
			return ly_error_set(err, LY_E_INVALID, "not a valid HealthCheckRequest: %s", why);
		if (f.number != 1)
			continue; /* unknown fields pass (proto3) */
		if (f.wire != 2)
			return ly_error_set(err, LY_E_INVALID, "HealthCheckRequest: service is not a string");
		if (seen)
			return ly_error_set(err, LY_E_INVALID, "HealthCheckRequest: service given twice");
		seen = true;
		svc = (const char *)f.data;
		svc_len = f.len;
	}
	if (memchr(svc, 0, svc_len) != NULL)
		return ly_error_set(err, LY_E_INVALID, "HealthCheckRequest: service holds a NUL");
	for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
		if (strlen(services[i]) == svc_len && memcmp(services[i], svc, svc_len) == 0)
			*known = true;
	return LY_OK;
}
