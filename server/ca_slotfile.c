/*
 * ca_slotfile.c: the CA's slot files in <data_dir>/ca (the format at the
 * top of ca.c): encoding a slot, writing it, reading and checking every
 * slot file back at start-up; and what a slot is apart from the CA's
 * decisions (its file name, freeing it, its place in the CA's sorted
 * list), so that this file never calls back into ca.c. Split from ca.c
 * along its seam; making, activating and retiring slots, rotation and the
 * public API stay there (ca_internal.h).
 */
#include "server/ca.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/b64.h"
#include "lib/der.h"
#include "server/ca_internal.h"

/* ---- a slot: its file name, its end, its place in the CA's list (ca.c makes and retires slots) ---- */

void
ca_slot_file_name(const struct ca_slot *s, char *out, size_t size)
{
	snprintf(out, size, "%s-%s.slot", s->jwt ? "jwt" : "x509", s->id);
}

void
ca_slot_free(struct ca_slot *s)
{
	if (s == NULL)
		return;
	ly_buf_free(&s->root_der);
	ly_buf_free(&s->signing_der);
	EVP_PKEY_free(s->root_key);
	EVP_PKEY_free(s->signing_key);
	EVP_PKEY_free(s->jwt_key);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}

ly_status
ca_slots_add(struct ly_ca *ca, struct ca_slot *s, struct ly_error *err)
{
	if (ca->nslots == LY_CA_SLOTS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "CA: more than %d slots", LY_CA_SLOTS_MAX);
	size_t i = ca->nslots;
	while (i > 0 && ca->slots[i - 1]->issued_at > s->issued_at) {
		ca->slots[i] = ca->slots[i - 1];
		i--;
	}
	ca->slots[i] = s;
	ca->nslots++;
	return LY_OK;
}

/* ---- slot files ---- */

struct field {
	const char *name;
	char *value;  /* malloc'd */
	bool secret;
};

#define SLOT_FIELDS 14

static ly_status
field_b64(struct field *f, const char *name, const uint8_t *der, size_t len, bool secret, struct ly_error *err)
{
	f->name = name;
	f->secret = secret;
	return ly_b64_encode(der, len, &f->value, err);
}

static ly_status
field_key(struct field *f, const char *name, const EVP_PKEY *key, struct ly_error *err)
{
	struct ly_buf der = LY_BUF_INIT;
	LY_TRY(ly_key_to_pkcs8_der(key, &der, err));
	ly_status rc = field_b64(f, name, der.data, der.len, true, err);
	ly_buf_free_secret(&der);
	return rc;
}

static ly_status
field_str(struct field *f, const char *name, const char *value, struct ly_error *err)
{
	f->name = name;
	f->secret = false;
	f->value = strdup(value);
	if (f->value == NULL)
		return ly_error_set(err, LY_E_NOMEM, "CA: slot file");
	return LY_OK;
}

static ly_status
field_num(struct field *f, const char *name, long long v, struct ly_error *err)
{
	char s[32];
	snprintf(s, sizeof(s), "%lld", v);
	return field_str(f, name, s, err);
}

/* Encodes `s` (as retired when `retired`) into one exact-size allocation: ly_buf_free_secret. */
static ly_status
slot_encode(const struct ly_ca *ca, const struct ca_slot *s, bool retired, struct ly_buf *out, struct ly_error *err)
{
	struct field f[SLOT_FIELDS];
	size_t n = 0;
	ly_status rc;

	memset(f, 0, sizeof(f));
	rc = field_str(&f[n++], "trust_domain", ca->td, err);
	if (rc == LY_OK)
		rc = field_str(&f[n++], "kind", s->jwt ? "jwt" : "x509", err);
	if (rc == LY_OK)
		rc = field_str(&f[n++], "id", s->id, err);
	if (rc == LY_OK)
		rc = field_num(&f[n++], "issued_at", (long long)s->issued_at, err);
	if (rc == LY_OK)
		rc = field_num(&f[n++], "activate_at", (long long)s->activate_at, err);
	if (rc == LY_OK)
		rc = field_num(&f[n++], "not_after", (long long)s->not_after, err);
	if (rc == LY_OK)
		rc = field_str(&f[n++], "retired", retired ? "1" : "0", err);
	if (rc == LY_OK && !s->jwt) {
		if (s->root_der.len > 0)
			rc = field_b64(&f[n++], "root_cert", s->root_der.data, s->root_der.len, false, err);
		if (rc == LY_OK && s->root_key != NULL && !retired)
			rc = field_key(&f[n++], "root_key", s->root_key, err);
		if (rc == LY_OK)
			rc = field_b64(&f[n++], "signing_cert", s->signing_der.data, s->signing_der.len, false, err);
		if (rc == LY_OK && !retired)
			rc = field_key(&f[n++], "signing_key", s->signing_key, err);
	} else if (rc == LY_OK) {
		rc = field_str(&f[n++], "kid", s->kid, err);
		if (rc == LY_OK && !retired) {
			rc = field_key(&f[n++], "jwt_key", s->jwt_key, err);
		} else if (rc == LY_OK) {
			struct ly_buf spki = LY_BUF_INIT;
			rc = ca_spki_of(s->jwt_key, &spki, err);
			if (rc == LY_OK)
				rc = field_b64(&f[n++], "jwt_public", spki.data, spki.len, false, err);
			ly_buf_free(&spki);
		}
	}
	if (rc != LY_OK)
		goto out;

	size_t total = strlen(SLOT_MAGIC) + 1;
	for (size_t i = 0; i < n; i++)
		total += strlen(f[i].name) + 1 + strlen(f[i].value) + 1;
	uint8_t *p = malloc(total + 1);
	if (p == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "CA: slot file of %zu bytes", total);
		goto out;
	}
	size_t off = 0;
	off += (size_t)snprintf((char *)p + off, total + 1 - off, "%s\n", SLOT_MAGIC);
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(f[i].name), vl = strlen(f[i].value);
		memcpy(p + off, f[i].name, nl);
		p[off + nl] = ' ';
		memcpy(p + off + nl + 1, f[i].value, vl);
		p[off + nl + 1 + vl] = '\n';
		off += nl + vl + 2;
	}
	p[off] = '\0';
	ly_buf_adopt(out, p, off);
