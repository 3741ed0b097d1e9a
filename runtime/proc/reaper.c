/* The reaper of a state's Popen children (see reaper.h). */
#include <stdlib.h>

#include "proc/child.h"
#include "proc/reaper.h"

void pl_reaper_incref(pl_reaper *r) { atomic_fetch_add(&r->refs, 1); }

void pl_reaper_unref(pl_reaper *r) {
  if (atomic_fetch_sub(&r->refs, 1) != 1) return;
  free(r->pids);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

void pl_reaper_sweep(pl_reaper *r) {
  pthread_mutex_lock(&r->mu);
  size_t live = 0;
  for (size_t i = 0; i < r->n; i++)
    if (!pl_reap_nohang(r->pids[i])) r->pids[live++] = r->pids[i];
  r->n = live;
  pthread_mutex_unlock(&r->mu);
}

/* Give every orphan still running to a background thread. */
static void hand_over(pl_reaper *r, int finished) {
  pthread_mutex_lock(&r->mu);
  pid_t *pids = r->pids;
  size_t n = r->n;
  r->pids = NULL;
  r->n = r->cap = 0;
  if (finished) r->finished = 1;
  pthread_mutex_unlock(&r->mu);
  if (n > 0) pl_reap_in_background(pids, n);
  else free(pids);
}

void pl_reaper_add(pl_reaper *r, pid_t pid) {
  if (pl_reap_nohang(pid)) return;
  pthread_mutex_lock(&r->mu);
  int direct = r->finished;
  if (!direct && r->n == r->cap) {
    size_t cap = r->cap > 0 ? r->cap * 2 : 16;
    pid_t *pids = realloc(r->pids, cap * sizeof *pids);
    if (pids != NULL) {
      r->pids = pids;
      r->cap = cap;
    } else {
      direct = 1;
    }
  }
  if (!direct) r->pids[r->n++] = pid;
  pthread_mutex_unlock(&r->mu);
  if (direct) {
    pid_t *one = malloc(sizeof *one);
    if (one != NULL) {
      *one = pid;
      pl_reap_in_background(one, 1);
    }
  }
}

static void reaper_close(void *ud, lua_State *L) {
  (void)L;
  pl_reaper *r = ud;
  hand_over(r, 0);
  pl_reaper_unref(r);
}

pl_reaper *pl_reaper_new(parlua *rt) {
  pl_reaper *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  if (pthread_mutex_init(&r->mu, NULL) != 0) {
    free(r);
    return NULL;
  }
  atomic_init(&r->refs, 1);
  r->rt = rt;
  if (pl_runtime_add_closer(rt, &r->closer, PL_CLOSE_SUBPROCESSES, reaper_close, r) == 0)
    pl_reaper_incref(r);
  return r;
}

void pl_reaper_finish(pl_reaper *r) {
  if (pl_runtime_remove_closer(r->rt, &r->closer)) pl_reaper_unref(r);
  hand_over(r, 1);
  pl_reaper_unref(r);
}
