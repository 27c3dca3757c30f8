/*
 * sync.c: the agent's server side (agent.h): node attestation and the
 * agent's own SVID, the entry watch with resync and backoff, workload SVID
 * issuance and rotation in batches, JWT-SVIDs on demand, the trust bundle,
 * and the persisted state. Protocol: proto/agent.proto, docs/agent-api.md.
 *
 * Everything here runs on the agent's loop thread, except three kinds of
 * work handed to libuv's thread pool (uv_queue_work), each of which gets
 * copies or objects no one else touches while it runs: key generation and
 * CSRs for a batch, verification of a batch's answers (the verifier is
 * thread-safe for verification; its bundle is only swapped between
 * batches, see bundle_install), and writing the state files. The TLS check
 * of the server's certificate runs on gRPC's threads and reads only a
 * struct tls_check, immutable once made.
 *
 * Phases:
 *   ATTEST    no usable SVID of our own: AttestAgent over server-
 *             authenticated TLS (the bootstrap bundle, or our last bundle
 *             when we are attesting again), retried with backoff. Cached
 *             workload SVIDs are served meanwhile.
 *   ENROLLED  an mTLS channel with our SVID; the watch is open (or being
 *             reopened), batches are issued, our SVID is renewed at its
 *             drawn time in [45%, 55%] of its life (rotation.h).
 * A channel is never changed in place: after our SVID rotates or the
 * bundle changes, a new channel is made (new credentials: no connection of
 * the old one is reused) and the old one is retired: freed once its last
 * call ended (its watch is cancelled when the new watch's first update
 * arrived, so there is no gap).
 *
 * Enrolment (SPEC §6, docs/agent-api.md "AttestAgent"): join_token (one
 * round trip when the token makes the default ID, else the ticket step),
 * x509pop (challenge, then the proof with a CSR for the ID predicted from
 * the certificate), k8s_psat (no CSR: always the ticket step). The server
 * must prove spiffe://<td>/lanyard/server against the bootstrap bundle
 * (-trustBundle; our last bundle when we attest again). With
 * -insecureBootstrap and no bundle, a TLS probe takes the CA certificates
 * the server shows as roots (trust on first use, logged as a warning); the
 * bundle then comes from the answer. Our SVID is verified (chain to the
 * bundle of the answer, SAN = the ID we asked for, our key) before use,
 * and persisted with the bundle (state.h: 0600 files, atomic) so that a
 * restart with a still-valid SVID skips attestation.
 *
 * Timing:
 *   - reconnection backoff: 200 ms doubling to 30 s (each step jittered
 *     in its upper half); reset by the first update of a watch;
 *   - resync: every sync_interval (5 s) a new watch is opened next to the
 *     current one; its snapshot replaces the state and the old watch is
 *     cancelled. A watch still silent one interval after it was opened
 *     means the connection is dead (rpc/ sets no keepalive): both are
 *     dropped and a new channel (new connection) is made;
 *   - deletions reach the cache_changed callback (sync.h) in the same
 *     loop iteration as the update that carries them;
 *   - issuance: one BatchNewX509SVID of at most 500 CSRs in flight; new
 *     entries are due at once, renewals at their drawn time, those due
 *     within 100 ms of each other in one batch (rotation.h); a failed item
 *     is retried after 1 s doubling to 30 s, per entry; an SVID still
 *     valid is served meanwhile, one that failed verification never;
 *   - the workload SVID cache is persisted at most once a second
 *     (debounced), the agent file at once after our SVID or bundle changed.
 *
 * The bundle: every watch update carries the bundle's sequence; a higher
 * one than ours triggers GetBundle. The new bundle comes over mTLS from a
 * server that proved its ID with our current bundle, and must also
 * validate our own SVID (a server drops a root only once nothing under it
 * is valid, so a bundle that does not is wrong): otherwise refused and
 * logged. Installing it re-checks every cached SVID against it (dropped
 * ones are issued again) and makes a new channel when the roots changed.
 *
 * Refusals: PERMISSION_DENIED "agent must attest again" (evicted) ->
 * attest again with x509pop or k8s_psat; a join token works once, so an
 * agent that already used its token (or was restarted without one) logs
 * an error, keeps serving its cached SVIDs while they are valid, and asks
 * the server again every 30 s (a restart with a new -joinToken is the
 * way back). Banned: the same, without attesting. UNAUTHENTICATED: a new
 * channel, or attestation if our SVID expired.
 *
 * JWT-SVIDs: from the cache when less than half of the token's life has
 * passed (cache.h), else NewJWTSVID, then verified for every audience
 * asked for with sub = the entry's SPIFFE ID (verify.h) before it is
 * cached and handed out. A cache hit is answered from the next loop
 * iteration, never from inside ly_sync_fetch_jwt.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "agent/agentapi_msg.h"
#include "agent/cache.h"
#include "agent/keymap.h"
#include "agent/rotation.h"
#include "agent/state.h"
#include "agent/sync.h"
#include "agent/sync_internal.h"
#include "agent/verify.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/jwt.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"

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
	unsigned issue_inflight;          /* batches between issue_kick and issue_end */
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

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
now_s(void)
{
	return (int64_t)ly_agent_now();
}

static uint32_t
rand32(void)
{
	uint32_t r = 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)now_ms();
	return r;
}

/* ---- pure helpers (sync_internal.h) --------------------------------------------------- */

uint64_t
ly_sync_backoff_ms(unsigned attempt, uint32_t rnd)
{
	uint64_t step = LY_SYNC_BACKOFF_MIN_MS;

	for (unsigned i = 0; i < attempt && step < LY_SYNC_BACKOFF_MAX_MS; i++)
		step *= 2;
	if (step > LY_SYNC_BACKOFF_MAX_MS)
		step = LY_SYNC_BACKOFF_MAX_MS;
	/* Equal jitter: the lower half is fixed, the upper half random. */
	uint64_t half = step / 2;
	return step - half + rnd % (half + 1);
}

/* ---- forward declarations ---------------------------------------------------------------- */

static void attest_begin(struct ly_sync *s);
static void enrolled_connect(struct ly_sync *s);
static void watch_open(struct ly_sync *s);
static void reconnect_later(struct ly_sync *s, const char *why);
static void issue_kick(struct ly_sync *s);
static void tick_arm(struct ly_sync *s);
static void persist_kick(struct ly_sync *s);
static void bundle_fetch(struct ly_sync *s);
static void bundle_install(struct ly_sync *s, struct ly_bundle *b);
static void renew_begin(struct ly_sync *s);
static void reattest(struct ly_sync *s, const char *why);
static void stop_maybe_done(struct ly_sync *s);
static void changes_publish(struct ly_sync *s, struct ly_cache_changes *cs);

/* ---- timers --------------------------------------------------------------------------------- */

static void
timer_closed(uv_handle_t *h)
{
	free(h);
}

static ly_status
timer_new(struct ly_sync *s, uv_timer_t **out, struct ly_error *err)
{
	uv_timer_t *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (t == NULL)
		return ly_error_set(err, LY_E_NOMEM, "sync: out of memory");
	if (uv_timer_init(s->loop, t) != 0) {
		free(t);
		return ly_error_set(err, LY_E_INTERNAL, "sync: timer");
	}
	t->data = s;
	*out = t;
	return LY_OK;
}

static void
timer_close(uv_timer_t **t)
{
	if (*t == NULL)
		return;
	uv_timer_stop(*t);
	(*t)->data = NULL;
	uv_close((uv_handle_t *)*t, timer_closed);
	*t = NULL;
}

static void
timer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t ms)
{
	if (t != NULL)
		uv_timer_start(t, cb, ms, 0);
}

/*
 * glibc keeps the memory freed after a burst (a storm's keys, CSRs and
 * answers on the pool threads' arenas; a thousand connections) and VmRSS
 * stays at the peak: 51 MiB after a 10,000-SVID storm with 17 MB in use
 * (docs/benchmarks.md). A quarter of a second after the last burst
 * activity the loop hands it back (a burst that goes on keeps pushing the
 * trim back). malloc_trim walks the heap (2-5 ms at 10,000 SVIDs), so it
 * runs at most once per quiet period, never on a path a client waits on;
 * a 10,000-entry agent's resync (every 5 s) is such a burst.
 */
#define TRIM_DELAY_MS 250
#define WATCH_BURST_BYTES (256 * 1024) /* an EntriesUpdate this large counts as a burst (~1,000 entries) */

/* Resident pages of this process (KiB), 0 when /proc says nothing. */
static unsigned long
rss_kib(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	(void)fclose(f);
	return resident * (unsigned long)(sysconf(_SC_PAGESIZE) / 1024);
}

static void
on_trim_timer(uv_timer_t *t)
{
	(void)t;
#ifdef __GLIBC__
	unsigned long before = ly_log_get_level() >= LY_LOG_DEBUG ? rss_kib() : 0;
	uint64_t t0 = uv_hrtime();
	(void)malloc_trim(0);
	if (before != 0) {
		struct mallinfo2 mi = mallinfo2();
		log_debug("memory: trimmed after a burst in %.2f ms, VmRSS %lu -> %lu KiB (heap in use %zu KiB)",
		    (double)(uv_hrtime() - t0) / 1e6, before, rss_kib(), (mi.uordblks + mi.hblkhd) / 1024);
	}
#endif
}

void
ly_sync_memory_burst(struct ly_sync *s)
{
	if (s != NULL && s->t_trim != NULL)
		timer_arm(s->t_trim, on_trim_timer, TRIM_DELAY_MS);
}

/* Our user's change callbacks (sync.h); none while we load what was persisted. */
static void
wapi_cache_changed(struct ly_sync *s)
{
	if (s->changes.cache_changed != NULL && s->phase != PH_NEW)
		s->changes.cache_changed(s->changes.arg);
}

static void
wapi_bundle_changed(struct ly_sync *s)
{
	if (s->changes.bundle_changed != NULL && s->phase != PH_NEW)
		s->changes.bundle_changed(s->changes.arg);
}

/* ---- the server's certificate (runs on gRPC's threads) ------------------------------------- */

static void
tls_check_free(struct tls_check *tc)
{
	if (tc == NULL)
		return;
	X509_STORE_free(tc->store);
	free(tc);
}

/*
 * The server must present an X.509-SVID for spiffe://<td>/lanyard/server
 * that verifies to our bundle (X509-SVID §5; docs/agent-api.md
 * "Transport and identity"). gRPC checked the chain to the roots already;
 * this re-runs path validation with the SPIFFE rules and checks the ID.
 * The insecure bootstrap has no bundle yet (store NULL): only the leaf's
 * SPIFFE ID is checked (trust on first use, logged).
 */
ly_status
ly_sync_check_server(X509_STORE *store, const char *td, const char *server_id, const char *leaf_pem,
    const char *chain_pem, time_t now, struct ly_error *err)
{
	struct ly_buf leaf = LY_BUF_INIT, chain = LY_BUF_INIT, all = LY_BUF_INIT;
	struct ly_spiffe_id id;
	X509 *x = NULL;
	ly_status rc;

	if (leaf_pem == NULL)
		return ly_error_set(err, LY_E_UNTRUSTED, "server certificate: none");
	if ((rc = ly_pem_to_der_certs(leaf_pem, strlen(leaf_pem), 1, LY_CERT_DER_MAX, &leaf, err)) != LY_OK)
		goto out;
	if (chain_pem != NULL && chain_pem[0] != '\0') {
		if ((rc = ly_pem_to_der_certs(chain_pem, strlen(chain_pem), LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &chain,
			 err)) != LY_OK)
			goto out;
	}
	/* The presented chain normally starts with the leaf; make sure it does. */
	if (chain.len >= leaf.len && memcmp(chain.data, leaf.data, leaf.len) == 0) {
		ly_buf_take(&all, &chain);
	} else {
		struct ly_der_view parts[2] = { { leaf.data, leaf.len }, { chain.data, chain.len } };
		if ((rc = ly_der_concat(parts, chain.len > 0 ? 2 : 1, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &all, err)) !=
		    LY_OK)
			goto out;
	}
	if (store != NULL) {
		rc = ly_x509svid_verify(all.data, all.len, store, td, now, &id, err);
	} else if ((rc = ly_der_parse_one(leaf.data, leaf.len, &x, err)) == LY_OK) {
		rc = ly_x509svid_check_leaf(x, &id, err);
	}
	if (rc != LY_OK) {
		(void)ly_error_wrap(err, rc, "server certificate");
		goto out;
	}
	if (strcmp(id.id, server_id) != 0) {
		rc = ly_error_set(err, LY_E_UNTRUSTED, "server certificate: SPIFFE ID %s, expected %s", id.id, server_id);
		goto out;
	}
out:
	X509_free(x);
	ly_buf_free(&leaf);
	ly_buf_free(&chain);
	ly_buf_free(&all);
	return rc;
}

static ly_status
tls_verify(void *arg, const char *leaf_pem, const char *chain_pem, struct ly_error *err)
{
	const struct tls_check *tc = arg;

	return ly_sync_check_server(tc->store, tc->td, tc->server_id, leaf_pem, chain_pem, ly_agent_now(), err);
}

/* ---- channels -------------------------------------------------------------------------------- */

