/* Reaping the processes of idle processes-pool workers (see
 * procpool_watch.h). */
#include <pthread.h>
#include <stdint.h>

#include "core/debug.h"
#include "core/background.h"
#include "core/clock.h"
#include "proc/procpool_watch.h"
#include "core/tstate.h"

#define FIRST_NS (100 * 1000000LL)    /* the first look after a change */
#define LAST_NS (1600 * 1000000LL)    /* the longest wait between looks */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;             /* CLOCK_MONOTONIC, made with the thread */
static pl_idlewatch *head;            /* guarded by mu */
static int started;                   /* guarded by mu: the thread runs */
static int resting;                   /* guarded by mu: it waits for a first entry */
static int changed;                   /* guarded by mu: listed since the last look */

static void *watch_main(void *arg) {
  (void)arg;
  int64_t period = FIRST_NS;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (head == NULL) {
      resting = 1;
      pthread_cond_wait(&cv, &mu);
      resting = 0;
      period = FIRST_NS;
    }
    struct timespec until = pl_timespec_of(pl_now_ns() + period);
    (void)pthread_cond_timedwait(&cv, &mu, &until);
    for (pl_idlewatch *w = head; w != NULL; w = w->next) w->check(w);
    if (changed) period = FIRST_NS;
    else if (period < LAST_NS) period *= 2;
    changed = 0;
  }
  return NULL;
}

static void start_locked(void) {
  PL_ASSERT_HELD(&mu);
  if (pl_cond_init(&cv) != 0) return;
  if (pl_background_thread(watch_main, NULL, 64 * 1024) != 0) {
    pthread_cond_destroy(&cv);
    return;
  }
  started = 1;
}

void pl_idlewatch_add(pl_idlewatch *w) {
  pthread_mutex_lock(&mu);
  if (!started) start_locked();
  if (started && !w->listed) {
    w->listed = 1;
    w->prev = NULL;
    w->next = head;
    if (head != NULL) head->prev = w;
    head = w;
    changed = 1;
    if (resting) pthread_cond_signal(&cv);
  }
  pthread_mutex_unlock(&mu);
}

void pl_idlewatch_remove(pl_idlewatch *w) {
  pthread_mutex_lock(&mu);
  if (w->listed) {
    if (w->prev != NULL) w->prev->next = w->next;
    else head = w->next;
    if (w->next != NULL) w->next->prev = w->prev;
    w->next = w->prev = NULL;
    w->listed = 0;
  }
  pthread_mutex_unlock(&mu);
}

void pl_idlewatch_child_reset(void) {
  /* Only the forking thread exists now; the watcher thread may have held
   * mu, and the list names the parent's workers. */
  pthread_mutex_init(&mu, NULL);
  head = NULL;
  started = resting = changed = 0;
}
