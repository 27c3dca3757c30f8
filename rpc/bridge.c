/*
 * bridge.c: gRPC core's completion queue on a libuv loop (see rpc.h).
 *
 * The only file that includes both uv.h and grpc/grpc.h.
 *
 * Threads. cq_thread blocks in grpc_completion_queue_next and does nothing
 * else: each completed tag goes on a locked intrusive list and, when the
 * list was empty, the loop is woken through an eventfd of ours watched by a
 * uv_poll_t (on_wake drains the eventfd and then the whole list). Not
 * uv_async_send: libuv up to 1.44 (Debian 12's) makes the woken loop spin,
 * then sched_yield, until the sending thread is back from its eventfd write
 * (uv__async_io, libuv #2231, removed in 1.45 by #3879), which in the
 * paced FetchX509SVID row was 8-11% of the agent's CPU and a yield per call
 * (docs/benchmarks.md, "Where the CPU goes"). Everything else, every
 * grpc_call_start_batch included, runs on the loop thread. (gRPC 1.51's
 * callback completion queue delivers nothing on Linux: network I/O only
 * runs on threads blocked in _next.)
 *
 * Tags. Every batch carries a struct tag embedded in the object it belongs
 * to; its function runs on the loop with the batch's success flag. An
 * object counts its batches in flight (`pending`) and is freed only when
 * none is left and nobody else holds it, so a tag on the list always points
 * into live memory.
 *
 * Shutdown (ly_rpc_close): servers shut down and cancel their calls,
 * channels cancel theirs; when the last server, channel and call are gone
 * the completion queue is shut down, the thread sees GRPC_QUEUE_SHUTDOWN
 * and says so, the loop joins it, destroys the queue, closes the wake
 * handle and the timers and frees the rest (the eventfd included) in the
 * last close callback.
 */
#include "rpc/rpc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "lib/caps.h"
#include "lib/log.h"
#include "lib/procmem.h"
#include "lib/queue.h"
#include "lib/sockpath.h"
#include "rpc/conntab.h"
#include "rpc/internal.h"
#include "rpc/keycount.h"
#include "rpc/sockscan.h"
#include "rpc/sendq.h"

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

_Static_assert((int)LY_RPC_OK == (int)GRPC_STATUS_OK, "status codes");
_Static_assert((int)LY_RPC_INVALID_ARGUMENT == (int)GRPC_STATUS_INVALID_ARGUMENT, "status codes");
_Static_assert((int)LY_RPC_RESOURCE_EXHAUSTED == (int)GRPC_STATUS_RESOURCE_EXHAUSTED,
    "status codes");
_Static_assert((int)LY_RPC_UNIMPLEMENTED == (int)GRPC_STATUS_UNIMPLEMENTED, "status codes");
_Static_assert((int)LY_RPC_UNAUTHENTICATED == (int)GRPC_STATUS_UNAUTHENTICATED, "status codes");

/* Request metadata entries a client call may carry. */
#define RPC_CALL_MD_MAX 16

/* ---- objects ---- */

struct tag {
	void (*fn)(struct tag *tag, bool ok);
	struct tag *next; /* on the loop's list */
	bool ok;
};

struct ly_rpc {
	uv_loop_t *loop;
	uv_poll_t wake;   /* on wake_fd: the completion thread's wake-ups */
	int wake_fd;      /* eventfd, non-blocking; closed after the wake handle */
	uv_timer_t sweep; /* LY_RPC_SWEEP_MS: overdue requests, rates, connection caps, memory */
	uv_timer_t penalty; /* LY_RPC_PENALTY_SWEEP_MS while an address is penalized */
	int handles;      /* libuv handles to close before the struct is freed */
	unsigned ticks;
	uint64_t rss_base;  /* resident bytes, following slow growth (rpc_memory_guard) */
	uint64_t trim_until; /* uv_now until which freed memory is given back each second */
	size_t handover_queued; /* bytes queued before accept on the connections handed over this tick */
	uv_thread_t thread;
	grpc_completion_queue *cq;

	uv_mutex_t mu;           /* guards head, tail, thread_done */
	struct tag *head, *tail; /* completions for the loop */
	bool thread_done;

	struct ly_queue servers;
	struct ly_queue channels;
	bool closing;
	bool cq_shut;
	bool joined;
	struct ly_rpc_tls_state *retired; /* freed after grpc_shutdown */
	ly_rpc_close_cb close_cb;
	void *close_arg;
};

/* A connection handed over with ly_rpc_server_add_fd. */
struct conn {
	uv_poll_t poll; /* on fd_watch, for hang-up only */
	struct ly_queue link;
	struct ly_rpc_server *srv;
	int fd_grpc;  /* the number gRPC reports as "fd:N"; gRPC closes it */
	int fd_watch; /* our duplicate, never read */
	void *ctx;
	int refs; /* 1 for the watcher, 1 per call */
	bool hung;
};

struct ly_rpc_server {
	struct ly_queue link; /* in rpc->servers */
	struct ly_rpc *rpc;
	grpc_server *server;
	struct ly_rpc_server_config cfg;
	size_t max_request;
	size_t max_response; /* one message sent */
	grpc_server_credentials *insecure; /* for handed-over fds */
	struct ly_rpc_tls_state *tls;
	bool started;
	bool shutting_down;
	bool shutdown_pending;
	struct tag t_shutdown;
	size_t nwaiting; /* grpc_server_request_call outstanding (LY_RPC_REQUESTS_ARMED) */
	struct ly_queue calls;
	size_t ncalls;
	/* Calls open per connection (gRPC's peer string) and per peer address:
	 * LY_RPC_STREAMS_KILL, LY_RPC_CALLS_PER_ADDR_MAX. */
	struct ly_keycount conn_calls;
	struct ly_keycount addr_calls;
	/* Connections shut down since the last second's sweep (once each). */
	struct ly_keycount conn_killed;
	/* Calls per connection whose request arrived and that are being served:
	 * a connection with none is what rpc_memory_guard sheds first. */
	struct ly_keycount conn_serving;
	/* TCP connections (peer strings) that made a call with a verified client
	 * certificate: never shed by the guard (enrolled agents); pruned each
	 * second to the connections still open. */
	struct ly_keycount conn_authed;
	uint16_t tls_port; /* the TLS listener's port (sockscan.h), 0 without one */
	struct {
		char addr[LY_SOCKSCAN_PEER_MAX]; /* gRPC peer string without the port */
		uint64_t until;                  /* uv_now; 0: free */
	} penalty[LY_RPC_PENALTY_SLOTS];     /* LY_RPC_SHED_PENALTY_MS */
	uint64_t penalty_until;              /* the latest of them */
	uint64_t refused_calls; /* over a cap (logged now and then) */
	uint64_t killed_conns;  /* shut down for a flood, or over LY_RPC_CONNS_PER_ADDR_MAX */
	struct ly_queue conns;
	size_t nconns;
	struct ly_conntab conntab;
};

struct ly_rpc_call {
	struct ly_queue link; /* in srv->calls once started */
	struct ly_rpc_server *srv;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array req_md;
	const struct ly_rpc_method *method; /* NULL: unknown */
	char *method_str;                   /* gpr_malloc'd */
	char *peer;                         /* gpr_malloc'd */
	char *spiffe_id;
	char *cert_pem;
	struct conn *conn;
	bool counted_conn; /* holds one of srv->conn_calls */
	bool counted_addr; /* holds one of srv->addr_calls */
	bool counted_serving; /* holds one of srv->conn_serving */
	bool awaiting_request; /* RECV_MESSAGE in flight: the sweep may cancel it */
	uint64_t begun_ms;     /* uv_now when gRPC handed the call over */

	struct tag t_request, t_close, t_recv, t_send;
	int pending;           /* batches in flight */
	grpc_byte_buffer *recv_bb;
	int close_cancelled;   /* from RECV_CLOSE_ON_SERVER */
	struct ly_sendq q;
	grpc_byte_buffer *send_bb; /* in the batch in flight */
	grpc_status_code status;
	grpc_slice status_details;
	bool has_details;
	bool finishing;
	bool closed;
	bool handler_owned;
	ly_rpc_closed_cb closed_cb;
	void *closed_arg;
	ly_rpc_message_in_cb msg_cb; /* LY_RPC_BIDI_STREAM: requests after the first */
	void *msg_arg;
	bool recv_armed;     /* a RECV_MESSAGE batch is in flight */
	bool handler_called; /* the first request went to the handler */
	bool large;          /* under cfg.large_service: large_max_request */
};

struct ly_rpc_channel {
	struct ly_queue link; /* in rpc->channels */
	struct ly_rpc *rpc;
	grpc_channel *channel;
	struct ly_rpc_verifier *verifier;
	size_t max_response;
	struct ly_queue calls;
	size_t ncalls;
	bool freeing;
};

struct ly_rpc_ccall {
	struct ly_queue link; /* in ch->calls */
	struct ly_rpc_channel *ch;
	grpc_call *call;
	enum ly_rpc_kind kind;
	struct tag t_main, t_status, t_msg;
	int pending;
	grpc_byte_buffer *send_bb;
	grpc_byte_buffer *recv_bb;
	grpc_metadata md[RPC_CALL_MD_MAX];
	size_t n_md;
	grpc_metadata_array init_md;
	grpc_metadata_array trailing_md;
	grpc_status_code status;
	grpc_slice details;
	bool status_set; /* our own verdict overrides gRPC's */
	enum ly_rpc_code own_code;
	const char *own_details;
	ly_rpc_message_cb on_message;
	ly_rpc_status_cb on_status;
	void *arg;
};

static void rpc_maybe_shutdown_cq(struct ly_rpc *rpc);
static void server_maybe_done(struct ly_rpc_server *srv);
static void channel_maybe_free(struct ly_rpc_channel *ch);

const char *
ly_rpc_code_str(enum ly_rpc_code code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
		"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};
	if ((unsigned)code >= sizeof(names) / sizeof(names[0]))
		return "?";
	return names[code];
}

/* ---- the completion-queue thread and the loop side ---- */

/*
 * From the completion thread: make wake_fd readable. The eventfd counts, so
 * a write never blocks in practice (EAGAIN would take 2^64-2 writes the
 * loop never read, and then it is readable anyway); EINTR is retried.
 */
