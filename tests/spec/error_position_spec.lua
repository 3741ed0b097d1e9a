-- The runtime's errors say where they were raised, in both hosts: the
-- position in the message as luaL_error puts it, and the traceback lua.c
-- prints for an uncaught error -- the same output as a plain error() at
-- the same line, with e.kind and the fields as they were.
local par = require "parlua"
local support = dofile("tests/spec/support.lua")

local dir = io.popen("mktemp -d"):read("l")
local function absolute(path) return path:sub(1, 1) == "/" and path or os.getenv("PWD") .. "/" .. path end
local build = absolute(support.build_dir())

-- Run `source` saved as dir/name with `lua` (a command); output and status.
local function run(lua, name, source)
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(source)
  f:close()
  local cmd = ("cd '%s' && LUA_CPATH='%s/?.so;;' %s %s 2>&1"):format(dir, build, lua, name)
  local p = io.popen(cmd)
  local out = p:read("a")
  local _, _, status = p:close()
  return out, status
end

local hosts = {
  {"stock lua5.4", "lua5.4", "lua5.4"},
  -- Messages name the program as invoked, as lua5.4's do.
  {"the parlua program", build .. "/parlua", (build .. "/parlua"):gsub("%p", "%%%0")},
}

-- Line 5 raises, inside a local function called from the main chunk.
local function script(setup, raise)
  return ("local par = require 'parlua'\n%s\nlocal function go()\n  -- the line below raises\n  %s\nend\ngo()\n"):format(setup, raise)
end

describe("an uncaught error of the runtime", function()
  teardown(function() os.execute(("rm -rf '%s'"):format(dir)) end)

  local cases = {
    {"Shutdown: submit after shutdown", "local pool = par.pool{workers = 1}; pool:shutdown()",
     "pool:submit(print)", "cannot submit after shutdown", "method 'submit'"},
    {"Transfer: a refused coroutine", "local pool = par.pool{workers = 1, kind = 'states'}",
     "pool:submit(print, coroutine.create(print))", "argument 1: cannot send a coroutine", "method 'submit'"},
    {"OSError: a program that cannot start", "",
     "par.run{'/nonexistent/program'}", "cannot run '/nonexistent/program': No such file or directory",
     "function 'parlua.run'"},
    {"Timeout: an empty queue", "local q = par.queue()", "q:get(0)", "queue is empty", "method 'get'"},
  }
  for _, host in ipairs(hosts) do
    for _, c in ipairs(cases) do
      local what, setup, raise, message, fname = c[1], c[2], c[3], c[4], c[5]
      it(("prints its position and a traceback as for error() in %s: %s"):format(host[1], what), function()
        if host[3] == "lua5.4" and support.sanitizer() then
          return pending("a sanitizer build's module cannot load into stock lua5.4")
        end
        local out, status = run(host[2], "raise.lua", script(setup, raise))
        local plain, plain_status = run(host[2], "raise.lua", script(setup, ("error(%q)"):format(message)))
        assert.equal(1, status, out)
        assert.equal(plain_status, status)
        assert.matches("^" .. host[3] .. ": raise%.lua:5: ", out)
        -- The one difference: which C function raised.  The traceback of the
        -- parlua program names functions as lua5.4's does.
        assert.equal(plain:gsub("in function 'error'", "in " .. fname:gsub("%%", "%%%%")), out)
      end)
    end
  end

  it("with a task's error re-raised by result(): the task's position, both tracebacks", function()
    local lua = os.getenv("PARLUA_LUA") and hosts[2] or hosts[1]
    local out, status = run(lua[2], "task.lua", [[
local par = require 'parlua'
local pool = par.pool{workers = 1, kind = 'states'}
local f = pool:submit(function() return require('parlua').queue():get(0) end)
f:result()
]])
    assert.equal(1, status, out)
    assert.matches("^" .. lua[3]:gsub("%.", "%%.") .. ": task%.lua:3: queue is empty\nstack traceback:\n\t%[C%]: in method 'result'\n\ttask%.lua:4: in main chunk", out)
    assert.matches("\n%[worker%] task%.lua:3: queue is empty\nstack traceback:\n", out)
  end)
end)

describe("an error object caught by the script", function()
  it("keeps kind and fields; where is its position; tostring gives position and message, one line", function()
    local pool = par.pool{workers = 1}
    pool:shutdown()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, e = pcall(function() pool:submit(print) end)
    assert.is_false(ok)
    assert.equal("Shutdown", e.kind)
    assert.equal("cannot submit after shutdown", e.message)
    assert.equal(("%s:%d"):format(debug.getinfo(1, "S").short_src, line), e.where)
    assert.equal(e.where .. ": cannot submit after shutdown", tostring(e))
    local keys = {}
    for k in pairs(e) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({"kind", "message", "where"}, keys)
  end)

  it("has no position when a C function called the raising one, as with luaL_error", function()
    local e = support.errof(par.queue().get, par.queue(), 0)
    assert.is_nil(e.where)
    assert.equal("queue is empty", tostring(e))
  end)

  it("gives no traceback to a message handler that is tostring, nor to tostring after pcall", function()
    local q = par.queue()
    local ok, text = xpcall(function() q:get(0) end, tostring)
    assert.is_false(ok)
    assert.matches("^[^\n]*: queue is empty$", text)
    local _, e = pcall(function() q:get(0) end)
    assert.matches("^[^\n]*: queue is empty$", tostring(e))
  end)
end)
