/*
 * test_workload_util.h: fixtures for the workload client library's tests
 * (test_workload_*.c): a small PKI valid around a chosen time, SVIDs made
 * from it, and X509SVIDResponse messages packed with protobuf-c exactly as
 * an agent sends them. Static inline; failures abort() (testutil_x509.h).
 * Everything returned is owned by the caller (twl_*_free, ly_buf_free).
 */
#ifndef LANYARD_TEST_WORKLOAD_UTIL_H
#define LANYARD_TEST_WORKLOAD_UTIL_H

#include <string.h>
#include <time.h>

#include "lib/keys.h"
#include "tests/unit/testutil_x509.h"
#include "workload.pb-c.h"

/* A root and an intermediate for `td`, valid from a day before `now` to a day after. */
struct twl_pki {
	EVP_PKEY *root_key, *int_key;
	X509 *root, *inter;
	struct ly_buf root_der;
	long off; /* now - TU_NOW: tu_spec times are relative to TU_NOW */
};

static inline void
twl_pki_init(struct twl_pki *p, const char *td, time_t now)
{
	char uri[300];
	memset(p, 0, sizeof(*p));
	p->off = (long)(now - TU_NOW);
	p->root_key = tu_key(LY_KEY_EC_P256);
	p->int_key = tu_key(LY_KEY_EC_P256);
	snprintf(uri, sizeof(uri), "spiffe://%s", td);
	struct tu_spec rs = tu_ca_spec(uri);
	rs.cn = "root";
	rs.not_before += p->off;
	rs.not_after += p->off;
	p->root = tu_make(&rs, p->root_key, NULL, NULL);
	struct tu_spec is = tu_ca_spec(uri);
	is.cn = "intermediate";
	is.not_before += p->off;
	is.not_after += p->off;
	p->inter = tu_make(&is, p->int_key, p->root, p->root_key);
	tu_der(p->root, &p->root_der);
}

static inline void
twl_pki_free(struct twl_pki *p)
{
	EVP_PKEY_free(p->root_key);
	EVP_PKEY_free(p->int_key);
	X509_free(p->root);
	X509_free(p->inter);
	ly_buf_free(&p->root_der);
}

/* A leaf spec for `uri`, valid an hour either side of the PKI's "now". */
static inline struct tu_spec
twl_leaf_spec(const struct twl_pki *p, const char *uri)
{
	struct tu_spec s = tu_leaf_spec(uri);
	s.not_before += p->off;
	s.not_after += p->off;
	return s;
}

/* The fields of one X509SVID, as bytes we own. */
struct twl_item {
	char id[LY_SPIFFE_ID_MAX + 1];
	char hint[64];
	struct ly_buf chain, key, bundle;
};

/* An SVID item: a leaf for `spec` with `key` under p's intermediate; the agent names it `id`. */
static inline void
twl_item_make(struct twl_item *it, struct twl_pki *p, const char *id, const struct tu_spec *spec, EVP_PKEY *key)
{
	memset(it, 0, sizeof(*it));
	snprintf(it->id, sizeof(it->id), "%s", id);
	X509 *leaf = tu_make(spec, key, p->inter, p->int_key);
	X509 *certs[2] = { leaf, p->inter };
	tu_chain(certs, 2, &it->chain);
	X509_free(leaf);
	TU_CHECK(ly_key_to_pkcs8_der(key, &it->key, NULL) == LY_OK);
	TU_CHECK(ly_buf_set(&it->bundle, p->root_der.data, p->root_der.len, NULL) == LY_OK);
}

static inline void
twl_item_free(struct twl_item *it)
{
	ly_buf_free(&it->chain);
	ly_buf_free_secret(&it->key);
	ly_buf_free(&it->bundle);
}

static inline ProtobufCBinaryData
twl_bin(const struct ly_buf *b)
{
	ProtobufCBinaryData d = { b->len, b->data };
	return d;
}

/* Packs `n` items and `nfed` federated bundles (keys and DER) into `out`. */
static inline void
twl_pack(const struct twl_item *items, size_t n, const char *const *fed_keys, const struct ly_buf *fed, size_t nfed,
    struct ly_buf *out)
{
	X509SVIDResponse r;
	X509SVID sv[8], *svp[8];
	X509SVIDResponse__FederatedBundlesEntry fe[8], *fep[8];
	TU_CHECK(n <= 8 && nfed <= 8);
	x509_svidresponse__init(&r);
	for (size_t i = 0; i < n; i++) {
		x509_svid__init(&sv[i]);
		sv[i].spiffe_id = (char *)(uintptr_t)items[i].id;
		sv[i].hint = (char *)(uintptr_t)items[i].hint;
		sv[i].x509_svid = twl_bin(&items[i].chain);
		sv[i].x509_svid_key = twl_bin(&items[i].key);
		sv[i].bundle = twl_bin(&items[i].bundle);
		svp[i] = &sv[i];
	}
	for (size_t i = 0; i < nfed; i++) {
		x509_svidresponse__federated_bundles_entry__init(&fe[i]);
		fe[i].key = (char *)(uintptr_t)fed_keys[i];
		fe[i].value = twl_bin(&fed[i]);
		fep[i] = &fe[i];
	}
	r.n_svids = n;
	r.svids = svp;
	r.n_federated_bundles = nfed;
	r.federated_bundles = fep;
	size_t len = x509_svidresponse__get_packed_size(&r);
	out->data = malloc(len > 0 ? len : 1);
	TU_CHECK(out->data != NULL);
	out->len = x509_svidresponse__pack(&r, out->data);
}

#endif /* LANYARD_TEST_WORKLOAD_UTIL_H */
