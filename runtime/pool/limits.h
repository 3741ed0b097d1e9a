/* Private to the parlua runtime: per-task time limits of pools.
 *
 * A task may carry a soft and a hard limit (seconds from the moment it
 * starts).  When its worker starts it, the worker lists itself here with
 * the two deadlines; one watcher thread for the whole process sleeps until
 * the earliest deadline of all listed workers and calls the worker's
 * `fire` when one passes: the kinds then raise SoftTimeLimit in the task
 * (threads, states: through the tstate; processes: a signal the worker
 * process turns into the same), or stop it (threads, states: a forced
 * cancel raised as Timeout; processes: SIGKILL, and the worker is
 * replaced).  The worker unlists itself when the task ends, before its
 * cancel state is reset, so a limit never fires into the next task.
 *
 * Lock order: the watcher's mutex, then what `fire` takes (a worker's
 * cancel_mu).  `fire` runs with the watcher's mutex held and must not
 * arm or disarm.
 */
#ifndef PL_LIMITS_H
#define PL_LIMITS_H

#include <stdint.h>

/* Seconds; 0: no limit. */
typedef struct pl_limits {
  double soft, hard;
} pl_limits;

typedef struct pl_limitwatch pl_limitwatch;
struct pl_limitwatch {
  pl_limitwatch *next, *prev;      /* guarded by the watcher's mutex */
  int listed;                      /* written by the owner under that mutex */
  int64_t soft_at, hard_at;        /* guarded by it; INT64_MAX: none, or fired */
  pl_limits limits;                /* the armed task's */
  void (*fire)(pl_limitwatch *lw, int hard);
};

static inline int pl_limits_any(const pl_limits *l) { return l->soft > 0 || l->hard > 0; }

/* Owner thread: its task started now with these limits (none: nothing
 * to do) / ended.  Arm returns -1 when the watcher thread cannot start
 * (the task then runs without its limits). */
int pl_limitwatch_arm(pl_limitwatch *lw, const pl_limits *l);
void pl_limitwatch_disarm(pl_limitwatch *lw);

#endif
