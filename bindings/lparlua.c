/* luaopen_parlua: the module table.  In a stock lua5.4 it first makes the
 * runtime that adopts the state (core/adopt.c). */
#include "bindings.h"
#include "lprocess.h"

const luaL_Reg pl_builtin_modules[] = {
    {"parlua", luaopen_parlua}, {"parlua.ffi", luaopen_parlua_ffi}, {NULL, NULL}};

static void open_errors(lua_State *L) {
  static const char *const kinds[] = {
      PL_TIMEOUT, PL_CANCELLED, PL_BROKEN_POOL, PL_SHUTDOWN, PL_TRANSFER,
      PL_CALLED_PROCESS_ERROR, PL_TIMEOUT_EXPIRED, PL_OS_ERROR, PL_BROKEN_BARRIER,
      PL_SOFT_TIME_LIMIT, NULL};
  lua_createtable(L, 0, 9);
  for (int i = 0; kinds[i] != NULL; i++) {
    lua_pushstring(L, kinds[i]);
    lua_setfield(L, -2, kinds[i]);
  }
  lua_setfield(L, -2, "errors");
}

PARLUA_API int luaopen_parlua(lua_State *L) {
  if (pl_runtime_of(L) == NULL) pl_runtime_adopt(L, pl_builtin_modules);
  lua_newtable(L);
  open_errors(L);
  pl_open_core(L);
  pl_open_thread(L);
  pl_open_sync(L);
  pl_open_queue(L);
  pl_open_subprocess(L);
  pl_open_future(L);
  pl_open_pool(L);
  pl_open_mpi(L);
  pl_open_codec(L);
  pl_open_process(L);
  pl_open_pipe(L);
  pl_open_gil_trace(L);
  lua_pushliteral(L, PARLUA_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
