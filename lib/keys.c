/* keys.c: key types, generation, PKCS#8 and PEM, see keys.h. */
#include "keys.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "caps.h"
#include "der.h"

#define KEY_TYPES 3

static const char *const key_type_names[KEY_TYPES] = { "ec-p256", "ec-p384", "rsa-2048" };

ly_status
ly_key_type_parse(const char *name, enum ly_key_type *out, struct ly_error *err)
{
	if (name != NULL) {
		for (size_t i = 0; i < KEY_TYPES; i++) {
			if (strcmp(name, key_type_names[i]) == 0) {
				*out = (enum ly_key_type)i;
				return LY_OK;
			}
		}
	}
	return ly_error_set(err, LY_E_INVALID, "key type \"%.32s\": expected ec-p256, ec-p384 or rsa-2048",
	    name != NULL ? name : "");
}

const char *
ly_key_type_name(enum ly_key_type type)
{
	if ((unsigned)type < KEY_TYPES)
		return key_type_names[type];
	return "unknown";
}

/* The EC curve of `key` as a NID, or NID_undef (not EC, or no named curve). */
static int
ec_curve_nid(const EVP_PKEY *key)
{
	char group[64];
	size_t glen = 0;

	if (!EVP_PKEY_get_group_name(key, group, sizeof(group), &glen))
		return NID_undef;
	int nid = OBJ_sn2nid(group);
	if (nid == NID_undef)
		nid = EC_curve_nist2nid(group);
	return nid;
}

/* True when an EC key names its curve (not explicit parameters). */
static bool
ec_named_curve(const EVP_PKEY *key)
{
	char enc[32];
	size_t elen = 0;

	if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, enc, sizeof(enc), &elen)) {
		/* Providers that do not report the encoding use named curves. */
		ERR_clear_error();
		return true;
	}
	return strcmp(enc, OSSL_PKEY_EC_ENCODING_GROUP) == 0;
}

ly_status
ly_key_check_acceptable(const EVP_PKEY *key, struct ly_error *err)
{
	if (key == NULL)
		return ly_error_set(err, LY_E_INVALID, "no key");
	if (EVP_PKEY_is_a(key, "RSA")) {
		int bits = EVP_PKEY_get_bits(key);
		if (bits < 2048)
			return ly_error_set(err, LY_E_UNSUPPORTED, "RSA key of %d bits: at least 2048 required", bits);
		if (bits > LY_RSA_BITS_MAX)
			return ly_error_set(err, LY_E_UNSUPPORTED, "RSA key of %d bits: at most %d accepted", bits,
			    LY_RSA_BITS_MAX);
		return LY_OK;
	}
	if (EVP_PKEY_is_a(key, "EC")) {
		int nid = ec_curve_nid(key);
		if (nid == NID_undef || !ec_named_curve(key)) {
			ERR_clear_error();
			return ly_error_set(err, LY_E_UNSUPPORTED, "EC key with explicit curve parameters: a named "
			    "curve (P-256, P-384, P-521) is required");
		}
		if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1 && nid != NID_secp521r1)
			return ly_error_set(err, LY_E_UNSUPPORTED, "EC key on curve %s: only P-256, P-384 and P-521 "
			    "are accepted", OBJ_nid2sn(nid));
		return LY_OK;
	}
	const char *name = EVP_PKEY_get0_type_name(key);
	return ly_error_set(err, LY_E_UNSUPPORTED, "%s key: only EC (P-256, P-384, P-521) and RSA keys are "
	    "accepted", name != NULL ? name : "unknown");
}

