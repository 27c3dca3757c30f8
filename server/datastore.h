/*
 * datastore.h: the server's persistent state, behind a table of operations
 * so that back ends can be swapped (SQLite, PostgreSQL; SPEC §7).
 *
 * What it holds:
 *  - registration entries (lib/entry.h, SPEC §1), with a store-wide
 *    revision number and a change log so that agents can sync by delta;
 *  - join tokens (SPEC §6), stored only as SHA-256(token), single use;
 *  - attested agents (SPEC §2 `agent list/show/evict/ban`);
 *  - the CA's state, an opaque name -> bytes map;
 *  - federation (SPEC §9): other trust domains' bundles (federated
 *    bundles) and the relationships that say where to fetch them.
 *
 * Rules every back end keeps:
 *  - Each operation is one transaction: it is applied whole or not at all,
 *    and once it returns LY_OK the change is durable (survives kill -9 and,
 *    for SQLite, power loss: synchronous=FULL).
 *  - The revision is a counter of acknowledged writes: every operation that
 *    changes anything (entries, tokens, agents, CA state, federation) raises
 *    it by one (a federated bundle delete that changes N entries: by N + 1,
 *    one change-log revision per entry);
 *    one that changes nothing (a refusal, a prune that found nothing,
 *    pruning the entry change log, which is history) leaves it. It never
 *    goes back, survives restarts, and an entry's `revision` is the store
 *    revision of its last create or update.
 *  - Entries are validated with ly_entry_validate(entry, NULL, ...) before
 *    they are stored (the trust domain is the server's business), so the
 *    store never holds an invalid entry; duplicates (same spiffe_id,
 *    parent_id and selector set, ly_entry_same_identity) and a duplicate
 *    entry_id are refused with LY_E_INVALID "entry already exists".
 *  - Missing things are LY_E_NOT_FOUND; back-end failures are LY_E_IO with
 *    the back end's own message kept in the error.
 *
 * Ownership: a datastore is a heap object made by its back end's open
 * function and freed by ly_datastore_close. Every entry, agent, list and
 * buffer returned is owned by the caller: entries with ly_entry_free (or
 * ly_entry_list_cleanup), agents with ly_ds_agent_free / ly_ds_agent_list_cleanup,
 * changes with ly_entry_changes_cleanup, CA state with ly_buf_free_secret
 * (it may hold key material), a returned SPIFFE ID string with free().
 * Inputs are never retained. A datastore is not thread-safe: one thread
 * uses it, or the caller serializes calls.
 *
 * Change hook: modules that keep a copy of the store's state (the agent
 * API's entry replica and its watchers) register a callback with
 * ly_datastore_on_change; the wrappers below call every registered one,
 * in registration order, after a write committed: an entry created,
 * updated or deleted, an agent evicted or banned, a federated bundle set or
 * deleted, a federation relationship changed. The callback gets what
 * changed and the store's revision, never the request that changed it, so
 * that one fed by another server (PostgreSQL NOTIFY, through
 * ly_datastore_changed) looks the same. It runs on the writer's thread,
 * inside the write's wrapper: it may read the store, and should only note
 * the change and act on it later. In lanyard-server the writer is the
 * datastore's worker (datastore_async.h): its one callback records the
 * change, and the daemon's modules register with ly_dsa_on_change to hear
 * it on the loop thread.
 */
#ifndef LANYARD_SERVER_DATASTORE_H
#define LANYARD_SERVER_DATASTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/error.h"
#include "lib/spiffeid.h"
#include "server/bundle_shared.h"

struct ly_datastore;

/* How ly_entry_filter.selectors is compared with an entry's selectors. */
enum ly_selector_match {
	/* The entry's selectors are all among the filter's: what a workload with
	 * these attested selectors is entitled to (ly_selectors_match). */
	LY_MATCH_SUBSET = 0,
	/* The entry holds every filter selector (and maybe more): `entry show -selector`. */
	LY_MATCH_SUPERSET,
	/* The same set. */
	LY_MATCH_EXACT,
};

/* Filters of entry_list; NULL / 0 fields do not filter. All given filters apply. */
struct ly_entry_filter {
	const char *spiffe_id;
	const char *parent_id;
	const struct ly_selector *selectors;
	size_t n_selectors;
	enum ly_selector_match match;
};

enum ly_entry_op {
	LY_ENTRY_CREATED = 1,
	LY_ENTRY_UPDATED = 2,
	LY_ENTRY_DELETED = 3,
};

/* One entry's latest change after a revision. */
struct ly_entry_change {
	int64_t revision;      /* the store revision of that change */
	enum ly_entry_op op;   /* the latest op on that entry_id */
	char *entry_id;
	struct ly_entry *entry; /* the entry now; NULL when op is LY_ENTRY_DELETED */
};

struct ly_entry_changes {
	struct ly_entry_change *items; /* ordered by revision */
	size_t n;
	int64_t revision; /* the store revision these changes bring the caller to */
	/* true when `since` is older than the retained change log (or newer than
	 * the store: a different or restored database): the caller must reload
	 * everything with entry_list instead. `items` is empty then. */
	bool resync;
};

#define LY_ENTRY_CHANGES_INIT { NULL, 0, 0, false }

void ly_entry_changes_cleanup(struct ly_entry_changes *changes);

