-- queued -> running: takes up to `max` runs of one queue (see lib.lua `claim`: priority, owners in
-- turn, the queue's global limit, backoff and queue-time expiry) and leases them to a worker.
-- KEYS: the tag's webhooks set (for runs that expire instead of starting).
-- ARGV (by name): base, queue, worker, lease_ms, max, limit (0 = none), queue_time_ms (0 = none),
-- ttl_ms, channel, sharded, inline_bytes, fields (comma-separated run fields to return).
-- Returns, per run: { id, attempt, started_at, body or false, body size, fields... }.
local o = options()
return claim(o, now_ms(), KEYS[1], tonumber(o.max))
