/* The pool core: the task queue, the worker threads and their loop,
 * statistics, shutdown (see executor.h for the design and lock order).
 *
 * Hand-off.  A task is a small record recycled through a free list, so a
 * submit allocates only its future.  A submit wakes a sleeping worker only
 * when the looking ones cannot take every queued task; a worker that finds
 * the queue empty spins on the `queued` word before it sleeps.  In a loop
 * of submit and result one worker thus does all the work, never sleeps,
 * and the submitter never signals a condition variable.  When it does
 * (a batch of submits outruns the looking workers), it signals after
 * letting mu go, and mu spins briefly before it sleeps: the submitter
 * and the workers then meet on it without futex calls.  The count of
 * looking workers may be stale in either direction for an instant; that
 * only costs a spurious wake-up or a sleeper left asleep while a looking
 * worker takes the task, never a lost task: a worker looks at the queue
 * under mu before it sleeps, after any submit that could have missed it.
 *
 * Interrupts.  shutdown{interrupt=true} bumps `interrupts` under mu, then
 * interrupts every busy worker under its cancel_mu.  A worker that took
 * its task before the bump but became busy after the scan sees the bump
 * itself and interrupts its own task, so no task that was taken when
 * shutdown was called escapes; the tasks still queued are cancelled.
 */
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/debug.h"
#include "lauxlib.h"
#include "core/clock.h"
#include "core/enter.h"
#include "core/errors.h"
#include "core/sigint.h"
#include "core/thread.h"
#include "pool/executor.h"

#define MAX_SPARE 256   /* recycled task records kept */
#define PAUSE_NS 20000  /* of an idle worker's spin, this long with the CPU's pause */

static void *worker_main(void *arg);

static void executor_close(void *ud, lua_State *L);

pl_executor *pl_executor_new(const pl_kind_ops *kind, pl_family *fam, int max_workers,
                             const char *name) {
  pl_executor *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  /* Held for a few instructions by the submitter and every worker: a
   * thread that finds it taken spins instead of sleeping (a batch of
   * submits then costs no futex calls for it). */
  if (pl_spin_mutex_init(&e->mu) != 0) goto no_mu;
  if (pthread_mutex_init(&e->list_mu, NULL) != 0) goto no_list_mu;
  if (pl_cond_init(&e->work) != 0) goto no_work;
  if (pl_cond_init(&e->gone) != 0) goto no_gone;
  e->kind = kind;
  e->fam = fam;
  e->max_workers = max_workers;
  snprintf(e->name, sizeof e->name, "%s", name);
  e->init.n = -1;
  atomic_init(&e->refs, 2);  /* the caller's and the closer's */
  atomic_init(&e->queued, 0);
  atomic_init(&e->looking, 0);
  atomic_init(&e->sleeping, 0);
  atomic_init(&e->spinners, 0);
  atomic_init(&e->spin_cpu, -1);
  pl_spin_gauge_init(&e->spin_gauge);
  atomic_init(&e->submit_cpu, -1);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  e->max_spinners = ncpu > 3 ? (int)(ncpu / 2) : 1;
  atomic_init(&e->closed, 0);
  atomic_init(&e->refusing, 0);
  atomic_init(&e->interrupts, 0);
  atomic_init(&e->kill_workers, 0);
  atomic_init(&e->submitted, 0);
  atomic_init(&e->completed, 0);
  atomic_init(&e->failed, 0);
  atomic_init(&e->cancelled, 0);
  atomic_init(&e->running, 0);
  if (kind->setup(e) != 0) goto no_kind;
  if (pl_runtime_add_closer(fam->rt, &e->closer, PL_CLOSE_POOLS, executor_close, e) != 0) {
    kind->destroy(e);
    goto no_kind;
  }
  return e;
no_kind:
  pthread_cond_destroy(&e->gone);
no_gone:
  pthread_cond_destroy(&e->work);
no_work:
  pthread_mutex_destroy(&e->list_mu);
no_list_mu:
  pthread_mutex_destroy(&e->mu);
no_mu:
  free(e);
  return NULL;
}

