/*
 * client.c: lanyard-example-client, an mTLS client that authenticates the
 * server by X.509-SVID through the Lanyard workload library.
 *
 *   lanyard-example-client -port 8443 -peerID spiffe://example.org/server
 *
 * It fetches its own SVID from the Workload API, connects to -addr:-port,
 * completes a TLS handshake that accepts only the given server SPIFFE ID
 * (or any ID of -trustDomain), prints whom it talks to (the server's
 * SPIFFE ID and certificate serial), sends one line and prints the answer.
 * Exit 0 when the answer came, 1 on any failure (one "Error:" line on
 * stderr), 2 on bad usage.
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

static const char *prog = "lanyard-example-client";

int
main(int argc, char **argv)
{
	struct ex_flags f;
	lanyard_x509_source *src = NULL;
	lanyard_authorizer *authz = NULL;
	struct lanyard_error err;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	struct sockaddr_in sa;
	struct timeval tv = { 10, 0 };
	char self[LANYARD_SPIFFE_ID_MAX + 1], peer[LANYARD_SPIFFE_ID_MAX + 1], serial[128], why[256];
	char line[LANYARD_SPIFFE_ID_MAX + 600], answer[2 * LANYARD_SPIFFE_ID_MAX + 64];
	int rc, fd = -1;

	if ((rc = ex_parse_flags(prog, "An mTLS client that accepts only the given server SPIFFE ID.", argc, argv, &f)) >= 0)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)f.port);
	if (inet_pton(AF_INET, f.addr, &sa.sin_addr) != 1)
		return ex_fail(EX_USAGE, prog, "-addr \"%s\": not an IPv4 address", f.addr);
	if ((rc = ex_setup(prog, &f, &src, &authz)) != 0)
		goto out;
	if (lanyard_tls_client_ctx(src, authz, &ctx, &err) != LANYARD_OK) {
		rc = ex_fail(EX_FAIL, prog, "%s", err.msg);
		goto out;
	}
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = ex_fail(EX_FAIL, prog, "cannot connect to %s:%ld: %s", f.addr, f.port, strerror(errno));
		goto out;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1) {
		rc = ex_fail(EX_FAIL, prog, "cannot make a TLS session");
		goto out;
	}
	if (SSL_connect(ssl) != 1) {
		rc = ex_fail(EX_FAIL, prog, "handshake with %s:%ld failed: %s", f.addr, f.port,
		    ex_ssl_reason(ssl, why, sizeof(why)));
		goto out;
	}
	if (lanyard_tls_peer_id(ssl, peer, &err) != LANYARD_OK) {
		rc = ex_fail(EX_FAIL, prog, "%s", err.msg);
		goto out;
	}
	ex_own_id(src, self);
	ex_peer_serial(ssl, serial, sizeof(serial));
	printf("connected to %s as %s (%s, server certificate serial %s)\n", peer, self, SSL_get_version(ssl), serial);
	fflush(stdout);
	int len = snprintf(line, sizeof(line), "%s from %s\n", f.message != NULL ? f.message : "hello", self);
	if (len < 0 || (size_t)len >= sizeof(line)) {
		rc = ex_fail(EX_USAGE, prog, "-message is too long");
		goto out;
	}
	if (SSL_write(ssl, line, len) != len) {
		rc = ex_fail(EX_FAIL, prog, "sending to %s failed: %s", peer, ex_ssl_reason(ssl, why, sizeof(why)));
		goto out;
	}
	/* With TLS 1.3 the server judges our certificate after our handshake ends: a refusal shows here. */
	int n = SSL_read(ssl, answer, (int)sizeof(answer) - 1);
	if (n <= 0) {
		rc = ex_fail(EX_FAIL, prog, "no answer from %s: %s", peer, ex_ssl_reason(ssl, why, sizeof(why)));
		goto out;
	}
	answer[n] = '\0';
	answer[strcspn(answer, "\r\n")] = '\0';
	printf("answer: %s\n", answer);
	(void)SSL_shutdown(ssl);
	rc = EX_OK;
out:
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	SSL_CTX_free(ctx);
	lanyard_authorizer_free(authz);
	lanyard_x509_source_free(src);
	return rc;
}
