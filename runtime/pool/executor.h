/* Private to the parlua runtime: the pool core that every kind of worker
 * shares (par.pool).
 *
 * The executor owns a FIFO of tasks, the worker OS threads and their
 * bookkeeping, the statistics and shutdown; a kind (pl_kind_ops) says how
 * one task is carried out, and nothing else:
 *
 *   submitter (holds its state's lock)         worker OS thread
 *   ----------------------------------         ----------------
 *   kind->pack: fn and args -> task payload    kind->worker_start (tstate, init)
 *   future + task queued, a worker woken  -->  take: pop a task, or
 *     or started (lazily, as Python)             kind->idle, spin, sleep
 *                                              kind->run: set RUNNING (or skip a
 *                                                cancelled one), call, store the
 *                                                outcome, pl_executor_task_done,
 *                                                finish the future, callbacks
 *                                              ... until shut down and empty
 *                                              kind->worker_stop
 *
 * Workers are started lazily, one per submit that finds no idle worker,
 * up to `max_workers`, as Python's ThreadPoolExecutor does: a pool that
 * gets two tasks costs two threads, and `init` runs when a worker starts,
 * before its first task.  A worker that finds the queue empty lets go of
 * any lock (kind->idle), spins briefly on the queue length (more than one
 * core only, and at most max_spinners workers at once: a trivial
 * submit/result loop then never sleeps, and the other workers do not take
 * CPU time from it), and then sleeps on `work` through pl_wait.  The
 * submitter's and the spinner's CPUs are noted, so that a spin on a
 * machine busier than its cores yields to a peer that shares its CPU
 * instead of pausing until its time slice ends.  A worker counts as
 * `looking` from the moment its task has ended -- before the task's
 * future is finished, so before whoever waits on it can submit again --
 * until it has a new task or sleeps: a submit wakes a sleeper, or starts a
 * worker, only for tasks that the looking workers cannot take.
 *
 * Ordering: tasks start in submission order; with several workers they
 * finish in any order.  Results go back through the future only.
 *
 * Shutdown{wait, cancel_futures, interrupt} is idempotent: each call
 * refuses further submits, wakes idle workers so that they leave once the
 * queue is empty, optionally cancels what is queued and interrupts what
 * runs (kind->interrupt), and optionally waits until every worker has
 * exited.  A pool is registered as a runtime closer (PL_CLOSE_POOLS): when
 * the runtime closes, every pool still alive is shut down with wait=true
 * (after an interrupt of the runtime, also cancelling and interrupting), so
 * no future is ever lost.
 *
 * Lock order: e->list_mu, then w->cancel_mu, then a tstate's wait_guard,
 * then any mutex a thread waits on (e->mu among them).  e->mu is never
 * held while taking another of these.  No mutex is held around Lua code.
 */
#ifndef PL_EXECUTOR_H
#define PL_EXECUTOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lua.h"
#include "core/spin.h"
#include "sync/future.h"
#include "core/runtime.h"
#include "pool/limits.h"

typedef struct pl_executor pl_executor;
typedef struct pl_worker pl_worker;
typedef struct pl_task pl_task;

/* What a task does with its n values: call fn(v1, ..., vn) keeping every
 * result, or (a chunk of map/starmap) call fn(vi) / fn(unpack(vi)) for
 * each item, keeping the first result of each -- the future's value then
 * pushes one value per item. */
enum { PL_TASK_CALL, PL_TASK_MAP, PL_TASK_STARMAP, PL_TASK_INIT /* the pool's init, packed */ };
enum { PL_TASK_OK, PL_TASK_FAILED, PL_TASK_CANCELLED };

struct pl_task {
  pl_task *next;
  pl_future *f;
  int mode;       /* PL_TASK_* */
  int n;          /* values: arguments, or items of a chunk */
  intptr_t a, b;  /* kind-private payload (threads: registry refs) */
  void *data;     /* kind-private payload (encoded kinds) */
  pl_limits limits;
};

