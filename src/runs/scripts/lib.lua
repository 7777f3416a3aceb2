-- Shared helpers, prepended to every script (Redis scripts cannot include files).
-- Every key a script touches shares one hash tag (src/runs/keys.ts): a queue's keys and its runs'
-- hashes, so each script stays within one Redis Cluster slot. Keys built here from `base` (run
-- hashes) and from a queue prefix `qp` (per-priority rings and per-owner lists) are in that slot.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Run events go out with PUBLISH on one Redis, and with SPUBLISH on a shard channel of the
-- script's own slot on a Cluster (option `sharded` = '1'; src/runs/events.ts).
local publish_command = 'PUBLISH'

-- Arguments by name: ARGV[1] is a JSON object of strings (one builder per script in store.ts
-- writes it), then an optional list (ids, hash fields). Returns the options and the index where
-- the list starts. A script reads `o.name`, so adding an option changes the two places that name
-- it, and the order matters nowhere.
local function options()
  local o = cjson.decode(ARGV[1])
  if o.sharded == '1' then publish_command = 'SPUBLISH' end
  return o, 2
end

local function notify(channel, message)
  redis.call(publish_command, channel, message)
end

local function split(s)
  local out = {}
  for part in string.gmatch(s or '', '[^,]+') do out[#out + 1] = part end
  return out
end

-- The `started` event (webhookEvents=started) of a run that ends. A run has one entry in the
-- webhooks set, and its `started` event goes before its final webhook, never after it: the final
-- waits for a started event whose first attempt is still to come or whose attempt is in flight
-- (`ws_lease`), and that attempt's record schedules the final; a started event waiting for a retry
-- is given up (failed), and one whose app call never began is skipped.
-- `f` holds the run's ws_status, ws_try and ws_lease. Returns true when the final webhook waits
-- for the started event.
local function settle_started(run_key, webhooks_key, id, status, now, f)
  if f[1] == 'waiting' then
    redis.call('HSET', run_key, 'ws_status', 'skipped')
    return false
  end
  if f[1] ~= 'pending' then return false end
  if f[3] and f[3] ~= '' and tonumber(f[3]) > now then return true end
  local tries = tonumber(f[2] or '0') or 0
  if tries == 0 and status ~= 'cancelled' then return true end
  local given_up = 'failed'
  if tries == 0 then given_up = 'skipped' end
  redis.call('HSET', run_key, 'ws_status', given_up, 'ws_next_at', '')
  redis.call('ZREM', webhooks_key, id)
  return false
end

-- Puts a run in a final state. A run with a webhook (not cancelled) is kept until its delivery
-- ends, and its delivery is due at `due` (now, or later when the caller delivers it at once and
-- only needs the entry as a fallback), unless it waits for the run's `started` event
-- (settle_started); any other run expires ttl_ms after now.
-- Returns the webhook URL when a delivery was scheduled, else false.
-- The request's headers (Authorization, Cookie), query and body are dropped here when the run
-- succeeded or was cancelled: nothing reads them after that, and they should not sit in Redis for
-- RUN_TTL. A run that failed, timed out or expired keeps them until it expires, for
-- POST /v1/runs/{id}/retry (retry_run) to dispatch it again (docs/SECURITY.md, "Redis").
local function finish(run_key, webhooks_key, id, status, now, ttl_ms, channel, due)
  redis.call('HSET', run_key, 'status', status, 'finished_at', now)
  redis.call('HDEL', run_key, 'worker', 'queue_reason', 'next_attempt_at')
  -- A failed, timed-out or expired run keeps what POST /retry needs until RUN_TTL (docs/SECURITY.md).
  if status == 'succeeded' or status == 'cancelled' then redis.call('HDEL', run_key, 'headers', 'body', 'target') end
  local f = redis.call('HMGET', run_key, 'webhook_url', 'ws_status', 'ws_try', 'ws_lease')
  local url = f[1]
  local waits = settle_started(run_key, webhooks_key, id, status, now, { f[2], f[3], f[4] })
  local scheduled = false
  if url and url ~= '' and status ~= 'cancelled' then
    redis.call('HSET', run_key, 'wh_status', 'pending', 'wh_next_at', now, 'wh_try', 0)
    if not waits then
      redis.call('ZADD', webhooks_key, due or now, id)
      scheduled = url
    end
  else
    if status == 'cancelled' then redis.call('HSET', run_key, 'wh_status', 'none') end
    redis.call('PEXPIRE', run_key, ttl_ms)
  end
  notify(channel, 'done:' .. id)
  return scheduled
end

-- A hash field of up to `budget` bytes, read only if it fits: returns the value (or false) and
-- the budget left. Keeps a reply that carries bodies within the command timeout.
-- One webhook attempt's record (record_webhook_attempts, and complete_run carrying the records
-- of attempts that ended just before it): webhook in delivery -> pending (retry later) |
-- delivered | failed, the attempt appended to the history. `a`: id, event (started | completed),
-- outcome (delivered | retry | failed), record (the attempt, JSON), delay_ms (-1 when none),
-- status_code ('' when none). The history keeps the latest `keep` attempts only (retries and
-- redeliveries would grow it without bound); `wh_attempts` (`ws_attempts` for the started event)
-- still counts them all. A `started` event is retried only while its run is queued or running;
-- once the run has ended, its final webhook (which waited for this attempt, settle_started) is
-- due now. Returns 1, or 0 when the run is gone (its delivery entry is dropped).
local function record_attempt(run_key, webhooks_key, a, now, ttl_ms, keep)
  if redis.call('EXISTS', run_key) == 0 then
    redis.call('ZREM', webhooks_key, a.id)
    return 0
  end
  local p = 'wh_'
  if a.event == 'started' then p = 'ws_' end
  redis.call('HINCRBY', run_key, p .. 'attempts', 1)
  redis.call('HINCRBY', run_key, p .. 'try', 1)
  local log = (redis.call('HGET', run_key, p .. 'log') or '') .. a.record .. '\n'
  local _, lines = string.gsub(log, '\n', '')
  while lines > keep do
    log = string.sub(log, string.find(log, '\n', 1, true) + 1)
    lines = lines - 1
  end
  redis.call('HSET', run_key, p .. 'log', log, p .. 'last_status', a.status_code)
  local delay = tonumber(a.delay_ms)
  local final = 'failed'
  if a.outcome == 'delivered' then final = 'delivered' end
  if a.event == 'started' then
    local f = redis.call('HMGET', run_key, 'ws_status', 'status', 'wh_status', 'webhook_url')
    -- Given up meanwhile (its sender was taken to be dead): the final webhook went on without it.
    if f[1] ~= 'pending' then return 1 end
    local ended = f[2] ~= 'queued' and f[2] ~= 'running'
    if a.outcome == 'retry' and delay >= 0 and not ended then
      redis.call('ZADD', webhooks_key, now + delay, a.id)
      redis.call('HSET', run_key, 'ws_status', 'pending', 'ws_next_at', now + delay, 'ws_lease', '')
    else
      redis.call('HSET', run_key, 'ws_status', final, 'ws_next_at', '', 'ws_lease', '')
      if ended and f[3] == 'pending' and f[4] and f[4] ~= '' then
        redis.call('ZADD', webhooks_key, now, a.id)
        redis.call('HSET', run_key, 'wh_next_at', now)
      else
        redis.call('ZREM', webhooks_key, a.id)
      end
    end
    return 1
  end
  if a.outcome == 'retry' and delay >= 0 then
    redis.call('ZADD', webhooks_key, now + delay, a.id)
    redis.call('HSET', run_key, 'wh_status', 'pending', 'wh_next_at', now + delay)
  else
    redis.call('ZREM', webhooks_key, a.id)
    redis.call('HSET', run_key, 'wh_status', final, 'wh_next_at', '')
    redis.call('PEXPIRE', run_key, ttl_ms)
  end
  return 1
