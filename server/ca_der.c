/*
 * ca_der.c: the CA's DER reader and writer, and certificates written
 * directly as DER (ca_internal.h). Writing the few fields an SVID has is
 * cheaper and more predictable than filling an X509 object and letting
 * OpenSSL 3.0 re-encode it (NOTES-openssl.md: 308 us the obvious way);
 * the result is checked by OpenSSL's own parser and path validation in
 * the tests (tests/unit/test_ca_issue.c) and by `openssl verify`
 * (tests/integration/ca_openssl_verify.sh).
 */
#include "server/ca_internal.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* ---- reader ---- */

bool
ca_dr_next(struct ca_dr *in, uint8_t *tag, struct ca_dr *val, struct ca_span *whole)
{
	const uint8_t *p = in->p;
	size_t n = in->n;

	if (n < 2 || (p[0] & 0x1f) == 0x1f)
		return false;
	size_t hdr = 2, len = p[1];
	if ((len & 0x80) != 0) {
		size_t k = len & 0x7f;
		/* 0x80 is the indefinite form (BER only); more than 3 octets is never needed here. */
		if (k == 0 || k > 3 || n < 2 + k || p[2] == 0)
			return false;
		len = 0;
		for (size_t i = 0; i < k; i++)
			len = (len << 8) | p[2 + i];
		if (len < 128) /* the short form was required */
			return false;
		hdr = 2 + k;
	}
	if (len > n - hdr)
		return false;
	*tag = p[0];
	val->p = p + hdr;
	val->n = len;
	if (whole != NULL) {
		whole->p = p;
		whole->n = hdr + len;
	}
	in->p = p + hdr + len;
	in->n = n - hdr - len;
	return true;
}

bool
ca_dr_expect(struct ca_dr *in, uint8_t tag, struct ca_dr *val, struct ca_span *whole)
{
	struct ca_dr save = *in;
	uint8_t t = 0;

	if (!ca_dr_next(in, &t, val, whole) || t != tag) {
		*in = save;
		return false;
	}
	return true;
}

bool
ca_dr_equal(const struct ca_dr *v, const uint8_t *p, size_t len)
{
	return v->n == len && memcmp(v->p, p, len) == 0;
}

/* ---- writer ---- */

void
ca_dw_init(struct ca_dw *w, uint8_t *buf, size_t cap)
{
	w->p = buf;
	w->len = 0;
	w->cap = cap;
	w->overflow = false;
}

void
ca_dw_raw(struct ca_dw *w, const void *p, size_t n)
{
	if (w->overflow)
		return;
	if (n > w->cap - w->len) {
		w->overflow = true;
		return;
	}
	if (n > 0)
		memcpy(w->p + w->len, p, n);
	w->len += n;
}

static void
dw_header(struct ca_dw *w, uint8_t tag, size_t n)
{
	uint8_t h[5];
	size_t hl;

	h[0] = tag;
	if (n < 0x80) {
		h[1] = (uint8_t)n;
		hl = 2;
	} else if (n <= 0xff) {
		h[1] = 0x81;
		h[2] = (uint8_t)n;
		hl = 3;
	} else if (n <= 0xffff) {
		h[1] = 0x82;
		h[2] = (uint8_t)(n >> 8);
		h[3] = (uint8_t)n;
		hl = 4;
	} else if (n <= 0xffffff) {
		h[1] = 0x83;
		h[2] = (uint8_t)(n >> 16);
		h[3] = (uint8_t)(n >> 8);
		h[4] = (uint8_t)n;
		hl = 5;
	} else {
		w->overflow = true;
		return;
	}
	ca_dw_raw(w, h, hl);
}

void
ca_dw_tlv(struct ca_dw *w, uint8_t tag, const void *p, size_t n)
{
	dw_header(w, tag, n);
	ca_dw_raw(w, p, n);
}

size_t
ca_dw_open(struct ca_dw *w, uint8_t tag)
{
	/* Room for the longest header this writer closes (0x82 LL LL); ca_dw_close shrinks it. */
	const uint8_t h[4] = { tag, 0x82, 0, 0 };
	size_t mark = w->len;

	ca_dw_raw(w, h, sizeof(h));
	return mark;
}

