/*
 * testutil_x509.h: test-only fixtures: keys and certificates made at test
 * time with OpenSSL, each property settable so every X509-SVID rule can be
 * broken on purpose. Static inline, so a test (or fuzz target) includes
 * what it uses and nothing else is compiled in. Not for production: the
 * extension values go through OpenSSL's config-string parser.
 *
 * Failures abort(): a fixture that cannot be made is a broken test.
 * Everything returned is owned by the caller (X509_free, EVP_PKEY_free,
 * ly_buf_free, tu_pki_free).
 */
#ifndef LANYARD_TESTUTIL_X509_H
#define LANYARD_TESTUTIL_X509_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/buf.h"
#include "lib/keys.h"

/* The fixtures' "now": certificates are valid around it, tests verify at it. */
#define TU_NOW ((time_t)1700000000)

#define TU_CHECK(cond)                                                              \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "%s:%d: fixture failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                    \
		}                                                                   \
	} while (0)

enum tu_bc { TU_BC_ABSENT, TU_BC_FALSE, TU_BC_TRUE };

struct tu_spec {
	const char *cn;        /* subject CN; NULL gives an empty subject */
	const char *uri;       /* URI SAN; NULL for none */
	const char *uri2;      /* a second URI SAN */
	const char *dns;       /* a DNS SAN */
	bool san_critical;
	bool dup_san;          /* add the SAN extension twice */
	enum tu_bc bc;
	bool bc_noncritical;
	int pathlen;           /* >= 0 adds pathLenConstraint */
	const char *ku;        /* "digitalSignature", ...; NULL for none */
	bool ku_noncritical;
	const char *eku;       /* "serverAuth,clientAuth"; NULL for none */
	long not_before;       /* seconds from TU_NOW */
	long not_after;
	bool no_skid, no_akid;
	const EVP_MD *md;      /* NULL: SHA-256 */
	bool v1;               /* version field 1 (with extensions anyway) */
};

static inline struct tu_spec
tu_leaf_spec(const char *uri)
{
	struct tu_spec s;
	memset(&s, 0, sizeof(s));
	s.cn = "workload";
	s.uri = uri;
	s.bc = TU_BC_FALSE;
	s.pathlen = -1;
	s.ku = "digitalSignature,keyEncipherment,keyAgreement";
	s.eku = "serverAuth,clientAuth";
	s.not_before = -3600;
	s.not_after = 3600;
	return s;
}

static inline struct tu_spec
tu_ca_spec(const char *uri)
{
	struct tu_spec s;
	memset(&s, 0, sizeof(s));
	s.cn = "lanyard ca";
	s.uri = uri;
	s.bc = TU_BC_TRUE;
	s.pathlen = -1;
	s.ku = "keyCertSign,cRLSign";
	s.not_before = -86400;
	s.not_after = 86400;
	return s;
}

static inline EVP_PKEY *
tu_key(enum ly_key_type type)
{
	EVP_PKEY *k = NULL;
	TU_CHECK(ly_key_generate(type, &k, NULL) == LY_OK);
	return k;
}

/* An EC key on any named curve ("secp256k1", "P-521", ...). */
static inline EVP_PKEY *
tu_ec_key(const char *curve)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
	TU_CHECK(k != NULL);
	return k;
}

/*
 * A P-256 key that is the same on every run, from the scalar
 * seed, seed+1, ..., seed+31 (seed 1..200): for fuzz targets whose seed
 * corpus holds certificates that must chain to a key made at start-up.
 * Worthless as a secret by construction.
 */
static inline EVP_PKEY *
tu_fixed_ec_key(unsigned char seed)
{
	/* SEC 1 ECPrivateKey without the public key: OpenSSL derives it. */
	static const unsigned char head[] = { 0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20 };
	static const unsigned char tail[] = { 0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	unsigned char der[sizeof(head) + 32 + sizeof(tail)];
	TU_CHECK(seed >= 1 && seed <= 200);
	memcpy(der, head, sizeof(head));
	for (int i = 0; i < 32; i++)
		der[sizeof(head) + (size_t)i] = (unsigned char)(seed + i);
	memcpy(der + sizeof(head) + 32, tail, sizeof(tail));
	const unsigned char *p = der;
	EVP_PKEY *k = d2i_PrivateKey(EVP_PKEY_EC, NULL, &p, (long)sizeof(der));
	TU_CHECK(k != NULL);
	return k;
}

static inline EVP_PKEY *
tu_rsa_key(size_t bits)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", bits);
	TU_CHECK(k != NULL);
	return k;
}

static inline void
tu_add_ext(X509 *x, X509V3_CTX *ctx, int nid, bool critical, const char *value)
{
	char buf[1024];
	TU_CHECK(snprintf(buf, sizeof(buf), "%s%s", critical ? "critical," : "", value) < (int)sizeof(buf));
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, buf);
	TU_CHECK(ext != NULL);
	TU_CHECK(X509_add_ext(x, ext, -1) == 1);
	X509_EXTENSION_free(ext);
}

/*
 * Makes a certificate for `key` as `spec` says, signed by `issuer_key`
 * under `issuer` (both NULL: self-signed).
 */
