-- webhook delivered | failed -> pending: a new delivery on demand, with the same webhook-id.
-- KEYS: run, webhooks. ARGV: id. Returns 'ok', 'missing', 'not_finished' or 'no_webhook'.
local f = redis.call('HMGET', KEYS[1], 'status', 'webhook_url')
if not f[1] then return 'missing' end
if f[1] == 'queued' or f[1] == 'running' then return 'not_finished' end
if not f[2] or f[2] == '' then return 'no_webhook' end
local now = now_ms()
redis.call('HSET', KEYS[1], 'wh_status', 'pending', 'wh_next_at', now, 'wh_try', 0)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PERSIST', KEYS[1])
return 'ok'
