/*
 * agentsim.c: many simulated lanyard-agents in one process, for the scale
 * proof of issue 16 (bench/ha-scale/run.sh drives it; not run by ctest).
 *
 *   bench_agentsim -servers HOST:PORT[,HOST:PORT...] -tokens FILE -bundle FILE
 *       [-td example.org] [-n N] [-ramp PER_S] [-resync S] [-mark ENTRY_ID]
 *       [-backoffMin MS] [-backoffMax MS] [-stat S] [-srcAddrs N]
 *
 * Each simulated agent is what lanyard-agent is to the server (docs/agent-api.md),
 * minus the Workload API: its own P-256 key, AttestAgent with its own join
 * token (line i of -tokens; the CSR names the default join-token ID, so one
 * round trip), then its own mTLS channel with its agent SVID, a WatchEntries
 * stream (snapshot then deltas, applied idempotently), BatchNewX509SVID for
 * every entry it is given (one CSR per entry, from one workload key per
 * simulated agent: the server's work per SVID is the same), renewals at 50%
 * of each SVID's lifetime, RenewAgent at 50% of its own (then a new channel,
 * as the agent does: a connection keeps its handshake's certificate), and
 * the agent's periodic resync (a second watch every -resync seconds whose
 * first update replaces the first; 0: none). Every watch is opened with the
 * revision of the last update applied (since_revision), as the agent does:
 * a server that answers with the changes since then sends a delta, others a
 * snapshot. Agent i starts on server i mod n;
 * when its watch fails it moves to the next address after an equal-jitter
 * exponential backoff (the agent's own: -backoffMin..-backoffMax).
 *
 * What it prints on stdout, one line each (times: CLOCK_REALTIME, ns):
 *   stat t=... agents= attested= served= backoff= failed= entries= svids= ...
 *                                   every -stat seconds
 *   revoked agent=I t=NS server=A   entry -mark left agent I's set (its watch on A)
 *   moved agent=I lost=NS back=NS from=A to=B tries=K
 *                                   agent I's watch failed at `lost` and a
 *                                   first update came from server B at `back`,
 *                                   after K backoff waits
 *   err agent=I what=W code=C msg   the first 50 failures, then only counted
 * Everything runs on one libuv loop; gRPC through rpc/ (ly_rpc).
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <uv.h>

#include "agent.pb-c.h"
#include "lib/buf.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/error.h"
#include "lib/keys.h"
#include "lib/spiffeid.h"
#include "lib/x509svid.h"
#include "rpc/rpc.h"

#define M_ATTEST "/lanyard.agent.v1.Agent/AttestAgent"
#define M_RENEW "/lanyard.agent.v1.Agent/RenewAgent"
#define M_WATCH "/lanyard.agent.v1.Agent/WatchEntries"
#define M_BATCH "/lanyard.agent.v1.Agent/BatchNewX509SVID"
#define M_BUNDLE "/lanyard.agent.v1.Agent/GetBundle"

#define BATCH_MAX 1024
#define ERR_PRINT_MAX 50
#define TOKEN_MAX 128
#define CALL_TIMEOUT_MS 60000

enum astate { ST_IDLE, ST_ATTEST, ST_CONNECTING, ST_SERVED, ST_BACKOFF, ST_FAILED };
enum ckind { C_ATTEST, C_RENEW, C_WATCH, C_BATCH, C_BUNDLE };

struct agent;

/* A channel and the calls still on it (freed when retired and the last one ended). */
struct chan {
	struct ly_rpc_channel *ch;
	unsigned ncalls;
	bool retired;
};

struct call {
	struct agent *a; /* NULL for the global GetBundle */
	struct chan *c;
	enum ckind kind;
	struct ly_rpc_ccall *cc;
	bool cancelled; /* by us: on_status ignores it */
	bool got;       /* watch: first message arrived */
	size_t *idx;    /* batch: entry indexes asked for, with their IDs */
	char **ids;
	size_t n;
	int64_t t_req;
	EVP_PKEY *newkey; /* renew: the key of the CSR sent */
};

struct ent {
	char *id;
	char *sid;
	int64_t renew_at; /* 0: no SVID yet */
	bool in_batch;
};

struct agent {
	struct sim *sim;
	unsigned idx;
	char token[TOKEN_MAX + 1];
	struct ly_spiffe_id id;
	EVP_PKEY *wkey;
	/* The attestation key, kept across retries: a server that used the token up and lost its answer
	 * answers it again only for this key (server/datastore.h, ly_datastore_token_consume). */
	EVP_PKEY *akey;
	struct ly_buf cert_pem, key_pem;
	int64_t svid_renew_at;
	unsigned addr;
	struct chan *chan;
	struct call *w, *wnext;
	enum astate st;
	unsigned attempt;
	struct ent *ents;
	size_t n_ents, cap_ents;
	struct call *batch, *renew; /* the one of each in flight */
	bool has_mark;
	int64_t revision; /* of the last update applied: the next watch's since_revision */
	uv_timer_t timer;
	int64_t t_lost;
	unsigned lost_from;
	int64_t next_resync;
};

struct sim {
	uv_loop_t *loop;
	struct ly_rpc *rpc;
	char **addrs;
	unsigned n_addrs;
	const char *td;
	char server_id[LY_SPIFFE_ID_MAX + 1];
	struct ly_buf bundle_pem;
	uint64_t bundle_seq;
	bool bundle_busy;
	struct agent *agents;
	unsigned n;
	double ramp;
	int64_t resync_s, backoff_min, backoff_max;
	const char *mark;
	uv_timer_t tick, stat;
	uv_signal_t sigterm, sigint;
	unsigned started;
	/* counters */
	uint64_t issued, renewed, agent_renewed, moves, revoked, watch_opened, snapshots, deltas;
	uint64_t errs, batch_errs, watch_errs, attest_errs, refused;
	double chan_new_ms; /* loop time spent making channels (credentials, TLS contexts) */
};

static double
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
now_s(void)
{
	return (int64_t)time(NULL);
}

static void report_err(struct sim *s, struct agent *a, const char *what, int code, const char *fmt, ...)
    LY_PRINTF(5, 6);

