/*
 * datastore_pg_internal.h: what the files of the PostgreSQL back end share.
 * Not for callers of the datastore (datastore.h), nor for the other back
 * end (datastore_internal.h holds what both share).
 *
 * datastore_pg.c keeps the connection (libpq, reconnection, timeouts),
 * the transactions, the dialect given to the engine (datastore_engine.h),
 * migration at open and the back end's entry points.
 * datastore_pg_sql.c holds the SQL text: the schema versions, with the
 * shared bundle's table and the triggers that NOTIFY the other servers of
 * a change (pg_notify.h LISTENs for them), and the engine's statements in
 * this dialect, the shared bundle's among them.
 * datastore_pg_rows.c decodes result rows (columns, entries, agents) and
 * encodes the lists written as JSON parameters: pure, no connection.
 *
 * Ownership and lifetimes: the SQL text is constant data with static
 * storage, read by any thread, never freed. The row readers borrow the
 * PGresult and return heap values the caller frees (below); no state is
 * kept anywhere here.
 */
#ifndef LANYARD_SERVER_DATASTORE_PG_INTERNAL_H
#define LANYARD_SERVER_DATASTORE_PG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>

#include <libpq-fe.h>

#include "lib/error.h"
#include "server/datastore_engine.h"
#include "server/datastore_internal.h"

/*
 * The schema versions 1..LY_DATASTORE_PG_SCHEMA in order (entry i is
 * version i + 1), ly_ds_pg_n_migrations of them: applied at open, in one
 * transaction under an advisory lock, from the stored version on.
 */
extern const struct ly_ds_migration ly_ds_pg_migrations[];
extern const size_t ly_ds_pg_n_migrations;

/* The engine's statements ($1 placeholders), one for every enum ly_ds_stmt. */
extern const char *const ly_ds_pg_sql[LY_DS_STMT_COUNT];

/* Whether statement `id` reads its results in binary format (bytea values). */
extern const bool ly_ds_pg_binary[LY_DS_STMT_COUNT];

/*
 * TX_LOCK's first statement: locks the revision row without raising it
 * (history-only writes); one row (revision, changes_pruned).
 */
extern const char ly_ds_pg_meta_lock[];

/* The columns of an entry statement (ENTRY_COLS in datastore_pg_sql.c), read by ly_ds_pg_read_entry. */
#define LY_DS_PG_ENTRY_NCOLS 15

/*
 * Column `col` of row `row` as text of at most `cap` bytes without a NUL,
 * a heap copy to *out (free()); SQL NULL is *out NULL when `nullable`,
 * corrupt otherwise.
 */
ly_status ly_ds_pg_col_text(const PGresult *res, int row, int col, size_t cap, bool nullable, char **out,
    struct ly_error *err) LY_MUST_CHECK;

/* Column `col` of row `row` as a whole decimal int64; SQL NULL is corrupt. */
ly_status ly_ds_pg_col_int64(const PGresult *res, int row, int col, int64_t *out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The entry on row `row`, its LY_DS_PG_ENTRY_NCOLS columns from column `c`
 * on (ENTRY_COLS), with its selectors, DNS names and federates_with; its
 * row id to *rowid when non-NULL. *out is the caller's (ly_entry_free).
 */
ly_status ly_ds_pg_read_entry(const PGresult *res, int row, int c, int64_t *rowid, struct ly_entry **out,
    struct ly_error *err) LY_MUST_CHECK;

/* The agent on row `row` of an agent statement, with its selectors; *out is the caller's (ly_ds_agent_free). */
ly_status ly_ds_pg_read_agent(const PGresult *res, int row, struct ly_ds_agent **out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The `n` selectors as a JSON array of [type, value] pairs, the `n` DNS
 * names as a JSON array of strings: one parameter for a whole list. *out
 * is a heap string the caller frees (free()); LY_E_INVALID when a value
 * cannot be JSON (not UTF-8).
 */
ly_status ly_ds_pg_selectors_json(const struct ly_selector *sels, size_t n, char **out, struct ly_error *err)
    LY_MUST_CHECK;
ly_status ly_ds_pg_dns_json(char *const *names, size_t n, char **out, struct ly_error *err) LY_MUST_CHECK;

#endif
