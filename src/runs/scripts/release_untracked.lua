-- running -> queued, for runs leased to a worker that does not know it holds them: a claim (or a
-- completion that took runs along) whose reply was lost to a timeout after Redis had run it. The
-- worker names the runs it does hold; every other run leased to it goes back to the head of the
-- queue with its attempt undone, whatever its method, since the upstream never saw it.
-- KEYS: queue, leases. ARGV: key base, channel, worker, held id1, held id2, ...
-- Returns how many runs were released.
local held = {}
for i = 4, #ARGV do held[ARGV[i]] = true end
local released = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not held[id] then
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
end
if released > 0 then redis.call('PUBLISH', ARGV[2], 'queued') end
return released
