/* The watcher of pool tasks' time limits (see limits.h). */
#include <pthread.h>

#include "core/background.h"
#include "core/clock.h"
#include "core/tstate.h"
#include "pool/limits.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;             /* CLOCK_MONOTONIC, made with the thread */
static pl_limitwatch *head;           /* guarded by mu */
static int started;                   /* guarded by mu */

static void *watch_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    int64_t now = pl_now_ns(), next = INT64_MAX;
    for (pl_limitwatch *w = head; w != NULL; w = w->next) {
      if (w->soft_at <= now) {
        w->soft_at = INT64_MAX;
        w->fire(w, 0);
      }
      if (w->hard_at <= now) {
        w->hard_at = INT64_MAX;
        w->fire(w, 1);
      }
      if (w->soft_at < next) next = w->soft_at;
      if (w->hard_at < next) next = w->hard_at;
    }
    if (next == INT64_MAX) {
      pthread_cond_wait(&cv, &mu);
    } else {
      struct timespec until = pl_timespec_of(next);
      (void)pthread_cond_timedwait(&cv, &mu, &until);
    }
  }
  return NULL;
}

static int64_t deadline_after(int64_t start, double seconds) {
  if (seconds <= 0) return INT64_MAX;
  if (seconds > 1e9) return INT64_MAX - 1;  /* about 30 years: never, but armed */
  return start + (int64_t)(seconds * 1e9);
}

int pl_limitwatch_arm(pl_limitwatch *lw, const pl_limits *l) {
  if (!pl_limits_any(l)) return 0;
  int64_t start = pl_now_ns();
  pthread_mutex_lock(&mu);
  if (!started) {
    if (pl_cond_init(&cv) == 0) {
      if (pl_background_thread(watch_main, NULL, 64 * 1024) == 0) started = 1;
      else pthread_cond_destroy(&cv);
    }
    if (!started) {
      pthread_mutex_unlock(&mu);
      return -1;
    }
  }
  lw->limits = *l;
  lw->hard_at = deadline_after(start, l->hard);
  lw->soft_at = deadline_after(start, l->soft);
  if (lw->soft_at >= lw->hard_at) lw->soft_at = INT64_MAX;  /* the hard one comes first */
  lw->prev = NULL;
  lw->next = head;
  if (head != NULL) head->prev = lw;
  head = lw;
  lw->listed = 1;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  return 0;
}

void pl_limitwatch_disarm(pl_limitwatch *lw) {
  if (!lw->listed) return;  /* only the owner lists it */
  pthread_mutex_lock(&mu);
  if (lw->prev != NULL) lw->prev->next = lw->next;
  else head = lw->next;
  if (lw->next != NULL) lw->next->prev = lw->prev;
  lw->listed = 0;
  pthread_mutex_unlock(&mu);
}
