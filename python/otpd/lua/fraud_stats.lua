-- fraud_stats.lua: the pumping model and the spend as a report, read-only:
-- otpd's metrics (daemon/fraud.c), otpctl fraud and otpctl status read it.
-- See fraud.lua and spend.lua for the keys, docs/fraud.md for the model.
--
-- KEYS: 1 {p}fraud:rules (the others are named from the prefix)
-- ARGV: 1 key prefix, 2 now_ms, 3 window ms, 4 settle ms, 5 baseline ms,
--       6 how many prefixes at most (the busiest), 7 the UTC day
--       (YYYY-MM-DD), 8 the UTC hour (YYYY-MM-DDTHH)
-- Returns a JSON object:
--   window_ms, settle_ms;
--   conversion: [{channel, cc, codes, sends, verified}] over the window
--     (whole 5-minute buckets);
--   prefixes: [{prefix, codes, verified, judged, baseline}], the busiest
--     first, then any other with a rule; judged = verified + codes older
--     than the settle time and not verified;
--   rules: [{prefix, kind, since_ms, until_ms, detail, live}];
--   spend: {day = {field = micro}, hour = {...}} (field * is the total).
local P, now, window, settle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local baseline, top = tonumber(ARGV[5]), tonumber(ARGV[6])
local BUCKET = 300000
local from = now - window

local function pairs_to_map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = tonumber(flat[i + 1]) end
  return m
end

-- Conversion by channel and country, from the buckets the window covers.
local rows, byname = {}, {}
for b = math.floor(from / BUCKET) + 1, math.floor(now / BUCKET) do
  local flat = redis.call('HGETALL', P .. 'fraud:counts:' .. b)
  for i = 1, #flat, 2 do
    local kind, channel, cc = flat[i]:match('^(%a)|([^|]*)|(.*)$')
    if kind then
      local name = channel .. '|' .. cc
      local row = byname[name]
      if not row then
        row = {channel = channel, cc = cc, codes = 0, sends = 0, verified = 0}
        byname[name] = row
        rows[#rows + 1] = row
      end
      local field = kind == 'c' and 'codes' or kind == 's' and 'sends' or 'verified'
      row[field] = row[field] + tonumber(flat[i + 1])
    end
  end
end

-- The rules, live or lapsed.
local rules, ruled = {}, {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local kind, since, till, detail = flat[i + 1]:match('^(%a+)|(%d*)|(%d*)|(.*)$')
  if kind then
    till = tonumber(till) or 0
    rules[#rules + 1] = {prefix = flat[i], kind = kind, since_ms = tonumber(since) or 0,
      until_ms = till, detail = detail, live = till == 0 or till > now}
    ruled[#ruled + 1] = flat[i]
  end
end

-- One prefix's figures.
local function prefix_row(px)
  local codes, ok = P .. 'fraud:codes:' .. px, P .. 'fraud:ok:' .. px
  local n = redis.call('ZCOUNT', codes, from, '+inf')
  local verified = redis.call('ZCOUNT', ok, from, '+inf')
  local settled = redis.call('ZCOUNT', codes, from, now - settle)
  local missed = settled - redis.call('ZCOUNT', ok, from, now - settle)
  local b = redis.call('HGET', P .. 'fraud:base', px)
  local x, t = (b or ''):match('^([%d.e+-]+)|(%d+)$')
  local base = (tonumber(x) or 0) * math.exp(-math.max(now - (tonumber(t) or now), 0) / baseline)
  return {prefix = px, codes = n, verified = verified, judged = verified + missed,
    baseline = math.floor(base * 100 + 0.5) / 100}
end

local prefixes, listed = {}, {}
local active = redis.call('ZREVRANGEBYSCORE', P .. 'fraud:active', '+inf', from, 'LIMIT', 0, 2000)
for _, px in ipairs(active) do prefixes[#prefixes + 1] = prefix_row(px) end
table.sort(prefixes, function(a, b) return a.codes > b.codes or (a.codes == b.codes and a.prefix < b.prefix) end)
while #prefixes > top do table.remove(prefixes) end
for _, row in ipairs(prefixes) do listed[row.prefix] = true end
for _, px in ipairs(ruled) do
  if not listed[px] and px:match('^%d+$') then prefixes[#prefixes + 1] = prefix_row(px) end
end

local spend = {
  day = pairs_to_map(redis.call('HGETALL', P .. 'spend:day:' .. ARGV[7])),
  hour = pairs_to_map(redis.call('HGETALL', P .. 'spend:hour:' .. ARGV[8])),
}
return cjson.encode({window_ms = window, settle_ms = settle, conversion = rows,
  prefixes = prefixes, rules = rules, spend = spend})
