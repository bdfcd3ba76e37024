-- note.lua: a job that will be tried again ("retrying"): its status, event
-- and counters, without ending it.  See daemon/ledger.c.
--
-- KEYS: 1 job record, 2 events, 3 stats
-- ARGV: 1 job id, 2 now_ms, 3 status ttl s, 4 events maxlen, 5 provider,
--       6 error code, 7 error, 8 attempts
-- Returns 1.
local id, now, provider = ARGV[1], ARGV[2], ARGV[5]
redis.call('HSET', KEYS[1], 'status', 'retrying', 'updated_ms', now, 'attempts', ARGV[8],
  'provider', provider, 'provider_ref', '', 'provider_status', '', 'error_code', ARGV[6],
  'error', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'status', 'retrying',
  'provider', provider, 'error_code', ARGV[6], 'ts_ms', now)
redis.call('HINCRBY', KEYS[3], 'jobs:retries', '1')
if provider ~= '' then
  redis.call('HINCRBY', KEYS[3], 'provider:' .. provider .. ':retries', '1')
end
return 1
