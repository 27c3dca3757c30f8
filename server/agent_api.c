/*
 * agent_api.c: the Agent service (proto/agent.proto, lanyard.agent.v1) on
 * the server's TCP+TLS listener: node attestation, the agents' own SVIDs,
 * the entry watch, workload X.509-SVIDs and JWT-SVIDs, the bundle.
 * docs/agent-api.md is the protocol's description; this comment is the
 * implementation's.
 *
 * Everything runs on the loop thread (server.h), handlers included. The
 * one blocking step, k8s_psat's TokenReview, runs on uv_queue_work and
 * its result is applied back on the loop.
 *
 * State kept here, all bounded:
 *  - an in-memory copy of every registration entry (sorted by ID) and an
 *    authz index over it (authz.h), brought up to date from the
 *    datastore's change log when ly_agent_api_entries_changed says so
 *    (next loop iteration) and every POLL_TICKS seconds anyway (a store
 *    shared with another server, a missed notification);
 *  - the open watch streams (struct watcher), at most WATCHERS_MAX and
 *    WATCHERS_PER_AGENT per agent (a newer watch replaces the oldest);
 *  - pending attestations (PENDING_MAX): x509pop challenges (at most
 *    PENDING_PER_LEAF per leaf certificate) and enrolment tickets, each
 *    single use and valid PENDING_TTL seconds;
 *  - the previous SVID serial of each agent that renewed, until that
 *    SVID expires (connections opened with it stay usable meanwhile);
 *  - k8s_psat attestations in flight (PSAT_INFLIGHT_MAX).
 *
 * Authentication after enrolment: gRPC verified the client certificate
 * against the listener's client roots (the bundle's X.509 roots; server.c
 * rotates them with the bundle). rpc/ exposes only the verified leaf, so
 * each call re-checks that leaf against the present, not the handshake's
 * past: X.509-SVID leaf rules (lib/x509svid), the SPIFFE ID gRPC read, our
 * trust domain, the validity window now (a connection outlives the
 * certificate it was opened with), then the agent's record: present (not
 * evicted), not banned, and the serial the record holds (or the previous
 * one, for an agent that just renewed). Serials are 128 random bits our CA
 * chose and recorded, so the serial check binds the call to the exact
 * SVID we issued to that agent.
 *
 * Secrets: join tokens and service-account tokens are wiped from the
 * unpacked request before it is freed and never logged; JWT-SVID replies
 * are sent with LY_RPC_WIPE; tickets and nonces are compared with
 * CRYPTO_memcmp.
 */
#include "server/server.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "server/entry_pb.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/entry.h"
#include "lib/log.h"
#include "lib/pbstrict.h"
#include "lib/spiffeid.h"
#include "lib/text.h"
#include "lib/x509pop.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"
#include "server/attest.h"
#include "server/authz.h"
#include "server/ca.h"
#include "server/datastore.h"

#define METHOD(name) "/lanyard.agent.v1.Agent/" name

/* Pending attestations (x509pop challenges and tickets). */
#define PENDING_MAX 1024
#define PENDING_PER_LEAF 4
#define PENDING_TTL 60
#define TICKET_LEN 32
/* Watch streams in all and per agent. */
#define WATCHERS_MAX 65536
#define WATCHERS_PER_AGENT 4
/* k8s_psat attestations running or queued on the thread pool. */
#define PSAT_INFLIGHT_MAX 8
/* A k8s_psat cluster name (attest.h: 1..128 bytes). */
#define PSAT_CLUSTER_MAX 128
/* The housekeeping timer, and the datastore poll every so many ticks. */
#define SWEEP_MS 1000
#define POLL_TICKS 5
/* A failed entry refresh is retried after this long. */
#define REFRESH_RETRY_MS 500
/* A certificate serial as lower-case hex (RFC 5280: at most 20 bytes). */
#define SERIAL_HEX_MAX 64
/* The leaf PEM read from the auth context. */
#define LEAF_PEM_MAX (2 * LY_CERT_DER_MAX + 1024)
/* gRPC status details we send. */
#define DETAILS_MAX 300

struct ly_agent_api;

struct pending {
	bool used;
	bool is_ticket;
	uint8_t key[LY_X509POP_NONCE_LEN]; /* x509pop nonce, or ticket */
	uint8_t leaf_hash[32];             /* x509pop: SHA-256 of the leaf's DER */
	time_t created;
	time_t expires;
	struct ly_attest_result result;    /* ticket: the agent admitted */
};

/* The SVID an agent held before its last renewal. */
struct prev_serial {
	struct prev_serial *next;
	char *agent_id;
	char serial[SERIAL_HEX_MAX + 1];
	time_t expires;
};

struct watcher {
	struct watcher *prev, *next;
	struct ly_agent_api *api;
	struct ly_rpc_call *call;
	char *agent_id;
	struct ly_selector *sels;
	size_t n_sels;
	char serial[SERIAL_HEX_MAX + 1]; /* of the SVID the stream was opened with */
	time_t svid_expires;
	struct ly_authz_watch *watch;
	uint64_t bundle_seq;
};

struct psat_work {
	uv_work_t req;
	struct psat_work *next;
	struct ly_agent_api *api; /* NULL once ly_agent_api_free ran */
	struct ly_rpc_call *call;
	const struct ly_attest_k8s_psat *cfg;
	char cluster[PSAT_CLUSTER_MAX + 1];
	char *token;              /* wiped */
	struct ly_buf csr;
	bool has_csr_id;
	char csr_id[LY_SPIFFE_ID_MAX + 1];
	time_t now;
	uint64_t started_ns;      /* the metric: TokenReview included */
	struct ly_attest_result result;
	ly_status rc;
	struct ly_error err;
};

struct ly_agent_api {
	struct ly_server *srv;
	bool stopped;
	/* Entry cache. */
	bool loaded;
	struct ly_entry **entries; /* sorted by entry_id, owned */
	size_t n_entries;
	struct ly_authz_index *index;
	int64_t revision;
	/* Timers (separately allocated: freed in their close callbacks). */
	uv_timer_t *refresh_timer;
	uint64_t refresh_end_ns, refresh_cost_ns; /* the last refresh: when it ended, what it cost */
	uv_timer_t *sweep_timer;
	unsigned sweep_ticks;
	/* Watch streams, oldest first. */
	struct watcher *w_head, *w_tail;
	size_t n_watchers;
	struct pending pending[PENDING_MAX];
	struct prev_serial *prev;
	struct psat_work *psat;
	size_t n_psat;
};

/* ---- metrics (server.h: ly_server_metrics) ---------------------------------------------------- */

enum metric_x {
	MX_X509_WORKLOAD,
	MX_X509_AGENT,
	MX_JWT,
	MX_ATTEST_OK,      /* label: the attestor */
	MX_ATTEST_REFUSED, /* label: the attestor */
	MX_ATTEST_SECONDS, /* label: the attestor */
};

/* Adds to one of the server's metrics; nothing without the health listener. */
static void
metric_add(const struct ly_agent_api *api, enum metric_x which, const char *attestor, double v)
{
	const struct ly_server *srv = api != NULL ? api->srv : NULL;
	const char *labels[2] = { attestor, NULL };
	if (srv == NULL || srv->metrics == NULL)
		return;
	switch (which) {
	case MX_X509_WORKLOAD:
		labels[0] = "workload";
		ly_server_metric_add(srv->metrics->x509_issued, labels, v);
		break;
	case MX_X509_AGENT:
		labels[0] = "agent";
		ly_server_metric_add(srv->metrics->x509_issued, labels, v);
		break;
	case MX_JWT:
		ly_server_metric_add(srv->metrics->jwt_issued, NULL, v);
		break;
	case MX_ATTEST_OK:
	case MX_ATTEST_REFUSED:
		labels[1] = which == MX_ATTEST_OK ? "ok" : "refused";
		ly_server_metric_add(srv->metrics->attestations, labels, v);
		break;
	case MX_ATTEST_SECONDS:
		ly_server_metric_add(srv->metrics->attest_seconds, labels, v);
		break;
	}
}

void
ly_agent_api_counts(const struct ly_agent_api *api, size_t *watchers, size_t *entries)
{
	*watchers = api != NULL ? api->n_watchers : 0;
	*entries = api != NULL ? api->n_entries : 0;
}

/* ---- small helpers ----------------------------------------------------------------- */

static struct ly_agent_api *
api_of(void *arg)
{
	struct ly_server *srv = arg;
	return srv != NULL ? srv->agent_api : NULL;
}

/* Ends a call with `code` and "what: cause" (one line, capped). */
static void
finish(struct ly_rpc_call *call, enum ly_rpc_code code, const char *what, const char *cause)
{
	char details[DETAILS_MAX];

	/* Precisions bound the output, so it is cut rather than overflowing. */
	if (cause != NULL && cause[0] != '\0')
		(void)snprintf(details, sizeof(details), "%.*s: %.*s", 120, what, DETAILS_MAX - 124, cause);
	else
		(void)snprintf(details, sizeof(details), "%.*s", DETAILS_MAX - 1, what);
	ly_rpc_call_finish(call, code, details);
}

/* What a refused attestation is, as a gRPC code. */
static enum ly_rpc_code
attest_code(ly_status rc)
{
	switch (rc) {
	case LY_E_INVALID:
	case LY_E_LIMIT:
	case LY_E_UNSUPPORTED:
		return LY_RPC_INVALID_ARGUMENT;
	case LY_E_UNTRUSTED:
	case LY_E_NOT_FOUND:
	case LY_E_EXPIRED:
		return LY_RPC_PERMISSION_DENIED;
	case LY_E_IO:
		return LY_RPC_UNAVAILABLE;
	case LY_E_NOMEM:
		return LY_RPC_RESOURCE_EXHAUSTED;
	default:
		return LY_RPC_INTERNAL;
	}
}