end

-- The attempt records in option `attempts` (a JSON list of record_attempt's `a`), for runs whose
-- hashes are under `base`. Returns each one's result, in order.
local function record_attempts(o, webhooks_key, now)
  local out = {}
  if not o.attempts or o.attempts == '' then return out end
  local ttl_ms, keep = tonumber(o.ttl_ms), tonumber(o.keep)
  for i, a in ipairs(cjson.decode(o.attempts)) do
    out[i] = record_attempt(o.base .. ':run:' .. a.id, webhooks_key, a, now, ttl_ms, keep)
  end
  return out
end

local function read_within(key, field, budget)
  local size = redis.call('HSTRLEN', key, field)
  if size > budget then return false, budget, size end
  return redis.call('HGET', key, field) or '', budget - size, size
end

-- The waiting line of a queue (README "Queues"): per priority p (0 high, 1 normal, 2 low) a ring
-- of owner buckets, `qp:ring:p`, next first, and per bucket a FIFO list `qp:pending:p:bucket`.
-- A bucket is the owner fingerprint (fair share) or '*' (one line per priority). A claim takes
-- the first run of the first bucket of the highest non-empty priority and moves that bucket to
-- the back of its ring: owners take turns, each in its own order.
local function line_push(qp, id, prio, bucket, at_head)
  local list = qp .. ':pending:' .. prio .. ':' .. bucket
  local ring = qp .. ':ring:' .. prio
  if at_head then
    if redis.call('LPUSH', list, id) == 1 then redis.call('LPUSH', ring, bucket) end
  else
    if redis.call('RPUSH', list, id) == 1 then redis.call('RPUSH', ring, bucket) end
  end
end

local function line_pop(qp)
  for p = 0, 2 do
    local ring = qp .. ':ring:' .. p
    while true do
      local bucket = redis.call('LPOP', ring)
      if not bucket then break end
      local list = qp .. ':pending:' .. p .. ':' .. bucket
      local id = redis.call('LPOP', list)
      if redis.call('LLEN', list) > 0 then redis.call('RPUSH', ring, bucket) end
      if id then return id end
    end
  end
  return false
end

local function line_remove(qp, id, prio, bucket)
  local list = qp .. ':pending:' .. prio .. ':' .. bucket
  if redis.call('LREM', list, 1, id) > 0 and redis.call('LLEN', list) == 0 then
    redis.call('LREM', qp .. ':ring:' .. prio, 1, bucket)
  end
end

-- Since when a queued run has waited, for max_queue_time and the queued set's score: its
-- acceptance, or its latest retry (retry_run), whose wait starts anew.
local function queued_since(created_at, retried_at)
  if retried_at and retried_at ~= '' then return tonumber(retried_at) end
  return tonumber(created_at)
end

-- A queue's keys from its prefix (src/runs/keys.ts QueueKeys).
local function queue_keys(base, queue)
  local qp = base .. ':q:' .. queue
  return qp, qp .. ':queued', qp .. ':delayed', qp .. ':leases'
end

-- Back in line (at the head: it was ahead of everything queued after it), as `queued`.
-- Wakes idle workers when the queue had nothing queued.
local function requeue(base, queue, id, key, channel)
  local qp, queued_key = queue_keys(base, queue)
  local f = redis.call('HMGET', key, 'prio', 'bucket', 'created_at', 'retried_at')
  redis.call('HSET', key, 'status', 'queued')
  redis.call('HDEL', key, 'worker')
  line_push(qp, id, f[1], f[2], true)
  redis.call('ZADD', queued_key, queued_since(f[3], f[4]), id)
  if redis.call('ZCARD', queued_key) == 1 then notify(channel, 'queued:' .. queue) end
end

-- running -> queued for a run its worker took but never started: back at the head of its line
-- with its attempt undone, whatever its method, since the app never saw it.
-- Returns true when the run was `worker`'s and went back.
local function unclaim(base, queue, leases_key, worker, id, channel)
  local key = base .. ':run:' .. id
  local f = redis.call('HMGET', key, 'status', 'worker', 'attempt_base')
  if f[1] ~= 'running' or f[2] ~= worker then return false end
  -- Back to the attempts it had before this claim (a retried run counts from its retry).
  if redis.call('HINCRBY', key, 'attempt', -1) <= tonumber(f[3] or 0) then redis.call('HDEL', key, 'started_at') end
  redis.call('ZREM', leases_key, id)
  requeue(base, queue, id, key, channel)
  return true
end

-- queued -> running for up to `max` runs of one queue, highest priority first, owners in turn,
-- leased to `worker` until now + lease_ms, and never more than `limit` (0 = none) leased at once:
-- the lease set is the queue's in-flight count, so the limit holds across every replica, and a
-- dead worker's slots come back when recovery ends its leases.
-- Runs whose backoff has ended rejoin the head of their line first; a run queued longer than
-- `queue_time_ms` (0 = no limit) ends `expired` instead of starting.
-- Bodies come inline only while they fit `inline_bytes` together: a reply carrying every body
-- (30 runs of 10 MiB took 1.2 s, past the command timeout) is dropped by the client after Redis
-- has leased the runs. A body left out is read by the worker on its own (body false, size > 0).
-- Returns, per run: { id, attempt, started_at, body or false, body size, then the run's `fields` }.
local function claim(o, now, webhooks_key, max)
  local base, queue = o.base, o.queue
  local qp, queued_key, delayed_key, leases_key = queue_keys(base, queue)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'LIMIT', 0, 100)) do
    redis.call('ZREM', delayed_key, id)
    local key = base .. ':run:' .. id
    local f = redis.call('HMGET', key, 'prio', 'bucket')
    if f[1] then
      redis.call('HDEL', key, 'next_attempt_at')
      line_push(qp, id, f[1], f[2], true)
    end
  end
  local limit = tonumber(o.limit)
  if limit > 0 then max = math.min(max, limit - redis.call('ZCARD', leases_key)) end
  local fields = split(o.fields)
  local queue_time = tonumber(o.queue_time_ms)
  local inline = tonumber(o.inline_bytes)
  local out = {}
  while #out < max do
    local id = line_pop(qp)
    if not id then break end
    local key = base .. ':run:' .. id
    local f = redis.call('HMGET', key, 'status', 'created_at', 'ws_status', 'retried_at')
    if f[1] == 'queued' then
      redis.call('ZREM', queued_key, id)
      if queue_time > 0 and now - queued_since(f[2], f[4]) > queue_time then
        redis.call('HSET', key, 'error', 'queue_time_exceeded',
          'error_message', 'the run waited in its queue longer than the queue allows (max_queue_time)')
        finish(key, webhooks_key, id, 'expired', now, tonumber(o.ttl_ms), o.channel)
      else
        local attempt = redis.call('HINCRBY', key, 'attempt', 1)
        redis.call('HSET', key, 'status', 'running', 'worker', o.worker)
        redis.call('HDEL', key, 'queue_reason', 'next_attempt_at')
        redis.call('HSETNX', key, 'started_at', now)
        -- The `started` event (webhookEvents=started) is due when the app call first begins.
        if f[3] == 'waiting' then
          redis.call('HSET', key, 'ws_status', 'pending', 'ws_next_at', now)
          redis.call('ZADD', webhooks_key, now, id)
        end
        redis.call('ZADD', leases_key, now + tonumber(o.lease_ms), id)
        local body, size
        body, inline, size = read_within(key, 'body', inline)
        local row = { id, attempt, now, body, size }
        if #fields > 0 then
          for _, v in ipairs(redis.call('HMGET', key, unpack(fields))) do row[#row + 1] = v end
        end
        out[#out + 1] = row
      end
    end
  end
  return out
end
