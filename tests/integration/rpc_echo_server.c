/*
 * rpc_echo_server.c: a test server on lanyard_rpc, driven by rpc_echo.py.
 *
 *   rpc_echo_server [--unix PATH] [--fd-listen PATH]
 *                   [--tls ADDR --cert F --key F [--roots F] [--client-auth none|request|require]]
 *                   [--allow-id SPIFFE_ID] [--max-request N] [--trusted yes]
 *
 * Listens on (a) a Unix socket path through gRPC's own listener, (b) a Unix
 * socket that libuv accepts, whose connections are handed to gRPC with
 * ly_rpc_server_add_fd and the caller's SO_PEERCRED as connection context,
 * (c) TCP with TLS. `--trusted yes`: the memory guard never sheds its
 * connections (ly_rpc_server_config.trusted, as the admin socket's), for a
 * test of something else that grows memory under ASan (its quarantine).
 * Prints "ready tls_port=N" once serving. SIGHUP reloads
 * the TLS files (rotation); SIGTERM shuts down cleanly and prints
 * "stats ..."; exit 0 only if every connection context came back.
 *
 * Methods (raw bytes, no protobuf):
 *   /test.Echo/Echo      unary: the request back
 *   /test.Echo/WhoAmI    unary: "peer=... spiffe=... conn=uid:U,pid:P"
 *   /test.Echo/Workload  unary: needs metadata workload.spiffe.io: true
 *   /test.Echo/Tick      stream: request "COUNT INTERVAL_MS": "tick 0" at
 *                        once, then one a period, then OK
 *   /test.Echo/Burst     stream: request "N": N messages at once, then OK
 *                        (latest wins: the client sees the first and last)
 *   /test.Echo/Slow      unary: request "MS": answered after MS milliseconds
 *                        spent on a libuv worker thread, the reply sent from
 *                        the loop once the work's completion reaches it (the
 *                        shape of the server's admin calls on its datastore
 *                        worker)
 *   /test.Echo/Stats     unary: counters, "cancelled=N ..."
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "lib/error.h"
#include "rpc/rpc.h"

struct conn_info {
	uid_t uid;
	pid_t pid;
};

struct slow {
	uv_work_t work;
	struct ly_rpc_call *call;
	unsigned long ms;
};

struct tick {
	uv_timer_t timer;
	struct ly_rpc_call *call;
	unsigned long count, next;
};

static struct {
	uv_loop_t *loop;
	struct ly_rpc *rpc;
	struct ly_rpc_server *srv;
	uv_pipe_t fd_listener;
	bool fd_listening;
	uv_signal_t sigterm, sighup;
	const char *cert, *key, *roots;
	enum ly_rpc_client_auth client_auth;
	const char *allow_id;
	bool stopping;
	unsigned long calls, cancelled, conns_added, conns_released, streams_done;
} g;

static char *
read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0;

	if (f == NULL)
		return NULL;
	buf = malloc(1024 * 1024 + 1);
	if (buf != NULL) {
		len = fread(buf, 1, 1024 * 1024, f);
		buf[len] = '\0';
	}
	fclose(f);
	return buf;
}

static void
reply_str(struct ly_rpc_call *call, const char *s)
{
	struct ly_error e;

	if (ly_rpc_call_reply(call, (const uint8_t *)s, strlen(s), 0, &e) != LY_OK)
		fprintf(stderr, "reply: %s\n", e.msg);
}

/* With --allow-id, only that TLS client may call. */
static bool
allowed(struct ly_rpc_call *call)
{
	g.calls++;
	if (g.allow_id == NULL)
		return true;
	const char *id = ly_rpc_call_peer_spiffe_id(call);
	if (id != NULL && strcmp(id, g.allow_id) == 0)
		return true;
	ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, "SPIFFE ID not allowed");
	return false;
}

static void
h_echo(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_error e;

	if (!allowed(call))
		return;
	if (ly_rpc_call_reply(call, req, len, LY_RPC_WIPE, &e) != LY_OK)
		fprintf(stderr, "echo: %s\n", e.msg);
}

static void
h_whoami(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	char out[4096], conn[64] = "-";
	const struct conn_info *ci = ly_rpc_call_conn_ctx(call);
	const char *id = ly_rpc_call_peer_spiffe_id(call);

	if (!allowed(call))
		return;
	if (ci != NULL)
		(void)snprintf(conn, sizeof(conn), "uid:%u,pid:%d", (unsigned)ci->uid, (int)ci->pid);
	(void)snprintf(out, sizeof(out), "peer=%s spiffe=%s conn=%s cert=%s",
	    ly_rpc_call_peer(call), id != NULL ? id : "-", conn,
	    ly_rpc_call_peer_cert_pem(call) != NULL ? "yes" : "no");
	reply_str(call, out);
}

