-- receipt.lua: a delivery receipt.  See daemon/ledger.c and docs/protocol.md.
--
-- KEYS: 1 receipt reference, 2 events, 3 stats
-- ARGV: 1 prefix, 2 status, 3 provider status, 4 error code, 5 error, 6 now_ms,
--       7 provider, 8 events maxlen, 9 the provider's price for the message
--       in micro-units ("" if it gave none), 10 its currency, 11 this UTC
--       hour (YYYY-MM-DDTHH), 12 otpd's currency (OTPD_PRICE_CURRENCY)
-- Statuses only move forward (sent < delivered/undelivered/failed) and the
-- first final one wins, so late or repeated callbacks change nothing.
-- Returns {0} (unknown ref), {1, id} (no change) or
-- {2, id, sent_ms, calling code} (applied).
local id = redis.call('GET', KEYS[1])
if not id then return {0} end
local jk = ARGV[1] .. 'job:' .. id
local cur = redis.call('HGET', jk, 'status')
if not cur then return {0} end
-- The provider's own price replaces what otpd expected (spend.lua), once,
-- in otpd's currency only: the totals must stay in one unit.
if ARGV[9] and ARGV[9] ~= '' and ARGV[10] == ARGV[12] then
  local c = redis.call('HMGET', jk, 'price_micro', 'price_source', 'spend_at', 'cc')
  if c[2] ~= 'provider' then
    local at = c[3] or ARGV[11]
    local delta = tonumber(ARGV[9]) - (tonumber(c[1]) or 0)
    for _, k in ipairs({ARGV[1] .. 'spend:day:' .. at:sub(1, 10), ARGV[1] .. 'spend:hour:' .. at}) do
      redis.call('HINCRBY', k, '*', delta)
      redis.call('HINCRBY', k, c[4] or '', delta)
    end
    redis.call('HSET', jk, 'price_micro', ARGV[9], 'price_unit', ARGV[10], 'price_source',
      'provider', 'spend_at', at)
  end
end
local rank = {queued = 0, sending = 1, retrying = 1, sent = 2, delivered = 3,
  undelivered = 3, failed = 3}
if (rank[ARGV[2]] or 0) <= (rank[cur] or 0) then return {1, id} end
redis.call('HSET', jk, 'status', ARGV[2], 'provider_status', ARGV[3], 'error_code',
  ARGV[4], 'error', ARGV[5], 'updated_ms', ARGV[6])
local sent = redis.call('HGET', jk, 'sent_ms') or ''
local latency = ''
if ARGV[2] == 'delivered' then
  redis.call('HSET', jk, 'delivered_ms', ARGV[6])
  if sent ~= '' then latency = tostring(tonumber(ARGV[6]) - tonumber(sent)) end
end
local cc = redis.call('HGET', jk, 'cc') or ''
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'id', id, 'status', ARGV[2],
  'provider', ARGV[7], 'error_code', ARGV[4], 'ts_ms', ARGV[6], 'latency_ms', latency,
  'cc', cc)
-- Not delivered: a fallback waiting for its delay is due now (fallback.lua).
if (ARGV[2] == 'undelivered' or ARGV[2] == 'failed') and
    redis.call('ZSCORE', ARGV[1] .. 'fallbacks', id) then
  redis.call('ZADD', ARGV[1] .. 'fallbacks', 'XX', ARGV[6], id)
end
redis.call('HINCRBY', KEYS[3], 'jobs:' .. ARGV[2], '1')
redis.call('HINCRBY', KEYS[3], 'provider:' .. ARGV[7] .. ':' .. ARGV[2], '1')
return {2, id, sent, cc}
