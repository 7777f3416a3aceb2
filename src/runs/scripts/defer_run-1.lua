-- running -> queued (backing off): the app said "not now" (429, 503, connection refused), so the
-- run waits `delay_ms` and goes back to the head of its line, for the worker and attempt that
-- hold it only. The attempt stays counted; the reason and the next try are shown by the runs API,
-- and one line is added to the run's dispatch history (the latest 20 are kept).
-- KEYS: run. ARGV (by name): id, worker, attempt, base, queue, delay_ms, reason, record (JSON).
-- Returns 1, or 0 when the run was not this worker's.
local o = options()
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempt', 'created_at', 'retried_at')
if cur[1] ~= 'running' or cur[2] ~= o.worker or cur[3] ~= o.attempt then return 0 end
local _, queued_key, delayed_key, leases_key = queue_keys(o.base, o.queue)
local at = now_ms() + tonumber(o.delay_ms)
local log = (redis.call('HGET', KEYS[1], 'dispatch_log') or '') .. o.record .. '\n'
local _, lines = string.gsub(log, '\n', '')
while lines > 20 do
  log = string.sub(log, string.find(log, '\n', 1, true) + 1)
  lines = lines - 1
end
redis.call('HINCRBY', KEYS[1], 'bp_tries', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'queue_reason', o.reason, 'next_attempt_at', at, 'dispatch_log', log)
redis.call('HDEL', KEYS[1], 'worker')
redis.call('ZREM', leases_key, o.id)
redis.call('ZADD', queued_key, queued_since(cur[4], cur[5]), o.id)
redis.call('ZADD', delayed_key, at, o.id)
return 1
