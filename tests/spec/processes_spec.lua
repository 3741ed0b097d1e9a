-- Processes: par.pool{kind = "processes"}, par.process, par.pipe, and
-- queues that cross processes; the fault tests (killed and crashing
-- workers, big and unsendable results, zombies, descriptor leaks).
local par = require "parlua"
local ffi = require "parlua.ffi"
local support = dofile("tests/spec/support.lua")

-- A function whose _ENV is the real globals table (busted gives each spec
-- file an environment of its own, which would travel as a copy).
-- `par` is an upvalue of it: globals do not travel to workers.
local function fn(src)
  return assert(load("local par = require 'parlua' return " .. src, "=task", "t", _G))()
end

local errof = support.errof

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

local libc = ffi.open()
local c_kill = libc:fn("int kill(int, int)")

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

-- Descriptors open in this process now (after collecting what is garbage:
-- pipes and queues of earlier tests close when collected), asked of the
-- kernel one by one so that nothing is opened to count them.
local c_fcntl = libc:fn("int fcntl(int, int)")
local function fd_count()
  collectgarbage()
  collectgarbage()
  local n = 0
  for fd = 0, 4095 do
    if c_fcntl(fd, 1) ~= -1 then n = n + 1 end  -- F_GETFD
  end
  return n
end

