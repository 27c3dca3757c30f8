/* attest_k8s.c: see attest_k8s.h. */
#include "agent/attest_k8s.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/cgroup.h"
#include "agent/k8s_podlist.h"
#include "agent/procfs.h"
#include "lib/log.h"
#include "lib/queue.h"

struct ly_k8s_attestor {
	uv_loop_t *loop;
	struct ly_kubelet *kubelet;
	unsigned max_attempts;
	uint64_t retry_ms;
	struct ly_queue reqs; /* running attestations (struct ly_k8s_attest), newest first */
	size_t live;                /* attestations not yet freed */
	bool closing;
};

struct ly_k8s_attest {
	struct ly_k8s_attestor *a;
	pid_t pid;
	char *proc_root;
	ly_k8s_attest_cb cb;
	void *arg;
	bool done;        /* callback ran or cancelled: no callback from here on */
	bool work_busy;   /* the cgroup worker holds a reference */
	bool timer_open;  /* the retry timer holds a reference */
	uv_work_t work;
	uv_timer_t retry;
	struct ly_kubelet_wait wait;
	unsigned attempt; /* lookups made */
	uint64_t last_gen;
	/* worker results */
	struct ly_cgroup_ids ids;
	ly_status work_rc;
	struct ly_error work_err;
	struct ly_queue link; /* on a->reqs while running */
};

/* ---- lifetime ---- */

static void
attestor_maybe_free(struct ly_k8s_attestor *a)
{
	if (a->closing && a->live == 0)
		free(a);
}

static void
req_maybe_free(struct ly_k8s_attest *r)
{
	if (!r->done || r->work_busy || r->timer_open)
		return;
	struct ly_k8s_attestor *a = r->a;
	free(r->proc_root);
	free(r);
	a->live--;
	attestor_maybe_free(a);
}

static void
retry_closed(uv_handle_t *h)
{
	struct ly_k8s_attest *r = h->data;
	r->timer_open = false;
	req_maybe_free(r);
}

/* Ends `r`: no callback from here on; memory goes once worker and timer are done. */
static void
req_end(struct ly_k8s_attest *r)
{
	struct ly_k8s_attestor *a = r->a;

	r->done = true;
	ly_queue_remove(&r->link); /* harmless when not linked: a circle of one */
	if (a->kubelet != NULL)
		ly_kubelet_wait_cancel(a->kubelet, &r->wait);
	if (r->work_busy)
		(void)uv_cancel((uv_req_t *)&r->work);
	if (r->timer_open && !uv_is_closing((uv_handle_t *)&r->retry))
		uv_close((uv_handle_t *)&r->retry, retry_closed);
}

static void
finish(struct ly_k8s_attest *r, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	ly_k8s_attest_cb cb = r->cb;
	void *arg = r->arg;

	req_end(r);
	cb(arg, rc, rc == LY_OK ? NULL : err, sels, n);
	req_maybe_free(r);
}

/* ---- the pod list ---- */

static void lookup(struct ly_k8s_attest *r, uint64_t min_gen);

static bool
retryable(ly_status rc)
{
	return rc == LY_E_NOT_FOUND || rc == LY_E_IO;
}

static void
on_retry(uv_timer_t *t)
{
	struct ly_k8s_attest *r = t->data;
	if (!r->done)
		lookup(r, r->last_gen + 1);
}

static void
on_pods(void *arg, ly_status rc, const struct ly_error *err, const json_t *pods, uint64_t gen)
{
	struct ly_k8s_attest *r = arg;
	struct ly_error e;
	struct ly_selector *sels = NULL;
	size_t n = 0;

	r->last_gen = gen;
	if (rc == LY_OK) {
		rc = ly_k8s_podlist_find(pods, r->ids.has_pod ? r->ids.pod_uid : NULL, r->ids.container_id, &sels, &n,
		    &e);
		err = &e;
	} else {
		e = *err;
		err = &e;
	}
	if (rc == LY_OK) {
		log_debug("pid %ld: container %.12s attested (%zu k8s selectors, lookup %u)", (long)r->pid,
		    r->ids.container_id, n, r->attempt);
		finish(r, LY_OK, NULL, sels, n);
		return;
	}
	if (retryable(rc) && r->attempt < r->a->max_attempts) {
		log_debug("pid %ld: lookup %u of %u: %s; retrying in %llu ms", (long)r->pid, r->attempt,
		    r->a->max_attempts, e.msg, (unsigned long long)r->a->retry_ms);
		if (uv_timer_start(&r->retry, on_retry, r->a->retry_ms, 0) == 0)
			return;
		(void)ly_error_set(&e, LY_E_INTERNAL, "k8s attestation: uv_timer_start failed");
		rc = LY_E_INTERNAL;
	}
	if (rc == LY_E_NOT_FOUND && !r->ids.has_pod) {
		/*
		 * A container the cgroup ties to no pod and the kubelet does not
		 * list: a container of the node's own (plain docker), not a pod.
		 */
		log_info("pid %ld: container %.12s is in no pod the kubelet lists: no k8s selectors", (long)r->pid,
		    r->ids.container_id);
		finish(r, LY_OK, NULL, NULL, 0);
		return;
	}
	(void)ly_error_wrap(&e, rc, "k8s attestation of pid %ld (lookup %u of %u)", (long)r->pid, r->attempt,
	    r->a->max_attempts);
	finish(r, rc, &e, NULL, 0);
}

static void
lookup(struct ly_k8s_attest *r, uint64_t min_gen)
{
	struct ly_error e;

	r->attempt++;
	if (ly_kubelet_get_pods(r->a->kubelet, min_gen, &r->wait, on_pods, r, &e) != LY_OK)
		finish(r, e.code, &e, NULL, 0);
}