static void
report_err(struct sim *s, struct agent *a, const char *what, int code, const char *fmt, ...)
{
	s->errs++;
	if (s->errs > ERR_PRINT_MAX)
		return;
	va_list ap;
	printf("err agent=%d what=%s code=%d ", a != NULL ? (int)a->idx : -1, what, code);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* ---- source addresses ----------------------------------------------------------------------
 *
 * Real agents come from many hosts; ours all come from 127.0.0.1, and the server caps what one
 * peer address may hold (LY_RPC_CONNS_PER_ADDR_MAX connections, LY_RPC_CALLS_PER_ADDR_MAX
 * calls). With -srcAddrs N, every TCP connection gRPC makes to a 127/8 address is first bound
 * to one of 127.0.1.2, 127.0.1.3, ... (N addresses, round robin; all of 127/8 is local on
 * Linux). This process's own connect() comes before libc's for gRPC's calls (the executable's
 * symbol interposes), and goes to the system call itself.
 */
static unsigned src_addrs;
static atomic_uint src_next;

static uint32_t
src_addr(unsigned k)
{
	return 0x7f000000u | ((1u + k / 250u) << 8) | (2u + k % 250u);
}

int
connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	if (src_addrs > 0 && sa != NULL) {
		unsigned k = atomic_fetch_add(&src_next, 1u) % src_addrs;
		if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
			struct sockaddr_in to, from;
			memcpy(&to, sa, sizeof(to));
			if ((ntohl(to.sin_addr.s_addr) >> 24) == 127) {
				memset(&from, 0, sizeof(from));
				from.sin_family = AF_INET;
				from.sin_addr.s_addr = htonl(src_addr(k));
				(void)bind(fd, (const struct sockaddr *)&from, sizeof(from));
			}
		} else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
			/* gRPC's dual-stack sockets: IPv4 as ::ffff:a.b.c.d. */
			struct sockaddr_in6 to, from;
			memcpy(&to, sa, sizeof(to));
			if (IN6_IS_ADDR_V4MAPPED(&to.sin6_addr) && to.sin6_addr.s6_addr[12] == 127) {
				uint32_t v4 = htonl(src_addr(k));
				memset(&from, 0, sizeof(from));
				from.sin6_family = AF_INET6;
				from.sin6_addr.s6_addr[10] = 0xff;
				from.sin6_addr.s6_addr[11] = 0xff;
				memcpy(&from.sin6_addr.s6_addr[12], &v4, 4);
				(void)bind(fd, (const struct sockaddr *)&from, sizeof(from));
			}
		}
	}
	return (int)syscall(SYS_connect, fd, sa, len);
}

/* ---- channels --------------------------------------------------------------------------- */

static ly_status
tls_verify(void *arg, const char *leaf_pem, const char *chain_pem, struct ly_error *err)
{
	const struct sim *s = arg;
	struct ly_buf der = LY_BUF_INIT;
	struct ly_spiffe_id id;
	X509 *x = NULL;
	ly_status rc;

	(void)chain_pem;
	if (leaf_pem == NULL)
		return ly_error_set(err, LY_E_UNTRUSTED, "server certificate: none");
	if ((rc = ly_pem_to_der_certs(leaf_pem, strlen(leaf_pem), 1, 1 << 16, &der, err)) == LY_OK &&
	    (rc = ly_der_parse_one(der.data, der.len, &x, err)) == LY_OK &&
	    (rc = ly_x509svid_check_leaf(x, &id, err)) == LY_OK && strcmp(id.id, s->server_id) != 0)
		rc = ly_error_set(err, LY_E_UNTRUSTED, "server certificate: SPIFFE ID %s, expected %s", id.id,
		    s->server_id);
	X509_free(x);
	ly_buf_free(&der);
	return rc;
}

static void
chan_destroy(struct chan *c)
{
	if (c->ch != NULL)
		ly_rpc_channel_free(c->ch);
	free(c);
}

/* No new calls; cancel those on it (their on_status follows) and free it once they ended. */
static void
chan_kill(struct chan *c)
{
	if (c == NULL)
		return;
	c->retired = true;
	if (c->ncalls == 0) {
		chan_destroy(c);
		return;
	}
	ly_rpc_channel_free(c->ch);
	c->ch = NULL;
}

static struct chan *
chan_new(struct agent *a, bool mtls, struct ly_error *err)
{
	struct sim *s = a->sim;
	struct chan *c = calloc(1, sizeof(*c));
	struct ly_rpc_tls_client tls = {
		.root_pem = (const char *)s->bundle_pem.data,
		.cert_chain_pem = mtls ? (const char *)a->cert_pem.data : NULL,
		.key_pem = mtls ? (const char *)a->key_pem.data : NULL,
		.verify = tls_verify,
		.verify_arg = s,
	};
	struct ly_rpc_channel_config cfg = { .target = s->addrs[a->addr], .tls = &tls, .max_response = 0 };

	if (c == NULL) {
		(void)ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
		return NULL;
	}
	double t0 = mono_ms();
	ly_status rc = ly_rpc_channel_new(s->rpc, &cfg, &c->ch, err);
	s->chan_new_ms += mono_ms() - t0;
	if (rc != LY_OK) {
		free(c);
		return NULL;
	}
	return c;
}

static void call_on_msg(struct ly_rpc_ccall *cc, const uint8_t *msg, size_t len, void *arg);
static void call_on_status(struct ly_rpc_ccall *cc, enum ly_rpc_code code, const char *details, void *arg);

static void
call_free(struct call *k)
{
	if (k == NULL)
		return;
	for (size_t i = 0; i < k->n; i++)
		free(k->ids[i]);
	free(k->ids);
	free(k->idx);
	EVP_PKEY_free(k->newkey);
	free(k);
}

/* Starts `k` on its channel with `msg` (packed here). On error `k` is freed. */
static ly_status
call_start(struct call *k, const ProtobufCMessage *msg, enum ly_rpc_kind kind, const char *method, unsigned flags,
    struct ly_error *err)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(len > 0 ? len : 1);
	ly_status rc;

	if (buf == NULL) {
		call_free(k);
		return ly_error_set(err, LY_E_NOMEM, "%s: out of memory", method);
	}
	protobuf_c_message_pack(msg, buf);
	struct ly_rpc_call_config cfg = {
		.method = method,
		.kind = kind,
		.req = buf,
		.req_len = len,
		.flags = flags,
		.timeout_ms = kind == LY_RPC_UNARY ? CALL_TIMEOUT_MS : 0,
		.on_message = call_on_msg,
		.on_status = call_on_status,
		.arg = k,
	};
	k->t_req = now_s();
	rc = ly_rpc_channel_call(k->c->ch, &cfg, &k->cc, err);
	if (flags & LY_RPC_WIPE)
		OPENSSL_cleanse(buf, len);
	free(buf);
	if (rc != LY_OK) {
		call_free(k);
		return rc;
	}
	k->c->ncalls++;
	return LY_OK;
}

