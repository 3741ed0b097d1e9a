-- The lock timeline: par.gil_trace, par.gil_trace_stop and the trace.
local par = require "parlua"
local support = dofile("tests/spec/support.lua")

local function burn(seconds)
  local until_t, x = par.clock() + seconds, 0
  while par.clock() < until_t do x = x + 1 end
  return x
end

local function lane_of(summary, name)
  for _, l in ipairs(summary) do
    if l.thread == name then return l end
  end
end

-- Run a Python script on a file; its stdout, or fails with what it printed.
local function python(script, path)
  local py = support.tmpname(".py")
  local f = assert(io.open(py, "w"))
  f:write(script)
  f:close()
  local p = io.popen(string.format("python3 %s %s 2>&1", py, path))
  local out = p:read("a")
  local ok = p:close()
  os.remove(py)
  assert(ok, out)
  return out
end

-- A function whose _ENV is this file's _G (busted gives each spec file an
-- environment of its own, which would travel as a copy).
local function fn(src)
  return assert(load("return " .. src, "=task", "t", _G))()
end

describe("par.gil_trace", function()
  after_each(function()
    pcall(par.gil_trace_stop)  -- a failed test leaves nothing recording
    par.setswitchinterval(0.005)
  end)

  it("shows two CPU-bound threads taking turns about every switch interval", function()
    local interval = 0.01
    par.setswitchinterval(interval)
    par.gil_trace()
    local a = support.go(burn, 0.6)
    local b = support.go(burn, 0.6)
    a:join(); b:join()
    local trace = par.gil_trace_stop()
    local names = {[a.name] = true, [b.name] = true}
    -- acquisitions by the two, in order, and how long each holding lasted
    local turns, holds, since = {}, {}, {}
    local switch_releases, releases = 0, 0
    for ev in trace:events() do
      if names[ev.thread] then
        if ev.event == "acquired" then
          turns[#turns + 1] = ev.thread
          since[ev.thread] = ev.time
        elseif ev.event == "released" then
          releases = releases + 1
          if ev.reason == "interval expired" then switch_releases = switch_releases + 1 end
          if since[ev.thread] then holds[#holds + 1] = ev.time - since[ev.thread] end
        end
      end
    end
    -- 1.2 s of work in turns of about 10 ms: dozens of turns even when
    -- the machine is loaded (then a turn can last several intervals).
    assert.is_true(#turns >= 12, "only " .. #turns .. " turns")
    local alternations = 0
    for i = 2, #turns do
      if turns[i] ~= turns[i - 1] then alternations = alternations + 1 end
    end
    assert.is_true(alternations >= 0.9 * (#turns - 1),
                   alternations .. " alternations in " .. #turns .. " turns")
    assert.is_true(switch_releases >= 0.8 * releases - 2,
                   switch_releases .. " of " .. releases .. " releases on request")
    table.sort(holds)
    local median = holds[#holds // 2 + 1]
    assert.is_true(median >= 0.5 * interval and median <= 20 * interval,
                   "median holding " .. median)
    local s = trace:summary()
    for name in pairs(names) do
      local l = lane_of(s, name)
      assert.is_true(l.handoffs >= 5, name .. ": " .. l.handoffs .. " hand-offs")
      -- each waits about as long as it holds: the other one's turns
      assert.is_true(l.waited_ratio > 0.2 and l.held_ratio > 0.2,
                     string.format("%s held %.2f waited %.2f", name, l.held_ratio, l.waited_ratio))
      assert.is_true(l.longest_wait >= interval * 0.5)
      -- a thread that hands the lock over queues up again at once: CPU-bound,
      -- it never runs free
      assert.is_true(l.free_ratio < 0.1, name .. " ran free " .. l.free_ratio)
      assert.near(l.span, l.held + l.waited + l.free, 1e-6)
    end
  end)

  it("records a sleep as a release for a blocking call: sleep", function()
    par.gil_trace()
    local t = support.go(function() par.sleep(0.05) end)
    t:join()
    local trace = par.gil_trace_stop()
    local slept, back, joined
    for ev in trace:events() do
      if ev.thread == t.name and ev.event == "released" and ev.reason == "blocking call: sleep" then
        slept = ev.time
      elseif slept and not back and ev.thread == t.name and ev.event == "request" then
        back = ev
      elseif ev.thread == "MainThread" and ev.reason == "blocking call: thread join" then
        joined = true
      end
    end
    assert.is_number(slept, "no release for the sleep")
    assert.is_true(back.urgent, "a thread back from a blocking call asks urgently")
    assert.is_true(back.time - slept >= 0.04)
    assert.is_true(joined)
    local l = lane_of(trace:summary(), t.name)
    assert.is_true(l.free >= 0.04, "the sleep ran free: " .. l.free)
    assert.equal(1, l.releases["blocking call: sleep"])
    assert.equal(1, l.releases["thread end"])
  end)

  it("names the blocking call of each release", function()
    local usleep = require("parlua.ffi").open():fn("int usleep(unsigned int)", {nogil = true})
    local q, lock, ev = par.queue(), par.lock(), par.event()
    lock:acquire()
    local pool <close> = par.pool{workers = 1}
    pool:map(function() return true end, {1})  -- started
    par.gil_trace()
    local t = support.go(function()
      q:get()          -- blocking call: queue
      lock:acquire()   -- blocking call: lock wait
      lock:release()
      ev:wait(0.01)    -- blocking call: lock wait (an event)
      usleep(1000)     -- blocking call: ffi nogil
      par.run({"true"})  -- blocking call: popen
    end)
    par.sleep(0.02)
    q:put(1)
    par.sleep(0.02)
    lock:release()
    pool:submit(par.sleep, 0.02):result()  -- blocking call: future wait
    t:join()                               -- blocking call: thread join
    local trace = par.gil_trace_stop()
    local seen = {}
    for ev_ in trace:events() do
      if ev_.event == "released" then seen[ev_.thread .. ": " .. ev_.reason] = true end
    end
    for _, want in ipairs{
        t.name .. ": blocking call: queue", t.name .. ": blocking call: lock wait",
        t.name .. ": blocking call: ffi nogil", t.name .. ": blocking call: popen",
        t.name .. ": thread end", "MainThread: blocking call: sleep",
        "MainThread: blocking call: future wait", "MainThread: blocking call: thread join"} do
      assert.is_true(seen[want], want .. " missing")
    end
  end)

  it("keeps the newest events when the ring is full and counts the dropped ones", function()
    par.gil_trace{events = 50}
    local began = par.clock()
    local at = {}
    for i = 1, 30 do  -- each sleep: released, request, acquired
      at[i] = par.clock() - began
      par.sleep(0.002)
    end
    local trace = par.gil_trace_stop()
    local info = trace:info()
    assert.equal(50, info.capacity)
    assert.equal(50, info.nevents)
    assert.is_true(info.dropped >= 40, "dropped " .. info.dropped)
    local first, last, prev = nil, nil, -1
    for ev in trace:events() do
      first = first or ev.time
      assert.is_true(ev.time >= prev, "events out of order")
      prev, last = ev.time, ev
    end
    -- the oldest kept event is younger than the 10th sleep; the newest is
    -- the lock coming back after the last one
    assert.is_true(first > at[10], string.format("oldest kept %.4f, 10th sleep %.4f", first, at[10]))
    assert.equal("acquired", last.event)
    assert.is_true(last.time >= at[30])
    assert.equal(info.dropped, trace:summary().dropped)
    assert.matches("dropped", tostring(trace))
  end)

  it("writes an SVG that parses as XML with one lane per thread", function()
    par.gil_trace()
    local ts = {}
    for i = 1, 3 do ts[i] = support.go(function() burn(0.02); par.sleep(0.01); burn(0.02) end) end
    for i = 1, 3 do ts[i]:join() end
    local trace = par.gil_trace_stop()
    local path = support.tmpname(".svg")
    trace:svg(path, {title = "three threads & the main one", width = 1000})
    local out = python([[
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = '{http://www.w3.org/2000/svg}'
assert root.tag == ns + 'svg', root.tag
assert root.get('width') == '1000'
lanes = [g.get('data-thread') for g in root.iter(ns + 'g') if g.get('class') == 'lane']
texts = ' '.join(t.text or '' for t in root.iter(ns + 'text'))
for word in ('holds the lock', 'waits for it', 'runs without it', 'hand-off', 'ms'):
    assert word in texts, word
print(len(lanes), ','.join(sorted(lanes)))
]], path)
    os.remove(path)
    local names = {"MainThread"}
    for i = 1, 3 do names[#names + 1] = ts[i].name end
    table.sort(names)
    assert.equal(string.format("4 %s\n", table.concat(names, ",")), out)
  end)

  it("draws a window of the trace with from/to, and a dense trace in a few rectangles per pixel", function()
    local ping, pong = par.queue(), par.queue()
    par.gil_trace()
    local echo = support.go(function() for _ = 1, 3000 do pong:put(ping:get()) end end)
    for i = 1, 3000 do ping:put(i); pong:get() end
    echo:join()
    local trace = par.gil_trace_stop()
    local half = trace:info().duration / 2
    local whole, part = support.tmpname(".svg"), support.tmpname(".svg")
    trace:svg(whole)
    trace:svg(part, {from = half / 2, to = half})
    local script = [[
import sys, re, xml.etree.ElementTree as ET
ns = '{http://www.w3.org/2000/svg}'
root = ET.parse(sys.argv[1]).getroot()
rects = sum(1 for g in root.iter(ns + 'g') if g.get('class') == 'lane' for r in g.iter(ns + 'rect'))
ticks = [t.text for t in root.iter(ns + 'text') if re.match(r'^[0-9.]+ (ms|s|µs)$', t.text or '')]
print(rects, ticks[0], ticks[-1])
]]
    local w_rects, w_first = python(script, whole):match("^(%d+) (%S+ %S+)")
    local p_rects, p_first, p_last = python(script, part):match("^(%d+) (%S+ %S+) (%S+ %S+)")
    os.remove(whole); os.remove(part)
    -- 2 lanes of 776 px: a background and at most 2 rectangles per column
    assert.is_true(tonumber(w_rects) <= 2 * (1 + 2 * 776), w_rects .. " rectangles")
    assert.equal("0 ms", w_first)
    assert.is_true(tonumber(p_rects) > 2)
    local function seconds(label)
      local v, unit = label:match("^(%S+) (%S+)$")
      return tonumber(v) * (unit == "s" and 1 or unit == "ms" and 1e-3 or 1e-6)
    end
    assert.is_true(seconds(p_first) >= half / 2 - 1e-9, p_first)
    assert.is_true(seconds(p_last) <= half + 1e-9, p_last)
  end)

  it("writes JSON in Chrome's trace-event format", function()
    par.gil_trace()
    support.go(function() burn(0.02); par.sleep(0.005) end):join()
    local trace = par.gil_trace_stop()
    local path = support.tmpname(".json")
    trace:json(path)
    local out = python([[
import sys, json
d = json.load(open(sys.argv[1]))
evs = d['traceEvents']
assert d['displayTimeUnit'] == 'ms'
names = {e['args']['name'] for e in evs if e['ph'] == 'M' and e['name'] == 'thread_name'}
for e in evs:
    for k in ('name', 'ph', 'pid', 'tid'):
        assert k in e, (k, e)
    if e['ph'] == 'X':
        assert e['ts'] >= 0 and e['dur'] >= 0, e
slices = {e['name'] for e in evs if e['ph'] == 'X'}
print(len(names), sorted(slices))
]], path)
    os.remove(path)
    assert.equal("2 ['holds the lock', 'runs without the lock', 'waits for the lock']\n", out)
  end)

  it("shows each states worker's own lock: every lane runs, none waits", function()
    local pool <close> = par.pool{workers = 2, kind = "states"}
    pool:map(fn "function() return true end", {1, 2})  -- both workers up
    par.gil_trace()
    local spin = fn [[function(s)
      local p = require "parlua"
      local until_t = p.clock() + s
      while p.clock() < until_t do end
    end]]
    local fs = {}
    for i = 1, 2 do fs[i] = pool:submit(spin, 0.2) end
    for i = 1, 2 do fs[i]:result() end
    local s = par.gil_trace_stop():summary()
    local workers = 0
    for _, l in ipairs(s) do
      if l.state ~= 1 then
        workers = workers + 1
        assert.is_true(l.held_ratio > 0.9, l.thread .. " held " .. l.held_ratio)
        assert.is_true(l.waited < 0.005, l.thread .. " waited " .. l.waited)
      end
    end
    assert.equal(2, workers)
    assert.equal(3, s.states)
  end)

  it("shows only the parent's lock for kind processes", function()
    local pool <close> = par.pool{workers = 2, kind = "processes"}
    pool:map(fn "function() return true end", {1, 2})
    par.gil_trace()
    pool:map(fn "function(s) require('parlua').sleep(s) return s end", {0.05, 0.05})
    local s = par.gil_trace_stop():summary()
    assert.equal(1, s.states)
    local main = lane_of(s, "MainThread")
    assert.is_true(main.free > 0.04, "the parent waits without its lock: " .. main.free)
  end)

  it("refuses bad options and calls out of order, saying why", function()
    assert.has_error(function() par.gil_trace{events = 0} end,
      "bad argument #1 to 'gil_trace' ('events' must be an integer from 1 to 10000000)")
    assert.has_error(function() par.gil_trace{events = 1.5} end,
      "bad argument #1 to 'gil_trace' ('events' must be an integer from 1 to 10000000)")
    assert.has_error(function() par.gil_trace{size = 10} end,
      "bad argument #1 to 'gil_trace' (unknown option 'size')")
    assert.has_error(function() par.gil_trace(10) end,
      "bad argument #1 to 'gil_trace' (table expected, got number)")
    assert.has_error(function() par.gil_trace_stop() end,
      "no lock trace is recording (par.gil_trace starts one)")
    par.gil_trace()
    assert.has_error(function() par.gil_trace() end,
      "a lock trace is already recording (par.gil_trace_stop ends it)")
    local trace = par.gil_trace_stop()
    assert.has_error(function() trace:svg() end,
      "bad argument #1 to 'svg' (string expected, got no value)")
    assert.has_error(function() trace:svg("x.svg", {width = 10}) end,
      "bad argument #2 to 'svg' ('width' must be an integer from 400 to 20000)")
    assert.has_error(function() trace:svg("x.svg", {colour = "red"}) end,
      "bad argument #2 to 'svg' (unknown option 'colour')")
    assert.has_error(function() trace:svg("x.svg", {from = -1}) end,
      "bad argument #2 to 'svg' ('from' must be a non-negative number of seconds)")
    assert.has_error(function() trace:svg("x.svg", {from = 0.5, to = 0.2}) end,
      "bad argument #2 to 'svg' ('from' must come before 'to')")
    local err = support.errof(trace.json, trace, "/nonexistent-dir/t.json")
    assert.matches("cannot write '/nonexistent%-dir/t.json': No such file or directory", err)
  end)

  describe("the parlua program's --gil-trace", function()
    local prog = support.build_dir() .. "/parlua"

    -- Output (stdout and stderr) and exit status of the program.
    local function run(args)
      local p = io.popen(prog .. " " .. args .. " 2>&1")
      local out = p:read("a")
      local _, _, status = p:close()
      return out, status
    end

    it("traces a whole script into an SVG and says what each thread did", function()
      local script = support.tmpname(".lua")
      local f = assert(io.open(script, "w"))
      f:write([[
local par = require "parlua"
local t = par.thread(function() par.sleep(0.02) end)
t:start(); t:join()
print("script done")
]])
      f:close()
      local svg = support.tmpname(".svg")
      local out, status = run(string.format("--gil-trace %s %s", svg, script))
      os.remove(script)
      assert.equal(0, status, out)
      assert.matches("script done", out)
      assert.matches("lock timeline of [%d.]+ s written to " .. svg:gsub("%p", "%%%0"), out)
      assert.matches("MainThread +held +%d+%% +waited", out)
      assert.matches("Thread%-1 +held", out)
      local lanes = python([[
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
print(sum(1 for g in root.iter('{http://www.w3.org/2000/svg}g') if g.get('class') == 'lane'))
]], svg)
      os.remove(svg)
      assert.equal("2\n", lanes)
    end)

    it("writes JSON for a name ending in .json, even when the script fails", function()
      local json = support.tmpname(".json")
      local out, status = run(string.format("--gil-trace %s -e %q", json, "error('boom')"))
      assert.equal(1, status)
      assert.matches("boom", out)
      assert.equal("ok\n", python([[
import sys, json
assert 'traceEvents' in json.load(open(sys.argv[1]))
print('ok')
]], json))
      os.remove(json)
    end)

    it("refuses a missing file name and says when it cannot write", function()
      local out, status = run("--gil-trace")
      assert.equal(1, status)
      assert.matches("'%-%-gil%-trace' needs argument", out)
      out, status = run("--gil-trace /nonexistent-dir/t.svg -e 'x = 1'")
      assert.equal(1, status)
      assert.matches("cannot write '/nonexistent%-dir/t.svg': No such file or directory", out)
    end)
  end)
end)
