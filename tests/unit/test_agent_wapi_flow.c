/*
 * test_agent_wapi_flow.c: the Workload API's per-call control flow
 * (agent/wapi_call.c, behind wapi_internal.h) with the rpc call layer
 * faked behind its interface (fake_rpc.h: the ly_rpc_call_* functions of
 * rpc/rpc.h, so no gRPC is involved), a fake source (wapi.h struct
 * ly_wapi_source: a real cache, a readiness flag, a JWT minter that
 * records its callback) and a real libuv loop. The connection is this
 * test process itself, as wapi_conn.c would have recorded it at accept.
 *
 * What it shows: the checks every call starts with, in SPIRE's order
 * (security header, stopping, a refused connection, not ready); the
 * health answer; an X.509-SVID stream that waits while its caller is
 * entitled without an SVID, sends once the SVID is in, does not send the
 * same response twice, and ends PERMISSION_DENIED when the last entry
 * goes; a response over the agent's cap ended RESOURCE_EXHAUSTED with the
 * sizes (a workload is never left with nothing and no reason); a caller
 * entitled to nothing refused at once; a caller no longer
 * the process attested refused for good; FetchJWTSVID failing UNAVAILABLE
 * when the minter refuses, and CANCELLED when the client left before the
 * token came; the rate limit per selector set (agent.ratelimit.workload_api).
 * Federation (fedset.h): the bundle and X.509-SVID streams
 * carry the federated bundles of the caller's entries only; an entry that
 * starts or stops federating, or a federated bundle it names changing,
 * pushes; a change in a bundle the caller does not see sends nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uv.h>

#include "agent/cache.h"
#include "agent/procfs.h"
#include "agent/wapi_internal.h"
#include "lib/bundle.h"
#include "lib/log.h"
#include "lib/ratelimit.h"
#include "rpc/rpc.h"
#include "fake_rpc.h"
#include "testutil_agent.h"
#include "workload.pb-c.h"

#define SID "spiffe://example.org/w"

/* ---- the fake source ---- */

struct fixture {
	uv_loop_t loop;
	struct ly_agent agent;
	struct ly_wapi w;
	struct wconn conn;
	struct tu_pki pki;
	struct ly_cache *cache;
	bool ready;
	/* the JWT minter */
	unsigned jwt_fetches;
	ly_status jwt_rc;
	ly_wapi_jwt_cb jwt_cb;
	void *jwt_cb_arg;
};

static struct ly_cache *
src_cache(void *arg)
{
	struct fixture *f = arg;
	return f->cache;
}

static bool
src_ready(void *arg)
{
	struct fixture *f = arg;
	return f->ready;
}

