-- Loaded before each file of the suite in the "busy" run: a par.thread that
-- keeps asking for the lock while the file runs -- string work, and a 1 ms
-- par.sleep every 1,000 rounds (an urgent request each time it wakes).  A
-- daemon: the program does not wait for it at the end.
local par = require "parlua"

local function busy()
  local n = 0
  while true do
    local s = string.rep("x", 64) .. n
    n = n + #s:upper():lower() % 2 + 1
    if n % 1000 == 0 then par.sleep(0.001) end
  end
end

par.thread{target = busy, name = "conformance-busy", daemon = true}:start()
