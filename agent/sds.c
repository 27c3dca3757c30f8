/* sds.c: see sds.h. */
#include "agent/sds.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "agent/agent.h"
#include "agent/fedset.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/queue.h"

#define NOT_AUTHORIZED "workload is not authorized for the requested identities"

struct stream {
	struct ly_queue link; /* in ly_sds.streams */
	struct ly_sds *s;
	struct ly_rpc_call *call;
	void *conn;
	uint64_t conn_id;
	char node_id[64];            /* for logs, cut */
	bool spiffe;                 /* the validator, chosen on the first request (it carries the node) */
	bool has_req;                /* `req` holds the last request processed */
	struct ly_sds_request req;   /* the names every later push answers */
	uint64_t version;            /* of the last response sent; 0 before any */
	char nonce[9];               /* of the last response sent; "" before any */
	bool sent;
	uint8_t digest[LY_SDS_DIGEST_LEN]; /* of the last response's resources */
};

struct ly_sds {
	struct ly_sds_host host;
	struct ly_sds_config cfg;
	struct ly_queue streams; /* open StreamSecrets streams */
	size_t n_streams;
	uint64_t sent;
	bool stopping;
};

ly_status
ly_sds_new(const struct ly_sds_host *host, const struct ly_sds_config *cfg, struct ly_sds **out, struct ly_error *err)
{
	struct ly_sds *s;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ly_error_set(err, LY_E_NOMEM, "SDS: out of memory");
	s->host = *host;
	s->cfg = *cfg;
	/* SPIRE's defaults for what the configuration leaves unset. */
	if (s->cfg.names.default_svid == NULL)
		s->cfg.names.default_svid = "default";
	if (s->cfg.names.default_bundle == NULL)
		s->cfg.names.default_bundle = "ROOTCA";
	if (s->cfg.names.all_bundles == NULL)
		s->cfg.names.all_bundles = "ALL";
	if (s->cfg.max_response == 0 || s->cfg.max_response > LY_RPC_RESPONSE_MAX)
		s->cfg.max_response = LY_RPC_RESPONSE_MAX;
	ly_queue_init(&s->streams);
	*out = s;
	return LY_OK;
}

static void
stream_free(struct stream *st)
{
	ly_queue_remove(&st->link);
	st->s->n_streams--;
	ly_sds_request_cleanup(&st->req);
	free(st);
}

static void
stream_end(struct stream *st, enum ly_rpc_code code, const char *details)
{
	log_debug("sds: conn %" PRIu64 ": StreamSecrets ends %s", st->conn_id, ly_rpc_code_str(code));
	ly_rpc_call_finish(st->call, code, details);
	stream_free(st);
}

void
ly_sds_stop(struct ly_sds *s)
{
	if (s == NULL || s->stopping)
		return;
	s->stopping = true;
	while (!ly_queue_empty(&s->streams))
		stream_end(LY_QUEUE_DATA(ly_queue_head(&s->streams), struct stream, link), LY_RPC_UNAVAILABLE,
		    "agent is shutting down");
}

void
ly_sds_free(struct ly_sds *s)
{
	if (s == NULL)
		return;
	/* After ly_rpc_close every call was released: no stream is left. */
	while (!ly_queue_empty(&s->streams)) {
		log_error("sds: a stream outlived gRPC");
		stream_free(LY_QUEUE_DATA(ly_queue_head(&s->streams), struct stream, link));
	}
	free(s);
}

void
ly_sds_counts(const struct ly_sds *s, size_t *streams, uint64_t *sent)
{
	*streams = s != NULL ? s->n_streams : 0;
	*sent = s != NULL ? s->sent : 0;
}