/* What a refused signing request is: the CSR's fault, or ours (no valid CA). */
static enum ly_rpc_code
sign_code(ly_status rc)
{
	switch (rc) {
	case LY_E_INVALID:
	case LY_E_LIMIT:
	case LY_E_UNSUPPORTED:
	case LY_E_UNTRUSTED:
		return LY_RPC_INVALID_ARGUMENT;
	case LY_E_EXPIRED:
	case LY_E_IO:
		return LY_RPC_UNAVAILABLE;
	case LY_E_NOMEM:
		return LY_RPC_RESOURCE_EXHAUSTED;
	default:
		return LY_RPC_INTERNAL;
	}
}

/* Packs `m` and sends it as the call's reply (LY_RPC_WIPE when `secret`). */
static void
reply_msg(struct ly_rpc_call *call, const ProtobufCMessage *m, bool secret)
{
	struct ly_error e;
	size_t n = protobuf_c_message_get_packed_size(m);

	if (n > LY_RPC_MSG_MAX) {
		log_warn("%s: response of %zu bytes over the %d-byte cap", ly_rpc_call_method(call), n,
		    LY_RPC_MSG_MAX);
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "response over the message size cap");
		return;
	}
	uint8_t *buf = malloc(n > 0 ? n : 1);
	if (buf == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	size_t packed = protobuf_c_message_pack(m, buf);
	if (ly_rpc_call_reply(call, buf, packed, secret ? LY_RPC_WIPE : 0, &e) != LY_OK)
		log_warn("%s: reply: %s", ly_rpc_call_method(call), e.msg);
	if (secret)
		OPENSSL_cleanse(buf, n);
	free(buf);
}

/* Wipes a string of an unpacked request before it is freed (tokens). */
static void
wipe_str(char *s)
{
	if (s != NULL)
		OPENSSL_cleanse(s, strlen(s));
}

/* A certificate's serial as lower-case hex without leading zeros ("0" for zero). */
static ly_status
serial_hex(X509 *x, char out[SERIAL_HEX_MAX + 1], struct ly_error *err)
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
	if (n > SERIAL_HEX_MAX) {
		rc = ly_error_set(err, LY_E_LIMIT, "certificate serial longer than %d hex digits", SERIAL_HEX_MAX);
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
static ly_status
chain_leaf_serial(const struct ly_buf *chain, char out[SERIAL_HEX_MAX + 1], struct ly_error *err)
{
	struct ly_der_span s;
	X509 *x = NULL;

	LY_TRY(first_cert(chain->data, chain->len, &s, err));
	LY_TRY(ly_der_parse_one(chain->data + s.off, s.len, &x, err));
	ly_status rc = serial_hex(x, out, err);
	X509_free(x);
	return rc;
}

static uv_timer_t *
timer_new(uv_loop_t *loop, void *data)
{
	uv_timer_t *t = calloc(1, sizeof(*t));

	if (t == NULL || uv_timer_init(loop, t) != 0) {
		free(t);
		return NULL;
	}
	t->data = data;
	uv_unref((uv_handle_t *)t);
	return t;
}

static void
timer_closed(uv_handle_t *h)
{
	free(h);
}

static void
timer_close(uv_timer_t **t)
{
	if (*t == NULL)
		return;
	uv_timer_stop(*t);
	(*t)->data = NULL;
	uv_close((uv_handle_t *)*t, timer_closed);
	*t = NULL;
}

/* ---- protobuf views of our objects ---------------------------------------------------- */

/* Entries as proto messages: server/entry_pb.h. */

/* The CA's bundle as a proto Bundle. */
struct pb_bundle {
	Lanyard__Agent__V1__Bundle msg;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	ProtobufCBinaryData *x509;
	Lanyard__Agent__V1__JWTAuthority *jwt;
	Lanyard__Agent__V1__JWTAuthority **jwt_ptrs;
	size_t n_jwt;
};

static void
pb_bundle_cleanup(struct pb_bundle *p)
{
	for (size_t i = 0; p->jwt != NULL && i < p->n_jwt; i++) {
		free(p->jwt[i].kid);
		OPENSSL_free(p->jwt[i].public_key.data);
	}
	free(p->x509);
	free(p->jwt);
	free(p->jwt_ptrs);
	memset(p, 0, sizeof(*p));
}

static ly_status
pb_bundle_make(const struct ly_bundle *b, struct pb_bundle *p, struct ly_error *err)
{
	size_t nx = ly_bundle_x509_authority_count(b), nj = ly_bundle_jwt_authority_count(b);
	ly_status rc = LY_OK;

	memset(p, 0, sizeof(*p));
	lanyard__agent__v1__bundle__init(&p->msg);
	(void)snprintf(p->td, sizeof(p->td), "%s", ly_bundle_trust_domain(b));
	p->x509 = calloc(nx + 1, sizeof(*p->x509));
	p->jwt = calloc(nj + 1, sizeof(*p->jwt));
	p->jwt_ptrs = calloc(nj + 1, sizeof(*p->jwt_ptrs));
	if (p->x509 == NULL || p->jwt == NULL || p->jwt_ptrs == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: out of memory");
		goto out;
	}
	for (size_t i = 0; i < nx; i++) {
		const struct ly_buf *der = ly_bundle_x509_authority(b, i);
		p->x509[i].data = der->data;
		p->x509[i].len = der->len;
	}
	for (size_t i = 0; i < nj; i++) {
		Lanyard__Agent__V1__JWTAuthority *j = &p->jwt[i];
		unsigned char *spki = NULL;
		lanyard__agent__v1__jwtauthority__init(j);
		p->n_jwt = i + 1;
		int len = i2d_PUBKEY(ly_bundle_jwt_authority_key(b, i), &spki);
		if (len <= 0) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "bundle: JWT authority %zu", i);
			goto out;
		}
		j->public_key.data = spki;
		j->public_key.len = (size_t)len;
		if ((j->kid = strdup(ly_bundle_jwt_authority_kid(b, i))) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "bundle: out of memory");
			goto out;
		}
		/* The bundle does not carry key expiry: 0 means "not said". */
		j->expires_at = 0;
		p->jwt_ptrs[i] = j;
	}
	p->msg.trust_domain = p->td;
	p->msg.n_x509_authorities = nx;
	p->msg.x509_authorities = p->x509;
	p->msg.n_jwt_authorities = nj;
	p->msg.jwt_authorities = p->jwt_ptrs;
	p->msg.sequence = ly_bundle_sequence(b);
	p->msg.refresh_hint = ly_bundle_refresh_hint(b) > INT64_MAX ? INT64_MAX : (int64_t)ly_bundle_refresh_hint(b);
out:
	if (rc != LY_OK)
		pb_bundle_cleanup(p);
	return rc;
}

static uint64_t
bundle_sequence(const struct ly_agent_api *api)
{
	const struct ly_bundle *b = api->srv->ca != NULL ? ly_ca_bundle(api->srv->ca) : NULL;
	return b != NULL ? ly_bundle_sequence(b) : 0;
}

/* ---- the entry cache -------------------------------------------------------------------- */

static int
cmp_entry_ptr(const void *a, const void *b)
{
	const struct ly_entry *const *x = a, *const *y = b;
	return strcmp((*x)->entry_id, (*y)->entry_id);
}

static int
cmp_change_ptr(const void *a, const void *b)
{
	const struct ly_entry_change *const *x = a, *const *y = b;
	return strcmp((*x)->entry_id, (*y)->entry_id);
}

static void
entries_free(struct ly_entry **v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		ly_entry_free(v[i]);
	free(v);
}

/* Replaces the cache with `v` (n entries, ownership taken on success). */
static ly_status
cache_install(struct ly_agent_api *api, struct ly_entry **v, size_t n, int64_t revision, struct ly_error *err)
{
	struct ly_authz_index *idx = NULL;

	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_entry_ptr);
	LY_TRY(ly_authz_index_new(v, n, &idx, err));
	ly_authz_index_free(api->index);
	entries_free(api->entries, api->n_entries);
	api->index = idx;
	api->entries = v;
	api->n_entries = n;
	api->revision = revision;
	api->loaded = true;
	return LY_OK;
}

/* Loads every entry. Writes happen on this thread only, so revision and list agree. */
static ly_status
cache_load(struct ly_agent_api *api, struct ly_error *err)
{
	struct ly_entry_list list = LY_ENTRY_LIST_INIT;
	int64_t rev = 0;
	ly_status rc;

	if (api->srv->ds == NULL)
		return ly_error_set(err, LY_E_IO, "no datastore");
	if ((rc = ly_datastore_revision(api->srv->ds, &rev, err)) != LY_OK ||
	    (rc = ly_datastore_entry_list(api->srv->ds, NULL, &list, err)) != LY_OK)
		return ly_error_wrap(err, rc, "load entries");
	rc = cache_install(api, list.items, list.n, rev, err);
	if (rc == LY_OK)
		list.items = NULL, list.n = 0;
	ly_entry_list_cleanup(&list);
	return rc;
}

