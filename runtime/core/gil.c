/* The global lock of one state family.  See gil.h for the rules and
 * docs/global-lock.md for the reasoning.
 *
 * Hand-off in numbers: a condition-variable wake-up across cores costs tens
 * of microseconds here, which is most of a 0.2 ms sleep.  So a waiter first
 * spins briefly on `locked` (only on machines with more than one core): an
 * urgent waiter sees the holder let go within microseconds of its request,
 * and a holder that yielded sees the short-lived urgent holder leave again
 * just as fast.  Longer waits sleep on `released`.
 */
#include <errno.h>
#include <string.h>

#include "core/debug.h"
#include "core/clock.h"
#include "core/gil.h"
#include "core/spin.h"
#include "core/tstate.h"


/* The one load a lock event pays while nobody traces (gil_trace.h). */
static inline void trace(pl_gil *g, pl_tstate *ts, int kind, int detail, int64_t t_ns) {
  pl_gil_trace *tr = atomic_load_explicit(&g->recording, memory_order_relaxed);
  if (tr != NULL) pl_gil_trace_record(tr, g, ts, kind, detail, t_ns);
}

int pl_gil_init(pl_gil *g, double interval) {
  memset(g, 0, sizeof *g);
  /* Each step undoes the ones before it when it fails. */
  if (pthread_mutex_init(&g->mu, NULL) != 0) return -1;
  if (pl_cond_init(&g->released) != 0) goto no_released;
  if (pl_cond_init(&g->switched) != 0) goto no_switched;
  atomic_init(&g->locked, 0);
  atomic_init(&g->taken, 0);
  atomic_init(&g->drop_request, 0);
  atomic_init(&g->interval_ns, 0);
  atomic_init(&g->recording, NULL);
  pl_gil_set_interval(g, interval);
  return 0;
no_switched:
  pthread_cond_destroy(&g->released);
no_released:
  pthread_mutex_destroy(&g->mu);
  return -1;
}

void pl_gil_destroy(pl_gil *g) {
  pthread_cond_destroy(&g->switched);
  pthread_cond_destroy(&g->released);
  pthread_mutex_destroy(&g->mu);
}

void pl_gil_set_interval(pl_gil *g, double seconds) {
  atomic_store(&g->interval_ns, (int_fast64_t)(seconds * 1e9));
}

double pl_gil_get_interval(pl_gil *g) {
  return (double)atomic_load(&g->interval_ns) / 1e9;
}

/* One poke per request: the holder keeps it armed across coroutine
 * switches (pl_tstate_set_running).  `again`: a whole interval passed
 * without a hand-off, so poke once more -- something may have taken the
 * hook away (lua.c's SIGINT hook) or an error unwound past the armed
 * frames (core/callinfo.c). */
static void request_drop_locked(pl_gil *g, int again) {
  PL_ASSERT_HELD(&g->mu);
  int fresh = !atomic_exchange(&g->drop_request, 1);
  if (fresh) g->stats.drop_requests++;
  if ((fresh || again) && g->holder != NULL) pl_tstate_poke(g->holder);
}

/* The lock's spins only pause (INT64_MAX): what they wait for is a
 * hand-over already under way, microseconds away (spin.h). */
static int not_taken(const void *arg) {
  const pl_gil *g = arg;
  return !atomic_load_explicit(&g->locked, memory_order_acquire);
}

typedef struct { const pl_gil *g; uint64_t seen; } taken_since;

static int taken_again(const void *arg) {
  const taken_since *t = arg;
  return atomic_load_explicit(&t->g->taken, memory_order_acquire) != t->seen;
}

/* Spin, without the mutex, until the lock is free (or the budget is out). */
static void spin_while_taken(pl_gil *g) { (void)pl_spin_until(not_taken, g, INT64_MAX, NULL); }

/* Spin, without the mutex, until somebody took the lock since `seen`. */
static void spin_until_taken_since(pl_gil *g, uint64_t seen) {
  const taken_since t = {g, seen};
  (void)pl_spin_until(taken_again, &t, INT64_MAX, NULL);
}

static void take_locked(pl_gil *g, pl_tstate *ts, int64_t now) {
  PL_ASSERT_HELD(&g->mu);
  atomic_store(&g->locked, 1);
  atomic_store(&g->drop_request, 0);
  g->holder = ts;
  ts->holds_lock = 1;
  g->taken_at = now;
  g->stats.acquisitions++;
  if (g->last_holder != ts) {
    g->stats.switches++;
    g->last_holder = ts;
  }
  atomic_fetch_add(&g->taken, 1);
  pthread_cond_broadcast(&g->switched);
  trace(g, ts, PL_GIL_EV_ACQUIRED, 0, now);
}

