-- The Portuguese tutorial ("Programação Paralela", concurrent.futures):
-- a list of 20 prices, each "raised by 10%" by a function that sleeps, done
-- serially and then by a pool of 4 threads with map, timed as the notebook
-- does.  Python took 20.03 s serially and 5.02 s with 4 threads.
--
--   parlua scripts/prices.lua [--sleep seconds]     (default 1, as in the tutorial;
--                                                    PARLUA_SMOKE=1 uses 0.05)
local par = require "parlua"

local pause = os.getenv("PARLUA_SMOKE") and 0.05 or 1
for i = 1, #(arg or {}) do
  if arg[i] == "--sleep" then pause = assert(tonumber(arg[i + 1]), "--sleep needs a number of seconds") end
end

-- generate_list(): the prices i^2 * 42 for i = 0..19
local function generate_list()
  local result = {}
  for i = 0, 19 do result[#result + 1] = i * i * 42 end
  return result
end

-- The tutorial's "10%" really adds price / 10 * 100 (ten times the price);
-- kept as it is, so the numbers match the notebook's.
local function increase_price_by_10_percent(price)
  print("Execução do preço: " .. price)
  par.sleep(pause)  -- time.sleep: releases the lock, so the threads overlap
  price = price + price / 10 * 100
  return price
end

local function increase_price_serial(price_list, increase_function)
  local start = par.clock()
  local result = {}
  for i, price in ipairs(price_list) do result[i] = increase_function(price) end
  print(("Tomou %f segundos para incrementar os valores dos preços"):format(par.clock() - start))
  return result
end

local function increase_price_with_threads(price_list, increase_function)
  local start = par.clock()
  local pool = par.pool{workers = 4, kind = "threads"}
  local results = pool:map(increase_function, price_list)
  pool:shutdown()
  print(("Tomou %f segundos para incrementar os valores dos preços com threads"):format(par.clock() - start))
  return results
end

-- ProcessPoolExecutor's counterpart is kind "processes", a later issue:
-- run it when this build has it.
local function increase_price_with_subprocess(price_list, increase_function)
  local ok, pool = pcall(par.pool, {workers = 4, kind = "processes"})
  if not ok then
    print("(kind \"processes\": " .. tostring(pool) .. ")")
    return nil
  end
  local start = par.clock()
  local results = pool:map(increase_function, price_list)
  pool:shutdown()
  print(("Tomou %f segundos para incrementar os valores dos preços com subprocessos"):format(par.clock() - start))
  return results
end

-- Under `mpiexec -n N parlua scripts/prices.lua`, ranks 1..N-1 run the
-- prices too (kind "mpi", docs/mpi.md); their prints come through mpiexec.
local function increase_price_with_mpi(price_list, increase_function)
  local start = par.clock()
  local pool = par.pool{kind = "mpi"}
  local results = pool:map(increase_function, price_list)
  pool:shutdown()
  print(("Tomou %f segundos para incrementar os valores dos preços com MPI"):format(par.clock() - start))
  return results
end

local prices = generate_list()
print("[" .. table.concat(prices, ", ") .. "]")
print()
local serial = increase_price_serial(prices, increase_price_by_10_percent)
print()
local threaded = increase_price_with_threads(prices, increase_price_by_10_percent)
print()
increase_price_with_subprocess(prices, increase_price_by_10_percent)

local mpi
if os.getenv("OMPI_COMM_WORLD_SIZE") and par.mpi_info().servers > 0 then
  print()
  mpi = increase_price_with_mpi(prices, increase_price_by_10_percent)
end

for i = 1, #prices do
  assert(serial[i] == threaded[i], "serial and threaded results differ")
  assert(mpi == nil or serial[i] == mpi[i], "serial and mpi results differ")
end
print()
print("Novos preços: [" .. table.concat(threaded, ", ") .. "]")
