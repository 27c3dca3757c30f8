/*
 * source.c: lanyard_x509_source, a watcher thread on the FetchX509SVID
 * stream (Workload API standard: the stream sends a new full response on
 * every change; SPEC §3-§4: rotation at half-life, bundle changes).
 *
 * One thread per source runs wl_rpc_call with no deadline. Each response
 * is checked (x509ctx.c); a good one replaces the current context under
 * `mu` (readers take a reference under the same mutex, so a context is
 * never freed while a handshake uses it) and wakes waiters. When the
 * stream fails or ends, the thread sleeps on `cv` (so stopping is prompt)
 * for a backoff that doubles from WL_BACKOFF_MIN_MS to WL_BACKOFF_MAX_MS,
 * with up to 25% random jitter, and reconnects; a good response resets it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "wl_internal.h"

struct lanyard_x509_source {
	atomic_uint refs;
	atomic_bool stop;
	lanyard_client *client;
	lanyard_x509_update_cb cb;
	void *arg;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* on CLOCK_MONOTONIC */
	/* Under mu: */
	lanyard_x509_context *cur;
	uint64_t version;
	struct ly_error last;
	int last_rpc;
};

static void
add_ms(struct timespec *ts, unsigned ms)
{
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static int
on_update(void *arg, const uint8_t *msg, size_t len, struct ly_error *err)
{
	lanyard_x509_source *s = arg;
	lanyard_x509_context *ctx = NULL;
	struct ly_error e;

	(void)err;
	if (wl_x509_context_parse(msg, len, time(NULL), &ctx, &e) != LY_OK) {
		/* Refused: keep the current context, remember why, read on. */
		pthread_mutex_lock(&s->mu);
		s->last = e;
		s->last_rpc = 0;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	pthread_mutex_lock(&s->mu);
	lanyard_x509_context *old = s->cur;
	s->cur = ctx;
	s->version++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	lanyard_x509_context_free(old);
	if (s->cb != NULL)
		s->cb(ctx, s->arg);
	return 0;
}

static void *
watch(void *arg)
{
	lanyard_x509_source *s = arg;
	unsigned backoff = WL_BACKOFF_MIN_MS;
	struct wl_call call = {
		.method = "/SpiffeWorkloadAPI/FetchX509SVID",
		.req = (const uint8_t *)"",
		.req_len = 0,
		.stream = true,
		.timeout_ms = 0,
		.on_msg = on_update,
		.arg = s,
		.stop = &s->stop,
	};

	while (!atomic_load(&s->stop)) {
		struct ly_error e;
		int code = 0;
		pthread_mutex_lock(&s->mu);
		uint64_t before = s->version;
		pthread_mutex_unlock(&s->mu);
		ly_status rc = wl_rpc_call(s->client, &call, &code, &e);
		if (atomic_load(&s->stop))
			break;
		pthread_mutex_lock(&s->mu);
		if (rc != LY_OK) {
			s->last = e;
			s->last_rpc = code;
		}
		if (s->version != before)
			backoff = WL_BACKOFF_MIN_MS;
		unsigned r = 0;
		if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
			r = 0;
		unsigned wait = backoff + (backoff / 4 > 0 ? r % (backoff / 4) : 0);
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		add_ms(&until, wait);
		while (!atomic_load(&s->stop) && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&s->mu);
		backoff = backoff * 2 > WL_BACKOFF_MAX_MS ? WL_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

static void
source_destroy(lanyard_x509_source *s)
{
	if (s->thread_started) {
		pthread_mutex_lock(&s->mu);
		atomic_store(&s->stop, true);
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		(void)pthread_join(s->thread, NULL);
	}
	lanyard_client_free(s->client);
	lanyard_x509_context_free(s->cur);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

lanyard_status
lanyard_x509_source_new(const char *addr, lanyard_x509_update_cb cb, void *arg, lanyard_x509_source **out,
    struct lanyard_error *err)
{
	lanyard_x509_source *s;
	pthread_condattr_t ca;
	struct ly_error e;
	lanyard_status st;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return wl_export(err, ly_error_set(&e, LY_E_NOMEM, "source: out of memory"), &e, 0);
	atomic_init(&s->refs, 1);
	atomic_init(&s->stop, false);
	s->cb = cb;
	s->arg = arg;
	(void)snprintf(s->last.msg, sizeof(s->last.msg), "no answer from the agent yet");
	s->last.code = LY_E_IO;
	if (pthread_mutex_init(&s->mu, NULL) != 0) {
		free(s);
		return wl_export(err, ly_error_set(&e, LY_E_IO, "source: cannot make a mutex"), &e, 0);
	}
	if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&s->cv, &ca) != 0) {
		pthread_mutex_destroy(&s->mu);
		free(s);
		return wl_export(err, ly_error_set(&e, LY_E_IO, "source: cannot make a condition variable"), &e, 0);
	}
	pthread_condattr_destroy(&ca);
	if ((st = lanyard_client_new(addr, &s->client, err)) != LANYARD_OK) {
		source_destroy(s);
		return st;
	}
	if (pthread_create(&s->thread, NULL, watch, s) != 0) {
		source_destroy(s);
		return wl_export(err, ly_error_set(&e, LY_E_IO, "source: cannot start the watcher thread"), &e, 0);
	}
	s->thread_started = true;
	*out = s;
	return LANYARD_OK;
}

lanyard_status
lanyard_x509_source_wait(lanyard_x509_source *s, unsigned timeout_ms, struct lanyard_error *err)
{
	struct timespec until;
	lanyard_status st = LANYARD_OK;

	clock_gettime(CLOCK_MONOTONIC, &until);
	add_ms(&until, timeout_ms);
	pthread_mutex_lock(&s->mu);
	while (s->version == 0) {
		if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT && s->version == 0) {
			struct ly_error e;
			(void)ly_error_set(&e, LY_E_IO, "no X.509-SVID within %u ms: %s", timeout_ms, s->last.msg);
			(void)wl_export(err, LY_E_IO, &e, 0);
			if (err != NULL) {
				err->code = LANYARD_E_TIMEOUT;
				err->rpc_code = s->last_rpc;
			}
			st = LANYARD_E_TIMEOUT;
			break;
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (st == LANYARD_OK && err != NULL) {
		err->code = LANYARD_OK;
		err->rpc_code = 0;
		err->msg[0] = '\0';
	}
	return st;
}

lanyard_x509_context *
lanyard_x509_source_get(lanyard_x509_source *s)
{
	pthread_mutex_lock(&s->mu);
	lanyard_x509_context *ctx = lanyard_x509_context_ref(s->cur);
	pthread_mutex_unlock(&s->mu);
	return ctx;
}

uint64_t
lanyard_x509_source_version(lanyard_x509_source *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t v = s->version;
	pthread_mutex_unlock(&s->mu);
	return v;
}

lanyard_x509_source *
lanyard_x509_source_ref(lanyard_x509_source *s)
{
	if (s != NULL)
		atomic_fetch_add(&s->refs, 1);
	return s;
}

void
lanyard_x509_source_free(lanyard_x509_source *s)
{
	if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
		source_destroy(s);
}

ly_status
wl_x509_source_new_fixed(lanyard_x509_context *ctx, lanyard_x509_source **out, struct ly_error *err)
{
	lanyard_x509_source *s;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return ly_error_set(err, LY_E_NOMEM, "source: out of memory");
	atomic_init(&s->refs, 1);
	atomic_init(&s->stop, false);
	if (pthread_mutex_init(&s->mu, NULL) != 0) {
		free(s);
		return ly_error_set(err, LY_E_IO, "source: cannot make a mutex");
	}
	if (pthread_cond_init(&s->cv, NULL) != 0) {
		pthread_mutex_destroy(&s->mu);
		free(s);
		return ly_error_set(err, LY_E_IO, "source: cannot make a condition variable");
	}
	if (ctx != NULL) {
		s->cur = lanyard_x509_context_ref(ctx);
		s->version = 1;
	}
	*out = s;
	return LY_OK;
}

void
wl_x509_source_set(lanyard_x509_source *s, lanyard_x509_context *ctx)
{
	pthread_mutex_lock(&s->mu);
	lanyard_x509_context *old = s->cur;
	s->cur = lanyard_x509_context_ref(ctx);
	s->version++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	lanyard_x509_context_free(old);
}
