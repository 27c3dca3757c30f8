/*
 * pg_notify.c: LISTEN on a connection of its own, on the libuv loop
 * (pg_notify.h).
 *
 * States: IDLE (waiting for the backoff timer) -> CONNECTING (PQconnectPoll
 * on each readiness its last answer asked for) -> SUBSCRIBING (LISTEN
 * sent, waiting for its result) -> LISTENING (PQconsumeInput and
 * PQnotifies on every readable event). Any failure drops the connection
 * and goes back to IDLE with a backoff; the one timer serves both the
 * backoff and the connect deadline.
 *
 * Handles: one uv_poll_t per socket libpq gives (it may change during
 * PQconnectPoll: a new poll is made then), closed before PQfinish closes
 * its descriptor; one timer. Each is heap allocated and freed in its close
 * callback; the listener itself is freed once it is stopped and no handle
 * is left (`handles`).
 */
#include "server/pg_notify.h"

#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/rand.h>

#include "lib/log.h"

#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 10000
#define CONNECT_DEADLINE_MS 15000

enum state { ST_IDLE, ST_CONNECTING, ST_SUBSCRIBING, ST_LISTENING };

struct ly_pg_notify {
	struct ly_pg_notify_config cfg;
	enum state state;
	bool stopped;
	PGconn *conn;
	uv_poll_t *poll;
	int poll_fd;
	uv_timer_t *timer;
	unsigned handles; /* open handles: freed when stopped and none is left */
	unsigned attempt;
	bool subscribed_ok;
	struct ly_pg_notify_stats stats;
};

/* ---- the payload (pure) ---- */