ly_status
ly_key_type_of(const EVP_PKEY *key, enum ly_key_type *out, struct ly_error *err)
{
	if (key != NULL && EVP_PKEY_is_a(key, "EC") && ec_named_curve(key)) {
		int nid = ec_curve_nid(key);
		if (nid == NID_X9_62_prime256v1) {
			*out = LY_KEY_EC_P256;
			return LY_OK;
		}
		if (nid == NID_secp384r1) {
			*out = LY_KEY_EC_P384;
			return LY_OK;
		}
	} else if (key != NULL && EVP_PKEY_is_a(key, "RSA") && EVP_PKEY_get_bits(key) == 2048) {
		*out = LY_KEY_RSA_2048;
		return LY_OK;
	}
	ERR_clear_error();
	return ly_error_set(err, LY_E_UNSUPPORTED, "key is not one of ec-p256, ec-p384, rsa-2048");
}

/*
 * Generation contexts, one per key type per thread: a context costs more
 * to set up than a P-256 key costs to generate. They live in thread-local
 * storage (so LeakSanitizer and valgrind see them reachable) and a
 * pthread key's destructor frees them when the thread exits.
 */
static _Thread_local EVP_PKEY_CTX *keygen_ctx[KEY_TYPES];
static pthread_once_t keygen_once = PTHREAD_ONCE_INIT;
static pthread_key_t keygen_key;
static bool keygen_key_ok;

static void
keygen_thread_exit(void *unused)
{
	for (size_t i = 0; i < KEY_TYPES; i++) {
		EVP_PKEY_CTX_free(keygen_ctx[i]);
		keygen_ctx[i] = NULL;
	}
}

static void
keygen_key_init(void)
{
	keygen_key_ok = pthread_key_create(&keygen_key, keygen_thread_exit) == 0;
}

static ly_status
keygen_ctx_new(enum ly_key_type type, EVP_PKEY_CTX **out, struct ly_error *err)
{
	EVP_PKEY_CTX *ctx = NULL;
	ly_status rc;

	ctx = EVP_PKEY_CTX_new_from_name(NULL, type == LY_KEY_RSA_2048 ? "RSA" : "EC", NULL);
	if (ctx == NULL)
		return ly_error_openssl(err, LY_E_CRYPTO, "%s: creating a key generation context",
		    ly_key_type_name(type));
	if (EVP_PKEY_keygen_init(ctx) <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "%s: initialising key generation", ly_key_type_name(type));
		goto out;
	}
	int ok;
	switch (type) {
	case LY_KEY_EC_P256: ok = EVP_PKEY_CTX_set_group_name(ctx, "P-256"); break;
	case LY_KEY_EC_P384: ok = EVP_PKEY_CTX_set_group_name(ctx, "P-384"); break;
	case LY_KEY_RSA_2048: ok = EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048); break;
	default: ok = 0; break;
	}
	if (ok <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "%s: setting key parameters", ly_key_type_name(type));
		goto out;
	}
	*out = ctx;
	ctx = NULL;
	rc = LY_OK;
out:
	EVP_PKEY_CTX_free(ctx);
	return rc;
}

ly_status
ly_key_generate(enum ly_key_type type, EVP_PKEY **out, struct ly_error *err)
{
	EVP_PKEY_CTX *fresh = NULL;
	EVP_PKEY *key = NULL;
	ly_status rc;

	*out = NULL;
	if ((unsigned)type >= KEY_TYPES)
		return ly_error_set(err, LY_E_INVALID, "key type %d: unknown", (int)type);
	EVP_PKEY_CTX *ctx = keygen_ctx[type];
	if (ctx == NULL) {
		LY_TRY(keygen_ctx_new(type, &fresh, err));
		ctx = fresh;
		/* Keep it only when the thread-exit destructor will free it. */
		if (pthread_once(&keygen_once, keygen_key_init) == 0 && keygen_key_ok &&
		    pthread_setspecific(keygen_key, &keygen_ctx[0]) == 0) {
			keygen_ctx[type] = fresh;
			fresh = NULL;
		}
	}
	if (EVP_PKEY_generate(ctx, &key) <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "%s: key generation failed", ly_key_type_name(type));
		goto out;
	}
	*out = key;
	rc = LY_OK;
out:
	EVP_PKEY_CTX_free(fresh);
	return rc;
}

