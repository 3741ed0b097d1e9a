-- Helpers shared by the specs: `local support = dofile("tests/spec/support.lua")`.
local par = require "parlua"

local support = {}

-- The build directory this run uses: PARLUA_BUILD, else the first entry of
-- LUA_CPATH ("build-x/?.so;;"), else "build".
function support.build_dir()
  local b = os.getenv("PARLUA_BUILD")
  if b then return b end
  local cpath = os.getenv("LUA_CPATH") or ""
  return cpath:match("^([^;]+)/%?%.so") or "build"
end

-- The sanitizer the build under test was compiled with, "address" or
-- "thread", or nil for a plain build: read from the compiler line the
-- Makefile keeps in $BUILD/obj/.flags.  An instrumented parlua.so cannot
-- be loaded by stock lua5.4, and its code runs several times slower, so
-- the specs that need either one ask here.
function support.sanitizer()
  local f = io.open(support.build_dir() .. "/obj/.flags")
  if not f then return nil end
  local flags = f:read("a")
  f:close()
  return flags:match("%-fsanitize=(%a+)")
end

-- Run `code` in a separate interpreter and capture stdout+stderr: stock
-- lua5.4 with the module, or PARLUA_LUA (the parlua program, for the
-- sanitizer builds whose module cannot load into lua5.4), or `lua`.
-- Returns the output and the exit status.
function support.lua_cmd(code, lua)
  lua = lua or os.getenv("PARLUA_LUA") or "lua5.4"
  local cmd = string.format("LUA_CPATH='%s/?.so;;' %s -e %q 2>&1", support.build_dir(), lua, code)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, _, status = p:close()
  return out, ok and 0 or status
end

-- A name for a file of our own that does not exist yet, ending in `ext`.
function support.tmpname(ext)
  local name = os.tmpname()
  os.remove(name)
  return name .. (ext or "")
end

-- The error fn(...) raises; fails the test when it raises none.
function support.errof(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- A started par.thread running fn(...).
function support.go(fn, ...)
  local t = par.thread(fn, ...)
  t:start()
  return t
end

return support
