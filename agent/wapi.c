/*
 * wapi.c: the SPIFFE Workload API (SPEC §3; SPIFFE Workload API and
 * Workload Endpoint standards) on the agent's Unix socket.
 *
 * The socket (SPEC §2): its directory is created 0755 (others may search
 * it; an existing one must be ours and writable by us alone, so nobody
 * else can swap the socket), and the socket is bound with umask 0 so it
 * is born 0777: every local user may connect, the API authorizes by
 * attestation, not by file mode. No chmod after bind, so no window.
 *
 * A connection (Workload Endpoint §5, SPEC §5):
 *   1. libuv accepts it; SO_PEERCRED gives pid, uid, gid. PID 0 (a caller
 *      in a PID namespace we cannot see) is refused: PERMISSION_DENIED.
 *   2. A pidfd for that process: SO_PEERPIDFD (Linux 6.5: the kernel's
 *      own reference to the process that connected, immune to PID reuse),
 *      else pidfd_open(pid); and its start time (procfs.h). Both stay with
 *      the connection.
 *   3. Workload attestation, once per connection, off the loop: unix
 *      always (attest_unix.h, on a worker), k8s when enabled
 *      (attest_k8s.h); then ly_proc_verify, so a PID reused meanwhile
 *      yields nothing.
 *   4. Only then is the connection handed to gRPC (ly_rpc_server_add_fd),
 *      its context holding the selectors. So no call can arrive before
 *      attestation has finished: the client's first bytes wait in the
 *      socket buffer, and its first call is answered as soon as
 *      attestation is done (the choice between "queue" and "UNAVAILABLE":
 *      neither is needed). A transient attestation failure (kubelet
 *      down, /proc unreadable) closes the connection: the client sees
 *      UNAVAILABLE and reconnects, and is attested afresh. A permanent
 *      one (PID 0; the process gone or its PID reused) is served with
 *      every call refused PERMISSION_DENIED, so the client learns why.
 * Before every answer (each unary reply, each stream message) the caller
 * is checked again (ly_unix_peer_verify: the pidfd still names a live
 * process, its start time is unchanged, and it runs the executable it ran
 * at accept: no exec since); once that fails the connection is
 * refused PERMISSION_DENIED for good and its streams end so: an identity
 * never goes to whoever holds the PID now.
 *
 * Calls, in this order (SPIRE's order):
 *   - metadata `workload.spiffe.io: true`, else INVALID_ARGUMENT
 *     (Workload Endpoint §6; /SpiffeWorkloadAPI/ only: Envoy's SDS, served
 *     here too by sds.c, sends none, SPEC §8);
 *   - the agent stopping: UNAVAILABLE;
 *   - the connection refused (above): PERMISSION_DENIED;
 *   - the agent not ready (the source's ready() false: no SVID of its own,
 *     bundle or entries yet, and nothing cached): UNAVAILABLE (clients
 *     retry with a backoff);
 *   - then each method's own rules (below).
 * A caller entitled to no entry gets PERMISSION_DENIED from
 * FetchX509SVID, FetchX509Bundles, FetchJWTBundles and FetchJWTSVID, as
 * SPIRE does by default (Workload API §5.2, §6.2: "not entitled to
 * receive"); ValidateJWTSVID needs no entitlement.
 *
 * Bundles (SPEC §3, §9): a caller sees our bundle and the federated
 * bundles of the trust domains its entries federate with, never another
 * workload's (fedset.h): FetchX509SVID's federated_bundles for the SVIDs in
 * the response, the bundle streams for every entry it is entitled to. A
 * caller whose entries federate with nothing gets the one shared response
 * of the pass. ValidateJWTSVID validates against the same view (the
 * caller's entries; ours alone for a caller with none), as SPIRE does.
 *
 * Streams (Workload API §4.3): the first response at once; then, on
 * ly_wapi_cache_changed / ly_wapi_bundle_changed (coalesced into one pass
 * on the next loop turn) and when an SVID on a stream expires, each
 * stream's full response is rebuilt and sent only if its SHA-256 differs
 * from the last one sent. FetchX509SVID sends only SVIDs valid now (a
 * client never sees an expired SVID; the cache holds only verified ones),
 * waits while the caller is entitled but has no SVID yet, and ends with
 * PERMISSION_DENIED once the caller's last entry is gone. Packed
 * responses hold private keys: they go out with LY_RPC_WIPE and our copy
 * is wiped.
 *
 * FetchJWTSVID: at least one audience (INVALID_ARGUMENT); the optional
 * spiffe_id must be one of the caller's (PERMISSION_DENIED); one token per
 * identity (or the one asked for) through the source's fetch_jwt, each checked
 * again before it is sent (signature, audience, expiry, subject); a
 * failure fails the call UNAVAILABLE (SPIRE). Tokens are never logged.
 * ValidateJWTSVID: audience and svid required (INVALID_ARGUMENT); lib/jwt
 * validation against the bundles (INVALID_ARGUMENT with the reason when
 * it fails); returns the SPIFFE ID and the claims as a
 * google.protobuf.Struct.
 *
 * grpc.health.v1.Health/Check (an extra service, Workload Endpoint §7):
 * SERVING when the agent is ready; what `lanyard-agent healthcheck` and
 * grpc-health-probe ask. A service name other than "" or
 * "SpiffeWorkloadAPI" is NOT_FOUND (the health protocol's rule).
 *
 * Threads: the loop thread only. Lifetimes: a connection lives until both
 * its attestation has ended and gRPC released its context (ly_wapi_conn_release);
 * a call's connection outlives the call (rpc.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "agent/wapi.h"
#include "agent/wapi_internal.h"
#include "agent/attest_k8s.h"
#include "agent/attest_unix.h"
#include "agent/sds.h" /* SDS hook */
#include "lib/config.h"
#include "lib/log.h"
#include "lib/ratelimit.h"
#include "lib/fsperm.h"
#include "lib/sockpath.h"
#include "rpc/keycount.h"
#include "rpc/rpc.h"

