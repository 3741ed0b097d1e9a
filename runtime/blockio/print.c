/* Lua's print, with the global lock let go while it may wait on stdout.
 *
 * lbaselib.c's luaB_print writes with lua_writestring (fwrite to C's
 * stdout) and ends with lua_writeline ("\n", then fflush) holding the
 * lock: a thread printing into a full pipe stopped every other thread.
 * This one does the same calls in the same order -- each argument made a
 * string by luaL_tolstring (its __tostring and __name, its errors) just
 * before it is written, so what a failing or printing __tostring sees is
 * unchanged -- and lets the lock go around a write that may wait
 * (filepeek.h), as io.write does.  stdout is never closed under us: Lua's
 * io.stdout cannot be closed ("cannot close standard file").
 *
 * Letting the lock go between pieces would let another thread's print in
 * between them ("line 1line 2\n\n").  So when no argument can run Lua code
 * while made a string (none has a __tostring), the line is made whole
 * first and written by one fwrite, which stdio's own lock keeps whole;
 * only then can the order of side effects not differ from lbaselib's.
 * With a __tostring among the arguments, the pieces go one by one as in
 * lbaselib, and two threads blocked printing may interleave them, as with
 * io.write (and as Python's print does).  A print that is a Lua function
 * (a script's or a test framework's own) is left alone; a C one is taken
 * for the base library's, the only C print the standard libraries set. */
#include <stdio.h>

#include "lua.h"
#include "lauxlib.h"
#include "core/blocking.h"
#include "blockio/blockio.h"
#include "blockio/filepeek.h"

static const char STDOUT_IS_DISK = 0;  /* registry key, by its address */

/* lua_writestring of `sep` (may be empty) and then `s`, as one call. */
static void write_out(lua_State *L, int disk, const char *sep, size_t seplen, const char *s, size_t len) {
  int may_block = !disk && pl_write_may_block(stdout, seplen + len);
  pl_tstate *ts = may_block ? pl_blocking_begin(L, PL_GIL_IO) : NULL;
  fwrite(sep, 1, seplen, stdout);
  fwrite(s, 1, len, stdout);
  pl_blocking_end(ts);
}

/* luaL_tolstring of the value at i runs no Lua code: no __tostring (it
 * reads the metatable raw, and __name is only read). */
static int plain(lua_State *L, int i) {
  if (!lua_getmetatable(L, i)) return 1;
  lua_pushliteral(L, "__tostring");
  int none = lua_rawget(L, -2) == LUA_TNIL;
  lua_pop(L, 2);
  return none;
}

/* The whole line, then one write: nothing can come between its pieces. */
static void print_line(lua_State *L, int n, int disk) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *line = lua_tolstring(L, -1, &len);
  pl_tstate *ts = disk ? NULL : pl_blocking_begin(L, PL_GIL_IO);
  fwrite(line, 1, len, stdout);
  fflush(stdout);
  pl_blocking_end(ts);
}

static int print(lua_State *L) {
  int n = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &STDOUT_IS_DISK);
  int disk = lua_toboolean(L, -1);  /* a disk file never waits the way a pipe does */
  lua_pop(L, 1);
  int all_plain = 1;
  for (int i = 1; i <= n && all_plain; i++) all_plain = plain(L, i);
  if (all_plain) {
    print_line(L, n, disk);
    return 0;
  }
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_tolstring(L, i, &len);  /* anchored on the stack while written */
    write_out(L, disk, "\t", i > 1 ? 1 : 0, s, len);
    lua_pop(L, 1);
  }
  /* lua_writeline: the flush writes what is buffered. */
  pl_tstate *ts = disk ? NULL : pl_blocking_begin(L, PL_GIL_IO);
  fwrite("\n", 1, 1, stdout);
  fflush(stdout);
  pl_blocking_end(ts);
  return 0;
}

/* Whether stdout is a disk file is asked once, when the state is made: an
 * fstat at every print cost more than the write itself.  A stdout
 * redirected later (dup2 through ffi) is taken for what it was, which costs
 * only a needless or a missed letting-go, never a different output.  It
 * is kept in the registry, not an upvalue: print has none in lua5.4
 * (debug.getinfo(print).nups is 0, and the official db.lua checks it). */
void pl_print_install(lua_State *L) {
  lua_pushboolean(L, pl_file_is_disk(stdout));
  lua_rawsetp(L, LUA_REGISTRYINDEX, &STDOUT_IS_DISK);
  lua_pushglobaltable(L);
  if (lua_getfield(L, -1, "print") == LUA_TFUNCTION && lua_iscfunction(L, -1) &&
      lua_tocfunction(L, -1) != print) {
    lua_pushcfunction(L, print);
    lua_setfield(L, -3, "print");
  }
  lua_pop(L, 2);
}
