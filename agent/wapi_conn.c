/*
 * wapi_conn.c: the Workload API's connections (wapi.c tells the whole
 * story): accept with the global and per-uid caps and the memory guard's
 * penalty, peer credentials and the pidfd, workload attestation (unix,
 * k8s), the hand-over to gRPC, and the connection's end. The calls that
 * run on a connection are wapi_call.c's (wapi_internal.h).
 *
 * Threads: the loop thread only (attestors report on it).
 */
#include "agent/wapi_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uv.h>

#include <openssl/evp.h>

#include "agent/attest_k8s.h"
#include "agent/attest_unix.h"
#include "agent/cache.h"
#include "agent/procfs.h"
#include "lib/log.h"
#include "lib/ratelimit.h"
#include "lib/metrics.h"
#include "rpc/keycount.h"
#include "rpc/rpc.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* ---- connections ------------------------------------------------------------------------------- */

static void
free_handle_cb(uv_handle_t *h)
{
	free(h);
}

static void
conn_unref(struct wconn *c)
{
	if (--c->refs > 0)
		return;
	struct ly_wapi *w = c->w;
	ly_queue_remove(&c->link);
	w->n_conns--;
	(void)ly_keycount_give(&w->uid_conns, &c->uid, sizeof(c->uid));
	if (w->src.memory_burst != NULL)
		w->src.memory_burst(w->src.arg); /* a thousand connections leave freed memory behind */
	if (c->peer.pidfd >= 0)
		(void)close(c->peer.pidfd);
	ly_selectors_free(c->sels, c->n_sels);
	free(c);
	w->maybe_free(w);
}

/*
 * rpc.h ly_wapi_conn_keep: under the memory guard, a connection whose caller is
 * entitled to an identity is kept (a real workload, even while its call is
 * slow to arrive); one entitled to nothing (the floods of issue 19 came
 * from such a user) is shed.
 */
bool
ly_wapi_conn_keep(void *conn_ctx, void *arg)
{
	struct wconn *c = conn_ctx;
	struct ly_wapi *w = arg;
	struct ly_cache_identities ids;
	bool keep = false;

	if (c->refuse != LY_RPC_OK || c->n_sels == 0 || ly_wapi_cache(w) == NULL)
		return false;
	ly_cache_identities_init(&ids);
	if (ly_cache_query(ly_wapi_cache(w), c->sels, c->n_sels, 0, (int64_t)ly_agent_now(), &ids, NULL) == LY_OK)
		keep = ids.n_entitled > 0;
	ly_cache_identities_cleanup(&ids);
	return keep;
}

/* Whether `uid` is in its LY_WAPI_SHED_PENALTY_MS. */
static bool
uid_penalized(const struct ly_wapi *w, uid_t uid, uint64_t now)
{
	for (size_t i = 0; i < LY_WAPI_PENALTY_SLOTS; i++) {
		if (w->penalty[i].until > now && w->penalty[i].uid == uid)
			return true;
	}
	return false;
}

/* A connection of a penalized uid refused: counted, and every 1,000th logged. */
static void
penalty_refused(struct ly_wapi *w, uid_t uid)
{
	if (w->refused_penalty++ % 1000 == 0)
		log_info("workload api: uid %u: connection refused (memory guard penalty)", (unsigned)uid);
}

/* rpc.h ly_wapi_conn_shed: the caller's uid gets LY_WAPI_SHED_PENALTY_MS (its slot, a free one, or the oldest). */
void
ly_wapi_conn_shed(void *conn_ctx, void *arg)
{
	struct wconn *c = conn_ctx;
	struct ly_wapi *w = arg;
	uint64_t now = uv_now(w->agent->loop);
	size_t slot = 0;

	for (size_t i = 0; i < LY_WAPI_PENALTY_SLOTS; i++) {
		if (w->penalty[i].uid == c->uid && w->penalty[i].until != 0) {
			slot = i;
			break;
		}
		if (w->penalty[i].until < w->penalty[slot].until)
			slot = i;
	}
	if (w->penalty[slot].until <= now || w->penalty[slot].uid != c->uid)
		log_warn("workload api: uid %u: connections shed under memory pressure; its new ones are refused "
			 "for %d s", (unsigned)c->uid, LY_WAPI_SHED_PENALTY_MS / 1000);
	w->penalty[slot].uid = c->uid;
	w->penalty[slot].until = now + LY_WAPI_SHED_PENALTY_MS;
}

