/*
 * ca.c: slots, rotation, the bundle, the upstream CA, open and free (ca.h);
 * the slot files are in ca_slotfile.c, issuance in ca_issue.c (ca_internal.h).
 *
 * A slot is immutable once written but for one change: when it stops being
 * the active or the next one it is "retired", its file replaced by one
 * without private keys. Everything else is a new slot file or a deletion,
 * so the state on disk is always a set of self-describing files and the
 * rotation rule (rotate_kind) is a pure function of them and of `now`.
 *
 * Slot file format (text, one "name value" per line, strict: unknown,
 * repeated or missing names refused; base64 is RFC 4648 §4):
 *   lanyard-ca-slot 1
 *   trust_domain example.org
 *   kind x509 | jwt
 *   id <16 hex>             (also in the file name)
 *   issued_at <unix>        (when made, and published)
 *   activate_at <unix>      (when it starts signing)
 *   not_after <unix>        (when it expires and is dropped)
 *   retired 0 | 1
 *   x509: root_cert, root_key (self-signed, not retired), signing_cert,
 *         signing_key (not retired): DER certificates and PKCS#8 keys
 *   jwt:  kid, and jwt_key (PKCS#8, not retired) or jwt_public (SPKI, retired)
 */
#include "server/ca.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/b64.h"
#include "lib/der.h"
#include "lib/jwt.h"
#include "lib/log.h"
#include "lib/x509svid.h"
#include "server/ca_internal.h"

/* ---- small helpers ---- */

static ly_status
random_hex(char *out, size_t nbytes, struct ly_error *err)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t b[32];

	if (nbytes > sizeof(b) || RAND_bytes(b, (int)nbytes) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "CA: random bytes");
	for (size_t i = 0; i < nbytes; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * nbytes] = '\0';
	return LY_OK;
}

static time_t
slot_half(const struct ca_slot *s)
{
	return s->issued_at + (s->not_after - s->issued_at) / 2;
}

static bool
slot_candidate(const struct ca_slot *s, bool jwt, time_t now)
{
	return s->jwt == jwt && !s->retired && s->compatible && s->not_after > now;
}

static void
slots_remove_at(struct ly_ca *ca, size_t i)
{
	struct ca_slot *s = ca->slots[i];
	if (ca->x509_active == s)
		ca->x509_active = NULL;
	if (ca->jwt_active == s)
		ca->jwt_active = NULL;
	memmove(&ca->slots[i], &ca->slots[i + 1], (ca->nslots - i - 1) * sizeof(ca->slots[0]));
	ca->nslots--;
	ca_slot_free(s);
}

/* SPKI DER of a public key, for keeping a JWT key's public half. */
static ly_status
public_copy(const EVP_PKEY *key, EVP_PKEY **out, struct ly_error *err)
{
	struct ly_buf spki = LY_BUF_INIT;
	LY_TRY(ca_spki_of(key, &spki, err));
	const unsigned char *p = spki.data;
	*out = d2i_PUBKEY(NULL, &p, (long)spki.len);
	ly_buf_free(&spki);
	if (*out == NULL)
		return ly_error_openssl(err, LY_E_CRYPTO, "CA: copying a public key");
	return LY_OK;
}
/* ---- making authorities ---- */

/* Writes and signs one CA certificate into `out` (empty). */
static ly_status
make_ca_cert(struct ly_ca *ca, const uint8_t serial[16], struct ca_span issuer, struct ca_span subject,
    struct ca_span spki, const struct ca_span *exts, size_t nexts, EVP_PKEY *signer, time_t nb, time_t na,
    struct ly_buf *out, struct ly_error *err)
{
	struct ca_cert_spec spec;
	EVP_PKEY_CTX *sctx = NULL;
	const EVP_MD *md = NULL;
	uint8_t alg[32];
	size_t alg_len = 0;
	struct ca_dw w;

	memset(&spec, 0, sizeof(spec));
	LY_TRY(ca_sig_alg(&ca->crypto, signer, &md, alg, &alg_len, err));
	LY_TRY(ca_sign_ctx_new(signer, md, &sctx, err));
	spec.serial = serial;
	spec.alg = (struct ca_span){ alg, alg_len };
	spec.issuer = issuer;
	spec.subject = subject;
	spec.spki = spki;
	spec.not_before = nb;
	spec.not_after = na;
	for (size_t i = 0; i < nexts && i < CA_MAX_EXTS; i++)
		spec.exts[spec.nexts++] = exts[i];
	ca_dw_init(&w, ca->cert_buf, LY_CERT_DER_MAX);
	ly_status rc = ca_cert_write(&spec, sctx, ca->mdctx, md, &w, err);
	if (rc == LY_OK)
		rc = ly_buf_set(out, w.p, w.len, err);
	EVP_PKEY_CTX_free(sctx);
	return rc;
}

