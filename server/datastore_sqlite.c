/*
 * datastore_sqlite.c: the SQLite back end of datastore.h.
 *
 * One connection, used by one thread. Every operation is one transaction
 * (BEGIN IMMEDIATE for writes, so that check-then-write sequences such as
 * the duplicate check or a token's single use cannot interleave with
 * another process's writes); every statement is a constant string prepared
 * once with bound parameters, never formatted SQL. Every sqlite3_* result is
 * checked and SQLite's own message is kept in the ly_error.
 *
 * Durability: WAL journal with synchronous=FULL, so a COMMIT has reached the
 * disk (fsync of the WAL) before an operation returns LY_OK.
 *
 * Schema: versioned by the schema_version table; migrations[] lists, per
 * version, the statements that bring the previous version to it, applied
 * in one transaction at open. To add version 2, append { 2, schema_v2 } and
 * raise LY_DATASTORE_SQLITE_SCHEMA.
 *
 * What does not depend on SQLite (input checks, the identity and join token
 * hashes, the free functions of datastore.h) is in datastore.c, shared with
 * the PostgreSQL back end through datastore_internal.h.
 *
 * It is a dialect of the one transaction engine (datastore_engine.h):
 * every operation is written once in datastore_engine.c and runs over this
 * file's begin / commit / rollback, its statement table engine_sql[], its
 * row readers and its list writers (one INSERT a selector or DNS name).
 */
#include "server/datastore_internal.h"
#include "server/datastore_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "lib/caps.h"
#include "lib/fsperm.h"

/* ---- schema ---- */

/*
 * Version 1. Entries are keyed by an integer row id (selectors and DNS
 * names cascade from it); `identity` is SHA-256 over spiffe_id, parent_id
 * and the canonical selector list, an index to find duplicate candidates
 * (which are then compared in full). meta holds the store revision and the
 * highest pruned change-log revision.
 */
static const char *const schema_v1[] = {
	"CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT",
	"INSERT INTO meta (name, value) VALUES ('revision', 0), ('changes_pruned', 0)",
	"CREATE TABLE entries ("
	" id INTEGER PRIMARY KEY,"
	" entry_id TEXT NOT NULL UNIQUE,"
	" spiffe_id TEXT NOT NULL,"
	" parent_id TEXT NOT NULL,"
	" identity BLOB NOT NULL,"
	" x509_svid_ttl INTEGER NOT NULL,"
	" jwt_svid_ttl INTEGER NOT NULL,"
	" node INTEGER NOT NULL,"
	" admin INTEGER NOT NULL,"
	" downstream INTEGER NOT NULL,"
	" hint TEXT,"
	" revision INTEGER NOT NULL,"
	" created_at INTEGER NOT NULL) STRICT",
	"CREATE INDEX entries_spiffe_id ON entries (spiffe_id)",
	"CREATE INDEX entries_parent_id ON entries (parent_id)",
	"CREATE INDEX entries_identity ON entries (identity)",
	"CREATE TABLE entry_selectors ("
	" entry INTEGER NOT NULL REFERENCES entries (id) ON DELETE CASCADE,"
	" pos INTEGER NOT NULL,"
	" type TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" PRIMARY KEY (entry, pos)) STRICT",
	"CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value)",
	"CREATE TABLE entry_dns_names ("
	" entry INTEGER NOT NULL REFERENCES entries (id) ON DELETE CASCADE,"
	" pos INTEGER NOT NULL,"
	" name TEXT NOT NULL,"
	" PRIMARY KEY (entry, pos)) STRICT",
	"CREATE TABLE entry_changes ("
	" revision INTEGER PRIMARY KEY,"
	" entry_id TEXT NOT NULL,"
	" op INTEGER NOT NULL) STRICT",
	"CREATE TABLE join_tokens ("
	" token_sha256 BLOB PRIMARY KEY,"
	" spiffe_id TEXT NOT NULL,"
	" expires_at INTEGER NOT NULL,"
	" created_at INTEGER NOT NULL) STRICT",
	"CREATE TABLE agents ("
	" id INTEGER PRIMARY KEY,"
	" spiffe_id TEXT NOT NULL UNIQUE,"
	" attestation_type TEXT NOT NULL,"
	" serial_number TEXT NOT NULL,"
	" svid_expires_at INTEGER NOT NULL,"
	" banned INTEGER NOT NULL,"
	" created_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL) STRICT",
	"CREATE TABLE agent_selectors ("
	" agent INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,"
	" pos INTEGER NOT NULL,"
	" type TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" PRIMARY KEY (agent, pos)) STRICT",
	"CREATE TABLE ca_state ("
	" name TEXT PRIMARY KEY,"
	" value BLOB NOT NULL,"
	" updated_at INTEGER NOT NULL) STRICT",
};

/*
 * Version 2: federation (SPEC §9). A federated bundle per trust domain (its
 * SPIFFE bundle JSON, its spiffe_sequence, the store revision of its last
 * put); meta's fed_revision, the store revision of the last federated
 * bundle change (so that readers notice a change with one row read); the trust domains each entry federates with, which must name a
 * stored bundle (the foreign key is the last guard: the engine refuses
 * first, with a message); federation relationships.
 */
static const char *const schema_v2[] = {
	"INSERT INTO meta (name, value) VALUES ('fed_revision', 0)",
	"CREATE TABLE federated_bundles ("
	" trust_domain TEXT PRIMARY KEY,"
	" bundle TEXT NOT NULL,"
	" sequence INTEGER NOT NULL,"
	" revision INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL) STRICT",
	"CREATE TABLE entry_federates_with ("
	" entry INTEGER NOT NULL REFERENCES entries (id) ON DELETE CASCADE,"
	" trust_domain TEXT NOT NULL REFERENCES federated_bundles (trust_domain),"
	" PRIMARY KEY (entry, trust_domain)) STRICT",
	"CREATE INDEX entry_federates_with_td ON entry_federates_with (trust_domain)",
	"CREATE TABLE federation_relationships ("
	" trust_domain TEXT PRIMARY KEY,"
	" bundle_endpoint_url TEXT NOT NULL,"
	" profile INTEGER NOT NULL,"
	" endpoint_spiffe_id TEXT,"
	" created_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL) STRICT",
};

/*
 * Version 3: the shared audit trail (datastore_audit.h): one row per admin
 * change or refusal, the fields of the audit line and the server that took
 * the call; AUTOINCREMENT so that an id is never given twice, even after
 * the newest rows were pruned.
 */
