/*
 * test_agent_servers.c: agent/servers.h, the agent's server list, with a
 * fake clock and chosen random bits: parsing (ports, IPv6, DNS names,
 * hostile items), addresses from resolution (kept records, duplicates,
 * a failed resolution), the choice of the next server (failover to
 * another, spread over the free ones, the one free soonest when all are
 * held down), the hold-down, and the full-jitter backoff (bounds,
 * spread of a thousand agents).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "agent/servers.h"

static void
test_parse_forms(void **state)
{
	(void)state;
	struct ly_server_names n;

	assert_int_equal(ly_servers_parse("10.0.0.1", 8081, &n, NULL), LY_OK);
	assert_int_equal(n.n, 1);
	assert_string_equal(n.v[0].host, "10.0.0.1");
	assert_int_equal(n.v[0].port, 8081);
	assert_true(n.v[0].literal);

	assert_int_equal(ly_servers_parse(" a.example:9000 , 10.0.0.2,[2001:db8::1]:7000,::1 ,server", 8081, &n, NULL),
	    LY_OK);
	assert_int_equal(n.n, 5);
	assert_string_equal(n.v[0].host, "a.example");
	assert_int_equal(n.v[0].port, 9000);
	assert_false(n.v[0].literal);
	assert_string_equal(n.v[1].host, "10.0.0.2");
	assert_int_equal(n.v[1].port, 8081);
	assert_string_equal(n.v[2].host, "2001:db8::1");
	assert_int_equal(n.v[2].port, 7000);
	assert_true(n.v[2].literal);
	assert_string_equal(n.v[3].host, "::1");
	assert_int_equal(n.v[3].port, 8081);
	assert_string_equal(n.v[4].host, "server");
	assert_false(n.v[4].literal);
	/* The same host on two ports is two servers. */
	assert_int_equal(ly_servers_parse("h:1,h:2,[::1]", 5, &n, NULL), LY_OK);
	assert_int_equal(n.n, 3);
	assert_int_equal(n.v[2].port, 5);
}

static void
test_parse_refused(void **state)
{
	(void)state;
	static const struct {
		const char *list, *why;
	} bad[] = {
		{ "", "no server address" },
		{ "a,,b", "empty item" },
		{ "a,", "empty item" },
		{ " , a", "empty item" },
		{ "a:0", "port must be" },
		{ "a:65536", "port must be" },
		{ "a:80x", "port must be" },
		{ "a:", "port must be" },
		{ "a:-1", "port must be" },
		{ "[::1", "without ']'" },
		{ "[::1]x", "only \":port\"" },
		{ "[example.org]:1", "not an IPv6 address in brackets" },
		{ "1:2:zz", "not an IPv6 address" },
		{ ":8081", "no host" },
		{ "-bad.example", "label starts with '-'" },
		{ "bad-.example", "empty label" },
		{ "a..b", "empty label" },
		{ "a b", "not an IP address or a host name" },
		{ "x.example:1,X.EXAMPLE:1", "given twice" },
		{ "a/b", "not an IP address or a host name" },
	};
	struct ly_server_names n;
	struct ly_error e;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ly_status rc = ly_servers_parse(bad[i].list, 8081, &n, &e);
		if (rc != LY_E_INVALID || strstr(e.msg, bad[i].why) == NULL)
			fail_msg("\"%s\": want \"%s\", got %d: %s", bad[i].list, bad[i].why, rc, e.msg);
	}
	/* Too many items. */
	char list[2048] = "";
	for (int i = 0; i <= LY_AGENT_SERVERS_MAX; i++) {
		char item[32];
		(void)snprintf(item, sizeof(item), "%sh%d", i > 0 ? "," : "", i);
		strcat(list, item);
	}
	assert_int_equal(ly_servers_parse(list, 8081, &n, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "more than"));
	/* A label of 64 bytes, a name of 254. */
	char longl[80];
	memset(longl, 'a', 64);
	longl[64] = '\0';
	assert_int_equal(ly_servers_parse(longl, 8081, &n, &e), LY_E_INVALID);
	char longn[300];
	memset(longn, 'a', 254);
	for (int i = 50; i < 254; i += 50)
		longn[i] = '.';
	longn[254] = '\0';
	assert_int_equal(ly_servers_parse(longn, 8081, &n, &e), LY_E_INVALID);
}