/* gRPC is done with the connection (rpc.h ly_wapi_conn_release). */
void
ly_wapi_conn_release(void *conn_ctx, void *arg)
{
	(void)arg;
	conn_unref(conn_ctx);
}

/* Appends `sels` to the connection's selectors (taking them). */
static ly_status
conn_add_selectors(struct wconn *c, struct ly_selector *sels, size_t n)
{
	if (n == 0) {
		free(sels);
		return LY_OK;
	}
	if (c->n_sels == 0) {
		c->sels = sels;
		c->n_sels = n;
		return LY_OK;
	}
	if (c->n_sels + n > LY_WORKLOAD_SELECTORS_MAX) {
		ly_selectors_free(sels, n);
		return LY_E_LIMIT;
	}
	struct ly_selector *all = realloc(c->sels, (c->n_sels + n) * sizeof(*all));
	if (all == NULL) {
		ly_selectors_free(sels, n);
		return LY_E_NOMEM;
	}
	memcpy(all + c->n_sels, sels, n * sizeof(*sels));
	free(sels); /* the strings moved into `all` */
	c->sels = all;
	c->n_sels += n;
	return LY_OK;
}

/* Records an attestor's failure; the first one is kept. */
static void
conn_attest_failed(struct wconn *c, ly_status rc, const struct ly_error *err, const char *who)
{
	if (c->attest_rc != LY_OK)
		return;
	c->attest_rc = rc;
	(void)snprintf(c->attest_msg, sizeof(c->attest_msg), "%s: %s", who, err != NULL ? err->msg : "failed");
}

static int
selector_cmp(const void *a, const void *b)
{
	const struct ly_selector *x = *(const struct ly_selector *const *)a, *y = *(const struct ly_selector *const *)b;
	int c = strcmp(x->type, y->type);
	return c != 0 ? c : strcmp(x->value, y->value);
}

/*
 * The key of a workload's selector set for agent.ratelimit.workload_api:
 * SHA-256 over the selectors sorted (type NUL value NUL each), in hex, so
 * that every process with the same selectors (the replicas of one service
 * on a node, what its entries match) shares one bucket, whatever the order
 * the attestors gave them in. No selectors: the empty set's key.
 */
