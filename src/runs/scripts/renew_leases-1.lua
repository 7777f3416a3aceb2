-- running (heartbeat): pushes back the lease deadline of the runs a live worker still holds in one
-- queue, and names those it no longer holds (cancelled, recovered after its lease expired, or taken
-- again by another worker under the same id), so that the worker aborts those calls at once.
-- KEYS: the queue's leases set. ARGV (by name): base, worker, lease_ms; then id1, attempt1, id2, attempt2, ...
-- Returns the ids whose lease is lost.
local o, rest = options()
local deadline = now_ms() + tonumber(o.lease_ms)
local lost = {}
for i = rest, #ARGV, 2 do
  local id = ARGV[i]
  local cur = redis.call('HMGET', o.base .. ':run:' .. id, 'status', 'worker', 'attempt')
  if cur[1] == 'running' and cur[2] == o.worker and cur[3] == ARGV[i + 1] and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
