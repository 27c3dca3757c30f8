/*
 * wapi_client.c: a Workload API load generator on gRPC core, for
 * bench/agent_bench.py (which starts the server and the agent).
 *
 *   bench_wapi_client fetch -s SOCKET -n CLIENTS -r ROUNDS [-w PAUSE_MS] [-p AGENT_PID] [-H]
 *       Each round makes CLIENTS channels, each with its own connection to
 *       the agent's socket (GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL), then starts
 *       one FetchX509SVID per channel in one tight loop (metadata
 *       workload.spiffe.io: true) and records, per call, CLOCK_MONOTONIC
 *       from just before its batch is started to the completion of its
 *       first RECV_MESSAGE: connect, the agent's workload attestation of the
 *       connection, HTTP/2 set-up, the call and the full first response
 *       ("fetch_cold"). Each call is then cancelled and, on the same
 *       connections, a second FetchX509SVID is started on every channel at
 *       once and timed the same way ("fetch_warm": an open, attested
 *       connection); then one grpc.health.v1.Health/Check per channel at
 *       once ("health_warm": the unary floor at the same concurrency). The
 *       channels are then destroyed and PAUSE_MS (default 300) pass.
 *       -H leaves the Health/Check phase out: it is a floor only where
 *       Check does no work (SPIRE's agent answers Check by making a
 *       Workload API fetch of its own, bench/vs-spire).
 *       With -p, the agent's CPU time (all its threads, from
 *       /proc/PID/task/TID/schedstat) is summed over each kind of round, and
 *       printed per call next to this client's own.
 *   bench_wapi_client paced -s SOCKET -n CLIENTS -R CALLS_PER_S -d SECONDS [-p AGENT_PID]
 *       CLIENTS open connections (each attested and warmed up by one call,
 *       not counted), then FetchX509SVID started at a steady total rate,
 *       round-robin over the clients (one call in flight per client; a
 *       start that finds every client busy is counted as an error), each
 *       timed from its scheduled start to its first message (so a late
 *       start counts); a pacer thread sleeps to each start with
 *       clock_nanosleep (gRPC's timers have millisecond granularity). The
 *       load of many workloads that call now and then, rather than all in
 *       the same microsecond.
 *   bench_wapi_client unary -s SOCKET -i ITERS
 *       Floors over the same socket and the same agent: ITERS sequential
 *       grpc.health.v1.Health/Check calls on one open channel (a unary round
 *       trip; no attestation, no SVID), and ITERS/10 on a new channel each
 *       (connect + attestation + the round trip).
 *   bench_wapi_client pingpong -i ITERS
 *       Floor: a 64-byte message to a forked echo process and back over a
 *       socketpair(AF_UNIX, SOCK_STREAM), ITERS times, each timed.
 *
 * One thread starts the calls (except in paced mode: a pacer thread) and
 * blocks in grpc_completion_queue_next, which is also where gRPC 1.51 does
 * its I/O, so a completion is stamped as soon as gRPC delivers it.
 *
 * Output, one line per measure (key=value, microseconds):
 *   measure=<name> clients=<n> samples=<n> errors=<n> p50_us=.. p99_us=.. max_us=.. [wall_ms=..] [resp_bytes=..]
 *   cpu=<name> clients=<n> client_cpu_us_per_call=.. [agent_cpu_us_per_call=..]
 * wall_ms is the median over rounds of (last first-message - first start).
 * A failed call prints one "error:" line on stderr (its status and details).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#define FETCH_METHOD "/SpiffeWorkloadAPI/FetchX509SVID"
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"
#define CALL_TIMEOUT_S 60
#define MAX_CLIENTS 5000

enum tag_kind { TAG_SEND = 0, TAG_MSG = 1, TAG_STATUS = 2 };

struct client;

struct tag {
	struct client *c;
	enum tag_kind kind;
};

struct client {
	grpc_channel *ch;
	grpc_call *call;
	grpc_metadata_array md_in;
	grpc_metadata_array trailing;
	grpc_byte_buffer *recv;
	grpc_status_code status;
	grpc_slice details;
	int64_t t0, t1;
	size_t resp_bytes;
	int pending; /* batches not completed yet */
	bool got_msg;
	struct tag tags[3];
};