static struct ly_servers *
make(const char *list)
{
	static struct ly_servers s;
	struct ly_server_names n;
	assert_int_equal(ly_servers_parse(list, 8081, &n, NULL), LY_OK);
	ly_servers_init(&s, &n);
	return &s;
}

static void
test_literals_and_resolution(void **state)
{
	(void)state;
	struct ly_servers *s = make("10.0.0.1,svc.ns:9000,[::1]:7");

	/* Literals are addresses at once; the DNS name waits. */
	assert_int_equal(s->n_eps, 2);
	assert_string_equal(s->eps[0].target, "10.0.0.1:8081");
	assert_string_equal(s->eps[1].target, "[::1]:7");
	assert_true(s->resolved[0]);
	assert_false(s->resolved[1]);
	/* A headless Service: three addresses (one twice, one unreadable). */
	const char *a[] = { "10.1.0.1", "10.1.0.2", "10.1.0.1", "not-an-ip", "fd00::5" };
	assert_int_equal(ly_servers_set_addrs(s, 1, a, 5), 3);
	assert_int_equal(s->n_eps, 5);
	assert_true(s->resolved[1]);
	assert_string_equal(s->eps[4].target, "[fd00::5]:9000");
	/* A failed resolution keeps what was known. */
	assert_int_equal(ly_servers_set_addrs(s, 1, NULL, 0), 0);
	const char *junk[] = { "junk" };
	assert_int_equal(ly_servers_set_addrs(s, 1, junk, 1), 0);
	assert_int_equal(s->n_eps, 5);
	/* Re-resolution: 10.1.0.2 stays with its record, 10.1.0.1 goes, 10.1.0.3 comes. */
	int i2 = -1;
	for (size_t i = 0; i < s->n_eps; i++)
		if (strcmp(s->eps[i].addr, "10.1.0.2") == 0)
			i2 = (int)i;
	assert_true(i2 >= 0);
	s->cur = i2;
	ly_servers_failed(s, 1000);
	const char *b[] = { "10.1.0.3", "10.1.0.2" };
	assert_int_equal(ly_servers_set_addrs(s, 1, b, 2), 2);
	assert_int_equal(s->n_eps, 4);
	const struct ly_server_ep *cur = ly_servers_current(s);
	assert_non_null(cur);
	assert_string_equal(cur->addr, "10.1.0.2");
	assert_int_equal(cur->fails, 1);
	/* The address in use vanishes from DNS: none is in use. */
	const char *c[] = { "10.1.0.3" };
	assert_int_equal(ly_servers_set_addrs(s, 1, c, 1), 1);
	assert_null(ly_servers_current(s));
	assert_int_equal(s->n_eps, 3);
	/* No address at all: nothing to pick. */
	struct ly_servers *d = make("only.dns");
	assert_int_equal(ly_servers_pick(d, 0, 7), -1);
	assert_null(ly_servers_current(d));
}

