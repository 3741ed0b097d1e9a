/* Private to the parlua runtime: the short pipeline of a worker whose
 * tasks run in another process (kinds processes and mpi).  A round trip
 * per task costs two wake-ups, far more than a trivial task, so while
 * many tasks wait and this worker's tasks are short, its thread sends a
 * task and goes back for the next at once, keeping up to PL_PIPELINE_DEPTH
 * in flight, and collects the results in order.  The rule for when to do
 * so lives here alone, so that the two kinds cannot drift apart (kind mpi
 * once lacked the batch check below and went 2+6).
 *
 * Batches.  A task's length speaks only for tasks of its own batch: a
 * submit to a pool with nothing queued or running starts a new one (the
 * previous results are all out, so what comes now says nothing of how
 * long the next tasks take).
 *
 * Only the worker thread touches a pl_pipeline. */
#ifndef PL_PIPELINE_H
#define PL_PIPELINE_H

#include <stdatomic.h>
#include <stdint.h>

#include "pool/executor.h"

#define PL_PIPELINE_DEPTH 6                  /* tasks a worker keeps in flight */
#define PL_PIPELINE_SHORT_NS (1000 * 1000LL) /* tasks shorter than this are pipelined */

typedef struct pl_pipeline {
  pl_future *flight[PL_PIPELINE_DEPTH];  /* sent, not yet completed */
  int64_t sent_at[PL_PIPELINE_DEPTH];    /* ... and when each was sent */
  unsigned sent_batch[PL_PIPELINE_DEPTH]; /* ... and the batch it came in */
  int head, len;
  int64_t last_ns;       /* how long the last task took, send to result; 0: unknown */
  unsigned last_batch;   /* ... and the batch it came in */
} pl_pipeline;

/* Submitter: the batch of a task submitted now to e, counted in *batch
 * (the kind's, one per executor). */
unsigned pl_pipeline_batch_of_submit(pl_executor *e, atomic_uint *batch);

/* A task of this batch sent now: its slot in the ring (for the kind's own
 * data beside it).  The ring must not be full. */
int pl_pipeline_push(pl_pipeline *p, pl_future *f, unsigned batch);
/* The oldest task's result came: its future, its length noted. */
pl_future *pl_pipeline_pop(pl_pipeline *p);
/* The worker found no work: the tasks that come next are measured anew. */
void pl_pipeline_forget(pl_pipeline *p);

/* Whether to leave the task of this batch just sent in flight and take
 * another at once, the kind allowing it (its process is there, no
 * interrupt or time limit is at hand), ntasks sent to the current
 * process or state. */
int pl_pipeline_keep_going(const pl_pipeline *p, pl_worker *w, unsigned batch, int ntasks);

#endif
