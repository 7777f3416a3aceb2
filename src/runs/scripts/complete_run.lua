-- running -> succeeded | failed | timed_out, only for the worker and attempt that hold the run
-- (a cancel or a lease expiry that came first wins, and this is a no-op).
-- With a webhook and a hand-off window > 0, the delivery is taken by this worker at once (due
-- only after the window, for another worker to take if this one dies), saving a claim.
-- KEYS: run, leases, webhooks. ARGV: id, worker, attempt, status, ttl ms, channel,
-- hand-off window ms (0 = none), field1, value1, ...
-- Returns 0 when the run was not this worker's, else { finished_at, webhook url, webhook id }
-- ('' for both when no delivery was handed off).
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt')
if cur[1] ~= 'running' or cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then return 0 end
local now = now_ms()
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
redis.call('ZREM', KEYS[2], ARGV[1])
local window = tonumber(ARGV[7])
local due = nil
if window > 0 then due = now + window end
local url = finish(KEYS[1], KEYS[3], ARGV[1], ARGV[4], now, tonumber(ARGV[5]), ARGV[6], due)
if url and window > 0 then
  return { now, url, redis.call('HGET', KEYS[1], 'wh_id') }
end
return { now, '', '' }
