/*
 * datastore_audit.h: the shared audit trail in the datastore (issue 16):
 * one row per admin change or refusal, with the fields of the audit line
 * (audit.h) and the server that took the call, in the table audit_log of
 * either back end (SQLite schema 3, PostgreSQL schema 4). Every server on
 * one PostgreSQL writes to the same table, so any server lists what any
 * other took (`lanyard-server audit list`).
 *
 * Same transaction as the change: ly_datastore_audit_arm puts a row in
 * wait around a worker call; the first write transaction that call
 * commits (an entry created, a token stored, an agent banned, ...)
 * inserts the row just before its COMMIT, so the change and its row
 * commit together or not at all: an acknowledged change is never missing
 * from the trail, and a change whose row cannot be written is not made.
 * It works by interposing on the store's dialect (datastore_engine.h) for
 * the duration of the call: begin notes the transaction's mode, commit of
 * a write inserts the row first; every other operation passes through.
 * A call that commits no write (a refusal, a failure) leaves the row
 * unwritten (.stored false): the caller then stores the refusal with
 * ly_datastore_audit_append, a write of its own.
 *
 * History, not state: appending, pruning and listing never raise the store
 * revision (datastore.h) and notify nobody.
 *
 * Secrets: every row goes through ly_audit_clean (audit.h) first, the
 * scrubbing of the audit line: the record's `secret` replaced wherever it
 * appears, the log redactor over `detail`, printable ASCII, field caps.
 * The secret itself is never stored.
 *
 * A store without the engine (datastore_engine.h: a test's fake) holds no
 * trail: arming does nothing and the other calls are LY_E_UNSUPPORTED.
 *
 * Threads: the datastore's (its worker's in lanyard-server); like every
 * datastore call, one at a time. Ownership: inputs are borrowed for the
 * call; a list is the caller's (ly_ds_audit_list_cleanup).
 */
#ifndef LANYARD_SERVER_DATASTORE_AUDIT_H
#define LANYARD_SERVER_DATASTORE_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"
#include "server/audit.h"
#include "server/datastore.h"
#include "server/datastore_engine.h"

/* The longest server name stored (a UUID, or a host name). */
#define LY_DS_AUDIT_SERVER_MAX 255
/* The most rows one list returns. */
#define LY_DS_AUDIT_LIST_MAX 1000

/* A row as read back. Absent fields are NULL (action, result and server never are). */
struct ly_ds_audit_row {
	int64_t id;   /* grows with each row written (its order) */
	int64_t time; /* Unix seconds, the server's clock when it took the call */
	char *server, *caller, *action, *entry_id, *spiffe_id, *trust_domain, *result, *detail;
};

struct ly_ds_audit_list {
	struct ly_ds_audit_row *items; /* oldest first */
	size_t n;
};

#define LY_DS_AUDIT_LIST_INIT { NULL, 0 }

void ly_ds_audit_list_cleanup(struct ly_ds_audit_list *list);

/*
 * A row waiting for the call's first committed write. The caller fills the
 * public part and keeps the struct alive (and unmoved) from arm to disarm.
 */
struct ly_ds_audit_txn {
	struct ly_audit_record rec; /* result "ok"; strings borrowed until disarm */
	const char *server;         /* this server's name (LY_DS_AUDIT_SERVER_MAX) */
	int64_t time;
	/* When non-NULL and rec.entry_id is NULL or empty: *entry_id_ref is
	 * read at commit (a created entry's generated ID). */
	char *const *entry_id_ref;
	/* Whether the row committed with a write of the call: read after
	 * disarm (with __atomic_load_n when another thread may). */
	bool stored;
	/* private: the interposed dialect */
	struct ly_ds_dialect shim;
	const struct ly_ds_dialect *orig;
	enum ly_ds_tx mode;
};

/*
 * Interposes `t` on `ds` until ly_datastore_audit_disarm (see the top).
 * Not nested: one armed row at a time. t->stored is set false here.
 */
void ly_datastore_audit_arm(struct ly_datastore *ds, struct ly_ds_audit_txn *t);
void ly_datastore_audit_disarm(struct ly_datastore *ds, struct ly_ds_audit_txn *t);

/*
 * Stores `rec` (action and result required: LY_E_INVALID) as taken by
 * `server` at `time`, cleaned (audit.h), on its own. LY_E_IO when the back
 * end fails.
 */
ly_status ly_datastore_audit_append(struct ly_datastore *ds, const struct ly_audit_record *rec, const char *server,
    int64_t time, struct ly_error *err) LY_MUST_CHECK;

/*
 * The newest `limit` rows (1..LY_DS_AUDIT_LIST_MAX; LY_E_LIMIT over) with
 * time >= `since`, appended to `out` (LY_DS_AUDIT_LIST_INIT) oldest first.
 * A row that is not well formed is LY_E_IO "corrupt row".
 */
ly_status ly_datastore_audit_list(struct ly_datastore *ds, int64_t since, size_t limit, struct ly_ds_audit_list *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Retention: deletes every row older than `before` (time < before) and
 * every row but the newest `keep` (0: no count limit); the number removed
 * to *removed when non-NULL.
 */
ly_status ly_datastore_audit_prune(struct ly_datastore *ds, int64_t before, int64_t keep, size_t *removed,
    struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_SERVER_DATASTORE_AUDIT_H */
