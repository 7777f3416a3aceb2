-- webhook pending (due) -> in delivery: hides due deliveries of one tag's runs from other workers
-- for a visibility window; a worker that dies mid-attempt leaves them to be taken again after it.
-- Bodies come inline only while they fit `inline_bytes` together (see lib.lua `claim`: 60 due
-- deliveries of 10 MiB made a reply that outlived the command timeout, so every claim was lost).
-- KEYS: the tag's webhooks set. ARGV (by name): base, visibility_ms, limit, inline_bytes, fields
-- (comma-separated run fields to return).
-- Returns, per delivery: { id, body or false (not inline), body size, fields... }.
local o = options()
local now = now_ms()
local inline = tonumber(o.inline_bytes)
local fields = split(o.fields)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(o.limit))
local out = {}
for _, id in ipairs(ids) do
  local key = o.base .. ':run:' .. id
  local url = redis.call('HGET', key, 'webhook_url')
  if not url or url == '' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(o.visibility_ms), id)
    local body, size
    body, inline, size = read_within(key, 'res_body', inline)
    local row = { id, body, size }
    for _, v in ipairs(redis.call('HMGET', key, unpack(fields))) do row[#row + 1] = v end
    out[#out + 1] = row
  end
end
return out
