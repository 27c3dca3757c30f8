/*
 * rpc_echo_client.c: a test client on lanyard_rpc's channels, against
 * rpc_echo_server (driven by rpc_echo.py).
 *
 *   rpc_echo_client --target T [--roots F --expect-id ID [--cert F --key F]]
 *                   [--md KEY=VALUE] [--timeout MS] COMMAND [ARGS]
 *
 * With --roots the channel is TLS and the server must present a
 * certificate whose only URI SAN is --expect-id (checked here with OpenSSL,
 * in the verify callback); without, the target must be unix:.
 * Commands:
 *   echo TEXT      unary; exit 0 when the reply is TEXT
 *   call METHOD    unary with an empty request; prints the status
 *   whoami         prints the server's view of us
 *   tick N MS      a stream; exit 0 when N messages then OK came
 *   cancel         a long stream cancelled after 2 messages; wants CANCELLED
 *   bench N        N sequential echo calls; prints median and p90 in µs
 *   firstmsg N     N streams; prints the median time to the first message
 * Exit: 0 success, 1 failure (prints "status=CODE details=..."), 2 usage.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "lib/error.h"
#include "rpc/rpc.h"

static struct {
	uv_loop_t *loop;
	struct ly_rpc *rpc;
	struct ly_rpc_channel *ch;
	const char *expect_id;
	struct ly_rpc_md md[4];
	size_t n_md;
	int64_t timeout_ms;
	const char *cmd;
	const char *arg1, *arg2;
	int exit_code;
	/* progress */
	unsigned long n, done, msgs;
	uint64_t t0;
	uint64_t *samples;
	char last[256];
	struct ly_rpc_ccall *stream;
} g;

/* The server's certificate: exactly one URI SAN, equal to --expect-id. */
static ly_status
verify_server(void *arg, const char *leaf_pem, const char *chain_pem, struct ly_error *err)
{
	const char *want = arg;
	BIO *bio = BIO_new_mem_buf(leaf_pem, -1);
	X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	GENERAL_NAMES *sans = x != NULL ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
	const char *uri = NULL;
	int n_uri = 0;
	ly_status rc;

	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type == GEN_URI) {
			n_uri++;
			uri = (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
		}
	}
	if (x == NULL)
		rc = ly_error_set(err, LY_E_INVALID, "server certificate unreadable");
	else if (n_uri != 1)
		rc = ly_error_set(err, LY_E_UNTRUSTED, "server certificate has %d URI SANs", n_uri);
	else if (strcmp(uri, want) != 0)
		rc = ly_error_set(err, LY_E_UNTRUSTED, "server is %s, not %s", uri, want);
	else
		rc = LY_OK;
	GENERAL_NAMES_free(sans);
	X509_free(x);
	BIO_free(bio);
	return rc;
}

static char *
read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t len;

	if (f == NULL) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	buf = malloc(1024 * 1024 + 1);
	if (buf == NULL)
		exit(2);
	len = fread(buf, 1, 1024 * 1024, f);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

static void
stop(int code)
{
	g.exit_code = code;
	ly_rpc_close(g.rpc, NULL, NULL);
}

static void start_next(void);

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void
report(const char *what)
{
	qsort(g.samples, g.n, sizeof(g.samples[0]), cmp_u64);
	printf("%s n=%lu median_us=%.1f p90_us=%.1f min_us=%.1f\n", what, g.n,
	    (double)g.samples[g.n / 2] / 1000.0, (double)g.samples[g.n * 9 / 10] / 1000.0,
	    (double)g.samples[0] / 1000.0);
}

static void
on_message(struct ly_rpc_ccall *call, const uint8_t *msg, size_t len, void *arg)
{
	if (g.msgs++ == 0 && strcmp(g.cmd, "firstmsg") == 0)
		g.samples[g.done] = uv_hrtime() - g.t0;
	if (len >= sizeof(g.last))
		len = sizeof(g.last) - 1;
	memcpy(g.last, msg, len);
	g.last[len] = '\0';
	if (strcmp(g.cmd, "cancel") == 0 && g.msgs == 2)
		ly_rpc_ccall_cancel(call);
}

static void
on_status(struct ly_rpc_ccall *call, enum ly_rpc_code code, const char *details, void *arg)
{
	const char *cmd = g.cmd;

	if (strcmp(cmd, "cancel") == 0) {
		printf("status=%s msgs=%lu\n", ly_rpc_code_str(code), g.msgs);
		stop(code == LY_RPC_CANCELLED && g.msgs == 2 ? 0 : 1);
		return;
	}
	if (strcmp(cmd, "call") == 0) {
		printf("status=%s details=%s\n", ly_rpc_code_str(code), details);
		stop(0);
		return;
	}
	if (code != LY_RPC_OK) {
		printf("status=%s details=%s\n", ly_rpc_code_str(code), details);
		stop(1);
		return;
	}
	if (strcmp(cmd, "echo") == 0) {
		printf("%s\n", g.last);
		stop(strcmp(g.last, g.arg1) == 0 ? 0 : 1);
	} else if (strcmp(cmd, "whoami") == 0) {
		printf("%s\n", g.last);
		stop(0);
	} else if (strcmp(cmd, "tick") == 0) {
		printf("msgs=%lu last=%s\n", g.msgs, g.last);
		stop(g.msgs == strtoul(g.arg1, NULL, 10) ? 0 : 1);
	} else if (strcmp(cmd, "bench") == 0 || strcmp(cmd, "firstmsg") == 0) {
		if (strcmp(cmd, "bench") == 0)
			g.samples[g.done] = uv_hrtime() - g.t0;
		if (++g.done < g.n) {
			start_next();
			return;
		}
		report(strcmp(cmd, "bench") == 0 ? "unary_rtt" : "stream_first_msg");
		stop(0);
	}
}