void pl_executor_set_init(pl_executor *e, lua_State *L) {
  pl_task t;
  memset(&t, 0, sizeof t);
  t.mode = PL_TASK_INIT;
  t.n = 0;
  e->kind->pack(e, L, &t);
  e->init = t;
}

void pl_executor_incref(pl_executor *e) { atomic_fetch_add(&e->refs, 1); }

void pl_executor_decref(pl_executor *e) {
  if (atomic_fetch_sub(&e->refs, 1) != 1) return;
  e->kind->destroy(e);
  while (e->spare != NULL) {
    pl_task *t = e->spare;
    e->spare = t->next;
    free(t);
  }
  free(e->broken_msg);
  pthread_cond_destroy(&e->gone);
  pthread_cond_destroy(&e->work);
  pthread_mutex_destroy(&e->list_mu);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

/* ---- the queue ------------------------------------------------------- */

static pl_task *pop_locked(pl_executor *e) {
  PL_ASSERT_HELD(&e->mu);
  pl_task *t = e->head;
  if (t == NULL) return NULL;
  e->head = t->next;
  if (e->head == NULL) e->tail = NULL;
  atomic_store_explicit(&e->queued, atomic_load(&e->queued) - 1, memory_order_relaxed);
  return t;
}

static void recycle_locked(pl_executor *e, pl_task *t, pl_task **to_free) {
  PL_ASSERT_HELD(&e->mu);
  if (e->nspare < MAX_SPARE) {
    t->next = e->spare;
    e->spare = t;
    e->nspare++;
  } else {
    *to_free = t;
  }
}

static void recycle(pl_executor *e, pl_task *t) {
  pl_task *to_free = NULL;
  pthread_mutex_lock(&e->mu);
  recycle_locked(e, t, &to_free);
  pthread_mutex_unlock(&e->mu);
  free(to_free);
}

/* ---- workers --------------------------------------------------------- */

/* Spin briefly, without mu, until a task is queued or the pool shuts down:
 * first with the CPU's pause, so a task queued now is taken within a
 * fraction of a microsecond, then yielding the CPU -- at once when the
 * last submitter runs on this worker's CPU (a busy machine), since it
 * cannot queue anything while we pause.  At most max_spinners
 * workers spin at once: one spinner takes the next task as fast as ten,
 * and on a machine with few cores more would only take CPU time from the
 * submitter (whose task they wait for) and from the worker running the
 * previous task.  The others sleep at once; a submit wakes them when the
 * looking workers cannot take every queued task. */
static int work_or_closed(const void *arg) {
  const pl_executor *e = arg;
  return atomic_load_explicit(&e->queued, memory_order_acquire) != 0 ||
         atomic_load_explicit(&e->closed, memory_order_relaxed);
}

static void spin_for_work(pl_executor *e) {
  if (!pl_spin_allowed() || !pl_spin_gauge_allows(&e->spin_gauge)) return;
  if (atomic_fetch_add(&e->spinners, 1) >= e->max_spinners) {
    atomic_fetch_sub(&e->spinners, 1);
    return;
  }
  atomic_store_explicit(&e->spin_cpu, sched_getcpu(), memory_order_relaxed);
  pl_spin_gauge_note(&e->spin_gauge, pl_spin_until(work_or_closed, e, PAUSE_NS, &e->submit_cpu));
  atomic_store_explicit(&e->spin_cpu, -1, memory_order_relaxed);
  atomic_fetch_sub(&e->spinners, 1);
}

static int start_worker(pl_executor *e, lua_State *L, int index) {
  parlua *rt = e->fam->rt;
  pl_worker *w = calloc(1, sizeof *w);
  if (w == NULL) return PL_ENOMEM;
  w->e = e;
  w->index = index;
  atomic_init(&w->busy, 0);
  atomic_init(&w->interrupting, 0);
  if (pthread_mutex_init(&w->cancel_mu, NULL) != 0) {
    free(w);
    return PL_ENOMEM;
  }
  if (e->kind->worker_new(w, L) != 0) {
    pthread_mutex_destroy(&w->cancel_mu);
    free(w);
    return PL_ENOMEM;
  }
  pthread_mutex_lock(&e->list_mu);
  w->next = e->workers;
  e->workers = w;
  pthread_mutex_unlock(&e->list_mu);
  pl_executor_incref(e);
  pl_runtime_thread_enter(rt);
  if (pl_os_thread_start(worker_main, w, 0) == 0) return 0;
  pl_runtime_thread_exit(rt);
  pthread_mutex_lock(&e->list_mu);
  for (pl_worker **p = &e->workers; *p != NULL; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      break;
    }
  }
  pthread_mutex_unlock(&e->list_mu);
  e->kind->worker_abandon(w, L);
  pthread_mutex_destroy(&w->cancel_mu);
  free(w);
  pl_executor_decref(e);
  return PL_ENOTHREAD;
}

