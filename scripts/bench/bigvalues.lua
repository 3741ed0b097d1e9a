-- Big values (issue 16.3): a string of 1 KiB, 1 MiB and 64 MiB sent to a
-- waiting worker and back, on `states` and on `processes`, in MB/s of the
-- string's length over the round trip's time: the best batch of a few
-- trips (one trip a batch at 64 MiB), over ROUNDS rounds in which the
-- sizes and kinds take turns.  The baseline measured in the same run is a
-- copy of the same string inside this state (s .. "x": one allocation and
-- one memcpy; a round trip makes four copies).  Targets: >= 2000 MB/s at
-- 64 MiB on both kinds (memcpy here is about 10 GB/s).
-- Run: parlua scripts/bench/bigvalues.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local ROUNDS = 5
local KiB = 1024
local sizes = {{"1 KiB", KiB, 2000}, {"1 MiB", 1024 * KiB, 40}, {"64 MiB", 64 * 1024 * KiB, 1}}
local kinds = {"states", "processes"}

local pools = {}
for _, kind in ipairs(kinds) do
  pools[kind] = par.pool{kind = kind, workers = 1}
  pools[kind]:submit(function() end):result()
end
local id = function(x) return x end

-- The best time of one batch of `reps` calls of fn, over `batches`.
local function per_call(batches, reps, fn)
  local t = math.huge
  for _ = 1, batches do
    t = math.min(t, bench.timed(function() for _ = 1, reps do fn() end end) / reps)
  end
  return t
end

local best, copy = {}, {}
for _ = 1, ROUNDS do
  for _, sz in ipairs(sizes) do
    local name, n, reps = sz[1], sz[2], sz[3]
    local s = ("0123456789abcdef"):rep(n // 16)
    for _, kind in ipairs(kinds) do
      local pool, k = pools[kind], kind .. " " .. name
      local t = per_call(3, reps, function() assert(#pool:submit(id, s):result() == n) end)
      best[k] = math.min(best[k] or math.huge, t)
    end
    local t = per_call(3, reps, function() assert(#(s .. "x") == n + 1) end)
    copy[name] = math.min(copy[name] or math.huge, t)
    s = nil
    collectgarbage()
  end
end
for _, kind in ipairs(kinds) do pools[kind]:shutdown() end

print("Big values: a string to a waiting worker and back, MB/s (best of " .. ROUNDS .. ")")
print(("  %-8s %12s %12s %14s"):format("size", "states", "processes", "copy in-state"))
for _, sz in ipairs(sizes) do
  local name, n = sz[1], sz[2]
  print(("  %-8s %12.0f %12.0f %14.0f"):format(name, n / best["states " .. name] / 1e6,
    n / best["processes " .. name] / 1e6, n / copy[name] / 1e6))
end
for _, kind in ipairs(kinds) do
  local mbs = 64 * 1024 * KiB / best[kind .. " 64 MiB"] / 1e6
  bench.report(kind .. ": 64 MiB string round trip", mbs, ">= 2000", "MB/s", mbs >= 2000)
end