static ly_status
src_fetch_jwt(void *arg, const char *entry_id, const char *const *aud, size_t naud, ly_wapi_jwt_cb cb,
    void *cb_arg, struct ly_error *err)
{
	struct fixture *f = arg;
	(void)entry_id;
	(void)aud;
	(void)naud;
	f->jwt_fetches++;
	if (f->jwt_rc != LY_OK)
		return ly_error_set(err, f->jwt_rc, "minter refuses");
	f->jwt_cb = cb;
	f->jwt_cb_arg = cb_arg;
	return LY_OK;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct ly_error e;
	assert_non_null(f);
	ly_log_set_level(LY_LOG_ERROR);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	tu_pki_init(&f->pki);
	assert_int_equal(ly_cache_new(TA_TD, &f->cache, NULL), LY_OK);
	f->agent.loop = &f->loop;
	f->agent.cfg.proc_root = "/proc";
	f->ready = true;

	struct ly_wapi *w = &f->w;
	w->agent = &f->agent;
	w->src = (struct ly_wapi_source){ .arg = f, .cache = src_cache, .ready = src_ready,
		.fetch_jwt = src_fetch_jwt };
	ly_queue_init(&w->conns);
	ly_queue_init(&w->streams);
	ly_queue_init(&w->jwt_reqs);
	assert_int_equal(uv_timer_init(&f->loop, &w->kick), 0);
	assert_int_equal(uv_timer_init(&f->loop, &w->expiry), 0);
	w->kick.data = w->expiry.data = w;
	w->handles_init = true;
	w->max_response = LY_RPC_RESPONSE_MAX;

	/* The caller: this process, recorded as at accept (wapi_conn.c conn_start). */
	struct wconn *c = &f->conn;
	c->w = w;
	c->id = 1;
	c->refuse = LY_RPC_OK;
	c->peer.pid = getpid();
	c->peer.uid = getuid();
	c->peer.gid = getgid();
	long fd = syscall(SYS_pidfd_open, c->peer.pid, 0);
	c->peer.pidfd = fd >= 0 ? (int)fd : -1;
	assert_int_equal(ly_proc_start_time("/proc", c->peer.pid, &c->peer.start_time, &e), LY_OK);
	c->peer.has_start_time = true;
	assert_int_equal(ly_proc_exe_id("/proc", c->peer.pid, &c->peer.exe, &e), LY_OK);
	c->sels = ta_selectors(&c->n_sels, "unix:uid:1000", NULL);
	ly_queue_insert_tail(&w->conns, &c->link);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	struct ly_wapi *w = &f->w;
	/* Every test ends its streams and JWT requests. */
	assert_true(ly_queue_empty(&w->streams));
	assert_true(ly_queue_empty(&w->jwt_reqs));
	uv_close((uv_handle_t *)&w->kick, NULL);
	uv_close((uv_handle_t *)&w->expiry, NULL);
	(void)uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	if (f->conn.peer.pidfd >= 0)
		(void)close(f->conn.peer.pidfd);
	ly_selectors_free(f->conn.sels, f->conn.n_sels);
	ly_cache_free(f->cache);
	tu_pki_free(&f->pki);
	free(f);
	fake_rpc_reset();
	return 0;
}

static struct ly_rpc_call
call_on(struct fixture *f, const char *method)
{
	return (struct ly_rpc_call){ .method = method, .header = true, .conn = &f->conn };
}

/* An entry for SID with the caller's selector. */
static void
put_entry(struct fixture *f, const char *id)
{
	ta_put(f->cache, ta_entry(id, SID, 1, NULL, "unix:uid:1000", NULL), NULL);
}

/* An SVID valid now (the Workload API's clock is the wall clock; the PKI's is TU_NOW). */
static void
put_svid(struct fixture *f, const char *id)
{
	ta_set_svid(f->cache, &f->pki, id, -10, 200000000L, NULL);
}

static void
put_bundle(struct fixture *f)
{
	struct ly_bundle_set *set = NULL;
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, b, NULL), LY_OK);
	assert_int_equal(ly_cache_set_bundles(f->cache, set, NULL, NULL), LY_OK);
}

