-- par.pool, kind threads: submit, map, starmap, imap, imap_unordered,
-- shutdown, stats, and no future ever lost.
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local lua_cmd, errof = support.lua_cmd, support.errof

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

describe("par.pool", function()
  it("makes a pool of kind threads with cpu_count workers by default", function()
    local pool = par.pool()
    local st = pool:stats()
    assert.equal(par.cpu_count(), st.workers)
    assert.equal("threads", st.kind)
    assert.equal(0, st.alive)  -- workers start lazily
    assert.matches("^Pool%(Pool%-%d+, kind=threads, workers=%d+%)$", tostring(pool))
    pool:shutdown()
    assert.matches("shut down", tostring(pool))
  end)

  it("rejects bad options with clear messages", function()
    for _, w in ipairs{0, -1, 2.5, "four"} do
      assert.matches("bad argument #1 to '[%w.]*pool' %(field 'workers' must be a positive integer%)",
        errof(par.pool, {workers = w}))
    end
    assert.equal("unknown kind 'gpu' (expected threads, states, processes or mpi)",
      errof(par.pool, {kind = "gpu"}))
    assert.matches("field 'kind' must be a string", errof(par.pool, {kind = 1}))
    local processes = par.pool{kind = "processes", workers = 1}  -- available now
    assert.equal("processes", processes:stats().kind)
    processes:shutdown()
    assert.matches("unknown option 'wokers'", errof(par.pool, {wokers = 2}))
    assert.equal("max_tasks_per_worker applies to kinds states, processes and mpi",
      errof(par.pool, {max_tasks_per_worker = 10}))
    assert.matches("field 'max_tasks_per_worker' must be a positive integer",
      errof(par.pool, {max_tasks_per_worker = 0}))
    assert.matches("field 'init' must be a function", errof(par.pool, {init = 5}))
    assert.matches("bad argument #1 to '[%w.]*pool' %(table expected, got number%)", errof(par.pool, 4))
  end)
end)

describe("pool:submit", function()
  local pool
  before_each(function() pool = par.pool{workers = 4} end)
  after_each(function() pool:shutdown{cancel_futures = true, interrupt = true} end)

  it("runs fn(...) in a worker and keeps every return value", function()
    local f = pool:submit(function(a, b) return a + b, par.current_thread(), nil end, 1, 2)
    local r = table.pack(f:result())
    assert.equal(3, r.n)
    assert.equal(3, r[1])
    assert.matches("^Pool%-%d+%-Worker%-1$", r[2])
    assert.is_nil(r[3])
  end)

  it("shares the state: tables cross by reference", function()
    local t = {}
    local f = pool:submit(function(x) x.seen = true return x end, t)
    assert.equal(t, f:result())
    assert.is_true(t.seen)
  end)

  it("accepts a callable table", function()
    local callable = setmetatable({}, {__call = function(_, x) return x * 2 end})
    assert.equal(8, pool:submit(callable, 4):result())
  end)

  it("rejects a non-function", function()
    assert.matches("bad argument #1 to 'submit' %(function expected, got number%)",
      errof(function() pool:submit(42) end))
    assert.matches("bad argument #1 to 'submit' %(function expected, got no value%)",
      errof(function() pool:submit() end))
  end)

  it("raises a table error unchanged, with the worker traceback", function()
    local e = setmetatable({code = 3}, {__tostring = function() return "custom failure" end})
    local function worker_side_function() error(e) end
    local f = pool:submit(function() worker_side_function() end)
    local got = errof(f.result, f)
    assert.equal(e, got)
    assert.matches("custom failure", f:traceback())
    assert.matches("worker_side_function", f:traceback())
  end)

  it("overlaps sleeping tasks: 20 x 0.1 s on 4 workers in well under 2 s", function()
    local t0 = par.clock()
    local fs = {}
    for i = 1, 20 do fs[i] = pool:submit(function() par.sleep(0.1) return i end) end
    for i = 1, 20 do assert.equal(i, fs[i]:result()) end
    local took = par.clock() - t0
    assert.is_true(took < 1.0, "took " .. took)
  end)

  it("starts workers lazily, up to the maximum", function()
    local p = par.pool{workers = 3}
    assert.equal(0, p:stats().alive)
    p:submit(function() end):result()
    assert.equal(1, p:stats().alive)
    local fs = {}
    for i = 1, 6 do fs[i] = p:submit(par.sleep, 0.05) end
    par.wait(fs)
    assert.equal(3, p:stats().alive)
    p:shutdown()
    assert.equal(0, p:stats().alive)
  end)
end)