static void
rpc_wake(struct ly_rpc *rpc)
{
	uint64_t one = 1;

	while (write(rpc->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void
cq_thread(void *arg)
{
	struct ly_rpc *rpc = arg;

	for (;;) {
		grpc_event ev = grpc_completion_queue_next(rpc->cq,
		    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		struct tag *t = ev.tag;
		t->ok = ev.success != 0;
		t->next = NULL;
		uv_mutex_lock(&rpc->mu);
		bool wake = rpc->head == NULL;
		if (rpc->tail != NULL)
			rpc->tail->next = t;
		else
			rpc->head = t;
		rpc->tail = t;
		uv_mutex_unlock(&rpc->mu);
		if (wake)
			rpc_wake(rpc);
	}
	uv_mutex_lock(&rpc->mu);
	rpc->thread_done = true;
	uv_mutex_unlock(&rpc->mu);
	rpc_wake(rpc);
}

static void
rpc_free_cb(uv_handle_t *h)
{
	struct ly_rpc *rpc = h->data;
	if (--rpc->handles > 0)
		return;
	ly_rpc_close_cb cb = rpc->close_cb;
	void *arg = rpc->close_arg;

	struct ly_rpc_tls_state *retired = rpc->retired;

	if (rpc->wake_fd >= 0)
		close(rpc->wake_fd);
	uv_mutex_destroy(&rpc->mu);
	free(rpc);
	grpc_shutdown();
	ly_rpc_tls_state_free_list(retired);
	if (cb != NULL)
		cb(arg);
}

/*
 * wake_fd readable (or in error, which an eventfd never is): reset it, then
 * run every completion on the list. The read comes first: a completion
 * queued after it writes again and this runs once more, finding at worst
 * an empty list, so none is left behind.
 */
static void
on_wake(uv_poll_t *h, int status, int events)
{
	struct ly_rpc *rpc = container_of(h, struct ly_rpc, wake);
	uint64_t n;

	(void)status;
	(void)events;
	while (read(rpc->wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
	uv_mutex_lock(&rpc->mu);
	struct tag *t = rpc->head;
	bool done = rpc->thread_done;
	rpc->head = rpc->tail = NULL;
	uv_mutex_unlock(&rpc->mu);

	while (t != NULL) {
		struct tag *next = t->next; /* t->fn may free t */
		t->fn(t, t->ok);
		t = next;
	}
	if (done && !rpc->joined) {
		rpc->joined = true;
		uv_thread_join(&rpc->thread);
		grpc_completion_queue_destroy(rpc->cq);
		rpc->cq = NULL;
		uv_close((uv_handle_t *)&rpc->sweep, rpc_free_cb);
		uv_close((uv_handle_t *)&rpc->penalty, rpc_free_cb);
		uv_close((uv_handle_t *)&rpc->wake, rpc_free_cb);
	}
}

static void call_sweep(struct ly_rpc_server *srv, uint64_t now);
static size_t server_shed(struct ly_rpc_server *srv);
static void authed_prune(struct ly_rpc_server *srv);
static size_t server_shed_tcp(struct ly_rpc_server *srv, bool all);
static void on_penalty(uv_timer_t *t);

/*
 * The memory guard (caps.h LY_RPC_SHED_GROWTH_MAX). gRPC 1.51 lets a peer
 * make it allocate streams we never see as calls (opened then reset at
 * once, or opened before the client acknowledged our stream limit), at
 * hundreds of MB a second. When resident memory jumps that far above its
 * recent level, every connection on which no call is being served is shut
 * down: the flood's connections hold none (their streams are reset, or wait
 * for a request until LY_RPC_REQUEST_TIMEOUT_MS), a real agent's or
 * workload's stream is kept, an idle real client reconnects. Freed memory is
 * given back (malloc_trim, each second for LY_RPC_TRIM_MS after the last
 * shedding). The level follows slow, legitimate growth within about a
 * minute. It looks every LY_RPC_SWEEP_MS and at each handover (handover_admit).
 */

/* Sheds when `rss` is over the level now; returns whether it is. */
static bool
rpc_memory_shed_if_over(struct ly_rpc *rpc, uint64_t rss, uint64_t now)
{
	if (rpc->rss_base == 0 || rss <= rpc->rss_base + LY_RPC_SHED_GROWTH_MAX)
		return false;
	size_t shed = 0;
	struct ly_queue *l;
	LY_QUEUE_FOREACH(l, &rpc->servers)
		shed += server_shed(LY_QUEUE_DATA(l, struct ly_rpc_server, link));
	if (shed != 0 && !uv_is_active((uv_handle_t *)&rpc->penalty))
		(void)uv_timer_start(&rpc->penalty, on_penalty, LY_RPC_PENALTY_SWEEP_MS,
		    LY_RPC_PENALTY_SWEEP_MS);
	if (shed != 0)
		log_warn("rpc: memory %" PRIu64 " MiB, %" PRIu64 " MiB over its level: "
			 "%zu connections without a call served shut down",
		    rss >> 20, (rss - rpc->rss_base) >> 20, shed);
	rpc->trim_until = now + LY_RPC_TRIM_MS;
	return true;
}

static void
rpc_memory_guard(struct ly_rpc *rpc, uint64_t now, bool second)
{
	uint64_t rss = ly_procmem_rss_bytes();

	if (rss == 0)
		return;
	if (rpc->rss_base == 0 || rss < rpc->rss_base)
		rpc->rss_base = rss;
	else
		rpc->rss_base += (rss - rpc->rss_base) / 256;
	(void)rpc_memory_shed_if_over(rpc, rss, now);
	/* gRPC frees a flood's streams as it works through them, for seconds
	 * after the connections are gone: give the pages back as they come. */
	if (second && now < rpc->trim_until) {
		uint64_t t0 = uv_hrtime();
		(void)malloc_trim(0);
		uint64_t after = ly_procmem_rss_bytes();
		if (after + (1u << 20) <= rss)
			log_debug("rpc: memory trimmed in %.2f ms, VmRSS %" PRIu64 " -> %" PRIu64 " MiB",
			    (double)(uv_hrtime() - t0) / 1e6, rss >> 20, after >> 20);
	}
}

/*
 * The guard at a handover (ly_rpc_server_add_fd); what it refuses is still
 * handed over when the daemon keeps it (cfg.conn_keep). What a client wrote before
 * we accepted it, gRPC parses on its own threads within milliseconds of the
 * handover, and a loop that is slow for a moment (attesting a burst of
 * connections on a loaded machine) hands many over between two ticks: a
 * stream flood queued that way took the agent to 1.2 GiB before the next
 * tick ran. So such a connection is not handed over while memory is over
 * the guard's level now (which sheds too), nor when the bytes already
 * queued on those handed over this tick would pass LY_RPC_HANDOVER_QUEUED_MAX
 * (a real client's first flight is a few hundred bytes, Envoy's a few KiB).
 * The caller asks conn_keep only when this refuses; a kept connection's
 * bytes count in the tick's sum like any other's.
 */
static ly_status
handover_admit(struct ly_rpc_server *srv, int fd, struct ly_error *err)
{
	struct ly_rpc *rpc = srv->rpc;
	uint64_t rss = ly_procmem_rss_bytes();
	int queued = 0;

	if (rss != 0 && rpc_memory_shed_if_over(rpc, rss, uv_now(rpc->loop)))
		return ly_error_set(err, LY_E_LIMIT, "memory guard: %" PRIu64 " MiB over its level",
		    (rss - rpc->rss_base) >> 20);
	if (ioctl(fd, FIONREAD, &queued) != 0 || queued < 0)
		queued = 0; /* not a stream socket we can ask: only the memory check holds */
	if ((size_t)queued > LY_RPC_HANDOVER_QUEUED_MAX - rpc->handover_queued)
		return ly_error_set(err, LY_E_LIMIT,
		    "memory guard: %d bytes written before the connection was accepted, %zu more handed "
		    "over this tick (at most %d)", queued, rpc->handover_queued, LY_RPC_HANDOVER_QUEUED_MAX);
	rpc->handover_queued += (size_t)queued;
	return LY_OK;
}

/*
 * Every LY_RPC_PENALTY_SWEEP_MS while an address is penalized: its new
 * connections flood from their first byte, so they are shut down far sooner
 * than the regular sweep would. Stops itself when no penalty is left.
 */
static void
on_penalty(uv_timer_t *t)
{
	struct ly_rpc *rpc = t->data;
	uint64_t now = uv_now(rpc->loop);
	bool any = false;

	struct ly_queue *l;
	LY_QUEUE_FOREACH(l, &rpc->servers) {
		struct ly_rpc_server *srv = LY_QUEUE_DATA(l, struct ly_rpc_server, link);
		if (now < srv->penalty_until) {
			any = true;
			(void)server_shed_tcp(srv, false);
		}
	}
	if (!any)
		uv_timer_stop(t);
}

/* Every LY_RPC_SWEEP_MS (see call_sweep, rpc_memory_guard, caps.h). */
static void
on_sweep(uv_timer_t *t)
{
	struct ly_rpc *rpc = t->data;
	uint64_t now = uv_now(rpc->loop);
	bool second = ++rpc->ticks % (1000 / LY_RPC_SWEEP_MS) == 0;

	rpc->handover_queued = 0;
	rpc_memory_guard(rpc, now, second);
	struct ly_queue *l;
	LY_QUEUE_FOREACH(l, &rpc->servers) {
		struct ly_rpc_server *srv = LY_QUEUE_DATA(l, struct ly_rpc_server, link);
		call_sweep(srv, now);
		if (!second)
			continue;
		ly_keycount_cleanup(&srv->conn_killed);
		authed_prune(srv);
		if (srv->tls_port != 0 && !srv->shutting_down) {
			size_t shut = ly_sockscan_cap_per_addr(srv->tls_port, LY_RPC_CONNS_PER_ADDR_MAX);
			if (shut != 0 && srv->killed_conns++ % 100 == 0)
				log_warn("server: port %u: %zu connections shut down: over %d from one address",
				    (unsigned)srv->tls_port, shut, LY_RPC_CONNS_PER_ADDR_MAX);
		}
	}
}

ly_status
ly_rpc_new(struct uv_loop_s *loop, struct ly_rpc **out, struct ly_error *err)
{
	struct ly_rpc *rpc;

	*out = NULL;
	rpc = calloc(1, sizeof(*rpc));
	if (rpc == NULL)
		return ly_error_set(err, LY_E_NOMEM, "rpc: out of memory");
	if (uv_mutex_init(&rpc->mu) != 0) {
		free(rpc);
		return ly_error_set(err, LY_E_INTERNAL, "rpc: mutex");
	}
	rpc->loop = loop;
	ly_queue_init(&rpc->servers);
	ly_queue_init(&rpc->channels);
	grpc_init();
	rpc->cq = grpc_completion_queue_create_for_next(NULL);
	if (rpc->cq == NULL) {
		grpc_shutdown();
		uv_mutex_destroy(&rpc->mu);
		free(rpc);
		return ly_error_set(err, LY_E_NOMEM, "rpc: no completion queue");
	}
	rpc->wake.data = rpc;
	rpc->handles = 1;
	rpc->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int rc = rpc->wake_fd < 0 ? uv_translate_sys_error(errno) : 0;
	const char *what = "eventfd";
	if (rc == 0) {
		what = "uv_poll_init";
		rc = uv_poll_init(loop, &rpc->wake, rpc->wake_fd);
	}
	if (rc != 0) {
		if (rpc->wake_fd >= 0)
			close(rpc->wake_fd);
		grpc_completion_queue_shutdown(rpc->cq);
		grpc_completion_queue_destroy(rpc->cq);
		grpc_shutdown();
		uv_mutex_destroy(&rpc->mu);
		free(rpc);
		return ly_error_set(err, LY_E_IO, "rpc: %s: %s", what, uv_strerror(rc));
	}
	/* uv_poll_start on an initialized handle fails only on bad arguments. */
	(void)uv_poll_start(&rpc->wake, UV_READABLE, on_wake);
	rc = uv_thread_create(&rpc->thread, cq_thread, rpc);
	if (rc != 0) {
		/* No thread: shut the queue and free through the wake handle's
		 * close callback, like ly_rpc_close without a thread to join. */
		grpc_completion_queue_shutdown(rpc->cq);
		grpc_completion_queue_destroy(rpc->cq);
		rpc->cq = NULL;
		rpc->closing = rpc->joined = true;
		uv_close((uv_handle_t *)&rpc->wake, rpc_free_cb);
		return ly_error_set(err, LY_E_IO, "rpc: thread: %s", uv_strerror(rc));
	}
	/* uv_timer_init cannot fail on a live loop (libuv src/timer.c); the
	 * timer never keeps the loop alive by itself. */
	(void)uv_timer_init(loop, &rpc->sweep);
	(void)uv_timer_init(loop, &rpc->penalty);
	rpc->sweep.data = rpc;
	rpc->penalty.data = rpc;
	rpc->handles = 3;
	uv_unref((uv_handle_t *)&rpc->penalty);
	(void)uv_timer_start(&rpc->sweep, on_sweep, LY_RPC_SWEEP_MS, LY_RPC_SWEEP_MS);
	uv_unref((uv_handle_t *)&rpc->sweep);
	*out = rpc;
	return LY_OK;
}

static void
rpc_maybe_shutdown_cq(struct ly_rpc *rpc)
{
	if (!rpc->closing || rpc->cq_shut)
		return;
	if (!ly_queue_empty(&rpc->servers) || !ly_queue_empty(&rpc->channels))
		return;
	rpc->cq_shut = true;
	grpc_completion_queue_shutdown(rpc->cq);
}

static void server_shutdown(struct ly_rpc_server *srv);

void
ly_rpc_close(struct ly_rpc *rpc, ly_rpc_close_cb cb, void *arg)
{
	struct ly_queue *l, *next;

	if (rpc == NULL || rpc->closing)
		return;
	rpc->closing = true;
	rpc->close_cb = cb;
	rpc->close_arg = arg;
	/* Each step may free the element (and unlink it): take next first. */
	LY_QUEUE_FOREACH_SAFE(l, next, &rpc->servers) {
		server_shutdown(LY_QUEUE_DATA(l, struct ly_rpc_server, link));
	}
	LY_QUEUE_FOREACH_SAFE(l, next, &rpc->channels) {
		ly_rpc_channel_free(LY_QUEUE_DATA(l, struct ly_rpc_channel, link));
	}
	rpc_maybe_shutdown_cq(rpc);
}

static grpc_channel_args *
channel_args(grpc_arg *args, size_t n, grpc_channel_args *out)
{
	out->num_args = n;
	out->args = args;
	return out;
}

static grpc_arg
int_arg(const char *key, int value)
{
	grpc_arg a;

	memset(&a, 0, sizeof(a));
	a.type = GRPC_ARG_INTEGER;
	a.key = (char *)(uintptr_t)key; /* gRPC's API is not const-correct */
	a.value.integer = value;
	return a;
}

/* ---- server calls ---- */

static void on_request(struct tag *tag, bool ok);
static void on_close(struct tag *tag, bool ok);
static void on_recv(struct tag *tag, bool ok);
static void on_send(struct tag *tag, bool ok);

static struct ly_rpc_call *
call_alloc(struct ly_rpc_server *srv)
{
	struct ly_rpc_call *call = calloc(1, sizeof(*call));

	if (call == NULL)
		return NULL;
	call->srv = srv;
	ly_queue_init(&call->link);
	grpc_call_details_init(&call->details);
	grpc_metadata_array_init(&call->req_md);
	call->t_request.fn = on_request;
	call->t_close.fn = on_close;
	call->t_recv.fn = on_recv;
	call->t_send.fn = on_send;
	call->q = (struct ly_sendq)LY_SENDQ_INIT;
	return call;
}

/*
 * Drops one reference to `conn`, freeing it with the last. The caller then
 * calls server_maybe_done once: the connection may have been the server's
 * last, and the server may go with it (so it is not done here, where a
 * caller such as call_maybe_free would still read the freed server).
 */
static void
conn_unref(struct conn *conn)
{
	if (--conn->refs > 0)
		return;
	struct ly_rpc_server *srv = conn->srv;
	ly_queue_remove(&conn->link);
	srv->nconns--;
	if (srv->cfg.conn_release != NULL)
		srv->cfg.conn_release(conn->ctx, srv->cfg.arg);
	free(conn);
}

/* Frees a call struct. The caller unlinked it, no batch is in flight, and the
 * caller calls server_maybe_done afterwards (the call's connection may have
 * been the server's last). */
static void
call_destroy(struct ly_rpc_call *call)
{
	if (call->counted_conn || call->counted_addr) {
		size_t alen;
		ly_keycount_peer_addr(call->peer, &alen);
		if (call->counted_conn)
			(void)ly_keycount_give(&call->srv->conn_calls, call->peer, strlen(call->peer));
		if (call->counted_addr)
			(void)ly_keycount_give(&call->srv->addr_calls, call->peer, alen);
	}
	if (call->counted_serving)
		(void)ly_keycount_give(&call->srv->conn_serving, call->peer, strlen(call->peer));
	if (call->call != NULL)
		grpc_call_unref(call->call);
	grpc_call_details_destroy(&call->details);
	grpc_metadata_array_destroy(&call->req_md);
	gpr_free(call->method_str);
	gpr_free(call->peer);
	free(call->spiffe_id);
	free(call->cert_pem);
	if (call->recv_bb != NULL)
		grpc_byte_buffer_destroy(call->recv_bb);
	if (call->has_details)
		grpc_slice_unref(call->status_details);
	struct conn *conn = call->conn;
	free(call);
	if (conn != NULL)
		conn_unref(conn);
}

static void
call_maybe_free(struct ly_rpc_call *call)
{
	if (call->pending != 0 || call->handler_owned)
		return;
	struct ly_rpc_server *srv = call->srv;
	ly_queue_remove(&call->link);
	srv->ncalls--;
	call_destroy(call);
	server_maybe_done(srv);
}

/* Starts a batch; false (logged) when gRPC refused it: its tag never comes. */
static bool
call_batch(grpc_call *call, const grpc_op *ops, size_t n, struct tag *tag, int *pending)
{
	grpc_call_error e = grpc_call_start_batch(call, ops, n, tag, NULL);

	if (e != GRPC_CALL_OK) {
		log_error("grpc_call_start_batch: %s", grpc_call_error_to_string(e));
		return false;
	}
	(*pending)++;
	return true;
}

static void
call_start_send(struct ly_rpc_call *call, const struct ly_sendq_batch *b)
{
	grpc_op ops[3];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	/* gRPC writes nothing for a status sent before initial metadata (the
	 * client only sees DEADLINE_EXCEEDED): the sendq puts it in the first
	 * batch, whatever that batch holds. */
	if (b->initial_metadata)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (b->msg != NULL) {
		call->send_bb = b->msg;
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = b->msg;
	}
	if (b->status) {
		ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
		ops[n].data.send_status_from_server.status = call->status;
		ops[n].data.send_status_from_server.status_details =
		    call->has_details ? &call->status_details : NULL;
		n++;
	}
	if (!call_batch(call->call, ops, n, &call->t_send, &call->pending)) {
		struct ly_sendq_batch none;
		void *orphan;
		if (call->send_bb != NULL) {
			grpc_byte_buffer_destroy(call->send_bb);
			call->send_bb = NULL;
		}
		(void)ly_sendq_completed(&call->q, false, &none, &orphan);
		if (orphan != NULL)
			grpc_byte_buffer_destroy(orphan);
		grpc_call_cancel(call->call, NULL);
	}
}

/* Asks for the final status (once); it goes out after any queued message. */
static void
call_end(struct ly_rpc_call *call, enum ly_rpc_code code, const char *details)
{
	struct ly_sendq_batch b;

	if (call->finishing)
		return;
	call->finishing = true;
	call->status = (grpc_status_code)code;
	call->status_details = grpc_slice_from_copied_string(details != NULL ? details : "");
	call->has_details = true;
	if (ly_sendq_finish(&call->q, &b))
		call_start_send(call, &b);
}

static void
on_send(struct tag *tag, bool ok)
{
	struct ly_rpc_call *call = container_of(tag, struct ly_rpc_call, t_send);
	struct ly_sendq_batch b;
	void *orphan;

	if (call->send_bb != NULL) {
		grpc_byte_buffer_destroy(call->send_bb);
		call->send_bb = NULL;
	}
	if (ly_sendq_completed(&call->q, ok, &b, &orphan))
		call_start_send(call, &b);
	if (orphan != NULL)
		grpc_byte_buffer_destroy(orphan);
	call->pending--;
	call_maybe_free(call);
}

static void
on_close(struct tag *tag, bool ok)
{
	struct ly_rpc_call *call = container_of(tag, struct ly_rpc_call, t_close);

	(void)ok;
	call->closed = true;
	/* Dead or done: nothing more goes out. */
	void *orphan = ly_sendq_abort(&call->q);
	if (orphan != NULL)
		grpc_byte_buffer_destroy(orphan);
	if (call->handler_owned && call->closed_cb != NULL) {
		ly_rpc_closed_cb cb = call->closed_cb;
		call->closed_cb = NULL;
		cb(call, call->closed_arg); /* pending > 0: the call survives */
	}
	call->pending--;
	call_maybe_free(call);
}

/* LY_RPC_BIDI_STREAM: asks for the next request while the handler holds the call. */
static void
call_recv_next(struct ly_rpc_call *call)
{
	grpc_op op;

	if (call->method == NULL || call->method->kind != LY_RPC_BIDI_STREAM || call->msg_cb == NULL ||
	    !call->handler_owned || call->closed || call->finishing || call->recv_armed)
		return;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &call->recv_bb;
	if (call_batch(call->call, &op, 1, &call->t_recv, &call->pending))
		call->recv_armed = true;
	else
		call_end(call, LY_RPC_INTERNAL, "cannot receive");
}

static void
on_recv(struct tag *tag, bool ok)
{
	struct ly_rpc_call *call = container_of(tag, struct ly_rpc_call, t_recv);
	struct ly_rpc_server *srv = call->srv;
	grpc_byte_buffer *bb = call->recv_bb;
	uint8_t *req = NULL;
	size_t len = 0;
	struct ly_error e;
	bool later = call->handler_called; /* a bidi stream's second or later request */

	call->recv_bb = NULL;
	call->recv_armed = false;
	call->awaiting_request = false;
	if (!ok || call->closed) {
		/* The call died before its request arrived. */
	} else if (bb == NULL) {
		/* The client half-closed: no later request comes; the stream goes on. */
		if (!later)
			call_end(call, LY_RPC_INVALID_ARGUMENT, "request message missing");
	} else {
		size_t cap = call->large ? srv->cfg.large_max_request : srv->max_request;
		ly_status rc = ly_rpc_msg_from_bb(bb, cap, &req, &len, &e);
		if (rc == LY_E_LIMIT) {
			char msg[96];
			(void)snprintf(msg, sizeof(msg), "request message over %zu bytes", cap);
			call_end(call, LY_RPC_RESOURCE_EXHAUSTED, msg);
		} else if (rc != LY_OK) {
			log_warn("%s: %s", call->method_str, e.msg);
			call_end(call, LY_RPC_INTERNAL, "request message unreadable");
		} else if (later) {
			if (call->msg_cb != NULL && call->handler_owned && !call->finishing)
				call->msg_cb(call, req, len, call->msg_arg);
			ly_rpc_msg_free(req, len);
			call_recv_next(call);
		} else {
			call->handler_owned = true;
			call->handler_called = true;
			call->counted_serving = call->peer != NULL &&
			    ly_keycount_take(&srv->conn_serving, call->peer, strlen(call->peer),
				SIZE_MAX, NULL) == LY_OK;
			call->method->handler(call, req, len, srv->cfg.arg);
			ly_rpc_msg_free(req, len);
			call_recv_next(call);
		}
	}
	if (bb != NULL)
		grpc_byte_buffer_destroy(bb);
	call->pending--;
	call_maybe_free(call);
}

/* Copies one auth property's first value, refusing embedded NULs. */
static char *
auth_property(const grpc_auth_context *ac, const char *name, size_t *count)
{
	grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ac, name);
	const grpc_auth_property *p;
	char *value = NULL;

	*count = 0;
	while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
		if ((*count)++ != 0 || p->value == NULL || memchr(p->value, '\0', p->value_length) != NULL)
			continue;
		value = strndup(p->value, p->value_length);
	}
	return value;
}

/* The caller's verified certificate and SPIFFE ID, from the auth context. */
static void
call_read_auth(struct ly_rpc_call *call)
{
	grpc_auth_context *ac = grpc_call_auth_context(call->call);
	size_t n;

	if (ac == NULL)
		return;
	/* Only what the TLS handshake verified: our listeners never accept an
	 * unverified client certificate (see ly_rpc_tls_server_creds). */
	char *type = auth_property(ac, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME, &n);
	if (type != NULL && strcmp(type, GRPC_SSL_TRANSPORT_SECURITY_TYPE) == 0) {
		call->cert_pem = auth_property(ac, GRPC_X509_PEM_CERT_PROPERTY_NAME, &n);
		if (call->cert_pem != NULL) {
			call->spiffe_id = auth_property(ac, GRPC_PEER_SPIFFE_ID_PROPERTY_NAME, &n);
			if (call->spiffe_id == NULL || n != 1) {
				free(call->spiffe_id);
				call->spiffe_id = NULL;
				/* X509-SVID §2: exactly one URI SAN, the SPIFFE ID. */
				char *uri = auth_property(ac, "peer_uri", &n);
				if (uri != NULL && n == 1 && strncmp(uri, "spiffe://", 9) == 0 &&
				    strlen(uri) <= LY_SPIFFE_ID_MAX)
					call->spiffe_id = uri;
				else
					free(uri);
			}
		}
	}
	free(type);
	grpc_auth_context_release(ac);
}

/*
 * Shuts the connection of `peer` down (once per sweep): a handed-over fd
 * through our duplicate, a TCP connection gRPC accepted through
 * sockscan.h. gRPC then fails the connection and cancels its streams.
 */
static void
conn_kill(struct ly_rpc_server *srv, const char *peer)
{
	size_t plen = strlen(peer);
	bool done = false;
	int fd;

	if (ly_keycount_get(&srv->conn_killed, peer, plen) != 0 ||
	    ly_keycount_take(&srv->conn_killed, peer, plen, 1, NULL) != LY_OK)
		return;
	if (ly_rpc_parse_fd_peer(peer, &fd, NULL) == LY_OK) {
		struct conn *conn = ly_conntab_get(&srv->conntab, fd);
		done = conn != NULL && !conn->hung && shutdown(conn->fd_watch, SHUT_RDWR) == 0;
	} else if (srv->tls_port != 0) {
		done = ly_sockscan_shutdown_peer(srv->tls_port, peer);
	}
	if (done && srv->killed_conns++ % 100 == 0)
		log_warn("server: %s: connection shut down: over %d streams open, our limit is %d "
			 "(%" PRIu64 " so far)", peer, LY_RPC_STREAMS_KILL, LY_RPC_STREAMS_MAX,
		    srv->killed_conns);
}

/* Puts the address of `c` in the penalty box (its slot, a free one, or the oldest). */
static void
addr_penalize(struct ly_rpc_server *srv, const struct ly_sockscan_conn *c, uint64_t now)
{
	size_t slot = 0;

	for (size_t i = 0; i < LY_RPC_PENALTY_SLOTS; i++) {
		if (srv->penalty[i].until != 0 && strlen(srv->penalty[i].addr) == c->addr_len &&
		    memcmp(srv->penalty[i].addr, c->peer, c->addr_len) == 0) {
			slot = i;
			break;
		}
		if (srv->penalty[i].until < srv->penalty[slot].until)
			slot = i;
	}
	memcpy(srv->penalty[slot].addr, c->peer, c->addr_len);
	srv->penalty[slot].addr[c->addr_len] = '\0';
	srv->penalty[slot].until = now + LY_RPC_SHED_PENALTY_MS;
	srv->penalty_until = srv->penalty[slot].until;
}

static bool
addr_penalized(const struct ly_rpc_server *srv, const struct ly_sockscan_conn *c, uint64_t now)
{
	for (size_t i = 0; i < LY_RPC_PENALTY_SLOTS; i++) {
		if (srv->penalty[i].until > now && strlen(srv->penalty[i].addr) == c->addr_len &&
		    memcmp(srv->penalty[i].addr, c->peer, c->addr_len) == 0)
			return true;
	}
	return false;
}

/*
 * TCP connections serving no call: all of them (`all`, the memory guard,
 * which also penalizes their addresses), or those from penalized addresses.
 */
static size_t
server_shed_tcp(struct ly_rpc_server *srv, bool all)
{
	struct ly_sockscan_conn *v;
	size_t nv, shut = 0;
	uint64_t now = uv_now(srv->rpc->loop);

	if (srv->tls_port == 0 || srv->shutting_down || srv->cfg.trusted ||
	    ly_sockscan_list(srv->tls_port, &v, &nv, NULL) != LY_OK)
		return 0;
	for (size_t i = 0; i < nv; i++) {
		size_t plen = strlen(v[i].peer);
		if (ly_keycount_get(&srv->conn_serving, v[i].peer, plen) != 0 ||
		    ly_keycount_get(&srv->conn_authed, v[i].peer, plen) != 0 ||
		    (!all && !addr_penalized(srv, &v[i], now)))
			continue;
		if (ly_sockscan_shutdown_conn(&v[i], srv->tls_port)) {
			shut++;
			if (all)
				addr_penalize(srv, &v[i], now);
		}
	}
	free(v);
	return shut;
}

/* Keeps in srv->conn_authed only the connections still open. */
static void
authed_prune(struct ly_rpc_server *srv)
{
	struct ly_keycount keep = LY_KEYCOUNT_INIT;
	struct ly_sockscan_conn *v;
	size_t nv;

	if (srv->conn_authed.nentries == 0 || srv->tls_port == 0 ||
	    ly_sockscan_list(srv->tls_port, &v, &nv, NULL) != LY_OK)
		return;
	for (size_t i = 0; i < nv; i++) {
		size_t plen = strlen(v[i].peer);
		if (ly_keycount_get(&srv->conn_authed, v[i].peer, plen) != 0 &&
		    ly_keycount_take(&keep, v[i].peer, plen, 1, NULL) != LY_OK)
			break; /* out of memory: keep what fits */
	}
	free(v);
	ly_keycount_cleanup(&srv->conn_authed);
	srv->conn_authed = keep;
}

/* Shuts down every connection of `srv` on which no call is being served (rpc_memory_guard). */
static size_t
server_shed(struct ly_rpc_server *srv)
{
	char key[32];
	size_t shut = 0;

	if (srv->shutting_down || srv->cfg.trusted)
		return 0;
	struct ly_queue *l;
	LY_QUEUE_FOREACH(l, &srv->conns) {
		struct conn *conn = LY_QUEUE_DATA(l, struct conn, link);
		int n = snprintf(key, sizeof(key), "fd:%d", conn->fd_grpc);
		if (conn->hung || n < 0 ||
		    (size_t)n >= sizeof(key) ||
		    ly_keycount_get(&srv->conn_serving, key, (size_t)n) != 0 ||
		    (srv->cfg.conn_keep != NULL && srv->cfg.conn_keep(conn->ctx, srv->cfg.arg)))
			continue;
		if (shutdown(conn->fd_watch, SHUT_RDWR) == 0) {
			shut++;
			if (srv->cfg.conn_shed != NULL)
				srv->cfg.conn_shed(conn->ctx, srv->cfg.arg);
		}
	}
	return shut + server_shed_tcp(srv, true);
}

/*
 * Counts the call against its connection and, for TCP peers, against its
 * address (LY_RPC_CALLS_PER_ADDR_MAX). False when either is full: the call
 * is refused at once.
 *
 * The connection's count is the backstop for the SETTINGS_MAX_CONCURRENT_STREAMS
 * we advertise (LY_RPC_STREAMS_MAX), which gRPC 1.51 only enforces once the
 * client acknowledged it. A call stays counted until its last completion
 * reaches the loop, which lags the stream's end on the wire: a compliant
 * client at the advertised limit that opens a stream as soon as one ends is
 * seen here with one or a few more. So the connection is shut down only
 * over LY_RPC_STREAMS_KILL (caps.h), and nothing between the two is
 * refused: such a call is the compliant client's.
 */
static bool
call_count(struct ly_rpc_call *call)
{
	struct ly_rpc_server *srv = call->srv;
	size_t plen = strlen(call->peer), alen;

	ly_keycount_peer_addr(call->peer, &alen);
	/* Far over the stream limit (a client that never acknowledged it): the
	 * connection is shut down, which cancels every stream gRPC queued for it. */
	if (ly_keycount_take(&srv->conn_calls, call->peer, plen, LY_RPC_STREAMS_KILL, NULL) != LY_OK) {
		conn_kill(srv, call->peer);
		goto refused;
	}
	call->counted_conn = true;
	if (alen != plen) {
		if (ly_keycount_take(&srv->addr_calls, call->peer, alen, LY_RPC_CALLS_PER_ADDR_MAX,
			NULL) != LY_OK)
			goto refused;
		call->counted_addr = true;
	}
	return true;
refused:
	if (srv->refused_calls++ % 10000 == 0)
		log_warn("server: %s: calls refused: too many open on one connection or address "
			 "(%" PRIu64 " so far)", call->peer, srv->refused_calls);
	return false;
}

/* A call gRPC handed us: read who and what, then receive its request. */
static void
call_begin(struct ly_rpc_call *call)
{
	struct ly_rpc_server *srv = call->srv;
	enum ly_rpc_code reject = LY_RPC_OK;
	const char *why = NULL;
	grpc_op op;
	int fd;

	ly_queue_insert_tail(&srv->calls, &call->link);
	srv->ncalls++;
	call->method_str = grpc_slice_to_c_string(call->details.method);
	call->peer = grpc_call_get_peer(call->call);
	call_read_auth(call);

	for (size_t i = 0; i < srv->cfg.n_methods; i++) {
		if (strcmp(srv->cfg.methods[i].path, call->method_str) == 0) {
			call->method = &srv->cfg.methods[i];
			call->large = srv->cfg.large_service != NULL &&
			    strncmp(call->method_str, srv->cfg.large_service, strlen(srv->cfg.large_service)) == 0;
			break;
		}
	}
	if (call->method == NULL) {
		reject = LY_RPC_UNIMPLEMENTED;
		why = "unknown method";
	}
	call->begun_ms = uv_now(srv->rpc->loop);
	if (call->spiffe_id != NULL && call->peer != NULL && srv->tls_port != 0 &&
	    ly_keycount_get(&srv->conn_authed, call->peer, strlen(call->peer)) == 0)
		if (ly_keycount_take(&srv->conn_authed, call->peer, strlen(call->peer), 1, NULL) != LY_OK)
			log_debug("server: %s: not remembered as enrolled (out of memory)", call->peer);
	if (reject == LY_RPC_OK && call->peer != NULL && !call_count(call)) {
		reject = LY_RPC_RESOURCE_EXHAUSTED;
		why = "too many calls open on this connection or from this address";
	}
	/* A call on a handed-over fd takes its connection's context now: gRPC
	 * closes that fd itself and the number is reused (see conntab.h). */
	if (call->peer != NULL && ly_rpc_parse_fd_peer(call->peer, &fd, NULL) == LY_OK) {
		call->conn = ly_conntab_get(&srv->conntab, fd);
		if (call->conn != NULL) {
			call->conn->refs++;
		} else if (reject == LY_RPC_OK) {
			reject = LY_RPC_UNAVAILABLE;
			why = "connection closed";
		}
	}

	/* RECV_CLOSE_ON_SERVER first: its completion says when the client goes. */
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &call->close_cancelled;
	if (!call_batch(call->call, &op, 1, &call->t_close, &call->pending)) {
		grpc_call_cancel(call->call, NULL);
		call->closed = true;
		call_maybe_free(call);
		return;
	}
	if (reject != LY_RPC_OK) {
		call_end(call, reject, why);
		return;
	}
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &call->recv_bb;
	if (!call_batch(call->call, &op, 1, &call->t_recv, &call->pending))
		call_end(call, LY_RPC_INTERNAL, "cannot receive");
	else
		call->awaiting_request = true;
}

/*
 * A call whose request message has not arrived within
 * LY_RPC_REQUEST_TIMEOUT_MS is cancelled: a client cannot park streams
 * (each holds a call here and in gRPC) by never sending the message. The
 * cancel completes the pending batches, which free the call as usual.
 */
static void
call_sweep(struct ly_rpc_server *srv, uint64_t now)
{
	struct ly_queue *l;
	LY_QUEUE_FOREACH(l, &srv->calls) {
		struct ly_rpc_call *call = LY_QUEUE_DATA(l, struct ly_rpc_call, link);
		if (!call->awaiting_request || call->closed ||
		    now - call->begun_ms < LY_RPC_REQUEST_TIMEOUT_MS)
			continue;
		call->awaiting_request = false;
		grpc_call_cancel_with_status(call->call, GRPC_STATUS_DEADLINE_EXCEEDED,
		    "request message not received in time", NULL);
	}
}

static ly_status
server_arm(struct ly_rpc_server *srv, struct ly_error *err)
{
	struct ly_rpc_call *call = call_alloc(srv);

	if (call == NULL)
		return ly_error_set(err, LY_E_NOMEM, "server: out of memory");
	grpc_call_error e = grpc_server_request_call(srv->server, &call->call, &call->details,
	    &call->req_md, srv->rpc->cq, srv->rpc->cq, &call->t_request);
	if (e != GRPC_CALL_OK) {
		call_destroy(call);
		return ly_error_set(err, LY_E_INTERNAL, "grpc_server_request_call: %s",
		    grpc_call_error_to_string(e));
	}
	srv->nwaiting++;
	return LY_OK;
}

static void
on_request(struct tag *tag, bool ok)
{
	struct ly_rpc_call *call = container_of(tag, struct ly_rpc_call, t_request);
	struct ly_rpc_server *srv = call->srv;
	struct ly_error e;

	srv->nwaiting--;
	if (!ok) {
		/* Server shutting down: no call came. */
		if (!srv->shutting_down)
			log_error("server: request failed: no further call will be served");
		call_destroy(call);
		server_maybe_done(srv);
		return;
	}
	/* Re-arm first, so the next call never waits on this one's handler. */
	if (!srv->shutting_down && server_arm(srv, &e) != LY_OK)
		log_error("server: %s: no further call will be served", e.msg);
	call_begin(call);
}

/* ---- server call API ---- */

const char *
ly_rpc_call_method(const struct ly_rpc_call *call)
{
	return call->method_str;
}

const char *
ly_rpc_call_peer(const struct ly_rpc_call *call)
{
	return call->peer;
}

const char *
ly_rpc_call_peer_spiffe_id(const struct ly_rpc_call *call)
{
	return call->spiffe_id;
}

const char *
ly_rpc_call_peer_cert_pem(const struct ly_rpc_call *call)
{
	return call->cert_pem;
}

void *
ly_rpc_call_conn_ctx(const struct ly_rpc_call *call)
{
	return call->conn != NULL ? call->conn->ctx : NULL;
}

const uint8_t *
ly_rpc_call_metadata(const struct ly_rpc_call *call, const char *key, size_t *len)
{
	size_t klen = strlen(key);

	*len = 0;
	for (size_t i = 0; i < call->req_md.count; i++) {
		const grpc_metadata *m = &call->req_md.metadata[i];
		if (GRPC_SLICE_LENGTH(m->key) == klen &&
		    memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) == 0) {
			*len = GRPC_SLICE_LENGTH(m->value);
			return GRPC_SLICE_START_PTR(m->value);
		}
	}
	return NULL;
}

void
ly_rpc_call_set_closed_cb(struct ly_rpc_call *call, ly_rpc_closed_cb cb, void *arg)
{
	call->closed_cb = cb;
	call->closed_arg = arg;
}

void
ly_rpc_call_set_message_cb(struct ly_rpc_call *call, ly_rpc_message_in_cb cb, void *arg)
{
	call->msg_cb = cb;
	call->msg_arg = arg;
	/* Set from inside the handler: on_recv arms the next receive on return. */
}

static ly_status
call_queue(struct ly_rpc_call *call, const uint8_t *msg, size_t len, unsigned flags, bool last,
    struct ly_error *err)
{
	grpc_byte_buffer *bb;
	struct ly_sendq_batch b;
	void *replaced;
	bool start;

	LY_TRY(ly_rpc_msg_to_bb(msg, len, call->srv->max_response, flags, &bb, err));
	if (last)
		start = ly_sendq_push_last(&call->q, bb, &b, &replaced);
	else
		start = ly_sendq_push(&call->q, bb, &b, &replaced);
	if (start)
		call_start_send(call, &b);
	if (replaced != NULL)
		grpc_byte_buffer_destroy(replaced);
	return LY_OK;
}

ly_status
ly_rpc_call_send(struct ly_rpc_call *call, const uint8_t *msg, size_t len, unsigned flags,
    struct ly_error *err)
{
	if (!call->handler_owned)
		return ly_error_set(err, LY_E_INTERNAL, "send on a released call");
	if (call->method->kind != LY_RPC_SERVER_STREAM && call->method->kind != LY_RPC_BIDI_STREAM)
		return ly_error_set(err, LY_E_INVALID, "%s: send on a unary call (use reply)",
		    call->method_str);
	if (call->closed || call->finishing)
		return LY_OK; /* the client is gone, or the stream is ending */
	return call_queue(call, msg, len, flags, false, err);
}

ly_status
ly_rpc_call_reply(struct ly_rpc_call *call, const uint8_t *msg, size_t len, unsigned flags,
    struct ly_error *err)
{
	ly_status rc = LY_OK;

	if (!call->handler_owned)
		return ly_error_set(err, LY_E_INTERNAL, "reply on a released call");
	if (!call->closed && !call->finishing) {
		/* The status rides with the message (ly_sendq_push_last), so it is
		 * set before the batch can start. */
		call->finishing = true;
		call->status = GRPC_STATUS_OK;
		rc = call_queue(call, msg, len, flags, true, err);
		if (rc != LY_OK) {
			call->finishing = false;
			call_end(call, LY_RPC_INTERNAL, "reply could not be sent");
		}
	}
	call->handler_owned = false;
	call_maybe_free(call);
	return rc;
}

void
ly_rpc_call_finish(struct ly_rpc_call *call, enum ly_rpc_code code, const char *details)
{
	if (!call->handler_owned) {
		log_error("%s: call released twice", call->method_str);
		return;
	}
	call->handler_owned = false;
	if (!call->closed)
		call_end(call, code, details);
	call_maybe_free(call);
}

/* ---- servers ---- */

static void
on_server_shutdown(struct tag *tag, bool ok)
{
	struct ly_rpc_server *srv = container_of(tag, struct ly_rpc_server, t_shutdown);

	(void)ok;
	srv->shutdown_pending = false;
	grpc_server_destroy(srv->server);
	srv->server = NULL;
	server_maybe_done(srv);
}

static void
server_maybe_done(struct ly_rpc_server *srv)
{
	if (!srv->shutting_down || srv->shutdown_pending || srv->nwaiting != 0 ||
	    srv->ncalls != 0 || srv->nconns != 0)
		return;
	struct ly_rpc *rpc = srv->rpc;
	ly_queue_remove(&srv->link);
	if (srv->insecure != NULL)
		grpc_server_credentials_release(srv->insecure);
	ly_rpc_tls_state_retire(srv->tls, &rpc->retired);
	ly_conntab_cleanup(&srv->conntab);
	ly_keycount_cleanup(&srv->conn_calls);
	ly_keycount_cleanup(&srv->addr_calls);
	ly_keycount_cleanup(&srv->conn_killed);
	ly_keycount_cleanup(&srv->conn_serving);
	ly_keycount_cleanup(&srv->conn_authed);
	free(srv);
	rpc_maybe_shutdown_cq(rpc);
}

ly_status
ly_rpc_server_new(struct ly_rpc *rpc, const struct ly_rpc_server_config *cfg,
    struct ly_rpc_server **out, struct ly_error *err)
{
	struct ly_rpc_server *srv;
	grpc_arg args[12];
	grpc_channel_args ca;
	size_t n = 0;

	*out = NULL;
	if (rpc->closing)
		return ly_error_set(err, LY_E_INVALID, "server: rpc is closing");
	if (cfg->max_request > LY_RPC_MSG_MAX || cfg->large_max_request > LY_RPC_MSG_MAX)
		return ly_error_set(err, LY_E_LIMIT, "server: max_request over %d", LY_RPC_MSG_MAX);
	if (cfg->max_response > LY_RPC_RESPONSE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "server: max_response over %d", LY_RPC_RESPONSE_MAX);
	for (size_t i = 0; i < cfg->n_methods; i++) {
		const struct ly_rpc_method *m = &cfg->methods[i];
		if (m->path == NULL || m->path[0] != '/' || m->handler == NULL ||
		    (m->kind != LY_RPC_UNARY && m->kind != LY_RPC_SERVER_STREAM && m->kind != LY_RPC_BIDI_STREAM))
			return ly_error_set(err, LY_E_INVALID,
			    "server: method %zu needs a \"/Service/Method\" path, a kind and a handler",
			    i);
	}
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return ly_error_set(err, LY_E_NOMEM, "server: out of memory");
	srv->rpc = rpc;
	srv->cfg = *cfg;
	srv->max_request = cfg->max_request != 0 ? cfg->max_request : LY_RPC_MSG_MAX;
	srv->max_response = cfg->max_response != 0 ? cfg->max_response : LY_RPC_MSG_MAX;
	ly_queue_init(&srv->calls);
	ly_queue_init(&srv->conns);
	ly_conntab_init(&srv->conntab);
	srv->t_shutdown.fn = on_server_shutdown;
	/* gRPC refuses a larger message itself, before buffering all of it
	 * (RESOURCE_EXHAUSTED); on_recv checks again. No SO_REUSEPORT: a second
	 * server on our port must fail, not share it. */
	args[n++] = int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
	    (int)(cfg->large_service != NULL && cfg->large_max_request > srv->max_request ? cfg->large_max_request
											    : srv->max_request));
	/* Set, not left to gRPC's default (unlimited for a server's sends): what call_queue refuses too. */
	args[n++] = int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)srv->max_response);
	args[n++] = int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0);
	/* A connection that has not finished its TLS and HTTP/2 handshake by then is closed (slowloris:
	 * gRPC's default is 120 s, so a client could hold descriptors that long for a few bytes). */
	args[n++] = int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, LY_RPC_HANDSHAKE_TIMEOUT_MS);
	/* Stream floods and idle connections (caps.h, issue 19): advertised
	 * SETTINGS_MAX_CONCURRENT_STREAMS (backed by call_count), a cap on
	 * request headers, idle connections closed, dead peers found by pings. */
	args[n++] = int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, LY_RPC_STREAMS_MAX);
	args[n++] = int_arg(GRPC_ARG_MAX_METADATA_SIZE, LY_RPC_METADATA_MAX);
	args[n++] = int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, LY_RPC_IDLE_MS);
	args[n++] = int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, LY_RPC_KEEPALIVE_MS);
	args[n++] = int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, LY_RPC_KEEPALIVE_TIMEOUT_MS);
	/* The memory gRPC accounts to this server's connections and calls: over
	 * it, new connections are dropped at accept and calls are reclaimed. */
	grpc_resource_quota *quota = grpc_resource_quota_create("lanyard-server");
	if (quota != NULL) {
		grpc_resource_quota_resize(quota, LY_RPC_MEMORY_MAX);
		memset(&args[n], 0, sizeof(args[n]));
		args[n].type = GRPC_ARG_POINTER;
		args[n].key = (char *)(uintptr_t)GRPC_ARG_RESOURCE_QUOTA;
		args[n].value.pointer.p = quota;
		args[n].value.pointer.vtable = grpc_resource_quota_arg_vtable();
		n++;
	}
	srv->server = grpc_server_create(channel_args(args, n, &ca), NULL);
	if (quota != NULL)
		grpc_resource_quota_unref(quota); /* the server holds its own reference */
	srv->insecure = grpc_insecure_server_credentials_create();
	if (srv->server == NULL || srv->insecure == NULL) {
		if (srv->server != NULL)
			grpc_server_destroy(srv->server);
		if (srv->insecure != NULL)
			grpc_server_credentials_release(srv->insecure);
		free(srv);
		return ly_error_set(err, LY_E_NOMEM, "server: gRPC could not create it");
	}
	grpc_server_register_completion_queue(srv->server, rpc->cq, NULL);
	ly_queue_insert_tail(&rpc->servers, &srv->link);
	*out = srv;
	return LY_OK;
}

