-- Round trips under CPU contention (issue: performance, item 2): trivial
-- submit+result, one at a time and in batches of 1,000 submitted then
-- collected, on kinds states and processes, first on an idle machine and
-- then beside two CPU hogs (busy-looping processes this script starts and
-- stops), beside Python's ThreadPoolExecutor under the same hogs.
-- Spinning for the peer pays only while the peer runs on another CPU;
-- with every CPU taken by a hog it wastes the spinner's time slice.
--   target: under hogs, >= 2x ThreadPoolExecutor's rate, both kinds
-- Run: parlua scripts/bench/contention.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local SECONDS = tonumber(os.getenv("PARLUA_BENCH_SECONDS")) or 1.0
local BATCH = 1000
local id = function(x) return x end

-- Tasks per second over about SECONDS of sequential round trips.
local function sequential(pool)
  local n, t0 = 0, par.clock()
  repeat
    for _ = 1, 200 do pool:submit(id, n):result() end
    n = n + 200
  until par.clock() - t0 >= SECONDS
  return n / (par.clock() - t0)
end

-- Tasks per second over about SECONDS of batches submitted, then collected.
local function batched(pool)
  local n, t0, fs = 0, par.clock(), {}
  repeat
    for i = 1, BATCH do fs[i] = pool:submit(id, i) end
    for i = 1, BATCH do fs[i]:result() end
    n = n + BATCH
  until par.clock() - t0 >= SECONDS
  return n / (par.clock() - t0)
end

local function python(mode)
  local out = par.run({"python3", "-c", ([[
import concurrent.futures as cf, time
S, B = %f, %d
ident = lambda x: x
with cf.ThreadPoolExecutor(2) as ex:
    ex.submit(ident, 0).result()
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < S:
        if "%s" == "sequential":
            for _ in range(200): ex.submit(ident, n).result()
            n += 200
        else:
            fs = [ex.submit(ident, i) for i in range(B)]
            for f in fs: f.result()
            n += B
    print(n / (time.monotonic() - t0))]]):format(SECONDS, BATCH, mode)}, {capture = true})
  return out.returncode == 0 and tonumber(out.stdout) or nil
end

local function hogs_start()
  local hogs = {}
  for i = 1, par.cpu_count() do
    hogs[i] = par.popen({"sh", "-c", "while :; do :; done"})
  end
  par.sleep(0.2)  -- let them take the CPUs
  return hogs
end

local function hogs_stop(hogs)
  for _, h in ipairs(hogs) do h:kill(); h:wait() end
end

local rates = {}
for _, kind in ipairs{"states", "processes"} do
  local pool <close> = par.pool{kind = kind, workers = 2}
  pool:map(id, {1, 2, 3, 4})
  rates[kind] = {alone = {sequential(pool), batched(pool)}}
end
local py_alone = {python("sequential"), python("batched")}
local hogs = hogs_start()
local ok, err = pcall(function()
  for _, kind in ipairs{"states", "processes"} do
    local pool <close> = par.pool{kind = kind, workers = 2}
    pool:map(id, {1, 2, 3, 4})
    rates[kind].hogs = {sequential(pool), batched(pool)}
  end
  rates.python = {python("sequential"), python("batched")}
end)
hogs_stop(hogs)
assert(ok, err)

print(("trivial submit+result, tasks/s, alone and beside %d CPU hogs (2 workers each):"):format(#hogs))
print(("  %-28s %12s %12s %12s %12s"):format("", "seq alone", "seq hogs", "batch alone", "batch hogs"))
local function row(name, alone, hogged)
  print(("  %-28s %12.0f %12.0f %12.0f %12.0f"):format(name, alone[1] or 0, hogged[1] or 0, alone[2] or 0, hogged[2] or 0))
end
row("states", rates.states.alone, rates.states.hogs)
row("processes", rates.processes.alone, rates.processes.hogs)
row("python3 ThreadPoolExecutor", py_alone, rates.python)
for _, kind in ipairs{"states", "processes"} do
  for i, mode in ipairs{"sequential", "batched"} do
    local py = rates.python[i]
    if py then
      local r = rates[kind].hogs[i] / py
      bench.report(("%s %s under hogs / ThreadPoolExecutor's"):format(kind, mode), r, ">= 2", "x", r >= 2)
    end
  end
end
