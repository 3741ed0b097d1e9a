-- parlua beside the Lua peers it means to beat, in one run: Lua Lanes
-- (`lanes`) and effil (`effil`), each measured when it can be required
-- (LUA_PATH/LUA_CPATH; `luarocks install lanes`, `luarocks install
-- effil`), skipped with a word otherwise.  Three workloads, best of
-- ROUNDS each, the sides taking turns:
--   1. sequential round trips: one value to a waiting worker and back
--      (parlua: states pool submit+result; Lanes: a worker lane on a
--      linda; effil: a worker thread on two channels), per second
--   2. a 100,000-number table to a worker and back, items per second
--   3. 8 equal CPU-bound tasks on 2 workers, speedup over serial
-- Run: parlua scripts/bench/peers.lua   (or `make bench-peers`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local ROUNDS = tonumber(os.getenv("PARLUA_BENCH_ROUNDS")) or 5
local TRIPS = 20000
local burn = bench.burn

local big = {}
for i = 1, 100000 do big[i] = i + 0.5 end

local n = bench.calibrate(0.1)  -- one CPU-bound task of about 0.1 s

local timed = bench.timed

-- Each side: {name, trips(), table_trip(), cpu8()} returning seconds.
local sides = {}

do
  local pool = par.pool{kind = "states", workers = 2}
  local id = function(x) return x end
  pool:map(id, {1, 2})
  sides[#sides + 1] = {
    name = "parlua states",
    trips = function() for i = 1, TRIPS do pool:submit(id, i):result() end end,
    table_trip = function() assert(#pool:submit(id, big):result() == #big) end,
    cpu8 = function() pool:map(burn, {n, n, n, n, n, n, n, n}) end,
    close = function() pool:shutdown() end,
  }
end

local have_lanes, lanes = pcall(require, "lanes")
if have_lanes then
  lanes = lanes.configure()
  local linda = lanes.linda()
  local echo = lanes.gen("*", function(l)
    while true do
      local _, v = l:receive("in")
      if v == "stop" then return end
      l:send("out", v)
    end
  end)(linda)
  local burner = lanes.gen("*", function(k)
    local x = 0
    for i = 1, k do x = x + i % 7 end
    return x
  end)
  local function trip(v)
    linda:send("in", v)
    local _, back = linda:receive("out")
    return back
  end
  sides[#sides + 1] = {
    name = "Lua Lanes",
    trips = function() for i = 1, TRIPS do trip(i) end end,
    table_trip = function() assert(#trip(big) == #big) end,
    cpu8 = function()
      -- two lanes at a time: a pool of 2 workers
      for _ = 1, 4 do
        local a, b = burner(n), burner(n)
        local _ = a[1], b[1]
      end
    end,
    close = function() linda:send("in", "stop"); echo:join() end,
  }
else
  print("Lua Lanes: not installed (luarocks install lanes), skipped")
end

local have_effil, effil = pcall(require, "effil")
if have_effil then
  local inbox, outbox = effil.channel(), effil.channel()
  local worker = effil.thread(function(i, o)
    while true do
      local v = i:pop()
      if v == "stop" then return end
      o:push(v)
    end
  end)(inbox, outbox)
  local burner = effil.thread(function(k)
    local x = 0
    for i = 1, k do x = x + i % 7 end
    return x
  end)
  local function trip(v)
    inbox:push(v)
    return outbox:pop()
  end
  sides[#sides + 1] = {
    name = "effil",
    trips = function() for i = 1, TRIPS do trip(i) end end,
    -- a table pushed into a channel is copied into effil's shared storage;
    -- effil.dump copies the one that comes back out into a plain table
    table_trip = function() assert(#effil.dump(trip(big)) == #big) end,
    cpu8 = function()
      for _ = 1, 4 do
        local a, b = burner(n), burner(n)
        a:get(); b:get()
      end
    end,
    close = function() inbox:push("stop"); worker:wait() end,
  }
else
  print("effil: not installed (luarocks install effil), skipped")
end

if #sides == 1 then  -- nobody to compare with
  sides[1].close()
  return
end

local best = {}
for _, s in ipairs(sides) do best[s] = {trips = math.huge, table_trip = math.huge, cpu8 = math.huge, serial = math.huge} end
for _ = 1, ROUNDS do
  for _, s in ipairs(sides) do
    local b = best[s]
    b.trips = math.min(b.trips, timed(s.trips))
    b.table_trip = math.min(b.table_trip, timed(s.table_trip))
    b.serial = math.min(b.serial, timed(function() for _ = 1, 8 do burn(n) end end))
    b.cpu8 = math.min(b.cpu8, timed(s.cpu8))
  end
end
for _, s in ipairs(sides) do s.close() end

print(("best of %d rounds, sides taking turns:"):format(ROUNDS))
print(("  %-16s %16s %18s %18s"):format("", "round trips/s", "table items/s", "8 tasks / serial"))
local mine = best[sides[1]]
for _, s in ipairs(sides) do
  local b = best[s]
  print(("  %-16s %16.0f %18.0f %17.2fx"):format(s.name, TRIPS / b.trips, #big / b.table_trip, b.serial / b.cpu8))
end
for i = 2, #sides do
  local b = best[sides[i]]
  local r1, r2 = b.trips / mine.trips, b.table_trip / mine.table_trip
  bench.report(("round trips / %s's"):format(sides[i].name), r1, ">= 1", "x", r1 >= 1)
  bench.report(("100,000-number table trips / %s's"):format(sides[i].name), r2, ">= 1", "x", r2 >= 1)
  local s1, s2 = mine.serial / mine.cpu8, b.serial / b.cpu8
  bench.report(("8 CPU-bound tasks, speedup / %s's"):format(sides[i].name), s1 / s2, ">= 0.95", "x", s1 / s2 >= 0.95)
end
