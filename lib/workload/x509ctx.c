/*
 * x509ctx.c: one X509SVIDResponse (SPEC §3, Workload API standard) ->
 * a checked lanyard_x509_context. Pure (no gRPC): unit-tested and fuzzed.
 *
 * Rules, each refusing the whole response (the caller keeps its previous
 * one):
 *  - the message is a well-formed protobuf X509SVIDResponse of at most
 *    LY_WL_RESPONSE_MAX bytes (64 MiB, what the agent may send), with
 *    1..LY_WL_SVIDS_MAX SVIDs (an agent with nothing for the caller
 *    answers PERMISSION_DENIED, never an empty list) and at most
 *    LY_BUNDLE_SET_MAX federated bundles (and CRLs, which are ignored),
 *    counted on the wire before it is unpacked (lib/caps.h says why);
 *  - each SVID: `spiffe_id` a SPIFFE ID; `x509_svid` a chain of DER
 *    certificates (der.h), `x509_svid_key` PKCS#8 DER of an acceptable key
 *    (keys.h), `bundle` the non-empty DER authorities of the SVID's trust
 *    domain; the chain verifies to that bundle at `now` with the X509-SVID
 *    rules (x509svid.h: leaf and signing-certificate rules, X509-SVID
 *    §4-§5), the leaf certifies the key, and the leaf's SPIFFE ID equals
 *    `spiffe_id`; a CA certificate (bundle or intermediate) with a SPIFFE
 *    ID names the SVID's trust domain (X509-SVID §3.2); hints at most LY_ENTRY_HINT_MAX bytes and unique in the
 *    response (Workload API: "hints are unique");
 *  - two SVIDs of one trust domain carry the same bundle;
 *  - federated bundles are keyed by a trust domain ID "spiffe://td" (no
 *    path), hold valid DER CA certificates, and name no trust domain twice
 *    (nor the caller's own).
 * Keys received are wiped from the unpacked message before it is freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "lib/der.h"
#include "lib/keys.h"
#include "lib/pbstrict.h"
#include "lib/x509svid.h"
#include "wl_internal.h"
#include "workload.pb-c.h"

static void
svid_cleanup(struct lanyard_x509_svid *s)
{
	free(s->hint);
	X509_free(s->leaf);
	sk_X509_pop_free(s->intermediates, X509_free);
	EVP_PKEY_free(s->key);
	memset(s, 0, sizeof(*s));
}

static void
bundle_cleanup(struct wl_bundle *b)
{
	ly_buf_free(&b->der);
	sk_X509_pop_free(b->certs, X509_free);
	X509_STORE_free(b->store);
	memset(b, 0, sizeof(*b));
}

static void
context_destroy(lanyard_x509_context *ctx)
{
	if (ctx == NULL)
		return;
	for (size_t i = 0; i < ctx->n_svids; i++)
		svid_cleanup(&ctx->svids[i]);
	for (size_t i = 0; i < ctx->n_bundles; i++)
		bundle_cleanup(&ctx->bundles[i]);
	free(ctx->svids);
	free(ctx->bundles);
	free(ctx);
}

lanyard_x509_context *
lanyard_x509_context_ref(lanyard_x509_context *ctx)
{
	if (ctx != NULL)
		atomic_fetch_add(&ctx->refs, 1);
	return ctx;
}

void
lanyard_x509_context_free(lanyard_x509_context *ctx)
{
	if (ctx != NULL && atomic_fetch_sub(&ctx->refs, 1) == 1)
		context_destroy(ctx);
}

static struct wl_bundle *
find_bundle(const lanyard_x509_context *ctx, const char *td)
{
	for (size_t i = 0; i < ctx->n_bundles; i++) {
		if (strcmp(ctx->bundles[i].td, td) == 0)
			return &ctx->bundles[i];
	}
	return NULL;
}

/*
 * A CA certificate's SPIFFE ID, when it has one, names the trust domain
 * it signs for (X509-SVID §3.2): a bundle or intermediate of another
 * trust domain is refused rather than trusted for this one.
 */
static ly_status
check_certs_td(STACK_OF(X509) *certs, const char *td, const char *what, struct ly_error *err)
{
	for (int i = 0; certs != NULL && i < sk_X509_num(certs); i++) {
		GENERAL_NAMES *gens = X509_get_ext_d2i(sk_X509_value(certs, i), NID_subject_alt_name, NULL, NULL);
		struct ly_spiffe_id id;
		bool found = false;
		ly_status rc = gens != NULL ? ly_san_spiffe_id(gens, &found, &id, NULL, err) : LY_OK;
		GENERAL_NAMES_free(gens);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "%s certificate %d", what, i);
		if (found && strcmp(id.trust_domain, td) != 0)
			return ly_error_set(err, LY_E_INVALID, "%s certificate %d is an authority of %s, not of %s", what, i,
			    id.trust_domain, td);
	}
	return LY_OK;
}