static void
h_workload(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	size_t n;
	const uint8_t *v = ly_rpc_call_metadata(call, "workload.spiffe.io", &n);

	if (!allowed(call))
		return;
	if (v == NULL || n != 4 || memcmp(v, "true", 4) != 0) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT,
		    "security header missing from request");
		return;
	}
	reply_str(call, "ok");
}

static void
slow_work(uv_work_t *w)
{
	struct slow *s = w->data;
	struct timespec ts = { (time_t)(s->ms / 1000), (long)(s->ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void
slow_done(uv_work_t *w, int status)
{
	struct slow *s = w->data;

	(void)status;
	reply_str(s->call, "slow");
	free(s);
}

static void
h_slow(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	char buf[16];
	char *end;

	if (!allowed(call))
		return;
	struct slow *s = calloc(1, sizeof(*s));
	if (s == NULL || len == 0 || len >= sizeof(buf)) {
		free(s);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "request: MS");
		return;
	}
	memcpy(buf, req, len);
	buf[len] = '\0';
	s->ms = strtoul(buf, &end, 10);
	s->call = call;
	s->work.data = s;
	if (*end != '\0' || s->ms > 60000 || uv_queue_work(g.loop, &s->work, slow_work, slow_done) != 0) {
		free(s);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "request: MS, at most 60000");
	}
}

static void
tick_closed_cb(uv_handle_t *h)
{
	free(h->data);
}

static void
tick_end(struct tick *t, enum ly_rpc_code code, const char *why)
{
	uv_timer_stop(&t->timer);
	ly_rpc_call_finish(t->call, code, why);
	uv_close((uv_handle_t *)&t->timer, tick_closed_cb);
}

static void
tick_send(struct tick *t)
{
	char msg[64];
	struct ly_error e;

	int n = snprintf(msg, sizeof(msg), "tick %lu", t->next++);
	if (ly_rpc_call_send(t->call, (const uint8_t *)msg, (size_t)n, 0, &e) != LY_OK)
		fprintf(stderr, "tick: %s\n", e.msg);
}

static void
on_tick(uv_timer_t *timer)
{
	struct tick *t = timer->data;

	if (t->next >= t->count) {
		g.streams_done++;
		tick_end(t, LY_RPC_OK, NULL);
		return;
	}
	tick_send(t);
}

static void
on_tick_closed(struct ly_rpc_call *call, void *arg)
{
	g.cancelled++;
	tick_end(arg, LY_RPC_CANCELLED, "client went away");
}

static void
h_tick(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	char buf[64];
	unsigned long count, interval;

	if (!allowed(call))
		return;
	if (len >= sizeof(buf)) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "request too long");
		return;
	}
	memcpy(buf, req, len);
	buf[len] = '\0';
	if (sscanf(buf, "%lu %lu", &count, &interval) != 2 || count == 0 || count > 100000 ||
	    interval == 0 || interval > 60000) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "want \"COUNT INTERVAL_MS\"");
		return;
	}
	struct tick *t = calloc(1, sizeof(*t));
	if (t == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	t->call = call;
	t->count = count;
	uv_timer_init(g.loop, &t->timer);
	t->timer.data = t;
	ly_rpc_call_set_closed_cb(call, on_tick_closed, t);
	tick_send(t); /* the first at once */
	uv_timer_start(&t->timer, on_tick, interval, interval);
}

static void
h_burst(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	char buf[32], msg[32];
	unsigned long n;
	struct ly_error e;

	if (!allowed(call))
		return;
	if (len >= sizeof(buf)) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "request too long");
		return;
	}
	memcpy(buf, req, len);
	buf[len] = '\0';
	if (sscanf(buf, "%lu", &n) != 1 || n == 0 || n > 100000) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "want \"N\"");
		return;
	}
	for (unsigned long i = 0; i < n; i++) {
		int k = snprintf(msg, sizeof(msg), "msg %lu", i);
		if (ly_rpc_call_send(call, (const uint8_t *)msg, (size_t)k, LY_RPC_WIPE, &e) != LY_OK)
			fprintf(stderr, "burst: %s\n", e.msg);
	}
	ly_rpc_call_finish(call, LY_RPC_OK, NULL);
}

