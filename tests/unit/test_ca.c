/*
 * test_ca.c: the server's CA (server/ca.h) on real files in a mkdtemp
 * directory: persistence and file modes, issuance checked by lib's
 * X.509-SVID verifier against the CA's own bundle, every CSR refusal,
 * rotation of X.509 and JWT authorities step by step, the upstream CA, and
 * the caps on TTLs. Time is passed explicitly, so rotation is tested
 * without waiting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/b64.h"
#include "lib/bundle.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/jwt.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/x509svid.h"
#include "server/ca.h"
#include "testutil_x509.h"

#define TD "example.org"
#define WL "spiffe://example.org/ns/prod/sa/web"
#define T0 TU_NOW
#define DAY (24 * 60 * 60)

struct fx {
	char dir[64];
	struct ly_ca *ca;
	EVP_PKEY *key; /* a workload's P-256 key */
};

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/lanyard-test-ca-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->key = tu_key(LY_KEY_EC_P256);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	ly_ca_free(f->ca);
	EVP_PKEY_free(f->key);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct ly_ca_config
config(const struct fx *f)
{
	struct ly_ca_config c;
	memset(&c, 0, sizeof(c));
	c.trust_domain = TD;
	c.data_dir = f->dir;
	return c;
}

static void
open_ca(struct fx *f, time_t now)
{
	struct ly_ca_config c = config(f);
	struct ly_error err;
	ly_status rc = ly_ca_open(&c, now, &f->ca, &err);
	if (rc != LY_OK)
		fail_msg("ly_ca_open: %s", err.msg);
}

static struct ly_spiffe_id
sid(const char *s)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_spiffe_id_parse_str(s, &id, NULL), LY_OK);
	return id;
}

/* A CSR made with OpenSSL directly, so that it can break every rule. */
static void
make_csr(EVP_PKEY *key, const char *san, const EVP_MD *md, struct ly_buf *out)
{
	X509_REQ *req = X509_REQ_new();
	assert_non_null(req);
	assert_true(X509_REQ_set_version(req, X509_REQ_VERSION_1));
	assert_true(X509_REQ_set_pubkey(req, key));
	if (san != NULL) {
		STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
		assert_non_null(e);
		assert_true(sk_X509_EXTENSION_push(exts, e) > 0);
		assert_true(X509_REQ_add_extensions(req, exts));
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	}
	assert_true(X509_REQ_sign(req, key, md) > 0);
	uint8_t *der = NULL;
	int n = i2d_X509_REQ(req, &der);
	assert_true(n > 0);
	assert_int_equal(ly_buf_set(out, der, (size_t)n, NULL), LY_OK);
	OPENSSL_free(der);
	X509_REQ_free(req);
}

/* A CSR made by lib/csr.c, the way an agent makes one. */
static void
lib_csr(EVP_PKEY *key, const char *id, struct ly_buf *out)
{
	struct ly_spiffe_id s = sid(id);
	assert_int_equal(ly_csr_build(key, &s, NULL, 0, out, NULL), LY_OK);
}

static ly_status
sign(struct fx *f, const struct ly_buf *csr, const char *id, time_t now, struct ly_buf *chain, struct ly_error *err)
{
	struct ly_spiffe_id s = sid(id);
	return ly_ca_sign_x509_svid(f->ca, csr->data, csr->len, &s, NULL, 0, 0, now, chain, NULL, err);
}

/* Verifies `chain` against the X.509 authorities of `b` at `now`, as an agent does. */
static ly_status
verify(const struct ly_bundle *b, const struct ly_buf *chain, time_t now, EVP_PKEY *key, struct ly_error *err)
{
	struct ly_buf roots = LY_BUF_INIT;
	X509_STORE *store = NULL;
	struct ly_x509svid_info info;

	assert_int_equal(ly_bundle_x509_authorities_der(b, &roots, NULL), LY_OK);
	assert_int_equal(ly_x509_store_new(roots.data, roots.len, &store, NULL), LY_OK);
	ly_status rc = ly_x509svid_verify_ex(chain->data, chain->len, store, TD, now, key, &info, err);
	X509_STORE_free(store);
	ly_buf_free(&roots);
	return rc;
}

static size_t
chain_split(const struct ly_buf *chain, struct ly_der_span *spans)
{
	size_t n = 0;
	assert_int_equal(ly_der_split(chain->data, chain->len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &n, NULL),
	    LY_OK);
	return n;
}

static X509 *
chain_cert(const struct ly_buf *chain, size_t i)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t n = chain_split(chain, spans);
	assert_true(i < n);
	X509 *x = NULL;
	assert_int_equal(ly_der_parse_one(chain->data + spans[i].off, spans[i].len, &x, NULL), LY_OK);
	return x;
}

/* The DER of certificate `i` of `chain`, copied. */
static void
chain_der(const struct ly_buf *chain, size_t i, struct ly_buf *out)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t n = chain_split(chain, spans);
	assert_true(i < n);
	assert_int_equal(ly_buf_set(out, chain->data + spans[i].off, spans[i].len, NULL), LY_OK);
}

static time_t
cert_time(const ASN1_TIME *t)
{
	time_t v = 0;
	assert_int_equal(ly_asn1_time_to_time(t, &v, NULL), LY_OK);
	return v;
}

static bool
bufs_equal(const struct ly_buf *a, const struct ly_buf *b)
{
	return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Reads <dir>/ca/<name> into a NUL-terminated string (caller frees); NULL when absent. */
static char *
read_ca_file(const struct fx *f, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/ca/%.100s", f->dir, name);
	FILE *fp = fopen(path, "r");
	if (fp == NULL)
		return NULL;
	char *s = calloc(1, 70000);
	assert_non_null(s);
	size_t n = fread(s, 1, 69999, fp);
	s[n] = '\0';
	fclose(fp);
	return s;
}

/* Names of the slot files in <dir>/ca, as one string "a,b,". */
static void
list_slots(const struct fx *f, char *out, size_t size, int *count)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/ca", f->dir);
	DIR *d = opendir(path);
	assert_non_null(d);
	out[0] = '\0';
	*count = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strstr(e->d_name, ".slot") == NULL)
			continue;
		strncat(out, e->d_name, size - strlen(out) - 2);
		strcat(out, ",");
		(*count)++;
	}
	closedir(d);
}

