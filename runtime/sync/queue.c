/* The FIFO queue behind par.queue (see queue.h).
 *
 * Items live in a ring buffer that grows by doubling (up to maxsize for a
 * bounded queue), so an unbounded queue costs memory only for what it
 * holds.  put signals one getter, get signals one putter; a waiter that
 * gives up after such a signal passes it on. */
#include <stdlib.h>

#include "core/debug.h"
#include "core/clock.h"
#include "codec/codec.h"
#include "proc/pqueue.h"
#include "sync/queue.h"

static void queue_destroy(pl_sync *s) {
  pl_queue *q = (pl_queue *)s;
  /* Reference items still inside are the binding's to drop (it does so
   * when it holds the last reference); what is left of them is reclaimed
   * when their state closes.  Encoded items are plain memory. */
  for (size_t i = 0; i < q->len; i++) {
    pl_qitem *it = &q->items[(q->first + i) % q->cap];
    if (it->kind == PL_QITEM_MSG) pl_msg_free(it->msg);
  }
  free(q->items);
  pl_pchan_free(atomic_load(&q->pchan));
  pthread_cond_destroy(&q->all_done);
  pthread_cond_destroy(&q->not_full);
  pthread_cond_destroy(&q->not_empty);
  pthread_mutex_destroy(&q->mu);
  free(q);
}

pl_queue *pl_queue_new(long long maxsize) {
  pl_queue *q = calloc(1, sizeof *q);
  if (q == NULL) return NULL;
  if (pthread_mutex_init(&q->mu, NULL) != 0) goto no_mu;
  if (pl_cond_init(&q->not_empty) != 0) goto no_not_empty;
  if (pl_cond_init(&q->not_full) != 0) goto no_not_full;
  if (pl_cond_init(&q->all_done) != 0) goto no_all_done;
  pl_sync_init(&q->head, PL_SYNC_QUEUE, queue_destroy);
  atomic_init(&q->shared, 0);
  atomic_init(&q->pchan, NULL);
  q->maxsize = maxsize;
  return q;
no_all_done:
  pthread_cond_destroy(&q->not_full);
no_not_full:
  pthread_cond_destroy(&q->not_empty);
no_not_empty:
  pthread_mutex_destroy(&q->mu);
no_mu:
  free(q);
  return NULL;
}

static int full_locked(pl_queue *q) {
  PL_ASSERT_HELD(&q->mu);
  return q->maxsize > 0 && q->len >= (size_t)q->maxsize;
}

/* Make room for one more item; -1 when out of memory. */
static int grow_locked(pl_queue *q) {
  PL_ASSERT_HELD(&q->mu);
  size_t ncap = q->cap != 0 ? q->cap * 2 : 8;
  if (q->maxsize > 0 && ncap > (size_t)q->maxsize) ncap = (size_t)q->maxsize;
  if (ncap <= q->cap || ncap > SIZE_MAX / sizeof(pl_qitem)) return -1;
  pl_qitem *items = malloc(ncap * sizeof *items);
  if (items == NULL) return -1;
  for (size_t i = 0; i < q->len; i++) items[i] = q->items[(q->first + i) % q->cap];
  free(q->items);
  q->items = items;
  q->cap = ncap;
  q->first = 0;
  return 0;
}

static int put_locked(pl_queue *q, const pl_qitem *it) {
  PL_ASSERT_HELD(&q->mu);
  if (atomic_load(&q->pchan) != NULL) return PL_EMOVED;
  if (q->closed) return PL_ECLOSED;
  if (it->kind == PL_QITEM_REF && atomic_load(&q->shared)) return PL_ESHARED;
  if (full_locked(q)) return PL_EWOULDWAIT;
  if (q->len == q->cap && grow_locked(q) != 0) return PL_ENOMEM;
  q->items[(q->first + q->len) % q->cap] = *it;
  q->len++;
  q->unfinished++;
  q->epoch++;
  pthread_cond_signal(&q->not_empty);
  return 0;
}

static int get_locked(pl_queue *q, pl_qitem *out) {
  PL_ASSERT_HELD(&q->mu);
  if (q->len == 0 && atomic_load(&q->pchan) != NULL) return PL_EMOVED;
  if (q->len == 0) return q->closed ? PL_ECLOSED : PL_EWOULDWAIT;
  *out = q->items[q->first];
  q->first = (q->first + 1) % q->cap;
  q->len--;
  q->epoch++;
  pthread_cond_signal(&q->not_full);
  return 0;
}

int pl_queue_try_put(pl_queue *q, const pl_qitem *it) {
  pthread_mutex_lock(&q->mu);
  int rc = put_locked(q, it);
  pthread_mutex_unlock(&q->mu);
  return rc;
}

int pl_queue_put(pl_queue *q, pl_tstate *ts, int64_t deadline, const pl_qitem *it) {
  int rc = PL_OK, got;
  pl_wait_begin(ts, &q->mu, &q->not_full);
  pthread_mutex_lock(&q->mu);
  for (;;) {
    if ((got = put_locked(q, it)) != PL_EWOULDWAIT) {
      rc = got;
      break;
    }
    if (rc != PL_OK) break;  /* timed out, and one last look failed */
    rc = pl_wait(ts, &q->mu, &q->not_full, deadline);
    if (rc == PL_ECANCELLED) {
      if (!full_locked(q)) pthread_cond_signal(&q->not_full);  /* pass it on */
      break;
    }
  }
  pthread_mutex_unlock(&q->mu);
  pl_wait_end(ts);
  return rc;
}

