-- Writes the seed corpus of the codec fuzzer (tests/fuzz/fuzz_codec.c):
-- real encodings of values of every kind the codec carries in bytes.
--   LUA_CPATH='build/?.so;;' lua5.4 tests/fuzz/gen_codec_corpus.lua [dir]
-- (default dir: tests/fuzz/codec_corpus).  Bytecode is signed with the
-- fixed test key (par._codec_test_key), as the fuzzer expects.
local par = require "parlua"
local dir = arg[1] or "tests/fuzz/codec_corpus"
par._codec_test_key()  -- the fuzzer checks bytecode against the same public key

local seeds = {}
local function seed(name, ...)
  seeds[#seeds + 1] = {name, par._encode(...)}
end

seed("nil", nil)
seed("scalars", true, false, 0, 63, 64, -1, math.maxinteger, math.mininteger, 1.5, -0.0, 1 / 0, -1 / 0, 0 / 0)
seed("strings", "", "a", ("x"):rep(31), ("y"):rep(32), "\0\1\2\255", ("z"):rep(300))
seed("empty table", {})
seed("array", {1, 2, 3, "four", 5.5, true})
seed("holes", {1, nil, 3, [10] = 10})
seed("hash", {a = 1, b = "two", [1.5] = "float key", [true] = "bool key"})
seed("nested", {a = {b = {c = {d = {e = "deep"}}}}})
local shared = {"shared"}
seed("shared refs", {shared, shared, x = shared})
local cyc = {name = "cycle"}
cyc.self = cyc
seed("cycle", cyc)
local a, b = {}, {}
a.b, b.a = b, a
seed("mutual cycle", a)
seed("table keys", {[{1}] = "k1", [shared] = shared})
seed("metatable", setmetatable({v = 1}, {__index = {default = 2}}))
local mt = {kind = "shared mt"}
seed("shared metatable", {setmetatable({}, mt), setmetatable({}, mt)})
seed("error object", select(2, pcall(function() par.queue():get(false) end)))
seed("named", string.format, string, math, table.concat, par, print)
seed("globals", _G)
seed("function no upvalues", function(x) return x * 2 end)
seed("function globals", function(s) return string.rep(s, 2) end)
local up1, up2 = 10, {20}
seed("closure", function() return up1 + up2[1] end)
local counter = 0
local function inc() counter = counter + 1; return counter end
local function get() return counter end
seed("shared upvalue", inc, get)
local function rec(n) if n <= 1 then return 1 end return n * rec(n - 1) end
seed("recursive", rec)
seed("function in table", {f = inc, g = get, data = {1, 2}})
seed("mixed", 1, "two", {3}, function() return 4 end, nil, true)
local deep = {}
local node = deep
for i = 1, 150 do node.next = {i = i}; node = node.next end
seed("deep", deep)
local big = {}
for i = 1, 1000 do big[i] = i * 1.25 end
seed("big array", big)
local ints, mixed = {}, {}
for i = 1, 300 do ints[i] = i * (i % 2 == 0 and -1000003 or 7) end
for i = 1, 200 do mixed[i] = i % 5 == 0 and "s" .. i or i % 3 == 0 and i or i + 0.5 end
seed("integer run", ints)
seed("mixed runs", mixed, {1.5, 2.5, nil, 4, 5, x = 6.5})

os.execute("mkdir -p '" .. dir .. "'")
for i, s in ipairs(seeds) do
  local path = ("%s/seed%02d"):format(dir, i)
  local f = assert(io.open(path, "wb"))
  f:write(s[2])
  f:close()
  print(("%-24s %6d bytes  %s"):format(s[1], #s[2], path))
end
