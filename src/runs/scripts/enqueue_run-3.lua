-- queued: writes a new run and its queue entry in one step, so a 202 always has both.
-- KEYS: run, queue, index. ARGV: id, channel, field1, value1, ...
-- Returns the run's created_at (ms, Redis time).
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', now, 'queued_at', now, 'attempt', 0, unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], now, ARGV[1])
-- Wake idle workers only when the queue was empty: while it is not, every worker is busy and
-- takes more as its runs end (and workers poll every second as a safety net).
if redis.call('RPUSH', KEYS[2], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], 'queued')
end
return now