static void
chan_destroy(struct chan *c)
{
	for (struct chan **p = &c->s->chans; *p != NULL; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	if (c->ch != NULL)
		ly_rpc_channel_free(c->ch);
	tls_check_free(c->tc);
	free(c);
}

/* No new calls on `c`; it goes once its last call ended. */
static void
chan_retire(struct ly_sync *s, struct chan *c)
{
	if (c == NULL)
		return;
	if (s->chan == c)
		s->chan = NULL;
	c->retired = true;
	if (c->ncalls == 0)
		chan_destroy(c);
}

/* Retires `c` and cancels every call on it now (shutdown, re-attestation). */
static void
chan_kill(struct ly_sync *s, struct chan *c)
{
	if (c == NULL)
		return;
	if (s->chan == c)
		s->chan = NULL;
	c->retired = true;
	if (c->ncalls == 0) {
		chan_destroy(c);
		return;
	}
	/* Each call still gets its on_status, later, from the loop. */
	ly_rpc_channel_free(c->ch);
	c->ch = NULL;
}

static void
chan_release(struct ly_sync *s, struct chan *c)
{
	(void)s;
	c->ncalls--;
	if (c->retired && c->ncalls == 0)
		chan_destroy(c);
}

/*
 * A new channel to the server. mTLS: our SVID as client certificate, our
 * bundle's roots. Otherwise (attestation): no client certificate, the
 * bootstrap bundle's roots (or, for the insecure bootstrap, the CA
 * certificates the server showed the probe).
 */
static ly_status
chan_new(struct ly_sync *s, bool mtls, struct chan **out, struct ly_error *err)
{
	struct chan *c = NULL;
	struct ly_buf der = LY_BUF_INIT, chain_pem = LY_BUF_INIT, key_pem = LY_BUF_INIT;
	char *roots = NULL;
	const struct ly_bundle *b = mtls ? ly_cache_bundle(s->cache) : s->bootstrap;
	ly_status rc;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
	c->s = s;
	if ((c->tc = calloc(1, sizeof(*c->tc))) == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
		goto out;
	}
	c->mtls = mtls;
	c->serial = ++s->chan_serial;
	(void)snprintf(c->tc->td, sizeof(c->tc->td), "%s", s->td);
	(void)snprintf(c->tc->server_id, sizeof(c->tc->server_id), "%s", s->server_id);
	if (b != NULL) {
		if ((rc = ly_bundle_x509_authorities_der(b, &der, err)) != LY_OK ||
		    (rc = ly_x509_store_new(der.data, der.len, &c->tc->store, err)) != LY_OK ||
		    (rc = ly_bundle_write_pem(b, &roots, err)) != LY_OK)
			goto out;
	} else if (!mtls && s->insecure && s->probe_roots_pem != NULL) {
		if ((roots = strdup(s->probe_roots_pem)) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
			goto out;
		}
	} else {
		rc = ly_error_set(err, LY_E_INVALID, "channel: no trust bundle to check the server with");
		goto out;
	}
	if (mtls) {
		if ((rc = ly_der_certs_to_pem(s->ident.chain.data, s->ident.chain.len, LY_CHAIN_CERTS_MAX,
			 LY_CHAIN_DER_MAX, &chain_pem, err)) != LY_OK ||
		    (rc = ly_key_der_to_pem(s->ident.key_der.data, s->ident.key_der.len, &key_pem, err)) != LY_OK)
			goto out;
	}
	struct ly_rpc_tls_client tls = {
		.root_pem = roots,
		.cert_chain_pem = mtls ? (const char *)chain_pem.data : NULL,
		.key_pem = mtls ? (const char *)key_pem.data : NULL,
		.verify = tls_verify,
		.verify_arg = c->tc,
	};
	struct ly_rpc_channel_config cfg = { .target = s->target, .tls = &tls, .max_response = 0 };
	if ((rc = ly_rpc_channel_new(s->agent->rpc, &cfg, &c->ch, err)) != LY_OK)
		goto out;
	c->next = s->chans;
	s->chans = c;
	*out = c;
	c = NULL;
out:
	if (c != NULL)
		chan_destroy(c);
	free(roots);
	ly_buf_free(&der);
	ly_buf_free(&chain_pem);
	ly_buf_free_secret(&key_pem);
	return rc;
}

/* ---- calls ---------------------------------------------------------------------------------- */

static void
ccall_on_message(struct ly_rpc_ccall *cc, const uint8_t *msg, size_t len, void *arg)
{
	struct ccall *c = arg;

	(void)cc;
	if (c->on_msg != NULL) {
		c->on_msg(c, msg, len);
		return;
	}
	/* Unary: one answer, kept for on_done (wiped when freed: it may hold a token). */
	if (c->resp.data != NULL) {
		c->resp_too_many = true;
		return;
	}
	if (ly_buf_set(&c->resp, msg, len, NULL) != LY_OK)
		c->resp_too_many = true;
}

static void
ccall_on_status(struct ly_rpc_ccall *cc, enum ly_rpc_code code, const char *details, void *arg)
{
	struct ccall *c = arg;
	struct ly_sync *s = c->s;
	struct chan *ch = c->chan;

	(void)cc;
	c->cc = NULL;
	if (code == LY_RPC_OK && c->on_msg == NULL && (c->resp.data == NULL || c->resp_too_many)) {
		code = LY_RPC_INTERNAL;
		details = "answer missing or unreadable";
	}
	c->on_done(c, code, details != NULL ? details : ""); /* frees c */
	chan_release(s, ch);
	s->n_calls--;
	stop_maybe_done(s);
}

/* Releases what struct ccall holds (the kinds call it from on_done). */
static void
ccall_cleanup(struct ccall *c)
{
	ly_buf_free_secret(&c->resp);
}

/*
 * Starts `c` on channel `ch`: packs `req`, wiped afterwards when `secret`.
 * On error nothing runs and `c` is still the caller's.
 */
static ly_status
ccall_start(struct ly_sync *s, struct chan *ch, struct ccall *c, const char *method, enum ly_rpc_kind kind,
    const ProtobufCMessage *req, bool secret, struct ly_error *err)
{
	struct ly_buf buf = LY_BUF_INIT;
	size_t n = protobuf_c_message_get_packed_size(req);
	ly_status rc;

	if (ch == NULL || ch->retired || ch->ch == NULL)
		return ly_error_set(err, LY_E_IO, "not connected to the server");
	if (n > LY_RPC_MSG_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s: request over %d bytes", method, LY_RPC_MSG_MAX);
	if ((buf.data = malloc(n + 1)) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: out of memory", method);
	buf.len = protobuf_c_message_pack(req, buf.data);
	c->s = s;
	c->chan = ch;
	struct ly_rpc_call_config cfg = {
		.method = method,
		.kind = kind,
		.req = buf.data,
		.req_len = buf.len,
		.flags = secret ? LY_RPC_WIPE : 0u,
		.timeout_ms = kind == LY_RPC_UNARY ? UNARY_TIMEOUT_MS : 0,
		.on_message = ccall_on_message,
		.on_status = ccall_on_status,
		.arg = c,
	};
	rc = ly_rpc_channel_call(ch->ch, &cfg, &c->cc, err);
	if (secret)
		ly_buf_free_secret(&buf);
	else
		ly_buf_free(&buf);
	if (rc != LY_OK)
		return rc;
	ch->ncalls++;
	s->n_calls++;
	return LY_OK;
}

/* ---- our identity --------------------------------------------------------------------------- */

static void
ident_clear(struct ident *id)
{
	EVP_PKEY_free(id->key);
	ly_buf_free_secret(&id->key_der);
	ly_buf_free(&id->chain);
	memset(id, 0, sizeof(*id));
}

/*
 * Takes a verified SVID of ours: `key` and `chain` are moved in (left
 * NULL / empty) on success. The renewal time is drawn here, once.
 */
static ly_status
ident_set(struct ly_sync *s, const char *spiffe_id, EVP_PKEY **key, struct ly_buf *chain, int64_t not_before,
    int64_t not_after, int64_t renew_at_ms, struct ly_error *err)
{
	struct ident n;

	memset(&n, 0, sizeof(n));
	LY_TRY(ly_key_to_pkcs8_der(*key, &n.key_der, err));
	(void)snprintf(n.id, sizeof(n.id), "%s", spiffe_id);
	n.key = *key;
	*key = NULL;
	ly_buf_take(&n.chain, chain);
	n.not_before = not_before;
	n.not_after = not_after;
	if (renew_at_ms < ly_rotation_earliest_ms(not_before, not_after) ||
	    renew_at_ms > ly_rotation_latest_ms(not_before, not_after))
		renew_at_ms = ly_rotation_draw(&s->rng, not_before, not_after);
	n.renew_at_ms = renew_at_ms;
	n.valid = true;
	ident_clear(&s->ident);
	s->ident = n;
	s->renew_attempt = 0;
	s->renew_retry_ms = 0;
	return LY_OK;
}

static bool
ident_expired(const struct ly_sync *s, int64_t now)
{
	return !s->ident.valid || now >= s->ident.not_after;
}

/* A fresh verifier holding `b` only: for checks that must not disturb the shared one. */
static ly_status
verify_with_bundle(struct ly_sync *s, const struct ly_bundle *b, const uint8_t *chain, size_t chain_len,
    const EVP_PKEY *key, const char *expected_id, struct ly_x509svid_info *info, struct ly_error *err)
{
	struct ly_verifier *v = NULL;
	ly_status rc;

	if ((rc = ly_verifier_new(s->td, &v, err)) == LY_OK && (rc = ly_verifier_set_bundle(v, b, NULL, err)) == LY_OK)
		rc = ly_verify_x509svid(v, chain, chain_len, key, expected_id, now_s(), info, NULL, err);
	ly_verifier_free(v);
	return rc;
}

/* True when both bundles hold the same X.509 authorities (so a channel made with one fits the other). */
static bool
same_roots(const struct ly_bundle *a, const struct ly_bundle *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	size_t n = ly_bundle_x509_authority_count(a);
	if (n != ly_bundle_x509_authority_count(b))
		return false;
	for (size_t i = 0; i < n; i++) {
		const struct ly_buf *x = ly_bundle_x509_authority(a, i), *y = ly_bundle_x509_authority(b, i);
		if (x->len != y->len || memcmp(x->data, y->data, x->len) != 0)
			return false;
	}
	return true;
}

static uint64_t
bundle_seq(const struct ly_sync *s)
{
	const struct ly_bundle *b = s->bundle_pending != NULL ? s->bundle_pending : ly_cache_bundle(s->cache);
	return b != NULL ? ly_bundle_sequence(b) : 0;
}

/* ---- persistence ------------------------------------------------------------------------------ */

struct persist_job {
	uv_work_t w;
	struct ly_sync *s;
	char *dir;
	struct ly_buf agent, cache; /* encoded; secrets */
	ly_status rc_agent, rc_cache;
	struct ly_error e_agent, e_cache;
};

static void on_persist_timer(uv_timer_t *t);

static void
persist_job_free(struct persist_job *j)
{
	ly_buf_free_secret(&j->agent);
	ly_buf_free_secret(&j->cache);
	free(j->dir);
	free(j);
}

static void
persist_run(uv_work_t *w)
{
	struct persist_job *j = w->data;

	j->rc_agent = j->rc_cache = LY_OK;
	if (j->agent.data != NULL)
		j->rc_agent = ly_state_write_file(j->dir, LY_STATE_AGENT_FILE, j->agent.data, j->agent.len, &j->e_agent);
	if (j->cache.data != NULL)
		j->rc_cache = ly_state_write_file(j->dir, LY_STATE_CACHE_FILE, j->cache.data, j->cache.len, &j->e_cache);
}

static void
persist_after(uv_work_t *w, int status)
{
	struct persist_job *j = w->data;
	struct ly_sync *s = j->s;

	bool failed = status != 0;
	if (status != 0) {
		log_error("state not written: the work was cancelled");
		s->agent_dirty = s->agent_dirty || j->agent.data != NULL;
		s->cache_dirty = s->cache_dirty || j->cache.data != NULL;
	}
	if (j->agent.data != NULL && j->rc_agent != LY_OK) {
		log_error("agent state not written to %s: %s", j->dir, j->e_agent.msg);
		s->agent_dirty = true;
		failed = true;
	}
	if (j->cache.data != NULL && j->rc_cache != LY_OK) {
		log_error("SVID cache not written to %s: %s", j->dir, j->e_cache.msg);
		s->cache_dirty = true;
		failed = true;
	}
	persist_job_free(j);
	s->persist_busy = false;
	s->n_works--;
	if (s->phase != PH_STOPPING) {
		if (s->agent_dirty || s->cache_dirty)
			timer_arm(s->t_persist, on_persist_timer, failed ? 10 * PERSIST_DEBOUNCE_MS : PERSIST_DEBOUNCE_MS);
	} else if (!failed) {
		persist_kick(s); /* what changed while this was written (nothing, usually) */
	} else {
		s->agent_dirty = s->cache_dirty = false; /* stopping: no retry, the stop must end */
	}
	stop_maybe_done(s);
}

/* Our identity and bundles as state.h wants them (borrowing nothing: copies). */
static ly_status
agent_state_make(struct ly_sync *s, struct ly_agent_state *st, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	const struct ly_bundle *cur = ly_cache_bundle(s->cache);

	(void)snprintf(st->trust_domain, sizeof(st->trust_domain), "%s", s->td);
	if (s->ident.valid) {
		st->has_svid = true;
		(void)snprintf(st->spiffe_id, sizeof(st->spiffe_id), "%s", s->ident.id);
		LY_TRY(ly_buf_set(&st->chain, s->ident.chain.data, s->ident.chain.len, err));
		LY_TRY(ly_buf_set(&st->key, s->ident.key_der.data, s->ident.key_der.len, err));
		st->not_before = s->ident.not_before;
		st->not_after = s->ident.not_after;
		st->renew_at_ms = s->ident.renew_at_ms;
	}
	if (cur != NULL) {
		LY_TRY(ly_bundle_set_new(&st->bundles, err));
		LY_TRY(ly_bundle_clone(cur, &b, err));
		if (ly_bundle_set_put(st->bundles, b, err) != LY_OK) {
			ly_bundle_free(b);
			return LY_E_NOMEM;
		}
	}
	return LY_OK;
}

/* Encodes what is dirty on the loop and writes it on the pool. */
static void
persist_kick(struct ly_sync *s)
{
	struct persist_job *j = NULL;
	struct ly_agent_state st;
	struct ly_error e;
	int64_t now = now_s();

	if (s->persist_busy || (!s->agent_dirty && !s->cache_dirty))
		return;
	ly_agent_state_init(&st);
	if ((j = calloc(1, sizeof(*j))) == NULL || (j->dir = strdup(s->agent->cfg.data_dir)) == NULL) {
		log_error("state not written: out of memory");
		goto fail;
	}
	j->s = s;
	j->w.data = j;
	if (s->agent_dirty) {
		if (agent_state_make(s, &st, &e) != LY_OK || ly_state_encode_agent(&st, now, &j->agent, &e) != LY_OK) {
			log_error("agent state not encoded: %s", e.msg);
			goto fail;
		}
	}
	if (s->cache_dirty && ly_state_encode_cache(s->cache, now, &j->cache, &e) != LY_OK) {
		log_error("SVID cache not encoded: %s", e.msg);
		goto fail;
	}
	if (uv_queue_work(s->loop, &j->w, persist_run, persist_after) != 0) {
		log_error("state not written: cannot queue the work");
		goto fail;
	}
	s->agent_dirty = s->cache_dirty = false;
	s->persist_busy = true;
	s->n_works++;
	ly_agent_state_cleanup(&st);
	return;
fail:
	ly_agent_state_cleanup(&st);
	if (j != NULL)
		persist_job_free(j);
	if (s->phase != PH_STOPPING)
		timer_arm(s->t_persist, on_persist_timer, 10 * PERSIST_DEBOUNCE_MS);
	else
		s->agent_dirty = s->cache_dirty = false; /* give up: the stop must end */
}

static void
on_persist_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s != NULL)
		persist_kick(s);
}

/* The workload SVID cache changed: written within PERSIST_DEBOUNCE_MS. */
static void
mark_cache_dirty(struct ly_sync *s)
{
	s->cache_dirty = true;
	if (s->t_persist != NULL && !s->persist_busy && !uv_is_active((uv_handle_t *)s->t_persist))
		timer_arm(s->t_persist, on_persist_timer, PERSIST_DEBOUNCE_MS);
}

/* Our SVID or the bundle changed: written at once (with the cache if it is dirty too). */
static void
mark_agent_dirty(struct ly_sync *s)
{
	s->agent_dirty = true;
	if (s->t_persist != NULL && !s->persist_busy)
		timer_arm(s->t_persist, on_persist_timer, 0);
}

/* ---- cache changes ------------------------------------------------------------------------ */

static void
retry_forget(struct ly_sync *s, const char *key)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&s->retries, key);
	if (n == NULL)
		return;
	ly_keymap_remove(&s->retries, n);
	free(LY_KEYMAP_ENTRY(n, struct retry_rec, node));
}

