/* Private to the parlua runtime: a FIFO queue of opaque items, bounded or
 * not, with Python's queue.Queue semantics (task_done/join) plus close().
 *
 * The queue does not know what an item means.  While only the state family
 * that made it can reach it, an item is a reference in that family's
 * registry (PL_QITEM_REF: values of one shared state travel by reference,
 * as Python's queue does).  Once the queue is shared -- the codec sends it
 * to another state -- every item is an encoded value (PL_QITEM_MSG) that
 * any state can decode: the binding encodes at put time, and the
 * reference items already inside are converted once, when the queue is
 * first shared, by the family that owns them holding its lock:
 *   pl_queue_share_begin  copies out the reference items (in order);
 *   (the binding encodes them, holding no mutex of ours)
 *   pl_queue_share_commit puts the encoded items in their place, unless a
 *                         put or get came in between (then: start again).
 * A reference item that meets a shared queue is refused (PL_ESHARED):
 * its putter, blocked since before the queue was shared, encodes it and
 * tries again.  Only the family named in a reference item may turn it
 * back into a value or drop it.
 *
 * Like the objects of sync.h: a refcounted pl_sync head, one mutex held
 * only for a few instructions, blocking functions that wait through
 * pl_wait and return status codes (core/status.h), and try_ functions for
 * the path that needs no waiting.
 */
#ifndef PL_QUEUE_H
#define PL_QUEUE_H

#include <stddef.h>

#include "sync/sync.h"

enum { PL_QITEM_REF = 1, PL_QITEM_MSG = 2 };

/* Codes besides those of sync.h: PL_ESHARED, a put of a reference item
 * into a shared queue (nothing was stored); PL_EMOVED, the queue has a
 * process channel now (proc/pqueue.h): every operation goes there
 * (nothing was done here). */

typedef struct pl_qitem {
  int kind;          /* PL_QITEM_* */
  void *owner;       /* REF: the pl_family whose registry holds `ref` */
  int ref;           /* REF: luaL_ref result (LUA_REFNIL for nil) */
  void *msg;         /* MSG: the encoded value (a pl_msg, owned by the item) */
} pl_qitem;

typedef struct pl_queue {
  pl_sync head;
  pthread_mutex_t mu;
  pthread_cond_t not_empty;   /* signalled by put */
  pthread_cond_t not_full;    /* signalled by get */
  pthread_cond_t all_done;    /* broadcast when unfinished reaches 0 */
  long long maxsize;          /* 0: unbounded */
  pl_qitem *items;            /* guarded by mu: a ring of cap slots */
  size_t cap, first, len;     /* guarded by mu */
  long long unfinished;       /* guarded by mu: put minus task_done */
  int closed;                 /* guarded by mu */
  atomic_int shared;          /* written under mu: items are encoded */
  int sharing;                /* guarded by mu: a conversion is under way */
  uint64_t epoch;             /* guarded by mu: bumped by every put and get */
  /* Set once, under mu, when the queue first goes to another process;
   * from then on the items live in the channel (pqueue.h). */
  _Atomic(struct pl_pchan *) pchan;
} pl_queue;

pl_queue *pl_queue_new(long long maxsize);

/* 0 when stored; PL_EWOULDWAIT when full; PL_ECLOSED; PL_ENOMEM. */
int pl_queue_try_put(pl_queue *q, const pl_qitem *it);
/* Also PL_ETIMEOUT and PL_ECANCELLED (the item was not stored). */
int pl_queue_put(pl_queue *q, pl_tstate *ts, int64_t deadline, const pl_qitem *it);

/* 0 with *out filled; PL_EWOULDWAIT when empty; PL_ECLOSED when closed
 * and empty (a closed queue still hands out what it holds). */
int pl_queue_try_get(pl_queue *q, pl_qitem *out);
int pl_queue_get(pl_queue *q, pl_tstate *ts, int64_t deadline, pl_qitem *out);

/* 0, or PL_ETOOMANY when called more often than items were put. */
int pl_queue_task_done(pl_queue *q);
/* 0 when every item put has been marked done (at once if so). */
int pl_queue_join(pl_queue *q, pl_tstate *ts, int64_t deadline);
long long pl_queue_unfinished(pl_queue *q);

/* Refuse further puts and wake every blocked getter and putter. */
void pl_queue_close(pl_queue *q);
int pl_queue_closed(pl_queue *q);
size_t pl_queue_size(pl_queue *q);

static inline int pl_queue_is_shared(pl_queue *q) { return atomic_load(&q->shared); }
/* 1: shared already, or now (nothing to convert), or a conversion is under
 * way; 0: *items (malloc'd, *n of them, in queue order) are the reference
 * items to convert, *epoch the queue's version; -1: out of memory. */
int pl_queue_share_begin(pl_queue *q, pl_qitem **items, size_t *n, uint64_t *epoch);
/* After begin returned 0: put the n encoded items in place of the
 * reference items and mark the queue shared (1), or, when the queue
 * changed meanwhile, change nothing (0: the caller frees them and begins
 * again). */
int pl_queue_share_commit(pl_queue *q, uint64_t epoch, const pl_qitem *encoded, size_t n);
/* After begin returned 0: give up (an item could not be encoded). */
void pl_queue_share_abort(pl_queue *q);

#endif
