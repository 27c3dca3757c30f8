/*
 * agent_api_auth.c: caller authentication on the agent API's mTLS calls
 * (the rules at the top of agent_api.c), and the previous SVID serial of
 * each agent that renewed, honoured until that SVID expires
 * (agent_api_internal.h).
 */
#include "server/agent_api_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lib/caps.h"
#include "lib/der.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "lib/spiffeid.h"
#include "lib/x509svid.h"

/* A certificate's serial as lower-case hex without leading zeros ("0" for zero). */
ly_status
agent_api_auth_serial_hex(X509 *x, char out[LY_DS_AGENT_SERIAL_MAX + 1], struct ly_error *err)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = NULL;
	ly_status rc = LY_OK;

	if (bn == NULL)
		return ly_error_openssl(err, LY_E_CRYPTO, "certificate serial");
	if (BN_is_negative(bn)) {
		rc = ly_error_set(err, LY_E_INVALID, "certificate serial is negative");
		goto out;
	}
	if ((hex = BN_bn2hex(bn)) == NULL) {
		rc = ly_error_openssl(err, LY_E_NOMEM, "certificate serial");
		goto out;
	}
	const char *p = hex;
	while (p[0] == '0' && p[1] != '\0')
		p++;
	size_t n = strlen(p);
	if (n > LY_DS_AGENT_SERIAL_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "certificate serial longer than %d hex digits",
		    LY_DS_AGENT_SERIAL_MAX);
		goto out;
	}
	for (size_t i = 0; i <= n; i++)
		out[i] = (p[i] >= 'A' && p[i] <= 'F') ? (char)(p[i] - 'A' + 'a') : p[i];
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return rc;
}

/* The first certificate of concatenated DER, as a span. */
static ly_status
first_cert(const uint8_t *der, size_t len, struct ly_der_span *span, struct ly_error *err)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t count = 0;

	LY_TRY(ly_der_split(der, len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &count, err));
	*span = spans[0];
	return LY_OK;
}

/* The serial of the leaf of an issued chain. */
ly_status
agent_api_auth_chain_serial(const struct ly_buf *chain, char out[LY_DS_AGENT_SERIAL_MAX + 1],
    struct ly_error *err)
{
	struct ly_der_span s;
	X509 *x = NULL;

	LY_TRY(first_cert(chain->data, chain->len, &s, err));
	LY_TRY(ly_der_parse_one(chain->data + s.off, s.len, &x, err));
	ly_status rc = agent_api_auth_serial_hex(x, out, err);
	X509_free(x);
	return rc;
}

/* ---- previous serials -------------------------------------------------------------------- */

void
agent_api_auth_prev_remove(struct ly_agent_api *api, const char *agent_id)
{
	struct ly_queue *q;

	LY_QUEUE_FOREACH(q, &api->prev) {
		struct agent_api_prev_serial *p = LY_QUEUE_DATA(q, struct agent_api_prev_serial, link);
		if (strcmp(p->agent_id, agent_id) == 0) {
			ly_queue_remove(q);
			free(p->agent_id);
			free(p);
			return;
		}
	}
}

void
agent_api_auth_prev_set(struct ly_agent_api *api, const char *agent_id, const char *serial, time_t expires, time_t now)
{
	agent_api_auth_prev_remove(api, agent_id);
	if (serial == NULL || serial[0] == '\0' || expires <= now || strlen(serial) > LY_DS_AGENT_SERIAL_MAX)
		return;
	struct agent_api_prev_serial *p = calloc(1, sizeof(*p));
	if (p == NULL || (p->agent_id = strdup(agent_id)) == NULL) {
		/* Only a convenience: without it the old SVID is refused a little early. */
		free(p);
		return;
	}
	memcpy(p->serial, serial, strlen(serial) + 1);
	p->expires = expires;
	ly_queue_insert_head(&api->prev, &p->link);
}

