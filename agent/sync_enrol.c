/*
 * sync_enrol.c: enrolment (sync_internal.h): node attestation by
 * join_token, x509pop or k8s_psat (AttestAgent, with its challenge and
 * ticket steps), the insecure bootstrap's TLS probe, attesting again when
 * the server asks, the bootstrap bundle, and the renewal of our own SVID
 * (RenewAgent).
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

/* ---- node attestation ------------------------------------------------------------------------ */

/* The insecure bootstrap's look at the server's certificate chain (pool thread). */
struct probe_job {
	uv_work_t w;
	struct ly_sync *s;
	char *host;
	char port[8];
	char *roots_pem; /* the CA certificates the server sent, PEM */
	ly_status rc;
	struct ly_error e;
};

static int
probe_connect(const char *host, const char *port, struct ly_error *err)
{
	struct addrinfo hints, *res = NULL;
	int fd = -1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		(void)ly_error_set(err, LY_E_IO, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			if (poll(&p, 1, PROBE_TIMEOUT_MS) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
			    soerr == 0)
				break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		(void)ly_error_set(err, LY_E_IO, "cannot connect to %s:%s", host, port);
		return -1;
	}
	/* Blocking from here, with timeouts. */
	struct timeval tv = { .tv_sec = PROBE_TIMEOUT_MS / 1000, .tv_usec = 0 };
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
		(void)ly_error_set(err, LY_E_IO, "socket options: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Connects to the server with TLS, checking nothing (that is what
 * -insecureBootstrap means), and keeps the CA certificates it presents
 * after its leaf: gRPC takes them as roots (partial chains are allowed
 * there) for the attestation channel, whose own check still insists on
 * the server's SPIFFE ID.
 */
static void
probe_run(uv_work_t *w)
{
	struct probe_job *j = w->data;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	BIO *out = NULL;
	int fd;
	static const unsigned char alpn[] = { 2, 'h', '2' };

	j->rc = LY_OK;
	if ((fd = probe_connect(j->host, j->port, &j->e)) < 0) {
		j->rc = LY_E_IO;
		return;
	}
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL || (ssl = SSL_new(ctx)) == NULL ||
	    (out = BIO_new(BIO_s_mem())) == NULL) {
		j->rc = ly_error_openssl(&j->e, LY_E_CRYPTO, "TLS probe");
		goto out;
	}
	SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	(void)SSL_set_alpn_protos(ssl, alpn, sizeof(alpn));
	if (SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
		j->rc = ly_error_openssl(&j->e, LY_E_IO, "TLS probe of %s:%s: handshake failed", j->host, j->port);
		goto out;
	}
	STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
	int n = chain != NULL ? sk_X509_num(chain) : 0;
	if (n <= 0 || n > LY_CHAIN_CERTS_MAX) {
		j->rc = ly_error_set(&j->e, LY_E_INVALID, "TLS probe: the server sent %d certificates", n);
		goto out;
	}
	/* The CAs after the leaf; a lone leaf stands for itself. */
	for (int i = n > 1 ? 1 : 0; i < n; i++) {
		if (PEM_write_bio_X509(out, sk_X509_value(chain, i)) != 1) {
			j->rc = ly_error_openssl(&j->e, LY_E_CRYPTO, "TLS probe: PEM");
			goto out;
		}
	}
	char *p = NULL;
	long len = BIO_get_mem_data(out, &p);
	if (len <= 0 || (j->roots_pem = strndup(p, (size_t)len)) == NULL)
		j->rc = ly_error_set(&j->e, LY_E_NOMEM, "TLS probe: out of memory");
out:
	if (ssl != NULL)
		(void)SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	BIO_free(out);
	close(fd);
	ERR_clear_error();
}

