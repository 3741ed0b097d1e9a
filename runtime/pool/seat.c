/* A pool worker's seat in the owning state (see seat.h). */
#include "lauxlib.h"
#include "core/enter.h"
#include "pool/seat.h"

int pl_seat_init(pl_seat *s, pl_family *fam, lua_State *L, const char *name) {
  s->co = lua_newthread(L);
  s->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->ts = pl_prepare(fam, name);
  if (s->ts != NULL) return 0;
  luaL_unref(L, LUA_REGISTRYINDEX, s->co_ref);
  return -1;
}

void pl_seat_abandon(pl_seat *s, lua_State *L) {
  luaL_unref(L, LUA_REGISTRYINDEX, s->co_ref);
  pl_tstate_free(s->ts);
  s->ts = NULL;
}

void pl_seat_run_callbacks(pl_seat *s, pl_worker *w, pl_future *f, pl_future_cb *cbs,
                           pl_tstate *back) {
  pl_enter_prepared(s->ts, s->co);
  pl_executor_set_tstate(w, s->ts);
  pl_future_run_callbacks(s->co, f, cbs);
  lua_settop(s->co, 0);
  pl_executor_set_tstate(w, back);
  pl_leave_keep(s->ts);
}

void pl_seat_free(pl_seat *s) {
  pl_enter_prepared(s->ts, s->co);
  /* Dropping the anchor allocates nothing, so co cannot be collected
   * while this call still uses its stack; it is not touched afterwards. */
  luaL_unref(s->co, LUA_REGISTRYINDEX, s->co_ref);
  pl_leave(s->ts);
  s->ts = NULL;
}
