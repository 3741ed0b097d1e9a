-- The value codec: what crosses between states (through a "states" worker
-- and back), what is refused and how it is reported, globals that stay
-- where they are, runtime objects that arrive as the same object, and a
-- decoder that never crashes on malformed input (par._decode, internal).
local par = require "parlua"

local support = dofile("tests/spec/support.lua")
local errof = support.errof

-- A function whose _ENV is this file's _G (busted gives each spec file an
-- environment of its own, which would travel as a copy).
local function fn(src)
  return assert(load("return " .. src, "=task", "t", _G))()
end

local function bits(x) return string.pack("<d", x) end

-- Structural equality of two value graphs, cycles and sharing included:
-- a table of a must always correspond to the same table of b (m.fwd) and
-- the other way round (m.rev).  Table keys are paired by trying the
-- unpaired table keys of b.
local same
local function copy_map(m)
  local c = {fwd = {}, rev = {}}
  for k, v in pairs(m.fwd) do c.fwd[k] = v end
  for k, v in pairs(m.rev) do c.rev[k] = v end
  return c
end

same = function(a, b, m)
  m = m or {fwd = {}, rev = {}}
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false end
    return math.type(a) == "integer" and a == b or bits(a) == bits(b)
  end
  if type(a) ~= "table" and type(a) ~= "function" then return a == b end
  if m.fwd[a] ~= nil or m.rev[b] ~= nil then return m.fwd[a] == b and m.rev[b] == a end
  m.fwd[a], m.rev[b] = b, a
  if type(a) == "function" then return true end  -- copies: paired, not compared
  local ma, mb = getmetatable(a), getmetatable(b)
  if (ma == nil) ~= (mb == nil) then return false end
  if ma and not same(ma, mb, m) then return false end
  local n, table_keys = 0, {}
  for k, v in pairs(a) do
    n = n + 1
    if type(k) == "table" then
      table_keys[#table_keys + 1] = k
    elseif not same(v, rawget(b, k), m) then
      return false
    end
  end
  for _, ka in ipairs(table_keys) do
    local kb = m.fwd[ka]
    if kb == nil then
      for cand in pairs(b) do
        if type(cand) == "table" and m.rev[cand] == nil then
          local trial = copy_map(m)
          if same(ka, cand, trial) and same(a[ka], b[cand], trial) then
            m.fwd, m.rev, kb = trial.fwd, trial.rev, cand
            break
          end
        end
      end
    end
    if kb == nil or not same(a[ka], rawget(b, kb), m) then return false end
  end
  for _ in pairs(b) do n = n - 1 end
  return n == 0
end

-- Random values (fixed seed): nested tables with shared references,
-- cycles back to ancestors, table keys and metatables.
local function generator(seed)
  local rng_state = seed
  local function rand(n)  -- a small LCG, independent of math.random
    rng_state = (rng_state * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff
    return (rng_state >> 33) % n + 1
  end
  local pool_of = {}
  local function scalar()
    local k = rand(10)
    if k == 1 then return rand(2) == 1
    elseif k == 2 then return rand(1000) - 500
    elseif k == 3 then return ({math.maxinteger, math.mininteger, 0, -1, 63, 64})[rand(6)]
    elseif k == 4 then return (rand(100000) - 50000) / 7
    elseif k == 5 then return ({1 / 0, -1 / 0, -0.0, 0 / 0, 2 ^ -1074})[rand(5)]
    elseif k == 6 then
      local t = {}
      for i = 1, rand(40) - 1 do t[i] = string.char(rand(256) - 1) end
      return table.concat(t)
    elseif k == 7 then return ("long"):rep(rand(30))
    else return "s" .. rand(20) end
  end
  local function value(depth, ancestors)
    local k = rand(10)
    if depth > 4 or k <= 5 then return scalar() end
    if k == 6 and #pool_of > 0 then return pool_of[rand(#pool_of)] end
    if k == 7 and #ancestors > 0 then return ancestors[rand(#ancestors)] end
    local t = {}
    pool_of[#pool_of + 1] = t
    ancestors[#ancestors + 1] = t
    for i = 1, rand(6) - 1 do t[i] = value(depth + 1, ancestors) end
    for _ = 1, rand(6) - 1 do
      local key = scalar()
      if rand(8) == 1 then key = value(depth + 1, ancestors) end
      if key ~= nil and key == key then t[key] = value(depth + 1, ancestors) end
    end
    if rand(6) == 1 then setmetatable(t, {tag = rand(100), __index = {k = scalar()}}) end
    ancestors[#ancestors] = nil
    return t
  end
  return function() return value(0, {}) end
end

describe("the codec", function()
  local pool
  setup(function() pool = par.pool{kind = "states", workers = 2} end)
  teardown(function() pool:shutdown() end)

  local echo = fn "function(...) return ... end"
  local function through(...)
    return pool:submit(echo, ...):result()
  end

  describe("round trips through a worker", function()
    it("carries nil, booleans, integers and strings of any bytes", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      local bytes = table.concat(all)
      local a, b, c, d, e, f, g, h = through(nil, true, false, 0, math.maxinteger, math.mininteger, bytes, "")
      assert.is_nil(a)
      assert.is_true(b)
      assert.is_false(c)
      assert.equal(0, d)
      assert.equal(math.maxinteger, e)
      assert.equal(math.mininteger, f)
      assert.equal(bytes, g)
      assert.equal("", h)
      assert.equal("integer", math.type(d))
      assert.equal(select("#", through(nil, nil, nil)), 3)
    end)

    it("keeps floats bit for bit: NaN payloads, -0.0, infinities, subnormals", function()
      local nan = string.unpack("<d", "\1\0\0\0\0\0\xf8\x7f")  -- a quiet NaN with a payload
      local neg_nan = string.unpack("<d", "\xff\xff\0\0\0\0\xf8\xff")
      local values = {nan, neg_nan, -0.0, 0.0, 1 / 0, -1 / 0, 2 ^ -1074, 1.5, 2 ^ 63}
      local back = {through(table.unpack(values))}
      for i, v in ipairs(values) do
        assert.equal(bits(v), bits(back[i]), "float " .. i)
        assert.equal("float", math.type(back[i]))
      end
      assert.equal(-math.huge, 1 / select(1, through(-0.0)))
    end)

    it("keeps shared references, cycles, table keys and metatables", function()
      local shared = {"shared"}
      local t = {shared, shared, x = {y = shared}}
      t.self = t
      t[shared] = "table key"
      local mt = {__index = function(_, k) return k .. "!" end, kind = "mt"}
      local a, b = setmetatable({}, mt), setmetatable({}, mt)
      t.objs = {a, b}
      local c = through(t)
      assert.are_not.equal(t, c)
      assert.equal(c, c.self)
      assert.equal(c[1], c[2])
      assert.equal(c[1], c.x.y)
      assert.equal("table key", c[c[1]])
      assert.equal(getmetatable(c.objs[1]), getmetatable(c.objs[2]))
      assert.equal("hi!", c.objs[1].hi)
      assert.is_true(same(t, c))
    end)

    it("keeps arrays of numbers exact: floats and integers mixed, -0.0, NaN, holes, a hash part, a metatable", function()
      local nan = string.unpack("<d", "\1\0\0\0\0\0\xf8\x7f")
      local mixed = {1, 2.0, 3, 4.5, 5.5, -0.0, nan, 1 / 0, math.mininteger, math.maxinteger, 2 ^ 63, 0, 64, -1,
                     nil, 7, 8.5, 9.5, "x", 10, 11, {12.5, 13.5}, 14.5, 15, x = 1.5, [100] = 2.5}
      local floats, ints, alternating = {}, {}, {}
      for i = 1, 100000 do
        floats[i] = i * 0.5 + 0.25
        ints[i] = (i % 3 == 0 and -i or i) * 1000003
        alternating[i] = i % 2 == 0 and i or i + 0.5
      end
      local with_mt = setmetatable({1.5, 2.5, 3, 4}, {__index = function() return "mt" end})
      for _, v in ipairs{mixed, floats, ints, alternating, with_mt, {1.5}, {7}, {1.5, 2}, {}} do
        assert.is_true(same(v, (through(v))))
        assert.is_true(same(v, (par._roundtrip(v))))
      end
      assert.equal("mt", through(with_mt).missing)
    end)

    it("writes the floats and integers of an array part as runs, a tag for each run only", function()
      local floats, ints, small = {}, {}, {}
      for i = 1, 1000 do floats[i], ints[i], small[i] = i + 0.5, 100 + i, i % 64 end
      assert.is_true(#par._encode(floats) < 1000 * 8 + 32)  -- a FLOAT each would be 9 bytes
      assert.is_true(#par._encode(ints) < 1000 * 2 + 32)    -- an INT each would be 3 (a tag, 2 varint bytes)
      assert.is_true(#par._encode(small) < 1000 + 32)       -- SMALLINTs, 1 byte each, stay as they are
    end)

    it("round-trips random nested values (fixed seed)", function()
      local gen = generator(20240517)
      for i = 1, 200 do
        local v = gen()
        assert.is_true(same(v, (through(v))), "value " .. i)
        assert.is_true(same(v, (par._roundtrip(v))), "local round trip " .. i)
      end
    end)

    it("sends Lua functions with their upvalues, and binds _ENV to the receiver's globals", function()
      local base = 10
      local function helper(x) return x * base end
      local task = fn [[function(helper)
        return function(x) return helper(x) + 1, string.format("%s", type(_G)) end
      end]](helper)
      assert.same({51, "table"}, {pool:submit(task, 5):result()})
      -- a closure made in the worker comes back and runs here
      local make = fn [[function(k) return function(x) return x + k end end]]
      local add3 = pool:submit(make, 3):result()
      assert.equal(10, add3(7))
    end)

    it("keeps upvalues shared between closures shared", function()
      local n = 0
      local function inc() n = n + 1 return n end
      local function get() return n end
      local task = function(i, g) i() i() return g(), i == i end
      local r, same_fn = pool:submit(task, inc, get):result()
      assert.equal(2, r)
      assert.is_true(same_fn)
      assert.equal(0, n)  -- the worker had copies
      local i2, g2 = par._roundtrip(inc, get)
      i2()
      assert.equal(1, g2())
    end)

    it("keeps tracebacks' line numbers (bytecode keeps its debug information)", function()
      local f = pool:submit(function() local x = nil; return x.field end)
      assert.has_error(function() f:result() end)
      assert.matches("codec_spec.lua:%d+: attempt to index a nil value", f:traceback())
    end)

    it("sends C functions and modules by name: they arrive as the receiver's own", function()
      local check = fn [[function(fmt, str, g, p, pr)
        return fmt == string.format, str == string, g == _G, p == require("parlua"), pr == print,
               fmt("%03d", 7)
      end]]
      assert.same({true, true, true, true, true, "007"},
        {pool:submit(check, string.format, string, _G, par, print):result()})
      local s, f = pool:submit(fn "function() return string, string.rep end"):result()
      assert.equal(string, s)
      assert.equal(string.rep, f)
    end)

    it("sends a module replaced under its name since the last send by that name", function()
      -- The sender keeps a map of package.loaded between sends.  Replacing
      -- a module (busted does it to parlua between spec files) leaves the
      -- count of entries as it was: the map must still see the change.
      local first, second = {which = "first"}, {which = "second"}
      finally(function() package.loaded.codec_spec_module = nil end)
      package.loaded.codec_spec_module = first
      assert.equal(first, (par._roundtrip(first)))  -- by name: arrives as package.loaded's
      package.loaded.codec_spec_module = second
      assert.equal(second, (par._roundtrip(second)))
      local old = par._roundtrip(first)  -- it has no name any more: a copy
      assert.are_not.equal(first, old)
      assert.are_not.equal(second, old)
      assert.equal("first", old.which)
      -- parlua itself, required again, arrives as the worker's parlua
      finally(function() package.loaded.parlua = par end)
      package.loaded.parlua = nil
      local par2 = require "parlua"
      assert.are_not.equal(par, par2)
      assert.is_true(pool:submit(fn [[function(p) return p == require("parlua") end]], par2):result())
    end)

    it("carries error objects with their metatable", function()
      local ok, e = pcall(function() par.queue():get(false) end)
      assert.is_false(ok)
      local c = through(e)
      assert.equal("Timeout", c.kind)
      assert.equal("queue is empty", c.message)
      assert.equal(e.where, c.where)  -- where it was raised, in the sender
      assert.equal(tostring(e), tostring(c))
      assert.equal(getmetatable(e), getmetatable(c))
    end)

    it("sends ffi functions, re-bound in the receiver", function()
      local ffi = require "parlua.ffi"
      local labs = ffi.open():fn("long labs(long)")
      local call = fn "function(f, x) return f(x), tostring(f) end"
      local v, name = pool:submit(call, labs, -42):result()
      assert.equal(42, v)
      assert.matches("long labs%(long%)", name)
      local ptr = ffi.buffer(8):ptr()
      assert.equal('argument 1: cannot send a userdata of type parlua.ffi.pointer', tostring(errof(par._roundtrip, ptr)))
    end)

    it("sends a light userdata reachable by name (cjson.null) by name: the same value, through states and processes", function()
      local cjson = require "cjson"
      -- The worker's own cjson.null compared there, and what comes back compared here.
      local check = fn [[function(v)
        local null = require("cjson").null
        return v, v.list[2] == null, v.key == null, require("cjson").decode("[null]")[1] == null
      end]]
      local procs <close> = par.pool{kind = "processes", workers = 1}
      for _, p in ipairs{pool, procs} do
        local v, in_list, as_value, decoded = p:submit(check, {list = {1, cjson.null, 3}, key = cjson.null}):result()
        assert.is_true(in_list)
        assert.is_true(as_value)
        assert.is_true(decoded)
        assert.equal(cjson.null, v.list[2])
        assert.equal(cjson.null, v.key)
        assert.equal(cjson.null, p:submit(fn "function() return require('cjson').null end"):result())
      end
    end)
  end)

  describe("refuses what cannot be sent, naming where it was", function()
    local co = coroutine.create(function() end)
    local cases = {
      {"a coroutine", co, "argument 1: cannot send a coroutine"},
      {"a coroutine in a field", {cb = co}, 'argument 1: field "cb": cannot send a coroutine'},
      {"a deep path", {list = {1, 2, {x = {co}}}}, 'argument 1: field "list": [3]: field "x": [1]: cannot send a coroutine'},
      {"a key", {[co] = 1}, "argument 1: key: cannot send a coroutine"},
      {"an upvalue", function() return co end, 'argument 1: upvalue "co" of function: cannot send a coroutine'},
      {"a metatable", setmetatable({}, {co = co}), 'argument 1: metatable: field "co": cannot send a coroutine'},
      {"a light userdata without a name", debug.upvalueid(fn "function() return _G end", 1),
       "argument 1: cannot send a light userdata (only those reachable by name from package.loaded, "
       .. "such as cjson.null, can be sent: make this one inside the task or in the pool's init)"},
      {"a foreign userdata", io.stdout,
       "argument 1: cannot send a userdata of type FILE* (build it inside the task or in the pool's init function)"},
      {"an lpeg pattern", require("lpeg").P"a",
       "argument 1: cannot send a userdata of type lpeg-pattern (build it inside the task or in the pool's init function)"},
      {"a C function with upvalues", string.gmatch("a", "a"),
       "argument 1: cannot send a C function with upvalues (only those reachable by name from package.loaded can be sent)"},
      {"a pool", par.pool{workers = 1}, "argument 1: cannot send a userdata of type parlua.Pool"},
      {"a thread", par.thread(function() end), "argument 1: cannot send a userdata of type parlua.Thread"},
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local e = errof(par._roundtrip, c[2])
        assert.equal("Transfer", e.kind)
        assert.equal(c[3], tostring(e))
      end)
    end

    it("at submit: the function and each argument are named", function()
      local e = errof(pool.submit, pool, echo, 1, {cb = co})
      assert.equal('argument 2: field "cb": cannot send a coroutine', tostring(e))
      assert.equal("Transfer", e.kind)
      e = errof(pool.submit, pool, function() return co end)
      assert.equal('function: upvalue "co" of function: cannot send a coroutine', tostring(e))
      e = errof(pool.map, pool, echo, {1, co})
      assert.equal("item: cannot send a coroutine", tostring(e))
      e = errof(pool.map, pool, echo, {1, co, 3}, {chunksize = 3})
      assert.equal("item 2 of a chunk: cannot send a coroutine", tostring(e))
      local a_future = pool:submit(echo, 1)
      e = errof(pool.submit, pool, echo, a_future)
      assert.equal("argument 1: cannot send a userdata of type parlua.Future", tostring(e))
      a_future:result()
    end)

    it("results that cannot come back fail the task with the path", function()
      local f = pool:submit(fn [[function()
        local co = coroutine.create(print)
        return {1, 2, function() return co end}
      end]])
      local e = errof(f.result, f)
      assert.equal("Transfer", e.kind)
      assert.equal('result 1: [3]: upvalue "co" of function: cannot send a coroutine', tostring(e))
    end)

    it("an error value that cannot come back is replaced by a Transfer error with its text", function()
      local f = pool:submit(fn "function() error(coroutine.create(print)) end")
      local e = errof(f.result, f)
      assert.equal("Transfer", e.kind)
      assert.matches("^thread: 0x%x+ %(the error value cannot be sent back: error value: cannot send a coroutine%)$",
        tostring(e))
    end)

    it("refuses nesting deeper than 200 levels", function()
      local deep = {}
      local t = deep
      for _ = 1, 250 do t.next = {}; t = t.next end
      local e = errof(par._roundtrip, deep)
      assert.equal("argument 1: nesting too deep (more than 200 levels)", tostring(e))
      local ok_depth = {}
      t = ok_depth
      for _ = 1, 150 do t.next = {}; t = t.next end
      assert.truthy(par._roundtrip(ok_depth))
    end)
  end)

  describe("globals", function()
    it("do not leak from the main state to a worker or back", function()
      rawset(_G, "CODEC_SPEC_MAIN", "main value")
      local read = fn "function() return CODEC_SPEC_MAIN end"
      assert.is_nil(pool:submit(read):result())
      local write = fn "function() CODEC_SPEC_WORKER = 'worker value' return CODEC_SPEC_WORKER end"
      assert.equal("worker value", pool:submit(write):result())
      assert.is_nil(rawget(_G, "CODEC_SPEC_WORKER"))
      rawset(_G, "CODEC_SPEC_MAIN", nil)
    end)
  end)

  describe("runtime objects arrive as the same object", function()
    it("a lock held by the main state blocks a worker until released", function()
      local lock, started = par.lock(), par.event()
      lock:acquire()
      local f = pool:submit(fn [[function(lock, started)
        started:set()
        local got = lock:acquire(true, 10)
        lock:release()
        return got
      end]], lock, started)
      assert.is_true(started:wait(10))
      par.sleep(0.05)
      assert.is_false(f:done())
      lock:release()
      assert.is_true(f:result())
      assert.is_false(lock:locked())
    end)

    it("events and semaphores work both ways", function()
      local go, done, sem = par.event(), par.event(), par.semaphore(0)
      local f = pool:submit(fn [[function(go, done, sem)
        assert(go:wait(10))
        sem:release(3)
        done:set()
        return "ok"
      end]], go, done, sem)
      go:set()
      assert.is_true(done:wait(10))
      for _ = 1, 3 do assert.is_true(sem:acquire(true, 5)) end
      assert.is_false(sem:acquire(false))
      assert.equal("ok", f:result())
    end)

    it("a queue carries values between the main state and workers, both ways", function()
      local q, back = par.queue(), par.queue()
      q:put({n = 1})  -- put before the queue is shared: converted when sent
      local consumer = fn [[function(q, back)
        local sum = 0
        while true do
          local item = q:get(10)
          if item == nil then break end
          sum = sum + item.n
          back:put({echo = item.n})
        end
        return sum
      end]]
      local f1 = pool:submit(consumer, q, back)
      local f2 = pool:submit(consumer, q, back)
      for i = 2, 100 do q:put({n = i}) end
      q:put(nil)
      q:put(nil)
      assert.equal(5050, f1:result() + f2:result())
      local seen = 0
      for _ = 1, 100 do seen = seen + back:get(5).echo end
      assert.equal(5050, seen)
      assert.is_true(q:empty())
    end)

    it("a queue made in a worker comes back usable, with what it holds", function()
      local q = pool:submit(fn [[function()
        local par = require "parlua"
        local q = par.queue()
        q:put("made in a worker")
        q:put({1, 2, 3})
        return q
      end]]):result()
      assert.equal("made in a worker", q:get(5))
      assert.same({1, 2, 3}, q:get(5))
    end)

    it("a value put on a shared queue that cannot be sent fails the put", function()
      local q = par.queue()
      par._roundtrip(q)  -- now shared
      local e = errof(q.put, q, {coroutine.create(print)})
      assert.equal("queue item: [1]: cannot send a coroutine", tostring(e))
      local q2 = par.queue()
      q2:put(coroutine.create(print))
      e = errof(par._roundtrip, q2)
      assert.equal("argument 1: queue item: cannot send a coroutine", tostring(e))
    end)
  end)

  describe("the decoder (par._decode, internal)", function()
    it("decodes what _encode made", function()
      local v = {1, "two", {3}, x = {y = true}}
      assert.same(v, par._decode(par._encode(v)))
      assert.same({1, nil, "x"}, {par._decode(par._encode(1, nil, "x"))})
      local e = errof(par._encode, par.queue())
      assert.matches("cannot become bytes", tostring(e))
    end)

    it("never crashes on random bytes, truncations or mutations", function()
      -- Under ThreadSanitizer every error raised from C (a longjmp) costs
      -- hundreds of kilobytes that are never given back (any raise does:
      -- queue:get(false) too), so a sanitizer run samples fewer inputs;
      -- the fuzzer (make fuzz) is where the volume is.
      local scale = support.sanitizer() and 20 or 1
      local seed = 12345
      local function rand(n)
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        return seed % n
      end
      -- Either it decodes, or a Transfer error says why: the bytes are
      -- malformed, or they name something the receiving state does not
      -- have (a mutated byte can make a tag that names a module).
      local function check(bytes)
        local ok, e = pcall(par._decode, bytes)
        if not ok then
          assert.equal("Transfer", type(e) == "table" and e.kind or e)
          local m = e.message
          assert.is_true(m:match("^malformed message: ") ~= nil or m:match("in the receiving state") ~= nil, m)
        end
      end
      for _ = 1, 3000 // scale do
        local t = {}
        for i = 1, rand(64) do t[i] = string.char(rand(256)) end
        check(table.concat(t))
        check("L\3\0" .. ("\0"):rep(4) .. table.concat(t))
      end
      local gen = generator(7)
      local samples = {par._encode(function(x) return x + 1 end), par._encode({1, {2, {3}}, s = "str"})}
      for _ = 1, 20 // scale do samples[#samples + 1] = par._encode(gen()) end
      for _, s in ipairs(samples) do
        for len = 0, #s - 1, scale do check(s:sub(1, len)) end
        for _ = 1, 200 // scale do
          local at = rand(#s) + 1
          check(s:sub(1, at - 1) .. string.char(rand(256)) .. s:sub(at + 1))
        end
      end
    end)

    it("keeps only the objects a later reference names, however many", function()
      for _, n in ipairs{3, 63, 64, 500} do  -- up to 64 kept (n + 1) are held on the stack, more in a table
        local t, shared = {}, {}
        for i = 1, n do
          shared[i] = {i}
          t[i], t[n + i] = shared[i], {i}
        end
        for i = 1, n do t[2 * n + i] = shared[i] end
        t.self = t
        local c = par._decode(par._encode(t))
        assert.equal(c, c.self)
        for i = 1, n do
          assert.equal(c[i], c[2 * n + i], "shared " .. i)
          assert.are_not.equal(c[i], c[n + i])
          assert.same({i}, c[n + i])
        end
      end
    end)

    it("decodes a hand-written message with a kept object and a reference to it", function()
      local u32 = function(n) return string.pack("<I4", n) end
      local t = par._decode("L\3\1" .. u32(1) .. "\1" .. "\6" .. u32(2) .. u32(0) .. "\x86" .. u32(0) .. u32(0) .. "\8\1")
      assert.same({}, t[1])
      assert.equal(t[1], t[2])
    end)

    it("refuses bytecode this process did not sign", function()
      local s = par._encode(function() return 1 end)
      local at = s:find("\x1bLua", 1, true)
      local forged = s:sub(1, at - 9) .. ("\0"):rep(8) .. s:sub(at)
      local e = errof(par._decode, forged)
      assert.matches("bytecode not signed by this process", tostring(e))
    end)

    it("gives clear messages", function()
      local u32 = function(n) return string.pack("<I4", n) end
      assert.matches("not a parlua message", tostring(errof(par._decode, "hello")))
      assert.matches("unknown version", tostring(errof(par._decode, "L\1\0\1\0")))
      assert.matches("truncated", tostring(errof(par._decode, "L\3\0" .. u32(0) .. "\1\x25ab")))
      assert.matches("count larger than the message", tostring(errof(par._decode, "L\3\0" .. u32(0) .. "\1\5\10ab")))
      assert.matches("trailing bytes", tostring(errof(par._decode, "L\3\0" .. u32(0) .. "\1\0\0")))
      assert.matches("an object that the message does not hold", tostring(errof(par._decode, "L\3\0" .. u32(0) .. "\1\13\0")))
      assert.matches("a reference in a message without references", tostring(errof(par._decode, "L\3\0" .. u32(0) .. "\1\8\0")))
      local two = "\6" .. u32(2) .. u32(0)
      assert.matches("a reference to an object not marked as kept", tostring(errof(par._decode,
        "L\3\1" .. u32(1) .. "\1" .. two .. "\6" .. u32(0) .. u32(0) .. "\8\1")))
      assert.matches("count larger than the message", tostring(errof(par._decode, "L\3\1" .. u32(1000) .. "\1\0")))
      assert.matches("more objects marked as kept than the message says", tostring(errof(par._decode,
        "L\3\1" .. u32(0) .. "\1" .. "\x86" .. u32(0) .. u32(0))))
      assert.matches("unknown tag", tostring(errof(par._decode, "L\3\0" .. u32(0) .. "\1\x88\0")))
      local three = "L\3\0" .. u32(0) .. "\1\6" .. u32(3) .. u32(0)  -- a table of three array values, then:
      assert.matches("a run longer than the table's array part", tostring(errof(par._decode,
        three .. "\17" .. u32(4) .. ("\0"):rep(32))))
      assert.matches("count larger than the message", tostring(errof(par._decode, three .. "\17" .. u32(3) .. ("\0"):rep(16))))
      assert.matches("count larger than the message", tostring(errof(par._decode, three .. "\18" .. u32(3) .. "\0\0")))
      assert.matches("a run of fewer than two values", tostring(errof(par._decode, three .. "\18" .. u32(1) .. "\0\0\0")))
      assert.matches("unknown tag", tostring(errof(par._decode, "L\3\0" .. u32(0) .. "\1\17" .. u32(2) .. ("\0"):rep(16))))
      local t = par._decode(three .. "\17" .. u32(2) .. string.pack("<dd", 1.5, -0.0) .. "\x40")  -- a run, then 0
      assert.same({1.5, -0.0, 0}, t)
      assert.equal(-math.huge, 1 / t[2])

    end)
  end)
end)
