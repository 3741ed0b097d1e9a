/* Private to the parlua runtime: the one spin-then-sleep helper.
 *
 * A thread about to sleep on a condition variable first spins briefly for
 * what it waits for: a wake-up across cores costs tens of microseconds
 * here, a spin sees a change within one.  Three waits do it -- a thread
 * that wants a global lock (gil.c), an idle pool worker looking for work
 * (executor.c) and a thread waiting for a future (future.c) -- all through
 * pl_spin_until, and only on machines with more than one core.
 *
 * The first `pause_ns` of a spin use the CPU's pause instruction (tens of
 * nanoseconds a round), so a change within them is seen at once; after
 * that each round yields the CPU (sched_yield: about half a microsecond
 * here), so the thread we wait for runs instead of us burning its time
 * slice on a machine busier than its cores.  A peer known to be on our
 * own CPU (*peer_cpu) cannot run while we pause at all: then every round
 * yields.  (Measured with a CPU hog beside a submit/result loop on 2
 * cores, when the hog has a CPU to itself: about 155k tasks/s, against
 * 31k when the spins pause regardless.)
 */
#ifndef PL_SPIN_H
#define PL_SPIN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/clock.h"

/* The longest spin before the caller sleeps. */
#define PL_SPIN_NS 50000

/* 1 on a machine with more than one core (spinning can pay). */
int pl_spin_allowed(void);
/* 1 when *peer_cpu (may be NULL; -1: unknown) is the CPU the caller runs on. */
int pl_spin_peer_here(const atomic_int *peer_cpu);
/* One yielding round: sched_yield. */
void pl_spin_pause(void);

/* One busy-wait round: the CPU's pause instruction. */
static inline void pl_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Spin until done(arg), at most PL_SPIN_NS, pausing for the first
 * pause_ns and yielding after that (INT64_MAX: never yields unless the
 * peer is on our CPU).  1 when done(arg) came true within the budget: a
 * change seen late, after the scheduler took the CPU from us (a yield to
 * a busy CPU's other thread lasts a time slice), did not pay.  Inline, so
 * that done() is too. */
static inline int pl_spin_until(int (*done)(const void *arg), const void *arg, int64_t pause_ns,
                                const atomic_int *peer_cpu) {
  if (!pl_spin_allowed()) return 0;
  int64_t start = pl_now_ns();
  int yielding = pl_spin_peer_here(peer_cpu);
  unsigned n = 0;
  while (!done(arg)) {
    if (yielding) pl_spin_pause();
    else pl_cpu_relax();
    if ((++n & 15) == 0) {
      int64_t spent = pl_now_ns() - start;
      if (spent > PL_SPIN_NS) return 0;
      yielding = spent > pause_ns || pl_spin_peer_here(peer_cpu);
    }
  }
  return pl_now_ns() - start <= PL_SPIN_NS;
}

/* A mutex whose waiters spin a little before they sleep (glibc's adaptive
 * kind), for one held only for a few instructions by threads on other
 * cores: a taker that found it held then gets it without a futex call,
 * and the holder's unlock wakes nobody.  0, or -1 as pthread_mutex_init. */
int pl_spin_mutex_init(pthread_mutex_t *mu);

/* Whether spinning pays, learnt from the spins themselves.  A spin pays
 * when what it waits for happens within its budget; it does not when the
 * peer cannot run meanwhile -- every CPU taken by other processes -- and
 * then each spin costs a whole time slice (trivial round trips fell from
 * 225k to 275 a second beside two CPU hogs on 2 cores).  After a spin
 * that did not pay, the next `backoff` chances to spin are skipped (the
 * waiter sleeps at once), and the backoff quadruples, up to 1024, while
 * spins keep failing; each spin that pays halves it.  Failures weigh more
 * than successes: one costs a time slice, one saves a wake-up.  A pool's
 * workers share one gauge for their spins for work; each thread has its
 * own for its waits on futures.  Races between threads updating one
 * gauge only blur the count. */
typedef struct pl_spin_gauge {
  atomic_int skip;     /* chances to spin still to be skipped */
  atomic_int backoff;  /* what the next failure makes skip */
} pl_spin_gauge;
void pl_spin_gauge_init(pl_spin_gauge *g);
int pl_spin_gauge_allows(pl_spin_gauge *g);
void pl_spin_gauge_note(pl_spin_gauge *g, int paid);

#endif