/* What ly_wapi_cache_changed does, then the loop turn that runs the pass. */
static void
pass(struct fixture *f)
{
	ly_wapi_pass_schedule(&f->w);
	(void)uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* ---- the checks every call starts with ---- */

static void
test_admission_order(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c;

	/* No security header: INVALID_ARGUMENT, before anything else (even stopping). */
	f->w.stopping = true;
	c = call_on(f, M("FetchX509SVID"));
	c.header = false;
	ly_wapi_fetch_x509_svid(&c, NULL, 0, &f->w);
	assert_true(c.finished);
	assert_int_equal(c.code, LY_RPC_INVALID_ARGUMENT);
	assert_string_equal(c.details, "security header missing from request");

	/* Stopping: UNAVAILABLE. */
	c = call_on(f, M("FetchX509SVID"));
	ly_wapi_fetch_x509_svid(&c, NULL, 0, &f->w);
	assert_int_equal(c.code, LY_RPC_UNAVAILABLE);
	assert_string_equal(c.details, "agent is shutting down");
	f->w.stopping = false;

	/* A refused connection: its code and reason, counted. */
	f->conn.refuse = LY_RPC_PERMISSION_DENIED;
	f->conn.refuse_msg = "workload attestation failed: the caller could not be identified";
	c = call_on(f, M("FetchJWTBundles"));
	ly_wapi_fetch_jwt_bundles(&c, NULL, 0, &f->w);
	assert_int_equal(c.code, LY_RPC_PERMISSION_DENIED);
	assert_string_equal(c.details, f->conn.refuse_msg);
	assert_int_equal(f->w.denied, 1);
	f->conn.refuse = LY_RPC_OK;

	/* Not ready: UNAVAILABLE (clients retry). */
	f->ready = false;
	c = call_on(f, M("FetchX509Bundles"));
	ly_wapi_fetch_x509_bundles(&c, NULL, 0, &f->w);
	assert_int_equal(c.code, LY_RPC_UNAVAILABLE);
	assert_string_equal(c.details, "agent is not ready yet");
	assert_int_equal(f->w.calls, 4);
	assert_int_equal(f->w.n_streams[ST_X509_SVID] + f->w.n_streams[ST_X509_BUNDLES], 0);
}

static void
test_health(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c;
	static const uint8_t other[] = { 0x0a, 0x03, 'f', 'o', 'o' }; /* service "foo" */

	/* Health needs no security header; SERVING when ready. */
	c = call_on(f, "/grpc.health.v1.Health/Check");
	c.header = false;
	ly_wapi_health_check(&c, NULL, 0, &f->w);
	assert_int_equal(c.code, LY_RPC_OK);
	assert_int_equal(c.msg_len, 2);
	assert_int_equal(c.head[1], 0x01);

	f->ready = false;
	c = call_on(f, "/grpc.health.v1.Health/Check");
	ly_wapi_health_check(&c, NULL, 0, &f->w);
	assert_int_equal(c.code, LY_RPC_OK);
	assert_int_equal(c.head[1], 0x02);

	c = call_on(f, "/grpc.health.v1.Health/Check");
	ly_wapi_health_check(&c, other, sizeof(other), &f->w);
	assert_int_equal(c.code, LY_RPC_NOT_FOUND);
}

/* ---- streams ---- */

static void
test_x509_stream_life(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchX509SVID"));

	put_entry(f, "e-1");
	put_bundle(f);
	/* Entitled, no SVID yet: the stream opens and waits. */
	ly_wapi_fetch_x509_svid(&c, NULL, 0, &f->w);
	assert_false(c.finished);
	assert_int_equal(c.n_sent, 0);
	assert_int_equal(f->w.n_streams[ST_X509_SVID], 1);
	assert_non_null(c.closed);

	/* The SVID arrives: one response on the next pass. */
	put_svid(f, "e-1");
	pass(f);
	assert_int_equal(c.n_sent, 1);
	assert_true(c.msg_len > 0);
	assert_int_equal(f->w.sent, 1);
	/* The expiry timer is armed for it. */
	assert_true(uv_is_active((uv_handle_t *)&f->w.expiry));

	/* Another pass with nothing changed for this caller: not sent again. */
	pass(f);
	assert_int_equal(c.n_sent, 1);

	/* Two changes in one loop turn: one pass. */
	put_entry(f, "e-2");
	ly_wapi_pass_schedule(&f->w);
	ly_wapi_pass_schedule(&f->w);
	(void)uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(c.n_sent, 1); /* e-2 has no SVID yet: the response is the same */

	/* The caller's entries go: the stream ends PERMISSION_DENIED. */
	ta_del(f->cache, "e-1", NULL);
	ta_del(f->cache, "e-2", NULL);
	pass(f);
	assert_true(c.finished);
	assert_int_equal(c.code, LY_RPC_PERMISSION_DENIED);
	assert_string_equal(c.details, "no identity issued");
	assert_int_equal(f->w.n_streams[ST_X509_SVID], 0);
}

static void
test_x509_over_cap(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchX509SVID"));

	put_entry(f, "e-1");
	put_bundle(f);
	put_svid(f, "e-1");
	/* One SVID with its chain and bundle is over 1,000 bytes. */
	f->w.max_response = 1000;
	ly_wapi_fetch_x509_svid(&c, NULL, 0, &f->w);
	assert_true(c.finished);
	assert_int_equal(c.n_sent, 0);
	assert_int_equal(c.code, LY_RPC_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(c.details, "(1 X.509-SVIDs, "));
	assert_non_null(strstr(c.details, "over the agent's 1000-byte message cap"));
	assert_int_equal(f->w.n_streams[ST_X509_SVID], 0);

	/* At the default cap the same caller is served. */
	f->w.max_response = LY_RPC_RESPONSE_MAX;
	c = call_on(f, M("FetchX509SVID"));
	ly_wapi_fetch_x509_svid(&c, NULL, 0, &f->w);
	assert_false(c.finished);
	assert_int_equal(c.n_sent, 1);
	ly_wapi_stream_end(LY_QUEUE_DATA(ly_queue_head(&f->w.streams), struct stream, link), LY_RPC_CANCELLED, NULL);
}

/* ---- federated bundles (fedset.h: only the caller's entries' federations) ---- */

/* Our bundle plus foreign ones, each a fresh CA made here: the cache's whole set (as sync installs it). */
static void
put_bundles(struct fixture *f, const char *const *tds, size_t n)
{
	struct ly_bundle_set *set = NULL;
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, b, NULL), LY_OK);
	for (size_t i = 0; i < n; i++) {
		char id[300];
		struct ly_buf der = LY_BUF_INIT;
		(void)snprintf(id, sizeof(id), "spiffe://%s", tds[i]);
		EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
		struct tu_spec sp = tu_ca_spec(id);
		X509 *ca = tu_make(&sp, k, NULL, NULL);
		tu_der(ca, &der);
		assert_int_equal(ly_bundle_new(tds[i], &b, NULL), LY_OK);
		assert_int_equal(ly_bundle_add_x509_authority(b, der.data, der.len, NULL), LY_OK);
		assert_int_equal(ly_bundle_set_put(set, b, NULL), LY_OK);
		ly_buf_free(&der);
		X509_free(ca);
		EVP_PKEY_free(k);
	}
	assert_int_equal(ly_cache_set_bundles(f->cache, set, NULL, NULL), LY_OK);
}