/*
 * EC keys by hand. A P-256/384/521 PKCS#8 PrivateKeyInfo (RFC 5208) is
 *   SEQUENCE { INTEGER 0, SEQUENCE { id-ecPublicKey, namedCurve OID },
 *              OCTET STRING { ECPrivateKey } }
 * and the ECPrivateKey (RFC 5915 §3)
 *   SEQUENCE { INTEGER 1, OCTET STRING d, [0] OID OPTIONAL,
 *              [1] BIT STRING point OPTIONAL }
 * with d exactly the field size and the point uncompressed. Writing it is
 * ~10x cheaper than OpenSSL 3.0's encoder; reading it (and importing with
 * EVP_PKEY_fromdata) ~15x cheaper than its decoder.
 */
#define EC_FIELD_MAX 66                   /* P-521 */
#define EC_POINT_MAX (1 + 2 * EC_FIELD_MAX) /* 04 || x || y */

static const uint8_t OID_EC_PUBLIC_KEY[] = { 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01 };

struct ec_curve {
	int nid;
	const char *group;  /* OpenSSL group name */
	size_t field;       /* bytes of a coordinate and of d */
	uint8_t oid[10];    /* DER, tag and length included */
	size_t oid_len;
};

static const struct ec_curve ec_curves[] = {
	{ NID_X9_62_prime256v1, "prime256v1", 32, { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 }, 10 },
	{ NID_secp384r1, "secp384r1", 48, { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 }, 7 },
	{ NID_secp521r1, "secp521r1", 66, { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23 }, 7 },
};

static const struct ec_curve *
ec_curve_by_nid(int nid)
{
	for (size_t i = 0; i < sizeof(ec_curves) / sizeof(ec_curves[0]); i++) {
		if (ec_curves[i].nid == nid)
			return &ec_curves[i];
	}
	return NULL;
}

/* Bytes a DER length field takes (contents under 64 KiB). */
static size_t
der_len_size(size_t len)
{
	return len < 0x80 ? 1 : len < 0x100 ? 2 : 3;
}

static size_t
der_tlv_size(size_t len)
{
	return 1 + der_len_size(len) + len;
}

static uint8_t *
der_put_header(uint8_t *p, uint8_t tag, size_t len)
{
	*p++ = tag;
	if (len >= 0x100) {
		*p++ = 0x82;
		*p++ = (uint8_t)(len >> 8);
	} else if (len >= 0x80) {
		*p++ = 0x81;
	}
	*p++ = (uint8_t)len;
	return p;
}

/*
 * Reads one DER element with tag `tag` at *p (before `end`): its contents
 * go to *val and *len, and *p moves past it. Definite lengths up to 2 bytes, in
 * minimal form. False when the next element is not that, or malformed.
 */
static bool
der_get(const uint8_t **p, const uint8_t *end, uint8_t tag, const uint8_t **val, size_t *len)
{
	const uint8_t *q = *p;
	if (end - q < 2 || q[0] != tag)
		return false;
	size_t l = q[1];
	q += 2;
	if (l == 0x81) {
		if (end - q < 1 || q[0] < 0x80)
			return false;
		l = q[0];
		q += 1;
	} else if (l == 0x82) {
		if (end - q < 2 || q[0] == 0 || ((size_t)q[0] << 8 | q[1]) < 0x100)
			return false;
		l = (size_t)q[0] << 8 | q[1];
		q += 2;
	} else if (l >= 0x80) {
		return false;
	}
	if ((size_t)(end - q) < l)
		return false;
	*val = q;
	*len = l;
	*p = q + l;
	return true;
}

/* The EC key's curve and uncompressed point, or NULL when it has neither. */
static const struct ec_curve *
ec_public(const EVP_PKEY *key, uint8_t point[EC_POINT_MAX], size_t *point_len)
{
	if (!EVP_PKEY_is_a(key, "EC") || !ec_named_curve(key))
		return NULL;
	const struct ec_curve *c = ec_curve_by_nid(ec_curve_nid(key));
	if (c == NULL)
		return NULL;
	if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, EC_POINT_MAX, point_len) ||
	    *point_len != 1 + 2 * c->field || point[0] != 0x04) {
		ERR_clear_error();
		return NULL;
	}
	return c;
}

