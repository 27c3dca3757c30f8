/*
 * agentsim.h: the parts of bench_agentsim (bench/agentsim.c says what it
 * simulates and what it prints) and what they share. Internal to the
 * bench; nothing else includes it.
 *
 *   agentsim.c          the driver: flags, tokens, the start-up ramp and
 *                       the once-a-second tick, signals, the loop
 *   agentsim_agent.c    one simulated agent's protocol with the server:
 *                       attest, watch, issue, renew, move (its calls' ends)
 *   agentsim_ent.c      an agent's entry set, sorted by entry ID
 *   agentsim_call.c     channels and calls over rpc/ (no protocol)
 *   agentsim_report.c   every line printed on stdout
 *   agentsim_srcaddr.c  connect() bound to one of many 127/8 addresses
 *
 * Calls go one way: the driver calls the agent, the report and
 * srcaddr_set; the agent calls the entry set, the calls and the report,
 * which call none of the others (a call's ends are the agent's, given to
 * call_start). Threads: the loop's only, except agentsim_srcaddr.c's
 * connect(), which gRPC's threads call.
 */
#ifndef LANYARD_BENCH_AGENTSIM_H
#define LANYARD_BENCH_AGENTSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "lib/buf.h"
#include "lib/error.h"
#include "lib/spiffeid.h"
#include "rpc/rpc.h"

#define TOKEN_MAX 128

enum astate { ST_IDLE, ST_ATTEST, ST_CONNECTING, ST_SERVED, ST_BACKOFF, ST_FAILED };
enum ckind { C_ATTEST, C_RENEW, C_WATCH, C_BATCH, C_BUNDLE };

struct agent;

/* A channel and the calls still on it (freed when retired and the last one ended). */
struct chan {
	struct ly_rpc_channel *ch;
	unsigned ncalls;
	bool retired;
};

struct call {
	struct agent *a; /* NULL for the global GetBundle */
	struct chan *c;
	enum ckind kind;
	struct ly_rpc_ccall *cc;
	bool cancelled; /* by us: on_status ignores it */
	bool got;       /* watch: first message arrived */
	size_t *idx;    /* batch: entry indexes asked for, with their IDs */
	char **ids;
	size_t n;
	int64_t t_req;
	EVP_PKEY *newkey; /* renew: the key of the CSR sent */
};

struct ent {
	char *id;
	char *sid;
	int64_t renew_at; /* 0: no SVID yet */
	bool in_batch;
};

struct agent {
	struct sim *sim;
	unsigned idx;
	char token[TOKEN_MAX + 1];
	struct ly_spiffe_id id;
	EVP_PKEY *wkey;
	/* The attestation key, kept across retries: a server that used the token up and lost its answer
	 * answers it again only for this key (server/datastore.h, ly_datastore_token_consume). */
	EVP_PKEY *akey;
	struct ly_buf cert_pem, key_pem;
	int64_t svid_renew_at;
	unsigned addr;
	struct chan *chan;
	struct call *w, *wnext;
	enum astate st;
	unsigned attempt;
	struct ent *ents;
	size_t n_ents, cap_ents;
	struct call *batch, *renew; /* the one of each in flight */
	bool has_mark;
	int64_t revision; /* of the last update applied: the next watch's since_revision */
	uv_timer_t timer;
	int64_t t_lost;
	unsigned lost_from;
	int64_t next_resync;
};

