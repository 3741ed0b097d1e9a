/* Private to the parlua runtime: the life cycle of an OS thread that runs a
 * function of the shared state under the global lock (par.thread).
 *
 * The C object is shared by up to three owners, counted in `refs`: the Lua
 * box, the running OS thread, and the runtime's closer (which joins the
 * thread, or cancels a daemon, before the state closes).  The thread's Lua
 * stack is its own lua_State (lua_newthread), anchored in the registry
 * while the box exists or the thread runs; after it returns, that stack
 * holds its results, or [error, traceback].
 *
 * The one function that starts an OS thread for parlua is here too
 * (pl_os_thread_start).
 *
 * Lock order: the global lock, then t->mu (never the other way: t->mu is
 * not held while waiting for the lock).
 */
#ifndef PL_THREAD_H
#define PL_THREAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/runtime.h"

enum { PL_THREAD_NEW, PL_THREAD_RUNNING, PL_THREAD_DONE };

typedef struct pl_thread {
  atomic_int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv;      /* broadcast on start and on finish */
  int state;              /* guarded by mu: PL_THREAD_* */
  int started;            /* guarded by mu: ident is known */
  pl_tstate *ts;          /* guarded by mu: set while running */
  pl_tstate *prepared;    /* made by pl_thread_start, taken over by the thread */
  long ident;             /* guarded by mu */
  int pending_cancel;     /* guarded by mu: cancel() before start */
  char name[64];
  int daemon;
  pl_family *fam;
  pl_closer *closer;      /* guarded by fam->rt->mu */
  /* Guarded by the family's global lock: */
  lua_State *co;          /* its stack: the function and its arguments */
  int co_ref;             /* the anchor of co, or LUA_NOREF */
  int nargs;
  int ok;
  int collected;          /* result() saw the error, or it needs no report */
  int has_box;
} pl_thread;

/* Start fn(arg) on a detached OS thread with the calling thread's signal
 * mask; `stack` in bytes, or 0 for the default size.  0 or an errno.  Every
 * OS thread of parlua starts here (a par.thread, a pool worker, a
 * background thread), so the SIGINT watcher knows one may need it. */
int pl_os_thread_start(void *(*fn)(void *), void *arg, size_t stack);

/* A thread of fam, not started, with one reference (the box's); named
 * `name`, or Thread-N when NULL.  The caller sets co, co_ref and nargs.
 * NULL when out of memory. */
pl_thread *pl_thread_new(pl_family *fam, const char *name, int daemon);
void pl_thread_unref(pl_thread *t);
int pl_thread_state(pl_thread *t);

/* Lock held: start the OS thread and return once it exists (so its ident
 * is known), the lock given away meanwhile.  0, PL_ESTARTED (started
 * before), PL_ECLOSING (the runtime is closing), PL_ENOMEM, or -errno
 * (pthread_create failed); nothing changed unless 0. */
int pl_thread_start(lua_State *L, pl_thread *t);

/* Lock held: wait until t is done or the deadline passes, the lock given
 * away meanwhile.  1 when done; raises Cancelled when the caller was
 * cancelled. */
int pl_thread_wait(lua_State *L, pl_thread *t, int64_t deadline);

/* Cancel at `level` (PL_CANCEL_SOFT or PL_CANCEL_FORCED), now or, before
 * the start, as soon as it runs.  1 when it had not finished. */
int pl_thread_cancel(pl_thread *t, int level);

/* 1 when t is the thread whose tstate is `me` (it cannot wait for itself). */
int pl_thread_is(pl_thread *t, pl_tstate *me);

/* Lock held, t done: an error nobody collected goes to stderr, as
 * Python's threading does; then its stack may go. */
void pl_thread_report_uncollected(pl_thread *t);
void pl_thread_release_stack(pl_thread *t, lua_State *L);

#endif
