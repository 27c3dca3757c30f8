/*
 * kubelet_probe.c: drives the k8s workload attestor (agent/attest_k8s.h) on
 * a libuv loop, for tests/integration/fake_kubelet.py.
 *
 * usage: kubelet_probe --host H --port N --token FILE (--ca FILE | --skip-verify)
 *                      --proc-root DIR [--attempts N] [--interval-ms N]
 *                      [--cache-ms N] [--timeout-ms N] [--wave-gap-ms N] [--close-after-ms N]
 *                      PID... [+ PID...]...
 * PIDs are attested concurrently, one wave at a time: "+" starts the next
 * wave once the previous one has answered (and --wave-gap-ms more). Prints, per PID in order,
 * "PID <pid> OK" and its selectors as "SEL type:value" (sorted), or
 * "PID <pid> ERR <status>: <message>"; then the kubelet client's counters
 * ("FETCHES n", "FAILURES n", "CACHE_HITS n"),
 * and how the loop fared while it waited: "TICKS n" (a 10 ms timer) and
 * "MAXGAP ms" (the longest time between two ticks: a blocked loop shows
 * here). --close-after-ms closes the attestor while it works (what still
 * runs is answered "closing"); the loop must then end with nothing left
 * open ("LOOP NOT EMPTY" and exit 1 otherwise). Exit 0 when every PID was attested, 3 when one failed, 2 on usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/attest_k8s.h"
#include "lib/entry.h"
#include "lib/log.h"

#define PIDS_MAX 64
#define TICK_MS 10

struct job {
	long pid;
	int wave;
	bool done;
	ly_status rc;
	char msg[LY_ERROR_MSG_MAX];
	struct ly_selector *sels;
	size_t n;
};

static struct job jobs[PIDS_MAX];
static size_t n_jobs;
static int last_wave;
static struct ly_k8s_attestor *attestor;
static const char *proc_root;
static uv_timer_t ticker;
static uint64_t ticks, last_tick, max_gap;
static struct ly_kubelet_stats stats;
static uint64_t wave_gap_ms;
static uv_timer_t gap_timer;
static int next_wave;
static uint64_t close_after_ms;
static uv_timer_t closer;
static bool shut;

static void start_wave(int wave);
static void advance(int wave);
static void on_gap(uv_timer_t *t);
static void probe_shutdown(void);

static bool
wave_done(int wave)
{
	for (size_t i = 0; i < n_jobs; i++) {
		if (jobs[i].wave == wave && !jobs[i].done)
			return false;
	}
	return true;
}

static void
on_tick(uv_timer_t *t)
{
	uint64_t now = uv_now(t->loop);
	if (ticks > 0 && now - last_tick > max_gap)
		max_gap = now - last_tick;
	last_tick = now;
	ticks++;
}

/* Closes the attestor (answering what still runs) and every handle of ours, once. */
static void
probe_shutdown(void)
{
	if (shut)
		return;
	shut = true;
	ly_k8s_attestor_kubelet_stats(attestor, &stats);
	ly_k8s_attestor_close(attestor);
	uv_close((uv_handle_t *)&ticker, NULL);
	uv_close((uv_handle_t *)&gap_timer, NULL);
	uv_close((uv_handle_t *)&closer, NULL);
}

static void
on_close_timer(uv_timer_t *t)
{
	(void)t;
	probe_shutdown();
}

/* Starts the next waves while the current one has answered; closes everything after the last. */
static void
advance(int wave)
{
	while (wave_done(wave)) {
		if (wave == last_wave) {
			probe_shutdown();
			return;
		}
		if (wave_gap_ms > 0) {
			next_wave = wave + 1;
			uv_timer_start(&gap_timer, on_gap, wave_gap_ms, 0);
			return;
		}
		start_wave(++wave);
	}
}

static void
on_gap(uv_timer_t *t)
{
	(void)t;
	start_wave(next_wave);
	advance(next_wave);
}

static void
on_attested(void *arg, ly_status rc, const struct ly_error *err, struct ly_selector *sels, size_t n)
{
	struct job *j = arg;
	j->done = true;
	j->rc = rc;
	j->sels = sels;
	j->n = n;
	if (rc != LY_OK)
		snprintf(j->msg, sizeof(j->msg), "%s", err->msg);
	advance(j->wave);
}

static void
start_wave(int wave)
{
	struct ly_error err;
	for (size_t i = 0; i < n_jobs; i++) {
		if (jobs[i].wave != wave)
			continue;
		if (ly_k8s_attest_start(attestor, (pid_t)jobs[i].pid, proc_root, on_attested, &jobs[i], NULL, &err) !=
		    LY_OK) {
			/* No callback will come: record the refusal as the answer. */
			jobs[i].done = true;
			jobs[i].rc = err.code;
			snprintf(jobs[i].msg, sizeof(jobs[i].msg), "%s", err.msg);
		}
	}
}

