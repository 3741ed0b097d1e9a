-- The comparison's lock timelines (par.gil_trace): the same lesson as the
-- tables, as pictures of who held which lock when.
--   cpu-threads: CPU-bound work on 2 threads of one state: the lanes take
--                turns, each waits about half the time
--   io-threads:  I/O-bound work on 4 threads: the lanes overlap, the lock
--                is mostly free
--   cpu-states:  CPU-bound work on 2 states workers: each has its own lock,
--                both lanes run all along
--   timelines.run{dir=, work=, sleep=} -> {{name=, title=, path=, summary=}, ...}
local par = require "parlua"

local timelines = {}

local function count(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

-- A little work between sleeps, as a server does between requests; the
-- i-th starts a quarter pause after the one before (requests do not all
-- arrive at once).
local count_n, pause
local function serve(i)
  local p = require("parlua")
  p.sleep((i - 1) * pause / 4)
  for _ = 1, 4 do
    local x = 0
    for i = 1, count_n do x = x + i % 7 end
    p.sleep(pause)
  end
  return i
end

-- Trace fn(pool) on a warmed-up pool, write the SVG, summarise.
local function traced(kind, workers, title, path, fn)
  local pool <close> = par.pool{kind = kind, workers = workers}
  local warm = {}
  for i = 1, workers do warm[i] = 1000 end
  pool:map(count, warm)
  par.gil_trace()
  local ok, err = pcall(fn, pool)
  local trace = par.gil_trace_stop()
  if not ok then error(err, 0) end
  trace:svg(path, {title = title})
  return trace:summary()
end

function timelines.run(opts)
  count_n, pause = math.max(1, math.floor(opts.work / 1000)), opts.sleep / 4
  -- long enough, even on tiny work, that both workers surely take a task
  local cpu_task = math.max(2e6, math.floor(opts.work / 12))
  local specs = {
    {"cpu-threads", "threads", 2, "CPU-bound Lua on 2 threads of one state: one lock, the threads take turns",
     function(pool) pool:map(count, {cpu_task, cpu_task}) end},
    {"io-threads", "threads", 4, "I/O-bound Lua on 4 threads of one state: the lock is mostly free",
     function(pool) pool:map(serve, {1, 2, 3, 4}) end},
    {"cpu-states", "states", 2, "CPU-bound Lua on 2 states workers: a lock each, both run all along",
     function(pool) pool:map(count, {cpu_task, cpu_task}) end},
  }
  local out = {}
  for _, s in ipairs(specs) do
    local path = opts.dir and (opts.dir .. "/parlua-timeline-" .. s[1] .. ".svg") or os.tmpname()
    out[#out + 1] = {name = s[1], title = s[4], path = path,
                     summary = traced(s[2], s[3], s[4], path, s[5])}
  end
  return out
end

-- What the reader is told: each picture's path, then for every thread of
-- it what share of its time it waited for a lock (and held one).
function timelines.print(list)
  print("\nLock timelines (par.gil_trace): one lane per thread, green holds its lock, red waits")
  for _, t in ipairs(list) do
    print(("  %s\n    %s"):format(t.title, t.path))
    for _, l in ipairs(t.summary) do
      local name = l.state == 1 and l.thread or ("state %d: %s"):format(l.state, l.thread)
      print(("      %-28s waited %3.0f%% of its time, held %3.0f%%, %d hand-offs")
        :format(name, l.waited_ratio * 100, l.held_ratio * 100, l.handoffs))
    end
  end
end

return timelines
