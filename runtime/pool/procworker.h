/* Private to the parlua runtime: what the parent and a worker process of
 * kind "processes" share -- the frames they exchange (wire.h) and how the
 * child starts (procworker.c).
 *
 *   parent -> child   F_INIT   [init function]           aux: PL_TASK_INIT
 *                     F_TASK   [fn, v1..vn]               aux: PL_TASK_* mode
 *   child -> parent   F_STARTED (its state is made; first of all)
 *                     F_READY  (init ran)
 *                     F_INIT_FAILED  tblen:u64 traceback [BrokenPool error]
 *                     F_RESULT tblen:u64 traceback [values]   aux: 1 if failed
 * Bracketed parts are messages in the portable form (portable.h).
 *
 * A soft time limit reaches the child as a signal, PL_SOFT_LIMIT_SIGNAL,
 * sent with sigqueue: its value says which task it is for (the number of
 * TASK frames the process has been sent, counting from 1) and the limit
 * (milliseconds), packed by pl_soft_limit_value.  Its handler arms the
 * hook that raises SoftTimeLimit in the task, unless that task has ended
 * meanwhile; one that comes before the process has read its task waits for
 * it.  A handler cannot wake a thread blocked in a wait, so the waits of a
 * worker process look at their flags every PL_CHILD_WAIT_SLICE_NS (no
 * thread of its own: starting one after the fork is what fork-unsafe
 * allocators and ThreadSanitizer do not survive).
 */
#ifndef PL_PROCWORKER_H
#define PL_PROCWORKER_H

#include <signal.h>
#include <stdint.h>

#include "core/runtime.h"

enum { F_INIT = 1, F_TASK, F_STARTED, F_READY, F_INIT_FAILED, F_RESULT };

#define PL_SOFT_LIMIT_SIGNAL SIGXCPU
#define PL_CHILD_WAIT_SLICE_NS (20 * 1000000LL)

static inline void *pl_soft_limit_value(unsigned task, double seconds) {
  uint64_t ms = seconds * 1000 > UINT32_MAX ? UINT32_MAX : (uint64_t)(seconds * 1000);
  return (void *)(uintptr_t)((uint64_t)task << 32 | ms);
}

/* What the child is given, read by the parent before the fork. */
typedef struct pl_procworker_ctx {
  int sock;                 /* its end of the socket */
  const luaL_Reg *modules;  /* the runtime's modules (static) */
  pl_preload *preloads;     /* the host's preloads (borrowed) */
  double interval;          /* the parent's switch interval */
  char name[64];            /* "Pool-1-Worker-2" */
} pl_procworker_ctx;

/* The child's main function (for pl_fork): its exit status. */
int pl_procworker_main(void *ud);

#endif
