/*
 * sync_internal.h: what the parts of the agent's sync share, and the pure
 * functions its unit tests reach. Not a public interface: sync.h is.
 *
 * Parts and who owns what (one loop thread for all of them, agent.h):
 *   sync.c          struct ly_sync's life cycle (new, start, stop, free),
 *                   the timers, our identity (struct ident), cache changes
 *                   and the change callbacks (sync.h), per-entry retries.
 *   sync_chan.c     the server channel: TLS credentials and the check of
 *                   the server's certificate, channels and calls,
 *                   reconnection with backoff.
 *   sync_persist.c  the state on disk: debounced writes on the pool, the
 *                   load at start.
 *   sync_watch.c    the entry watch (apply, resync, replacement), the
 *                   bundle (GetBundle, install).
 *   sync_enrol.c    node attestation (with the bootstrap TLS probe),
 *                   attesting again, our SVID's renewal.
 *   sync_issue.c    workload SVID batches (CSRs on the pool, answers
 *                   verified on the pool), the tick.
 *   sync_jwt.c      JWT-SVIDs on demand.
 * The server's messages are decoded and checked in agentapi_msg.h; the
 * parts only decide. Each part changes the fields of struct ly_sync it is
 * listed with below, and reads the others.
 *
 * Pure helpers, for the unit tests:
 * - ly_sync_chan_backoff_ms: the reconnection delay after `attempt`
 *   failures in a row: 200 ms doubling up to 30 s, with "equal jitter"
 *   (the upper half of the step is random), so that agents that lost the
 *   same server do not come back in step.
 * - ly_sync_chan_check_server: the check of the server's TLS certificate
 *   (X509-SVID §5: path validation to our bundle, then the SPIFFE ID
 *   spiffe://<td>/lanyard/server); called on gRPC's threads, so it
 *   touches nothing but its arguments.
 */
#ifndef LANYARD_AGENT_SYNC_INTERNAL_H
#define LANYARD_AGENT_SYNC_INTERNAL_H

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
#include "agent/sync.h"
#include "agent/verify.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/error.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"

/* Reconnection backoff bounds (milliseconds). */
#define LY_SYNC_BACKOFF_MIN_MS 200
#define LY_SYNC_BACKOFF_MAX_MS 30000

/* The delay before retry number `attempt` (0: the first), jittered by `rnd` (any 32 random bits). */
uint64_t ly_sync_chan_backoff_ms(unsigned attempt, uint32_t rnd);

/*
 * Checks the server's certificate: `leaf_pem` (one certificate) and
 * `chain_pem` (as presented, may be NULL) verify to `store` at `now` and
 * the leaf is an X.509-SVID for `server_id` in trust domain `td`. With
 * `store` NULL (insecure bootstrap) only the leaf's rules and ID are
 * checked. LY_E_UNTRUSTED for another ID.
 */
ly_status ly_sync_chan_check_server(X509_STORE *store, const char *td, const char *server_id, const char *leaf_pem,
    const char *chain_pem, time_t now, struct ly_error *err) LY_MUST_CHECK;

/*
 * ly_sync_wapi_ready's rule (sync.h): `ready` (our SVID and the bundle),
 * `entries_known` (a snapshot applied, or persisted entries loaded),
 * `cached_svids` (SVIDs held now).
 */
bool ly_sync_wapi_ready_rule(bool ready, bool entries_known, size_t cached_svids);

/* ---- the state the parts share ---- */

#define M_ATTEST "/lanyard.agent.v1.Agent/AttestAgent"
#define M_RENEW "/lanyard.agent.v1.Agent/RenewAgent"
#define M_WATCH "/lanyard.agent.v1.Agent/WatchEntries"
#define M_BATCH "/lanyard.agent.v1.Agent/BatchNewX509SVID"
#define M_JWT "/lanyard.agent.v1.Agent/NewJWTSVID"
#define M_BUNDLE "/lanyard.agent.v1.Agent/GetBundle"

/* Deadline of unary calls. */
#define UNARY_TIMEOUT_MS 15000
/* The workload SVID cache is written at most this often. */
#define PERSIST_DEBOUNCE_MS 1000
/* JWT-SVID requests waiting on the server at once; beyond, refused (the workload retries). */
#define JWT_INFLIGHT_MAX 1024
/* The server's SPIFFE ID is spiffe://<td> followed by this (docs/agent-api.md). */
#define SERVER_ID_PATH "/lanyard/server"
/* The insecure bootstrap's TLS probe gives up after this long. */
#define PROBE_TIMEOUT_MS 5000
/* An EntriesUpdate this large counts as a burst (~1,000 entries): memory is handed back after it. */
#define WATCH_BURST_BYTES (256 * 1024)
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
	bool mtls;    /* with our SVID as client certificate */
	bool retired; /* no new calls; freed when the last one ends */
	uint64_t serial;
	struct chan *next; /* every channel of ours, current and retired */
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

struct ly_sync {
	struct ly_agent *agent;
	struct ly_sync_changes changes;
	uv_loop_t *loop;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	char server_id[LY_SPIFFE_ID_MAX + 1];
	char target[LY_CONFIG_VALUE_MAX + 16];
	enum phase phase;
	enum method method;

	struct ly_cache *cache;
	struct ly_sched *sched;
	struct ly_verifier *verifier;
	struct ly_rotation_rng rng;
	struct ident ident;

	/* The bundle we check the server with while attesting (owned). */
	struct ly_bundle *bootstrap;
	bool insecure; /* -insecureBootstrap and nothing better yet */
	char *probe_roots_pem;
	bool probe_busy;

