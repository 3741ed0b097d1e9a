-- par.thread: threads of the shared state under the global lock.
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local lua_cmd = support.lua_cmd

describe("par.thread", function()
  it("runs a function with arguments and keeps every return value", function()
    local t = par.thread(function(a, b) return a + b, "two", nil, 4 end, 1, 2)
    assert.is_nil(t.ident)
    t:start()
    assert.is_number(t.ident)
    assert.is_true(t:join(5))
    assert.same({3, "two", nil, 4, n = 4}, table.pack(t:result()))
    assert.is_false(t:is_alive())
  end)

  it("accepts the table form with target, args, name and daemon", function()
    local t = par.thread{target = function(x) return x * 2 end, args = {21}, name = "worker", daemon = false}
    assert.equal("worker", t.name)
    assert.is_false(t.daemon)
    t:start()
    assert.equal(42, t:result())
  end)

  it("names threads Thread-N by default and reports the current thread", function()
    local t = par.thread(function() return par.current_thread() end)
    assert.matches("^Thread%-%d+$", t.name)
    t:start()
    assert.equal(t.name, t:result())
    assert.equal("MainThread", par.current_thread())
  end)

  it("shares globals with its creator", function()
    shared_by_threads = 0
    local ts = {}
    for i = 1, 4 do
      ts[i] = par.thread(function() shared_by_threads = shared_by_threads + 1 end)
      ts[i]:start()
    end
    for i = 1, 4 do ts[i]:join() end
    assert.equal(4, shared_by_threads)
    shared_by_threads = nil
  end)

  it("raises the thread's own error value, unchanged, from result()", function()
    local err = {code = 7}
    local t = par.thread(function() error(err) end)
    t:start()
    assert.is_true(t:join(5))
    local ok, got = pcall(t.result, t)
    assert.is_false(ok)
    assert.equal(err, got)
  end)

  it("join with a timeout returns false while the thread runs", function()
    local t = par.thread(par.sleep, 0.3)
    t:start()
    assert.is_false(t:join(0.01))
    assert.is_true(t:is_alive())
    assert.is_true(t:join())
  end)

  it("overlaps sleeping threads (the lock is released while sleeping)", function()
    local t0 = par.clock()
    local ts = {}
    for i = 1, 4 do ts[i] = par.thread(par.sleep, 0.2); ts[i]:start() end
    for i = 1, 4 do ts[i]:join() end
    assert.is_true(par.clock() - t0 < 0.6, "4 x 0.2 s sleeps took " .. (par.clock() - t0))
  end)

  it("hands the lock over between CPU-bound threads", function()
    local before = par.gil_stats().switches
    local function burn() local x = 0 for i = 1, 3e6 do x = x + i end return x end
    local a, b = par.thread(burn), par.thread(burn)
    a:start(); b:start(); a:join(); b:join()
    assert.is_true(par.gil_stats().switches > before + 2)
  end)

  it("lets coroutines run inside threads", function()
    local t = par.thread(function()
      local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      return gen() + gen() + gen()
    end)
    t:start()
    assert.equal(6, t:result())
  end)

  describe("cancel", function()
    it("is cooperative by default: par.cancelled() turns true inside", function()
      local t = par.thread(function()
        while not par.cancelled() do par.sleep(0.001) end
        return "stopped politely"
      end)
      t:start()
      par.sleep(0.02)
      assert.is_true(t:cancel())
      assert.equal("stopped politely", t:result())
      assert.is_false(t:cancel())
    end)

    it("with force stops an endless loop with a Cancelled error", function()
      local t = par.thread(function() while true do end end)
      t:start()
      par.sleep(0.02)
      t:cancel{force = true}
      assert.is_true(t:join(5))
      local ok, e = pcall(t.result, t)
      assert.is_false(ok)
      assert.equal("Cancelled", e.kind)
      assert.equal(par.errors.Cancelled, e.kind)
    end)

    it("with force stops an endless loop inside a coroutine", function()
      local t = par.thread(function()
        local co = coroutine.wrap(function() while true do end end)
        co()
      end)
      t:start()
      par.sleep(0.02)
      t:cancel{force = true}
      assert.is_true(t:join(5))
      assert.equal("Cancelled", select(2, pcall(t.result, t)).kind)
    end)

    it("with force wakes a long sleep early", function()
      local t = par.thread(par.sleep, 100)
      t:start()
      par.sleep(0.02)
      local t0 = par.clock()
      t:cancel{force = true}
      assert.is_true(t:join(5))
      assert.is_true(par.clock() - t0 < 2)
      assert.equal("Cancelled", select(2, pcall(t.result, t)).kind)
    end)

    it("before start is applied when the thread starts", function()
      local t = par.thread(function() return par.cancelled() end)
      t:cancel()
      t:start()
      assert.is_true(t:result())
    end)
  end)

  describe("bad input", function()
    it("rejects a non-function target", function()
      assert.has_error(function() par.thread(42) end,
        "bad argument #1 to 'thread' (function expected, got number)")
      assert.has_error(function() par.thread{target = 1} end,
        "bad argument #1 to 'thread' (field 'target' must be a function)")
      assert.has_error(function() par.thread{target = print, colour = "red"} end,
        "bad argument #1 to 'thread' (unknown option 'colour')")
    end)

    it("refuses to start twice", function()
      local t = par.thread(function() end)
      t:start()
      assert.has_error(function() t:start() end, "threads can only be started once")
      t:join()
    end)

    it("refuses to join before start, or itself", function()
      local t = par.thread(function() end)
      assert.has_error(function() t:join() end, "cannot join thread before it is started")
      local me
      me = par.thread(function() return pcall(me.join, me) end)
      me:start()
      local ok, msg = me:result()
      assert.is_false(ok)
      assert.matches("cannot join current thread", msg)
    end)

    it("rejects a negative timeout", function()
      local t = par.thread(function() end)
      t:start()
      assert.has_error(function() t:join(-1) end,
        "bad argument #1 to 'join' (timeout must be a non-negative number)")
      t:join()
    end)
  end)

  it("prints an error nobody collects to stderr with its traceback", function()
    local out = lua_cmd([[
      local par = require "parlua"
      local t = par.thread{target = function() error("nobody reads me") end, name = "lonely"}
      t:start()
      t:join()
    ]])
    assert.matches("Exception in thread lonely:", out)
    assert.matches("nobody reads me", out)
    assert.matches("stack traceback:", out)
  end)

  it("prints nothing for a thread ended by the cancel it was asked for", function()
    local out, status = lua_cmd([[
      local par = require "parlua"
      local t = par.thread{target = function() par.sleep(30) end, name = "stopped"}
      t:start()
      par.sleep(0.05)
      t:cancel{force = true}
      t:join()
      local d = par.thread{target = function() while true do par.sleep(0.01) end end, daemon = true}
      d:start()
      io.write("end\n")
    ]])
    assert.equal(0, status, out)
    assert.equal("end\n", out)
  end)

  it("joins non-daemon threads when the interpreter closes", function()
    local out, status = lua_cmd([[
      local par = require "parlua"
      local t = par.thread(function() par.sleep(0.1); io.write("finished\n") end)
      t:start()
    ]])
    assert.equal(0, status)
    assert.matches("finished", out)
  end)

  it("cancels daemon threads when the interpreter closes", function()
    local out, status = lua_cmd([[
      local par = require "parlua"
      local t = par.thread{target = function() par.sleep(100) end, daemon = true}
      t:start()
      io.write("leaving\n")
    ]])
    assert.equal(0, status)
    assert.matches("leaving", out)
  end)
end)
