-- Shared helpers, prepended to every script (Redis scripts cannot include files).
-- All keys of one deployment share the hash tag {runs}, so every script touches one slot.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Puts a run in a final state. A run with a webhook (not cancelled) is kept until its delivery
-- ends, and its delivery is due at `due` (now, or later when the caller delivers it at once and
-- only needs the entry as a fallback); any other run expires ttl_ms after now.
-- Returns the webhook URL when a delivery was scheduled, else false.
local function finish(run_key, webhooks_key, id, status, now, ttl_ms, channel, due)
  redis.call('HSET', run_key, 'status', status, 'finished_at', now)
  redis.call('HDEL', run_key, 'worker')
  local url = redis.call('HGET', run_key, 'webhook_url')
  local scheduled = false
  if url and url ~= '' and status ~= 'cancelled' then
    redis.call('HSET', run_key, 'wh_status', 'pending', 'wh_next_at', now, 'wh_try', 0)
    redis.call('ZADD', webhooks_key, due or now, id)
    scheduled = url
  else
    if status == 'cancelled' then redis.call('HSET', run_key, 'wh_status', 'none') end
    redis.call('PEXPIRE', run_key, ttl_ms)
  end
  redis.call('PUBLISH', channel, 'done:' .. id)
  return scheduled
end

-- queued -> running for up to `max` runs, oldest first, leased to `worker` until now + lease_ms.
-- Returns, per run: id, attempt, started_at, queued_at, method, target, headers, body, grace_ms.
local function claim(queue_key, leases_key, base, worker, lease_ms, max, now)
  local out = {}
  while #out < max do
    local id = redis.call('LPOP', queue_key)
    if not id then break end
    local key = base .. ':run:' .. id
    if redis.call('HGET', key, 'status') == 'queued' then
      local attempt = redis.call('HINCRBY', key, 'attempt', 1)
      redis.call('HSET', key, 'status', 'running', 'worker', worker)
      redis.call('HSETNX', key, 'started_at', now)
      redis.call('ZADD', leases_key, now + lease_ms, id)
      local f = redis.call('HMGET', key, 'queued_at', 'method', 'target', 'headers', 'body', 'grace_ms')
      out[#out + 1] = { id, attempt, now, f[1], f[2], f[3], f[4], f[5], f[6] }
    end
  end
  return out
end