static void
selectors_key(const struct ly_selector *sels, size_t n, char out[WAPI_SELKEY_LEN + 1])
{
	const struct ly_selector **v = n > 0 ? malloc(n * sizeof(*v)) : NULL;
	unsigned char md[WAPI_SELKEY_LEN / 2];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;

	/* Out of memory for the sort: the given order, still one key per set for a given attestor. */
	for (size_t i = 0; i < n && v != NULL; i++)
		v[i] = &sels[i];
	if (v != NULL)
		qsort(v, n, sizeof(*v), selector_cmp);
	for (size_t i = 0; i < n && ok; i++) {
		const struct ly_selector *x = v != NULL ? v[i] : &sels[i];
		ok = EVP_DigestUpdate(ctx, x->type, strlen(x->type) + 1) == 1 &&
		    EVP_DigestUpdate(ctx, x->value, strlen(x->value) + 1) == 1;
	}
	if (!ok || EVP_DigestFinal_ex(ctx, md, NULL) != 1)
		memset(md, 0, sizeof(md)); /* no digest: one bucket for every such caller (the limit still holds) */
	EVP_MD_CTX_free(ctx);
	free(v);
	for (size_t i = 0; i < sizeof(md); i++)
		(void)snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Every attestor has answered: hand the connection to gRPC, or close it. */
static void
conn_attested(struct wconn *c)
{
	struct ly_wapi *w = c->w;
	struct ly_error e;
	uv_os_fd_t fd;

	w->n_attesting--;
	if (w->agent->m_attest_seconds != NULL &&
	    ly_metric_observe(w->agent->m_attest_seconds, NULL, (double)(uv_hrtime() - c->accepted_ns) / 1e9, &e) !=
		LY_OK)
		log_debug("workload api: attestation metric: %s", e.msg);
	if (w->stopping)
		goto close;
	if (c->attest_rc == LY_OK &&
	    ly_unix_peer_verify(w->agent->cfg.proc_root, &c->peer, &e) != LY_OK)
		conn_attest_failed(c, e.code, &e, "after attestation");
	if (c->attest_rc == LY_E_UNTRUSTED || c->attest_rc == LY_E_UNSUPPORTED) {
		/* Permanent: serve the connection to tell the client why. */
		w->attest_denied++;
		log_info("workload api: conn %" PRIu64 " (pid %d uid %u): refused: %s", c->id, (int)c->peer.pid,
		    (unsigned)c->peer.uid, c->attest_msg);
		c->refuse = LY_RPC_PERMISSION_DENIED;
		c->refuse_msg = "workload attestation failed: the caller could not be identified";
		ly_selectors_free(c->sels, c->n_sels);
		c->sels = NULL;
		c->n_sels = 0;
	} else if (c->attest_rc != LY_OK) {
		/* Transient: close; the client reconnects and is attested again. */
		w->attest_failed++;
		log_warn("workload api: conn %" PRIu64 " (pid %d uid %u): attestation failed, closing: %s", c->id,
		    (int)c->peer.pid, (unsigned)c->peer.uid, c->attest_msg);
		goto close;
	} else {
		selectors_key(c->sels, c->n_sels, c->selkey);
		log_debug("workload api: conn %" PRIu64 " (pid %d uid %u): attested, %zu selectors", c->id,
		    (int)c->peer.pid, (unsigned)c->peer.uid, c->n_sels);
	}
	if (uv_fileno((uv_handle_t *)c->pipe, &fd) != 0) {
		log_warn("workload api: conn %" PRIu64 ": connection lost", c->id);
		goto close;
	}
	/* Its uid's connections were shed while this one was being attested:
	 * refused like those accepted from now on. */
	if (uid_penalized(w, c->uid, uv_now(w->agent->loop)) && !ly_wapi_conn_keep(c, w)) {
		penalty_refused(w, c->uid);
		goto close;
	}
	if (ly_rpc_server_add_fd(w->srv, fd, c, &e) != LY_OK) {
		/* LY_E_LIMIT: the memory guard refused it and penalized its uid (rpc.h). */
		if (e.code != LY_E_LIMIT)
			log_warn("workload api: conn %" PRIu64 ": not served: %s", c->id, e.msg);
		else if (w->refused_handover++ % 1000 == 0)
			log_info("workload api: conn %" PRIu64 " (uid %u): refused: %s (%" PRIu64 " so far)", c->id,
			    (unsigned)c->uid, e.msg, w->refused_handover);
		goto close;
	}
	c->refs++; /* gRPC's, until ly_wapi_conn_release */
close:
	/* libuv cannot let go of an fd: close its handle, gRPC holds a duplicate. */
	uv_close((uv_handle_t *)c->pipe, free_handle_cb);
	c->pipe = NULL;
	conn_unref(c);
}

static void
on_unix_attested(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	struct wconn *c = arg;

	if (rc != LY_OK)
		conn_attest_failed(c, rc, err, "unix");
	else if (c->attest_rc == LY_OK && conn_add_selectors(c, sels, n) != LY_OK)
		conn_attest_failed(c, LY_E_LIMIT, NULL, "unix: too many selectors");
	else if (c->attest_rc != LY_OK)
		ly_selectors_free(sels, n);
	if (--c->attesting == 0)
		conn_attested(c);
}

static void
on_k8s_attested(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	struct wconn *c = arg;

	if (rc != LY_OK)
		conn_attest_failed(c, rc, err, "k8s");
	else if (c->attest_rc == LY_OK && conn_add_selectors(c, sels, n) != LY_OK)
		conn_attest_failed(c, LY_E_LIMIT, NULL, "k8s: too many selectors");
	else if (c->attest_rc != LY_OK)
		ly_selectors_free(sels, n);
	if (--c->attesting == 0)
		conn_attested(c);
}

/* A pidfd for the caller: the kernel's (SO_PEERPIDFD), else pidfd_open; -1 where neither works. */
static int
peer_pidfd(int fd, pid_t pid)
{
	int pidfd = -1;
	socklen_t len = sizeof(pidfd);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && len == sizeof(pidfd) && pidfd >= 0)
		return pidfd;
	long r = syscall(SYS_pidfd_open, pid, 0);
	return r >= 0 ? (int)r : -1;
}

/*
 * Reads who connected and starts attesting. Returns false when the
 * connection is to be closed at once (nothing else was started).
 */