/* ---- persistence ---- */

static void
test_open_persists(void **state)
{
	struct fx *f = *state;
	char path[256];
	struct stat st;

	/* A data dir as the operator made it stays so; an existing ca/ that is too open is closed. */
	assert_int_equal(chmod(f->dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/ca", f->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(chmod(path, 0755), 0);
	ly_log_set_fd(-1);
	open_ca(f, T0);
	ly_log_set_fd(2);
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	const struct ly_bundle *b = ly_ca_bundle(f->ca);
	assert_non_null(b);
	assert_string_equal(ly_ca_trust_domain(f->ca), TD);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 1);
	uint64_t seq = ly_bundle_sequence(b);
	assert_true(seq >= 1);
	/* min(24 h / 6, 10 min): a poller sees a successor before it signs. */
	assert_int_equal(ly_bundle_refresh_hint(b), 600);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY / 2);

	struct ly_buf root = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&root, ly_bundle_x509_authority(b, 0)->data, ly_bundle_x509_authority(b, 0)->len,
	    NULL), LY_OK);
	char kid[64];
	snprintf(kid, sizeof(kid), "%s", ly_bundle_jwt_authority_kid(b, 0));
	assert_int_equal(strlen(kid), LY_CA_KID_LEN);

	/* The directory 0700, every file in it 0600. */
	snprintf(path, sizeof(path), "%s/ca", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *e;
	int files = 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char p2[512];
		snprintf(p2, sizeof(p2), "%s/%s", path, e->d_name);
		assert_int_equal(stat(p2, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		files++;
	}
	closedir(d);
	assert_int_equal(files, 3); /* x509 slot, jwt slot, bundle-sequence */

	/* A second CA on the same directory is refused while the first holds it. */
	struct ly_ca *other = NULL;
	struct ly_ca_config c = config(f);
	struct ly_error err;
	assert_int_equal(ly_ca_open(&c, T0, &other, &err), LY_E_IO);
	assert_null(other);

	/* Reopened: the same root and kid, a higher sequence. */
	ly_ca_free(f->ca);
	f->ca = NULL;
	open_ca(f, T0 + 60);
	b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(b, 0), &root));
	assert_string_equal(ly_bundle_jwt_authority_kid(b, 0), kid);
	assert_true(ly_bundle_sequence(b) > seq);
	ly_buf_free(&root);
}

static void
test_refuses_bad_files(void **state)
{
	struct fx *f = *state;
	char list[1024], path[512];
	int n = 0;
	struct ly_error err;
	struct ly_ca_config c = config(f);

	open_ca(f, T0);
	ly_ca_free(f->ca);
	f->ca = NULL;
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 2);
	*strchr(list, ',') = '\0';
	assert_true(snprintf(path, sizeof(path), "%s/ca/%.200s", f->dir, list) < (int)sizeof(path));

	/* Readable by others: refused. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "0600"));
	assert_int_equal(chmod(path, 0600), 0);

	/* Another trust domain: refused. */
	c.trust_domain = "other.org";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "trust domain"));
	c.trust_domain = TD;

	/* A changed line: refused. */
	char *text = read_ca_file(f, list);
	assert_non_null(text);
	char *at = strstr(text, "issued_at ");
	assert_non_null(at);
	at[0] = 'X';
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "unknown field"));
	at[0] = 'i';
	fp = fopen(path, "w");
	fputs(text, fp);
	fclose(fp);
	free(text);
	open_ca(f, T0);
}

static void
test_config_refused(void **state)
{
	struct fx *f = *state;
	struct ly_ca_config c = config(f);
	struct ly_error err;

	c.trust_domain = "Example.org";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.ca_ttl = 30;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.propagation_delay = DAY / 2;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.x509_svid_ttl = LY_X509_SVID_TTL_MAX + 1;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.upstream_cert_path = "/nonexistent";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	c = config(f);
	c.data_dir = "/nonexistent/dir/below";
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_IO);
	assert_null(f->ca);
	/* The propagation delay by default: min(10 min, TTL / 10). */
	c = config(f);
	c.ca_ttl = 3000;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	assert_int_equal(ly_bundle_refresh_hint(ly_ca_bundle(f->ca)), 300);
}

/* ---- issuance ---- */

