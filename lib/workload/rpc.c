/*
 * rpc.c: the Workload API over gRPC core (grpc/grpc.h), with no event
 * loop of ours: each call gets its own completion queue and the calling
 * thread blocks in grpc_completion_queue_next (gRPC does its I/O there).
 * The same pattern as bench/wapi_client.c; the method names and the
 * `workload.spiffe.io: true` metadata as agent/cli.c (SPEC §3).
 *
 * The socket: before each call its directory is judged as the CLIs judge
 * theirs (ly_sockpath_owner_check): only root or the directory's owner
 * can have put it there, and that owner is root, us, or was given the
 * directory by root.
 *
 * Secrets: request bytes (a token for ValidateJWTSVID) are handed to gRPC
 * in a slice whose destructor wipes them; each received message is copied
 * out of gRPC's slices, which are wiped in place, and our copy is wiped
 * after the handler ran (X.509 responses carry private keys).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "lib/bundle.h"
#include "lib/pbstrict.h"
#include "lib/pbstruct.h"
#include "lib/sockpath.h"
#include "wl_internal.h"
#include "workload.pb-c.h"

#define METHOD(name) "/SpiffeWorkloadAPI/" name
#define TIMEOUT_DEFAULT_MS 5000
#define POLL_MS 100

struct lanyard_client {
	grpc_channel *ch;
	char path[LANYARD_SOCKET_PATH_MAX + 1];
	unsigned timeout_ms;
	bool judged; /* wl_client_new_fd: the one connection's listener was judged by the caller */
};

/* The channel of a new client: by path (fd -1; gRPC connects and reconnects), or over `fd` (taken). */
static ly_status
client_make(const char *path, int fd, lanyard_client **out, struct ly_error *err)
{
	char target[LANYARD_SOCKET_PATH_MAX + 8];
	lanyard_client *c = NULL;

	*out = NULL;
	if (strlen(path) > LANYARD_SOCKET_PATH_MAX) {
		if (fd >= 0)
			(void)close(fd);
		return ly_error_set(err, LY_E_LIMIT, "client: socket path over %d bytes", LANYARD_SOCKET_PATH_MAX);
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		if (fd >= 0)
			(void)close(fd);
		return ly_error_set(err, LY_E_NOMEM, "client: out of memory");
	}
	(void)snprintf(c->path, sizeof(c->path), "%s", path);
	c->timeout_ms = TIMEOUT_DEFAULT_MS;
	c->judged = fd >= 0;
	(void)snprintf(target, sizeof(target), "unix:%s", path);

	grpc_init();
	grpc_arg args[3];
	memset(args, 0, sizeof(args));
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)(uintptr_t)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = LY_WL_RESPONSE_MAX; /* each call checks its own cap (response_max) */
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)(uintptr_t)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
	args[1].value.integer = WL_BACKOFF_MIN_MS;
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = (char *)(uintptr_t)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
	args[2].value.integer = 5000;
	grpc_channel_args cargs = { 3, args };
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	if (creds != NULL && fd >= 0)
		c->ch = grpc_channel_create_from_fd(target, fd, creds, &cargs); /* gRPC owns fd from here */
	else if (creds != NULL)
		c->ch = grpc_channel_create(target, creds, &cargs);
	else if (fd >= 0)
		(void)close(fd);
	grpc_channel_credentials_release(creds);
	if (c->ch == NULL) {
		grpc_shutdown();
		free(c);
		return ly_error_set(err, LY_E_IO, "client: cannot make a gRPC channel to %s", target);
	}
	*out = c;
	return LY_OK;
}

lanyard_status
lanyard_client_new(const char *addr, lanyard_client **out, struct lanyard_error *err)
{
	char path[LANYARD_SOCKET_PATH_MAX + 1];
	lanyard_status st;
	struct ly_error e;

	*out = NULL;
	if ((st = lanyard_endpoint_resolve(addr, path, err)) != LANYARD_OK)
		return st;
	ly_status rc = client_make(path, -1, out, &e);
	return wl_export(err, rc, &e, 0);
}

