-- A local TCP echo server for the convoy benchmark (127.0.0.1 only):
--   lua5.4 scripts/net/echo_server.lua [LIFETIME]
-- prints "PORT PID", then serves clients one after the other, sending each
-- line back as it comes, until LIFETIME seconds (default 120) have passed.
local socket = require "socket"
local lifetime = tonumber(arg[1]) or 120
local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
io.write(port, " ", io.open("/proc/self/stat"):read("n"), "\n")
io.flush()
local stop_at = socket.gettime() + lifetime
server:settimeout(1)
while socket.gettime() < stop_at do
  local c = server:accept()
  if c then
    c:setoption("tcp-nodelay", true)
    c:settimeout(1)
    while socket.gettime() < stop_at do
      local line, err = c:receive("*l")
      if line then c:send(line .. "\n")
      elseif err ~= "timeout" then break end
    end
    c:close()
  end
end
