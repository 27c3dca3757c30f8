/*
 * admin_api_fed.c: the Admin service's federation methods (SPEC §9;
 * admin_api_fed.h): `bundle set|list|delete|count` and `federation
 * create|update|list|show|delete|refresh` (their client is cli_fed.c).
 * Each request is decoded and checked by admin_msg_fed.c before anything
 * else; the datastore part runs on its worker like every admin call
 * (admin_op.h), and `federation refresh` waits for the bundle fetcher
 * through srv->fed_refresh (server_core.h; server_fed.c). Changes
 * (bundle.set, bundle.delete, federation.create|update|delete|refresh),
 * accepted or refused, write one audit line and one row of the shared
 * audit trail naming the trust domain (admin_op.c); reads are not
 * audited.
 *
 * Ownership: each call's struct fop owns its decoded request (the audit
 * line borrows its strings) and what the worker read or wrote, and is
 * freed once the loop and the worker let go. Threads: the loop thread,
 * except the `*_work` functions on the datastore's worker.
 */
#include "server/admin_api_fed.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/bundle.h"
#include "lib/pbview.h"
#include "server/admin_msg_fed.h"
#include "server/admin_op.h"
#include "server/bundle_pb.h"
#include "server/datastore.h"
#include "server/datastore_async.h"

/* Bundle messages for a list; pbs[i] made for each non-NULL bundle. */
struct bundles_pb {
	struct ly_bundle_pb *pbs;
	Lanyard__Agent__V1__Bundle **ptrs;
	size_t n;
};

static void
bundles_pb_cleanup(struct bundles_pb *p)
{
	for (size_t i = 0; i < p->n; i++)
		ly_bundle_pb_cleanup(&p->pbs[i]);
	free(p->pbs);
	free(p->ptrs);
	memset(p, 0, sizeof(*p));
}

static ly_status
bundles_pb_make(const struct ly_ds_fed_bundle *const *b, size_t n, struct bundles_pb *p, struct ly_error *err)
{
	memset(p, 0, sizeof(*p));
	p->pbs = calloc(n + 1, sizeof(*p->pbs));
	p->ptrs = calloc(n + 1, sizeof(*p->ptrs));
	if (p->pbs == NULL || p->ptrs == NULL) {
		bundles_pb_cleanup(p);
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	}
	for (; p->n < n; p->n++) {
		ly_status rc = ly_bundle_pb_make(b[p->n]->bundle, &p->pbs[p->n], err);
		if (rc != LY_OK) {
			bundles_pb_cleanup(p);
			return rc;
		}
		p->ptrs[p->n] = &p->pbs[p->n].msg;
	}
	return LY_OK;
}

/*
 * One federation call with a datastore part (admin_op.h): the decoded
 * request (the audit line borrows its strings), and what the worker reads
 * or writes. Freed by fop_release once the loop and the worker let go.
 */
struct fop {
	struct admin_op op; /* first: admin_op_run and its audited work find it at ctx */
	bool update, one;
	struct ly_admin_msg_bundle_set set_rq;
	struct ly_admin_msg_bundle_delete del_rq;
	struct ly_admin_msg_td td_rq;
	struct ly_admin_msg_rel rel_rq;
	struct ly_admin_msg_rel_checked rel_c;
	bool has_set_rq, has_del_rq, has_td_rq, has_rel_rq;
	struct ly_bundle *b;                /* bundle.set: the checked bundle */
	char td[LY_TRUST_DOMAIN_MAX + 1];
	enum ly_fed_delete_mode mode;
	char note[32];
	/* The worker's answers: read on the loop only when the call succeeded. */
	struct ly_ds_fed_bundle_list blist;
	struct ly_ds_fed_bundle *bone;
	struct ly_ds_fed_rel_list rlist;
	struct ly_ds_fed_rel *rel;
	size_t count;
};

_Static_assert(offsetof(struct fop, op) == 0, "admin_op_run finds the op at ctx");

static void
fop_init(void *ctx)
{
	struct fop *f = ctx;

	f->blist = (struct ly_ds_fed_bundle_list)LY_DS_FED_BUNDLE_LIST_INIT;
	f->rlist = (struct ly_ds_fed_rel_list)LY_DS_FED_REL_LIST_INIT;
}

