-- parlua's side of scripts/bench/mpi.lua, run by the parlua program either
-- under `mpiexec -n 3` (static: ranks 1, 2 serve) or alone (spawn).
-- Prints "name value" lines.
local par = require "parlua"
local n = tonumber(arg[1]) or 2000

local function burn(k)
  local x = 0
  for i = 1, k do x = x + i % 7 end
  return x
end

-- MPI initialised first, as mpi4py.futures has it at import (rates.py):
-- start-up is the pool's, in both, not MPI_Init's (a singleton's costs
-- about 0.3 s, mostly starting Open MPI's orted).
par.mpi_info()
local t0 = par.clock()
local pool = par.pool{kind = "mpi", workers = 2}
pool:submit(function() return 1 end):result()
print("startup", par.clock() - t0)

local id = function(x) return x end
for _ = 1, 200 do pool:submit(id, 1):result() end  -- warm-up
t0 = par.clock()
for i = 1, n do pool:submit(id, i):result() end
local dt = par.clock() - t0
print("submit_per_s", n / dt)
print("round_trip_us", dt / n * 1e6)

local items = {}
for i = 1, 20 * n do items[i] = i end
t0 = par.clock()
pool:map(id, {table.unpack(items, 1, n)})
print("map1_per_s", n / (par.clock() - t0))
t0 = par.clock()
pool:map(id, items, {chunksize = 500})
print("map500_per_s", #items / (par.clock() - t0))

local work, tasks = 3000000, 8
t0 = par.clock()
for _ = 1, tasks do burn(work) end
local serial = par.clock() - t0
t0 = par.clock()
pool:map(burn, {work, work, work, work, work, work, work, work})
print("cpu_speedup", serial / (par.clock() - t0))
pool:shutdown()