static void
test_issue_leaf(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, chain2 = LY_BUF_INIT;
	struct ly_error err;
	time_t exp = 0;
	const char *dns[] = { "web.example.org", "api.example.org" };
	struct ly_spiffe_id id = sid(WL);

	open_ca(f, T0);
	lib_csr(f->key, WL, &csr);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, dns, 2, 0, T0 + 5, &chain, &exp, &err),
	    LY_OK);
	assert_int_equal(exp, T0 + 5 + 3600);
	if (verify(ly_ca_bundle(f->ca), &chain, T0 + 5, f->key, &err) != LY_OK)
		fail_msg("verify: %s", err.msg);
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	assert_int_equal(chain_split(&chain, spans), 2);

	X509 *leaf = chain_cert(&chain, 0), *ca = chain_cert(&chain, 1);
	assert_int_equal(X509_get_version(leaf), X509_VERSION_3);
	assert_int_equal(cert_time(X509_get0_notBefore(leaf)), T0 + 5 - LY_SVID_BACKDATE(3600));
	assert_int_equal(LY_SVID_BACKDATE(3600), 300);
	assert_int_equal(LY_SVID_BACKDATE(20), 10);
	assert_int_equal(LY_SVID_BACKDATE(120), 30);
	assert_int_equal(cert_time(X509_get0_notAfter(leaf)), T0 + 5 + 3600);
	uint32_t fl = X509_get_extension_flags(leaf);
	assert_true((fl & EXFLAG_BCONS) != 0);
	assert_true((fl & EXFLAG_CA) == 0);
	assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
	assert_int_equal(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, X509_get_ext_by_NID(leaf, NID_basic_constraints,
	    -1))), 1);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, X509_get_ext_by_NID(leaf, NID_key_usage, -1))),
	    1);
	/* Subject CN = the first DNS name; the SAN then is not critical. */
	char cn[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn)) > 0);
	assert_string_equal(cn, "web.example.org");
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf, X509_get_ext_by_NID(leaf,
	    NID_subject_alt_name, -1))), 0);
	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 3);
	GENERAL_NAMES_free(gens);
	assert_int_equal(X509_check_private_key(leaf, f->key), 1);
	/* Key identifiers chain: the leaf's AKID is the signing CA's SKID. */
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(ca)), 0);
	assert_non_null(X509_get0_subject_key_id(leaf));
	/* A random serial of up to 128 bits, different each time. */
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
	assert_true(BN_num_bits(bn) > 64 && BN_num_bits(bn) <= 128);
	BN_free(bn);

	/* Without DNS names: an empty subject and a critical SAN (X509-SVID §3.1). */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 600, T0 + 5, &chain2, &exp, &err),
	    LY_OK);
	assert_int_equal(exp, T0 + 5 + 600);
	X509 *leaf2 = chain_cert(&chain2, 0);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(leaf2)), 0);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(leaf2, X509_get_ext_by_NID(leaf2,
	    NID_subject_alt_name, -1))), 1);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(leaf2)), 0);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain2, T0 + 5, f->key, NULL), LY_OK);
	/* Verified against a bundle without our root: refused. */
	struct tu_pki pki;
	tu_pki_init(&pki);
	X509_STORE *store = NULL;
	assert_int_equal(ly_x509_store_new(pki.root_der.data, pki.root_der.len, &store, NULL), LY_OK);
	assert_int_not_equal(ly_x509svid_verify(chain2.data, chain2.len, store, TD, T0 + 5, NULL, NULL), LY_OK);
	X509_STORE_free(store);
	tu_pki_free(&pki);

	X509_free(leaf);
	X509_free(leaf2);
	X509_free(ca);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	ly_buf_free(&chain2);
}

static void
test_issue_key_types(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	struct ly_error err;

	open_ca(f, T0);
	/* P-384 and P-521 keys, with SHA-384 and SHA-512 signatures. */
	const char *curves[] = { "P-384", "P-521" };
	for (size_t i = 0; i < 2; i++) {
		EVP_PKEY *k = tu_ec_key(curves[i]);
		make_csr(k, "URI:" WL, i == 0 ? EVP_sha384() : EVP_sha512(), &csr);
		if (sign(f, &csr, WL, T0, &chain, &err) != LY_OK)
			fail_msg("%s: %s", curves[i], err.msg);
		assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, k, NULL), LY_OK);
		ly_buf_free(&csr);
		ly_buf_free(&chain);
		EVP_PKEY_free(k);
	}
	/* RSA-2048: accepted, and the leaf also allows keyEncipherment. */
	EVP_PKEY *rsa = tu_rsa_key(2048);
	make_csr(rsa, "URI:" WL, EVP_sha256(), &csr);
	assert_int_equal(sign(f, &csr, WL, T0, &chain, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, rsa, NULL), LY_OK);
	X509 *leaf = chain_cert(&chain, 0);
	assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	X509_free(leaf);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	EVP_PKEY_free(rsa);
}

