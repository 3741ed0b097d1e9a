/* The life cycle of a par.thread's OS thread (see thread.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/sigint.h"
#include "core/enter.h"
#include "core/errors.h"
#include "core/progress.h"
#include "core/thread.h"
#include "sync/held.h"

pl_thread *pl_thread_new(pl_family *fam, const char *name, int daemon) {
  pl_thread *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  if (pthread_mutex_init(&t->mu, NULL) != 0) goto no_mutex;
  if (pl_cond_init(&t->cv) != 0) goto no_cond;
  atomic_init(&t->refs, 1);
  t->state = PL_THREAD_NEW;
  t->co_ref = LUA_NOREF;
  t->fam = fam;
  t->daemon = daemon;
  t->has_box = 1;
  if (name != NULL)
    snprintf(t->name, sizeof t->name, "%s", name);
  else
    snprintf(t->name, sizeof t->name, "Thread-%d", atomic_fetch_add(&fam->rt->thread_counter, 1) + 1);
  return t;
no_cond:
  pthread_mutex_destroy(&t->mu);
no_mutex:
  free(t);
  return NULL;
}

void pl_thread_unref(pl_thread *t) {
  if (atomic_fetch_sub(&t->refs, 1) != 1) return;
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

int pl_thread_state(pl_thread *t) {
  pthread_mutex_lock(&t->mu);
  int s = t->state;
  pthread_mutex_unlock(&t->mu);
  return s;
}

void pl_thread_report_uncollected(pl_thread *t) {
  if (t->ok || t->collected) return;
  t->collected = 1;
  const char *tb = lua_tostring(t->co, 2);
  pl_stderr_claim();  /* not on a progress bar's line */
  fprintf(stderr, "Exception in thread %s:\n%s\n", t->name, tb != NULL ? tb : "?");
  fflush(stderr);
}

void pl_thread_release_stack(pl_thread *t, lua_State *L) {
  if (t->co_ref == LUA_NOREF) return;
  luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
  t->co_ref = LUA_NOREF;
  t->co = NULL;
}

int pl_os_thread_start(void *(*fn)(void *), void *arg, size_t stack) {
  pl_sigint_thread_starting();
  pthread_attr_t attr;
  pthread_t tid;
  if (pthread_attr_init(&attr) != 0) return EAGAIN;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (stack != 0) pthread_attr_setstacksize(&attr, stack);
  int err = pthread_create(&tid, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  return err;
}

static void *thread_main(void *arg) {
  pl_thread *t = arg;
  pl_family *fam = t->fam;
  parlua *rt = fam->rt;
  pl_sigint_thread_runs(rt);
  pl_tstate *ts = t->prepared;
  t->prepared = NULL;
  pl_attach_prepared(ts);
  ts->thread = t;

  pthread_mutex_lock(&t->mu);
  t->ts = ts;
  t->ident = (long)syscall(SYS_gettid);
  t->started = 1;
  if (t->pending_cancel) pl_tstate_cancel(ts, t->pending_cancel, 0);
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);

  pl_take_lock(ts, t->co, 1);
  t->ok = pl_pcall_traced(t->co, t->nargs, LUA_MULTRET) == LUA_OK;
  pl_held_end(ts);  /* the rule of forced cancellation */
  /* Ended by the cancel it was asked for (t:cancel, an interrupt, the
   * runtime stopping a daemon): whoever asked knows, nothing to report. */
  if (!t->ok && pl_tstate_cancel_level(ts) != 0 && pl_error_is(t->co, 1, PL_CANCELLED)) t->collected = 1;
  if (!t->has_box) {
    pl_thread_report_uncollected(t);
    pl_thread_release_stack(t, fam->L);
  }
  pl_tstate_set_running(ts, NULL);  /* before anyone can see it done */

  pthread_mutex_lock(&t->mu);
  t->state = PL_THREAD_DONE;
  t->ts = NULL;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);

  pl_drop_lock(ts, PL_GIL_THREAD_END);
  pl_detach(ts);
  if (pl_runtime_remove_closer(rt, &t->closer)) pl_thread_unref(t);
  pl_thread_unref(t);
  pl_runtime_thread_exit(rt);
  return NULL;
}

