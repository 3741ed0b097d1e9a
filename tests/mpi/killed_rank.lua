-- A rank killed with SIGKILL (tests/spec/mpi_spec.lua runs this in both
-- launch modes): its future and every one still to run end with
-- BrokenPool within seconds, and the program then ends.
--   killed_rank.lua PIDFILE          the rank dies while it runs a task
--   killed_rank.lua PIDFILE idle     it dies between tasks; the next task
--                                    is big (a send that waits for its
--                                    receiver must not wait for the dead)
local par = require "parlua"

local pidfile, when = assert(arg[1], "usage: killed_rank.lua PIDFILE [idle]"), arg[2]
local pool = par.pool{kind = "mpi", workers = 1}
local function write_pid(path)
  local f = assert(io.open(path, "w"))
  f:write(par.pid())
  f:close()
end
local victim, queued
if when == "idle" then
  pool:submit(write_pid, pidfile):result(60)
else
  victim = pool:submit(function(path) write_pid(path) par.sleep(60) end, pidfile)
  queued = pool:submit(function() return "ran" end)
end
local pid
for _ = 1, 3000 do
  local f = io.open(pidfile)
  pid = f and tonumber(f:read("a"))
  if f then f:close() end
  if pid then break end
  par.sleep(0.01)
end
assert(pid, "the task never wrote its pid")
local t0 = par.clock()
os.execute("kill -9 " .. pid)
if when == "idle" then
  par.sleep(0.5)
  victim = pool:submit(function(s) return #s end, string.rep("x", 4 * 1024 * 1024))
  -- the victim may have broken the pool already: then the submit says so
  local ok, q = pcall(pool.submit, pool, function() return "ran" end)
  queued = ok and q or {result = function() error(q) end}
end
local ok, err = pcall(victim.result, victim, 30)
print(("victim: %s %s after %.2f s"):format(tostring(ok), err.kind, par.clock() - t0))
print("message: " .. err.message)
print("rank pid matches: " .. tostring(err.pid == pid))
local ok2, err2 = pcall(queued.result, queued, 30)
print("queued: " .. tostring(ok2) .. " " .. tostring(err2.kind))
local ok3, err3 = pcall(pool.submit, pool, function() end)
print("submit: " .. tostring(ok3) .. " " .. tostring(err3.kind))
pool:shutdown()
print("shut down")