static void
probe_after(uv_work_t *w, int status)
{
	struct probe_job *j = w->data;
	struct ly_sync *s = j->s;

	s->probe_busy = false;
	s->n_works--;
	if (status == 0 && j->rc == LY_OK && s->phase == PH_ATTEST) {
		log_warn("insecure bootstrap: the server's certificate is taken on trust (its CA certificates become the "
			 "roots for attestation; only its SPIFFE ID %s is checked)",
		    s->server_id);
		free(s->probe_roots_pem);
		s->probe_roots_pem = j->roots_pem;
		j->roots_pem = NULL;
		ly_sync_enrol_begin(s);
	} else if (s->phase == PH_ATTEST) {
		ly_sync_chan_reconnect_later(s, status != 0 ? "TLS probe cancelled" : j->e.msg);
	}
	free(j->roots_pem);
	free(j->host);
	free(j);
	ly_sync_base_stop_maybe_done(s);
}

static void
probe_start(struct ly_sync *s)
{
	struct probe_job *j;

	if (s->probe_busy)
		return;
	const struct ly_server_ep *ep = ly_sync_chan_endpoint(s);
	if (ep == NULL) {
		ly_sync_chan_resolve_all(s);
		ly_sync_chan_reconnect_later(s, "no server address known yet");
		return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL || (j->host = strdup(ep->addr)) == NULL) {
		free(j);
		ly_sync_chan_reconnect_later(s, "out of memory");
		return;
	}
	j->s = s;
	j->w.data = j;
	(void)snprintf(j->port, sizeof(j->port), "%u", (unsigned)ep->port);
	if (uv_queue_work(s->loop, &j->w, probe_run, probe_after) != 0) {
		free(j->host);
		free(j);
		ly_sync_chan_reconnect_later(s, "cannot queue the TLS probe");
		return;
	}
	s->probe_busy = true;
	s->n_works++;
}

struct attest_call {
	struct ccall base;
	int step; /* 0: the attestation, 1: the x509pop proof, 2: the ticket */
};

static void attest_on_done(struct ccall *c, enum ly_rpc_code code, const char *details);

/* A CSR for `id` with the attestation key. */
static ly_status
attest_csr(struct ly_sync *s, const char *id, struct ly_buf *csr, struct ly_error *err)
{
	struct ly_spiffe_id sid;

	LY_TRY(ly_spiffe_id_parse_str(id, &sid, err));
	if (!ly_spiffe_id_member_of(&sid, s->td) || ly_spiffe_id_is_trust_domain_id(&sid))
		return ly_error_set(err, LY_E_INVALID, "agent ID %s: not a workload ID of trust domain %s", id, s->td);
	return ly_csr_build(s->att_key, &sid, NULL, 0, csr, err);
}

/* The x509pop node certificate chain (DER) and its key, read at each attempt (they may be renewed). */
static ly_status
x509pop_material(struct ly_sync *s, struct ly_buf *chain, EVP_PKEY **key, struct ly_error *err)
{
	const struct ly_agent_config *cfg = &s->agent->cfg;
	ly_status rc;

	if ((rc = ly_pem_file_to_der_certs(cfg->x509pop_cert_path, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, chain, err)) !=
	    LY_OK)
		return ly_error_wrap(err, rc, "x509pop certificate %s", cfg->x509pop_cert_path);
	if ((rc = ly_key_from_pem_file(cfg->x509pop_key_path, key, err)) != LY_OK) {
		ly_buf_free(chain);
		return ly_error_wrap(err, rc, "x509pop key %s", cfg->x509pop_key_path);
	}
	return LY_OK;
}

