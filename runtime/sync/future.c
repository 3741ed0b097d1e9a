/* Futures and waiters (see future.h for the design). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/debug.h"
#include "core/clock.h"
#include "core/spin.h"
#include "sync/future.h"

/* The first PAUSE_NS of a waiter's spin use the CPU's pause, so a trivial
 * task's result is seen the moment it arrives (spin.h). */
#define PAUSE_NS 5000

typedef struct { atomic_int *word; int value; } word_is;

static int word_changed(const void *arg) {
  const word_is *w = arg;
  return atomic_load_explicit(w->word, memory_order_acquire) != w->value;
}

/* Spin until *word != value (1 when it changed within the budget). */
static int spin_while(atomic_int *word, int value, const atomic_int *peer_cpu) {
  const word_is w = {word, value};
  return pl_spin_until(word_changed, &w, PAUSE_NS, peer_cpu);
}

pl_future *pl_future_new(void) {
  pl_future *f = malloc(sizeof *f);
  if (f == NULL) return NULL;
  if (pthread_mutex_init(&f->mu, NULL) != 0) {
    free(f);
    return NULL;
  }
  atomic_init(&f->refs, 1);
  atomic_init(&f->state, PL_FUTURE_PENDING);
  f->cv_ready = 0;
  f->outcome = PL_OUTCOME_NONE;
  f->orphan = 0;
  f->sleepers = 0;
  memset(&f->value, 0, sizeof f->value);
  f->traceback = NULL;
  f->links = NULL;
  f->callbacks = NULL;
  atomic_init(&f->has_callbacks, 0);
  atomic_init(&f->runner_cpu, -1);
  return f;
}

