/*
 * datastore_pg.c: the PostgreSQL back end of datastore.h (libpq).
 *
 * One connection, used by one thread. Every operation is one transaction.
 * A write transaction starts with the revision counter's
 * `UPDATE meta ... RETURNING value`: that row lock serializes writers (of
 * this and of any other server on the same database), so that the checks
 * that follow (duplicate entry, a token's single use) see every committed
 * write and nothing can interleave before COMMIT. A write that ends up
 * changing nothing (a refusal, a prune that found nothing) rolls back, and
 * with it the counter: the revision only counts acknowledged changes.
 * Reads run in one REPEATABLE READ, READ ONLY transaction (for a read of
 * one statement, the same result as alone and two more round trips); the
 * revision read runs alone.
 *
 * Every statement is a constant string with bound parameters
 * (PQexecParams), never formatted SQL. Selectors and DNS names travel as
 * JSON built and parsed with jansson (json_agg / json_array_elements), so
 * an entry is one round trip to read and a constant number to write.
 *
 * Connection loss: when a statement fails and the connection is
 * CONNECTION_BAD, the operation fails with LY_E_IO "datastore: connection
 * lost: ..."; the next operation calls PQreset once (and again on the one
 * after, while PostgreSQL is away), so the server recovers by itself.
 * Every session gets statement_timeout = 5 s (like SQLite's busy timeout):
 * a lock held elsewhere cannot hang the server; and synchronous_commit =
 * on: an acknowledged COMMIT is on disk (and on a synchronous standby, if
 * the cluster has one).
 *
 * Secrets: the connection string is never copied, logged or put in an
 * error (libpq keeps its own copy for PQreset); a malformed one is refused
 * without echoing it. CA state values read are wiped from libpq's result
 * before it is freed.
 *
 * Schema: versioned by the schema_version table, migrated at open in one
 * transaction under an advisory lock (two servers starting at once migrate
 * once). Version 2 is several servers on one database (schema_v2). To add
 * version 6, append { 6, schema_v6 } and raise LY_DATASTORE_PG_SCHEMA.
 *
 * What does not depend on PostgreSQL (input checks, the identity and join
 * token hashes, which must equal the SQLite back end's) is in datastore.c,
 * through datastore_internal.h.
 *
 * It is a dialect of the one transaction engine (datastore_engine.h):
 * every operation is written once in datastore_engine.c and runs over this
 * file's begin / commit / rollback, its statement table engine_sql[], its
 * row readers and its list writers (one JSON array a list).
 */
#include "server/datastore_internal.h"
#include "server/datastore_engine.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "lib/caps.h"

/* ---- schema ---- */

/*
 * Version 1: the tables of the SQLite back end, in PostgreSQL types.
 * `identity` is SHA-256 over spiffe_id, parent_id and the canonical
 * selectors, an index to find duplicate candidates (compared in full).
 */
static const char *const schema_v1[] = {
	"CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
	"INSERT INTO meta (name, value) VALUES ('revision', 0), ('changes_pruned', 0)",
	"CREATE TABLE entries ("
	" id BIGSERIAL PRIMARY KEY,"
	" entry_id TEXT NOT NULL UNIQUE,"
	" spiffe_id TEXT NOT NULL,"
	" parent_id TEXT NOT NULL,"
	" identity BYTEA NOT NULL,"
	" x509_svid_ttl INTEGER NOT NULL,"
	" jwt_svid_ttl INTEGER NOT NULL,"
	" node BOOLEAN NOT NULL,"
	" admin BOOLEAN NOT NULL,"
	" downstream BOOLEAN NOT NULL,"
	" hint TEXT,"
	" revision BIGINT NOT NULL,"
	" created_at BIGINT NOT NULL)",
	"CREATE INDEX entries_spiffe_id ON entries (spiffe_id)",
	"CREATE INDEX entries_parent_id ON entries (parent_id)",
	"CREATE INDEX entries_identity ON entries (identity)",
	"CREATE TABLE entry_selectors ("
	" entry BIGINT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,"
	" pos INTEGER NOT NULL,"
	" type TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" PRIMARY KEY (entry, pos))",
	"CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value)",
	"CREATE TABLE entry_dns_names ("
	" entry BIGINT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,"
	" pos INTEGER NOT NULL,"
	" name TEXT NOT NULL,"
	" PRIMARY KEY (entry, pos))",
	"CREATE TABLE entry_changes ("
	" revision BIGINT PRIMARY KEY,"
	" entry_id TEXT NOT NULL,"
	" op SMALLINT NOT NULL)",
	"CREATE INDEX entry_changes_entry_id ON entry_changes (entry_id, revision)",
	"CREATE TABLE join_tokens ("
	" token_sha256 BYTEA PRIMARY KEY,"
	" spiffe_id TEXT NOT NULL,"
	" expires_at BIGINT NOT NULL,"
	" created_at BIGINT NOT NULL)",
	"CREATE TABLE agents ("
	" id BIGSERIAL PRIMARY KEY,"
	" spiffe_id TEXT NOT NULL UNIQUE,"
	" attestation_type TEXT NOT NULL,"
	" serial_number TEXT NOT NULL,"
	" svid_expires_at BIGINT NOT NULL,"
	" banned BOOLEAN NOT NULL,"
	" created_at BIGINT NOT NULL,"
	" updated_at BIGINT NOT NULL)",
	"CREATE TABLE agent_selectors ("
	" agent BIGINT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,"
	" pos INTEGER NOT NULL,"
	" type TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" PRIMARY KEY (agent, pos))",
	"CREATE TABLE ca_state ("
	" name TEXT PRIMARY KEY,"
	" value BYTEA NOT NULL,"
	" updated_at BIGINT NOT NULL)",
};

/*
 * Version 2: several servers on one database (SPEC §10).
 *  - bundle_authorities: the public half of each server's CA authorities
 *    (bundle_shared.h), value as base64 DER; the meta row
 *    'bundle_sequence' counts publishes (raised under the row lock of a
 *    write transaction: a reader never sees a sequence ahead of its rows).
 *  - lanyard_notify(): NOTIFY lanyard_changes at COMMIT of every entry
 *    change ("e <revision>"), agent eviction ("a evicted <id>") or ban
 *    ("a banned <id>"), and bundle publish ("b"): the other servers push
 *    them to their agents (pg_notify.h parses the payloads). Triggers, so
 *    that every writer notifies, whatever wrote.
 */
static const char *const schema_v2[] = {
	"CREATE TABLE bundle_authorities ("
	" server_id TEXT NOT NULL,"
	" kind SMALLINT NOT NULL,"
	" kid TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" not_after BIGINT NOT NULL,"
	" updated_at BIGINT NOT NULL,"
	" PRIMARY KEY (server_id, kind, kid))",
	"INSERT INTO meta (name, value) VALUES ('bundle_sequence', 0)",
	"CREATE FUNCTION lanyard_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
	"IF TG_TABLE_NAME = 'entry_changes' THEN PERFORM pg_notify('lanyard_changes', 'e ' || NEW.revision); "
	"ELSIF TG_TABLE_NAME = 'agents' THEN "
	"IF TG_OP = 'DELETE' THEN PERFORM pg_notify('lanyard_changes', 'a evicted ' || OLD.spiffe_id); "
	"ELSIF NEW.banned AND NOT OLD.banned THEN PERFORM pg_notify('lanyard_changes', 'a banned ' || NEW.spiffe_id); "
	"END IF; "
	"ELSE PERFORM pg_notify('lanyard_changes', 'b'); END IF; RETURN NULL; END $$",
	"CREATE TRIGGER entry_changes_notify AFTER INSERT ON entry_changes FOR EACH ROW EXECUTE FUNCTION lanyard_notify()",
	"CREATE TRIGGER agents_notify AFTER DELETE OR UPDATE OF banned ON agents FOR EACH ROW "
	"EXECUTE FUNCTION lanyard_notify()",
	"CREATE TRIGGER bundle_notify AFTER INSERT OR UPDATE OR DELETE ON bundle_authorities FOR EACH STATEMENT "
	"EXECUTE FUNCTION lanyard_notify()",
};

