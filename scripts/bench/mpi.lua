-- Kind mpi beside mpi4py.futures under the same mpiexec (docs/mpi.md):
-- trivial submit+result per second, map items per second at chunksize 1
-- and 500, start-up in both launch modes, CPU-bound work on 2 workers
-- against serial, and the round trip beside an 8-byte C ping-pong (the
-- floor).  The issue's targets: >= 20x mpi4py on submit+result and on map
-- at chunksize 1, >= 5x at chunksize 500, >= 1.9x serial on CPU-bound
-- work, start-up no slower than mpi4py's in each mode.
--   parlua scripts/bench/mpi.lua [n]
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local build = os.getenv("PARLUA_BUILD") or "build"
local dir = ((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/mpi"
local n = tonumber(arg and arg[1]) or 2000

local function sh(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p:read("a")
  p:close()
  return out
end

if not io.open(build .. "/parlua_mpi.so") or sh("command -v mpiexec") == "" then
  print("kind mpi is not built here: apt-get install libopenmpi-dev openmpi-bin, then make")
  return
end
local python = "/usr/bin/python3"
local have_mpi4py = sh(python .. " -c 'import mpi4py.futures; print(1)'"):match("1") ~= nil

local ENV = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
local MPIEXEC = ENV .. "timeout 300 mpiexec --oversubscribe "

local function parse(out)
  local t = {}
  for k, v in out:gmatch("([%w_]+)%s+([%d.e+-]+)") do t[k] = tonumber(v) end
  return t
end

local runs = {
  {"parlua static", MPIEXEC .. "-n 3 " .. build .. "/parlua " .. dir .. "/rates.lua " .. n},
  {"parlua spawn", ENV .. "timeout 300 " .. build .. "/parlua " .. dir .. "/rates.lua " .. n},
}
if have_mpi4py then
  runs[#runs + 1] = {"mpi4py static", MPIEXEC .. "-n 3 " .. python .. " -m mpi4py.futures " .. dir .. "/rates.py " .. n}
  runs[#runs + 1] = {"mpi4py spawn", ENV .. "timeout 300 " .. python .. " " .. dir .. "/rates.py " .. n}
else
  print("(mpi4py.futures is missing: apt-get install python3-mpi4py)")
end
local r = {}
print(("%-14s %12s %12s %12s %12s %10s %10s"):format("", "submit/s", "map cs1/s", "map cs500/s",
  "round trip", "start-up", "cpu x"))
for _, run in ipairs(runs) do
  local t = parse(sh(run[2]))
  r[run[1]] = t
  print(("%-14s %12.0f %12.0f %12.0f %10.1f us %8.3f s %10.2f"):format(run[1], t.submit_per_s or 0,
    t.map1_per_s or 0, t.map500_per_s or 0, t.round_trip_us or 0, t.startup or 0, t.cpu_speedup or 0))
end

local pingpong = build .. "/mpi_pingpong"
sh("mpicc -O2 -o " .. pingpong .. " " .. dir .. "/pingpong.c")
local floor = parse(sh(MPIEXEC .. "-n 2 " .. pingpong .. " 100000")).pingpong_us
print(("8-byte MPI ping-pong in C (the floor): %s us; parlua's round trip is %s of it"):format(
  floor and ("%.2f"):format(floor) or "?",
  floor and r["parlua static"].round_trip_us and ("%.0fx"):format(r["parlua static"].round_trip_us / floor) or "?"))

local ps, py = r["parlua static"], r["mpi4py static"]
bench.report("CPU-bound, 2 mpi workers vs serial", ps.cpu_speedup or 0, ">= 1.9", "x", (ps.cpu_speedup or 0) >= 1.9)
if py then
  local function ratio(k) return (ps[k] or 0) / (py[k] or math.huge) end
  bench.report("submit+result/s vs mpi4py.futures", ratio("submit_per_s"), ">= 20", "x", ratio("submit_per_s") >= 20)
  bench.report("map chunksize 1 vs mpi4py.futures", ratio("map1_per_s"), ">= 20", "x", ratio("map1_per_s") >= 20)
  bench.report("map chunksize 500 vs mpi4py.futures", ratio("map500_per_s"), ">= 5", "x", ratio("map500_per_s") >= 5)
  bench.report("start-up static vs mpi4py.futures", ps.startup or 0, "<= " .. ("%.3f"):format(py.startup or 0), "s",
    (ps.startup or math.huge) <= (py.startup or 0))
  local pspawn, pyspawn = r["parlua spawn"], r["mpi4py spawn"]
  bench.report("start-up spawn vs mpi4py.futures", pspawn.startup or 0,
    "<= " .. ("%.3f"):format(pyspawn.startup or 0), "s", (pspawn.startup or math.huge) <= (pyspawn.startup or 0))
end
