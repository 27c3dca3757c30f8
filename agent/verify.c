/* verify.c: see verify.h. */
#include "agent/verify.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "lib/caps.h"
#include "lib/der.h"
#include "lib/jwt.h"
#include "lib/keys.h"
#include "lib/log.h"

/*
 * A signing path already verified to the current store: the intermediates
 * of a chain (exact DER bytes, leaf excluded), checked as signing
 * certificates and verified up to a bundle authority once. A leaf under
 * it is then verified with its first intermediate as a partial-chain
 * anchor (one signature instead of the whole path, no re-parsing of the
 * intermediates), and the rest of the path by the validity window kept
 * here. Every SVID of a trust domain shares one or two such paths, so the
 * agent parses and verifies them once per bundle version instead of once
 * per SVID (NOTES-openssl.md: d2i_X509 is ~170 µs, a verify ~70 µs).
 */
struct signer {
	uint8_t *der;            /* the intermediates' DER, as in the chain */
	size_t len;
	X509_STORE *anchor;      /* the first intermediate, trusted, X509_V_FLAG_PARTIAL_CHAIN */
	time_t not_before;       /* the latest notBefore on the path, anchor (bundle) included */
	time_t not_after;        /* the earliest notAfter on the path */
	uint64_t last_used;      /* for replacement */
};

struct ly_verifier {
	char td[LY_TRUST_DOMAIN_MAX + 1];
	X509_STORE *store;
	uint64_t seq;
	unsigned char digest[32]; /* SHA-256 of the authorities' concatenated DER */
	/* Signing paths verified to `store`; emptied whenever the store changes. */
	pthread_mutex_t signers_lock;
	struct signer signers[LY_VERIFY_SIGNERS_MAX];
	size_t n_signers;
	uint64_t signer_clock;
	_Atomic uint64_t x509[LY_VERIFY_FAIL_COUNT];
	_Atomic uint64_t jwt[LY_VERIFY_FAIL_COUNT];
};

static const char *const fail_names[LY_VERIFY_FAIL_COUNT] = {
	[LY_VERIFY_OK] = "ok",
	[LY_VERIFY_MALFORMED] = "malformed",
	[LY_VERIFY_POLICY] = "policy",
	[LY_VERIFY_WRONG_ID] = "wrong_id",
	[LY_VERIFY_WRONG_TRUST_DOMAIN] = "wrong_trust_domain",
	[LY_VERIFY_KEY_MISMATCH] = "key_mismatch",
	[LY_VERIFY_EXPIRED] = "expired",
	[LY_VERIFY_UNTRUSTED] = "untrusted",
	[LY_VERIFY_NO_BUNDLE] = "no_bundle",
	[LY_VERIFY_AUDIENCE] = "audience",
};

const char *
ly_verify_fail_str(enum ly_verify_fail why)
{
	if ((unsigned)why >= LY_VERIFY_FAIL_COUNT)
		return "unknown";
	return fail_names[why];
}

ly_status
ly_verifier_new(const char *trust_domain, struct ly_verifier **out, struct ly_error *err)
{
	*out = NULL;
	struct ly_verifier *v = calloc(1, sizeof(*v));
	if (v == NULL)
		return ly_error_set(err, LY_E_NOMEM, "verifier: allocating");
	ly_status rc = ly_trust_domain_parse(trust_domain, false, v->td, err);
	if (rc != LY_OK) {
		free(v);
		return ly_error_wrap(err, rc, "verifier");
	}
	for (size_t i = 0; i < LY_VERIFY_FAIL_COUNT; i++) {
		atomic_init(&v->x509[i], 0);
		atomic_init(&v->jwt[i], 0);
	}
	if (pthread_mutex_init(&v->signers_lock, NULL) != 0) {
		free(v);
		return ly_error_set(err, LY_E_NOMEM, "verifier: initialising a lock");
	}
	*out = v;
	return LY_OK;
}