static void
h_stats(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	char out[256];

	if (!allowed(call))
		return;
	(void)snprintf(out, sizeof(out),
	    "calls=%lu cancelled=%lu conns_added=%lu conns_released=%lu streams_done=%lu", g.calls,
	    g.cancelled, g.conns_added, g.conns_released, g.streams_done);
	reply_str(call, out);
}

static const struct ly_rpc_method methods[] = {
	{ "/test.Echo/Echo", LY_RPC_UNARY, h_echo },
	{ "/test.Echo/WhoAmI", LY_RPC_UNARY, h_whoami },
	{ "/test.Echo/Workload", LY_RPC_UNARY, h_workload },
	{ "/test.Echo/Tick", LY_RPC_SERVER_STREAM, h_tick },
	{ "/test.Echo/Burst", LY_RPC_SERVER_STREAM, h_burst },
	{ "/test.Echo/Slow", LY_RPC_UNARY, h_slow },
	{ "/test.Echo/Stats", LY_RPC_UNARY, h_stats },
};

static void
conn_release(void *ctx, void *arg)
{
	g.conns_released++;
	free(ctx);
}

static void
free_handle_cb(uv_handle_t *h)
{
	free(h);
}

static void
on_fd_connection(uv_stream_t *server, int status)
{
	struct ly_error e;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	uv_os_fd_t fd;

	if (status < 0)
		return;
	uv_pipe_t *client = malloc(sizeof(*client));
	if (client == NULL)
		return;
	uv_pipe_init(g.loop, client, 0);
	if (uv_accept(server, (uv_stream_t *)client) != 0 || uv_fileno((uv_handle_t *)client, &fd) != 0) {
		uv_close((uv_handle_t *)client, free_handle_cb);
		return;
	}
	struct conn_info *ci = calloc(1, sizeof(*ci));
	if (ci != NULL && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
		ci->uid = cred.uid;
		ci->pid = cred.pid;
		if (ly_rpc_server_add_fd(g.srv, fd, ci, &e) == LY_OK) {
			g.conns_added++;
			ci = NULL;
		} else {
			fprintf(stderr, "add fd: %s\n", e.msg);
		}
	}
	free(ci);
	/* libuv cannot let go of an fd: close its handle, gRPC has a duplicate. */
	uv_close((uv_handle_t *)client, free_handle_cb);
}

static ly_status
tls_load(struct ly_rpc_tls_server *tls, struct ly_error *err)
{
	tls->cert_chain_pem = read_file(g.cert);
	tls->key_pem = read_file(g.key);
	tls->client_roots_pem = g.roots != NULL ? read_file(g.roots) : NULL;
	tls->client_auth = g.client_auth;
	if (tls->cert_chain_pem == NULL || tls->key_pem == NULL ||
	    (g.roots != NULL && tls->client_roots_pem == NULL))
		return ly_error_set(err, LY_E_IO, "cannot read the TLS files");
	return LY_OK;
}

static void
tls_free(struct ly_rpc_tls_server *tls)
{
	free((void *)(uintptr_t)tls->cert_chain_pem);
	if (tls->key_pem != NULL) {
		char *k = (char *)(uintptr_t)tls->key_pem;
		memset(k, 0, strlen(k));
		free(k);
	}
	free((void *)(uintptr_t)tls->client_roots_pem);
}

static void
on_rpc_closed(void *arg)
{
	printf("stats calls=%lu cancelled=%lu conns_added=%lu conns_released=%lu\n", g.calls,
	    g.cancelled, g.conns_added, g.conns_released);
	fflush(stdout);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	if (signum == SIGHUP) {
		struct ly_rpc_tls_server tls = { NULL, NULL, NULL, LY_RPC_CLIENT_CERT_NONE };
		struct ly_error e;
		if (tls_load(&tls, &e) != LY_OK || ly_rpc_server_set_tls(g.srv, &tls, &e) != LY_OK)
			printf("reload failed: %s\n", e.msg);
		else
			printf("reloaded\n");
		fflush(stdout);
		tls_free(&tls);
		return;
	}
	if (g.stopping)
		return;
	g.stopping = true;
	uv_close((uv_handle_t *)&g.sigterm, NULL);
	uv_close((uv_handle_t *)&g.sighup, NULL);
	if (g.fd_listening)
		uv_close((uv_handle_t *)&g.fd_listener, NULL);
	ly_rpc_close(g.rpc, on_rpc_closed, NULL);
}

