-- Balance (issue: performance, item 1): equal CPU-bound tasks mapped on a
-- warm pool of 2 workers, after a warm-up of trivial tasks.  No worker may
-- sit idle while another holds tasks that have not started, so every run
-- must reach nearly 2x the serial time of the same tasks.
--   4 and 8 tasks of about 0.1 s, kinds states and processes, 10 runs
--   each, serial timed again before every run (the machine drifts);
--   target: every run >= 1.85x serial.
-- Each task reports the worker that ran it and when it started and ended,
-- and each run the CPU the rest of the machine took meanwhile (/proc/stat:
-- other processes, and steal: the VM's other tenants).  A run below the
-- target is explained beside its row: its split ("3+1" or "2+2"), and
-- "dispatch" when a task started on one worker after another had run its
-- last (a worker idle while a task it could have run waited: our fault),
-- else "machine" (an uneven split is then the pool working around a
-- worker that got less CPU, and a slow even one the machine's load).
-- Run: parlua scripts/bench/balance.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local burn = bench.burn
local RUNS = tonumber(os.getenv("PARLUA_BENCH_RUNS")) or 10
local TARGET = 1.85
local HZ = 100  -- USER_HZ: the unit of /proc's CPU times

local n = bench.calibrate(0.1)  -- one CPU-bound task of about 0.1 s

local timed = bench.timed

-- burn(n), saying who ran it (a worker process's pid, or a worker
-- thread's name) and when it started and ended (par.clock: one monotonic
-- clock for every process).
local traced = assert(load([[
local par = require "parlua"
return function(n)
  local t0 = par.clock()
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return {who = par.current_thread() .. "@" .. par.pid(), start = t0, stop = par.clock()}
end]], "=traced", "t", _G))()

local trivial = {}
for i = 1, 200 do trivial[i] = 1 end

-- CPU jiffies of the whole machine: busy (not idle nor iowait) and steal.
local function machine_cpu()
  local f = assert(io.open("/proc/stat"))
  local line = f:read("l")
  f:close()
  local v = {}
  for x in line:gmatch("%d+") do v[#v + 1] = tonumber(x) end
  local steal = v[8] or 0
  return v[1] + v[2] + v[3] + v[6] + v[7], steal  -- user nice system irq softirq
end

-- CPU jiffies used so far by the given processes (utime + stime).
local function processes_cpu(pids)
  local sum = 0
  for pid in pairs(pids) do
    local f = io.open("/proc/" .. pid .. "/stat")
    if f then
      local s = f:read("a")
      f:close()
      local rest = s:match("%) (.*)$")  -- after the command's name, which may hold spaces
      local fields = {}
      for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
      sum = sum + tonumber(fields[12]) + tonumber(fields[13])  -- utime, stime (fields 14, 15)
    end
  end
  return sum
end

-- One timed map of the tasks, with who ran what and the machine's load.
local function traced_run(pool, tasks, ours)
  local busy0, steal0 = machine_cpu()
  local own0 = processes_cpu(ours)
  local t0 = par.clock()
  local results = pool:map(traced, tasks)
  local wall = par.clock() - t0
  local busy1, steal1 = machine_cpu()
  local own1 = processes_cpu(ours)
  local per = {}
  for _, r in ipairs(results) do
    local w = per[r.who] or {count = 0, first = math.huge, last = 0}
    per[r.who] = w
    w.count, w.first, w.last = w.count + 1, math.min(w.first, r.start), math.max(w.last, r.stop)
  end
  local shares, idle = {}, 0
  for _, w in pairs(per) do shares[#shares + 1] = w.count end
  table.sort(shares)
  -- A worker idle at the start or after its last task, while the run went on.
  local stop = 0
  for _, w in pairs(per) do stop = math.max(stop, w.last) end
  for _, w in pairs(per) do idle = math.max(idle, (w.first - t0) + (stop - w.last)) end
  -- Tasks that waited on one worker while another had nothing left to do
  -- (5 ms of slack: a hand-off is far shorter).
  local held = 0
  for _, r in ipairs(results) do
    for who, w in pairs(per) do
      if who ~= r.who and r.start > w.last + 0.005 then
        held = held + 1
        break
      end
    end
  end
  return {
    wall = wall,
    split = table.concat(shares, "+"),
    held = held,
    idle = idle,
    other = ((busy1 - busy0) - (own1 - own0)) / HZ / wall,  -- CPUs taken by others
    steal = (steal1 - steal0) / HZ / wall,
  }
end

print(("equal tasks of %.3f s on 2 warm workers, %d runs, each against serial timed just before"):format(
  timed(function() burn(n) end), RUNS))
print("  (a run below target: its split, whose fault, how long a worker sat idle, the CPUs others and steal took)")
for _, kind in ipairs{"states", "processes"} do
  for _, ntasks in ipairs{4, 8} do
    local pool <close> = par.pool{kind = kind, workers = 2}
    local tasks = {}
    for i = 1, ntasks do tasks[i] = n end
    -- Whose CPU time is ours: this process and the pool's worker processes.
    local ours = {[par.pid()] = true}
    if kind == "processes" then
      for _, r in ipairs(pool:map(traced, {1, 1, 1, 1})) do ours[tonumber(r.who:match("@(%d+)$"))] = true end
    end
    local ratios, bad = {}, {}
    for r = 1, RUNS do
      local serial = timed(function() for _ = 1, ntasks do burn(n) end end)
      pool:map(burn, trivial)  -- the warm-up that once made a worker hoard
      local run = traced_run(pool, tasks, ours)
      ratios[r] = serial / run.wall
      if ratios[r] < TARGET then
        bad[#bad + 1] = ("%.2fx %s %s, idle %.0f ms, others %.2f CPU, steal %.2f"):format(ratios[r], run.split,
          run.held > 0 and ("dispatch: " .. run.held .. " held back") or "machine", run.idle * 1000, run.other,
          run.steal)
      end
    end
    table.sort(ratios)
    local median = (ratios[(RUNS + 1) // 2] + ratios[RUNS // 2 + 1]) / 2
    print(("  %-9s %d tasks: median %.2fx, range %.2f-%.2fx"):format(kind, ntasks, median, ratios[1], ratios[RUNS]))
    for _, line in ipairs(bad) do print("      below: " .. line) end
    bench.report(("%s, %d tasks on 2 workers: worst of %d runs"):format(kind, ntasks, RUNS), ratios[1],
      ">= 1.85", "x", ratios[1] >= TARGET)
  end
end