#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define LISTEN_BACKLOG 1024

static void wapi_maybe_free(struct ly_wapi *w);

void
ly_wapi_cache_changed(struct ly_wapi *w)
{
	if (w != NULL)
		ly_wapi_pass_schedule(w);
}

uint64_t
ly_wapi_rate_limited(const struct ly_wapi *w)
{
	return w != NULL ? w->rate_limited : 0;
}

void
ly_wapi_counts(const struct ly_wapi *w, size_t *conns, size_t *streams)
{
	*conns = 0;
	*streams = 0;
	if (w == NULL)
		return;
	*conns = w->n_conns;
	for (size_t k = 0; k < sizeof(w->n_streams) / sizeof(w->n_streams[0]); k++)
		*streams += w->n_streams[k];
	size_t sds_streams; /* SDS hook: Envoy's StreamSecrets count too */
	uint64_t sds_sent;
	ly_sds_counts(w->sds, &sds_streams, &sds_sent);
	*streams += sds_streams;
}

void
ly_wapi_bundle_changed(struct ly_wapi *w)
{
	if (w != NULL)
		ly_wapi_pass_schedule(w);
}

/* ---- SDS hook: Envoy SDS v3 (sds.h) on this socket, attested like any workload ---- */

static void *
sds_admit(void *arg, struct ly_rpc_call *call)
{
	struct wconn *c;
	return ly_wapi_call_admit(arg, call, &c) ? c : NULL;
}

static bool
sds_verify(void *arg, void *conn, enum ly_rpc_code *code, const char **details)
{
	struct wconn *c = conn;
	(void)arg;
	if (ly_wapi_conn_verify(c))
		return true;
	c->w->denied++;
	*code = c->refuse;
	*details = c->refuse_msg;
	return false;
}

static void
sds_caller(void *conn, const struct ly_selector **sels, size_t *n, uint64_t *id)
{
	const struct wconn *c = conn;
	*sels = c->sels;
	*n = c->n_sels;
	*id = c->id;
}

static struct ly_cache *
sds_cache(void *arg)
{
	return ly_wapi_cache(arg);
}

static void
h_sds_stream(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	ly_sds_stream_secrets(((struct ly_wapi *)arg)->sds, call, req, len);
}

static void
h_sds_fetch(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	ly_sds_fetch_secrets(((struct ly_wapi *)arg)->sds, call, req, len);
}

static void
h_sds_delta(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	ly_sds_delta_secrets(((struct ly_wapi *)arg)->sds, call, req, len);
}

