/*
 * cli.c: `lanyard-agent api ...` and `lanyard-agent healthcheck` (SPEC §2,
 * SPIRE's verbs and single-dash flags). Each is a Workload API client like
 * any other workload, through the project's one client library
 * (lib/workload, wl_internal.h): plaintext gRPC over the agent's Unix
 * socket (the agent authorizes by attestation, SPEC §3), every call but
 * the health check carrying the `workload.spiffe.io: true` header, over
 * the one connection whose listener was judged first (SO_PEERCRED,
 * ly_sockpath_peer_check, then wl_client_new_fd).
 *
 * The socket: -socketPath, else SPIFFE_ENDPOINT_SOCKET (unix:///path or
 * unix:/path, Workload Endpoint §4), else LY_AGENT_SOCKET_DEFAULT.
 *
 *   api fetch x509 [-write DIR]   the caller's X.509-SVIDs (SPIFFE ID and
 *                                 validity of each); -write DIR writes
 *                                 svid.N.pem (chain), svid.N.key (PKCS#8,
 *                                 0600), bundle.N.pem and, for federated
 *                                 trust domains, federated_bundle.N.M.pem,
 *                                 all staged then renamed together
 *                                 (cli_helper.h: temporary files, fsync,
 *                                 rename, fsync of DIR)
 *   api fetch jwt -audience AUD [-audience ...] [-spiffeID ID]
 *                                 JWT-SVIDs, then the JWT bundles: the one
 *                                 place a token is printed (the user asked)
 *   api fetch jwt-bundles         the JWT bundles (JWKS per trust domain)
 *   api validate [jwt] -audience AUD -svid TOKEN
 *                                 ValidateJWTSVID: the SPIFFE ID and claims
 *   api watch                     every X.509-SVID stream update (SPIFFE
 *                                 IDs, expiry) until interrupted
 *   api watch -write DIR [-pidFile FILE [-signal NAME]]
 *                                 the helper mode (spiffe-helper's job):
 *                                 the files of `api fetch x509 -write` kept
 *                                 up to date at every update, then NAME
 *                                 (default HUP) sent to the pid in FILE,
 *                                 read afresh each time; reconnects with
 *                                 backoff whatever ends the stream; only
 *                                 SIGTERM/SIGINT end it (exit 0)
 *   healthcheck                   grpc.health.v1 Check: exit 0 when SERVING
 *
 * Exit codes: 0 success; 1 runtime failure (the agent refused or cannot be
 * reached, or is unhealthy); 2 bad usage. Every error is one line on
 * stderr, "Error: <what and why>". Keys and tokens received are wiped from
 * our memory once written.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "agent/agent.h"
#include "agent/cli_helper.h"
#include "agent/fileset.h"
#include "lib/buf.h"
#include "lib/cmdline.h"
#include "lib/der.h"
#include "lib/flags.h"
#include "lib/pbstruct.h"
#include "lib/pbview.h"
#include "lib/sockpath.h"
#include "lib/spiffeid.h"
#include "lib/workload/wl_internal.h"
#include "rpc/rpc.h"
#include "workload.pb-c.h"

#define EXIT_RUNTIME LY_CMDLINE_EXIT_RUNTIME
#define EXIT_USAGE LY_CMDLINE_EXIT_USAGE
#define TIMEOUT_DEFAULT 5 /* seconds, as SPIRE's `api fetch` */
#define M(name) "/SpiffeWorkloadAPI/" name
#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define NFLAGS(f) (sizeof(f) / sizeof((f)[0]))

/* lib/cmdline.h and lib/pbview.h, under the short names this file has always used. */
#define fail(...) ly_cmdline_fail(__VA_ARGS__)
#define unconst(s) ly_pbview_str_or_empty(s)


/* ---- the socket ---------------------------------------------------------------- */

/*
 * The socket to use: the flag, else SPIFFE_ENDPOINT_SOCKET, else the
 * default. Returns 0, or the exit code after printing the error.
 */
static int
resolve_socket(const char *cmd, const char *flag, const char **out)
{
	const char *env = getenv("SPIFFE_ENDPOINT_SOCKET");

	if (flag != NULL) {
		*out = flag;
	} else if (env != NULL && env[0] != '\0') {
		/* Workload Endpoint §4: unix:///path (empty authority) or unix:/path. */
		if (strncmp(env, "unix://", 7) == 0 && env[7] == '/')
			*out = env + 7;
		else if (strncmp(env, "unix:", 5) == 0 && env[5] == '/' && env[6] != '/')
			*out = env + 5;
		else
			return fail(EXIT_USAGE, "%s: SPIFFE_ENDPOINT_SOCKET \"%s\": only unix:///path addresses are supported",
			    cmd, env);
	} else {
		*out = LY_AGENT_SOCKET_DEFAULT;
	}
	if ((*out)[0] != '/')
		return fail(EXIT_USAGE, "%s: socket path \"%s\" is not absolute", cmd, *out);
	return 0;
}

/* ---- calls ----------------------------------------------------------------------- */

/*
 * The calls go through the project's one Workload API client, lib/workload
 * (wl_rpc_call: its own completion queue, no event loop of ours), on a
 * client made over the very connection judged by SO_PEERCRED
 * (wl_client_new_fd). The CLI words its own errors from the status the
 * agent sent, so its lines stay SPIRE's.
 */
