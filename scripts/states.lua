-- Isolated states: par.pool{kind = "states"} gives every worker a lua_State
-- of its own, with its own lock, so CPU-bound Lua code runs in parallel.
-- Values travel by copy (the codec); runtime objects such as queues travel
-- as themselves.
-- Run: parlua scripts/states.lua   (PARLUA_SMOKE=1: fast)
local par = require "parlua"

local smoke = os.getenv("PARLUA_SMOKE") ~= nil
local workers = math.max(2, par.cpu_count())

-- A pure-Lua, CPU-bound task: count the primes below n.
local function count_primes(n)
  local count = 0
  for k = 2, n - 1 do
    local prime = true
    for d = 2, math.floor(math.sqrt(k)) do
      if k % d == 0 then prime = false; break end
    end
    if prime then count = count + 1 end
  end
  return count
end

print(("== CPU-bound work: %d tasks on %d workers, kind threads against kind states"):format(workers * 2, workers))
local items = {}
for i = 1, workers * 2 do items[i] = smoke and 20000 or 300000 end
local function timed(kind)
  local pool <close> = par.pool{kind = kind, workers = workers}
  local t0 = par.clock()
  local results = pool:map(count_primes, items)
  return par.clock() - t0, results[1]
end
local t_threads, r1 = timed("threads")
local t_states, r2 = timed("states")
assert(r1 == r2)
print(("  threads: %.3f s (one shared state, one lock: the tasks take turns)"):format(t_threads))
print(("  states:  %.3f s (a state and a lock per worker)"):format(t_states))
print(("  speedup: %.2fx on %d cores"):format(t_threads / t_states, par.cpu_count()))

print("== A closure and its upvalues travel to the worker")
local pool <close> = par.pool{kind = "states", workers = 2}
local rate = 0.2
local function with_tax(price) return price * (1 + rate) end  -- upvalue: rate
local function invoice(prices)
  local total = 0
  for _, p in ipairs(prices) do total = total + with_tax(p) end  -- upvalue: with_tax
  return ("%.2f"):format(total), par.current_thread()              -- upvalue: par (sent by name)
end
print("  invoice:", pool:submit(invoice, {10, 20, 30}):result())

print("== A queue shared by the main state and the workers")
local jobs, done = par.queue(), par.queue()
local function worker_loop(id)
  local n = 0
  while true do
    local job = jobs:get()
    if job == nil then break end
    done:put({worker = id, square = job * job})
    n = n + 1
  end
  return n
end
local loops = {pool:submit(worker_loop, 1), pool:submit(worker_loop, 2)}
for i = 1, 10 do jobs:put(i) end
jobs:put(nil)
jobs:put(nil)
local sum = 0
for _ = 1, 10 do sum = sum + done:get(10).square end
print(("  sum of squares 1..10 = %d, jobs per worker: %d + %d"):format(sum, loops[1]:result(), loops[2]:result()))

print("== Globals stay in their state: the error says so")
greeting = "hello"  -- a global of the main state only
local f = pool:submit(function() return greeting:upper() end)
local ok, err = pcall(f.result, f)
print("  " .. tostring(err))
assert(not ok and tostring(err):match("globals are not copied"))
local function fixed(g) return function() return g:upper() end end
print("  fixed with an upvalue:", pool:submit(fixed(greeting)):result())