/* SPIRE's nonce: 4 random bytes in hex. */
static bool
new_nonce(char out[9])
{
	uint8_t b[4];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return false;
	(void)snprintf(out, 9, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
	return true;
}

/*
 * The caller's identities, or a status to answer with: PERMISSION_DENIED
 * when entitled to nothing, UNAVAILABLE while its SVIDs are being issued
 * (LY_RPC_OK with ids->n > 0 otherwise).
 */
static enum ly_rpc_code
caller_identities(struct ly_sds *s, void *conn, struct ly_cache_identities *ids, const char **details)
{
	const struct ly_selector *sels;
	size_t n;
	uint64_t id;
	struct ly_error e;
	struct ly_cache *c = s->host.cache(s->host.arg);

	*details = NULL;
	if (c == NULL) {
		*details = "agent is not ready yet";
		return LY_RPC_UNAVAILABLE;
	}
	s->host.caller(conn, &sels, &n, &id);
	if (ly_cache_query(c, sels, n, LY_CACHE_QUERY_X509, (int64_t)ly_agent_now(), ids, &e) != LY_OK) {
		log_warn("sds: conn %" PRIu64 ": %s", id, e.msg);
		*details = "identities could not be read";
		return LY_RPC_UNAVAILABLE;
	}
	if (ids->n_entitled == 0) {
		*details = "no identity issued";
		return LY_RPC_PERMISSION_DENIED;
	}
	if (ids->n == 0) {
		*details = "no SVID issued yet";
		return LY_RPC_UNAVAILABLE;
	}
	return LY_RPC_OK;
}

/* LY_E_LIMIT: a response of `len` bytes (`n` resources) over the agent's cap, said so. */
static ly_status
too_large(const struct ly_sds *s, size_t len, size_t n, struct ly_error *err)
{
	return ly_error_set(err, LY_E_LIMIT,
	    "the response (%zu resources, %zu bytes) is over the agent's %zu-byte message cap", n, len,
	    s->cfg.max_response);
}

/* "workload is not authorized for the requested identities [...]", as SPIRE says it. */
static void
not_authorized(char *buf, size_t cap, const struct ly_error *e)
{
	(void)snprintf(buf, cap, NOT_AUTHORIZED " %s", e->msg);
}

/*
 * Brings one stream up to date: ends it when its caller is gone or no
 * longer entitled, or asks for what it may not have; sends a response when
 * `force` (the names changed) or the resources differ from the last sent.
 */
static void
stream_update(struct stream *st, bool force)
{
	struct ly_sds *s = st->s;
	struct ly_cache_identities ids;
	struct ly_buf msg = LY_BUF_INIT;
	struct ly_bundle_set *view = NULL;
	struct ly_error e;
	uint8_t digest[LY_SDS_DIGEST_LEN];
	char version[24], nonce[9], details[LY_ERROR_MSG_MAX + 64];
	const char *why;
	enum ly_rpc_code code;
	size_t n = 0;

	if (!st->has_req)
		return;
	ly_cache_identities_init(&ids);
	if (!s->host.verify(s->host.arg, st->conn, &code, &why)) {
		stream_end(st, code, why);
		goto out;
	}
	code = caller_identities(s, st->conn, &ids, &why);
	if (code == LY_RPC_PERMISSION_DENIED) {
		stream_end(st, code, why);
		goto out;
	}
	if (code != LY_RPC_OK)
		goto out; /* no SVID yet: wait for the next change */
	struct ly_cache *c = s->host.cache(s->host.arg);
	(void)snprintf(version, sizeof(version), "%" PRIu64, st->version + 1);
	if (!new_nonce(nonce)) {
		log_warn("sds: conn %" PRIu64 ": no random nonce", st->conn_id);
		goto out;
	}
	/* The caller's view (fedset.h): ALL and spiffe://<td> cover our bundle and its entries' federated ones. */
	if (ly_fedset_for_caller(ly_cache_bundles(c), ly_cache_trust_domain(c), &ids, &view, NULL, &e) != LY_OK) {
		log_warn("sds: conn %" PRIu64 ": %s", st->conn_id, e.msg);
		goto out;
	}
	ly_status rc = ly_sds_response(&st->req, &s->cfg.names, st->spiffe, &ids, view, ly_cache_trust_domain(c),
	    version, nonce, &msg, &n, digest, &e);
	if (rc == LY_E_NOT_FOUND) {
		log_info("sds: conn %" PRIu64 ": " NOT_AUTHORIZED " %s", st->conn_id, e.msg);
		not_authorized(details, sizeof(details), &e);
		stream_end(st, LY_RPC_INVALID_ARGUMENT, details);
		goto out;
	}
	if (rc == LY_OK && msg.len > s->cfg.max_response)
		rc = too_large(s, msg.len, n, &e);
	if (rc == LY_E_LIMIT) {
		/* Not dropped in silence: Envoy is told why (a NACK cannot be sent it). */
		log_warn("sds: conn %" PRIu64 ": %s", st->conn_id, e.msg);
		stream_end(st, LY_RPC_RESOURCE_EXHAUSTED, e.msg);
		goto out;
	}
	if (rc != LY_OK) {
		log_warn("sds: conn %" PRIu64 ": %s", st->conn_id, e.msg);
		goto out;
	}
	if (!force && st->sent && CRYPTO_memcmp(digest, st->digest, sizeof(digest)) == 0)
		goto out; /* nothing new for this Envoy */
	if (ly_rpc_call_send(st->call, msg.data, msg.len, LY_RPC_WIPE, &e) != LY_OK) {
		log_warn("sds: conn %" PRIu64 ": %s", st->conn_id, e.msg);
		goto out;
	}
	st->version++;
	memcpy(st->nonce, nonce, sizeof(st->nonce));
	memcpy(st->digest, digest, sizeof(digest));
	st->sent = true;
	s->sent++;
	log_debug("sds: conn %" PRIu64 " (node \"%s\"): sent version %s nonce %s, %zu resources", st->conn_id,
	    st->node_id, version, nonce, n);
out:
	ly_buf_free_secret(&msg);
	ly_bundle_set_free(view);
	OPENSSL_cleanse(digest, sizeof(digest));
	ly_cache_identities_cleanup(&ids);
}

/* One DiscoveryRequest of a stream (SPIRE's StreamSecrets loop); takes `req`. */
static void
stream_request(struct stream *st, struct ly_sds_request *req)
{
	if (req->nack)
		log_warn("sds: conn %" PRIu64 ": Envoy (node \"%s\") rejected version \"%s\": %s", st->conn_id,
		    st->has_req ? st->node_id : req->node_id, req->version_info, req->error_message);
	if (st->sent) {
		/* The nonce must be the last one sent, else the request is stale. */
		if (strcmp(req->response_nonce, st->nonce) != 0) {
			log_debug("sds: conn %" PRIu64 ": stale nonce \"%s\" (last sent \"%s\"): ignored", st->conn_id,
			    req->response_nonce, st->nonce);
			ly_sds_request_cleanup(req);
			return;
		}
	}
	bool changed = !st->has_req || !ly_sds_names_equal(&st->req, req);
	if (!st->has_req) {
		st->spiffe = ly_sds_use_spiffe_validator(req, st->s->cfg.disable_spiffe_cert_validation);
		(void)snprintf(st->node_id, sizeof(st->node_id), "%s", req->node_id);
	}
	ly_sds_request_cleanup(&st->req);
	st->req = *req;
	memset(req, 0, sizeof(*req));
	st->has_req = true;
	/* An ACK (same names) gets no reply; a NACK with the same names neither (SPIRE). */
	if (changed)
		stream_update(st, true);
}

static void
on_stream_closed(struct ly_rpc_call *call, void *arg)
{
	(void)call;
	stream_end(arg, LY_RPC_CANCELLED, "client went away");
}

static void
on_stream_message(struct ly_rpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
	struct stream *st = arg;
	struct ly_sds_request req;
	struct ly_error e;
	char details[LY_ERROR_MSG_MAX + 32];

	(void)call;
	if (ly_sds_parse_request(msg, len, &req, &e) != LY_OK) {
		log_info("sds: conn %" PRIu64 ": %s", st->conn_id, e.msg);
		(void)snprintf(details, sizeof(details), "invalid request: %s", e.msg);
		stream_end(st, LY_RPC_INVALID_ARGUMENT, details);
		return;
	}
	stream_request(st, &req);
}

void
ly_sds_stream_secrets(struct ly_sds *s, struct ly_rpc_call *call, const uint8_t *msg, size_t len)
{
	struct ly_sds_request req;
	struct ly_error e;
	struct stream *st;
	const struct ly_selector *sels;
	size_t n;
	char details[LY_ERROR_MSG_MAX + 32];
	void *conn;

	if (s->stopping) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "agent is shutting down");
		return;
	}
	if ((conn = s->host.admit(s->host.arg, call)) == NULL)
		return;
	if (ly_sds_parse_request(msg, len, &req, &e) != LY_OK) {
		(void)snprintf(details, sizeof(details), "invalid request: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		return;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		ly_sds_request_cleanup(&req);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
		return;
	}
	st->s = s;
	st->call = call;
	st->conn = conn;
	s->host.caller(conn, &sels, &n, &st->conn_id);
	ly_queue_insert_tail(&s->streams, &st->link);
	s->n_streams++;
	ly_rpc_call_set_closed_cb(call, on_stream_closed, st);
	ly_rpc_call_set_message_cb(call, on_stream_message, st);
	log_debug("sds: conn %" PRIu64 ": StreamSecrets from node \"%s\" (%s %" PRIu32 ".%" PRIu32 ")", st->conn_id,
	    req.node_id, req.user_agent_name, req.major, req.minor);
	stream_request(st, &req);
}

