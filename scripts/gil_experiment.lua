-- The Russian tutorial's GIL experiment: CPU-bound work done serially, then
-- split over 2 and 4 threads of one shared state.  Python's table (4 cores):
-- serial 42 s, 2 threads 65 s, 4 threads 80 s.  Under parlua's global lock
-- threads cannot speed CPU-bound work up either, but they must not slow it
-- down: the lock changes hands only every switch interval.
-- Run: parlua scripts/gil_experiment.lua [total-iterations]
local par = require "parlua"

local total = tonumber(arg and arg[1]) or (os.getenv("PARLUA_SMOKE") and 2e6 or 6e7)

local function count(n)  -- pure Lua CPU work
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

local function run_threads(k)
  local threads = {}
  for i = 1, k do threads[i] = par.thread(count, total // k) end
  local t0 = par.clock()
  for _, t in ipairs(threads) do t:start() end
  for _, t in ipairs(threads) do t:join() end
  return par.clock() - t0
end

local t0 = par.clock()
count(total)
local serial = par.clock() - t0

print(("%-16s %9s %8s %10s %9s"):format("experiment", "time (s)", "ratio", "switches", "wait (s)"))
print(("%-16s %9.3f %8.2f"):format("serial", serial, 1))
for _, k in ipairs{2, 4} do
  local before = par.gil_stats()
  local elapsed = run_threads(k)
  local after = par.gil_stats()
  print(("%-16s %9.3f %8.2f %10d %9.3f"):format(k .. " threads", elapsed, elapsed / serial,
    after.switches - before.switches, after.wait_seconds - before.wait_seconds))
end
print("ratio = time / serial time: 1.00 means the lock costs nothing; CPython took 1.55 and 1.90")
