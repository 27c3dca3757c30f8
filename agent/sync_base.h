/*
 * sync_base.h: the state the parts of the agent's sync share (struct
 * ly_sync and what it holds), the steps table through which they start
 * each other's work, and sync_base.c's helpers. Only sync's own files
 * include it (through sync_internal.h); sync.h is the public interface.
 *
 * Layers, each calling only those below it: sync.c (life cycle; fills
 * the steps table) -> the parts (sync_persist.c, sync_watch.c,
 * sync_enrol.c, sync_issue.c, sync_jwt.c) -> sync_chan.c (channels and
 * calls) -> sync_base.c (clock, timers, identity, cache changes). A part
 * that needs another part's work done calls through s->steps.
 *
 * Threads: the loop thread, except where a struct says otherwise
 * (struct tls_check: gRPC's threads; pool jobs: their own copies).
 */
#ifndef LANYARD_AGENT_SYNC_BASE_H
#define LANYARD_AGENT_SYNC_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "agent/cache.h"
#include "agent/keymap.h"
#include "agent/rotation.h"
#include "agent/servers.h"
#include "agent/sync.h"
#include "agent/verify.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/error.h"
#include "lib/queue.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"

/* Reconnection backoff bounds (milliseconds): servers.h's full jitter. */
#define LY_SYNC_BACKOFF_MIN_MS LY_SERVERS_BACKOFF_BASE_MS
#define LY_SYNC_BACKOFF_MAX_MS LY_SERVERS_BACKOFF_MAX_MS

#define M_ATTEST "/lanyard.agent.v1.Agent/AttestAgent"
#define M_RENEW "/lanyard.agent.v1.Agent/RenewAgent"
#define M_WATCH "/lanyard.agent.v1.Agent/WatchEntries"
#define M_BATCH "/lanyard.agent.v1.Agent/BatchNewX509SVID"
#define M_JWT "/lanyard.agent.v1.Agent/NewJWTSVID"
#define M_BUNDLE "/lanyard.agent.v1.Agent/GetBundle"
#define M_FEDERATED "/lanyard.agent.v1.Agent/GetFederatedBundles"

/* Deadline of unary calls. */
#define UNARY_TIMEOUT_MS 15000
/* The workload SVID cache is written at most this often. */
#define PERSIST_DEBOUNCE_MS 1000
/* The server's SPIFFE ID is spiffe://<td> followed by this (docs/agent-api.md). */
#define SERVER_ID_PATH LY_SERVER_ID_PATH
/* The insecure bootstrap's TLS probe gives up after this long. */
#define PROBE_TIMEOUT_MS 5000
/*
 * A batch's answers are verified on up to ISSUE_VERIFY_PARTS pool threads
 * at once, each over its own contiguous run of items (verification is
 * ~90% of the agent's work in a storm; docs/benchmarks.md). Items are
 * matched to their results on the loop thread first, so the parts share
 * nothing but the verifier, which is thread-safe (verify.h).
 */
#define ISSUE_VERIFY_PARTS 4
/* Longest sleep of the tick timer, so that a clock jump is noticed. */
#define TICK_MAX_MS (60 * 1000)

enum phase {
	PH_NEW = 0,
	PH_ATTEST,
	PH_ENROLLED,
	PH_STOPPING,
};

enum method {
	METHOD_NONE = 0,
	METHOD_JOIN_TOKEN,
	METHOD_X509POP,
	METHOD_K8S_PSAT,
};

/*
 * What the TLS check of the server's certificate reads, on gRPC's threads:
 * made once per channel, never changed, freed after the channel.
 */
struct tls_check {
	X509_STORE *store; /* our bundle's roots; NULL for the insecure bootstrap */
	char td[LY_TRUST_DOMAIN_MAX + 1];
	char server_id[LY_SPIFFE_ID_MAX + 1];
};

/* A channel to the server and the calls on it. */
struct chan {
	struct ly_sync *s;
	struct ly_rpc_channel *ch;
	struct tls_check *tc;
	unsigned ncalls;
	char target[LY_SERVERS_TARGET_MAX]; /* the server address it connects to (servers.h) */
	bool answered; /* a message came back on it: its address works */
	bool mtls;    /* with our SVID as client certificate */
	bool retired; /* no new calls; freed when the last one ends */
	uint64_t serial;
	struct ly_queue link; /* on ly_sync.chans: every channel of ours, current and retired */
};

struct ccall;
typedef void (*ccall_msg_fn)(struct ccall *c, const uint8_t *msg, size_t len);
typedef void (*ccall_done_fn)(struct ccall *c, enum ly_rpc_code code, const char *details);