static struct call *
call_new(struct agent *a, struct chan *c, enum ckind kind)
{
	struct call *k = calloc(1, sizeof(*k));
	if (k != NULL) {
		k->a = a;
		k->c = c;
		k->kind = kind;
	}
	return k;
}

static void
call_cancel(struct call *k)
{
	if (k == NULL || k->cancelled)
		return;
	k->cancelled = true;
	ly_rpc_ccall_cancel(k->cc);
}

/* ---- the bundle (shared: one trust domain) ------------------------------------------------ */

static void
bundle_take(struct sim *s, const Lanyard__Agent__V1__Bundle *b)
{
	struct ly_buf der = LY_BUF_INIT, pem = LY_BUF_INIT;
	struct ly_error e;

	if (b == NULL || b->n_x509_authorities == 0 || (s->bundle_seq != 0 && b->sequence <= s->bundle_seq))
		return;
	for (size_t i = 0; i < b->n_x509_authorities; i++)
		if (ly_buf_append(&der, b->x509_authorities[i].data, b->x509_authorities[i].len, 1 << 20, &e) != LY_OK)
			goto out;
	if (ly_der_certs_to_pem(der.data, der.len, 64, 1 << 20, &pem, &e) != LY_OK) {
		report_err(s, NULL, "bundle", 0, "%s", e.msg);
		goto out;
	}
	ly_buf_free(&s->bundle_pem);
	ly_buf_take(&s->bundle_pem, &pem);
	s->bundle_seq = b->sequence;
out:
	ly_buf_free(&der);
	ly_buf_free(&pem);
}

static void
bundle_fetch(struct sim *s, struct agent *a)
{
	Lanyard__Agent__V1__GetBundleRequest req;
	struct ly_error e;
	struct call *k;

	if (s->bundle_busy || a->chan == NULL || (k = call_new(a, a->chan, C_BUNDLE)) == NULL)
		return;
	lanyard__agent__v1__get_bundle_request__init(&req);
	if (call_start(k, &req.base, LY_RPC_UNARY, M_BUNDLE, 0, &e) == LY_OK)
		s->bundle_busy = true;
}

/* ---- entries ---------------------------------------------------------------------------- */

static int
ent_cmp(const void *x, const void *y)
{
	return strcmp(((const struct ent *)x)->id, ((const struct ent *)y)->id);
}

static int
ent_key_cmp(const void *key, const void *y)
{
	return strcmp(key, ((const struct ent *)y)->id);
}

static struct ent *
ent_find(struct agent *a, const char *id)
{
	return bsearch(id, a->ents, a->n_ents, sizeof(*a->ents), ent_key_cmp);
}

static void
ent_clear(struct ent *e)
{
	free(e->id);
	free(e->sid);
}

static bool
ent_reserve(struct agent *a, size_t n)
{
	if (n <= a->cap_ents)
		return true;
	size_t cap = a->cap_ents ? a->cap_ents : 16;
	while (cap < n)
		cap *= 2;
	struct ent *p = realloc(a->ents, cap * sizeof(*p));
	if (p == NULL)
		return false;
	a->ents = p;
	a->cap_ents = cap;
	return true;
}

/* Upserts one entry (keeps its SVID when its SPIFFE ID did not change). */
static void
ent_upsert(struct agent *a, const char *id, const char *sid)
{
	struct ent *e = ent_find(a, id);
	if (e != NULL) {
		if (strcmp(e->sid, sid) != 0) {
			char *n = strdup(sid);
			if (n != NULL) {
				free(e->sid);
				e->sid = n;
				e->renew_at = 0;
			}
		}
		return;
	}
	if (!ent_reserve(a, a->n_ents + 1))
		return;
	struct ent ne = { .id = strdup(id), .sid = strdup(sid) };
	if (ne.id == NULL || ne.sid == NULL) {
		ent_clear(&ne);
		return;
	}
	size_t lo = 0, hi = a->n_ents;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(a->ents[mid].id, id) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(&a->ents[lo + 1], &a->ents[lo], (a->n_ents - lo) * sizeof(*a->ents));
	a->ents[lo] = ne;
	a->n_ents++;
}

static void
ent_delete(struct agent *a, const char *id)
{
	struct ent *e = ent_find(a, id);
	if (e == NULL)
		return;
	size_t i = (size_t)(e - a->ents);
	ent_clear(e);
	memmove(&a->ents[i], &a->ents[i + 1], (a->n_ents - i - 1) * sizeof(*a->ents));
	a->n_ents--;
}

/* A snapshot: the set becomes exactly `m`'s entries; those already held keep their SVIDs. */
static void
ent_snapshot(struct agent *a, const Lanyard__Agent__V1__EntriesUpdate *m)
{
	struct ent *old = a->ents;
	size_t n_old = a->n_ents;
	struct ent *nw = calloc(m->n_entries > 0 ? m->n_entries : 1, sizeof(*nw));
	size_t n = 0;

	if (nw == NULL)
		return;
	for (size_t i = 0; i < m->n_entries; i++) {
		const Lanyard__Agent__V1__Entry *pe = m->entries[i];
		if (pe == NULL || pe->entry_id == NULL || pe->spiffe_id == NULL)
			continue;
		nw[n].id = strdup(pe->entry_id);
		nw[n].sid = strdup(pe->spiffe_id);
		if (nw[n].id == NULL || nw[n].sid == NULL) {
			ent_clear(&nw[n]);
			continue;
		}
		struct ent *e = ent_find(a, pe->entry_id);
		if (e != NULL && strcmp(e->sid, pe->spiffe_id) == 0) {
			nw[n].renew_at = e->renew_at;
			nw[n].in_batch = e->in_batch;
		}
		n++;
	}
	qsort(nw, n, sizeof(*nw), ent_cmp);
	for (size_t i = 0; i < n_old; i++)
		ent_clear(&old[i]);
	free(old);
	a->ents = nw;
	a->n_ents = n;
	a->cap_ents = m->n_entries > 0 ? m->n_entries : 1;
}

