/*
 * admin_audit.h: the daemon's side of the shared audit trail
 * (datastore_audit.h): what admin_api.c and server.c call so that every
 * admin change and refusal is a row in the datastore, beside the audit
 * file or log line (audit.h), which stays as it was.
 *
 *  - A change whose datastore call writes: the call's work runs under
 *    ly_admin_audit_run, so the row commits with the change (same
 *    transaction); txn.stored says it did.
 *  - Everything else (a refusal before or by the datastore, a change made
 *    elsewhere: `federation refresh`, the fetcher's bundle.refresh):
 *    ly_admin_audit_store queues the row as a datastore call of its own.
 *  - Retention: ly_admin_audit_prune, from the server's prune timer,
 *    deletes lines older than server.audit_retention and all but the
 *    newest LY_AUDIT_ROWS_MAX.
 * The row names the server that took the call: its server ID (the UUID it
 * publishes the shared bundle under, <data_dir>/server-id) when the
 * datastore is shared, else the host name.
 *
 * Threads: ly_admin_audit_run on the datastore's worker (inside a work
 * function); the rest on the loop thread.
 */
#ifndef LANYARD_SERVER_ADMIN_AUDIT_H
#define LANYARD_SERVER_ADMIN_AUDIT_H

#include <time.h>

#include "server/audit.h"
#include "server/datastore_async.h"
#include "server/datastore_audit.h"
#include "server/server_core.h"

/* This server's name in the rows (see the top); a string that lives as long as `srv`. Loop thread. */
const char *ly_admin_audit_server(const struct ly_server *srv);

/*
 * Worker: runs work(ds, ctx, err) with t's row armed (datastore_audit.h),
 * so that the first write it commits carries the row. t->rec, t->server
 * and t->time must be set (t->rec.result "ok").
 */
ly_status ly_admin_audit_run(struct ly_ds_audit_txn *t, ly_dsa_work_fn *work, struct ly_datastore *ds, void *ctx,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Loop: queues `rec` as a row of its own, taken at `now`. The record is
 * cleaned (its secret scrubbed) before it leaves the loop; a failure is
 * logged (the audit file or log line has the record anyway).
 */
void ly_admin_audit_store(struct ly_server *srv, const struct ly_audit_record *rec, time_t now);

/* Loop: queues the retention prune (see the top); a failure is logged. */
void ly_admin_audit_prune(struct ly_server *srv, time_t now);

#endif /* LANYARD_SERVER_ADMIN_AUDIT_H */
