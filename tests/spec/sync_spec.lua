-- par.lock, par.rlock, par.event, par.condition, par.semaphore, par.barrier:
-- Python's threading primitives, blocking without the global lock.
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local go = support.go

-- Wait (politely) until pred() is true; fails the test after 5 s.
local function eventually(pred, what)
  local deadline = par.clock() + 5
  while not pred() do
    assert(par.clock() < deadline, "timed out waiting for " .. (what or "a condition"))
    par.sleep(0.005)
  end
end

local function error_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return e
end

-- A thread blocked in `block` is force-cancelled and dies of Cancelled.
local function assert_force_cancel(block)
  local t = go(block)
  par.sleep(0.05)  -- let it block
  assert.is_true(t:is_alive())
  t:cancel{force = true}
  assert.is_true(t:join(5), "the cancelled thread did not stop")
  local e = error_of(t.result, t)
  assert.equal("Cancelled", e.kind)
end

describe("par.lock", function()
  it("acquires, releases and reports its state", function()
    local l = par.lock()
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    assert.is_true(l:locked())
    assert.equal("Lock(locked)", tostring(l))
    l:release()
    assert.is_false(l:locked())
    assert.equal("Lock(unlocked)", tostring(l))
  end)

  it("is not reentrant: a second acquire fails without blocking", function()
    local l = par.lock()
    l:acquire()
    assert.is_false(l:acquire(false))
    local t0 = par.clock()
    assert.is_false(l:acquire(true, 0.1))
    local waited = par.clock() - t0
    assert.is_true(waited >= 0.09 and waited < 5, "waited " .. waited)
    l:release()
    assert.is_true(l:acquire(false))
    l:release()
  end)

  it("blocks another thread until released, without holding the global lock", function()
    local l = par.lock()
    l:acquire()
    local got_at
    local t = go(function()
      l:acquire()
      got_at = par.clock()
      l:release()
      return "done"
    end)
    par.sleep(0.1)           -- the thread is blocked; we still run
    assert.is_nil(got_at)
    local released_at = par.clock()
    l:release()
    assert.equal("done", t:result())
    assert.is_true(got_at >= released_at)
  end)

  it("can be released by another thread (as Python's Lock)", function()
    local l = par.lock()
    l:acquire()
    go(function() l:release() end):join()
    assert.is_false(l:locked())
  end)

  it("gives mutual exclusion to threads that switch inside the critical section", function()
    local l = par.lock()
    local inside, overlap, count = 0, false, 0
    local ts = {}
    for i = 1, 4 do
      ts[i] = go(function()
        for _ = 1, 25 do
          l:acquire()
          inside = inside + 1
          if inside > 1 then overlap = true end
          par.sleep(0)            -- hand the global lock to someone else
          count = count + 1
          inside = inside - 1
          l:release()
        end
      end)
    end
    for i = 1, 4 do ts[i]:result() end
    assert.is_false(overlap)
    assert.equal(100, count)
  end)

  it("with(fn, ...) returns fn's results and releases the lock", function()
    local l = par.lock()
    local a, b, c = l:with(function(x, y)
      assert.is_true(l:locked())
      return x + y, "two", nil
    end, 1, 2)
    assert.same({3, "two"}, {a, b})
    assert.is_nil(c)
    assert.equal(3, select("#", l:with(function() return 1, 2, nil end)))
    assert.is_false(l:locked())
  end)

  it("with(fn) releases when fn fails and re-raises the error unchanged", function()
    local l = par.lock()
    local err = {code = 42}
    local e = error_of(l.with, l, function() error(err) end)
    assert.equal(err, e)
    assert.is_false(l:locked())
  end)

  it("with(fn) works when fn yields inside a coroutine", function()
    local l = par.lock()
    local co = coroutine.wrap(function()
      return l:with(function()
        coroutine.yield("paused")
        return "resumed"
      end)
    end)
    assert.equal("paused", co())
    assert.is_true(l:locked())
    assert.equal("resumed", co())
    assert.is_false(l:locked())
  end)

  it("a force-cancelled thread blocked in acquire() dies of Cancelled", function()
    local l = par.lock()
    l:acquire()
    assert_force_cancel(function() l:acquire() end)
    l:release()
    -- the lock still works for others
    assert.is_true(go(function() return l:acquire(true, 5) end):result())
  end)

  describe("bad input", function()
    it("refuses to release an unlocked lock", function()
      local l = par.lock()
      assert.has_error(function() l:release() end, "release unlocked lock")
    end)

    it("checks the arguments of acquire", function()
      local l = par.lock()
      assert.has_error(function() l:acquire(false, 1) end,
        "bad argument #2 to 'acquire' (can't specify a timeout for a non-blocking call)")
      assert.has_error(function() l:acquire(1) end,
        "bad argument #1 to 'acquire' (boolean expected, got number)")
      assert.has_error(function() l:acquire(true, -1) end,
        "bad argument #2 to 'acquire' (timeout must be a non-negative number)")
      assert.has_error(function() l.acquire(par.event()) end,
        "bad argument #1 to 'acquire' (lock expected, got parlua.Event)")
      assert.has_error(function() l:with(42) end,
        "bad argument #1 to 'with' (function expected, got number)")
      assert.is_false(l:locked())
    end)
  end)
end)