void pl_executor_set_tstate(pl_worker *w, pl_tstate *ts) {
  pthread_mutex_lock(&w->e->list_mu);
  w->ts = ts;
  pthread_mutex_unlock(&w->e->list_mu);
}

/* Wait for a task; NULL once the pool is shut down and the queue empty.
 * The caller is counted in `looking`.  `done` (may be NULL) is the
 * previous task's record, recycled here under the same lock. */
static pl_task *take(pl_worker *w, pl_task *done) {
  pl_executor *e = w->e;
  pl_task *to_free = NULL, *t;
  unsigned seen;
  pthread_mutex_lock(&e->mu);
  if (done != NULL) recycle_locked(e, done, &to_free);
  t = pop_locked(e);
  seen = atomic_load(&e->interrupts);
  if (t == NULL && !e->shutdown) {
    pthread_mutex_unlock(&e->mu);
    free(to_free);
    to_free = NULL;
    e->kind->idle(w);
    spin_for_work(e);
    pl_wait_begin(w->ts, &e->mu, &e->work);
    pthread_mutex_lock(&e->mu);
    while ((t = pop_locked(e)) == NULL && !e->shutdown) {
      atomic_fetch_sub(&e->looking, 1);
      e->sleeping++;
      int rc = pl_wait(w->ts, &e->mu, &e->work, INT64_MAX);
      e->sleeping--;
      atomic_fetch_add(&e->looking, 1);
      if (rc == PL_ECANCELLED) {
        /* An interrupt of the whole runtime found this worker idle: it
         * meant nothing to it. */
        pthread_mutex_unlock(&e->mu);
        pthread_mutex_lock(&w->cancel_mu);
        e->kind->reset(w);
        pthread_mutex_unlock(&w->cancel_mu);
        pthread_mutex_lock(&e->mu);
      }
    }
    seen = atomic_load(&e->interrupts);
    atomic_fetch_sub(&e->looking, 1);
    pthread_mutex_unlock(&e->mu);
    pl_wait_end(w->ts);
  } else {
    atomic_fetch_sub(&e->looking, 1);
    pthread_mutex_unlock(&e->mu);
  }
  free(to_free);
  if (t == NULL) return NULL;
  atomic_store_explicit(&t->f->runner_cpu, sched_getcpu(), memory_order_relaxed);
  atomic_fetch_add(&e->running, 1);
  atomic_store(&w->busy, 1);
  /* A shutdown{interrupt=true} between taking the task and now may have
   * scanned the workers before this one was busy: then this load sees its
   * bump (both sides are sequentially consistent: busy, then interrupts;
   * interrupts, then busy). */
  if (atomic_load(&e->interrupts) != seen) {
    pthread_mutex_lock(&w->cancel_mu);
    e->kind->interrupt(w);
    pthread_mutex_unlock(&w->cancel_mu);
  }
  return t;
}

/* Called by the watcher, its mutex held (limits.h). */
static void fire_limit(pl_limitwatch *lw, int hard) {
  pl_worker *w = (pl_worker *)((char *)lw - offsetof(pl_worker, limits));
  pthread_mutex_lock(&w->cancel_mu);
  if (atomic_load(&w->busy)) w->e->kind->time_limit(w, hard, hard ? lw->limits.hard : lw->limits.soft);
  pthread_mutex_unlock(&w->cancel_mu);
}

