-- running (heartbeat): pushes back the lease deadline of the runs a live worker still holds, and
-- names those it no longer holds (cancelled, recovered after its lease expired, or taken again by
-- another worker under the same id), so that the worker aborts those calls at once.
-- KEYS: leases. ARGV: key base, worker id, lease ms, then id1, attempt1, id2, attempt2, ...
-- Returns the ids whose lease is lost.
local deadline = now_ms() + tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local cur = redis.call('HMGET', ARGV[1] .. ':run:' .. id, 'status', 'worker', 'attempt')
  if cur[1] == 'running' and cur[2] == ARGV[2] and cur[3] == ARGV[i + 1] and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
