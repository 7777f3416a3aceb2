-- running -> queued, for runs a worker took but never started (it was stopping when they came):
-- back at the head of the queue with their attempt undone, whatever their method, since the
-- upstream never saw them.
-- KEYS: queue, leases. ARGV: key base, channel, worker, id1, id2, ... (oldest first).
-- Returns how many runs went back.
local released = 0
for i = #ARGV, 4, -1 do
  if unclaim(KEYS[1], KEYS[2], ARGV[1], ARGV[3], ARGV[i]) then released = released + 1 end
end
if released > 0 then redis.call('PUBLISH', ARGV[2], 'queued') end
return released
