/* Private to the parlua runtime: locks, reentrant locks, events,
 * conditions, semaphores and barriers as C objects that belong to no
 * lua_State.
 *
 * Every object starts with a pl_sync head: a reference count, its kind and
 * how to destroy it.  A Lua box holds one reference; a binding that blocks
 * takes another for the time it waits, so the object outlives every box
 * that might be collected meanwhile.  Because nothing here knows about Lua
 * or the global lock, the same object can later be shared by several
 * states, each box holding its own reference.
 *
 * How a binding uses an object (the same for every kind):
 *   1. holding the global lock, try the non-blocking path (pl_*_try...);
 *      an object that is available costs no lock hand-over at all;
 *   2. otherwise give the global lock away (pl_unlock) and call the blocking
 *      function, which waits through pl_wait, so that a forced cancel wakes
 *      it; take the global lock back (pl_lock) and report the result.
 * Object mutexes are held only for a few instructions, never while waiting
 * for the global lock and never around a Lua call; no function here holds
 * two object mutexes at once (a condition and its lock are taken one after
 * the other, never nested).
 *
 * Blocking functions return PL_OK (0) when they got what they waited for,
 * PL_ETIMEOUT, PL_ECANCELLED, or another code of core/status.h:
 * PL_EWOULDWAIT (a non-blocking call that would have to wait), PL_ENOTHELD
 * (release/wait/notify without holding the lock), PL_ETOOMANY (bounded
 * semaphore or task_done over-released), PL_EBROKEN (the barrier is
 * broken), PL_ECLOSED (the queue is closed), PL_ENOMEM.  A waiter that
 * gives up (timeout, cancel) after a wake-up meant for it passes the
 * wake-up on, so signals are never lost.
 *
 * Ownership (rlocks, a condition's lock) is by OS thread (pthread_self),
 * as Python's threading identifies the owner by thread ident.
 */
#ifndef PL_SYNC_H
#define PL_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/tstate.h"

enum {
  PL_SYNC_LOCK = 1, PL_SYNC_RLOCK, PL_SYNC_EVENT, PL_SYNC_CONDITION,
  PL_SYNC_SEMAPHORE, PL_SYNC_BARRIER, PL_SYNC_QUEUE
};

typedef struct pl_sync pl_sync;
struct pl_sync {
  atomic_int refs;
  int kind;                       /* PL_SYNC_LOCK ... */
  void (*destroy)(pl_sync *s);    /* frees the object; called at refs 0 */
};

void pl_sync_init(pl_sync *s, int kind, void (*destroy)(pl_sync *));
void pl_sync_incref(pl_sync *s);
void pl_sync_decref(pl_sync *s);
/* The current count; 1 means the caller holds the only reference (nobody
 * else can make a new one), so the answer cannot change under it. */
int pl_sync_refs(pl_sync *s);

/* --- lock and rlock --------------------------------------------------- */

typedef struct pl_synclock {
  pl_sync head;
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* signalled when the lock becomes free */
  int reentrant;
  long count;               /* guarded by mu: 0 when free, >1 only for rlocks */
  pthread_t owner;          /* guarded by mu: meaningful while count > 0 */
  uint64_t takes;           /* guarded by mu: times it went from free to taken */
} pl_synclock;

pl_synclock *pl_synclock_new(int reentrant);
/* 1 when taken at once (free, or an rlock the caller owns). */
int pl_synclock_try(pl_synclock *lk);
int pl_synclock_acquire(pl_synclock *lk, pl_tstate *ts, int64_t deadline);
/* 0, or PL_ENOTHELD: a free lock, or an rlock another thread owns. */
int pl_synclock_release(pl_synclock *lk);
int pl_synclock_locked(pl_synclock *lk);
/* Held by the calling thread (for a plain lock: the thread that took it). */
int pl_synclock_owned(pl_synclock *lk);
/* The rlock recursion count (0 when free). */
long pl_synclock_count(pl_synclock *lk);
/* 1 and *take = the lock's take number when the calling thread holds it.
 * A take number names one holding, from free to free again: a lock
 * released (by anyone) and taken again has a new one. */