/* The number of failures so far for `key`, after counting one more. */
static unsigned
retry_count(struct ly_sync *s, const char *key)
{
	struct ly_keymap_node *n = ly_keymap_find_str(&s->retries, key);
	if (n != NULL)
		return ++LY_KEYMAP_ENTRY(n, struct retry_rec, node)->attempts;
	size_t len = strlen(key);
	struct retry_rec *r = calloc(1, sizeof(*r) + len + 1);
	if (r == NULL)
		return 1;
	memcpy(r->key, key, len + 1);
	r->node.key = (const uint8_t *)r->key;
	r->node.key_len = len;
	r->attempts = 1;
	if (ly_keymap_insert(&s->retries, &r->node, NULL) != LY_OK) {
		free(r);
		return 1;
	}
	return 1;
}

static void
retries_clear(struct ly_sync *s)
{
	for (size_t i = 0; i < s->retries.nbuckets; i++) {
		struct ly_keymap_node *n = s->retries.buckets[i];
		while (n != NULL) {
			struct ly_keymap_node *next = n->next;
			free(LY_KEYMAP_ENTRY(n, struct retry_rec, node));
			n = next;
		}
	}
	ly_keymap_cleanup(&s->retries);
}

static const char *
change_kind_str(enum ly_cache_change_kind k)
{
	switch (k) {
	case LY_CACHE_CREATED:
		return "created";
	case LY_CACHE_UPDATED:
		return "updated";
	case LY_CACHE_DELETED:
		return "deleted";
	case LY_CACHE_SVID_SET:
		return "SVID set";
	case LY_CACHE_SVID_DROPPED:
		return "SVID dropped";
	}
	return "?";
}

/*
 * After any change of the cache: the scheduler follows (new entries due
 * now, deleted ones gone, new SVIDs at their drawn time), open streams are
 * told at once, the cache is persisted soon, issuance runs. Cleans `cs`.
 */
static void
changes_publish(struct ly_sync *s, struct ly_cache_changes *cs)
{
	struct ly_error e;

	if (ly_cache_changes_empty(cs)) {
		ly_cache_changes_cleanup(cs);
		return;
	}
	if (ly_rotation_apply_changes(s->sched, s->cache, cs, now_ms(), &e) != LY_OK) {
		/* Only memory: schedule everything again from the cache. */
		log_error("rotation schedule: %s", e.msg);
		if (ly_rotation_schedule_all(s->sched, s->cache, now_ms(), &e) != LY_OK)
			log_error("rotation schedule: %s", e.msg);
	}
	bool entries = false;
	for (size_t i = 0; i < cs->n; i++) {
		const struct ly_cache_change *c = &cs->v[i];
		if (c->kind == LY_CACHE_DELETED)
			retry_forget(s, c->entry_id);
		if (c->kind != LY_CACHE_SVID_SET)
			log_debug("entry %s (%s): %s", c->entry_id, c->spiffe_id != NULL ? c->spiffe_id : "",
			    change_kind_str(c->kind));
		entries = true;
	}
	if (entries)
		wapi_cache_changed(s);
	if (cs->bundles_changed)
		wapi_bundle_changed(s);
	mark_cache_dirty(s);
	ly_cache_changes_cleanup(cs);
	issue_kick(s);
	tick_arm(s);
}

/* ---- the bundle ----------------------------------------------------------------------------- */

/*
 * Makes `b` (taken) our bundle. The verifier's trust store must not change
 * under a batch being verified on the pool: then it waits in
 * bundle_pending until that batch is back. SVIDs that no longer chain to
 * the new bundle are dropped (and issued again); streams get the bundle; a
 * new channel is made when the roots changed (gRPC keeps the roots of a
 * channel for its whole life).
 */
static void
bundle_install(struct ly_sync *s, struct ly_bundle *b)
{
	struct ly_bundle_set *set = NULL;
	struct ly_cache_changes cs;
	struct ly_error e;

	if (s->verify_busy > 0) {
		ly_bundle_free(s->bundle_pending);
		s->bundle_pending = b;
		return;
	}
	bool roots_changed = !same_roots(ly_cache_bundle(s->cache), b);
	uint64_t seq = ly_bundle_sequence(b);
	ly_cache_changes_init(&cs);
	if (ly_verifier_set_bundle(s->verifier, b, NULL, &e) != LY_OK) {
		log_error("bundle sequence %" PRIu64 " refused: %s", seq, e.msg);
		ly_bundle_free(b);
		return;
	}
	if (ly_bundle_set_new(&set, &e) != LY_OK || ly_bundle_set_put(set, b, &e) != LY_OK) {
		log_error("bundle sequence %" PRIu64 " not installed: %s", seq, e.msg);
		ly_bundle_free(b);
		ly_bundle_set_free(set);
		return;
	}
	b = NULL;
	if (ly_cache_set_bundles(s->cache, set, &cs, &e) != LY_OK) {
		log_error("bundle sequence %" PRIu64 " not installed: %s", seq, e.msg);
		ly_bundle_set_free(set);
		ly_cache_changes_cleanup(&cs);
		return;
	}
	size_t dropped = ly_verify_recheck_cache(s->verifier, s->cache, now_s(), &cs);
	log_info("trust bundle sequence %" PRIu64 " installed (%zu X.509, %zu JWT authorities)", seq,
	    ly_bundle_x509_authority_count(ly_cache_bundle(s->cache)),
	    ly_bundle_jwt_authority_count(ly_cache_bundle(s->cache)));
	if (dropped > 0)
		log_warn("%zu cached SVIDs no longer verify with the new bundle: dropped, to be issued again", dropped);
	changes_publish(s, &cs);
	mark_agent_dirty(s);
	if (roots_changed && s->phase == PH_ENROLLED && s->chan != NULL) {
		log_debug("bundle roots changed: new channel");
		chan_retire(s, s->chan);
		watch_open(s);
	}
}

/* The pool is done with the verifier: a bundle that waited goes in now. */
static void
verifier_release(struct ly_sync *s)
{
	s->verify_busy--;
	if (s->verify_busy == 0 && s->bundle_pending != NULL) {
		struct ly_bundle *b = s->bundle_pending;
		s->bundle_pending = NULL;
		bundle_install(s, b);
	}
}

static void
bundle_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct ly_sync *s = c->s;
	struct ly_bundle *b = NULL;
	struct ly_error e;

	s->bundle_busy = false;
	if (s->phase != PH_ENROLLED)
		goto out;
	if (code != LY_RPC_OK) {
		log_warn("GetBundle: %s %s", ly_rpc_code_str(code), details);
		goto out;
	}
	if (ly_agentapi_bundle_parse(c->resp.data, c->resp.len, s->td, &b, &e) != LY_OK) {
		log_error("GetBundle: %s", e.msg);
		goto out;
	}
	if (ly_bundle_sequence(b) <= bundle_seq(s)) {
		log_debug("GetBundle: sequence %" PRIu64 " is not newer than ours", ly_bundle_sequence(b));
		goto out;
	}
	/*
	 * The bundle comes over mTLS from a server whose certificate verified
	 * to our current bundle. We also want it to vouch for our own SVID: a
	 * server drops a root only once nothing under it is valid any more, so
	 * a bundle that does not is wrong, and installing it would cut us off.
	 */
	if (s->ident.valid && verify_with_bundle(s, b, s->ident.chain.data, s->ident.chain.len, s->ident.key,
				  s->ident.id, NULL, &e) != LY_OK) {
		log_error("GetBundle: bundle sequence %" PRIu64 " refused: it does not validate our own SVID: %s",
		    ly_bundle_sequence(b), e.msg);
		goto out;
	}
	s->stats.bundles_fetched++;
	bundle_install(s, b);
	b = NULL;
out:
	ly_bundle_free(b);
	ccall_cleanup(c);
	free(c);
}

static void
bundle_fetch(struct ly_sync *s)
{
	struct ccall *c;
	struct ly_error e;
	Lanyard__Agent__V1__GetBundleRequest req;

	/* One at a time: the next update (or the next resync) asks again if still needed. */
	if (s->bundle_busy)
		return;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->on_done = bundle_on_done;
	lanyard__agent__v1__get_bundle_request__init(&req);
	if (ccall_start(s, s->chan, c, M_BUNDLE, LY_RPC_UNARY, &req.base, false, &e) != LY_OK) {
		log_warn("GetBundle: %s", e.msg);
		free(c);
		return;
	}
	s->bundle_busy = true;
}

/* ---- the watch ---------------------------------------------------------------------------- */

static void
watch_cancel(struct watch *w)
{
	if (w == NULL || w->cancelled)
		return;
	w->cancelled = true;
	if (w->base.cc != NULL)
		ly_rpc_ccall_cancel(w->base.cc);
}

static void
watches_drop(struct ly_sync *s)
{
	watch_cancel(s->watch);
	watch_cancel(s->watch_next);
	s->watch = s->watch_next = NULL;
}

/* An entry of an update that did not convert: logged, the others go on. */
static void
watch_entry_refused(void *arg, const char *entry_id, const struct ly_error *why)
{
	(void)arg;
	log_warn("watch: entry %s refused: %s", entry_id, why->msg);
}

/* Applies one EntriesUpdate (idempotent upserts and deletions, docs/agent-api.md). */
static void
watch_apply(struct ly_sync *s, const uint8_t *msg, size_t len)
{
	struct ly_agentapi_update up;
	struct ly_cache_changes cs;
	struct ly_error e;
	uint64_t t0 = uv_hrtime();

	ly_cache_changes_init(&cs);
	if (ly_agentapi_update_parse(msg, len, watch_entry_refused, NULL, &up, &e) != LY_OK) {
		log_error("watch: %s: update ignored (the next resync repairs)", e.msg);
		goto out;
	}
	if (ly_cache_apply(s->cache, &up.u, &cs, &e) != LY_OK) {
		log_error("watch: update (revision %" PRId64 ") not applied: %s", up.u.revision, e.msg);
		/* Possibly half applied: changes_publish still runs with what changed. */
	}
	if (up.u.snapshot)
		s->entries_known = true; /* the Workload API may now tell a caller it is entitled to nothing */
	s->stats.watch_updates++;
	s->last_sync = (time_t)now_s();
	size_t nchanges = cs.n;
	changes_publish(s, &cs);
	log_debug("watch: %s revision %" PRId64 ": %zu entries, %zu deletions, %zu changes, bundle %" PRIu64
		  " (%zu bytes, applied in %.1f ms)",
	    up.u.snapshot ? "snapshot" : "delta", up.u.revision, up.u.n_entries, up.u.n_deleted, nchanges,
	    up.bundle_sequence, len, (double)(uv_hrtime() - t0) / 1e6);
	if (up.bundle_sequence > bundle_seq(s))
		bundle_fetch(s);
out:
	/* A large update (every resync of a big node is one) leaves thousands of small blocks freed. */
	if (len >= WATCH_BURST_BYTES)
		ly_sync_memory_burst(s);
	ly_agentapi_update_cleanup(&up);
	ly_cache_changes_cleanup(&cs);
}

static void
watch_on_msg(struct ccall *c, const uint8_t *msg, size_t len)
{
	struct watch *w = (struct watch *)c;
	struct ly_sync *s = c->s;

	if (w->cancelled || s->phase != PH_ENROLLED)
		return;
	if (w == s->watch_next) {
		/* The replacement speaks: it becomes the watch, the old one goes. */
		watch_cancel(s->watch);
		s->watch = w;
		s->watch_next = NULL;
	} else if (w != s->watch) {
		return;
	}
	bool first = !w->got_update;
	if (first) {
		w->got_update = true;
		if (s->backoff_attempt > 0 || s->denied)
			log_info("watch: connected to the server again");
		s->backoff_attempt = 0;
		s->denied = false;
	}
	watch_apply(s, msg, len);
	if (first) {
		/* Issuance and renewal may have waited for a working connection. */
		issue_kick(s);
		tick_arm(s);
	}
}

static void
watch_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct watch *w = (struct watch *)c;
	struct ly_sync *s = c->s;
	bool mine = w == s->watch || w == s->watch_next;
	bool cancelled = w->cancelled;
	bool current_chan = c->chan == s->chan;

	if (w == s->watch)
		s->watch = NULL;
	if (w == s->watch_next)
		s->watch_next = NULL;
	ccall_cleanup(c);
	free(w);
	if (cancelled || !mine || s->phase != PH_ENROLLED)
		return;
	/* A watch of a retired channel (old credentials) ended while a newer one is open: that one goes on. */
	if (!current_chan && (s->watch != NULL || s->watch_next != NULL)) {
		log_debug("watch on a retired channel ended: %s %s", ly_rpc_code_str(code), details);
		return;
	}
	switch (code) {
	case LY_RPC_OK:
		/* "watch rebased": up to date, reopen at once. */
		log_debug("watch ended: %s", details);
		if (s->watch == NULL && s->watch_next == NULL)
			watch_open(s);
		return;
	case LY_RPC_PERMISSION_DENIED:
		watches_drop(s);
		if (strstr(details, "banned") != NULL) {
			log_error("the server refuses this agent (%s): serving cached SVIDs, asking again every %d s",
			    details, LY_SYNC_BACKOFF_MAX_MS / 1000);
			s->denied = true;
			s->backoff_attempt = 32;
			reconnect_later(s, "banned");
			return;
		}
		reattest(s, details);
		return;
	case LY_RPC_UNAUTHENTICATED:
		watches_drop(s);
		if (ident_expired(s, now_s())) {
			reattest(s, "our SVID expired");
			return;
		}
		/* Our SVID was superseded or the connection predates it: a new channel. */
		chan_retire(s, s->chan);
		reconnect_later(s, details);
		return;
	case LY_RPC_ABORTED:
		/* A newer watch of ours replaced this one (the server keeps 4). */
		if (s->watch == NULL && s->watch_next == NULL)
			reconnect_later(s, details);
		return;
	default:
		log_warn("watch ended: %s %s", ly_rpc_code_str(code), details);
		watches_drop(s);
		chan_retire(s, s->chan);
		reconnect_later(s, ly_rpc_code_str(code));
		return;
	}
}

