/*
 * agent_api_watch.c: the agent API's WatchEntries streams
 * (agent_api_internal.h): at most LY_AGENTAPI_WATCHERS_MAX, WATCHERS_PER_AGENT per
 * agent (a newer watch replaces the oldest); each gets a snapshot, then the
 * deltas of its authorized set (authz.h), the bundle's sequence and its
 * federated_sequence (agent_api_fed.c).
 */
#include "server/agent_api_internal.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "lib/log.h"
#include "lib/queue.h"
#include "server/entry_pb.h"

/* ---- watchers ------------------------------------------------------------------------------------ */

static void
watcher_free(struct agent_api_watcher *w)
{
	if (w == NULL)
		return;
	free(w->agent_id);
	ly_selectors_free(w->sels, w->n_sels);
	ly_authz_watch_free(w->watch);
	free(w);
}

static void
watcher_unlink(struct agent_api_watcher *w)
{
	ly_queue_remove(&w->link);
	w->api->n_watchers--;
}

/* Ends a watch stream and frees its watcher. */
void
agent_api_watch_end(struct agent_api_watcher *w, enum ly_rpc_code code, const char *details)
{
	watcher_unlink(w);
	ly_rpc_call_finish(w->call, code, details);
	watcher_free(w);
}

static void
on_watch_closed(struct ly_rpc_call *call, void *arg)
{
	struct agent_api_watcher *w = arg;

	(void)call;
	log_debug("watch of %s closed by the agent", w->agent_id);
	agent_api_watch_end(w, LY_RPC_CANCELLED, NULL);
}

/*
 * Sends the watcher what changed for it (authz.h, watch streams): nothing
 * when neither its set nor the bundle changed, unless `force`. May end
 * (and free) the watcher.
 */
/* `resume`: the first message of a watch resuming after `changed` (ly_authz_watch_resume). */
static void
watch_send(struct agent_api_watcher *w, bool force, bool resume, const char *const *changed, size_t n_changed)
{
	struct ly_agent_api *api = w->api;
	struct ly_authz_agent agent = { w->agent_id, w->sels, w->n_sels };
	struct ly_authz_set set = LY_AUTHZ_SET_INIT;
	struct ly_authz_update u;
	struct ly_entries_pb pe;
	char **deleted = NULL;
	uint8_t *buf = NULL;
	struct ly_error e;
	enum ly_rpc_code code = LY_RPC_INTERNAL;
	const char *why = "internal error";

	if (!api->loaded)
		return; /* the next successful refresh comes back here */
	if (ly_authz_authorized(api->index, &agent, &set, &e) != LY_OK ||
	    (resume ? ly_authz_watch_resume(w->watch, &set, changed, n_changed, &u, &e)
		    : ly_authz_watch_next(w->watch, &set, &u, &e)) != LY_OK) {
		log_error("watch of %s: %s", w->agent_id, e.msg);
		goto fail;
	}
	uint64_t seq = agent_api_reply_bundle_sequence(api);
	uint64_t fed_seq = agent_api_fed_sequence(api, &set);
	if (!u.changed && !force && seq == w->bundle_seq && fed_seq == w->fed_seq) {
		ly_authz_set_cleanup(&set);
		return;
	}
	if (ly_entries_pb_make(u.upserts, u.n_upserts, &pe, &e) != LY_OK) {
		log_error("watch of %s: %s", w->agent_id, e.msg);
		goto fail;
	}
	deleted = calloc(u.n_deleted + 1, sizeof(*deleted));
	if (deleted == NULL) {
		ly_entries_pb_cleanup(&pe);
		goto fail;
	}
	for (size_t i = 0; i < u.n_deleted; i++)
		deleted[i] = u.deleted[i];

	Lanyard__Agent__V1__EntriesUpdate up;
	lanyard__agent__v1__entries_update__init(&up);
	up.revision = api->revision;
	up.snapshot = u.snapshot;
	up.n_entries = pe.n;
	up.entries = pe.ptrs;
	up.n_deleted_entry_ids = u.n_deleted;
	up.deleted_entry_ids = deleted;
	up.bundle_sequence = seq;
	up.federated_sequence = fed_seq;
	size_t n = lanyard__agent__v1__entries_update__get_packed_size(&up);
	if (n > LY_RPC_RESPONSE_MAX) {
		log_error("watch of %s: %zu authorized entries need %zu bytes, over the %d-byte message cap",
		    w->agent_id, set.n, n, LY_RPC_RESPONSE_MAX);
		code = LY_RPC_RESOURCE_EXHAUSTED;
		why = "authorized entries exceed the message size cap";
	} else if ((buf = malloc(n > 0 ? n : 1)) == NULL) {
		code = LY_RPC_RESOURCE_EXHAUSTED;
		why = "out of memory";
	} else {
		size_t packed = lanyard__agent__v1__entries_update__pack(&up, buf);
		if (ly_rpc_call_send(w->call, buf, packed, 0, &e) != LY_OK)
			log_warn("watch of %s: %s", w->agent_id, e.msg);
		else
			code = LY_RPC_OK;
	}
	log_debug("watch of %s: %s revision=%" PRId64 " entries=%zu deleted=%zu bundle_sequence=%" PRIu64
		  " federated_sequence=%" PRIu64,
	    w->agent_id, u.snapshot ? "snapshot" : "delta", api->revision, u.n_upserts, u.n_deleted, seq, fed_seq);
	w->bundle_seq = seq;
	w->fed_seq = fed_seq;
	free(buf);
	free(deleted);
	ly_entries_pb_cleanup(&pe);
	ly_authz_set_cleanup(&set);
	if (code != LY_RPC_OK) {
		agent_api_watch_end(w, code, why);
	} else if (u.rebase) {
		/* The snapshot just queued brings the agent up to date; it reopens. */
		log_debug("watch of %s rebased", w->agent_id);
		agent_api_watch_end(w, LY_RPC_OK, "watch rebased: reopen it");
	}
	return;
fail:
	ly_authz_set_cleanup(&set);
	agent_api_watch_end(w, code, why);
}