/* ---- the cgroup ---- */

static void
cgroup_work(uv_work_t *w)
{
	struct ly_k8s_attest *r = w->data;
	r->work_rc = ly_cgroup_read(r->proc_root, r->pid, &r->ids, &r->work_err);
}

static void
after_cgroup(uv_work_t *w, int status)
{
	struct ly_k8s_attest *r = w->data;

	r->work_busy = false;
	if (r->done) {
		req_maybe_free(r);
		return;
	}
	if (status == UV_ECANCELED && r->work_rc == LY_OK)
		r->work_rc = ly_error_set(&r->work_err, LY_E_INTERNAL, "k8s attestation: cancelled");
	if (r->work_rc != LY_OK) {
		finish(r, r->work_rc, &r->work_err, NULL, 0);
		return;
	}
	if (!r->ids.has_container) {
		log_debug("pid %ld: not in a container: no k8s selectors", (long)r->pid);
		finish(r, LY_OK, NULL, NULL, 0);
		return;
	}
	lookup(r, 0);
}

/* ---- the attestor ---- */

ly_status
ly_k8s_attestor_new(uv_loop_t *loop, const struct ly_k8s_attestor_config *cfg, struct ly_k8s_attestor **out,
    struct ly_error *err)
{
	*out = NULL;
	if (cfg->max_attempts > LY_K8S_ATTEMPTS_MAX)
		return ly_error_set(err, LY_E_LIMIT, "k8s attestor: at most %d lookups per attestation",
		    LY_K8S_ATTEMPTS_MAX);
	struct ly_k8s_attestor *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return ly_error_set(err, LY_E_NOMEM, "k8s attestor: out of memory");
	ly_queue_init(&a->reqs);
	a->loop = loop;
	a->max_attempts = cfg->max_attempts != 0 ? cfg->max_attempts : LY_K8S_ATTEMPTS_DEFAULT;
	a->retry_ms = cfg->retry_interval_ms != 0 ? cfg->retry_interval_ms : LY_K8S_RETRY_MS_DEFAULT;
	ly_status rc = ly_kubelet_new(loop, &cfg->kubelet, &a->kubelet, err);
	if (rc != LY_OK) {
		free(a);
		return ly_error_wrap(err, rc, "k8s attestor");
	}
	*out = a;
	return LY_OK;
}

void
ly_k8s_attestor_close(struct ly_k8s_attestor *a)
{
	if (a == NULL || a->closing)
		return;
	a->closing = true;
	struct ly_queue *q;
	while ((q = ly_queue_head(&a->reqs)) != NULL) {
		struct ly_k8s_attest *r = LY_QUEUE_DATA(q, struct ly_k8s_attest, link);
		struct ly_error e;
		(void)ly_error_set(&e, LY_E_IO, "k8s attestation of pid %ld: the attestor is closing", (long)r->pid);
		finish(r, LY_E_IO, &e, NULL, 0);
	}
	ly_kubelet_close(a->kubelet);
	a->kubelet = NULL;
	attestor_maybe_free(a);
}

ly_status
ly_k8s_attest_start(struct ly_k8s_attestor *a, pid_t pid, const char *proc_root, ly_k8s_attest_cb cb, void *arg,
    struct ly_k8s_attest **req, struct ly_error *err)
{
	if (req != NULL)
		*req = NULL;
	if (a->closing)
		return ly_error_set(err, LY_E_INTERNAL, "k8s attestor: closing");
	if (pid <= 0)
		return ly_error_set(err, LY_E_UNSUPPORTED,
		    "pid %ld: a caller in a PID namespace the agent cannot see is refused (hostPID needed)", (long)pid);
	struct ly_k8s_attest *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return ly_error_set(err, LY_E_NOMEM, "k8s attestation: out of memory");
	ly_queue_init(&r->link);
	r->proc_root = strdup(proc_root != NULL ? proc_root : LY_PROC_ROOT_DEFAULT);
	if (r->proc_root == NULL) {
		free(r);
		return ly_error_set(err, LY_E_NOMEM, "k8s attestation: out of memory");
	}
	r->a = a;
	r->pid = pid;
	r->cb = cb;
	r->arg = arg;
	r->work.data = r;
	int e = uv_timer_init(a->loop, &r->retry);
	if (e != 0) {
		free(r->proc_root);
		free(r);
		return ly_error_set(err, LY_E_INTERNAL, "k8s attestation: uv_timer_init: %s", uv_strerror(e));
	}
	r->retry.data = r;
	r->timer_open = true;
	e = uv_queue_work(a->loop, &r->work, cgroup_work, after_cgroup);
	if (e != 0) {
		/* The timer is open: let its close callback free the request. */
		r->done = true;
		a->live++;
		uv_close((uv_handle_t *)&r->retry, retry_closed);
		return ly_error_set(err, LY_E_INTERNAL, "k8s attestation: uv_queue_work: %s", uv_strerror(e));
	}
	r->work_busy = true;
	a->live++;
	ly_queue_insert_head(&a->reqs, &r->link);
	if (req != NULL)
		*req = r;
	return LY_OK;
}

void
ly_k8s_attest_cancel(struct ly_k8s_attest *req)
{
	if (req == NULL || req->done)
		return;
	req_end(req);
	req_maybe_free(req);
}

void
ly_k8s_attestor_kubelet_stats(const struct ly_k8s_attestor *a, struct ly_kubelet_stats *out)
{
	if (a->kubelet != NULL)
		ly_kubelet_stats(a->kubelet, out);
	else
		memset(out, 0, sizeof(*out));
}