void
ly_sds_fetch_secrets(struct ly_sds *s, struct ly_rpc_call *call, const uint8_t *msg, size_t len)
{
	struct ly_sds_request req;
	struct ly_cache_identities ids;
	struct ly_buf out = LY_BUF_INIT;
	struct ly_bundle_set *view = NULL;
	struct ly_error e;
	char details[LY_ERROR_MSG_MAX + 64];
	const char *why;
	enum ly_rpc_code code;
	size_t n;
	void *conn;

	ly_cache_identities_init(&ids);
	if (s->stopping) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "agent is shutting down");
		return;
	}
	if ((conn = s->host.admit(s->host.arg, call)) == NULL)
		return;
	if (ly_sds_parse_request(msg, len, &req, &e) != LY_OK) {
		(void)snprintf(details, sizeof(details), "invalid request: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		return;
	}
	code = caller_identities(s, conn, &ids, &why);
	if (code != LY_RPC_OK) {
		ly_rpc_call_finish(call, code, why);
		goto out;
	}
	struct ly_cache *c = s->host.cache(s->host.arg);
	if (ly_fedset_for_caller(ly_cache_bundles(c), ly_cache_trust_domain(c), &ids, &view, NULL, &e) != LY_OK) {
		log_warn("sds: FetchSecrets: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "out of memory");
		goto out;
	}
	ly_status rc = ly_sds_response(&req, &s->cfg.names,
	    ly_sds_use_spiffe_validator(&req, s->cfg.disable_spiffe_cert_validation), &ids, view,
	    ly_cache_trust_domain(c), NULL, NULL, &out, &n, NULL, &e);
	if (rc == LY_E_NOT_FOUND) {
		not_authorized(details, sizeof(details), &e);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, details);
		goto out;
	}
	if (rc == LY_OK && out.len > s->cfg.max_response)
		rc = too_large(s, out.len, n, &e);
	if (rc == LY_E_LIMIT) {
		log_warn("sds: FetchSecrets: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, e.msg);
		goto out;
	}
	if (rc != LY_OK) {
		log_warn("sds: FetchSecrets: %s", e.msg);
		ly_rpc_call_finish(call, LY_RPC_INTERNAL, "response could not be built");
		goto out;
	}
	if (ly_rpc_call_reply(call, out.data, out.len, LY_RPC_WIPE, &e) != LY_OK)
		log_warn("sds: FetchSecrets: %s", e.msg);
	else
		s->sent++;
out:
	ly_buf_free_secret(&out);
	ly_bundle_set_free(view);
	ly_cache_identities_cleanup(&ids);
	ly_sds_request_cleanup(&req);
}

void
ly_sds_delta_secrets(struct ly_sds *s, struct ly_rpc_call *call, const uint8_t *msg, size_t len)
{
	(void)s;
	(void)msg;
	(void)len;
	ly_rpc_call_finish(call, LY_RPC_UNIMPLEMENTED, "Method is not implemented");
}

void
ly_sds_changed(struct ly_sds *s)
{
	struct ly_queue *q, *next;

	if (s == NULL || s->stopping)
		return;
	LY_QUEUE_FOREACH_SAFE(q, next, &s->streams) {
		stream_update(LY_QUEUE_DATA(q, struct stream, link), false);
	}
}
