/*
 * datastore_pg_sql.c: the SQL text of the PostgreSQL back end
 * (datastore_pg_internal.h): its schema versions and the engine's
 * statements (datastore_engine.h) in this dialect. Data only: how and
 * when it runs is datastore_pg.c's.
 *
 * Two parts serve several servers on one database (SPEC §10): the shared
 * bundle (the bundle_authorities table of schema_v2, the LY_DS_BUNDLE_*
 * statements that datastore_bundle.c runs) and the change notifications
 * (the lanyard_notify triggers of schema_v2 and schema_v3: every writer,
 * whatever wrote, NOTIFYs lanyard_changes at COMMIT; pg_notify.c LISTENs
 * on a connection of its own and pg_notify.h parses the payloads, so a
 * payload changed here is changed there). A third is the shared audit
 * trail: the audit_log table of schema_v4 and the LY_DS_AUDIT_*
 * statements that datastore_audit.c runs.
 *
 * Every statement is a constant string with bound parameters ($1...),
 * never formatted SQL. Selectors and DNS names travel as JSON arrays
 * (json_agg / json_array_elements), so an entry is one round trip to
 * read and a constant number to write. A schema version, once released,
 * never changes: to add version 6, append schema_v6 to
 * ly_ds_pg_migrations and raise LY_DATASTORE_PG_SCHEMA.
 *
 * Ownership: constant data with static storage, never freed.
 */
#include "server/datastore_pg_internal.h"

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

const struct ly_ds_migration ly_ds_pg_migrations[] = {
	{ 1, schema_v1, LY_DS_NELEM(schema_v1) },
	{ 2, schema_v2, LY_DS_NELEM(schema_v2) },
	{ 3, schema_v3, LY_DS_NELEM(schema_v3) },
	{ 4, schema_v4, LY_DS_NELEM(schema_v4) },
	{ 5, schema_v5, LY_DS_NELEM(schema_v5) },
};

_Static_assert(LY_DS_NELEM(ly_ds_pg_migrations) == LY_DATASTORE_PG_SCHEMA,
    "one migration per schema version, 1..LY_DATASTORE_PG_SCHEMA");

const size_t ly_ds_pg_n_migrations = LY_DS_NELEM(ly_ds_pg_migrations);


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
#define ENTRY_SELECT "SELECT " ENTRY_COLS " FROM entries e "

/* An agent row: 0 spiffe_id, 1 attestation_type, 2 serial_number, 3 svid_expires_at, 4 banned,
 * 5 created_at, 6 updated_at, 7 selectors (JSON). */
#define AGENT_SELECT                                                                                          \
	"SELECT a.spiffe_id, a.attestation_type, a.serial_number, a.svid_expires_at, a.banned, a.created_at, "  \
	"a.updated_at, COALESCE((SELECT json_agg(json_build_array(s.type, s.value) ORDER BY s.pos) "            \
	"FROM agent_selectors s WHERE s.agent = a.id), '[]'::json) FROM agents a "

const char ly_ds_pg_meta_lock[] =
    "SELECT (SELECT value FROM meta WHERE name = 'revision' FOR UPDATE), "
    "(SELECT value FROM meta WHERE name = 'changes_pruned')";

/* The statements of the engine (datastore_engine.h), in this dialect. */
const char *const ly_ds_pg_sql[LY_DS_STMT_COUNT] = {
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
	/* TX_WRITE's first statement too: writers serialize on the revision row. */
	[LY_DS_REV_BUMP] = "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
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
const bool ly_ds_pg_binary[LY_DS_STMT_COUNT] = {
	[LY_DS_CA_GET] = true,
};