/*
 * Version 3: federation (SPEC §9), the tables of the SQLite back end's
 * version 2; and a federated bundle's change notified to the other servers
 * as an entries change ("e <revision>"): their refresh catches the entries
 * up and re-reads the federated bundles when fed_revision moved.
 */
static const char *const schema_v3[] = {
	"INSERT INTO meta (name, value) VALUES ('fed_revision', 0)",
	"CREATE TABLE federated_bundles ("
	" trust_domain TEXT PRIMARY KEY,"
	" bundle TEXT NOT NULL,"
	" sequence BIGINT NOT NULL,"
	" revision BIGINT NOT NULL,"
	" updated_at BIGINT NOT NULL)",
	"CREATE TABLE entry_federates_with ("
	" entry BIGINT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,"
	" trust_domain TEXT NOT NULL REFERENCES federated_bundles (trust_domain),"
	" PRIMARY KEY (entry, trust_domain))",
	"CREATE INDEX entry_federates_with_td ON entry_federates_with (trust_domain)",
	"CREATE TABLE federation_relationships ("
	" trust_domain TEXT PRIMARY KEY,"
	" bundle_endpoint_url TEXT NOT NULL,"
	" profile SMALLINT NOT NULL,"
	" endpoint_spiffe_id TEXT,"
	" created_at BIGINT NOT NULL,"
	" updated_at BIGINT NOT NULL)",
	"CREATE FUNCTION lanyard_notify_federated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
	"PERFORM pg_notify('lanyard_changes', 'e ' || (SELECT value FROM meta WHERE name = 'revision')); "
	"RETURN NULL; END $$",
	("CREATE TRIGGER federated_bundles_notify AFTER INSERT OR UPDATE OR DELETE ON federated_bundles "
	 "FOR EACH STATEMENT EXECUTE FUNCTION lanyard_notify_federated()"),
};

/*
 * Version 4: the shared audit trail (datastore_audit.h), the SQLite back
 * end's version 3: every server's admin changes and refusals in one table.
 */
static const char *const schema_v4[] = {
	"CREATE TABLE audit_log ("
	" id BIGSERIAL PRIMARY KEY,"
	" time BIGINT NOT NULL,"
	" server TEXT NOT NULL,"
	" caller TEXT,"
	" action TEXT NOT NULL,"
	" entry_id TEXT,"
	" spiffe_id TEXT,"
	" trust_domain TEXT,"
	" result TEXT NOT NULL,"
	" detail TEXT)",
	"CREATE INDEX audit_log_time ON audit_log (time)",
};

/* Version 5: join token uses, the SQLite back end's version 4. */
static const char *const schema_v5[] = {
	"CREATE TABLE join_token_uses ("
	" token_sha256 BYTEA PRIMARY KEY,"
	" spiffe_id TEXT NOT NULL,"
	" key_sha256 BYTEA NOT NULL,"
	" used_at BIGINT NOT NULL,"
	" retry_until BIGINT NOT NULL)",
	"CREATE INDEX join_token_uses_spiffe_id ON join_token_uses (spiffe_id)",
};

static const struct ly_ds_migration migrations[] = {
	{ 1, schema_v1, LY_DS_NELEM(schema_v1) },
	{ 2, schema_v2, LY_DS_NELEM(schema_v2) },
	{ 3, schema_v3, LY_DS_NELEM(schema_v3) },
	{ 4, schema_v4, LY_DS_NELEM(schema_v4) },
	{ 5, schema_v5, LY_DS_NELEM(schema_v5) },
};

_Static_assert(LY_DS_NELEM(migrations) == LY_DATASTORE_PG_SCHEMA,
    "one migration per schema version, 1..LY_DATASTORE_PG_SCHEMA");

/* Serializes migrations of servers starting together ("lanyard" in ASCII, as a number). */
#define MIGRATION_LOCK "SELECT pg_advisory_xact_lock(465541878386)"

/* ---- statements ---- */

/* An entry row: 0 id, 1 entry_id, 2 spiffe_id, 3 parent_id, 4 x509_svid_ttl, 5 jwt_svid_ttl, 6 node,
 * 7 admin, 8 downstream, 9 hint, 10 revision, 11 created_at, 12 selectors (JSON), 13 DNS names (JSON),
 * 14 federates_with (JSON, sorted bytewise). */
#define ENTRY_COLS                                                                                            \
	"e.id, e.entry_id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, e.node, e.admin, "        \
	"e.downstream, e.hint, e.revision, e.created_at, "                                                      \
	"COALESCE((SELECT json_agg(json_build_array(s.type, s.value) ORDER BY s.pos) FROM entry_selectors s "  \
	"WHERE s.entry = e.id), '[]'::json), "                                                                  \
	"COALESCE((SELECT json_agg(d.name ORDER BY d.pos) FROM entry_dns_names d WHERE d.entry = e.id), "      \
	"'[]'::json), "                                                                                         \
	"COALESCE((SELECT json_agg(f.trust_domain ORDER BY f.trust_domain COLLATE \"C\") "                     \
	"FROM entry_federates_with f WHERE f.entry = e.id), '[]'::json)"
#define ENTRY_NCOLS 15
#define ENTRY_SELECT "SELECT " ENTRY_COLS " FROM entries e "

/* An agent row: 0 spiffe_id, 1 attestation_type, 2 serial_number, 3 svid_expires_at, 4 banned,
 * 5 created_at, 6 updated_at, 7 selectors (JSON). */
#define AGENT_SELECT                                                                                          \
	"SELECT a.spiffe_id, a.attestation_type, a.serial_number, a.svid_expires_at, a.banned, a.created_at, "  \
	"a.updated_at, COALESCE((SELECT json_agg(json_build_array(s.type, s.value) ORDER BY s.pos) "            \
	"FROM agent_selectors s WHERE s.agent = a.id), '[]'::json) FROM agents a "

static const char SQL_REV_BUMP[] = "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value";
static const char SQL_META_LOCK[] =
    "SELECT (SELECT value FROM meta WHERE name = 'revision' FOR UPDATE), "
    "(SELECT value FROM meta WHERE name = 'changes_pruned')";
