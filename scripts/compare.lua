-- The comparison: one interpreter under a global lock against isolated
-- interpreters, on the two tutorials' experiments.
--   prices: 20 prices, each "raised" by a function that sleeps (Portuguese
--           tutorial; I/O-bound: every kind should overlap the sleeps)
--   network: 12 pages fetched with luasocket's socket.http from a local
--           server that answers after the same delay (scripts/net/; the
--           tutorials' network example: every kind should overlap the
--           waits; skipped without lua-socket)
--   cpu:    a pure-Lua counting loop split into equal tasks (Russian
--           tutorial; CPU-bound: only isolated interpreters scale)
-- For serial and for every kind of worker this runtime offers (threads,
-- states, processes, and mpi when Open MPI is installed), with 2 and N
-- workers.  Prints a table per experiment,
-- writes an SVG chart of speedup against workers, and with --python runs
-- the same experiments with Python's concurrent.futures in the same run.
-- Then three lock timelines (scripts/compare/timelines.lua): CPU-bound on 2
-- threads, I/O-bound on 4 threads, CPU-bound on 2 states workers.
--
--   parlua scripts/compare.lua [--sleep S] [--work N] [--workers 2,4]
--                              [--python] [--json] [--out DIR | --svg FILE]
-- The chart is DIR/parlua-compare.svg, DIR build/ of the checkout by
-- default, the timelines DIR/parlua-timeline-*.svg (beside FILE with
-- --svg); their paths are printed.  A smoke run (PARLUA_SMOKE, inside make
-- test) writes temporary files of its own and removes them, so that it
-- never replaces a chart the user made.
local par = require "parlua"
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "scripts"
local chart = dofile(here .. "/compare/chart.lua")
local timelines = dofile(here .. "/compare/timelines.lua")

local opts = {
  sleep = 0.1, work = 1.2e8, workers = nil, python = false, json = false,
  out = here == "scripts" and "build" or here .. "/../build", svg = nil,
}
local smoke = os.getenv("PARLUA_SMOKE") ~= nil
if smoke then opts.sleep, opts.work = 0.01, 2e6 end
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
    elseif a == "--out" then opts.out = assert(arg[i + 1], "--out needs a folder"); i = i + 1
    else error("unknown option " .. a .. " (see the comment at the top of compare.lua)", 0) end
    i = i + 1
  end
end
local temporary_chart = not opts.svg and smoke
if temporary_chart then
  opts.svg = os.tmpname()
elseif not opts.svg then
  if not os.execute(("mkdir -p '%s'"):format(opts.out:gsub("'", "'\\''"))) then
    error("cannot make the folder " .. opts.out .. " for the chart", 0)
  end
  opts.svg = opts.out .. "/parlua-compare.svg"
end
local ncpu = par.cpu_count()
opts.workers = opts.workers or (ncpu > 2 and {2, ncpu} or {2, 4})

