-- scripts/compare.lua, the comparison `make run` ends with: its JSON, its
-- chart and its options, on tiny work so the suite stays quick.
local support = dofile("tests/spec/support.lua")

-- Run compare.lua with `args`; opts.env is put before the command, opts.dir
-- is a copy of the checkout's scripts/ to run in (as if it were the clone).
local function compare(args, opts)
  opts = opts or {}
  local function absolute(path) return path:sub(1, 1) == "/" and path or os.getenv("PWD") .. "/" .. path end
  local lua = os.getenv("PARLUA_LUA") or "lua5.4"
  if lua:find("/") then lua = absolute(lua) end
  local cmd = ("cd '%s' && LUA_CPATH='%s/?.so;;' %s %s scripts/compare.lua %s 2>&1"):format(
    opts.dir or ".", absolute(support.build_dir()), opts.env or "", lua, args)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

-- Every element opened is closed in order: enough to know a browser will
-- parse the chart as SVG rather than show an XML error page.
local function check_balanced(xml)
  local open = {}
  for slash, name, selfclose in xml:gmatch("<(/?)([%w:]+)[^>]-(/?)>") do
    if slash == "/" then
      assert.are.equal(table.remove(open), name)
    elseif selfclose ~= "/" then
      open[#open + 1] = name
    end
  end
  assert.are.same({}, open)
end

describe("scripts/compare.lua", function()
  local svg = os.tmpname()
  after_each(function() os.remove(svg) end)

  it("measures every kind on both experiments and says so in JSON", function()
    local out, ok = compare(("--json --work 2e5 --sleep 0.002 --workers 2 --svg %s"):format(svg))
    assert.is_true(ok, out)
    local json = out:match("(%b{})%s*$")
    assert.is_truthy(json, out)
    for _, name in ipairs{"prices", "cpu"} do
      assert.is_truthy(json:find('"' .. name .. '":{"bound":'), json)
    end
    for _, kind in ipairs{"serial", "threads", "states", "processes"} do
      assert.is_truthy(json:find('"kind":"' .. kind .. '"'), kind .. " missing from " .. json)
    end
    assert.is_truthy(json:find('"switches":%d+'), "threads rows carry the lock's switch count")
    assert.is_truthy(json:find('"cores":%d+'))
  end)

  it("writes a well-formed SVG chart with the ideal and one line per kind", function()
    local out, ok = compare(("--work 2e5 --sleep 0.002 --workers 2 --svg %s"):format(svg))
    assert.is_true(ok, out)
    assert.is_truthy(out:find("chart: " .. svg, 1, true), out)
    assert.is_truthy(out:find("Experiment 1 %(I/O%-bound%)"), out)
    assert.is_truthy(out:find("CPU%-bound, 2 workers"), out)
    local f = assert(io.open(svg))
    local text = f:read("a")
    f:close()
    assert.is_truthy(text:find('^<svg xmlns="http://www.w3.org/2000/svg"'))
    check_balanced(text)
    local _, lines = text:gsub("<polyline", "")
    -- ideal, threads, states, processes, and mpi where Open MPI is installed
    local mpi = text:find(">parlua mpi", 1, true) ~= nil
    assert.are.equal(mpi and 5 or 4, lines)
    for _, label in ipairs{"ideal", "parlua threads", "parlua states", "parlua processes"} do
      assert.is_truthy(text:find(">" .. label, 1, true), label)
    end
  end)

  describe("where the chart goes", function()
    local dir
    before_each(function()
      dir = io.popen("mktemp -d"):read("l")
      assert(os.execute(("mkdir -p '%s/scripts/compare' && cp scripts/compare.lua '%s/scripts/' && cp scripts/compare/chart.lua scripts/compare/timelines.lua '%s/scripts/compare/' && cp -r scripts/net '%s/scripts/'"):format(dir, dir, dir, dir)))
    end)
    after_each(function() os.execute(("rm -rf '%s'"):format(dir)) end)

    local quick = "--work 2e5 --sleep 0.002 --workers 2"
    it("is build/parlua-compare.svg of the checkout by default, and its path is printed", function()
      local out, ok = compare(quick, {dir = dir})
      assert.is_true(ok, out)
      assert.is_truthy(out:find("\nchart: build/parlua-compare.svg\n", 1, true), out)
      assert.is_truthy(io.open(dir .. "/build/parlua-compare.svg"), "no chart in build/")
    end)

    it("is DIR/parlua-compare.svg with --out DIR, made when missing", function()
      local out, ok = compare(quick .. (" --out '%s/charts/new'"):format(dir))
      assert.is_true(ok, out)
      assert.is_truthy(out:find(("chart: %s/charts/new/parlua-compare.svg"):format(dir), 1, true), out)
      check_balanced(assert(io.open(dir .. "/charts/new/parlua-compare.svg")):read("a"))
    end)

    it("has the three lock timelines beside it, their paths and each thread's waits printed", function()
      local out, ok = compare(quick .. (" --out '%s/charts'"):format(dir))
      assert.is_true(ok, out)
      for _, name in ipairs{"cpu-threads", "io-threads", "cpu-states"} do
        local path = ("%s/charts/parlua-timeline-%s.svg"):format(dir, name)
        assert.is_truthy(out:find("\n    " .. path .. "\n", 1, true), name .. " not printed: " .. out)
        local text = assert(io.open(path)):read("a")
        check_balanced(text)
        local _, lanes = text:gsub('<g class="lane"', "")
        -- the main thread, and 2 or 4 workers
        assert.equal(name == "io-threads" and 5 or 3, lanes, name)
      end
      local _, waits = out:gsub("Worker%-%d +waited +%d+%% of its time", "")
      assert.equal(8, waits, out)
      assert.is_truthy(out:find("state 2: Pool%-%d+%-Worker%-%d +waited +0%% of its time"), out)
    end)

    it("is a temporary file, removed, in a smoke run: a user's chart in build/ stays", function()
      assert(os.execute(("mkdir '%s/build' && echo mine > '%s/build/parlua-compare.svg'"):format(dir, dir)))
      local out, ok = compare(quick, {dir = dir, env = "PARLUA_SMOKE=1"})
      assert.is_true(ok, out)
      local path = out:match("\nchart: (%S+) %(a smoke run's: removed%)\n")
      assert.is_truthy(path, out)
      assert.is_nil(io.open(path))
      assert.equal("mine\n", io.open(dir .. "/build/parlua-compare.svg"):read("a"))
      local timelines = 0
      for timeline in out:gmatch("\n    (/%S+)\n") do
        timelines = timelines + 1
        assert.is_nil(io.open(timeline), timeline .. " left behind")
      end
      assert.equal(3, timelines, out)
    end)
  end)

  it("refuses an unknown option and names it", function()
    local out, ok = compare("--frobnicate")
    assert.is_falsy(ok)
    assert.is_truthy(out:find("unknown option --frobnicate", 1, true), out)
  end)
end)
