/* sds_msg.c: see sds_msg.h. */
#include "agent/sds_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "envoy_discovery.pb-c.h"
#include "envoy_tls.pb-c.h"
#include "lib/caps.h"
#include "lib/der.h"
#include "lib/pbpack.h"
#include "lib/pbview.h"
#include "lib/text.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest DiscoveryRequest;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse DiscoveryResponse;
typedef Envoy__Config__Core__V3__DataSource DataSource;
typedef Envoy__Config__Core__V3__TypedExtensionConfig TypedExtensionConfig;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate TlsCertificate;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext ValidationContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SPIFFECertValidatorConfig SpiffeConfig;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SPIFFECertValidatorConfig__TrustDomain SpiffeTrustDomain;

#define SPIFFE_PREFIX "spiffe://"

/* ---- requests ---- */

/* ly_text_check's rule (lib/text.h), where `may_be_empty` also lets "" through. */
static ly_status
check_text(const char *what, const char *s, size_t cap, bool may_be_empty, struct ly_error *err)
{
	if (may_be_empty && s[0] == '\0')
		return LY_OK;
	return ly_text_check(what, s, cap, err);
}

static const uint8_t empty_input[1];

void
ly_sds_request_cleanup(struct ly_sds_request *req)
{
	if (req == NULL)
		return;
	free(req->names);
	if (req->msg != NULL)
		protobuf_c_message_free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

static const char *
str_or_empty(const char *s)
{
	return s != NULL ? s : "";
}

/* Reads the node: who it is, its version, and the metadata flag. */
static ly_status
parse_node(const Envoy__Config__Core__V3__Node *node, struct ly_sds_request *out, struct ly_error *err)
{
	out->node_id = out->node_cluster = out->user_agent_name = "";
	if (node == NULL)
		return LY_OK;
	out->node_id = str_or_empty(node->id);
	out->node_cluster = str_or_empty(node->cluster);
	out->user_agent_name = str_or_empty(node->user_agent_name);
	LY_TRY(check_text("node.id", out->node_id, LY_SDS_NAME_MAX, true, err));
	LY_TRY(check_text("node.cluster", out->node_cluster, LY_SDS_NAME_MAX, true, err));
	LY_TRY(check_text("node.user_agent_name", out->user_agent_name, LY_SDS_NAME_MAX, true, err));
	if (node->user_agent_version_type_case ==
		ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_BUILD_VERSION &&
	    node->user_agent_build_version != NULL && node->user_agent_build_version->version != NULL) {
		const Envoy__Config__Core__V3__SemanticVersion *v = node->user_agent_build_version->version;
		out->has_build_version = true;
		out->major = v->major_number;
		out->minor = v->minor_number;
		out->patch = v->patch;
	}
	if (node->metadata != NULL) {
		for (size_t i = 0; i < node->metadata->n_fields; i++) {
			const Google__Protobuf__Struct__FieldsEntry *f = node->metadata->fields[i];
			if (f->key == NULL || strcmp(f->key, LY_SDS_META_DISABLE_SPIFFE) != 0 || f->value == NULL)
				continue;
			/* The last one wins, as in a map. */
			out->meta_disable_spiffe = f->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE &&
			    f->value->bool_value;
		}
	}
	return LY_OK;
}

ly_status
ly_sds_parse_request(const uint8_t *data, size_t len, struct ly_sds_request *out, struct ly_error *err)
{
	const ProtobufCMessageDescriptor *desc = &envoy__service__discovery__v3__discovery_request__descriptor;
	DiscoveryRequest *req = NULL;
	ly_status rc = LY_OK;
	char what[64];

	memset(out, 0, sizeof(*out));
	if (len > LY_SDS_REQUEST_MAX)
		return ly_error_set(err, LY_E_LIMIT, "DiscoveryRequest over %d bytes", LY_SDS_REQUEST_MAX);
	req = (DiscoveryRequest *)(void *)protobuf_c_message_unpack(desc, NULL, len,
	    data != NULL ? data : empty_input);
	if (req == NULL)
		return ly_error_set(err, LY_E_INVALID, "not a valid DiscoveryRequest");
	if (protobuf_c_message_get_packed_size(&req->base) != len) {
		rc = ly_error_set(err, LY_E_INVALID, "DiscoveryRequest: a string with a NUL byte, or a field sent twice");
		goto out;
	}
	if (req->n_resource_names > LY_SDS_NAMES_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "DiscoveryRequest: more than %d resource names", LY_SDS_NAMES_MAX);
		goto out;
	}
	out->names = calloc(req->n_resource_names > 0 ? req->n_resource_names : 1, sizeof(*out->names));
	if (out->names == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "DiscoveryRequest: allocating");
		goto out;
	}
	for (size_t i = 0; i < req->n_resource_names; i++) {
		(void)snprintf(what, sizeof(what), "resource name %zu", i);
		if ((rc = check_text(what, req->resource_names[i], LY_SDS_NAME_MAX, true, err)) != LY_OK)
			goto wrap;
		if (req->resource_names[i][0] != '\0')
			out->names[out->n_names++] = req->resource_names[i];
	}
	out->version_info = str_or_empty(req->version_info);
	out->response_nonce = str_or_empty(req->response_nonce);
	if ((rc = check_text("version_info", out->version_info, LY_SDS_VERSION_MAX, true, err)) != LY_OK ||
	    (rc = check_text("response_nonce", out->response_nonce, LY_SDS_VERSION_MAX, true, err)) != LY_OK)
		goto wrap;
	if (req->type_url != NULL && req->type_url[0] != '\0' && strcmp(req->type_url, LY_SDS_SECRET_TYPE) != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "type_url is not %s", LY_SDS_SECRET_TYPE);
		goto wrap;
	}
	if ((rc = parse_node(req->node, out, err)) != LY_OK)
		goto wrap;
	out->error_message = "";
	if (req->error_detail != NULL) {
		out->nack = true;
		out->error_code = req->error_detail->code;
		out->error_message = str_or_empty(req->error_detail->message);
		if (strnlen(out->error_message, LY_SDS_ERROR_MAX + 1) > LY_SDS_ERROR_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "error_detail.message over %d bytes", LY_SDS_ERROR_MAX);
			goto wrap;
		}
	}
	out->msg = req;
	req = NULL;
	rc = LY_OK;
	goto out;
