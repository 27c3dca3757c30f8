/*
 * sync_chan.c: sync's channel to the server (sync_internal.h): the TLS
 * check of the server's certificate (run on gRPC's threads), channels
 * (one current, retired ones freed when their last call ends), the calls
 * on them, and reconnection with backoff over the server list (servers.h):
 * its DNS names resolved on the loop (uv_getaddrinfo), the next address
 * picked when one fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "agent/agentapi_msg.h"
#include "agent/cache.h"
#include "agent/keymap.h"
#include "agent/rotation.h"
#include "agent/state.h"
#include "agent/sync.h"
#include "agent/sync_internal.h"
#include "agent/verify.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/jwt.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"
#include "rpc/uvtimer.h"

/* ---- backoff (sync_internal.h) ----------------------------------------------------------- */

uint64_t
ly_sync_chan_backoff_ms(unsigned attempt, uint32_t rnd)
{
	return ly_servers_backoff_ms(attempt, rnd);
}

/* ---- the server list: names resolved on the loop -------------------------------------------- */

struct sync_resolve {
	uv_getaddrinfo_t req;
	struct ly_sync *s;
	size_t name;
};

static void on_reconnect_timer(uv_timer_t *t);

static void
resolve_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct sync_resolve *r = req->data;
	struct ly_sync *s = r->s;
	const struct ly_server_name *nm = &s->servers->names.v[r->name];
	char text[LY_AGENT_SERVER_ADDRS_MAX][LY_SERVERS_TARGET_MAX];
	const char *addrs[LY_AGENT_SERVER_ADDRS_MAX];
	size_t n = 0;

	s->resolving[r->name] = NULL;
	s->n_works--;
	if (status == 0 && s->phase != PH_STOPPING) {
		for (const struct addrinfo *ai = res; ai != NULL && n < LY_AGENT_SERVER_ADDRS_MAX; ai = ai->ai_next) {
			const void *a = ai->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr :
			    ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr :
							NULL;
			if (a != NULL && inet_ntop(ai->ai_family, a, text[n], sizeof(text[n])) != NULL) {
				addrs[n] = text[n];
				n++;
			}
		}
		bool had = s->servers->n_eps > 0;
		size_t added = ly_servers_set_addrs(s->servers, r->name, addrs, n);
		log_info("server %s: %zu address(es)", nm->host, added);
		/* The first addresses known, a retry waiting for them: it goes now. */
		if (!had && added > 0 && s->reconnect_armed)
			ly_uvtimer_arm(s->t_reconnect, on_reconnect_timer, 0);
	} else if (status != 0 && status != UV_EAI_CANCELED) {
		log_warn("server %s: not resolved: %s (the addresses known are kept)", nm->host, uv_strerror(status));
	}
	uv_freeaddrinfo(res);
	free(r);
	ly_sync_base_stop_maybe_done(s);
}

/* Resolves name `i` of the list unless it is an IP address or already being resolved. */
static void
resolve_name(struct ly_sync *s, size_t i)
{
	const struct ly_server_name *nm = &s->servers->names.v[i];
	struct addrinfo hints;
	struct sync_resolve *r;
	int e;

	if (nm->literal || s->resolving[i] != NULL || s->phase == PH_STOPPING || s->loop == NULL)
		return;
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		log_error("server %s: not resolved: out of memory", nm->host);
		return;
	}
	r->s = s;
	r->name = i;
	r->req.data = r;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((e = uv_getaddrinfo(s->loop, &r->req, resolve_done, nm->host, NULL, &hints)) != 0) {
		log_warn("server %s: not resolved: %s", nm->host, uv_strerror(e));
		free(r);
		return;
	}
	s->resolving[i] = r;
	s->n_works++;
}

void
ly_sync_chan_resolve_all(struct ly_sync *s)
{
	for (size_t i = 0; i < s->servers->names.n; i++)
		resolve_name(s, i);
}

void
ly_sync_chan_resolve_cancel(struct ly_sync *s)
{
	for (size_t i = 0; s->servers != NULL && i < s->servers->names.n; i++) {
		if (s->resolving[i] != NULL)
			(void)uv_cancel((uv_req_t *)&s->resolving[i]->req);
	}
}

const struct ly_server_ep *
ly_sync_chan_endpoint(struct ly_sync *s)
{
	const struct ly_server_ep *ep = ly_servers_current(s->servers);

	if (ep == NULL && ly_servers_pick(s->servers, (int64_t)uv_now(s->loop), ly_sync_base_rand32()) >= 0)
		ep = ly_servers_current(s->servers);
	if (ep != NULL)
		(void)snprintf(s->target, sizeof(s->target), "%s", ep->target);
	return ep;
}

/* ---- the server's certificate (runs on gRPC's threads) ------------------------------------- */