ly_status
ca_random_serial(uint8_t serial[16], struct ly_error *err)
{
	if (RAND_bytes(serial, 16) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "CA: random serial");
	/* RFC 5280 §4.1.2.2: positive (ca_dw_uint keeps it non-negative), so never zero. */
	uint8_t any = 0;
	for (size_t i = 0; i < 16; i++)
		any |= serial[i];
	if (any == 0)
		serial[15] = 1;
	return LY_OK;
}

/*
 * A new X.509 slot: a signing key and certificate, under a new root (made
 * here) or under the upstream CA. Written to its file before it is used.
 */
static ly_status
x509_slot_new(struct ly_ca *ca, time_t now, time_t activate_at, struct ca_slot **out, struct ly_error *err)
{
	struct ca_slot *s = NULL;
	struct ly_buf root_spki = LY_BUF_INIT, sign_spki = LY_BUF_INIT;
	uint8_t root_name[512], sign_name[512], root_ext[1024], sign_ext[1024];
	uint8_t serial[16], root_skid[20], sign_skid[20];
	struct ca_dw rn, sn, re, se;
	struct ca_span issuer, akid;
	EVP_PKEY *issuer_key;
	ly_status rc;

	*out = NULL;
	time_t na = now + (time_t)ca->ca_ttl;
	if (ca->upstream && na > ca->up_not_after)
		na = ca->up_not_after;
	if (na <= activate_at)
		return ly_error_set(err, LY_E_EXPIRED, "CA: the upstream CA expires (%lld) before a new signing CA "
		    "could be used", (long long)ca->up_not_after);
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ly_error_set(err, LY_E_NOMEM, "CA: allocating a slot");
	rc = random_hex(s->id, SLOT_ID_HEX / 2, err);
	if (rc != LY_OK)
		goto out;
	s->issued_at = now;
	s->activate_at = activate_at;
	s->not_after = na;
	s->compatible = true;
	time_t nb = now - LY_CA_BACKDATE;

	rc = ly_key_generate(ca->key_type, &s->signing_key, err);
	if (rc == LY_OK)
		rc = ca_spki_of(s->signing_key, &sign_spki, err);
	if (rc == LY_OK)
		rc = ca_key_id(&ca->crypto, ca->mdctx, (struct ca_span){ sign_spki.data, sign_spki.len }, sign_skid, err);
	if (rc != LY_OK)
		goto out;
	ca_dw_init(&sn, sign_name, sizeof(sign_name));
	ca_name_lanyard(&sn, "Lanyard signing CA", s->id);

	if (!ca->upstream) {
		rc = ly_key_generate(ca->key_type, &s->root_key, err);
		if (rc == LY_OK)
			rc = ca_spki_of(s->root_key, &root_spki, err);
		if (rc == LY_OK)
			rc = ca_key_id(&ca->crypto, ca->mdctx, (struct ca_span){ root_spki.data, root_spki.len }, root_skid,
			    err);
		if (rc == LY_OK)
			rc = ca_random_serial(serial, err);
		if (rc != LY_OK)
			goto out;
		ca_dw_init(&rn, root_name, sizeof(root_name));
		ca_name_lanyard(&rn, "Lanyard root CA", s->id);
		ca_dw_init(&re, root_ext, sizeof(root_ext));
		ca_ext_basic_constraints(&re, true, -1);
		ca_ext_key_usage(&re, true, false);
		ca_ext_skid(&re, root_skid, sizeof(root_skid));
		ca_ext_san(&re, false, ca->td_uri, strlen(ca->td_uri), NULL, 0);
		if (rn.overflow || re.overflow || sn.overflow) {
			rc = ly_error_set(err, LY_E_INTERNAL, "CA: root certificate fields too large");
			goto out;
		}
		struct ca_span rext = { re.p, re.len };
		rc = make_ca_cert(ca, serial, (struct ca_span){ rn.p, rn.len }, (struct ca_span){ rn.p, rn.len },
		    (struct ca_span){ root_spki.data, root_spki.len }, &rext, 1, s->root_key, nb, na, &s->root_der, err);
		if (rc != LY_OK)
			goto out;
		issuer = (struct ca_span){ rn.p, rn.len };
		akid = (struct ca_span){ root_skid, sizeof(root_skid) };
		issuer_key = s->root_key;
	} else {
		issuer = (struct ca_span){ ca->up_subject.data, ca->up_subject.len };
		akid = (struct ca_span){ ca->up_skid, ca->up_skid_len };
		issuer_key = ca->up_key;
	}

	ca_dw_init(&se, sign_ext, sizeof(sign_ext));
	ca_ext_basic_constraints(&se, true, 0);
	ca_ext_key_usage(&se, true, false);
	ca_ext_skid(&se, sign_skid, sizeof(sign_skid));
	ca_ext_akid(&se, akid.p, akid.n);
	ca_ext_san(&se, false, ca->td_uri, strlen(ca->td_uri), NULL, 0);
	if (se.overflow || sn.overflow) {
		rc = ly_error_set(err, LY_E_INTERNAL, "CA: signing certificate fields too large");
		goto out;
	}
	rc = ca_random_serial(serial, err);
	if (rc != LY_OK)
		goto out;
	struct ca_span sext = { se.p, se.len };
	rc = make_ca_cert(ca, serial, issuer, (struct ca_span){ sn.p, sn.len },
	    (struct ca_span){ sign_spki.data, sign_spki.len }, &sext, 1, issuer_key, nb, na, &s->signing_der, err);
	if (rc != LY_OK)
		goto out;
	rc = ca_slot_write(ca, s, false, err);
	if (rc != LY_OK)
		goto out;
	log_info("CA: new X.509 authority %s%s, signs from %lld, expires %lld", s->id,
	    ca->upstream ? " under the upstream CA" : " with its own root", (long long)activate_at, (long long)na);
	*out = s;
	s = NULL;
out:
	ly_buf_free(&root_spki);
	ly_buf_free(&sign_spki);
	ca_slot_free(s);
	return rc;
}

