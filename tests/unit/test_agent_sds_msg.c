/*
 * test_agent_sds_msg.c: Envoy SDS v3 messages (SPEC §8, agent/sds_msg.h):
 * DiscoveryRequests built with protoc-c, each rule broken on purpose; the
 * validator choice (SPIRE's rule); and responses built from the cache,
 * unpacked with protoc-c's own unpackers and checked down to the PEM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "agent/sds_msg.h"
#include "envoy_discovery.pb-c.h"
#include "envoy_tls.pb-c.h"
#include "lib/caps.h"
#include "lib/der.h"
#include "lib/log.h"
#include "testutil_agent.h"

#define NOW ((int64_t)TU_NOW)

typedef Envoy__Service__Discovery__V3__DiscoveryRequest Req;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse Resp;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

static const struct ly_sds_names NAMES = { "default", "ROOTCA", "ALL" };

struct fixture {
	struct tu_pki pki, other;
	struct ly_cache *c;
	struct ly_bundle_set *set;
	struct ly_cache_identities ids;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_pki_init(&f->pki);
	tu_pki_init(&f->other);
	ly_log_set_level(LY_LOG_ERROR);
	assert_int_equal(ly_cache_new(TA_TD, &f->c, NULL), LY_OK);
	struct ly_entry *es[2] = {
		ta_entry("a", "spiffe://example.org/a", 10, NULL, "unix:uid:1", NULL),
		ta_entry("b", "spiffe://example.org/b", 5, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, true, 1, es, 2, NULL, 0, NULL);
	ta_set_svid(f->c, &f->pki, "a", -60, 3600, NULL);
	ta_set_svid(f->c, &f->pki, "b", -60, 3600, NULL);
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_set_new(&f->set, NULL), LY_OK);
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(f->set, b, NULL), LY_OK);
	assert_int_equal(ly_bundle_new("other.org", &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->other.root_der.data, f->other.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(f->set, b, NULL), LY_OK);

	size_t n;
	struct ly_selector *have = ta_selectors(&n, "unix:uid:1", NULL);
	ly_cache_identities_init(&f->ids);
	assert_int_equal(ly_cache_query(f->c, have, n, LY_CACHE_QUERY_X509, NOW, &f->ids, NULL), LY_OK);
	ly_selectors_free(have, n);
	assert_int_equal(f->ids.n, 2);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	ly_cache_identities_cleanup(&f->ids);
	ly_cache_free(f->c);
	ly_bundle_set_free(f->set);
	tu_pki_free(&f->pki);
	tu_pki_free(&f->other);
	free(f);
	return 0;
}

/* ---- requests ---- */

/* protobuf-c's structs take char * even for what they only pack. */
static char *
uc(const char *s)
{
	char *p;
	memcpy(&p, &s, sizeof(p));
	return p;
}

struct req_spec {
	const char *const *names;
	size_t n_names;
	const char *version, *nonce, *type_url;
	int major, minor; /* -1: no build version */
	int meta_disable; /* -1: no metadata; else its bool */
	const char *nack;
};

