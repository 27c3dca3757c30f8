/*
 * fed_endpoint.h: the SPIFFE bundle endpoint (SPIFFE_Federation.md §4, §5)
 * of lanyard-server: HTTPS on the server's libuv loop (TLS through OpenSSL
 * memory BIOs; never blocks the loop, never another thread).
 *
 *   GET /  -> 200 application/json, the trust domain's bundle as the
 *             server last published it (ly_fed_endpoint_set_bundle)
 *   other paths 404, other methods on / 405, a malformed head 400, a head
 *   over LY_HTTP_REQUEST_MAX 431 (federation.h: ly_fed_route_request).
 *   One request per connection ("Connection: close"), then close_notify.
 *
 * Profiles: https_spiffe serves the certificate the server hands over with
 * ly_fed_endpoint_set_identity (its X.509-SVID spiffe://TD/lanyard/server,
 * renewed with the agent listener's); https_web serves cert_file_path and
 * key_file_path (the key file must be mode 0600 or stricter, ours or
 * root's, and a regular file), read at start and again when either file changes (checked every
 * LY_FED_WEB_CHECK_MS) or on ly_fed_endpoint_reload (SIGHUP). A reload that
 * fails keeps the certificate in use and says why in the log.
 *
 * Bounds: at most LY_FED_ENDPOINT_CONNS_MAX connections, and
 * LY_FED_ENDPOINT_CONNS_PER_ADDR_MAX from one peer address (more are
 * closed at accept); a connection must complete its handshake and request
 * within LY_FED_ENDPOINT_TIMEOUT_MS; a request head is at most
 * LY_HTTP_REQUEST_MAX bytes; TLS 1.2 or later, no renegotiation.
 *
 * Ownership: ly_fed_endpoint_start returns a heap listener owned by the
 * caller; ly_fed_endpoint_stop closes every handle and frees it from the
 * close callbacks (run the loop after). Config strings are copied.
 * Loop thread only.
 */
#ifndef LANYARD_SERVER_FED_ENDPOINT_H
#define LANYARD_SERVER_FED_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "lib/error.h"
#include "server/federation.h"

#define LY_FED_WEB_CHECK_MS 5000

struct ly_fed_endpoint;

/* What the endpoint reports to the server's metrics: one call per answer. */
typedef void (*ly_fed_endpoint_answer_fn)(void *arg, int status);

ly_status ly_fed_endpoint_start(uv_loop_t *loop, const struct ly_fed_endpoint_config *cfg,
    ly_fed_endpoint_answer_fn on_answer, void *arg, struct ly_fed_endpoint **out, struct ly_error *err)
    LY_MUST_CHECK;
uint16_t ly_fed_endpoint_port(const struct ly_fed_endpoint *ep);

/* The bundle to serve (SPIFFE bundle JSON, `len` bytes); copied. Until the first call: 503. */
ly_status ly_fed_endpoint_set_bundle(struct ly_fed_endpoint *ep, const char *json, size_t len,
    struct ly_error *err) LY_MUST_CHECK;

/* https_spiffe: the certificate chain and key (PEM) to serve from now on; new connections use them. */
ly_status ly_fed_endpoint_set_identity(struct ly_fed_endpoint *ep, const char *chain_pem, size_t chain_len,
    const char *key_pem, size_t key_len, struct ly_error *err) LY_MUST_CHECK;

/* https_web: re-reads the certificate and key files now. */
ly_status ly_fed_endpoint_reload(struct ly_fed_endpoint *ep, struct ly_error *err) LY_MUST_CHECK;

void ly_fed_endpoint_stop(struct ly_fed_endpoint *ep);

/*
 * Reads a PEM file for serving: a regular file (a link is followed to it),
 * at most LY_PEM_FILE_MAX bytes; with `secret`, its mode must give nothing
 * to group or other and it must be ours or root's. Read by ly_fileread_fd:
 * *out is followed by a NUL that len does not count; free with
 * ly_buf_free_secret.
 */
struct ly_buf;
ly_status ly_fed_read_pem_file(const char *path, bool secret, struct ly_buf *out, struct ly_error *err)
    LY_MUST_CHECK;

#endif /* LANYARD_SERVER_FED_ENDPOINT_H */
