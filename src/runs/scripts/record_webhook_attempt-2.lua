-- webhook in delivery -> pending (retry later) | delivered | failed; appends the attempt record.
-- KEYS: run, webhooks. ARGV: id, outcome (delivered | retry | failed), attempt record (JSON),
-- retry delay ms (-1 when none), status code ('' when none), ttl ms, history length kept.
-- The history keeps the latest attempts only (retries and redeliveries would grow it without
-- bound); `wh_attempts` still counts them all.
-- Returns 1, or 0 when the run is gone (its delivery entry is dropped).
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('HINCRBY', KEYS[1], 'wh_attempts', 1)
redis.call('HINCRBY', KEYS[1], 'wh_try', 1)
local log = (redis.call('HGET', KEYS[1], 'wh_log') or '') .. ARGV[3] .. '\n'
local _, lines = string.gsub(log, '\n', '')
local keep = tonumber(ARGV[7])
while lines > keep do
  log = string.sub(log, string.find(log, '\n', 1, true) + 1)
  lines = lines - 1
end
redis.call('HSET', KEYS[1], 'wh_log', log, 'wh_last_status', ARGV[5])
local delay = tonumber(ARGV[4])
if ARGV[2] == 'retry' and delay >= 0 then
  redis.call('ZADD', KEYS[2], now + delay, ARGV[1])
  redis.call('HSET', KEYS[1], 'wh_status', 'pending', 'wh_next_at', now + delay)
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  local final = 'failed'
  if ARGV[2] == 'delivered' then final = 'delivered' end
  redis.call('HSET', KEYS[1], 'wh_status', final, 'wh_next_at', '')
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
end
return 1
