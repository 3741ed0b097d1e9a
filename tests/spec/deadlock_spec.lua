-- A port of CPython's test_concurrent_futures/test_deadlock.py to kind
-- processes: a failure at every stage a task goes through -- encoding it in
-- the parent, decoding it in the worker, running it, encoding its result,
-- decoding the result in the parent -- by an error, os.exit, SIGKILL or a
-- segfault through ffi, ends the future with the right error, never a hang,
-- and the pool goes on (the next task runs, shutdown returns).
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local errof = support.errof

local function fn(src)
  return assert(load("local par = require 'parlua' return " .. src, "=task", "t", _G))()
end

-- How a worker dies, as Lua source run inside it.
local deaths = {
  exit = "os.exit(3)",
  sigkill = "local C = require('parlua.ffi').open(); C:fn('int kill(int, int)')(par.pid(), 9)",
  segfault = "require('parlua.ffi').open():fn('void *memset(void *, int, size_t)')(nil, 0, 8)",
}
local how = {
  exit = "exited with code 3",
  sigkill = "killed by signal 9",
  segfault = "killed by signal 11",
}

describe("kind processes, a failure at every stage (CPython's test_deadlock)", function()
  local pool
  setup(function()
    -- Many deaths on purpose: past the default restart intensity.
    pool = par.pool{kind = "processes", workers = 2, max_restarts = 1000, restart_window = 1}
  end)
  teardown(function()
    local t0 = par.clock()
    pool:shutdown()
    assert.is_true(par.clock() - t0 < 30, "shutdown hung")
  end)
  -- After each case the pool still serves.
  after_each(function()
    assert.equal("fine", pool:submit(fn "function() return 'fine' end"):result(30))
  end)

  describe("encoding the task in the parent", function()
    it("by error: an argument that cannot cross fails the submit, nothing is sent", function()
      local err = errof(pool.submit, pool, fn "function(x) return x end", coroutine.create(print))
      assert.equal("Transfer", err.kind)
      assert.matches("argument 1: cannot send a coroutine", err.message)
    end)
  end)

  describe("decoding the task in the worker", function()
    it("by error: a module table the worker does not have fails the task", function()
      package.loaded["deadlock_spec_only_here"] = {}
      local f = pool:submit(fn "function(t) return t end", package.loaded["deadlock_spec_only_here"])
      local err = errof(f.result, f, 30)
      package.loaded["deadlock_spec_only_here"] = nil
      assert.matches("deadlock_spec_only_here", tostring(err))
    end)
  end)

  describe("running the task", function()
    it("by error: the task's own error value", function()
      local f = pool:submit(fn "function() error({code = 7}) end")
      assert.equal(7, errof(f.result, f, 30).code)
    end)
    for name, src in pairs(deaths) do
      it("by " .. name .. ": BrokenPool saying how the worker ended", function()
        local f = pool:submit(fn("function() " .. src .. " end"))
        local err = errof(f.result, f, 30)
        assert.equal("BrokenPool", err.kind)
        assert.matches("died while running the task %(" .. how[name], err.message)
      end)
    end
  end)

  describe("encoding the result in the worker", function()
    it("by error: a result that cannot cross fails the task with Transfer", function()
      local f = pool:submit(fn "function() return coroutine.create(print) end")
      local err = errof(f.result, f, 30)
      assert.equal("Transfer", err.kind)
      assert.matches("result 1: cannot send a coroutine", err.message)
    end)
    for name, src in pairs(deaths) do
      it("by " .. name .. " as the task returns (a to-be-closed variable): BrokenPool", function()
        local f = pool:submit(fn("function() local x <close> = setmetatable({}, {__close = function() "
          .. src .. " end}) return string.rep('r', 1000) end"))
        local err = errof(f.result, f, 30)
        assert.equal("BrokenPool", err.kind)
        assert.matches(how[name], err.message)
      end)
    end
    it("by SIGKILL in the middle of sending a big result: killed, not malformed", function()
      local f = pool:submit(fn [[function()
        local C = require("parlua.ffi").open()
        local write = C:fn("long write(int, const char *, size_t)")
        local header = "pl" .. string.char(6, 0) .. string.pack("<I4I8", 0, 300 * 1000 * 1000)
        local part = string.rep("x", 65536)
        for fd = 3, 64 do
          if write(fd, header, #header) == #header then write(fd, part, #part) end
        end
        C:fn("int kill(int, int)")(par.pid(), 9)
      end]])
      local err = errof(f.result, f, 30)
      assert.equal("BrokenPool", err.kind)
      assert.matches("died while sending a message %(killed by signal 9", err.message)
    end)
  end)

  describe("decoding the result in the parent", function()
    it("by error: a module table the parent does not have fails the task with Transfer", function()
      local f = pool:submit(fn [[function()
        package.loaded["deadlock_spec_only_there"] = {}
        return package.loaded["deadlock_spec_only_there"]
      end]])
      local err = errof(f.result, f, 30)
      assert.equal("Transfer", err.kind)
      assert.matches("deadlock_spec_only_there", err.message)
    end)
    it("by a malformed message: the worker is killed, BrokenPool", function()
      local f = pool:submit(fn [[function()
        local write = require("parlua.ffi").open():fn("long write(int, const char *, size_t)")
        for fd = 3, 64 do write(fd, "not a frame at all, sorry", 25) end
        par.sleep(30)
      end]])
      local err = errof(f.result, f, 30)
      assert.equal("BrokenPool", err.kind)
      assert.matches("sent a malformed message and was killed", err.message)
    end)
  end)

  it("ends every future of a map whose items fail at every stage", function()
    local kinds = {"ok", "error", "exit", "sigkill", "segfault", "bad result"}
    local task = fn [[function(k)
      if k == "error" then error("boom")
      elseif k == "exit" then os.exit(3)
      elseif k == "sigkill" then require("parlua.ffi").open():fn("int kill(int, int)")(par.pid(), 9)
      elseif k == "segfault" then require("parlua.ffi").open():fn("void *memset(void *, int, size_t)")(nil, 0, 8)
      elseif k == "bad result" then return coroutine.create(print) end
      return k
    end]]
    local fs = {}
    for i = 1, 30 do fs[i] = pool:submit(task, kinds[(i - 1) % #kinds + 1]) end
    local t0 = par.clock()
    local n = 0
    for i = 1, 30 do
      local ok, v = pcall(fs[i].result, fs[i], 60)
      assert.is_true(fs[i]:done(), "future " .. i .. " did not end")
      if ok then assert.equal("ok", v) end
      n = n + 1
    end
    assert.equal(30, n)
    assert.is_true(par.clock() - t0 < 60)
  end)
end)
