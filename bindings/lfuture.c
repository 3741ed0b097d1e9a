/* Future objects, par.wait and par.as_completed: Python's
 * concurrent.futures waiting API over runtime/future.c.
 *
 * Where API.md is silent, Python decides:
 *   - result([timeout]) returns every value the task returned; it raises
 *     the task's own error value unchanged (a table stays the same table,
 *     with the worker traceback noted so that a script dying of it shows
 *     both), a Cancelled error ("future was cancelled") for a cancelled
 *     future, or a Timeout error ("future not done after N seconds").
 *     exception([timeout]) waits the same way and returns the error value
 *     or nil (Cancelled and Timeout are raised, as in Python).
 *   - cancel() succeeds only while the task waits in the queue.
 *   - add_done_callback(fn): fn(future) runs once the future is done, in
 *     the thread that finished it and holding the lock (for kind threads,
 *     the worker; for cancel(), the caller), or at once in the caller if
 *     it is done already; callbacks run in the order they were added.  A
 *     callback that raises is reported on stderr with its traceback ("an
 *     exception in a done callback of Future(...)") and nothing else
 *     happens: the pool goes on.
 *   - par.wait(futures [, {timeout=, return_when=}]) -> done, not_done:
 *     arrays in input order (a future listed twice is listed twice);
 *     return_when is "ALL_COMPLETED" (default), "FIRST_COMPLETED" or
 *     "FIRST_EXCEPTION" (a cancelled future is not an exception), also
 *     as par.ALL_COMPLETED, par.FIRST_COMPLETED, par.FIRST_EXCEPTION.
 *   - par.as_completed(futures [, timeout]): an iterator that yields the
 *     futures already done first (in input order), then the others as they
 *     finish; once `timeout` seconds have passed since the call it raises
 *     Timeout ("N (of M) futures unfinished").  It is a to-be-closed value
 *     of the generic for, so leaving the loop early lets go of the futures.
 * Waiting for many futures uses a pl_waiter (no polling); every wait gives
 * the global lock away and can be cancelled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"
#include "core/clock.h"
#include "lfuture.h"

static const char FUTURE_MT[] = "parlua.Future";
static const char WAITSET_MT[] = "parlua.FutureWaitSet";

/* A Future box: the future first (so the pl_box_* helpers apply), then
 * the family of the state the box lives in, whose thread states wait. */
typedef struct fbox {
  pl_future *f;
  pl_family *fam;
} fbox;

static pl_future *check_future(lua_State *L, int idx) {
  return pl_box_check(L, idx, FUTURE_MT, "future");
}

/* The box at idx, checked against the metatable in the calling method's
 * upvalue 1 (no registry lookup), or the full check and its errors. */
static fbox *check_box(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TUSERDATA && lua_getmetatable(L, idx)) {
    int ours = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ours) {
      fbox *b = lua_touserdata(L, idx);
      if (b->f != NULL) return b;
    }
  }
  check_future(L, idx);
  return lua_touserdata(L, idx);
}

void pl_future_box(lua_State *L, pl_future *f, pl_family *fam, int mt) {
  fbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->f = f;
  b->fam = fam;
  if (mt != 0) {
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
  } else {
    luaL_setmetatable(L, FUTURE_MT);
  }
  if (fam == NULL || fam->rt->adopted) pl_adopted_touch(L);
}

/* A short description for messages and __tostring. */
static void describe(pl_future *f, char *buf, size_t size) {
  int s = pl_future_state(f);
  if (s == PL_FUTURE_PENDING) snprintf(buf, size, "Future(pending)");
  else if (s == PL_FUTURE_RUNNING) snprintf(buf, size, "Future(running)");
  else if (s == PL_FUTURE_CANCELLED) snprintf(buf, size, "Future(cancelled)");
  else if (pl_future_outcome(f) == PL_OUTCOME_ERROR) snprintf(buf, size, "Future(finished, raised an error)");
  else snprintf(buf, size, "Future(finished)");
}

/* pl_future_block for the thread state ts of L (may be NULL). */
static int block(lua_State *L, pl_tstate *ts, pl_future *f, int64_t deadline, int urgent) {
  pl_check_cancel(L, ts);
  if (ts != NULL) pl_give_lock(ts, PL_GIL_FUTURE);
  int rc = pl_future_wait(f, ts, deadline);
  if (ts != NULL) pl_take_lock(ts, L, urgent);
  if (rc == PL_ECANCELLED || pl_cancel_forced(ts)) {
    pl_error_raise_cancelled(L, ts);
  }
  return rc == PL_OK;
}