/* ---- issuance and renewal --------------------------------------------------------------- */

static void
batch_kick(struct agent *a)
{
	struct sim *s = a->sim;
	Lanyard__Agent__V1__BatchNewX509SVIDRequest req;
	Lanyard__Agent__V1__X509SVIDParams *pp = NULL, **pv = NULL;
	struct ly_buf *csrs = NULL;
	struct ly_error e;
	struct call *k = NULL;
	int64_t now = now_s();
	size_t n = 0;

	if (a->batch != NULL || a->st != ST_SERVED || a->chan == NULL)
		return;
	for (size_t i = 0; i < a->n_ents && n < BATCH_MAX; i++)
		if (!a->ents[i].in_batch && a->ents[i].renew_at <= now)
			n++;
	if (n == 0)
		return;
	if ((k = call_new(a, a->chan, C_BATCH)) == NULL || (k->idx = calloc(n, sizeof(*k->idx))) == NULL ||
	    (k->ids = calloc(n, sizeof(*k->ids))) == NULL || (pp = calloc(n, sizeof(*pp))) == NULL ||
	    (pv = calloc(n, sizeof(*pv))) == NULL || (csrs = calloc(n, sizeof(*csrs))) == NULL)
		goto fail;
	for (size_t i = 0; i < a->n_ents && k->n < n; i++) {
		struct ent *en = &a->ents[i];
		struct ly_spiffe_id sid;
		if (en->in_batch || en->renew_at > now)
			continue;
		if (ly_spiffe_id_parse_str(en->sid, &sid, &e) != LY_OK ||
		    ly_csr_build(a->wkey, &sid, NULL, 0, &csrs[k->n], &e) != LY_OK) {
			report_err(s, a, "csr", 0, "%s: %s", en->sid, e.msg);
			en->renew_at = now + 3600; /* do not spin on it */
			continue;
		}
		if ((k->ids[k->n] = strdup(en->id)) == NULL)
			goto fail;
		lanyard__agent__v1__x509_svidparams__init(&pp[k->n]);
		pp[k->n].entry_id = en->id;
		pp[k->n].csr.data = csrs[k->n].data;
		pp[k->n].csr.len = csrs[k->n].len;
		pv[k->n] = &pp[k->n];
		k->idx[k->n] = i;
		k->n++;
	}
	if (k->n == 0)
		goto fail;
	lanyard__agent__v1__batch_new_x509_svidrequest__init(&req);
	req.n_params = k->n;
	req.params = pv;
	struct call *kk = k;
	k = NULL; /* call_start owns it now */
	if (call_start(kk, &req.base, LY_RPC_UNARY, M_BATCH, 0, &e) != LY_OK) {
		report_err(s, a, "batch", 0, "%s", e.msg);
		goto out;
	}
	for (size_t i = 0; i < kk->n; i++) {
		struct ent *en = ent_find(a, kk->ids[i]);
		if (en != NULL)
			en->in_batch = true;
	}
	a->batch = kk;
	goto out;
fail:
	call_free(k);
out:
	if (csrs != NULL)
		for (size_t i = 0; i < n; i++)
			ly_buf_free(&csrs[i]);
	free(csrs);
	free(pp);
	free(pv);
}

static void
batch_done(struct call *k, const uint8_t *msg, size_t len)
{
	struct agent *a = k->a;
	struct sim *s = a->sim;
	Lanyard__Agent__V1__BatchNewX509SVIDResponse *r =
	    lanyard__agent__v1__batch_new_x509_svidresponse__unpack(NULL, len, msg);
	int64_t now = now_s();

	if (r == NULL) {
		s->batch_errs++;
		return;
	}
	for (size_t i = 0; i < r->n_results; i++) {
		const Lanyard__Agent__V1__X509SVIDResult *res = r->results[i];
		if (res == NULL || res->entry_id == NULL)
			continue;
		struct ent *en = ent_find(a, res->entry_id);
		if (en == NULL)
			continue;
		if (res->status_code != 0 || res->cert_chain.len == 0) {
			s->refused++;
			report_err(s, a, "svid", res->status_code, "%s: %s", res->entry_id,
			    res->status_message != NULL ? res->status_message : "");
			en->renew_at = now + 30;
			continue;
		}
		if (en->renew_at == 0)
			s->issued++;
		else
			s->renewed++;
		int64_t exp = res->expires_at > k->t_req ? res->expires_at : k->t_req + 2;
		en->renew_at = k->t_req + (exp - k->t_req) / 2;
	}
	lanyard__agent__v1__batch_new_x509_svidresponse__free_unpacked(r, NULL);
}

static void
renew_agent(struct agent *a)
{
	Lanyard__Agent__V1__RenewAgentRequest req;
	struct ly_buf csr = LY_BUF_INIT;
	struct ly_error e;
	struct call *k;
	EVP_PKEY *key = NULL;

	if (a->renew != NULL || a->st != ST_SERVED || a->chan == NULL)
		return;
	if (ly_key_generate(LY_KEY_EC_P256, &key, &e) != LY_OK || ly_csr_build(key, &a->id, NULL, 0, &csr, &e) != LY_OK) {
		report_err(a->sim, a, "renew", 0, "%s", e.msg);
		EVP_PKEY_free(key);
		return;
	}
	if ((k = call_new(a, a->chan, C_RENEW)) == NULL) {
		EVP_PKEY_free(key);
		ly_buf_free(&csr);
		return;
	}
	k->newkey = key;
	lanyard__agent__v1__renew_agent_request__init(&req);
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (call_start(k, &req.base, LY_RPC_UNARY, M_RENEW, 0, &e) != LY_OK)
		report_err(a->sim, a, "renew", 0, "%s", e.msg);
	else
		a->renew = k;
	ly_buf_free(&csr);
}

