/* luaopen_parlua: the module table, and parlua inside a stock lua5.4.
 *
 * In a state made by parlua_new the runtime already exists.  In a stock
 * `lua5.4` that does `require "parlua"`, the module adopts the state: it
 * makes a runtime stored in a userdata (freed by lua_close after every
 * finalizer ran), and the main thread takes the lock and keeps it except
 * while blocked, exactly like a host thread between parlua_enter and
 * parlua_leave.  At lua_close a sentinel finalizer joins threads and shuts
 * pools down before anything they use is finalized.
 */
#include <stdlib.h>

#include "core/background.h"
#include "bindings.h"
#include "lprocess.h"

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

static void adopt(lua_State *L) {
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
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  rt->main.L = lua_tothread(L, -1);
  lua_pop(L, 1);
  pl_family_attach(&rt->main, L);
  pl_tstate *ts = pl_attach(&rt->main, NULL);
  if (ts == NULL) luaL_error(L, "parlua: out of memory");
  ts->depth = 1;
  pl_take_lock(ts, rt->main.L, 1);
  pl_install_coroutines(L);
  luaL_newmetatable(L, SENTINEL_MT);
  lua_pushcfunction(L, sentinel_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  pl_adopted_touch(L);
}

static void open_errors(lua_State *L) {
  static const char *const kinds[] = {
      PL_TIMEOUT, PL_CANCELLED, PL_BROKEN_POOL, PL_SHUTDOWN, PL_TRANSFER,
      PL_CALLED_PROCESS_ERROR, PL_TIMEOUT_EXPIRED, PL_OS_ERROR, PL_BROKEN_BARRIER, NULL};
  lua_createtable(L, 0, 9);
  for (int i = 0; kinds[i] != NULL; i++) {
    lua_pushstring(L, kinds[i]);
    lua_setfield(L, -2, kinds[i]);
  }
  lua_setfield(L, -2, "errors");
}

int luaopen_parlua(lua_State *L) {
  if (pl_runtime_of(L) == NULL) adopt(L);
  lua_newtable(L);
  open_errors(L);
  pl_open_core(L);
  pl_open_thread(L);
  pl_open_sync(L);
  pl_open_queue(L);
  pl_open_subprocess(L);
  pl_open_future(L);
  pl_open_pool(L);
  pl_open_codec(L);
  pl_open_process(L);
  pl_open_pipe(L);
  lua_pushliteral(L, PARLUA_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
