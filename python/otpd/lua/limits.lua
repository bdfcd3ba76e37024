-- limits.lua: the send limits and opt-outs, one script for both sides.
-- The web app's client runs it in "check" mode before enqueueing, so a page
-- can answer "wait 25 s" at once; otpd runs it in "take" mode inside
-- begin.lua (as the local function check_limits) before a code is made.
-- See docs/protocol.md section 7.
--
-- KEYS: 1 limits, 2 the number's sends, 3 global sends, 4 the country's
--       sends, 5 opt-outs, 6 country alert
-- ARGV: 1 mode, 2 now_ms, 3 job id, 4 number, 5 calling code, 6 purpose[,
--       7 interval_ms, 8 per_hour, 9 per_day, 10 global_per_hour, 11 this
--       country's budget, 12 other countries' budget ("" for none)[, 13 "1"
--       when the caller has already looked the number up in the opt-outs]]:
--       otpd passes its own limits, so a deleted limits hash cannot turn
--       them off; without them (the client) the published hash is read.
-- Returns {0} or {1, reason, retry_after_ms}.  A job already counted (a
-- reclaim) passes again.
local L = {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]}
if not ARGV[7] then
  L = redis.call('HMGET', KEYS[1], 'interval_ms', 'per_hour', 'per_day',
    'global_per_hour', 'country_budget:' .. ARGV[5], 'country_budget:*')
end
local take, now, job, purpose = ARGV[1] == 'take', tonumber(ARGV[2]), ARGV[3], ARGV[6]
local HOUR, DAY = 3600000, 86400000
if ARGV[13] ~= '1' and redis.call('HEXISTS', KEYS[5], ARGV[4]) == 1 then
  return {1, 'opted_out', 0}
end
local interval = tonumber(L[1]) or 0
local per_hour, per_day = tonumber(L[2]) or 0, tonumber(L[3]) or 0
-- The number's sends, members "purpose:job id" scored by send time, kept
-- as long as the longest limit that is on: one read serves the interval
-- (same purpose) and both counts (all purposes).
local keep = per_day > 0 and DAY or per_hour > 0 and HOUR or interval
local member = purpose .. ':' .. job
local function number_full()
  if keep <= 0 then return nil end
  local sends = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  if take and #sends > 0 and tonumber(sends[2]) <= now - keep then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - keep)
  end
  local mine, last, hour, day, first_hour, first_day = purpose .. ':', nil, 0, 0, nil, nil
  for i = 1, #sends, 2 do
    local m, t = sends[i], tonumber(sends[i + 1])
    if m == member then return nil end
    if t > now - keep then
      if t > now - DAY then
        day = day + 1
        first_day = first_day or t
      end
      if t > now - HOUR then
        hour = hour + 1
        first_hour = first_hour or t
      end
      if t > now - interval and m:sub(1, #mine) == mine then last = t end
    end
  end
  if interval > 0 and last then return {'interval', last + interval - now} end
  if per_hour > 0 and hour >= per_hour then return {'per_hour', first_hour + HOUR - now} end
  if per_day > 0 and day >= per_day then return {'per_day', first_day + DAY - now} end
  return nil
end
-- The global and country sets are large: counted by Redis, not read.
local function full(key, max, reason)
  if not max or max <= 0 then return nil end
  if take then redis.call('ZREMRANGEBYSCORE', key, '-inf', now - HOUR) end
  if redis.call('ZSCORE', key, job) then return nil end
  if redis.call('ZCOUNT', key, now - HOUR + 1, '+inf') < max then return nil end
  local first = redis.call('ZRANGEBYSCORE', key, now - HOUR + 1, '+inf', 'WITHSCORES',
    'LIMIT', 0, 1)
  return {reason, tonumber(first[2]) + HOUR - now}
end
local budget = tonumber(L[5]) or tonumber(L[6]) or 0
local global = tonumber(L[4]) or 0
local refused = number_full() or full(KEYS[3], global, 'global_per_hour') or
  full(KEYS[4], budget, 'country_budget')
if refused then
  if refused[1] == 'country_budget' and take then
    redis.call('SET', KEYS[6], ARGV[2], 'PX', '3600000')
  end
  return {1, refused[1], refused[2]}
end
if not take then return {0} end
if keep > 0 then
  redis.call('ZADD', KEYS[2], ARGV[2], member)
  redis.call('PEXPIRE', KEYS[2], keep)
end
if global > 0 then redis.call('ZADD', KEYS[3], ARGV[2], job) end
if budget > 0 then
  redis.call('ZADD', KEYS[4], ARGV[2], job)
  redis.call('PEXPIRE', KEYS[4], HOUR)
end
return {0}
