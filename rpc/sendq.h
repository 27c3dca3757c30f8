/*
 * sendq.h: the send side of one server call as a small state machine.
 *
 * gRPC core allows one SEND_MESSAGE in flight per call. A stream handler
 * may produce updates faster than the client reads them (a rotation burst):
 * while a send is in flight only the newest queued message is kept, and
 * every older one is handed back to be freed ("latest wins": a Workload API
 * stream response is a full snapshot, so an older one is never needed).
 * A final status goes out after the last message, in the same batch when a
 * message is still waiting.
 *
 * The queue also remembers whether initial metadata went out: gRPC core
 * writes nothing for a batch that sends a status before initial metadata
 * was sent (the client then only sees DEADLINE_EXCEEDED), so the first
 * batch always carries SEND_INITIAL_METADATA.
 *
 * Messages are opaque pointers; the queue never frees them. Every function
 * fills `*start` and returns true when the caller must start that batch now
 * (and call ly_sendq_completed when it completes). Pure: no gRPC, no libuv.
 */
#ifndef LANYARD_RPC_SENDQ_H
#define LANYARD_RPC_SENDQ_H

#include <stdbool.h>
#include <stdint.h>

/* One batch to start: any of initial metadata, a message, the status. */
struct ly_sendq_batch {
	bool initial_metadata;
	void *msg;   /* NULL: no message in this batch */
	bool status; /* the final status goes in this batch */
};

struct ly_sendq {
	bool in_flight;    /* a batch was started and has not completed */
	bool md_sent;      /* a batch with initial metadata was started */
	bool finishing;    /* a status was asked for */
	bool done;         /* the status batch was started, or the call died */
	void *pending;     /* newest message waiting for the in-flight batch */
	uint64_t dropped;  /* messages replaced before they were sent */
};

#define LY_SENDQ_INIT { false, false, false, false, NULL, 0 }

/*
 * Queues `msg`. When a batch is in flight it replaces the waiting message,
 * which is returned in *replaced (NULL if none) for the caller to free.
 * After ly_sendq_finish or ly_sendq_abort, `msg` itself is returned in
 * *replaced (refused) and nothing starts.
 */
bool ly_sendq_push(struct ly_sendq *q, void *msg, struct ly_sendq_batch *start, void **replaced);

/*
 * Queues `msg` as the last message, followed by the status (a unary reply:
 * one batch with initial metadata, message and status when nothing is in
 * flight). Same *replaced rules as ly_sendq_push.
 */
bool ly_sendq_push_last(struct ly_sendq *q, void *msg, struct ly_sendq_batch *start,
    void **replaced);

/* Asks for the final status after whatever is queued. Idempotent. */
bool ly_sendq_finish(struct ly_sendq *q, struct ly_sendq_batch *start);

/*
 * The in-flight batch completed. `ok` false means the call is dead (client
 * gone): nothing more starts, and the waiting message is returned in
 * *orphan for the caller to free.
 */
bool ly_sendq_completed(struct ly_sendq *q, bool ok, struct ly_sendq_batch *start, void **orphan);

/*
 * The call died (cancelled, client gone): nothing more starts; returns the
 * waiting message (or NULL) for the caller to free. A batch still in flight
 * must still be completed with ly_sendq_completed.
 */
void *ly_sendq_abort(struct ly_sendq *q);

#endif /* LANYARD_RPC_SENDQ_H */