/* The statements of the engine (datastore_engine.h), in this dialect. */
static const char *const engine_sql[LY_DS_STMT_COUNT] = {
	[LY_DS_TOKEN_INSERT] =
	    "INSERT INTO join_tokens (token_sha256, spiffe_id, expires_at, created_at) VALUES ($1, $2, $3, $4)",
	[LY_DS_TOKEN_TAKE] = "DELETE FROM join_tokens WHERE token_sha256 = $1 RETURNING spiffe_id, expires_at",
	[LY_DS_TOKEN_PRUNE] = "DELETE FROM join_tokens WHERE expires_at <= $1",
	[LY_DS_TOKEN_USE_INSERT] = "INSERT INTO join_token_uses "
	                           "(token_sha256, spiffe_id, key_sha256, used_at, retry_until) VALUES ($1, $2, $3, $4, $5) "
	                           "ON CONFLICT (token_sha256) DO UPDATE SET spiffe_id = excluded.spiffe_id, "
	                           "key_sha256 = excluded.key_sha256, used_at = excluded.used_at, "
	                           "retry_until = excluded.retry_until",
	[LY_DS_TOKEN_USE_GET] =
	    "SELECT spiffe_id FROM join_token_uses WHERE token_sha256 = $1 AND key_sha256 = $2 AND retry_until > $3",
	[LY_DS_TOKEN_USE_PRUNE] = "DELETE FROM join_token_uses WHERE retry_until <= $1",
	[LY_DS_TOKEN_USE_FORGET] = "DELETE FROM join_token_uses WHERE spiffe_id = $1",
	[LY_DS_AGENT_DELETE] = "DELETE FROM agents WHERE spiffe_id = $1",
	[LY_DS_AGENT_BAN] = "UPDATE agents SET banned = $2, updated_at = $3 WHERE spiffe_id = $1",
	/* bytea in binary format: the bytes as they are, no escaping. */
	[LY_DS_CA_PUT] = "INSERT INTO ca_state (name, value, updated_at) VALUES ($1, $2, $3) "
	                 "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
	[LY_DS_CA_GET] = "SELECT value FROM ca_state WHERE name = $1",
	[LY_DS_CA_DELETE] = "DELETE FROM ca_state WHERE name = $1",
	[LY_DS_REVISION] = "SELECT value FROM meta WHERE name = 'revision'",
	[LY_DS_CHANGES_PRUNE] = "DELETE FROM entry_changes WHERE revision <= $1",
	[LY_DS_PRUNED_SET] = "UPDATE meta SET value = $1 WHERE name = 'changes_pruned'",
	[LY_DS_ENTRY_BY_ID] = ENTRY_SELECT "WHERE e.entry_id = $1",
	[LY_DS_ENTRY_DELETE] = "DELETE FROM entries WHERE id = $1",
	[LY_DS_CHANGE_INSERT] = "INSERT INTO entry_changes (revision, entry_id, op) VALUES ($1, $2, $3)",
	[LY_DS_AGENT_GET] = AGENT_SELECT "WHERE a.spiffe_id = $1",
	/* COLLATE "C": byte order, whatever the database's collation (as SQLite sorts). */
	[LY_DS_AGENT_LIST] = AGENT_SELECT "ORDER BY a.spiffe_id COLLATE \"C\"",
	[LY_DS_ENTRY_BY_IDENTITY] = ENTRY_SELECT "WHERE e.identity = $1",
	[LY_DS_ENTRY_LOOKUP] = "SELECT id, created_at FROM entries WHERE entry_id = $1",
	[LY_DS_ENTRY_LIST_ALL] = ENTRY_SELECT "ORDER BY e.id",
	[LY_DS_ENTRY_LIST_BY_SPIFFE_ID] =
	    ENTRY_SELECT "WHERE e.spiffe_id = $1 AND ($2::text IS NULL OR e.parent_id = $2::text) ORDER BY e.id",
	[LY_DS_ENTRY_LIST_BY_PARENT_ID] = ENTRY_SELECT "WHERE e.parent_id = $1 ORDER BY e.id",
	[LY_DS_ENTRY_INSERT] = "INSERT INTO entries (entry_id, spiffe_id, parent_id, identity, x509_svid_ttl, "
	                       "jwt_svid_ttl, node, admin, downstream, hint, revision, created_at) "
	                       "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
	[LY_DS_ENTRY_UPDATE] = "UPDATE entries SET spiffe_id = $2, parent_id = $3, identity = $4, x509_svid_ttl = $5, "
	                       "jwt_svid_ttl = $6, node = $7, admin = $8, downstream = $9, hint = $10, revision = $11 "
	                       "WHERE id = $1",
	/* (entry, JSON array of [type, value]): all in one statement */
	[LY_DS_ENTRY_SEL_INSERT] = "INSERT INTO entry_selectors (entry, pos, type, value) SELECT $1, x.o - 1, x.j->>0, "
	                           "x.j->>1 FROM json_array_elements($2::json) WITH ORDINALITY AS x(j, o)",
	[LY_DS_ENTRY_SEL_DELETE] = "DELETE FROM entry_selectors WHERE entry = $1",
	/* (entry, JSON array of names) */
	[LY_DS_ENTRY_DNS_INSERT] = "INSERT INTO entry_dns_names (entry, pos, name) SELECT $1, x.o - 1, x.n "
	                           "FROM json_array_elements_text($2::json) WITH ORDINALITY AS x(n, o)",
	[LY_DS_ENTRY_DNS_DELETE] = "DELETE FROM entry_dns_names WHERE entry = $1",
	[LY_DS_META_GET] = "SELECT (SELECT value FROM meta WHERE name = 'revision'), "
	                   "(SELECT value FROM meta WHERE name = 'changes_pruned')",
	/* The entry as it is now (NULL columns when deleted). */
	[LY_DS_CHANGES_SINCE] = "SELECT c.entry_id, c.revision, c.op, " ENTRY_COLS " FROM (SELECT DISTINCT ON "
	                        "(entry_id) entry_id, revision, op FROM entry_changes WHERE revision > $1 "
	                        "ORDER BY entry_id, revision DESC) c LEFT JOIN entries e ON e.entry_id = c.entry_id "
	                        "ORDER BY c.revision",
	[LY_DS_AGENT_UPSERT] = "INSERT INTO agents (spiffe_id, attestation_type, serial_number, svid_expires_at, "
	                       "banned, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT "
	                       "(spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type, "
	                       "serial_number = excluded.serial_number, svid_expires_at = excluded.svid_expires_at, "
	                       "updated_at = excluded.updated_at RETURNING id",
	[LY_DS_AGENT_SEL_DELETE] = "DELETE FROM agent_selectors WHERE agent = $1",
	/* (agent, JSON array of [type, value]) */
	[LY_DS_AGENT_SEL_INSERT] = "INSERT INTO agent_selectors (agent, pos, type, value) SELECT $1, x.o - 1, x.j->>0, "
	                           "x.j->>1 FROM json_array_elements($2::json) WITH ORDINALITY AS x(j, o)",
	[LY_DS_BUNDLE_CLEAR] = "DELETE FROM bundle_authorities WHERE server_id = $1",
	[LY_DS_BUNDLE_INSERT] = "INSERT INTO bundle_authorities (server_id, kind, kid, value, not_after, updated_at) "
	                        "VALUES ($1, $2, $3, $4, $5, $6)",
	[LY_DS_BUNDLE_PRUNE] = "DELETE FROM bundle_authorities WHERE not_after <= $1",
	[LY_DS_BUNDLE_SEQ_BUMP] = "UPDATE meta SET value = GREATEST(value, $1::bigint) + 1 WHERE name = 'bundle_sequence' "
	                          "RETURNING value",
	[LY_DS_BUNDLE_SEQ_GET] = "SELECT value FROM meta WHERE name = 'bundle_sequence'",
	[LY_DS_BUNDLE_LIST] = "SELECT server_id, kind, kid, value, not_after FROM bundle_authorities "
	                      "WHERE not_after > $1 ORDER BY kind, server_id COLLATE \"C\", kid COLLATE \"C\"",
	[LY_DS_REV_BUMP] = SQL_REV_BUMP,
	[LY_DS_ENTRY_SET_REVISION] = "UPDATE entries SET revision = $2 WHERE id = $1",
	[LY_DS_FEDB_PUT] = "INSERT INTO federated_bundles (trust_domain, bundle, sequence, revision, updated_at) "
	                   "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (trust_domain) DO UPDATE SET "
	                   "bundle = excluded.bundle, sequence = excluded.sequence, revision = excluded.revision, "
	                   "updated_at = excluded.updated_at",
	[LY_DS_FEDB_GET] = "SELECT trust_domain, bundle, revision, updated_at FROM federated_bundles "
	                   "WHERE trust_domain = $1",
	[LY_DS_FEDB_LIST] = "SELECT trust_domain, bundle, revision, updated_at FROM federated_bundles "
	                    "ORDER BY trust_domain COLLATE \"C\"",
	[LY_DS_FEDB_DELETE] = "DELETE FROM federated_bundles WHERE trust_domain = $1",
	[LY_DS_FEDB_COUNT] = "SELECT count(*) FROM federated_bundles",
	[LY_DS_FEDB_ENTRIES] = "SELECT e.id, e.entry_id FROM entries e JOIN entry_federates_with f ON f.entry = e.id "
	                       "WHERE f.trust_domain = $1 ORDER BY e.id",
	[LY_DS_FEDW_INSERT] = "INSERT INTO entry_federates_with (entry, trust_domain) "
	                      "SELECT $1, trust_domain FROM federated_bundles WHERE trust_domain = $2",
	[LY_DS_FEDW_DELETE_ENTRY] = "DELETE FROM entry_federates_with WHERE entry = $1",
	[LY_DS_FEDW_DELETE_TD] = "DELETE FROM entry_federates_with WHERE trust_domain = $1",
	[LY_DS_FEDR_INSERT] = "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, "
	                      "endpoint_spiffe_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
	[LY_DS_FEDR_UPDATE] = "UPDATE federation_relationships SET bundle_endpoint_url = $2, profile = $3, "
	                      "endpoint_spiffe_id = $4, updated_at = $5 WHERE trust_domain = $1",
	[LY_DS_FEDR_GET] = "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, created_at, "
	                   "updated_at FROM federation_relationships WHERE trust_domain = $1",
	[LY_DS_FEDR_LIST] = "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, created_at, "
	                    "updated_at FROM federation_relationships ORDER BY trust_domain COLLATE \"C\"",
	[LY_DS_FEDR_DELETE] = "DELETE FROM federation_relationships WHERE trust_domain = $1",
	[LY_DS_FED_REVISION_GET] = "SELECT value FROM meta WHERE name = 'fed_revision'",
	[LY_DS_FED_REVISION_SET] = "UPDATE meta SET value = $1 WHERE name = 'fed_revision'",
	[LY_DS_AUDIT_INSERT] = "INSERT INTO audit_log (time, server, caller, action, entry_id, spiffe_id, trust_domain, "
	                       "result, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
	[LY_DS_AUDIT_LIST] = "SELECT id, time, server, caller, action, entry_id, spiffe_id, trust_domain, result, detail "
	                     "FROM audit_log WHERE time >= $1 ORDER BY id DESC LIMIT $2",
	[LY_DS_AUDIT_PRUNE_OLD] = "DELETE FROM audit_log WHERE time < $1",
	[LY_DS_AUDIT_PRUNE_KEEP] = "DELETE FROM audit_log WHERE id <= "
	                           "(SELECT id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET $1)",
};

