/*
 * queue.h: the one intrusive doubly linked list of the tree (in the
 * spirit of libuv's src/queue.h). A `struct ly_queue` is both the head of
 * a list and the link embedded in each element; a head is a circle of
 * one when empty, so insertion and removal never test for NULL. Get the
 * element back with LY_QUEUE_DATA (container_of).
 *
 *   struct conn { ...; struct ly_queue link; };
 *   struct ly_queue conns;
 *   ly_queue_init(&conns);
 *   ly_queue_insert_tail(&conns, &c->link);
 *   LY_QUEUE_FOREACH_SAFE(q, tmp, &conns) {
 *           struct conn *c = LY_QUEUE_DATA(q, struct conn, link);
 *           ly_queue_remove(q);   (safe: `tmp` already holds the next one)
 *   }
 *
 * Hazards: an element is on at most one list through one link; a link
 * must be initialised (ly_queue_init) or inserted before
 * ly_queue_remove, which leaves it a circle of one (removing it twice is
 * harmless). The list owns nothing: freeing elements is the caller's.
 * In LY_QUEUE_FOREACH the current element must stay on the list; to
 * remove elements while walking (the current one only), use
 * LY_QUEUE_FOREACH_SAFE. A callback that may remove other elements needs
 * a walk that restarts (take the head's first, remove it, repeat).
 */
#ifndef LANYARD_QUEUE_H
#define LANYARD_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

struct ly_queue {
	struct ly_queue *prev, *next;
};

#define LY_QUEUE_DATA(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define LY_QUEUE_FOREACH(q, head) for ((q) = (head)->next; (q) != (head); (q) = (q)->next)

#define LY_QUEUE_FOREACH_SAFE(q, tmp, head) \
	for ((q) = (head)->next, (tmp) = (q)->next; (q) != (head); (q) = (tmp), (tmp) = (q)->next)

static inline void
ly_queue_init(struct ly_queue *q)
{
	q->prev = q->next = q;
}

static inline bool
ly_queue_empty(const struct ly_queue *head)
{
	return head->next == head;
}

/* The first element's link, or NULL when the list is empty. */
static inline struct ly_queue *
ly_queue_head(const struct ly_queue *head)
{
	return head->next != head ? head->next : NULL;
}

static inline void
ly_queue_insert_tail(struct ly_queue *head, struct ly_queue *q)
{
	q->next = head;
	q->prev = head->prev;
	head->prev->next = q;
	head->prev = q;
}

static inline void
ly_queue_insert_head(struct ly_queue *head, struct ly_queue *q)
{
	q->next = head->next;
	q->prev = head;
	head->next->prev = q;
	head->next = q;
}

/* Takes `q` off its list; it is left a circle of one. */
static inline void
ly_queue_remove(struct ly_queue *q)
{
	q->prev->next = q->next;
	q->next->prev = q->prev;
	q->prev = q->next = q;
}

#endif /* LANYARD_QUEUE_H */