static ly_status
jwt_slot_new(struct ly_ca *ca, time_t now, time_t activate_at, struct ca_slot **out, struct ly_error *err)
{
	struct ca_slot *s = NULL;
	uint8_t rnd[LY_CA_KID_LEN * 3 / 4];
	ly_status rc;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ly_error_set(err, LY_E_NOMEM, "CA: allocating a slot");
	s->jwt = true;
	s->compatible = true;
	s->issued_at = now;
	s->activate_at = activate_at;
	s->not_after = now + (time_t)ca->ca_ttl;
	rc = random_hex(s->id, SLOT_ID_HEX / 2, err);
	if (rc != LY_OK)
		goto out;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "CA: random kid");
		goto out;
	}
	ly_b64url_encode_into(rnd, sizeof(rnd), s->kid);
	rc = ly_key_generate(ca->key_type, &s->jwt_key, err);
	if (rc == LY_OK)
		rc = ca_slot_write(ca, s, false, err);
	if (rc != LY_OK)
		goto out;
	log_info("CA: new JWT authority kid=%s, signs from %lld, expires %lld", s->kid, (long long)activate_at,
	    (long long)s->not_after);
	*out = s;
	s = NULL;
out:
	ca_slot_free(s);
	return rc;
}

/* ---- the signer of the active X.509 slot ---- */

static void
signer_cleanup(struct ca_signer *g)
{
	EVP_PKEY_CTX_free(g->sctx);
	ly_buf_free(&g->issuer);
	ly_buf_free(&g->tail);
	memset(g, 0, sizeof(*g));
}

static ly_status
signer_build(struct ly_ca *ca, const struct ca_slot *s, struct ly_error *err)
{
	struct ca_signer g;
	X509 *x = NULL;
	uint8_t *name = NULL;
	struct ca_dw w;
	ly_status rc;

	memset(&g, 0, sizeof(g));
	rc = ly_der_parse_one(s->signing_der.data, s->signing_der.len, &x, err);
	if (rc != LY_OK)
		goto out;
	int nl = i2d_X509_NAME(X509_get_subject_name(x), &name);
	const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(x);
	if (nl <= 0 || skid == NULL || ASN1_STRING_length(skid) <= 0 || ASN1_STRING_length(skid) > 64) {
		rc = ly_error_openssl(err, LY_E_INVALID, "CA: signing certificate %s: subject or key identifier", s->id);
		goto out;
	}
	rc = ly_buf_set(&g.issuer, name, (size_t)nl, err);
	if (rc == LY_OK)
		rc = ly_asn1_time_to_time(X509_get0_notBefore(x), &g.not_before, err);
	if (rc == LY_OK)
		rc = ly_asn1_time_to_time(X509_get0_notAfter(x), &g.not_after, err);
	if (rc == LY_OK)
		rc = ca_sig_alg(&ca->crypto, s->signing_key, &g.md, g.alg, &g.alg_len, err);
	if (rc == LY_OK)
		rc = ca_sign_ctx_new(s->signing_key, g.md, &g.sctx, err);
	if (rc != LY_OK)
		goto out;
	const uint8_t *kid = ASN1_STRING_get0_data(skid);
	size_t kidlen = (size_t)ASN1_STRING_length(skid);
	for (int rsa = 0; rsa < 2; rsa++) {
		ca_dw_init(&w, rsa ? g.ext_rsa : g.ext_ec, sizeof(g.ext_ec));
		ca_ext_basic_constraints(&w, false, -1);
		ca_ext_key_usage(&w, false, rsa != 0);
		ca_ext_eku_server_client(&w);
		ca_ext_akid(&w, kid, kidlen);
		if (w.overflow) {
			rc = ly_error_set(err, LY_E_INTERNAL, "CA: leaf extensions too large");
			goto out;
		}
		*(rsa ? &g.ext_rsa_len : &g.ext_ec_len) = w.len;
	}
	rc = ly_buf_set(&g.tail, s->signing_der.data, s->signing_der.len, err);
	if (rc == LY_OK && s->root_der.len == 0 && ca->up_tail.len > 0)
		rc = ly_buf_append(&g.tail, ca->up_tail.data, ca->up_tail.len, LY_CHAIN_DER_MAX, err);
	if (rc != LY_OK)
		goto out;
	g.slot = s;
	signer_cleanup(&ca->signer);
	ca->signer = g;
	memset(&g, 0, sizeof(g));
out:
	signer_cleanup(&g);
	OPENSSL_free(name);
	X509_free(x);
	return rc;
}