out:
	for (size_t i = 0; i < n; i++) {
		if (f[i].secret)
			ly_free_secret_str(f[i].value);
		else
			free(f[i].value);
	}
	return rc;
}

ly_status
ca_slot_write(struct ly_ca *ca, const struct ca_slot *s, bool retired, struct ly_error *err)
{
	struct ly_buf text = LY_BUF_INIT;
	char name[64];

	LY_TRY(slot_encode(ca, s, retired, &text, err));
	ca_slot_file_name(s, name, sizeof(name));
	ly_status rc = ca_store_write(ca->dirfd, name, text.data, text.len, err);
	ly_buf_free_secret(&text);
	return rc;
}

enum {
	F_TD, F_KIND, F_ID, F_ISSUED, F_ACTIVATE, F_NOT_AFTER, F_RETIRED, F_ROOT_CERT, F_ROOT_KEY, F_SIGNING_CERT,
	F_SIGNING_KEY, F_KID, F_JWT_KEY, F_JWT_PUBLIC, F_COUNT
};

static const char *const field_names[F_COUNT] = { "trust_domain", "kind", "id", "issued_at", "activate_at",
	"not_after", "retired", "root_cert", "root_key", "signing_cert", "signing_key", "kid", "jwt_key",
	"jwt_public" };

struct fview {
	const char *p;
	size_t n;
};

static ly_status
parse_time(const char *file, const struct fview *v, const char *name, time_t *out, struct ly_error *err)
{
	long long x = 0;
	if (v->n == 0 || v->n > 18)
		return ly_error_set(err, LY_E_INVALID, "%s: %s: not a number", file, name);
	for (size_t i = 0; i < v->n; i++) {
		if (v->p[i] < '0' || v->p[i] > '9')
			return ly_error_set(err, LY_E_INVALID, "%s: %s: not a number", file, name);
		x = x * 10 + (v->p[i] - '0');
	}
	*out = (time_t)x;
	return LY_OK;
}

static ly_status
decode_cert(const char *file, const struct fview *v, const char *name, struct ly_buf *out, X509 **x,
    struct ly_error *err)
{
	ly_status rc = ly_b64_decode(v->p, v->n, out, err);
	if (rc == LY_OK)
		rc = ly_der_parse_one(out->data, out->len, x, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "%s: %s", file, name);
	return LY_OK;
}

static ly_status
decode_key(const char *file, const struct fview *v, const char *name, EVP_PKEY **out, struct ly_error *err)
{
	struct ly_buf der = LY_BUF_INIT;
	ly_status rc = ly_b64_decode(v->p, v->n, &der, err);
	if (rc == LY_OK)
		rc = ly_key_from_pkcs8_der(der.data, der.len, out, err);
	ly_buf_free_secret(&der);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "%s: %s", file, name);
	return LY_OK;
}

/* Checks that `key` is the key `cert` certifies. */
static ly_status
key_matches(const char *file, const EVP_PKEY *key, X509 *cert, const char *what, struct ly_error *err)
{
	const EVP_PKEY *pub = X509_get0_pubkey(cert);
	if (pub == NULL || !ly_key_public_equal(key, pub))
		return ly_error_set(err, LY_E_INVALID, "%s: the %s key does not match its certificate", file, what);
	return LY_OK;
}

