/* Private to the parlua runtime: thread-safe futures, and waiters that
 * watch many futures at once.
 *
 * A future is the receipt of one task.  It is refcounted (the Lua box, the
 * queued or running task, a waiter each hold a reference) and guarded by
 * its own mutex, held only for a few instructions and never around Lua
 * code.  Its life, as Python's concurrent.futures.Future:
 *
 *   PENDING --set_running_or_notify_cancel--> RUNNING --finish--> FINISHED
 *      \--cancel--> CANCELLED
 *
 * What a task produced is a pl_value stored inline in the future: a
 * vtable (push, free) and a few words that belong to the kind of worker
 * that made it.  Kind `threads` keeps a registry reference of the shared
 * state there (one value, or a table of several, so multiple returns are
 * kept); `states` and `processes` will keep encoded bytes.  So the future
 * never knows what a value is, and storing a result allocates nothing.
 *
 * Who frees a value.  A value is only ever read through its holder: the
 * Lua box of the future (result, exception) or the map engine that made
 * the future without a box.  When the holder goes away it "orphans" the
 * future, which frees a stored value at once; a value arriving later at an
 * orphan is refused (pl_future_store returns 0) and the completer frees
 * it.  A value that lives in a state's registry is thus always freed by a
 * thread holding that state's lock -- the holder's __gc or the completing
 * worker -- while the future itself (mutex, traceback string) can be freed
 * by whoever drops the last reference, lock or not.
 *
 * Waiting.  pl_future_wait spins briefly on the state word (more than one
 * core only) and then sleeps on the future's condition through pl_wait, so
 * a forced cancel or an interrupt wakes it.  A pl_waiter (CPython's
 * _Waiter) watches any number of futures through links that the futures
 * fire when they finish: the waiter records finished ids in completion
 * order, so par.wait, par.as_completed and imap_unordered wait for many
 * futures without polling and without scanning them all at each wake-up.
 *
 * Done callbacks are C records; finish and cancel detach the list and hand
 * it to the caller, who runs them holding the lock of the future's owning
 * state (pl_future_run_callbacks).  Kind `threads` completes futures in a
 * worker that holds that lock already; a kind that completes without it
 * takes it only when the list is not empty.
 *
 * Lock order: future mu before waiter mu.  Nothing here takes the global
 * lock or calls Lua, except the value ops and callbacks, which run with no
 * mutex of ours held.
 */
#ifndef PL_FUTURE_H
#define PL_FUTURE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lua.h"
#include "core/tstate.h"

typedef struct pl_future pl_future;
typedef struct pl_value pl_value;
typedef struct pl_waiter pl_waiter;

enum { PL_FUTURE_PENDING, PL_FUTURE_RUNNING, PL_FUTURE_FINISHED, PL_FUTURE_CANCELLED };
enum { PL_OUTCOME_NONE, PL_OUTCOME_OK, PL_OUTCOME_ERROR };

typedef struct pl_value_ops {
  /* [-0, +n] push the value(s) into L and return how many; may raise (a
   * value of another state, a malformed encoding). */
  int (*push)(lua_State *L, const pl_value *v);
  /* Let go of the value.  L is a thread of the state the value belongs to,
   * its lock held, or NULL when there is no such state (kinds whose values
   * are plain bytes accept NULL). */
  void (*free)(lua_State *L, pl_value *v);
} pl_value_ops;

struct pl_value {
  const pl_value_ops *ops;  /* NULL: no value */
  void *owner;              /* the family whose state holds it, if any */
  intptr_t a, b;            /* kind-private words */
  void *data;               /* kind-private pointer */
};

typedef struct pl_future_cb pl_future_cb;
struct pl_future_cb {
  pl_future_cb *next;
  /* Called exactly once, holding the lock of the owning state, with L a
   * thread of it; frees cb.  Must not raise. */
  void (*run)(lua_State *L, pl_future *f, pl_future_cb *cb);
};

typedef struct pl_waitlink {
  struct pl_waitlink *next;
  pl_waiter *w;
  size_t id;
  int armed;                /* guarded by the future's mu */
} pl_waitlink;

struct pl_future {
  atomic_int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* broadcast when it finishes or is cancelled;
                               made by the first sleeper (cv_ready) */
  int cv_ready;             /* guarded by mu */
  atomic_int state;         /* PL_FUTURE_*: read anywhere; PENDING -> RUNNING
                               by compare-and-swap, the final states under mu */
  atomic_int has_callbacks; /* a callback was ever added */
  atomic_int runner_cpu;    /* where the thread that will complete it was
                               last seen (-1: unknown), for waiters' spins */
  int outcome;              /* guarded by mu; fixed once FINISHED */
  int orphan;               /* guarded by mu until FINISHED (then only the
                               holder touches it): the holder is gone */
  int sleepers;             /* guarded by mu: threads asleep on cv */
  pl_value value;           /* guarded by mu; fixed once FINISHED */
  char *traceback;          /* guarded by mu; fixed once FINISHED */
  pl_waitlink *links;       /* guarded by mu: waiters to tell */
  pl_future_cb *callbacks;  /* guarded by mu */
};