/* The set with trust domain `td`'s bundle replaced by a fresh CA, every other bundle kept as it is. */
static void
renew_td(struct fixture *f, const char *td)
{
	const struct ly_bundle_set *cur = ly_cache_bundles(f->cache);
	struct ly_bundle_set *set = NULL;
	struct ly_bundle *b = NULL;
	char id[300];
	struct ly_buf der = LY_BUF_INIT;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	for (size_t i = 0; i < ly_bundle_set_count(cur); i++) {
		if (strcmp(ly_bundle_trust_domain(ly_bundle_set_at(cur, i)), td) == 0)
			continue;
		assert_int_equal(ly_bundle_clone(ly_bundle_set_at(cur, i), &b, NULL), LY_OK);
		assert_int_equal(ly_bundle_set_put(set, b, NULL), LY_OK);
	}
	(void)snprintf(id, sizeof(id), "spiffe://%s", td);
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct tu_spec sp = tu_ca_spec(id);
	X509 *ca = tu_make(&sp, k, NULL, NULL);
	tu_der(ca, &der);
	assert_int_equal(ly_bundle_new(td, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, der.data, der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, b, NULL), LY_OK);
	ly_buf_free(&der);
	X509_free(ca);
	EVP_PKEY_free(k);
	assert_int_equal(ly_cache_set_bundles(f->cache, set, NULL, NULL), LY_OK);
}

/* The caller's entry e-1, federating with `td` (NULL: none), at `revision`. */
static void
put_fed_entry(struct fixture *f, const char *td, int64_t revision)
{
	struct ly_entry *e = ta_entry("e-1", SID, 1, NULL, "unix:uid:1000", NULL);
	e->revision = revision;
	if (td != NULL)
		assert_int_equal(ly_entry_add_federates_with(e, td, NULL), LY_OK);
	ta_put(f->cache, e, NULL);
}

/* The keys of the last X509BundlesResponse sent, comma-separated, into `out`. */
static void
bundles_keys(char *out, size_t cap)
{
	size_t len = 0;
	const uint8_t *msg = fake_rpc_last(&len);
	X509BundlesResponse *r = x509_bundles_response__unpack(NULL, len, msg);
	assert_non_null(r);
	out[0] = '\0';
	for (size_t i = 0; i < r->n_bundles; i++)
		(void)snprintf(out + strlen(out), cap - strlen(out), "%s%s", i > 0 ? "," : "", r->bundles[i]->key);
	x509_bundles_response__free_unpacked(r, NULL);
}

