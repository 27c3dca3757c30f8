/*
 * server.c: lanyard-example-server, an mTLS server that authenticates its
 * clients by X.509-SVID through the Lanyard workload library.
 *
 *   lanyard-example-server -port 8443 -peerID spiffe://example.org/client
 *
 * It fetches its own SVID from the Workload API and keeps it current (a
 * lanyard_x509_source), listens on -addr:-port, and for each connection
 * completes a TLS handshake that accepts only the given client SPIFFE ID
 * (or any ID of -trustDomain), prints "accepted <client ID>", reads one
 * line and answers one line naming both identities. Connections are served
 * one at a time, forever; rotated SVIDs and bundles are used from the next
 * handshake on. A refused handshake prints one "refused: ..." line on
 * stderr and the server goes on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "example_common.h"

static const char *prog = "lanyard-example-server";

static void
serve(SSL_CTX *ctx, lanyard_x509_source *src, int fd)
{
	char peer[LANYARD_SPIFFE_ID_MAX + 1], self[LANYARD_SPIFFE_ID_MAX + 1], why[256], line[512];
	char answer[2 * LANYARD_SPIFFE_ID_MAX + 64];
	struct lanyard_error err;
	struct timeval tv = { 10, 0 };
	SSL *ssl = SSL_new(ctx);

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
		fprintf(stderr, "refused: cannot make a TLS session\n");
		goto out;
	}
	if (SSL_accept(ssl) != 1) {
		fprintf(stderr, "refused: handshake failed: %s\n", ex_ssl_reason(ssl, why, sizeof(why)));
		goto out;
	}
	if (lanyard_tls_peer_id(ssl, peer, &err) != LANYARD_OK) {
		fprintf(stderr, "refused: %s\n", err.msg);
		goto out;
	}
	ex_own_id(src, self);
	printf("accepted %s (%s)\n", peer, SSL_get_version(ssl));
	fflush(stdout);
	int n = SSL_read(ssl, line, (int)sizeof(line) - 1);
	if (n <= 0) {
		fprintf(stderr, "read from %s failed: %s\n", peer, ex_ssl_reason(ssl, why, sizeof(why)));
		goto out;
	}
	line[n] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	printf("received from %s: %s\n", peer, line);
	fflush(stdout);
	int len = snprintf(answer, sizeof(answer), "hello %s, this is %s\n", peer, self);
	if (SSL_write(ssl, answer, len) != len)
		fprintf(stderr, "write to %s failed: %s\n", peer, ex_ssl_reason(ssl, why, sizeof(why)));
	(void)SSL_shutdown(ssl);
out:
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
}

int
main(int argc, char **argv)
{
	struct ex_flags f;
	lanyard_x509_source *src = NULL;
	lanyard_authorizer *authz = NULL;
	struct lanyard_error err;
	SSL_CTX *ctx = NULL;
	struct sockaddr_in sa;
	char self[LANYARD_SPIFFE_ID_MAX + 1];
	int rc, lfd = -1, one = 1;

	if ((rc = ex_parse_flags(prog, "An mTLS server that accepts only the given client SPIFFE ID.", argc, argv, &f)) >= 0)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)f.port);
	if (inet_pton(AF_INET, f.addr, &sa.sin_addr) != 1)
		return ex_fail(EX_USAGE, prog, "-addr \"%s\": not an IPv4 address", f.addr);
	if ((rc = ex_setup(prog, &f, &src, &authz)) != 0)
		goto out;
	if (lanyard_tls_server_ctx(src, authz, &ctx, &err) != LANYARD_OK) {
		rc = ex_fail(EX_FAIL, prog, "%s", err.msg);
		goto out;
	}
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 16) != 0) {
		rc = ex_fail(EX_FAIL, prog, "cannot listen on %s:%ld: %s", f.addr, f.port, strerror(errno));
		goto out;
	}
	ex_own_id(src, self);
	printf("listening on %s:%ld as %s\n", f.addr, f.port, self);
	fflush(stdout);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			rc = ex_fail(EX_FAIL, prog, "accept: %s", strerror(errno));
			goto out;
		}
		serve(ctx, src, fd);
	}
out:
	if (lfd >= 0)
		close(lfd);
	SSL_CTX_free(ctx);
	lanyard_authorizer_free(authz);
	lanyard_x509_source_free(src);
	return rc;
}