describe("par.rlock", function()
  it("is reentrant for its owner and counts the levels", function()
    local r = par.rlock()
    assert.is_true(r:acquire())
    assert.is_true(r:acquire())
    assert.is_true(r:acquire(false))
    assert.equal("RLock(locked, count=3)", tostring(r))
    r:release(); r:release()
    assert.is_true(r:locked())
    r:release()
    assert.is_false(r:locked())
    assert.equal("RLock(unlocked)", tostring(r))
  end)

  it("excludes other threads until fully released", function()
    local r = par.rlock()
    r:acquire(); r:acquire()
    local t = go(function() return r:acquire(false), r:acquire(true, 0.05) end)
    assert.same({false, false}, {t:result()})
    r:release()
    t = go(function() return r:acquire(false) end)
    assert.is_false(t:result())
    r:release()
    t = go(function() local ok = r:acquire(false); r:release(); return ok end)
    assert.is_true(t:result())
  end)

  it("refuses a release by a thread that does not own it", function()
    local r = par.rlock()
    assert.has_error(function() r:release() end, "cannot release un-acquired lock")
    r:acquire()
    local t = go(function() r:release() end)
    assert.matches("cannot release un%-acquired lock", tostring(error_of(t.result, t)))
    assert.is_true(r:locked())
    r:release()
  end)

  it("with(fn) nests", function()
    local r = par.rlock()
    local v = r:with(function() return r:with(function() return "inner" end) end)
    assert.equal("inner", v)
    assert.is_false(r:locked())
  end)

  it("a force-cancelled thread blocked in acquire() dies of Cancelled", function()
    local r = par.rlock()
    r:acquire()
    assert_force_cancel(function() r:acquire() end)
    r:release()
  end)
end)

describe("par.event", function()
  it("sets, clears and reports", function()
    local e = par.event()
    assert.is_false(e:is_set())
    assert.equal("Event(unset)", tostring(e))
    e:set()
    assert.is_true(e:is_set())
    assert.equal("Event(set)", tostring(e))
    assert.is_true(e:wait())
    assert.is_true(e:wait(0))
    e:clear()
    assert.is_false(e:is_set())
  end)

  it("wait(timeout) returns false when nobody sets it", function()
    local e = par.event()
    local t0 = par.clock()
    assert.is_false(e:wait(0.1))
    local waited = par.clock() - t0
    assert.is_true(waited >= 0.09 and waited < 5, "waited " .. waited)
    assert.is_false(e:wait(0))
  end)

  it("wakes every waiting thread", function()
    local e = par.event()
    local ts = {}
    for i = 1, 3 do ts[i] = go(function() return e:wait(10) end) end
    par.sleep(0.05)
    e:set()
    for i = 1, 3 do assert.is_true(ts[i]:result()) end
  end)

  it("a force-cancelled thread blocked in wait() dies of Cancelled", function()
    local e = par.event()
    assert_force_cancel(function() e:wait() end)
  end)

  it("rejects a negative timeout", function()
    assert.has_error(function() par.event():wait(-1) end,
      "bad argument #1 to 'wait' (timeout must be a non-negative number)")
  end)
end)