wrap:
	rc = ly_error_wrap(err, rc, "DiscoveryRequest");
out:
	if (req != NULL) {
		protobuf_c_message_free_unpacked(&req->base, NULL);
		free(out->names);
		memset(out, 0, sizeof(*out));
	}
	return rc;
}

static bool
names_contain(const struct ly_sds_request *r, const char *name)
{
	for (size_t i = 0; i < r->n_names; i++) {
		if (strcmp(r->names[i], name) == 0)
			return true;
	}
	return false;
}

bool
ly_sds_names_equal(const struct ly_sds_request *a, const struct ly_sds_request *b)
{
	for (size_t i = 0; i < a->n_names; i++) {
		if (!names_contain(b, a->names[i]))
			return false;
	}
	for (size_t i = 0; i < b->n_names; i++) {
		if (!names_contain(a, b->names[i]))
			return false;
	}
	return true;
}

bool
ly_sds_use_spiffe_validator(const struct ly_sds_request *req, bool disable)
{
	if (disable || req->meta_disable_spiffe || !req->has_build_version)
		return false;
	return req->major > 1 || (req->major == 1 && req->minor > 17);
}

/* ---- responses ---- */

/* The names asked for, each marked once served. */
struct want {
	const char *name;
	bool served;
};

static int
want_cmp(const void *pa, const void *pb)
{
	const struct want *a = pa, *b = pb;
	return strcmp(a->name, b->name);
}

/* Marks `name` served if it was asked for; true if it was (or everything was asked for). */
static bool
want_take(struct want *v, size_t n, bool all, const char *name)
{
	struct want key = { .name = name };
	struct want *w = n > 0 ? bsearch(&key, v, n, sizeof(*v), want_cmp) : NULL;
	if (w != NULL) {
		w->served = true;
		return true;
	}
	return all;
}

/* Packed secrets, each to become one Any. */
struct packed {
	struct ly_buf *v;
	size_t n, cap;
};

static void
packed_free(struct packed *p)
{
	for (size_t i = 0; i < p->n; i++)
		ly_buf_free_secret(&p->v[i]);
	free(p->v);
	memset(p, 0, sizeof(*p));
}

static ly_status
pack_into(const ProtobufCMessage *m, struct ly_buf *out, struct ly_error *err)
{
	return ly_pbpack(m, LY_RPC_RESPONSE_MAX, out, err);
}