/*
 * Opens a watch on the current channel (made first if needed). With one
 * open already it becomes the replacement (watch_next), which takes over
 * when its first update (a snapshot) arrives.
 */
static void
watch_open(struct ly_sync *s)
{
	struct watch *w = NULL;
	struct ly_error e;
	Lanyard__Agent__V1__WatchEntriesRequest req;

	if (s->phase != PH_ENROLLED || s->reconnect_armed)
		return;
	if (s->watch_next != NULL) {
		if (s->watch_next->base.chan == s->chan)
			return;
		watch_cancel(s->watch_next); /* on a retired channel: start again on the new one */
		s->watch_next = NULL;
	}
	if (s->chan == NULL && chan_new(s, true, &s->chan, &e) != LY_OK) {
		log_error("channel to %s: %s", s->target, e.msg);
		reconnect_later(s, "no channel");
		return;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		reconnect_later(s, "out of memory");
		return;
	}
	w->base.on_msg = watch_on_msg;
	w->base.on_done = watch_on_done;
	w->serial = ++s->watch_serial;
	lanyard__agent__v1__watch_entries_request__init(&req);
	req.since_revision = ly_cache_revision(s->cache);
	if (ccall_start(s, s->chan, &w->base, M_WATCH, LY_RPC_SERVER_STREAM, &req.base, false, &e) != LY_OK) {
		log_warn("watch: %s", e.msg);
		free(w);
		reconnect_later(s, "watch not started");
		return;
	}
	s->stats.watch_opened++;
	if (s->watch == NULL)
		s->watch = w;
	else
		s->watch_next = w;
}

static void
on_reconnect_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s == NULL)
		return;
	s->reconnect_armed = false;
	if (s->phase == PH_ENROLLED)
		enrolled_connect(s);
	else if (s->phase == PH_ATTEST)
		attest_begin(s);
}

/* Tries again after the backoff delay (one pending retry at a time). */
static void
reconnect_later(struct ly_sync *s, const char *why)
{
	if (s->reconnect_armed || s->phase == PH_STOPPING)
		return;
	uint64_t ms = ly_sync_backoff_ms(s->backoff_attempt, rand32());
	if (s->backoff_attempt < 32)
		s->backoff_attempt++;
	log_info("server %s: %s: retrying in %" PRIu64 " ms", s->target, why, ms);
	s->reconnect_armed = true;
	timer_arm(s->t_reconnect, on_reconnect_timer, ms);
}

/* Enrolled: a channel and a watch; issuance and renewal follow from there. */
static void
enrolled_connect(struct ly_sync *s)
{
	if (s->phase != PH_ENROLLED)
		return;
	if (s->watch == NULL)
		watch_open(s);
	issue_kick(s);
	tick_arm(s);
}

/*
 * Every sync_interval: a fresh watch next to the current one, whose
 * snapshot replaces the state (a lost or stuck stream is covered). A
 * replacement still silent one interval later means the connection is
 * dead: a new channel.
 */
static void
on_resync_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s == NULL || s->phase != PH_ENROLLED || s->reconnect_armed)
		return;
	/* Watches with a serial up to `mark` were open at the previous tick: a whole interval ago. */
	uint64_t mark = s->resync_mark;
	struct watch *silent = NULL;
	if (s->watch_next != NULL && s->watch_next->serial <= mark)
		silent = s->watch_next;
	else if (s->watch != NULL && !s->watch->got_update && s->watch->serial <= mark)
		silent = s->watch;
	if (silent != NULL) {
		log_warn("watch: no answer from %s within %" PRId64 " s: new connection", s->target,
		    s->agent->cfg.sync_interval);
		watches_drop(s);
		chan_retire(s, s->chan);
		reconnect_later(s, "no answer");
	} else if (s->watch_next == NULL && (s->watch == NULL || s->watch->got_update)) {
		watch_open(s);
	}
	s->resync_mark = s->watch_serial;
}

/* ---- node attestation ------------------------------------------------------------------------ */

/* The insecure bootstrap's look at the server's certificate chain (pool thread). */
struct probe_job {
	uv_work_t w;
	struct ly_sync *s;
	char *host;
	char port[8];
	char *roots_pem; /* the CA certificates the server sent, PEM */
	ly_status rc;
	struct ly_error e;
};

static int
probe_connect(const char *host, const char *port, struct ly_error *err)
{
	struct addrinfo hints, *res = NULL;
	int fd = -1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		(void)ly_error_set(err, LY_E_IO, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			if (poll(&p, 1, PROBE_TIMEOUT_MS) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
			    soerr == 0)
				break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		(void)ly_error_set(err, LY_E_IO, "cannot connect to %s:%s", host, port);
		return -1;
	}
	/* Blocking from here, with timeouts. */
	struct timeval tv = { .tv_sec = PROBE_TIMEOUT_MS / 1000, .tv_usec = 0 };
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
		(void)ly_error_set(err, LY_E_IO, "socket options: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Connects to the server with TLS, checking nothing (that is what
 * -insecureBootstrap means), and keeps the CA certificates it presents
 * after its leaf: gRPC takes them as roots (partial chains are allowed
 * there) for the attestation channel, whose own check still insists on
 * the server's SPIFFE ID.
 */
static void
probe_run(uv_work_t *w)
{
	struct probe_job *j = w->data;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	BIO *out = NULL;
	int fd;
	static const unsigned char alpn[] = { 2, 'h', '2' };

	j->rc = LY_OK;
	if ((fd = probe_connect(j->host, j->port, &j->e)) < 0) {
		j->rc = LY_E_IO;
		return;
	}
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL || (ssl = SSL_new(ctx)) == NULL ||
	    (out = BIO_new(BIO_s_mem())) == NULL) {
		j->rc = ly_error_openssl(&j->e, LY_E_CRYPTO, "TLS probe");
		goto out;
	}
	SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	(void)SSL_set_alpn_protos(ssl, alpn, sizeof(alpn));
	if (SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
		j->rc = ly_error_openssl(&j->e, LY_E_IO, "TLS probe of %s:%s: handshake failed", j->host, j->port);
		goto out;
	}
	STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
	int n = chain != NULL ? sk_X509_num(chain) : 0;
	if (n <= 0 || n > LY_CHAIN_CERTS_MAX) {
		j->rc = ly_error_set(&j->e, LY_E_INVALID, "TLS probe: the server sent %d certificates", n);
		goto out;
	}
	/* The CAs after the leaf; a lone leaf stands for itself. */
	for (int i = n > 1 ? 1 : 0; i < n; i++) {
		if (PEM_write_bio_X509(out, sk_X509_value(chain, i)) != 1) {
			j->rc = ly_error_openssl(&j->e, LY_E_CRYPTO, "TLS probe: PEM");
			goto out;
		}
	}
	char *p = NULL;
	long len = BIO_get_mem_data(out, &p);
	if (len <= 0 || (j->roots_pem = strndup(p, (size_t)len)) == NULL)
		j->rc = ly_error_set(&j->e, LY_E_NOMEM, "TLS probe: out of memory");
out:
	if (ssl != NULL)
		(void)SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	BIO_free(out);
	close(fd);
	ERR_clear_error();
}

static void
probe_after(uv_work_t *w, int status)
{
	struct probe_job *j = w->data;
	struct ly_sync *s = j->s;

	s->probe_busy = false;
	s->n_works--;
	if (status == 0 && j->rc == LY_OK && s->phase == PH_ATTEST) {
		log_warn("insecure bootstrap: the server's certificate is taken on trust (its CA certificates become the "
			 "roots for attestation; only its SPIFFE ID %s is checked)",
		    s->server_id);
		free(s->probe_roots_pem);
		s->probe_roots_pem = j->roots_pem;
		j->roots_pem = NULL;
		attest_begin(s);
	} else if (s->phase == PH_ATTEST) {
		reconnect_later(s, status != 0 ? "TLS probe cancelled" : j->e.msg);
	}
	free(j->roots_pem);
	free(j->host);
	free(j);
	stop_maybe_done(s);
}

static void
probe_start(struct ly_sync *s)
{
	struct probe_job *j;

	if (s->probe_busy)
		return;
	if ((j = calloc(1, sizeof(*j))) == NULL || (j->host = strdup(s->agent->cfg.server_address)) == NULL) {
		free(j);
		reconnect_later(s, "out of memory");
		return;
	}
	j->s = s;
	j->w.data = j;
	(void)snprintf(j->port, sizeof(j->port), "%u", (unsigned)s->agent->cfg.server_port);
	if (uv_queue_work(s->loop, &j->w, probe_run, probe_after) != 0) {
		free(j->host);
		free(j);
		reconnect_later(s, "cannot queue the TLS probe");
		return;
	}
	s->probe_busy = true;
	s->n_works++;
}

struct attest_call {
	struct ccall base;
	int step; /* 0: the attestation, 1: the x509pop proof, 2: the ticket */
};

static void attest_on_done(struct ccall *c, enum ly_rpc_code code, const char *details);

/* A CSR for `id` with the attestation key. */
static ly_status
attest_csr(struct ly_sync *s, const char *id, struct ly_buf *csr, struct ly_error *err)
{
	struct ly_spiffe_id sid;

	LY_TRY(ly_spiffe_id_parse_str(id, &sid, err));
	if (!ly_spiffe_id_member_of(&sid, s->td) || ly_spiffe_id_is_trust_domain_id(&sid))
		return ly_error_set(err, LY_E_INVALID, "agent ID %s: not a workload ID of trust domain %s", id, s->td);
	return ly_csr_build(s->att_key, &sid, NULL, 0, csr, err);
}

/* The x509pop node certificate chain (DER) and its key, read at each attempt (they may be renewed). */
static ly_status
x509pop_material(struct ly_sync *s, struct ly_buf *chain, EVP_PKEY **key, struct ly_error *err)
{
	const struct ly_agent_config *cfg = &s->agent->cfg;
	ly_status rc;

	if ((rc = ly_pem_file_to_der_certs(cfg->x509pop_cert_path, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, chain, err)) !=
	    LY_OK)
		return ly_error_wrap(err, rc, "x509pop certificate %s", cfg->x509pop_cert_path);
	if ((rc = ly_key_from_pem_file(cfg->x509pop_key_path, key, err)) != LY_OK) {
		ly_buf_free(chain);
		return ly_error_wrap(err, rc, "x509pop key %s", cfg->x509pop_key_path);
	}
	return LY_OK;
}

/* spiffe://<td>/lanyard/agent/x509pop/<SHA-1 of the leaf DER, hex> (docs/agent-api.md). */
static ly_status
x509pop_predicted_id(struct ly_sync *s, const struct ly_buf *chain, char *out, size_t size, struct ly_error *err)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t n = 0;
	unsigned char md[20];
	char hex[41];

	LY_TRY(ly_der_split(chain->data, chain->len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &n, err));
	if (EVP_Digest(chain->data + spans[0].off, spans[0].len, md, NULL, EVP_sha1(), NULL) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "x509pop: SHA-1");
	for (size_t i = 0; i < sizeof(md); i++)
		(void)snprintf(hex + 2 * i, 3, "%02x", md[i]);
	(void)snprintf(out, size, "spiffe://%s/lanyard/agent/x509pop/%s", s->td, hex);
	return LY_OK;
}

/* The join token as an ID path segment, when it is one (SPEC §2's default agent ID). */
static bool
join_token_predicted_id(struct ly_sync *s, char *out, size_t size)
{
	const char *t = s->agent->cfg.join_token;
	struct ly_spiffe_id sid;
	char buf[LY_SPIFFE_ID_MAX + 1];

	if (t == NULL || strlen(t) > LY_JOIN_TOKEN_MAX)
		return false;
	(void)snprintf(buf, sizeof(buf), "spiffe://%s/lanyard/agent/join_token/%s", s->td, t);
	if (ly_spiffe_id_parse_str(buf, &sid, NULL) != LY_OK)
		return false;
	(void)snprintf(out, size, "%s", buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return true;
}

static void
attest_refused(struct ly_sync *s, enum ly_rpc_code code, const char *what)
{
	switch (code) {
	case LY_RPC_PERMISSION_DENIED:
	case LY_RPC_INVALID_ARGUMENT:
	case LY_RPC_FAILED_PRECONDITION:
	case LY_RPC_UNAUTHENTICATED:
		if (s->method == METHOD_JOIN_TOKEN && code == LY_RPC_PERMISSION_DENIED) {
			s->join_token_spent = true;
			log_error("attestation refused: %s (a join token works once: give the agent a new one with "
				  "-joinToken); serving cached SVIDs, trying again every %d s",
			    what, LY_SYNC_BACKOFF_MAX_MS / 1000);
		} else {
			log_error("attestation refused: %s; trying again every %d s", what, LY_SYNC_BACKOFF_MAX_MS / 1000);
		}
		s->backoff_attempt = 32;
		break;
	default:
		log_warn("attestation failed: %s", what);
		break;
	}
	EVP_PKEY_free(s->att_key);
	s->att_key = NULL;
	/* The bootstrap channel may be the problem (a server that rotated its certificate): a new one next time. */
	chan_retire(s, s->chan);
	reconnect_later(s, "attestation");
}

/* Starts one AttestAgent call of step `step` with request `req`. */
static ly_status
attest_send(struct ly_sync *s, int step, Lanyard__Agent__V1__AttestAgentRequest *req, struct ly_error *err)
{
	struct attest_call *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "attestation: out of memory");
	a->step = step;
	a->base.on_done = attest_on_done;
	if (ccall_start(s, s->chan, &a->base, M_ATTEST, LY_RPC_UNARY, &req->base, true, err) != LY_OK) {
		free(a);
		return LY_E_IO;
	}
	s->attest_busy = true;
	return LY_OK;
}

/* Reads a k8s_psat token (projected: it is rotated by the kubelet, so read at each attempt). */
static ly_status
psat_token_read(const char *path, struct ly_buf *out, struct ly_error *err)
{
	LY_TRY(ly_pem_read_file(path, out, err)); /* any text file, NUL-terminated, read in one allocation */
	while (out->len > 0 && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r' ||
				   out->data[out->len - 1] == ' '))
		out->data[--out->len] = '\0';
	if (out->len == 0 || out->len > LY_K8S_TOKEN_MAX) {
		ly_buf_free_secret(out);
		return ly_error_set(err, LY_E_INVALID, "k8s_psat token %s: empty or over %d bytes", path, LY_K8S_TOKEN_MAX);
	}
	return LY_OK;
}

