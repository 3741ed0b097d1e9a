/* libFuzzer target for the argument checks of parlua.ffi calls.
 *
 * Built and run by `make fuzz` (with the whole runtime, under ASan/UBSan).
 * Each input becomes a list of Lua values (integers at and around the
 * limits of every C integer type, floats including NaN and infinities,
 * strings, booleans, nil, tables, ffi pointers and buffers) passed to one of
 * a few harmless C functions, fixed or variadic.  Wrong counts, types and
 * out-of-range values must be refused with an error; nothing may crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "lauxlib.h"
#include "lualib.h"
#include "parlua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DRIVER[] =
    "local ffi = require 'parlua.ffi'\n"
    "local libc = ffi.open()\n"
    "local fns = {\n"
    "  libc:fn('int abs(int)'), libc:fn('long labs(long)'),\n"
    "  libc:fn('long long llabs(long long)'), libc:fn('int toupper(int)'),\n"
    "  libc:fn('size_t strlen(const char *)'),\n"
    "  libc:fn('int snprintf(char *, size_t, const char *, ...)'):variadic('int', 'double'),\n"
    "}\n"
    "local buf = ffi.buffer(64)\n"
    "local specials = {0, -1, 1, 127, 128, 255, 256, 32767, 32768, 65535, 65536,\n"
    "  2147483647, 2147483648, -2147483648, -2147483649, 4294967295, 4294967296,\n"
    "  math.maxinteger, math.mininteger, 0.5, -0.0, 1/0, -1/0, 0/0, 2^63, 2^64}\n"
    "return function(data)\n"
    "  local vals, n, pos = {}, 0, 2\n"
    "  while pos <= #data and n < 8 do\n"
    "    local tag = data:byte(pos); pos = pos + 1\n"
    "    local v\n"
    "    local k = tag % 10\n"
    "    if k == 0 then v = nil\n"
    "    elseif k == 1 then v = specials[tag // 10 % #specials + 1]\n"
    "    elseif k == 2 then v = (tag // 10) - 12\n"
    "    elseif k == 3 then v = (tag // 10) / 7\n"
    "    elseif k == 4 then v = data:sub(pos, pos + tag // 40)\n"
    "    elseif k == 5 then v = tag > 128\n"
    "    elseif k == 6 then v = {tag}\n"
    "    elseif k == 7 then v = buf\n"
    "    elseif k == 8 then v = ffi.NULL\n"
    "    else v = 'x' end\n"
    "    n = n + 1; vals[n] = v\n"
    "  end\n"
    "  local which = (data:byte(1) or 0) % 6 + 1\n"
    "  if which == 5 then  -- strlen(NULL) is C's crash, not ours: no NULL here\n"
    "    for i = 1, n do if vals[i] == nil or vals[i] == ffi.NULL then vals[i] = '' end end\n"
    "  end\n"
    "  if which == 6 then\n"
    "    pcall(fns[6], buf, 64, '%d %f', table.unpack(vals, 1, n))\n"
    "  else\n"
    "    pcall(fns[which], table.unpack(vals, 1, n))\n"
    "  end\n"
    "end\n";

static lua_State *L;
static int driver;

static void setup(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "parlua.ffi", luaopen_parlua_ffi, 0);
  lua_pop(L, 1);
  if (luaL_dostring(L, DRIVER) != LUA_OK) abort();
  driver = luaL_ref(L, LUA_REGISTRYINDEX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  lua_rawgeti(L, LUA_REGISTRYINDEX, driver);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);  /* errors are fine */
  lua_settop(L, 0);
  return 0;
}