bool
agent_api_auth_prev_ok(const struct ly_agent_api *api, const char *agent_id, const char *serial, time_t now)
{
	struct ly_queue *q;

	LY_QUEUE_FOREACH(q, &api->prev) {
		const struct agent_api_prev_serial *p = LY_QUEUE_DATA(q, struct agent_api_prev_serial, link);
		if (strcmp(p->agent_id, agent_id) == 0)
			return p->expires > now && strcmp(p->serial, serial) == 0;
	}
	return false;
}

void
agent_api_auth_prev_sweep(struct ly_agent_api *api, time_t now)
{
	struct ly_queue *q, *tmp;

	LY_QUEUE_FOREACH_SAFE(q, tmp, &api->prev) {
		struct agent_api_prev_serial *p = LY_QUEUE_DATA(q, struct agent_api_prev_serial, link);
		if (p->expires <= now) {
			ly_queue_remove(q);
			free(p->agent_id);
			free(p);
		}
	}
}

/* ---- known agent records ----------------------------------------------------------------- */

struct ly_ds_agent *
agent_api_agent_copy(const struct ly_ds_agent *a)
{
	struct ly_ds_agent *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	*c = *a;
	c->spiffe_id = c->attestation_type = c->serial_number = NULL;
	c->selectors = NULL;
	c->n_selectors = 0;
	if ((c->spiffe_id = strdup(a->spiffe_id)) == NULL ||
	    (c->attestation_type = strdup(a->attestation_type != NULL ? a->attestation_type : "")) == NULL ||
	    (c->serial_number = strdup(a->serial_number != NULL ? a->serial_number : "")) == NULL ||
	    ly_selectors_copy(a->selectors, a->n_selectors, &c->selectors, NULL) != LY_OK) {
		ly_ds_agent_free(c);
		return NULL;
	}
	c->n_selectors = a->n_selectors;
	return c;
}

