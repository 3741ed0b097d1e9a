-- Single-thread cost (issue #13.4): CPU time of a few files of the official
-- Lua 5.4.4 test suite under stock lua5.4, the parlua program, lua5.4 with
-- `require "parlua"`, and the parlua program after one par.thread has come
-- and gone -- what every run cost before helper threads were started
-- lazily: once a second thread has existed, glibc's malloc leaves its
-- single-thread fast path for good.  Best of RUNS (5) per file, user + system.
local bench = dofile(((arg and arg[0] or ""):match("^(.*)/") or "scripts/bench") .. "/common.lua")

local BUILD = os.getenv("PARLUA_BUILD") or "build"
local SUITE = os.getenv("LUA_TESTS") or "../shared/lua-5.4.4-tests"
local FILES = {"constructs.lua", "sort.lua", "nextvar.lua", "strings.lua", "closure.lua", "math.lua"}
local RUNS = os.getenv("PARLUA_SMOKE") and 1 or 5

local function q(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

local probe = io.open(SUITE .. "/sort.lua")
if not probe then
  print("  the Lua test suite is not at " .. SUITE .. " (LUA_TESTS=DIR): nothing measured")
  return
end
probe:close()

-- A copy to run in: some files write beside themselves.
local dir = sh("mktemp -d"):gsub("%s+$", "")
sh("cp -r " .. q(SUITE) .. "/. " .. q(dir))
local prog = sh("readlink -f " .. q(BUILD .. "/parlua")):gsub("%s+$", "")
local cpath = sh("readlink -f " .. q(BUILD)):gsub("%s+$", "") .. "/?.so;;"
local ONE_THREAD = "local t = require('parlua').thread(function() end) t:start() t:join()"

local hosts = {
  {"lua5.4", "lua5.4 -e _port=true"},
  {"parlua", q(prog) .. " -e _port=true"},
  {"lua5.4 + require", "lua5.4 -e _port=true -l parlua"},
  {"parlua, a thread once", q(prog) .. " -e _port=true -e " .. q(ONE_THREAD)},
}

-- CPU seconds of one run of `cmd` on `file` (nil when it failed).
local function cpu(cmd, file)
  local out = sh("cd " .. q(dir) .. " && LUA_CPATH=" .. q(cpath) .. " /usr/bin/time -f 'cpu %U %S' " ..
                 cmd .. " " .. file .. " 2>&1 >/dev/null | tail -n 1")
  local u, s = out:match("cpu ([%d.]+) ([%d.]+)")
  return u and tonumber(u) + tonumber(s)
end

local total = {}
for i = 1, #hosts do total[i] = 0 end
for _, file in ipairs(FILES) do
  local line = {("  %-16s"):format(file)}
  for i, h in ipairs(hosts) do
    local best = math.huge
    for _ = 1, RUNS do best = math.min(best, cpu(h[2], file) or math.huge) end
    total[i] = total[i] + best
    line[#line + 1] = ("%s %.2f s"):format(h[1], best)
  end
  print(table.concat(line, "   "))
end
sh("rm -rf " .. q(dir))

local threads = sh(q(prog) .. " -e " ..
                   q("local n = 0 for _ in io.popen('ls /proc/' .. require'parlua'.pid() .. '/task'):lines() do n = n + 1 end print(n)"))
print(("  OS threads of a parlua script that starts none: %s"):format(threads:gsub("%s+$", "")))
bench.report("parlua / lua5.4 CPU (suite files, one thread)", total[2] / total[1], "<= 1.01", "x",
             total[2] / total[1] <= 1.01)
bench.report("lua5.4 + require parlua / lua5.4 CPU", total[3] / total[1], "<= 1.01", "x",
             total[3] / total[1] <= 1.01)
bench.report("parlua after one thread / parlua (what lazy start saves)", total[4] / total[2], "info", "x", true)
