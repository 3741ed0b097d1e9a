-- Benchmarks of issue 13 (the language stays intact).  Every number is
-- printed beside a baseline measured in the same run.
--   1. hand-off at depth: how long a thread back from a 1 ms sleep waits
--      for the lock while the holder runs 490,000 frames deep, against 10
--      frames deep (target <= 2; arming the hook used to walk every frame)
--   2. CPU time of the official Lua 5.4.4 test suite (all.lua, portable,
--      single thread): the parlua program, and stock lua5.4 with
--      require "parlua", each against plain lua5.4 (target <= 1.01);
--      runs alternate and the best of ROUNDS each is kept
-- Run: parlua scripts/bench/language.lua [ROUNDS]   (or `make bench`)
-- The suite is found at LUA_TESTS (default ../shared/lua-5.4.4-tests).
local par = require "parlua"
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local ROUNDS = tonumber(arg and arg[1]) or 3
local build = os.getenv("PARLUA_BUILD") or "build"

-- 1 ------------------------------------------------------------------
print("1. Hand-off at depth: a 1 ms sleeper's wait for the lock, beside a holder d frames deep")

-- The median extra wait (beyond the 1 ms) of 200 sleeps, while a thread
-- recursed `depth` frames deep burns CPU.
local function handoff_wait(depth)
  local stop, ready = false, false
  local holder = par.thread(function()
    local function down(d)
      if d > 0 then return down(d - 1) + 0 end
      ready = true
      while not stop do bench.burn(1000) end
      return 0
    end
    return down(depth)
  end)
  holder:start()
  while not ready do par.sleep(0.001) end
  local waits = {}
  for i = 1, 200 do
    local t0 = par.clock()
    par.sleep(0.001)
    waits[i] = par.clock() - t0 - 0.001
  end
  stop = true
  holder:join()
  table.sort(waits)
  return waits[100]
end

local shallow = math.min(handoff_wait(10), handoff_wait(10))
local deep = math.min(handoff_wait(490000), handoff_wait(490000))
bench.report(("depth 490,000 / depth 10 (%.3f ms / %.3f ms)"):format(deep * 1e3, shallow * 1e3),
             deep / shallow, "<= 2", "x", deep / shallow <= 2)

-- 2 ------------------------------------------------------------------
print("2. CPU time of the Lua 5.4.4 test suite (all.lua, portable), single thread")

local function sh_quote(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

local suite = os.getenv("LUA_TESTS") or "../shared/lua-5.4.4-tests"
local probe = io.open(suite .. "/all.lua")
if not probe then
  print("  (no test suite at " .. suite .. ": set LUA_TESTS; skipped)")
  return
end
probe:close()

-- A private copy: all.lua and files.lua write beside themselves.
local dir = build .. "/bench-suite"
assert(os.execute(("rm -rf %s && cp -r %s %s"):format(sh_quote(dir), sh_quote(suite), sh_quote(dir))))
local abs_build = io.popen("cd " .. sh_quote(build) .. " && pwd"):read("l")

-- User + system CPU seconds of one run of all.lua by `cmd`.
local function cpu_of(cmd)
  local script = ("cd %s && TIMEFORMAT='%%3U %%3S'; time (LUA_CPATH=%s %s -e '_port=true' all.lua > /dev/null 2>&1)")
                 :format(sh_quote(dir), sh_quote(abs_build .. "/?.so;;"), cmd)
  local p = io.popen("bash -c " .. sh_quote(script) .. " 2>&1")
  local out = p:read("a")
  p:close()
  local user, sys = out:match("([%d.]+) ([%d.]+)%s*$")
  assert(user, "cannot time " .. cmd .. ": " .. out)
  return tonumber(user) + tonumber(sys)
end

local hosts = {
  {"lua5.4", "lua5.4"},
  {"parlua", sh_quote(abs_build .. "/parlua")},
  {"lua5.4 + parlua", "lua5.4 -e 'require \"parlua\"'"},
}
local best = {}
for _ = 1, ROUNDS do
  for _, h in ipairs(hosts) do
    local c = cpu_of(h[2])
    best[h[1]] = math.min(best[h[1]] or math.huge, c)
  end
end
local base = best["lua5.4"]
print(("  lua5.4 alone: %.2f s CPU (best of %d)"):format(base, ROUNDS))
for i = 2, #hosts do
  local name = hosts[i][1]
  local r = best[name] / base
  bench.report(("%s / lua5.4 (%.2f s / %.2f s)"):format(name, best[name], base), r, "<= 1.01", "x", r <= 1.01)
end
os.execute("rm -rf " .. sh_quote(dir))