static void
test_failover(void **state)
{
	(void)state;
	struct ly_servers *s = make("10.0.0.1,10.0.0.2,10.0.0.3");
	int64_t now = 5000000;

	/* Agents with the same list spread over the servers. */
	int seen[3] = { 0 };
	for (uint32_t r = 0; r < 300; r++)
		seen[ly_servers_pick(s, now, r * 2654435761u)]++;
	for (int i = 0; i < 3; i++)
		assert_true(seen[i] > 50);

	/* The current one dies: the next pick is another, never it while held down. */
	s->cur = 0;
	ly_servers_failed(s, now);
	for (uint32_t r = 0; r < 100; r++) {
		s->cur = 0;
		int p = ly_servers_pick(s, now + 10, r);
		assert_true(p == 1 || p == 2);
	}
	/* Held down 1 s after its first failure, then free again. */
	assert_int_equal(s->eps[0].down_until_ms, now + 1000);
	s->cur = 0;
	ly_servers_failed(s, now + 1000);
	assert_int_equal(s->eps[0].down_until_ms, now + 1000 + 2000);
	for (int k = 0; k < 10; k++) {
		s->cur = 0;
		ly_servers_failed(s, now);
	}
	assert_int_equal(s->eps[0].down_until_ms, now + LY_SERVERS_BACKOFF_MAX_MS);
	/* It answers: free at once. */
	ly_servers_ok(s, "10.0.0.1:8081");
	assert_int_equal(s->eps[0].fails, 0);
	assert_int_equal(ly_servers_wait_ms(s, 0, now), 0);

	/* All held down: the one free soonest, and the wait until then. */
	for (int i = 0; i < 3; i++) {
		s->cur = i;
		ly_servers_failed(s, now + 100 * (3 - i)); /* server 2 failed first */
	}
	int p = ly_servers_pick(s, now + 400, 0);
	assert_int_equal(p, 2);
	assert_int_equal(ly_servers_wait_ms(s, p, now + 400), now + 100 + 1000 - (now + 400));
	/* One server only: it is picked again after its hold-down. */
	struct ly_servers *one = make("10.9.9.9");
	one->cur = 0;
	ly_servers_failed(one, 0);
	assert_int_equal(ly_servers_pick(one, 10, 12345), 0);
	assert_int_equal(ly_servers_wait_ms(one, 0, 10), 990);
}

static void
test_backoff_full_jitter(void **state)
{
	(void)state;

	/* Bounds: [0, min(30 s, 1 s * 2^attempt)], both ends reachable. */
	assert_int_equal(ly_servers_backoff_ms(0, 0), 0);
	assert_int_equal(ly_servers_backoff_ms(0, 1000), 1000);
	assert_int_equal(ly_servers_backoff_ms(0, 1001), 0);
	assert_int_equal(ly_servers_backoff_ms(3, 8000), 8000);
	assert_int_equal(ly_servers_backoff_ms(5, 30000), 30000);
	assert_int_equal(ly_servers_backoff_ms(200, UINT32_MAX) <= 30000, 1);
	for (unsigned a = 0; a < 40; a++)
		for (uint32_t r = 0; r < 2000; r += 7)
			assert_true(ly_servers_backoff_ms(a, r * 2654435761u) <= LY_SERVERS_BACKOFF_MAX_MS);
	/*
	 * A thousand agents lose their server at the same instant: their first
	 * retries spread over the whole first second, about a tenth in each
	 * 100 ms (a random source standing in for each agent's RAND_bytes).
	 */
	uint32_t x = 2463534242u;
	int bins[11] = { 0 };
	for (int i = 0; i < 1000; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		bins[ly_servers_backoff_ms(0, x) / 100]++;
	}
	for (int b = 0; b < 10; b++)
		assert_true(bins[b] >= 50 && bins[b] <= 150);
}

static void
test_describe(void **state)
{
	(void)state;
	struct ly_servers *s = make("a:1,[::1]:2,10.0.0.1");
	char buf[128];

	ly_servers_describe(s, buf, sizeof(buf));
	assert_string_equal(buf, "a:1,[::1]:2,10.0.0.1:8081");
	ly_servers_describe(s, buf, 5);
	assert_int_equal(strlen(buf), 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_forms),
		cmocka_unit_test(test_parse_refused),
		cmocka_unit_test(test_literals_and_resolution),
		cmocka_unit_test(test_failover),
		cmocka_unit_test(test_backoff_full_jitter),
		cmocka_unit_test(test_describe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
