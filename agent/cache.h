/*
 * cache.h: the agent's registration entries and the SVIDs it holds for
 * them (SPEC §1, §3, §4; DESIGN "Sync", "Serving").
 *
 * What it holds:
 *  - the entries the server authorized for this agent (struct ly_entry),
 *    keyed by entry_id, with the store revision they bring the agent to;
 *  - per workload entry, at most one current X.509-SVID, kept as DER only
 *    (never as parsed OpenSSL objects, ~8 KB each, NOTES-openssl.md): the
 *    leaf, the intermediates (interned: SVIDs issued by one signing CA
 *    share one copy), the PKCS#8 private key (wiped whenever it is
 *    replaced or dropped), the validity window and the renewal time (drawn
 *    once by rotation.h). Measured (test_agent_cache): ~0.7 KB per P-256
 *    SVID, ~1.5 KB with its entry and indexes: 10,000 in ~14 MiB;
 *  - the trust bundles (ours and federated ones);
 *  - cached JWT-SVIDs keyed by (SPIFFE ID, audience set), reused until half
 *    of their lifetime has passed.
 * Nothing here verifies: the caller runs verify.h before ly_cache_set_svid
 * and ly_cache_jwt_put (SPEC §4: nothing unverified enters the cache).
 *
 * Entitlement (SPEC §1): the server sends only entries this agent is
 * authorized for (parent_id is the agent or one of its node aliases), so a
 * workload is entitled to an entry when its attested selectors include all
 * of the entry's (ly_selectors_match). Node entries (entry->node) describe
 * agents, never workloads: they are kept but never matched, and get no SVID.
 *
 * Order of identities (SPEC §3: "the first SVID is the default identity"):
 * by entry created_at ascending (the oldest entry is the default), then by
 * entry_id byte-wise. SPIRE sorts by entry_id alone; entry IDs are random
 * UUIDs, so there creating an entry can change a workload's default
 * identity, while here a new entry always comes after the existing ones.
 * Stable across calls and restarts (both keys come from the server).
 *
 * Hints (SPEC §3: unique in a response): when two identities of one
 * response carry the same non-empty hint, the first in the order above is
 * kept and the later ones are left out (and counted): a client that picks
 * an identity by hint always gets the same one.
 *
 * Changes: every call that mutates the cache may fill a struct
 * ly_cache_changes: one record per entry affected (created, updated,
 * deleted, SVID set, SVID dropped), with the entry's selectors from before
 * the change when it was deleted or its selectors changed, plus whether the
 * bundles changed. ly_cache_changes_affect() then tells, for one open
 * Workload API stream's selectors, whether its response may differ, so the
 * agent pushes to exactly the affected streams. The cache's generation
 * counter increases by one for each call that changed anything.
 *
 * Ownership and lifetimes:
 *  - struct ly_cache: ly_cache_new / ly_cache_free (wipes every key).
 *  - struct ly_cache_item views and everything they point to (entry, DER,
 *    key bytes, tokens) are borrowed from the cache: valid until the next
 *    call that mutates the cache. Never free them; never keep them.
 *  - struct ly_cache_identities and struct ly_cache_changes are
 *    caller-owned (_init/_cleanup); they own their arrays, not the items.
 *  - Entries given to ly_cache_apply are moved into the cache (see there).
 *    SVID chain and key buffers given to ly_cache_set_svid are moved in.
 * Threads: none inside. The agent's loop thread owns the cache; nothing
 * else may touch it (DESIGN "Threads and ownership"). *
 * Implemented in cache.c and its parts behind cache_internal.h (entries,
 * X.509-SVIDs, queries, JWT-SVIDs over one layer of records).
 */
#ifndef LANYARD_AGENT_CACHE_H
#define LANYARD_AGENT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/error.h"

struct ly_cache;

/* A borrowed view of one cached entry and its current X.509-SVID. */
struct ly_cache_item {
	const struct ly_entry *entry; /* entry_id, spiffe_id, hint, selectors... */
	bool has_svid;
	/*
	 * The entry changed in a way its SVID does not show yet (DNS names or
	 * X.509 TTL): still valid and served, but to be re-issued soon.
	 */
	bool stale;
	struct ly_der_view leaf;          /* the leaf's DER */
	struct ly_der_view intermediates; /* DER certificates after the leaf; may be empty */
	struct ly_der_view key;           /* PKCS#8 DER: a secret, never log or copy it */
	int64_t not_before;               /* Unix seconds */
	int64_t not_after;
	int64_t renew_at_ms;              /* Unix milliseconds (rotation.h) */
};