/* Packs the Secret `s` as the next resource. */
static ly_status
packed_add(struct packed *p, const Secret *s, struct ly_error *err)
{
	if (p->n == p->cap) {
		size_t cap = p->cap > 0 ? 2 * p->cap : 8;
		struct ly_buf *v = realloc(p->v, cap * sizeof(*v));
		if (v == NULL)
			return ly_error_set(err, LY_E_NOMEM, "secrets: allocating");
		p->v = v;
		p->cap = cap;
	}
	p->v[p->n] = (struct ly_buf)LY_BUF_INIT;
	LY_TRY(pack_into(&s->base, &p->v[p->n], err));
	p->n++;
	return LY_OK;
}

static void
inline_bytes(DataSource *ds, const struct ly_buf *b)
{
	envoy__config__core__v3__data_source__init(ds);
	ds->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
	ds->inline_bytes.data = b->data;
	ds->inline_bytes.len = b->len;
}

/* A TlsCertificate secret named `name` for one identity. */
static ly_status
add_tls(struct packed *p, const char *name, const struct ly_cache_item *it, struct ly_error *err)
{
	ly_status rc;
	struct ly_buf der = LY_BUF_INIT, chain = LY_BUF_INIT, key = LY_BUF_INIT;
	DataSource chain_ds, key_ds;
	TlsCertificate tls;
	Secret s;

	envoy__extensions__transport_sockets__tls__v3__tls_certificate__init(&tls);
	envoy__extensions__transport_sockets__tls__v3__secret__init(&s);
	if (!it->has_svid || it->key.len == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "identity %s has no SVID", it->entry->spiffe_id);
		goto out;
	}
	if ((rc = ly_buf_set(&der, it->leaf.der, it->leaf.len, err)) != LY_OK ||
	    (rc = ly_buf_append(&der, it->intermediates.der, it->intermediates.len, LY_CHAIN_DER_MAX, err)) != LY_OK ||
	    (rc = ly_der_certs_to_pem(der.data, der.len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &chain, err)) != LY_OK ||
	    (rc = ly_pem_encode("PRIVATE KEY", it->key.der, it->key.len, &key, err)) != LY_OK)
		goto out;
	inline_bytes(&chain_ds, &chain);
	inline_bytes(&key_ds, &key);
	tls.certificate_chain = &chain_ds;
	tls.private_key = &key_ds;
	s.name = ly_pbview_str(name);
	s.type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
	s.tls_certificate = &tls;
	rc = packed_add(p, &s, err);
out:
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "TlsCertificate %s", name);
	ly_buf_free(&der);
	ly_buf_free(&chain);
	ly_buf_free_secret(&key);
	return rc;
}

/* A validation context secret named `name` for `n` bundles. */
static ly_status
add_validation(struct packed *p, const char *name, const struct ly_bundle *const *bundles, size_t n, bool spiffe,
    struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_buf *pems = calloc(n > 0 ? n : 1, sizeof(*pems));
	DataSource *dss = calloc(n > 0 ? n : 1, sizeof(*dss));
	SpiffeTrustDomain *tds = calloc(n > 0 ? n : 1, sizeof(*tds));
	SpiffeTrustDomain **tdp = calloc(n > 0 ? n : 1, sizeof(*tdp));
	struct ly_buf all = LY_BUF_INIT, inner = LY_BUF_INIT;
	DataSource ca;
	SpiffeConfig sc;
	Google__Protobuf__Any any;
	TypedExtensionConfig tec;
	ValidationContext vc;
	Secret s;

	envoy__extensions__transport_sockets__tls__v3__spiffecert_validator_config__init(&sc);
	google__protobuf__any__init(&any);
	envoy__config__core__v3__typed_extension_config__init(&tec);
	envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__init(&vc);
	envoy__extensions__transport_sockets__tls__v3__secret__init(&s);
	if (pems == NULL || dss == NULL || tds == NULL || tdp == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "allocating");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char *pem = NULL;
		if (ly_bundle_x509_authority_count(bundles[i]) == 0) {
			rc = ly_error_set(err, LY_E_INVALID, "the bundle of %s has no X.509 authority",
			    ly_bundle_trust_domain(bundles[i]));
			goto out;
		}
		if ((rc = ly_bundle_write_pem(bundles[i], &pem, err)) != LY_OK)
			goto out;
		pems[i].data = (uint8_t *)pem;
		pems[i].len = strlen(pem);
		if (spiffe) {
			envoy__extensions__transport_sockets__tls__v3__spiffecert_validator_config__trust_domain__init(&tds[i]);
			tds[i].name = ly_pbview_str(ly_bundle_trust_domain(bundles[i]));
			inline_bytes(&dss[i], &pems[i]);
			tds[i].trust_bundle = &dss[i];
			tdp[i] = &tds[i];
		} else if ((rc = ly_buf_append(&all, pems[i].data, pems[i].len, (size_t)LY_RPC_RESPONSE_MAX, err)) != LY_OK) {
			goto out;
		}
	}
	if (spiffe) {
		sc.n_trust_domains = n;
		sc.trust_domains = tdp;
		if ((rc = pack_into(&sc.base, &inner, err)) != LY_OK)
			goto out;
		any.type_url = ly_pbview_str(LY_SDS_SPIFFE_VALIDATOR_TYPE);
		any.value.data = inner.data;
		any.value.len = inner.len;
		tec.name = ly_pbview_str(LY_SDS_SPIFFE_VALIDATOR_NAME);
		tec.typed_config = &any;
		vc.custom_validator_config = &tec;
	} else {
		inline_bytes(&ca, &all);
		vc.trusted_ca = &ca;
	}
	s.name = ly_pbview_str(name);
	s.type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
	s.validation_context = &vc;
	rc = packed_add(p, &s, err);