/* An AgentSVID: our certificate (PEM) and its renewal time; `key` becomes ours. */
static ly_status
svid_take(struct agent *a, const Lanyard__Agent__V1__AgentSVID *sv, EVP_PKEY *key, int64_t t_req,
    struct ly_error *err)
{
	struct ly_buf pem = LY_BUF_INIT, kpem = LY_BUF_INIT;

	if (sv == NULL || sv->spiffe_id == NULL || strcmp(sv->spiffe_id, a->id.id) != 0 || sv->cert_chain.len == 0)
		return ly_error_set(err, LY_E_INVALID, "agent SVID: missing, or not for %s", a->id.id);
	LY_TRY(ly_der_certs_to_pem(sv->cert_chain.data, sv->cert_chain.len, 16, 1 << 16, &pem, err));
	if (ly_key_to_pem(key, &kpem, err) != LY_OK) {
		ly_buf_free(&pem);
		return err->code;
	}
	ly_buf_free(&a->cert_pem);
	ly_buf_free_secret(&a->key_pem);
	ly_buf_take(&a->cert_pem, &pem);
	ly_buf_take(&a->key_pem, &kpem);
	int64_t exp = sv->expires_at > t_req ? sv->expires_at : t_req + 2;
	a->svid_renew_at = t_req + (exp - t_req) / 2;
	bundle_take(a->sim, sv->bundle);
	return LY_OK;
}

/* ---- connection: attest, watch, move ------------------------------------------------------ */

static void conn_timer(uv_timer_t *t);

static void
set_timer(struct agent *a, uint64_t ms)
{
	uv_timer_start(&a->timer, conn_timer, ms, 0);
}

static uint64_t
backoff_ms(struct sim *s, unsigned attempt)
{
	uint64_t step = (uint64_t)s->backoff_min;
	uint32_t rnd;

	for (unsigned i = 0; i < attempt && step < (uint64_t)s->backoff_max; i++)
		step *= 2;
	if (step > (uint64_t)s->backoff_max)
		step = (uint64_t)s->backoff_max;
	if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
		rnd = (uint32_t)random();
	uint64_t half = step / 2;
	return step - half + rnd % (half + 1);
}

/* Drops the channel and its calls, then tries the next server after a backoff. */
static void
lose(struct agent *a, const char *why, enum ly_rpc_code code, const char *details)
{
	struct sim *s = a->sim;

	if (a->st == ST_SERVED) {
		a->t_lost = now_ns();
		a->lost_from = a->addr;
	}
	if (a->st == ST_SERVED || a->st == ST_CONNECTING)
		report_err(s, a, why, (int)code, "%s (%s)", details, s->addrs[a->addr]);
	call_cancel(a->w);
	call_cancel(a->wnext);
	call_cancel(a->batch);
	call_cancel(a->renew);
	a->w = a->wnext = a->batch = a->renew = NULL;
	chan_kill(a->chan);
	a->chan = NULL;
	for (size_t i = 0; i < a->n_ents; i++)
		a->ents[i].in_batch = false;
	a->st = ST_BACKOFF;
	a->addr = (a->addr + 1) % s->n_addrs;
	set_timer(a, backoff_ms(s, a->attempt++));
}

static void
watch_open(struct agent *a)
{
	Lanyard__Agent__V1__WatchEntriesRequest req;
	struct ly_error e;
	struct call *k;

	if (a->chan == NULL || a->wnext != NULL || (k = call_new(a, a->chan, C_WATCH)) == NULL)
		return;
	lanyard__agent__v1__watch_entries_request__init(&req);
	req.since_revision = a->revision;
	if (call_start(k, &req.base, LY_RPC_SERVER_STREAM, M_WATCH, 0, &e) != LY_OK) {
		lose(a, "watch", 0, e.msg);
		return;
	}
	a->sim->watch_opened++;
	if (a->w == NULL)
		a->w = k;
	else
		a->wnext = k;
}

static void
connect_agent(struct agent *a)
{
	struct ly_error e;

	if ((a->chan = chan_new(a, true, &e)) == NULL) {
		lose(a, "channel", 0, e.msg);
		return;
	}
	if (a->st != ST_BACKOFF && a->st != ST_ATTEST)
		a->t_lost = 0;
	a->st = ST_CONNECTING;
	watch_open(a);
}

static void
attest(struct agent *a)
{
	struct sim *s = a->sim;
	Lanyard__Agent__V1__AttestAgentRequest req;
	Lanyard__Agent__V1__JoinTokenAttestation jt;
	struct ly_buf csr = LY_BUF_INIT;
	struct ly_error e;
	struct call *k;
	EVP_PKEY *key = NULL;

	a->st = ST_ATTEST;
	if ((a->akey == NULL && ly_key_generate(LY_KEY_EC_P256, &a->akey, &e) != LY_OK) ||
	    ly_csr_build(a->akey, &a->id, NULL, 0, &csr, &e) != LY_OK) {
		report_err(s, a, "attest", 0, "%s", e.msg);
		a->st = ST_FAILED;
		return;
	}
	if (EVP_PKEY_up_ref(a->akey) != 1) {
		report_err(s, a, "attest", 0, "key reference");
		ly_buf_free(&csr);
		a->st = ST_FAILED;
		return;
	}
	key = a->akey; /* the call's reference */
	if ((a->chan = chan_new(a, false, &e)) == NULL || (k = call_new(a, a->chan, C_ATTEST)) == NULL) {
		EVP_PKEY_free(key);
		ly_buf_free(&csr);
		lose(a, "attest", 0, "no channel");
		return;
	}
	k->newkey = key;
	lanyard__agent__v1__attest_agent_request__init(&req);
	lanyard__agent__v1__join_token_attestation__init(&jt);
	jt.token = a->token;
	req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN;
	req.join_token = &jt;
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (call_start(k, &req.base, LY_RPC_UNARY, M_ATTEST, LY_RPC_WIPE, &e) != LY_OK)
		lose(a, "attest", 0, e.msg);
	ly_buf_free(&csr);
}

static void
conn_timer(uv_timer_t *t)
{
	struct agent *a = t->data;

	if (a->cert_pem.len == 0)
		attest(a);
	else
		connect_agent(a);
}