ly_status
ly_key_set_x509_pubkey(X509_PUBKEY *pub, const EVP_PKEY *key, struct ly_error *err)
{
	uint8_t point[EC_POINT_MAX];
	size_t point_len = 0;

	if (pub == NULL || key == NULL)
		return ly_error_set(err, LY_E_INVALID, "no key");
	const struct ec_curve *c = ec_public(key, point, &point_len);
	if (c == NULL)
		return ly_error_set(err, LY_E_UNSUPPORTED, "not an EC key on P-256, P-384 or P-521");
	uint8_t *penc = OPENSSL_malloc(point_len);
	if (penc == NULL)
		return ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", point_len);
	memcpy(penc, point, point_len);
	/* set0: on success `pub` owns penc; the OIDs are OpenSSL's static objects. */
	if (!X509_PUBKEY_set0_param(pub, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
	        OBJ_nid2obj(c->nid), penc, (int)point_len)) {
		OPENSSL_free(penc);
		return ly_error_openssl(err, LY_E_CRYPTO, "setting the public key");
	}
	return LY_OK;
}

/* PKCS#8 of an EC key on one of our curves; LY_E_UNSUPPORTED for anything else. */
static ly_status
ec_to_pkcs8(const EVP_PKEY *key, struct ly_buf *out, struct ly_error *err)
{
	uint8_t point[EC_POINT_MAX];
	size_t point_len = 0;
	BIGNUM *d = NULL;
	ly_status rc;

	const struct ec_curve *c = ec_public(key, point, &point_len);
	if (c == NULL)
		return LY_E_UNSUPPORTED;
	if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &d))
		return ly_error_openssl(err, LY_E_INVALID, "EC key has no private part");

	size_t bits = 1 + point_len;                 /* unused-bits byte, point */
	size_t tagged = der_tlv_size(bits);          /* [1] { BIT STRING } */
	size_t sec1 = 3 + der_tlv_size(c->field) + der_tlv_size(tagged);
	size_t sec1_tlv = der_tlv_size(sec1);        /* the OCTET STRING's contents */
	size_t algid = sizeof(OID_EC_PUBLIC_KEY) + c->oid_len;
	size_t top = 3 + der_tlv_size(algid) + der_tlv_size(sec1_tlv);
	size_t total = der_tlv_size(top);
	uint8_t *buf = malloc(total);
	if (buf == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "allocating %zu bytes", total);
		goto out;
	}
	uint8_t *p = der_put_header(buf, 0x30, top);
	memcpy(p, "\x02\x01\x00", 3); /* version 0 */
	p += 3;
	p = der_put_header(p, 0x30, algid);
	memcpy(p, OID_EC_PUBLIC_KEY, sizeof(OID_EC_PUBLIC_KEY));
	p += sizeof(OID_EC_PUBLIC_KEY);
	memcpy(p, c->oid, c->oid_len);
	p += c->oid_len;
	p = der_put_header(p, 0x04, sec1_tlv);
	p = der_put_header(p, 0x30, sec1);
	memcpy(p, "\x02\x01\x01", 3); /* ecPrivkeyVer1 */
	p += 3;
	p = der_put_header(p, 0x04, c->field);
	if (BN_bn2binpad(d, p, (int)c->field) != (int)c->field) {
		OPENSSL_cleanse(buf, total);
		free(buf);
		rc = ly_error_set(err, LY_E_INVALID, "EC private key out of range");
		goto out;
	}
	p += c->field;
	p = der_put_header(p, 0xa1, der_tlv_size(bits));
	p = der_put_header(p, 0x03, bits);
	*p++ = 0x00;
	memcpy(p, point, point_len);
	p += point_len;
	if ((size_t)(p - buf) != total) {
		OPENSSL_cleanse(buf, total);
		free(buf);
		rc = ly_error_set(err, LY_E_INTERNAL, "PKCS#8 size mismatch");
		goto out;
	}
	ly_buf_adopt(out, buf, total);
	rc = LY_OK;
