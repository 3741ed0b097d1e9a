-- Parallel processes, after the Russian tutorial's "Параллельные процессы":
-- every process has its own memory and its own interpreter, so there is no
-- shared lock at all.  par.process is multiprocessing.Process,
-- par.pool{kind = "processes"} is multiprocessing.Pool, and a par.queue or
-- a par.pipe carries data between processes.
-- Run: parlua scripts/processes.lua   (PARLUA_SMOKE=1: fast)
local par = require "parlua"

local smoke = os.getenv("PARLUA_SMOKE") ~= nil

print("== Process: hello")
-- from multiprocessing import Process
-- def f(name): print('Hello,', name)
-- p = Process(target=f, args=('World',)); p.start(); p.join()
local function f(name)
  print("Hello, " .. name)
end
local p = par.process{target = f, args = {"World"}}
p:start()
p:join()
print(("  (pid %d exited with code %d)"):format(p.pid, p.exitcode))

print("== Pool.map: squares of range(10) with 4 processes")
-- p = Pool(processes=4); results = p.map(calc, range(10))
local function calc(value)
  return value * value
end
local range10 = {}
for i = 1, 10 do range10[i] = i - 1 end
local pool <close> = par.pool{kind = "processes", workers = 4}
local results = pool:map(calc, range10)
print("  " .. table.concat(results, ", "))

print("== A local function: pickle cannot send it, the codec can")
-- def calc_parallel(values):
--     def calc(value): return value ** 2
--     p = Pool(processes=2); return p.map(calc, values)
-- -> AttributeError: Can't pickle local object 'calc_parallel.<locals>.calc'
local function calc_parallel(values)
  local function local_calc(value)
    return value * value
  end
  local p2 <close> = par.pool{kind = "processes", workers = 2}
  return p2:map(local_calc, values)
end
print("  " .. table.concat(calc_parallel(range10), ", "))
print("  (the function travels as bytecode with its upvalues: nothing is imported by name)")

print("== A Queue between processes")
local q = par.queue()
local producer = par.process(function(out, n)
  for i = 1, n do out:put({from = par.pid(), i = i}) end
  out:put(nil)  -- done
end, q, 5)
producer:start()
local got = {}
while true do
  local item = q:get(10)
  if item == nil then break end
  got[#got + 1] = item.i
end
producer:join()
print(("  received %s from process %d"):format(table.concat(got, " "), producer.pid))

print("== A Pipe between processes")
local parent_end, child_end = par.pipe()
local echo = par.process(function(conn)
  while true do
    local msg = conn:recv()
    if msg == "bye" then break end
    conn:send(msg:upper())
  end
  conn:send("see you")
end, child_end)
echo:start()
for _, word in ipairs{"hello", "from", "the", "parent"} do
  parent_end:send(word)
  io.write("  ", parent_end:recv(10))
end
parent_end:send("bye")
print("\n  " .. parent_end:recv(10))
echo:join()

print("== CPU-bound work: processes scale with the cores")
local function burn(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end
local n = smoke and 2e5 or 2e7
local workers = math.max(2, par.cpu_count())
local t0 = par.clock()
for _ = 1, workers do burn(n) end
local serial = par.clock() - t0
local items = {}
for i = 1, workers do items[i] = n end
local wpool <close> = par.pool{kind = "processes", workers = workers}
wpool:map(burn, {1})  -- start the workers first
t0 = par.clock()
wpool:map(burn, items)
local parallel = par.clock() - t0
print(("  %d tasks: serial %.3f s, %d processes %.3f s: %.2fx"):format(workers, serial, workers, parallel,
  serial / parallel))