ly_status
ly_rpc_server_listen_tls(struct ly_rpc_server *srv, const char *addr,
    const struct ly_rpc_tls_server *tls, int *port, struct ly_error *err)
{
	struct ly_rpc_tls_state *st = NULL;

	if (port != NULL)
		*port = 0;
	if (srv->started || srv->shutting_down)
		return ly_error_set(err, LY_E_INVALID, "listen %s: server already started", addr);
	if (srv->tls != NULL)
		return ly_error_set(err, LY_E_INVALID, "listen %s: one TLS listener per server", addr);
	LY_TRY(ly_rpc_tls_state_new(tls, &st, err));
	grpc_server_credentials *creds = ly_rpc_tls_server_creds(st);
	if (creds == NULL) {
		ly_rpc_tls_state_free(st);
		return ly_error_set(err, LY_E_INTERNAL, "listen %s: no TLS credentials", addr);
	}
	int p = grpc_server_add_http2_port(srv->server, addr, creds);
	grpc_server_credentials_release(creds);
	if (p == 0) {
		/* gRPC may still hold the credentials (and so `st`) until the
		 * server is destroyed: keep `st` with the server. */
		srv->tls = st;
		return ly_error_set(err, LY_E_IO, "listen %s: cannot bind (in use, or bad address)",
		    addr);
	}
	srv->tls = st;
	srv->tls_port = (uint16_t)p;
	if (port != NULL)
		*port = p;
	return LY_OK;
}

