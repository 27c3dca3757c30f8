/* fake_rpc.c: see fake_rpc.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_rpc.h"

#define WORKLOAD_HEADER "workload.spiffe.io"

static uint8_t *last_msg;
static size_t last_msg_len;

const char *
ly_rpc_code_str(enum ly_rpc_code code)
{
	(void)code;
	return "code";
}

const char *
ly_rpc_call_method(const struct ly_rpc_call *call)
{
	return call->method != NULL ? call->method : "";
}

const char *
ly_rpc_call_peer(const struct ly_rpc_call *call)
{
	return call->peer != NULL ? call->peer : FAKE_RPC_PEER;
}

const char *
ly_rpc_call_peer_spiffe_id(const struct ly_rpc_call *call)
{
	return call->peer_id;
}

const char *
ly_rpc_call_peer_cert_pem(const struct ly_rpc_call *call)
{
	return call->pem;
}

void *
ly_rpc_call_conn_ctx(const struct ly_rpc_call *call)
{
	return call->conn;
}

const uint8_t *
ly_rpc_call_metadata(const struct ly_rpc_call *call, const char *key, size_t *len)
{
	if (!call->header || strcmp(key, WORKLOAD_HEADER) != 0)
		return NULL;
	*len = 4;
	return (const uint8_t *)"true";
}

void
ly_rpc_call_set_closed_cb(struct ly_rpc_call *call, ly_rpc_closed_cb cb, void *arg)
{
	call->closed = cb;
	call->closed_arg = arg;
}

void
ly_rpc_call_set_message_cb(struct ly_rpc_call *call, ly_rpc_message_in_cb cb, void *arg)
{
	(void)call;
	(void)cb;
	(void)arg;
}

/* Keeps a message sent or replied: its length and head on the call, a whole copy as the last of any call. */
static void
keep(struct ly_rpc_call *call, const uint8_t *msg, size_t len)
{
	call->msg_len = len;
	memset(call->head, 0, sizeof(call->head));
	memcpy(call->head, msg, len < sizeof(call->head) ? len : sizeof(call->head));
	free(last_msg);
	last_msg = malloc(len + 1);
	assert_non_null(last_msg);
	if (len > 0)
		memcpy(last_msg, msg, len);
	last_msg_len = len;
	if (call->decode != NULL) {
		if (call->decoded != NULL && call->decoded_free != NULL)
			call->decoded_free(call->decoded);
		call->decoded = call->decode(msg, len);
		assert_non_null(call->decoded);
	}
}

ly_status
ly_rpc_call_send(struct ly_rpc_call *call, const uint8_t *msg, size_t len, unsigned flags, struct ly_error *err)
{
	(void)flags;
	(void)err;
	assert_false(call->finished);
	keep(call, msg, len);
	call->n_sent++;
	return LY_OK;
}

ly_status
ly_rpc_call_reply(struct ly_rpc_call *call, const uint8_t *msg, size_t len, unsigned flags, struct ly_error *err)
{
	(void)flags;
	(void)err;
	assert_false(call->finished);
	keep(call, msg, len);
	call->finished = true;
	call->code = LY_RPC_OK;
	return LY_OK;
}

void
ly_rpc_call_finish(struct ly_rpc_call *call, enum ly_rpc_code code, const char *details)
{
	assert_false(call->finished);
	call->finished = true;
	call->code = code;
	(void)snprintf(call->details, sizeof(call->details), "%s", details != NULL ? details : "");
}

void
fake_rpc_call_cleanup(struct ly_rpc_call *call)
{
	if (call->decoded != NULL && call->decoded_free != NULL)
		call->decoded_free(call->decoded);
	call->decoded = NULL;
}

const uint8_t *
fake_rpc_last(size_t *len)
{
	*len = last_msg_len;
	return last_msg;
}

void
fake_rpc_reset(void)
{
	free(last_msg);
	last_msg = NULL;
	last_msg_len = 0;
}
