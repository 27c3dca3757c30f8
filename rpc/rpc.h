/*
 * rpc.h: gRPC core driven from a libuv loop, for both daemons.
 *
 * One struct ly_rpc per loop owns a gRPC completion queue and one thread
 * that blocks in grpc_completion_queue_next and only hands completions to
 * the loop (a locked list + an eventfd on a uv_poll_t). Everything else runs on the loop
 * thread: every gRPC batch is started there, and every callback below is
 * called there, except ly_rpc_verify_cb (see there). Messages are opaque
 * bytes: protobuf packing belongs to the daemons. Neither gRPC nor libuv
 * types appear here; only rpc/bridge.c includes both uv.h and grpc/grpc.h.
 *
 * Server side: a method table, one generic request kept outstanding,
 * unknown methods answered UNIMPLEMENTED at once, exactly one request
 * message per call (capped), then a reply (unary) or messages over time
 * with "latest wins" (server stream), then a status. Listeners: TCP with TLS
 * (rotatable certificate), a Unix socket path (admin), connected fds handed
 * over by the caller (Workload API, with a per-connection context).
 * Client side: channels over TLS that authenticate the server through a
 * caller-supplied check of its certificate (a SPIFFE ID, X509-SVID standard
 * §5), or plaintext over a Unix socket; unary and server-streaming calls.
 *
 * Lifetimes (libuv's rules):
 *  - ly_rpc_new / ly_rpc_close: close is asynchronous; it cancels every call,
 *    shuts every server and channel down, joins the thread, and calls its
 *    callback from the loop when all memory is released. Servers and
 *    channels need not be freed first. Nothing may be called on the
 *    ly_rpc or its objects after ly_rpc_close, except finishing calls still
 *    held (they must be finished for close to complete).
 *  - A server call (struct ly_rpc_call) is handed to the method's handler
 *    and must be released exactly once with ly_rpc_call_reply or
 *    ly_rpc_call_finish, also after its closed callback ran; the pointer is
 *    invalid after that. Strings the getters return live as long as the call.
 *  - A client call (struct ly_rpc_ccall) ends with exactly one on_status
 *    callback, the last; the pointer is invalid once it returns. An error
 *    return from ly_rpc_channel_call means no callback ever runs.
 *  - Buffers passed to callbacks are valid only during the callback, and are
 *    wiped after it (they may carry keys: X509SVIDResponse.x509_svid_key).
 *
 * Errors: functions return ly_status with a message in `err`; what a peer
 * sees is a gRPC status (enum ly_rpc_code).
 */
#ifndef LANYARD_RPC_H
#define LANYARD_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"

struct uv_loop_s; /* uv_loop_t */

struct ly_rpc;
struct ly_rpc_server;
struct ly_rpc_call;
struct ly_rpc_channel;
struct ly_rpc_ccall;

/* gRPC status codes (same numbers as grpc_status_code). */
enum ly_rpc_code {
	LY_RPC_OK = 0,
	LY_RPC_CANCELLED = 1,
	LY_RPC_UNKNOWN = 2,
	LY_RPC_INVALID_ARGUMENT = 3,
	LY_RPC_DEADLINE_EXCEEDED = 4,
	LY_RPC_NOT_FOUND = 5,
	LY_RPC_ALREADY_EXISTS = 6,
	LY_RPC_PERMISSION_DENIED = 7,
	LY_RPC_RESOURCE_EXHAUSTED = 8,
	LY_RPC_FAILED_PRECONDITION = 9,
	LY_RPC_ABORTED = 10,
	LY_RPC_OUT_OF_RANGE = 11,
	LY_RPC_UNIMPLEMENTED = 12,
	LY_RPC_INTERNAL = 13,
	LY_RPC_UNAVAILABLE = 14,
	LY_RPC_DATA_LOSS = 15,
	LY_RPC_UNAUTHENTICATED = 16,
};

/* "OK", "CANCELLED", ... "UNAUTHENTICATED"; "?" for anything else. */
const char *ly_rpc_code_str(enum ly_rpc_code code);

/* Flags for messages sent. */
#define LY_RPC_WIPE 0x1u           /* wipe our copy of the message once gRPC releases it */
#define LY_RPC_WAIT_FOR_READY 0x2u /* client call: wait for a connection instead of failing fast */

enum ly_rpc_kind {
	LY_RPC_UNARY = 0,
	LY_RPC_SERVER_STREAM = 1,
	/*
	 * Servers only: the client streams too (Envoy's StreamSecrets). The
	 * handler gets the first request; later ones go to the callback set
	 * with ly_rpc_call_set_message_cb. Sends as on a server stream.
	 */
	LY_RPC_BIDI_STREAM = 2,
};