struct session;
/* A message arrived; return false to stop the call (it is then cancelled). */
typedef bool (*msg_fn)(struct session *s, const uint8_t *msg, size_t len);

struct session {
	const char *cmd;
	const char *socket;
	lanyard_client *client;
	msg_fn on_msg;
	void *arg;
	int exit_code; /* set by on_msg on a failure of its own */
	uint64_t start_ns;
	bool signals;
	struct sigaction old_int, old_term;
};

/* SIGINT/SIGTERM during a long call (api watch): polled by wl_rpc_call, which then cancels the call. */
static atomic_bool interrupted;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double
ms_since(uint64_t start_ns)
{
	return (double)(now_ns() - start_ns) / 1e6;
}

static int
on_message(void *arg, const uint8_t *msg, size_t len, struct ly_error *err)
{
	struct session *s = arg;

	if (atomic_load(&interrupted))
		return 1; /* stopped: nothing more is read or written */
	if (s->on_msg(s, msg, len))
		return 0;
	if (s->exit_code != 0) {
		(void)ly_error_set(err, LY_E_INVALID, "%s: refused the answer", s->cmd); /* already said, by on_msg */
		return -1;
	}
	return 1;
}

static void
on_signal(int signum)
{
	(void)signum;
	atomic_store(&interrupted, true);
}

/* The session: no connection yet. */
static int
session_start(struct session *s, const char *cmd, const char *socket)
{
	memset(s, 0, sizeof(*s));
	s->cmd = cmd;
	s->socket = socket;
	return 0;
}

/* A client on a connection to the agent's socket, its listener judged first. */
static int
session_connect(struct session *s)
{
	struct ly_error e;
	struct stat st;

	if (stat(s->socket, &st) != 0)
		return fail(EXIT_RUNTIME, "%s: cannot reach the agent at %s: %s (is it running? see -socketPath)", s->cmd,
		    s->socket, strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return fail(EXIT_RUNTIME, "%s: cannot reach the agent at %s: not a socket", s->cmd, s->socket);
	/* Who listens there, judged before anything is sent or believed; the calls go over that very
	 * connection (sockpath.h, docs/security.md). */
	int fd;
	ly_status pc = ly_sockpath_peer_check(s->socket, NULL, &fd, &e);
	if (pc != LY_OK)
		return fail(EXIT_RUNTIME, "%s: %s the agent at %s: %s", s->cmd, pc == LY_E_IO ? "cannot reach" : "refusing",
		    s->socket, e.msg);
	if (wl_client_new_fd(s->socket, fd, &s->client, &e) != LY_OK)
		return fail(EXIT_RUNTIME, "%s: %s", s->cmd, e.msg);
	return 0;
}

/* Frees the client (and its connection). */
static void
session_disconnect(struct session *s)
{
	lanyard_client_free(s->client);
	s->client = NULL;
}

static int
session_open(struct session *s, const char *cmd, const char *socket)
{
	int rc = session_start(s, cmd, socket);

	return rc != 0 ? rc : session_connect(s);
}

static void
session_close(struct session *s)
{
	session_disconnect(s);
	if (s->signals) {
		(void)sigaction(SIGINT, &s->old_int, NULL);
		(void)sigaction(SIGTERM, &s->old_term, NULL);
		s->signals = false;
	}
}

/* SIGINT/SIGTERM end a long call (api watch) cleanly. */
static void
session_catch_signals(struct session *s)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: a backoff sleep ends at once */
	(void)sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, &s->old_int);
	(void)sigaction(SIGTERM, &sa, &s->old_term);
	s->signals = true;
}

/* What a failed status means to the user. */
static int
status_fail(const struct session *s, const char *what, enum ly_rpc_code code, const char *details)
{
	const char *d = details[0] != '\0' ? details : "failed";

	if (code == LY_RPC_UNAVAILABLE)
		return fail(EXIT_RUNTIME, "%s: the agent at %s is unavailable: %s (UNAVAILABLE)", s->cmd, s->socket, d);
	if (code == LY_RPC_DEADLINE_EXCEEDED)
		return fail(EXIT_RUNTIME, "%s: no answer from the agent at %s in time (DEADLINE_EXCEEDED)", s->cmd,
		    s->socket);
	return fail(EXIT_RUNTIME, "%s: %s: %s (%s)", s->cmd, what, d, ly_rpc_code_str(code));
}

/*
 * Runs one call to completion. Unary: `on_msg` sees the answer. Stream:
 * each message until `on_msg` returns false (the call is then cancelled,
 * and that is a success). Returns 0 or an exit code (error printed).
 */
