/*
 * datastore_audit_contract.h: the shared audit trail's part of the
 * datastore contract (server/datastore_audit.h), run on every back end
 * (DS_AUDIT_CONTRACT_TESTS(setup, teardown)): rows appended and listed
 * oldest first with every field, the secret scrubbed and never stored, the
 * revision untouched; a row armed around a call commits with its first
 * write (a created entry's generated ID in it), not with a refusal, and a
 * change whose row is refused is not made; -since / -limit; retention by
 * age and by count; a store of the previous schema upgraded.
 *
 * Included after datastore_contract.h (its fixture, helpers and
 * struct ds_backend). Static functions only.
 */
#ifndef LANYARD_TESTS_DATASTORE_AUDIT_CONTRACT_H
#define LANYARD_TESTS_DATASTORE_AUDIT_CONTRACT_H

#include "server/datastore_audit.h"

#define AUDIT_SERVER "5f0c7c0e-2f7e-4d8e-9a55-5b2f7d0e1a11"

static void
audit_append(struct fixture *f, const char *action, const char *result, int64_t time)
{
	struct ly_audit_record rec = { .caller = "uid:1000", .action = action, .result = result };
	struct ly_error err;

	if (ly_datastore_audit_append(f->ds, &rec, AUDIT_SERVER, time, &err) != LY_OK)
		fail_msg("audit append: %s", err.msg);
}

static struct ly_ds_audit_list
audit_rows(struct fixture *f, int64_t since, size_t limit)
{
	struct ly_ds_audit_list l = LY_DS_AUDIT_LIST_INIT;
	struct ly_error err;

	if (ly_datastore_audit_list(f->ds, since, limit, &l, &err) != LY_OK)
		fail_msg("audit list: %s", err.msg);
	return l;
}

/* Every field back as written, oldest first; the secret nowhere, not even as part of a field; no revision. */
static void
test_audit_append_list(void **state)
{
	struct fixture *f = *state;
	const char *token = "4f1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100aa";
	char id[256];
	struct ly_error err;
	int64_t rev = revision(f);

	(void)snprintf(id, sizeof(id), TD "/lanyard/agent/join_token/%s", token);
	struct ly_audit_record rec = {
		.caller = "uid:1000", .action = "token.generate", .spiffe_id = id, .result = "ok", .secret = token,
	};
	assert_int_equal(ly_datastore_audit_append(f->ds, &rec, AUDIT_SERVER, 1000, &err), LY_OK);
	struct ly_audit_record ref = {
		.caller = "uid:0", .action = "entry.create", .entry_id = "e1", .spiffe_id = TD "/web",
		.trust_domain = "b.test", .result = "INVALID_ARGUMENT", .detail = "selector 1: bad\x01 one",
	};
	assert_int_equal(ly_datastore_audit_append(f->ds, &ref, "host-b", 1001, &err), LY_OK);
	assert_int_equal(revision(f), rev);

	struct ly_ds_audit_list l = audit_rows(f, 0, 10);
	assert_int_equal(l.n, 2);
	assert_true(l.items[0].id < l.items[1].id);
	assert_int_equal(l.items[0].time, 1000);
	assert_string_equal(l.items[0].server, AUDIT_SERVER);
	assert_string_equal(l.items[0].action, "token.generate");
	assert_string_equal(l.items[0].spiffe_id, TD "/lanyard/agent/join_token/[redacted]");
	assert_null(l.items[0].entry_id);
	assert_null(l.items[0].detail);
	assert_string_equal(l.items[1].server, "host-b");
	assert_string_equal(l.items[1].caller, "uid:0");
	assert_string_equal(l.items[1].entry_id, "e1");
	assert_string_equal(l.items[1].trust_domain, "b.test");
	assert_string_equal(l.items[1].result, "INVALID_ARGUMENT");
	assert_string_equal(l.items[1].detail, "selector 1: bad? one");
	ly_ds_audit_list_cleanup(&l);
	char sql[256];
	(void)snprintf(sql, sizeof(sql), "SELECT count(*) FROM audit_log WHERE spiffe_id LIKE '%%%.16s%%'", token);
	assert_int_equal(rows_in(f, sql), 0);
}

