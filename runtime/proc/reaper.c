/* The reaper of a state's Popen children (see reaper.h). */
#include <signal.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/enter.h"
#include "proc/child.h"
#include "proc/reaper.h"

void pl_reaper_incref(pl_reaper *r) { atomic_fetch_add(&r->refs, 1); }

void pl_reaper_unref(pl_reaper *r) {
  if (atomic_fetch_sub(&r->refs, 1) != 1) return;
  free(r->orphans);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

void pl_reaper_sweep(pl_reaper *r) {
  pthread_mutex_lock(&r->mu);
  size_t live = 0;
  for (size_t i = 0; i < r->n; i++)
    if (!pl_reap_nohang(r->orphans[i].pid)) r->orphans[live++] = r->orphans[i];
  r->n = live;
  pthread_mutex_unlock(&r->mu);
}

/* Give every orphan still running to a background thread. */
static void hand_over(pl_reaper *r, int finished) {
  pthread_mutex_lock(&r->mu);
  pl_orphan *orphans = r->orphans;
  size_t n = r->n;
  r->orphans = NULL;
  r->n = r->cap = 0;
  if (finished) r->finished = 1;
  pthread_mutex_unlock(&r->mu);
  pid_t *pids = n > 0 ? malloc(n * sizeof *pids) : NULL;
  for (size_t i = 0; pids != NULL && i < n; i++) pids[i] = orphans[i].pid;
  free(orphans);
  if (pids != NULL) pl_reap_in_background(pids, n);  /* no memory: they stay zombies */
}

void pl_reaper_add(pl_reaper *r, pl_orphan child) {
  if (pl_reap_nohang(child.pid)) return;
  pthread_mutex_lock(&r->mu);
  int direct = r->finished;
  if (!direct && r->n == r->cap) {
    size_t cap = r->cap > 0 ? r->cap * 2 : 16;
    pl_orphan *orphans = realloc(r->orphans, cap * sizeof *orphans);
    if (orphans != NULL) {
      r->orphans = orphans;
      r->cap = cap;
    } else {
      direct = 1;
    }
  }
  if (!direct) r->orphans[r->n++] = child;
  pthread_mutex_unlock(&r->mu);
  if (direct) {
    pid_t *one = malloc(sizeof *one);
    if (one != NULL) {
      *one = child.pid;
      pl_reap_in_background(one, 1);
    }
  }
}

void pl_reaper_watch_add(pl_reaper *r, pl_reaper_watch *w, pl_proc *proc) {
  w->proc = proc;
  pthread_mutex_lock(&r->mu);
  w->next = r->live;
  w->prevp = &r->live;
  if (r->live != NULL) r->live->prevp = &w->next;
  r->live = w;
  pthread_mutex_unlock(&r->mu);
}

void pl_reaper_watch_remove(pl_reaper *r, pl_reaper_watch *w) {
  pthread_mutex_lock(&r->mu);
  *w->prevp = w->next;
  if (w->next != NULL) w->next->prevp = w->prevp;
  pthread_mutex_unlock(&r->mu);
}

/* After an interrupt (see reaper.h).  The threads that used the children
 * are joined by now (their closers come first); without the lock
 * meanwhile. */
static void stop_children(pl_reaper *r, lua_State *L) {
  pl_reaper_sweep(r);
  pthread_mutex_lock(&r->mu);
  size_t n = 0;
  for (pl_reaper_watch *w = r->live; w != NULL; w = w->next) n++;
  pl_proc **procs = malloc((n + r->n + 1) * sizeof *procs);
  pl_proc *orphans = malloc((r->n + 1) * sizeof *orphans);
  size_t k = 0;
  if (procs != NULL && orphans != NULL) {
    for (pl_reaper_watch *w = r->live; w != NULL; w = w->next) procs[k++] = w->proc;
    for (size_t i = 0; i < r->n; i++) {
      pl_proc_init(&orphans[i], r->orphans[i].pid, -1);
      orphans[i].leads_group = r->orphans[i].leads_group;
      procs[k++] = &orphans[i];
    }
    r->n = 0;  /* reaped here, not handed over */
  }
  pthread_mutex_unlock(&r->mu);
  pl_tstate *ts = pl_unlock(L, PL_GIL_POPEN);
  for (size_t i = 0; i < k; i++)
    if (procs[i]->leads_group || !pl_proc_poll(procs[i])) pl_proc_stop(procs[i], SIGTERM);
  int64_t grace_end = pl_now_ns() + PL_STOP_GRACE_NS;
  for (size_t i = 0; i < k; i++) pl_proc_finish_stop(procs[i], grace_end);
  pl_lock(L, ts);
  for (size_t i = n; i < k; i++) pl_proc_destroy(procs[i]);
  free(procs);
  free(orphans);
}

static void reaper_close(void *ud, lua_State *L) {
  pl_reaper *r = ud;
  if (atomic_load(&r->rt->interrupted)) stop_children(r, L);
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
