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
  if not held[id] and unclaim(KEYS[1], KEYS[2], ARGV[1], ARGV[3], id) then released = released + 1 end
end
if released > 0 then redis.call('PUBLISH', ARGV[2], 'queued') end
return released
