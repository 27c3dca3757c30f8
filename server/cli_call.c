/*
 * cli_call.c: what every admin verb (cli.c, cli_fed.c) stands on
 * (cli_internal.h): one unary call to the server's Admin service over its
 * Unix socket (the peer judged first, lib/sockpath.h; a loop and a
 * channel of its own, closed before it returns), the flags of a verb, and
 * a Bundle message read back as a struct ly_bundle.
 *
 * Ownership: a call's answer is the caller's (*resp, freed with
 * ly_buf_free_secret: it may hold a join token); everything else lives
 * and dies within the call.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509.h>
#include <uv.h>

#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/cmdline.h"
#include "lib/config.h"
#include "lib/sockpath.h"
#include "rpc/rpc.h"
#include "server/cli_internal.h"

#define EXIT_RUNTIME LY_CMDLINE_EXIT_RUNTIME
/* How long one admin call may take. */
#define CALL_TIMEOUT_MS (30 * 1000)
#define fail(...) ly_cmdline_fail(__VA_ARGS__)

/* ---- the call ---------------------------------------------------------------- */

struct call_state {
	bool done;
	enum ly_rpc_code code;
	char details[LY_ERROR_MSG_MAX];
	struct ly_buf resp; /* may hold a token: freed with ly_buf_free_secret */
	bool nomem;
};

static void
on_message(struct ly_rpc_ccall *call, const uint8_t *msg, size_t len, void *arg)
{
	struct call_state *s = arg;

	ly_buf_free_secret(&s->resp);
	if (ly_buf_set(&s->resp, msg, len, NULL) != LY_OK)
		s->nomem = true;
}

static void
on_status(struct ly_rpc_ccall *call, enum ly_rpc_code code, const char *details, void *arg)
{
	struct call_state *s = arg;

	s->done = true;
	s->code = code;
	(void)snprintf(s->details, sizeof(s->details), "%s", details != NULL ? details : "");
}

/*
 * Calls `method` on the server at `socket` with `req`; on success the
 * response bytes are in *resp (free with ly_buf_free_secret) and 0 is
 * returned; otherwise the error is printed (prefixed with `what`) and the
 * exit code returned.
 */
int
ly_cli_call(const char *socket, const char *what, const char *method, const ProtobufCMessage *req,
    struct ly_buf *resp)
{
	char target[LY_CONFIG_VALUE_MAX + 8];
	struct call_state s = { .done = false };
	struct ly_error e;
	struct ly_rpc *rpc = NULL;
	struct ly_rpc_channel *ch = NULL;
	struct stat st;
	uv_loop_t loop;
	uint8_t *buf = NULL;
	size_t n;
	int code = EXIT_RUNTIME;