void
ca_dw_close(struct ca_dw *w, size_t mark)
{
	if (w->overflow)
		return;
	uint8_t *p = w->p + mark;
	size_t clen = w->len - mark - 4;
	if (clen < 0x80) {
		p[1] = (uint8_t)clen;
		memmove(p + 2, p + 4, clen);
		w->len -= 2;
	} else if (clen <= 0xff) {
		p[1] = 0x81;
		p[2] = (uint8_t)clen;
		memmove(p + 3, p + 4, clen);
		w->len -= 1;
	} else if (clen <= 0xffff) {
		p[2] = (uint8_t)(clen >> 8);
		p[3] = (uint8_t)clen;
	} else {
		w->overflow = true;
	}
}

void
ca_dw_uint(struct ca_dw *w, const uint8_t *be, size_t n)
{
	while (n > 1 && be[0] == 0) {
		be++;
		n--;
	}
	if (n == 0) {
		const uint8_t zero = 0;
		ca_dw_tlv(w, 0x02, &zero, 1);
		return;
	}
	bool pad = (be[0] & 0x80) != 0;
	dw_header(w, 0x02, n + (pad ? 1 : 0));
	if (pad) {
		const uint8_t zero = 0;
		ca_dw_raw(w, &zero, 1);
	}
	ca_dw_raw(w, be, n);
}

static void
put_digits(char *s, int v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		s[i] = (char)('0' + v % 10);
		v /= 10;
	}
}

void
ca_dw_time(struct ca_dw *w, time_t t)
{
	struct tm tm;
	char s[16];
	size_t n = 0;

	if (gmtime_r(&t, &tm) == NULL) {
		w->overflow = true;
		return;
	}
	int year = tm.tm_year + 1900;
	if (year < 0 || year > 9999) {
		w->overflow = true;
		return;
	}
	bool utc = year >= 1950 && year < 2050;
	if (utc) {
		put_digits(s, year % 100, 2);
		n = 2;
	} else {
		put_digits(s, year, 4);
		n = 4;
	}
	put_digits(s + n, tm.tm_mon + 1, 2);
	put_digits(s + n + 2, tm.tm_mday, 2);
	put_digits(s + n + 4, tm.tm_hour, 2);
	put_digits(s + n + 6, tm.tm_min, 2);
	put_digits(s + n + 8, tm.tm_sec > 59 ? 59 : tm.tm_sec, 2);
	s[n + 10] = 'Z';
	ca_dw_tlv(w, utc ? 0x17 : 0x18, s, n + 11);
}

/* ---- algorithms ---- */

static const uint8_t ALG_ECDSA_SHA256[] = { 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02 };
static const uint8_t ALG_ECDSA_SHA384[] = { 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03 };
static const uint8_t ALG_ECDSA_SHA512[] = { 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04 };
static const uint8_t ALG_RSA_SHA256[] = { 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
	0x0b, 0x05, 0x00 };

static const char *const tmpl_curves[3] = { "P-256", "P-384", "P-521" };

ly_status
ca_crypto_init(struct ca_crypto *c, struct ly_error *err)
{
	EVP_PKEY_CTX *pctx = NULL;
	ly_status rc = LY_OK;

	memset(c, 0, sizeof(*c));
	c->sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
	c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	c->sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
	c->sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
	if (c->sha1 == NULL || c->sha256 == NULL || c->sha384 == NULL || c->sha512 == NULL) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CA: fetching the digests");
		goto out;
	}
	/*
	 * Templates holding only the curve: a CSR's key is this, duplicated,
	 * with its point set (EVP_PKEY_set1_encoded_public_key checks it is on
	 * the curve). Building the group each time costs ~17 us.
	 */
	for (size_t i = 0; i < 3; i++) {
		OSSL_PARAM params[2];
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)(uintptr_t)tmpl_curves[i],
		    0);
		params[1] = OSSL_PARAM_construct_end();
		pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
		if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
		    EVP_PKEY_fromdata(pctx, &c->ec_tmpl[i], EVP_PKEY_KEY_PARAMETERS, params) <= 0) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "CA: making the %s key template", tmpl_curves[i]);
			goto out;
		}
		EVP_PKEY_CTX_free(pctx);
		pctx = NULL;
	}
out:
	EVP_PKEY_CTX_free(pctx);
	if (rc != LY_OK)
		ca_crypto_cleanup(c);
	return rc;
}

