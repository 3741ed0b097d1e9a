-- The rule of forced cancellation: a thread or task ended by a forced
-- cancel (t:cancel{force=true}, shutdown{interrupt=true}) gives back the
-- parlua locks it still holds, so nobody waits for them forever; waits
-- under a condition stay cancellable, the taking back of its lock too; an
-- interrupting shutdown leaves no queued task to start afterwards.
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local go, errof = support.go, support.errof

-- Wait (politely) until pred() is true; fails the test after 10 s.
local function eventually(pred, what)
  local deadline = par.clock() + 10
  while not pred() do
    assert(par.clock() < deadline, "timed out waiting for " .. what)
    par.sleep(0.005)
  end
end

local function waiters(c)
  return tonumber(tostring(c):match("waiters=(%d+)"))
end

-- The everyday wait, without with() or pcall: acquire, wait, release.
local function plain_wait(c)
  c:acquire()
  c:wait()
  c:release()
end

describe("forced cancellation", function()
  it("of three threads waiting on a condition ends all three and frees the lock", function()
    local c = par.condition()
    local ts = {}
    for i = 1, 3 do ts[i] = go(plain_wait, c) end
    eventually(function() return waiters(c) == 3 end, "three waiters")
    for i = 1, 3 do ts[i]:cancel{force = true} end
    for i = 1, 3 do
      assert.is_true(ts[i]:join(10), "waiter " .. i .. " did not end")
      assert.equal("Cancelled", errof(ts[i].result, ts[i]).kind)
    end
    assert.is_true(c:acquire(true, 5), "the condition's lock stayed held")
    c:release()
  end)

  it("cuts short the taking back of a condition's lock another thread keeps", function()
    local c = par.condition(par.lock())
    local t = go(plain_wait, c)
    eventually(function() return waiters(c) == 1 end, "the waiter")
    c:acquire()
    c:notify()          -- the waiter now needs the lock, which we keep
    t:cancel{force = true}
    assert.is_true(t:join(10), "the waiter hung taking the lock back")
    assert.equal("Cancelled", errof(t.result, t).kind)
    c:release()
  end)

  it("passes a notify on when the notified waiter is cancelled before it holds the lock", function()
    local c = par.condition()
    local got = 0
    local victim = go(plain_wait, c)
    eventually(function() return waiters(c) == 1 end, "the first waiter")
    local other = go(function() c:acquire(); c:wait(); got = got + 1; c:release() end)
    eventually(function() return waiters(c) == 2 end, "the second waiter")
    c:acquire()
    c:notify()          -- meant for the victim, which will never act on it
    victim:cancel{force = true}
    assert.is_true(victim:join(10))
    c:release()
    assert.is_true(other:join(10), "the notify was lost with the cancelled waiter")
    assert.equal(1, got)
  end)

  it("of a thread holding a lock and an rlock twice releases both", function()
    local l, r = par.lock(), par.rlock()
    local t = go(function()
      l:acquire()
      r:acquire(); r:acquire()
      while true do par.sleep(1) end
    end)
    eventually(function() return l:locked() and tostring(r) == "RLock(locked, count=2)" end, "the holdings")
    t:cancel{force = true}
    assert.is_true(t:join(10))
    assert.is_true(l:acquire(true, 5), "the lock stayed held")
    assert.is_true(r:acquire(true, 5), "the rlock stayed held")
    l:release(); r:release()
  end)

  it("does not release a lock its thread gave up and somebody else took since", function()
    local l = par.lock()
    local gave, took = par.event(), par.event()
    local t = go(function()
      l:acquire()
      gave:set()        -- another thread releases it for us (a plain lock allows that)
      took:wait()
      while true do par.sleep(1) end
    end)
    gave:wait(10)
    l:release()
    assert.is_true(l:acquire(true, 5))   -- now it is ours
    took:set()
    t:cancel{force = true}
    assert.is_true(t:join(10))
    assert.is_true(l:locked(), "the cancelled thread released a lock it no longer held")
    l:release()
  end)

  it("leaves the locks of a thread that ends normally held, as Python does", function()
    local l = par.lock()
    go(function() l:acquire() end):join(10)
    assert.is_true(l:locked())
    l:release()
  end)

  it("also after the thread caught its Cancelled error", function()
    local l = par.lock()
    local t = go(function()
      l:acquire()
      local ok, e = pcall(par.sleep, 30)
      return ok, e.kind
    end)
    eventually(function() return l:locked() end, "the holding")
    t:cancel{force = true}
    assert.is_true(t:join(10))
    local ok, kind = t:result()
    assert.is_false(ok)
    assert.equal("Cancelled", kind)
    assert.is_false(l:locked())
  end)
end)

for _, kind in ipairs{"threads", "states"} do
  describe("shutdown{interrupt=true} of a " .. kind .. " pool", function()
    it("ends tasks waiting on a condition and frees its lock", function()
      local c = par.condition()
      local pool = par.pool{workers = 3, kind = kind}
      local fs = {}
      for i = 1, 3 do fs[i] = pool:submit(plain_wait, c) end
      eventually(function() return waiters(c) == 3 end, "three waiting tasks")
      pool:shutdown{interrupt = true}
      for i = 1, 3 do assert.equal("Cancelled", errof(fs[i].result, fs[i], 10).kind) end
      assert.is_true(c:acquire(true, 5), "the condition's lock stayed held")
      c:release()
    end)

    it("frees the lock an interrupted task held for the next task of its worker", function()
      local l = par.lock()
      local pool = par.pool{workers = 1, kind = kind}
      local f = pool:submit(function(lk) lk:acquire(); while true do end end, l)
      eventually(function() return l:locked() end, "the holding")
      pool:shutdown{interrupt = true}
      assert.equal("Cancelled", errof(f.result, f, 10).kind)
      assert.is_false(l:locked())
    end)
  end)
end

for _, kind in ipairs{"threads", "states", "processes"} do
  describe("shutdown{interrupt=true} without cancel_futures, kind " .. kind, function()
    it("cancels the queued endless tasks instead of starting them", function()
      local pool = par.pool{workers = 1, kind = kind}
      local fs = {}
      for i = 1, 4 do fs[i] = pool:submit(function() while true do end end) end
      eventually(function() return fs[1]:running() end, "the first task")
      local t0 = par.clock()
      pool:shutdown{interrupt = true}
      assert.is_true(par.clock() - t0 < 10, "shutdown waited for queued endless tasks")
      assert.is_not_nil(errof(fs[1].result, fs[1], 10))
      for i = 2, 4 do assert.is_true(fs[i]:cancelled(), "task " .. i .. " was not cancelled") end
      assert.equal(3, pool:stats().cancelled)
    end)
  end)
end