/* A regular waiter also stands back while an urgent one waits: with several
 * CPU-bound threads queued, a thread back from a blocking call must not
 * wait for them to take their turns first. */
static int must_wait_locked(pl_gil *g, int urgent) {
  PL_ASSERT_HELD(&g->mu);
  return atomic_load(&g->locked) || (!urgent && g->urgent_waiters > 0);
}

void pl_gil_acquire(pl_gil *g, pl_tstate *ts, int urgent) {
  int64_t start = pl_now_ns();
  pthread_mutex_lock(&g->mu);
  trace(g, ts, PL_GIL_EV_REQUEST, urgent, start);
  if (must_wait_locked(g, urgent)) {
    int spun = 0;
    g->waiters++;
    if (urgent) g->urgent_waiters++;
    while (must_wait_locked(g, urgent)) {
      uint64_t seen = atomic_load(&g->taken);
      if (urgent) request_drop_locked(g, 0);
      if (!spun) {
        spun = 1;
        pthread_mutex_unlock(&g->mu);
        spin_while_taken(g);
        pthread_mutex_lock(&g->mu);
        continue;
      }
      struct timespec until =
          pl_timespec_of(pl_now_ns() + atomic_load(&g->interval_ns));
      int rc = pthread_cond_timedwait(&g->released, &g->mu, &until);
      /* A whole interval passed and the same holder still has it: ask. */
      if (rc == ETIMEDOUT && atomic_load(&g->locked) &&
          atomic_load(&g->taken) == seen)
        request_drop_locked(g, 1);
    }
    g->waiters--;
    if (urgent) g->urgent_waiters--;
  }
  int64_t now = pl_now_ns();
  take_locked(g, ts, now);
  g->stats.wait_seconds += (double)(now - start) / 1e9;
  pthread_mutex_unlock(&g->mu);
}

static void let_go_locked(pl_gil *g, pl_tstate *ts, pl_gil_reason why, int64_t now) {
  PL_ASSERT_HELD(&g->mu);
  trace(g, ts, PL_GIL_EV_RELEASED, why, now);
  g->stats.hold_seconds += (double)(now - g->taken_at) / 1e9;
  if (g->holder != NULL) g->holder->holds_lock = 0;
  g->holder = NULL;
  atomic_store(&g->locked, 0);
  /* Urgent waiters must all look: the one woken might be a regular one. */
  if (g->urgent_waiters > 0) pthread_cond_broadcast(&g->released);
  else if (g->waiters > 0) pthread_cond_signal(&g->released);
}

void pl_gil_release(pl_gil *g, pl_tstate *ts, pl_gil_reason why) {
  pthread_mutex_lock(&g->mu);
  let_go_locked(g, ts, why, pl_now_ns());
  pthread_mutex_unlock(&g->mu);
}

void pl_gil_yield(pl_gil *g, pl_tstate *ts, pl_gil_reason why) {
  pthread_mutex_lock(&g->mu);
  if (g->waiters == 0) {  /* whoever asked has gone: keep going */
    atomic_store(&g->drop_request, 0);
    pthread_mutex_unlock(&g->mu);
    return;
  }
  uint64_t seen = atomic_load(&g->taken);
  if (why == PL_GIL_SWITCH && g->urgent_waiters > 0) why = PL_GIL_URGENT;
  let_go_locked(g, ts, why, pl_now_ns());
  /* Forced switching: do not retake the lock before another thread had it,
   * or a CPU-bound holder would win every race against a waking waiter. */
  pthread_mutex_unlock(&g->mu);
  spin_until_taken_since(g, seen);
  pthread_mutex_lock(&g->mu);
  while (atomic_load(&g->taken) == seen && g->waiters > 0)
    pthread_cond_wait(&g->switched, &g->mu);
  pthread_mutex_unlock(&g->mu);
  pl_gil_acquire(g, ts, 0);
}

void pl_gil_get_stats(pl_gil *g, pl_gil_stats *out) {
  pthread_mutex_lock(&g->mu);
  *out = g->stats;
  if (atomic_load(&g->locked))  /* count the current holding so far */
    out->hold_seconds += (double)(pl_now_ns() - g->taken_at) / 1e9;
  pthread_mutex_unlock(&g->mu);
}

int pl_gil_held_by(pl_gil *g, pl_tstate *ts) {
  pthread_mutex_lock(&g->mu);
  int held = atomic_load(&g->locked) && g->holder == ts;
  pthread_mutex_unlock(&g->mu);
  return held;
}