/* Applies the change log since the cache's revision; *changed tells whether any entry changed. */
static ly_status
cache_refresh(struct ly_agent_api *api, bool *changed, struct ly_error *err)
{
	struct ly_entry_changes ch = LY_ENTRY_CHANGES_INIT;
	struct ly_entry_change **byid = NULL;
	struct ly_entry **nv = NULL;
	bool *drop = NULL;
	size_t nn = 0;
	ly_status rc;

	*changed = false;
	if (!api->loaded) {
		LY_TRY(cache_load(api, err));
		*changed = true;
		return LY_OK;
	}
	if ((rc = ly_datastore_entry_changes_since(api->srv->ds, api->revision, &ch, err)) != LY_OK)
		return ly_error_wrap(err, rc, "entry changes");
	if (ch.resync) {
		ly_entry_changes_cleanup(&ch);
		LY_TRY(cache_load(api, err));
		*changed = true;
		return LY_OK;
	}
	if (ch.n == 0) {
		api->revision = ch.revision;
		ly_entry_changes_cleanup(&ch);
		return LY_OK;
	}
	byid = calloc(ch.n, sizeof(*byid));
	nv = calloc(api->n_entries + ch.n + 1, sizeof(*nv));
	drop = calloc(api->n_entries + 1, sizeof(*drop));
	if (byid == NULL || nv == NULL || drop == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "entry changes: out of memory");
		goto out;
	}
	for (size_t i = 0; i < ch.n; i++)
		byid[i] = &ch.items[i];
	qsort(byid, ch.n, sizeof(*byid), cmp_change_ptr);
	/* Keep every cached entry no change names; then add what the changes hold now. */
	for (size_t i = 0; i < api->n_entries; i++) {
		struct ly_entry_change key = { 0, LY_ENTRY_CREATED, api->entries[i]->entry_id, NULL };
		const struct ly_entry_change *kp = &key;
		drop[i] = bsearch(&kp, byid, ch.n, sizeof(*byid), cmp_change_ptr) != NULL;
		if (!drop[i])
			nv[nn++] = api->entries[i];
	}
	for (size_t i = 0; i < ch.n; i++) {
		if (ch.items[i].entry != NULL)
			nv[nn++] = ch.items[i].entry;
	}
	if (nn > 1)
		qsort(nv, nn, sizeof(*nv), cmp_entry_ptr);
	struct ly_authz_index *idx = NULL;
	if ((rc = ly_authz_index_new(nv, nn, &idx, err)) != LY_OK) {
		/* Inconsistent (a bug, or a store changed under us): reload next time. */
		api->loaded = false;
		goto out;
	}
	/* Committed: the cache owns the new entries, drops the replaced ones. */
	for (size_t i = 0; i < ch.n; i++)
		ch.items[i].entry = NULL;
	for (size_t i = 0; i < api->n_entries; i++) {
		if (drop[i])
			ly_entry_free(api->entries[i]);
	}
	free(api->entries);
	ly_authz_index_free(api->index);
	api->entries = nv;
	api->n_entries = nn;
	api->index = idx;
	api->revision = ch.revision;
	nv = NULL;
	*changed = true;
out:
	free(nv);
	free(drop);
	free(byid);
	ly_entry_changes_cleanup(&ch);
	return rc;
}

static ly_status
cache_ensure(struct ly_agent_api *api, struct ly_error *err)
{
	return api->loaded ? LY_OK : cache_load(api, err);
}

/* ---- previous serials -------------------------------------------------------------------- */

static void
prev_remove(struct ly_agent_api *api, const char *agent_id)
{
	for (struct prev_serial **pp = &api->prev; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->agent_id, agent_id) == 0) {
			struct prev_serial *p = *pp;
			*pp = p->next;
			free(p->agent_id);
			free(p);
			return;
		}
	}
}

static void
prev_set(struct ly_agent_api *api, const char *agent_id, const char *serial, time_t expires, time_t now)
{
	prev_remove(api, agent_id);
	if (serial == NULL || serial[0] == '\0' || expires <= now || strlen(serial) > SERIAL_HEX_MAX)
		return;
	struct prev_serial *p = calloc(1, sizeof(*p));
	if (p == NULL || (p->agent_id = strdup(agent_id)) == NULL) {
		/* Only a convenience: without it the old SVID is refused a little early. */
		free(p);
		return;
	}
	memcpy(p->serial, serial, strlen(serial) + 1);
	p->expires = expires;
	p->next = api->prev;
	api->prev = p;
}

static bool
prev_ok(const struct ly_agent_api *api, const char *agent_id, const char *serial, time_t now)
{
	for (const struct prev_serial *p = api->prev; p != NULL; p = p->next) {
		if (strcmp(p->agent_id, agent_id) == 0)
			return p->expires > now && strcmp(p->serial, serial) == 0;
	}
	return false;
}

static void
prev_sweep(struct ly_agent_api *api, time_t now)
{
	struct prev_serial **pp = &api->prev;

	while (*pp != NULL) {
		struct prev_serial *p = *pp;
		if (p->expires <= now) {
			*pp = p->next;
			free(p->agent_id);
			free(p);
		} else {
			pp = &p->next;
		}
	}
}

/* ---- pending attestations ------------------------------------------------------------------- */

static void
pending_clear(struct pending *p)
{
	ly_attest_result_cleanup(&p->result);
	OPENSSL_cleanse(p, sizeof(*p));
	p->result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
}

static void
pending_sweep(struct ly_agent_api *api, time_t now)
{
	for (size_t i = 0; i < PENDING_MAX; i++) {
		if (api->pending[i].used && api->pending[i].expires <= now)
			pending_clear(&api->pending[i]);
	}
}

static struct pending *
pending_free_slot(struct ly_agent_api *api, time_t now)
{
	pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		if (!api->pending[i].used)
			return &api->pending[i];
	}
	return NULL;
}

/* Stores an x509pop challenge; a leaf with PENDING_PER_LEAF already loses its oldest. */
static ly_status
pending_add_challenge(struct ly_agent_api *api, const uint8_t leaf_hash[32], const uint8_t *nonce, time_t now,
    struct ly_error *err)
{
	struct pending *oldest = NULL, *slot = NULL;
	size_t same = 0;

	pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &api->pending[i];
		if (!p->used || p->is_ticket || CRYPTO_memcmp(p->leaf_hash, leaf_hash, 32) != 0)
			continue;
		same++;
		if (oldest == NULL || p->created < oldest->created)
			oldest = p;
	}
	if (same >= PENDING_PER_LEAF && oldest != NULL) {
		pending_clear(oldest);
		slot = oldest;
	} else if ((slot = pending_free_slot(api, now)) == NULL) {
		return ly_error_set(err, LY_E_LIMIT, "too many attestations in progress");
	}
	slot->used = true;
	slot->is_ticket = false;
	memcpy(slot->key, nonce, LY_X509POP_NONCE_LEN);
	memcpy(slot->leaf_hash, leaf_hash, 32);
	slot->created = now;
	slot->expires = now + PENDING_TTL;
	return LY_OK;
}

/* Finds and removes the challenge for (leaf, nonce); false when none. */
static bool
pending_take_challenge(struct ly_agent_api *api, const uint8_t leaf_hash[32], const uint8_t *nonce, time_t now)
{
	bool found = false;

	pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &api->pending[i];
		if (!p->used || p->is_ticket)
			continue;
		/* Both compared in full, in constant time. */
		int a = CRYPTO_memcmp(p->key, nonce, LY_X509POP_NONCE_LEN);
		int b = CRYPTO_memcmp(p->leaf_hash, leaf_hash, 32);
		if ((a | b) == 0) {
			pending_clear(p);
			found = true;
		}
	}
	return found;
}

/* Stores an admitted agent under a new ticket (the result is moved in). */
static ly_status
pending_add_ticket(struct ly_agent_api *api, struct ly_attest_result *res, time_t now, uint8_t ticket[TICKET_LEN],
    struct ly_error *err)
{
	struct pending *slot = pending_free_slot(api, now);

	if (slot == NULL)
		return ly_error_set(err, LY_E_LIMIT, "too many attestations in progress");
	if (RAND_bytes(ticket, TICKET_LEN) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "ticket");
	slot->used = true;
	slot->is_ticket = true;
	memcpy(slot->key, ticket, TICKET_LEN);
	slot->created = now;
	slot->expires = now + PENDING_TTL;
	slot->result = *res;
	*res = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	return LY_OK;
}

static bool
pending_take_ticket(struct ly_agent_api *api, const uint8_t *ticket, time_t now, struct ly_attest_result *out)
{
	bool found = false;

	pending_sweep(api, now);
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &api->pending[i];
		if (!p->used || !p->is_ticket || CRYPTO_memcmp(p->key, ticket, TICKET_LEN) != 0 || found)
			continue;
		*out = p->result;
		p->result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
		pending_clear(p);
		found = true;
	}
	return found;
}

/* Drops the tickets of an agent that was evicted or banned. */
static void
pending_drop_agent(struct ly_agent_api *api, const char *agent_id)
{
	for (size_t i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &api->pending[i];
		if (p->used && p->is_ticket && p->result.agent_id != NULL && strcmp(p->result.agent_id, agent_id) == 0)
			pending_clear(p);
	}
}

/* ---- watchers ------------------------------------------------------------------------------------ */

static void
watcher_free(struct watcher *w)
{
	if (w == NULL)
		return;
	free(w->agent_id);
	ly_selectors_free(w->sels, w->n_sels);
	ly_authz_watch_free(w->watch);
	free(w);
}

static void
watcher_unlink(struct watcher *w)
{
	struct ly_agent_api *api = w->api;

	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		api->w_head = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	else
		api->w_tail = w->prev;
	w->prev = w->next = NULL;
	api->n_watchers--;
}

/* Ends a watch stream and frees its watcher. */
static void
watcher_end(struct watcher *w, enum ly_rpc_code code, const char *details)
{
	watcher_unlink(w);
	ly_rpc_call_finish(w->call, code, details);
	watcher_free(w);
}

static void
on_watch_closed(struct ly_rpc_call *call, void *arg)
{
	struct watcher *w = arg;

	(void)call;
	log_debug("watch of %s closed by the agent", w->agent_id);
	watcher_end(w, LY_RPC_CANCELLED, NULL);
}

/*
 * Sends the watcher what changed for it (authz.h, watch streams): nothing
 * when neither its set nor the bundle changed, unless `force`. May end
 * (and free) the watcher.
 */