/* First step of node attestation, by the configured method. */
static void
attest_begin(struct ly_sync *s)
{
	Lanyard__Agent__V1__AttestAgentRequest req;
	Lanyard__Agent__V1__JoinTokenAttestation jt;
	Lanyard__Agent__V1__X509PopAttestation xp;
	Lanyard__Agent__V1__K8sPsatAttestation ps;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, token = LY_BUF_INIT;
	EVP_PKEY *popkey = NULL;
	struct ly_error e;
	ly_status rc = LY_OK;

	if (s->phase != PH_ATTEST || s->attest_busy || s->reconnect_armed)
		return;
	if (s->bootstrap == NULL && s->probe_roots_pem == NULL) {
		if (s->insecure)
			probe_start(s);
		else
			reconnect_later(s, "no bundle to check the server with");
		return;
	}
	if (s->chan == NULL && (rc = chan_new(s, false, &s->chan, &e)) != LY_OK) {
		log_error("channel to %s: %s", s->target, e.msg);
		reconnect_later(s, "no channel");
		return;
	}
	EVP_PKEY_free(s->att_key);
	s->att_key = NULL;
	s->att_expect[0] = '\0';
	if ((rc = ly_key_generate(LY_KEY_TYPE_DEFAULT, &s->att_key, &e)) != LY_OK)
		goto out;
	lanyard__agent__v1__attest_agent_request__init(&req);
	switch (s->method) {
	case METHOD_JOIN_TOKEN:
		lanyard__agent__v1__join_token_attestation__init(&jt);
		jt.token = (char *)(uintptr_t)s->agent->cfg.join_token;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN;
		req.join_token = &jt;
		/* The default ID is predictable: one round trip. Otherwise the ticket step. */
		if (join_token_predicted_id(s, s->att_expect, sizeof(s->att_expect)) &&
		    (rc = attest_csr(s, s->att_expect, &csr, &e)) != LY_OK)
			goto out;
		break;
	case METHOD_X509POP:
		if ((rc = x509pop_material(s, &chain, &popkey, &e)) != LY_OK)
			goto out;
		lanyard__agent__v1__x509_pop_attestation__init(&xp);
		xp.certificate_chain.data = chain.data;
		xp.certificate_chain.len = chain.len;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP;
		req.x509pop = &xp;
		break;
	case METHOD_K8S_PSAT:
		if ((rc = psat_token_read(s->agent->cfg.psat_token_path, &token, &e)) != LY_OK)
			goto out;
		lanyard__agent__v1__k8s_psat_attestation__init(&ps);
		ps.cluster = (char *)(uintptr_t)s->agent->cfg.psat_cluster;
		ps.token = (char *)token.data;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_K8S_PSAT;
		req.k8s_psat = &ps;
		break;
	default:
		rc = ly_error_set(&e, LY_E_INVALID, "no node attestation configured");
		goto out;
	}
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	rc = attest_send(s, 0, &req, &e);
out:
	EVP_PKEY_free(popkey);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	ly_buf_free_secret(&token);
	if (rc != LY_OK) {
		log_error("attestation not started: %s", e.msg);
		EVP_PKEY_free(s->att_key);
		s->att_key = NULL;
		s->backoff_attempt = s->backoff_attempt < 4 ? 4 : s->backoff_attempt;
		reconnect_later(s, "attestation");
	}
}

/* The server admitted us and signed our SVID: check it, keep it, and switch to mTLS. */
static void
attest_finish(struct ly_sync *s, const Lanyard__Agent__V1__AgentSVID *svid)
{
	struct ly_bundle *b = NULL;
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_x509svid_info info;
	struct ly_error e;

	if (ly_agentapi_svid_check(svid, s->att_expect, &e) != LY_OK) {
		attest_refused(s, LY_RPC_INTERNAL, e.msg);
		return;
	}
	/*
	 * The bundle came over TLS from a server that proved the ID
	 * spiffe://<td>/lanyard/server with our bootstrap bundle (or, insecure,
	 * from the first server we reached). Our new SVID must verify to it.
	 */
	if (ly_agentapi_bundle_from_pb(svid->bundle, s->td, &b, &e) != LY_OK ||
	    verify_with_bundle(s, b, svid->cert_chain.data, svid->cert_chain.len, s->att_key, s->att_expect, &info,
		&e) != LY_OK ||
	    ly_buf_set(&chain, svid->cert_chain.data, svid->cert_chain.len, &e) != LY_OK ||
	    ident_set(s, s->att_expect, &s->att_key, &chain, info.not_before, info.not_after, 0, &e) != LY_OK) {
		char msg[LY_ERROR_MSG_MAX + 32];
		(void)snprintf(msg, sizeof(msg), "agent SVID refused: %s", e.msg);
		ly_bundle_free(b);
		ly_buf_free(&chain);
		attest_refused(s, LY_RPC_INTERNAL, msg);
		return;
	}
	s->stats.attestations++;
	log_info("attested as %s: SVID valid from %" PRId64 " until %" PRId64 ", renewal at %" PRId64 " ms",
	    s->ident.id, s->ident.not_before, s->ident.not_after, s->ident.renew_at_ms);
	if (s->insecure)
		log_warn("insecure bootstrap: trusting the bundle (sequence %" PRIu64 ") of the first server reached",
		    ly_bundle_sequence(b));
	s->insecure = false;
	free(s->probe_roots_pem);
	s->probe_roots_pem = NULL;
	ly_bundle_free(s->bootstrap);
	s->bootstrap = NULL;
	/* The attestation channel goes; an mTLS one comes. */
	chan_retire(s, s->chan);
	s->phase = PH_ENROLLED;
	s->backoff_attempt = 0;
	s->denied = false;
	bundle_install(s, b);
	mark_agent_dirty(s);
	struct ly_error se;
	if (ly_rotation_schedule_all(s->sched, s->cache, now_ms(), &se) != LY_OK)
		log_error("rotation schedule: %s", se.msg);
	enrolled_connect(s);
}

static void
attest_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct attest_call *a = (struct attest_call *)c;
	struct ly_sync *s = c->s;
	Lanyard__Agent__V1__AttestAgentResponse *m = NULL;
	Lanyard__Agent__V1__AttestAgentRequest req;
	Lanyard__Agent__V1__X509PopAttestation xp;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, sig = LY_BUF_INIT;
	EVP_PKEY *popkey = NULL;
	struct ly_error e;
	char what[LY_ERROR_MSG_MAX + 64];
	int step = a->step;

	s->attest_busy = false;
	if (s->phase != PH_ATTEST)
		goto out;
	if (code != LY_RPC_OK) {
		(void)snprintf(what, sizeof(what), "%s %s", ly_rpc_code_str(code), details);
		attest_refused(s, code, what);
		goto out;
	}
	if (step == 0 && s->method == METHOD_JOIN_TOKEN)
		s->join_token_spent = true; /* used up, whatever comes next */
	if (ly_agentapi_attest_parse(c->resp.data, c->resp.len, &m, &e) != LY_OK) {
		attest_refused(s, LY_RPC_INTERNAL, e.msg);
		goto out;
	}
	if (m->svid != NULL) {
		attest_finish(s, m->svid);
		goto out;
	}
	lanyard__agent__v1__attest_agent_request__init(&req);
	if (step == 0 && s->method == METHOD_X509POP && ly_agentapi_attest_has_challenge(m)) {
		/* x509pop step 2: the proof, and a CSR for the ID we can predict. */
		if (x509pop_material(s, &chain, &popkey, &e) != LY_OK ||
		    ly_x509pop_sign(popkey, m->challenge_nonce.data, m->challenge_nonce.len, &sig, &e) != LY_OK ||
		    x509pop_predicted_id(s, &chain, s->att_expect, sizeof(s->att_expect), &e) != LY_OK ||
		    attest_csr(s, s->att_expect, &csr, &e) != LY_OK) {
			(void)snprintf(what, sizeof(what), "x509pop: %s", e.msg);
			attest_refused(s, LY_RPC_FAILED_PRECONDITION, what);
			goto out;
		}
		lanyard__agent__v1__x509_pop_attestation__init(&xp);
		xp.certificate_chain.data = chain.data;
		xp.certificate_chain.len = chain.len;
		xp.challenge_nonce = m->challenge_nonce;
		xp.challenge_signature.data = sig.data;
		xp.challenge_signature.len = sig.len;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP;
		req.x509pop = &xp;
	} else if (step != 2 && ly_agentapi_attest_has_ticket(m)) {
		/* Admitted under an ID we could not predict: a CSR for it, with the ticket. */
		if (ly_agentapi_attest_ticket_id(m, s->att_expect, sizeof(s->att_expect), &e) != LY_OK) {
			attest_refused(s, LY_RPC_INTERNAL, e.msg);
			goto out;
		}
		if (attest_csr(s, s->att_expect, &csr, &e) != LY_OK) {
			(void)snprintf(what, sizeof(what), "ticket step: %s", e.msg);
			attest_refused(s, LY_RPC_INTERNAL, what);
			goto out;
		}
		log_info("admitted as %s: redeeming the ticket", s->att_expect);
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_TICKET;
		req.ticket = m->ticket;
		step = 1;
	} else {
		attest_refused(s, LY_RPC_INTERNAL, "AttestAgentResponse without an SVID, a challenge or a ticket");
		goto out;
	}
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (attest_send(s, step + 1, &req, &e) != LY_OK)
		attest_refused(s, LY_RPC_UNAVAILABLE, e.msg);
out:
	ly_agentapi_attest_free(m);
	EVP_PKEY_free(popkey);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	ly_buf_free(&sig);
	ccall_cleanup(c);
	free(a);
}

/*
 * The server wants us to attest again (evicted), or our SVID expired. A
 * join token works once: without a new one we keep serving the cached
 * SVIDs and ask the server again every 30 s (an operator may undo
 * nothing, but a restart with a new -joinToken does the job).
 */
static void
reattest(struct ly_sync *s, const char *why)
{
	if (s->method == METHOD_NONE || (s->method == METHOD_JOIN_TOKEN && s->join_token_spent)) {
		log_error("the server wants this agent to attest again (%s) but it has no attestation left (%s): serving "
			  "cached SVIDs, asking again every %d s; restart it with a new -joinToken",
		    why, s->method == METHOD_NONE ? "no node attestor configured" : "its join token is used up",
		    LY_SYNC_BACKOFF_MAX_MS / 1000);
		watches_drop(s);
		chan_retire(s, s->chan);
		s->denied = true;
		s->backoff_attempt = 32;
		reconnect_later(s, "attestation needed");
		return;
	}
	struct ly_error e;
	const struct ly_bundle *cur = ly_cache_bundle(s->cache);
	log_warn("attesting again: %s", why);
	ly_bundle_free(s->bootstrap);
	s->bootstrap = NULL;
	if (cur != NULL && ly_bundle_clone(cur, &s->bootstrap, &e) != LY_OK)
		log_error("attestation: %s", e.msg);
	watches_drop(s);
	chan_kill(s, s->chan);
	s->phase = PH_ATTEST;
	s->renew_busy = false;
	attest_begin(s);
}

/* ---- our SVID's renewal --------------------------------------------------------------------- */

struct renew_call {
	struct ccall base;
	EVP_PKEY *key;
};

static void
renew_retry(struct ly_sync *s)
{
	s->renew_retry_ms = ly_rotation_retry_ms(now_ms(), s->renew_attempt);
	if (s->renew_attempt < 32)
		s->renew_attempt++;
	tick_arm(s);
}

static int64_t
renew_due_ms(const struct ly_sync *s)
{
	return s->renew_retry_ms != 0 ? s->renew_retry_ms : s->ident.renew_at_ms;
}

static void
renew_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct renew_call *r = (struct renew_call *)c;
	struct ly_sync *s = c->s;
	Lanyard__Agent__V1__AgentSVID *m = NULL;
	struct ly_bundle *b = NULL;
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_x509svid_info info;
	struct ly_error e;

	s->renew_busy = false;
	if (s->phase != PH_ENROLLED)
		goto out;
	if (code != LY_RPC_OK) {
		log_warn("RenewAgent: %s %s", ly_rpc_code_str(code), details);
		if (code == LY_RPC_PERMISSION_DENIED && strstr(details, "banned") == NULL)
			reattest(s, details);
		else if (code == LY_RPC_UNAUTHENTICATED && ident_expired(s, now_s()))
			reattest(s, "our SVID expired");
		else
			renew_retry(s);
		goto out;
	}
	if (ly_agentapi_agent_svid_parse(c->resp.data, c->resp.len, s->ident.id, &m, &e) != LY_OK) {
		log_error("RenewAgent: malformed answer, or an SVID for another ID: %s", e.msg);
		renew_retry(s);
		goto out;
	}
	/* A newer bundle in the answer is checked with the new SVID, then installed. */
	if (m->bundle != NULL) {
		if (ly_agentapi_bundle_from_pb(m->bundle, s->td, &b, &e) != LY_OK) {
			log_warn("RenewAgent: bundle ignored: %s", e.msg);
		} else if (ly_bundle_sequence(b) <= bundle_seq(s)) {
			ly_bundle_free(b);
			b = NULL;
		}
	}
	const struct ly_bundle *vb = b != NULL ? b : ly_cache_bundle(s->cache);
	if (vb == NULL ||
	    verify_with_bundle(s, vb, m->cert_chain.data, m->cert_chain.len, r->key, s->ident.id, &info, &e) != LY_OK ||
	    ly_buf_set(&chain, m->cert_chain.data, m->cert_chain.len, &e) != LY_OK ||
	    ident_set(s, s->ident.id, &r->key, &chain, info.not_before, info.not_after, 0, &e) != LY_OK) {
		log_error("RenewAgent: new SVID refused: %s", vb == NULL ? "no bundle" : e.msg);
		renew_retry(s);
		goto out;
	}
	s->stats.renewals++;
	log_info("agent SVID renewed: valid from %" PRId64 " until %" PRId64 ", next renewal at %" PRId64 " ms",
	    s->ident.not_before, s->ident.not_after, s->ident.renew_at_ms);
	if (b != NULL) {
		bundle_install(s, b);
		b = NULL;
	}
	mark_agent_dirty(s);
	/* New credentials, new channel (no connection of the old one is reused); the old goes when drained. */
	chan_retire(s, s->chan);
	watch_open(s);
	tick_arm(s);
out:
	ly_bundle_free(b);
	ly_buf_free(&chain);
	ly_agentapi_agent_svid_free(m);
	EVP_PKEY_free(r->key);
	ccall_cleanup(c);
	free(r);
}

