-- Start and stop scripts/net/delay_server.lua from a script:
--   local server = dofile(here .. "/net/server.lua").start(delay)
--   ... server.url ...   server:stop()
-- The server is a separate lua5.4 process, so that what it does never
-- competes for the lock of what is measured.
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "scripts/net"

function M.start(delay, lifetime)
  local cmd = ("exec lua5.4 '%s/delay_server.lua' %g %g"):format(here, delay, lifetime or 120)
  local p = assert(io.popen(cmd))
  local port, pid = p:read("n", "n")
  if not port then
    p:close()
    error("the delay server did not start (is lua-socket installed? make deps)", 2)
  end
  return {
    port = port,
    url = ("http://127.0.0.1:%d/"):format(port),
    stop = function()
      os.execute("kill " .. pid)
      p:close()
    end,
  }
end

return M
