/* The locks a thread holds, released when a forced cancel ends it (see
 * held.h for the rule). */
#include <stdlib.h>

#include "sync/held.h"

typedef struct holding {
  pl_synclock *lk;   /* a reference of its own */
  uint64_t take;
} holding;

struct pl_held {
  int n, cap;
  holding items[];
};

static void drop_all(pl_tstate *ts, int release) {
  pl_held *h = ts->held;
  if (h == NULL) return;
  for (int i = 0; i < h->n; i++) {
    pl_synclock_check_take(h->items[i].lk, h->items[i].take, release);
    pl_sync_decref(&h->items[i].lk->head);
  }
  h->n = 0;
}

/* Called by pl_tstate_free. */
static void free_held(pl_tstate *ts) {
  drop_all(ts, 0);
  free(ts->held);
  ts->held = NULL;
}

void pl_held_prune(pl_tstate *ts) {
  pl_held *h = ts != NULL ? ts->held : NULL;
  if (h == NULL) return;
  int kept = 0;
  for (int i = 0; i < h->n; i++) {
    if (pl_synclock_check_take(h->items[i].lk, h->items[i].take, 0))
      h->items[kept++] = h->items[i];
    else
      pl_sync_decref(&h->items[i].lk->head);
  }
  h->n = kept;
}

/* Room for one more holding, or 0. */
static int make_room(pl_tstate *ts) {
  pl_held *h = ts->held;
  if (h != NULL && h->n < h->cap) return 1;
  pl_held_prune(ts);  /* holdings another thread ended make room first */
  if (h != NULL && h->n < h->cap) return 1;
  int cap = h != NULL ? h->cap * 2 : 4;
  pl_held *bigger = realloc(h, sizeof *h + (size_t)cap * sizeof h->items[0]);
  if (bigger == NULL) return 0;
  if (h == NULL) bigger->n = 0;
  bigger->cap = cap;
  ts->held = bigger;
  ts->held_free = free_held;
  return 1;
}

void pl_held_note(pl_tstate *ts, pl_synclock *lk) {
  uint64_t take;
  if (ts == NULL || !pl_synclock_owned_take(lk, &take)) return;
  pl_held *h = ts->held;
  for (int i = 0; h != NULL && i < h->n; i++)
    if (h->items[i].lk == lk && h->items[i].take == take) return;  /* an rlock taken again */
  if (!make_room(ts)) return;
  h = ts->held;
  pl_sync_incref(&lk->head);
  h->items[h->n].lk = lk;
  h->items[h->n].take = take;
  h->n++;
}

void pl_held_end(pl_tstate *ts) {
  if (ts == NULL) return;
  drop_all(ts, pl_tstate_cancel_level(ts) == PL_CANCEL_FORCED);
}