static int
session_call(struct session *s, const char *what, const char *method, enum ly_rpc_kind kind,
    const ProtobufCMessage *req, int64_t timeout_ms, bool workload_header, msg_fn on_msg, void *arg)
{
	struct wl_call_status st;
	struct ly_error e;
	uint8_t *buf = NULL;
	size_t n = 0;
	int code = 0, rc;

	if (req != NULL) {
		n = protobuf_c_message_get_packed_size(req);
		buf = malloc(n > 0 ? n : 1);
		if (buf == NULL)
			return fail(EXIT_RUNTIME, "%s: out of memory", s->cmd);
		(void)protobuf_c_message_pack(req, buf);
	}
	s->exit_code = 0;
	s->on_msg = on_msg;
	s->arg = arg;
	s->start_ns = now_ns();
	struct wl_call call = {
		.method = method,
		.req = buf != NULL ? buf : (const uint8_t *)"",
		.req_len = n, /* copied, and the copy wiped: requests may carry a token (validate) */
		.stream = kind == LY_RPC_SERVER_STREAM,
		.timeout_ms = (unsigned)timeout_ms,
		.on_msg = on_message,
		.arg = s,
		.stop = &interrupted,
		.bare = !workload_header,
		.status = &st,
	};
	ly_status r = wl_rpc_call(s->client, &call, &code, &e);
	if (s->exit_code != 0)
		rc = s->exit_code;
	else if (r == LY_OK)
		rc = 0;
	else if (st.got && (st.code == LY_RPC_OK || (atomic_load(&interrupted) && st.code == LY_RPC_CANCELLED)))
		rc = 0;
	else if (st.got)
		rc = status_fail(s, what, (enum ly_rpc_code)st.code, st.details);
	else
		rc = fail(EXIT_RUNTIME, "%s: %s", s->cmd, e.msg);
	if (buf != NULL) {
		OPENSSL_cleanse(buf, n);
		free(buf);
	}
	return rc;
}

/* ---- flags ------------------------------------------------------------------------- */

/* Returns -1 to go on, else the exit code (0 after -h, EXIT_USAGE after a bad flag or a stray argument). */
static int
parse_flags(const char *cmd, const char *synopsis, struct ly_flag *flags, size_t n, int argc, char **argv)
{
	return ly_cmdline_parse_flags("lanyard-agent", cmd, synopsis, flags, n, argc, argv);
}

#define SOCKET_FLAG(dst)                                                                                   \
	{ "socketPath", LY_FLAG_STRING, (dst),                                                              \
	    "Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET, else " LY_AGENT_SOCKET_DEFAULT ")", 0, 0, \
	    false }
#define TIMEOUT_FLAG(dst) \
	{ "timeout", LY_FLAG_INT, (dst), "seconds to wait for the answer (default 5)", 1, 3600, false }

/* ---- printing ------------------------------------------------------------------------ */

static void
print_time(const char *label, const ASN1_TIME *t)
{
	struct tm tm;
	char buf[64];

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S +0000 UTC", &tm) == 0)
		(void)snprintf(buf, sizeof(buf), "?");
	printf("%s\t%s\n", label, buf);
}

/* SPIRE's `api fetch x509` block for one SVID. */
static int
print_svid(const char *cmd, const X509SVID *sv)
{
	STACK_OF(X509) *chain = NULL, *bundle = NULL;
	struct ly_error e;
	char label[64];

	if (ly_der_parse_certs(sv->x509_svid.data, sv->x509_svid.len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &chain, &e) !=
	    LY_OK)
		return fail(EXIT_RUNTIME, "%s: the agent sent an unreadable certificate chain for %s: %s", cmd,
		    sv->spiffe_id, e.msg);
	if (sv->bundle.len > 0 &&
	    ly_der_parse_certs(sv->bundle.data, sv->bundle.len, LY_BUNDLE_CERTS_MAX, LY_BUNDLE_DER_MAX, &bundle, &e) !=
		LY_OK) {
		sk_X509_pop_free(chain, X509_free);
		return fail(EXIT_RUNTIME, "%s: the agent sent an unreadable bundle: %s", cmd, e.msg);
	}
	printf("SPIFFE ID:\t\t%s\n", sv->spiffe_id);
	if (sv->hint != NULL && sv->hint[0] != '\0')
		printf("Hint:\t\t\t%s\n", sv->hint);
	X509 *leaf = sk_X509_value(chain, 0);
	print_time("SVID Valid After:", X509_get0_notBefore(leaf));
	print_time("SVID Valid Until:", X509_get0_notAfter(leaf));
	for (int i = 1; i < sk_X509_num(chain); i++) {
		(void)snprintf(label, sizeof(label), "Intermediate #%d Valid After:", i);
		print_time(label, X509_get0_notBefore(sk_X509_value(chain, i)));
		(void)snprintf(label, sizeof(label), "Intermediate #%d Valid Until:", i);
		print_time(label, X509_get0_notAfter(sk_X509_value(chain, i)));
	}
	for (int i = 0; bundle != NULL && i < sk_X509_num(bundle); i++) {
		(void)snprintf(label, sizeof(label), "CA #%d Valid After:", i + 1);
		print_time(label, X509_get0_notBefore(sk_X509_value(bundle, i)));
		(void)snprintf(label, sizeof(label), "CA #%d Valid Until:", i + 1);
		print_time(label, X509_get0_notAfter(sk_X509_value(bundle, i)));
	}
	printf("\n");
	sk_X509_pop_free(chain, X509_free);
	sk_X509_pop_free(bundle, X509_free);
	return 0;
}

/* ---- writing files --------------------------------------------------------------------- */

/* Stages one PEM file of certificates from concatenated DER. */
static int
stage_certs(const char *cmd, struct ly_fileset *fs, const char *name, const ProtobufCBinaryData *der,
    size_t max_certs, size_t max_total)
{
	struct ly_buf pem = LY_BUF_INIT;
	struct ly_error e;
	int rc = 0;

	if (ly_der_certs_to_pem(der->data, der->len, max_certs, max_total, &pem, &e) != LY_OK ||
	    ly_fileset_add(fs, name, pem.data, pem.len, 0644, &e) != LY_OK)
		rc = fail(EXIT_RUNTIME, "%s: -write: %s: %s", cmd, name, e.msg);
	ly_buf_free(&pem);
	return rc;
}

