/*
 * fake_rpc.h: the rpc call layer (rpc/rpc.h, the ly_rpc_call_* functions
 * a handler uses) faked for unit tests of the daemons' control flow, so
 * that no gRPC is involved: the test makes a struct ly_rpc_call itself,
 * hands it to a handler, and reads back what the handler did (messages
 * sent, the reply, the status it finished with, its closed callback).
 * Used by test_agent_api_flow.c (the server's agent API) and
 * test_agent_wapi_flow.c (the agent's Workload API); linked into each
 * (tests/CMakeLists.txt, SOURCES), never into a daemon.
 *
 * What it checks: nothing is sent on, replied to or finished after a call
 * was finished (cmocka assertion), and, when the test names a decoder,
 * that every message sent or replied decodes.
 *
 * Ownership and lifetimes: the struct ly_rpc_call is the test's (usually
 * on its stack); the strings and conn it points to must outlive the
 * handler's use of them. `decoded` is the call's, freed with
 * fake_rpc_call_cleanup (or taken by the test: set it to NULL). The last
 * message of any call (fake_rpc_last) is the fake's, valid until the next
 * message or fake_rpc_reset, which a test's teardown calls.
 * Threads: the test's thread only.
 */
#ifndef LANYARD_TESTS_FAKE_RPC_H
#define LANYARD_TESTS_FAKE_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

/* What ly_rpc_call_peer answers when the test names no peer address. */
#define FAKE_RPC_PEER "ipv4:127.0.0.1:40000"

/* Decodes one message (NULL: it does not decode); frees what it returned. */
typedef void *fake_rpc_decode_fn(const uint8_t *msg, size_t len);
typedef void fake_rpc_free_fn(void *decoded);

struct ly_rpc_call {
	/* Set by the test before a handler sees the call. */
	const char *method;  /* ly_rpc_call_method; NULL reads as "" */
	const char *peer;    /* ly_rpc_call_peer; NULL reads as FAKE_RPC_PEER */
	const char *peer_id; /* ly_rpc_call_peer_spiffe_id (NULL: no SVID) */
	const char *pem;     /* ly_rpc_call_peer_cert_pem */
	bool header;         /* ly_rpc_call_metadata: sends workload.spiffe.io: true */
	void *conn;          /* ly_rpc_call_conn_ctx */
	/* Optional: every message sent or replied is decoded into `decoded` (asserted to decode). */
	fake_rpc_decode_fn *decode;
	fake_rpc_free_fn *decoded_free;

	/* What the code under test did. */
	ly_rpc_closed_cb closed;
	void *closed_arg;
	size_t n_sent;   /* messages sent (ly_rpc_call_send; a unary reply is not counted) */
	size_t msg_len;  /* of the last message sent or replied */
	uint8_t head[8]; /* its first bytes */
	void *decoded;   /* the last message decoded (with `decode`), the call's */
	bool finished;   /* replied or finished */
	enum ly_rpc_code code;
	char details[512];
};

/* Frees `decoded` (leaves the rest as it is). */
void fake_rpc_call_cleanup(struct ly_rpc_call *call);

/* The last message sent or replied on any call, whole; NULL before any. */
const uint8_t *fake_rpc_last(size_t *len);

/* Forgets the last message (frees it): for a test's teardown. */
void fake_rpc_reset(void);

#endif /* LANYARD_TESTS_FAKE_RPC_H */
