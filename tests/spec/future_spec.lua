-- Futures, par.wait and par.as_completed (kind threads).
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local lua_cmd, errof = support.lua_cmd, support.errof

-- A pool with one worker kept busy until `release` is set, so that tasks
-- submitted meanwhile stay queued.
local function blocked_pool()
  local pool = par.pool{workers = 1}
  local ev = par.event()
  local blocker = pool:submit(function() ev:wait(10) end)
  while not blocker:running() do par.sleep(0.001) end
  return pool, ev, blocker
end

describe("Future", function()
  local pool
  before_each(function() pool = par.pool{workers = 4} end)
  after_each(function() pool:shutdown{cancel_futures = true, interrupt = true} end)

  it("result() returns every value, nils included", function()
    local f = pool:submit(function(a) return a, nil, "x", nil end, 1)
    assert.same({1, nil, "x", nil, n = 4}, table.pack(f:result()))
    assert.same({n = 0}, table.pack(pool:submit(function() end):result()))
    -- it can be read again
    assert.same({1, nil, "x", nil, n = 4}, table.pack(f:result()))
  end)

  it("result(timeout) raises a Timeout error object", function()
    local f = pool:submit(par.sleep, 0.5)
    local err = errof(f.result, f, 0.05)
    assert.equal("Timeout", err.kind)
    assert.matches("future not done after", tostring(err))
    assert.is_false(f:done())
    assert.is_nil(f:result())  -- the task goes on
  end)

  it("result(0) polls", function()
    local f = pool:submit(function() return 5 end)
    while not f:done() do par.sleep(0.001) end
    assert.equal(5, f:result(0))
  end)

  it("refuses a negative or non-number timeout", function()
    local f = pool:submit(function() end)
    assert.matches("bad argument #1 to 'result' %(timeout must be a non%-negative number%)",
      errof(function() return f:result(-1) end))
    assert.matches("bad argument #1 to 'exception' %(timeout must be a non%-negative number%)",
      errof(function() return f:exception(-0.5) end))
    assert.matches("number expected, got string", errof(function() return f:result("soon") end))
  end)

  it("raises the task's own error value unchanged", function()
    local e = {code = 42}
    local f = pool:submit(function() error(e) end)
    assert.equal(e, errof(f.result, f))
    assert.equal(e, f:exception())
    local g = pool:submit(function() error("plain", 0) end)
    assert.equal("plain", errof(g.result, g))
    local h = pool:submit(function() error("with position") end)
    assert.matches("future_spec.lua:%d+: with position", errof(h.result, h))
  end)

  it("exception() is nil for a task that returned, and waits", function()
    local f = pool:submit(function() par.sleep(0.05) return 1 end)
    assert.is_nil(f:exception())
    assert.is_true(f:done())
    local g = pool:submit(par.sleep, 0.5)
    assert.equal("Timeout", errof(g.exception, g, 0.01).kind)
  end)

  it("traceback() is the worker's traceback of a failed task", function()
    local function inner_failing_function() error("deep") end
    local f = pool:submit(function() inner_failing_function() end)
    f:exception()
    local tb = f:traceback()
    assert.is_string(tb)
    assert.matches("deep", tb)
    assert.matches("stack traceback:", tb)
    assert.matches("inner_failing_function", tb)
    assert.is_nil(pool:submit(function() return 1 end):traceback())
    local pending = pool:submit(par.sleep, 0.2)
    assert.is_nil(pending:traceback())
  end)

  it("done, running and cancelled follow the task", function()
    local p, ev = blocked_pool()
    local f = p:submit(function() return 1 end)
    assert.is_false(f:done())
    assert.is_false(f:running())
    assert.is_false(f:cancelled())
    ev:set()
    assert.equal(1, f:result())
    assert.is_true(f:done())
    assert.is_false(f:running())
    assert.is_false(f:cancelled())
    local g = p:submit(par.sleep, 0.3)
    while not g:running() do par.sleep(0.001) end
    assert.is_true(g:running())
    assert.is_false(g:done())
    p:shutdown()
  end)

  it("cancel() works only while the task is queued", function()
    local p, ev, blocker = blocked_pool()
    local ran = false
    local f = p:submit(function() ran = true end)
    assert.is_true(f:cancel())
    assert.is_true(f:cancel())  -- again: still cancelled
    assert.is_true(f:cancelled())
    assert.is_true(f:done())
    assert.is_false(f:running())
    assert.is_false(blocker:cancel())  -- running
    local err = errof(f.result, f)
    assert.equal("Cancelled", err.kind)
    assert.equal("future was cancelled", tostring(err))
    assert.equal("Cancelled", errof(f.exception, f).kind)
    ev:set()
    blocker:result()
    assert.is_false(blocker:cancel())  -- finished
    p:shutdown()
    assert.is_false(ran)
    assert.equal(1, p:stats().cancelled)
  end)

  it("tostring shows the state", function()
    local p, ev = blocked_pool()
    local f = p:submit(function() error("x") end)
    assert.equal("Future(pending)", tostring(f))
    ev:set()
    f:exception()
    assert.equal("Future(finished, raised an error)", tostring(f))
    local g = p:submit(function() end)
    g:result()
    assert.equal("Future(finished)", tostring(g))
    local c = p:submit(par.sleep, 1)
    while not c:running() do par.sleep(0.001) end
    assert.equal("Future(running)", tostring(c))
    p:shutdown{interrupt = true}
  end)

  it("waiting releases the lock and can be force-cancelled", function()
    local f = pool:submit(par.sleep, 5)
    local t = par.thread(function() return f:result() end)
    t:start()
    par.sleep(0.05)
    local t0 = par.clock()
    t:cancel{force = true}
    assert.is_true(t:join(2))
    assert.equal("Cancelled", errof(t.result, t).kind)
    assert.is_true(par.clock() - t0 < 1)
  end)

  it("methods check their receiver", function()
    local f = pool:submit(function() end)
    assert.matches("parlua.Future expected", errof(f.result, {}))
  end)
end)