static void
watcher_send(struct watcher *w, bool force)
{
	struct ly_agent_api *api = w->api;
	struct ly_authz_agent agent = { w->agent_id, w->sels, w->n_sels };
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	struct ly_authz_update u;
	struct ly_entries_pb pe;
	char **deleted = NULL;
	uint8_t *buf = NULL;
	struct ly_error e;
	enum ly_rpc_code code = LY_RPC_INTERNAL;
	const char *why = "internal error";

	if (!api->loaded)
		return; /* the next successful refresh comes back here */
	if (ly_authz_authorized(api->index, &agent, &set, &e) != LY_OK ||
	    ly_authz_watch_next(w->watch, &set, &u, &e) != LY_OK) {
		log_error("watch of %s: %s", w->agent_id, e.msg);
		goto fail;
	}
	uint64_t seq = bundle_sequence(api);
	if (!u.changed && !force && seq == w->bundle_seq) {
		ly_authz_set_cleanup(&set);
		return;
	}
	if (ly_entries_pb_make(u.upserts, u.n_upserts, &pe, &e) != LY_OK) {
		log_error("watch of %s: %s", w->agent_id, e.msg);
		goto fail;
	}
	deleted = calloc(u.n_deleted + 1, sizeof(*deleted));
	if (deleted == NULL) {
		ly_entries_pb_cleanup(&pe);
		goto fail;
	}
	for (size_t i = 0; i < u.n_deleted; i++)
		deleted[i] = u.deleted[i];

	Lanyard__Agent__V1__EntriesUpdate up;
	lanyard__agent__v1__entries_update__init(&up);
	up.revision = api->revision;
	up.snapshot = u.snapshot;
	up.n_entries = pe.n;
	up.entries = pe.ptrs;
	up.n_deleted_entry_ids = u.n_deleted;
	up.deleted_entry_ids = deleted;
	up.bundle_sequence = seq;
	size_t n = lanyard__agent__v1__entries_update__get_packed_size(&up);
	if (n > LY_RPC_MSG_MAX) {
		log_error("watch of %s: %zu authorized entries need %zu bytes, over the %d-byte message cap",
		    w->agent_id, set.n, n, LY_RPC_MSG_MAX);
		code = LY_RPC_RESOURCE_EXHAUSTED;
		why = "authorized entries exceed the message size cap";
	} else if ((buf = malloc(n > 0 ? n : 1)) == NULL) {
		code = LY_RPC_RESOURCE_EXHAUSTED;
		why = "out of memory";
	} else {
		size_t packed = lanyard__agent__v1__entries_update__pack(&up, buf);
		if (ly_rpc_call_send(w->call, buf, packed, 0, &e) != LY_OK)
			log_warn("watch of %s: %s", w->agent_id, e.msg);
		else
			code = LY_RPC_OK;
	}
	log_debug("watch of %s: %s revision=%" PRId64 " entries=%zu deleted=%zu bundle_sequence=%" PRIu64,
	    w->agent_id, u.snapshot ? "snapshot" : "delta", api->revision, u.n_upserts, u.n_deleted, seq);
	w->bundle_seq = seq;
	free(buf);
	free(deleted);
	ly_entries_pb_cleanup(&pe);
	ly_authz_set_cleanup(&set);
	if (code != LY_RPC_OK) {
		watcher_end(w, code, why);
	} else if (u.rebase) {
		/* The snapshot just queued brings the agent up to date; it reopens. */
		log_debug("watch of %s rebased", w->agent_id);
		watcher_end(w, LY_RPC_OK, "watch rebased: reopen it");
	}
	return;
fail:
	ly_authz_set_cleanup(&set);
	watcher_end(w, code, why);
}

static void
watchers_send_all(struct ly_agent_api *api, bool force)
{
	struct watcher *w = api->w_head, *next;

	for (; w != NULL; w = next) {
		next = w->next;
		watcher_send(w, force);
	}
}

/*
 * An agent was (re-)enrolled or renewed: its open streams keep going if
 * the SVID they were opened with is still acceptable, with its new node
 * selectors; the others end.
 */
static void
watchers_agent_updated(struct ly_agent_api *api, const char *agent_id, const char *serial,
    const struct ly_selector *sels, size_t n_sels, time_t now)
{
	struct watcher *w = api->w_head, *next;

	for (; w != NULL; w = next) {
		next = w->next;
		if (strcmp(w->agent_id, agent_id) != 0)
			continue;
		if (strcmp(w->serial, serial) != 0 && !prev_ok(api, agent_id, w->serial, now)) {
			watcher_end(w, LY_RPC_UNAUTHENTICATED, "agent SVID superseded: reconnect with the current one");
			continue;
		}
		if (!ly_selectors_same_set(w->sels, w->n_sels, sels, n_sels)) {
			struct ly_selector *copy = NULL;
			if (ly_selectors_copy(sels, n_sels, &copy, NULL) != LY_OK) {
				watcher_end(w, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
				continue;
			}
			ly_selectors_free(w->sels, w->n_sels);
			w->sels = copy;
			w->n_sels = n_sels;
			watcher_send(w, false);
		}
	}
}

/* ---- authentication (mTLS calls) -------------------------------------------------------------- */

struct caller {
	struct ly_agent *rec; /* the agent's record, owned */
	char serial[SERIAL_HEX_MAX + 1];
	time_t not_after;
};

static void
caller_cleanup(struct caller *c)
{
	ly_agent_free(c->rec);
	c->rec = NULL;
}

/*
 * Checks the caller is an enrolled agent presenting its current SVID (the
 * rules at the top of this file). On failure the call is finished and
 * false returned.
 */
static bool
authenticate(struct ly_agent_api *api, struct ly_rpc_call *call, time_t now, struct caller *c)
{
	const char *peer_id = ly_rpc_call_peer_spiffe_id(call);
	const char *pem = ly_rpc_call_peer_cert_pem(call);
	struct ly_spiffe_id sid;
	struct ly_error e;
	X509 *leaf = NULL;
	BIO *bio = NULL;
	time_t nb = 0;
	enum ly_rpc_code code = LY_RPC_UNAUTHENTICATED;
	const char *why = NULL, *cause = NULL;
	ly_status rc;

	memset(c, 0, sizeof(*c));
	if (peer_id == NULL || pem == NULL) {
		why = "agent SVID required (mTLS)";
		goto fail;
	}
	size_t len = strnlen(pem, LEAF_PEM_MAX + 1);
	if (len > LEAF_PEM_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL ||
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
	    ly_asn1_time_to_time(X509_get0_notAfter(leaf), &c->not_after, &e) != LY_OK) {
		why = "agent SVID validity unreadable";
		goto fail;
	}
	if (now < nb || now >= c->not_after) {
		why = "agent SVID expired or not yet valid: renew it, or attest again";
		goto fail;
	}
	if (serial_hex(leaf, c->serial, &e) != LY_OK) {
		why = "agent SVID serial refused";
		cause = e.msg;
		goto fail;
	}
	rc = ly_datastore_agent_get(api->srv->ds, sid.id, &c->rec, &e);
	if (rc == LY_E_NOT_FOUND) {
		code = LY_RPC_PERMISSION_DENIED;
		why = "agent must attest again";
		goto fail;
	}
	if (rc != LY_OK) {
		log_error("agent %s: %s", sid.id, e.msg);
		code = LY_RPC_UNAVAILABLE;
		why = "datastore unavailable";
		goto fail;
	}
	if (c->rec->banned) {
		code = LY_RPC_PERMISSION_DENIED;
		why = "agent is banned";
		goto fail;
	}
	if (strcmp(c->serial, c->rec->serial_number) != 0 && !prev_ok(api, sid.id, c->serial, now)) {
		why = "agent SVID superseded: use the current one, or attest again";
		goto fail;
	}
	X509_free(leaf);
	BIO_free(bio);
	return true;
fail:
	log_debug("%s from %s refused: %s%s%s", ly_rpc_call_method(call), peer_id != NULL ? peer_id : "(no SVID)", why,
	    cause != NULL ? ": " : "", cause != NULL ? cause : "");
	X509_free(leaf);
	BIO_free(bio);
	caller_cleanup(c);
	finish(call, code, why, cause);
	return false;
}

/* ---- enrolment ---------------------------------------------------------------------------------- */

/*
 * Signs an agent SVID from `csr` for `agent_id`, records the agent and
 * replies AgentSVID. `old` is the record before (renewal: its serial stays
 * acceptable until it expires; attestation: it no longer is).
 */
static void
enrol(struct ly_agent_api *api, struct ly_rpc_call *call, const char *agent_id, const char *type,
    const struct ly_selector *sels, size_t n_sels, const uint8_t *csr, size_t csr_len, const struct ly_agent *old,
    bool renewal, time_t now)
{
	struct ly_spiffe_id sid;
	struct ly_buf chain = LY_BUF_INIT;
	struct pb_bundle pbb;
	struct ly_selector *sel_copy = NULL;
	char serial[SERIAL_HEX_MAX + 1], type_buf[32];
	time_t exp = 0;
	struct ly_error e;
	ly_status rc;

	memset(&pbb, 0, sizeof(pbb));
	if (ly_spiffe_id_parse_str(agent_id, &sid, &e) != LY_OK) {
		finish(call, LY_RPC_INTERNAL, "agent ID", e.msg);
		return;
	}
	if ((rc = ly_ca_sign_agent_svid(api->srv->ca, csr, csr_len, &sid, 0, now, &chain, &exp, &e)) != LY_OK) {
		if (sign_code(rc) != LY_RPC_INVALID_ARGUMENT)
			log_error("agent %s: cannot sign its SVID: %s", agent_id, e.msg);
		finish(call, sign_code(rc), "CSR refused", e.msg);
		goto out;
	}
	if (chain_leaf_serial(&chain, serial, &e) != LY_OK) {
		log_error("agent %s: issued SVID unreadable: %s", agent_id, e.msg);
		finish(call, LY_RPC_INTERNAL, "issued SVID unreadable", NULL);
		goto out;
	}
	(void)snprintf(type_buf, sizeof(type_buf), "%s", type);
	if (ly_selectors_copy(sels, n_sels, &sel_copy, &e) != LY_OK) {
		finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		goto out;
	}
	struct ly_agent rec = {
		.spiffe_id = sid.id,
		.attestation_type = type_buf,
		.serial_number = serial,
		.svid_expires_at = (int64_t)exp,
		.banned = false,
		.selectors = sel_copy,
		.n_selectors = n_sels,
	};
	if ((rc = ly_datastore_agent_upsert(api->srv->ds, &rec, &e)) != LY_OK) {
		log_error("agent %s: cannot record it: %s", agent_id, e.msg);
		finish(call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		goto out;
	}
	if (renewal && old != NULL)
		prev_set(api, agent_id, old->serial_number, (time_t)old->svid_expires_at, now);
	else
		prev_remove(api, agent_id);
	watchers_agent_updated(api, agent_id, serial, sels, n_sels, now);
	log_info("agent %s %s (%s): SVID serial %s valid until %lld", agent_id, renewal ? "renewed" : "attested",
	    type, serial, (long long)exp);
	metric_add(api, MX_X509_AGENT, NULL, 1);
	if (!renewal)
		metric_add(api, MX_ATTEST_OK, type_buf, 1);

	if (pb_bundle_make(ly_ca_bundle(api->srv->ca), &pbb, &e) != LY_OK) {
		finish(call, LY_RPC_INTERNAL, "bundle", e.msg);
		goto out;
	}
	Lanyard__Agent__V1__AgentSVID svid;
	lanyard__agent__v1__agent_svid__init(&svid);
	svid.spiffe_id = sid.id;
	svid.cert_chain.data = chain.data;
	svid.cert_chain.len = chain.len;
	svid.expires_at = (int64_t)exp;
	svid.bundle = &pbb.msg;
	if (renewal) {
		reply_msg(call, &svid.base, false);
	} else {
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.svid = &svid;
		reply_msg(call, &resp.base, false);
	}
out:
	ly_selectors_free(sel_copy, n_sels);
	pb_bundle_cleanup(&pbb);
	ly_buf_free(&chain);
}

/*
 * The agent was admitted (`res`): refuse a banned one, then either sign
 * its SVID (the CSR names its ID) or hand out a ticket. `csr_id` is the
 * CSR's URI SAN, NULL without a CSR.
 */
static void
attest_done(struct ly_agent_api *api, struct ly_rpc_call *call, struct ly_attest_result *res, const uint8_t *csr,
    size_t csr_len, const char *csr_id, bool from_ticket, time_t now)
{
	struct ly_agent *old = NULL;
	struct ly_error e;
	ly_status rc;

	rc = ly_datastore_agent_get(api->srv->ds, res->agent_id, &old, &e);
	if (rc != LY_OK && rc != LY_E_NOT_FOUND) {
		log_error("agent %s: %s", res->agent_id, e.msg);
		finish(call, LY_RPC_UNAVAILABLE, "datastore unavailable", NULL);
		goto out;
	}
	if (old != NULL && old->banned) {
		log_info("agent %s refused: banned", res->agent_id);
		finish(call, LY_RPC_PERMISSION_DENIED, "agent is banned", NULL);
		goto out;
	}
	if (csr_id == NULL || strcmp(csr_id, res->agent_id) != 0) {
		if (from_ticket) {
			finish(call, LY_RPC_INVALID_ARGUMENT, "CSR must name the agent ID", res->agent_id);
			goto out;
		}
		uint8_t ticket[TICKET_LEN];
		char id[LY_SPIFFE_ID_MAX + 1];
		(void)snprintf(id, sizeof(id), "%s", res->agent_id);
		if ((rc = pending_add_ticket(api, res, now, ticket, &e)) != LY_OK) {
			finish(call, rc == LY_E_LIMIT ? LY_RPC_UNAVAILABLE : LY_RPC_INTERNAL, e.msg, NULL);
			goto out;
		}
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.agent_id = id;
		resp.ticket.data = ticket;
		resp.ticket.len = TICKET_LEN;
		log_info("agent %s admitted: ticket issued for its CSR", id);
		reply_msg(call, &resp.base, true);
		OPENSSL_cleanse(ticket, sizeof(ticket));
		goto out;
	}
	enrol(api, call, res->agent_id, res->type, res->selectors, res->n_selectors, csr, csr_len, old, false, now);
out:
	ly_agent_free(old);
}

/* Parses the CSR of an AttestAgent request (when present) for its URI SAN. */
static bool
attest_csr(struct ly_rpc_call *call, const ProtobufCBinaryData *csr, char id[LY_SPIFFE_ID_MAX + 1], bool *has_id)
{
	struct ly_csr parsed;
	struct ly_error e;

	*has_id = false;
	if (csr->len == 0)
		return true;
	if (csr->len > LY_CSR_DER_MAX) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "CSR too large", NULL);
		return false;
	}
	if (ly_csr_parse(csr->data, csr->len, &parsed, &e) != LY_OK) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "CSR refused", e.msg);
		return false;
	}
	memcpy(id, parsed.id.id, strlen(parsed.id.id) + 1);
	*has_id = true;
	ly_csr_cleanup(&parsed);
	return true;
}

