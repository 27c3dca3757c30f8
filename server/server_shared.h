/*
 * server_shared.h: the daemon's part of several servers on one PostgreSQL
 * (SPEC §10): this server's ID, publishing its CA's authorities into the
 * shared bundle, and the union it serves (bundle_shared.h). The LISTEN
 * side is pg_notify.h; server_bundle.c wires both to its timers and to
 * the agent API. Everything runs on the loop thread; nothing here with SQLite
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
 * srv->shared_bundle. For start-up, after the CA is open: a failure is
 * fatal there.
 */
ly_status ly_server_shared_open(struct ly_server *srv, int64_t now, struct ly_error *err) LY_MUST_CHECK;

/* Publishes the CA's authorities (after a rotation changed its bundle). */
ly_status ly_server_shared_publish(struct ly_server *srv, int64_t now, struct ly_error *err) LY_MUST_CHECK;

/*
 * Re-reads the published authorities and rebuilds the union with the
 * CA's own (held even when the database is not reachable). *changed: the
 * served bundle is another now (authorities or sequence). *next_expiry:
 * when an authority of the union expires (0: none), a reason to call
 * again. On failure the bundle served is unchanged.
 */
ly_status ly_server_shared_reload(struct ly_server *srv, int64_t now, bool *changed, int64_t *next_expiry,
    struct ly_error *err) LY_MUST_CHECK;

/* Frees srv->shared_bundle. */
void ly_server_shared_close(struct ly_server *srv);

#endif
