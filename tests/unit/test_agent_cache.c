/*
 * test_agent_cache.c: the agent's cache (agent/cache.h): entitlement by
 * selectors, default-identity order, unique hints, snapshots and deltas,
 * SVIDs set/replaced/dropped/expired, change sets and which streams they
 * affect, JWT-SVID reuse until half-life, and the memory 10,000 SVIDs take.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent/cache.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/log.h"
#include "testutil_agent.h"

/*
 * Bytes of heap in use, from whichever allocator runs the test (a measure
 * that is right under each, not a bound that holds because it reads zero):
 * glibc's, through mallinfo2 (small chunks plus mmapped ones); ASan's,
 * which replaces malloc and answers mallinfo with zeros, through
 * __sanitizer_get_current_allocated_bytes; valgrind's, which replaces
 * malloc and answers mallinfo but not mallinfo2 (3.19). test_memory_10000
 * first checks that the measure sees a known allocation.
 */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_HEAP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_HEAP_ASAN 1
#endif
#endif

#ifdef TEST_HEAP_ASAN
size_t __sanitizer_get_current_allocated_bytes(void);
#elif defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static size_t
heap_in_use(void)
{
#ifdef TEST_HEAP_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	if (RUNNING_ON_VALGRIND) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
		struct mallinfo mi = mallinfo();
#pragma GCC diagnostic pop
		return (size_t)(unsigned int)mi.uordblks;
	}
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
#endif
}

/* Where test allocations escape to, so that the compiler keeps them. */
static void *volatile heap_sink;

#define ID_A "spiffe://example.org/ns/prod/sa/a"
#define ID_B "spiffe://example.org/ns/prod/sa/b"
#define ID_C "spiffe://example.org/ns/prod/sa/c"
#define NOW ((int64_t)TU_NOW)

struct fixture {
	struct tu_pki pki;
	struct ly_cache *c;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_pki_init(&f->pki);
	assert_int_equal(ly_cache_new(TA_TD, &f->c, NULL), LY_OK);
	ly_log_set_level(LY_LOG_ERROR);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	ly_cache_free(f->c);
	tu_pki_free(&f->pki);
	free(f);
	return 0;
}

static void
query(struct ly_cache *c, unsigned flags, struct ly_cache_identities *ids, ...)
{
	struct ly_selector *have = NULL;
	size_t m = 0;
	va_list ap;
	va_start(ap, ids);
	for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
		have = realloc(have, (m + 1) * sizeof(*have));
		assert_non_null(have);
		assert_int_equal(ly_selector_parse_str(s, &have[m], NULL), LY_OK);
		m++;
	}
	va_end(ap);
	assert_int_equal(ly_cache_query(c, have, m, flags, NOW, ids, NULL), LY_OK);
	ly_selectors_free(have, m);
}

static void
test_new_refuses_bad_trust_domain(void **state)
{
	(void)state;
	struct ly_cache *c = NULL;
	assert_int_equal(ly_cache_new("Example.org", &c, NULL), LY_E_INVALID);
	assert_null(c);
	assert_int_equal(ly_cache_new("", &c, NULL), LY_E_INVALID);
}

/* SPEC §1: a workload holding all of an entry's selectors is entitled to it, and only then. */
static void
test_entitlement(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[3] = {
		ta_entry("a", ID_A, 1, NULL, "unix:uid:1000", NULL),
		ta_entry("b", ID_B, 2, NULL, "unix:uid:1000", "unix:gid:50", NULL),
		ta_entry("c", ID_C, 3, NULL, "k8s:ns:prod", NULL),
	};
	ta_apply(f->c, true, 10, es, 3, NULL, 0, NULL);
	assert_int_equal(ly_cache_count(f->c), 3);
	assert_int_equal(ly_cache_revision(f->c), 10);

	struct ly_cache_identities ids;
	ly_cache_identities_init(&ids);
	query(f->c, 0, &ids, "unix:uid:1000", NULL);
	assert_int_equal(ids.n, 1);
	assert_int_equal(ids.n_entitled, 1);
	assert_string_equal(ids.v[0].entry->entry_id, "a");

	/* Order of the caller's selectors and duplicates in them do not matter. */
	query(f->c, 0, &ids, "unix:gid:50", "unix:uid:1000", "unix:gid:50", "unix:path:/bin/x", NULL);
	assert_int_equal(ids.n, 2);
	assert_string_equal(ids.v[0].entry->entry_id, "a");
	assert_string_equal(ids.v[1].entry->entry_id, "b");

	/* Only part of an entry's selectors: not entitled. */
	query(f->c, 0, &ids, "unix:gid:50", NULL);
	assert_int_equal(ids.n, 0);
	assert_int_equal(ids.n_entitled, 0);
	/* Close is not equal: exact byte comparison. */
	query(f->c, 0, &ids, "unix:uid:10000", "k8s:ns:pro", NULL);
	assert_int_equal(ids.n_entitled, 0);
	query(f->c, 0, &ids, NULL);
	assert_int_equal(ids.n_entitled, 0);

	/* X.509 queries list only identities with a valid SVID, but count all. */
	query(f->c, LY_CACHE_QUERY_X509, &ids, "unix:uid:1000", "unix:gid:50", NULL);
	assert_int_equal(ids.n, 0);
	assert_int_equal(ids.n_entitled, 2);
	ta_set_svid(f->c, &f->pki, "b", -60, 3600, NULL);
	query(f->c, LY_CACHE_QUERY_X509, &ids, "unix:uid:1000", "unix:gid:50", NULL);
	assert_int_equal(ids.n, 1);
	assert_string_equal(ids.v[0].entry->entry_id, "b");
	assert_true(ids.v[0].has_svid);
	assert_true(ids.v[0].leaf.len > 0 && ids.v[0].key.len > 0 && ids.v[0].intermediates.len > 0);

	/* Node entries never match a workload, even with matching selectors. */
	struct ly_entry *node = ta_entry("n", "spiffe://example.org/node", 0, NULL, "join_token:abc", NULL);
	node->node = true;
	ta_put(f->c, node, NULL);
	assert_int_equal(ly_cache_count(f->c), 4);
	query(f->c, 0, &ids, "join_token:abc", NULL);
	assert_int_equal(ids.n_entitled, 0);
	ly_cache_identities_cleanup(&ids);
}