ly_status
ly_rpc_server_set_tls(struct ly_rpc_server *srv, const struct ly_rpc_tls_server *tls,
    struct ly_error *err)
{
	if (srv->tls == NULL)
		return ly_error_set(err, LY_E_INVALID, "set tls: the server has no TLS listener");
	return ly_rpc_tls_state_set(srv->tls, tls, err);
}

ly_status
ly_rpc_server_listen_unix(struct ly_rpc_server *srv, const char *path, struct ly_error *err)
{
	char target[sizeof(((struct sockaddr_un *)NULL)->sun_path) + 8];

	if (srv->started || srv->shutting_down)
		return ly_error_set(err, LY_E_INVALID, "listen %s: server already started", path);
	/* Its directory is the access control: gRPC's listener gives no peer credentials. */
	LY_TRY(ly_sockpath_private_prepare(path, err));
	(void)snprintf(target, sizeof(target), "unix:%s", path);
	if (grpc_server_add_http2_port(srv->server, target, srv->insecure) == 0)
		return ly_error_set(err, LY_E_IO, "listen %s: gRPC cannot bind", path);
	/* Bound by now; within the 0700 directory the mode is a second fence. */
	if (chmod(path, 0600) != 0)
		return ly_error_set(err, LY_E_IO, "chmod %s: %s", path, strerror(errno));
	return LY_OK;
}

