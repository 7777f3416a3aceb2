-- queued: writes a new run and its place in its queue's line in one step, so a 202 always has both.
-- With an Idempotency-Key (idem_fp set), the key's record is read and written in the same step:
-- at most one run per record however many requests carry the key at once, on any replica.
-- KEYS: run, queue's queued set, index, index owners (run id -> owner index), the owner's index,
-- the key's idempotency record (any key under the same tag when there is no Idempotency-Key).
-- ARGV (by name, see lib.lua `options`): id, queue, base, prio (0-2), bucket, owner (the owner
-- index's name part), channel, idem_fp (the request's fingerprint; '' = no Idempotency-Key),
-- idem_ttl_ms; then the run's hash fields as field1, value1, ...
-- Returns { 'created', created_at (ms, Redis time) }, or, when the key's record exists,
-- { 'replayed', its run id } (same fingerprint) or { 'conflict', its run id } (another request).
local o, rest = options()
if o.idem_fp ~= '' then
  local prior = redis.call('HMGET', KEYS[6], 'run_id', 'fp')
  if prior[1] then
    if prior[2] == o.idem_fp then return { 'replayed', prior[1] } end
    return { 'conflict', prior[1] }
  end
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', now, 'queued_at', now, 'attempt', 0,
  'queue', o.queue, 'prio', o.prio, 'bucket', o.bucket, unpack(ARGV, rest))
redis.call('ZADD', KEYS[3], now, o.id)
redis.call('HSET', KEYS[4], o.id, o.owner)
redis.call('ZADD', KEYS[5], now, o.id)
if o.idem_fp ~= '' then
  redis.call('HSET', KEYS[6], 'run_id', o.id, 'fp', o.idem_fp)
  redis.call('PEXPIRE', KEYS[6], tonumber(o.idem_ttl_ms))
end
line_push(o.base .. ':q:' .. o.queue, o.id, o.prio, o.bucket, false)
-- Wake idle workers only when the queue had nothing queued: while it has, every worker serving it
-- is busy (or the queue is at its limit) and takes more as its runs end; workers also poll.
if redis.call('ZADD', KEYS[2], now, o.id) == 1 and redis.call('ZCARD', KEYS[2]) == 1 then
  notify(o.channel, 'queued:' .. o.queue)
end
return { 'created', now }