/* The federated_bundles keys of the last X509SVIDResponse sent, comma-separated. */
static void
svid_fed_keys(char *out, size_t cap)
{
	size_t len = 0;
	const uint8_t *msg = fake_rpc_last(&len);
	X509SVIDResponse *r = x509_svidresponse__unpack(NULL, len, msg);
	assert_non_null(r);
	out[0] = '\0';
	for (size_t i = 0; i < r->n_federated_bundles; i++)
		(void)snprintf(out + strlen(out), cap - strlen(out), "%s%s", i > 0 ? "," : "",
		    r->federated_bundles[i]->key);
	x509_svidresponse__free_unpacked(r, NULL);
}

static void
test_federated_bundle_stream(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchX509Bundles"));
	static const char *const bc[] = { "b.test", "c.test" };
	char keys[256];

	/* b.test and c.test held (other workloads' entries name them), the caller's entry names none. */
	put_fed_entry(f, NULL, 1);
	put_bundles(f, bc, 2);
	ly_wapi_fetch_x509_bundles(&c, NULL, 0, &f->w);
	assert_int_equal(c.n_sent, 1);
	bundles_keys(keys, sizeof(keys));
	assert_string_equal(keys, "spiffe://example.org");

	/* Its entry starts to federate with b.test: pushed, with b.test and not c.test. */
	put_fed_entry(f, "b.test", 2);
	pass(f);
	assert_int_equal(c.n_sent, 2);
	bundles_keys(keys, sizeof(keys));
	assert_string_equal(keys, "spiffe://b.test,spiffe://example.org");

	/* c.test's bundle changes: nothing this caller sees changed, nothing sent. */
	renew_td(f, "c.test");
	pass(f);
	assert_int_equal(c.n_sent, 2);
	/* b.test's changes (its CA rotated): pushed. */
	renew_td(f, "b.test");
	pass(f);
	assert_int_equal(c.n_sent, 3);
	bundles_keys(keys, sizeof(keys));
	assert_string_equal(keys, "spiffe://b.test,spiffe://example.org");

	/* The entry stops federating: pushed, ours alone again. */
	put_fed_entry(f, NULL, 3);
	pass(f);
	assert_int_equal(c.n_sent, 4);
	bundles_keys(keys, sizeof(keys));
	assert_string_equal(keys, "spiffe://example.org");
	ly_wapi_stream_end(LY_QUEUE_DATA(ly_queue_head(&f->w.streams), struct stream, link), LY_RPC_CANCELLED, NULL);
}

static void
test_federated_x509_svid(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchX509SVID"));
	static const char *const bc[] = { "b.test", "c.test" };
	char keys[256];

	put_fed_entry(f, "b.test", 1);
	put_bundles(f, bc, 2);
	put_svid(f, "e-1");
	ly_wapi_fetch_x509_svid(&c, NULL, 0, &f->w);
	assert_int_equal(c.n_sent, 1);
	/* federated_bundles: b.test (the SVID's entry names it), not c.test, never ours. */
	svid_fed_keys(keys, sizeof(keys));
	assert_string_equal(keys, "spiffe://b.test");
	/* A new c.test CA: not this caller's, nothing sent; a new b.test CA: pushed on the open stream. */
	renew_td(f, "c.test");
	pass(f);
	assert_int_equal(c.n_sent, 1);
	renew_td(f, "b.test");
	pass(f);
	assert_int_equal(c.n_sent, 2);
	svid_fed_keys(keys, sizeof(keys));
	assert_string_equal(keys, "spiffe://b.test");
	ly_wapi_stream_end(LY_QUEUE_DATA(ly_queue_head(&f->w.streams), struct stream, link), LY_RPC_CANCELLED, NULL);
}

