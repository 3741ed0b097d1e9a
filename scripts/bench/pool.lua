-- Benchmarks of par.pool, kind threads (issue 3).  Every number is printed
-- beside a baseline measured in the same run.
--   1. sleep-bound: 20 items x 0.1 s on 4 workers against the ideal 0.5 s
--      (target <= 1.1x)
--   2. CPU-bound map on 4 workers against the same work done serially: one
--      shared state under one lock cannot be faster, and must not be more
--      than 1.10x slower
--   3. task overhead: 20,000 trivial submit + result, and a 20,000-item map,
--      in tasks per second, beside Python's ThreadPoolExecutor(4) doing the
--      same in this run (target >= 3x Python's rate)
-- Run: parlua scripts/bench/pool.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local report = bench.report

local best_of = bench.best_of

local burn = bench.burn

-- 1 ------------------------------------------------------------------
print("1. Sleep-bound map: 20 items x 0.1 s on 4 workers")
do
  local items = {}
  for i = 1, 20 do items[i] = i end
  local pool = par.pool{workers = 4, kind = "threads"}
  local took = best_of(3, function() pool:map(function(x) par.sleep(0.1) return x end, items) end)
  pool:shutdown()
  report(("map time / ideal 0.5 s (took %.3f s)"):format(took), took / 0.5, "<= 1.1", "x", took / 0.5 <= 1.1)
end

-- 2 ------------------------------------------------------------------
print("2. CPU-bound map on kind threads against serial")
do
  local items, N = {}, 1e7
  for i = 1, 8 do items[i] = N end
  local serial = best_of(3, function() for _, n in ipairs(items) do burn(n) end end)
  local pool = par.pool{workers = 4, kind = "threads"}
  local pooled = best_of(3, function() pool:map(burn, items) end)
  pool:shutdown()
  local ratio = pooled / serial
  report(("pool / serial (serial %.3f s, pool %.3f s)"):format(serial, pooled), ratio, "<= 1.10", "x",
    ratio <= 1.10 and ratio >= 0.9)
end

-- 3 ------------------------------------------------------------------
print("3. Task overhead: 20,000 trivial tasks, parlua against Python's ThreadPoolExecutor")
local N = 20000
local function id(x) return x end
local submit_rate, map_rate
do
  local pool = par.pool{workers = 4, kind = "threads"}
  local items = {}
  for i = 1, N do items[i] = i end
  pool:submit(id, 0):result()  -- start a worker
  local t_submit = best_of(3, function() for i = 1, N do pool:submit(id, i):result() end end)
  local t_map = best_of(3, function() assert(#pool:map(id, items) == N) end)
  pool:shutdown()
  submit_rate, map_rate = N / t_submit, N / t_map
end

local py = [[
import time
from concurrent.futures import ThreadPoolExecutor
N = 20000
def f(x): return x
def best(fn):
    b = float("inf")
    for _ in range(3):
        t = time.perf_counter(); fn(); b = min(b, time.perf_counter() - t)
    return b
with ThreadPoolExecutor(max_workers=4) as ex:
    ex.submit(f, 0).result()
    a = best(lambda: [ex.submit(f, i).result() for i in range(N)])
    b = best(lambda: list(ex.map(f, range(N))))
print(f"{N / a:.1f} {N / b:.1f}")
]]
local py_submit, py_map
if io.popen("command -v python3"):read("l") then
  local p = io.popen("python3 -c '" .. py .. "'")
  py_submit, py_map = p:read("n", "n")
  p:close()
end
print(("  parlua: submit+result %.0f tasks/s, map %.0f tasks/s"):format(submit_rate, map_rate))
if py_submit and py_map then
  print(("  Python %s ThreadPoolExecutor: submit+result %.0f tasks/s, map %.0f tasks/s")
    :format(io.popen("python3 -c 'import sys; print(sys.version.split()[0])'"):read("l") or "3", py_submit, py_map))
  report("submit+result rate / Python's", submit_rate / py_submit, ">= 3", "x", submit_rate / py_submit >= 3)
  report("map rate / Python's", map_rate / py_map, ">= 3", "x", map_rate / py_map >= 3)
else
  print("  (python3 not found: no baseline)")
end