ly_status
wl_client_new_fd(const char *path, int fd, lanyard_client **out, struct ly_error *err)
{
	*out = NULL;
	if (fd < 0)
		return ly_error_set(err, LY_E_INVALID, "client: no socket");
	return client_make(path, fd, out, err);
}

void
lanyard_client_free(lanyard_client *c)
{
	if (c == NULL)
		return;
	grpc_channel_destroy(c->ch);
	free(c);
	grpc_shutdown();
}

void
lanyard_client_set_timeout(lanyard_client *c, unsigned timeout_ms)
{
	c->timeout_ms = timeout_ms;
}

/* ---- one call ------------------------------------------------------------------ */

static void
wipe_free(void *p, size_t len)
{
	OPENSSL_cleanse(p, len);
	free(p);
}

/*
 * Copies a received message of at most `max` bytes out of gRPC's slices
 * (wiping them) into *out (malloc'd, wipe_free).
 */
static ly_status
read_message(grpc_byte_buffer *bb, size_t max, uint8_t **out, size_t *out_len, struct ly_error *err)
{
	grpc_byte_buffer_reader rd;
	grpc_slice s;
	size_t total = grpc_byte_buffer_length(bb), off = 0;
	uint8_t *buf;

	if (total > max)
		return ly_error_set(err, LY_E_LIMIT, "message of %zu bytes (at most %zu)", total, max);
	if (grpc_byte_buffer_reader_init(&rd, bb) != 1)
		return ly_error_set(err, LY_E_INVALID, "cannot read a message (compression?)");
	if ((buf = malloc(total > 0 ? total : 1)) == NULL) {
		grpc_byte_buffer_reader_destroy(&rd);
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	}
	while (grpc_byte_buffer_reader_next(&rd, &s) != 0) {
		size_t n = GRPC_SLICE_LENGTH(s);
		if (n > total - off)
			n = total - off; /* cannot happen: the length is the sum of the slices */
		memcpy(buf + off, GRPC_SLICE_START_PTR(s), n);
		OPENSSL_cleanse(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
		off += n;
		grpc_slice_unref(s);
	}
	grpc_byte_buffer_reader_destroy(&rd);
	*out = buf;
	*out_len = off;
	return LY_OK;
}

/*
 * The largest message a method's answer may be (lib/caps.h): the SVID
 * responses what the agent may send (LY_WL_RESPONSE_MAX), the others
 * LY_RPC_MSG_MAX. A larger one ends the call with LY_E_LIMIT before
 * anything is decoded.
 */
static size_t
response_max(const char *method)
{
	if (strcmp(method, METHOD("FetchX509SVID")) == 0 || strcmp(method, METHOD("FetchJWTSVID")) == 0)
		return LY_WL_RESPONSE_MAX;
	return LY_RPC_MSG_MAX;
}

static const char *
short_method(const char *m)
{
	const char *slash = strrchr(m, '/');
	return slash != NULL ? slash + 1 : m;
}

static gpr_timespec
in_ms(unsigned ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

enum { TAG_SEND = 1, TAG_MSG, TAG_STATUS };

ly_status
wl_rpc_call(lanyard_client *c, const struct wl_call *call, int *rpc_code, struct ly_error *err)
{
	grpc_completion_queue *cq = NULL;
	grpc_call *gc = NULL;
	grpc_metadata md;
	grpc_metadata_array md_in, trailing;
	grpc_byte_buffer *req = NULL, *recv = NULL;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_op ops[4];
	int tags[4] = { 0, TAG_SEND, TAG_MSG, TAG_STATUS };
	int pending = 0, verdict = 0; /* handler: 1 stopped ok, -1 stopped on failure */
	bool cancelled = false, got_status = false, got_msg = false;
	struct ly_error herr;
	ly_status rc = LY_OK;
	const char *name = short_method(call->method);

	*rpc_code = 0;
	ly_error_clear(&herr);
	grpc_metadata_array_init(&md_in);
	grpc_metadata_array_init(&trailing);

	if (call->status != NULL)
		memset(call->status, 0, sizeof(*call->status));
	/* Who can have put the socket there, judged before each call: a directory another user took
	 * first (under /tmp) could hold a fake agent (sockpath.h, docs/client-library.md). A client
	 * on a judged connection (wl_client_new_fd) had its listener judged by SO_PEERCRED. */
	if (!c->judged && (rc = ly_sockpath_owner_check(c->path, NULL, err)) != LY_OK) {
		if (rc == LY_E_UNTRUSTED || rc == LY_E_INVALID) {
			rc = ly_error_wrap(err, rc, "%s: refusing the agent at %s", name, c->path);
		} else {
			*rpc_code = GRPC_STATUS_UNAVAILABLE;
			rc = ly_error_wrap(err, LY_E_IO, "%s: the agent at %s is unavailable", name, c->path);
		}
		goto out;
	}

	/* The request, in a slice that wipes itself when gRPC is done with it. */
	uint8_t *copy = malloc(call->req_len > 0 ? call->req_len : 1);
	if (copy == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "%s: out of memory", name);
		goto out;
	}
	if (call->req_len > 0)
		memcpy(copy, call->req, call->req_len);
	grpc_slice rs = grpc_slice_new_with_len(copy, call->req_len, wipe_free);
	req = grpc_raw_byte_buffer_create(&rs, 1);
	grpc_slice_unref(rs);

	if ((cq = grpc_completion_queue_create_for_next(NULL)) == NULL) {
		rc = ly_error_set(err, LY_E_IO, "%s: cannot make a completion queue", name);
		goto out;
	}
	gpr_timespec deadline = call->timeout_ms > 0 ? in_ms(call->timeout_ms) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
	gc = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
	    grpc_slice_from_static_string(call->method), NULL, deadline, NULL);
	if (gc == NULL) {
		rc = ly_error_set(err, LY_E_IO, "%s: cannot start a gRPC call", name);
		goto out;
	}
	md.key = grpc_slice_from_static_string("workload.spiffe.io");
	md.value = grpc_slice_from_static_string("true");
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = call->bare ? 0 : 1;
	ops[0].data.send_initial_metadata.metadata = &md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = req;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_in;
	if (grpc_call_start_batch(gc, ops, 4, &tags[TAG_SEND], NULL) != GRPC_CALL_OK)
		goto start_failed;
	pending++;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &trailing;
	ops[0].data.recv_status_on_client.status = &status;
	ops[0].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(gc, ops, 1, &tags[TAG_STATUS], NULL) != GRPC_CALL_OK)
		goto start_failed;
	pending++;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_MESSAGE;
	ops[0].data.recv_message.recv_message = &recv;
	if (grpc_call_start_batch(gc, ops, 1, &tags[TAG_MSG], NULL) != GRPC_CALL_OK)
		goto start_failed;
	pending++;

	while (pending > 0) {
		grpc_event ev = grpc_completion_queue_next(cq, in_ms(POLL_MS), NULL);
		if (ev.type == GRPC_QUEUE_TIMEOUT) {
			if (call->stop != NULL && atomic_load(call->stop) && !cancelled) {
				grpc_call_cancel(gc, NULL);
				cancelled = true;
			}
			continue;
		}
		if (ev.type != GRPC_OP_COMPLETE) {
			rc = ly_error_set(err, LY_E_INTERNAL, "%s: completion queue shut down", name);
			goto out;
		}
		pending--;
		int tag = *(const int *)ev.tag;
		if (tag == TAG_STATUS) {
			got_status = true;
		} else if (tag == TAG_MSG && recv != NULL) {
			uint8_t *msg = NULL;
			size_t len = 0;
			ly_status r2 = read_message(recv, response_max(call->method), &msg, &len, &herr);
			grpc_byte_buffer_destroy(recv);
			recv = NULL;
			got_msg = true;
			if (r2 != LY_OK) {
				verdict = -1;
				herr.code = r2;
			} else if (!cancelled && verdict == 0) {
				verdict = call->on_msg(call->arg, msg, len, &herr);
			}
			if (msg != NULL)
				wipe_free(msg, len);
			if (verdict == 0 && call->stream && !cancelled) {
				memset(ops, 0, sizeof(ops));
				ops[0].op = GRPC_OP_RECV_MESSAGE;
				ops[0].data.recv_message.recv_message = &recv;
				if (grpc_call_start_batch(gc, ops, 1, &tags[TAG_MSG], NULL) == GRPC_CALL_OK)
					pending++;
			} else if (verdict != 0 && (call->stream || verdict < 0) && !cancelled) {
				grpc_call_cancel(gc, NULL);
				cancelled = true;
			}
		}
	}
	if (got_status && call->status != NULL) {
		char *d = grpc_slice_to_c_string(details);
		call->status->got = true;
		call->status->code = (int)status;
		(void)snprintf(call->status->details, sizeof(call->status->details), "%s", d != NULL ? d : "");
		gpr_free(d);
	}
	if (verdict < 0) {
		rc = ly_error_set(err, herr.code != LY_OK ? herr.code : LY_E_INVALID, "%s: %s", name, herr.msg);
	} else if (verdict > 0 && (call->stream || status == GRPC_STATUS_OK)) {
		rc = LY_OK;
	} else if (got_status && status != GRPC_STATUS_OK) {
		char *d = grpc_slice_to_c_string(details);
		*rpc_code = (int)status;
		if (cancelled && call->stop != NULL && atomic_load(call->stop))
			rc = ly_error_set(err, LY_E_IO, "%s: stopped", name);
		else if (status == GRPC_STATUS_UNAVAILABLE)
			rc = ly_error_set(err, LY_E_IO, "%s: the agent at %s is unavailable: %s", name, c->path,
			    d != NULL ? d : "");
		else
			rc = ly_error_set(err, LY_E_IO, "%s: the agent refused (gRPC status %d): %s", name, (int)status,
			    d != NULL ? d : "");
		gpr_free(d);
	} else {
		rc = ly_error_set(err, LY_E_IO, "%s: %s without an answer", name, got_msg ? "the stream ended" : "the call ended");
	}
	goto out;