static void
signers_clear(struct ly_verifier *v)
{
	for (size_t i = 0; i < v->n_signers; i++) {
		free(v->signers[i].der);
		X509_STORE_free(v->signers[i].anchor);
	}
	memset(v->signers, 0, sizeof(v->signers));
	v->n_signers = 0;
}

void
ly_verifier_free(struct ly_verifier *v)
{
	if (v == NULL)
		return;
	signers_clear(v);
	pthread_mutex_destroy(&v->signers_lock);
	X509_STORE_free(v->store);
	free(v);
}

ly_status
ly_verifier_set_bundle(struct ly_verifier *v, const struct ly_bundle *bundle, bool *rebuilt, struct ly_error *err)
{
	ly_status rc;
	struct ly_buf der = LY_BUF_INIT;
	unsigned char digest[32];
	X509_STORE *store = NULL;

	if (rebuilt != NULL)
		*rebuilt = false;
	if (bundle == NULL)
		return ly_error_set(err, LY_E_INVALID, "verifier: no bundle");
	if (strcmp(ly_bundle_trust_domain(bundle), v->td) != 0)
		return ly_error_set(err, LY_E_INVALID, "verifier: bundle is for %s, not %s",
		    ly_bundle_trust_domain(bundle), v->td);
	rc = ly_bundle_x509_authorities_der(bundle, &der, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "verifier");
	if (der.len == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "verifier: bundle for %s has no X.509 authority", v->td);
		goto out;
	}
	if (EVP_Digest(der.data, der.len, digest, NULL, EVP_sha256(), NULL) != 1) {
		rc = ly_error_openssl(err, LY_E_CRYPTO, "verifier: hashing the authorities");
		goto out;
	}
	if (v->store != NULL && v->seq == ly_bundle_sequence(bundle) &&
	    memcmp(digest, v->digest, sizeof(digest)) == 0) {
		rc = LY_OK;
		goto out;
	}
	rc = ly_x509_store_new(der.data, der.len, &store, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, rc, "verifier: bundle for %s", v->td);
		goto out;
	}
	/* No verification runs now (verify.h), so the signers need no lock; taken anyway, it costs nothing. */
	pthread_mutex_lock(&v->signers_lock);
	signers_clear(v);
	pthread_mutex_unlock(&v->signers_lock);
	X509_STORE_free(v->store);
	v->store = store;
	v->seq = ly_bundle_sequence(bundle);
	memcpy(v->digest, digest, sizeof(digest));
	if (rebuilt != NULL)
		*rebuilt = true;
	rc = LY_OK;
out:
	ly_buf_free(&der);
	return rc;
}

uint64_t
ly_verifier_bundle_sequence(const struct ly_verifier *v)
{
	return v->seq;
}

size_t
ly_verifier_signer_count(struct ly_verifier *v)
{
	pthread_mutex_lock(&v->signers_lock);
	size_t n = v->n_signers;
	pthread_mutex_unlock(&v->signers_lock);
	return n;
}

void
ly_verifier_counters(const struct ly_verifier *v, struct ly_verify_counters *out)
{
	for (size_t i = 0; i < LY_VERIFY_FAIL_COUNT; i++) {
		out->x509[i] = atomic_load_explicit(&v->x509[i], memory_order_relaxed);
		out->jwt[i] = atomic_load_explicit(&v->jwt[i], memory_order_relaxed);
	}
}

static void
count_x509(struct ly_verifier *v, enum ly_verify_fail why)
{
	atomic_fetch_add_explicit(&v->x509[why], 1, memory_order_relaxed);
}

static void
count_jwt(struct ly_verifier *v, enum ly_verify_fail why)
{
	atomic_fetch_add_explicit(&v->jwt[why], 1, memory_order_relaxed);
}

/*
 * Parses the intermediates `der` (`len` bytes), checks each as a signing
 * certificate and verifies the path to the current store at `now`. On
 * success `out` owns a copy of the bytes and an anchor store. Any failure
 * just means "no shortcut": the caller verifies the whole chain instead,
 * which names the precise reason.
 */
