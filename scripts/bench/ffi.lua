-- Calls per second of abs(int): through parlua.ffi, a plain Lua C function
-- (math.abs) and Python's ctypes, in the same run.  Target: parlua.ffi at
-- least 3x ctypes (issue 7).
-- Run: parlua scripts/bench/ffi.lua [calls]      (or lua5.4 with LUA_CPATH=build/?.so)
local ffi = require "parlua.ffi"

local N = math.tointeger(tonumber(arg and arg[1])) or 5000000
local clock = os.clock  -- CPU seconds of this process: the loops are single-threaded

local function best_of(runs, f)
  local best = math.huge
  for _ = 1, runs do
    local t0 = clock()
    f()
    local t = clock() - t0
    if t < best then best = t end
  end
  return best
end

local cabs = ffi.open():fn("int abs(int)")
assert(cabs(-5) == 5)

local t_ffi = best_of(3, function()
  local f, x = cabs, 0
  for i = 1, N do x = f(-i) end
  assert(x == N)
end)

local t_plain = best_of(3, function()
  local f, x = math.abs, 0
  for i = 1, N do x = f(-i) end
  assert(x == N)
end)

-- ctypes: argtypes/restype set (checked conversions, like ours), timeit
-- with the call as a statement, best of 3 -- the fastest way to use it.
-- CPU time on both sides, so that other load on the machine counts for
-- neither.
local py = ([[python3 -c '
import ctypes, time, timeit
f = ctypes.CDLL(None).abs
f.argtypes = [ctypes.c_int]
f.restype = ctypes.c_int
assert f(-5) == 5
print(min(timeit.repeat("f(-5)", globals={"f": f}, number=%d, repeat=3, timer=time.process_time)))
' 2>&1]]):format(N)
local p = io.popen(py)
local out = p:read("a")
p:close()
local t_ctypes = tonumber(out:match("^%s*([%d%.eE+-]+)%s*$"))

local function rate(t) return N / t end
print(("abs(int), %d calls each, best of 3"):format(N))
print(("  parlua.ffi        : %12.0f calls/s"):format(rate(t_ffi)))
print(("  math.abs (plain C): %12.0f calls/s   (parlua.ffi costs %.1fx a plain C function)"):format(
  rate(t_plain), t_ffi / t_plain))
if t_ctypes then
  print(("  Python ctypes     : %12.0f calls/s"):format(rate(t_ctypes)))
  local ratio = t_ctypes / t_ffi
  print(("  %-52s %10.3f x      target %-8s %s"):format("parlua.ffi calls/s over ctypes", ratio, ">= 3",
                                                        ratio >= 3 and "ok" or "MISSED"))
else
  print("  Python ctypes     : not measured (" .. out:gsub("\n", " ") .. ")")
  print("  parlua.ffi over ctypes: MISSED (no python3 ctypes to compare with)")
end
