-- The development rockspec: `luarocks --lua-version 5.4 make` in a clone
-- builds the module with the Makefile and installs `parlua` (which also
-- answers `require "parlua.ffi"`: Lua's all-in-one loader finds
-- luaopen_parlua_ffi in parlua.so).  `luarocks make` uses the clone it runs
-- in; source.url is only read by `luarocks build` of a published rock.
rockspec_format = "3.0"
package = "parlua"
version = "scm-1"
source = {
  url = "git+https://github.com/parlua/parlua.git",
}
description = {
  summary = "Threads, pools, queues, futures, subprocesses and libffi for Lua 5.4",
  detailed = [[
An embeddable Lua 5.4 runtime in C: a fair global lock for kind "threads",
isolated lua_States for kind "states", worker processes for kind
"processes"; futures, pools, queues, subprocesses and foreign calls that
release the lock.  This rock is the module for the stock interpreter.]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "make",
  build_target = "module",
  -- The Makefile asks pkg-config for Lua's flags; LuaRocks knows better
  -- which Lua it builds for.  libffi still comes from pkg-config.
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_CFLAGS = "-I$(LUA_INCDIR)",
  },
  install_pass = false,
  install = {
    lib = { parlua = "build/parlua.so" },
  },
}
