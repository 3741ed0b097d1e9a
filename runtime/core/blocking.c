/* The one place a blocking system call lets the global lock go (blocking.h). */
#include <errno.h>

#include "core/blocking.h"
#include "core/enter.h"
#include "core/runtime.h"

static int runs_lua_holding_lock(pl_tstate *ts) {
  return ts != NULL && ts->holds_lock && atomic_load(&ts->running) != NULL;
}

int pl_blocking_would_release(void) { return runs_lua_holding_lock(pl_tstate_innermost()); }

pl_tstate *pl_blocking_begin(lua_State *L, pl_gil_reason why) {
  pl_tstate *ts = L != NULL ? pl_tstate_of(L) : pl_tstate_innermost();
  if (!runs_lua_holding_lock(ts)) return NULL;
  int saved = errno;
  pl_give_lock(ts, why);
  errno = saved;
  return ts;
}

void pl_blocking_end(pl_tstate *ts) {
  if (ts == NULL) return;
  int saved = errno;
  /* The same coroutine as before; re-arms the hook if a request came. */
  pl_take_lock(ts, atomic_load(&ts->running), 1);
  errno = saved;
}
