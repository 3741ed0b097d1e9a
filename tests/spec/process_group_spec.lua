-- opts.new_session and opts.process_group of par.popen, par.run and
-- par.check_output (Python's start_new_session and process_group), and
-- what stops a whole group: a timeout's kill, send_signal{group = true}.
-- Ctrl-C of such a child is in tests/unit/test_sigint.c.
local par = require "parlua"
local support = dofile("tests/spec/support.lua")

local function msgof(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

-- State letter, process group and session of pid, from /proc (nil: gone).
local function stat(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f == nil then return nil end
  local s = f:read("a")
  f:close()
  local state, pgrp, sid = s:match("%) (%S) %d+ (%d+) (%d+)")
  return state, tonumber(pgrp), tonumber(sid)
end

-- A process counts as gone once it no longer exists or is a zombie (its
-- new parent, after ours died, reaps it when it likes).  Waits up to 10 s:
-- a kill takes effect soon, but not at once.
local function gone(pid)
  local deadline = par.clock() + 10
  repeat
    local state = stat(pid)
    if state == nil or state == "Z" then return true end
    par.sleep(0.02)
  until par.clock() > deadline
  return false
end

-- The pid a shell script wrote into `file` (its grandchild: `sleep 60 &`).
local function pid_in(file)
  local deadline = par.clock() + 10
  repeat
    local f = io.open(file)
    local pid = f and tonumber(f:read("a"))
    if f then f:close() end
    if pid then return pid end
    par.sleep(0.02)
  until par.clock() > deadline
  error("no pid in " .. file)
end

-- A shell that starts a grandchild in the background, writes its pid,
-- and waits in the foreground.
local function family(file)
  return {"sh", "-c", "sleep 60 & echo $! > " .. file .. "; sleep 60"}
end

local function kill_pid(pid)
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
end

describe("process groups", function()
  describe("arguments", function()
    it("checks new_session and process_group", function()
      assert.matches("option 'new_session' must be a boolean, got number",
                     msgof(par.popen, {"true"}, {new_session = 1}), 1, true)
      for _, bad in ipairs{-1, 1.5, 2^40} do
        assert.matches("option 'process_group' must be a non-negative integer (0: a new group led by the child), got "
                       .. tostring(bad), msgof(par.run, {"true"}, {process_group = bad}), 1, true)
      end
      assert.matches("option 'process_group' must be a non-negative integer (0: a new group led by the child), got string",
                     msgof(par.check_output, {"true"}, {process_group = "0"}), 1, true)
    end)

    it("refuses new_session with process_group", function()
      for _, g in ipairs{0, 1} do
        assert.matches("options 'new_session' and 'process_group' cannot both be used",
                       msgof(par.popen, {"true"}, {new_session = true, process_group = g}), 1, true)
      end
      -- new_session = false is no session: any group may go with it
      assert.equal(0, par.run({"true"}, {new_session = false, process_group = 0}).returncode)
    end)

    it("names the group a child cannot join", function()
      local e = msgof(par.popen, {"true"}, {process_group = 1})
      assert.matches("cannot run 'true' in process group 1: Operation not permitted (no such group in this session)",
                     e, 1, true)
    end)

    it("checks send_signal's options", function()
      local p = par.popen({"sleep", "60"})
      assert.matches("unknown option 'grop' for send_signal", msgof(p.send_signal, p, "TERM", {grop = true}), 1, true)
      assert.matches("option 'group' must be a boolean, got string",
                     msgof(p.send_signal, p, "TERM", {group = "yes"}), 1, true)
      assert.matches("the process does not lead its own process group (start it with new_session = true or process_group = 0)",
                     msgof(p.send_signal, p, "TERM", {group = true}), 1, true)
      p:send_signal("TERM", {group = false})  -- the child alone, as without options
      assert.equal(-15, p:wait())
    end)
  end)

  describe("where the child starts", function()
    it("leads a new session with new_session = true", function()
      local p = par.popen({"sleep", "60"}, {new_session = true})
      local _, pgrp, sid = stat(p.pid)
      assert.equal(p.pid, pgrp)
      assert.equal(p.pid, sid)
      p:kill()
      p:wait()
    end)

    it("leads a new group of our session with process_group = 0, and another joins it", function()
      local _, _, our_sid = stat(par.pid())
      local p1 = par.popen({"sleep", "60"}, {process_group = 0})
      local p2 = par.popen({"sleep", "60"}, {process_group = p1.pid})
      local _, pgrp1, sid1 = stat(p1.pid)
      local _, pgrp2, sid2 = stat(p2.pid)
      assert.equal(p1.pid, pgrp1)
      assert.equal(p1.pid, pgrp2)
      assert.equal(our_sid, sid1)
      assert.equal(our_sid, sid2)
      p1:send_signal("KILL", {group = true})  -- os.killpg: both go
      assert.equal(-9, p1:wait())
      assert.equal(-9, p2:wait())
    end)

    it("stays in our group without either option", function()
      local _, our_pgrp = stat(par.pid())
      local p = par.popen({"sleep", "60"})
      local _, pgrp = stat(p.pid)
      assert.equal(our_pgrp, pgrp)
      p:kill()
      p:wait()
    end)
  end)

  describe("a timeout's kill", function()
    -- run(file) times out; the grandchild whose pid its script wrote in
    -- file must be gone.
    local function assert_grandchild_gone(run)
      local file = support.tmpname()
      assert.matches("timed out after 0.5 seconds", msgof(run, file), 1, true)
      local grandchild = pid_in(file)
      os.remove(file)
      assert.is_true(gone(grandchild), "the grandchild still runs")
    end

    it("takes the grandchildren of a new session (run)", function()
      assert_grandchild_gone(function(file) return par.run(family(file), {new_session = true, timeout = 0.5}) end)
    end)

    it("takes the grandchildren of process_group = 0 (check_output)", function()
      assert_grandchild_gone(function(file)
        return par.check_output(family(file), {process_group = 0, timeout = 0.5})
      end)
    end)

    it("takes the group also when its leader has ended (a grandchild holding stdout)", function()
      assert_grandchild_gone(function(file)
        return par.run({"sh", "-c", "sleep 60 & echo $! > " .. file}, {new_session = true, capture = true, timeout = 0.5})
      end)
    end)

    it("takes the child alone when it does not lead its group (as Python)", function()
      local file = support.tmpname()
      msgof(par.run, family(file), {timeout = 0.5})
      local grandchild = pid_in(file)
      os.remove(file)
      local state = stat(grandchild)
      kill_pid(grandchild)
      assert.is_truthy(state ~= nil and state ~= "Z", "the grandchild was killed too")
    end)
  end)

  describe("kill and terminate", function()
    it("signal the child alone, as Python's; send_signal{group = true} the group", function()
      local file = support.tmpname()
      local p = par.popen(family(file), {new_session = true})
      local grandchild = pid_in(file)
      os.remove(file)
      p:terminate()
      assert.equal(-15, p:wait())
      local state = stat(grandchild)
      assert.is_truthy(state ~= nil and state ~= "Z", "terminate reached the grandchild")
      -- the leader has ended and is reaped: its group lives on and is reached
      p:send_signal("KILL", {group = true})
      assert.is_true(gone(grandchild), "the grandchild still runs")
      p:send_signal("KILL", {group = true})  -- an empty group: nothing to do
    end)
  end)
end)