/* Packs a request as Envoy would; the caller frees *out. */
static void
pack_req(const struct req_spec *s, struct ly_buf *out)
{
	Req r;
	Envoy__Config__Core__V3__Node node;
	Envoy__Config__Core__V3__BuildVersion bv;
	Envoy__Config__Core__V3__SemanticVersion sv;
	Google__Protobuf__Struct meta;
	Google__Protobuf__Struct__FieldsEntry fe, *fep = &fe;
	Google__Protobuf__Value val;
	Google__Rpc__Status st;
	char *names[16];


	envoy__service__discovery__v3__discovery_request__init(&r);
	envoy__config__core__v3__node__init(&node);
	node.id = uc("envoy-a");
	node.cluster = uc("front");
	node.user_agent_name = uc("envoy");
	if (s->major >= 0) {
		envoy__config__core__v3__build_version__init(&bv);
		envoy__config__core__v3__semantic_version__init(&sv);
		sv.major_number = (uint32_t)s->major;
		sv.minor_number = (uint32_t)s->minor;
		bv.version = &sv;
		node.user_agent_version_type_case = ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_BUILD_VERSION;
		node.user_agent_build_version = &bv;
	}
	if (s->meta_disable >= 0) {
		google__protobuf__struct__init(&meta);
		google__protobuf__struct__fields_entry__init(&fe);
		google__protobuf__value__init(&val);
		val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
		val.bool_value = s->meta_disable != 0;
		fe.key = uc(LY_SDS_META_DISABLE_SPIFFE);
		fe.value = &val;
		meta.n_fields = 1;
		meta.fields = &fep;
		node.metadata = &meta;
	}
	r.node = &node;
	assert_true(s->n_names <= 16);
	for (size_t i = 0; i < s->n_names; i++)
		names[i] = uc(s->names[i]);
	r.n_resource_names = s->n_names;
	r.resource_names = names;
	r.type_url = uc((s->type_url != NULL ? s->type_url : LY_SDS_SECRET_TYPE));
	if (s->version != NULL)
		r.version_info = uc(s->version);
	if (s->nonce != NULL)
		r.response_nonce = uc(s->nonce);
	if (s->nack != NULL) {
		google__rpc__status__init(&st);
		st.code = 13;
		st.message = uc(s->nack);
		r.error_detail = &st;
	}
	out->len = envoy__service__discovery__v3__discovery_request__get_packed_size(&r);
	out->data = malloc(out->len + 1);
	assert_non_null(out->data);
	assert_int_equal(envoy__service__discovery__v3__discovery_request__pack(&r, out->data), out->len);
}

static ly_status
parse(const struct req_spec *s, struct ly_sds_request *out, struct ly_error *e)
{
	struct ly_buf b = LY_BUF_INIT;
	pack_req(s, &b);
	ly_status rc = ly_sds_parse_request(b.data, b.len, out, e);
	ly_buf_free(&b);
	return rc;
}

static void
test_request_fields(void **state)
{
	(void)state;
	const char *names[] = { "", "spiffe://example.org/a", "", "ROOTCA" };
	struct req_spec s = { names, 4, "3", "0a1b2c3d", NULL, 1, 40, 1, "bad chain" };
	struct ly_sds_request r;
	struct ly_error e;

	assert_int_equal(parse(&s, &r, &e), LY_OK);
	/* Empty names are skipped, as SPIRE does. */
	assert_int_equal(r.n_names, 2);
	assert_string_equal(r.names[0], "spiffe://example.org/a");
	assert_string_equal(r.names[1], "ROOTCA");
	assert_string_equal(r.version_info, "3");
	assert_string_equal(r.response_nonce, "0a1b2c3d");
	assert_string_equal(r.node_id, "envoy-a");
	assert_string_equal(r.node_cluster, "front");
	assert_string_equal(r.user_agent_name, "envoy");
	assert_true(r.has_build_version);
	assert_int_equal(r.major, 1);
	assert_int_equal(r.minor, 40);
	assert_true(r.meta_disable_spiffe);
	assert_true(r.nack);
	assert_int_equal(r.error_code, 13);
	assert_string_equal(r.error_message, "bad chain");
	ly_sds_request_cleanup(&r);

	/* The first request of a stream: nothing but names. */
	struct req_spec first = { names + 1, 1, NULL, NULL, NULL, -1, 0, -1, NULL };
	assert_int_equal(parse(&first, &r, &e), LY_OK);
	assert_string_equal(r.version_info, "");
	assert_string_equal(r.response_nonce, "");
	assert_false(r.nack);
	assert_string_equal(r.error_message, "");
	assert_false(r.has_build_version);
	assert_false(r.meta_disable_spiffe);
	ly_sds_request_cleanup(&r);

	/* An empty message is a valid request for everything. */
	assert_int_equal(ly_sds_parse_request(NULL, 0, &r, &e), LY_OK);
	assert_int_equal(r.n_names, 0);
	ly_sds_request_cleanup(&r);
}