out:
	BN_clear_free(d);
	return rc;
}

/*
 * Imports an EC private key from the PKCS#8 `p8` (curve from its
 * AlgorithmIdentifier). The public point is always computed from d; one
 * in the encoding must be equal to it.
 */
static ly_status
ec_from_pkcs8(const PKCS8_PRIV_KEY_INFO *p8, EVP_PKEY **out, struct ly_error *err)
{
	const ASN1_OBJECT *alg_obj = NULL, *param_obj = NULL;
	const X509_ALGOR *alg = NULL;
	const unsigned char *pk = NULL;
	int pklen = 0, ptype = 0;
	const void *pval = NULL;
	BIGNUM *d = NULL;
	EC_GROUP *group = NULL;
	EC_POINT *point = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;
	uint8_t dle[EC_FIELD_MAX], pub[EC_POINT_MAX];
	ly_status rc;

	if (!PKCS8_pkey_get0(&alg_obj, &pk, &pklen, &alg, p8))
		return ly_error_openssl(err, LY_E_INVALID, "private key: malformed PKCS#8");
	X509_ALGOR_get0(&alg_obj, &ptype, &pval, alg);
	if (ptype != V_ASN1_OBJECT)
		return ly_error_set(err, LY_E_UNSUPPORTED, "EC key with explicit curve parameters: a named curve "
		    "(P-256, P-384, P-521) is required");
	param_obj = pval;
	const struct ec_curve *c = ec_curve_by_nid(OBJ_obj2nid(param_obj));
	if (c == NULL)
		return ly_error_set(err, LY_E_UNSUPPORTED, "EC key on curve %s: only P-256, P-384 and P-521 are "
		    "accepted", OBJ_nid2sn(OBJ_obj2nid(param_obj)));

	/* ECPrivateKey, RFC 5915 §3. */
	const uint8_t *p = pk, *end = pk + pklen, *seq, *v, *dv = NULL, *pubv = NULL;
	size_t seqlen, vlen, dlen = 0, publen = 0;
	if (!der_get(&p, end, 0x30, &seq, &seqlen) || p != end)
		goto malformed;
	p = seq;
	end = seq + seqlen;
	if (!der_get(&p, end, 0x02, &v, &vlen) || vlen != 1 || v[0] != 1)
		goto malformed;
	if (!der_get(&p, end, 0x04, &dv, &dlen) || dlen != c->field)
		goto malformed;
	if (p < end && *p == 0xa0) {
		const uint8_t *q;
		size_t qlen;
		if (!der_get(&p, end, 0xa0, &q, &qlen) || qlen != c->oid_len || memcmp(q, c->oid, qlen) != 0)
			goto malformed;
	}
	if (p < end && *p == 0xa1) {
		const uint8_t *q, *r;
		size_t qlen, rlen;
		if (!der_get(&p, end, 0xa1, &q, &qlen))
			goto malformed;
		const uint8_t *qend = q + qlen;
		if (!der_get(&q, qend, 0x03, &r, &rlen) || q != qend || rlen != 2 + 2 * c->field || r[0] != 0x00)
			goto malformed;
		pubv = r + 1;
		publen = rlen - 1;
	}
	if (p != end)
		goto malformed;

	/* 0 < d < n, and the public point d*G. */
	d = BN_secure_new();
	group = EC_GROUP_new_by_curve_name(c->nid);
	point = group != NULL ? EC_POINT_new(group) : NULL;
	if (d == NULL || point == NULL || BN_bin2bn(dv, (int)dlen, d) == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "private key: allocating");
		goto out;
	}
	if (BN_is_zero(d) || BN_cmp(d, EC_GROUP_get0_order(group)) >= 0) {
		rc = ly_error_set(err, LY_E_INVALID, "private key: EC scalar out of range");
		goto out;
	}
	size_t point_len = 1 + 2 * c->field;
	if (!EC_POINT_mul(group, point, d, NULL, NULL, NULL) ||
	    EC_POINT_point2oct(group, point, POINT_CONVERSION_UNCOMPRESSED, pub, sizeof(pub), NULL) != point_len) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "private key: computing the public key");
		goto out;
	}
	if (pubv != NULL && (publen != point_len || memcmp(pubv, pub, point_len) != 0)) {
		rc = ly_error_set(err, LY_E_INVALID, "private key: its public key does not match the private key");
		goto out;
	}

	/* OSSL_PARAM BNs are native-endian. */
	if (BN_bn2nativepad(d, dle, (int)c->field) != (int)c->field) {
		rc = ly_error_set(err, LY_E_INTERNAL, "private key: scalar encoding");
		goto out;
	}
	char group_name[16];
	memcpy(group_name, c->group, strlen(c->group) + 1);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group_name, 0),
		OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, dle, c->field),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, point_len),
		OSSL_PARAM_construct_end(),
	};
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEYPAIR, params) <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "private key: importing");
		goto out;
	}
	*out = key;
	key = NULL;
	rc = LY_OK;
	goto out;