ly_status
ly_rpc_server_start(struct ly_rpc_server *srv, struct ly_error *err)
{
	if (srv->started || srv->shutting_down)
		return ly_error_set(err, LY_E_INVALID, "server: already started");
	grpc_server_start(srv->server);
	srv->started = true;
	/* Several requests armed: a burst of calls is matched at once instead of
	 * queueing inside gRPC (rapid reset, CVE-2023-44487: see caps.h). */
	for (int i = 0; i < LY_RPC_REQUESTS_ARMED; i++)
		LY_TRY(server_arm(srv, err));
	return LY_OK;
}

static void
conn_poll_closed(uv_handle_t *h)
{
	struct conn *conn = container_of(h, struct conn, poll);
	struct ly_rpc_server *srv = conn->srv;

	(void)close(conn->fd_watch);
	conn_unref(conn);
	server_maybe_done(srv);
}

/* A connection refused in ly_rpc_server_add_fd: no context to give back. */
static void
conn_abort_closed(uv_handle_t *h)
{
	struct conn *conn = container_of(h, struct conn, poll);

	(void)close(conn->fd_watch);
	free(conn);
}

/* The connection is gone (or the server is): forget its fd number. */
static void
conn_hangup(struct conn *conn)
{
	if (conn->hung)
		return;
	conn->hung = true;
	(void)ly_conntab_remove(&conn->srv->conntab, conn->fd_grpc, conn);
	uv_poll_stop(&conn->poll);
	uv_close((uv_handle_t *)&conn->poll, conn_poll_closed);
}