/* Is `cert` issued (name, key identifier, signature) by `issuer`? */
bool
ca_issued_by(X509 *cert, X509 *issuer)
{
	EVP_PKEY *pub = X509_get0_pubkey(issuer);
	bool ok = pub != NULL && X509_check_issued(issuer, cert) == X509_V_OK && X509_verify(cert, pub) == 1;
	ERR_clear_error();
	return ok;
}

static ly_status
slot_decode_x509(struct ly_ca *ca, const char *file, const struct fview *f, struct ca_slot *s, struct ly_error *err)
{
	X509 *root = NULL, *signing = NULL;
	ly_status rc;

	if (f[F_SIGNING_CERT].p == NULL || f[F_KID].p != NULL || f[F_JWT_KEY].p != NULL || f[F_JWT_PUBLIC].p != NULL ||
	    (f[F_ROOT_KEY].p != NULL && f[F_ROOT_CERT].p == NULL) ||
	    (s->retired != (f[F_SIGNING_KEY].p == NULL)) || (s->retired && f[F_ROOT_KEY].p != NULL) ||
	    (!s->retired && f[F_ROOT_CERT].p != NULL && f[F_ROOT_KEY].p == NULL))
		return ly_error_set(err, LY_E_INVALID, "%s: fields do not fit an X.509 slot", file);
	rc = decode_cert(file, &f[F_SIGNING_CERT], "signing_cert", &s->signing_der, &signing, err);
	if (rc == LY_OK && f[F_ROOT_CERT].p != NULL)
		rc = decode_cert(file, &f[F_ROOT_CERT], "root_cert", &s->root_der, &root, err);
	if (rc == LY_OK && f[F_SIGNING_KEY].p != NULL) {
		rc = decode_key(file, &f[F_SIGNING_KEY], "signing_key", &s->signing_key, err);
		if (rc == LY_OK)
			rc = key_matches(file, s->signing_key, signing, "signing", err);
	}
	if (rc == LY_OK && f[F_ROOT_KEY].p != NULL) {
		rc = decode_key(file, &f[F_ROOT_KEY], "root_key", &s->root_key, err);
		if (rc == LY_OK)
			rc = key_matches(file, s->root_key, root, "root", err);
	}
	if (rc != LY_OK)
		goto out;
	if (root != NULL && (!ca_issued_by(root, root) || !ca_issued_by(signing, root))) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: the signing CA is not issued by the slot's root", file);
		goto out;
	}
	if (ca->upstream)
		s->compatible = root == NULL && ca_issued_by(signing, ca->up_cert);
	else
		s->compatible = root != NULL;
	rc = LY_OK;
out:
	X509_free(root);
	X509_free(signing);
	return rc;
}