/* Adds bundle `der` for `td` as ctx->bundles[n_bundles] (room reserved by the caller). */
static ly_status
add_bundle(lanyard_x509_context *ctx, const char *td, const uint8_t *der, size_t len, struct ly_error *err)
{
	struct wl_bundle *b = &ctx->bundles[ctx->n_bundles];
	ly_status rc;

	if (len == 0)
		return ly_error_set(err, LY_E_INVALID, "bundle for %s: empty", td);
	(void)snprintf(b->td, sizeof(b->td), "%s", td);
	if ((rc = ly_der_parse_bundle(der, len, &b->certs, err)) != LY_OK ||
	    (rc = check_certs_td(b->certs, td, "authority", err)) != LY_OK ||
	    (rc = ly_x509_store_new(der, len, &b->store, err)) != LY_OK ||
	    (rc = ly_buf_set(&b->der, der, len, err)) != LY_OK) {
		bundle_cleanup(b);
		return ly_error_wrap(err, rc, "bundle for %s", td);
	}
	ctx->n_bundles++;
	return LY_OK;
}

static ly_status
parse_svid(lanyard_x509_context *ctx, const X509SVID *in, time_t now, struct lanyard_x509_svid *out,
    struct ly_error *err)
{
	STACK_OF(X509) *chain = NULL;
	struct ly_x509svid_info info;
	ly_status rc;

