-- Stock lua5.4 under `mpiexec -n 2` (tests/spec/mpi_spec.lua): every rank runs
-- this script, so none serves rank 0, whose pool spawns its own rank.
local par = require "parlua"
local info = par.mpi_info()
if info.rank == 0 then
  local pool = par.pool{kind = "mpi", workers = 1}
  print("rank 0: servers", info.servers, "result", pool:submit(function() return 42 end):result(30))
  pool:shutdown()
end
