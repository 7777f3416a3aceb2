-- queued -> running: takes up to `max` runs, oldest first, and leases them to a worker.
-- KEYS: queue, leases. ARGV: key base, worker id, lease ms, max.
-- Returns, per run: id, attempt, started_at, queued_at, method, target, headers, body, grace_ms.
return claim(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now_ms())