/* ---- rotation ---- */

/* Drops the private keys of `s`: its file first, then memory. */
static ly_status
slot_retire(struct ly_ca *ca, struct ca_slot *s, struct ly_error *err)
{
	EVP_PKEY *pub = NULL;

	if (s->jwt)
		LY_TRY(public_copy(s->jwt_key, &pub, err));
	ly_status rc = ca_slot_write(ca, s, true, err);
	if (rc != LY_OK) {
		EVP_PKEY_free(pub);
		return rc;
	}
	if (ca->signer.slot == s)
		signer_cleanup(&ca->signer);
	EVP_PKEY_free(s->root_key);
	EVP_PKEY_free(s->signing_key);
	EVP_PKEY_free(s->jwt_key);
	s->root_key = NULL;
	s->signing_key = NULL;
	s->jwt_key = pub;
	s->retired = true;
	log_info("CA: %s authority %s retired (keys wiped; stays in the bundle until %lld)", s->jwt ? "JWT" : "X.509",
	    s->jwt ? s->kid : s->id, (long long)s->not_after);
	return LY_OK;
}

/*
 * Whether a successor of `active` made at `at` would be worth making: it
 * must outlive `active` and be valid when it activates (the upstream CA
 * caps both).
 */
static bool
can_succeed(const struct ly_ca *ca, const struct ca_slot *active, time_t at)
{
	return active->jwt || !ca->upstream ||
	    (ca->up_not_after > active->not_after && ca->up_not_after > at + (time_t)ca->delay);
}

/* A successor made after the last publish into the shared bundle (ly_ca_set_published): it may not sign yet. */
static bool
held(const struct ly_ca *ca, const struct ca_slot *s)
{
	return ca->hold_unpublished && s->issued_at > ca->published_upto;
}

void
ly_ca_set_published(struct ly_ca *ca, time_t upto)
{
	if (ca == NULL)
		return;
	ca->hold_unpublished = true;
	if (upto > ca->published_upto)
		ca->published_upto = upto;
}

time_t
ly_ca_published_upto(const struct ly_ca *ca)
{
	return ca != NULL && ca->hold_unpublished ? ca->published_upto : 0;
}

static struct ca_slot *
find_pending(const struct ly_ca *ca, bool jwt, const struct ca_slot *active, time_t now)
{
	struct ca_slot *pending = NULL;
	for (size_t i = 0; active != NULL && i < ca->nslots; i++) {
		struct ca_slot *s = ca->slots[i];
		if (s != active && slot_candidate(s, jwt, now) && s->issued_at >= active->issued_at &&
		    s->activate_at > active->activate_at)
			pending = s;
	}
	return pending;
}

