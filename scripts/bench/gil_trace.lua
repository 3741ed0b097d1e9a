-- What the lock timeline (par.gil_trace) costs.  Off, each lock event pays
-- one relaxed load; on, it writes 16 bytes into the ring under a mutex.
--   1. CPU-bound work on 2 threads against serial, tracing off and on,
--      measured alternately (targets: <= 1.10x serial either way, on/off
--      <= 1.05)
--   2. a lock-heavy ping-pong (two threads, two queues: every get gives
--      the lock away), tracing off and on: the cost per recorded event
-- Run: parlua scripts/bench/gil_trace.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local burn = bench.burn

-- fn() timed with tracing on or off; the trace is read, so its cost counts.
local function timed(tracing, fn)
  if tracing then par.gil_trace() end
  local t0 = par.clock()
  fn()
  local t = par.clock() - t0
  local events = 0
  if tracing then
    local info = par.gil_trace_stop():info()
    events = info.nevents + info.dropped  -- every one was written
  end
  return t, events
end

-- 1 ------------------------------------------------------------------
print("1. CPU-bound work on 2 threads of one state, tracing off and on")
local N = 4e7
local serial = bench.best_of(2, function() burn(N) end)
local function two_threads()
  local a, b = par.thread(burn, N // 2), par.thread(burn, N // 2)
  a:start(); b:start(); a:join(); b:join()
end
local best = {[false] = math.huge, [true] = math.huge}
for _ = 1, 3 do
  for _, tracing in ipairs{false, true} do
    best[tracing] = math.min(best[tracing], (timed(tracing, two_threads)))
  end
end
bench.report(("2 threads / serial, tracing off (serial %.3f s)"):format(serial), best[false] / serial,
  "<= 1.10", "x", best[false] / serial <= 1.10)
bench.report("2 threads / serial, tracing on", best[true] / serial, "<= 1.10", "x", best[true] / serial <= 1.10)
bench.report("2 threads, tracing on / off", best[true] / best[false], "<= 1.05", "x",
  best[true] / best[false] <= 1.05)

-- 2 ------------------------------------------------------------------
print("2. Lock-heavy ping-pong between 2 threads through 2 queues")
local ROUNDS = 20000
local function ping_pong()
  local ping, pong = par.queue(), par.queue()
  local echo = par.thread(function()
    for _ = 1, ROUNDS do pong:put(ping:get()) end
  end)
  echo:start()
  for i = 1, ROUNDS do ping:put(i); pong:get() end
  echo:join()
end
local pp = {[false] = math.huge, [true] = math.huge}
local events = 0
for _ = 1, 3 do
  for _, tracing in ipairs{false, true} do
    local t, n = timed(tracing, ping_pong)
    pp[tracing] = math.min(pp[tracing], t)
    if tracing then events = n end
  end
end
print(("  %d round trips: %.1f us each off, %.1f us on; %d events recorded"):format(
  ROUNDS, pp[false] / ROUNDS * 1e6, pp[true] / ROUNDS * 1e6, events))
local per_event = events > 0 and (pp[true] - pp[false]) / events or 0
bench.report("cost of one recorded lock event", per_event * 1e9, "<= 500", "ns", per_event * 1e9 <= 500)
