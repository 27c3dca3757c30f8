/*
 * authz.h: which registration entries an agent is authorized for (SPEC §1),
 * and so which SPIFFE IDs it may obtain for its workloads. Pure: no I/O,
 * no clock, no global state.
 *
 * The rule (SPIRE's, with one documented limit):
 *  1. The agent's "names" are its own SPIFFE ID, plus the spiffe_id of
 *     every node entry (node = true) whose selectors are all among the
 *     agent's node selectors from attestation (ly_selectors_match: the
 *     subset rule, exact bytes; a node entry with no selector matches
 *     nothing). These are SPIRE's aliases: a node entry names a group of
 *     agents ("every agent of cluster prod") by a SPIFFE ID of its own.
 *     A node entry's own parent_id plays no part (in SPIRE it is the
 *     server), and aliases do not chain: a node entry whose parent_id is
 *     an alias gives no further alias.
 *  2. Level 1: every workload entry (node = false) whose parent_id is one
 *     of the agent's names.
 *  3. Level 2, the transitive case, one level only: every workload entry
 *     whose parent_id is the spiffe_id of a level-1 entry (a workload that
 *     is itself an agent of nested workloads, as SPIRE's nested agents).
 *     Entries parented by level-2 IDs are not included: SPIRE crawls
 *     descendants to any depth; we stop here on purpose, so that one
 *     registration cannot silently hand a whole subtree to every agent.
 * Node entries are never in the authorized set themselves: they define
 * aliases, their selectors are node selectors no workload can match, and
 * an agent never obtains an alias ID as an SVID.
 *
 * An agent may obtain SPIFFE ID X exactly when X is the spiffe_id of an
 * entry in its authorized set; it may use entry E (BatchNewX509SVID,
 * NewJWTSVID) exactly when E is in the set.
 *
 * Cost: ly_authz_index_new sorts the entries once, O(n log n), for a
 * given set of entries (rebuilt when entries change); each
 * ly_authz_authorized is then O(nodes * selectors + k log n), k the size
 * of the answer: many agents are served from one index.
 *
 * Ownership: the index borrows the entries it is built from (they must
 * outlive it and not change); free it with ly_authz_index_free. An
 * authorized set is caller-owned (LY_AUTHZ_SET_INIT, freed with
 * ly_authz_set_cleanup) and points at the index's entries (borrowed,
 * valid as long as those entries). struct ly_authz_agent is borrowed.
 */
#ifndef LANYARD_SERVER_AUTHZ_H
#define LANYARD_SERVER_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/entry.h"
#include "lib/error.h"

/* The agent asking: its SPIFFE ID and its node selectors (may be none). */
struct ly_authz_agent {
	const char *spiffe_id;
	const struct ly_selector *selectors;
	size_t n_selectors;
};

struct ly_authz_index;

/*
 * Builds an index over `n` entries (borrowed). Each entry must have an
 * entry_id, a spiffe_id and a parent_id (LY_E_INVALID otherwise: the
 * datastore never holds such an entry); entry IDs must be unique
 * (LY_E_INVALID). *out: ly_authz_index_free.
 */
