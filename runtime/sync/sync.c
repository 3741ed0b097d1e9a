/* Locks, rlocks, events, conditions, semaphores and barriers (see sync.h
 * for how bindings use them and the rules they follow).
 *
 * Each object has one mutex and, except the condition, one condition
 * variable.  A condition keeps one condition variable per waiter instead,
 * so that notify(1) wakes exactly one thread and a waiter that times out
 * simply leaves the list. */
#include <limits.h>
#include <stdlib.h>

#include "core/debug.h"
#include "core/clock.h"
#include "sync/sync.h"

void pl_sync_init(pl_sync *s, int kind, void (*destroy)(pl_sync *)) {
  atomic_init(&s->refs, 1);
  s->kind = kind;
  s->destroy = destroy;
}

void pl_sync_incref(pl_sync *s) {
  atomic_fetch_add(&s->refs, 1);
}

void pl_sync_decref(pl_sync *s) {
  if (atomic_fetch_sub(&s->refs, 1) == 1) s->destroy(s);
}

int pl_sync_refs(pl_sync *s) {
  return atomic_load(&s->refs);
}

/* A mutex and a monotonic condition variable, or -1 (nothing left over). */
static int init_pair(pthread_mutex_t *mu, pthread_cond_t *cv) {
  if (pthread_mutex_init(mu, NULL) != 0) return -1;
  if (cv != NULL && pl_cond_init(cv) != 0) {
    pthread_mutex_destroy(mu);
    return -1;
  }
  return 0;
}

/* --- lock and rlock --------------------------------------------------- */

static void lock_destroy(pl_sync *s) {
  pl_synclock *lk = (pl_synclock *)s;
  pthread_cond_destroy(&lk->cv);
  pthread_mutex_destroy(&lk->mu);
  free(lk);
}

pl_synclock *pl_synclock_new(int reentrant) {
  pl_synclock *lk = calloc(1, sizeof *lk);
  if (lk == NULL) return NULL;
  if (init_pair(&lk->mu, &lk->cv) != 0) {
    free(lk);
    return NULL;
  }
  pl_sync_init(&lk->head, reentrant ? PL_SYNC_RLOCK : PL_SYNC_LOCK, lock_destroy);
  lk->reentrant = reentrant;
  return lk;
}

/* Take lk if it is free, or one more level of an rlock we own. */
static int lock_take_locked(pl_synclock *lk) {
  PL_ASSERT_HELD(&lk->mu);
  pthread_t self = pthread_self();
  if (lk->count == 0) {
    lk->count = 1;
    lk->owner = self;
    lk->takes++;
    return 1;
  }
  if (lk->reentrant && pthread_equal(lk->owner, self)) {
    lk->count++;
    return 1;
  }
  return 0;
}

int pl_synclock_try(pl_synclock *lk) {
  pthread_mutex_lock(&lk->mu);
  int got = lock_take_locked(lk);
  pthread_mutex_unlock(&lk->mu);
  return got;
}

int pl_synclock_acquire(pl_synclock *lk, pl_tstate *ts, int64_t deadline) {
  int rc = PL_OK;
  pl_wait_begin(ts, &lk->mu, &lk->cv);
  pthread_mutex_lock(&lk->mu);
  for (;;) {
    if (lock_take_locked(lk)) {
      rc = PL_OK;
      break;
    }
    if (rc != PL_OK) break;  /* timed out, and one last look failed */
    rc = pl_wait(ts, &lk->mu, &lk->cv, deadline);
    if (rc == PL_ECANCELLED) {
      if (lk->count == 0) pthread_cond_signal(&lk->cv);  /* pass the wake-up on */
      break;
    }
  }
  pthread_mutex_unlock(&lk->mu);
  pl_wait_end(ts);
  return rc;
}