static bool
signer_build(const struct ly_verifier *v, const uint8_t *der, size_t len, time_t now, struct signer *out)
{
	STACK_OF(X509) *certs = NULL;
	X509_STORE_CTX *ctx = NULL;
	X509_STORE *anchor = NULL;
	struct ly_error e;
	bool ok = false;

	memset(out, 0, sizeof(*out));
	if (ly_der_parse_certs(der, len, LY_VERIFY_DEPTH_MAX - 1, LY_CHAIN_DER_MAX, &certs, &e) != LY_OK)
		goto out;
	for (int i = 0; i < sk_X509_num(certs); i++) {
		if (ly_x509svid_check_signing(sk_X509_value(certs, i), &e) != LY_OK)
			goto out;
	}
	X509 *first = sk_X509_value(certs, 0);
	if ((ctx = X509_STORE_CTX_new()) == NULL || !X509_STORE_CTX_init(ctx, v->store, first, certs))
		goto out;
	/* The parameters of ly_x509svid_verify_x509, one certificate (the leaf) less deep. */
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, now);
	X509_VERIFY_PARAM_set_depth(param, LY_VERIFY_DEPTH_MAX - 3);
	X509_VERIFY_PARAM_set_auth_level(param, 2);
	if (!X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT) || X509_verify_cert(ctx) != 1)
		goto out;
	STACK_OF(X509) *path = X509_STORE_CTX_get0_chain(ctx);
	out->not_before = 0;
	out->not_after = (time_t)INT64_MAX;
	for (int i = 0; i < sk_X509_num(path); i++) {
		time_t nb, na;
		X509 *c = sk_X509_value(path, i);
		if (ly_asn1_time_to_time(X509_get0_notBefore(c), &nb, &e) != LY_OK ||
		    ly_asn1_time_to_time(X509_get0_notAfter(c), &na, &e) != LY_OK)
			goto out;
		if (nb > out->not_before)
			out->not_before = nb;
		if (na < out->not_after)
			out->not_after = na;
	}
	if ((anchor = X509_STORE_new()) == NULL || X509_STORE_add_cert(anchor, first) != 1 ||
	    X509_STORE_set_flags(anchor, X509_V_FLAG_PARTIAL_CHAIN) != 1)
		goto out;
	if ((out->der = malloc(len)) == NULL)
		goto out;
	memcpy(out->der, der, len);
	out->len = len;
	out->anchor = anchor;
	anchor = NULL;
	ok = true;
out:
	ERR_clear_error();
	X509_STORE_free(anchor);
	X509_STORE_CTX_free(ctx);
	sk_X509_pop_free(certs, X509_free);
	return ok;
}

/* Index of the signer for `der` in v->signers, or -1. Under signers_lock. */
static int
signer_find(const struct ly_verifier *v, const uint8_t *der, size_t len)
{
	for (size_t i = 0; i < v->n_signers; i++) {
		if (v->signers[i].len == len && memcmp(v->signers[i].der, der, len) == 0)
			return (int)i;
	}
	return -1;
}

/*
 * The anchor store for the intermediates `der` when they form a signing
 * path verified to the current store and valid at `now` (a new reference:
 * X509_STORE_free), else NULL. `*not_after` gets the path's earliest
 * notAfter. Safe on several threads at once.
 */
