-- The lock's hand-offs leave the language alone: debug hooks exactly as
-- the script set them, and a hand-off cost that does not grow with the call
-- depth (issue 13, findings 1 and 2).  Each test runs a script in its own
-- interpreter (lua5.4 with the module, or PARLUA_LUA) beside a busy
-- par.thread: string work and a 1 ms sleep every 1,000 rounds, so it asks
-- for the lock about once a millisecond.
local support = dofile("tests/spec/support.lua")

local BUSY = [[
local par = require "parlua"
local stop = false
local busy = par.thread(function()
  local n = 0
  while not stop do
    local s = string.rep("x", 50) .. n
    n = n + #s:upper() % 2 + 1
    if n % 1000 == 0 then par.sleep(0.001) end
  end
end)
local function start_busy() busy:start(); par.sleep(0.01) end
local function stop_busy() stop = true; busy:join() end
local function work(n)
  local x = 0
  for i = 1, n do
    x = x + i
  end
  return x
end
]]

-- The script's printed output; fails the test when it did not exit 0 within
-- two minutes.
local function run(script)
  local lua = os.getenv("PARLUA_LUA") or "lua5.4"
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(BUSY, script)
  f:close()
  local p = io.popen(string.format("LUA_CPATH='%s/?.so;;' timeout 120 %s %s 2>&1",
                                   support.build_dir(), lua, path))
  local out = p:read("a")
  local ok = p:close()
  os.remove(path)
  assert(ok, "the script failed or timed out:\n" .. out)
  return out
end

describe("debug hooks beside a busy thread", function()
  it("see every line event in the main thread", function()
    local out = run([[
      local function count()
        local n = 0
        debug.sethook(function() n = n + 1 end, "l")
        work(300000)
        debug.sethook()
        return n
      end
      local alone = count()
      start_busy()
      local beside = count()
      stop_busy()
      print(alone, beside, par.gil_stats().switches > 10)
    ]])
    local alone, beside, switched = out:match("^(%d+)\t(%d+)\t(%a+)\n$")
    assert.equal("true", switched)  -- the lock did change hands meanwhile
    assert.equal(alone, beside)
  end)

  it("keep each coroutine's own hook, mask and count", function()
    local out = run([[
      local function hooked(mask, count)
        return coroutine.wrap(function()
          local n = 0
          debug.sethook(function() n = n + 1 end, mask, count)
          coroutine.yield()
          work(150000)
          coroutine.yield(debug.gethook())
          work(150000)
          debug.sethook()
          return n
        end)
      end
      local function both()
        local a, b = hooked("l"), hooked("", 7)
        a(); b()
        local ha, ma, ca = a()
        local hb, mb, cb = b()
        return a(), b(), type(ha) .. ma .. ca, type(hb) .. mb .. cb
      end
      local la, lb = both()
      start_busy()
      local ba, bb, sa, sb = both()
      stop_busy()
      print(la == ba, lb == bb, sa, sb, la, ba, lb, bb)
    ]])
    assert.matches("^true\ttrue\tfunctionl0\tfunction7\t", out)
  end)

  it("never show the runtime's hook to debug.gethook, inside a hook or not", function()
    local out = run([[
      start_busy()
      local wrong = 0
      local f = function()
        local h, mask, count = debug.gethook()
        if type(h) ~= "function" or mask ~= "c" or count ~= 0 then wrong = wrong + 1 end
      end
      debug.sethook(f, "c")
      for i = 1, 2000 do
        work(100)
        local h, mask, count = debug.gethook()
        if h ~= f or mask ~= "c" or count ~= 0 then wrong = wrong + 1 end
      end
      debug.sethook()
      local none = debug.gethook()
      stop_busy()
      print(wrong, none)
    ]])
    assert.equal("0\tnil\n", out)
  end)

  it("let a hook that removed itself stay removed", function()
    -- The hook works ~20 ms before removing itself, so hand-off requests
    -- arrive while it runs.
    local out = run([[
      start_busy()
      local calls = 0
      debug.sethook(function()
        calls = calls + 1
        local t0 = os.clock()
        while os.clock() - t0 < 0.02 do end
        debug.sethook()
      end, "c")
      local t0 = par.clock()  -- calls for 0.3 s more: the lock changes hands meanwhile
      while par.clock() - t0 < 0.3 do work(1000) end
      local after = table.pack(debug.gethook())  -- lua5.4: just fail, no mask
      stop_busy()
      print(calls, after.n, after[1], after[2])
    ]])
    assert.equal("1\t1\tnil\tnil\n", out)
  end)
end)

describe("hand-off cost and call depth", function()
  it("does not grow with the depth of the call stack", function()
    -- The same loop at depth 10 and at depth 490,000 (Lua's limit is just
    -- under 500,000), beside a thread that asks for the lock every 1 ms.
    -- Arming the hook used to walk every frame: 65 times slower deep.
    local out = run([[
      start_busy()
      local function at_depth(d)
        if d > 0 then return at_depth(d - 1) + 0 end
        local t0 = par.clock()
        work(3000000)
        return par.clock() - t0
      end
      local shallow = math.min(at_depth(10), at_depth(10))
      local deep = math.min(at_depth(490000), at_depth(490000))
      stop_busy()
      print(deep / shallow)
    ]])
    assert.is_true(tonumber(out) < 3, "deep / shallow = " .. out)
  end)

  it("lets three pcall'ed stack overflows beside a busy thread finish", function()
    local out = run([[
      start_busy()
      for i = 1, 3 do
        local function overflow() return overflow() + 1 end
        local ok, err = pcall(overflow)
        assert(not ok and err:find("stack overflow"))
      end
      stop_busy()
      print("finished")
    ]])
    assert.equal("finished\n", out)
  end)
end)
