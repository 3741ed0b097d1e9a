-- par.popen, par.run, par.check_output: Python's subprocess (API.md 6).
local par = require "parlua"
local support = dofile("tests/spec/support.lua")

local function errof(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return e
end

-- The message of an error, whatever function name Lua put in front.
local function msgof(fn, ...)
  return tostring(errof(fn, ...))
end

-- Our children that are zombies, as ps sees them.
local function zombies()
  local out = par.check_output({"ps", "--ppid", tostring(par.pid()), "-o", "stat="})
  local n = 0
  for stat in out:gmatch("%S+") do
    if stat:sub(1, 1) == "Z" then n = n + 1 end
  end
  return n
end

-- Our open descriptors, as a child listing /proc/<our pid>/fd sees them.
local function fd_count()
  local out = par.check_output({"ls", "/proc/" .. par.pid() .. "/fd"})
  local n = 0
  for _ in out:gmatch("%d+") do n = n + 1 end
  return n
end

describe("par.popen", function()
  describe("arguments", function()
    it("refuses a command string without shell = true", function()
      assert.matches("a command string needs opts.shell = true", msgof(par.popen, "ls -l"), 1, true)
      assert.matches("a command string needs opts.shell = true", msgof(par.run, "ls"), 1, true)
    end)

    it("runs a command string through /bin/sh with shell = true", function()
      assert.equal("a b\n", par.check_output("echo a b", {shell = true}))
      -- a table with shell: the first item is the script, the rest its $0, $1...
      assert.equal("x y\n", par.check_output({"echo $0 $1", "x", "y"}, {shell = true}))
    end)

    it("checks argv", function()
      assert.matches("the argument table is empty", msgof(par.popen, {}), 1, true)
      assert.matches("argv[2] must be a string, got boolean", msgof(par.popen, {"echo", true}), 1, true)
      assert.matches("argv[2] contains a zero byte", msgof(par.popen, {"echo", "a\0b"}), 1, true)
      assert.matches("table of arguments expected, got nil", msgof(par.popen), 1, true)
      assert.equal("1 2.5\n", par.check_output({"echo", 1, 2.5}))
    end)

    it("rejects unknown and ill-typed options", function()
      assert.matches("unknown option 'stdot' for popen", msgof(par.popen, {"true"}, {stdot = "pipe"}), 1, true)
      assert.matches("unknown option 'input' for popen", msgof(par.popen, {"true"}, {input = "x"}), 1, true)
      assert.matches("unknown option 'capture_output' for run",
        msgof(par.run, {"true"}, {capture_output = true}), 1, true)
      assert.matches("option 'cwd' must be a string, got number", msgof(par.popen, {"true"}, {cwd = 1}), 1, true)
      assert.matches("option 'env' must be a table", msgof(par.popen, {"true"}, {env = "x"}), 1, true)
      assert.matches("option 'env': the value of 'A' must be a string, got table",
        msgof(par.popen, {"true"}, {env = {A = {}}}), 1, true)
      assert.matches("option 'env': invalid variable name 'A=B'",
        msgof(par.popen, {"true"}, {env = {["A=B"] = "1"}}), 1, true)
      assert.matches("option 'shell' must be a boolean", msgof(par.popen, {"true"}, {shell = "yes"}), 1, true)
      assert.matches("option 'timeout' must be a non-negative number",
        msgof(par.run, {"true"}, {timeout = -1}), 1, true)
      assert.matches("option 'input' must be a string, got number", msgof(par.run, {"cat"}, {input = 5}), 1, true)
    end)

    it("checks stream options", function()
      assert.matches([[option 'stdout': expected "pipe", "devnull", a pipe end, a file or a file descriptor, got "pipes"]],
        msgof(par.popen, {"true"}, {stdout = "pipes"}), 1, true)
      assert.matches([[option 'stdout': "stdout" is only for stderr]],
        msgof(par.popen, {"true"}, {stdout = "stdout"}), 1, true)
      assert.matches("option 'stdin': bad file descriptor 987", msgof(par.popen, {"true"}, {stdin = 987}), 1, true)
      assert.matches("option 'stdin': a file descriptor must be a non-negative integer",
        msgof(par.popen, {"true"}, {stdin = -1}), 1, true)
      assert.matches("option 'stderr': expected", msgof(par.popen, {"true"}, {stderr = true}), 1, true)
      local p = par.popen({"cat"}, {stdin = "pipe", stdout = "pipe"})
      assert.matches("option 'stdin': needs a pipe end to read from",
        msgof(par.popen, {"true"}, {stdin = p.stdin}), 1, true)
      assert.matches("option 'stdout': needs a pipe end to write to",
        msgof(par.popen, {"true"}, {stdout = p.stdout}), 1, true)
      p.stdin:close()
      p:wait()
      p.stdout:close()
      assert.matches("option 'stdin': attempt to use a closed file",
        msgof(par.popen, {"true"}, {stdin = p.stdout}), 1, true)
      local f = io.tmpfile()
      f:close()
      assert.matches("option 'stdout': attempt to use a closed file",
        msgof(par.popen, {"true"}, {stdout = f}), 1, true)
    end)

    it("rejects conflicting run options", function()
      assert.matches("options 'input' and 'stdin' cannot both be used",
        msgof(par.run, {"cat"}, {input = "x", stdin = "devnull"}), 1, true)
      assert.matches("option 'capture' cannot be used with 'stdout' or 'stderr'",
        msgof(par.run, {"true"}, {capture = true, stderr = "devnull"}), 1, true)
      assert.matches("option 'stdout' is not allowed", msgof(par.check_output, {"true"}, {stdout = "pipe"}), 1, true)
      assert.matches("option 'check' is not allowed", msgof(par.check_output, {"true"}, {check = true}), 1, true)
    end)
  end)

  describe("programs that cannot start", function()
    it("names a missing program and the OS reason", function()
      local e = errof(par.popen, {"nosuchprog-parlua"})
      assert.equal("OSError", e.kind)
      assert.equal(par.errors.OSError, e.kind)
      assert.equal("cannot run 'nosuchprog-parlua': No such file or directory", tostring(e))
      assert.equal(2, e.errno)
      assert.equal("nosuchprog-parlua", e.filename)
      assert.equal("cannot run 'nosuchprog-parlua': No such file or directory",
        msgof(par.run, {"nosuchprog-parlua"}))
      assert.equal("cannot run 'nosuchprog-parlua': No such file or directory",
        msgof(par.check_output, {"nosuchprog-parlua"}))
    end)

    it("names a bad cwd", function()
      local e = errof(par.popen, {"ls"}, {cwd = "/nonexistent-parlua"})
      assert.equal("cannot change directory to '/nonexistent-parlua': No such file or directory", tostring(e))
      assert.equal(2, e.errno)
      assert.equal("/nonexistent-parlua", e.filename)
      e = errof(par.popen, {"ls"}, {cwd = "/etc/passwd"})
      assert.equal("cannot change directory to '/etc/passwd': Not a directory", tostring(e))
    end)

    it("says Permission denied for a file that is not executable", function()
      local name = support.tmpname()
      local f = assert(io.open(name, "w"))
      f:write("#!/bin/sh\necho hi\n")
      f:close()
      local e = errof(par.popen, {name})
      os.remove(name)
      assert.equal("cannot run '" .. name .. "': Permission denied", tostring(e))
      assert.equal(13, e.errno)
    end)

    it("leaves nothing open after a failed start", function()
      local before = fd_count()
      for _ = 1, 20 do
        pcall(par.popen, {"nosuchprog-parlua"}, {stdin = "pipe", stdout = "pipe", stderr = "pipe"})
      end
      collectgarbage()
      assert.equal(before, fd_count())
    end)
  end)

  describe("a Popen", function()
    it("has pid, args, returncode (nil while running), poll and wait", function()
      local argv = {"sleep", "0.2"}
      local p = par.popen(argv)
      assert.is_true(math.type(p.pid) == "integer" and p.pid > 0)
      assert.equal(argv, p.args)
      assert.is_nil(p.returncode)
      assert.is_nil(p:poll())
      assert.matches("^Popen%(pid %d+, running%)$", tostring(p))
      assert.equal(0, p:wait())
      assert.equal(0, p.returncode)
      assert.equal(0, p:poll())
      assert.equal(0, p:wait())
      assert.matches("^Popen%(pid %d+, returncode 0%)$", tostring(p))
      assert.equal(7, par.popen({"sh", "-c", "exit 7"}):wait())
    end)

    it("gives minus the signal number for a child killed by a signal", function()
      local p = par.popen({"sleep", "10"})
      p:kill()
      assert.equal(-9, p:wait())
      p = par.popen({"sleep", "10"})
      p:terminate()
      assert.equal(-15, p:wait())
      p = par.popen({"sleep", "10"})
      p:send_signal("SIGUSR1")
      assert.equal(-10, p:wait())
      p = par.popen({"sleep", "10"})
      p:send_signal("INT")
      assert.equal(-2, p:wait())
      p = par.popen({"sleep", "10"})
      p:send_signal(15)
      assert.equal(-15, p:wait())
      -- once it is over, signals are not sent (its pid may be reused)
      assert.has_no.errors(function() p:kill() end)
      assert.matches("unknown signal 'SIGNOPE'", msgof(p.send_signal, p, "SIGNOPE"), 1, true)
      assert.matches("not a signal number", msgof(p.send_signal, p, 999), 1, true)
    end)

    it("raises TimeoutExpired from wait, and the child keeps running", function()
      local p = par.popen({"sleep", "10"})
      local t0 = par.clock()
      local e = errof(p.wait, p, 0.1)
      assert.is_true(par.clock() - t0 < 2)
      assert.equal("TimeoutExpired", e.kind)
      assert.equal(par.errors.TimeoutExpired, e.kind)
      assert.equal("Command 'sleep 10' timed out after 0.1 seconds", tostring(e))
      assert.equal(0.1, e.timeout)
      assert.equal(p.args, e.cmd)
      assert.is_nil(p.returncode)
      p:kill()
      assert.equal(-9, p:wait())
      assert.matches("timeout must be a non-negative number", msgof(p.wait, p, -1), 1, true)
    end)

    it("waits at the end of a <close> scope", function()
      local name = support.tmpname()
      do
        local p <close> = par.popen({"sh", "-c", "sleep 0.1; touch " .. name})
      end
      local f = io.open(name)
      assert.is_not_nil(f, "the child had not finished")
      f:close()
      os.remove(name)
    end)
  end)

  describe("communicate", function()
    it("returns nil for streams that are not piped", function()
      local p = par.popen({"true"})
      local out, err = p:communicate()
      assert.is_nil(out)
      assert.is_nil(err)
      assert.equal(0, p.returncode)
    end)

    it("returns stdout and stderr", function()
      local p = par.popen({"sh", "-c", "echo out; echo err >&2"}, {stdout = "pipe", stderr = "pipe"})
      local out, err = p:communicate()
      assert.equal("out\n", out)
      assert.equal("err\n", err)
      -- again: the same again
      local out2, err2 = p:communicate()
      assert.equal(out, out2)
      assert.equal(err, err2)
    end)

    it("sends input", function()
      local p = par.popen({"cat"}, {stdin = "pipe", stdout = "pipe"})
      assert.equal("sample text", (p:communicate("sample text")))
      assert.matches("cannot send input after starting communication",
        msgof(p.communicate, p, "more"), 1, true)
      p = par.popen({"true"})
      assert.matches([[cannot send input: stdin is not a pipe]], msgof(p.communicate, p, "x"), 1, true)
      p:wait()
      p = par.popen({"cat"}, {stdin = "pipe"})
      p.stdin:close()
      assert.matches([[cannot send input: stdin was closed]], msgof(p.communicate, p, "x"), 1, true)
      assert.is_nil(p:communicate())
      assert.equal(0, p.returncode)
    end)

    it("merges stderr into stdout with stderr = \"stdout\"", function()
      local r = par.run({"sh", "-c", "echo a; echo b >&2; echo c"}, {stdout = "pipe", stderr = "stdout"})
      assert.equal("a\nb\nc\n", r.stdout)
      assert.is_nil(r.stderr)
    end)

    it("connects devnull", function()
      local r = par.run({"sh", "-c", "cat; echo done; echo hidden >&2"},
        {stdin = "devnull", stdout = "pipe", stderr = "devnull"})
      assert.equal("done\n", r.stdout)
      assert.is_nil(r.stderr)
    end)

    it("writes to a Lua file, after what Lua buffered in it", function()
      local f = io.tmpfile()
      f:write("first\n")  -- still in the FILE buffer
      par.run({"echo", "second"}, {stdout = f})
      f:seek("set")
      assert.equal("first\nsecond\n", f:read("a"))
      f:close()
      -- and reads from one
      local g = io.tmpfile()
      g:write("from a file\n")
      g:seek("set")
      assert.equal("from a file\n", par.check_output({"cat"}, {stdin = g}))
      g:close()
    end)

    it("takes a descriptor number", function()
      local name = support.tmpname()
      local f = assert(io.open(name, "w"))
      -- find f's descriptor number the way a user of a C library would
      local fd
      for n = 3, 200 do
        local ok, target = pcall(par.check_output, {"readlink", "/proc/" .. par.pid() .. "/fd/" .. n},
          {stderr = "devnull"})
        if ok and target == name .. "\n" then fd = n break end
      end
      assert.is_not_nil(fd)
      par.run({"echo", "via fd"}, {stdout = fd})
      f:close()
      local g = assert(io.open(name))
      assert.equal("via fd\n", g:read("a"))
      g:close()
      os.remove(name)
    end)

    it("sets cwd and replaces the environment", function()
      assert.equal("/tmp\n", par.check_output({"pwd"}, {cwd = "/tmp"}))
      assert.equal("FOO=bar\n", par.check_output({"/usr/bin/env"}, {env = {FOO = "bar"}}))
      local out = par.check_output({"/usr/bin/env"}, {env = {A = "1", B = 2}})
      assert.matches("A=1\n", out, 1, true)
      assert.matches("B=2\n", out, 1, true)
    end)

    it("moves 64 MiB through cat both ways without deadlock", function()
      local big = string.rep("0123456789abcdef", 4 * 1024 * 1024)
      local p = par.popen({"cat"}, {stdin = "pipe", stdout = "pipe"})
      local out, err = p:communicate(big)
      assert.equal(#big, #out)
      assert.is_true(out == big)
      assert.is_nil(err)
      assert.equal(0, p.returncode)
    end)

    it("grows both outputs past their first big block, then reuses one for a smaller output", function()
      -- 40 MiB and a few bytes: past the first block (32 MiB) of each output
      local big = string.rep("0123456789abcdef", 40 * 65536) .. "tail"
      local p = par.popen({"tee", "/dev/stderr"}, {stdin = "pipe", stdout = "pipe", stderr = "pipe"})
      local out, err = p:communicate(big)
      assert.equal(#big, #out)
      assert.is_true(out == big)
      assert.is_true(err == big)
      -- 3 MiB into a block that held 40: exactly what came, no more
      local small = string.rep("xyz", 1024 * 1024) .. "!"
      p = par.popen({"cat"}, {stdin = "pipe", stdout = "pipe"})
      out = p:communicate(small)
      assert.equal(#small, #out)
      assert.is_true(out == small)
    end)

    it("keeps a big output read before a timeout, and the rest after it", function()
      local flag = os.tmpname()
      os.remove(flag)
      local script = ("head -c 5000000 /dev/zero; while [ ! -e %s ]; do sleep 0.01; done; echo tail"):format(flag)
      local p = par.popen({"sh", "-c", script}, {stdout = "pipe"})
      local e
      for _ = 1, 600 do  -- until all 5 MB have come (a loaded machine may take a while)
        e = errof(p.communicate, p, nil, 0.05)
        assert.equal("TimeoutExpired", e.kind)
        if #e.output == 5000000 then break end
      end
      assert.equal(5000000, #e.output)
      assert.is_true(e.output == string.rep("\0", 5000000))
      assert(io.open(flag, "w")):close()
      local out = p:communicate()
      os.remove(flag)
      assert.equal(5000005, #out)
      assert.is_true(out == string.rep("\0", 5000000) .. "tail\n")
    end)

    it("goes on feeding a child that closed its stdout early", function()
      local data = string.rep("z", 5 * 1000 * 1000)
      local p = par.popen({"sh", "-c", "exec >&-; wc -c >&2"}, {stdin = "pipe", stdout = "pipe", stderr = "pipe"})
      local out, err = p:communicate(data)
      assert.equal("", out)
      assert.equal("5000000", err:match("%d+"))
      assert.equal(0, p.returncode)
    end)

    it("drains stdout and stderr flooded at the same time", function()
      local script = "head -c 8000000 /dev/zero >&2 & head -c 8000000 /dev/zero; wait"
      local r = par.run({"sh", "-c", script}, {capture = true, timeout = 60})
      assert.equal(8000000, #r.stdout)
      assert.equal(8000000, #r.stderr)
      -- one after the other: the first fills its pipe while we wait on neither
      r = par.run({"sh", "-c", "head -c 3000000 /dev/zero >&2; head -c 3000000 /dev/zero"}, {capture = true})
      assert.equal(3000000, #r.stdout)
      assert.equal(3000000, #r.stderr)
    end)

    it("survives a child that closes stdin early", function()
      local tenmb = string.rep("x", 10 * 1000 * 1000)
      local r = par.run({"head", "-c", "10"}, {input = tenmb, capture = true})
      assert.equal(0, r.returncode)
      assert.equal("xxxxxxxxxx", r.stdout)
      -- a plain write to a process that has gone: fail, message, errno
      local p = par.popen({"true"}, {stdin = "pipe"})
      p:wait()
      local ok, msg, code = p.stdin:write(tenmb)
      assert.is_nil(ok)
      assert.equal("Broken pipe", msg)
      assert.equal(32, code)
      p.stdin:close()
      -- and we are still alive (no SIGPIPE death), with SIGPIPE not left pending
      assert.equal("ok\n", par.check_output({"echo", "ok"}))
    end)

    it("raises TimeoutExpired, keeps the child running, and resumes", function()
      local p = par.popen({"sh", "-c", "echo first; sleep 0.4; echo second"}, {stdout = "pipe"})
      local e = errof(p.communicate, p, nil, 0.15)
      assert.equal("TimeoutExpired", e.kind)
      assert.equal("Command 'sh -c echo first; sleep 0.4; echo second' timed out after 0.15 seconds", tostring(e))
      assert.equal(0.15, e.timeout)
      assert.equal("first\n", e.output)
      assert.equal("first\n", e.stdout)
      assert.is_nil(p.returncode)
      local out = p:communicate()
      assert.equal("first\nsecond\n", out)
      assert.equal(0, p.returncode)
    end)

    it("resumes feeding input after a timeout", function()
      local data = string.rep("y", 3 * 1000 * 1000)
      local p = par.popen({"sh", "-c", "sleep 0.3; cat"}, {stdin = "pipe", stdout = "pipe"})
      local e = errof(p.communicate, p, data, 0.05)
      assert.equal("TimeoutExpired", e.kind)
      local out = p:communicate()
      assert.equal(#data, #out)
      assert.is_true(out == data)
    end)

    it("keeps what a reader left buffered", function()
      local p = par.popen({"printf", "one\\ntwo\\nthree\\n"}, {stdout = "pipe"})
      assert.equal("one", p.stdout:read("l"))
      assert.equal("two\nthree\n", (p:communicate()))
    end)
  end)

  describe("pipe ends", function()
    it("read with Lua's formats", function()
      local p = par.popen({"printf", "a\\nb\\n12 0x1F 1e3 rest"}, {stdout = "pipe"})
      local r = p.stdout
      assert.equal("a", r:read())
      assert.equal("b\n", r:read("L"))
      local x, y, z = r:read("n", "n", "*n")
      assert.equal(12, x)
      assert.equal(31, y)
      assert.equal(1000.0, z)
      assert.is_true(math.type(x) == "integer" and math.type(z) == "float")
      assert.equal(" re", r:read(3))
      assert.equal("", r:read(0))
      assert.equal("st", r:read("a"))
      assert.equal("", r:read("a"))
      assert.is_nil(r:read("l"))
      assert.is_nil(r:read(0))
      assert.is_nil(r:read(5))
      p:wait()
    end)

    it("stops at the first format that fails", function()
      local p = par.popen({"printf", "word 5"}, {stdout = "pipe"})
      local a, b = p.stdout:read("n", "l")
      assert.is_nil(a)
      assert.is_nil(b)
      p:wait()
      assert.matches("invalid format", msgof(p.stdout.read, p.stdout, "x"), 1, true)
    end)

    it("iterate lines", function()
      local p = par.popen({"seq", "1000"}, {stdout = "pipe"})
      local n, sum = 0, 0
      for line in p.stdout:lines() do
        n = n + 1
        sum = sum + tonumber(line)
      end
      assert.equal(1000, n)
      assert.equal(500500, sum)
      p = par.popen({"printf", "1 2\\n3 4\\n"}, {stdout = "pipe"})
      local got = {}
      for a, b in p.stdout:lines("n", "n") do got[#got + 1] = a + b end
      assert.same({3, 7}, got)
      p:wait()
    end)

    it("read long lines and all of a big output", function()
      local long = string.rep("z", 100000)
      local p = par.popen({"cat"}, {stdin = "pipe", stdout = "pipe"})
      local writer = par.thread(function()
        p.stdin:write(long, "\n", "tail")
        p.stdin:close()
      end)
      writer:start()
      assert.equal(long, p.stdout:read("l"))
      assert.equal("tail", p.stdout:read("a"))
      writer:join()
      p:wait()
    end)

    it("write strings and numbers and chain", function()
      local p = par.popen({"cat"}, {stdin = "pipe", stdout = "pipe"})
      assert.equal(p.stdin, p.stdin:write("x", 1, " ", 2.5, " ", 1e100))
      assert.matches("string expected, got table", msgof(p.stdin.write, p.stdin, {}), 1, true)
      p.stdin:write("\n"):close()
      assert.equal("x1 2.5 1e+100\n", p.stdout:read("a"))
      p:wait()
    end)

    it("refuse the wrong direction and use after close", function()
      local p = par.popen({"cat"}, {stdin = "pipe", stdout = "pipe"})
      assert.matches("this pipe end is for writing", msgof(p.stdin.read, p.stdin), 1, true)
      assert.matches("this pipe end is for reading", msgof(p.stdout.write, p.stdout, "x"), 1, true)
      assert.is_true(p.stdin:close())
      assert.is_true(p.stdin:close())  -- twice is fine
      assert.matches("attempt to use a closed file", msgof(p.stdin.write, p.stdin, "x"), 1, true)
      assert.equal("pipe (closed)", tostring(p.stdin))
      assert.matches("^pipe %(read end", tostring(p.stdout))
      p:wait()
    end)
  end)

  describe("pipelines", function()
    it("echo qwerty | tr q z", function()
      local p1 = par.popen({"echo", "qwerty"}, {stdout = "pipe"})
      local p2 = par.popen({"tr", "q", "z"}, {stdin = p1.stdout, stdout = "pipe"})
      p1.stdout:close()
      local out, err = p2:communicate()
      assert.equal("zwerty\n", out)
      assert.is_nil(err)
      assert.equal(0, p1:wait())
    end)

    it("three stages, and the first gets SIGPIPE when the last stops reading", function()
      local p1 = par.popen({"yes"}, {stdout = "pipe"})
      local p2 = par.popen({"tr", "y", "n"}, {stdin = p1.stdout, stdout = "pipe"})
      p1.stdout:close()
      local p3 = par.popen({"head", "-n", "3"}, {stdin = p2.stdout, stdout = "pipe"})
      p2.stdout:close()
      assert.equal("n\nn\nn\n", (p3:communicate()))
      assert.equal(-13, p2:wait(10))  -- SIGPIPE: the child had the default action
      assert.equal(-13, p1:wait(10))
    end)
  end)

  describe("par.run", function()
    it("returns args, returncode, stdout and stderr", function()
      local argv = {"sh", "-c", "cat; echo err >&2; exit 3"}
      local r = par.run(argv, {input = "in\n", capture = true})
      assert.equal(argv, r.args)
      assert.equal(3, r.returncode)
      assert.equal("in\n", r.stdout)
      assert.equal("err\n", r.stderr)
      r = par.run({"true"})
      assert.equal(0, r.returncode)
      assert.is_nil(r.stdout)
    end)

    it("raises CalledProcessError with check", function()
      local e = errof(par.run, {"sh", "-c", "echo o; echo e >&2; exit 2"}, {capture = true, check = true})
      assert.equal("CalledProcessError", e.kind)
      assert.equal(par.errors.CalledProcessError, e.kind)
      assert.equal("Command 'sh -c echo o; echo e >&2; exit 2' returned non-zero exit status 2.", tostring(e))
      assert.equal(2, e.returncode)
      assert.equal("o\n", e.output)
      assert.equal("o\n", e.stdout)
      assert.equal("e\n", e.stderr)
      assert.equal(0, par.run({"true"}, {check = true}).returncode)
    end)

    it("kills the child on timeout, waits for it, then raises", function()
      local name = support.tmpname()
      local t0 = par.clock()
      local e = errof(par.run, {"sh", "-c", "echo partial; sleep 0.5; touch " .. name}, {timeout = 0.2, capture = true})
      assert.is_true(par.clock() - t0 < 0.45)
      assert.equal("TimeoutExpired", e.kind)
      assert.equal(0.2, e.timeout)
      assert.equal("partial\n", e.output)
      par.sleep(0.6)
      local f = io.open(name)
      if f then f:close() os.remove(name) end
      assert.is_nil(f, "the child was not killed")
    end)
  end)

  describe("par.check_output", function()
    it("returns stdout", function()
      assert.equal('"Hello, World!"\n', par.check_output({"echo", '"Hello, World!"'}))
      assert.equal("in", par.check_output({"cat"}, {input = "in"}))
    end)

    it("raises CalledProcessError worded as Python's", function()
      local e = errof(par.check_output, "exit 1", {shell = true})
      assert.equal("Command 'exit 1' returned non-zero exit status 1.", tostring(e))
      assert.equal(1, e.returncode)
      assert.equal("exit 1", e.cmd)
      assert.equal("", e.output)
      assert.is_nil(e.stderr)
      e = errof(par.check_output, {"false"})
      assert.equal("Command 'false' returned non-zero exit status 1.", tostring(e))
      e = errof(par.check_output, {"sh", "-c", "kill -9 $$"})
      assert.equal("Command 'sh -c kill -9 $$' died with <Signals.SIGKILL: 9>.", tostring(e))
      assert.equal(-9, e.returncode)
    end)

    it("raises TimeoutExpired", function()
      local e = errof(par.check_output, {"sleep", "5"}, {timeout = 0.1})
      assert.equal("Command 'sleep 5' timed out after 0.1 seconds", tostring(e))
    end)
  end)

  describe("the global lock", function()
    it("is released while waiting: 8 runs of sleep 0.2 in 8 threads", function()
      local t0 = par.clock()
      local threads = {}
      for i = 1, 8 do
        threads[i] = par.thread(function() return par.run({"sleep", "0.2"}).returncode end)
        threads[i]:start()
      end
      for i = 1, 8 do assert.equal(0, threads[i]:result()) end
      assert.is_true(par.clock() - t0 < 1.0, "took " .. (par.clock() - t0))
    end)

    it("is released while reading, writing and communicating", function()
      local p = par.popen({"sh", "-c", "sleep 0.3; echo late"}, {stdout = "pipe"})
      local q = par.popen({"sh", "-c", "sleep 0.3; cat"}, {stdin = "pipe", stdout = "pipe"})
      local ticks = 0
      local ticker = par.thread(function()
        for _ = 1, 20 do ticks = ticks + 1; par.sleep(0.01) end
      end)
      ticker:start()
      local reader = par.thread(function() return p.stdout:read("l") end)
      reader:start()
      local talker = par.thread(function() return (q:communicate("hello")) end)
      talker:start()
      local n = 0
      for _ = 1, 5e6 do n = n + 1 end  -- and Lua code runs meanwhile
      ticker:join()
      assert.equal(20, ticks)
      assert.equal("late", reader:result())
      assert.equal("hello", talker:result())
      p:wait()
    end)
  end)

  describe("cancellation", function()
    local function cancel_quickly(fn)
      local t = par.thread(fn)
      t:start()
      par.sleep(0.05)
      local t0 = par.clock()
      t:cancel{force = true}
      assert.is_true(t:join(5))
      assert.is_true(par.clock() - t0 < 1, "cancel took " .. (par.clock() - t0))
      local ok, e = pcall(t.result, t)
      assert.is_false(ok)
      assert.equal("Cancelled", e.kind)
    end

    it("ends a wait", function()
      local p = par.popen({"sleep", "10"})
      cancel_quickly(function() p:wait() end)
      p:kill()
      p:wait()
    end)

    it("ends a read", function()
      local p = par.popen({"sleep", "10"}, {stdout = "pipe"})
      cancel_quickly(function() return p.stdout:read("a") end)
      p:kill()
      p:wait()
    end)

    it("ends a communicate, and run kills its child", function()
      local p = par.popen({"sleep", "10"}, {stdout = "pipe"})
      cancel_quickly(function() return p:communicate() end)
      assert.is_nil(p.returncode)
      p:kill()
      p:wait()
      cancel_quickly(function() return par.run({"sleep", "10"}) end)
    end)
  end)

  describe("what the child gets", function()
    it("no descriptor beyond 0, 1 and 2, even one we leave inheritable", function()
      local f = io.tmpfile()  -- fopen: not close-on-exec
      -- ls itself has one more open: the directory it lists
      local out = par.check_output({"ls", "/proc/self/fd"})
      local fds = {}
      for n in out:gmatch("%d+") do fds[#fds + 1] = tonumber(n) end
      f:close()
      assert.same({0, 1, 2, 3}, fds)
    end)

    it("default SIGPIPE and SIGXFSZ even when the parent ignores them", function()
      -- a parlua parent started with both ignored (sh's `trap ""` is inherited by exec)
      local code = [[
        local par = require "parlua"
        local f = io.open("/proc/self/status")
        local mine = f:read("a"):match("SigIgn:%s*(%x+)")
        f:close()
        local child = par.check_output({"grep", "SigIgn", "/proc/self/status"}):match("SigIgn:%s*(%x+)")
        io.write(mine, " ", child)
      ]]
      -- the parlua program of the build under test when known (a sanitizer
      -- build cannot be loaded into a plain lua5.4), else lua5.4
      local script = support.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(code)
      f:close()
      local build = os.getenv("PARLUA_BUILD")
      local interpreter = build and build .. "/parlua" or "lua5.4"
      local out = par.check_output({"sh", "-c", 'trap "" PIPE XFSZ; exec "$0" "$1"', interpreter, script})
      os.remove(script)
      local mine, child = out:match("(%x+) (%x+)")
      local bits = (1 << (13 - 1)) | (1 << (25 - 1))  -- SIGPIPE 13, SIGXFSZ 25
      assert.equal(bits, tonumber(mine, 16) & bits, "the control: the parent ignores both")
      assert.equal(0, tonumber(child, 16) & bits)
    end)

    it("an empty signal mask", function()
      local out = par.check_output({"grep", "SigBlk", "/proc/self/status"})
      assert.equal("SigBlk:\t0000000000000000\n", out)
    end)
  end)

  describe("reaping", function()
    it("leaves no zombie and no descriptor after 1,000 spawns", function()
      collectgarbage()
      local fds_before = fd_count()
      for i = 1, 1000 do
        if i % 4 == 0 then
          -- dropped without a wait, with pipes open: the collector and
          -- the reaper deal with it
          par.popen({"true"}, {stdin = "pipe", stdout = "pipe", stderr = "pipe"})
        elseif i % 4 == 1 then
          par.run({"true"}, {capture = true})
        elseif i % 4 == 2 then
          par.popen({"true"}):wait()
        else
          par.run({"true"})
        end
      end
      -- a few still running when collected
      for _ = 1, 5 do par.popen({"sleep", "0.1"}) end
      collectgarbage()
      collectgarbage()
      par.sleep(0.3)
      par.run({"true"})  -- every new start reaps the orphans that ended
      assert.equal(0, zombies())
      collectgarbage()
      assert.equal(fds_before, fd_count())
    end)

    it("never reaps a child it did not start", function()
      local f = io.popen("sleep 0.2; echo mine")  -- the host's own child
      for _ = 1, 20 do par.run({"true"}) end
      local p = par.popen({"sleep", "0.3"})
      p:wait()
      assert.equal("mine\n", f:read("a"))
      local ok, how, code = f:close()  -- pclose must still find its child
      assert.is_true(ok)
      assert.equal("exit", how)
      assert.equal(0, code)
    end)
  end)
end)