static X509_STORE *
signer_get(struct ly_verifier *v, const uint8_t *der, size_t len, time_t now, time_t *not_after)
{
	struct signer built;
	bool have_built = false;
	X509_STORE *anchor = NULL;

	pthread_mutex_lock(&v->signers_lock);
	int i = signer_find(v, der, len);
	pthread_mutex_unlock(&v->signers_lock);
	if (i < 0) {
		/* Built outside the lock: two threads may both build one; the second copy is dropped below. */
		if (!signer_build(v, der, len, now, &built))
			return NULL;
		have_built = true;
	}

	pthread_mutex_lock(&v->signers_lock);
	/* Found again: another thread may have added or evicted signers since the first look. */
	i = signer_find(v, der, len);
	if (i < 0 && have_built) {
		if (v->n_signers == LY_VERIFY_SIGNERS_MAX) {
			size_t lru = 0;
			for (size_t k = 1; k < v->n_signers; k++) {
				if (v->signers[k].last_used < v->signers[lru].last_used)
					lru = k;
			}
			free(v->signers[lru].der);
			X509_STORE_free(v->signers[lru].anchor);
			v->signers[lru] = v->signers[--v->n_signers];
		}
		v->signers[v->n_signers] = built;
		have_built = false;
		i = (int)v->n_signers++;
	}
	if (i >= 0) {
		struct signer *sg = &v->signers[i];
		sg->last_used = ++v->signer_clock;
		/* [not_before, not_after): outside it, the long way decides (and names the certificate). */
		if (sg->not_before <= now && now < sg->not_after && X509_STORE_up_ref(sg->anchor) == 1) {
			anchor = sg->anchor;
			*not_after = sg->not_after;
		}
	}
	pthread_mutex_unlock(&v->signers_lock);
	if (have_built) {
		free(built.der);
		X509_STORE_free(built.anchor);
	}
	return anchor;
}

/* The checks of verify.h on a chain; classification in *why. */
static ly_status
x509_checks(struct ly_verifier *v, const uint8_t *chain, size_t chain_len, const EVP_PKEY *key,
    const char *expected_id, int64_t now, struct ly_x509svid_info *info, enum ly_verify_fail *why,
    struct ly_error *err)
{
	ly_status rc;
	STACK_OF(X509) *certs = NULL;
	X509 *leaf = NULL;
	X509_STORE *anchor = NULL;
	struct ly_der_span spans[LY_VERIFY_DEPTH_MAX];
	size_t n_certs = 0;
	struct ly_spiffe_id id;
	time_t nb, na, path_not_after = 0;