static void
fop_release(void *ctx)
{
	struct fop *f = ctx;

	if (f->has_set_rq)
		ly_admin_msg_bundle_set_cleanup(&f->set_rq);
	if (f->has_del_rq)
		ly_admin_msg_bundle_delete_cleanup(&f->del_rq);
	if (f->has_td_rq)
		ly_admin_msg_td_cleanup(&f->td_rq);
	if (f->has_rel_rq)
		ly_admin_msg_rel_cleanup(&f->rel_rq);
	ly_admin_msg_rel_checked_cleanup(&f->rel_c);
	ly_bundle_free(f->b);
	ly_ds_fed_bundle_list_cleanup(&f->blist);
	ly_ds_fed_bundle_free(f->bone);
	ly_ds_fed_rel_list_cleanup(&f->rlist);
	ly_ds_fed_rel_free(f->rel);
	free(f);
}

/* A method of this file: its audit action, variant (update) and steps (admin_op.h). */
#define FOP_JOB(action_, variant_, prep_, work_, reply_)                                                           \
	{ .action = (action_), .variant = (variant_), .size = sizeof(struct fop), .init = fop_init, .prep = (prep_), \
		.work = (work_), .reply = (reply_), .release = fop_release }

/* Replies with the trust domain alone (deletes). */
static void
fop_reply_td(void *ctx)
{
	struct fop *f = ctx;
	Lanyard__Admin__V1__TrustDomain out;

	lanyard__admin__v1__trust_domain__init(&out);
	out.trust_domain = f->td;
	admin_op_reply(&f->op, &out.base, 0);
}

/* ---- federated bundles -------------------------------------------------------- */

static bool
set_fed_bundle_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct fop *f = ctx;
	struct ly_error e;

	if (!admin_op_ok(&f->op, ly_admin_msg_bundle_set_decode(req, len, &f->set_rq, &e), &e))
		return false;
	f->has_set_rq = true;
	f->op.trust_domain = f->set_rq.trust_domain;
	if (!admin_op_ok(&f->op, ly_admin_msg_bundle_set_check(&f->set_rq, f->op.srv->cfg.trust_domain, &f->b, &e), &e))
		return false;
	f->op.trust_domain = ly_bundle_trust_domain(f->b);
	return true;
}

static ly_status
set_fed_bundle_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;
	return ly_datastore_fed_bundle_put(ds, f->b, NULL, err);
}

static void
set_fed_bundle_reply(void *ctx)
{
	struct fop *f = ctx;
	struct ly_bundle_pb pb;
	struct ly_error e;
	ly_status st;

	if ((st = ly_bundle_pb_make(f->b, &pb, &e)) != LY_OK) {
		admin_op_fail_st(&f->op, st, &e);
		return;
	}
	admin_op_reply(&f->op, &pb.msg.base, 0);
	ly_bundle_pb_cleanup(&pb);
}

void
admin_api_fed_set_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB("bundle.set", false, set_fed_bundle_prep, set_fed_bundle_work,
	    set_fed_bundle_reply);
	admin_op_run(call, req, len, arg, &job);
}

static bool
list_fed_bundles_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct fop *f = ctx;
	struct ly_error e;

	/* ListFederatedBundlesRequest is TrustDomain on the wire (field 1, the trust domain). */
	if (!admin_op_ok(&f->op, ly_admin_msg_td_decode(req, len, &f->td_rq, &e), &e))
		return false;
	f->has_td_rq = true;
	if (f->td_rq.trust_domain != NULL) {
		if (!admin_op_ok(&f->op,
			ly_admin_msg_td_check(f->td_rq.trust_domain, f->op.srv->cfg.trust_domain, f->td, &e), &e))
			return false;
		f->one = true;
	}
	return true;
}

static ly_status
list_fed_bundles_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;
	if (f->one)
		return ly_datastore_fed_bundle_get(ds, f->td, &f->bone, err);
	return ly_datastore_fed_bundle_list(ds, &f->blist, err);
}

