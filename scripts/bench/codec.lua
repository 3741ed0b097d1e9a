-- Benchmark of the value codec (issue 4): encode + decode, in this state,
-- of three shapes of data, beside Python's pickle.dumps + pickle.loads of
-- the same data measured in the same run (target: faster than pickle on
-- each).  The Lua side uses par._roundtrip (internal: encode to a message
-- and decode it back, as a task's arguments travel to a "states" worker).
--   1. a 1 MiB string (MB/s)
--   2. an array of 100,000 floats (items/s)
--   3. a tree of 10,000 nodes {id=, name=, weight=, children={...}} (nodes/s)
-- The two sides take turns, ROUNDS times, and each keeps its best: on a
-- shared machine the load changes by the second, and measuring all of one
-- side and then all of the other would bill one of them for it.
-- Run: parlua scripts/bench/codec.lua   (or `make bench`)
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local report = bench.report

local ROUNDS, BATCHES = 3, 3

-- Best time of a repeated call, in seconds per call: batches of at least
-- `min_time`.
local function per_call(fn, min_time)
  local best = math.huge
  for _ = 1, BATCHES do
    local n, t0 = 0, par.clock()
    repeat fn(); n = n + 1 until par.clock() - t0 >= min_time
    best = math.min(best, (par.clock() - t0) / n)
  end
  return best
end

local MiB = 1024 * 1024
local NODES, FANOUT = 10000, 8
local makers = {
  str = function() return ("0123456789abcdef"):rep(MiB // 16) end,
  arr = function()
    local floats = {}
    for i = 1, 100000 do floats[i] = i * 0.5 + 0.25 end
    return floats
  end,
  tree = function()
    local nodes = {}
    for i = 1, NODES do
      nodes[i] = {id = i, name = "node" .. i, weight = i / 3, children = {}}
      if i > 1 then
        local parent = nodes[(i - 2) // FANOUT + 1]
        parent.children[#parent.children + 1] = nodes[i]
      end
    end
    return nodes[1]
  end,
}
local checks = {
  str = function(a, b) return a == b end,
  arr = function(a, b) return #a == #b and a[777] == b[777] end,
  tree = function(a, b) return a.children[1].children[2].name == b.children[1].children[2].name end,
}

-- Each shape alone in the heap while it is measured (on both sides): the
-- copies made are garbage, and a collection cycle marks whatever else is
-- alive -- which would bill one shape for the others.
local shapes = {"str", "arr", "tree"}
local function measure_lua(best)
  for _, k in ipairs(shapes) do
    local v = makers[k]()
    assert(checks[k](v, par._roundtrip(v)), "a wrong copy of " .. k)
    collectgarbage()
    best[k] = math.min(best[k] or math.huge, per_call(function() par._roundtrip(v) end, 0.2))
    v = nil
    collectgarbage()
  end
end

local py = [[
import gc, pickle, time
def per_call(fn, min_time):
    best = float("inf")
    for _ in range(%d):
        n, t0 = 0, time.perf_counter()
        while True:
            fn(); n += 1
            if time.perf_counter() - t0 >= min_time: break
        best = min(best, (time.perf_counter() - t0) / n)
    return best
MiB = 1024 * 1024
def big(): return b"0123456789abcdef" * (MiB // 16)
def floats(): return [i * 0.5 + 0.25 for i in range(1, 100001)]
def tree():
    nodes = []
    for i in range(1, 10001):
        nodes.append({"id": i, "name": "node%%d" %% i, "weight": i / 3, "children": []})
        if i > 1:
            nodes[(i - 2) // 8]["children"].append(nodes[-1])
    return nodes[0]
def rt(v): pickle.loads(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL))
out = []
for make in (big, floats, tree):
    v = make()
    gc.collect()
    out.append(per_call(lambda: rt(v), 0.2))
    del v
    gc.collect()
print(*out)
]]

local has_python = io.popen("command -v python3"):read("l") ~= nil
local function measure_python(best)
  local p = io.popen("python3 -c '" .. py:format(BATCHES) .. "'")
  local out = {p:read("n", "n", "n")}
  p:close()
  for i = 1, 3 do
    local t = assert(out[i], "python3 failed")
    best[i] = math.min(best[i] or math.huge, t)
  end
end

local lua, pyt = {}, has_python and {} or nil
for _ = 1, ROUNDS do
  measure_lua(lua)
  if pyt then measure_python(pyt) end
end
local version = io.popen("python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null"):read("l") or "?"
local rows = {
  {"1 MiB string", 1 / lua.str, pyt and 1 / pyt[1], "MB/s", 1},
  {"array of 100,000 floats", 100000 / lua.arr, pyt and 100000 / pyt[2], "items/s", 2},
  {"tree of 10,000 nodes", NODES / lua.tree, pyt and NODES / pyt[3], "nodes/s", 3},
}
print("Codec: encode + decode in one state, against pickle (protocol 5) in Python " .. version)
for _, r in ipairs(rows) do
  local name, mine, theirs, unit = r[1], r[2], r[3], r[4]
  local scale = unit == "MB/s" and 1 or 1e-6
  local shown = unit == "MB/s" and "MB/s" or "M" .. unit
  if unit == "MB/s" then mine, theirs = mine, theirs end
  print(("  %-26s parlua %10.1f %-10s pickle %s"):format(name, mine * scale, shown,
    theirs and ("%10.1f %s"):format(theirs * scale, shown) or "(python3 not found)"))
  if theirs then report(name .. ": parlua / pickle", mine / theirs, "> 1", "x", mine > theirs) end
end
