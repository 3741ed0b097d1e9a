/* par.thread: an OS thread running a function of the shared state under
 * the global lock, like Python's threading.Thread.  The thread's life
 * cycle is core/thread.c; here are the arguments, the box and the methods.
 */
#include <stdlib.h>
#include <string.h>

#include "bindings.h"
#include "core/clock.h"
#include "core/thread.h"

static const char THREAD_MT[] = "parlua.Thread";

static pl_thread *check_thread(lua_State *L) {
  return pl_box_check(L, 1, THREAD_MT, "thread");
}

static void check_options(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "target") && strcmp(k, "args") && strcmp(k, "name") && strcmp(k, "daemon")) {
      lua_pop(L, 1);
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'",
                                            luaL_tolstring(L, -1, NULL)));
    }
    lua_pop(L, 1);
  }
}

/* par.thread(fn, ...) or par.thread{target=fn, args={...}, name=, daemon=} */
static int thread_new(lua_State *L) {
  int nargs;
  const char *name = NULL;
  int daemon = 0;
  lua_State *co;
  if (lua_type(L, 1) == LUA_TTABLE) {
    check_options(L, 1);
    if (lua_getfield(L, 1, "target") != LUA_TFUNCTION)
      luaL_argerror(L, 1, "field 'target' must be a function");
    int t_args = lua_getfield(L, 1, "args");
    luaL_argcheck(L, t_args == LUA_TNIL || t_args == LUA_TTABLE, 1, "field 'args' must be a table");
    if (lua_getfield(L, 1, "name") != LUA_TNIL) {
      luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "field 'name' must be a string");
      name = lua_tostring(L, -1);
    }
    daemon = lua_getfield(L, 1, "daemon") != LUA_TNIL && lua_toboolean(L, -1);
    size_t len = t_args == LUA_TTABLE ? lua_rawlen(L, 3) : 0;
    luaL_argcheck(L, len < 1000000, 1, "field 'args' is too long");
    nargs = (int)len;
    luaL_checkstack(L, nargs + 4, "too many thread arguments");
    lua_pushvalue(L, 2);
    for (int i = 1; i <= nargs; i++) lua_geti(L, 3, i);
  } else {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    nargs = lua_gettop(L) - 1;
  }
  pl_check_not_closed(L, THREAD_MT);
  pl_thread *t = pl_thread_new(pl_family_of(L), name, daemon);
  if (t == NULL) return luaL_error(L, "not enough memory");
  /* The box first, so that an error below leaves nothing half-made. */
  pl_box_new(L, THREAD_MT, t);
  lua_insert(L, -(nargs + 2));           /* [box, fn, args...] */
  co = lua_newthread(L);
  /* room for fn, args and what pl_pcall_traced adds */
  if (!lua_checkstack(co, nargs + 4)) return luaL_error(L, "too many thread arguments");
  lua_insert(L, -(nargs + 2));           /* [box, co, fn, args...] */
  lua_xmove(L, co, nargs + 1);
  t->co = co;
  t->nargs = nargs;
  t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int thread_start(lua_State *L) {
  pl_thread *t = check_thread(L);
  int rc = pl_thread_start(L, t);
  if (rc == PL_ESTARTED) return luaL_error(L, "threads can only be started once");
  if (rc == PL_ECLOSING) return pl_error_raise(L, PL_SHUTDOWN, "cannot start a thread: the runtime is closing");
  if (rc == PL_ENOMEM) return luaL_error(L, "not enough memory");
  if (rc != 0) return pl_error_raise_os(L, -rc, "cannot start thread");
  lua_settop(L, 1);
  return 1;
}

static int thread_join(lua_State *L) {
  pl_thread *t = check_thread(L);
  double timeout = pl_opt_timeout(L, 2);
  if (pl_thread_state(t) == PL_THREAD_NEW) return luaL_error(L, "cannot join thread before it is started");
  if (pl_thread_is(t, pl_tstate_of(L))) return luaL_error(L, "cannot join current thread");
  lua_pushboolean(L, pl_thread_wait(L, t, pl_deadline_after(timeout)));
  return 1;
}

