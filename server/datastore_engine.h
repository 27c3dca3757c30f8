/*
 * datastore_engine.h: the one transaction engine of the datastore back ends
 * and the small dialect interface each back end gives it. Not for callers
 * of the datastore: they use datastore.h.
 *
 * An operation is written once, in datastore_engine.c, over the dialect:
 * begin a transaction (a write one raises the store revision first, so
 * writers serialize on it and an operation that changed nothing rolls back
 * and leaves the revision), run statements from the dialect's table with
 * typed parameters, read the rows, commit or roll back. A dialect
 * (datastore_sqlite.c, datastore_pg.c) knows its SQL text and placeholders,
 * its client library, and how its errors map to ly_status: a unique or
 * other constraint violation is LY_E_INVALID, everything else keeps the
 * database's own message ("datastore: <what>: <message>").
 *
 * Every operation of struct ly_datastore_ops runs on the engine: the
 * entries (create, get, update, delete, list, changes_since,
 * changes_prune), the join tokens (create, consume, prune), the agents
 * (upsert, get, list, delete, set_banned), the CA state (put, get,
 * delete), revision, the shared bundle of several servers (publish,
 * read: datastore_bundle.c; PostgreSQL only) and federation
 * (datastore_engine_fed.c: federated bundles, relationships, entries'
 * federates_with). A back end keeps only its connection, its schema
 * and migrations, its SQL text and this dialect.
 *
 * Ownership: parameters are borrowed for the call; a cursor (struct
 * ly_ds_rows) is released with the dialect's rows_free before the next
 * statement runs; text read from a row is a heap copy the caller frees.
 * No state is kept here: one operation at a time, like the datastore.
 */
#ifndef LANYARD_SERVER_DATASTORE_ENGINE_H
#define LANYARD_SERVER_DATASTORE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"
#include "server/datastore.h"

