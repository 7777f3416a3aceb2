-- webhook pending (due) -> in delivery: hides due deliveries of one tag's runs from other workers
-- for a visibility window; a worker that dies mid-attempt leaves them to be taken again after it.
-- A run has one entry: its `started` event while that is pending (lib.lua settle_started), then
-- its final webhook once the run has ended. A started event whose sender died after the run ended
-- is given up here, so that the final webhook waits no longer than the visibility window for it.
-- Bodies come inline only while they fit `inline_bytes` together (see lib.lua `claim`: 60 due
-- deliveries of 10 MiB made a reply that outlived the command timeout, so every claim was lost).
-- KEYS: the tag's webhooks set. ARGV (by name): base, visibility_ms, limit, inline_bytes, fields
-- (comma-separated run fields to return).
-- Returns, per delivery: { id, body or false (not inline), body size, event (started |
-- completed), fields... }.
local o = options()
local now = now_ms()
local inline = tonumber(o.inline_bytes)
local fields = split(o.fields)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(o.limit))
local out = {}
for _, id in ipairs(ids) do
  local key = o.base .. ':run:' .. id
  local f = redis.call('HMGET', key, 'webhook_url', 'status', 'wh_status', 'ws_status', 'ws_lease')
  local ended = f[2] and f[2] ~= 'queued' and f[2] ~= 'running'
  local event = false
  if f[1] and f[1] ~= '' then
    if f[4] == 'pending' then
      if ended and f[5] and f[5] ~= '' and tonumber(f[5]) <= now then
        redis.call('HSET', key, 'ws_status', 'failed', 'ws_lease', '', 'ws_next_at', '')
      else
        event = 'started'
      end
    end
    if not event and ended and f[3] == 'pending' then event = 'completed' end
  end
  if not event then
    redis.call('ZREM', KEYS[1], id)
  else
    local hidden = now + tonumber(o.visibility_ms)
    redis.call('ZADD', KEYS[1], hidden, id)
    local body, size = false, 0
    if event == 'started' then
      redis.call('HSET', key, 'ws_lease', hidden, 'ws_ts', math.floor(now / 1000))
    else
      body, inline, size = read_within(key, 'res_body', inline)
    end
    local row = { id, body, size, event }
    for _, v in ipairs(redis.call('HMGET', key, unpack(fields))) do row[#row + 1] = v end
    out[#out + 1] = row
  end
end
return out