static void
renew_begin(struct ly_sync *s)
{
	struct renew_call *r = NULL;
	struct ly_spiffe_id sid;
	struct ly_buf csr = LY_BUF_INIT;
	struct ly_error e;
	Lanyard__Agent__V1__RenewAgentRequest req;

	if (s->phase != PH_ENROLLED || s->renew_busy || !s->ident.valid || s->chan == NULL)
		return;
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		renew_retry(s);
		return;
	}
	r->base.on_done = renew_on_done;
	if (ly_key_generate(LY_KEY_TYPE_DEFAULT, &r->key, &e) != LY_OK ||
	    ly_spiffe_id_parse_str(s->ident.id, &sid, &e) != LY_OK || ly_csr_build(r->key, &sid, NULL, 0, &csr, &e) != LY_OK)
		goto fail;
	lanyard__agent__v1__renew_agent_request__init(&req);
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (ccall_start(s, s->chan, &r->base, M_RENEW, LY_RPC_UNARY, &req.base, false, &e) != LY_OK)
		goto fail;
	ly_buf_free(&csr);
	s->renew_busy = true;
	log_debug("renewing the agent SVID");
	return;
fail:
	log_warn("agent SVID renewal not started: %s", e.msg);
	ly_buf_free(&csr);
	EVP_PKEY_free(r->key);
	free(r);
	renew_retry(s);
}

/* ---- workload SVID issuance ------------------------------------------------------------------ */

struct issue_item {
	char *entry_id;
	char *spiffe_id;
	char **dns;
	size_t n_dns;
	EVP_PKEY *key;
	struct ly_buf csr;
	bool prepared, ok;
	bool dropped; /* answered, but its entry was deleted or changed meanwhile */
	char msg[192]; /* why it failed */
	struct ly_buf chain, key_der;
	int64_t not_before, not_after;
};

/*
 * A batch's answers are verified on up to ISSUE_VERIFY_PARTS pool threads
 * at once, each over its own contiguous run of items (verification is
 * ~90% of the agent's work in a storm; docs/benchmarks.md). Items are
 * matched to their results on the loop thread first, so the parts share
 * nothing but the verifier, which is thread-safe (verify.h).
 */
#define ISSUE_VERIFY_PARTS 4
/*
 * Batches in flight at once: while one batch's answers are verified, the
 * next one's keys and CSRs are made and the server signs it, so the agent's
 * pool, its loop and the server overlap instead of taking turns.
 */
#define ISSUE_INFLIGHT_MAX 2
#define ISSUE_VERIFY_PART_MIN 16 /* items: below this a part costs more than it saves */

struct issue_part {
	uv_work_t w;
	struct issue_job *j;
	size_t lo, hi; /* items [lo, hi) */
};

struct issue_job {
	struct ccall base; /* the BatchNewX509SVID call */
	uv_work_t w;
	struct ly_sync *s;
	struct issue_item *items;
	size_t n;
	Lanyard__Agent__V1__BatchNewX509SVIDResponse *resp;
	const Lanyard__Agent__V1__X509SVIDResult **answer; /* [n]: item i's result, or NULL */
	struct issue_part parts[ISSUE_VERIFY_PARTS];
	unsigned parts_pending;
	bool parts_cancelled;
	int64_t now;
};

static void
issue_job_free(struct issue_job *j)
{
	for (size_t i = 0; j->items != NULL && i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		free(it->entry_id);
		free(it->spiffe_id);
		for (size_t k = 0; k < it->n_dns; k++)
			free(it->dns[k]);
		free(it->dns);
		EVP_PKEY_free(it->key);
		ly_buf_free(&it->csr);
		ly_buf_free(&it->chain);
		ly_buf_free_secret(&it->key_der);
	}
	free(j->items);
	free(j->answer);
	ly_agentapi_batch_free(j->resp);
	ccall_cleanup(&j->base);
	free(j);
}

/* Puts the failed items of `j` back in the scheduler, each after its own backoff. */
static void
issue_reschedule_failed(struct ly_sync *s, struct issue_job *j, bool all)
{
	int64_t now = now_ms();
	struct ly_error e;
	struct ly_cache_item ci;

	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if ((it->ok && !all) || it->dropped)
			continue;
		if (!ly_cache_get(s->cache, it->entry_id, &ci) || ci.entry->node)
			continue; /* gone meanwhile */
		unsigned n = retry_count(s, it->entry_id);
		int64_t due = ly_rotation_retry_ms(now, n > 0 ? n - 1 : 0);
		/* An SVID that is still valid keeps being served until the retry succeeds. */
		if (ly_sched_put(s->sched, it->entry_id, due, now, &e) != LY_OK)
			log_error("entry %s: not rescheduled: %s", it->entry_id, e.msg);
	}
}

/* The batch is over (whatever happened): the next one may start. */
static void
issue_end(struct ly_sync *s, struct issue_job *j)
{
	issue_job_free(j);
	s->issue_inflight--;
	ly_sync_memory_burst(s);
	if (s->phase == PH_ENROLLED) {
		issue_kick(s);
		tick_arm(s);
	}
}

/*
 * Loop: pairs each item with its result (ly_agentapi_batch_match); a
 * refusal by the server, or no answer, is the item's message. Returns
 * false when out of memory.
 */
static bool
issue_match(struct issue_job *j)
{
	const Lanyard__Agent__V1__X509SVIDResult **refused = NULL;
	const char **ids = NULL;
	size_t n = j->n > 0 ? j->n : 1;

	j->answer = calloc(n, sizeof(*j->answer));
	refused = calloc(n, sizeof(*refused));
	ids = calloc(n, sizeof(*ids));
	if (j->answer == NULL || refused == NULL || ids == NULL) {
		free(refused);
		free(ids);
		return false;
	}
	for (size_t i = 0; i < j->n; i++)
		ids[i] = j->items[i].prepared ? j->items[i].entry_id : NULL;
	ly_agentapi_batch_match(j->resp, ids, j->n, j->answer, refused);
	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if (refused[i] != NULL)
			(void)snprintf(it->msg, sizeof(it->msg), "server: %s %s",
			    ly_rpc_code_str((enum ly_rpc_code)refused[i]->status_code),
			    refused[i]->status_message != NULL ? refused[i]->status_message : "");
		else if (it->prepared && j->answer[i] == NULL)
			(void)snprintf(it->msg, sizeof(it->msg), "no answer for it in the batch");
	}
	free(refused);
	free(ids);
	return true;
}

/* Pool: the verification of a part's answers (verify.h), keys kept as PKCS#8 for the cache. */
static void
issue_verify_run(uv_work_t *w)
{
	struct issue_part *p = w->data;
	struct issue_job *j = p->j;
	struct ly_sync *s = j->s;
	struct ly_x509svid_info info;
	enum ly_verify_fail why;
	struct ly_error e;

	for (size_t i = p->lo; i < p->hi; i++) {
		const Lanyard__Agent__V1__X509SVIDResult *res = j->answer[i];
		struct issue_item *it = &j->items[i];
		if (res == NULL)
			continue;
		if (ly_verify_x509svid(s->verifier, res->cert_chain.data, res->cert_chain.len, it->key, it->spiffe_id,
			j->now, &info, &why, &e) != LY_OK ||
		    ly_buf_set(&it->chain, res->cert_chain.data, res->cert_chain.len, &e) != LY_OK ||
		    ly_key_to_pkcs8_der(it->key, &it->key_der, &e) != LY_OK) {
			(void)snprintf(it->msg, sizeof(it->msg), "refused: %.180s", e.msg);
			ly_buf_free(&it->chain);
			continue;
		}
		it->not_before = (int64_t)info.not_before;
		it->not_after = (int64_t)info.not_after;
		it->ok = true;
	}
}

static void
issue_verify_after(uv_work_t *w, int status)
{
	struct issue_part *p = w->data;
	struct issue_job *j = p->j;
	struct ly_sync *s = j->s;
	struct ly_cache_changes cs;
	struct ly_error e;
	size_t ok = 0, failed = 0;

	s->n_works--;
	if (status != 0)
		j->parts_cancelled = true;
	if (--j->parts_pending > 0)
		return; /* the last part to finish takes the batch on */
	ly_cache_changes_init(&cs);
	if (j->parts_cancelled || s->phase != PH_ENROLLED) {
		issue_reschedule_failed(s, j, true);
		verifier_release(s);
		issue_end(s, j);
		stop_maybe_done(s);
		return;
	}
	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if (!it->ok) {
			if (it->msg[0] != '\0') {
				failed++;
				log_warn("SVID for entry %s (%s) not issued: %s", it->entry_id, it->spiffe_id, it->msg);
			}
			continue;
		}
		int64_t renew = ly_rotation_draw(&s->rng, it->not_before, it->not_after);
		if (ly_cache_set_svid(s->cache, it->entry_id, it->spiffe_id, &it->chain, &it->key_der, it->not_before,
			it->not_after, renew, &cs, &e) != LY_OK) {
			/* Deleted or changed while being issued: dropped (the change scheduled what is needed). */
			log_debug("SVID for entry %s dropped: %s", it->entry_id, e.msg);
			it->ok = false;
			it->dropped = true;
			continue;
		}
		retry_forget(s, it->entry_id);
		ok++;
	}
	s->stats.svids_issued += ok;
	s->stats.svids_failed += failed;
	if (ok > 0)
		s->issue_fail_streak = 0;
	log_debug("batch of %zu: %zu SVIDs issued, %zu failed", j->n, ok, failed);
	issue_reschedule_failed(s, j, false);
	changes_publish(s, &cs); /* still in flight: the next batch starts in issue_end */
	verifier_release(s);
	issue_end(s, j);
	stop_maybe_done(s);
}

