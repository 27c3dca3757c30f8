/*
 * server_tls.c: the server's own TLS certificate (server_internal.h). An
 * X.509-SVID for spiffe://<td>/lanyard/server signed by our CA, with a key
 * made here and never written anywhere (wiped once gRPC and the bundle
 * endpoint took their copies); renewed at 50% of its life and whenever the
 * bundle changes (server_bundle.c), so that the agent listener's client
 * roots follow the bundle. An https_spiffe bundle endpoint serves the same
 * SVID. Runs on the loop thread; owns nothing beyond one call.
 */
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/csr.h"
#include "lib/der.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/spiffeid.h"
#include "rpc/rpc.h"
#include "server/ca.h"
#include "server/fed_endpoint.h"
#include "server/server_internal.h"

struct tls_material {
	struct ly_buf chain_pem;
	struct ly_buf key_pem; /* secret */
	char *roots_pem;
	time_t expires_at;
};

static void
tls_material_cleanup(struct tls_material *t)
{
	ly_buf_free(&t->chain_pem);
	ly_buf_free_secret(&t->key_pem);
	free(t->roots_pem);
	t->roots_pem = NULL;
}

/* A fresh key and an X.509-SVID for spiffe://<td>/lanyard/server from our CA. */
static ly_status
tls_material_make(struct ly_server *srv, time_t now, struct tls_material *t, struct ly_error *err)
{
	EVP_PKEY *key = NULL;
	struct ly_spiffe_id id;
	struct ly_buf csr = LY_BUF_INIT, chain = LY_BUF_INIT;
	ly_status rc;

	memset(t, 0, sizeof(*t));
	if ((rc = ly_spiffe_id_from_parts(srv->cfg.trust_domain, LY_SERVER_ID_PATH, &id, err)) != LY_OK ||
	    (rc = ly_key_generate(LY_KEY_EC_P256, &key, err)) != LY_OK ||
	    (rc = ly_csr_build(key, &id, NULL, 0, &csr, err)) != LY_OK ||
	    (rc = ly_ca_sign_agent_svid(srv->ca, csr.data, csr.len, &id, 0, now, &chain, &t->expires_at, err)) !=
		LY_OK ||
	    (rc = ly_der_certs_to_pem(chain.data, chain.len, LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX, &t->chain_pem,
		err)) != LY_OK ||
	    (rc = ly_key_to_pem(key, &t->key_pem, err)) != LY_OK ||
	    (rc = ly_bundle_write_pem(ly_server_bundle(srv), &t->roots_pem, err)) != LY_OK) {
		ly_error_wrap(err, rc, "server certificate");
		tls_material_cleanup(t);
	}
	EVP_PKEY_free(key);
	ly_buf_free(&csr);
	ly_buf_free(&chain);
	return rc;
}

static void
tls_material_view(const struct tls_material *t, struct ly_rpc_tls_server *tls)
{
	tls->cert_chain_pem = (const char *)t->chain_pem.data;
	tls->key_pem = (const char *)t->key_pem.data;
	tls->client_roots_pem = t->roots_pem;
	/* Unenrolled agents attest without a certificate; enrolled ones present
	 * their SVID, verified against the bundle; the agent API decides. */
	tls->client_auth = LY_RPC_CLIENT_CERT_REQUEST;
}

static time_t
renew_time(time_t now, time_t expires_at)
{
	return expires_at > now ? now + (expires_at - now) / 2 : now;
}

/* Listens (first time) or rotates the agent listener's certificate. */
ly_status
server_tls_refresh(struct srv_main *m, time_t now, struct ly_error *err)
{
	struct tls_material t;
	struct ly_rpc_tls_server tls;
	ly_status rc;

	LY_TRY(tls_material_make(&m->srv, now, &t, err));
	tls_material_view(&t, &tls);
	if (!m->agent_listening) {
		rc = ly_rpc_server_listen_tls(m->srv.agent_server, m->agent_addr, &tls, &m->agent_port, err);
		if (rc != LY_OK)
			ly_error_wrap(err, rc, "cannot listen on %s", m->agent_addr);
		else
			m->agent_listening = true;
	} else {
		rc = ly_rpc_server_set_tls(m->srv.agent_server, &tls, err);
		if (rc != LY_OK)
			ly_error_wrap(err, rc, "cannot rotate the server certificate");
	}
	if (rc == LY_OK && m->fed_ep != NULL && m->srv.cfg.fed.endpoint.profile == LY_FED_PROFILE_HTTPS_SPIFFE) {
		/* https_spiffe: the bundle endpoint serves the same SVID as the agent listener. */
		rc = ly_fed_endpoint_set_identity(m->fed_ep, (const char *)t.chain_pem.data, t.chain_pem.len,
		    (const char *)t.key_pem.data, t.key_pem.len, err);
		if (rc != LY_OK)
			ly_error_wrap(err, rc, "bundle endpoint certificate");
	}
	if (rc == LY_OK) {
		m->svid_renew_at = renew_time(now, t.expires_at);
		log_debug("server certificate valid until %lld, renewal at %lld", (long long)t.expires_at,
		    (long long)m->svid_renew_at);
	}
	tls_material_cleanup(&t);
	return rc;
}