-- The state letters of this process's children (other than the shell of
-- this very command).
local function child_states()
  local out = sh("ps --ppid " .. par.pid() .. " -o pid=,stat=,comm=")
  local states = {}
  for pid, stat, comm in out:gmatch("(%d+)%s+(%S+)%s+(%S+)") do
    if comm ~= "sh" and comm ~= "ps" then states[#states + 1] = stat end
  end
  return states
end

local function no_zombies()
  for _, st in ipairs(child_states()) do assert.is_nil(st:find("Z"), "a zombie is left: " .. st) end
end

-- The state letter of pid when it is a child of this process, else nil
-- (also when it is reaped while we look: the read then fails).
local function child_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  local state, ppid = (stat or ""):match("%) (%S) (%d+)")
  if tonumber(ppid) ~= par.pid() then return nil end
  return state
end

-- True while pid is a live child of this process.
local function is_my_child(pid)
  local state = child_state(pid)
  return state ~= nil and state ~= "Z"
end

-- Another interpreter running code, killed after `seconds` (a bug under
-- test may hang it; the spec run must go on).
local function lua_cmd_timeout(seconds, code)
  return support.lua_cmd(code, "timeout -s KILL " .. seconds .. " " .. (os.getenv("PARLUA_LUA") or "lua5.4"))
end

describe("kind processes", function()
  it("makes a pool of kind processes", function()
    local pool = par.pool{kind = "processes", workers = 2}
    local st = pool:stats()
    assert.equal("processes", st.kind)
    assert.equal(2, st.workers)
    assert.matches("kind=processes", tostring(pool))
    pool:shutdown()
    assert.matches("field 'max_tasks_per_worker' must be a positive integer",
      errof(par.pool, {kind = "processes", max_tasks_per_worker = 0}))
  end)

  it("runs tasks in other processes, with all their results", function()
    local pool <close> = par.pool{kind = "processes", workers = 2}
    local f = pool:submit(fn "function(a, b) return a + b, a * b, nil, par.pid() end", 6, 7)
    local sum, prod, none, pid = f:result(10)
    assert.equal(13, sum)
    assert.equal(42, prod)
    assert.is_nil(none)
    assert.are_not.equal(par.pid(), pid)
    assert.equal(4, select("#", f:result()))
    -- local functions and closures go as they are (pickle refuses them)
    local k = 10
    local function times_k(x) return x * k end
    assert.same({10, 20, 30}, pool:map(times_k, {1, 2, 3}))
    -- tables keep their shape, metatables and shared references
    local t = setmetatable({1, 2, x = {y = "z"}}, {__index = function() return "dflt" end})
    t.self = t
    local back = pool:submit(fn "function(t) return t end", t):result(10)
    assert.equal("z", back.x.y)
    assert.equal(back, back.self)
    assert.equal("dflt", back.missing)
  end)

  it("maps, starmaps and imaps with chunksize, in order", function()
    local pool <close> = par.pool{kind = "processes", workers = 3}
    local sq = fn "function(x) return x * x end"
    local want = {}
    for i = 1, 200 do want[i] = i * i end
    assert.same(want, pool:map(sq, range(200)))
    assert.same(want, pool:map(sq, range(200), {chunksize = 7}))
    assert.same({3, 7}, pool:starmap(fn "function(a, b) return a + b end", {{1, 2}, {3, 4}}))
    local got = {}
    for i, v in pool:imap(sq, range(50), {chunksize = 4}) do got[i] = v end
    assert.same({table.unpack(want, 1, 50)}, got)
    local n = 0
    for i, v in pool:imap_unordered(sq, range(30)) do
      assert.equal(i * i, v)
      n = n + 1
    end
    assert.equal(30, n)
  end)

  it("runs init first in every worker, and recycles workers", function()
    local pool <close> = par.pool{kind = "processes", workers = 2, max_tasks_per_worker = 3,
      init = fn "function() BASE = 100; INITS = (INITS or 0) + 1 end"}
    local pids = {}
    for i = 1, 12 do
      local base, inits, pid = pool:submit(fn "function() return BASE, INITS, par.pid() end"):result(10)
      assert.equal(100, base)
      assert.equal(1, inits)
      pids[pid] = (pids[pid] or 0) + 1
    end
    local n = 0
    for _, count in pairs(pids) do
      n = n + 1
      assert.is_true(count <= 3)
    end
    assert.is_true(n >= 4)
  end)

  it("raises task errors with the worker's traceback", function()
    local pool <close> = par.pool{kind = "processes", workers = 1}
    local f = pool:submit(fn [[function()
      local function inner() error("deep failure") end
      inner()
    end]])
    local err = errof(f.result, f, 10)
    assert.matches("task:2: deep failure", err)
    assert.matches("in local 'inner'", f:traceback())
    assert.equal(err, f:exception())
    -- error values are copied, tables included
    local f2 = pool:submit(fn "function() error({code = 7}) end")
    assert.equal(7, errof(f2.result, f2, 10).code)
    -- a missing global says why
    local f3 = pool:submit(fn "function() return no_such_global() end")
    assert.matches("globals are not copied to 'processes' workers", errof(f3.result, f3, 10))
    -- map raises the first error
    assert.matches("item 3", errof(pool.map, pool, fn "function(x) if x == 3 then error('item 3') end return x end",
      range(5)))
  end)

  it("breaks the pool when init fails", function()
    local pool = par.pool{kind = "processes", workers = 2, init = fn "function() error('no init') end"}
    local f = pool:submit(fn "function() return 1 end")
    local err = errof(f.result, f, 10)
    assert.equal("BrokenPool", err.kind)
    assert.matches("pool init failed: task:1: no init", err.message)
    assert.matches("no init", err.cause)
    assert.matches("the pool is broken: pool init failed", errof(pool.submit, pool, fn "function() end").message)
    pool:shutdown()
  end)

  it("refuses what cannot cross to a process, naming where it was", function()
    local pool <close> = par.pool{kind = "processes", workers = 1}
    local lk = par.lock()
    local err = errof(pool.submit, pool, fn "function(l) return l end", lk)
    assert.equal("Transfer", err.kind)
    assert.equal("argument 1: cannot send a lock to another process", err.message)
    err = errof(pool.submit, pool, fn "function(t) return t end", {cb = {par.event()}})
    assert.equal('argument 1: field "cb": [1]: cannot send an event to another process', err.message)
    err = errof(pool.submit, pool, function() return lk end)
    assert.equal('function: upvalue "lk" of function: cannot send a lock to another process', err.message)
    err = errof(pool.submit, pool, fn "function(c) end", coroutine.create(print))
    assert.equal("argument 1: cannot send a coroutine", err.message)
    -- a result that cannot be sent fails the task, not the worker
    local f = pool:submit(fn "function() return coroutine.create(print) end")
    err = errof(f.result, f, 10)
    assert.equal("Transfer", err.kind)
    assert.equal("result 1: cannot send a coroutine", err.message)
    local f2 = pool:submit(fn "function() return par.lock() end")
    assert.equal("result 1: cannot send a lock to another process", errof(f2.result, f2, 10).message)
    assert.equal(5, pool:submit(fn "function() return 5 end"):result(10))
  end)

  it("carries a 50 MB result", function()
    local pool <close> = par.pool{kind = "processes", workers = 1}
    local s = pool:submit(fn "function(n) return string.rep('ab', n) end", 25 * 1024 * 1024):result(60)
    assert.equal(50 * 1024 * 1024, #s)
    assert.equal("abab", s:sub(1, 4))
    local back = pool:submit(fn "function(s) return #s end", s):result(60)
    assert.equal(#s, back)
  end)

  it("sleeps once per task while it waits for the next one, not twice", function()
    -- A worker blocked in recvmsg was woken again each time the parent read
    -- its result (the socket's room to write came back): counted by the
    -- kernel, not timed.
    local pool <close> = par.pool{kind = "processes", workers = 1}
    local sleeps = fn [[function()
      local f = assert(io.open("/proc/self/status"))
      local n = tonumber(f:read("a"):match("\nvoluntary_ctxt_switches:%s*(%d+)"))
      f:close()
      return n
    end]]
    local id = fn "function(x) return x end"
    local n = 200
    local before = pool:submit(sleeps):result(10)
    for i = 1, n do pool:submit(id, i):result(10) end
    local after = pool:submit(sleeps):result(10)
    assert.is_true(after - before <= n * 1.5, ("%d sleeps for %d tasks"):format(after - before, n))
  end)

  describe("faults", function()
    it("fails the task of a worker killed with SIGKILL, and keeps serving", function()
      local pool <close> = par.pool{kind = "processes", workers = 2}
      local q = par.queue()
      local f = pool:submit(fn "function(q) q:put(par.pid()); par.sleep(30) end", q)
      local pid = q:get(10)
      local t0 = par.clock()
      assert.equal(0, c_kill(pid, 9))
      local err = errof(f.result, f, 10)
      assert.is_true(par.clock() - t0 < 1.5)
      assert.equal("BrokenPool", err.kind)
      assert.matches("killed by signal 9", err.message)
      assert.equal(-9, err.exitcode)
      assert.equal(pid, err.pid)
      -- the pool goes on, with a new process
      for i = 1, 5 do assert.equal(i * 2, pool:submit(fn "function(x) return x * 2 end", i):result(10)) end
      local st = pool:stats()
      assert.equal(1, st.failed)
      no_zombies()
    end)

    it("fails the task of a worker that segfaults or calls os.exit", function()
      local pool <close> = par.pool{kind = "processes", workers = 1}
      local f = pool:submit(fn [[function()
        local ffi = require "parlua.ffi"
        ffi.open():fn("int raise(int)")(11)
      end]])
      local err = errof(f.result, f, 10)
      assert.equal("BrokenPool", err.kind)
      assert.matches("killed by signal 11: SIGSEGV", err.message)
      assert.equal(-11, err.exitcode)
      local f2 = pool:submit(fn "function() os.exit(3) end")
      err = errof(f2.result, f2, 10)
      assert.equal("BrokenPool", err.kind)
      assert.matches("exited with code 3", err.message)
      assert.equal(3, err.exitcode)
      assert.equal("ok", pool:submit(fn "function() return 'ok' end"):result(10))
    end)

    it("ends every future of 10,000 tasks while workers are killed at random", function()
      local before = fd_count()
      -- Hundreds of deaths a second: past the default restart intensity
      -- (10 in 5 s), which would break the pool; this one must keep going.
      local pool = par.pool{kind = "processes", workers = 3, max_restarts = 1000, restart_window = 1}
      -- Done callbacks tell the killer which processes are working; it
      -- kills one of them every few milliseconds with SIGKILL.
      local live, seen, stop = {}, {}, false
      local killer = par.thread(function()
        local n = 0
        while not stop do
          par.sleep(0.002 + math.random() * 0.006)
          local list = {}
          for p in pairs(live) do list[#list + 1] = p end
          if #list > 0 then
            local p = list[math.random(#list)]
            live[p] = nil
            if is_my_child(p) and c_kill(p, 9) == 0 then n = n + 1 end
          end
        end
        return n
      end)
      killer:start()
      local task = fn [[function(i)
        if i % 97 == 0 then os.exit(1) end
        local t0 = par.clock()
        while par.clock() - t0 < 0.0003 do end   -- a little work, so that kills land mid-task
        return par.pid(), i
      end]]
      local function learn(f)
        local ok, pid = pcall(f.result, f)
        if ok then
          live[pid] = true
          seen[pid] = true
        end
      end
      local N = 10000
      local fs = {}
      for i = 1, N do
        fs[i] = pool:submit(task, i)
        fs[i]:add_done_callback(learn)
      end
      local ok, failed = 0, 0
      for i, f in ipairs(fs) do
        local good, pid, j = pcall(f.result, f, 120)
        if good then
          ok = ok + 1
          assert.equal(i, j)
        else
          assert.equal("BrokenPool", pid.kind, tostring(pid))
          assert.matches("worker process", pid.message)
          failed = failed + 1
        end
      end
      stop = true
      local kills = killer:result()
      assert.equal(N, ok + failed)
      assert.is_true(kills >= 10, "only " .. kills .. " kills")
      assert.is_true(failed >= N // 97)
      assert.is_true(ok > N // 2, ok .. " tasks succeeded")
      pool:shutdown()
      -- every process is reaped: none is our child any more
      for pid in pairs(seen) do assert.is_nil(child_state(pid), "worker " .. pid .. " is left") end
      no_zombies()
      assert.equal(before, fd_count())
    end)

    it("does not deadlock when big tasks and big results cross in a worker's pipeline", function()
      -- Short tasks make the worker keep several tasks in flight; then it
      -- writes a big task while its process writes a big result.
      local pool = par.pool{kind = "processes", workers = 1}
      local echo = fn "function(s) return s end"
      local problem
      for _, size in ipairs{300000, 500000, 800000, 300000} do
        for _ = 1, 3 do
          local fs = {}
          for i = 1, 50 do fs[i] = pool:submit(echo, i) end
          for _, f in ipairs(fs) do f:result(10) end
        end
        local big = string.rep("x", size)
        local fs = {}
        for i = 1, 30 do fs[#fs + 1] = pool:submit(echo, i) end
        for _ = 1, 6 do fs[#fs + 1] = pool:submit(echo, big) end
        for i, f in ipairs(fs) do
          local good, v = pcall(f.result, f, 15)
          if not good or v ~= (i <= 30 and i or big) then
            problem = ("size %d, task %d: %s"):format(size, i, tostring(v):sub(1, 100))
            break
          end
        end
        if problem then break end
      end
      pool:shutdown{interrupt = problem ~= nil}
      assert.is_nil(problem)
    end)

    it("replaces a worker killed while idle, reaping it at once, and the next task runs", function()
      local pool <close> = par.pool{kind = "processes", workers = 1}
      local pid = pool:submit(fn "function() return par.pid() end"):result(10)
      assert.equal(0, c_kill(pid, 9))
      -- no task comes, yet it is reaped (not left a zombie until one does)
      local t0 = par.clock()
      while child_state(pid) ~= nil and par.clock() - t0 < 10 do par.sleep(0.02) end
      assert.is_nil(child_state(pid), "the killed worker is left a zombie")
      -- it held no task: the next one runs in a fresh process
      local pid2 = pool:submit(fn "function() return par.pid() end"):result(10)
      assert.are_not.equal(pid, pid2)
      assert.equal(0, pool:stats().failed)
    end)

    it("lets a worker whose init failed close its state and leave by itself", function()
      local r, w = par.pipe(false)
      local init = fn([[function(w)
        return function()
          -- anchored: only closing the state runs the finalizer
          package.loaded.guard = setmetatable({}, {__gc = function() w:send("state closed") end})
          error("no init")
        end
      end]])(w)
      local pool = par.pool{kind = "processes", workers = 1, init = init}
      local f = pool:submit(fn "function() return 1 end")
      assert.equal("BrokenPool", errof(f.result, f, 10).kind)
      -- not killed: its state is closed, so its finalizers run
      assert.equal("state closed", r:recv(10))
      pool:shutdown()
      r:close()
      w:close()
    end)

    it("runs a done callback that starts and joins a process", function()
      local out, status = lua_cmd_timeout(30, [[
        local par = require "parlua"
        local pool = par.pool{kind = "processes", workers = 1}
        local done = par.event()
        local code
        pool:submit(function() return 1 end):add_done_callback(function()
          local p = par.process(function() os.exit(7) end)
          p:start()
          p:join(10)
          code = p.exitcode
          done:set()
        end)
        print(done:wait(10), code)
        pool:shutdown()
      ]])
      assert.equal(0, status, out)
      assert.equal("true\t7\n", out)
    end)

    it("cannot be crashed by a process that shrinks a queue's shared page", function()
      local out, status = lua_cmd_timeout(30, [[
        local par = require "parlua"
        local q = par.queue()
        local p = par.process(function(q)
          local ffi = require "parlua.ffi"
          local ftruncate = ffi.open():fn("int ftruncate(int, long)")
          local fds = io.popen("ls -l /proc/" .. par.pid() .. "/fd"):read("a")
          local n = 0
          for fd in fds:gmatch("(%d+) %-> /memfd:parlua%-queue") do
            if ftruncate(tonumber(fd), 0) == 0 then n = n + 1 end
          end
          q:put(n)
        end, q)
        p:start()
        print("shrunk", q:get(10))
        p:join(10)
        q:put("still works")
        print(q:qsize(), q:get(1))
      ]])
      assert.equal(0, status, out)
      assert.equal("shrunk\t0\n1\tstill works\n", out)
    end)

    it("leaves no zombie and no descriptor after pools, processes and pipes", function()
      local before = fd_count()
      for _ = 1, 3 do
        local pool = par.pool{kind = "processes", workers = 2, max_tasks_per_worker = 2}
        pool:map(fn "function(x) return x end", range(10))
        local a, b = par.pipe()
        local q = par.queue()
        pool:submit(fn "function(c, q) c:send('hi'); q:put(1) end", b, q):result(10)
        assert.equal("hi", a:recv(10))
        assert.equal(1, q:get(10))
        local p = par.process(fn "function(c) c:send(par.pid()) end", b)
        p:start()
        assert.equal(p.pid, a:recv(10))
        assert.is_true(p:join(10))
        pool:shutdown()
        a:close()
        b:close()
      end
      no_zombies()
      assert.equal(before, fd_count())
    end)

    it("terminate_workers and kill_workers stop every worker at once, cancelling the queue", function()
      for _, how in ipairs{{"terminate_workers", -15}, {"kill_workers", -9}} do
        local pool = par.pool{kind = "processes", workers = 2}
        local running = {}
        for i = 1, 2 do running[i] = pool:submit(fn "function() while true do end end") end
        local queued = pool:submit(fn "function() return 1 end")
        while not (running[1]:running() and running[2]:running()) do par.sleep(0.01) end
        par.sleep(0.2)  -- the tasks have reached their workers
        local t0 = par.clock()
        pool[how[1]](pool)
        assert.is_true(par.clock() - t0 < 10, how[1] .. " took too long")
        for i = 1, 2 do
          local err = errof(running[i].result, running[i], 10)
          assert.equal("Cancelled", err.kind)
          assert.equal(how[2], err.exitcode, how[1])
        end
        assert.is_true(queued:cancelled())
        assert.equal("Shutdown", errof(pool.submit, pool, fn "function() end").kind)
      end
      assert.matches("kill_workers applies to kind processes", errof(function() par.pool{}:kill_workers() end))
      no_zombies()
    end)

    it("stops replacing workers that die more than max_restarts times within restart_window", function()
      local pool <close> = par.pool{kind = "processes", workers = 2, max_restarts = 3, restart_window = 30}
      local fs = {}
      for i = 1, 10 do fs[i] = pool:submit(fn "function() os.exit(1) end") end
      local broken = 0
      for i = 1, 10 do
        local err = errof(fs[i].result, fs[i], 30)
        assert.equal("BrokenPool", err.kind)
        if err.message:find("died 4 times within 30 s %(max_restarts = 3, restart_window = 30%): "
            .. "the pool stopped replacing them; the last one %(pid %d+%) died while running the task "
            .. "%(exited with code 1%)") then
          broken = broken + 1
        end
      end
      assert.is_true(broken >= 5, broken .. " futures said why the pool broke")
      local err = errof(pool.submit, pool, fn "function() return 1 end")
      assert.matches("the pool is broken: worker processes died 4 times", tostring(err))
    end)

    it("keeps replacing workers whose deaths are spread wider than restart_window", function()
      local pool <close> = par.pool{kind = "processes", workers = 1, max_restarts = 1, restart_window = 0.2}
      for _ = 1, 3 do
        local f = pool:submit(fn "function() os.exit(1) end")
        assert.equal("BrokenPool", errof(f.result, f, 30).kind)
        par.sleep(0.5)
      end
      assert.equal(3, pool:submit(fn "function() return 3 end"):result(30))
    end)

    it("refuses bad max_restarts and restart_window", function()
      assert.matches("field 'max_restarts' must be an integer from 0 to 1000",
        errof(par.pool, {kind = "processes", max_restarts = -1}))
      assert.matches("field 'restart_window' must be a positive number",
        errof(par.pool, {kind = "processes", restart_window = 0}))
      assert.matches("max_restarts applies to kind processes", errof(par.pool, {max_restarts = 2}))
    end)

    it("kills a worker that claims an 8 GB message and then says nothing", function()
      local pool <close> = par.pool{kind = "processes", workers = 1, message_timeout = 0.5}
      local f = pool:submit(fn [[function()
        local ffi = require "parlua.ffi"
        local write = ffi.open():fn("long write(int, const char *, size_t)")
        local header = "pl" .. string.char(6, 0) .. string.pack("<I4I8", 0, 8 << 30)
        for fd = 3, 64 do write(fd, header, #header) end
        while true do par.sleep(1) end
      end]])
      local t0 = par.clock()
      local err = errof(f.result, f, 30)
      assert.equal("BrokenPool", err.kind)
      assert.matches("stopped in the middle of a message %(16 of 8589934608 bytes came, then nothing for 0.5 s: "
        .. "message_timeout%) and was killed", err.message)
      assert.is_true(par.clock() - t0 < 20)
      assert.equal(5, pool:submit(fn "function() return 5 end"):result(30))
    end)

    it("reports a worker killed in the middle of sending its result as killed, not malformed", function()
      local pool <close> = par.pool{kind = "processes", workers = 1}
      local f = pool:submit(fn [[function()
        local ffi = require "parlua.ffi"
        local C = ffi.open()
        local write = C:fn("long write(int, const char *, size_t)")
        local kill, getpid = C:fn("int kill(int, int)"), C:fn("int getpid(void)")
        -- the first 64 KiB of a 300 MB result, then SIGKILL
        local header = "pl" .. string.char(6, 0) .. string.pack("<I4I8", 0, 300 * 1000 * 1000)
        local part = string.rep("x", 65536)
        for fd = 3, 64 do
          if write(fd, header, #header) == #header then write(fd, part, #part) end
        end
        kill(getpid(), 9)
      end]])
      local err = errof(f.result, f, 30)
      assert.equal("BrokenPool", err.kind)
      assert.equal(-9, err.exitcode)
      assert.matches("died while sending a message %(killed by signal 9", err.message)
      assert.equal(6, pool:submit(fn "function() return 6 end"):result(30))
    end)

    it("kills a worker whose start-up outlasts start_timeout (an init that never returns)", function()
      local t0 = par.clock()
      -- 1 s: room for a sanitizer build to make the worker's state first
      local pool = par.pool{kind = "processes", workers = 1, start_timeout = 1,
        init = fn "function() while true do par.sleep(1) end end"}
      local f = pool:submit(fn "function() return 1 end")
      local err = errof(f.result, f, 30)
      assert.equal("BrokenPool", err.kind)
      assert.matches("a worker process did not finish init within 1 s %(start_timeout%) 3 times in a row "
        .. "%(the last one, pid %d+, was killed%)", err.message)
      assert.matches("the pool is broken: a worker process did not finish init",
        errof(pool.submit, pool, fn "function() end").message)
      pool:shutdown()
      assert.is_true(par.clock() - t0 < 10)  -- three deadlines, not the default 60 s each
    end)

    it("refuses a bad start_timeout", function()
      assert.matches("field 'start_timeout' must be a positive number",
        errof(par.pool, {kind = "processes", start_timeout = 0}))
      assert.matches("start_timeout applies to kind processes",
        errof(par.pool, {kind = "states", start_timeout = 1}))
    end)

    it("refuses a bad message_timeout", function()
      assert.matches("field 'message_timeout' must be a positive number",
        errof(par.pool, {kind = "processes", message_timeout = 0}))
      assert.matches("field 'message_timeout' must be a non%-negative number",
        errof(par.pool, {kind = "processes", message_timeout = "soon"}))
      assert.matches("message_timeout applies to kind processes",
        errof(par.pool, {kind = "states", message_timeout = 1}))
    end)

    it("kills a worker that sends a malformed or cut message, and keeps serving", function()
      local pool <close> = par.pool{kind = "processes", workers = 1}
      -- the task writes garbage on every descriptor it has above 2: its socket
      local f = pool:submit(fn [[function()
        local ffi = require "parlua.ffi"
        local write = ffi.open():fn("long write(int, const char *, size_t)")
        for fd = 3, 64 do write(fd, "garbage that is not a frame", 27) end
        par.sleep(10)
      end]])
      local err = errof(f.result, f, 10)
      assert.equal("BrokenPool", err.kind)
      assert.matches("sent a malformed message and was killed", err.message)
      -- a header that promises more than comes before the process exits
      local g = pool:submit(fn [[function()
        local ffi = require "parlua.ffi"
        local write = ffi.open():fn("long write(int, const char *, size_t)")
        local header = "pl" .. string.char(5, 0) .. string.pack("<I4I8", 0, 1000)
        for fd = 3, 64 do write(fd, header, #header) end
        os.exit(0)
      end]])
      err = errof(g.result, g, 10)
      assert.equal("BrokenPool", err.kind)
      assert.equal(4, pool:submit(fn "function() return 4 end"):result(10))
    end)

    it("interrupts running tasks: SIGTERM, then SIGKILL after the grace period", function()
      local pool = par.pool{kind = "processes", workers = 2}
      local q = par.queue()
      local plain = pool:submit(fn "function(q) q:put(1) par.sleep(30) end", q)
      local stubborn = pool:submit(fn [[function(q)
        local ffi = require "parlua.ffi"
        ffi.open():fn("int sigignore(int)")(15)   -- SIGTERM has no effect now
        q:put(2)
        par.sleep(30)
      end]], q)
      q:get(10)
      q:get(10)
      local t0 = par.clock()
      pool:shutdown{interrupt = true}
      local took = par.clock() - t0
      local e1, e2 = errof(plain.result, plain, 10), errof(stubborn.result, stubborn, 10)
      assert.equal("Cancelled", e1.kind)
      assert.equal(-15, e1.exitcode)
      assert.equal("Cancelled", e2.kind)
      assert.equal(-9, e2.exitcode)
      assert.is_true(took >= 0.9 and took < 5, "took " .. took)
      no_zombies()
    end)

    it("forks safely while a threads pool and other threads run", function()
      local tpool <close> = par.pool{kind = "threads", workers = 3}
      local stop = false
      local busy = {}
      for i = 1, 3 do
        busy[i] = tpool:submit(function()
          local n = 0
          while not stop do
            local t = {}
            for k = 1, 100 do t[k] = tostring(k) end   -- allocating, so malloc is busy
            io.stderr:write("")                        -- and stdio
            n = n + 1
            if n % 50 == 0 then par.sleep(0) end
          end
          return n
        end)
      end
      local pool <close> = par.pool{kind = "processes", workers = 2, max_tasks_per_worker = 1}
      for i = 1, 40 do
        assert.equal(i + 1, pool:submit(fn "function(x) return x + 1 end", i):result(20))
      end
      stop = true
      for _, f in ipairs(busy) do assert.is_true(f:result(20) > 0) end
    end)
  end)
end)

describe("par.process", function()
  it("runs a function in a child process", function()
    local a, b = par.pipe()
    local p = par.process(fn "function(c, x, y) c:send(x + y) end", b, 2, 3)
    assert.is_nil(p.pid)
    assert.is_nil(p.exitcode)
    assert.is_false(p:is_alive())
    assert.matches("^Process%-%d+$", p.name)
    assert.equal(p, p:start())
    assert.is_number(p.pid)
    assert.equal(5, a:recv(10))
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    assert.is_false(p:is_alive())
    assert.matches("a process can only be started once", errof(p.start, p))
    assert.matches("stopped, exitcode=0", tostring(p))
  end)

  it("takes the table form, and gives exit codes", function()
    local p = par.process{target = fn "function(n) os.exit(n) end", args = {4}, name = "four"}
    assert.equal("four", p.name)
    p:start()
    assert.is_true(p:join(10))
    assert.equal(4, p.exitcode)
    local p2 = par.process(fn "function() os.exit(true) end")
    p2:start()
    p2:join(10)
    assert.equal(0, p2.exitcode)
    assert.matches("unknown option 'targt'", errof(par.process, {targt = print}))
    assert.matches("field 'target' must be a function", errof(par.process, {}))
    assert.matches("bad argument #1 to .*process' %(function expected", errof(par.process, 42))
  end)

  it("times out join, and terminate/kill give negative exit codes", function()
    local p = par.process(fn "function() par.sleep(30) end")
    p:start()
    local t0 = par.clock()
    assert.is_false(p:join(0.2))
    assert.is_true(par.clock() - t0 >= 0.15)
    assert.is_true(p:is_alive())
    assert.is_nil(p.exitcode)
    p:terminate()
    assert.is_true(p:join(10))
    assert.equal(-15, p.exitcode)
    local p2 = par.process(fn "function() par.sleep(30) end")
    p2:start()
    p2:kill()
    assert.is_true(p2:join(10))
    assert.equal(-9, p2.exitcode)
    p2:kill()  -- a process that has ended is left alone
    assert.matches("cannot join a process before it is started", errof(par.process(print).join, par.process(print)))
  end)

  it("prints an uncaught error with its traceback and exits 1", function()
    local out, status = support.lua_cmd([[
      local par = require "parlua"
      local p = par.process(function() local function f() error("child failed") end f() end)
      p:start()
      p:join()
      print("exitcode", p.exitcode)
    ]])
    assert.equal(0, status, out)
    assert.matches("Process Process%-1:\n", out)
    assert.matches("child failed", out)
    assert.matches("stack traceback:", out)
    assert.matches("in local 'f'", out)
    assert.matches("exitcode\t1\n", out)
  end)

  it("works from the tutorial's local function, which pickle refuses", function()
    local function calc_parallel(values)
      local function calc(value) return value ^ 2 end
      local pool <close> = par.pool{kind = "processes", workers = 2}
      return pool:map(calc, values)
    end
    assert.same({0.0, 1.0, 4.0, 9.0}, calc_parallel({0, 1, 2, 3}))
  end)

  it("keeps no descriptor of the parent it was not given", function()
    local r, w = par.pipe(false)
    local p = par.process(fn "function() par.sleep(3) end")
    p:start()
    w:close()  -- the child has no copy of w: r sees the end at once
    local t0 = par.clock()
    local err = errof(r.recv, r, 2)
    assert.equal("Shutdown", err.kind)
    assert.is_true(par.clock() - t0 < 1)
    p:kill()
    p:join(10)
  end)

  it("starts once when several threads start it at the same time", function()
    local p = par.process(fn "function() par.sleep(0.2) end")
    local ts = {}
    for i = 1, 4 do ts[i] = support.go(function() return pcall(p.start, p) end) end
    local started, refused = 0, 0
    for i = 1, 4 do
      local ok, err = ts[i]:result()
      if ok then
        started = started + 1
      else
        refused = refused + 1
        assert.matches("a process can only be started once", err)
      end
    end
    assert.equal(1, started)
    assert.equal(3, refused)
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    no_zombies()   -- a second process started and never reaped would be one
  end)

  it("refuses a lock among its arguments at start", function()
    local p = par.process(fn "function(l) end", par.lock())
    local err = errof(p.start, p)
    assert.equal("Transfer", err.kind)
    assert.equal("argument 1: cannot send a lock to another process", err.message)
    assert.is_nil(p.pid)
  end)

  it("waits for processes when the runtime closes, and terminates daemons", function()
    local out, status = support.lua_cmd([[
      local par = require "parlua"
      local p = par.process(function() par.sleep(0.3) print("child done") end)
      p:start()
      local d = par.process{target = function() par.sleep(30) print("daemon done") end, daemon = true}
      d:start()
      print("parent done")
    ]])
    assert.equal(0, status, out)
    assert.equal("parent done\nchild done\n", out)
  end)
end)

describe("par.pipe", function()
  it("sends values both ways between threads, with timeouts", function()
    local a, b = par.pipe()
    local t = support.go(function()
      local v = b:recv(10)
      b:send({echo = v, n = #v})
      return b:recv(10)
    end)
    a:send("hello")
    local r = a:recv(10)
    assert.equal("hello", r.echo)
    assert.equal(5, r.n)
    assert.is_false(a:poll())
    assert.is_false(a:poll(0.05))
    local t0 = par.clock()
    local err = errof(a.recv, a, 0.1)
    assert.equal("Timeout", err.kind)
    assert.is_true(par.clock() - t0 >= 0.09)
    a:send(nil)
    assert.is_true(t:join(10))
    assert.is_nil(t:result())
    -- one-way ends
    local r1, w1 = par.pipe(false)
    assert.is_true(r1.readable)
    assert.is_false(r1.writable)
    assert.matches("only receives", errof(r1.send, r1, 1))
    assert.matches("only sends", errof(w1.recv, w1))
    w1:send({1, 2, 3})
    assert.is_true(r1:poll(1))
    assert.same({1, 2, 3}, r1:recv(1))
    assert.is_number(r1:fileno())
  end)

  it("wakes a blocked recv when cancelled, and reports the other end closing", function()
    local a, b = par.pipe()
    local t = support.go(function() return a:recv() end)
    par.sleep(0.1)
    t:cancel{force = true}
    assert.is_true(t:join(5))
    assert.equal("Cancelled", errof(t.result, t).kind)
    b:close()
    assert.is_true(b.closed)
    assert.matches("attempt to use a closed pipe connection", errof(b.send, b, 1))
    local err = errof(a.recv, a, 5)
    assert.equal("Shutdown", err.kind)
    assert.equal("recv on a pipe whose other end is closed", err.message)
    assert.is_true(a:poll(1))
    err = errof(a.send, a, 1)
    assert.equal("OSError", err.kind)
  end)

  it("refuses a frame that carries more descriptors than it says", function()
    if string.packsize("T") ~= 8 then return pending("the msghdr layout below is LP64") end
    local c_read = libc:fn("long read(int, void *, size_t)")
    local c_sendmsg = libc:fn("long sendmsg(int, void *, int)")
    local a, b = par.pipe()
    a:send("hello")
    local raw = ffi.buffer(4096)
    local n = c_read(b:fileno(), raw, 4096)   -- a well-formed frame, taken off the wire
    assert.is_true(n > 16)
    -- sent again with a descriptor its header does not announce
    local data = ffi.buffer(n)
    data:write(0, raw:read(0, n))
    local iov = ffi.buffer(16)
    iov:set("void *", 0, data:ptr())
    iov:set("size_t", 8, n)
    local ctl = ffi.buffer(24)
    ctl:set("size_t", 0, 20)   -- CMSG_LEN(sizeof(int))
    ctl:set("int", 8, 1)       -- SOL_SOCKET
    ctl:set("int", 12, 1)      -- SCM_RIGHTS
    ctl:set("int", 16, 0)      -- our stdin
    local mh = ffi.buffer(56)
    mh:set("void *", 16, iov:ptr())
    mh:set("size_t", 24, 1)
    mh:set("void *", 32, ctl:ptr())
    mh:set("size_t", 40, 24)
    assert.equal(n, c_sendmsg(a:fileno(), mh, 0))
    local err = errof(b.recv, b, 5)
    assert.equal("Transfer", err.kind)
    assert.matches("malformed message", err.message)
    a:close()
    b:close()
  end)

  it("refuses a lock even between threads, naming it", function()
    local a, b = par.pipe()
    local err = errof(a.send, a, {par.lock()})
    assert.equal("Transfer", err.kind)
    assert.equal("pipe message: [1]: cannot send a lock to another process", err.message)
    assert.is_false(b:poll())
  end)

  it("connects states and processes", function()
    local a, b = par.pipe()
    local spool <close> = par.pool{kind = "states", workers = 1}
    local f = spool:submit(fn "function(c) c:send('from a state'); return c:recv(10) end", b)
    assert.equal("from a state", a:recv(10))
    a:send("to a state")
    assert.equal("to a state", f:result(10))
    -- a pipe made after the pool's processes started reaches them too
    local pool <close> = par.pool{kind = "processes", workers = 1}
    pool:submit(fn "function() end"):result(10)
    local c, d = par.pipe()
    local g = pool:submit(fn "function(c) c:send(par.pid()); return c:recv(10) * 2 end", d)
    local pid = c:recv(10)
    assert.are_not.equal(par.pid(), pid)
    c:send(21)
    assert.equal(42, g:result(10))
    -- an end sent through a pipe to a process
    local e1, e2 = par.pipe()
    local p = par.process(fn "function(ctl) local ch = ctl:recv(10); ch:send('via a pipe') end", a)
    p:start()
    b:send(e2)
    assert.equal("via a pipe", e1:recv(10))
    assert.is_true(p:join(10))
  end)
end)

describe("queues across processes", function()
  it("passes items both ways between a parent and a process", function()
    local q_in, q_out = par.queue(), par.queue()
    q_in:put("before")  -- items already queued move along
    local p = par.process(fn [[function(qi, qo)
      while true do
        local v = qi:get(10)
        if v == "stop" then break end
        qo:put({got = v})
        qi:task_done()
      end
      qi:task_done()
    end]], q_in, q_out)
    p:start()
    assert.equal("before", q_out:get(10).got)
    for i = 1, 20 do q_in:put(i) end
    for i = 1, 20 do assert.equal(i, q_out:get(10).got) end
    q_in:put("stop")
    assert.is_true(q_in:join(10))
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    assert.equal(0, q_out:qsize())
    assert.is_true(q_out:empty())
    local err = errof(q_out.get, q_out, 0.1)
    assert.equal("Timeout", err.kind)
    assert.equal("queue is empty (waited 0.1 seconds)", err.message)
  end)

  it("works with a processes pool, bounded, with big items and close", function()
    local q = par.queue(2)
    local pool <close> = par.pool{kind = "processes", workers = 2}
    local f = pool:submit(fn [[function(q)
      for i = 1, 5 do q:put(i) end
      q:put(string.rep("x", 300000))
      return q:full()
    end]], q)
    par.sleep(0.2)
    assert.is_true(q:full())
    local got = {}
    for i = 1, 5 do got[i] = q:get(10) end
    assert.same({1, 2, 3, 4, 5}, got)
    assert.equal(300000, #q:get(10))
    f:result(10)
    q:close()
    assert.is_true(q:is_closed())
    assert.equal("Shutdown", errof(q.put, q, 1).kind)
    assert.equal("get on a closed and empty queue", errof(q.get, q, 1).message)
    -- a lock cannot go in once the queue crosses processes
    local q2 = par.queue()
    pool:submit(fn "function(q) q:put('x') end", q2):result(10)
    assert.equal("queue item: cannot send a lock to another process", errof(q2.put, q2, par.lock()).message)
    assert.equal("x", q2:get(1))
  end)

  -- pl_pchan_get/put took a cancelled wait for "look again" (the cancel
  -- code was positive): the thread spun until its deadline.
  it("a force-cancelled thread blocked in get() or put() dies of Cancelled", function()
    local q, full = par.queue(), par.queue(1)
    local p = par.process(fn "function(q, full) full:put('x') end", q, full)
    p:start()
    assert.is_true(p:join(10))
    assert.is_true(full:full())
    local getter = support.go(function() return q:get() end)
    local putter = support.go(function() full:put("y") end)
    par.sleep(0.1)
    getter:cancel{force = true}
    putter:cancel{force = true}
    assert.is_true(getter:join(5))
    assert.is_true(putter:join(5))
    assert.equal("Cancelled", errof(getter.result, getter).kind)
    assert.equal("Cancelled", errof(putter.result, putter).kind)
    assert.equal("x", full:get(1))
    assert.equal(0, full:qsize())
  end)

  it("refuses to send a queue holding a lock", function()
    local q = par.queue()
    q:put(par.lock())
    local p = par.process(fn "function(q) end", q)
    assert.equal("queue item 1: cannot send a lock to another process", errof(p.start, p).message)
  end)
end)

describe("Ctrl-C", function()
  local PROG = support.build_dir() .. "/parlua"
  it("stops the workers and exits 130", function()
    if not sh("command -v setsid"):match("setsid") then return pending("setsid is not installed") end
    local out = os.tmpname()
    local script = os.tmpname()
    local f = io.open(script, "w")
    f:write([[
      local par = require "parlua"
      local pool = par.pool{kind = "processes", workers = 2}
      local fs = {}
      for i = 1, 2 do fs[i] = pool:submit(function() par.sleep(60) end) end
      local p = par.process(function() par.sleep(60) end)
      p:start()
      par.sleep(0.5)
      print("ready") io.stdout:flush()
      fs[1]:result()
    ]])
    f:close()
    local res = sh(table.concat({
      "setsid " .. PROG .. " " .. script .. " > " .. out .. " 2>&1 & pid=$!",
      "( sleep 30; kill -9 -$pid ) > /dev/null 2>&1 & dog=$!",
      "i=0; while [ $i -lt 400 ] && ! grep -q ready " .. out .. "; do sleep 0.05; i=$((i+1)); done",
      "t0=$(date +%s%N)",
      "kill -INT -$pid",
      "wait $pid; status=$?",
      "t1=$(date +%s%N)",
      "sleep 0.3",
      "left=$(ps -g $pid -o pid= | wc -l)",
      "kill $dog 2>/dev/null",
      "echo $status $(( (t1 - t0) / 1000000 )) $left",
    }, "\n"))
    os.remove(script)
    local text = io.open(out):read("a")
    os.remove(out)
    local status, ms, left = res:match("(%d+) (%d+) (%d+)%s*$")
    assert.equal("130", status, res .. text)
    assert.is_true(tonumber(ms) < 5000, res)
    assert.equal("0", left, res)
    assert.matches("interrupted", text)
  end)
end)