static const char *const schema_v3[] = {
	"CREATE TABLE audit_log ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" time INTEGER NOT NULL,"
	" server TEXT NOT NULL,"
	" caller TEXT,"
	" action TEXT NOT NULL,"
	" entry_id TEXT,"
	" spiffe_id TEXT,"
	" trust_domain TEXT,"
	" result TEXT NOT NULL,"
	" detail TEXT) STRICT",
	"CREATE INDEX audit_log_time ON audit_log (time)",
};

static const struct ly_ds_migration migrations[] = {
	{ 1, schema_v1, LY_DS_NELEM(schema_v1) },
	{ 2, schema_v2, LY_DS_NELEM(schema_v2) },
	{ 3, schema_v3, LY_DS_NELEM(schema_v3) },
};

_Static_assert(LY_DS_NELEM(migrations) == LY_DATASTORE_SQLITE_SCHEMA,
    "one migration per schema version, 1..LY_DATASTORE_SQLITE_SCHEMA");

/* ---- statements, prepared once on first use ---- */

/* An entry row (read_entry): 0 id, 1 entry_id, 2 spiffe_id, 3 parent_id, 4 x509_svid_ttl, 5 jwt_svid_ttl,
 * 6 node, 7 admin, 8 downstream, 9 hint, 10 revision, 11 created_at; its selectors and DNS names are read
 * with ST_SEL_BY_ENTRY and ST_DNS_BY_ENTRY. */
#define ENTRY_COLS                                                                                    \
	"e.id, e.entry_id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, e.node, e.admin, " \
	"e.downstream, e.hint, e.revision, e.created_at"
#define ENTRY_SELECT "SELECT " ENTRY_COLS " FROM entries e "
#define AGENT_COLS "id, spiffe_id, attestation_type, serial_number, svid_expires_at, banned, created_at, updated_at"

enum stmt_id {
	ST_BEGIN_READ,
	ST_BEGIN_WRITE,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_META_GET,
	ST_REV_BUMP,
	ST_SEL_BY_ENTRY,
	ST_DNS_BY_ENTRY,
	ST_FEDW_BY_ENTRY,
	ST_AGENT_SEL_BY_AGENT,
	ST_COUNT,
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN_READ] = "BEGIN DEFERRED",
	[ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_META_GET] = "SELECT value FROM meta WHERE name = ?1",
	[ST_REV_BUMP] = "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
	[ST_SEL_BY_ENTRY] = "SELECT type, value FROM entry_selectors WHERE entry = ?1 ORDER BY pos",
	[ST_DNS_BY_ENTRY] = "SELECT name FROM entry_dns_names WHERE entry = ?1 ORDER BY pos",
	[ST_FEDW_BY_ENTRY] = "SELECT trust_domain FROM entry_federates_with WHERE entry = ?1 ORDER BY trust_domain",
	[ST_AGENT_SEL_BY_AGENT] = "SELECT type, value FROM agent_selectors WHERE agent = ?1 ORDER BY pos",
};

