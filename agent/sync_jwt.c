/*
 * sync_jwt.c: JWT-SVIDs on demand (sync.h's ly_sync_fetch_jwt): from the
 * cache while fresh (answered on the next loop iteration), else minted by
 * the server (NewJWTSVID), verified for every audience, cached.
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
#include "lib/spiffeid.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"

/* ---- JWT-SVIDs ------------------------------------------------------------------------------ */

struct jwt_op {
	struct ccall base; /* the NewJWTSVID call, when one is made */
	struct ly_sync *s;
	struct jwt_op *next; /* the ready list */
	ly_sync_jwt_cb cb;
	void *arg;
	char *entry_id;
	char *spiffe_id;
	char **aud;
	size_t naud;
	char *token; /* the answer: a bearer secret */
	struct ly_error err;
	bool failed;
};

static void
jwt_op_free(struct jwt_op *op)
{
	if (op == NULL)
		return;
	free(op->entry_id);
	free(op->spiffe_id);
	for (size_t i = 0; op->aud != NULL && i < op->naud; i++)
		free(op->aud[i]);
	free(op->aud);
	ly_free_secret_str(op->token);
	ly_sync_chan_call_cleanup(&op->base);
	free(op);
}

static void
jwt_op_answer(struct jwt_op *op)
{
	op->cb(op->arg, op->failed ? NULL : op->token, op->failed ? &op->err : NULL);
	jwt_op_free(op);
}

/* Answers every op of the ready list (the deferred callbacks of cache hits). */
void
ly_sync_jwt_flush(struct ly_sync *s)
{
	while (s->jwt_ready != NULL) {
		struct jwt_op *op = s->jwt_ready;
		s->jwt_ready = op->next;
		jwt_op_answer(op);
	}
}

void
ly_sync_jwt_drop_ready(struct ly_sync *s)
{
	while (s->jwt_ready != NULL) {
		struct jwt_op *op = s->jwt_ready;
		s->jwt_ready = op->next;
		jwt_op_free(op);
	}
}

static void
on_defer_timer(uv_timer_t *t)
{
	struct ly_sync *s = t->data;

	if (s != NULL)
		ly_sync_jwt_flush(s);
}

static enum ly_status
jwt_code_status(enum ly_rpc_code code)
{
	switch (code) {
	case LY_RPC_PERMISSION_DENIED:
	case LY_RPC_NOT_FOUND:
		return LY_E_NOT_FOUND;
	case LY_RPC_INVALID_ARGUMENT:
		return LY_E_INVALID;
	default:
		return LY_E_IO;
	}
}

/* A JSON number claim as whole seconds; `def` when absent or not a number. */
static int64_t
claim_seconds(json_t *claims, const char *name, int64_t def)
{
	json_t *v = claims != NULL ? json_object_get(claims, name) : NULL;
	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_real(v) && json_real_value(v) > 0 && json_real_value(v) < 9.2e18)
		return (int64_t)json_real_value(v);
	return def;
}

static void
jwt_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct jwt_op *op = (struct jwt_op *)c;
	struct ly_sync *s = c->s;
	Lanyard__Agent__V1__NewJWTSVIDResponse *m = NULL;
	json_t *claims = NULL;
	enum ly_verify_fail why;
	struct ly_error e;
	ly_status rc;
	int64_t now = ly_sync_base_now_s();

	s->jwt_inflight--;
	if (code != LY_RPC_OK) {
		op->failed = true;
		(void)ly_error_set(&op->err, jwt_code_status(code), "NewJWTSVID: %s %s", ly_rpc_code_str(code), details);
		goto out;
	}
	rc = ly_agentapi_jwt_parse(c->resp.data, c->resp.len, &m, &e);
	ly_buf_free_secret(&c->resp);
	if (rc != LY_OK) {
		op->failed = true;
		(void)ly_error_set(&op->err, rc, "NewJWTSVID: %s", e.msg);
		goto out;
	}
	/* SPEC §4: verified before it is served, for every audience asked for. */
	size_t len = strlen(m->token);
	for (size_t i = 0; i < op->naud; i++) {
		if (ly_verify_jwtsvid(s->verifier, m->token, len, op->aud[i], op->spiffe_id, ly_cache_bundles(s->cache), now,
			NULL, i == 0 ? &claims : NULL, &why, &e) != LY_OK) {
			op->failed = true;
			s->stats.jwt_failed++;
			(void)ly_error_set(&op->err, LY_E_UNTRUSTED, "JWT-SVID for %s refused: %s", op->spiffe_id, e.msg);
			goto out;
		}
	}
	int64_t exp = claim_seconds(claims, "exp", m->expires_at);
	int64_t iat = claim_seconds(claims, "iat", m->issued_at > 0 ? m->issued_at : now);
	if (iat >= exp)
		iat = exp - 1;
	if ((op->token = strdup(m->token)) == NULL) {
		op->failed = true;
		(void)ly_error_set(&op->err, LY_E_NOMEM, "JWT-SVID: out of memory");
		goto out;
	}
	/* Cached for the next caller only if the entry is still there (it may have gone meanwhile). */
	struct ly_cache_item ci;
	if (ly_cache_get(s->cache, op->entry_id, &ci) && strcmp(ci.entry->spiffe_id, op->spiffe_id) == 0 &&
	    ly_cache_jwt_put(s->cache, op->entry_id, op->spiffe_id, (const char *const *)op->aud, op->naud, op->token,
		iat, exp, &e) != LY_OK)
		log_warn("JWT-SVID for %s not cached: %s", op->spiffe_id, e.msg);
	s->stats.jwt_minted++;