	struct chan *chan; /* the current channel, NULL between reconnections */
	struct chan *chans; /* all of them */
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
	bool entries_known;               /* a snapshot was applied in this run, or entries were loaded from disk */

	/* Issuance. */
	unsigned issue_inflight;          /* batches between ly_sync_issue_kick and issue_end */
	unsigned issue_fail_streak;
	struct ly_keymap retries;

	/* Persistence. */
	bool cache_dirty, agent_dirty, persist_busy;

	/* JWT-SVIDs. */
	struct jwt_op *jwt_ready; /* answered, waiting for the deferred callback */
	unsigned jwt_inflight;

	/* Timers (heap: freed in their close callback, so ly_sync_free need not wait). */
	uv_timer_t *t_reconnect, *t_resync, *t_tick, *t_persist, *t_defer, *t_trim;

	unsigned n_calls, n_works;
	bool stop_requested;
	void (*stop_cb)(void *arg);
	void *stop_arg;
	bool stop_cb_done;

	struct {
		uint64_t svids_issued, svids_failed, batches, attestations, renewals, watch_updates, watch_opened,
		    bundles_fetched, jwt_minted, jwt_cached, jwt_failed;
	} stats;
};

/* ---- sync.c: the clock, timers, our identity, cache changes, retries, the stop ---- */

int64_t ly_sync_now_ms(void);
int64_t ly_sync_now_s(void);
uint32_t ly_sync_rand32(void);
void ly_sync_timer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t ms);
ly_status ly_sync_ident_set(struct ly_sync *s, const char *spiffe_id, EVP_PKEY **key, struct ly_buf *chain,
    int64_t not_before, int64_t not_after, int64_t renew_at_ms, struct ly_error *err);
bool ly_sync_ident_expired(const struct ly_sync *s, int64_t now);
ly_status ly_sync_verify_with_bundle(struct ly_sync *s, const struct ly_bundle *b, const uint8_t *chain,
    size_t chain_len, const EVP_PKEY *key, const char *expected_id, struct ly_x509svid_info *info,
    struct ly_error *err);
bool ly_sync_same_roots(const struct ly_bundle *a, const struct ly_bundle *b);
uint64_t ly_sync_bundle_seq(const struct ly_sync *s);
void ly_sync_retry_forget(struct ly_sync *s, const char *key);
unsigned ly_sync_retry_count(struct ly_sync *s, const char *key);
void ly_sync_changes_publish(struct ly_sync *s, struct ly_cache_changes *cs);
void ly_sync_stop_maybe_done(struct ly_sync *s);

/* ---- sync_chan.c: the server channel ---- */

void ly_sync_chan_tls_check_free(struct tls_check *tc);
void ly_sync_chan_retire(struct ly_sync *s, struct chan *c);
void ly_sync_chan_kill(struct ly_sync *s, struct chan *c);
ly_status ly_sync_chan_new(struct ly_sync *s, bool mtls, struct chan **out, struct ly_error *err);
void ly_sync_chan_call_cleanup(struct ccall *c);
ly_status ly_sync_chan_call_start(struct ly_sync *s, struct chan *ch, struct ccall *c, const char *method,
    enum ly_rpc_kind kind, const ProtobufCMessage *req, bool secret, struct ly_error *err);
void ly_sync_chan_reconnect_later(struct ly_sync *s, const char *why);

/* ---- sync_persist.c: persistence ---- */

void ly_sync_persist_kick(struct ly_sync *s);
void ly_sync_persist_cache_dirty(struct ly_sync *s);
void ly_sync_persist_agent_dirty(struct ly_sync *s);
void ly_sync_persist_load(struct ly_sync *s);

/* ---- sync_watch.c: the entry watch and the bundle ---- */

void ly_sync_watch_bundle_install(struct ly_sync *s, struct ly_bundle *b);
void ly_sync_watch_verifier_release(struct ly_sync *s);
void ly_sync_watch_drop_all(struct ly_sync *s);
void ly_sync_watch_open(struct ly_sync *s);
void ly_sync_watch_connect(struct ly_sync *s);
void ly_sync_watch_on_resync(uv_timer_t *t);
void ly_sync_watch_apply(struct ly_sync *s, const uint8_t *msg, size_t len);

/* ---- sync_enrol.c: enrolment and our SVID's renewal ---- */

void ly_sync_enrol_begin(struct ly_sync *s);
void ly_sync_enrol_again(struct ly_sync *s, const char *why);
int64_t ly_sync_enrol_renew_due_ms(const struct ly_sync *s);
void ly_sync_enrol_renew(struct ly_sync *s);
ly_status ly_sync_enrol_bootstrap(struct ly_sync *s, struct ly_error *err);

/* ---- sync_issue.c: issuance and the tick ---- */

void ly_sync_issue_kick(struct ly_sync *s);
void ly_sync_issue_tick_arm(struct ly_sync *s);

/* ---- sync_jwt.c: JWT-SVIDs ---- */

/* Answers every op of the ready list (the deferred callbacks of cache hits). */
void ly_sync_jwt_flush(struct ly_sync *s);
/* Frees the ready list without calling back (nobody waits any more). */
void ly_sync_jwt_drop_ready(struct ly_sync *s);
ly_status ly_sync_jwt_fetch(struct ly_sync *s, const char *entry_id, const char *const *audiences, size_t naud,
    ly_sync_jwt_cb cb, void *arg, struct ly_error *err);

#endif /* LANYARD_AGENT_SYNC_INTERNAL_H */