int pl_queue_try_get(pl_queue *q, pl_qitem *out) {
  pthread_mutex_lock(&q->mu);
  int rc = get_locked(q, out);
  pthread_mutex_unlock(&q->mu);
  return rc;
}

int pl_queue_get(pl_queue *q, pl_tstate *ts, int64_t deadline, pl_qitem *out) {
  int rc = PL_OK, got;
  pl_wait_begin(ts, &q->mu, &q->not_empty);
  pthread_mutex_lock(&q->mu);
  for (;;) {
    if ((got = get_locked(q, out)) != PL_EWOULDWAIT) {
      rc = got;
      break;
    }
    if (rc != PL_OK) break;
    rc = pl_wait(ts, &q->mu, &q->not_empty, deadline);
    if (rc == PL_ECANCELLED) {
      if (q->len > 0) pthread_cond_signal(&q->not_empty);
      break;
    }
  }
  pthread_mutex_unlock(&q->mu);
  pl_wait_end(ts);
  return rc;
}

int pl_queue_task_done(pl_queue *q) {
  int rc = 0;
  pthread_mutex_lock(&q->mu);
  if (atomic_load(&q->pchan) != NULL) rc = PL_EMOVED;
  else if (q->unfinished <= 0) rc = PL_ETOOMANY;
  else if (--q->unfinished == 0) pthread_cond_broadcast(&q->all_done);
  pthread_mutex_unlock(&q->mu);
  return rc;
}

int pl_queue_join(pl_queue *q, pl_tstate *ts, int64_t deadline) {
  int rc = PL_OK;
  pl_wait_begin(ts, &q->mu, &q->all_done);
  pthread_mutex_lock(&q->mu);
  while (q->unfinished > 0 && atomic_load(&q->pchan) == NULL && rc == PL_OK)
    rc = pl_wait(ts, &q->mu, &q->all_done, deadline);
  if (atomic_load(&q->pchan) != NULL) rc = PL_EMOVED;
  else if (q->unfinished == 0) rc = PL_OK;
  pthread_mutex_unlock(&q->mu);
  pl_wait_end(ts);
  return rc;
}

long long pl_queue_unfinished(pl_queue *q) {
  pthread_mutex_lock(&q->mu);
  long long n = q->unfinished;
  pthread_mutex_unlock(&q->mu);
  return n;
}

void pl_queue_close(pl_queue *q) {
  pthread_mutex_lock(&q->mu);
  q->closed = 1;
  pthread_cond_broadcast(&q->not_empty);
  pthread_cond_broadcast(&q->not_full);
  pthread_mutex_unlock(&q->mu);
}

int pl_queue_closed(pl_queue *q) {
  pthread_mutex_lock(&q->mu);
  int closed = q->closed;
  pthread_mutex_unlock(&q->mu);
  return closed;
}

size_t pl_queue_size(pl_queue *q) {
  pthread_mutex_lock(&q->mu);
  size_t n = q->len;
  pthread_mutex_unlock(&q->mu);
  return n;
}

int pl_queue_share_begin(pl_queue *q, pl_qitem **items, size_t *n, uint64_t *epoch) {
  int rc = 1;
  *items = NULL;
  *n = 0;
  pthread_mutex_lock(&q->mu);
  if (!atomic_load(&q->shared) && !q->sharing) {
    size_t refs = 0;
    for (size_t i = 0; i < q->len; i++)
      if (q->items[(q->first + i) % q->cap].kind == PL_QITEM_REF) refs++;
    if (refs == 0) {
      atomic_store(&q->shared, 1);
    } else if ((*items = malloc(refs * sizeof **items)) == NULL) {
      rc = -1;
    } else {
      for (size_t i = 0; i < q->len; i++) {
        pl_qitem *it = &q->items[(q->first + i) % q->cap];
        if (it->kind == PL_QITEM_REF) (*items)[(*n)++] = *it;
      }
      *epoch = q->epoch;
      q->sharing = 1;
      rc = 0;
    }
  }
  pthread_mutex_unlock(&q->mu);
  return rc;
}

int pl_queue_share_commit(pl_queue *q, uint64_t epoch, const pl_qitem *encoded, size_t n) {
  pthread_mutex_lock(&q->mu);
  int ok = q->epoch == epoch;
  if (ok) {
    size_t k = 0;
    for (size_t i = 0; i < q->len && k < n; i++) {
      pl_qitem *it = &q->items[(q->first + i) % q->cap];
      if (it->kind == PL_QITEM_REF) *it = encoded[k++];
    }
    atomic_store(&q->shared, 1);
  }
  q->sharing = 0;
  pthread_mutex_unlock(&q->mu);
  return ok;
}

void pl_queue_share_abort(pl_queue *q) {
  pthread_mutex_lock(&q->mu);
  q->sharing = 0;
  pthread_mutex_unlock(&q->mu);
}
