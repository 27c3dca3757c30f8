/*
 * test_agent_api_flow.c: the agent API's control flow (server/agent_api*.c)
 * with the rpc call layer faked behind its interface (fake_rpc.h: the
 * ly_rpc_call_* functions of rpc/rpc.h, so no gRPC is involved) over
 * a real SQLite datastore in a temporary directory, on its worker thread
 * (server/datastore_async.h: the test's own writes go through it too, as
 * the admin API's do), and a real libuv loop.
 *
 * What it shows: an agent with a valid SVID opens WatchEntries and gets a
 * snapshot; an entry written to the datastore reaches its stream through
 * the datastore's change hook (no call from the admin side) on the next
 * loop iteration; evicting or banning the agent in the datastore ends its
 * stream with PERMISSION_DENIED and the matching reason; a bundle change
 * fed through the hook sends every stream an update; a watch whose SVID is
 * not the recorded one is refused; federated bundles (SPEC §9): the
 * federated_sequence moves when a bundle the agent's entries federate with
 * changes (and only then), and GetFederatedBundles answers with those
 * bundles and no other.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "lib/caps.h"
#include "rpc/rpc.h"
#include "server/agent_api_internal.h"
#include "server/datastore.h"
#include "server/datastore_async.h"
#include "server/server.h"
#include "fake_rpc.h"
#include "testutil_x509.h"

#define TD "example.org"
#define AGENT_ID "spiffe://example.org/lanyard/agent/n1"

/* ---- what the agent API sends, decoded by the fake rpc call layer (fake_rpc.h) ---- */

static void *
decode_update(const uint8_t *msg, size_t len)
{
	return lanyard__agent__v1__entries_update__unpack(NULL, len, msg);
}

static void
free_update(void *p)
{
	lanyard__agent__v1__entries_update__free_unpacked(p, NULL);
}

static void *
decode_fed_bundles(const uint8_t *msg, size_t len)
{
	return lanyard__agent__v1__federated_bundles__unpack(NULL, len, msg);
}

static void
free_fed_bundles(void *p)
{
	lanyard__agent__v1__federated_bundles__free_unpacked(p, NULL);
}

/* The last EntriesUpdate a WatchEntries call sent. */
#define LAST(c) ((Lanyard__Agent__V1__EntriesUpdate *)(c).decoded)

/* ---- fixture ---- */

struct fixture {
	char dir[64];
	uv_loop_t loop;
	struct ly_server srv;
	X509 *leaf;
	EVP_PKEY *key;
	char *pem;
};

/* An agent SVID valid around now (ly_server_now: the wall clock), not around TU_NOW. */
static struct tu_spec
live_spec(void)
{
	struct tu_spec spec = tu_leaf_spec(AGENT_ID);
	long now = (long)(time(NULL) - TU_NOW);
	spec.not_before = now - 3600;
	spec.not_after = now + 3600;
	return spec;
}

static char *
pem_of(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL, *out;
	assert_non_null(b);
	assert_int_equal(PEM_write_bio_X509(b, x), 1);
	long n = BIO_get_mem_data(b, &data);
	out = strndup(data, (size_t)n);
	assert_non_null(out);
	BIO_free(b);
	return out;
}

static void run_for(struct fixture *f, uint64_t ms);

/* One write or read of the test, run on the datastore's worker; the loop runs until it is done. */
typedef ly_status ds_fn(struct ly_datastore *ds, void *arg, struct ly_error *err);
struct ds_do {
	ds_fn *fn;
	void *arg;
	bool done;
	ly_status st;
};

static ly_status
ds_do_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct ds_do *d = ctx;
	return d->fn(ds, d->arg, err);
}

static void
ds_do_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct ds_do *d = ctx;
	(void)err;
	d->done = true;
	d->st = st;
}

static void
ds_do_keep(void *ctx)
{
	(void)ctx; /* on the test's stack */
}

static ly_status
ds_do(struct fixture *f, ds_fn *fn, void *arg)
{
	struct ds_do d = { fn, arg, false, LY_OK };
	assert_int_equal(ly_dsa_submit(f->srv.dsa, ds_do_work, ds_do_done, ds_do_keep, &d, 0, NULL), LY_OK);
	for (int i = 0; i < 5000 && !d.done; i++)
		run_for(f, 2);
	assert_true(d.done);
	return d.st;
}

static ly_status
upsert_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_agent_upsert(ds, arg, err);
}