void
ly_sync_chan_tls_check_free(struct tls_check *tc)
{
	if (tc == NULL)
		return;
	X509_STORE_free(tc->store);
	free(tc);
}

/*
 * The server must present an X.509-SVID for spiffe://<td>/lanyard/server
 * that verifies to our bundle (X509-SVID §5; docs/agent-api.md
 * "Transport and identity"). gRPC checked the chain to the roots already;
 * this re-runs path validation with the SPIFFE rules and checks the ID.
 * The insecure bootstrap has no bundle yet (store NULL): only the leaf's
 * SPIFFE ID is checked (trust on first use, logged).
 */
ly_status
ly_sync_chan_check_server(X509_STORE *store, const char *td, const char *server_id, const char *leaf_pem,
    const char *chain_pem, time_t now, struct ly_error *err)
{
	struct ly_buf leaf = LY_BUF_INIT, chain = LY_BUF_INIT, all = LY_BUF_INIT;
	struct ly_spiffe_id id;
	X509 *x = NULL;
	ly_status rc;

	if (leaf_pem == NULL)
		return ly_error_set(err, LY_E_UNTRUSTED, "server certificate: none");
	if ((rc = ly_pem_to_der_certs(leaf_pem, strlen(leaf_pem), 1, LY_CERT_DER_MAX, &leaf, err)) != LY_OK)
		goto out;
	if (chain_pem != NULL && chain_pem[0] != '\0') {
		if ((rc = ly_pem_to_der_certs(chain_pem, strlen(chain_pem), LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &chain,
			 err)) != LY_OK)
			goto out;
	}
	/* The presented chain normally starts with the leaf; make sure it does. */
	if (chain.len >= leaf.len && memcmp(chain.data, leaf.data, leaf.len) == 0) {
		ly_buf_take(&all, &chain);
	} else {
		struct ly_der_view parts[2] = { { leaf.data, leaf.len }, { chain.data, chain.len } };
		if ((rc = ly_der_concat(parts, chain.len > 0 ? 2 : 1, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &all, err)) !=
		    LY_OK)
			goto out;
	}
	if (store != NULL) {
		rc = ly_x509svid_verify(all.data, all.len, store, td, now, &id, err);
	} else if ((rc = ly_der_parse_one(leaf.data, leaf.len, &x, err)) == LY_OK) {
		rc = ly_x509svid_check_leaf(x, &id, err);
	}
	if (rc != LY_OK) {
		(void)ly_error_wrap(err, rc, "server certificate");
		goto out;
	}
	if (strcmp(id.id, server_id) != 0) {
		rc = ly_error_set(err, LY_E_UNTRUSTED, "server certificate: SPIFFE ID %s, expected %s", id.id, server_id);
		goto out;
	}
out:
	X509_free(x);
	ly_buf_free(&leaf);
	ly_buf_free(&chain);
	ly_buf_free(&all);
	return rc;
}

static ly_status
tls_verify(void *arg, const char *leaf_pem, const char *chain_pem, struct ly_error *err)
{
	const struct tls_check *tc = arg;

	return ly_sync_chan_check_server(tc->store, tc->td, tc->server_id, leaf_pem, chain_pem, ly_agent_now(), err);
}

/* ---- channels -------------------------------------------------------------------------------- */

static void
chan_destroy(struct chan *c)
{
	ly_queue_remove(&c->link);
	if (c->ch != NULL)
		ly_rpc_channel_free(c->ch);
	ly_sync_chan_tls_check_free(c->tc);
	free(c);
}

/* No new calls on `c`; it goes once its last call ended. */
void
ly_sync_chan_retire(struct ly_sync *s, struct chan *c)
{
	if (c == NULL)
		return;
	if (s->chan == c)
		s->chan = NULL;
	c->retired = true;
	if (c->ncalls == 0)
		chan_destroy(c);
}

/* Retires `c` and cancels every call on it now (shutdown, re-attestation). */
void
ly_sync_chan_kill(struct ly_sync *s, struct chan *c)
{
	if (c == NULL)
		return;
	if (s->chan == c)
		s->chan = NULL;
	c->retired = true;
	if (c->ncalls == 0) {
		chan_destroy(c);
		return;
	}
	/* Each call still gets its on_status, later, from the loop. */
	ly_rpc_channel_free(c->ch);
	c->ch = NULL;
}

static void
chan_release(struct ly_sync *s, struct chan *c)
{
	(void)s;
	c->ncalls--;
	if (c->retired && c->ncalls == 0)
		chan_destroy(c);
}

/*
 * A new channel to the server. mTLS: our SVID as client certificate, our
 * bundle's roots. Otherwise (attestation): no client certificate, the
 * bootstrap bundle's roots (or, for the insecure bootstrap, the CA
 * certificates the server showed the probe).
 */
