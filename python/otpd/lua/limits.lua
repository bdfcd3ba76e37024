-- limits.lua: the send limits and opt-outs, one script for both sides.
-- The web app's client runs it in "check" mode before enqueueing, so a page
-- can answer "wait 25 s" at once; otpd runs it in "take" mode inside
-- begin.lua (as the local function check_limits) before a code is made.
-- See docs/protocol.md section 7.
--
-- KEYS: 1 limits, 2 last send, 3 per-number zset, 4 global zset,
--       5 country zset, 6 opt-outs, 7 country alert
-- ARGV: 1 mode, 2 now_ms, 3 job id, 4 number, 5 calling code[, 6 interval_ms,
--       7 per_hour, 8 per_day, 9 global_per_hour, 10 this country's budget,
--       11 other countries' budget ("" for none)]: otpd passes its own limits,
--       so a deleted limits hash cannot turn them off; without them (the
--       client) the published hash is read.
-- Returns {0} or {1, reason, retry_after_ms}.  A job already counted (a
-- reclaim) passes again.
local L = {ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]}
if not ARGV[6] then
  L = redis.call('HMGET', KEYS[1], 'interval_ms', 'per_hour', 'per_day',
    'global_per_hour', 'country_budget:' .. ARGV[5], 'country_budget:*')
end
local now, job = tonumber(ARGV[2]), ARGV[3]
local HOUR, DAY = 3600000, 86400000
if redis.call('HEXISTS', KEYS[6], ARGV[4]) == 1 then return {1, 'opted_out', 0} end
local interval = tonumber(L[1]) or 0
if interval > 0 then
  local last = redis.call('GET', KEYS[2])
  if last and last ~= job then return {1, 'interval', redis.call('PTTL', KEYS[2])} end
end
local per_hour, per_day = tonumber(L[2]) or 0, tonumber(L[3]) or 0
-- The number's sends of the last day, read once for both of its limits (a
-- few entries); nil if this job was already counted (a reclaim passes).
local function number_full()
  if per_hour <= 0 and per_day <= 0 then return nil end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - DAY)
  local sends = redis.call('ZRANGEBYSCORE', KEYS[3], now - DAY + 1, '+inf', 'WITHSCORES')
  for i = 1, #sends, 2 do
    if sends[i] == job then return nil end
  end
  for _, c in ipairs({{HOUR, per_hour, 'per_hour'}, {DAY, per_day, 'per_day'}}) do
    if c[2] > 0 then
      local n, first = 0, nil
      for i = 2, #sends, 2 do
        local t = tonumber(sends[i])
        if t > now - c[1] then
          n = n + 1
          first = first or t
        end
      end
      if n >= c[2] then return {c[3], first + c[1] - now} end
    end
  end
  return nil
end
-- The global and country sets are large: counted by Redis, not read.
local function full(key, max, reason)
  if not max or max <= 0 then return nil end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - HOUR)
  if redis.call('ZSCORE', key, job) then return nil end
  if redis.call('ZCOUNT', key, now - HOUR + 1, '+inf') < max then return nil end
  local first = redis.call('ZRANGEBYSCORE', key, now - HOUR + 1, '+inf', 'WITHSCORES',
    'LIMIT', 0, 1)
  return {reason, tonumber(first[2]) + HOUR - now}
end
local budget = tonumber(L[5]) or tonumber(L[6]) or 0
local global = tonumber(L[4]) or 0
local refused = number_full() or full(KEYS[4], global, 'global_per_hour') or
  full(KEYS[5], budget, 'country_budget')
if refused then
  if refused[1] == 'country_budget' and ARGV[1] == 'take' then
    redis.call('SET', KEYS[7], ARGV[2], 'PX', '3600000')
  end
  return {1, refused[1], refused[2]}
end
if ARGV[1] ~= 'take' then return {0} end
if interval > 0 then redis.call('SET', KEYS[2], job, 'PX', interval) end
if per_hour > 0 or per_day > 0 then
  redis.call('ZADD', KEYS[3], ARGV[2], job)
  redis.call('PEXPIRE', KEYS[3], DAY)
end
if global > 0 then redis.call('ZADD', KEYS[4], ARGV[2], job) end
if budget > 0 then
  redis.call('ZADD', KEYS[5], ARGV[2], job)
  redis.call('PEXPIRE', KEYS[5], HOUR)
end
return {0}
