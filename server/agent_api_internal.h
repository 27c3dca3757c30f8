/*
 * agent_api_internal.h: the parts of the agent API (server.h, agent_api.c)
 * shared between its files, not for other modules:
 *  - agent_api.c          the state, its timers, the hook callback
 *                         (datastore.h), the public API, the method table,
 *                         BatchNewX509SVID, NewJWTSVID, GetBundle and
 *                         GetFederatedBundles;
 *  - agent_api_reply.c    status details, codes, packed replies, the bundle
 *                         message, the metrics;
 *  - agent_api_replica.c  the entry replica: every entry, sorted by ID, and
 *                         the authz index over it, brought up to date from
 *                         the datastore's change log;
 *  - agent_api_pending.c  pending attestations: x509pop challenges and
 *                         enrolment tickets, single use, PENDING_TTL;
 *  - agent_api_watch.c    the WatchEntries streams (watchers) and their
 *                         deltas;
 *  - agent_api_auth.c     caller authentication on mTLS calls, and the
 *                         previous SVID serial of an agent that renewed;
 *  - agent_api_limit.c    the rate limits (SPEC §11): attestation per source
 *                         IP, X.509 and JWT signing per agent;
 *  - agent_api_enrol.c    AttestAgent (join_token, x509pop, k8s_psat on the
 *                         thread pool, tickets) and RenewAgent;
 *  - agent_api_fed.c      the federated bundles (SPEC §9): their copy, the
 *                         trust domains of a set, each agent's
 *                         federated_sequence;
 *  - agent_api_op.c       the datastore calls in flight: submit, end, and
 *                         their detaching by ly_agent_api_free.
 * Requests are decoded and checked by server/agentapi_msg.c first.
 *
 * Calls only go down (scripts/callgraph-check.py, ctest lint.callgraph):
 * agent_api.c -> agent_api_enrol.c -> agent_api_watch.c ->
 * agent_api_auth.c, agent_api_replica.c -> agent_api_fed.c, and
 * agent_api_op.c below them all; agent_api_reply.c, agent_api_pending.c and
 * agent_api_limit.c call no other part. What goes back up is a hook: the
 * end of a refresh reaches agent_api.c through api->refreshed.
 *
 * Threads: the loop thread runs everything here but the k8s_psat
 * TokenReview (agent_api_enrol.c: psat_run on uv_queue_work) and the
 * datastore calls, which run on the datastore's worker
 * (server/datastore_async.h): their `work` functions touch only their own
 * struct (a struct agent_api_op first), their `done` continues on the loop.
 * Ownership: struct ly_agent_api owns the replica, the known agents, the
 * watchers, the pending slots, the previous serials, the psat work list
 * and the list of its datastore calls in flight (ly_agent_api_free
 * detaches them: their done sees op.api NULL and only ends its call);
 * each file says what its functions take and give.
 */
#ifndef LANYARD_SERVER_AGENT_API_INTERNAL_H
#define LANYARD_SERVER_AGENT_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/queue.h"
#include "lib/entry.h"
#include "lib/error.h"
#include "lib/x509pop.h"
#include "rpc/rpc.h"
#include "server/agentapi_msg.h"
#include "server/attest.h"
#include "server/authz.h"
#include "server/datastore.h"
#include "server/datastore_async.h"
#include "server/server.h"

/* Pending attestations (x509pop challenges and tickets). */
#define PENDING_PER_LEAF 4
#define PENDING_TTL 60
#define TICKET_LEN LY_AGENTAPI_TICKET_LEN
/* Watch streams per agent (in all: LY_AGENTAPI_WATCHERS_MAX). */
#define WATCHERS_PER_AGENT 4
/* The housekeeping timer, and the datastore poll every so many ticks. */
#define SWEEP_MS 1000
#define POLL_TICKS 5
/* Entry changes the replica remembers for watches that resume at a revision. */
#define CHANGE_LOG_MAX 4096
/* A refresh with more changes than this marks them all structural (no scan per change). */
#define CHANGE_SCAN_MAX 64
/* A failed entry refresh is retried after this long. */
#define REFRESH_RETRY_MS 500
/*
 * An agent's record read from the datastore is trusted for this long
 * without reading it again (a change through this server, or another
 * server's notification, replaces it at once through the change hook);
 * while the datastore is unreachable, the last one read is used whatever
 * its age, so that known agents keep getting their SVIDs signed.
 */
#define KNOWN_FRESH_MS 5000

struct ly_agent_api;
struct ly_ratelimit;