ly_status ly_authz_index_new(struct ly_entry *const *entries, size_t n, struct ly_authz_index **out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_authz_index_free(struct ly_authz_index *idx);
/* The number of entries indexed. */
size_t ly_authz_index_count(const struct ly_authz_index *idx);
/* The entry with this ID, or NULL. O(log n). */
const struct ly_entry *ly_authz_index_find(const struct ly_authz_index *idx, const char *entry_id);

/* An authorized set: entries sorted by entry_id (strcmp), each once. */
struct ly_authz_set {
	const struct ly_entry **items;
	size_t n;
};

#define LY_AUTHZ_SET_INIT { NULL, 0 }

/*
 * The entries `agent` is authorized for (the rule at the top), into `out`
 * (which must be LY_AUTHZ_SET_INIT; left so on failure). A NULL or empty
 * agent SPIFFE ID is LY_E_INVALID.
 */
ly_status ly_authz_authorized(const struct ly_authz_index *idx, const struct ly_authz_agent *agent,
    struct ly_authz_set *out, struct ly_error *err) LY_MUST_CHECK;
/* Frees the set's array and leaves it LY_AUTHZ_SET_INIT. NULL is allowed. */
void ly_authz_set_cleanup(struct ly_authz_set *set);

/* The entry of the set with this ID, or NULL (not authorized). O(log n). */
const struct ly_entry *ly_authz_set_find(const struct ly_authz_set *set, const char *entry_id);
/* True when some entry of the set has this spiffe_id: "may this agent obtain X". O(n). */
bool ly_authz_set_has_spiffe_id(const struct ly_authz_set *set, const char *spiffe_id);

/*
 * One-off forms of the two questions, for a single check (they compute
 * the set and drop it): *ok tells the answer; *entry (may be NULL) gets
 * the authorized entry, borrowed from the index.
 */
ly_status ly_authz_may_use_entry(const struct ly_authz_index *idx, const struct ly_authz_agent *agent,
    const char *entry_id, bool *ok, const struct ly_entry **entry, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_authz_may_obtain_id(const struct ly_authz_index *idx, const struct ly_authz_agent *agent,
    const char *spiffe_id, bool *ok, struct ly_error *err) LY_MUST_CHECK;

/* ---- what one watch stream has been sent ---------------------------------- */

/*
 * A watch stream (Agent.WatchEntries) sends an agent its authorized set:
 * a snapshot first, then updates. The stream's transport keeps only the
 * newest message while one is in flight ("latest wins", rpc.h), and does
 * not say which messages went out, so any update but the last may be lost.
 * Every update is therefore built to take the agent from ANY state it may
 * be in (the target of any earlier update) to the current set:
 *  - `touched` is every entry ID that ever differed between two
 *    consecutive targets (added, removed, or its revision changed);
 *  - an update = upserts: the current entries whose ID is touched;
 *    deletions: the touched IDs not in the current set.
 * An entry never touched has been the same in every target, so every
 * possible agent state already has it right. Applying updates is
 * idempotent, so an update that did arrive does no harm either.
 * The first message is a snapshot and cannot be lost (nothing is in
 * flight before it). Each later message is a delta or, when that would
 * carry more items than the set itself, a snapshot (right from any state
 * too; `touched` is kept across it, so deltas may follow).
 * `touched` only grows: once it holds more than 2 x |set| + 256 IDs the
 * update asks for a rebase: send it (a snapshot), then end the stream with
 * OK; the agent, now up to date, reopens its watch and starts afresh. So a
 * watch's memory stays proportional to its set.
 *
 * Ownership: ly_authz_watch_new / ly_authz_watch_free. An update's upserts
 * are borrowed from `set`, its deleted IDs from the watch (valid until the
 * next ly_authz_watch_next or ly_authz_watch_free).
 */
struct ly_authz_watch;

struct ly_authz_update {
	bool snapshot;       /* upserts are the whole set; replace everything */
	bool changed;        /* the set differs from the previous call's (or this is the first) */
	bool rebase;         /* a snapshot after which the stream must end (OK) */
	const struct ly_entry **upserts;
	size_t n_upserts;
	char *const *deleted; /* borrowed from the watch: do not change or free */
	size_t n_deleted;
};

ly_status ly_authz_watch_new(struct ly_authz_watch **out, struct ly_error *err) LY_MUST_CHECK;
void ly_authz_watch_free(struct ly_authz_watch *w);
/*
 * The next message for the current authorized `set` (see above), and the
 * watch's record of it. `out` is overwritten; on failure the watch is
 * unusable (end the stream).
 */
ly_status ly_authz_watch_next(struct ly_authz_watch *w, const struct ly_authz_set *set,
    struct ly_authz_update *out, struct ly_error *err) LY_MUST_CHECK;
/*
 * The first message of a new watch when the agent says which revision it
 * holds (WatchEntriesRequest.since_revision) and the caller knows every
 * entry ID that changed since then (`changed`, any order, duplicates
 * allowed), none of which changed the authorization rule's inputs (no
 * node entry, no entry another names as its parent: the caller's
 * judgement, else it must not resume). The agent's state then differs
 * from `set` in those IDs at most: they are the watch's `touched`, and
 * the message is the delta over them (or a snapshot when that is
 * smaller). Later messages continue as ly_authz_watch_next's. LY_E_INTERNAL
 * on a watch that already sent something.
 */
ly_status ly_authz_watch_resume(struct ly_authz_watch *w, const struct ly_authz_set *set, const char *const *changed,
    size_t n_changed, struct ly_authz_update *out, struct ly_error *err) LY_MUST_CHECK;

/* How many IDs the watch holds as touched (for tests and metrics). */
size_t ly_authz_watch_touched(const struct ly_authz_watch *w);

#endif /* LANYARD_SERVER_AUTHZ_H */