/*
 * SPIRE's file names, per SVID N (N = 0 the default identity):
 * svid.N.pem (leaf then intermediates, 0644), svid.N.key (PKCS#8, 0600),
 * bundle.N.pem (0644), federated_bundle.N.M.pem per federated trust domain.
 * All are staged, then renamed together (cli_helper.h): a failure leaves
 * the previous files as they were.
 */
static int
write_response(const char *cmd, struct ly_fileset *fs, const char *dir, const X509SVIDResponse *r)
{
	struct ly_buf key = LY_BUF_INIT;
	struct ly_error e;
	char name[64];
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < r->n_svids; i++) {
		const X509SVID *sv = r->svids[i];
		(void)snprintf(name, sizeof(name), "svid.%zu.pem", i);
		if ((rc = stage_certs(cmd, fs, name, &sv->x509_svid, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX)) != 0)
			break;
		(void)snprintf(name, sizeof(name), "svid.%zu.key", i);
		if (ly_pem_encode("PRIVATE KEY", sv->x509_svid_key.data, sv->x509_svid_key.len, &key, &e) != LY_OK ||
		    ly_fileset_add(fs, name, key.data, key.len, 0600, &e) != LY_OK)
			rc = fail(EXIT_RUNTIME, "%s: -write: %s (%s): %s", cmd, name, sv->spiffe_id, e.msg);
		ly_buf_free_secret(&key);
		if (rc != 0)
			break;
		(void)snprintf(name, sizeof(name), "bundle.%zu.pem", i);
		rc = stage_certs(cmd, fs, name, &sv->bundle, LY_BUNDLE_CERTS_MAX, LY_BUNDLE_DER_MAX);
		for (size_t j = 0; rc == 0 && j < r->n_federated_bundles; j++) {
			(void)snprintf(name, sizeof(name), "federated_bundle.%zu.%zu.pem", i, j);
			rc = stage_certs(cmd, fs, name, &r->federated_bundles[j]->value, LY_BUNDLE_CERTS_MAX,
			    LY_BUNDLE_DER_MAX);
		}
	}
	if (rc == 0 && ly_fileset_commit(fs, NULL, &e) != LY_OK)
		rc = fail(EXIT_RUNTIME, "%s: -write %s: %s", cmd, dir, e.msg);
	ly_fileset_abort(fs);
	if (rc == 0)
		printf("Writing SVIDs and bundles to %s: done\n", dir);
	return rc;
}

/* ---- api fetch x509 / api watch ---------------------------------------------------------------- */

/* Helper mode: reconnection backoff (doubling, +-20% jitter) between these. */
#define HELPER_BACKOFF_MIN_MS 500
#define HELPER_BACKOFF_MAX_MS 10000

struct x509_args {
	const char *write_dir;
	bool watch;
	bool helper; /* api watch -write: runs until SIGTERM/SIGINT, reconnecting */
	struct ly_fileset fs;
	const char *pid_file; /* signalled after each update written */
	int signum;
	size_t updates; /* responses on the current call */
	unsigned char last[SHA256_DIGEST_LENGTH]; /* the last response written (helper) */
	bool have_last;
};

/* After the files of an update are in place: the process of the pid file, if any. */
static void
helper_signal(const struct session *s, const struct x509_args *a)
{
	struct ly_error e;
	pid_t pid = 0;

	if (a->pid_file == NULL)
		return;
	if (ly_cli_helper_signal_pid_file(a->pid_file, a->signum, &pid, &e) == LY_OK)
		printf("Sent %s to process %d (pid file %s)\n", ly_cli_helper_signal_name(a->signum), (int)pid, a->pid_file);
	else
		(void)fail(EXIT_RUNTIME, "%s: no signal sent: %s", s->cmd, e.msg);
}

static bool
on_x509(struct session *s, const uint8_t *msg, size_t len)
{
	struct x509_args *a = s->arg;
	X509SVIDResponse *r = NULL;
	unsigned char digest[SHA256_DIGEST_LENGTH];
	struct ly_error e;
	int rc = 0;

	a->updates++;
	if (wl_x509_response_count(msg, len, &e) != LY_OK) {
		s->exit_code = fail(EXIT_RUNTIME, "%s: the agent's answer is refused: %s", s->cmd, e.msg);
		return false;
	}
	if ((r = x509_svidresponse__unpack(NULL, len, msg)) == NULL) {
		s->exit_code = fail(EXIT_RUNTIME, "%s: the agent's answer is malformed", s->cmd);
		return false;
	}
	printf("Received %zu svid%s after %.3fms\n\n", r->n_svids, r->n_svids == 1 ? "" : "s", ms_since(s->start_ns));
	for (size_t i = 0; rc == 0 && i < r->n_svids; i++)
		rc = print_svid(s->cmd, r->svids[i]);
	for (size_t i = 0; rc == 0 && i < r->n_federated_bundles; i++)
		printf("Federated bundle:\t%s\n\n", r->federated_bundles[i]->key);
	/*
	 * The helper rewrites and signals only when something changed: a
	 * reconnection (the agent restarted) brings the same response again,
	 * and the program need not reload for it.
	 */
	if (rc == 0 && a->helper && SHA256(msg, len, digest) == NULL)
		rc = fail(EXIT_RUNTIME, "%s: cannot hash the response", s->cmd);
	if (rc == 0 && a->helper && a->have_last && CRYPTO_memcmp(digest, a->last, sizeof(digest)) == 0) {
		printf("Unchanged since the last update: files in %s left as they are\n", a->write_dir);
	} else if (rc == 0 && a->write_dir != NULL) {
		rc = write_response(s->cmd, &a->fs, a->write_dir, r);
		if (rc == 0 && a->helper) {
			memcpy(a->last, digest, sizeof(digest));
			a->have_last = true;
			helper_signal(s, a);
		}
	}
	fflush(stdout);
	/* The response holds private keys: wipe them before freeing. */
	for (size_t i = 0; i < r->n_svids; i++)
		OPENSSL_cleanse(r->svids[i]->x509_svid_key.data, r->svids[i]->x509_svid_key.len);
	x509_svidresponse__free_unpacked(r, NULL);
	s->exit_code = rc;
	return rc == 0 && a->watch;
}

