-- fraud.lua: the SMS-pumping model, inside begin (docs/fraud.md).  otpd puts
-- it after limits.lua and before begin.lua; verify.lua counts the other half
-- of conversion (the codes people typed in).
--
-- Per number prefix (the first OTPD_FRAUD_PREFIX_DIGITS digits of the
-- number, country code included):
--   {p}fraud:codes:{px}  sorted set: the new codes of the last window,
--                        member job id, score when begun (ms)
--   {p}fraud:ok:{px}     sorted set: those of them verified, same score
-- and for all prefixes:
--   {p}fraud:base        hash px -> "base|at": each prefix's own baseline, an
--                        exponentially weighted count of codes per window
--                        (time constant OTPD_FRAUD_BASELINE_S); one hash, as
--                        a prefix's baseline must outlive its idle hours
--   {p}fraud:rules       hash digits -> kind|since_ms|until_ms|detail, kind
--                        allow/block (otpctl fraud) or paused (this script);
--                        until_ms 0: until cleared
--   {p}fraud:active      sorted set: prefixes by their last code; a prefix
--                        idle for a whole window has its two sets deleted
--   {p}fraud:counts:{n}  hash per 5-minute bucket n: c|channel|cc new codes,
--                        s|channel|cc messages, v|channel|cc verified codes
-- The per-code work is five commands (trim, add, count, baseline read and
-- write); the judgement adds three more only for a prefix over its floor
-- and its baseline, once per batch for a prefix it finds healthy.
--
-- Uses begin's ARGV 1, 3 and 12..19 (see begin.lua).
local FRAUD = {P = ARGV[1], now = tonumber(ARGV[3]), window = tonumber(ARGV[12]),
  settle = tonumber(ARGV[13]), baseline = tonumber(ARGV[14]), factor = tonumber(ARGV[15]),
  min = tonumber(ARGV[16]), conversion = tonumber(ARGV[17]), pause = tonumber(ARGV[18]),
  auto = ARGV[19] == '1'}
local FRAUD_BUCKET_MS, FRAUD_BUCKET_TTL_S = 300000, 90000
local fraud_rules = FRAUD.P .. 'fraud:rules'
-- Most sites have no rule at all: one EXISTS per batch spares every job's HMGET.
local fraud_any_rule = redis.call('EXISTS', fraud_rules) == 1
local fraud_counts, fraud_seen = {}, {}
-- Prefixes judged healthy in this batch: judged once per batch, not once per code.
local fraud_healthy = {}

local function fraud_rule(v)
  local kind, since, till, detail = v:match('^(%a+)|(%d*)|(%d*)|(.*)$')
  if not kind then return nil end
  till = tonumber(till) or 0
  if till ~= 0 and till <= FRAUD.now then return nil end -- lapsed
  return {kind = kind, since = since, till = till, detail = detail}
end

local function fraud_when(ms)
  local s = math.floor(ms / 1000)
  return string.format('%02d:%02d UTC', math.floor(s / 3600) % 24, math.floor(s / 60) % 60)
end

-- Whether this number may be texted: nil, or {error_code, text}.  The
-- longest operator rule (allow or block) decides; an allow anywhere on the
-- number beats an automatic pause.
local function fraud_check(number)
  if not fraud_any_rule then return nil end
  local digits, names = number:sub(2), {}
  for k = 1, #digits do names[k] = digits:sub(1, k) end
  local got = redis.call('HMGET', fraud_rules, unpack(names))
  local op, paused
  for k = #digits, 1, -1 do
    local r = got[k] and fraud_rule(got[k])
    if r then
      if not op and (r.kind == 'allow' or r.kind == 'block') then op = {r, names[k]} end
      if not paused and r.kind == 'paused' then paused = {r, names[k]} end
    end
  end
  if op and op[1].kind == 'allow' then return nil end
  if op then
    return {'blocked_prefix', 'numbers starting +' .. op[2] .. ' are blocked by an operator ' ..
      '(otpctl fraud block); lift it with: otpctl fraud clear +' .. op[2]}
  end
  if paused then
    return {'suspected_pumping', 'sends to +' .. paused[2] .. '... are paused until ' ..
      fraud_when(paused[1].till) .. ': they look like SMS pumping (' .. paused[1].detail ..
      '). If this is real traffic: otpctl fraud allow +' .. paused[2]}
  end
  return nil
end

-- Report counters (c, s or v by channel and country), written once per batch.
local function fraud_tally(kind, channel, cc)
  local f = kind .. '|' .. channel .. '|' .. cc
  fraud_counts[f] = (fraud_counts[f] or 0) + 1
end