static void
test_request_refused(void **state)
{
	(void)state;
	struct ly_sds_request r;
	struct ly_error e;
	struct ly_buf b = LY_BUF_INIT;
	char longname[LY_SDS_NAME_MAX + 2];
	const char *ctrl[] = { "a\nb" }, *bad_utf8[] = { "a\xc0\x80" }, *lname[] = { longname };
	char many_buf[LY_SDS_NAMES_MAX + 1][2];

	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	struct req_spec s = { ctrl, 1, NULL, NULL, NULL, -1, 0, -1, NULL };
	assert_int_equal(parse(&s, &r, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "control character"));
	s.names = bad_utf8;
	assert_int_equal(parse(&s, &r, &e), LY_E_INVALID);
	s.names = lname;
	assert_int_equal(parse(&s, &r, &e), LY_E_LIMIT);

	struct req_spec t = { NULL, 0, NULL, NULL, "type.googleapis.com/envoy.config.cluster.v3.Cluster", -1, 0, -1, NULL };
	assert_int_equal(parse(&t, &r, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "type_url"));

	char longver[LY_SDS_VERSION_MAX + 2];
	memset(longver, '7', sizeof(longver) - 1);
	longver[sizeof(longver) - 1] = '\0';
	struct req_spec v = { NULL, 0, longver, NULL, NULL, -1, 0, -1, NULL };
	assert_int_equal(parse(&v, &r, &e), LY_E_LIMIT);

	/* Too many names: packed by hand (field 3, "x" each). */
	(void)many_buf;
	for (size_t i = 0; i <= LY_SDS_NAMES_MAX; i++)
		assert_int_equal(ly_buf_append(&b, "\x1a\x01x", 3, 1 << 20, NULL), LY_OK);
	assert_int_equal(ly_sds_parse_request(b.data, b.len, &r, &e), LY_E_LIMIT);
	ly_buf_free(&b);

	/* A NUL inside a string, a field sent twice, garbage, too big. */
	static const uint8_t nul[] = { 0x1a, 0x03, 'a', 0x00, 'b' };
	assert_int_equal(ly_sds_parse_request(nul, sizeof(nul), &r, &e), LY_E_INVALID);
	static const uint8_t twice[] = { 0x0a, 0x01, '1', 0x0a, 0x01, '2' };
	assert_int_equal(ly_sds_parse_request(twice, sizeof(twice), &r, &e), LY_E_INVALID);
	static const uint8_t garbage[] = { 0xff, 0xff, 0xff };
	assert_int_equal(ly_sds_parse_request(garbage, sizeof(garbage), &r, &e), LY_E_INVALID);
	assert_int_equal(ly_sds_parse_request(garbage, LY_SDS_REQUEST_MAX + 1, &r, &e), LY_E_LIMIT);
	/* Unknown fields (Node.extensions, resource_locators) are kept and accepted. */
	static const uint8_t unknown[] = { 0x1a, 0x01, 'a', 0x3a, 0x02, 0x08, 0x01 };
	assert_int_equal(ly_sds_parse_request(unknown, sizeof(unknown), &r, &e), LY_OK);
	assert_int_equal(r.n_names, 1);
	ly_sds_request_cleanup(&r);
}

static void
test_validator_choice(void **state)
{
	(void)state;
	struct ly_sds_request r;
	struct req_spec s = { NULL, 0, NULL, NULL, NULL, 1, 18, -1, NULL };

	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_true(ly_sds_use_spiffe_validator(&r, false));
	assert_false(ly_sds_use_spiffe_validator(&r, true)); /* the agent's configuration */
	ly_sds_request_cleanup(&r);
	s.minor = 17; /* Envoy <= 1.17 has no SPIFFE validator */
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_false(ly_sds_use_spiffe_validator(&r, false));
	ly_sds_request_cleanup(&r);
	s.major = 2;
	s.minor = 0;
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_true(ly_sds_use_spiffe_validator(&r, false));
	ly_sds_request_cleanup(&r);
	s.major = -1; /* no version said: SPIRE falls back to trusted_ca */
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_false(ly_sds_use_spiffe_validator(&r, false));
	ly_sds_request_cleanup(&r);
	s.major = 1;
	s.minor = 40;
	s.meta_disable = 1; /* per Envoy, in its node metadata */
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_false(ly_sds_use_spiffe_validator(&r, false));
	ly_sds_request_cleanup(&r);
	s.meta_disable = 0;
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_true(ly_sds_use_spiffe_validator(&r, false));
	ly_sds_request_cleanup(&r);
}

