-- begin.lua: claimed jobs' first write (the ledger's "begin"), for a batch of
-- jobs in one call.  Runs after batch.lua (run_batch, count, acks, after),
-- limits.lua, which otpd prepends as the local function check_limits(KEYS,
-- ARGV), fraud.lua (fraud_check, fraud_count, fraud_tally) and spend.lua
-- (spend_check, spend_take); see daemon/ledger.c and docs/protocol.md
-- section 8, docs/fraud.md for the last two.
--
-- KEYS: 1 job stream, 2 events, 3 stats, 4 opt-outs (the rest are named
--       from the prefix: with a hash-tagged prefix they share these keys' slot)
-- ARGV: 1 key prefix, 2 group, 3 now_ms, 4 status ttl s, 5 events maxlen,
--       6 interval_ms, 7 per_hour, 8 per_day, 9 global_per_hour,
--       10 the budget of countries without their own ("" for none),
--       11 sends allowed per code (OTPD_MAX_SENDS_PER_CODE),
--       12..19 the pumping model: window ms, settle ms, baseline ms, spike
--       factor, least codes, least conversion %, pause ms, '1' to pause,
--       20..24 spend: the UTC day (YYYY-MM-DD), the UTC hour (YYYY-MM-DDTHH),
--       ms left in the day, the daily budget in micro-units ("" for none),
--       the price currency,
--       then 22 fields per job: entry id, job id, mac, created_ms, expires_ms,
--       max_attempts, code ttl ms, masked number, purpose, calling code,
--       number, this country's own budget ("" for none), the new code
--       sealed (otp_seal), '1' if the job asks for a fresh code, '2' if the
--       code of record must be replaced whoever made it (it did not open),
--       the channel ('sms' or 'email'), the number's prefix for the
--       pumping model ("" for none), the message's SMS segments and
--       encoding ("" for e-mail), its expected price in micro-units ("" if
--       unknown), this country's daily spend budget ("" for none), the job
--       it is the fallback of ("" for none: fallback.lua), the number whose
--       code it delivers ("" for its own: an e-mail fallback's)
-- Returns one verdict per job, in order:
--   {'go'}: the OTP record and the "sending" status are written;
--   {'resend', sealed, expires_ms, reclaimed}: a valid code exists for this
--     number and purpose: send that one (sealed) until expires_ms;
--     reclaimed '1' when it is this job's own code (a reclaim after a crash);
--   {'done', status}: already final (a reclaim whose ack was lost);
--   {'duplicate', status}: the id belongs to another entry;
--   {'denied', status, error_code, error, retry_after_ms, paused}: ended
--     here; paused '1' when this job's code made its prefix look pumped;
--   {'error', why}: this job's writes failed (the entry stays pending).
-- Every verdict but 'go' and 'error' has acknowledged and deleted the entry:
-- one XACK and one XDEL for the batch, as the counters are one HINCRBY each.
local stream, events, stats, optout = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local P, group, now, ttl, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local FIELDS, FIRST = 22, 24
local MAX_SENDS = tonumber(ARGV[11])
local FINAL = {sent = 1, delivered = 1, undelivered = 1, failed = 1, expired = 1,
  rejected = 1, rate_limited = 1}
-- The opt-outs, read once for the batch (limits.lua is told they were).
local numbers, opted = {}, {}
for base = FIRST, #ARGV - FIELDS, FIELDS do numbers[#numbers + 1] = ARGV[base + 11] end
if #numbers > 0 then
  local found = redis.call('HMGET', optout, unpack(numbers))
  for i, v in ipairs(numbers) do
    if found[i] then opted[v] = true end
  end
end

local function event(j, status, code)
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'id', j[2], 'status', status,
    'provider', '', 'error_code', code, 'ts_ms', now, 'channel', j[15])
end

-- j: the job's fields (j[1] entry id ... j[15] its channel).
local function deny(j, job, status, code, text, retry_after, paused)
  local f = {'status', status, 'stream_id', j[1], 'updated_ms', now, 'attempts', '0',
    'provider', '', 'provider_ref', '', 'provider_status', '', 'error_code', code,
    'error', text, 'to', j[8], 'purpose', j[9], 'created_ms', j[4], 'expires_ms', j[5],
    'cc', j[10], 'channel', j[15]}
  if retry_after then
    f[#f + 1] = 'retry_at_ms'
    f[#f + 1] = tostring(tonumber(now) + retry_after)
  end
  redis.call('HSET', job, unpack(f))
  redis.call('EXPIRE', job, ttl)
  event(j, status, code)
  count('jobs:' .. status)
  acks[#acks + 1] = j[1]
  return {'denied', status, code, text, retry_after or 0, paused or ''}
end

-- The "sending" status and event; source: 'new' or 'resent' (which code goes).
-- A message with a price is charged here (spend.lua); a reclaim was already.
local function sending(j, job, st, source, expires, verdict, charge)
  local f = {'status', 'sending', 'stream_id', j[1], 'to', j[8], 'purpose', j[9],
    'created_ms', j[4], 'updated_ms', now, 'expires_ms', expires, 'attempts', '0',
    'cc', j[10], 'code_source', source, 'channel', j[15]}
  if j[17] ~= '' then
    for _, v in ipairs({'segments', j[17], 'encoding', j[18]}) do f[#f + 1] = v end
  end
  if charge and j[19] ~= '' then
    spend_take(j[10], tonumber(j[19]))
    for _, v in ipairs({'price_micro', j[19], 'price_unit', ARGV[24], 'price_source', 'table',
      'spend_at', ARGV[21]}) do f[#f + 1] = v end
  end
  if j[15] == 'sms' then fraud_tally('s', j[15], j[10]) end
  if j[21] ~= '' then
    f[#f + 1] = 'fallback_of'
    f[#f + 1] = j[21]
  end
  redis.call('HSET', job, unpack(f))
  -- The client's "queued" record, or a reclaimed job's, already expires.
  if st == '' then redis.call('EXPIRE', job, ttl) end
  event(j, 'sending', '')
  return verdict
end

local function begin(j)
  local entry, id, purpose, cc, number = j[1], j[2], j[9], j[10], j[11]
  local fallback_of, code_for = j[21], j[22]
  local job = P .. 'job:' .. id
  local otp = P .. 'otp:' .. purpose .. ':' .. (code_for ~= '' and code_for or number)
  -- The id names one entry: another entry with it is a duplicate.
  local cur = redis.call('HMGET', job, 'stream_id', 'status', 'code_source')
  local owner, st = cur[1], cur[2] or ''
  if owner and owner ~= entry then
    event(j, 'duplicate', '')
    count('jobs:duplicate')
    acks[#acks + 1] = entry
    return {'duplicate', st}
  end
  if FINAL[st] then
    acks[#acks + 1] = entry
    return {'done', st}
  end
  if opted[number] then
    return deny(j, job, 'failed', 'opted_out', 'the recipient replied STOP: they must ' ..
      'text START to the sender first; then remove the number with: otpctl optout remove NUMBER')
  end
  local sms = j[15] == 'sms'
  if sms then
    local refused = fraud_check(number)
    if refused then
      count('fraud:' .. refused[1])
      return deny(j, job, 'failed', refused[1], refused[2])
    end
  end
  -- This job again (a reclaim after a crash): its code, not counted or charged again.
  local reclaimed = owner == entry and (st == 'sending' or st == 'retrying')
  local price = tonumber(j[19])
  if not reclaimed then
    local over = spend_check(cc, price, tonumber(j[20]))
    if over then
      count('spend:' .. over[1])
      return deny(j, job, 'rate_limited', over[1], over[2], over[3])
    end
  end
  -- A fallback follows its own job by design: the interval does not apply to it.
  local lim = check_limits({P .. 'limits', P .. 'rl:num:' .. number, P .. 'rl:global',
    P .. 'rl:cc:' .. cc, optout, P .. 'alert:country_budget:' .. cc},
    {'take', now, id, number, cc, purpose, fallback_of ~= '' and '0' or ARGV[6], ARGV[7], ARGV[8],
     ARGV[9], j[12], ARGV[10], '1'})
  if lim[1] == 1 then
    local wait = tonumber(lim[3])
    return deny(j, job, 'rate_limited', lim[2], string.format(
      'over the %s limit; a new request is accepted in %d s', lim[2], math.ceil(wait / 1000)),
      wait)
  end
  -- One code per number and purpose while it is valid: a resend, or this
  -- job again after a crash, texts the code of record, never a second one.
  local rec = redis.call('HMGET', otp, 'created_ms', 'job', 'sealed', 'sends', 'attempts',
    'max_attempts', 'locked', 'expires_ms')
  local older, holder, sealed, expires = rec[1], rec[2], rec[3], rec[8] or j[5]
  local valid = sealed and rec[7] ~= '1' and
    (tonumber(rec[5]) or 0) < (tonumber(rec[6]) or 5) and j[14] ~= '2'

  if older and valid and (holder == id or (reclaimed and cur[3] == 'resent')) then
    return sending(j, job, st, cur[3] or 'new', expires, {'resend', sealed, expires, '1'})
  end
  -- A fallback delivers the code of record or nothing: it is never a new code.
  if fallback_of ~= '' and not (older and valid) then
    return deny(j, job, 'failed', 'code_not_valid', 'the code was verified, replaced or ' ..
      'expired before this fallback was sent; nothing to send')
  end
  -- A newer code for this number and purpose wins, even out of order.
  if older and tonumber(older) > tonumber(j[4]) then
    return deny(j, job, 'failed', 'superseded',
      'superseded: a newer code for this number and purpose was already issued')
  end
  if older and valid and j[14] == '' then
    local sends = tonumber(rec[4]) or 1
    if sends >= MAX_SENDS then
      local wait = redis.call('PTTL', otp)
      return deny(j, job, 'rate_limited', 'sends_per_code', string.format(
        'this code was already sent %d times (OTPD_MAX_SENDS_PER_CODE); a new one can be ' ..
        'requested when it expires in %d s', sends, math.ceil(wait / 1000)), wait)
    end
    redis.call('HINCRBY', otp, 'sends', '1')
    return sending(j, job, st, 'resent', expires, {'resend', sealed, expires, '0'}, true)
  end
  -- A new code: the pumping model counts it, and may stop it (and its prefix).
  local px = j[16]
  if px ~= '' and not reclaimed then
    local pumped = fraud_count(px, id)
    if pumped then
      count('fraud:suspected_pumping')
      return deny(j, job, 'failed', pumped[1], pumped[2], nil, pumped[3])
    end
  end
  if not reclaimed then fraud_tally('c', j[15], cc) end
  -- No field of a replaced record (such as "locked") may survive.
  if older then redis.call('DEL', otp) end
  redis.call('HSET', otp, 'mac', j[3], 'job', id, 'attempts', '0', 'max_attempts', j[6],
    'created_ms', j[4], 'expires_ms', j[5], 'sealed', j[13], 'sends', '1', 'px', px, 'cc', cc,
    'ch', j[15])
  redis.call('PEXPIRE', otp, j[7])
  return sending(j, job, st, 'new', j[5], {'go'}, not reclaimed)
end

local jobs = {}
for base = FIRST, #ARGV - FIELDS, FIELDS do
  jobs[#jobs + 1] = {unpack(ARGV, base + 1, base + FIELDS)}
end
return run_batch(begin, jobs, stream, group, stats)
