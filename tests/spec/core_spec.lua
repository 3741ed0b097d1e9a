-- The small functions: time, identity, the lock's controls, error kinds.
local par = require "parlua"

describe("parlua core", function()
  it("has a monotonic clock in seconds", function()
    local a = par.clock()
    par.sleep(0.01)
    local b = par.clock()
    assert.is_true(b - a >= 0.009)
  end)

  it("reports the pid and the core count", function()
    assert.is_true(math.type(par.pid()) == "integer" and par.pid() > 0)
    assert.is_true(par.cpu_count() >= 1)
  end)

  it("sleep(0) yields and returns", function()
    assert.has_no.errors(function() par.sleep(0) end)
  end)

  it("rejects bad sleep lengths", function()
    assert.has_error(function() par.sleep(-1) end,
      "bad argument #1 to 'sleep' (sleep length must be a non-negative number)")
    assert.has_error(function() par.sleep("soon") end,
      "bad argument #1 to 'sleep' (number expected, got string)")
  end)

  it("gets and sets the switch interval", function()
    assert.equal(0.005, par.getswitchinterval())
    par.setswitchinterval(0.01)
    assert.equal(0.01, par.getswitchinterval())
    par.setswitchinterval(0.005)
    assert.has_error(function() par.setswitchinterval(0) end,
      "bad argument #1 to 'setswitchinterval' (switch interval must be a positive number of seconds)")
  end)

  it("gives lock statistics", function()
    local s = par.gil_stats()
    for _, k in ipairs{"switches", "wait_seconds", "hold_seconds", "acquisitions", "drop_requests"} do
      assert.is_number(s[k], k)
    end
    assert.is_true(s.hold_seconds > 0)
  end)

  it("lists the error kinds", function()
    for _, k in ipairs{"Timeout", "Cancelled", "BrokenPool", "Shutdown", "Transfer",
                       "CalledProcessError", "TimeoutExpired", "OSError", "BrokenBarrier"} do
      assert.equal(k, par.errors[k])
    end
  end)

  it("keeps coroutine.wrap's error behaviour", function()
    local f = coroutine.wrap(function() error("inner") end)
    local ok, msg = pcall(f)
    assert.is_false(ok)
    assert.matches("inner", msg)
    local co = coroutine.create(function(a) local b = coroutine.yield(a + 1); return b * 2 end)
    assert.same({true, 2}, {coroutine.resume(co, 1)})
    assert.same({true, 10}, {coroutine.resume(co, 5)})
    assert.same({false, "cannot resume dead coroutine"}, {coroutine.resume(co)})
    assert.has_error(function() coroutine.resume(42) end)
  end)
end)
