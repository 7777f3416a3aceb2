-- running -> queued, for runs of one queue leased to a worker that does not know it holds them: a
-- claim (or a completion that took runs along) whose reply was lost after Redis had run it. The
-- worker names the runs it does hold; every other run of the queue leased to it goes back to the
-- head of its line with its attempt undone, whatever its method, since the app never saw it.
-- KEYS: the queue's leases set. ARGV (by name): base, queue, channel, sharded, worker; then held id1, id2, ...
-- Returns how many runs were released.
local o, rest = options()
local held = {}
for i = rest, #ARGV do held[ARGV[i]] = true end
local released = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if not held[id] and unclaim(o.base, o.queue, KEYS[1], o.worker, id, o.channel) then released = released + 1 end
end
return released
