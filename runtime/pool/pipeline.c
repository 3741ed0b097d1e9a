/* The short pipeline's rule (pipeline.h), shared by kinds processes and mpi. */
#include "pool/pipeline.h"

#include "core/clock.h"

/* A task taken but not yet counted running makes a new batch early: that
 * only costs some pipelining. */
unsigned pl_pipeline_batch_of_submit(pl_executor *e, atomic_uint *batch) {
  if (atomic_load_explicit(&e->queued, memory_order_relaxed) == 0 &&
      atomic_load_explicit(&e->running, memory_order_relaxed) == 0)
    return atomic_fetch_add_explicit(batch, 1, memory_order_relaxed) + 1;
  return atomic_load_explicit(batch, memory_order_relaxed);
}

int pl_pipeline_push(pl_pipeline *p, pl_future *f, unsigned batch) {
  int at = (p->head + p->len) % PL_PIPELINE_DEPTH;
  p->flight[at] = f;
  p->sent_at[at] = pl_now_ns();
  p->sent_batch[at] = batch;
  p->len++;
  return at;
}

pl_future *pl_pipeline_pop(pl_pipeline *p) {
  pl_future *f = p->flight[p->head];
  p->last_ns = pl_now_ns() - p->sent_at[p->head];
  p->last_batch = p->sent_batch[p->head];
  p->head = (p->head + 1) % PL_PIPELINE_DEPTH;
  p->len--;
  return f;
}

void pl_pipeline_forget(pl_pipeline *p) { p->last_ns = 0; }

/* Only while many tasks wait and no other worker is free to take them, so
 * that tasks are never kept from idle workers (two tasks on two workers
 * must run side by side, and a worker still busy with the last of a batch
 * of short tasks must not hoard the long ones after it), and only while
 * tasks are short: a task queued behind a long one in a busy worker could
 * have run elsewhere (20 sleeps of 0.1 s on 4 workers must take 0.5 s),
 * while for short ones the hand-offs saved are what counts.  The last
 * task's length speaks only for tasks of its own batch: 8 long tasks
 * submitted on the last short one's result went 2+6 while the worker that
 * ran it was still busy with its done callback, so nothing had made it
 * forget its measure. */
int pl_pipeline_keep_going(const pl_pipeline *p, pl_worker *w, unsigned batch, int ntasks) {
  pl_executor *e = w->e;
  long threshold = e->max_workers > 2 ? e->max_workers : 2;
  return p->len < PL_PIPELINE_DEPTH && p->last_ns > 0 && p->last_ns < PL_PIPELINE_SHORT_NS &&
         p->last_batch == batch &&
         pl_now_ns() - p->sent_at[p->head] < PL_PIPELINE_SHORT_NS &&  /* the oldest is not a long one */
         atomic_load_explicit(&e->queued, memory_order_relaxed) >= threshold &&
         /* another worker is free to take the next task: leave it to it */
         atomic_load_explicit(&e->looking, memory_order_relaxed) == 0 &&
         atomic_load_explicit(&e->sleeping, memory_order_relaxed) == 0 &&
         (e->max_tasks_per_worker == 0 || ntasks < e->max_tasks_per_worker);
}
