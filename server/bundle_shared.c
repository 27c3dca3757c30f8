/*
 * bundle_shared.c: the union of the authorities several servers publish
 * (bundle_shared.h). Pure: parsing and set operations only.
 */
#include "server/bundle_shared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "lib/caps.h"

void
ly_shared_authorities_cleanup(struct ly_shared_authorities *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->n; i++) {
		free(a->items[i].server_id);
		free(a->items[i].kid);
		ly_buf_free(&a->items[i].der);
	}
	free(a->items);
	a->items = NULL;
	a->n = 0;
	a->sequence = 0;
}

static bool
text_ok(const char *s, size_t cap)
{
	if (s == NULL || s[0] == '\0')
		return false;
	size_t n = strnlen(s, cap + 1);
	if (n > cap)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f)
			return false;
	}
	return true;
}

ly_status
ly_shared_authorities_add(struct ly_shared_authorities *a, const char *server_id, bool jwt, const char *kid,
    const uint8_t *der, size_t len, int64_t not_after, struct ly_error *err)
{
	if (!text_ok(server_id, LY_SHARED_SERVER_ID_MAX))
		return ly_error_set(err, LY_E_INVALID, "shared bundle: server ID empty, over %d bytes or not printable",
		    LY_SHARED_SERVER_ID_MAX);
	if (!text_ok(kid, LY_SHARED_KID_MAX))
		return ly_error_set(err, LY_E_INVALID, "shared bundle: key ID empty, over %d bytes or not printable",
		    LY_SHARED_KID_MAX);
	if (der == NULL || len == 0 || len > LY_CERT_DER_MAX)
		return ly_error_set(err, LY_E_LIMIT, "shared bundle: authority of %zu bytes (1..%d)", len,
		    LY_CERT_DER_MAX);
	if (not_after <= 0)
		return ly_error_set(err, LY_E_INVALID, "shared bundle: authority without an expiry");
	if (a->n >= LY_SHARED_AUTHORITIES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "shared bundle: more than %d authorities",
		    LY_SHARED_AUTHORITIES_MAX);
	struct ly_shared_authority *grown = realloc(a->items, (a->n + 1) * sizeof(*grown));
	if (grown == NULL)
		return ly_error_set(err, LY_E_NOMEM, "shared bundle: out of memory");
	a->items = grown;
	struct ly_shared_authority *r = &a->items[a->n];
	memset(r, 0, sizeof(*r));
	r->jwt = jwt;
	r->not_after = not_after;
	r->server_id = strdup(server_id);
	r->kid = strdup(kid);
	if (r->server_id == NULL || r->kid == NULL || ly_buf_set(&r->der, der, len, NULL) != LY_OK) {
		free(r->server_id);
		free(r->kid);
		ly_buf_free(&r->der);
		return ly_error_set(err, LY_E_NOMEM, "shared bundle: out of memory");
	}
	a->n++;
	return LY_OK;
}

/* notAfter of a DER certificate as Unix seconds; 0 when it does not parse. */
static int64_t
cert_not_after(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	int64_t out = 0;
	struct tm tm;

	if (x != NULL && p == der + len && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
		out = (int64_t)timegm(&tm);
	X509_free(x);
	return out;
}

/* Lower-case hex SHA-256 of `der` into `out` (65 bytes). */
static ly_status
der_hash_hex(const uint8_t *der, size_t len, char out[65], struct ly_error *err)
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	if (!EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != sizeof(md))
		return ly_error_openssl(err, LY_E_CRYPTO, "shared bundle: hash");
	for (size_t i = 0; i < sizeof(md); i++)
		(void)snprintf(out + 2 * i, 3, "%02x", md[i]);
	return LY_OK;
}

