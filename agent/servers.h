/*
 * servers.h: the agent's servers (SPEC §10): the list given by
 * -serverAddress / agent.server_address, the addresses each of its names
 * resolves to, which address to use next, and how long to wait first.
 * Pure: no I/O, no clock, no randomness of its own (the caller passes
 * `now_ms` and random bits), so a unit test drives it with a fake clock
 * (tests/unit/test_agent_servers.c). sync_chan.c resolves the names on
 * the loop (uv_getaddrinfo) and hands the addresses in.
 *
 * The list: comma-separated `host[:port]` items, spaces around items
 * allowed; `host` is an IPv4 address, a DNS name, an IPv6 address in
 * brackets (`[::1]:8081`), or a bare IPv6 address (no port then); a
 * missing port is the default (-serverPort). At most
 * LY_AGENT_SERVERS_MAX items, no empty item, no item twice.
 *
 * Every address counts as a server of its own: a DNS name with three
 * addresses (a headless Kubernetes Service) is three servers. The TLS
 * check is the same for each (the server's SPIFFE ID
 * spiffe://<td>/lanyard/server: sync_internal.h), so an address is only a
 * way in, never an identity.
 *
 * Choosing (ly_servers_pick): an address not held down, at random among
 * those (so that agents with the same list spread over the servers, and a
 * thousand agents that lose one server do not all land on the same next
 * one), preferring another than the one that just failed; when every one
 * is held down, the one free soonest. An address that failed is held down
 * for 1 s doubling to 30 s by its failures in a row; one that answered is
 * free again at once.
 *
 * Waiting (ly_servers_backoff_ms): "full jitter" exponential backoff,
 * uniform in [0, min(30 s, 1 s * 2^attempt)], attempt being the failures
 * in a row of the whole agent (reset when a watch answers): the first
 * move to another server comes within a second, and agents that lost the
 * same server reconnect spread over that second, not in the same instant.
 */
#ifndef LANYARD_AGENT_SERVERS_H
#define LANYARD_AGENT_SERVERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/caps.h"
#include "lib/error.h"

/* Backoff bounds (milliseconds): the first step, and the cap of both the step and an address's hold-down. */
#define LY_SERVERS_BACKOFF_BASE_MS 1000
#define LY_SERVERS_BACKOFF_MAX_MS 30000

/* "[" + IPv6 text + "]:" + port, NUL included. */
#define LY_SERVERS_TARGET_MAX 64

/* One item of the list. */
struct ly_server_name {
	char host[LY_DNS_NAME_MAX + 1]; /* without brackets */
	uint16_t port;
	bool literal; /* an IP address: no resolution */
};

struct ly_server_names {
	struct ly_server_name v[LY_AGENT_SERVERS_MAX];
	size_t n;
};

/*
 * Parses `list` with `default_port`. LY_E_INVALID naming the item and
 * what is wrong with it (one line). `out` is filled only on success.
 */
ly_status ly_servers_parse(const char *list, uint16_t default_port, struct ly_server_names *out, struct ly_error *err)
    LY_MUST_CHECK;

/* An IP address or a DNS host name (RFC 1123 labels); LY_E_INVALID says why not. */
ly_status ly_servers_host_check(const char *s, struct ly_error *err) LY_MUST_CHECK;

/* One address to connect to. */
struct ly_server_ep {
	size_t name;                        /* its item in names */
	char target[LY_SERVERS_TARGET_MAX]; /* "192.0.2.1:8081", "[2001:db8::1]:8081": gRPC's target */
	char addr[LY_SERVERS_TARGET_MAX];   /* the address alone (numeric) */
	uint16_t port;
	unsigned fails;        /* failures in a row */
	int64_t down_until_ms; /* held down until then */
};

struct ly_servers {
	struct ly_server_names names;
	bool resolved[LY_AGENT_SERVERS_MAX]; /* the name's addresses are known (literals at once) */
	struct ly_server_ep eps[LY_AGENT_SERVER_ADDRS_MAX];
	size_t n_eps;
	int cur; /* the address in use, -1 for none */
};

/* Starts with `names` (copied): the literal ones are addresses at once, the others wait for ly_servers_set_addrs. */
void ly_servers_init(struct ly_servers *s, const struct ly_server_names *names);

/*
 * The addresses name `name` resolves to now (numeric text, IPv4 or IPv6;
 * duplicates and unreadable ones skipped; past LY_AGENT_SERVER_ADDRS_MAX in
 * all, the rest ignored): they replace the name's previous ones, each
 * keeping its failures and hold-down when it was there before. When the
 * address in use is gone from the list, none is in use (cur -1). n 0 keeps
 * the previous addresses (a failed resolution forgets nothing).
 * Returns the addresses added for the name.
 */
size_t ly_servers_set_addrs(struct ly_servers *s, size_t name, const char *const *addrs, size_t n);

/* Picks the address to use (rules above) and makes it current; -1 when no address is known. */
int ly_servers_pick(struct ly_servers *s, int64_t now_ms, uint32_t rnd);

/* The current address failed at `now_ms`: held down by its failures in a row. Nothing without a current one. */
void ly_servers_failed(struct ly_servers *s, int64_t now_ms);

/* The address with gRPC target `target` answered: no longer failing. */
void ly_servers_ok(struct ly_servers *s, const char *target);

/* The current address, or NULL. */
const struct ly_server_ep *ly_servers_current(const struct ly_servers *s);

/* Milliseconds until address `i` is free (0: now). */
int64_t ly_servers_wait_ms(const struct ly_servers *s, int i, int64_t now_ms);

/* The delay before retry number `attempt` (0: the first): full jitter, `rnd` any 32 random bits. */
uint64_t ly_servers_backoff_ms(unsigned attempt, uint32_t rnd);

/* The list as given, for log lines ("a:8081,b:8081"), cut to `size`. */
void ly_servers_describe(const struct ly_servers *s, char *out, size_t size);

#endif /* LANYARD_AGENT_SERVERS_H */
