-- finish.lua: jobs' ends (the ledger's "finish"), for a batch of jobs in one
-- call: each job's final status, event and counters, the receipt reference,
-- the opt-out, the burnt code, and the entries' acknowledgement and
-- deletion, in one script.  See daemon/ledger.c and docs/protocol.md
-- section 8.  Runs after batch.lua (run_batch, count, acks).
--
-- KEYS: 1 job stream, 2 events, 3 stats, 4 opt-outs, 5 the polling schedule
--       (the rest are named from the prefix: with a hash-tagged prefix they
--       share these keys' slot)
-- ARGV: 1 key prefix, 2 group, 3 now_ms, 4 status ttl s, 5 events maxlen,
--       6 first poll after ms, 7 poll horizon ms, then per job 13 fields: entry id, job id, status, provider,
--       provider ref, provider status, error code, error, attempts,
--       sent_ms or '', number, purpose, flags; and 4 more when the flags
--       hold 'n': masked number, created_ms, expires_ms, calling code.
--       Flags: 'n' the job ended before begin wrote its record, 'b' burn
--       its code (if still this job's), 'o' the number replied STOP, 'p' no
--       webhook will report this message: poll its provider (poll.lua),
--       'f' a fallback follows (fallback.lua), with 6 more fields after the
--       others: the next job's JSON, its id, its channel, the code's record
--       (purpose:number), the code's deadline, and when the fallback is due.
-- Returns one reply per job, in order: 1, or {'error', why} if this job's
-- writes failed (its entry is then not acknowledged).
local stream, events, stats, optout, polls = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local P, group, now, ttl, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local FIXED, EXTRA, FIRST = 14, 4, 7
-- j: the job's fields, as above.
local function finish(j)
  local entry, id, status, provider, ref = j[1], j[2], j[3], j[4], j[5]
  local flags, job = j[13], P .. 'job:' .. j[2]
  local f = {'status', status, 'updated_ms', now, 'attempts', j[9], 'provider', provider,
    'provider_ref', ref, 'provider_status', j[6], 'error_code', j[7], 'error', j[8]}
  if j[10] ~= '' then
    f[#f + 1] = 'sent_ms'
    f[#f + 1] = j[10]
  end
  -- A job that ended before begin (expired, country not allowed) has none
  -- of the record's fixed fields yet.
  local fresh = flags:find('n', 1, true)
  if fresh then
    for _, v in ipairs({'to', j[15], 'purpose', j[12], 'created_ms', j[16],
      'expires_ms', j[17], 'stream_id', entry, 'cc', j[18], 'channel', j[14]}) do
      f[#f + 1] = v
    end
  end
  redis.call('HSET', job, unpack(f))
  -- Begun jobs' records already expire (begin.lua); the others are new here.
  if fresh then redis.call('EXPIRE', job, ttl) end
  -- Receipts name the provider's message; this finds the job again.
  if status == 'sent' and ref ~= '' then
    redis.call('SET', P .. 'ref:' .. provider .. ':' .. ref, id, 'EX', ttl)
    if flags:find('p', 1, true) then
      local t = tonumber(now)
      redis.call('ZADD', polls, t + tonumber(ARGV[6]), table.concat({provider, ref,
        tostring(t + tonumber(ARGV[7])), ARGV[6]}, '|'))
    end
  end
  -- A message no provider took costs nothing: give back what begin charged.
  if status ~= 'sent' and not fresh then
    local c = redis.call('HMGET', job, 'price_micro', 'price_source', 'spend_at', 'cc')
    if c[1] and c[2] == 'table' and c[3] then
      for _, k in ipairs({P .. 'spend:day:' .. c[3]:sub(1, 10), P .. 'spend:hour:' .. c[3]}) do
        redis.call('HINCRBY', k, '*', -tonumber(c[1]))
        redis.call('HINCRBY', k, c[4], -tonumber(c[1]))
      end
      redis.call('HDEL', job, 'price_micro', 'price_unit', 'price_source', 'spend_at')
    end
  end
  -- The next channel, if this one does not do: due after the delay, at once if not sent.
  if flags:find('f', 1, true) then
    local n = #j - 5
    local due = status == 'sent' and tonumber(j[n + 5]) or tonumber(now)
    local key = P .. 'fallback:' .. id
    redis.call('HSET', key, 'job', j[n], 'next_id', j[n + 1], 'channel', j[n + 2], 'otp', j[n + 3],
      'expires_ms', j[n + 4])
    redis.call('PEXPIRE', key, math.max(tonumber(j[n + 4]) - tonumber(now), 1000))
    redis.call('ZADD', P .. 'fallbacks', due, id)
    redis.call('HSET', job, 'fallback_channel', j[n + 2], 'fallback_due_ms', tostring(due))
  end
  -- STOP: remembered until an operator removes it (otpctl optout remove).
  if flags:find('o', 1, true) then redis.call('HSET', optout, j[11], now) end
  -- Burn the code only if it is still this job's: a newer one may have replaced it.
  if flags:find('b', 1, true) then
    local otp = P .. 'otp:' .. j[12] .. ':' .. j[11]
    if redis.call('HGET', otp, 'job') == id then redis.call('DEL', otp) end
  end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'id', id, 'status', status,
    'provider', provider, 'error_code', j[7], 'ts_ms', now, 'channel', j[14])
  count('jobs:' .. status)
  if provider ~= '' then count('provider:' .. provider .. ':' .. status) end
  acks[#acks + 1] = entry
  return 1
end

local jobs, i = {}, FIRST
while i + FIXED <= #ARGV do
  local n = FIXED
  if ARGV[i + 13]:find('n', 1, true) then n = FIXED + EXTRA end
  if ARGV[i + 13]:find('f', 1, true) then n = n + 6 end
  jobs[#jobs + 1] = {unpack(ARGV, i + 1, i + n)}
  i = i + n
end
return run_batch(finish, jobs, stream, group, stats)
