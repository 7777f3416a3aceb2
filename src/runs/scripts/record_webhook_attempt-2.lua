-- webhook in delivery -> pending (retry later) | delivered | failed; appends the attempt record.
-- KEYS: run, webhooks. ARGV (by name): id, outcome (delivered | retry | failed), record (the
-- attempt, JSON), delay_ms (-1 when none), status_code ('' when none), ttl_ms, keep (history length).
-- The history keeps the latest attempts only (retries and redeliveries would grow it without
-- bound); `wh_attempts` still counts them all.
-- Returns 1, or 0 when the run is gone (its delivery entry is dropped).
local o = options()
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], o.id)
  return 0
end
redis.call('HINCRBY', KEYS[1], 'wh_attempts', 1)
redis.call('HINCRBY', KEYS[1], 'wh_try', 1)
local log = (redis.call('HGET', KEYS[1], 'wh_log') or '') .. o.record .. '\n'
local _, lines = string.gsub(log, '\n', '')
local keep = tonumber(o.keep)
while lines > keep do
  log = string.sub(log, string.find(log, '\n', 1, true) + 1)
  lines = lines - 1
end
redis.call('HSET', KEYS[1], 'wh_log', log, 'wh_last_status', o.status_code)
local delay = tonumber(o.delay_ms)
if o.outcome == 'retry' and delay >= 0 then
  redis.call('ZADD', KEYS[2], now + delay, o.id)
  redis.call('HSET', KEYS[1], 'wh_status', 'pending', 'wh_next_at', now + delay)
else
  redis.call('ZREM', KEYS[2], o.id)
  local final = 'failed'
  if o.outcome == 'delivered' then final = 'delivered' end
  redis.call('HSET', KEYS[1], 'wh_status', final, 'wh_next_at', '')
  redis.call('PEXPIRE', KEYS[1], tonumber(o.ttl_ms))
end
return 1
