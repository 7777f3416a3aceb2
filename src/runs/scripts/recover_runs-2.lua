-- running -> queued (dispatched again) | failed ('interrupted'): for runs of one queue whose lease
-- expired (their worker died), or, with explicit ids, runs a stopping worker hands back.
-- KEYS: the queue's leases set, the tag's webhooks set.
-- ARGV (by name): base, queue, channel, sharded, ttl_ms, max_attempts, policy (never | idempotent | always),
-- limit, worker ('' = every expired lease); then id1, id2, ...
-- Returns, per run acted on: { id, 'queued' | 'failed' }.
local o, rest = options()
local now = now_ms()
local ids
if o.worker == '' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(o.limit))
else
  ids = {}
  for i = rest, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local idempotent = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true, TRACE = true }
local out = {}
for _, id in ipairs(ids) do
  local key = o.base .. ':run:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker', 'method', 'attempt', 'attempt_base')
  redis.call('ZREM', KEYS[1], id)
  if f[1] == 'running' and (o.worker == '' or f[2] == o.worker) then
    local again = (o.policy == 'always' or (o.policy == 'idempotent' and idempotent[f[3]]))
      and tonumber(f[4]) - tonumber(f[5] or 0) < tonumber(o.max_attempts) -- a retried run counts from its retry
    if again then
      redis.call('HSET', key, 'queued_at', now)
      requeue(o.base, o.queue, id, key, o.channel)
      out[#out + 1] = { id, 'queued' }
    else
      redis.call('HSET', key, 'error', 'interrupted',
        'error_message', 'the worker running this run stopped before it ended')
      finish(key, KEYS[2], id, 'failed', now, tonumber(o.ttl_ms), o.channel)
      out[#out + 1] = { id, 'failed' }
    end
  end
end
return out