malformed:
	rc = ly_error_set(err, LY_E_INVALID, "private key: malformed EC private key (RFC 5915)");
out:
	OPENSSL_cleanse(dle, sizeof(dle));
	EVP_PKEY_free(key);
	EVP_PKEY_CTX_free(ctx);
	EC_POINT_free(point);
	EC_GROUP_free(group);
	BN_clear_free(d);
	return rc;
}

ly_status
ly_key_to_pkcs8_der(const EVP_PKEY *key, struct ly_buf *out, struct ly_error *err)
{
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	uint8_t *der = NULL;
	int len = 0;
	ly_status rc;

	if (key == NULL)
		return ly_error_set(err, LY_E_INVALID, "no key");
	rc = ec_to_pkcs8(key, out, err);
	if (rc != LY_E_UNSUPPORTED)
		return rc;
	/* Other keys: OpenSSL's encoder. PKCS8_PRIV_KEY_INFO_free wipes the key octets it holds. */
	p8 = EVP_PKEY2PKCS8(key);
	if (p8 == NULL)
		return ly_error_openssl(err, LY_E_CRYPTO, "encoding the private key as PKCS#8");
	len = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL);
	if (len <= 0 || len > LY_KEY_DER_MAX) {
		rc = ly_error_openssl(err, len <= 0 ? LY_E_CRYPTO : LY_E_LIMIT, "PKCS#8 encoding of %d bytes", len);
		goto out;
	}
	der = malloc((size_t)len);
	if (der == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "allocating %d bytes", len);
		goto out;
	}
	unsigned char *p = der;
	if (i2d_PKCS8_PRIV_KEY_INFO(p8, &p) != len) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "PKCS#8 DER encoding");
		goto out;
	}
	ly_buf_adopt(out, der, (size_t)len);
	der = NULL;
	rc = LY_OK;
out:
	if (der != NULL) {
		OPENSSL_cleanse(der, (size_t)len);
		free(der);
	}
	PKCS8_PRIV_KEY_INFO_free(p8);
	return rc;
}

/* Hands `key` to *out after the policy check, or frees it. */
static ly_status
key_accept(EVP_PKEY *key, EVP_PKEY **out, struct ly_error *err)
{
	ly_status rc = ly_key_check_acceptable(key, err);
	if (rc != LY_OK) {
		EVP_PKEY_free(key);
		return rc;
	}
	*out = key;
	return LY_OK;
}

