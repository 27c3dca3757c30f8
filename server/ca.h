/*
 * ca.h: the server's certificate authority: X.509 authorities (a root and
 * a signing CA under it), JWT signing keys, their rotation and
 * persistence, X.509-SVID issuance from CSRs and JWT-SVID minting.
 *
 * Authorities ("slots"):
 *  - An X.509 slot holds a signing CA (an intermediate: cA true, pathLen 0,
 *    keyUsage keyCertSign and cRLSign, URI SAN spiffe://<td>, X509-SVID
 *    §3.2, §4.1, §4.3) and, by default, the self-signed root it was
 *    issued under (cA true, keyCertSign and cRLSign, URI SAN
 *    spiffe://<td>), made together with it. With an upstream CA
 *    (upstream_cert_path + upstream_key_path) the signing CA is issued by
 *    the upstream certificate instead; the upstream root is fixed and only
 *    the signing CA rotates.
 *  - A JWT slot holds a signing key and its `kid` (32 random base64url
 *    characters, JWT-SVID §2.2).
 * The trust bundle (ly_ca_bundle) is the set of roots of every slot that
 * has not expired (old, current and next), plus the upstream root, plus
 * the public key of every JWT slot that has not expired. It is rebuilt
 * on every change, with spiffe_sequence raised by one (bundle standard
 * §4.1.1; kept across restarts) and spiffe_refresh_hint set to
 * min(CA TTL / 6, propagation delay): a consumer that polls at the hint
 * sees a successor before it signs anything.
 *
 * Rotation (ly_ca_tick), the same rule for both kinds of slot:
 *  - at 50% of the active slot's lifetime, a successor is made (new keys,
 *    new root when self-signed) and published in the bundle at once
 *    (changed = true), with activate_at = now + propagation delay;
 *  - from activate_at on, the successor signs; the slot it replaces is
 *    retired: its private keys are wiped from memory and from its file,
 *    its root (or JWT public key) stays in the bundle until it expires, so
 *    that what it signed remains verifiable; then it is dropped
 *    (changed = true);
 *  - when nothing valid is left (first start, or a restart after the CA
 *    was down longer than its TTL), a new slot is made and used at once:
 *    there is nothing that could have been published earlier.
 * Every decision is a function of the slots' stored times and `now`, so a
 * restart resumes exactly where the previous process was. ly_ca_tick must
 * be called at ly_ca_next_event() (or later; calling it early is harmless).
 *
 * Issuance (X509-SVID standard, and SPEC §1 "X.509 leaf"):
 *  - the CSR (PKCS#10 DER, at most LY_CSR_DER_MAX bytes, nothing after
 *    it) is parsed strictly, its key must be EC P-256, P-384 or P-521
 *    (named curve, uncompressed point) or RSA of 2048..LY_RSA_BITS_MAX
 *    bits, its signature (ECDSA or RSA PKCS#1 v1.5 with SHA-256/384/512)
 *    must verify, and its SAN must hold exactly one URI, byte for byte
 *    the expected SPIFFE ID (X509-SVID §2). The CSR's subject, its DNS
 *    SANs and its other extensions are ignored: the caller decides the
 *    DNS names (from the registration entry).
 *  - the leaf: serial of 128 random bits; notBefore = now - 10 s (clock
 *    skew); notAfter = min(now + TTL, signing CA notAfter): an SVID never
 *    outlives its signing CA; the requester's key; a URI SAN with the ID,
 *    then the DNS SANs; the first DNS name (if at most 64 bytes) also as
 *    subject CN, else an empty subject and a critical SAN (X509-SVID
 *    §3.1); basicConstraints cA false, critical (§4.1); keyUsage critical,
 *    digitalSignature, plus keyEncipherment for RSA keys (§4.3);
 *    extendedKeyUsage serverAuth and clientAuth (§4.4); subject and
 *    authority key identifiers (RFC 5280 §4.2.1.1, §4.2.1.2).
 *  - the chain returned: leaf, signing CA, then the upstream intermediates
 *    (never the root), DER concatenated (the Workload API's x509_svid).
 *  - the caller has already decided that the requester may hold the ID.
 *
 * Cost (see NOTES-openssl.md; bench/issuance.c measures it): the CSR is
 * parsed by hand, not by d2i_X509_REQ; its EC key is imported by
 * duplicating a per-curve template key and setting the point (~8 us, where
 * EVP_PKEY_fromdata costs ~22 us and d2i ~200 us); the leaf is written as
 * DER directly around the CSR's own SubjectPublicKeyInfo bytes, with the
 * constant extensions encoded once per signing CA, hashed with digests
 * fetched once and signed with a signing context initialised once per
 * signing CA (EVP_PKEY_sign on the digest: no context copy per SVID).
 * What remains is one ECDSA verify and one sign: ~83% of the floor that
 * `openssl speed` gives for them (bench/run-issuance.sh).
 *
 * Persistence: <data_dir>/ca/ (0700) holds one file per slot,
 * "x509-<16 hex>.slot" or "jwt-<16 hex>.slot" (0600), and
 * "bundle-sequence". Files are written atomically (a temporary file in the
 * same directory, fsync, rename, fsync of the directory) and a slot file
 * is only ever replaced by its retired form or deleted, so a crash at any
 * point leaves a consistent state. The directory is locked (flock) while a
 * struct ly_ca holds it: a second server on the same data dir is refused.
 * Files not 0600 or not owned by us, unknown versions and a trust domain
 * other than the configured one are refused at open.
 *
 * Secrets: private keys are held as EVP_PKEYs (freed with EVP_PKEY_free,
 * which wipes OpenSSL's copy); their encodings are only ever in buffers
 * wiped before they are freed; nothing about a key but its kid or its
 * certificate's serial is logged.
 *
 * Ownership: ly_ca_open returns a heap object freed with ly_ca_free.
 * ly_ca_bundle returns a bundle owned by the CA, valid until the next
 * ly_ca_tick or ly_ca_free (clone it to keep it). Chains are returned in
 * caller-owned struct ly_buf (empty on entry; ly_buf_free); JWT-SVIDs as
 * malloc'd strings freed with ly_free_secret_str (a bearer token).
 * Borrowed arguments are not kept.
 *
 * Thread-safety: none. A struct ly_ca is used by one thread at a time (the
 * server's loop thread, or under the caller's lock).
 */
