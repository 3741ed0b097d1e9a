-- Big values between states: a 64 MiB string to a worker and back reuses
-- the big blocks of core/bigmem.h instead of mapping fresh memory for each
-- copy (which cost 16,384 page faults a copy, four copies a round trip),
-- also for the frames that carry them to and from worker processes.
-- Counted in minor page faults, never in time.
local par = require "parlua"

local function self_stat()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("a")
  f:close()
  return stat
end

local function minor_faults()
  local stat = self_stat()
  -- after "(comm)": state ppid pgrp session tty tpgid flags minflt ...
  local rest = stat:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[8])
end

-- A function whose _ENV is _G (busted gives each spec file its own,
-- which would travel as a copy).
local function fn(src)
  return assert(load("return " .. src, "=task", "t", _G))()
end

describe("big values", function()
  it("go to worker processes and back whole, beside a pipe, in frames that reuse their buffers", function()
    local pool = par.pool{kind = "processes", workers = 1}
    local echo = fn [[function(s, t, w)
      w:send(#s)
      return s, t
    end]]
    local big = ("0123456789abcdef"):rep(3 * 1024 * 1024)  -- 48 MiB: big blocks both ways
    local t = {}
    for i = 1, 200000 do t[i] = i + 0.5 end
    local r, w = par.pipe()
    for i = 1, 4 do
      local s2, t2 = pool:submit(echo, big .. i, t, w):result()
      assert.equal(big .. i, s2)
      assert.equal(#t, #t2)
      assert.equal(t[123457], t2[123457])
      assert.equal(#big + 1, r:recv(10))
    end
    pool:shutdown()
    r:close()
    w:close()
  end)

  it("a 64 MiB string round trip through a states worker maps no fresh memory for its copies", function()
    local pool = par.pool{kind = "states", workers = 1}
    local s = ("0123456789abcdef"):rep(4 * 1024 * 1024)
    local id = function(x) return x end
    for _ = 1, 3 do assert.equal(#s, #pool:submit(id, s):result()) end  -- warm: blocks to keep
    local before = minor_faults()
    for _ = 1, 3 do assert.equal(#s, #pool:submit(id, s):result()) end
    local faults = minor_faults() - before
    pool:shutdown()
    -- Fresh memory for every copy: 3 x 4 x 16,384 faults.  With kept
    -- blocks at most one copy a trip in stock lua5.4, the main state's
    -- string (its allocator is lua5.4's), and now and then one more whose
    -- block a collection gave back late: well under half.
    assert.is_true(faults < 3 * 4 * 16384 / 2, ("%d minor faults"):format(faults))
  end)
end)