/* ---- k8s_psat on the thread pool ------------------------------------------------------------- */

static void
psat_work_free(struct psat_work *pw)
{
	if (pw->token != NULL) {
		ly_free_secret_str(pw->token);
		pw->token = NULL;
	}
	ly_buf_free(&pw->csr);
	ly_attest_result_cleanup(&pw->result);
	free(pw);
}

static void
psat_run(uv_work_t *req)
{
	struct psat_work *pw = req->data;

	pw->rc = ly_attest_k8s_psat(pw->cfg, pw->cluster, pw->token, pw->now, &pw->result, &pw->err);
	ly_free_secret_str(pw->token);
	pw->token = NULL;
	/* libuv's pool threads live until exit: release OpenSSL's per-thread
	 * state (error queue, DRBGs) now rather than never; it is made again
	 * on the next use, and attestations are rare. */
	OPENSSL_thread_stop();
}

static void
psat_after(uv_work_t *req, int status)
{
	struct psat_work *pw = req->data;
	struct ly_agent_api *api = pw->api;

	if (api != NULL) {
		for (struct psat_work **pp = &api->psat; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == pw) {
				*pp = pw->next;
				api->n_psat--;
				break;
			}
		}
	}
	if (status != 0 || api == NULL || api->stopped) {
		ly_rpc_call_finish(pw->call, LY_RPC_UNAVAILABLE, "server stopping");
	} else if (pw->rc != LY_OK) {
		log_info("k8s_psat attestation refused: %s", pw->err.msg);
		metric_add(api, MX_ATTEST_REFUSED, "k8s_psat", 1);
		finish(pw->call, attest_code(pw->rc),
		    pw->rc == LY_E_IO ? "attestation unavailable, retry later" : "attestation refused",
		    pw->rc == LY_E_IO ? NULL : pw->err.msg);
	} else {
		attest_done(api, pw->call, &pw->result, pw->csr.data, pw->csr.len, pw->has_csr_id ? pw->csr_id : NULL,
		    false, ly_server_now());
	}
	if (api != NULL)
		metric_add(api, MX_ATTEST_SECONDS, "k8s_psat", (double)(uv_hrtime() - pw->started_ns) / 1e9);
	psat_work_free(pw);
}

static void
psat_start(struct ly_agent_api *api, struct ly_rpc_call *call, const Lanyard__Agent__V1__K8sPsatAttestation *m,
    const ProtobufCBinaryData *csr, const char *csr_id, time_t now)
{
	struct psat_work *pw = NULL;
	size_t clen = m->cluster != NULL ? strnlen(m->cluster, PSAT_CLUSTER_MAX + 1) : 0;
	size_t tlen = m->token != NULL ? strnlen(m->token, LY_K8S_TOKEN_MAX + 1) : 0;

	if (api->srv->psat == NULL) {
		finish(call, LY_RPC_FAILED_PRECONDITION, "k8s_psat attestation is not enabled", NULL);
		return;
	}
	if (clen == 0 || clen > PSAT_CLUSTER_MAX || tlen == 0 || tlen > LY_K8S_TOKEN_MAX) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "k8s_psat: cluster and token required, within their size caps",
		    NULL);
		return;
	}
	if (api->n_psat >= PSAT_INFLIGHT_MAX) {
		finish(call, LY_RPC_UNAVAILABLE, "too many attestations in progress, retry later", NULL);
		return;
	}
	if ((pw = calloc(1, sizeof(*pw))) == NULL || (pw->token = strndup(m->token, tlen)) == NULL ||
	    (csr->len > 0 && ly_buf_set(&pw->csr, csr->data, csr->len, NULL) != LY_OK)) {
		if (pw != NULL)
			psat_work_free(pw);
		finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
		return;
	}
	pw->req.data = pw;
	pw->api = api;
	pw->call = call;
	pw->cfg = api->srv->psat;
	memcpy(pw->cluster, m->cluster, clen);
	pw->cluster[clen] = '\0';
	if (csr_id != NULL) {
		pw->has_csr_id = true;
		memcpy(pw->csr_id, csr_id, strlen(csr_id) + 1);
	}
	pw->now = now;
	pw->started_ns = uv_hrtime();
	pw->result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	int uvrc = uv_queue_work(api->srv->loop, &pw->req, psat_run, psat_after);
	if (uvrc != 0) {
		log_error("k8s_psat: cannot queue the attestation: %s", uv_strerror(uvrc));
		psat_work_free(pw);
		finish(call, LY_RPC_UNAVAILABLE, "attestation unavailable, retry later", NULL);
		return;
	}
	pw->next = api->psat;
	api->psat = pw;
	api->n_psat++;
}

/* ---- AttestAgent ------------------------------------------------------------------------------- */

