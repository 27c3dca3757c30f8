/*
 * agentsim_call.c: bench_agentsim's channels and calls over rpc/
 * (agentsim.h): a channel to one server, TLS with the bundle as roots
 * (mTLS with the agent's SVID once it has one) and the server's SPIFFE ID
 * checked as the agent checks it; a call packed, started with the
 * caller's callbacks and counted on its channel, cancelled, freed; a
 * channel retired while calls are still on it and freed after the last.
 * No protocol: what the calls mean is agentsim_agent.c's.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "agentsim.h"
#include "lib/der.h"
#include "lib/x509svid.h"

#define CALL_TIMEOUT_MS 60000

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

void
chan_destroy(struct chan *c)
{
	if (c->ch != NULL)
		ly_rpc_channel_free(c->ch);
	free(c);
}

void
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

struct chan *
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

void
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

ly_status
call_start(struct call *k, const ProtobufCMessage *msg, enum ly_rpc_kind kind, const char *method, unsigned flags,
    ly_rpc_message_cb on_msg, ly_rpc_status_cb on_status, struct ly_error *err)
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
		.on_message = on_msg,
		.on_status = on_status,
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

struct call *
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

void
call_cancel(struct call *k)
{
	if (k == NULL || k->cancelled)
		return;
	k->cancelled = true;
	ly_rpc_ccall_cancel(k->cc);
}
