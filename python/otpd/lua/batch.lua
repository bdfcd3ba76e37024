-- batch.lua: what begin.lua and finish.lua share; the ledger (daemon/ledger.c)
-- puts it in front of both.  Each job of a batch runs under pcall, so one
-- job's failure (a key of the wrong type, say) answers that job with
-- {'error', why} and leaves the others alone; then the entries to
-- acknowledge go in one XACK and one XDEL, and each counter in one HINCRBY.
-- What follows may add functions to `after`: run once the jobs are done,
-- for writes a whole batch shares (fraud.lua's counters, spend.lua's sums).
local acks, counts, after = {}, {}, {}

local function count(field)
  counts[field] = (counts[field] or 0) + 1
end

-- step(j) for each job's fields j; returns the replies, in order.
local function run_batch(step, jobs, stream, group, stats)
  local out = {}
  for _, j in ipairs(jobs) do
    local ok, res = pcall(step, j)
    if not ok then
      local why = type(res) == 'table' and res.err or tostring(res)
      -- A replica refuses every write: the server's state, not this job's.
      -- The whole batch fails with it, so the connection sees READONLY and
      -- goes to find the master (daemon/rconn.c).
      if why:find('READONLY', 1, true) then error(res) end
      res = {'error', why}
    end
    out[#out + 1] = res
  end
  if #acks > 0 then
    redis.call('XACK', stream, group, unpack(acks))
    redis.call('XDEL', stream, unpack(acks))
  end
  for field, n in pairs(counts) do
    redis.call('HINCRBY', stats, field, tostring(n))
  end
  for _, f in ipairs(after) do
    -- Counters only: a failure there must not fail jobs already written.
    local ok, res = pcall(f)
    if not ok then
      local why = type(res) == 'table' and res.err or tostring(res)
      if why:find('READONLY', 1, true) then error(res) end
    end
  end
  return out
end