int pl_future_block(lua_State *L, pl_future *f, int64_t deadline, int urgent) {
  if (pl_future_done(f)) return 1;
  return block(L, pl_tstate_of(L), f, deadline, urgent);
}

int pl_future_raise(lua_State *L, pl_future *f) {
  if (pl_future_state(f) == PL_FUTURE_CANCELLED)
    return pl_error_raise(L, PL_CANCELLED, "future was cancelled");
  pl_future_push(L, f);
  const char *tb = pl_future_traceback(f);
  if (tb != NULL) {
    lua_pushstring(L, tb);
    pl_error_note_origin(L, -2, -1);
    lua_pop(L, 1);
  }
  return pl_error_rethrow(L);
}

/* Wait for the box at 1 with the timeout at 2; raise Timeout. */
static pl_future *wait_arg(lua_State *L) {
  fbox *b = check_box(L, 1);
  pl_future *f = b->f;
  double timeout = pl_opt_timeout(L, 2);
  if (pl_future_done(f)) return f;
  pl_tstate *ts = b->fam != NULL ? pl_tstate_current(b->fam) : pl_tstate_of(L);
  if (!block(L, ts, f, pl_deadline_after(timeout), 1))
    pl_error_raise(L, PL_TIMEOUT, "future not done after %f seconds", (lua_Number)timeout);
  return f;
}

static int future_result(lua_State *L) {
  pl_future *f = wait_arg(L);
  if (pl_future_state(f) == PL_FUTURE_FINISHED && pl_future_outcome(f) == PL_OUTCOME_OK) {
    lua_settop(L, 1);  /* keep the box: pushing may collect garbage */
    return pl_future_push(L, f);
  }
  return pl_future_raise(L, f);
}

static int future_exception(lua_State *L) {
  pl_future *f = wait_arg(L);
  if (pl_future_state(f) == PL_FUTURE_CANCELLED) return pl_future_raise(L, f);
  if (pl_future_outcome(f) == PL_OUTCOME_OK) return 0;
  return pl_future_push(L, f);
}

static int future_traceback(lua_State *L) {
  const char *tb = pl_future_traceback(check_future(L, 1));
  if (tb == NULL) return 0;
  lua_pushstring(L, tb);
  return 1;
}

static int future_done(lua_State *L) {
  lua_pushboolean(L, pl_future_done(check_future(L, 1)));
  return 1;
}

static int future_running(lua_State *L) {
  lua_pushboolean(L, pl_future_state(check_future(L, 1)) == PL_FUTURE_RUNNING);
  return 1;
}

static int future_cancelled(lua_State *L) {
  lua_pushboolean(L, pl_future_state(check_future(L, 1)) == PL_FUTURE_CANCELLED);
  return 1;
}

static int future_cancel(lua_State *L) {
  pl_future *f = check_future(L, 1);
  int cancelled;
  pl_future_cb *cbs = pl_future_cancel(f, &cancelled);
  pl_future_run_callbacks(L, f, cbs);
  lua_pushboolean(L, cancelled);
  return 1;
}

/* ---- done callbacks -------------------------------------------------- */

typedef struct lua_cb {
  pl_future_cb base;
  int fn_ref, box_ref;  /* the function, and the box it receives */
} lua_cb;

static void callback_run(lua_State *L, pl_future *f, pl_future_cb *base) {
  lua_cb *cb = (lua_cb *)base;
  int top = lua_gettop(L);
  if (lua_checkstack(L, 8)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, cb->fn_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, cb->box_ref);
    if (pl_pcall_traced(L, 1, 0) != LUA_OK) {
      char what[64];
      describe(f, what, sizeof what);
      const char *tb = lua_tostring(L, -1);
      pl_stderr_claim();  /* not on a progress bar's line */
      fprintf(stderr, "an exception in a done callback of %s:\n%s\n", what, tb != NULL ? tb : "?");
      fflush(stderr);
    }
  }
  lua_settop(L, top);
  luaL_unref(L, LUA_REGISTRYINDEX, cb->fn_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, cb->box_ref);
  free(cb);
}

static int is_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return 1;
  int has = luaL_getmetafield(L, idx, "__call") != LUA_TNIL;
  if (has) lua_pop(L, 1);
  return has;
}

static int future_add_done_callback(lua_State *L) {
  pl_future *f = check_future(L, 1);
  if (!is_callable(L, 2)) return luaL_typeerror(L, 2, "function");
  lua_cb *cb = calloc(1, sizeof *cb);
  if (cb == NULL) return luaL_error(L, "not enough memory");
  cb->base.run = callback_run;
  cb->fn_ref = cb->box_ref = LUA_NOREF;
  lua_pushvalue(L, 2);
  cb->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 1);
  cb->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (pl_future_add_callback(f, &cb->base)) callback_run(L, f, &cb->base);
  return 0;
}