/* The statements of the engine (datastore_engine.h), in this dialect. */
static const char *const engine_sql[LY_DS_STMT_COUNT] = {
	[LY_DS_TOKEN_INSERT] = "INSERT INTO join_tokens (token_sha256, spiffe_id, expires_at, created_at) "
	                       "VALUES (?1, ?2, ?3, ?4)",
	[LY_DS_TOKEN_TAKE] = "DELETE FROM join_tokens WHERE token_sha256 = ?1 RETURNING spiffe_id, expires_at",
	[LY_DS_TOKEN_PRUNE] = "DELETE FROM join_tokens WHERE expires_at <= ?1",
	[LY_DS_AGENT_DELETE] = "DELETE FROM agents WHERE spiffe_id = ?1",
	[LY_DS_AGENT_BAN] = "UPDATE agents SET banned = ?2, updated_at = ?3 WHERE spiffe_id = ?1",
	[LY_DS_CA_PUT] = "INSERT INTO ca_state (name, value, updated_at) VALUES (?1, ?2, ?3) "
	                 "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
	[LY_DS_CA_GET] = "SELECT value FROM ca_state WHERE name = ?1",
	[LY_DS_CA_DELETE] = "DELETE FROM ca_state WHERE name = ?1",
	[LY_DS_REVISION] = "SELECT value FROM meta WHERE name = 'revision'",
	[LY_DS_CHANGES_PRUNE] = "DELETE FROM entry_changes WHERE revision <= ?1",
	[LY_DS_PRUNED_SET] = "UPDATE meta SET value = ?1 WHERE name = 'changes_pruned'",
	[LY_DS_ENTRY_BY_ID] = ENTRY_SELECT "WHERE e.entry_id = ?1",
	[LY_DS_ENTRY_DELETE] = "DELETE FROM entries WHERE id = ?1",
	[LY_DS_CHANGE_INSERT] = "INSERT INTO entry_changes (revision, entry_id, op) VALUES (?1, ?2, ?3)",
	[LY_DS_AGENT_GET] = "SELECT " AGENT_COLS " FROM agents WHERE spiffe_id = ?1",
	[LY_DS_AGENT_LIST] = "SELECT " AGENT_COLS " FROM agents ORDER BY spiffe_id",
	[LY_DS_ENTRY_BY_IDENTITY] = ENTRY_SELECT "WHERE e.identity = ?1",
	[LY_DS_ENTRY_LOOKUP] = "SELECT id, created_at FROM entries WHERE entry_id = ?1",
	[LY_DS_ENTRY_LIST_ALL] = ENTRY_SELECT "ORDER BY e.id",
	[LY_DS_ENTRY_LIST_BY_SPIFFE_ID] = ENTRY_SELECT "WHERE e.spiffe_id = ?1 AND (?2 IS NULL OR e.parent_id = ?2) "
	                                  "ORDER BY e.id",
	[LY_DS_ENTRY_LIST_BY_PARENT_ID] = ENTRY_SELECT "WHERE e.parent_id = ?1 ORDER BY e.id",
	[LY_DS_ENTRY_INSERT] = "INSERT INTO entries (entry_id, spiffe_id, parent_id, identity, x509_svid_ttl, "
	                       "jwt_svid_ttl, node, admin, downstream, hint, revision, created_at) "
	                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
	[LY_DS_ENTRY_UPDATE] = "UPDATE entries SET spiffe_id = ?2, parent_id = ?3, identity = ?4, "
	                       "x509_svid_ttl = ?5, jwt_svid_ttl = ?6, node = ?7, admin = ?8, downstream = ?9, "
	                       "hint = ?10, revision = ?11 WHERE id = ?1",
	/* (entry, pos, type, value): one row a statement */
	[LY_DS_ENTRY_SEL_INSERT] = "INSERT INTO entry_selectors (entry, pos, type, value) VALUES (?1, ?2, ?3, ?4)",
	[LY_DS_ENTRY_SEL_DELETE] = "DELETE FROM entry_selectors WHERE entry = ?1",
	/* (entry, pos, name) */
	[LY_DS_ENTRY_DNS_INSERT] = "INSERT INTO entry_dns_names (entry, pos, name) VALUES (?1, ?2, ?3)",
	[LY_DS_ENTRY_DNS_DELETE] = "DELETE FROM entry_dns_names WHERE entry = ?1",
	[LY_DS_META_GET] = "SELECT (SELECT value FROM meta WHERE name = 'revision'), "
	                   "(SELECT value FROM meta WHERE name = 'changes_pruned')",
	/* SQLite takes bare columns from the row holding the max(): op is the latest op. */
	[LY_DS_CHANGES_SINCE] = "SELECT c.entry_id, c.r, c.op, " ENTRY_COLS " FROM (SELECT entry_id, "
	                        "max(revision) AS r, op FROM entry_changes WHERE revision > ?1 GROUP BY entry_id) c "
	                        "LEFT JOIN entries e ON e.entry_id = c.entry_id ORDER BY c.r",
	[LY_DS_AGENT_UPSERT] = "INSERT INTO agents (spiffe_id, attestation_type, serial_number, svid_expires_at, "
	                       "banned, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) "
	                       "ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type, "
	                       "serial_number = excluded.serial_number, svid_expires_at = excluded.svid_expires_at, "
	                       "updated_at = excluded.updated_at RETURNING id",
	[LY_DS_AGENT_SEL_DELETE] = "DELETE FROM agent_selectors WHERE agent = ?1",
	/* (agent, pos, type, value) */
	[LY_DS_AGENT_SEL_INSERT] = "INSERT INTO agent_selectors (agent, pos, type, value) VALUES (?1, ?2, ?3, ?4)",
	[LY_DS_REV_BUMP] = "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
	[LY_DS_ENTRY_SET_REVISION] = "UPDATE entries SET revision = ?2 WHERE id = ?1",
	[LY_DS_FEDB_PUT] = "INSERT INTO federated_bundles (trust_domain, bundle, sequence, revision, updated_at) "
	                   "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (trust_domain) DO UPDATE SET "
	                   "bundle = excluded.bundle, sequence = excluded.sequence, revision = excluded.revision, "
	                   "updated_at = excluded.updated_at",
	[LY_DS_FEDB_GET] = "SELECT trust_domain, bundle, revision, updated_at FROM federated_bundles "
	                   "WHERE trust_domain = ?1",
	[LY_DS_FEDB_LIST] = "SELECT trust_domain, bundle, revision, updated_at FROM federated_bundles "
	                    "ORDER BY trust_domain",
	[LY_DS_FEDB_DELETE] = "DELETE FROM federated_bundles WHERE trust_domain = ?1",
	[LY_DS_FEDB_COUNT] = "SELECT count(*) FROM federated_bundles",
	[LY_DS_FEDB_ENTRIES] = "SELECT e.id, e.entry_id FROM entries e JOIN entry_federates_with f ON f.entry = e.id "
	                       "WHERE f.trust_domain = ?1 ORDER BY e.id",
	[LY_DS_FEDW_INSERT] = "INSERT INTO entry_federates_with (entry, trust_domain) "
	                      "SELECT ?1, trust_domain FROM federated_bundles WHERE trust_domain = ?2",
	[LY_DS_FEDW_DELETE_ENTRY] = "DELETE FROM entry_federates_with WHERE entry = ?1",
	[LY_DS_FEDW_DELETE_TD] = "DELETE FROM entry_federates_with WHERE trust_domain = ?1",
	[LY_DS_FEDR_INSERT] = "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, "
	                      "endpoint_spiffe_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[LY_DS_FEDR_UPDATE] = "UPDATE federation_relationships SET bundle_endpoint_url = ?2, profile = ?3, "
	                      "endpoint_spiffe_id = ?4, updated_at = ?5 WHERE trust_domain = ?1",
	[LY_DS_FEDR_GET] = "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, created_at, "
	                   "updated_at FROM federation_relationships WHERE trust_domain = ?1",
	[LY_DS_FEDR_LIST] = "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, created_at, "
	                    "updated_at FROM federation_relationships ORDER BY trust_domain",
	[LY_DS_FEDR_DELETE] = "DELETE FROM federation_relationships WHERE trust_domain = ?1",
	[LY_DS_FED_REVISION_GET] = "SELECT value FROM meta WHERE name = 'fed_revision'",
	[LY_DS_FED_REVISION_SET] = "UPDATE meta SET value = ?1 WHERE name = 'fed_revision'",
	[LY_DS_AUDIT_INSERT] = "INSERT INTO audit_log (time, server, caller, action, entry_id, spiffe_id, trust_domain, "
	                       "result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[LY_DS_AUDIT_LIST] = "SELECT id, time, server, caller, action, entry_id, spiffe_id, trust_domain, result, detail "
	                     "FROM audit_log WHERE time >= ?1 ORDER BY id DESC LIMIT ?2",
	[LY_DS_AUDIT_PRUNE_OLD] = "DELETE FROM audit_log WHERE time < ?1",
	[LY_DS_AUDIT_PRUNE_KEEP] = "DELETE FROM audit_log WHERE id <= "
	                           "(SELECT id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET ?1)",
};

struct sqlite_ds {
	struct ly_datastore base; /* first: a struct ly_datastore * is a struct sqlite_ds * */
	sqlite3 *db;
	char *path;
	bool in_tx;
	sqlite3_stmt *st[ST_COUNT];
	sqlite3_stmt *eng[LY_DS_STMT_COUNT];
};

static struct sqlite_ds *
to_sqlite(struct ly_datastore *ds)
{
	return (struct sqlite_ds *)ds;
}