void
agent_api_watch_send(struct agent_api_watcher *w, bool force)
{
	watch_send(w, force, false, NULL, 0);
}

void
agent_api_watch_send_all(struct ly_agent_api *api, bool force)
{
	struct ly_queue *q, *tmp;

	LY_QUEUE_FOREACH_SAFE(q, tmp, &api->watchers)
		agent_api_watch_send(LY_QUEUE_DATA(q, struct agent_api_watcher, link), force);
}

/*
 * An agent was (re-)enrolled or renewed: its open streams keep going if
 * the SVID they were opened with is still acceptable, with its new node
 * selectors; the others end.
 */
void
agent_api_watch_agent_updated(struct ly_agent_api *api, const char *agent_id, const char *serial,
    const struct ly_selector *sels, size_t n_sels, time_t now)
{
	struct ly_queue *q, *tmp;

	LY_QUEUE_FOREACH_SAFE(q, tmp, &api->watchers) {
		struct agent_api_watcher *w = LY_QUEUE_DATA(q, struct agent_api_watcher, link);
		if (strcmp(w->agent_id, agent_id) != 0)
			continue;
		if (strcmp(w->serial, serial) != 0 && !agent_api_auth_prev_ok(api, agent_id, w->serial, now)) {
			agent_api_watch_end(w, LY_RPC_UNAUTHENTICATED, "agent SVID superseded: reconnect with the current one");
			continue;
		}
		if (!ly_selectors_same_set(w->sels, w->n_sels, sels, n_sels)) {
			struct ly_selector *copy = NULL;
			if (ly_selectors_copy(sels, n_sels, &copy, NULL) != LY_OK) {
				agent_api_watch_end(w, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
				continue;
			}
			ly_selectors_free(w->sels, w->n_sels);
			w->sels = copy;
			w->n_sels = n_sels;
			agent_api_watch_send(w, false);
		}
	}
}

/* ---- WatchEntries -------------------------------------------------------------------------------- */

static void
watch_authed(struct ly_agent_api *api, struct ly_rpc_call *call, const uint8_t *req, size_t len,
    struct agent_api_caller *cp, time_t now)
{
	const struct agent_api_caller *c = cp;
	struct agent_api_watcher *w = NULL;
	int64_t since_revision = 0;
	struct ly_error e;

	(void)now;
	if (ly_agentapi_watch_decode(req, len, &since_revision, &e) != LY_OK) {
		agent_api_reply_finish(call, LY_RPC_INVALID_ARGUMENT, e.msg, NULL);
		return;
	}
	if (agent_api_replica_ensure(api, &e) != LY_OK || agent_api_replica_fed_ensure(api, &e) != LY_OK) {
		log_info("watch of %s: %s", c->rec->spiffe_id, e.msg);
		ly_rpc_call_finish(call, LY_RPC_UNAVAILABLE, "entries unavailable, retry later");
		return;
	}
	/*
	 * An agent ahead of us was served by another server of the database (or
	 * by us before a change we have not applied yet): catch up first, so
	 * that it never gets an older state than it holds.
	 */
	if (since_revision > api->revision)
		(void)agent_api_replica_refresh_now(api);
	/* One agent keeps few streams: a newer one replaces its oldest. */
	size_t mine = 0;
	struct agent_api_watcher *oldest = NULL;
	struct ly_queue *q;
	LY_QUEUE_FOREACH(q, &api->watchers) {
		struct agent_api_watcher *x = LY_QUEUE_DATA(q, struct agent_api_watcher, link);
		if (strcmp(x->agent_id, c->rec->spiffe_id) == 0 && mine++ == 0)
			oldest = x;
	}
	if (mine >= WATCHERS_PER_AGENT && oldest != NULL)
		agent_api_watch_end(oldest, LY_RPC_ABORTED, "replaced by a newer watch of the same agent");
	if (api->n_watchers >= LY_AGENTAPI_WATCHERS_MAX) {
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "too many watches");
		return;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL || (w->agent_id = strdup(c->rec->spiffe_id)) == NULL ||
	    ly_selectors_copy(c->rec->selectors, c->rec->n_selectors, &w->sels, NULL) != LY_OK ||
	    ly_authz_watch_new(&w->watch, NULL) != LY_OK) {
		watcher_free(w);
		ly_rpc_call_finish(call, LY_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	w->n_sels = c->rec->n_selectors;
	w->api = api;
	w->call = call;
	memcpy(w->serial, c->serial, sizeof(w->serial));
	w->svid_expires = c->not_after;
	ly_queue_insert_tail(&api->watchers, &w->link);
	api->n_watchers++;
	ly_rpc_call_set_closed_cb(call, on_watch_closed, w);
	/*
	 * The first message, at once: the changes since the agent's revision
	 * when the replica's change log holds them and none changed the
	 * authorization rule's inputs; a snapshot otherwise (docs/agent-api.md).
	 */
	const char **changed = NULL;
	size_t n_changed = 0;
	bool resume = false;
	if (since_revision > 0 &&
	    agent_api_replica_changed_since(api, since_revision, &changed, &n_changed, &resume, &e) != LY_OK)
		resume = false;
	log_debug("watch of %s opened (since_revision=%" PRId64 ", replica at %" PRId64 ": %s)", w->agent_id,
	    since_revision, api->revision, resume ? "delta" : "snapshot");
	watch_send(w, true, resume, changed, n_changed);
	free(changed);
}

void
agent_api_watch_open(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg)
{
	struct ly_agent_api *api = agent_api_reply_api(arg);

	if (!agent_api_reply_serving(api, call, false))
		return;
	agent_api_auth_then(api, call, req, len, ly_server_now(), watch_authed);
}
