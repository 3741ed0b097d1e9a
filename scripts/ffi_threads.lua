-- A slow C function on 4 threads, with and without `nogil` (API.md section 8).
-- Run: parlua scripts/ffi_threads.lua [seconds-per-call]   (PARLUA_SMOKE=1: fast)
--
-- libc's usleep stands in for any long foreign call (a numeric kernel, a
-- compression routine).  Without nogil the call keeps the global lock, so
-- the threads take turns: 4 calls take 4 times as long as one.  With nogil
-- the lock is released for the duration of the call and the 4 sleeps
-- overlap.
local par = require "parlua"
local ffi = require "parlua.ffi"

local smoke = os.getenv("PARLUA_SMOKE") ~= nil
local seconds = tonumber(arg and arg[1]) or (smoke and 0.02 or 0.2)
local nthreads = 4
local usec = math.floor(seconds * 1e6)

local libc = ffi.open()
local usleep_locked = libc:fn("int usleep(unsigned int usec)")
local usleep_nogil = libc:fn("int usleep(unsigned int usec)", {nogil = true})

-- Returns the elapsed time and how many calls failed (usleep returns -1,
-- e.g. when a signal interrupted it).
local function run(usleep)
  local threads, failed = {}, 0
  local t0 = par.clock()
  for i = 1, nthreads do
    threads[i] = par.thread(function() return usleep(usec) end)
    threads[i]:start()
  end
  for i = 1, nthreads do
    if threads[i]:result() ~= 0 then failed = failed + 1 end
  end
  return par.clock() - t0, failed
end

print(("%d threads, each calling usleep(%d) once (%.3f s)"):format(nthreads, usec, seconds))
local function note(failed)
  if failed > 0 then print(("  (%d of %d calls returned early with an error)"):format(failed, nthreads)) end
end
local locked, lfailed = run(usleep_locked)
print(("  holding the lock  : %.3f s  (expected about %.3f s: one call at a time)"):format(locked, nthreads * seconds))
note(lfailed)
local free, ffailed = run(usleep_nogil)
print(("  nogil = true      : %.3f s  (expected about %.3f s: all at once)"):format(free, seconds))
note(ffailed)
print(("  speed-up          : %.1fx"):format(locked / free))
