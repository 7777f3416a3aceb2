-- (read) A run as the runs API shows it, with its place in line while it waits: one round trip.
-- KEYS: run. ARGV (by name): id, base, fields (comma-separated).
-- Returns false when there is no run, else { queue_position or -1, fields... }.
-- queue_position counts the runs that will be taken before this one as the line stands (later
-- arrivals of higher priority can still pass it): every run of a higher priority, and within its
-- own priority, owners taking turns (lib.lua `line_pop`), from each other owner's list as many as
-- are taken before this run's turn comes. It costs O(owners with queued runs at this priority and
-- above + this run's index in its owner's list), not a scan of the queue. A run backing off
-- (not in line until its next try) gets -1.
local o = options()
local f = redis.call('HMGET', KEYS[1], 'status', 'queue', 'prio', 'bucket', 'next_attempt_at', unpack(split(o.fields)))
if not f[1] then return false end
local position = -1
if f[1] == 'queued' and (not f[5] or f[5] == '') and f[2] then
  local qp = o.base .. ':q:' .. f[2]
  local prio = tonumber(f[3])
  local mine = qp .. ':pending:' .. prio .. ':' .. f[4]
  local k = redis.call('LPOS', mine, o.id)
  if k then
    position = k
    for p = 0, prio do
      local ring = redis.call('LRANGE', qp .. ':ring:' .. p, 0, -1)
      local before = true
      for _, bucket in ipairs(ring) do
        if p == prio and bucket == f[4] then
          before = false
        else
          local n = redis.call('LLEN', qp .. ':pending:' .. p .. ':' .. bucket)
          if p < prio then position = position + n
          elseif before then position = position + math.min(n, k + 1)
          else position = position + math.min(n, k) end
        end
      end
    end
  end
end
local out = { position }
for i = 6, #f do out[#out + 1] = f[i] end
return out