struct sim {
	uv_loop_t *loop;
	struct ly_rpc *rpc;
	char **addrs;
	unsigned n_addrs;
	const char *td;
	char server_id[LY_SPIFFE_ID_MAX + 1];
	struct ly_buf bundle_pem;
	uint64_t bundle_seq;
	bool bundle_busy;
	struct agent *agents;
	unsigned n;
	double ramp;
	int64_t resync_s, backoff_min, backoff_max;
	const char *mark;
	uv_timer_t tick, stat;
	uv_signal_t sigterm, sigint;
	unsigned started;
	/* counters */
	uint64_t issued, renewed, agent_renewed, moves, revoked, watch_opened, snapshots, deltas;
	uint64_t errs, batch_errs, watch_errs, attest_errs, refused;
	double chan_new_ms; /* loop time spent making channels (credentials, TLS contexts) */
	uint64_t slice_turn; /* uv_now() of the loop turn the connect slice belongs to */
	double slice_t0;     /* mono_ms() at its first connect */
	uint64_t deferred;   /* connects put off to a later loop turn (agentsim_agent.c: conn_timer) */
};

/* ---- clocks ---- */

static inline double
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

/* ---- agentsim_agent.c ---- */

/* Starts agent `a` (attest, then connect) from the loop, now. `a`'s timer is initialised. */
void agent_start(struct agent *a);
/* The once-a-second work of a served agent at `now` (s): its own renewal, the resync watch, SVIDs due. */
void agent_tick(struct agent *a, int64_t now);

/* ---- agentsim_ent.c: `a`'s entries, sorted by ID; on out of memory, an entry is left out ---- */

/* The entry with ID `id`, or NULL. Valid until the next change of the set. */
struct ent *ent_find(struct agent *a, const char *id);
/* Upserts one entry (keeps its SVID when its SPIFFE ID did not change). */
void ent_upsert(struct agent *a, const char *id, const char *sid);
void ent_delete(struct agent *a, const char *id);
/* A snapshot: the set becomes exactly `m`'s entries; those already held keep their SVIDs. */
void ent_snapshot(struct agent *a, const Lanyard__Agent__V1__EntriesUpdate *m);

/* ---- agentsim_call.c ---- */

/* A new channel to a's current address (mTLS with a's SVID when `mtls`), or NULL (`err` set). */
struct chan *chan_new(struct agent *a, bool mtls, struct ly_error *err);
/* No new calls; cancel those on it (their on_status follows) and free it once they ended. NULL: nothing. */
void chan_kill(struct chan *c);
/* Frees `c` and its channel now: only once no call is on it. */
void chan_destroy(struct chan *c);
/* A call of `kind` for `a` on `c`, not started (call_start), or NULL when out of memory. */
struct call *call_new(struct agent *a, struct chan *c, enum ckind kind);
/*
 * Starts `k` on its channel with `msg` (packed here), `k` the argument of
 * on_msg and on_status; `k->c->ncalls` counts it. The on_status given ends
 * the call: it takes it off the count and frees it (call_free). On error
 * `k` is freed and neither callback runs.
 */
ly_status call_start(struct call *k, const ProtobufCMessage *msg, enum ly_rpc_kind kind, const char *method,
    unsigned flags, ly_rpc_message_cb on_msg, ly_rpc_status_cb on_status, struct ly_error *err);
/* Cancels `k` (its on_status follows, with k->cancelled set); NULL or cancelled already: nothing. */
void call_cancel(struct call *k);
void call_free(struct call *k);

/* ---- agentsim_report.c: stdout, one line each (the format: agentsim.c) ---- */

/* An `err` line for agent `a` (NULL: none); every error is counted, the first ERR_PRINT_MAX printed. */
void report_err(struct sim *s, struct agent *a, const char *what, int code, const char *fmt, ...) LY_PRINTF(5, 6);
/* The `revoked` line: the -mark entry left a's set at `t` (ns). */
void report_revoked(struct sim *s, struct agent *a, int64_t t);
/* The `moved` line: a's watch lost at a->t_lost, a first update from a->addr at `t` (ns). */
void report_moved(struct sim *s, struct agent *a, int64_t t);
/* The `stat` line: the agents' states and the counters. */
void report_stat(struct sim *s);

/* ---- agentsim_srcaddr.c ---- */

/* Binds each later TCP connection to 127/8 to one of `n` source addresses (0: none, the default). */
void srcaddr_set(unsigned n);

#endif
