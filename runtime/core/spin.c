/* The spin-then-sleep helper's parts that need no inlining (see spin.h). */
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "core/spin.h"

#define SPIN_BACKOFF_MAX 1024

static int multicore;
static void probe_cores(void) { multicore = sysconf(_SC_NPROCESSORS_ONLN) > 1; }

int pl_spin_allowed(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, probe_cores);
  return multicore;
}

void pl_spin_pause(void) { sched_yield(); }

int pl_spin_peer_here(const atomic_int *peer_cpu) {
  if (peer_cpu == NULL) return 0;
  int cpu = atomic_load_explicit(peer_cpu, memory_order_relaxed);
  return cpu >= 0 && cpu == sched_getcpu();
}

int pl_spin_mutex_init(pthread_mutex_t *mu) {
  pthread_mutexattr_t attr;
  if (pthread_mutexattr_init(&attr) != 0) return -1;
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
  (void)pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
  int rc = pthread_mutex_init(mu, &attr);
  pthread_mutexattr_destroy(&attr);
  return rc == 0 ? 0 : -1;
}

void pl_spin_gauge_init(pl_spin_gauge *g) {
  atomic_init(&g->skip, 0);
  atomic_init(&g->backoff, 1);
}

int pl_spin_gauge_allows(pl_spin_gauge *g) {
  if (atomic_load_explicit(&g->skip, memory_order_relaxed) <= 0) return 1;
  atomic_fetch_sub_explicit(&g->skip, 1, memory_order_relaxed);
  return 0;
}

void pl_spin_gauge_note(pl_spin_gauge *g, int paid) {
  int b = atomic_load_explicit(&g->backoff, memory_order_relaxed);
  if (paid) {
    if (b > 1) atomic_store_explicit(&g->backoff, b / 2, memory_order_relaxed);
    return;
  }
  atomic_store_explicit(&g->skip, b, memory_order_relaxed);
  atomic_store_explicit(&g->backoff, b < SPIN_BACKOFF_MAX ? 4 * b : b, memory_order_relaxed);
}