/* EROFS, EPERM or EACCES if the datastore file cannot be opened for writing now; otherwise 0. */
static int
write_refused_errno(const struct sqlite_ds *ds)
{
	if (ds->path == NULL)
		return 0;
	int fd = open(ds->path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd >= 0) {
		(void)close(fd);
		return 0;
	}
	int e = errno;
	return e == EROFS || e == EPERM || e == EACCES ? e : 0;
}

/* Longest SQLite error we keep; the datastore path is added at open only. */
static ly_status
db_fail(struct sqlite_ds *ds, int rc, const char *what, struct ly_error *err)
{
	ly_status code;
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT: code = LY_E_INVALID; break;
	case SQLITE_NOMEM: code = LY_E_NOMEM; break;
	case SQLITE_TOOBIG: code = LY_E_LIMIT; break;
	default: code = LY_E_IO; break;
	}
	const char *msg = ds->db != NULL ? sqlite3_errmsg(ds->db) : sqlite3_errstr(rc);
	/*
	 * SQLite says "disk I/O error" whether the disk failed or the file was
	 * made read-only or immutable under us, and its sqlite3_system_errno()
	 * has lost the errno by the time the statement returns. A write open of
	 * the file (which changes nothing) tells the operator which.
	 */
	int why = (rc & 0xff) == SQLITE_IOERR ? write_refused_errno(ds) : 0;
	if (why != 0)
		return ly_error_set(err, code, "datastore: %s: %s (the datastore file is not writable: %s)", what, msg,
		    strerror(why));
	return ly_error_set(err, code, "datastore: %s: %s", what, msg);
}

/* Returns the statement cached in *slot (prepared from `sql` the first time), reset and with no bindings. */
static ly_status
cached(struct sqlite_ds *ds, sqlite3_stmt **slot, const char *sql, sqlite3_stmt **out, struct ly_error *err)
{
	*out = NULL;
	if (*slot == NULL) {
		int rc = sqlite3_prepare_v3(ds->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL);
		if (rc != SQLITE_OK)
			return db_fail(ds, rc, "prepare", err);
	} else {
		/* reset's result repeats the last step's error, already reported then. */
		(void)sqlite3_reset(*slot);
		(void)sqlite3_clear_bindings(*slot);
	}
	*out = *slot;
	return LY_OK;
}

/* Returns statement `id`, prepared, reset and with no bindings. */
static ly_status
stmt(struct sqlite_ds *ds, enum stmt_id id, sqlite3_stmt **out, struct ly_error *err)
{
	return cached(ds, &ds->st[id], stmt_sql[id], out, err);
}

/* Releases a statement's read cursor (its result was already checked). */
static void
release(sqlite3_stmt *st)
{
	if (st != NULL)
		(void)sqlite3_reset(st);
}

/*
 * Guard for sqlite3_bind_*: in a function with `ds`, `err`, `rc` and an
 * `out:` label, jumps there with the bind error.
 */
#define TRY_BIND(call)                                            \
	do {                                                      \
		int bind_rc_ = (call);                            \
		if (bind_rc_ != SQLITE_OK) {                      \
			rc = db_fail(ds, bind_rc_, "bind", err);  \
			goto out;                                 \
		}                                                 \
	} while (0)

/* Steps a statement that returns no row, then resets it. */
static ly_status
run(struct sqlite_ds *ds, sqlite3_stmt *st, const char *what, struct ly_error *err)
{
	int rc = sqlite3_step(st);
	ly_status s = LY_OK;
	if (rc != SQLITE_DONE)
		s = db_fail(ds, rc, what, err);
	release(st);
	return s;
}

/* Steps once: *row true on SQLITE_ROW, false on SQLITE_DONE. */
static ly_status
step(struct sqlite_ds *ds, sqlite3_stmt *st, bool *row, const char *what, struct ly_error *err)
{
	int rc = sqlite3_step(st);
	*row = rc == SQLITE_ROW;
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		return LY_OK;
	ly_status s = db_fail(ds, rc, what, err);
	release(st);
	return s;
}

static ly_status
run_simple(struct sqlite_ds *ds, enum stmt_id id, const char *what, struct ly_error *err)
{
	sqlite3_stmt *st;
	LY_TRY(stmt(ds, id, &st, err));
	return run(ds, st, what, err);
}

static ly_status
tx_begin(struct sqlite_ds *ds, bool write, struct ly_error *err)
{
	if (ds->in_tx)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: nested transaction");
	LY_TRY(run_simple(ds, write ? ST_BEGIN_WRITE : ST_BEGIN_READ, "begin", err));
	ds->in_tx = true;
	return LY_OK;
}

static void
tx_rollback(struct sqlite_ds *ds)
{
	if (!ds->in_tx)
		return;
	/* Nothing to report: the operation already failed with its own error. */
	if (!sqlite3_get_autocommit(ds->db))
		(void)run_simple(ds, ST_ROLLBACK, "rollback", NULL);
	ds->in_tx = false;
}

static ly_status
tx_commit(struct sqlite_ds *ds, struct ly_error *err)
{
	ly_status rc = run_simple(ds, ST_COMMIT, "commit", err);
	if (rc != LY_OK) {
		tx_rollback(ds);
		return rc;
	}
	ds->in_tx = false;
	return LY_OK;
}

/* ---- column readers: the file is ours, but a damaged one is refused, not trusted ---- */

static const char *
col_name(sqlite3_stmt *st, int col)
{
	const char *n = sqlite3_column_name(st, col);
	return n != NULL ? n : "column";
}

/* Copies text column `col` (at most `cap` bytes) into *out; NULL allowed when `nullable`. */
static ly_status
col_text(sqlite3_stmt *st, int col, size_t cap, bool nullable, char **out, struct ly_error *err)
{
	*out = NULL;
	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		if (nullable)
			return LY_OK;
		return ly_ds_corrupt(col_name(st, col), err);
	}
	const unsigned char *t = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);
	if (t == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: reading %s", col_name(st, col));
	if (n < 0 || (size_t)n > cap || strlen((const char *)t) != (size_t)n)
		return ly_ds_corrupt(col_name(st, col), err);
	*out = strndup((const char *)t, (size_t)n);
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	return LY_OK;
}

static ly_status
col_int32(sqlite3_stmt *st, int col, int32_t *out, struct ly_error *err)
{
	sqlite3_int64 v = sqlite3_column_int64(st, col);
	if (v < INT32_MIN || v > INT32_MAX)
		return ly_ds_corrupt(col_name(st, col), err);
	*out = (int32_t)v;
	return LY_OK;
}