start_failed:
	rc = ly_error_set(err, LY_E_IO, "%s: cannot start a gRPC batch", name);
	if (pending > 0) {
		grpc_call_cancel(gc, NULL);
		while (pending > 0) {
			grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
			if (ev.type == GRPC_OP_COMPLETE)
				pending--;
		}
	}
out:
	if (recv != NULL)
		grpc_byte_buffer_destroy(recv);
	if (req != NULL)
		grpc_byte_buffer_destroy(req);
	grpc_metadata_array_destroy(&md_in);
	grpc_metadata_array_destroy(&trailing);
	grpc_slice_unref(details);
	if (gc != NULL)
		grpc_call_unref(gc);
	if (cq != NULL) {
		grpc_completion_queue_shutdown(cq);
		while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(cq);
	}
	return rc;
}

/* Packs `m` into a malloc'd buffer (wipe_free). */
static ly_status
pack(const ProtobufCMessage *m, uint8_t **out, size_t *len, struct ly_error *err)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	if ((*out = malloc(n > 0 ? n : 1)) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	*len = protobuf_c_message_pack(m, *out);
	return LY_OK;
}

/* ---- FetchX509SVID, once ------------------------------------------------------------ */

struct x509_once {
	lanyard_x509_context *ctx;
};

static int
on_x509_once(void *arg, const uint8_t *msg, size_t len, struct ly_error *err)
{
	struct x509_once *o = arg;
	return wl_x509_context_parse(msg, len, time(NULL), &o->ctx, err) == LY_OK ? 1 : -1;
}