/* spiffe://<td>/lanyard/agent/x509pop/<SHA-1 of the leaf DER, hex> (docs/agent-api.md). */
static ly_status
x509pop_predicted_id(struct ly_sync *s, const struct ly_buf *chain, char *out, size_t size, struct ly_error *err)
{
	struct ly_der_span spans[LY_CHAIN_CERTS_MAX];
	size_t n = 0;
	unsigned char md[20];
	char hex[41];

	LY_TRY(ly_der_split(chain->data, chain->len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, spans, &n, err));
	if (EVP_Digest(chain->data + spans[0].off, spans[0].len, md, NULL, EVP_sha1(), NULL) != 1)
		return ly_error_openssl(err, LY_E_CRYPTO, "x509pop: SHA-1");
	for (size_t i = 0; i < sizeof(md); i++)
		(void)snprintf(hex + 2 * i, 3, "%02x", md[i]);
	(void)snprintf(out, size, "spiffe://%s/lanyard/agent/x509pop/%s", s->td, hex);
	return LY_OK;
}

/* The join token as an ID path segment, when it is one (SPEC §2's default agent ID). */
static bool
join_token_predicted_id(struct ly_sync *s, char *out, size_t size)
{
	const char *t = s->agent->cfg.join_token;
	struct ly_spiffe_id sid;
	char buf[LY_SPIFFE_ID_MAX + 1];

	if (t == NULL || strlen(t) > LY_JOIN_TOKEN_MAX)
		return false;
	(void)snprintf(buf, sizeof(buf), "spiffe://%s/lanyard/agent/join_token/%s", s->td, t);
	if (ly_spiffe_id_parse_str(buf, &sid, NULL) != LY_OK)
		return false;
	(void)snprintf(out, size, "%s", buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return true;
}

/*
 * After a failed attempt: a join token's key is kept for the next one. The
 * server may have used the token up and lost its answer (a connection
 * dropped, shed under load): it answers the same token again only for the
 * key that used it (server/datastore.h, LY_JOIN_TOKEN_RETRY_S), so a new
 * key would be refused "already used" for good. Other methods attest anew.
 */
static void
attest_key_drop(struct ly_sync *s)
{
	if (s->method == METHOD_JOIN_TOKEN)
		return;
	EVP_PKEY_free(s->att_key);
	s->att_key = NULL;
}

static void
attest_refused(struct ly_sync *s, enum ly_rpc_code code, const char *what)
{
	switch (code) {
	case LY_RPC_PERMISSION_DENIED:
	case LY_RPC_INVALID_ARGUMENT:
	case LY_RPC_FAILED_PRECONDITION:
	case LY_RPC_UNAUTHENTICATED:
		if (s->method == METHOD_JOIN_TOKEN && code == LY_RPC_PERMISSION_DENIED) {
			s->join_token_spent = true;
			log_error("attestation refused: %s (a join token works once: give the agent a new one with "
				  "-joinToken); serving cached SVIDs, trying again every %d s",
			    what, LY_SYNC_BACKOFF_MAX_MS / 1000);
		} else {
			log_error("attestation refused: %s; trying again every %d s", what, LY_SYNC_BACKOFF_MAX_MS / 1000);
		}
		s->backoff_attempt = 32;
		break;
	default:
		log_warn("attestation failed: %s", what);
		break;
	}
	attest_key_drop(s);
	/* The bootstrap channel may be the problem (a server that rotated its certificate): a new one next time. */
	ly_sync_chan_retire(s, s->chan);
	ly_sync_chan_reconnect_later(s, "attestation");
}

/* Starts one AttestAgent call of step `step` with request `req`. */
static ly_status
attest_send(struct ly_sync *s, int step, Lanyard__Agent__V1__AttestAgentRequest *req, struct ly_error *err)
{
	struct attest_call *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "attestation: out of memory");
	a->step = step;
	a->base.on_done = attest_on_done;
	if (ly_sync_chan_call_start(s, s->chan, &a->base, M_ATTEST, LY_RPC_UNARY, &req->base, true, err) != LY_OK) {
		free(a);
		return LY_E_IO;
	}
	s->attest_busy = true;
	return LY_OK;
}

