-- Helpers every benchmark shares:
--   local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")
-- `report` prints the line scripts/bench/run-all.sh counts ("ok"/"MISSED").
local par = require "parlua"

local bench = {}

-- One result beside its target, and whether it was met.
function bench.report(name, value, target, unit, pass)
  print(("  %-52s %10.3f %-6s target %-8s %s"):format(name, value, unit, target, pass and "ok" or "MISSED"))
end

-- The shortest wall time of `runs` calls of fn, in seconds.
function bench.best_of(runs, fn)
  local best = math.huge
  for _ = 1, runs do
    local t0 = par.clock()
    fn()
    best = math.min(best, par.clock() - t0)
  end
  return best
end

-- The pure-Lua CPU work of the Russian tutorial's experiment.
function bench.burn(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

-- The wall time of one call of fn, in seconds.
function bench.timed(fn)
  local t0 = par.clock()
  fn()
  return par.clock() - t0
end

-- An n for which burn(n) takes at least `seconds` on this machine now.
function bench.calibrate(seconds)
  local n = 1e6
  repeat
    local dt = bench.timed(function() bench.burn(n) end)
    if dt < seconds then n = math.floor(n * math.min(10, seconds / math.max(dt, 1e-3) * 1.05)) end
  until dt >= seconds
  return n
end

return bench