out:
	if (op->failed)
		log_warn("JWT-SVID for entry %s: %s", op->entry_id, op->err.msg);
	if (claims != NULL)
		json_decref(claims);
	ly_agentapi_jwt_free(m);
	jwt_op_answer(op);
}

ly_status
ly_sync_jwt_fetch(struct ly_sync *s, const char *entry_id, const char *const *audiences, size_t naud, ly_sync_jwt_cb cb,
    void *arg, struct ly_error *err)
{
	struct jwt_op *op = NULL;
	struct ly_cache_item ci;
	Lanyard__Agent__V1__NewJWTSVIDRequest req;
	ly_status rc;

	if (cb == NULL || entry_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "JWT-SVID: no entry or callback");
	if (naud == 0 || audiences == NULL)
		return ly_error_set(err, LY_E_INVALID, "JWT-SVID: at least one audience required");
	if (naud > LY_JWT_AUDIENCES_MAX)
		return ly_error_set(err, LY_E_LIMIT, "JWT-SVID: more than %d audiences", LY_JWT_AUDIENCES_MAX);
	for (size_t i = 0; i < naud; i++) {
		if (audiences[i] == NULL || audiences[i][0] == '\0')
			return ly_error_set(err, LY_E_INVALID, "JWT-SVID: audience %zu empty", i);
		if (strlen(audiences[i]) > LY_JWT_AUDIENCE_MAX)
			return ly_error_set(err, LY_E_LIMIT, "JWT-SVID: audience %zu over %d bytes", i, LY_JWT_AUDIENCE_MAX);
	}
	if (s->phase == PH_STOPPING)
		return ly_error_set(err, LY_E_IO, "JWT-SVID: the agent is stopping");
	if (!ly_cache_get(s->cache, entry_id, &ci) || ci.entry->node)
		return ly_error_set(err, LY_E_NOT_FOUND, "JWT-SVID: no entry %s", entry_id);
	const char *hit = ly_cache_jwt_get(s->cache, ci.entry->spiffe_id, audiences, naud, ly_sync_base_now_s());
	if (hit == NULL && (s->phase != PH_ENROLLED || s->chan == NULL || s->denied))
		return ly_error_set(err, LY_E_IO, "JWT-SVID: not connected to the server");
	if (hit == NULL && s->jwt_inflight >= JWT_INFLIGHT_MAX)
		return ly_error_set(err, LY_E_LIMIT, "JWT-SVID: %d requests already waiting on the server", JWT_INFLIGHT_MAX);

	if ((op = calloc(1, sizeof(*op))) == NULL || (op->entry_id = strdup(entry_id)) == NULL ||
	    (op->spiffe_id = strdup(ci.entry->spiffe_id)) == NULL || (op->aud = calloc(naud, sizeof(*op->aud))) == NULL)
		goto nomem;
	for (size_t i = 0; i < naud; i++) {
		if ((op->aud[i] = strdup(audiences[i])) == NULL)
			goto nomem;
		op->naud = i + 1;
	}
	op->s = s;
	op->cb = cb;
	op->arg = arg;
	if (hit != NULL) {
		if ((op->token = strdup(hit)) == NULL)
			goto nomem;
		s->stats.jwt_cached++;
		struct jwt_op **tail = &s->jwt_ready; /* answered in the order asked */
		while (*tail != NULL)
			tail = &(*tail)->next;
		*tail = op;
		ly_sync_base_timer_arm(s->t_defer, on_defer_timer, 0);
		return LY_OK;
	}
	op->base.on_done = jwt_on_done;
	lanyard__agent__v1__new_jwtsvidrequest__init(&req);
	req.entry_id = op->entry_id;
	req.n_audience = op->naud;
	req.audience = op->aud;
	if ((rc = ly_sync_chan_call_start(s, s->chan, &op->base, M_JWT, LY_RPC_UNARY, &req.base, false, err)) != LY_OK) {
		jwt_op_free(op);
		return rc;
	}
	s->jwt_inflight++;
	return LY_OK;
nomem:
	jwt_op_free(op);
	return ly_error_set(err, LY_E_NOMEM, "JWT-SVID: out of memory");
}

