-- Ctrl-C of a script whose mpi pool runs endless tasks (tests/spec/mpi_spec.lua
-- sends SIGINT to it, spawned from a singleton): the program ends with 130,
-- and no rank is left running.  Each rank appends its pid to PIDFILE.
local par = require "parlua"

local pidfile = assert(arg[1], "usage: interrupted.lua PIDFILE")
local pool = par.pool{kind = "mpi", workers = 2}
local fs = {}
for i = 1, 2 do
  fs[i] = pool:submit(function(path)
    local f = assert(io.open(path, "a"))
    f:write(par.pid(), "\n")
    f:close()
    while true do end
  end, pidfile)
end
local n = 0
while n < 2 do
  par.sleep(0.02)
  n = 0
  for _ in io.lines(pidfile) do n = n + 1 end
end
print("ready")
io.stdout:flush()
fs[1]:result()
