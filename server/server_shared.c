/*
 * server_shared.c: this server's ID, its published authorities and the
 * union it serves (server_shared.h).
 */
#include "server/server_shared.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/atomicfile.h"
#include "lib/bundle.h"
#include "lib/entry.h"
#include "lib/log.h"
#include "server/bundle_shared.h"
#include "server/ca.h"
#include "server/datastore.h"
#include "server/datastore_async.h"

#define SERVER_ID_FILE "server-id"

static bool
uuid_shaped(const char *s, size_t n)
{
	if (n != LY_UUID_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

/* <data_dir>/server-id into `out`, made when absent. */
static ly_status
server_id_load(const char *data_dir, char out[LY_UUID_LEN + 1], struct ly_error *err)
{
	char buf[LY_UUID_LEN + 2];
	ly_status rc = LY_OK;
	int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd < 0)
		return ly_error_set(err, LY_E_IO, "server ID: %s: %s", data_dir, strerror(errno));
	int fd = openat(dfd, SERVER_ID_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf));
		(void)close(fd);
		if (n == LY_UUID_LEN + 1 && buf[LY_UUID_LEN] == '\n' && uuid_shaped(buf, LY_UUID_LEN)) {
			memcpy(out, buf, LY_UUID_LEN);
			out[LY_UUID_LEN] = '\0';
		} else {
			rc = ly_error_set(err, LY_E_INVALID, "server ID: %s/%s is not a UUID line: delete it to make a new one",
			    data_dir, SERVER_ID_FILE);
		}
		goto out;
	}
	if (errno != ENOENT) {
		rc = ly_error_set(err, LY_E_IO, "server ID: %s/%s: %s", data_dir, SERVER_ID_FILE, strerror(errno));
		goto out;
	}
	if ((rc = ly_entry_generate_id(out, err)) != LY_OK)
		goto out;
	memcpy(buf, out, LY_UUID_LEN);
	buf[LY_UUID_LEN] = '\n';
	rc = ly_atomicfile_write(dfd, SERVER_ID_FILE, buf, LY_UUID_LEN + 1, 0600, err);
	if (rc == LY_OK)
		log_info("server ID %s made (%s/%s)", out, data_dir, SERVER_ID_FILE);
out:
	(void)close(dfd);
	return rc;
}

static int64_t
jwt_expiry(void *arg, const char *kid)
{
	return (int64_t)ly_ca_jwt_not_after(arg, kid);
}

/*
 * The shared bundle's two datastore calls, run on the datastore's worker:
 * each call's struct owns what the worker reads (datastore_async.h).
 */
struct publish_call {
	struct ly_server *srv; /* the loop's: never touched by the work or the release */
	char server_id[LY_UUID_LEN + 1];
	struct ly_shared_authorities mine;
	int64_t now;
	uint64_t local_seq;
	uint64_t seq; /* out */
};

static ly_status
publish_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct publish_call *p = ctx;

	return ly_datastore_bundle_publish(ds, p->server_id, &p->mine, p->now, p->local_seq, &p->seq, err);
}

static void
publish_release(void *ctx)
{
	struct publish_call *p = ctx;

	ly_shared_authorities_cleanup(&p->mine);
	free(p);
}

