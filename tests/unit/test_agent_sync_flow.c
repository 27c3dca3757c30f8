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

#include "agent/cache.h"
#include "agent/sync.h"
#include "agent/sync_internal.h"
#include "lib/bundle.h"
#include "lib/log.h"

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

/* An EntriesUpdate with entries `ids` (valid, one selector each) and deletions `del`, packed. */
static uint8_t *
update(bool snapshot, int64_t revision, const char *const *ids, size_t n, const char *const *del, size_t ndel,
    size_t *len)
{
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
		ep[i] = &e[i];
	}
	m.entries = ep;
	m.n_entries = n;
	m.deleted_entry_ids = (char **)(uintptr_t)del;
	m.n_deleted_entry_ids = ndel;
	m.snapshot = snapshot;
	m.revision = revision;
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
	unsigned issue_kick, tick_arm, persist_cache_dirty, persist_agent_dirty, attest_again, other;
} calls;

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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
