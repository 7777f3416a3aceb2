-- webhook in delivery -> pending (retry later) | delivered | failed; appends the attempt record.
-- KEYS: run, webhooks. ARGV (by name): id, event (started | completed), outcome (delivered |
-- retry | failed), record (the attempt, JSON), delay_ms (-1 when none), status_code ('' when
-- none), ttl_ms, keep (history length).
-- The history keeps the latest attempts only (retries and redeliveries would grow it without
-- bound); `wh_attempts` (`ws_attempts` for the started event) still counts them all.
-- A `started` event is retried only while its run is queued or running; once the run has ended,
-- its final webhook (which waited for this attempt, lib.lua settle_started) is due now.
-- Returns 1, or 0 when the run is gone (its delivery entry is dropped).
local o = options()
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], o.id)
  return 0
end
local p = 'wh_'
if o.event == 'started' then p = 'ws_' end
redis.call('HINCRBY', KEYS[1], p .. 'attempts', 1)
redis.call('HINCRBY', KEYS[1], p .. 'try', 1)
local log = (redis.call('HGET', KEYS[1], p .. 'log') or '') .. o.record .. '\n'
local _, lines = string.gsub(log, '\n', '')
local keep = tonumber(o.keep)
while lines > keep do
  log = string.sub(log, string.find(log, '\n', 1, true) + 1)
  lines = lines - 1
end
redis.call('HSET', KEYS[1], p .. 'log', log, p .. 'last_status', o.status_code)
local delay = tonumber(o.delay_ms)
local final = 'failed'
if o.outcome == 'delivered' then final = 'delivered' end
if o.event == 'started' then
  local f = redis.call('HMGET', KEYS[1], 'ws_status', 'status', 'wh_status', 'webhook_url')
  -- Given up meanwhile (its sender was taken to be dead): the final webhook went on without it.
  if f[1] ~= 'pending' then return 1 end
  local ended = f[2] ~= 'queued' and f[2] ~= 'running'
  if o.outcome == 'retry' and delay >= 0 and not ended then
    redis.call('ZADD', KEYS[2], now + delay, o.id)
    redis.call('HSET', KEYS[1], 'ws_status', 'pending', 'ws_next_at', now + delay, 'ws_lease', '')
  else
    redis.call('HSET', KEYS[1], 'ws_status', final, 'ws_next_at', '', 'ws_lease', '')
    if ended and f[3] == 'pending' and f[4] and f[4] ~= '' then
      redis.call('ZADD', KEYS[2], now, o.id)
      redis.call('HSET', KEYS[1], 'wh_next_at', now)
    else
      redis.call('ZREM', KEYS[2], o.id)
    end
  end
  return 1
end
if o.outcome == 'retry' and delay >= 0 then
  redis.call('ZADD', KEYS[2], now + delay, o.id)
  redis.call('HSET', KEYS[1], 'wh_status', 'pending', 'wh_next_at', now + delay)
else
  redis.call('ZREM', KEYS[2], o.id)
  redis.call('HSET', KEYS[1], 'wh_status', final, 'wh_next_at', '')
  redis.call('PEXPIRE', KEYS[1], tonumber(o.ttl_ms))
end
return 1