void pl_future_incref(pl_future *f) {
  atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void pl_future_decref(pl_future *f) {
  if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
  /* Every holder orphans the future before letting go of it, so a value
   * is left only if it never had one (a failed submit); free what can be
   * freed without a state. */
  if (f->value.ops != NULL) f->value.ops->free(NULL, &f->value);
  free(f->traceback);
  if (f->cv_ready) pthread_cond_destroy(&f->cv);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* Lock-free: only cancel competes for PENDING, and it changes the state
 * with the same compare-and-swap (under mu, for its waiters). */
int pl_future_set_running_or_notify_cancel(pl_future *f) {
  int expected = PL_FUTURE_PENDING;
  return atomic_compare_exchange_strong_explicit(&f->state, &expected, PL_FUTURE_RUNNING,
                                                 memory_order_acq_rel, memory_order_acquire);
}

/* Holding mu. */
static int store_locked(pl_future *f, int outcome, const pl_value *v, char *traceback) {
  PL_ASSERT_HELD(&f->mu);
  int taken = !f->orphan;
  f->outcome = outcome;
  if (taken) {
    if (v != NULL) f->value = *v;
    f->traceback = traceback;
  }
  return taken;
}

static int no_memory_push(lua_State *L, const pl_value *v) {
  (void)v;
  lua_pushliteral(L, "not enough memory");
  return 1;
}

static void no_memory_free(lua_State *L, pl_value *v) {
  (void)L;
  v->ops = NULL;
}

static const pl_value_ops no_memory_ops = {no_memory_push, no_memory_free};

void pl_value_no_memory(pl_value *v) {
  memset(v, 0, sizeof *v);
  v->ops = &no_memory_ops;
}

int pl_future_store(pl_future *f, int outcome, const pl_value *v, char *traceback) {
  pthread_mutex_lock(&f->mu);
  int taken = store_locked(f, outcome, v, traceback);
  pthread_mutex_unlock(&f->mu);
  return taken;
}

/* Put id on w's ready ring; holding w->mu, with room reserved. */
static void record_locked(pl_waiter *w, size_t id, int failed) {
  PL_ASSERT_HELD(&w->mu);
  w->ready[(w->first + w->len) % w->cap] = id;
  w->len++;
  w->finished++;
  if (failed) w->failed++;
  if (w->sleeping > 0) pthread_cond_signal(&w->cv);
}

/* Tell every armed waiter that f is done; holding f->mu.  A link is done
 * with before its id is recorded: once the waiter can pop the id, its
 * owner may reuse the link's storage (imap_unordered does) for another
 * future at once. */
static void fire_links_locked(pl_future *f, int failed) {
  PL_ASSERT_HELD(&f->mu);
  pl_waitlink *l = f->links;
  f->links = NULL;
  while (l != NULL) {
    pl_waitlink *next = l->next;
    pl_waiter *w = l->w;
    size_t id = l->id;
    l->armed = 0;
    pthread_mutex_lock(&w->mu);
    w->armed--;
    record_locked(w, id, failed);
    pthread_mutex_unlock(&w->mu);
    l = next;
  }
}

/* The state is already final; tell everyone. */
static pl_future_cb *notify_locked(pl_future *f, int state) {
  PL_ASSERT_HELD(&f->mu);
  if (f->links != NULL)
    fire_links_locked(f, state == PL_FUTURE_FINISHED && f->outcome == PL_OUTCOME_ERROR);
  if (f->sleepers > 0) pthread_cond_broadcast(&f->cv);
  pl_future_cb *cbs = f->callbacks;
  f->callbacks = NULL;
  return cbs;
}

pl_future_cb *pl_future_finish(pl_future *f) {
  pthread_mutex_lock(&f->mu);
  atomic_store_explicit(&f->state, PL_FUTURE_FINISHED, memory_order_release);
  pl_future_cb *cbs = notify_locked(f, PL_FUTURE_FINISHED);
  pthread_mutex_unlock(&f->mu);
  return cbs;
}

pl_future_cb *pl_future_complete(pl_future *f, int outcome, const pl_value *v, char *traceback,
                                 int *taken) {
  pthread_mutex_lock(&f->mu);
  *taken = store_locked(f, outcome, v, traceback);
  atomic_store_explicit(&f->state, PL_FUTURE_FINISHED, memory_order_release);
  pl_future_cb *cbs = notify_locked(f, PL_FUTURE_FINISHED);
  pthread_mutex_unlock(&f->mu);
  return cbs;
}

pl_future_cb *pl_future_cancel(pl_future *f, int *cancelled) {
  pl_future_cb *cbs = NULL;
  pthread_mutex_lock(&f->mu);
  int s = PL_FUTURE_PENDING;
  if (atomic_compare_exchange_strong(&f->state, &s, PL_FUTURE_CANCELLED)) {
    cbs = notify_locked(f, PL_FUTURE_CANCELLED);
    *cancelled = 1;
  } else {
    *cancelled = s == PL_FUTURE_CANCELLED;
  }
  pthread_mutex_unlock(&f->mu);
  return cbs;
}

int pl_future_add_callback(pl_future *f, pl_future_cb *cb) {
  pthread_mutex_lock(&f->mu);
  int done = atomic_load(&f->state) >= PL_FUTURE_FINISHED;
  if (!done) {  /* appended: callbacks run in the order they were added */
    pl_future_cb **p = &f->callbacks;
    while (*p != NULL) p = &(*p)->next;
    cb->next = NULL;
    *p = cb;
    atomic_store_explicit(&f->has_callbacks, 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&f->mu);
  return done;
}

/* Callbacks are never removed before the future is done, so the flag
 * that add_callback raises is enough: no lock. */
int pl_future_has_callbacks(pl_future *f) {
  return atomic_load_explicit(&f->has_callbacks, memory_order_relaxed);
}

void pl_future_run_callbacks(lua_State *L, pl_future *f, pl_future_cb *list) {
  while (list != NULL) {
    pl_future_cb *next = list->next;
    list->run(L, f, list);
    list = next;
  }
}

void pl_future_orphan(pl_future *f, lua_State *L) {
  pl_value v;
  if (pl_future_state(f) == PL_FUTURE_FINISHED) {
    /* Nobody stores or reads `orphan` any more: no lock (see push). */
    f->orphan = 1;
    v = f->value;
    f->value.ops = NULL;
  } else {
    pthread_mutex_lock(&f->mu);
    f->orphan = 1;
    v = f->value;
    f->value.ops = NULL;
    pthread_mutex_unlock(&f->mu);
  }
  if (v.ops != NULL) v.ops->free(L, &v);
}

/* Once FINISHED (read with acquire: the completer wrote the outcome
 * before it released the state), outcome and traceback never change, and
 * the value changes only through the holder -- the caller: no lock. */
int pl_future_push(lua_State *L, pl_future *f) {
  pl_value v;
  if (pl_future_state(f) == PL_FUTURE_FINISHED) {
    v = f->value;
  } else {
    pthread_mutex_lock(&f->mu);
    v = f->value;
    pthread_mutex_unlock(&f->mu);
  }
  if (v.ops == NULL) return 0;
  return v.ops->push(L, &v);
}

int pl_future_outcome(pl_future *f) {
  if (pl_future_state(f) == PL_FUTURE_FINISHED) return f->outcome;
  pthread_mutex_lock(&f->mu);
  int o = f->outcome;
  pthread_mutex_unlock(&f->mu);
  return o;
}

const char *pl_future_traceback(pl_future *f) {
  return pl_future_state(f) == PL_FUTURE_FINISHED ? f->traceback : NULL;
}

int pl_future_wait(pl_future *f, pl_tstate *ts, int64_t deadline) {
  if (pl_future_done(f)) return PL_OK;
  /* Each waiting thread learns for itself whether its spins pay. */
  static _Thread_local pl_spin_gauge gauge = {0, 1};
  if ((deadline == INT64_MAX || deadline > pl_now_ns()) && pl_spin_gauge_allows(&gauge)) {
    int paid = spin_while(&f->state, PL_FUTURE_PENDING, &f->runner_cpu) &&
               spin_while(&f->state, PL_FUTURE_RUNNING, &f->runner_cpu);
    pl_spin_gauge_note(&gauge, paid);
    if (pl_future_done(f)) return PL_OK;
  }
  int rc = PL_OK;
  /* The condition variable is made by the first thread that sleeps: most
   * futures never need one. */
  pthread_mutex_lock(&f->mu);
  if (!f->cv_ready && pl_future_state(f) < PL_FUTURE_FINISHED) {
    if (pl_cond_init(&f->cv) != 0) {  /* out of resources: poll instead */
      pthread_mutex_unlock(&f->mu);
      while (!pl_future_done(f) && rc == PL_OK) {
        pl_spin_pause();
        if (pl_now_ns() >= deadline) rc = PL_ETIMEOUT;
        else if (ts != NULL && pl_tstate_cancel_level(ts) == PL_CANCEL_FORCED)
          rc = PL_ECANCELLED;
      }
      return pl_future_done(f) ? PL_OK : rc;
    }
    f->cv_ready = 1;
  }
  pthread_mutex_unlock(&f->mu);
  if (pl_future_done(f)) return PL_OK;
  pl_wait_begin(ts, &f->mu, &f->cv);
  pthread_mutex_lock(&f->mu);
  f->sleepers++;
  while (atomic_load(&f->state) < PL_FUTURE_FINISHED && rc == PL_OK)
    rc = pl_wait(ts, &f->mu, &f->cv, deadline);
  f->sleepers--;
  if (atomic_load(&f->state) >= PL_FUTURE_FINISHED) rc = PL_OK;
  pthread_mutex_unlock(&f->mu);
  pl_wait_end(ts);
  return rc;
}

/* ---- waiters --------------------------------------------------------- */

pl_waiter *pl_waiter_new(void) {
  pl_waiter *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  if (pthread_mutex_init(&w->mu, NULL) != 0) goto no_mu;
  if (pl_cond_init(&w->cv) != 0) goto no_cv;
  return w;
no_cv:
  pthread_mutex_destroy(&w->mu);
no_mu:
  free(w);
  return NULL;
}

void pl_waiter_free(pl_waiter *w) {
  if (w == NULL) return;
  free(w->ready);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

/* Room in the ring for every id that may still arrive; holding w->mu. */
static int reserve_locked(pl_waiter *w) {
  PL_ASSERT_HELD(&w->mu);
  size_t need = w->len + w->armed + 1;
  if (need <= w->cap) return 0;
  size_t ncap = w->cap != 0 ? w->cap * 2 : 16;
  while (ncap < need) ncap *= 2;
  size_t *ready = malloc(ncap * sizeof *ready);
  if (ready == NULL) return -1;
  for (size_t i = 0; i < w->len; i++) ready[i] = w->ready[(w->first + i) % w->cap];
  free(w->ready);
  w->ready = ready;
  w->cap = ncap;
  w->first = 0;
  return 0;
}

int pl_waiter_watch(pl_waiter *w, pl_future *f, pl_waitlink *link, size_t id) {
  link->w = w;
  link->id = id;
  link->armed = 0;
  link->next = NULL;
  pthread_mutex_lock(&f->mu);
  pthread_mutex_lock(&w->mu);
  if (reserve_locked(w) != 0) {
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_unlock(&f->mu);
    return -1;
  }
  int s = atomic_load(&f->state);
  if (s >= PL_FUTURE_FINISHED) {  /* done already: recorded at once */
    record_locked(w, id, s == PL_FUTURE_FINISHED && f->outcome == PL_OUTCOME_ERROR);
  } else {
    w->armed++;
    link->armed = 1;
    link->next = f->links;
    f->links = link;
  }
  pthread_mutex_unlock(&w->mu);
  pthread_mutex_unlock(&f->mu);
  return 0;
}

void pl_waiter_unwatch(pl_waiter *w, pl_future *f, pl_waitlink *link) {
  pthread_mutex_lock(&f->mu);
  if (link->armed) {
    for (pl_waitlink **p = &f->links; *p != NULL; p = &(*p)->next) {
      if (*p == link) {
        *p = link->next;
        break;
      }
    }
    link->armed = 0;
    pthread_mutex_lock(&w->mu);
    w->armed--;
    pthread_mutex_unlock(&w->mu);
  }
  pthread_mutex_unlock(&f->mu);
}

static int satisfied_locked(pl_waiter *w, size_t target, int stop_on_error) {
  PL_ASSERT_HELD(&w->mu);
  return w->finished >= target || (stop_on_error && w->failed > 0);
}

int pl_waiter_wait(pl_waiter *w, pl_tstate *ts, int64_t deadline, size_t target, int stop_on_error) {
  int rc = PL_OK;
  pl_wait_begin(ts, &w->mu, &w->cv);
  pthread_mutex_lock(&w->mu);
  w->sleeping++;
  while (!satisfied_locked(w, target, stop_on_error) && rc == PL_OK)
    rc = pl_wait(ts, &w->mu, &w->cv, deadline);
  w->sleeping--;
  if (satisfied_locked(w, target, stop_on_error)) rc = PL_OK;
  pthread_mutex_unlock(&w->mu);
  pl_wait_end(ts);
  return rc;
}

int pl_waiter_pop(pl_waiter *w, size_t *id) {
  pthread_mutex_lock(&w->mu);
  int got = w->len > 0;
  if (got) {
    *id = w->ready[w->first];
    w->first = (w->first + 1) % w->cap;
    w->len--;
  }
  pthread_mutex_unlock(&w->mu);
  return got;
}

void pl_waiter_counts(pl_waiter *w, size_t *finished, size_t *failed) {
  pthread_mutex_lock(&w->mu);
  if (finished != NULL) *finished = w->finished;
  if (failed != NULL) *failed = w->failed;
  pthread_mutex_unlock(&w->mu);
}
