/*
 * test_agent_sync_flow.c: sync's control flow with a fake behind its
 * change callbacks (sync.h): an entry watch update goes from the decoder
 * (agentapi_msg.h) through the cache to the callback, once per update that
 * changed something, never for one that did not or could not be read, and
 * never while sync is still loading its persisted state. No server, no
 * network: the update is handed to ly_sync_watch_apply as the watch's
 * stream would hand it. And the steps table (sync_base.h) with fakes in
 * it: what an applied update starts in the other parts (issuance, the
 * tick, the cache's write), without those parts running.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <uv.h>

#include "agent/agentapi_msg.h"
#include "agent/cache.h"
#include "agent/sync.h"
#include "agent/sync_internal.h"
#include "lib/bundle.h"
#include "lib/log.h"
#include "testutil_x509.h"

/* protobuf-c wants char * for strings it never writes. */
#define S(lit) ((char *)(uintptr_t)(lit))

/* The fake Workload API: counts what sync tells it. */
struct fake_wapi {
	unsigned cache_changed, bundle_changed;
	struct ly_sync *s;
	size_t entries_seen; /* the cache's size when told: the change is in before the call */
};

static void
fake_cache_changed(void *arg)
{
	struct fake_wapi *f = arg;
	f->cache_changed++;
	f->entries_seen = ly_cache_count(ly_sync_cache(f->s));
}

static void
fake_bundle_changed(void *arg)
{
	struct fake_wapi *f = arg;
	f->bundle_changed++;
}

struct fixture {
	uv_loop_t loop;
	struct ly_agent agent;
	struct fake_wapi fake;
	struct ly_sync *s;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	ly_log_set_level(LY_LOG_ERROR);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	f->agent.loop = &f->loop;
	(void)snprintf(f->agent.cfg.trust_domain, sizeof(f->agent.cfg.trust_domain), "example.org");
	f->agent.cfg.server_address = "127.0.0.1";
	f->agent.cfg.server_port = 1;
	f->agent.cfg.data_dir = "/nonexistent-never-written";
	f->agent.cfg.sync_interval = 5;
	const struct ly_sync_changes changes = {
		.arg = &f->fake,
		.cache_changed = fake_cache_changed,
		.bundle_changed = fake_bundle_changed,
	};
	assert_int_equal(ly_sync_new(&f->agent, &changes, &f->s, NULL), LY_OK);
	f->fake.s = f->s;
	/* As after attestation, with no channel yet: nothing is sent anywhere. */
	f->s->phase = PH_ENROLLED;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	ly_sync_free(f->s);
	(void)uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free(f);
	return 0;
}

/* What the next update() announces, and the trust domain its entries federate with (NULL: none). */
static uint64_t next_federated_sequence;
static const char *next_federates_with;

/* An EntriesUpdate with entries `ids` (valid, one selector each) and deletions `del`, packed. */
static uint8_t *
update(bool snapshot, int64_t revision, const char *const *ids, size_t n, const char *const *del, size_t ndel,
    size_t *len)
{
	char *fedw[1] = { (char *)(uintptr_t)next_federates_with };
	Lanyard__Agent__V1__EntriesUpdate m;
	Lanyard__Agent__V1__Entry e[4], *ep[4];
	Lanyard__Agent__V1__Selector sel, *selp[1] = { &sel };

	assert_true(n <= 4);
	lanyard__agent__v1__entries_update__init(&m);
	lanyard__agent__v1__selector__init(&sel);
	sel.type = S("unix");
	sel.value = S("uid:1000");
	for (size_t i = 0; i < n; i++) {
		lanyard__agent__v1__entry__init(&e[i]);
		e[i].entry_id = S(ids[i]);
		e[i].spiffe_id = S("spiffe://example.org/w");
		e[i].parent_id = S("spiffe://example.org/lanyard/agent/join_token/abc");
		e[i].n_selectors = 1;
		e[i].selectors = selp;
		e[i].revision = revision;
		if (next_federates_with != NULL) {
			e[i].federates_with = fedw;
			e[i].n_federates_with = 1;
		}
		ep[i] = &e[i];
	}
	m.entries = ep;
	m.n_entries = n;
	m.deleted_entry_ids = (char **)(uintptr_t)del;
	m.n_deleted_entry_ids = ndel;
	m.snapshot = snapshot;
	m.revision = revision;
	m.federated_sequence = next_federated_sequence;
	*len = lanyard__agent__v1__entries_update__get_packed_size(&m);
	uint8_t *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(lanyard__agent__v1__entries_update__pack(&m, b), *len);
	return b;
}