static void
watch_msg(struct call *k, const uint8_t *msg, size_t len)
{
	struct agent *a = k->a;
	struct sim *s = a->sim;
	Lanyard__Agent__V1__EntriesUpdate *m = lanyard__agent__v1__entries_update__unpack(NULL, len, msg);
	int64_t t = now_ns();

	if (m == NULL) {
		report_err(s, a, "watch", 0, "an update that does not unpack");
		return;
	}
	if (k == a->wnext) {
		/* The replacement's first update: it takes over. */
		call_cancel(a->w);
		a->w = a->wnext;
		a->wnext = NULL;
	}
	if (k != a->w)
		goto out;
	bool first = !k->got;
	k->got = true;
	if (m->snapshot) {
		s->snapshots++;
		ent_snapshot(a, m);
	} else {
		s->deltas++;
		for (size_t i = 0; i < m->n_entries; i++)
			if (m->entries[i] != NULL && m->entries[i]->entry_id != NULL && m->entries[i]->spiffe_id != NULL)
				ent_upsert(a, m->entries[i]->entry_id, m->entries[i]->spiffe_id);
		for (size_t i = 0; i < m->n_deleted_entry_ids; i++)
			if (m->deleted_entry_ids[i] != NULL)
				ent_delete(a, m->deleted_entry_ids[i]);
	}
	if (m->revision > 0)
		a->revision = m->revision;
	if (s->mark != NULL) {
		bool has = ent_find(a, s->mark) != NULL;
		if (a->has_mark && !has) {
			s->revoked++;
			printf("revoked agent=%u t=%" PRId64 " server=%s\n", a->idx, t, s->addrs[a->addr]);
		}
		a->has_mark = has;
	}
	if (first && a->st != ST_SERVED) {
		if (a->t_lost != 0) {
			s->moves++;
			printf("moved agent=%u lost=%" PRId64 " back=%" PRId64 " from=%s to=%s tries=%u\n", a->idx, a->t_lost,
			    t, s->addrs[a->lost_from], s->addrs[a->addr], a->attempt);
			a->t_lost = 0;
		}
		a->st = ST_SERVED;
		a->attempt = 0;
	}
	if (m->bundle_sequence > s->bundle_seq)
		bundle_fetch(s, a);
	batch_kick(a);
out:
	lanyard__agent__v1__entries_update__free_unpacked(m, NULL);
}

static void
call_on_msg(struct ly_rpc_ccall *cc, const uint8_t *msg, size_t len, void *arg)
{
	struct call *k = arg;
	struct ly_error e;

	(void)cc;
	if (k->cancelled)
		return;
	switch (k->kind) {
	case C_ATTEST: {
		Lanyard__Agent__V1__AttestAgentResponse *r = lanyard__agent__v1__attest_agent_response__unpack(NULL, len, msg);
		if (r == NULL || svid_take(k->a, r->svid, k->newkey, k->t_req, &e) != LY_OK)
			report_err(k->a->sim, k->a, "attest", 0, "%s", r == NULL ? "answer does not unpack" : e.msg);
		else
			k->newkey = NULL;
		if (r != NULL)
			lanyard__agent__v1__attest_agent_response__free_unpacked(r, NULL);
		break;
	}
	case C_RENEW: {
		Lanyard__Agent__V1__AgentSVID *r = lanyard__agent__v1__agent_svid__unpack(NULL, len, msg);
		if (r == NULL || svid_take(k->a, r, k->newkey, k->t_req, &e) != LY_OK) {
			report_err(k->a->sim, k->a, "renew", 0, "%s", r == NULL ? "answer does not unpack" : e.msg);
		} else {
			k->newkey = NULL;
			k->a->sim->agent_renewed++;
		}
		if (r != NULL)
			lanyard__agent__v1__agent_svid__free_unpacked(r, NULL);
		break;
	}
	case C_WATCH:
		watch_msg(k, msg, len);
		break;
	case C_BATCH:
		batch_done(k, msg, len);
		break;
	case C_BUNDLE: {
		Lanyard__Agent__V1__Bundle *b = lanyard__agent__v1__bundle__unpack(NULL, len, msg);
		if (b != NULL) {
			bundle_take(k->a->sim, b);
			lanyard__agent__v1__bundle__free_unpacked(b, NULL);
		}
		break;
	}
	}
}

static void
call_on_status(struct ly_rpc_ccall *cc, enum ly_rpc_code code, const char *details, void *arg)
{
	struct call *k = arg;
	struct agent *a = k->a;
	struct sim *s = a->sim;
	struct chan *c = k->c;
	bool live = !k->cancelled && !c->retired;

	(void)cc;
	/* This call still counts on `c` until the end, so nothing below frees `c`. */
	if (k->kind == C_BUNDLE)
		s->bundle_busy = false;
	if (a->w == k)
		a->w = NULL;
	if (a->wnext == k)
		a->wnext = NULL;
	if (a->renew == k)
		a->renew = NULL;
	if (a->batch == k) {
		a->batch = NULL;
		for (size_t i = 0; i < k->n; i++) {
			struct ent *en = ent_find(a, k->ids[i]);
			if (en != NULL)
				en->in_batch = false;
		}
	}
	if (!live)
		goto out;
	switch (k->kind) {
	case C_ATTEST:
		chan_kill(a->chan);
		a->chan = NULL;
		if (code == LY_RPC_OK && a->cert_pem.len > 0) {
			a->attempt = 0;
			connect_agent(a);
		} else if (code == LY_RPC_UNAVAILABLE || code == LY_RPC_RESOURCE_EXHAUSTED ||
		    code == LY_RPC_DEADLINE_EXCEEDED) {
			s->attest_errs++;
			report_err(s, a, "attest", (int)code, "%s (retrying)", details);
			a->st = ST_BACKOFF;
			a->addr = (a->addr + 1) % s->n_addrs;
			set_timer(a, backoff_ms(s, a->attempt++));
		} else {
			s->attest_errs++;
			report_err(s, a, "attest", (int)code, "%s (giving up)", details);
			a->st = ST_FAILED;
		}
		break;
	case C_RENEW:
		if (code != LY_RPC_OK) {
			report_err(s, a, "renew", (int)code, "%s", details);
			a->svid_renew_at = now_s() + 5;
			break;
		}
		/* A new channel with the new SVID; its watch's snapshot retires the old one. */
		{
			struct ly_error e;
			struct chan *nc = chan_new(a, true, &e);
			if (nc == NULL) {
				lose(a, "channel", 0, e.msg);
				break;
			}
			call_cancel(a->wnext);
			a->wnext = NULL;
			struct chan *old = a->chan;
			a->chan = nc;
			watch_open(a);
			if (old != NULL) {
				/* Its calls (the old watch) go on until the new snapshot. */
				old->retired = true;
				if (old->ncalls == 0)
					chan_destroy(old);
			}
		}
		break;
	case C_WATCH:
		if (code == LY_RPC_OK) {
			/* "watch rebased": reopen now. */
			watch_open(a);
			break;
		}
		s->watch_errs++;
		lose(a, "watch", code, details);
		break;
	case C_BATCH:
		if (code != LY_RPC_OK) {
			s->batch_errs++;
			report_err(s, a, "batch", (int)code, "%s", details);
			break;
		}
		batch_kick(a);
		break;
	case C_BUNDLE:
		break;
	}
out:
	c->ncalls--;
	if (c->retired && c->ncalls == 0)
		chan_destroy(c);
	call_free(k);
}