static const struct ly_rpc_method methods[] = {
	{ M("FetchX509SVID"), LY_RPC_SERVER_STREAM, ly_wapi_fetch_x509_svid },
	{ M("FetchX509Bundles"), LY_RPC_SERVER_STREAM, ly_wapi_fetch_x509_bundles },
	{ M("FetchJWTSVID"), LY_RPC_UNARY, ly_wapi_fetch_jwt_svid },
	{ M("FetchJWTBundles"), LY_RPC_SERVER_STREAM, ly_wapi_fetch_jwt_bundles },
	{ M("ValidateJWTSVID"), LY_RPC_UNARY, ly_wapi_validate_jwt_svid },
	{ HEALTH_CHECK, LY_RPC_UNARY, ly_wapi_health_check },
	/* SDS hook */
	{ LY_SDS_SERVICE "StreamSecrets", LY_RPC_BIDI_STREAM, h_sds_stream },
	{ LY_SDS_SERVICE "FetchSecrets", LY_RPC_UNARY, h_sds_fetch },
	{ LY_SDS_SERVICE "DeltaSecrets", LY_RPC_BIDI_STREAM, h_sds_delta },
};

/* ---- the socket ---------------------------------------------------------------------------------- */

/*
 * The socket's directory: created (parents 0755, itself 0755) when
 * missing; it and every directory above it must be root's or ours and
 * writable by no one else (a sticky /tmp allowed above it), not a link
 * itself (ly_fsperm_dir_chain), else someone could replace our socket or
 * squat the directory before we start. A stale socket at `path` is
 * removed; anything else there is refused.
 */
static ly_status
socket_dir_prepare(const char *path, struct ly_error *err)
{
	char dir[sizeof(((struct sockaddr_un *)NULL)->sun_path)];
	struct ly_fsperm_chain chain;
	ly_status rc;

	/* Checked at config load too; here for any other caller. */
	LY_TRY(ly_config_check_socket_path(path, err));
	size_t dlen = (size_t)(strrchr(path, '/') - path);
	memcpy(dir, path, dlen);
	dir[dlen] = '\0';
	rc = ly_fsperm_dir_chain(dir, geteuid(), LY_FSPERM_CREATE | LY_FSPERM_LEAF_NOFOLLOW, 0755, &chain, err);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "socket directory %s", dir);
	if ((chain.leaf.st_mode & 001) == 0)
		log_warn("socket directory %s is not searchable by others (mode %03o): other users cannot reach the "
		    "Workload API", dir, (unsigned)(chain.leaf.st_mode & 0777));
	if ((rc = ly_sockpath_replace_stale(path, err)) != LY_OK)
		return ly_error_wrap(err, rc, "socket");
	return LY_OK;
}

