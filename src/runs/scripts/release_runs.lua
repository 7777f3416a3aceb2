-- running -> queued, for runs a worker took but never started (it was stopping when they came):
-- back at the head of the queue with their attempt undone, whatever their method, since the
-- upstream never saw them.
-- KEYS: queue, leases. ARGV: key base, channel, worker, id1, id2, ... (oldest first).
local released = 0
for i = #ARGV, 4, -1 do
  local id = ARGV[i]
  local key = ARGV[1] .. ':run:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker')
  if f[1] == 'running' and f[2] == ARGV[3] then
    if redis.call('HINCRBY', key, 'attempt', -1) == 0 then redis.call('HDEL', key, 'started_at') end
    redis.call('HSET', key, 'status', 'queued')
    redis.call('HDEL', key, 'worker')
    redis.call('ZREM', KEYS[2], id)
    redis.call('LPUSH', KEYS[1], id)
    released = released + 1
  end
end
if released > 0 then redis.call('PUBLISH', ARGV[2], 'queued') end
return released