static int
sel_cmp(const void *a, const void *b)
{
	return ly_selector_cmp(a, b);
}

static int
usage(void)
{
	fprintf(stderr, "usage: kubelet_probe --host H --port N --token FILE (--ca FILE | --skip-verify) "
			"--proc-root DIR [--attempts N] [--interval-ms N] [--cache-ms N] [--timeout-ms N] [--wave-gap-ms N] [--close-after-ms N] "
			"PID... [+ PID...]...\n");
	return 2;
}

int
main(int argc, char **argv)
{
	struct ly_k8s_attestor_config cfg;
	struct ly_error err;
	uv_loop_t loop;
	int wave = 0;

	memset(&cfg, 0, sizeof(cfg));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--skip-verify") == 0) {
			cfg.kubelet.skip_verify = true;
		} else if (strcmp(a, "+") == 0) {
			wave++;
		} else if (strncmp(a, "--", 2) == 0) {
			if (v == NULL)
				return usage();
			i++;
			if (strcmp(a, "--host") == 0)
				cfg.kubelet.host = v;
			else if (strcmp(a, "--port") == 0)
				cfg.kubelet.port = (unsigned)strtoul(v, NULL, 10);
			else if (strcmp(a, "--token") == 0)
				cfg.kubelet.token_file = v;
			else if (strcmp(a, "--ca") == 0)
				cfg.kubelet.ca_file = v;
			else if (strcmp(a, "--proc-root") == 0)
				proc_root = v;
			else if (strcmp(a, "--attempts") == 0)
				cfg.max_attempts = (unsigned)strtoul(v, NULL, 10);
			else if (strcmp(a, "--interval-ms") == 0)
				cfg.retry_interval_ms = strtoull(v, NULL, 10);
			else if (strcmp(a, "--cache-ms") == 0)
				cfg.kubelet.cache_ms = strtoull(v, NULL, 10);
			else if (strcmp(a, "--close-after-ms") == 0)
				close_after_ms = strtoull(v, NULL, 10);
			else if (strcmp(a, "--wave-gap-ms") == 0)
				wave_gap_ms = strtoull(v, NULL, 10);
			else if (strcmp(a, "--timeout-ms") == 0)
				cfg.kubelet.timeout_ms = strtoull(v, NULL, 10);
			else
				return usage();
		} else {
			if (n_jobs == PIDS_MAX)
				return usage();
			jobs[n_jobs].pid = strtol(a, NULL, 10);
			jobs[n_jobs].wave = wave;
			n_jobs++;
		}
	}
	last_wave = wave;
	if (n_jobs == 0 || proc_root == NULL)
		return usage();
	ly_log_set_level(LY_LOG_WARN);
	if (uv_loop_init(&loop) != 0)
		return 1;
	if (ly_k8s_attestor_new(&loop, &cfg, &attestor, &err) != LY_OK) {
		printf("CONFIG ERR %s: %s\n", ly_status_str(err.code), err.msg);
		return 2;
	}
	uv_timer_init(&loop, &ticker);
	uv_timer_init(&loop, &gap_timer);
	uv_timer_init(&loop, &closer);
	if (close_after_ms > 0)
		uv_timer_start(&closer, on_close_timer, close_after_ms, 0);
	uv_timer_start(&ticker, on_tick, TICK_MS, TICK_MS);
	uint64_t t0 = uv_hrtime();
	start_wave(0);
	advance(0); /* when every start of a wave was refused, nothing calls back */
	uv_run(&loop, UV_RUN_DEFAULT);
	uint64_t elapsed_ms = (uv_hrtime() - t0) / 1000000;

	int rc = 0;
	for (size_t i = 0; i < n_jobs; i++) {
		struct job *j = &jobs[i];
		if (j->rc != LY_OK) {
			printf("PID %ld ERR %s: %s\n", j->pid, ly_status_str(j->rc), j->msg);
			rc = 3;
			continue;
		}
		printf("PID %ld OK\n", j->pid);
		if (j->n > 0)
			qsort(j->sels, j->n, sizeof(j->sels[0]), sel_cmp);
		for (size_t k = 0; k < j->n; k++)
			printf("SEL %s:%s\n", j->sels[k].type, j->sels[k].value);
		ly_selectors_free(j->sels, j->n);
	}
	/* The attestor is closed: its counters were read before. */
	printf("FETCHES %llu\nFAILURES %llu\nCACHE_HITS %llu\n", (unsigned long long)stats.fetches,
	    (unsigned long long)stats.failures, (unsigned long long)stats.cache_hits);
	printf("TICKS %llu\nMAXGAP %llu\nELAPSED_MS %llu\n", (unsigned long long)ticks, (unsigned long long)max_gap,
	    (unsigned long long)elapsed_ms);
	if (uv_loop_close(&loop) != 0) {
		printf("LOOP NOT EMPTY\n");
		rc = 1;
	}
	return rc;
}
