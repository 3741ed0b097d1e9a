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
 */
#ifndef PL_PROCWORKER_H
#define PL_PROCWORKER_H

#include "core/runtime.h"

enum { F_INIT = 1, F_TASK, F_STARTED, F_READY, F_INIT_FAILED, F_RESULT };

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