void pl_executor_arm_limits(pl_worker *w, const pl_task *t) {
  w->limits.fire = fire_limit;
  (void)pl_limitwatch_arm(&w->limits, &t->limits);
}

void pl_executor_task_done(pl_worker *w, int outcome, int looking) {
  pl_executor *e = w->e;
  pl_limitwatch_disarm(&w->limits);  /* before the reset: no limit fires into the next task */
  switch (outcome) {
  case PL_TASK_OK: atomic_fetch_add(&e->completed, 1); break;
  case PL_TASK_FAILED: atomic_fetch_add(&e->failed, 1); break;
  default: atomic_fetch_add(&e->cancelled, 1); break;
  }
  atomic_fetch_sub(&e->running, 1);
  if (looking) atomic_fetch_add(&e->looking, 1);
  /* No interrupt may land after the reset.  An interrupter raises
   * `interrupting` before it looks at busy, this worker clears busy before
   * it looks at `interrupting`: one of them sees the other.  Only when an
   * interrupter may be at work does the reset wait for it (cancel_mu). */
  atomic_store(&w->busy, 0);
  if (atomic_load(&w->interrupting)) {
    pthread_mutex_lock(&w->cancel_mu);
    e->kind->reset(w);
    pthread_mutex_unlock(&w->cancel_mu);
  } else {
    e->kind->reset(w);
  }
}

void pl_executor_looking(pl_worker *w) { atomic_fetch_add(&w->e->looking, 1); }

static void *worker_main(void *arg) {
  pl_worker *w = arg;
  pl_executor *e = w->e;
  parlua *rt = e->fam->rt;
  pl_sigint_thread_runs(rt);
  e->kind->worker_start(w);
  pl_task *t = NULL;
  while ((t = take(w, t)) != NULL) {
    e->kind->run(w, t);
    pl_future_decref(t->f);
    t->f = NULL;
  }
  pthread_mutex_lock(&e->mu);
  e->looping--;
  int release = !e->released && e->shutdown && e->looping == 0;
  if (release) e->released = 1;
  pthread_mutex_unlock(&e->mu);
  e->kind->worker_stop(w, release);

  pthread_mutex_lock(&e->list_mu);
  for (pl_worker **p = &e->workers; *p != NULL; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      break;
    }
  }
  pthread_mutex_unlock(&e->list_mu);
  pthread_mutex_destroy(&w->cancel_mu);
  free(w);
  pthread_mutex_lock(&e->mu);
  e->alive--;
  pthread_cond_broadcast(&e->gone);
  pthread_mutex_unlock(&e->mu);
  pl_executor_decref(e);
  pl_runtime_thread_exit(rt);
  return NULL;
}

/* ---- submit ---------------------------------------------------------- */

static int refusal_locked(pl_executor *e) {
  PL_ASSERT_HELD(&e->mu);
  if (e->shutdown) return PL_ESHUTDOWN;
  if (e->broken) return PL_EBROKENPOOL;
  return 0;
}