static inline X509 *
tu_make(const struct tu_spec *spec, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
	X509 *x = X509_new();
	TU_CHECK(x != NULL);
	TU_CHECK(X509_set_version(x, spec->v1 ? X509_VERSION_1 : X509_VERSION_3));

	unsigned char serial[16];
	TU_CHECK(RAND_bytes(serial, sizeof(serial)) == 1);
	serial[0] &= 0x7f;
	BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
	TU_CHECK(bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL);
	BN_free(bn);

	X509_NAME *name = X509_get_subject_name(x);
	if (spec->cn != NULL) {
		TU_CHECK(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Lanyard test",
		    -1, -1, 0));
		TU_CHECK(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)spec->cn, -1,
		    -1, 0));
	}
	TU_CHECK(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name));

	time_t base = TU_NOW;
	TU_CHECK(X509_time_adj_ex(X509_getm_notBefore(x), 0, spec->not_before, &base) != NULL);
	TU_CHECK(X509_time_adj_ex(X509_getm_notAfter(x), 0, spec->not_after, &base) != NULL);
	TU_CHECK(X509_set_pubkey(x, key));

	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	if (spec->bc != TU_BC_ABSENT) {
		char bc[64];
		if (spec->pathlen >= 0)
			snprintf(bc, sizeof(bc), "CA:%s,pathlen:%d", spec->bc == TU_BC_TRUE ? "TRUE" : "FALSE",
			    spec->pathlen);
		else
			snprintf(bc, sizeof(bc), "CA:%s", spec->bc == TU_BC_TRUE ? "TRUE" : "FALSE");
		tu_add_ext(x, &ctx, NID_basic_constraints, !spec->bc_noncritical, bc);
	}
	if (spec->ku != NULL)
		tu_add_ext(x, &ctx, NID_key_usage, !spec->ku_noncritical, spec->ku);
	if (spec->eku != NULL)
		tu_add_ext(x, &ctx, NID_ext_key_usage, false, spec->eku);
	if (!spec->no_skid)
		tu_add_ext(x, &ctx, NID_subject_key_identifier, false, "hash");
	if (!spec->no_akid && issuer != NULL)
		tu_add_ext(x, &ctx, NID_authority_key_identifier, false, "keyid:always");
	if (spec->uri != NULL || spec->dns != NULL) {
		char san[2048];
		int n = snprintf(san, sizeof(san), "%s%s%s%s%s%s", spec->uri != NULL ? "URI:" : "",
		    spec->uri != NULL ? spec->uri : "", spec->uri2 != NULL ? ",URI:" : "",
		    spec->uri2 != NULL ? spec->uri2 : "", spec->dns != NULL ? (spec->uri != NULL ? ",DNS:" : "DNS:") : "",
		    spec->dns != NULL ? spec->dns : "");
		TU_CHECK(n > 0 && n < (int)sizeof(san));
		tu_add_ext(x, &ctx, NID_subject_alt_name, spec->san_critical, san);
		if (spec->dup_san)
			tu_add_ext(x, &ctx, NID_subject_alt_name, spec->san_critical, san);
	}
	TU_CHECK(X509_sign(x, issuer_key != NULL ? issuer_key : key, spec->md != NULL ? spec->md : EVP_sha256()) > 0);
	return x;
}

/* DER of one certificate into `out` (empty on entry). */
static inline void
tu_der(X509 *x, struct ly_buf *out)
{
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	TU_CHECK(len > 0);
	TU_CHECK(ly_buf_set(out, der, (size_t)len, NULL) == LY_OK);
	OPENSSL_free(der);
}

/* DER of `n` certificates concatenated, in order. */
static inline void
tu_chain(X509 *const *certs, size_t n, struct ly_buf *out)
{
	ly_buf_init(out, 0, false);
	for (size_t i = 0; i < n; i++) {
		struct ly_buf one = LY_BUF_INIT;
		tu_der(certs[i], &one);
		TU_CHECK(ly_buf_append(out, one.data, one.len, (size_t)1 << 30, NULL) == LY_OK);
		ly_buf_free(&one);
	}
}

/*
 * A small PKI for trust domain "example.org": a root CA (SPIFFE ID
 * spiffe://example.org), an intermediate under it, and a leaf key.
 */
struct tu_pki {
	EVP_PKEY *root_key, *int_key, *leaf_key;
	X509 *root, *inter;
	struct ly_buf root_der;
};

static inline void
tu_pki_init(struct tu_pki *p)
{
	memset(p, 0, sizeof(*p));
	p->root_key = tu_key(LY_KEY_EC_P256);
	p->int_key = tu_key(LY_KEY_EC_P256);
	p->leaf_key = tu_key(LY_KEY_EC_P256);
	struct tu_spec rs = tu_ca_spec("spiffe://example.org");
	rs.cn = "root";
	p->root = tu_make(&rs, p->root_key, NULL, NULL);
	struct tu_spec is = tu_ca_spec("spiffe://example.org");
	is.cn = "intermediate";
	p->inter = tu_make(&is, p->int_key, p->root, p->root_key);
	tu_der(p->root, &p->root_der);
}

/* A leaf for `spec` under the intermediate, as DER chain leaf + intermediate. */
static inline void
tu_pki_chain(struct tu_pki *p, const struct tu_spec *spec, struct ly_buf *out)
{
	X509 *leaf = tu_make(spec, p->leaf_key, p->inter, p->int_key);
	X509 *certs[2] = { leaf, p->inter };
	tu_chain(certs, 2, out);
	X509_free(leaf);
}

static inline void
tu_pki_free(struct tu_pki *p)
{
	EVP_PKEY_free(p->root_key);
	EVP_PKEY_free(p->int_key);
	EVP_PKEY_free(p->leaf_key);
	X509_free(p->root);
	X509_free(p->inter);
	ly_buf_free(&p->root_der);
	memset(p, 0, sizeof(*p));
}

#endif /* LANYARD_TESTUTIL_X509_H */