ly_status
ly_shared_authorities_from_bundle(const struct ly_bundle *local, const char *server_id,
    ly_shared_jwt_expiry_fn *jwt_not_after, void *arg, struct ly_shared_authorities *out, struct ly_error *err)
{
	char kid[65];

	if (local == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "shared bundle: no local bundle");
	for (size_t i = 0; i < ly_bundle_x509_authority_count(local); i++) {
		const struct ly_buf *d = ly_bundle_x509_authority(local, i);
		int64_t na = cert_not_after(d->data, d->len);
		if (na <= 0)
			return ly_error_set(err, LY_E_INVALID, "shared bundle: X.509 authority %zu has no readable notAfter",
			    i + 1);
		LY_TRY(der_hash_hex(d->data, d->len, kid, err));
		LY_TRY(ly_shared_authorities_add(out, server_id, false, kid, d->data, d->len, na, err));
	}
	for (size_t i = 0; i < ly_bundle_jwt_authority_count(local); i++) {
		const char *k = ly_bundle_jwt_authority_kid(local, i);
		int64_t na = jwt_not_after != NULL ? jwt_not_after(arg, k) : 0;
		if (na <= 0)
			continue;
		unsigned char *der = NULL;
		int n = i2d_PUBKEY(ly_bundle_jwt_authority_key(local, i), &der);
		if (n <= 0)
			return ly_error_openssl(err, LY_E_CRYPTO, "shared bundle: JWT key %s", k);
		ly_status rc = ly_shared_authorities_add(out, server_id, true, k, der, (size_t)n, na, err);
		OPENSSL_free(der);
		LY_TRY(rc);
	}
	return LY_OK;
}

/* Adds row `r` to `b`; LY_E_INVALID (skipped by the caller) when it does not parse. */
static ly_status
union_add(struct ly_bundle *b, const struct ly_shared_authority *r, struct ly_error *err)
{
	if (!r->jwt)
		return ly_bundle_add_x509_authority(b, r->der.data, r->der.len, err);
	if (ly_bundle_find_jwt_authority(b, r->kid) != NULL)
		return LY_OK;
	const unsigned char *p = r->der.data;
	EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)r->der.len);
	if (key == NULL || p != r->der.data + r->der.len) {
		EVP_PKEY_free(key);
		return ly_error_set(err, LY_E_INVALID, "shared bundle: JWT key %s does not parse", r->kid);
	}
	ly_status rc = ly_bundle_add_jwt_authority(b, r->kid, key, err);
	EVP_PKEY_free(key);
	return rc;
}

ly_status
ly_shared_bundle_union(const char *td, const struct ly_shared_authorities *rows, int64_t now, uint64_t sequence,
    uint64_t refresh_hint, struct ly_bundle **out, int64_t *next_expiry, size_t *skipped, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	int64_t next = 0;
	size_t bad = 0;
	ly_status rc;

	*out = NULL;
	if ((rc = ly_bundle_new(td, &b, err)) != LY_OK)
		return rc;
	/* X.509 first, then JWT: the order ly_ca_bundle has, whatever the rows' order. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < rows->n; i++) {
			const struct ly_shared_authority *r = &rows->items[i];
			if (r->jwt != (pass == 1) || r->not_after <= now)
				continue;
			rc = union_add(b, r, err);
			if (rc == LY_E_NOMEM)
				goto out;
			if (rc != LY_OK) {
				bad++;
				continue;
			}
			if (next == 0 || r->not_after < next)
				next = r->not_after;
		}
	}
	if ((rc = ly_bundle_update_sequence(b, sequence, err)) != LY_OK ||
	    (rc = ly_bundle_update_refresh_hint(b, refresh_hint, err)) != LY_OK)
		goto out;
	*out = b;
	b = NULL;
	if (next_expiry != NULL)
		*next_expiry = next;
	if (skipped != NULL)
		*skipped = bad;
	rc = LY_OK;
out:
	ly_bundle_free(b);
	return rc;
}

bool
ly_shared_bundle_same_authorities(const struct ly_bundle *a, const struct ly_bundle *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	if (ly_bundle_x509_authority_count(a) != ly_bundle_x509_authority_count(b) ||
	    ly_bundle_jwt_authority_count(a) != ly_bundle_jwt_authority_count(b))
		return false;
	for (size_t i = 0; i < ly_bundle_x509_authority_count(a); i++) {
		const struct ly_buf *x = ly_bundle_x509_authority(a, i);
		bool found = false;
		for (size_t j = 0; !found && j < ly_bundle_x509_authority_count(b); j++) {
			const struct ly_buf *y = ly_bundle_x509_authority(b, j);
			found = x->len == y->len && memcmp(x->data, y->data, x->len) == 0;
		}
		if (!found)
			return false;
	}
	for (size_t i = 0; i < ly_bundle_jwt_authority_count(a); i++) {
		const char *kid = ly_bundle_jwt_authority_kid(a, i);
		EVP_PKEY *k = ly_bundle_find_jwt_authority(b, kid);
		if (k == NULL || EVP_PKEY_eq(k, ly_bundle_jwt_authority_key(a, i)) != 1)
			return false;
	}
	return true;
}