int pl_executor_submit(pl_executor *e, lua_State *L, int mode, int n, const pl_limits *limits,
                       pl_future **out) {
  int err;
  /* Refuse before packing, so that the error says why (not a Transfer
   * error about a value that would never be sent). */
  if (atomic_load_explicit(&e->refusing, memory_order_relaxed)) {
    pthread_mutex_lock(&e->mu);
    err = refusal_locked(e);
    pthread_mutex_unlock(&e->mu);
    if (err != 0) {
      lua_pop(L, n + 1);
      return err;
    }
  }
  /* Pack before anything is made: a kind may refuse a value (kind states
   * raises a Transfer error), and then nothing is lost. */
  pl_task packed;
  memset(&packed, 0, sizeof packed);
  packed.mode = mode;
  packed.n = n;
  packed.limits = limits != NULL ? *limits : e->limits;
  e->kind->pack(e, L, &packed);
  pl_future *f = pl_future_new();
  if (f == NULL) {
    e->kind->drop(e, L, &packed);
    return PL_ENOMEM;
  }
  pthread_mutex_lock(&e->mu);
  pl_task *t = e->spare;
  if (t != NULL) {
    e->spare = t->next;
    e->nspare--;
  } else {
    pthread_mutex_unlock(&e->mu);
    t = malloc(sizeof *t);
    if (t == NULL) {
      e->kind->drop(e, L, &packed);
      pl_future_decref(f);
      return PL_ENOMEM;
    }
    pthread_mutex_lock(&e->mu);
  }
  *t = packed;
  t->f = f;
  pl_future_incref(f);  /* the task's */
  if ((err = refusal_locked(e)) != 0) {  /* shut down or broken while packing */
    pthread_mutex_unlock(&e->mu);
    e->kind->drop(e, L, t);
    pl_future_decref(f);
    pl_future_decref(f);
    recycle(e, t);
    return err;
  }
  t->next = NULL;
  /* For the spins (who runs where): the submitter's CPU, and the one of
   * the worker spinning for this task, if any. */
  atomic_store_explicit(&e->submit_cpu, sched_getcpu(), memory_order_relaxed);
  atomic_store_explicit(&f->runner_cpu, atomic_load_explicit(&e->spin_cpu, memory_order_relaxed),
                        memory_order_relaxed);
  if (e->tail != NULL) e->tail->next = t;
  else e->head = t;
  e->tail = t;
  long queued = atomic_load(&e->queued) + 1;
  atomic_store_explicit(&e->queued, queued, memory_order_release);
  int looking = atomic_load(&e->looking);
  int wake = e->sleeping > 0 && queued > looking;
  int spawn = queued > looking + e->sleeping && e->looping < e->max_workers;
  int index = 0;
  if (spawn) {
    atomic_fetch_add(&e->looking, 1);  /* the new worker looks first thing */
    e->looping++;
    e->alive++;
    index = ++e->started;
  }
  pthread_mutex_unlock(&e->mu);
  /* Signalled after the unlock: the worker woken does not find mu still
   * held and sleep again on it (a second wake-up, by our unlock). */
  if (wake) pthread_cond_signal(&e->work);
  atomic_fetch_add(&e->submitted, 1);

  if (spawn && (err = start_worker(e, L, index)) != 0) {
    pthread_mutex_lock(&e->mu);
    atomic_fetch_sub(&e->looking, 1);
    e->looping--;
    e->alive--;
    e->started--;
    /* With no worker at all nobody would ever run the task: take it back. */
    int orphaned = e->looping == 0;
    if (orphaned) {
      pl_task **p = &e->head;
      pl_task *prev = NULL;
      while (*p != NULL && *p != t) {
        prev = *p;
        p = &(*p)->next;
      }
      if (*p == t) {
        *p = t->next;
        if (e->tail == t) e->tail = prev;
        atomic_store(&e->queued, atomic_load(&e->queued) - 1);
      }
    }
    pthread_mutex_unlock(&e->mu);
    if (orphaned) {
      atomic_fetch_sub(&e->submitted, 1);
      int cancelled;
      pl_future_cb *cbs = pl_future_cancel(f, &cancelled);
      (void)cbs;  /* nobody could have added one yet */
      e->kind->drop(e, L, t);
      pl_future_decref(f);
      pl_future_decref(f);
      recycle(e, t);
      return err;
    }
  }
  *out = f;
  return 0;
}

/* ---- shutdown -------------------------------------------------------- */

void pl_executor_release(pl_executor *e, lua_State *L) {
  e->kind->release(e, L);
  if (e->init.n >= 0) {
    e->kind->drop(e, L, &e->init);
    e->init.n = -1;
  }
  if (pl_runtime_remove_closer(e->fam->rt, &e->closer)) pl_executor_decref(e);
}

/* Claim the release: no worker will run Lua for this pool again. */
static int claim_release_locked(pl_executor *e) {
  PL_ASSERT_HELD(&e->mu);
  if (e->released || !e->shutdown || e->looping > 0) return 0;
  e->released = 1;
  return 1;
}

static int on_own_worker(pl_executor *e, lua_State *L) {
  pl_tstate *me = pl_tstate_of(L);
  int own = 0;
  pthread_mutex_lock(&e->list_mu);
  for (pl_worker *w = e->workers; w != NULL && !own; w = w->next) own = me != NULL && w->ts == me;
  pthread_mutex_unlock(&e->list_mu);
  return own;
}

