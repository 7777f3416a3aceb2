-- Retention of the listing index and the owner indexes: drops index entries whose run has
-- expired (the run hashes expire by themselves; the indexes are sorted sets and do not), from
-- the listing index and from the owner's index the run was in (`index owners` names it). Walks
-- the whole listing index a slice at a time with ZSCAN, its cursor kept in Redis, so long-lived
-- runs at the old end (12-hour runs, webhooks retried for days) cannot stall it: looking only at
-- the oldest entries removed 0 of 5,000 expired ones behind 200 live ones. Every run is in both,
-- so one walk prunes every owner index too, without a scan of other keys.
-- KEYS: index, prune cursor, index owners (run id -> owner index name part). ARGV (by name): base,
-- count (entries to look at per call, a ZSCAN COUNT hint).
-- Returns how many entries were removed from the listing index.
local o = options()
local cursor = redis.call('GET', KEYS[2]) or '0'
local reply = redis.call('ZSCAN', KEYS[1], cursor, 'COUNT', tonumber(o.count))
local removed = 0
local entries = reply[2]
for i = 1, #entries, 2 do
  local id = entries[i]
  if redis.call('EXISTS', o.base .. ':run:' .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    local owner = redis.call('HGET', KEYS[3], id)
    if owner then
      redis.call('ZREM', o.base .. ':owner:' .. owner, id)
      redis.call('HDEL', KEYS[3], id)
    end
    removed = removed + 1
  end
end
redis.call('SET', KEYS[2], reply[1])
return removed
