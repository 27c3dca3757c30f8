/*
 * fuzz_agent_servers.c: the agent's server list (agent/servers.h), as
 * -serverAddress / agent.server_address give it. The input is one list,
 * parsed with default port 8081. On success: 1..LY_AGENT_SERVERS_MAX
 * items, each host a valid IP address or host name, each port 1..65535,
 * `literal` exactly for IP addresses, no item twice; then the list is put
 * to work with a fake clock (its literal addresses, the input's lines as
 * the addresses of its first name, picks and failures) and the choice must
 * stay within the addresses known, the waits within the hold-down cap. On
 * failure the message must be set. abort() otherwise.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/servers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
is_ip(const char *s)
{
	unsigned char a[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

static void
check_names(const struct ly_server_names *n)
{
	if (n->n == 0 || n->n > LY_AGENT_SERVERS_MAX)
		abort();
	for (size_t i = 0; i < n->n; i++) {
		const struct ly_server_name *nm = &n->v[i];
		if (nm->host[0] == '\0' || nm->port == 0 || ly_servers_host_check(nm->host, NULL) != LY_OK ||
		    nm->literal != is_ip(nm->host))
			abort();
		for (size_t k = 0; k < i; k++)
			if (n->v[k].port == nm->port && strcasecmp(n->v[k].host, nm->host) == 0)
				abort();
	}
}

static void
exercise(const struct ly_server_names *n, const char *text)
{
	static struct ly_servers s;
	const char *addrs[LY_AGENT_SERVER_ADDRS_MAX + 8];
	char *copy = strdup(text), *save = NULL;
	size_t na = 0;

	if (copy == NULL)
		return;
	ly_servers_init(&s, n);
	for (char *t = strtok_r(copy, ",\n ", &save); t != NULL && na < sizeof(addrs) / sizeof(addrs[0]);
	     t = strtok_r(NULL, ",\n ", &save))
		addrs[na++] = t;
	(void)ly_servers_set_addrs(&s, 0, addrs, na);
	if (s.n_eps > LY_AGENT_SERVER_ADDRS_MAX)
		abort();
	int64_t now = 1000;
	uint32_t rnd = 2463534242u;
	for (int i = 0; i < 64; i++) {
		rnd ^= rnd << 13;
		rnd ^= rnd >> 17;
		rnd ^= rnd << 5;
		int p = ly_servers_pick(&s, now, rnd);
		if ((s.n_eps == 0) != (p < 0) || (p >= 0 && (size_t)p >= s.n_eps))
			abort();
		int64_t w = ly_servers_wait_ms(&s, p, now);
		if (w < 0 || w > LY_SERVERS_BACKOFF_MAX_MS)
			abort();
		if (ly_servers_backoff_ms((unsigned)i, rnd) > LY_SERVERS_BACKOFF_MAX_MS)
			abort();
		if (rnd & 1)
			ly_servers_failed(&s, now);
		else if (p >= 0)
			ly_servers_ok(&s, s.eps[p].target);
		now += rnd % 3000;
	}
	free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ly_server_names n;
	struct ly_error e;
	char *s = malloc(size + 1);

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	e.msg[0] = '\0';
	if (ly_servers_parse(s, 8081, &n, &e) == LY_OK) {
		check_names(&n);
		exercise(&n, s);
	} else if (e.msg[0] == '\0') {
		abort();
	}
	free(s);
	return 0;
}
