-- The comparison's chart: speedup against workers as a self-contained SVG
-- (no scripts, no fonts to fetch), one line per kind, the ideal dashed.
--   chart.write(path, {title=, subtitle=, cores=, series = {
--     {label=, color=, points = {{workers, speedup}, ...}, dash=, thin=}, ...}})
-- The ideal line is min(workers, cores): past the core count nothing can
-- go faster on CPU-bound work, so the chart bends there.
local chart = {}

local W, H = 760, 440
local left, right, top, bottom = 60, 220, 56, 50

local function escape(s)
  return (tostring(s):gsub("[&<>\"]", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;"}))
end

function chart.svg(spec)
  local maxw, maxs = 2, spec.cores
  for _, s in ipairs(spec.series) do
    for _, p in ipairs(s.points) do maxw, maxs = math.max(maxw, p[1]), math.max(maxs, p[2]) end
  end
  maxs = math.ceil(maxs)
  local function x(w) return left + (w - 1) / (maxw - 1) * (W - left - right) end
  local function y(s) return H - bottom - s / maxs * (H - bottom - top) end

  local out = {}
  local function add(fmt, ...) out[#out + 1] = fmt:format(...) end
  add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d"'
      .. ' font-family="DejaVu Sans, Arial, sans-serif" font-size="13">', W, H, W, H)
  add('<rect width="100%%" height="100%%" fill="white"/>')
  add('<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>', left, escape(spec.title))
  add('<text x="%d" y="40" fill="#444">%s</text>', left, escape(spec.subtitle or ""))
  local step = maxs <= 4 and 0.5 or 1
  for s = 0, maxs, step do  -- grid and y labels
    add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>', left, y(s), W - right, y(s))
    add('<text x="%d" y="%.1f" text-anchor="end">%gx</text>', left - 6, y(s) + 4, s)
  end
  for w = 1, maxw do
    add('<text x="%.1f" y="%d" text-anchor="middle">%d</text>', x(w), H - bottom + 18, w)
  end
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', left, H - bottom, W - right, H - bottom)
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', left, H - bottom, left, top)
  add('<text x="%d" y="%d" text-anchor="middle">workers</text>', (left + W - right) // 2, H - 12)
  add('<text transform="translate(16 %d) rotate(-90)" text-anchor="middle">speedup against serial</text>',
      (top + H - bottom) // 2)

  local ideal = {}
  for w = 1, maxw do ideal[#ideal + 1] = {w, math.min(w, spec.cores)} end
  local series = {{label = ("ideal (%d cores)"):format(spec.cores), color = "#555", dash = true, thin = true, points = ideal}}
  table.move(spec.series, 1, #spec.series, 2, series)

  for i, s in ipairs(series) do
    local pts = {}
    for _, p in ipairs(s.points) do pts[#pts + 1] = ("%.1f,%.1f"):format(x(p[1]), y(p[2])) end
    local stroke = ('stroke="%s" stroke-width="%d"%s'):format(s.color, s.thin and 2 or 3,
      s.dash and ' stroke-dasharray="7,5"' or "")
    add('<polyline fill="none" %s points="%s"/>', stroke, table.concat(pts, " "))
    if s ~= series[1] then
      for _, p in ipairs(s.points) do
        add('<circle cx="%.1f" cy="%.1f" r="%d" fill="%s"/>', x(p[1]), y(p[2]), s.thin and 3 or 4, s.color)
      end
    end
    local ly = top + 8 + (i - 1) * 22  -- the legend, right of the plot
    add('<line x1="%d" y1="%d" x2="%d" y2="%d" %s/>', W - right + 14, ly, W - right + 44, ly, stroke)
    add('<text x="%d" y="%d">%s</text>', W - right + 50, ly + 4, escape(s.label))
  end
  add('</svg>')
  return table.concat(out, "\n") .. "\n"
end

function chart.write(path, spec)
  local f = assert(io.open(path, "w"))
  f:write(chart.svg(spec))
  f:close()
end

return chart
