-- running -> queued (dispatched again) | failed ('interrupted'): for runs whose lease expired
-- (their worker died), or, with explicit ids, runs a stopping worker hands back.
-- KEYS: queue, leases, webhooks. ARGV: key base, channel, ttl ms, max attempts, policy
-- (never | idempotent | always), limit, worker ('' = every expired lease), id1, id2, ...
-- Returns, per run acted on: { id, 'queued' | 'failed' }.
local now = now_ms()
local ids
if ARGV[7] == '' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
else
  ids = {}
  for i = 8, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local idempotent = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true, TRACE = true }
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. ':run:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker', 'method', 'attempt')
  redis.call('ZREM', KEYS[2], id)
  if f[1] == 'running' and (ARGV[7] == '' or f[2] == ARGV[7]) then
    local again = (ARGV[5] == 'always' or (ARGV[5] == 'idempotent' and idempotent[f[3]]))
      and tonumber(f[4]) < tonumber(ARGV[4])
    if again then
      redis.call('HSET', key, 'status', 'queued', 'queued_at', now)
      redis.call('HDEL', key, 'worker')
      redis.call('LPUSH', KEYS[1], id)
      redis.call('PUBLISH', ARGV[2], 'queued')
      out[#out + 1] = { id, 'queued' }
    else
      redis.call('HSET', key, 'error', 'interrupted',
        'error_message', 'the worker running this run stopped before it ended')
      finish(key, KEYS[3], id, 'failed', now, tonumber(ARGV[3]), ARGV[2])
      out[#out + 1] = { id, 'failed' }
    end
  end
end
return out