/* ---- the bridge ---------------------------------------------------------- */

/* Starts gRPC (grpc_init), the completion queue and its thread, on `loop`. */
ly_status ly_rpc_new(struct uv_loop_s *loop, struct ly_rpc **out, struct ly_error *err) LY_MUST_CHECK;

typedef void (*ly_rpc_close_cb)(void *arg);

/*
 * Stops everything and frees `rpc` asynchronously (see the top of this
 * file); `cb` (may be NULL) runs on the loop once all is released. A second
 * call is ignored.
 */
void ly_rpc_close(struct ly_rpc *rpc, ly_rpc_close_cb cb, void *arg);

/* ---- servers ------------------------------------------------------------- */

/*
 * Called on the loop with the one request message (`req`, `len` bytes,
 * wiped after return: copy what you keep). `arg` is the server's.
 */
typedef void (*ly_rpc_handler_cb)(struct ly_rpc_call *call, const uint8_t *req, size_t len,
    void *arg);

struct ly_rpc_method {
	const char *path; /* full method name, "/SpiffeWorkloadAPI/FetchX509SVID" */
	enum ly_rpc_kind kind;
	ly_rpc_handler_cb handler;
};

struct ly_rpc_server_config {
	const struct ly_rpc_method *methods; /* borrowed: must outlive the server */
	size_t n_methods;
	void *arg;          /* handed to every handler and to conn_release */
	size_t max_request; /* one request message; 0: LY_RPC_MSG_MAX; at most LY_RPC_MSG_MAX */
	/* Called once per ly_rpc_server_add_fd context, when the connection hung
	 * up and no call refers to it any more (may be NULL). */
	void (*conn_release)(void *conn_ctx, void *arg);
	/* Its peers passed an access check of their own (the admin socket's
	 * SO_PEERCRED): the memory guard (lib/caps.h LY_RPC_SHED_GROWTH_MAX)
	 * never sheds its connections, so an operator can act during a flood. */
	bool trusted;
	/* Under that guard, whether a handed-over connection is to be kept
	 * although no call is being served on it yet (may be NULL): the agent
	 * keeps those of callers entitled to an identity. */
	bool (*conn_keep)(void *conn_ctx, void *arg);
	/* Told when that guard shed a handed-over connection (may be NULL). */
	void (*conn_shed)(void *conn_ctx, void *arg);
	/*
	 * Methods whose path starts with `large_service` ("/pkg.Service/"; NULL:
	 * none) take requests up to `large_max_request` instead (at most
	 * LY_RPC_MSG_MAX): Envoy's SDS requests on the Workload API's server.
	 */
	const char *large_service;
	size_t large_max_request;
	/*
	 * One message sent (a reply or a stream message); 0: LY_RPC_MSG_MAX; at
	 * most LY_RPC_RESPONSE_MAX. ly_rpc_call_send / _reply refuse a larger
	 * one with LY_E_LIMIT (check first to answer with a status of yours).
	 */
	size_t max_response;
};

ly_status ly_rpc_server_new(struct ly_rpc *rpc, const struct ly_rpc_server_config *cfg,
    struct ly_rpc_server **out, struct ly_error *err) LY_MUST_CHECK;

enum ly_rpc_client_auth {
	LY_RPC_CLIENT_CERT_NONE = 0,    /* no client certificate asked for */
	LY_RPC_CLIENT_CERT_REQUEST = 1, /* asked for; verified against the roots when given */
	LY_RPC_CLIENT_CERT_REQUIRE = 2, /* required and verified against the roots */
};

/* PEM strings, borrowed: copied by the functions that take them. */
struct ly_rpc_tls_server {
	const char *cert_chain_pem;   /* leaf first */
	const char *key_pem;          /* wiped from our copy when replaced or freed */
	const char *client_roots_pem; /* required unless client_auth is NONE */
	enum ly_rpc_client_auth client_auth;
};

/*
 * Listens on `addr` ("0.0.0.0:8081", "127.0.0.1:0") with TLS; *port (may be
 * NULL) receives the bound port. One TLS listener per server. Before start.
 */
ly_status ly_rpc_server_listen_tls(struct ly_rpc_server *srv, const char *addr,
    const struct ly_rpc_tls_server *tls, int *port, struct ly_error *err) LY_MUST_CHECK;

/*
 * Rotates the TLS listener's certificate, key and client roots without a
 * restart: each later handshake uses them, open connections keep theirs.
 * client_auth must be the one the listener was created with.
 */