/* ---- the cache ---- */

/*
 * A new empty cache for trust domain `trust_domain` (bare name): entries
 * are validated against it (ly_entry_validate).
 */
ly_status ly_cache_new(const char *trust_domain, struct ly_cache **out, struct ly_error *err) LY_MUST_CHECK;
/* Frees the cache, wiping every private key and token. NULL is allowed. */
void ly_cache_free(struct ly_cache *c);

const char *ly_cache_trust_domain(const struct ly_cache *c);
/* Increases by one for every call that changed something; starts at 0. */
uint64_t ly_cache_generation(const struct ly_cache *c);
/* The store revision of the last update applied (0 before any). */
int64_t ly_cache_revision(const struct ly_cache *c);
/* Entries held (workload and node entries). */
size_t ly_cache_count(const struct ly_cache *c);
/* Entries holding an X.509-SVID. */
size_t ly_cache_svid_count(const struct ly_cache *c);

/*
 * Entry `i` (< ly_cache_count) into `out`, in no particular order (the
 * order changes when entries are added or removed): for iterating.
 */
void ly_cache_item_at(const struct ly_cache *c, size_t i, struct ly_cache_item *out);
/* The entry with this ID into `out`; false when absent. */
bool ly_cache_get(const struct ly_cache *c, const char *entry_id, struct ly_cache_item *out);

/* ---- change sets ---- */

enum ly_cache_change_kind {
	LY_CACHE_CREATED,      /* a new entry */
	LY_CACHE_UPDATED,      /* an entry's content changed (not only its revision) */
	LY_CACHE_DELETED,      /* an entry is gone, with its SVID and JWT-SVIDs */
	LY_CACHE_SVID_SET,     /* an entry got a new X.509-SVID */
	LY_CACHE_SVID_DROPPED, /* an entry lost its X.509-SVID (expired, untrusted, ID changed) */
};

struct ly_cache_change {
	enum ly_cache_change_kind kind;
	char *entry_id;  /* owned */
	char *spiffe_id; /* owned: the entry's SPIFFE ID after the change (before it, for DELETED) */
	/*
	 * The entry needs an X.509-SVID issued now: it was created, its SPIFFE
	 * ID changed, it turned from a node entry into a workload entry, its
	 * SVID became stale or was dropped. Never for node entries, and not for
	 * other updates (an issuance may already be under way).
	 */
	bool needs_svid;
	/* Owned copy of the selectors before the change: for DELETED, and UPDATED when they changed. */
	struct ly_selector *old_selectors;
	size_t n_old_selectors;
};

struct ly_cache_changes {
	struct ly_cache_change *v;
	size_t n, cap;
	bool bundles_changed;
	/*
	 * A change could not be recorded (out of memory): treat every stream
	 * as affected (ly_cache_changes_affect returns true).
	 */
	bool all;
	/* Entries of an update refused because they broke a rule (logged). */
	size_t n_rejected;
	/* The cache generation after the call (unchanged when nothing changed). */
	uint64_t generation;
};

void ly_cache_changes_init(struct ly_cache_changes *cs);
/* Frees every record; leaves `cs` initialized and empty (reusable). */
void ly_cache_changes_cleanup(struct ly_cache_changes *cs);
/* True when `cs` records nothing. */
bool ly_cache_changes_empty(const struct ly_cache_changes *cs);

/*
 * True when the changes may alter the response of a caller with these
 * attested selectors: the bundles changed, or a changed entry matches
 * `have` now (looked up in `c`) or matched it before the change (the
 * recorded old selectors; for deleted entries too). Call it right after
 * the mutating call, before the next one.
 */
bool ly_cache_changes_affect(const struct ly_cache *c, const struct ly_cache_changes *cs,
    const struct ly_selector *have, size_t m);

/* ---- entries ---- */