/* Reads a k8s_psat token (projected: it is rotated by the kubelet, so read at each attempt). */
static ly_status
psat_token_read(const char *path, struct ly_buf *out, struct ly_error *err)
{
	LY_TRY(ly_pem_read_file(path, out, err)); /* any text file, NUL-terminated, read in one allocation */
	while (out->len > 0 && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r' ||
				   out->data[out->len - 1] == ' '))
		out->data[--out->len] = '\0';
	if (out->len == 0 || out->len > LY_K8S_TOKEN_MAX) {
		ly_buf_free_secret(out);
		return ly_error_set(err, LY_E_INVALID, "k8s_psat token %s: empty or over %d bytes", path, LY_K8S_TOKEN_MAX);
	}
	return LY_OK;
}

/* First step of node attestation, by the configured method. */
void
ly_sync_enrol_begin(struct ly_sync *s)
{
	Lanyard__Agent__V1__AttestAgentRequest req;
	Lanyard__Agent__V1__JoinTokenAttestation jt;
	Lanyard__Agent__V1__X509PopAttestation xp;
	Lanyard__Agent__V1__K8sPsatAttestation ps;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, token = LY_BUF_INIT;
	EVP_PKEY *popkey = NULL;
	struct ly_error e;
	ly_status rc = LY_OK;

	if (s->phase != PH_ATTEST || s->attest_busy || s->reconnect_armed)
		return;
	if (s->bootstrap == NULL && s->probe_roots_pem == NULL) {
		if (s->insecure)
			probe_start(s);
		else
			ly_sync_chan_reconnect_later(s, "no bundle to check the server with");
		return;
	}
	if (s->chan == NULL && (rc = ly_sync_chan_new(s, false, &s->chan, &e)) != LY_OK) {
		log_error("channel to %s: %s", s->target, e.msg);
		ly_sync_chan_reconnect_later(s, "no channel");
		return;
	}
	attest_key_drop(s);
	s->att_expect[0] = '\0';
	if (s->att_key == NULL && (rc = ly_key_generate(LY_KEY_TYPE_DEFAULT, &s->att_key, &e)) != LY_OK)
		goto out;
	lanyard__agent__v1__attest_agent_request__init(&req);
	switch (s->method) {
	case METHOD_JOIN_TOKEN:
		lanyard__agent__v1__join_token_attestation__init(&jt);
		jt.token = (char *)(uintptr_t)s->agent->cfg.join_token;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_JOIN_TOKEN;
		req.join_token = &jt;
		/* The default ID is predictable: one round trip. Otherwise the ticket step. */
		if (join_token_predicted_id(s, s->att_expect, sizeof(s->att_expect)) &&
		    (rc = attest_csr(s, s->att_expect, &csr, &e)) != LY_OK)
			goto out;
		break;
	case METHOD_X509POP:
		if ((rc = x509pop_material(s, &chain, &popkey, &e)) != LY_OK)
			goto out;
		lanyard__agent__v1__x509_pop_attestation__init(&xp);
		xp.certificate_chain.data = chain.data;
		xp.certificate_chain.len = chain.len;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP;
		req.x509pop = &xp;
		break;
	case METHOD_K8S_PSAT:
		if ((rc = psat_token_read(s->agent->cfg.psat_token_path, &token, &e)) != LY_OK)
			goto out;
		lanyard__agent__v1__k8s_psat_attestation__init(&ps);
		ps.cluster = (char *)(uintptr_t)s->agent->cfg.psat_cluster;
		ps.token = (char *)token.data;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_K8S_PSAT;
		req.k8s_psat = &ps;
		break;
	default:
		rc = ly_error_set(&e, LY_E_INVALID, "no node attestation configured");
		goto out;
	}
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	rc = attest_send(s, 0, &req, &e);
out:
	EVP_PKEY_free(popkey);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	ly_buf_free_secret(&token);
	if (rc != LY_OK) {
		log_error("attestation not started: %s", e.msg);
		attest_key_drop(s);
		s->backoff_attempt = s->backoff_attempt < 4 ? 4 : s->backoff_attempt;
		ly_sync_chan_reconnect_later(s, "attestation");
	}
}

