-- The Russian tutorial's thread examples, in Lua with parlua.
-- Run: parlua scripts/threads.lua [time-scale]   (PARLUA_SMOKE=1: fast)
local par = require "parlua"

local scale = tonumber(arg and arg[1]) or (os.getenv("PARLUA_SMOKE") and 0.05 or 1)

print("== Two threads printing the same text: no order between them")
local text = "Hello, World!"
local function spell()
  for ch in text:gmatch(".") do
    io.write(ch)
    par.sleep(0.001 * scale)  -- a blocking call: the other thread gets the lock
  end
end
local a, b = par.thread(spell), par.thread(spell)
a:start(); b:start(); a:join(); b:join()
print()

print("== Five threads, each squaring its own input")
local function test(part_index, inputs, outputs)
  io.write(("Started thread #%d\n"):format(part_index))
  outputs[part_index] = inputs[part_index] * inputs[part_index]  -- emulate some work
end
local inputs, outputs, threads = {}, {}, {}
for i = 1, 5 do inputs[i] = i - 1 end
for i = 1, 5 do threads[i] = par.thread{target = test, args = {i, inputs, outputs}} end
for _, t in ipairs(threads) do t:start() end
for _, t in ipairs(threads) do t:join() end
print("Result: " .. table.concat(outputs, ", "))

-- Python subclasses Thread; in Lua a constructor returns a thread plus the
-- state it shares with its creator.
print("== TCalc: a thread with a status its creator reads")
local Status = {__tostring = function(s)
  return s.status and (s.thread.name .. "-" .. s.status) or s.thread.name
end}
local function TCalc()
  local self = {sleeptime = math.random(1, 3)}
  self.thread = par.thread(function()
    self.status = "started"
    par.sleep(self.sleeptime * scale)
    self.status = "done"
  end)
  return setmetatable(self, Status)
end
local function show(list)
  local parts = {}
  for i, c in ipairs(list) do parts[i] = tostring(c) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local t = TCalc()
t.thread:start()
print(("status = %s, is_alive = %s"):format(t.status, t.thread:is_alive()))
print("The thread is running; join it and wait for it to finish")
t.thread:join()
print(("status = %s, is_alive = %s"):format(t.status, t.thread:is_alive()))

local calcs = {}
for i = 1, 10 do calcs[i] = TCalc() end
print("Threads created:\n " .. show(calcs))
for _, c in ipairs(calcs) do c.thread:start() end
print("The main thread sleeps a little...")
par.sleep(1.5 * scale)
print("Threads running:\n " .. show(calcs))
for _, c in ipairs(calcs) do c.thread:join() end
print("Threads finished:\n " .. show(calcs))

print("== Killable threads: cooperative cancel (what Python must hand-roll)")
local function Killable()
  local self = {}
  self.thread = par.thread(function()
    self.status = "started"
    for i = 5, 9 do
      if par.cancelled() then self.status = "killed i=" .. i; return end
      par.sleep(0.2 * scale)
    end
    self.status = "done"
  end)
  return setmetatable(self, Status)
end
local killables = {}
for i = 1, 5 do killables[i] = Killable() end
for _, k in ipairs(killables) do k.thread:start() end
print("Threads started:\n " .. show(killables))
local victim = math.random(1, #killables)
print("kill id = " .. victim)
par.sleep(0.3 * scale)
killables[victim].thread:cancel()
for _, k in ipairs(killables) do k.thread:join() end
print("Threads finished:\n " .. show(killables))

print("== Forced cancel: stops a thread that never checks (Python cannot)")
local spinner = par.thread{name = "spinner", target = function() while true do end end}
spinner:start()
par.sleep(0.05)
spinner:cancel{force = true}
spinner:join()
local ok, err = pcall(spinner.result, spinner)
print(("spinner stopped: %s (%s: %s)"):format(not spinner:is_alive(), err.kind, tostring(err)))