/* A publish of the CA's authorities as they are now; *out: publish_release. */
static ly_status
publish_make(struct ly_server *srv, int64_t now, struct publish_call **out, struct ly_error *err)
{
	const struct ly_bundle *local = ly_ca_bundle(srv->ca);
	struct publish_call *p = calloc(1, sizeof(*p));
	ly_status rc;

	*out = NULL;
	if (p == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	p->srv = srv;
	p->mine = (struct ly_shared_authorities)LY_SHARED_AUTHORITIES_INIT;
	(void)snprintf(p->server_id, sizeof(p->server_id), "%s", srv->server_id);
	p->now = now;
	p->local_seq = ly_bundle_sequence(local);
	if ((rc = ly_shared_authorities_from_bundle(local, srv->server_id, jwt_expiry, srv->ca, &p->mine, err)) != LY_OK) {
		publish_release(p);
		return rc;
	}
	*out = p;
	return LY_OK;
}

/* The publish committed: what the CA made up to p->now may sign once its activation time comes. */
static void
publish_committed(const struct publish_call *p)
{
	ly_ca_set_published(p->srv->ca, (time_t)p->now);
	log_info("shared bundle: published %zu authorities of server %s (sequence %llu)", p->mine.n, p->server_id,
	    (unsigned long long)p->seq);
}

struct read_call {
	struct ly_server *srv; /* the loop's: never touched by the work or the release */
	int64_t now;
	bool retried; /* the second try of this job's read */
	struct ly_shared_authorities rows; /* out */
};

static ly_status
read_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct read_call *r = ctx;

	return ly_datastore_bundle_read(ds, r->now, &r->rows, err);
}

static void
read_release(void *ctx)
{
	struct read_call *r = ctx;

	ly_shared_authorities_cleanup(&r->rows);
	free(r);
}

/*
 * Rebuilds the union from `rows` (what the read returned, when read_rc is
 * LY_OK; else the rows last read, copied into `rows`) and the CA's own
 * authorities. `err` holds the read's error when read_rc is not LY_OK.
 * Returns read_rc unless the union cannot be made.
 */
static ly_status
shared_apply(struct ly_server *srv, int64_t now, ly_status read_rc, struct ly_shared_authorities *rows, bool *changed,
    int64_t *next_expiry, struct ly_error *err)
{
	struct ly_bundle *b = NULL;
	const struct ly_bundle *local = ly_ca_bundle(srv->ca);
	size_t skipped = 0;
	ly_status rc;

	*changed = false;
	*next_expiry = 0;
	if (read_rc == LY_OK) {
		/* Kept, so that a CA change while the database is away still gets a union. */
		if (srv->shared_rows == NULL && (srv->shared_rows = calloc(1, sizeof(*srv->shared_rows))) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto out;
		}
		ly_shared_authorities_cleanup(srv->shared_rows);
		for (size_t i = 0; i < rows->n; i++) {
			const struct ly_shared_authority *a = &rows->items[i];
			if ((rc = ly_shared_authorities_add(srv->shared_rows, a->server_id, a->jwt, a->kid, a->der.data,
				 a->der.len, a->not_after, err)) != LY_OK)
				goto out;
		}
		srv->shared_rows->sequence = rows->sequence;
	} else if (srv->shared_rows != NULL) {
		struct ly_error ignored;
		const struct ly_shared_authorities *c = srv->shared_rows;
		ly_shared_authorities_cleanup(rows);
		for (size_t i = 0; i < c->n; i++) {
			if (ly_shared_authorities_add(rows, c->items[i].server_id, c->items[i].jwt, c->items[i].kid,
				c->items[i].der.data, c->items[i].der.len, c->items[i].not_after, &ignored) != LY_OK)
				break;
		}
		rows->sequence = c->sequence;
	}
	/* Our own authorities always: what we sign with verifies at our agents whatever the database says. */
	uint64_t seq = rows->sequence > ly_bundle_sequence(local) ? rows->sequence : ly_bundle_sequence(local);
	struct ly_error own;
	if ((rc = ly_shared_authorities_from_bundle(local, srv->server_id, jwt_expiry, srv->ca, rows, &own)) != LY_OK) {
		(void)ly_error_set(err, rc, "%s", own.msg);
		goto out;
	}
	/* A server that already served a higher sequence keeps it rising (an agent ignores a lower one). */
	if (srv->shared_bundle != NULL && seq < ly_bundle_sequence(srv->shared_bundle))
		seq = ly_bundle_sequence(srv->shared_bundle);
	if ((rc = ly_shared_bundle_union(srv->cfg.trust_domain, rows, now, seq, ly_bundle_refresh_hint(local), &b,
		 next_expiry, &skipped, &own)) != LY_OK) {
		(void)ly_error_set(err, rc, "%s", own.msg);
		goto out;
	}
	if (skipped > 0)
		log_warn("shared bundle: %zu published authorities do not parse: left out", skipped);
	if (srv->shared_bundle != NULL && ly_shared_bundle_same_authorities(srv->shared_bundle, b)) {
		/* Same authorities: keep what agents hold (no new sequence to fetch for nothing). */
		rc = read_rc;
		goto out;
	}
	if (srv->shared_bundle != NULL && seq <= ly_bundle_sequence(srv->shared_bundle) &&
	    (rc = ly_bundle_update_sequence(b, ly_bundle_sequence(srv->shared_bundle) + 1, &own)) != LY_OK) {
		(void)ly_error_set(err, rc, "%s", own.msg);
		goto out;
	}
	ly_bundle_free(srv->shared_bundle);
	srv->shared_bundle = b;
	b = NULL;
	*changed = true;
	log_info("shared bundle: sequence %llu, %zu X.509 and %zu JWT authorities",
	    (unsigned long long)ly_bundle_sequence(srv->shared_bundle),
	    ly_bundle_x509_authority_count(srv->shared_bundle), ly_bundle_jwt_authority_count(srv->shared_bundle));
	rc = read_rc; /* a union was made from the last rows read, but the read failed */
out:
	ly_bundle_free(b);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "shared bundle: read");
	return LY_OK;
}