/* Upvalue 1: the Future metatable (a finalizer runs for every box). */
static int future_gc(lua_State *L) {
  int ours = 0;
  if (lua_type(L, 1) == LUA_TUSERDATA && lua_getmetatable(L, 1)) {
    ours = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
  }
  void **box = ours ? lua_touserdata(L, 1) : pl_box_get(L, 1, FUTURE_MT);
  pl_future *f = *box;
  if (f == NULL) return 0;
  *box = NULL;
  pl_future_orphan(f, L);
  pl_future_decref(f);
  return 0;
}

static int future_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, FUTURE_MT);
  char buf[64];
  if (*box == NULL) return lua_pushliteral(L, "Future (closed)"), 1;
  describe(*box, buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

/* ---- waiting for many ------------------------------------------------ */

/* A pl_waiter watching n futures: the state of par.wait and of an
 * as_completed iteration.  The futures are referenced for its life. */
typedef struct entry {
  pl_future *f;
  pl_waitlink link;
} entry;

typedef struct waitset {
  pl_waiter *w;
  size_t n, yielded;
  int64_t deadline;
  double timeout;
  entry entries[];
} waitset;

static void waitset_release(waitset *ws, lua_State *L) {
  if (ws->w == NULL) return;
  for (size_t i = 0; i < ws->n; i++) {
    if (ws->entries[i].f == NULL) continue;
    pl_waiter_unwatch(ws->w, ws->entries[i].f, &ws->entries[i].link);
    pl_future_decref(ws->entries[i].f);
    ws->entries[i].f = NULL;
  }
  (void)L;
  pl_waiter_free(ws->w);
  ws->w = NULL;
}

static int waitset_gc(lua_State *L) {
  waitset_release(luaL_checkudata(L, 1, WAITSET_MT), L);
  return 0;
}

/* [-0, +1] a waitset over the array at idx; the array of boxes (a copy,
 * so the caller may change its table meanwhile) is its user value. */
static waitset *waitset_new(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer n = luaL_len(L, idx);
  luaL_argcheck(L, n >= 0 && (size_t)n < (SIZE_MAX - sizeof(waitset)) / sizeof(entry) / 2, idx,
                "too many futures");
  waitset *ws = lua_newuserdatauv(L, sizeof *ws + (size_t)n * sizeof(entry), 1);
  memset(ws, 0, sizeof *ws);
  ws->n = (size_t)n;
  luaL_setmetatable(L, WAITSET_MT);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    void **box = luaL_testudata(L, -1, FUTURE_MT);
    if (box == NULL || *box == NULL)
      luaL_argerror(L, idx, lua_pushfstring(L, "item %I is not a Future (got %s)", i, luaL_typename(L, -1)));
    ws->entries[i - 1].f = NULL;
    lua_rawseti(L, -2, i);
  }
  lua_setiuservalue(L, -2, 1);
  ws->w = pl_waiter_new();
  if (ws->w == NULL) luaL_error(L, "not enough memory");
  lua_getiuservalue(L, -1, 1);
  for (size_t i = 0; i < ws->n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i + 1);
    pl_future *f = *(void **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (pl_waiter_watch(ws->w, f, &ws->entries[i].link, i) != 0) luaL_error(L, "not enough memory");
    pl_future_incref(f);
    ws->entries[i].f = f;
  }
  lua_pop(L, 1);
  return ws;
}

/* Wait without the lock; PL_OK or PL_ETIMEOUT (raises Cancelled). */
static int waitset_wait(lua_State *L, waitset *ws, size_t target, int stop_on_error) {
  pl_tstate *ts = pl_tstate_of(L);
  pl_check_cancel(L, ts);
  pl_unlock(L, PL_GIL_FUTURE);
  int rc = pl_waiter_wait(ws->w, ts, ws->deadline, target, stop_on_error);
  pl_lock(L, ts);
  if (rc == PL_ECANCELLED || pl_cancel_forced(ts)) {
    waitset_release(ws, L);
    pl_error_raise_cancelled(L, ts);
  }
  return rc;
}

static void check_wait_options(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (k == NULL || (strcmp(k, "timeout") != 0 && strcmp(k, "return_when") != 0)) {
      lua_pop(L, 1);
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
    }
    lua_pop(L, 1);
  }
}

