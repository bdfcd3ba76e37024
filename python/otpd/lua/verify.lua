-- verify.lua: the web app's atomic check of a code (docs/protocol.md section 4).
-- KEYS: 1 the OTP record.  ARGV: 1 the code's MAC, 2 the key prefix (for
-- the pumping model's conversion counts, docs/fraud.md; absent: not counted).
local f = redis.call('HMGET', KEYS[1], 'mac', 'job', 'attempts', 'max_attempts', 'locked',
  'px', 'cc', 'ch')
local mac, job = f[1], f[2] or ''
if not mac then
  return {'expired', 0, job}
end
local attempts = tonumber(f[3]) or 0
local max = tonumber(f[4]) or 5
if f[5] == '1' or attempts >= max then
  return {'locked', 0, job}
end
-- A verified code: counted by channel and country (5-minute buckets, as
-- begin counts codes) and, for its number's prefix, marked converted.
local function converted(P)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local bucket = P .. 'fraud:counts:' .. math.floor(now / 300000)
  redis.call('HINCRBY', bucket, 'v|' .. (f[8] or 'sms') .. '|' .. (f[7] or ''), 1)
  redis.call('EXPIRE', bucket, 90000)
  local px = f[6] or ''
  if px == '' then return end
  local codes = P .. 'fraud:codes:' .. px
  local sent = redis.call('ZSCORE', codes, job)
  if not sent then return end
  -- The verified set keeps to the codes' window: what is older than their oldest goes.
  local ok = P .. 'fraud:ok:' .. px
  local oldest = redis.call('ZRANGE', codes, 0, 0, 'WITHSCORES')
  redis.call('ZADD', ok, sent, job)
  redis.call('ZREMRANGEBYSCORE', ok, '-inf', '(' .. oldest[2])
end
if mac == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] then converted(ARGV[2]) end
  return {'ok', max - attempts, job}
end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts >= max then
  redis.call('HSET', KEYS[1], 'locked', '1')
  return {'locked', 0, job}
end
return {'mismatch', max - attempts, job}