void
ca_crypto_cleanup(struct ca_crypto *c)
{
	EVP_MD_free(c->sha1);
	EVP_MD_free(c->sha256);
	EVP_MD_free(c->sha384);
	EVP_MD_free(c->sha512);
	for (size_t i = 0; i < 3; i++)
		EVP_PKEY_free(c->ec_tmpl[i]);
	memset(c, 0, sizeof(*c));
}

ly_status
ca_sig_alg(const struct ca_crypto *c, const EVP_PKEY *key, const EVP_MD **md, uint8_t *alg, size_t *alg_len,
    struct ly_error *err)
{
	const uint8_t *a;
	size_t n;

	if (EVP_PKEY_is_a(key, "EC")) {
		int bits = EVP_PKEY_get_bits(key);
		if (bits == 256) {
			*md = c->sha256;
			a = ALG_ECDSA_SHA256;
			n = sizeof(ALG_ECDSA_SHA256);
		} else if (bits == 384) {
			*md = c->sha384;
			a = ALG_ECDSA_SHA384;
			n = sizeof(ALG_ECDSA_SHA384);
		} else if (bits == 521) {
			*md = c->sha512;
			a = ALG_ECDSA_SHA512;
			n = sizeof(ALG_ECDSA_SHA512);
		} else {
			return ly_error_set(err, LY_E_UNSUPPORTED, "CA key: EC curve of %d bits not supported", bits);
		}
	} else if (EVP_PKEY_is_a(key, "RSA")) {
		*md = c->sha256;
		a = ALG_RSA_SHA256;
		n = sizeof(ALG_RSA_SHA256);
	} else {
		return ly_error_set(err, LY_E_UNSUPPORTED, "CA key: only EC and RSA keys sign certificates");
	}
	memcpy(alg, a, n);
	*alg_len = n;
	return LY_OK;
}

ly_status
ca_sign_ctx_new(EVP_PKEY *key, const EVP_MD *md, EVP_PKEY_CTX **out, struct ly_error *err)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);

	*out = NULL;
	if (ctx == NULL || EVP_PKEY_sign_init(ctx) <= 0 || EVP_PKEY_CTX_set_signature_md(ctx, md) <= 0 ||
	    (EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0)) {
		EVP_PKEY_CTX_free(ctx);
		return ly_error_openssl(err, LY_E_CRYPTO, "CA: preparing a signing context");
	}
	*out = ctx;
	return LY_OK;
}

/* ---- certificates ---- */

ly_status
ca_cert_write(const struct ca_cert_spec *s, EVP_PKEY_CTX *sctx, EVP_MD_CTX *mdctx, const EVP_MD *md,
    struct ca_dw *w, struct ly_error *err)
{
	static const uint8_t version3[] = { 0xa0, 0x03, 0x02, 0x01, 0x02 };
	/* Big enough for RSA-8192 and ECDSA P-521 (~139 bytes). */
	uint8_t sig[1100];
	uint8_t digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	size_t siglen = sizeof(sig);

	size_t cert = ca_dw_open(w, 0x30);
	size_t tbs = ca_dw_open(w, 0x30);
	ca_dw_raw(w, version3, sizeof(version3));
	ca_dw_uint(w, s->serial, 16);
	ca_dw_raw(w, s->alg.p, s->alg.n);
	ca_dw_raw(w, s->issuer.p, s->issuer.n);
	size_t validity = ca_dw_open(w, 0x30);
	ca_dw_time(w, s->not_before);
	ca_dw_time(w, s->not_after);
	ca_dw_close(w, validity);
	ca_dw_raw(w, s->subject.p, s->subject.n);
	ca_dw_raw(w, s->spki.p, s->spki.n);
	if (s->nexts > 0) {
		size_t x3 = ca_dw_open(w, 0xa3);
		size_t exts = ca_dw_open(w, 0x30);
		for (size_t i = 0; i < s->nexts && i < CA_MAX_EXTS; i++)
			ca_dw_raw(w, s->exts[i].p, s->exts[i].n);
		ca_dw_close(w, exts);
		ca_dw_close(w, x3);
	}
	ca_dw_close(w, tbs);
	if (w->overflow)
		return ly_error_set(err, LY_E_LIMIT, "certificate larger than %zu bytes", w->cap);