static grpc_completion_queue *cq;
static unsigned errors_printed;
static bool no_health; /* -H: fetch mode without its Health/Check phase */

static int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted `v` (n > 0), in µs. */
static double
pct_us(const int64_t *v, size_t n, double p)
{
	size_t k = (size_t)ceil(p * (double)n);
	if (k == 0)
		k = 1;
	if (k > n)
		k = n;
	return (double)v[k - 1] / 1e3;
}

static void
print_measure(const char *name, size_t clients, int64_t *v, size_t n, size_t errors, double wall_ms,
    size_t resp_bytes)
{
	if (n == 0) {
		printf("measure=%s clients=%zu samples=0 errors=%zu\n", name, clients, errors);
		return;
	}
	qsort(v, n, sizeof(*v), cmp_i64);
	printf("measure=%s clients=%zu samples=%zu errors=%zu p50_us=%.1f p99_us=%.1f max_us=%.1f", name,
	    clients, n, errors, pct_us(v, n, 0.50), pct_us(v, n, 0.99), (double)v[n - 1] / 1e3);
	if (wall_ms >= 0)
		printf(" wall_ms=%.2f", wall_ms);
	if (resp_bytes > 0)
		printf(" resp_bytes=%zu", resp_bytes);
	printf("\n");
	fflush(stdout);
}

static grpc_channel *
channel_new(const char *target)
{
	grpc_arg arg;
	grpc_channel_args args;
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	grpc_channel *ch;

	/* One connection per channel, as separate workload processes would have. */
	arg.type = GRPC_ARG_INTEGER;
	arg.key = (char *)(uintptr_t)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
	arg.value.integer = 1;
	args.num_args = 1;
	args.args = &arg;
	ch = grpc_channel_create(target, creds, &args);
	grpc_channel_credentials_release(creds);
	return ch;
}

static gpr_timespec
deadline_in(int seconds)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(seconds, GPR_TIMESPAN));
}

static void
die(const char *what)
{
	fprintf(stderr, "bench_wapi_client: %s\n", what);
	exit(1);
}

/* Starts a call of `path` (FetchX509SVID or Health/Check) on c->ch: three batches, stamped t0. */
static void
call_start(struct client *c, const char *path)
{
	grpc_op ops[4];
	grpc_metadata md;
	grpc_slice method = grpc_slice_from_static_string(path);
	grpc_slice empty = grpc_empty_slice();
	grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&empty, 1);

	memset(ops, 0, sizeof(ops));
	grpc_metadata_array_init(&c->md_in);
	grpc_metadata_array_init(&c->trailing);
	c->recv = NULL;
	c->details = grpc_empty_slice();
	c->got_msg = false;
	c->resp_bytes = 0;
	c->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
	    deadline_in(CALL_TIMEOUT_S), NULL);
	if (c->call == NULL)
		die("grpc_channel_create_call failed");
	md.key = grpc_slice_from_static_string("workload.spiffe.io");
	md.value = grpc_slice_from_static_string("true");
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = 1;
	ops[0].data.send_initial_metadata.metadata = &md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = req;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_in;
	c->tags[0] = (struct tag){ c, TAG_SEND };
	c->tags[1] = (struct tag){ c, TAG_MSG };
	c->tags[2] = (struct tag){ c, TAG_STATUS };
	c->t0 = now_ns();
	if (grpc_call_start_batch(c->call, ops, 4, &c->tags[0], NULL) != GRPC_CALL_OK)
		die("start_batch (send) failed");
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_MESSAGE;
	ops[0].data.recv_message.recv_message = &c->recv;
	if (grpc_call_start_batch(c->call, ops, 1, &c->tags[1], NULL) != GRPC_CALL_OK)
		die("start_batch (recv message) failed");
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &c->trailing;
	ops[0].data.recv_status_on_client.status = &c->status;
	ops[0].data.recv_status_on_client.status_details = &c->details;
	if (grpc_call_start_batch(c->call, ops, 1, &c->tags[2], NULL) != GRPC_CALL_OK)
		die("start_batch (recv status) failed");
	c->pending = 3;
	grpc_byte_buffer_destroy(req);
}

