/*
 * test_authz.c: which entries an agent is authorized for (server/authz.h):
 * direct parent, node-entry aliases (match, no match, the subset rule),
 * one transitive level and no more, node entries never handed out, a
 * deleted node entry taking its children with it, and the two questions
 * "may this agent use entry E / obtain SPIFFE ID X".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/entry.h"
#include "server/authz.h"

#define TD "spiffe://example.org"
#define AGENT TD "/lanyard/agent/join_token/abc"
#define OTHER_AGENT TD "/lanyard/agent/join_token/xyz"
#define SERVER TD "/lanyard/server"
#define CLUSTER TD "/cluster/prod"

struct fixture {
	struct ly_entry_list entries;
	struct ly_authz_index *idx;
	struct ly_selector agent_sels[LY_SELECTORS_MAX];
	size_t n_agent_sels;
	struct ly_authz_set set;
};

/* Adds an entry: sels is a NULL-terminated list of "type:value". */
static struct ly_entry *
add_entry(struct fixture *f, const char *id, const char *spiffe_id, const char *parent, bool node,
    const char *const *sels)
{
	struct ly_entry *e = NULL;

	assert_int_equal(ly_entry_new(&e, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->entry_id, id, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->spiffe_id, spiffe_id, NULL), LY_OK);
	assert_int_equal(ly_entry_set_string(&e->parent_id, parent, NULL), LY_OK);
	e->node = node;
	for (size_t i = 0; sels[i] != NULL; i++)
		assert_int_equal(ly_entry_add_selector(e, sels[i], NULL), LY_OK);
	assert_int_equal(ly_entry_validate(e, "example.org", NULL), LY_OK);
	assert_int_equal(ly_entry_list_append(&f->entries, e, NULL), LY_OK);
	return e;
}

static void
add_workload(struct fixture *f, const char *id, const char *spiffe_id, const char *parent)
{
	static const char *const uid[] = { "unix:uid:1000", NULL };
	(void)add_entry(f, id, spiffe_id, parent, false, uid);
}

static void
agent_selector(struct fixture *f, const char *sel)
{
	assert_true(f->n_agent_sels < LY_SELECTORS_MAX);
	assert_int_equal(ly_selector_parse_str(sel, &f->agent_sels[f->n_agent_sels++], NULL), LY_OK);
}

static void
build(struct fixture *f)
{
	ly_authz_index_free(f->idx);
	f->idx = NULL;
	assert_int_equal(ly_authz_index_new(f->entries.items, f->entries.n, &f->idx, NULL), LY_OK);
}

/* Computes the set for `agent_id` with the fixture's selectors; returns its size. */
static size_t
authorize(struct fixture *f, const char *agent_id)
{
	struct ly_authz_agent a = { agent_id, f->agent_sels, f->n_agent_sels };

	ly_authz_set_cleanup(&f->set);
	assert_int_equal(ly_authz_authorized(f->idx, &a, &f->set, NULL), LY_OK);
	/* Sorted by entry ID, each once. */
	for (size_t i = 1; i < f->set.n; i++)
		assert_true(strcmp(f->set.items[i - 1]->entry_id, f->set.items[i]->entry_id) < 0);
	return f->set.n;
}

static bool
has(const struct fixture *f, const char *entry_id)
{
	return ly_authz_set_find(&f->set, entry_id) != NULL;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->entries = (struct ly_entry_list)LY_ENTRY_LIST_INIT;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	ly_authz_set_cleanup(&f->set);
	ly_authz_index_free(f->idx);
	ly_entry_list_cleanup(&f->entries);
	for (size_t i = 0; i < f->n_agent_sels; i++)
		ly_selector_cleanup(&f->agent_sels[i]);
	free(f);
	return 0;
}

static void
test_direct_parent(void **state)
{
	struct fixture *f = *state;

	add_workload(f, "e1", TD "/web", AGENT);
	add_workload(f, "e2", TD "/db", OTHER_AGENT);
	add_workload(f, "e3", TD "/api", AGENT);
	build(f);
	assert_int_equal(authorize(f, AGENT), 2);
	assert_true(has(f, "e1"));
	assert_true(has(f, "e3"));
	assert_false(has(f, "e2")); /* another agent's entry */
	assert_int_equal(authorize(f, OTHER_AGENT), 1);
	assert_true(has(f, "e2"));
	/* An agent nothing names gets nothing. */
	assert_int_equal(authorize(f, TD "/lanyard/agent/nobody"), 0);
}