static void
on_conn_poll(uv_poll_t *h, int status, int events)
{
	/* Only UV_DISCONNECT was asked for: any event, or an error, is the end.
	 * gRPC shuts the socket down (SHUT_RDWR) when it drops the connection,
	 * so this fires then too, not only when the client closes. */
	(void)status;
	(void)events;
	conn_hangup(container_of(h, struct conn, poll));
}

ly_status
ly_rpc_server_add_fd(struct ly_rpc_server *srv, int fd, void *conn_ctx, struct ly_error *err)
{
	struct conn *conn = NULL;
	void *displaced = NULL;
	int fd_grpc = -1, fd_watch = -1, rc;
	ly_status st = LY_OK;

	if (!srv->started || srv->shutting_down)
		return ly_error_set(err, LY_E_INVALID, "add fd: server not running");
	/* handover_admit first (an ioctl and a read of /proc/self/statm); conn_keep,
	 * which asks the agent's cache, only when it refuses. */
	if (!srv->cfg.trusted && handover_admit(srv, fd, err) != LY_OK &&
	    !(srv->cfg.conn_keep != NULL && srv->cfg.conn_keep(conn_ctx, srv->cfg.arg))) {
		if (srv->cfg.conn_shed != NULL)
			srv->cfg.conn_shed(conn_ctx, srv->cfg.arg);
		return ly_error_wrap(err, LY_E_LIMIT, "add fd");
	}
	fd_grpc = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	fd_watch = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (fd_grpc < 0 || fd_watch < 0) {
		st = ly_error_set(err, LY_E_IO, "add fd: dup: %s", strerror(errno));
		goto out;
	}
	int fl = fcntl(fd_grpc, F_GETFL);
	if (fl < 0 || fcntl(fd_grpc, F_SETFL, fl | O_NONBLOCK) != 0) {
		st = ly_error_set(err, LY_E_IO, "add fd: O_NONBLOCK: %s", strerror(errno));
		goto out;
	}
	conn = calloc(1, sizeof(*conn));
	if (conn == NULL) {
		st = ly_error_set(err, LY_E_NOMEM, "add fd: out of memory");
		goto out;
	}
	conn->srv = srv;
	conn->fd_grpc = fd_grpc;
	conn->fd_watch = fd_watch;
	conn->ctx = conn_ctx;
	conn->refs = 1;
	ly_queue_init(&conn->link);
	st = ly_conntab_put(&srv->conntab, fd_grpc, conn, &displaced, err);
	if (st != LY_OK)
		goto out;
	/* `displaced` held this number until gRPC closed it: that connection is
	 * dead; its own hang-up event frees it (see conntab.h). */
	rc = uv_poll_init(srv->rpc->loop, &conn->poll, fd_watch);
	if (rc != 0) {
		(void)ly_conntab_remove(&srv->conntab, fd_grpc, conn);
		st = ly_error_set(err, LY_E_IO, "add fd: uv_poll_init: %s", uv_strerror(rc));
		goto out;
	}
	rc = uv_poll_start(&conn->poll, UV_DISCONNECT, on_conn_poll);
	if (rc != 0) {
		(void)ly_conntab_remove(&srv->conntab, fd_grpc, conn);
		uv_close((uv_handle_t *)&conn->poll, conn_abort_closed); /* frees conn, fd_watch */
		conn = NULL;
		fd_watch = -1;
		st = ly_error_set(err, LY_E_IO, "add fd: uv_poll_start: %s", uv_strerror(rc));
		goto out;
	}
	ly_queue_insert_tail(&srv->conns, &conn->link);
	srv->nconns++;
	/* gRPC owns fd_grpc from here and closes it when the connection ends. */
	grpc_server_add_channel_from_fd(srv->server, fd_grpc, srv->insecure);
	return LY_OK;
out:
	free(conn);
	if (fd_grpc >= 0)
		(void)close(fd_grpc);
	if (fd_watch >= 0)
		(void)close(fd_watch);
	return st;
}