ly_status
ly_key_from_pkcs8_der(const uint8_t *der, size_t len, EVP_PKEY **out, struct ly_error *err)
{
	*out = NULL;
	if (der == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "private key: empty DER");
	if (len > LY_KEY_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "private key: %zu bytes of DER, over the cap of %d", len,
		    LY_KEY_DER_MAX);

	const unsigned char *p = der;
	PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
	if (p8 == NULL)
		return ly_error_openssl(err, LY_E_INVALID, "private key: not PKCS#8 DER");
	if ((size_t)(p - der) != len) {
		PKCS8_PRIV_KEY_INFO_free(p8);
		return ly_error_set(err, LY_E_INVALID, "private key: %zu trailing bytes after the PKCS#8 structure",
		    len - (size_t)(p - der));
	}
	const ASN1_OBJECT *alg = NULL;
	EVP_PKEY *key = NULL;
	if (PKCS8_pkey_get0(&alg, NULL, NULL, NULL, p8) && OBJ_obj2nid(alg) == NID_X9_62_id_ecPublicKey) {
		ly_status rc = ec_from_pkcs8(p8, &key, err);
		PKCS8_PRIV_KEY_INFO_free(p8);
		if (rc != LY_OK)
			return rc;
		return key_accept(key, out, err);
	}
	key = EVP_PKCS82PKEY(p8);
	PKCS8_PRIV_KEY_INFO_free(p8);
	if (key == NULL)
		return ly_error_openssl(err, LY_E_INVALID, "private key: PKCS#8 does not hold a usable key");
	return key_accept(key, out, err);
}

/* Decodes a traditional (SEC 1 or PKCS#1) key of `type`, all `len` bytes. */
static ly_status
key_from_traditional(int type, const uint8_t *der, size_t len, EVP_PKEY **out, struct ly_error *err)
{
	if (len > LY_KEY_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "private key: %zu bytes of DER, over the cap of %d", len,
		    LY_KEY_DER_MAX);
	const unsigned char *p = der;
	EVP_PKEY *key = d2i_PrivateKey(type, NULL, &p, (long)len);
	if (key == NULL)
		return ly_error_openssl(err, LY_E_INVALID, "private key: malformed");
	if ((size_t)(p - der) != len) {
		EVP_PKEY_free(key);
		return ly_error_set(err, LY_E_INVALID, "private key: %zu trailing bytes", len - (size_t)(p - der));
	}
	return key_accept(key, out, err);
}