	if (EVP_DigestInit_ex(mdctx, md, NULL) != 1 || EVP_DigestUpdate(mdctx, w->p + tbs, w->len - tbs) != 1 ||
	    EVP_DigestFinal_ex(mdctx, digest, &dlen) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "certificate: hashing");
	if (EVP_PKEY_sign(sctx, sig, &siglen, digest, dlen) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "certificate: signing");

	ca_dw_raw(w, s->alg.p, s->alg.n);
	size_t bits = ca_dw_open(w, 0x03);
	const uint8_t unused = 0;
	ca_dw_raw(w, &unused, 1);
	ca_dw_raw(w, sig, siglen);
	ca_dw_close(w, bits);
	ca_dw_close(w, cert);
	if (w->overflow)
		return ly_error_set(err, LY_E_LIMIT, "certificate larger than %zu bytes", w->cap);
	return LY_OK;
}

bool
ca_spki_key_bits(struct ca_span spki, struct ca_span *bits)
{
	struct ca_dr in = { spki.p, spki.n }, seq, alg, bs;

	if (!ca_dr_expect(&in, 0x30, &seq, NULL) || in.n != 0 || !ca_dr_expect(&seq, 0x30, &alg, NULL) ||
	    !ca_dr_expect(&seq, 0x03, &bs, NULL) || seq.n != 0 || bs.n < 2 || bs.p[0] != 0)
		return false;
	bits->p = bs.p + 1;
	bits->n = bs.n - 1;
	return true;
}

ly_status
ca_key_id(const struct ca_crypto *c, EVP_MD_CTX *mdctx, struct ca_span spki, uint8_t out[20], struct ly_error *err)
{
	struct ca_span bits;
	unsigned int n = 0;

	if (!ca_spki_key_bits(spki, &bits))
		return ly_error_set(err, LY_E_INVALID, "key identifier: malformed SubjectPublicKeyInfo");
	if (EVP_DigestInit_ex(mdctx, c->sha1, NULL) != 1 || EVP_DigestUpdate(mdctx, bits.p, bits.n) != 1 ||
	    EVP_DigestFinal_ex(mdctx, out, &n) != 1 || n != 20)
		return ly_error_openssl(err, LY_E_CRYPTO, "key identifier: hashing");
	return LY_OK;
}

static const uint8_t OID_BC[] = { 0x55, 0x1d, 0x13 };
static const uint8_t OID_KU[] = { 0x55, 0x1d, 0x0f };
static const uint8_t OID_EKU[] = { 0x55, 0x1d, 0x25 };
static const uint8_t OID_SKID[] = { 0x55, 0x1d, 0x0e };
static const uint8_t OID_AKID[] = { 0x55, 0x1d, 0x23 };
static const uint8_t OID_SAN[] = { 0x55, 0x1d, 0x11 };

/* Opens Extension { extnID, critical?, extnValue OCTET STRING { ... } }; returns two marks. */
static void
ext_open(struct ca_dw *w, const uint8_t *oid, size_t oid_len, bool critical, size_t marks[2])
{
	static const uint8_t crit[] = { 0x01, 0x01, 0xff };

	marks[0] = ca_dw_open(w, 0x30);
	ca_dw_tlv(w, 0x06, oid, oid_len);
	if (critical)
		ca_dw_raw(w, crit, sizeof(crit));
	marks[1] = ca_dw_open(w, 0x04);
}

static void
ext_close(struct ca_dw *w, const size_t marks[2])
{
	ca_dw_close(w, marks[1]);
	ca_dw_close(w, marks[0]);
}

void
ca_ext_basic_constraints(struct ca_dw *w, bool ca, int pathlen)
{
	static const uint8_t ca_true[] = { 0x01, 0x01, 0xff };
	size_t m[2];

	ext_open(w, OID_BC, sizeof(OID_BC), true, m);
	size_t seq = ca_dw_open(w, 0x30);
	if (ca) {
		ca_dw_raw(w, ca_true, sizeof(ca_true));
		if (pathlen >= 0 && pathlen < 128) {
			const uint8_t v = (uint8_t)pathlen;
			ca_dw_tlv(w, 0x02, &v, 1);
		}
	}
	ca_dw_close(w, seq);
	ext_close(w, m);
}