static void
expect_refused(struct fx *f, const struct ly_buf *csr, const char *id, ly_status want, const char *msg_part)
{
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_error err;
	ly_status rc = sign(f, csr, id, T0, &chain, &err);
	if (rc != want)
		fail_msg("expected %s, got %s: %s", ly_status_str(want), ly_status_str(rc), rc == LY_OK ? "" : err.msg);
	assert_null(chain.data);
	if (msg_part != NULL && strstr(err.msg, msg_part) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", err.msg, msg_part);
}

static void
test_csr_refusals(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, bad = LY_BUF_INIT;

	open_ca(f, T0);
	lib_csr(f->key, WL, &csr);

	/* Signature broken (last byte of the ECDSA s value). */
	assert_int_equal(ly_buf_set(&bad, csr.data, csr.len, NULL), LY_OK);
	bad.data[bad.len - 1] ^= 0x01;
	expect_refused(f, &bad, WL, LY_E_UNTRUSTED, "self-signature");
	ly_buf_free(&bad);

	/* The public key changed: not on the curve, refused before any signature check. */
	assert_int_equal(ly_buf_set(&bad, csr.data, csr.len, NULL), LY_OK);
	uint8_t pt[65];
	size_t ptlen = 0;
	assert_true(EVP_PKEY_get_octet_string_param(f->key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptlen));
	uint8_t *pos = memmem(bad.data, bad.len, pt, ptlen);
	assert_non_null(pos);
	pos[64] ^= 0x01;
	expect_refused(f, &bad, WL, LY_E_INVALID, "curve");
	ly_buf_free(&bad);

	/* Trailing bytes after the CSR. */
	assert_int_equal(ly_buf_set(&bad, csr.data, csr.len, NULL), LY_OK);
	assert_int_equal(ly_buf_append(&bad, "\0", 1, 1 << 20, NULL), LY_OK);
	expect_refused(f, &bad, WL, LY_E_INVALID, "trailing");
	ly_buf_free(&bad);

	/* Truncated, garbage, empty, oversized. */
	struct ly_buf cut = { .data = csr.data, .len = csr.len - 1 };
	expect_refused(f, &cut, WL, LY_E_INVALID, NULL);
	uint8_t junk[64];
	memset(junk, 0x41, sizeof(junk));
	struct ly_buf garbage = { .data = junk, .len = sizeof(junk) };
	expect_refused(f, &garbage, WL, LY_E_INVALID, NULL);
	struct ly_buf empty = { .data = junk, .len = 0 };
	expect_refused(f, &empty, WL, LY_E_INVALID, NULL);
	uint8_t *big = calloc(1, LY_CSR_DER_MAX + 1);
	assert_non_null(big);
	struct ly_buf huge = { .data = big, .len = LY_CSR_DER_MAX + 1 };
	expect_refused(f, &huge, WL, LY_E_LIMIT, NULL);
	free(big);

	/* The SAN is not the expected ID; another trust domain; no path. */
	expect_refused(f, &csr, "spiffe://example.org/ns/prod/sa/db", LY_E_INVALID, "URI SAN");
	struct ly_buf other = LY_BUF_INIT;
	lib_csr(f->key, "spiffe://other.org/ns/prod/sa/web", &other);
	expect_refused(f, &other, "spiffe://other.org/ns/prod/sa/web", LY_E_INVALID, "trust domain");
	ly_buf_free(&other);
	expect_refused(f, &csr, "spiffe://example.org", LY_E_INVALID, "path");

	/* Two URI SANs; no SAN; a DNS SAN only. */
	make_csr(f->key, "URI:" WL ",URI:spiffe://example.org/other", EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_INVALID, "2 URI SANs");
	ly_buf_free(&bad);
	make_csr(f->key, NULL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_INVALID, "no extension request");
	ly_buf_free(&bad);
	make_csr(f->key, "DNS:web.example.org", EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_INVALID, "no URI SAN");
	ly_buf_free(&bad);

	/* Weak keys and digests. */
	EVP_PKEY *rsa1024 = tu_rsa_key(1024);
	make_csr(rsa1024, "URI:" WL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "1024");
	ly_buf_free(&bad);
	EVP_PKEY_free(rsa1024);
	make_csr(f->key, "URI:" WL, EVP_sha1(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "signature algorithm");
	ly_buf_free(&bad);
	EVP_PKEY *k1 = tu_ec_key("secp256k1");
	make_csr(k1, "URI:" WL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "curve");
	ly_buf_free(&bad);
	EVP_PKEY_free(k1);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	make_csr(ed, "URI:" WL, NULL, &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "key algorithm");
	ly_buf_free(&bad);
	EVP_PKEY_free(ed);

	/* A compressed point: refused (Go clients could not parse the leaf). */
	EVP_PKEY *ck = tu_key(LY_KEY_EC_P256);
	assert_true(EVP_PKEY_set_utf8_string_param(ck, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, "compressed"));
	make_csr(ck, "URI:" WL, EVP_sha256(), &bad);
	expect_refused(f, &bad, WL, LY_E_UNSUPPORTED, "compressed");
	ly_buf_free(&bad);
	EVP_PKEY_free(ck);

	/* TTLs: negative, over the cap; DNS names over the caps or malformed. */
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_error err;
	struct ly_spiffe_id id = sid(WL);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, -1, T0, &chain, NULL, &err),
	    LY_E_INVALID);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, LY_X509_SVID_TTL_MAX + 1, T0,
	    &chain, NULL, &err), LY_E_LIMIT);
	const char *bad_dns[] = { "web example" };
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, bad_dns, 1, 0, T0, &chain, NULL, &err),
	    LY_E_INVALID);
	const char *many[LY_DNS_NAMES_MAX + 1];
	for (size_t i = 0; i <= LY_DNS_NAMES_MAX; i++)
		many[i] = "a.example.org";
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, many, LY_DNS_NAMES_MAX + 1, 0, T0, &chain,
	    NULL, &err), LY_E_LIMIT);
	/* A DNS name longer than a CN may be: in the SAN only, the subject empty. */
	char longname[100];
	memset(longname, 'a', 80);
	strcpy(longname + 80, ".example.org");
	const char *ld[] = { longname };
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, ld, 1, 0, T0, &chain, NULL, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, f->key, NULL), LY_OK);
	ly_buf_free(&chain);
	/* The output buffer must be empty. */
	struct ly_buf full = { .data = (uint8_t *)junk, .len = 1 };
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &full, NULL, &err),
	    LY_E_INVALID);
	ly_buf_free(&csr);
}

static void
test_agent_and_batch(void **state)
{
	struct fx *f = *state;
	struct ly_buf c1 = LY_BUF_INIT, c2 = LY_BUF_INIT, chain = LY_BUF_INIT;
	struct ly_error err;
	const char *agent = "spiffe://example.org/lanyard/agent/join_token/abc";
	struct ly_spiffe_id aid = sid(agent), wid = sid(WL);
	time_t exp = 0;

	open_ca(f, T0);
	lib_csr(f->key, agent, &c1);
	assert_int_equal(ly_ca_sign_agent_svid(f->ca, c1.data, c1.len, &aid, 0, T0, &chain, &exp, &err), LY_OK);
	assert_int_equal(exp, T0 + 3600);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0, f->key, NULL), LY_OK);
	ly_buf_free(&chain);

	lib_csr(f->key, WL, &c2);
	struct ly_ca_sign_req reqs[3] = {
		{ c2.data, c2.len, &wid, NULL, 0, 0 },
		{ c1.data, c1.len, &wid, NULL, 0, 0 }, /* the SAN is the agent's: refused alone */
		{ c1.data, c1.len, &aid, NULL, 0, 120 },
	};
	struct ly_ca_sign_res res[3];
	assert_int_equal(ly_ca_sign_batch(f->ca, reqs, 3, T0, res, &err), LY_OK);
	assert_int_equal(res[0].status, LY_OK);
	assert_int_equal(res[1].status, LY_E_INVALID);
	assert_non_null(strstr(res[1].err.msg, "URI SAN"));
	assert_null(res[1].chain.data);
	assert_int_equal(res[2].status, LY_OK);
	assert_int_equal(res[2].expires_at, T0 + 120);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &res[0].chain, T0, f->key, NULL), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &res[2].chain, T0, f->key, NULL), LY_OK);
	ly_ca_sign_res_cleanup(res, 3);

	/* Over the batch cap: refused whole, each result says so. */
	struct ly_ca_sign_res *many = calloc(LY_CA_BATCH_MAX + 1, sizeof(*many));
	struct ly_ca_sign_req *mreq = calloc(LY_CA_BATCH_MAX + 1, sizeof(*mreq));
	assert_int_equal(ly_ca_sign_batch(f->ca, mreq, LY_CA_BATCH_MAX + 1, T0, many, &err), LY_E_LIMIT);
	assert_int_equal(many[LY_CA_BATCH_MAX].status, LY_E_LIMIT);
	free(many);
	free(mreq);

	/* No valid signing CA at that time (tick not called): refused. */
	assert_int_equal(ly_ca_sign_batch(f->ca, reqs, 1, T0 + 2 * DAY, res, &err), LY_E_EXPIRED);
	assert_int_equal(res[0].status, LY_E_EXPIRED);
	ly_ca_sign_res_cleanup(res, 1);
	ly_buf_free(&c1);
	ly_buf_free(&c2);
}

