/* servers.c: see servers.h. */
#include "agent/servers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

ly_status
ly_servers_host_check(const char *s, struct ly_error *err)
{
	unsigned char addr[sizeof(struct in6_addr)];
	size_t len = strlen(s), label = 0;

	if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1)
		return LY_OK;
	if (len == 0 || len > LY_DNS_NAME_MAX)
		return ly_error_set(err, LY_E_INVALID, "\"%.*s\" is not an IP address or a host name (1 to %d bytes)",
		    LY_DNS_NAME_MAX, s, LY_DNS_NAME_MAX);
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return ly_error_set(err, LY_E_INVALID, "\"%s\" is not a valid host name (empty label)", s);
			label = 0;
			continue;
		}
		if (!alnum && c != '-')
			return ly_error_set(err, LY_E_INVALID, "\"%s\" is not an IP address or a host name", s);
		if (c == '-' && label == 0)
			return ly_error_set(err, LY_E_INVALID, "\"%s\" is not a valid host name (label starts with '-')", s);
		if (++label > 63)
			return ly_error_set(err, LY_E_INVALID, "\"%s\" is not a valid host name (label over 63 bytes)", s);
	}
	if (s[len - 1] == '-')
		return ly_error_set(err, LY_E_INVALID, "\"%s\" is not a valid host name (label ends with '-')", s);
	return LY_OK;
}

static bool
is_ipv6(const char *s)
{
	struct in6_addr a;
	return inet_pton(AF_INET6, s, &a) == 1;
}

static bool
is_ip(const char *s)
{
	struct in_addr a;
	return inet_pton(AF_INET, s, &a) == 1 || is_ipv6(s);
}