static ly_status
slot_decode_jwt(const char *file, const struct fview *f, struct ca_slot *s, struct ly_error *err)
{
	if (f[F_KID].p == NULL || f[F_ROOT_CERT].p != NULL || f[F_ROOT_KEY].p != NULL || f[F_SIGNING_CERT].p != NULL ||
	    f[F_SIGNING_KEY].p != NULL || (s->retired ? f[F_JWT_PUBLIC].p == NULL || f[F_JWT_KEY].p != NULL
	                                              : f[F_JWT_KEY].p == NULL || f[F_JWT_PUBLIC].p != NULL))
		return ly_error_set(err, LY_E_INVALID, "%s: fields do not fit a JWT slot", file);
	const struct fview *k = &f[F_KID];
	if (k->n != LY_CA_KID_LEN)
		return ly_error_set(err, LY_E_INVALID, "%s: kid is not %d characters", file, LY_CA_KID_LEN);
	for (size_t i = 0; i < k->n; i++) {
		char c = k->p[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return ly_error_set(err, LY_E_INVALID, "%s: kid is not base64url", file);
	}
	memcpy(s->kid, k->p, k->n);
	s->kid[k->n] = '\0';
	s->compatible = true;
	if (!s->retired)
		return decode_key(file, &f[F_JWT_KEY], "jwt_key", &s->jwt_key, err);

	struct ly_buf der = LY_BUF_INIT;
	LY_TRY(ly_b64_decode(f[F_JWT_PUBLIC].p, f[F_JWT_PUBLIC].n, &der, err));
	const unsigned char *p = der.data;
	s->jwt_key = d2i_PUBKEY(NULL, &p, (long)der.len);
	bool whole = p == der.data + der.len;
	ly_buf_free(&der);
	if (s->jwt_key == NULL || !whole)
		return ly_error_openssl(err, LY_E_INVALID, "%s: jwt_public malformed", file);
	return ly_key_check_acceptable(s->jwt_key, err);
}

/* Parses the slot file `file` (NUL-terminated `text`); *out: ca_slot_free. */
static ly_status
slot_decode(struct ly_ca *ca, const char *file, const char *text, size_t len, struct ca_slot **out,
    struct ly_error *err)
{
	struct fview f[F_COUNT];
	struct ca_slot *s = NULL;
	const char *p = text, *end = text + len;
	char expect[64];
	ly_status rc;

	*out = NULL;
	memset(f, 0, sizeof(f));
	size_t ml = strlen(SLOT_MAGIC);
	if (len < ml + 1 || memcmp(p, SLOT_MAGIC, ml) != 0 || p[ml] != '\n')
		return ly_error_set(err, LY_E_INVALID, "%s: not a version 1 slot file", file);
	p += ml + 1;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *sp = nl != NULL ? memchr(p, ' ', (size_t)(nl - p)) : NULL;
		if (nl == NULL || sp == NULL)
			return ly_error_set(err, LY_E_INVALID, "%s: a line is not \"name value\"", file);
		size_t i = 0;
		while (i < F_COUNT && (strlen(field_names[i]) != (size_t)(sp - p) ||
		                          memcmp(field_names[i], p, (size_t)(sp - p)) != 0))
			i++;
		if (i == F_COUNT)
			return ly_error_set(err, LY_E_INVALID, "%s: unknown field \"%.*s\"", file, (int)(sp - p > 32 ? 32 : sp - p),
			    p);
		if (f[i].p != NULL)
			return ly_error_set(err, LY_E_INVALID, "%s: field %s repeated", file, field_names[i]);
		f[i].p = sp + 1;
		f[i].n = (size_t)(nl - sp - 1);
		p = nl + 1;
	}
	for (size_t i = F_TD; i <= F_RETIRED; i++) {
		if (f[i].p == NULL)
			return ly_error_set(err, LY_E_INVALID, "%s: field %s missing", file, field_names[i]);
	}
	if (f[F_TD].n != strlen(ca->td) || memcmp(f[F_TD].p, ca->td, f[F_TD].n) != 0)
		return ly_error_set(err, LY_E_INVALID, "%s: CA state of another trust domain (configured %s): use a "
		    "fresh data directory", file, ca->td);

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: allocating", file);
	if (f[F_KIND].n == 3 && memcmp(f[F_KIND].p, "jwt", 3) == 0) {
		s->jwt = true;
	} else if (!(f[F_KIND].n == 4 && memcmp(f[F_KIND].p, "x509", 4) == 0)) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: kind must be x509 or jwt", file);
		goto out;
	}
	if (f[F_ID].n != SLOT_ID_HEX || f[F_RETIRED].n != 1 || (f[F_RETIRED].p[0] != '0' && f[F_RETIRED].p[0] != '1')) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: id or retired malformed", file);
		goto out;
	}
	memcpy(s->id, f[F_ID].p, SLOT_ID_HEX);
	s->id[SLOT_ID_HEX] = '\0';
	s->retired = f[F_RETIRED].p[0] == '1';
	ca_slot_file_name(s, expect, sizeof(expect));
	if (strcmp(expect, file) != 0) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: kind and id do not match the file name", file);
		goto out;
	}
	rc = parse_time(file, &f[F_ISSUED], "issued_at", &s->issued_at, err);
	if (rc == LY_OK)
		rc = parse_time(file, &f[F_ACTIVATE], "activate_at", &s->activate_at, err);
	if (rc == LY_OK)
		rc = parse_time(file, &f[F_NOT_AFTER], "not_after", &s->not_after, err);
	if (rc != LY_OK)
		goto out;
	if (s->activate_at < s->issued_at || s->not_after <= s->activate_at) {
		rc = ly_error_set(err, LY_E_INVALID, "%s: times out of order", file);
		goto out;
	}
	rc = s->jwt ? slot_decode_jwt(file, f, s, err) : slot_decode_x509(ca, file, f, s, err);
	if (rc != LY_OK)
		goto out;
	*out = s;
	s = NULL;
out:
	ca_slot_free(s);
	return rc;
}

ly_status
ca_slots_load(struct ly_ca *ca, struct ly_error *err)
{
	char **names = NULL;
	size_t n = 0;
	ly_status rc;

	LY_TRY(ca_store_list(ca->dirfd, LY_CA_SLOTS_MAX, &names, &n, err));
	for (size_t i = 0; i < n; i++) {
		struct ly_buf text = LY_BUF_INIT;
		struct ca_slot *s = NULL;
		rc = ca_store_read(ca->dirfd, names[i], LY_CA_SLOT_FILE_MAX, &text, err);
		if (rc == LY_OK)
			rc = slot_decode(ca, names[i], (const char *)text.data, text.len, &s, err);
		ly_buf_free_secret(&text);
		if (rc == LY_OK) {
			rc = ca_slots_add(ca, s, err);
			if (rc != LY_OK)
				ca_slot_free(s);
		}
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "CA state");
			goto out;
		}
	}
	rc = LY_OK;
out:
	ca_store_names_free(names, n);
	return rc;
}