int pl_synclock_release(pl_synclock *lk) {
  int rc = 0;
  pthread_mutex_lock(&lk->mu);
  if (lk->count == 0 || (lk->reentrant && !pthread_equal(lk->owner, pthread_self())))
    rc = PL_ENOTHELD;
  else if (--lk->count == 0)
    pthread_cond_signal(&lk->cv);
  pthread_mutex_unlock(&lk->mu);
  return rc;
}

int pl_synclock_locked(pl_synclock *lk) {
  pthread_mutex_lock(&lk->mu);
  int locked = lk->count > 0;
  pthread_mutex_unlock(&lk->mu);
  return locked;
}

int pl_synclock_owned(pl_synclock *lk) {
  pthread_mutex_lock(&lk->mu);
  int owned = lk->count > 0 && pthread_equal(lk->owner, pthread_self());
  pthread_mutex_unlock(&lk->mu);
  return owned;
}

long pl_synclock_count(pl_synclock *lk) {
  pthread_mutex_lock(&lk->mu);
  long n = lk->count;
  pthread_mutex_unlock(&lk->mu);
  return n;
}

int pl_synclock_owned_take(pl_synclock *lk, uint64_t *take) {
  pthread_mutex_lock(&lk->mu);
  int owned = lk->count > 0 && pthread_equal(lk->owner, pthread_self());
  *take = lk->takes;
  pthread_mutex_unlock(&lk->mu);
  return owned;
}

int pl_synclock_check_take(pl_synclock *lk, uint64_t take, int release) {
  pthread_mutex_lock(&lk->mu);
  int held = lk->count > 0 && lk->takes == take && pthread_equal(lk->owner, pthread_self());
  if (held && release) {
    lk->count = 0;
    pthread_cond_signal(&lk->cv);
  }
  pthread_mutex_unlock(&lk->mu);
  return held;
}

/* For conditions: give up every level at once, and take them all back. */
static long lock_release_save(pl_synclock *lk) {
  pthread_mutex_lock(&lk->mu);
  long n = lk->count;
  lk->count = 0;
  pthread_cond_signal(&lk->cv);
  pthread_mutex_unlock(&lk->mu);
  return n;
}

/* Taking back waits as long as it must, as Python's Condition.wait does,
 * but a forced cancel ends it: the lock may be held forever by a thread
 * that is itself waiting to be cancelled or joined.  PL_OK (held
 * again) or PL_ECANCELLED (not held). */
static int lock_acquire_restore(pl_synclock *lk, pl_tstate *ts, long n) {
  int rc = PL_OK;
  pl_wait_begin(ts, &lk->mu, &lk->cv);
  pthread_mutex_lock(&lk->mu);
  while (lk->count != 0 && rc == PL_OK) rc = pl_wait(ts, &lk->mu, &lk->cv, INT64_MAX);
  if (lk->count == 0) {
    lk->count = n;
    lk->owner = pthread_self();
    lk->takes++;
    rc = PL_OK;
  }
  pthread_mutex_unlock(&lk->mu);
  pl_wait_end(ts);
  return rc;
}

/* --- event ------------------------------------------------------------ */

static void event_destroy(pl_sync *s) {
  pl_event *ev = (pl_event *)s;
  pthread_cond_destroy(&ev->cv);
  pthread_mutex_destroy(&ev->mu);
  free(ev);
}

pl_event *pl_event_new(void) {
  pl_event *ev = calloc(1, sizeof *ev);
  if (ev == NULL) return NULL;
  if (init_pair(&ev->mu, &ev->cv) != 0) {
    free(ev);
    return NULL;
  }
  pl_sync_init(&ev->head, PL_SYNC_EVENT, event_destroy);
  return ev;
}

void pl_event_set(pl_event *ev) {
  pthread_mutex_lock(&ev->mu);
  if (!ev->flag) {
    ev->flag = 1;
    ev->sets++;
    pthread_cond_broadcast(&ev->cv);
  }
  pthread_mutex_unlock(&ev->mu);
}

void pl_event_clear(pl_event *ev) {
  pthread_mutex_lock(&ev->mu);
  ev->flag = 0;
  pthread_mutex_unlock(&ev->mu);
}