/* The rotation rule of ca.h for one kind of slot. */
static ly_status
rotate_kind(struct ly_ca *ca, bool jwt, time_t now, struct ly_error *err)
{
	struct ca_slot *active = NULL, *earliest = NULL, *fresh = NULL;
	ly_status rc;

	/* Expired: out of the bundle, file deleted. */
	for (size_t i = ca->nslots; i-- > 0;) {
		struct ca_slot *s = ca->slots[i];
		if (s->jwt != jwt || s->not_after > now)
			continue;
		char name[64];
		ca_slot_file_name(s, name, sizeof(name));
		LY_TRY(ca_store_remove(ca->dirfd, name, err));
		log_info("CA: %s authority %s expired, dropped from the bundle", jwt ? "JWT" : "X.509",
		    jwt ? s->kid : s->id);
		if (s->jwt || s->root_der.len > 0)
			ca->bundle_dirty = true;
		if (ca->signer.slot == s)
			signer_cleanup(&ca->signer);
		slots_remove_at(ca, i);
	}

	/* Active: the latest whose time has come; else the earliest (nothing else can sign). */
	for (size_t i = 0; i < ca->nslots; i++) {
		struct ca_slot *s = ca->slots[i];
		if (!slot_candidate(s, jwt, now))
			continue;
		if (s->activate_at <= now && !held(ca, s) && (active == NULL || s->activate_at >= active->activate_at))
			active = s;
		if (earliest == NULL || s->activate_at < earliest->activate_at)
			earliest = s;
	}
	if (active == NULL && earliest != NULL) {
		active = earliest;
		log_warn("CA: %s authority %s used before its activation time: nothing else is valid",
		    jwt ? "JWT" : "X.509", jwt ? active->kid : active->id);
	}
	if (active == NULL) {
		rc = jwt ? jwt_slot_new(ca, now, now, &fresh, err) : x509_slot_new(ca, now, now, &fresh, err);
		if (rc == LY_OK)
			rc = ca_slots_add(ca, fresh, err);
		if (rc != LY_OK) {
			ca_slot_free(fresh);
			return rc;
		}
		ca->bundle_dirty = true;
		active = fresh;
	}
	if (jwt)
		ca->jwt_active = active;
	else
		ca->x509_active = active;

	/* At 50%: the successor, published now, signing after the propagation delay. */
	struct ca_slot *pending = find_pending(ca, jwt, active, now);
	if (pending == NULL && now >= slot_half(active)) {
		if (can_succeed(ca, active, now)) {
			fresh = NULL;
			time_t at = now + (time_t)ca->delay;
			rc = jwt ? jwt_slot_new(ca, now, at, &fresh, err) : x509_slot_new(ca, now, at, &fresh, err);
			if (rc == LY_OK)
				rc = ca_slots_add(ca, fresh, err);
			if (rc != LY_OK) {
				ca_slot_free(fresh);
				return rc;
			}
			/* Under a fixed upstream root, a new signing CA does not change the bundle. */
			if (jwt || fresh->root_der.len > 0)
				ca->bundle_dirty = true;
			pending = fresh;
		} else if (!ca->up_warned) {
			log_error("CA: the upstream CA expires at %lld: no signing CA can be made after that; renew it",
			    (long long)ca->up_not_after);
			ca->up_warned = true;
		}
	}

	/* Everything else of this kind holds no private key any more. */
	for (size_t i = 0; i < ca->nslots; i++) {
		struct ca_slot *s = ca->slots[i];
		if (s->jwt == jwt && !s->retired && s != active && s != pending)
			LY_TRY(slot_retire(ca, s, err));
	}
	return LY_OK;
}

static ly_status
sequence_load(struct ly_ca *ca, struct ly_error *err)
{
	struct ly_buf text = LY_BUF_INIT;
	uint64_t v = 0;

	ly_status rc = ca_store_read(ca->dirfd, SEQUENCE_FILE, 32, &text, err);
	if (rc == LY_E_NOT_FOUND) {
		ca->seq = 0;
		return LY_OK;
	}
	LY_TRY(rc);
	size_t i = 0;
	for (; i < text.len && text.data[i] >= '0' && text.data[i] <= '9' && i < 18; i++)
		v = v * 10 + (uint64_t)(text.data[i] - '0');
	bool ok = i > 0 && i + 1 == text.len && text.data[i] == '\n';
	ly_buf_free(&text);
	if (!ok)
		return ly_error_set(err, LY_E_INVALID, "CA state: %s malformed", SEQUENCE_FILE);
	ca->seq = v;
	return LY_OK;
}

static ly_status
bundle_rebuild(struct ly_ca *ca, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	char text[32];
	ly_status rc;

	rc = ly_bundle_new(ca->td, &b, err);
	if (rc == LY_OK && ca->upstream)
		rc = ly_bundle_add_x509_authority(b, ca->up_root.data, ca->up_root.len, err);
	for (size_t i = 0; rc == LY_OK && i < ca->nslots; i++) {
		const struct ca_slot *s = ca->slots[i];
		if (!s->jwt && s->root_der.len > 0)
			rc = ly_bundle_add_x509_authority(b, s->root_der.data, s->root_der.len, err);
	}
	for (size_t i = 0; rc == LY_OK && i < ca->nslots; i++) {
		const struct ca_slot *s = ca->slots[i];
		if (s->jwt)
			rc = ly_bundle_add_jwt_authority(b, s->kid, s->jwt_key, err);
	}
	/* A consumer polling at the hint sees a successor before it signs (ca.h). */
	int64_t hint = ca->ca_ttl / 6 < ca->delay ? ca->ca_ttl / 6 : ca->delay;
	if (rc == LY_OK)
		rc = ly_bundle_update_sequence(b, ca->seq + 1, err);
	if (rc == LY_OK)
		rc = ly_bundle_update_refresh_hint(b, (uint64_t)(hint > 0 ? hint : 1), err);
	if (rc != LY_OK)
		goto out;
	int n = snprintf(text, sizeof(text), "%llu\n", (unsigned long long)(ca->seq + 1));
	rc = ca_store_write(ca->dirfd, SEQUENCE_FILE, text, (size_t)n, err);
	if (rc != LY_OK)
		goto out;
	ca->seq++;
	ly_bundle_free(ca->bundle);
	ca->bundle = b;
	b = NULL;
	ca->bundle_dirty = false;
	log_info("CA: trust bundle sequence %llu: %zu X.509 authorities, %zu JWT authorities",
	    (unsigned long long)ca->seq, ly_bundle_x509_authority_count(ca->bundle),
	    ly_bundle_jwt_authority_count(ca->bundle));
out:
	ly_bundle_free(b);
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "CA: trust bundle");
	return rc;
}

