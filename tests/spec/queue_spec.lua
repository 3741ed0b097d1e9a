-- par.queue: Python's queue.Queue for threads of one state (values pass by
-- reference), plus close().
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local go = support.go

local function error_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return e
end

describe("par.queue", function()
  it("is first in, first out, and reports its size", function()
    local q = par.queue()
    assert.equal(0, q.maxsize)
    assert.is_true(q:empty())
    assert.is_false(q:full())
    for i = 1, 100 do q:put(i) end     -- past the first growth of the ring
    assert.equal(100, q:qsize())
    assert.is_false(q:empty())
    assert.is_false(q:full())           -- unbounded
    assert.equal("Queue(size=100, maxsize=0)", tostring(q))
    for i = 1, 100 do assert.equal(i, q:get()) end
    assert.is_true(q:empty())
  end)

  it("carries nil, false and tables by reference", function()
    local q = par.queue()
    local t = {1, 2, 3}
    q:put(nil); q:put(false); q:put(t); q:put(nil)
    assert.equal(4, q:qsize())
    assert.is_nil(q:get())
    assert.is_false(q:get())
    assert.equal(t, q:get())            -- the same table, not a copy
    assert.equal(1, select("#", q:get()))
    assert.is_true(q:empty())
  end)

  it("keeps values alive while they are queued", function()
    local q = par.queue()
    q:put({tag = "kept"})
    collectgarbage(); collectgarbage()
    assert.equal("kept", q:get().tag)
  end)

  it("lets its values be collected once they are taken or the queue is dropped", function()
    local weak = setmetatable({}, {__mode = "v"})
    local q = par.queue()
    local a, b = {}, {}
    weak.a, weak.b = a, b
    q:put(a); q:put(b)
    a, b = nil, nil
    q:get()
    collectgarbage(); collectgarbage()
    assert.is_nil(weak.a)
    assert.is_not_nil(weak.b)           -- still queued
    q = nil
    collectgarbage(); collectgarbage()
    assert.is_nil(weak.b)
  end)

  it("get_nowait / get(false) / get(0) on an empty queue raise Timeout 'queue is empty'", function()
    local q = par.queue()
    for _, get in ipairs{function() return q:get_nowait() end,
                         function() return q:get(false) end,
                         function() return q:get(0) end} do
      local e = error_of(get)
      assert.equal("Timeout", e.kind)
      assert.equal(par.errors.Timeout, e.kind)
      assert.equal("queue is empty", e.message)
    end
  end)

  it("get(timeout) waits, then raises Timeout", function()
    local q = par.queue()
    local t0 = par.clock()
    local e = error_of(q.get, q, 0.1)
    local waited = par.clock() - t0
    assert.is_true(waited >= 0.09 and waited < 5, "waited " .. waited)
    assert.equal("Timeout", e.kind)
    assert.matches("^queue is empty", tostring(e))
    assert.equal("Timeout", error_of(q.get, q, true, 0.01).kind)
  end)

  it("get() blocks without the global lock until a value arrives", function()
    local q = par.queue()
    local t = go(function() return q:get(), q:get(10) end)
    par.sleep(0.05)                     -- we run while the thread waits
    assert.is_true(t:is_alive())
    q:put("a"); q:put("b")
    assert.same({"a", "b"}, {t:result()})
  end)

  describe("bounded", function()
    it("is full at maxsize; put_nowait / put(v, false) / put(v, 0) raise Timeout 'queue is full'", function()
      local q = par.queue(2)
      assert.equal(2, q.maxsize)
      q:put(1); q:put_nowait(2)
      assert.is_true(q:full())
      for _, put in ipairs{function() q:put_nowait(3) end,
                           function() q:put(3, false) end,
                           function() q:put(3, 0) end} do
        local e = error_of(put)
        assert.equal("Timeout", e.kind)
        assert.equal("queue is full", e.message)
      end
      local t0 = par.clock()
      local e = error_of(q.put, q, 3, 0.1)
      assert.is_true(par.clock() - t0 >= 0.09)
      assert.matches("^queue is full", tostring(e))
      assert.equal(2, q:qsize())
      assert.equal(1, q:get())
      assert.equal(2, q:get())
    end)

    it("put blocks until a getter makes room", function()
      local q = par.queue(1)
      q:put("first")
      local t = go(function() q:put("second"); return "put done" end)
      par.sleep(0.05)
      assert.is_true(t:is_alive())
      assert.equal("first", q:get())
      assert.equal("put done", t:result())
      assert.equal("second", q:get())
    end)
  end)

  it("carries work from several producers to several consumers", function()
    local q = par.queue(5)              -- small, so producers block too
    local producers, consumers = {}, {}
    for p = 1, 3 do
      producers[p] = go(function()
        for i = 1, 50 do q:put(p * 1000 + i) end
      end)
    end
    for c = 1, 2 do
      consumers[c] = go(function()
        local sum, n = 0, 0
        while true do
          local v = q:get(10)
          if v == "stop" then return sum, n end
          sum, n = sum + v, n + 1
        end
      end)
    end
    for p = 1, 3 do producers[p]:result() end
    q:put("stop"); q:put("stop")
    local total, count = 0, 0
    for c = 1, 2 do
      local s, n = consumers[c]:result()
      total, count = total + s, count + n
    end
    local want = 0
    for p = 1, 3 do for i = 1, 50 do want = want + p * 1000 + i end end
    assert.equal(150, count)
    assert.equal(want, total)
  end)

  it("join() waits until every item is marked done", function()
    local q = par.queue()
    assert.is_true(q:join())            -- nothing put: done at once
    for i = 1, 10 do q:put(i) end
    assert.is_false(q:join(0.05))
    local handled = 0
    local workers = {}
    for w = 1, 2 do
      workers[w] = go(function()
        while true do
          local ok, v = pcall(q.get, q, 0.2)
          if not ok then return end
          par.sleep(0.001)
          handled = handled + 1
          q:task_done()
        end
      end)
    end
    assert.is_true(q:join())
    assert.equal(10, handled)
    for w = 1, 2 do workers[w]:result() end
  end)

  it("refuses more task_done() calls than items", function()
    local q = par.queue()
    assert.has_error(function() q:task_done() end, "task_done() called too many times")
    q:put(1)
    q:get()
    q:task_done()
    assert.has_error(function() q:task_done() end, "task_done() called too many times")
  end)

  describe("close", function()
    it("refuses puts, hands out what is left, then refuses gets", function()
      local q = par.queue()
      q:put(1); q:put(2)
      assert.is_false(q:is_closed())
      q:close()
      q:close()                         -- idempotent
      assert.is_true(q:is_closed())
      assert.equal("Queue(size=2, maxsize=0, closed)", tostring(q))
      local e = error_of(q.put, q, 3)
      assert.equal("Shutdown", e.kind)
      assert.equal("put on a closed queue", tostring(e))
      assert.equal("put on a closed queue", tostring(error_of(q.put_nowait, q, 3)))
      assert.equal(1, q:get())
      assert.equal(2, q:get_nowait())
      e = error_of(q.get, q)
      assert.equal("Shutdown", e.kind)
      assert.equal("get on a closed and empty queue", tostring(e))
      assert.equal("get on a closed and empty queue", tostring(error_of(q.get_nowait, q)))
    end)

    it("wakes blocked getters and putters with those errors", function()
      local q = par.queue()
      local getter = go(function() return q:get() end)
      local full = par.queue(1)
      full:put("x")
      local putter = go(function() return full:put("y") end)
      par.sleep(0.05)
      assert.is_true(getter:is_alive())
      assert.is_true(putter:is_alive())
      q:close(); full:close()
      assert.is_true(getter:join(5))
      assert.is_true(putter:join(5))
      assert.equal("get on a closed and empty queue", error_of(getter.result, getter).message)
      assert.equal("put on a closed queue", error_of(putter.result, putter).message)
      assert.equal("x", full:get())
    end)
  end)

  it("a force-cancelled thread blocked in get() dies of Cancelled, losing nothing", function()
    local q = par.queue()
    local t = go(function() return q:get() end)
    par.sleep(0.05)
    assert.is_true(t:is_alive())
    t:cancel{force = true}
    assert.is_true(t:join(5))
    assert.equal("Cancelled", error_of(t.result, t).kind)
    local other = go(function() return q:get(10) end)
    q:put("for the other one")
    assert.equal("for the other one", other:result())
  end)

  it("a force-cancelled thread blocked in put() dies of Cancelled without storing", function()
    local q = par.queue(1)
    q:put(1)
    local t = go(function() q:put(2) end)
    par.sleep(0.05)
    t:cancel{force = true}
    assert.is_true(t:join(5))
    assert.equal("Cancelled", error_of(t.result, t).kind)
    assert.equal(1, q:qsize())
    assert.equal(1, q:get())
  end)

  it("a force-cancelled thread blocked in join() dies of Cancelled", function()
    local q = par.queue()
    q:put(1)
    local t = go(function() return q:join() end)
    par.sleep(0.05)
    t:cancel{force = true}
    assert.is_true(t:join(5))
    assert.equal("Cancelled", error_of(t.result, t).kind)
  end)

  describe("bad input", function()
    it("checks maxsize", function()
      assert.has_error(function() par.queue(-1) end,
        "bad argument #1 to 'queue' (maxsize must be a non-negative integer)")
      assert.has_error(function() par.queue("big") end,
        "bad argument #1 to 'queue' (number expected, got string)")
      assert.has_error(function() par.queue(1.5) end,
        "bad argument #1 to 'queue' (number has no integer representation)")
    end)

    it("checks put, get and join arguments", function()
      local q = par.queue()
      assert.has_error(function() q:put() end, "bad argument #1 to 'put' (value expected)")
      assert.has_error(function() q:put(1, -1) end,
        "bad argument #2 to 'put' (timeout must be a non-negative number)")
      assert.has_error(function() q:put(1, false, 2) end,
        "bad argument #3 to 'put' (can't specify a timeout for a non-blocking call)")
      assert.has_error(function() q:get(-1) end,
        "bad argument #1 to 'get' (timeout must be a non-negative number)")
      assert.has_error(function() q:get("soon") end,
        "bad argument #1 to 'get' (number expected, got string)")
      assert.has_error(function() q:join(-1) end,
        "bad argument #1 to 'join' (timeout must be a non-negative number)")
      assert.has_error(function() q.get(par.lock()) end,
        "bad argument #1 to 'get' (parlua.Queue expected, got parlua.Lock)")
      assert.equal(0, q:qsize())
    end)
  end)
end)
