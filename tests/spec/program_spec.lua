-- The `parlua` program: a lua-compatible command line (API.md section 9).
-- Every test runs the built program in a shell and looks at its output and
-- exit status.
local PROG = (os.getenv("PARLUA_BUILD") or "build") .. "/parlua"
-- A ThreadSanitizer build delivers signals only inside intercepted calls,
-- so a loop that never leaves liblua cannot be interrupted there: under
-- TSan (make tsan sets TSAN_OPTIONS) the busy loop allocates.
local BUSY_LOOP = os.getenv("TSAN_OPTIONS") and "while true do local t = {} end" or "while true do end"

local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local function temp_file(text)
  return spit(os.tmpname(), text)
end

-- A shell script's standard output (its stderr goes there too).
local function sh(script)
  local p = io.popen(script .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

-- The program is run by its name through PATH, so that its messages start
-- "parlua: " as they would for a user (it names itself as invoked).
local BIN = sh("cd " .. q(PROG:match("^(.*)/[^/]*$")) .. " && pwd"):gsub("%s+$", "")
local BY_NAME = "env PATH=" .. q(BIN) .. ":\"$PATH\" parlua"

-- Built with GNU readline (the Makefile's choice): the prompt then echoes
-- input that is not a terminal, as Debian's lua5.4 does.
local HAS_READLINE = sh("ldd " .. q(PROG)):find("libreadline", 1, true) ~= nil

-- Run the program with `args` (a list), optional opts.stdin (text) and
-- opts.env (table); LUA_INIT and LUA_INIT_5_4 are unset unless given.
-- opts.prog: another command to run instead (lua5.4, to compare).
-- Returns stdout, stderr, exit status.
local function run(args, opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local input = opts.stdin and temp_file(opts.stdin) or "/dev/null"
  local parts = {"env -u LUA_INIT -u LUA_INIT_5_4"}
  for k, v in pairs(opts.env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "timeout 60 " .. (opts.prog or BY_NAME)
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local cmd = table.concat(parts, " ") .. " < " .. q(input) .. " > " .. q(out) .. " 2> " .. q(err)
  local p = io.popen(cmd .. "; echo $?")
  local status = tonumber(p:read("a"))
  p:close()
  local o, e = slurp(out), slurp(err)
  os.remove(out)
  os.remove(err)
  if opts.stdin then os.remove(input) end
  return o, e, status
end

-- Start the program in the background with `args`, wait until its stdout
-- says "ready", send it SIGINT and wait for it.  A watchdog kills it with
-- SIGKILL (status 137) if it is still there 20 s later.  Returns the exit
-- status as a shell sees it, stdout, stderr, and the milliseconds between
-- the signal and the exit.  `prefix` is put before the command (setsid).
local function interrupt(args, prefix)
  local out, err = os.tmpname(), os.tmpname()
  local cmd = {}
  for _, a in ipairs(args) do cmd[#cmd + 1] = q(a) end
  local script = table.concat({
    "env -u LUA_INIT -u LUA_INIT_5_4 " .. (prefix or "") .. " " .. BY_NAME .. " " .. table.concat(cmd, " ") ..
      " < /dev/null > " .. q(out) .. " 2> " .. q(err) .. " & pid=$!",
    "( sleep 20; kill -9 $pid ) > /dev/null 2>&1 & dog=$!",
    "i=0; while [ $i -lt 400 ] && ! grep -q ready " .. q(out) .. "; do sleep 0.05; i=$((i+1)); done",
    "sleep 0.2",
    "t0=$(date +%s%N)",
    "kill -INT " .. (prefix and "-$pid" or "$pid"),
    "wait $pid; status=$?",
    "t1=$(date +%s%N)",
    "kill $dog 2>/dev/null",
    "echo $status $(( (t1 - t0) / 1000000 ))",
  }, "\n")
  local res = sh(script)
  local status, ms = res:match("(%d+) (%d+)%s*$")
  local o, e = slurp(out), slurp(err)
  os.remove(out)
  os.remove(err)
  return tonumber(status), o, e, tonumber(ms), res
end

describe("the parlua program", function()
  describe("command line", function()
    it("passes script arguments as ... and builds the arg table", function()
      local script = temp_file([[
print("n=" .. select("#", ...), ...)
print("arg", arg[-3] ~= nil, arg[-2], arg[-1], arg[0] == SCRIPT_NAME, arg[1], arg[2], #arg)
]])
      local out, err, status = run({"-e", "SCRIPT_NAME = " .. string.format("%q", script), script, "a", "b c"})
      os.remove(script)
      assert.equal("", err)
      assert.equal(0, status)
      assert.equal("n=2\ta\tb c\narg\ttrue\t-e\tSCRIPT_NAME = " .. string.format("%q", script) ..
                   "\ttrue\ta\tb c\t2\n", out)
    end)

    it("puts the program at the index before the script, and at 0 without one", function()
      local script = temp_file("print(arg[-1], arg[0], arg[1])")
      local out, _, status = run({script, "x"})
      os.remove(script)
      assert.equal(0, status)
      assert.equal("parlua\t" .. script .. "\tx\n", out)
      out = run({"-e", "print(arg[0], arg[1], #arg)"})
      assert.equal("parlua\t-e\t2\n", out)
    end)

    it("runs -e statements in order", function()
      local out, err, status = run({"-e", "x = 20", "-e", "print(x + 1)", "-e", "print('three')"})
      assert.equal("", err)
      assert.equal(0, status)
      assert.equal("21\nthree\n", out)
    end)

    it("loads -l mod into the global mod, and -l g=mod into g", function()
      local out, _, status = run({"-l", "string", "-e", "print(string.rep('a', 3))"})
      assert.equal(0, status)
      assert.equal("aaa\n", out)
      out, _, status = run({"-lpar=parlua", "-e", "print(type(par.thread), par == require 'parlua')"})
      assert.equal(0, status)
      assert.equal("function\ttrue\n", out)
    end)

    it("reports a module -l cannot find and exits 1", function()
      local out, err, status = run({"-l", "no_such_module_xyz", "-e", "print('not reached')"})
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^parlua: .*module 'no_such_module_xyz' not found", err)
    end)

    it("prints lua5.4's banner with -v", function()
      local out, err, status = run({"-v"})
      assert.equal(0, status)
      assert.equal("", err)
      assert.equal(run({"-v"}, {prog = "lua5.4"}), out)
      assert.matches("^Lua 5%.4%.%d+  Copyright %(C%) [^\n]*PUC%-Rio\n$", out)
      local out2 = run({"-v", "-e", "print('after')"})
      assert.equal(out .. "after\n", out2)
    end)

    it("names itself in messages as it was invoked, as lua5.4 does", function()
      local _, err, status = run({"-e", "error('boom')"}, {prog = q(PROG)})
      assert.equal(1, status)
      assert.equal(PROG .. ": (command line):1: boom\n", err:match("^[^\n]*\n"))
      local _, usage = run({"-x"}, {prog = q(PROG)})
      assert.equal(PROG .. ": unrecognized option '-x'\n", usage:match("^[^\n]*\n"))
    end)

    it("runs the collector in generational mode, as lua5.4 does", function()
      local code = "print(collectgarbage('incremental'), collectgarbage('generational'))"
      local expected = run({"-e", code}, {prog = "lua5.4"})
      assert.equal("generational\tincremental\n", expected)
      assert.equal(expected, (run({"-e", code})))
    end)

    it("ends tracebacks as lua5.4 does, with no frames of its own", function()
      local script = temp_file("local function f() error('deep') end\nf()\n")
      local cases = {
        {args = {script}},
        {args = {"-e", "local t = nil; t.x = 1"}},
        {args = {"-l", "no_such_module_xyz"}},
        {args = {"-i"}, stdin = "error('in the prompt')\nlocal function g() error('in g') end g()\n"},
      }
      for _, c in ipairs(cases) do
        local _, err = run(c.args, {stdin = c.stdin})
        local _, lua_err = run(c.args, {stdin = c.stdin, prog = "lua5.4"})
        assert.equal(lua_err:gsub("lua5%.4: ", "parlua: "), err)
        assert.matches("%[C%]: in %?\n", err)
      end
      os.remove(script)
    end)

    it("runs standard input for '-', with the arguments after it", function()
      local out, err, status = run({"-", "p", "q"}, {stdin = "print('stdin', ...) print(arg[0], arg[1])"})
      assert.equal("", err)
      assert.equal(0, status)
      assert.equal("stdin\tp\tq\n-\tp\n", out)
    end)

    it("runs standard input when it has no arguments and stdin is not a terminal", function()
      local out, _, status = run({}, {stdin = "print(1 + 1)\nprint(select('#', ...))"})
      assert.equal(0, status)
      assert.equal("2\n0\n", out)
    end)

    it("stops handling options at '--'", function()
      local script = temp_file("print(...)")
      local out, _, status = run({"--", script, "-e", "-v"})
      os.remove(script)
      assert.equal(0, status)
      assert.equal("-e\t-v\n", out)
    end)

    it("rejects an unknown option or a missing argument with the usage", function()
      local out, err, status = run({"-x"})
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^parlua: unrecognized option '%-x'\nusage: parlua %[options%] %[script %[args%]%]", err)
      out, err, status = run({"-e"})
      assert.equal(1, status)
      assert.matches("^parlua: '%-e' needs argument\nusage:", err)
      _, err, status = run({"-ifoo"})
      assert.equal(1, status)
      assert.matches("unrecognized option '%-ifoo'", err)
    end)

    it("runs LUA_INIT first, as a string or @file, LUA_INIT_5_4 before LUA_INIT", function()
      local out, _, status = run({"-e", "print(from_init)"}, {env = {LUA_INIT = "from_init = 'plain'"}})
      assert.equal(0, status)
      assert.equal("plain\n", out)
      out = run({"-e", "print(from_init)"},
                {env = {LUA_INIT = "from_init = 'plain'", LUA_INIT_5_4 = "from_init = 'versioned'"}})
      assert.equal("versioned\n", out)
      local init = temp_file("from_init = 'file ' .. tostring(arg and #arg)")
      out = run({"-e", "print(from_init)"}, {env = {LUA_INIT = "@" .. init}})
      os.remove(init)
      assert.equal("file 2\n", out)
    end)

    it("stops when LUA_INIT fails", function()
      local out, err, status = run({"-e", "print('not reached')"}, {env = {LUA_INIT = "error('init failed')"}})
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^parlua: LUA_INIT:1: init failed", err)
      _, err, status = run({"-e", "print(1)"}, {env = {LUA_INIT = "@/no/such/init.lua"}})
      assert.equal(1, status)
      assert.matches("cannot open /no/such/init.lua", err)
    end)

    it("ignores LUA_INIT and LUA_PATH with -E", function()
      local out, _, status = run({"-E", "-e", "print(from_init, package.path:find('/from/env', 1, true))"},
                                 {env = {LUA_INIT = "from_init = 1", LUA_PATH = "/from/env/?.lua"}})
      assert.equal(0, status)
      assert.equal("nil\tnil\n", out)
      out = run({"-e", "print(from_init, package.path:find('/from/env', 1, true) ~= nil)"},
                {env = {LUA_INIT = "from_init = 1", LUA_PATH = "/from/env/?.lua"}})
      assert.equal("1\ttrue\n", out)
    end)

    it("turns warnings on with -W", function()
      local _, err, status = run({"-W", "-e", "warn('careful')"})
      assert.equal(0, status)
      assert.matches("Lua warning: careful", err)
      _, err = run({"-e", "warn('careful')"})
      assert.equal("", err)
    end)

    it("exits with os.exit's status", function()
      local _, _, status = run({"-e", "os.exit(3)"})
      assert.equal(3, status)
      _, _, status = run({"-e", "os.exit(false)"})
      assert.equal(1, status)
      local out
      out, _, status = run({"-e", "io.write('bye') os.exit(true, true)"})
      assert.equal(0, status)
      assert.equal("bye", out)
    end)

    it("waits for running par.thread threads before exiting", function()
      local out, _, status = run({"-e", [[
local par = require 'parlua'
local t = par.thread(function() par.sleep(0.2) print('thread done') end)
t:start()
print('main done')]]})
      assert.equal(0, status)
      assert.equal("main done\nthread done\n", out)
    end)
  end)

  describe("errors", function()
    it("reports a runtime error with its traceback and exits 1", function()
      local script = temp_file("local function deep() error('it broke') end\nprint('before')\ndeep()\n")
      local out, err, status = run({script})
      os.remove(script)
      assert.equal(1, status)
      assert.equal("before\n", out)
      assert.equal(1, select(2, err:gsub("parlua: ", "")))
      assert.matches("^parlua: [^\n]*:1: it broke\n", err)
      assert.matches("stack traceback:", err)
      assert.matches("in [^\n]*'deep'", err)
      assert.matches(":3: in main chunk", err)
    end)

    it("shows a failed thread's own traceback after the main one", function()
      local script = temp_file([[
local par = require "parlua"
local function work() error("failed in thread") end
local t = par.thread(work)
t:start()
t:result()
]])
      local _, err, status = run({script})
      os.remove(script)
      assert.equal(1, status)
      assert.matches("^parlua: [^\n]*:2: failed in thread\nstack traceback:", err)
      local main_at = err:find(":5: in main chunk", 1, true)
      local worker_at = err:find(":2: in function <", 1, true)   -- `work`, as its thread ran it
      assert.is_truthy(main_at, err)
      assert.is_truthy(worker_at, err)
      assert.is_true(worker_at > main_at, err)
    end)

    it("reports an error in -e with its traceback", function()
      local _, err, status = run({"-e", "local t = nil; t.x = 1"})
      assert.equal(1, status)
      assert.matches("^parlua: %(command line%):1: attempt to index a nil value %(local 't'%)", err)
      assert.matches("stack traceback:", err)
    end)

    it("reports an error value that is not a string", function()
      local _, err, status = run({"-e", "error({})"})
      assert.equal(1, status)
      assert.matches("^parlua: %(error object is a table value%)", err)
      _, err, status = run({"-e", "error(setmetatable({}, {__tostring = function() return 'custom' end}))"})
      assert.equal(1, status)
      assert.matches("^parlua: custom\nstack traceback:", err)
    end)

    it("reports a syntax error without running anything", function()
      local script = temp_file("print('not reached')\nx = = 1\n")
      local out, err, status = run({script})
      os.remove(script)
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^parlua: [^\n]*:2: unexpected symbol near '='\n$", err)
      out, err, status = run({"-e", "for"})
      assert.equal(1, status)
      assert.matches("^parlua: %(command line%):1: <name> expected near <eof>", err)
    end)

    it("reports a script it cannot open", function()
      local out, err, status = run({"/no/such/script.lua"})
      assert.equal(1, status)
      assert.equal("", out)
      assert.equal("parlua: cannot open /no/such/script.lua: No such file or directory\n", err)
    end)

    it("runs nothing after a failing -e", function()
      local out, _, status = run({"-e", "error('first')", "-e", "print('second')"})
      assert.equal(1, status)
      assert.equal("", out)
    end)
  end)

  describe("interactive mode", function()
    -- What the REPL prints after its banner: the same as lua5.4 with
    -- readline (which echoes input that is not a terminal), else
    -- `without_readline`.
    local function check_repl(args, stdin, without_readline)
      local out, err, status = run(args, {stdin = stdin})
      assert.equal(0, status)
      assert.equal("", err)
      assert.matches("^Lua 5%.4[^\n]*PUC%-Rio\n", out)   -- -i shows the banner first
      local body = out:gsub("^[^\n]*\n", "")
      if HAS_READLINE then
        local lua_out = run(args, {stdin = stdin, prog = "lua5.4"})
        assert.equal((lua_out:gsub("^[^\n]*\n", "")), body)
      else
        assert.equal(without_readline, body)
      end
    end

    it("prints the values of expressions and runs statements", function()
      check_repl({"-i"}, "1 + 1\nx = 5\nx * 2, 'two'\n=x\nprint('p')\n",
                 "> 2\n> > 10\ttwo\n> 5\n> p\n> \n")
    end)

    it("continues an incomplete statement with the '>>' prompt", function()
      check_repl({"-i"}, "for i = 1, 2 do\nprint(i)\nend\nlocal s = [[a\nb]] print(s)\n",
                 "> >> >> 1\n2\n> >> a\nb\n> \n")
    end)

    it("edits lines with readline and keeps a history, as lua5.4", function()
      if not HAS_READLINE then
        -- The Makefile uses readline whenever its development files are there.
        assert.is_false(sh("pkg-config --exists readline && echo yes"):find("yes", 1, true) ~= nil and
                        os.getenv("READLINE") ~= "no", "readline is installed but the program was built without it")
        return pending("built without readline (READLINE=no)")
      end
      -- Ctrl-P brings the last line back, Ctrl-H takes its last character.
      local out = run({"-i"}, {stdin = "x = 41\n\16\b2\nprint(x)\n"})
      assert.matches("\n42\n> \n$", out)
    end)

    it("reports errors and goes on", function()
      local out, err, status = run({"-i"}, {stdin = "error('oops')\nx = = 2\nprint('still here')\n"})
      assert.equal(0, status)
      assert.matches("still here", out)
      assert.matches("^stdin:1: oops\nstack traceback:", err)
      assert.matches("stdin:1: unexpected symbol near '='", err)
    end)

    it("reports an incomplete statement at the end of input", function()
      local _, err, status = run({"-i"}, {stdin = "if true then\n"})
      assert.equal(0, status)
      assert.matches("stdin:%d: 'end' expected", err)
    end)

    it("runs the script before the REPL, with its globals visible", function()
      local script = temp_file("answer = 42\n")
      local out = run({"-i", script}, {stdin = "answer\n"})
      os.remove(script)
      assert.matches("42\n> \n$", out)
    end)

    it("uses _PROMPT and _PROMPT2", function()
      check_repl({"-e", "_PROMPT = 'lua$ ' _PROMPT2 = '...$ '", "-i"}, "if true then\nend\n",
                 "lua$ ...$ lua$ \n")
    end)

    it("reports a failing print of the results", function()
      local _, err = run({"-i"}, {stdin = "print = nil\n1\n"})
      assert.matches("error calling 'print' %(attempt to call a nil value%)", err)
    end)
  end)

  describe("Ctrl-C", function()
    it("interrupts a busy loop and exits 130", function()
      local status, _, err, ms, raw = interrupt({"-e", "print('ready') io.stdout:flush() " .. BUSY_LOOP})
      assert.equal(130, status, raw)
      assert.matches("^parlua: interrupted!\nstack traceback:\n\t%(command line%):1: in main chunk", err)
      assert.is_true(ms < 10000, raw)
    end)

    it("interrupts par.sleep and exits 130", function()
      local status, _, err, ms, raw = interrupt({"-e",
        "print('ready') io.stdout:flush() require'parlua'.sleep(100)"})
      assert.equal(130, status, raw)
      assert.matches("^parlua: %(command line%):1: interrupted!\nstack traceback:\n\t%[C%]: in function 'parlua.sleep'", err)
      assert.is_true(ms < 10000, raw)
    end)

    it("interrupts threads too, and the main thread joining them", function()
      local status, _, err, _, raw = interrupt({"-e", [[
local par = require 'parlua'
local t = par.thread(function() ]] .. BUSY_LOOP .. [[ end)
t:start()
print('ready') io.stdout:flush()
t:join()]]})
      assert.equal(130, status, raw)
      assert.matches("^parlua: %(command line%):5: interrupted!\nstack traceback:\n\t%[C%]: in method 'join'", err)
    end)

    it("interrupts a script file and skips the REPL after it", function()
      local script = temp_file("print('ready') io.stdout:flush() " .. BUSY_LOOP)
      local status, _, err, _, raw = interrupt({"-i", script})
      os.remove(script)
      assert.equal(130, status, raw)
      assert.matches("^parlua: interrupted!\nstack traceback:\n", err)
    end)

    it("reaches a command run by os.execute, as lua's does", function()
      if not sh("command -v setsid"):match("setsid") then return pending("setsid is not installed") end
      -- The whole process group gets the SIGINT, as from a terminal: the
      -- child dies of it and the script goes on.
      local status, out, _, ms, raw = interrupt({"-e",
        "print(os.execute('echo ready; exec sleep 30')) print('after')"}, "setsid")
      assert.equal(0, status, raw)
      assert.equal("ready\nnil\tsignal\t2\nafter\n", out)
      assert.is_true(ms < 10000, raw)
    end)

    it("at the REPL prompt exits 130, and in a REPL statement only stops it", function()
      local dir = sh("mktemp -d"):gsub("%s+$", "")
      local fifo, out, err = dir .. "/in", dir .. "/out", dir .. "/err"
      local res = sh(table.concat({
        "mkfifo " .. q(fifo),
        q(PROG) .. " -i < " .. q(fifo) .. " > " .. q(out) .. " 2> " .. q(err) .. " & pid=$!",
        "( sleep 30; kill -9 $pid ) > /dev/null 2>&1 & dog=$!",
        "exec 3> " .. q(fifo),
        "printf '%s\\n' \"print('started') io.stdout:flush() " .. BUSY_LOOP .. "\" >&3",
        "i=0; while [ $i -lt 400 ] && ! grep -q started " .. q(out) .. " 2>/dev/null; do sleep 0.05; i=$((i+1)); done",
        "sleep 0.2",
        "kill -INT $pid",
        "printf '%s\\n' \"print('after')\" >&3",
        "i=0; while [ $i -lt 400 ] && ! grep -q after " .. q(out) .. " 2>/dev/null; do sleep 0.05; i=$((i+1)); done",
        "sleep 0.2",
        "kill -INT $pid",        -- at the prompt now
        "wait $pid; status=$?",
        "exec 3>&-",
        "kill $dog 2>/dev/null",
        "echo status=$status",
      }, "\n"))
      local o, e = slurp(out), slurp(err)
      sh("rm -rf " .. q(dir))
      assert.matches("status=130", res)
      if HAS_READLINE then  -- the prompt echoes the statements
        assert.matches("\nstarted\n> print%('after'%)\nafter\n> $", o)
      else
        assert.matches("> started\n> after\n> $", o)
      end
      assert.matches("^interrupted!\nstack traceback:", e)
    end)
  end)
end)