/* ---- timers: start-up ramp, renewals, resync, statistics ----------------------------------- */

static void
on_tick(uv_timer_t *t)
{
	struct sim *s = t->data;
	int64_t now = now_s();

	/* Ramp: start the next agents (the tick runs every 100 ms). */
	unsigned want = s->ramp <= 0 ? s->n : (unsigned)(s->ramp / 10.0 + 0.999);
	for (unsigned i = 0; i < want && s->started < s->n; i++) {
		struct agent *a = &s->agents[s->started++];
		set_timer(a, 0);
	}
	static int64_t last;
	if (now == last)
		return;
	last = now;
	for (unsigned i = 0; i < s->n; i++) {
		struct agent *a = &s->agents[i];
		if (a->st != ST_SERVED)
			continue;
		if (a->svid_renew_at != 0 && now >= a->svid_renew_at)
			renew_agent(a);
		if (s->resync_s > 0 && now >= a->next_resync) {
			a->next_resync = now + s->resync_s;
			if (a->wnext == NULL)
				watch_open(a);
		}
		batch_kick(a);
	}
}

static void
on_stat(uv_timer_t *t)
{
	struct sim *s = t->data;
	unsigned cnt[ST_FAILED + 1] = { 0 };
	uint64_t ents = 0, svids = 0, marked = 0, attested = 0;

	for (unsigned i = 0; i < s->n; i++) {
		struct agent *a = &s->agents[i];
		cnt[a->st]++;
		attested += a->cert_pem.len > 0;
		marked += a->has_mark;
		ents += a->n_ents;
		for (size_t j = 0; j < a->n_ents; j++)
			svids += a->ents[j].renew_at != 0;
	}
	/* served_by=A/B/...: agents served by each address of -servers, in order. */
	char by[256];
	size_t off = 0;
	by[0] = '\0';
	for (unsigned j = 0; j < s->n_addrs && off < sizeof(by) - 16; j++) {
		unsigned c = 0;
		for (unsigned i = 0; i < s->n; i++)
			c += s->agents[i].st == ST_SERVED && s->agents[i].addr == j;
		int w = snprintf(by + off, sizeof(by) - off, "%s%u", j > 0 ? "/" : "", c);
		if (w < 0)
			break;
		off += (size_t)w;
	}
	int64_t t_ns = now_ns();
	printf("stat t=%" PRId64 ".%03d agents=%u started=%u attested=%" PRIu64 " served=%u connecting=%u backoff=%u "
	       "failed=%u entries=%" PRIu64 " svids=%" PRIu64 " marked=%" PRIu64 " issued=%" PRIu64 " renewed=%" PRIu64
	       " agent_renewed=%" PRIu64 " watches=%" PRIu64 " snapshots=%" PRIu64 " deltas=%" PRIu64 " moves=%" PRIu64
	       " revoked=%" PRIu64 " errs=%" PRIu64 " batch_errs=%" PRIu64 " watch_errs=%" PRIu64
	       " attest_errs=%" PRIu64 " refused=%" PRIu64 " served_by=%s chan_new_ms=%.0f\n",
	    t_ns / 1000000000, (int)(t_ns / 1000000 % 1000), s->n, s->started, attested, cnt[ST_SERVED],
	    cnt[ST_CONNECTING], cnt[ST_BACKOFF], cnt[ST_FAILED], ents, svids, marked, s->issued, s->renewed,
	    s->agent_renewed, s->watch_opened, s->snapshots, s->deltas, s->moves, s->revoked, s->errs, s->batch_errs,
	    s->watch_errs, s->attest_errs, s->refused, by, s->chan_new_ms);
	fflush(stdout);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	(void)signum;
	fflush(stdout);
	uv_stop(h->loop);
}

/* ---- set-up ------------------------------------------------------------------------------ */