/* The statements the engine runs; each dialect gives their text (its placeholders: ?1 or $1). */
enum ly_ds_stmt {
	/* (token_sha256 bytes, spiffe_id text, expires_at int, created_at int) */
	LY_DS_TOKEN_INSERT,
	/* (token_sha256 bytes) -> rows (spiffe_id, expires_at): finds and deletes in one statement */
	LY_DS_TOKEN_TAKE,
	/* (now int): deletes tokens with expires_at <= now */
	LY_DS_TOKEN_PRUNE,
	/* (token_sha256 bytes, spiffe_id text, key_sha256 bytes, used_at int, retry_until int): a token's use,
	 * replacing an earlier one of the same token (made again after its use) */
	LY_DS_TOKEN_USE_INSERT,
	/* (token_sha256 bytes, key_sha256 bytes, now int) -> rows (spiffe_id): that key's use, retry_until > now */
	LY_DS_TOKEN_USE_GET,
	/* (now int): deletes uses with retry_until <= now */
	LY_DS_TOKEN_USE_PRUNE,
	/* (spiffe_id text): the uses that admitted that agent (its eviction) */
	LY_DS_TOKEN_USE_FORGET,
	/* (spiffe_id text): its selectors go with it */
	LY_DS_AGENT_DELETE,
	/* (spiffe_id text, banned bool, updated_at int) */
	LY_DS_AGENT_BAN,
	/* (name text, value bytes, updated_at int): insert or replace */
	LY_DS_CA_PUT,
	/* (name text) -> rows (value bytes) */
	LY_DS_CA_GET,
	/* (name text) */
	LY_DS_CA_DELETE,
	/* () -> rows (revision int) */
	LY_DS_REVISION,
	/* (up_to int): the entry change log up to a revision */
	LY_DS_CHANGES_PRUNE,
	/* (up_to int): the change-log horizon */
	LY_DS_PRUNED_SET,
	/* (entry_id text) -> entry rows, read with the dialect's read_entry */
	LY_DS_ENTRY_BY_ID,
	/* (row id int): its selectors and DNS names go with it */
	LY_DS_ENTRY_DELETE,
	/* (revision int, entry_id text, op int) */
	LY_DS_CHANGE_INSERT,
	/* (spiffe_id text) -> agent rows, read with the dialect's read_agent */
	LY_DS_AGENT_GET,
	/* () -> agent rows ordered by spiffe_id (bytewise) */
	LY_DS_AGENT_LIST,
	/* (identity bytes) -> entry rows: the candidates for a duplicate */
	LY_DS_ENTRY_BY_IDENTITY,
	/* (entry_id text) -> rows (row id, created_at) */
	LY_DS_ENTRY_LOOKUP,
	/* () -> entry rows ordered by row id */
	LY_DS_ENTRY_LIST_ALL,
	/* (spiffe_id text, parent_id text or NULL: any) -> entry rows ordered by row id */
	LY_DS_ENTRY_LIST_BY_SPIFFE_ID,
	/* (parent_id text) -> entry rows ordered by row id */
	LY_DS_ENTRY_LIST_BY_PARENT_ID,
	/*
	 * (entry_id text, spiffe_id text, parent_id text, identity bytes,
	 * x509_svid_ttl int, jwt_svid_ttl int, node bool, admin bool,
	 * downstream bool, hint text or NULL, revision int, created_at int)
	 * -> rows (row id)
	 */
	LY_DS_ENTRY_INSERT,
	/* (row id int, then the fields of LY_DS_ENTRY_INSERT from spiffe_id to revision) */
	LY_DS_ENTRY_UPDATE,
	/* the dialect's own parameters: run through its insert_selectors only */
	LY_DS_ENTRY_SEL_INSERT,
	/* (row id int) */
	LY_DS_ENTRY_SEL_DELETE,
	/* the dialect's own parameters: run through its insert_dns_names only */
	LY_DS_ENTRY_DNS_INSERT,
	/* (row id int) */
	LY_DS_ENTRY_DNS_DELETE,
	/* () -> rows (revision, changes_pruned) */
	LY_DS_META_GET,
	/*
	 * (since int) -> rows (entry_id text, revision int, op int, then the
	 * entry's columns as an entry statement's, for read_entry at column 3,
	 * all NULL when the entry is gone): each entry's latest change after
	 * `since`, ordered by revision
	 */
	LY_DS_CHANGES_SINCE,
	/*
	 * (spiffe_id text, attestation_type text, serial_number text,
	 * svid_expires_at int, banned bool, now int) -> rows (row id): insert
	 * or update by spiffe_id (banned and created_at kept on update)
	 */
	LY_DS_AGENT_UPSERT,
	/* (row id int) */
	LY_DS_AGENT_SEL_DELETE,
	/* the dialect's own parameters: run through its insert_selectors only */
	LY_DS_AGENT_SEL_INSERT,
	/* The shared bundle (several servers; NULL in SQLite, which has none): */
	/* (server_id text): that server's rows */
	LY_DS_BUNDLE_CLEAR,
	/* (server_id text, kind int 1 x509 / 2 jwt, kid text, value text base64 DER, not_after int, updated_at int) */
	LY_DS_BUNDLE_INSERT,
	/* (now int): every row with not_after <= now */
	LY_DS_BUNDLE_PRUNE,
	/* (min int) -> rows (sequence int): the sequence raised to max(it, min) + 1 */
	LY_DS_BUNDLE_SEQ_BUMP,
	/* () -> rows (sequence int) */
	LY_DS_BUNDLE_SEQ_GET,
	/* (now int) -> rows (server_id, kind, kid, value, not_after) with not_after > now */
	LY_DS_BUNDLE_LIST,
	/* Federation (datastore_engine_fed.c). */
	/* () -> rows (revision int): raises the store revision once more in a write transaction */
	LY_DS_REV_BUMP,
	/* (entry row id int, revision int): an entry changed by a federated bundle's delete */
	LY_DS_ENTRY_SET_REVISION,
	/* (trust_domain text, bundle text, sequence int, revision int, updated_at int): insert or replace */
	LY_DS_FEDB_PUT,
	/* (trust_domain text) -> rows (trust_domain, bundle, revision, updated_at) */
	LY_DS_FEDB_GET,
	/* () -> the same rows, ordered by trust_domain (bytewise) */
	LY_DS_FEDB_LIST,
	/* (trust_domain text) */
	LY_DS_FEDB_DELETE,
	/* () -> rows (count int) */
	LY_DS_FEDB_COUNT,
	/* (trust_domain text) -> rows (entry row id, entry_id) of the entries federating with it, by row id */
	LY_DS_FEDB_ENTRIES,
	/* (entry row id int, trust_domain text): inserts only when that bundle exists (changed rows: 0 or 1) */
	LY_DS_FEDW_INSERT,
	/* (entry row id int): an entry's federates_with rows */
	LY_DS_FEDW_DELETE_ENTRY,
	/* (trust_domain text): every entry's federates_with row naming it */
	LY_DS_FEDW_DELETE_TD,
	/* (trust_domain text, url text, profile int, endpoint_spiffe_id text|NULL, created_at int, updated_at int) */
	LY_DS_FEDR_INSERT,
	/* (trust_domain text, url text, profile int, endpoint_spiffe_id text|NULL, updated_at int) */
	LY_DS_FEDR_UPDATE,
	/* (trust_domain text) -> rows (trust_domain, url, profile, endpoint_spiffe_id, created_at, updated_at) */
	LY_DS_FEDR_GET,
	/* () -> the same rows, ordered by trust_domain (bytewise) */
	LY_DS_FEDR_LIST,
	/* (trust_domain text) */
	LY_DS_FEDR_DELETE,
	/* () -> rows (revision int): the store revision of the last federated bundle change */
	LY_DS_FED_REVISION_GET,
	/* (revision int) */
	LY_DS_FED_REVISION_SET,
	/* The shared audit trail (datastore_audit.c). */
	/* (time int, server text, caller text|NULL, action text, entry_id text|NULL, spiffe_id text|NULL,
	 * trust_domain text|NULL, result text, detail text|NULL) */
	LY_DS_AUDIT_INSERT,
	/* (since int, limit int) -> rows (id, time, server, caller, action, entry_id, spiffe_id,
	 * trust_domain, result, detail) with time >= since, newest first, at most limit */
	LY_DS_AUDIT_LIST,
	/* (before int): every row with time < before */
	LY_DS_AUDIT_PRUNE_OLD,
	/* (keep int): every row but the newest keep */
	LY_DS_AUDIT_PRUNE_KEEP,
	LY_DS_STMT_COUNT,
};

