/*
 * agentsim_report.c: every line bench_agentsim prints on stdout (the
 * format is in agentsim.c's header comment; bench/ha-scale/run.py reads
 * it): `err` lines (the first ERR_PRINT_MAX, then only counted),
 * `revoked` and `moved` events, and the periodic `stat` line. Each line is
 * flushed as printed (stdout is line-buffered by main).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "agentsim.h"

#define ERR_PRINT_MAX 50

void
report_err(struct sim *s, struct agent *a, const char *what, int code, const char *fmt, ...)
{
	s->errs++;
	if (s->errs > ERR_PRINT_MAX)
		return;
	va_list ap;
	printf("err agent=%d what=%s code=%d ", a != NULL ? (int)a->idx : -1, what, code);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

void
report_revoked(struct sim *s, struct agent *a, int64_t t)
{
	printf("revoked agent=%u t=%" PRId64 " server=%s\n", a->idx, t, s->addrs[a->addr]);
}

void
report_moved(struct sim *s, struct agent *a, int64_t t)
{
	printf("moved agent=%u lost=%" PRId64 " back=%" PRId64 " from=%s to=%s tries=%u\n", a->idx, a->t_lost, t,
	    s->addrs[a->lost_from], s->addrs[a->addr], a->attempt);
}

void
report_stat(struct sim *s)
{
	unsigned cnt[ST_FAILED + 1] = { 0 };
	uint64_t ents = 0, svids = 0, marked = 0, attested = 0;

	for (unsigned i = 0; i < s->n; i++) {
		struct agent *a = &s->agents[i];
		cnt[a->st]++;
		attested += a->cert_pem.len > 0;
		marked += a->has_mark;
		ents += a->n_ents;
		for (size_t j = 0; j < a->n_ents; j++)
			svids += a->ents[j].renew_at != 0;
	}
	/* served_by=A/B/...: agents served by each address of -servers, in order. */
	char by[256];
	size_t off = 0;
	by[0] = '\0';
	for (unsigned j = 0; j < s->n_addrs && off < sizeof(by) - 16; j++) {
		unsigned c = 0;
		for (unsigned i = 0; i < s->n; i++)
			c += s->agents[i].st == ST_SERVED && s->agents[i].addr == j;
		int w = snprintf(by + off, sizeof(by) - off, "%s%u", j > 0 ? "/" : "", c);
		if (w < 0)
			break;
		off += (size_t)w;
	}
	int64_t t_ns = now_ns();
	printf("stat t=%" PRId64 ".%03d agents=%u started=%u attested=%" PRIu64 " served=%u connecting=%u backoff=%u "
	       "failed=%u entries=%" PRIu64 " svids=%" PRIu64 " marked=%" PRIu64 " issued=%" PRIu64 " renewed=%" PRIu64
	       " agent_renewed=%" PRIu64 " watches=%" PRIu64 " snapshots=%" PRIu64 " deltas=%" PRIu64 " moves=%" PRIu64
	       " revoked=%" PRIu64 " errs=%" PRIu64 " batch_errs=%" PRIu64 " watch_errs=%" PRIu64
	       " attest_errs=%" PRIu64 " refused=%" PRIu64 " served_by=%s chan_new_ms=%.0f deferred=%" PRIu64 "\n",
	    t_ns / 1000000000, (int)(t_ns / 1000000 % 1000), s->n, s->started, attested, cnt[ST_SERVED],
	    cnt[ST_CONNECTING], cnt[ST_BACKOFF], cnt[ST_FAILED], ents, svids, marked, s->issued, s->renewed,
	    s->agent_renewed, s->watch_opened, s->snapshots, s->deltas, s->moves, s->revoked, s->errs, s->batch_errs,
	    s->watch_errs, s->attest_errs, s->refused, by, s->chan_new_ms, s->deferred);
	fflush(stdout);
}