/* The statements whose results come in binary format (bytea values). */
static const bool engine_binary[LY_DS_STMT_COUNT] = {
	[LY_DS_CA_GET] = true,
};

/* ---- connection, errors, statements ---- */

struct pg_ds {
	struct ly_datastore base; /* first: a struct ly_datastore * is a struct pg_ds * */
	PGconn *conn;
	bool in_tx;
	bool broken; /* a failure said the session is gone: reset before the next operation */
};

static struct pg_ds *
to_pg(struct ly_datastore *ds)
{
	return (struct pg_ds *)ds;
}

/* Notices (CREATE TABLE IF NOT EXISTS, ...) would go to stderr: dropped. */
static void
no_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* A libpq message on one line (runs of white space become one space), in `buf`. */
static const char *
one_line(const char *msg, char *buf, size_t size)
{
	size_t n = 0;
	bool space = false;
	if (msg == NULL)
		msg = "";
	for (const char *p = msg; *p != '\0' && n + 1 < size; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
			space = n > 0;
			continue;
		}
		if (space && n + 2 < size)
			buf[n++] = ' ';
		space = false;
		buf[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	buf[n] = '\0';
	return n > 0 ? buf : "unknown error";
}

static bool
conn_lost(const struct pg_ds *ds)
{
	return ds->conn == NULL || ds->broken || PQstatus(ds->conn) == CONNECTION_BAD;
}

/*
 * A failed statement that means the session is gone though libpq may not
 * have marked it CONNECTION_BAD yet: no SQLSTATE (libpq's own failure:
 * "server closed the connection unexpectedly"), class 08 (connection
 * exception), 57P01..57P03 (administrator or crash shutdown, cannot connect
 * now).
 */
static bool
session_gone(const PGresult *res)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (state == NULL)
		return true;
	return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
	    strcmp(state, "57P03") == 0;
}

/*
 * The error of a failed statement: a lost connection is LY_E_IO
 * "connection lost" (the next operation reconnects); otherwise the class
 * of the SQLSTATE picks the code and PostgreSQL's message is kept.
 */
static ly_status
pg_fail(struct pg_ds *ds, const PGresult *res, const char *what, struct ly_error *err)
{
	char msg[512];
	if (conn_lost(ds) || session_gone(res)) {
		ds->in_tx = false;
		ds->broken = true;
		if (res != NULL && PQresultErrorField(res, PG_DIAG_SQLSTATE) != NULL)
			return ly_error_set(err, LY_E_IO, "datastore: connection lost: %s: %s", what,
			    one_line(PQresultErrorMessage(res), msg, sizeof(msg)));
		return ly_error_set(err, LY_E_IO, "datastore: connection lost: %s: %s", what,
		    one_line(ds->conn != NULL ? PQerrorMessage(ds->conn) : "no connection", msg, sizeof(msg)));
	}
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	ly_status code = LY_E_IO;
	if (state != NULL && strncmp(state, "23", 2) == 0)
		code = LY_E_INVALID; /* integrity constraint violation */
	else if (state != NULL && strcmp(state, "53200") == 0)
		code = LY_E_NOMEM;
	else if (state != NULL && strncmp(state, "54", 2) == 0)
		code = LY_E_LIMIT; /* program limit exceeded */
	if (primary == NULL)
		primary = res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(ds->conn);
	return ly_error_set(err, code, "datastore: %s: %s", what, one_line(primary, msg, sizeof(msg)));
}

#define PARAMS_MAX 12

/* Bound parameters of one statement; numbers are formatted into `num`. */
struct params {
	int n;
	const char *v[PARAMS_MAX];
	int len[PARAMS_MAX];
	int fmt[PARAMS_MAX];
	char num[PARAMS_MAX][24];
};

static void
p_text(struct params *p, const char *s)
{
	p->v[p->n] = s; /* NULL: SQL NULL */
	p->len[p->n] = 0;
	p->fmt[p->n] = 0;
	p->n++;
}

static void
p_int(struct params *p, int64_t v)
{
	(void)snprintf(p->num[p->n], sizeof(p->num[p->n]), "%lld", (long long)v);
	p_text(p, p->num[p->n]);
}

static void
p_bool(struct params *p, bool v)
{
	p_text(p, v ? "t" : "f");
}

/* Binary bytea; len is at most LY_CA_STATE_MAX (checked by callers). */
static void
p_bytes(struct params *p, const void *data, size_t len)
{
	p->v[p->n] = len > 0 ? (const char *)data : "";
	p->len[p->n] = (int)len;
	p->fmt[p->n] = 1;
	p->n++;
}

/*
 * How long a statement may go without a byte from PostgreSQL before the
 * connection is given up: over the 5 s statement_timeout (the server's own
 * answer comes first), under the datastore's 8 s call deadline
 * (LY_DSA_DEADLINE_MS), so that the worker is free again about when its
 * caller hears the timeout, even behind a proxy that keeps TCP alive.
 */
