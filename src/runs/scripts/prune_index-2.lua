-- Retention of the listing index: drops index entries whose run has expired (the run hashes
-- expire by themselves; the index is a sorted set and does not). Walks the whole index a slice
-- at a time with ZSCAN, its cursor kept in Redis, so long-lived runs at the old end (12-hour
-- runs, webhooks retried for days) cannot stall it: looking only at the oldest entries removed
-- 0 of 5,000 expired ones behind 200 live ones.
-- KEYS: index, prune cursor. ARGV (by name): base, count (entries to look at per call, a ZSCAN
-- COUNT hint).
-- Returns how many entries were removed.
local o = options()
local cursor = redis.call('GET', KEYS[2]) or '0'
local reply = redis.call('ZSCAN', KEYS[1], cursor, 'COUNT', tonumber(o.count))
local removed = 0
local entries = reply[2]
for i = 1, #entries, 2 do
  local id = entries[i]
  if redis.call('EXISTS', o.base .. ':run:' .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    removed = removed + 1
  end
end
redis.call('SET', KEYS[2], reply[1])
return removed
