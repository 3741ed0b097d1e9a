-- External processes: the examples of the Russian Python tutorial
-- ("Внешние процессы", "Модуль subprocess") written with parlua.
--
--   parlua scripts/subprocess.lua
--
-- Python's bytes are Lua strings here; show() prints them the way the
-- tutorial's notebook does, so the two read side by side.
local par = require "parlua"

local function repr(v)
  if v == nil then return "nil" end
  return "'" .. v:gsub("\\", "\\\\"):gsub("\n", "\\n") .. "'"
end

local function show(out, err)
  print("(" .. repr(out) .. ", " .. repr(err) .. ")")
end

-- os.system('ls') prints the listing and returns the exit code.  Lua's
-- os.execute does the same through a shell (and returns three values).
print("-- os.execute and io.popen, for contrast")
print(os.execute("ls"))
print(os.execute('echo "Hello, World!"'))
-- io.popen reads a command's output, but only one way and with a shell.
local f = io.popen('echo "Hello, World!"')
print(repr(f:read("a")), f:close())

print("-- check_output instead of os.execute('echo \"Hello, World!\"')")
print(repr(par.check_output({"echo", '"Hello, World!"'})))

print("-- a shell command that fails raises CalledProcessError")
local ok, e = pcall(par.check_output, "exit 1", {shell = true})
if not ok and e.kind == par.errors.CalledProcessError then
  print("Произошло исключение: " .. tostring(e))
end

print("-- Popen without a pipe: the output goes straight to ours")
local p = par.popen({"echo", "hi"})
show(p:communicate())

print("-- stdout = \"pipe\": communicate returns it")
p = par.popen({"echo", "hi"}, {stdout = "pipe"})
show(p:communicate())

print("-- communicate(input) writes to the child's stdin")
p = par.popen({"cat"}, {stdout = "pipe", stdin = "pipe"})
show(p:communicate("sample text"))

print("-- a pipeline: echo qwerty | tr q z")
local p1 = par.popen({"echo", "qwerty"}, {stdout = "pipe"})
local p2 = par.popen({"tr", "q", "z"}, {stdin = p1.stdout, stdout = "pipe"})
-- Close our copy of p1's stdout, so that p1 gets SIGPIPE if p2 exits
-- early, and p2 sees the end of its input when p1 is done.
p1.stdout:close()
show(p2:communicate())
p1:wait()

print("-- par.run: the everyday call")
local r = par.run({"sh", "-c", "echo out; echo err >&2; exit 3"}, {capture = true})
print(r.returncode, repr(r.stdout), repr(r.stderr))
