/* os.execute without the global lock while the command runs; the rest of
 * Lua's os library does not wait. */
#include <errno.h>
#include <stdlib.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "core/blocking.h"
#include "blockio/blockio.h"

/* loslib.c's os_execute. */
static int os_execute(lua_State *L) {
  const char *cmd = luaL_optstring(L, 1, NULL);
  errno = 0;
  pl_tstate *ts = pl_blocking_begin(L, PL_GIL_POPEN);
  int stat = system(cmd);
  pl_blocking_end(ts);
  if (cmd != NULL) return luaL_execresult(L, stat);
  lua_pushboolean(L, stat);  /* true if there is a shell */
  return 1;
}

void pl_oslib_install(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_OSLIBNAME) == LUA_TTABLE) {
    lua_pushcfunction(L, os_execute);
    lua_setfield(L, -2, "execute");
  }
  lua_pop(L, 2);
}
