-- The Portuguese tutorial's second example ("Outro Exemplo"): four slow
-- price updates submitted to a pool, wait(return_when=FIRST_COMPLETED),
-- print the first result and leave early.  Python needed a hack for that
-- last step (clearing executor._threads and thread._threads_queues, then
-- shutdown(wait=False)), and its other threads still ran to the end; here
-- it is one call: shutdown{wait=false, cancel_futures=true, interrupt=true}.
-- Then the same with a <close> pool (Python's `with` block), and a few more
-- pool calls: submit + result, map with a timeout, map with chunksize.
--
--   parlua scripts/first_completed.lua [--sleep seconds]   (default 5, as in the
--                                                           tutorial; PARLUA_SMOKE=1: 0.05)
local par = require "parlua"

local pause = os.getenv("PARLUA_SMOKE") and 0.05 or 5
for i = 1, #(arg or {}) do
  if arg[i] == "--sleep" then pause = assert(tonumber(arg[i + 1]), "--sleep needs a number of seconds") end
end

-- Each price sleeps a little longer than the one before, so that the
-- first to finish is the first submitted (the tutorial's all slept 5 s,
-- and whichever thread woke first won).
local function increase_price_by_10_percent(price, k)
  print("Cálculo do preço: " .. price)
  par.sleep(pause * (1 + k / 10))
  price = price + price / 10 * 100
  print("Novo preço: " .. price)
  return price
end

local prices = {125, 250, 99, 23}

print("== submit, wait FIRST_COMPLETED, leave early")
local t0 = par.clock()
local executor = par.pool{workers = #prices, kind = "threads"}
local futures = {}
for i = 1, #prices do futures[i] = executor:submit(increase_price_by_10_percent, prices[i], i - 1) end
local done, not_done = par.wait(futures, {return_when = par.FIRST_COMPLETED})
for _, completed in ipairs(done) do
  print("RETORNOU")
  print(completed:result())
end
executor:shutdown{wait = false, cancel_futures = true, interrupt = true}
-- The others were interrupted in their sleep: they end with Cancelled.
for _, f in ipairs(not_done) do
  local err = f:exception()
  print(("  %s: %s"):format(tostring(f), err and (err.kind or tostring(err)) or "finished"))
end
print(("left after %.2f s; the slowest task alone would have taken %.2f s"):format(par.clock() - t0, pause * 1.3))

print()
print("== the same in a <close> block (Python's `with`)")
do
  local pool <close> = par.pool{workers = #prices}
  local fs = {}
  for i = 1, #prices do fs[i] = pool:submit(increase_price_by_10_percent, prices[i], i - 1) end
  local first = par.wait(fs, {return_when = "FIRST_COMPLETED"})[1]
  print("RETORNOU")
  print(first:result())
  pool:shutdown{wait = false, cancel_futures = true, interrupt = true}
end  -- __close: shutdown{wait=true}, quick now that every task was interrupted

print()
print("== more: submit + result, map with timeout, map with chunksize")
do
  local pool <close> = par.pool{workers = 4}
  local f = pool:submit(function(a, b) return a + b, a * b end, 6, 7)
  print("submit(add and multiply, 6, 7):result() ->", f:result())

  local ok, err = pcall(pool.map, pool, par.sleep, {pause / 5, pause * 10}, {timeout = pause})
  print("map with timeout:", ok, err.kind, tostring(err))

  local squares = pool:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {chunksize = 3})
  print("map with chunksize 3:", table.concat(squares, " "))
  pool:shutdown{interrupt = true}
end
