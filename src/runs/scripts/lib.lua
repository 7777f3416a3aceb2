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
-- The request's headers (Authorization, Cookie), query and body are dropped here: nothing reads
-- them after the last dispatch, and they should not sit in Redis for RUN_TTL.
local function finish(run_key, webhooks_key, id, status, now, ttl_ms, channel, due)
  redis.call('HSET', run_key, 'status', status, 'finished_at', now)
  redis.call('HDEL', run_key, 'worker', 'headers', 'body', 'target')
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

-- A hash field of up to `budget` bytes, read only if it fits: returns the value (or false) and
-- the budget left. Keeps a reply that carries bodies within the command timeout.
local function read_within(key, field, budget)
  local size = redis.call('HSTRLEN', key, field)
  if size > budget then return false, budget, size end
  return redis.call('HGET', key, field) or '', budget - size, size
end

-- running -> queued for a run its worker took but never started: back at the head of the
-- queue with its attempt undone, whatever its method, since the upstream never saw it.
-- Returns true when the run was `worker`'s and went back.
local function unclaim(queue_key, leases_key, base, worker, id)
  local key = base .. ':run:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker')
  if f[1] ~= 'running' or f[2] ~= worker then return false end
  if redis.call('HINCRBY', key, 'attempt', -1) == 0 then redis.call('HDEL', key, 'started_at') end
  redis.call('HSET', key, 'status', 'queued')
  redis.call('HDEL', key, 'worker')
  redis.call('ZREM', leases_key, id)
  redis.call('LPUSH', queue_key, id)
  return true
end

-- queued -> running for up to `max` runs, oldest first, leased to `worker` until now + lease_ms.
-- Bodies come inline only while they fit `inline_bytes` together: a reply carrying every body
-- (30 runs of 10 MiB took 1.2 s, past the command timeout) is dropped by the client after Redis
-- has leased the runs. A body left out is read by the worker on its own (body false, size > 0).
-- Returns, per run: id, attempt, started_at, queued_at, method, target, headers, body or false,
-- grace_ms, body size.
local function claim(queue_key, leases_key, base, worker, lease_ms, max, now, inline_bytes)
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
      local f = redis.call('HMGET', key, 'queued_at', 'method', 'target', 'headers', 'grace_ms')
      local body, size
      body, inline_bytes, size = read_within(key, 'body', inline_bytes)
      out[#out + 1] = { id, attempt, now, f[1], f[2], f[3], f[4], body, f[5], size }
    end
  end
  return out
end