static void
test_federated_duplicate_hint(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchX509Bundles"));
	static const char *const b[] = { "b.test" };
	char keys[256];

	/* Two entries with one hint: the later one, left out of X.509 responses, still federates for bundles. */
	ta_put(f->cache, ta_entry("e-1", SID, 1, "web", "unix:uid:1000", NULL), NULL);
	struct ly_entry *e2 = ta_entry("e-2", "spiffe://example.org/w2", 2, "web", "unix:uid:1000", NULL);
	assert_int_equal(ly_entry_add_federates_with(e2, "b.test", NULL), LY_OK);
	ta_put(f->cache, e2, NULL);
	put_bundles(f, b, 1);
	ly_wapi_fetch_x509_bundles(&c, NULL, 0, &f->w);
	assert_int_equal(c.n_sent, 1);
	bundles_keys(keys, sizeof(keys));
	assert_string_equal(keys, "spiffe://b.test,spiffe://example.org");
	ly_wapi_stream_end(LY_QUEUE_DATA(ly_queue_head(&f->w.streams), struct stream, link), LY_RPC_CANCELLED, NULL);
}

static void
test_stream_not_entitled(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchX509Bundles"));

	/* An entry for someone else only. */
	ta_put(f->cache, ta_entry("e-other", SID, 1, NULL, "unix:uid:2000", NULL), NULL);
	put_bundle(f);
	ly_wapi_fetch_x509_bundles(&c, NULL, 0, &f->w);
	assert_true(c.finished);
	assert_int_equal(c.code, LY_RPC_PERMISSION_DENIED);
	assert_int_equal(c.n_sent, 0);
	assert_int_equal(f->w.n_streams[ST_X509_BUNDLES], 0);
}

static void
test_stream_client_leaves(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchX509Bundles"));

	put_entry(f, "e-1");
	put_bundle(f);
	ly_wapi_fetch_x509_bundles(&c, NULL, 0, &f->w);
	assert_false(c.finished);
	assert_int_equal(c.n_sent, 1); /* the first response at once */
	/* The client goes away: the stream ends CANCELLED and is freed. */
	c.closed(&c, c.closed_arg);
	assert_true(c.finished);
	assert_int_equal(c.code, LY_RPC_CANCELLED);
	assert_int_equal(f->w.n_streams[ST_X509_BUNDLES], 0);
}

static void
test_caller_replaced(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchJWTBundles"));

	put_entry(f, "e-1");
	put_bundle(f);
	ly_wapi_fetch_jwt_bundles(&c, NULL, 0, &f->w);
	assert_false(c.finished);
	/* The process attested is not the one holding the PID now (another start time). */
	f->conn.peer.start_time++;
	pass(f);
	assert_true(c.finished);
	assert_int_equal(c.code, LY_RPC_PERMISSION_DENIED);
	assert_string_equal(c.details, "could not verify existence of the original caller");
	/* For good: the next call is refused too, even with the right start time back. */
	f->conn.peer.start_time--;
	struct ly_rpc_call c2 = call_on(f, M("FetchX509SVID"));
	ly_wapi_fetch_x509_svid(&c2, NULL, 0, &f->w);
	assert_int_equal(c2.code, LY_RPC_PERMISSION_DENIED);
}

/* ---- FetchJWTSVID ---- */

/* JWTSVIDRequest{audience: "aud"} */
static const uint8_t jwt_req[] = { 0x0a, 0x03, 'a', 'u', 'd' };

static void
test_jwt_minter_refuses(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchJWTSVID"));

	put_entry(f, "e-1");
	put_bundle(f);
	f->jwt_rc = LY_E_IO;
	ly_wapi_fetch_jwt_svid(&c, jwt_req, sizeof(jwt_req), &f->w);
	assert_int_equal(f->jwt_fetches, 1);
	assert_true(c.finished);
	assert_int_equal(c.code, LY_RPC_UNAVAILABLE);
	assert_string_equal(c.details, "could not fetch JWT-SVID");
	assert_int_equal(f->w.n_jwt, 0);
}