static void
test_query_limit(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *e = ta_entry("a", ID_A, 1, NULL, "unix:uid:1000", NULL);
	ta_put(f->c, e, NULL);
	size_t m = LY_WORKLOAD_SELECTORS_MAX + 1;
	struct ly_selector *have = calloc(m, sizeof(*have));
	assert_non_null(have);
	for (size_t i = 0; i < m; i++) {
		char s[64];
		snprintf(s, sizeof(s), "unix:uid:%zu", i + 1000);
		assert_int_equal(ly_selector_parse_str(s, &have[i], NULL), LY_OK);
	}
	struct ly_cache_identities ids;
	ly_cache_identities_init(&ids);
	assert_int_equal(ly_cache_query(f->c, have, m, 0, NOW, &ids, NULL), LY_E_LIMIT);
	assert_int_equal(ly_cache_query(f->c, have, m - 1, 0, NOW, &ids, NULL), LY_OK);
	assert_int_equal(ids.n, 1);
	ly_cache_identities_cleanup(&ids);
	ly_selectors_free(have, m);
}

/* SPEC §3: the first is the default: oldest entry first, then entry_id; stable. */
static void
test_default_order(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[4] = {
		ta_entry("zz", ID_A, 300, NULL, "unix:uid:1", NULL),
		ta_entry("m2", ID_B, 100, NULL, "unix:uid:1", NULL),
		ta_entry("m1", ID_C, 100, NULL, "unix:uid:1", NULL),
		ta_entry("aa", "spiffe://example.org/d", 200, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, true, 1, es, 4, NULL, 0, NULL);
	struct ly_cache_identities ids;
	ly_cache_identities_init(&ids);
	const char *want[4] = { "m1", "m2", "aa", "zz" };
	for (int round = 0; round < 3; round++) {
		query(f->c, 0, &ids, "unix:uid:1", NULL);
		assert_int_equal(ids.n, 4);
		for (size_t i = 0; i < 4; i++)
			assert_string_equal(ids.v[i].entry->entry_id, want[i]);
		/* Re-inserting in another order changes nothing. */
		ta_del(f->c, "m1", NULL);
		ta_put(f->c, ta_entry("m1", ID_C, 100, NULL, "unix:uid:1", NULL), NULL);
	}
	ly_cache_identities_cleanup(&ids);
}

/* SPEC §3: hints unique in a response: the first keeps it, later duplicates are left out. */
static void
test_hints_unique(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[4] = {
		ta_entry("a", ID_A, 1, "web", "unix:uid:1", NULL),
		ta_entry("b", ID_B, 2, "web", "unix:uid:1", NULL),
		ta_entry("c", ID_C, 3, NULL, "unix:uid:1", NULL),
		ta_entry("d", "spiffe://example.org/d", 4, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, true, 1, es, 4, NULL, 0, NULL);
	struct ly_cache_identities ids;
	ly_cache_identities_init(&ids);
	query(f->c, 0, &ids, "unix:uid:1", NULL);
	assert_int_equal(ids.n, 3);
	assert_int_equal(ids.n_hint_duplicates, 1);
	assert_int_equal(ids.n_entitled, 4);
	assert_string_equal(ids.v[0].entry->entry_id, "a");
	/* No hint is not a duplicate hint. */
	assert_string_equal(ids.v[1].entry->entry_id, "c");
	assert_string_equal(ids.v[2].entry->entry_id, "d");

	/* LY_CACHE_QUERY_ALL_HINTS keeps "b" (for views beside a response: fedset.h), counted all the same. */
	query(f->c, LY_CACHE_QUERY_ALL_HINTS, &ids, "unix:uid:1", NULL);
	assert_int_equal(ids.n, 4);
	assert_int_equal(ids.n_hint_duplicates, 1);
	assert_string_equal(ids.v[1].entry->entry_id, "b");

	/* Among identities with an SVID: "b" is listed while "a" has none. */
	ta_set_svid(f->c, &f->pki, "b", -10, 3600, NULL);
	query(f->c, LY_CACHE_QUERY_X509, &ids, "unix:uid:1", NULL);
	assert_int_equal(ids.n, 1);
	assert_string_equal(ids.v[0].entry->entry_id, "b");
	assert_int_equal(ids.n_hint_duplicates, 0);
	ly_cache_identities_cleanup(&ids);
}

/* SPEC §4: deleting an entry drops its SVID at once, and reports it. */
static void
test_delete_drops_svid_and_reports(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[2] = {
		ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL),
		ta_entry("b", ID_B, 2, NULL, "unix:uid:2", NULL),
	};
	ta_apply(f->c, true, 1, es, 2, NULL, 0, NULL);
	ta_set_svid(f->c, &f->pki, "a", -10, 3600, NULL);
	ta_set_svid(f->c, &f->pki, "b", -10, 3600, NULL);
	assert_int_equal(ly_cache_svid_count(f->c), 2);
	uint64_t gen = ly_cache_generation(f->c);

	struct ly_cache_changes cs;
	ly_cache_changes_init(&cs);
	ta_del(f->c, "a", &cs);
	struct ly_cache_item it;
	assert_false(ly_cache_get(f->c, "a", &it));
	assert_int_equal(ly_cache_svid_count(f->c), 1);
	assert_int_equal(ly_cache_count(f->c), 1);
	assert_int_equal(ly_cache_generation(f->c), gen + 1);
	assert_int_equal(cs.generation, gen + 1);
	assert_int_equal(cs.n, 1);
	assert_int_equal(cs.v[0].kind, LY_CACHE_DELETED);
	assert_string_equal(cs.v[0].entry_id, "a");
	assert_string_equal(cs.v[0].spiffe_id, ID_A);
	assert_int_equal(cs.v[0].n_old_selectors, 1);

	size_t n1, n2, n3;
	struct ly_selector *s1 = ta_selectors(&n1, "unix:uid:1", "unix:gid:9", NULL);
	struct ly_selector *s2 = ta_selectors(&n2, "unix:uid:2", NULL);
	struct ly_selector *s3 = ta_selectors(&n3, "unix:uid:3", NULL);
	assert_true(ly_cache_changes_affect(f->c, &cs, s1, n1));
	assert_false(ly_cache_changes_affect(f->c, &cs, s2, n2));
	assert_false(ly_cache_changes_affect(f->c, &cs, s3, n3));

	/* The stream of uid 1 now has nothing: PERMISSION_DENIED. */
	struct ly_cache_identities ids;
	ly_cache_identities_init(&ids);
	assert_int_equal(ly_cache_query(f->c, s1, n1, LY_CACHE_QUERY_X509, NOW, &ids, NULL), LY_OK);
	assert_int_equal(ids.n_entitled, 0);
	ly_cache_identities_cleanup(&ids);

	/* Deleting an absent entry: no change, no generation bump. */
	ly_cache_changes_cleanup(&cs);
	ta_del(f->c, "a", &cs);
	assert_true(ly_cache_changes_empty(&cs));
	assert_int_equal(ly_cache_generation(f->c), gen + 1);

	/* A new SVID is a change for its entry's holders only. */
	ta_set_svid(f->c, &f->pki, "b", -10, 3600, &cs);
	assert_int_equal(cs.n, 1);
	assert_int_equal(cs.v[0].kind, LY_CACHE_SVID_SET);
	assert_true(ly_cache_changes_affect(f->c, &cs, s2, n2));
	assert_false(ly_cache_changes_affect(f->c, &cs, s1, n1));
	ly_cache_changes_cleanup(&cs);
	ly_selectors_free(s1, n1);
	ly_selectors_free(s2, n2);
	ly_selectors_free(s3, n3);
}

/* A snapshot is the whole set: what it lacks is deleted. */
static void
test_snapshot_replaces(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[3] = {
		ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL),
		ta_entry("b", ID_B, 2, NULL, "unix:uid:2", NULL),
		ta_entry("c", ID_C, 3, NULL, "unix:uid:3", NULL),
	};
	ta_apply(f->c, true, 5, es, 3, NULL, 0, NULL);
	ta_set_svid(f->c, &f->pki, "b", -10, 3600, NULL);

	struct ly_cache_changes cs;
	ly_cache_changes_init(&cs);
	struct ly_entry *snap[2] = {
		ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL),
		ta_entry("d", "spiffe://example.org/d", 4, NULL, "unix:uid:4", NULL),
	};
	ta_apply(f->c, true, 7, snap, 2, NULL, 0, &cs);
	assert_int_equal(ly_cache_count(f->c), 2);
	assert_int_equal(ly_cache_svid_count(f->c), 0);
	assert_int_equal(ly_cache_revision(f->c), 7);
	struct ly_cache_item it;
	assert_true(ly_cache_get(f->c, "a", &it));
	assert_true(ly_cache_get(f->c, "d", &it));
	assert_false(ly_cache_get(f->c, "b", &it));
	/* d created (needs an SVID), b and c deleted; a unchanged. */
	size_t created = 0, deleted = 0;
	for (size_t i = 0; i < cs.n; i++) {
		if (cs.v[i].kind == LY_CACHE_CREATED) {
			created++;
			assert_string_equal(cs.v[i].entry_id, "d");
			assert_true(cs.v[i].needs_svid);
		}
		if (cs.v[i].kind == LY_CACHE_DELETED)
			deleted++;
	}
	assert_int_equal(created, 1);
	assert_int_equal(deleted, 2);
	assert_int_equal(cs.n, 3);
	ly_cache_changes_cleanup(&cs);

	/* An empty snapshot deletes everything. */
	ta_apply(f->c, true, 8, NULL, 0, NULL, 0, NULL);
	assert_int_equal(ly_cache_count(f->c), 0);
}

