/*
 * test_rpc_sockscan.c: finding our own TCP connections on a listening port
 * through /proc/self/fd (rpc/sockscan.h): gRPC's peer-string format (IPv4,
 * IPv6, IPv4-mapped), the listener itself left out, one connection shut
 * down by its peer string (the client then reads EOF), and the newest
 * connections over a per-address cap shut down, the oldest kept.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "rpc/sockscan.h"

struct pair {
	int client, server;
	char peer[LY_SOCKSCAN_PEER_MAX];
};

static int
listener(int family, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		int off = 0;
		assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)), 0);
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_any;
		len = sizeof(*in6);
	}
	assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
	assert_int_equal(listen(fd, 16), 0);
	len = sizeof(ss);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port :
					  ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

/* Connects over `family` (loopback) to `port` and accepts on `lfd`. */
static void
connect_pair(int lfd, int family, uint16_t port, struct pair *p)
{
	struct sockaddr_storage ss;
	socklen_t len;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		in6->sin6_addr = in6addr_loopback;
		len = sizeof(*in6);
	}
	p->client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(p->client >= 0);
	assert_int_equal(connect(p->client, (struct sockaddr *)&ss, len), 0);
	p->server = accept(lfd, NULL, NULL);
	assert_true(p->server >= 0);
	/* The peer as the server sees it is the client's local address. */
	struct sockaddr_storage me;
	socklen_t mlen = sizeof(me);
	size_t alen;
	assert_int_equal(getsockname(p->client, (struct sockaddr *)&me, &mlen), 0);
	assert_true(ly_sockscan_peer_string(&me, p->peer, &alen));
}

static void
close_pair(struct pair *p)
{
	close(p->client);
	close(p->server);
}

/* The client reads EOF (the server side was shut down) rather than blocking. */
static bool
client_sees_eof(int fd)
{
	char c;
	struct timeval tv = { 2, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return recv(fd, &c, 1, 0) == 0;
}

static void
test_peer_string_format(void **state)
{
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	char s[LY_SOCKSCAN_PEER_MAX];
	size_t alen;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(5000);
	inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
	assert_true(ly_sockscan_peer_string(&in, s, &alen));
	assert_string_equal(s, "ipv4:10.1.2.3:5000");
	assert_int_equal(alen, strlen("ipv4:10.1.2.3"));
	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(65535);
	inet_pton(AF_INET6, "fd00::1", &in6.sin6_addr);
	assert_true(ly_sockscan_peer_string(&in6, s, &alen));
	assert_string_equal(s, "ipv6:[fd00::1]:65535");
	assert_int_equal(alen, strlen("ipv6:[fd00::1]"));
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6.sin6_addr);
	assert_true(ly_sockscan_peer_string(&in6, s, &alen));
	assert_string_equal(s, "ipv4:192.0.2.7:65535"); /* as gRPC reports a mapped peer */
	struct sockaddr un = { .sa_family = AF_UNIX };
	assert_false(ly_sockscan_peer_string(&un, s, &alen));
}

static void
test_list_and_shutdown_peer(void **state)
{
	uint16_t port, other_port;
	int lfd = listener(AF_INET, &port), ofd = listener(AF_INET, &other_port);
	struct pair a, b, o;
	struct ly_sockscan_conn *v;
	size_t n;

	(void)state;
	connect_pair(lfd, AF_INET, port, &a);
	connect_pair(lfd, AF_INET, port, &b);
	connect_pair(ofd, AF_INET, other_port, &o); /* another port: never listed */
	assert_int_equal(ly_sockscan_list(port, &v, &n, NULL), LY_OK);
	/* Listed: our two accepted sockets (the listener has no peer; the
	 * clients' local ports are not `port`). */
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++)
		assert_true(v[i].fd == a.server || v[i].fd == b.server);
	free(v);
	assert_true(ly_sockscan_shutdown_peer(port, b.peer));
	assert_true(client_sees_eof(b.client));
	assert_false(ly_sockscan_shutdown_peer(port, "ipv4:127.0.0.1:1")); /* nobody */
	assert_false(ly_sockscan_shutdown_peer(other_port + 0, a.peer));    /* not on that port */
	/* a is untouched: it still carries data. */
	assert_int_equal(write(a.server, "x", 1), 1);
	char c;
	assert_int_equal(read(a.client, &c, 1), 1);
	close_pair(&a);
	close_pair(&b);
	close_pair(&o);
	close(lfd);
	close(ofd);
}

static void
test_cap_per_addr_newest_go(void **state)
{
	uint16_t port;
	int lfd = listener(AF_INET6, &port); /* dual stack: IPv4 peers arrive mapped */
	struct pair p[5], six;

	(void)state;
	for (int i = 0; i < 5; i++)
		connect_pair(lfd, AF_INET, port, &p[i]);
	connect_pair(lfd, AF_INET6, port, &six); /* another address (::1): its own count */
	assert_int_equal(ly_sockscan_cap_per_addr(port, 3), 2);
	/* The two newest IPv4 connections went; the three oldest and ::1 stay. */
	assert_true(client_sees_eof(p[3].client));
	assert_true(client_sees_eof(p[4].client));
	for (int i = 0; i < 3; i++) {
		assert_int_equal(write(p[i].server, "x", 1), 1);
		char c;
		assert_int_equal(read(p[i].client, &c, 1), 1);
	}
	assert_int_equal(write(six.server, "x", 1), 1);
	/* The two shut down are no longer counted (not established), even before they are closed. */
	assert_int_equal(ly_sockscan_cap_per_addr(port, 3), 0);
	for (int i = 0; i < 5; i++)
		close_pair(&p[i]);
	close_pair(&six);
	close(lfd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peer_string_format),
		cmocka_unit_test(test_list_and_shutdown_peer),
		cmocka_unit_test(test_cap_per_addr_newest_go),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
