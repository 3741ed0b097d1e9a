-- A local HTTP server that answers every request after a delay, for the
-- network examples, specs and benchmarks (127.0.0.1 only, plain luasocket,
-- one process, no threads: it serves any number of clients at once).
--   lua5.4 scripts/net/delay_server.lua DELAY [LIFETIME]
-- prints "PORT PID" on its first line, then serves until LIFETIME seconds
-- (default 60) have passed.  DELAY seconds after a request arrived, it
-- answers "HTTP/1.0 200 OK" with the body "hello <n>\n" and closes.
local socket = require "socket"

local delay = tonumber(arg[1]) or error("usage: delay_server.lua DELAY [LIFETIME]")
local lifetime = tonumber(arg[2]) or 60

local server = assert(socket.bind("127.0.0.1", 0))
server:settimeout(0)
local _, port = server:getsockname()
local pid = io.open("/proc/self/stat"):read("n")
io.write(port, " ", pid, "\n")
io.flush()

local waiting = {}  -- clients whose request has not come yet
local due = {}      -- client -> when its answer is due
local served = 0
local stop_at = socket.gettime() + lifetime
while socket.gettime() < stop_at do
  local now = socket.gettime()
  local wake = now + 0.05
  for c, t in pairs(due) do
    if t <= now then
      served = served + 1
      local body = ("hello %d\n"):format(served)
      c:send(("HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"):format(#body, body))
      c:close()
      due[c] = nil
    else
      wake = math.min(wake, t)
    end
  end
  local watch = {server}
  for c in pairs(waiting) do watch[#watch + 1] = c end
  local ready = socket.select(watch, nil, math.max(0, wake - socket.gettime()))
  for _, s in ipairs(ready) do
    if s == server then
      local c = server:accept()
      while c do
        c:settimeout(0)
        waiting[c] = true
        c = server:accept()
      end
    else  -- the request (all of it, for the small ones clients send here)
      local _, err = s:receive(65536)
      waiting[s] = nil
      if err == "closed" then s:close() else due[s] = socket.gettime() + delay end
    end
  end
end