ly_status
ly_ca_tick(struct ly_ca *ca, time_t now, bool *changed, struct ly_error *err)
{
	ly_status rc;

	if (changed != NULL)
		*changed = false;
	if (ca == NULL)
		return ly_error_set(err, LY_E_INVALID, "CA: none");
	rc = rotate_kind(ca, false, now, err);
	if (rc == LY_OK)
		rc = rotate_kind(ca, true, now, err);
	if (rc == LY_OK && ca->x509_active != NULL && ca->signer.slot != ca->x509_active) {
		rc = signer_build(ca, ca->x509_active, err);
		if (rc == LY_OK)
			log_info("CA: X.509 authority %s signs", ca->x509_active->id);
	}
	if (ca->bundle_dirty) {
		ly_status brc = bundle_rebuild(ca, rc == LY_OK ? err : NULL);
		if (brc == LY_OK && changed != NULL)
			*changed = true;
		if (rc == LY_OK)
			rc = brc;
	}
	return rc;
}

time_t
ly_ca_signing_not_after(const struct ly_ca *ca)
{
	return ca != NULL && ca->x509_active != NULL ? ca->x509_active->not_after : 0;
}

time_t
ly_ca_next_event(const struct ly_ca *ca)
{
	time_t t = (time_t)INT64_MAX;

	if (ca == NULL || ca->bundle_dirty || ca->x509_active == NULL || ca->jwt_active == NULL)
		return 0;
	for (size_t i = 0; i < ca->nslots; i++) {
		if (ca->slots[i]->not_after < t)
			t = ca->slots[i]->not_after;
	}
	for (int jwt = 0; jwt < 2; jwt++) {
		const struct ca_slot *active = jwt ? ca->jwt_active : ca->x509_active;
		/* Every slot left after a tick is unexpired at that tick: 0 keeps them all. */
		const struct ca_slot *pending = find_pending(ca, jwt != 0, active, 0);
		time_t half = slot_half(active);
		time_t e = pending != NULL ? (held(ca, pending) ? t : pending->activate_at)
		    : can_succeed(ca, active, half) ? half : t;
		if (e < t)
			t = e;
	}
	return t;
}

/* ---- upstream CA ---- */

static ly_status
der_of_certs(X509 *const *certs, size_t n, struct ly_buf *out, struct ly_error *err)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *der = NULL;
		int len = i2d_X509(certs[i], &der);
		if (len <= 0)
			return ly_error_openssl(err, LY_E_CRYPTO, "upstream CA: encoding certificate %zu", i);
		ly_status rc = ly_buf_append(out, der, (size_t)len, LY_CHAIN_DER_MAX, err);
		OPENSSL_free(der);
		LY_TRY(rc);
	}
	return LY_OK;
}