/* The index of `id` in api->known, or where it would go (*found false). */
static size_t
known_find(const struct ly_agent_api *api, const char *id, bool *found)
{
	size_t lo = 0, hi = api->n_known;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(api->known[mid].rec->spiffe_id, id);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

void
agent_api_known_put(struct ly_agent_api *api, const struct ly_ds_agent *rec)
{
	struct ly_ds_agent *copy;
	bool found;
	size_t i = known_find(api, rec->spiffe_id, &found);

	/* Only a shortcut: without room or memory the datastore is asked each time. */
	if ((copy = agent_api_agent_copy(rec)) == NULL)
		return;
	if (found) {
		ly_ds_agent_free(api->known[i].rec);
		api->known[i].rec = copy;
		api->known[i].read_ms = uv_now(api->srv->loop);
		return;
	}
	if (api->n_known >= LY_AGENTAPI_KNOWN_MAX) {
		ly_ds_agent_free(copy);
		return;
	}
	if (api->n_known == api->cap_known) {
		size_t cap = api->cap_known > 0 ? 2 * api->cap_known : 64;
		struct agent_api_known *v = realloc(api->known, cap * sizeof(*v));
		if (v == NULL) {
			ly_ds_agent_free(copy);
			return;
		}
		api->known = v;
		api->cap_known = cap;
	}
	memmove(&api->known[i + 1], &api->known[i], (api->n_known - i) * sizeof(api->known[0]));
	api->known[i].rec = copy;
	api->known[i].read_ms = uv_now(api->srv->loop);
	api->n_known++;
}

void
agent_api_known_drop(struct ly_agent_api *api, const char *agent_id)
{
	bool found;
	size_t i = known_find(api, agent_id, &found);

	if (!found)
		return;
	ly_ds_agent_free(api->known[i].rec);
	memmove(&api->known[i], &api->known[i + 1], (api->n_known - i - 1) * sizeof(api->known[0]));
	api->n_known--;
}

void
agent_api_known_clear(struct ly_agent_api *api)
{
	for (size_t i = 0; i < api->n_known; i++)
		ly_ds_agent_free(api->known[i].rec);
	free(api->known);
	api->known = NULL;
	api->n_known = api->cap_known = 0;
}

/* ---- authentication (mTLS calls) -------------------------------------------------------------- */

void
agent_api_auth_caller_cleanup(struct agent_api_caller *c)
{
	ly_ds_agent_free(c->rec);
	c->rec = NULL;
}

/* A call whose caller's record is being read from the datastore. */
struct auth_op {
	struct agent_api_op op;
	struct ly_rpc_call *call;
	agent_api_authed_fn *then;
	uint8_t *req;
	size_t len;
	time_t now;
	char agent_id[LY_SPIFFE_ID_MAX + 1];
	struct agent_api_caller c;  /* serial and not_after from the certificate */
	struct ly_ds_agent *rec;    /* the worker's read */
};

static void
auth_fail(struct ly_rpc_call *call, const char *peer_id, enum ly_rpc_code code, const char *why, const char *cause)
{
	log_debug("%s from %s refused: %s%s%s", ly_rpc_call_method(call), peer_id != NULL ? peer_id : "(no SVID)", why,
	    cause != NULL ? ": " : "", cause != NULL ? cause : "");
	agent_api_reply_finish(call, code, why, cause);
}

/*
 * The record's part of the rules (c->rec set): not banned, and the serial
 * it holds (or the previous one). Runs `then` or finishes the call; frees
 * c->rec either way.
 */
static void
auth_record(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len, time_t now,
    struct agent_api_caller *c, agent_api_authed_fn *then)
{
	if (c->rec->banned)
		auth_fail(call, c->rec->spiffe_id, LY_RPC_PERMISSION_DENIED, "agent is banned", NULL);
	else if (strcmp(c->serial, c->rec->serial_number) != 0 &&
	    !agent_api_auth_prev_ok(api, c->rec->spiffe_id, c->serial, now))
		auth_fail(call, c->rec->spiffe_id, LY_RPC_UNAUTHENTICATED,
		    "agent SVID superseded: use the current one, or attest again", NULL);
	else
		then(api, call, req, len, c, now);
	agent_api_auth_caller_cleanup(c);
}

/* The known record of `id` when it may be used now: fresh, or the datastore unreachable. */
static const struct ly_ds_agent *
known_usable(struct ly_agent_api *api, const char *id, bool any_age)
{
	bool found;
	size_t i = known_find(api, id, &found);

	if (!found)
		return NULL;
	if (any_age || !ly_dsa_reachable(api->srv->dsa, NULL) ||
	    uv_now(api->srv->loop) - api->known[i].read_ms < KNOWN_FRESH_MS)
		return api->known[i].rec;
	return NULL;
}

/* Uses the known record of op's agent (any age), or finishes the call UNAVAILABLE. */
static void
auth_from_known(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len, time_t now,
    const char *agent_id, struct agent_api_caller *c, agent_api_authed_fn *then, const char *cause)
{
	const struct ly_ds_agent *k = known_usable(api, agent_id, true);

	if (k == NULL || (c->rec = agent_api_agent_copy(k)) == NULL) {
		log_warn("agent %s: datastore unavailable and the agent not known here: %s", agent_id, cause);
		auth_fail(call, agent_id, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		return;
	}
	log_debug("agent %s: datastore unavailable (%s): its known record is used", agent_id, cause);
	auth_record(api, call, req, len, now, c, then);
}

static ly_status
auth_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct auth_op *a = ctx;

	return ly_datastore_agent_get(ds, a->agent_id, &a->rec, err);
}

static void
auth_release(void *ctx)
{
	struct auth_op *a = ctx;

	ly_ds_agent_free(a->rec);
	agent_api_auth_caller_cleanup(&a->c);
	free(a->req);
	free(a);
}

static void
auth_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct auth_op *a = ctx;
	struct ly_agent_api *api = agent_api_op_end(&a->op);

	if (api == NULL) {
		ly_rpc_call_finish(a->call, LY_RPC_UNAVAILABLE, "server stopping");
		return;
	}
	if (st == LY_E_NOT_FOUND) {
		agent_api_known_drop(api, a->agent_id);
		auth_fail(a->call, a->agent_id, LY_RPC_PERMISSION_DENIED, "agent must attest again", NULL);
		return;
	}
	if (st != LY_OK) {
		auth_from_known(api, a->call, a->req, a->len, a->now, a->agent_id, &a->c, a->then, err->msg);
		return;
	}
	agent_api_known_put(api, a->rec);
	a->c.rec = a->rec;
	a->rec = NULL;
	auth_record(api, a->call, a->req, a->len, a->now, &a->c, a->then);
}