lanyard_status
lanyard_fetch_x509_context(lanyard_client *c, lanyard_x509_context **out, struct lanyard_error *err)
{
	struct x509_once o = { NULL };
	struct wl_call call = {
		.method = METHOD("FetchX509SVID"),
		.req = (const uint8_t *)"",
		.req_len = 0,
		.stream = true,
		.timeout_ms = c->timeout_ms,
		.on_msg = on_x509_once,
		.arg = &o,
	};
	struct ly_error e;
	int code = 0;

	*out = NULL;
	ly_status rc = wl_rpc_call(c, &call, &code, &e);
	if (rc == LY_OK)
		*out = o.ctx;
	else
		lanyard_x509_context_free(o.ctx);
	return wl_export(err, rc, &e, code);
}

/* ---- FetchJWTSVID ----------------------------------------------------------------- */

struct jwt_svid {
	char *id, *token, *hint;
};

struct lanyard_jwt_svids {
	size_t n;
	struct jwt_svid *v;
};

void
lanyard_jwt_svids_free(lanyard_jwt_svids *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].id);
		ly_free_secret_str(s->v[i].token);
		free(s->v[i].hint);
	}
	free(s->v);
	free(s);
}

size_t
lanyard_jwt_svids_count(const lanyard_jwt_svids *s)
{
	return s->n;
}