static void
test_names_equal(void **state)
{
	(void)state;
	const char *n1[] = { "a", "b", "a" }, *n2[] = { "b", "a" }, *n3[] = { "a", "c" };
	struct ly_sds_request r1, r2, r3;
	struct req_spec s1 = { n1, 3, NULL, NULL, NULL, -1, 0, -1, NULL }, s2 = s1, s3 = s1;
	s2.names = n2;
	s2.n_names = 2;
	s3.names = n3;
	s3.n_names = 2;
	assert_int_equal(parse(&s1, &r1, NULL), LY_OK);
	assert_int_equal(parse(&s2, &r2, NULL), LY_OK);
	assert_int_equal(parse(&s3, &r3, NULL), LY_OK);
	assert_true(ly_sds_names_equal(&r1, &r2));
	assert_false(ly_sds_names_equal(&r1, &r3));
	assert_false(ly_sds_names_equal(&r2, &r3));
	ly_sds_request_cleanup(&r1);
	ly_sds_request_cleanup(&r2);
	ly_sds_request_cleanup(&r3);
}

/* ---- responses ---- */

static Resp *
respond(struct fixture *f, const char *const *names, size_t n, bool spiffe, const char *ver, const char *nonce,
    size_t *count, ly_status want, struct ly_error *e)
{
	struct req_spec s = { names, n, NULL, NULL, NULL, 1, 40, -1, NULL };
	struct ly_sds_request r;
	struct ly_buf out = LY_BUF_INIT;

	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_int_equal(ly_sds_response(&r, &NAMES, spiffe, &f->ids, f->set, TA_TD, ver, nonce, &out, count, NULL, e), want);
	ly_sds_request_cleanup(&r);
	if (want != LY_OK)
		return NULL;
	Resp *resp = envoy__service__discovery__v3__discovery_response__unpack(NULL, out.len, out.data);
	assert_non_null(resp);
	ly_buf_free_secret(&out);
	return resp;
}

static Secret *
secret_at(const Resp *r, size_t i)
{
	assert_true(i < r->n_resources);
	assert_string_equal(r->resources[i]->type_url, LY_SDS_SECRET_TYPE);
	Secret *s = envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, r->resources[i]->value.len,
	    r->resources[i]->value.data);
	assert_non_null(s);
	return s;
}

/* The PEM of a DataSource holds exactly these DER certificates. */
static void
assert_pem_certs(const Envoy__Config__Core__V3__DataSource *ds, const uint8_t *der, size_t len)
{
	struct ly_buf got = LY_BUF_INIT;
	assert_non_null(ds);
	assert_int_equal(ds->specifier_case, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES);
	assert_int_equal(ly_pem_to_der_certs((const char *)ds->inline_bytes.data, ds->inline_bytes.len, 16, 1 << 20,
	    &got, NULL), LY_OK);
	assert_int_equal(got.len, len);
	assert_memory_equal(got.data, der, len);
	ly_buf_free(&got);
}

static void
assert_tls(const Secret *s, const char *name, const struct ly_cache_item *it)
{
	assert_string_equal(s->name, name);
	assert_int_equal(s->type_case, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
	const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *t = s->tls_certificate;
	struct ly_buf chain = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&chain, it->leaf.der, it->leaf.len, NULL), LY_OK);
	assert_int_equal(ly_buf_append(&chain, it->intermediates.der, it->intermediates.len, 1 << 20, NULL), LY_OK);
	assert_pem_certs(t->certificate_chain, chain.data, chain.len);
	ly_buf_free(&chain);
	assert_non_null(t->private_key);
	assert_int_equal(t->private_key->specifier_case, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES);
	EVP_PKEY *k = NULL;
	assert_int_equal(ly_key_from_pem((const char *)t->private_key->inline_bytes.data, t->private_key->inline_bytes.len,
	    &k, NULL), LY_OK);
	assert_non_null(strstr((const char *)t->private_key->inline_bytes.data, "-----BEGIN PRIVATE KEY-----"));
	EVP_PKEY *want = NULL;
	assert_int_equal(ly_key_from_pkcs8_der(it->key.der, it->key.len, &want, NULL), LY_OK);
	assert_true(ly_key_public_equal(k, want));
	EVP_PKEY_free(k);
	EVP_PKEY_free(want);
}

