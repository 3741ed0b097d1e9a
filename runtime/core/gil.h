/* Private to the parlua runtime: the global lock of one state family.
 *
 * Whoever runs Lua code of a state (the main lua_State and all of its
 * coroutines) holds that state's lock.  The design, and why, is in
 * docs/global-lock.md; in short:
 *   - a thread that wants the lock waits one switch interval, then asks the
 *     holder to drop it (the holder notices at its next Lua instruction,
 *     through a count hook armed only while a request is pending);
 *   - a thread coming back from a blocking call asks at once ("urgent"), so
 *     I/O-bound threads never wait out a switch interval (no convoy effect),
 *     and takes the lock before any regular waiter;
 *   - a holder that drops on request does not take the lock back before
 *     another thread has had it (forced switching).
 */
#ifndef PL_GIL_H
#define PL_GIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/gil_trace.h"

typedef struct pl_tstate pl_tstate;

typedef struct pl_gil_stats {
  uint64_t switches;       /* times the lock passed from one thread to another */
  uint64_t acquisitions;   /* times it was taken at all */
  uint64_t drop_requests;  /* times a waiter asked the holder to let go */
  double wait_seconds;     /* total time threads spent waiting for it */
  double hold_seconds;     /* total time it was held */
} pl_gil_stats;

typedef struct pl_gil {
  pthread_mutex_t mu;
  pthread_cond_t released;      /* signalled when the lock is let go */
  pthread_cond_t switched;      /* broadcast when a new holder takes it */
  atomic_int locked;            /* written under mu, read anywhere */
  atomic_uint_fast64_t taken;   /* bumped under mu at every take */
  atomic_int drop_request;      /* a waiter wants the holder to let go */
  atomic_int_fast64_t interval_ns;
  int waiters;                  /* guarded by mu */
  int urgent_waiters;           /* guarded by mu: go before the others */
  pl_tstate *holder;            /* guarded by mu */
  pl_tstate *last_holder;       /* guarded by mu: to count real switches */
  int64_t taken_at;             /* guarded by mu */
  pl_gil_stats stats;           /* guarded by mu */
  /* The lock timeline (gil_trace.h): the trace recording this lock right
   * now or NULL -- the one load each lock event pays when it is off --,
   * the tree's trace it belongs to (guarded by gil_trace.c's homes_mu),
   * and its state number in the current session (guarded by the trace). */
  _Atomic(pl_gil_trace *) recording;
  pl_gil_trace *trace_home;
  int trace_state;
  uint64_t trace_state_epoch;
} pl_gil;

#define PL_GIL_DEFAULT_INTERVAL 0.005

int pl_gil_init(pl_gil *g, double interval);
void pl_gil_destroy(pl_gil *g);

/* Take the lock for `ts` (whose `running` coroutine is where the holder will
 * be poked).  `urgent`: the caller returns from a blocking call and asks the
 * holder to drop at once instead of after a switch interval. */
void pl_gil_acquire(pl_gil *g, pl_tstate *ts, int urgent);
/* Let go; `why` is what the lock timeline shows as the reason. */
void pl_gil_release(pl_gil *g, pl_tstate *ts, pl_gil_reason why);

/* Called by the holder when a drop was requested: hand the lock to a waiter,
 * wait until someone else has taken it, then queue up again.  `why` is
 * PL_GIL_SWITCH for a hand-over on request (the timeline tells an urgent
 * request from an expired interval itself) or the caller's own reason. */
void pl_gil_yield(pl_gil *g, pl_tstate *ts, pl_gil_reason why);

static inline int pl_gil_drop_requested(pl_gil *g) {
  return atomic_load_explicit(&g->drop_request, memory_order_relaxed);
}

void pl_gil_set_interval(pl_gil *g, double seconds);
double pl_gil_get_interval(pl_gil *g);
void pl_gil_get_stats(pl_gil *g, pl_gil_stats *out);
int pl_gil_held_by(pl_gil *g, pl_tstate *ts);

#endif