ly_status
ly_sync_chan_new(struct ly_sync *s, bool mtls, struct chan **out, struct ly_error *err)
{
	struct chan *c = NULL;
	struct ly_buf der = LY_BUF_INIT, chain_pem = LY_BUF_INIT, key_pem = LY_BUF_INIT;
	char *roots = NULL;
	const struct ly_bundle *b = mtls ? ly_cache_bundle(s->cache) : s->bootstrap;
	const struct ly_server_ep *ep = ly_sync_chan_endpoint(s);
	ly_status rc;

	*out = NULL;
	if (ep == NULL) {
		ly_sync_chan_resolve_all(s);
		return ly_error_set(err, LY_E_IO, "no address known yet for %s", s->target);
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
	c->s = s;
	(void)snprintf(c->target, sizeof(c->target), "%s", ep->target);
	ly_queue_init(&c->link);
	if ((c->tc = calloc(1, sizeof(*c->tc))) == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
		goto out;
	}
	c->mtls = mtls;
	c->serial = ++s->chan_serial;
	(void)snprintf(c->tc->td, sizeof(c->tc->td), "%s", s->td);
	(void)snprintf(c->tc->server_id, sizeof(c->tc->server_id), "%s", s->server_id);
	if (b != NULL) {
		if ((rc = ly_bundle_x509_authorities_der(b, &der, err)) != LY_OK ||
		    (rc = ly_x509_store_new(der.data, der.len, &c->tc->store, err)) != LY_OK ||
		    (rc = ly_bundle_write_pem(b, &roots, err)) != LY_OK)
			goto out;
	} else if (!mtls && s->insecure && s->probe_roots_pem != NULL) {
		if ((roots = strdup(s->probe_roots_pem)) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
			goto out;
		}
	} else {
		rc = ly_error_set(err, LY_E_INVALID, "channel: no trust bundle to check the server with");
		goto out;
	}
	if (mtls) {
		if ((rc = ly_der_certs_to_pem(s->ident.chain.data, s->ident.chain.len, LY_CHAIN_CERTS_MAX,
			 LY_CHAIN_DER_MAX, &chain_pem, err)) != LY_OK ||
		    (rc = ly_key_der_to_pem(s->ident.key_der.data, s->ident.key_der.len, &key_pem, err)) != LY_OK)
			goto out;
	}
	struct ly_rpc_tls_client tls = {
		.root_pem = roots,
		.cert_chain_pem = mtls ? (const char *)chain_pem.data : NULL,
		.key_pem = mtls ? (const char *)key_pem.data : NULL,
		.verify = tls_verify,
		.verify_arg = c->tc,
	};
	/* A WatchEntries snapshot of LY_AGENT_ENTRIES_MAX entries passes gRPC's 4 MiB default (lib/caps.h). */
	struct ly_rpc_channel_config cfg = { .target = c->target, .tls = &tls, .max_response = LY_RPC_RESPONSE_MAX };
	if ((rc = ly_rpc_channel_new(s->agent->rpc, &cfg, &c->ch, err)) != LY_OK)
		goto out;
	ly_queue_insert_head(&s->chans, &c->link);
	*out = c;
	c = NULL;
out:
	if (c != NULL)
		chan_destroy(c);
	free(roots);
	ly_buf_free(&der);
	ly_buf_free(&chain_pem);
	ly_buf_free_secret(&key_pem);
	return rc;
}

/* ---- calls ---------------------------------------------------------------------------------- */

static void
ccall_on_message(struct ly_rpc_ccall *cc, const uint8_t *msg, size_t len, void *arg)
{
	struct ccall *c = arg;

	(void)cc;
	if (c->chan != NULL && !c->chan->answered) {
		/* The server at this address answers: it is no longer held down (servers.h). */
		c->chan->answered = true;
		ly_servers_ok(c->s->servers, c->chan->target);
	}
	if (c->on_msg != NULL) {
		c->on_msg(c, msg, len);
		return;
	}
	/* Unary: one answer, kept for on_done (wiped when freed: it may hold a token). */
	if (c->resp.data != NULL) {
		c->resp_too_many = true;
		return;
	}
	if (ly_buf_set(&c->resp, msg, len, NULL) != LY_OK)
		c->resp_too_many = true;
}

static void
ccall_on_status(struct ly_rpc_ccall *cc, enum ly_rpc_code code, const char *details, void *arg)
{
	struct ccall *c = arg;
	struct ly_sync *s = c->s;
	struct chan *ch = c->chan;

	(void)cc;
	c->cc = NULL;
	if (code == LY_RPC_OK && c->on_msg == NULL && (c->resp.data == NULL || c->resp_too_many)) {
		code = LY_RPC_INTERNAL;
		details = "answer missing or unreadable";
	}
	c->on_done(c, code, details != NULL ? details : ""); /* frees c */
	chan_release(s, ch);
	s->n_calls--;
	ly_sync_base_stop_maybe_done(s);
}

/* Releases what struct ccall holds (the kinds call it from on_done). */
void
ly_sync_chan_call_cleanup(struct ccall *c)
{
	ly_buf_free_secret(&c->resp);
}

/*
 * Starts `c` on channel `ch`: packs `req`, wiped afterwards when `secret`.
 * On error nothing runs and `c` is still the caller's.
 */
ly_status
ly_sync_chan_call_start(struct ly_sync *s, struct chan *ch, struct ccall *c, const char *method, enum ly_rpc_kind kind,
    const ProtobufCMessage *req, bool secret, struct ly_error *err)
{
	struct ly_buf buf = LY_BUF_INIT;
	size_t n = protobuf_c_message_get_packed_size(req);
	ly_status rc;

	if (ch == NULL || ch->retired || ch->ch == NULL)
		return ly_error_set(err, LY_E_IO, "not connected to the server");
	if (n > LY_RPC_MSG_MAX)
		return ly_error_set(err, LY_E_LIMIT, "%s: request over %d bytes", method, LY_RPC_MSG_MAX);
	uint8_t *packed = malloc(n + 1);
	if (packed == NULL)
		return ly_error_set(err, LY_E_NOMEM, "%s: out of memory", method);
	ly_buf_adopt(&buf, packed, protobuf_c_message_pack(req, packed));
	c->s = s;
	c->chan = ch;
	struct ly_rpc_call_config cfg = {
		.method = method,
		.kind = kind,
		.req = buf.data,
		.req_len = buf.len,
		.flags = secret ? LY_RPC_WIPE : 0u,
		.timeout_ms = kind == LY_RPC_UNARY ? UNARY_TIMEOUT_MS : 0,
		.on_message = ccall_on_message,
		.on_status = ccall_on_status,
		.arg = c,
	};
	rc = ly_rpc_channel_call(ch->ch, &cfg, &c->cc, err);
	if (secret)
		ly_buf_free_secret(&buf);
	else
		ly_buf_free(&buf);
	if (rc != LY_OK)
		return rc;
	ch->ncalls++;
	s->n_calls++;
	return LY_OK;
}

static void
on_reconnect_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s == NULL)
		return;
	s->reconnect_armed = false;
	if (s->phase == PH_ENROLLED)
		s->steps->connect(s);
	else if (s->phase == PH_ATTEST)
		s->steps->attest(s);
}

