/* Private to the parlua runtime: giving the global lock away around one
 * blocking system call.
 *
 * Every release point of the io/os library (runtime/blockio/iolib.c,
 * oslib.c) and of the libc interposers (runtime/blockio/interpose.c) goes
 * through this pair, which names the reason in the lock timeline
 * (PL_GIL_IO, PL_GIL_POPEN, PL_GIL_SLEEP).
 *
 *   pl_tstate *ts = pl_blocking_begin(L, PL_GIL_IO);  -- NULL: nothing released
 *   ... the system call, touching no Lua state ...
 *   pl_blocking_end(ts);                          -- errno is kept
 *
 * The lock is taken back urgently (the caller returns from a blocking call,
 * see gil.h), and the hook is re-armed if a hand-over or a forced cancel
 * came in meanwhile.
 */
#ifndef PL_BLOCKING_H
#define PL_BLOCKING_H

#include "lua.h"
#include "core/gil_trace.h"
#include "core/tstate.h"

/* L's thread lets go of L's lock; L == NULL: the calling thread's innermost
 * tstate, and only if it holds its lock and runs Lua code (so the runtime's
 * own system calls, made between two tasks, go straight through). */
pl_tstate *pl_blocking_begin(lua_State *L, pl_gil_reason why);
void pl_blocking_end(pl_tstate *ts);
/* pl_blocking_begin(NULL, ...) would let a lock go: the calling thread
 * holds its innermost family's lock and runs Lua code. */
int pl_blocking_would_release(void);

#endif