static void
list_fed_bundles_reply(void *ctx)
{
	struct fop *f = ctx;
	struct bundles_pb pbs;
	Lanyard__Admin__V1__FederatedBundleList out;
	struct ly_error e;
	ly_status st;

	if (f->one) {
		const struct ly_ds_fed_bundle *v[1] = { f->bone };
		st = bundles_pb_make(v, 1, &pbs, &e);
	} else {
		st = bundles_pb_make((const struct ly_ds_fed_bundle *const *)f->blist.items, f->blist.n, &pbs, &e);
	}
	if (st != LY_OK) {
		admin_op_fail_st(&f->op, st, &e);
		return;
	}
	lanyard__admin__v1__federated_bundle_list__init(&out);
	out.n_bundles = pbs.n;
	out.bundles = pbs.ptrs;
	admin_op_reply(&f->op, &out.base, 0);
	bundles_pb_cleanup(&pbs);
}

void
admin_api_fed_list_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB(NULL, false, list_fed_bundles_prep, list_fed_bundles_work,
	    list_fed_bundles_reply);
	admin_op_run(call, req, len, arg, &job);
}

static bool
delete_fed_bundle_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct fop *f = ctx;
	struct ly_error e;

	f->mode = LY_FED_DELETE_RESTRICT;
	if (!admin_op_ok(&f->op, ly_admin_msg_bundle_delete_decode(req, len, &f->del_rq, &e), &e))
		return false;
	f->has_del_rq = true;
	f->op.trust_domain = f->del_rq.trust_domain;
	if (!admin_op_ok(&f->op,
		ly_admin_msg_bundle_delete_check(&f->del_rq, f->op.srv->cfg.trust_domain, f->td, &f->mode, &e), &e))
		return false;
	f->op.trust_domain = f->td;
	(void)snprintf(f->note, sizeof(f->note), "mode %s", ly_fed_delete_mode_name(f->mode));
	f->op.note = f->note;
	return true;
}

static ly_status
delete_fed_bundle_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;
	return ly_datastore_fed_bundle_delete(ds, f->td, f->mode, NULL, err);
}

void
admin_api_fed_delete_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB("bundle.delete", false, delete_fed_bundle_prep,
	    delete_fed_bundle_work, fop_reply_td);
	admin_op_run(call, req, len, arg, &job);
}

static bool
count_fed_bundles_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct fop *f = ctx;
	struct ly_error e;

	return admin_op_ok(&f->op, ly_admin_msg_empty_decode("count", req, len, &e), &e);
}

static ly_status
count_fed_bundles_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;
	return ly_datastore_fed_bundle_count(ds, &f->count, err);
}

static void
count_fed_bundles_reply(void *ctx)
{
	struct fop *f = ctx;
	Lanyard__Admin__V1__Count out;

	lanyard__admin__v1__count__init(&out);
	out.count = f->count;
	admin_op_reply(&f->op, &out.base, 0);
}

void
admin_api_fed_count_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB(NULL, false, count_fed_bundles_prep, count_fed_bundles_work,
	    count_fed_bundles_reply);
	admin_op_run(call, req, len, arg, &job);
}

/* ---- federation relationships ------------------------------------------------- */

/* A relationship as its message; with `bundle`, the stored bundle too. */
struct rel_pb {
	Lanyard__Admin__V1__FederationRelationship m;
	struct ly_bundle_pb bundle;
	bool has_bundle;
};

static ly_status
rel_pb_make(const struct ly_ds_fed_rel *r, const struct ly_ds_fed_bundle *b, struct rel_pb *p, struct ly_error *err)
{
	memset(p, 0, sizeof(*p));
	lanyard__admin__v1__federation_relationship__init(&p->m);
	p->m.trust_domain = ly_pbview_str_or_empty(r->trust_domain);
	p->m.bundle_endpoint_url = ly_pbview_str_or_empty(r->bundle_endpoint_url);
	p->m.bundle_endpoint_profile = ly_pbview_str_or_empty(ly_fed_profile_name(r->profile));
	p->m.endpoint_spiffe_id = ly_pbview_str_or_empty(r->endpoint_spiffe_id);
	p->m.created_at = r->created_at;
	p->m.updated_at = r->updated_at;
	if (b != NULL) {
		LY_TRY(ly_bundle_pb_make(b->bundle, &p->bundle, err));
		p->has_bundle = true;
		p->m.bundle = &p->bundle.msg;
	}
	return LY_OK;
}

