/*
 * test_attest_join_token.c: the server's join_token attestor
 * (server/attest.h, SPEC §6) on a real SQLite datastore in a temporary
 * directory: single use, the retry with the same key, expiry, the ID
 * stored with the token, the reserved namespace, the trust domain, token
 * syntax, the default ID, and no token in any message. The x509pop and
 * k8s_psat attestors have their own programs (test_attest_x509pop.c,
 * test_attest_k8s_psat.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/caps.h"
#include "server/attest.h"
#include "server/datastore.h"

#define TD "example.org"

struct ds_fixture {
	char dir[64];
	char path[128];
	struct ly_datastore *ds;
};

static int
ds_setup(void **state)
{
	struct ds_fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/lanyard-test-attest-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/datastore.sqlite3", f->dir);
	assert_int_equal(ly_datastore_sqlite_open(f->path, &f->ds, NULL), LY_OK);
	*state = f;
	return 0;
}

static int
ds_teardown(void **state)
{
	struct ds_fixture *f = *state;
	char p[160];
	ly_datastore_close(f->ds);
	unlink(f->path);
	snprintf(p, sizeof(p), "%s-wal", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

#define NOW ((time_t)1700000000)

static void
make_token(struct ly_datastore *ds, const char *token, const char *id, time_t expires)
{
	struct ly_spiffe_id def;
	if (id == NULL) {
		assert_int_equal(ly_join_token_default_id(TD, token, &def, NULL), LY_OK);
		id = def.id;
	}
	assert_int_equal(ly_datastore_token_create(ds, token, id, (int64_t)expires, NULL), LY_OK);
}

static void
test_join_token_single_use(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	const char *tok = "f0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4b";

	make_token(f->ds, tok, NULL, NOW + 600);
	assert_int_equal(ly_attest_join_token(f->ds, TD, tok, NOW, NULL, &r, NULL, &err), LY_OK);
	assert_string_equal(r.agent_id, "spiffe://example.org/lanyard/agent/join_token/"
					 "f0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4b");
	assert_string_equal(r.type, "join_token");
	/* As SPIRE: the ID is the identity, no selectors. */
	assert_int_equal(r.n_selectors, 0);
	assert_null(r.selectors);
	ly_attest_result_cleanup(&r);
	assert_null(r.agent_id);

	/* Second use: refused, and the message does not carry the token. */
	assert_int_equal(ly_attest_join_token(f->ds, TD, tok, NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
	assert_null(strstr(err.msg, "f0a1b2c3"));
	assert_null(r.agent_id);
}

/* The answer to a first use lost: the same token with the same key admits the agent again, another key does not. */
static void
test_join_token_retry_same_key(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	uint8_t k1[LY_JOIN_TOKEN_KEY_LEN], k2[LY_JOIN_TOKEN_KEY_LEN];
	bool again = true;

	memset(k1, 0xa1, sizeof(k1));
	memset(k2, 0xb2, sizeof(k2));
	make_token(f->ds, "lost-answer", "spiffe://example.org/racks/r1/node-1", NOW + 600);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW, k1, &r, &again, &err), LY_OK);
	assert_false(again);
	assert_string_equal(r.agent_id, "spiffe://example.org/racks/r1/node-1");
	ly_attest_result_cleanup(&r);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW + 30, k1, &r, &again, &err), LY_OK);
	assert_true(again);
	assert_string_equal(r.agent_id, "spiffe://example.org/racks/r1/node-1");
	assert_string_equal(r.type, "join_token");
	ly_attest_result_cleanup(&r);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW + 30, k2, &r, &again, &err),
	    LY_E_NOT_FOUND);
	assert_false(again);
	assert_null(r.agent_id);
	assert_null(strstr(err.msg, "lost-answer"));
	assert_int_equal(ly_attest_join_token(f->ds, TD, "lost-answer", NOW + LY_JOIN_TOKEN_RETRY_S, k1, &r, &again,
	    &err), LY_E_NOT_FOUND);
}

static void
test_join_token_expired(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;

	make_token(f->ds, "expiring-token", NULL, NOW + 10);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "expiring-token", NOW + 10, NULL, &r, NULL,
	    &err), LY_E_EXPIRED);
	assert_null(strstr(err.msg, "expiring-token"));
	assert_null(r.agent_id);
	/* Used up by the failed attempt too. */
	assert_int_equal(ly_attest_join_token(f->ds, TD, "expiring-token", NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);

	/* One second before expiry it still works. */
	make_token(f->ds, "fresh-token", NULL, NOW + 10);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "fresh-token", NOW + 9, NULL, &r, NULL, &err), LY_OK);
	ly_attest_result_cleanup(&r);
}

static void
test_join_token_custom_id(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;

	make_token(f->ds, "custom", "spiffe://example.org/racks/r12/node-7", NOW + 60);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "custom", NOW, NULL, &r, NULL, NULL), LY_OK);
	assert_string_equal(r.agent_id, "spiffe://example.org/racks/r12/node-7");
	assert_int_equal(r.n_selectors, 0);
	ly_attest_result_cleanup(&r);
}

