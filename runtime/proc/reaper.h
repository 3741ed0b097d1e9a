/* Private to the parlua runtime: the reaper of a state's Popen children.
 *
 * A Popen collected while its child still runs hands the child to the
 * state's reaper, which reaps it when it can (each new Popen sweeps) and,
 * when the runtime closes or the state's box is collected, gives every
 * child still running to a background thread (pl_reap_in_background), so
 * that no zombie is left behind and nobody blocks.
 *
 * After an interrupt (Ctrl-C) the closer stops every child instead, the
 * live Popens' and the orphans alike: SIGTERM, SIGKILL after
 * PL_STOP_GRACE_NS, each reaped before the runtime goes on -- the
 * contract's "Ctrl-C stops children".  A child that leads its own process
 * group is stopped with its group (pl_proc_stop).
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

/* How long children stopped after an interrupt get between SIGTERM and
 * SIGKILL (Python's run waits as long after a KeyboardInterrupt). */
#define PL_STOP_GRACE_NS (250 * 1000000LL)

/* A running child the reaper knows of while its Popen lives (embedded in
 * the Popen): after an interrupt, the closer stops it too. */
typedef struct pl_reaper_watch {
  struct pl_proc *proc;
  struct pl_reaper_watch *next, **prevp;  /* guarded by the reaper's mu */
} pl_reaper_watch;

/* A child whose Popen is gone. */
typedef struct pl_orphan {
  pid_t pid;
  int leads_group;
} pl_orphan;

typedef struct pl_reaper {
  atomic_int refs;
  pthread_mutex_t mu;
  pl_reaper_watch *live;  /* guarded by mu: every Popen not yet collected */
  pl_orphan *orphans;  /* guarded by mu */
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
/* Look after a child still running nobody will wait for. */
void pl_reaper_add(pl_reaper *r, pl_orphan child);
/* A Popen's child, from its start until the Popen is collected. */
void pl_reaper_watch_add(pl_reaper *r, pl_reaper_watch *w, struct pl_proc *proc);
void pl_reaper_watch_remove(pl_reaper *r, pl_reaper_watch *w);
/* The box's end: no closer any more, every child handed over, the box's
 * reference dropped. */
void pl_reaper_finish(pl_reaper *r);

#endif
