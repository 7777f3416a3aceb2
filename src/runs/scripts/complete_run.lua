-- running -> succeeded | failed | timed_out, only for the worker and attempt that hold the run
-- (a cancel or a lease expiry that came first wins, and this is a no-op).
-- KEYS: run, leases, webhooks. ARGV: id, worker, attempt, status, ttl ms, channel, field1, value1, ...
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if cur[1] ~= 'running' or cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then return 0 end
local now = now_ms()
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
redis.call('ZREM', KEYS[2], ARGV[1])
finish(KEYS[1], KEYS[3], ARGV[1], ARGV[4], now, tonumber(ARGV[5]), ARGV[6])
return now