static void
rel_pb_cleanup(struct rel_pb *p)
{
	if (p->has_bundle)
		ly_bundle_pb_cleanup(&p->bundle);
	memset(p, 0, sizeof(*p));
}

/* Worker: relationship f->td as stored now, with its bundle if one is stored. */
static ly_status
read_rel_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;
	ly_status st;

	LY_TRY(ly_datastore_fed_rel_get(ds, f->td, &f->rel, err));
	st = ly_datastore_fed_bundle_get(ds, f->td, &f->bone, err);
	return st == LY_E_NOT_FOUND ? LY_OK : st;
}

/* Replies with the relationship read_rel_work read. */
static void
reply_rel(void *ctx)
{
	struct fop *f = ctx;
	struct rel_pb pb;
	struct ly_error e;
	ly_status st;

	memset(&pb, 0, sizeof(pb));
	if ((st = rel_pb_make(f->rel, f->bone, &pb, &e)) != LY_OK)
		admin_op_fail_st(&f->op, st, &e);
	else
		admin_op_reply(&f->op, &pb.m.base, 0);
	rel_pb_cleanup(&pb);
}

/* CreateFederationRelationship and UpdateFederationRelationship. */
static bool
put_rel_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct fop *f = ctx;
	struct ly_error e;

	f->update = f->op.job->variant;
	if (!admin_op_ok(&f->op, ly_admin_msg_rel_decode(req, len, &f->rel_rq, &e), &e))
		return false;
	f->has_rel_rq = true;
	f->op.trust_domain = f->rel_rq.trust_domain;
	if (!admin_op_ok(&f->op, ly_admin_msg_rel_check(&f->rel_rq, f->op.srv->cfg.trust_domain, &f->rel_c, &e), &e))
		return false;
	f->op.trust_domain = f->rel_c.td;
	(void)snprintf(f->td, sizeof(f->td), "%s", f->rel_c.td);
	return true;
}

/* The write, then the read of what it left, in one call on the worker. */
static ly_status
put_rel_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;

	LY_TRY(f->update ? ly_datastore_fed_rel_update(ds, &f->rel_c.rel, f->rel_c.bundle, NULL, err) :
			   ly_datastore_fed_rel_create(ds, &f->rel_c.rel, f->rel_c.bundle, NULL, err));
	return read_rel_work(ds, ctx, err);
}

void
admin_api_fed_create_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB("federation.create", false, put_rel_prep, put_rel_work, reply_rel);
	admin_op_run(call, req, len, arg, &job);
}

void
admin_api_fed_update_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB("federation.update", true, put_rel_prep, put_rel_work, reply_rel);
	admin_op_run(call, req, len, arg, &job);
}

static bool
list_rels_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct fop *f = ctx;
	struct ly_error e;

	return admin_op_ok(&f->op, ly_admin_msg_empty_decode("relationships", req, len, &e), &e);
}

static ly_status
list_rels_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;
	return ly_datastore_fed_rel_list(ds, &f->rlist, err);
}