static void
call_release(struct client *c)
{
	grpc_metadata_array_destroy(&c->md_in);
	grpc_metadata_array_destroy(&c->trailing);
	grpc_slice_unref(c->details);
	grpc_call_unref(c->call);
	c->call = NULL;
}

/* CPU time of every thread of process `pid` (ns, from /proc/PID/task/TID/schedstat); -1 when unknown. */
static int64_t
proc_cpu_ns(long pid)
{
	char path[64];
	DIR *d;
	struct dirent *de;
	int64_t sum = 0;

	if (pid <= 0)
		return -1;
	(void)snprintf(path, sizeof(path), "/proc/%ld/task", pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		char p2[128];
		FILE *f;
		long long ns = 0;
		if (de->d_name[0] == '.')
			continue;
		(void)snprintf(p2, sizeof(p2), "/proc/%ld/task/%.20s/schedstat", pid, de->d_name);
		if ((f = fopen(p2, "r")) == NULL)
			continue; /* the thread ended meanwhile */
		if (fscanf(f, "%lld", &ns) == 1)
			sum += (int64_t)ns;
		fclose(f);
	}
	closedir(d);
	return sum;
}

static int64_t
self_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Where one round's results go. */
struct sink {
	const char *path;
	int64_t *lat;
	size_t *n_lat;
	int64_t last;
	size_t *resp_bytes;
	size_t errors;
};

/* Handles one completion; returns true when its call is over (released). */
static bool
handle_event(grpc_event ev, struct sink *sk)
{
	if (ev.type == GRPC_QUEUE_TIMEOUT)
		return false;
	if (ev.type != GRPC_OP_COMPLETE)
		die("completion queue shut down");
	struct tag *t = ev.tag;
	struct client *c = t->c;
	if (t->kind == TAG_MSG) {
		if (c->recv != NULL) {
			c->t1 = now_ns();
			c->got_msg = true;
			c->resp_bytes = grpc_byte_buffer_length(c->recv);
			grpc_byte_buffer_destroy(c->recv);
			c->recv = NULL;
			sk->lat[(*sk->n_lat)++] = c->t1 - c->t0;
			if (c->t1 > sk->last)
				sk->last = c->t1;
			if (*sk->resp_bytes == 0)
				*sk->resp_bytes = c->resp_bytes;
			/* Only the first message is wanted: end the stream. */
			grpc_call_cancel(c->call, NULL);
		}
	} else if (t->kind == TAG_STATUS) {
		if (!c->got_msg) {
			sk->errors++;
			if (errors_printed++ < 5) {
				char *d = grpc_slice_to_c_string(c->details);
				fprintf(stderr, "error: %s status %d: %s\n", sk->path, (int)c->status, d);
				gpr_free(d);
			}
		}
	}
	if (--c->pending == 0) {
		call_release(c);
		return true;
	}
	return false;
}

/*
 * Starts one call of `path` per client at once and runs the queue until
 * every call is over. Fills lat[] (ns) for the calls that got a message;
 * returns the number of errors; *last is the latest first-message stamp.
 */
static size_t
run_round(struct client *cl, size_t n, const char *path, int64_t *lat, size_t *n_lat, int64_t *first,
    int64_t *last, size_t *resp_bytes)
{
	size_t open = n;
	struct sink sk = { .path = path, .lat = lat, .n_lat = n_lat, .resp_bytes = resp_bytes };

	for (size_t i = 0; i < n; i++)
		call_start(&cl[i], path);
	*first = cl[0].t0;
	sk.last = cl[0].t0;
	while (open > 0) {
		grpc_event ev = grpc_completion_queue_next(cq, deadline_in(CALL_TIMEOUT_S + 10), NULL);
		if (ev.type == GRPC_QUEUE_TIMEOUT)
			die("completion queue: no event for 70 s");
		if (handle_event(ev, &sk))
			open--;
	}
	*last = sk.last;
	return sk.errors;
}