/* One update from the server (agent.proto EntriesUpdate). */
struct ly_cache_update {
	int64_t revision; /* the store revision this update brings the agent to */
	/* True: `entries` is the whole authorized set; any other entry is deleted. */
	bool snapshot;
	struct ly_entry **entries; /* created or updated entries (see ly_cache_apply) */
	size_t n_entries;
	const char *const *deleted_ids; /* entry IDs gone (ignored for a snapshot) */
	size_t n_deleted;
};

/*
 * Applies an update as idempotent upserts and deletions (agent.proto:
 * updates may repeat or be coalesced):
 *  - each entry is validated (ly_entry_validate against the cache's trust
 *    domain, which also puts its selectors in canonical order) and must
 *    have an entry_id; one that fails is left out, logged and counted in
 *    changes->n_rejected (one bad entry does not block the others); in a
 *    snapshot it counts as absent, so an older version of it is deleted;
 *  - in a delta, an entry older than the one held (lower revision) is
 *    ignored (a snapshot is authoritative);
 *  - an entry equal in content to the one held changes nothing;
 *  - an entry whose SPIFFE ID changed, or that became a node entry, loses
 *    its SVID at once (never serve an SVID for another ID); one whose DNS
 *    names or X.509 TTL changed keeps it, marked stale; a JWT-SVID TTL or
 *    SPIFFE ID change drops its cached JWT-SVIDs;
 *  - deleting an entry drops its SVID (key wiped) and JWT-SVIDs at once;
 *    deleting an absent entry is a no-op.
 * Ownership: every entry the cache keeps is moved out of u->entries (its
 * slot set to NULL); entries left in place (rejected, stale, equal,
 * duplicates within the update) stay the caller's, who frees the array and
 * what is left in it either way.
 * More than LY_AGENT_ENTRIES_MAX entries in all: LY_E_LIMIT, nothing
 * applied. LY_E_NOMEM may leave the update half applied (consistent, but
 * stale): resynchronize with a snapshot. `changes` may be NULL.
 */
ly_status ly_cache_apply(struct ly_cache *c, struct ly_cache_update *u, struct ly_cache_changes *changes,
    struct ly_error *err) LY_MUST_CHECK;

/* ---- X.509-SVIDs ---- */

/*
 * Sets the current X.509-SVID of entry `entry_id`, replacing (and wiping)
 * the previous one. `chain` (leaf first, then intermediates, concatenated
 * DER) and `key` (PKCS#8 DER) are moved into the cache on success (left
 * empty); on failure they stay the caller's (wipe the key). The caller has
 * verified the chain for `spiffe_id` with that key (verify.h).
 * Refused: no such entry, or a node entry (LY_E_NOT_FOUND: it was deleted
 * while the SVID was being issued: drop it); `spiffe_id` no longer the
 * entry's (LY_E_INVALID: it changed meanwhile); a chain that ly_der_split
 * refuses; a key empty or over LY_KEY_DER_MAX; not_before >= not_after; a
 * renewal time outside [not_before, not_after] (it comes from
 * ly_rotation_draw).
 */
ly_status ly_cache_set_svid(struct ly_cache *c, const char *entry_id, const char *spiffe_id, struct ly_buf *chain,
    struct ly_buf *key, int64_t not_before, int64_t not_after, int64_t renew_at_ms,
    struct ly_cache_changes *changes, struct ly_error *err) LY_MUST_CHECK;

/*
 * Marks the SVID of `entry_id` stale (to be re-issued soon, still served):
 * for restoring persisted state. False when it has no SVID.
 */
bool ly_cache_mark_stale(struct ly_cache *c, const char *entry_id);

/* Drops the SVID of `entry_id` (key wiped). False when it had none. */
bool ly_cache_drop_svid(struct ly_cache *c, const char *entry_id, struct ly_cache_changes *changes);

/*
 * Drops every SVID with not_after <= now (Unix seconds): a client never
 * sees an expired SVID (SPEC §3). Returns how many were dropped.
 */
size_t ly_cache_expire(struct ly_cache *c, int64_t now, struct ly_cache_changes *changes);
/* The earliest not_after of any SVID held, INT64_MAX when none. */
int64_t ly_cache_next_expiry(const struct ly_cache *c);

