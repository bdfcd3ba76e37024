-- finish.lua: a job's end, in one step (the ledger's "finish"): its final
-- status, event and counters, the receipt reference, the opt-out, the burnt
-- code, and the entry's acknowledgement and deletion, all or nothing.  See
-- daemon/ledger.c and docs/protocol.md section 8.
--
-- KEYS: 1 job record, 2 OTP record, 3 events, 4 stats, 5 job stream,
--       6 receipt reference ({p}ref:{provider}:{ref}), 7 opt-outs
-- ARGV: 1 entry id, 2 group, 3 job id, 4 now_ms, 5 status ttl s, 6 events maxlen,
--       7 status, 8 provider, 9 provider ref, 10 provider status, 11 error code,
--       12 error, 13 attempts, 14 sent_ms or '', 15 masked number or '',
--       16 purpose, 17 created_ms or '', 18 expires_ms, 19 calling code,
--       20 number (opt-out) or '', 21 burn the code: '1' or '0'
-- Returns 1.
local job, otp, stream = KEYS[1], KEYS[2], KEYS[5]
local id, now, status, provider = ARGV[3], ARGV[4], ARGV[7], ARGV[8]

local f = {'status', status, 'updated_ms', now, 'attempts', ARGV[13],
  'provider', provider, 'provider_ref', ARGV[9], 'provider_status', ARGV[10],
  'error_code', ARGV[11], 'error', ARGV[12]}
if ARGV[14] ~= '' then
  table.insert(f, 'sent_ms')
  table.insert(f, ARGV[14])
end
if ARGV[15] ~= '' then
  for _, v in ipairs({'to', ARGV[15], 'purpose', ARGV[16]}) do table.insert(f, v) end
end
-- A job that ended before begin.lua (expired, country not allowed) has
-- none of the record's fixed fields yet.
if ARGV[17] ~= '' then
  for _, v in ipairs({'created_ms', ARGV[17], 'expires_ms', ARGV[18], 'stream_id', ARGV[1],
    'cc', ARGV[19]}) do
    table.insert(f, v)
  end
end
redis.call('HSET', job, unpack(f))
-- Begun jobs' records already expire (begin.lua); the others are new here.
if ARGV[17] ~= '' then redis.call('EXPIRE', job, ARGV[5]) end
-- Receipts name the provider's message; this finds the job again.
if status == 'sent' and ARGV[9] ~= '' then
  redis.call('SET', KEYS[6], id, 'EX', ARGV[5])
end
-- STOP: remembered until an operator removes it (otpctl optout remove).
if ARGV[20] ~= '' then redis.call('HSET', KEYS[7], ARGV[20], now) end
-- Burn the code only if it is still this job's: a newer one may have replaced it.
if ARGV[21] == '1' and redis.call('HGET', otp, 'job') == id then redis.call('DEL', otp) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', id, 'status', status,
  'provider', provider, 'error_code', ARGV[11], 'ts_ms', now)
redis.call('HINCRBY', KEYS[4], 'jobs:' .. status, '1')
if provider ~= '' then
  redis.call('HINCRBY', KEYS[4], 'provider:' .. provider .. ':' .. status, '1')
end
redis.call('XACK', stream, ARGV[2], ARGV[1])
redis.call('XDEL', stream, ARGV[1])
return 1