static void
test_leaf_capped_by_ca(void **state)
{
	struct fx *f = *state;
	struct ly_ca_config c = config(f);
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	struct ly_error err;
	struct ly_spiffe_id id = sid(WL);
	time_t exp = 0;

	c.ca_ttl = 7200;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	lib_csr(f->key, WL, &csr);
	/* 1 h asked at T0 + 1000: the signing CA (until T0 + 7200) outlives it... */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 3600, T0 + 1000, &chain, &exp,
	    &err), LY_OK);
	assert_int_equal(exp, T0 + 1000 + 3600);
	ly_buf_free(&chain);
	/* ...5000 s asked at T0 + 3000 (before rotation at 50%) ends with the signing CA. */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 5000, T0 + 3000, &chain, &exp,
	    &err), LY_OK);
	assert_int_equal(exp, T0 + 7200);
	X509 *leaf = chain_cert(&chain, 0), *ca = chain_cert(&chain, 1);
	assert_int_equal(cert_time(X509_get0_notAfter(leaf)), cert_time(X509_get0_notAfter(ca)));
	/* 4,200 s left ahead: backdated its full 300 s (a quarter of that would be 1,050 s). */
	assert_int_equal(cert_time(X509_get0_notBefore(leaf)), T0 + 3000 - 300);
	X509_free(leaf);
	X509_free(ca);
	ly_buf_free(&chain);
	/*
	 * Clipped to 200 s by the CA's end: backdated a quarter of that (50 s),
	 * not 300 s, so its 50% renewal mark (T0 + 7075) comes after issuance
	 * (T0 + 7000) instead of before it (an agent would renew it forever).
	 */
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 3600, T0 + 7000, &chain, &exp,
	    &err), LY_OK);
	leaf = chain_cert(&chain, 0);
	assert_int_equal(cert_time(X509_get0_notAfter(leaf)), T0 + 7200);
	assert_int_equal(cert_time(X509_get0_notBefore(leaf)), T0 + 7000 - 50);
	assert_true((cert_time(X509_get0_notBefore(leaf)) + cert_time(X509_get0_notAfter(leaf))) / 2 > T0 + 7000);
	X509_free(leaf);
	ly_buf_free(&chain);
	ly_buf_free(&csr);
}

/* ---- rotation ---- */

/*
 * Several servers (ly_ca_set_published): a successor made after the last
 * publish into the shared bundle does not sign at its activation time; it
 * signs once a publish covers it. Nothing is held before the first call.
 */
static void
test_unpublished_successor_held(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, c0 = LY_BUF_INIT, c1 = LY_BUF_INIT, c2 = LY_BUF_INIT;
	struct ly_buf ca0 = LY_BUF_INIT, ca1 = LY_BUF_INIT, ca2 = LY_BUF_INIT;
	struct ly_error err;
	bool changed = false;
	const time_t half = T0 + DAY / 2, delay = 600;

	open_ca(f, T0);
	ly_ca_set_published(f->ca, T0);
	lib_csr(f->key, WL, &csr);
	assert_int_equal(sign(f, &csr, WL, T0, &c0, &err), LY_OK);
	chain_der(&c0, 1, &ca0);
	/* The successor is made at 50% (the publish of the server fails: no call). */
	assert_int_equal(ly_ca_tick(f->ca, half, &changed, &err), LY_OK);
	assert_true(changed);
	/* Its activation time passes: it is held, and the next event is not its activation. */
	assert_int_equal(ly_ca_tick(f->ca, half + delay + 5, &changed, &err), LY_OK);
	assert_int_equal(sign(f, &csr, WL, half + delay + 5, &c1, &err), LY_OK);
	chain_der(&c1, 1, &ca1);
	assert_true(bufs_equal(&ca0, &ca1));
	assert_true(ly_ca_next_event(f->ca) > half + delay + 5);
	/* Published now: at the next tick it signs. */
	ly_ca_set_published(f->ca, half + delay + 6);
	assert_true(ly_ca_next_event(f->ca) <= half + delay + 6);
	assert_int_equal(ly_ca_tick(f->ca, half + delay + 6, &changed, &err), LY_OK);
	assert_int_equal(sign(f, &csr, WL, half + delay + 6, &c2, &err), LY_OK);
	chain_der(&c2, 1, &ca2);
	assert_false(bufs_equal(&ca0, &ca2));
	/* A publish time going back changes nothing. */
	ly_ca_set_published(f->ca, T0);
	ly_buf_free(&csr);
	ly_buf_free(&c0);
	ly_buf_free(&c1);
	ly_buf_free(&c2);
	ly_buf_free(&ca0);
	ly_buf_free(&ca1);
	ly_buf_free(&ca2);
}