static void
test_update_rules(void **state)
{
	struct fixture *f = *state;
	struct ly_cache_changes cs;
	struct ly_cache_item it;
	ly_cache_changes_init(&cs);

	struct ly_entry *e = ta_entry("a", ID_A, 1, "h", "unix:uid:1", NULL);
	e->revision = 5;
	ta_put(f->c, e, NULL);
	ta_set_svid(f->c, &f->pki, "a", -10, 3600, NULL);
	uint64_t gen = ly_cache_generation(f->c);

	/* Same content, newer revision: no change. */
	e = ta_entry("a", ID_A, 1, "h", "unix:uid:1", NULL);
	e->revision = 6;
	ta_put(f->c, e, &cs);
	assert_true(ly_cache_changes_empty(&cs));
	assert_int_equal(ly_cache_generation(f->c), gen);
	assert_true(ly_cache_get(f->c, "a", &it));
	assert_int_equal(it.entry->revision, 6);

	/* Older than what we hold: ignored. */
	e = ta_entry("a", ID_B, 1, "h", "unix:uid:1", NULL);
	e->revision = 4;
	ta_put(f->c, e, &cs);
	assert_true(ly_cache_changes_empty(&cs));
	assert_true(ly_cache_get(f->c, "a", &it));
	assert_string_equal(it.entry->spiffe_id, ID_A);

	/* DNS names changed: SVID kept, stale, to be re-issued. */
	e = ta_entry("a", ID_A, 1, "h", "unix:uid:1", NULL);
	e->revision = 7;
	assert_int_equal(ly_entry_add_dns_name(e, "web.example.org", NULL), LY_OK);
	ta_put(f->c, e, &cs);
	assert_int_equal(cs.n, 1);
	assert_int_equal(cs.v[0].kind, LY_CACHE_UPDATED);
	assert_true(cs.v[0].needs_svid);
	assert_int_equal(cs.v[0].n_old_selectors, 0);
	assert_true(ly_cache_get(f->c, "a", &it));
	assert_true(it.has_svid);
	assert_true(it.stale);
	ly_cache_changes_cleanup(&cs);

	/* SPIFFE ID changed: the SVID goes at once. */
	e = ta_entry("a", ID_B, 1, "h", "unix:uid:1", "unix:gid:1", NULL);
	e->revision = 8;
	assert_int_equal(ly_entry_add_dns_name(e, "web.example.org", NULL), LY_OK);
	ta_put(f->c, e, &cs);
	assert_int_equal(cs.n, 1);
	assert_true(cs.v[0].needs_svid);
	assert_string_equal(cs.v[0].spiffe_id, ID_B);
	assert_int_equal(cs.v[0].n_old_selectors, 1);
	assert_true(ly_cache_get(f->c, "a", &it));
	assert_false(it.has_svid);
	assert_int_equal(ly_cache_svid_count(f->c), 0);

	/* Selectors changed: the old holders and the new ones are affected, no one else. */
	size_t n1, n2, n3;
	struct ly_selector *old_holder = ta_selectors(&n1, "unix:uid:1", NULL);
	struct ly_selector *new_holder = ta_selectors(&n2, "unix:uid:1", "unix:gid:1", NULL);
	struct ly_selector *other = ta_selectors(&n3, "unix:gid:1", NULL);
	assert_true(ly_cache_changes_affect(f->c, &cs, old_holder, n1));
	assert_true(ly_cache_changes_affect(f->c, &cs, new_holder, n2));
	assert_false(ly_cache_changes_affect(f->c, &cs, other, n3));
	ly_cache_changes_cleanup(&cs);

	/* A bundle change affects everyone. */
	struct ly_bundle_set *set = NULL;
	struct ly_bundle *b = NULL;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	assert_int_equal(ly_bundle_new(TA_TD, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, f->pki.root_der.data, f->pki.root_der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, b, NULL), LY_OK);
	assert_int_equal(ly_cache_set_bundles(f->c, set, &cs, NULL), LY_OK);
	assert_true(cs.bundles_changed);
	assert_true(ly_cache_changes_affect(f->c, &cs, other, n3));
	assert_non_null(ly_cache_bundle(f->c));
	ly_cache_changes_cleanup(&cs);
	/* The same bundles again: nothing changes. */
	struct ly_bundle_set *same = NULL;
	assert_int_equal(ly_bundle_set_new(&same, NULL), LY_OK);
	assert_int_equal(ly_bundle_clone(ly_cache_bundle(f->c), &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(same, b, NULL), LY_OK);
	gen = ly_cache_generation(f->c);
	assert_int_equal(ly_cache_set_bundles(f->c, same, &cs, NULL), LY_OK);
	assert_false(cs.bundles_changed);
	assert_int_equal(ly_cache_generation(f->c), gen);
	ly_cache_changes_cleanup(&cs);

	/* Becoming a node entry: out of every workload's view, no SVID. */
	ta_set_svid(f->c, &f->pki, "a", -10, 3600, NULL);
	e = ta_entry("a", "spiffe://example.org/node", 1, NULL, "join_token:abc", NULL);
	e->node = true;
	e->revision = 9;
	ta_put(f->c, e, &cs);
	assert_true(ly_cache_get(f->c, "a", &it));
	assert_false(it.has_svid);
	assert_false(cs.v[0].needs_svid);
	ly_cache_changes_cleanup(&cs);

	ly_selectors_free(old_holder, n1);
	ly_selectors_free(new_holder, n2);
	ly_selectors_free(other, n3);
}

/* Entries that break a rule are left out and counted; the rest apply. */
static void
test_rejected_entries(void **state)
{
	struct fixture *f = *state;
	struct ly_cache_changes cs;
	ly_cache_changes_init(&cs);
	struct ly_entry *es[4] = {
		ta_entry("ok", ID_A, 1, NULL, "unix:uid:1", NULL),
		ta_entry("foreign", "spiffe://other.org/x", 1, NULL, "unix:uid:1", NULL),
		ta_entry("nosel", ID_B, 1, NULL, NULL),
		ta_entry("bad id!", ID_C, 1, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, false, 1, es, 4, NULL, 0, &cs);
	assert_int_equal(cs.n_rejected, 3);
	assert_int_equal(ly_cache_count(f->c), 1);
	struct ly_cache_item it;
	assert_true(ly_cache_get(f->c, "ok", &it));
	assert_false(ly_cache_get(f->c, "foreign", &it));
	ly_cache_changes_cleanup(&cs);
}

static void
test_set_svid_refusals(void **state)
{
	struct fixture *f = *state;
	struct ta_svid s;
	struct ly_error err;
	ta_put(f->c, ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL), NULL);
	struct ly_entry *node = ta_entry("n", "spiffe://example.org/node", 1, NULL, "join_token:abc", NULL);
	node->node = true;
	ta_put(f->c, node, NULL);

	ta_svid_make(&f->pki, f->pki.leaf_key, ID_A, -10, 3600, &s);
	/* Entry deleted while the SVID was being issued. */
	assert_int_equal(ly_cache_set_svid(f->c, "gone", ID_A, &s.chain, &s.key, s.nb, s.na, 0, NULL, &err),
	    LY_E_NOT_FOUND);
	assert_int_equal(ly_cache_set_svid(f->c, "n", "spiffe://example.org/node", &s.chain, &s.key, s.nb, s.na, 0,
	    NULL, &err), LY_E_NOT_FOUND);
	/* The entry's SPIFFE ID changed meanwhile. */
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_B, &s.chain, &s.key, s.nb, s.na, 0, NULL, &err),
	    LY_E_INVALID);
	/* Empty window. */
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &s.key, s.na, s.na, 0, NULL, &err),
	    LY_E_INVALID);
	/* A chain with a byte too many. */
	assert_int_equal(ly_buf_append(&s.chain, "x", 1, 1 << 20, NULL), LY_OK);
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &s.key, s.nb, s.na, 0, NULL, &err),
	    LY_E_INVALID);
	s.chain.len--;
	/* A key too big, and none. */
	struct ly_buf big = LY_BUF_INIT;
	uint8_t zero[LY_KEY_DER_MAX + 1];
	memset(zero, 0, sizeof(zero));
	assert_int_equal(ly_buf_set(&big, zero, sizeof(zero), NULL), LY_OK);
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &big, s.nb, s.na, 0, NULL, &err), LY_E_LIMIT);
	ly_buf_free(&big);
	struct ly_buf none = LY_BUF_INIT;
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &none, s.nb, s.na, 0, NULL, &err),
	    LY_E_INVALID);
	/* Failures leave the buffers with the caller. */
	assert_non_null(s.chain.data);
	assert_non_null(s.key.data);
	assert_int_equal(ly_cache_svid_count(f->c), 0);
	/* And success takes them. */
	/* A renewal time outside the window. */
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &s.key, s.nb, s.na, s.na * 1000 + 1, NULL, &err),
	    LY_E_INVALID);
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &s.key, s.nb, s.na, s.nb * 1000 - 1, NULL, &err),
	    LY_E_INVALID);
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &s.key, s.nb, s.na, s.nb * 1000 + 123, NULL,
	    &err), LY_OK);
	assert_null(s.chain.data);
	assert_null(s.key.data);
	struct ly_cache_item it;
	assert_true(ly_cache_get(f->c, "a", &it));
	assert_int_equal(it.renew_at_ms, s.nb * 1000 + 123);
	assert_int_equal(it.not_before, TU_NOW - 10);
	ta_svid_free(&s);
}