int pl_event_is_set(pl_event *ev) {
  pthread_mutex_lock(&ev->mu);
  int flag = ev->flag;
  pthread_mutex_unlock(&ev->mu);
  return flag;
}

/* A set() followed at once by clear() still wakes the waiters (they count
 * the sets), as Python's Event.wait returns True in that case. */
int pl_event_wait(pl_event *ev, pl_tstate *ts, int64_t deadline) {
  int rc = PL_OK;
  pl_wait_begin(ts, &ev->mu, &ev->cv);
  pthread_mutex_lock(&ev->mu);
  uint64_t sets = ev->sets;
  while (!ev->flag && ev->sets == sets && rc == PL_OK)
    rc = pl_wait(ts, &ev->mu, &ev->cv, deadline);
  if (ev->flag || ev->sets != sets) rc = PL_OK;
  pthread_mutex_unlock(&ev->mu);
  pl_wait_end(ts);
  return rc;
}

/* --- condition -------------------------------------------------------- */

struct pl_cwaiter {
  pl_cwaiter *next;
  pthread_cond_t cv;   /* this waiter's own: notify wakes exactly it */
  int notified;        /* guarded by the condition's mu */
};

static void condition_destroy(pl_sync *s) {
  pl_condition *c = (pl_condition *)s;
  pl_sync_decref(&c->lock->head);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

pl_condition *pl_condition_new(pl_synclock *lk) {
  pl_condition *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  if (init_pair(&c->mu, NULL) != 0) {
    free(c);
    return NULL;
  }
  if (lk != NULL) {
    pl_sync_incref(&lk->head);
  } else if ((lk = pl_synclock_new(1)) == NULL) {
    pthread_mutex_destroy(&c->mu);
    free(c);
    return NULL;
  }
  c->lock = lk;
  pl_sync_init(&c->head, PL_SYNC_CONDITION, condition_destroy);
  return c;
}

/* Take w out of the list if it is still there; mu held. */
static void unlink_waiter_locked(pl_condition *c, pl_cwaiter *w) {
  PL_ASSERT_HELD(&c->mu);
  pl_cwaiter **p = &c->first, *prev = NULL;
  while (*p != NULL && *p != w) {
    prev = *p;
    p = &(*p)->next;
  }
  if (*p == NULL) return;
  *p = w->next;
  if (c->last == w) c->last = prev;
  c->nwaiters--;
}

/* Wake up to n waiters; mu held. */
static void notify_locked(pl_condition *c, long n) {
  PL_ASSERT_HELD(&c->mu);
  while (n > 0 && c->first != NULL) {
    pl_cwaiter *w = c->first;
    c->first = w->next;
    if (c->first == NULL) c->last = NULL;
    c->nwaiters--;
    w->notified = 1;
    pthread_cond_signal(&w->cv);
    n--;
  }
}

int pl_condition_wait(pl_condition *c, pl_tstate *ts, int64_t deadline) {
  pl_cwaiter w;
  int rc = PL_OK;
  if (!pl_synclock_owned(c->lock)) return PL_ENOTHELD;
  if (pl_cond_init(&w.cv) != 0) return PL_ENOMEM;
  w.next = NULL;
  w.notified = 0;
  /* Join the list before letting the lock go, so a notify made by the
   * next holder cannot be missed. */
  pthread_mutex_lock(&c->mu);
  if (c->last != NULL) c->last->next = &w;
  else c->first = &w;
  c->last = &w;
  c->nwaiters++;
  pthread_mutex_unlock(&c->mu);
  long saved = lock_release_save(c->lock);

  pl_wait_begin(ts, &c->mu, &w.cv);
  pthread_mutex_lock(&c->mu);
  while (!w.notified && rc == PL_OK) rc = pl_wait(ts, &c->mu, &w.cv, deadline);
  /* A notify that raced with a timeout or cancel is kept: it was taken off
   * the list for us, so dropping it would lose it for everyone. */
  if (w.notified) rc = PL_OK;
  else unlink_waiter_locked(c, &w);
  pthread_mutex_unlock(&c->mu);
  pl_wait_end(ts);
  pthread_cond_destroy(&w.cv);

  if (lock_acquire_restore(c->lock, ts, saved) == PL_ECANCELLED) {
    if (w.notified) {  /* this waiter will not act on it: the next one may */
      pthread_mutex_lock(&c->mu);
      notify_locked(c, 1);
      pthread_mutex_unlock(&c->mu);
    }
    return PL_ECANCELLED;
  }
  return rc;
}

int pl_condition_notify(pl_condition *c, long n) {
  if (!pl_synclock_owned(c->lock)) return PL_ENOTHELD;
  pthread_mutex_lock(&c->mu);
  notify_locked(c, n);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

int pl_condition_waiters(pl_condition *c) {
  pthread_mutex_lock(&c->mu);
  int n = c->nwaiters;
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* --- semaphore -------------------------------------------------------- */

static void semaphore_destroy(pl_sync *s) {
  pl_semaphore *sem = (pl_semaphore *)s;
  pthread_cond_destroy(&sem->cv);
  pthread_mutex_destroy(&sem->mu);
  free(sem);
}

pl_semaphore *pl_semaphore_new(long long value, int bounded) {
  pl_semaphore *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  if (init_pair(&s->mu, &s->cv) != 0) {
    free(s);
    return NULL;
  }
  pl_sync_init(&s->head, PL_SYNC_SEMAPHORE, semaphore_destroy);
  s->value = value;
  s->bound = bounded ? value : -1;
  return s;
}

int pl_semaphore_try(pl_semaphore *s) {
  pthread_mutex_lock(&s->mu);
  int got = s->value > 0;
  if (got) s->value--;
  pthread_mutex_unlock(&s->mu);
  return got;
}

int pl_semaphore_acquire(pl_semaphore *s, pl_tstate *ts, int64_t deadline) {
  int rc = PL_OK;
  pl_wait_begin(ts, &s->mu, &s->cv);
  pthread_mutex_lock(&s->mu);
  for (;;) {
    if (s->value > 0) {
      s->value--;
      rc = PL_OK;
      break;
    }
    if (rc != PL_OK) break;
    rc = pl_wait(ts, &s->mu, &s->cv, deadline);
    if (rc == PL_ECANCELLED) {
      if (s->value > 0) pthread_cond_signal(&s->cv);
      break;
    }
  }
  pthread_mutex_unlock(&s->mu);
  pl_wait_end(ts);
  return rc;
}

int pl_semaphore_release(pl_semaphore *s, long long n) {
  int rc = 0;
  pthread_mutex_lock(&s->mu);
  if ((s->bound >= 0 && s->value + n > s->bound) || s->value > LLONG_MAX - n) {
    rc = PL_ETOOMANY;
  } else {
    s->value += n;
    if (n == 1) pthread_cond_signal(&s->cv);
    else pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

long long pl_semaphore_value(pl_semaphore *s) {
  pthread_mutex_lock(&s->mu);
  long long v = s->value;
  pthread_mutex_unlock(&s->mu);
  return v;
}

/* --- barrier ---------------------------------------------------------- */

/* Python's Barrier, state for state: threads arrive while it is filling;
 * the last one switches it to draining and the others leave; the last to
 * leave makes it filling again.  A reset while threads wait switches it to
 * resetting (they leave with BROKEN) and then to filling; broken stays
 * broken until reset. */
enum { B_FILLING = 0, B_DRAINING = 1, B_RESETTING = -1, B_BROKEN = -2 };

static void barrier_destroy(pl_sync *s) {
  pl_barrier *b = (pl_barrier *)s;
  pthread_cond_destroy(&b->cv);
  pthread_mutex_destroy(&b->mu);
  free(b);
}

pl_barrier *pl_barrier_new(int parties) {
  pl_barrier *b = calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  if (init_pair(&b->mu, &b->cv) != 0) {
    free(b);
    return NULL;
  }
  pl_sync_init(&b->head, PL_SYNC_BARRIER, barrier_destroy);
  b->parties = parties;
  b->timeout = -1;
  b->state = B_FILLING;
  return b;
}

static void barrier_break_locked(pl_barrier *b) {
  PL_ASSERT_HELD(&b->mu);
  b->state = B_BROKEN;
  pthread_cond_broadcast(&b->cv);
}

/* A thread leaves wait(); the last one out ends draining or resetting. */
static void barrier_exit_locked(pl_barrier *b) {
  PL_ASSERT_HELD(&b->mu);
  b->count--;
  if (b->count == 0 && (b->state == B_RESETTING || b->state == B_DRAINING)) {
    b->state = B_FILLING;
    pthread_cond_broadcast(&b->cv);
  }
}

int pl_barrier_wait(pl_barrier *b, pl_tstate *ts, int64_t deadline, int *index, int nonblock) {
  int rc = PL_OK;
  if (!nonblock) pl_wait_begin(ts, &b->mu, &b->cv);
  pthread_mutex_lock(&b->mu);
  /* Not blocking: only the last party of a filling barrier goes through
   * (checked and done under one hold of mu, so nobody overtakes it). */
  if (nonblock && (b->state != B_FILLING || b->count + 1 != b->parties)) {
    rc = b->state == B_BROKEN ? PL_EBROKEN : PL_EWOULDWAIT;
    goto done;
  }
  /* Wait for the previous round to drain (or a reset to finish).  No
   * deadline: that only takes as long as the leavers need to leave. */
  while ((b->state == B_DRAINING || b->state == B_RESETTING) && rc == PL_OK)
    rc = pl_wait(ts, &b->mu, &b->cv, INT64_MAX);
  if (rc != PL_OK) goto done;          /* cancelled before arriving */
  if (b->state == B_BROKEN) {
    rc = PL_EBROKEN;
    goto done;
  }
  *index = b->count++;
  if (*index + 1 == b->parties) {              /* the last one lets all go */
    b->state = B_DRAINING;
    pthread_cond_broadcast(&b->cv);
  } else {
    while (b->state == B_FILLING && rc == PL_OK)
      rc = pl_wait(ts, &b->mu, &b->cv, deadline);
    if (b->state == B_FILLING) {               /* timed out or cancelled */
      barrier_break_locked(b);
    } else if (b->state == B_DRAINING) {
      rc = PL_OK;                      /* released: a late timeout does not count */
    } else {
      rc = PL_EBROKEN;                     /* broken or reset meanwhile */
    }
  }
  barrier_exit_locked(b);
done:
  pthread_mutex_unlock(&b->mu);
  if (!nonblock) pl_wait_end(ts);
  return rc;
}

void pl_barrier_abort(pl_barrier *b) {
  pthread_mutex_lock(&b->mu);
  barrier_break_locked(b);
  pthread_mutex_unlock(&b->mu);
}

void pl_barrier_reset(pl_barrier *b) {
  pthread_mutex_lock(&b->mu);
  if (b->count > 0) {
    /* Waiters leave with BROKEN; the last one out makes it filling again.
     * A draining round is left to finish as it is, as in Python. */
    if (b->state == B_FILLING || b->state == B_BROKEN) b->state = B_RESETTING;
  } else {
    b->state = B_FILLING;
  }
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

int pl_barrier_n_waiting(pl_barrier *b) {
  pthread_mutex_lock(&b->mu);
  int n = b->state == B_FILLING ? b->count : 0;
  pthread_mutex_unlock(&b->mu);
  return n;
}

int pl_barrier_broken(pl_barrier *b) {
  pthread_mutex_lock(&b->mu);
  int broken = b->state == B_BROKEN;
  pthread_mutex_unlock(&b->mu);
  return broken;
}