static void
start_call(const char *method, enum ly_rpc_kind kind, const char *req)
{
	struct ly_rpc_call_config cc = {
		.method = method,
		.kind = kind,
		.req = (const uint8_t *)req,
		.req_len = strlen(req),
		.timeout_ms = g.timeout_ms,
		.md = g.md,
		.n_md = g.n_md,
		.on_message = on_message,
		.on_status = on_status,
	};
	struct ly_error e;

	g.msgs = 0;
	g.t0 = uv_hrtime();
	if (ly_rpc_channel_call(g.ch, &cc, &g.stream, &e) != LY_OK) {
		fprintf(stderr, "call: %s\n", e.msg);
		stop(1);
	}
}

static void
start_next(void)
{
	if (strcmp(g.cmd, "bench") == 0)
		start_call("/test.Echo/Echo", LY_RPC_UNARY, "ping");
	else
		start_call("/test.Echo/Tick", LY_RPC_SERVER_STREAM, "1 1");
}

static void
usage(void)
{
	fprintf(stderr, "usage: rpc_echo_client --target T [--roots F --expect-id ID "
	    "[--cert F --key F]] [--md K=V] [--timeout MS] COMMAND [ARGS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *target = NULL, *roots = NULL, *cert = NULL, *key = NULL;
	struct ly_error e;
	int i;

	g.timeout_ms = 5000;
	for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (i + 1 >= argc)
			usage();
		const char *o = argv[i], *v = argv[i + 1];
		if (strcmp(o, "--target") == 0)
			target = v;
		else if (strcmp(o, "--roots") == 0)
			roots = v;
		else if (strcmp(o, "--expect-id") == 0)
			g.expect_id = v;
		else if (strcmp(o, "--cert") == 0)
			cert = v;
		else if (strcmp(o, "--key") == 0)
			key = v;
		else if (strcmp(o, "--timeout") == 0)
			g.timeout_ms = strtoll(v, NULL, 10);
		else if (strcmp(o, "--md") == 0 && g.n_md < 4) {
			char *kv = strdup(v), *eq = strchr(kv, '=');
			if (eq == NULL)
				usage();
			*eq = '\0';
			g.md[g.n_md].key = kv;
			g.md[g.n_md++].value = eq + 1;
		} else
			usage();
	}
	if (target == NULL || i >= argc)
		usage();
	g.cmd = argv[i++];
	g.arg1 = i < argc ? argv[i] : "";
	g.arg2 = i + 1 < argc ? argv[i + 1] : "";

	g.loop = uv_default_loop();
	if (ly_rpc_new(g.loop, &g.rpc, &e) != LY_OK) {
		fprintf(stderr, "%s\n", e.msg);
		return 1;
	}
	struct ly_rpc_tls_client tls = { NULL, NULL, NULL, verify_server, NULL };
	struct ly_rpc_channel_config chc = { target, NULL, 0 };
	if (roots != NULL) {
		if (g.expect_id == NULL)
			usage();
		tls.root_pem = read_file(roots);
		tls.cert_chain_pem = cert != NULL ? read_file(cert) : NULL;
		tls.key_pem = key != NULL ? read_file(key) : NULL;
		tls.verify_arg = (void *)(uintptr_t)g.expect_id;
		chc.tls = &tls;
	}
	ly_status st = ly_rpc_channel_new(g.rpc, &chc, &g.ch, &e);
	free((void *)(uintptr_t)tls.root_pem);
	free((void *)(uintptr_t)tls.cert_chain_pem);
	free((void *)(uintptr_t)tls.key_pem);
	if (st != LY_OK) {
		fprintf(stderr, "%s\n", e.msg);
		stop(1);
		uv_run(g.loop, UV_RUN_DEFAULT);
		return 1;
	}

	if (strcmp(g.cmd, "echo") == 0) {
		start_call("/test.Echo/Echo", LY_RPC_UNARY, g.arg1);
	} else if (strcmp(g.cmd, "call") == 0) {
		start_call(g.arg1, LY_RPC_UNARY, "");
	} else if (strcmp(g.cmd, "whoami") == 0) {
		start_call("/test.Echo/WhoAmI", LY_RPC_UNARY, "");
	} else if (strcmp(g.cmd, "tick") == 0) {
		char req[64];
		(void)snprintf(req, sizeof(req), "%s %s", g.arg1, g.arg2);
		start_call("/test.Echo/Tick", LY_RPC_SERVER_STREAM, req);
	} else if (strcmp(g.cmd, "cancel") == 0) {
		start_call("/test.Echo/Tick", LY_RPC_SERVER_STREAM, "1000 20");
	} else if (strcmp(g.cmd, "bench") == 0 || strcmp(g.cmd, "firstmsg") == 0) {
		g.n = strtoul(g.arg1, NULL, 10);
		if (g.n == 0)
			usage();
		g.samples = calloc(g.n, sizeof(*g.samples));
		start_next();
	} else {
		usage();
	}
	uv_run(g.loop, UV_RUN_DEFAULT);
	(void)uv_loop_close(g.loop);
	free(g.samples);
	for (size_t k = 0; k < g.n_md; k++)
		free((void *)(uintptr_t)g.md[k].key);
	return g.exit_code;
}