describe("Future:add_done_callback", function()
  local pool
  before_each(function() pool = par.pool{workers = 2} end)
  after_each(function() pool:shutdown{cancel_futures = true, interrupt = true} end)

  it("runs the callback with the same future, in the worker, once done", function()
    local ev = par.event()
    local got, where
    local f = pool:submit(function() ev:wait(5) return 7 end)
    local done = par.event()
    f:add_done_callback(function(fut)
      got = fut
      where = par.current_thread()
      assert(fut:done(), "not done in callback")
      done:set()
    end)
    assert.is_nil(got)
    ev:set()
    assert.is_true(done:wait(5))
    assert.equal(f, got)
    assert.matches("^Pool%-%d+%-Worker%-%d+$", where)
    assert.equal(7, f:result())
  end)

  it("runs at once, in the caller, when the future is already done", function()
    local f = pool:submit(function() return 1 end)
    f:result()
    local where
    f:add_done_callback(function() where = par.current_thread() end)
    assert.equal("MainThread", where)
  end)

  it("runs callbacks in the order they were added", function()
    local p, ev = blocked_pool()
    local f = p:submit(function() end)
    local order = {}
    for i = 1, 5 do f:add_done_callback(function() order[#order + 1] = i end) end
    ev:set()
    f:result()
    p:shutdown()
    assert.same({1, 2, 3, 4, 5}, order)
  end)

  it("runs callbacks of a cancelled future in the canceller", function()
    local p, ev = blocked_pool()
    local f = p:submit(function() end)
    local seen
    f:add_done_callback(function(fut) seen = fut:cancelled() and par.current_thread() end)
    f:cancel()
    assert.equal("MainThread", seen)
    ev:set()
    p:shutdown()
  end)

  it("runs callbacks of futures cancelled by shutdown", function()
    local p, ev = blocked_pool()
    local n = 0
    for _ = 1, 3 do p:submit(function() end):add_done_callback(function() n = n + 1 end) end
    p:shutdown{wait = false, cancel_futures = true}
    assert.equal(3, n)
    ev:set()
    p:shutdown()
  end)

  it("a slow callback does not hold up tasks submitted meanwhile", function()
    local ev, started = par.event(), par.event()
    local f = pool:submit(function() ev:wait(5) end)
    f:add_done_callback(function() started:set() par.sleep(0.5) end)
    ev:set()
    assert.is_true(started:wait(5))
    local t0 = par.clock()
    assert.equal(1, pool:submit(function() return 1 end):result())
    assert.is_true(par.clock() - t0 < 0.3, "waited for the callback")
  end)

  it("refuses a non-function", function()
    local f = pool:submit(function() end)
    assert.matches("bad argument #1 to 'add_done_callback' %(function expected, got number%)",
      errof(function() f:add_done_callback(3) end))
  end)

  it("reports a callback that raises on stderr, and the pool goes on", function()
    local out, status = lua_cmd([[
      local par = require "parlua"
      local pool = par.pool{workers = 1}
      local f = pool:submit(function() par.sleep(0.05) return 1 end)
      local function failing_callback() error("callback broke") end
      f:add_done_callback(failing_callback)
      print("result", f:result())
      print("next", pool:submit(function() return 2 end):result())
      f:add_done_callback(function() error({}) end)
      print("still here")
      pool:shutdown()
    ]])
    assert.equal(0, status, out)
    assert.matches("result\t1", out)
    assert.matches("next\t2", out)
    assert.matches("still here", out)
    assert.matches("an exception in a done callback of Future%(finished%):", out)
    assert.matches("callback broke", out)
    assert.matches("stack traceback:", out)
    assert.matches("error object is a table value", out)
  end)
end)

describe("par.wait", function()
  local pool
  before_each(function() pool = par.pool{workers = 4} end)
  after_each(function() pool:shutdown{cancel_futures = true, interrupt = true} end)

  it("waits for all by default, and returns arrays in input order", function()
    assert.equal("ALL_COMPLETED", par.ALL_COMPLETED)
    local fs = {}
    for i = 1, 4 do fs[i] = pool:submit(function() par.sleep(0.05 * (5 - i)) return i end) end
    local done, not_done = par.wait(fs)
    assert.equal(4, #done)
    assert.equal(0, #not_done)
    for i = 1, 4 do assert.equal(fs[i], done[i]) end
  end)

  it("FIRST_COMPLETED returns as soon as one is done", function()
    local fast = pool:submit(function() par.sleep(0.05) return "fast" end)
    local slow = pool:submit(par.sleep, 2)
    local t0 = par.clock()
    assert.equal("FIRST_COMPLETED", par.FIRST_COMPLETED)
    local done, not_done = par.wait({slow, fast}, {return_when = par.FIRST_COMPLETED})
    assert.is_true(par.clock() - t0 < 1.5)
    assert.same({fast}, done)
    assert.same({slow}, not_done)
  end)

  it("FIRST_EXCEPTION returns at the first failure, else waits for all", function()
    local bad = pool:submit(function() par.sleep(0.05) error("bad") end)
    local slow = pool:submit(par.sleep, 2)
    local t0 = par.clock()
    local done, not_done = par.wait({slow, bad}, {return_when = par.FIRST_EXCEPTION})
    assert.is_true(par.clock() - t0 < 1.5)
    assert.same({bad}, done)
    assert.same({slow}, not_done)
    local a = pool:submit(function() par.sleep(0.05) end)
    local b = pool:submit(function() par.sleep(0.1) end)
    done, not_done = par.wait({a, b}, {return_when = "FIRST_EXCEPTION"})
    assert.equal(2, #done)
    assert.equal(0, #not_done)
  end)

  it("a cancelled future is done but not an exception", function()
    local p, ev = blocked_pool()
    local c = p:submit(function() end)
    c:cancel()
    local slow = p:submit(function() end)
    local done, not_done = par.wait({c, slow}, {return_when = "FIRST_EXCEPTION", timeout = 0.1})
    assert.same({c}, done)
    assert.same({slow}, not_done)
    ev:set()
    p:shutdown()
  end)

  it("timeout returns what is done by then", function()
    local quick = pool:submit(function() return 1 end)
    quick:result()
    local slow = pool:submit(par.sleep, 2)
    local t0 = par.clock()
    local done, not_done = par.wait({quick, slow}, {timeout = 0.1})
    local took = par.clock() - t0
    assert.is_true(took >= 0.09 and took < 1.5, took)
    assert.same({quick}, done)
    assert.same({slow}, not_done)
    done, not_done = par.wait({slow}, {timeout = 0})
    assert.same({}, done)
    assert.same({slow}, not_done)
  end)

  it("accepts an empty list and lists a future twice if given twice", function()
    local d, n = par.wait({})
    assert.same({}, d)
    assert.same({}, n)
    d, n = par.wait({}, {return_when = "FIRST_COMPLETED"})
    assert.same({}, d)
    local f = pool:submit(function() end)
    d = par.wait({f, f})
    assert.same({f, f}, d)
  end)

  it("rejects bad input with clear messages", function()
    local f = pool:submit(function() end)
    assert.matches("bad argument #1 to '[%w.]*wait' %(table expected, got number%)", errof(par.wait, 3))
    assert.matches("bad argument #1 to '[%w.]*wait' %(item 2 is not a Future %(got string%)%)",
      errof(par.wait, {f, "x"}))
    assert.matches("field 'return_when' must be \"ALL_COMPLETED\", \"FIRST_COMPLETED\" or \"FIRST_EXCEPTION\"",
      errof(par.wait, {f}, {return_when = "SOME"}))
    assert.matches("field 'timeout' must be a non%-negative number", errof(par.wait, {f}, {timeout = -1}))
    assert.matches("unknown option 'timout'", errof(par.wait, {f}, {timout = 1}))
  end)
end)

describe("par.as_completed", function()
  local pool
  before_each(function() pool = par.pool{workers = 4} end)
  after_each(function() pool:shutdown{cancel_futures = true, interrupt = true} end)

  it("yields futures in the order they finish", function()
    local fs = {}
    for i = 1, 4 do fs[i] = pool:submit(function() par.sleep(0.08 * (5 - i)) return i end) end
    local order = {}
    for f in par.as_completed(fs) do order[#order + 1] = f:result() end
    assert.same({4, 3, 2, 1}, order)
  end)

  it("yields the ones already done first, in input order", function()
    local a = pool:submit(function() return "a" end)
    local b = pool:submit(function() return "b" end)
    a:result()
    b:result()
    local slow = pool:submit(function() par.sleep(0.1) return "slow" end)
    local order = {}
    for f in par.as_completed({slow, b, a}) do order[#order + 1] = f:result() end
    assert.same({"b", "a", "slow"}, order)
  end)

  it("raises Timeout when the time is up", function()
    local quick = pool:submit(function() return 1 end)
    local slow = pool:submit(par.sleep, 2)
    local seen = {}
    local t0 = par.clock()
    local ok, err = pcall(function()
      for f in par.as_completed({quick, slow}, 0.1) do seen[#seen + 1] = f end
    end)
    assert.is_false(ok)
    assert.equal("Timeout", err.kind)
    assert.equal("1 (of 2) futures unfinished", err.message)
    assert.same({quick}, seen)
    assert.is_true(par.clock() - t0 < 1.5)
  end)

  it("can be left early", function()
    local fs = {}
    for i = 1, 4 do fs[i] = pool:submit(function() par.sleep(0.02 * i) return i end) end
    for f in par.as_completed(fs) do
      assert.equal(1, f:result())
      break
    end
    par.wait(fs)
  end)

  it("rejects bad input", function()
    assert.matches("bad argument #1 to '[%w.]*as_completed' %(table expected, got nil%)", errof(par.as_completed))
    assert.matches("item 1 is not a Future", errof(par.as_completed, {{}}))
    assert.matches("bad argument #2 to '[%w.]*as_completed' %(timeout must be a non%-negative number%)",
      errof(par.as_completed, {}, -2))
  end)
end)
