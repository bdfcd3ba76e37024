-- verify.lua: the web app's atomic check of a code (docs/protocol.md section 4).
local f = redis.call('HMGET', KEYS[1], 'mac', 'job', 'attempts', 'max_attempts', 'locked')
local mac, job = f[1], f[2] or ''
if not mac then
  return {'expired', 0, job}
end
local attempts = tonumber(f[3]) or 0
local max = tonumber(f[4]) or 5
if f[5] == '1' or attempts >= max then
  return {'locked', 0, job}
end
if mac == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {'ok', max - attempts, job}
end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts >= max then
  redis.call('HSET', KEYS[1], 'locked', '1')
  return {'locked', 0, job}
end
return {'mismatch', max - attempts, job}
