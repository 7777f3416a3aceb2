-- running -> queued, for runs of one queue a worker took but never started (it was stopping when
-- they came, or their body could not be read): back at the head of their line with their attempt
-- undone, whatever their method, since the app never saw them.
-- KEYS: the queue's leases set. ARGV (by name): base, queue, channel, sharded, worker; then id1, id2, ...
-- (oldest first). Returns how many runs went back.
local o, rest = options()
local released = 0
for i = #ARGV, rest, -1 do
  if unclaim(o.base, o.queue, KEYS[1], o.worker, ARGV[i], o.channel) then released = released + 1 end
end
return released