static ly_status
read_tokens(struct sim *s, const char *path, unsigned want, struct ly_error *err)
{
	FILE *f = fopen(path, "r");
	char line[512];
	unsigned cap = 0;

	if (f == NULL)
		return ly_error_set(err, LY_E_IO, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL && (want == 0 || s->n < want)) {
		size_t l = strcspn(line, " \t\r\n");
		if (l == 0)
			continue;
		if (l > TOKEN_MAX) {
			fclose(f);
			return ly_error_set(err, LY_E_INVALID, "%s: token on line %u longer than %d bytes", path, s->n + 1,
			    TOKEN_MAX);
		}
		if (s->n == cap) {
			cap = cap ? cap * 2 : 256;
			struct agent *p = realloc(s->agents, cap * sizeof(*p));
			if (p == NULL) {
				fclose(f);
				return ly_error_set(err, LY_E_NOMEM, "tokens: out of memory");
			}
			s->agents = p;
		}
		struct agent *a = &s->agents[s->n];
		memset(a, 0, sizeof(*a));
		memcpy(a->token, line, l);
		a->token[l] = '\0';
		char id[LY_SPIFFE_ID_MAX + 1];
		int n = snprintf(id, sizeof(id), "spiffe://%s/lanyard/agent/join_token/%s", s->td, a->token);
		if (n < 0 || (size_t)n >= sizeof(id) || ly_spiffe_id_parse_str(id, &a->id, err) != LY_OK) {
			fclose(f);
			return ly_error_set(err, LY_E_INVALID, "%s: line %u: not a usable join token", path, s->n + 1);
		}
		s->n++;
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (s->n == 0)
		return ly_error_set(err, LY_E_INVALID, "%s: no tokens", path);
	if (want != 0 && s->n < want)
		return ly_error_set(err, LY_E_INVALID, "%s: %u tokens, %u agents asked for", path, s->n, want);
	return LY_OK;
}

static ly_status
split_addrs(struct sim *s, const char *list, struct ly_error *err)
{
	char *copy = strdup(list), *save = NULL;
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	for (char *p = strtok_r(copy, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		char **n = realloc(s->addrs, (s->n_addrs + 1) * sizeof(*n));
		if (n == NULL || (n[s->n_addrs] = strdup(p)) == NULL) {
			free(copy);
			if (n != NULL)
				s->addrs = n;
			return ly_error_set(err, LY_E_NOMEM, "out of memory");
		}
		s->addrs = n;
		s->n_addrs++;
	}
	free(copy);
	if (s->n_addrs == 0)
		return ly_error_set(err, LY_E_INVALID, "-servers: no address");
	return LY_OK;
}

static int
usage(void)
{
	fprintf(stderr, "usage: bench_agentsim -servers HOST:PORT[,...] -tokens FILE -bundle FILE [-td TD] [-n N]\n"
			"       [-ramp AGENTS_PER_S] [-resync S] [-mark ENTRY_ID] [-backoffMin MS] [-backoffMax MS]\n"
			"       [-stat S] [-srcAddrs N]\n");
	return 2;
}

static bool
num_arg(const char *v, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi)
		return false;
	*out = x;
	return true;
}

int
main(int argc, char **argv)
{
	struct sim s = { .td = "example.org", .ramp = 200, .resync_s = 5, .backoff_min = 200, .backoff_max = 30000 };
	const char *servers = NULL, *tokens = NULL, *bundle = NULL;
	long long n = 0, stat_s = 1, v;
	struct ly_error e;
	uv_loop_t loop;

	for (int i = 1; i < argc; i++) {
		const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (val == NULL)
			return usage();
		i++;
		if (strcmp(f, "-servers") == 0)
			servers = val;
		else if (strcmp(f, "-tokens") == 0)
			tokens = val;
		else if (strcmp(f, "-bundle") == 0)
			bundle = val;
		else if (strcmp(f, "-td") == 0)
			s.td = val;
		else if (strcmp(f, "-mark") == 0)
			s.mark = val;
		else if (strcmp(f, "-n") == 0 && num_arg(val, 1, 1000000, &v))
			n = v;
		else if (strcmp(f, "-ramp") == 0 && num_arg(val, 0, 1000000, &v))
			s.ramp = (double)v;
		else if (strcmp(f, "-resync") == 0 && num_arg(val, 0, 86400, &v))
			s.resync_s = v;
		else if (strcmp(f, "-backoffMin") == 0 && num_arg(val, 1, 600000, &v))
			s.backoff_min = v;
		else if (strcmp(f, "-backoffMax") == 0 && num_arg(val, 1, 600000, &v))
			s.backoff_max = v;
		else if (strcmp(f, "-stat") == 0 && num_arg(val, 1, 3600, &v))
			stat_s = v;
		else if (strcmp(f, "-srcAddrs") == 0 && num_arg(val, 0, 250 * 250, &v))
			src_addrs = (unsigned)v;
		else {
			fprintf(stderr, "bench_agentsim: bad flag or value: %s %s\n", f, val);
			return usage();
		}
	}
	if (servers == NULL || tokens == NULL || bundle == NULL)
		return usage();
	if (s.backoff_max < s.backoff_min)
		s.backoff_max = s.backoff_min;
	signal(SIGPIPE, SIG_IGN);
	int nw = snprintf(s.server_id, sizeof(s.server_id), "spiffe://%s/lanyard/server", s.td);
	if (nw < 0 || (size_t)nw >= sizeof(s.server_id)) {
		fprintf(stderr, "bench_agentsim: -td too long\n");
		return 2;
	}
	if (split_addrs(&s, servers, &e) != LY_OK || read_tokens(&s, tokens, (unsigned)n, &e) != LY_OK ||
	    ly_pem_read_file(bundle, &s.bundle_pem, &e) != LY_OK) {
		fprintf(stderr, "bench_agentsim: %s\n", e.msg);
		return 1;
	}
	if (uv_loop_init(&loop) != 0 || ly_rpc_new(&loop, &s.rpc, &e) != LY_OK) {
		fprintf(stderr, "bench_agentsim: cannot start the loop or gRPC\n");
		return 1;
	}
	s.loop = &loop;
	int64_t t0 = now_s();
	for (unsigned i = 0; i < s.n; i++) {
		struct agent *a = &s.agents[i];
		a->sim = &s;
		a->idx = i;
		a->addr = i % s.n_addrs;
		a->next_resync = t0 + (s.resync_s > 0 ? s.resync_s + (int64_t)(i % (unsigned)s.resync_s) : 0);
		if (ly_key_generate(LY_KEY_EC_P256, &a->wkey, &e) != LY_OK) {
			fprintf(stderr, "bench_agentsim: %s\n", e.msg);
			return 1;
		}
		uv_timer_init(&loop, &a->timer);
		a->timer.data = a;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	fprintf(stderr, "bench_agentsim: %u agents over %u servers, ramp %.0f/s, resync %" PRId64 " s\n", s.n, s.n_addrs,
	    s.ramp, s.resync_s);
	uv_timer_init(&loop, &s.tick);
	s.tick.data = &s;
	uv_timer_start(&s.tick, on_tick, 0, 100);
	uv_timer_init(&loop, &s.stat);
	s.stat.data = &s;
	uv_timer_start(&s.stat, on_stat, (uint64_t)stat_s * 1000, (uint64_t)stat_s * 1000);
	uv_signal_init(&loop, &s.sigterm);
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	uv_signal_init(&loop, &s.sigint);
	uv_signal_start(&s.sigint, on_signal, SIGINT);
	uv_run(&loop, UV_RUN_DEFAULT);
	on_stat(&s.stat);
	/* The process ends here: the kernel takes the connections and memory back. */
	return 0;
}
