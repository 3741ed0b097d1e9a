/* Entering and leaving a state family; opening and closing a runtime
 * (see enter.h for the order of the steps and why). */
#include <stdio.h>
#include <stdlib.h>

#include "core/debug.h"
#include "core/enter.h"

pl_tstate *pl_prepare(pl_family *fam, const char *name) {
  pl_tstate *ts = pl_tstate_new_unowned(fam);
  if (ts != NULL && name != NULL) snprintf(ts->name, sizeof ts->name, "%s", name);
  return ts;
}

void pl_attach_prepared(pl_tstate *ts) {
  pl_tstate_own(ts);
  pl_tstate_push(ts);
  PL_ASSERT(pl_tstate_current(ts->fam) == ts);
}

pl_tstate *pl_attach(pl_family *fam, const char *name) {
  pl_tstate *ts = pl_prepare(fam, name);
  if (ts != NULL) pl_attach_prepared(ts);
  return ts;
}

static void pop(pl_tstate *ts) {
  PL_ASSERT(pl_tstate_current(ts->fam) == ts);    /* the newest of this thread */
  PL_ASSERT(!pl_gil_held_by(&ts->fam->gil, ts));  /* let go of first */
  pl_tstate_pop(ts);
}

void pl_detach(pl_tstate *ts) {
  pop(ts);
  pl_tstate_free(ts);
}

void pl_detach_keep(pl_tstate *ts) {
  pop(ts);
  pl_tstate_disown(ts);
}

void pl_take_lock(pl_tstate *ts, lua_State *L, int urgent) {
  PL_ASSERT(!pl_gil_held_by(&ts->fam->gil, ts));  /* the lock is not reentrant */
  pl_gil_acquire(&ts->fam->gil, ts, urgent);
  PL_ASSERT(pl_gil_held_by(&ts->fam->gil, ts));
  if (L != NULL) pl_tstate_set_running(ts, L);
}

void pl_drop_lock(pl_tstate *ts, pl_gil_reason why) {
  PL_ASSERT(pl_gil_held_by(&ts->fam->gil, ts));
  pl_tstate_set_running(ts, NULL);
  pl_gil_release(&ts->fam->gil, ts, why);
}

pl_tstate *pl_enter(pl_family *fam, lua_State *L, const char *name) {
  pl_tstate *ts = pl_attach(fam, name);
  if (ts != NULL) pl_take_lock(ts, L, 1);
  return ts;
}

void pl_leave(pl_tstate *ts) {
  pl_drop_lock(ts, PL_GIL_LEAVE);
  pl_detach(ts);
}

void pl_enter_prepared(pl_tstate *ts, lua_State *L) {
  pl_attach_prepared(ts);
  pl_take_lock(ts, L, 1);
}

void pl_leave_keep(pl_tstate *ts) {
  pl_drop_lock(ts, PL_GIL_LEAVE);
  pl_detach_keep(ts);
}

void pl_give_lock(pl_tstate *ts, pl_gil_reason why) {
  PL_ASSERT(pl_gil_held_by(&ts->fam->gil, ts));
  pl_gil_release(&ts->fam->gil, ts, why);
}

pl_tstate *pl_unlock(lua_State *L, pl_gil_reason why) {
  pl_tstate *ts = pl_tstate_of(L);
  if (ts != NULL) pl_give_lock(ts, why);
  return ts;
}

void pl_lock(lua_State *L, pl_tstate *ts) {
  if (ts != NULL) pl_take_lock(ts, L, 1);
}

void pl_host_enter(parlua *rt) {
  pl_tstate *ts = pl_tstate_current(&rt->main);
  /* Nested, or a thread of this runtime that holds the lock already (a C
   * function called from a par.thread or a pool worker): just count. */
  if (ts != NULL && (ts->depth > 0 || pl_gil_held_by(&rt->main.gil, ts))) {
    ts->depth++;
    return;
  }
  ts = pl_attach(&rt->main, NULL);
  if (ts == NULL) abort();  /* nothing sensible to do without memory */
  ts->made_by_enter = 1;
  ts->host = 1;
  ts->depth = 1;
  pl_take_lock(ts, rt->main.L, 1);
}

void pl_host_leave(parlua *rt) {
  pl_tstate *ts = pl_tstate_current(&rt->main);
  if (ts == NULL || --ts->depth > 0 || !ts->made_by_enter) return;
  pl_leave(ts);
}

int pl_runtime_open(parlua *rt, const parlua_config *cfg, const luaL_Reg *modules,
                    pl_preload *borrowed) {
  if (pl_runtime_init(rt, cfg) != 0) return PL_ENOMEM;
  rt->modules = modules;
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
