-- Benchmarks of the global lock (issue: foundation).  Every number is
-- printed beside a baseline measured in the same run.
--   1. CPU-bound work in 1, 2, 4 threads against serial (target <= 1.10x)
--   2. a thread sleeping 1 ms beside a CPU-bound thread: how long until it
--      has the lock back, in switch intervals (target <= 2), also when the
--      burner runs inside a coroutine
--   3. convoy effect: a thread sleeping 0.2 ms in a loop beside a burner:
--      its median sleep against alone (target <= 1.5x) and the burner's
--      throughput loss (target < 5%); Python 3 does the same for contrast
--   4. single-thread cost of the lock machinery against plain lua5.4
-- Run: parlua scripts/bench/gil.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local burn = bench.burn

local results = {}
local function report(name, value, target, unit, pass)
  results[#results + 1] = {name, value, target, unit, pass}
  bench.report(name, value, target, unit, pass)
end

-- 1 ------------------------------------------------------------------
print("1. CPU-bound work split over threads (one shared state)")
local N = 4e7
local t0 = par.clock(); burn(N); local serial = par.clock() - t0
t0 = par.clock(); burn(N); serial = math.min(serial, par.clock() - t0)
for _, k in ipairs{2, 4} do
  local best = math.huge
  for _ = 1, 2 do
    local ts = {}
    for i = 1, k do ts[i] = par.thread(burn, N // k) end
    t0 = par.clock()
    for _, t in ipairs(ts) do t:start() end
    for _, t in ipairs(ts) do t:join() end
    best = math.min(best, par.clock() - t0)
  end
  report(("%d threads / serial (serial %.3f s)"):format(k, serial), best / serial, "<= 1.10", "x", best / serial <= 1.10)
end

-- 2 ------------------------------------------------------------------
print("2. Getting the lock back after a 1 ms sleep, beside a CPU-bound thread")
local function latency(in_coroutine)
  local stop = false
  local burner = par.thread(function()
    local function loop() while not stop do burn(1000) end end
    if in_coroutine then coroutine.wrap(loop)() else loop() end
  end)
  burner:start()
  par.sleep(0.02)
  local lates = {}
  for _ = 1, 100 do
    local s = par.clock()
    par.sleep(0.001)
    lates[#lates + 1] = par.clock() - s - 0.001
  end
  stop = true
  burner:join()
  table.sort(lates)
  return lates[#lates * 9 // 10], median(lates)
end
local interval = par.getswitchinterval()
for _, co in ipairs{false, true} do
  local p90, med = latency(co)
  report(("extra wait after sleep, p90%s (median %.3f ms)"):format(co and ", burner in coroutine" or "", med * 1e3),
    p90 / interval, "<= 2", "interv", p90 / interval <= 2)
end

-- 3 ------------------------------------------------------------------
print("3. Convoy effect: 0.2 ms sleeps beside a CPU-bound thread")
local function sleeper_median(seconds)
  local xs = {}
  local stop_at = par.clock() + seconds
  while par.clock() < stop_at do
    local s = par.clock()
    par.sleep(0.0002)
    xs[#xs + 1] = par.clock() - s
  end
  return median(xs)
end
local function burner_rate(seconds, with_sleeper)
  local sleeper, med
  if with_sleeper then
    sleeper = par.thread(function() return sleeper_median(seconds) end)
    sleeper:start()
  end
  local count, stop_at = 0, par.clock() + seconds
  while par.clock() < stop_at do burn(2000); count = count + 1 end
  if sleeper then med = sleeper:result() end
  return count / seconds, med
end
local alone_sleep = sleeper_median(1)
local alone_rate = burner_rate(1, false)
local rate, beside_sleep = burner_rate(1, true)
report(("sleep median beside burner / alone (%.3f / %.3f ms)"):format(beside_sleep * 1e3, alone_sleep * 1e3),
  beside_sleep / alone_sleep, "<= 1.5", "x", beside_sleep / alone_sleep <= 1.5)
local loss = (1 - rate / alone_rate) * 100
report("burner throughput lost to the sleeper", loss, "< 5", "%", loss < 5)

local python = io.popen("command -v python3"):read("l")
if python then
  local py = [[
import threading, time, statistics
def med(sec):
    xs = []; end = time.perf_counter() + sec
    while time.perf_counter() < end:
        s = time.perf_counter(); time.sleep(0.0002); xs.append(time.perf_counter() - s)
    return statistics.median(xs)
stop = False
def burn():
    x = 0
    while not stop:
        for i in range(2000): x += i % 7
alone = med(1)
t = threading.Thread(target=burn); t.start()
beside = med(1); stop = True; t.join()
print(f"{alone*1e3:.3f} {beside*1e3:.3f}")
]]
  local f = io.popen("python3 -c '" .. py .. "'")
  local a, b = f:read("n", "n")
  f:close()
  if a and b then
    print(("  %-52s %10.3f %-6s (alone %.3f ms, beside %.3f ms)"):format("Python 3: sleep median beside burner / alone", b / a, "x", a, b))
  end
end

-- 4 ------------------------------------------------------------------
print("4. Single-thread cost of the lock machinery against plain lua5.4")
local loop = "local x = 0 for i = 1, 1.5e8 do x = x + i % 7 end"
local function time_cmd(cmd)
  local best = math.huge
  for _ = 1, 3 do
    local s = par.clock()
    assert(os.execute(cmd .. " >/dev/null"))
    best = math.min(best, par.clock() - s)
  end
  return best
end
local build = os.getenv("PARLUA_BUILD") or "build"
local plain = time_cmd(("lua5.4 -e '%s'"):format(loop))
local hosted = time_cmd(("%s/parlua -e '%s'"):format(build, loop))
local adopted = time_cmd(("LUA_CPATH='%s/?.so' lua5.4 -e 'require\"parlua\" %s'"):format(build, loop))
report(("parlua program / lua5.4 (lua5.4 %.3f s)"):format(plain), hosted / plain, "<= 1.03", "x", hosted / plain <= 1.03)
report("lua5.4 + require'parlua' / lua5.4", adopted / plain, "<= 1.03", "x", adopted / plain <= 1.03)

local missed = 0
for _, r in ipairs(results) do if not r[5] then missed = missed + 1 end end
print(("gil benchmarks: %d of %d targets met"):format(#results - missed, #results))
return results