/* Refused: no action or result, an empty or unprintable server name. */
static void
test_audit_append_refused(void **state)
{
	struct fixture *f = *state;
	struct ly_audit_record rec = { .action = "entry.create", .result = "ok" };
	struct ly_audit_record no_result = { .action = "entry.create" };
	struct ly_error err;

	expect(ly_datastore_audit_append(f->ds, &no_result, AUDIT_SERVER, 1, &err), &err, LY_E_INVALID, "action");
	expect(ly_datastore_audit_append(f->ds, &rec, "", 1, &err), &err, LY_E_INVALID, "server name");
	expect(ly_datastore_audit_append(f->ds, &rec, "a b", 1, &err), &err, LY_E_INVALID, "printable");
	assert_int_equal(rows_in(f, "SELECT count(*) FROM audit_log"), 0);
}

/* Armed: the row commits with the call's first write, with the generated entry ID; one row for two writes. */
static void
test_audit_row_commits_with_write(void **state)
{
	struct fixture *f = *state;
	struct ly_ds_audit_txn t;
	struct ly_error err;
	struct ly_entry *e = entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL);
	int64_t rev = revision(f);

	memset(&t, 0, sizeof(t));
	t.rec = (struct ly_audit_record){ .caller = "uid:1000", .action = "entry.create", .spiffe_id = TD "/web",
		.result = "ok" };
	t.server = AUDIT_SERVER;
	t.time = 2000;
	t.entry_id_ref = &e->entry_id;
	ly_datastore_audit_arm(f->ds, &t);
	assert_int_equal(ly_datastore_entry_create(f->ds, e, &err), LY_OK);
	assert_int_equal(ly_datastore_token_create(f->ds, "tok-1", TOKEN_AGENT1, 4000000000, &err), LY_OK);
	ly_datastore_audit_disarm(f->ds, &t);
	assert_true(t.stored);
	/* Two writes, two revisions: the row itself raised none. */
	assert_int_equal(revision(f), rev + 2);
	struct ly_ds_audit_list l = audit_rows(f, 0, 10);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.items[0].entry_id, e->entry_id);
	assert_string_equal(l.items[0].action, "entry.create");
	assert_int_equal(l.items[0].time, 2000);
	ly_ds_audit_list_cleanup(&l);
	ly_entry_free(e);
	/* Disarmed: a later write carries nothing. */
	assert_int_equal(ly_datastore_token_create(f->ds, "tok-2", TOKEN_AGENT1, 4000000000, &err), LY_OK);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM audit_log"), 1);
}

/* Armed over a refusal (a duplicate) or a read: no row (the caller stores the refusal itself). */
static void
test_audit_row_not_on_refusal(void **state)
{
	struct fixture *f = *state;
	struct ly_ds_audit_txn t;
	struct ly_error err;
	struct ly_entry_list list = LY_ENTRY_LIST_INIT;

	free(create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL)));
	struct ly_entry *dup = entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL);
	memset(&t, 0, sizeof(t));
	t.rec = (struct ly_audit_record){ .action = "entry.create", .result = "ok" };
	t.server = AUDIT_SERVER;
	ly_datastore_audit_arm(f->ds, &t);
	expect(ly_datastore_entry_create(f->ds, dup, &err), &err, LY_E_INVALID, "already exists");
	assert_int_equal(ly_datastore_entry_list(f->ds, NULL, &list, &err), LY_OK);
	expect(ly_datastore_entry_delete(f->ds, "no-such", NULL, &err), &err, LY_E_NOT_FOUND, "");
	ly_datastore_audit_disarm(f->ds, &t);
	assert_false(t.stored);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM audit_log"), 0);
	ly_entry_list_cleanup(&list);
	ly_entry_free(dup);
}

/* A row the store refuses takes the change with it: never a change without its row. */
static void
test_audit_row_refused_undoes_change(void **state)
{
	struct fixture *f = *state;
	struct ly_ds_audit_txn t;
	struct ly_error err;
	int64_t rev = revision(f);

	memset(&t, 0, sizeof(t));
	t.rec = (struct ly_audit_record){ .action = "token.generate", .result = "ok" };
	t.server = ""; /* refused by the row's checks */
	ly_datastore_audit_arm(f->ds, &t);
	expect(ly_datastore_token_create(f->ds, "tok-1", TOKEN_AGENT1, 4000000000, &err), &err, LY_E_INVALID,
	    "change not applied");
	ly_datastore_audit_disarm(f->ds, &t);
	assert_false(t.stored);
	assert_int_equal(revision(f), rev);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM join_tokens"), 0);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM audit_log"), 0);
}