/* Records the agent with the serial of `leaf` (its current SVID). */
static void
record_agent(struct fixture *f, X509 *leaf)
{
	struct ly_selector sel;
	char serial[LY_DS_AGENT_SERIAL_MAX + 1];
	assert_int_equal(agent_api_auth_serial_hex(leaf, serial, NULL), LY_OK);
	assert_int_equal(ly_selector_parse_str("k8s_psat:cluster:c1", &sel, NULL), LY_OK);
	struct ly_ds_agent a = {
		.spiffe_id = (char *)(uintptr_t)AGENT_ID,
		.attestation_type = (char *)(uintptr_t)"k8s_psat",
		.serial_number = serial,
		.svid_expires_at = (int64_t)time(NULL) + 3600,
		.selectors = &sel,
		.n_selectors = 1,
	};
	assert_int_equal(ds_do(f, upsert_fn, &a), LY_OK);
	ly_selector_cleanup(&sel);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char path[128];

	assert_non_null(f);
	(void)snprintf(f->dir, sizeof(f->dir), "/tmp/ly-agent-api-flow-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	(void)snprintf(path, sizeof(path), "%s/datastore.sqlite3", f->dir);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	f->srv.loop = &f->loop;
	(void)snprintf(f->srv.cfg.trust_domain, sizeof(f->srv.cfg.trust_domain), TD);
	struct ly_datastore *ds = NULL;
	assert_int_equal(ly_datastore_sqlite_open(path, &ds, NULL), LY_OK);
	assert_int_equal(ly_datastore_set_trust_domain(ds, TD, NULL), LY_OK);
	assert_int_equal(ly_dsa_new(&f->loop, ds, NULL, &f->srv.dsa, NULL), LY_OK);
	assert_int_equal(ly_agent_api_new(&f->srv, &f->srv.agent_api, NULL), LY_OK);
	/* The replica loads on the worker. */
	for (int i = 0; i < 5000 && !f->srv.agent_api->loaded; i++)
		run_for(f, 2);
	assert_true(f->srv.agent_api->loaded);
	f->key = tu_key(LY_KEY_EC_P256);
	struct tu_spec spec = live_spec();
	f->leaf = tu_make(&spec, f->key, NULL, NULL);
	f->pem = pem_of(f->leaf);
	record_agent(f, f->leaf);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char path[128];

	ly_agent_api_free(f->srv.agent_api);
	ly_dsa_close(f->srv.dsa);
	/* The timers and the worker's handles close on the loop. */
	(void)uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	X509_free(f->leaf);
	EVP_PKEY_free(f->key);
	free(f->pem);
	(void)snprintf(path, sizeof(path), "%s/datastore.sqlite3", f->dir);
	(void)unlink(path);
	(void)snprintf(path, sizeof(path), "%s/datastore.sqlite3-wal", f->dir);
	(void)unlink(path);
	(void)snprintf(path, sizeof(path), "%s/datastore.sqlite3-shm", f->dir);
	(void)unlink(path);
	(void)rmdir(f->dir);
	free(f);
	fake_rpc_reset();
	return 0;
}

static void
call_cleanup(struct ly_rpc_call *c)
{
	fake_rpc_call_cleanup(c);
}

static void settle(struct fixture *f);

/* Opens WatchEntries as the agent through the method table, as rpc/ would. */
static void
open_watch(struct fixture *f, struct ly_rpc_call *call)
{
	size_t n = 0;
	const struct ly_rpc_method *m = ly_agent_api_methods(&n);
	const struct ly_rpc_method *watch = NULL;

	for (size_t i = 0; i < n; i++) {
		if (strcmp(m[i].path, "/lanyard.agent.v1.Agent/WatchEntries") == 0)
			watch = &m[i];
	}
	assert_non_null(watch);
	memset(call, 0, sizeof(*call));
	call->method = "/lanyard.agent.v1.Agent/WatchEntries";
	call->peer_id = AGENT_ID;
	call->pem = f->pem;
	call->decode = decode_update;
	call->decoded_free = free_update;
	watch->handler(call, NULL, 0, &f->srv);
	/* The agent's record may be read on the worker first. */
	for (int i = 0; i < 5000 && !call->finished && call->n_sent == 0; i++)
		run_for(f, 2);
}

static void
stop_loop(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop for `ms` (a referenced timer keeps it alive: the agent API's own are unreferenced). */
static void
run_for(struct fixture *f, uint64_t ms)
{
	uv_timer_t t;
	assert_int_equal(uv_timer_init(&f->loop, &t), 0);
	assert_int_equal(uv_timer_start(&t, stop_loop, ms, 0), 0);
	(void)uv_run(&f->loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	(void)uv_run(&f->loop, UV_RUN_NOWAIT);
}

/*
 * Runs the loop until the stream has had `n` messages, or 10 s pass: a
 * barrier, not a fixed wait (a fixed 50 ms was too short under valgrind).
 */
static void
run_until_sent(struct fixture *f, const struct ly_rpc_call *call, size_t n)
{
	for (int i = 0; i < 1000 && call->n_sent < n; i++)
		run_for(f, 10);
}

static ly_status
create_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_entry_create(ds, arg, err);
}

static ly_status
delete_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_entry_delete(ds, arg, NULL, err);
}

static ly_status
evict_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_agent_delete(ds, arg, err);
}

static ly_status
ban_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_agent_set_banned(ds, arg, true, err);
}

