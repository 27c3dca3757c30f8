/*
 * test_agent_fedset.c: which bundles one Workload API caller may see
 * (agent/fedset.h): our own always, a federated one only when an entry of
 * the caller's identities federates with its trust domain; and the two
 * replacements sync makes (our bundle changed, the federated ones
 * changed), each keeping the other side whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/cache.h"
#include "agent/fedset.h"
#include "lib/bundle.h"
#include "lib/log.h"
#include "testutil_agent.h"

/* A bundle for `td` with one X.509 authority (a fresh self-signed CA) and sequence `seq`. */
static struct ly_bundle *
mk_bundle(const char *td, uint64_t seq)
{
	struct ly_bundle *b = NULL;
	char id[300];
	struct ly_buf der = LY_BUF_INIT;
	(void)snprintf(id, sizeof(id), "spiffe://%s", td);
	EVP_PKEY *k = tu_key(LY_KEY_EC_P256);
	struct tu_spec s = tu_ca_spec(id);
	X509 *ca = tu_make(&s, k, NULL, NULL);
	tu_der(ca, &der);
	assert_int_equal(ly_bundle_new(td, &b, NULL), LY_OK);
	assert_int_equal(ly_bundle_add_x509_authority(b, der.data, der.len, NULL), LY_OK);
	assert_int_equal(ly_bundle_update_sequence(b, seq, NULL), LY_OK);
	ly_buf_free(&der);
	X509_free(ca);
	EVP_PKEY_free(k);
	return b;
}