	if (in->spiffe_id == NULL || (rc = ly_spiffe_id_parse_str(in->spiffe_id, &out->id, err)) != LY_OK) {
		rc = in->spiffe_id == NULL ? ly_error_set(err, LY_E_INVALID, "no spiffe_id") : rc;
		return ly_error_wrap(err, rc, "spiffe_id");
	}
	const char *hint = in->hint != NULL ? in->hint : "";
	if (strlen(hint) > LY_ENTRY_HINT_MAX)
		return ly_error_set(err, LY_E_LIMIT, "hint longer than %d bytes", LY_ENTRY_HINT_MAX);
	if ((out->hint = strdup(hint)) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	if (in->x509_svid.len == 0)
		return ly_error_set(err, LY_E_INVALID, "x509_svid: empty");
	if ((rc = ly_der_parse_chain(in->x509_svid.data, in->x509_svid.len, &chain, err)) != LY_OK)
		return ly_error_wrap(err, rc, "x509_svid");
	out->leaf = sk_X509_shift(chain);
	out->intermediates = chain;
	if ((rc = ly_key_from_pkcs8_der(in->x509_svid_key.data, in->x509_svid_key.len, &out->key, err)) != LY_OK)
		return ly_error_wrap(err, rc, "x509_svid_key");

	/* The bundle of the SVID's trust domain: one per trust domain in a response. */
	struct wl_bundle *b = find_bundle(ctx, out->id.trust_domain);
	if (b == NULL) {
		LY_TRY(add_bundle(ctx, out->id.trust_domain, in->bundle.data, in->bundle.len, err));
		b = &ctx->bundles[ctx->n_bundles - 1];
	} else if (b->der.len != in->bundle.len || memcmp(b->der.data, in->bundle.data, b->der.len) != 0) {
		return ly_error_set(err, LY_E_INVALID, "bundle: differs from another SVID's bundle for %s",
		    out->id.trust_domain);
	}
	LY_TRY(check_certs_td(out->intermediates, out->id.trust_domain, "x509_svid: intermediate", err));
	if ((rc = ly_x509svid_verify_x509(out->leaf, out->intermediates, b->store, out->id.trust_domain, now, out->key,
	    &info, err)) != LY_OK)
		return rc;
	if (!ly_spiffe_id_equal(&info.id, &out->id))
		return ly_error_set(err, LY_E_INVALID, "spiffe_id %s does not match the certificate's %s", out->id.id,
		    info.id.id);
	out->not_after = info.not_after;
	return LY_OK;
}

static void
wipe_keys(X509SVIDResponse *r)
{
	for (size_t i = 0; i < r->n_svids; i++) {
		if (r->svids[i] != NULL && r->svids[i]->x509_svid_key.data != NULL)
			OPENSSL_cleanse(r->svids[i]->x509_svid_key.data, r->svids[i]->x509_svid_key.len);
	}
}

/* The repeated fields of X509SVIDResponse (workload.proto), each bounded on the wire. */
static const struct {
	uint32_t field;
	size_t max;
	const char *what;
} counted[] = {
	{ 1, LY_WL_SVIDS_MAX, "X509SVIDResponse: SVIDs" },
	{ 2, LY_BUNDLE_SET_MAX, "X509SVIDResponse: CRLs" },
	{ 3, LY_BUNDLE_SET_MAX, "X509SVIDResponse: federated bundles" },
};

ly_status
wl_x509_response_count(const uint8_t *msg, size_t len, struct ly_error *err)
{
	for (size_t i = 0; i < sizeof(counted) / sizeof(counted[0]); i++) {
		size_t n = 0;
		LY_TRY(ly_pb_count_field(msg, len, counted[i].field, counted[i].max, counted[i].what, &n, err));
	}
	return LY_OK;
}

ly_status
wl_x509_context_parse(const uint8_t *msg, size_t len, time_t now, lanyard_x509_context **out, struct ly_error *err)
{
	X509SVIDResponse *r = NULL;
	lanyard_x509_context *ctx = NULL;
	ly_status rc;

	*out = NULL;
	if (len > LY_WL_RESPONSE_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "X509SVIDResponse of %zu bytes (at most %d)", len, LY_WL_RESPONSE_MAX);
		goto out;
	}
	if ((rc = wl_x509_response_count(msg, len, err)) != LY_OK)
		goto out;
	if ((r = x509_svidresponse__unpack(NULL, len, msg)) == NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: malformed protobuf");
		goto out;
	}
	if (r->n_svids == 0) {
		rc = ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: no SVID");
		goto out;
	}
	if (r->n_svids > LY_WL_SVIDS_MAX || r->n_federated_bundles > LY_BUNDLE_SET_MAX) { /* counted above: a guard */
		rc = ly_error_set(err, LY_E_LIMIT, "X509SVIDResponse: %zu SVIDs and %zu federated bundles (at most %d and %d)",
		    r->n_svids, r->n_federated_bundles, LY_WL_SVIDS_MAX, LY_BUNDLE_SET_MAX);
		goto out;
	}
	if ((ctx = calloc(1, sizeof(*ctx))) == NULL || (ctx->svids = calloc(r->n_svids, sizeof(*ctx->svids))) == NULL ||
	    (ctx->bundles = calloc(r->n_svids + r->n_federated_bundles, sizeof(*ctx->bundles))) == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "X509SVIDResponse: out of memory");
		goto out;
	}
	atomic_init(&ctx->refs, 1);
	for (size_t i = 0; i < r->n_svids; i++) {
		ctx->n_svids = i + 1;
		if ((rc = parse_svid(ctx, r->svids[i], now, &ctx->svids[i], err)) != LY_OK) {
			(void)ly_error_wrap(err, rc, "X509SVIDResponse: SVID %zu", i);
			goto out;
		}
		for (size_t j = 0; j < i; j++) {
			if (ctx->svids[i].hint[0] != '\0' && strcmp(ctx->svids[i].hint, ctx->svids[j].hint) == 0) {
				rc = ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: SVIDs %zu and %zu have the same hint", j, i);
				goto out;
			}
		}
	}
	for (size_t i = 0; i < r->n_federated_bundles; i++) {
		const X509SVIDResponse__FederatedBundlesEntry *fb = r->federated_bundles[i];
		struct ly_spiffe_id tdid;
		if (fb->key == NULL || (rc = ly_spiffe_id_parse_str(fb->key, &tdid, err)) != LY_OK ||
		    !ly_spiffe_id_is_trust_domain_id(&tdid)) {
			rc = ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: federated bundle %zu: key is not a trust domain ID",
			    i);
			goto out;
		}
		if (find_bundle(ctx, tdid.trust_domain) != NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "X509SVIDResponse: federated bundle for %s: trust domain given twice",
			    tdid.trust_domain);
			goto out;
		}
		if ((rc = add_bundle(ctx, tdid.trust_domain, fb->value.data, fb->value.len, err)) != LY_OK) {
			(void)ly_error_wrap(err, rc, "X509SVIDResponse: federated");
			goto out;
		}
	}
	*out = ctx;
	ctx = NULL;
	rc = LY_OK;
out:
	if (r != NULL) {
		wipe_keys(r);
		x509_svidresponse__free_unpacked(r, NULL);
	}
	context_destroy(ctx);
	return rc;
}