describe("par.condition", function()
  it("makes its own rlock, or wraps the lock it is given", function()
    local c = par.condition()
    assert.is_true(c:acquire())
    assert.is_true(c:acquire())      -- an rlock by default
    c:release(); c:release()
    assert.matches("^Condition%(RLock%(unlocked%), waiters=0%)$", tostring(c))

    local l = par.lock()
    local c2 = par.condition(l)
    c2:acquire()
    assert.is_true(l:locked())
    assert.is_false(c2:acquire(false))
    c2:release()
    assert.is_false(l:locked())
  end)

  it("wait(timeout) returns false and holds the lock again", function()
    local c = par.condition()
    c:acquire(); c:acquire()
    local t0 = par.clock()
    assert.is_false(c:wait(0.1))
    assert.is_true(par.clock() - t0 >= 0.09)
    c:release(); c:release()       -- both levels were restored
    assert.has_error(function() c:release() end, "cannot release un-acquired lock")
  end)

  it("releases every level while waiting, so other threads get the lock", function()
    local c = par.condition()
    local ready = false
    c:acquire(); c:acquire()
    local t = go(function()
      c:acquire()
      ready = true
      c:notify()
      c:release()
    end)
    local ok = c:wait_for(function() return ready end, 5)
    assert.is_true(ok)
    c:release(); c:release()
    t:result()
  end)

  it("passes work between threads with wait and notify", function()
    local c = par.condition()
    local items, got = {}, {}
    local consumers = {}
    for i = 1, 3 do
      consumers[i] = go(function()
        local mine = {}
        while true do
          local item = c:with(function()
            c:wait_for(function() return #items > 0 end)
            return table.remove(items, 1)
          end)
          if item == "stop" then return mine end
          mine[#mine + 1] = item
        end
      end)
    end
    for i = 1, 30 do
      c:with(function()
        items[#items + 1] = i
        c:notify()
      end)
      if i % 7 == 0 then par.sleep(0.001) end
    end
    c:with(function()
      for _ = 1, 3 do items[#items + 1] = "stop" end
      c:notify_all()
    end)
    for i = 1, 3 do
      for _, v in ipairs(consumers[i]:result()) do got[#got + 1] = v end
    end
    table.sort(got)
    local want = {}
    for i = 1, 30 do want[i] = i end
    assert.same(want, got)
  end)

  it("notify(n) wakes n waiters, notify_all the rest", function()
    local c = par.condition()
    local woken = 0
    local ts = {}
    for i = 1, 3 do
      ts[i] = go(function()
        c:acquire()
        local ok = c:wait(10)
        woken = woken + 1
        c:release()
        return ok
      end)
    end
    eventually(function() return tostring(c):match("waiters=3") end, "3 waiters")
    c:acquire(); c:notify(1); c:release()
    eventually(function() return woken == 1 end, "one woken")
    par.sleep(0.05)
    assert.equal(1, woken)
    c:acquire(); c:notify(0); c:notify_all(); c:release()
    for i = 1, 3 do assert.is_true(ts[i]:result()) end
    assert.equal(3, woken)
  end)

  it("wait_for returns the predicate's false result after the timeout", function()
    local c = par.condition()
    c:acquire()
    local calls = 0
    local t0 = par.clock()
    local r = c:wait_for(function() calls = calls + 1; return calls > 1000 and "never" end, 0.1)
    assert.is_false(r)
    assert.is_true(par.clock() - t0 >= 0.09)
    assert.is_true(calls >= 2)
    assert.equal("yes", c:wait_for(function() return "yes" end))
    c:release()
  end)

  it("a force-cancelled waiter dies of Cancelled and with() releases its lock", function()
    local c = par.condition()
    assert_force_cancel(function() c:with(function() c:wait() end) end)
    assert.is_true(c:acquire(false))
    c:release()
  end)

  describe("bad input", function()
    it("refuses wait and notify without the lock", function()
      local c = par.condition()
      assert.has_error(function() c:wait(0.01) end, "cannot wait on un-acquired lock")
      assert.has_error(function() c:wait_for(function() return false end, 0.01) end,
        "cannot wait on un-acquired lock")
      assert.has_error(function() c:notify() end, "cannot notify on un-acquired lock")
      assert.has_error(function() c:notify_all() end, "cannot notify on un-acquired lock")
      assert.has_error(function() c:release() end, "cannot release un-acquired lock")
      local cl = par.condition(par.lock())
      assert.has_error(function() cl:release() end, "release unlocked lock")
    end)

    it("refuses a wait while another thread holds the lock", function()
      local c = par.condition()
      local holding, done = par.event(), par.event()
      local t = go(function() c:acquire(); holding:set(); done:wait(); c:release() end)
      holding:wait()
      assert.has_error(function() c:wait(0.01) end, "cannot wait on un-acquired lock")
      done:set()
      t:result()
    end)

    it("checks its arguments", function()
      assert.has_error(function() par.condition(42) end,
        "bad argument #1 to 'condition' (lock or rlock expected, got number)")
      local c = par.condition()
      c:acquire()
      assert.has_error(function() c:notify(-1) end,
        "bad argument #1 to 'notify' (number of threads to notify must be non-negative)")
      assert.has_error(function() c:wait_for(nil) end,
        "bad argument #1 to 'wait_for' (function expected, got nil)")
      assert.has_error(function() c:wait(-2) end,
        "bad argument #1 to 'wait' (timeout must be a non-negative number)")
      c:release()
    end)
  end)
end)

describe("par.semaphore", function()
  it("counts acquisitions down and releases up", function()
    local s = par.semaphore(2)
    assert.equal("Semaphore(value=2)", tostring(s))
    assert.is_true(s:acquire())
    assert.is_true(s:acquire(false))
    assert.is_false(s:acquire(false))
    local t0 = par.clock()
    assert.is_false(s:acquire(true, 0.1))
    assert.is_true(par.clock() - t0 >= 0.09)
    s:release(2)
    assert.equal("Semaphore(value=2)", tostring(s))
    assert.equal("Semaphore(value=1)", tostring(par.semaphore()))
    assert.is_false(par.semaphore(0):acquire(false))
  end)

  it("limits how many threads run a section at once", function()
    local s = par.semaphore(2)
    local inside, most = 0, 0
    local ts = {}
    for i = 1, 5 do
      ts[i] = go(function()
        s:with(function()
          inside = inside + 1
          if inside > most then most = inside end
          par.sleep(0.03)
          inside = inside - 1
        end)
      end)
    end
    for i = 1, 5 do ts[i]:result() end
    assert.equal(2, most)
  end)

  it("release(n) lets n blocked threads through", function()
    local s = par.semaphore(0)
    local ts = {}
    for i = 1, 3 do ts[i] = go(function() return s:acquire(true, 10) end) end
    par.sleep(0.05)
    s:release(3)
    for i = 1, 3 do assert.is_true(ts[i]:result()) end
  end)

  it("a bounded semaphore refuses to go over its initial value", function()
    local s = par.bounded_semaphore(1)
    assert.equal("BoundedSemaphore(value=1, bound=1)", tostring(s))
    assert.has_error(function() s:release() end, "semaphore released too many times")
    s:acquire()
    s:release()
    assert.has_error(function() s:with(function() s:release() end) end,
      "semaphore released too many times")
  end)

  it("a force-cancelled thread blocked in acquire() dies of Cancelled", function()
    local s = par.semaphore(0)
    assert_force_cancel(function() s:acquire() end)
  end)

  it("checks its arguments", function()
    assert.has_error(function() par.semaphore(-1) end,
      "bad argument #1 to 'semaphore' (semaphore initial value must be >= 0)")
    assert.has_error(function() par.bounded_semaphore(-3) end,
      "bad argument #1 to 'bounded_semaphore' (semaphore initial value must be >= 0)")
    assert.has_error(function() par.semaphore("many") end,
      "bad argument #1 to 'semaphore' (number expected, got string)")
    assert.has_error(function() par.semaphore(1):release(0) end,
      "bad argument #1 to 'release' (n must be one or more)")
  end)
end)

describe("par.barrier", function()
  it("lets 3 threads through together, each with its own index, and can be reused", function()
    local b = par.barrier(3)
    assert.equal(3, b.parties)
    assert.equal(0, b.n_waiting)
    assert.is_false(b.broken)
    local arrived, left = 0, 0
    local ts = {}
    for i = 1, 3 do
      ts[i] = go(function()
        local idx = {}
        for round = 1, 2 do
          arrived = arrived + 1
          idx[round] = b:wait(10)
          -- nobody leaves a round before everyone arrived in it
          assert(arrived >= 3 * round, "left before all arrived")
          left = left + 1
        end
        return idx
      end)
    end
    local firsts, seconds = {}, {}
    for i = 1, 3 do
      local idx = ts[i]:result()
      firsts[#firsts + 1], seconds[#seconds + 1] = idx[1], idx[2]
    end
    table.sort(firsts); table.sort(seconds)
    assert.same({0, 1, 2}, firsts)
    assert.same({0, 1, 2}, seconds)
    assert.equal(6, left)
    assert.equal("Barrier(parties=3, waiting=0)", tostring(b))
  end)

  it("counts waiting threads", function()
    local b = par.barrier(3)
    local t1, t2 = go(function() return b:wait() end), go(function() return b:wait() end)
    eventually(function() return b.n_waiting == 2 end, "two waiting")
    assert.equal("Barrier(parties=3, waiting=2)", tostring(b))
    assert.equal(2, b:wait())       -- the last arrival returns at once
    t1:result(); t2:result()
  end)

  it("a timeout breaks the barrier: Timeout for the waiter, BrokenBarrier after", function()
    local b = par.barrier(2)
    local t0 = par.clock()
    local e = error_of(b.wait, b, 0.1)
    assert.is_true(par.clock() - t0 >= 0.09)
    assert.equal("Timeout", e.kind)
    assert.matches("barrier wait timed out", tostring(e))
    assert.is_true(b.broken)
    assert.equal("Barrier(parties=2, broken)", tostring(b))
    e = error_of(b.wait, b)
    assert.equal("BrokenBarrier", e.kind)
    assert.equal("barrier is broken", tostring(e))
    b:reset()
    assert.is_false(b.broken)
    local t = go(function() return b:wait(10) end)
    local mine = b:wait(10)
    local sorted = {mine, t:result()}
    table.sort(sorted)
    assert.same({0, 1}, sorted)
  end)

  it("uses the default timeout given at creation", function()
    local b = par.barrier(2, 0.05)
    assert.equal("Timeout", error_of(b.wait, b).kind)
  end)

  it("abort() and reset() wake waiters with a BrokenBarrier error", function()
    local b = par.barrier(3)
    local t = go(function() return b:wait() end)
    eventually(function() return b.n_waiting == 1 end)
    b:abort()
    local e = error_of(t.result, t)
    assert.equal("BrokenBarrier", e.kind)
    assert.is_true(b.broken)
    b:reset()
    t = go(function() return b:wait() end)
    eventually(function() return b.n_waiting == 1 end)
    b:reset()
    assert.equal("BrokenBarrier", error_of(t.result, t).kind)
    assert.is_false(b.broken)
    assert.equal(0, b.n_waiting)
  end)

  it("a force-cancelled waiter dies of Cancelled and breaks the barrier", function()
    local b = par.barrier(2)
    assert_force_cancel(function() b:wait() end)
    assert.is_true(b.broken)
  end)

  it("checks its arguments", function()
    assert.has_error(function() par.barrier(0) end,
      "bad argument #1 to 'barrier' (number of parties must be at least 1)")
    assert.has_error(function() par.barrier() end,
      "bad argument #1 to 'barrier' (number expected, got no value)")
    assert.has_error(function() par.barrier(2, -1) end,
      "bad argument #2 to 'barrier' (timeout must be a non-negative number)")
    assert.has_error(function() par.barrier(2):wait(-1) end,
      "bad argument #1 to 'wait' (timeout must be a non-negative number)")
  end)
end)
