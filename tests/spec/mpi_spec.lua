-- Kind mpi from outside: a missing Open MPI, a killed rank in both launch
-- modes, a spawn that outlasts its deadline, Ctrl-C, and the price example
-- under mpiexec.  The pool cases themselves
-- are tests/mpi/pool_spec.lua, which tests/run-all.sh runs in both modes.
local support = dofile("tests/spec/support.lua")
local build = support.build_dir()

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, status = p:close()
  return out, ok and 0 or status
end

local have_mpi = io.open(build .. "/parlua_mpi.so") ~= nil and sh("command -v mpiexec") ~= ""
-- As root, Open MPI needs to be told it may run; 2 cores: oversubscribe.
local MPIENV = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
local MPIEXEC = MPIENV .. "timeout 120 mpiexec --oversubscribe "

describe("kind mpi", function()
  it("without Open MPI says how to install it", function()
    local out2 = support.lua_cmd([[local par = require "parlua"
        print(pcall(par.pool, {kind = "mpi"}))
        print(pcall(par.mpi_info))
        print(par.pool{kind = "threads", workers = 1}:submit(function() return "threads still work" end):result())]],
      "PARLUA_MPI_MODULE=/nonexistent/parlua_mpi.so " .. (os.getenv("PARLUA_LUA") or "lua5.4"))
    assert.matches("false\tkind mpi needs Open MPI: apt%-get install libopenmpi%-dev openmpi%-bin", out2)
    assert.matches("/nonexistent/parlua_mpi.so", out2)
    assert.matches("threads still work", out2)
  end)

  if not have_mpi then
    pending("skipped: kind mpi is not built here (apt-get install libopenmpi-dev openmpi-bin)")
    return
  end

  local function killed(cmd, when)
    local pidfile = os.tmpname()
    local t0 = os.time()
    local out = sh(cmd .. " " .. build .. "/parlua tests/mpi/killed_rank.lua " .. pidfile .. " " .. (when or ""))
    os.remove(pidfile)
    assert.matches("victim: false BrokenPool after %d%.%d%d s", out)
    assert.matches("message: mpi worker rank %d+ %(pid %d+ on [^)]+%) died while running the task; " ..
      "Open MPI cannot go on without a rank, so the pool is broken", out)
    assert.matches("rank pid matches: true", out)
    assert.matches("queued: false BrokenPool", out)
    assert.matches("submit: false BrokenPool", out)
    assert.matches("shut down", out)
    assert.is_true(os.time() - t0 < 30, "it took too long to end")
  end

  it("a spawned rank killed: its futures end with BrokenPool, the program ends", function()
    killed(MPIENV .. "timeout 60")
  end)

  it("a static rank killed: the same (mpiexec told not to abort the job)", function()
    killed(MPIEXEC .. "--mca orte_abort_on_non_zero_status 0 -n 2")
  end)

  it("a rank killed between tasks: the next task, a big one, ends with BrokenPool", function()
    killed(MPIENV .. "timeout 60", "idle")
  end)

  it("a spawn that outlasts spawn_timeout fails its task at once, gives kind mpi up, and the program ends", function()
    local out, status = sh(MPIENV .. "timeout 60 " .. build .. "/parlua tests/mpi/spawn_timeout.lua")
    assert.equal(0, status, out)
    assert.matches("first: false OSError after 0%.%d%d s", out)
    assert.matches("message: cannot start an mpi worker: MPI_Comm_spawn did not finish within 0%.001 s " ..
      "%(the pool's spawn_timeout%): Open MPI is stuck, and kind mpi is given up in this process", out)
    assert.matches("next pool: false cannot start an mpi worker: MPI_Comm_spawn did not finish", out)
    assert.matches("bad: [^\n]*field 'spawn_timeout' must be a positive number", out)
    assert.matches("bad kind: spawn_timeout applies to kind mpi only", out)
    assert.matches("shut down", out)
  end)

  it("Ctrl-C of a script running endless mpi tasks exits 130 and leaves no rank running", function()
    if not sh("command -v setsid"):match("setsid") then return pending("setsid is not installed") end
    local out, pidfile = os.tmpname(), os.tmpname()
    -- a rank that ended may stay a zombie of Open MPI's orted for a while: not running
    local res = sh(table.concat({
      "export " .. MPIENV,
      "setsid " .. build .. "/parlua tests/mpi/interrupted.lua " .. pidfile .. " > " .. out .. " 2>&1 & pid=$!",
      "( sleep 60; kill -9 -$pid ) > /dev/null 2>&1 & dog=$!",
      "i=0; while [ $i -lt 600 ] && ! grep -q ready " .. out .. "; do sleep 0.05; i=$((i+1)); done",
      "kill -INT -$pid",
      "wait $pid; status=$?",
      "kill $dog 2>/dev/null",
      "running() { for p in $(cat " .. pidfile .. "); do s=$(ps -o stat= -p $p); [ -n \"$s\" ] && [ \"${s#Z}\" = \"$s\" ] && echo $p; done; }",
      "i=0; while [ $i -lt 100 ] && [ -n \"$(running)\" ]; do sleep 0.05; i=$((i+1)); done",
      "echo status $status ranks $(wc -l < " .. pidfile .. ") running $(running | wc -l)",
    }, "\n"))
    local text = io.open(out):read("a")
    os.remove(out)
    os.remove(pidfile)
    assert.matches("status 130 ranks 2 running 0", res, res .. text)
    assert.matches("interrupted", text)
  end)

  it("under mpiexec in a stock lua5.4 (every rank runs the script), spawns its ranks", function()
    if support.sanitizer() then
      return pending("a sanitizer build's module cannot load into stock lua5.4")
    end
    local out, status = sh(MPIEXEC .. "-n 2 env LUA_CPATH='" .. build .. "/?.so;;' lua5.4 tests/mpi/stock_lua.lua")
    assert.equal(0, status, out)
    assert.matches("rank 0: servers\t0\tresult\t42", out)
  end)

  it("runs the price example under mpiexec -n 3 with the serial results", function()
    local out, status = sh(MPIEXEC .. "-n 3 -x PARLUA_SMOKE=1 " .. build .. "/parlua scripts/prices.lua")
    assert.equal(0, status, out)
    assert.matches("com MPI", out)
    assert.matches("Novos preços: %[0%.0, 462%.0, 1848%.0", out)
    -- every price went through a rank's task
    local n = 0
    for _ in out:gmatch("Execução do preço: ") do n = n + 1 end
    assert.equal(80, n)  -- serial, threads, processes and mpi: 20 each
  end)
end)