static void
attest_x509pop(struct ly_agent_api *api, struct ly_rpc_call *call, const Lanyard__Agent__V1__X509PopAttestation *m,
    const ProtobufCBinaryData *csr, const char *csr_id, time_t now)
{
	struct ly_attest_result res = LY_ATTEST_RESULT_INIT;
	struct ly_der_span leaf;
	uint8_t hash[32], nonce[LY_X509POP_NONCE_LEN];
	struct ly_error e;
	ly_status rc;

	if (api->srv->x509pop == NULL) {
		finish(call, LY_RPC_FAILED_PRECONDITION, "x509pop attestation is not enabled", NULL);
		return;
	}
	if (m->certificate_chain.len == 0 || m->certificate_chain.len > LY_CHAIN_DER_MAX) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "x509pop: certificate chain required, within its size cap", NULL);
		return;
	}
	if ((rc = first_cert(m->certificate_chain.data, m->certificate_chain.len, &leaf, &e)) != LY_OK) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "x509pop: certificate chain", e.msg);
		return;
	}
	if (EVP_Digest(m->certificate_chain.data + leaf.off, leaf.len, hash, NULL, EVP_sha256(), NULL) != 1) {
		finish(call, LY_RPC_INTERNAL, "x509pop: digest", NULL);
		return;
	}
	if (m->challenge_nonce.len == 0 && m->challenge_signature.len == 0) {
		/* Step 1: a challenge (the chain is checked first: no round trip for a bad one). */
		rc = ly_attest_x509pop_challenge(api->srv->x509pop, m->certificate_chain.data, m->certificate_chain.len,
		    now, nonce, &e);
		if (rc != LY_OK) {
			log_info("x509pop attestation refused: %s", e.msg);
			metric_add(api, MX_ATTEST_REFUSED, "x509pop", 1);
			finish(call, attest_code(rc), "attestation refused", e.msg);
			return;
		}
		if ((rc = pending_add_challenge(api, hash, nonce, now, &e)) != LY_OK) {
			finish(call, LY_RPC_UNAVAILABLE, e.msg, NULL);
			return;
		}
		Lanyard__Agent__V1__AttestAgentResponse resp;
		lanyard__agent__v1__attest_agent_response__init(&resp);
		resp.challenge_nonce.data = nonce;
		resp.challenge_nonce.len = sizeof(nonce);
		reply_msg(call, &resp.base, false);
		return;
	}
	/* Step 2: the proof. */
	if (m->challenge_nonce.len != LY_X509POP_NONCE_LEN || m->challenge_signature.len == 0 ||
	    m->challenge_signature.len > LY_X509POP_SIG_MAX) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "x509pop: malformed challenge response", NULL);
		return;
	}
	if (!pending_take_challenge(api, hash, m->challenge_nonce.data, now)) {
		finish(call, LY_RPC_PERMISSION_DENIED, "x509pop: unknown or expired challenge, ask for a new one", NULL);
		return;
	}
	rc = ly_attest_x509pop_verify(api->srv->x509pop, m->certificate_chain.data, m->certificate_chain.len,
	    m->challenge_nonce.data, m->challenge_signature.data, m->challenge_signature.len, now, &res, &e);
	if (rc != LY_OK) {
		log_info("x509pop attestation refused: %s", e.msg);
		metric_add(api, MX_ATTEST_REFUSED, "x509pop", 1);
		finish(call, attest_code(rc), "attestation refused", e.msg);
		return;
	}
	attest_done(api, call, &res, csr->data, csr->len, csr_id, false, now);
	ly_attest_result_cleanup(&res);
}

static void
attest_join_token(struct ly_agent_api *api, struct ly_rpc_call *call, const Lanyard__Agent__V1__JoinTokenAttestation *m,
    const ProtobufCBinaryData *csr, const char *csr_id, time_t now)
{
	struct ly_attest_result res = LY_ATTEST_RESULT_INIT;
	struct ly_error e;
	ly_status rc;

	if (!api->srv->cfg.join_token_enabled) {
		finish(call, LY_RPC_FAILED_PRECONDITION, "join_token attestation is not enabled", NULL);
		return;
	}
	rc = ly_attest_join_token(api->srv->ds, api->srv->cfg.trust_domain, m->token, now, &res, &e);
	if (rc != LY_OK) {
		/* The message names the rule, never the token (attest.h). */
		log_info("join_token attestation refused: %s", e.msg);
		metric_add(api, MX_ATTEST_REFUSED, "join_token", 1);
		finish(call, attest_code(rc), rc == LY_E_IO ? "attestation unavailable, retry later" : "attestation refused",
		    rc == LY_E_IO ? NULL : e.msg);
		return;
	}
	attest_done(api, call, &res, csr->data, csr->len, csr_id, false, now);
	ly_attest_result_cleanup(&res);
}

static void
attest_ticket(struct ly_agent_api *api, struct ly_rpc_call *call, const ProtobufCBinaryData *ticket,
    const ProtobufCBinaryData *csr, const char *csr_id, time_t now)
{
	struct ly_attest_result res = LY_ATTEST_RESULT_INIT;

	if (ticket->len != TICKET_LEN || csr_id == NULL) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "ticket: a ticket and a CSR for the agent ID required", NULL);
		return;
	}
	if (!pending_take_ticket(api, ticket->data, now, &res)) {
		finish(call, LY_RPC_PERMISSION_DENIED, "unknown or expired ticket: attest again", NULL);
		return;
	}
	attest_done(api, call, &res, csr->data, csr->len, csr_id, true, now);
	ly_attest_result_cleanup(&res);
}

static void
h_attest_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = api_of(arg);
	Lanyard__Agent__V1__AttestAgentRequest *m = NULL;
	char csr_id[LY_SPIFFE_ID_MAX + 1];
	bool has_id = false;
	time_t now = ly_server_now();

	if (api == NULL || api->stopped || api->srv->ds == NULL || api->srv->ca == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "server not serving");
		return;
	}
	if ((m = lanyard__agent__v1__attest_agent_request__unpack(NULL, len, req)) == NULL) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "malformed AttestAgentRequest");
		return;
	}
	/* The CSR is checked before anything is used up (a join token, a challenge). */
	if (!attest_csr(call, &m->csr, csr_id, &has_id))
		goto out;
	const char *cid = has_id ? csr_id : NULL;
	uint64_t t0 = uv_hrtime();
	switch (m->attestation_case) {
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN:
		attest_join_token(api, call, m->join_token, &m->csr, cid, now);
		metric_add(api, MX_ATTEST_SECONDS, "join_token", (double)(uv_hrtime() - t0) / 1e9);
		break;
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP:
		attest_x509pop(api, call, m->x509pop, &m->csr, cid, now);
		metric_add(api, MX_ATTEST_SECONDS, "x509pop", (double)(uv_hrtime() - t0) / 1e9);
		break;
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_K8S_PSAT:
		psat_start(api, call, m->k8s_psat, &m->csr, cid, now);
		break;
	case LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_TICKET:
		attest_ticket(api, call, &m->ticket, &m->csr, cid, now);
		break;
	default:
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "no attestation in the request");
		break;
	}
out:
	/* Tokens are secrets: wipe protobuf-c's copies before they are freed. */
	if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN &&
	    m->join_token != NULL)
		wipe_str(m->join_token->token);
	if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_K8S_PSAT &&
	    m->k8s_psat != NULL)
		wipe_str(m->k8s_psat->token);
	if (m->attestation_case == LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_TICKET &&
	    m->ticket.data != NULL)
		OPENSSL_cleanse(m->ticket.data, m->ticket.len);
	lanyard__agent__v1__attest_agent_request__free_unpacked(m, NULL);
}

/* ---- RenewAgent --------------------------------------------------------------------------------- */

static void
h_renew_agent(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = api_of(arg);
	Lanyard__Agent__V1__RenewAgentRequest *m = NULL;
	struct caller c;
	time_t now = ly_server_now();

	if (api == NULL || api->stopped || api->srv->ds == NULL || api->srv->ca == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "server not serving");
		return;
	}
	if (!authenticate(api, call, now, &c))
		return;
	if ((m = lanyard__agent__v1__renew_agent_request__unpack(NULL, len, req)) == NULL) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "malformed RenewAgentRequest");
	} else if (m->csr.len == 0 || m->csr.len > LY_CSR_DER_MAX) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "csr required, within its size cap");
	} else {
		enrol(api, call, c.rec->spiffe_id, c.rec->attestation_type, c.rec->selectors, c.rec->n_selectors,
		    m->csr.data, m->csr.len, c.rec, true, now);
	}
	if (m != NULL)
		lanyard__agent__v1__renew_agent_request__free_unpacked(m, NULL);
	caller_cleanup(&c);
}

/* ---- WatchEntries -------------------------------------------------------------------------------- */

static void
h_watch_entries(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = api_of(arg);
	Lanyard__Agent__V1__WatchEntriesRequest *m = NULL;
	struct watcher *w = NULL;
	struct caller c;
	struct ly_error e;
	time_t now = ly_server_now();

	if (api == NULL || api->stopped || api->srv->ds == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "server not serving");
		return;
	}
	if (!authenticate(api, call, now, &c))
		return;
	if ((m = lanyard__agent__v1__watch_entries_request__unpack(NULL, len, req)) == NULL ||
	    m->since_revision < 0) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "malformed WatchEntriesRequest");
		goto out;
	}
	if (cache_ensure(api, &e) != LY_OK) {
		log_error("watch of %s: %s", c.rec->spiffe_id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "entries unavailable, retry later");
		goto out;
	}
	/* One agent keeps few streams: a newer one replaces its oldest. */
	size_t mine = 0;
	struct watcher *oldest = NULL;
	for (struct watcher *x = api->w_head; x != NULL; x = x->next) {
		if (strcmp(x->agent_id, c.rec->spiffe_id) == 0 && mine++ == 0)
			oldest = x;
	}
	if (mine >= WATCHERS_PER_AGENT && oldest != NULL)
		watcher_end(oldest, LY_RPC_ABORTED, "replaced by a newer watch of the same agent");
	if (api->n_watchers >= WATCHERS_MAX) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "too many watches");
		goto out;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL || (w->agent_id = strdup(c.rec->spiffe_id)) == NULL ||
	    ly_selectors_copy(c.rec->selectors, c.rec->n_selectors, &w->sels, NULL) != LY_OK ||
	    ly_authz_watch_new(&w->watch, NULL) != LY_OK) {
		watcher_free(w);
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	w->n_sels = c.rec->n_selectors;
	w->api = api;
	w->call = call;
	memcpy(w->serial, c.serial, sizeof(w->serial));
	w->svid_expires = c.not_after;
	w->prev = api->w_tail;
	if (api->w_tail != NULL)
		api->w_tail->next = w;
	else
		api->w_head = w;
	api->w_tail = w;
	api->n_watchers++;
	ly_rpc_call_set_closed_cb(call, on_watch_closed, w);
	log_debug("watch of %s opened (since_revision=%" PRId64 ": answered with a snapshot)", w->agent_id,
	    m->since_revision);
	/* The snapshot, at once (since_revision is not used for deltas yet: docs/agent-api.md). */
	watcher_send(w, true);
out:
	if (m != NULL)
		lanyard__agent__v1__watch_entries_request__free_unpacked(m, NULL);
	caller_cleanup(&c);
}

