/*
 * example_common.h: what both example programs share: SPIRE-style
 * single-dash flags, one-line errors, and the set-up every mTLS workload
 * does (an X.509 source, an authorizer from -peerID or -trustDomain).
 *
 * Exit codes: 0 success, 1 runtime failure, 2 bad usage.
 */
#ifndef LANYARD_EXAMPLE_COMMON_H
#define LANYARD_EXAMPLE_COMMON_H

#include <stdbool.h>

#include <lanyard/workload.h>

#define EX_OK 0
#define EX_FAIL 1
#define EX_USAGE 2

struct ex_flags {
	const char *addr;        /* -addr, default 127.0.0.1 */
	long port;               /* -port, required */
	const char *socket_path; /* -socketPath, else $SPIFFE_ENDPOINT_SOCKET */
	const char *peer_id;     /* -peerID */
	const char *trust_domain; /* -trustDomain */
	const char *message;     /* -message (client) */
	long timeout;            /* -timeout seconds, default 15 */
};

/* Parses argv; returns -1 to go on, else an exit code (usage printed for -h). */
int ex_parse_flags(const char *prog, const char *what, int argc, char **argv, struct ex_flags *f);

/* "Error: <prog>: ..." on stderr; returns `code`. */
int ex_fail(int code, const char *prog, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Starts the source and waits for a first SVID; makes the authorizer. 0 or an exit code. */
int ex_setup(const char *prog, const struct ex_flags *f, lanyard_x509_source **src, lanyard_authorizer **authz);

/* The SPIFFE ID we present now into `out` (LANYARD_SPIFFE_ID_MAX + 1). */
void ex_own_id(lanyard_x509_source *src, char *out);

/* The peer certificate's serial in hex into `out` (at least 80 bytes). */
void ex_peer_serial(SSL *ssl, char *out, size_t size);

/* Why a handshake or read failed: the library's reason, else OpenSSL's. */
const char *ex_ssl_reason(SSL *ssl, char *buf, size_t size);

#endif
