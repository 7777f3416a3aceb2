-- queued -> running: takes up to `max` runs, oldest first, and leases them to a worker.
-- KEYS: queue, leases. ARGV: key base, worker id, lease ms, max, inline body bytes.
-- Returns, per run: id, attempt, started_at, queued_at, method, target, headers, body or false
-- (not inline), grace_ms, body size (see lib.lua `claim`).
return claim(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now_ms(), tonumber(ARGV[5]))