static void
test_alias_match(void **state)
{
	struct fixture *f = *state;
	static const char *const prod[] = { "k8s_psat:cluster:prod", NULL };

	(void)add_entry(f, "node", CLUSTER, SERVER, true, prod);
	add_workload(f, "w1", TD "/web", CLUSTER);
	add_workload(f, "w2", TD "/own", AGENT);
	build(f);
	agent_selector(f, "k8s_psat:cluster:prod");
	agent_selector(f, "k8s_psat:agent_ns:lanyard");
	assert_int_equal(authorize(f, AGENT), 2);
	assert_true(has(f, "w1")); /* through the alias */
	assert_true(has(f, "w2")); /* directly */
}

static void
test_alias_no_match(void **state)
{
	struct fixture *f = *state;
	static const char *const prod[] = { "k8s_psat:cluster:prod", NULL };

	(void)add_entry(f, "node", CLUSTER, SERVER, true, prod);
	add_workload(f, "w1", TD "/web", CLUSTER);
	build(f);
	agent_selector(f, "k8s_psat:cluster:staging");
	assert_int_equal(authorize(f, AGENT), 0);
	/* An agent without selectors (join_token) matches no node entry. */
	for (size_t i = 0; i < f->n_agent_sels; i++)
		ly_selector_cleanup(&f->agent_sels[i]);
	f->n_agent_sels = 0;
	assert_int_equal(authorize(f, AGENT), 0);
}

static void
test_alias_subset_rule(void **state)
{
	struct fixture *f = *state;
	static const char *const two[] = { "k8s_psat:cluster:prod", "k8s_psat:agent_ns:lanyard", NULL };

	(void)add_entry(f, "node", CLUSTER, SERVER, true, two);
	add_workload(f, "w1", TD "/web", CLUSTER);
	build(f);
	/* The agent has only one of the node entry's two selectors: no alias. */
	agent_selector(f, "k8s_psat:cluster:prod");
	assert_int_equal(authorize(f, AGENT), 0);
	/* With both (and one more) it matches: entry selectors subset of the agent's. */
	agent_selector(f, "k8s_psat:agent_sa:agent");
	agent_selector(f, "k8s_psat:agent_ns:lanyard");
	assert_int_equal(authorize(f, AGENT), 1);
	assert_true(has(f, "w1"));
}

static void
test_node_entries_not_handed_out(void **state)
{
	struct fixture *f = *state;
	static const char *const prod[] = { "k8s_psat:cluster:prod", NULL };

	(void)add_entry(f, "node", CLUSTER, SERVER, true, prod);
	/* A node entry parented by the agent itself is still no workload entry. */
	(void)add_entry(f, "node2", TD "/cluster/other", AGENT, true, prod);
	build(f);
	agent_selector(f, "k8s_psat:cluster:prod");
	assert_int_equal(authorize(f, AGENT), 0);
	bool ok = true;
	struct ly_authz_agent a = { AGENT, f->agent_sels, f->n_agent_sels };
	assert_int_equal(ly_authz_may_obtain_id(f->idx, &a, CLUSTER, &ok, NULL), LY_OK);
	assert_false(ok); /* an alias ID is never an SVID */
}

static void
test_aliases_do_not_chain(void **state)
{
	struct fixture *f = *state;
	static const char *const prod[] = { "k8s_psat:cluster:prod", NULL };

	(void)add_entry(f, "node", CLUSTER, SERVER, true, prod);
	/* A node entry under the alias, matching too: gives no second alias. */
	(void)add_entry(f, "subnode", TD "/cluster/prod/sub", CLUSTER, true, prod);
	add_workload(f, "w-sub", TD "/sub-web", TD "/cluster/prod/sub");
	build(f);
	agent_selector(f, "k8s_psat:cluster:prod");
	/* ...but it does match on its own selectors, so it is an alias anyway. */
	assert_int_equal(authorize(f, AGENT), 1);
	/* Make the sub node entry require a selector the agent lacks: nothing. */
	ly_entry_list_cleanup(&f->entries);
	static const char *const strict[] = { "k8s_psat:cluster:prod", "k8s_psat:agent_ns:other", NULL };
	(void)add_entry(f, "node", CLUSTER, SERVER, true, prod);
	(void)add_entry(f, "subnode", TD "/cluster/prod/sub", CLUSTER, true, strict);
	add_workload(f, "w-sub", TD "/sub-web", TD "/cluster/prod/sub");
	build(f);
	assert_int_equal(authorize(f, AGENT), 0);
}