	*why = LY_VERIFY_MALFORMED;
	if (chain == NULL || key == NULL || expected_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "a chain, a key and an expected SPIFFE ID are required");
	rc = ly_der_split(chain, chain_len, LY_VERIFY_DEPTH_MAX, LY_CHAIN_DER_MAX, spans, &n_certs, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc == LY_E_LIMIT ? LY_E_LIMIT : LY_E_INVALID, "chain");
	/* The intermediates as one run of bytes: ly_der_split accounted for every byte. */
	if (n_certs > 1 && v->store != NULL)
		anchor = signer_get(v, chain + spans[1].off, chain_len - spans[1].off, (time_t)now, &path_not_after);
	if (anchor != NULL) {
		/* Their signing-certificate rules and path were checked when the signer was made. */
		rc = ly_der_parse_one(chain + spans[0].off, spans[0].len, &leaf, err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, LY_E_INVALID, "chain: certificate 0");
			goto out;
		}
	} else {
		rc = ly_der_parse_certs(chain, chain_len, LY_VERIFY_DEPTH_MAX, LY_CHAIN_DER_MAX, &certs, err);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc == LY_E_LIMIT ? LY_E_LIMIT : LY_E_INVALID, "chain");
		leaf = sk_X509_shift(certs);
	}

	*why = LY_VERIFY_POLICY;
	rc = ly_x509svid_check_leaf(leaf, &id, err);
	if (rc != LY_OK) {
		rc = ly_error_wrap(err, LY_E_INVALID, "certificate 0 (leaf)");
		goto out;
	}
	for (int i = 0; i < sk_X509_num(certs); i++) {
		rc = ly_x509svid_check_signing(sk_X509_value(certs, i), err);
		if (rc != LY_OK) {
			rc = ly_error_wrap(err, LY_E_INVALID, "certificate %d", i + 1);
			goto out;
		}
	}
	if (strcmp(id.id, expected_id) != 0) {
		*why = LY_VERIFY_WRONG_ID;
		rc = ly_error_set(err, LY_E_INVALID, "URI SAN %s is not the entry's SPIFFE ID", id.id);
		goto out;
	}
	if (!ly_spiffe_id_member_of(&id, v->td)) {
		*why = LY_VERIFY_WRONG_TRUST_DOMAIN;
		rc = ly_error_set(err, LY_E_INVALID, "SPIFFE ID %s is not in trust domain %s", id.id, v->td);
		goto out;
	}
	if (!ly_key_public_equal(X509_get0_pubkey(leaf), key)) {
		ERR_clear_error();
		*why = LY_VERIFY_KEY_MISMATCH;
		rc = ly_error_set(err, LY_E_INVALID, "the leaf certifies another key than the one generated for it");
		goto out;
	}
	*why = LY_VERIFY_MALFORMED;
	if ((rc = ly_asn1_time_to_time(X509_get0_notBefore(leaf), &nb, err)) != LY_OK ||
	    (rc = ly_asn1_time_to_time(X509_get0_notAfter(leaf), &na, err)) != LY_OK)
		goto out;
	/* [not_before, not_after): OpenSSL's reading too (X509_cmp_time), and the cache's. */
	if ((int64_t)nb > now || now >= (int64_t)na) {
		*why = LY_VERIFY_EXPIRED;
		rc = ly_error_set(err, LY_E_EXPIRED, "leaf valid from %lld to %lld, now is %lld", (long long)nb,
		    (long long)na, (long long)now);
		goto out;
	}
	if (v->store == NULL) {
		*why = LY_VERIFY_NO_BUNDLE;
		rc = ly_error_set(err, LY_E_NOT_FOUND, "no trust bundle yet");
		goto out;
	}
	rc = ly_x509svid_verify_x509(leaf, certs, anchor != NULL ? anchor : v->store, v->td, (time_t)now, key, info,
	    err);
	switch (rc) {
	case LY_OK:
		*why = LY_VERIFY_OK;
		/* The anchor's path above it is not in the verified chain: its window counts too. */
		if (anchor != NULL && info != NULL && path_not_after < info->chain_not_after)
			info->chain_not_after = path_not_after;
		break;
	case LY_E_EXPIRED:
		*why = LY_VERIFY_EXPIRED;
		break;
	case LY_E_INVALID:
		*why = LY_VERIFY_POLICY;
		break;
	case LY_E_LIMIT:
		*why = LY_VERIFY_MALFORMED;
		break;
	default:
		*why = LY_VERIFY_UNTRUSTED;
		break;
	}
out:
	X509_STORE_free(anchor);
	X509_free(leaf);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

ly_status
ly_verify_x509svid(struct ly_verifier *v, const uint8_t *chain, size_t chain_len, const EVP_PKEY *key,
    const char *expected_id, int64_t now, struct ly_x509svid_info *info, enum ly_verify_fail *why,
    struct ly_error *err)
{
	struct ly_error lerr;
	enum ly_verify_fail w;

	ly_error_clear(&lerr);
	ly_status rc = x509_checks(v, chain, chain_len, key, expected_id, now, info, &w, &lerr);
	if (rc == LY_OK)
		w = LY_VERIFY_OK;
	count_x509(v, w);
	if (why != NULL)
		*why = w;
	if (rc != LY_OK) {
		log_warn("X.509-SVID for %.256s refused (%s): %s", expected_id != NULL ? expected_id : "(none)",
		    ly_verify_fail_str(w), lerr.msg);
		if (err != NULL)
			*err = lerr;
	}
	return rc;
}