/* The rate limits (agent_api_limit.c); a limiter is NULL when its limit is off. */
enum agent_api_limit {
	AGENT_API_LIMIT_ATTEST = 0, /* AttestAgent per source IP */
	AGENT_API_LIMIT_X509,       /* X.509-SVIDs signed per agent */
	AGENT_API_LIMIT_JWT,        /* JWT-SVIDs signed per agent */
	AGENT_API_LIMITS
};

struct agent_api_pending {
	bool used;
	bool is_ticket;
	uint8_t key[LY_X509POP_NONCE_LEN]; /* x509pop nonce, or ticket */
	uint8_t leaf_hash[32];             /* x509pop: SHA-256 of the leaf's DER */
	time_t created;
	time_t expires;
	struct ly_attest_result result;    /* ticket: the agent admitted */
};

/* The SVID an agent held before its last renewal. */
struct agent_api_prev_serial {
	struct ly_queue link; /* on ly_agent_api.prev */
	char *agent_id;
	char serial[LY_DS_AGENT_SERIAL_MAX + 1];
	time_t expires;
};

struct agent_api_watcher {
	struct ly_queue link; /* on ly_agent_api.watchers */
	struct ly_agent_api *api;
	struct ly_rpc_call *call;
	char *agent_id;
	struct ly_selector *sels;
	size_t n_sels;
	char serial[LY_DS_AGENT_SERIAL_MAX + 1]; /* of the SVID the stream was opened with */
	time_t svid_expires;
	struct ly_authz_watch *watch;
	uint64_t bundle_seq;
	uint64_t fed_seq; /* the federated_sequence last sent */
};

/* A datastore call of the agent API in flight: first in each call's own struct. */
struct agent_api_op {
	struct ly_queue link;     /* on ly_agent_api.ops while api is set */
	struct ly_agent_api *api; /* NULL once ly_agent_api_free ran */
};

/* An agent record read from the datastore (agent_api_auth.c). */
struct agent_api_known {
	struct ly_ds_agent *rec; /* owned */
	uint64_t read_ms;        /* uv_now() when read */
};

struct agent_api_psat_work {
	uv_work_t req;
	struct ly_queue link; /* on ly_agent_api.psat while api is set */
	struct ly_agent_api *api; /* NULL once ly_agent_api_free ran */
	struct ly_rpc_call *call;
	const struct ly_attest_k8s_psat *cfg;
	char cluster[LY_K8S_CLUSTER_NAME_MAX + 1];
	char *token;              /* wiped */
	struct ly_buf csr;
	bool has_csr_id;
	char csr_id[LY_SPIFFE_ID_MAX + 1];
	time_t now;
	uint64_t started_ns;      /* the metric: TokenReview included */
	struct ly_attest_result result;
	ly_status rc;
	struct ly_error err;
};

/* One entry change the replica applied (agent_api_replica.c's change log). */
struct agent_api_change {
	int64_t revision;
	char *entry_id;
	/* A node entry, or an entry whose SPIFFE ID another entry names as its
	 * parent, before or after: it may change other entries' authorization. */
	bool structural;
};

/*
 * What ends every refresh of the replica (rc, and whether any entry or
 * federated bundle changed; err says why when rc is not LY_OK).
 */
typedef void agent_api_refreshed_fn(struct ly_agent_api *api, ly_status rc, bool changed, const struct ly_error *err);

struct ly_agent_api {
	struct ly_server *srv;
	bool stopped;
	/* The end of a refresh (agent_api_replica.c), set by agent_api.c: the
	 * watchers' updates, the retry. A hook, so that the replica never calls
	 * back up into agent_api.c. */
	agent_api_refreshed_fn *refreshed;
	/* Entry cache. */
	bool loaded;
	struct ly_entry **entries; /* sorted by entry_id, owned */
	size_t n_entries;
	struct ly_authz_index *index;
	int64_t revision;
	/* The changes applied since log_from (a ring, oldest at log_head): a
	 * watch that resumes from a revision >= log_from gets a delta. */
	struct agent_api_change *log;
	size_t log_head, log_n;
	int64_t log_from;
	/* Federated bundles (agent_api_fed.c): every one stored, by trust
	 * domain; reloaded when the datastore's fed_revision moved (a write
	 * here or another server's) or the hook says so. */
	struct ly_ds_fed_bundle_list fed;
	int64_t fed_revision; /* the datastore's fed_revision `fed` was read at; -1: never */
	bool fed_stale;
	/* Timers (separately allocated: freed in their close callbacks). */
	uv_timer_t *refresh_timer;
	uint64_t refresh_end_ns, refresh_cost_ns; /* the last refresh: when it ended, what it cost */
	bool refresh_inflight, refresh_again;     /* one datastore read at a time; another after it */
	bool refresh_failing, refresh_failing_logged;
	uv_timer_t *sweep_timer;
	unsigned sweep_ticks;
	/* Watch streams, oldest first. */
	struct ly_queue watchers;
	size_t n_watchers;
	struct agent_api_pending pending[LY_AGENTAPI_PENDING_MAX];
	struct ly_queue prev; /* struct agent_api_prev_serial */
	struct ly_queue psat; /* struct agent_api_psat_work */
	size_t n_psat;
	/* Agent records, sorted by SPIFFE ID, at most LY_AGENTAPI_KNOWN_MAX. */
	struct agent_api_known *known;
	size_t n_known, cap_known;
	struct ly_queue ops; /* struct agent_api_op: datastore calls in flight */
	struct ly_ratelimit *limits[AGENT_API_LIMITS];
};