static ly_status
socket_listen(struct ly_wapi *w, struct ly_error *err)
{
	const char *path = w->agent->cfg.socket_path;
	int rc;

	LY_TRY(socket_dir_prepare(path, err));
	if ((rc = uv_pipe_init(w->agent->loop, &w->listener, 0)) != 0)
		return ly_error_set(err, LY_E_IO, "Workload API socket: %s", uv_strerror(rc));
	w->listener.data = w;
	w->listening = true;
	w->open_handles++;
	/* Born 0777 (SPEC §2): every local user may connect, attestation decides. */
	mode_t old = umask(0);
	rc = uv_pipe_bind(&w->listener, path);
	(void)umask(old);
	if (rc != 0)
		return ly_error_set(err, LY_E_IO, "cannot listen on Workload API socket %s: %s", path, uv_strerror(rc));
	w->bound = true;
	if ((rc = uv_listen((uv_stream_t *)&w->listener, LISTEN_BACKLOG, ly_wapi_on_connection)) != 0)
		return ly_error_set(err, LY_E_IO, "cannot listen on Workload API socket %s: %s", path, uv_strerror(rc));
	return LY_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

/* "https://HOST[:PORT][/]" (agent.c checked the form) into the kubelet's host and port. */
static ly_status
kubelet_target(const char *url, char **host, unsigned *port, struct ly_error *err)
{
	const char *h = url + strlen("https://"), *end = h + strlen(h);
	const char *colon;

	*host = NULL;
	*port = 0;
	if (strncmp(url, "https://", 8) != 0)
		return ly_error_set(err, LY_E_INVALID, "kubelet URL must start with https://");
	if (end > h && end[-1] == '/')
		end--;
	if (*h == '[') {
		const char *close = memchr(h, ']', (size_t)(end - h));
		if (close == NULL)
			return ly_error_set(err, LY_E_INVALID, "kubelet URL: unclosed [");
		colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
		*host = strndup(h + 1, (size_t)(close - h - 1));
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		*host = strndup(h, (size_t)((colon != NULL ? colon : end) - h));
	}
	if (*host == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	if (colon != NULL) {
		unsigned long p = 0;
		const char *q = colon + 1;
		for (; q < end && *q >= '0' && *q <= '9' && p <= 65535; q++)
			p = p * 10 + (unsigned long)(*q - '0');
		if (q != end || q == colon + 1 || p == 0 || p > 65535) {
			free(*host);
			*host = NULL;
			return ly_error_set(err, LY_E_INVALID, "kubelet URL: bad port");
		}
		*port = (unsigned)p;
	}
	return LY_OK;
}

ly_status
ly_wapi_new(struct ly_agent *agent, const struct ly_wapi_source *src, struct ly_wapi **out, struct ly_error *err)
{
	struct ly_wapi *w = calloc(1, sizeof(*w));
	const struct ly_agent_config *cfg = &agent->cfg;
	ly_status rc;

	*out = NULL;
	if (w == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	w->agent = agent;
	w->src = *src;
	w->maybe_free = wapi_maybe_free;
	w->max_response = (size_t)cfg->workload_response_max;
	if (w->max_response == 0 || w->max_response > LY_RPC_RESPONSE_MAX)
		w->max_response = LY_RPC_RESPONSE_MAX;
	ly_queue_init(&w->conns);
	ly_queue_init(&w->streams);
	ly_queue_init(&w->jwt_reqs);
	/* 0 means "never hash" in our config, "default" to the attestor: 1 byte hashes nothing real. */
	struct ly_unix_attestor_config uc = {
		.proc_root = cfg->proc_root,
		.hash_max = cfg->unix_hash_max_bytes > 0 ? cfg->unix_hash_max_bytes : 1,
	};
	if ((rc = ly_unix_attestor_new(&uc, &w->unix_att, err)) != LY_OK) {
		ly_error_wrap(err, rc, "unix workload attestor");
		goto fail;
	}
	if (cfg->k8s_enabled) {
		struct ly_k8s_attestor_config kc;
		memset(&kc, 0, sizeof(kc));
		if (cfg->kubelet_url != NULL) {
			if ((rc = kubelet_target(cfg->kubelet_url, &w->kubelet_host, &kc.kubelet.port, err)) != LY_OK)
				goto fail;
		} else if ((w->kubelet_host = strdup(cfg->k8s_node_name != NULL ? cfg->k8s_node_name : "")) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto fail;
		}
		kc.kubelet.host = w->kubelet_host;
		kc.kubelet.token_file = cfg->kubelet_token_path;
		kc.kubelet.ca_file = cfg->kubelet_ca_path;
		kc.kubelet.skip_verify = cfg->kubelet_skip_verify;
		if ((rc = ly_k8s_attestor_new(agent->loop, &kc, &w->k8s_att, err)) != LY_OK) {
			ly_error_wrap(err, rc, "k8s workload attestor");
			goto fail;
		}
	}
	/* SDS hook */
	struct ly_sds_host sh = { .arg = w, .admit = sds_admit, .verify = sds_verify, .caller = sds_caller,
		.cache = sds_cache };
	struct ly_sds_config sdc = {
		.names = { cfg->sds_default_svid_name, cfg->sds_default_bundle_name, cfg->sds_default_all_bundles_name },
		.disable_spiffe_cert_validation = cfg->sds_disable_spiffe_cert_validation,
		.max_response = w->max_response,
	};
	if ((rc = ly_sds_new(&sh, &sdc, &w->sds, err)) != LY_OK)
		goto fail;
	if (cfg->ratelimit_workload_api > 0) {
		struct ly_ratelimit_config rl = {
			.name = "workload_api",
			.rate = cfg->ratelimit_workload_api,
			.burst = cfg->ratelimit_workload_api,
			.max_keys = LY_WAPI_RATELIMIT_KEYS,
		};
		if ((rc = ly_ratelimit_new(&rl, &w->limit, err)) != LY_OK)
			goto fail;
	}
	struct ly_rpc_server_config sc = {
		.methods = methods,
		.n_methods = sizeof(methods) / sizeof(methods[0]),
		.arg = w,
		.max_request = LY_WORKLOAD_REQUEST_MAX,
		/* Set: gRPC's default (4 MiB) kept large entitlements from being served at all (lib/caps.h). */
		.max_response = w->max_response,
		/* SDS hook: Envoy's Node lists its extensions (tens of KB). */
		.large_service = LY_SDS_SERVICE,
		.large_max_request = LY_SDS_REQUEST_MAX,
		.conn_release = ly_wapi_conn_release,
		.conn_keep = ly_wapi_conn_keep,
		.conn_shed = ly_wapi_conn_shed,
	};
	if ((rc = ly_rpc_server_new(agent->rpc, &sc, &w->srv, err)) != LY_OK)
		goto fail;
	uv_timer_init(agent->loop, &w->kick);
	uv_timer_init(agent->loop, &w->expiry);
	w->kick.data = w->expiry.data = w;
	w->handles_init = true;
	w->open_handles += 2;
	*out = w;
	return LY_OK;
fail:
	/* No handle was made yet: free at once (the k8s attestor closes itself asynchronously). */
	ly_k8s_attestor_close(w->k8s_att);
	ly_unix_attestor_free(w->unix_att);
	ly_sds_free(w->sds); /* SDS hook */
	ly_ratelimit_free(w->limit);
	free(w->kubelet_host);
	free(w);
	return rc;
}

ly_status
ly_wapi_start(struct ly_wapi *w, struct ly_error *err)
{
	struct stat st;

	LY_TRY(ly_rpc_server_start(w->srv, err));
	LY_TRY(socket_listen(w, err));
	w->started = true;
	if (stat(w->agent->cfg.socket_path, &st) == 0 && (st.st_mode & 0777) != 0777)
		log_warn("Workload API socket %s is %03o, not 0777", w->agent->cfg.socket_path,
		    (unsigned)(st.st_mode & 0777));
	log_info("Workload API listening on %s", w->agent->cfg.socket_path);
	return LY_OK;
}

/* Handles embedded in struct ly_wapi: it is freed once the last one is closed. */
static void
handle_closed_cb(uv_handle_t *h)
{
	struct ly_wapi *w = h->data;

	w->open_handles--;
	wapi_maybe_free(w);
}

void
ly_wapi_stop(struct ly_wapi *w)
{
	struct ly_queue *l, *next;

	if (w == NULL || w->stopping)
		return;
	w->stopping = true;
	if (w->listening) {
		uv_close((uv_handle_t *)&w->listener, handle_closed_cb);
		w->listening = false;
		if (w->bound)
			(void)unlink(w->agent->cfg.socket_path);
	}
	if (w->handles_init) {
		uv_timer_stop(&w->kick);
		uv_timer_stop(&w->expiry);
	}
	/* Open streams end now; clients reconnect (to the next agent). */
	LY_QUEUE_FOREACH_SAFE(l, next, &w->streams) {
		ly_wapi_stream_end(LY_QUEUE_DATA(l, struct stream, link), LY_RPC_UNAVAILABLE, "agent is shutting down");
	}
	ly_sds_stop(w->sds); /* SDS hook */
	/* k8s attestations still running end from inside close (LY_E_IO): their
	 * connections are closed. Unix ones end on their own (their workers
	 * cannot be stopped midway); the connection closes then. */
	ly_k8s_attestor_close(w->k8s_att);
	w->k8s_att = NULL;
	log_info("Workload API stopped: %" PRIu64 " connections accepted, %" PRIu64 " calls, %" PRIu64
	    " responses streamed, %" PRIu64 " refused", w->accepted, w->calls, w->sent, w->denied + w->attest_denied);
}

/* The last step of ly_wapi_free, once no attestation is running. */
static void
wapi_maybe_free(struct ly_wapi *w)
{
	if (!w->freeing || w->open_handles > 0 || w->n_attesting > 0 || w->n_conns > 0)
		return;
	ly_unix_attestor_free(w->unix_att);
	ly_sds_free(w->sds); /* SDS hook */
	ly_ratelimit_free(w->limit);
	free(w->kubelet_host);
	ly_keycount_cleanup(&w->uid_conns);
	free(w);
}

void
ly_wapi_free(struct ly_wapi *w)
{
	struct ly_queue *l, *next;

	if (w == NULL)
		return;
	ly_wapi_stop(w);
	w->freeing = true;
	/* After ly_rpc_close: every call was released, so no stream or JWT request is left. */
	LY_QUEUE_FOREACH_SAFE(l, next, &w->jwt_reqs) {
		log_error("workload api: a FetchJWTSVID call outlived gRPC");
		ly_wapi_jwt_req_free(LY_QUEUE_DATA(l, struct jwt_req, link));
	}
	if (w->handles_init) {
		w->handles_init = false;
		uv_close((uv_handle_t *)&w->kick, handle_closed_cb);
		uv_close((uv_handle_t *)&w->expiry, handle_closed_cb);
		return;
	}
	wapi_maybe_free(w);
}