/* ---- start-up: waited for (ly_dsa_call_sync), before the listeners open ---- */

static ly_status
shared_open_publish(struct ly_server *srv, int64_t now, struct ly_error *err)
{
	struct publish_call *p = NULL;
	ly_status rc = publish_make(srv, now, &p, err);

	if (rc == LY_OK && (rc = ly_dsa_call_sync(srv->dsa, publish_work, p, err)) == LY_OK)
		publish_committed(p);
	if (p != NULL)
		publish_release(p);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "shared bundle: publish");
	return LY_OK;
}

static ly_status
shared_open_reload(struct ly_server *srv, int64_t now, struct ly_error *err)
{
	struct read_call r = { .srv = srv, .now = now, .rows = LY_SHARED_AUTHORITIES_INIT };
	bool changed = false;
	int64_t next_expiry = 0;

	ly_status rc = ly_dsa_call_sync(srv->dsa, read_work, &r, err);
	rc = shared_apply(srv, now, rc, &r.rows, &changed, &next_expiry, err);
	ly_shared_authorities_cleanup(&r.rows);
	return rc;
}

ly_status
ly_server_shared_open(struct ly_server *srv, int64_t now, struct ly_error *err)
{
	if (!srv->ds_shared)
		return LY_OK;
	LY_TRY(server_id_load(srv->cfg.data_dir, srv->server_id, err));
	LY_TRY(shared_open_publish(srv, now, err));
	return shared_open_reload(srv, now, err);
}

/* ---- once serving: on the worker, the loop never waits (ly_server_shared_update) ---- */

static void job_start(struct ly_server *srv, bool publish, int64_t now);

void
ly_server_shared_on_done(struct ly_server *srv, ly_server_shared_done_fn *done, void *arg)
{
	srv->shared_job.done = done;
	srv->shared_job.arg = arg;
}

/* The job's read ended (read_rc, `err` when not LY_OK; rows NULL then): the union, the outcome, the next job. */
static void
job_finish(struct ly_server *srv, int64_t now, ly_status read_rc, const struct ly_error *err,
    struct ly_shared_authorities *rows)
{
	struct ly_shared_authorities none = LY_SHARED_AUTHORITIES_INIT;
	struct ly_error re;
	struct ly_shared_outcome o = { .publish_asked = srv->shared_job.publish_asked };