static void
list_rels_reply(void *ctx)
{
	struct fop *f = ctx;
	struct rel_pb *pbs = NULL;
	Lanyard__Admin__V1__FederationRelationship **ptrs = NULL;
	Lanyard__Admin__V1__FederationRelationshipList out;
	size_t n = 0;

	pbs = calloc(f->rlist.n + 1, sizeof(*pbs));
	ptrs = calloc(f->rlist.n + 1, sizeof(*ptrs));
	if (pbs == NULL || ptrs == NULL) {
		admin_op_fail(&f->op, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (; n < f->rlist.n; n++) {
		/* No bundles in a list (`federation show` has the one). */
		(void)rel_pb_make(f->rlist.items[n], NULL, &pbs[n], NULL);
		ptrs[n] = &pbs[n].m;
	}
	lanyard__admin__v1__federation_relationship_list__init(&out);
	out.n_relationships = n;
	out.relationships = ptrs;
	admin_op_reply(&f->op, &out.base, 0);
out:
	for (size_t i = 0; i < n; i++)
		rel_pb_cleanup(&pbs[i]);
	free(pbs);
	free(ptrs);
}

void
admin_api_fed_list_rels(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB(NULL, false, list_rels_prep, list_rels_work, list_rels_reply);
	admin_op_run(call, req, len, arg, &job);
}

/* GetFederationRelationship and DeleteFederationRelationship: a TrustDomain. */
static bool
td_prep(void *ctx, const uint8_t *req, size_t len)
{
	struct fop *f = ctx;
	struct ly_error e;

	if (!admin_op_ok(&f->op, ly_admin_msg_td_decode(req, len, &f->td_rq, &e), &e))
		return false;
	f->has_td_rq = true;
	f->op.trust_domain = f->td_rq.trust_domain;
	if (!admin_op_ok(&f->op, ly_admin_msg_td_check(f->td_rq.trust_domain, f->op.srv->cfg.trust_domain, f->td, &e),
		&e))
		return false;
	f->op.trust_domain = f->td;
	return true;
}

void
admin_api_fed_get_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB(NULL, false, td_prep, read_rel_work, reply_rel);
	admin_op_run(call, req, len, arg, &job);
}

static ly_status
delete_rel_work(struct ly_datastore *ds, void *ctx, struct ly_error *err)
{
	struct fop *f = ctx;
	return ly_datastore_fed_rel_delete(ds, f->td, NULL, err);
}

void
admin_api_fed_delete_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	static const struct admin_job job = FOP_JOB("federation.delete", false, td_prep, delete_rel_work,
	    fop_reply_td);
	admin_op_run(call, req, len, arg, &job);
}

/* A `federation refresh` waiting for the fetcher (server_core.h: the refresh hook). */
struct refresh_op {
	struct admin_op op;
	char td[LY_TRUST_DOMAIN_MAX + 1];
};

static void
refresh_done(void *arg, ly_status rc, const char *msg)
{
	struct refresh_op *r = arg;
	Lanyard__Admin__V1__TrustDomain out;

	if (rc != LY_OK) {
		admin_op_fail(&r->op, admin_op_code(rc, NULL), msg != NULL && msg[0] != '\0' ? msg : "bundle refresh failed");
	} else {
		lanyard__admin__v1__trust_domain__init(&out);
		out.trust_domain = r->td;
		admin_op_reply(&r->op, &out.base, 0);
	}
	free(r);
}

void
admin_api_fed_refresh(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct refresh_op *r = calloc(1, sizeof(*r));
	struct ly_admin_msg_td rq;
	struct ly_error e;
	ly_status st;

	if (r == NULL) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	if (!admin_op_begin(&r->op, call, arg, "federation.refresh")) {
		free(r);
		return;
	}
	if ((st = ly_admin_msg_td_decode(req, len, &rq, &e)) != LY_OK) {
		admin_op_fail_st(&r->op, st, &e);
		free(r);
		return;
	}
	r->op.trust_domain = rq.trust_domain;
	if ((st = ly_admin_msg_td_check(rq.trust_domain, r->op.srv->cfg.trust_domain, r->td, &e)) != LY_OK) {
		admin_op_fail_st(&r->op, st, &e);
		goto fail;
	}
	/* No datastore lookup: the fetcher knows the config's relationships too (NOT_FOUND for neither). */
	r->op.trust_domain = r->td;
	if (r->op.srv->fed_refresh.fn == NULL) {
		admin_op_fail(&r->op, LY_RPC_UNIMPLEMENTED,
		    "federation refresh is not available: this server has no bundle fetcher yet");
		goto fail;
	}
	if ((st = r->op.srv->fed_refresh.fn(r->op.srv->fed_refresh.arg, r->td, refresh_done, r, &e)) != LY_OK) {
		admin_op_fail_st(&r->op, st, &e);
		goto fail;
	}
	/* refresh_done answers and frees r. */
	ly_admin_msg_td_cleanup(&rq);
	return;
fail:
	ly_admin_msg_td_cleanup(&rq);
	free(r);
}
