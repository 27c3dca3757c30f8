/*
 * server_shared.h: the daemon's part of several servers on one PostgreSQL
 * (SPEC §10): this server's ID, publishing its CA's authorities into the
 * shared bundle, and the union it serves (bundle_shared.h). The LISTEN
 * side is pg_notify.h; server_bundle.c wires both to its timers and to
 * the agent API. Everything runs on the loop thread (the datastore calls
 * on its worker, datastore_async.h); nothing here with SQLite
 * (ly_datastore_shared false): every function then does nothing.
 */
#ifndef LANYARD_SERVER_SERVER_SHARED_H
#define LANYARD_SERVER_SERVER_SHARED_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/error.h"
#include "server/server_core.h"

/*
 * Reads <data_dir>/server-id (a UUID made and written 0600 on first use)
 * into srv->server_id, publishes the CA's authorities and builds
 * srv->shared_bundle. For start-up, after the CA is open and before the
 * listeners open: it waits for the datastore's worker (ly_dsa_call_sync),
 * which is why it must run before the loop serves anything. A failure is
 * fatal there.
 */
ly_status ly_server_shared_open(struct ly_server *srv, int64_t now, struct ly_error *err) LY_MUST_CHECK;

/* What one job of ly_server_shared_update ended with; borrowed for the done call. */
struct ly_shared_outcome {
	bool publish_asked;      /* the job published the CA's authorities first */
	ly_status publish_rc;    /* LY_OK: published (ly_ca_set_published done); else publish_msg says why */
	const char *publish_msg;
	ly_status reload_rc;     /* the read of the published authorities; else reload_msg says why */
	const char *reload_msg;
	bool changed;            /* the served bundle is another now (even when the read failed: ours changed) */
	int64_t next_expiry;     /* an authority of the union expires then (0: none): a reason to call again */
};

typedef void ly_server_shared_done_fn(void *arg, const struct ly_shared_outcome *o);

/* Who hears every job's outcome (NULL: no one). Loop thread. */
void ly_server_shared_on_done(struct ly_server *srv, ly_server_shared_done_fn *done, void *arg);

/*
 * Without waiting on the loop: (when `publish`) publishes the CA's
 * authorities as they are at `now` (after a rotation changed its bundle),
 * then re-reads every server's and rebuilds the union with the CA's own,
 * each a call on the datastore's worker (datastore_async.h). Only when
 * the publish committed does the CA hear ly_ca_set_published(now): a
 * successor may sign only once the others can have it. A failed read
 * keeps the rows last read (and our own authorities, always in the
 * union); a read that fails is tried once more at once (right after
 * PostgreSQL came back the first call finds its session gone).
 *
 * One job at a time: a request while one is in flight is queued, and all
 * queued requests make one job after it (publishing if any asked to), so
 * the outcomes stay in order. The done callback runs once per job, on the
 * loop, usually later, but at once, before this returns, when the
 * datastore refuses the calls (unreachable, closing): call it last.
 * Nothing with SQLite. During shutdown (srv->stopping) outcomes are
 * dropped: done never runs then.
 */
void ly_server_shared_update(struct ly_server *srv, bool publish, int64_t now);

/* Frees srv->shared_bundle. */
void ly_server_shared_close(struct ly_server *srv);

#endif