/* "8081" -> 8081; false unless 1..65535 in decimal digits only. */
static bool
parse_port(const char *p, size_t n, uint16_t *out)
{
	unsigned long v = 0;

	if (n == 0 || n > 5)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

/* One item, `item` (n bytes, trimmed, not empty) into `out`. */
static ly_status
parse_item(const char *item, size_t n, uint16_t default_port, struct ly_server_name *out, struct ly_error *err)
{
	const char *host = item, *port = NULL;
	size_t host_len = n, port_len = 0;

	if (item[0] == '[') {
		const char *end = memchr(item, ']', n);
		if (end == NULL)
			return ly_error_set(err, LY_E_INVALID, "\"%.*s\": '[' without ']'", (int)n, item);
		host = item + 1;
		host_len = (size_t)(end - host);
		size_t rest = n - (size_t)(end + 1 - item);
		if (rest > 0) {
			if (end[1] != ':')
				return ly_error_set(err, LY_E_INVALID, "\"%.*s\": only \":port\" may follow ']'", (int)n, item);
			port = end + 2;
			port_len = rest - 1;
		}
	} else {
		size_t colons = 0;
		const char *colon = NULL;
		for (size_t i = 0; i < n; i++) {
			if (item[i] == ':') {
				colons++;
				colon = colon != NULL ? colon : item + i;
			}
		}
		if (colons == 1) {
			/* host:port */
			host_len = (size_t)(colon - item);
			port = colon + 1;
			port_len = n - host_len - 1;
		}
		/* Two colons or more: a bare IPv6 address, checked below. */
	}
	if (host_len == 0 || host_len > LY_DNS_NAME_MAX)
		return ly_error_set(err, LY_E_INVALID, "\"%.*s\": no host, or a host over %d bytes", (int)(n > 300 ? 300 : n),
		    item, LY_DNS_NAME_MAX);
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	if (item[0] == '[' && !is_ipv6(out->host))
		return ly_error_set(err, LY_E_INVALID, "\"%.*s\": not an IPv6 address in brackets", (int)n, item);
	if (port == NULL && item[0] != '[' && strchr(out->host, ':') != NULL && !is_ipv6(out->host))
		return ly_error_set(err, LY_E_INVALID, "\"%.*s\": not an IPv6 address (write [address]:port)", (int)n, item);
	if (ly_servers_host_check(out->host, err) != LY_OK)
		return ly_error_wrap(err, LY_E_INVALID, "server address");
	if (port == NULL) {
		out->port = default_port;
	} else if (!parse_port(port, port_len, &out->port)) {
		return ly_error_set(err, LY_E_INVALID, "\"%.*s\": the port must be a number from 1 to 65535", (int)n, item);
	}
	out->literal = is_ip(out->host);
	return LY_OK;
}

ly_status
ly_servers_parse(const char *list, uint16_t default_port, struct ly_server_names *out, struct ly_error *err)
{
	struct ly_server_names names;
	const char *p = list;

	names.n = 0;
	if (list == NULL || list[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "no server address");
	if (strlen(list) > LY_CONFIG_VALUE_MAX)
		return ly_error_set(err, LY_E_INVALID, "server address list over %d bytes", LY_CONFIG_VALUE_MAX);
	if (default_port == 0)
		return ly_error_set(err, LY_E_INVALID, "server port 0");
	for (;;) {
		const char *end = strchr(p, ',');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
		const char *item = p;
		while (n > 0 && (item[0] == ' ' || item[0] == '\t')) {
			item++;
			n--;
		}
		while (n > 0 && (item[n - 1] == ' ' || item[n - 1] == '\t'))
			n--;
		if (n == 0)
			return ly_error_set(err, LY_E_INVALID, "server address list \"%.200s\": an empty item", list);
		if (names.n == LY_AGENT_SERVERS_MAX)
			return ly_error_set(err, LY_E_INVALID, "server address list: more than %d servers",
			    LY_AGENT_SERVERS_MAX);
		struct ly_server_name *nm = &names.v[names.n];
		LY_TRY(parse_item(item, n, default_port, nm, err));
		for (size_t i = 0; i < names.n; i++) {
			if (names.v[i].port == nm->port && strcasecmp(names.v[i].host, nm->host) == 0)
				return ly_error_set(err, LY_E_INVALID, "server address list: \"%s\" port %u given twice",
				    nm->host, (unsigned)nm->port);
		}
		names.n++;
		if (end == NULL)
			break;
		p = end + 1;
	}
	*out = names;
	return LY_OK;
}

static void
ep_fill(struct ly_server_ep *ep, size_t name, const char *addr, uint16_t port)
{
	memset(ep, 0, sizeof(*ep));
	ep->name = name;
	ep->port = port;
	(void)snprintf(ep->addr, sizeof(ep->addr), "%s", addr);
	(void)snprintf(ep->target, sizeof(ep->target), strchr(addr, ':') != NULL ? "[%s]:%u" : "%s:%u", addr,
	    (unsigned)port);
}

void
ly_servers_init(struct ly_servers *s, const struct ly_server_names *names)
{
	memset(s, 0, sizeof(*s));
	s->names = *names;
	s->cur = -1;
	for (size_t i = 0; i < names->n; i++) {
		if (!names->v[i].literal)
			continue;
		const char *one = names->v[i].host;
		(void)ly_servers_set_addrs(s, i, &one, 1);
	}
}

size_t
ly_servers_set_addrs(struct ly_servers *s, size_t name, const char *const *addrs, size_t n)
{
	struct ly_server_ep keep[LY_AGENT_SERVER_ADDRS_MAX];
	size_t nkeep = 0, added = 0;
	char cur_target[LY_SERVERS_TARGET_MAX] = "";

	if (name >= s->names.n || n == 0)
		return 0;
	if (s->cur >= 0)
		(void)snprintf(cur_target, sizeof(cur_target), "%s", s->eps[s->cur].target);
	/* The other names' addresses stay as they are, in order. */
	for (size_t i = 0; i < s->n_eps; i++) {
		if (s->eps[i].name != name)
			keep[nkeep++] = s->eps[i];
	}
	for (size_t k = 0; k < n && nkeep < LY_AGENT_SERVER_ADDRS_MAX; k++) {
		struct ly_server_ep ep;
		if (addrs[k] == NULL || !is_ip(addrs[k]) || strlen(addrs[k]) >= sizeof(ep.addr))
			continue;
		ep_fill(&ep, name, addrs[k], s->names.v[name].port);
		bool dup = false;
		for (size_t i = 0; i < nkeep && !dup; i++)
			dup = strcmp(keep[i].target, ep.target) == 0;
		if (dup)
			continue;
		/* An address seen before keeps its record. */
		for (size_t i = 0; i < s->n_eps; i++) {
			if (s->eps[i].name == name && strcmp(s->eps[i].target, ep.target) == 0) {
				ep = s->eps[i];
				break;
			}
		}
		keep[nkeep++] = ep;
		added++;
	}
	if (added == 0)
		return 0; /* nothing usable: the previous addresses stay */
	memcpy(s->eps, keep, nkeep * sizeof(keep[0]));
	s->n_eps = nkeep;
	s->resolved[name] = true;
	s->cur = -1;
	for (size_t i = 0; i < s->n_eps && cur_target[0] != '\0'; i++) {
		if (strcmp(s->eps[i].target, cur_target) == 0)
			s->cur = (int)i;
	}
	return added;
}

int
ly_servers_pick(struct ly_servers *s, int64_t now_ms, uint32_t rnd)
{
	size_t nfree = 0;
	int soonest = -1;

	if (s->n_eps == 0) {
		s->cur = -1;
		return -1;
	}
	for (size_t i = 0; i < s->n_eps; i++) {
		if (s->eps[i].down_until_ms <= now_ms)
			nfree++;
		if (soonest < 0 || s->eps[i].down_until_ms < s->eps[soonest].down_until_ms)
			soonest = (int)i;
	}
	if (nfree == 0) {
		s->cur = soonest;
		return soonest;
	}
	size_t k = rnd % nfree;
	for (size_t i = 0; i < s->n_eps; i++) {
		if (s->eps[i].down_until_ms <= now_ms && k-- == 0) {
			s->cur = (int)i;
			break;
		}
	}
	return s->cur;
}

void
ly_servers_failed(struct ly_servers *s, int64_t now_ms)
{
	if (s->cur < 0 || (size_t)s->cur >= s->n_eps)
		return;
	struct ly_server_ep *ep = &s->eps[s->cur];
	int64_t hold = LY_SERVERS_BACKOFF_BASE_MS;
	for (unsigned i = 0; i < ep->fails && hold < LY_SERVERS_BACKOFF_MAX_MS; i++)
		hold *= 2;
	if (hold > LY_SERVERS_BACKOFF_MAX_MS)
		hold = LY_SERVERS_BACKOFF_MAX_MS;
	if (ep->fails < 32)
		ep->fails++;
	ep->down_until_ms = now_ms + hold;
}

void
ly_servers_ok(struct ly_servers *s, const char *target)
{
	for (size_t i = 0; i < s->n_eps; i++) {
		if (strcmp(s->eps[i].target, target) == 0) {
			s->eps[i].fails = 0;
			s->eps[i].down_until_ms = 0;
		}
	}
}

const struct ly_server_ep *
ly_servers_current(const struct ly_servers *s)
{
	return s->cur >= 0 && (size_t)s->cur < s->n_eps ? &s->eps[s->cur] : NULL;
}

int64_t
ly_servers_wait_ms(const struct ly_servers *s, int i, int64_t now_ms)
{
	if (i < 0 || (size_t)i >= s->n_eps || s->eps[i].down_until_ms <= now_ms)
		return 0;
	return s->eps[i].down_until_ms - now_ms;
}

uint64_t
ly_servers_backoff_ms(unsigned attempt, uint32_t rnd)
{
	uint64_t step = LY_SERVERS_BACKOFF_BASE_MS;

	for (unsigned i = 0; i < attempt && step < LY_SERVERS_BACKOFF_MAX_MS; i++)
		step *= 2;
	if (step > LY_SERVERS_BACKOFF_MAX_MS)
		step = LY_SERVERS_BACKOFF_MAX_MS;
	/* Full jitter: anywhere in [0, step]. */
	return rnd % (step + 1);
}

void
ly_servers_describe(const struct ly_servers *s, char *out, size_t size)
{
	size_t off = 0;

	if (size == 0)
		return;
	out[0] = '\0';
	for (size_t i = 0; i < s->names.n && off < size; i++) {
		const struct ly_server_name *nm = &s->names.v[i];
		int w = snprintf(out + off, size - off, strchr(nm->host, ':') != NULL ? "%s[%s]:%u" : "%s%s:%u",
		    i > 0 ? "," : "", nm->host, (unsigned)nm->port);
		if (w < 0)
			break;
		off += (size_t)w;
	}
}