/*
 * Drops every SVID for which `keep` returns false (e.g. the chain no longer
 * verifies after a bundle change, verify.h). Returns how many were dropped.
 */
size_t ly_cache_filter_svids(struct ly_cache *c, bool (*keep)(const struct ly_cache_item *item, void *arg),
    void *arg, struct ly_cache_changes *changes);

/* ---- queries ---- */

enum {
	/* Only identities with an X.509-SVID valid at `now` (FetchX509SVID). */
	LY_CACHE_QUERY_X509 = 1 << 0,
	/*
	 * Keep identities whose hint another one already has (still counted in
	 * n_hint_duplicates): for what is not a response's list of identities,
	 * e.g. the federated bundles of every entry of a caller (fedset.h).
	 */
	LY_CACHE_QUERY_ALL_HINTS = 1 << 1,
};

/* The identities of one caller, in default-identity order (see above). */
struct ly_cache_identities {
	struct ly_cache_item *v;
	size_t n, cap;
	/* Workload entries the selectors match, whether or not they made the list. */
	size_t n_entitled;
	/* Left out for a duplicate hint. */
	size_t n_hint_duplicates;
	/* The cache generation the query saw. */
	uint64_t generation;
};

void ly_cache_identities_init(struct ly_cache_identities *ids);
void ly_cache_identities_cleanup(struct ly_cache_identities *ids);

/*
 * The identities a workload with attested selectors `have` (m of them, at
 * most LY_WORKLOAD_SELECTORS_MAX, else LY_E_LIMIT) is entitled to, in
 * order, hints unique. With LY_CACHE_QUERY_X509, only those holding an
 * SVID valid at `now` (not_before <= now < not_after). `out` is reset
 * first. n_entitled == 0 means PERMISSION_DENIED (SPEC §3); entitled but
 * none listed means no SVID is ready yet (UNAVAILABLE).
 */
ly_status ly_cache_query(const struct ly_cache *c, const struct ly_selector *have, size_t m, unsigned flags,
    int64_t now, struct ly_cache_identities *out, struct ly_error *err) LY_MUST_CHECK;

/* ---- bundles ---- */

/*
 * Replaces the bundle set (ours and federated), taking ownership of `set`
 * on success (the old one is freed). Marks changes->bundles_changed and
 * bumps the generation unless the new set equals the old one.
 */
ly_status ly_cache_set_bundles(struct ly_cache *c, struct ly_bundle_set *set, struct ly_cache_changes *changes,
    struct ly_error *err) LY_MUST_CHECK;
/* The bundle set (NULL before the first), borrowed. */
const struct ly_bundle_set *ly_cache_bundles(const struct ly_cache *c);
/* Our trust domain's bundle, borrowed; NULL when none. */
const struct ly_bundle *ly_cache_bundle(const struct ly_cache *c);

/* ---- JWT-SVIDs ---- */

/*
 * The cached JWT-SVID for `spiffe_id` and this audience set (order and
 * duplicates do not matter), when one is held and less than half of its
 * lifetime has passed at `now` (Unix seconds): borrowed, NUL-terminated, a
 * bearer secret (never log it). NULL otherwise.
 */
const char *ly_cache_jwt_get(const struct ly_cache *c, const char *spiffe_id, const char *const *aud, size_t naud,
    int64_t now);

/*
 * Caches a (verified) JWT-SVID minted for entry `entry_id` (it is dropped
 * with that entry), replacing one for the same key. 1..LY_JWT_AUDIENCES_MAX
 * audiences; issued_at < expires_at. At LY_AGENT_JWT_CACHE_MAX tokens, the
 * ones past half their lifetime at `issued_at` go first, then the oldest.
 * `token` is copied (and the copy wiped when dropped).
 */
ly_status ly_cache_jwt_put(struct ly_cache *c, const char *entry_id, const char *spiffe_id, const char *const *aud,
    size_t naud, const char *token, int64_t issued_at, int64_t expires_at, struct ly_error *err) LY_MUST_CHECK;

/* Cached JWT-SVIDs held. */
size_t ly_cache_jwt_count(const struct ly_cache *c);

#endif /* LANYARD_AGENT_CACHE_H */