/* Waits `ms`, or less when SIGTERM/SIGINT arrives. */
static void
session_sleep(struct session *s, uint64_t ms)
{
	uint64_t end = now_ns() + ms * 1000000u;

	(void)s;
	while (!atomic_load(&interrupted)) {
		uint64_t now = now_ns();
		if (now >= end)
			break;
		uint64_t left = end - now < 100000000u ? end - now : 100000000u; /* 100 ms slices */
		struct timespec ts = { (time_t)(left / 1000000000u), (long)(left % 1000000000u) };
		(void)nanosleep(&ts, NULL);
	}
}

/*
 * api watch -write: the stream, again and again. Whatever ends it (the
 * agent restarting, UNAVAILABLE, PERMISSION_DENIED while an entry is
 * missing, a failed write) is reported in one line, then the helper
 * reconnects after a backoff that a response resets. Only SIGTERM or
 * SIGINT end it (exit 0).
 */
static int
helper_run(struct session *s, struct x509_args *a)
{
	uint64_t backoff = HELPER_BACKOFF_MIN_MS;
	X509SVIDRequest req;
	x509_svidrequest__init(&req);

	while (!atomic_load(&interrupted)) {
		a->updates = 0;
		int rc = session_connect(s);
		if (rc == 0)
			rc = session_call(s, "fetching X.509-SVIDs", M("FetchX509SVID"), LY_RPC_SERVER_STREAM, &req.base, 0,
			    true, on_x509, a);
		session_disconnect(s);
		if (atomic_load(&interrupted))
			break;
		if (rc == 0)
			(void)fail(EXIT_RUNTIME, "%s: the agent ended the stream", s->cmd);
		if (a->updates > 0)
			backoff = HELPER_BACKOFF_MIN_MS;
		/* Jitter, so that helpers restarted together do not reconnect together. */
		uint64_t wait = backoff * (80 + now_ns() % 41) / 100;
		fprintf(stderr, "%s: reconnecting in %.1fs\n", s->cmd, (double)wait / 1000.0);
		session_sleep(s, wait);
		backoff = backoff * 2 > HELPER_BACKOFF_MAX_MS ? HELPER_BACKOFF_MAX_MS : backoff * 2;
	}
	printf("Stopped by a signal\n");
	return 0;
}