enum agent_api_metric {
	MX_X509_WORKLOAD,
	MX_X509_AGENT,
	MX_JWT,
	MX_ATTEST_OK,      /* label: the attestor */
	MX_ATTEST_REFUSED, /* label: the attestor */
	MX_ATTEST_SECONDS, /* label: the attestor */
};

struct agent_api_caller {
	struct ly_ds_agent *rec; /* the agent's record, owned */
	char serial[LY_DS_AGENT_SERIAL_MAX + 1];
	time_t not_after;
};

/* ---- agent_api.c ---- */

/* The GetFederatedBundles handler (with the other signing and bundle handlers). */
void agent_api_fed_get(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);

/* ---- agent_api_op.c: below every other part ---- */

/*
 * Submits a datastore call for `op` (the first member of ctx): `op` goes
 * on api->ops until agent_api_op_end. On failure nothing runs, ctx is not
 * freed and the error says why.
 */
ly_status agent_api_op_submit(struct ly_agent_api *api, struct agent_api_op *op, ly_dsa_work_fn *work,
    ly_dsa_done_fn *done, ly_dsa_release_fn *release, struct ly_error *err) LY_MUST_CHECK;
/* Takes `op` off api->ops (its done ran); returns the api, NULL when it was freed or stopped. */
struct ly_agent_api *agent_api_op_end(struct agent_api_op *op);
/* Detaches every call in flight (ly_agent_api_free): their done sees op.api NULL. */
void agent_api_op_detach_all(struct ly_agent_api *api);

/* ---- agent_api_reply.c ---- */

/* Adds to one of the server's metrics; nothing without the health listener. */
void agent_api_reply_metric(const struct ly_agent_api *api, enum agent_api_metric which, const char *attestor, double v);

/* The agent API a handler answers for, from its `arg` (the struct ly_server *); NULL when none. */
struct ly_agent_api *agent_api_reply_api(void *arg);

/* Ends a call with `code` and "what: cause" (one line, capped). */
void agent_api_reply_finish(struct ly_rpc_call *call, enum ly_rpc_code code, const char *what, const char *cause);
/*
 * Whether the API serves calls now: not stopped, the datastore open and,
 * when `need_ca`, the CA. Otherwise the call is finished UNAVAILABLE ("server
 * not serving") and false returned. `api` may be NULL.
 */
bool agent_api_reply_serving(const struct ly_agent_api *api, struct ly_rpc_call *call, bool need_ca);

/* What a refused signing request is: the CSR's fault, or ours (no valid CA). */
enum ly_rpc_code agent_api_reply_sign_code(ly_status rc);

/* Packs `m` and sends it as the call's reply (LY_RPC_WIPE when `secret`). */
void agent_api_reply_send(struct ly_rpc_call *call, const ProtobufCMessage *m, bool secret);

/* The CA bundle's sequence (0 without one). */
uint64_t agent_api_reply_bundle_sequence(const struct ly_agent_api *api);

/* ---- agent_api_replica.c ---- */

/*
 * Reads the change log since the replica's revision (everything the first
 * time, or when the log no longer reaches back) on the datastore's worker
 * and applies it on the loop, then calls api->refreshed. One read at a
 * time: asked during one, another follows it.
 */
void agent_api_replica_refresh(struct ly_agent_api *api);

/* agent_api_replica_refresh when it can start: false when stopped or without a datastore. */
bool agent_api_replica_refresh_now(struct ly_agent_api *api);

