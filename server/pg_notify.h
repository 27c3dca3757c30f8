/*
 * pg_notify.h: changes pushed between the servers of one PostgreSQL
 * database (SPEC §10). The datastore's triggers (datastore.h, schema 2)
 * NOTIFY LY_PG_NOTIFY_CHANNEL when a write commits, whichever server made
 * it; this module LISTENs on a dedicated connection of its own and hands
 * each notification to the server, which feeds it to the datastore's
 * change hook (ly_datastore_changed) like one of its own writes.
 *
 * Payloads (parsed by ly_pg_notify_parse, pure):
 *   "e <revision>"          an entry changed (the change log has it)
 *   "a evicted <agent id>"  an agent was evicted
 *   "a banned <agent id>"   an agent was banned
 *   "b"                     a server published its authorities
 *
 * The connection runs on the libuv loop without blocking it: libpq's
 * non-blocking connect (PQconnectStartParams / PQconnectPoll) and reads
 * (PQconsumeInput / PQnotifies) driven by a uv_poll on PQsocket. A lost
 * connection (PostgreSQL restarted, the network cut; TCP keepalives find
 * a silent peer) is reconnected with a jittered backoff (200 ms doubling
 * to 10 s); a connection that does not come up within connect_timeout
 * (10 s unless the string sets one) is dropped and tried again. After each
 * LISTEN acknowledged, `on_listening` runs: notifications sent while no
 * one listened are lost, so the server catches up there through the
 * change log (changes since its revision) and re-reads the bundle.
 *
 * Secrets: the connection string is borrowed (it must outlive the
 * listener) and never logged; libpq's messages are.
 *
 * Ownership: ly_pg_notify_start returns a listener stopped and released
 * by ly_pg_notify_stop (its handles close on the loop; the memory goes in
 * the last close callback). Callbacks run on the loop thread and may not
 * stop the listener.
 */
#ifndef LANYARD_SERVER_PG_NOTIFY_H
#define LANYARD_SERVER_PG_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "lib/caps.h"
#include "lib/error.h"

#define LY_PG_NOTIFY_CHANNEL "lanyard_changes"
/* A payload longer than this is refused (PostgreSQL allows 8000 bytes). */
#define LY_PG_NOTIFY_PAYLOAD_MAX (LY_SPIFFE_ID_MAX + 16)

enum ly_pg_notice_kind {
	LY_PG_NOTICE_ENTRIES = 1,
	LY_PG_NOTICE_AGENT_EVICTED,
	LY_PG_NOTICE_AGENT_BANNED,
	LY_PG_NOTICE_BUNDLE,
};

struct ly_pg_notice {
	enum ly_pg_notice_kind kind;
	int64_t revision;                     /* ENTRIES: > 0 */
	char agent_id[LY_SPIFFE_ID_MAX + 1];  /* AGENT_*: printable, no space; a SPIFFE ID by shape only */
};

/*
 * Parses one payload of `len` bytes (NUL not required). Refused
 * (LY_E_INVALID, one line, the payload not quoted): an unknown form, a
 * revision that is not a positive decimal within int64, an agent ID that
 * is empty, over LY_SPIFFE_ID_MAX, not "spiffe://..." or holds a control
 * character or space, anything after the last field; over
 * LY_PG_NOTIFY_PAYLOAD_MAX is LY_E_LIMIT.
 */
ly_status ly_pg_notify_parse(const char *payload, size_t len, struct ly_pg_notice *out, struct ly_error *err)
    LY_MUST_CHECK;

struct ly_pg_notify;

typedef void ly_pg_notify_notice_fn(void *arg, const struct ly_pg_notice *notice);
typedef void ly_pg_notify_listening_fn(void *arg);

struct ly_pg_notify_config {
	uv_loop_t *loop;
	const char *conninfo;                  /* borrowed for the listener's life */
	ly_pg_notify_notice_fn *on_notice;
	ly_pg_notify_listening_fn *on_listening; /* after every LISTEN acknowledged (catch up) */
	void *arg;
};

/*
 * Starts connecting (the first attempt begins at once and never blocks).
 * Fails only on a malformed string or out of memory; an unreachable
 * database is retried in the background. *out: ly_pg_notify_stop.
 */
ly_status ly_pg_notify_start(const struct ly_pg_notify_config *cfg, struct ly_pg_notify **out,
    struct ly_error *err) LY_MUST_CHECK;

/* Closes the connection and the handles; NULL is allowed. */
void ly_pg_notify_stop(struct ly_pg_notify *n);

/* True while LISTEN is acknowledged on a live connection. */
bool ly_pg_notify_listening(const struct ly_pg_notify *n);

/* Connections made, lost and notifications received (tests, logs). */
struct ly_pg_notify_stats {
	uint64_t connects, losses, notices, refused;
};
void ly_pg_notify_get_stats(const struct ly_pg_notify *n, struct ly_pg_notify_stats *out);

#endif