static void
server_shutdown(struct ly_rpc_server *srv)
{
	struct ly_queue *l, *next;

	if (srv->shutting_down)
		return;
	srv->shutting_down = true;
	srv->shutdown_pending = true;
	grpc_server_shutdown_and_notify(srv->server, srv->rpc->cq, &srv->t_shutdown);
	/* Every open call's RECV_CLOSE_ON_SERVER completes: handlers hear of it
	 * through their closed callback and release their calls. */
	grpc_server_cancel_all_calls(srv->server);
	LY_QUEUE_FOREACH_SAFE(l, next, &srv->conns) {
		conn_hangup(LY_QUEUE_DATA(l, struct conn, link));
	}
}

/* ---- client channels and calls ---- */

static void on_cc_main(struct tag *tag, bool ok);
static void on_cc_status(struct tag *tag, bool ok);
static void on_cc_msg(struct tag *tag, bool ok);

/* ly_rpc_channel_new (fd -1) and ly_rpc_channel_new_fd. */
static ly_status
channel_new(struct ly_rpc *rpc, const struct ly_rpc_channel_config *cfg, int fd, struct ly_rpc_channel **out,
    struct ly_error *err)
{
	struct ly_rpc_channel *ch = NULL;
	grpc_channel_credentials *creds = NULL;
	struct ly_rpc_verifier *verifier = NULL;
	grpc_arg args[3];
	grpc_channel_args ca;
	ly_status rc = LY_OK;

	*out = NULL;
	if (rpc->closing)
		return ly_error_set(err, LY_E_INVALID, "channel: rpc is closing");
	if (cfg->target == NULL || cfg->target[0] == '\0')
		return ly_error_set(err, LY_E_INVALID, "channel: no target");
	if (cfg->max_response > LY_RPC_RESPONSE_MAX)
		return ly_error_set(err, LY_E_LIMIT, "channel: max_response over %d", LY_RPC_RESPONSE_MAX);
	if (cfg->tls == NULL && strncmp(cfg->target, "unix:", 5) != 0)
		return ly_error_set(err, LY_E_INVALID,
		    "channel %s: plaintext only over a unix: socket", cfg->target);
	if (fd >= 0 && cfg->tls != NULL)
		return ly_error_set(err, LY_E_INVALID, "channel %s: a connected socket is plaintext only", cfg->target);
	ch = calloc(1, sizeof(*ch));
	if (ch == NULL)
		return ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
	ch->rpc = rpc;
	ch->max_response = cfg->max_response != 0 ? cfg->max_response : LY_RPC_MSG_MAX;
	ly_queue_init(&ch->calls);
	if (cfg->tls != NULL) {
		rc = ly_rpc_tls_client_creds(cfg->tls, &creds, &verifier, err);
		if (rc != LY_OK) {
			(void)ly_error_wrap(err, rc, "channel %s", cfg->target);
			goto out;
		}
	} else {
		creds = grpc_insecure_credentials_create();
		if (creds == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "channel: out of memory");
			goto out;
		}
	}
	/* Its own subchannels: never a connection made with other credentials
	 * (an old certificate after a rotation). */
	args[0] = int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)ch->max_response);
	args[1] = int_arg(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
	/* Requests: what ly_rpc_channel_call refuses too (gRPC's default for a client: unlimited). */
	args[2] = int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, LY_RPC_MSG_MAX);
	if (fd >= 0)
		ch->channel = grpc_channel_create_from_fd(cfg->target, fd, creds, channel_args(args, 3, &ca));
	else
		ch->channel = grpc_channel_create(cfg->target, creds, channel_args(args, 3, &ca));
	if (ch->channel == NULL) {
		rc = ly_error_set(err, LY_E_INVALID, "channel %s: gRPC refused it", cfg->target);
		goto out;
	}
	ch->verifier = verifier;
	verifier = NULL;
	ly_queue_insert_tail(&rpc->channels, &ch->link);
	*out = ch;
	ch = NULL;
out:
	if (creds != NULL)
		grpc_channel_credentials_release(creds);
	ly_rpc_verifier_disarm(verifier);
	free(ch);
	return rc;
}

ly_status
ly_rpc_channel_new(struct ly_rpc *rpc, const struct ly_rpc_channel_config *cfg,
    struct ly_rpc_channel **out, struct ly_error *err)
{
	return channel_new(rpc, cfg, -1, out, err);
}

ly_status
ly_rpc_channel_new_fd(struct ly_rpc *rpc, const struct ly_rpc_channel_config *cfg, int fd,
    struct ly_rpc_channel **out, struct ly_error *err)
{
	if (fd < 0)
		return ly_error_set(err, LY_E_INVALID, "channel: no socket");
	ly_status rc = channel_new(rpc, cfg, fd, out, err);
	if (rc != LY_OK)
		(void)close(fd);
	return rc;
}