static void
test_x509_rotation(void **state)
{
	struct fx *f = *state;
	struct ly_buf csr = LY_BUF_INIT, c0 = LY_BUF_INIT, c1 = LY_BUF_INIT, c2 = LY_BUF_INIT;
	struct ly_buf ca0 = LY_BUF_INIT, ca1 = LY_BUF_INIT, ca2 = LY_BUF_INIT;
	struct ly_error err;
	bool changed = true;
	const time_t half = T0 + DAY / 2, delay = 600;
	char list[1024];
	int n = 0;

	open_ca(f, T0);
	lib_csr(f->key, WL, &csr);
	uint64_t seq = ly_bundle_sequence(ly_ca_bundle(f->ca));
	struct ly_buf root0 = LY_BUF_INIT;
	const struct ly_buf *r0 = ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0);
	assert_int_equal(ly_buf_set(&root0, r0->data, r0->len, NULL), LY_OK);
	assert_int_equal(sign(f, &csr, WL, T0, &c0, &err), LY_OK);
	chain_der(&c0, 1, &ca0);

	/* At 49%: nothing. */
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY * 49 / 100, &changed, &err), LY_OK);
	assert_false(changed);
	assert_int_equal(ly_bundle_sequence(ly_ca_bundle(f->ca)), seq);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);

	/* At 50%: the successor is published (2 roots, sequence raised)... */
	assert_int_equal(ly_ca_tick(f->ca, half, &changed, &err), LY_OK);
	assert_true(changed);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 2);
	assert_int_equal(ly_bundle_sequence(ly_ca_bundle(f->ca)), seq + 1);
	assert_int_equal(ly_ca_next_event(f->ca), half + delay);
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 4);
	struct ly_bundle *published = NULL;
	assert_int_equal(ly_bundle_clone(ly_ca_bundle(f->ca), &published, NULL), LY_OK);

	/* ...but it does not sign until the propagation delay has passed. */
	assert_int_equal(ly_ca_tick(f->ca, half + delay - 1, &changed, &err), LY_OK);
	assert_false(changed);
	assert_int_equal(sign(f, &csr, WL, half + delay - 1, &c1, &err), LY_OK);
	chain_der(&c1, 1, &ca1);
	assert_true(bufs_equal(&ca0, &ca1));

	/* After it: the new signing CA signs; the bundle does not change. */
	assert_int_equal(ly_ca_tick(f->ca, half + delay, &changed, &err), LY_OK);
	assert_false(changed);
	assert_int_equal(sign(f, &csr, WL, half + delay, &c2, &err), LY_OK);
	chain_der(&c2, 1, &ca2);
	assert_false(bufs_equal(&ca0, &ca2));
	/* Its chain verifies against the bundle as it was when the successor was published... */
	if (verify(published, &c2, half + delay, f->key, &err) != LY_OK)
		fail_msg("new leaf against the published bundle: %s", err.msg);
	/* ...and what the old CA signed still verifies against the current bundle. */
	assert_int_equal(verify(ly_ca_bundle(f->ca), &c1, half + delay, f->key, NULL), LY_OK);
	ly_bundle_free(published);

	/* The old slot is retired: its file holds no private key any more. */
	list_slots(f, list, sizeof(list), &n);
	int with_keys = 0;
	for (char *name = strtok(list, ","); name != NULL; name = strtok(NULL, ",")) {
		if (strncmp(name, "x509-", 5) != 0)
			continue;
		char *text = read_ca_file(f, name);
		assert_non_null(text);
		if (strstr(text, "signing_key") != NULL) {
			with_keys++;
			assert_non_null(strstr(text, "root_key"));
			assert_non_null(strstr(text, "retired 0"));
		} else {
			assert_null(strstr(text, "root_key"));
			assert_non_null(strstr(text, "retired 1"));
		}
		free(text);
	}
	assert_int_equal(with_keys, 1);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY);

	/* A restart in between keeps all of it. */
	ly_ca_free(f->ca);
	f->ca = NULL;
	open_ca(f, half + delay + 5);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 2);
	struct ly_buf c3 = LY_BUF_INIT, ca3 = LY_BUF_INIT;
	assert_int_equal(sign(f, &csr, WL, half + delay + 5, &c3, &err), LY_OK);
	chain_der(&c3, 1, &ca3);
	assert_true(bufs_equal(&ca2, &ca3));
	seq = ly_bundle_sequence(ly_ca_bundle(f->ca));

	/* Just before it expires, the old root is still there. */
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY - 1, &changed, &err), LY_OK);
	assert_false(changed);
	assert_true(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0), &root0));

	/*
	 * At T0 + 1 day the old root expires: dropped, its files deleted. That
	 * is also 50% of the current slot's life: its successor is published
	 * in the same tick (one sequence step for both).
	 */
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY, &changed, &err), LY_OK);
	assert_true(changed);
	assert_int_equal(ly_bundle_sequence(ly_ca_bundle(f->ca)), seq + 1);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 2);
	for (size_t i = 0; i < 2; i++)
		assert_false(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), i), &root0));
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 4);
	struct ly_buf c4 = LY_BUF_INIT;
	assert_int_equal(sign(f, &csr, WL, T0 + DAY, &c4, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &c4, T0 + DAY, f->key, NULL), LY_OK);
	ly_buf_free(&c4);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY + delay);
	ly_buf_free(&root0);

	ly_buf_free(&csr);
	ly_buf_free(&c0);
	ly_buf_free(&c1);
	ly_buf_free(&c2);
	ly_buf_free(&c3);
	ly_buf_free(&ca0);
	ly_buf_free(&ca1);
	ly_buf_free(&ca2);
	ly_buf_free(&ca3);
}

static void
test_restart_after_expiry(void **state)
{
	struct fx *f = *state;
	struct ly_buf root = LY_BUF_INIT, csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	char list[1024];
	int n = 0;

	open_ca(f, T0);
	const struct ly_buf *r = ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0);
	assert_int_equal(ly_buf_set(&root, r->data, r->len, NULL), LY_OK);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* Down for two days: everything expired; fresh authorities, used at once. */
	open_ca(f, T0 + 2 * DAY);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);
	assert_false(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0), &root));
	list_slots(f, list, sizeof(list), &n);
	assert_int_equal(n, 2);
	lib_csr(f->key, WL, &csr);
	struct ly_error err;
	assert_int_equal(sign(f, &csr, WL, T0 + 2 * DAY, &chain, &err), LY_OK);
	assert_int_equal(verify(ly_ca_bundle(f->ca), &chain, T0 + 2 * DAY, f->key, NULL), LY_OK);
	ly_buf_free(&root);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
}