/* The server admitted us and signed our SVID: check it, keep it, and switch to mTLS. */
static void
attest_finish(struct ly_sync *s, const Lanyard__Agent__V1__AgentSVID *svid)
{
	struct ly_bundle *b = NULL;
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_x509svid_info info;
	struct ly_error e;

	if (ly_agentapi_svid_check(svid, s->att_expect, &e) != LY_OK) {
		attest_refused(s, LY_RPC_INTERNAL, e.msg);
		return;
	}
	/*
	 * The bundle came over TLS from a server that proved the ID
	 * spiffe://<td>/lanyard/server with our bootstrap bundle (or, insecure,
	 * from the first server we reached). Our new SVID must verify to it.
	 */
	if (ly_agentapi_bundle_from_pb(svid->bundle, s->td, &b, &e) != LY_OK ||
	    ly_sync_base_verify_with_bundle(s, b, svid->cert_chain.data, svid->cert_chain.len, s->att_key, s->att_expect,
		&info, &e) != LY_OK ||
	    ly_buf_set(&chain, svid->cert_chain.data, svid->cert_chain.len, &e) != LY_OK ||
	    ly_sync_base_ident_set(s, s->att_expect, &s->att_key, &chain, info.not_before, info.not_after, 0, &e) !=
		LY_OK) {
		char msg[LY_ERROR_MSG_MAX + 32];
		(void)snprintf(msg, sizeof(msg), "agent SVID refused: %s", e.msg);
		ly_bundle_free(b);
		ly_buf_free(&chain);
		attest_refused(s, LY_RPC_INTERNAL, msg);
		return;
	}
	s->stats.attestations++;
	log_info("attested as %s: SVID valid from %" PRId64 " until %" PRId64 ", renewal at %" PRId64 " ms",
	    s->ident.id, s->ident.not_before, s->ident.not_after, s->ident.renew_at_ms);
	if (s->insecure)
		log_warn("insecure bootstrap: trusting the bundle (sequence %" PRIu64 ") of the first server reached",
		    ly_bundle_sequence(b));
	s->insecure = false;
	free(s->probe_roots_pem);
	s->probe_roots_pem = NULL;
	ly_bundle_free(s->bootstrap);
	s->bootstrap = NULL;
	/* The attestation channel goes; an mTLS one comes. */
	ly_sync_chan_retire(s, s->chan);
	s->phase = PH_ENROLLED;
	s->backoff_attempt = 0;
	s->denied = false;
	s->want_snapshot = true;
	s->steps->bundle_install(s, b);
	s->steps->persist_agent_dirty(s);
	struct ly_error se;
	if (ly_rotation_schedule_all(s->sched, s->cache, ly_sync_base_now_ms(), &se) != LY_OK)
		log_error("rotation schedule: %s", se.msg);
	s->steps->connect(s);
}

