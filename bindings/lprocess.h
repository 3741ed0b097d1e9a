/* Private to the parlua bindings: processes, pipes, and the cross-process
 * side of queues (lprocess.c, lpipe.c, lpqueue.c). */
#ifndef PL_LPROCESS_H
#define PL_LPROCESS_H

#include "bindings.h"
#include "proc/portable.h"
#include "sync/queue.h"

void pl_open_process(lua_State *L);
void pl_open_pipe(lua_State *L);

/* The methods of a queue that has a process channel (runtime/pqueue.h),
 * for lqueue.c: each works as its in-process counterpart, raising the
 * same errors.  `timeout`: seconds, -1 forever, 0 not at all. */
int pl_pqueue_put(lua_State *L, pl_queue *q, int idx, double timeout);
int pl_pqueue_get(lua_State *L, pl_queue *q, double timeout);   /* [-0, +1] */
int pl_pqueue_qsize(lua_State *L, pl_queue *q);                 /* [-0, +1] */
int pl_pqueue_full(lua_State *L, pl_queue *q);                  /* [-0, +1] */
int pl_pqueue_task_done(lua_State *L, pl_queue *q);
int pl_pqueue_join(lua_State *L, pl_queue *q, double timeout);  /* [-0, +1] */
int pl_pqueue_close(lua_State *L, pl_queue *q);
int pl_pqueue_is_closed(lua_State *L, pl_queue *q);             /* [-0, +1] */

/* [-0, +n] Decode a portable message, protected: it is freed either way,
 * and a Transfer error is raised after that. */
int pl_pmsg_push(lua_State *L, pl_pmsg *m);

#endif
