/* admin_msg_audit.c: see admin_msg_audit.h. */
#include "server/admin_msg_audit.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char empty_str[] = "";

/* protobuf-c wants char * for strings it only reads when packing; NULL is the empty string. */
static char *
pb_str(const char *s)
{
	return s != NULL ? (char *)(uintptr_t)s : empty_str;
}

ly_status
ly_admin_msg_audit_list_decode(const uint8_t *data, size_t len, struct ly_admin_msg_audit_list *out,
    struct ly_error *err)
{
	Lanyard__Admin__V1__ListAuditLinesRequest *m;
	ly_status rc = LY_OK;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__list_audit_lines_request__unpack(NULL, len, data)) == NULL)
		return ly_error_set(err, LY_E_INVALID, "malformed request");
	if (m->since < 0 || m->since > LY_AUDIT_SINCE_MAX)
		rc = ly_error_set(err, LY_E_INVALID, "since must be a time between 1970 and 9999");
	else if (m->limit > LY_DS_AUDIT_LIST_MAX)
		rc = ly_error_set(err, LY_E_INVALID, "limit must be between 1 and %d", LY_DS_AUDIT_LIST_MAX);
	out->since = m->since;
	out->limit = m->limit == 0 ? LY_AUDIT_LIST_DEFAULT : m->limit;
	lanyard__admin__v1__list_audit_lines_request__free_unpacked(m, NULL);
	return rc;
}

/* `n` digits at s into *v; false when any is not a digit. */
static bool
digits(const char *s, size_t n, int *v)
{
	*v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		*v = *v * 10 + (s[i] - '0');
	}
	return true;
}

/* RFC 3339 section 5.6 date-time; false when `s` is not one. */
static bool
parse_rfc3339(const char *s, int64_t *out)
{
	struct tm tm;
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	size_t i = 19;

	if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
	    s[16] != ':')
		return false;
	if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) ||
	    !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec))
		return false;
	if (s[i] == '.') {
		size_t start = ++i;
		while (s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return false;
	}
	if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == '\0') {
		sign = 0;
	} else if ((s[i] == '+' || s[i] == '-') && strlen(s + i) == 6 && s[i + 3] == ':' && digits(s + i + 1, 2, &oh) &&
	    digits(s + i + 4, 2, &om)) {
		sign = s[i] == '+' ? 1 : -1;
	} else {
		return false;
	}
	/* RFC 3339: leap second 60 allowed; days checked by the round trip below. */
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec == 60 ? 59 : sec;
	time_t t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != mo - 1)
		return false;
	*out = (int64_t)t - sign * (oh * 3600 + om * 60);
	if (*out < 0)
		*out = 0;
	return true;
}

/* A duration (see the header); false when `s` is not one. */
static bool
parse_duration(const char *s, int64_t *out)
{
	static const char units[] = "dhms";
	static const int64_t mult[] = { 86400, 3600, 60, 1 };
	size_t next = 0, i = 0;
	int64_t total = 0;

	if (s[0] == '\0')
		return false;
	while (s[i] != '\0') {
		int64_t v = 0;
		size_t start = i;
		while (s[i] >= '0' && s[i] <= '9') {
			if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
				return false;
			i++;
		}
		const char *u = s[i] != '\0' ? memchr(units + next, s[i], sizeof(units) - 1 - next) : NULL;
		if (i == start || u == NULL)
			return false;
		next = (size_t)(u - units) + 1;
		if (__builtin_mul_overflow(v, mult[next - 1], &v) || __builtin_add_overflow(total, v, &total))
			return false;
		i++;
	}
	*out = total;
	return true;
}

ly_status
ly_admin_msg_audit_since_parse(const char *s, int64_t now, int64_t *out, struct ly_error *err)
{
	int64_t v;

	*out = 0;
	if (s != NULL && parse_rfc3339(s, &v)) {
		*out = v;
		return LY_OK;
	}
	if (s != NULL && parse_duration(s, &v)) {
		*out = v >= now ? 0 : now - v;
		return LY_OK;
	}
	return ly_error_set(err, LY_E_INVALID,
	    "not an RFC 3339 time (2026-12-07T10:00:00Z) or a duration (90s, 15m, 2h30m, 7d)");
}

ly_status
ly_admin_msg_audit_reply(const struct ly_ds_audit_list *rows, struct ly_admin_msg_audit_reply *out,
    struct ly_error *err)
{
	memset(out, 0, sizeof(*out));
	lanyard__admin__v1__audit_line_list__init(&out->msg);
	out->lines = calloc(rows->n + 1, sizeof(*out->lines));
	out->ptrs = calloc(rows->n + 1, sizeof(*out->ptrs));
	if (out->lines == NULL || out->ptrs == NULL) {
		ly_admin_msg_audit_reply_cleanup(out);
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < rows->n; i++) {
		const struct ly_ds_audit_row *r = &rows->items[i];
		Lanyard__Admin__V1__AuditLine *l = &out->lines[i];
		lanyard__admin__v1__audit_line__init(l);
		l->id = r->id;
		l->time = r->time;
		l->server = pb_str(r->server);
		l->caller = pb_str(r->caller);
		l->action = pb_str(r->action);
		l->entry_id = pb_str(r->entry_id);
		l->spiffe_id = pb_str(r->spiffe_id);
		l->trust_domain = pb_str(r->trust_domain);
		l->result = pb_str(r->result);
		l->detail = pb_str(r->detail);
		out->ptrs[i] = l;
	}
	out->msg.n_lines = rows->n;
	out->msg.lines = out->ptrs;
	return LY_OK;
}

void
ly_admin_msg_audit_reply_cleanup(struct ly_admin_msg_audit_reply *r)
{
	free(r->lines);
	free(r->ptrs);
	memset(r, 0, sizeof(*r));
}