out:
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "validation context %s", name);
	if (pems != NULL) {
		for (size_t i = 0; i < n; i++)
			ly_buf_free(&pems[i]);
	}
	free(pems);
	free(dss);
	free(tds);
	free(tdp);
	ly_buf_free(&all);
	ly_buf_free(&inner);
	return rc;
}

/* Packs the DiscoveryResponse holding `p`'s secrets. */
static ly_status
pack_response(const struct packed *p, const char *version_info, const char *nonce, struct ly_buf *out,
    struct ly_error *err)
{
	ly_status rc;
	DiscoveryResponse resp;
	Google__Protobuf__Any *anys = calloc(p->n > 0 ? p->n : 1, sizeof(*anys));
	Google__Protobuf__Any **ptrs = calloc(p->n > 0 ? p->n : 1, sizeof(*ptrs));

	envoy__service__discovery__v3__discovery_response__init(&resp);
	if (anys == NULL || ptrs == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "DiscoveryResponse: allocating");
		goto out;
	}
	for (size_t i = 0; i < p->n; i++) {
		google__protobuf__any__init(&anys[i]);
		anys[i].type_url = ly_pbview_str(LY_SDS_SECRET_TYPE);
		anys[i].value.data = p->v[i].data;
		anys[i].value.len = p->v[i].len;
		ptrs[i] = &anys[i];
	}
	resp.n_resources = p->n;
	resp.resources = ptrs;
	resp.type_url = ly_pbview_str(LY_SDS_SECRET_TYPE);
	if (version_info != NULL)
		resp.version_info = ly_pbview_str(version_info);
	if (nonce != NULL)
		resp.nonce = ly_pbview_str(nonce);
	rc = pack_into(&resp.base, out, err);
out:
	free(anys);
	free(ptrs);
	return rc;
}

/* SHA-256 over each resource's length and bytes. */
static ly_status
resources_digest(const struct packed *p, uint8_t digest[LY_SDS_DIGEST_LEN], struct ly_error *err)
{
	ly_status rc = LY_OK;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int n = 0;

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		rc = ly_error_set(err, LY_E_CRYPTO, "SHA-256");
		goto out;
	}
	for (size_t i = 0; i < p->n; i++) {
		uint64_t len = p->v[i].len;
		if (EVP_DigestUpdate(md, &len, sizeof(len)) != 1 || EVP_DigestUpdate(md, p->v[i].data, p->v[i].len) != 1) {
			rc = ly_error_set(err, LY_E_CRYPTO, "SHA-256");
			goto out;
		}
	}
	if (EVP_DigestFinal_ex(md, digest, &n) != 1 || n != LY_SDS_DIGEST_LEN)
		rc = ly_error_set(err, LY_E_CRYPTO, "SHA-256");
out:
	EVP_MD_CTX_free(md);
	return rc;
}