int pl_thread_wait(lua_State *L, pl_thread *t, int64_t deadline) {
  int rc = PL_OK, done;
  pl_tstate *ts = pl_unlock(L, PL_GIL_JOIN);
  pl_wait_begin(ts, &t->mu, &t->cv);
  pthread_mutex_lock(&t->mu);
  while (t->state != PL_THREAD_DONE && rc == PL_OK) rc = pl_wait(ts, &t->mu, &t->cv, deadline);
  done = t->state == PL_THREAD_DONE;
  pthread_mutex_unlock(&t->mu);
  pl_wait_end(ts);
  pl_lock(L, ts);
  if (!done && rc == PL_ECANCELLED) pl_check_cancel(L, ts);
  return done;
}

/* The runtime's closer: wait for the thread (cancel it first if a daemon). */
static void thread_close(void *ud, lua_State *L) {
  pl_thread *t = ud;
  if (t->daemon) {
    pthread_mutex_lock(&t->mu);
    if (t->ts != NULL) pl_tstate_cancel(t->ts, PL_CANCEL_FORCED, 0);
    pthread_mutex_unlock(&t->mu);
  }
  while (!pl_thread_wait(L, t, INT64_MAX)) {
  }
  pl_thread_unref(t);
}

static void back_to_new(pl_thread *t) {
  pthread_mutex_lock(&t->mu);
  t->state = PL_THREAD_NEW;
  pthread_mutex_unlock(&t->mu);
}

int pl_thread_start(lua_State *L, pl_thread *t) {
  parlua *rt = t->fam->rt;
  pthread_mutex_lock(&t->mu);
  if (t->state != PL_THREAD_NEW) {
    pthread_mutex_unlock(&t->mu);
    return PL_ESTARTED;
  }
  t->state = PL_THREAD_RUNNING;
  pthread_mutex_unlock(&t->mu);
  /* Its tstate is made here: the new thread has nobody to tell that there
   * was no memory for it. */
  t->prepared = pl_prepare(t->fam, t->name);
  if (t->prepared == NULL) {
    back_to_new(t);
    return PL_ENOMEM;
  }
  atomic_fetch_add(&t->refs, 2);  /* the OS thread's and the closer's */
  int rc = pl_runtime_add_closer(rt, &t->closer, t->daemon ? PL_CLOSE_DAEMONS : PL_CLOSE_THREADS,
                                 thread_close, t);
  if (rc != 0) {
    atomic_fetch_sub(&t->refs, 2);
    pl_tstate_free(t->prepared);
    t->prepared = NULL;
    back_to_new(t);
    return rc;
  }
  pl_runtime_thread_enter(rt);
  int err = pl_os_thread_start(thread_main, t, 0);
  if (err != 0) {
    pl_tstate_free(t->prepared);
    t->prepared = NULL;
    pl_runtime_thread_exit(rt);
    if (pl_runtime_remove_closer(rt, &t->closer)) atomic_fetch_sub(&t->refs, 1);
    atomic_fetch_sub(&t->refs, 1);
    back_to_new(t);
    return -err;
  }
  /* Like Python, return once the thread exists (so t.ident is known). */
  pl_tstate *ts = pl_unlock(L, PL_GIL_JOIN);
  pthread_mutex_lock(&t->mu);
  while (!t->started) pthread_cond_wait(&t->cv, &t->mu);
  pthread_mutex_unlock(&t->mu);
  pl_lock(L, ts);
  return 0;
}

int pl_thread_cancel(pl_thread *t, int level) {
  pthread_mutex_lock(&t->mu);
  int live = t->state != PL_THREAD_DONE;
  if (t->state == PL_THREAD_NEW && level > t->pending_cancel) t->pending_cancel = level;
  if (t->ts != NULL) pl_tstate_cancel(t->ts, level, 0);
  pthread_mutex_unlock(&t->mu);
  return live;
}

int pl_thread_is(pl_thread *t, pl_tstate *me) {
  pthread_mutex_lock(&t->mu);
  int is = t->ts != NULL && t->ts == me;
  pthread_mutex_unlock(&t->mu);
  return is;
}