lanyard_status
lanyard_x509_context_parse(const uint8_t *msg, size_t len, time_t now, lanyard_x509_context **out,
    struct lanyard_error *err)
{
	struct ly_error e;
	ly_status rc = wl_x509_context_parse(msg, len, now, out, &e);
	return wl_export(err, rc, &e, 0);
}

ly_status
wl_x509_context_verify(const lanyard_x509_context *ctx, X509 *leaf, STACK_OF(X509) *intermediates, time_t now,
    struct ly_spiffe_id *id_out, struct ly_error *err)
{
	struct ly_x509svid_info info;
	struct ly_spiffe_id id;
	ly_status rc;

	if ((rc = ly_x509svid_check_leaf(leaf, &id, err)) != LY_OK)
		return ly_error_wrap(err, rc, "peer certificate");
	const struct wl_bundle *b = find_bundle(ctx, id.trust_domain);
	if (b == NULL)
		return ly_error_set(err, LY_E_NOT_FOUND, "peer %s: no bundle for trust domain %s", id.id, id.trust_domain);
	if ((rc = ly_x509svid_verify_x509(leaf, intermediates, b->store, id.trust_domain, now, NULL, &info, err)) !=
	    LY_OK)
		return ly_error_wrap(err, rc, "peer %s", id.id);
	if (id_out != NULL)
		*id_out = info.id;
	return LY_OK;
}

lanyard_status
lanyard_x509_context_verify(const lanyard_x509_context *ctx, X509 *leaf, STACK_OF(X509) *intermediates, time_t now,
    char *id_out, struct lanyard_error *err)
{
	struct ly_spiffe_id id;
	struct ly_error e;
	ly_status rc;

	if (ctx == NULL || leaf == NULL)
		rc = ly_error_set(&e, LY_E_INVALID, "verify: NULL argument");
	else
		rc = wl_x509_context_verify(ctx, leaf, intermediates, now, &id, &e);
	if (rc == LY_OK && id_out != NULL)
		memcpy(id_out, id.id, strlen(id.id) + 1);
	return wl_export(err, rc, &e, 0);
}

/* ---- getters ---- */

size_t
lanyard_x509_context_svid_count(const lanyard_x509_context *ctx)
{
	return ctx->n_svids;
}

const lanyard_x509_svid *
lanyard_x509_context_svid(const lanyard_x509_context *ctx, size_t i)
{
	return i < ctx->n_svids ? &ctx->svids[i] : NULL;
}

const lanyard_x509_svid *
lanyard_x509_context_svid_by_hint(const lanyard_x509_context *ctx, const char *hint)
{
	for (size_t i = 0; hint != NULL && i < ctx->n_svids; i++) {
		if (strcmp(ctx->svids[i].hint, hint) == 0)
			return &ctx->svids[i];
	}
	return NULL;
}

const char *
lanyard_x509_svid_id(const lanyard_x509_svid *s)
{
	return s->id.id;
}

const char *
lanyard_x509_svid_hint(const lanyard_x509_svid *s)
{
	return s->hint;
}

X509 *
lanyard_x509_svid_leaf(const lanyard_x509_svid *s)
{
	return s->leaf;
}

STACK_OF(X509) *
lanyard_x509_svid_intermediates(const lanyard_x509_svid *s)
{
	return s->intermediates;
}

EVP_PKEY *
lanyard_x509_svid_key(const lanyard_x509_svid *s)
{
	return s->key;
}

time_t
lanyard_x509_svid_not_after(const lanyard_x509_svid *s)
{
	return s->not_after;
}

size_t
lanyard_x509_context_bundle_count(const lanyard_x509_context *ctx)
{
	return ctx->n_bundles;
}

const char *
lanyard_x509_context_bundle_td(const lanyard_x509_context *ctx, size_t i)
{
	return i < ctx->n_bundles ? ctx->bundles[i].td : NULL;
}

STACK_OF(X509) *
lanyard_x509_context_bundle_certs(const lanyard_x509_context *ctx, size_t i)
{
	return i < ctx->n_bundles ? ctx->bundles[i].certs : NULL;
}

X509_STORE *
lanyard_x509_context_trust_store(const lanyard_x509_context *ctx, const char *td)
{
	char name[LY_TRUST_DOMAIN_MAX + 1];

	if (td == NULL || ly_trust_domain_parse(td, true, name, NULL) != LY_OK)
		return NULL;
	const struct wl_bundle *b = find_bundle(ctx, name);
	return b != NULL ? b->store : NULL;
}