int pl_synclock_owned_take(pl_synclock *lk, uint64_t *take);
/* 1 when the calling thread still holds `take` of lk (it was not released
 * since); with `release`, it then gives up every level of it. */
int pl_synclock_check_take(pl_synclock *lk, uint64_t take, int release);

/* --- event ------------------------------------------------------------ */

typedef struct pl_event {
  pl_sync head;
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* broadcast by set */
  int flag;                 /* guarded by mu */
  uint64_t sets;            /* guarded by mu: times the flag went up */
} pl_event;

pl_event *pl_event_new(void);
void pl_event_set(pl_event *ev);
void pl_event_clear(pl_event *ev);
int pl_event_is_set(pl_event *ev);
/* PL_OK when the flag is (or was meanwhile) set. */
int pl_event_wait(pl_event *ev, pl_tstate *ts, int64_t deadline);

/* --- condition -------------------------------------------------------- */

typedef struct pl_cwaiter pl_cwaiter;

typedef struct pl_condition {
  pl_sync head;
  pl_synclock *lock;        /* a reference of its own */
  pthread_mutex_t mu;
  pl_cwaiter *first, *last; /* guarded by mu: waiters not yet notified, FIFO */
  int nwaiters;             /* guarded by mu */
} pl_condition;

/* A condition over `lk` (which it references), or over a new rlock when
 * lk is NULL. */
pl_condition *pl_condition_new(pl_synclock *lk);
/* Release the lock completely, wait for a notify, take the lock back (even
 * after a timeout, so the caller holds it on return).  A forced cancel cuts
 * short the wait and also the taking back: then PL_ECANCELLED returns
 * with the lock held only if it was free at once (pl_synclock_owned
 * tells), and a notify meant for this waiter is passed on to the next.
 * PL_OK when notified; PL_ENOTHELD when the caller does not
 * hold the lock. */
int pl_condition_wait(pl_condition *c, pl_tstate *ts, int64_t deadline);
/* Wake up to n waiters (LONG_MAX: all); PL_ENOTHELD as above. */
int pl_condition_notify(pl_condition *c, long n);
int pl_condition_waiters(pl_condition *c);

/* --- semaphore -------------------------------------------------------- */

typedef struct pl_semaphore {
  pl_sync head;
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* signalled on release */
  long long value;          /* guarded by mu */
  long long bound;          /* the initial value of a bounded one, else -1 */
} pl_semaphore;

pl_semaphore *pl_semaphore_new(long long value, int bounded);
int pl_semaphore_try(pl_semaphore *s);
int pl_semaphore_acquire(pl_semaphore *s, pl_tstate *ts, int64_t deadline);
/* 0, or PL_ETOOMANY when a bounded semaphore would exceed its bound
 * (the value is then unchanged). */
int pl_semaphore_release(pl_semaphore *s, long long n);
long long pl_semaphore_value(pl_semaphore *s);

/* --- barrier ---------------------------------------------------------- */

typedef struct pl_barrier {
  pl_sync head;
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* broadcast on every change of state */
  int parties;
  double timeout;           /* the default for wait (-1: none); set once, at creation */
  int count;                /* guarded by mu: threads inside wait */
  int state;                /* guarded by mu: filling, draining, resetting, broken */
} pl_barrier;

pl_barrier *pl_barrier_new(int parties);
/* Wait for all parties; *index gets this thread's arrival index
 * (0 .. parties-1, as Python's Barrier.wait returns).  PL_EBROKEN when
 * the barrier is or becomes broken (or is reset while waiting).  A timeout
 * or a cancel breaks the barrier, as in Python.  With `nonblock`, returns
 * PL_EWOULDWAIT (changing nothing) unless the call would complete at once:
 * the caller is the last party, or the barrier is broken. */
int pl_barrier_wait(pl_barrier *b, pl_tstate *ts, int64_t deadline, int *index, int nonblock);
void pl_barrier_abort(pl_barrier *b);
void pl_barrier_reset(pl_barrier *b);
int pl_barrier_n_waiting(pl_barrier *b);
int pl_barrier_broken(pl_barrier *b);

#endif