#ifndef LANYARD_SERVER_CA_H
#define LANYARD_SERVER_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/error.h"
#include "lib/keys.h"
#include "lib/spiffeid.h"

/* SPEC §7 defaults, in seconds. */
#define LY_CA_TTL_DEFAULT (24 * 60 * 60)
#define LY_CA_X509_SVID_TTL_DEFAULT (60 * 60)
#define LY_CA_JWT_SVID_TTL_DEFAULT (5 * 60)
/* The propagation delay by default: min(this, CA TTL / 10). */
#define LY_CA_PROPAGATION_DEFAULT (10 * 60)
/* CA TTLs accepted: one minute to ten years. */
#define LY_CA_TTL_MIN 60
#define LY_CA_TTL_MAX ((int64_t)10 * 366 * 24 * 60 * 60)
/*
 * How far notBefore is set in the past, for clocks that disagree between
 * the server, its agents and their workloads (NTP keeps them within
 * seconds; a VM resumed or a node without NTP can be minutes off). CA
 * certificates (the root, the signing CAs, which live a day or more) by
 * LY_CA_BACKDATE. An SVID by a quarter of its TTL, at least
 * LY_SVID_BACKDATE_MIN and at most LY_SVID_BACKDATE_MAX: its renewal at
 * 50% of its validity comes that much before issuance + TTL/2, so the
 * backdate stays a fraction of the TTL. With the default 1 h TTL an agent
 * or workload may be 5 minutes behind the server (docs/security.md).
 */
#define LY_CA_BACKDATE 600
#define LY_SVID_BACKDATE_MIN 10
#define LY_SVID_BACKDATE_MAX 300
#define LY_SVID_BACKDATE(ttl)                                                                                          \
	((ttl) / 4 < LY_SVID_BACKDATE_MIN ? LY_SVID_BACKDATE_MIN                                                   \
	    : (ttl) / 4 > LY_SVID_BACKDATE_MAX ? LY_SVID_BACKDATE_MAX                                              \
	    : (ttl) / 4)