/* The set {example.org, b.test, c.test}. */
static struct ly_bundle_set *
mk_all(void)
{
	struct ly_bundle_set *set = NULL;
	assert_int_equal(ly_bundle_set_new(&set, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, mk_bundle(TA_TD, 1), NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, mk_bundle("b.test", 7), NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(set, mk_bundle("c.test", 9), NULL), LY_OK);
	return set;
}

/* A one-identity list over `e` (borrowed). */
static void
ids_of(struct ly_cache_identities *ids, struct ly_cache_item *items, struct ly_entry **es, size_t n)
{
	memset(ids, 0, sizeof(*ids));
	for (size_t i = 0; i < n; i++) {
		memset(&items[i], 0, sizeof(items[i]));
		items[i].entry = es[i];
	}
	ids->v = items;
	ids->n = n;
	ids->n_entitled = n;
}

static void
test_entry_federates(void **state)
{
	(void)state;
	struct ly_entry *e = ta_entry("e1", "spiffe://example.org/w", 1, NULL, "unix:uid:1000", NULL);
	assert_false(ly_fedset_entry_federates(e, "b.test"));
	assert_int_equal(ly_entry_add_federates_with(e, "b.test", NULL), LY_OK);
	assert_int_equal(ly_entry_add_federates_with(e, "spiffe://c.test", NULL), LY_OK);
	assert_true(ly_fedset_entry_federates(e, "b.test"));
	assert_true(ly_fedset_entry_federates(e, "c.test"));
	/* Exact names only: no prefix, suffix or case folding. */
	assert_false(ly_fedset_entry_federates(e, "b.tes"));
	assert_false(ly_fedset_entry_federates(e, "x.b.test"));
	assert_false(ly_fedset_entry_federates(e, "B.test"));
	assert_false(ly_fedset_entry_federates(NULL, "b.test"));
	ly_entry_free(e);
}

static void
test_for_caller(void **state)
{
	(void)state;
	struct ly_bundle_set *all = mk_all(), *view = NULL;
	struct ly_cache_identities ids;
	struct ly_cache_item items[2];
	size_t nfed = 99;

	struct ly_entry *plain = ta_entry("e1", "spiffe://example.org/a", 1, NULL, "unix:uid:1000", NULL);
	struct ly_entry *fed_b = ta_entry("e2", "spiffe://example.org/b", 2, NULL, "unix:uid:1000", NULL);
	assert_int_equal(ly_entry_add_federates_with(fed_b, "b.test", NULL), LY_OK);
	/* A trust domain with no bundle held yet: skipped, not an error. */
	assert_int_equal(ly_entry_add_federates_with(fed_b, "d.test", NULL), LY_OK);

	/* No identity (the shared view): ours alone. */
	assert_int_equal(ly_fedset_for_caller(all, TA_TD, NULL, &view, &nfed, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(view), 1);
	assert_non_null(ly_bundle_set_find(view, TA_TD));
	assert_int_equal(nfed, 0);
	ly_bundle_set_free(view);

	/* An entry that federates with nothing: ours alone, never another's federation. */
	struct ly_entry *one[] = { plain };
	ids_of(&ids, items, one, 1);
	assert_int_equal(ly_fedset_for_caller(all, TA_TD, &ids, &view, &nfed, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(view), 1);
	assert_null(ly_bundle_set_find(view, "b.test"));
	assert_null(ly_bundle_set_find(view, "c.test"));
	ly_bundle_set_free(view);

	/* Two identities, one federating with b.test: ours and b.test (the union), not c.test. */
	struct ly_entry *two[] = { plain, fed_b };
	ids_of(&ids, items, two, 2);
	assert_int_equal(ly_fedset_for_caller(all, TA_TD, &ids, &view, &nfed, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(view), 2);
	assert_int_equal(nfed, 1);
	const struct ly_bundle *b = ly_bundle_set_find(view, "b.test");
	assert_non_null(b);
	assert_true(ly_bundle_equal(b, ly_bundle_set_find(all, "b.test")));
	assert_null(ly_bundle_set_find(view, "c.test"));
	/* A clone: the view outlives the set it was cut from. */
	ly_bundle_set_free(all);
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(view, "b.test")), 7);
	ly_bundle_set_free(view);

	/* ly_fedset_any: only the list with an entry that federates. */
	ids_of(&ids, items, one, 1);
	assert_false(ly_fedset_any(&ids));
	assert_false(ly_fedset_any(NULL));
	ids_of(&ids, items, two, 2);
	assert_true(ly_fedset_any(&ids));

	/* No set held yet: an empty view. */
	assert_int_equal(ly_fedset_for_caller(NULL, TA_TD, &ids, &view, &nfed, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(view), 0);
	ly_bundle_set_free(view);
	ly_entry_free(plain);
	ly_entry_free(fed_b);
}

static void
test_replace_federated(void **state)
{
	(void)state;
	struct ly_bundle_set *all = mk_all(), *fed = NULL, *out = NULL;

	/* The server's answer: c.test gone, b.test changed, e.test new; a bundle for us in it is dropped. */
	assert_int_equal(ly_bundle_set_new(&fed, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(fed, mk_bundle("b.test", 8), NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(fed, mk_bundle("e.test", 1), NULL), LY_OK);
	assert_int_equal(ly_bundle_set_put(fed, mk_bundle(TA_TD, 99), NULL), LY_OK);
	assert_int_equal(ly_fedset_replace_federated(all, TA_TD, fed, &out, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(out), 3);
	assert_true(ly_bundle_equal(ly_bundle_set_find(out, TA_TD), ly_bundle_set_find(all, TA_TD)));
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(out, TA_TD)), 1);
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(out, "b.test")), 8);
	assert_non_null(ly_bundle_set_find(out, "e.test"));
	assert_null(ly_bundle_set_find(out, "c.test"));
	ly_bundle_set_free(out);

	/* An empty answer: every federation ended, ours stays. */
	assert_int_equal(ly_fedset_replace_federated(all, TA_TD, NULL, &out, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(out), 1);
	assert_non_null(ly_bundle_set_find(out, TA_TD));
	ly_bundle_set_free(out);
	ly_bundle_set_free(all);
}

static void
test_replace_own(void **state)
{
	(void)state;
	struct ly_bundle_set *all = mk_all(), *out = NULL;

	/* Our bundle rotated: the federated ones are kept as they were. */
	assert_int_equal(ly_fedset_replace_own(all, mk_bundle(TA_TD, 2), &out, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(out), 3);
	assert_int_equal(ly_bundle_sequence(ly_bundle_set_find(out, TA_TD)), 2);
	assert_true(ly_bundle_equal(ly_bundle_set_find(out, "b.test"), ly_bundle_set_find(all, "b.test")));
	assert_true(ly_bundle_equal(ly_bundle_set_find(out, "c.test"), ly_bundle_set_find(all, "c.test")));
	ly_bundle_set_free(out);

	/* Before any set: ours alone. */
	assert_int_equal(ly_fedset_replace_own(NULL, mk_bundle(TA_TD, 3), &out, NULL), LY_OK);
	assert_int_equal(ly_bundle_set_count(out), 1);
	ly_bundle_set_free(out);
	ly_bundle_set_free(all);
}

int
main(void)
{
	ly_log_set_level(LY_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entry_federates),
		cmocka_unit_test(test_for_caller),
		cmocka_unit_test(test_replace_federated),
		cmocka_unit_test(test_replace_own),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
