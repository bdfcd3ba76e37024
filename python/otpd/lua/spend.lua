-- spend.lua: what the SMS cost, and the daily money budgets, inside begin
-- (docs/fraud.md).  otpd puts it after fraud.lua and before begin.lua.
--
--   {p}spend:day:{YYYY-MM-DD}      hash: * and each calling code -> micro-units
--   {p}spend:hour:{YYYY-MM-DDTHH}  hash: the same for one hour (UTC)
--
-- A message is charged when begin lets it go, at the price otpd expects
-- (segments x OTPD_SMS_PRICES); finish gives it back if no provider took
-- the message, and a provider's own price replaces it (receipt.lua).
-- Uses begin's ARGV 1 and 20..24 (see begin.lua).
local SPEND = {day = ARGV[1] .. 'spend:day:' .. ARGV[20],
  hour = ARGV[1] .. 'spend:hour:' .. ARGV[21], left = tonumber(ARGV[22]),
  budget = tonumber(ARGV[23]), at = ARGV[21]}
local spend_total, spend_add = {}, {}

local function spent(field)
  if not spend_total[field] then
    spend_total[field] = tonumber(redis.call('HGET', SPEND.day, field)) or 0
  end
  return spend_total[field]
end

-- Whether a message of this price (micro-units, nil unknown) to calling
-- code cc fits today's budgets: nil, or {error_code, text, retry_after_ms}.
local function spend_check(cc, price, budget)
  if not price then return nil end
  local over
  if SPEND.budget and spent('*') + price > SPEND.budget then
    over = {'spend_budget', 'OTPD_DAILY_SPEND_BUDGET', '*'}
  elseif budget and spent(cc) + price > budget then
    over = {'country_spend_budget', 'OTPD_COUNTRY_DAILY_SPEND_BUDGET for +' .. cc, cc}
  end
  if not over then return nil end
  redis.call('SET', ARGV[1] .. 'alert:' .. over[1] .. ':' .. over[3], ARGV[3], 'PX',
    math.max(SPEND.left, 1))
  return {over[1], string.format('today\'s spend has reached %s; sends resume at 00:00 UTC, ' ..
    'in %d min', over[2], math.ceil(SPEND.left / 60000)), SPEND.left}
end

-- Charge it (the batch's later jobs see it at once; Redis at the end).
local function spend_take(cc, price)
  for _, f in ipairs({'*', cc}) do
    spend_total[f] = spent(f) + price
    spend_add[f] = (spend_add[f] or 0) + price
  end
end

local function spend_flush()
  if not next(spend_add) then return end
  for f, n in pairs(spend_add) do
    redis.call('HINCRBY', SPEND.day, f, n)
    redis.call('HINCRBY', SPEND.hour, f, n)
  end
  redis.call('EXPIRE', SPEND.day, 8 * 86400)
  redis.call('EXPIRE', SPEND.hour, 2 * 86400)
end
after[#after + 1] = spend_flush