/* A JWT authority's kid: this many base64url characters (from 24 random bytes). */
#define LY_CA_KID_LEN 32

struct ly_ca;

/*
 * What ly_ca_open needs. Zero means "the default" for every number and for
 * key_type (LY_KEY_EC_P256). Strings are borrowed during ly_ca_open only.
 */
struct ly_ca_config {
	const char *trust_domain;   /* "example.org" or "spiffe://example.org" */
	const char *data_dir;       /* the CA uses <data_dir>/ca (both made 0700 when absent) */
	enum ly_key_type key_type;  /* of the CA and JWT keys (SPEC §7) */
	int64_t ca_ttl;             /* LY_CA_TTL_MIN..LY_CA_TTL_MAX */
	int64_t x509_svid_ttl;      /* 1..LY_X509_SVID_TTL_MAX: default for ttl_or_0 */
	int64_t jwt_svid_ttl;       /* 1..LY_JWT_SVID_TTL_MAX */
	/* How long a successor is in the bundle before it signs; less than ca_ttl / 2. */
	int64_t propagation_delay;
	/*
	 * An upstream CA: a PEM file of certificates, first the one whose key
	 * is in upstream_key_path (a CA with keyCertSign), then the
	 * certificates up to and including a self-signed root (the trust
	 * anchor put in the bundle). Both or neither.
	 */
	const char *upstream_cert_path;
	const char *upstream_key_path;
};

/*
 * Opens (or creates) the CA in cfg->data_dir at time `now`: loads its
 * slots, checks them (keys match certificates, signatures, trust domain),
 * and rotates whatever expired while the server was down (as ly_ca_tick).
 * *out: free with ly_ca_free.
 */
ly_status ly_ca_open(const struct ly_ca_config *cfg, time_t now, struct ly_ca **out, struct ly_error *err)
    LY_MUST_CHECK;

/* Wipes every key, releases the directory lock and frees. NULL is a no-op. */
void ly_ca_free(struct ly_ca *ca);

/*
 * Applies the rotation rule at `now` (see the top of this file). *changed
 * (may be NULL) tells whether the bundle changed (its sequence was
 * raised): the server then pushes ly_ca_bundle() to its agents. On
 * failure (a file cannot be written, the upstream CA expired) nothing is
 * half done: call again later.
 */
ly_status ly_ca_tick(struct ly_ca *ca, time_t now, bool *changed, struct ly_error *err) LY_MUST_CHECK;

/*
 * Several servers on one database (bundle_shared.h): the server says that
 * every authority the CA made up to `upto` is in the shared bundle. From
 * the first call on, a successor made after the last `upto` given does not
 * sign, even once its activation time has come, until a later call covers
 * it (unless nothing else is valid any more: then it signs, with the
 * warning of ca.h's "used before its activation time"), so that no server's
 * agents meet an SVID of an authority they were never given.
 * ly_ca_next_event leaves such a successor's activation out (the server
 * retries its publish on its own timer). Without a call (one server):
 * nothing is held.
 */
void ly_ca_set_published(struct ly_ca *ca, time_t upto);

/* The last `upto` given to ly_ca_set_published (0: never called). */
time_t ly_ca_published_upto(const struct ly_ca *ca);

/* When ly_ca_tick has something to do next (a successor, an activation, an expiry). */
time_t ly_ca_next_event(const struct ly_ca *ca);

/* The trust bundle: X.509 roots, JWT keys, sequence, refresh hint. Borrowed (see above). */
const struct ly_bundle *ly_ca_bundle(const struct ly_ca *ca);

/*
 * The expiry of the JWT authority `kid` of the bundle (its slot's
 * notAfter), 0 when the CA holds no such key: what the shared bundle of
 * several servers publishes with it (bundle_shared.h).
 */
time_t ly_ca_jwt_not_after(const struct ly_ca *ca, const char *kid);

/* The trust domain, bare ("example.org"). Borrowed. */
const char *ly_ca_trust_domain(const struct ly_ca *ca);
/* notAfter of the active X.509 signing CA (0 when none is active): the metrics' expiry gauge. */
time_t ly_ca_signing_not_after(const struct ly_ca *ca);

