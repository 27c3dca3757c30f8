/*
 * fedset.h: which trust bundles one Workload API caller may see (SPEC §3,
 * §8, §9; SPIFFE Workload API §5.2 and §6.2; SPIRE's rule): our own trust
 * domain's bundle, plus the federated bundles of the trust domains its
 * identities' entries federate with (Entry.federates_with), and no other.
 *
 * The agent holds one bundle set (agent/cache.h): ours and every federated
 * bundle the server sent for the entries this agent is authorized for. A
 * caller must not learn of a federation another workload on the node has:
 * ly_fedset_for_caller cuts the caller's view out of that set.
 *
 *   X.509 stream      identities = the SVIDs in the response (per SVID's
 *                     entry; the map is the union);
 *   bundle fetches    identities = every entry the caller is entitled to
 *                     (an entry still waiting for its SVID counts), and
 *                     only for a caller that has one (PERMISSION_DENIED
 *                     before this is asked);
 *   SDS               identities = the caller's SVIDs, as for the stream.
 * The bundle fetches and ValidateJWTSVID query with LY_CACHE_QUERY_ALL_HINTS
 * (cache.h), so an entry left out of an X.509 response for a duplicate hint
 * still counts there; on the X.509 stream only the SVIDs sent count.
 * A trust domain named by an entry but with no bundle held (not yet
 * fetched, or refused) is skipped: it appears once the bundle arrives, and
 * the change pushes open streams then. Names in federates_with may be bare
 * ("b.test") or trust domain IDs ("spiffe://b.test"); our own trust domain
 * among them is ignored (never "federated").
 *
 * Ownership: the set returned is the caller's (ly_bundle_set_free); it
 * holds clones of the bundles (ly_bundle_clone: DER copies, keys shared by
 * reference), so it outlives later changes of the cache. Pure: no I/O, no
 * state; any thread.
 */
#ifndef LANYARD_AGENT_FEDSET_H
#define LANYARD_AGENT_FEDSET_H

#include <stdbool.h>
#include <stddef.h>

#include "agent/cache.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/error.h"

/*
 * True when `entry` federates with trust domain `td` (bare name); names
 * in the entry may be bare or "spiffe://td".
 */
bool ly_fedset_entry_federates(const struct ly_entry *entry, const char *td);

/*
 * True when an entry of `ids` federates with some trust domain: without
 * one, the caller's view is our bundle alone and the callers can share one
 * response (no set need be made).
 */
bool ly_fedset_any(const struct ly_cache_identities *ids);

/*
 * The set a caller with identities `ids` may see: a clone of our own
 * bundle (trust domain `own_td`, when `all` holds it) and of every other
 * bundle of `all` whose trust domain an entry of `ids` federates with.
 * `all` may be NULL (then the set is empty). `*n_federated` (may be NULL)
 * is how many federated bundles went in. LY_E_NOMEM on failure, `*out`
 * then NULL.
 */
ly_status ly_fedset_for_caller(const struct ly_bundle_set *all, const char *own_td,
    const struct ly_cache_identities *ids, struct ly_bundle_set **out, size_t *n_federated, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * Splits `all` in two for a change of the federated bundles: a new set
 * holding a clone of our own bundle (`own_td`, when held) and every bundle
 * of `federated` (taken: the set is consumed, whatever the result; bundles
 * for `own_td` in it are dropped). For sync: the server's
 * GetFederatedBundles answer replaces every federated bundle at once.
 */
ly_status ly_fedset_replace_federated(const struct ly_bundle_set *all, const char *own_td,
    struct ly_bundle_set *federated, struct ly_bundle_set **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * The other way: a new set holding `own` (taken, whatever the result) and
 * a clone of every bundle of `all` for another trust domain. For sync:
 * our own bundle changed, the federated ones stay.
 */
ly_status ly_fedset_replace_own(const struct ly_bundle_set *all, struct ly_bundle *own, struct ly_bundle_set **out,
    struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_AGENT_FEDSET_H */
