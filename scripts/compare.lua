-- The comparison: one interpreter under a global lock against isolated
-- interpreters, on the two tutorials' experiments.
--   prices: 20 prices, each "raised" by a function that sleeps (Portuguese
--           tutorial; I/O-bound: every kind should overlap the sleeps)
--   cpu:    a pure-Lua counting loop split into equal tasks (Russian
--           tutorial; CPU-bound: only isolated interpreters scale)
-- For serial and for every kind of worker this runtime offers (threads,
-- states, processes), with 2 and N workers.  Prints a table per experiment,
-- writes an SVG chart of speedup against workers, and with --python runs
-- the same experiments with Python's concurrent.futures in the same run.
--
--   parlua scripts/compare.lua [--sleep S] [--work N] [--workers 2,4]
--                              [--python] [--json] [--svg FILE]
local par = require "parlua"

local opts = {
  sleep = 0.1, work = 1.2e8, workers = nil, python = false, json = false,
  svg = os.getenv("TMPDIR") and os.getenv("TMPDIR") .. "/parlua-compare.svg" or "/tmp/parlua-compare.svg",
}
if os.getenv("PARLUA_SMOKE") then opts.sleep, opts.work = 0.01, 2e6 end
do
  local i = 1
  while arg and arg[i] do
    local a = arg[i]
    if a == "--sleep" then opts.sleep = assert(tonumber(arg[i + 1]), "--sleep needs seconds"); i = i + 1
    elseif a == "--work" then opts.work = assert(tonumber(arg[i + 1]), "--work needs a number"); i = i + 1
    elseif a == "--workers" then
      opts.workers = {}
      for n in assert(arg[i + 1], "--workers needs a list"):gmatch("%d+") do opts.workers[#opts.workers + 1] = tonumber(n) end
      i = i + 1
    elseif a == "--python" then opts.python = true
    elseif a == "--json" then opts.json = true
    elseif a == "--svg" then opts.svg = assert(arg[i + 1], "--svg needs a file"); i = i + 1
    else error("unknown option " .. a .. " (see the comment at the top of compare.lua)", 0) end
    i = i + 1
  end
end
local ncpu = par.cpu_count()
opts.workers = opts.workers or (ncpu > 2 and {2, ncpu} or {2, 4})

-- The kinds this build offers (a pool that cannot be made is skipped).
local kinds = {}
for _, kind in ipairs{"threads", "states", "processes"} do
  local ok, pool = pcall(par.pool, {kind = kind, workers = 1})
  if ok then pool:shutdown(); kinds[#kinds + 1] = kind
  else io.stderr:write(("(kind %s: %s)\n"):format(kind, tostring(pool):gsub("^.-:%d+: ", ""))) end
end

-- Progress on stderr, one line rewritten in place on a terminal.
local tty = os.execute("test -t 2")
local function progress(msg)
  if tty then io.stderr:write("\r\27[K" .. msg) else io.stderr:write(msg, "\n") end
end

-- The work.  Both functions are self-contained so every kind can send them.
local pause = opts.sleep
local function raise_price(price)
  require("parlua").sleep(pause)
  return price + price / 10 * 100
end
local function count(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

local prices = {}
for i = 0, 19 do prices[#prices + 1] = i * i * 42 end
local function cpu_items(workers)
  -- 2 tasks per worker, equal size, the same total work in every row
  local tasks = workers * 2
  local items = {}
  for i = 1, tasks do items[i] = opts.work // tasks end
  return items
end

-- Each timing is the best of two runs: the machine is shared and noisy.
local function best_of_two(f)
  local a = table.pack(f())
  local b = table.pack(f())
  return table.unpack(a[1] <= b[1] and a or b)
end

local function run_serial(fn, items)
  return best_of_two(function()
    local t0 = par.clock()
    for _, x in ipairs(items) do fn(x) end
    return par.clock() - t0
  end)
end

local function run_pool(kind, workers, fn, items)
  local pool <close> = par.pool{kind = kind, workers = workers}
  pool:map(function() end, (function() local w = {} for i = 1, workers do w[i] = i end return w end)())  -- start the workers
  return best_of_two(function()
    local before = par.gil_stats()
    local t0 = par.clock()
    pool:map(fn, items)
    local elapsed = par.clock() - t0
    local after = par.gil_stats()
    return elapsed, after.switches - before.switches, after.wait_seconds - before.wait_seconds
  end)
end

local results = {machine = {cores = ncpu, lua = _VERSION, parlua = par._VERSION}, experiments = {}}

local function experiment(name, title, fn, items_for, worker_counts)
  local rows = {}
  progress(("%s: serial"):format(name))
  local serial = run_serial(fn, items_for(1))
  rows[1] = {kind = "serial", workers = 1, seconds = serial, speedup = 1, efficiency = 1}
  for _, kind in ipairs(kinds) do
    for _, w in ipairs(worker_counts) do
      progress(("%s: %s with %d workers"):format(name, kind, w))
      local t, switches, wait = run_pool(kind, w, fn, items_for(w))
      local row = {kind = kind, workers = w, seconds = t, speedup = serial / t,
                   efficiency = serial / t / math.min(w, ncpu)}
      if kind == "threads" then row.switches, row.lock_wait = switches, wait end
      rows[#rows + 1] = row
    end
  end
  progress("")
  if tty then io.stderr:write("\r\27[K") end
  results.experiments[name] = {title = title, rows = rows}
  return rows
end

local function print_table(name)
  local e = results.experiments[name]
  print(("\n%s"):format(e.title))
  print(("%-10s %7s %9s %8s %10s %9s %11s"):format("kind", "workers", "time (s)", "speedup", "per core", "switches", "lock wait"))
  for _, r in ipairs(e.rows) do
    print(("%-10s %7d %9.3f %7.2fx %9.0f%% %9s %11s"):format(r.kind, r.workers, r.seconds, r.speedup,
      r.efficiency * 100, r.switches and tostring(r.switches) or "",
      r.lock_wait and ("%.3f s"):format(r.lock_wait) or ""))
  end
end

-- Python's concurrent.futures on the same experiments, same machine.
local function run_python()
  if not par.run({"sh", "-c", "command -v python3"}, {stdout = "devnull"}).returncode == 0 then return nil end
  local script = ([[
import concurrent.futures as cf, json, time, os
SLEEP, WORK, WORKERS = %f, %d, [%s]
def raise_price(p):
    time.sleep(SLEEP); return p + p / 10 * 100
def count(n):
    x = 0
    for i in range(1, n + 1): x += i %% 7
    return x
def timed(f):
    best = None
    for _ in range(2):
        t = time.perf_counter(); f(); t = time.perf_counter() - t
        best = t if best is None else min(best, t)
    return best
out = {}
prices = [i * i * 42 for i in range(20)]
rows = [{"kind": "serial", "workers": 1, "seconds": timed(lambda: [raise_price(p) for p in prices])}]
for name, ex in (("ThreadPool", cf.ThreadPoolExecutor), ("ProcessPool", cf.ProcessPoolExecutor)):
    with ex(max_workers=4) as e:
        list(e.map(abs, range(4)))
        rows.append({"kind": name, "workers": 4, "seconds": timed(lambda: list(e.map(raise_price, prices)))})
out["prices"] = rows
rows = [{"kind": "serial", "workers": 1, "seconds": timed(lambda: [count(WORK // 2) for _ in range(2)])}]
for name, ex in (("ThreadPool", cf.ThreadPoolExecutor), ("ProcessPool", cf.ProcessPoolExecutor)):
    for w in WORKERS:
        with ex(max_workers=w) as e:
            list(e.map(abs, range(w)))
            items = [WORK // (2 * w)] * (2 * w)
            rows.append({"kind": name, "workers": w, "seconds": timed(lambda: list(e.map(count, items)))})
out["cpu"] = rows
print(json.dumps(out))
]]):format(opts.sleep, math.floor(opts.work / 10), table.concat(opts.workers, ","))
  progress("python: the same experiments (CPU work scaled down 10x: CPython is slower)")
  local r = par.run({"python3", "-c", script}, {capture = true})
  if tty then io.stderr:write("\r\27[K") end
  if r.returncode ~= 0 then io.stderr:write("python3 failed:\n", r.stderr); return nil end
  return r.stdout
end

experiment("prices", ("Experiment 1 (I/O-bound): 20 prices, a %.2f s sleep each"):format(opts.sleep),
  raise_price, function() return prices end, {4})
experiment("cpu", ("Experiment 2 (CPU-bound): %d loop iterations split into equal tasks"):format(opts.work),
  count, cpu_items, opts.workers)

if not opts.json then
  print(("parlua on %d cores; kinds available: %s"):format(ncpu, table.concat(kinds, ", ")))
  print_table("prices")
  print_table("cpu")
end

local python_json = opts.python and run_python() or nil
if python_json and not opts.json then
  print("\n" .. (par.run({"python3", "--version"}, {capture = true}).stdout:gsub("%s+$", "")) ..
        ", same machine, same run (CPU work 10x smaller; speedups against its own serial):")
  -- A tiny reader for the flat JSON Python printed: rows of kind/workers/seconds.
  for name, body in python_json:gmatch('"(%w+)": %[(.-)%]') do
    local serial
    for kind, workers, seconds in body:gmatch('"kind": "(%w+)", "workers": (%d+), "seconds": ([%d%.e%-]+)') do
      seconds = tonumber(seconds)
      serial = serial or seconds
      print(("  %-7s %-12s %2s workers %8.3f s %7.2fx"):format(name, kind, workers, seconds, serial / seconds))
    end
  end
end

-- The chart: speedup against workers for the CPU-bound experiment.
local function write_svg(path)
  local W, H, left, bottom, top, right = 640, 420, 60, 50, 40, 150
  local rows = results.experiments.cpu.rows
  local maxw = 1
  for _, r in ipairs(rows) do maxw = math.max(maxw, r.workers) end
  local maxs = maxw
  for _, r in ipairs(rows) do maxs = math.max(maxs, r.speedup) end
  local function x(w) return left + (w - 1) / math.max(maxw - 1, 1) * (W - left - right) end
  local function y(s) return H - bottom - s / maxs * (H - bottom - top) end
  local colors = {threads = "#d62728", states = "#1f77b4", processes = "#2ca02c"}
  local out = {}
  local function add(s, ...) out[#out + 1] = s:format(...) end
  add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">', W, H, W, H)
  add('<rect width="100%%" height="100%%" fill="white"/>')
  add('<text x="%d" y="24" font-size="16" font-weight="bold">CPU-bound Lua: speedup against workers (%d cores)</text>', left, ncpu)
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', left, H - bottom, W - right, H - bottom)
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', left, H - bottom, left, top)
  for w = 1, maxw do
    add('<text x="%.1f" y="%d" text-anchor="middle">%d</text>', x(w), H - bottom + 18, w)
  end
  for s = 0, math.ceil(maxs) do
    add('<text x="%d" y="%.1f" text-anchor="end">%dx</text>', left - 6, y(s) + 4, s)
    add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>', left, y(s), W - right, y(s))
  end
  add('<text x="%d" y="%d" text-anchor="middle">workers</text>', (left + W - right) // 2, H - 12)
  add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555" stroke-dasharray="6,4"/>', x(1), y(1), x(maxw), y(maxw))
  local legend = {{"ideal", "#555", true}}
  for _, kind in ipairs(kinds) do
    local pts = {("%.1f,%.1f"):format(x(1), y(1))}
    for _, r in ipairs(rows) do
      if r.kind == kind then pts[#pts + 1] = ("%.1f,%.1f"):format(x(r.workers), y(r.speedup)) end
    end
    add('<polyline fill="none" stroke="%s" stroke-width="3" points="%s"/>', colors[kind], table.concat(pts, " "))
    for _, p in ipairs(pts) do
      local px, py = p:match("([^,]+),(.+)")
      add('<circle cx="%s" cy="%s" r="4" fill="%s"/>', px, py, colors[kind])
    end
    legend[#legend + 1] = {kind, colors[kind]}
  end
  for i, l in ipairs(legend) do
    local ly = top + 10 + (i - 1) * 22
    add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"%s/>', W - right + 15, ly, W - right + 45, ly, l[2],
      l[3] and ' stroke-dasharray="6,4"' or "")
    add('<text x="%d" y="%d">%s</text>', W - right + 52, ly + 4, l[1])
  end
  add('</svg>')
  local f = assert(io.open(path, "w"))
  f:write(table.concat(out, "\n"), "\n")
  f:close()
end
write_svg(opts.svg)

if opts.json then
  local function encode(v)
    if type(v) == "table" then
      local parts = {}
      if #v > 0 then
        for _, x in ipairs(v) do parts[#parts + 1] = encode(x) end
        return "[" .. table.concat(parts, ",") .. "]"
      end
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do parts[#parts + 1] = ("%q:%s"):format(k, encode(v[k])) end
      return "{" .. table.concat(parts, ",") .. "}"
    elseif type(v) == "string" then return ("%q"):format(v)
    elseif type(v) == "number" then return v == v and ("%.6g"):format(v) or "null"
    else return tostring(v) end
  end
  if python_json then results.python = "@PYTHON@" end
  local text = encode(results)
  if python_json then text = text:gsub('"@PYTHON@"', (python_json:gsub("%%", "%%%%"):gsub("%s+$", ""))) end
  print(text)
else
  print(("\nchart: %s"):format(opts.svg))
end