/* ---- BatchNewX509SVID ------------------------------------------------------------------------------ */

/* Per-item messages (protobuf-c wants char *). */
static char msg_entry_id_malformed[] = "entry_id malformed";
static char msg_not_authorized[] = "entry not authorized for this agent";
static char msg_csr_size[] = "csr required, within its size cap";
static char msg_entry_id_unreadable[] = "entry SPIFFE ID unreadable";
static char msg_reserved_id[] = "entry SPIFFE ID is in Lanyard's reserved namespace: not issued";

static void
h_batch_new_x509_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = api_of(arg);
	Lanyard__Agent__V1__BatchNewX509SVIDRequest *m = NULL;
	Lanyard__Agent__V1__X509SVIDResult *results = NULL, **rptrs = NULL;
	struct ly_ca_sign_req *reqs = NULL;
	struct ly_ca_sign_res *res = NULL;
	struct ly_spiffe_id *ids = NULL;
	size_t *map = NULL, k = 0, signed_ok = 0;
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	struct caller c;
	struct ly_error e;
	time_t now = ly_server_now();

	if (api == NULL || api->stopped || api->srv->ds == NULL || api->srv->ca == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "server not serving");
		return;
	}
	if (!authenticate(api, call, now, &c))
		return;
	if ((m = lanyard__agent__v1__batch_new_x509_svidrequest__unpack(NULL, len, req)) == NULL) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "malformed BatchNewX509SVIDRequest");
		goto out;
	}
	if (m->n_params == 0 || m->n_params > LY_CA_BATCH_MAX) {
		char why[96];
		(void)snprintf(why, sizeof(why), "params: 1 to %d requests per batch", LY_CA_BATCH_MAX);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, why);
		goto out;
	}
	struct ly_authz_agent agent = { c.rec->spiffe_id, c.rec->selectors, c.rec->n_selectors };
	if (cache_ensure(api, &e) != LY_OK || ly_authz_authorized(api->index, &agent, &set, &e) != LY_OK) {
		log_error("batch of %s: %s", c.rec->spiffe_id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "entries unavailable, retry later");
		goto out;
	}
	size_t n = m->n_params;
	results = calloc(n, sizeof(*results));
	rptrs = calloc(n, sizeof(*rptrs));
	reqs = calloc(n, sizeof(*reqs));
	res = calloc(n, sizeof(*res));
	ids = calloc(n, sizeof(*ids));
	map = calloc(n, sizeof(*map));
	if (results == NULL || rptrs == NULL || reqs == NULL || res == NULL || ids == NULL || map == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const Lanyard__Agent__V1__X509SVIDParams *p = m->params[i];
		Lanyard__Agent__V1__X509SVIDResult *r = &results[i];
		const struct ly_entry *ent;
		lanyard__agent__v1__x509_svidresult__init(r);
		rptrs[i] = r;
		r->entry_id = p->entry_id;
		if (ly_entry_id_check(p->entry_id, NULL) != LY_OK) {
			r->entry_id = NULL; /* not echoed: it broke the rules */
			r->status_code = LY_RPC_INVALID_ARGUMENT;
			r->status_message = msg_entry_id_malformed;
		} else if ((ent = ly_authz_set_find(&set, p->entry_id)) == NULL) {
			/* The same answer for "absent" and "not yours": no probing of IDs. */
			r->status_code = LY_RPC_PERMISSION_DENIED;
			r->status_message = msg_not_authorized;
		} else if (p->csr.len == 0 || p->csr.len > LY_CSR_DER_MAX) {
			r->status_code = LY_RPC_INVALID_ARGUMENT;
			r->status_message = msg_csr_size;
		} else if (ly_spiffe_id_parse_str(ent->spiffe_id, &ids[k], NULL) != LY_OK) {
			r->status_code = LY_RPC_INTERNAL;
			r->status_message = msg_entry_id_unreadable;
		} else if (ly_spiffe_id_check_use(&ids[k], LY_ID_GRANTED, NULL) != LY_OK) {
			/* An entry stored before the reserved-ID rule (lib/spiffeid.h). */
			r->status_code = LY_RPC_PERMISSION_DENIED;
			r->status_message = msg_reserved_id;
		} else {
			r->spiffe_id = ent->spiffe_id;
			reqs[k].csr_der = p->csr.data;
			reqs[k].csr_len = p->csr.len;
			reqs[k].id = &ids[k];
			reqs[k].dns = (const char *const *)ent->dns_names;
			reqs[k].ndns = ent->n_dns_names;
			reqs[k].ttl_or_0 = ly_svid_ttl_floored(ent->x509_svid_ttl, LY_X509_SVID_TTL_MIN);
			map[k++] = i;
		}
	}
	if (k > 0 && ly_ca_sign_batch(api->srv->ca, reqs, k, now, res, &e) != LY_OK)
		log_error("batch of %s: %s", c.rec->spiffe_id, e.msg);
	for (size_t j = 0; j < k; j++) {
		Lanyard__Agent__V1__X509SVIDResult *r = &results[map[j]];
		if (res[j].status == LY_OK) {
			r->status_code = 0;
			r->cert_chain.data = res[j].chain.data;
			r->cert_chain.len = res[j].chain.len;
			r->expires_at = (int64_t)res[j].expires_at;
			signed_ok++;
		} else {
			r->status_code = (int32_t)sign_code(res[j].status);
			r->status_message = res[j].err.msg;
		}
	}
	log_debug("batch of %s: %zu requests, %zu signed", c.rec->spiffe_id, n, signed_ok);
	metric_add(api, MX_X509_WORKLOAD, NULL, (double)signed_ok);
	Lanyard__Agent__V1__BatchNewX509SVIDResponse resp;
	lanyard__agent__v1__batch_new_x509_svidresponse__init(&resp);
	resp.n_results = n;
	resp.results = rptrs;
	reply_msg(call, &resp.base, false);
out:
	if (res != NULL)
		ly_ca_sign_res_cleanup(res, k);
	free(res);
	free(reqs);
	free(ids);
	free(map);
	free(results);
	free(rptrs);
	ly_authz_set_cleanup(&set);
	if (m != NULL)
		lanyard__agent__v1__batch_new_x509_svidrequest__free_unpacked(m, NULL);
	caller_cleanup(&c);
}

/* ---- NewJWTSVID ------------------------------------------------------------------------------------ */

static void
h_new_jwt_svid(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = api_of(arg);
	Lanyard__Agent__V1__NewJWTSVIDRequest *m = NULL;
	ProtobufCMessage *pm = NULL;
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	const struct ly_entry *ent;
	struct ly_spiffe_id sub;
	struct caller c;
	struct ly_error e;
	char *token = NULL;
	time_t now = ly_server_now(), exp = 0;
	ly_status rc;

	if (api == NULL || api->stopped || api->srv->ds == NULL || api->srv->ca == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "server not serving");
		return;
	}
	if (!authenticate(api, call, now, &c))
		return;
	/* Strict, as the Workload API: an audience with a NUL would be signed cut at the NUL. */
	if (ly_pb_unpack_strict(&lanyard__agent__v1__new_jwtsvidrequest__descriptor, req, len, LY_RPC_MSG_MAX, NULL,
	    &pm, &e) != LY_OK) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "malformed NewJWTSVIDRequest", e.msg);
		goto out;
	}
	m = (Lanyard__Agent__V1__NewJWTSVIDRequest *)(void *)pm;
	if (ly_entry_id_check(m->entry_id, &e) != LY_OK) {
		finish(call, LY_RPC_INVALID_ARGUMENT, "entry_id", e.msg);
		goto out;
	}
	if (m->n_audience == 0 || m->n_audience > LY_JWT_AUDIENCES_MAX) {
		char why[64];
		(void)snprintf(why, sizeof(why), "audience: 1 to %d values", LY_JWT_AUDIENCES_MAX);
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, why);
		goto out;
	}
	size_t total = 0;
	for (size_t i = 0; i < m->n_audience; i++) {
		if (ly_text_check("audience", m->audience[i], LY_JWT_AUDIENCE_MAX, &e) != LY_OK) {
			finish(call, LY_RPC_INVALID_ARGUMENT, "NewJWTSVIDRequest", e.msg);
			goto out;
		}
		total += strlen(m->audience[i]);
	}
	if (total > LY_JWT_MAX) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "audience: too long for a JWT-SVID");
		goto out;
	}
	struct ly_authz_agent agent = { c.rec->spiffe_id, c.rec->selectors, c.rec->n_selectors };
	if (cache_ensure(api, &e) != LY_OK || ly_authz_authorized(api->index, &agent, &set, &e) != LY_OK) {
		log_error("JWT-SVID for %s: %s", c.rec->spiffe_id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "entries unavailable, retry later");
		goto out;
	}
	if ((ent = ly_authz_set_find(&set, m->entry_id)) == NULL) {
		ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, "entry not authorized for this agent");
		goto out;
	}
	if (ly_spiffe_id_parse_str(ent->spiffe_id, &sub, &e) != LY_OK) {
		finish(call, LY_RPC_INTERNAL, "entry SPIFFE ID", e.msg);
		goto out;
	}
	if (ly_spiffe_id_check_use(&sub, LY_ID_GRANTED, NULL) != LY_OK) {
		ly_rpc_call_finish(call, LY_RPC_PERMISSION_DENIED, msg_reserved_id);
		goto out;
	}
	rc = ly_ca_mint_jwt_svid(api->srv->ca, &sub, (const char *const *)m->audience, m->n_audience,
	    ly_svid_ttl_floored(ent->jwt_svid_ttl, LY_JWT_SVID_TTL_MIN), now, &token, &exp, &e);
	if (rc != LY_OK) {
		if (sign_code(rc) != LY_RPC_INVALID_ARGUMENT)
			log_error("JWT-SVID for %s: %s", ent->spiffe_id, e.msg);
		finish(call, sign_code(rc), "JWT-SVID refused", e.msg);
		goto out;
	}
	Lanyard__Agent__V1__NewJWTSVIDResponse resp;
	lanyard__agent__v1__new_jwtsvidresponse__init(&resp);
	resp.token = token;
	resp.issued_at = (int64_t)now;
	resp.expires_at = (int64_t)exp;
	log_debug("JWT-SVID for %s (entry %s, agent %s) until %lld", ent->spiffe_id, ent->entry_id, c.rec->spiffe_id,
	    (long long)exp);
	metric_add(api, MX_JWT, NULL, 1);
	reply_msg(call, &resp.base, true);