static bool
parse_int64(const char *p, size_t n, int64_t *out)
{
	int64_t v = 0;
	if (n == 0 || n > 19 || p[0] == '0')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		int d = p[i] - '0';
		if (v > (INT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

ly_status
ly_pg_notify_parse(const char *payload, size_t len, struct ly_pg_notice *out, struct ly_error *err)
{
	static const char evicted[] = "a evicted ", banned[] = "a banned ", spiffe[] = "spiffe://";

	memset(out, 0, sizeof(*out));
	if (payload == NULL)
		return ly_error_set(err, LY_E_INVALID, "change notification: no payload");
	if (len > LY_PG_NOTIFY_PAYLOAD_MAX)
		return ly_error_set(err, LY_E_LIMIT, "change notification: payload of %zu bytes, over %d", len,
		    LY_PG_NOTIFY_PAYLOAD_MAX);
	if (len == 1 && payload[0] == 'b') {
		out->kind = LY_PG_NOTICE_BUNDLE;
		return LY_OK;
	}
	if (len > 2 && payload[0] == 'e' && payload[1] == ' ') {
		if (!parse_int64(payload + 2, len - 2, &out->revision))
			return ly_error_set(err, LY_E_INVALID, "change notification: revision is not a positive integer");
		out->kind = LY_PG_NOTICE_ENTRIES;
		return LY_OK;
	}
	size_t skip = 0;
	if (len > sizeof(evicted) - 1 && memcmp(payload, evicted, sizeof(evicted) - 1) == 0) {
		out->kind = LY_PG_NOTICE_AGENT_EVICTED;
		skip = sizeof(evicted) - 1;
	} else if (len > sizeof(banned) - 1 && memcmp(payload, banned, sizeof(banned) - 1) == 0) {
		out->kind = LY_PG_NOTICE_AGENT_BANNED;
		skip = sizeof(banned) - 1;
	} else {
		return ly_error_set(err, LY_E_INVALID, "change notification: unknown payload");
	}
	const char *id = payload + skip;
	size_t n = len - skip;
	if (n > LY_SPIFFE_ID_MAX || n <= sizeof(spiffe) - 1 || memcmp(id, spiffe, sizeof(spiffe) - 1) != 0) {
		out->kind = 0;
		return ly_error_set(err, LY_E_INVALID, "change notification: agent ID is not a SPIFFE ID");
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)id[i];
		if (c <= 0x20 || c >= 0x7f) {
			out->kind = 0;
			return ly_error_set(err, LY_E_INVALID, "change notification: agent ID holds a space or control byte");
		}
	}
	memcpy(out->agent_id, id, n);
	out->agent_id[n] = '\0';
	return LY_OK;
}

/* ---- handles ---- */

static void maybe_free(struct ly_pg_notify *n);

static void
on_handle_closed(uv_handle_t *h)
{
	struct ly_pg_notify *n = h->data;
	free(h);
	n->handles--;
	maybe_free(n);
}

static void
maybe_free(struct ly_pg_notify *n)
{
	if (n->stopped && n->handles == 0)
		free(n);
}

static void
poll_close(struct ly_pg_notify *n)
{
	if (n->poll == NULL)
		return;
	uv_poll_stop(n->poll);
	uv_close((uv_handle_t *)n->poll, on_handle_closed);
	n->poll = NULL;
	n->poll_fd = -1;
}

static void on_poll(uv_poll_t *h, int status, int events);
static void on_timer(uv_timer_t *t);

/* Polls libpq's socket (a new handle when the socket changed) for `events`. */
static bool
poll_watch(struct ly_pg_notify *n, int events)
{
	int fd = PQsocket(n->conn);
	if (fd < 0)
		return false;
	if (n->poll != NULL && n->poll_fd != fd)
		poll_close(n);
	if (n->poll == NULL) {
		uv_poll_t *p = malloc(sizeof(*p));
		if (p == NULL)
			return false;
		if (uv_poll_init_socket(n->cfg.loop, p, fd) != 0) {
			free(p);
			return false;
		}
		p->data = n;
		n->handles++;
		n->poll = p;
		n->poll_fd = fd;
	}
	return uv_poll_start(n->poll, events, on_poll) == 0;
}

/* ---- connection ---- */

static uint64_t
backoff_ms(unsigned attempt)
{
	uint64_t step = BACKOFF_MIN_MS;
	for (unsigned i = 0; i < attempt && step < BACKOFF_MAX_MS; i++)
		step *= 2;
	if (step > BACKOFF_MAX_MS)
		step = BACKOFF_MAX_MS;
	uint32_t rnd = 0;
	if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
		rnd = 0;
	/* Equal jitter: the upper half of the step is random. */
	return step / 2 + (step / 2 > 0 ? rnd % (step / 2 + 1) : 0);
}

/* Drops the connection; a new attempt after the backoff. */
static void
drop(struct ly_pg_notify *n, const char *why)
{
	bool was_listening = n->state == ST_LISTENING;
	poll_close(n);
	if (n->conn != NULL) {
		char msg[256];
		const char *m = PQerrorMessage(n->conn);
		size_t k = 0;
		for (; m != NULL && m[k] != '\0' && k + 1 < sizeof(msg); k++)
			msg[k] = (m[k] == '\n' || m[k] == '\r' || m[k] == '\t') ? ' ' : m[k];
		msg[k] = '\0';
		while (k > 0 && msg[k - 1] == ' ')
			msg[--k] = '\0';
		if (was_listening || n->attempt == 0)
			log_warn("change notifications: %s%s%s: reconnecting", why, msg[0] != '\0' ? ": " : "", msg);
		else
			log_debug("change notifications: %s%s%s", why, msg[0] != '\0' ? ": " : "", msg);
		PQfinish(n->conn);
		n->conn = NULL;
	}
	if (was_listening)
		n->stats.losses++;
	n->state = ST_IDLE;
	uint64_t ms = backoff_ms(n->attempt);
	if (n->attempt < 16)
		n->attempt++;
	uv_timer_start(n->timer, on_timer, ms, 0);
}

/* Sends LISTEN on the connection just made. */
static void
subscribe(struct ly_pg_notify *n)
{
	if (PQsetnonblocking(n->conn, 1) != 0 || PQsendQuery(n->conn, "LISTEN " LY_PG_NOTIFY_CHANNEL) != 1) {
		drop(n, "LISTEN not sent");
		return;
	}
	n->state = ST_SUBSCRIBING;
	n->subscribed_ok = false;
	int f = PQflush(n->conn);
	if (f < 0 || !poll_watch(n, UV_READABLE | (f == 1 ? UV_WRITABLE : 0)))
		drop(n, "LISTEN not sent");
}

/* Advances the non-blocking connect. */
static void
connect_step(struct ly_pg_notify *n)
{
	switch (PQconnectPoll(n->conn)) {
	case PGRES_POLLING_READING:
		if (!poll_watch(n, UV_READABLE))
			drop(n, "connect");
		return;
	case PGRES_POLLING_WRITING:
		if (!poll_watch(n, UV_WRITABLE))
			drop(n, "connect");
		return;
	case PGRES_POLLING_OK:
		subscribe(n);
		return;
	default:
		drop(n, "cannot connect");
		return;
	}
}

static void
connect_begin(struct ly_pg_notify *n)
{
	/* Defaults first, then the caller's string from dbname: what it sets wins. TCP keepalives find a
	 * silent peer (packets dropped) within about 20 s. */
	const char *const keys[] = { "connect_timeout", "fallback_application_name", "keepalives", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "dbname", NULL };
	const char *const vals[] = { "10", "lanyard-server-notify", "1", "10", "3", "3", n->cfg.conninfo, NULL };

	n->conn = PQconnectStartParams(keys, vals, 1);
	if (n->conn == NULL || PQstatus(n->conn) == CONNECTION_BAD) {
		drop(n, "cannot connect");
		return;
	}
	n->state = ST_CONNECTING;
	n->stats.connects++;
	uv_timer_start(n->timer, on_timer, CONNECT_DEADLINE_MS, 0);
	connect_step(n);
}

static void
on_timer(uv_timer_t *t)
{
	struct ly_pg_notify *n = t->data;
	if (n->stopped)
		return;
	if (n->state == ST_IDLE)
		connect_begin(n);
	else if (n->state == ST_CONNECTING || n->state == ST_SUBSCRIBING)
		drop(n, "connection not ready in time");
}

/* Hands every queued notification to the server. */
static void
drain(struct ly_pg_notify *n)
{
	PGnotify *pn;
	struct ly_pg_notice notice;
	struct ly_error e;

	while (!n->stopped && n->conn != NULL && (pn = PQnotifies(n->conn)) != NULL) {
		size_t len = pn->extra != NULL ? strlen(pn->extra) : 0;
		if (strcmp(pn->relname, LY_PG_NOTIFY_CHANNEL) != 0) {
			PQfreemem(pn);
			continue;
		}
		if (ly_pg_notify_parse(pn->extra, len, &notice, &e) != LY_OK) {
			n->stats.refused++;
			log_warn("%s", e.msg);
		} else {
			n->stats.notices++;
			n->cfg.on_notice(n->cfg.arg, &notice);
		}
		PQfreemem(pn);
	}
}

/* Reads what arrived: the LISTEN result, then notifications. */
static void
read_input(struct ly_pg_notify *n)
{
	if (PQconsumeInput(n->conn) != 1) {
		drop(n, "connection lost");
		return;
	}
	if (n->state == ST_SUBSCRIBING) {
		while (!PQisBusy(n->conn)) {
			PGresult *r = PQgetResult(n->conn);
			if (r == NULL) {
				if (!n->subscribed_ok) {
					drop(n, "LISTEN refused");
					return;
				}
				n->state = ST_LISTENING;
				n->attempt = 0;
				uv_timer_stop(n->timer);
				if (!poll_watch(n, UV_READABLE)) {
					drop(n, "poll");
					return;
				}
				log_info("change notifications: listening on %s", LY_PG_NOTIFY_CHANNEL);
				if (n->cfg.on_listening != NULL)
					n->cfg.on_listening(n->cfg.arg);
				break;
			}
			if (PQresultStatus(r) == PGRES_COMMAND_OK)
				n->subscribed_ok = true;
			PQclear(r);
		}
	}
	if (n->state == ST_LISTENING)
		drain(n);
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
	struct ly_pg_notify *n = h->data;

	if (n->stopped || h != n->poll)
		return;
	if (status < 0) {
		drop(n, uv_strerror(status));
		return;
	}
	switch (n->state) {
	case ST_CONNECTING:
		connect_step(n);
		return;
	case ST_SUBSCRIBING:
		if (events & UV_WRITABLE) {
			int f = PQflush(n->conn);
			if (f < 0) {
				drop(n, "LISTEN not sent");
				return;
			}
			if (f == 0 && !poll_watch(n, UV_READABLE)) {
				drop(n, "poll");
				return;
			}
		}
		if (events & UV_READABLE)
			read_input(n);
		return;
	case ST_LISTENING:
		read_input(n);
		return;
	case ST_IDLE:
		return;
	}
}

/* ---- the public API ---- */

ly_status
ly_pg_notify_start(const struct ly_pg_notify_config *cfg, struct ly_pg_notify **out, struct ly_error *err)
{
	struct ly_pg_notify *n;

	if (cfg == NULL || cfg->loop == NULL || cfg->conninfo == NULL || cfg->on_notice == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "change notifications: missing argument");
	*out = NULL;
	if ((n = calloc(1, sizeof(*n))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "change notifications: out of memory");
	n->cfg = *cfg;
	n->poll_fd = -1;
	if ((n->timer = malloc(sizeof(*n->timer))) == NULL || uv_timer_init(cfg->loop, n->timer) != 0) {
		free(n->timer);
		free(n);
		return ly_error_set(err, LY_E_NOMEM, "change notifications: timer");
	}
	n->timer->data = n;
	n->handles = 1;
	n->state = ST_IDLE;
	connect_begin(n);
	*out = n;
	return LY_OK;
}

void
ly_pg_notify_stop(struct ly_pg_notify *n)
{
	if (n == NULL || n->stopped)
		return;
	n->stopped = true;
	poll_close(n);
	if (n->conn != NULL)
		PQfinish(n->conn);
	n->conn = NULL;
	if (n->timer != NULL) {
		uv_timer_stop(n->timer);
		uv_close((uv_handle_t *)n->timer, on_handle_closed);
		n->timer = NULL;
	}
}

bool
ly_pg_notify_listening(const struct ly_pg_notify *n)
{
	return n != NULL && n->state == ST_LISTENING;
}

void
ly_pg_notify_get_stats(const struct ly_pg_notify *n, struct ly_pg_notify_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (n != NULL)
		*out = n->stats;
}
