-- The tutorials' network example, for real: N web pages fetched with
-- luasocket's socket.http from a local server that answers each request
-- after a delay (scripts/net/delay_server.lua, 127.0.0.1 only).  Serially,
-- then on 4 threads, 4 states workers and 4 processes: the waits overlap in
-- every kind, because socket.http's system calls let the lock go (the
-- `parlua` program interposes them; a stock lua5.4 needs
-- LD_PRELOAD=build/libparlua_preload.so, see docs/embedding.md).
--   parlua scripts/network.lua [N [delay]]     (PARLUA_SMOKE=1: fast)
local par = require "parlua"
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "scripts"
local smoke = os.getenv("PARLUA_SMOKE") ~= nil
local n = tonumber(arg and arg[1]) or (smoke and 8 or 20)
local delay = tonumber(arg and arg[2]) or (smoke and 0.05 or 0.2)

if not pcall(require, "socket.http") then
  print("this example needs luasocket: apt-get install lua-socket (make deps does)")
  return
end

-- What each worker runs: self-contained, so that states and processes
-- workers (which get no globals) can run it too.
local function fetch(url)
  local http = require "socket.http"
  local body, code = http.request(url)
  assert(code == 200, ("%s: %s"):format(url, tostring(code)))
  return body
end

local server = dofile(here .. "/net/server.lua").start(delay)
local urls = {}
for i = 1, n do urls[i] = server.url .. "page" .. i end

print(("%d fetches of %s, each answered after %.2f s"):format(n, server.url, delay))
local t0 = par.clock()
for _, u in ipairs(urls) do fetch(u) end
local serial = par.clock() - t0
print(("  %-14s %7.3f s"):format("serial", serial))

local ok, err = pcall(function()
  for _, kind in ipairs{"threads", "states", "processes"} do
    local pool <close> = par.pool{kind = kind, workers = 4}
    pool:map(fetch, {urls[1]})  -- the workers are up before the clock starts
    t0 = par.clock()
    local pages = pool:map(fetch, urls)
    local t = par.clock() - t0
    assert(#pages == n and pages[n]:find("^hello"))
    print(("  %-14s %7.3f s   %4.1fx   (ideal %.1fx: 4 requests at a time)"):format(
      "4 " .. kind, t, serial / t, math.min(4, n)))
  end
end)
server.stop()
assert(ok, err)