/*
 * The entry IDs changed after revision `since` (heap array of borrowed
 * IDs, free the array only) when the change log covers it and none of
 * those changes is structural: *ok true. *ok false: the caller sends a
 * snapshot.
 */
ly_status agent_api_replica_changed_since(const struct ly_agent_api *api, int64_t since, const char ***ids,
    size_t *n, bool *ok, struct ly_error *err) LY_MUST_CHECK;

/* LY_OK when the replica is loaded; otherwise starts a load and says "entries not loaded yet" (LY_E_IO). */
ly_status agent_api_replica_ensure(struct ly_agent_api *api, struct ly_error *err) LY_MUST_CHECK;

/*
 * LY_OK once the federated bundles were read (agent_api_fed.c's copy);
 * otherwise starts a refresh (the replica's read, which reads them too)
 * and says "federated bundles not loaded yet" (LY_E_IO). A reply path uses
 * this: a change it consumed would not reach the watchers, whose updates
 * the refresh sends.
 */
ly_status agent_api_replica_fed_ensure(struct ly_agent_api *api, struct ly_error *err) LY_MUST_CHECK;

/* Frees the replica (ly_agent_api_free). */
void agent_api_replica_clear(struct ly_agent_api *api);

/* ---- agent_api_fed.c ---- */

/* One read of the federated bundles, on the datastore's worker (inside the replica's read). */
struct agent_api_fed_read {
	int64_t revision;                 /* the datastore's fed_revision */
	bool read;                        /* `list` was read (the revision moved, or stale) */
	struct ly_ds_fed_bundle_list list;
};

/*
 * Worker side (ds and `out` only): reads the fed_revision, and the bundles
 * when it differs from `since` (the copy's, -1 when never read) or `stale`.
 */
