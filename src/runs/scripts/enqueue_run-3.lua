-- queued: writes a new run and its place in its queue's line in one step, so a 202 always has both.
-- KEYS: run, queue's queued set, index.
-- ARGV (by name, see lib.lua `options`): id, queue, base, prio (0-2), bucket, channel, sharded; then the
-- run's hash fields as field1, value1, ...
-- Returns the run's created_at (ms, Redis time).
local o, rest = options()
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', now, 'queued_at', now, 'attempt', 0,
  'queue', o.queue, 'prio', o.prio, 'bucket', o.bucket, unpack(ARGV, rest))
redis.call('ZADD', KEYS[3], now, o.id)
line_push(o.base .. ':q:' .. o.queue, o.id, o.prio, o.bucket, false)
-- Wake idle workers only when the queue had nothing queued: while it has, every worker serving it
-- is busy (or the queue is at its limit) and takes more as its runs end; workers also poll.
if redis.call('ZADD', KEYS[2], now, o.id) == 1 and redis.call('ZCARD', KEYS[2]) == 1 then
  notify(o.channel, 'queued:' .. o.queue)
end
return now