static ly_status
upstream_load(struct ly_ca *ca, const struct ly_ca_config *cfg, time_t now, struct ly_error *err)
{
	struct ly_buf der = LY_BUF_INIT;
	STACK_OF(X509) *chain = NULL;
	X509_STORE *store = NULL;
	X509_STORE_CTX *vctx = NULL;
	STACK_OF(X509) *untrusted = NULL;
	GENERAL_NAMES *gens = NULL;
	uint8_t *name = NULL;
	ly_status rc;

	rc = ly_pem_file_to_der_certs(cfg->upstream_cert_path, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &der, err);
	if (rc == LY_OK)
		rc = ly_der_parse_chain(der.data, der.len, &chain, err);
	if (rc == LY_OK)
		rc = ly_key_from_pem_file(cfg->upstream_key_path, &ca->up_key, err);
	if (rc != LY_OK)
		goto out;
	int n = sk_X509_num(chain);
	X509 *first = sk_X509_value(chain, 0), *last = sk_X509_value(chain, n - 1);
	for (int i = 0; i < n; i++) {
		rc = ly_x509svid_check_signing(sk_X509_value(chain, i), err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, rc, "certificate %d", i);
			goto out;
		}
	}
	int crit = -1;
	gens = X509_get_ext_d2i(first, NID_subject_alt_name, &crit, NULL);
	if (gens != NULL) {
		struct ly_spiffe_id id;
		bool found = false;
		rc = ly_san_spiffe_id(gens, &found, &id, NULL, err);
		if (rc == LY_OK && found && !ly_spiffe_id_member_of(&id, ca->td))
			rc = ly_error_set(err, LY_E_INVALID, "its SPIFFE ID is not in trust domain %s", ca->td);
		if (rc != LY_OK)
			goto out;
	}
	if (!ly_key_public_equal(ca->up_key, X509_get0_pubkey(first))) {
		rc = ly_error_set(err, LY_E_INVALID, "the key does not match the first certificate");
		goto out;
	}
	if (!ca_issued_by(last, last)) {
		rc = ly_error_set(err, LY_E_INVALID, "the last certificate is not a self-signed root");
		goto out;
	}
	/* The chain must verify now, up to its own root. */
	store = X509_STORE_new();
	vctx = X509_STORE_CTX_new();
	untrusted = sk_X509_new_null();
	if (store == NULL || vctx == NULL || untrusted == NULL || !X509_STORE_add_cert(store, last)) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "building the upstream trust store");
		goto out;
	}
	for (int i = 1; i < n - 1; i++) {
		if (!sk_X509_push(untrusted, sk_X509_value(chain, i))) {
			rc = ly_error_openssl(err, LY_E_NOMEM, "building the upstream chain");
			goto out;
		}
	}
	if (!X509_STORE_CTX_init(vctx, store, first, untrusted)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "verifying the upstream chain");
		goto out;
	}
	/* As strict as the agents will be (x509svid.h), so that a chain they would refuse is refused here. */
	X509_STORE_CTX_set_time(vctx, 0, now);
	X509_STORE_CTX_set_flags(vctx, X509_V_FLAG_X509_STRICT);
	if (X509_verify_cert(vctx) != 1) {
		int e = X509_STORE_CTX_get_error(vctx);
		rc = ly_error_set(err, e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID ?
		    LY_E_EXPIRED : LY_E_UNTRUSTED, "the chain does not verify: %s", X509_verify_cert_error_string(e));
		goto out;
	}
	ca->up_not_after = (time_t)INT64_MAX;
	for (int i = 0; i < n; i++) {
		time_t na;
		rc = ly_asn1_time_to_time(X509_get0_notAfter(sk_X509_value(chain, i)), &na, err);
		if (rc != LY_OK)
			goto out;
		if (na < ca->up_not_after)
			ca->up_not_after = na;
	}
	rc = der_of_certs(&last, 1, &ca->up_root, err);
	if (rc == LY_OK && n > 1) {
		X509 *tail[LY_CHAIN_CERTS_MAX];
		for (int i = 0; i < n - 1; i++)
			tail[i] = sk_X509_value(chain, i);
		rc = der_of_certs(tail, (size_t)(n - 1), &ca->up_tail, err);
	}
	if (rc != LY_OK)
		goto out;
	int nl = i2d_X509_NAME(X509_get_subject_name(first), &name);
	if (nl <= 0) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "encoding the subject");
		goto out;
	}
	rc = ly_buf_set(&ca->up_subject, name, (size_t)nl, err);
	if (rc != LY_OK)
		goto out;
	const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(first);
	if (skid != NULL && ASN1_STRING_length(skid) > 0 && ASN1_STRING_length(skid) <= (int)sizeof(ca->up_skid)) {
		ca->up_skid_len = (size_t)ASN1_STRING_length(skid);
		memcpy(ca->up_skid, ASN1_STRING_get0_data(skid), ca->up_skid_len);
	} else {
		struct ly_buf spki = LY_BUF_INIT;
		rc = ca_spki_of(X509_get0_pubkey(first), &spki, err);
		if (rc == LY_OK)
			rc = ca_key_id(&ca->crypto, ca->mdctx, (struct ca_span){ spki.data, spki.len }, ca->up_skid, err);
		ly_buf_free(&spki);
		if (rc != LY_OK)
			goto out;
		ca->up_skid_len = 20;
	}
	if (!X509_up_ref(first)) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "keeping the upstream certificate");
		goto out;
	}
	ca->up_cert = first;
	ca->upstream = true;
	rc = LY_OK;
out:
	if (rc != LY_OK)
		rc = ly_error_wrap(err, rc, "upstream CA %s", cfg->upstream_cert_path);
	ERR_clear_error();
	OPENSSL_free(name);
	GENERAL_NAMES_free(gens);
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(vctx);
	X509_STORE_free(store);
	sk_X509_pop_free(chain, X509_free);
	ly_buf_free(&der);
	return rc;
}

/* ---- open / free ---- */

static ly_status
config_number(int64_t v, int64_t dflt, int64_t min, int64_t max, const char *what, int64_t *out, struct ly_error *err)
{
	if (v == 0)
		v = dflt;
	if (v < min || v > max)
		return ly_error_set(err, LY_E_INVALID, "CA: %s %lld s: must be %lld..%lld", what, (long long)v,
		    (long long)min, (long long)max);
	*out = v;
	return LY_OK;
}