/* Wait, without the lock, until every worker thread is gone. */
static int wait_gone(pl_executor *e, lua_State *L, int interruptible) {
  int rc = PL_OK;
  pl_tstate *ts = pl_unlock(L, PL_GIL_POOL);
  pl_tstate *wts = interruptible ? ts : NULL;
  pl_wait_begin(wts, &e->mu, &e->gone);
  pthread_mutex_lock(&e->mu);
  while (e->alive > 0 && rc == PL_OK) rc = pl_wait(wts, &e->mu, &e->gone, INT64_MAX);
  if (e->alive == 0) rc = PL_OK;
  pthread_mutex_unlock(&e->mu);
  pl_wait_end(wts);
  pl_lock(L, ts);
  return rc;
}

static int shutdown_impl(pl_executor *e, lua_State *L, int wait, int cancel_futures,
                         int interrupt, int interruptible) {
  /* An interrupting shutdown lets no task run to completion unasked: what
   * is queued is cancelled, or it would start (and might never end) after
   * the running tasks were stopped. */
  if (interrupt) cancel_futures = 1;
  pthread_mutex_lock(&e->mu);
  e->shutdown = 1;
  atomic_store(&e->closed, 1);
  atomic_store(&e->refusing, 1);
  pthread_cond_broadcast(&e->work);
  pl_task *queue = NULL;
  if (cancel_futures) {
    queue = e->head;
    e->head = e->tail = NULL;
    atomic_store(&e->queued, 0);
  }
  if (interrupt) atomic_fetch_add(&e->interrupts, 1);
  int release = claim_release_locked(e);
  pthread_mutex_unlock(&e->mu);

  while (queue != NULL) {
    pl_task *t = queue;
    queue = t->next;
    int cancelled;
    pl_future_cb *cbs = pl_future_cancel(t->f, &cancelled);
    atomic_fetch_add(&e->cancelled, 1);
    e->kind->drop(e, L, t);
    pl_future_run_callbacks(L, t->f, cbs);
    pl_future_decref(t->f);
    recycle(e, t);
  }
  if (interrupt) {
    pthread_mutex_lock(&e->list_mu);
    for (pl_worker *w = e->workers; w != NULL; w = w->next) {
      pthread_mutex_lock(&w->cancel_mu);
      atomic_store(&w->interrupting, 1);
      if (atomic_load(&w->busy)) e->kind->interrupt(w);
      atomic_store(&w->interrupting, 0);
      pthread_mutex_unlock(&w->cancel_mu);
    }
    pthread_mutex_unlock(&e->list_mu);
  }
  int rc = 0;
  if (wait) {
    rc = wait_gone(e, L, interruptible);
    pthread_mutex_lock(&e->mu);
    release = release || claim_release_locked(e);
    pthread_mutex_unlock(&e->mu);
  }
  if (release) pl_executor_release(e, L);
  return rc;
}

int pl_executor_shutdown(pl_executor *e, lua_State *L, int wait, int cancel_futures,
                         int interrupt) {
  if (wait && on_own_worker(e, L)) return PL_ESELF;
  return shutdown_impl(e, L, wait, cancel_futures, interrupt, 1);
}

void pl_executor_abandon(pl_executor *e, lua_State *L) {
  shutdown_impl(e, L, 0, 0, 0, 0);
}

/* The runtime closes: wait for every task (cancel and interrupt them when
 * the runtime itself was interrupted, as by Ctrl-C). */
static void executor_close(void *ud, lua_State *L) {
  pl_executor *e = ud;
  int hard = atomic_load(&e->fam->rt->interrupted);
  shutdown_impl(e, L, 1, hard, hard, 0);
  pl_executor_decref(e);
}

/* ---- for the kinds' workers ------------------------------------------ */