static void
issue_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct issue_job *j = (struct issue_job *)c;
	struct ly_sync *s = c->s;
	struct ly_error e;
	ly_status rc;

	if (s->phase != PH_ENROLLED) {
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	if (code != LY_RPC_OK) {
		s->issue_fail_streak++;
		log_warn("BatchNewX509SVID of %zu: %s %s", j->n, ly_rpc_code_str(code), details);
		s->stats.svids_failed += j->n;
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	rc = ly_agentapi_batch_parse(c->resp.data, c->resp.len, &j->resp, &e);
	ly_buf_free_secret(&c->resp);
	if (rc != LY_OK) {
		log_error("BatchNewX509SVID: %s", e.msg);
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	if (!issue_match(j)) {
		log_error("BatchNewX509SVID: out of memory matching the answers");
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		return;
	}
	j->now = now_s();
	size_t nparts = (j->n + ISSUE_VERIFY_PART_MIN - 1) / ISSUE_VERIFY_PART_MIN;
	if (nparts > s->verify_parts)
		nparts = s->verify_parts;
	if (nparts == 0)
		nparts = 1;
	s->verify_busy++; /* once for the batch: verifier_release when its last part is done */
	for (size_t k = 0; k < nparts; k++) {
		struct issue_part *p = &j->parts[k];
		p->j = j;
		p->lo = j->n * k / nparts;
		p->hi = j->n * (k + 1) / nparts;
		p->w.data = p;
		if (uv_queue_work(s->loop, &p->w, issue_verify_run, issue_verify_after) != 0) {
			/* The parts already queued finish the batch; this one's items fail and are retried. */
			log_error("BatchNewX509SVID: cannot queue the verification");
			for (size_t i = p->lo; i < j->n; i++) {
				j->answer[i] = NULL;
				if (j->items[i].msg[0] == '\0')
					(void)snprintf(j->items[i].msg, sizeof(j->items[i].msg), "not verified: no worker");
			}
			break;
		}
		j->parts_pending++;
		s->n_works++;
	}
	if (j->parts_pending == 0) {
		verifier_release(s);
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
	}
}

/* Pool: a key and a CSR per item (key generation off the loop). */
static void
issue_prepare_run(uv_work_t *w)
{
	struct issue_job *j = w->data;
	struct ly_spiffe_id sid;
	struct ly_error e;

	for (size_t i = 0; i < j->n; i++) {
		struct issue_item *it = &j->items[i];
		if (ly_spiffe_id_parse_str(it->spiffe_id, &sid, &e) != LY_OK ||
		    ly_key_generate(LY_KEY_TYPE_DEFAULT, &it->key, &e) != LY_OK ||
		    ly_csr_build(it->key, &sid, (const char *const *)it->dns, it->n_dns, &it->csr, &e) != LY_OK) {
			(void)snprintf(it->msg, sizeof(it->msg), "CSR: %.180s", e.msg);
			continue;
		}
		it->prepared = true;
	}
}

static void
issue_prepare_after(uv_work_t *w, int status)
{
	struct issue_job *j = w->data;
	struct ly_sync *s = j->s;
	Lanyard__Agent__V1__BatchNewX509SVIDRequest req;
	Lanyard__Agent__V1__X509SVIDParams *params = NULL, **ptrs = NULL;
	struct ly_error e;
	size_t k = 0;

	s->n_works--;
	if (status != 0 || s->phase != PH_ENROLLED) {
		issue_reschedule_failed(s, j, true);
		issue_end(s, j);
		stop_maybe_done(s);
		return;
	}
	if ((params = calloc(j->n + 1, sizeof(*params))) == NULL || (ptrs = calloc(j->n + 1, sizeof(*ptrs))) == NULL) {
		log_error("BatchNewX509SVID: out of memory");
		goto fail;
	}
	for (size_t i = 0; i < j->n; i++) {
		if (!j->items[i].prepared)
			continue;
		lanyard__agent__v1__x509_svidparams__init(&params[k]);
		params[k].entry_id = j->items[i].entry_id;
		params[k].csr.data = j->items[i].csr.data;
		params[k].csr.len = j->items[i].csr.len;
		ptrs[k] = &params[k];
		k++;
	}
	if (k == 0)
		goto fail;
	lanyard__agent__v1__batch_new_x509_svidrequest__init(&req);
	req.n_params = k;
	req.params = ptrs;
	j->base.on_done = issue_on_done;
	if (ccall_start(s, s->chan, &j->base, M_BATCH, LY_RPC_UNARY, &req.base, false, &e) != LY_OK) {
		log_warn("BatchNewX509SVID: %s", e.msg);
		goto fail;
	}
	s->stats.batches++;
	log_debug("BatchNewX509SVID: %zu CSRs sent", k);
	free(params);
	free(ptrs);
	return;
fail:
	free(params);
	free(ptrs);
	issue_reschedule_failed(s, j, true);
	issue_end(s, j);
}

/* Copies what the pool needs of one cached entry into `it`. */
static ly_status
issue_item_fill(struct issue_item *it, const struct ly_entry *en)
{
	if ((it->entry_id = strdup(en->entry_id)) == NULL || (it->spiffe_id = strdup(en->spiffe_id)) == NULL)
		return LY_E_NOMEM;
	if (en->n_dns_names > 0) {
		if ((it->dns = calloc(en->n_dns_names, sizeof(*it->dns))) == NULL)
			return LY_E_NOMEM;
		for (size_t k = 0; k < en->n_dns_names; k++) {
			if ((it->dns[k] = strdup(en->dns_names[k])) == NULL)
				return LY_E_NOMEM;
			it->n_dns = k + 1;
		}
	}
	return LY_OK;
}

/*
 * Takes the due entries (new ones, and renewals due within the coalescing
 * window: rotation.h) as one batch of at most LY_ROTATION_BATCH_MAX, keys
 * and CSRs made on the pool. One batch at a time; the next starts as soon
 * as this one is in the cache.
 */
static void
issue_kick(struct ly_sync *s)
{
	struct ly_sched_batch batch;
	struct issue_job *j = NULL;
	struct ly_cache_item ci;
	struct ly_error e;

	if (s->phase != PH_ENROLLED || s->issue_inflight >= ISSUE_INFLIGHT_MAX || s->chan == NULL ||
	    s->reconnect_armed || s->denied)
		return;
	ly_sched_batch_init(&batch);
	for (;;) {
		if (ly_sched_pop_due(s->sched, now_ms(), LY_ROTATION_COALESCE_MS, LY_ROTATION_BATCH_MAX, &batch, &e) !=
		    LY_OK) {
			log_error("rotation: %s", e.msg);
			break;
		}
		if (batch.n == 0)
			break;
		if ((j = calloc(1, sizeof(*j))) == NULL || (j->items = calloc(batch.n, sizeof(*j->items))) == NULL) {
			log_error("issuance: out of memory");
			free(j);
			j = NULL;
			/* Put them back a little later. */
			for (size_t i = 0; i < batch.n; i++) {
				if (ly_sched_put(s->sched, batch.keys[i], now_ms() + 1000, now_ms(), NULL) != LY_OK)
					log_error("entry %s: not rescheduled", batch.keys[i]);
			}
			break;
		}
		j->s = s;
		for (size_t i = 0; i < batch.n; i++) {
			if (!ly_cache_get(s->cache, batch.keys[i], &ci) || ci.entry->node) {
				retry_forget(s, batch.keys[i]);
				continue;
			}
			if (issue_item_fill(&j->items[j->n], ci.entry) != LY_OK) {
				j->n++;
				log_error("issuance: out of memory");
				issue_job_free(j);
				j = NULL;
				break;
			}
			j->n++;
		}
		if (j == NULL)
			break;
		if (j->n == 0) {
			issue_job_free(j);
			j = NULL;
			continue; /* all gone: take the next due ones */
		}
		j->w.data = j;
		if (uv_queue_work(s->loop, &j->w, issue_prepare_run, issue_prepare_after) != 0) {
			log_error("issuance: cannot queue the work");
			issue_reschedule_failed(s, j, true);
			issue_job_free(j);
			j = NULL;
			break;
		}
		s->issue_inflight++;
		s->n_works++;
		j = NULL;
		if (s->issue_inflight >= ISSUE_INFLIGHT_MAX)
			break;
		ly_sched_batch_cleanup(&batch); /* the next one, if more are due */
		ly_sched_batch_init(&batch);
	}
	ly_sched_batch_cleanup(&batch);
}

/* ---- the tick: expiry, our renewal, issuance ------------------------------------------------- */

static void
on_tick(uv_timer_t *t)
{
	struct ly_sync *s = t->data;
	struct ly_cache_changes cs;

	if (s == NULL || s->phase == PH_STOPPING || s->phase == PH_NEW)
		return;
	ly_cache_changes_init(&cs);
	size_t expired = ly_cache_expire(s->cache, now_s(), &cs);
	if (expired > 0)
		log_warn("%zu cached SVIDs expired before they could be renewed: no longer served", expired);
	changes_publish(s, &cs);
	if (s->phase == PH_ENROLLED && s->ident.valid) {
		if (ident_expired(s, now_s())) {
			if (!s->denied)
				reattest(s, "our SVID expired");
		} else if (now_ms() >= renew_due_ms(s)) {
			renew_begin(s);
		}
	}
	issue_kick(s);
	tick_arm(s);
}

static void
tick_arm(struct ly_sync *s)
{
	int64_t now = now_ms(), next = INT64_MAX;

	if (s->t_tick == NULL || s->phase == PH_STOPPING || s->phase == PH_NEW)
		return;
	bool connected = s->phase == PH_ENROLLED && s->chan != NULL && !s->reconnect_armed && !s->denied;
	if (connected && s->issue_inflight < ISSUE_INFLIGHT_MAX) {
		int64_t n = ly_sched_next_ms(s->sched);
		if (n < next)
			next = n;
	}
	int64_t exp = ly_cache_next_expiry(s->cache);
	if (exp != INT64_MAX && exp < INT64_MAX / 1000 && exp * 1000 < next)
		next = exp * 1000;
	if (s->phase == PH_ENROLLED && s->ident.valid) {
		if (s->ident.not_after * 1000 > now && s->ident.not_after * 1000 < next)
			next = s->ident.not_after * 1000;
		if (connected && !s->renew_busy && renew_due_ms(s) < next)
			next = renew_due_ms(s);
	}
	int64_t ms = next <= now ? 0 : (next - now > TICK_MAX_MS ? TICK_MAX_MS : next - now);
	if (ms < 5)
		ms = 5; /* a due event fires after a short pause, never in a tight loop */
	timer_arm(s->t_tick, on_tick, (uint64_t)ms);
}

/* ---- JWT-SVIDs ------------------------------------------------------------------------------ */

struct jwt_op {
	struct ccall base; /* the NewJWTSVID call, when one is made */
	struct ly_sync *s;
	struct jwt_op *next; /* the ready list */
	ly_sync_jwt_cb cb;
	void *arg;
	char *entry_id;
	char *spiffe_id;
	char **aud;
	size_t naud;
	char *token; /* the answer: a bearer secret */
	struct ly_error err;
	bool failed;
};

static void
jwt_op_free(struct jwt_op *op)
{
	if (op == NULL)
		return;
	free(op->entry_id);
	free(op->spiffe_id);
	for (size_t i = 0; op->aud != NULL && i < op->naud; i++)
		free(op->aud[i]);
	free(op->aud);
	ly_free_secret_str(op->token);
	ccall_cleanup(&op->base);
	free(op);
}

static void
jwt_op_answer(struct jwt_op *op)
{
	op->cb(op->arg, op->failed ? NULL : op->token, op->failed ? &op->err : NULL);
	jwt_op_free(op);
}

/* Answers every op of the ready list (the deferred callbacks of cache hits). */
static void
jwt_flush(struct ly_sync *s)
{
	while (s->jwt_ready != NULL) {
		struct jwt_op *op = s->jwt_ready;
		s->jwt_ready = op->next;
		jwt_op_answer(op);
	}
}

static void
on_defer_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s != NULL)
		jwt_flush(s);
}

static enum ly_status
jwt_code_status(enum ly_rpc_code code)
{
	switch (code) {
	case LY_RPC_PERMISSION_DENIED:
	case LY_RPC_NOT_FOUND:
		return LY_E_NOT_FOUND;
	case LY_RPC_INVALID_ARGUMENT:
		return LY_E_INVALID;
	default:
		return LY_E_IO;
	}
}

/* A JSON number claim as whole seconds; `def` when absent or not a number. */
static int64_t
claim_seconds(json_t *claims, const char *name, int64_t def)
{
	json_t *v = claims != NULL ? json_object_get(claims, name) : NULL;
	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_real(v) && json_real_value(v) > 0 && json_real_value(v) < 9.2e18)
		return (int64_t)json_real_value(v);
	return def;
}

static void
jwt_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct jwt_op *op = (struct jwt_op *)c;
	struct ly_sync *s = c->s;
	Lanyard__Agent__V1__NewJWTSVIDResponse *m = NULL;
	json_t *claims = NULL;
	enum ly_verify_fail why;
	struct ly_error e;
	ly_status rc;
	int64_t now = now_s();

	s->jwt_inflight--;
	if (code != LY_RPC_OK) {
		op->failed = true;
		(void)ly_error_set(&op->err, jwt_code_status(code), "NewJWTSVID: %s %s", ly_rpc_code_str(code), details);
		goto out;
	}
	rc = ly_agentapi_jwt_parse(c->resp.data, c->resp.len, &m, &e);
	ly_buf_free_secret(&c->resp);
	if (rc != LY_OK) {
		op->failed = true;
		(void)ly_error_set(&op->err, rc, "NewJWTSVID: %s", e.msg);
		goto out;
	}
	/* SPEC §4: verified before it is served, for every audience asked for. */
	size_t len = strlen(m->token);
	for (size_t i = 0; i < op->naud; i++) {
		if (ly_verify_jwtsvid(s->verifier, m->token, len, op->aud[i], op->spiffe_id, ly_cache_bundles(s->cache), now,
			NULL, i == 0 ? &claims : NULL, &why, &e) != LY_OK) {
			op->failed = true;
			s->stats.jwt_failed++;
			(void)ly_error_set(&op->err, LY_E_UNTRUSTED, "JWT-SVID for %s refused: %s", op->spiffe_id, e.msg);
			goto out;
		}
	}
	int64_t exp = claim_seconds(claims, "exp", m->expires_at);
	int64_t iat = claim_seconds(claims, "iat", m->issued_at > 0 ? m->issued_at : now);
	if (iat >= exp)
		iat = exp - 1;
	if ((op->token = strdup(m->token)) == NULL) {
		op->failed = true;
		(void)ly_error_set(&op->err, LY_E_NOMEM, "JWT-SVID: out of memory");
		goto out;
	}
	/* Cached for the next caller only if the entry is still there (it may have gone meanwhile). */
	struct ly_cache_item ci;
	if (ly_cache_get(s->cache, op->entry_id, &ci) && strcmp(ci.entry->spiffe_id, op->spiffe_id) == 0 &&
	    ly_cache_jwt_put(s->cache, op->entry_id, op->spiffe_id, (const char *const *)op->aud, op->naud, op->token,
		iat, exp, &e) != LY_OK)
		log_warn("JWT-SVID for %s not cached: %s", op->spiffe_id, e.msg);
	s->stats.jwt_minted++;
out:
	if (op->failed)
		log_warn("JWT-SVID for entry %s: %s", op->entry_id, op->err.msg);
	if (claims != NULL)
		json_decref(claims);
	ly_agentapi_jwt_free(m);
	jwt_op_answer(op);
}

ly_status
ly_sync_fetch_jwt(struct ly_sync *s, const char *entry_id, const char *const *audiences, size_t naud, ly_sync_jwt_cb cb,
    void *arg, struct ly_error *err)
{
	struct jwt_op *op = NULL;
	struct ly_cache_item ci;
	Lanyard__Agent__V1__NewJWTSVIDRequest req;
	ly_status rc;

	if (cb == NULL || entry_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "JWT-SVID: no entry or callback");
	if (naud == 0 || audiences == NULL)
		return ly_error_set(err, LY_E_INVALID, "JWT-SVID: at least one audience required");
	if (naud > LY_JWT_AUDIENCES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "JWT-SVID: more than %d audiences", LY_JWT_AUDIENCES_MAX);
	for (size_t i = 0; i < naud; i++) {
		if (audiences[i] == NULL || audiences[i][0] == '\0')
			return ly_error_set(err, LY_E_INVALID, "JWT-SVID: audience %zu empty", i);
		if (strlen(audiences[i]) > LY_JWT_AUDIENCE_MAX)
			return ly_error_set(err, LY_E_LIMIT, "JWT-SVID: audience %zu over %d bytes", i, LY_JWT_AUDIENCE_MAX);
	}
	if (s->phase == PH_STOPPING)
		return ly_error_set(err, LY_E_IO, "JWT-SVID: the agent is stopping");
	if (!ly_cache_get(s->cache, entry_id, &ci) || ci.entry->node)
		return ly_error_set(err, LY_E_NOT_FOUND, "JWT-SVID: no entry %s", entry_id);
	const char *hit = ly_cache_jwt_get(s->cache, ci.entry->spiffe_id, audiences, naud, now_s());
	if (hit == NULL && (s->phase != PH_ENROLLED || s->chan == NULL || s->denied))
		return ly_error_set(err, LY_E_IO, "JWT-SVID: not connected to the server");
	if (hit == NULL && s->jwt_inflight >= JWT_INFLIGHT_MAX)
		return ly_error_set(err, LY_E_LIMIT, "JWT-SVID: %d requests already waiting on the server", JWT_INFLIGHT_MAX);

	if ((op = calloc(1, sizeof(*op))) == NULL || (op->entry_id = strdup(entry_id)) == NULL ||
	    (op->spiffe_id = strdup(ci.entry->spiffe_id)) == NULL || (op->aud = calloc(naud, sizeof(*op->aud))) == NULL)
		goto nomem;
	for (size_t i = 0; i < naud; i++) {
		if ((op->aud[i] = strdup(audiences[i])) == NULL)
			goto nomem;
		op->naud = i + 1;
	}
	op->s = s;
	op->cb = cb;
	op->arg = arg;
	if (hit != NULL) {
		if ((op->token = strdup(hit)) == NULL)
			goto nomem;
		s->stats.jwt_cached++;
		struct jwt_op **tail = &s->jwt_ready; /* answered in the order asked */
		while (*tail != NULL)
			tail = &(*tail)->next;
		*tail = op;
		timer_arm(s->t_defer, on_defer_timer, 0);
		return LY_OK;
	}
	op->base.on_done = jwt_on_done;
	lanyard__agent__v1__new_jwtsvidrequest__init(&req);
	req.entry_id = op->entry_id;
	req.n_audience = op->naud;
	req.audience = op->aud;
	if ((rc = ccall_start(s, s->chan, &op->base, M_JWT, LY_RPC_UNARY, &req.base, false, err)) != LY_OK) {
		jwt_op_free(op);
		return rc;
	}
	s->jwt_inflight++;
	return LY_OK;
nomem:
	jwt_op_free(op);
	return ly_error_set(err, LY_E_NOMEM, "JWT-SVID: out of memory");
}

/* ---- life cycle ------------------------------------------------------------------------------ */

ly_status
ly_sync_new(struct ly_agent *agent, const struct ly_sync_changes *changes, struct ly_sync **out,
    struct ly_error *err)
{
	struct ly_sync *s = NULL;
	const struct ly_agent_config *cfg = &agent->cfg;
	ly_status rc;

