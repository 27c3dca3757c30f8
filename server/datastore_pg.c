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
 * (PQexecParams), never formatted SQL: the text, schema and statements,
 * is in datastore_pg_sql.c (datastore_pg_internal.h). Selectors and DNS
 * names travel as JSON (json_agg / json_array_elements), built and parsed
 * with jansson in datastore_pg_rows.c, which also decodes every row: an
 * entry is one round trip to read and a constant number to write.
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
 * once); the versions are datastore_pg_sql.c's ly_ds_pg_migrations.
 *
 * What does not depend on PostgreSQL (input checks, the identity and join
 * token hashes, which must equal the SQLite back end's) is in datastore.c,
 * through datastore_internal.h.
 *
 * It is a dialect of the one transaction engine (datastore_engine.h):
 * every operation is written once in datastore_engine.c and runs over this
 * file's begin / commit / rollback, its statement table (ly_ds_pg_sql[]),
 * its row readers and its list writers (one JSON array a list; both in
 * datastore_pg_rows.c).
 */
#include "server/datastore_pg_internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "lib/caps.h"

/* Serializes migrations of servers starting together ("lanyard" in ASCII, as a number). */
#define MIGRATION_LOCK "SELECT pg_advisory_xact_lock(465541878386)"

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
 * The outcome of exec_wire as a status: a result that is not
 * COMMAND_OK / TUPLES_OK fails (pg_fail). The result goes to *out when
 * non-NULL (the caller PQclears it), else it is freed.
 */
static ly_status
run_result(struct pg_ds *ds, PGresult *res, bool timed_out, const char *what, PGresult **out, struct ly_error *err)
{
	if (out != NULL)
		*out = NULL;
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

/*
 * Runs one statement with the bound parameters `p` (NULL: none); text
 * results unless `binary`. The result as run_result says.
 */
static ly_status
run(struct pg_ds *ds, const char *sql, const struct params *p, bool binary, const char *what, PGresult **out,
    struct ly_error *err)
{
	bool timed_out;
	PGresult *res = exec_wire(ds, sql, p, binary, false, &timed_out);
	return run_result(ds, res, timed_out, what, out, err);
}

/* Runs a constant statement (or several) with no parameters, through the simple query protocol. */
static ly_status
run_simple(struct pg_ds *ds, const char *sql, const char *what, PGresult **out, struct ly_error *err)
{
	bool timed_out;
	PGresult *res = exec_wire(ds, sql, NULL, false, true, &timed_out);
	return run_result(ds, res, timed_out, what, out, err);
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
			rc = run(ds, ly_ds_pg_sql[LY_DS_REV_BUMP], NULL, false, "bump revision", &res, err);
		if (rc == LY_OK)
			rc = tx_get_meta(ds, res, rev, 1, err);
		break;
	case TX_LOCK:
		rc = run_simple(ds, "BEGIN", "begin", NULL, err);
		if (rc == LY_OK)
			rc = run(ds, ly_ds_pg_meta_lock, NULL, false, "lock revision", &res, err);
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

static ly_status
tx_get_meta(struct pg_ds *ds, const PGresult *res, int64_t *rev, int n, struct ly_error *err)
{
	(void)ds;
	if (PQntuples(res) != 1 || PQnfields(res) < n)
		return ly_ds_corrupt("meta", err);
	for (int i = 0; i < n; i++) {
		int64_t v = 0;
		LY_TRY(ly_ds_pg_col_int64(res, 0, i, &v, err));
		if (rev != NULL)
			rev[i] = v;
	}
	return LY_OK;
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
	LY_TRY(run(ds, ly_ds_pg_sql[id], &p, ly_ds_pg_binary[id], what, &res, err));
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
	return ly_ds_pg_col_text(rows->h, rows->row, col, cap, nullable, out, err);
}

static ly_status
d_col_int64(struct ly_ds_rows *rows, int col, int64_t *out, struct ly_error *err)
{
	return ly_ds_pg_col_int64(rows->h, rows->row, col, out, err);
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
	return ly_ds_pg_read_entry(rows->h, rows->row, col, rowid, out, err);
}

static ly_status
d_read_agent(struct ly_ds_rows *rows, struct ly_ds_agent **out, struct ly_error *err)
{
	return ly_ds_pg_read_agent(rows->h, rows->row, out, err);
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
	LY_TRY(ly_ds_pg_selectors_json(sels, n, &json, err));
	const struct ly_ds_param p[] = { LY_DS_INT(owner), LY_DS_TEXT(json) };
	ly_status rc = d_exec(base, id, p, LY_DS_NELEM(p), "insert selectors", NULL, NULL, err);
	free(json);
	return rc;
}

static ly_status
d_insert_dns_names(struct ly_datastore *base, int64_t owner, char *const *names, size_t n, struct ly_error *err)
{
	char *json = NULL;
	LY_TRY(ly_ds_pg_dns_json(names, n, &json, err));
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
	rc = ly_ds_pg_col_int64(res, 0, 0, version, err);
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
	for (size_t m = 0; m < ly_ds_pg_n_migrations; m++) {
		const struct ly_ds_migration *mig = &ly_ds_pg_migrations[m];
		if (mig->version <= version)
			continue;
		for (size_t i = 0; i < mig->n; i++) {
			rc = run_simple(ds, mig->stmts[i], "migrate", NULL, err);
			if (rc != LY_OK) {
				rc = ly_error_wrap(err, rc, "schema migration to version %d", mig->version);
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