/* ---- JWT ---- */

static ly_status
validate(const struct ly_bundle *b, const char *token, const char *aud, time_t now, struct ly_spiffe_id *sub,
    struct ly_error *err)
{
	struct ly_bundle_set *set = NULL;
	struct ly_bundle *copy = NULL;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	assert_int_equal(ly_bundle_clone(b, &copy, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, copy, NULL), LY_OK);
	ly_status rc = ly_jwt_validate(token, strlen(token), aud, set, now, sub, NULL, err);
	ly_bundle_set_free(set);
	return rc;
}

static void
token_kid(const char *token, char *kid, size_t size)
{
	struct ly_buf hdr = LY_BUF_INIT;
	struct ly_jwt_header h;
	const char *dot = strchr(token, '.');
	assert_non_null(dot);
	assert_int_equal(ly_b64url_decode(token, (size_t)(dot - token), &hdr, NULL), LY_OK);
	assert_int_equal(ly_jwt_header_parse((const char *)hdr.data, hdr.len, &h, NULL), LY_OK);
	assert_true(strlen(h.kid) < size);
	memcpy(kid, h.kid, strlen(h.kid) + 1);
	ly_buf_free(&hdr);
}

static void
test_jwt(void **state)
{
	struct fx *f = *state;
	struct ly_spiffe_id id = sid(WL), sub;
	const char *aud[] = { "db", "cache" };
	char *t0 = NULL, *t1 = NULL, *t2 = NULL;
	char k0[64], k1[64], k2[64];
	struct ly_error err;
	time_t exp = 0;
	const time_t half = T0 + DAY / 2, delay = 600;

	open_ca(f, T0);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 2, 0, T0, &t0, &exp, &err), LY_OK);
	assert_int_equal(exp, T0 + 300);
	if (validate(ly_ca_bundle(f->ca), t0, "cache", T0 + 1, &sub, &err) != LY_OK)
		fail_msg("validate: %s", err.msg);
	assert_string_equal(sub.id, WL);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t0, "other", T0 + 1, NULL, NULL), LY_E_INVALID);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t0, "db", T0 + 301 + LY_JWT_LEEWAY_SECONDS, NULL, NULL),
	    LY_E_EXPIRED);
	token_kid(t0, k0, sizeof(k0));
	assert_string_equal(k0, ly_bundle_jwt_authority_kid(ly_ca_bundle(f->ca), 0));

	/* Refusals: TTL, subject outside the trust domain or without a path, no audience. */
	char *t = NULL;
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, -5, T0, &t, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, LY_JWT_SVID_TTL_MAX + 1, T0, &t, NULL, &err),
	    LY_E_LIMIT);
	struct ly_spiffe_id other = sid("spiffe://other.org/x"), tdid = sid("spiffe://example.org");
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &other, aud, 1, 0, T0, &t, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &tdid, aud, 1, 0, T0, &t, NULL, &err), LY_E_INVALID);
	assert_int_not_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 0, 0, T0, &t, NULL, &err), LY_OK);
	assert_null(t);

	/* Rotation: published at 50%, signing after the delay, the old key kept until it expires. */
	bool changed = false;
	assert_int_equal(ly_ca_tick(f->ca, half, &changed, &err), LY_OK);
	assert_true(changed);
	assert_int_equal(ly_bundle_jwt_authority_count(ly_ca_bundle(f->ca)), 2);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, 3600, half + 1, &t1, NULL, &err), LY_OK);
	token_kid(t1, k1, sizeof(k1));
	assert_string_equal(k1, k0);
	assert_int_equal(ly_ca_tick(f->ca, half + delay, &changed, &err), LY_OK);
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, 0, half + delay, &t2, NULL, &err), LY_OK);
	token_kid(t2, k2, sizeof(k2));
	assert_string_not_equal(k2, k0);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t1, "db", half + delay, NULL, NULL), LY_OK);
	assert_int_equal(validate(ly_ca_bundle(f->ca), t2, "db", half + delay, NULL, NULL), LY_OK);

	/* A token ends with its key: minted 100 s before the key expires, asking for 1000 s. */
	char *t3 = NULL;
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY, &changed, &err), LY_OK);
	assert_true(changed);
	/* The first key is gone (and at the same time, 50% of the second's life, a third is published). */
	const struct ly_bundle *b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_jwt_authority_count(b), 2);
	assert_null(ly_bundle_find_jwt_authority(b, k0));
	assert_non_null(ly_bundle_find_jwt_authority(b, k2));
	assert_int_equal(ly_ca_mint_jwt_svid(f->ca, &id, aud, 1, 1000, half + DAY - 100, &t3, &exp, &err), LY_OK);
	assert_int_equal(exp, half + DAY);

	ly_free_secret_str(t0);
	ly_free_secret_str(t1);
	ly_free_secret_str(t2);
	ly_free_secret_str(t3);
}

/* ---- upstream CA ---- */

static void
write_file(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	fclose(fp);
	chmod(path, 0600);
}

static void
write_pem_certs(const char *path, X509 *const *certs, size_t n)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	for (size_t i = 0; i < n; i++)
		assert_true(PEM_write_X509(fp, certs[i]));
	fclose(fp);
}

static void
write_key(const char *path, EVP_PKEY *key)
{
	struct ly_buf pem = LY_BUF_INIT;
	assert_int_equal(ly_key_to_pem(key, &pem, NULL), LY_OK);
	write_file(path, pem.data, pem.len);
	ly_buf_free_secret(&pem);
}