static void
attest_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct attest_call *a = (struct attest_call *)c;
	struct ly_sync *s = c->s;
	Lanyard__Agent__V1__AttestAgentResponse *m = NULL;
	Lanyard__Agent__V1__AttestAgentRequest req;
	Lanyard__Agent__V1__X509PopAttestation xp;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT, sig = LY_BUF_INIT;
	EVP_PKEY *popkey = NULL;
	struct ly_error e;
	char what[LY_ERROR_MSG_MAX + 64];
	int step = a->step;

	s->attest_busy = false;
	if (s->phase != PH_ATTEST)
		goto out;
	if (code != LY_RPC_OK) {
		(void)snprintf(what, sizeof(what), "%s %s", ly_rpc_code_str(code), details);
		attest_refused(s, code, what);
		goto out;
	}
	if (step == 0 && s->method == METHOD_JOIN_TOKEN)
		s->join_token_spent = true; /* used up, whatever comes next */
	if (ly_agentapi_attest_parse(c->resp.data, c->resp.len, &m, &e) != LY_OK) {
		attest_refused(s, LY_RPC_INTERNAL, e.msg);
		goto out;
	}
	if (m->svid != NULL) {
		attest_finish(s, m->svid);
		goto out;
	}
	lanyard__agent__v1__attest_agent_request__init(&req);
	if (step == 0 && s->method == METHOD_X509POP && ly_agentapi_attest_has_challenge(m)) {
		/* x509pop step 2: the proof, and a CSR for the ID we can predict. */
		if (x509pop_material(s, &chain, &popkey, &e) != LY_OK ||
		    ly_x509pop_sign(popkey, m->challenge_nonce.data, m->challenge_nonce.len, &sig, &e) != LY_OK ||
		    x509pop_predicted_id(s, &chain, s->att_expect, sizeof(s->att_expect), &e) != LY_OK ||
		    attest_csr(s, s->att_expect, &csr, &e) != LY_OK) {
			(void)snprintf(what, sizeof(what), "x509pop: %s", e.msg);
			attest_refused(s, LY_RPC_FAILED_PRECONDITION, what);
			goto out;
		}
		lanyard__agent__v1__x509_pop_attestation__init(&xp);
		xp.certificate_chain.data = chain.data;
		xp.certificate_chain.len = chain.len;
		xp.challenge_nonce = m->challenge_nonce;
		xp.challenge_signature.data = sig.data;
		xp.challenge_signature.len = sig.len;
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_X509POP;
		req.x509pop = &xp;
	} else if (step != 2 && ly_agentapi_attest_has_ticket(m)) {
		/* Admitted under an ID we could not predict: a CSR for it, with the ticket. */
		if (ly_agentapi_attest_ticket_id(m, s->att_expect, sizeof(s->att_expect), &e) != LY_OK) {
			attest_refused(s, LY_RPC_INTERNAL, e.msg);
			goto out;
		}
		if (attest_csr(s, s->att_expect, &csr, &e) != LY_OK) {
			(void)snprintf(what, sizeof(what), "ticket step: %s", e.msg);
			attest_refused(s, LY_RPC_INTERNAL, what);
			goto out;
		}
		log_info("admitted as %s: redeeming the ticket", s->att_expect);
		req.attestation_case = LANYARD__AGENT__V1__ATTEST_AGENT_REQUEST__ATTESTATION_TICKET;
		req.ticket = m->ticket;
		step = 1;
	} else {
		attest_refused(s, LY_RPC_INTERNAL, "AttestAgentResponse without an SVID, a challenge or a ticket");
		goto out;
	}
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (attest_send(s, step + 1, &req, &e) != LY_OK)
		attest_refused(s, LY_RPC_UNAVAILABLE, e.msg);
out:
	ly_agentapi_attest_free(m);
	EVP_PKEY_free(popkey);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	ly_buf_free(&sig);
	ly_sync_chan_call_cleanup(c);
	free(a);
}

/*
 * The server wants us to attest again (evicted), or our SVID expired. A
 * join token works once: without a new one we keep serving the cached
 * SVIDs and ask the server again every 30 s (an operator may undo
 * nothing, but a restart with a new -joinToken does the job).
 */