/* Loads the selectors of row `owner` with statement `id` (type, value rows). */
static ly_status
load_selectors(struct sqlite_ds *ds, enum stmt_id id, int64_t owner, struct ly_selector **out, size_t *n_out,
    struct ly_error *err)
{
	ly_status rc;
	sqlite3_stmt *st = NULL;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	bool row;

	*out = NULL;
	*n_out = 0;
	rc = stmt(ds, id, &st, err);
	if (rc != LY_OK)
		goto out;
	TRY_BIND(sqlite3_bind_int64(st, 1, owner));
	for (;;) {
		rc = step(ds, st, &row, "load selectors", err);
		if (rc != LY_OK || !row)
			break;
		if (n == LY_SELECTORS_MAX) {
			rc = ly_ds_corrupt("too many selectors", err);
			break;
		}
		if (sels == NULL) {
			sels = calloc(LY_SELECTORS_MAX, sizeof(*sels));
			if (sels == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
				break;
			}
		}
		rc = col_text(st, 0, LY_SELECTOR_MAX, false, &sels[n].type, err);
		if (rc == LY_OK)
			rc = col_text(st, 1, LY_SELECTOR_MAX, false, &sels[n].value, err);
		n++;
		if (rc != LY_OK)
			break;
	}
	if (rc == LY_OK) {
		*out = sels;
		*n_out = n;
		sels = NULL;
	}
out:
	release(st);
	ly_selectors_free(sels, n);
	return rc;
}

/* Loads the strings of row `owner` with statement `id` (one text column) into *v, at most max_n of max_len. */
static ly_status
load_names(struct sqlite_ds *ds, enum stmt_id id, int64_t owner, size_t max_n, size_t max_len, const char *what,
    char ***v, size_t *n, struct ly_error *err)
{
	ly_status rc;
	sqlite3_stmt *st = NULL;
	bool row;

	rc = stmt(ds, id, &st, err);
	if (rc != LY_OK)
		goto out;
	TRY_BIND(sqlite3_bind_int64(st, 1, owner));
	for (;;) {
		rc = step(ds, st, &row, what, err);
		if (rc != LY_OK || !row)
			break;
		if (*n == max_n) {
			rc = ly_ds_corrupt(what, err);
			break;
		}
		if (*v == NULL) {
			*v = calloc(max_n, sizeof(**v));
			if (*v == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
				break;
			}
		}
		rc = col_text(st, 0, max_len, false, &(*v)[*n], err);
		if (rc != LY_OK)
			break;
		(*n)++;
	}
out:
	release(st);
	return rc;
}

/*
 * Reads the entry at the current row of `st`, whose ENTRY_COLS start at
 * column `c`, and its selectors and DNS names; its row id to *rowid.
 */
static ly_status
read_entry(struct sqlite_ds *ds, sqlite3_stmt *st, int c, int64_t *rowid, struct ly_entry **out,
    struct ly_error *err)
{
	ly_status rc;
	struct ly_entry *e = NULL;

	*out = NULL;
	rc = ly_entry_new(&e, err);
	if (rc != LY_OK)
		goto out;
	int64_t id = sqlite3_column_int64(st, c + 0);
	if (rowid != NULL)
		*rowid = id;
	if ((rc = col_text(st, c + 1, LY_ENTRY_ID_MAX, false, &e->entry_id, err)) != LY_OK ||
	    (rc = col_text(st, c + 2, LY_SPIFFE_ID_MAX, false, &e->spiffe_id, err)) != LY_OK ||
	    (rc = col_text(st, c + 3, LY_SPIFFE_ID_MAX, false, &e->parent_id, err)) != LY_OK ||
	    (rc = col_int32(st, c + 4, &e->x509_svid_ttl, err)) != LY_OK ||
	    (rc = col_int32(st, c + 5, &e->jwt_svid_ttl, err)) != LY_OK ||
	    (rc = col_text(st, c + 9, LY_ENTRY_HINT_MAX, true, &e->hint, err)) != LY_OK)
		goto out;
	e->node = sqlite3_column_int64(st, c + 6) != 0;
	e->admin = sqlite3_column_int64(st, c + 7) != 0;
	e->downstream = sqlite3_column_int64(st, c + 8) != 0;
	e->revision = sqlite3_column_int64(st, c + 10);
	e->created_at = sqlite3_column_int64(st, c + 11);
	rc = load_selectors(ds, ST_SEL_BY_ENTRY, id, &e->selectors, &e->n_selectors, err);
	if (rc != LY_OK)
		goto out;
	rc = load_names(ds, ST_DNS_BY_ENTRY, id, LY_DNS_NAMES_MAX, LY_DNS_NAME_MAX, "load DNS names", &e->dns_names,
	    &e->n_dns_names, err);
	if (rc != LY_OK)
		goto out;
	rc = load_names(ds, ST_FEDW_BY_ENTRY, id, LY_ENTRY_FEDERATES_WITH_MAX, LY_TRUST_DOMAIN_MAX,
	    "load federates_with", &e->federates_with, &e->n_federates_with, err);
	if (rc != LY_OK)
		goto out;
	*out = e;
	e = NULL;
out:
	ly_entry_free(e);
	return rc;
}

/* ---- meta: the revision and the change-log horizon ---- */

static ly_status
meta_get(struct sqlite_ds *ds, const char *name, int64_t *out, struct ly_error *err)
{
	ly_status rc;
	sqlite3_stmt *st = NULL;
	bool row;

	rc = stmt(ds, ST_META_GET, &st, err);
	if (rc != LY_OK)
		goto out;
	TRY_BIND(sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC));
	rc = step(ds, st, &row, "read meta", err);
	if (rc != LY_OK)
		goto out;
	if (!row) {
		rc = ly_ds_corrupt(name, err);
		goto out;
	}
	*out = sqlite3_column_int64(st, 0);
out:
	release(st);
	return rc;
}

/* Raises the store revision by one (inside a write transaction); the new value goes to *out. */
static ly_status
rev_bump(struct sqlite_ds *ds, int64_t *out, struct ly_error *err)
{
	ly_status rc;
	sqlite3_stmt *st = NULL;
	bool row;

	rc = stmt(ds, ST_REV_BUMP, &st, err);
	if (rc != LY_OK)
		goto out;
	rc = step(ds, st, &row, "bump revision", err);
	if (rc != LY_OK)
		goto out;
	if (!row) {
		rc = ly_ds_corrupt("revision", err);
		goto out;
	}
	int64_t v = sqlite3_column_int64(st, 0);
	rc = step(ds, st, &row, "bump revision", err);
	if (rc != LY_OK)
		goto out;
	if (out != NULL)
		*out = v;
out:
	release(st);
	return rc;
}