static int
api_fetch_x509(int argc, char **argv, bool watch)
{
	const char *cmd = watch ? "api watch" : "api fetch x509";
	const char *socket_flag = NULL, *socket, *signal_name = NULL;
	struct x509_args a;
	int64_t timeout = TIMEOUT_DEFAULT;
	struct ly_error e;
	struct session s;
	bool opened = false;
	int rc;

	memset(&a, 0, sizeof(a));
	a.watch = watch;
	a.fs.dirfd = -1;
	a.signum = SIGHUP;
	struct ly_flag fetch_flags[] = {
		{ "write", LY_FLAG_STRING, &a.write_dir, "write svid.N.pem, svid.N.key and bundle.N.pem into this directory",
		    0, 0, false },
		TIMEOUT_FLAG(&timeout),
		SOCKET_FLAG(&socket_flag),
	};
	struct ly_flag watch_flags[] = {
		{ "write", LY_FLAG_STRING, &a.write_dir,
		    "helper mode: keep svid.N.pem, svid.N.key and bundle.N.pem in this directory up to date, "
		    "reconnecting until SIGTERM/SIGINT", 0, 0, false },
		{ "pidFile", LY_FLAG_STRING, &a.pid_file,
		    "after each update written, signal the process whose pid this file holds (read at each update)", 0, 0,
		    false },
		{ "signal", LY_FLAG_STRING, &signal_name, "the signal for -pidFile: HUP (default), INT, QUIT, USR1, USR2, "
		    "TERM or WINCH", 0, 0, false },
		SOCKET_FLAG(&socket_flag),
	};
	X509SVIDRequest req;
	x509_svidrequest__init(&req);

	if ((rc = parse_flags(cmd,
	    watch ? "Prints every update of the X.509-SVID stream until interrupted; with -write, keeps the files in "
		    "DIR up to date (and signals -pidFile's process) until SIGTERM/SIGINT, reconnecting to the agent." :
		    "Fetches the caller's X.509-SVIDs from the Workload API.",
	    watch ? watch_flags : fetch_flags, watch ? NFLAGS(watch_flags) : NFLAGS(fetch_flags), argc, argv)) >= 0)
		return rc;
	if (a.write_dir != NULL && a.write_dir[0] == '\0')
		return fail(EXIT_USAGE, "%s: -write must not be empty", cmd);
	if (signal_name != NULL && ly_cli_helper_signal_parse(signal_name, &a.signum, &e) != LY_OK)
		return fail(EXIT_USAGE, "%s: -signal: %s", cmd, e.msg);
	if ((a.pid_file != NULL || signal_name != NULL) && a.write_dir == NULL)
		return fail(EXIT_USAGE, "%s: -pidFile and -signal need -write DIR", cmd);
	if (signal_name != NULL && a.pid_file == NULL)
		return fail(EXIT_USAGE, "%s: -signal needs -pidFile FILE (the process to signal)", cmd);
	if (a.pid_file != NULL && a.pid_file[0] == '\0')
		return fail(EXIT_USAGE, "%s: -pidFile must not be empty", cmd);
	a.helper = watch && a.write_dir != NULL;
	if ((rc = resolve_socket(cmd, socket_flag, &socket)) != 0)
		return rc;
	if (a.write_dir != NULL && ly_fileset_init(&a.fs, a.write_dir, &e) != LY_OK)
		return fail(EXIT_USAGE, "%s: -write: %s", cmd, e.msg);
	opened = true;
	if (a.helper) {
		if ((rc = session_start(&s, cmd, socket)) == 0) {
			session_catch_signals(&s);
			rc = helper_run(&s, &a);
		}
		goto out;
	}
	if ((rc = session_open(&s, cmd, socket)) != 0)
		goto out;
	if (watch)
		session_catch_signals(&s);
	rc = session_call(&s, "fetching X.509-SVIDs", M("FetchX509SVID"), LY_RPC_SERVER_STREAM, &req.base,
	    watch ? 0 : timeout * 1000, true, on_x509, &a);
out:
	if (opened)
		session_close(&s);
	ly_fileset_cleanup(&a.fs);
	return rc;
}

/* ---- api fetch jwt / jwt-bundles ------------------------------------------------------------------- */

static bool
on_jwt_svids(struct session *s, const uint8_t *msg, size_t len)
{
	JWTSVIDResponse *r = jwtsvidresponse__unpack(NULL, len, msg);

	if (r == NULL) {
		s->exit_code = fail(EXIT_RUNTIME, "%s: the agent's answer is malformed", s->cmd);
		return false;
	}
	for (size_t i = 0; i < r->n_svids; i++) {
		printf("token(%s):\n\t%s\n\n", r->svids[i]->spiffe_id, r->svids[i]->svid);
		OPENSSL_cleanse(r->svids[i]->svid, strlen(r->svids[i]->svid));
	}
	fflush(stdout);
	jwtsvidresponse__free_unpacked(r, NULL);
	return false;
}

static bool
on_jwt_bundles(struct session *s, const uint8_t *msg, size_t len)
{
	JWTBundlesResponse *r = jwtbundles_response__unpack(NULL, len, msg);

	if (r == NULL) {
		s->exit_code = fail(EXIT_RUNTIME, "%s: the agent's answer is malformed", s->cmd);
		return false;
	}
	for (size_t i = 0; i < r->n_bundles; i++)
		printf("bundle(%s):\n\t%.*s\n\n", r->bundles[i]->key, (int)r->bundles[i]->value.len,
		    (const char *)r->bundles[i]->value.data);
	fflush(stdout);
	jwtbundles_response__free_unpacked(r, NULL);
	return false; /* the first message is the answer */
}

static int
api_fetch_jwt(int argc, char **argv)
{
	const char *cmd = "api fetch jwt";
	const char *socket_flag = NULL, *socket, *spiffe_id = NULL;
	struct ly_flag_list aud = { NULL, 0 };
	int64_t timeout = TIMEOUT_DEFAULT;
	struct ly_flag flags[] = {
		{ "audience", LY_FLAG_LIST, &aud, "the audience of the token (required; repeat for several)", 0, 0, false },
		{ "spiffeID", LY_FLAG_STRING, &spiffe_id, "only a token for this SPIFFE ID (default: one per identity)", 0,
		    0, false },
		TIMEOUT_FLAG(&timeout),
		SOCKET_FLAG(&socket_flag),
	};
	JWTSVIDRequest req;
	jwtsvidrequest__init(&req);
	JWTBundlesRequest breq;
	jwtbundles_request__init(&breq);
	struct ly_spiffe_id id;
	struct ly_error e;
	struct session s;
	bool opened = false;
	int rc;

	if ((rc = parse_flags(cmd, "Fetches JWT-SVIDs for an audience, then the JWT bundles.", flags, NFLAGS(flags),
	    argc, argv)) >= 0)
		goto out;
	if (aud.count == 0) {
		rc = fail(EXIT_USAGE, "%s: -audience is required", cmd);
		goto out;
	}
	for (size_t i = 0; i < aud.count; i++) {
		if (aud.items[i][0] == '\0') {
			rc = fail(EXIT_USAGE, "%s: -audience must not be empty", cmd);
			goto out;
		}
	}
	if (spiffe_id != NULL && ly_spiffe_id_parse_str(spiffe_id, &id, &e) != LY_OK) {
		rc = fail(EXIT_USAGE, "%s: -spiffeID \"%s\": %s", cmd, spiffe_id, e.msg);
		goto out;
	}
	if ((rc = resolve_socket(cmd, socket_flag, &socket)) != 0)
		goto out;
	opened = true;
	if ((rc = session_open(&s, cmd, socket)) != 0)
		goto out;
	req.n_audience = aud.count;
	req.audience = (char **)(uintptr_t)aud.items;
	req.spiffe_id = unconst(spiffe_id);
	rc = session_call(&s, "fetching JWT-SVIDs", M("FetchJWTSVID"), LY_RPC_UNARY, &req.base, timeout * 1000, true,
	    on_jwt_svids, NULL);
	if (rc == 0)
		rc = session_call(&s, "fetching JWT bundles", M("FetchJWTBundles"), LY_RPC_SERVER_STREAM, &breq.base,
		    timeout * 1000, true, on_jwt_bundles, NULL);
out:
	if (opened)
		session_close(&s);
	ly_flags_cleanup(flags, NFLAGS(flags));
	return rc;
}