void
ly_sync_enrol_again(struct ly_sync *s, const char *why)
{
	if (s->method == METHOD_NONE || (s->method == METHOD_JOIN_TOKEN && s->join_token_spent)) {
		log_error("the server wants this agent to attest again (%s) but it has no attestation left (%s): serving "
			  "cached SVIDs, asking again every %d s; restart it with a new -joinToken",
		    why, s->method == METHOD_NONE ? "no node attestor configured" : "its join token is used up",
		    LY_SYNC_BACKOFF_MAX_MS / 1000);
		s->steps->watch_drop_all(s);
		ly_sync_chan_retire(s, s->chan);
		s->denied = true;
		s->backoff_attempt = 32;
		ly_sync_chan_reconnect_later(s, "attestation needed");
		return;
	}
	struct ly_error e;
	const struct ly_bundle *cur = ly_cache_bundle(s->cache);
	log_warn("attesting again: %s", why);
	ly_bundle_free(s->bootstrap);
	s->bootstrap = NULL;
	if (cur != NULL && ly_bundle_clone(cur, &s->bootstrap, &e) != LY_OK)
		log_error("attestation: %s", e.msg);
	s->steps->watch_drop_all(s);
	ly_sync_chan_kill(s, s->chan);
	s->phase = PH_ATTEST;
	s->renew_busy = false;
	ly_sync_enrol_begin(s);
}

/* ---- our SVID's renewal --------------------------------------------------------------------- */

struct renew_call {
	struct ccall base;
	EVP_PKEY *key;
};

static void
renew_retry(struct ly_sync *s)
{
	s->renew_retry_ms = ly_rotation_retry_ms(ly_sync_base_now_ms(), s->renew_attempt);
	if (s->renew_attempt < 32)
		s->renew_attempt++;
	s->steps->tick_arm(s);
}

int64_t
ly_sync_enrol_renew_due_ms(const struct ly_sync *s)
{
	return s->renew_retry_ms != 0 ? s->renew_retry_ms : s->ident.renew_at_ms;
}

static void
renew_on_done(struct ccall *c, enum ly_rpc_code code, const char *details)
{
	struct renew_call *r = (struct renew_call *)c;
	struct ly_sync *s = c->s;
	Lanyard__Agent__V1__AgentSVID *m = NULL;
	struct ly_bundle *b = NULL;
	struct ly_buf chain = LY_BUF_INIT;
	struct ly_x509svid_info info;
	struct ly_error e;

	s->renew_busy = false;
	if (s->phase != PH_ENROLLED)
		goto out;
	if (code != LY_RPC_OK) {
		log_warn("RenewAgent: %s %s", ly_rpc_code_str(code), details);
		if (code == LY_RPC_PERMISSION_DENIED && strstr(details, "banned") == NULL)
			ly_sync_enrol_again(s, details);
		else if (code == LY_RPC_UNAUTHENTICATED && ly_sync_base_ident_expired(s, ly_sync_base_now_s()))
			ly_sync_enrol_again(s, "our SVID expired");
		else
			renew_retry(s);
		goto out;
	}
	if (ly_agentapi_agent_svid_parse(c->resp.data, c->resp.len, s->ident.id, &m, &e) != LY_OK) {
		log_error("RenewAgent: malformed answer, or an SVID for another ID: %s", e.msg);
		renew_retry(s);
		goto out;
	}
	/* A newer bundle in the answer is checked with the new SVID, then installed. */
	if (m->bundle != NULL) {
		if (ly_agentapi_bundle_from_pb(m->bundle, s->td, &b, &e) != LY_OK) {
			log_warn("RenewAgent: bundle ignored: %s", e.msg);
		} else if (ly_bundle_sequence(b) <= ly_sync_base_bundle_seq(s)) {
			ly_bundle_free(b);
			b = NULL;
		}
	}
	const struct ly_bundle *vb = b != NULL ? b : ly_cache_bundle(s->cache);
	if (vb == NULL ||
	    ly_sync_base_verify_with_bundle(s, vb, m->cert_chain.data, m->cert_chain.len, r->key, s->ident.id, &info,
		&e) != LY_OK ||
	    ly_buf_set(&chain, m->cert_chain.data, m->cert_chain.len, &e) != LY_OK ||
	    ly_sync_base_ident_set(s, s->ident.id, &r->key, &chain, info.not_before, info.not_after, 0, &e) != LY_OK) {
		log_error("RenewAgent: new SVID refused: %s", vb == NULL ? "no bundle" : e.msg);
		renew_retry(s);
		goto out;
	}
	s->stats.renewals++;
	log_info("agent SVID renewed: valid from %" PRId64 " until %" PRId64 ", next renewal at %" PRId64 " ms",
	    s->ident.not_before, s->ident.not_after, s->ident.renew_at_ms);
	if (b != NULL) {
		s->steps->bundle_install(s, b);
		b = NULL;
	}
	s->steps->persist_agent_dirty(s);
	/* New credentials, new channel (no connection of the old one is reused); the old goes when drained. */
	ly_sync_chan_retire(s, s->chan);
	s->steps->watch_open(s);
	s->steps->tick_arm(s);
out:
	ly_bundle_free(b);
	ly_buf_free(&chain);
	ly_agentapi_agent_svid_free(m);
	EVP_PKEY_free(r->key);
	ly_sync_chan_call_cleanup(c);
	free(r);
}