static void
test_jwt_client_leaves_before_token(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchJWTSVID"));
	struct ly_error e;

	put_entry(f, "e-1");
	put_bundle(f);
	ly_wapi_fetch_jwt_svid(&c, jwt_req, sizeof(jwt_req), &f->w);
	assert_int_equal(f->jwt_fetches, 1);
	assert_false(c.finished);
	assert_int_equal(f->w.n_jwt, 1);
	/* The client leaves; the minter answers later (it cannot be told): CANCELLED then, and freed. */
	c.closed(&c, c.closed_arg);
	assert_false(c.finished);
	ly_error_set(&e, LY_E_IO, "server unreachable");
	f->jwt_cb(f->jwt_cb_arg, NULL, &e);
	assert_true(c.finished);
	assert_int_equal(c.code, LY_RPC_CANCELLED);
	assert_int_equal(f->w.n_jwt, 0);
}

static void
test_jwt_no_audience(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call c = call_on(f, M("FetchJWTSVID"));

	put_entry(f, "e-1");
	ly_wapi_fetch_jwt_svid(&c, NULL, 0, &f->w);
	assert_int_equal(c.code, LY_RPC_INVALID_ARGUMENT);
	assert_int_equal(f->jwt_fetches, 0);
}

/*
 * agent.ratelimit.workload_api: the caller's selector set has `burst`
 * calls, then UNAVAILABLE naming the limit (counted); another selector
 * set is not touched; after the refill the caller is served again. The
 * limiter reads the loop's clock (uv_now), moved on by uv_update_time.
 */
static void
test_rate_limit_per_selector_set(void **state)
{
	struct fixture *f = *state;
	struct ly_ratelimit_config rc = { "workload_api", 2, 2, 16 };
	struct ly_rpc_call c;

	assert_int_equal(ly_ratelimit_new(&rc, &f->w.limit, NULL), LY_OK);
	put_entry(f, "e-1");
	put_bundle(f);
	f->jwt_rc = LY_E_IO; /* past admission, the minter refuses at once: the call ends either way */
	(void)snprintf(f->conn.selkey, sizeof(f->conn.selkey), "%064d", 1);
	uv_update_time(&f->loop);
	for (int i = 0; i < 2; i++) {
		c = call_on(f, M("FetchJWTSVID"));
		ly_wapi_fetch_jwt_svid(&c, jwt_req, sizeof(jwt_req), &f->w);
		assert_string_equal(c.details, "could not fetch JWT-SVID");
	}
	c = call_on(f, M("FetchJWTSVID"));
	ly_wapi_fetch_jwt_svid(&c, jwt_req, sizeof(jwt_req), &f->w);
	assert_int_equal(c.code, LY_RPC_UNAVAILABLE);
	assert_string_equal(c.details, "rate limit: Workload API calls over 2/s for this workload's selectors; retry later");
	assert_int_equal(f->jwt_fetches, 2);
	assert_int_equal(f->w.rate_limited, 1);
	/* Another selector set has its own bucket. */
	(void)snprintf(f->conn.selkey, sizeof(f->conn.selkey), "%064d", 2);
	c = call_on(f, M("FetchJWTSVID"));
	ly_wapi_fetch_jwt_svid(&c, jwt_req, sizeof(jwt_req), &f->w);
	assert_string_equal(c.details, "could not fetch JWT-SVID");
	/* The first set, 600 ms later: one token back (2/s). */
	(void)snprintf(f->conn.selkey, sizeof(f->conn.selkey), "%064d", 1);
	usleep(600 * 1000);
	uv_update_time(&f->loop);
	c = call_on(f, M("FetchJWTSVID"));
	ly_wapi_fetch_jwt_svid(&c, jwt_req, sizeof(jwt_req), &f->w);
	assert_string_equal(c.details, "could not fetch JWT-SVID");
	assert_int_equal(f->jwt_fetches, 4);
	ly_ratelimit_free(f->w.limit);
	f->w.limit = NULL;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_admission_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_health, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x509_stream_life, setup, teardown),
		cmocka_unit_test_setup_teardown(test_x509_over_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federated_bundle_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federated_x509_svid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federated_duplicate_hint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_not_entitled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_client_leaves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_caller_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_minter_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_client_leaves_before_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_no_audience, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit_per_selector_set, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