static int
api_fetch_jwt_bundles(int argc, char **argv)
{
	const char *cmd = "api fetch jwt-bundles";
	const char *socket_flag = NULL, *socket;
	int64_t timeout = TIMEOUT_DEFAULT;
	struct ly_flag flags[] = {
		TIMEOUT_FLAG(&timeout),
		SOCKET_FLAG(&socket_flag),
	};
	JWTBundlesRequest req;
	jwtbundles_request__init(&req);
	struct session s;
	int rc;

	if ((rc = parse_flags(cmd, "Fetches the JWT bundles (a JWKS per trust domain).", flags, NFLAGS(flags), argc,
	    argv)) >= 0)
		return rc;
	if ((rc = resolve_socket(cmd, socket_flag, &socket)) != 0)
		return rc;
	if ((rc = session_open(&s, cmd, socket)) == 0)
		rc = session_call(&s, "fetching JWT bundles", M("FetchJWTBundles"), LY_RPC_SERVER_STREAM, &req.base,
		    timeout * 1000, true, on_jwt_bundles, NULL);
	session_close(&s);
	return rc;
}

/* ---- api validate ------------------------------------------------------------------------------------- */

static bool
on_validate(struct session *s, const uint8_t *msg, size_t len)
{
	ValidateJWTSVIDResponse *r = validate_jwtsvidresponse__unpack(NULL, len, msg);
	json_t *claims;
	char *text = NULL;

	if (r == NULL) {
		s->exit_code = fail(EXIT_RUNTIME, "%s: the agent's answer is malformed", s->cmd);
		return false;
	}
	claims = ly_pbstruct_to_json(r->claims);
	if (claims != NULL)
		text = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
	printf("SVID is valid.\nSPIFFE ID : %s\nClaims    : %s\n", r->spiffe_id, text != NULL ? text : "{}");
	fflush(stdout);
	free(text);
	json_decref(claims);
	validate_jwtsvidresponse__free_unpacked(r, NULL);
	return false;
}

