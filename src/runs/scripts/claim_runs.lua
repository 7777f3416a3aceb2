-- queued -> running: takes up to `max` runs, oldest first, and leases them to a worker.
-- KEYS: queue, leases. ARGV: key base, worker id, lease ms, max.
-- Returns, per run: id, attempt, started_at, queued_at, method, target, headers, body, grace_ms.
local now = now_ms()
local out = {}
local max = tonumber(ARGV[4])
while #out < max do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  local key = ARGV[1] .. ':run:' .. id
  if redis.call('HGET', key, 'status') == 'queued' then
    local attempt = redis.call('HINCRBY', key, 'attempt', 1)
    redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2])
    redis.call('HSETNX', key, 'started_at', now)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
    local f = redis.call('HMGET', key, 'queued_at', 'method', 'target', 'headers', 'body', 'grace_ms')
    out[#out + 1] = { id, attempt, now, f[1], f[2], f[3], f[4], f[5], f[6] }
  end
end
return out
