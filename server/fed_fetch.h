/*
 * fed_fetch.h: the server's bundle endpoint client (SPIFFE_Federation.md
 * §4, §5): for each federation relationship, fetch the other trust
 * domain's bundle over HTTPS on its refresh hint, check it, and store it.
 *
 * Relationships: the static ones from the config (federates_with) and the
 * dynamic ones from the datastore (`federation create`, read through
 * ops->list at start, every LY_FED_SYNC_MS and on ly_fed_fetcher_sync); a
 * static relationship wins over a dynamic one of the same trust domain
 * (SPIRE's rule). A new relationship is fetched at once.
 *
 * Authentication of the endpoint:
 *   https_spiffe: the chain the endpoint presents must verify against the
 *     X.509 authorities of the bundle we hold for endpoint_spiffe_id's trust
 *     domain (bootstrapped by the operator: `bundle set`, or
 *     `federation create -trustDomainBundlePath`; later the last fetched
 *     one: §5.2.1 "trust the latest"), and its leaf be an X.509-SVID with
 *     exactly endpoint_spiffe_id. Without a bundle: refused (no_trust_bundle).
 *   https_web: the Web PKI: the anchors of cfg->web_ca_file, and the URL's
 *     host (name or IP) in the certificate.
 *   Nothing is sent before the peer is authenticated.
 *
 * What is kept: a fetched bundle is stored (ops->store) only when it passes
 * ly_fed_check_response and differs from the one held; on any failure
 * (down, timeout, TLS, HTTP, oversized, garbage, another domain's bundle,
 * sequence going back) the bundle held stays, the refusal is reported
 * through ops->refused (every time: the server counts them) and logged at
 * warn the first time that reason occurs in a row for that domain. Each
 * trust domain's bundle is fetched and stored on its own: never merged.
 *
 * Threads: the fetch itself (connect, TLS, request, answer, at most
 * LY_FED_FETCH_TIMEOUT_MS) runs on libuv's thread pool with copies of what
 * it needs, at most LY_FED_FETCH_CONCURRENT_MAX at once (the pool's other
 * threads stay free for k8s_psat); everything else, ops included, on the
 * loop thread.
 *
 * Ownership: ly_fed_fetcher_new copies the static relationships and the CA
 * file name; ly_fed_fetcher_free stops timers and frees once the fetches in
 * flight return (run the loop after it).
 */
#ifndef LANYARD_SERVER_FED_FETCH_H
#define LANYARD_SERVER_FED_FETCH_H

#include <uv.h>

#include "lib/bundle.h"
#include "lib/error.h"
#include "server/federation.h"

/* The dynamic relationships are re-read this often. */
#define LY_FED_SYNC_MS 5000

struct ly_fed_ops {
	/* The bundle held for `td`: LY_OK with *out (heap), LY_E_NOT_FOUND when none. */
	ly_status (*load)(void *arg, const char *td, struct ly_bundle **out, struct ly_error *err);
	/* Stores `b`, the new bundle of its trust domain (replacing the one held). */
	ly_status (*store)(void *arg, const struct ly_bundle *b, const struct ly_bundle *previous, struct ly_error *err);
	/* The dynamic relationships: *out heap (free()), *n entries. NULL: none. */
	ly_status (*list)(void *arg, struct ly_fed_relationship **out, size_t *n, struct ly_error *err);
	/* A fetch was refused (for metrics); `detail` is the one-line reason. May be NULL. */
	void (*refused)(void *arg, const char *td, enum ly_fed_refusal why, const char *detail);
};

struct ly_fed_fetcher;

ly_status ly_fed_fetcher_new(uv_loop_t *loop, const struct ly_fed_config *cfg, const struct ly_fed_ops *ops, void *arg,
    struct ly_fed_fetcher **out, struct ly_error *err) LY_MUST_CHECK;
/* Re-reads the relationships now (after `federation create|update|delete`). */
void ly_fed_fetcher_sync(struct ly_fed_fetcher *f);
/*
 * `federation refresh`: fetches `td`'s bundle now (a fetch running when it
 * is asked began before, so another follows it). LY_E_NOT_FOUND when there
 * is no such relationship; then `done` never runs. Otherwise `done` (may be
 * NULL) runs exactly once, later, on the loop, when that fetch ended: LY_OK
 * when the bundle was taken (stored, or the same as held), else the
 * refusal's kind and a one-line message; also when the relationship is
 * deleted or the fetcher freed first (LY_E_NOT_FOUND).
 */
typedef void (*ly_fed_refresh_done_cb)(void *arg, ly_status rc, const char *msg);
ly_status ly_fed_fetcher_refresh(struct ly_fed_fetcher *f, const char *td, ly_fed_refresh_done_cb done, void *done_arg,
    struct ly_error *err) LY_MUST_CHECK;
/*
 * The bundle of `td` was stored by someone (`bundle set`, `federation
 * create -trustDomainBundlePath`): an https_spiffe relationship that waited
 * for it (no_trust_bundle) is fetched now rather than at its next turn.
 */
void ly_fed_fetcher_trust_changed(struct ly_fed_fetcher *f, const char *td);
/* Relationships known (static + dynamic, after the static-wins rule). */
size_t ly_fed_fetcher_count(const struct ly_fed_fetcher *f);
void ly_fed_fetcher_free(struct ly_fed_fetcher *f);

/*
 * The blocking fetch, for the thread pool and for tests: GET `url` under
 * `profile`, authenticating the peer as described above (`anchors_der`:
 * concatenated DER CA certificates, for https_spiffe; `ca_file` for
 * https_web), reading at most LY_FED_RESPONSE_MAX + 1 bytes of answer
 * into `resp` before `timeout_ms` ends. On failure *why says which kind.
 */
ly_status ly_fed_fetch_blocking(const char *url, enum ly_fed_profile profile, const struct ly_spiffe_id *endpoint_id,
    const uint8_t *anchors_der, size_t anchors_len, const char *ca_file, uint64_t timeout_ms, struct ly_buf *resp,
    enum ly_fed_refusal *why, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SERVER_FED_FETCH_H */
