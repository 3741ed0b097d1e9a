-- Balance (issue: performance, item 1): equal CPU-bound tasks mapped on a
-- warm pool of 2 workers, after a warm-up of trivial tasks.  No worker may
-- sit idle while another holds tasks that have not started, so every run
-- must reach nearly 2x the serial time of the same tasks.
--   4 and 8 tasks of about 0.1 s, kinds states and processes, 10 runs
--   each, serial timed again before every run (the machine drifts);
--   target: every run >= 1.85x serial.
-- Run: parlua scripts/bench/balance.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local burn = bench.burn
local RUNS = tonumber(os.getenv("PARLUA_BENCH_RUNS")) or 10

local n = bench.calibrate(0.1)  -- one CPU-bound task of about 0.1 s

local timed = bench.timed

local trivial = {}
for i = 1, 200 do trivial[i] = 1 end

print(("equal tasks of %.3f s on 2 warm workers, %d runs, each against serial timed just before"):format(
  timed(function() burn(n) end), RUNS))
for _, kind in ipairs{"states", "processes"} do
  for _, ntasks in ipairs{4, 8} do
    local pool <close> = par.pool{kind = kind, workers = 2}
    local tasks = {}
    for i = 1, ntasks do tasks[i] = n end
    local ratios = {}
    for r = 1, RUNS do
      local serial = timed(function() for _ = 1, ntasks do burn(n) end end)
      pool:map(burn, trivial)  -- the warm-up that once made a worker hoard
      ratios[r] = serial / timed(function() pool:map(burn, tasks) end)
    end
    table.sort(ratios)
    local median = (ratios[(RUNS + 1) // 2] + ratios[RUNS // 2 + 1]) / 2
    print(("  %-9s %d tasks: median %.2fx, range %.2f-%.2fx"):format(kind, ntasks, median, ratios[1], ratios[RUNS]))
    bench.report(("%s, %d tasks on 2 workers: worst of %d runs"):format(kind, ntasks, RUNS), ratios[1],
      ">= 1.85", "x", ratios[1] >= 1.85)
  end
end