void
ly_sync_enrol_renew(struct ly_sync *s)
{
	struct renew_call *r = NULL;
	struct ly_spiffe_id sid;
	struct ly_buf csr = LY_BUF_INIT;
	struct ly_error e;
	Lanyard__Agent__V1__RenewAgentRequest req;

	if (s->phase != PH_ENROLLED || s->renew_busy || !s->ident.valid || s->chan == NULL)
		return;
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		renew_retry(s);
		return;
	}
	r->base.on_done = renew_on_done;
	if (ly_key_generate(LY_KEY_TYPE_DEFAULT, &r->key, &e) != LY_OK ||
	    ly_spiffe_id_parse_str(s->ident.id, &sid, &e) != LY_OK || ly_csr_build(r->key, &sid, NULL, 0, &csr, &e) != LY_OK)
		goto fail;
	lanyard__agent__v1__renew_agent_request__init(&req);
	req.csr.data = csr.data;
	req.csr.len = csr.len;
	if (ly_sync_chan_call_start(s, s->chan, &r->base, M_RENEW, LY_RPC_UNARY, &req.base, false, &e) != LY_OK)
		goto fail;
	ly_buf_free(&csr);
	s->renew_busy = true;
	log_debug("renewing the agent SVID");
	return;
fail:
	log_warn("agent SVID renewal not started: %s", e.msg);
	ly_buf_free(&csr);
	EVP_PKEY_free(r->key);
	free(r);
	renew_retry(s);
}

/* The bootstrap bundle for attestation: our last one, else -trustBundle. */
ly_status
ly_sync_enrol_bootstrap(struct ly_sync *s, struct ly_error *err)
{
	const struct ly_agent_config *cfg = &s->agent->cfg;
	const struct ly_bundle *cur = ly_cache_bundle(s->cache);
	struct ly_buf pem = LY_BUF_INIT;
	ly_status rc;

	ly_bundle_free(s->bootstrap);
	s->bootstrap = NULL;
	if (cur != NULL)
		return ly_bundle_clone(cur, &s->bootstrap, err);
	if (cfg->trust_bundle_path != NULL && cfg->trust_bundle_path[0] != '\0') {
		if ((rc = ly_pem_read_file(cfg->trust_bundle_path, &pem, err)) == LY_OK)
			rc = ly_bundle_parse_pem(s->td, (const char *)pem.data, pem.len, &s->bootstrap, err);
		ly_buf_free(&pem);
		if (rc != LY_OK)
			return ly_error_wrap(err, rc, "trust bundle %s", cfg->trust_bundle_path);
		return LY_OK;
	}
	if (cfg->insecure_bootstrap) {
		log_warn("insecure bootstrap: no trust bundle; the first server that proves the ID %s is believed",
		    s->server_id);
		s->insecure = true;
		return LY_OK;
	}
	return ly_error_set(err, LY_E_INVALID,
	    "no trust bundle to check the server with: give -trustBundle PEMFILE (or -insecureBootstrap)");
}