ly_status
ly_verify_x509svid_key_der(struct ly_verifier *v, const uint8_t *chain, size_t chain_len, const uint8_t *key_der,
    size_t key_len, const char *expected_id, int64_t now, struct ly_x509svid_info *info, enum ly_verify_fail *why,
    struct ly_error *err)
{
	EVP_PKEY *key = NULL;
	ly_status rc = key_der != NULL ? ly_key_from_pkcs8_der(key_der, key_len, &key, err)
				       : ly_error_set(err, LY_E_INVALID, "no key");
	if (rc != LY_OK) {
		count_x509(v, LY_VERIFY_MALFORMED);
		if (why != NULL)
			*why = LY_VERIFY_MALFORMED;
		log_warn("X.509-SVID for %.256s refused (malformed): its key does not decode",
		    expected_id != NULL ? expected_id : "(none)");
		return ly_error_wrap(err, rc, "key");
	}
	rc = ly_verify_x509svid(v, chain, chain_len, key, expected_id, now, info, why, err);
	EVP_PKEY_free(key);
	return rc;
}

/* The reason for a ly_jwt_validate failure. */
static enum ly_verify_fail
jwt_reason(ly_status rc, const struct ly_error *e)
{
	switch (rc) {
	case LY_E_EXPIRED:
		return LY_VERIFY_EXPIRED;
	case LY_E_UNTRUSTED:
		return LY_VERIFY_UNTRUSTED;
	case LY_E_NOT_FOUND:
		return LY_VERIFY_NO_BUNDLE;
	case LY_E_INVALID:
		/* jwt.c: "audience '...' not in 'aud'" is the one audience failure. */
		if (strstr(e->msg, "not in 'aud'") != NULL)
			return LY_VERIFY_AUDIENCE;
		return LY_VERIFY_MALFORMED;
	default:
		return LY_VERIFY_MALFORMED;
	}
}

ly_status
ly_verify_jwtsvid(struct ly_verifier *v, const char *token, size_t len, const char *audience,
    const char *expected_id, const struct ly_bundle_set *bundles, int64_t now, struct ly_spiffe_id *sub_out,
    json_t **claims_out, enum ly_verify_fail *why, struct ly_error *err)
{
	struct ly_error lerr;
	struct ly_spiffe_id sub;
	json_t *claims = NULL;
	enum ly_verify_fail w = LY_VERIFY_OK;
	ly_status rc;

	ly_error_clear(&lerr);
	if (claims_out != NULL)
		*claims_out = NULL;
	if (bundles == NULL) {
		w = LY_VERIFY_NO_BUNDLE;
		rc = ly_error_set(&lerr, LY_E_NOT_FOUND, "no trust bundle yet");
		goto out;
	}
	rc = ly_jwt_validate(token, len, audience, bundles, (time_t)now, &sub, claims_out != NULL ? &claims : NULL,
	    &lerr);
	if (rc != LY_OK) {
		w = jwt_reason(rc, &lerr);
		goto out;
	}
	if (expected_id != NULL && strcmp(sub.id, expected_id) != 0) {
		w = LY_VERIFY_WRONG_ID;
		rc = ly_error_set(&lerr, LY_E_INVALID, "sub %s is not the expected SPIFFE ID", sub.id);
		goto out;
	}
	if (sub_out != NULL)
		*sub_out = sub;
	if (claims_out != NULL) {
		*claims_out = claims;
		claims = NULL;
	}
out:
	json_decref(claims);
	count_jwt(v, w);
	if (why != NULL)
		*why = w;
	if (rc != LY_OK) {
		if (sub_out != NULL)
			memset(sub_out, 0, sizeof(*sub_out));
		log_warn("JWT-SVID%s%.256s refused (%s): %s", expected_id != NULL ? " for " : "",
		    expected_id != NULL ? expected_id : "", ly_verify_fail_str(w), lerr.msg);
		if (err != NULL)
			*err = lerr;
	}
	return rc;
}

/* ---- re-checking the cache after a bundle change ---- */

struct memo {
	const uint8_t *tail; /* interned intermediates: one pointer per distinct chain */
	enum ly_verify_fail why;
};

struct recheck {
	struct ly_verifier *v;
	int64_t now;
	struct memo *memo;
	size_t n, cap;
	bool nomem;
};

/*
 * Path validation of the intermediates alone (the first one as the
 * target): the leaf's signature by the first intermediate was verified
 * when the SVID entered the cache and cannot change; what a new bundle can
 * change is whether the intermediates still lead to a trusted authority.
 */
