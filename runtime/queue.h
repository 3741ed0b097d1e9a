/* Private to the parlua runtime: a FIFO queue of opaque items, bounded or
 * not, with Python's queue.Queue semantics (task_done/join) plus close().
 *
 * The queue does not know what an item means.  Today every item is a
 * reference in the registry of the state family that put it (PL_QITEM_REF:
 * values of one shared state travel by reference, as Python's queue does);
 * a later item kind can carry an encoded value between states.  Only the
 * family named in an item may turn it back into a value or drop it.
 *
 * Like the objects of sync.h: a refcounted pl_sync head, one mutex held
 * only for a few instructions, blocking functions that wait through
 * pl_wait and return PL_WAIT_* or PL_SYNC_* codes, and try_ functions for
 * the path that needs no waiting.
 */
#ifndef PL_QUEUE_H
#define PL_QUEUE_H

#include <stddef.h>

#include "sync.h"

enum { PL_QITEM_REF = 1 };

typedef struct pl_qitem {
  int kind;          /* PL_QITEM_REF */
  void *owner;       /* the pl_family whose registry holds `ref` */
  int ref;           /* luaL_ref result (LUA_REFNIL for nil) */
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
} pl_queue;

pl_queue *pl_queue_new(long long maxsize);

/* 0 when stored; PL_SYNC_AGAIN when full; PL_SYNC_CLOSED; PL_SYNC_NOMEM. */
int pl_queue_try_put(pl_queue *q, const pl_qitem *it);
/* Also PL_WAIT_TIMEOUT and PL_WAIT_CANCELLED (the item was not stored). */
int pl_queue_put(pl_queue *q, pl_tstate *ts, int64_t deadline, const pl_qitem *it);

/* 0 with *out filled; PL_SYNC_AGAIN when empty; PL_SYNC_CLOSED when closed
 * and empty (a closed queue still hands out what it holds). */
int pl_queue_try_get(pl_queue *q, pl_qitem *out);
int pl_queue_get(pl_queue *q, pl_tstate *ts, int64_t deadline, pl_qitem *out);

/* 0, or PL_SYNC_TOO_MANY when called more often than items were put. */
int pl_queue_task_done(pl_queue *q);
/* 0 when every item put has been marked done (at once if so). */
int pl_queue_join(pl_queue *q, pl_tstate *ts, int64_t deadline);
long long pl_queue_unfinished(pl_queue *q);

/* Refuse further puts and wake every blocked getter and putter. */
void pl_queue_close(pl_queue *q);
int pl_queue_closed(pl_queue *q);
size_t pl_queue_size(pl_queue *q);

#endif
