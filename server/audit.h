/*
 * audit.h: one audit line per admin change (DESIGN "The server": who,
 * what, when; never key material).
 *
 * A line is one JSON object, keys in this order, absent fields left out:
 *   {"time":"2024-05-01T12:00:00Z","caller":"uid:1000","action":"entry.create",
 *    "entry_id":"...","spiffe_id":"spiffe://...","trust_domain":"b.test","result":"ok"}
 *   {"time":...,"action":"entry.create",...,"result":"INVALID_ARGUMENT",
 *    "detail":"selector 1: ..."}
 * `result` is "ok" or the gRPC status name the caller got; `detail` is the
 * refusal's one-line message. Lines go to the audit file (created 0600,
 * opened O_APPEND, each line one write(2) then fdatasync: an acknowledged
 * change is never missing from a file that survived), or, without a file,
 * to the log at info level prefixed "audit ".
 *
 * Secrets: callers pass no key, no token, no SVID. As a second fence a
 * record may name one `secret` (a join token being issued): every
 * occurrence of it in any field is replaced by "[redacted]" before the line
 * is written (the default join-token agent ID embeds the token, SPEC §2),
 * and `detail` also goes through the log redactor (JWTs, PEM blocks, long
 * base64 runs).
 *
 * Ownership: ly_audit_open returns a heap object freed with
 * ly_audit_close. ly_audit_format returns a malloc'd line (free()).
 * Thread-safety: none; the server's loop thread writes.
 */
#ifndef LANYARD_SERVER_AUDIT_H
#define LANYARD_SERVER_AUDIT_H

#include <time.h>

#include "lib/caps.h"
#include "lib/error.h"

struct ly_audit;

/* What one line says. Every field but action and result may be NULL. */
struct ly_audit_record {
	const char *caller;    /* "uid:1000", or "admin-socket" when unknown */
	const char *action;    /* "entry.create", "token.generate", "agent.ban", ... */
	const char *entry_id;
	const char *spiffe_id;
	const char *trust_domain; /* federation (bundle.*, federation.*): the other trust domain */
	const char *result;    /* "ok" or a status name */
	const char *detail;    /* why it was refused; on success, what the change did (bundle.delete's mode) */
	const char *secret;    /* never written: scrubbed from every field (not itself logged) */
};

/* LY_AUDIT_LINE_MAX (lib/caps.h): the longest line written; longer fields are cut to fit. */

/*
 * A record as every sink writes it (the file or log line, and the shared
 * trail's row, datastore_audit.h): each field scrubbed of `secret`, made
 * printable ASCII ('?' for anything else) and cut to its cap; `detail`
 * through the log redactor first. rec's fields point into the buffers
 * below (NULL where the input's was); rec.secret is always NULL.
 */
struct ly_audit_clean {
	struct ly_audit_record rec;
	char caller[64], action[64], entry_id[128], spiffe_id[LY_SPIFFE_ID_MAX + 1],
	    trust_domain[LY_TRUST_DOMAIN_MAX + 1], result[64], detail[1024];
};

/* Fills `out` from `in` (see struct ly_audit_clean). Never fails. */
void ly_audit_clean(const struct ly_audit_record *in, struct ly_audit_clean *out);

/*
 * Opens the audit sink: the file at `path` (created 0600 if absent; an
 * existing file loses group and other access; symlinks refused), or the
 * log when `path` is NULL. *out: free with ly_audit_close.
 */
ly_status ly_audit_open(const char *path, struct ly_audit **out, struct ly_error *err) LY_MUST_CHECK;

/* Closes the file (if any) and frees. NULL is allowed. */
void ly_audit_close(struct ly_audit *audit);

/*
 * Formats one line (JSON, newline-terminated) for `rec` at `now` into
 * *line (free()). LY_E_INVALID when action or result is missing.
 */
ly_status ly_audit_format(const struct ly_audit_record *rec, time_t now, char **line, struct ly_error *err)
    LY_MUST_CHECK;

/* Formats and writes one line. LY_E_IO when the file refuses it. */
ly_status ly_audit_write(struct ly_audit *audit, const struct ly_audit_record *rec, time_t now,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Copies `in` to `out` (size `size`, always NUL-terminated) with every
 * occurrence of `secret` (if non-NULL and non-empty) replaced by
 * "[redacted]". Occurrences are found in `in` before anything is copied,
 * so truncation at the end of `out` never leaves a piece of the secret.
 */
void ly_audit_scrub(const char *in, const char *secret, char *out, size_t size);

#endif /* LANYARD_SERVER_AUDIT_H */