/* The paced mode's shared state: the pacer thread starts calls, the main thread reaps them. */
struct pacer {
	pthread_mutex_t mu;
	struct client *cl;
	size_t n, total, started, open, skipped, next_client;
	int64_t interval;
	bool done;
};

/* Starts a call every `interval` ns (absolute sleeps, µs precision) on the next idle client. */
static void *
pacer_run(void *arg)
{
	struct pacer *pc = arg;
	int64_t next = now_ns();

	for (size_t i = 0; i < pc->total; i++) {
		struct timespec ts = { (time_t)(next / 1000000000), (long)(next % 1000000000) };
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		pthread_mutex_lock(&pc->mu);
		bool ok = false;
		for (size_t k = 0; k < pc->n && !ok; k++) {
			struct client *c = &pc->cl[(pc->next_client + k) % pc->n];
			if (c->pending == 0) {
				call_start(c, FETCH_METHOD);
				c->t0 = next; /* from the scheduled start: a late start counts */
				pc->open++;
				pc->next_client = (pc->next_client + k + 1) % pc->n;
				ok = true;
			}
		}
		if (!ok)
			pc->skipped++;
		pc->started++;
		pthread_mutex_unlock(&pc->mu);
		next += pc->interval;
	}
	pthread_mutex_lock(&pc->mu);
	pc->done = true;
	pthread_mutex_unlock(&pc->mu);
	return NULL;
}

/*
 * N open connections (each attested and warmed up by one call, not counted),
 * then FetchX509SVID started at a steady total rate (uniform intervals,
 * round-robin over the clients, a client with a call in flight skipped)
 * for `seconds`, by a pacer thread (gRPC's own timers have millisecond
 * granularity); this thread reaps the completions. Latency is counted from
 * the scheduled start, so a late start counts against the agent, not for it.
 */
static void
mode_paced(const char *target, size_t n, unsigned rate, unsigned seconds, long agent_pid)
{
	struct pacer pc = { .n = n, .total = (size_t)rate * seconds, .interval = 1000000000 / (int64_t)rate };
	size_t n_lat = 0, resp_bytes = 0, n_warm = 0;
	int64_t *lat = calloc(pc.total + n, sizeof(int64_t)), *warm = calloc(n, sizeof(int64_t));
	int64_t first, last, a0, c0;
	struct sink sk = { .path = FETCH_METHOD, .n_lat = &n_lat, .resp_bytes = &resp_bytes };
	pthread_t th;
	char name[64];

	pc.cl = calloc(n, sizeof(*pc.cl));
	if (pc.cl == NULL || lat == NULL || warm == NULL)
		die("out of memory");
	if (pthread_mutex_init(&pc.mu, NULL) != 0)
		die("pthread_mutex_init failed");
	sk.lat = lat;
	for (size_t i = 0; i < n; i++) {
		if ((pc.cl[i].ch = channel_new(target)) == NULL)
			die("grpc_channel_create failed");
	}
	if (run_round(pc.cl, n, FETCH_METHOD, warm, &n_warm, &first, &last, &resp_bytes) != 0)
		die("paced: the warm-up calls failed");
	a0 = proc_cpu_ns(agent_pid);
	c0 = self_cpu_ns();
	if (pthread_create(&th, NULL, pacer_run, &pc) != 0)
		die("pthread_create failed");
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(cq, deadline_in(1), NULL);
		pthread_mutex_lock(&pc.mu);
		if (ev.type != GRPC_QUEUE_TIMEOUT && handle_event(ev, &sk))
			pc.open--;
		bool over = pc.done && pc.open == 0;
		pthread_mutex_unlock(&pc.mu);
		if (over)
			break;
	}
	(void)pthread_join(th, NULL);
	(void)snprintf(name, sizeof(name), "paced_%u_per_s", rate);
	print_measure(name, n, lat, n_lat, sk.errors + pc.skipped, -1, resp_bytes);
	printf("cpu=%s clients=%zu client_cpu_us_per_call=%.1f", name, n,
	    (double)(self_cpu_ns() - c0) / 1e3 / (double)(n_lat > 0 ? n_lat : 1));
	if (a0 >= 0) {
		int64_t a1 = proc_cpu_ns(agent_pid);
		if (a1 >= 0)
			printf(" agent_cpu_us_per_call=%.1f", (double)(a1 - a0) / 1e3 / (double)(n_lat > 0 ? n_lat : 1));
	}
	printf(" skipped=%zu\n", pc.skipped);
	fflush(stdout);
	for (size_t i = 0; i < n; i++)
		grpc_channel_destroy(pc.cl[i].ch);
	pthread_mutex_destroy(&pc.mu);
	free(pc.cl);
	free(lat);
	free(warm);
}

