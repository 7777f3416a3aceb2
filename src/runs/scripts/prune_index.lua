-- Retention of the listing index: drops the oldest index entries whose run has expired (the run
-- hashes expire by themselves; the index is a sorted set and does not).
-- KEYS: index. ARGV: key base, how many of the oldest entries to look at.
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. ':run:' .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    removed = removed + 1
  end
end
return removed