static void
test_upstream(void **state)
{
	struct fx *f = *state;
	struct tu_pki pki;
	char cert_path[256], key_path[256], chain_path[256];
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, root_der = LY_BUF_INIT;
	struct ly_error err;
	time_t exp;

	tu_pki_init(&pki); /* root (valid T0 +- 1 day) and an intermediate under it */
	snprintf(cert_path, sizeof(cert_path), "%s/root.pem", f->dir);
	snprintf(chain_path, sizeof(chain_path), "%s/chain.pem", f->dir);
	snprintf(key_path, sizeof(key_path), "%s/up.key", f->dir);
	write_pem_certs(cert_path, &pki.root, 1);
	write_key(key_path, pki.root_key);
	X509 *both[2] = { pki.inter, pki.root };
	write_pem_certs(chain_path, both, 2);
	tu_der(pki.root, &root_der);
	lib_csr(f->key, WL, &csr);
	struct ly_spiffe_id id = sid(WL);

	/* The upstream root signs our signing CA: chain leaf + signing CA; the bundle holds its root. */
	struct ly_ca_config c = config(f);
	c.upstream_cert_path = cert_path;
	c.upstream_key_path = key_path;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	const struct ly_bundle *b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(b, 0), &root_der));
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &chain, &exp, &err), LY_OK);
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	assert_int_equal(chain_split(&chain, spans), 2);
	if (verify(b, &chain, T0, f->key, &err) != LY_OK)
		fail_msg("upstream chain: %s", err.msg);
	/* The signing CA ends with the upstream root (T0 + 1 day), and so do leaves near it. */
	X509 *sca = chain_cert(&chain, 1);
	assert_int_equal(cert_time(X509_get0_notAfter(sca)), T0 + DAY);
	X509_free(sca);
	ly_buf_free(&chain);

	/*
	 * The upstream CA ends at T0 + 1 day, as the signing CA does: no
	 * successor can outlive it, so none is made, and the next event is the
	 * expiry (the operator must renew the upstream CA; logged as an error).
	 */
	bool changed = false;
	ly_log_set_fd(-1);
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY / 2, &changed, &err), LY_OK);
	ly_log_set_fd(2);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0 + DAY - 100, &chain, &exp,
	    &err), LY_OK);
	assert_int_equal(exp, T0 + DAY);
	ly_buf_free(&chain);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* A longer-lived upstream root: the signing CA rotates under it; the bundle keeps the one root. */
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	struct tu_spec ls = tu_ca_spec("spiffe://example.org");
	ls.not_after = 10 * DAY;
	EVP_PKEY *lkey = tu_key(LY_KEY_EC_P384);
	X509 *lroot = tu_make(&ls, lkey, NULL, NULL);
	struct ly_buf lroot_der = LY_BUF_INIT, first = LY_BUF_INIT, second = LY_BUF_INIT;
	tu_der(lroot, &lroot_der);
	write_pem_certs(cert_path, &lroot, 1);
	write_key(key_path, lkey);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &chain, &exp, &err), LY_OK);
	chain_der(&chain, 1, &first);
	ly_buf_free(&chain);
	assert_int_equal(ly_ca_next_event(f->ca), T0 + DAY / 2);
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY / 2, &changed, &err), LY_OK);
	assert_int_equal(ly_bundle_x509_authority_count(ly_ca_bundle(f->ca)), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(ly_ca_bundle(f->ca), 0), &lroot_der));
	assert_int_equal(ly_ca_tick(f->ca, T0 + DAY / 2 + 600, &changed, &err), LY_OK);
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0 + DAY / 2 + 600, &chain, &exp,
	    &err), LY_OK);
	chain_der(&chain, 1, &second);
	assert_false(bufs_equal(&first, &second));
	if (verify(ly_ca_bundle(f->ca), &chain, T0 + DAY / 2 + 600, f->key, &err) != LY_OK)
		fail_msg("rotated upstream chain: %s", err.msg);
	ly_buf_free(&chain);
	ly_buf_free(&first);
	ly_buf_free(&second);
	ly_buf_free(&lroot_der);
	X509_free(lroot);
	EVP_PKEY_free(lkey);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* With an intermediate: chain leaf + signing CA + intermediate, to the same root. */
	ly_buf_free(&csr);
	lib_csr(f->key, WL, &csr);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	write_pem_certs(chain_path, both, 2);
	write_key(key_path, pki.int_key);
	c.upstream_cert_path = chain_path;
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_OK);
	b = ly_ca_bundle(f->ca);
	assert_int_equal(ly_bundle_x509_authority_count(b), 1);
	assert_true(bufs_equal(ly_bundle_x509_authority(b, 0), &root_der));
	assert_int_equal(ly_ca_sign_x509_svid(f->ca, csr.data, csr.len, &id, NULL, 0, 0, T0, &chain, &exp, &err), LY_OK);
	assert_int_equal(chain_split(&chain, spans), 3);
	if (verify(b, &chain, T0, f->key, &err) != LY_OK)
		fail_msg("upstream chain with intermediate: %s", err.msg);
	ly_buf_free(&chain);
	ly_ca_free(f->ca);
	f->ca = NULL;

	/* Refused: a key that is not the certificate's; a chain without its root; expired. */
	write_key(key_path, pki.root_key);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "does not match"));
	write_pem_certs(chain_path, both, 1);
	write_key(key_path, pki.int_key);
	assert_int_equal(ly_ca_open(&c, T0, &f->ca, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "self-signed root"));
	c.upstream_cert_path = cert_path;
	write_pem_certs(cert_path, &pki.root, 1);
	write_key(key_path, pki.root_key);
	ly_status rc = ly_ca_open(&c, T0 + 2 * DAY, &f->ca, &err);
	if (rc != LY_E_EXPIRED)
		fail_msg("expired upstream: %s: %s", ly_status_str(rc), err.msg);
	assert_null(f->ca);

	ly_buf_free(&csr);
	ly_buf_free(&root_der);
	tu_pki_free(&pki);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_persists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unpublished_successor_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuses_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_issue_leaf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_issue_key_types, setup, teardown),
		cmocka_unit_test_setup_teardown(test_csr_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent_and_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leaf_capped_by_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x509_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_after_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upstream, setup, teardown),
	};
	ly_log_set_level(LY_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