/* One kind of round: its samples and what it cost. */
struct phase {
	const char *name;
	const char *path;
	int64_t *lat;
	size_t n_lat, errors, resp_bytes;
	int64_t *wall;         /* per round, ns */
	int64_t agent_cpu_ns;  /* summed over rounds; < 0: unknown */
	int64_t client_cpu_ns; /* summed over rounds */
};

static void
phase_round(struct phase *ph, struct client *cl, size_t n, unsigned r, long agent_pid)
{
	int64_t first, last, a0 = proc_cpu_ns(agent_pid), c0 = self_cpu_ns();

	ph->errors += run_round(cl, n, ph->path, ph->lat, &ph->n_lat, &first, &last, &ph->resp_bytes);
	ph->wall[r] = last - first;
	ph->client_cpu_ns += self_cpu_ns() - c0;
	if (a0 >= 0 && ph->agent_cpu_ns >= 0) {
		int64_t a1 = proc_cpu_ns(agent_pid);
		ph->agent_cpu_ns = a1 >= 0 ? ph->agent_cpu_ns + (a1 - a0) : -1;
	} else {
		ph->agent_cpu_ns = -1;
	}
}

static void
phase_print(struct phase *ph, size_t n, unsigned rounds)
{
	size_t calls = (size_t)rounds * n;
	qsort(ph->wall, rounds, sizeof(*ph->wall), cmp_i64);
	print_measure(ph->name, n, ph->lat, ph->n_lat, ph->errors, (double)ph->wall[(rounds - 1) / 2] / 1e6,
	    ph->resp_bytes);
	printf("cpu=%s clients=%zu client_cpu_us_per_call=%.1f", ph->name, n,
	    (double)ph->client_cpu_ns / 1e3 / (double)calls);
	if (ph->agent_cpu_ns >= 0)
		printf(" agent_cpu_us_per_call=%.1f", (double)ph->agent_cpu_ns / 1e3 / (double)calls);
	printf("\n");
	fflush(stdout);
}

/*
 * Per round: N new channels; one FetchX509SVID on each at once (cold: the
 * connection is made by the call); the same again on the open connections
 * (warm); one Health/Check on each at once (the unary floor at the same
 * concurrency); the channels destroyed.
 */
