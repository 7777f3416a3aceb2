-- webhook pending (due) -> in delivery: hides due deliveries from other workers for a visibility
-- window; a worker that dies mid-attempt leaves them to be taken again after it.
-- KEYS: webhooks. ARGV: key base, visibility ms, limit.
-- Returns, per delivery: id, url, webhook id, status, error, upstream status, content type,
-- body, try (attempts so far in this delivery).
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. ':run:' .. id
  local f = redis.call('HMGET', key, 'webhook_url', 'wh_id', 'status', 'error', 'res_status', 'res_content_type', 'res_body', 'wh_try')
  if not f[1] or f[1] == '' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    out[#out + 1] = { id, f[1], f[2], f[3], f[4] or '', f[5] or '', f[6] or '', f[7] or '', f[8] or '0' }
  end
end
return out