static void
test_snapshot_then_delta(void **state)
{
	struct fixture *f = *state;
	const char *ids[] = { "e-1", "e-2" };
	size_t len;

	/* The first snapshot: the entries are in the cache when the callback runs, and now known. */
	assert_false(f->s->entries_known);
	uint8_t *b = update(true, 1, ids, 2, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(f->fake.cache_changed, 1);
	assert_int_equal(f->fake.entries_seen, 2);
	assert_int_equal(f->fake.bundle_changed, 0);
	assert_true(f->s->entries_known);
	assert_int_equal(f->s->stats.watch_updates, 1);

	/* The same snapshot again (a resync): nothing changed, nobody told. */
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(f->fake.cache_changed, 1);
	assert_int_equal(f->s->stats.watch_updates, 2);
	free(b);

	/* A delta deleting one: told once, after the deletion. */
	const char *del[] = { "e-1" };
	b = update(false, 2, NULL, 0, del, 1, &len);
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(f->fake.cache_changed, 2);
	assert_int_equal(f->fake.entries_seen, 1);
	free(b);

	/* Deleting an entry we do not have changes nothing. */
	const char *gone[] = { "never-was" };
	b = update(false, 3, NULL, 0, gone, 1, &len);
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(f->fake.cache_changed, 2);
	free(b);
}

static void
test_unreadable_update(void **state)
{
	struct fixture *f = *state;
	static const uint8_t garbage[] = { 0x0f, 0xff, 0xff };

	/* Not an EntriesUpdate: ignored (the next resync repairs), nothing told, nothing counted. */
	ly_sync_watch_apply(f->s, garbage, sizeof(garbage));
	assert_int_equal(f->fake.cache_changed, 0);
	assert_int_equal(f->s->stats.watch_updates, 0);
	assert_false(f->s->entries_known);
	assert_int_equal(ly_cache_count(f->s->cache), 0);
}

static void
test_bad_entry_does_not_block(void **state)
{
	struct fixture *f = *state;
	const char *ids[] = { "ok-1", "", "ok-2" }; /* an entry without an ID is refused by the cache */
	size_t len;

	uint8_t *b = update(true, 1, ids, 3, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(f->fake.cache_changed, 1);
	assert_int_equal(ly_cache_count(f->s->cache), 2);
	free(b);
}

static void
test_quiet_while_loading(void **state)
{
	struct fixture *f = *state;
	const char *ids[] = { "e-1" };
	size_t len;

	/* Before start (loading what was persisted): the cache changes, the Workload API is not told. */
	f->s->phase = PH_NEW;
	uint8_t *b = update(true, 1, ids, 1, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(ly_cache_count(f->s->cache), 1);
	assert_int_equal(f->fake.cache_changed, 0);
	free(b);
}

static void
test_no_callbacks_given(void **state)
{
	struct fixture *f = *state;
	struct ly_sync *s = NULL;
	const char *ids[] = { "e-1" };
	size_t len;

	/* A sync without change callbacks works the same, telling nobody. */
	assert_int_equal(ly_sync_new(&f->agent, NULL, &s, NULL), LY_OK);
	s->phase = PH_ENROLLED;
	uint8_t *b = update(true, 1, ids, 1, NULL, 0, &len);
	ly_sync_watch_apply(s, b, len);
	assert_int_equal(ly_cache_count(s->cache), 1);
	assert_int_equal(f->fake.cache_changed, 0);
	free(b);
	ly_sync_free(s);
}

/* ---- the steps table, faked ---- */

static struct {
	unsigned issue_kick, tick_arm, persist_cache_dirty, persist_agent_dirty, attest_again, other, federated_fetch;
} calls;

static void fake_federated_fetch(struct ly_sync *s) { (void)s; calls.federated_fetch++; }

static void fake_issue_kick(struct ly_sync *s) { (void)s; calls.issue_kick++; }
static void fake_tick_arm(struct ly_sync *s) { (void)s; calls.tick_arm++; }
static void fake_persist_cache_dirty(struct ly_sync *s) { (void)s; calls.persist_cache_dirty++; }
static void fake_persist_agent_dirty(struct ly_sync *s) { (void)s; calls.persist_agent_dirty++; }
static void fake_attest_again(struct ly_sync *s, const char *why) { (void)s; (void)why; calls.attest_again++; }
static void fake_step(struct ly_sync *s) { (void)s; calls.other++; }
static void fake_bundle_install(struct ly_sync *s, struct ly_bundle *b) { (void)s; ly_bundle_free(b); calls.other++; }
static int64_t fake_renew_due_ms(const struct ly_sync *s) { (void)s; calls.other++; return INT64_MAX; }

static const struct ly_sync_steps fake_steps = {
	.connect = fake_step,
	.watch_open = fake_step,
	.watch_drop_all = fake_step,
	.bundle_install = fake_bundle_install,
	.verifier_release = fake_step,
	.federated_fetch = fake_federated_fetch,
	.federated_install = ly_sync_watch_federated_install, /* the real one: it only touches the cache */
	.attest = fake_step,
	.attest_again = fake_attest_again,
	.renew = fake_step,
	.renew_due_ms = fake_renew_due_ms,
	.issue_kick = fake_issue_kick,
	.tick_arm = fake_tick_arm,
	.persist_cache_dirty = fake_persist_cache_dirty,
	.persist_agent_dirty = fake_persist_agent_dirty,
};

static void
test_update_starts_the_next_steps(void **state)
{
	struct fixture *f = *state;
	const char *ids[] = { "e-1" };
	size_t len;

	memset(&calls, 0, sizeof(calls));
	f->s->steps = &fake_steps;
	/* An update that changed the cache: issuance kicked, the tick re-armed, the cache to be written. */
	uint8_t *b = update(true, 1, ids, 1, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(calls.issue_kick, 1);
	assert_int_equal(calls.tick_arm, 1);
	assert_int_equal(calls.persist_cache_dirty, 1);
	/* Our SVID and the bundle did not change; nobody attests. */
	assert_int_equal(calls.persist_agent_dirty, 0);
	assert_int_equal(calls.attest_again, 0);
	assert_int_equal(calls.other, 0);
	/* The same update again changes nothing: no step starts. */
	ly_sync_watch_apply(f->s, b, len);
	assert_int_equal(calls.issue_kick, 1);
	assert_int_equal(calls.persist_cache_dirty, 1);
	free(b);
}

/* ---- federated bundles ---- */

/* A bundle message for `td` with one fresh CA (`x509` false: none) and sequence `seq`; free with bundle_pb_free. */
static Lanyard__Agent__V1__Bundle *
bundle_pb(const char *td, uint64_t seq, bool x509)
{
	Lanyard__Agent__V1__Bundle *m = calloc(1, sizeof(*m));
	char id[300];
	assert_non_null(m);
	lanyard__agent__v1__bundle__init(m);
	m->trust_domain = strdup(td);
	m->sequence = seq;
	if (x509) {
		struct ly_buf der = LY_BUF_INIT;
		(void)snprintf(id, sizeof(id), "spiffe://%s", td);
		EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
		struct tu_spec sp = tu_ca_spec(id);
		X509 *ca = tu_make(&sp, k, NULL, NULL);
		tu_der(ca, &der);
		m->x509_authorities = calloc(1, sizeof(*m->x509_authorities));
		assert_non_null(m->x509_authorities);
		m->x509_authorities[0].data = malloc(der.len);
		assert_non_null(m->x509_authorities[0].data);
		memcpy(m->x509_authorities[0].data, der.data, der.len);
		m->x509_authorities[0].len = der.len;
		m->n_x509_authorities = 1;
		ly_buf_free(&der);
		X509_free(ca);
		EVP_PKEY_free(k);
	}
	return m;
}

static void
bundle_pb_free(Lanyard__Agent__V1__Bundle *m)
{
	for (size_t i = 0; i < m->n_x509_authorities; i++)
		free(m->x509_authorities[i].data);
	free(m->x509_authorities);
	free(m->trust_domain);
	free(m);
}

/* A packed FederatedBundles of `n` bundles. */
static uint8_t *
federated(Lanyard__Agent__V1__Bundle **bs, size_t n, uint64_t seq, size_t *len)
{
	Lanyard__Agent__V1__FederatedBundles m;
	lanyard__agent__v1__federated_bundles__init(&m);
	m.bundles = bs;
	m.n_bundles = n;
	m.sequence = seq;
	*len = lanyard__agent__v1__federated_bundles__get_packed_size(&m);
	uint8_t *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(lanyard__agent__v1__federated_bundles__pack(&m, b), *len);
	return b;
}

/* Our own bundle, installed as GetBundle would (sequence `seq`). */
static void
install_own(struct ly_sync *s, uint64_t seq)
{
	Lanyard__Agent__V1__Bundle *m = bundle_pb("example.org", seq, true);
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_agentapi_bundle_from_pb(m, "example.org", &b, NULL), LY_OK);
	bundle_pb_free(m);
	ly_sync_watch_bundle_install(s, b);
}

static void
test_federated_sequence_asks(void **state)
{
	struct fixture *f = *state;
	const char *ids[] = { "e-1" };
	size_t len;

	memset(&calls, 0, sizeof(calls));
	f->s->steps = &fake_steps;
	/* The first update of a run asks even for sequence 0: what was loaded from disk may be stale. */
	next_federated_sequence = 0;
	uint8_t *b = update(true, 1, ids, 1, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	free(b);
	assert_int_equal(calls.federated_fetch, 1);
	/* Once answered (as of sequence 0), the same sequence asks nothing. */
	f->s->fed_known = true;
	f->s->fed_seq = 0;
	b = update(false, 2, NULL, 0, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	free(b);
	assert_int_equal(calls.federated_fetch, 1);
	/* A new sequence asks again; any change, not only an increase (the server's number). */
	next_federated_sequence = 5;
	b = update(false, 3, NULL, 0, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	free(b);
	assert_int_equal(calls.federated_fetch, 2);
	assert_int_equal(f->s->fed_want, 5);
	f->s->fed_seq = 5;
	next_federated_sequence = 3;
	b = update(false, 4, NULL, 0, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	free(b);
	assert_int_equal(calls.federated_fetch, 3);
	/* A server without federation (UNIMPLEMENTED once) is not asked again. */
	f->s->fed_unimplemented = true;
	next_federated_sequence = 9;
	b = update(false, 5, NULL, 0, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	free(b);
	assert_int_equal(calls.federated_fetch, 3);
	next_federated_sequence = 0;
}

static void
test_federated_install(void **state)
{
	struct fixture *f = *state;
	size_t len;
	struct ly_error e;

	memset(&calls, 0, sizeof(calls));
	f->s->steps = &fake_steps;
	install_own(f->s, 1);
	memset(&calls, 0, sizeof(calls));
	unsigned told = f->fake.bundle_changed;
	assert_int_equal(ly_bundle_set_count(ly_cache_bundles(f->s->cache)), 1);

	/* An answer with b.test and c.test: both held, ours untouched, streams told, persisted. */
	Lanyard__Agent__V1__Bundle *bs[2] = { bundle_pb("b.test", 1, true), bundle_pb("c.test", 4, true) };
	uint8_t *msg = federated(bs, 2, 7, &len);
	assert_int_equal(ly_sync_watch_federated_apply(f->s, msg, len, &e), LY_OK);
	free(msg);
	const struct ly_bundle_set *set = ly_cache_bundles(f->s->cache);
	assert_int_equal(ly_bundle_set_count(set), 3);
	assert_non_null(ly_bundle_set_find(set, "b.test"));
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(set, "c.test")), 4);
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(set, "example.org")), 1);
	assert_int_equal(f->fake.bundle_changed, told + 1);
	assert_int_equal(calls.persist_agent_dirty, 1);

	/* The same answer again: nothing changed, nobody told, nothing written. */
	msg = federated(bs, 2, 7, &len);
	assert_int_equal(ly_sync_watch_federated_apply(f->s, msg, len, &e), LY_OK);
	free(msg);
	assert_int_equal(f->fake.bundle_changed, told + 1);
	assert_int_equal(calls.persist_agent_dirty, 1);

	/* Our bundle rotates: the federated ones stay. */
	install_own(f->s, 2);
	set = ly_cache_bundles(f->s->cache);
	assert_int_equal(ly_bundle_set_count(set), 3);
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(set, "example.org")), 2);
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(set, "c.test")), 4);

	/*
	 * c.test's new bundle does not convert (a JWT authority without a
	 * key): the last good one stays; b.test is gone from the answer, so
	 * it goes.
	 */
	Lanyard__Agent__V1__Bundle *bad = bundle_pb("c.test", 5, true);
	Lanyard__Agent__V1__JWTAuthority ja, *jap[1] = { &ja };
	lanyard__agent__v1__jwtauthority__init(&ja);
	ja.kid = S("k1");
	bad->jwt_authorities = jap;
	bad->n_jwt_authorities = 1;
	Lanyard__Agent__V1__Bundle *one[1] = { bad };
	msg = federated(one, 1, 8, &len);
	assert_int_equal(ly_sync_watch_federated_apply(f->s, msg, len, &e), LY_OK);
	free(msg);
	bad->jwt_authorities = NULL;
	bad->n_jwt_authorities = 0;
	set = ly_cache_bundles(f->s->cache);
	assert_int_equal(ly_bundle_set_count(set), 2);
	assert_null(ly_bundle_set_find(set, "b.test"));
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(set, "c.test")), 4);

	/* An answer refused as a whole (a bundle for our own trust domain, garbage): nothing changes. */
	unsigned before = f->fake.bundle_changed;
	Lanyard__Agent__V1__Bundle *ours = bundle_pb("example.org", 9, true);
	Lanyard__Agent__V1__Bundle *mixed[2] = { bs[0], ours };
	msg = federated(mixed, 2, 9, &len);
	assert_int_equal(ly_sync_watch_federated_apply(f->s, msg, len, &e), LY_E_INVALID);
	free(msg);
	static const uint8_t garbage[] = { 0x0f, 0xff, 0xff };
	assert_int_not_equal(ly_sync_watch_federated_apply(f->s, garbage, sizeof(garbage), &e), LY_OK);
	assert_int_equal(f->fake.bundle_changed, before);
	assert_int_equal(ly_bundle_set_count(ly_cache_bundles(f->s->cache)), 2);

	/* An empty answer: every federation ended; ours stays. */
	msg = federated(NULL, 0, 10, &len);
	assert_int_equal(ly_sync_watch_federated_apply(f->s, msg, len, &e), LY_OK);
	free(msg);
	assert_int_equal(ly_bundle_set_count(ly_cache_bundles(f->s->cache)), 1);
	assert_int_equal(f->fake.bundle_changed, before + 1);

	bundle_pb_free(ours);
	bundle_pb_free(bad);
	bundle_pb_free(bs[0]);
	bundle_pb_free(bs[1]);
}

static void
test_federates_with_change_is_a_change(void **state)
{
	struct fixture *f = *state;
	const char *ids[] = { "e-1" };
	size_t len;

	/* An entry that starts to federate: an entry change (streams of its callers are rebuilt). */
	uint8_t *b = update(true, 1, ids, 1, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	free(b);
	assert_int_equal(f->fake.cache_changed, 1);
	next_federates_with = "b.test";
	b = update(true, 2, ids, 1, NULL, 0, &len);
	ly_sync_watch_apply(f->s, b, len);
	free(b);
	next_federates_with = NULL;
	assert_int_equal(f->fake.cache_changed, 2);
	struct ly_cache_item it;
	assert_true(ly_cache_get(f->s->cache, "e-1", &it));
	assert_int_equal(it.entry->n_federates_with, 1);
	assert_string_equal(it.entry->federates_with[0], "b.test");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_snapshot_then_delta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreadable_update, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_entry_does_not_block, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quiet_while_loading, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_callbacks_given, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_starts_the_next_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federated_sequence_asks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federated_install, setup, teardown),
		cmocka_unit_test_setup_teardown(test_federates_with_change_is_a_change, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
