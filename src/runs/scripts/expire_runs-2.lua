-- queued -> expired, for runs of one queue still queued `queue_time_ms` after they were accepted
-- (runs behind a stuck or saturated app are never claimed, so claims alone cannot expire them).
-- The queued set is scored by created_at: this touches only the runs that expire.
-- KEYS: the queue's queued set, the tag's webhooks set.
-- ARGV (by name): base, queue, queue_time_ms, limit, ttl_ms, channel, sharded.
-- Returns the ids that expired.
local o = options()
local now = now_ms()
local qp, _, delayed_key = queue_keys(o.base, o.queue)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(o.queue_time_ms), 'LIMIT', 0, tonumber(o.limit))
for _, id in ipairs(ids) do
  local key = o.base .. ':run:' .. id
  local f = redis.call('HMGET', key, 'status', 'prio', 'bucket')
  redis.call('ZREM', KEYS[1], id)
  if f[1] == 'queued' then
    line_remove(qp, id, f[2], f[3])
    redis.call('ZREM', delayed_key, id)
    redis.call('HSET', key, 'error', 'queue_time_exceeded',
      'error_message', 'the run waited in its queue longer than the queue allows (max_queue_time)')
    finish(key, KEYS[2], id, 'expired', now, tonumber(o.ttl_ms), o.channel)
  end
end
return ids