-- The kinds this build offers (a pool that cannot be made is skipped).
-- Kind mpi is tried with a task on as many workers as the rows need: it
-- needs Open MPI (the error says how to get it), and its spawned ranks
-- stay for the rows that follow.
local kinds = {}
for _, kind in ipairs{"threads", "states", "processes", "mpi"} do
  local most = kind == "mpi" and math.max(table.unpack(opts.workers)) or 1
  local ok, err = pcall(function()
    local pool <close> = par.pool{kind = kind, workers = most}
    if kind == "mpi" then pool:map(function(x) return x end, {1, 2}) end
  end)
  if ok then kinds[#kinds + 1] = kind
  else io.stderr:write(("(kind %s: %s)\n"):format(kind, tostring(err):gsub("^.-:%d+: ", ""))) end
end

-- Progress on stderr, one line rewritten in place on a terminal.
local tty = os.execute("test -t 2")
local function progress(msg)
  if msg == "" and not tty then return end  -- only a terminal's line needs clearing
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

-- A timing is the best of a few runs (f returns the time first, then
-- what goes with it): the machine is shared and noisy.
local function best_of(runs, f)
  local best = table.pack(f())
  for _ = 2, runs do
    local r = table.pack(f())
    if r[1] < best[1] then best = r end
  end
  return table.unpack(best, 1, best.n)
end

local function run_serial(fn, items)
  return best_of(2, function()
    local t0 = par.clock()
    for _, x in ipairs(items) do fn(x) end
    return par.clock() - t0
  end)
end

local function run_pool(kind, workers, fn, items)
  local pool <close> = par.pool{kind = kind, workers = workers}
  -- Start the workers and let them run a little first: the first
  -- milliseconds of new threads on a busy machine are not what is measured.
  local warm = {}
  for i = 1, 2 * workers do warm[i] = 1e6 end
  pool:map(count, warm)
  return best_of(3, function()
    local before = par.gil_stats()
    local t0 = par.clock()
    pool:map(fn, items)
    local elapsed = par.clock() - t0
    local after = par.gil_stats()
    return elapsed, after.switches - before.switches, after.wait_seconds - before.wait_seconds
  end)
end

local results = {machine = {cores = ncpu, lua = _VERSION, parlua = par._VERSION}, experiments = {}}

-- `bound` says what limits the speedup: "io" work overlaps on any number of
-- workers, "cpu" work on at most one worker per core.
local function experiment(name, title, bound, fn, items_for, worker_counts)
  -- This machine's speed drifts (shared cores): serial is timed again
  -- before each kind and its best time is the baseline of every row.
  local serial = math.huge
  local rows = {{kind = "serial", workers = 1}}
  for _, kind in ipairs(kinds) do
    progress(("%s: serial"):format(name))
    serial = math.min(serial, run_serial(fn, items_for(1)))
    for _, w in ipairs(worker_counts) do
      progress(("%s: %s with %d workers"):format(name, kind, w))
      local t, switches, wait = run_pool(kind, w, fn, items_for(w))
      local row = {kind = kind, workers = w, seconds = t}
      if kind == "threads" then row.switches, row.lock_wait = switches, wait end
      rows[#rows + 1] = row
    end
  end
  rows[1].seconds = serial
  for _, row in ipairs(rows) do
    local ideal = bound == "io" and row.workers or math.min(row.workers, ncpu)
    row.speedup = serial / row.seconds
    row.efficiency = row.speedup / ideal
  end
  progress("")
  if tty then io.stderr:write("\r\27[K") end
  results.experiments[name] = {title = title, bound = bound, rows = rows}
end

local function print_table(name)
  local e = results.experiments[name]
  print(("\n%s"):format(e.title))
  print(("%-10s %7s %9s %8s %9s %9s %11s"):format("kind", "workers", "time (s)", "speedup",
    e.bound == "io" and "of ideal" or "per core", "switches", "lock wait"))
  for _, r in ipairs(e.rows) do
    print(("%-10s %7d %9.3f %7.2fx %8.0f%% %9s %11s"):format(r.kind, r.workers, r.seconds, r.speedup,
      r.efficiency * 100, r.switches and tostring(r.switches) or "",
      r.lock_wait and ("%.3f s"):format(r.lock_wait) or ""))
  end
end

-- Python's concurrent.futures on the same experiments, same machine.  It
-- prints one line per row ("experiment kind workers seconds"); its CPU work
-- is 10x smaller because CPython runs this loop several times slower.
local function run_python()
  if par.run({"sh", "-c", "command -v python3"}, {stdout = "devnull"}).returncode ~= 0 then
    io.stderr:write("(--python: no python3 on this machine)\n")
    return nil
  end
  local script = ([[
import concurrent.futures as cf, time
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
prices = [i * i * 42 for i in range(20)]
print("prices serial 1", timed(lambda: [raise_price(p) for p in prices]), flush=True)
for name, ex in (("ThreadPool", cf.ThreadPoolExecutor), ("ProcessPool", cf.ProcessPoolExecutor)):
    with ex(max_workers=4) as e:
        list(e.map(abs, range(4)))
        print("prices", name, 4, timed(lambda: list(e.map(raise_price, prices))), flush=True)
print("cpu serial 1", timed(lambda: [count(WORK // 2) for _ in range(2)]), flush=True)
for name, ex in (("ThreadPool", cf.ThreadPoolExecutor), ("ProcessPool", cf.ProcessPoolExecutor)):
    for w in WORKERS:
        with ex(max_workers=w) as e:
            list(e.map(abs, range(w)))
            items = [WORK // (2 * w)] * (2 * w)
            print("cpu", name, w, timed(lambda: list(e.map(count, items))), flush=True)
]]):format(opts.sleep, math.floor(opts.work / 10), table.concat(opts.workers, ","))
  progress("python: the same experiments (CPU work 10x smaller: CPython is slower)")
  local r = par.run({"python3", "-c", script}, {capture = true})
  progress("")
  if tty then io.stderr:write("\r\27[K") end
  if r.returncode ~= 0 then io.stderr:write("python3 failed:\n", r.stderr); return nil end
  local py = {version = par.run({"python3", "--version"}, {capture = true}).stdout:gsub("%s+$", ""), experiments = {}}
  for name, kind, workers, seconds in r.stdout:gmatch("(%w+) (%w+) (%d+) (%S+)\n") do
    local rows = py.experiments[name] or {}
    py.experiments[name] = rows
    seconds = tonumber(seconds)
    local serial = rows[1] and rows[1].seconds or seconds
    rows[#rows + 1] = {kind = kind, workers = tonumber(workers), seconds = seconds, speedup = serial / seconds}
  end
  return py
end

local function print_python(py)
  print(("\n%s, same machine, same run (CPU work 10x smaller; speedup against its own serial):"):format(py.version))
  for _, name in ipairs{"prices", "cpu"} do
    for _, r in ipairs(py.experiments[name] or {}) do
      print(("  %-7s %-12s %2d workers %8.3f s %7.2fx"):format(name, r.kind, r.workers, r.seconds, r.speedup))
    end
  end
end

local function find(rows, kind, workers)
  for _, r in ipairs(rows or {}) do
    if r.kind == kind and r.workers == workers then return r end
  end
end

-- The lesson in a few lines, from this run's numbers: what the lock costs
-- CPU-bound threads, here and in Python, and what isolation buys.
local function print_summary(py)
  local w = opts.workers[1]
  local rows = results.experiments.cpu.rows
  print(("\nCPU-bound, %d workers on %d cores:"):format(w, ncpu))
  local says = {
    threads = "one interpreter, one lock: the workers take turns",
    states = "one interpreter per thread: truly parallel",
    processes = "one interpreter per process: parallel, arguments and results copied",
    mpi = "one interpreter per MPI rank: parallel, on any machine of the job, values copied",
  }
  for _, kind in ipairs(kinds) do
    local r = find(rows, kind, w)
    print(("  %-10s %5.2fx serial  %s"):format(kind, r.speedup, says[kind]))
  end
  local mine = find(rows, "threads", w)
  local theirs = py and find(py.experiments.cpu, "ThreadPool", w)
  if mine and theirs then
    print(("  threads took %.2fx the serial time here (the lock), Python's threads %.2fx (the GIL)")
      :format(1 / mine.speedup, 1 / theirs.speedup))
  end
end

local function write_chart(py)
  local colors = {threads = "#d62728", states = "#1f77b4", processes = "#2ca02c", mpi = "#9467bd",
                  ThreadPool = "#ff9896", ProcessPool = "#98df8a"}
  local function points(rows, kind)
    local pts = {{1, 1}}
    for _, r in ipairs(rows) do
      if r.kind == kind then pts[#pts + 1] = {r.workers, r.speedup} end
    end
    return pts
  end
  local series = {}
  for _, kind in ipairs(kinds) do
    series[#series + 1] = {label = "parlua " .. kind, color = colors[kind], points = points(results.experiments.cpu.rows, kind)}
  end
  for _, kind in ipairs(py and {"ThreadPool", "ProcessPool"} or {}) do
    series[#series + 1] = {label = "Python " .. kind, color = colors[kind], thin = true, dash = true,
                           points = points(py.experiments.cpu, kind)}
  end
  chart.write(opts.svg, {
    title = "CPU-bound Lua: speedup against workers",
    subtitle = ("%d cores, %s, %.3g loop iterations in equal tasks"):format(ncpu, _VERSION, opts.work),
    cores = ncpu, series = series,
  })
end

-- JSON for --json: enough of it for nested tables of strings and numbers.
local function json(v)
  if type(v) == "table" then
    local parts = {}
    if #v > 0 then
      for _, x in ipairs(v) do parts[#parts + 1] = json(x) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = json(tostring(k)) .. ":" .. json(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
  elseif type(v) == "number" then
    return (v == v and v ~= math.huge and v ~= -math.huge) and ("%.6g"):format(v) or "null"
  end
  return tostring(v)
end

experiment("prices", ("Experiment 1 (I/O-bound): 20 prices, a %.2f s sleep each"):format(opts.sleep), "io",
  raise_price, function() return prices end, {4})
-- Network-bound: the fetch is self-contained (states and processes workers
-- get no globals), the server a separate process.
local function fetch(url)
  local body, code = require("socket.http").request(url)
  assert(code == 200, ("%s: %s"):format(url, tostring(code)))
  return #body
end
local network = pcall(require, "socket.http")
if network then
  local server = dofile(here .. "/net/server.lua").start(opts.sleep)
  local urls = {}
  for i = 1, 12 do urls[i] = server.url .. i end
  local ok, err = pcall(experiment, "network",
    ("Experiment 1b (network-bound): 12 fetches with socket.http, answered after %.2f s each"):format(opts.sleep),
    "io", fetch, function() return urls end, {4})
  server.stop()
  assert(ok, err)
else
  io.stderr:write("(network-bound: needs lua-socket, skipped)\n")
end
experiment("cpu", ("Experiment 2 (CPU-bound): %.3g loop iterations split into equal tasks"):format(opts.work), "cpu",
  count, cpu_items, opts.workers)
if not opts.json then
  print(("parlua on %d cores; kinds available: %s"):format(ncpu, table.concat(kinds, ", ")))
  print_table("prices")
  if network then print_table("network") end
  print_table("cpu")
end

local py = opts.python and run_python() or nil
results.python = py
write_chart(py)
progress("lock timelines")
local pictures = timelines.run{work = opts.work, sleep = opts.sleep,
                               dir = not temporary_chart and (opts.svg:match("^(.*)/[^/]*$") or ".") or nil}
progress("")
results.timelines = {}
for _, t in ipairs(pictures) do
  local threads = {}
  for _, l in ipairs(t.summary) do
    threads[#threads + 1] = {thread = l.thread, state = l.state, waited_ratio = l.waited_ratio,
                             held_ratio = l.held_ratio, handoffs = l.handoffs}
  end
  results.timelines[#results.timelines + 1] = {name = t.name, path = t.path, threads = threads}
end
if opts.json then
  print(json(results))
else
  if py then print_python(py) end
  print_summary(py)
  timelines.print(pictures)
  print(("\nchart: %s%s"):format(opts.svg, temporary_chart and " (a smoke run's: removed)" or ""))
end
if temporary_chart then
  os.remove(opts.svg)
  for _, t in ipairs(pictures) do os.remove(t.path) end
end
return results  -- for scripts/bench/compare.lua