/* An attested agent (node). */
struct ly_ds_agent {
	char *spiffe_id;
	char *attestation_type; /* "join_token", "k8s_psat", "x509pop" */
	char *serial_number;    /* current SVID's serial, lower-case hex; "" if none */
	int64_t svid_expires_at; /* Unix seconds; 0 if none */
	bool banned;
	struct ly_selector *selectors; /* node selectors from attestation */
	size_t n_selectors;
	int64_t created_at; /* set by the datastore: first attestation */
	int64_t updated_at; /* set by the datastore: last upsert or ban change */
};

struct ly_ds_agent_list {
	struct ly_ds_agent **items;
	size_t n;
};

#define LY_DS_AGENT_LIST_INIT { NULL, 0 }

void ly_ds_agent_free(struct ly_ds_agent *agent);
void ly_ds_agent_list_cleanup(struct ly_ds_agent_list *list);

/* ---- federation (SPEC §9) ---- */

/* A federated bundle as stored: another trust domain's bundle. */
struct ly_ds_fed_bundle {
	struct ly_bundle *bundle; /* its trust domain, keys, spiffe_sequence, refresh hint */
	/* The store revision of its last put: changes on every put, even one
	 * that stores the same bundle again, so a reader that saw a revision
	 * knows whether it holds the latest. */
	int64_t revision;
	int64_t updated_at; /* Unix seconds, set by the datastore */
};

struct ly_ds_fed_bundle_list {
	struct ly_ds_fed_bundle **items; /* ordered by trust domain (bytewise) */
	size_t n;
};

#define LY_DS_FED_BUNDLE_LIST_INIT { NULL, 0 }

void ly_ds_fed_bundle_free(struct ly_ds_fed_bundle *b);
void ly_ds_fed_bundle_list_cleanup(struct ly_ds_fed_bundle_list *list);

/*
 * What deleting a federated bundle does to the entries that federate with
 * its trust domain (SPIRE's `bundle delete -mode`):
 */
enum ly_fed_delete_mode {
	/* Refused (LY_E_INVALID "bundle b.test is used by N entries") while any entry federates with it. */
	LY_FED_DELETE_RESTRICT = 0,
	/* The trust domain is removed from those entries' federates_with (each an ENTRY_UPDATED in the log). */
	LY_FED_DELETE_DISSOCIATE,
	/* Those entries are deleted (each an ENTRY_DELETED in the log). */
	LY_FED_DELETE_ENTRIES,
};

/* "restrict", "dissociate", "delete" -> mode; LY_E_INVALID otherwise. */
ly_status ly_fed_delete_mode_parse(const char *s, enum ly_fed_delete_mode *out, struct ly_error *err)
    LY_MUST_CHECK;
const char *ly_fed_delete_mode_name(enum ly_fed_delete_mode mode);

/* How the bundle endpoint of a relationship is authenticated (SPIFFE Federation §5). */
enum ly_fed_profile {
	/* The endpoint's certificate is an X509-SVID of endpoint_spiffe_id, checked against the stored bundle. */
	LY_FED_PROFILE_HTTPS_SPIFFE = 1,
	/* The endpoint's certificate chains to the Web PKI roots (system trust store). */
	LY_FED_PROFILE_HTTPS_WEB = 2,
};

/* "https_spiffe" / "https_web" -> profile; LY_E_INVALID otherwise. */
ly_status ly_fed_profile_parse(const char *s, enum ly_fed_profile *out, struct ly_error *err) LY_MUST_CHECK;
const char *ly_fed_profile_name(enum ly_fed_profile profile);

/* A federation relationship: where and how to fetch another trust domain's bundle. */
struct ly_ds_fed_rel {
	char *trust_domain;        /* bare name, "b.test"; never ours */
	char *bundle_endpoint_url; /* https://host[:port]/path, at most LY_FED_URL_MAX bytes */
	enum ly_fed_profile profile;
	/* https_spiffe: the SPIFFE ID the endpoint's SVID must have (in any
	 * trust domain, usually trust_domain's). https_web: NULL. */
	char *endpoint_spiffe_id;
	int64_t created_at; /* Unix seconds, set by the datastore */
	int64_t updated_at;
};

struct ly_ds_fed_rel_list {
	struct ly_ds_fed_rel **items; /* ordered by trust domain (bytewise) */
	size_t n;
};

#define LY_DS_FED_REL_LIST_INIT { NULL, 0 }

void ly_ds_fed_rel_free(struct ly_ds_fed_rel *rel);
void ly_ds_fed_rel_list_cleanup(struct ly_ds_fed_rel_list *list);

/*
 * Checks a relationship before it is stored (the datastore calls it; the
 * admin API too, for its messages): a valid trust domain name other than
 * `own_td` (NULL: not compared); a URL that is https://, with a host, no
 * user info, no fragment, printable ASCII, at most LY_FED_URL_MAX bytes; a
 * known profile; endpoint_spiffe_id a valid SPIFFE ID for https_spiffe and
 * absent for https_web. One-line LY_E_INVALID / LY_E_LIMIT messages.
 */