/* v becomes the error "not enough memory" (Lua's own message for it): for
 * a task that must fail when nothing can be allocated, as making this
 * value needs no memory and it belongs to no state. */
void pl_value_no_memory(pl_value *v);

/* A new PENDING future with one reference; NULL when out of memory. */
pl_future *pl_future_new(void);
void pl_future_incref(pl_future *f);
void pl_future_decref(pl_future *f);

static inline int pl_future_state(pl_future *f) {
  return atomic_load_explicit(&f->state, memory_order_acquire);
}
static inline int pl_future_done(pl_future *f) {
  return pl_future_state(f) >= PL_FUTURE_FINISHED;
}

/* As Python: 1 when the future is now RUNNING (it was PENDING), 0 when it
 * was cancelled (waiters were told at cancel time). */
int pl_future_set_running_or_notify_cancel(pl_future *f);

/* Record the outcome of a RUNNING future without finishing it yet.  Takes
 * the value and the malloc'd traceback (may be NULL) and returns 1, or
 * returns 0 when the future is an orphan: then nothing was taken and the
 * caller frees both. */
int pl_future_store(pl_future *f, int outcome, const pl_value *v, char *traceback);

/* Mark it FINISHED with the stored outcome, wake every waiter, and return
 * the done callbacks for the caller to run (NULL when none). */
pl_future_cb *pl_future_finish(pl_future *f);
/* pl_future_store and pl_future_finish at once (one lock): *taken as
 * store's result. */
pl_future_cb *pl_future_complete(pl_future *f, int outcome, const pl_value *v, char *traceback,
                                 int *taken);

/* Cancel a PENDING future.  *cancelled is 1 when it is (now or already)
 * CANCELLED, 0 when it runs or has finished.  Returns the callbacks to run. */
pl_future_cb *pl_future_cancel(pl_future *f, int *cancelled);

/* Add a done callback: 0 when added, 1 when the future is already done
 * (not added: the caller runs it at once). */
int pl_future_add_callback(pl_future *f, pl_future_cb *cb);
void pl_future_run_callbacks(lua_State *L, pl_future *f, pl_future_cb *list);
/* 1 when callbacks are registered now (one added later may still come). */
int pl_future_has_callbacks(pl_future *f);

/* The holder is gone: free the value now (L as for pl_value_ops.free) and
 * refuse any value stored later. */
void pl_future_orphan(pl_future *f, lua_State *L);

/* [-0, +n] push the value of a FINISHED future (results, or the error). */
int pl_future_push(lua_State *L, pl_future *f);
int pl_future_outcome(pl_future *f);
/* The worker traceback of a failed task, or NULL; valid while f lives. */
const char *pl_future_traceback(pl_future *f);

/* Wait until f is done or the deadline passes (spinning briefly first).
 * PL_OK when done, PL_ETIMEOUT, or PL_ECANCELLED. */
int pl_future_wait(pl_future *f, pl_tstate *ts, int64_t deadline);

/* ---- waiters --------------------------------------------------------- */

struct pl_waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* signalled when a watched future finishes */
  size_t *ready;            /* guarded by mu: ids in completion order (ring) */
  size_t cap, first, len;   /* guarded by mu */
  size_t armed;             /* guarded by mu: links not yet fired or unwatched */
  size_t finished, failed;  /* guarded by mu: fired so far, and those that failed */
  int sleeping;             /* guarded by mu */
};

pl_waiter *pl_waiter_new(void);
/* Every link must be fired or unwatched first. */
void pl_waiter_free(pl_waiter *w);
/* Watch f through `link` (storage owned by the caller until it fires or is
 * unwatched) under `id`; a future already done is recorded at once.
 * 0, or -1 when out of memory. */
int pl_waiter_watch(pl_waiter *w, pl_future *f, pl_waitlink *link, size_t id);
void pl_waiter_unwatch(pl_waiter *w, pl_future *f, pl_waitlink *link);
/* Wait until `finished` reaches `target`, or (stop_on_error) one failed.
 * PL_OK, PL_ETIMEOUT or PL_ECANCELLED. */
int pl_waiter_wait(pl_waiter *w, pl_tstate *ts, int64_t deadline, size_t target, int stop_on_error);
/* The next finished id in completion order: 1, or 0 when none is ready. */
int pl_waiter_pop(pl_waiter *w, size_t *id);
void pl_waiter_counts(pl_waiter *w, size_t *finished, size_t *failed);

#endif
