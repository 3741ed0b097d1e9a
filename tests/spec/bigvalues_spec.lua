-- Big values between states: a 64 MiB string to a worker and back reuses
-- the big blocks of core/bigmem.h instead of mapping fresh memory for each
-- copy (which cost 16,384 page faults a copy, four copies a round trip).
-- Counted in minor page faults of this process (/proc/self/stat), never
-- in time.
local par = require "parlua"

local function minor_faults()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("a")
  f:close()
  -- after "(comm)": state ppid pgrp session tty tpgid flags minflt ...
  local rest = stat:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[8])
end

describe("big values", function()
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
    -- blocks at most one copy a trip: the main state's string in stock
    -- lua5.4 (its allocator is lua5.4's), with room for a collection
    -- that gave a block back late.
    assert.is_true(faults < 3 * 16384 * 1.5, ("%d minor faults"):format(faults))
  end)
end)