ly_status ly_ds_fed_rel_check(const struct ly_ds_fed_rel *rel, const char *own_td, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The operations table a back end provides. Callers use the ly_datastore_*
 * wrappers below, which document each operation.
 */
struct ly_datastore_ops {
	const char *name; /* "sqlite", "postgres" */
	void (*close)(struct ly_datastore *ds);
	ly_status (*revision)(struct ly_datastore *ds, int64_t *out, struct ly_error *err);

	ly_status (*entry_create)(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err);
	ly_status (*entry_get)(struct ly_datastore *ds, const char *entry_id, struct ly_entry **out,
	    struct ly_error *err);
	ly_status (*entry_update)(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err);
	ly_status (*entry_delete)(struct ly_datastore *ds, const char *entry_id, struct ly_entry **deleted,
	    struct ly_error *err);
	ly_status (*entry_list)(struct ly_datastore *ds, const struct ly_entry_filter *filter,
	    struct ly_entry_list *out, struct ly_error *err);
	ly_status (*entry_changes_since)(struct ly_datastore *ds, int64_t since, struct ly_entry_changes *out,
	    struct ly_error *err);
	ly_status (*entry_changes_prune)(struct ly_datastore *ds, int64_t up_to, struct ly_error *err);

	ly_status (*token_create)(struct ly_datastore *ds, const char *token, const char *spiffe_id,
	    int64_t expires_at, struct ly_error *err);
	ly_status (*token_consume)(struct ly_datastore *ds, const char *token, int64_t now, char **spiffe_id,
	    struct ly_error *err);
	ly_status (*token_prune)(struct ly_datastore *ds, int64_t now, size_t *removed, struct ly_error *err);

	ly_status (*agent_upsert)(struct ly_datastore *ds, const struct ly_ds_agent *agent, struct ly_error *err);
	ly_status (*agent_get)(struct ly_datastore *ds, const char *spiffe_id, struct ly_ds_agent **out,
	    struct ly_error *err);
	ly_status (*agent_list)(struct ly_datastore *ds, struct ly_ds_agent_list *out, struct ly_error *err);
	ly_status (*agent_delete)(struct ly_datastore *ds, const char *spiffe_id, struct ly_error *err);
	ly_status (*agent_set_banned)(struct ly_datastore *ds, const char *spiffe_id, bool banned,
	    struct ly_error *err);

	ly_status (*ca_state_put)(struct ly_datastore *ds, const char *name, const uint8_t *data, size_t len,
	    struct ly_error *err);
	ly_status (*ca_state_get)(struct ly_datastore *ds, const char *name, struct ly_buf *out,
	    struct ly_error *err);
	ly_status (*ca_state_delete)(struct ly_datastore *ds, const char *name, struct ly_error *err);

	ly_status (*fed_bundle_put)(struct ly_datastore *ds, const struct ly_bundle *bundle, int64_t *revision,
	    struct ly_error *err);
	ly_status (*fed_bundle_get)(struct ly_datastore *ds, const char *td, struct ly_ds_fed_bundle **out,
	    struct ly_error *err);
	ly_status (*fed_bundle_list)(struct ly_datastore *ds, struct ly_ds_fed_bundle_list *out, struct ly_error *err);
	ly_status (*fed_bundle_delete)(struct ly_datastore *ds, const char *td, enum ly_fed_delete_mode mode,
	    int64_t *revision, struct ly_error *err);
	ly_status (*fed_bundle_count)(struct ly_datastore *ds, size_t *out, struct ly_error *err);

	ly_status (*fed_rel_create)(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel,
	    const struct ly_bundle *bundle, int64_t *revision, struct ly_error *err);
	ly_status (*fed_rel_update)(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel,
	    const struct ly_bundle *bundle, int64_t *revision, struct ly_error *err);
	ly_status (*fed_rel_get)(struct ly_datastore *ds, const char *td, struct ly_ds_fed_rel **out,
	    struct ly_error *err);
	ly_status (*fed_rel_list)(struct ly_datastore *ds, struct ly_ds_fed_rel_list *out, struct ly_error *err);
	ly_status (*fed_rel_delete)(struct ly_datastore *ds, const char *td, int64_t *revision, struct ly_error *err);
	ly_status (*fed_revision)(struct ly_datastore *ds, int64_t *out, struct ly_error *err);

	/* The shared bundle (several servers, SPEC §10); NULL in a back end of one server (SQLite). */
	ly_status (*bundle_publish)(struct ly_datastore *ds, const char *server_id,
	    const struct ly_shared_authorities *mine, int64_t now, uint64_t min_sequence, uint64_t *sequence,
	    struct ly_error *err);
	ly_status (*bundle_read)(struct ly_datastore *ds, int64_t now, struct ly_shared_authorities *out,
	    struct ly_error *err);
};

/* What changed, for the change hook (see the top of this file). */
enum ly_datastore_change_kind {
	LY_DATASTORE_ENTRY_CREATED = 1,
	LY_DATASTORE_ENTRY_UPDATED,
	LY_DATASTORE_ENTRY_DELETED,
	LY_DATASTORE_AGENT_EVICTED,
	LY_DATASTORE_AGENT_BANNED,
	LY_DATASTORE_BUNDLE_CHANGED, /* fed by ly_datastore_changed: bundles are not rows yet */
	/* A federated bundle was stored (created or replaced) or deleted;
	 * .trust_domain names it. A delete in mode dissociate or delete also
	 * changed entries: they are in the entry change log at that revision. */
	LY_DATASTORE_FED_BUNDLE_CHANGED,
	LY_DATASTORE_FED_BUNDLE_DELETED,
	/* A federation relationship was created, updated or deleted; .trust_domain names it. */
	LY_DATASTORE_FED_REL_CHANGED,
};

struct ly_datastore_change {
	enum ly_datastore_change_kind kind;
	/* The store's revision once the write committed (an entry's: its new
	 * revision); -1 when it could not be read back. */
	int64_t revision;
	const char *entry_id; /* ENTRY_*: borrowed for the call */
	const char *agent_id; /* AGENT_*: borrowed for the call */
	const char *trust_domain; /* FED_*: borrowed for the call (bare name, "b.test") */
};

typedef void ly_datastore_change_fn(void *arg, const struct ly_datastore_change *change);

/* Callbacks one store holds at most. */
#define LY_DATASTORE_HOOKS_MAX 4

struct ly_datastore_hook {
	ly_datastore_change_fn *fn;
	void *arg;
};

/* Every back end's handle starts with this (zeroed by the back end's open). */
struct ly_ds_dialect; /* server/datastore_engine.h */

struct ly_datastore {
	const struct ly_datastore_ops *ops;
	/* The back end's dialect, over which the operations written once run. */
	const struct ly_ds_dialect *dialect;
	struct ly_datastore_hook hooks[LY_DATASTORE_HOOKS_MAX];
	size_t n_hooks;
	/*
	 * Set by datastore_async.c around each call it runs (NULL otherwise):
	 * becomes non-zero, from another thread, once that call's caller gave
	 * up (its deadline passed). A back end that may wait long before a
	 * transaction (PostgreSQL reconnecting) checks it with
	 * ly_datastore_gave_up before it begins one, so that such a write is
	 * never applied after its caller was told it failed.
	 */
	const int *gave_up;
	/* The server's own trust domain (ly_datastore_set_trust_domain); "" until set. */
	char trust_domain[LY_TRUST_DOMAIN_MAX + 1];
};

/* Whether the running call's caller gave up (see struct ly_datastore.gave_up). */
static inline bool
ly_datastore_gave_up(const struct ly_datastore *ds)
{
	return ds->gave_up != NULL && __atomic_load_n(ds->gave_up, __ATOMIC_ACQUIRE) != 0;
}

/*
 * Tells the store the server's own trust domain (a bare name), which the
 * federation operations refuse: our bundle is never a federated one. Until
 * it is set, fed_bundle_put and fed_rel_create/update refuse everything
 * (LY_E_INTERNAL "datastore: trust domain not set").
 */
ly_status ly_datastore_set_trust_domain(struct ly_datastore *ds, const char *td, struct ly_error *err)
    LY_MUST_CHECK;

/* Registers `fn(arg, change)`; LY_E_LIMIT over LY_DATASTORE_HOOKS_MAX. */
ly_status ly_datastore_on_change(struct ly_datastore *ds, ly_datastore_change_fn *fn, void *arg,
    struct ly_error *err) LY_MUST_CHECK;
/* Removes the registration of (fn, arg); nothing when absent. */
void ly_datastore_off_change(struct ly_datastore *ds, ly_datastore_change_fn *fn, void *arg);
/* Calls every registered callback with `change` (the wrappers' feed, and another server's). */
void ly_datastore_changed(struct ly_datastore *ds, const struct ly_datastore_change *change);
/* Feeds a change whose revision is the store's present one (read only when a callback is registered). */
void ly_datastore_changed_now(struct ly_datastore *ds, enum ly_datastore_change_kind kind, const char *entry_id,
    const char *agent_id);

/* ---- SQLite back end ---- */

/* The schema version this build writes; a newer database is refused. */
/* 3: the shared audit trail (datastore_audit.h). */
#define LY_DATASTORE_SQLITE_SCHEMA 3

/*
 * Opens (creating if absent) the SQLite database at `path` (the server uses
 * <dataDir>/datastore.sqlite3) and brings its schema up to date in one
 * transaction. The file is created 0600 (a group/other bit on an existing
 * file is removed); symlinks are refused. WAL journal, synchronous=FULL,
 * foreign keys on, secure_delete on, a 5 s busy timeout.
 * Refused: a file that is not a SQLite database or is corrupt (LY_E_IO),
 * a schema newer than this build (LY_E_UNSUPPORTED, "datastore schema N is
 * newer than this lanyard-server (M): upgrade").
 */
ly_status ly_datastore_sqlite_open(const char *path, struct ly_datastore **out, struct ly_error *err)
    LY_MUST_CHECK;

/* ---- PostgreSQL back end ---- */

/* The schema version this build writes; a newer database is refused.
 * 2: the shared bundle (bundle_authorities) and the change notifications
 * (pg_notify.h: triggers NOTIFY LY_PG_NOTIFY_CHANNEL on every entry
 * change, agent eviction or ban, and bundle publish, whichever server
 * wrote it).
 * 3: federation (federated bundles, relationships, entries' federates_with).
 * 4: the shared audit trail (datastore_audit.h). */
#define LY_DATASTORE_PG_SCHEMA 4

/*
 * Connects to PostgreSQL with the libpq connection string `conninfo`
 * (key=value pairs or a postgresql:// URI; the server takes it from
 * server.datastore.connection_string) and brings the schema up to date in
 * one transaction (an advisory lock serializes servers starting together).
 * The database should be dedicated to one trust domain's server: the
 * tables are created in its default schema (search_path).
 * Each session gets statement_timeout = 5 s; a connect_timeout of 10 s,
 * TCP keepalives (idle 10 s, interval 5 s, 3 probes) and a
 * tcp_user_timeout of 30 s apply unless the string sets them, so that a
 * host that drops packets breaks the connection within about 30 s; a
 * statement that gets no byte from PostgreSQL for 7 s (a proxy that keeps
 * TCP alive) gives the connection up too ("connection lost: ... no answer
 * from PostgreSQL for 7 s"): no call waits on the network for longer. Every write transaction takes the
 * revision counter's row lock first, so several servers on one database
 * keep the rules above. A lost connection fails the operation with LY_E_IO
 * "datastore: connection lost: ..."; each later operation tries PQreset
 * once, so the store recovers by itself when PostgreSQL is back.
 * The connection string is never copied, logged or put in an error; libpq's
 * own messages (host, user, reason) are kept.
 * Refused: an empty or malformed string (LY_E_INVALID, without its text),
 * a failed connection (LY_E_IO), a schema newer than this build
 * (LY_E_UNSUPPORTED, "datastore schema N is newer than this lanyard-server
 * (M): upgrade").
 * Durability: the sessions set synchronous_commit = on, so a COMMIT
 * acknowledged is on disk (given the cluster's fsync = on, its default).
 * Deleted CA state is not overwritten in place (MVCC): VACUUM reclaims it;
 * wrap keys before storing them.
 */
ly_status ly_datastore_pg_open(const char *conninfo, struct ly_datastore **out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The syntax check ly_datastore_pg_open starts with (libpq's
 * PQconninfoParse), for configuration loading: empty, over
 * LY_CONFIG_VALUE_MAX bytes (LY_E_LIMIT) or malformed (LY_E_INVALID) is
 * refused; the message never quotes the string. Connects to nothing.
 */
ly_status ly_datastore_pg_check_conninfo(const char *conninfo, struct ly_error *err) LY_MUST_CHECK;

/* ---- operations ---- */

/*
 * Whether this store is shared by several servers (PostgreSQL): the
 * server then publishes its authorities with ly_datastore_bundle_publish
 * and serves the union (bundle_shared.h). SQLite is one server's alone.
 */
static inline bool
ly_datastore_shared(const struct ly_datastore *ds)
{
	return ds != NULL && ds->ops->bundle_publish != NULL && ds->ops->bundle_read != NULL;
}

/*
 * Replaces server `server_id`'s published authorities with `mine` (every
 * row's server_id must be `server_id`), deletes every server's rows that
 * expired at `now`, and raises the bundle sequence to
 * max(sequence, min_sequence) + 1, into *sequence; one transaction (the
 * revision rises). LY_E_UNSUPPORTED for a store of one server.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_bundle_publish(struct ly_datastore *ds, const char *server_id, const struct ly_shared_authorities *mine,
    int64_t now, uint64_t min_sequence, uint64_t *sequence, struct ly_error *err)
{
	if (ds->ops->bundle_publish == NULL)
		return ly_error_set(err, LY_E_UNSUPPORTED, "datastore %s holds no shared bundle", ds->ops->name);
	return ds->ops->bundle_publish(ds, server_id, mine, now, min_sequence, sequence, err);
}

/*
 * Every server's authorities valid at `now` (ordered by kind, server,
 * key ID) and the bundle sequence, into `out` (replaced; emptied first).
 * A row that is not well formed is LY_E_IO "corrupt row".
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_bundle_read(struct ly_datastore *ds, int64_t now, struct ly_shared_authorities *out,
    struct ly_error *err)
{
	if (ds->ops->bundle_read == NULL)
		return ly_error_set(err, LY_E_UNSUPPORTED, "datastore %s holds no shared bundle", ds->ops->name);
	return ds->ops->bundle_read(ds, now, out, err);
}

/* Closes and frees; NULL is allowed. */
static inline void
ly_datastore_close(struct ly_datastore *ds)
{
	if (ds != NULL)
		ds->ops->close(ds);
}

/* The store-wide revision (0 for a new store). */
static inline LY_MUST_CHECK ly_status
ly_datastore_revision(struct ly_datastore *ds, int64_t *out, struct ly_error *err)
{
	return ds->ops->revision(ds, out, err);
}

/*
 * Validates and stores a new entry. An empty entry_id is replaced by a
 * fresh UUID (written into entry->entry_id); entry->revision and
 * entry->created_at are set. Refused with nothing stored: an invalid entry,
 * a duplicate identity or entry_id (LY_E_INVALID "entry already exists").
 * On failure `entry` is as given, except that its selectors may have been
 * sorted.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_entry_create(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err)
{
	ly_status rc = ds->ops->entry_create(ds, entry, err);
	if (rc == LY_OK && ds->n_hooks > 0) {
		struct ly_datastore_change c = { .kind = LY_DATASTORE_ENTRY_CREATED, .revision = entry->revision, .entry_id = entry->entry_id };
		ly_datastore_changed(ds, &c);
	}
	return rc;
}

/* Fetches one entry by ID into *out (LY_E_NOT_FOUND if absent). */
static inline LY_MUST_CHECK ly_status
ly_datastore_entry_get(struct ly_datastore *ds, const char *entry_id, struct ly_entry **out,
    struct ly_error *err)
{
	return ds->ops->entry_get(ds, entry_id, out, err);
}

/*
 * Replaces every field of the entry named by entry->entry_id (created_at is
 * kept); sets entry->revision (a new store revision) and entry->created_at.
 * LY_E_NOT_FOUND if absent; LY_E_INVALID if invalid or if it would duplicate
 * another entry's identity.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_entry_update(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err)
{
	ly_status rc = ds->ops->entry_update(ds, entry, err);
	if (rc == LY_OK && ds->n_hooks > 0) {
		struct ly_datastore_change c = { .kind = LY_DATASTORE_ENTRY_UPDATED, .revision = entry->revision, .entry_id = entry->entry_id };
		ly_datastore_changed(ds, &c);
	}
	return rc;
}

/* Deletes an entry; the deleted entry goes to *deleted when non-NULL. */
static inline LY_MUST_CHECK ly_status
ly_datastore_entry_delete(struct ly_datastore *ds, const char *entry_id, struct ly_entry **deleted,
    struct ly_error *err)
{
	ly_status rc = ds->ops->entry_delete(ds, entry_id, deleted, err);
	if (rc == LY_OK)
		ly_datastore_changed_now(ds, LY_DATASTORE_ENTRY_DELETED, entry_id, NULL);
	return rc;
}

/*
 * Appends the entries that pass `filter` (NULL: all) to `out` (initialized
 * by the caller with LY_ENTRY_LIST_INIT), in creation order. On failure
 * `out` is left as it was.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_entry_list(struct ly_datastore *ds, const struct ly_entry_filter *filter,
    struct ly_entry_list *out, struct ly_error *err)
{
	return ds->ops->entry_list(ds, filter, out, err);
}

/*
 * The entries changed after revision `since`, one item per entry_id (its
 * latest change), so that a watcher holding the state at `since` reaches
 * out->revision by applying them in order; deletions are included.
 * `out` must be LY_ENTRY_CHANGES_INIT; see struct ly_entry_changes.resync.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_entry_changes_since(struct ly_datastore *ds, int64_t since, struct ly_entry_changes *out,
    struct ly_error *err)
{
	return ds->ops->entry_changes_since(ds, since, out, err);
}

/* Forgets the change log up to and including revision `up_to`; watchers older than that resync. */
static inline LY_MUST_CHECK ly_status
ly_datastore_entry_changes_prune(struct ly_datastore *ds, int64_t up_to, struct ly_error *err)
{
	return ds->ops->entry_changes_prune(ds, up_to, err);
}

/*
 * Checks a join token's syntax, the rule of its join_token selector
 * (SPEC §6): 1..LY_JOIN_TOKEN_MAX bytes (LY_E_LIMIT over) of
 * [A-Za-z0-9._-], and not "." or ".." (it becomes an agent ID path
 * segment). The one check for tokens: the datastore and the join-token
 * attestor both call it. The message never shows the token.
 */
ly_status ly_datastore_token_check(const char *token, struct ly_error *err) LY_MUST_CHECK;

/*
 * Checks the agent ID a join token grants: exactly the token's default
 * (LY_JOIN_TOKEN_ID_PATH + token, which the server makes), or an ID that
 * ly_spiffe_id_check_use allows as LY_ID_JOIN_TOKEN (lib/spiffeid.h): never
 * the server's ID nor another attestor's agent ID. Called when a token is
 * stored and again when it is used (a token stored before the rule).
 * `token` may be NULL (then only the second form passes).
 */
ly_status ly_datastore_token_id_check(const char *token, const struct ly_spiffe_id *id, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * Stores a join token (only its SHA-256) that grants `spiffe_id` to the
 * agent that presents it before `expires_at` (Unix seconds). The token
 * must pass ly_datastore_token_check. A token already stored is refused
 * (LY_E_INVALID).
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_token_create(struct ly_datastore *ds, const char *token, const char *spiffe_id,
    int64_t expires_at, struct ly_error *err)
{
	return ds->ops->token_create(ds, token, spiffe_id, expires_at, err);
}

/*
 * Uses up a join token, atomically: the first call for a stored, unexpired
 * token returns LY_OK and the SPIFFE ID it grants in *spiffe_id (free());
 * the token is gone afterwards. An unknown or already used token is
 * LY_E_NOT_FOUND; an expired one (now >= expires_at) is LY_E_EXPIRED and is
 * deleted too.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_token_consume(struct ly_datastore *ds, const char *token, int64_t now, char **spiffe_id,
    struct ly_error *err)
{
	return ds->ops->token_consume(ds, token, now, spiffe_id, err);
}

/* Deletes every token expired at `now`; the count goes to *removed when non-NULL. */
static inline LY_MUST_CHECK ly_status
ly_datastore_token_prune(struct ly_datastore *ds, int64_t now, size_t *removed, struct ly_error *err)
{
	return ds->ops->token_prune(ds, now, removed, err);
}

/*
 * Creates or updates an agent record by spiffe_id: attestation type, serial,
 * expiry and selectors are replaced. The banned flag is taken from `agent`
 * only when the record is new: an update never lifts (or sets) a ban, use
 * ly_datastore_agent_set_banned. created_at is kept, updated_at set.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_agent_upsert(struct ly_datastore *ds, const struct ly_ds_agent *agent, struct ly_error *err)
{
	return ds->ops->agent_upsert(ds, agent, err);
}

static inline LY_MUST_CHECK ly_status
ly_datastore_agent_get(struct ly_datastore *ds, const char *spiffe_id, struct ly_ds_agent **out,
    struct ly_error *err)
{
	return ds->ops->agent_get(ds, spiffe_id, out, err);
}

/* Appends every agent to `out` (LY_DS_AGENT_LIST_INIT), ordered by SPIFFE ID. */
static inline LY_MUST_CHECK ly_status
ly_datastore_agent_list(struct ly_datastore *ds, struct ly_ds_agent_list *out, struct ly_error *err)
{
	return ds->ops->agent_list(ds, out, err);
}

/* Deletes an agent record (`agent evict`: it must attest again); the hook hears AGENT_EVICTED. */
static inline LY_MUST_CHECK ly_status
ly_datastore_agent_delete(struct ly_datastore *ds, const char *spiffe_id, struct ly_error *err)
{
	ly_status rc = ds->ops->agent_delete(ds, spiffe_id, err);
	if (rc == LY_OK)
		ly_datastore_changed_now(ds, LY_DATASTORE_AGENT_EVICTED, NULL, spiffe_id);
	return rc;
}

/* Sets or lifts an agent's ban (`agent ban`; a ban: AGENT_BANNED). LY_E_NOT_FOUND if absent. */
static inline LY_MUST_CHECK ly_status
ly_datastore_agent_set_banned(struct ly_datastore *ds, const char *spiffe_id, bool banned,
    struct ly_error *err)
{
	ly_status rc = ds->ops->agent_set_banned(ds, spiffe_id, banned, err);
	if (rc == LY_OK && banned)
		ly_datastore_changed_now(ds, LY_DATASTORE_AGENT_BANNED, NULL, spiffe_id);
	return rc;
}

/*
 * CA state: `name` is 1..LY_CA_STATE_NAME_MAX bytes of [A-Za-z0-9._-],
 * the value 0..LY_CA_STATE_MAX bytes. put replaces; get copies into `out`
 * (which must be empty; free with ly_buf_free_secret); a missing name is
 * LY_E_NOT_FOUND for get and delete. Deleted values are overwritten on disk
 * (secure_delete), but a value may hold key material: encrypt or wrap keys
 * before storing them if the disk is not trusted.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_ca_state_put(struct ly_datastore *ds, const char *name, const uint8_t *data, size_t len,
    struct ly_error *err)
{
	return ds->ops->ca_state_put(ds, name, data, len, err);
}

static inline LY_MUST_CHECK ly_status
ly_datastore_ca_state_get(struct ly_datastore *ds, const char *name, struct ly_buf *out, struct ly_error *err)
{
	return ds->ops->ca_state_get(ds, name, out, err);
}

static inline LY_MUST_CHECK ly_status
ly_datastore_ca_state_delete(struct ly_datastore *ds, const char *name, struct ly_error *err)
{
	return ds->ops->ca_state_delete(ds, name, err);
}

/* ---- federation (SPEC §9) ----
 *
 * Federated bundles: one per trust domain (never ours), stored as its
 * SPIFFE bundle JSON (ly_bundle_write_jwks, read back with
 * ly_bundle_parse_jwks) with its spiffe_sequence, the store revision of its
 * last put and a time. Every change raises the store revision; the hook
 * hears FED_BUNDLE_CHANGED / FED_BUNDLE_DELETED with the trust domain.
 * Entries name the trust domains they federate with (ly_entry
 * federates_with); an entry may only name a trust domain whose bundle is
 * stored (entry_create/update refuse others with LY_E_INVALID "no bundle
 * for trust domain b.test"), and a bundle in use is only deleted as `mode`
 * says.
 *
 * Relationships: one per trust domain (never ours): the bundle endpoint's
 * URL and profile. They are what the server's fetcher (server/federation
 * fetcher) reads; deleting one leaves the bundle (SPIRE does the same: the
 * bundle is deleted with `bundle delete`).
 */

/*
 * Creates or replaces the federated bundle of ly_bundle_trust_domain(bundle).
 * Refused: our own trust domain or none set (LY_E_INVALID "bundle for our
 * own trust domain b.test refused" / LY_E_INTERNAL), a bundle that does not
 * write as JSON within LY_JWKS_MAX. The new store revision goes to
 * *revision when non-NULL. `bundle` is borrowed.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_bundle_put(struct ly_datastore *ds, const struct ly_bundle *bundle, int64_t *revision,
    struct ly_error *err);

/* The stored bundle of `td` into *out (free with ly_ds_fed_bundle_free); LY_E_NOT_FOUND if absent. */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_bundle_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_bundle **out,
    struct ly_error *err)
{
	return ds->ops->fed_bundle_get(ds, td, out, err);
}

/* Appends every federated bundle to `out` (LY_DS_FED_BUNDLE_LIST_INIT), ordered by trust domain. */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_bundle_list(struct ly_datastore *ds, struct ly_ds_fed_bundle_list *out, struct ly_error *err)
{
	return ds->ops->fed_bundle_list(ds, out, err);
}

/*
 * Deletes the federated bundle of `td` and treats the entries federating
 * with it as `mode` says (see enum ly_fed_delete_mode), all in one
 * transaction. LY_E_NOT_FOUND if absent. The new store revision goes to
 * *revision when non-NULL.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_bundle_delete(struct ly_datastore *ds, const char *td, enum ly_fed_delete_mode mode,
    int64_t *revision, struct ly_error *err);

/* How many federated bundles are stored. */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_bundle_count(struct ly_datastore *ds, size_t *out, struct ly_error *err)
{
	return ds->ops->fed_bundle_count(ds, out, err);
}

/*
 * The store revision of the last federated bundle change (a put, or a
 * delete whatever its mode); 0 when there was none. One row read: a reader
 * holding the bundles re-reads them only when it moved (another server's
 * writes included).
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_revision(struct ly_datastore *ds, int64_t *out, struct ly_error *err)
{
	return ds->ops->fed_revision(ds, out, err);
}

/*
 * Creates a relationship (checked by ly_ds_fed_rel_check against our trust
 * domain); with `bundle` non-NULL (the operator's bootstrap bundle, which
 * must be for rel->trust_domain) stores it as the federated bundle in the
 * same transaction (a put). A relationship that exists already is refused
 * (LY_E_INVALID "federation relationship with b.test already exists").
 * created_at/updated_at of `rel` are ignored.
 */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_rel_create(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err);

/* Replaces the relationship of rel->trust_domain (created_at kept); LY_E_NOT_FOUND if absent. As create otherwise. */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_rel_update(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err);

/* The relationship of `td` into *out (ly_ds_fed_rel_free); LY_E_NOT_FOUND if absent. */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_rel_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_rel **out, struct ly_error *err)
{
	return ds->ops->fed_rel_get(ds, td, out, err);
}

/* Every relationship into `out`, which must be LY_DS_FED_REL_LIST_INIT, ordered by trust domain. */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_rel_list(struct ly_datastore *ds, struct ly_ds_fed_rel_list *out, struct ly_error *err)
{
	return ds->ops->fed_rel_list(ds, out, err);
}

/* Deletes the relationship of `td` (its bundle stays); LY_E_NOT_FOUND if absent. */
static inline LY_MUST_CHECK ly_status
ly_datastore_fed_rel_delete(struct ly_datastore *ds, const char *td, int64_t *revision, struct ly_error *err);

/* ---- the federation wrappers' bodies (they feed the change hook) ---- */

static inline void
ly_datastore_fed_changed(struct ly_datastore *ds, enum ly_datastore_change_kind kind, int64_t revision,
    const char *td)
{
	if (ds->n_hooks > 0) {
		struct ly_datastore_change c = { .kind = kind, .revision = revision, .trust_domain = td };
		ly_datastore_changed(ds, &c);
	}
}

static inline ly_status
ly_datastore_fed_bundle_put(struct ly_datastore *ds, const struct ly_bundle *bundle, int64_t *revision,
    struct ly_error *err)
{
	int64_t rev = -1;
	ly_status rc = ds->ops->fed_bundle_put(ds, bundle, &rev, err);
	if (rc == LY_OK) {
		if (revision != NULL)
			*revision = rev;
		ly_datastore_fed_changed(ds, LY_DATASTORE_FED_BUNDLE_CHANGED, rev, ly_bundle_trust_domain(bundle));
	}
	return rc;
}

static inline ly_status
ly_datastore_fed_bundle_delete(struct ly_datastore *ds, const char *td, enum ly_fed_delete_mode mode,
    int64_t *revision, struct ly_error *err)
{
	int64_t rev = -1;
	ly_status rc = ds->ops->fed_bundle_delete(ds, td, mode, &rev, err);
	if (rc == LY_OK) {
		if (revision != NULL)
			*revision = rev;
		ly_datastore_fed_changed(ds, LY_DATASTORE_FED_BUNDLE_DELETED, rev, td);
	}
	return rc;
}

static inline ly_status
ly_datastore_fed_rel_create(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err)
{
	int64_t rev = -1;
	ly_status rc = ds->ops->fed_rel_create(ds, rel, bundle, &rev, err);
	if (rc == LY_OK) {
		if (revision != NULL)
			*revision = rev;
		if (bundle != NULL)
			ly_datastore_fed_changed(ds, LY_DATASTORE_FED_BUNDLE_CHANGED, rev, rel->trust_domain);
		ly_datastore_fed_changed(ds, LY_DATASTORE_FED_REL_CHANGED, rev, rel->trust_domain);
	}
	return rc;
}

static inline ly_status
ly_datastore_fed_rel_update(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err)
{
	int64_t rev = -1;
	ly_status rc = ds->ops->fed_rel_update(ds, rel, bundle, &rev, err);
	if (rc == LY_OK) {
		if (revision != NULL)
			*revision = rev;
		if (bundle != NULL)
			ly_datastore_fed_changed(ds, LY_DATASTORE_FED_BUNDLE_CHANGED, rev, rel->trust_domain);
		ly_datastore_fed_changed(ds, LY_DATASTORE_FED_REL_CHANGED, rev, rel->trust_domain);
	}
	return rc;
}

static inline ly_status
ly_datastore_fed_rel_delete(struct ly_datastore *ds, const char *td, int64_t *revision, struct ly_error *err)
{
	int64_t rev = -1;
	ly_status rc = ds->ops->fed_rel_delete(ds, td, &rev, err);
	if (rc == LY_OK) {
		if (revision != NULL)
			*revision = rev;
		ly_datastore_fed_changed(ds, LY_DATASTORE_FED_REL_CHANGED, rev, td);
	}
	return rc;
}

#endif /* LANYARD_SERVER_DATASTORE_H */