enum ly_ds_tx {
	LY_DS_TX_NONE,  /* no transaction: each statement on its own (one-statement reads) */
	LY_DS_TX_READ,  /* a consistent snapshot */
	LY_DS_TX_WRITE, /* raises the revision first; the new value to *rev */
	/* holds the writers' lock without raising the revision (history-only
	 * writes); the revision and the change-log horizon to rev[0], rev[1] */
	LY_DS_TX_LOCK,
};

enum ly_ds_ptype {
	LY_DS_P_TEXT,  /* .text; NULL is SQL NULL */
	LY_DS_P_INT,   /* .i */
	LY_DS_P_BOOL,  /* .i: 0 or 1 */
	LY_DS_P_BYTES, /* .bytes, .len (at most LY_CA_STATE_MAX) */
};

struct ly_ds_param {
	enum ly_ds_ptype type;
	const char *text;
	int64_t i;
	const void *bytes;
	size_t len;
};

#define LY_DS_TEXT(s) { .type = LY_DS_P_TEXT, .text = (s) }
#define LY_DS_INT(v) { .type = LY_DS_P_INT, .i = (v) }
#define LY_DS_BOOL(v) { .type = LY_DS_P_BOOL, .i = (v) ? 1 : 0 }
#define LY_DS_BYTES(p, n) { .type = LY_DS_P_BYTES, .bytes = (p), .len = (n) }

/* A cursor over a statement's rows; its fields belong to the dialect. */
struct ly_ds_rows {
	struct ly_datastore *ds;
	void *h;  /* sqlite3_stmt * or PGresult * */
	int row;  /* the current row (-1 before the first) */
	int n;    /* rows, when the dialect knows them up front */
};