ly_status agent_api_fed_read_work(struct ly_datastore *ds, int64_t since, bool stale, struct agent_api_fed_read *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Loop side: installs what agent_api_fed_read_work read (the list is
 * taken); true when a bundle was added, replaced or removed.
 */
bool agent_api_fed_apply(struct ly_agent_api *api, struct agent_api_fed_read *r);

/* The stored bundle of `td` in the copy; NULL when none. */
const struct ly_ds_fed_bundle *agent_api_fed_find(const struct ly_agent_api *api, const char *td);

/*
 * The trust domains the entries of `set` federate with, sorted, unique,
 * borrowed from the entries (*out: a heap array, free it only; NULL when
 * none).
 */
ly_status agent_api_fed_tds(const struct ly_authz_set *set, const char ***out, size_t *n_out, struct ly_error *err)
    LY_MUST_CHECK;

/*
 * The federated_sequence of an agent authorized for `set`: a digest of the
 * trust domains its entries federate with and the revision of each one's
 * bundle, so it moves when any bundle it may need changes, appears or goes,
 * or when that set of trust domains changes. 0 when it needs none.
 */
uint64_t agent_api_fed_sequence(const struct ly_agent_api *api, const struct ly_authz_set *set);

/* Frees the copy (ly_agent_api_free). */
void agent_api_fed_clear(struct ly_agent_api *api);

/* ---- agent_api_pending.c ---- */

/* Wipes one slot. */
void agent_api_pending_clear(struct agent_api_pending *p);

/* Forgets expired slots. */
void agent_api_pending_sweep(struct ly_agent_api *api, time_t now);

/* Stores an x509pop challenge; a leaf with PENDING_PER_LEAF already loses its oldest. */
ly_status agent_api_pending_add_challenge(struct ly_agent_api *api, const uint8_t leaf_hash[32], const uint8_t *nonce,
    time_t now, struct ly_error *err) LY_MUST_CHECK;

/* Finds and removes the challenge for (leaf, nonce); false when none. */
bool agent_api_pending_take_challenge(struct ly_agent_api *api, const uint8_t leaf_hash[32],
    const uint8_t *nonce, time_t now);

/* Stores an admitted agent under a new ticket (the result is moved in). */
ly_status agent_api_pending_add_ticket(struct ly_agent_api *api, struct ly_attest_result *res, time_t now,
    uint8_t ticket[TICKET_LEN], struct ly_error *err) LY_MUST_CHECK;

/* Takes the admitted agent of `ticket` into *out; false when none. */
bool agent_api_pending_take_ticket(struct ly_agent_api *api, const uint8_t *ticket, time_t now,
    struct ly_attest_result *out);

/* Drops the tickets of an agent that was evicted or banned. */
void agent_api_pending_drop_agent(struct ly_agent_api *api, const char *agent_id);

/* ---- agent_api_watch.c ---- */

/* Ends a watch stream and frees its watcher. */
void agent_api_watch_end(struct agent_api_watcher *w, enum ly_rpc_code code, const char *details);

/* Sends the watcher what changed for it; may end (and free) it. */
void agent_api_watch_send(struct agent_api_watcher *w, bool force);

/* agent_api_watch_send for every watcher. */
void agent_api_watch_send_all(struct ly_agent_api *api, bool force);

/* An agent was (re-)enrolled or renewed: its streams keep going with its new selectors, or end. */
void agent_api_watch_agent_updated(struct ly_agent_api *api, const char *agent_id, const char *serial,
    const struct ly_selector *sels, size_t n_sels, time_t now);

/* The WatchEntries handler. */
void agent_api_watch_open(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);

/* ---- agent_api_auth.c ---- */

/* A certificate's serial as lower-case hex without leading zeros ("0" for zero). */
ly_status agent_api_auth_serial_hex(X509 *x, char out[LY_DS_AGENT_SERIAL_MAX + 1], struct ly_error *err) LY_MUST_CHECK;

/* The serial of the leaf of an issued chain. */
ly_status agent_api_auth_chain_serial(const struct ly_buf *chain, char out[LY_DS_AGENT_SERIAL_MAX + 1],
    struct ly_error *err) LY_MUST_CHECK;

/* The previous serials of agents that renewed: forget, set, accept, sweep. */
void agent_api_auth_prev_remove(struct ly_agent_api *api, const char *agent_id);
void agent_api_auth_prev_set(struct ly_agent_api *api, const char *agent_id, const char *serial,
    time_t expires, time_t now);
bool agent_api_auth_prev_ok(const struct ly_agent_api *api, const char *agent_id, const char *serial, time_t now);
void agent_api_auth_prev_sweep(struct ly_agent_api *api, time_t now);

/*
 * What a handler does once its caller is authenticated: `c` and `req` are
 * borrowed for the call (copy what must outlive it).
 */
typedef void agent_api_authed_fn(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    struct agent_api_caller *c, time_t now);

/*
 * Checks the caller is an enrolled agent presenting its current SVID (the
 * certificate at once, the agent's record from the known ones or the
 * datastore), then runs `then`, now or from the datastore call's
 * completion (`req` is copied for that). On failure the call is finished
 * and `then` never runs.
 */
void agent_api_auth_then(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    time_t now, agent_api_authed_fn *then);
void agent_api_auth_caller_cleanup(struct agent_api_caller *c);

/* The known agent records: one read (copied in), one gone (evicted or banned), all gone. */
void agent_api_known_put(struct ly_agent_api *api, const struct ly_ds_agent *rec);
void agent_api_known_drop(struct ly_agent_api *api, const char *agent_id);
void agent_api_known_clear(struct ly_agent_api *api);
/* A deep copy of an agent record (NULL when out of memory). */
struct ly_ds_agent *agent_api_agent_copy(const struct ly_ds_agent *a);

/* ---- agent_api_limit.c ---- */

/* Makes the limiters that are on (server.ratelimit.attestation, .signing). */
ly_status agent_api_limit_init(struct ly_agent_api *api, bool attestation, bool signing, struct ly_error *err)
    LY_MUST_CHECK;
void agent_api_limit_free(struct ly_agent_api *api);
/* The IP of gRPC's peer string ("ipv4:192.0.2.1:5000" -> "192.0.2.1"); other peers are kept whole. */
void agent_api_limit_peer_ip(const char *peer, char *out, size_t size);
/*
 * Takes up to `want` tokens of limiter `which` for `key` (all or nothing
 * unless `partial`); returns how many were granted (`want` when the limit
 * is off). Refusals are counted in /metrics and logged once a second.
 */
uint32_t agent_api_limit_take(struct ly_agent_api *api, enum agent_api_limit which, const char *key, uint32_t want,
    bool partial);
/* The status details of a refusal by limiter `which` (one line). */
void agent_api_limit_details(enum agent_api_limit which, const struct ly_agent_api *api, char *out, size_t size);
/* AttestAgent's limit by the caller's source IP; on refusal the call is finished RESOURCE_EXHAUSTED and false returned. */
bool agent_api_limit_attest(struct ly_agent_api *api, struct ly_rpc_call *call);

/* ---- agent_api_enrol.c ---- */

/* The AttestAgent and RenewAgent handlers. */
void agent_api_enrol_attest(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void agent_api_enrol_renew(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);

#endif /* LANYARD_SERVER_AGENT_API_INTERNAL_H */
