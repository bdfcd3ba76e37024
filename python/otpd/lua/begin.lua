-- begin.lua: a claimed job's first write, in one step (the ledger's "begin").
-- Runs after limits.lua, which otpd prepends as the local function
-- check_limits(KEYS, ARGV); see daemon/ledger.c and docs/protocol.md section 8.
--
-- KEYS: 1 job record, 2 OTP record, 3 events, 4 stats, 5 job stream,
--       6..12 the limits keys (limits.lua's KEYS 1..7)
-- ARGV: 1 entry id, 2 group, 3 job id, 4 now_ms, 5 status ttl s, 6 events maxlen,
--       7 mac, 8 created_ms, 9 expires_ms, 10 max_attempts, 11 code ttl ms,
--       12 masked number, 13 purpose, 14 calling code, 15 number,
--       16..21 the limits (limits.lua's ARGV 6..11)
-- Returns {'go'}: the OTP record and the "sending" status are written;
--   {'done', status}: already final (a reclaim whose ack was lost);
--   {'duplicate', status}: the id belongs to another entry;
--   {'denied', status, error_code, error, retry_after_ms}: ended here.
-- Every verdict but 'go' has acknowledged and deleted the entry.
local job, otp, events, stats, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local entry, group, id, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function event(status, code)
  redis.call('XADD', events, 'MAXLEN', '~', ARGV[6], '*', 'id', id, 'status', status,
    'provider', '', 'error_code', code, 'ts_ms', now)
end

local function ack()
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

local function deny(status, code, text, retry_after)
  local f = {'status', status, 'stream_id', entry, 'updated_ms', now, 'attempts', '0',
    'provider', '', 'provider_ref', '', 'provider_status', '', 'error_code', code,
    'error', text, 'to', ARGV[12], 'purpose', ARGV[13], 'created_ms', ARGV[8],
    'expires_ms', ARGV[9], 'cc', ARGV[14]}
  if retry_after then
    table.insert(f, 'retry_at_ms')
    table.insert(f, tostring(tonumber(now) + retry_after))
  end
  redis.call('HSET', job, unpack(f))
  redis.call('EXPIRE', job, ARGV[5])
  event(status, code)
  redis.call('HINCRBY', stats, 'jobs:' .. status, '1')
  ack()
  return {'denied', status, code, text, retry_after or 0}
end

-- The id names one entry: another entry with it is a duplicate.
local cur = redis.call('HMGET', job, 'stream_id', 'status')
local owner, st = cur[1], cur[2] or ''
if owner and owner ~= entry then
  event('duplicate', '')
  redis.call('HINCRBY', stats, 'jobs:duplicate', '1')
  ack()
  return {'duplicate', st}
end
local final = {sent = 1, delivered = 1, undelivered = 1, failed = 1, expired = 1,
  rejected = 1, rate_limited = 1}
if final[st] then
  ack()
  return {'done', st}
end

local lim = check_limits({KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]},
  {'take', now, id, ARGV[15], ARGV[14], ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20],
   ARGV[21]})
if lim[1] == 1 then
  if lim[2] == 'opted_out' then
    return deny('failed', 'opted_out', 'the recipient replied STOP: they must text START to ' ..
      'the sender first; then remove the number with: otpctl optout remove NUMBER')
  end
  local wait = tonumber(lim[3])
  return deny('rate_limited', lim[2], string.format(
    'over the %s limit; a new request is accepted in %d s', lim[2], math.ceil(wait / 1000)),
    wait)
end

-- A newer code for this number and purpose wins, even out of order.
local older = redis.call('HGET', otp, 'created_ms')
if older and tonumber(older) > tonumber(ARGV[8]) then
  return deny('failed', 'superseded',
    'superseded: a newer code for this number and purpose was already issued')
end
-- No field of a replaced record (such as "locked") may survive.
if older then redis.call('DEL', otp) end
redis.call('HSET', otp, 'mac', ARGV[7], 'job', id, 'attempts', '0', 'max_attempts', ARGV[10],
  'created_ms', ARGV[8])
redis.call('PEXPIRE', otp, ARGV[11])
redis.call('HSET', job, 'status', 'sending', 'stream_id', entry, 'to', ARGV[12],
  'purpose', ARGV[13], 'created_ms', ARGV[8], 'updated_ms', now, 'expires_ms', ARGV[9],
  'attempts', '0', 'cc', ARGV[14])
-- The client's "queued" record, or a reclaimed job's, already expires.
if st == '' then redis.call('EXPIRE', job, ARGV[5]) end
event('sending', '')
return {'go'}
