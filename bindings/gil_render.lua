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

function M.svg(trace, opts)
  opts = opts or {}
  local b = build(trace)
  local width = opts.width or 1000
  local left, right, top = 200, 24, 74
  local lane_h, gap = 26, 20
  local plot_w = width - left - right
  local t0, t1 = b.began, max(b.stop, b.began + 1e-6)
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
  -- legend
  local lx = 12
  for _, item in ipairs(LEGEND) do
    put('<rect x="%d" y="34" width="14" height="14" fill="%s"/>', lx, COLOURS[item[1]])
    put('<text x="%d" y="46">%s</text>\n', lx + 19, xml(item[2]))
    lx = lx + 30 + #item[2] * 7
  end
  put('<line x1="%d" y1="31" x2="%d" y2="51" stroke="#222" stroke-width="1.5"/>', lx + 6, lx + 6)
  put('<text x="%d" y="46">hand-off</text>\n', lx + 14)
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
    for _, kind in ipairs({"free", "waiting", "held"}) do
      for _, seg in ipairs(lane.segments) do
        if seg[1] == kind then
          local xa, xb = x(seg[2]), x(seg[3])
          if xb - xa >= 0.05 then
            put('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"/>\n', xa, y,
                max(xb - xa, 0.5), lane_h, COLOURS[kind])
          end
        end
      end
    end
    put('</g>\n')
  end
  -- hand-off marks: from the lane that had the lock to the one taking it
  for _, h in ipairs(b.handoffs) do
    local xa = x(h.t)
    local ya, yb = y_of[h.from], y_of[h.to]
    if ya ~= nil and yb ~= nil then
      local y1, y2 = min(ya, yb), max(ya, yb) + lane_h
      put('<line class="handoff" x1="%.2f" y1="%d" x2="%.2f" y2="%d" stroke="#222" '
          .. 'stroke-width="1" stroke-opacity="0.7"/>\n', xa, y1, xa, y2)
    end
  end
  -- time axis
  local step = tick_step(t1 - t0)
  local ay = plot_bottom + 10
  put('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#222"/>\n', left, ay, left + plot_w, ay)
  local first = math.ceil(t0 / step - 1e-9) * step
  local t = first
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