/* One call to the server; embedded first in each kind's own record. */
struct ccall {
	struct ly_sync *s;
	struct chan *chan;
	struct ly_rpc_ccall *cc;
	ccall_msg_fn on_msg; /* NULL: the (unary) answer is copied into `resp` */
	ccall_done_fn on_done; /* frees the record */
	struct ly_buf resp;    /* wiped when freed: answers may carry tokens */
	bool resp_too_many;
};

/* One WatchEntries stream. */
struct watch {
	struct ccall base;
	uint64_t serial;
	bool got_update;
	bool cancelled;
};

/* Our own identity. */
struct ident {
	bool valid;
	char id[LY_SPIFFE_ID_MAX + 1];
	EVP_PKEY *key;
	struct ly_buf key_der; /* PKCS#8: a secret */
	struct ly_buf chain;   /* DER, leaf first */
	int64_t not_before, not_after, renew_at_ms;
};

/* Failed issuance attempts per entry (for the retry delay). */
struct retry_rec {
	struct ly_keymap_node node;
	unsigned attempts;
	char key[];
};

struct jwt_op;
struct sync_resolve;

struct ly_sync_steps;

struct ly_sync {
	struct ly_agent *agent;
	const struct ly_sync_steps *steps; /* sync.c's table: the parts call each other through it */
	struct ly_sync_changes changes;
	uv_loop_t *loop;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	char server_id[LY_SPIFFE_ID_MAX + 1];
	char target[LY_CONFIG_VALUE_MAX + 16]; /* the address in use, or the list while none is known (logs) */
	struct ly_servers *servers;            /* the server list and its addresses (servers.h) */
	struct sync_resolve *resolving[LY_AGENT_SERVERS_MAX]; /* a name's uv_getaddrinfo in flight */
	enum phase phase;
	enum method method;

	struct ly_cache *cache;
	struct ly_rotation_sched *sched;
	struct ly_verifier *verifier;
	struct ly_rotation_rng rng;
	struct ident ident;

	/* The bundle we check the server with while attesting (owned). */
	struct ly_bundle *bootstrap;
	bool insecure; /* -insecureBootstrap and nothing better yet */
	char *probe_roots_pem;
	bool probe_busy;

	struct chan *chan; /* the current channel, NULL between reconnections */
	struct ly_queue chans; /* struct chan, all of them */
	uint64_t chan_serial;
	struct watch *watch, *watch_next;
	uint64_t watch_serial, resync_mark;
	unsigned backoff_attempt;
	bool reconnect_armed;
	bool denied;           /* PERMISSION_DENIED by the server: banned, or evicted without a way back */
	bool join_token_spent; /* we used cfg.join_token once (the server takes it once) */

	/* Attestation in progress. */
	bool attest_busy;
	EVP_PKEY *att_key;
	char att_expect[LY_SPIFFE_ID_MAX + 1];

	/* Our SVID's renewal. */
	bool renew_busy;
	unsigned renew_attempt;
	int64_t renew_retry_ms;

	/* The bundle. */
	bool bundle_busy;
	struct ly_bundle *bundle_pending; /* waits for the verifier to be idle */
	unsigned verify_busy;             /* pool jobs using the verifier */
	unsigned verify_parts;            /* pool threads one batch's verification may use */
	time_t last_sync;                 /* wall time of the last watch update applied (metrics) */

	/*
	 * The federated bundles (GetFederatedBundles): fed_seq is the
	 * EntriesUpdate.federated_sequence our federated set is as of
	 * (fed_known false until one fetch succeeded in this run: the set
	 * loaded from disk may be stale); fed_want the latest one announced.
	 * One call at a time; a failed one is retried after the channel's
	 * backoff (t_fed), or by the next update that announces a change.
	 */
	bool fed_busy, fed_known, fed_unimplemented;
	uint64_t fed_seq, fed_want, fed_asked;
	unsigned fed_attempt;
	bool entries_known;               /* a snapshot was applied in this run, or entries were loaded from disk */
	/* Attested (again): the node selectors may differ from those our entries
	 * were authorized under, so the next watch asks for a snapshot
	 * (since_revision 0) instead of the changes since our revision. */
	bool want_snapshot;

	/* Issuance. */
	unsigned issue_inflight;          /* batches between ly_sync_issue_kick and issue_end */
	unsigned issue_fail_streak;
	struct ly_keymap retries;

	/* Persistence. */
	bool cache_dirty, agent_dirty, persist_busy;

	/* JWT-SVIDs. */
	struct ly_queue jwt_ready; /* struct jwt_op: answered, waiting for the deferred callback */
	unsigned jwt_inflight;