/* ---- agents ---- */

/* Reads the agent at the current row of `st` (AGENT_COLS) and its selectors. */
static ly_status
read_agent(struct sqlite_ds *ds, sqlite3_stmt *st, struct ly_ds_agent **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_ds_agent *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	int64_t id = sqlite3_column_int64(st, 0);
	if ((rc = col_text(st, 1, LY_SPIFFE_ID_MAX, false, &a->spiffe_id, err)) != LY_OK ||
	    (rc = col_text(st, 2, LY_DS_AGENT_TYPE_MAX, false, &a->attestation_type, err)) != LY_OK ||
	    (rc = col_text(st, 3, LY_DS_AGENT_SERIAL_MAX, false, &a->serial_number, err)) != LY_OK)
		goto out;
	a->svid_expires_at = sqlite3_column_int64(st, 4);
	a->banned = sqlite3_column_int64(st, 5) != 0;
	a->created_at = sqlite3_column_int64(st, 6);
	a->updated_at = sqlite3_column_int64(st, 7);
	rc = load_selectors(ds, ST_AGENT_SEL_BY_AGENT, id, &a->selectors, &a->n_selectors, err);
	if (rc != LY_OK)
		goto out;
	*out = a;
	a = NULL;
out:
	ly_ds_agent_free(a);
	return rc;
}

/* ---- the dialect (datastore_engine.h) ---- */

static ly_status
d_begin(struct ly_datastore *base, enum ly_ds_tx mode, int64_t *rev, struct ly_error *err)
{
	struct sqlite_ds *ds = to_sqlite(base);
	if (mode == LY_DS_TX_NONE)
		return LY_OK;
	LY_TRY(tx_begin(ds, mode != LY_DS_TX_READ, err));
	switch (mode) {
	case LY_DS_TX_WRITE:
		/* BEGIN IMMEDIATE already serializes writers; the revision is raised first as on PostgreSQL. */
		return rev_bump(ds, rev, err);
	case LY_DS_TX_LOCK:
		/* BEGIN IMMEDIATE is the writers' lock; the revision stays. */
		LY_TRY(meta_get(ds, "revision", &rev[0], err));
		return meta_get(ds, "changes_pruned", &rev[1], err);
	default:
		return LY_OK;
	}
}

static ly_status
d_commit(struct ly_datastore *base, struct ly_error *err)
{
	return tx_commit(to_sqlite(base), err);
}

static void
d_rollback(struct ly_datastore *base)
{
	tx_rollback(to_sqlite(base));
}

static ly_status
d_exec(struct ly_datastore *base, enum ly_ds_stmt id, const struct ly_ds_param *p, size_t n, const char *what,
    struct ly_ds_rows *rows, int64_t *changed, struct ly_error *err)
{
	struct sqlite_ds *ds = to_sqlite(base);
	ly_status rc;
	sqlite3_stmt *st = NULL;

	if ((unsigned)id >= LY_DS_STMT_COUNT || n > INT_MAX)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: bad statement");
	rc = cached(ds, &ds->eng[id], engine_sql[id], &st, err);
	if (rc != LY_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		int col = (int)i + 1;
		switch (p[i].type) {
		case LY_DS_P_TEXT: TRY_BIND(sqlite3_bind_text(st, col, p[i].text, -1, SQLITE_STATIC)); break;
		case LY_DS_P_INT:
		case LY_DS_P_BOOL: TRY_BIND(sqlite3_bind_int64(st, col, p[i].i)); break;
		case LY_DS_P_BYTES:
			if (p[i].len > INT_MAX) {
				rc = ly_error_set(err, LY_E_LIMIT, "datastore: %s: value too large", what);
				goto out;
			}
			/* A NULL blob pointer would bind SQL NULL: an empty value is a zero-length blob. */
			if (p[i].len == 0)
				TRY_BIND(sqlite3_bind_zeroblob(st, col, 0));
			else
				TRY_BIND(sqlite3_bind_blob(st, col, p[i].bytes, (int)p[i].len, SQLITE_STATIC));
			break;
		default: rc = ly_error_set(err, LY_E_INTERNAL, "datastore: bad parameter type"); goto out;
		}
	}
	if (rows != NULL) {
		*rows = (struct ly_ds_rows){ .ds = base, .h = st, .row = -1, .n = -1 };
		st = NULL;
		goto out;
	}
	rc = run(ds, st, what, err);
	st = NULL;
	if (rc == LY_OK && changed != NULL)
		*changed = sqlite3_changes(ds->db);
out:
	release(st);
	return rc;
}

static ly_status
d_next(struct ly_ds_rows *rows, bool *row, const char *what, struct ly_error *err)
{
	LY_TRY(step(to_sqlite(rows->ds), rows->h, row, what, err));
	rows->row++;
	return LY_OK;
}

static ly_status
d_col_text(struct ly_ds_rows *rows, int col, size_t cap, bool nullable, char **out, struct ly_error *err)
{
	return col_text(rows->h, col, cap, nullable, out, err);
}

static ly_status
d_col_int64(struct ly_ds_rows *rows, int col, int64_t *out, struct ly_error *err)
{
	(void)err;
	*out = sqlite3_column_int64(rows->h, col);
	return LY_OK;
}

static ly_status
d_col_bytes(struct ly_ds_rows *rows, int col, size_t cap, const char *what, struct ly_buf *out,
    struct ly_error *err)
{
	const void *p = sqlite3_column_blob(rows->h, col);
	int n = sqlite3_column_bytes(rows->h, col);
	if (n < 0 || (size_t)n > cap || (p == NULL && n > 0))
		return ly_ds_corrupt(what, err);
	return ly_buf_set(out, p, (size_t)n, err);
}

static bool
d_col_is_null(struct ly_ds_rows *rows, int col)
{
	return sqlite3_column_type(rows->h, col) == SQLITE_NULL;
}

static ly_status
d_read_entry(struct ly_ds_rows *rows, int col, int64_t *rowid, struct ly_entry **out, struct ly_error *err)
{
	return read_entry(to_sqlite(rows->ds), rows->h, col, rowid, out, err);
}