static bool
conn_start(struct wconn *c, int fd)
{
	struct ly_wapi *w = c->w;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct ly_error e;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		log_warn("workload api: no peer credentials: %s", strerror(errno));
		return false;
	}
	c->peer.pid = cred.pid;
	c->peer.uid = cred.uid;
	c->peer.gid = cred.gid;
	c->peer.pidfd = -1;
	c->accepted_ns = uv_hrtime();
	w->n_attesting++;
	c->attesting = 1; /* held while the attestors start */
	if (cred.pid <= 0) {
		ly_error_set(&e, LY_E_UNSUPPORTED, "the caller's PID is not visible to the agent (another PID namespace; "
		    "in Kubernetes the agent needs hostPID)");
		conn_attest_failed(c, LY_E_UNSUPPORTED, &e, "peer");
		goto started;
	}
	/* The pidfd first, then the start time: the pair names the process that connected. */
	c->peer.pidfd = peer_pidfd(fd, cred.pid);
	if (ly_proc_start_time(w->agent->cfg.proc_root, cred.pid, &c->peer.start_time, &e) != LY_OK) {
		conn_attest_failed(c, LY_E_UNTRUSTED, &e, "peer");
		goto started;
	}
	c->peer.has_start_time = true;
	/* And what it runs: an exec after this is refused (procfs.h struct ly_proc_exe). */
	if (ly_proc_exe_id(w->agent->cfg.proc_root, cred.pid, &c->peer.exe, &e) != LY_OK) {
		conn_attest_failed(c, LY_E_UNTRUSTED, &e, "peer");
		goto started;
	}
	c->attesting++;
	if (ly_unix_attest_start(w->agent->loop, w->unix_att, &c->peer, on_unix_attested, c, NULL, &e) != LY_OK) {
		c->attesting--;
		conn_attest_failed(c, e.code, &e, "unix");
		goto started;
	}
	if (w->k8s_att != NULL) {
		c->attesting++;
		if (ly_k8s_attest_start(w->k8s_att, cred.pid, w->agent->cfg.proc_root, on_k8s_attested, c, NULL, &e) !=
		    LY_OK) {
			c->attesting--;
			conn_attest_failed(c, e.code, &e, "k8s");
		}
	}
started:
	if (--c->attesting == 0)
		conn_attested(c);
	return true;
}

void
ly_wapi_on_connection(uv_stream_t *listener, int status)
{
	struct ly_wapi *w = listener->data;
	struct wconn *c = NULL;
	uv_pipe_t *pipe;
	uv_os_fd_t fd;

	if (status < 0) {
		log_warn("workload api: accept: %s", uv_strerror(status));
		return;
	}
	pipe = malloc(sizeof(*pipe));
	if (pipe == NULL)
		return;
	if (uv_pipe_init(w->agent->loop, pipe, 0) != 0) {
		free(pipe);
		return;
	}
	if (uv_accept(listener, (uv_stream_t *)pipe) != 0 || uv_fileno((uv_handle_t *)pipe, &fd) != 0)
		goto close;
	w->accepted++;
	if (w->stopping)
		goto close;
	/* Load shedding: the client sees UNAVAILABLE and retries (Workload Endpoint §6). */
	if (w->n_conns >= LY_WAPI_CONNS_MAX) {
		if (w->refused_busy++ % 1000 == 0)
			log_warn("workload api: %zu connections open: refusing new ones", w->n_conns);
		goto close;
	}
	/* One local user cannot take the others' share (issue 19): at most
	 * LY_WAPI_CONNS_PER_UID_MAX connections per uid; past it the client sees
	 * UNAVAILABLE and retries, like the global cap above. */
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		log_warn("workload api: no peer credentials: %s", strerror(errno));
		goto close;
	}
	if (uid_penalized(w, cred.uid, uv_now(w->agent->loop))) {
		penalty_refused(w, cred.uid);
		goto close;
	}
	if (ly_keycount_take(&w->uid_conns, &cred.uid, sizeof(cred.uid), LY_WAPI_CONNS_PER_UID_MAX,
		NULL) != LY_OK) {
		if (w->refused_uid++ % 1000 == 0)
			log_warn("workload api: uid %u holds %d connections: refusing its new ones",
			    (unsigned)cred.uid, LY_WAPI_CONNS_PER_UID_MAX);
		goto close;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		(void)ly_keycount_give(&w->uid_conns, &cred.uid, sizeof(cred.uid));
		goto close;
	}
	c->uid = cred.uid;
	c->w = w;
	c->id = ++w->next_conn_id;
	c->refs = 1; /* the attestation phase */
	c->pipe = pipe;
	c->peer.pidfd = -1;
	ly_queue_insert_tail(&w->conns, &c->link);
	w->n_conns++;
	if (conn_start(c, fd))
		return;
	c->pipe = NULL;
	conn_unref(c);
close:
	uv_close((uv_handle_t *)pipe, free_handle_cb);
}