typedef struct pl_kind_ops {
  const char *name;
  /* Executor-level kind state (e->kind_data).  0, or -1 out of memory. */
  int (*setup)(pl_executor *e);
  /* Submitting thread, lock held: take [fn, v1..vn] (t->n values) off the
   * top of L into t (t->f is not set yet).  May raise, having stored
   * nothing: a submit then makes nothing either. */
  void (*pack)(pl_executor *e, lua_State *L, pl_task *t);
  /* Lock of e's state held, L a thread of it: let go of the payload of a
   * task that will not run (cancelled before it started). */
  void (*drop)(pl_executor *e, lua_State *L, pl_task *t);
  /* Submitting thread, lock held: kind state for a new worker (w->kind
   * set).  0, or -1 when out of memory. */
  int (*worker_new)(pl_worker *w, lua_State *L);
  /* Undo worker_new when the OS thread could not be started. */
  void (*worker_abandon)(pl_worker *w, lua_State *L);
  /* Worker thread, first: set up (w->ts), run init. */
  void (*worker_start)(pl_worker *w);
  /* Worker thread: about to block waiting for work; let go of any lock. */
  void (*idle)(pl_worker *w);
  /* Worker thread: carry out task t (see the picture above). */
  void (*run)(pl_worker *w, pl_task *t);
  /* Any thread, w->cancel_mu held, w busy: stop the task w is running. */
  void (*interrupt)(pl_worker *w);
  /* The watcher of time limits (limits.h), w->cancel_mu held, w busy
   * with a task armed by pl_executor_arm_limits: its soft limit (raise
   * SoftTimeLimit in it) or its hard limit (stop it: it fails with
   * Timeout) ran out. */
  void (*time_limit)(pl_worker *w, int hard, double seconds);
  /* Worker thread, w->cancel_mu held or no interrupter at work (see
   * pl_executor_task_done): forget a cancel meant for the task that just
   * ended (or for an idle worker). */
  void (*reset)(pl_worker *w);
  /* Worker thread, last; `release`: call kind->release for the executor
   * too (this is the last worker of a pool that is shut down). */
  void (*worker_stop)(pl_worker *w, int release);
  /* Lock held, L a thread of e's state: let go of the executor-level data
   * (init function, ...).  Called once, when no worker will run again. */
  void (*release)(pl_executor *e, lua_State *L);
  /* Free the executor-level data (no Lua). */
  void (*destroy)(pl_executor *e);
} pl_kind_ops;

extern const pl_kind_ops pl_kind_threads;
extern const pl_kind_ops pl_kind_states;
extern const pl_kind_ops pl_kind_processes;

struct pl_worker {
  pl_executor *e;
  pl_worker *next;              /* guarded by e->list_mu */
  int index;                    /* 1, 2, ... within the pool */
  pl_tstate *ts;                /* set by kind->worker_start; may be NULL */
  pthread_mutex_t cancel_mu;
  atomic_int busy;              /* has a task: written by the worker thread
                                   (see pl_executor_task_done) */
  atomic_int interrupting;      /* set under cancel_mu while an interrupter
                                   looks at busy */
  void *kind;                   /* kind-private */
  pl_limitwatch limits;         /* the running task's time limits */
};

typedef struct pl_executor_stats {
  long long submitted, completed, failed, cancelled, queued, running;
  int workers, alive, idle;
} pl_executor_stats;

struct pl_executor {
  atomic_int refs;
  const pl_kind_ops *kind;
  void *kind_data;              /* kind-private, executor level */
  pl_family *fam;
  char name[32];                /* "Pool-N": workers are "Pool-N-Worker-M" */
  int max_workers;
  int max_tasks_per_worker;     /* states: recycle a worker's state after this
                                   many tasks (0: never); set before any submit */
  int64_t message_timeout_ns;   /* processes: a message begun must go on within
                                   this; set before any submit */
  int64_t start_timeout_ns;     /* processes: a new worker process is ready (its
                                   state made, init run) within this; set
                                   before any submit */
  pl_limits limits;             /* every task's, unless submitted with its own;
                                   set before any submit */
  atomic_int kill_workers;      /* processes: interrupts kill at once (kill_workers) */
  int max_restarts;             /* processes: restart intensity (kind_processes.c) */
  int64_t restart_window_ns;

  pthread_mutex_t mu;
  pthread_cond_t work;          /* a task was queued, or shutdown */
  pthread_cond_t gone;          /* a worker exited */
  pl_task *head, *tail;         /* guarded by mu */
  pl_task *spare;               /* guarded by mu: recycled tasks */
  int nspare;                   /* guarded by mu */
  atomic_long queued;           /* written under mu; read by spinning workers */
  atomic_int looking;           /* workers about to look for work, or spinning
                                   for it: they will see a task queued now */
  atomic_int spinners;          /* workers spinning for work now */
  atomic_int spin_cpu;          /* CPU of the worker spinning, or -1 */
  atomic_int submit_cpu;        /* CPU of the last submit, or -1 */
  int max_spinners;             /* at most this many spin at once */
  pl_spin_gauge spin_gauge;     /* whether workers' spins for work pay */
  atomic_int closed;            /* shutdown, readable without mu */
  atomic_int refusing;          /* shutdown or broken (set under mu) */
  atomic_uint interrupts;       /* bumped by every shutdown{interrupt=true} */
  atomic_int sleeping;          /* written under mu, read anywhere: workers asleep on work */
  int looping;                  /* guarded by mu: workers not out of their loop */
  int alive;                    /* guarded by mu: worker threads not yet gone */
  int started;                  /* guarded by mu: workers ever started */
  int shutdown;                 /* guarded by mu */
  int broken;                   /* guarded by mu */
  char *broken_msg;             /* guarded by mu */
  int released;                 /* guarded by mu: kind->release was called */
  pl_task init;                 /* the init function, packed; init.n < 0: none */

  pthread_mutex_t list_mu;
  pl_worker *workers;           /* guarded by list_mu */

