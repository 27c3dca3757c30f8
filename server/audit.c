/* audit.c: see audit.h. */
#include "server/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/caps.h"
#include "lib/fsperm.h"
#include "lib/log.h"

struct ly_audit {
	int fd; /* -1: the log */
};

#define REDACTED "[redacted]"

ly_status
ly_audit_open(const char *path, struct ly_audit **out, struct ly_error *err)
{
	struct ly_audit *a;
	ly_status rc = LY_OK;

	*out = NULL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "audit: out of memory");
	a->fd = -1;
	if (path == NULL)
		goto done;
	/* Ours, not a link, group and other bits removed (fsperm.h): the log names every identity the server
	 * hands out. */
	rc = ly_fsperm_openat(AT_FDCWD, path, path, O_WRONLY | O_APPEND | O_CREAT, LY_FSPERM_TIGHTEN, &a->fd, err);
	if (rc != LY_OK) {
		(void)ly_error_wrap(err, rc, "cannot use audit log");
		goto out;
	}
done:
	*out = a;
	a = NULL;
out:
	ly_audit_close(a);
	return rc;
}

void
ly_audit_close(struct ly_audit *audit)
{
	if (audit == NULL)
		return;
	if (audit->fd >= 0)
		(void)close(audit->fd);
	free(audit);
}

void
ly_audit_scrub(const char *in, const char *secret, char *out, size_t size)
{
	size_t slen = secret != NULL ? strlen(secret) : 0, o = 0;

	if (size == 0)
		return;
	for (size_t i = 0; in[i] != '\0' && o + 1 < size;) {
		if (slen > 0 && strncmp(in + i, secret, slen) == 0) {
			for (size_t k = 0; REDACTED[k] != '\0' && o + 1 < size; k++)
				out[o++] = REDACTED[k];
			i += slen;
			continue;
		}
		out[o++] = in[i++];
	}
	out[o] = '\0';
}

/* Scrubs `in` into `buf` and makes it printable ASCII (anything else is '?'). */
static const char *
clean_field(const char *in, const char *secret, char *buf, size_t size)
{
	ly_audit_scrub(in, secret, buf, size);
	for (char *p = buf; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c >= 0x7f)
			*p = '?';
	}
	return buf;
}

/* `value` (already clean) as `key`, when present. */
static ly_status
put(json_t *obj, const char *key, const char *value, struct ly_error *err)
{
	if (value == NULL)
		return LY_OK;
	if (json_object_set_new(obj, key, json_string(value)) != 0)
		return ly_error_set(err, LY_E_NOMEM, "audit: out of memory");
	return LY_OK;
}

/* One field into `buf` (cut to `size` - 1 bytes), or NULL when absent. */
static const char *
clean_opt(const char *in, const char *secret, char *buf, size_t size)
{
	return in != NULL ? clean_field(in, secret, buf, size) : NULL;
}

void
ly_audit_clean(const struct ly_audit_record *in, struct ly_audit_clean *out)
{
	char detail[LY_ERROR_MSG_MAX];
	const char *s = in->secret;

	/* Field caps keep a line under LY_AUDIT_LINE_MAX even with every byte escaped twice. */
	out->rec.caller = clean_opt(in->caller, s, out->caller, sizeof(out->caller));
	out->rec.action = clean_opt(in->action, s, out->action, sizeof(out->action));
	out->rec.entry_id = clean_opt(in->entry_id, s, out->entry_id, sizeof(out->entry_id));
	out->rec.spiffe_id = clean_opt(in->spiffe_id, s, out->spiffe_id, sizeof(out->spiffe_id));
	out->rec.trust_domain = clean_opt(in->trust_domain, s, out->trust_domain, sizeof(out->trust_domain));
	out->rec.result = clean_opt(in->result, s, out->result, sizeof(out->result));
	out->rec.detail = NULL;
	if (in->detail != NULL) {
		ly_log_redact(in->detail, detail, sizeof(detail));
		out->rec.detail = clean_field(detail, s, out->detail, sizeof(out->detail));
	}
	out->rec.secret = NULL;
}

ly_status
ly_audit_format(const struct ly_audit_record *rec, time_t now, char **line, struct ly_error *err)
{
	char when[32], *json = NULL;
	struct tm tm;
	json_t *obj = NULL;
	struct ly_audit_clean *c = NULL;
	ly_status rc = LY_OK;

	*line = NULL;
	if (rec->action == NULL || rec->result == NULL)
		return ly_error_set(err, LY_E_INVALID, "audit: a record needs an action and a result");
	if (gmtime_r(&now, &tm) == NULL || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return ly_error_set(err, LY_E_INVALID, "audit: time %lld out of range", (long long)now);
	obj = json_object();
	c = malloc(sizeof(*c));
	if (obj == NULL || c == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "audit: out of memory");
		goto out;
	}
	ly_audit_clean(rec, c);
	if ((rc = put(obj, "time", when, err)) != LY_OK || (rc = put(obj, "caller", c->rec.caller, err)) != LY_OK ||
	    (rc = put(obj, "action", c->rec.action, err)) != LY_OK ||
	    (rc = put(obj, "entry_id", c->rec.entry_id, err)) != LY_OK ||
	    (rc = put(obj, "spiffe_id", c->rec.spiffe_id, err)) != LY_OK ||
	    (rc = put(obj, "trust_domain", c->rec.trust_domain, err)) != LY_OK ||
	    (rc = put(obj, "result", c->rec.result, err)) != LY_OK ||
	    (rc = put(obj, "detail", c->rec.detail, err)) != LY_OK)
		goto out;
	json = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (json == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "audit: out of memory");
		goto out;
	}
	size_t n = strlen(json);
	if (n + 2 > LY_AUDIT_LINE_MAX) {
		rc = ly_error_set(err, LY_E_INTERNAL, "audit: line over %d bytes", LY_AUDIT_LINE_MAX);
		goto out;
	}
	*line = malloc(n + 2);
	if (*line == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "audit: out of memory");
		goto out;
	}
	memcpy(*line, json, n);
	(*line)[n] = '\n';
	(*line)[n + 1] = '\0';
out:
	free(json);
	free(c);
	json_decref(obj);
	return rc;
}

ly_status
ly_audit_write(struct ly_audit *audit, const struct ly_audit_record *rec, time_t now, struct ly_error *err)
{
	char *line = NULL;
	ly_status rc;

	rc = ly_audit_format(rec, now, &line, err);
	if (rc != LY_OK)
		return rc;
	size_t len = strlen(line);
	if (audit->fd < 0) {
		line[len - 1] = '\0';
		log_info("audit %s", line);
		goto out;
	}
	/* O_APPEND: one write(2) puts the whole line at the end. */
	for (size_t off = 0; off < len;) {
		ssize_t w = write(audit->fd, line + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = ly_error_set(err, LY_E_IO, "audit log: write: %s", w < 0 ? strerror(errno) : "short write");
			goto out;
		}
		off += (size_t)w;
	}
	if (fdatasync(audit->fd) != 0)
		rc = ly_error_set(err, LY_E_IO, "audit log: fdatasync: %s", strerror(errno));
out:
	free(line);
	return rc;
}