static const char *const wait_modes[] = {"ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION", NULL};

/* par.wait(futures [, {timeout=, return_when=}]) -> done, not_done */
static int l_wait(lua_State *L) {
  const char *const *modes = wait_modes;
  double timeout = -1;
  int mode = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_wait_options(L, 2);
    if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
      if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0 || lua_tonumber(L, -1) != lua_tonumber(L, -1))
        luaL_argerror(L, 2, "field 'timeout' must be a non-negative number");
      timeout = lua_tonumber(L, -1);
    }
    if (lua_getfield(L, 2, "return_when") != LUA_TNIL) {
      const char *s = lua_tostring(L, -1);
      for (mode = 0; s != NULL && modes[mode] != NULL && strcmp(modes[mode], s) != 0; mode++) {
      }
      if (s == NULL || modes[mode] == NULL)
        luaL_argerror(L, 2, "field 'return_when' must be \"ALL_COMPLETED\", \"FIRST_COMPLETED\" or \"FIRST_EXCEPTION\"");
    }
    lua_settop(L, 2);
  }
  lua_settop(L, 2);
  waitset *ws = waitset_new(L, 1);                    /* [3] */
  ws->deadline = pl_deadline_after(timeout);
  size_t target = mode == 1 ? (ws->n > 0 ? 1 : 0) : ws->n;
  size_t finished, failed;
  pl_waiter_counts(ws->w, &finished, &failed);
  if (finished < target && !(mode == 2 && failed > 0) && timeout != 0)
    waitset_wait(L, ws, target, mode == 2);
  lua_getiuservalue(L, 3, 1);                          /* [4] the boxes */
  lua_newtable(L);                                     /* [5] done */
  lua_newtable(L);                                     /* [6] not_done */
  lua_Integer nd = 0, nn = 0;
  for (size_t i = 0; i < ws->n; i++) {
    int done = pl_future_done(ws->entries[i].f);
    lua_rawgeti(L, 4, (lua_Integer)i + 1);
    lua_rawseti(L, done ? 5 : 6, done ? ++nd : ++nn);
  }
  waitset_release(ws, L);
  return 2;
}

static int as_completed_step(lua_State *L) {
  waitset *ws = luaL_checkudata(L, lua_upvalueindex(1), WAITSET_MT);
  if (ws->w == NULL || ws->yielded == ws->n) {
    waitset_release(ws, L);
    return 0;
  }
  size_t id;
  while (!pl_waiter_pop(ws->w, &id)) {
    if (ws->timeout == 0 || waitset_wait(L, ws, ws->yielded + 1, 0) != PL_OK) {
      size_t left = ws->n - ws->yielded;
      size_t n = ws->n;
      waitset_release(ws, L);
      return pl_error_raise(L, PL_TIMEOUT, "%I (of %I) futures unfinished", (lua_Integer)left,
                            (lua_Integer)n);
    }
  }
  ws->yielded++;
  lua_getiuservalue(L, lua_upvalueindex(1), 1);
  lua_rawgeti(L, -1, (lua_Integer)id + 1);
  return 1;
}

/* par.as_completed(futures [, timeout]) -> iterator, nil, nil, closing value */
static int l_as_completed(lua_State *L) {
  double timeout = pl_opt_timeout(L, 2);
  lua_settop(L, 1);
  waitset *ws = waitset_new(L, 1);  /* [2] */
  ws->timeout = timeout;
  ws->deadline = pl_deadline_after(timeout);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, as_completed_step, 1);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushvalue(L, 2);
  return 4;
}

void pl_open_future(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"result", future_result},       {"exception", future_exception},
      {"traceback", future_traceback}, {"done", future_done},
      {"running", future_running},     {"cancelled", future_cancelled},
      {"cancel", future_cancel},       {"add_done_callback", future_add_done_callback},
      {NULL, NULL}};
  luaL_newmetatable(L, FUTURE_MT);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);  /* the metatable, for check_box */
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, future_gc, 1);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, future_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newmetatable(L, WAITSET_MT);
  lua_pushcfunction(L, waitset_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, waitset_gc);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_wait);
  lua_setfield(L, -2, "wait");
  lua_pushcfunction(L, l_as_completed);
  lua_setfield(L, -2, "as_completed");
  /* As Python's module constants: par.wait(fs, {return_when = par.FIRST_COMPLETED}). */
  for (int i = 0; wait_modes[i] != NULL; i++) {
    lua_pushstring(L, wait_modes[i]);
    lua_setfield(L, -2, wait_modes[i]);
  }
}