ly_status ly_rpc_server_set_tls(struct ly_rpc_server *srv, const struct ly_rpc_tls_server *tls,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Listens on a Unix socket path (admin API). The socket's directory is
 * created 0700 if missing (parents 0755); an existing one must be a
 * directory owned by us with no group or other access. A stale socket at
 * `path` is replaced; the socket is made 0600. gRPC's own listener gives no
 * peer credentials: access control is the directory's. Before start.
 */
ly_status ly_rpc_server_listen_unix(struct ly_rpc_server *srv, const char *path,
    struct ly_error *err) LY_MUST_CHECK;

/* Starts serving and keeps one generic request outstanding. */
ly_status ly_rpc_server_start(struct ly_rpc_server *srv, struct ly_error *err) LY_MUST_CHECK;

/*
 * Serves one connected socket `fd` (borrowed: it is duplicated, the caller
 * closes its own whenever it likes). Every call on that connection carries
 * `conn_ctx` (ly_rpc_call_conn_ctx); conn_release gets it back once the
 * connection hung up and its last call ended. Plaintext only (gRPC's rule
 * for handed-over fds). After start. On error conn_release is not called.
 * LY_E_LIMIT: the memory guard refused a connection not kept (cfg.trusted,
 * cfg.conn_keep), memory being over its level or too many bytes already
 * queued this tick (lib/caps.h LY_RPC_HANDOVER_QUEUED_MAX); cfg.conn_shed
 * was told first.
 */
ly_status ly_rpc_server_add_fd(struct ly_rpc_server *srv, int fd, void *conn_ctx,
    struct ly_error *err) LY_MUST_CHECK;

/* ---- server calls (handlers) ----------------------------------------------- */

/* The full method name. */
const char *ly_rpc_call_method(const struct ly_rpc_call *call);
/* gRPC's peer string: "ipv4:127.0.0.1:5000", "unix:", "fd:12". */
const char *ly_rpc_call_peer(const struct ly_rpc_call *call);
/*
 * The caller's SPIFFE ID from its TLS client certificate (verified against
 * the listener's client roots during the handshake): gRPC's peer_spiffe_id,
 * else the certificate's only URI SAN when it is a spiffe:// URI. NULL
 * without a verified client certificate.
 */
const char *ly_rpc_call_peer_spiffe_id(const struct ly_rpc_call *call);
/* The caller's verified leaf certificate in PEM, or NULL. */
const char *ly_rpc_call_peer_cert_pem(const struct ly_rpc_call *call);
/* The conn_ctx of ly_rpc_server_add_fd for calls on handed-over fds, else NULL. */
void *ly_rpc_call_conn_ctx(const struct ly_rpc_call *call);
/*
 * The first value of request metadata `key` (lower case), *len bytes (not
 * NUL-terminated), or NULL when absent.
 */
const uint8_t *ly_rpc_call_metadata(const struct ly_rpc_call *call, const char *key, size_t *len);

typedef void (*ly_rpc_closed_cb)(struct ly_rpc_call *call, void *arg);

/*
 * `cb` runs once if the call ends before the handler released it: client
 * cancelled or vanished, deadline passed, ly_rpc_close. Sends are dropped
 * from then on; the handler must still release the call (ly_rpc_call_finish).
 */
void ly_rpc_call_set_closed_cb(struct ly_rpc_call *call, ly_rpc_closed_cb cb, void *arg);

/*
 * LY_RPC_BIDI_STREAM calls: `cb` gets each request after the first (`msg`
 * wiped after return), one at a time, until the client half-closes or the
 * call ends; then no more. Set it in the handler: no further request is
 * received before it is set. A request over the server's max_request ends
 * the call RESOURCE_EXHAUSTED (the closed callback follows).
 */
typedef void (*ly_rpc_message_in_cb)(struct ly_rpc_call *call, const uint8_t *msg, size_t len, void *arg);
void ly_rpc_call_set_message_cb(struct ly_rpc_call *call, ly_rpc_message_in_cb cb, void *arg);

/*
 * Server and bidirectional streams only: sends one message (copied). One
 * send is in flight at a time; while it is, only the latest queued message
 * is kept. Returns LY_OK and drops the message once the call is closed.
 */
ly_status ly_rpc_call_send(struct ly_rpc_call *call, const uint8_t *msg, size_t len,
    unsigned flags, struct ly_error *err) LY_MUST_CHECK;

/*
 * Sends `msg` (copied) then status OK, and releases the call. The call is
 * released even on error (it is then finished with INTERNAL).
 */
ly_status ly_rpc_call_reply(struct ly_rpc_call *call, const uint8_t *msg, size_t len,
    unsigned flags, struct ly_error *err) LY_MUST_CHECK;

/*
 * Ends the call with `code` and `details` (may be NULL; never put a secret
 * there) after any queued message, and releases it.
 */
void ly_rpc_call_finish(struct ly_rpc_call *call, enum ly_rpc_code code, const char *details);

/* ---- client channels ------------------------------------------------------- */

/*
 * Checks the server's certificate after gRPC verified its chain to
 * root_pem: `leaf_pem` is the leaf, `chain_pem` the chain as the server sent
 * it (may be NULL). Return LY_OK to accept; anything else refuses the
 * handshake (the call fails UNAVAILABLE). Runs on a gRPC thread, during each
 * new connection's handshake: it must be thread-safe and must not touch
 * loop-owned state. It is never called after ly_rpc_channel_free returned.
 */
typedef ly_status (*ly_rpc_verify_cb)(void *arg, const char *leaf_pem, const char *chain_pem,
    struct ly_error *err);

struct ly_rpc_tls_client {
	const char *root_pem;       /* trust bundle, PEM; required */
	const char *cert_chain_pem; /* our certificate for mTLS, or NULL */
	const char *key_pem;        /* its key (with cert_chain_pem), or NULL */
	ly_rpc_verify_cb verify;    /* required */
	void *verify_arg;
};

struct ly_rpc_channel_config {
	const char *target; /* "host:port" (TLS), or "unix:/path" */
	/* TLS settings; NULL means plaintext, refused unless target is unix: */
	const struct ly_rpc_tls_client *tls;
	size_t max_response; /* one response message; 0: LY_RPC_MSG_MAX; at most LY_RPC_RESPONSE_MAX */
};

/*
 * Creates a channel (connects lazily, on the first call). Each channel has
 * its own connections, so a channel made after a rotation never reuses a
 * connection made with the old credentials.
 */
ly_status ly_rpc_channel_new(struct ly_rpc *rpc, const struct ly_rpc_channel_config *cfg,
    struct ly_rpc_channel **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * The same over `fd`, a Unix socket already connected (and judged, e.g. by
 * ly_sockpath_peer_check) by the caller; plaintext only (cfg->tls NULL),
 * cfg->target only names it. The channel owns fd from the call on (closed
 * on error too) and never reconnects: once that connection is gone, calls
 * fail UNAVAILABLE; make a new channel.
 */
ly_status ly_rpc_channel_new_fd(struct ly_rpc *rpc, const struct ly_rpc_channel_config *cfg, int fd,
    struct ly_rpc_channel **out, struct ly_error *err) LY_MUST_CHECK;

/* Cancels the channel's calls (each still gets its on_status) and frees it. */
void ly_rpc_channel_free(struct ly_rpc_channel *ch);

/* ---- client calls ---------------------------------------------------------- */

struct ly_rpc_md {
	const char *key; /* lower case, "workload.spiffe.io" */
	const char *value;
};

/* A response message, valid during the callback only (wiped afterwards). */
typedef void (*ly_rpc_message_cb)(struct ly_rpc_ccall *call, const uint8_t *msg, size_t len,
    void *arg);
/* The final status; the last callback of the call. `details` may be "". */
typedef void (*ly_rpc_status_cb)(struct ly_rpc_ccall *call, enum ly_rpc_code code,
    const char *details, void *arg);

struct ly_rpc_call_config {
	const char *method; /* "/lanyard.agent.Agent/Attest" */
	enum ly_rpc_kind kind;
	const uint8_t *req; /* the one request message, copied */
	size_t req_len;
	unsigned flags;        /* LY_RPC_WIPE, LY_RPC_WAIT_FOR_READY */
	int64_t timeout_ms;    /* deadline from now; <= 0: none */
	const struct ly_rpc_md *md; /* request metadata, copied */
	size_t n_md;
	/* Unary: called once, before on_status, only when the status is OK.
	 * Stream: once per message. */
	ly_rpc_message_cb on_message;
	ly_rpc_status_cb on_status; /* required */
	void *arg;
};

/*
 * Starts a call. *out (may be NULL) receives a handle for
 * ly_rpc_ccall_cancel, valid until on_status returns.
 */
ly_status ly_rpc_channel_call(struct ly_rpc_channel *ch, const struct ly_rpc_call_config *cfg,
    struct ly_rpc_ccall **out, struct ly_error *err) LY_MUST_CHECK;

/* Cancels the call; on_status follows (CANCELLED unless it had ended). */
void ly_rpc_ccall_cancel(struct ly_rpc_ccall *call);

#endif /* LANYARD_RPC_H */