ly_status
ly_ca_open(const struct ly_ca_config *cfg, time_t now, struct ly_ca **out, struct ly_error *err)
{
	struct ly_ca *ca = NULL;
	ly_status rc;

	*out = NULL;
	if (cfg == NULL)
		return ly_error_set(err, LY_E_INVALID, "CA: no configuration");
	ca = calloc(1, sizeof(*ca));
	if (ca == NULL)
		return ly_error_set(err, LY_E_NOMEM, "CA: allocating");
	ca->dirfd = -1;
	rc = ly_trust_domain_parse(cfg->trust_domain != NULL ? cfg->trust_domain : "", true, ca->td, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "CA: trust domain");
		goto out;
	}
	snprintf(ca->td_uri, sizeof(ca->td_uri), "spiffe://%s", ca->td);
	ca->key_type = cfg->key_type;
	if (strcmp(ly_key_type_name(ca->key_type), "unknown") == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "CA: unknown key type %d", (int)cfg->key_type);
		goto out;
	}
	rc = config_number(cfg->ca_ttl, LY_CA_TTL_DEFAULT, LY_CA_TTL_MIN, LY_CA_TTL_MAX, "CA TTL", &ca->ca_ttl, err);
	if (rc == LY_OK)
		rc = config_number(cfg->x509_svid_ttl, LY_CA_X509_SVID_TTL_DEFAULT, 1, LY_X509_SVID_TTL_MAX,
		    "X.509-SVID TTL", &ca->x509_ttl, err);
	if (rc == LY_OK)
		rc = config_number(cfg->jwt_svid_ttl, LY_CA_JWT_SVID_TTL_DEFAULT, 1, LY_JWT_SVID_TTL_MAX, "JWT-SVID TTL",
		    &ca->jwt_ttl, err);
	int64_t dd = ca->ca_ttl / 10 < LY_CA_PROPAGATION_DEFAULT ? ca->ca_ttl / 10 : LY_CA_PROPAGATION_DEFAULT;
	/* A successor made at 50% must sign before the active one expires. */
	if (rc == LY_OK)
		rc = config_number(cfg->propagation_delay, dd, 1, ca->ca_ttl / 2 - 1, "propagation delay", &ca->delay,
		    err);
	if (rc != LY_OK)
		goto out;
	if ((cfg->upstream_cert_path == NULL) != (cfg->upstream_key_path == NULL)) {
		rc = ly_error_set(err, LY_E_INVALID, "CA: an upstream CA needs both a certificate and a key file");
		goto out;
	}
	rc = ca_crypto_init(&ca->crypto, err);
	if (rc != LY_OK)
		goto out;
	ca->mdctx = EVP_MD_CTX_new();
	ca->cert_buf = malloc(LY_CERT_DER_MAX);
	ca->var_buf = malloc(LY_CERT_DER_MAX);
	if (ca->mdctx == NULL || ca->cert_buf == NULL || ca->var_buf == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "CA: allocating");
		goto out;
	}
	rc = ca_store_open(cfg->data_dir, &ca->dirfd, err);
	if (rc == LY_OK && cfg->upstream_cert_path != NULL)
		rc = upstream_load(ca, cfg, now, err);
	if (rc == LY_OK)
		rc = sequence_load(ca, err);
	if (rc == LY_OK)
		rc = ca_slots_load(ca, err);
	if (rc != LY_OK)
		goto out;
	/* A restart publishes the bundle again, with a higher sequence. */
	ca->bundle_dirty = true;
	rc = ly_ca_tick(ca, now, NULL, err);
	if (rc != LY_OK)
		goto out;
	*out = ca;
	ca = NULL;
out:
	ly_ca_free(ca);
	return rc;
}

void
ly_ca_free(struct ly_ca *ca)
{
	if (ca == NULL)
		return;
	signer_cleanup(&ca->signer);
	for (size_t i = 0; i < ca->nslots; i++)
		ca_slot_free(ca->slots[i]);
	EVP_PKEY_free(ca->up_key);
	X509_free(ca->up_cert);
	ly_buf_free(&ca->up_root);
	ly_buf_free(&ca->up_tail);
	ly_buf_free(&ca->up_subject);
	ly_bundle_free(ca->bundle);
	ca_crypto_cleanup(&ca->crypto);
	EVP_MD_CTX_free(ca->mdctx);
	free(ca->cert_buf);
	free(ca->var_buf);
	if (ca->dirfd >= 0)
		close(ca->dirfd); /* releases the lock */
	OPENSSL_cleanse(ca, sizeof(*ca));
	free(ca);
}

const struct ly_bundle *
ly_ca_bundle(const struct ly_ca *ca)
{
	return ca != NULL ? ca->bundle : NULL;
}

time_t
ly_ca_jwt_not_after(const struct ly_ca *ca, const char *kid)
{
	for (size_t i = 0; ca != NULL && kid != NULL && i < ca->nslots; i++) {
		const struct ca_slot *s = ca->slots[i];
		if (s->jwt && strcmp(s->kid, kid) == 0)
			return s->not_after;
	}
	return 0;
}

const char *
ly_ca_trust_domain(const struct ly_ca *ca)
{
	return ca != NULL ? ca->td : NULL;
}