const char *
lanyard_jwt_svids_id(const lanyard_jwt_svids *s, size_t i)
{
	return i < s->n ? s->v[i].id : NULL;
}

const char *
lanyard_jwt_svids_token(const lanyard_jwt_svids *s, size_t i)
{
	return i < s->n ? s->v[i].token : NULL;
}

const char *
lanyard_jwt_svids_hint(const lanyard_jwt_svids *s, size_t i)
{
	return i < s->n ? s->v[i].hint : NULL;
}

/* A compact JWS: three non-empty base64url segments (JWT-SVID §2, RFC 7515 §7.1). */
static ly_status
check_token_shape(const char *t, struct ly_error *err)
{
	size_t len = strlen(t), dots = 0, seg = 0;

	if (len == 0 || len > LY_JWT_MAX)
		return ly_error_set(err, len == 0 ? LY_E_INVALID : LY_E_LIMIT, "token of %zu bytes (1..%d)", len,
		    LY_JWT_MAX);
	for (size_t i = 0; i < len; i++) {
		char ch = t[i];
		if (ch == '.') {
			if (seg == 0)
				return ly_error_set(err, LY_E_INVALID, "token: empty segment");
			dots++;
			seg = 0;
		} else if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		    ch == '_') {
			seg++;
		} else {
			return ly_error_set(err, LY_E_INVALID, "token: not base64url");
		}
	}
	if (dots != 2 || seg == 0)
		return ly_error_set(err, LY_E_INVALID, "token: not a compact JWS (three segments)");
	return LY_OK;
}