static void
usage(void)
{
	fprintf(stderr, "usage: rpc_echo_server [--unix PATH] [--fd-listen PATH] [--tls ADDR "
	    "--cert F --key F [--roots F] [--client-auth none|request|require]] "
	    "[--allow-id ID] [--max-request N] [--trusted yes]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *unix_path = NULL, *fd_path = NULL, *tls_addr = NULL;
	struct ly_rpc_server_config cfg = { methods, sizeof(methods) / sizeof(methods[0]), NULL,
		0, conn_release, false, NULL, NULL, NULL, 0, 0 };
	struct ly_error e;
	int port = 0, rc;

	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (strcmp(o, "--unix") == 0)
			unix_path = v;
		else if (strcmp(o, "--fd-listen") == 0)
			fd_path = v;
		else if (strcmp(o, "--tls") == 0)
			tls_addr = v;
		else if (strcmp(o, "--cert") == 0)
			g.cert = v;
		else if (strcmp(o, "--key") == 0)
			g.key = v;
		else if (strcmp(o, "--roots") == 0)
			g.roots = v;
		else if (strcmp(o, "--allow-id") == 0)
			g.allow_id = v;
		else if (strcmp(o, "--max-request") == 0)
			cfg.max_request = strtoul(v, NULL, 10);
		else if (strcmp(o, "--trusted") == 0)
			cfg.trusted = strcmp(v, "yes") == 0;
		else if (strcmp(o, "--client-auth") == 0)
			g.client_auth = strcmp(v, "require") == 0 ? LY_RPC_CLIENT_CERT_REQUIRE :
			    strcmp(v, "request") == 0 ? LY_RPC_CLIENT_CERT_REQUEST :
			    LY_RPC_CLIENT_CERT_NONE;
		else
			usage();
	}
	signal(SIGPIPE, SIG_IGN);
	g.loop = uv_default_loop();
	if (ly_rpc_new(g.loop, &g.rpc, &e) != LY_OK ||
	    ly_rpc_server_new(g.rpc, &cfg, &g.srv, &e) != LY_OK)
		goto fail;
	if (unix_path != NULL && ly_rpc_server_listen_unix(g.srv, unix_path, &e) != LY_OK)
		goto fail;
	if (tls_addr != NULL) {
		struct ly_rpc_tls_server tls = { NULL, NULL, NULL, LY_RPC_CLIENT_CERT_NONE };
		ly_status st = tls_load(&tls, &e);
		if (st == LY_OK)
			st = ly_rpc_server_listen_tls(g.srv, tls_addr, &tls, &port, &e);
		tls_free(&tls);
		if (st != LY_OK)
			goto fail;
	}
	if (ly_rpc_server_start(g.srv, &e) != LY_OK)
		goto fail;
	if (fd_path != NULL) {
		(void)unlink(fd_path);
		uv_pipe_init(g.loop, &g.fd_listener, 0);
		g.fd_listening = true;
		if ((rc = uv_pipe_bind(&g.fd_listener, fd_path)) != 0 ||
		    (rc = uv_listen((uv_stream_t *)&g.fd_listener, 128, on_fd_connection)) != 0) {
			ly_error_set(&e, LY_E_IO, "listen %s: %s", fd_path, uv_strerror(rc));
			goto fail;
		}
	}
	uv_signal_init(g.loop, &g.sigterm);
	uv_signal_start(&g.sigterm, on_signal, SIGTERM);
	uv_signal_init(g.loop, &g.sighup);
	uv_signal_start(&g.sighup, on_signal, SIGHUP);
	printf("ready tls_port=%d\n", port);
	fflush(stdout);
	uv_run(g.loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(g.loop);
	if (rc != 0) {
		fprintf(stderr, "loop not empty at exit: %s\n", uv_strerror(rc));
		return 1;
	}
	return g.conns_added == g.conns_released ? 0 : 3;
fail:
	fprintf(stderr, "rpc_echo_server: %s\n", e.msg);
	/* Release what was made, the orderly way. */
	if (g.fd_listening)
		uv_close((uv_handle_t *)&g.fd_listener, NULL);
	ly_rpc_close(g.rpc, NULL, NULL);
	uv_run(g.loop, UV_RUN_DEFAULT);
	(void)uv_loop_close(g.loop);
	return 1;
}
