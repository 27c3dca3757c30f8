/*
 * server_shared.c: this server's ID, its published authorities and the
 * union it serves (server_shared.h).
 */
#include "server/server_shared.h"

#include <errno.h>
#include <fcntl.h>
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

/* The shared bundle's two datastore calls, run on the datastore's worker (ly_dsa_call_sync). */
struct publish_call {
	const char *server_id;
	const struct ly_shared_authorities *mine;
	int64_t now;
	uint64_t local_seq;
	uint64_t seq;
};

static ly_status
publish_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct publish_call *p = ctx;

	return ly_datastore_bundle_publish(ds, p->server_id, p->mine, p->now, p->local_seq, &p->seq, err);
}

struct read_call {
	int64_t now;
	struct ly_shared_authorities *rows;
};

static ly_status
read_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct read_call *r = ctx;

	return ly_datastore_bundle_read(ds, r->now, r->rows, err);
}

ly_status
ly_server_shared_publish(struct ly_server *srv, int64_t now, struct ly_error *err)
{
	struct ly_shared_authorities mine = LY_SHARED_AUTHORITIES_INIT;
	const struct ly_bundle *local = ly_ca_bundle(srv->ca);
	uint64_t seq = 0;
	ly_status rc;

	if (!srv->ds_shared)
		return LY_OK;
	rc = ly_shared_authorities_from_bundle(local, srv->server_id, jwt_expiry, srv->ca, &mine, err);
	struct publish_call pc = { srv->server_id, &mine, now, ly_bundle_sequence(local), 0 };
	if (rc == LY_OK && (rc = ly_dsa_call_sync(srv->dsa, publish_work, &pc, err)) == LY_OK)
		seq = pc.seq;
	if (rc == LY_OK) {
		/* What the CA made up to now is in the database: it may sign once its activation time comes. */
		ly_ca_set_published(srv->ca, (time_t)now);
		log_info("shared bundle: published %zu authorities of server %s (sequence %llu)", mine.n, srv->server_id,
		    (unsigned long long)seq);
	}
	ly_shared_authorities_cleanup(&mine);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "shared bundle: publish");
	return LY_OK;
}

ly_status
ly_server_shared_reload(struct ly_server *srv, int64_t now, bool *changed, int64_t *next_expiry, struct ly_error *err)
{
	struct ly_shared_authorities rows = LY_SHARED_AUTHORITIES_INIT;
	struct ly_bundle *b = NULL;
	const struct ly_bundle *local = ly_ca_bundle(srv->ca);
	size_t skipped = 0;
	ly_status rc;

	*changed = false;
	if (next_expiry != NULL)
		*next_expiry = 0;
	if (!srv->ds_shared)
		return LY_OK;
	struct read_call rcall = { now, &rows };
	ly_status read_rc = ly_dsa_call_sync(srv->dsa, read_work, &rcall, err);
	if (read_rc == LY_OK) {
		/* Kept, so that a CA change while the database is away still gets a union. */
		if (srv->shared_rows == NULL && (srv->shared_rows = calloc(1, sizeof(*srv->shared_rows))) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "out of memory");
			goto out;
		}
		ly_shared_authorities_cleanup(srv->shared_rows);
		for (size_t i = 0; i < rows.n; i++) {
			const struct ly_shared_authority *a = &rows.items[i];
			if ((rc = ly_shared_authorities_add(srv->shared_rows, a->server_id, a->jwt, a->kid, a->der.data,
				 a->der.len, a->not_after, err)) != LY_OK)
				goto out;
		}
		srv->shared_rows->sequence = rows.sequence;
	} else if (srv->shared_rows != NULL) {
		struct ly_error ignored;
		const struct ly_shared_authorities *c = srv->shared_rows;
		for (size_t i = 0; i < c->n; i++) {
			if (ly_shared_authorities_add(&rows, c->items[i].server_id, c->items[i].jwt, c->items[i].kid,
				c->items[i].der.data, c->items[i].der.len, c->items[i].not_after, &ignored) != LY_OK)
				break;
		}
		rows.sequence = c->sequence;
	}
	/* Our own authorities always: what we sign with verifies at our agents whatever the database says. */
	uint64_t seq = rows.sequence > ly_bundle_sequence(local) ? rows.sequence : ly_bundle_sequence(local);
	if ((rc = ly_shared_authorities_from_bundle(local, srv->server_id, jwt_expiry, srv->ca, &rows, err)) != LY_OK)
		goto out;
	/* A server that already served a higher sequence keeps it rising (an agent ignores a lower one). */
	if (srv->shared_bundle != NULL && seq < ly_bundle_sequence(srv->shared_bundle))
		seq = ly_bundle_sequence(srv->shared_bundle);
	rc = ly_shared_bundle_union(srv->cfg.trust_domain, &rows, now, seq, ly_bundle_refresh_hint(local), &b, next_expiry,
	    &skipped, err);
	if (rc != LY_OK)
		goto out;
	if (skipped > 0)
		log_warn("shared bundle: %zu published authorities do not parse: left out", skipped);
	if (srv->shared_bundle != NULL && ly_shared_bundle_same_authorities(srv->shared_bundle, b)) {
		/* Same authorities: keep what agents hold (no new sequence to fetch for nothing). */
		rc = read_rc;
		goto out;
	}
	if (srv->shared_bundle != NULL && seq <= ly_bundle_sequence(srv->shared_bundle) &&
	    (rc = ly_bundle_update_sequence(b, ly_bundle_sequence(srv->shared_bundle) + 1, err)) != LY_OK)
		goto out;
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
	ly_shared_authorities_cleanup(&rows);
	if (rc != LY_OK)
		return ly_error_wrap(err, rc, "shared bundle: read");
	return LY_OK;
}

ly_status
ly_server_shared_open(struct ly_server *srv, int64_t now, struct ly_error *err)
{
	bool changed = false;

	if (!srv->ds_shared)
		return LY_OK;
	LY_TRY(server_id_load(srv->cfg.data_dir, srv->server_id, err));
	LY_TRY(ly_server_shared_publish(srv, now, err));
	return ly_server_shared_reload(srv, now, &changed, NULL, err);
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
