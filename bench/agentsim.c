/*
 * agentsim.c: many simulated lanyard-agents in one process, for the scale
 * proof of issue 16 (bench/ha-scale/run.sh drives it; not run by ctest).
 *
 *   bench_agentsim -servers HOST:PORT[,HOST:PORT...] -tokens FILE -bundle FILE
 *       [-td example.org] [-n N] [-ramp PER_S] [-resync S] [-mark ENTRY_ID]
 *       [-backoffMin MS] [-backoffMax MS] [-stat S] [-srcAddrs N]
 *
 * Each simulated agent is what lanyard-agent is to the server (docs/agent-api.md),
 * minus the Workload API: its own P-256 key, AttestAgent with its own join
 * token (line i of -tokens; the CSR names the default join-token ID, so one
 * round trip), then its own mTLS channel with its agent SVID, a WatchEntries
 * stream (snapshot then deltas, applied idempotently), BatchNewX509SVID for
 * every entry it is given (one CSR per entry, from one workload key per
 * simulated agent: the server's work per SVID is the same), renewals at 50%
 * of each SVID's lifetime, RenewAgent at 50% of its own (then a new channel,
 * as the agent does: a connection keeps its handshake's certificate), and
 * the agent's periodic resync (a second watch every -resync seconds whose
 * first update replaces the first; 0: none). Every watch is opened with the
 * revision of the last update applied (since_revision), as the agent does:
 * a server that answers with the changes since then sends a delta, others a
 * snapshot. Agent i starts on server i mod n;
 * when its watch fails it moves to the next address after an equal-jitter
 * exponential backoff (the agent's own: -backoffMin..-backoffMax).
 *
 * What it prints on stdout, one line each (times: CLOCK_REALTIME, ns):
 *   stat t=... agents= attested= served= backoff= failed= entries= svids= ...
 *                                   every -stat seconds
 *   revoked agent=I t=NS server=A   entry -mark left agent I's set (its watch on A)
 *   moved agent=I lost=NS back=NS from=A to=B tries=K
 *                                   agent I's watch failed at `lost` and a
 *                                   first update came from server B at `back`,
 *                                   after K backoff waits
 *   err agent=I what=W code=C msg   the first 50 failures, then only counted
 * Everything runs on one libuv loop; gRPC through rpc/ (ly_rpc).
 *
 * This file is the driver: flags, tokens, the start-up ramp, the tick,
 * signals, the loop. The simulated agent, its entries, the calls, the
 * output and the source addresses are parts of their own (agentsim.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "agentsim.h"
#include "lib/der.h"
#include "lib/keys.h"

/* ---- timers: start-up ramp, renewals, resync, statistics ----------------------------------- */

static void
on_tick(uv_timer_t *t)
{
	struct sim *s = t->data;
	int64_t now = now_s();

	/* Ramp: start the next agents (the tick runs every 100 ms). */
	unsigned want = s->ramp <= 0 ? s->n : (unsigned)(s->ramp / 10.0 + 0.999);
	for (unsigned i = 0; i < want && s->started < s->n; i++)
		agent_start(&s->agents[s->started++]);
	static int64_t last;
	if (now == last)
		return;
	last = now;
	for (unsigned i = 0; i < s->n; i++)
		agent_tick(&s->agents[i], now);
}

static void
on_stat(uv_timer_t *t)
{
	report_stat(t->data);
}

static void
on_signal(uv_signal_t *h, int signum)
{
	(void)signum;
	fflush(stdout);
	uv_stop(h->loop);
}

/* ---- set-up ------------------------------------------------------------------------------ */

