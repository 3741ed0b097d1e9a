/* Private to the parlua runtime: a pool worker's seat in the state that
 * owns the pool -- a tstate of that state's family and a coroutine of it,
 * anchored in its registry.
 *
 * Both are made by the submitter that starts the worker, holding that
 * state's lock, where running out of memory is an error submit returns;
 * the worker thread then enters the state with them without allocating
 * anything (core/enter.h, pl_prepare).  Kind threads runs its tasks on its
 * seat for the worker's whole life; kinds states and processes take theirs
 * only to run done callbacks, which must run in the owning state.
 */
#ifndef PL_SEAT_H
#define PL_SEAT_H

#include "pool/executor.h"

typedef struct pl_seat {
  pl_tstate *ts;   /* of the owner's family, named as the worker */
  lua_State *co;   /* a coroutine of the owner's state */
  int co_ref;      /* its anchor in the registry */
} pl_seat;

/* Submitter, lock held, L a thread of fam's state: 0, or -1 when out of
 * memory (nothing made; lua_newthread may also raise, having made
 * nothing). */
int pl_seat_init(pl_seat *s, pl_family *fam, lua_State *L, const char *name);
/* Lock held: undo pl_seat_init (the worker thread did not start). */
void pl_seat_abandon(pl_seat *s, lua_State *L);

/* Worker thread: run the callbacks cbs of f in the owning state, on the
 * seat, seen meanwhile as the pool's worker w (a callback's
 * shutdown{wait=true} is refused rather than waiting for itself); then w's
 * tstate is `back` again. */
void pl_seat_run_callbacks(pl_seat *s, pl_worker *w, pl_future *f, pl_future_cb *cbs,
                           pl_tstate *back);
/* Worker thread, last: let go of the coroutine (taking the owner's lock)
 * and free the tstate. */
void pl_seat_free(pl_seat *s);

#endif