static void
channel_maybe_free(struct ly_rpc_channel *ch)
{
	if (!ch->freeing || ch->ncalls != 0)
		return;
	struct ly_rpc *rpc = ch->rpc;
	grpc_channel_destroy(ch->channel);
	ly_queue_remove(&ch->link);
	free(ch);
	rpc_maybe_shutdown_cq(rpc);
}

void
ly_rpc_channel_free(struct ly_rpc_channel *ch)
{
	struct ly_queue *l;

	if (ch == NULL || ch->freeing)
		return;
	ch->freeing = true;
	/* Waits for a handshake check in progress; none starts after this. */
	ly_rpc_verifier_disarm(ch->verifier);
	ch->verifier = NULL;
	LY_QUEUE_FOREACH(l, &ch->calls)
		grpc_call_cancel(LY_QUEUE_DATA(l, struct ly_rpc_ccall, link)->call, NULL);
	channel_maybe_free(ch);
}

static void
ccall_destroy(struct ly_rpc_ccall *cc)
{
	if (cc->call != NULL)
		grpc_call_unref(cc->call);
	if (cc->send_bb != NULL)
		grpc_byte_buffer_destroy(cc->send_bb);
	if (cc->recv_bb != NULL)
		grpc_byte_buffer_destroy(cc->recv_bb);
	for (size_t i = 0; i < cc->n_md; i++) {
		grpc_slice_unref(cc->md[i].key);
		grpc_slice_unref(cc->md[i].value);
	}
	grpc_metadata_array_destroy(&cc->init_md);
	grpc_metadata_array_destroy(&cc->trailing_md);
	grpc_slice_unref(cc->details);
	free(cc);
}

/* Every batch is back: the status is the last callback. */
static void
ccall_maybe_complete(struct ly_rpc_ccall *cc)
{
	if (cc->pending != 0)
		return;
	struct ly_rpc_channel *ch = cc->ch;
	enum ly_rpc_code code = cc->status_set ? cc->own_code : (enum ly_rpc_code)cc->status;
	char *details = NULL;
	if (!cc->status_set)
		details = grpc_slice_to_c_string(cc->details);
	/* Counted until after the callback: it may free the channel or close
	 * the rpc, which must then wait for us. */
	ly_queue_remove(&cc->link);
	cc->on_status(cc, code, cc->status_set ? cc->own_details : (details != NULL ? details : ""),
	    cc->arg);
	gpr_free(details);
	ccall_destroy(cc);
	ch->ncalls--;
	channel_maybe_free(ch);
}

/* Hands one received message to the caller; false when it was refused. */
static bool
ccall_deliver(struct ly_rpc_ccall *cc, grpc_byte_buffer *bb)
{
	uint8_t *msg;
	size_t len;

	if (ly_rpc_msg_from_bb(bb, cc->ch->max_response, &msg, &len, NULL) != LY_OK) {
		cc->status_set = true;
		cc->own_code = LY_RPC_RESOURCE_EXHAUSTED;
		cc->own_details = "response message over the cap";
		grpc_call_cancel(cc->call, NULL);
		return false;
	}
	if (cc->on_message != NULL)
		cc->on_message(cc, msg, len, cc->arg);
	ly_rpc_msg_free(msg, len);
	return true;
}

static void
on_cc_main(struct tag *tag, bool ok)
{
	struct ly_rpc_ccall *cc = container_of(tag, struct ly_rpc_ccall, t_main);

	if (cc->kind == LY_RPC_UNARY && ok && cc->status == GRPC_STATUS_OK) {
		if (cc->recv_bb == NULL) {
			cc->status_set = true;
			cc->own_code = LY_RPC_INTERNAL;
			cc->own_details = "unary response without a message";
		} else {
			(void)ccall_deliver(cc, cc->recv_bb);
		}
	}
	cc->pending--;
	ccall_maybe_complete(cc);
}

static void
on_cc_status(struct tag *tag, bool ok)
{
	struct ly_rpc_ccall *cc = container_of(tag, struct ly_rpc_ccall, t_status);

	(void)ok;
	cc->pending--;
	ccall_maybe_complete(cc);
}

static bool
ccall_read(struct ly_rpc_ccall *cc, bool first)
{
	grpc_op ops[2];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	if (first) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n++].data.recv_initial_metadata.recv_initial_metadata = &cc->init_md;
	}
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n++].data.recv_message.recv_message = &cc->recv_bb;
	return call_batch(cc->call, ops, n, &cc->t_msg, &cc->pending);
}

static void
on_cc_msg(struct tag *tag, bool ok)
{
	struct ly_rpc_ccall *cc = container_of(tag, struct ly_rpc_ccall, t_msg);
	grpc_byte_buffer *bb = cc->recv_bb;

	cc->recv_bb = NULL;
	/* A NULL message is the end of the stream. */
	if (ok && bb != NULL && ccall_deliver(cc, bb) && !ccall_read(cc, false))
		grpc_call_cancel(cc->call, NULL);
	if (bb != NULL)
		grpc_byte_buffer_destroy(bb);
	cc->pending--;
	ccall_maybe_complete(cc);
}

ly_status
ly_rpc_channel_call(struct ly_rpc_channel *ch, const struct ly_rpc_call_config *cfg,
    struct ly_rpc_ccall **out, struct ly_error *err)
{
	struct ly_rpc_ccall *cc = NULL;
	grpc_op ops[6];
	size_t n = 0;
	ly_status rc = LY_OK;

	if (out != NULL)
		*out = NULL;
	if (ch->freeing || ch->rpc->closing)
		return ly_error_set(err, LY_E_INVALID, "call: channel closed");
	if (cfg->method == NULL || cfg->method[0] != '/' || cfg->on_status == NULL ||
	    (cfg->kind != LY_RPC_UNARY && cfg->kind != LY_RPC_SERVER_STREAM))
		return ly_error_set(err, LY_E_INVALID,
		    "call: needs a \"/Service/Method\", a kind and on_status");
	if (cfg->n_md > RPC_CALL_MD_MAX)
		return ly_error_set(err, LY_E_LIMIT, "call: over %d metadata entries", RPC_CALL_MD_MAX);
	cc = calloc(1, sizeof(*cc));
	if (cc == NULL)
		return ly_error_set(err, LY_E_NOMEM, "call: out of memory");
	cc->ch = ch;
	cc->kind = cfg->kind;
	cc->on_message = cfg->on_message;
	cc->on_status = cfg->on_status;
	cc->arg = cfg->arg;
	cc->details = grpc_empty_slice();
	cc->t_main.fn = on_cc_main;
	cc->t_status.fn = on_cc_status;
	cc->t_msg.fn = on_cc_msg;
	ly_queue_init(&cc->link);
	grpc_metadata_array_init(&cc->init_md);
	grpc_metadata_array_init(&cc->trailing_md);
	for (size_t i = 0; i < cfg->n_md; i++) {
		cc->md[i].key = grpc_slice_from_copied_string(cfg->md[i].key);
		cc->md[i].value = grpc_slice_from_copied_string(cfg->md[i].value);
		cc->n_md++;
		if (!grpc_header_key_is_legal(cc->md[i].key) ||
		    (!grpc_is_binary_header(cc->md[i].key) &&
			!grpc_header_nonbin_value_is_legal(cc->md[i].value))) {
			rc = ly_error_set(err, LY_E_INVALID, "call: metadata %zu is not legal", i);
			goto out;
		}
	}
	rc = ly_rpc_msg_to_bb(cfg->req, cfg->req_len, LY_RPC_MSG_MAX, cfg->flags, &cc->send_bb, err);
	if (rc != LY_OK)
		goto out;

	gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
	if (cfg->timeout_ms > 0)
		deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
		    gpr_time_from_millis(cfg->timeout_ms, GPR_TIMESPAN));
	grpc_slice method = grpc_slice_from_copied_string(cfg->method);
	cc->call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
	    ch->rpc->cq, method, NULL, deadline, NULL);
	grpc_slice_unref(method);
	if (cc->call == NULL) {
		rc = ly_error_set(err, LY_E_INTERNAL, "call %s: gRPC could not create it", cfg->method);
		goto out;
	}

	memset(ops, 0, sizeof(ops));
	ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[n].data.send_initial_metadata.count = cc->n_md;
	ops[n].data.send_initial_metadata.metadata = cc->md;
	if ((cfg->flags & LY_RPC_WAIT_FOR_READY) != 0)
		ops[n].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
		    GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
	n++;
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n++].data.send_message.send_message = cc->send_bb;
	ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	if (cfg->kind == LY_RPC_UNARY) {
		/* One batch for the whole call: one completion, one wake-up. */
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n++].data.recv_initial_metadata.recv_initial_metadata = &cc->init_md;
		ops[n].op = GRPC_OP_RECV_MESSAGE;
		ops[n++].data.recv_message.recv_message = &cc->recv_bb;
	}
	ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[n].data.recv_status_on_client.trailing_metadata = &cc->trailing_md;
	ops[n].data.recv_status_on_client.status = &cc->status;
	ops[n].data.recv_status_on_client.status_details = &cc->details;
	if (cfg->kind == LY_RPC_UNARY) {
		n++;
		if (!call_batch(cc->call, ops, n, &cc->t_main, &cc->pending)) {
			rc = ly_error_set(err, LY_E_INTERNAL, "call %s: gRPC refused the batch",
			    cfg->method);
			goto out;
		}
	} else {
		/* Sends; then the status; then messages one read at a time. */
		if (!call_batch(cc->call, ops, n, &cc->t_main, &cc->pending)) {
			rc = ly_error_set(err, LY_E_INTERNAL, "call %s: gRPC refused the batch",
			    cfg->method);
			goto out;
		}
		/* From here the call is started: failures end it through on_status. */
		if (!call_batch(cc->call, &ops[n], 1, &cc->t_status, &cc->pending) ||
		    !ccall_read(cc, true))
			grpc_call_cancel(cc->call, NULL);
	}
	ly_queue_insert_tail(&ch->calls, &cc->link);
	ch->ncalls++;
	if (out != NULL)
		*out = cc;
	return LY_OK;
out:
	ccall_destroy(cc);
	return rc;
}

void
ly_rpc_ccall_cancel(struct ly_rpc_ccall *cc)
{
	grpc_call_cancel(cc->call, NULL);
}
