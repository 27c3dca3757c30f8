/* sockscan.c: see sockscan.h. */
#include "rpc/sockscan.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

bool
ly_sockscan_peer_string(const void *sa_any, char out[LY_SOCKSCAN_PEER_MAX], size_t *addr_len)
{
	const struct sockaddr *sa = sa_any;
	char a[INET6_ADDRSTRLEN];
	unsigned port;
	int n;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = sa_any;
		if (inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a)) == NULL)
			return false;
		port = ntohs(in->sin_port);
		n = snprintf(out, LY_SOCKSCAN_PEER_MAX, "ipv4:%s", a);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = sa_any;
		port = ntohs(in6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			/* gRPC reports a mapped peer as IPv4 (grpc_sockaddr_to_uri). */
			if (inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], a, sizeof(a)) == NULL)
				return false;
			n = snprintf(out, LY_SOCKSCAN_PEER_MAX, "ipv4:%s", a);
		} else {
			if (inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a)) == NULL)
				return false;
			n = snprintf(out, LY_SOCKSCAN_PEER_MAX, "ipv6:[%s]", a);
		}
	} else {
		return false;
	}
	if (n < 0 || (size_t)n >= LY_SOCKSCAN_PEER_MAX)
		return false;
	*addr_len = (size_t)n;
	n = snprintf(out + n, LY_SOCKSCAN_PEER_MAX - (size_t)n, ":%u", port);
	return n > 0 && *addr_len + (size_t)n < LY_SOCKSCAN_PEER_MAX;
}

static uint16_t
local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

/* fd's peer string when it is a connected TCP socket on local `port`. */
static bool
conn_of(int fd, uint16_t port, struct ly_sockscan_conn *c)
{
	struct stat st;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) || local_port(fd) != port)
		return false;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) /* a listener: ENOTCONN */
		return false;
	/* Only established ones: a connection already shut down (ours or the
	 * peer's FIN) is on its way out and counts no more. */
	struct tcp_info ti;
	socklen_t tlen = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tlen) != 0 || ti.tcpi_state != TCP_ESTABLISHED)
		return false;
	if (!ly_sockscan_peer_string(&ss, c->peer, &c->addr_len))
		return false;
	c->fd = fd;
	c->ino = (uint64_t)st.st_ino;
	return true;
}

ly_status
ly_sockscan_list(uint16_t port, struct ly_sockscan_conn **out, size_t *n, struct ly_error *err)
{
	struct ly_sockscan_conn *v = NULL, c;
	size_t len = 0, cap = 0;
	struct dirent *de;
	ly_status rc = LY_OK;

	*out = NULL;
	*n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		return ly_error_set(err, LY_E_IO, "/proc/self/fd: %s", strerror(errno));
	int self = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		if (de->d_name[0] < '0' || de->d_name[0] > '9' || *end != '\0' || fd == self ||
		    fd < 0 || fd > 1 << 24)
			continue;
		if (!conn_of((int)fd, port, &c))
			continue;
		if (len == cap) {
			size_t ncap = cap != 0 ? cap * 2 : 64;
			struct ly_sockscan_conn *nv = realloc(v, ncap * sizeof(*nv));
			if (nv == NULL) {
				rc = ly_error_set(err, LY_E_NOMEM, "socket scan: out of memory");
				goto out;
			}
			v = nv;
			cap = ncap;
		}
		v[len++] = c;
	}
	*out = v;
	*n = len;
	v = NULL;
out:
	closedir(d);
	free(v);
	return rc;
}

/* See the races in sockscan.h. */
bool
ly_sockscan_shutdown_conn(const struct ly_sockscan_conn *c, uint16_t port)
{
	struct ly_sockscan_conn now;

	if (!conn_of(c->fd, port, &now) || now.ino != c->ino)
		return false;
	return shutdown(c->fd, SHUT_RDWR) == 0;
}

bool
ly_sockscan_shutdown_peer(uint16_t port, const char *peer)
{
	struct ly_sockscan_conn *v;
	size_t n;
	bool done = false;

	if (ly_sockscan_list(port, &v, &n, NULL) != LY_OK)
		return false;
	for (size_t i = 0; i < n && !done; i++) {
		if (strcmp(v[i].peer, peer) == 0)
			done = ly_sockscan_shutdown_conn(&v[i], port);
	}
	free(v);
	return done;
}

/* Address, then newest first. */
static int
by_addr_newest(const void *pa, const void *pb)
{
	const struct ly_sockscan_conn *a = pa, *b = pb;
	size_t la = a->addr_len, lb = b->addr_len;
	int c = memcmp(a->peer, b->peer, la < lb ? la : lb);

	if (c != 0)
		return c;
	if (la != lb)
		return la < lb ? -1 : 1;
	return a->ino > b->ino ? -1 : a->ino < b->ino ? 1 : 0;
}

size_t
ly_sockscan_cap_per_addr(uint16_t port, size_t max)
{
	struct ly_sockscan_conn *v;
	size_t n, shut = 0;

	if (ly_sockscan_list(port, &v, &n, NULL) != LY_OK)
		return 0;
	if (n > 1)
		qsort(v, n, sizeof(*v), by_addr_newest);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && v[j].addr_len == v[i].addr_len &&
		    memcmp(v[j].peer, v[i].peer, v[i].addr_len) == 0)
			j++;
		/* v[i..j) share an address, newest first: the first j-i-max go. */
		for (size_t k = i; j - i > max && k < j - max; k++) {
			if (ly_sockscan_shutdown_conn(&v[k], port))
				shut++;
		}
		i = j;
	}
	free(v);
	return shut;
}
