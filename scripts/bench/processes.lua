-- Benchmarks of kind "processes" (issue: processes).  Every number is
-- printed beside a baseline measured in the same run.
--   1. CPU-bound: 2 equal tasks of about 0.25 s on 2 processes against
--      serial (target >= 1.85x)
--   2. sleep-bound: 20 tasks of 0.1 s on 4 workers against the ideal 0.5 s
--      plus the pool's start-up (target <= 1.1x)
--   3. pool start-up for 4 workers, beside Python's ProcessPoolExecutor
--   4. task overhead: 20,000 trivial tasks (submit and result), map over
--      100,000 items with chunksize 1 and 500, beside Python's
--      ProcessPoolExecutor and multiprocessing.Pool (4 workers each, same
--      run; target >= 3x Python's rate, against each of them)
-- Run: parlua scripts/bench/processes.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local results = {}
local function report(name, value, target, unit, pass)
  results[#results + 1] = {name, value, target, unit, pass}
  bench.report(name, value, target, unit, pass)
end

local burn = bench.burn

-- 1 ------------------------------------------------------------------
print("1. CPU-bound: 2 equal tasks on 2 worker processes against serial")
local n = bench.calibrate(0.25)  -- one task of about 0.25 s
local best_of = bench.best_of
local serial = best_of(3, function() burn(n); burn(n) end)
do
  local pool <close> = par.pool{kind = "processes", workers = 2}
  pool:map(burn, {1, 1})  -- both processes exist before the clock starts
  local parallel = best_of(3, function() pool:map(burn, {n, n}) end)
  report(("2 processes / serial (serial %.3f s, task %.3f s)"):format(serial, serial / 2), serial / parallel,
    ">= 1.85", "x", serial / parallel >= 1.85)
end

-- 2, 3 ---------------------------------------------------------------
print("2. Sleep-bound: 20 tasks of 0.1 s on 4 workers; 3. start-up")
local function startup()
  local t0 = par.clock()
  local pool = par.pool{kind = "processes", workers = 4}
  local fs = {}
  -- four tasks that wait for each other, so each needs a worker of its own
  local b = par.queue()
  for i = 1, 4 do
    fs[i] = pool:submit(function(q)
      q:put(1)
      local deadline = par.clock() + 5
      while q:qsize() < 4 and par.clock() < deadline do par.sleep(0.0005) end
    end, b)
  end
  for i = 1, 4 do fs[i]:result() end
  local dt = par.clock() - t0
  pool:shutdown()
  return dt
end
local up = math.huge
for _ = 1, 3 do up = math.min(up, startup()) end
local sleeps = {}
for i = 1, 20 do sleeps[i] = 0.1 end
local took = best_of(2, function()
  local pool <close> = par.pool{kind = "processes", workers = 4}
  pool:map(par.sleep, sleeps)
end)
local ideal = 20 * 0.1 / 4 + up
report(("20 x 0.1 s sleeps, 4 workers / (ideal 0.5 + start-up %.3f s)"):format(up), took / ideal, "<= 1.10",
  "x", took / ideal <= 1.10)

-- Python, first, so that both do not compete ---------------------------
local PY = [[
import time, sys, concurrent.futures as cf, multiprocessing as mp
def triv(x): return x
def sq(x): return x * x
def best(k, f):
    b = 1e9
    for _ in range(k):
        t0 = time.perf_counter(); f(); b = min(b, time.perf_counter() - t0)
    return b
if __name__ == "__main__":
    def up():
        t0 = time.perf_counter()
        with cf.ProcessPoolExecutor(4) as ex:
            list(ex.map(time.sleep, [0.05] * 4))
        return time.perf_counter() - t0 - 0.05
    print("startup", best(3, up))
    items = list(range(100000))
    with cf.ProcessPoolExecutor(4) as ex:
        ex.submit(triv, 1).result()
        def subs():
            fs = [ex.submit(triv, i) for i in range(20000)]
            for f in fs: f.result()
        print("ppe_submit", 20000 / best(2, subs))
        print("ppe_map1", 100000 / best(1, lambda: list(ex.map(sq, items, chunksize=1))))
        print("ppe_map500", 100000 / best(2, lambda: list(ex.map(sq, items, chunksize=500))))
    with mp.Pool(4) as p:
        p.apply(triv, (1,))
        def asyncs():
            rs = [p.apply_async(triv, (i,)) for i in range(20000)]
            for r in rs: r.get()
        print("pool_submit", 20000 / best(2, asyncs))
        print("pool_map1", 100000 / best(2, lambda: p.map(sq, items, chunksize=1)))
        print("pool_map500", 100000 / best(2, lambda: p.map(sq, items, chunksize=500)))
]]
local py = {}
do
  local ok, res = pcall(par.run, {"python3", "-c", PY}, {capture = true, timeout = 600})
  if ok and res.returncode == 0 then
    for k, v in res.stdout:gmatch("(%S+) (%S+)") do py[k] = tonumber(v) end
  else
    print("  (python3 is not available: " .. tostring(ok and res.stderr or res) .. ")")
  end
end

report(("4-worker start-up (Python's ProcessPoolExecutor %s)"):format(py.startup and ("%.3f s"):format(py.startup)
  or "n/a"), up, py.startup and ("<= " .. ("%.3f"):format(py.startup)) or "n/a", "s",
  py.startup == nil or up <= py.startup)

-- 4 ------------------------------------------------------------------
print("4. Task overhead, 4 workers (rates in items per second)")
local items = {}
for i = 1, 100000 do items[i] = i end
local function triv(x) return x end
local function sq(x) return x * x end
local rates = {}
do
  local pool <close> = par.pool{kind = "processes", workers = 4}
  pool:map(triv, {1, 2, 3, 4})
  rates.submit = 20000 / best_of(2, function()
    local fs = {}
    for i = 1, 20000 do fs[i] = pool:submit(triv, i) end
    for i = 1, 20000 do fs[i]:result() end
  end)
  rates.map1 = 100000 / best_of(2, function() pool:map(sq, items, {chunksize = 1}) end)
  rates.map500 = 100000 / best_of(2, function() pool:map(sq, items, {chunksize = 500}) end)
end
local rows = {
  {"submit+result of 20,000 trivial tasks", "submit", "ppe_submit", "pool_submit"},
  {"map of 100,000 items, chunksize 1", "map1", "ppe_map1", "pool_map1"},
  {"map of 100,000 items, chunksize 500", "map500", "ppe_map500", "pool_map500"},
}
for _, row in ipairs(rows) do
  local mine = rates[row[2]]
  print(("  %s: parlua %.0f/s, Python ProcessPoolExecutor %s/s, multiprocessing.Pool %s/s"):format(row[1], mine,
    py[row[3]] and ("%.0f"):format(py[row[3]]) or "n/a", py[row[4]] and ("%.0f"):format(py[row[4]]) or "n/a"))
  for k, label in ipairs{"ProcessPoolExecutor", "multiprocessing.Pool"} do
    local theirs = py[row[2 + k]]
    if theirs then
      report(("%s vs %s"):format(row[1]:gsub(" of 100,000 items", ""):gsub(" trivial tasks", ""), label),
        mine / theirs, ">= 3", "x", mine / theirs >= 3)
    end
  end
end
