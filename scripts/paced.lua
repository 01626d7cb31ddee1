-- A wrk script that sends requests at a fixed rate instead of flat out: RATE requests/s in all,
-- split evenly over wrk's THREADS threads. Each request takes the next slot of its thread's schedule;
-- one whose slot has passed goes at once, so a server that falls behind meets the backlog, not a
-- gentler load. Used by scripts/load.sh when RATE is set.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clock, paced_timespec *ts);
]]
local ts = ffi.new("paced_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval = 1000 * tonumber(os.getenv("THREADS")) / tonumber(os.getenv("RATE")) -- ms per request, per thread
local slot = nil

function delay()
  local now = now_ms()
  slot = (slot or now) + interval
  return math.max(0, slot - now)
end