static void
test_transitive_one_level(void **state)
{
	struct fixture *f = *state;

	add_workload(f, "l1", TD "/nested-agent", AGENT);
	add_workload(f, "l2", TD "/nested-workload", TD "/nested-agent");
	add_workload(f, "l3", TD "/deeper", TD "/nested-workload");
	build(f);
	assert_int_equal(authorize(f, AGENT), 2);
	assert_true(has(f, "l1"));
	assert_true(has(f, "l2"));  /* one transitive level */
	assert_false(has(f, "l3")); /* and no more */
}

static void
test_transitive_through_alias(void **state)
{
	struct fixture *f = *state;
	static const char *const prod[] = { "k8s_psat:cluster:prod", NULL };

	(void)add_entry(f, "node", CLUSTER, SERVER, true, prod);
	add_workload(f, "l1", TD "/nested-agent", CLUSTER);
	add_workload(f, "l2", TD "/nested-workload", TD "/nested-agent");
	build(f);
	agent_selector(f, "k8s_psat:cluster:prod");
	assert_int_equal(authorize(f, AGENT), 2);
	/* Reached twice (two level-1 entries with one ID): listed once. */
	add_workload(f, "l1b", TD "/nested-agent", AGENT);
	build(f);
	assert_int_equal(authorize(f, AGENT), 3);
}

static void
test_deleted_node_entry_removes_children(void **state)
{
	struct fixture *f = *state;
	static const char *const prod[] = { "k8s_psat:cluster:prod", NULL };

	add_workload(f, "w1", TD "/web", CLUSTER);
	add_workload(f, "w2", TD "/db", CLUSTER);
	add_workload(f, "w3", TD "/own", AGENT);
	(void)add_entry(f, "node", CLUSTER, SERVER, true, prod);
	build(f);
	agent_selector(f, "k8s_psat:cluster:prod");
	assert_int_equal(authorize(f, AGENT), 3);

	/* Delete the node entry (the last one) and rebuild: its children go. */
	ly_authz_set_cleanup(&f->set);
	ly_entry_free(f->entries.items[--f->entries.n]);
	build(f);
	assert_int_equal(authorize(f, AGENT), 1);
	assert_true(has(f, "w3"));
	assert_false(has(f, "w1"));
	assert_false(has(f, "w2"));
}

static void
test_may_obtain_id(void **state)
{
	struct fixture *f = *state;
	bool ok = false;
	const struct ly_entry *e = NULL;

	add_workload(f, "e1", TD "/web", AGENT);
	add_workload(f, "e2", TD "/db", OTHER_AGENT);
	build(f);
	struct ly_authz_agent a = { AGENT, NULL, 0 };
	assert_int_equal(ly_authz_may_obtain_id(f->idx, &a, TD "/web", &ok, NULL), LY_OK);
	assert_true(ok);
	assert_int_equal(ly_authz_may_obtain_id(f->idx, &a, TD "/db", &ok, NULL), LY_OK);
	assert_false(ok); /* another agent's */
	assert_int_equal(ly_authz_may_obtain_id(f->idx, &a, TD "/web/", &ok, NULL), LY_OK);
	assert_false(ok); /* exact bytes */
	assert_int_equal(ly_authz_may_obtain_id(f->idx, &a, AGENT, &ok, NULL), LY_OK);
	assert_false(ok); /* its own ID is not a workload entry */

	assert_int_equal(ly_authz_may_use_entry(f->idx, &a, "e1", &ok, &e, NULL), LY_OK);
	assert_true(ok);
	assert_non_null(e);
	assert_string_equal(e->spiffe_id, TD "/web");
	assert_int_equal(ly_authz_may_use_entry(f->idx, &a, "e2", &ok, &e, NULL), LY_OK);
	assert_false(ok);
	assert_null(e);
	assert_int_equal(ly_authz_may_use_entry(f->idx, &a, "missing", &ok, &e, NULL), LY_OK);
	assert_false(ok);
	assert_int_equal(ly_authz_may_use_entry(f->idx, &a, NULL, &ok, &e, NULL), LY_OK);
	assert_false(ok);
}

