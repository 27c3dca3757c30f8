/*
 * admin_msg_audit.h: the Admin service's ListAuditLines request
 * (proto/admin.proto) decoded and checked before the datastore, like
 * admin_msg.h, and the reply made from the rows read:
 *   ListAuditLines  since: Unix seconds, 0..LY_AUDIT_SINCE_MAX (0: every
 *                   line kept); limit: 0 (LY_AUDIT_LIST_DEFAULT) or
 *                   1..LY_DS_AUDIT_LIST_MAX.
 * Failures are LY_E_INVALID with a one-line message (INVALID_ARGUMENT).
 *
 * Ownership: a decoded request holds nothing (its fields are copied); a
 * reply made by ly_admin_msg_audit_reply borrows the rows' strings and is
 * freed with ly_admin_msg_audit_reply_cleanup, before the rows.
 * Pure: no I/O, no global state; any thread.
 */
#ifndef LANYARD_SERVER_ADMIN_MSG_AUDIT_H
#define LANYARD_SERVER_ADMIN_MSG_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "admin.pb-c.h"
#include "lib/error.h"
#include "server/datastore_audit.h"

/* Lines a list returns when the request names no limit. */
#define LY_AUDIT_LIST_DEFAULT 100
/* The latest `since` accepted (year 9999: anything later is a mistake). */
#define LY_AUDIT_SINCE_MAX INT64_C(253402300799)

struct ly_admin_msg_audit_list {
	int64_t since;
	size_t limit; /* the default applied */
};

/* Decodes and checks (see the top). */
ly_status ly_admin_msg_audit_list_decode(const uint8_t *data, size_t len, struct ly_admin_msg_audit_list *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * `audit list -since`: an RFC 3339 time ("2026-12-07T10:00:00Z",
 * "2026-12-07T12:00:00.5+02:00"; fractions dropped) or a duration back
 * from `now` (one or more <digits><unit>, units d, h, m, s in that order:
 * "90s", "15m", "2h30m", "7d") into Unix seconds (never negative: a
 * duration further back than 1970 is 0). LY_E_INVALID with a one-line
 * message otherwise.
 */
ly_status ly_admin_msg_audit_since_parse(const char *s, int64_t now, int64_t *out, struct ly_error *err)
    LY_MUST_CHECK;

/* The AuditLineList of `rows` (oldest first), borrowing their strings. */
struct ly_admin_msg_audit_reply {
	Lanyard__Admin__V1__AuditLineList msg;
	Lanyard__Admin__V1__AuditLine *lines;
	Lanyard__Admin__V1__AuditLine **ptrs;
};

ly_status ly_admin_msg_audit_reply(const struct ly_ds_audit_list *rows, struct ly_admin_msg_audit_reply *out,
    struct ly_error *err) LY_MUST_CHECK;
void ly_admin_msg_audit_reply_cleanup(struct ly_admin_msg_audit_reply *r);

#endif /* LANYARD_SERVER_ADMIN_MSG_AUDIT_H */