static enum ly_verify_fail
verify_tail(struct ly_verifier *v, const struct ly_der_view *tail, int64_t now)
{
	STACK_OF(X509) *certs = NULL;
	X509 *first = NULL;
	X509_STORE_CTX *ctx = NULL;
	enum ly_verify_fail why = LY_VERIFY_UNTRUSTED;

	if (ly_der_parse_certs(tail->der, tail->len, LY_VERIFY_DEPTH_MAX, LY_CHAIN_DER_MAX, &certs, NULL) != LY_OK)
		return LY_VERIFY_MALFORMED;
	first = sk_X509_shift(certs);
	ctx = X509_STORE_CTX_new();
	if (ctx == NULL || !X509_STORE_CTX_init(ctx, v->store, first, certs))
		goto out;
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, (time_t)now);
	X509_VERIFY_PARAM_set_depth(param, LY_VERIFY_DEPTH_MAX - 2);
	X509_VERIFY_PARAM_set_auth_level(param, 2);
	if (!X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT))
		goto out;
	if (X509_verify_cert(ctx) == 1) {
		why = LY_VERIFY_OK;
	} else {
		int e = X509_STORE_CTX_get_error(ctx);
		if (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID)
			why = LY_VERIFY_EXPIRED;
	}
out:
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_free(first);
	sk_X509_pop_free(certs, X509_free);
	return why;
}

/* A leaf issued directly by an authority: verified alone. */
static enum ly_verify_fail
verify_leaf_alone(struct ly_verifier *v, const struct ly_cache_item *item, int64_t now)
{
	ly_status rc = ly_x509svid_verify_ex(item->leaf.der, item->leaf.len, v->store, v->td, (time_t)now, NULL, NULL,
	    NULL);
	if (rc == LY_OK)
		return LY_VERIFY_OK;
	return rc == LY_E_EXPIRED ? LY_VERIFY_EXPIRED : LY_VERIFY_UNTRUSTED;
}

static bool
recheck_keep(const struct ly_cache_item *item, void *arg)
{
	struct recheck *r = arg;
	enum ly_verify_fail why;

	if (item->intermediates.len == 0) {
		why = verify_leaf_alone(r->v, item, r->now);
	} else {
		size_t i = 0;
		while (i < r->n && r->memo[i].tail != item->intermediates.der)
			i++;
		if (i == r->n) {
			why = verify_tail(r->v, &item->intermediates, r->now);
			if (r->n == r->cap) {
				size_t ncap = r->cap == 0 ? 8 : r->cap * 2;
				struct memo *m = realloc(r->memo, ncap * sizeof(*m));
				if (m == NULL) {
					r->nomem = true;
					return true; /* keep: decide again next time rather than guess */
				}
				r->memo = m;
				r->cap = ncap;
			}
			r->memo[r->n].tail = item->intermediates.der;
			r->memo[r->n].why = why;
			r->n++;
			if (why != LY_VERIFY_OK)
				log_warn("X.509-SVIDs under an intermediate no longer trusted by bundle %llu are "
					 "dropped (%s)",
				    (unsigned long long)r->v->seq, ly_verify_fail_str(why));
		} else {
			why = r->memo[i].why;
		}
	}
	if (why == LY_VERIFY_OK)
		return true;
	count_x509(r->v, why);
	if (item->intermediates.len == 0)
		log_warn("X.509-SVID for %.256s dropped after a bundle change (%s)", item->entry->spiffe_id,
		    ly_verify_fail_str(why));
	return false;
}

size_t
ly_verify_recheck_cache(struct ly_verifier *v, struct ly_cache *cache, int64_t now, struct ly_cache_changes *changes)
{
	struct recheck r;

	if (v->store == NULL)
		return 0;
	memset(&r, 0, sizeof(r));
	r.v = v;
	r.now = now;
	size_t n = ly_cache_filter_svids(cache, recheck_keep, &r, changes);
	free(r.memo);
	return n;
}