static ly_status
d_read_agent(struct ly_ds_rows *rows, struct ly_ds_agent **out, struct ly_error *err)
{
	return read_agent(to_sqlite(rows->ds), rows->h, out, err);
}

static void
d_rows_free(struct ly_ds_rows *rows)
{
	release(rows->h);
	rows->h = NULL;
}

/* One statement a row: SQLite statements are local calls, not round trips. */
static ly_status
d_insert_selectors(struct ly_datastore *base, enum ly_ds_stmt id, int64_t owner, const struct ly_selector *sels,
    size_t n, struct ly_error *err)
{
	for (size_t i = 0; i < n; i++) {
		const struct ly_ds_param p[] = { LY_DS_INT(owner), LY_DS_INT((int64_t)i), LY_DS_TEXT(sels[i].type),
			LY_DS_TEXT(sels[i].value) };
		LY_TRY(d_exec(base, id, p, LY_DS_NELEM(p), "insert selector", NULL, NULL, err));
	}
	return LY_OK;
}

static ly_status
d_insert_dns_names(struct ly_datastore *base, int64_t owner, char *const *names, size_t n, struct ly_error *err)
{
	for (size_t i = 0; i < n; i++) {
		const struct ly_ds_param p[] = { LY_DS_INT(owner), LY_DS_INT((int64_t)i), LY_DS_TEXT(names[i]) };
		LY_TRY(d_exec(base, LY_DS_ENTRY_DNS_INSERT, p, LY_DS_NELEM(p), "insert DNS name", NULL, NULL, err));
	}
	return LY_OK;
}

static const struct ly_ds_dialect sqlite_dialect = {
	.begin = d_begin,
	.commit = d_commit,
	.rollback = d_rollback,
	.exec = d_exec,
	.next = d_next,
	.col_text = d_col_text,
	.col_int64 = d_col_int64,
	.col_bytes = d_col_bytes,
	.col_is_null = d_col_is_null,
	.read_entry = d_read_entry,
	.read_agent = d_read_agent,
	.rows_free = d_rows_free,
	.insert_selectors = d_insert_selectors,
	.insert_dns_names = d_insert_dns_names,
};

/* ---- open, migrate, close ---- */

static void
sqlite_close(struct ly_datastore *base)
{
	struct sqlite_ds *ds = to_sqlite(base);
	if (ds == NULL)
		return;
	tx_rollback(ds);
	for (size_t i = 0; i < ST_COUNT; i++)
		(void)sqlite3_finalize(ds->st[i]);
	for (size_t i = 0; i < LY_DS_STMT_COUNT; i++)
		(void)sqlite3_finalize(ds->eng[i]);
	/* close_v2: a zombie connection rather than a leak if anything is left. */
	(void)sqlite3_close_v2(ds->db);
	free(ds->path);
	free(ds);
}

static const struct ly_datastore_ops sqlite_ops = {
	.name = "sqlite",
	.close = sqlite_close,
	.revision = ly_ds_engine_revision,
	.entry_create = ly_ds_engine_entry_create,
	.entry_get = ly_ds_engine_entry_get,
	.entry_update = ly_ds_engine_entry_update,
	.entry_delete = ly_ds_engine_entry_delete,
	.entry_list = ly_ds_engine_entry_list,
	.entry_changes_since = ly_ds_engine_entry_changes_since,
	.entry_changes_prune = ly_ds_engine_entry_changes_prune,
	.token_create = ly_ds_engine_token_create,
	.token_consume = ly_ds_engine_token_consume,
	.token_prune = ly_ds_engine_token_prune,
	.agent_upsert = ly_ds_engine_agent_upsert,
	.agent_get = ly_ds_engine_agent_get,
	.agent_list = ly_ds_engine_agent_list,
	.agent_delete = ly_ds_engine_agent_delete,
	.agent_set_banned = ly_ds_engine_agent_set_banned,
	.ca_state_put = ly_ds_engine_ca_state_put,
	.ca_state_get = ly_ds_engine_ca_state_get,
	.ca_state_delete = ly_ds_engine_ca_state_delete,
	.fed_bundle_put = ly_ds_engine_fed_bundle_put,
	.fed_bundle_get = ly_ds_engine_fed_bundle_get,
	.fed_bundle_list = ly_ds_engine_fed_bundle_list,
	.fed_bundle_delete = ly_ds_engine_fed_bundle_delete,
	.fed_bundle_count = ly_ds_engine_fed_bundle_count,
	.fed_rel_create = ly_ds_engine_fed_rel_create,
	.fed_rel_update = ly_ds_engine_fed_rel_update,
	.fed_rel_get = ly_ds_engine_fed_rel_get,
	.fed_rel_list = ly_ds_engine_fed_rel_list,
	.fed_rel_delete = ly_ds_engine_fed_rel_delete,
	.fed_revision = ly_ds_engine_fed_revision,
};

/*
 * Prepares and runs one constant statement to completion (set-up and
 * migrations only); the first row's text goes to `row0` if asked.
 */
static ly_status
exec_once(struct sqlite_ds *ds, const char *sql, const char *what, char *row0, size_t row0_size,
    struct ly_error *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(ds->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_fail(ds, rc, what, err);
	if (row0 != NULL && row0_size > 0)
		row0[0] = '\0';
	bool first = true;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (first && row0 != NULL && row0_size > 0) {
			const unsigned char *t = sqlite3_column_text(st, 0);
			(void)snprintf(row0, row0_size, "%s", t != NULL ? (const char *)t : "");
		}
		first = false;
	}
	ly_status s = rc == SQLITE_DONE ? LY_OK : db_fail(ds, rc, what, err);
	/* finalize repeats the last step's result, handled just above. */
	(void)sqlite3_finalize(st);
	return s;
}

/* Reads the schema version (0 for a new file); refuses a corrupt table. */
static ly_status
read_schema_version(struct sqlite_ds *ds, int64_t *version, struct ly_error *err)
{
	sqlite3_stmt *st = NULL;
	ly_status s = LY_OK;
	size_t rows = 0;
	int rc = sqlite3_prepare_v2(ds->db, "SELECT version FROM schema_version", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_fail(ds, rc, "read schema version", err);
	*version = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		*version = sqlite3_column_int64(st, 0);
		rows++;
	}
	if (rc != SQLITE_DONE)
		s = db_fail(ds, rc, "read schema version", err);
	else if (rows > 1 || *version < 0)
		s = ly_ds_corrupt("schema_version", err);
	else if (rows == 0)
		s = exec_once(ds, "INSERT INTO schema_version (version) VALUES (0)", "schema version", NULL, 0,
		    err);
	(void)sqlite3_finalize(st);
	return s;
}