struct ly_ds_dialect {
	/* LY_DS_TX_NONE begins nothing (commit and rollback then do nothing) but may reconnect. */
	ly_status (*begin)(struct ly_datastore *ds, enum ly_ds_tx mode, int64_t *rev, struct ly_error *err);
	/* On failure the transaction is rolled back. */
	ly_status (*commit)(struct ly_datastore *ds, struct ly_error *err);
	/* Does nothing outside a transaction; reports nothing (the operation already failed). */
	void (*rollback)(struct ly_datastore *ds);
	/*
	 * Runs statement `id` with `n` parameters. With `rows` the caller reads
	 * the result through it (and frees it, whatever happened, once exec
	 * returned LY_OK); without, the statement runs to its end and the
	 * rows it changed go to *changed (when non-NULL).
	 */
	ly_status (*exec)(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n,
	    const char *what, struct ly_ds_rows *rows, int64_t *changed, struct ly_error *err);
	/* Moves to the next row: *row false at the end. */
	ly_status (*next)(struct ly_ds_rows *rows, bool *row, const char *what, struct ly_error *err);
	/* A text column (at most `cap` bytes, no NUL) as a heap copy; NULL allowed when `nullable`. */
	ly_status (*col_text)(struct ly_ds_rows *rows, int col, size_t cap, bool nullable, char **out,
	    struct ly_error *err);
	ly_status (*col_int64)(struct ly_ds_rows *rows, int col, int64_t *out, struct ly_error *err);
	/*
	 * A bytes column (at most `cap` bytes) into the empty `out`; the
	 * client library's copy of it is wiped (it may hold key material).
	 * `what` names the value in "datastore: corrupt row: <what>".
	 */
	ly_status (*col_bytes)(struct ly_ds_rows *rows, int col, size_t cap, const char *what, struct ly_buf *out,
	    struct ly_error *err);
	/* Whether column `col` of the current row is SQL NULL. */
	bool (*col_is_null)(struct ly_ds_rows *rows, int col);
	/*
	 * The entry on the current row of an entry statement, whole (its
	 * selectors and DNS names: the dialect may run more statements), its
	 * columns from column `col` on; its row id to *rowid when non-NULL.
	 * *out is the caller's.
	 */
	ly_status (*read_entry)(struct ly_ds_rows *rows, int col, int64_t *rowid, struct ly_entry **out,
	    struct ly_error *err);
	/* The agent on the current row of an agent statement, with its selectors. */
	ly_status (*read_agent)(struct ly_ds_rows *rows, struct ly_ds_agent **out, struct ly_error *err);
	void (*rows_free)(struct ly_ds_rows *rows);
	/*
	 * Writes the `n` selectors of row `owner` (positions 0..n-1) with
	 * statement `id` (LY_DS_ENTRY_SEL_INSERT, LY_DS_AGENT_SEL_INSERT), in
	 * the open transaction: one statement per selector or one for all,
	 * as the dialect prefers.
	 */
	ly_status (*insert_selectors)(struct ly_datastore *ds, enum ly_ds_stmt id, int64_t owner,
	    const struct ly_selector *sels, size_t n, struct ly_error *err);
	/* The same for the `n` DNS names of entry row `owner` (LY_DS_ENTRY_DNS_INSERT). */
	ly_status (*insert_dns_names)(struct ly_datastore *ds, int64_t owner, char *const *names, size_t n,
	    struct ly_error *err);
};

/*
 * Reading rows, once for every operation: runs statement `id` (parameters
 * p[0..n-1]) in the open transaction and calls on_row for each row it
 * returns, in order, with `arg`. on_row reads the current row through
 * ds->dialect (col_text, read_entry...) into `arg`, and returns LY_OK to
 * go on or an error that ends the read. The cursor is freed before this
 * returns, whatever happened; the number of rows read goes to *count when
 * non-NULL (on_row NULL: the rows are only counted). An error is the
 * dialect's ("datastore: <what>: <message>") or on_row's, unchanged.
 * Every row is read, to the statement's end (SQLite finishes a write
 * there): a statement that must return one row is checked by its caller
 * (count, or on_row refusing a second).
 */
typedef ly_status (*ly_ds_row_fn)(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg,
    struct ly_error *err);
ly_status ly_ds_engine_rows(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n,
    const char *what, ly_ds_row_fn on_row, void *arg, size_t *count, struct ly_error *err) LY_MUST_CHECK;

/*
 * ly_ds_engine_rows for a statement on a key, which returns one row or
 * none: on_row reads the first row (any after it is stepped over, not
 * read); *found says whether there was one. on_row NULL: only that.
 */
ly_status ly_ds_engine_row(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n,
    const char *what, ly_ds_row_fn on_row, void *arg, bool *found, struct ly_error *err) LY_MUST_CHECK;