/* A replaced SVID is gone (new key, new leaf); intermediates are shared. */
static void
test_replace_and_intern(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[2] = {
		ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL),
		ta_entry("b", ID_B, 1, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, true, 1, es, 2, NULL, 0, NULL);
	ta_set_svid(f->c, &f->pki, "a", -10, 3600, NULL);
	ta_set_svid(f->c, &f->pki, "b", -10, 3600, NULL);
	struct ly_cache_item a, b;
	assert_true(ly_cache_get(f->c, "a", &a));
	assert_true(ly_cache_get(f->c, "b", &b));
	assert_ptr_equal(a.intermediates.der, b.intermediates.der);
	/* The whole chain is leaf + intermediates, as handed in. */
	struct ly_der_span spans[4];
	size_t count;
	assert_int_equal(ly_der_split(a.intermediates.der, a.intermediates.len, 4, 1 << 20, spans, &count, NULL),
	    LY_OK);
	assert_int_equal(count, 1);

	EVP_PKEY *k2 = tu_key(LY_KEY_EC_P256);
	struct ta_svid s;
	ta_svid_make(&f->pki, k2, ID_A, 0, 7200, &s);
	struct ly_buf want_key = LY_BUF_INIT;
	assert_int_equal(ly_buf_set(&want_key, s.key.data, s.key.len, NULL), LY_OK);
	assert_int_equal(ly_cache_set_svid(f->c, "a", ID_A, &s.chain, &s.key, s.nb, s.na, s.nb * 1000, NULL, NULL),
	    LY_OK);
	assert_true(ly_cache_get(f->c, "a", &a));
	assert_int_equal(a.key.len, want_key.len);
	assert_memory_equal(a.key.der, want_key.data, want_key.len);
	assert_int_equal(a.not_after, TU_NOW + 7200);
	assert_int_equal(ly_cache_svid_count(f->c), 2);
	ly_buf_free_secret(&want_key);
	ta_svid_free(&s);
	EVP_PKEY_free(k2);

	assert_true(ly_cache_drop_svid(f->c, "a", NULL));
	assert_false(ly_cache_drop_svid(f->c, "a", NULL));
	assert_int_equal(ly_cache_svid_count(f->c), 1);
}