static void
test_index_refuses_bad_input(void **state)
{
	struct fixture *f = *state;
	struct ly_authz_index *idx = NULL;
	struct ly_error err;

	add_workload(f, "same", TD "/a", AGENT);
	add_workload(f, "same", TD "/b", AGENT);
	assert_int_equal(ly_authz_index_new(f->entries.items, f->entries.n, &idx, &err), LY_E_INVALID);
	assert_null(idx);
	assert_non_null(strstr(err.msg, "duplicate"));

	/* An entry without a parent. */
	free(f->entries.items[1]->parent_id);
	f->entries.items[1]->parent_id = NULL;
	assert_int_equal(ly_authz_index_new(f->entries.items, f->entries.n, &idx, &err), LY_E_INVALID);
	assert_null(idx);

	/* An empty index is fine and authorizes nothing. */
	assert_int_equal(ly_authz_index_new(NULL, 0, &idx, NULL), LY_OK);
	struct ly_authz_agent a = { AGENT, NULL, 0 };
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	assert_int_equal(ly_authz_authorized(idx, &a, &set, NULL), LY_OK);
	assert_int_equal(set.n, 0);
	/* An agent without an ID is refused. */
	struct ly_authz_agent none = { "", NULL, 0 };
	assert_int_equal(ly_authz_authorized(idx, &none, &set, NULL), LY_E_INVALID);
	ly_authz_index_free(idx);
}

static void
test_index_find(void **state)
{
	struct fixture *f = *state;

	add_workload(f, "b", TD "/b", AGENT);
	add_workload(f, "a", TD "/a", AGENT);
	build(f);
	assert_int_equal(ly_authz_index_count(f->idx), 2);
	assert_non_null(ly_authz_index_find(f->idx, "a"));
	assert_non_null(ly_authz_index_find(f->idx, "b"));
	assert_null(ly_authz_index_find(f->idx, "c"));
}

/* ---- watch streams ---- */

#define U 24   /* entry IDs in the universe */
#define REVS 3 /* revisions each may have */

struct pool {
	struct ly_entry *e[U][REVS];
};

static void
pool_init(struct pool *p)
{
	char id[16];
	for (int i = 0; i < U; i++) {
		for (int r = 0; r < REVS; r++) {
			assert_int_equal(ly_entry_new(&p->e[i][r], NULL), LY_OK);
			snprintf(id, sizeof(id), "id-%02d", i);
			assert_int_equal(ly_entry_set_string(&p->e[i][r]->entry_id, id, NULL), LY_OK);
			p->e[i][r]->revision = r + 1;
		}
	}
}

static void
pool_free(struct pool *p)
{
	for (int i = 0; i < U; i++)
		for (int r = 0; r < REVS; r++)
			ly_entry_free(p->e[i][r]);
}

static int
id_index(const char *id)
{
	assert_true(strncmp(id, "id-", 3) == 0);
	return atoi(id + 3);
}

/* Applies an update to a state (state[i] = revision, 0 = absent). */
static void
apply(int state[U], const struct ly_authz_update *u)
{
	if (u->snapshot)
		memset(state, 0, U * sizeof(int));
	for (size_t i = 0; i < u->n_upserts; i++)
		state[id_index(u->upserts[i]->entry_id)] = (int)u->upserts[i]->revision;
	for (size_t i = 0; i < u->n_deleted; i++)
		state[id_index(u->deleted[i])] = 0;
}

static uint32_t
rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/*
 * Any message may be lost but the last: whatever earlier target the agent
 * holds, the newest update must take it to the current set.
 */
static void
test_watch_updates_survive_lost_messages(void **state)
{
	(void)state;
	struct pool p;
	struct ly_authz_watch *w = NULL;
	enum { STEPS = 400 };
	static int targets[STEPS][U];
	uint32_t seed = 0x2545f491u;
	size_t deltas = 0, snapshots = 0;

	pool_init(&p);
	assert_int_equal(ly_authz_watch_new(&w, NULL), LY_OK);
	for (int k = 0; k < STEPS; k++) {
		const struct ly_entry *items[U];
		struct ly_authz_set set = { items, 0 };
		struct ly_authz_update u;

		/* Mostly small changes from the previous target, sometimes big ones. */
		for (int i = 0; i < U; i++) {
			int prev = k > 0 ? targets[k - 1][i] : 0;
			uint32_t x = rnd(&seed) % 100;
			int cur = prev;
			if (k == 0 || x < 8)
				cur = (int)(rnd(&seed) % (REVS + 1));
			targets[k][i] = cur;
			if (cur > 0)
				items[set.n++] = p.e[i][cur - 1];
		}
		assert_int_equal(ly_authz_watch_next(w, &set, &u, NULL), LY_OK);
		if (k == 0)
			assert_true(u.snapshot);
		if (u.rebase)
			break;
		if (u.snapshot)
			snapshots++;
		else
			deltas++;
		/* From every earlier target (and from nothing) to this one. */
		for (int j = -1; j < k; j++) {
			int st[U] = { 0 };
			if (j >= 0)
				memcpy(st, targets[j], sizeof(st));
			if (j < 0 && !u.snapshot)
				continue; /* the first message always arrives */
			apply(st, &u);
			assert_memory_equal(st, targets[k], sizeof(st));
		}
	}
	assert_true(deltas > 0);
	ly_authz_watch_free(w);
	pool_free(&p);
}