static int
on_jwt_svids(void *arg, const uint8_t *msg, size_t len, struct ly_error *err)
{
	lanyard_jwt_svids **out = arg;
	lanyard_jwt_svids *s = NULL;
	JWTSVIDResponse *r = NULL;
	int verdict = -1;
	size_t n = 0;

	/* Counted before protobuf-c allocates one struct per SVID (lib/caps.h LY_WL_SVIDS_MAX). */
	if (ly_pb_count_field(msg, len, 1, LY_WL_SVIDS_MAX, "JWTSVIDResponse: SVIDs", &n, err) != LY_OK)
		goto out;
	if ((r = jwtsvidresponse__unpack(NULL, len, msg)) == NULL) {
		(void)ly_error_set(err, LY_E_INVALID, "JWTSVIDResponse: malformed protobuf");
		goto out;
	}
	if (r->n_svids == 0 || r->n_svids > LY_WL_SVIDS_MAX) {
		(void)ly_error_set(err, r->n_svids == 0 ? LY_E_INVALID : LY_E_LIMIT, "JWTSVIDResponse: %zu SVIDs (1..%d)",
		    r->n_svids, LY_WL_SVIDS_MAX);
		goto out;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL || (s->v = calloc(r->n_svids, sizeof(*s->v))) == NULL) {
		(void)ly_error_set(err, LY_E_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < r->n_svids; i++) {
		const JWTSVID *j = r->svids[i];
		struct ly_spiffe_id id;
		ly_status rc;
		if ((rc = ly_spiffe_id_parse_str(j->spiffe_id, &id, err)) != LY_OK ||
		    (rc = check_token_shape(j->svid, err)) != LY_OK) {
			(void)ly_error_wrap(err, rc, "JWTSVIDResponse: SVID %zu", i);
			goto out;
		}
		s->n = i + 1;
		if ((s->v[i].id = strdup(j->spiffe_id)) == NULL || (s->v[i].token = strdup(j->svid)) == NULL ||
		    (s->v[i].hint = strdup(j->hint != NULL ? j->hint : "")) == NULL) {
			(void)ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto out;
		}
	}
	*out = s;
	s = NULL;
	verdict = 1;
out:
	if (r != NULL) {
		for (size_t i = 0; i < r->n_svids; i++)
			OPENSSL_cleanse(r->svids[i]->svid, strlen(r->svids[i]->svid));
		jwtsvidresponse__free_unpacked(r, NULL);
	}
	lanyard_jwt_svids_free(s);
	return verdict;
}

lanyard_status
lanyard_fetch_jwt_svids(lanyard_client *c, const char *const *audiences, size_t naud, const char *spiffe_id,
    lanyard_jwt_svids **out, struct lanyard_error *err)
{
	JWTSVIDRequest req;
	struct ly_spiffe_id id;
	struct ly_error e;
	uint8_t *buf = NULL;
	size_t len = 0;
	int code = 0;
	ly_status rc;

	*out = NULL;
	jwtsvidrequest__init(&req);
	if (audiences == NULL || naud == 0 || naud > LY_JWT_AUDIENCES_MAX) {
		rc = ly_error_set(&e, LY_E_INVALID, "FetchJWTSVID: 1..%d audiences are needed", LY_JWT_AUDIENCES_MAX);
		goto out;
	}
	for (size_t i = 0; i < naud; i++) {
		if (audiences[i] == NULL || audiences[i][0] == '\0' || strlen(audiences[i]) > LY_JWT_AUDIENCE_MAX) {
			rc = ly_error_set(&e, LY_E_INVALID, "FetchJWTSVID: audience %zu empty or over %d bytes", i,
			    LY_JWT_AUDIENCE_MAX);
			goto out;
		}
	}
	if (spiffe_id != NULL && (rc = ly_spiffe_id_parse_str(spiffe_id, &id, &e)) != LY_OK) {
		(void)ly_error_wrap(&e, rc, "FetchJWTSVID: spiffe_id");
		goto out;
	}
	req.n_audience = naud;
	req.audience = (char **)(uintptr_t)audiences;
	req.spiffe_id = (char *)(uintptr_t)(spiffe_id != NULL ? spiffe_id : "");
	if ((rc = pack(&req.base, &buf, &len, &e)) != LY_OK)
		goto out;
	struct wl_call call = { .method = METHOD("FetchJWTSVID"), .req = buf, .req_len = len, .stream = false,
		.timeout_ms = c->timeout_ms, .on_msg = on_jwt_svids, .arg = out };
	rc = wl_rpc_call(c, &call, &code, &e);
	if (rc != LY_OK) {
		lanyard_jwt_svids_free(*out);
		*out = NULL;
	}
out:
	if (buf != NULL)
		wipe_free(buf, len);
	return wl_export(err, rc, &e, code);
}

/* ---- FetchJWTBundles -------------------------------------------------------------- */

struct jwt_bundle {
	char *td, *jwks;
};

struct lanyard_jwt_bundles {
	size_t n;
	struct jwt_bundle *v;
};

void
lanyard_jwt_bundles_free(lanyard_jwt_bundles *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->n; i++) {
		free(b->v[i].td);
		free(b->v[i].jwks);
	}
	free(b->v);
	free(b);
}