/* -since and -limit: the newest `limit` at or after `since`, oldest first; the limit's bounds. */
static void
test_audit_list_since_limit(void **state)
{
	struct fixture *f = *state;
	struct ly_ds_audit_list l = LY_DS_AUDIT_LIST_INIT;
	struct ly_error err;

	audit_append(f, "a1", "ok", 100);
	audit_append(f, "a2", "ok", 200);
	audit_append(f, "a3", "NOT_FOUND", 300);
	l = audit_rows(f, 200, 10);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.items[0].action, "a2");
	assert_string_equal(l.items[1].action, "a3");
	ly_ds_audit_list_cleanup(&l);
	l = audit_rows(f, 0, 2);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.items[0].action, "a2");
	assert_string_equal(l.items[1].action, "a3");
	ly_ds_audit_list_cleanup(&l);
	l = audit_rows(f, 301, 10);
	assert_int_equal(l.n, 0);
	ly_ds_audit_list_cleanup(&l);
	expect(ly_datastore_audit_list(f->ds, 0, 0, &l, &err), &err, LY_E_LIMIT, "limit");
	expect(ly_datastore_audit_list(f->ds, 0, LY_DS_AUDIT_LIST_MAX + 1, &l, &err), &err, LY_E_LIMIT, "limit");
	assert_int_equal(l.n, 0);
}

/* Retention: older than `before` goes, then all but the newest `keep`; nothing else, no revision. */
static void
test_audit_prune(void **state)
{
	struct fixture *f = *state;
	struct ly_error err;
	size_t removed = 99;
	int64_t rev;

	for (int i = 1; i <= 5; i++)
		audit_append(f, "a", "ok", 100 * i);
	rev = revision(f);
	assert_int_equal(ly_datastore_audit_prune(f->ds, 250, 0, &removed, &err), LY_OK);
	assert_int_equal(removed, 2);
	assert_int_equal(ly_datastore_audit_prune(f->ds, 250, 2, &removed, &err), LY_OK);
	assert_int_equal(removed, 1);
	assert_int_equal(ly_datastore_audit_prune(f->ds, 250, 2, &removed, &err), LY_OK);
	assert_int_equal(removed, 0);
	struct ly_ds_audit_list l = audit_rows(f, 0, 10);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.items[0].time, 400);
	assert_int_equal(l.items[1].time, 500);
	ly_ds_audit_list_cleanup(&l);
	assert_int_equal(revision(f), rev);
	expect(ly_datastore_audit_prune(f->ds, 0, -1, NULL, &err), &err, LY_E_INVALID, "negative");
}

/* A store of the schema before the audit trail is upgraded at open, its data kept. */
static void
test_audit_migration(void **state)
{
	struct fixture *f = *state;
	char sql[96];

	free(create(f, entry_of(TD "/web", AGENT1, "unix:uid:1000", NULL)));
	ly_datastore_close(f->ds);
	f->ds = NULL;
	f->be->exec(f, "DROP TABLE audit_log");
	(void)snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", f->be->schema - 1);
	f->be->exec(f, sql);
	f->be->open(f);
	assert_int_equal(rows_in(f, "SELECT version FROM schema_version"), f->be->schema);
	assert_int_equal(count_entries(f), 1);
	audit_append(f, "a", "ok", 1);
	assert_int_equal(rows_in(f, "SELECT count(*) FROM audit_log"), 1);
}

#define DS_AUDIT_CONTRACT_TESTS(setup, teardown)                                        \
	cmocka_unit_test_setup_teardown(test_audit_append_list, setup, teardown),        \
	    cmocka_unit_test_setup_teardown(test_audit_append_refused, setup, teardown), \
	    cmocka_unit_test_setup_teardown(test_audit_row_commits_with_write, setup, teardown), \
	    cmocka_unit_test_setup_teardown(test_audit_row_not_on_refusal, setup, teardown), \
	    cmocka_unit_test_setup_teardown(test_audit_row_refused_undoes_change, setup, teardown), \
	    cmocka_unit_test_setup_teardown(test_audit_list_since_limit, setup, teardown), \
	    cmocka_unit_test_setup_teardown(test_audit_prune, setup, teardown),         \
	    cmocka_unit_test_setup_teardown(test_audit_migration, setup, teardown)

#endif /* LANYARD_TESTS_DATASTORE_AUDIT_CONTRACT_H */