#define PG_WIRE_IDLE_MS 7000

/*
 * PQexec / PQexecParams (`p` NULL and `simple`: the simple protocol) that
 * give up after PG_WIRE_IDLE_MS without a byte: NULL then, with
 * *timed_out, the connection marked broken (the next operation
 * reconnects; the server rolls back what was not committed). Otherwise
 * what PQexec returns: the first error result, or the last result.
 */
static PGresult *
exec_wire(struct pg_ds *ds, const char *sql, const struct params *p, bool binary, bool simple, bool *timed_out)
{
	PGresult *keep = NULL, *r;
	int sent;

	*timed_out = false;
	if (simple)
		sent = PQsendQuery(ds->conn, sql);
	else
		sent = PQsendQueryParams(ds->conn, sql, p != NULL ? p->n : 0, NULL, p != NULL ? p->v : NULL,
		    p != NULL ? p->len : NULL, p != NULL ? p->fmt : NULL, binary ? 1 : 0);
	if (!sent)
		return NULL;
	for (;;) {
		while (PQisBusy(ds->conn)) {
			struct pollfd pfd = { .fd = PQsocket(ds->conn), .events = POLLIN };
			int n = poll(&pfd, 1, PG_WIRE_IDLE_MS);
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0) {
				PQclear(keep);
				ds->broken = true;
				ds->in_tx = false;
				*timed_out = true;
				return NULL;
			}
			if (n < 0 || !PQconsumeInput(ds->conn))
				break; /* PQgetResult reports it */
		}
		if ((r = PQgetResult(ds->conn)) == NULL)
			return keep;
		if (keep != NULL && PQresultStatus(keep) != PGRES_COMMAND_OK && PQresultStatus(keep) != PGRES_TUPLES_OK) {
			PQclear(r); /* the first error wins */
			continue;
		}
		PQclear(keep);
		keep = r;
		if (PQstatus(ds->conn) == CONNECTION_BAD)
			return keep;
	}
}

/* The failure of a statement that had no answer within PG_WIRE_IDLE_MS. */
static ly_status
wire_timeout(const char *what, struct ly_error *err)
{
	return ly_error_set(err, LY_E_IO, "datastore: connection lost: %s: no answer from PostgreSQL for %d s "
	    "(connection dropped)", what, PG_WIRE_IDLE_MS / 1000);
}

/*
 * Runs one statement with the bound parameters `p` (NULL: none); text
 * results unless `binary`. The result goes to *out when non-NULL (the
 * caller PQclears it), else it is freed.
 */
static ly_status
run(struct pg_ds *ds, const char *sql, const struct params *p, bool binary, const char *what, PGresult **out,
    struct ly_error *err)
{
	if (out != NULL)
		*out = NULL;
	bool timed_out;
	PGresult *res = exec_wire(ds, sql, p, binary, false, &timed_out);
	if (timed_out)
		return wire_timeout(what, err);
	if (res == NULL)
		return pg_fail(ds, NULL, what, err);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		ly_status rc = pg_fail(ds, res, what, err);
		PQclear(res);
		return rc;
	}
	if (out != NULL)
		*out = res;
	else
		PQclear(res);
	return LY_OK;
}

/* Runs a constant statement (or several) with no parameters, through the simple query protocol. */
static ly_status
run_simple(struct pg_ds *ds, const char *sql, const char *what, PGresult **out, struct ly_error *err)
{
	if (out != NULL)
		*out = NULL;
	bool timed_out;
	PGresult *res = exec_wire(ds, sql, NULL, false, true, &timed_out);
	if (timed_out)
		return wire_timeout(what, err);
	if (res == NULL)
		return pg_fail(ds, NULL, what, err);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		ly_status rc = pg_fail(ds, res, what, err);
		PQclear(res);
		return rc;
	}
	if (out != NULL)
		*out = res;
	else
		PQclear(res);
	return LY_OK;
}

/* Affected rows of a command. */
static int64_t
affected(const PGresult *res)
{
	const char *s = PQcmdTuples((PGresult *)(uintptr_t)res);
	return s != NULL && s[0] != '\0' ? strtoll(s, NULL, 10) : 0;
}

/*
 * Per-session settings, after every (re)connection: the statement timeout;
 * synchronous_commit on whatever the server's default, so that a COMMIT
 * acknowledged is durable (datastore.h); READ COMMITTED, which the
 * revision row lock relies on (each statement sees what committed before
 * it); no notices.
 */
static ly_status
session_setup(struct pg_ds *ds, struct ly_error *err)
{
	return run_simple(ds,
	    "SET statement_timeout = 5000; SET synchronous_commit = on; SET client_min_messages = warning; "
	    "SET default_transaction_isolation = 'read committed'",
	    "session settings", NULL, err);
}

/* A lost connection is reset once per operation: PostgreSQL may be back. */
static ly_status
ensure_conn(struct pg_ds *ds, struct ly_error *err)
{
	char msg[512];
	if (!conn_lost(ds))
		return LY_OK;
	ds->in_tx = false;
	PQreset(ds->conn);
	ds->broken = PQstatus(ds->conn) != CONNECTION_OK;
	if (ds->broken)
		return ly_error_set(err, LY_E_IO, "datastore: connection lost: reconnecting failed: %s",
		    one_line(PQerrorMessage(ds->conn), msg, sizeof(msg)));
	return session_setup(ds, err);
}

enum tx_mode {
	TX_READ,  /* REPEATABLE READ, READ ONLY: a consistent snapshot */
	TX_WRITE, /* raises the revision first: writers serialize on its row */
	TX_LOCK,  /* locks the revision row without raising it (history-only writes) */
};

/*
 * Begins a transaction. TX_WRITE puts the raised revision in *rev;
 * TX_LOCK puts the revision and the change-log horizon in rev[0], rev[1].
 */
static ly_status tx_get_meta(struct pg_ds *ds, const PGresult *res, int64_t *rev, int n, struct ly_error *err);

static ly_status
tx_begin(struct pg_ds *ds, enum tx_mode mode, int64_t *rev, struct ly_error *err)
{
	ly_status rc;
	PGresult *res = NULL;

	LY_TRY(ensure_conn(ds, err));
	/* Reconnecting may have outlasted the caller's patience: a write it gave up on never begins. */
	if (ly_datastore_gave_up(&ds->base))
		return ly_error_set(err, LY_E_IO, "datastore: its caller gave up before it began (not applied)");
	if (ds->in_tx)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: nested transaction");
	ds->in_tx = true;
	switch (mode) {
	case TX_READ:
		return run_simple(ds, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "begin", NULL, err);
	case TX_WRITE:
		rc = run_simple(ds, "BEGIN", "begin", NULL, err);
		if (rc == LY_OK)
			rc = run(ds, SQL_REV_BUMP, NULL, false, "bump revision", &res, err);
		if (rc == LY_OK)
			rc = tx_get_meta(ds, res, rev, 1, err);
		break;
	case TX_LOCK:
		rc = run_simple(ds, "BEGIN", "begin", NULL, err);
		if (rc == LY_OK)
			rc = run(ds, SQL_META_LOCK, NULL, false, "lock revision", &res, err);
		if (rc == LY_OK)
			rc = tx_get_meta(ds, res, rev, 2, err);
		break;
	default:
		rc = ly_error_set(err, LY_E_INTERNAL, "datastore: bad transaction mode");
		break;
	}
	PQclear(res);
	return rc;
}

static void
tx_rollback(struct pg_ds *ds)
{
	if (!ds->in_tx)
		return;
	ds->in_tx = false;
	/* Nothing to report: the operation already failed with its own error. */
	if (!conn_lost(ds) && PQtransactionStatus(ds->conn) != PQTRANS_IDLE)
		PQclear(PQexec(ds->conn, "ROLLBACK"));
}

