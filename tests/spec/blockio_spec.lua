-- Lua's io and os functions let the global lock go while they wait (issue
-- #14), and behave exactly as stock Lua 5.4's.  The C modules' side
-- (luasocket) is in net_spec.lua.  Every timing has a wide margin: the
-- machine is shared.
local par = require "parlua"
local support = dofile("tests/spec/support.lua")

-- Run fn while a par.thread ticks every 10 ms; the elapsed time, and how
-- many ticks happened meanwhile (about elapsed / 0.01 when the lock was
-- free, 0 or 1 when fn kept it).
local function ticking(fn)
  local stop, ticks = false, 0
  local t = par.thread(function()
    while not stop do
      ticks = ticks + 1
      par.sleep(0.01)
    end
  end)
  t:start()
  par.sleep(0.03)  -- the ticker is under way
  local before = ticks
  local t0 = par.clock()
  local results = table.pack(fn())
  local elapsed = par.clock() - t0
  local during = ticks - before
  stop = true
  t:join()
  return elapsed, during, table.unpack(results, 1, results.n)
end

-- fn takes about 0.3 s; the ticker must have run through most of it.
local function assert_ticks_through(fn)
  local elapsed, during = ticking(fn)
  assert.is_true(elapsed > 0.25, ("took %.3f s"):format(elapsed))
  assert.is_true(during >= 10, ("%d ticks in %.3f s"):format(during, elapsed))
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir " .. d))
  return d
end