size_t
lanyard_jwt_bundles_count(const lanyard_jwt_bundles *b)
{
	return b->n;
}

const char *
lanyard_jwt_bundles_td(const lanyard_jwt_bundles *b, size_t i)
{
	return i < b->n ? b->v[i].td : NULL;
}

const char *
lanyard_jwt_bundles_jwks(const lanyard_jwt_bundles *b, size_t i)
{
	return i < b->n ? b->v[i].jwks : NULL;
}

static int
on_jwt_bundles(void *arg, const uint8_t *msg, size_t len, struct ly_error *err)
{
	lanyard_jwt_bundles **out = arg;
	lanyard_jwt_bundles *b = NULL;
	JWTBundlesResponse *r = jwtbundles_response__unpack(NULL, len, msg);
	int verdict = -1;

	if (r == NULL) {
		(void)ly_error_set(err, LY_E_INVALID, "JWTBundlesResponse: malformed protobuf");
		goto out;
	}
	if (r->n_bundles > LY_BUNDLE_SET_MAX) {
		(void)ly_error_set(err, LY_E_LIMIT, "JWTBundlesResponse: %zu bundles (at most %d)", r->n_bundles,
		    LY_BUNDLE_SET_MAX);
		goto out;
	}
	if ((b = calloc(1, sizeof(*b))) == NULL || (b->v = calloc(r->n_bundles + 1, sizeof(*b->v))) == NULL) {
		(void)ly_error_set(err, LY_E_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < r->n_bundles; i++) {
		const JWTBundlesResponse__BundlesEntry *e = r->bundles[i];
		struct ly_spiffe_id tdid;
		struct ly_bundle *parsed = NULL;
		ly_status rc;
		if (e->key == NULL || ly_spiffe_id_parse_str(e->key, &tdid, NULL) != LY_OK ||
		    !ly_spiffe_id_is_trust_domain_id(&tdid)) {
			(void)ly_error_set(err, LY_E_INVALID, "JWTBundlesResponse: bundle %zu: key is not a trust domain ID", i);
			goto out;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(b->v[j].td, e->key) == 0) {
				(void)ly_error_set(err, LY_E_INVALID, "JWTBundlesResponse: %s given twice", e->key);
				goto out;
			}
		}
		if ((rc = ly_bundle_parse_jwks(tdid.trust_domain, (const char *)e->value.data, e->value.len, &parsed,
		    err)) != LY_OK) {
			(void)ly_error_wrap(err, rc, "JWTBundlesResponse: bundle for %s", e->key);
			goto out;
		}
		ly_bundle_free(parsed);
		b->n = i + 1;
		if ((b->v[i].td = strdup(e->key)) == NULL || (b->v[i].jwks = malloc(e->value.len + 1)) == NULL) {
			(void)ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto out;
		}
		memcpy(b->v[i].jwks, e->value.data, e->value.len);
		b->v[i].jwks[e->value.len] = '\0';
	}
	*out = b;
	b = NULL;
	verdict = 1;
out:
	if (r != NULL)
		jwtbundles_response__free_unpacked(r, NULL);
	lanyard_jwt_bundles_free(b);
	return verdict;
}