/* A SPIFFE validator context for trust domains tds[i] with roots der[i]. */
static void
assert_spiffe_vc(const Secret *s, const char *name, size_t n, const char *const *tds, const struct ly_buf *const *der)
{
	assert_string_equal(s->name, name);
	assert_int_equal(s->type_case, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT);
	const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc = s->validation_context;
	assert_null(vc->trusted_ca);
	assert_non_null(vc->custom_validator_config);
	assert_string_equal(vc->custom_validator_config->name, LY_SDS_SPIFFE_VALIDATOR_NAME);
	assert_non_null(vc->custom_validator_config->typed_config);
	assert_string_equal(vc->custom_validator_config->typed_config->type_url, LY_SDS_SPIFFE_VALIDATOR_TYPE);
	Envoy__Extensions__TransportSockets__Tls__V3__SPIFFECertValidatorConfig *c =
	    envoy__extensions__transport_sockets__tls__v3__spiffecert_validator_config__unpack(NULL,
		vc->custom_validator_config->typed_config->value.len, vc->custom_validator_config->typed_config->value.data);
	assert_non_null(c);
	assert_int_equal(c->n_trust_domains, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(c->trust_domains[i]->name, tds[i]); /* no "spiffe://" (Envoy's rule) */
		assert_pem_certs(c->trust_domains[i]->trust_bundle, der[i]->data, der[i]->len);
	}
	envoy__extensions__transport_sockets__tls__v3__spiffecert_validator_config__free_unpacked(c, NULL);
}

