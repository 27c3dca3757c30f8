/*
 * sockscan.h: this process's own TCP connections on one listening port,
 * found through /proc/self/fd, so that limits gRPC core 1.51 cannot apply
 * can still be enforced on connections gRPC accepted itself.
 *
 * Why: gRPC accepts the TLS listener's connections on its own threads and
 * gives no hook per connection (the socket mutator's refusal stops the
 * listener in 1.51; grpc_server_add_channel_from_fd takes no TLS
 * credentials). What it does report is each call's peer string
 * ("ipv4:10.0.0.1:5000"). So the bridge finds a connection by that string
 * here and shuts it down (shutdown(2), SHUT_RDWR): gRPC then sees the
 * connection fail, cancels its streams and closes the fd itself. The fd
 * stays gRPC's: it is never closed here.
 *
 * Peer strings are formatted as gRPC formats them: "ipv4:A.B.C.D:PORT",
 * "ipv6:[ADDR]:PORT"; an IPv4-mapped IPv6 peer is reported as ipv4.
 * Races: an fd seen here may be closed by gRPC and its number reused before
 * shutdown(2); the peer is read again just before, so at worst a connection
 * of the same peer address and port (the same client) is shut down.
 * Costs: one readdir of /proc/self/fd and three syscalls per descriptor.
 * No gRPC, no libuv; any thread.
 */
#ifndef LANYARD_RPC_SOCKSCAN_H
#define LANYARD_RPC_SOCKSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"

/* "ipv6:[" + INET6_ADDRSTRLEN + "]:65535" */
#define LY_SOCKSCAN_PEER_MAX 72

struct ly_sockscan_conn {
	int fd;
	uint64_t ino;                      /* socket inode: larger is newer */
	char peer[LY_SOCKSCAN_PEER_MAX];   /* gRPC's peer string */
	size_t addr_len;                   /* the peer's address part (no port) */
};

/*
 * The established TCP connections of this process whose local port is
 * `port` (listeners and connections already shut down excluded). *out is malloc'd (free it), *n its length.
 */
ly_status ly_sockscan_list(uint16_t port, struct ly_sockscan_conn **out, size_t *n,
    struct ly_error *err) LY_MUST_CHECK;

/* Shuts `c` (from ly_sockscan_list) down if its fd still names the same socket. */
bool ly_sockscan_shutdown_conn(const struct ly_sockscan_conn *c, uint16_t port);

/* Shuts down the connection on local `port` whose peer string is `peer`; false if none. */
bool ly_sockscan_shutdown_peer(uint16_t port, const char *peer);

/*
 * Shuts down, for every peer address with more than `max` connections on
 * local `port`, its newest connections over `max`. Returns how many.
 */
size_t ly_sockscan_cap_per_addr(uint16_t port, size_t max);

/* Formats a peer as gRPC does; false for a family other than AF_INET/AF_INET6. */
bool ly_sockscan_peer_string(const void *sockaddr, char out[LY_SOCKSCAN_PEER_MAX], size_t *addr_len);

#endif /* LANYARD_RPC_SOCKSCAN_H */