static void
mode_fetch(const char *target, size_t n, unsigned rounds, unsigned pause_ms, long agent_pid)
{
	struct client *cl = calloc(n, sizeof(*cl));
	size_t n_ph = no_health ? 2 : 3;
	struct phase ph[3] = {
		{ .name = "fetch_cold", .path = FETCH_METHOD },
		{ .name = "fetch_warm", .path = FETCH_METHOD },
		{ .name = "health_warm", .path = HEALTH_METHOD },
	};

	if (cl == NULL)
		die("out of memory");
	for (size_t k = 0; k < 3; k++) {
		ph[k].lat = calloc(n * rounds, sizeof(int64_t));
		ph[k].wall = calloc(rounds, sizeof(int64_t));
		if (ph[k].lat == NULL || ph[k].wall == NULL)
			die("out of memory");
	}
	for (unsigned r = 0; r < rounds; r++) {
		for (size_t i = 0; i < n; i++) {
			if ((cl[i].ch = channel_new(target)) == NULL)
				die("grpc_channel_create failed");
		}
		for (size_t k = 0; k < n_ph; k++)
			phase_round(&ph[k], cl, n, r, agent_pid);
		for (size_t i = 0; i < n; i++) {
			grpc_channel_destroy(cl[i].ch);
			cl[i].ch = NULL;
		}
		/* Let both sides close the connections before the next round. */
		struct timespec ts = { (time_t)(pause_ms / 1000), (long)(pause_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	for (size_t k = 0; k < n_ph; k++)
		phase_print(&ph[k], n, rounds);
	for (size_t k = 0; k < 3; k++) {
		free(ph[k].lat);
		free(ph[k].wall);
	}
	free(cl);
}

/* One Health/Check on `ch`, all ops in one batch; returns its duration (ns) or -1. */
static int64_t
health_once(grpc_channel *ch)
{
	grpc_op ops[6];
	grpc_metadata_array md_in, trailing;
	grpc_byte_buffer *recv = NULL;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_slice empty = grpc_empty_slice();
	grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&empty, 1);
	grpc_call *call;
	int tag = 0;
	int64_t t0, dt = -1;

	memset(ops, 0, sizeof(ops));
	grpc_metadata_array_init(&md_in);
	grpc_metadata_array_init(&trailing);
	call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
	    grpc_slice_from_static_string(HEALTH_METHOD), NULL, deadline_in(CALL_TIMEOUT_S), NULL);
	if (call == NULL)
		die("grpc_channel_create_call failed");
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = req;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_in;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;
	t0 = now_ns();
	if (grpc_call_start_batch(call, ops, 6, &tag, NULL) != GRPC_CALL_OK)
		die("start_batch (health) failed");
	grpc_event ev = grpc_completion_queue_next(cq, deadline_in(CALL_TIMEOUT_S + 10), NULL);
	if (ev.type != GRPC_OP_COMPLETE || ev.tag != &tag)
		die("health: unexpected completion");
	if (status == GRPC_STATUS_OK && recv != NULL)
		dt = now_ns() - t0;
	else if (errors_printed++ < 5)
		fprintf(stderr, "error: Health/Check status %d\n", (int)status);
	if (recv != NULL)
		grpc_byte_buffer_destroy(recv);
	grpc_byte_buffer_destroy(req);
	grpc_metadata_array_destroy(&md_in);
	grpc_metadata_array_destroy(&trailing);
	grpc_slice_unref(details);
	grpc_call_unref(call);
	return dt;
}

static void
mode_unary(const char *target, size_t iters)
{
	size_t n_cold = iters / 10 > 0 ? iters / 10 : 1;
	int64_t *v = calloc(iters, sizeof(*v)), *vc = calloc(n_cold, sizeof(*vc));
	size_t n = 0, nc = 0, errors = 0, errors_c = 0;
	grpc_channel *ch = channel_new(target);

	if (v == NULL || vc == NULL || ch == NULL)
		die("out of memory");
	if (health_once(ch) < 0) /* connect and warm up, not counted */
		errors++;
	for (size_t i = 0; i < iters; i++) {
		int64_t d = health_once(ch);
		if (d < 0)
			errors++;
		else
			v[n++] = d;
	}
	grpc_channel_destroy(ch);
	for (size_t i = 0; i < n_cold; i++) {
		grpc_channel *c2 = channel_new(target);
		int64_t d;
		if (c2 == NULL)
			die("grpc_channel_create failed");
		d = health_once(c2);
		grpc_channel_destroy(c2);
		if (d < 0)
			errors_c++;
		else
			vc[nc++] = d;
	}
	print_measure("unary_warm", 1, v, n, errors, -1, 0);
	print_measure("unary_cold", 1, vc, nc, errors_c, -1, 0);
	free(v);
	free(vc);
}

static int
full_io(int fd, char *buf, size_t len, bool wr)
{
	size_t off = 0;
	while (off < len) {
		ssize_t k = wr ? write(fd, buf + off, len - off) : read(fd, buf + off, len - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		off += (size_t)k;
	}
	return 0;
}

static void
mode_pingpong(size_t iters)
{
	int sv[2];
	char buf[64];
	int64_t *v = calloc(iters, sizeof(*v));
	pid_t pid;

	if (v == NULL)
		die("out of memory");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		die("socketpair failed");
	memset(buf, 'x', sizeof(buf));
	pid = fork();
	if (pid < 0)
		die("fork failed");
	if (pid == 0) {
		close(sv[0]);
		while (full_io(sv[1], buf, sizeof(buf), false) == 0 && full_io(sv[1], buf, sizeof(buf), true) == 0)
			;
		_exit(0);
	}
	close(sv[1]);
	for (size_t i = 0; i < iters; i++) {
		int64_t t0 = now_ns();
		if (full_io(sv[0], buf, sizeof(buf), true) != 0 || full_io(sv[0], buf, sizeof(buf), false) != 0)
			die("ping-pong I/O failed");
		v[i] = now_ns() - t0;
	}
	close(sv[0]);
	(void)waitpid(pid, NULL, 0);
	print_measure("unix_pingpong", 1, v, iters, 0, -1, 0);
	free(v);
}

static void
usage(void)
{
	fprintf(stderr, "usage: bench_wapi_client fetch -s SOCKET -n CLIENTS -r ROUNDS [-w PAUSE_MS] [-p AGENT_PID] [-H]\n"
			"       bench_wapi_client paced -s SOCKET -n CLIENTS -R CALLS_PER_S -d SECONDS [-p AGENT_PID]\n"
			"       bench_wapi_client unary -s SOCKET -i ITERS\n"
			"       bench_wapi_client pingpong -i ITERS\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *sock = NULL;
	unsigned long n = 1, rounds = 1, iters = 1000, pause_ms = 300, rate = 100, seconds = 5;
	long agent_pid = 0;
	char target[256];
	struct rlimit rl;
	int opt;

	if (argc < 2)
		usage();
	const char *mode = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "s:n:r:i:w:p:R:d:H")) != -1) {
		switch (opt) {
		case 's':
			sock = optarg;
			break;
		case 'n':
			n = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			rounds = strtoul(optarg, NULL, 10);
			break;
		case 'i':
			iters = strtoul(optarg, NULL, 10);
			break;
		case 'w':
			pause_ms = strtoul(optarg, NULL, 10);
			break;
		case 'p':
			agent_pid = strtol(optarg, NULL, 10);
			break;
		case 'R':
			rate = strtoul(optarg, NULL, 10);
			break;
		case 'd':
			seconds = strtoul(optarg, NULL, 10);
			break;
		case 'H':
			no_health = true;
			break;
		default:
			usage();
		}
	}
	if (n == 0 || n > MAX_CLIENTS || rounds == 0 || rounds > 1000 || iters == 0 || iters > 10000000 ||
	    pause_ms > 10000 || rate == 0 || rate > 100000 || seconds == 0 || seconds > 600)
		usage();
	if (strcmp(mode, "pingpong") == 0) {
		mode_pingpong(iters);
		return 0;
	}
	if (sock == NULL || snprintf(target, sizeof(target), "unix:%s", sock) >= (int)sizeof(target))
		usage();
	/* A connection is an fd or two here: raise the soft limit to the hard one. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	grpc_init();
	cq = grpc_completion_queue_create_for_next(NULL);
	if (strcmp(mode, "fetch") == 0)
		mode_fetch(target, n, (unsigned)rounds, (unsigned)pause_ms, agent_pid);
	else if (strcmp(mode, "paced") == 0)
		mode_paced(target, n, (unsigned)rate, (unsigned)seconds, agent_pid);
	else if (strcmp(mode, "unary") == 0)
		mode_unary(target, iters);
	else
		usage();
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	grpc_shutdown();
	return 0;
}