void
agent_api_auth_then(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len, time_t now,
    agent_api_authed_fn *then)
{
	const char *peer_id = ly_rpc_call_peer_spiffe_id(call);
	const char *pem = ly_rpc_call_peer_cert_pem(call);
	struct agent_api_caller c;
	struct auth_op *a = NULL;
	struct ly_spiffe_id sid;
	struct ly_error e;
	X509 *leaf = NULL;
	BIO *bio = NULL;
	time_t nb = 0;
	enum ly_rpc_code code = LY_RPC_UNAUTHENTICATED;
	const char *why = NULL, *cause = NULL;

	memset(&c, 0, sizeof(c));
	if (peer_id == NULL || pem == NULL) {
		why = "agent SVID required (mTLS)";
		goto fail;
	}
	size_t plen = strnlen(pem, LY_AGENTAPI_LEAF_PEM_MAX + 1);
	if (plen > LY_AGENTAPI_LEAF_PEM_MAX || (bio = BIO_new_mem_buf(pem, (int)plen)) == NULL ||
	    (leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
		why = "agent SVID unreadable";
		goto fail;
	}
	if (ly_x509svid_check_leaf(leaf, &sid, &e) != LY_OK) {
		why = "agent SVID refused";
		cause = e.msg;
		goto fail;
	}
	if (strcmp(sid.id, peer_id) != 0) {
		why = "agent SVID: SPIFFE ID mismatch";
		goto fail;
	}
	if (!ly_spiffe_id_member_of(&sid, api->srv->cfg.trust_domain)) {
		code = LY_RPC_PERMISSION_DENIED;
		why = "agent SVID is not of this trust domain";
		goto fail;
	}
	if (ly_asn1_time_to_time(X509_get0_notBefore(leaf), &nb, &e) != LY_OK ||
	    ly_asn1_time_to_time(X509_get0_notAfter(leaf), &c.not_after, &e) != LY_OK) {
		why = "agent SVID validity unreadable";
		goto fail;
	}
	if (now < nb || now >= c.not_after) {
		why = "agent SVID expired or not yet valid: renew it, or attest again";
		goto fail;
	}
	if (agent_api_auth_serial_hex(leaf, c.serial, &e) != LY_OK) {
		why = "agent SVID serial refused";
		cause = e.msg;
		goto fail;
	}
	X509_free(leaf);
	BIO_free(bio);
	leaf = NULL;
	bio = NULL;

	/*
	 * The record: a fresh known one that names this very SVID (another
	 * server may have renewed the agent since: a serial we do not know is
	 * read from the datastore), or the datastore's.
	 */
	const struct ly_ds_agent *k = known_usable(api, sid.id, false);
	if (k != NULL && !k->banned &&
	    (strcmp(c.serial, k->serial_number) == 0 || agent_api_auth_prev_ok(api, sid.id, c.serial, now))) {
		if ((c.rec = agent_api_agent_copy(k)) == NULL) {
			agent_api_reply_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
			return;
		}
		auth_record(api, call, req, len, now, &c, then);
		return;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL || (len > 0 && (a->req = malloc(len)) == NULL)) {
		free(a);
		agent_api_reply_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	if (len > 0)
		memcpy(a->req, req, len);
	a->len = len;
	a->call = call;
	a->then = then;
	a->now = now;
	a->c = c;
	memcpy(a->agent_id, sid.id, strlen(sid.id) + 1);
	if (agent_api_op_submit(api, &a->op, auth_work, auth_done, auth_release, &e) != LY_OK) {
		/* Refused at once (a stalled datastore): the known record, any age, or UNAVAILABLE. */
		auth_from_known(api, call, req, len, now, sid.id, &c, then, e.msg);
		a->c.rec = NULL;
		auth_release(a);
	}
	return;
fail:
	X509_free(leaf);
	BIO_free(bio);
	auth_fail(call, peer_id, code, why, cause);
}