	if (stat(socket, &st) != 0)
		return fail(EXIT_RUNTIME, "cannot reach lanyard-server at %s: %s (is it running? see -socketPath)", socket,
		    strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return fail(EXIT_RUNTIME, "cannot reach lanyard-server at %s: not a socket", socket);
	/* Who listens there, judged before anything is sent or believed; the call goes over that very
	 * connection (sockpath.h, docs/security.md). */
	int fd;
	ly_status pc = ly_sockpath_peer_check(socket, NULL, &fd, &e);
	if (pc != LY_OK)
		return fail(EXIT_RUNTIME, "%s lanyard-server at %s: %s", pc == LY_E_IO ? "cannot reach" : "refusing", socket,
		    e.msg);
	n = protobuf_c_message_get_packed_size(req);
	buf = malloc(n > 0 ? n : 1);
	if (buf == NULL) {
		close(fd);
		return fail(EXIT_RUNTIME, "out of memory");
	}
	(void)protobuf_c_message_pack(req, buf);
	if (uv_loop_init(&loop) != 0) {
		close(fd);
		free(buf);
		return fail(EXIT_RUNTIME, "cannot start an event loop");
	}
	(void)snprintf(target, sizeof(target), "unix:%s", socket);
	struct ly_rpc_channel_config cc = { .target = target, .tls = NULL, .max_response = 0 };
	struct ly_rpc_call_config rc = {
		.method = method,
		.kind = LY_RPC_UNARY,
		.req = buf,
		.req_len = n,
		.timeout_ms = CALL_TIMEOUT_MS,
		.on_message = on_message,
		.on_status = on_status,
		.arg = &s,
	};
	if (ly_rpc_new(&loop, &rpc, &e) != LY_OK) {
		close(fd);
		fail(EXIT_RUNTIME, "%s: %s", what, e.msg);
		goto out;
	}
	if (ly_rpc_channel_new_fd(rpc, &cc, fd, &ch, &e) != LY_OK || ly_rpc_channel_call(ch, &rc, NULL, &e) != LY_OK) {
		fail(EXIT_RUNTIME, "%s: %s", what, e.msg);
		goto out;
	}
	while (!s.done)
		(void)uv_run(&loop, UV_RUN_ONCE);
	if (s.code == LY_RPC_OK && s.nomem) {
		fail(EXIT_RUNTIME, "%s: out of memory", what);
	} else if (s.code == LY_RPC_OK) {
		ly_buf_take(resp, &s.resp);
		code = 0;
	} else if (s.code == LY_RPC_UNAVAILABLE && strncmp(s.details, "datastore", 9) != 0) {
		fail(EXIT_RUNTIME, "cannot reach lanyard-server at %s: %s", socket, s.details);
	} else {
		fail(EXIT_RUNTIME, "%s: %s (%s)", what, s.details[0] != '\0' ? s.details : "failed",
		    ly_rpc_code_str(s.code));
	}
out:
	if (ch != NULL)
		ly_rpc_channel_free(ch);
	if (rpc != NULL)
		ly_rpc_close(rpc, NULL, NULL);
	(void)uv_run(&loop, UV_RUN_DEFAULT);
	(void)uv_loop_close(&loop);
	ly_buf_free_secret(&s.resp);
	free(buf);
	return code;
}

/* ---- flags ---------------------------------------------------------------------- */

/* Returns -1 to go on, else the exit code (0 after -h, EXIT_USAGE after a bad flag or a stray argument). */
int
ly_cli_parse_flags(const char *cmd, const char *synopsis, struct ly_flag *flags, size_t n, int argc, char **argv)
{
	return ly_cmdline_parse_flags("lanyard-server", cmd, synopsis, flags, n, argc, argv);
}

/* ---- the Bundle message -------------------------------------------------------------- */

/* The Bundle message as a struct ly_bundle (checked as any bundle is). */
ly_status
ly_cli_bundle_from_pb(const Lanyard__Agent__V1__Bundle *m, struct ly_bundle **out, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	ly_status rc;

	*out = NULL;
	LY_TRY(ly_bundle_new(m->trust_domain, &b, err));
	for (size_t i = 0; i < m->n_x509_authorities; i++) {
		rc = ly_bundle_add_x509_authority(b, m->x509_authorities[i].data, m->x509_authorities[i].len, err);
		if (rc != LY_OK)
			goto out;
	}
	for (size_t i = 0; i < m->n_jwt_authorities; i++) {
		const unsigned char *p = m->jwt_authorities[i]->public_key.data;
		EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)m->jwt_authorities[i]->public_key.len);
		if (key == NULL) {
			rc = ly_error_set(err, LY_E_INVALID, "JWT authority %s: unreadable public key",
			    m->jwt_authorities[i]->kid);
			goto out;
		}
		rc = ly_bundle_add_jwt_authority(b, m->jwt_authorities[i]->kid, key, err);
		EVP_PKEY_free(key);
		if (rc != LY_OK)
			goto out;
	}
	if ((rc = ly_bundle_update_sequence(b, m->sequence, err)) != LY_OK ||
	    (rc = ly_bundle_update_refresh_hint(b, m->refresh_hint > 0 ? (uint64_t)m->refresh_hint : 0, err)) != LY_OK)
		goto out;
	*out = b;
	b = NULL;
out:
	ly_bundle_free(b);
	return rc;
}