/* SPEC §3: a client never sees an expired SVID. */
static void
test_expire(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[2] = {
		ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL),
		ta_entry("b", ID_B, 2, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, true, 1, es, 2, NULL, 0, NULL);
	ta_set_svid(f->c, &f->pki, "a", -100, 100, NULL);
	ta_set_svid(f->c, &f->pki, "b", -100, 1000, NULL);
	assert_int_equal(ly_cache_next_expiry(f->c), TU_NOW + 100);

	struct ly_cache_identities ids;
	ly_cache_identities_init(&ids);
	size_t n;
	struct ly_selector *have = ta_selectors(&n, "unix:uid:1", NULL);
	/* Past a's not_after, before expire() runs: the query leaves it out already. */
	assert_int_equal(ly_cache_query(f->c, have, n, LY_CACHE_QUERY_X509, NOW + 100, &ids, NULL), LY_OK);
	assert_int_equal(ids.n, 1);
	assert_string_equal(ids.v[0].entry->entry_id, "b");
	/* Not yet valid is left out too. */
	assert_int_equal(ly_cache_query(f->c, have, n, LY_CACHE_QUERY_X509, NOW - 101, &ids, NULL), LY_OK);
	assert_int_equal(ids.n, 0);

	struct ly_cache_changes cs;
	ly_cache_changes_init(&cs);
	assert_int_equal(ly_cache_expire(f->c, NOW + 99, &cs), 0);
	assert_true(ly_cache_changes_empty(&cs));
	assert_int_equal(ly_cache_expire(f->c, NOW + 100, &cs), 1);
	assert_int_equal(cs.n, 1);
	assert_int_equal(cs.v[0].kind, LY_CACHE_SVID_DROPPED);
	assert_true(cs.v[0].needs_svid);
	assert_int_equal(ly_cache_svid_count(f->c), 1);
	assert_int_equal(ly_cache_next_expiry(f->c), TU_NOW + 1000);
	ly_cache_changes_cleanup(&cs);
	ly_cache_identities_cleanup(&ids);
	ly_selectors_free(have, n);
}