/* An unchanged set says so, and its update still converges. */
static void
test_watch_unchanged_and_deltas(void **state)
{
	(void)state;
	struct pool p;
	struct ly_authz_watch *w = NULL;
	struct ly_authz_update u;
	const struct ly_entry *items[U];
	struct ly_authz_set set = { items, 0 };

	pool_init(&p);
	assert_int_equal(ly_authz_watch_new(&w, NULL), LY_OK);
	for (int i = 0; i < 10; i++)
		items[set.n++] = p.e[i][0];
	assert_int_equal(ly_authz_watch_next(w, &set, &u, NULL), LY_OK);
	assert_true(u.snapshot && u.changed);
	assert_int_equal(u.n_upserts, 10);

	assert_int_equal(ly_authz_watch_next(w, &set, &u, NULL), LY_OK);
	assert_false(u.changed);
	assert_false(u.snapshot);
	assert_int_equal(u.n_upserts + u.n_deleted, 0);

	/* Delete id-03: a delta with one deletion. */
	memmove(&items[3], &items[4], 6 * sizeof(items[0]));
	set.n = 9;
	assert_int_equal(ly_authz_watch_next(w, &set, &u, NULL), LY_OK);
	assert_true(u.changed);
	assert_false(u.snapshot);
	assert_int_equal(u.n_upserts, 0);
	assert_int_equal(u.n_deleted, 1);
	assert_string_equal(u.deleted[0], "id-03");

	/* Update id-05 (new revision): the deletion is carried again, plus the upsert. */
	items[4] = p.e[5][1];
	assert_int_equal(ly_authz_watch_next(w, &set, &u, NULL), LY_OK);
	assert_int_equal(u.n_deleted, 1);
	assert_int_equal(u.n_upserts, 1);
	assert_string_equal(u.upserts[0]->entry_id, "id-05");
	assert_int_equal(u.upserts[0]->revision, 2);
	assert_int_equal(ly_authz_watch_touched(w), 2);

	/* Everything goes: a delta would carry more than the (empty) set: a snapshot. */
	set.n = 0;
	assert_int_equal(ly_authz_watch_next(w, &set, &u, NULL), LY_OK);
	assert_true(u.snapshot);
	assert_int_equal(u.n_upserts, 0);
	assert_int_equal(u.n_deleted, 0);
	ly_authz_watch_free(w);
	pool_free(&p);
}

/* Churn through many IDs: touched stays bounded by asking for a rebase. */
static void
test_watch_rebase_bounds_memory(void **state)
{
	(void)state;
	struct ly_authz_watch *w = NULL;
	struct ly_authz_update u;
	struct ly_entry *e[2] = { NULL, NULL };
	char id[32];
	bool rebased = false;

	assert_int_equal(ly_authz_watch_new(&w, NULL), LY_OK);
	for (int k = 0; k < 1000 && !rebased; k++) {
		/* One entry at a time, each with a new ID: every step touches two IDs. */
		ly_entry_free(e[k % 2]);
		assert_int_equal(ly_entry_new(&e[k % 2], NULL), LY_OK);
		snprintf(id, sizeof(id), "churn-%06d", k);
		assert_int_equal(ly_entry_set_string(&e[k % 2]->entry_id, id, NULL), LY_OK);
		const struct ly_entry *items[1] = { e[k % 2] };
		struct ly_authz_set set = { items, 1 };
		assert_int_equal(ly_authz_watch_next(w, &set, &u, NULL), LY_OK);
		if (u.rebase) {
			assert_true(u.snapshot);
			assert_int_equal(u.n_upserts, 1);
			rebased = true;
		}
		assert_true(ly_authz_watch_touched(w) <= 2 * 1 + 256 + 2);
	}
	assert_true(rebased);
	ly_authz_watch_free(w);
	ly_entry_free(e[0]);
	ly_entry_free(e[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_direct_parent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alias_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alias_no_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alias_subset_rule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_node_entries_not_handed_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aliases_do_not_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transitive_one_level, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transitive_through_alias, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deleted_node_entry_removes_children, setup, teardown),
		cmocka_unit_test_setup_teardown(test_may_obtain_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_refuses_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_find, setup, teardown),
		cmocka_unit_test(test_watch_updates_survive_lost_messages),
		cmocka_unit_test(test_watch_unchanged_and_deltas),
		cmocka_unit_test(test_watch_rebase_bounds_memory),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
