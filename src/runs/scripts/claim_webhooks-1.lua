-- webhook pending (due) -> in delivery: hides due deliveries from other workers for a visibility
-- window; a worker that dies mid-attempt leaves them to be taken again after it.
-- Bodies come inline only while they fit `inline bytes` together (see lib.lua `claim`: 60 due
-- deliveries of 10 MiB made a reply that outlived the command timeout, so every claim was lost).
-- KEYS: webhooks. ARGV: key base, visibility ms, limit, inline bytes.
-- Returns, per delivery: id, url, webhook id, status, error, upstream status, content type,
-- body or false (not inline), try (attempts so far in this delivery), body size.
local now = now_ms()
local inline = tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. ':run:' .. id
  local f = redis.call('HMGET', key, 'webhook_url', 'wh_id', 'status', 'error', 'res_status', 'res_content_type', 'wh_try')
  if not f[1] or f[1] == '' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    local body, size
    body, inline, size = read_within(key, 'res_body', inline)
    out[#out + 1] = { id, f[1], f[2], f[3], f[4] or '', f[5] or '', f[6] or '', body, f[7] or '0', size }
  end
end
return out
