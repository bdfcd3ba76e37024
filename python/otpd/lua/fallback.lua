-- fallback.lua: a code not verified in time, or not delivered, goes again by
-- the next channel (a call, an e-mail): the same code, once.  See
-- daemon/fallback.c and docs/protocol.md section 15.
--
-- finish.lua schedules it when a job with fallback channels ends:
--   {p}fallbacks       sorted set: job id -> when its fallback is due (ms);
--                      receipt.lua makes it due at once when the message is
--                      reported undelivered or failed
--   {p}fallback:{id}   hash: job (the next job's JSON), otp (the code's
--                      record, purpose:number), expires_ms (the code's
--                      deadline when it was sent), channel (the next one),
--                      next_id (the next job's id); gone with the code
--
-- KEYS: 1 {p}fallbacks, 2 {p}jobs, 3 {p}events
-- ARGV: 1 key prefix, 2 now_ms, 3 at most this many, 4 events maxlen
-- Returns {id, verdict, channel, next id} per due fallback.  verdict:
--   queued: the next job is on the stream;
--   verified: the code was used meanwhile: nothing to do;
--   expired: under 10 s of the code's life left, or none;
--   replaced: a newer code replaced it; locked: too many wrong guesses;
--   gone: its details expired with the code.
local P, now = ARGV[1], tonumber(ARGV[2])
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = P .. 'fallback:' .. id
  local f = redis.call('HMGET', key, 'job', 'otp', 'expires_ms', 'channel', 'next_id')
  redis.call('DEL', key)
  local verdict = 'gone'
  if f[1] then
    local rec = redis.call('HMGET', P .. 'otp:' .. f[2], 'expires_ms', 'locked')
    if now >= tonumber(f[3]) - 10000 then
      verdict = 'expired'
    elseif not rec[1] then
      verdict = 'verified'
    elseif rec[1] ~= f[3] then
      verdict = 'replaced'
    elseif rec[2] == '1' then
      verdict = 'locked'
    else
      redis.call('XADD', KEYS[2], '*', 'job', f[1])
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'status', 'fallback',
        'provider', '', 'error_code', '', 'ts_ms', ARGV[2], 'channel', f[4])
      verdict = 'queued'
    end
  end
  local job = P .. 'job:' .. id
  if redis.call('EXISTS', job) == 1 then
    local fields = {'fallback_result', verdict}
    if verdict == 'queued' then
      for _, v in ipairs({'fallback_job', f[5], 'fallback_channel', f[4]}) do
        fields[#fields + 1] = v
      end
    end
    redis.call('HSET', job, unpack(fields))
  end
  out[#out + 1] = {id, verdict, f[4] or '', f[5] or ''}
end
return out