  atomic_llong submitted, completed, failed, cancelled, running;
  pl_closer *closer;            /* guarded by fam->rt->mu */
};

/* A new executor of `kind` for the state family `fam`, not yet running
 * anything, registered as a closer of the runtime.  NULL when out of
 * memory.  `init` (if any) is set next with pl_executor_set_init. */
pl_executor *pl_executor_new(const pl_kind_ops *kind, pl_family *fam, int max_workers,
                             const char *name);
/* [-1, +0] the function on top of L becomes the pool's init. */
void pl_executor_set_init(pl_executor *e, lua_State *L);
void pl_executor_incref(pl_executor *e);
void pl_executor_decref(pl_executor *e);

/* [-(n+1), +0] Submit [fn, v1..vn] from the top of L (lock held).  0 and
 * *out a future with a reference for the caller, or PL_ESHUTDOWN,
 * PL_EBROKENPOOL (a worker's init failed), PL_ENOMEM or PL_ENOTHREAD (no
 * worker could be started) (the values are popped either way; may raise through kind->pack). */
/* `limits`: the task's time limits, or NULL for the pool's. */
int pl_executor_submit(pl_executor *e, lua_State *L, int mode, int n, const pl_limits *limits,
                       pl_future **out);
/* Worker thread: the task starts now; its time limits run from here (the
 * kind calls it where the task really begins).  pl_executor_task_done
 * stops them. */
void pl_executor_arm_limits(pl_worker *w, const pl_task *t);

/* Lock held.  0, PL_ESELF (nothing done), or PL_ECANCELLED when the
 * caller was cancelled while it waited (the shutdown itself happened). */
int pl_executor_shutdown(pl_executor *e, lua_State *L, int wait, int cancel_futures,
                         int interrupt);
/* The pool is unreachable (its box was collected): shut down without
 * waiting; queued tasks still run to completion. */
void pl_executor_abandon(pl_executor *e, lua_State *L);
void pl_executor_stats_get(pl_executor *e, pl_executor_stats *out);
/* The message of a broken pool (malloc'd copy), or NULL. */
char *pl_executor_broken(pl_executor *e);

/* For kinds. */
/* Mark the pool broken (a worker's init failed): submits are refused and
 * every task still to run fails; `msg` says why. */
void pl_executor_break(pl_executor *e, const char *msg);
/* A task has ended with `outcome` (PL_TASK_*): count it and make w
 * interruptible no more.  Call before finishing the future.  `looking`:
 * w goes straight back for work (0 when it still has callbacks to run:
 * then call pl_executor_looking after them, so that a task submitted
 * meanwhile wakes or starts another worker instead of waiting for them). */
void pl_executor_task_done(pl_worker *w, int outcome, int looking);
void pl_executor_looking(pl_worker *w);
/* Worker thread: the worker's tstate, from kind->worker_start; NULL again
 * before kind->worker_stop frees it. */
void pl_executor_set_tstate(pl_worker *w, pl_tstate *ts);
/* Lock held, L a thread of e's state: kind->release, drop init, and let
 * the runtime forget the pool; for kind->worker_stop when `release`. */
void pl_executor_release(pl_executor *e, lua_State *L);
/* [-1, +k] unpack the starmap item on top without metamethods (which
 * could run code where a kind cannot afford it): k arguments.  An item
 * that is not a table or holds too many to push raises when `raise`, else
 * gives no arguments (for a caller outside a protected call). */
int pl_task_unpack_args(lua_State *L, int raise);
/* [-0, +0] (raises) a chunk of map/starmap: the function at index fn,
 * its items above it up to the top; each item is replaced by the first
 * result of fn(item) -- fn(unpack(item)) for PL_TASK_STARMAP. */
void pl_task_map_items(lua_State *L, int fn, int mode);
/* [-2, +1] (protected) the BrokenPool error for init error (1) whose
 * traceback is the string (2): its first line is the message, made by the
 * handler with the error's __tostring, so no code runs here. */
int pl_task_broken_init(lua_State *L);
/* [-2, +1] (protected) for a task's error value (1) that could not be
 * encoded because of `why` (2): a Transfer error carrying the text of both. */
int pl_task_unsendable_error(lua_State *L);
/* For the serving loops of worker processes and ranks (procworker.c,
 * mpiworker.c), which send a failed task's error back encoded:
 * [-1, +0] encode the error value on top (popped) by calling
 * encode(value, ud) protected -- the value itself, else a Transfer error
 * carrying its text, else at worst a plain string -- and
 * [-1, +1] replace a failed init's error value on top with the pool's
 * BrokenPool error (pl_task_broken_init; tb its traceback). */
void pl_task_encode_error(lua_State *L, lua_CFunction encode, void *ud);
void pl_task_init_error(lua_State *L, const char *tb);
static inline int pl_executor_has_work(pl_executor *e) {
  return atomic_load_explicit(&e->queued, memory_order_relaxed) > 0;
}

#endif
