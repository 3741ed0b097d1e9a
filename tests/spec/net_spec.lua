-- Third-party C modules that wait in a system call let the global lock go
-- (issue #14): luasocket in the `parlua` program, which interposes the libc
-- calls, and in stock lua5.4 with build/libparlua_preload.so preloaded.
-- Each case runs in a child interpreter of both kinds.  127.0.0.1 only;
-- wide margins, the machine is shared.
local support = dofile("tests/spec/support.lua")

local have_socket = pcall(require, "socket")

local function abs(path)
  if path:sub(1, 1) == "/" then return path end
  return os.getenv("PWD") .. "/" .. path
end

local build = abs(support.build_dir())

-- The interpreters a case runs in: the program, and stock lua5.4 with the
-- preload library -- or, to show that the library is what makes it work,
-- stock lua5.4 without it.
local interpreters = {
  {name = "the parlua program", cmd = build .. "/parlua"},
  {name = "lua5.4 with libparlua_preload.so",
   cmd = ("LD_PRELOAD=%s/libparlua_preload.so lua5.4"):format(build)},
}
local without_preload = {name = "lua5.4 without the preload library", cmd = "lua5.4"}

-- The helpers every child starts with: a ticker, and a delay server.
local prelude = [[
local par = require "parlua"
local socket = require "socket"
local function ticking(fn)
  local stop, ticks = false, 0
  local t = par.thread(function()
    while not stop do ticks = ticks + 1; par.sleep(0.01) end
  end)
  t:start()
  par.sleep(0.03)
  local before, t0 = ticks, par.clock()
  fn()
  local elapsed, during = par.clock() - t0, ticks - before
  stop = true
  t:join()
  return elapsed, during
end
local function with_server(delay, fn)
  local p = io.popen("exec lua5.4 scripts/net/delay_server.lua " .. delay .. " 30")
  local port, pid = p:read("n", "n")
  local ok, err = pcall(fn, port)
  os.execute("kill " .. pid)
  p:close()
  assert(ok, err)
end
local function fetch(port)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(10)
  assert(c:send("GET / HTTP/1.0\r\n\r\n"))
  local body = assert(c:receive("*a"))
  c:close()
  return body
end
]]

-- Run `code` (after the prelude) in interpreter `it`; its last line of
-- output is "RESULT a b ...": returned as numbers.
local function run(it, code)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(prelude, code)
  f:close()
  local p = io.popen(("LUA_CPATH='%s/?.so;;' %s %s 2>&1"):format(build, it.cmd, name))
  local out = p:read("a")
  p:close()
  os.remove(name)
  local nums = {}
  local line = out:match("RESULT%s+([^\n]*)")
  assert(line, it.name .. ": " .. out)
  for x in line:gmatch("%S+") do nums[#nums + 1] = tonumber(x) end
  return table.unpack(nums)
end

local eight_fetches = [[
with_server(0.3, function(port)
  local t0 = par.clock()
  local ts = {}
  for i = 1, 8 do ts[i] = par.thread(fetch, port); ts[i]:start() end
  local ok = 0
  for i = 1, 8 do if ts[i]:result():find("hello") then ok = ok + 1 end end
  print("RESULT", par.clock() - t0, ok)
end)
]]

local four_sleeps = [[
local elapsed, during = ticking(function()
  local ts = {}
  for i = 1, 4 do ts[i] = par.thread(socket.sleep, 0.3); ts[i]:start() end
  for i = 1, 4 do ts[i]:join() end
end)
print("RESULT", elapsed, during)
]]

local accept_timeout = [[
local server = assert(socket.bind("127.0.0.1", 0))
server:settimeout(0.5)
local elapsed, during = ticking(function()
  local t = par.thread(function() return server:accept() end)
  t:start()
  local c, err = t:result()
  assert(c == nil and err == "timeout", tostring(err))
end)
print("RESULT", elapsed, during)
]]

local blocked_receive = [[
with_server(0.3, function(port)
  local elapsed, during = ticking(function() assert(fetch(port):find("hello")) end)
  print("RESULT", elapsed, during)
end)
]]

-- Sanitizer builds leave the interposers out (their runtimes intercept the
-- same calls; see the Makefile): nothing to test there.
local interposed = io.open(build .. "/libparlua_preload.so") ~= nil

describe("luasocket lets the lock go", function()
  if not have_socket then
    it("needs lua-socket (make deps installs it)", function() error("luasocket is not installed") end)
    return
  end
  if not interposed then
    pending("a sanitizer build has no interposers")
    return
  end
  for _, it_ in ipairs(interpreters) do
    describe("in " .. it_.name .. ":", function()
      it("8 threads fetching from a server that answers after 0.3 s take < 0.9 s", function()
        local elapsed, ok = run(it_, eight_fetches)
        assert.equal(8, ok)
        assert.is_true(elapsed < 0.9, ("took %.3f s"):format(elapsed))
      end)

      it("4 threads in socket.sleep(0.3) take < 0.9 s, and a ticker keeps ticking", function()
        local elapsed, during = run(it_, four_sleeps)
        assert.is_true(elapsed < 0.9, ("took %.3f s"):format(elapsed))
        assert.is_true(during >= 15, ("%d ticks"):format(during))
      end)

      it("a thread in accept with a 0.5 s timeout does not stop the others", function()
        local elapsed, during = run(it_, accept_timeout)
        assert.is_true(elapsed > 0.4, ("took %.3f s"):format(elapsed))
        assert.is_true(during >= 20, ("%d ticks in %.3f s"):format(during, elapsed))
      end)

      it("a receive waiting 0.3 s for its answer does not stop the others", function()
        local elapsed, during = run(it_, blocked_receive)
        assert.is_true(elapsed > 0.25, ("took %.3f s"):format(elapsed))
        assert.is_true(during >= 10, ("%d ticks in %.3f s"):format(during, elapsed))
      end)
    end)
  end

  it("and without the preload library a stock lua5.4 does not (what the library is for)", function()
    local elapsed, during = run(without_preload, accept_timeout)
    assert.is_true(during <= 3, ("%d ticks in %.3f s"):format(during, elapsed))
  end)
end)
