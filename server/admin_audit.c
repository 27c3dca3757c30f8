/* admin_audit.c: see admin_audit.h. */
#include "server/admin_audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/caps.h"
#include "lib/log.h"

/* The host name, read once (loop thread): every server of a process runs on the same host. */
static char host_name[LY_DS_AUDIT_SERVER_MAX + 1];

const char *
ly_admin_audit_server(const struct ly_server *srv)
{
	if (srv->server_id[0] != '\0')
		return srv->server_id;
	if (host_name[0] == '\0') {
		char h[LY_DS_AUDIT_SERVER_MAX + 1];
		if (gethostname(h, sizeof(h)) != 0 || h[0] == '\0')
			(void)snprintf(h, sizeof(h), "localhost");
		h[sizeof(h) - 1] = '\0';
		/* Stored as given only when printable (datastore_audit.c refuses the rest). */
		for (char *p = h; *p != '\0'; p++)
			if ((unsigned char)*p < 0x21 || (unsigned char)*p >= 0x7f)
				*p = '?';
		(void)snprintf(host_name, sizeof(host_name), "%s", h);
	}
	return host_name;
}

ly_status
ly_admin_audit_run(struct ly_ds_audit_txn *t, ly_dsa_work_fn *work, struct ly_datastore *ds, void *ctx,
    struct ly_error *err)
{
	ly_status rc;

	ly_datastore_audit_arm(ds, t);
	rc = work(ds, ctx, err);
	ly_datastore_audit_disarm(ds, t);
	return rc;
}

/* ---- a row of its own ---- */

struct store_call {
	struct ly_audit_clean c; /* no secret left in it */
	char server[LY_DS_AUDIT_SERVER_MAX + 1];
	int64_t time;
};

static ly_status
store_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct store_call *s = ctx;

	return ly_datastore_audit_append(ds, &s->c.rec, s->server, s->time, err);
}

static void
store_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct store_call *s = ctx;

	if (st != LY_OK)
		log_error("audit row for %s not stored in the datastore: %s", s->c.rec.action, err->msg);
}

void
ly_admin_audit_store(struct ly_server *srv, const struct ly_audit_record *rec, time_t now)
{
	struct store_call *s;
	struct ly_error e;

	if (srv->dsa == NULL || rec->action == NULL || rec->result == NULL)
		return;
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_error("audit row for %s not stored in the datastore: out of memory", rec->action);
		return;
	}
	ly_audit_clean(rec, &s->c);
	(void)snprintf(s->server, sizeof(s->server), "%s", ly_admin_audit_server(srv));
	s->time = (int64_t)now;
	if (ly_dsa_submit(srv->dsa, store_work, store_done, NULL, s, 0, &e) != LY_OK) {
		log_error("audit row for %s not stored in the datastore: %s", rec->action, e.msg);
		free(s);
	}
}

/* ---- retention ---- */

struct prune_call {
	int64_t before;
	size_t removed;
};

static ly_status
prune_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct prune_call *p = ctx;

	return ly_datastore_audit_prune(ds, p->before, LY_AUDIT_ROWS_MAX, &p->removed, err);
}

static void
prune_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct prune_call *p = ctx;

	if (st != LY_OK)
		log_warn("audit trail pruning failed: %s", err->msg);
	else if (p->removed > 0)
		log_info("%zu audit lines past retention deleted", p->removed);
}

void
ly_admin_audit_prune(struct ly_server *srv, time_t now)
{
	struct prune_call *p;
	struct ly_error e;

	if (srv->dsa == NULL || (p = calloc(1, sizeof(*p))) == NULL)
		return;
	/* A server config made without the file (tests) has no retention: the default then, never "keep nothing". */
	p->before = (int64_t)now - (srv->cfg.audit_retention > 0 ? srv->cfg.audit_retention : LY_AUDIT_RETENTION_DEFAULT);
	if (ly_dsa_submit(srv->dsa, prune_work, prune_done, NULL, p, 0, &e) != LY_OK) {
		log_warn("audit trail pruning skipped: %s", e.msg);
		free(p);
	}
}
