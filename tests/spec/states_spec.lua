-- par.pool{kind = "states"}: every worker owns a lua_State with its own
-- lock.  The pool API (submit, map, starmap, imap, chunksize, init,
-- max_tasks_per_worker, shutdown, callbacks) on isolated states.
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local errof = support.errof

-- A function whose _ENV is this file's _G (busted gives each spec file an
-- environment of its own, which would travel as a copy).
local function fn(src)
  return assert(load("return " .. src, "=task", "t", _G))()
end

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("kind states", function()
  it("makes a pool of kind states", function()
    local pool = par.pool{kind = "states", workers = 2}
    local st = pool:stats()
    assert.equal("states", st.kind)
    assert.equal(2, st.workers)
    assert.equal(0, st.alive)
    assert.matches("kind=states", tostring(pool))
    pool:shutdown()
    local processes = par.pool{kind = "processes", workers = 1}  -- available now
    assert.equal("processes", processes:stats().kind)
    processes:shutdown()
    assert.matches("field 'max_tasks_per_worker' must be a positive integer",
      errof(par.pool, {kind = "states", max_tasks_per_worker = 0}))
    assert.equal("max_tasks_per_worker applies to kinds states, processes and mpi",
      errof(par.pool, {kind = "threads", max_tasks_per_worker = 2}))
  end)

  describe("submit", function()
    local pool
    setup(function() pool = par.pool{kind = "states", workers = 2} end)
    teardown(function() pool:shutdown() end)

    it("runs a task in a worker state and returns every value", function()
      local f = pool:submit(function(a, b) return a + b, a * b, nil, "x" end, 3, 4)
      assert.same({7, 12, nil, "x"}, {f:result()})
      assert.equal(4, select("#", f:result()))
      assert.is_true(f:done())
      assert.is_nil(f:exception())
      assert.matches("^Pool%-%d+%-Worker%-%d$", pool:submit(function() return par.current_thread() end):result())
    end)

    it("runs in a state of its own: a worker keeps its globals, the main state never sees them", function()
      local set = fn "function() STATES_SPEC_COUNTER = (STATES_SPEC_COUNTER or 0) + 1 return STATES_SPEC_COUNTER end"
      local one = par.pool{kind = "states", workers = 1}
      assert.equal(1, one:submit(set):result())
      assert.equal(2, one:submit(set):result())
      one:shutdown()
      assert.is_nil(rawget(_G, "STATES_SPEC_COUNTER"))
    end)

    it("runs CPU-bound tasks in parallel (the workers' intervals overlap)", function()
      local burn = fn [[function()
        local par = require "parlua"
        local t0 = par.clock()
        local x = 0
        while par.clock() - t0 < 0.3 do for i = 1, 10000 do x = x + i % 7 end end
        return t0, par.clock()
      end]]
      local a, b = pool:submit(burn), pool:submit(burn)
      local a0, a1 = a:result()
      local b0, b1 = b:result()
      assert.is_true(a0 < b1 and b0 < a1, "the two tasks did not overlap")
    end)

    it("raises a task's error value, copied, with the worker's traceback", function()
      local deep = fn "function() error({code = 42, list = {1, 2}}) end"
      local f = pool:submit(function() deep() end)
      local e = errof(f.result, f)
      assert.same({code = 42, list = {1, 2}}, e)
      assert.same(e, f:exception())
      local g = pool:submit(function() local t = nil; return t.x end)
      assert.matches("states_spec.lua:%d+: attempt to index a nil value %(local 't'%)", errof(g.result, g))
      assert.matches("stack traceback:", g:traceback())
      assert.matches("states_spec.lua:%d+:", g:traceback())
      assert.is_nil(pool:submit(function() end):traceback())
    end)

    it("says why a global is missing and how to fix it", function()
      rawset(_G, "states_spec_helper", function() return 1 end)
      local call = pool:submit(fn "function() return states_spec_helper() end")
      assert.equal("task:1: attempt to call a nil value (global 'states_spec_helper') (globals are not copied "
        .. "to 'states' workers: make 'states_spec_helper' a local upvalue of the task, or define it in the "
        .. "pool's init function)", errof(call.result, call))
      assert.matches("globals are not copied", call:traceback())
      local index = pool:submit(fn "function() return states_spec_config.size end")
      assert.matches("attempt to index a nil value %(global 'states_spec_config'%) %(globals are not copied to "
        .. "'states' workers: make 'states_spec_config' a local upvalue", errof(index.result, index))
      rawset(_G, "states_spec_helper", nil)
      -- the fix: a local upvalue
      local helper = rawget(_G, "print") and function() return 1 end
      assert.equal(1, pool:submit(function() return helper() end):result())
    end)

    it("refuses to submit after shutdown", function()
      local p = par.pool{kind = "states", workers = 1}
      p:shutdown()
      local e = errof(p.submit, p, function() end)
      assert.equal("Shutdown", e.kind)
      assert.equal("cannot submit after shutdown", tostring(e))
    end)
  end)

  describe("map", function()
    local pool
    setup(function() pool = par.pool{kind = "states", workers = 2} end)
    teardown(function() pool:shutdown() end)

    it("returns results in order, with or without chunks", function()
      local sq = function(x) return x * x end
      local expect = {}
      for i = 1, 1000 do expect[i] = i * i end
      assert.same(expect, pool:map(sq, range(1000)))
      assert.same(expect, pool:map(sq, range(1000), {chunksize = 7}))
      assert.same(expect, pool:map(sq, range(1000), {chunksize = 500}))
      assert.same({}, pool:map(sq, {}))
      local i = 0
      assert.same({1, 4, 9}, pool:map(sq, function() i = i + 1; if i <= 3 then return i end end, {chunksize = 2}))
    end)

    it("starmap unpacks each item", function()
      assert.same({3, 7, 11}, pool:starmap(function(a, b) return a + b end, {{1, 2}, {3, 4}, {5, 6}}, {chunksize = 2}))
    end)

    it("raises the first error, with a chunk", function()
      local e = errof(pool.map, pool, fn "function(x) if x == 5 then error('five') end return x end", range(10),
        {chunksize = 3})
      assert.matches("five$", e)
    end)

    it("imap and imap_unordered yield every result", function()
      local got = {}
      for i, v in pool:imap(function(x) return x + 100 end, range(50), {chunksize = 4}) do got[i] = v end
      assert.same(pool:map(function(x) return x + 100 end, range(50)), got)
      local sum, count = 0, 0
      for _, v in pool:imap_unordered(function(x) return x end, range(100), {chunksize = 10}) do
        sum, count = sum + v, count + 1
      end
      assert.equal(5050, sum)
      assert.equal(100, count)
    end)
  end)

  describe("init and max_tasks_per_worker", function()
    it("runs init in every worker before its first task (init travels too)", function()
      local greeting = "hello"
      local init = fn "function(g) return function() STATES_SPEC_INIT = g end end"(greeting)
      local pool = par.pool{kind = "states", workers = 2, init = init}
      local read = fn "function() return STATES_SPEC_INIT end"
      assert.same({"hello", "hello", "hello", "hello"}, pool:map(read, {1, 2, 3, 4}))
      pool:shutdown()
    end)

    it("a failing init breaks the pool", function()
      local pool = par.pool{kind = "states", workers = 1, init = fn "function() error('no database') end"}
      local f = pool:submit(function() return 1 end)
      local e = errof(f.result, f)
      assert.equal("BrokenPool", e.kind)
      assert.matches("^pool init failed: .*no database$", tostring(e))
      assert.matches("no database$", e.cause)
      assert.matches("stack traceback", f:traceback())
      assert.matches("the pool is broken: pool init failed", tostring(errof(pool.submit, pool, function() end)))
      pool:shutdown()
    end)

    it("an init that cannot be sent is refused at par.pool", function()
      local co = coroutine.create(print)
      local e = errof(par.pool, {kind = "states", init = function() return co end})
      assert.equal('init function: upvalue "co" of function: cannot send a coroutine', tostring(e))
    end)

    it("recycles a worker's state after max_tasks_per_worker tasks, running init again", function()
      local inits = par.queue()
      local init = fn "function(q) return function() q:put('init') end end"(inits)
      local pool = par.pool{kind = "states", workers = 1, max_tasks_per_worker = 2, init = init}
      local count = fn "function() STATES_SPEC_N = (STATES_SPEC_N or 0) + 1 return STATES_SPEC_N end"
      local seen = {}
      for i = 1, 5 do seen[i] = pool:submit(count):result() end
      assert.same({1, 2, 1, 2, 1}, seen)
      pool:shutdown()
      local n = 0
      while not inits:empty() do inits:get(); n = n + 1 end
      assert.equal(3, n)  -- one state per two tasks; none made for nothing after the last
    end)
  end)

  describe("shutdown", function()
    it("interrupts an endless loop", function()
      local pool = par.pool{kind = "states", workers = 1}
      local started = par.event()
      local f = pool:submit(fn "function(ev) ev:set() while true do end end", started)
      assert.is_true(started:wait(10))
      local t0 = par.clock()
      pool:shutdown{interrupt = true}
      assert.is_true(par.clock() - t0 < 5)
      local e = errof(f.result, f)
      assert.equal("Cancelled", e.kind)
    end)

    it("interrupts a long par.sleep", function()
      local pool = par.pool{kind = "states", workers = 1}
      local started = par.event()
      local f = pool:submit(fn "function(ev) local par = require 'parlua' ev:set() par.sleep(60) end", started)
      assert.is_true(started:wait(10))
      local t0 = par.clock()
      pool:shutdown{interrupt = true}
      assert.is_true(par.clock() - t0 < 5)
      assert.equal("Cancelled", errof(f.result, f).kind)
    end)

    it("cancels what has not started with cancel_futures", function()
      local pool = par.pool{kind = "states", workers = 1}
      local go, running = par.event(), par.event()
      local first = pool:submit(fn "function(ev, running) running:set() ev:wait(10) return 'first' end", go, running)
      assert.is_true(running:wait(10))
      local later = {}
      for i = 1, 5 do later[i] = pool:submit(function() return i end) end
      pool:shutdown{wait = false, cancel_futures = true}
      go:set()
      assert.equal("first", first:result())
      for i = 1, 5 do assert.is_true(later[i]:cancelled()) end
      pool:shutdown()
    end)

    it("joins a par.thread that a task started, before the worker's state closes", function()
      local pool = par.pool{kind = "states", workers = 1}
      local q = par.queue()
      pool:submit(fn [[function(q)
        local par = require "parlua"
        par.thread(function() par.sleep(0.2) q:put("thread done") end):start()
        return true
      end]], q):result()
      pool:shutdown()
      assert.equal("thread done", q:get(0))
    end)
  end)

  describe("done callbacks", function()
    it("run in the main state, holding its lock", function()
      local pool = par.pool{kind = "states", workers = 1}
      local results = {}
      local go = par.event()
      local f = pool:submit(fn "function(ev) ev:wait(10) return 21 end", go)
      f:add_done_callback(function(fut) results[#results + 1] = fut:result() * 2 end)
      f:add_done_callback(function(fut) results[#results + 1] = fut:done() end)
      go:set()
      f:result()
      pool:shutdown()  -- callbacks ran before the worker went on
      assert.same({42, true}, results)
      local late = {}
      f:add_done_callback(function() late[1] = "at once" end)
      assert.equal("at once", late[1])
    end)
  end)

  it("can run a nested pool inside a worker", function()
    local pool = par.pool{kind = "states", workers = 1}
    local r = pool:submit(fn [[function()
      local par = require "parlua"
      local inner <close> = par.pool{kind = "threads", workers = 2}
      return inner:map(function(x) return x * 10 end, {1, 2, 3})
    end]]):result()
    assert.same({10, 20, 30}, r)
    pool:shutdown()
  end)
end)