static bool
keep_none_but_b(const struct ly_cache_item *it, void *arg)
{
	(*(int *)arg)++;
	return strcmp(it->entry->entry_id, "b") == 0;
}

static void
test_filter(void **state)
{
	struct fixture *f = *state;
	struct ly_entry *es[3] = {
		ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL),
		ta_entry("b", ID_B, 2, NULL, "unix:uid:1", NULL),
		ta_entry("c", ID_C, 2, NULL, "unix:uid:1", NULL),
	};
	ta_apply(f->c, true, 1, es, 3, NULL, 0, NULL);
	ta_set_svid(f->c, &f->pki, "a", -100, 100, NULL);
	ta_set_svid(f->c, &f->pki, "b", -100, 100, NULL);
	int calls = 0;
	struct ly_cache_changes cs;
	ly_cache_changes_init(&cs);
	assert_int_equal(ly_cache_filter_svids(f->c, keep_none_but_b, &calls, &cs), 1);
	assert_int_equal(calls, 2); /* only entries with an SVID are asked about */
	assert_int_equal(cs.n, 1);
	assert_string_equal(cs.v[0].entry_id, "a");
	ly_cache_changes_cleanup(&cs);
}

/* JWT-SVIDs: keyed by (SPIFFE ID, audience set), reused until half their lifetime. */
static void
test_jwt_cache(void **state)
{
	struct fixture *f = *state;
	ta_put(f->c, ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL), NULL);
	const char *aud[2] = { "svc-b", "svc-a" };
	const char *aud_sorted_dup[3] = { "svc-a", "svc-b", "svc-a" };
	const char *aud_one[1] = { "svc-a" };
	/* One audience that a delimiter-joined key would confuse with the set above. */
	const char *aud_tricky[1] = { "svc-a\nsvc-b" };

	assert_null(ly_cache_jwt_get(f->c, ID_A, aud, 2, NOW));
	assert_int_equal(ly_cache_jwt_put(f->c, "a", ID_A, aud, 2, "tok1", NOW, NOW + 300, NULL), LY_OK);
	assert_string_equal(ly_cache_jwt_get(f->c, ID_A, aud, 2, NOW), "tok1");
	assert_string_equal(ly_cache_jwt_get(f->c, ID_A, aud_sorted_dup, 3, NOW + 149), "tok1");
	/* Half the lifetime: a new one is needed. */
	assert_null(ly_cache_jwt_get(f->c, ID_A, aud, 2, NOW + 150));
	assert_null(ly_cache_jwt_get(f->c, ID_A, aud_one, 1, NOW));
	assert_null(ly_cache_jwt_get(f->c, ID_A, aud_tricky, 1, NOW));
	assert_null(ly_cache_jwt_get(f->c, ID_B, aud, 2, NOW));
	assert_null(ly_cache_jwt_get(f->c, ID_A, aud, 0, NOW));

	/* Replacing. */
	assert_int_equal(ly_cache_jwt_put(f->c, "a", ID_A, aud_sorted_dup, 3, "tok2", NOW + 150, NOW + 450, NULL),
	    LY_OK);
	assert_int_equal(ly_cache_jwt_count(f->c), 1);
	assert_string_equal(ly_cache_jwt_get(f->c, ID_A, aud, 2, NOW + 200), "tok2");

	/* Refusals. */
	assert_int_equal(ly_cache_jwt_put(f->c, "zz", ID_A, aud, 2, "t", NOW, NOW + 1, NULL), LY_E_NOT_FOUND);
	assert_int_equal(ly_cache_jwt_put(f->c, "a", ID_A, aud, 0, "t", NOW, NOW + 1, NULL), LY_E_INVALID);
	assert_int_equal(ly_cache_jwt_put(f->c, "a", ID_A, aud, LY_JWT_AUDIENCES_MAX + 1, "t", NOW, NOW + 1, NULL),
	    LY_E_LIMIT);
	assert_int_equal(ly_cache_jwt_put(f->c, "a", ID_A, aud, 2, "t", NOW, NOW, NULL), LY_E_INVALID);

	/* Deleting the entry drops its tokens. */
	ta_del(f->c, "a", NULL);
	assert_int_equal(ly_cache_jwt_count(f->c), 0);
	assert_null(ly_cache_jwt_get(f->c, ID_A, aud, 2, NOW + 200));

	/* At the cap, old tokens make room; the count never passes it. */
	ta_put(f->c, ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL), NULL);
	for (int i = 0; i < LY_AGENT_JWT_CACHE_MAX + 10; i++) {
		char a[32];
		snprintf(a, sizeof(a), "aud-%d", i);
		const char *one[1] = { a };
		assert_int_equal(ly_cache_jwt_put(f->c, "a", ID_A, one, 1, "t", NOW + i, NOW + i + 100000, NULL),
		    LY_OK);
	}
	assert_int_equal(ly_cache_jwt_count(f->c), LY_AGENT_JWT_CACHE_MAX);
	const char *first[1] = { "aud-0" };
	char lastname[32];
	snprintf(lastname, sizeof(lastname), "aud-%d", LY_AGENT_JWT_CACHE_MAX + 9);
	const char *last[1] = { lastname };
	assert_null(ly_cache_jwt_get(f->c, ID_A, first, 1, NOW + 5000));
	assert_non_null(ly_cache_jwt_get(f->c, ID_A, last, 1, NOW + 5000));

	/* A JWT-SVID TTL change drops the entry's tokens too. */
	struct ly_entry *e = ta_entry("a", ID_A, 1, NULL, "unix:uid:1", NULL);
	e->jwt_svid_ttl = 60;
	e->revision = 2;
	ta_put(f->c, e, NULL);
	assert_int_equal(ly_cache_jwt_count(f->c), 0);
}

