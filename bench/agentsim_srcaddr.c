/*
 * agentsim_srcaddr.c: many source addresses for bench_agentsim's
 * connections.
 *
 * Real agents come from many hosts; ours all come from 127.0.0.1, and the server caps what one
 * peer address may hold (LY_RPC_CONNS_PER_ADDR_MAX connections, LY_RPC_CALLS_PER_ADDR_MAX
 * calls). With -srcAddrs N (srcaddr_set), every TCP connection gRPC makes to a 127/8 address is
 * first bound to one of 127.0.1.2, 127.0.1.3, ... (N addresses, round robin; all of 127/8 is
 * local on Linux). This process's own connect() comes before libc's for gRPC's calls (the
 * executable's symbol interposes: this file is linked into it as an object, never from a
 * library), and goes to the system call itself. gRPC's threads call it: the counter is atomic.
 */
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agentsim.h"

static unsigned src_addrs;
static atomic_uint src_next;

static uint32_t
src_addr(unsigned k)
{
	return 0x7f000000u | ((1u + k / 250u) << 8) | (2u + k % 250u);
}

int
connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	if (src_addrs > 0 && sa != NULL) {
		unsigned k = atomic_fetch_add(&src_next, 1u) % src_addrs;
		if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
			struct sockaddr_in to, from;
			memcpy(&to, sa, sizeof(to));
			if ((ntohl(to.sin_addr.s_addr) >> 24) == 127) {
				memset(&from, 0, sizeof(from));
				from.sin_family = AF_INET;
				from.sin_addr.s_addr = htonl(src_addr(k));
				(void)bind(fd, (const struct sockaddr *)&from, sizeof(from));
			}
		} else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
			/* gRPC's dual-stack sockets: IPv4 as ::ffff:a.b.c.d. */
			struct sockaddr_in6 to, from;
			memcpy(&to, sa, sizeof(to));
			if (IN6_IS_ADDR_V4MAPPED(&to.sin6_addr) && to.sin6_addr.s6_addr[12] == 127) {
				uint32_t v4 = htonl(src_addr(k));
				memset(&from, 0, sizeof(from));
				from.sin6_family = AF_INET6;
				from.sin6_addr.s6_addr[10] = 0xff;
				from.sin6_addr.s6_addr[11] = 0xff;
				memcpy(&from.sin6_addr.s6_addr[12], &v4, 4);
				(void)bind(fd, (const struct sockaddr *)&from, sizeof(from));
			}
		}
	}
	return (int)syscall(SYS_connect, fd, sa, len);
}

void
srcaddr_set(unsigned n)
{
	src_addrs = n;
}