static ly_status
read_tokens(struct sim *s, const char *path, unsigned want, struct ly_error *err)
{
	FILE *f = fopen(path, "r");
	char line[512];
	unsigned cap = 0;

	if (f == NULL)
		return ly_error_set(err, LY_E_IO, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL && (want == 0 || s->n < want)) {
		size_t l = strcspn(line, " \t\r\n");
		if (l == 0)
			continue;
		if (l > TOKEN_MAX) {
			fclose(f);
			return ly_error_set(err, LY_E_INVALID, "%s: token on line %u longer than %d bytes", path, s->n + 1,
			    TOKEN_MAX);
		}
		if (s->n == cap) {
			cap = cap ? cap * 2 : 256;
			struct agent *p = realloc(s->agents, cap * sizeof(*p));
			if (p == NULL) {
				fclose(f);
				return ly_error_set(err, LY_E_NOMEM, "tokens: out of memory");
			}
			s->agents = p;
		}
		struct agent *a = &s->agents[s->n];
		memset(a, 0, sizeof(*a));
		memcpy(a->token, line, l);
		a->token[l] = '\0';
		char id[LY_SPIFFE_ID_MAX + 1];
		int n = snprintf(id, sizeof(id), "spiffe://%s/lanyard/agent/join_token/%s", s->td, a->token);
		if (n < 0 || (size_t)n >= sizeof(id) || ly_spiffe_id_parse_str(id, &a->id, err) != LY_OK) {
			fclose(f);
			return ly_error_set(err, LY_E_INVALID, "%s: line %u: not a usable join token", path, s->n + 1);
		}
		s->n++;
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (s->n == 0)
		return ly_error_set(err, LY_E_INVALID, "%s: no tokens", path);
	if (want != 0 && s->n < want)
		return ly_error_set(err, LY_E_INVALID, "%s: %u tokens, %u agents asked for", path, s->n, want);
	return LY_OK;
}

static ly_status
split_addrs(struct sim *s, const char *list, struct ly_error *err)
{
	char *copy = strdup(list), *save = NULL;
	if (copy == NULL)
		return ly_error_set(err, LY_E_NOMEM, "out of memory");
	for (char *p = strtok_r(copy, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
		char **n = realloc(s->addrs, (s->n_addrs + 1) * sizeof(*n));
		if (n == NULL || (n[s->n_addrs] = strdup(p)) == NULL) {
			free(copy);
			if (n != NULL)
				s->addrs = n;
			return ly_error_set(err, LY_E_NOMEM, "out of memory");
		}
		s->addrs = n;
		s->n_addrs++;
	}
	free(copy);
	if (s->n_addrs == 0)
		return ly_error_set(err, LY_E_INVALID, "-servers: no address");
	return LY_OK;
}

static int
usage(void)
{
	fprintf(stderr, "usage: bench_agentsim -servers HOST:PORT[,...] -tokens FILE -bundle FILE [-td TD] [-n N]\n"
			"       [-ramp AGENTS_PER_S] [-resync S] [-mark ENTRY_ID] [-backoffMin MS] [-backoffMax MS]\n"
			"       [-stat S] [-srcAddrs N]\n");
	return 2;
}

static bool
num_arg(const char *v, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi)
		return false;
	*out = x;
	return true;
}

int
main(int argc, char **argv)
{
	struct sim s = { .td = "example.org", .ramp = 200, .resync_s = 5, .backoff_min = 200, .backoff_max = 30000 };
	const char *servers = NULL, *tokens = NULL, *bundle = NULL;
	long long n = 0, stat_s = 1, v;
	struct ly_error e;
	uv_loop_t loop;

	for (int i = 1; i < argc; i++) {
		const char *f = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (val == NULL)
			return usage();
		i++;
		if (strcmp(f, "-servers") == 0)
			servers = val;
		else if (strcmp(f, "-tokens") == 0)
			tokens = val;
		else if (strcmp(f, "-bundle") == 0)
			bundle = val;
		else if (strcmp(f, "-td") == 0)
			s.td = val;
		else if (strcmp(f, "-mark") == 0)
			s.mark = val;
		else if (strcmp(f, "-n") == 0 && num_arg(val, 1, 1000000, &v))
			n = v;
		else if (strcmp(f, "-ramp") == 0 && num_arg(val, 0, 1000000, &v))
			s.ramp = (double)v;
		else if (strcmp(f, "-resync") == 0 && num_arg(val, 0, 86400, &v))
			s.resync_s = v;
		else if (strcmp(f, "-backoffMin") == 0 && num_arg(val, 1, 600000, &v))
			s.backoff_min = v;
		else if (strcmp(f, "-backoffMax") == 0 && num_arg(val, 1, 600000, &v))
			s.backoff_max = v;
		else if (strcmp(f, "-stat") == 0 && num_arg(val, 1, 3600, &v))
			stat_s = v;
		else if (strcmp(f, "-srcAddrs") == 0 && num_arg(val, 0, 250 * 250, &v))
			srcaddr_set((unsigned)v);
		else {
			fprintf(stderr, "bench_agentsim: bad flag or value: %s %s\n", f, val);
			return usage();
		}
	}
	if (servers == NULL || tokens == NULL || bundle == NULL)
		return usage();
	if (s.backoff_max < s.backoff_min)
		s.backoff_max = s.backoff_min;
	signal(SIGPIPE, SIG_IGN);
	int nw = snprintf(s.server_id, sizeof(s.server_id), "spiffe://%s/lanyard/server", s.td);
	if (nw < 0 || (size_t)nw >= sizeof(s.server_id)) {
		fprintf(stderr, "bench_agentsim: -td too long\n");
		return 2;
	}
	if (split_addrs(&s, servers, &e) != LY_OK || read_tokens(&s, tokens, (unsigned)n, &e) != LY_OK ||
	    ly_pem_read_file(bundle, &s.bundle_pem, &e) != LY_OK) {
		fprintf(stderr, "bench_agentsim: %s\n", e.msg);
		return 1;
	}
	if (uv_loop_init(&loop) != 0 || ly_rpc_new(&loop, &s.rpc, &e) != LY_OK) {
		fprintf(stderr, "bench_agentsim: cannot start the loop or gRPC\n");
		return 1;
	}
	s.loop = &loop;
	int64_t t0 = now_s();
	for (unsigned i = 0; i < s.n; i++) {
		struct agent *a = &s.agents[i];
		a->sim = &s;
		a->idx = i;
		a->addr = i % s.n_addrs;
		a->next_resync = t0 + (s.resync_s > 0 ? s.resync_s + (int64_t)(i % (unsigned)s.resync_s) : 0);
		if (ly_key_generate(LY_KEY_EC_P256, &a->wkey, &e) != LY_OK) {
			fprintf(stderr, "bench_agentsim: %s\n", e.msg);
			return 1;
		}
		uv_timer_init(&loop, &a->timer);
		a->timer.data = a;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	fprintf(stderr, "bench_agentsim: %u agents over %u servers, ramp %.0f/s, resync %" PRId64 " s\n", s.n, s.n_addrs,
	    s.ramp, s.resync_s);
	uv_timer_init(&loop, &s.tick);
	s.tick.data = &s;
	uv_timer_start(&s.tick, on_tick, 0, 100);
	uv_timer_init(&loop, &s.stat);
	s.stat.data = &s;
	uv_timer_start(&s.stat, on_stat, (uint64_t)stat_s * 1000, (uint64_t)stat_s * 1000);
	uv_signal_init(&loop, &s.sigterm);
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	uv_signal_init(&loop, &s.sigint);
	uv_signal_start(&s.sigint, on_signal, SIGINT);
	uv_run(&loop, UV_RUN_DEFAULT);
	on_stat(&s.stat);
	/* The process ends here: the kernel takes the connections and memory back. */
	return 0;
}