describe("pool init", function()
  it("runs once in every worker before its first task", function()
    local inits = {}
    local pool = par.pool{workers = 3, init = function() inits[#inits + 1] = par.current_thread() end}
    local fs = {}
    for i = 1, 9 do fs[i] = pool:submit(function() par.sleep(0.03) return par.current_thread() end) end
    local ran_in = {}
    for i = 1, 9 do ran_in[fs[i]:result()] = true end
    pool:shutdown()
    local started = pool:stats().alive
    assert.equal(0, started)
    local seen = {}
    for _, name in ipairs(inits) do
      assert.is_nil(seen[name], "init ran twice in " .. name)
      seen[name] = true
    end
    for name in pairs(ran_in) do assert.is_true(seen[name], "no init in " .. name) end
    assert.equal(3, #inits)
  end)

  it("an init error breaks the pool: tasks fail with BrokenPool naming it", function()
    local cause = {why = "no database"}
    local function failing_init() error(setmetatable(cause, {__tostring = function() return "db down" end})) end
    local pool = par.pool{workers = 2, init = failing_init}
    local f = pool:submit(function() return "never" end)
    local err = errof(f.result, f)
    assert.equal("BrokenPool", err.kind)
    assert.equal("pool init failed: db down", tostring(err))
    assert.equal(cause, err.cause)
    assert.matches("db down\nstack traceback:", f:traceback())
    par.sleep(0.05)
    local err2 = errof(function() pool:submit(print) end)
    assert.equal("BrokenPool", err2.kind)
    assert.equal("the pool is broken: pool init failed: db down", err2.message)
    pool:shutdown()
    assert.is_true(pool:stats().failed >= 1)
  end)
end)

describe("pool:map", function()
  local pool
  before_each(function() pool = par.pool{workers = 4} end)
  after_each(function() pool:shutdown{cancel_futures = true, interrupt = true} end)

  it("returns the results in input order", function()
    local r = pool:map(function(x) par.sleep(0.001 * (10 - x)) return x * x end, range(10))
    assert.same({1, 4, 9, 16, 25, 36, 49, 64, 81, 100}, r)
    assert.same({}, pool:map(function(x) return x end, {}))
  end)

  it("keeps the first value of each call, nil results as holes", function()
    local r = pool:map(function(x) if x % 2 == 0 then return nil end return x, "extra" end, range(4))
    assert.equal(1, r[1])
    assert.is_nil(r[2])
    assert.equal(3, r[3])
    assert.is_nil(r[4])
  end)

  it("takes an iterator function", function()
    local words = {}
    for _, w in ipairs(pool:map(string.upper, ("a b c"):gmatch("%a"))) do words[#words + 1] = w end
    assert.same({"A", "B", "C"}, words)
    local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
    assert.same({2, 4, 6}, pool:map(function(x) return 2 * x end, co))
  end)

  it("overlaps sleep-bound work: 20 items x 0.1 s on 4 workers in < 1 s", function()
    local t0 = par.clock()
    local r = pool:map(function(x) par.sleep(0.1) return x end, range(20))
    local took = par.clock() - t0
    assert.equal(20, #r)
    assert.is_true(took < 1.0, "took " .. took)
  end)

  it("chunksize sends items in batches with the same results", function()
    local before = pool:stats().submitted
    local r = pool:map(function(x) return x + 1 end, range(10), {chunksize = 4})
    assert.same({2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, r)
    assert.equal(3, pool:stats().submitted - before)
    local s = pool:starmap(function(a, b) return a .. b end, {{"a", 1}, {"b", 2}, {"c", 3}}, {chunksize = 2})
    assert.same({"a1", "b2", "c3"}, s)
  end)

  it("raises the first task error when it is reached and cancels the rest", function()
    local e = {bad = true}
    local p = par.pool{workers = 1}
    local ran = 0
    local t0 = par.clock()
    local err = errof(function()
      p:map(function(x)
        ran = ran + 1
        if x == 2 then error(e) end
        par.sleep(0.01)
        return x
      end, range(50))
    end)
    assert.equal(e, err)
    p:shutdown()
    assert.is_true(par.clock() - t0 < 1.0)
    assert.is_true(ran < 50, "ran " .. ran)
    assert.is_true(p:stats().cancelled > 0)
  end)

  it("times out as a whole with a Timeout error, cancelling the rest", function()
    local p = par.pool{workers = 4}
    local t0 = par.clock()
    local err = errof(function() p:map(par.sleep, {0.05, 5, 5, 5, 5, 5}, {timeout = 0.2}) end)
    assert.equal("Timeout", err.kind)
    assert.matches("map did not finish within 0.2", tostring(err))
    assert.is_true(par.clock() - t0 < 1.5)
    -- item 1 finished and its worker took item 5; item 6 was still queued
    -- and is cancelled; interrupt the four that run
    p:shutdown{interrupt = true}
    local st = p:stats()
    assert.equal(1, st.completed)
    assert.equal(1, st.cancelled)
    assert.equal(4, st.failed)
  end)

  it("rejects bad input with clear messages", function()
    local id = function(x) return x end
    assert.matches("bad argument #2 to 'map' %(table or function expected, got number%)",
      errof(function() pool:map(id, 42) end))
    assert.matches("bad argument #2 to 'map' %(table or function expected, got string%)",
      errof(function() pool:map(id, "abc") end))
    assert.matches("bad argument #1 to 'map' %(function expected, got table%)",
      errof(function() pool:map({}, {}) end))
    assert.matches("field 'timeout' must be a non%-negative number",
      errof(function() pool:map(id, {}, {timeout = -1}) end))
    assert.matches("field 'chunksize' must be a positive integer",
      errof(function() pool:map(id, {}, {chunksize = 0}) end))
    assert.matches("unknown option 'buffersize'",
      errof(function() pool:map(id, {}, {buffersize = 2}) end))
    assert.matches("field 'progress' must be a boolean or a function",
      errof(function() pool:map(id, {}, {progress = "yes"}) end))
    assert.matches("bad argument #2 to 'starmap' %(item 2 is not a table of arguments%)",
      errof(function() pool:starmap(id, {{1}, 2}) end))
  end)

  it("progress is silent when stderr is not a terminal", function()
    local out, status = lua_cmd([[
      local par = require "parlua"
      local pool = par.pool{workers = 2}
      local r = pool:map(function(x) par.sleep(0.01) return x end, {1, 2, 3, 4, 5}, {progress = true})
      print("got", #r)
      pool:shutdown()
    ]])
    assert.equal(0, status, out)
    assert.equal("got\t5\n", out)
  end)

  -- The bar in a real terminal: a tmux pane of `width` columns running
  -- `code`; the pane's text once the program has ended.
  local function in_tmux(width, code)
    local lua = os.getenv("PARLUA_LUA") or "lua5.4"
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(code)
    f:close()
    local server = "parlua-spec-" .. par.pid() .. "-" .. width
    local tmux = ("tmux -L %s -f /dev/null "):format(server)
    local inner = ("LUA_CPATH='%s/?.so;;' %s %s; echo EXIT=$?; sleep 60"):format(support.build_dir(), lua, file)
    assert(os.execute(("%s new-session -d -x %d -y 40 %q"):format(tmux, width, inner)))
    local text = ""
    for _ = 1, 300 do  -- up to 30 s on a loaded machine
      par.sleep(0.1)
      text = io.popen(tmux .. "capture-pane -p -S -100"):read("a")  -- with what scrolled away
      if text:find("EXIT=%d") then break end
    end
    os.execute(tmux .. "kill-server")
    os.remove(file)
    return text
  end

  local bar_script = [[
    local par = require "parlua"
    local pool = par.pool{workers = 2}
    local f = pool:submit(function() par.sleep(0.3) end)
    f:add_done_callback(function() error("a callback fails") end)
    local items = {}
    for i = 1, 20 do items[i] = i end
    local r = pool:map(function(x) par.sleep(0.05) print("task line " .. x) return x end, items, {progress = true})
    print("got " .. #r)
    pool:shutdown()
  ]]

  it("progress fits a 40-column terminal on one line; what tasks print and the runtime's messages stay whole", function()
    if not os.execute("command -v tmux >/dev/null") then return pending("tmux is not installed") end
    local text = in_tmux(40, bar_script)
    assert.matches("EXIT=0", text)
    local bars, printed = {}, {}
    for line in text:gmatch("[^\n]*") do
      if line:find("/20") then bars[#bars + 1] = line end
      if line:find("task line") then
        assert.matches("^task line %d+$", line)  -- no frame of the bar before or after it
        printed[#printed + 1] = line
      end
    end
    assert.equal(20, #printed, text)
    assert.equal(1, #bars, text)  -- every frame drawn over the last, none wrapped
    assert.matches("^100%% 20/20 %[%d%d:%d%d<00:00, [%d.]+it/s%]$", bars[1])  -- no room for a bar: the numbers
    assert.is_true(#bars[1] < 40, bars[1])
    assert.matches("\nan exception in a done callback", "\n" .. text)  -- at the start of a line
    assert.matches("\ngot 20\n", text)
  end)

  it("progress draws a tqdm-like bar with count, elapsed, remaining time and rate in a wide terminal", function()
    if not os.execute("command -v tmux >/dev/null") then return pending("tmux is not installed") end
    local text = in_tmux(100, bar_script)
    local bar = text:match("\n(100%%|[^\n]*)")
    assert.is_truthy(bar, text)
    assert.matches("^100%%|#+| 20/20 %[%d%d:%d%d<00:00, [%d.]+it/s%]$", bar)
    assert.equal(99, #bar)
  end)

  it("progress = function(done, total) is called as items finish, and last with (total, total)", function()
    local pool <close> = par.pool{workers = 2}
    local calls = {}
    local items = {}
    for i = 1, 12 do items[i] = i end
    local r = pool:map(function(x) par.sleep(0.02) return x end, items,
                       {progress = function(done, total) calls[#calls + 1] = {done, total} end})
    assert.equal(12, #r)
    assert.is_true(#calls >= 2, #calls)
    for i, c in ipairs(calls) do
      assert.equal(12, c[2])
      if i > 1 then assert.is_true(c[1] > calls[i - 1][1]) end
    end
    assert.same({12, 12}, calls[#calls])
    local e = errof(function() pool:map(function(x) return x end, items, {progress = function() error("stop") end}) end)
    assert.matches("stop", e)
    assert.matches("field 'progress' must be a boolean or a function",
      errof(function() pool:map(print, {}, {progress = 1}) end))
  end)
end)

describe("pool:starmap", function()
  it("calls fn with each table unpacked, results in order", function()
    local pool = par.pool{workers = 2}
    assert.same({3, 7}, pool:starmap(function(a, b) return a + b end, {{1, 2}, {3, 4}}))
    assert.same({"nil|2"}, pool:starmap(function(a, b) return tostring(a) .. "|" .. b end,
      {table.pack(nil, 2)}))
    pool:shutdown()
  end)
end)

describe("pool:imap", function()
  local pool
  before_each(function() pool = par.pool{workers = 4} end)
  after_each(function() pool:shutdown{cancel_futures = true, interrupt = true} end)

  it("yields position and result in input order", function()
    local got = {}
    for i, r in pool:imap(function(x) par.sleep(0.002 * (6 - x)) return x * 10 end, range(5)) do
      got[#got + 1] = i .. "=" .. r
    end
    assert.same({"1=10", "2=20", "3=30", "4=40", "5=50"}, got)
  end)

  it("delivers chunks item by item", function()
    local got = {}
    for i, r in pool:imap(function(x) return -x end, range(7), {chunksize = 3}) do got[i] = r end
    assert.same({-1, -2, -3, -4, -5, -6, -7}, got)
  end)

  it("reads an endless iterator lazily, at most buffersize items ahead", function()
    local read = 0
    local function naturals() read = read + 1 return read end
    local consumed = 0
    for i, r in pool:imap(function(x) return x * 2 end, naturals, {buffersize = 8}) do
      consumed = consumed + 1
      assert.equal(i * 2, r)
      assert.is_true(read - consumed <= 8, "read " .. read .. " ahead of " .. consumed)
      if i == 100 then break end
    end
    assert.equal(100, consumed)
    assert.is_true(read <= 108)
  end)

  it("keeps memory flat over a long endless run", function()
    local n = 0
    local function endless() n = n + 1 return n end
    local base
    for i in pool:imap(function(x) return {x} end, endless, {chunksize = 4}) do
      if i == 2000 then
        collectgarbage()
        base = collectgarbage("count")
      elseif i == 20000 then
        collectgarbage()
        local grown = collectgarbage("count") - base
        assert.is_true(grown < 512, ("grew %.0f KB"):format(grown))
        break
      end
    end
  end)

  it("raises the first error when reached and cancels the rest", function()
    local e = {}
    local ok, err = pcall(function()
      for i in pool:imap(function(x) if x == 3 then error(e) end return x end, range(100)) do
        assert.is_true(i < 3)
      end
    end)
    assert.is_false(ok)
    assert.equal(e, err)
  end)

  it("imap_unordered yields as tasks finish, with their positions", function()
    local order, seen = {}, {}
    for i, r in pool:imap_unordered(function(x) par.sleep(0.05 * x) return x end, {4, 3, 2, 1}) do
      order[#order + 1] = r
      seen[i] = r
    end
    assert.same({1, 2, 3, 4}, order)
    assert.same({4, 3, 2, 1}, seen)
  end)

  it("imap_unordered reads an endless iterator lazily", function()
    local read = 0
    local count = 0
    for _ in pool:imap_unordered(function(x) return x end, function() read = read + 1 return read end,
                                 {buffersize = 5, chunksize = 2}) do
      count = count + 1
      if count == 50 then break end
    end
    assert.is_true(read <= 50 + 5 + 2, "read " .. read)
  end)

  it("imap timeout raises Timeout", function()
    local err = errof(function()
      for _ in pool:imap(par.sleep, {5}, {timeout = 0.1}) do end
    end)
    assert.equal("Timeout", err.kind)
    assert.matches("imap did not finish within", tostring(err))
  end)

  it("rejects bad options", function()
    local id = function(x) return x end
    assert.matches("field 'buffersize' must be a positive integer",
      errof(function() pool:imap(id, {}, {buffersize = 0}) end))
    assert.matches("unknown option 'progress'",
      errof(function() pool:imap(id, {}, {progress = true}) end))
    assert.matches("bad argument #2 to 'imap_unordered' %(table or function expected, got boolean%)",
      errof(function() pool:imap_unordered(id, true) end))
  end)
end)

describe("pool:shutdown", function()
  it("is idempotent and refuses submits afterwards with a Shutdown error", function()
    local pool = par.pool{workers = 2}
    local f = pool:submit(function() par.sleep(0.05) return 1 end)
    pool:shutdown()
    assert.is_true(f:done())
    pool:shutdown()
    pool:shutdown{wait = false}
    local err = errof(function() pool:submit(print) end)
    assert.equal("Shutdown", err.kind)
    assert.equal("cannot submit after shutdown", err.message)
    -- As luaL_error puts it: where the script called submit.
    assert.equal(debug.getinfo(1, "S").short_src .. ":" .. (debug.getinfo(1, "l").currentline - 4), err.where)
    assert.equal(err.where .. ": cannot submit after shutdown", tostring(err))
    assert.equal("Shutdown", errof(function() pool:map(print, {1}) end).kind)
  end)

  it("without wait returns at once; the tasks still run", function()
    local pool = par.pool{workers = 1}
    local fs = {}
    for i = 1, 3 do fs[i] = pool:submit(function() par.sleep(0.05) return i end) end
    local t0 = par.clock()
    pool:shutdown(false)
    assert.is_true(par.clock() - t0 < 0.04)
    for i = 1, 3 do assert.equal(i, fs[i]:result()) end
  end)

  it("cancel_futures cancels what has not started", function()
    local pool = par.pool{workers = 1}
    local running = pool:submit(function() par.sleep(0.1) return "ran" end)
    while not running:running() do par.sleep(0.001) end
    local queued = {}
    for i = 1, 5 do queued[i] = pool:submit(function() return i end) end
    pool:shutdown{cancel_futures = true}
    assert.equal("ran", running:result())
    for i = 1, 5 do assert.is_true(queued[i]:cancelled()) end
    local st = pool:stats()
    assert.equal(5, st.cancelled)
    assert.equal(1, st.completed)
    assert.equal(0, st.queued)
  end)

  it("interrupt stops an endless loop and a long sleep with Cancelled", function()
    local pool = par.pool{workers = 2}
    local loop = pool:submit(function() while true do end end)
    local sleeper = pool:submit(par.sleep, 30)
    while not (loop:running() and sleeper:running()) do par.sleep(0.001) end
    local t0 = par.clock()
    pool:shutdown{interrupt = true}
    assert.is_true(par.clock() - t0 < 2)
    assert.equal("Cancelled", errof(loop.result, loop).kind)
    assert.equal("Cancelled", errof(sleeper.result, sleeper).kind)
    assert.equal(2, pool:stats().failed)
  end)

  it("interrupt also cancels the queued tasks, cancel_futures or not", function()
    local pool = par.pool{workers = 1}
    local sleeper = pool:submit(par.sleep, 30)
    local after = pool:submit(function() return "after" end)
    while not sleeper:running() do par.sleep(0.001) end
    pool:shutdown{interrupt = true}
    assert.equal("Cancelled", sleeper:exception().kind)
    assert.is_true(after:cancelled())
  end)

  it("from one of the pool's own tasks refuses to wait for itself", function()
    local pool = par.pool{workers = 1}
    local f = pool:submit(function() return pcall(function() pool:shutdown() end) end)
    local ok, err = f:result()
    assert.is_false(ok)
    assert.matches("cannot wait for a pool to shut down from one of its own tasks", err)
    local g = pool:submit(function() pool:shutdown{wait = false} return "ok" end)
    assert.equal("ok", g:result())
    pool:shutdown()
  end)

  it("rejects unknown options", function()
    local pool = par.pool{workers = 1}
    assert.matches("unknown option 'cancel'", errof(function() pool:shutdown{cancel = true} end))
    assert.matches("field 'wait' must be a boolean", errof(function() pool:shutdown{wait = 1} end))
    pool:shutdown()
  end)

  it("runs for a <close> pool at the end of its block", function()
    local f
    do
      local pool <close> = par.pool{workers = 2}
      f = pool:submit(function() par.sleep(0.05) return "closed" end)
    end
    assert.is_true(f:done())
    assert.equal("closed", f:result())
  end)
end)

describe("pool:stats", function()
  it("counts submitted, completed, failed, cancelled, queued and running", function()
    local pool = par.pool{workers = 1}
    local ev = par.event()
    local blocker = pool:submit(function() ev:wait(5) end)
    while not blocker:running() do par.sleep(0.001) end
    local ok = pool:submit(function() return 1 end)
    local bad = pool:submit(function() error("x") end)
    local st = pool:stats()
    assert.equal(3, st.submitted)
    assert.equal(2, st.queued)
    assert.equal(1, st.running)
    assert.equal(1, st.workers)
    assert.equal(1, st.alive)
    ev:set()
    ok:result()
    bad:exception()
    pool:shutdown()
    st = pool:stats()
    assert.equal(2, st.completed)
    assert.equal(1, st.failed)
    assert.equal(0, st.cancelled)
    assert.equal(0, st.queued)
    assert.equal(0, st.running)
  end)
end)

describe("no future is lost", function()
  it("when the pool is collected without shutdown", function()
    local fs = {}
    do
      local pool = par.pool{workers = 2}
      for i = 1, 10 do fs[i] = pool:submit(function() par.sleep(0.02) return i end) end
    end
    collectgarbage()
    collectgarbage()
    for i = 1, 10 do assert.equal(i, fs[i]:result(5)) end
  end)

  it("when the pool and the futures are collected: the tasks still run", function()
    local ran = 0
    do
      local pool = par.pool{workers = 2}
      for _ = 1, 10 do pool:submit(function() par.sleep(0.01) ran = ran + 1 end) end
    end
    collectgarbage()
    collectgarbage()
    local t0 = par.clock()
    while ran < 10 and par.clock() - t0 < 5 do par.sleep(0.01) end
    assert.equal(10, ran)
  end)

  it("when the script ends with tasks queued: they run first", function()
    local out, status = lua_cmd([[
      local par = require "parlua"
      local pool = par.pool{workers = 2}
      for i = 1, 10 do pool:submit(function() par.sleep(0.02) io.write("ran ", i, "\n") io.flush() end) end
      print("script ends")
    ]])
    assert.equal(0, status, out)
    assert.matches("script ends", out)
    local n = 0
    for _ in out:gmatch("ran %d+") do n = n + 1 end
    assert.equal(10, n, out)
  end)

  it("when the script ends after dropping the pool", function()
    local out, status = lua_cmd([[
      local par = require "parlua"
      local pool = par.pool{workers = 1}
      for i = 1, 5 do pool:submit(function() par.sleep(0.02) io.write("ran ", i, "\n") io.flush() end) end
      pool = nil
      collectgarbage()
      collectgarbage()
    ]])
    assert.equal(0, status, out)
    local n = 0
    for _ in out:gmatch("ran %d+") do n = n + 1 end
    assert.equal(5, n, out)
  end)
end)

describe("the parlua program", function()
  it("shows both tracebacks when a script dies of a task error", function()
    local program = os.getenv("PARLUA_LUA") or (support.build_dir() .. "/parlua")
    local out, status = lua_cmd([[
      local par = require "parlua"
      local pool = par.pool{workers = 1}
      local function in_the_worker() error("task blew up") end
      local f = pool:submit(function() in_the_worker() end)
      local function in_the_caller() return f:result() end
      in_the_caller()
    ]], program)
    assert.equal(1, status, out)
    assert.matches("task blew up", out)
    assert.matches("in_the_caller", out)
    assert.matches("%[worker%]", out)
    assert.matches("in_the_worker", out)
  end)
end)
