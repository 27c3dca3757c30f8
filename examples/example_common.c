/* example_common.c: see example_common.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "example_common.h"

int
ex_fail(int code, const char *prog, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "Error: %s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

static void
usage(FILE *out, const char *prog, const char *what)
{
	fprintf(out,
	    "Usage: %s -port N (-peerID ID | -trustDomain TD) [flags]\n\n%s\n\nFlags:\n"
	    "  -addr IP           address (default 127.0.0.1)\n"
	    "  -port N            TCP port (required)\n"
	    "  -socketPath P      Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET)\n"
	    "  -peerID ID         accept only this peer SPIFFE ID\n"
	    "  -trustDomain TD    accept any peer of this trust domain\n"
	    "  -message TEXT      what the client sends (client only)\n"
	    "  -timeout SEC       wait this long for a first SVID (default 15)\n",
	    prog, what);
}

static int
parse_long(const char *prog, const char *name, const char *v, long min, long max, long *out)
{
	char *end = NULL;
	long n = strtol(v, &end, 10);

	if (v[0] == '\0' || end == NULL || *end != '\0' || n < min || n > max)
		return ex_fail(EX_USAGE, prog, "-%s \"%s\": must be a number from %ld to %ld", name, v, min, max);
	*out = n;
	return -1;
}

int
ex_parse_flags(const char *prog, const char *what, int argc, char **argv, struct ex_flags *f)
{
	memset(f, 0, sizeof(*f));
	f->addr = "127.0.0.1";
	f->port = -1;
	f->timeout = 15;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-')
			return ex_fail(EX_USAGE, prog, "unexpected argument \"%s\"", a);
		a += a[1] == '-' ? 2 : 1;
		if (strcmp(a, "h") == 0 || strcmp(a, "help") == 0) {
			usage(stdout, prog, what);
			return EX_OK;
		}
		char name[32];
		const char *eq = strchr(a, '='), *v;
		size_t nl = eq != NULL ? (size_t)(eq - a) : strlen(a);
		if (nl == 0 || nl >= sizeof(name))
			return ex_fail(EX_USAGE, prog, "unknown flag \"%s\"", argv[i]);
		memcpy(name, a, nl);
		name[nl] = '\0';
		if (eq != NULL) {
			v = eq + 1;
		} else {
			if (i + 1 >= argc)
				return ex_fail(EX_USAGE, prog, "-%s needs a value", name);
			v = argv[++i];
		}
		int rc = -1;
		if (strcmp(name, "addr") == 0)
			f->addr = v;
		else if (strcmp(name, "port") == 0)
			rc = parse_long(prog, name, v, 1, 65535, &f->port);
		else if (strcmp(name, "socketPath") == 0)
			f->socket_path = v;
		else if (strcmp(name, "peerID") == 0)
			f->peer_id = v;
		else if (strcmp(name, "trustDomain") == 0)
			f->trust_domain = v;
		else if (strcmp(name, "message") == 0)
			f->message = v;
		else if (strcmp(name, "timeout") == 0)
			rc = parse_long(prog, name, v, 1, 3600, &f->timeout);
		else
			return ex_fail(EX_USAGE, prog, "unknown flag \"-%s\"", name);
		if (rc >= 0)
			return rc;
	}
	if (f->port < 0)
		return ex_fail(EX_USAGE, prog, "-port is required");
	if ((f->peer_id == NULL) == (f->trust_domain == NULL))
		return ex_fail(EX_USAGE, prog, "exactly one of -peerID and -trustDomain is required");
	return -1;
}

int
ex_setup(const char *prog, const struct ex_flags *f, lanyard_x509_source **src, lanyard_authorizer **authz)
{
	struct lanyard_error err;
	char path[LANYARD_SOCKET_PATH_MAX + 1];

	*src = NULL;
	*authz = NULL;
	if (f->peer_id != NULL && lanyard_authorize_id(f->peer_id, authz, &err) != LANYARD_OK)
		return ex_fail(EX_USAGE, prog, "-peerID: %s", err.msg);
	if (f->trust_domain != NULL && lanyard_authorize_member_of(f->trust_domain, authz, &err) != LANYARD_OK)
		return ex_fail(EX_USAGE, prog, "-trustDomain: %s", err.msg);
	if (lanyard_endpoint_resolve(f->socket_path, path, &err) != LANYARD_OK)
		return ex_fail(EX_USAGE, prog, "%s", err.msg);
	if (lanyard_x509_source_new(path, NULL, NULL, src, &err) != LANYARD_OK)
		return ex_fail(EX_FAIL, prog, "%s", err.msg);
	if (lanyard_x509_source_wait(*src, (unsigned)f->timeout * 1000, &err) != LANYARD_OK)
		return ex_fail(EX_FAIL, prog, "%s", err.msg);
	return 0;
}

void
ex_own_id(lanyard_x509_source *src, char *out)
{
	lanyard_x509_context *ctx = lanyard_x509_source_get(src);

	(void)snprintf(out, LANYARD_SPIFFE_ID_MAX + 1, "%s",
	    ctx != NULL ? lanyard_x509_svid_id(lanyard_x509_context_svid(ctx, 0)) : "?");
	lanyard_x509_context_free(ctx);
}

void
ex_peer_serial(SSL *ssl, char *out, size_t size)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	BIGNUM *bn = peer != NULL ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), NULL) : NULL;
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

	(void)snprintf(out, size, "%s", hex != NULL ? hex : "?");
	OPENSSL_free(hex);
	BN_free(bn);
}

const char *
ex_ssl_reason(SSL *ssl, char *buf, size_t size)
{
	const char *why = ssl != NULL ? lanyard_tls_verify_error(ssl) : NULL;
	unsigned long e = ERR_peek_last_error();

	if (why != NULL)
		return why;
	if (e != 0) {
		ERR_error_string_n(e, buf, size);
		ERR_clear_error();
		return buf;
	}
	(void)snprintf(buf, size, "the connection was closed");
	return buf;
}
