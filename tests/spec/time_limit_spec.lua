-- Per-task time limits (pool options, map options, pool:submit_with):
-- `time_limit` stops the task (threads, states: a forced cancel raised as
-- Timeout; processes: the worker is killed and replaced) and its future
-- fails with Timeout naming the limit; `soft_time_limit` first raises a
-- catchable SoftTimeLimit error inside the task, as Celery does.
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local errof = support.errof

-- Task functions are loaded in the real global environment (busted runs a
-- spec in an environment of its own, which states and processes would copy).
local function fn(src)
  return assert(load("local par = require 'parlua' return " .. src, "=task", "t", _G))()
end

local spin = fn "function() while true do end end"

for _, kind in ipairs{"threads", "states", "processes"} do
  describe("time limits, kind " .. kind, function()
    local pool
    before_each(function() pool = par.pool{workers = 2, kind = kind, time_limit = 0.3} end)
    after_each(function() pool:shutdown{interrupt = true} end)

    it("stop an endless loop and a long sleep with Timeout naming the limit", function()
      local t0 = par.clock()
      local loop = pool:submit(spin)
      local sleeper = pool:submit(fn "function() par.sleep(60) end")
      for _, f in ipairs{loop, sleeper} do
        local e = errof(f.result, f, 30)
        assert.equal("Timeout", e.kind)
        assert.matches("the task exceeded its time limit of 0.3 s", tostring(e))
      end
      assert.is_true(par.clock() - t0 < 20)
      -- the workers go on (a processes worker was replaced)
      assert.equal(7, pool:submit(fn "function() return 7 end"):result(30))
      assert.equal(2, pool:stats().failed)
    end)

    it("raise a catchable SoftTimeLimit first, in a loop and in a sleep", function()
      local caught = pool:submit_with({soft_time_limit = 0.1, time_limit = 30}, fn [[function()
        local ok, e = pcall(function() while true do end end)
        return e.kind, tostring(e)
      end]])
      local slept = pool:submit_with({soft_time_limit = 0.1, time_limit = 30}, fn [[function()
        local ok, e = pcall(par.sleep, 30)
        return ok, e.kind
      end]])
      local kind_, msg = caught:result(30)
      assert.equal("SoftTimeLimit", kind_)
      assert.matches("the task exceeded its soft time limit of 0.1 s", msg)
      local ok, k = slept:result(30)
      assert.is_false(ok)
      assert.equal("SoftTimeLimit", k)
    end)

    it("end a task that catches its soft limit and the first Timeout and goes on", function()
      local f = pool:submit_with({soft_time_limit = 0.1, time_limit = 0.4}, fn [[function()
        local spin = function() while true do end end
        pcall(spin)   -- SoftTimeLimit
        pcall(spin)   -- Timeout, raised again while the task goes on
        spin()
      end]])
      assert.equal("Timeout", errof(f.result, f, 30).kind)
    end)

    it("run from the start of each task and never reach into the next one", function()
      -- 4 tasks of 0.6 s on each worker: 2.4 s in all, past a limit of 2 s
      -- that did not start again with each task; 1.4 s to spare for each.
      local fs = {}
      for i = 1, 8 do
        fs[i] = pool:submit_with({time_limit = 2}, fn "function(x) par.sleep(0.6) return x end", i)
      end
      for i = 1, 8 do assert.equal(i, fs[i]:result(60)) end
      assert.equal(0, pool:stats().failed)
    end)

    it("hold among many short tasks without limits (a processes worker pipelines those)", function()
      local task = fn [[function(soft, i)
        if soft then local ok, e = pcall(function() while true do end end) return e.kind end
        return i
      end]]
      local fs = {}
      for i = 1, 300 do
        if i % 9 == 0 then fs[i] = pool:submit_with({soft_time_limit = 0.02, time_limit = 20}, task, true, i)
        else fs[i] = pool:submit(task, false, i) end
      end
      for i = 1, 300 do assert.equal(i % 9 == 0 and "SoftTimeLimit" or i, fs[i]:result(60)) end
    end)

    it("apply per task in map, overriding the pool's", function()
      local e = errof(pool.map, pool, fn [[function(x)
        if x == 2 then while true do end end
        par.sleep(0.5)   -- longer than the pool's 0.3
        return x
      end]], {1, 2, 3}, {time_limit = 2})
      assert.equal("Timeout", e.kind)
      assert.matches("time limit of 2 s", tostring(e))
      local r = {}
      for i, v in pool:imap(fn "function(x) return x * 2 end", {1, 2, 3}, {time_limit = 5}) do r[i] = v end
      assert.same({2, 4, 6}, r)
    end)
  end)
end

describe("time limit options", function()
  it("are refused when not positive numbers, or unknown to submit_with", function()
    assert.matches("field 'time_limit' must be a positive number", errof(par.pool, {time_limit = 0}))
    assert.matches("field 'soft_time_limit' must be a non%-negative number",
      errof(par.pool, {soft_time_limit = "soon"}))
    local pool = par.pool{workers = 1}
    assert.matches("unknown option 'timeout'",
      errof(pool.submit_with, pool, {timeout = 1}, function() end))
    assert.matches("bad argument #1 to 'submit_with' %(table expected, got function%)",
      errof(function() pool:submit_with(function() end) end))
    assert.matches("field 'time_limit' must be a non%-negative number",
      errof(pool.map, pool, print, {1}, {time_limit = -1}))
    pool:shutdown()
  end)

  it("name the error kind par.errors.SoftTimeLimit", function()
    assert.equal("SoftTimeLimit", par.errors.SoftTimeLimit)
  end)
end)
