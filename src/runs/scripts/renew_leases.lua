-- running (heartbeat): pushes back the lease deadline of runs a live worker still holds.
-- KEYS: leases. ARGV: lease ms, id1, id2, ...
local deadline = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
end
return #ARGV - 1