static ly_status
tx_commit(struct pg_ds *ds, struct ly_error *err)
{
	ly_status rc = run_simple(ds, "COMMIT", "commit", NULL, err);
	if (rc != LY_OK) {
		tx_rollback(ds);
		return rc;
	}
	ds->in_tx = false;
	return LY_OK;
}

/* ---- column readers: the database is ours, but a damaged row is refused, not trusted ---- */

static const char *
col_name(const PGresult *res, int col)
{
	const char *n = PQfname(res, col);
	return n != NULL ? n : "column";
}

static ly_status
col_text(const PGresult *res, int row, int col, size_t cap, bool nullable, char **out, struct ly_error *err)
{
	*out = NULL;
	if (PQgetisnull(res, row, col)) {
		if (nullable)
			return LY_OK;
		return ly_ds_corrupt(col_name(res, col), err);
	}
	const char *v = PQgetvalue(res, row, col);
	int n = PQgetlength(res, row, col);
	if (v == NULL || n < 0 || (size_t)n > cap || strlen(v) != (size_t)n)
		return ly_ds_corrupt(col_name(res, col), err);
	*out = strndup(v, (size_t)n);
	if (*out == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	return LY_OK;
}

static ly_status
col_int64(const PGresult *res, int row, int col, int64_t *out, struct ly_error *err)
{
	if (PQgetisnull(res, row, col))
		return ly_ds_corrupt(col_name(res, col), err);
	const char *v = PQgetvalue(res, row, col);
	char *end = NULL;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0')
		return ly_ds_corrupt(col_name(res, col), err);
	*out = (int64_t)x;
	return LY_OK;
}

static ly_status
col_int32(const PGresult *res, int row, int col, int32_t *out, struct ly_error *err)
{
	int64_t v = 0;
	LY_TRY(col_int64(res, row, col, &v, err));
	if (v < INT32_MIN || v > INT32_MAX)
		return ly_ds_corrupt(col_name(res, col), err);
	*out = (int32_t)v;
	return LY_OK;
}

static ly_status
col_bool(const PGresult *res, int row, int col, bool *out, struct ly_error *err)
{
	const char *v = PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
	if (v == NULL || (strcmp(v, "t") != 0 && strcmp(v, "f") != 0))
		return ly_ds_corrupt(col_name(res, col), err);
	*out = v[0] == 't';
	return LY_OK;
}

static ly_status
tx_get_meta(struct pg_ds *ds, const PGresult *res, int64_t *rev, int n, struct ly_error *err)
{
	(void)ds;
	if (PQntuples(res) != 1 || PQnfields(res) < n)
		return ly_ds_corrupt("meta", err);
	for (int i = 0; i < n; i++) {
		int64_t v = 0;
		LY_TRY(col_int64(res, 0, i, &v, err));
		if (rev != NULL)
			rev[i] = v;
	}
	return LY_OK;
}

/* Parses a JSON column: an array of [type, value] pairs (selectors). */
static ly_status
col_selectors(const PGresult *res, int row, int col, struct ly_selector **out, size_t *n_out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	struct ly_selector *sels = NULL;
	size_t n = 0;
	json_error_t jerr;
	json_t *arr = NULL;

	*out = NULL;
	*n_out = 0;
	if (PQgetisnull(res, row, col))
		return ly_ds_corrupt(col_name(res, col), err);
	arr = json_loadb(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), 0, &jerr);
	if (arr == NULL || !json_is_array(arr) || json_array_size(arr) > LY_SELECTORS_MAX) {
		rc = ly_ds_corrupt("selectors", err);
		goto out;
	}
	if (json_array_size(arr) > 0) {
		sels = calloc(json_array_size(arr), sizeof(*sels));
		if (sels == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *pair = json_array_get(arr, i);
		const json_t *t = json_array_get(pair, 0);
		const json_t *v = json_array_get(pair, 1);
		if (!json_is_array(pair) || json_array_size(pair) != 2 || !json_is_string(t) || !json_is_string(v) ||
		    json_string_length(t) > LY_SELECTOR_MAX || json_string_length(v) > LY_SELECTOR_MAX ||
		    strlen(json_string_value(t)) != json_string_length(t) ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			rc = ly_ds_corrupt("selectors", err);
			goto out;
		}
		sels[n].type = strdup(json_string_value(t));
		sels[n].value = strdup(json_string_value(v));
		n++;
		if (sels[n - 1].type == NULL || sels[n - 1].value == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
	}
	*out = sels;
	*n_out = n;
	sels = NULL;
out:
	ly_selectors_free(sels, n);
	json_decref(arr);
	return rc;
}

/* Parses a JSON column: an array of at most max_n strings of at most max_len bytes, into *v and *n. */
static ly_status
col_names(const PGresult *res, int row, int col, size_t max_n, size_t max_len, const char *what, char ***v,
    size_t *n, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_error_t jerr;
	json_t *arr = NULL;

	if (PQgetisnull(res, row, col))
		return ly_ds_corrupt(col_name(res, col), err);
	arr = json_loadb(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), 0, &jerr);
	if (arr == NULL || !json_is_array(arr) || json_array_size(arr) > max_n) {
		rc = ly_ds_corrupt(what, err);
		goto out;
	}
	if (json_array_size(arr) > 0) {
		*v = calloc(max_n, sizeof(**v));
		if (*v == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *s = json_array_get(arr, i);
		if (!json_is_string(s) || json_string_length(s) > max_len ||
		    strlen(json_string_value(s)) != json_string_length(s)) {
			rc = ly_ds_corrupt(what, err);
			goto out;
		}
		(*v)[*n] = strdup(json_string_value(s));
		if ((*v)[*n] == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
			goto out;
		}
		(*n)++;
	}
out:
	json_decref(arr);
	return rc;
}

/* Reads the entry at row `row` of `res`, whose ENTRY_COLS start at column `c`; its row id to *rowid. */
static ly_status
read_entry(const PGresult *res, int row, int c, int64_t *rowid, struct ly_entry **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_entry *e = NULL;
	int64_t id = 0;

	*out = NULL;
	if (PQnfields(res) < c + ENTRY_NCOLS)
		return ly_ds_corrupt("entry columns", err);
	rc = ly_entry_new(&e, err);
	if (rc != LY_OK)
		goto out;
	if ((rc = col_int64(res, row, c + 0, &id, err)) != LY_OK ||
	    (rc = col_text(res, row, c + 1, LY_ENTRY_ID_MAX, false, &e->entry_id, err)) != LY_OK ||
	    (rc = col_text(res, row, c + 2, LY_SPIFFE_ID_MAX, false, &e->spiffe_id, err)) != LY_OK ||
	    (rc = col_text(res, row, c + 3, LY_SPIFFE_ID_MAX, false, &e->parent_id, err)) != LY_OK ||
	    (rc = col_int32(res, row, c + 4, &e->x509_svid_ttl, err)) != LY_OK ||
	    (rc = col_int32(res, row, c + 5, &e->jwt_svid_ttl, err)) != LY_OK ||
	    (rc = col_bool(res, row, c + 6, &e->node, err)) != LY_OK ||
	    (rc = col_bool(res, row, c + 7, &e->admin, err)) != LY_OK ||
	    (rc = col_bool(res, row, c + 8, &e->downstream, err)) != LY_OK ||
	    (rc = col_text(res, row, c + 9, LY_ENTRY_HINT_MAX, true, &e->hint, err)) != LY_OK ||
	    (rc = col_int64(res, row, c + 10, &e->revision, err)) != LY_OK ||
	    (rc = col_int64(res, row, c + 11, &e->created_at, err)) != LY_OK ||
	    (rc = col_selectors(res, row, c + 12, &e->selectors, &e->n_selectors, err)) != LY_OK ||
	    (rc = col_names(res, row, c + 13, LY_DNS_NAMES_MAX, LY_DNS_NAME_MAX, "DNS names", &e->dns_names,
		 &e->n_dns_names, err)) != LY_OK ||
	    (rc = col_names(res, row, c + 14, LY_ENTRY_FEDERATES_WITH_MAX, LY_TRUST_DOMAIN_MAX, "federates_with",
		 &e->federates_with, &e->n_federates_with, err)) != LY_OK)
		goto out;
	if (rowid != NULL)
		*rowid = id;
	*out = e;
	e = NULL;
out:
	ly_entry_free(e);
	return rc;
}

/* ---- JSON parameters: selectors and DNS names written in one statement ---- */

static ly_status
selectors_json(const struct ly_selector *sels, size_t n, char **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *arr = json_array();

	*out = NULL;
	if (arr == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *pair = json_pack("[ss]", sels[i].type, sels[i].value);
		if (pair == NULL || json_array_append_new(arr, pair) != 0) {
			rc = ly_error_set(err, LY_E_INVALID, "datastore: selector %zu cannot be stored (not UTF-8?)",
			    i + 1);
			goto out;
		}
	}
	*out = json_dumps(arr, JSON_COMPACT);
	if (*out == NULL)
		rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
out:
	json_decref(arr);
	return rc;
}

static ly_status
dns_json(char *const *names, size_t n, char **out, struct ly_error *err)
{
	ly_status rc = LY_OK;
	json_t *arr = json_array();

	*out = NULL;
	if (arr == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	for (size_t i = 0; i < n; i++) {
		if (json_array_append_new(arr, json_string(names[i])) != 0) {
			rc = ly_error_set(err, LY_E_INVALID, "datastore: DNS name %zu cannot be stored", i + 1);
			goto out;
		}
	}
	*out = json_dumps(arr, JSON_COMPACT);
	if (*out == NULL)
		rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
out:
	json_decref(arr);
	return rc;
}

/* ---- agents ---- */

static ly_status
read_agent(const PGresult *res, int row, struct ly_ds_agent **out, struct ly_error *err)
{
	ly_status rc;
	struct ly_ds_agent *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	if (PQnfields(res) < 8) {
		rc = ly_ds_corrupt("agent columns", err);
		goto out;
	}
	if ((rc = col_text(res, row, 0, LY_SPIFFE_ID_MAX, false, &a->spiffe_id, err)) != LY_OK ||
	    (rc = col_text(res, row, 1, LY_DS_AGENT_TYPE_MAX, false, &a->attestation_type, err)) != LY_OK ||
	    (rc = col_text(res, row, 2, LY_DS_AGENT_SERIAL_MAX, false, &a->serial_number, err)) != LY_OK ||
	    (rc = col_int64(res, row, 3, &a->svid_expires_at, err)) != LY_OK ||
	    (rc = col_bool(res, row, 4, &a->banned, err)) != LY_OK ||
	    (rc = col_int64(res, row, 5, &a->created_at, err)) != LY_OK ||
	    (rc = col_int64(res, row, 6, &a->updated_at, err)) != LY_OK ||
	    (rc = col_selectors(res, row, 7, &a->selectors, &a->n_selectors, err)) != LY_OK)
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
	struct pg_ds *ds = to_pg(base);
	switch (mode) {
	case LY_DS_TX_NONE: return ensure_conn(ds, err);
	case LY_DS_TX_READ: return tx_begin(ds, TX_READ, rev, err);
	case LY_DS_TX_WRITE: return tx_begin(ds, TX_WRITE, rev, err);
	case LY_DS_TX_LOCK: return tx_begin(ds, TX_LOCK, rev, err);
	default: return ly_error_set(err, LY_E_INTERNAL, "datastore: bad transaction mode");
	}
}

static ly_status
d_commit(struct ly_datastore *base, struct ly_error *err)
{
	return tx_commit(to_pg(base), err);
}

static void
d_rollback(struct ly_datastore *base)
{
	tx_rollback(to_pg(base));
}

static ly_status
d_exec(struct ly_datastore *base, enum ly_ds_stmt id, const struct ly_ds_param *in, size_t n, const char *what,
    struct ly_ds_rows *rows, int64_t *changed, struct ly_error *err)
{
	struct pg_ds *ds = to_pg(base);
	struct params p = { 0 };
	PGresult *res = NULL;

	if ((unsigned)id >= LY_DS_STMT_COUNT || n > PARAMS_MAX)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: bad statement");
	for (size_t i = 0; i < n; i++) {
		switch (in[i].type) {
		case LY_DS_P_TEXT: p_text(&p, in[i].text); break;
		case LY_DS_P_INT: p_int(&p, in[i].i); break;
		case LY_DS_P_BOOL: p_bool(&p, in[i].i != 0); break;
		case LY_DS_P_BYTES:
			if (in[i].len > INT_MAX)
				return ly_error_set(err, LY_E_LIMIT, "datastore: %s: value too large", what);
			p_bytes(&p, in[i].bytes, in[i].len);
			break;
		default: return ly_error_set(err, LY_E_INTERNAL, "datastore: bad parameter type");
		}
	}
	LY_TRY(run(ds, engine_sql[id], &p, engine_binary[id], what, &res, err));
	if (changed != NULL)
		*changed = affected(res);
	if (rows != NULL) {
		*rows = (struct ly_ds_rows){ .ds = base, .h = res, .row = -1, .n = PQntuples(res) };
		return LY_OK;
	}
	PQclear(res);
	return LY_OK;
}

static ly_status
d_next(struct ly_ds_rows *rows, bool *row, const char *what, struct ly_error *err)
{
	(void)what;
	(void)err;
	if (rows->row < rows->n)
		rows->row++;
	*row = rows->row < rows->n;
	return LY_OK;
}

static ly_status
d_col_text(struct ly_ds_rows *rows, int col, size_t cap, bool nullable, char **out, struct ly_error *err)
{
	return col_text(rows->h, rows->row, col, cap, nullable, out, err);
}

static ly_status
d_col_int64(struct ly_ds_rows *rows, int col, int64_t *out, struct ly_error *err)
{
	return col_int64(rows->h, rows->row, col, out, err);
}

static ly_status
d_col_bytes(struct ly_ds_rows *rows, int col, size_t cap, const char *what, struct ly_buf *out,
    struct ly_error *err)
{
	PGresult *res = rows->h;
	ly_status rc = LY_OK;
	int n = PQgetlength(res, rows->row, col);
	if (PQgetisnull(res, rows->row, col) || n < 0 || (size_t)n > cap)
		rc = ly_ds_corrupt(what, err);
	else
		rc = ly_buf_set(out, PQgetvalue(res, rows->row, col), (size_t)n, err);
	/* The value may hold key material: wipe libpq's copy before it is freed. */
	if (!PQgetisnull(res, rows->row, col) && n > 0)
		OPENSSL_cleanse(PQgetvalue(res, rows->row, col), (size_t)n);
	return rc;
}

static bool
d_col_is_null(struct ly_ds_rows *rows, int col)
{
	return PQgetisnull(rows->h, rows->row, col) != 0;
}

static ly_status
d_read_entry(struct ly_ds_rows *rows, int col, int64_t *rowid, struct ly_entry **out, struct ly_error *err)
{
	return read_entry(rows->h, rows->row, col, rowid, out, err);
}

static ly_status
d_read_agent(struct ly_ds_rows *rows, struct ly_ds_agent **out, struct ly_error *err)
{
	return read_agent(rows->h, rows->row, out, err);
}

static void
d_rows_free(struct ly_ds_rows *rows)
{
	PQclear(rows->h);
	rows->h = NULL;
}

/* One statement for the whole list (a JSON array): a round trip, not one a row. */
static ly_status
d_insert_selectors(struct ly_datastore *base, enum ly_ds_stmt id, int64_t owner, const struct ly_selector *sels,
    size_t n, struct ly_error *err)
{
	char *json = NULL;
	LY_TRY(selectors_json(sels, n, &json, err));
	const struct ly_ds_param p[] = { LY_DS_INT(owner), LY_DS_TEXT(json) };
	ly_status rc = d_exec(base, id, p, LY_DS_NELEM(p), "insert selectors", NULL, NULL, err);
	free(json);
	return rc;
}

static ly_status
d_insert_dns_names(struct ly_datastore *base, int64_t owner, char *const *names, size_t n, struct ly_error *err)
{
	char *json = NULL;
	LY_TRY(dns_json(names, n, &json, err));
	const struct ly_ds_param p[] = { LY_DS_INT(owner), LY_DS_TEXT(json) };
	ly_status rc = d_exec(base, LY_DS_ENTRY_DNS_INSERT, p, LY_DS_NELEM(p), "insert DNS names", NULL, NULL, err);
	free(json);
	return rc;
}

static const struct ly_ds_dialect pg_dialect = {
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
pg_close(struct ly_datastore *base)
{
	struct pg_ds *ds = to_pg(base);
	if (ds == NULL)
		return;
	tx_rollback(ds);
	PQfinish(ds->conn);
	free(ds);
}

static const struct ly_datastore_ops pg_ops = {
	.name = "postgres",
	.close = pg_close,
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
	.bundle_publish = ly_ds_engine_bundle_publish,
	.bundle_read = ly_ds_engine_bundle_read,
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

/* Reads the schema version (0 for a new database, which gets its row); refuses a damaged table. */
static ly_status
read_schema_version(struct pg_ds *ds, int64_t *version, struct ly_error *err)
{
	ly_status rc;
	PGresult *res = NULL;

	*version = 0;
	rc = run_simple(ds, "SELECT version FROM schema_version", "read schema version", &res, err);
	if (rc != LY_OK)
		goto out;
	if (PQntuples(res) > 1) {
		rc = ly_ds_corrupt("schema_version", err);
		goto out;
	}
	if (PQntuples(res) == 0) {
		rc = run_simple(ds, "INSERT INTO schema_version (version) VALUES (0)", "schema version", NULL, err);
		goto out;
	}
	rc = col_int64(res, 0, 0, version, err);
	if (rc == LY_OK && *version < 0)
		rc = ly_ds_corrupt("schema_version", err);
out:
	PQclear(res);
	return rc;
}

static ly_status
migrate(struct pg_ds *ds, struct ly_error *err)
{
	ly_status rc;
	int64_t version = 0;
	struct params p = { 0 };

	ds->in_tx = true;
	rc = run_simple(ds, "BEGIN", "begin migration", NULL, err);
	if (rc == LY_OK)
		rc = run_simple(ds, MIGRATION_LOCK, "lock for migration", NULL, err);
	if (rc == LY_OK)
		rc = run_simple(ds, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
		    "schema version", NULL, err);
	if (rc == LY_OK)
		rc = read_schema_version(ds, &version, err);
	if (rc != LY_OK)
		goto out;
	if (version > LY_DATASTORE_PG_SCHEMA) {
		rc = ly_ds_schema_too_new(version, LY_DATASTORE_PG_SCHEMA, err);
		goto out;
	}
	for (size_t m = 0; m < LY_DS_NELEM(migrations); m++) {
		if (migrations[m].version <= version)
			continue;
		for (size_t i = 0; i < migrations[m].n; i++) {
			rc = run_simple(ds, migrations[m].stmts[i], "migrate", NULL, err);
			if (rc != LY_OK) {
				rc = ly_error_wrap(err, rc, "schema migration to version %d", migrations[m].version);
				goto out;
			}
		}
	}
	if (version < LY_DATASTORE_PG_SCHEMA) {
		p_int(&p, LY_DATASTORE_PG_SCHEMA);
		rc = run(ds, "UPDATE schema_version SET version = $1", &p, false, "write schema version", NULL, err);
		if (rc != LY_OK)
			goto out;
	}
	rc = tx_commit(ds, err);
out:
	tx_rollback(ds);
	return rc;
}

/*
 * Checks the connection string with libpq's own parser. Its message is not
 * kept: it can quote a piece of the string, which may be a password.
 */
ly_status
ly_datastore_pg_check_conninfo(const char *conninfo, struct ly_error *err)
{
	char *msg = NULL;

	if (conninfo == NULL || conninfo[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "datastore: the PostgreSQL connection string is empty");
	if (strnlen(conninfo, LY_CONFIG_VALUE_MAX + 1) > LY_CONFIG_VALUE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "datastore: the PostgreSQL connection string is over %d bytes",
		    LY_CONFIG_VALUE_MAX);
	PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
	if (opts == NULL) {
		if (msg == NULL)
			return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
		OPENSSL_cleanse(msg, strlen(msg));
		PQfreemem(msg);
		return ly_error_set(err, LY_E_INVALID,
		    "datastore: the PostgreSQL connection string is malformed (write key=value pairs or a "
		    "postgresql:// URI; it is not shown here as it may hold a password)");
	}
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
		if (o->val != NULL && strcmp(o->keyword, "password") == 0)
			OPENSSL_cleanse(o->val, strlen(o->val));
	}
	PQconninfoFree(opts);
	return LY_OK;
}

ly_status
ly_datastore_pg_open(const char *conninfo, struct ly_datastore **out, struct ly_error *err)
{
	ly_status rc;
	struct pg_ds *ds = NULL;
	char msg[512];

	if (out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "datastore: no output");
	*out = NULL;
	LY_TRY(ly_datastore_pg_check_conninfo(conninfo, err));
	ds = calloc(1, sizeof(*ds));
	if (ds == NULL)
		return ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
	ds->base.ops = &pg_ops;
	ds->base.dialect = &pg_dialect;
	/*
	 * Defaults first, then the caller's string expanded from dbname: what
	 * it sets (connect_timeout, application_name, keepalives...) wins.
	 * TCP keepalives and tcp_user_timeout: a host that drops packets breaks
	 * the connection in about 30 s instead of TCP's ~15 min of
	 * retransmissions, which would hold the datastore's worker
	 * (datastore_async.h) all that time. Ignored on Unix sockets.
	 */
	const char *const keys[] = { "connect_timeout", "fallback_application_name", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname", NULL };
	const char *const vals[] = { "10", "lanyard-server", "10", "5", "3", "30000", conninfo, NULL };
	ds->conn = PQconnectdbParams(keys, vals, 1);
	if (ds->conn == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "datastore: out of memory");
		goto out;
	}
	PQsetNoticeProcessor(ds->conn, no_notice, NULL);
	if (PQstatus(ds->conn) != CONNECTION_OK) {
		rc = ly_error_set(err, LY_E_IO, "datastore: cannot connect to PostgreSQL: %s",
		    one_line(PQerrorMessage(ds->conn), msg, sizeof(msg)));
		goto out;
	}
	rc = session_setup(ds, err);
	if (rc != LY_OK)
		goto out;
	rc = migrate(ds, err);
	if (rc != LY_OK)
		goto out;
	*out = &ds->base;
	ds = NULL;
out:
	if (ds != NULL)
		pg_close(&ds->base);
	return rc;
}