/*
 * Signs an X.509-SVID for `expected_id` (in the CA's trust domain, with a
 * path) from a DER CSR (the rules at the top of this file). `dns` holds
 * `ndns` DNS names (each 1..LY_DNS_NAME_MAX bytes of [A-Za-z0-9.-_*], at
 * most LY_DNS_NAMES_MAX), may be NULL when ndns is 0. `ttl_or_0`: seconds,
 * 0 for the configured default, at most LY_X509_SVID_TTL_MAX (LY_E_LIMIT
 * above, LY_E_INVALID below 0). `chain_out` must be empty: it receives
 * leaf + signing CA [+ upstream intermediates]; `expires_at` (may be NULL)
 * the leaf's notAfter.
 * Refused: LY_E_INVALID (malformed CSR, trailing bytes, SAN not exactly
 * the ID), LY_E_LIMIT, LY_E_UNSUPPORTED (weak or unknown key or
 * signature algorithm), LY_E_UNTRUSTED (CSR signature), LY_E_EXPIRED (no
 * valid signing CA at `now`: ly_ca_tick was not called).
 */
ly_status ly_ca_sign_x509_svid(struct ly_ca *ca, const uint8_t *csr_der, size_t csr_len,
    const struct ly_spiffe_id *expected_id, const char *const *dns, size_t ndns, int32_t ttl_or_0, time_t now,
    struct ly_buf *chain_out, time_t *expires_at, struct ly_error *err) LY_MUST_CHECK;

/*
 * The same for an agent's own SVID (node attestation, renewal): no DNS
 * names; the default TTL is the X.509-SVID default.
 */
ly_status ly_ca_sign_agent_svid(struct ly_ca *ca, const uint8_t *csr_der, size_t csr_len,
    const struct ly_spiffe_id *agent_id, int32_t ttl_or_0, time_t now, struct ly_buf *chain_out,
    time_t *expires_at, struct ly_error *err) LY_MUST_CHECK;

/* One request of a batch: the arguments of ly_ca_sign_x509_svid, borrowed. */
struct ly_ca_sign_req {
	const uint8_t *csr_der;
	size_t csr_len;
	const struct ly_spiffe_id *id;
	const char *const *dns;
	size_t ndns;
	int32_t ttl_or_0;
};

/* One result: status and err as ly_ca_sign_x509_svid would give them. */
struct ly_ca_sign_res {
	ly_status status;
	struct ly_error err;
	struct ly_buf chain;   /* empty unless status is LY_OK */
	time_t expires_at;
};

/*
 * Signs `n` requests (at most LY_CA_BATCH_MAX). The contexts are prepared
 * once per signing CA, not per call, so the batch saves the caller's
 * per-request work (one RPC for many CSRs), not crypto setup. Each
 * request succeeds or fails on its own
 * (res[i].status); the function itself fails only when no request can be
 * signed (no valid signing CA, n over the cap, out of memory before the
 * first one), and then every res[i] carries that status too. `res` holds
 * `n` entries, overwritten; release them with ly_ca_sign_res_cleanup.
 */
ly_status ly_ca_sign_batch(struct ly_ca *ca, const struct ly_ca_sign_req *reqs, size_t n, time_t now,
    struct ly_ca_sign_res *res, struct ly_error *err) LY_MUST_CHECK;

/* Frees the chains of `n` results (they hold no secret). */
void ly_ca_sign_res_cleanup(struct ly_ca_sign_res *res, size_t n);

/*
 * Mints a JWT-SVID for `sub` (in the CA's trust domain, with a path) with
 * the active JWT key: header {alg, kid, typ}, claims {sub, aud, exp, iat}
 * (JWT-SVID §2, §3). `aud`: 1..LY_JWT_AUDIENCES_MAX non-empty strings.
 * exp = min(now + TTL, the key's expiry); `ttl_or_0` as for X.509, capped
 * by LY_JWT_SVID_TTL_MAX. *token: free with ly_free_secret_str; *exp (may
 * be NULL) gets exp.
 */
ly_status ly_ca_mint_jwt_svid(struct ly_ca *ca, const struct ly_spiffe_id *sub, const char *const *aud, size_t naud,
    int32_t ttl_or_0, time_t now, char **token, time_t *exp, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SERVER_CA_H */