lanyard_status
lanyard_fetch_jwt_bundles(lanyard_client *c, lanyard_jwt_bundles **out, struct lanyard_error *err)
{
	struct wl_call call = { .method = METHOD("FetchJWTBundles"), .req = (const uint8_t *)"", .req_len = 0,
		.stream = true, .timeout_ms = c->timeout_ms, .on_msg = on_jwt_bundles, .arg = out };
	struct ly_error e;
	int code = 0;

	*out = NULL;
	ly_status rc = wl_rpc_call(c, &call, &code, &e);
	if (rc != LY_OK) {
		lanyard_jwt_bundles_free(*out);
		*out = NULL;
	}
	return wl_export(err, rc, &e, code);
}

/* ---- ValidateJWTSVID ---------------------------------------------------------------- */

struct validate_out {
	struct ly_spiffe_id id;
	char *claims;
};

static int
on_validate(void *arg, const uint8_t *msg, size_t len, struct ly_error *err)
{
	struct validate_out *o = arg;
	ValidateJWTSVIDResponse *r = validate_jwtsvidresponse__unpack(NULL, len, msg);
	json_t *claims = NULL;
	int verdict = -1;
	ly_status rc;

	if (r == NULL) {
		(void)ly_error_set(err, LY_E_INVALID, "ValidateJWTSVIDResponse: malformed protobuf");
		goto out;
	}
	if ((rc = ly_spiffe_id_parse_str(r->spiffe_id, &o->id, err)) != LY_OK) {
		(void)ly_error_wrap(err, rc, "ValidateJWTSVIDResponse: spiffe_id");
		goto out;
	}
	if ((claims = ly_pbstruct_to_json(r->claims)) == NULL ||
	    (o->claims = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
		(void)ly_error_set(err, LY_E_INVALID, "ValidateJWTSVIDResponse: claims too deep or not UTF-8");
		goto out;
	}
	verdict = 1;
out:
	json_decref(claims);
	if (r != NULL)
		validate_jwtsvidresponse__free_unpacked(r, NULL);
	return verdict;
}

lanyard_status
lanyard_validate_jwt_svid(lanyard_client *c, const char *token, const char *audience, char *id_out,
    char **claims_json, struct lanyard_error *err)
{
	ValidateJWTSVIDRequest req;
	struct validate_out o;
	struct ly_error e;
	uint8_t *buf = NULL;
	size_t len = 0;
	int code = 0;
	ly_status rc;

	memset(&o, 0, sizeof(o));
	if (claims_json != NULL)
		*claims_json = NULL;
	validate_jwtsvidrequest__init(&req);
	if (token == NULL || token[0] == '\0' || strlen(token) > LY_JWT_MAX) {
		rc = ly_error_set(&e, LY_E_INVALID, "ValidateJWTSVID: token empty or over %d bytes", LY_JWT_MAX);
		goto out;
	}
	if (audience == NULL || audience[0] == '\0' || strlen(audience) > LY_JWT_AUDIENCE_MAX) {
		rc = ly_error_set(&e, LY_E_INVALID, "ValidateJWTSVID: audience empty or over %d bytes", LY_JWT_AUDIENCE_MAX);
		goto out;
	}
	req.svid = (char *)(uintptr_t)token;
	req.audience = (char *)(uintptr_t)audience;
	if ((rc = pack(&req.base, &buf, &len, &e)) != LY_OK)
		goto out;
	struct wl_call call = { .method = METHOD("ValidateJWTSVID"), .req = buf, .req_len = len, .stream = false,
		.timeout_ms = c->timeout_ms, .on_msg = on_validate, .arg = &o };
	if ((rc = wl_rpc_call(c, &call, &code, &e)) != LY_OK)
		goto out;
	if (id_out != NULL)
		memcpy(id_out, o.id.id, strlen(o.id.id) + 1);
	if (claims_json != NULL) {
		*claims_json = o.claims;
		o.claims = NULL;
	}
out:
	free(o.claims);
	if (buf != NULL)
		wipe_free(buf, len);
	return wl_export(err, rc, &e, code);
}