/*
 * Tries again after the backoff delay (one pending retry at a time; see
 * sync_internal.h). The delay is the full-jitter backoff of the agent's
 * failures in a row, or the hold-down of the address picked when that is
 * longer (every address failed lately). A channel to another address than
 * the one picked is retired, so the next call goes to the new one.
 */
void
ly_sync_chan_reconnect_later(struct ly_sync *s, const char *why)
{
	char was[LY_SERVERS_TARGET_MAX] = "";

	if (s->reconnect_armed || s->phase == PH_STOPPING)
		return;
	int64_t now = (int64_t)uv_now(s->loop);
	const struct ly_server_ep *ep = ly_servers_current(s->servers);
	if (ep != NULL) {
		(void)snprintf(was, sizeof(was), "%s", ep->target);
		size_t name = ep->name;
		ly_servers_failed(s->servers, now);
		resolve_name(s, name); /* a DNS name: its addresses may have changed */
	} else {
		ly_sync_chan_resolve_all(s);
	}
	int next = ly_servers_pick(s->servers, now, ly_sync_base_rand32());
	uint64_t ms = ly_sync_chan_backoff_ms(s->backoff_attempt, ly_sync_base_rand32());
	int64_t hold = ly_servers_wait_ms(s->servers, next, now);
	if (hold > 0 && (uint64_t)hold > ms)
		ms = (uint64_t)hold;
	if (s->backoff_attempt < 32)
		s->backoff_attempt++;
	ep = ly_servers_current(s->servers);
	if (ep != NULL)
		(void)snprintf(s->target, sizeof(s->target), "%s", ep->target);
	if (s->chan != NULL && (ep == NULL || strcmp(s->chan->target, ep->target) != 0))
		ly_sync_chan_retire(s, s->chan);
	if (ep != NULL && was[0] != '\0' && strcmp(was, ep->target) != 0)
		log_info("server %s: %s: retrying in %" PRIu64 " ms with server %s", was, why, ms, ep->target);
	else
		log_info("server %s: %s: retrying in %" PRIu64 " ms", was[0] != '\0' ? was : s->target, why, ms);
	s->reconnect_armed = true;
	ly_uvtimer_arm(s->t_reconnect, on_reconnect_timer, ms);
}

