-- A wait on another process ends when that process dies or wedges in the
-- middle of a message (issue #15): with an error saying what happened, or
-- at the timeout the caller gave -- never a hang.  Pool workers that die
-- are in processes_spec and deadlock_spec; par.process join in
-- processes_spec.
local par = require "parlua"
local ffi = require "parlua.ffi"
local support = dofile("tests/spec/support.lua")
local errof = support.errof

local libc = ffi.open()
local c_ioctl = libc:fn("int ioctl(int, unsigned long, void *)")
local c_kill = libc:fn("int kill(int, int)")
local SIGSTOP, SIGCONT = 19, 18
local FIONREAD = 0x541B

-- A task function made outside busted's environment, which cannot travel.
local function fn(src)
  return assert(load("local par = require 'parlua' return " .. src, "=task", "t", _G))()
end

local BIG = 32 << 20  -- far more than a socket holds

-- Wait until the socket under a pipe end has bytes to read: a sender is
-- then in the middle of its message (which is bigger than the socket).
local function await_bytes(conn)
  local n = ffi.buffer(4)
  local deadline = par.clock() + 60
  repeat
    assert.equal(0, c_ioctl(conn:fileno(), FIONREAD, n))
    if n:get("int", 0) > 0 then return end
    par.sleep(0.01)
  until par.clock() > deadline
  error("nothing was sent")
end

describe("par.pipe", function()
  it("a sender killed in the middle of a message: recv says the message was cut", function()
    local a, b = par.pipe()
    local p = par.process(fn 'function(c, size) c:send(string.rep("x", size)) end', b, BIG)
    p:start()
    b:close()  -- the child's copy is the only writer now
    await_bytes(a)
    p:kill()
    assert.is_true(p:join(30))
    local err = errof(a.recv, a, 30)
    assert.equal("Shutdown", err.kind)
    assert.matches("closed in the middle of a message", err.message, 1, true)
  end)

  it("a receiver killed before reading: a send in the middle of its message fails", function()
    local a, b = par.pipe()
    local p = par.process(fn "function() par.sleep(60) end", b)
    p:start()
    b:close()  -- the child's copy is the only reader now
    local sender = support.go(function() return pcall(a.send, a, string.rep("x", BIG)) end)
    par.sleep(0.2)  -- the sender is blocked in the middle of the message, or soon will be
    p:kill()
    assert.is_true(p:join(30))
    assert.is_true(sender:join(30), "the send still waits for a dead receiver")
    local ok, err = sender:result()
    assert.is_false(ok)
    assert.equal("OSError", err.kind)
  end)

  it("a receiver that never reads: a forced cancel ends the send in the middle of its message", function()
    local a, b = par.pipe()
    local t0 = par.clock()
    local sender = support.go(function() return a:send(string.rep("x", BIG)) end)
    await_bytes(b)
    sender:cancel{force = true}
    assert.is_true(sender:join(30), "the send could not be cancelled")
    assert.equal("Cancelled", errof(sender.result, sender).kind)
    -- half a message cannot be followed by another: the end is closed,
    -- and the receiver hears of the message cut short
    assert.is_true(a.closed)
    assert.matches("attempt to use a closed pipe connection", tostring(errof(a.send, a, 1)))
    local err = errof(b.recv, b, 30)
    assert.equal("Shutdown", err.kind)
    assert.matches("closed in the middle of a message", err.message, 1, true)
    assert.is_true(par.clock() - t0 < 60)
  end)

  it("a sender that wedges in the middle of a message: recv ends at its timeout, and can go on", function()
    local a, b = par.pipe()
    local p = par.process(fn 'function(c, size) c:send(string.rep("x", size)) end', b, BIG)
    p:start()
    await_bytes(a)
    assert.equal(0, c_kill(p.pid, SIGSTOP))
    local err = errof(a.recv, a, 0.3)
    assert.equal("Timeout", err.kind)
    assert.equal(0, c_kill(p.pid, SIGCONT))
    assert.equal(BIG, #a:recv(60))
    assert.is_true(p:join(30))
  end)
end)

describe("a process queue", function()
  it("a process killed while putting into a full queue leaves it working for the others", function()
    local q = par.queue(2)
    local p = par.process(fn "function(queue) for i = 1, 1000 do queue:put(i) end end", q)
    p:start()
    local deadline = par.clock() + 60
    while q:qsize() < 2 and par.clock() < deadline do par.sleep(0.01) end
    assert.equal(2, q:qsize())
    p:kill()
    assert.is_true(p:join(30))
    assert.equal(1, q:get(10))
    assert.equal(2, q:get(10))
    assert.equal("Timeout", errof(q.get, q, 0.2).kind)
    -- the places the dead putter was waiting for are still there
    q:put("a", 0)
    q:put("b", 0)
    assert.equal("Timeout", errof(q.put, q, "c", 0.2).kind)
    assert.equal("a", q:get(10))
  end)

  it("a process killed while getting from an empty queue takes nothing with it", function()
    local q = par.queue()
    local p = par.process(fn "function(queue) queue:get() end", q)
    p:start()
    par.sleep(0.2)  -- the getter waits, or soon will
    p:kill()
    assert.is_true(p:join(30))
    q:put("after")
    assert.equal("after", q:get(10))
  end)
end)