/* Behind the hook's back: the back end's own operations, not the wrappers that feed the hook. */
static ly_status
raw_ban_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ds->ops->agent_set_banned(ds, arg, true, err);
}

static ly_status
raw_unban_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ds->ops->agent_set_banned(ds, arg, false, err);
}

static ly_status
raw_delete_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ds->ops->agent_delete(ds, arg, err);
}

static ly_status
revision_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_revision(ds, arg, err);
}

static char *
create_entry(struct fixture *f, const char *spiffe_id)
{
	struct ly_entry *e = NULL;
	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, spiffe_id, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, AGENT_ID, NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(e, "unix:uid:1000", NULL), LY_OK);
	assert_int_equal(ds_do(f, create_fn, e), LY_OK);
	char *id = strdup(e->entry_id);
	assert_non_null(id);
	ly_entry_free(e);
	return id;
}

static void
create_entry_keep(struct fixture *f)
{
	free(create_entry(f, "spiffe://example.org/kept"));
	/* The replica hears it through the hook, on a later loop turn. */
	for (int i = 0; i < 1000 && f->srv.agent_api->n_entries == 0; i++)
		run_for(f, 2);
	assert_int_equal(f->srv.agent_api->n_entries, 1);
}

static void
test_change_reaches_watcher(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call call;
	size_t watchers = 0, entries = 0;

	open_watch(f, &call);
	assert_false(call.finished);
	assert_int_equal(call.n_sent, 1);
	assert_true(LAST(call)->snapshot);
	assert_int_equal(LAST(call)->n_entries, 0);
	ly_agent_api_counts(f->srv.agent_api, &watchers, &entries);
	assert_int_equal(watchers, 1);

	/* A write to the store; nothing calls the agent API but the hook. */
	char *id = create_entry(f, "spiffe://example.org/web");
	run_until_sent(f, &call, 2);
	assert_int_equal(call.n_sent, 2);
	assert_false(LAST(call)->snapshot);
	assert_int_equal(LAST(call)->n_entries, 1);
	assert_string_equal(LAST(call)->entries[0]->entry_id, id);
	assert_string_equal(LAST(call)->entries[0]->spiffe_id, "spiffe://example.org/web");
	int64_t rev = -1;
	assert_int_equal(ds_do(f, revision_fn, &rev), LY_OK);
	assert_int_equal(LAST(call)->revision, rev);

	/* A delete reaches it the same way: with the set now empty, the update
	 * is the (empty) snapshot, smaller than a delta (authz.h). */
	assert_int_equal(ds_do(f, delete_fn, id), LY_OK);
	run_until_sent(f, &call, 3);
	assert_int_equal(call.n_sent, 3);
	assert_true(LAST(call)->snapshot);
	assert_int_equal(LAST(call)->n_entries, 0);

	/* A bundle change fed through the hook: every stream gets an update. */
	struct ly_datastore_change c = { .kind = LY_DATASTORE_BUNDLE_CHANGED, .revision = rev };
	ly_dsa_changed(f->srv.dsa, &c);
	assert_int_equal(call.n_sent, 4);

	/* Evicted in the store: the stream ends at once (the hook runs before the write's completion). */
	assert_int_equal(ds_do(f, evict_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	assert_true(call.finished);
	assert_int_equal(call.code, LY_RPC_PERMISSION_DENIED);
	assert_string_equal(call.details, "agent was evicted: it must attest again");
	ly_agent_api_counts(f->srv.agent_api, &watchers, &entries);
	assert_int_equal(watchers, 0);
	call_cleanup(&call);
	free(id);
}

static ly_status
fed_put_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_fed_bundle_put(ds, arg, NULL, err);
}

static ly_status
fed_dissociate_fn(struct ly_datastore *ds, void *arg, struct ly_error *err)
{
	return ly_datastore_fed_bundle_delete(ds, arg, LY_FED_DELETE_DISSOCIATE, NULL, err);
}

/*
 * A bundle for `td` with one CA certificate, at sequence `seq`, stored
 * through the server's worker, or straight into `other` (another server's
 * handle on the same store: no hook) when not NULL.
 */
static void
put_fed_bundle_to(struct fixture *f, struct ly_datastore *other, const char *td, uint64_t seq)
{
	char uri[300];
	struct ly_bundle *b = NULL;
	struct ly_buf der;
	EVP_PKEY *key = tu_fixed_ec_key((unsigned char)(td[0] + seq));

	(void)snprintf(uri, sizeof(uri), "spiffe://%s", td);
	struct tu_spec spec = tu_ca_spec(uri);
	X509 *ca = tu_make(&spec, key, NULL, NULL);
	ly_buf_init(&der, 0, false);
	tu_der(ca, &der);
	assert_int_equal(ly_bundle_new(td, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, der.data, der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, seq, NULL), LY_OK);
	if (other != NULL)
		assert_int_equal(ly_datastore_fed_bundle_put(other, b, NULL, NULL), LY_OK);
	else
		assert_int_equal(ds_do(f, fed_put_fn, b), LY_OK);
	ly_bundle_free(b);
	ly_buf_free(&der);
	X509_free(ca);
	EVP_PKEY_free(key);
}

static void
put_fed_bundle(struct fixture *f, const char *td, uint64_t seq)
{
	put_fed_bundle_to(f, NULL, td, seq);
}

/* GetFederatedBundles as the agent, through the method table; the answer unpacked. */
static Lanyard__Agent__V1__FederatedBundles *
get_fed_bundles(struct fixture *f)
{
	size_t n = 0;
	const struct ly_rpc_method *m = ly_agent_api_methods(&n);
	const struct ly_rpc_method *get = NULL;
	struct ly_rpc_call call;

	for (size_t i = 0; i < n; i++) {
		if (strcmp(m[i].path, "/lanyard.agent.v1.Agent/GetFederatedBundles") == 0)
			get = &m[i];
	}
	assert_non_null(get);
	memset(&call, 0, sizeof(call));
	call.method = "/lanyard.agent.v1.Agent/GetFederatedBundles";
	call.peer_id = AGENT_ID;
	call.pem = f->pem;
	call.decode = decode_fed_bundles;
	call.decoded_free = free_fed_bundles;
	get->handler(&call, NULL, 0, &f->srv);
	/* The agent's record may be read on the worker first. */
	for (int i = 0; i < 5000 && !call.finished; i++)
		run_for(f, 2);
	assert_true(call.finished);
	if (call.code != LY_RPC_OK)
		fail_msg("GetFederatedBundles: %d %s", call.code, call.details);
	Lanyard__Agent__V1__FederatedBundles *r = call.decoded; /* taken */
	assert_non_null(r);
	call.decoded = NULL;
	return r;
}

static void
test_federated_bundles(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call call;
	struct ly_entry *e = NULL;

	put_fed_bundle(f, "b.test", 1);
	put_fed_bundle(f, "c.test", 1);
	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/web", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, AGENT_ID, NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(e, "unix:uid:1000", NULL), LY_OK);
	assert_int_equal(ly_entry_add_federates_with(e, "spiffe://b.test", NULL), LY_OK);
	assert_int_equal(ds_do(f, create_fn, e), LY_OK);
	ly_entry_free(e);

	settle(f);
	open_watch(f, &call);
	assert_int_equal(call.n_sent, 1);
	assert_int_equal(LAST(call)->n_entries, 1);
	assert_int_equal(LAST(call)->entries[0]->n_federates_with, 1);
	assert_string_equal(LAST(call)->entries[0]->federates_with[0], "b.test");
	uint64_t seq1 = LAST(call)->federated_sequence;
	assert_true(seq1 != 0);

	/* Only the bundle its entries federate with: b.test, not c.test. */
	Lanyard__Agent__V1__FederatedBundles *r = get_fed_bundles(f);
	assert_int_equal(r->n_bundles, 1);
	assert_string_equal(r->bundles[0]->trust_domain, "b.test");
	assert_int_equal(r->bundles[0]->sequence, 1);
	assert_int_equal(r->bundles[0]->n_x509_authorities, 1);
	assert_int_equal(r->sequence, seq1);
	lanyard__agent__v1__federated_bundles__free_unpacked(r, NULL);

	/* A bundle it does not need changes: no update. */
	put_fed_bundle(f, "c.test", 2);
	run_for(f, 200);
	assert_int_equal(call.n_sent, 1);

	/* Its bundle changes: an update with a new federated_sequence. */
	put_fed_bundle(f, "b.test", 2);
	run_until_sent(f, &call, 2);
	assert_int_equal(call.n_sent, 2);
	uint64_t seq2 = LAST(call)->federated_sequence;
	assert_true(seq2 != 0 && seq2 != seq1);
	r = get_fed_bundles(f);
	assert_int_equal(r->n_bundles, 1);
	assert_int_equal(r->bundles[0]->sequence, 2);
	assert_int_equal(r->sequence, seq2);
	lanyard__agent__v1__federated_bundles__free_unpacked(r, NULL);

	/* Dissociated: the entry loses b.test, the sequence is 0, no bundle is served. */
	assert_int_equal(ds_do(f, fed_dissociate_fn, (void *)(uintptr_t)"b.test"), LY_OK);
	run_until_sent(f, &call, 3);
	assert_int_equal(call.n_sent, 3);
	assert_int_equal(LAST(call)->federated_sequence, 0);
	assert_int_equal(LAST(call)->n_entries, 1);
	assert_int_equal(LAST(call)->entries[0]->n_federates_with, 0);
	r = get_fed_bundles(f);
	assert_int_equal(r->n_bundles, 0);
	assert_int_equal(r->sequence, 0);
	lanyard__agent__v1__federated_bundles__free_unpacked(r, NULL);

	assert_int_equal(ds_do(f, evict_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	assert_true(call.finished);
	call_cleanup(&call);
}

/*
 * A bundle stored through another handle on the same store (what another
 * server sharing a PostgreSQL does: no hook here) reaches the watcher by
 * the datastore poll, within POLL_TICKS sweeps.
 */
static void
test_federated_bundle_from_another_server(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call call;
	struct ly_entry *e = NULL;
	struct ly_datastore *other = NULL;
	char path[128];

	put_fed_bundle(f, "b.test", 1);
	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, "spiffe://example.org/web", NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, AGENT_ID, NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(e, "unix:uid:1000", NULL), LY_OK);
	assert_int_equal(ly_entry_add_federates_with(e, "b.test", NULL), LY_OK);
	assert_int_equal(ds_do(f, create_fn, e), LY_OK);
	ly_entry_free(e);
	settle(f);
	open_watch(f, &call);
	assert_int_equal(call.n_sent, 1);
	uint64_t seq1 = LAST(call)->federated_sequence;
	run_for(f, 100); /* the refresh the entry's creation armed runs: nothing new for the watcher */
	assert_int_equal(call.n_sent, 1);

	(void)snprintf(path, sizeof(path), "%s/datastore.sqlite3", f->dir);
	assert_int_equal(ly_datastore_sqlite_open(path, &other, NULL), LY_OK);
	assert_int_equal(ly_datastore_set_trust_domain(other, TD, NULL), LY_OK);
	put_fed_bundle_to(f, other, "b.test", 2);
	ly_datastore_close(other);
	assert_int_equal(call.n_sent, 1);
	/* Not at once (no hook on that handle): the poll, every POLL_TICKS sweeps, brings it. */
	run_for(f, 300);
	assert_int_equal(call.n_sent, 1);
	run_until_sent(f, &call, 2);
	assert_int_equal(call.n_sent, 2);
	assert_true(LAST(call)->federated_sequence != seq1);

	assert_int_equal(ds_do(f, evict_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	assert_true(call.finished);
	call_cleanup(&call);
}

/* Opens WatchEntries with `since_revision`. */
static void
open_watch_since(struct fixture *f, struct ly_rpc_call *call, int64_t since)
{
	size_t n = 0;
	const struct ly_rpc_method *m = ly_agent_api_methods(&n);
	const struct ly_rpc_method *watch = NULL;
	Lanyard__Agent__V1__WatchEntriesRequest req;
	uint8_t buf[32];

	for (size_t i = 0; i < n; i++) {
		if (strcmp(m[i].path, "/lanyard.agent.v1.Agent/WatchEntries") == 0)
			watch = &m[i];
	}
	assert_non_null(watch);
	lanyard__agent__v1__watch_entries_request__init(&req);
	req.since_revision = since;
	size_t len = lanyard__agent__v1__watch_entries_request__pack(&req, buf);
	memset(call, 0, sizeof(*call));
	call->method = "/lanyard.agent.v1.Agent/WatchEntries";
	call->peer_id = AGENT_ID;
	call->pem = f->pem;
	call->decode = decode_update;
	call->decoded_free = free_update;
	watch->handler(call, buf, len, &f->srv);
	/* The agent's record may be read on the worker first. */
	for (int i = 0; i < 5000 && !call->finished && call->n_sent == 0; i++)
		run_for(f, 2);
}

static char *
create_entry_under(struct fixture *f, const char *spiffe_id, const char *parent)
{
	struct ly_entry *e = NULL;
	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, spiffe_id, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, parent, NULL), LY_OK);
	assert_int_equal(ly_entry_add_selector(e, "unix:uid:1001", NULL), LY_OK);
	assert_int_equal(ds_do(f, create_fn, e), LY_OK);
	char *id = strdup(e->entry_id);
	assert_non_null(id);
	ly_entry_free(e);
	return id;
}

/*
 * Runs the loop until the replica holds the store's present revision: the
 * refresh a write's hook armed runs on a timer and reads on the worker, so
 * a watch opened right after a write may otherwise get its snapshot before
 * it and the write as an update next (both answers can land in one wake).
 */
static void
settle(struct fixture *f)
{
	int64_t rev = 0;
	assert_int_equal(ds_do(f, revision_fn, &rev), LY_OK);
	for (int i = 0; i < 5000 && (f->srv.agent_api->revision < rev || f->srv.agent_api->refresh_inflight); i++)
		run_for(f, 2);
	assert_true(f->srv.agent_api->revision >= rev);
}

/*
 * A watch opened with the agent's revision (the agent's periodic check, or
 * an agent moving from another server) gets the changes since then, not
 * the whole set; a snapshot when the change log does not reach back that
 * far, when the revision is ahead of the store, or when a change since
 * then altered the authorization rule's inputs (an entry that is another
 * entry's parent deleted).
 */
static void
test_watch_resumes_at_revision(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call w1, w2, w3, w4, w5, w6;

	char *e1 = create_entry(f, "spiffe://example.org/one");
	char *e2 = create_entry(f, "spiffe://example.org/two");
	settle(f);
	open_watch(f, &w1);
	assert_int_equal(w1.n_sent, 1);
	assert_true(LAST(w1)->snapshot);
	assert_int_equal(LAST(w1)->n_entries, 2);
	int64_t r1 = LAST(w1)->revision;

	/* Changes after r1: one created, one deleted, one nested under `two` (level 2). */
	char *e3 = create_entry(f, "spiffe://example.org/three");
	assert_int_equal(ds_do(f, delete_fn, e1), LY_OK);
	char *e4 = create_entry_under(f, "spiffe://example.org/two/nested", "spiffe://example.org/two");
	run_until_sent(f, &w1, 2);
	settle(f); /* that update may hold only the first of the three changes */

	open_watch_since(f, &w2, r1);
	assert_false(w2.finished);
	assert_int_equal(w2.n_sent, 1);
	assert_false(LAST(w2)->snapshot);
	assert_int_equal(LAST(w2)->n_entries, 2); /* three, two/nested */
	assert_int_equal(LAST(w2)->n_deleted_entry_ids, 1);
	assert_string_equal(LAST(w2)->deleted_entry_ids[0], e1);
	int64_t r2 = LAST(w2)->revision;
	assert_true(r2 > r1);
	bool saw3 = false, saw4 = false;
	for (size_t i = 0; i < LAST(w2)->n_entries; i++) {
		saw3 = saw3 || strcmp(LAST(w2)->entries[i]->entry_id, e3) == 0;
		saw4 = saw4 || strcmp(LAST(w2)->entries[i]->entry_id, e4) == 0;
	}
	assert_true(saw3 && saw4);

	/* Up to date: an empty delta at the same revision (a few bytes, not the set). */
	open_watch_since(f, &w3, r2);
	assert_int_equal(w3.n_sent, 1);
	assert_false(LAST(w3)->snapshot);
	assert_int_equal(LAST(w3)->n_entries, 0);
	assert_int_equal(LAST(w3)->n_deleted_entry_ids, 0);
	assert_int_equal(LAST(w3)->revision, r2);
	/* Later changes reach a resumed watch as deltas too. */
	char *e5 = create_entry(f, "spiffe://example.org/five");
	run_until_sent(f, &w3, 2);
	assert_false(LAST(w3)->snapshot);
	assert_int_equal(LAST(w3)->n_entries, 1);
	assert_string_equal(LAST(w3)->entries[0]->entry_id, e5);
	call_cleanup(&w1);
	call_cleanup(&w2);
	ly_agent_api_stop(f->srv.agent_api);
	call_cleanup(&w3);
	free(e1);
	free(e3);
	free(e4);
	free(e5);

	/* A fresh agent API (a server just started): its log begins at its load: older revisions get snapshots. */
	ly_agent_api_free(f->srv.agent_api);
	assert_int_equal(ly_agent_api_new(&f->srv, &f->srv.agent_api, NULL), LY_OK);
	for (int i = 0; i < 5000 && !f->srv.agent_api->loaded; i++)
		run_for(f, 2);
	open_watch_since(f, &w4, r1);
	assert_int_equal(w4.n_sent, 1);
	assert_true(LAST(w4)->snapshot);
	int64_t r4 = LAST(w4)->revision;
	/* Ahead of the store (another database, or a restored one): a snapshot. */
	open_watch_since(f, &w5, r4 + 1000);
	assert_true(LAST(w5)->snapshot);
	/* `two` deleted: its nested entry loses its authorization without changing itself: a snapshot. */
	assert_int_equal(ds_do(f, delete_fn, e2), LY_OK);
	run_until_sent(f, &w4, 2);
	open_watch_since(f, &w6, r4);
	assert_true(LAST(w6)->snapshot);
	assert_int_equal(LAST(w6)->n_entries, 2); /* three, five: two/nested went with two */
	ly_agent_api_stop(f->srv.agent_api);
	call_cleanup(&w4);
	call_cleanup(&w5);
	call_cleanup(&w6);
	free(e2);
}

/*
 * A ban and an eviction the change hook never reported (written by another
 * server while the notification channel was down): the re-check after the
 * channel is back ends those agents' streams, and only theirs.
 */
static void
test_recheck_agents(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call w1, w2;
	struct ly_error err;

	open_watch(f, &w1);
	open_watch(f, &w2);
	assert_false(w1.finished);
	/* Nothing changed: nothing ends (the re-check reads on the worker). */
	assert_int_equal(ly_agent_api_recheck_agents(f->srv.agent_api, &err), LY_OK);
	run_for(f, 100);
	assert_false(w1.finished || w2.finished);
	/* Banned behind the hook's back (the back end's operation, not the wrapper that feeds the hook). */
	assert_int_equal(ds_do(f, raw_ban_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	assert_false(w1.finished);
	assert_int_equal(ly_agent_api_recheck_agents(f->srv.agent_api, &err), LY_OK);
	for (int i = 0; i < 2500 && !(w1.finished && w2.finished); i++)
		run_for(f, 2);
	assert_true(w1.finished && w2.finished);
	assert_int_equal(w1.code, LY_RPC_PERMISSION_DENIED);
	assert_string_equal(w2.details, "agent is banned");
	size_t watchers = 9, entries = 0;
	ly_agent_api_counts(f->srv.agent_api, &watchers, &entries);
	assert_int_equal(watchers, 0);
	call_cleanup(&w1);
	call_cleanup(&w2);
	/* Evicted behind its back: the same, "evicted". */
	assert_int_equal(ds_do(f, raw_unban_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	open_watch(f, &w1);
	assert_false(w1.finished);
	assert_int_equal(ds_do(f, raw_delete_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	assert_int_equal(ly_agent_api_recheck_agents(f->srv.agent_api, &err), LY_OK);
	for (int i = 0; i < 2500 && !w1.finished; i++)
		run_for(f, 2);
	assert_true(w1.finished);
	assert_string_equal(w1.details, "agent was evicted: it must attest again");
	call_cleanup(&w1);
}

static void
test_ban_ends_stream(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call call;

	open_watch(f, &call);
	assert_false(call.finished);
	assert_int_equal(ds_do(f, ban_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	assert_true(call.finished);
	assert_int_equal(call.code, LY_RPC_PERMISSION_DENIED);
	assert_string_equal(call.details, "agent is banned");
	call_cleanup(&call);
	/* A banned agent cannot watch again. */
	open_watch(f, &call);
	assert_true(call.finished);
	assert_int_equal(call.code, LY_RPC_PERMISSION_DENIED);
	assert_int_equal(call.n_sent, 0);
	call_cleanup(&call);
}

static void
test_superseded_svid_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call call;
	struct tu_spec spec = live_spec();
	X509 *newer = tu_make(&spec, f->key, NULL, NULL);

	/* The record now holds another SVID's serial: the old one is refused. */
	record_agent(f, newer);
	open_watch(f, &call);
	assert_true(call.finished);
	assert_int_equal(call.code, LY_RPC_UNAUTHENTICATED);
	assert_int_equal(call.n_sent, 0);
	call_cleanup(&call);
	X509_free(newer);
}

static void
test_unregistered_after_free(void **state)
{
	struct fixture *f = *state;

	ly_agent_api_free(f->srv.agent_api);
	/* Writes after that reach no one (and touch nothing freed). */
	free(create_entry(f, "spiffe://example.org/after"));
	f->srv.agent_api = NULL;
}

/* ---- a datastore that stops answering ---- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;

static ly_status
stall_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	(void)ds;
	(void)ctx;
	(void)err;
	pthread_mutex_lock(&gate_mu);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
	return LY_OK;
}

static int stall_done_calls;
static void
stall_done(void *ctx, ly_status st, const struct ly_error *err)
{
	(void)ctx;
	(void)err;
	assert_int_equal(st, LY_E_IO); /* timed out */
	stall_done_calls++;
}

static void
stall_release(void *ctx)
{
	(void)ctx;
}

/*
 * The datastore stops answering (a call held on the worker past its
 * deadline): an agent this server knows still opens its watch and gets
 * its snapshot from the replica, even with a record older than
 * KNOWN_FRESH_MS; an agent it does not know is told UNAVAILABLE; when the
 * held call returns, the datastore is reachable again.
 */
static void
test_known_agent_served_while_stalled(void **state)
{
	struct fixture *f = *state;
	struct ly_rpc_call call;

	create_entry_keep(f);
	open_watch(f, &call); /* reads the record: the agent is known */
	assert_false(call.finished);
	assert_int_equal(call.n_sent, 1);
	assert_int_equal(f->srv.agent_api->n_known, 1);
	f->srv.agent_api->known[0].read_ms = 0; /* stale: would be read again */

	gate_open = false;
	stall_done_calls = 0;
	assert_int_equal(ly_dsa_submit(f->srv.dsa, stall_work, stall_done, stall_release, NULL, 50, NULL), LY_OK);
	for (int i = 0; i < 1000 && stall_done_calls == 0; i++)
		run_for(f, 2);
	assert_int_equal(stall_done_calls, 1);
	assert_false(ly_dsa_reachable(f->srv.dsa, NULL));

	struct ly_rpc_call call2;
	open_watch(f, &call2);
	assert_false(call2.finished);
	assert_int_equal(call2.n_sent, 1);
	assert_true(LAST(call2)->snapshot);
	assert_int_equal(LAST(call2)->n_entries, 1);

	/* Not known here: nothing to go by. */
	agent_api_known_drop(f->srv.agent_api, AGENT_ID);
	struct ly_rpc_call call3;
	open_watch(f, &call3);
	assert_true(call3.finished);
	assert_int_equal(call3.code, LY_RPC_UNAVAILABLE);
	assert_string_equal(call3.details, "datastore unavailable");
	call_cleanup(&call3);

	pthread_mutex_lock(&gate_mu);
	gate_open = true;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	for (int i = 0; i < 1000 && !ly_dsa_reachable(f->srv.dsa, NULL); i++)
		run_for(f, 2);
	assert_true(ly_dsa_reachable(f->srv.dsa, NULL));
	struct ly_rpc_call call4;
	open_watch(f, &call4);
	assert_false(call4.finished);
	assert_int_equal(call4.n_sent, 1);
	/* The streams end before their (stack) calls go. */
	assert_int_equal(ds_do(f, evict_fn, (void *)(uintptr_t)AGENT_ID), LY_OK);
	assert_true(call.finished && call2.finished && call4.finished);
	call_cleanup(&call);
	call_cleanup(&call2);
	call_cleanup(&call4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_change_reaches_watcher, setup, teardown),
		cmocka_unit_test_setup_teardown(test_known_agent_served_while_stalled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_resumes_at_revision, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recheck_agents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ban_ends_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federated_bundles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federated_bundle_from_another_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_superseded_svid_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unregistered_after_free, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