	ly_error_clear(&re);
	if (read_rc != LY_OK)
		(void)ly_error_set(&re, read_rc, "%s", err != NULL ? err->msg : "failed");
	o.reload_rc = shared_apply(srv, now, read_rc, rows != NULL ? rows : &none, &o.changed, &o.next_expiry, &re);
	o.reload_msg = re.msg;
	o.publish_rc = srv->shared_job.publish_err.code;
	o.publish_msg = srv->shared_job.publish_err.msg;
	ly_shared_authorities_cleanup(&none);
	srv->shared_job.inflight = false;
	if (srv->shared_job.done != NULL)
		srv->shared_job.done(srv->shared_job.arg, &o);
	/* Asked meanwhile: one job for them all, after this one. */
	if (srv->shared_job.again && !srv->shared_job.inflight && !srv->stopping) {
		bool publish = srv->shared_job.again_publish;
		int64_t again_now = srv->shared_job.again_now;
		srv->shared_job.again = srv->shared_job.again_publish = false;
		srv->shared_job.again_now = 0;
		job_start(srv, publish, again_now);
	}
}

static void
publish_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct publish_call *p = ctx;
	struct ly_server *srv = p->srv;

	if (srv->stopping)
		return; /* ly_dsa_close's "closing", or a late answer during shutdown: nothing to tell */
	if (st == LY_OK) {
		publish_committed(p);
		ly_error_clear(&srv->shared_job.publish_err);
	} else {
		(void)ly_error_set(&srv->shared_job.publish_err, st, "shared bundle: publish: %s", err->msg);
	}
}

static ly_status read_submit(struct ly_server *srv, int64_t now, bool retried, struct ly_error *err);

static void
read_done(void *ctx, ly_status st, const struct ly_error *err)
{
	struct read_call *r = ctx;
	struct ly_server *srv = r->srv;
	struct ly_error again;

	if (srv->stopping)
		return;
	/* Right after PostgreSQL came back the first call finds its session gone; the next one reconnects. */
	if (st != LY_OK && !r->retried && read_submit(srv, r->now, true, &again) == LY_OK)
		return;
	job_finish(srv, r->now, st, err, st == LY_OK ? &r->rows : NULL);
}

static ly_status
read_submit(struct ly_server *srv, int64_t now, bool retried, struct ly_error *err)
{
	struct read_call *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	r->srv = srv;
	r->now = now;
	r->retried = retried;
	r->rows = (struct ly_shared_authorities)LY_SHARED_AUTHORITIES_INIT;
	if (ly_dsa_submit(srv->dsa, read_work, read_done, read_release, r, 0, err) != LY_OK) {
		read_release(r);
		return err->code;
	}
	return LY_OK;
}

static void
job_start(struct ly_server *srv, bool publish, int64_t now)
{
	struct ly_error e;
	struct publish_call *p = NULL;

	srv->shared_job.inflight = true;
	srv->shared_job.publish_asked = publish;
	ly_error_clear(&srv->shared_job.publish_err);
	if (publish) {
		ly_status rc = publish_make(srv, now, &p, &e);
		if (rc == LY_OK && (rc = ly_dsa_submit(srv->dsa, publish_work, publish_done, publish_release, p, 0,
			&e)) != LY_OK)
			publish_release(p);
		if (rc != LY_OK)
			(void)ly_error_set(&srv->shared_job.publish_err, rc, "shared bundle: publish: %s", e.msg);
	}
	/* Queued behind the publish: the worker runs them in order, so the read sees it. */
	if (read_submit(srv, now, false, &e) != LY_OK)
		job_finish(srv, now, e.code, &e, NULL);
}

void
ly_server_shared_update(struct ly_server *srv, bool publish, int64_t now)
{
	if (!srv->ds_shared || srv->stopping || srv->dsa == NULL)
		return;
	if (srv->shared_job.inflight) {
		srv->shared_job.again = true;
		srv->shared_job.again_publish = srv->shared_job.again_publish || publish;
		if (now > srv->shared_job.again_now)
			srv->shared_job.again_now = now;
		return;
	}
	job_start(srv, publish, now);
}

void
ly_server_shared_close(struct ly_server *srv)
{
	ly_bundle_free(srv->shared_bundle);
	srv->shared_bundle = NULL;
	ly_shared_authorities_cleanup(srv->shared_rows);
	free(srv->shared_rows);
	srv->shared_rows = NULL;
}