static int
api_validate(int argc, char **argv)
{
	const char *cmd = "api validate";
	const char *socket_flag = NULL, *socket, *audience = NULL, *svid = NULL;
	int64_t timeout = TIMEOUT_DEFAULT;
	struct ly_flag flags[] = {
		{ "audience", LY_FLAG_STRING, &audience, "the audience the token must carry (required)", 0, 0, false },
		{ "svid", LY_FLAG_STRING, &svid, "the JWT-SVID to validate (required)", 0, 0, false },
		TIMEOUT_FLAG(&timeout),
		SOCKET_FLAG(&socket_flag),
	};
	ValidateJWTSVIDRequest req;
	validate_jwtsvidrequest__init(&req);
	struct session s;
	int rc;

	/* SPIRE spells it `api validate jwt`: both are accepted. */
	if (argc > 0 && strcmp(argv[0], "jwt") == 0) {
		argc--;
		argv++;
	}
	if ((rc = parse_flags(cmd, "Validates a JWT-SVID through the Workload API (ValidateJWTSVID).", flags,
	    NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if (audience == NULL || audience[0] == '\0')
		return fail(EXIT_USAGE, "%s: -audience is required", cmd);
	if (svid == NULL || svid[0] == '\0')
		return fail(EXIT_USAGE, "%s: -svid is required", cmd);
	if ((rc = resolve_socket(cmd, socket_flag, &socket)) != 0)
		return rc;
	req.audience = unconst(audience);
	req.svid = unconst(svid);
	if ((rc = session_open(&s, cmd, socket)) == 0)
		rc = session_call(&s, "SVID is not valid", M("ValidateJWTSVID"), LY_RPC_UNARY, &req.base, timeout * 1000,
		    true, on_validate, NULL);
	session_close(&s);
	return rc;
}

/* ---- healthcheck ------------------------------------------------------------------------------------------ */

struct health {
	bool serving;
	unsigned status;
};

/* HealthCheckResponse{status = 1}: field 1, varint (grpc/health/v1/health.proto). */
static bool
on_health(struct session *s, const uint8_t *msg, size_t len)
{
	struct health *h = s->arg;

	h->status = 0; /* UNKNOWN: an empty message */
	if (len == 2 && msg[0] == 0x08 && msg[1] < 0x80)
		h->status = msg[1];
	else if (len != 0)
		s->exit_code = fail(EXIT_RUNTIME, "%s: the agent's answer is malformed", s->cmd);
	h->serving = h->status == 1;
	return false;
}

static int
healthcheck(int argc, char **argv)
{
	const char *cmd = "healthcheck";
	const char *socket_flag = NULL, *socket;
	int64_t timeout = TIMEOUT_DEFAULT;
	bool verbose = false;
	struct ly_flag flags[] = {
		{ "verbose", LY_FLAG_BOOL, &verbose, "say what is checked", 0, 0, false },
		TIMEOUT_FLAG(&timeout),
		SOCKET_FLAG(&socket_flag),
	};
	struct health h = { false, 0 };
	struct session s;
	int rc;

	if ((rc = parse_flags(cmd, "Checks that the agent is up and serving (exit 0) or not (exit 1).", flags,
	    NFLAGS(flags), argc, argv)) >= 0)
		return rc;
	if ((rc = resolve_socket(cmd, socket_flag, &socket)) != 0)
		return rc;
	if (verbose)
		printf("Checking agent health at %s...\n", socket);
	/* An empty HealthCheckRequest: all of the agent. */
	if ((rc = session_open(&s, cmd, socket)) == 0)
		rc = session_call(&s, "health check", HEALTH_CHECK, LY_RPC_UNARY, NULL, timeout * 1000, false, on_health,
		    &h);
	session_close(&s);
	if (rc != 0)
		return rc;
	if (!h.serving)
		return fail(EXIT_RUNTIME, "agent is unhealthy: %s", h.status == 2 ? "not serving yet" : "unknown status");
	printf("Agent is healthy.\n");
	return 0;
}

/* ---- dispatch ---------------------------------------------------------------------------------------------- */

static int
api_watch(int argc, char **argv)
{
	return api_fetch_x509(argc, argv, true);
}

static int
api_fetch_x509_cmd(int argc, char **argv)
{
	return api_fetch_x509(argc, argv, false);
}

struct command {
	const char *words[3];
	int (*fn)(int argc, char **argv);
	const char *synopsis;
};

static const struct command commands[] = {
	{ { "api", "fetch", "x509" }, api_fetch_x509_cmd, "fetch the caller's X.509-SVIDs (-write DIR saves them)" },
	{ { "api", "fetch", "jwt" }, api_fetch_jwt, "fetch JWT-SVIDs for -audience" },
	{ { "api", "fetch", "jwt-bundles" }, api_fetch_jwt_bundles, "fetch the JWT bundles" },
	{ { "api", "validate", NULL }, api_validate, "validate a JWT-SVID (-audience, -svid)" },
	{ { "api", "watch", NULL }, api_watch, "print every X.509-SVID update (-write DIR: keep files up to date)" },
	{ { "healthcheck", NULL, NULL }, healthcheck, "exit 0 when the agent is healthy" },
};

static void
usage(void)
{
	printf("Usage: lanyard-agent <command> [flags]   (-h after a command: its flags)\n\nCommands:\n");
	printf("  %-24s %s\n", "run", "run the agent");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		char name[64] = "";
		for (size_t j = 0; j < 3 && commands[i].words[j] != NULL; j++) {
			size_t used = strlen(name);
			(void)snprintf(name + used, sizeof(name) - used, "%s%s", j > 0 ? " " : "", commands[i].words[j]);
		}
		printf("  %-24s %s\n", name, commands[i].synopsis);
	}
}

int
ly_agent_cli_main(int argc, char **argv)
{
	size_t best = 0;
	const struct command *found = NULL;

	if (argc < 1)
		return fail(EXIT_USAGE, "no command given (see lanyard-agent -h)");
	if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "-help") == 0 || strcmp(argv[0], "--help") == 0 ||
	    strcmp(argv[0], "help") == 0) {
		usage();
		return 0;
	}
	/* The longest run of words that names a command. */
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		size_t k = 0;
		while (k < 3 && commands[i].words[k] != NULL && (int)k < argc && strcmp(argv[k], commands[i].words[k]) == 0)
			k++;
		if ((k == 3 || commands[i].words[k] == NULL) && k > best) {
			best = k;
			found = &commands[i];
		}
	}
	if (found != NULL)
		return found->fn(argc - (int)best, argv + best);
	if (strcmp(argv[0], "api") != 0)
		return fail(EXIT_USAGE, "unknown command \"%s\" (see lanyard-agent -h)", argv[0]);
	if (argc < 2)
		return fail(EXIT_USAGE, "api: a sub-command is required: fetch, validate or watch (see lanyard-agent -h)");
	if (strcmp(argv[1], "fetch") == 0)
		return fail(EXIT_USAGE, "api fetch: %s%s%s: must be x509, jwt or jwt-bundles", argc > 2 ? "\"" : "",
		    argc > 2 ? argv[2] : "a kind is required", argc > 2 ? "\"" : "");
	return fail(EXIT_USAGE, "api: unknown sub-command \"%s\" (see lanyard-agent -h)", argv[1]);
}
