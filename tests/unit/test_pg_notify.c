/*
 * test_pg_notify.c: server/pg_notify.h's payload parser, the one piece of
 * the LISTEN connection that reads what the database sends: every form the
 * triggers write, and a table of hostile payloads (unknown forms, bad
 * numbers, a revision one past INT64_MAX, agent IDs empty, with a space or
 * a control byte, not SPIFFE IDs, one byte over the caps), each refused
 * with one line that does not quote it. Also: starting against nothing
 * listening never blocks, and stopping frees everything (ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "lib/caps.h"
#include "server/pg_notify.h"

static ly_status
parse(const char *s, struct ly_pg_notice *n, struct ly_error *err)
{
	return ly_pg_notify_parse(s, strlen(s), n, err);
}

static void
test_forms(void **state)
{
	(void)state;
	struct ly_pg_notice n;
	struct ly_error err;

	assert_int_equal(parse("b", &n, &err), LY_OK);
	assert_int_equal(n.kind, LY_PG_NOTICE_BUNDLE);
	assert_int_equal(parse("e 1", &n, &err), LY_OK);
	assert_int_equal(n.kind, LY_PG_NOTICE_ENTRIES);
	assert_int_equal(n.revision, 1);
	assert_int_equal(parse("e 9223372036854775807", &n, &err), LY_OK);
	assert_int_equal(n.revision, INT64_MAX);
	assert_int_equal(parse("a evicted spiffe://example.org/lanyard/agent/x", &n, &err), LY_OK);
	assert_int_equal(n.kind, LY_PG_NOTICE_AGENT_EVICTED);
	assert_string_equal(n.agent_id, "spiffe://example.org/lanyard/agent/x");
	assert_int_equal(parse("a banned spiffe://example.org/a", &n, &err), LY_OK);
	assert_int_equal(n.kind, LY_PG_NOTICE_AGENT_BANNED);
	assert_string_equal(n.agent_id, "spiffe://example.org/a");
	/* A payload need not be NUL-terminated: the length rules. */
	assert_int_equal(ly_pg_notify_parse("e 12345", 4, &n, &err), LY_OK);
	assert_int_equal(n.revision, 12);
}

static void
test_hostile(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "x", "B", "bb", "b ", " b", "e", "e ", "e 0", "e -1", "e +1", "e 01", "e 1 ", "e 1x", "e  1",
		"e 9223372036854775808", "e 99999999999999999999", "e 0x10", "a", "a evicted", "a evicted ",
		"a evicted spiffe://", "a evicted http://example.org/a", "a evicted spiffe://example.org/a b",
		"a evicted spiffe://example.org/a\n", "a evicted spiffe://example.org/\x7f", "a banned\tspiffe://e/a",
		"a kicked spiffe://example.org/a", "A evicted spiffe://example.org/a",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ly_pg_notice n;
		struct ly_error err;
		ly_error_clear(&err);
		if (ly_pg_notify_parse(bad[i], strlen(bad[i]), &n, &err) == LY_OK)
			fail_msg("accepted: \"%s\"", bad[i]);
		assert_null(strchr(err.msg, '\n'));
		assert_non_null(strstr(err.msg, "change notification"));
		if (strlen(bad[i]) > 8)
			assert_null(strstr(err.msg, bad[i]));
		assert_int_equal(n.kind, 0);
	}
	/* A NUL inside is refused, not cut short. */
	struct ly_pg_notice n;
	assert_int_not_equal(ly_pg_notify_parse("e 1\0002", 5, &n, NULL), LY_OK);
	assert_int_not_equal(ly_pg_notify_parse(NULL, 0, &n, NULL), LY_OK);
}

static void
test_caps(void **state)
{
	(void)state;
	struct ly_pg_notice n;
	struct ly_error err;
	const char *prefix = "a banned spiffe://example.org/";
	size_t plen = strlen(prefix);
	char *s = malloc(LY_PG_NOTIFY_PAYLOAD_MAX + 2);
	assert_non_null(s);

	/* An agent ID of exactly LY_SPIFFE_ID_MAX bytes: fine. */
	memcpy(s, prefix, plen);
	size_t idlen = LY_SPIFFE_ID_MAX;
	memset(s + plen, 'a', idlen - (plen - strlen("a banned ")));
	size_t len = strlen("a banned ") + idlen;
	s[len] = '\0';
	assert_int_equal(ly_pg_notify_parse(s, len, &n, &err), LY_OK);
	assert_int_equal(strlen(n.agent_id), LY_SPIFFE_ID_MAX);
	/* One more: refused. */
	s[len] = 'a';
	s[len + 1] = '\0';
	assert_int_equal(ly_pg_notify_parse(s, len + 1, &n, &err), LY_E_INVALID);
	/* Over the payload cap: LY_E_LIMIT before anything is read. */
	memset(s, 'e', LY_PG_NOTIFY_PAYLOAD_MAX + 1);
	assert_int_equal(ly_pg_notify_parse(s, LY_PG_NOTIFY_PAYLOAD_MAX + 1, &n, &err), LY_E_LIMIT);
	free(s);
}

static unsigned notices;

static void
on_notice(void *arg, const struct ly_pg_notice *n)
{
	(void)arg;
	(void)n;
	notices++;
}

static void
on_timeout(uv_timer_t *t)
{
	struct ly_pg_notify **pn = t->data;
	ly_pg_notify_stop(*pn);
	*pn = NULL;
	uv_close((uv_handle_t *)t, NULL);
}

/* Nothing listens at the address: start returns at once, retries in the background, stop frees all. */
static void
test_unreachable(void **state)
{
	(void)state;
	uv_loop_t loop;
	uv_timer_t t;
	struct ly_pg_notify *n = NULL;
	char dir[] = "/tmp/lanyard-pgn-XXXXXX", conninfo[128];
	struct ly_error err;

	assert_non_null(mkdtemp(dir));
	(void)snprintf(conninfo, sizeof(conninfo), "host=%s port=1 dbname=none connect_timeout=2", dir);
	assert_int_equal(uv_loop_init(&loop), 0);
	struct ly_pg_notify_config cfg = { .loop = &loop, .conninfo = conninfo, .on_notice = on_notice, .arg = NULL };
	uint64_t t0 = uv_hrtime();
	assert_int_equal(ly_pg_notify_start(&cfg, &n, &err), LY_OK);
	assert_true(uv_hrtime() - t0 < 500000000ull);
	assert_false(ly_pg_notify_listening(n));
	assert_int_equal(uv_timer_init(&loop, &t), 0);
	t.data = &n;
	assert_int_equal(uv_timer_start(&t, on_timeout, 700, 0), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_null(n);
	assert_int_equal(notices, 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	(void)rmdir(dir);

	struct ly_pg_notify_config none = { .loop = &loop, .conninfo = NULL, .on_notice = on_notice };
	assert_int_equal(ly_pg_notify_start(&none, &n, &err), LY_E_INTERNAL);
	ly_pg_notify_stop(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_unreachable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