describe("a ticker keeps ticking through", function()
  it("os.execute", function()
    assert_ticks_through(function() assert(os.execute("sleep 0.3")) end)
  end)

  it("io.popen and reading all of the pipe", function()
    assert_ticks_through(function()
      local p = io.popen("sleep 0.3; echo hi")
      assert.equal("hi\n", p:read("a"))
      assert(p:close())
    end)
  end)

  it("the lines of a slow pipe, and the numbers and counts read from it", function()
    assert_ticks_through(function()
      local p = io.popen("sleep 0.1; echo 12 34; sleep 0.1; echo abcdef; sleep 0.1; echo last")
      assert.same({12, 34}, {p:read("n", "n")})
      assert.equal("\n", p:read(1))
      assert.equal("abc", p:read(3))
      local rest = {}
      for l in p:lines() do rest[#rest + 1] = l end
      assert.same({"def", "last"}, rest)
      assert(p:close())
    end)
  end)

  it("closing a pipe, which waits for its program", function()
    local p = io.popen("sleep 0.3")
    assert_ticks_through(function() assert(p:close()) end)
  end)

  it("writing into a pipe nobody reads yet", function()
    local p = io.popen("sleep 0.3; cat > /dev/null", "w")
    assert_ticks_through(function()
      assert.equal(p, p:write(string.rep("x", 1 << 20)))  -- far more than a pipe holds
      assert(p:flush())
    end)
    assert(p:close())
  end)

  it("io.open of a FIFO, io.lines over it and io.read from it as the default input", function()
    local d = tmpdir()
    local fifo = d .. "/fifo"
    assert(os.execute("mkfifo " .. fifo))
    assert(os.execute(("(sleep 0.3; printf 'a\\nb\\n' > %s) &"):format(fifo)))
    assert_ticks_through(function()
      local f = assert(io.open(fifo, "r"))  -- waits for the writer
      assert.equal("a", f:read("l"))
      assert(f:close())
    end)
    assert(os.execute(("(sleep 0.3; printf 'c\\nd\\n' > %s) &"):format(fifo)))
    assert_ticks_through(function()
      local got = {}
      for l in io.lines(fifo) do got[#got + 1] = l end
      assert.same({"c", "d"}, got)
    end)
    assert(os.execute(("(sleep 0.3; printf 'e\\n' > %s) &"):format(fifo)))
    local saved = io.input()
    assert_ticks_through(function()
      io.input(fifo)
      assert.equal("e", io.read())
      assert.is_nil(io.read())
      io.close(io.input())
    end)
    io.input(saved)
    os.remove(fifo)
    os.remove(d)
  end)
end)

describe("four threads", function()
  local function four_sleeps(start)
    local t0 = par.clock()
    local results = start(function() return os.execute("sleep 0.3") end)
    return par.clock() - t0, results
  end

  it("in par.thread run os.execute('sleep 0.3') at once", function()
    local elapsed, during, t, results = ticking(function()
      return four_sleeps(function(fn)
        local ts, rs = {}, {}
        for i = 1, 4 do ts[i] = support.go(fn) end
        for i = 1, 4 do rs[i] = ts[i]:result() end
        return rs
      end)
    end)
    assert.same({true, true, true, true}, results)
    assert.is_true(t < 0.9, ("took %.3f s"):format(t))
    assert.is_true(during >= 15, ("%d ticks in %.3f s"):format(during, elapsed))
  end)

  it("of a pool of kind threads run os.execute('sleep 0.3') at once", function()
    local pool <close> = par.pool{workers = 4, kind = "threads"}
    local elapsed, during, t, results = ticking(function()
      return four_sleeps(function(fn)
        local fs, rs = {}, {}
        for i = 1, 4 do fs[i] = pool:submit(fn) end
        for i = 1, 4 do rs[i] = fs[i]:result() end
        return rs
      end)
    end)
    assert.same({true, true, true, true}, results)
    assert.is_true(t < 0.9, ("took %.3f s"):format(t))
    assert.is_true(during >= 15, ("%d ticks in %.3f s"):format(during, elapsed))
  end)
end)

describe("what does not wait does not let the lock go", function()
  it("reading a disk file line by line, and writing one", function()
    local name = os.tmpname()
    local f = assert(io.open(name, "w"))
    local before = par.gil_stats().acquisitions
    for i = 1, 2000 do f:write("line ", i, "\n") end
    assert(f:close())
    local n = 0
    for l in io.lines(name) do n = n + 1 end
    local taken = par.gil_stats().acquisitions - before
    os.remove(name)
    assert.equal(2000, n)
    assert.is_true(taken < 50, ("the lock was taken %d times"):format(taken))
  end)
end)

describe("closing a file another thread is reading", function()
  -- The reader is inside read("a") without the lock, between two of the
  -- many freads 200 KB take, when the main thread closes the pipe: close
  -- must wait for the read, or fclose frees the FILE under the reader.
  it("waits for that read to finish, and the read gets its data", function()
    for _ = 1, 3 do
      local p = io.popen("head -c 8192 /dev/zero; sleep 0.3; head -c 200000 /dev/zero")
      local reader = support.go(function() return #p:read("a") end)
      par.sleep(0.1)  -- the reader waits inside read, without the lock
      assert(p:close())
      assert.equal(208192, reader:result())
      assert.is_truthy(support.errof(p.read, p):find("attempt to use a closed file", 1, true))
    end
  end)
end)

describe("the io library stays Lua 5.4's", function()
  -- Each line of this chunk prints a result or an error message; stock
  -- lua5.4 and lua5.4 with parlua must print the same.
  local chunk = [[
    local function show(...) print(select("#", ...), ...) end
    local function try(f, ...) show(pcall(f, ...)) end
    local name = os.tmpname()
    local f = assert(io.open(name, "w"))
    show(f:write("1 2.5 0x10 abc\nsecond line\n\nlast") == f, nil)
    f:close()
    f = io.open(name)
    show(f:read("n", "n", "n", "n"))
    show(f:read("l", "L", "l", "l", "l"))
    show(f:read(0), f:read("a"), f:read("a"), f:read(1))
    try(f.read, f, "x")
    try(f.read, f, {})
    try(f.write, f, {})
    show(select(2, f:write("x")))
    f:close()
    try(f.read, f)
    try(f.lines, f)
    try(io.open, name, "rw")
    show(io.open("/nonexistent/dir/file"))
    try(io.lines, "/nonexistent/file")
    try(io.popen, "cat", "r+")
    show(io.popen("exit 3"):close())
    show(os.execute("exit 5"))
    show(os.execute())
    for a, b in io.lines(name, 1, "l") do show(a, b) end
    local it = io.lines(name)
    it(); it(); it(); it(); show(it())
    try(it)
    os.remove(name)
  ]]

  it("results, error messages and error triples", function()
    local stock = support.lua_cmd(chunk, "lua5.4")
    local ours = support.lua_cmd("require 'parlua' " .. chunk)  -- PARLUA_LUA in sanitizer builds
    assert.is_truthy(stock:find("invalid format"))
    assert.equal(stock, ours)
  end)

  -- The official suite's files.lua, unchanged, with the new functions in
  -- place, then again beside a thread that spins for the lock throughout.
  it("passes the official files.lua, alone and beside a busy thread", function()
    local d = tmpdir()
    assert(os.execute(("cp tests/lua54/files.lua %s/"):format(d)))
    local busy = [[
      local par = require "parlua"
      local stop, spins = false, 0
      local t = par.thread(function() while not stop do spins = spins + 1 end end)
      t:start()
      dofile("files.lua")
      stop = true
      t:join()
      assert(spins > 0)
      print("busy thread done")
    ]]
    local f = assert(io.open(d .. "/busy.lua", "w"))
    f:write(busy)
    f:close()
    local lua = os.getenv("PARLUA_LUA") or "lua5.4 -l parlua"
    if lua:sub(1, 1) ~= "/" and lua:find("/") then lua = os.getenv("PWD") .. "/" .. lua end
    local build = support.build_dir()
    if build:sub(1, 1) ~= "/" then build = os.getenv("PWD") .. "/" .. build end
    local cpath = build .. "/?.so;;"
    for _, cmd in ipairs{"%s files.lua", "%s busy.lua"} do
      local p = io.popen(("cd %s && echo | LUA_CPATH='%s' %s 2>&1; echo \"exit $?\""):format(
        d, cpath, cmd:format(lua)))
      local out = p:read("a")
      p:close()
      assert.is_truthy(out:find("test done on", 1, true), out)
      assert.is_truthy(out:find("exit 0", 1, true), out)
    end
    os.execute("rm -rf " .. d)
  end)
end)

describe("print", function()
  -- In a program of its own whose stdout is a pipe we never read: the
  -- printing thread fills it and waits, the main thread must go on.
  it("lets the other threads run while it waits on a full stdout", function()
    local code = [[
      local par = require "parlua"
      local line = ("x"):rep(1000)
      par.thread(function() while true do print(line, 1, 2.5) end end):start()
      for _ = 1, 20 do par.sleep(0.01) end  -- each wake-up takes the lock back
      io.stderr:write("the main thread went on\n")
      par.sleep(60)
    ]]
    local lua = os.getenv("PARLUA_LUA") or "lua5.4"
    local p = par.popen({lua, "-e", code}, {stdout = "pipe", stderr = "pipe",
                        env = {LUA_CPATH = support.build_dir() .. "/?.so;;", PATH = os.getenv("PATH")}})
    local reader = support.go(function() return p.stderr:read("l") end)
    local finished = reader:join(20)
    p:kill()
    p:wait()
    reader:join()
    assert.is_true(finished, "the main thread was stopped behind print")
    assert.equal("the main thread went on", reader:result())
  end)

  -- Letting the lock go around the write must not let another thread's
  -- print in between a line's pieces ("A1B1\n\n").
  it("keeps each line of threads printing into a pipe whole", function()
    local code = [[
      local par = require "parlua"
      local function printer(tag)
        return par.thread(function() for i = 1, 3000 do print(tag, i, "x") end end)
      end
      local a, b = printer("A"), printer("B")
      a:start() b:start() a:join() b:join()
    ]]
    local out = support.lua_cmd(code)
    local lines, bad = 0, nil
    for line in out:gmatch("([^\n]*)\n") do
      lines = lines + 1
      if not line:match("^[AB]\t%d+\tx$") then bad = bad or line end
    end
    assert.is_nil(bad)
    assert.equal(6000, lines)
  end)

  -- Each line prints a result or an error message; stock lua5.4 and
  -- lua5.4 with parlua must print the same bytes in the same order.
  it("prints what, and in the order, stock Lua 5.4 does", function()
    local chunk = [[
      local function T(s) return setmetatable({}, {__tostring = s}) end
      print()
      print(nil, true, false, 1, 2.5, -0.0, 1e100, 2^63, math.mininteger, "s", "a\0b", "")
      print(T(function() return "T" end), T(function() return "U" end))
      print(pcall(print, 1, T(function() error("boom") end), 3))
      print(pcall(print, "before", T(function() return 1 end), T(function() return {} end)))
      print(1, T(function() io.write("[inner]") print("[nested]") return "x" end), 2)
      io.write("a") print("b") io.write("c\n")
      print(select("#", print("returns nothing")))
      print(debug.getinfo(print, "u").nups, debug.getinfo(print, "S").what, debug.getinfo(print, "u").isvararg)
      print(("y"):rep(10000))
      print(setmetatable({}, {__tostring = function() return "" end}), "after")
      local mt = setmetatable({}, {__index = function(_, k) io.write("[read ", k, "]") end})
      debug.setmetatable(1, mt) print(1, 2.5) debug.setmetatable(1, nil)
      debug.setmetatable(1, {__name = "N"}) print(3) debug.setmetatable(1, nil)
    ]]
    local stock = support.lua_cmd(chunk, "lua5.4")
    local ours = support.lua_cmd("require 'parlua' " .. chunk)
    assert.is_truthy(stock:find("'__tostring' must return a string", 1, true))
    assert.equal(stock, ours)
  end)
end)