static ly_status
migrate(struct sqlite_ds *ds, struct ly_error *err)
{
	ly_status rc;
	int64_t version = 0;
	sqlite3_stmt *st = NULL;

	rc = exec_once(ds, "BEGIN IMMEDIATE", "begin migration", NULL, 0, err);
	if (rc != LY_OK)
		return rc;
	rc = exec_once(ds, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT",
	    "schema version", NULL, 0, err);
	if (rc != LY_OK)
		goto out;
	rc = read_schema_version(ds, &version, err);
	if (rc != LY_OK)
		goto out;
	if (version > LY_DATASTORE_SQLITE_SCHEMA) {
		rc = ly_ds_schema_too_new(version, LY_DATASTORE_SQLITE_SCHEMA, err);
		goto out;
	}
	for (size_t m = 0; m < LY_DS_NELEM(migrations); m++) {
		if (migrations[m].version <= version)
			continue;
		for (size_t i = 0; i < migrations[m].n; i++) {
			rc = exec_once(ds, migrations[m].stmts[i], "migrate", NULL, 0, err);
			if (rc != LY_OK) {
				rc = ly_error_wrap(err, rc, "schema migration to version %d", migrations[m].version);
				goto out;
			}
		}
	}
	if (version < LY_DATASTORE_SQLITE_SCHEMA) {
		int prc = sqlite3_prepare_v2(ds->db, "UPDATE schema_version SET version = ?1", -1, &st, NULL);
		if (prc != SQLITE_OK) {
			rc = db_fail(ds, prc, "write schema version", err);
			goto out;
		}
		TRY_BIND(sqlite3_bind_int(st, 1, LY_DATASTORE_SQLITE_SCHEMA));
		prc = sqlite3_step(st);
		if (prc != SQLITE_DONE) {
			rc = db_fail(ds, prc, "write schema version", err);
			goto out;
		}
	}
	rc = exec_once(ds, "COMMIT", "commit migration", NULL, 0, err);
out:
	(void)sqlite3_finalize(st);
	if (rc != LY_OK && !sqlite3_get_autocommit(ds->db))
		(void)exec_once(ds, "ROLLBACK", "rollback migration", NULL, 0, NULL);
	return rc;
}

/*
 * Creates the file 0600 if absent (whatever the umask), tightens an
 * existing one, and refuses links, non-regular files and files of another
 * user (fsperm.h); SQLite then gives its -wal and -shm files the database
 * file's mode. Those, and a rollback journal, may already be there (a
 * crash, or planted in the data directory before it was ours): SQLite
 * would read them into the database, so they get the same rule.
 */
static ly_status
prepare_file(const char *path, struct ly_error *err)
{
	static const char *const side[] = { "-wal", "-shm", "-journal" };
	char sp[PATH_MAX];
	ly_status rc;
	int fd;

	LY_TRY(ly_fsperm_openat(AT_FDCWD, path, "datastore", O_RDWR | O_CREAT, LY_FSPERM_TIGHTEN, &fd, err));
	(void)close(fd);
	for (size_t i = 0; i < sizeof(side) / sizeof(side[0]); i++) {
		int n = snprintf(sp, sizeof(sp), "%s%s", path, side[i]);
		if (n < 0 || (size_t)n >= sizeof(sp))
			return ly_error_set(err, LY_E_LIMIT, "datastore path is longer than %d bytes", PATH_MAX - 1);
		rc = ly_fsperm_openat(AT_FDCWD, sp, sp, O_RDWR, LY_FSPERM_TIGHTEN, &fd, err);
		if (rc == LY_E_NOT_FOUND)
			continue;
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "datastore");
		(void)close(fd);
	}
	return LY_OK;
}

ly_status
ly_datastore_sqlite_open(const char *path, struct ly_datastore **out, struct ly_error *err)
{
	ly_status rc;
	struct sqlite_ds *ds = NULL;
	char mode[16];

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: no output");
	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "datastore path is empty");
	if (strnlen(path, PATH_MAX) >= PATH_MAX)
		return ly_error_set(err, LY_E_LIMIT, "datastore path is longer than %d bytes", PATH_MAX - 1);
	rc = prepare_file(path, err);
	if (rc != LY_OK)
		goto out;
	ds = calloc(1, sizeof(*ds));
	if (ds == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
		goto out;
	}
	ds->base.ops = &sqlite_ops;
	ds->base.dialect = &sqlite_dialect;
	ds->path = strdup(path);
	if (ds->path == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
		goto out;
	}
	int src = sqlite3_open_v2(path, &ds->db,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE, NULL);
	if (src != SQLITE_OK) {
		rc = ds->db == NULL ? ly_error_set(err, LY_E_NOMEM, "datastore: out of memory") :
		                      db_fail(ds, src, "open", err);
		goto out;
	}
	src = sqlite3_busy_timeout(ds->db, 5000);
	if (src != SQLITE_OK) {
		rc = db_fail(ds, src, "busy timeout", err);
		goto out;
	}
	/* The first statement reads the file header: a non-database fails here. */
	rc = exec_once(ds, "PRAGMA journal_mode = WAL", "set WAL journal", mode, sizeof(mode), err);
	if (rc != LY_OK)
		goto out;
	if (strcmp(mode, "wal") != 0) {
		rc = ly_error_set(err, LY_E_IO, "datastore: cannot use WAL journal (got %s)", mode);
		goto out;
	}
	if ((rc = exec_once(ds, "PRAGMA synchronous = FULL", "set synchronous", NULL, 0, err)) != LY_OK ||
	    (rc = exec_once(ds, "PRAGMA foreign_keys = ON", "set foreign keys", NULL, 0, err)) != LY_OK ||
	    (rc = exec_once(ds, "PRAGMA secure_delete = ON", "set secure delete", NULL, 0, err)) != LY_OK)
		goto out;
	rc = migrate(ds, err);
	if (rc != LY_OK)
		goto out;
	*out = &ds->base;
	ds = NULL;
out:
	if (rc != LY_OK)
		(void)ly_error_wrap(err, rc, "%s", path);
	if (ds != NULL)
		sqlite_close(&ds->base);
	return rc;
}
