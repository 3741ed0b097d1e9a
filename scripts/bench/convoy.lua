-- The convoy benchmark (issue #14): one thread doing request/response round
-- trips over a local TCP connection (luasocket, 127.0.0.1, an echo server in
-- a separate lua5.4 process), alone and beside a CPU-bound thread; and
-- CPython's threads doing the same in the same run.  Each round trip waits
-- in poll() for the answer, so it lets the lock go and takes it back
-- urgently; CPython's I/O thread instead waits out the burner's switch
-- interval on every recv (its convoy effect, cpython gh-89977).
--   target: beside the burner, >= 50% of the alone rate, and >= 10x
--   CPython's rate beside its burner.
-- Run: parlua scripts/bench/convoy.lua   (or `make bench`)
local par = require "parlua"
local here = (arg and arg[0] or ""):match("^(.*)/") or "scripts/bench"
local bench = dofile(here .. "/common.lua")
local seconds = tonumber(os.getenv("CONVOY_SECONDS")) or 2

if not pcall(require, "socket") then
  print("convoy: needs lua-socket (make deps installs it); nothing measured")
  return
end

local p = assert(io.popen(("exec lua5.4 '%s/../net/echo_server.lua' 300"):format(here)))
local port, pid = p:read("n", "n")
assert(port, "the echo server did not start")

-- Round trips per second over one connection, for `secs` seconds.
local function round_trips(port_, secs)
  local socket = require "socket"
  local c = assert(socket.connect("127.0.0.1", port_))
  c:setoption("tcp-nodelay", true)
  c:settimeout(5)
  local n, stop_at = 0, socket.gettime() + secs
  while socket.gettime() < stop_at do
    assert(c:send("ping\n"))
    assert(c:receive("*l") == "ping")
    n = n + 1
  end
  c:close()
  return n / secs
end

local function measure(with_burner)
  local stop = false
  local burner, laps
  if with_burner then
    laps = 0
    burner = par.thread(function()
      while not stop do bench.burn(2000); laps = laps + 1 end
    end)
    burner:start()
    par.sleep(0.05)
  end
  local io_thread = par.thread(round_trips, port, seconds)
  io_thread:start()
  local rate = io_thread:result()
  stop = true
  if burner then burner:join() end
  return rate
end

print("Convoy: round trips on a local TCP connection, alone and beside a CPU-bound thread")
local alone = measure(false)
local beside = measure(true)
print(("  %-52s %10.0f /s"):format("parlua threads: round trips alone", alone))
print(("  %-52s %10.0f /s"):format("parlua threads: round trips beside a burner", beside))
bench.report("beside the burner / alone", beside / alone * 100, ">= 50", "%", beside / alone >= 0.5)

local python = io.popen("command -v python3"):read("l")
if python then
  local py = ([[
import socket, threading, time
PORT, SECS = %d, %g
def trips():
    c = socket.create_connection(("127.0.0.1", PORT))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = c.makefile("rb")
    n = 0; end = time.perf_counter() + SECS
    while time.perf_counter() < end:
        c.sendall(b"ping\n"); assert f.readline() == b"ping\n"; n += 1
    c.close()
    return n / SECS
def measure(burner):
    stop = [False]
    def burn():
        x = 0
        while not stop[0]:
            for i in range(2000): x += i %% 7
    if burner:
        t = threading.Thread(target=burn); t.start(); time.sleep(0.05)
    out = []
    io = threading.Thread(target=lambda: out.append(trips())); io.start(); io.join()
    stop[0] = True
    if burner: t.join()
    return out[0]
print(measure(False), measure(True))
]]):format(port, seconds)
  local f = io.popen("python3 -c '" .. py .. "'")
  local a, b = f:read("n", "n")
  f:close()
  if a and b then
    print(("  %-52s %10.0f /s"):format("CPython threads: round trips alone", a))
    print(("  %-52s %10.0f /s"):format("CPython threads: round trips beside a burner", b))
    bench.report("parlua beside its burner / CPython beside its burner", beside / b, ">= 10", "x", beside / b >= 10)
  end
end

os.execute("kill " .. pid)
p:close()
