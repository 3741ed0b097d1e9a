/* coroutine.resume and coroutine.wrap that tell the runtime which coroutine
 * the thread is running, so a hand-over request or a forced cancel reaches
 * the coroutine actually executing (a count hook is per coroutine), and
 * coroutine.create and wrap that give a new coroutine the script's hook
 * (debughook.h).  They behave exactly as Lua 5.4's own (lcorolib.c). */
#include "lauxlib.h"
#include "lualib.h"
#include "core/debughook.h"
#include "core/errors.h"
#include "core/runtime.h"

static lua_State *getco(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  return co;
}

/* Resume co with narg values from L; results or the error are moved to L.
 * Returns the number of results, or -1 on error. */
static int auxresume(lua_State *L, lua_State *co, int narg) {
  int status, nres;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  pl_tstate *ts = pl_tstate_of(L);
  if (ts != NULL) pl_tstate_set_running(ts, co);
  status = lua_resume(co, L, narg, &nres);
  if (ts != NULL) pl_tstate_set_running(ts, L);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

static int co_resume(lua_State *L) {
  lua_State *co = getco(L);
  int r = auxresume(L, co, lua_gettop(L) - 1);
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int r = auxresume(L, co, lua_gettop(L));
  if (r < 0) {
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {  /* error in the coroutine */
      stat = lua_resetthread(co);               /* close its tbc variables */
      lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return pl_error_rethrow(L);
  }
  return r;
}

/* lua_newthread copies the creator's hook slot, which may hold the
 * runtime's count for a moment: the new coroutine gets the script's. */
static lua_State *new_coroutine(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *NL = lua_newthread(L);
  pl_debughook_inherit(L, NL);
  lua_pushvalue(L, 1);
  lua_xmove(L, NL, 1);
  return NL;
}

static int co_create(lua_State *L) {
  new_coroutine(L);
  return 1;
}

static int co_wrap(lua_State *L) {
  new_coroutine(L);
  lua_pushcclosure(L, co_auxwrap, 1);
  return 1;
}

void pl_install_coroutines(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_COLIBNAME) == LUA_TTABLE) {
    lua_pushcfunction(L, co_create);
    lua_setfield(L, -2, "create");
    lua_pushcfunction(L, co_resume);
    lua_setfield(L, -2, "resume");
    lua_pushcfunction(L, co_wrap);
    lua_setfield(L, -2, "wrap");
  }
  lua_pop(L, 2);
}
