/* parlua inside a stock lua5.4 (see adopt.h). */
#include "blockio/blockio.h"
#include "core/adopt.h"
#include "core/background.h"
#include "core/debughook.h"
#include "core/enter.h"

static const char RUNTIME_MT[] = "parlua.runtime";
static const char SENTINEL_MT[] = "parlua.sentinel";
/* Registry slots, keyed by these addresses (names are for metatables). */
static const char SENTINEL_KEY = 0;
static const char RUNTIME_KEY = 0;

/* The sentinel that is still registered when lua_close finalizes
 * everything is the one whose finalizer shuts the runtime down; older,
 * replaced ones are plain garbage. */
static int sentinel_gc(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &SENTINEL_KEY);
  int current = lua_rawequal(L, 1, -1);
  lua_pop(L, 1);
  parlua *rt = pl_runtime_of(L);
  if (current && rt != NULL) pl_runtime_shutdown(rt, L);
  return 0;
}

void pl_adopted_touch(lua_State *L) {
  parlua *rt = pl_runtime_of(L);
  if (rt == NULL || !rt->adopted || rt->closing) return;
  lua_newuserdatauv(L, 0, 0);
  luaL_setmetatable(L, SENTINEL_MT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SENTINEL_KEY);
}

/* Runs last of all finalizers (the runtime was the first of them made). */
/* Runs after every finalizer of an object made after parlua was loaded, but
 * objects made before it are finalized later still, and may call parlua:
 * so the runtime stays usable (closed: nothing new starts) and its mutexes
 * are not destroyed -- they hold no resources, and lua_close frees this
 * userdata only after the last finalizer has run. */
static int runtime_gc(lua_State *L) {
  parlua *rt = luaL_checkudata(L, 1, RUNTIME_MT);
  pl_tstate *ts = pl_tstate_current(&rt->main);
  pl_runtime_shutdown(rt, L);  /* done already, unless no sentinel ran */
  if (ts != NULL) pl_leave(ts);
  pl_runtime_free_lists(rt);
  return 0;
}

void pl_runtime_adopt(lua_State *L, const luaL_Reg *modules) {
  /* lua_close unloads this module (dlclose), but a par.thread that has
   * just finished may still be returning through its code. */
  pl_pin_library();
  parlua *rt = lua_newuserdatauv(L, sizeof *rt, 0);
  if (pl_runtime_init(rt, NULL) != 0) luaL_error(L, "parlua: cannot initialise the runtime");
  luaL_newmetatable(L, RUNTIME_MT);
  lua_pushcfunction(L, runtime_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RUNTIME_KEY);  /* anchored until lua_close */
  rt->adopted = 1;
  rt->modules = modules;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  rt->main.L = lua_tothread(L, -1);
  lua_pop(L, 1);
  pl_family_attach(&rt->main, L);
  pl_tstate *ts = pl_attach(&rt->main, NULL);
  if (ts == NULL) luaL_error(L, "parlua: out of memory");
  ts->host = 1;  /* lua5.4's own thread: Ctrl-C is lua.c's here */
  ts->depth = 1;
  pl_take_lock(ts, rt->main.L, 1);
  pl_install_coroutines(L);
  pl_install_debughooks(L);
  pl_blockio_install(L);
  luaL_newmetatable(L, SENTINEL_MT);
  lua_pushcfunction(L, sentinel_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  pl_adopted_touch(L);
}
