/*
 * test_admin_msg_audit.c: server/admin_msg_audit.h, the Admin API's
 * ListAuditLines request as the server decodes and checks it (malformed
 * bytes, since out of range, limit default and cap), `audit list -since`
 * (RFC 3339 times with zones and fractions, durations, and what is
 * refused), and the reply made from rows (absent fields empty, order kept).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "server/admin_msg_audit.h"

/* The rows' fields are char * (the datastore's heap copies); these literals are only read. */
#define S(lit) ((char *)(uintptr_t)(lit))

static uint8_t *
pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(protobuf_c_message_pack(m, b), *len);
	return b;
}

static ly_status
decode(int64_t since, uint32_t limit, struct ly_admin_msg_audit_list *out, struct ly_error *err)
{
	Lanyard__Admin__V1__ListAuditLinesRequest m;
	size_t len;

	lanyard__admin__v1__list_audit_lines_request__init(&m);
	m.since = since;
	m.limit = limit;
	uint8_t *b = pack(&m.base, &len);
	ly_status rc = ly_admin_msg_audit_list_decode(b, len, out, err);
	free(b);
	return rc;
}

static void
test_decode(void **state)
{
	struct ly_admin_msg_audit_list q;
	struct ly_error err;
	static const uint8_t garbage[] = { 0xff, 0xff, 0xff };

	(void)state;
	assert_int_equal(decode(0, 0, &q, &err), LY_OK);
	assert_int_equal(q.since, 0);
	assert_int_equal(q.limit, LY_AUDIT_LIST_DEFAULT);
	assert_int_equal(decode(1700000000, LY_DS_AUDIT_LIST_MAX, &q, &err), LY_OK);
	assert_int_equal(q.since, 1700000000);
	assert_int_equal(q.limit, LY_DS_AUDIT_LIST_MAX);
	assert_int_equal(decode(0, LY_DS_AUDIT_LIST_MAX + 1, &q, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "limit"));
	assert_int_equal(decode(-1, 1, &q, &err), LY_E_INVALID);
	assert_non_null(strstr(err.msg, "since"));
	assert_int_equal(decode(LY_AUDIT_SINCE_MAX + 1, 1, &q, &err), LY_E_INVALID);
	assert_int_equal(ly_admin_msg_audit_list_decode(garbage, sizeof(garbage), &q, &err), LY_E_INVALID);
	assert_string_equal(err.msg, "malformed request");
}

static void
test_since(void **state)
{
	static const struct {
		const char *in;
		int64_t want;
	} good[] = {
		{ "2026-12-07T10:00:00Z", 1796637600 },
		{ "2026-12-07t10:00:00z", 1796637600 },
		{ "2026-12-07T12:00:00.123+02:00", 1796637600 },
		{ "2026-12-07T05:30:00-04:30", 1796637600 },
		{ "1970-01-01T00:00:00Z", 0 },
		{ "90s", 1000000 - 90 },
		{ "15m", 1000000 - 900 },
		{ "2h30m", 1000000 - 9000 },
		{ "1d", 1000000 - 86400 },
		{ "0s", 1000000 },
		{ "30d", 0 }, /* before 1970: everything */
	};
	static const char *const bad[] = {
		"", "yesterday", "2026-12-07", "2026-12-07T10:00:00", "2026-12-07 10:00:00Z", "2026-02-30T10:00:00Z",
		"2026-13-01T10:00:00Z", "2026-12-07T24:00:00Z", "2026-12-07T10:00:00+2:00", "2026-12-07T10:00:00.Z",
		"2026-12-07T10:00:00Zjunk", "1969-12-31T23:59:59Z", "10", "-5m", "5m2h", "1h1h", "1w", "5 m",
		"99999999999999999999s",
	};
	struct ly_error err;
	int64_t v;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (ly_admin_msg_audit_since_parse(good[i].in, 1000000, &v, &err) != LY_OK)
			fail_msg("%s: %s", good[i].in, err.msg);
		if (v != good[i].want)
			fail_msg("%s: got %lld, want %lld", good[i].in, (long long)v, (long long)good[i].want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ly_admin_msg_audit_since_parse(bad[i], 1000000, &v, &err) != LY_E_INVALID)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_non_null(strstr(err.msg, "RFC 3339"));
	}
	assert_int_equal(ly_admin_msg_audit_since_parse(NULL, 1, &v, &err), LY_E_INVALID);
}

static void
test_reply(void **state)
{
	struct ly_ds_audit_row rows[2];
	struct ly_ds_audit_list list = { rows, 2 };
	struct ly_admin_msg_audit_reply r;
	struct ly_error err;
	size_t len;

	(void)state;
	memset(rows, 0, sizeof(rows));
	rows[0] = (struct ly_ds_audit_row){ .id = 7, .time = 100, .server = S("s1"), .caller = S("uid:0"),
		.action = S("entry.create"), .entry_id = S("e1"), .result = S("ok") };
	rows[1] = (struct ly_ds_audit_row){ .id = 9, .time = 200, .server = S("s2"), .action = S("agent.ban"),
		.spiffe_id = S("spiffe://example.org/a"), .result = S("NOT_FOUND"), .detail = S("no agent") };
	assert_int_equal(ly_admin_msg_audit_reply(&list, &r, &err), LY_OK);
	uint8_t *b = pack(&r.msg.base, &len);
	ly_admin_msg_audit_reply_cleanup(&r);
	Lanyard__Admin__V1__AuditLineList *m = lanyard__admin__v1__audit_line_list__unpack(NULL, len, b);
	free(b);
	assert_non_null(m);
	assert_int_equal(m->n_lines, 2);
	assert_int_equal(m->lines[0]->id, 7);
	assert_int_equal(m->lines[0]->time, 100);
	assert_string_equal(m->lines[0]->server, "s1");
	assert_string_equal(m->lines[0]->entry_id, "e1");
	assert_string_equal(m->lines[0]->detail, "");
	assert_string_equal(m->lines[1]->caller, "");
	assert_string_equal(m->lines[1]->action, "agent.ban");
	assert_string_equal(m->lines[1]->result, "NOT_FOUND");
	assert_string_equal(m->lines[1]->detail, "no agent");
	lanyard__admin__v1__audit_line_list__free_unpacked(m, NULL);

	struct ly_ds_audit_list none = LY_DS_AUDIT_LIST_INIT;
	assert_int_equal(ly_admin_msg_audit_reply(&none, &r, &err), LY_OK);
	assert_int_equal(r.msg.n_lines, 0);
	ly_admin_msg_audit_reply_cleanup(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode),
		cmocka_unit_test(test_since),
		cmocka_unit_test(test_reply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
