-- reject.lua: a job otpd cannot run (bad input), in one step: its status
-- record, the dead letter, the event and counter, and the entry's
-- acknowledgement.  See daemon/ledger.c and docs/protocol.md section 6.
--
-- A rejected entry may carry any id, including another job's: the record is
-- written only if there is none, or it is this entry's own, or it is the
-- client's "queued" placeholder that no entry has claimed yet.
--
-- KEYS: 1 job record, 2 dead-letter stream, 3 events, 4 stats, 5 job stream
-- ARGV: 1 entry id, 2 group, 3 job id, 4 now_ms, 5 record ttl s, 6 events maxlen,
--       7 dead-letter maxlen, 8 payload (cut), 9 reason
-- Returns 1 if the record was written, 0 if it belonged to another job.
local job, entry, now = KEYS[1], ARGV[1], ARGV[4]
local wrote = 0
local owner = redis.call('HGET', job, 'stream_id')
local free = not owner and (redis.call('EXISTS', job) == 0 or
  redis.call('HGET', job, 'status') == 'queued')
if owner == entry or free then
  redis.call('HSET', job, 'status', 'rejected', 'stream_id', entry, 'error', ARGV[9],
    'error_code', 'rejected', 'updated_ms', now)
  redis.call('EXPIRE', job, ARGV[5])
  wrote = 1
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'job', ARGV[8], 'reason', ARGV[9],
  'stream_id', entry, 'at_ms', now)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[3], 'status', 'rejected',
  'provider', '', 'error_code', 'rejected', 'ts_ms', now)
redis.call('HINCRBY', KEYS[4], 'jobs:rejected', '1')
redis.call('XACK', KEYS[5], ARGV[2], entry)
redis.call('XDEL', KEYS[5], entry)
return wrote
