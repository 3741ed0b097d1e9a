-- Balance: equal tasks on a warm pool spread evenly over its workers, so
-- that no worker sits idle while another holds tasks that have not started.
local par = require "parlua"

local function fn(src)
  return assert(load("local par = require 'parlua' return " .. src, "=task", "t", _G))()
end

-- Who ran each task: the worker process's pid, or the worker thread's name.
local whoami = {
  processes = fn "function(s) par.sleep(s) return par.pid() end",
  states = fn "function(s) par.sleep(s) return par.current_thread() end",
}

local function split(kind, ntasks)
  local pool <close> = par.pool{kind = kind, workers = 2}
  -- Warm up with trivial tasks, many at a time: a processes worker then
  -- knows its last tasks were short, which once made it pipeline the long
  -- ones that follow onto itself (3+1 instead of 2+2).
  local warm = {}
  for i = 1, 200 do warm[i] = 0 end
  pool:map(whoami[kind], warm)
  local long = {}
  for i = 1, ntasks do long[i] = 0.25 end
  local count = {}
  for _, who in ipairs(pool:map(whoami[kind], long)) do count[who] = (count[who] or 0) + 1 end
  local shares = {}
  for _, n in pairs(count) do shares[#shares + 1] = n end
  table.sort(shares)
  return table.concat(shares, "+")
end

-- Long tasks submitted the moment a short one's result is out, while the
-- worker that ran it is still busy with its done callback: that worker's
-- last task was short, but it is the previous batch's and says nothing of
-- the new one, so the long tasks must not be pipelined onto it while the
-- other worker runs the first of them (it once took 6 of 8).
local function split_after_late_worker(ntasks)
  local go = par.queue()  -- made before the pool, so its workers can use it
  local pool <close> = par.pool{kind = "processes", workers = 2}
  local warm = {}
  for i = 1, 20 do warm[i] = 0 end
  pool:map(whoami.processes, warm)
  local short = pool:submit(function(q) return q:get() end, go)
  short:add_done_callback(function() par.sleep(0.1) end)  -- holds its worker thread
  go:put(true)
  short:result()
  local long = {}
  for i = 1, ntasks do long[i] = 0.25 end
  local count = {}
  for _, who in ipairs(pool:map(whoami.processes, long)) do count[who] = (count[who] or 0) + 1 end
  local shares = {}
  for _, n in pairs(count) do shares[#shares + 1] = n end
  table.sort(shares)
  return table.concat(shares, "+")
end

describe("equal tasks on a warm pool of 2", function()
  it("split evenly on kind processes though a worker comes back late from a short task", function()
    assert.are.equal("4+4", split_after_late_worker(8))
  end)

  for _, kind in ipairs{"processes", "states"} do
    it("split evenly on kind " .. kind, function()
      assert.are.equal("2+2", split(kind, 4))
      assert.are.equal("4+4", split(kind, 8))
    end)
  end
end)
