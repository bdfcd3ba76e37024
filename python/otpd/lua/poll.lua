-- poll.lua: the receipt-polling schedule in Redis, so a restart or another
-- instance goes on polling messages sent before it.  See daemon/dlr.c and
-- docs/protocol.md section 13.
--
-- {p}polls is a sorted set: member provider|ref|until_ms|backoff_ms, score
-- the next poll (epoch ms).  finish.lua adds a member when a message that
-- no webhook will report is sent.
--
-- KEYS: 1 {p}polls
-- ARGV: 1 'take', 2 now_ms, 3 lease ms, 4 at most this many:
--         the due members, each pushed lease ms ahead while this instance
--         polls it (if the instance dies, it is due again after the lease);
--       1 'next', 2 member, 3 its next member or '' (done), 4 its next time:
--         the member rescheduled or removed.
if ARGV[1] == 'take' then
  local now = tonumber(ARGV[2])
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[4])
  for _, m in ipairs(due) do
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), m)
  end
  return due
end
redis.call('ZREM', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3]) end
return 1
