/* Private to the parlua bindings: what lpool.c needs from lfuture.c.
 *
 * A Future box is a userdata holding one reference to a pl_future; it is
 * the future's holder in the sense of runtime/future.h (its __gc orphans
 * the future, which lets go of the stored value).
 */
#ifndef PL_LFUTURE_H
#define PL_LFUTURE_H

#include <stdint.h>

#include "bindings.h"
#include "sync/future.h"

/* [-0, +1] a new Future box for f in a state of family fam; the box takes
 * over one reference.  mt: an index of the Future metatable, or 0. */
void pl_future_box(lua_State *L, pl_future *f, pl_family *fam, int mt);

/* Wait until f is done or the deadline passes, without the global lock.
 * `urgent`: take the lock back at once (a caller that will run on) rather
 * than after a switch interval when another thread is running Lua (a bulk
 * collector that wants the workers to finish a batch first).
 * Returns 1 when done, 0 on timeout; raises Cancelled when the calling
 * thread was cancelled. */
int pl_future_block(lua_State *L, pl_future *f, int64_t deadline, int urgent);

/* [-0, +0] raise what a done future raises from result(): its error value
 * (unchanged, with the worker traceback noted) or Cancelled. */
int pl_future_raise(lua_State *L, pl_future *f);

#endif