/*
 * The reserved namespace (lib/spiffeid.h): a token may not grant the
 * server's ID nor another attestor's agent ID, neither when it is stored
 * nor, for a row stored before the rule, when it is used.
 */
static void
test_join_token_reserved_ids(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	static const char *const refused[] = {
		"spiffe://example.org/lanyard/server",
		"spiffe://example.org/lanyard",
		"spiffe://example.org/lanyard/x",
		"spiffe://example.org/lanyard/agent/x509pop/0123456789abcdef0123456789abcdef01234567",
		"spiffe://example.org/lanyard/agent/k8s_psat/prod/u1",
		"spiffe://example.org/lanyard/agent/join_token/another",
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		assert_int_equal(ly_datastore_token_create(f->ds, "tok", refused[i], NOW + 60, &err), LY_E_INVALID);
		assert_non_null(strstr(err.msg, "reserved namespace"));
	}
	/* The token's own default and a named agent are fine. */
	make_token(f->ds, "tok", "spiffe://example.org/lanyard/agent/join_token/tok", NOW + 60);
	make_token(f->ds, "named", "spiffe://example.org/lanyard/agent/node1", NOW + 60);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "named", NOW, NULL, &r, NULL, NULL), LY_OK);
	assert_string_equal(r.agent_id, "spiffe://example.org/lanyard/agent/node1");
	ly_attest_result_cleanup(&r);

	/* A row from before the rule: refused when used, and used up. */
	make_token(f->ds, "old", "spiffe://example.org/lanyard/agent/node2", NOW + 60);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "UPDATE join_tokens SET spiffe_id = 'spiffe://example.org/lanyard/server'",
	    NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_changes(db), 2);
	sqlite3_close(db);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "old", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "reserved namespace"));
	assert_null(strstr(err.msg, "old"));
	assert_null(r.agent_id);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "old", NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
}

/* A token made for another trust domain admits no one here (and is used up). */
static void
test_join_token_other_trust_domain(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;

	make_token(f->ds, "foreign", "spiffe://other.org/lanyard/agent/x", NOW + 60);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "foreign", NOW, NULL, &r, NULL, &err), LY_E_UNTRUSTED);
	assert_non_null(strstr(err.msg, "trust domain"));
	assert_null(r.agent_id);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "foreign", NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
}

static void
test_join_token_syntax(void **state)
{
	struct ds_fixture *f = *state;
	struct ly_attest_result r = LY_ATTEST_RESULT_INIT;
	struct ly_error err;
	char long_tok[LY_JOIN_TOKEN_MAX + 2];

	assert_int_equal(ly_attest_join_token(f->ds, TD, "", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, NULL, NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "secret$value", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_null(strstr(err.msg, "secret"));
	assert_int_equal(ly_attest_join_token(f->ds, TD, "has space", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "a/b", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, ".", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	assert_int_equal(ly_attest_join_token(f->ds, TD, "..", NOW, NULL, &r, NULL, &err), LY_E_INVALID);
	memset(long_tok, 'a', sizeof(long_tok));
	long_tok[LY_JOIN_TOKEN_MAX + 1] = '\0';
	assert_int_equal(ly_attest_join_token(f->ds, TD, long_tok, NOW, NULL, &r, NULL, &err), LY_E_LIMIT);
	/* Exactly at the cap: syntax passes, the store does not know it. */
	long_tok[LY_JOIN_TOKEN_MAX] = '\0';
	assert_int_equal(ly_datastore_token_check(long_tok, &err), LY_OK);
	assert_int_equal(ly_attest_join_token(f->ds, TD, long_tok, NOW, NULL, &r, NULL, &err), LY_E_NOT_FOUND);
	assert_null(strstr(err.msg, "aaaa"));
	assert_null(r.agent_id);
}

static void
test_join_token_default_id(void **state)
{
	struct ly_spiffe_id id;
	assert_int_equal(ly_join_token_default_id(TD, "abc", &id, NULL), LY_OK);
	assert_string_equal(id.id, "spiffe://example.org/lanyard/agent/join_token/abc");
	assert_int_equal(ly_join_token_default_id(TD, "a b", &id, NULL), LY_E_INVALID);
	assert_int_equal(ly_join_token_default_id("Example.org", "abc", &id, NULL), LY_E_INVALID);
}

int
main(void)
{
	const struct CMUnitTest join[] = {
		cmocka_unit_test_setup_teardown(test_join_token_single_use, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_retry_same_key, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_expired, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_custom_id, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_other_trust_domain, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_reserved_ids, ds_setup, ds_teardown),
		cmocka_unit_test_setup_teardown(test_join_token_syntax, ds_setup, ds_teardown),
		cmocka_unit_test(test_join_token_default_id),
	};
	return cmocka_run_group_tests_name("join_token", join, NULL, NULL);
}
