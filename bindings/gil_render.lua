-- The lock timeline's reports: trace:summary(), trace:svg(), trace:json().
-- Embedded in the library (bindings/lgiltrace.c loads it on first use); it
-- only turns the events of a stopped trace into tables and text, the C side
-- writes the files.
--
-- Every thread's lane is a sequence of segments: "held" (it has the lock),
-- "waiting" (it asked and has not got it) and "free" (it runs without the
-- lock: a blocking call, a foreign call, or no Lua at all).  A thread whose
-- first event is "acquired" was already waiting when the trace began; one
-- whose first is "released" was holding the lock.  One that let go on
-- request waits from that moment on (it queues up again at once).  Once the ring dropped
-- events, "began" is the oldest kept event.

local M = {}

local format, concat = string.format, table.concat
local floor, max, min, log = math.floor, math.max, math.min, math.log

-- A thread that hands the lock over on request queues up for it again at
-- once: from its release on, it waits.
local HANDED_OVER = {["interval expired"] = true, ["urgent request"] = true}

-- [lane] = {thread, ident, state, segments, held, waited, free, ...},
-- the hand-offs, and the time span of the picture.
local function build(trace)
  local info = trace:info()
  local lanes = {}
  for i, l in ipairs(info.lanes) do
    lanes[i] = {index = i, thread = l.thread, ident = l.ident, state = l.state,
                segments = {}, held = 0, waited = 0, free = 0, handoffs = 0,
                longest_wait = 0, waits = 0, releases = {}}
  end
  local began  -- nil until the oldest kept event, when the ring dropped some
  if info.dropped == 0 then began = 0 end
  local handoffs, holder = {}, {}   -- holder[state]: the lane that had it last
  local function close(lane, t)
    local s = lane.cur
    if s == nil or s == "ended" then return end
    local d = t - lane.since
    if d > 0 then
      local segs = lane.segments
      segs[#segs + 1] = {s, lane.since, t}
    end
    if s == "held" then lane.held = lane.held + d
    elseif s == "waiting" then
      lane.waited = lane.waited + d
      lane.waits = lane.waits + 1
      if d > lane.longest_wait then lane.longest_wait = d end
    else lane.free = lane.free + d end
  end
  for ev in trace:events() do
    local t, lane = ev.time, lanes[ev.lane]
    began = began or t
    if lane.first == nil then lane.first = ev.event end
    if ev.event == "request" then
      if lane.cur == nil then lane.start = t end
      if lane.cur ~= "waiting" then
        close(lane, t)
        lane.cur, lane.since = "waiting", t
      end
    elseif ev.event == "acquired" then
      if lane.cur == nil then lane.start, lane.cur, lane.since = began, "waiting", began end
      close(lane, t)
      lane.cur, lane.since = "held", t
      local last = holder[lane.state]
      if last ~= nil and last ~= lane then
        lane.handoffs = lane.handoffs + 1
        handoffs[#handoffs + 1] = {t = t, from = last, to = lane}
      end
      holder[lane.state] = lane
    else  -- released
      if lane.cur == nil then
        lane.start, lane.cur, lane.since = began, "held", began
        holder[lane.state] = holder[lane.state] or lane
      end
      close(lane, t)
      lane.releases[ev.reason] = (lane.releases[ev.reason] or 0) + 1
      if ev.reason == "thread end" then lane.cur, lane.stop = "ended", t
      elseif HANDED_OVER[ev.reason] then lane.cur, lane.since = "waiting", t
      else lane.cur, lane.since = "free", t end
    end
  end
  began = began or 0
  local stop = info.duration
  local shown = {}
  for _, lane in ipairs(lanes) do
    if lane.cur ~= nil then
      close(lane, stop)
      lane.stop = lane.stop or stop
      lane.span = lane.stop - lane.start
      shown[#shown + 1] = lane
    end
  end
  -- by state; in a state the main thread first, then by name with the
  -- numbers in it compared as numbers (Worker-2 before Worker-10)
  local function key(lane)
    if lane.thread == "MainThread" then return "" end
    return (lane.thread:gsub("%d+", function(d) return format("%012d", tonumber(d)) end))
  end
  table.sort(shown, function(a, b)
    if a.state ~= b.state then return a.state < b.state end
    local ka, kb = key(a), key(b)
    if ka ~= kb then return ka < kb end
    return a.index < b.index
  end)
  return {lanes = shown, handoffs = handoffs, began = began, stop = stop, info = info}
end

local function ratio(part, whole) return whole > 0 and part / whole or 0 end

function M.summary(trace)
  local b = build(trace)
  local out = {duration = b.stop, began = b.began, dropped = b.info.dropped,
               events = b.info.nevents, capacity = b.info.capacity,
               states = 0, handoffs = #b.handoffs}
  for i, lane in ipairs(b.lanes) do
    out[i] = {thread = lane.thread, ident = lane.ident, state = lane.state,
              held = lane.held, waited = lane.waited, free = lane.free,
              span = lane.span, handoffs = lane.handoffs,
              longest_wait = lane.longest_wait, waits = lane.waits,
              held_ratio = ratio(lane.held, lane.span),
              waited_ratio = ratio(lane.waited, lane.span),
              free_ratio = ratio(lane.free, lane.span),
              releases = lane.releases}
    out.states = max(out.states, lane.state)
  end
  return out
end

---------------------------------------------------------------- SVG ----

local COLOURS = {held = "#2b9348", waiting = "#e4572e", free = "#a9cce3"}
local LEGEND = {
  {"held", "holds the lock"},
  {"waiting", "waits for it"},
  {"free", "runs without it (blocking call, no Lua)"},
}

-- What fits left of the lanes at 13 px (bytes: names are mostly ASCII).
local LABEL_CHARS = 25

local function xml(s)
  return (tostring(s):gsub("[&<>\"]", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                       ['"'] = "&quot;"}))
end

-- A tick step of 1, 2 or 5 times a power of ten giving 5 to 10 ticks.
local function tick_step(span)
  local raw = span / 8
  local mag = 10 ^ floor(log(raw, 10))
  for _, m in ipairs({1, 2, 5, 10}) do
    if m * mag >= raw then return m * mag end
  end
  return 10 * mag
end

local function time_label(t, step)
  if step >= 1 then return format("%g s", t) end
  if step >= 1e-3 then return format("%g ms", floor(t * 1e3 / (step * 1e3) + 0.5) * step * 1e3) end
  return format("%g µs", floor(t * 1e6 + 0.5))
end

local function percent(x) return format("%d%%", floor(x * 100 + 0.5)) end

-- The rectangles of one lane between t0 and t1: segments a pixel wide or
-- more as they are, narrower ones gathered per pixel column, which shows
-- the state that took most of its time -- so a trace of 100,000 events
-- draws at most a few rectangles per column, and stays readable.
local function lane_rects(segments, t0, t1, x0, plot_w)
  local scale = plot_w / (t1 - t0)
  local wide, columns = {}, {}
  for _, seg in ipairs(segments) do
    local a, b = max(seg[2], t0), min(seg[3], t1)
    if b > a then
      local xa, xb = (a - t0) * scale, (b - t0) * scale
      if xb - xa >= 1 then
        wide[#wide + 1] = {seg[1], xa, xb - xa}
      else
        local col = min(floor(xa), plot_w - 1)
        local c = columns[col] or {}
        columns[col] = c
        c[seg[1]] = (c[seg[1]] or 0) + (xb - xa)
      end
    end
  end
  local rects = {}
  for _, w in ipairs(wide) do rects[#rects + 1] = {w[1], x0 + w[2], w[3]} end
  for col, c in pairs(columns) do
    local best, most = nil, 0
    for _, kind in ipairs({"free", "waiting", "held"}) do
      if (c[kind] or 0) > most then best, most = kind, c[kind] end
    end
    rects[#rects + 1] = {best, x0 + col, 1}
  end
  return rects
end

function M.svg(trace, opts)
  opts = opts or {}
  local b = build(trace)
  local width = opts.width or 1000
  local left, right, top = 200, 24, 74
  local lane_h, gap = 26, 20
  local plot_w = width - left - right
  -- the window shown: the whole trace, or opts.from .. opts.to (seconds)
  local t0 = max(b.began, opts.from or b.began)
  local t1 = min(b.stop, opts.to or b.stop)
  if t1 <= t0 then t1 = t0 + 1e-6 end
  local function x(t) return left + (t - t0) / (t1 - t0) * plot_w end
  local multi = false
  for _, lane in ipairs(b.lanes) do if lane.state ~= 1 then multi = true end end
  local y_of = {}
  for i, lane in ipairs(b.lanes) do y_of[lane] = top + (i - 1) * (lane_h + gap) end
  local plot_bottom = top + #b.lanes * (lane_h + gap) - gap
  local height = plot_bottom + 56
  local out = {}
  local function put(...) out[#out + 1] = format(...) end
  put('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
      .. 'font-family="DejaVu Sans, Verdana, sans-serif" font-size="13">\n', width, height, width, height)
  put('<rect width="%d" height="%d" fill="white"/>\n', width, height)
  put('<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>\n', 12,
      xml(opts.title or "parlua lock timeline"))
  -- hand-off marks: one per pixel column at most; too many to tell apart
  -- and they would only blacken the lanes, so then they are counted instead
  local marks, ncols = {}, 0
  for _, h in ipairs(b.handoffs) do
    if h.t >= t0 and h.t <= t1 and y_of[h.from] and y_of[h.to] then
      local col = floor(x(h.t))
      local ya, yb = y_of[h.from], y_of[h.to]
      local key = col .. ":" .. min(ya, yb) .. ":" .. max(ya, yb)
      if not marks[key] then
        marks[key] = {x(h.t), min(ya, yb), max(ya, yb) + lane_h}
        ncols = ncols + 1
      end
    end
  end
  local mark_handoffs = ncols <= plot_w / 4
  -- legend
  local lx = 12
  for _, item in ipairs(LEGEND) do
    put('<rect x="%d" y="34" width="14" height="14" fill="%s"/>', lx, COLOURS[item[1]])
    put('<text x="%d" y="46">%s</text>\n', lx + 19, xml(item[2]))
    lx = lx + 30 + #item[2] * 7
  end
  put('<line x1="%d" y1="31" x2="%d" y2="51" stroke="#222" stroke-width="1.5"/>', lx + 6, lx + 6)
  put('<text x="%d" y="46">%s</text>\n', lx + 14, mark_handoffs and "hand-off"
      or format("hand-off (%d here: too many to mark; zoom in with from/to)", #b.handoffs))
  -- lanes
  for _, lane in ipairs(b.lanes) do
    local y = y_of[lane]
    local name = multi and format("state %d: %s", lane.state, lane.thread) or lane.thread
    if #name > LABEL_CHARS then name = name:sub(1, LABEL_CHARS - 1) .. "…" end
    put('<g class="lane" data-thread="%s" data-ident="%d" data-state="%d">\n',
        xml(lane.thread), lane.ident, lane.state)
    put('<text x="%d" y="%d" font-weight="bold">%s</text>', 12, y + 11, xml(name))
    put('<text x="%d" y="%d" font-size="11" fill="#444">held %s · waited %s</text>\n', 12, y + 25,
        percent(ratio(lane.held, lane.span)), percent(ratio(lane.waited, lane.span)))
    put('<rect x="%d" y="%d" width="%d" height="%d" fill="#f4f4f4"/>\n', left, y, plot_w, lane_h)
    for _, r in ipairs(lane_rects(lane.segments, t0, t1, left, plot_w)) do
      put('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"/>\n', r[2], y, r[3], lane_h,
          COLOURS[r[1]])
    end
    put('</g>\n')
  end
  if mark_handoffs then
    for _, m in pairs(marks) do
      put('<line class="handoff" x1="%.2f" y1="%d" x2="%.2f" y2="%d" stroke="#222" '
          .. 'stroke-width="1" stroke-opacity="0.7"/>\n', m[1], m[2], m[1], m[3])
    end
  end
  -- time axis
  local step = tick_step(t1 - t0)
  local ay = plot_bottom + 10
  put('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#222"/>\n', left, ay, left + plot_w, ay)
  local t = math.ceil(t0 / step - 1e-9) * step
  while t <= t1 + step * 1e-6 do
    local xt = x(t)
    put('<line x1="%.2f" y1="%d" x2="%.2f" y2="%d" stroke="#222"/>', xt, ay, xt, ay + 5)
    put('<text x="%.2f" y="%d" text-anchor="middle" font-size="12">%s</text>\n', xt, ay + 19,
        time_label(t, step))
    t = t + step
  end
  put('<text x="%d" y="%d" text-anchor="end" font-size="11" fill="#444">time since the trace began%s</text>\n',
      left + plot_w, ay + 38,
      b.info.dropped > 0 and format(" (oldest %d events dropped)", b.info.dropped) or "")
  put('</svg>\n')
  return concat(out)
end

--------------------------------------------------------------- JSON ----

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return format("\\u%04x", c:byte())
  end) .. '"'
end

local SLICE_NAMES = {held = "holds the lock", waiting = "waits for the lock",
                     free = "runs without the lock"}

-- Chrome's trace-event format (JSON object form): one process per state,
-- one thread per lane, a complete ("X") event per segment, an instant
-- ("i") event per hand-off.  Times in microseconds.
function M.json(trace)
  local b = build(trace)
  local ev = {}
  local function us(t) return format("%.3f", (t - b.began) * 1e6) end
  local states = {}
  for _, lane in ipairs(b.lanes) do
    if not states[lane.state] then
      states[lane.state] = true
      ev[#ev + 1] = format('{"name":"process_name","ph":"M","pid":%d,"tid":0,"args":{"name":%s}}',
                           lane.state, json_string(format("parlua state %d", lane.state)))
    end
    ev[#ev + 1] = format('{"name":"thread_name","ph":"M","pid":%d,"tid":%d,"args":{"name":%s}}',
                         lane.state, lane.ident, json_string(lane.thread))
    for _, seg in ipairs(lane.segments) do
      ev[#ev + 1] = format('{"name":%s,"cat":"gil","ph":"X","ts":%s,"dur":%.3f,"pid":%d,"tid":%d}',
                           json_string(SLICE_NAMES[seg[1]]), us(seg[2]), (seg[3] - seg[2]) * 1e6,
                           lane.state, lane.ident)
    end
  end
  for _, h in ipairs(b.handoffs) do
    ev[#ev + 1] = format('{"name":"hand-off","cat":"gil","ph":"i","s":"t","ts":%s,"pid":%d,"tid":%d,'
                         .. '"args":{"from":%s}}', us(h.t), h.to.state, h.to.ident,
                         json_string(h.from.thread))
  end
  return format('{"traceEvents":[\n%s\n],"displayTimeUnit":"ms","otherData":{"generator":"parlua",'
                .. '"dropped_events":%d,"ring_capacity":%d}}\n',
                concat(ev, ",\n"), b.info.dropped, b.info.capacity)
end

return M