/* A ly_ds_row_fn: column 0 of the row to *(int64_t *)arg. */
ly_status ly_ds_engine_int64_row(struct ly_datastore *ds, struct ly_ds_rows *rows, void *arg, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The number in column 0 of the first row of statement `id` (a counter of
 * meta, a count), read with ly_ds_engine_rows; no row is
 * ly_ds_corrupt(`name`).
 */
ly_status ly_ds_engine_read_int64(struct ly_datastore *ds, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n,
    const char *what, const char *name, int64_t *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Makes room for one more item in the array *items (`n` used, *cap
 * allocated, `size` bytes each), doubling from `first`; the array is the
 * caller's (free()). LY_E_NOMEM "<what>: out of memory" leaves it as it was.
 * `items` is the address of the array's pointer (a T **).
 */
ly_status ly_ds_engine_grow(void *items, size_t n, size_t *cap, size_t size, size_t first, const char *what,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * A list of pointers being filled by a read, one item a row: `items` is
 * the address of the list's array (a T ***), `n` of its count; `cap` the
 * room allocated. LY_DS_FILL(list) for a list with `items` and `n`.
 */
struct ly_ds_fill {
	void *items;
	size_t *n;
	size_t cap;
};
#define LY_DS_FILL(list) { .items = &(list)->items, .n = &(list)->n, .cap = 0 }

/*
 * Appends the pointer `item` to the list `f`, growing it with
 * ly_ds_engine_grow from 8. On failure `item` is still the caller's.
 */
ly_status ly_ds_engine_push(struct ly_ds_fill *f, void *item, const char *what, struct ly_error *err) LY_MUST_CHECK;

/* Operations of struct ly_datastore_ops written once, over ds->dialect. */
ly_status ly_ds_engine_token_create(struct ly_datastore *ds, const char *token, const char *spiffe_id,
    int64_t expires_at, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_token_consume(struct ly_datastore *ds, const char *token, int64_t now,
    const uint8_t *key_sha256, char **spiffe_id, bool *again, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_token_prune(struct ly_datastore *ds, int64_t now, size_t *removed, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_revision(struct ly_datastore *ds, int64_t *out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_entry_changes_prune(struct ly_datastore *ds, int64_t up_to, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_entry_create(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_entry_update(struct ly_datastore *ds, struct ly_entry *entry, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_entry_list(struct ly_datastore *ds, const struct ly_entry_filter *filter,
    struct ly_entry_list *out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_entry_changes_since(struct ly_datastore *ds, int64_t since, struct ly_entry_changes *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_agent_upsert(struct ly_datastore *ds, const struct ly_ds_agent *agent, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_entry_get(struct ly_datastore *ds, const char *entry_id, struct ly_entry **out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_entry_delete(struct ly_datastore *ds, const char *entry_id, struct ly_entry **deleted,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_agent_get(struct ly_datastore *ds, const char *spiffe_id, struct ly_ds_agent **out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_agent_list(struct ly_datastore *ds, struct ly_ds_agent_list *out, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_agent_delete(struct ly_datastore *ds, const char *spiffe_id, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_agent_set_banned(struct ly_datastore *ds, const char *spiffe_id, bool banned,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_ca_state_put(struct ly_datastore *ds, const char *name, const uint8_t *data, size_t len,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_ca_state_get(struct ly_datastore *ds, const char *name, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_ca_state_delete(struct ly_datastore *ds, const char *name, struct ly_error *err)
    LY_MUST_CHECK;
/* datastore_bundle.c: the shared bundle, for back ends shared by several servers (datastore.h). */
ly_status ly_ds_engine_bundle_publish(struct ly_datastore *ds, const char *server_id,
    const struct ly_shared_authorities *mine, int64_t now, uint64_t min_sequence, uint64_t *sequence,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_bundle_read(struct ly_datastore *ds, int64_t now, struct ly_shared_authorities *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Federation (datastore_engine_fed.c). ly_ds_engine_entry_federates_write
 * is for the back ends' entry create and update, inside their write
 * transaction: it replaces entry row `rowid`'s federates_with rows with
 * e->federates_with, refusing a trust domain without a stored bundle
 * (LY_E_INVALID "no bundle for trust domain b.test: set one first").
 */
ly_status ly_ds_engine_entry_federates_write(struct ly_datastore *ds, int64_t rowid, const struct ly_entry *e,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_bundle_put(struct ly_datastore *ds, const struct ly_bundle *bundle, int64_t *revision,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_bundle_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_bundle **out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_bundle_list(struct ly_datastore *ds, struct ly_ds_fed_bundle_list *out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_bundle_delete(struct ly_datastore *ds, const char *td, enum ly_fed_delete_mode mode,
    int64_t *revision, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_bundle_count(struct ly_datastore *ds, size_t *out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_revision(struct ly_datastore *ds, int64_t *out, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_rel_create(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel,
    const struct ly_bundle *bundle, int64_t *revision, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_rel_update(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel,
    const struct ly_bundle *bundle, int64_t *revision, struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_rel_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_rel **out,
    struct ly_error *err) LY_MUST_CHECK;
ly_status ly_ds_engine_fed_rel_list(struct ly_datastore *ds, struct ly_ds_fed_rel_list *out, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_engine_fed_rel_delete(struct ly_datastore *ds, const char *td, int64_t *revision,
    struct ly_error *err) LY_MUST_CHECK;

#endif