/* "a", "b" of the names left unserved, for the error message. */
static void
unserved_list(const struct want *v, size_t n, char *buf, size_t cap)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used < cap; i++) {
		if (v[i].served)
			continue;
		int k = snprintf(buf + used, cap - used, "%s\"%s\"", used > 0 ? " " : "", v[i].name);
		if (k < 0)
			break;
		used += (size_t)k;
	}
}

ly_status
ly_sds_response(const struct ly_sds_request *req, const struct ly_sds_names *names, bool spiffe,
    const struct ly_cache_identities *ids, const struct ly_bundle_set *set, const char *own_td,
    const char *version_info, const char *nonce, struct ly_buf *out, size_t *n_resources,
    uint8_t digest[LY_SDS_DIGEST_LEN], struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct packed p = { 0 };
	struct want *want = NULL;
	const struct ly_bundle **every = NULL;
	size_t nw = req->n_names, nb = set != NULL ? ly_bundle_set_count(set) : 0, ni = ids != NULL ? ids->n : 0;
	bool all = nw == 0;
	const struct ly_bundle *own = set != NULL && own_td != NULL ? ly_bundle_set_find(set, own_td) : NULL;
	char id[sizeof(SPIFFE_PREFIX) + LY_TRUST_DOMAIN_MAX];

	*n_resources = 0;
	want = calloc(nw > 0 ? nw : 1, sizeof(*want));
	every = calloc(nb > 0 ? nb : 1, sizeof(*every));
	if (want == NULL || every == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "DiscoveryResponse: allocating");
		goto out;
	}
	for (size_t i = 0; i < nw; i++)
		want[i].name = req->names[i];
	qsort(want, nw, sizeof(*want), want_cmp);
	/* A name asked for twice is served once. */
	size_t uniq = 0;
	for (size_t i = 0; i < nw; i++) {
		if (uniq == 0 || strcmp(want[uniq - 1].name, want[i].name) != 0)
			want[uniq++] = want[i];
	}
	nw = uniq;

	/* Validation contexts: each bundle under "spiffe://<td>", then ROOTCA and ALL. */
	size_t nevery = 0;
	for (size_t i = 0; i < nb; i++) {
		const struct ly_bundle *b = ly_bundle_set_at(set, i);
		if (ly_bundle_x509_authority_count(b) == 0)
			continue;
		every[nevery++] = b;
		(void)snprintf(id, sizeof(id), SPIFFE_PREFIX "%s", ly_bundle_trust_domain(b));
		if (want_take(want, nw, all, id) && (rc = add_validation(&p, id, &b, 1, spiffe, err)) != LY_OK)
			goto out;
	}
	if (own != NULL && ly_bundle_x509_authority_count(own) > 0 && names->default_bundle != NULL &&
	    want_take(want, nw, false, names->default_bundle) &&
	    (rc = add_validation(&p, names->default_bundle, &own, 1, spiffe, err)) != LY_OK)
		goto out;
	if (nevery > 0 && names->all_bundles != NULL && want_take(want, nw, false, names->all_bundles) &&
	    (rc = add_validation(&p, names->all_bundles, every, nevery, spiffe, err)) != LY_OK)
		goto out;

	/* TLS certificates: each identity under its SPIFFE ID; the first also as "default". */
	for (size_t i = 0; i < ni; i++) {
		const struct ly_cache_item *it = &ids->v[i];
		if (want_take(want, nw, all, it->entry->spiffe_id) &&
		    (rc = add_tls(&p, it->entry->spiffe_id, it, err)) != LY_OK)
			goto out;
		if (i == 0 && names->default_svid != NULL && want_take(want, nw, false, names->default_svid) &&
		    (rc = add_tls(&p, names->default_svid, it, err)) != LY_OK)
			goto out;
	}
	for (size_t i = 0; i < nw; i++) {
		if (!want[i].served) {
			char list[LY_ERROR_MSG_MAX];
			unserved_list(want, nw, list, sizeof(list));
			rc = ly_error_set(err, LY_E_NOT_FOUND, "[%s]", list);
			goto out;
		}
	}
	if (digest != NULL && (rc = resources_digest(&p, digest, err)) != LY_OK)
		goto out;
	if ((rc = pack_response(&p, version_info, nonce, out, err)) != LY_OK)
		goto out;
	*n_resources = p.n;
out:
	packed_free(&p);
	free(want);
	free(every);
	return rc;
}
