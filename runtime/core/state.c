/* The factory for every lua_State the runtime makes: the main state of
 * parlua_new, and (later) each `states` worker and process worker.  All get
 * the standard libraries, the lock-aware coroutine functions, `parlua`
 * itself and the host's preloads. */
#include "lauxlib.h"
#include "lualib.h"
#include "core/runtime.h"

lua_State *pl_state_new(parlua *rt, pl_family *fam) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  pl_family_attach(fam, L);
  luaL_openlibs(L);
  pl_install_coroutines(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_parlua);
  lua_setfield(L, -2, "parlua");
  lua_pushcfunction(L, luaopen_parlua_ffi);
  lua_setfield(L, -2, "parlua.ffi");
  lua_pop(L, 1);
  pl_runtime_apply_preloads(rt, L);
  return L;
}