static void
test_apply_limit(void **state)
{
	struct fixture *f = *state;
	struct ly_cache_update u;
	memset(&u, 0, sizeof(u));
	u.snapshot = true;
	u.n_entries = LY_AGENT_ENTRIES_MAX + 1;
	struct ly_entry **es = calloc(u.n_entries, sizeof(*es));
	assert_non_null(es);
	u.entries = es;
	assert_int_equal(ly_cache_apply(f->c, &u, NULL, NULL), LY_E_LIMIT);
	free(es);
}

/*
 * Memory: 10,000 entries, each with an X.509-SVID (leaf + intermediate
 * DER, PKCS#8 P-256 key), counted in heap bytes in use (heap_in_use).
 */
static void
test_memory_10000(void **state)
{
	struct fixture *f = *state;
	enum { N = 10000, PROBE_SMALL = 100 };
	struct ta_svid s;
	ta_svid_make(&f->pki, f->pki.leaf_key, ID_A, -10, 3600, &s);

	/* The measure sees what is allocated: 1 MiB (mmapped by glibc) and 100 small blocks. */
	size_t h0 = heap_in_use();
	void *big = malloc(1 << 20), *small[PROBE_SMALL];
	assert_non_null(big);
	heap_sink = big;
	for (int i = 0; i < PROBE_SMALL; i++) {
		small[i] = malloc(64);
		assert_non_null(small[i]);
		heap_sink = small[i];
	}
	size_t h1 = heap_in_use();
	printf("heap measure: %zu B seen for %d B allocated\n", h1 - h0, (1 << 20) + PROBE_SMALL * 64);
	assert_true(h1 >= h0 + (1 << 20) + PROBE_SMALL * 64);
	assert_true(h1 <= h0 + (1 << 20) + PROBE_SMALL * 64 + 64 * 1024);
	for (int i = 0; i < PROBE_SMALL; i++)
		free(small[i]);
	free(big);

	size_t start = heap_in_use();
	struct ly_entry **es = calloc(N, sizeof(*es));
	assert_non_null(es);
	char id[64], sid[128], sel[64];
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof(id), "%08x-4b1e-4c2a-9d3f-%012x", i, i);
		snprintf(sid, sizeof(sid), "spiffe://example.org/ns/prod/sa/workload-%d", i);
		snprintf(sel, sizeof(sel), "unix:uid:%d", 1000 + i);
		es[i] = ta_entry(id, sid, i, NULL, sel, "unix:gid:1000", NULL);
	}
	size_t before = heap_in_use();
	struct timespec t0, t1, t2;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct ly_cache_update u;
	memset(&u, 0, sizeof(u));
	u.snapshot = true;
	u.entries = es;
	u.n_entries = N;
	assert_int_equal(ly_cache_apply(f->c, &u, NULL, NULL), LY_OK);
	size_t mid = heap_in_use();
	for (int i = 0; i < N; i++) {
		struct ly_buf chain = LY_BUF_INIT, key = LY_BUF_INIT;
		assert_int_equal(ly_buf_set(&chain, s.chain.data, s.chain.len, NULL), LY_OK);
		assert_int_equal(ly_buf_set(&key, s.key.data, s.key.len, NULL), LY_OK);
		snprintf(id, sizeof(id), "%08x-4b1e-4c2a-9d3f-%012x", i, i);
		snprintf(sid, sizeof(sid), "spiffe://example.org/ns/prod/sa/workload-%d", i);
		assert_int_equal(ly_cache_set_svid(f->c, id, sid, &chain, &key, s.nb, s.na, s.nb * 1000, NULL, NULL),
		    LY_OK);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	size_t after = heap_in_use();
	/* One query among 10,000 entries goes through the selector index. */
	size_t n;
	struct ly_selector *have = ta_selectors(&n, "unix:uid:5000", "unix:gid:1000", NULL);
	struct ly_cache_identities ids;
	ly_cache_identities_init(&ids);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(ly_cache_query(f->c, have, n, LY_CACHE_QUERY_X509, NOW, &ids, NULL), LY_OK);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	assert_int_equal(ids.n, 1);
	ly_cache_identities_cleanup(&ids);
	ly_selectors_free(have, n);

	assert_true(start <= before && before <= mid && mid <= after);
	size_t objects = before - start;
	size_t entries = mid - before;
	size_t svids = after - mid;
	size_t total = after - start;
	double load_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	double query_us = ((double)(t2.tv_sec - t1.tv_sec) * 1e9 + (double)(t2.tv_nsec - t1.tv_nsec)) / 1e3 / 1000;
	printf("cache memory, %d entries with X.509-SVIDs (chain %zu B + key %zu B as handed in):\n"
	       "  entry objects (struct ly_entry, 2 selectors): %zu B (%zu B/entry)\n"
	       "  cache structures (records, indexes): %zu B (%zu B/entry)\n"
	       "  SVIDs: %zu B (%zu B/SVID; intermediates interned)\n"
	       "  total %zu B = %.2f MiB (%zu B/SVID); load %.1f ms; query %.2f us\n",
	    N, s.chain.len, s.key.len, objects, objects / N, entries, entries / N, svids, svids / N, total,
	    (double)total / (1024.0 * 1024.0), total / N, load_ms, query_us);
	/*
	 * The entries' own strings were allocated before `before`; the SVIDs' DER must stay near its size
	 * (intermediates interned), and the measure saw them: each SVID keeps at least its key.
	 */
	assert_true(svids / N < 900);
	assert_true(svids / N >= s.key.len);
	free(es);
	ta_svid_free(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_refuses_bad_trust_domain),
		cmocka_unit_test_setup_teardown(test_entitlement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hints_unique, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_drops_svid_and_reports, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejected_entries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_svid_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replace_and_intern, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire, setup, teardown),
		cmocka_unit_test_setup_teardown(test_filter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_cache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apply_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_10000, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