static bool
pem_at_end(void)
{
	unsigned long e = ERR_peek_last_error();
	return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

/* Frees what PEM_read_bio_ex(PEM_FLAG_SECURE) returned, wiping the data. */
static void
pem_secure_free(char **name, char **header, unsigned char **data, long dlen)
{
	OPENSSL_secure_free(*name);
	OPENSSL_secure_free(*header);
	if (*data != NULL)
		OPENSSL_secure_clear_free(*data, (size_t)dlen);
	*name = NULL;
	*header = NULL;
	*data = NULL;
}

ly_status
ly_key_from_pem(const char *pem, size_t len, EVP_PKEY **out, struct ly_error *err)
{
	BIO *bio = NULL;
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long dlen = 0;
	EVP_PKEY *key = NULL;
	size_t block = 0;
	ly_status rc;

	*out = NULL;
	if (pem == NULL || len == 0)
		return ly_error_set(err, LY_E_INVALID, "private key PEM: empty");
	if (len > LY_PEM_FILE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "private key PEM: %zu bytes, over the cap of %d", len,
		    LY_PEM_FILE_MAX);
	ERR_clear_error();
	bio = BIO_new_mem_buf(pem, (int)len);
	if (bio == NULL)
		return ly_error_openssl(err, LY_E_NOMEM, "private key PEM: allocating a BIO");
	for (;; block++) {
		/* Secure flag: OpenSSL decodes into buffers it wipes on growth. */
		if (!PEM_read_bio_ex(bio, &name, &header, &data, &dlen, PEM_FLAG_SECURE | PEM_FLAG_ONLY_B64)) {
			if (pem_at_end()) {
				ERR_clear_error();
				break;
			}
			rc = ly_error_openssl(err, LY_E_INVALID, "private key PEM block %zu: malformed (PEM headers "
			    "and encryption are not supported)", block);
			goto out;
		}
		if (strcmp(name, "EC PARAMETERS") == 0) {
			pem_secure_free(&name, &header, &data, dlen);
			continue;
		}
		int type;
		if (strcmp(name, PEM_STRING_PKCS8INF) == 0) {
			type = EVP_PKEY_NONE;
		} else if (strcmp(name, PEM_STRING_ECPRIVATEKEY) == 0) {
			type = EVP_PKEY_EC;
		} else if (strcmp(name, PEM_STRING_RSA) == 0) {
			type = EVP_PKEY_RSA;
		} else if (strcmp(name, PEM_STRING_PKCS8) == 0) {
			rc = ly_error_set(err, LY_E_UNSUPPORTED, "private key PEM block %zu: encrypted keys are not "
			    "supported", block);
			goto out;
		} else {
			rc = ly_error_set(err, LY_E_INVALID, "private key PEM block %zu: a \"%.64s\" block, not a "
			    "private key", block, name);
			goto out;
		}
		if (key != NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "private key PEM block %zu: a second private key", block);
			goto out;
		}
		if (type == EVP_PKEY_NONE)
			rc = ly_key_from_pkcs8_der(data, (size_t)dlen, &key, err);
		else
			rc = key_from_traditional(type, data, (size_t)dlen, &key, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "private key PEM block %zu", block);
			goto out;
		}
		pem_secure_free(&name, &header, &data, dlen);
	}
	if (key == NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "private key PEM: no private key block found");
		goto out;
	}
	*out = key;
	key = NULL;
	rc = LY_OK;
out:
	pem_secure_free(&name, &header, &data, dlen);
	EVP_PKEY_free(key);
	BIO_free(bio);
	return rc;
}

ly_status
ly_key_from_pem_file(const char *path, EVP_PKEY **out, struct ly_error *err)
{
	struct ly_buf text = LY_BUF_INIT;

	*out = NULL;
	LY_TRY(ly_pem_read_file(path, &text, err));
	ly_status rc = ly_key_from_pem((const char *)text.data, text.len, out, err);
	if (rc != LY_OK)
		(void)ly_error_wrap(err, rc, "%s", path);
	ly_buf_free_secret(&text);
	return rc;
}

ly_status
ly_key_to_pem(const EVP_PKEY *key, struct ly_buf *out, struct ly_error *err)
{
	struct ly_buf der = LY_BUF_INIT;

	LY_TRY(ly_key_to_pkcs8_der(key, &der, err));
	ly_status rc = ly_pem_encode(PEM_STRING_PKCS8INF, der.data, der.len, out, err);
	ly_buf_free_secret(&der);
	return rc;
}

ly_status
ly_key_pem_to_der(const char *pem, size_t len, struct ly_buf *out, struct ly_error *err)
{
	EVP_PKEY *key = NULL;

	LY_TRY(ly_key_from_pem(pem, len, &key, err));
	ly_status rc = ly_key_to_pkcs8_der(key, out, err);
	EVP_PKEY_free(key);
	return rc;
}

ly_status
ly_key_der_to_pem(const uint8_t *der, size_t len, struct ly_buf *out, struct ly_error *err)
{
	EVP_PKEY *key = NULL;

	/* Decode first: only a well-formed, acceptable key is re-encoded. */
	LY_TRY(ly_key_from_pkcs8_der(der, len, &key, err));
	EVP_PKEY_free(key);
	return ly_pem_encode(PEM_STRING_PKCS8INF, der, len, out, err);
}

bool
ly_key_public_equal(const EVP_PKEY *a, const EVP_PKEY *b)
{
	if (a == NULL || b == NULL)
		return false;
	bool eq = EVP_PKEY_eq(a, b) == 1;
	ERR_clear_error();
	return eq;
}