out:
	ly_free_secret_str(token);
	ly_authz_set_cleanup(&set);
	if (m != NULL)
		lanyard__agent__v1__new_jwtsvidrequest__free_unpacked(m, NULL);
	caller_cleanup(&c);
}

/* ---- GetBundle ----------------------------------------------------------------------------------------- */

static void
h_get_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = api_of(arg);
	Lanyard__Agent__V1__GetBundleRequest *m = NULL;
	struct pb_bundle pbb;
	struct caller c;
	struct ly_error e;

	if (api == NULL || api->stopped || api->srv->ds == NULL || api->srv->ca == NULL) {
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "server not serving");
		return;
	}
	if (!authenticate(api, call, ly_server_now(), &c))
		return;
	if ((m = lanyard__agent__v1__get_bundle_request__unpack(NULL, len, req)) == NULL) {
		ly_rpc_call_finish(call, LY_RPC_INVALID_ARGUMENT, "malformed GetBundleRequest");
	} else if (pb_bundle_make(ly_ca_bundle(api->srv->ca), &pbb, &e) != LY_OK) {
		finish(call, LY_RPC_INTERNAL, "bundle", e.msg);
	} else {
		reply_msg(call, &pbb.msg.base, false);
		pb_bundle_cleanup(&pbb);
	}
	if (m != NULL)
		lanyard__agent__v1__get_bundle_request__free_unpacked(m, NULL);
	caller_cleanup(&c);
}

/* ---- timers ------------------------------------------------------------------------------------------------ */

static void on_refresh(uv_timer_t *t);

static void
refresh_now(struct ly_agent_api *api)
{
	struct ly_error e;
	bool changed = false;

	if (api->stopped || api->srv->ds == NULL)
		return;
	uint64_t t0 = uv_hrtime();
	ly_status rc = cache_refresh(api, &changed, &e);
	if (rc == LY_OK && changed)
		watchers_send_all(api, false);
	api->refresh_end_ns = uv_hrtime();
	api->refresh_cost_ns = api->refresh_end_ns - t0;
	if (rc != LY_OK) {
		log_warn("entries not refreshed, retrying in %d ms: %s", REFRESH_RETRY_MS, e.msg);
		if (api->refresh_timer != NULL)
			uv_timer_start(api->refresh_timer, on_refresh, REFRESH_RETRY_MS, 0);
	}
}

static void
on_refresh(uv_timer_t *t)
{
	struct ly_agent_api *api = t->data;

	if (api != NULL)
		refresh_now(api);
}

static void
on_sweep(uv_timer_t *t)
{
	struct ly_agent_api *api = t->data;
	struct watcher *w, *next;

	if (api == NULL || api->stopped)
		return;
	time_t now = ly_server_now();
	pending_sweep(api, now);
	prev_sweep(api, now);
	for (w = api->w_head; w != NULL; w = next) {
		next = w->next;
		if (w->svid_expires <= now)
			watcher_end(w, LY_RPC_UNAUTHENTICATED, "agent SVID expired: reconnect with a renewed one");
	}
	if (++api->sweep_ticks >= POLL_TICKS) {
		api->sweep_ticks = 0;
		if (api->loaded)
			refresh_now(api);
	}
}

/* ---- the public API (server.h) ---------------------------------------------------------------------------- */

static const struct ly_rpc_method agent_methods[] = {
	{ METHOD("AttestAgent"), LY_RPC_UNARY, h_attest_agent },
	{ METHOD("RenewAgent"), LY_RPC_UNARY, h_renew_agent },
	{ METHOD("WatchEntries"), LY_RPC_SERVER_STREAM, h_watch_entries },
	{ METHOD("BatchNewX509SVID"), LY_RPC_UNARY, h_batch_new_x509_svid },
	{ METHOD("NewJWTSVID"), LY_RPC_UNARY, h_new_jwt_svid },
	{ METHOD("GetBundle"), LY_RPC_UNARY, h_get_bundle },
};

const struct ly_rpc_method *
ly_agent_api_methods(size_t *n)
{
	if (n != NULL)
		*n = sizeof(agent_methods) / sizeof(agent_methods[0]);
	return agent_methods;
}

ly_status
ly_agent_api_new(struct ly_server *srv, struct ly_agent_api **out, struct ly_error *err)
{
	struct ly_agent_api *api = NULL;

	if (srv == NULL || srv->loop == NULL || out == NULL)
		return ly_error_set(err, LY_E_INTERNAL, "agent API: missing server, loop or output");
	*out = NULL;
	if ((api = calloc(1, sizeof(*api))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "agent API: out of memory");
	api->srv = srv;
	for (size_t i = 0; i < PENDING_MAX; i++)
		api->pending[i].result = (struct ly_attest_result)LY_ATTEST_RESULT_INIT;
	api->refresh_timer = timer_new(srv->loop, api);
	api->sweep_timer = timer_new(srv->loop, api);
	if (api->refresh_timer == NULL || api->sweep_timer == NULL) {
		ly_agent_api_free(api);
		return ly_error_set(err, LY_E_NOMEM, "agent API: timers");
	}
	uv_timer_start(api->sweep_timer, on_sweep, SWEEP_MS, SWEEP_MS);
	*out = api;
	return LY_OK;
}

void
ly_agent_api_entries_changed(struct ly_agent_api *api)
{
	if (api == NULL || api->stopped || api->refresh_timer == NULL)
		return;
	/*
	 * Coalesced: one refresh for a burst of changes, on the next loop
	 * iteration when the server is idle. A refresh re-indexes every entry
	 * and diffs every watcher's set (~5 ms at 10,000 entries), so under a
	 * stream of changes the next one waits twice the last one's cost after
	 * it ended: the loop spends at most a third of its time refreshing,
	 * and entry creation no longer slows with the table (1,099/s for the
	 * first 1,000 entries, 172/s at 10,000 before). Revocation stays
	 * within a few milliseconds (docs/benchmarks.md).
	 */
	uint64_t now = uv_hrtime(), ready = api->refresh_end_ns + 2 * api->refresh_cost_ns;
	uint64_t delay_ms = now >= ready ? 0 : (ready - now + 999999) / 1000000;
	if (uv_is_active((uv_handle_t *)api->refresh_timer) && uv_timer_get_due_in(api->refresh_timer) <= delay_ms)
		return; /* already due no later */
	uv_timer_start(api->refresh_timer, on_refresh, delay_ms, 0);
}

void
ly_agent_api_bundle_changed(struct ly_agent_api *api)
{
	if (api == NULL || api->stopped)
		return;
	/* Every update carries bundle_sequence: the agents re-fetch with GetBundle. */
	watchers_send_all(api, true);
}

void
ly_agent_api_agent_removed(struct ly_agent_api *api, const char *agent_id)
{
	struct watcher *w, *next;
	struct ly_agent *rec = NULL;
	const char *why = "agent was evicted: it must attest again";

	if (api == NULL || agent_id == NULL || api->stopped)
		return;
	if (api->srv->ds != NULL && ly_datastore_agent_get(api->srv->ds, agent_id, &rec, NULL) == LY_OK &&
	    rec->banned)
		why = "agent is banned";
	ly_agent_free(rec);
	prev_remove(api, agent_id);
	pending_drop_agent(api, agent_id);
	for (w = api->w_head; w != NULL; w = next) {
		next = w->next;
		if (strcmp(w->agent_id, agent_id) == 0) {
			log_info("watch of %s ended: %s", agent_id, why);
			watcher_end(w, LY_RPC_PERMISSION_DENIED, why);
		}
	}
}

void
ly_agent_api_stop(struct ly_agent_api *api)
{
	if (api == NULL || api->stopped)
		return;
	api->stopped = true;
	while (api->w_head != NULL)
		watcher_end(api->w_head, LY_RPC_UNAVAILABLE, "server shutting down");
	/* Queued attestations are cancelled (their calls end in psat_after);
	 * running ones finish on their own (at most the attestor's timeouts). */
	for (struct psat_work *pw = api->psat; pw != NULL; pw = pw->next)
		(void)uv_cancel((uv_req_t *)&pw->req);
	timer_close(&api->refresh_timer);
	timer_close(&api->sweep_timer);
}

void
ly_agent_api_free(struct ly_agent_api *api)
{
	if (api == NULL)
		return;
	ly_agent_api_stop(api);
	/* Work still in flight outlives us: it ends its call by itself. */
	for (struct psat_work *pw = api->psat; pw != NULL; pw = pw->next)
		pw->api = NULL;
	api->psat = NULL;
	for (size_t i = 0; i < PENDING_MAX; i++)
		pending_clear(&api->pending[i]);
	while (api->prev != NULL)
		prev_remove(api, api->prev->agent_id);
	ly_authz_index_free(api->index);
	entries_free(api->entries, api->n_entries);
	free(api);
}