void
ca_ext_key_usage(struct ca_dw *w, bool ca, bool key_encipherment)
{
	/*
	 * Named bits, trailing zero bits dropped (X.690 §11.2.2): bit 0
	 * digitalSignature, 2 keyEncipherment, 5 keyCertSign, 6 cRLSign.
	 */
	static const uint8_t ku_ca[] = { 0x03, 0x02, 0x01, 0x06 };
	static const uint8_t ku_ds[] = { 0x03, 0x02, 0x07, 0x80 };
	static const uint8_t ku_ds_ke[] = { 0x03, 0x02, 0x05, 0xa0 };
	size_t m[2];

	ext_open(w, OID_KU, sizeof(OID_KU), true, m);
	if (ca)
		ca_dw_raw(w, ku_ca, sizeof(ku_ca));
	else if (key_encipherment)
		ca_dw_raw(w, ku_ds_ke, sizeof(ku_ds_ke));
	else
		ca_dw_raw(w, ku_ds, sizeof(ku_ds));
	ext_close(w, m);
}

void
ca_ext_eku_server_client(struct ca_dw *w)
{
	static const uint8_t eku[] = { 0x30, 0x14, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01, 0x06,
		0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02 };
	size_t m[2];

	ext_open(w, OID_EKU, sizeof(OID_EKU), false, m);
	ca_dw_raw(w, eku, sizeof(eku));
	ext_close(w, m);
}

void
ca_ext_skid(struct ca_dw *w, const uint8_t *id, size_t len)
{
	size_t m[2];

	ext_open(w, OID_SKID, sizeof(OID_SKID), false, m);
	ca_dw_tlv(w, 0x04, id, len);
	ext_close(w, m);
}

void
ca_ext_akid(struct ca_dw *w, const uint8_t *id, size_t len)
{
	size_t m[2];

	ext_open(w, OID_AKID, sizeof(OID_AKID), false, m);
	size_t seq = ca_dw_open(w, 0x30);
	ca_dw_tlv(w, 0x80, id, len); /* [0] IMPLICIT KeyIdentifier */
	ca_dw_close(w, seq);
	ext_close(w, m);
}

void
ca_ext_san(struct ca_dw *w, bool critical, const char *uri, size_t uri_len, const char *const *dns, size_t ndns)
{
	size_t m[2];

	ext_open(w, OID_SAN, sizeof(OID_SAN), critical, m);
	size_t seq = ca_dw_open(w, 0x30);
	ca_dw_tlv(w, 0x86, uri, uri_len); /* [6] uniformResourceIdentifier */
	for (size_t i = 0; i < ndns; i++)
		ca_dw_tlv(w, 0x82, dns[i], strlen(dns[i])); /* [2] dNSName */
	ca_dw_close(w, seq);
	ext_close(w, m);
}

static void
name_attr(struct ca_dw *w, uint8_t oid_last, uint8_t str_tag, const char *value, size_t len)
{
	const uint8_t oid[] = { 0x55, 0x04, oid_last };
	size_t set = ca_dw_open(w, 0x31);
	size_t atv = ca_dw_open(w, 0x30);
	ca_dw_tlv(w, 0x06, oid, sizeof(oid));
	ca_dw_tlv(w, str_tag, value, len);
	ca_dw_close(w, atv);
	ca_dw_close(w, set);
}

void
ca_name_lanyard(struct ca_dw *w, const char *cn, const char *serial)
{
	size_t name = ca_dw_open(w, 0x30);
	name_attr(w, 0x0a, 0x0c, "Lanyard", 7);              /* O, UTF8String */
	name_attr(w, 0x03, 0x0c, cn, strlen(cn));            /* CN */
	name_attr(w, 0x05, 0x13, serial, strlen(serial));    /* serialNumber, PrintableString */
	ca_dw_close(w, name);
}

void
ca_name_cn(struct ca_dw *w, const char *cn, size_t len)
{
	size_t name = ca_dw_open(w, 0x30);
	name_attr(w, 0x03, 0x0c, cn, len);
	ca_dw_close(w, name);
}

ly_status
ca_spki_of(const EVP_PKEY *key, struct ly_buf *out, struct ly_error *err)
{
	uint8_t *der = NULL;
	int n = i2d_PUBKEY(key, &der);

	if (n <= 0)
		return ly_error_openssl(err, LY_E_CRYPTO, "encoding a public key");
	ly_status rc = ly_buf_set(out, der, (size_t)n, err);
	OPENSSL_free(der);
	return rc;
}
