/* Entering and leaving a state family; opening and closing a runtime
 * (see enter.h for the order of the steps and why). */
#include <stdio.h>

#include "core/enter.h"

pl_tstate *pl_attach(pl_family *fam, const char *name) {
  pl_tstate *ts = pl_tstate_new(fam, NULL);
  if (ts == NULL) return NULL;
  if (name != NULL) snprintf(ts->name, sizeof ts->name, "%s", name);
  pl_tstate_push(ts);
  return ts;
}

void pl_detach(pl_tstate *ts) {
  pl_tstate_pop(ts);
  pl_tstate_free(ts);
}

void pl_take_lock(pl_tstate *ts, lua_State *L, int urgent) {
  pl_gil_acquire(&ts->fam->gil, ts, urgent);
  if (L != NULL) pl_tstate_set_running(ts, L);
}

void pl_drop_lock(pl_tstate *ts) {
  pl_tstate_set_running(ts, NULL);
  pl_gil_release(&ts->fam->gil, ts);
}

pl_tstate *pl_enter(pl_family *fam, lua_State *L, const char *name) {
  pl_tstate *ts = pl_attach(fam, name);
  if (ts != NULL) pl_take_lock(ts, L, 1);
  return ts;
}

void pl_leave(pl_tstate *ts) {
  pl_drop_lock(ts);
  pl_detach(ts);
}

void pl_give_lock(pl_tstate *ts) { pl_gil_release(&ts->fam->gil, ts); }

pl_tstate *pl_unlock(lua_State *L) {
  pl_tstate *ts = pl_tstate_of(L);
  if (ts != NULL) pl_give_lock(ts);
  return ts;
}

void pl_lock(lua_State *L, pl_tstate *ts) {
  if (ts != NULL) pl_take_lock(ts, L, 1);
}

int pl_runtime_open(parlua *rt, const parlua_config *cfg, pl_preload *borrowed) {
  if (pl_runtime_init(rt, cfg) != 0) return PL_ENOMEM;
  rt->preloads = borrowed;
  rt->borrows_preloads = borrowed != NULL;
  rt->main.L = pl_state_new(rt, &rt->main);
  if (rt->main.L == NULL) {
    pl_runtime_close(rt);
    return PL_ENOMEM;
  }
  return 0;
}

void pl_runtime_close_state(parlua *rt) {
  pl_runtime_shutdown(rt, rt->main.L);
  lua_close(rt->main.L);
  rt->main.L = NULL;
}

void pl_runtime_close(parlua *rt) {
  if (rt->borrows_preloads) rt->preloads = NULL;  /* the lender frees them */
  pl_runtime_destroy(rt);
}