-- The prefix's baseline (codes per window), decayed to now, then with this code.
local function fraud_baseline(px)
  local key = FRAUD.P .. 'fraud:base'
  local b = redis.call('HGET', key, px)
  local base, at = 0, FRAUD.now
  if b then
    local x, t = b:match('^([%d.e+-]+)|(%d+)$')
    base, at = tonumber(x) or 0, tonumber(t) or FRAUD.now
  end
  base = base * math.exp(-math.max(FRAUD.now - at, 0) / FRAUD.baseline)
  redis.call('HSET', key, px, string.format('%.6f|%d', base + FRAUD.window / FRAUD.baseline,
    FRAUD.now))
  return base
end

-- A new code for a number in prefix px (job id).  Counts it, and decides:
-- nil, or {error_code, text, '1'} when this code makes the prefix look
-- pumped: the prefix is paused (this job included) and the alert set.
local function fraud_count(px, id)
  local codes, ok = FRAUD.P .. 'fraud:codes:' .. px, FRAUD.P .. 'fraud:ok:' .. px
  local now, from = FRAUD.now, FRAUD.now - FRAUD.window
  fraud_seen[px] = true
  redis.call('ZREMRANGEBYSCORE', codes, '-inf', from)
  redis.call('ZADD', codes, now, id)
  local n = redis.call('ZCARD', codes)
  local expected = fraud_baseline(px)
  if not FRAUD.auto or n < FRAUD.min or n <= FRAUD.factor * expected or fraud_healthy[px] then
    return nil
  end
  fraud_healthy[px] = true
  -- Conversion: verified codes against codes that had their chance (older
  -- than the settle time) and were not verified.
  local settled = redis.call('ZCOUNT', codes, '-inf', now - FRAUD.settle)
  local verified = redis.call('ZCOUNT', ok, from, '+inf')
  if verified + settled < FRAUD.min then return nil end
  local missed = settled - redis.call('ZCOUNT', ok, from, now - FRAUD.settle)
  local judged = verified + missed
  if judged < FRAUD.min or verified * 100 >= FRAUD.conversion * judged then return nil end
  -- An operator's allow anywhere on the prefix wins (fraud_check let this
  -- number through, but a rule on a shorter prefix may exist).
  if fraud_any_rule then
    local names = {}
    for k = 1, #px do names[k] = px:sub(1, k) end
    for _, v in ipairs(redis.call('HMGET', fraud_rules, unpack(names))) do
      local r = v and fraud_rule(v)
      if r and r.kind == 'allow' then return nil end
    end
  end
  fraud_healthy[px] = nil
  local detail = string.format('%d codes in the last %d min, baseline %.1f, %d%% of %d verified',
    n, math.floor(FRAUD.window / 60000), expected, math.floor(verified * 100 / judged), judged)
  local till = now + FRAUD.pause
  redis.call('HSET', fraud_rules, px, table.concat({'paused', now, till, detail}, '|'))
  redis.call('SET', FRAUD.P .. 'alert:pumping:' .. px, detail, 'PX', FRAUD.pause)
  redis.call('ZREM', codes, id)
  fraud_any_rule = true
  return {'suspected_pumping', 'sends to +' .. px .. '... are paused until ' .. fraud_when(till) ..
    ': they look like SMS pumping (' .. detail .. '). If this is real traffic: otpctl fraud ' ..
    'allow +' .. px, '1'}
end

-- Once per batch: the report counters, the prefixes seen, and the sets of
-- prefixes idle for a whole window (what is left in them is out of it).
local function fraud_flush()
  local now = FRAUD.now
  if next(fraud_counts) then
    local key = FRAUD.P .. 'fraud:counts:' .. math.floor(now / FRAUD_BUCKET_MS)
    for f, n in pairs(fraud_counts) do redis.call('HINCRBY', key, f, n) end
    redis.call('EXPIRE', key, FRAUD_BUCKET_TTL_S)
  end
  local active = FRAUD.P .. 'fraud:active'
  local idle = redis.call('ZRANGEBYSCORE', active, '-inf', now - FRAUD.window, 'LIMIT', 0, 32)
  for _, px in ipairs(idle) do
    redis.call('DEL', FRAUD.P .. 'fraud:codes:' .. px, FRAUD.P .. 'fraud:ok:' .. px)
    redis.call('ZREM', active, px)
  end
  if next(fraud_seen) then
    local args = {}
    for px in pairs(fraud_seen) do
      args[#args + 1] = now
      args[#args + 1] = px
    end
    redis.call('ZADD', active, unpack(args))
  end
end
after[#after + 1] = fraud_flush
