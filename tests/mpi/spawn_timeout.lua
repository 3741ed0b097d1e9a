-- A spawn that does not finish within the pool's spawn_timeout (run by
-- tests/spec/mpi_spec.lua from a singleton): the task fails with a clear
-- error at once, kind mpi is given up in this process, and the program
-- still ends, leaving no rank behind.
local par = require "parlua"

local pool = par.pool{kind = "mpi", workers = 2, spawn_timeout = 0.001}
local t0 = par.clock()
local ok, err = pcall(function() return pool:submit(function() return 1 end):result(30) end)
print(("first: %s %s after %.2f s"):format(tostring(ok), err.kind, par.clock() - t0))
print("message: " .. err.message)
local again = par.pool{kind = "mpi", workers = 1}
local ok2, err2 = pcall(function() return again:submit(function() return 1 end):result(30) end)
print("next pool: " .. tostring(ok2) .. " " .. tostring(err2.message))
print("bad: " .. select(2, pcall(par.pool, {kind = "mpi", spawn_timeout = 0})))
print("bad kind: " .. select(2, pcall(par.pool, {kind = "states", spawn_timeout = 1})))
pool:shutdown()
again:shutdown()
print("shut down")