int pl_task_unpack_args(lua_State *L, int raise) {
  int item = lua_gettop(L);
  if (!lua_istable(L, item)) {
    if (raise) return luaL_error(L, "a starmap item is not a table of arguments");
    lua_pop(L, 1);
    return 0;
  }
  lua_Integer k;
  lua_pushliteral(L, "n");
  if (lua_rawget(L, item) == LUA_TNUMBER && lua_isinteger(L, -1)) k = lua_tointeger(L, -1);
  else k = (lua_Integer)lua_rawlen(L, item);
  lua_pop(L, 1);
  if (k < 0) k = 0;
  if (k > 1000000 || !lua_checkstack(L, (int)k + 1)) {
    if (raise) return luaL_error(L, "too many arguments");
    lua_pop(L, 1);
    return 0;
  }
  for (lua_Integer i = 1; i <= k; i++) lua_rawgeti(L, item, i);
  lua_remove(L, item);
  return (int)k;
}

void pl_task_map_items(lua_State *L, int fn, int mode) {
  int top = lua_gettop(L);
  luaL_checkstack(L, 4, "running a map chunk");
  for (int j = fn + 1; j <= top; j++) {
    lua_pushvalue(L, fn);
    lua_pushvalue(L, j);
    int nargs = mode == PL_TASK_STARMAP ? pl_task_unpack_args(L, 1) : 1;
    lua_call(L, nargs, 1);
    lua_replace(L, j);
  }
}

int pl_task_broken_init(lua_State *L) {
  const char *tb = lua_tostring(L, 2);
  if (tb == NULL) tb = "(no message)";
  lua_pushlstring(L, tb, strcspn(tb, "\n"));
  pl_error_push(L, PL_BROKEN_POOL, "pool init failed: %s", lua_tostring(L, -1));
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "cause");
  return 1;
}

int pl_task_unsendable_error(lua_State *L) {
  const char *text = luaL_tolstring(L, 1, NULL);
  if (lua_istable(L, 2)) lua_getfield(L, 2, "message");
  else lua_pushvalue(L, 2);
  const char *why = lua_tostring(L, -1);
  pl_error_push(L, PL_TRANSFER, "%s (the error value cannot be sent back: %s)", text,
                why != NULL ? why : "?");
  return 1;
}

void pl_task_encode_error(lua_State *L, lua_CFunction encode, void *ud) {
  int err = lua_gettop(L);
  lua_pushcfunction(L, encode);
  lua_pushvalue(L, err);
  lua_pushlightuserdata(L, ud);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {  /* [err, why] */
    lua_pushcfunction(L, pl_task_unsendable_error);
    lua_insert(L, err);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
      lua_settop(L, err - 1);
      lua_pushliteral(L, "an error that cannot be sent back");
    }
    lua_pushcfunction(L, encode);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, ud);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
  }
  lua_settop(L, err - 1);
}

void pl_task_init_error(lua_State *L, const char *tb) {
  lua_pushcfunction(L, pl_task_broken_init);
  lua_insert(L, -2);
  lua_pushstring(L, tb != NULL ? tb : "(no message)");
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    pl_error_push(L, PL_BROKEN_POOL, "pool init failed");
  }
}

/* ---- state ----------------------------------------------------------- */

void pl_executor_stats_get(pl_executor *e, pl_executor_stats *out) {
  pthread_mutex_lock(&e->mu);
  out->queued = atomic_load(&e->queued);
  out->workers = e->max_workers;
  out->alive = e->alive;
  out->idle = e->sleeping + atomic_load(&e->looking);
  pthread_mutex_unlock(&e->mu);
  out->submitted = atomic_load(&e->submitted);
  out->completed = atomic_load(&e->completed);
  out->failed = atomic_load(&e->failed);
  out->cancelled = atomic_load(&e->cancelled);
  out->running = atomic_load(&e->running);
}

void pl_executor_break(pl_executor *e, const char *msg) {
  pthread_mutex_lock(&e->mu);
  if (!e->broken) {
    e->broken = 1;
    atomic_store(&e->refusing, 1);
    e->broken_msg = strdup(msg);
  }
  pthread_mutex_unlock(&e->mu);
}

char *pl_executor_broken(pl_executor *e) {
  pthread_mutex_lock(&e->mu);
  char *msg = e->broken && e->broken_msg != NULL ? strdup(e->broken_msg) : NULL;
  pthread_mutex_unlock(&e->mu);
  return msg;
}