	/* Timers (heap: freed in their close callback, so ly_sync_free need not wait). */
	uv_timer_t *t_reconnect, *t_resync, *t_tick, *t_persist, *t_defer, *t_trim, *t_fed;

	unsigned n_calls, n_works;
	bool stop_requested;
	void (*stop_cb)(void *arg);
	void *stop_arg;
	bool stop_cb_done;

	struct {
		uint64_t svids_issued, svids_failed, batches, attestations, renewals, watch_updates, watch_opened,
		    bundles_fetched, jwt_minted, jwt_cached, jwt_failed, federated_fetched, federated_failed;
	} stats;
};

/*
 * The steps of sync's control flow that one part takes and another starts
 * (an update asks for issuance, a refusal for attestation, attestation for
 * the watch...). The parts never call each other: they call through this
 * table, which sync.c fills with the parts' functions (ly_sync_new), so
 * the graph of calls is sync.c -> parts -> sync_chan.c -> sync_base.c,
 * and a unit test can put a fake in its place. Every entry is set.
 */
struct ly_sync_steps {
	/* sync_watch.c */
	void (*connect)(struct ly_sync *s);          /* enrolled: a channel and a watch, then issuance */
	void (*watch_open)(struct ly_sync *s);
	void (*watch_drop_all)(struct ly_sync *s);
	void (*bundle_install)(struct ly_sync *s, struct ly_bundle *b); /* `b` taken */
	void (*verifier_release)(struct ly_sync *s); /* a pool job is done with the verifier */
	void (*federated_fetch)(struct ly_sync *s);  /* GetFederatedBundles (coalesced) */
	/* `set` (taken) becomes every federated bundle we hold; ours stays */
	void (*federated_install)(struct ly_sync *s, struct ly_bundle_set *set);
	/* sync_enrol.c */
	void (*attest)(struct ly_sync *s);
	void (*attest_again)(struct ly_sync *s, const char *why);
	void (*renew)(struct ly_sync *s);
	int64_t (*renew_due_ms)(const struct ly_sync *s);
	/* sync_issue.c */
	void (*issue_kick)(struct ly_sync *s);
	void (*tick_arm)(struct ly_sync *s);
	/* sync_persist.c */
	void (*persist_cache_dirty)(struct ly_sync *s);
	void (*persist_agent_dirty)(struct ly_sync *s);
};

/* ---- sync_base.c ---- */

/* The wall clock, in milliseconds and seconds; 32 random bits (for jitter). */
int64_t ly_sync_base_now_ms(void);
int64_t ly_sync_base_now_s(void);
uint32_t ly_sync_base_rand32(void);
/* A burst of allocations ended: memory is handed back after a quiet 250 ms (sync.h). */
void ly_sync_base_memory_burst(struct ly_sync *s);
/* Our identity: set (key and chain taken), cleared (secrets wiped), expired at `now`. */
void ly_sync_base_ident_clear(struct ident *id);
ly_status ly_sync_base_ident_set(struct ly_sync *s, const char *spiffe_id, EVP_PKEY **key, struct ly_buf *chain,
    int64_t not_before, int64_t not_after, int64_t renew_at_ms, struct ly_error *err);
bool ly_sync_base_ident_expired(const struct ly_sync *s, int64_t now);
ly_status ly_sync_base_verify_with_bundle(struct ly_sync *s, const struct ly_bundle *b, const uint8_t *chain,
    size_t chain_len, const EVP_PKEY *key, const char *expected_id, struct ly_x509svid_info *info,
    struct ly_error *err);
bool ly_sync_base_same_roots(const struct ly_bundle *a, const struct ly_bundle *b);
uint64_t ly_sync_base_bundle_seq(const struct ly_sync *s);
/* Failed issuance attempts per entry, for the retry delay. */
void ly_sync_base_retries_clear(struct ly_sync *s);
void ly_sync_base_retry_forget(struct ly_sync *s, const char *key);
unsigned ly_sync_base_retry_count(struct ly_sync *s, const char *key);
/*
 * What changed in the cache: rotation rescheduled, the change callbacks
 * called (sync.h), the cache marked for writing, issuance kicked; `cs`
 * cleaned up.
 */
void ly_sync_base_changes_publish(struct ly_sync *s, struct ly_cache_changes *cs);
/* Once no call, no pool job and no write is left, the stop callback runs (from the loop). */
void ly_sync_base_stop_maybe_done(struct ly_sync *s);


#endif /* LANYARD_AGENT_SYNC_BASE_H */