static void
test_response_named(void **state)
{
	struct fixture *f = *state;
	const char *names[] = { "spiffe://example.org/a", "default", "spiffe://example.org", "ROOTCA", "ALL",
		"spiffe://other.org", "default" };
	size_t n = 0;
	Resp *r = respond(f, names, 7, true, "4", "0a1b2c3d", &n, LY_OK, NULL);

	assert_string_equal(r->version_info, "4");
	assert_string_equal(r->nonce, "0a1b2c3d");
	assert_string_equal(r->type_url, LY_SDS_SECRET_TYPE);
	assert_int_equal(n, 6);
	assert_int_equal(r->n_resources, 6);
	const char *own[] = { "example.org" }, *oth[] = { "other.org" }, *both[] = { "example.org", "other.org" };
	const struct ly_buf *own_der[] = { &f->pki.root_der }, *oth_der[] = { &f->other.root_der },
			    *both_der[] = { &f->pki.root_der, &f->other.root_der };
	Secret *s;
	/* Validation contexts first (each bundle, ROOTCA, ALL), then certificates. */
	assert_spiffe_vc(s = secret_at(r, 0), "spiffe://example.org", 1, own, own_der);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	assert_spiffe_vc(s = secret_at(r, 1), "spiffe://other.org", 1, oth, oth_der);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	assert_spiffe_vc(s = secret_at(r, 2), "ROOTCA", 1, own, own_der);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	assert_spiffe_vc(s = secret_at(r, 3), "ALL", 2, both, both_der);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	/* b is the older entry: the default identity, ids.v[0]. */
	assert_string_equal(f->ids.v[0].entry->spiffe_id, "spiffe://example.org/b");
	assert_tls(s = secret_at(r, 4), "default", &f->ids.v[0]);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	assert_tls(s = secret_at(r, 5), "spiffe://example.org/a", &f->ids.v[1]);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void
test_response_everything(void **state)
{
	struct fixture *f = *state;
	size_t n = 0;
	/* FetchSecrets: no version, no nonce. */
	Resp *r = respond(f, NULL, 0, true, NULL, NULL, &n, LY_OK, NULL);
	assert_string_equal(r->version_info, "");
	assert_string_equal(r->nonce, "");
	/* Both bundles and both identities, each under its own name; no ROOTCA, ALL or default. */
	assert_int_equal(n, 4);
	const char *want[] = { "spiffe://example.org", "spiffe://other.org", "spiffe://example.org/b",
		"spiffe://example.org/a" };
	for (size_t i = 0; i < 4; i++) {
		Secret *s = secret_at(r, i);
		assert_string_equal(s->name, want[i]);
		envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	}
	envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void
test_response_trusted_ca(void **state)
{
	struct fixture *f = *state;
	const char *names[] = { "ROOTCA", "ALL" };
	size_t n = 0;
	Resp *r = respond(f, names, 2, false, "1", "00000000", &n, LY_OK, NULL);
	assert_int_equal(n, 2);
	Secret *s = secret_at(r, 0);
	assert_string_equal(s->name, "ROOTCA");
	assert_null(s->validation_context->custom_validator_config);
	assert_pem_certs(s->validation_context->trusted_ca, f->pki.root_der.data, f->pki.root_der.len);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	s = secret_at(r, 1);
	assert_string_equal(s->name, "ALL");
	struct ly_buf both = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&both, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_buf_append(&both, f->other.root_der.data, f->other.root_der.len, 1 << 20, NULL), LY_OK);
	assert_pem_certs(s->validation_context->trusted_ca, both.data, both.len);
	ly_buf_free(&both);
	envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
	envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

static void
test_response_not_entitled(void **state)
{
	struct fixture *f = *state;
	const char *names[] = { "spiffe://example.org/a", "spiffe://example.org/zz", "spiffe://nope.org", "default" };
	struct ly_error e;
	size_t n = 7;

	/* One name not served fails the whole request, naming what was refused, sorted. */
	assert_null(respond(f, names, 4, true, "1", "abcd", &n, LY_E_NOT_FOUND, &e));
	assert_int_equal(n, 0);
	assert_string_equal(e.msg, "[\"spiffe://example.org/zz\" \"spiffe://nope.org\"]");

	/* A caller with no identity: "default" is refused, the bundle still served. */
	struct ly_cache_identities none;
	struct ly_sds_request r;
	struct ly_buf out = LY_BUF_INIT;
	struct req_spec s = { names + 3, 1, NULL, NULL, NULL, 1, 40, -1, NULL };
	ly_cache_identities_init(&none);
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_int_equal(ly_sds_response(&r, &NAMES, true, &none, f->set, TA_TD, "1", "ab", &out, &n, NULL, &e),
	    LY_E_NOT_FOUND);
	assert_string_equal(e.msg, "[\"default\"]");
	ly_sds_request_cleanup(&r);
	assert_int_equal(ly_sds_response(&r, &NAMES, true, &none, f->set, TA_TD, "1", "ab", &out, &n, NULL, &e), LY_OK);
	assert_int_equal(n, 2);
	ly_buf_free_secret(&out);
	ly_cache_identities_cleanup(&none);
}

static void
test_response_digest(void **state)
{
	struct fixture *f = *state;
	const char *n1[] = { "spiffe://example.org/a", "ROOTCA" }, *n2[] = { "spiffe://example.org/a" };
	struct req_spec s = { n1, 2, NULL, NULL, NULL, 1, 40, -1, NULL };
	struct ly_sds_request r;
	struct ly_buf out = LY_BUF_INIT;
	uint8_t d1[LY_SDS_DIGEST_LEN], d2[LY_SDS_DIGEST_LEN], d3[LY_SDS_DIGEST_LEN];
	size_t n;

	/* The digest covers the resources only: another version and nonce, the same digest. */
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_int_equal(ly_sds_response(&r, &NAMES, true, &f->ids, f->set, TA_TD, "1", "aaaa", &out, &n, d1, NULL),
	    LY_OK);
	ly_buf_free_secret(&out);
	assert_int_equal(ly_sds_response(&r, &NAMES, true, &f->ids, f->set, TA_TD, "2", "bbbb", &out, &n, d2, NULL),
	    LY_OK);
	ly_buf_free_secret(&out);
	assert_memory_equal(d1, d2, sizeof(d1));
	/* Another validator: other resources. */
	assert_int_equal(ly_sds_response(&r, &NAMES, false, &f->ids, f->set, TA_TD, "2", "bbbb", &out, &n, d3, NULL),
	    LY_OK);
	ly_buf_free_secret(&out);
	assert_memory_not_equal(d1, d3, sizeof(d1));
	ly_sds_request_cleanup(&r);
	/* Fewer names: other resources. */
	s.names = n2;
	s.n_names = 1;
	assert_int_equal(parse(&s, &r, NULL), LY_OK);
	assert_int_equal(ly_sds_response(&r, &NAMES, true, &f->ids, f->set, TA_TD, "1", "aaaa", &out, &n, d3, NULL),
	    LY_OK);
	ly_buf_free_secret(&out);
	assert_memory_not_equal(d1, d3, sizeof(d1));
	ly_sds_request_cleanup(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_fields),
		cmocka_unit_test(test_request_refused),
		cmocka_unit_test(test_validator_choice),
		cmocka_unit_test(test_names_equal),
		cmocka_unit_test_setup_teardown(test_response_named, setup, teardown),
		cmocka_unit_test_setup_teardown(test_response_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_response_trusted_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(test_response_not_entitled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_response_digest, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
