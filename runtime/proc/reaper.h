/* Private to the parlua runtime: the reaper of a state's Popen children.
 *
 * A Popen collected while its child still runs hands the child to the
 * state's reaper, which reaps it when it can (each new Popen sweeps) and,
 * when the runtime closes or the state's box is collected, gives every
 * child still running to a background thread (pl_reap_in_background), so
 * that no zombie is left behind and nobody blocks.
 *
 * Owners, counted in `refs`: the state's box, the runtime's closer, each
 * Popen that may hand a child over.
 *
 * Lock order: r->mu, then nothing.
 */
#ifndef PL_REAPER_H
#define PL_REAPER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/runtime.h"

/* After pools (whose tasks may still be using children), before the state
 * goes. */
enum { PL_CLOSE_SUBPROCESSES = PL_CLOSE_POOLS + 1 };

typedef struct pl_reaper {
  atomic_int refs;
  pthread_mutex_t mu;
  pid_t *pids;         /* guarded by mu */
  size_t n, cap;       /* guarded by mu */
  int finished;        /* guarded by mu: the state is gone, orphans go at once */
  pl_closer *closer;   /* guarded by the runtime's mu */
  parlua *rt;
} pl_reaper;

/* A reaper for rt with one reference (the box's), plus the closer's when
 * it could be registered.  NULL when out of memory. */
pl_reaper *pl_reaper_new(parlua *rt);
void pl_reaper_incref(pl_reaper *r);
void pl_reaper_unref(pl_reaper *r);
/* Reap the children that have ended meanwhile. */
void pl_reaper_sweep(pl_reaper *r);
/* Look after pid, a child still running nobody will wait for. */
void pl_reaper_add(pl_reaper *r, pid_t pid);
/* The box's end: no closer any more, every child handed over, the box's
 * reference dropped. */
void pl_reaper_finish(pl_reaper *r);

#endif