	*out = NULL;
	if (cfg->server_address == NULL || cfg->server_address[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "sync: no server address");
	if (strlen(cfg->server_address) > LY_CONFIG_VALUE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "sync: server address over %d bytes", LY_CONFIG_VALUE_MAX);
	if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "sync: no data directory");
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "sync: out of memory");
	s->agent = agent;
	if (changes != NULL)
		s->changes = *changes;
	s->loop = agent->loop;
	/* One part per core, within libuv's pool (4 threads unless UV_THREADPOOL_SIZE says otherwise). */
	s->verify_parts = uv_available_parallelism();
	if (s->verify_parts > ISSUE_VERIFY_PARTS)
		s->verify_parts = ISSUE_VERIFY_PARTS;
	if (s->verify_parts == 0)
		s->verify_parts = 1;
	(void)snprintf(s->td, sizeof(s->td), "%s", cfg->trust_domain);
	(void)snprintf(s->server_id, sizeof(s->server_id), "spiffe://%s%s", s->td, SERVER_ID_PATH);
	/* An IPv6 literal goes in brackets. */
	bool v6 = strchr(cfg->server_address, ':') != NULL && cfg->server_address[0] != '[';
	(void)snprintf(s->target, sizeof(s->target), v6 ? "[%s]:%u" : "%s:%u", cfg->server_address,
	    (unsigned)cfg->server_port);
	if (cfg->join_token != NULL && cfg->join_token[0] != '\0')
		s->method = METHOD_JOIN_TOKEN;
	else if (cfg->x509pop_cert_path != NULL && cfg->x509pop_key_path != NULL)
		s->method = METHOD_X509POP;
	else if (cfg->psat_cluster != NULL && cfg->psat_cluster[0] != '\0')
		s->method = METHOD_K8S_PSAT;
	if ((rc = ly_keymap_init(&s->retries, err)) != LY_OK)
		goto fail;
	if ((rc = ly_cache_new(s->td, &s->cache, err)) != LY_OK || (rc = ly_sched_new(&s->sched, err)) != LY_OK ||
	    (rc = ly_verifier_new(s->td, &s->verifier, err)) != LY_OK ||
	    (rc = ly_rotation_rng_seed_random(&s->rng, err)) != LY_OK)
		goto fail;
	*out = s;
	return LY_OK;
fail:
	ly_sync_free(s);
	return rc;
}

static bool
keep_none(const struct ly_cache_item *item, void *arg)
{
	(void)item;
	(void)arg;
	return false;
}

/*
 * Loads what the last run left in -dataDir: the cache first (it must be
 * empty to load), then our SVID and bundle. Damaged files are reported and
 * ignored (the agent then starts empty: attestation, then a snapshot).
 */
static void
state_load(struct ly_sync *s)
{
	const char *dir = s->agent->cfg.data_dir;
	struct ly_agent_state st;
	struct ly_cache_changes cs;
	struct ly_error e;
	ly_status rc;
	int64_t now = now_s();

	ly_agent_state_init(&st);
	ly_cache_changes_init(&cs);
	rc = ly_state_load_cache(dir, now, NULL, s->cache, &e);
	if (rc == LY_OK)
		s->entries_known = true;
	else if (rc != LY_E_NOT_FOUND)
		log_warn("SVID cache in %s ignored: %s", dir, e.msg);
	rc = ly_state_load_agent(dir, s->td, now, &st, &e);
	if (rc != LY_OK) {
		if (rc != LY_E_NOT_FOUND)
			log_warn("agent state in %s ignored: %s", dir, e.msg);
		goto out;
	}
	const struct ly_bundle *ob = st.bundles != NULL ? ly_bundle_set_find(st.bundles, s->td) : NULL;
	struct ly_bundle *b = NULL;
	if (ob == NULL || ly_bundle_clone(ob, &b, &e) != LY_OK) {
		log_warn("agent state in %s has no bundle for %s: ignored", dir, s->td);
		goto out;
	}
	bundle_install(s, b);
	if (st.has_svid) {
		EVP_PKEY *key = NULL;
		struct ly_x509svid_info info;
		if (ly_key_from_pkcs8_der(st.key.data, st.key.len, &key, &e) != LY_OK ||
		    ly_verify_x509svid(s->verifier, st.chain.data, st.chain.len, key, st.spiffe_id, now, &info, NULL, &e) !=
			LY_OK ||
		    ident_set(s, st.spiffe_id, &key, &st.chain, info.not_before, info.not_after, st.renew_at_ms, &e) !=
			LY_OK)
			log_warn("our SVID in %s not used: %s", dir, e.msg);
		EVP_PKEY_free(key);
	}
out:
	/* The SVIDs loaded are checked to the bundle we have now (one check per signing CA). */
	if (ly_cache_bundle(s->cache) != NULL) {
		size_t dropped = ly_verify_recheck_cache(s->verifier, s->cache, now, &cs);
		if (dropped > 0)
			log_warn("%zu persisted SVIDs do not verify to the persisted bundle: dropped", dropped);
	} else if (ly_cache_svid_count(s->cache) > 0) {
		/* No bundle to check them with: not served. */
		size_t n = ly_cache_filter_svids(s->cache, keep_none, NULL, &cs);
		log_warn("%zu persisted SVIDs dropped: no persisted bundle to verify them with", n);
	}
	ly_cache_changes_cleanup(&cs);
	ly_agent_state_cleanup(&st);
	if (ly_cache_count(s->cache) > 0 || s->ident.valid)
		log_info("state loaded from %s: %s, %zu entries, %zu SVIDs still valid", dir,
		    s->ident.valid ? s->ident.id : "no SVID of our own", ly_cache_count(s->cache),
		    ly_cache_svid_count(s->cache));
}

/* The bootstrap bundle for attestation: our last one, else -trustBundle. */
static ly_status
bootstrap_prepare(struct ly_sync *s, struct ly_error *err)
{
	const struct ly_agent_config *cfg = &s->agent->cfg;
	const struct ly_bundle *cur = ly_cache_bundle(s->cache);
	struct ly_buf pem = LY_BUF_INIT;
	ly_status rc;

	ly_bundle_free(s->bootstrap);
	s->bootstrap = NULL;
	if (cur != NULL)
		return ly_bundle_clone(cur, &s->bootstrap, err);
	if (cfg->trust_bundle_path != NULL && cfg->trust_bundle_path[0] != '\0') {
		if ((rc = ly_pem_read_file(cfg->trust_bundle_path, &pem, err)) == LY_OK)
			rc = ly_bundle_parse_pem(s->td, (const char *)pem.data, pem.len, &s->bootstrap, err);
		ly_buf_free(&pem);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "trust bundle %s", cfg->trust_bundle_path);
		return LY_OK;
	}
	if (cfg->insecure_bootstrap) {
		log_warn("insecure bootstrap: no trust bundle; the first server that proves the ID %s is believed",
		    s->server_id);
		s->insecure = true;
		return LY_OK;
	}
	return ly_error_set(err, LY_E_INVALID,
	    "no trust bundle to check the server with: give -trustBundle PEMFILE (or -insecureBootstrap)");
}

ly_status
ly_sync_start(struct ly_sync *s, struct ly_error *err)
{
	struct ly_error e;
	ly_status rc;

	if (s->phase != PH_NEW)
		return ly_error_set(err, LY_E_INVALID, "sync: already started");
	if (s->agent->rpc == NULL || s->loop == NULL)
		return ly_error_set(err, LY_E_INVALID, "sync: no loop or rpc");
	LY_TRY(ly_state_dir_prepare(s->agent->cfg.data_dir, err));
	if ((rc = timer_new(s, &s->t_reconnect, err)) != LY_OK || (rc = timer_new(s, &s->t_resync, err)) != LY_OK ||
	    (rc = timer_new(s, &s->t_tick, err)) != LY_OK || (rc = timer_new(s, &s->t_persist, err)) != LY_OK ||
	    (rc = timer_new(s, &s->t_defer, err)) != LY_OK || (rc = timer_new(s, &s->t_trim, err)) != LY_OK)
		return rc;
	state_load(s);
	if (!s->ident.valid) {
		if (s->method == METHOD_NONE)
			return ly_error_set(err, LY_E_INVALID,
			    "no SVID of its own in %s and no way to attest: give -joinToken (or configure x509pop or "
			    "k8s_psat)",
			    s->agent->cfg.data_dir);
		LY_TRY(bootstrap_prepare(s, err));
	}
	/* Nothing can fail from here on. */
	if (ly_rotation_schedule_all(s->sched, s->cache, now_ms(), &e) != LY_OK)
		log_error("rotation schedule: %s", e.msg);
	int64_t iv = s->agent->cfg.sync_interval > 0 ? s->agent->cfg.sync_interval : LY_AGENT_SYNC_INTERVAL_DEFAULT;
	uv_timer_start(s->t_resync, on_resync_timer, (uint64_t)iv * 1000u, (uint64_t)iv * 1000u);
	if (s->ident.valid) {
		s->phase = PH_ENROLLED;
		log_info("resuming as %s (SVID valid until %" PRId64 "): no attestation needed", s->ident.id,
		    s->ident.not_after);
		enrolled_connect(s);
	} else {
		s->phase = PH_ATTEST;
		log_info("attesting to %s with %s", s->target,
		    s->method == METHOD_JOIN_TOKEN ? "a join token" :
		    s->method == METHOD_X509POP    ? "x509pop" :
							"k8s_psat");
		attest_begin(s);
	}
	tick_arm(s);
	return LY_OK;
}

static void
on_stop_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s == NULL || s->stop_cb == NULL)
		return;
	void (*cb)(void *) = s->stop_cb;
	s->stop_cb = NULL;
	timer_close(&s->t_defer);
	cb(s->stop_arg);
}

/* Once no call, no pool job and no write is left, the stop callback runs (from the loop). */
static void
stop_maybe_done(struct ly_sync *s)
{
	if (s->phase != PH_STOPPING || !s->stop_requested || s->stop_cb_done)
		return;
	if (s->n_calls != 0 || s->n_works != 0 || s->persist_busy)
		return;
	s->stop_cb_done = true;
	log_debug("sync stopped: %" PRIu64 " SVIDs issued (%" PRIu64 " failed) in %" PRIu64 " batches, %" PRIu64
		  " watch updates, %" PRIu64 " renewals, %" PRIu64 " JWT-SVIDs minted",
	    s->stats.svids_issued, s->stats.svids_failed, s->stats.batches, s->stats.watch_updates, s->stats.renewals,
	    s->stats.jwt_minted);
	if (s->t_defer != NULL)
		timer_arm(s->t_defer, on_stop_timer, 0);
}

void
ly_sync_stop(struct ly_sync *s, void (*cb)(void *arg), void *arg)
{
	if (s == NULL || s->stop_requested)
		return;
	enum phase was = s->phase;
	s->stop_requested = true;
	s->stop_cb = cb;
	s->stop_arg = arg;
	s->phase = PH_STOPPING;
	timer_close(&s->t_reconnect);
	timer_close(&s->t_resync);
	timer_close(&s->t_tick);
	timer_close(&s->t_persist);
	timer_close(&s->t_trim);
	if (s->t_defer != NULL)
		uv_timer_stop(s->t_defer);
	jwt_flush(s);
	watches_drop(s);
	/* Every call ends now (each still gets its status, later). */
	while (s->chans != NULL) {
		struct chan *c = s->chans;
		bool had_calls = c->ncalls > 0;
		chan_kill(s, c);
		if (had_calls) {
			/* Killed but kept until its calls are back: unlink it from the walk. */
			for (struct chan **p = &s->chans; *p != NULL; p = &(*p)->next) {
				if (*p == c) {
					*p = c->next;
					c->next = NULL;
					break;
				}
			}
		}
	}
	s->chan = NULL;
	/* The last word on disk: what we hold now. */
	if (was != PH_NEW) {
		if (s->ident.valid)
			s->agent_dirty = true;
		s->cache_dirty = true;
		persist_kick(s);
	}
	stop_maybe_done(s);
}

void
ly_sync_free(struct ly_sync *s)
{
	if (s == NULL)
		return;
	timer_close(&s->t_reconnect);
	timer_close(&s->t_resync);
	timer_close(&s->t_tick);
	timer_close(&s->t_persist);
	timer_close(&s->t_defer);
	timer_close(&s->t_trim);
	/* Answers nobody waits for any more (wapi is gone): dropped without a call. */
	while (s->jwt_ready != NULL) {
		struct jwt_op *op = s->jwt_ready;
		s->jwt_ready = op->next;
		jwt_op_free(op);
	}
	/* Channels left (a failed start): rpc/ frees gRPC's side on ly_rpc_close. */
	while (s->chans != NULL) {
		struct chan *c = s->chans;
		s->chans = c->next;
		tls_check_free(c->tc);
		free(c);
	}
	EVP_PKEY_free(s->att_key);
	ident_clear(&s->ident);
	ly_bundle_free(s->bootstrap);
	ly_bundle_free(s->bundle_pending);
	free(s->probe_roots_pem);
	retries_clear(s);
	ly_verifier_free(s->verifier);
	ly_sched_free(s->sched);
	ly_cache_free(s->cache);
	OPENSSL_cleanse(s->att_expect, sizeof(s->att_expect));
	free(s);
}

bool
ly_sync_ready(const struct ly_sync *s)
{
	return s != NULL && s->ident.valid && ly_cache_bundle(s->cache) != NULL;
}

bool
ly_sync_wapi_ready_rule(bool ready, bool entries_known, size_t cached_svids)
{
	return (ready && entries_known) || cached_svids > 0;
}

bool
ly_sync_wapi_ready(const struct ly_sync *s)
{
	if (s == NULL)
		return false;
	return ly_sync_wapi_ready_rule(ly_sync_ready(s), s->entries_known, ly_cache_svid_count(s->cache));
}

struct ly_cache *
ly_sync_cache(struct ly_sync *s)
{
	return s->cache;
}

const struct ly_bundle *
ly_sync_bundle(const struct ly_sync *s)
{
	return ly_cache_bundle(s->cache);
}

void
ly_sync_stats_get(const struct ly_sync *s, struct ly_sync_stats *out)
{
	out->svids_issued = s->stats.svids_issued;
	out->renewals = s->stats.renewals;
	out->jwt_minted = s->stats.jwt_minted;
	out->last_sync = s->last_sync;
	out->reachable = s->phase == PH_ENROLLED && s->chan != NULL && !s->reconnect_armed && s->last_sync != 0 &&
	    now_s() - (int64_t)s->last_sync <= 2 * s->agent->cfg.sync_interval + 1;
}

void
ly_sync_verify_counters(const struct ly_sync *s, struct ly_verify_counters *out)
{
	if (s->verifier != NULL)
		ly_verifier_counters(s->verifier, out);
	else
		memset(out, 0, sizeof(*out));
}
