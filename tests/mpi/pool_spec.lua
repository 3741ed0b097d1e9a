-- Kind mpi: the pool cases the other kinds pass, run by tests/run-all.sh in
-- both launch modes through the parlua program:
--   static:  mpiexec -n 3 build/parlua /usr/bin/busted tests/mpi   (ranks 1, 2 serve)
--   spawn:   build/parlua /usr/bin/busted tests/mpi                 (pools spawn ranks)
-- PARLUA_MPI_MODE says which one this run is meant to be; with
-- PARLUA_MPI_THREAD_LEVEL=serialized every MPI call goes through the mutex
-- of a library that offers less than MPI_THREAD_MULTIPLE.
local par = require "parlua"
-- Tasks are closures of this file: they must see the real globals, not
-- busted's environment (which holds busted itself and cannot cross).
local describe, it, setup, teardown, assert, pending = describe, it, setup, teardown, assert, pending
local _ENV = _G

local mode = os.getenv("PARLUA_MPI_MODE") or "spawn"

local function errof(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("kind mpi (" .. mode .. " mode)", function()
  local pool
  setup(function() pool = par.pool{kind = "mpi", workers = 2} end)
  teardown(function() pool:shutdown() end)

  it("runs in the launch mode the run asked for, and says what MPI it has", function()
    local info = par.mpi_info()
    assert.equal(0, info.rank)
    -- run-all.sh runs the spawn mode once more with a lower level asked for
    local level = os.getenv("PARLUA_MPI_THREAD_LEVEL") or "multiple"
    assert.equal(level, info.thread_level)
    assert.equal(level ~= "multiple", info.serialised)
    assert.matches("^Open MPI v%d", info.library)
    if mode == "static" then
      assert.equal(3, info.size)
      assert.equal(2, info.servers)
    else
      assert.equal(1, info.size)
      assert.equal(0, info.servers)
    end
    assert.equal("mpi", pool:stats().kind)
    assert.matches("kind=mpi, workers=2", tostring(pool))
  end)

  it("runs closures with upvalues in another process, keeping every return value", function()
    local k = 10
    local r = table.pack(pool:submit(function(a, b) return a + b + k, par.pid(), nil end, 1, 2):result(30))
    assert.equal(3, r.n)
    assert.equal(13, r[1])
    assert.are_not.equal(par.pid(), r[2])
    assert.is_nil(r[3])
    -- tables are copied, shared references and metatables kept
    local t = setmetatable({x = 1}, {__index = function() return "dflt" end})
    local back = pool:submit(function(a) a.y = a.x + 1 return a, a end, t):result(30)
    assert.equal(2, back.y)
    assert.equal("dflt", back.zzz)
    assert.is_nil(rawget(t, "y"))
  end)

  it("uses both ranks: two sleeps overlap", function()
    local t0 = par.clock()
    local a = pool:submit(function() par.sleep(1) return par.pid() end)
    local b = pool:submit(function() par.sleep(1) return par.pid() end)
    local pa, pb = a:result(30), b:result(30)
    assert.are_not.equal(pa, pb)
    assert.is_true(par.clock() - t0 < 1.9, "took " .. (par.clock() - t0))  -- serial: 2 s
  end)

  it("raises task errors unchanged, with the worker's traceback and the missing-global hint", function()
    local f = pool:submit(function()
      local function inner() error("deep failure") end
      inner()
    end)
    local err = errof(f.result, f, 30)
    assert.matches("pool_spec.lua:%d+: deep failure", err)
    assert.matches("in local 'inner'", f:traceback())
    assert.equal(err, f:exception(30))
    local f2 = pool:submit(function() error({code = 7}) end)
    assert.equal(7, errof(f2.result, f2, 30).code)
    local f3 = pool:submit(function() return no_such_global() end)
    assert.matches("globals are not copied to 'mpi' workers: make 'no_such_global' a local upvalue",
      errof(f3.result, f3, 30))
  end)

  it("refuses shared objects, naming what cannot cross machines", function()
    for _, case in ipairs{{par.lock(), "a lock"}, {par.queue(), "a queue"}, {par.event(), "an event"}} do
      local err = errof(pool.submit, pool, function(x) return x end, case[1])
      assert.equal("Transfer", err.kind)
      assert.equal("argument 1: cannot send " .. case[2] .. " to an mpi worker (no shared object crosses machines)",
        err.message)
    end
    local lk = par.lock()
    assert.matches('upvalue "lk" of function: cannot send a lock to an mpi worker',
      errof(pool.submit, pool, function() return lk end).message)
    -- a result that cannot come back fails the task, not the rank
    local f = pool:submit(function() return par.lock() end)
    local err = errof(f.result, f, 30)
    assert.equal("Transfer", err.kind)
    assert.equal("result 1: cannot send a lock to an mpi worker (no shared object crosses machines)", err.message)
    assert.equal(5, pool:submit(function() return 5 end):result(30))
  end)

  it("maps in order, with chunksize, starmap, imap and imap_unordered", function()
    local sq = function(x) return x * x end
    local want = {}
    for i = 1, 50 do want[i] = i * i end
    assert.same(want, pool:map(sq, range(50)))
    assert.same(want, pool:map(sq, range(50), {chunksize = 7}))
    assert.same({3, 7}, pool:starmap(function(a, b) return a + b end, {{1, 2}, {3, 4}}))
    local got = {}
    for i, r in pool:imap(sq, range(20), {chunksize = 3}) do got[i] = r end
    assert.same({table.unpack(want, 1, 20)}, got)
    local seen, n = {}, 0
    for i, r in pool:imap_unordered(sq, range(20)) do
      seen[i] = r
      n = n + 1
    end
    assert.equal(20, n)
    assert.same({table.unpack(want, 1, 20)}, seen)
    assert.matches("item 3", errof(pool.map, pool, function(x) if x == 3 then error("item 3") end return x end,
      range(5)))
  end)

  it("times a map out as a whole with Timeout, and the pool goes on", function()
    local t0 = par.clock()
    local err = errof(pool.map, pool, function(x) par.sleep(x) return x end, {0.01, 5, 5}, {timeout = 0.5})
    assert.equal("Timeout", err.kind)
    assert.is_true(par.clock() - t0 < 2)
  end)

  it("waits with par.wait and par.as_completed; cancels what has not started", function()
    local fs = {}
    for i = 1, 4 do fs[i] = pool:submit(function(x) par.sleep(0.05 * x) return x end, i) end
    local done, not_done = par.wait(fs)
    assert.equal(4, #done)
    assert.equal(0, #not_done)
    local n = 0
    for f in par.as_completed(fs, 30) do
      n = n + 1
      assert.is_true(f:done())
    end
    assert.equal(4, n)
    local busy = {pool:submit(function() par.sleep(0.5) end), pool:submit(function() par.sleep(0.5) end)}
    local queued = pool:submit(function() return "ran" end)
    assert.is_true(queued:cancel())
    assert.is_true(queued:cancelled())
    assert.equal("Cancelled", errof(queued.result, queued).kind)
    for _, f in ipairs(busy) do f:result(30) end
  end)

  it("runs done callbacks in the owning state", function()
    local got
    local f = pool:submit(function() return 42 end)
    f:add_done_callback(function(g) got = g:result() end)
    f:result(30)
    local t0 = par.clock()
    while got == nil and par.clock() - t0 < 10 do par.sleep(0.01) end
    assert.equal(42, got)
  end)

  it("counts in stats", function()
    local before = pool:stats()
    pool:submit(function() return 1 end):result(30)
    local f = pool:submit(function() error("x") end)
    pcall(f.result, f, 30)
    local st = pool:stats()
    assert.equal(before.submitted + 2, st.submitted)
    assert.equal(before.completed + 1, st.completed)
    assert.equal(before.failed + 1, st.failed)
    assert.equal(2, st.workers)
  end)

  it("draws no progress bar off a terminal", function()
    assert.same({2, 4}, pool:map(function(x) return 2 * x end, {1, 2}, {progress = true}))
  end)
end)

describe("kind mpi pools (" .. mode .. " mode)", function()
  it("run init once in every worker's state, before its first task", function()
    local pool <close> = par.pool{kind = "mpi", workers = 2, init = function() _G.ready = (_G.ready or 0) + 1 end}
    local r = pool:map(function() par.sleep(0.05) return _G.ready end, range(6))
    for i = 1, 6 do assert.equal(1, r[i]) end
  end)

  it("break when init fails: tasks fail with BrokenPool naming it", function()
    local pool = par.pool{kind = "mpi", workers = 1, init = function() error("no init") end}
    local f = pool:submit(function() return 1 end)
    local err = errof(f.result, f, 30)
    assert.equal("BrokenPool", err.kind)
    assert.matches("pool init failed: .*no init", err.message)
    assert.matches("no init", err.cause)
    assert.matches("the pool is broken: pool init failed", errof(pool.submit, pool, function() end).message)
    pool:shutdown()
  end)

  it("give a fresh state after max_tasks_per_worker tasks", function()
    local pool <close> = par.pool{kind = "mpi", workers = 1, max_tasks_per_worker = 2}
    local r = pool:map(function() _G.n = (_G.n or 0) + 1 return _G.n end, range(5))
    assert.same({1, 2, 1, 2, 1}, r)
  end)

  it("shutdown{interrupt} stops a running task with Cancelled, cancel_futures the queued", function()
    local pool = par.pool{kind = "mpi", workers = 1}
    local loop = pool:submit(function() while true do end end)
    local queued = pool:submit(function() return 1 end)
    par.sleep(0.3)
    local t0 = par.clock()
    pool:shutdown{cancel_futures = true, interrupt = true}
    assert.is_true(par.clock() - t0 < 5)
    assert.equal("Cancelled", errof(loop.result, loop, 10).kind)
    assert.is_true(queued:cancelled())
    assert.equal("Shutdown", errof(pool.submit, pool, print).kind)
  end)

  it("spread equal tasks evenly over a warm pool of 2: no rank idles while another holds tasks", function()
    -- after many trivial tasks (which a worker keeps several of in flight
    -- on its rank) the long ones that follow must not be queued on one
    local pool <close> = par.pool{kind = "mpi", workers = 2}
    local whoami = function(s) par.sleep(s) return par.pid() end
    pool:map(whoami, (function() local t = {} for i = 1, 300 do t[i] = 0 end return t end)())
    for _, n in ipairs{4, 8} do
      local long = {}
      for i = 1, n do long[i] = 0.25 end
      local count = {}
      for _, who in ipairs(pool:map(whoami, long)) do count[who] = (count[who] or 0) + 1 end
      local shares = {}
      for _, k in pairs(count) do shares[#shares + 1] = k end
      table.sort(shares)
      assert.are.equal(("%d+%d"):format(n / 2, n / 2), table.concat(shares, "+"))
    end
  end)

  it("spread long tasks evenly though a worker comes back late from a short one", function()
    -- the short task's done callback holds its worker thread while long
    -- tasks are submitted on its result: that worker's last task was short,
    -- but of the previous batch, so the long ones must not be pipelined
    -- onto it while the other rank runs the first of them (it took 6 of 8)
    local pool <close> = par.pool{kind = "mpi", workers = 2}
    local whoami = function(s) par.sleep(s) return par.pid() end
    pool:map(whoami, (function() local t = {} for i = 1, 20 do t[i] = 0 end return t end)())
    -- both ranks busy, so the short task waits and its callback is set
    -- first; the long ones come once nothing else runs
    local busy = {pool:submit(whoami, 0.2), pool:submit(whoami, 0.2)}
    local short = pool:submit(function() return par.pid() end)
    short:add_done_callback(function() par.sleep(0.2) end)  -- holds its worker thread
    short:result(30)
    for _, f in ipairs(busy) do f:result(30) end
    local long = {}
    for i = 1, 8 do long[i] = 0.25 end
    local count = {}
    for _, who in ipairs(pool:map(whoami, long)) do count[who] = (count[who] or 0) + 1 end
    local shares = {}
    for _, k in pairs(count) do shares[#shares + 1] = k end
    table.sort(shares)
    assert.are.equal("4+4", table.concat(shares, "+"))
  end)

  it("shutdown{interrupt} with many short tasks in flight ends every future", function()
    local pool = par.pool{kind = "mpi", workers = 2}
    local fs = {}
    for i = 1, 3000 do fs[i] = pool:submit(function(x) return x end, i) end
    par.sleep(0.01)
    pool:shutdown{cancel_futures = true, interrupt = true}
    local ran, stopped = 0, 0
    for i, f in ipairs(fs) do
      local ok, v = pcall(f.result, f, 30)
      if ok then
        assert.equal(i, v)
        ran = ran + 1
      else
        assert.is_true(v.kind == "Cancelled", tostring(v))
        stopped = stopped + 1
      end
    end
    assert.equal(3000, ran + stopped)
    -- the ranks serve the next pool
    local again <close> = par.pool{kind = "mpi", workers = 2}
    assert.equal(5, again:submit(function() return 5 end):result(30))
  end)

  it("are made one after another on the same ranks", function()
    for _ = 1, 3 do
      local pool <close> = par.pool{kind = "mpi", workers = 2}
      assert.equal(3, pool:submit(function() return (_G.seen or 0) + 3 end):result(30))
    end
  end)

  it("reject bad options with clear messages", function()
    assert.equal("hosts applies to kind mpi only", errof(par.pool, {hosts = "a,b"}))
    assert.matches("field 'hostfile' must be a string", errof(par.pool, {kind = "mpi", hostfile = 3}))
    -- a lost rank breaks the pool for good (Open MPI cannot replace it): nothing to restart
    assert.equal("max_restarts applies to kind processes", errof(par.pool, {kind = "mpi", max_restarts = 3}))
    assert.equal("restart_window applies to kind processes", errof(par.pool, {kind = "mpi", restart_window = 5}))
    if mode == "static" then
      assert.equal("workers=3, but mpiexec started 2 ranks to serve pools (mpiexec -n 4)",
        errof(par.pool, {kind = "mpi", workers = 3}))
    end
  end)
end)

describe("kind mpi time limits (" .. mode .. " mode)", function()
  it("stop an endless loop with Timeout naming the limit, and raise SoftTimeLimit first", function()
    local pool <close> = par.pool{kind = "mpi", workers = 1, time_limit = 0.3}
    local loop = pool:submit(function() while true do end end)
    local e = errof(loop.result, loop, 30)
    assert.equal("Timeout", e.kind)
    assert.matches("the task exceeded its time limit of 0.3 s", tostring(e))
    local caught = pool:submit_with({soft_time_limit = 0.1, time_limit = 30}, function()
      local _, err = pcall(function() while true do end end)
      return err.kind
    end)
    assert.equal("SoftTimeLimit", caught:result(30))
    -- the rank and its state go on
    assert.equal(7, pool:submit(function() return 7 end):result(30))
  end)
end)
