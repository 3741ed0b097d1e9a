-- make soak: tasks by the hundred thousand through pools of every kind while
-- things go wrong on purpose -- worker processes killed at random, time
-- limits hit (hard and soft), errors, os.exit, whole pools interrupted in
-- the middle -- and every future must end, with memory, descriptors and
-- children flat.  Not part of make test (10 minutes by default):
--   SOAK_SECONDS (default 600), SOAK_TASKS (default 100000), SOAK_SEED.
-- Prints one line per 20 rounds and a summary; exits 1 on any failure.
local par = require "parlua"
local ffi = require "parlua.ffi"

local seconds = tonumber(os.getenv("SOAK_SECONDS") or "600")
local total = tonumber(os.getenv("SOAK_TASKS") or "100000")
local seed = tonumber(os.getenv("SOAK_SEED") or tostring(os.time()))
math.randomseed(seed)
local c_kill = ffi.open():fn("int kill(int, int)")

local function fn(src)
  return assert(load("local par = require 'parlua' return " .. src, "=soak", "t", _G))()
end

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local kb = tonumber(f:read("a"):match("VmRSS:%s*(%d+)"))
  f:close()
  return kb
end

local function fd_count()
  local p = io.popen("ls /proc/" .. par.pid() .. "/fd")
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1  -- the ls's own pipe
end

local function children()
  local p = io.popen("ps -o pid= --ppid " .. par.pid())
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1  -- the ps itself
end

-- One task of each flavour; `k` picks it.
local task = fn [[function(k, i)
  if k == "ok" then return i end
  if k == "work" then local t0 = par.clock() while par.clock() - t0 < 0.002 do end return i end
  if k == "sleep" then par.sleep(0.005) return i end
  if k == "error" then error({soak = i}) end
  if k == "spin" then while true do end end            -- ends by its time limit
  if k == "soft" then                                  -- catches its soft limit
    local ok, e = pcall(function() while true do end end)
    return e.kind
  end
  if k == "exit" then os.exit(7) end                   -- processes only
  return i
end]]

local flavours = {"ok", "ok", "ok", "work", "sleep", "error", "spin", "soft", "exit"}
-- Errors a flavour may end with (besides BrokenPool from a killed worker
-- and Cancelled from an interrupted pool).  A soft limit may come before
-- the task reaches its pcall, on a loaded machine.
local expected_errors = {
  error = {table = true}, spin = {Timeout = true}, exit = {BrokenPool = true}, soft = {SoftTimeLimit = true},
}

local stats = {tasks = 0, ok = 0, failed = 0, cancelled = 0, rounds = 0, interrupts = 0, kills = 0}
local failures = 0
local function fail(msg)
  failures = failures + 1
  io.stderr:write("FAIL: ", msg, "\n")
end

local function round(kind)
  local kinds = {"threads", "states", "processes"}
  kind = kind or kinds[math.random(#kinds)]
  local pool = par.pool{kind = kind, workers = math.random(2, 4),
                        max_restarts = kind == "processes" and 1000 or nil,
                        restart_window = kind == "processes" and 1 or nil}
  local n = math.random(200, 800)
  local fs, ks = {}, {}
  for i = 1, n do
    local k = flavours[math.random(#flavours)]
    if k == "exit" and kind ~= "processes" then k = "ok" end
    ks[i] = k
    if k == "spin" then
      fs[i] = pool:submit_with({time_limit = 0.05 + math.random() * 0.1}, task, k, i)
    elseif k == "soft" then
      fs[i] = pool:submit_with({soft_time_limit = 0.02, time_limit = 5}, task, k, i)
    else
      fs[i] = pool:submit(task, k, i)
    end
  end
  -- Kill random worker processes while the round runs (processes), and
  -- interrupt one round in five in the middle.
  if kind == "processes" then
    for _ = 1, math.random(0, 5) do
      par.sleep(math.random() * 0.05)
      local p = io.popen("ps -o pid= --ppid " .. par.pid())
      local pids = {}
      for line in p:lines() do pids[#pids + 1] = tonumber(line) end
      p:close()
      local victim = pids[math.random(math.max(#pids, 1))]
      if victim and c_kill(victim, 9) == 0 then stats.kills = stats.kills + 1 end
    end
  end
  local interrupted = math.random() < 0.2
  if interrupted then
    par.sleep(math.random() * 0.2)
    pool:shutdown{interrupt = true}
    stats.interrupts = stats.interrupts + 1
  end
  for i = 1, n do
    local ok, v = pcall(fs[i].result, fs[i], 120)
    if not fs[i]:done() then
      fail(string.format("round %d (%s): future %d (%s) did not end: %s", stats.rounds, kind, i, ks[i], tostring(v)))
    elseif fs[i]:cancelled() then
      stats.cancelled = stats.cancelled + 1
    elseif ok then
      stats.ok = stats.ok + 1
      if ks[i] == "soft" and v ~= "SoftTimeLimit" and v ~= "Cancelled" then
        fail("a soft limit came back as " .. tostring(v))
      end
    else
      stats.failed = stats.failed + 1
      local kindof = type(v) == "table" and (v.kind or "table") or type(v)
      local fine = (expected_errors[ks[i]] or {})[kindof] or kindof == "BrokenPool" or kindof == "Cancelled"
      if not fine then fail(string.format("%s task %d (%s) failed with %s: %s", kind, i, ks[i], kindof, tostring(v))) end
    end
  end
  pool:shutdown()
  stats.tasks = stats.tasks + n
  stats.rounds = stats.rounds + 1
end

local t0 = par.clock()
for _, kind in ipairs{"threads", "states", "processes"} do
  round(kind)  -- warm up: the first pools, helper threads and buffers of each kind are made
end
collectgarbage()
local rss0, fds0 = rss_kb(), fd_count()
print(string.format("soak: seed %d, %g s or %d tasks; after warm-up RSS %d KiB, %d descriptors",
  seed, seconds, total, rss0, fds0))
while stats.tasks < total and par.clock() - t0 < seconds do
  round()
  if stats.rounds % 20 == 0 then
    collectgarbage()
    print(string.format("%6.0f s  %7d tasks  RSS %6d KiB  fds %d  children %d", par.clock() - t0, stats.tasks,
      rss_kb(), fd_count(), children()))
  end
end
collectgarbage()
collectgarbage()
local rss1, fds1, kids = rss_kb(), fd_count(), children()
print(string.format("soak: %d tasks in %d rounds over %.0f s: %d ok, %d failed as meant, %d cancelled; "
  .. "%d pools interrupted, %d workers killed", stats.tasks, stats.rounds, par.clock() - t0, stats.ok,
  stats.failed, stats.cancelled, stats.interrupts, stats.kills))
print(string.format("soak: RSS %d -> %d KiB (%+d), descriptors %d -> %d, children left %d", rss0, rss1,
  rss1 - rss0, fds0, fds1, kids))
if fds1 ~= fds0 then
  os.execute("ls -l /proc/" .. par.pid() .. "/fd >&2")
  fail("descriptors leaked: " .. fds0 .. " -> " .. fds1)
end
if kids ~= 0 then fail(kids .. " children left") end
if rss1 - rss0 > 64 * 1024 then fail("RSS grew by more than 64 MiB") end
if failures > 0 then
  print("soak: FAILED (" .. failures .. ")")
  os.exit(1)
end
print("soak: passed")