static int thread_is_alive(lua_State *L) {
  lua_pushboolean(L, pl_thread_state(check_thread(L)) == PL_THREAD_RUNNING);
  return 1;
}

/* The values the function returned; raises its error (unchanged). */
static int thread_result(lua_State *L) {
  pl_thread *t = check_thread(L);
  if (pl_thread_state(t) == PL_THREAD_NEW)
    return luaL_error(L, "cannot get the result of a thread before it is started");
  if (pl_thread_is(t, pl_tstate_of(L))) return luaL_error(L, "cannot get the result of the current thread");
  pl_thread_wait(L, t, INT64_MAX);
  lua_State *co = t->co;
  int n = lua_gettop(co);
  if (!t->ok) {
    t->collected = 1;
    if (!lua_checkstack(co, 2)) return luaL_error(L, "not enough memory");
    lua_pushvalue(co, 1);
    lua_pushvalue(co, 2);
    lua_xmove(co, L, 2);
    pl_error_note_origin(L, -2, -1);
    lua_pop(L, 1);
    return pl_error_rethrow(L);
  }
  luaL_checkstack(L, n, "too many results");
  /* co may have no free slot after a multiple return: copy one at a time */
  if (!lua_checkstack(co, 1)) return luaL_error(L, "not enough memory");
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(co, i);
    lua_xmove(co, L, 1);
  }
  return n;
}

/* t:cancel([{force = true}]) -> true when the thread had not finished. */
static int thread_cancel(lua_State *L) {
  pl_thread *t = check_thread(L);
  int level = PL_CANCEL_SOFT;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "force") != LUA_TNIL && lua_toboolean(L, -1)) level = PL_CANCEL_FORCED;
  }
  lua_pushboolean(L, pl_thread_cancel(t, level));
  return 1;
}

static int thread_gc(lua_State *L) {
  void **box = pl_box_get(L, 1, THREAD_MT);
  pl_thread *t = *box;
  if (t == NULL) return 0;
  *box = NULL;
  t->has_box = 0;
  if (pl_thread_state(t) != PL_THREAD_RUNNING) {  /* a running thread cleans up itself */
    if (t->co != NULL && pl_thread_state(t) == PL_THREAD_DONE) pl_thread_report_uncollected(t);
    pl_thread_release_stack(t, L);
  }
  pl_thread_unref(t);
  return 0;
}

static int thread_tostring(lua_State *L) {
  void **box = pl_box_get(L, 1, THREAD_MT);
  pl_thread *t = *box;
  if (t == NULL) return lua_pushliteral(L, "Thread (closed)"), 1;
  pthread_mutex_lock(&t->mu);
  int state = t->state;
  long ident = t->ident;
  pthread_mutex_unlock(&t->mu);
  if (state == PL_THREAD_NEW) lua_pushfstring(L, "Thread(%s, initial)", t->name);
  else if (state == PL_THREAD_RUNNING) lua_pushfstring(L, "Thread(%s, started %I)", t->name, (lua_Integer)ident);
  else lua_pushfstring(L, "Thread(%s, stopped %I)", t->name, (lua_Integer)ident);
  return 1;
}

/* Methods first, then the fields name, ident and daemon. */
static int thread_index(lua_State *L) {
  pl_thread *t = check_thread(L);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  const char *k = lua_tostring(L, 2);
  if (k == NULL) return 0;
  if (strcmp(k, "name") == 0) {
    lua_pushstring(L, t->name);
  } else if (strcmp(k, "ident") == 0) {
    pthread_mutex_lock(&t->mu);
    long ident = t->started ? t->ident : 0;
    pthread_mutex_unlock(&t->mu);
    if (ident != 0) lua_pushinteger(L, ident);
    else lua_pushnil(L);
  } else if (strcmp(k, "daemon") == 0) {
    lua_pushboolean(L, t->daemon);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

void pl_open_thread(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"start", thread_start},     {"join", thread_join},     {"is_alive", thread_is_alive},
      {"result", thread_result},   {"cancel", thread_cancel}, {NULL, NULL}};
  pl_new_class(L, THREAD_MT, methods, thread_index, thread_gc, NULL, thread_tostring);
  lua_pushcfunction(L, thread_new);
  lua_setfield(L, -2, "thread");
}
