-- Edge cases: long argument and result lists, metamethods that lie, the
-- script's own debug hooks, and things started while the runtime closes.
local par = require "parlua"
local support = dofile("tests/spec/support.lua")

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("robustness", function()
  it("passes 500 arguments to a thread and to a pool task", function()
    local t = par.thread(function(...) return select("#", ...) end, table.unpack(range(500)))
    t:start()
    assert.equal(500, t:result())
    local pool <close> = par.pool{workers = 1}
    assert.equal(500, pool:submit(function(...) return select("#", ...) end, table.unpack(range(500))):result())
  end)

  it("returns 100,000 values from a thread", function()
    local t = par.thread(function() return table.unpack(range(100000)) end)
    t:start()
    assert.equal(100000, select("#", t:result()))
  end)

  it("takes the raw length of args, whatever __len says", function()
    local args = setmetatable({1, 2}, {__len = function() return -3 end})
    local t = par.thread{target = function(...) return select("#", ...) end, args = args}
    t:start()
    assert.equal(2, t:result())
  end)

  it("keeps a pool alive while imap runs, even through a collection", function()
    local i, n = 0, 0
    local items = function() i = i + 1; if i <= 100 then return i end end
    for _, r in par.pool{workers = 2}:imap(function(x) return x * 2 end, items) do
      collectgarbage()
      n = n + 1
    end
    assert.equal(100, n)
  end)

  it("gives the script's own debug hook back after the lock changed hands", function()
    local calls = 0
    debug.sethook(function() calls = calls + 1 end, "", 1000)
    local burner = par.thread(function() local x = 0 for i = 1, 3e6 do x = x + i end end)
    burner:start()
    local x = 0
    for i = 1, 3e6 do x = x + i end
    burner:join()
    local before = calls
    for i = 1, 1e6 do x = x + i end
    local hook = debug.gethook()
    debug.sethook()
    assert.is_function(hook)
    assert.is_true(calls > before)
  end)

  it("refuses to make objects from a finalizer once the runtime has closed", function()
    -- G is made before parlua loads, so its finalizer runs after the
    -- runtime's shutdown in stock lua5.4 as in the parlua program.  Lua
    -- gives userdata made then no finalizer: each would leak (the ASan
    -- suite sees it).
    local out, status = support.lua_cmd([[
      G = setmetatable({}, {__gc = function()
        local par = require "parlua"
        for _, make in ipairs{function() par.thread(function() end):start() end, par.queue, par.lock} do
          local ok, e = pcall(make)
          io.write(tostring(ok), " ", tostring(e and e.kind), " ", tostring(e and e.message), "\n")
        end
      end})
      require "parlua"
    ]])
    assert.equal(0, status, out)
    assert.matches("false Shutdown cannot make a thread: the runtime is closing", out, 1, true)
    assert.matches("false Shutdown cannot make a queue: the runtime is closing", out, 1, true)
    assert.matches("false Shutdown cannot make a lock: the runtime is closing", out, 1, true)
  end)
end)
